/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * lib/predict tests on synthetic sequences with known answers: a chain (successor), a
 * stride with zero padding and a carry at a learned modulus, a template learned from other
 * sessions and applied to a new entity, decay after the pattern changes, the ensemble's
 * gating and merging, the memory cap under a flood of distinct keys; the stream detector's
 * depth growth and shrink and its latency distance; the scheduler's order, filter, budget,
 * watermark, deadline, and AIMD converging down on random outcomes and up on good ones.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <km_pfsched.h>
#include <km_predict.h>
#include <km_stream.h>

#define PMAX 16

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static uint64_t now_ns;

static int
obs(struct km_predict *pr, const char *key, uint64_t session, struct km_prediction *out)
{
	struct km_access a = {
		.key = (const uint8_t *)key,
		.len = (uint16_t)strlen(key),
		.session = session,
		.stream = 7,
		.op = KM_PREDICT_GET,
		.t_ns = now_ns += 1000,
	};
	int n = km_predict_observe(pr, &a, out, PMAX);

	assert_true(n >= 0);
	return n;
}

/* Index of key among the predictions from model (any model if model < 0), -1 if absent. */
static int
find(const struct km_prediction *p, int n, const char *key, int model)
{
	for (int i = 0; i < n; i++)
		if (p[i].len == strlen(key) && memcmp(p[i].key, key, p[i].len) == 0 &&
			(model < 0 || p[i].model == model))
			return i;
	return -1;
}

static struct km_predict *
mk(uint32_t models, uint32_t half_life)
{
	struct km_predict_params p = {
		.mem_bytes = 4u << 20, .models = models, .half_life = half_life};
	struct km_predict *pr;

	assert_int_equal(km_predict_create(&p, &pr), 0);
	return pr;
}

static void
test_chain(void **state)
{
	struct km_prediction out[PMAX];
	const char *chain[] = {"alpha", "bravo", "charlie", "delta", "echo"};
	struct km_predict *pr = mk(1u << KM_PREDICT_SUCC, 0);
	int n;

	(void)state;
	for (int r = 0; r < 20; r++)
		for (int i = 0; i < 5; i++)
			obs(pr, chain[i], 3, out);
	for (int i = 0; i < 4; i++) {
		n = obs(pr, chain[i], 3, out);
		assert_true(n >= 1);
		assert_int_equal(find(out, n, chain[i + 1], KM_PREDICT_SUCC), 0);
		assert_true(out[0].conf > 0 && out[0].conf <= 1);
		assert_int_equal(out[0].hash, km_predict_hash(out[0].key, out[0].len));
	}
	/* The chain is per session: another session's last key does not link to it. */
	n = obs(pr, "zulu", 4, out);
	n = obs(pr, "alpha", 4, out);
	assert_true(find(out, n, "bravo", -1) == 0);
	n = obs(pr, "zulu", 4, out);
	assert_int_equal(find(out, n, "alpha", -1), 0); /* zulu -> alpha, once */
	km_predict_destroy(pr);
}

/* The strongest learned transitions: successors and templates, strongest first. */
static void
test_top(void **state)
{
	struct km_predict_transition t[8];
	struct km_prediction out[PMAX];
	struct km_predict *pr = mk((1u << KM_PREDICT_SUCC) | (1u << KM_PREDICT_TEMPLATE), 0);
	char a[32], b[32];
	unsigned n, i;
	int seen_tpl = 0, seen_succ = 0;

	(void)state;
	assert_int_equal(km_predict_top(pr, t, 8), 0);
	/* alpha -> bravo 30 times, alpha -> charlie 10 times (one session each pass). */
	for (int r = 0; r < 40; r++) {
		obs(pr, "alpha", 1000 + (uint32_t)r, out);
		obs(pr, r % 4 == 3 ? "charlie" : "bravo", 1000 + (uint32_t)r, out);
	}
	/* u<N>/cart -> u<N>/checkout for 20 users: one template transition. */
	for (int u = 0; u < 20; u++) {
		snprintf(a, sizeof(a), "u%d/cart", u);
		snprintf(b, sizeof(b), "u%d/checkout", u);
		obs(pr, a, 2000 + (uint32_t)u, out);
		obs(pr, b, 2000 + (uint32_t)u, out);
	}
	n = km_predict_top(pr, t, 8);
	assert_true(n >= 3);
	for (i = 0; i < n; i++) {
		if (i > 0)
			assert_true(t[i - 1].count >= t[i].count);
		if (t[i].model == KM_PREDICT_SUCC && t[i].from_len == 5 &&
			memcmp(t[i].from, "alpha", 5) == 0 && t[i].to_len == 5 &&
			memcmp(t[i].to, "bravo", 5) == 0) {
			seen_succ = 1;
			assert_true(t[i].share > 0.6f && t[i].share < 0.9f); /* 30 of 40 */
		}
		if (t[i].model == KM_PREDICT_TEMPLATE && t[i].from_len == 7 &&
			memcmp(t[i].from, "u#/cart", 7) == 0 && t[i].to_len == 11 &&
			memcmp(t[i].to, "u#/checkout", 11) == 0) {
			seen_tpl = 1;
			assert_true(t[i].share > 0.9f);
		}
	}
	assert_true(seen_succ);
	assert_true(seen_tpl);
	/* max bounds the answer; NULL and 0 are refused quietly. */
	assert_int_equal(km_predict_top(pr, t, 1), 1);
	assert_int_equal(t[0].count, km_predict_top(pr, t + 1, 7) > 0 ? t[1].count : 0);
	assert_int_equal(km_predict_top(NULL, t, 8), 0);
	assert_int_equal(km_predict_top(pr, t, 0), 0);
	km_predict_destroy(pr);
}

