/* SPDX-License-Identifier: BSD-3-Clause */
/* Records under P/ that keymap-placer and keymapd both read: members and moves. */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include <km_shardmap.h>

#include "km_cluster.h"
#include "cluster_private.h"

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

/* Field name of o as an IPv4 address other than 0.0.0.0, host byte order. */
static int
get_ip(const json_t *o, const char *name, uint32_t *out)
{
	const char *s = json_string_value(json_object_get(o, name));
	struct in_addr a;

	if (s == NULL || inet_pton(AF_INET, s, &a) != 1 || a.s_addr == 0)
		return -1;
	*out = ntohl(a.s_addr);
	return 0;
}

/* A JSON object from len bytes, or NULL with the reason in err. */
static json_t *
load_object(const void *json, size_t len, char *err, size_t errlen)
{
	json_error_t je;
	json_t *o = json_loadb(json, len, 0, &je);

	if (o == NULL) {
		km_cluster_fail(err, errlen, -EINVAL, "invalid JSON at line %d column %d: %s",
			je.line, je.column, je.text);
		return NULL;
	}
	if (!json_is_object(o)) {
		json_decref(o);
		km_cluster_fail(err, errlen, -EINVAL, "not a JSON object");
		return NULL;
	}
	return o;
}

/* The member's fields but the side channel. @return 0 or -EINVAL (reason in err). */
static int
member_fields(
	const json_t *o, const char *key_id, struct km_cluster_member *m, char *err, size_t errlen)
{
	const char *id, *state;
	int64_t v;

	id = json_string_value(json_object_get(o, "id"));
	state = json_string_value(json_object_get(o, "state"));
	if (id == NULL || !km_cluster_id_valid(id))
		return km_cluster_fail(err, errlen, -EINVAL, "id: missing or not a node id");
	if (key_id != NULL && strcmp(id, key_id) != 0)
		return km_cluster_fail(
			err, errlen, -EINVAL, "id: '%s' under the key of node '%.63s'", id, key_id);
	snprintf(m->id, sizeof(m->id), "%s", id);
	if (get_ip(o, "ip", &m->ip) != 0)
		return km_cluster_fail(err, errlen, -EINVAL, "ip: missing or not an IPv4 address");
	if (get_int(o, "port", 1, 65535, &v) != 0)
		return km_cluster_fail(
			err, errlen, -EINVAL, "port: missing or not an integer in 1..65535");
	m->port = (uint16_t)v;
	if (get_int(o, "workers", 1, KM_WORKERS_MAX, &v) != 0)
		return km_cluster_fail(err, errlen, -EINVAL,
			"workers: missing or not an integer in 1..%d", KM_WORKERS_MAX);
	m->workers = (uint16_t)v;
	if ((uint32_t)m->port + m->workers - 1 > 65535)
		return km_cluster_fail(err, errlen, -EINVAL, "port: %u + %u workers passes 65535",
			m->port, m->workers);
	if (get_int(o, "incarnation", 1, INT64_MAX, &v) != 0)
		return km_cluster_fail(
			err, errlen, -EINVAL, "incarnation: missing or not a positive integer");
	m->incarnation = (uint64_t)v;
	if (state == NULL && json_object_get(o, "state") != NULL)
		return km_cluster_fail(err, errlen, -EINVAL, "state: not a string");
	if (state == NULL || strcmp(state, "active") == 0)
		m->state = KM_CMAP_ACTIVE;
	else if (strcmp(state, "draining") == 0)
		m->state = KM_CMAP_DRAINING;
	else
		return km_cluster_fail(err, errlen, -EINVAL,
			"state: '%.32s' is neither active nor draining", state);
	return 0;
}

int
km_cluster_member_decode(const char *key_id, const void *json, size_t len,
	struct km_cluster_member *out, char *err, size_t errlen)
{
	struct km_cluster_member m;
	json_t *o;
	int64_t v;
	int rc;

