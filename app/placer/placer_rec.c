/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The pure side of keymap-placer: records under P/ (members, load reports, moves), the
 * verdict on a move in flight, a decision's plan and a map's change in words.
 */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <jansson.h>

#include <km_shardmap.h>

#include "placer.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* Field name of o as an integer in [min, max]. */
static int
get_int(const json_t *o, const char *name, int64_t min, int64_t max, int64_t *out)
{
	const json_t *v = json_object_get(o, name);

	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return -1;
	*out = json_integer_value(v);
	return 0;
}

/* A JSON object from len bytes, or NULL with the reason in err. */
static json_t *
load_object(const void *json, size_t len, char *err, size_t errlen)
{
	json_error_t je;
	json_t *o = json_loadb(json, len, 0, &je);

	if (o == NULL) {
		fail(err, errlen, "invalid JSON at line %d column %d: %s", je.line, je.column,
			je.text);
		return NULL;
	}
	if (!json_is_object(o)) {
		json_decref(o);
		fail(err, errlen, "not a JSON object");
		return NULL;
	}
	return o;
}

int
placer_member_decode(const char *key_id, const void *json, size_t len,
	struct km_cluster_member *out, char *err, size_t errlen)
{
	struct km_cluster_member m;
	const char *id, *ip, *state;
	struct in_addr a;
	json_t *o;
	int64_t v;
	int rc = -EINVAL;

	o = load_object(json, len, err, errlen);
	if (o == NULL)
		return -EINVAL;
	memset(&m, 0, sizeof(m));
	id = json_string_value(json_object_get(o, "id"));
	ip = json_string_value(json_object_get(o, "ip"));
	state = json_string_value(json_object_get(o, "state"));
	if (id == NULL || !km_cluster_id_valid(id)) {
		fail(err, errlen, "id: missing or not a node id");
		goto out;
	}
	if (key_id != NULL && strcmp(id, key_id) != 0) {
		fail(err, errlen, "id: '%s' under the key of node '%.63s'", id, key_id);
		goto out;
	}
	snprintf(m.id, sizeof(m.id), "%s", id);
	if (ip == NULL || inet_pton(AF_INET, ip, &a) != 1 || a.s_addr == 0) {
		fail(err, errlen, "ip: missing or not an IPv4 address");
		goto out;
	}
	m.ip = ntohl(a.s_addr);
	if (get_int(o, "port", 1, 65535, &v) != 0) {
		fail(err, errlen, "port: missing or not an integer in 1..65535");
		goto out;
	}
	m.port = (uint16_t)v;
	if (get_int(o, "workers", 1, KM_WORKERS_MAX, &v) != 0) {
		fail(err, errlen, "workers: missing or not an integer in 1..%d", KM_WORKERS_MAX);
		goto out;
	}
	m.workers = (uint16_t)v;
	if ((uint32_t)m.port + m.workers - 1 > 65535) {
		fail(err, errlen, "port: %u + %u workers passes 65535", m.port, m.workers);
		goto out;
	}
	if (get_int(o, "incarnation", 1, INT64_MAX, &v) != 0) {
		fail(err, errlen, "incarnation: missing or not a positive integer");
		goto out;
	}
	m.incarnation = (uint64_t)v;
	if (state == NULL || strcmp(state, "active") == 0) {
		if (json_object_get(o, "state") != NULL && state == NULL) {
			fail(err, errlen, "state: not a string");
			goto out;
		}
		m.state = KM_CMAP_ACTIVE;
	} else if (strcmp(state, "draining") == 0) {
		m.state = KM_CMAP_DRAINING;
	} else {
		fail(err, errlen, "state: '%.32s' is neither active nor draining", state);
		goto out;
	}
	*out = m;
	rc = 0;
out:
	json_decref(o);
	return rc;
}

uint32_t
placer_members_merge(struct km_cluster_member *mem, uint32_t n,
	const char (*drain)[KM_CLUSTER_ID_MAX + 1], uint32_t nb_drain)
{
	uint32_t i, j, kept = 0;

	for (i = 0; i < n; i++) {
		for (j = 0; j < kept; j++)
			if (strcmp(mem[j].id, mem[i].id) == 0)
				break;
		if (j < kept) {
			if (mem[i].incarnation > mem[j].incarnation)
				mem[j] = mem[i];
			continue;
		}
		mem[kept++] = mem[i];
	}
	for (i = 0; i < kept; i++)
		for (j = 0; j < nb_drain; j++)
			if (strcmp(mem[i].id, drain[j]) == 0)
				mem[i].state = KM_CMAP_DRAINING;
	return kept;
}

void
placer_rates_free(struct placer_rates *r)
{
	free(r->r);
	memset(r, 0, sizeof(*r));
}

