/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Shard map: an extendible-hashing directory over the top bits of XXH3-64.
 *
 * A map is built once and never modified, so every change below allocates a new map and
 * copies the shards it keeps. The map, its shards[] and its directory live in a single
 * allocation: km_shardmap_free() is one free() and a reader holding the map pointer holds
 * everything it needs.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <km_proto.h>

#include "km_shardmap_priv.h"

unsigned int
km_shard_depth(uint64_t id)
{
	/* id 0 is not a shard; answer 0 rather than invoke clz(0). */
	if (id == 0)
		return 0;
	return 63 - (unsigned int)__builtin_clzll(id);
}

uint32_t
km_jump_hash(uint64_t key, uint32_t nb_buckets)
{
	int64_t b = -1, j = 0;

	/* No bucket to return: 0 keeps the result a valid index for callers that clamp. */
	if (nb_buckets == 0)
		return 0;
	/* Lamping & Veach 2014, verbatim: other implementations must agree bit for bit. */
	while (j < (int64_t)nb_buckets) {
		b = j;
		key = key * 2862933555777941757ULL + 1;
		j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
	}
	return (uint32_t)b;
}

static inline uint64_t
shard_prefix(uint64_t id)
{
	return id ^ ((uint64_t)1 << km_shard_depth(id));
}

/* First directory slot of a shard in a directory of depth g (g >= depth of id). */
static inline uint64_t
shard_first_slot(uint64_t id, unsigned int g)
{
	return shard_prefix(id) << (g - km_shard_depth(id));
}

/* A valid shard id names a depth the directory can hold. */
static inline int
shard_id_valid(uint64_t id)
{
	return id != 0 && km_shard_depth(id) <= KM_SHARD_DEPTH_MAX;
}

static int
map_params_valid(uint16_t nb_workers, uint8_t route_sep, uint8_t route_depth)
{
	return nb_workers >= 1 && nb_workers <= KM_WORKERS_MAX && route_sep != 0 &&
	       route_depth >= 1;
}

/*
 * Allocate a map for nb_shards and a directory of 1 << global_depth slots; the caller
 * fills shards[] and calls map_finish(). nb_shards <= 1 << KM_SHARD_DEPTH_MAX, so the
 * size cannot overflow a 64-bit size_t.
 */
static struct km_shardmap *
map_alloc(uint32_t epoch, uint16_t nb_workers, uint16_t udp_port_base, uint8_t route_sep,
	uint8_t route_depth, uint32_t nb_shards, unsigned int global_depth)
{
	size_t shards_sz = (size_t)nb_shards * sizeof(struct km_shard);
	size_t dir_sz = ((size_t)1 << global_depth) * sizeof(uint32_t);
	struct km_shardmap *m;

	/* shards[] right after the header keeps its 8-byte alignment; dir[] needs 4. */
	_Static_assert(sizeof(struct km_shardmap) % _Alignof(struct km_shard) == 0,
		"shards[] follows the map header");
	_Static_assert(sizeof(struct km_shard) % _Alignof(uint32_t) == 0, "dir[] follows shards[]");

	m = malloc(sizeof(*m) + shards_sz + dir_sz);
	if (m == NULL)
		return NULL;
	m->epoch = epoch;
	m->nb_workers = nb_workers;
	m->udp_port_base = udp_port_base;
	m->route_sep = route_sep;
	m->route_depth = route_depth;
	m->global_depth = (uint8_t)global_depth;
	m->nb_overrides = 0;
	m->nb_nodes = 0;
	m->self = -1;
	m->gowner = NULL;
	m->nb_shards = nb_shards;
	m->shards = (struct km_shard *)(m + 1);
	m->dir = (uint32_t *)(m->shards + nb_shards);
	return m;
}

/* The successor of old (epoch + 1), with its routing overrides. */
static struct km_shardmap *
map_alloc_like(const struct km_shardmap *old, uint32_t nb_shards, unsigned int global_depth)
{
	struct km_shardmap *m = map_alloc(old->epoch + 1, old->nb_workers, old->udp_port_base,
		old->route_sep, old->route_depth, nb_shards, global_depth);

	if (m != NULL) {
		m->nb_overrides = old->nb_overrides;
		memcpy(m->ovr, old->ovr, old->nb_overrides * sizeof(old->ovr[0]));
	}
	return m;
}

/*
 * Given shards[] sorted and tiling the space (id and moved set, owner set when moved):
 * resolve jump-hash owners, number the shards and fill the directory.
 */
