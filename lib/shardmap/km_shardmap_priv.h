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

#endif /* KM_SHARDMAP_PRIV_H */
