/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Automatic policies on synthetic loads: streaks must last the hysteresis, the hottest
 * shard is split and the coldest pair merged, one hot key is never split, merges stop
 * at the floor and splits at max_count, a load between the thresholds settles without
 * oscillating; tiers: cold after a long chill (not when empty), back when warm,
 * compaction by the dead share, first shard in order wins, its streaks restart; a worker's
 * RX backlog: over after full bursts worth the watermark, never from bursts that are not
 * full, at once where the port reports the depth; placement: nothing while balanced or
 * idle, moves only after the hysteresis, converges on skewed loads with every move from the
 * heavier worker, bounded by its token bucket, never oscillates under noisy rates, leaves a
 * shard too hot to help alone (it must split), ties stable, the least loaded for a new
 * shard.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <km_policy.h>
#include <km_shardmap.h>
#include <km_store.h>

#define MAX_SHARDS 64

static const struct km_policy_shard_conf shard_conf = {
	.split_rate = 1000,
	.merge_rate = 400,
	.hysteresis = 3,
	.min_count = 2,
	.max_count = 16,
};

static const struct km_policy_tier_conf tier_conf = {
	.cold_rate = 10,
	.warm_rate = 100,
	.hysteresis = 3,
	.compact_pct = 50,
	.compact_min_bytes = 1000,
};

static struct km_policy_shard
shard(uint64_t id, double rate, uint64_t keys)
{
	return (struct km_policy_shard){.id = id, .rate = rate, .keys = keys};
}

static struct km_policy_decision
decide(struct km_policy_shard *s, uint32_t n)
{
	struct km_policy_decision d;

	assert_int_equal(km_policy_shards(&shard_conf, s, n, &d), 0);
	return d;
}

/* A hot shard is split only once its streak reaches the hysteresis; a dip restarts it. */
static void
test_split_hysteresis(void **state)
{
	struct km_policy_shard s[2] = {shard(2, 1500, 100), shard(3, 900, 100)};
	struct km_policy_decision d;

	(void)state;
	for (int i = 0; i < 2; i++)
		assert_int_equal(decide(s, 2).action, KM_POLICY_NONE);
	s[0].rate = 999; /* a dip */
	assert_int_equal(decide(s, 2).action, KM_POLICY_NONE);
	assert_int_equal(s[0].hot, 0);
	s[0].rate = 1500;
	for (int i = 0; i < 2; i++)
		assert_int_equal(decide(s, 2).action, KM_POLICY_NONE);
	d = decide(s, 2);
	assert_int_equal(d.action, KM_POLICY_SPLIT);
	assert_int_equal(d.id, 2);
	/* A decision restarts every streak. */
	assert_int_equal(s[0].hot, 0);
	assert_int_equal(s[1].hot, 0);
}

/* Of two hot shards, the hotter is split; of equal ones, the first in order. */
static void
test_split_hottest(void **state)
{
	struct km_policy_shard s[4] = {
		shard(4, 1200, 10), shard(5, 1100, 10), shard(6, 3000, 10), shard(7, 2900, 10)};
	struct km_policy_decision d;

	(void)state;
	decide(s, 4);
	decide(s, 4);
	d = decide(s, 4);
	assert_int_equal(d.action, KM_POLICY_SPLIT);
	assert_int_equal(d.id, 6);
	s[2].rate = s[3].rate = 2000;
	decide(s, 4);
	decide(s, 4);
	assert_int_equal(decide(s, 4).id, 6);
}

/* One hot key: a shard with a single key, or one whose buddy got under a tenth of its
 * load at the last split, is never split. */
static void
test_single_hot_key(void **state)
{
	struct km_policy_shard one[2] = {shard(2, 50000, 1), shard(3, 10, 500)};
	struct km_policy_shard lopsided[2] = {shard(2, 50000, 900), shard(3, 900, 900)};
	struct km_policy_shard root = shard(1, 50000, 1);

	(void)state;
	for (int i = 0; i < 20; i++) {
		assert_int_equal(decide(one, 2).action, KM_POLICY_NONE);
		assert_int_equal(decide(lopsided, 2).action, KM_POLICY_NONE);
		assert_int_equal(decide(&root, 1).action, KM_POLICY_NONE);
	}
	/* The streak is counted all the same: the guard, not the streak, holds it. */
	assert_int_equal(one[0].hot, 20);
	lopsided[1].rate = 5000; /* a tenth exactly: spread enough */
	assert_int_equal(decide(lopsided, 2).action, KM_POLICY_SPLIT);
}

