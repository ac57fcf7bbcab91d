/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_CLUSTER_H
#define KEYMAPD_CLUSTER_H

/*
 * keymapd as a node of a cluster (docs/cluster.md): membership in etcd, the placer's map
 * applied, load reports. Without [cluster] name none of this runs.
 */

#include <stdint.h>

#include <km_shardmap.h>

#include "config.h"

/** Whether keymapd runs as a cluster node. @note Context: any thread. */
int km_cluster_on(void);

/**
 * Join the cluster of conf ([cluster]): claim an incarnation, register this node under a
 * lease, and wait for a map that has it (the placer adds new nodes). Starts the cluster
 * thread, which keeps the lease and watches the map from then on.
 * @param nb_workers the node's workers (in its member record; the map must agree).
 * @param map the node's view of the first map (km_cmap_shardmap(), self = this node).
 * @return 0 (*map set; NULL when conf has no [cluster]: a single node), or -1 after
 *   logging why (etcd unreachable, node id in use, stopped while waiting).
 * @note Context: the main lcore, before the workers start.
 */
int km_cluster_join(const struct km_conf *conf, uint16_t nb_workers, struct km_shardmap **map);

/**
 * Apply the newest map the cluster thread received, if any: shards created, handed over
 * between this node's workers or dropped, then the node's view published. Every
 * iteration of the control loop; cheap when there is nothing new.
 * @note Context: control lcore.
 */
void km_cluster_tick(void);

/**
 * Stop the cluster thread and leave: the member record is deleted with its lease.
 * @note Context: the main lcore, at shutdown (no-op without a cluster).
 */
void km_cluster_leave(void);

/** What telemetry shows (/keymap/cluster). */
struct km_cluster_status {
	char name[64];
	char node[64];
	uint64_t incarnation;
	uint32_t epoch;          /* of the map applied */
	uint32_t refused_epoch;  /* last map refused (0: none) */
	int etcd_ok;             /* the last etcd call succeeded */
	uint64_t maps_applied;   /* maps applied since start */
	uint64_t maps_refused;   /* maps refused (logged) */
	uint64_t shards_created; /* shards this node created (first map, lost data) */
	uint64_t shards_moved;   /* handed over between this node's workers */
	uint64_t shards_dropped; /* given to another node by a map */
	uint64_t etcd_errors;    /* failed etcd calls of the cluster thread */
	char last_error[160];    /* the last one, "" when none */
};

/** Fill st. @note Context: control lcore (or through km_ctl_call). */
void km_cluster_status(struct km_cluster_status *st);

/** A worker's processor in a cluster node: replication mode and lease fence (docs/cluster.md
 * section 7); nothing for a single node. @note Context: main lcore, before the worker runs,
 * after km_cluster_join(). */
struct km_proc;
void km_cluster_proc_setup(struct km_proc *p);

/** Register /keymap/cluster. @return 0 or -errno. @note Context: main lcore, at start. */
int km_telemetry_cluster_register(void);

#endif /* KEYMAPD_CLUSTER_H */