	o = load_object(json, len, err, errlen);
	if (o == NULL)
		return -EINVAL;
	memset(&m, 0, sizeof(m));
	rc = member_fields(o, key_id, &m, err, errlen);
	/* Optional: a member without a side channel serves, it only cannot receive a shard. */
	if (rc == 0 && get_int(o, "side_port", 1, 65535, &v) == 0 &&
		get_ip(o, "side_ip", &m.side_ip) == 0)
		m.side_port = (uint16_t)v;
	m.replicas = 2;
	if (rc == 0 && json_object_get(o, "replicas") != NULL) {
		if (get_int(o, "replicas", 1, 3, &v) != 0)
			rc = km_cluster_fail(
				err, errlen, -EINVAL, "replicas: not an integer in 1..3");
		else
			m.replicas = (uint8_t)v;
	}
	m.serving = !json_is_false(json_object_get(o, "serving"));
	if (rc == 0)
		*out = m;
	json_decref(o);
	return rc;
}

static const char *const state_names[] = {
	[KM_CLUSTER_MOVE_COPY] = "copy",
	[KM_CLUSTER_MOVE_READY] = "ready",
	[KM_CLUSTER_MOVE_FAILED] = "failed",
};

/* The move's fields. @return 0 or -EINVAL (reason in err). */
static int
move_fields(const json_t *o, uint64_t key_id, struct km_cluster_move_record *mv, char *err,
	size_t errlen)
{
	const char *from, *to, *state, *reason;
	int64_t v;

	from = json_string_value(json_object_get(o, "from"));
	to = json_string_value(json_object_get(o, "to"));
	state = json_string_value(json_object_get(o, "state"));
	reason = json_string_value(json_object_get(o, "reason"));
	if (get_int(o, "id", 1, INT64_MAX, &v) != 0)
		return km_cluster_fail(err, errlen, -EINVAL, "id: missing or not a shard id");
	mv->id = (uint64_t)v;
	if (mv->id != key_id)
		return km_cluster_fail(err, errlen, -EINVAL,
			"id: %" PRIu64 " under the key of shard %" PRIu64, mv->id, key_id);
	if (get_int(o, "epoch", 1, UINT32_MAX, &v) != 0)
		return km_cluster_fail(
			err, errlen, -EINVAL, "epoch: missing or not an integer in 1..4294967295");
	mv->epoch = (uint32_t)v;
	if (from == NULL || !km_cluster_id_valid(from))
		return km_cluster_fail(err, errlen, -EINVAL, "from: missing or not a node id");
	if (to == NULL || !km_cluster_id_valid(to))
		return km_cluster_fail(err, errlen, -EINVAL, "to: missing or not a node id");
	snprintf(mv->from, sizeof(mv->from), "%s", from);
	snprintf(mv->to, sizeof(mv->to), "%s", to);
	if (get_int(o, "to_worker", 0, KM_WORKERS_MAX - 1, &v) != 0)
		return km_cluster_fail(err, errlen, -EINVAL,
			"to_worker: missing or not an integer in 0..%d", KM_WORKERS_MAX - 1);
	mv->to_worker = (uint16_t)v;
	if (state == NULL)
		return km_cluster_fail(err, errlen, -EINVAL, "state: missing or not a string");
	mv->state = KM_CLUSTER_MOVE_OTHER;
	for (v = 0; v < (int64_t)(sizeof(state_names) / sizeof(state_names[0])); v++)
		if (strcmp(state, state_names[v]) == 0)
			mv->state = (uint8_t)v;
	if (reason != NULL)
		snprintf(mv->reason, sizeof(mv->reason), "%s", reason);
	if (json_object_get(o, "to_incarnation") != NULL) {
		if (get_int(o, "to_incarnation", 1, INT64_MAX, &v) != 0)
			return km_cluster_fail(err, errlen, -EINVAL,
				"to_incarnation: not an integer in 1..%" PRId64, INT64_MAX);
		mv->to_incarnation = (uint64_t)v;
	}
	return 0;
}

int
km_cluster_move_decode(uint64_t key_id, const void *json, size_t len,
	struct km_cluster_move_record *out, char *err, size_t errlen)
{
	struct km_cluster_move_record mv;
	json_t *o;
	int rc;

	o = load_object(json, len, err, errlen);
	if (o == NULL)
		return -EINVAL;
	memset(&mv, 0, sizeof(mv));
	rc = move_fields(o, key_id, &mv, err, errlen);
	if (rc == 0)
		*out = mv;
	json_decref(o);
	return rc;
}