static void
test_stride(void **state)
{
	struct km_prediction out[PMAX];
	struct km_predict *pr = mk(1u << KM_PREDICT_STRIDE, 0);
	char k[64];
	int n;

	(void)state;
	n = obs(pr, "bkt7/obj/00000120", 0, out);
	assert_int_equal(n, 0);
	n = obs(pr, "bkt7/obj/00000121", 0, out);
	assert_true(n >= 1);
	for (int i = 0; i < n; i++)
		assert_int_equal(out[i].model, KM_PREDICT_STRIDE);
	assert_true(find(out, n, "bkt7/obj/00000122", -1) >= 0);
	assert_true(find(out, n, "bkt7/obj/00000123", -1) >= 0);
	/* Later accesses return only the keys not returned before. */
	n = obs(pr, "bkt7/obj/00000122", 0, out);
	assert_int_equal(find(out, n, "bkt7/obj/00000123", -1), -1);
	for (int i = 123; i < 200; i++) {
		snprintf(k, sizeof(k), "bkt7/obj/%08d", i);
		n = obs(pr, k, 0, out);
	}
	/* Stride 3 on a plain number. */
	obs(pr, "10", 9, out);
	obs(pr, "13", 9, out);
	n = obs(pr, "16", 9, out);
	assert_true(find(out, n, "19", -1) >= 0);
	assert_int_equal(find(out, n, "17", -1), -1);
	km_predict_destroy(pr);
}

static void
test_stream_carry(void **state)
{
	struct km_stream_ctx sc;
	struct km_stream s;
	struct km_stream_key out[64];
	char k[32];
	unsigned n, total = 0;
	int seen_next_block = 0;

	(void)state;
	km_stream_ctx_init(&sc, NULL);
	km_stream_init(&s);
	for (int page = 12 * 256 + 200; page < 14 * 256 + 100; page++) {
		snprintf(k, sizeof(k), "blk%d/%d", page / 256, page % 256);
		n = km_stream_observe(&sc, &s, (const uint8_t *)k, (uint16_t)strlen(k), 0, out, 64);
		for (unsigned i = 0; i < n; i++) {
			assert_true(out[i].len < sizeof(k));
			/* Never a position past the wrap once the modulus is known. */
			if (sc.carries > 0)
				assert_false(
					memcmp(out[i].key, "blk13/256", 9) == 0 && out[i].len == 9);
			if (page < 14 * 256 && out[i].len >= 7 &&
				memcmp(out[i].key, "blk14/", 6) == 0)
				seen_next_block = 1;
		}
		total += n;
	}
	assert_int_equal(sc.carries, 1);
	assert_true(seen_next_block); /* blk13/255 -> blk14/0 before blk14 was seen */
	assert_true(s.run > 200);     /* one stream across both wraps */
	assert_true(total > 300);

	/* Without carry the stream restarts at every wrap. */
	{
		struct km_stream_params p = {.flags = KM_STREAM_NO_CARRY};

		km_stream_ctx_init(&sc, &p);
		km_stream_init(&s);
		for (int page = 12 * 256 + 250; page < 13 * 256 + 10; page++) {
			snprintf(k, sizeof(k), "blk%d/%d", page / 256, page % 256);
			km_stream_observe(
				&sc, &s, (const uint8_t *)k, (uint16_t)strlen(k), 0, out, 64);
		}
		assert_int_equal(sc.carries, 0);
		assert_true(s.run < 12);
	}
}