static void
map_finish(struct km_shardmap *m)
{
	unsigned int g = m->global_depth;
	uint32_t i;

	for (i = 0; i < m->nb_shards; i++) {
		struct km_shard *s = &m->shards[i];
		uint64_t first = shard_first_slot(s->id, g);
		uint64_t n = (uint64_t)1 << (g - km_shard_depth(s->id));
		uint64_t k;

		s->index = i;
		if (!s->moved)
			s->owner = (uint16_t)km_jump_hash(s->id, m->nb_workers);
		for (k = 0; k < n; k++)
			m->dir[first + k] = i;
	}
}

int
km_shardmap_create(const struct km_shardmap_params *p, struct km_shardmap **out)
{
	struct km_shardmap *m;
	unsigned int depth;
	uint32_t i;

	if (p == NULL || out == NULL)
		return -EINVAL;
	if (p->nb_shards == 0 || (p->nb_shards & (p->nb_shards - 1)) != 0 ||
		p->nb_shards > (UINT32_C(1) << KM_SHARD_DEPTH_MAX))
		return -EINVAL;
	if (!map_params_valid(p->nb_workers, p->route_sep, p->route_depth))
		return -EINVAL;

	depth = km_shard_depth(p->nb_shards);
	m = map_alloc(1, p->nb_workers, p->udp_port_base, p->route_sep, p->route_depth,
		p->nb_shards, depth);
	if (m == NULL)
		return -ENOMEM;
	/* Prefix order is slot order: shard i covers exactly slot i. */
	for (i = 0; i < p->nb_shards; i++) {
		m->shards[i].id = (uint64_t)p->nb_shards | i;
		m->shards[i].moved = 0;
	}
	map_finish(m);
	*out = m;
	return 0;
}

void
km_shardmap_free(struct km_shardmap *m)
{
	if (m != NULL)
		free(m->gowner);
	free(m);
}

/* Sort key: the shard's prefix left-aligned in 64 bits, i.e. its first hash. */
static int
shard_cmp(const void *a, const void *b)
{
	const struct km_shard *x = a, *y = b;
	unsigned int dx = km_shard_depth(x->id), dy = km_shard_depth(y->id);
	uint64_t kx = dx == 0 ? 0 : shard_prefix(x->id) << (64 - dx);
	uint64_t ky = dy == 0 ? 0 : shard_prefix(y->id) << (64 - dy);

	if (kx != ky)
		return kx < ky ? -1 : 1;
	/* Same start: overlapping shards, rejected later; order by depth to stay total. */
	return dx < dy ? -1 : dx > dy;
}

/*
 * A map from a list of shards (km_shardmap_from_list()); gowner (may be NULL): a global
 * owner per shard, kept in the order of the map's shards; remote: owners may be
 * KM_OWNER_REMOTE.
 */
static int
map_build(uint32_t epoch, uint16_t nb_workers, uint16_t udp_port_base, uint8_t route_sep,
	uint8_t route_depth, const uint64_t *ids, const uint16_t *owners, const uint16_t *gowner,
	uint32_t nb_shards, int remote, struct km_shardmap **out)
{
	struct km_shardmap *m;
	unsigned int g = 0;
	uint64_t next = 0;
	uint32_t i;

	if (ids == NULL || owners == NULL || out == NULL)
		return -EINVAL;
	if (!map_params_valid(nb_workers, route_sep, route_depth))
		return -EINVAL;
	/* More shards than directory slots cannot tile; also bounds the allocation. */
	if (nb_shards == 0 || nb_shards > (UINT32_C(1) << KM_SHARD_DEPTH_MAX))
		return -EINVAL;
	for (i = 0; i < nb_shards; i++) {
		if (!shard_id_valid(ids[i]))
			return -EINVAL;
		if (owners[i] != KM_OWNER_JUMP && owners[i] >= nb_workers &&
			!(remote && owners[i] == KM_OWNER_REMOTE))
			return -EINVAL;
		if (km_shard_depth(ids[i]) > g)
			g = km_shard_depth(ids[i]);
	}

	m = map_alloc(epoch, nb_workers, udp_port_base, route_sep, route_depth, nb_shards, g);
	if (m == NULL)
		return -ENOMEM;
	if (gowner != NULL) {
		m->gowner = malloc((size_t)nb_shards * sizeof(*m->gowner));
		if (m->gowner == NULL) {
			free(m);
			return -ENOMEM;
		}
	}
	for (i = 0; i < nb_shards; i++) {
		m->shards[i].id = ids[i];
		m->shards[i].moved = owners[i] != KM_OWNER_JUMP;
		m->shards[i].owner = owners[i];
		/* Carried through the sort in index (map_finish() numbers the shards). */
		m->shards[i].index = gowner != NULL ? gowner[i] : 0;
	}
	qsort(m->shards, nb_shards, sizeof(m->shards[0]), shard_cmp);
	for (i = 0; gowner != NULL && i < nb_shards; i++)
		m->gowner[i] = (uint16_t)m->shards[i].index;

	/* In slot order each shard must start where the previous one ended: no gap, no
	 * overlap, and the last one ends at the end of the directory. */
	for (i = 0; i < nb_shards; i++) {
		uint64_t id = m->shards[i].id;

		if (shard_first_slot(id, g) != next)
			break;
		next += (uint64_t)1 << (g - km_shard_depth(id));
	}
	if (i != nb_shards || next != (uint64_t)1 << g) {
		km_shardmap_free(m);
		return -EINVAL;
	}
	map_finish(m);
	*out = m;
	return 0;
}