/* Splits stop at max_count shards and at the depth limit. */
static void
test_split_limits(void **state)
{
	struct km_policy_shard s[MAX_SHARDS];
	struct km_policy_shard deep[2];
	uint64_t base = 1ULL << KM_SHARD_DEPTH_MAX;
	uint32_t i;

	(void)state;
	for (i = 0; i < 16; i++)
		s[i] = shard(16 + i, 5000, 100);
	for (i = 0; i < 10; i++)
		assert_int_equal(decide(s, 16).action, KM_POLICY_NONE);
	deep[0] = shard(base, 5000, 100);
	deep[1] = shard(base + 1, 5000, 100);
	for (i = 0; i < 10; i++)
		assert_int_equal(decide(deep, 2).action, KM_POLICY_NONE);
	/* One level up splits. */
	deep[0] = shard(base / 2, 5000, 100);
	deep[1] = shard(base / 2 + 1, 5000, 100);
	for (i = 0; i < 2; i++)
		decide(deep, 2);
	assert_int_equal(decide(deep, 2).action, KM_POLICY_SPLIT);
}

/* The coldest buddy pair merges after the hysteresis, tracked on its even member; only
 * buddies (both present) count. */
static void
test_merge(void **state)
{
	struct km_policy_shard s[5] = {shard(4, 100, 10), shard(5, 150, 10), shard(6, 10, 10),
		shard(7, 20, 10), shard(3, 1, 10)};
	struct km_policy_decision d;

	(void)state;
	decide(s, 5);
	decide(s, 5);
	assert_int_equal(s[0].cold, 2);
	assert_int_equal(s[1].cold, 0); /* odd member */
	assert_int_equal(s[4].cold, 0); /* 3's buddy 2 is split further */
	d = decide(s, 5);
	assert_int_equal(d.action, KM_POLICY_MERGE);
	assert_int_equal(d.id, 6);
}

/* Merges stop at the floor (min_count shards). */
static void
test_merge_floor(void **state)
{
	struct km_policy_shard s[2] = {shard(2, 1, 10), shard(3, 1, 10)};
	struct km_policy_shard_conf c = shard_conf;
	struct km_policy_decision d;

	(void)state;
	for (int i = 0; i < 10; i++)
		assert_int_equal(decide(s, 2).action, KM_POLICY_NONE);
	c.min_count = 1;
	assert_int_equal(km_policy_shards(&c, s, 2, &d), 0);
	assert_int_equal(d.action, KM_POLICY_MERGE);
	assert_int_equal(d.id, 2);
}

/* Both thresholds 0: nothing decided, streaks untouched. */
static void
test_disabled(void **state)
{
	struct km_policy_shard_conf c = shard_conf;
	struct km_policy_shard s[2] = {shard(2, 1e9, 10), shard(3, 0, 10)};
	struct km_policy_decision d;

	(void)state;
	c.split_rate = c.merge_rate = 0;
	s[0].hot = 7;
	assert_int_equal(km_policy_shards(&c, s, 2, &d), 0);
	assert_int_equal(d.action, KM_POLICY_NONE);
	assert_int_equal(s[0].hot, 7);
	assert_int_equal(km_policy_shards(NULL, s, 2, &d), -EINVAL);
	assert_int_equal(km_policy_tiers(&tier_conf, NULL, 1, &d), -EINVAL);
}

/*
 * A synthetic key space: nb_keys keys of equal load, total requests/s, the shards as the
 * control lcore samples them (a split child starts at half its parent's rate, a merged
 * shard at the sum of its children's). Apply every decision; return the changes made.
 */
struct sim {
	struct km_policy_shard s[MAX_SHARDS];
	uint32_t n;
	double total;
};

static double
share(uint64_t id)
{
	return 1.0 / (double)(1ULL << km_shard_depth(id));
}

