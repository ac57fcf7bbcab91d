/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_SHARDMAP_PRIV_H
#define KM_SHARDMAP_PRIV_H

/*
 * The shard map's layout: lib/shardmap's own, not installed. Everyone else reads a map
 * through the accessors of km_shardmap.h; the unit test of the library includes this to
 * check the directory against an independent reference.
 *
 * A map is immutable once built (km_shardmap.h): every field below is written only by the
 * lib/shardmap function that builds the map, before the caller publishes it, and read by
 * any thread holding it afterwards.
 */

#include <string.h>

/* XXH3 inlined: the hash of every request's routing part (the library's is the same
 * function behind a call and a dispatch; keys are short). */
#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL
#endif
#include <xxhash.h>

#include "km_shardmap.h"

struct km_shard {
	uint64_t id;    /* (1 << depth) | prefix */
	uint16_t owner; /* worker index, resolved (jump hash or explicit) */
	uint16_t moved; /* 1 if owner was set explicitly by a move */
	uint32_t index; /* position in map->shards */
};

struct km_shardmap {
	uint32_t epoch;
	uint16_t nb_workers;
	uint16_t udp_port_base; /* worker i listens on udp_port_base + i */
	uint8_t route_sep;
	uint8_t route_depth;
	uint8_t global_depth; /* directory has 1 << global_depth entries */
	uint8_t nb_overrides; /* entries of ovr[] in use, <= KM_OVERRIDES_MAX */
	uint32_t nb_shards;
	struct km_shard *shards; /* sorted by (prefix at global depth), nb_shards entries */
	uint32_t *dir;           /* 1 << global_depth indexes into shards[] */
	/* Routing overrides (the partition shifter), in the order they were added. Read by
	 * km_shardmap_route() only when nb_overrides != 0: the common map costs one test. */
	struct km_override_info ovr[KM_OVERRIDES_MAX];
	/* Cluster maps (km_shardmap_from_cluster()): the node table, this node's index (-1:
	 * a client's map, whose owners are global) and the global owner of each shard, in
	 * shards[] order; nb_nodes 0 and gowner NULL otherwise. */
	uint16_t nb_nodes;
	int16_t self;
	uint16_t *gowner;
	struct km_map_node nodes[KM_MAP_NODES_MAX];
};

/* Length of the first `depth` components of key (all of it when it has fewer). */
static inline size_t
km_part_len(uint8_t route_sep, unsigned int depth, const uint8_t *key, size_t len)
{
	const uint8_t *p = key, *end = key + len, *sep;
	unsigned int seen = 0;

	/* memchr() on a NULL key is undefined even for length 0. */
	if (len == 0)
		return 0;
	/* The routing part ends at the depth-th separator; an empty component ("/x")
	 * counts like any other, so "/x" routes by "". */
	while ((sep = memchr(p, route_sep, (size_t)(end - p))) != NULL) {
		if (++seen == depth)
			return (size_t)(sep - key);
		p = sep + 1;
	}
	return len;
}

/* Shard of a hash: one shift, one array index. */
static inline const struct km_shard *
km_dir_lookup(const struct km_shardmap *m, uint64_t hash)
{
	uint64_t slot = m->global_depth == 0 ? 0 : hash >> (64 - m->global_depth);

	return &m->shards[m->dir[slot]];
}

/* The library's own (km_route_key()): not exported from libkeymap. */
__attribute__((visibility("hidden"))) void km_shardmap_route_ovr(
	const struct km_shardmap *m, const uint8_t *key, size_t len, struct km_shardmap_route *out);

/*
 * km_shardmap_route() of valid arguments: the one routing function, inline so that the
 * request path (lib/proc, km_shardmap_fast.h) keeps the route in registers. A call
 * returning the route through memory cost a store-forwarding stall per request (its
 * fields stored one by one, read back two at a time).
 */
static inline void
km_route_key(
	const struct km_shardmap *m, const uint8_t *key, size_t len, struct km_shardmap_route *out)
{
	size_t rlen = km_part_len(m->route_sep, m->route_depth, key, len);
	uint64_t h = XXH3_64bits(key, rlen);
	const struct km_shard *s = km_dir_lookup(m, h);

	*out = (struct km_shardmap_route){
		.hash = h, .part_hash = h, .shard = s, .route_len = rlen, .owner = s->owner};
	if (__builtin_expect(m->nb_overrides != 0, 0))
		km_shardmap_route_ovr(m, key, len, out);
}

#endif /* KM_SHARDMAP_PRIV_H */