/* Interleaved readers of one shard keep a stream each; a single stream would restart at
 * every switch and predict nothing. */
static void
test_stream_set(void **state)
{
	struct km_stream_ctx sc;
	struct km_stream set[KM_STREAM_SET], one;
	struct km_stream_key out[64];
	unsigned slot, n, total_set = 0, total_one = 0, slots_seen = 0;
	char k[32];

	(void)state;
	km_stream_ctx_init(&sc, NULL);
	for (unsigned i = 0; i < KM_STREAM_SET; i++)
		km_stream_init(&set[i]);
	km_stream_init(&one);
	for (int i = 0; i < 60; i++) {
		/* Three listings of three buckets, round robin. */
		int b = i % 3, item = 100 * b + i / 3;

		snprintf(k, sizeof(k), "bkt%d/obj/%08d", b, item);
		n = km_stream_observe_set(&sc, set, KM_STREAM_SET, (const uint8_t *)k,
			(uint16_t)strlen(k), (uint64_t)i * 1000, &slot, out, 64);
		assert_true(slot < KM_STREAM_SET);
		slots_seen |= 1u << slot;
		for (unsigned j = 0; j < n; j++) {
			char want[32];

			/* Every prediction is ahead in the same bucket. */
			snprintf(want, sizeof(want), "bkt%d/obj/", b);
			assert_memory_equal(out[j].key, want, strlen(want));
		}
		total_set += n;
		total_one += km_stream_observe(&sc, &one, (const uint8_t *)k, (uint16_t)strlen(k),
			(uint64_t)i * 1000, out, 64);
	}
	assert_int_equal(__builtin_popcount(slots_seen), 3);
	assert_true(total_set >= 40);
	assert_int_equal(total_one, 0);

	/* A fourth and fifth reader: the one idle longest gives its slot up. */
	n = km_stream_observe_set(
		&sc, set, KM_STREAM_SET, (const uint8_t *)"x/1", 3, 100000, &slot, out, 64);
	assert_int_equal(n, 0);
	n = km_stream_observe_set(
		&sc, set, KM_STREAM_SET, (const uint8_t *)"y/1", 3, 100001, &slot, out, 64);
	assert_int_equal(n, 0);
	/* A key without digits changes nothing. */
	n = km_stream_observe_set(
		&sc, set, KM_STREAM_SET, (const uint8_t *)"nodigits", 8, 100002, &slot, out, 64);
	assert_int_equal(n, 0);
}

static void
test_stream_depth(void **state)
{
	struct km_stream_params p = {.depth_min = 4, .depth_max = 64};
	struct km_stream_ctx sc;
	struct km_stream s;
	struct km_stream_key out[256];
	char k[32];
	unsigned w0, w1, w2;

	(void)state;
	km_stream_ctx_init(&sc, &p);
	km_stream_init(&s);
	for (int i = 0; i < 3; i++) {
		snprintf(k, sizeof(k), "f/%d", i);
		km_stream_observe(&sc, &s, (const uint8_t *)k, (uint16_t)strlen(k), 0, out, 256);
	}
	w0 = km_stream_window(&sc, &s);
	assert_int_equal(w0, 4);
	for (int i = 3; i < 200; i++) {
		snprintf(k, sizeof(k), "f/%d", i);
		km_stream_observe(&sc, &s, (const uint8_t *)k, (uint16_t)strlen(k), 0, out, 256);
	}
	w1 = km_stream_window(&sc, &s);
	assert_int_equal(w1, 64); /* grew with the run up to depth_max */
	for (int i = 0; i < 20; i++)
		km_stream_feedback(&sc, &s, KM_STREAM_UNUSED);
	w2 = km_stream_window(&sc, &s);
	assert_true(w2 < w1 / 2);
	assert_true(w2 >= 4);

	/* Distance: latency 10 us, one access every 1 us: 10 more keys ahead. */
	p.latency_ns = 10000;
	km_stream_ctx_init(&sc, &p);
	km_stream_init(&s);
	for (int i = 0; i < 5; i++) {
		snprintf(k, sizeof(k), "f/%d", i);
		km_stream_observe(&sc, &s, (const uint8_t *)k, (uint16_t)strlen(k),
			1000 * (uint64_t)(i + 1), out, 256);
	}
	assert_int_equal(km_stream_window(&sc, &s), 4 + 10);
	km_stream_feedback(&sc, &s, KM_STREAM_LATE);
	assert_int_equal(km_stream_window(&sc, &s), 4 + 10 + 1);
}

