/* SPDX-License-Identifier: BSD-3-Clause */
/* The cluster map: checks, JSON form, conversion to a shard map. */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <km_shardmap.h>

#include "km_cluster.h"
#include "cluster_private.h"

/* Shard ids sit below 1 << (KM_SHARD_DEPTH_MAX + 1); ranges are counted in directory slots
 * of the deepest possible directory. */
#define SLOTS (UINT32_C(1) << KM_SHARD_DEPTH_MAX)

int
km_cluster_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

#define fail km_cluster_fail

int
km_cluster_id_valid(const char *id)
{
	size_t i;

	if (id == NULL)
		return 0;
	for (i = 0; id[i] != '\0'; i++) {
		char c = id[i];

		if (i >= KM_CLUSTER_ID_MAX)
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			    c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return i > 0;
}

static int
shard_id_valid(uint64_t id)
{
	return id != 0 && km_shard_depth(id) <= KM_SHARD_DEPTH_MAX;
}

/* First directory slot of a shard and the number of slots it covers. */
static uint32_t
shard_start(uint64_t id)
{
	unsigned int d = km_shard_depth(id);

	return (uint32_t)((id & ~((uint64_t)1 << d)) << (KM_SHARD_DEPTH_MAX - d));
}

static uint32_t
shard_span(uint64_t id)
{
	return SLOTS >> km_shard_depth(id);
}

struct km_cmap *
km_cmap_alloc(uint32_t nb_shards)
{
	struct km_cmap *m;

	if (nb_shards == 0 || nb_shards > KM_CLUSTER_SHARDS_MAX)
		return NULL;
	m = calloc(1, sizeof(*m) + (size_t)nb_shards * sizeof(m->shards[0]));
	if (m != NULL)
		m->nb_shards = nb_shards;
	return m;
}

static size_t
cmap_size(const struct km_cmap *m)
{
	return sizeof(*m) + (size_t)m->nb_shards * sizeof(m->shards[0]);
}

void
km_cmap_free(struct km_cmap *m)
{
	free(m);
}

struct km_cmap *
km_cmap_dup(const struct km_cmap *m)
{
	struct km_cmap *c;

	if (m == NULL || m->nb_shards == 0 || m->nb_shards > KM_CLUSTER_SHARDS_MAX)
		return NULL;
	c = malloc(cmap_size(m));
	if (c != NULL)
		memcpy(c, m, cmap_size(m));
	return c;
}

static int
node_equal(const struct km_cmap_node *a, const struct km_cmap_node *b)
{
	return strcmp(a->id, b->id) == 0 && a->ip == b->ip && a->port == b->port &&
	       a->workers == b->workers && a->incarnation == b->incarnation &&
	       a->state == b->state && a->down == b->down && a->first == b->first;
}

int
km_cluster_table_equal(const struct km_cmap *a, const struct km_cmap *b)
{
	uint32_t i;

	if (a->route_sep != b->route_sep || a->route_depth != b->route_depth ||
		a->nb_nodes != b->nb_nodes || a->nb_shards != b->nb_shards)
		return 0;
	for (i = 0; i < a->nb_nodes; i++)
		if (!node_equal(&a->nodes[i], &b->nodes[i]))
			return 0;
	for (i = 0; i < a->nb_shards; i++) {
		const struct km_cmap_shard *x = &a->shards[i], *y = &b->shards[i];
		unsigned int k;

		if (x->id != y->id || x->node != y->node || x->worker != y->worker ||
			x->nb_replicas != y->nb_replicas)
			return 0;
		for (k = 0; k < x->nb_replicas; k++)
			if (x->replicas[k].node != y->replicas[k].node ||
				x->replicas[k].worker != y->replicas[k].worker ||
				x->replicas[k].in_sync != y->replicas[k].in_sync)
				return 0;
	}
	return 1;
}

int
km_cmap_equal(const struct km_cmap *a, const struct km_cmap *b)
{
	if (a == NULL || b == NULL)
		return 0;
	return a->epoch == b->epoch && km_cluster_table_equal(a, b);
}

static const char *
ip_text(uint32_t ip, char *buf, size_t len)
{
	struct in_addr a = {.s_addr = htonl(ip)};

	if (inet_ntop(AF_INET, &a, buf, len) == NULL)
		snprintf(buf, len, "?");
	return buf;
}

/* Everything about the header and the node table; first is not looked at. */
static int
check_nodes(const struct km_cmap *m, char *err, size_t errlen)
{
	uint32_t total = 0;
	uint16_t i, j;

	if (m->epoch == 0)
		return fail(err, errlen, -EINVAL, "epoch: 0 is out of range (1..4294967295)");
	if (m->route_sep == 0 || m->route_sep > 0x7f)
		return fail(err, errlen, -EINVAL, "route_sep: not one ASCII character");
	if (m->route_depth == 0)
		return fail(err, errlen, -EINVAL, "route_depth: 0 is out of range (1..255)");
	if (m->nb_nodes == 0 || m->nb_nodes > KM_CLUSTER_NODES_MAX)
		return fail(err, errlen, -EINVAL, "nodes: %u nodes, not 1..%u", m->nb_nodes,
			KM_CLUSTER_NODES_MAX);
	for (i = 0; i < m->nb_nodes; i++) {
		const struct km_cmap_node *n = &m->nodes[i];

		if (memchr(n->id, '\0', sizeof(n->id)) == NULL || !km_cluster_id_valid(n->id))
			return fail(err, errlen, -EINVAL,
				"nodes[%u].id: not 1..%u characters of [A-Za-z0-9._-]", i,
				KM_CLUSTER_ID_MAX);
		for (j = 0; j < i; j++)
			if (strcmp(m->nodes[j].id, n->id) == 0)
				return fail(err, errlen, -EINVAL,
					"nodes[%u].id: \"%s\" is also nodes[%u]'s", i, n->id, j);
		if (n->ip == 0)
			return fail(err, errlen, -EINVAL,
				"nodes[%u].ip: 0.0.0.0 is not a node address", i);
		if (n->workers == 0 || n->workers > KM_WORKERS_MAX)
			return fail(err, errlen, -EINVAL,
				"nodes[%u].workers: %u is out of range (1..%u)", i, n->workers,
				KM_WORKERS_MAX);
		if (n->port == 0 || (uint32_t)n->port + n->workers - 1 > UINT16_MAX)
			return fail(err, errlen, -EINVAL,
				"nodes[%u].port: %u with %u workers is out of range (1..%u)", i,
				n->port, n->workers, UINT16_MAX + 1 - n->workers);
		if (n->incarnation == 0 || n->incarnation > INT64_MAX)
			return fail(err, errlen, -EINVAL,
				"nodes[%u].incarnation: %" PRIu64 " is out of range (1..%" PRId64
				")",
				i, n->incarnation, INT64_MAX);
		if (n->state != KM_CMAP_ACTIVE && n->state != KM_CMAP_DRAINING)
			return fail(err, errlen, -EINVAL, "nodes[%u].state: %u is not a state", i,
				n->state);
		if (n->down > 1)
			return fail(err, errlen, -EINVAL, "nodes[%u].down: %u is not 0 or 1", i,
				n->down);
		total += n->workers;
	}
	if (total > KM_WORKERS_MAX)
		return fail(err, errlen, -EINVAL, "nodes: %" PRIu32 " workers in all, over %u",
			total, KM_WORKERS_MAX);
	return 0;
}

/* Shard at position idx (of the caller's listing): id, node, worker in range. */
static int
check_shard(const struct km_cmap *m, const struct km_cmap_shard *s, uint32_t idx, char *err,
	size_t errlen)
{
	if (!shard_id_valid(s->id))
		return fail(err, errlen, -EINVAL,
			"shards[%" PRIu32 "]: %" PRIu64 " is not a shard id", idx, s->id);
	if (s->node >= m->nb_nodes)
		return fail(err, errlen, -EINVAL,
			"shards[%" PRIu32 "]: node %u is out of range (%u nodes)", idx, s->node,
			m->nb_nodes);
	if (s->worker >= m->nodes[s->node].workers)
		return fail(err, errlen, -EINVAL,
			"shards[%" PRIu32 "]: worker %u is out of range (node %s has %u)", idx,
			s->worker, m->nodes[s->node].id, m->nodes[s->node].workers);
	if (s->nb_replicas > KM_CLUSTER_REPLICAS_MAX)
		return fail(err, errlen, -EINVAL, "shards[%" PRIu32 "]: %u replicas, over %u", idx,
			s->nb_replicas, KM_CLUSTER_REPLICAS_MAX);
	for (unsigned int k = 0; k < s->nb_replicas; k++) {
		const struct km_cmap_replica *r = &s->replicas[k];

		if (r->node >= m->nb_nodes)
			return fail(err, errlen, -EINVAL,
				"shards[%" PRIu32
				"] replica %u: node %u is out of range (%u nodes)",
				idx, k, r->node, m->nb_nodes);
		if (r->node == s->node || (k == 1 && r->node == s->replicas[0].node))
			return fail(err, errlen, -EINVAL,
				"shards[%" PRIu32 "] replica %u: node %s holds another copy", idx,
				k, m->nodes[r->node].id);
		if (r->worker >= m->nodes[r->node].workers)
			return fail(err, errlen, -EINVAL,
				"shards[%" PRIu32
				"] replica %u: worker %u is out of range (node %s has %u)",
				idx, k, r->worker, m->nodes[r->node].id, m->nodes[r->node].workers);
		if (r->in_sync > 1)
			return fail(err, errlen, -EINVAL,
				"shards[%" PRIu32 "] replica %u: in_sync is not 0 or 1", idx, k);
	}
	return 0;
}

static int
start_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	uint32_t sx = shard_start(x), sy = shard_start(y);

	if (sx != sy)
		return sx < sy ? -1 : 1;
	/* Same start: the larger range (smaller depth) first, so that an overlap names it. */
	return x < y ? -1 : x > y;
}

