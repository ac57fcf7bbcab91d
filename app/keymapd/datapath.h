/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_DATAPATH_H
#define KEYMAPD_DATAPATH_H

/*
 * Worker lcores and the state they share.
 *
 * Ownership: each worker polls one RX and one TX queue of the port, owns a km_proc (the
 * stores of its shards) and its counters. Requests for shards of another worker are
 * handed to that worker through its `to_owner` ring (multi-producer: any worker; single
 * consumer: the owner). The shard map is read under liburcu QSBR: workers report a
 * quiescent state once per loop iteration and go offline before they sleep.
 */

#include <stdatomic.h>
#include <stdint.h>

#include <rte_common.h>
#include <rte_ether.h>
#include <rte_ring.h>

#include <km_proc.h>
#include <km_shardmap.h>

/* Per-worker packet counters, declared once (X-macro): name, help. */
#define KM_WORKER_COUNTERS(X)                                                               \
	X(rx_pkts, "packets received")                                                      \
	X(tx_pkts, "packets sent")                                                          \
	X(tx_drops, "replies dropped: TX queue full")                                       \
	X(arp_replies, "ARP requests answered")                                             \
	X(icmp_replies, "ICMP echo requests answered")                                      \
	X(drop_l2, "frames dropped: not IPv4/ARP, short, or multi-segment")                 \
	X(drop_l3, "packets dropped: bad IPv4 header, options, fragment or other address")  \
	X(drop_l4, "packets dropped: not UDP/ICMP, bad UDP length or checksum, other port") \
	X(drop_proto, "datagrams dropped silently: short, bad magic/version, or a reply")   \
	X(handoff_out, "misdirected requests handed to their owner worker")                 \
	X(handoff_in, "requests received from other workers")                               \
	X(handoff_drops, "misdirected requests dropped: owner ring full")                   \
	X(busy_cycles, "TSC cycles spent on iterations that had work")                      \
	X(busy_iters, "loop iterations that had work")

struct km_worker_counters {
#define KM_X(name, help) uint64_t name;
	KM_WORKER_COUNTERS(KM_X)
#undef KM_X
};

extern const char *const km_worker_counter_names[];

struct km_worker {
	/* Set before launch, read-only afterwards. */
	unsigned int lcore;
	uint16_t index;
	uint16_t queue;
	struct rte_ring *to_owner; /* other workers -> this worker (MP/SC) */
	struct km_proc *proc;      /* this worker only (counters: ro for others) */
	/* worker: rw (plain stores), control/others: ro, may read one update old */
	struct km_worker_counters cnt;
} __rte_cache_aligned;

struct km_datapath {
	/* Set before launch, read-only afterwards. */
	struct km_worker *workers;
	uint16_t nb_workers;
	uint16_t port;
	uint32_t ip; /* network order */
	struct rte_ether_addr mac;
	uint16_t udp_base;
	uint16_t burst;
	uint32_t value_max;   /* requests are parsed against it */
	int tx_cksum_offload; /* port computes IPv4 + UDP checksums */
	uint32_t idle_spin;
	uint32_t idle_sleep_us;
	int echo; /* [workers] mode = echo: datagrams go back unparsed */
	/* control: writes 1 once; workers: read each iteration (relaxed: they only need to
	 * see it eventually, nothing is published with it) */
	atomic_int stop;
};

/*
 * The current shard map. Written by the control lcore with rcu_assign_pointer (release:
 * the map's contents are visible before the pointer), read by workers with
 * rcu_dereference between two quiescent states.
 */
extern struct km_shardmap *km_map_current;

/* lcore entry point of a worker; arg is its struct km_worker. */
int km_worker_main(void *arg);

/* The datapath shared by the workers (defined in worker.c). */
extern struct km_datapath km_dp;

#endif /* KEYMAPD_DATAPATH_H */
