/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_POLICY_H
#define KM_POLICY_H

/**
 * @file
 * Automatic policies of the control plane, as pure functions: given the load of every
 * shard as last sampled and the thresholds, decide what to change (split or merge a
 * shard, move shards between workers, move one to another tier, compact its log). They
 * never act: the control lcore applies the decision through its re-sharding transaction.
 *
 * Streaks: a condition must hold for `hysteresis` consecutive samples before anything is
 * done. Each call is one sample: it updates the streak counters of the shards it is
 * given (in/out) and decides at most one change, so that each change is measured before
 * the next one.
 *
 * Concurrency: none. The functions touch only their arguments; one thread at a time per
 * array of shards (the control lcore).
 *
 * Beside them, the one decision a worker takes for itself, on the same terms: whether its
 * RX backlog is over the watermark (km_policy_backlog_update(), at the end).
 */

#include <stdint.h>

/** One shard as the policies see it. */
struct km_policy_shard {
	uint64_t id;         /* shard id (buddy: id ^ 1) */
	uint16_t owner;      /* worker that owns it (placement) */
	uint64_t keys;       /* entries stored */
	double rate;         /* requests/s, decayed over the samples */
	uint8_t tier;        /* enum km_tier (persistent drivers) */
	uint64_t file_bytes; /* on disk */
	uint64_t dead_bytes; /* reclaimable by a compaction */
	uint8_t pinned;      /* no automatic action takes it, nor merges its buddy with it (a
			      * quarantined shard: its data is not known) */
	/* Streaks, in/out: consecutive samples a condition held. Zero for a new shard. */
	uint32_t hot;   /* rate above split_rate */
	uint32_t cold;  /* even member of a buddy pair: the pair's rate below merge_rate */
	uint32_t chill; /* hot-tier shard below cold_rate */
	uint32_t warm;  /* cold-tier shard above warm_rate */
};

/** Thresholds of automatic re-sharding ([shards] of the configuration). */
struct km_policy_shard_conf {
	uint64_t split_rate; /* req/s of one shard above which it is split (0 = never) */
	uint64_t merge_rate; /* req/s of two buddies below which they merge (0 = never) */
	uint64_t hysteresis; /* consecutive samples a condition must hold */
	uint64_t min_count;  /* the floor: merges stop at this many shards */
	uint64_t max_count;  /* splits stop at this many shards */
};

/** Thresholds of automatic tiering and compaction ([tier] of the configuration). */
struct km_policy_tier_conf {
	uint64_t cold_rate;   /* req/s below which a hot shard goes cold (0 = never) */
	uint64_t warm_rate;   /* req/s above which a cold shard comes back (0 = never) */
	uint64_t hysteresis;  /* consecutive samples a condition must hold */
	uint64_t compact_pct; /* dead share (%) of a log that triggers a compaction (0 = never) */
	uint64_t compact_min_bytes; /* smaller files are left alone */
};

enum km_policy_action {
	KM_POLICY_NONE = 0,
	KM_POLICY_SPLIT,   /* split id */
	KM_POLICY_MERGE,   /* merge id with its buddy id ^ 1 */
	KM_POLICY_TO_COLD, /* rewrite id into the cold tier */
	KM_POLICY_TO_HOT,  /* rewrite id back into a log */
	KM_POLICY_COMPACT, /* rewrite id's log without its dead records */
};

/** What a policy decided. */
struct km_policy_decision {
	enum km_policy_action action;
	uint64_t id;
};

/**
 * Automatic re-sharding, one sample. Updates the hot and cold streaks of s[0..n) and
 * decides: split the hottest shard whose rate stayed above split_rate for hysteresis
 * samples (unless it is at KM_SHARD_DEPTH_MAX, holds fewer than 2 keys, the map has
 * max_count shards, or its buddy gets under a tenth of its rate: splitting cannot spread
 * one hot key); otherwise merge the coldest buddy pair whose summed rate stayed below
 * merge_rate for hysteresis samples while the map has more than min_count shards.
 * Ties go to the first in s's order. When it decides a change, every streak restarts
 * from 0 (the map changes: each change is measured before the next). With split_rate and
 * merge_rate both 0 nothing is touched.
 * @return 0 and *d (action KM_POLICY_NONE when nothing is due), -ENOMEM (streaks are then
 *   unchanged), -EINVAL (NULL).
 * @note Context: any thread; s is not shared during the call.
 */
int km_policy_shards(const struct km_policy_shard_conf *c, struct km_policy_shard *s, uint32_t n,
	struct km_policy_decision *d);

/**
 * Automatic tiering and compaction, one sample. Updates the chill and warm streaks of
 * s[0..n) and decides for the first shard in s's order that qualifies: back to the hot
 * tier (warm for hysteresis samples), into the cold tier (chill for hysteresis samples
 * and not empty), or a compaction (file_bytes >= compact_min_bytes and dead_bytes over
 * compact_pct % of file_bytes). The chosen shard's streaks restart from 0.
 * @return 0 and *d (action KM_POLICY_NONE when nothing is due), -EINVAL (NULL).
 * @note Context: any thread; s is not shared during the call.
 */
int km_policy_tiers(const struct km_policy_tier_conf *c, struct km_policy_shard *s, uint32_t n,
	struct km_policy_decision *d);