int
km_shardmap_from_list(uint32_t epoch, uint16_t nb_workers, uint16_t udp_port_base,
	uint8_t route_sep, uint8_t route_depth, const uint64_t *ids, const uint16_t *owners,
	uint32_t nb_shards, struct km_shardmap **out)
{
	return map_build(epoch, nb_workers, udp_port_base, route_sep, route_depth, ids, owners,
		NULL, nb_shards, 0, out);
}

/* Derive first and check a node table (km_shardmap_from_cluster()). @return total
 * workers, or 0 when the table is not valid. */
static uint32_t
nodes_check(struct km_map_node *t, uint16_t n)
{
	uint32_t total = 0;
	uint16_t i;

	if (n == 0 || n > KM_MAP_NODES_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		if (t[i].workers == 0 || t[i].ip == 0 || t[i].port == 0 ||
			(uint32_t)t[i].port + t[i].workers - 1 > UINT16_MAX)
			return 0;
		t[i].first = (uint16_t)total;
		total += t[i].workers;
		if (total > KM_WORKERS_MAX)
			return 0;
	}
	return total;
}

int
km_shardmap_from_cluster(uint32_t epoch, uint8_t route_sep, uint8_t route_depth,
	const uint64_t *ids, const uint16_t *owners, uint32_t nb_shards,
	const struct km_map_node *nodes, uint16_t nb_nodes, int self, struct km_shardmap **out)
{
	struct km_map_node t[KM_MAP_NODES_MAX];
	struct km_shardmap *m;
	uint16_t *local = NULL;
	uint32_t total, i;
	int rc;

	if (nodes == NULL || owners == NULL || out == NULL || nb_nodes > KM_MAP_NODES_MAX)
		return -EINVAL;
	memcpy(t, nodes, (size_t)nb_nodes * sizeof(t[0]));
	total = nodes_check(t, nb_nodes);
	if (total == 0 || self >= (int)nb_nodes)
		return -EINVAL;
	if (nb_shards == 0 || nb_shards > (UINT32_C(1) << KM_SHARD_DEPTH_MAX))
		return -EINVAL;
	for (i = 0; i < nb_shards; i++)
		if (owners[i] >= total)
			return -EINVAL;
	if (self < 0) {
		rc = map_build(epoch, (uint16_t)total, 0, route_sep, route_depth, ids, owners,
			owners, nb_shards, 0, &m);
	} else {
		local = malloc((size_t)nb_shards * sizeof(*local));
		if (local == NULL)
			return -ENOMEM;
		for (i = 0; i < nb_shards; i++)
			local[i] = owners[i] >= t[self].first &&
						   owners[i] < t[self].first + t[self].workers
					   ? (uint16_t)(owners[i] - t[self].first)
					   : KM_OWNER_REMOTE;
		rc = map_build(epoch, t[self].workers, t[self].port, route_sep, route_depth, ids,
			local, owners, nb_shards, 1, &m);
		free(local);
	}
	if (rc < 0)
		return rc;
	memcpy(m->nodes, t, (size_t)nb_nodes * sizeof(t[0]));
	m->nb_nodes = nb_nodes;
	m->self = (int16_t)(self < 0 ? -1 : self);
	*out = m;
	return 0;
}

uint16_t
km_shardmap_nb_nodes(const struct km_shardmap *m)
{
	return m->nb_nodes;
}

const struct km_map_node *
km_shardmap_node_at(const struct km_shardmap *m, uint16_t i)
{
	return i < m->nb_nodes ? &m->nodes[i] : NULL;
}

int
km_shardmap_self(const struct km_shardmap *m)
{
	return m->nb_nodes != 0 ? m->self : -1;
}

uint16_t
km_shardmap_global_owner(const struct km_shardmap *m, const struct km_shard *s)
{
	return m->gowner != NULL ? m->gowner[s->index] : s->owner;
}