int
placer_load_decode(const void *json, size_t len, const struct km_cmap *m, const char *node,
	struct placer_rates *out, char *err, size_t errlen)
{
	const json_t *rates, *e;
	int node_idx = -1;
	json_t *o;
	size_t i, n;
	uint32_t added = 0;
	int rc = -EINVAL;

	o = load_object(json, len, err, errlen);
	if (o == NULL)
		return -EINVAL;
	rates = json_object_get(o, "rates");
	if (!json_is_array(rates)) {
		fail(err, errlen, "rates: missing or not an array");
		goto out;
	}
	n = json_array_size(rates);
	/* Check everything before appending: a bad report adds nothing. */
	json_array_foreach(rates, i, e)
	{
		const json_t *id = json_array_get(e, 0), *rate = json_array_get(e, 1);

		if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_integer(id) ||
			json_integer_value(id) < 1 || !json_is_number(rate) ||
			!isfinite(json_number_value(rate)) || json_number_value(rate) < 0) {
			fail(err, errlen,
				"rates[%zu]: not [shard id, requests/s] with an id >= 1 and a rate "
				">= 0",
				i);
			goto out;
		}
	}
	if (m != NULL)
		node_idx = km_cmap_node_find(m, node);
	if (n > UINT32_MAX - out->n) {
		fail(err, errlen, "rates: too many");
		goto out;
	}
	if (out->n + n > out->cap) {
		uint32_t cap = out->cap != 0 ? out->cap : 64;
		struct km_cluster_rate *r;

		while (cap < out->n + n)
			cap *= 2;
		r = realloc(out->r, (size_t)cap * sizeof(*r));
		if (r == NULL) {
			rc = -ENOMEM;
			fail(err, errlen, "out of memory");
			goto out;
		}
		out->r = r;
		out->cap = cap;
	}
	json_array_foreach(rates, i, e)
	{
		uint64_t id = (uint64_t)json_integer_value(json_array_get(e, 0));
		const struct km_cmap_shard *s;

		if (m != NULL) {
			s = km_cmap_shard_find(m, id);
			if (node_idx < 0 || s == NULL || s->node != (uint16_t)node_idx)
				continue;
		}
		out->r[out->n].id = id;
		out->r[out->n].rate = json_number_value(json_array_get(e, 1));
		out->n++;
		added++;
	}
	rc = (int)added;
out:
	json_decref(o);
	return rc;
}

static const char *const state_names[] = {
	[PLACER_MOVE_COPY] = "copy",
	[PLACER_MOVE_READY] = "ready",
	[PLACER_MOVE_FAILED] = "failed",
};

int
placer_move_decode(uint64_t key_id, const void *json, size_t len, struct placer_move *out,
	char *err, size_t errlen)
{
	struct placer_move mv;
	const char *from, *to, *state, *reason;
	json_t *o;
	int64_t v;
	int rc = -EINVAL;

	o = load_object(json, len, err, errlen);
	if (o == NULL)
		return -EINVAL;
	memset(&mv, 0, sizeof(mv));
	from = json_string_value(json_object_get(o, "from"));
	to = json_string_value(json_object_get(o, "to"));
	state = json_string_value(json_object_get(o, "state"));
	reason = json_string_value(json_object_get(o, "reason"));
	if (get_int(o, "id", 1, INT64_MAX, &v) != 0) {
		fail(err, errlen, "id: missing or not a shard id");
		goto out;
	}
	mv.id = (uint64_t)v;
	if (mv.id != key_id) {
		fail(err, errlen, "id: %" PRIu64 " under the key of shard %" PRIu64, mv.id, key_id);
		goto out;
	}
	if (get_int(o, "epoch", 1, UINT32_MAX, &v) != 0) {
		fail(err, errlen, "epoch: missing or not an integer in 1..4294967295");
		goto out;
	}
	mv.epoch = (uint32_t)v;
	if (from == NULL || !km_cluster_id_valid(from)) {
		fail(err, errlen, "from: missing or not a node id");
		goto out;
	}
	if (to == NULL || !km_cluster_id_valid(to)) {
		fail(err, errlen, "to: missing or not a node id");
		goto out;
	}
	snprintf(mv.from, sizeof(mv.from), "%s", from);
	snprintf(mv.to, sizeof(mv.to), "%s", to);
	if (get_int(o, "to_worker", 0, KM_WORKERS_MAX - 1, &v) != 0) {
		fail(err, errlen, "to_worker: missing or not an integer in 0..%d",
			KM_WORKERS_MAX - 1);
		goto out;
	}
	mv.to_worker = (uint16_t)v;
	if (state == NULL) {
		fail(err, errlen, "state: missing or not a string");
		goto out;
	}
	mv.state = PLACER_MOVE_OTHER;
	for (v = 0; v < (int64_t)(sizeof(state_names) / sizeof(state_names[0])); v++)
		if (strcmp(state, state_names[v]) == 0)
			mv.state = (uint8_t)v;
	if (reason != NULL)
		snprintf(mv.reason, sizeof(mv.reason), "%s", reason);
	*out = mv;
	rc = 0;
out:
	json_decref(o);
	return rc;
}

