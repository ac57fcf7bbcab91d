/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_CLUSTER_H
#define KM_CLUSTER_H

/**
 * @file
 * The cluster map and the placer's decisions (DESIGN §8): data and pure functions, no I/O,
 * no DPDK, no etcd. keymap-placer (elected through etcd) owns the map and writes it to
 * etcd in the JSON form below; keymapd nodes apply it; clients route by it.
 *
 * The cluster map (struct km_cmap):
 * - epoch: >= 1, + 1 per change. Epochs never restart: a new placer continues from the
 *   published map.
 * - route_sep, route_depth: the routing rule of the whole cluster (DESIGN §3). A node
 *   refuses a map that disagrees with its own configuration.
 * - nodes[]: the node table, at most KM_CLUSTER_NODES_MAX. A node's workers are the global
 *   owners first .. first + workers - 1, first being the sum of the workers of the nodes
 *   before it in the table; worker w of a node listens on UDP port + w. The workers of all
 *   nodes are at most KM_WORKERS_MAX in all, so that a global owner fits the shard map's
 *   owner field (km_cmap_shardmap()).
 * - shards[]: {id, node index, worker}, sorted by id, tiling the hash space exactly (ids as
 *   in km_shardmap.h: (1 << depth) | prefix). At most KM_CLUSTER_SHARDS_MAX.
 * Routing overrides (the partition shifter) are not part of the cluster map yet: the shard
 * map built from it has none.
 *
 * JSON form (the value the placer writes to etcd), version 1:
 *
 *   {"version": 1, "epoch": 7, "route_sep": "/", "route_depth": 1,
 *    "nodes": [{"id": "n1", "ip": "198.51.100.11", "port": 7070, "workers": 2,
 *               "incarnation": 3, "state": "active"},
 *              {"id": "n2", "ip": "198.51.100.12", "port": 7070, "workers": 2,
 *               "incarnation": 1, "state": "draining", "down": true}],
 *    "shards": [[4, 0, 0], [5, 1, 0], [6, 0, 1], [7, 1, 1]]}
 *
 * - version: integer, the major version of this layout. A decoder refuses a version it does
 *   not know (-EPROTO) before it reads anything else. Within version 1, a decoder ignores
 *   object members it does not know: later additions that an older reader may skip need no
 *   new version.
 * - epoch: integer 1..4294967295. route_sep: a string of one ASCII character (not NUL).
 *   route_depth: integer 1..255.
 * - nodes: array of 1..KM_CLUSTER_NODES_MAX objects, in table order (the order defines
 *   first): id (1..KM_CLUSTER_ID_MAX characters of [A-Za-z0-9._-], unique), ip (dotted IPv4,
 *   not 0.0.0.0), port (1..65535, port + workers - 1 <= 65535), workers (1..KM_WORKERS_MAX),
 *   incarnation (1..2^63-1: JSON integers are signed 64-bit here), state ("active" or
 *   "draining"), down (optional boolean, false when absent: the node had no live member
 *   at the placer's last decision).
 * - shards: array of 1..KM_CLUSTER_SHARDS_MAX arrays [id, node index, worker], all integers,
 *   worker < that node's workers, the ids tiling the hash space; a replicated shard has a
 *   fourth element, its replicas: [[node index, worker, in_sync], ...] (1..2 of them, on
 *   other nodes than the shard's and each other's, in_sync 0 or 1).
 * km_cmap_encode() writes the canonical form: compact (no blanks), members in the order
 * above, "down" only when true, nodes in table order, shards sorted by id, replicas only
 * when a shard has some, in the order held. Two equal maps
 * encode to the same bytes.
 *
 * The placer (km_cluster_decide()): from the current map (or none), the live members (from
 * etcd) and the per-shard request rates, what must change. See the comment before
 * struct km_cluster_params for the rules.
 *
 * The records under P/ that the placer and the nodes both read (members, moves) are decoded
 * here too (end of this file).
 *
 * Concurrency: none. A map is a plain value: whoever holds it may read it from any thread;
 * every change builds a new map. The functions touch only their arguments.
 */

#include <stddef.h>
#include <stdint.h>