static void
test_template(void **state)
{
	struct km_prediction out[PMAX];
	struct km_predict *pr = mk(1u << KM_PREDICT_TEMPLATE, 0);
	char k[64];
	int n;

	(void)state;
	for (int u = 1; u <= 40; u++) {
		snprintf(k, sizeof(k), "user%d/profile", u);
		obs(pr, k, (uint64_t)u, out);
		snprintf(k, sizeof(k), "user%d/cart", u);
		obs(pr, k, (uint64_t)u, out);
		snprintf(k, sizeof(k), "user%d/checkout", u);
		obs(pr, k, (uint64_t)u, out);
	}
	/* A user and a session never seen. */
	n = obs(pr, "user777/profile", 1000, out);
	assert_int_equal(find(out, n, "user777/cart", KM_PREDICT_TEMPLATE), 0);
	n = obs(pr, "user777/cart", 1000, out);
	assert_int_equal(find(out, n, "user777/checkout", KM_PREDICT_TEMPLATE), 0);
	/* Zero padding of the entity is the key's own. */
	n = obs(pr, "user0042/profile", 1001, out);
	assert_true(find(out, n, "user0042/cart", -1) >= 0);
	km_predict_destroy(pr);
}

static void
test_decay(void **state)
{
	struct km_prediction out[PMAX];
	struct km_predict *pr = mk(1u << KM_PREDICT_SUCC, 64);
	int n;

	(void)state;
	for (int i = 0; i < 300; i++) {
		obs(pr, "A", 1, out);
		obs(pr, "B", 1, out);
	}
	n = obs(pr, "A", 1, out);
	assert_int_equal(find(out, n, "B", -1), 0);
	obs(pr, "X", 1, out);
	/* The pattern changes: A is now followed by C. */
	for (int i = 0; i < 300; i++) {
		obs(pr, "A", 1, out);
		obs(pr, "C", 1, out);
	}
	n = obs(pr, "A", 1, out);
	assert_int_equal(find(out, n, "C", -1), 0);
	/* B's count decayed below the minimum share: no longer predicted at all. */
	assert_int_equal(find(out, n, "B", -1), -1);
	km_predict_destroy(pr);
}

static void
test_ensemble(void **state)
{
	struct km_prediction out[PMAX];
	struct km_predict_stats st;
	struct km_predict *pr = mk(KM_PREDICT_ALL & ~(1u << KM_PREDICT_STRIDE), 0);
	float c0, c1;
	int n, i;

	(void)state;
	/* o1/a -> o1/b both as successor and as parts of one entity: one merged prediction. */
	for (int r = 0; r < 10; r++) {
		obs(pr, "o1/a", 0, out);
		obs(pr, "o1/b", 0, out);
		obs(pr, "zz", 0, out);
	}
	n = obs(pr, "o1/a", 0, out);
	i = find(out, n, "o1/b", -1);
	assert_true(i >= 0);
	assert_int_equal(find(out + i + 1, n - i - 1, "o1/b", -1), -1);
	c0 = out[i].conf;
	assert_true(c0 > km_predict_confidence(pr, out[i].src));

	/* A source issued often and never used falls below the floor and stops issuing. */
	for (int r = 0; r < 100; r++)
		km_predict_feedback(pr, KM_PREDICT_SRC(KM_PREDICT_SUCC, 3), KM_PREDICT_ISSUED);
	for (int r = 0; r < 100; r++)
		km_predict_feedback(pr, KM_PREDICT_SRC(KM_PREDICT_ENTITY, 2), KM_PREDICT_ISSUED);
	km_predict_stats(pr, &st);
	c1 = km_predict_confidence(pr, KM_PREDICT_SRC(KM_PREDICT_SUCC, 3));
	assert_true(c1 < 0.01f);
	n = obs(pr, "o1/a", 0, out);
	for (i = 0; i < n; i++)
		assert_true(out[i].src != KM_PREDICT_SRC(KM_PREDICT_SUCC, 3));
	/* Used feedback raises a source's confidence. */
	for (int r = 0; r < 100; r++) {
		km_predict_feedback(pr, KM_PREDICT_SRC(KM_PREDICT_COACC, 1), KM_PREDICT_ISSUED);
		km_predict_feedback(pr, KM_PREDICT_SRC(KM_PREDICT_COACC, 1), KM_PREDICT_USED);
	}
	assert_true(km_predict_confidence(pr, KM_PREDICT_SRC(KM_PREDICT_COACC, 1)) > 0.95f);
	assert_int_equal(km_predict_feedback(pr, KM_PREDICT_NB_SRC, KM_PREDICT_USED), -EINVAL);
	km_predict_destroy(pr);
}

