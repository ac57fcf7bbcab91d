/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_PREFSIM_H
#define KM_PREFSIM_H

/**
 * @file
 * Offline prefetch evaluator: replays a loaded trace through lib/predict (the predictor, the
 * owner-side stream detector and the prefetch scheduler: the code keymapd runs) and a model
 * of keymapd's cache, and measures what prefetching gains.
 *
 * Cache model: unit-size entries (capacity in keys), SIEVE exactly as lib/cache evicts
 * (km_sim_sieve() replays a trace without prefetch; tests check it against lib/cache). GETs
 * are counted; a GET miss installs the key; a PUT installs or refreshes it (and makes a
 * prefetch of it in flight stale: discarded on completion); a DEL drops it.
 *
 * Prefetch model, per request i (virtual time i us):
 * 1. prefetches issued at request i - latency complete and enter the cache marked
 *    prefetched (as visited when insert_visited), unless the key is cached already;
 * 2. the request: a hit on a prefetched entry is "used" (fed back to the predictor, the
 *    scheduler and the stream detector that asked for it); a GET of a key whose prefetch is
 *    still in flight is a "late" prefetch: it waits, counts as a miss, and the completion
 *    installs the key; an entry evicted while still marked is "unused";
 * 3. the owner-side stream detector of the key's shard (shard = hash of the routing part
 *    % nb_shards) observes GETs; the predictor observes every request, with the trace's
 *    session id (stream 0 when none);
 * 4. their predictions go to the scheduler (one target per worker: shard % nb_workers),
 *    and up to issue_max prefetches are popped and issued; a key already cached or in
 *    flight costs nothing, a key that does not exist in the trace costs an index lookup
 *    only (counted "absent", fed back as unused).
 */

#include <stdint.h>

#include "km_cachesim.h"
#include "km_trace.h"

#include <km_predict.h>

struct km_prefsim_params {
	uint64_t capacity;   /* entries, >= 1 */
	uint32_t latency;    /* requests between a prefetch's issue and its completion */
	uint32_t models;     /* predictor models, 1 << enum km_predict_model; STRIDE selects the
				owner-side detector (the predictor's own copy stays off) */
	uint32_t nb_shards;  /* stream detectors (default 64) */
	uint32_t nb_workers; /* scheduler targets (default 4) */
	uint32_t issue_max;  /* prefetches popped per request (default 16) */
	uint64_t mem_bytes;  /* predictor memory cap (default 64 MiB) */
	int insert_visited;  /* prefetched entries enter SIEVE already visited */
	int no_carry;        /* the detector does not carry into the previous digit run */
	int no_aimd;         /* keep the scheduler's budget and threshold fixed */
};

struct km_prefsim_model {
	uint64_t issued; /* reads of existing keys */
	uint64_t used;   /* prefetched entries hit before eviction */
	uint64_t late;   /* demand GETs that waited for the prefetch */
	uint64_t absent; /* predicted keys that do not exist */
};

struct km_prefsim_result {
	uint64_t gets;
	uint64_t hits_off, hits; /* without / with prefetch */
	double hit_ratio_off, hit_ratio;
	struct km_prefsim_model all, model[KM_PREDICT_NB_MODELS];
	uint64_t unused, stale, harm;
	double accuracy;          /* (used + late) / resolved prefetches */
	double coverage;          /* misses avoided / misses without prefetch */
	double reads_per_avoided; /* prefetch reads / misses avoided (0 when none avoided) */
	uint64_t avoided;         /* misses without prefetch - misses with (0 if negative) */
	struct km_predict_stats pstats;
	struct km_pfsched_stats_view {
		uint64_t below_threshold, filtered, queue_full, stale, pushed;
		float threshold;
		uint32_t budget;
	} sched;
};

/**
 * Replay t through the prefetching model.
 * @return 0, -EINVAL (capacity 0), -ENOMEM.
 * @note Context: any thread; t is only read.
 */
int km_prefsim_run(
	const struct km_trace *t, const struct km_prefsim_params *p, struct km_prefsim_result *r);

/**
 * The same cache model without prefetch (the "off" column).
 * @return 0, -EINVAL (capacity 0), -ENOMEM.
 * @note Context: any thread; t is only read.
 */
int km_sim_sieve(const struct km_trace *t, uint64_t capacity, struct km_sim_result *r);

/**
 * Cost of observing one access: the predictor (models of p) and the stream detector timed
 * alone over the first n records of t (no cache, no feedback).
 * @return 0, -ENOMEM.
 * @note Context: any thread; t is only read.
 */
int km_prefsim_cost(const struct km_trace *t, const struct km_prefsim_params *p, size_t n,
	double *ns_predict, double *ns_stream);

#endif /* KM_PREFSIM_H */