int
placer_move_encode(const struct placer_move *mv, char **out)
{
	json_t *o;
	char *s;

	if (mv->state > PLACER_MOVE_FAILED)
		return -EINVAL;
	o = json_pack("{s:I, s:I, s:s, s:s, s:I, s:s}", "id", (json_int_t)mv->id, "epoch",
		(json_int_t)mv->epoch, "from", mv->from, "to", mv->to, "to_worker",
		(json_int_t)mv->to_worker, "state", state_names[mv->state]);
	if (o == NULL)
		return -ENOMEM;
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (s == NULL)
		return -ENOMEM;
	*out = s;
	return 0;
}

enum placer_verdict
placer_move_judge(const struct km_cmap *m, const struct placer_move *mv, int from_live, int to_live,
	uint64_t age_s, uint32_t timeout_s, struct km_cluster_move *cm, char *why, size_t whylen)
{
	const struct km_cmap_shard *s;
	int from, to;

	if (m == NULL) {
		fail(why, whylen, "there is no map");
		return PLACER_DROP;
	}
	s = km_cmap_shard_find(m, mv->id);
	from = km_cmap_node_find(m, mv->from);
	to = km_cmap_node_find(m, mv->to);
	if (s == NULL) {
		fail(why, whylen, "shard %" PRIu64 " is not in the map of epoch %u", mv->id,
			m->epoch);
		return PLACER_DROP;
	}
	if (from < 0 || to < 0) {
		fail(why, whylen, "node %s is not in the map of epoch %u",
			from < 0 ? mv->from : mv->to, m->epoch);
		return PLACER_DROP;
	}
	if (s->node != (uint16_t)from) {
		fail(why, whylen, "the map of epoch %u gives the shard to node %s, not %s",
			m->epoch, m->nodes[s->node].id, mv->from);
		return PLACER_DROP;
	}
	if (from == to) {
		fail(why, whylen, "source and target are both node %s", mv->from);
		return PLACER_DROP;
	}
	if (mv->to_worker >= m->nodes[to].workers) {
		fail(why, whylen, "node %s has no worker %u", mv->to, mv->to_worker);
		return PLACER_DROP;
	}
	if (mv->state == PLACER_MOVE_FAILED) {
		fail(why, whylen, "the copy failed: %s",
			mv->reason[0] != '\0' ? mv->reason : "no reason given");
		return PLACER_DROP;
	}
	if (mv->state == PLACER_MOVE_READY && to_live) {
		*cm = (struct km_cluster_move){.id = mv->id,
			.from_node = (uint16_t)from,
			.from_worker = s->worker,
			.to_node = (uint16_t)to,
			.to_worker = mv->to_worker};
		return PLACER_COMPLETE;
	}
	if (!from_live || !to_live) {
		fail(why, whylen, "node %s has no live member", !from_live ? mv->from : mv->to);
		return PLACER_DROP;
	}
	if (m->nodes[to].state == KM_CMAP_DRAINING) {
		fail(why, whylen, "node %s is draining", mv->to);
		return PLACER_DROP;
	}
	if (age_s >= timeout_s) {
		fail(why, whylen, "not ready within %u s", timeout_s);
		return PLACER_DROP;
	}
	return PLACER_KEEP;
}

int
placer_map_accept(const struct km_cmap *m, const struct placer_opts *o, char *why, size_t whylen)
{
	if (m->route_sep != o->route_sep || m->route_depth != o->route_depth)
		return fail(why, whylen,
			"its routing rule is separator '%c' depth %u, this placer's is '%c' depth "
			"%u "
			"(--route-sep, --route-depth)",
			m->route_sep, m->route_depth, o->route_sep, o->route_depth);
	return 0;
}

void
placer_plan_free(struct placer_plan *p)
{
	km_cmap_free(p->map);
	free(p->start);
	memset(p, 0, sizeof(*p));
}