static unsigned int
sim_run(struct sim *m, unsigned int samples)
{
	struct km_policy_decision d;
	unsigned int changes = 0, k;
	uint32_t i;

	for (k = 0; k < samples; k++) {
		for (i = 0; i < m->n; i++)
			m->s[i].rate = m->total * share(m->s[i].id);
		assert_int_equal(km_policy_shards(&shard_conf, m->s, m->n, &d), 0);
		if (d.action == KM_POLICY_NONE)
			continue;
		changes++;
		for (i = 0; i < m->n && m->s[i].id != d.id; i++)
			;
		assert_true(i < m->n);
		if (d.action == KM_POLICY_SPLIT) {
			assert_true(m->n < MAX_SHARDS);
			m->s[m->n] = shard(d.id * 2 + 1, m->s[i].rate / 2, 100);
			m->s[i] = shard(d.id * 2, m->s[i].rate / 2, 100);
			m->n++;
		} else {
			uint32_t j;

			for (j = 0; j < m->n && m->s[j].id != (d.id ^ 1); j++)
				;
			assert_true(j < m->n);
			m->s[i] = shard(d.id >> 1, m->s[i].rate + m->s[j].rate, 200);
			m->s[j] = m->s[--m->n];
		}
	}
	return changes;
}

/* Load rises, settles, falls: the map follows it and stays still in between (no split
 * undone by a merge), never below the floor nor above max_count. */
static void
test_no_oscillation(void **state)
{
	struct sim m = {.n = 2, .total = 3500};
	unsigned int c;

	(void)state;
	m.s[0] = shard(2, 0, 100);
	m.s[1] = shard(3, 0, 100);
	c = sim_run(&m, 200);
	/* 3500 req/s: split until every shard is under 1000: 4 shards of 875. */
	assert_int_equal(m.n, 4);
	assert_int_equal(c, 2);
	/* Steady load: not one more change. */
	assert_int_equal(sim_run(&m, 500), 0);
	assert_int_equal(m.n, 4);
	/* Between the thresholds (pairs at 2 x 150 < 400 would merge; 2 x 250 = 500 not). */
	m.total = 1000;
	assert_int_equal(sim_run(&m, 500), 0);
	/* Load falls: merge down to the floor, then nothing. */
	m.total = 100;
	c = sim_run(&m, 500);
	assert_int_equal(m.n, 2);
	assert_int_equal(c, 2);
	/* Load beyond what max_count can spread: 16 shards and no further. */
	m.total = 1e6;
	sim_run(&m, 1000);
	assert_int_equal(m.n, 16);
	assert_int_equal(sim_run(&m, 100), 0);
}

static struct km_policy_decision
tiers(struct km_policy_shard *s, uint32_t n)
{
	struct km_policy_decision d;

	assert_int_equal(km_policy_tiers(&tier_conf, s, n, &d), 0);
	return d;
}

/* A hot shard below cold_rate goes cold after the hysteresis, unless it is empty; a cold
 * one above warm_rate comes back; the picked shard's streaks restart. */
static void
test_tiers(void **state)
{
	struct km_policy_shard s[3] = {shard(4, 5, 0), shard(5, 5, 10), shard(3, 500, 10)};
	struct km_policy_decision d;

	(void)state;
	s[2].tier = KM_TIER_COLD;
	assert_int_equal(tiers(s, 3).action, KM_POLICY_NONE);
	assert_int_equal(tiers(s, 3).action, KM_POLICY_NONE);
	d = tiers(s, 3);
	/* 4 is empty: left alone; 5 goes cold first (order), 3's streak keeps growing. */
	assert_int_equal(d.action, KM_POLICY_TO_COLD);
	assert_int_equal(d.id, 5);
	assert_int_equal(s[1].chill, 0);
	assert_int_equal(s[0].chill, 3);
	assert_int_equal(s[2].warm, 3);
	d = tiers(s, 3);
	assert_int_equal(d.action, KM_POLICY_TO_HOT);
	assert_int_equal(d.id, 3);
	assert_int_equal(s[2].warm, 0);
	/* A cold shard is never "chill", a hot one never "warm". */
	s[1].tier = KM_TIER_COLD;
	s[1].rate = 5;
	tiers(s, 3);
	assert_int_equal(s[1].chill, 0);
	assert_int_equal(s[1].warm, 0);
}

/* A pinned (quarantined) shard is never split, merged, retiered or compacted, and its buddy
 * is not merged with it; the others still are. */