int
km_shardmap_owner_node(const struct km_shardmap *m, uint16_t owner, uint16_t *worker)
{
	uint16_t i;

	for (i = 0; i < m->nb_nodes; i++)
		if (owner >= m->nodes[i].first && owner < m->nodes[i].first + m->nodes[i].workers) {
			if (worker != NULL)
				*worker = (uint16_t)(owner - m->nodes[i].first);
			return i;
		}
	return -ENOENT;
}

int
km_shardmap_split(const struct km_shardmap *m, uint64_t id, struct km_shardmap **out)
{
	const struct km_shard *s;
	struct km_shardmap *n;
	unsigned int d, g;
	uint32_t i, k;

	if (m != NULL && m->nb_nodes != 0)
		return -EPERM; /* a cluster map: the placer changes it */
	if (m == NULL || out == NULL)
		return -EINVAL;
	s = km_shardmap_find(m, id);
	if (s == NULL)
		return -ENOENT;
	d = km_shard_depth(id);
	if (d >= KM_SHARD_DEPTH_MAX)
		return -ERANGE;

	g = d + 1 > m->global_depth ? d + 1 : m->global_depth;
	n = map_alloc_like(m, m->nb_shards + 1, g);
	if (n == NULL)
		return -ENOMEM;
	i = s->index;
	memcpy(n->shards, m->shards, i * sizeof(m->shards[0]));
	/* 2id covers the lower half of id's slots, 2id+1 the upper: sorted order holds. */
	for (k = 0; k < 2; k++) {
		n->shards[i + k].id = 2 * id + k;
		n->shards[i + k].moved = s->moved;
		n->shards[i + k].owner = s->owner;
	}
	memcpy(&n->shards[i + 2], &m->shards[i + 1], (m->nb_shards - i - 1) * sizeof(m->shards[0]));
	map_finish(n);
	*out = n;
	return 0;
}

int
km_shardmap_merge(const struct km_shardmap *m, uint64_t id, struct km_shardmap **out)
{
	const struct km_shard *lo, *hi;
	struct km_shardmap *n;
	unsigned int g = 0;
	uint32_t i, k;

	if (m != NULL && m->nb_nodes != 0)
		return -EPERM; /* a cluster map: the placer changes it */
	if (m == NULL || out == NULL)
		return -EINVAL;
	if (id == 1)
		return -EINVAL;
	if (km_shardmap_find(m, id) == NULL)
		return -ENOENT;
	lo = km_shardmap_find(m, id & ~(uint64_t)1);
	hi = km_shardmap_find(m, id | 1);
	/* id is a shard, so its parent is not: the buddy's half is covered by the buddy
	 * itself or by shards below it. */
	if (lo == NULL || hi == NULL)
		return -EINVAL;

	/* Merging may remove the only deepest shards: the directory can shrink. */
	g = km_shard_depth(id) - 1;
	for (k = 0; k < m->nb_shards; k++) {
		if (k != lo->index && k != hi->index && km_shard_depth(m->shards[k].id) > g)
			g = km_shard_depth(m->shards[k].id);
	}
	n = map_alloc_like(m, m->nb_shards - 1, g);
	if (n == NULL)
		return -ENOMEM;
	/* lo and hi tile their parent's slots, so they are adjacent: hi->index = i + 1. */
	i = lo->index;
	memcpy(n->shards, m->shards, i * sizeof(m->shards[0]));
	n->shards[i].id = id >> 1;
	n->shards[i].moved = lo->moved || hi->moved;
	n->shards[i].owner = lo->owner;
	memcpy(&n->shards[i + 1], &m->shards[i + 2], (m->nb_shards - i - 2) * sizeof(m->shards[0]));
	map_finish(n);
	*out = n;
	return 0;
}

int
km_shardmap_move(const struct km_shardmap *m, uint64_t id, uint16_t owner, struct km_shardmap **out)
{
	const struct km_shard *s;
	struct km_shardmap *n;

	if (m != NULL && m->nb_nodes != 0)
		return -EPERM; /* a cluster map: the placer changes it */
	if (m == NULL || out == NULL)
		return -EINVAL;
	s = km_shardmap_find(m, id);
	if (s == NULL)
		return -ENOENT;
	if (owner >= m->nb_workers)
		return -EINVAL;

	n = map_alloc_like(m, m->nb_shards, m->global_depth);
	if (n == NULL)
		return -ENOMEM;
	memcpy(n->shards, m->shards, m->nb_shards * sizeof(m->shards[0]));
	n->shards[s->index].owner = owner;
	n->shards[s->index].moved = 1;
	map_finish(n);
	*out = n;
	return 0;
}

size_t
km_shardmap_part_len(uint8_t route_sep, unsigned int depth, const uint8_t *key, size_t len)
{
	return km_part_len(route_sep, depth, key, len);
}

