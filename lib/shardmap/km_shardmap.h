/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_SHARDMAP_H
#define KM_SHARDMAP_H

/**
 * @file
 * The shard map: key -> routing part -> 64-bit hash -> shard -> owner worker.
 *
 * - Routing part: the first `route_depth` components of the key, components separated
 *   by `route_sep`; a key without the separator is routed by all its bytes.
 * - hash = XXH3_64bits(routing part); the same function in server and client.
 * - Shards form an extendible-hashing directory over the top bits of the hash: a shard
 *   of depth d owns every hash whose top d bits equal its prefix. A shard's id is
 *   (1 << depth) | prefix, so the two halves of shard s are 2s and 2s+1 and the buddy of
 *   s is s ^ 1: split and merge are arithmetic on ids.
 * - Owner: Jump Consistent Hash of the shard id over the workers, unless the map holds
 *   an explicit owner for that shard (a move).
 * - Routing overrides (the partition shifter, DESIGN §3): a routing part P (one entity,
 *   e.g. "user42") may route by `extra` more components, so that the keys of one hot
 *   entity spread over several shards. Overrides are matched by the hash of P. An
 *   override is MIGRATING (new rule; reads fall back to P's own shard until its keys have
 *   moved), SETTLED (new rule only) or REVERTING (P's own rule again; reads fall back to
 *   the extended rule's shard until the keys have moved back).
 *
 * Concurrency: a map is immutable once built. Every change (split, merge, move, override) builds a
 * new map with epoch + 1; the caller publishes it (keymapd: rcu_assign_pointer, liburcu
 * QSBR) and frees the old one after a grace period. Lookups on a published map are
 * wait-free. The library has no DPDK or RCU dependency and may be used from any thread.
 */

#include <stddef.h>
#include <stdint.h>

#define KM_SHARD_DEPTH_MAX 24 /* directory of at most 16 M entries */
#define KM_WORKERS_MAX     128
#define KM_OWNER_JUMP      0xffff /* owner field: use Jump Consistent Hash */

#define KM_OWNER_REMOTE  0xfffe /* owner of a shard of another node (cluster maps) */
#define KM_MAP_NODES_MAX 32     /* nodes of a cluster map */

/** One node of a cluster map: its workers are the global owners first .. first + workers
 * - 1; worker w listens on ip:port + w. */
struct km_map_node {
	uint32_t ip;      /* IPv4, host byte order */
	uint16_t port;    /* UDP port of its worker 0 */
	uint16_t workers; /* 1..KM_WORKERS_MAX */
	uint16_t first;   /* derived: the sum of the workers of the nodes before it */
};

/* Opaque: read through the accessors below (km_shardmap_priv.h is the library's own). */
struct km_shard;
struct km_shardmap;

#define KM_OVERRIDES_MAX     16 /* routing overrides in one map */
#define KM_OVERRIDE_NAME_MAX 64 /* routing part kept for operators, NUL included */

/** State of a routing override (values on the wire: docs/protocol.md section 6). */
enum km_override_state {
	KM_OVR_SETTLED = 0,   /* route by the extended rule */
	KM_OVR_MIGRATING = 1, /* extended rule; reads fall back to the part's own shard */
	KM_OVR_REVERTING = 2, /* the part's own rule; reads fall back to the extended shard */
};

/** One routing override, as the map holds it. */
struct km_override_info {
	uint64_t hash; /* XXH3-64 of the routing part (route_depth components) */
	uint8_t extra; /* components added to the part's routing, >= 1 */
	uint8_t state; /* enum km_override_state */
	/* The routing part itself, NUL-terminated, for operators; "" in a map decoded from
	 * MAP (the wire carries only the hash), or when the part is longer than the field. */
	char name[KM_OVERRIDE_NAME_MAX];
};

struct km_shardmap_params {
	uint32_t nb_shards;     /* initial shard count, power of two, >= 1 */
	uint16_t nb_workers;    /* 1..KM_WORKERS_MAX */
	uint16_t udp_port_base; /* informational, carried to clients */
	uint8_t route_sep;      /* component separator, default '/' */
	uint8_t route_depth;    /* components in the routing part, >= 1 */
};

/**
 * Build the initial map (epoch 1).
 * @return 0 or -EINVAL / -ENOMEM.
 * @note Context: any thread; the caller owns the new map until it publishes it.
 */
int km_shardmap_create(const struct km_shardmap_params *p, struct km_shardmap **out);

/**
 * Free a map (NULL is allowed).
 * @note Context: any thread, once no reader can still hold m (keymapd: after an RCU
 *   grace period following the publication of its successor).
 */