static void
test_pinned(void **state)
{
	struct km_policy_shard s[4] = {
		shard(4, 5000, 10), shard(5, 1, 10), shard(6, 1, 10), shard(7, 1, 10)};
	struct km_policy_decision d;
	int i;

	(void)state;
	s[0].pinned = 1; /* hot, and the even member of a cold pair with 5 */
	s[2].pinned = 1;
	for (i = 0; i < 5; i++) {
		d = decide(s, 4);
		assert_int_equal(d.action, KM_POLICY_NONE);
	}
	s[2].pinned = 0; /* 6 and 7 may merge now (their streak went on); 4 stays */
	d = decide(s, 4);
	assert_int_equal(d.action, KM_POLICY_MERGE);
	assert_int_equal(d.id, 6);
	/* Tiers: a pinned shard below cold_rate stays hot; the next one goes. */
	s[0].rate = 1;
	s[0].chill = 10;
	for (i = 0; i < 3; i++)
		d = tiers(s, 4);
	assert_int_equal(d.action, KM_POLICY_TO_COLD);
	assert_int_equal(d.id, 5);
}

/* Compaction: by the dead share, over the minimum size; a tier change of an earlier shard
 * comes first. */
static void
test_compaction(void **state)
{
	struct km_policy_shard s[2] = {shard(2, 50, 10), shard(3, 50, 10)};
	struct km_policy_decision d;

	(void)state;
	s[1].file_bytes = 10000;
	s[1].dead_bytes = 5000; /* exactly 50 %: not over */
	assert_int_equal(tiers(s, 2).action, KM_POLICY_NONE);
	s[1].dead_bytes = 5001;
	d = tiers(s, 2);
	assert_int_equal(d.action, KM_POLICY_COMPACT);
	assert_int_equal(d.id, 3);
	s[1].file_bytes = 999;
	s[1].dead_bytes = 900;
	assert_int_equal(tiers(s, 2).action, KM_POLICY_NONE);
	s[1].file_bytes = 100000;
	s[1].dead_bytes = 90000;
	s[0].rate = 1; /* chill from now on */
	for (int i = 0; i < 2; i++)
		assert_int_equal(tiers(s, 2).action, KM_POLICY_COMPACT);
	d = tiers(s, 2);
	assert_int_equal(d.action, KM_POLICY_TO_COLD);
	assert_int_equal(d.id, 2);
}

/* Feed bursts of nb[i] packets (of burst asked) and check the verdict want[i] of each. */
static void
bursts(struct km_policy_backlog *b, uint32_t burst, uint32_t wm, int deep, const uint32_t *nb,
	const int *want, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		if (km_policy_backlog_update(b, nb[i], burst, deep, wm) != want[i])
			fail_msg("burst %u of %u packets (burst %u, watermark %u, deep %d): "
				 "expected %d",
				i, nb[i], burst, wm, deep, want[i]);
}