/* The ids (all valid) tile the hash space: sorted by start, each begins where the
 * previous one ended and the last ends at the end. */
static int
check_tiling(const struct km_cmap *m, char *err, size_t errlen)
{
	uint64_t *ids;
	uint32_t i, next = 0;
	int rc = 0;

	ids = malloc((size_t)m->nb_shards * sizeof(*ids));
	if (ids == NULL)
		return fail(err, errlen, -ENOMEM, "shards: out of memory");
	for (i = 0; i < m->nb_shards; i++)
		ids[i] = m->shards[i].id;
	qsort(ids, m->nb_shards, sizeof(*ids), start_cmp);
	for (i = 0; i < m->nb_shards; i++) {
		uint32_t st = shard_start(ids[i]);

		if (i > 0 && ids[i] == ids[i - 1]) {
			rc = fail(err, errlen, -EINVAL, "shards: id %" PRIu64 " is listed twice",
				ids[i]);
			break;
		}
		if (i > 0 && st < next) {
			rc = fail(err, errlen, -EINVAL,
				"shards: id %" PRIu64 " overlaps id %" PRIu64, ids[i], ids[i - 1]);
			break;
		}
		if (st > next) {
			rc = fail(err, errlen, -EINVAL,
				"shards: hole before id %" PRIu64 " (no shard covers it)", ids[i]);
			break;
		}
		next = st + shard_span(ids[i]); /* at most SLOTS: no wrap */
	}
	if (rc == 0 && next != SLOTS)
		rc = fail(err, errlen, -EINVAL,
			"shards: hole after id %" PRIu64 " (no shard covers it)",
			ids[m->nb_shards - 1]);
	free(ids);
	return rc;
}

