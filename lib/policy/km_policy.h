/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_POLICY_H
#define KM_POLICY_H

/**
 * @file
 * Automatic policies of the control plane, as pure functions: given the load of every
 * shard as last sampled and the thresholds, decide what to change (split or merge a
 * shard, move one to another tier, compact its log). They never act: the control lcore
 * applies the decision through its re-sharding transaction.
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
