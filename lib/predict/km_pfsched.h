/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_PFSCHED_H
#define KM_PFSCHED_H

/**
 * @file
 * Prefetch scheduler: turns predictions into prefetch commands, highest confidence first,
 * within a budget, and steers its own aggressiveness from what became of the prefetches.
 *
 * - push: a prediction below the confidence threshold is dropped; one whose key was pushed
 *   within filter_ttl_ns (queued, in flight or just done) is filtered by a direct-mapped
 *   table of recent key hashes (cheap; the owner still checks its cache before reading);
 *   the rest enter a bounded priority queue (a full queue drops the newcomer).
 * - pop: the best queued prediction first; one queued longer than deadline_ns is stale and
 *   dropped; a target (the owner worker) over its pending watermark drops its prefetches
 *   (demand first); a target at its budget (prefetch reads in flight, bytes/s) keeps them
 *   queued.
 * - AIMD, every aimd_window resolved prefetches: accuracy (hit before eviction / resolved)
 *   at or above acc_hi raises the in-flight budget by one and lowers the threshold by
 *   0.02; accuracy below acc_lo, or harm above harm_max per resolved prefetch that also
 *   outweighs the prefetches used (harm * 2 > used), halves the budget and raises the
 *   threshold by 0.05. Harm is a demand miss on a key a prefetch evicted (a ghost list of
 *   ghost_size hashes). On a workload without structure the budget and threshold converge
 *   to their floor and ceiling: almost nothing is issued. One prediction in 64 between
 *   thr_min and the threshold is let through as a probe, so that feedback keeps coming and
 *   the threshold can come back down when the workload changes.
 * - Coverage (prefetches used / (used + demand misses)) is measured and reported.
 *
 * Concurrency: single-threaded; the thread that owns the scheduler calls every function.
 */

#include <stdint.h>

#include <km_predict.h>

struct km_pfsched_params {
	uint32_t queue_cap;     /* queued predictions (default 256) */
	uint16_t nb_targets;    /* owners prefetches go to (default 1) */
	uint16_t inflight_init; /* per-target budget of reads in flight at start (default 16) */
	uint16_t inflight_min;  /* AIMD floor (default 1) */
	uint16_t inflight_max;  /* AIMD ceiling (default 256) */
	uint64_t bytes_per_s;   /* per target; 0: unlimited */
	uint32_t est_bytes;     /* bytes charged per prefetch (default 4096) */
	uint32_t aimd_window;   /* resolved prefetches per adjustment (default 64) */
	uint64_t deadline_ns;   /* a prediction queued longer is stale (default 1 ms) */
	uint64_t filter_ttl_ns; /* how long a pushed key is filtered (default 10 ms) */
	uint32_t filter_size;   /* recent key hashes (default 4096) */
	uint32_t ghost_size;    /* keys evicted by prefetches (default 1024) */
	float threshold;        /* initial confidence threshold (default 0.3) */
	float thr_min, thr_max; /* AIMD range of the threshold (default 0.1, 0.5) */
	float acc_hi, acc_lo;   /* AIMD accuracy bounds (default 0.5, 0.3) */
	float harm_max;         /* harm per resolved prefetch tolerated (default 0.05) */
};

/** One prefetch to send to its target. */
struct km_pfsched_cmd {
	float conf;
	uint32_t target;
	uint8_t src; /* the prediction's source: give it to km_predict_feedback() */
	uint16_t len;
	uint64_t hash;
	uint8_t key[KM_KEY_MAX];
};

struct km_pfsched_stats {
	uint64_t pushed, below_threshold, filtered, queue_full;
	uint64_t stale, dropped_watermark, issued, completed;
	uint64_t used, unused, demand_misses, harm;
	uint64_t probes;               /* below the threshold, let through to keep measuring */
	uint64_t increases, decreases; /* AIMD steps */
	float threshold;
	uint32_t budget;
	double accuracy; /* used / (used + unused) */
	double coverage; /* used / (used + demand_misses) */
};

struct km_pfsched;

/**
 * @param p NULL or parameters (zero fields take the defaults).
 * @return 0, -EINVAL (inconsistent bounds), -ENOMEM.
 * @note Context: any thread; the scheduler then belongs to the caller's thread.
 */
int km_pfsched_create(const struct km_pfsched_params *p, struct km_pfsched **out);

/**
 * NULL is allowed.
 * @note Context: the owner thread.
 */
void km_pfsched_destroy(struct km_pfsched *s);

/**
 * Offer a prediction for target.
 * @return 1 queued, 0 dropped (below threshold, filtered, queue full), -EINVAL (target out
 *   of range).
 * @note Context: the owner thread.
 */
int km_pfsched_push(
	struct km_pfsched *s, const struct km_prediction *p, uint32_t target, uint64_t now_ns);

/**
 * Take up to max prefetches to send now, best first, within every target's budget.
 * Each one counts as in flight until km_pfsched_done().
 * @return the number of commands written.
 * @note Context: the owner thread.
 */
unsigned km_pfsched_pop(
	struct km_pfsched *s, uint64_t now_ns, struct km_pfsched_cmd *out, unsigned max);

/**
 * A prefetch read of target completed (or failed, or was dropped by the owner).
 * @note Context: the owner thread.
 */
void km_pfsched_done(struct km_pfsched *s, uint32_t target);

/**
 * Set how many of target's prefetches are in flight, from a count the owner keeps apart
 * (commands sent minus commands the target applied): a completion that never arrives
 * cannot hold a slot forever.
 * @note Context: the owner thread.
 */
void km_pfsched_inflight(struct km_pfsched *s, uint32_t target, uint32_t n);

/**
 * Whether target's pending table is above its watermark (demand first: its prefetches are
 * dropped while it is).
 * @note Context: the owner thread.
 */
void km_pfsched_watermark(struct km_pfsched *s, uint32_t target, int over);

/**
 * What became of one prefetched entry: used (hit before eviction) or not (evicted or
 * invalidated unused). Drives AIMD.
 * @note Context: the owner thread.
 */
void km_pfsched_outcome(struct km_pfsched *s, int used);

/**
 * Inserting a prefetched entry evicted the key with this hash (remembered in the ghost list).
 * @note Context: the owner thread.
 */
void km_pfsched_evicted(struct km_pfsched *s, uint64_t hash);

/**
 * A demand miss (counted for coverage; harm when a prefetch evicted the key).
 * @note Context: the owner thread.
 */
void km_pfsched_demand_miss(struct km_pfsched *s, uint64_t hash);

/**
 * A demand miss on a key a prefetch evicted, found by the caller (who remembers
 * evictions itself, instead of km_pfsched_evicted() and km_pfsched_demand_miss()): counts
 * as harm for AIMD, not as a demand miss.
 * @note Context: the owner thread.
 */
void km_pfsched_harm(struct km_pfsched *s);

/**
 * Figures so far, current threshold and budget.
 * @note Context: the owner thread.
 */
void km_pfsched_stats(const struct km_pfsched *s, struct km_pfsched_stats *st);

#endif /* KM_PFSCHED_H */