static void
test_memory_cap(void **state)
{
	struct km_predict_params p = {.mem_bytes = KM_PREDICT_MEM_MIN};
	struct km_prediction out[PMAX];
	struct km_predict_stats st;
	struct km_predict *pr;
	uint64_t seed = 42;
	char k[48];
	int n;

	(void)state;
	assert_int_equal(km_predict_create(&p, &pr), 0);
	for (int i = 0; i < 200000; i++) {
		snprintf(k, sizeof(k), "flood/%016llx", (unsigned long long)rnd(&seed));
		obs(pr, k, (uint64_t)(i % 1000) + 1, out);
	}
	km_predict_stats(pr, &st);
	assert_true(st.mem_bytes <= KM_PREDICT_MEM_MIN);
	assert_true(st.tracked_max > 100);
	assert_true(st.key_replaced > 190000);
	/* Still learns: a fresh chain repeated a few times. */
	for (int r = 0; r < 5; r++) {
		obs(pr, "chain/x", 5000, out);
		obs(pr, "chain/y", 5000, out);
	}
	n = obs(pr, "chain/x", 5000, out);
	assert_true(find(out, n, "chain/y", -1) >= 0);
	km_predict_destroy(pr);
	p.mem_bytes = KM_PREDICT_MEM_MIN - 1;
	assert_int_equal(km_predict_create(&p, &pr), -EINVAL);
}

static void
test_models_parse(void **state)
{
	uint32_t m;

	(void)state;
	assert_int_equal(km_predict_models_parse("succ,stride", &m), 0);
	assert_int_equal(m, (1u << KM_PREDICT_SUCC) | (1u << KM_PREDICT_STRIDE));
	assert_int_equal(km_predict_models_parse("all", &m), 0);
	assert_int_equal(m, KM_PREDICT_ALL);
	assert_int_equal(km_predict_models_parse("succ,bogus", &m), -EINVAL);
	assert_string_equal(km_predict_model_name(KM_PREDICT_TEMPLATE), "template");
}

static struct km_prediction
pred(const char *key, float conf)
{
	struct km_prediction p = {.conf = conf, .len = (uint16_t)strlen(key)};

	memcpy(p.key, key, p.len);
	p.hash = km_predict_hash(p.key, p.len);
	return p;
}

static void
test_sched_queue(void **state)
{
	struct km_pfsched_params pp = {.nb_targets = 2, .inflight_init = 2, .deadline_ns = 100};
	struct km_pfsched_cmd cmd[8];
	struct km_pfsched_stats st;
	struct km_prediction p;
	struct km_pfsched *s;
	unsigned n;

	(void)state;
	assert_int_equal(km_pfsched_create(&pp, &s), 0);
	p = pred("low", 0.1f);
	assert_int_equal(km_pfsched_push(s, &p, 0, 0), 0); /* below the 0.3 threshold */
	p = pred("a", 0.5f);
	assert_int_equal(km_pfsched_push(s, &p, 0, 0), 1);
	assert_int_equal(km_pfsched_push(s, &p, 0, 0), 0); /* filtered: already pushed */
	p = pred("b", 0.9f);
	assert_int_equal(km_pfsched_push(s, &p, 0, 0), 1);
	p = pred("c", 0.7f);
	assert_int_equal(km_pfsched_push(s, &p, 0, 0), 1);
	p = pred("d", 0.8f);
	assert_int_equal(km_pfsched_push(s, &p, 1, 0), 1);
	assert_int_equal(km_pfsched_push(s, &p, 2, 0), -EINVAL);
	/* Best first, at most 2 in flight per target. */
	n = km_pfsched_pop(s, 10, cmd, 8);
	assert_int_equal(n, 3);
	assert_memory_equal(cmd[0].key, "b", 1);
	assert_memory_equal(cmd[1].key, "d", 1);
	assert_memory_equal(cmd[2].key, "c", 1);
	assert_int_equal(km_pfsched_pop(s, 10, cmd, 8), 0); /* "a" waits for the budget */
	/* In flight as counted by the owner (completions may be lost): still 2, then 1. */
	km_pfsched_inflight(s, 0, 2);
	assert_int_equal(km_pfsched_pop(s, 15, cmd, 8), 0);
	km_pfsched_inflight(s, 0, 1);
	n = km_pfsched_pop(s, 20, cmd, 8);
	assert_int_equal(n, 1);
	assert_memory_equal(cmd[0].key, "a", 1);
	/* Deadline: a prediction queued too long is stale. */
	km_pfsched_done(s, 0);
	km_pfsched_done(s, 0);
	p = pred("e", 0.9f);
	km_pfsched_push(s, &p, 0, 30);
	assert_int_equal(km_pfsched_pop(s, 200, cmd, 8), 0);
	/* Demand first: a target above its watermark drops its prefetches. */
	km_pfsched_watermark(s, 1, 1);
	p = pred("f", 0.9f);
	km_pfsched_push(s, &p, 1, 300);
	assert_int_equal(km_pfsched_pop(s, 300, cmd, 8), 0);
	km_pfsched_stats(s, &st);
	assert_int_equal(st.below_threshold, 1);
	assert_int_equal(st.filtered, 1);
	assert_int_equal(st.stale, 1);
	assert_int_equal(st.dropped_watermark, 1);
	assert_int_equal(st.issued, 4);
	km_pfsched_destroy(s);
}