void km_shardmap_free(struct km_shardmap *m);

/**
 * Build a map from an explicit shard list (ids and owners), e.g. one received in a MAP
 * reply. The shards must tile the hash space exactly (prefix-free, complete).
 * Owners of KM_OWNER_JUMP are resolved by jump hash.
 * @return 0, -EINVAL when the list is not a tiling or an owner is out of range, -ENOMEM.
 * @note Context: any thread; the caller owns the new map.
 */
int km_shardmap_from_list(uint32_t epoch, uint16_t nb_workers, uint16_t udp_port_base,
	uint8_t route_sep, uint8_t route_depth, const uint64_t *ids, const uint16_t *owners,
	uint32_t nb_shards, struct km_shardmap **out);

/**
 * Build a cluster map (docs/cluster.md): epoch, routing rule, nb_shards shards (ids[i]
 * owned by the global owner owners[i]) and the node table (nodes[].first is derived,
 * whatever it held). The map of node self (keymapd: 0 <= self < nb_nodes) has that node's
 * workers as its workers: a shard it owns has its local worker as owner, every other
 * shard KM_OWNER_REMOTE. A client's map (self < 0) has every worker of the cluster and the
 * global owners. Either way MAP sends the table and the global owners (encoding 2.0), and
 * derived maps (split, merge, move, overrides) are refused (-EPERM): in a cluster the
 * placer changes the map.
 * @return 0, -EINVAL (no node or over KM_MAP_NODES_MAX, a node with no worker, address 0,
 *   port 0 or ports past 65535, over KM_WORKERS_MAX workers in all, an owner that is no
 *   worker, self past the table, ids that do not tile), -ENOMEM.
 * @note Context: any thread; the caller owns the new map until it publishes it.
 */
int km_shardmap_from_cluster(uint32_t epoch, uint8_t route_sep, uint8_t route_depth,
	const uint64_t *ids, const uint16_t *owners, uint32_t nb_shards,
	const struct km_map_node *nodes, uint16_t nb_nodes, int self, struct km_shardmap **out);

/** Nodes of a cluster map (0: not one). @note Context: any thread holding m. */
uint16_t km_shardmap_nb_nodes(const struct km_shardmap *m);

/** Node i (< km_shardmap_nb_nodes()) of a cluster map. @note Context: any thread holding m. */
const struct km_map_node *km_shardmap_node_at(const struct km_shardmap *m, uint16_t i);

/** This node's index in a server's cluster map; -1 otherwise. @note Context: any thread. */
int km_shardmap_self(const struct km_shardmap *m);

/**
 * Global owner of a shard: its owner in a map that is not a cluster map.
 * @note Context: any thread holding the shard's map.
 */
uint16_t km_shardmap_global_owner(const struct km_shardmap *m, const struct km_shard *s);

/**
 * Node and worker of a global owner of a cluster map.
 * @return the node's index (*worker set), or -ENOENT.
 * @note Context: any thread holding m.
 */
int km_shardmap_owner_node(const struct km_shardmap *m, uint16_t owner, uint16_t *worker);

/**
 * New map with shard `id` split in two (children 2*id, 2*id+1, same owner rule as any
 * shard: explicit owner inherited if the parent was moved, else jump hash).
 * @return 0, -ENOENT no such shard, -ERANGE depth limit, -ENOMEM.
 * @note Context: any thread holding m (m is only read); the caller owns the new map.
 */
int km_shardmap_split(const struct km_shardmap *m, uint64_t id, struct km_shardmap **out);

/**
 * New map with shard `id` and its buddy (id ^ 1) merged into their parent (id >> 1).
 * Both must exist as shards. The parent takes the owner of the lower child if either
 * child was moved, else its jump-hash owner.
 * @return 0, -ENOENT, -EINVAL (depth 0 or buddy split further), -ENOMEM.
 * @note Context: any thread holding m (m is only read); the caller owns the new map.
 */
int km_shardmap_merge(const struct km_shardmap *m, uint64_t id, struct km_shardmap **out);

/**
 * New map with shard `id` owned by `owner`.
 * @return 0, -ENOENT, -EINVAL (owner out of range), -ENOMEM.
 * @note Context: any thread holding m (m is only read); the caller owns the new map.
 */
int km_shardmap_move(
	const struct km_shardmap *m, uint64_t id, uint16_t owner, struct km_shardmap **out);

/**
 * Length of the first `depth` components of key, components separated by route_sep (all
 * of key when it holds fewer): the routing part for depth = route_depth, an override's
 * extended part for route_depth + extra, without a map at hand.
 * @note Context: any thread.
 */