/* Ports that cannot tell their depth: consecutive full bursts worth the watermark. */
static void
test_backlog_full_bursts(void **state)
{
	/* 100 packets: the 4th full burst of 32 in a row (128 >= 100, 96 is not). */
	static const uint32_t nb[] = {32, 32, 32, 32, 32, 31, 32, 32, 32, 0, 32, 32, 32, 32};
	static const int want[] = {0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	/* A watermark that is a multiple of the burst: over at exactly 64 packets. */
	static const uint32_t nb64[] = {32, 32, 32, 1, 32};
	static const int want64[] = {0, 1, 1, 0, 0};
	struct km_policy_backlog b = {0};

	(void)state;
	bursts(&b, 32, 100, -1, nb, want, 14);
	b = (struct km_policy_backlog){0};
	bursts(&b, 32, 64, -1, nb64, want64, 5);
	/* One full burst already holds a watermark below it. */
	b = (struct km_policy_backlog){0};
	assert_int_equal(km_policy_backlog_update(&b, 32, 32, -1, 20), 1);
	assert_int_equal(km_policy_backlog_update(&b, 5, 32, -1, 20), 0);
}

/* The burst size changes at run time ([workers] burst): the streak counts bursts of the
 * size asked now. */
static void
test_backlog_burst_change(void **state)
{
	struct km_policy_backlog b = {0};
	unsigned int i;

	(void)state;
	for (i = 0; i < 6; i++)
		assert_int_equal(km_policy_backlog_update(&b, 16, 16, -1, 100), 0);
	assert_int_equal(km_policy_backlog_update(&b, 16, 16, -1, 100), 1); /* 7 x 16 = 112 */
	assert_int_equal(km_policy_backlog_update(&b, 64, 64, -1, 100), 1); /* 8 x 64 */
	assert_int_equal(km_policy_backlog_update(&b, 63, 64, -1, 100), 0);
}

/* Off (watermark 0): never over, however long the queue stays full. */
static void
test_backlog_off(void **state)
{
	struct km_policy_backlog b = {0};
	unsigned int i;

	(void)state;
	for (i = 0; i < 100000; i++)
		assert_int_equal(km_policy_backlog_update(&b, 32, 32, -1, 0), 0);
	/* The streak saturates instead of wrapping to 0. */
	b.full = UINT32_MAX - 1;
	assert_int_equal(km_policy_backlog_update(&b, 1, 1, -1, 5), 1);
	assert_int_equal(km_policy_backlog_update(&b, 1, 1, -1, 5), 1);
	assert_int_equal(b.full, UINT32_MAX);
}

/* Ports that report the depth (descriptor status): their answer decides a full burst. */
static void
test_backlog_depth_known(void **state)
{
	struct km_policy_backlog b = {0};
	unsigned int i;

	(void)state;
	assert_int_equal(km_policy_backlog_update(&b, 32, 32, 1, 512), 1); /* first burst */
	for (i = 0; i < 100; i++)
		assert_int_equal(km_policy_backlog_update(&b, 32, 32, 0, 512), 0);
	/* A burst that is not full ends it, whatever the caller passes. */
	assert_int_equal(km_policy_backlog_update(&b, 31, 32, 1, 512), 0);
	assert_int_equal(km_policy_backlog_update(&b, 32, 32, 1, 0), 0); /* off */
}

/* Watermarks in percent of the RX descriptors. */
static void
test_backlog_watermark(void **state)
{
	(void)state;
	assert_int_equal(km_policy_backlog_watermark(0, 1024), 0);
	assert_int_equal(km_policy_backlog_watermark(50, 1024), 512);
	assert_int_equal(km_policy_backlog_watermark(100, 1024), 1024);
	assert_int_equal(km_policy_backlog_watermark(1, 64), 1); /* 0.64: at least 1 */
	assert_int_equal(km_policy_backlog_watermark(100, 16384), 16384);
}

/*
 * A queue drained by the worker, with arrivals: with no arrivals, a queue of D packets
 * sets the backlog over exactly when D reaches the watermark rounded up to whole bursts;
 * with arrivals faster than the worker, it stays over until the arrivals stop.
 */
static void
test_backlog_queue(void **state)
{
	const uint32_t burst = 32, wm = 512;
	uint32_t depth, q, take, i;
	struct km_policy_backlog b;
	int over, ever;

	(void)state;
	for (depth = 0; depth <= 1024; depth += 7) {
		b = (struct km_policy_backlog){0};
		ever = 0;
		for (q = depth; q > 0 || b.full != 0; q -= take) {
			take = q < burst ? q : burst;
			ever |= km_policy_backlog_update(&b, take, burst, -1, wm);
		}
		assert_int_equal(ever, depth >= (wm + burst - 1) / burst * burst);
	}
	/* 40 packets arrive per 32 taken: over from the 16th burst on, as long as they come. */
	b = (struct km_policy_backlog){0};
	for (q = 0, i = 0; i < 200; i++) {
		q += 40;
		take = q < burst ? q : burst;
		q -= take;
		over = km_policy_backlog_update(&b, take, burst, -1, wm);
		assert_int_equal(over, i >= 15);
	}
	while (q >= burst) {
		q -= burst;
		assert_int_equal(km_policy_backlog_update(&b, burst, burst, -1, wm), 1);
	}
	assert_int_equal(km_policy_backlog_update(&b, q, burst, -1, wm), 0);
}

/* ---- Placement ---------------------------------------------------------------------- */

static const struct km_policy_place_conf place_conf = {
	.ratio = 1.10,
	.min_load = 100,
	.hysteresis = 2,
	.moves_per_s = 4,
};

static struct km_policy_shard
owned(uint64_t id, double rate, uint16_t owner)
{
	return (struct km_policy_shard){.id = id, .rate = rate, .keys = 10, .owner = owner};
}

/* Loads of nw workers from s[0..n). */
static void
loads(const struct km_policy_shard *s, uint32_t n, uint16_t nw, double *l)
{
	uint32_t i;

	memset(l, 0, nw * sizeof(*l));
	for (i = 0; i < n; i++)
		l[s[i].owner] += s[i].rate;
}

static double
max_over_mean(const struct km_policy_shard *s, uint32_t n, uint16_t nw)
{
	double l[8], max = 0, sum = 0;
	uint16_t w;

	loads(s, n, nw, l);
	for (w = 0; w < nw; w++) {
		sum += l[w];
		max = l[w] > max ? l[w] : max;
	}
	return sum > 0 ? max / (sum / nw) : 0;
}

/* One sample (dt 0.25 s); the moves are applied to s. @return the number of moves. */
static uint32_t
place_apply(const struct km_policy_place_conf *c, struct km_policy_place_state *st,
	struct km_policy_shard *s, uint32_t n, uint16_t nw, struct km_policy_move *mv)
{
	uint32_t nb = 0, i, k;

	assert_int_equal(km_policy_place(c, st, s, n, nw, 0.25, mv, 16, &nb), 0);
	for (k = 0; k < nb; k++) {
		for (i = 0; i < n && s[i].id != mv[k].id; i++)
			;
		assert_true(i < n);
		assert_int_equal(s[i].owner, mv[k].from);
		assert_int_not_equal(mv[k].from, mv[k].to);
		s[i].owner = mv[k].to;
	}
	return nb;
}

/* Balanced, or too little load to matter: nothing moves and the streak stays 0. */
static void
test_place_balanced(void **state)
{
	struct km_policy_shard s[4] = {
		owned(4, 1000, 0), owned(5, 1050, 1), owned(6, 1000, 0), owned(7, 1000, 1)};
	struct km_policy_place_state st = {0};
	struct km_policy_move mv[16];
	int i;

	(void)state;
	for (i = 0; i < 20; i++)
		assert_int_equal(place_apply(&place_conf, &st, s, 4, 2, mv), 0);
	assert_int_equal(st.over, 0);
	/* Skewed but idle: under min_load. */
	s[0].rate = 90;
	s[1].rate = 1;
	s[2].rate = 90;
	s[3].rate = 1;
	for (i = 0; i < 20; i++)
		assert_int_equal(place_apply(&place_conf, &st, s, 4, 2, mv), 0);
	assert_int_equal(st.over, 0);
	/* ratio 0: never, however skewed. */
	{
		struct km_policy_place_conf off = place_conf;

		off.ratio = 0;
		s[0].rate = 100000;
		for (i = 0; i < 20; i++)
			assert_int_equal(place_apply(&off, &st, s, 4, 2, mv), 0);
	}
}

/* A skew must last the hysteresis; a balanced sample in between restarts the streak. The
 * decision that moves restarts it too. */
static void
test_place_hysteresis(void **state)
{
	struct km_policy_shard s[4] = {
		owned(4, 3000, 0), owned(5, 1000, 1), owned(6, 1000, 0), owned(7, 1000, 1)};
	struct km_policy_place_state st = {0};
	struct km_policy_move mv[16];

	(void)state;
	assert_int_equal(place_apply(&place_conf, &st, s, 4, 2, mv), 0);
	assert_int_equal(st.over, 1);
	s[0].rate = 1000; /* a dip */
	assert_int_equal(place_apply(&place_conf, &st, s, 4, 2, mv), 0);
	assert_int_equal(st.over, 0);
	s[0].rate = 3000;
	assert_int_equal(place_apply(&place_conf, &st, s, 4, 2, mv), 0);
	/* Loads 4000 / 2000, gap 2000: shard 6 (1000, at most half the gap) goes to worker 1;
	 * then 3000 / 3000. */
	assert_int_equal(place_apply(&place_conf, &st, s, 4, 2, mv), 1);
	assert_int_equal(mv[0].id, 6);
	assert_int_equal(mv[0].from, 0);
	assert_int_equal(mv[0].to, 1);
	assert_int_equal(st.over, 0);
	assert_true(max_over_mean(s, 4, 2) <= 1.0 + 1e-9);
}

/* Zipf-like rates, all on worker 0 of two: converges under ratio with every move from the
 * heavier worker (no shard goes back), within the token bucket. */
static void
test_place_converges(void **state)
{
	struct km_policy_shard s[32];
	struct km_policy_place_state st = {0};
	struct km_policy_move mv[16];
	uint32_t i, nb, total = 0, samples;
	uint8_t moved[32] = {0};

	(void)state;
	for (i = 0; i < 32; i++)
		s[i] = owned(32 + i, 10000.0 / (i + 1), 0);
	for (samples = 1; samples <= 200; samples++) {
		nb = place_apply(&place_conf, &st, s, 32, 2, mv);
		for (i = 0; i < nb; i++) {
			assert_int_equal(mv[i].from, 0);
			assert_int_equal(moved[mv[i].id - 32], 0);
			moved[mv[i].id - 32] = 1;
		}
		total += nb;
		/* At most 4 a second, plus the first second's saved token (none: it starts
		 * empty). */
		assert_true(total <= 4 * samples * 0.25 + 1e-9);
	}
	assert_true(total > 0);
	assert_true(max_over_mean(s, 32, 2) <= place_conf.ratio);
	/* Settled: nothing more moves. */
	for (i = 0; i < 50; i++)
		assert_int_equal(place_apply(&place_conf, &st, s, 32, 2, mv), 0);
}

/* Four workers, one heavy: converges, every move strictly lowers the sum of squared loads
 * (no cycle), and the bucket bounds every decision and the total. */
static void
test_place_bounded(void **state)
{
	struct km_policy_place_conf c = place_conf;
	struct km_policy_shard s[64];
	struct km_policy_place_state st = {0};
	struct km_policy_move mv[16];
	double l[4], sq, prev = 1e300;
	uint32_t i, nb, total = 0, samples;
	uint16_t w;

	(void)state;
	c.moves_per_s = 2;
	c.hysteresis = 1;
	for (i = 0; i < 64; i++)
		s[i] = owned(64 + i, 100 + (i * 37) % 50, i < 56 ? 0 : (uint16_t)(1 + i % 3));
	for (samples = 1; samples <= 400; samples++) {
		nb = place_apply(&c, &st, s, 64, 4, mv);
		assert_true(nb <= 2); /* burst: max(1, moves_per_s) */
		total += nb;
		assert_true(total <= 2 * samples * 0.25 + 1e-9);
		loads(s, 64, 4, l);
		for (sq = 0, w = 0; w < 4; w++)
			sq += l[w] * l[w];
		if (nb > 0)
			assert_true(sq < prev);
		prev = sq;
	}
	assert_true(max_over_mean(s, 64, 4) <= c.ratio);
	/* A long pause saves at most max(1, moves_per_s) tokens. */
	nb = 0;
	assert_int_equal(km_policy_place(&c, &st, s, 64, 4, 1000, mv, 16, &nb), 0);
	assert_true(st.tokens <= 2);
}

/* Noisy rates around balance (+-4 %), and a balanced split of the load: no move over a
 * thousand samples, so no oscillation between the two workers. */
static void
test_place_no_oscillation(void **state)
{
	struct km_policy_shard s[8];
	struct km_policy_place_state st = {0};
	struct km_policy_move mv[16];
	uint64_t x = 42;
	uint32_t i, k, total = 0;

	(void)state;
	for (k = 0; k < 1000; k++) {
		for (i = 0; i < 8; i++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			s[i] = owned(8 + i,
				1000 * (0.96 + 0.08 * (double)(x >> 11) / 9007199254740992.0),
				(uint16_t)(i & 1));
		}
		total += place_apply(&place_conf, &st, s, 8, 2, mv);
	}
	assert_int_equal(total, 0);
}

/* A shard hotter than half the gap cannot even the load out by moving (it must split):
 * it stays; a pinned shard never moves; ties go to the first shard in order, the same
 * on the same input. */
static void
test_place_limits(void **state)
{
	struct km_policy_shard s[4] = {
		owned(4, 5000, 0), owned(5, 100, 1), owned(6, 100, 1), owned(7, 10, 0)};
	struct km_policy_shard t[4];
	struct km_policy_place_state st = {0}, st2;
	struct km_policy_move mv[16], mv2[16];
	uint32_t nb = 0, nb2 = 0;
	int i;

	(void)state;
	/* Gap 4810: 4 (5000) is too hot; 7 (10) moves, then nothing qualifies any more. */
	for (i = 0; i < 2; i++)
		nb = place_apply(&place_conf, &st, s, 4, 2, mv);
	assert_int_equal(nb, 1);
	assert_int_equal(mv[0].id, 7);
	for (i = 0; i < 10; i++)
		assert_int_equal(place_apply(&place_conf, &st, s, 4, 2, mv), 0);
	assert_int_equal(s[0].owner, 0);
	/* Pinned. */
	s[0] = owned(4, 1000, 0);
	s[1] = owned(5, 1000, 0);
	s[2] = owned(6, 1000, 0);
	s[3] = owned(7, 1000, 1);
	s[0].pinned = s[1].pinned = s[2].pinned = 1;
	memset(&st, 0, sizeof(st));
	for (i = 0; i < 10; i++)
		assert_int_equal(place_apply(&place_conf, &st, s, 4, 2, mv), 0);
	/* Ties: three equal shards, the first one moves, twice the same. */
	s[1].pinned = s[2].pinned = 0;
	s[0].pinned = 0;
	s[3].rate = 0;
	memset(&st, 0, sizeof(st));
	st.over = 1;
	st.tokens = 4;
	st2 = st;
	memcpy(t, s, sizeof(t));
	assert_int_equal(km_policy_place(&place_conf, &st, s, 4, 2, 0, mv, 16, &nb), 0);
	assert_int_equal(km_policy_place(&place_conf, &st2, t, 4, 2, 0, mv2, 16, &nb2), 0);
	assert_int_equal(nb, 1);
	assert_int_equal(nb2, 1);
	assert_int_equal(mv[0].id, 4);
	assert_int_equal(mv2[0].id, 4);
	assert_int_equal(mv[0].to, 1);
	assert_int_equal(mv2[0].to, 1);
}

/* Bad arguments are refused; the least loaded worker takes a new shard, the first on a
 * tie. */
static void
test_place_args(void **state)
{
	struct km_policy_shard s[2] = {owned(2, 10, 0), owned(3, 10, 2)};
	struct km_policy_place_conf c = place_conf;
	struct km_policy_place_state st = {0};
	struct km_policy_move mv[4];
	const double l[4] = {30, 10, 10, 20};
	uint32_t nb;

	(void)state;
	assert_int_equal(km_policy_place(&c, &st, s, 2, 2, 0.25, mv, 4, &nb), -EINVAL);
	assert_int_equal(km_policy_place(&c, &st, s, 2, 0, 0.25, mv, 4, &nb), -EINVAL);
	assert_int_equal(km_policy_place(&c, &st, s, 2, 3, -1, mv, 4, &nb), -EINVAL);
	assert_int_equal(km_policy_place(&c, NULL, s, 2, 3, 0.25, mv, 4, &nb), -EINVAL);
	c.ratio = 1;
	assert_int_equal(km_policy_place(&c, &st, s, 2, 3, 0.25, mv, 4, &nb), -EINVAL);
	c = place_conf;
	c.hysteresis = 0;
	assert_int_equal(km_policy_place(&c, &st, s, 2, 3, 0.25, mv, 4, &nb), -EINVAL);
	c = place_conf;
	c.moves_per_s = 0;
	assert_int_equal(km_policy_place(&c, &st, s, 2, 3, 0.25, mv, 4, &nb), -EINVAL);
	assert_int_equal(km_policy_place(&place_conf, &st, s, 2, 3, 0.25, mv, 4, &nb), 0);
	assert_int_equal(km_policy_place_new(l, 4, 5), 1);
	assert_int_equal(km_policy_place_new(l, 1, 5), 0);
	assert_int_equal(km_policy_place_new(NULL, 4, 5), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_hysteresis),
		cmocka_unit_test(test_split_hottest),
		cmocka_unit_test(test_single_hot_key),
		cmocka_unit_test(test_split_limits),
		cmocka_unit_test(test_merge),
		cmocka_unit_test(test_merge_floor),
		cmocka_unit_test(test_disabled),
		cmocka_unit_test(test_no_oscillation),
		cmocka_unit_test(test_tiers),
		cmocka_unit_test(test_compaction),
		cmocka_unit_test(test_pinned),
		cmocka_unit_test(test_backlog_full_bursts),
		cmocka_unit_test(test_backlog_burst_change),
		cmocka_unit_test(test_backlog_off),
		cmocka_unit_test(test_backlog_depth_known),
		cmocka_unit_test(test_backlog_watermark),
		cmocka_unit_test(test_backlog_queue),
		cmocka_unit_test(test_place_balanced),
		cmocka_unit_test(test_place_hysteresis),
		cmocka_unit_test(test_place_converges),
		cmocka_unit_test(test_place_bounded),
		cmocka_unit_test(test_place_no_oscillation),
		cmocka_unit_test(test_place_limits),
		cmocka_unit_test(test_place_args),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
