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

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

#include <rte_common.h>
#include <rte_ether.h>
#include <rte_ring.h>

#include <km_allow.h>
#include <km_proc.h>
#include <km_shardmap.h>

#include "config.h"

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
	X(drop_denied, "datagrams dropped: source not in [security] allow")                 \
	X(busy_cycles, "TSC cycles spent on iterations that had work")                      \
	X(busy_iters, "loop iterations that had work")                                      \
	X(disk_replies, "replies sent after waiting for a disk read or a group write")

struct km_worker_counters {
#define KM_X(name, help) uint64_t name;
	KM_WORKER_COUNTERS(KM_X)
#undef KM_X
};

extern const char *const km_worker_counter_names[];

/*
 * Latency of a request inside keymapd, from its RX burst to its TX burst, in TSC cycles:
 * bucket 0 counts 0 cycles, bucket b >= 1 counts [2^(b-1), 2^b); the last bucket also
 * takes everything above.
 */
#define KM_LAT_BUCKETS 40

static inline unsigned int
km_lat_bucket(uint64_t cycles)
{
	unsigned int b = cycles == 0 ? 0 : 64 - (unsigned int)__builtin_clzll(cycles);

	return b < KM_LAT_BUCKETS ? b : KM_LAT_BUCKETS - 1;
}

/* Worker tunables changed at run time ([workers] burst, idle_spin, idle_sleep_us). */
struct km_worker_tune {
	uint16_t burst;
	uint32_t idle_spin;
	uint32_t idle_sleep_us;
};

/* Commands from the control lcore to a worker, applied at a loop boundary. */
enum km_wcmd_op {
	KM_WCMD_ATTACH,   /* store -> the shard shard_id of this worker */
	KM_WCMD_DETACH,   /* shard shard_id -> store (and requests) for the control lcore */
	KM_WCMD_INFO,     /* fill infos[0..max), n = shards owned */
	KM_WCMD_TUNE,     /* apply tune */
	KM_WCMD_PREFETCH, /* read key[0..key_len) into the cache, marked prefetched */
};

struct km_wcmd {
	enum km_wcmd_op op;
	uint64_t shard_id;
	struct km_store *store;      /* ATTACH: in; DETACH: out */
	uint64_t requests;           /* DETACH: out */
	struct km_shard_info *infos; /* INFO */
	uint32_t max;                /* INFO */
	uint32_t n;                  /* INFO: out */
	struct km_worker_tune tune;  /* TUNE */
	uint16_t key_len;            /* PREFETCH */
	uint8_t key[KM_KEY_MAX];     /* PREFETCH */
	int rc;                      /* out */
	atomic_int state;            /* enum km_wcmd_state */
};

/*
 * Life of a command. The control lcore queues it PENDING. The worker claims it
 * (PENDING -> RUNNING), applies it and stores DONE with release order (the outputs, and a
 * detached store's contents, are then visible to the control lcore). A control lcore that
 * gives up waiting abandons it (PENDING -> ABANDONED): the worker then frees it without
 * applying it. A command already RUNNING is always waited for: applying one is short.
 */
enum km_wcmd_state { KM_WCMD_PENDING, KM_WCMD_RUNNING, KM_WCMD_DONE, KM_WCMD_ABANDONED };

struct km_worker {
	/* Set before launch, read-only afterwards. */
	unsigned int lcore;
	uint16_t index;
	uint16_t queue;
	struct rte_ring *to_owner; /* other workers -> this worker (MP/SC) */
	struct rte_ring *cmds;     /* control lcore -> this worker (SP/SC), struct km_wcmd * */
	struct km_proc *proc;      /* this worker only (counters: ro for others) */
	int disk;                  /* its stores keep values on disk: poll completions */
	/* worker only (changed through KM_WCMD_TUNE) */
	struct km_worker_tune tune;
	/* worker: rw (plain stores), control/others: ro, may read one update old */
	struct km_worker_counters cnt;
	uint64_t lat[KM_LAT_BUCKETS];
} __rte_cache_aligned;

struct km_datapath {
	/* Set before launch, read-only afterwards. */
	struct km_worker *workers;
	uint16_t nb_workers;
	uint16_t port;
	uint32_t ip; /* network order */
	struct rte_ether_addr mac;
	uint16_t udp_base;
	uint32_t value_max;   /* requests are parsed against it */
	int tx_cksum_offload; /* port computes IPv4 + UDP checksums */
	int rss;              /* RSS spreads flows over the worker queues */
	int echo;             /* [workers] mode = echo: datagrams go back unparsed */
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

/* The allow-list of client sources: published like the map (rcu_assign_pointer by the
 * control lcore, rcu_dereference by workers once per loop iteration). */
extern struct km_allow *km_allow_current;

/* Signals drivers may raise per received packet (SIGIO, real-time signals): blocked
 * everywhere but on the workers. */
void km_rx_signals(sigset_t *set);

/* lcore entry point of a worker; arg is its struct km_worker. */
int km_worker_main(void *arg);

/* The datapath shared by the workers (defined in worker.c). */
extern struct km_datapath km_dp;

#endif /* KEYMAPD_DATAPATH_H */