static int
shard_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct km_cmap_shard *)a)->id,
		 y = ((const struct km_cmap_shard *)b)->id;

	return x < y ? -1 : x > y;
}

void
km_cluster_set_first(struct km_cmap *m)
{
	uint16_t i, first = 0;

	for (i = 0; i < m->nb_nodes && i < KM_CLUSTER_NODES_MAX; i++) {
		m->nodes[i].first = first;
		first += m->nodes[i].workers;
	}
}

/* km_cmap_finish() (fix: m is completed first) and km_cmap_check() (m as it is). */
static int
check_map(const struct km_cmap *m, struct km_cmap *fix, char *err, size_t errlen)
{
	uint16_t i, first = 0;
	uint32_t k;
	int rc;

	if (m == NULL || m->nb_shards == 0 || m->nb_shards > KM_CLUSTER_SHARDS_MAX)
		return fail(
			err, errlen, -EINVAL, "shards: not 1..%u shards", KM_CLUSTER_SHARDS_MAX);
	rc = check_nodes(m, err, errlen);
	if (rc != 0)
		return rc;
	if (fix != NULL)
		km_cluster_set_first(fix);
	for (i = 0; i < m->nb_nodes; i++) {
		if (m->nodes[i].first != first)
			return fail(err, errlen, -EINVAL, "nodes[%u].first: %u, not %u", i,
				m->nodes[i].first, first);
		first += m->nodes[i].workers;
	}
	/* Before sorting: shards[k] in the messages is the caller's k (a document's). */
	for (k = 0; k < m->nb_shards; k++) {
		rc = check_shard(m, &m->shards[k], k, err, errlen);
		if (rc != 0)
			return rc;
	}
	if (fix != NULL)
		qsort(fix->shards, fix->nb_shards, sizeof(fix->shards[0]), shard_cmp);
	for (k = 1; k < m->nb_shards; k++)
		if (m->shards[k].id <= m->shards[k - 1].id)
			break;
	rc = check_tiling(m, err, errlen);
	if (rc == 0 && k < m->nb_shards)
		rc = fail(err, errlen, -EINVAL,
			"shards[%" PRIu32 "]: id %" PRIu64 " not above the previous id %" PRIu64, k,
			m->shards[k].id, m->shards[k - 1].id);
	return rc;
}