/*
 * Load-aware placement: which worker should own which shard so that every worker carries
 * about the mean load. A worker's load is the sum of the rates of the shards it owns.
 *
 * Hysteresis and bounds, so that it never thrashes: nothing moves while the mean load is
 * below min_load (an idle server has nothing to even out), nor until the most loaded
 * worker has carried more than ratio x the mean for hysteresis consecutive samples. Then
 * moves are chosen greedily on the loads as they would be after the moves already chosen:
 * from the most loaded worker to the least loaded one, the shard whose rate is the
 * largest that is at most half their gap (so that the pair's larger load strictly
 * shrinks: a shard never goes to a worker that ends up more loaded than the one it left,
 * and with steady rates the sum of the squared loads falls with every move: no cycle),
 * until the most loaded worker is within half the margin (1 + (ratio - 1) / 2 of the
 * mean) or no shard qualifies. A token bucket bounds the moves: moves_per_s tokens a
 * second, at most max(1, moves_per_s) saved; each move takes one. A decision that moves
 * anything restarts the streak: its effect is measured before the next one.
 */
struct km_policy_place_conf {
	double ratio;        /* act above this max/mean load (> 1); 0 = never move */
	double min_load;     /* mean load (requests/s) below which nothing moves */
	uint32_t hysteresis; /* consecutive samples above ratio before moving (>= 1) */
	double moves_per_s;  /* token rate of the move bound (> 0) */
};

/** What the placement keeps between two samples (zero it to start). */
struct km_policy_place_state {
	uint32_t over; /* consecutive samples above ratio */
	double tokens; /* moves allowed now */
};

/** One move: shard id from worker `from` to worker `to`. */
struct km_policy_move {
	uint64_t id;
	uint16_t from;
	uint16_t to;
};

/**
 * Placement, one sample taken dt seconds after the previous one: s[0..n) with their
 * owners and rates, nb_workers workers. Updates st (streak and tokens) and chooses at most
 * max_mv moves into mv[0..*nb_mv), in the order they are to be made. Pinned shards and
 * shards of rate 0 never move; ties go to the first worker by index and to the first
 * shard in s's order, so equal inputs give equal moves.
 * @return 0 (*nb_mv may be 0), -EINVAL (NULL, nb_workers 0, an owner >= nb_workers, ratio
 *   in (0, 1], hysteresis 0, moves_per_s <= 0, dt < 0), -ENOMEM (st unchanged).
 * @note Context: any thread; s, st and mv are not shared during the call.
 */
int km_policy_place(const struct km_policy_place_conf *c, struct km_policy_place_state *st,
	const struct km_policy_shard *s, uint32_t n, uint16_t nb_workers, double dt,
	struct km_policy_move *mv, uint32_t max_mv, uint32_t *nb_mv);

/**
 * The worker a new shard of the given rate should go to: the one whose load plus rate is
 * the smallest (the least loaded; the first by index on a tie). load[0..nb_workers).
 * @return the worker's index; 0 when nb_workers is 0 or load is NULL.
 * @note Context: any thread.
 */
uint16_t km_policy_place_new(const double *load, uint16_t nb_workers, double rate);

/*
 * Overload of a worker, judged once per loop iteration from its RX burst: is the RX queue
 * holding more than the watermark, so that new requests that cost more than a BUSY reply
 * should get one (docs/operations.md, 2.11)? Unlike the policies above it runs on the
 * worker's data path: static inline, no system call, nothing but its arguments.
 *
 * Where the port can tell (rte_eth_rx_descriptor_status(): real NICs), the caller asks it
 * whether the descriptor `watermark` places past the next one to read is filled, after a
 * full burst only. Where it cannot (net_tap, memif, af_packet), consecutive full bursts are
 * the measure: a burst that comes back full left packets behind, and a queue that held
 * `watermark` packets takes at least watermark / burst full bursts to drain; so the
 * backlog is over once full bursts in a row have taken `watermark` packets or more. The
 * first burst that is not full (the queue ran dry) ends it.
 */
struct km_policy_backlog {
	uint32_t full; /* consecutive full bursts, the last one included */
};

/* Packets of a watermark given in percent of the RX descriptors: 0 (off) for 0, else at
 * least 1. @note Context: any thread. */
static inline uint32_t
km_policy_backlog_watermark(uint32_t pct, uint32_t nb_desc)
{
	uint64_t w = (uint64_t)pct * nb_desc / 100;

	return pct == 0 ? 0 : w == 0 ? 1 : (uint32_t)w;
}

/**
 * One RX burst: nb_rx packets of the burst asked for. deep says whether the port reports
 * `watermark` more packets waiting after this burst: 1 yes, 0 no, -1 the port cannot tell
 * (or was not asked: the burst was not full). watermark in packets, 0: never over.
 * @return 1 if the worker is over its backlog watermark for this burst, else 0.
 * @note Context: the worker that owns b.
 */
static inline int
km_policy_backlog_update(
	struct km_policy_backlog *b, uint32_t nb_rx, uint32_t burst, int deep, uint32_t watermark)
{
	if (nb_rx < burst || burst == 0) {
		b->full = 0;
		return 0;
	}
	if (b->full < UINT32_MAX)
		b->full++;
	if (watermark == 0)
		return 0;
	if (deep >= 0)
		return deep;
	return (uint64_t)b->full * burst >= watermark;
}

#endif /* KM_POLICY_H */