size_t
km_shardmap_route_len(const struct km_shardmap *m, const uint8_t *key, size_t len)
{
	return km_part_len(m->route_sep, m->route_depth, key, len);
}

uint64_t
km_shardmap_hash(const struct km_shardmap *m, const uint8_t *key, size_t len)
{
	struct km_shardmap_route rt;

	if (km_shardmap_route(m, key, len, &rt) != 0)
		return XXH3_64bits(key, km_shardmap_route_len(m, key, len));
	return rt.hash;
}

uint32_t
km_shardmap_epoch(const struct km_shardmap *m)
{
	return m->epoch;
}

uint16_t
km_shardmap_nb_workers(const struct km_shardmap *m)
{
	return m->nb_workers;
}

uint16_t
km_shardmap_udp_port_base(const struct km_shardmap *m)
{
	return m->udp_port_base;
}

uint8_t
km_shardmap_route_sep(const struct km_shardmap *m)
{
	return m->route_sep;
}

uint8_t
km_shardmap_route_depth(const struct km_shardmap *m)
{
	return m->route_depth;
}

uint32_t
km_shardmap_nb_shards(const struct km_shardmap *m)
{
	return m->nb_shards;
}

const struct km_shard *
km_shardmap_shard_at(const struct km_shardmap *m, uint32_t i)
{
	return i < m->nb_shards ? &m->shards[i] : NULL;
}

uint64_t
km_shard_id(const struct km_shard *s)
{
	return s->id;
}

uint16_t
km_shard_owner(const struct km_shard *s)
{
	return s->owner;
}

int
km_shard_moved(const struct km_shard *s)
{
	return s->moved != 0;
}

const struct km_shard *
km_shardmap_lookup(const struct km_shardmap *m, uint64_t hash)
{
	return km_dir_lookup(m, hash);
}

uint32_t
km_shard_index(const struct km_shard *s)
{
	return s->index;
}

const struct km_override_info *
km_shardmap_override_find(const struct km_shardmap *m, uint64_t hash)
{
	uint32_t i;

	for (i = 0; i < m->nb_overrides; i++)
		if (m->ovr[i].hash == hash)
			return &m->ovr[i];
	return NULL;
}

/* The route of a key whose part an override names, from out (its route without one): out
 * unchanged if none does. Out of line: rare, and the inline path stays short. */
void
km_shardmap_route_ovr(
	const struct km_shardmap *m, const uint8_t *key, size_t len, struct km_shardmap_route *out)
{
	const struct km_override_info *o = km_shardmap_override_find(m, out->hash);
	size_t elen;
	const struct km_shard *own = out->shard, *ext;
	uint64_t ehash;

	if (o == NULL)
		return;
	elen = km_part_len(m->route_sep, (unsigned int)m->route_depth + o->extra, key, len);
	/* A key with no component past its part routes the same by either rule. */
	if (elen == out->route_len)
		return;
	ehash = XXH3_64bits(key, elen);
	ext = km_dir_lookup(m, ehash);
	if (o->state == KM_OVR_REVERTING) {
		out->fallback = ext != own ? ext : NULL;
		return;
	}
	out->hash = ehash;
	out->route_len = elen;
	out->shard = ext;
	out->owner = ext->owner;
	if (o->state == KM_OVR_MIGRATING && own != ext)
		out->fallback = own;
}

int
km_shardmap_route(
	const struct km_shardmap *m, const uint8_t *key, size_t len, struct km_shardmap_route *out)
{
	if (m == NULL || out == NULL || (key == NULL && len != 0))
		return -EINVAL;
	km_route_key(m, key, len, out);
	return 0;
}

uint32_t
km_shardmap_nb_overrides(const struct km_shardmap *m)
{
	return m->nb_overrides;
}

const struct km_override_info *
km_shardmap_override_at(const struct km_shardmap *m, uint32_t i)
{
	return i < m->nb_overrides ? &m->ovr[i] : NULL;
}

/* A copy of m with epoch + 1: the base of every override change. */
static struct km_shardmap *
map_copy(const struct km_shardmap *m)
{
	struct km_shardmap *n = map_alloc_like(m, m->nb_shards, m->global_depth);

	if (n == NULL)
		return NULL;
	memcpy(n->shards, m->shards, m->nb_shards * sizeof(m->shards[0]));
	map_finish(n);
	return n;
}