int
km_cluster_move_encode(const struct km_cluster_move_record *mv, char **out)
{
	json_t *o;
	char *s;

	if (mv->state > KM_CLUSTER_MOVE_FAILED)
		return -EINVAL;
	o = json_pack("{s:I, s:I, s:s, s:s, s:I, s:s}", "id", (json_int_t)mv->id, "epoch",
		(json_int_t)mv->epoch, "from", mv->from, "to", mv->to, "to_worker",
		(json_int_t)mv->to_worker, "state", state_names[mv->state]);
	if (o == NULL)
		return -ENOMEM;
	if (mv->reason[0] != '\0') {
		json_t *r = json_string(mv->reason);

		if (r == NULL || json_object_set_new(o, "reason", r) != 0) {
			json_decref(o);
			return r == NULL ? -EINVAL : -ENOMEM;
		}
	}
	if (mv->to_incarnation != 0 && json_object_set_new(o, "to_incarnation",
					       json_integer((json_int_t)mv->to_incarnation)) != 0) {
		json_decref(o);
		return -ENOMEM;
	}
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (s == NULL)
		return -ENOMEM;
	*out = s;
	return 0;
}

static const char *const repl_state_names[] = {
	[KM_CLUSTER_REPL_COPY] = "copy",
	[KM_CLUSTER_REPL_CAUGHT_UP] = "caught_up",
	[KM_CLUSTER_REPL_BROKEN] = "broken",
};

int
km_cluster_repl_decode(const char *key_id, const void *json, size_t len,
	struct km_cluster_repl **out, char *err, size_t errlen)
{
	struct km_cluster_repl *r = NULL;
	const json_t *a, *e;
	const char *node;
	json_t *o;
	int64_t v;
	size_t i;
	int rc = -EINVAL;

	*out = NULL;
	o = load_object(json, len, err, errlen);
	if (o == NULL)
		return -EINVAL;
	node = json_string_value(json_object_get(o, "node"));
	a = json_object_get(o, "shards");
	if (node == NULL || !km_cluster_id_valid(node)) {
		km_cluster_fail(err, errlen, -EINVAL, "node: missing or not a node id");
		goto out;
	}
	if (key_id != NULL && strcmp(node, key_id) != 0) {
		km_cluster_fail(
			err, errlen, -EINVAL, "node: '%s' under the key of %s", node, key_id);
		goto out;
	}
	if (!json_is_array(a)) {
		km_cluster_fail(err, errlen, -EINVAL, "shards: missing or not an array");
		goto out;
	}
	r = calloc(1, sizeof(*r) + json_array_size(a) * sizeof(r->e[0]));
	if (r == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	snprintf(r->node, sizeof(r->node), "%s", node);
	if (get_int(o, "incarnation", 1, INT64_MAX, &v) != 0) {
		km_cluster_fail(
			err, errlen, -EINVAL, "incarnation: missing or not an integer >= 1");
		goto out;
	}
	r->incarnation = (uint64_t)v;
	if (get_int(o, "epoch", 0, UINT32_MAX, &v) != 0) {
		km_cluster_fail(err, errlen, -EINVAL, "epoch: missing or not an integer");
		goto out;
	}
	r->epoch = (uint32_t)v;
	json_array_foreach(a, i, e)
	{
		struct km_cluster_repl_entry *x = &r->e[r->nb];
		const char *n = json_string_value(json_array_get(e, 1));
		const char *st = json_string_value(json_array_get(e, 3));
		const json_t *sid = json_array_get(e, 0), *inc = json_array_get(e, 2);
		unsigned int k;

		if (!json_is_array(e) || json_array_size(e) != 4 || !json_is_integer(sid) ||
			json_integer_value(sid) <= 0 || n == NULL || !km_cluster_id_valid(n) ||
			!json_is_integer(inc) || json_integer_value(inc) <= 0 || st == NULL) {
			km_cluster_fail(err, errlen, -EINVAL,
				"shards[%zu]: not [shard id, node id, incarnation, state]", i);
			goto out;
		}
		x->shard = (uint64_t)json_integer_value(sid);
		snprintf(x->node, sizeof(x->node), "%s", n);
		x->incarnation = (uint64_t)json_integer_value(inc);
		x->state = KM_CLUSTER_REPL_OTHER;
		for (k = 0; k < sizeof(repl_state_names) / sizeof(repl_state_names[0]); k++)
			if (strcmp(st, repl_state_names[k]) == 0)
				x->state = (uint8_t)k;
		r->nb++;
	}
	*out = r;
	r = NULL;
	rc = 0;
out:
	free(r);
	json_decref(o);
	return rc;
}