#include <km_shardmap.h>

#define KM_CLUSTER_NODES_MAX  32
#define KM_CLUSTER_ID_MAX     63    /* characters of a node id, NUL not included */
#define KM_CLUSTER_SHARDS_MAX 65536 /* shards in a cluster map */
#define KM_CLUSTER_MOVES_MAX  4096  /* moves in one decision */
#define KM_CMAP_VERSION       1     /* major version of the JSON form */
#define KM_CLUSTER_ERR_MAX    160   /* a message buffer that holds every message in full */

/** What the operator asked of a node (JSON "state"). */
enum km_cmap_state {
	KM_CMAP_ACTIVE = 0,   /* "active": serves, receives shards */
	KM_CMAP_DRAINING = 1, /* "draining": its shards move away, then it leaves the table */
};

/** One node of the cluster map. */
struct km_cmap_node {
	char id[KM_CLUSTER_ID_MAX + 1]; /* NUL-terminated */
	uint32_t ip;                    /* IPv4, host byte order */
	uint16_t port;                  /* worker w listens on port + w */
	uint16_t workers;               /* 1..KM_WORKERS_MAX */
	uint64_t incarnation;           /* restart count of the node, >= 1 */
	uint8_t state;                  /* enum km_cmap_state */
	uint8_t down;                   /* 1: no live member at the last decision; no shard
					 * moves to it (its shards wait for it) */
	uint16_t first;                 /* derived: global owner of its worker 0 */
};

#define KM_CLUSTER_REPLICAS_MAX 2 /* replicas per shard: 3 copies at most */

/** A replica of a shard (docs/cluster.md section 7). */
struct km_cmap_replica {
	uint16_t node;   /* index into nodes[]: not the shard's node, not another replica's */
	uint16_t worker; /* < nodes[node].workers: the worker that serves it once promoted */
	uint8_t in_sync; /* 1: it has every write the primary acknowledged (the placer's word) */
};

/** One shard of the cluster map. */
struct km_cmap_shard {
	uint64_t id;         /* (1 << depth) | prefix */
	uint16_t node;       /* index into nodes[]: the primary */
	uint16_t worker;     /* < nodes[node].workers */
	uint8_t nb_replicas; /* 0..KM_CLUSTER_REPLICAS_MAX */
	struct km_cmap_replica replicas[KM_CLUSTER_REPLICAS_MAX];
};

/**
 * A cluster map: one allocation (km_cmap_alloc()), shards[] at its end. Valid when
 * km_cmap_check() says so; every map this library returns is.
 */
struct km_cmap {
	uint32_t epoch;
	uint8_t route_sep;
	uint8_t route_depth;
	uint16_t nb_nodes;
	uint32_t nb_shards;
	struct km_cmap_node nodes[KM_CLUSTER_NODES_MAX];
	struct km_cmap_shard shards[]; /* nb_shards, sorted by id */
};

/**
 * A zeroed map with room for nb_shards shards (nb_shards set), to be filled by the caller
 * and completed by km_cmap_finish().
 * @return the map, or NULL (nb_shards 0 or over KM_CLUSTER_SHARDS_MAX, or no memory).
 * @note Context: any thread; the caller owns the map (km_cmap_free()).
 */
struct km_cmap *km_cmap_alloc(uint32_t nb_shards);

/**
 * Complete a map filled by hand: sort shards by id, compute every node's first, then check
 * it all as km_cmap_check() does.
 * @param err, errlen: a buffer for the reason of a refusal (may be NULL), in the form
 *   "field: what is wrong", e.g. "nodes[1].workers: 0 is out of range (1..128)".
 * @return 0, or -EINVAL (the reason in err; m is then sorted but not valid).
 * @note Context: the thread that owns m.
 */
int km_cmap_finish(struct km_cmap *m, char *err, size_t errlen);

/**
 * Check a map: epoch >= 1, route rule, 1..KM_CLUSTER_NODES_MAX nodes with valid and unique
 * ids, valid addresses, ports, workers (KM_WORKERS_MAX in all), incarnations and states,
 * first as derived, shards sorted by id, node and worker indices in range, ids tiling the
 * hash space.
 * @return 0, or -EINVAL with the reason in err (may be NULL).
 * @note Context: any thread holding m.
 */