int
km_shardmap_override_add(const struct km_shardmap *m, const uint8_t *part, size_t len,
	uint8_t extra, struct km_shardmap **out)
{
	struct km_override_info *o;
	struct km_shardmap *n;
	uint64_t hash;

	if (m != NULL && m->nb_nodes != 0)
		return -EPERM; /* a cluster map: the placer changes it */
	if (m == NULL || out == NULL || part == NULL || len == 0 || extra == 0 ||
		(unsigned int)m->route_depth + extra > UINT8_MAX)
		return -EINVAL;
	/* A routing part has fewer than route_depth separators: it is its own part. */
	if (km_shardmap_route_len(m, part, len) != len)
		return -EINVAL;
	hash = XXH3_64bits(part, len);
	o = (struct km_override_info *)km_shardmap_override_find(m, hash);
	if (o != NULL && o->state != KM_OVR_REVERTING)
		return -EEXIST;
	if (o == NULL && m->nb_overrides >= KM_OVERRIDES_MAX)
		return -ENOSPC;
	n = map_copy(m);
	if (n == NULL)
		return -ENOMEM;
	if (o != NULL) {
		o = &n->ovr[o - m->ovr];
	} else {
		o = &n->ovr[n->nb_overrides++];
		memset(o, 0, sizeof(*o));
		o->hash = hash;
		if (len < sizeof(o->name))
			memcpy(o->name, part, len);
	}
	/* A reverting part keeps its old extra: its keys are spread by it. */
	if (o->extra == 0)
		o->extra = extra;
	o->state = KM_OVR_MIGRATING;
	*out = n;
	return 0;
}

int
km_shardmap_override_settle(const struct km_shardmap *m, uint64_t hash, struct km_shardmap **out)
{
	const struct km_override_info *o;
	struct km_shardmap *n;
	uint32_t i;

	if (m != NULL && m->nb_nodes != 0)
		return -EPERM; /* a cluster map: the placer changes it */
	if (m == NULL || out == NULL)
		return -EINVAL;
	o = km_shardmap_override_find(m, hash);
	if (o == NULL)
		return -ENOENT;
	if (o->state == KM_OVR_SETTLED)
		return -EALREADY;
	n = map_copy(m);
	if (n == NULL)
		return -ENOMEM;
	i = (uint32_t)(o - m->ovr);
	if (o->state == KM_OVR_MIGRATING) {
		n->ovr[i].state = KM_OVR_SETTLED;
	} else {
		memmove(&n->ovr[i], &n->ovr[i + 1], (n->nb_overrides - i - 1) * sizeof(n->ovr[0]));
		n->nb_overrides--;
	}
	*out = n;
	return 0;
}

int
km_shardmap_override_remove(const struct km_shardmap *m, uint64_t hash, struct km_shardmap **out)
{
	const struct km_override_info *o;
	struct km_shardmap *n;

	if (m != NULL && m->nb_nodes != 0)
		return -EPERM; /* a cluster map: the placer changes it */
	if (m == NULL || out == NULL)
		return -EINVAL;
	o = km_shardmap_override_find(m, hash);
	if (o == NULL)
		return -ENOENT;
	if (o->state == KM_OVR_REVERTING)
		return -EALREADY;
	n = map_copy(m);
	if (n == NULL)
		return -ENOMEM;
	n->ovr[o - m->ovr].state = KM_OVR_REVERTING;
	*out = n;
	return 0;
}

int
km_shardmap_set_overrides(struct km_shardmap *m, const struct km_override_info *o, uint32_t n)
{
	uint32_t i, j;

	if (m != NULL && m->nb_nodes != 0)
		return -EPERM; /* a cluster map: the placer changes it */
	if (m == NULL || (o == NULL && n != 0) || n > KM_OVERRIDES_MAX)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (o[i].extra == 0 || (unsigned int)m->route_depth + o[i].extra > UINT8_MAX ||
			o[i].state > KM_OVR_REVERTING)
			return -EINVAL;
		for (j = 0; j < i; j++)
			if (o[j].hash == o[i].hash)
				return -EINVAL;
	}
	for (i = 0; i < n; i++) {
		m->ovr[i] = o[i];
		m->ovr[i].name[sizeof(m->ovr[i].name) - 1] = '\0';
	}
	m->nb_overrides = (uint8_t)n;
	return 0;
}

const struct km_shard *
km_shardmap_find(const struct km_shardmap *m, uint64_t id)
{
	const struct km_shard *s;

	if (id == 0 || km_shard_depth(id) > m->global_depth)
		return NULL;
	/* The slot where id would start; the shard there is id only if id is a shard. */
	s = &m->shards[m->dir[shard_first_slot(id, m->global_depth)]];
	return s->id == id ? s : NULL;
}

/*
 * Chunk layout, byte offsets:
 *   0 epoch, 4 nb_workers, 6 udp_port_base, 8 route_sep, 9 route_depth, 10 version,
 *   11 flags, 12 nb_shards, 16 first, 20 count, 22 entries { 0 id, 4 owner, 6 flags },
 *   then (flag KM_MAP_F_OVERRIDES) the override list.
 */