size_t km_shardmap_part_len(uint8_t route_sep, unsigned int depth, const uint8_t *key, size_t len);

/**
 * The routing part of a key (prefix of key) by the map's route_depth, overrides aside:
 * returns its length.
 * @note Context: any thread holding m.
 */
size_t km_shardmap_route_len(const struct km_shardmap *m, const uint8_t *key, size_t len);

/**
 * XXH3-64 of the key's routing part in force: the part's own, or the extended one of an
 * override (MIGRATING or SETTLED). km_shardmap_route() gives it with the shard.
 * @note Context: any thread holding m.
 */
uint64_t km_shardmap_hash(const struct km_shardmap *m, const uint8_t *key, size_t len);

/**
 * Shard holding a hash: one shift and one array index.
 * @note Context: any thread holding m; wait-free.
 */
const struct km_shard *km_shardmap_lookup(const struct km_shardmap *m, uint64_t hash);

/**
 * Where a key goes: the one routing decision shared by keymapd and libkeymap.
 * Filled by km_shardmap_route(); points into the map, valid as long as the map is.
 */
struct km_shardmap_route {
	uint64_t hash;                   /* XXH3-64 of the routing part in force */
	uint64_t part_hash;              /* XXH3-64 of the route_depth-component part, which
					  * names an override (== hash without one) */
	const struct km_shard *shard;    /* shard holding hash: reads and writes go here */
	const struct km_shard *fallback; /* shard that may still hold the key while an
					  * override of its part migrates or reverts (its
					  * old place); NULL otherwise, or when it is shard */
	size_t route_len;                /* bytes of the key in its routing part in force */
	uint16_t owner;                  /* worker executing the key's requests */
};

/**
 * Route a key: routing part -> hash -> shard -> owner worker. One XXH3 of the routing
 * part, one shift, one array index; a map with overrides adds a scan of its (at most
 * KM_OVERRIDES_MAX) override hashes and, for an overridden part, one more XXH3.
 * Replaces km_shardmap_hash() + km_shardmap_lookup(): the result always agrees with them.
 * A key of length 0 routes by the empty routing part (its hash is XXH3 of nothing).
 * @return 0, or -EINVAL when m or out is NULL, or key is NULL with len != 0.
 * @note Context: any thread holding m (keymapd workers: on the RCU read side, per
 *   request); wait-free, no allocation.
 */
int km_shardmap_route(
	const struct km_shardmap *m, const uint8_t *key, size_t len, struct km_shardmap_route *out);

/**
 * New map where routing part `part` (exactly route_depth components: it holds fewer than
 * route_depth separators) routes by `extra` more components, state MIGRATING. An
 * override of the part that is REVERTING becomes MIGRATING again (its keys are in both
 * places: the same mechanism moves them).
 * @return 0; -EINVAL (part not a routing part, empty, extra 0 or route_depth + extra over
 *   255); -EEXIST (already MIGRATING or SETTLED); -ENOSPC (KM_OVERRIDES_MAX in the map);
 *   -ENOMEM.
 * @note Context: any thread holding m (m is only read); the caller owns the new map.
 */
int km_shardmap_override_add(const struct km_shardmap *m, const uint8_t *part, size_t len,
	uint8_t extra, struct km_shardmap **out);

/**
 * New map where the override of the part whose hash is `hash` ends its migration: a
 * MIGRATING one becomes SETTLED, a REVERTING one is removed.
 * @return 0; -ENOENT (no override of hash); -EALREADY (SETTLED already); -ENOMEM.
 * @note Context: any thread holding m (m is only read); the caller owns the new map.
 */
int km_shardmap_override_settle(
	const struct km_shardmap *m, uint64_t hash, struct km_shardmap **out);

/**
 * New map where the override of `hash` is undone: it becomes REVERTING (the part's own
 * rule again; its keys move back, then km_shardmap_override_settle() removes it).
 * @return 0; -ENOENT; -EALREADY (REVERTING already); -ENOMEM.
 * @note Context: any thread holding m (m is only read); the caller owns the new map.
 */
int km_shardmap_override_remove(
	const struct km_shardmap *m, uint64_t hash, struct km_shardmap **out);

/**
 * Give a map just built by km_shardmap_from_list() the overrides of the map it copies
 * (a MAP reply's): hashes must be distinct, extra >= 1, states known, n <=
 * KM_OVERRIDES_MAX. Names are copied when given.
 * @return 0, or -EINVAL (m is then unchanged).
 * @note Context: the thread that built m, before any other thread can hold it.
 */
int km_shardmap_set_overrides(struct km_shardmap *m, const struct km_override_info *o, uint32_t n);

/**
 * Number of routing overrides.
 * @note Context: any thread holding m.
 */
