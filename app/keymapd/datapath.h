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
#include <rte_branch_prediction.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include <km_allow.h>
#include <km_policy.h>
#include <km_proc.h>
#include <km_shardmap.h>

#include "config.h"

/* Per-worker packet counters, declared once (X-macro): name, help. */
#define KM_WORKER_COUNTERS(X)                                                                 \
	X(rx_pkts, "packets received")                                                        \
	X(tx_pkts, "packets sent")                                                            \
	X(tx_drops, "replies dropped: TX queue full")                                         \
	X(arp_replies, "ARP requests answered")                                               \
	X(icmp_replies, "ICMP echo requests answered")                                        \
	X(drop_l2, "frames dropped: not IPv4/ARP, short, or multi-segment")                   \
	X(drop_l3, "packets dropped: bad IPv4 header, options or other address")              \
	X(drop_l4, "packets dropped: not UDP/ICMP, bad UDP length or checksum, other port")   \
	X(drop_proto, "datagrams dropped silently: short, bad magic/version, or a reply")     \
	X(handoff_out, "misdirected requests handed to their owner worker")                   \
	X(handoff_in, "requests received from other workers")                                 \
	X(handoff_drops, "misdirected requests dropped: owner ring full")                     \
	X(drop_denied, "datagrams dropped: source not in [security] allow")                   \
	X(drop_src, "packets dropped: a source no reply may go to (spoofed or broken)")       \
	X(busy_cycles, "TSC cycles spent on iterations that had work (after their RX burst)") \
	X(busy_iters, "loop iterations that had work")                                        \
	X(rx_cycles, "TSC cycles in RX bursts that returned packets (not in busy_cycles)")    \
	X(tx_cycles, "TSC cycles in TX bursts (within busy_cycles)")                          \
	X(disk_replies, "replies sent after waiting for a disk read or a group write")        \
	X(ctl_drops, "messages to the control lcore dropped: w_to_ctl ring full")             \
	X(pf_commands, "the predictor's prefetch commands applied")                           \
	X(frag_rx, "IPv4 fragments received for keymapd's address")                           \
	X(frag_reassembled, "datagrams reassembled from fragments")                           \
	X(frag_drops, "fragments dropped: malformed or not UDP, table full, timed out")       \
	X(frag_tx, "fragments sent: replies larger than the port MTU")                        \
	X(large_drops, "datagrams dropped: no large buffer or fragment mbuf free")

struct km_worker_counters {
#define KM_X(name, help) uint64_t name;
	KM_WORKER_COUNTERS(KM_X)
#undef KM_X
};

extern const char *const km_worker_counter_names[];

/*
 * Latency of a request inside keymapd, from the RX burst that brought it (to whichever
 * worker) to the TX burst of its reply, disk reads, group writes and replication included:
 * buckets with fixed bounds in seconds, the same on every host (km_lat_bounds_ns: 250 ns
 * to 10 s, 1-2-5 steps). Bucket b < KM_LAT_BOUNDS counts latencies up to bound b (and
 * above bound b - 1); the last bucket everything above the last bound.
 */
#define KM_LAT_BOUNDS  24
#define KM_LAT_BUCKETS (KM_LAT_BOUNDS + 1)
extern const uint64_t km_lat_bounds_ns[KM_LAT_BOUNDS];
/* The bounds in TSC cycles (km_lat_init(), before the workers start; read-only after). */
extern uint64_t km_lat_bounds_tsc[KM_LAT_BOUNDS];
void km_lat_init(void);

/* @note Context: any thread, after km_lat_init(). */
static inline unsigned int
km_lat_bucket(uint64_t cycles)
{
	unsigned int b = 0;

	/* A handful of compares: latencies sit in the first buckets. */
	while (b < KM_LAT_BOUNDS && cycles > km_lat_bounds_tsc[b])
		b++;
	return b;
}

/*
 * Rings between the control lcore and each worker, named by their direction. Messages go
 * by value (rte_ring_*_elem: the ring holds a copy), fire and forget: a producer that
 * finds its ring full drops the message and counts it, so a worker never waits for the
 * control lcore. Only attach, detach and info need an answer: they travel as a
 * KM_CMSG_SYNC message pointing to a struct km_wcmd the control lcore waits on.
 *
 *   control lcore --ctl_to_w--> worker   commands: sync handshakes, tunables, prefetches
 *   worker        --w_to_ctl--> control  notes (sampled accesses, outcomes of prefetches,
 *                                        keys for other owners), completions of prefetches
 *   any worker    --to_owner--> worker   misdirected request mbufs (handoff)
 * With [prefetch] lcore set, the predictor's lcore takes w_to_ctl instead of the control
 * lcore and sends its prefetches on ctl_to_w too (a multi-producer ring).
 */
