/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The pure side of keymap-placer: load reports under P/ (member and move records are
 * lib/cluster's), the verdict on a move in flight, a decision's plan and a map's change in
 * words.
 */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

enum placer_verdict
placer_move_judge(const struct km_cmap *m, const struct km_cluster_move_record *mv, int from_live,
	uint64_t to_inc, uint64_t age_s, uint32_t timeout_s, struct km_cluster_move *cm, char *why,
	size_t whylen)
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
	if (mv->state == KM_CLUSTER_MOVE_FAILED) {
		fail(why, whylen, "the copy failed: %s",
			mv->reason[0] != '\0' ? mv->reason : "no reason given");
		return PLACER_DROP;
	}
	if (mv->state == KM_CLUSTER_MOVE_READY && to_inc != 0 && mv->to_incarnation != to_inc) {
		/* Stored by another run of the target: the live one may not have it. */
		fail(why, whylen,
			"node %s restarted since it stored the copy (run %" PRIu64 ", now %" PRIu64
			")",
			mv->to, mv->to_incarnation, to_inc);
		return PLACER_DROP;
	}
	if (mv->state == KM_CLUSTER_MOVE_READY && to_inc != 0) {
		*cm = (struct km_cluster_move){.id = mv->id,
			.from_node = (uint16_t)from,
			.from_worker = s->worker,
			.to_node = (uint16_t)to,
			.to_worker = mv->to_worker};
		return PLACER_COMPLETE;
	}
	if (!from_live || to_inc == 0) {
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
	uint32_t i, moved = 0, reps = 0, sync = 0;
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

		unsigned int k, in_a = 0, in_b = 0;

		if (sa == NULL || strcmp(a->nodes[sa->node].id, b->nodes[sb->node].id) != 0 ||
			sa->worker != sb->worker)
			moved++;
		for (k = 0; sa != NULL && k < sa->nb_replicas; k++)
			in_a += sa->replicas[k].in_sync;
		for (k = 0; k < sb->nb_replicas; k++)
			in_b += sb->replicas[k].in_sync;
		if (sa != NULL && sa->nb_replicas != sb->nb_replicas)
			reps++;
		else if (sa != NULL && in_a != in_b)
			sync++;
	}
	if (moved > 0)
		diff_add(buf, len, &pos, "%u shard%s moved", moved, moved == 1 ? "" : "s");
	if (reps > 0)
		diff_add(buf, len, &pos, "replicas of %u shard%s changed", reps,
			reps == 1 ? "" : "s");
	if (sync > 0)
		diff_add(buf, len, &pos, "in-sync replicas of %u shard%s changed", sync,
			sync == 1 ? "" : "s");
	if (pos == 0)
		diff_add(buf, len, &pos, "no change");
}