uint32_t km_shardmap_nb_overrides(const struct km_shardmap *m);

/**
 * Override i (< km_shardmap_nb_overrides()), or NULL.
 * @note Context: any thread holding m; valid as long as m is.
 */
const struct km_override_info *km_shardmap_override_at(const struct km_shardmap *m, uint32_t i);

/**
 * The override of the routing part whose hash is `hash`, or NULL.
 * @note Context: any thread holding m; valid as long as m is.
 */
const struct km_override_info *km_shardmap_override_find(
	const struct km_shardmap *m, uint64_t hash);

/*
 * Readers of a map and of its shards. A map is immutable, so each answer holds for as long
 * as the map does. "Holding" a map: keymapd, the RCU read side or the control thread that
 * published it; libkeymap, the handle's thread until its next call.
 */

/**
 * Epoch: 1 for a new map, + 1 per change.
 * @note Context: any thread holding m.
 */
uint32_t km_shardmap_epoch(const struct km_shardmap *m);

/**
 * Workers the shards are spread over.
 * @note Context: any thread holding m.
 */
uint16_t km_shardmap_nb_workers(const struct km_shardmap *m);

/**
 * Worker 0's UDP port (worker i: base + i), 0 if unknown.
 * @note Context: any thread holding m.
 */
uint16_t km_shardmap_udp_port_base(const struct km_shardmap *m);

/**
 * Separator of routing-part components.
 * @note Context: any thread holding m.
 */
uint8_t km_shardmap_route_sep(const struct km_shardmap *m);

/**
 * Components in a key's routing part.
 * @note Context: any thread holding m.
 */
uint8_t km_shardmap_route_depth(const struct km_shardmap *m);

/**
 * Number of shards.
 * @note Context: any thread holding m.
 */
uint32_t km_shardmap_nb_shards(const struct km_shardmap *m);

/**
 * Shard i, in prefix order (the order of MAP chunks), or NULL when i >= nb_shards.
 * @note Context: any thread holding m.
 */
const struct km_shard *km_shardmap_shard_at(const struct km_shardmap *m, uint32_t i);

/**
 * Shard id, (1 << depth) | prefix.
 * @note Context: any thread holding the shard's map.
 */
uint64_t km_shard_id(const struct km_shard *s);

/**
 * Owner worker, resolved (jump hash or explicit).
 * @note Context: any thread holding the shard's map.
 */
uint16_t km_shard_owner(const struct km_shard *s);

/**
 * 1 if a move set the owner explicitly, else 0 (jump hash).
 * @note Context: any thread holding the shard's map.
 */
int km_shard_moved(const struct km_shard *s);

/**
 * Position of the shard in its map: km_shardmap_shard_at(m, km_shard_index(s)) == s.
 * @note Context: any thread holding the shard's map.
 */
uint32_t km_shard_index(const struct km_shard *s);

/**
 * Shard by id, or NULL. O(1) through the directory.
 * @note Context: any thread holding m.
 */
const struct km_shard *km_shardmap_find(const struct km_shardmap *m, uint64_t id);

/**
 * Depth of a shard id (position of its top bit).
 * @note Context: any thread.
 */
unsigned int km_shard_depth(uint64_t id);

/**
 * Jump Consistent Hash (Lamping & Veach 2014): bucket in [0, nb_buckets).
 * @note Context: any thread.
 */
uint32_t km_jump_hash(uint64_t key, uint32_t nb_buckets);

/*
 * Wire encoding of a map (the value of a MAP reply), chunked by a cursor so that a map
 * of any size crosses in datagrams (docs/protocol.md section 6 is the reference):
 *   u32 epoch; u16 nb_workers; u16 udp_port_base; u8 route_sep; u8 route_depth;
 *   u8 version (major << 4 | minor); u8 flags; u32 nb_shards (total);
 *   u32 first (index of the first entry here); u16 count;
 *   count x { u32 id; u16 owner; u16 flags (bit 0 = moved, others reserved) }
 *   1.1, header flag KM_MAP_F_OVERRIDES (chunk 0 only): after the entries,
 *   u8 n; n x { u64 part hash; u8 extra; u8 state }
 *   2.0 (a cluster map): nb_workers is the cluster's, owners are global, udp_port_base 0;
 *   header flag KM_MAP_F_NODES (chunk 0 only, and always there): after the entries and
 *   the override list, u8 n; n x { u32 ip; u16 port; u16 workers }
 *
 * Versions: a new major is a layout an older decoder would misread, so a decoder refuses
 * a major it does not know (-EPROTO). A new minor only adds what an older decoder may
 * ignore (meanings for reserved flag bits, bytes after the last entry), so decoders accept
 * every minor of their major. Major 0 is the encoding before versions existed (the byte
 * was reserved and 0): the same layout as 1.0, accepted as such.
 */