#define KM_CTL_RING_SIZE 256 /* messages per ring (ctl_to_w and w_to_ctl of each worker) */
#define KM_NOTES_RESERVE 64  /* room on w_to_ctl that notes leave to completions */

/* Commands carried by ctl_to_w. */
enum km_cmsg_type {
	KM_CMSG_SYNC = 1,      /* u.sync: run a struct km_wcmd and store its state (handshake) */
	KM_CMSG_TUNE,          /* u.tune: apply the worker tunables */
	KM_CMSG_PREFETCH,      /* u.key[0..key_len): read into the cache with mark; completion on
				* w_to_ctl */
	KM_CMSG_PREFETCH_TUNE, /* u.pf: the worker's prefetch parameters */
	KM_CMSG_CREW_ADD,      /* u.key[0..key_len): make a read copy (hot-key replication);
				* completion on w_to_ctl */
	KM_CMSG_CREW_DEL,      /* u.key[0..key_len): withdraw its read copy; key_len 0: all */
	KM_CMSG_CREW_TUNE,     /* seq: sample one access in seq for crew.c (0: none) */
	KM_CMSG_MOVE_IN,       /* u.sync: the second half of a KM_WCMD_MOVE, from the old
				* owner: attach its store (claimed already) */
};

/* Worker tunables changed at run time ([workers] burst, idle_spin, idle_sleep_us; [net]
 * busy_watermark, in packets of the RX queue). */
struct km_worker_tune {
	uint16_t burst;
	uint32_t idle_spin;
	uint32_t idle_sleep_us;
	uint32_t busy_pkts; /* 0: never overloaded */
};

struct km_wcmd;
struct rte_ip_frag_tbl;
struct rte_ip_frag_death_row;
struct rte_mempool;

/* One command on ctl_to_w. Control lcore: writes (its copy, before the enqueue); worker:
 * reads (its copy, after the dequeue). Nothing of it is shared once enqueued. */
struct km_cmsg {
	uint16_t type;    /* enum km_cmsg_type */
	uint16_t key_len; /* KM_CMSG_PREFETCH, KM_CMSG_CREW_*: 1..KM_KEY_MAX */
	uint32_t seq;     /* KM_CMSG_PREFETCH, KM_CMSG_CREW_ADD: the control lcore's number,
			   * echoed back; KM_CMSG_CREW_TUNE: the sampling */
	uint8_t mark;     /* KM_CMSG_PREFETCH: who asked (km_proc.h marks), echoed back */
	uint8_t pad[7];
	union {
		struct km_wcmd *sync;        /* KM_CMSG_SYNC: see struct km_wcmd */
		struct km_worker_tune tune;  /* KM_CMSG_TUNE */
		uint8_t key[KM_KEY_MAX];     /* KM_CMSG_PREFETCH, KM_CMSG_CREW_ADD/DEL */
		struct km_proc_pf_params pf; /* KM_CMSG_PREFETCH_TUNE */
	} u;
};

/* Messages carried by w_to_ctl. */
enum km_wmsg_type {
	KM_WMSG_NOTE = 1, /* u.note: a note of the processor (km_proc_notes) for the predictor */
	KM_WMSG_DONE,     /* u.done: a command of ctl_to_w was applied */
};

/* The result of a command of ctl_to_w. */
struct km_completion {
	uint16_t cmd; /* enum km_cmsg_type that completed */
	uint8_t mark; /* KM_CMSG_PREFETCH: its mark */
	uint8_t pad;
	uint32_t seq; /* struct km_cmsg seq */
	int32_t rc;   /* KM_CMSG_PREFETCH: km_proc_prefetch_key()'s return; KM_CMSG_CREW_ADD:
		       * km_proc_crew_add()'s */
};

/* One message on w_to_ctl. Worker: writes (its copy, before the enqueue); control lcore:
 * reads (its copy, after the dequeue). */
struct km_wmsg {
	uint16_t type;   /* enum km_wmsg_type */
	uint16_t worker; /* index of the sender */
	uint32_t pad;
	union {
		struct km_proc_note note;  /* KM_WMSG_NOTE */
		struct km_completion done; /* KM_WMSG_DONE */
	} u;
};

_Static_assert(sizeof(struct km_cmsg) % 4 == 0, "rte_ring elements are multiples of 4 bytes");
_Static_assert(sizeof(struct km_wmsg) % 4 == 0, "rte_ring elements are multiples of 4 bytes");