#define KM_MAP_VERSION ((KM_MAP_VERSION_MAJOR << 4) | KM_MAP_VERSION_MINOR)
_Static_assert(KM_MAP_VERSION_MAJOR < 16 && KM_MAP_VERSION_MINOR < 16, "version is 2 nibbles");

size_t
km_shardmap_encode(const struct km_shardmap *m, uint32_t first, uint8_t *buf, size_t cap)
{
	size_t count, room, i, ovr_len = 0, nodes_len = 0;
	uint8_t *e;

	if (m == NULL || buf == NULL || first >= m->nb_shards ||
		cap < KM_MAP_HDR_LEN + KM_MAP_ENTRY_LEN)
		return 0;
	/* The first chunk carries the overrides (1.1) and the node table (2.0) after its
	 * entries. */
	if (first == 0 && m->nb_overrides != 0)
		ovr_len = 1 + (size_t)m->nb_overrides * KM_MAP_OVR_LEN;
	if (first == 0 && m->nb_nodes != 0)
		nodes_len = 1 + (size_t)m->nb_nodes * KM_MAP_NODE_LEN;
	if (cap < KM_MAP_HDR_LEN + KM_MAP_ENTRY_LEN + ovr_len + nodes_len)
		return 0;
	count = m->nb_shards - first;
	room = (cap - KM_MAP_HDR_LEN - ovr_len - nodes_len) / KM_MAP_ENTRY_LEN;
	if (count > room)
		count = room;
	if (count > UINT16_MAX)
		count = UINT16_MAX;

	km_put32(buf + 0, m->epoch);
	if (m->nb_nodes != 0) {
		const struct km_map_node *last = &m->nodes[m->nb_nodes - 1];

		km_put16(buf + 4, (uint16_t)(last->first + last->workers));
		km_put16(buf + 6, 0);
		buf[10] = (KM_MAP_CLUSTER_MAJOR << 4) | KM_MAP_CLUSTER_MINOR;
	} else {
		km_put16(buf + 4, m->nb_workers);
		km_put16(buf + 6, m->udp_port_base);
		buf[10] = KM_MAP_VERSION;
	}
	buf[8] = m->route_sep;
	buf[9] = m->route_depth;
	buf[11] = (ovr_len != 0 ? KM_MAP_F_OVERRIDES : 0) | (nodes_len != 0 ? KM_MAP_F_NODES : 0);
	km_put32(buf + 12, m->nb_shards);
	km_put32(buf + 16, first);
	km_put16(buf + 20, (uint16_t)count);
	e = buf + KM_MAP_HDR_LEN;
	for (i = 0; i < count; i++, e += KM_MAP_ENTRY_LEN) {
		const struct km_shard *s = &m->shards[first + i];

		/* Ids have at most KM_SHARD_DEPTH_MAX + 1 bits: u32 on the wire is enough. */
		km_put32(e + 0, (uint32_t)s->id);
		km_put16(e + 4, km_shardmap_global_owner(m, s));
		km_put16(e + 6, s->moved && m->nb_nodes == 0 ? KM_MAP_ENTRY_F_MOVED : 0);
	}
	if (ovr_len != 0) {
		/* Override list: u8 n; n x { 0 hash (u64), 8 extra, 9 state }. */
		*e++ = m->nb_overrides;
		for (i = 0; i < m->nb_overrides; i++, e += KM_MAP_OVR_LEN) {
			km_put64(e + 0, m->ovr[i].hash);
			e[8] = m->ovr[i].extra;
			e[9] = m->ovr[i].state;
		}
	}
	if (nodes_len != 0) {
		/* Node table: u8 n; n x { 0 ip (u32), 4 port, 6 workers }. */
		*e++ = (uint8_t)m->nb_nodes;
		for (i = 0; i < m->nb_nodes; i++, e += KM_MAP_NODE_LEN) {
			km_put32(e + 0, m->nodes[i].ip);
			km_put16(e + 4, m->nodes[i].port);
			km_put16(e + 6, m->nodes[i].workers);
		}
	}
	return KM_MAP_HDR_LEN + count * KM_MAP_ENTRY_LEN + ovr_len + nodes_len;
}