int
placer_plan(const struct km_cmap *cur, const struct km_cluster_decision *d, const uint64_t *flight,
	uint32_t nb_flight, uint32_t max_moves, uint32_t first_epoch, struct placer_plan *out,
	char *err, size_t errlen)
{
	const struct km_cmap *base = d->map != NULL ? d->map : cur;
	struct km_cmap *next = NULL, *t;
	uint32_t i, k, room = max_moves > nb_flight ? max_moves - nb_flight : 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if (base == NULL)
		return d->nb_moves == 0 ? 0 : fail(err, errlen, "moves without a map");
	if (d->map != NULL) {
		next = km_cmap_dup(d->map);
		if (next == NULL)
			return -ENOMEM;
	}
	if (d->nb_moves > 0) {
		out->start = calloc(d->nb_moves, sizeof(*out->start));
		if (out->start == NULL) {
			km_cmap_free(next);
			return -ENOMEM;
		}
	}
	for (i = 0; i < d->nb_moves; i++) {
		const struct km_cluster_move *mv = &d->moves[i];

		for (k = 0; k < nb_flight; k++)
			if (flight[k] == mv->id)
				break;
		if (k < nb_flight)
			continue; /* its shard is on its way somewhere already */
		if (mv->from_node != mv->to_node) {
			if (out->nb_start < room)
				out->start[out->nb_start++] = *mv;
			continue;
		}
		/* Within one node: no copy, the map says it at once. */
		if (next == NULL && (next = km_cmap_dup(base)) == NULL) {
			rc = -ENOMEM;
			goto fail;
		}
		rc = km_cmap_move_apply(next, mv, &t);
		if (rc != 0) {
			fail(err, errlen, "move of shard %" PRIu64 " within node %s: %s", mv->id,
				base->nodes[mv->from_node].id, strerror(-rc));
			rc = rc == -EOVERFLOW ? rc : -EINVAL;
			goto fail;
		}
		km_cmap_free(next);
		next = t;
		out->nb_local++;
	}
	if (next != NULL) {
		/* One new epoch for the table and the local moves together. */
		if (cur != NULL) {
			if (cur->epoch == UINT32_MAX) {
				rc = -EOVERFLOW;
				fail(err, errlen, "the epoch cannot grow past %u", cur->epoch);
				goto fail;
			}
			next->epoch = cur->epoch + 1;
		} else {
			next->epoch = first_epoch != 0 ? first_epoch : 1;
		}
	}
	out->map = next;
	out->base = next != NULL ? next : cur;
	return 0;
fail:
	km_cmap_free(next);
	free(out->start);
	memset(out, 0, sizeof(*out));
	return rc;
}

/* Append to buf (len bytes) at *pos, "; " between items. */
static void diff_add(char *buf, size_t len, size_t *pos, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
diff_add(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*pos >= len)
		return;
	if (*pos > 0) {
		n = snprintf(buf + *pos, len - *pos, "; ");
		*pos += n > 0 ? (size_t)n : 0;
		if (*pos >= len)
			return;
	}
	va_start(ap, fmt);
	n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
	va_end(ap);
	*pos += n > 0 ? (size_t)n : 0;
}

void
placer_map_diff(const struct km_cmap *a, const struct km_cmap *b, char *buf, size_t len)
{
	size_t pos = 0;
	uint32_t i, moved = 0;
	int j;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (a == NULL) {
		diff_add(buf, len, &pos, "first map");
		return;
	}
	for (i = 0; i < b->nb_nodes; i++) {
		const struct km_cmap_node *nb = &b->nodes[i], *na;

		j = km_cmap_node_find(a, nb->id);
		if (j < 0) {
			diff_add(buf, len, &pos, "%s joined", nb->id);
			continue;
		}
		na = &a->nodes[j];
		if (nb->down && !na->down)
			diff_add(buf, len, &pos, "%s down", nb->id);
		if (!nb->down && na->down)
			diff_add(buf, len, &pos, "%s back", nb->id);
		if (nb->state != na->state)
			diff_add(buf, len, &pos, "%s %s", nb->id,
				nb->state == KM_CMAP_DRAINING ? "draining" : "active");
		if (nb->incarnation != na->incarnation)
			diff_add(
				buf, len, &pos, "%s incarnation %" PRIu64, nb->id, nb->incarnation);
		if (nb->workers != na->workers)
			diff_add(buf, len, &pos, "%s %u workers", nb->id, nb->workers);
		if (nb->ip != na->ip || nb->port != na->port)
			diff_add(buf, len, &pos, "%s address changed", nb->id);
	}
	for (i = 0; i < a->nb_nodes; i++)
		if (km_cmap_node_find(b, a->nodes[i].id) < 0)
			diff_add(buf, len, &pos, "%s removed", a->nodes[i].id);
	for (i = 0; i < b->nb_shards; i++) {
		const struct km_cmap_shard *sb = &b->shards[i];
		const struct km_cmap_shard *sa = km_cmap_shard_find(a, sb->id);

		if (sa == NULL || strcmp(a->nodes[sa->node].id, b->nodes[sb->node].id) != 0 ||
			sa->worker != sb->worker)
			moved++;
	}
	if (moved > 0)
		diff_add(buf, len, &pos, "%u shard%s moved", moved, moved == 1 ? "" : "s");
	if (pos == 0)
		diff_add(buf, len, &pos, "no change");
}