int
km_cmap_finish(struct km_cmap *m, char *err, size_t errlen)
{
	return check_map(m, m, err, errlen);
}

int
km_cmap_check(const struct km_cmap *m, char *err, size_t errlen)
{
	return check_map(m, NULL, err, errlen);
}

int
km_cmap_node_find(const struct km_cmap *m, const char *id)
{
	uint16_t i;

	if (m == NULL || id == NULL)
		return -ENOENT;
	for (i = 0; i < m->nb_nodes && i < KM_CLUSTER_NODES_MAX; i++)
		if (strncmp(m->nodes[i].id, id, sizeof(m->nodes[i].id)) == 0)
			return i;
	return -ENOENT;
}

const struct km_cmap_shard *
km_cmap_shard_find(const struct km_cmap *m, uint64_t id)
{
	uint32_t lo = 0, hi, mid;

	if (m == NULL)
		return NULL;
	hi = m->nb_shards;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (m->shards[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < m->nb_shards && m->shards[lo].id == id ? &m->shards[lo] : NULL;
}

uint32_t
km_cmap_total_workers(const struct km_cmap *m)
{
	uint32_t t = 0;
	uint16_t i;

	if (m == NULL)
		return 0;
	for (i = 0; i < m->nb_nodes && i < KM_CLUSTER_NODES_MAX; i++)
		t += m->nodes[i].workers;
	return t;
}

int
km_cmap_owner(const struct km_cmap *m, uint16_t owner, uint16_t *node, uint16_t *worker)
{
	uint16_t i;

	if (m == NULL || node == NULL || worker == NULL)
		return -EINVAL;
	for (i = 0; i < m->nb_nodes && i < KM_CLUSTER_NODES_MAX; i++) {
		const struct km_cmap_node *n = &m->nodes[i];

		if (owner >= n->first && owner - n->first < n->workers) {
			*node = i;
			*worker = (uint16_t)(owner - n->first);
			return 0;
		}
	}
	return -ENOENT;
}

int
km_cmap_global_owner(const struct km_cmap *m, uint16_t node, uint16_t worker, uint16_t *owner)
{
	if (m == NULL || owner == NULL)
		return -EINVAL;
	if (node >= m->nb_nodes || node >= KM_CLUSTER_NODES_MAX || worker >= m->nodes[node].workers)
		return -ENOENT;
	*owner = (uint16_t)(m->nodes[node].first + worker);
	return 0;
}

int
km_cmap_shardmap(const struct km_cmap *m, int self, struct km_shardmap **out)
{
	struct km_map_node nodes[KM_CLUSTER_NODES_MAX];
	uint64_t *ids;
	uint16_t *owners;
	uint32_t i;
	int rc;

	_Static_assert(KM_CLUSTER_NODES_MAX <= KM_MAP_NODES_MAX, "a cluster map's table fits");
	if (out == NULL || km_cmap_check(m, NULL, 0) != 0 || self >= (int)m->nb_nodes)
		return -EINVAL;
	ids = malloc((size_t)m->nb_shards * sizeof(*ids));
	owners = malloc((size_t)m->nb_shards * sizeof(*owners));
	if (ids == NULL || owners == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < m->nb_shards; i++) {
		ids[i] = m->shards[i].id;
		owners[i] = (uint16_t)(m->nodes[m->shards[i].node].first + m->shards[i].worker);
	}
	for (i = 0; i < m->nb_nodes; i++)
		nodes[i] = (struct km_map_node){.ip = m->nodes[i].ip,
			.port = m->nodes[i].port,
			.workers = m->nodes[i].workers};
	rc = km_shardmap_from_cluster(m->epoch, m->route_sep, m->route_depth, ids, owners,
		m->nb_shards, nodes, m->nb_nodes, self < 0 ? -1 : self, out);
out:
	free(ids);
	free(owners);
	return rc;
}

int
km_cmap_move_apply(const struct km_cmap *m, const struct km_cluster_move *mv, struct km_cmap **out)
{
	const struct km_cmap_shard *s;
	struct km_cmap_shard *ns;
	struct km_cmap *n;
	unsigned int k;

	if (m == NULL || mv == NULL || out == NULL || km_cmap_check(m, NULL, 0) != 0)
		return -EINVAL;
	s = km_cmap_shard_find(m, mv->id);
	if (s == NULL)
		return -ENOENT;
	if (s->node != mv->from_node || s->worker != mv->from_worker)
		return -ESTALE;
	if (mv->to_node >= m->nb_nodes || mv->to_worker >= m->nodes[mv->to_node].workers ||
		(mv->to_node == mv->from_node && mv->to_worker == mv->from_worker))
		return -EINVAL;
	if (m->epoch == UINT32_MAX)
		return -EOVERFLOW;
	n = km_cmap_dup(m);
	if (n == NULL)
		return -ENOMEM;
	n->epoch++;
	ns = &n->shards[s - m->shards];
	ns->node = mv->to_node;
	ns->worker = mv->to_worker;
	/* A primary is never its own replica: the target's replica entry goes. The others
	 * are out of sync: the copy moved may hold writes never acknowledged (and shown by
	 * the new primary) that they miss; they are copied again from the new primary. */
	for (k = 0; k < ns->nb_replicas;)
		if (ns->replicas[k].node == mv->to_node) {
			ns->replicas[k] = ns->replicas[ns->nb_replicas - 1];
			ns->nb_replicas--;
		} else {
			ns->replicas[k++].in_sync = 0;
		}
	*out = n;
	return 0;
}

/*
 * JSON.
 */

/* An integer member of o in [min, max]; name is the field as messages show it. */
static int
get_int(const json_t *o, const char *key, const char *name, json_int_t min, json_int_t max,
	json_int_t *v, char *err, size_t errlen)
{
	const json_t *j = json_object_get(o, key);

	if (j == NULL)
		return fail(err, errlen, -EINVAL, "%s: missing", name);
	if (!json_is_integer(j))
		return fail(err, errlen, -EINVAL, "%s: not an integer", name);
	*v = json_integer_value(j);
	if (*v < min || *v > max)
		return fail(err, errlen, -EINVAL,
			"%s: %" JSON_INTEGER_FORMAT " is out of range (%" JSON_INTEGER_FORMAT
			"..%" JSON_INTEGER_FORMAT ")",
			name, *v, min, max);
	return 0;
}

static int
get_string(const json_t *o, const char *key, const char *name, const char **v, size_t *len,
	char *err, size_t errlen)
{
	const json_t *j = json_object_get(o, key);

	if (j == NULL)
		return fail(err, errlen, -EINVAL, "%s: missing", name);
	if (!json_is_string(j))
		return fail(err, errlen, -EINVAL, "%s: not a string", name);
	*v = json_string_value(j);
	*len = json_string_length(j);
	return 0;
}

static int
decode_node(const json_t *o, uint16_t i, struct km_cmap_node *n, char *err, size_t errlen)
{
	char name[48];
	const char *s;
	struct in_addr a;
	json_int_t v;
	const json_t *j;
	size_t len;
	int rc;

	if (!json_is_object(o))
		return fail(err, errlen, -EINVAL, "nodes[%u]: not an object", i);
	snprintf(name, sizeof(name), "nodes[%u].id", i);
	rc = get_string(o, "id", name, &s, &len, err, errlen);
	if (rc != 0)
		return rc;
	if (len != strlen(s) || !km_cluster_id_valid(s))
		return fail(err, errlen, -EINVAL, "%s: not 1..%u characters of [A-Za-z0-9._-]",
			name, KM_CLUSTER_ID_MAX);
	memcpy(n->id, s, len + 1);
	snprintf(name, sizeof(name), "nodes[%u].ip", i);
	rc = get_string(o, "ip", name, &s, &len, err, errlen);
	if (rc != 0)
		return rc;
	if (len != strlen(s) || inet_pton(AF_INET, s, &a) != 1)
		return fail(err, errlen, -EINVAL, "%s: not an IPv4 address", name);
	n->ip = ntohl(a.s_addr);
	snprintf(name, sizeof(name), "nodes[%u].port", i);
	rc = get_int(o, "port", name, 1, UINT16_MAX, &v, err, errlen);
	if (rc != 0)
		return rc;
	n->port = (uint16_t)v;
	snprintf(name, sizeof(name), "nodes[%u].workers", i);
	rc = get_int(o, "workers", name, 1, KM_WORKERS_MAX, &v, err, errlen);
	if (rc != 0)
		return rc;
	n->workers = (uint16_t)v;
	snprintf(name, sizeof(name), "nodes[%u].incarnation", i);
	rc = get_int(o, "incarnation", name, 1, INT64_MAX, &v, err, errlen);
	if (rc != 0)
		return rc;
	n->incarnation = (uint64_t)v;
	snprintf(name, sizeof(name), "nodes[%u].state", i);
	rc = get_string(o, "state", name, &s, &len, err, errlen);
	if (rc != 0)
		return rc;
	if (strcmp(s, "active") == 0 && len == 6)
		n->state = KM_CMAP_ACTIVE;
	else if (strcmp(s, "draining") == 0 && len == 8)
		n->state = KM_CMAP_DRAINING;
	else
		return fail(err, errlen, -EINVAL, "%s: not \"active\" or \"draining\"", name);
	j = json_object_get(o, "down");
	if (j != NULL && !json_is_boolean(j))
		return fail(err, errlen, -EINVAL, "nodes[%u].down: not a boolean", i);
	n->down = j != NULL && json_is_true(j);
	return 0;
}

static int
decode_shard(const json_t *a, uint32_t i, const struct km_cmap *m, struct km_cmap_shard *s,
	char *err, size_t errlen)
{
	const json_t *f[3], *reps;
	json_int_t v[3];
	unsigned int k;

	if (!json_is_array(a) || (json_array_size(a) != 3 && json_array_size(a) != 4))
		return fail(err, errlen, -EINVAL,
			"shards[%" PRIu32 "]: not an array [id, node, worker(, replicas)]", i);
	for (k = 0; k < 3; k++) {
		f[k] = json_array_get(a, k);
		if (!json_is_integer(f[k]))
			return fail(err, errlen, -EINVAL, "shards[%" PRIu32 "][%u]: not an integer",
				i, k);
		v[k] = json_integer_value(f[k]);
	}
	if (v[0] <= 0 || v[0] >= ((json_int_t)2 << KM_SHARD_DEPTH_MAX))
		return fail(err, errlen, -EINVAL,
			"shards[%" PRIu32 "]: %" JSON_INTEGER_FORMAT " is not a shard id", i, v[0]);
	if (v[1] < 0 || v[1] >= m->nb_nodes)
		return fail(err, errlen, -EINVAL,
			"shards[%" PRIu32 "]: node %" JSON_INTEGER_FORMAT
			" is out of range (%u nodes)",
			i, v[1], m->nb_nodes);
	if (v[2] < 0 || v[2] > UINT16_MAX)
		return fail(err, errlen, -EINVAL,
			"shards[%" PRIu32 "]: worker %" JSON_INTEGER_FORMAT
			" is out of range (node %s has %u)",
			i, v[2], m->nodes[v[1]].id, m->nodes[v[1]].workers);
	s->id = (uint64_t)v[0];
	s->node = (uint16_t)v[1];
	s->worker = (uint16_t)v[2];
	s->nb_replicas = 0;
	reps = json_array_get(a, 3);
	if (reps == NULL)
		return 0;
	if (!json_is_array(reps) || json_array_size(reps) == 0 ||
		json_array_size(reps) > KM_CLUSTER_REPLICAS_MAX)
		return fail(err, errlen, -EINVAL,
			"shards[%" PRIu32 "][3]: not an array of 1..%u replicas", i,
			KM_CLUSTER_REPLICAS_MAX);
	for (k = 0; k < json_array_size(reps); k++) {
		const json_t *r = json_array_get(reps, k), *g[3];
		json_int_t w[3];
		unsigned int j;

		if (!json_is_array(r) || json_array_size(r) != 3)
			return fail(err, errlen, -EINVAL,
				"shards[%" PRIu32 "][3][%u]: not an array [node, worker, in_sync]",
				i, k);
		for (j = 0; j < 3; j++) {
			g[j] = json_array_get(r, j);
			if (!json_is_integer(g[j]))
				return fail(err, errlen, -EINVAL,
					"shards[%" PRIu32 "][3][%u][%u]: not an integer", i, k, j);
			w[j] = json_integer_value(g[j]);
		}
		if (w[0] < 0 || w[0] >= m->nb_nodes || w[1] < 0 || w[1] > UINT16_MAX || w[2] < 0 ||
			w[2] > 1)
			return fail(err, errlen, -EINVAL,
				"shards[%" PRIu32 "][3][%u]: node, worker or in_sync out of range",
				i, k);
		s->replicas[k] = (struct km_cmap_replica){
			.node = (uint16_t)w[0], .worker = (uint16_t)w[1], .in_sync = (uint8_t)w[2]};
		s->nb_replicas++;
	}
	return 0;
}

static int
decode_root(const json_t *root, struct km_cmap **out, char *err, size_t errlen)
{
	struct km_cmap hdr, *m;
	const json_t *nodes, *shards, *j;
	const char *s;
	json_int_t v;
	size_t len, i, n;
	int rc;

	if (!json_is_object(root))
		return fail(err, errlen, -EINVAL, "not a JSON object");
	/* The version first: another major may lay out everything else differently. */
	j = json_object_get(root, "version");
	if (j == NULL)
		return fail(err, errlen, -EINVAL, "version: missing");
	if (!json_is_integer(j))
		return fail(err, errlen, -EINVAL, "version: not an integer");
	if (json_integer_value(j) != KM_CMAP_VERSION)
		return fail(err, errlen, -EPROTO,
			"version: %" JSON_INTEGER_FORMAT " is not known (%d is)",
			json_integer_value(j), KM_CMAP_VERSION);
	memset(&hdr, 0, sizeof(hdr));
	rc = get_int(root, "epoch", "epoch", 1, UINT32_MAX, &v, err, errlen);
	if (rc != 0)
		return rc;
	hdr.epoch = (uint32_t)v;
	rc = get_string(root, "route_sep", "route_sep", &s, &len, err, errlen);
	if (rc != 0)
		return rc;
	if (len != 1 || s[0] == '\0' || (unsigned char)s[0] > 0x7f)
		return fail(err, errlen, -EINVAL, "route_sep: not one ASCII character");
	hdr.route_sep = (uint8_t)s[0];
	rc = get_int(root, "route_depth", "route_depth", 1, UINT8_MAX, &v, err, errlen);
	if (rc != 0)
		return rc;
	hdr.route_depth = (uint8_t)v;

	nodes = json_object_get(root, "nodes");
	if (nodes == NULL)
		return fail(err, errlen, -EINVAL, "nodes: missing");
	if (!json_is_array(nodes))
		return fail(err, errlen, -EINVAL, "nodes: not an array");
	n = json_array_size(nodes);
	if (n == 0 || n > KM_CLUSTER_NODES_MAX)
		return fail(err, errlen, -EINVAL, "nodes: %zu nodes, not 1..%u", n,
			KM_CLUSTER_NODES_MAX);
	hdr.nb_nodes = (uint16_t)n;
	for (i = 0; i < n; i++) {
		rc = decode_node(json_array_get(nodes, i), (uint16_t)i, &hdr.nodes[i], err, errlen);
		if (rc != 0)
			return rc;
	}

	shards = json_object_get(root, "shards");
	if (shards == NULL)
		return fail(err, errlen, -EINVAL, "shards: missing");
	if (!json_is_array(shards))
		return fail(err, errlen, -EINVAL, "shards: not an array");
	n = json_array_size(shards);
	if (n == 0 || n > KM_CLUSTER_SHARDS_MAX)
		return fail(err, errlen, -EINVAL, "shards: %zu shards, not 1..%u", n,
			KM_CLUSTER_SHARDS_MAX);
	m = km_cmap_alloc((uint32_t)n);
	if (m == NULL)
		return fail(err, errlen, -ENOMEM, "out of memory");
	memcpy(m, &hdr, sizeof(hdr));
	m->nb_shards = (uint32_t)n;
	for (i = 0; i < n; i++) {
		rc = decode_shard(
			json_array_get(shards, i), (uint32_t)i, m, &m->shards[i], err, errlen);
		if (rc != 0)
			goto bad;
	}
	/* The rest (worker ranges, duplicate ids, totals, tiling) is km_cmap_finish()'s. */
	rc = km_cmap_finish(m, err, errlen);
	if (rc != 0)
		goto bad;
	*out = m;
	return 0;
bad:
	km_cmap_free(m);
	return rc;
}

int
km_cmap_decode(const char *json, size_t len, struct km_cmap **out, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root;
	int rc;

	if (out == NULL || (json == NULL && len != 0))
		return fail(err, errlen, -EINVAL, "no document");
	if (json == NULL)
		json = "";
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL)
		return fail(err, errlen, -EINVAL, "invalid JSON at line %d column %d: %s", je.line,
			je.column, je.text);
	rc = decode_root(root, out, err, errlen);
	json_decref(root);
	return rc;
}

/* json_*_set_new() and json_array_append_new() take the reference even when they fail,
 * so a failure anywhere is counted and the tree freed once at the end. */
static void
put(json_t *o, const char *key, json_t *v, int *bad)
{
	if (v == NULL || json_object_set_new(o, key, v) != 0)
		*bad = 1;
}

static void
append(json_t *a, json_t *v, int *bad)
{
	if (v == NULL || json_array_append_new(a, v) != 0)
		*bad = 1;
}

int
km_cmap_encode(const struct km_cmap *m, char **out, size_t *len)
{
	static const char *const state[] = {"active", "draining"};
	json_t *root, *nodes, *shards, *o, *a;
	char ip[INET_ADDRSTRLEN], sep[2];
	uint32_t i;
	int bad = 0;

	if (out == NULL || km_cmap_check(m, NULL, 0) != 0)
		return -EINVAL;
	root = json_object();
	nodes = json_array();
	shards = json_array();
	if (root == NULL || nodes == NULL || shards == NULL) {
		json_decref(root);
		json_decref(nodes);
		json_decref(shards);
		return -ENOMEM;
	}
	sep[0] = (char)m->route_sep;
	sep[1] = '\0';
	put(root, "version", json_integer(KM_CMAP_VERSION), &bad);
	put(root, "epoch", json_integer(m->epoch), &bad);
	put(root, "route_sep", json_string(sep), &bad);
	put(root, "route_depth", json_integer(m->route_depth), &bad);
	for (i = 0; i < m->nb_nodes; i++) {
		const struct km_cmap_node *n = &m->nodes[i];

		o = json_object();
		if (o == NULL) {
			bad = 1;
			break;
		}
		put(o, "id", json_string(n->id), &bad);
		put(o, "ip", json_string(ip_text(n->ip, ip, sizeof(ip))), &bad);
		put(o, "port", json_integer(n->port), &bad);
		put(o, "workers", json_integer(n->workers), &bad);
		put(o, "incarnation", json_integer((json_int_t)n->incarnation), &bad);
		put(o, "state", json_string(state[n->state]), &bad);
		if (n->down)
			put(o, "down", json_true(), &bad);
		append(nodes, o, &bad);
	}
	put(root, "nodes", nodes, &bad);
	for (i = 0; i < m->nb_shards && !bad; i++) {
		a = json_array();
		if (a == NULL) {
			bad = 1;
			break;
		}
		append(a, json_integer((json_int_t)m->shards[i].id), &bad);
		append(a, json_integer(m->shards[i].node), &bad);
		append(a, json_integer(m->shards[i].worker), &bad);
		if (m->shards[i].nb_replicas != 0) {
			json_t *reps = json_array();
			unsigned int k;

			for (k = 0; reps != NULL && k < m->shards[i].nb_replicas; k++) {
				const struct km_cmap_replica *r = &m->shards[i].replicas[k];

				append(reps, json_pack("[i, i, i]", r->node, r->worker, r->in_sync),
					&bad);
			}
			if (reps == NULL)
				bad = 1;
			else
				append(a, reps, &bad);
		}
		append(shards, a, &bad);
	}
	put(root, "shards", shards, &bad);
	*out = bad ? NULL : json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (*out == NULL)
		return -ENOMEM;
	if (len != NULL)
		*len = strlen(*out);
	return 0;
}