int km_cmap_check(const struct km_cmap *m, char *err, size_t errlen);

/**
 * A copy of m.
 * @return the copy, or NULL (m NULL, or no memory).
 * @note Context: any thread holding m; the caller owns the copy.
 */
struct km_cmap *km_cmap_dup(const struct km_cmap *m);

/**
 * Free a map (NULL is allowed).
 * @note Context: the owner of m.
 */
void km_cmap_free(struct km_cmap *m);

/**
 * Equality of two maps, every field (epoch, route rule, nodes with their down flags,
 * shards).
 * @return 1 if equal, else 0 (also when either is NULL).
 * @note Context: any thread holding both.
 */
int km_cmap_equal(const struct km_cmap *a, const struct km_cmap *b);

/**
 * Decode and check a map in the JSON form (len bytes at json, need not be NUL-terminated).
 * @param err, errlen: the reason of a refusal (may be NULL): "nodes[1].ip: not an IPv4
 *   address", "shards: id 5 overlaps id 2", "invalid JSON at line 1 column 9: ...".
 * @return 0 and *out (the caller frees it), -EPROTO (a version this decoder does not know),
 *   -EINVAL (not the JSON form, or a map km_cmap_check() refuses), -ENOMEM.
 * @note Context: any thread.
 */
int km_cmap_decode(const char *json, size_t len, struct km_cmap **out, char *err, size_t errlen);

/**
 * Encode a valid map in the canonical JSON form.
 * @param out: a NUL-terminated string the caller frees with free(); *len its length (len
 *   may be NULL).
 * @return 0, -EINVAL (m refused by km_cmap_check()), -ENOMEM.
 * @note Context: any thread holding m.
 */
int km_cmap_encode(const struct km_cmap *m, char **out, size_t *len);

/**
 * Index of the node whose id is id.
 * @return the index, or -ENOENT (also for NULL arguments).
 * @note Context: any thread holding m.
 */
int km_cmap_node_find(const struct km_cmap *m, const char *id);

/**
 * Shard by id (binary search: shards are sorted by id).
 * @return the shard, or NULL.
 * @note Context: any thread holding m; valid as long as m is.
 */
const struct km_cmap_shard *km_cmap_shard_find(const struct km_cmap *m, uint64_t id);

/**
 * Workers of all nodes: the global owners are 0 .. total - 1.
 * @note Context: any thread holding m.
 */
uint32_t km_cmap_total_workers(const struct km_cmap *m);

/**
 * Node and worker of a global owner (an owner of km_cmap_shardmap()'s map).
 * @return 0, or -ENOENT (owner >= total workers), -EINVAL (NULL).
 * @note Context: any thread holding m.
 */
int km_cmap_owner(const struct km_cmap *m, uint16_t owner, uint16_t *node, uint16_t *worker);

/**
 * Global owner of worker `worker` of node `node`: nodes[node].first + worker.
 * @return 0 and *owner, or -ENOENT (node or worker out of range), -EINVAL (NULL).
 * @note Context: any thread holding m.
 */
int km_cmap_global_owner(const struct km_cmap *m, uint16_t node, uint16_t worker, uint16_t *owner);

/**
 * The shard map of a cluster map (km_shardmap_from_cluster()): with self < 0 a client's
 * view, the global owners (first + worker) over the total of workers, km_shardmap_route()
 * giving for every key the global owner of the node and worker the cluster map names;
 * with self a node index, that node's view (its shards on its workers, the others
 * remote). Both carry the node table (MAP 2.0) and no routing override (the cluster map
 * has none yet).
 * @return 0 and *out (the caller frees it with km_shardmap_free()), -EINVAL (m invalid,
 *   self past the table), -ENOMEM.
 * @note Context: any thread holding m.
 */
int km_cmap_shardmap(const struct km_cmap *m, int self, struct km_shardmap **out);