/* Handshake commands (KM_CMSG_SYNC), applied at a loop boundary. */
enum km_wcmd_op {
	KM_WCMD_ATTACH, /* store -> the shard shard_id of this worker */
	KM_WCMD_DETACH, /* shard shard_id -> store (and requests) for the control lcore */
	KM_WCMD_INFO,   /* fill infos[0..max), n = shards owned */
	/* Incremental split/merge (km_proc.h): the worker copies between its bursts. */
	KM_WCMD_MIG_START,  /* start kind (enum km_mig_kind) on shard_id */
	KM_WCMD_MIG_FINISH, /* swap the copies in: old[] (the sources), keys, pause_tsc out */
	KM_WCMD_MIG_CANCEL, /* drop the copies */
	KM_WCMD_FLOOR,      /* stores issue versions above floor (0: none); keys out: the
			     * highest version they issued */
	KM_WCMD_MOVE,       /* shard shard_id -> worker to, without the control lcore in
			     * between: see km_mailbox_move() */
	/* Live export of a shard to another node (km_proc.h): the worker encodes between
	 * its bursts. */
	KM_WCMD_EXPORT_START,  /* start xp */
	KM_WCMD_EXPORT_CANCEL, /* end the export in progress, if any */
	KM_WCMD_REPL_START,    /* start replication stream xp on its shard */
	KM_WCMD_REPL_STOP,     /* end replication stream xp, if still on its shard */
	KM_WCMD_REPL_BLOCK,    /* shard_id's replica tag (floor) blocked (kind 1) or not */
};

/*
 * A command the control lcore waits for (calloc'd by it). Fields marked "in" are written
 * by the control lcore before the enqueue and read by the worker; "out" fields are written
 * by the worker before its DONE store (release) and read by the control lcore after its
 * acquire load of DONE. state is the only field both touch concurrently.
 */
struct km_wcmd {
	enum km_wcmd_op op;          /* in */
	uint64_t shard_id;           /* in: ATTACH, DETACH */
	struct km_store *store;      /* ATTACH: in (the worker's once DONE with rc 0);
				      * DETACH: out (the control lcore's once DONE) */
	uint64_t requests;           /* DETACH: out */
	struct km_proc_dedup *dedup; /* DETACH: out (its at-most-once entries); ATTACH: in
				      * (taken with the store when rc is 0) */
	uint8_t same_store;          /* ATTACH: in, dedup was taken with this very store */
	struct km_shard_info *infos; /* INFO: in (buffer of max entries, written by the worker) */
	uint32_t max;                /* INFO: in */
	uint32_t n;                  /* INFO: out; MOVE: out, at-most-once entries handed over */
	uint8_t kind;                /* MIG_START: in */
	struct km_store *old[2];     /* MIG_FINISH: out (the control lcore's once DONE) */
	uint64_t keys;               /* MIG_FINISH: out, entries of the copies */
	uint64_t pause_tsc;          /* MIG_FINISH: out, TSC cycles the swap took */
	uint64_t floor;              /* FLOOR: in */
	struct km_proc_export *xp;   /* EXPORT_START: in (the worker takes its own reference) */
	uint16_t to;                 /* MOVE: in, the new owner */
	uint32_t epoch;              /* MOVE: in, epoch of the map that gives it the shard */
	uint64_t claim_tsc;          /* out: rte_rdtsc() when the worker claimed it */
	uint64_t run_tsc;            /* out: TSC cycles the worker took to apply it */
	uint64_t in_claim_tsc;       /* MOVE: out, rte_rdtsc() when the new owner took it */
	uint64_t in_run_tsc;         /* MOVE: out, TSC cycles the new owner's attach took */
	int rc;                      /* out */
	atomic_int state;            /* enum km_wcmd_state: see there */
};

/*
 * Life of a command. The control lcore queues it PENDING. The worker claims it
 * (PENDING -> RUNNING, compare-and-exchange), applies it and stores DONE with release order
 * (pairs with the control lcore's acquire load: the outputs, and a detached store's
 * contents, are then visible to it). A control lcore that gives up waiting abandons it
 * (PENDING -> ABANDONED, compare-and-exchange against the worker's claim): the worker then
 * frees it without applying it (or km_ctl_fini does, once the workers have stopped). A
 * command already RUNNING is always waited for: applying one is short.
 *
 * A MOVE has two halves: the old owner claims it, detaches the shard and, instead of
 * storing DONE, queues it on the new owner's ctl_to_w as KM_CMSG_MOVE_IN (still RUNNING:
 * nothing may abandon it now); the new owner attaches the store and stores DONE. Until then
 * the old owner hands the shard's requests to the new owner (km_proc_shard_forward), which
 * applies its commands before a burst of hand-offs: the attach comes first. If the new
 * owner cannot take it, it stores DONE with rc < 0 and the store (and at-most-once
 * entries) still in the command, the control lcore's to give back; if the old owner
 * cannot queue it, it attaches the shard again itself (rc -EBUSY, store NULL).
 */
