/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Prefetch evaluator tests: its SIEVE model evicts exactly as lib/cache does (same hits on
 * random traces, entries of equal size), a sequential trace is almost all hits with
 * prefetch and none without, a prefetch that is still in flight counts late, not a hit, and
 * uniform random keys keep the hit ratio of no prefetch with almost no reads.
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

#include <km_cache.h>
#include <km_prefsim.h>
#include <km_trace.h>
#include <km_workload.h>

#define KLEN 12

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

/* A GET-only trace over keys "k/%010u" (all KLEN bytes), key ids = numbers. */
static struct km_trace *
mk_trace(size_t nb_keys, size_t n, const uint32_t *ids)
{
	struct km_trace *t = calloc(1, sizeof(*t));

	t->keys = calloc(nb_keys, sizeof(*t->keys));
	t->arena = calloc(nb_keys, KLEN + 1);
	t->recs = calloc(n, sizeof(*t->recs));
	t->nb_keys = nb_keys;
	t->nb_recs = n;
	for (size_t i = 0; i < nb_keys; i++) {
		snprintf(t->arena + i * (KLEN + 1), KLEN + 1, "k/%010zu", i);
		t->keys[i].key = t->arena + i * (KLEN + 1);
		t->keys[i].len = KLEN;
	}
	for (size_t i = 0; i < n; i++) {
		t->recs[i].key_id = ids[i];
		t->recs[i].op = KM_WL_GET;
		t->recs[i].ts_us = i;
	}
	return t;
}

static void
free_trace(struct km_trace *t)
{
	free(t->keys);
	free(t->arena);
	free(t->recs);
	free(t);
}

static void
test_sieve_matches_cache(void **state)
{
	const size_t nb_keys = 500, n = 20000;
	uint32_t *ids = malloc(n * sizeof(*ids));
	uint64_t seed = 3, cap = 64, hits = 0;
	struct km_sim_result r;
	struct km_cache *c;
	struct km_trace *t;
	uint8_t val[8] = {0};

	(void)state;
	/* Skewed so that the visited bits matter. */
	for (size_t i = 0; i < n; i++)
		ids[i] = (uint32_t)(rnd(&seed) % 8 < 5 ? rnd(&seed) % 40 : rnd(&seed) % nb_keys);
	t = mk_trace(nb_keys, n, ids);
	assert_int_equal(km_sim_sieve(t, cap, &r), 0);
	assert_int_equal(
		km_cache_create(cap * (KM_CACHE_ENTRY_OVERHEAD + KLEN + sizeof(val)), &c), 0);
	for (size_t i = 0; i < n; i++) {
		struct km_key k = {.data = (const uint8_t *)t->keys[ids[i]].key,
			.len = KLEN,
			.hash = ids[i] * 0x9e3779b97f4a7c15ULL};
		struct km_value_ref v;

		if (km_cache_get(c, &k, 0, &v) == 0)
			hits++;
		else
			assert_int_equal(km_cache_put(c, &k, 0, val, sizeof(val), 1, 0), 0);
	}
	assert_int_equal(r.hits, hits);
	assert_int_equal(r.gets, n);
	km_cache_destroy(c);
	free_trace(t);
	free(ids);
}

static void
test_sequential(void **state)
{
	const size_t nb_keys = 20000, n = 20000;
	uint32_t *ids = malloc(n * sizeof(*ids));
	struct km_prefsim_params p = {.capacity = 200,
		.models = KM_PREDICT_ALL,
		.mem_bytes = 4u << 20,
		.insert_visited = 1};
	struct km_prefsim_result r;
	struct km_trace *t;

	(void)state;
	for (size_t i = 0; i < n; i++)
		ids[i] = (uint32_t)i;
	t = mk_trace(nb_keys, n, ids);
	assert_int_equal(km_prefsim_run(t, &p, &r), 0);
	assert_int_equal(r.hits_off, 0);
	assert_true(r.hit_ratio > 0.99);
	assert_int_equal(r.all.late, 0);
	assert_true(r.accuracy > 0.95);
	assert_true(r.model[KM_PREDICT_STRIDE].used > n * 9 / 10);

	/* Prefetches take 32 requests: the distance grows to cover them; few are late. */
	p.latency = 32;
	assert_int_equal(km_prefsim_run(t, &p, &r), 0);
	assert_true(r.hit_ratio > 0.95);
	assert_true(r.all.late > 0);
	assert_true(r.all.late < r.all.used / 10);
	free_trace(t);
	free(ids);
}

static void
test_uniform_no_harm(void **state)
{
	const size_t nb_keys = 50000, n = 200000;
	uint32_t *ids = malloc(n * sizeof(*ids));
	struct km_prefsim_params p = {
		.capacity = 1000, .models = KM_PREDICT_ALL, .mem_bytes = 4u << 20};
	struct km_prefsim_result r;
	struct km_trace *t;
	uint64_t seed = 11;

	(void)state;
	for (size_t i = 0; i < n; i++)
		ids[i] = (uint32_t)(rnd(&seed) % nb_keys);
	t = mk_trace(nb_keys, n, ids);
	assert_int_equal(km_prefsim_run(t, &p, &r), 0);
	assert_true(r.hit_ratio > r.hit_ratio_off - 0.001);
	assert_true(r.all.issued + r.all.absent < (r.gets - r.hits_off) / 50);
	free_trace(t);
	free(ids);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sieve_matches_cache),
		cmocka_unit_test(test_sequential),
		cmocka_unit_test(test_uniform_no_harm),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