static void
test_sched_bytes(void **state)
{
	struct km_pfsched_params pp = {.inflight_init = 100,
		.bytes_per_s = 4096 * 1000,
		.est_bytes = 4096,
		.deadline_ns = 1000000000};
	struct km_pfsched_cmd cmd[64];
	struct km_prediction p;
	struct km_pfsched *s;
	char k[16];
	unsigned n;

	(void)state;
	assert_int_equal(km_pfsched_create(&pp, &s), 0);
	for (int i = 0; i < 60; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		p = pred(k, 0.9f);
		km_pfsched_push(s, &p, 0, 0);
	}
	/* 1000 prefetches/s with 10 ms of burst: 10 now, 10 more after 10 ms. */
	n = km_pfsched_pop(s, 1, cmd, 64);
	assert_int_equal(n, 10);
	n = km_pfsched_pop(s, 10000001, cmd, 64);
	assert_int_equal(n, 10);
	km_pfsched_destroy(s);
}

static void
test_sched_aimd(void **state)
{
	struct km_pfsched *s;
	struct km_pfsched_stats st;
	uint64_t seed = 7;

	(void)state;
	/* Random workload: almost every prefetch unused, some harm: converges down. */
	assert_int_equal(km_pfsched_create(NULL, &s), 0);
	for (int i = 0; i < 5000; i++) {
		km_pfsched_outcome(s, rnd(&seed) % 100 < 3);
		km_pfsched_evicted(s, (uint64_t)i + 1);
		if (i % 10 == 0)
			km_pfsched_demand_miss(s, (uint64_t)i + 1);
	}
	km_pfsched_stats(s, &st);
	assert_int_equal(st.budget, 1);
	assert_true(st.threshold > 0.49f);
	assert_true(st.harm > 0);
	assert_true(st.accuracy < 0.1);
	km_pfsched_destroy(s);

	/* Structured: most prefetches used: converges up. */
	assert_int_equal(km_pfsched_create(NULL, &s), 0);
	for (int i = 0; i < 5000; i++) {
		km_pfsched_outcome(s, rnd(&seed) % 100 < 85);
		if (i % 4 == 0)
			km_pfsched_demand_miss(s, 0xdead0000u + (uint64_t)i);
	}
	km_pfsched_stats(s, &st);
	assert_true(st.budget > 16 + 50);
	assert_true(st.threshold < 0.11f);
	assert_true(st.coverage > 0.7);
	km_pfsched_destroy(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chain),
		cmocka_unit_test(test_top),
		cmocka_unit_test(test_stride),
		cmocka_unit_test(test_stream_carry),
		cmocka_unit_test(test_stream_depth),
		cmocka_unit_test(test_stream_set),
		cmocka_unit_test(test_template),
		cmocka_unit_test(test_decay),
		cmocka_unit_test(test_ensemble),
		cmocka_unit_test(test_memory_cap),
		cmocka_unit_test(test_models_parse),
		cmocka_unit_test(test_sched_queue),
		cmocka_unit_test(test_sched_bytes),
		cmocka_unit_test(test_sched_aimd),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