enum km_wcmd_state { KM_WCMD_PENDING, KM_WCMD_RUNNING, KM_WCMD_DONE, KM_WCMD_ABANDONED };

struct km_worker {
	/* Set before launch (main lcore), read-only afterwards. */
	unsigned int lcore;
	uint16_t index;
	uint16_t queue;
	struct rte_ring *to_owner; /* other workers (MP) -> this worker (SC): struct rte_mbuf * */
	struct rte_ring *ctl_to_w; /* control lcore and the predictor's lcore (MP) -> this
				    * worker (SC): struct km_cmsg */
	struct rte_ring *w_to_ctl; /* this worker (SP) -> control lcore, or the predictor's
				    * lcore when it has one (SC): struct km_wmsg */
	struct km_proc *proc;      /* this worker only (counters: ro for others) */
	int disk;                  /* its stores keep values on disk: poll completions */
	/* worker: rw (changed by KM_CMSG_TUNE); others: never */
	struct km_worker_tune tune;
	/* worker: rw; others: never */
	struct km_policy_backlog backlog; /* its RX queue, judged each iteration */
	uint8_t overload;                 /* what km_proc_overload() was last told */
	uint8_t mig;                      /* a split/merge copy is in progress here */
	uint8_t xp;                       /* a live export is in progress here */
	uint8_t repl;                     /* replicated shards here (km_proc_repl_*) */
	/* worker: rw; others: never (frag.h) */
	struct rte_ip_frag_tbl *frag_tbl;      /* NULL: [net] frag_max 0 */
	struct rte_ip_frag_death_row *frag_dr; /* fragments to free */
	uint64_t frag_last;                    /* TSC of the last fragment, 0: none left */
	struct rte_mempool *large;             /* large buffers (MP: freed by any worker) */
	struct rte_mempool *frag_direct;       /* fragment headers of replies */
	struct rte_mempool *frag_indirect;     /* fragment data of replies */
	uint16_t ip_id;                        /* IPv4 id of the next fragmented reply */
	/* worker: rw (plain stores), control/others: ro, may read one update old */
	struct km_worker_counters cnt;
	uint64_t lat[KM_LAT_BUCKETS]; /* worker: rw (plain stores); control: ro, as cnt */
	uint64_t lat_sum;             /* the latencies counted in lat, TSC cycles */
} __rte_cache_aligned;

/*
 * Send m to the control lcore on w's w_to_ctl ring; a full ring drops it (counted in
 * ctl_drops): the worker never waits.
 * @note Context: worker w only (single producer).
 */
static inline void
km_worker_to_ctl(struct km_worker *w, const struct km_wmsg *m)
{
	if (unlikely(rte_ring_sp_enqueue_elem(w->w_to_ctl, (void *)(uintptr_t)m, sizeof(*m)) != 0))
		w->cnt.ctl_drops++;
}

struct km_datapath {
	/* Set before launch (main lcore), read-only afterwards (everyone). */
	struct km_worker *workers;
	uint16_t nb_workers;
	uint16_t port;
	uint32_t ip; /* network order */
	struct rte_ether_addr mac;
	uint16_t udp_base;
	int tx_cksum_offload; /* port computes IPv4 + UDP checksums */
	int tx_multi_seg;     /* port sends mbuf chains; else fragments are copied flat */
	int rss;              /* RSS spreads flows over the worker queues */
	int rx_desc_status;   /* rte_eth_rx_descriptor_status() answers (struct km_port_caps) */
	uint16_t nb_rxd;      /* RX descriptors per queue */
	uint16_t mtu;         /* the port's: larger replies leave as fragments */
	uint32_t large_room;  /* UDP payload bytes of a large buffer (km_frag_room()) */
	uint64_t frag_cycles; /* [net] frag_timeout_ms in TSC cycles */
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

/* The client keys (guard.c): published like the allow-list; NULL = none. */
extern struct km_auth *km_auth_current;

/* The secrets of HELLO cookies (guard.c): rotated by the control lcore, read by workers
 * (km_proc_params.hello) when [security] cookies is on. */
extern struct km_hello_secrets km_hello;

/* Signals drivers may raise per received packet (SIGIO, real-time signals): blocked
 * everywhere but on the workers. @note Context: any thread. */
void km_rx_signals(sigset_t *set);

/* lcore entry point of a worker; arg is its struct km_worker. Returns when km_dp.stop is
 * set. @note Context: the worker's lcore (rte_eal_remote_launch), after km_ctl_init. */
int km_worker_main(void *arg);

/* The datapath shared by the workers (defined in worker.c). */
extern struct km_datapath km_dp;

#endif /* KEYMAPD_DATAPATH_H */