/*
 * The placer's decisions.
 *
 * Inputs: the current map (NULL before the first one), the live members (etcd: id, address,
 * workers, incarnation, the state the operator asked for), per-shard request rates
 * (optional: 0 when unknown) and the parameters. km_cluster_decide() returns:
 * - map: the next node table, epoch + 1 (epoch 1 for the first map), or NULL when the
 *   table is as it was. It carries every membership change but moves no shard (except the
 *   first map, which places all of them: there is no data yet; and shards of a node that
 *   came back with fewer workers, which go to its remaining workers: the data is on that
 *   node).
 * - moves: the shard moves wanted, in the order they are to be made, each against the map
 *   as left by the ones before it, starting from the base: map when there is one, else
 *   the current map (node indices are the base's; moves never change the table). The
 *   placer publishes map first (so that new nodes are known), then carries out the moves
 *   one at a time: a move across nodes copies the shard's data before the ownership
 *   switch, which km_cmap_move_apply() makes (epoch + 1). It may decide again at any
 *   point: the decision depends only on its inputs, and a decision on a map with some of
 *   the moves made goes on from there.
 *
 * Rules, in this order:
 * 1. First map (no current one): the members that ask to be active, sorted by id, become
 *    the nodes; initial_shards shards of depth log2(initial_shards), in prefix order, go
 *    round-robin over the workers taken in rounds (worker 0 of every node, then worker 1
 *    of every node that has one, ...): within one shard per worker, and across nodes.
 * 2. Node table: a node whose member is live gets the member's address, port, workers and
 *    incarnation (a new incarnation moves nothing) and the state the member asks for, and
 *    loses its down mark; a node without a live member is marked down and stays (its
 *    shards wait for it); members not in the table that ask to be active are appended,
 *    sorted by id, with no shard (a member that would pass KM_CLUSTER_NODES_MAX nodes or
 *    KM_WORKERS_MAX workers, or is not valid, is skipped and counted; so is one whose node
 *    comes back with more workers than the cluster has room for: the node stays as it was,
 *    marked down; of two members with one id, the newer incarnation counts); a node left
 *    with no shard that is draining or down is removed (the later nodes' first shifts: the
 *    epoch changes anyway). A draining node thus leaves the table in the decision after its last
 *    shard moved away.
 * 3. Moves, at most max_moves in all, a shard at most once per decision, only between
 *    nodes that are not down, only to ACTIVE nodes ("eligible" below):
 *    a. Drain: every shard of a DRAINING node goes to the least loaded eligible node (load
 *       per worker with rates known, else shards per worker; the lowest index on a tie).
 *    b. Fair share: eligible node i's share is S x workers_i / W, S the shards on eligible
 *       nodes and W their workers. While the node furthest above its share and the one
 *       furthest below are more than one shard apart (in deviation from their shares),
 *       the lower receives from the higher: the donor's coldest shard (then on its fullest
 *       worker, then the lowest id). Every node ends within one shard of its share (the
 *       rounded shares need not add up to S, so "below its rounded share" would leave the
 *       rest on one node). A node that joins n - 1 others thus receives about 1/n of the
 *       shards, all from the others, and no shard moves between the others. With rates
 *       known and balancing on, the load rule may have left a node with fewer, hotter
 *       shards on purpose: a node then receives by share only while clearly underloaded
 *       (load per worker below mean / (balance_pct / 100): a new node is), and only a
 *       shard that keeps its receiving worker within the stop line of c (below).
 *    c. Load (balance_pct != 0, rates known): km_policy_place() over the workers of the
 *       eligible nodes (a node's load thus evens out in proportion to its workers):
 *       nothing moves until the busiest worker carries more than balance_pct % of the mean
 *       worker load (or while the mean is below min_rate); then, from the busiest to the
 *       least loaded worker, the largest shard of at most half their gap, until the
 *       busiest is within 1 + (balance_pct / 100 - 1) / 2 of the mean. The band between the
 *       two is the hysteresis: noisy rates around a balanced placement move nothing. Such
 *       a move may stay inside one node (a local handover, no copy).
 *    Within the receiving node (a and b), a shard goes to the least loaded worker (by
 *    rate with rates known, then fewest shards, then the lowest index).
 * Every output is a valid map (km_cmap_check()); equal inputs give equal outputs (member
 * and rate order do not matter).
 */

