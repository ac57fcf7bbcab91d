/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_CLUSTER_PRIV_H
#define KEYMAPD_CLUSTER_PRIV_H

/* Between cluster.c (membership, maps) and cluster_move.c (cross-node moves). */

#include <stdint.h>
#include <time.h>

#include <km_cluster.h>
#include <km_etcd.h>
#include <km_shardmap.h>
#include <km_store.h>

#include "cluster.h"

struct km_proc_dedup;

#define KM_CLUSTER_MOVE_KEY_MAX 192

/* A move of one of this node's shards, as the placer put it (P/moves/<id>). */
struct km_cluster_move_req {
	uint64_t id;
	int64_t rev;        /* the move key's mod revision */
	int64_t create_rev; /* its creation revision: which move of the shard it is */
	char to[KM_CLUSTER_ID_MAX + 1];
	uint32_t to_ip; /* side channel address, host byte order (from its member record) */
	uint16_t to_worker;
};

/* Whether the node serves (its workers run, the control loop applies maps). Any thread. */
int km_cluster_serving(void);

/* Read and decode P/map/current. @return 0 and *m (the caller's), -ENOENT (none), or
 * -errno. @note Context: the thread that owns e. */
int km_cluster_map_read(struct km_etcd *e, struct km_cmap **m);

/* P/moves/<id> into buf. */
void km_cluster_move_key(char *buf, size_t cap, uint64_t id);

/* This node's id ([cluster] node). Any thread, once joined. */
const char *km_cluster_node_id(void);

/* This run's incarnation (its member record's). Any thread, once joined. */
uint64_t km_cluster_incarnation(void);

/* [cluster] etcd. */
const char *km_cluster_etcd_endpoints(void);

/* The side channel of live member node (its record): *ip (host byte order) and the port.
 * @return the port, 0 (no live member), -EPROTO (a record the placer would refuse, or one
 * without a side channel: logged once with the reason), or -errno.
 * @note Context: the thread that owns e. */
int km_cluster_side_of(struct km_etcd *e, const char *node, uint32_t *ip);

/* A side channel stream's answer: u32 status (0 go, else errno), u16 n, n bytes of msg
 * (200 at most). Any thread. */
void km_cluster_side_reply(int fd, int status, const char *msg);

/* The side channel's listener (incoming shards). @return 0 or -errno. Main lcore. */
int km_cluster_side_start(uint32_t ip, uint16_t port);
void km_cluster_side_stop(void);

/* The store received for shard id, if any (the caller's then, with *dd: its at-most-once
 * entries, NULL: none). Control lcore. */
struct km_store *km_cluster_incoming_take(uint64_t id, struct km_proc_dedup **dd);
/* Drop the store received for shard id (its move was given up: the map does not give it
 * here), files and all. @return 1 dropped, 0 none. Any thread. */
int km_cluster_incoming_drop(uint64_t id);
/* The shards received here (at most max) and kept since before `before`. Any thread. */
unsigned int km_cluster_incoming_ids(uint64_t *ids, unsigned int max, time_t before);
/* Whether a store was received for shard id. Any thread. */
int km_cluster_incoming_has(uint64_t id);
/* Shard id, parked here on its way out, came back with a newer copy: the parked one goes.
 * Control lcore. */
void km_cluster_move_superseded(uint64_t id);
/* The map gives shard id to worker w but its data is not here: attached when it arrives.
 * Control lcore. */
void km_cluster_missing_add(uint64_t id, uint16_t w);
/* Give back a received store the control lcore could not attach. Control lcore. */
void km_cluster_incoming_return(uint64_t id, struct km_store *s, struct km_proc_dedup *dd);

/* Start sending a shard (detach, stream in a thread). Control lcore. */
void km_cluster_move_start(const struct km_cluster_move_req *rq);
/* A move of this node's shard the placer gave up (deleted without completing it). */
struct km_cluster_gone {
	uint64_t id;
	int64_t create_rev; /* which move of the shard */
};

/* Finish or undo moves: map is the view published; gone[] the moves the placer gave up
 * (each ends only the move it names, not a newer one of the shard). */
void km_cluster_move_tick(
	const struct km_shardmap *map, const struct km_cluster_gone *gone, unsigned int nb_gone);
/* Whether shard id is detached here for a move under way (not to be created anew). */
int km_cluster_move_parked(uint64_t id);
void km_cluster_move_counts(uint64_t *out, uint64_t *in, uint64_t *failed);

/* Until when (ns of the TSC, as workers count) this node's lease surely lives. */
extern _Atomic uint64_t km_cluster_lease_ns;

/* The cluster map applied (NULL: none yet). Control lcore. */
const struct km_cmap *km_cluster_cmap(void);

/* ---- replication (cluster_repl.c) ---- */

/* Start the pump thread; replies wait for the replicas when sync (km_cluster_proc_setup()
 * tells the workers). Main lcore. @return 0 or -errno. */
int km_cluster_repl_start(int sync);
/* Stop every stream and thread (workers stopped). Main lcore. */
void km_cluster_repl_stop(void);
/* Map m (this node at index self) is being applied: before its shards are placed (cut
 * the streams received from a primary it no longer names, promote the replicas of shards
 * it gives here), after they are (start and stop this node's streams). Control lcore. */
void km_cluster_repl_map_pre(const struct km_cmap *m, int self);
void km_cluster_repl_map_post(const struct km_cmap *m, int self);
/* Every control iteration: dial, restart broken streams, build the report. */
void km_cluster_repl_tick(uint32_t epoch);
/* The report for P/repl/<node> to put, if it changed (the caller's, free()), or NULL;
 * *seq its number, to give km_cluster_repl_report_put() once etcd has it. Any thread. */
char *km_cluster_repl_report_take(uint64_t *seq);
void km_cluster_repl_report_put(uint64_t seq);
/* A replication stream whose 24-byte header h was read, more (nmore bytes) read after it:
 * receive it (returns when it ends). A side channel receiver thread. */
void km_cluster_repl_receive(int fd, const uint8_t *h, const uint8_t *more, size_t nmore);

/* One stream, for the surfaces: out (this node is the primary, node the replica) or in
 * (node the primary). */
struct km_cluster_repl_info {
	uint64_t shard;
	char node[KM_CLUSTER_ID_MAX + 1];
	uint8_t out;
	uint8_t in_sync; /* out: the map says so; in: a complete copy is here */
	char state[16];  /* out: copy, caught_up, broken; in: copying, receiving, idle,
			  * promote_failed */
	uint64_t rseq;   /* out: the last write numbered */
	uint64_t acked;  /* out: acknowledged by the replica; in: the last write applied */
	uint64_t starts; /* out: streams started (1 + restarts) */
	char why[160];   /* out: why it last broke */
};
/* @return the streams listed (at most max). Any thread. */
unsigned int km_cluster_repl_list(struct km_cluster_repl_info *out, unsigned int max);

struct km_cluster_repl_counts {
	uint64_t out, out_in_sync, in;                         /* streams now */
	uint64_t promoted, streams_in, refused_in, broken_out; /* since start */
};
/* Any thread. */
void km_cluster_repl_counts(struct km_cluster_repl_counts *c);
/* /keymap/cluster/repl. */
struct rte_tel_data;
int km_cluster_repl_tel(const char *cmd, const char *params, struct rte_tel_data *d);

#endif /* KEYMAPD_CLUSTER_PRIV_H */