int
km_shardmap_decode_chunk(const uint8_t *buf, size_t len, struct km_map_chunk *c)
{
	size_t end;

	if (buf == NULL || c == NULL || len < KM_MAP_HDR_LEN)
		return -EINVAL;
	/* The version first: a layout we do not know is not worth reading further. */
	c->version_major = buf[10] >> 4;
	c->version_minor = buf[10] & 0x0f;
	if (c->version_major == 0)
		c->version_major = 1;
	if (c->version_major != KM_MAP_VERSION_MAJOR && c->version_major != KM_MAP_CLUSTER_MAJOR)
		return -EPROTO;
	c->flags = buf[11];
	c->epoch = km_get32(buf + 0);
	c->nb_workers = km_get16(buf + 4);
	c->udp_port_base = km_get16(buf + 6);
	c->route_sep = buf[8];
	c->route_depth = buf[9];
	c->nb_shards = km_get32(buf + 12);
	c->first = km_get32(buf + 16);
	c->count = km_get16(buf + 20);
	c->entries = buf + KM_MAP_HDR_LEN;

	c->nb_overrides = 0;
	c->overrides = NULL;
	c->nb_nodes = 0;
	c->nodes = NULL;

	/* Bytes after the last entry (and the override list) are for later minor versions:
	 * ignored. */
	end = (size_t)c->count * KM_MAP_ENTRY_LEN + KM_MAP_HDR_LEN;
	if (end > len)
		return -EINVAL;
	if (c->flags & KM_MAP_F_OVERRIDES) {
		uint32_t i;

		/* Only the first chunk carries them; it has the room for them. */
		if (c->first != 0 || end + 1 > len || buf[end] > KM_OVERRIDES_MAX ||
			end + 1 + (size_t)buf[end] * KM_MAP_OVR_LEN > len)
			return -EINVAL;
		c->nb_overrides = buf[end];
		c->overrides = buf + end + 1;
		for (i = 0; i < c->nb_overrides; i++) {
			const uint8_t *o = c->overrides + (size_t)i * KM_MAP_OVR_LEN;

			if (o[8] == 0 || o[9] > KM_OVR_REVERTING)
				return -EINVAL;
		}
		end += 1 + (size_t)c->nb_overrides * KM_MAP_OVR_LEN;
	}
	/* 2.0: the node table, in chunk 0 and only there (1.x ignores the reserved bit). */
	if (c->version_major == KM_MAP_CLUSTER_MAJOR &&
		((c->first == 0) != ((c->flags & KM_MAP_F_NODES) != 0)))
		return -EINVAL;
	if (c->version_major == KM_MAP_CLUSTER_MAJOR && c->first == 0) {
		struct km_map_node t[KM_MAP_NODES_MAX];
		uint32_t i;

		if (end + 1 > len || buf[end] == 0 || buf[end] > KM_MAP_NODES_MAX ||
			end + 1 + (size_t)buf[end] * KM_MAP_NODE_LEN > len)
			return -EINVAL;
		c->nb_nodes = buf[end];
		c->nodes = buf + end + 1;
		for (i = 0; i < c->nb_nodes; i++)
			km_shardmap_chunk_node(c, i, &t[i]);
		/* The table must name every worker of the header, and valid ports. */
		if (nodes_check(t, c->nb_nodes) != c->nb_workers)
			return -EINVAL;
	}
	/* 64-bit sum: first + count must not wrap past the check. */
	if (c->nb_shards == 0 || (uint64_t)c->first + c->count > c->nb_shards)
		return -EINVAL;
	/* Reject at the first chunk what km_shardmap_from_list() would reject at the end. */
	if (!map_params_valid(c->nb_workers, c->route_sep, c->route_depth))
		return -EINVAL;
	return 0;
}

void
km_shardmap_chunk_entry(const struct km_map_chunk *c, uint32_t i, struct km_map_entry *e)
{
	const uint8_t *p = c->entries + (size_t)i * KM_MAP_ENTRY_LEN;

	e->id = km_get32(p + 0);
	e->owner = km_get16(p + 4);
	e->flags = km_get16(p + 6);
}

void
km_shardmap_chunk_override(const struct km_map_chunk *c, uint32_t i, struct km_override_info *o)
{
	const uint8_t *p = c->overrides + (size_t)i * KM_MAP_OVR_LEN;

	memset(o, 0, sizeof(*o));
	o->hash = km_get64(p + 0);
	o->extra = p[8];
	o->state = p[9];
}

void
km_shardmap_chunk_node(const struct km_map_chunk *c, uint32_t i, struct km_map_node *n)
{
	const uint8_t *p = c->nodes + (size_t)i * KM_MAP_NODE_LEN;
	uint32_t k;

	n->ip = km_get32(p + 0);
	n->port = km_get16(p + 4);
	n->workers = km_get16(p + 6);
	/* first: the workers of the nodes before it. */
	n->first = 0;
	for (k = 0; k < i; k++)
		n->first =
			(uint16_t)(n->first + km_get16(c->nodes + (size_t)k * KM_MAP_NODE_LEN + 6));
}