/** One live member, as etcd has it (its record: km_cluster_member_decode()). */
struct km_cluster_member {
	char id[KM_CLUSTER_ID_MAX + 1]; /* NUL-terminated, as a node id */
	uint32_t ip;                    /* IPv4, host byte order */
	uint16_t port;                  /* base UDP port */
	uint16_t workers;               /* 1..KM_WORKERS_MAX */
	uint64_t incarnation;           /* >= 1, + 1 per restart */
	uint8_t state;                  /* requested by the operator: enum km_cmap_state */
	uint16_t side_port;             /* side channel (cross-node moves): TCP port, 0: none */
	uint32_t side_ip;               /* its IPv4, host byte order (0 when side_port is 0) */
	uint8_t replicas;               /* copies it asks for ([cluster] replicas), 1..3 */
	uint8_t serving;                /* its record's "serving" (absent: 1) */
};

/** Request rate of one shard (requests/s). Shards without one have rate 0. */
struct km_cluster_rate {
	uint64_t id;
	double rate; /* negative or not a number: 0 */
};

/** Parameters of the placer. */
struct km_cluster_params {
	uint32_t initial_shards; /* first map: a power of two, 1..KM_CLUSTER_SHARDS_MAX */
	uint8_t route_sep;       /* first map: routing rule (later maps keep theirs) */
	uint8_t route_depth;
	uint32_t max_moves;   /* per decision, 0..KM_CLUSTER_MOVES_MAX (0: table changes only) */
	uint32_t balance_pct; /* load balancing above this % of the mean (> 100); 0 = off */
	double min_rate;      /* no load balancing while the mean worker load is below it */
};

/** Why a move was chosen. */
enum km_cluster_reason {
	KM_CLUSTER_DRAIN = 1, /* its node is draining */
	KM_CLUSTER_SHARE = 2, /* fair share of shards */
	KM_CLUSTER_LOAD = 3,  /* request rates */
};

/** One shard move: from (node, worker) to (node, worker), node indices of the base map. */
struct km_cluster_move {
	uint64_t id;
	uint16_t from_node;
	uint16_t from_worker;
	uint16_t to_node;
	uint16_t to_worker;
	uint8_t reason; /* enum km_cluster_reason */
};

/** A decision (see above). Zero it before the first use; km_cluster_decision_free(). */
struct km_cluster_decision {
	struct km_cmap *map;           /* next table (epoch + 1), or NULL: unchanged */
	struct km_cluster_move *moves; /* nb_moves, in order */
	uint32_t nb_moves;
	uint32_t nb_skipped;              /* members left out (invalid, duplicate, over a limit) */
	char skipped[KM_CLUSTER_ERR_MAX]; /* why the first one was, "" when none */
};

/**
 * Decide (rules above).
 * @param cur: the current map, NULL before the first one.
 * @param mem, nb_mem: the live members, in any order.
 * @param rates, nb_rates: per-shard rates in any order, ids absent from the map ignored (an
 *   id given twice counts with its largest rate); NULL/0 when unknown.
 * @param d: filled; whatever it held is freed first.
 * @return 0 (d->map NULL and d->nb_moves 0 when nothing is to change), -EINVAL (NULL
 *   argument, bad parameters or a current map km_cmap_check() refuses: reason in err,
 *   which may be NULL), -EOVERFLOW (the epoch cannot grow), -ENOMEM. On error d holds no
 *   map and no move (nb_skipped and skipped still tell about the members).
 * @note Context: any thread; the arguments are not shared during the call.
 */
int km_cluster_decide(const struct km_cluster_params *p, const struct km_cmap *cur,
	const struct km_cluster_member *mem, uint32_t nb_mem, const struct km_cluster_rate *rates,
	uint32_t nb_rates, struct km_cluster_decision *d, char *err, size_t errlen);

/**
 * Free what a decision holds and zero it (NULL is allowed).
 * @note Context: the owner of d.
 */
void km_cluster_decision_free(struct km_cluster_decision *d);

