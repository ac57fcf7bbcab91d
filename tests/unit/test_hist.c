/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Histogram tests: the bucket layout in both directions, exact small values, the
 * relative error of percentiles against a sorted-array reference, merge, clamping and
 * saturation.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <km_hist.h>

#define SEED          0x6b6d68697374ULL /* "kmhist" */
#define NB_RANDOM     100000
#define LAST          (KM_HIST_BUCKETS - 1u)
#define PERCENTILES_N 10

/* In thousandths of a percent, so the reference computes ranks in integers. */
static const uint64_t milli_pct[PERCENTILES_N] = {
	1, 1000, 10000, 25000, 50000, 75000, 90000, 99000, 99990, 100000};

/* xorshift64*: deterministic and independent of the code under test. */
static uint64_t
rnd_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

/* Log-uniform over 1 .. 2^40: every group of buckets gets values. */
static uint64_t
rnd_value(uint64_t *s)
{
	unsigned int e = (unsigned int)(rnd_next(s) % 41);
	uint64_t v = rnd_next(s);

	return e == 0 ? 1 : (v >> (64 - e)) | (1ull << (e - 1));
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The definition of the header: the value of rank ceil(p/100 * n) in sorted order. */
static uint64_t
ref_percentile(const uint64_t *sorted, uint64_t n, uint64_t mpct)
{
	uint64_t rank = (mpct * n + 99999) / 100000;

	return sorted[rank == 0 ? 0 : rank - 1];
}

static void
test_bucket_layout(void **state)
{
	unsigned int i;
	uint64_t lo, hi;

	(void)state;
	assert_int_equal(km_hist_bucket_low(0), 0);
	for (i = 0; i < KM_HIST_BUCKETS; i++) {
		lo = km_hist_bucket_low(i);
		hi = km_hist_bucket_high(i);
		assert_true(lo <= hi);
		assert_int_equal(km_hist_bucket_of(lo), i);
		assert_int_equal(km_hist_bucket_of(hi), i);
		if (i + 1 < KM_HIST_BUCKETS) {
			/* Contiguous and increasing: no value falls between two buckets. */
			assert_int_equal(km_hist_bucket_low(i + 1), hi + 1);
			assert_int_equal(km_hist_bucket_of(hi + 1), i + 1);
		}
		if (i < 2 * KM_HIST_SUB)
			/* Below 2^(SUB_BITS+1) every value has its own bucket. */
			assert_int_equal(lo, hi);
		else if (i < LAST)
			/* Relative width at most 2^-SUB_BITS. */
			assert_true((hi - lo + 1) * KM_HIST_SUB <= lo);
	}
	assert_int_equal(km_hist_bucket_high(LAST), UINT64_MAX);
}

static void
test_bucket_of_powers(void **state)
{
	unsigned int e;

	(void)state;
	for (e = 1; e <= KM_HIST_MAX_EXP; e++) {
		uint64_t v = 1ull << e;

		assert_true(km_hist_bucket_of(v - 1) < km_hist_bucket_of(v));
		assert_int_equal(km_hist_bucket_low(km_hist_bucket_of(v)), v);
	}
	/* The first group of exponent MAX_EXP is still below the last bucket. */
	assert_int_equal(km_hist_bucket_of(1ull << KM_HIST_MAX_EXP), LAST - (KM_HIST_SUB - 1));
}

static void
test_huge_values_clamp(void **state)
{
	struct km_hist h;

	(void)state;
	assert_int_equal(km_hist_bucket_of((1ull << (KM_HIST_MAX_EXP + 1)) - 1), LAST);
	assert_int_equal(km_hist_bucket_of(1ull << (KM_HIST_MAX_EXP + 1)), LAST);
	assert_int_equal(km_hist_bucket_of(1ull << 63), LAST);
	assert_int_equal(km_hist_bucket_of(UINT64_MAX), LAST);

	km_hist_init(&h);
	km_hist_add(&h, 1ull << 50);
	km_hist_add(&h, UINT64_MAX);
	assert_int_equal(h.b[LAST], 2);
	/* The last bucket is unbounded: the reported value is clamped to the largest seen. */
	assert_int_equal(km_hist_percentile(&h, 100), UINT64_MAX);
	assert_int_equal(km_hist_percentile(&h, 50), UINT64_MAX);
	assert_int_equal(h.min, 1ull << 50);
}

static void
test_exact_small_values(void **state)
{
	struct km_hist h;
	uint64_t v;
	unsigned int k;

	(void)state;
	/* Values 0..63 have a bucket each, so every rank is reported exactly. */
	km_hist_init(&h);
	for (v = 0; v < 2 * KM_HIST_SUB; v++)
		km_hist_add(&h, v);
	for (k = 1; k <= 64; k++)
		assert_int_equal(km_hist_percentile(&h, k * 100.0 / 64), k - 1);
	assert_int_equal(km_hist_percentile(&h, 50), 31);
	assert_int_equal(h.count, 64);
	assert_int_equal(h.sum, 63 * 64 / 2);
	assert_int_equal(h.min, 0);
	assert_int_equal(h.max, 63);
	assert_true(km_hist_mean(&h) == 31.5);
}

static void
test_random_vs_reference(void **state)
{
	uint64_t *vals, s = SEED, ref, got;
	struct km_hist h;
	unsigned int i;

	(void)state;
	vals = malloc(NB_RANDOM * sizeof(*vals));
	assert_non_null(vals);
	km_hist_init(&h);
	for (i = 0; i < NB_RANDOM; i++) {
		vals[i] = rnd_value(&s);
		km_hist_add(&h, vals[i]);
	}
	qsort(vals, NB_RANDOM, sizeof(*vals), cmp_u64);
	for (i = 0; i < PERCENTILES_N; i++) {
		ref = ref_percentile(vals, NB_RANDOM, milli_pct[i]);
		got = km_hist_percentile(&h, milli_pct[i] / 1000.0);
		/* The upper bound of the value's bucket: never below, at most 1/32 above. */
		assert_true(got >= ref);
		assert_true(got - ref <= ref / KM_HIST_SUB);
		assert_true(got <= h.max);
	}
	assert_int_equal(km_hist_percentile(&h, 100), vals[NB_RANDOM - 1]);
	assert_int_equal(h.min, vals[0]);
	assert_int_equal(h.max, vals[NB_RANDOM - 1]);
	free(vals);
}

static void
test_one_value(void **state)
{
	const uint64_t v = 123456789;
	struct km_hist h;
	unsigned int i;

	(void)state;
	km_hist_init(&h);
	km_hist_add(&h, v);
	for (i = 0; i < PERCENTILES_N; i++)
		assert_int_equal(km_hist_percentile(&h, milli_pct[i] / 1000.0), v);
	assert_true(km_hist_mean(&h) == (double)v);
	assert_int_equal(h.count, 1);
	assert_int_equal(h.sum, v);
	assert_int_equal(h.min, v);
	assert_int_equal(h.max, v);
}

static void
test_empty(void **state)
{
	struct km_hist h;
	unsigned int i;

	(void)state;
	memset(&h, 0xa5, sizeof(h));
	km_hist_init(&h);
	assert_int_equal(h.count, 0);
	assert_int_equal(h.sum, 0);
	assert_int_equal(h.min, UINT64_MAX);
	assert_int_equal(h.max, 0);
	for (i = 0; i < KM_HIST_BUCKETS; i++)
		assert_int_equal(h.b[i], 0);
	for (i = 0; i < PERCENTILES_N; i++)
		assert_int_equal(km_hist_percentile(&h, milli_pct[i] / 1000.0), 0);
	assert_true(km_hist_mean(&h) == 0.0);
}

static void
test_percentile_ranks(void **state)
{
	struct km_hist h;
	uint64_t v;

	(void)state;
	/* Values 1..100: percentile p is the value ceil(p). Values from 64 up share buckets
	 * two wide, so only bucket tops (99 of [98, 99]) and the maximum are exact there. */
	km_hist_init(&h);
	for (v = 1; v <= 100; v++)
		km_hist_add(&h, v);
	assert_int_equal(km_hist_percentile(&h, 1), 1);
	assert_int_equal(km_hist_percentile(&h, 0.5), 1);
	assert_int_equal(km_hist_percentile(&h, 50), 50);
	assert_int_equal(km_hist_percentile(&h, 50.5), 51);
	/* 0.07 * 100 is 7.000000000000001 in doubles: the rank must still be 7. */
	assert_int_equal(km_hist_percentile(&h, 7), 7);
	/* 99 * 100 / 100 is exactly 99: no rounding up to rank 100. */
	assert_int_equal(km_hist_percentile(&h, 99), 99);
	assert_int_equal(km_hist_percentile(&h, 100), 100);
}

static void
test_merge_equals_add_all(void **state)
{
	struct km_hist a, b, all, empty;
	uint64_t s = SEED + 1, v;
	unsigned int i;

	(void)state;
	km_hist_init(&a);
	km_hist_init(&b);
	km_hist_init(&all);
	km_hist_init(&empty);
	for (i = 0; i < 20000; i++) {
		v = rnd_value(&s);
		km_hist_add(i % 3 == 0 ? &a : &b, v);
		km_hist_add(&all, v);
	}
	km_hist_merge(&a, &b);
	assert_memory_equal(&a, &all, sizeof(all));
	/* Merging an empty histogram changes nothing; merging into one copies. */
	km_hist_merge(&a, &empty);
	assert_memory_equal(&a, &all, sizeof(all));
	km_hist_merge(&empty, &all);
	assert_memory_equal(&empty, &all, sizeof(all));
}

static void
test_sum_saturates(void **state)
{
	struct km_hist h, g;

	(void)state;
	km_hist_init(&h);
	km_hist_add(&h, UINT64_MAX - 10);
	assert_int_equal(h.sum, UINT64_MAX - 10);
	km_hist_add(&h, 100);
	assert_int_equal(h.sum, UINT64_MAX);
	km_hist_add(&h, 1);
	assert_int_equal(h.sum, UINT64_MAX);
	assert_int_equal(h.count, 3);

	km_hist_init(&g);
	km_hist_add(&g, UINT64_MAX / 2 + 1);
	km_hist_init(&h);
	km_hist_add(&h, UINT64_MAX / 2 + 1);
	km_hist_merge(&h, &g);
	assert_int_equal(h.sum, UINT64_MAX);
	assert_int_equal(h.count, 2);
}

static void
test_mean(void **state)
{
	struct km_hist h;

	(void)state;
	km_hist_init(&h);
	km_hist_add(&h, 1000);
	km_hist_add(&h, 3000);
	km_hist_add(&h, 5000);
	assert_true(km_hist_mean(&h) == 3000.0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_layout),
		cmocka_unit_test(test_bucket_of_powers),
		cmocka_unit_test(test_huge_values_clamp),
		cmocka_unit_test(test_exact_small_values),
		cmocka_unit_test(test_random_vs_reference),
		cmocka_unit_test(test_one_value),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_percentile_ranks),
		cmocka_unit_test(test_merge_equals_add_all),
		cmocka_unit_test(test_sum_saturates),
		cmocka_unit_test(test_mean),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