#define KM_MAP_HDR_LEN       22
#define KM_MAP_ENTRY_LEN     8
#define KM_MAP_VERSION_MAJOR 1 /* a server's own map */
#define KM_MAP_VERSION_MINOR 1
#define KM_MAP_CLUSTER_MAJOR 2 /* a cluster map: global owners and a node table */
#define KM_MAP_CLUSTER_MINOR 0
#define KM_MAP_ENTRY_F_MOVED 0x0001 /* entry flags: owner set explicitly by a move */
#define KM_MAP_F_OVERRIDES   0x01   /* header flags (1.1): an override list follows */
#define KM_MAP_OVR_LEN       10     /* one override on the wire */
#define KM_MAP_F_NODES       0x02   /* header flags (2.0): the node table follows */
#define KM_MAP_NODE_LEN      8      /* one node on the wire */

/**
 * Encode shards [first, first + n) of m into buf, as many as fit in cap, in the version
 * KM_MAP_VERSION_MAJOR.KM_MAP_VERSION_MINOR, or KM_MAP_CLUSTER_MAJOR.KM_MAP_CLUSTER_MINOR
 * for a cluster map. The chunk of first 0 carries the overrides (when the map has any) and
 * the node table (a cluster map), and so fewer entries.
 * @return bytes written (0 when first is past the end or nothing fits).
 * @note Context: any thread; m must stay valid for the call (keymapd: RCU read side).
 */
size_t km_shardmap_encode(const struct km_shardmap *m, uint32_t first, uint8_t *buf, size_t cap);

/** Header of an encoded map chunk. */
struct km_map_chunk {
	uint32_t epoch;
	uint16_t nb_workers;
	uint16_t udp_port_base;
	uint8_t route_sep;
	uint8_t route_depth;
	uint8_t version_major; /* KM_MAP_VERSION_MAJOR (0 read as 1) */
	uint8_t version_minor; /* any: newer minors only add what may be ignored */
	uint8_t flags;         /* header flags: KM_MAP_F_OVERRIDES; others ignored */
	uint32_t nb_shards;
	uint32_t first;
	uint16_t count;
	const uint8_t *entries;   /* count x KM_MAP_ENTRY_LEN bytes */
	uint8_t nb_overrides;     /* KM_MAP_F_OVERRIDES: overrides after the entries, else 0 */
	const uint8_t *overrides; /* nb_overrides x KM_MAP_OVR_LEN bytes */
	uint8_t nb_nodes;         /* 2.0, chunk 0: the node table, else 0 */
	const uint8_t *nodes;     /* nb_nodes x KM_MAP_NODE_LEN bytes */
};

/** One entry of a chunk, decoded. */
struct km_map_entry {
	uint64_t id;    /* shard id */
	uint16_t owner; /* resolved owner worker */
	uint16_t flags; /* KM_MAP_ENTRY_F_MOVED; other bits reserved, ignored */
};

/**
 * Decode and validate a chunk (the override list too: at most KM_OVERRIDES_MAX, extra
 * >= 1, known states, only in the chunk of first 0; in 2.0 the node table: in chunk 0
 * and only there, 1..KM_MAP_NODES_MAX nodes whose workers add up to nb_workers, none with
 * address 0, port 0 or ports past 65535).
 * @return 0, -EPROTO for a major version this code does not know (1 and 2 it does), -EINVAL
 *   for a chunk that is truncated or inconsistent.
 * @note Context: any thread.
 */
int km_shardmap_decode_chunk(const uint8_t *buf, size_t len, struct km_map_chunk *c);

/**
 * Entry i (< c->count) of a chunk decoded by km_shardmap_decode_chunk().
 * @note Context: any thread.
 */
void km_shardmap_chunk_entry(const struct km_map_chunk *c, uint32_t i, struct km_map_entry *e);

/**
 * Override i (< c->nb_overrides) of a chunk decoded by km_shardmap_decode_chunk(), name
 * "" (the wire carries none).
 * @note Context: any thread.
 */
void km_shardmap_chunk_override(
	const struct km_map_chunk *c, uint32_t i, struct km_override_info *o);

/**
 * Node i (< c->nb_nodes) of a chunk decoded by km_shardmap_decode_chunk(), first derived.
 * @note Context: any thread.
 */
void km_shardmap_chunk_node(const struct km_map_chunk *c, uint32_t i, struct km_map_node *n);

#endif /* KM_SHARDMAP_H */