/**
 * The map after one move: shard mv->id owned by (to_node, to_worker), epoch + 1.
 * @return 0 and *out (the caller frees it), -ENOENT (no such shard), -ESTALE (the shard is
 *   not at (from_node, from_worker) in m: the move was planned on another map), -EINVAL
 *   (NULL, m invalid, the destination out of range or equal to the source), -EOVERFLOW
 *   (epoch), -ENOMEM.
 * @note Context: any thread holding m; the caller owns the new map.
 */
int km_cmap_move_apply(
	const struct km_cmap *m, const struct km_cluster_move *mv, struct km_cmap **out);

/**
 * Whether a string is a valid node id (1..KM_CLUSTER_ID_MAX characters of [A-Za-z0-9._-]).
 * @return 1 or 0.
 * @note Context: any thread.
 */
int km_cluster_id_valid(const char *id);

/*
 * Records under P/ in etcd (docs/cluster.md sections 2 and 4), shared by keymap-placer and
 * keymapd so that both accept and refuse the same records. Every decoder takes the value's
 * bytes (not NUL-terminated), ignores object members it does not know, and on a refusal
 * writes the reason ("workers: missing or not an integer in 1..128") to err (may be NULL).
 */

/**
 * Decode a member record P/members/<key_id>: {"id", "ip", "port", "workers",
 * "incarnation", "state", "side_ip", "side_port", "replicas", "serving"} (others ignored):
 * replicas an integer in 1..3 (absent: 2; anything else refuses the record), serving a
 * boolean (absent: true). id must equal key_id
 * (key_id NULL: any id); state is "active", "draining" or absent (active). The side
 * channel is optional and never a reason to refuse a member: side_port and side_ip are set
 * only when "side_port" is an integer in 1..65535 and "side_ip" an IPv4 address other than
 * 0.0.0.0, else both are 0.
 * @return 0 and *out, or -EINVAL (reason in err).
 * @note Context: any thread.
 */
int km_cluster_member_decode(const char *key_id, const void *json, size_t len,
	struct km_cluster_member *out, char *err, size_t errlen);

/** State of a move (its record's "state"). */
enum km_cluster_move_state {
	KM_CLUSTER_MOVE_COPY = 0,   /* "copy": the source copies the shard to the target */
	KM_CLUSTER_MOVE_READY = 1,  /* "ready": the target has it all, the source serves no write */
	KM_CLUSTER_MOVE_FAILED = 2, /* "failed": the copy failed, "reason" tells why */
	KM_CLUSTER_MOVE_OTHER = 3,  /* any other string: a step of a later node, in progress */
};

/**
 * A cross-node move in flight, P/moves/<id> (not to be confused with struct
 * km_cluster_move, a decision's move in node indices).
 */
struct km_cluster_move_record {
	uint64_t id;                      /* the shard */
	uint32_t epoch;                   /* epoch of the map it was planned on */
	char from[KM_CLUSTER_ID_MAX + 1]; /* source node */
	char to[KM_CLUSTER_ID_MAX + 1];   /* target node */
	uint16_t to_worker;               /* 0..KM_WORKERS_MAX - 1 */
	uint8_t state;                    /* enum km_cluster_move_state */
	char reason[KM_CLUSTER_ERR_MAX];  /* "failed": why, "" when absent */
	uint64_t to_incarnation;          /* "ready": the target's run that stored the copy
					   * (0: absent) */
	int64_t create_rev;               /* etcd: the key's creation revision (the caller's) */
	int64_t mod_rev;                  /* etcd: its last change (the caller's) */
};

/**
 * Decode a move record P/moves/<key_id>: {"id", "epoch", "from", "to", "to_worker",
 * "state"[, "reason"][, "to_incarnation"]} (others ignored, such as the "keys" a node
 * adds). id must equal
 * key_id. create_rev and mod_rev are left 0.
 * @return 0 and *out, or -EINVAL (reason in err).
 * @note Context: any thread.
 */
int km_cluster_move_decode(uint64_t key_id, const void *json, size_t len,
	struct km_cluster_move_record *out, char *err, size_t errlen);

/**
 * Encode a move record as the placer puts it (docs/cluster.md section 4): {"id", "epoch",
 * "from", "to", "to_worker", "state"} compact, in that order, then "reason" when mv->reason
 * is not empty.
 * @param out: NUL-terminated, the caller frees it.
 * @return 0, -EINVAL (state not copy, ready or failed; a reason that is not UTF-8),
 *   -ENOMEM.
 * @note Context: any thread.
 */
int km_cluster_move_encode(const struct km_cluster_move_record *mv, char **out);

/* Replication reports, P/repl/<node> (docs/cluster.md section 7). */
enum km_cluster_repl_state {
	KM_CLUSTER_REPL_COPY = 0,      /* "copy": the replica's copy is in progress */
	KM_CLUSTER_REPL_CAUGHT_UP = 1, /* "caught_up": it has the shard and every write since */
	KM_CLUSTER_REPL_BROKEN = 2,    /* "broken": the stream failed (started again) */
	KM_CLUSTER_REPL_OTHER = 3,     /* any other string */
};

struct km_cluster_repl_entry {
	uint64_t shard;
	char node[KM_CLUSTER_ID_MAX + 1]; /* the replica */
	uint64_t incarnation;             /* the replica's, as the primary's map has it */
	uint8_t state;                    /* enum km_cluster_repl_state */
};

/** A primary's report: its streams. One allocation (free()). */
struct km_cluster_repl {
	char node[KM_CLUSTER_ID_MAX + 1]; /* the primary */
	uint64_t incarnation;             /* its run */
	uint32_t epoch;                   /* the map it applied */
	uint32_t nb;
	struct km_cluster_repl_entry e[];
};

/**
 * Decode P/repl/<key_id>: {"node", "incarnation", "epoch", "shards": [[shard id, node id,
 * incarnation, state], ...]} (others ignored). node must equal key_id (NULL: any).
 * @return 0 and *out (free()), -EINVAL (reason in err), -ENOMEM.
 * @note Context: any thread.
 */
int km_cluster_repl_decode(const char *key_id, const void *json, size_t len,
	struct km_cluster_repl **out, char *err, size_t errlen);

/*
 * Replicas (km_cluster_replicas(), after km_cluster_decide() and the completed moves):
 * a. failover: a shard whose primary's node has no live member gets as primary its first
 *    in-sync replica on a node with a live serving member (node and worker as listed);
 *    that replica leaves the list, the others become out of sync (they may hold writes
 *    the new primary never had). None: the shard waits for its node.
 * b. replicas on a node not live, draining, or the primary's are dropped.
 * c. in_sync 0 -> 1 when the primary's report (its incarnation as the map has it) says
 *    caught_up for the replica's node at the incarnation the map has; 1 -> 0 when it says
 *    copy or broken, or the replica's member has another incarnation than the map's.
 * d. a shard with more than copies - 1 replicas loses the excess (out of sync ones
 *    first); one with fewer than copies - 1 replicas gets one on an eligible node (live,
 *    serving, active, not holding a copy of it), the node with the fewest copies of all
 *    shards first (then the lowest index), on its worker with the fewest copies (then the
 *    lowest index), in_sync 0. copies is capped by the eligible nodes.
 * Equal inputs give equal outputs.
 */

/** What changed, for the log. */
struct km_cluster_repl_changes {
	uint32_t failovers, dropped, in_sync, out_of_sync, added;
	char first[KM_CLUSTER_ERR_MAX]; /* the first failover, "" when none */
};

/**
 * Apply the replica rules to m (node indices of m; members and reports in any order).
 * @param copies: the copies wanted, 1..3.
 * @return 1 and *out (epoch + 1; the caller frees it) when something changed, 0 when not,
 *   -EINVAL (NULL, copies out of range, m invalid), -EOVERFLOW (epoch), -ENOMEM.
 * @note Context: any thread.
 */
int km_cluster_replicas(const struct km_cmap *m, const struct km_cluster_member *mem,
	uint32_t nb_mem, const struct km_cluster_repl *const *reports, uint32_t nb_reports,
	unsigned int copies, struct km_cmap **out, struct km_cluster_repl_changes *ch);

#endif /* KM_CLUSTER_H */
