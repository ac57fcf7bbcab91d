/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Workload generator tests: the PRNG against reference outputs, each distribution's
 * statistics over fixed seeds (uniform and zipf by chi-square against the exact
 * probabilities), hotset before and after the move, scan and session walks, the op mix,
 * key rendering, every configuration error and determinism.
 *
 * Statistical bounds are several standard deviations wide; with fixed seeds the outcome
 * is deterministic, the width only keeps a change of seed from turning them red.
 */

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <km_workload.h>

#define SEED 0x6b6d776cULL /* "kmwl" */

static struct km_wl_conf
base_conf(enum km_wl_dist dist)
{
	struct km_wl_conf c = {
		.nb_keys = 1000,
		.key_size = 16,
		.get_ratio = 1.0,
		.dist = dist,
		.zipf_theta = 0.99,
		.hot_fraction = 0.1,
		.hot_prob = 0.9,
		.fields = 10,
		.sessions = 4,
		.seed = SEED,
	};

	return c;
}

static struct km_wl *
make(const struct km_wl_conf *c)
{
	struct km_wl *wl = NULL;
	char err[128] = "";

	assert_int_equal(km_wl_create(c, &wl, err, sizeof(err)), 0);
	assert_non_null(wl);
	return wl;
}

/* Count draws per key; every key must be in range. */
static uint64_t *
histogram(struct km_wl *wl, uint64_t nb_keys, unsigned int n, uint64_t now_us)
{
	uint64_t *cnt = calloc(nb_keys, sizeof(*cnt));
	struct km_wl_op op;
	unsigned int i;

	assert_non_null(cnt);
	for (i = 0; i < n; i++) {
		km_wl_next(wl, now_us, &op);
		assert_true(op.key < nb_keys);
		assert_int_equal(op.session, 0);
		cnt[op.key]++;
	}
	return cnt;
}

static void
test_rng_reference(void **state)
{
	/* xoshiro256** from state {1, 2, 3, 4}: the reference implementation's outputs. */
	static const uint64_t xo[] = {0x2d00, 0x0, 0x5a007080, 0x10e0000000009d80,
		0x10e0b61ce1009d80, 0x0870021ce143ad00};
	/* splitmix64 seeded with 0: its first four outputs fill the state. */
	static const uint64_t sm0[] = {0xe220a8397b1dcdafULL, 0x6e789e6aa1b965f4ULL,
		0x06c45d188009454fULL, 0xf88bb8a8724c81ecULL};
	struct km_rng r = {{1, 2, 3, 4}};
	unsigned int i;

	(void)state;
	for (i = 0; i < 6; i++)
		assert_int_equal(km_rng_next(&r), xo[i]);
	km_rng_seed(&r, 0);
	for (i = 0; i < 4; i++)
		assert_int_equal(r.s[i], sm0[i]);
	km_rng_seed(&r, 12345);
	assert_int_equal(km_rng_next(&r), 0xbe6a36374160d49bULL);
	assert_int_equal(km_rng_next(&r), 0x214aaa0637a688c6ULL);
	assert_int_equal(km_rng_next(&r), 0xf69d16de9954d388ULL);
}

static void
test_rng_ranges(void **state)
{
	unsigned int seen[3] = {0}, i;
	struct km_rng r;
	double d, sum = 0;

	(void)state;
	km_rng_seed(&r, SEED);
	for (i = 0; i < 30000; i++) {
		assert_int_equal(km_rng_below(&r, 1), 0);
		seen[km_rng_below(&r, 3)]++;
		assert_true(km_rng_below(&r, 1000000007) < 1000000007);
		d = km_rng_double(&r);
		assert_true(d >= 0.0 && d < 1.0);
		sum += d;
	}
	for (i = 0; i < 3; i++)
		assert_true(seen[i] > 9500 && seen[i] < 10500);
	assert_true(fabs(sum / 30000 - 0.5) < 0.01);
	/* Multiply-shift covers the top of the range too. */
	assert_true(km_rng_below(&r, UINT64_MAX) < UINT64_MAX);
}

static void
test_uniform_chi_square(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_UNIFORM);
	const unsigned int n = 100000;
	struct km_wl *wl;
	uint64_t *cnt, k;
	double chi2 = 0, e;

	(void)state;
	c.nb_keys = 100;
	wl = make(&c);
	cnt = histogram(wl, c.nb_keys, n, 0);
	e = (double)n / c.nb_keys;
	for (k = 0; k < c.nb_keys; k++)
		chi2 += (cnt[k] - e) * (cnt[k] - e) / e;
	/* 99 degrees of freedom: mean 99, standard deviation 14. */
	assert_true(chi2 < 99 + 6 * 14);
	assert_true(chi2 > 99 - 4 * 14);
	free(cnt);
	km_wl_free(wl);
}

/* P(rank r) = (r+1)^-theta / sum_k k^-theta, computed directly. */
static void
zipf_check(double theta, uint64_t nb_keys, unsigned int n)
{
	struct km_wl_conf c = base_conf(KM_WL_ZIPF);
	struct km_wl *wl;
	uint64_t *cnt, k;
	double norm = 0, p, e, chi2 = 0, sd, dof;

	c.nb_keys = nb_keys;
	c.zipf_theta = theta;
	wl = make(&c);
	cnt = histogram(wl, nb_keys, n, 0);
	for (k = 1; k <= nb_keys; k++)
		norm += pow((double)k, -theta);
	for (k = 0; k < nb_keys; k++) {
		p = pow((double)(k + 1), -theta) / norm;
		e = n * p;
		if (k < 10) {
			/* The head, rank by rank: within 5 standard deviations. */
			sd = sqrt(n * p * (1 - p));
			if (fabs((double)cnt[k] - e) > 5 * sd + 1)
				fail_msg("theta %g rank %llu: %llu draws, expected %.1f", theta,
					(unsigned long long)k, (unsigned long long)cnt[k], e);
		}
		chi2 += (cnt[k] - e) * (cnt[k] - e) / e;
	}
	/* The whole distribution (expected counts are >= 10 everywhere here). */
	dof = (double)nb_keys - 1;
	if (nb_keys > 1 && chi2 > dof + 6 * sqrt(2 * dof) + 10)
		fail_msg(
			"theta %g: chi-square %.1f over %.0f degrees of freedom", theta, chi2, dof);
	free(cnt);
	km_wl_free(wl);
}

static void
test_zipf_frequencies(void **state)
{
	(void)state;
	zipf_check(0.5, 1000, 200000);
	zipf_check(0.99, 1000, 200000);
	zipf_check(1.0, 1000, 200000);
	zipf_check(1.2, 1000, 200000);
	/* Small populations exercise the clamping at both ends. */
	zipf_check(1.0, 1, 1000);
	zipf_check(1.0, 2, 60000);
	zipf_check(0.5, 3, 60000);
	zipf_check(3.0, 5, 60000);
}

static void
test_zipf_large_population(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_ZIPF);
	uint64_t zero = 0, one = 0;
	struct km_wl_op op;
	struct km_wl *wl;
	unsigned int i;

	(void)state;
	c.nb_keys = 1000000000000ull;
	c.zipf_theta = 1.0;
	c.key_size = 16;
	wl = make(&c);
	for (i = 0; i < 100000; i++) {
		km_wl_next(wl, 0, &op);
		assert_true(op.key < c.nb_keys);
		zero += op.key == 0;
		one += op.key == 1;
	}
	/* theta 1: rank 0 is drawn twice as often as rank 1; H(10^12) = 28.21. */
	assert_true(fabs((double)zero / 100000 - 1 / 28.2082) < 0.004);
	assert_true(fabs((double)zero / (double)one - 2.0) < 0.3);
	km_wl_free(wl);
}

/* Share of n draws inside [lo, lo + len). */
static double
share_in(struct km_wl *wl, uint64_t now_us, unsigned int n, uint64_t lo, uint64_t len)
{
	struct km_wl_op op;
	unsigned int i, in = 0;

	for (i = 0; i < n; i++) {
		km_wl_next(wl, now_us, &op);
		in += op.key >= lo && op.key < lo + len;
	}
	return (double)in / n;
}

static void
test_hotset_moves(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_HOTSET);
	const unsigned int n = 100000;
	const double cold = 0.1 * 1000 / 9000; /* share of a cold 1000-key block */
	struct km_wl *wl;

	(void)state;
	c.nb_keys = 10000;
	c.hot_move_at_us = 5000000;
	wl = make(&c);
	/* Before the move: keys 0..999 are hot. */
	assert_true(fabs(share_in(wl, 0, n, 0, 1000) - 0.9) < 0.006);
	assert_true(fabs(share_in(wl, 4999999, n, 1000, 1000) - cold) < 0.003);
	/* From the move on: keys 1000..1999, and 0..999 are as cold as any other block. */
	assert_true(fabs(share_in(wl, 5000000, n, 1000, 1000) - 0.9) < 0.006);
	assert_true(fabs(share_in(wl, 6000000, n, 0, 1000) - cold) < 0.003);
	assert_true(fabs(share_in(wl, 6000000, n, 2000, 1000) - cold) < 0.003);
	/* Once moved, it stays. */
	assert_true(fabs(share_in(wl, 0, n, 1000, 1000) - 0.9) < 0.006);
	km_wl_free(wl);

	/* hot_move_at_us 0: never moves. */
	c.hot_move_at_us = 0;
	wl = make(&c);
	assert_true(fabs(share_in(wl, UINT64_MAX, n, 0, 1000) - 0.9) < 0.006);
	km_wl_free(wl);
}

static void
test_hotset_extremes(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_HOTSET);
	struct km_wl *wl;
	uint64_t *cnt, k;

	(void)state;
	/* hot_prob 1: exactly the hot range, both ends included, before and after the move. */
	c.hot_prob = 1.0;
	c.hot_move_at_us = 1;
	wl = make(&c);
	cnt = histogram(wl, c.nb_keys, 20000, 0);
	for (k = 0; k < c.nb_keys; k++)
		assert_true(k < 100 ? cnt[k] > 0 : cnt[k] == 0);
	free(cnt);
	cnt = histogram(wl, c.nb_keys, 20000, 1);
	for (k = 0; k < c.nb_keys; k++)
		assert_true(k >= 100 && k < 200 ? cnt[k] > 0 : cnt[k] == 0);
	free(cnt);
	km_wl_free(wl);
	c.hot_move_at_us = 0;

	/* hot_prob 0: only cold keys, and every one of them is drawn. */
	c.hot_prob = 0.0;
	wl = make(&c);
	cnt = histogram(wl, c.nb_keys, 100000, 0);
	for (k = 0; k < c.nb_keys; k++) {
		if (k < 100)
			assert_int_equal(cnt[k], 0);
		else
			assert_true(cnt[k] > 0);
	}
	free(cnt);
	km_wl_free(wl);
}

static void
test_scan_order(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_SCAN);
	uint64_t entity = 0, first_entity = 0;
	unsigned int scan, f, other = 0;
	struct km_wl_op op;
	struct km_wl *wl;

	(void)state;
	c.nb_keys = 1003; /* rounded down to 100 entities of 10 fields */
	wl = make(&c);
	assert_int_equal(km_wl_nb_keys(wl), 1000);
	for (scan = 0; scan < 500; scan++) {
		for (f = 0; f < c.fields; f++) {
			km_wl_next(wl, 0, &op);
			assert_true(op.key < 1000);
			assert_int_equal(op.key % c.fields, f);
			assert_int_equal(op.session, 0);
			if (f == 0)
				entity = op.key / c.fields;
			else
				assert_int_equal(op.key / c.fields, entity);
		}
		if (scan == 0)
			first_entity = entity;
		else
			other += entity != first_entity;
	}
	/* The next entity is drawn each time, not fixed. */
	assert_true(other > 400);
	km_wl_free(wl);

	/* The first one too: it depends on the seed. */
	other = 0;
	for (scan = 0; scan < 8; scan++) {
		c.seed = scan;
		wl = make(&c);
		km_wl_next(wl, 0, &op);
		assert_int_equal(op.key % c.fields, 0);
		if (scan == 0)
			first_entity = op.key / c.fields;
		else
			other += op.key / c.fields != first_entity;
		km_wl_free(wl);
	}
	assert_true(other >= 6);
}

#define S_FIELDS   8
#define S_SESSIONS 4

static void
test_session_walks(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_SESSION);
	uint32_t walk[S_SESSIONS][S_FIELDS], tmpl[S_FIELDS];
	unsigned int pos[S_SESSIONS] = {0}, walks = 0, switches = 0, i, j, s, prev = 0;
	uint64_t entity[S_SESSIONS] = {0};
	int have_tmpl = 0, seen;
	struct km_wl_op op;
	struct km_wl *wl;

	(void)state;
	c.fields = S_FIELDS;
	c.sessions = S_SESSIONS;
	wl = make(&c);
	assert_int_equal(km_wl_nb_keys(wl), 1000);
	for (i = 0; i < 20000; i++) {
		km_wl_next(wl, 0, &op);
		assert_true(op.session >= 1 && op.session <= S_SESSIONS);
		assert_true(op.key < 1000);
		s = op.session - 1;
		if (i > 0 && s != prev)
			switches++;
		prev = s;
		/* A walk stays on one entity. */
		if (pos[s] == 0)
			entity[s] = op.key / S_FIELDS;
		else
			assert_int_equal(op.key / S_FIELDS, entity[s]);
		walk[s][pos[s]++] = (uint32_t)(op.key % S_FIELDS);
		if (pos[s] < S_FIELDS)
			continue;
		pos[s] = 0;
		walks++;
		if (!have_tmpl) {
			/* The first complete walk is the template: a permutation of the fields. */
			memcpy(tmpl, walk[s], sizeof(tmpl));
			have_tmpl = 1;
			for (j = 0; j < S_FIELDS; j++) {
				seen = 0;
				for (unsigned int k = 0; k < S_FIELDS; k++)
					seen += tmpl[k] == j;
				assert_int_equal(seen, 1);
			}
		}
		/* Every walk of every session follows the same order. */
		assert_memory_equal(walk[s], tmpl, sizeof(tmpl));
	}
	assert_true(walks > 2400);
	/* Sessions interleave at random: 3 of 4 consecutive requests change session. */
	assert_true(switches > 20000 * 0.70 && switches < 20000 * 0.80);
	km_wl_free(wl);
}

static void
test_session_template_from_seed(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_SESSION);
	uint64_t order[8][S_FIELDS];
	unsigned int seed, f, differ = 0, identity = 0;
	struct km_wl_op op;
	struct km_wl *wl;

	(void)state;
	c.fields = S_FIELDS;
	c.sessions = 1;
	for (seed = 0; seed < 8; seed++) {
		c.seed = seed;
		wl = make(&c);
		for (f = 0; f < S_FIELDS; f++) {
			km_wl_next(wl, 0, &op);
			assert_int_equal(op.session, 1);
			order[seed][f] = op.key % S_FIELDS;
		}
		/* One session: the next walk repeats the order on a new entity. */
		for (f = 0; f < S_FIELDS; f++) {
			km_wl_next(wl, 0, &op);
			assert_int_equal(op.key % S_FIELDS, order[seed][f]);
		}
		identity += memcmp(order[seed], (uint64_t[S_FIELDS]){0, 1, 2, 3, 4, 5, 6, 7},
				    sizeof(order[0])) == 0;
		if (seed > 0)
			differ += memcmp(order[seed], order[0], sizeof(order[0])) != 0;
		km_wl_free(wl);
	}
	assert_true(differ >= 6);
	assert_true(identity <= 1);
}

/* Generators of one run (--threads): the same seed, other streams: the same template
 * order, other requests; stream 0 is the seed's own. */
static void
test_streams(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_SESSION);
	unsigned int i, f, differ = 0;
	uint64_t order[3][S_FIELDS];
	struct km_wl_op op[3];
	struct km_wl *wl[3];

	(void)state;
	c.fields = S_FIELDS;
	c.sessions = 1;
	for (i = 0; i < 3; i++) {
		c.stream = i;
		wl[i] = make(&c);
		for (f = 0; f < S_FIELDS; f++) {
			km_wl_next(wl[i], 0, &op[i]);
			order[i][f] = op[i].key % S_FIELDS;
		}
	}
	assert_memory_equal(order[0], order[1], sizeof(order[0]));
	assert_memory_equal(order[0], order[2], sizeof(order[0]));
	for (i = 0; i < 3; i++)
		km_wl_free(wl[i]);
	/* Sessions numbered apart: generator i's are 4i + 1 .. 4i + 4. */
	c.sessions = 4;
	for (i = 0; i < 3; i++) {
		c.stream = i;
		c.session_base = 4 * i;
		wl[i] = make(&c);
		for (f = 0; f < 200; f++) {
			km_wl_next(wl[i], 0, &op[i]);
			assert_true(op[i].session > 4 * i && op[i].session <= 4 * i + 4);
		}
		km_wl_free(wl[i]);
	}
	c.session_base = 0;
	c = base_conf(KM_WL_UNIFORM);
	for (i = 0; i < 3; i++) {
		c.stream = i;
		wl[i] = make(&c);
	}
	for (f = 0; f < 1000; f++) {
		for (i = 0; i < 3; i++)
			km_wl_next(wl[i], 0, &op[i]);
		differ += op[0].key != op[1].key && op[1].key != op[2].key;
	}
	assert_true(differ > 900);
	for (i = 0; i < 3; i++)
		km_wl_free(wl[i]);
}

static void
test_get_ratio(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_UNIFORM);
	unsigned int i, gets = 0;
	struct km_wl_op op;
	struct km_wl *wl;

	(void)state;
	c.get_ratio = 0.0;
	wl = make(&c);
	for (i = 0; i < 10000; i++) {
		km_wl_next(wl, 0, &op);
		assert_int_equal(op.op, KM_WL_PUT);
	}
	km_wl_free(wl);

	c.get_ratio = 1.0;
	wl = make(&c);
	for (i = 0; i < 10000; i++) {
		km_wl_next(wl, 0, &op);
		assert_int_equal(op.op, KM_WL_GET);
	}
	km_wl_free(wl);

	c.get_ratio = 0.7;
	c.dist = KM_WL_SESSION; /* the mix does not depend on the distribution */
	wl = make(&c);
	for (i = 0; i < 100000; i++) {
		km_wl_next(wl, 0, &op);
		assert_true(op.op == KM_WL_GET || op.op == KM_WL_PUT);
		gets += op.op == KM_WL_GET;
	}
	assert_true(fabs(gets / 100000.0 - 0.7) < 0.008);
	km_wl_free(wl);
}

/* Render key idx into a buffer with guard bytes: exactly key_size bytes are written. */
static void
render(const struct km_wl *wl, uint64_t idx, unsigned int key_size, char *out)
{
	char buf[300];

	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(km_wl_key(wl, idx, buf), key_size);
	for (unsigned int i = key_size; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0x5a);
	memcpy(out, buf, key_size);
	out[key_size] = '\0';
}

/* Key idx renders as want, whose length is the key_size. */
static void
expect_key(const struct km_wl *wl, uint64_t idx, const char *want)
{
	char key[300];

	render(wl, idx, (unsigned int)strlen(want), key);
	assert_string_equal(key, want);
}

static void
test_flat_keys(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_ZIPF);
	char key[300];
	struct km_wl *wl;

	(void)state;
	wl = make(&c);
	expect_key(wl, 42, "k000000000000042"); /* the header's example */
	expect_key(wl, 0, "k000000000000000");
	expect_key(wl, 999, "k000000000000999");
	km_wl_free(wl);

	/* The smallest key_size that holds the largest key number. */
	c.dist = KM_WL_UNIFORM;
	c.nb_keys = 1000000;
	c.key_size = 7;
	wl = make(&c);
	expect_key(wl, 999999, "k999999");
	expect_key(wl, 5, "k000005");
	km_wl_free(wl);

	/* Every width from 1 to 33 digits, against printf's: below 8 digits and from 10^8
	 * the loop of a division per digit; otherwise eight digits at once after a padding
	 * of 0, 1 to 7 (one store overwritten by the digits), 8 or more bytes (8-byte stores,
	 * the last overlapping). */
	c.dist = KM_WL_UNIFORM;
	for (unsigned int ks = 2; ks <= 34; ks++) {
		static const uint64_t idxs[] = {0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 12345,
			123456, 9999999, 10000000, 87654321, 99999999, 100000000, 123456789};
		unsigned int digits = ks - 1;
		uint64_t nb = 1;
		char want[48];

		for (unsigned int d = 0; d < digits && d < 9; d++)
			nb *= 10;
		c.nb_keys = nb;
		c.key_size = ks;
		wl = make(&c);
		for (unsigned int i = 0; i < sizeof(idxs) / sizeof(idxs[0]) + 1; i++) {
			uint64_t idx = i < sizeof(idxs) / sizeof(idxs[0]) ? idxs[i] : nb - 1;

			if (idx >= nb)
				continue;
			snprintf(want, sizeof(want), "k%0*llu", (int)digits,
				(unsigned long long)idx);
			expect_key(wl, idx, want);
		}
		km_wl_free(wl);
	}

	c.key_size = 250;
	c.dist = KM_WL_HOTSET;
	c.nb_keys = 1000000;
	wl = make(&c);
	render(wl, 123, 250, key);
	assert_int_equal(key[0], 'k');
	assert_int_equal(strspn(key + 1, "0"), 246);
	assert_string_equal(key + 247, "123");
	km_wl_free(wl);
}

static void
test_composite_keys(void **state)
{
	struct km_wl_conf c = base_conf(KM_WL_SCAN);
	char key[300], route[300], other[300];
	uint64_t e, f;
	struct km_wl *wl;
	const char *slash;

	(void)state;
	/* 100 entities of 10 fields, 12 bytes: "e" + 9 digits + "/" + 1 digit. */
	c.key_size = 12;
	wl = make(&c);
	expect_key(wl, 42, "e000000004/2");
	expect_key(wl, 999, "e000000099/9");
	km_wl_free(wl);

	/* 1000 entities of 1000 fields: the field part is zero-padded too. */
	c.dist = KM_WL_SESSION;
	c.nb_keys = 1000000;
	c.fields = 1000;
	c.key_size = 16;
	wl = make(&c);
	expect_key(wl, 123456, "e00000000123/456");
	expect_key(wl, 7, "e00000000000/007");

	/* Routing part (up to the first '/'): the entity, shared by all of its fields. */
	for (e = 0; e < 1000; e += 111) {
		snprintf(other, sizeof(other), "e%011llu", (unsigned long long)e);
		for (f = 0; f < 1000; f += 37) {
			render(wl, e * 1000 + f, 16, key);
			slash = strchr(key, '/');
			assert_non_null(slash);
			assert_null(strchr(slash + 1, '/'));
			memcpy(route, key, (size_t)(slash - key));
			route[slash - key] = '\0';
			assert_string_equal(route, other);
			assert_int_equal(strtoull(slash + 1, NULL, 10), f);
		}
	}
	km_wl_free(wl);

	/* The smallest key_size: "e" + 1 digit + "/" + 1 digit. */
	c.nb_keys = 100;
	c.fields = 10;
	c.key_size = 4;
	wl = make(&c);
	expect_key(wl, 97, "e9/7");
	km_wl_free(wl);
}

/* km_wl_create must refuse c with -EINVAL and a message, leaving *out alone. */
static void
expect_error(const struct km_wl_conf *c, const char *what)
{
	struct km_wl *wl = NULL;
	char err[200];
	int rc;

	memset(err, 0, sizeof(err));
	rc = km_wl_create(c, &wl, err, sizeof(err));
	if (rc != -EINVAL)
		fail_msg("%s: got %d", what, rc);
	if (err[0] == '\0')
		fail_msg("%s: no message", what);
	assert_null(wl);
}

static void
test_create_errors(void **state)
{
	struct km_wl_conf c;
	struct km_wl *wl = NULL;
	char err[200], small[8];

	(void)state;
#define BAD(dist_, field_, value_)                                \
	do {                                                      \
		c = base_conf(dist_);                             \
		c.field_ = value_;                                \
		expect_error(&c, #dist_ " " #field_ " " #value_); \
	} while (0)
	BAD(KM_WL_UNIFORM, nb_keys, 0);
	BAD(KM_WL_UNIFORM, key_size, 0);
	BAD(KM_WL_UNIFORM, key_size, 251);
	BAD(KM_WL_UNIFORM, key_size, 3); /* 1000 keys need "k" + 3 digits */
	BAD(KM_WL_UNIFORM, get_ratio, -0.1);
	BAD(KM_WL_UNIFORM, get_ratio, 1.1);
	BAD(KM_WL_UNIFORM, get_ratio, NAN);
	BAD(KM_WL_UNIFORM, dist, (enum km_wl_dist)42);
	BAD(KM_WL_ZIPF, zipf_theta, 0.0);
	BAD(KM_WL_ZIPF, zipf_theta, -1.0);
	BAD(KM_WL_ZIPF, zipf_theta, NAN);
	BAD(KM_WL_ZIPF, zipf_theta, INFINITY);
	BAD(KM_WL_HOTSET, hot_fraction, 0.0);
	BAD(KM_WL_HOTSET, hot_fraction, 1.0);
	BAD(KM_WL_HOTSET, hot_fraction, NAN);
	BAD(KM_WL_HOTSET, hot_fraction, 0.0001); /* 0.1 of a key: empty hot range */
	BAD(KM_WL_HOTSET, hot_prob, -0.5);
	BAD(KM_WL_HOTSET, hot_prob, 1.5);
	BAD(KM_WL_SCAN, fields, 0);
	BAD(KM_WL_SCAN, nb_keys, 9);  /* fewer keys than one entity of 10 fields */
	BAD(KM_WL_SCAN, key_size, 4); /* 100 entities of 10 fields need "e" 2 "/" 1 */
	BAD(KM_WL_SESSION, fields, 0);
	BAD(KM_WL_SESSION, sessions, 0);
#undef BAD

	/* A moving hot range must fit twice. */
	c = base_conf(KM_WL_HOTSET);
	c.hot_fraction = 0.6;
	c.hot_move_at_us = 1000;
	expect_error(&c, "hot range cannot move");
	c.hot_fraction = 0.5;
	wl = NULL;
	assert_int_equal(km_wl_create(&c, &wl, err, sizeof(err)), 0);
	km_wl_free(wl);

	/* The header's example, word for word. */
	c = base_conf(KM_WL_UNIFORM);
	c.nb_keys = 1000000;
	c.key_size = 4;
	wl = NULL;
	assert_int_equal(km_wl_create(&c, &wl, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "key_size 4 cannot hold 1000000 keys (needs 7)");

	/* A short or absent message buffer is fine. */
	memset(small, 0x5a, sizeof(small));
	assert_int_equal(km_wl_create(&c, &wl, small, sizeof(small)), -EINVAL);
	assert_int_equal(small[sizeof(small) - 1], '\0');
	assert_int_equal(km_wl_create(&c, &wl, NULL, 0), -EINVAL);
	assert_int_equal(km_wl_create(NULL, &wl, err, sizeof(err)), -EINVAL);
	assert_null(wl);

	/* Settings of other distributions are not checked. */
	c = base_conf(KM_WL_UNIFORM);
	c.zipf_theta = -1;
	c.hot_fraction = 7;
	c.fields = 0;
	c.sessions = 0;
	assert_int_equal(km_wl_create(&c, &wl, err, sizeof(err)), 0);
	km_wl_free(wl);
	km_wl_free(NULL);
}

static void
test_determinism(void **state)
{
	const enum km_wl_dist dists[] = {
		KM_WL_UNIFORM, KM_WL_ZIPF, KM_WL_HOTSET, KM_WL_SCAN, KM_WL_SESSION};
	struct km_wl_op oa, ob, oc;
	unsigned int d, i, differ;
	struct km_wl *a, *b, *x;
	struct km_wl_conf c;

	(void)state;
	for (d = 0; d < sizeof(dists) / sizeof(dists[0]); d++) {
		c = base_conf(dists[d]);
		c.get_ratio = 0.5;
		c.hot_move_at_us = 2500;
		a = make(&c);
		b = make(&c);
		c.seed = SEED + 1;
		x = make(&c);
		differ = 0;
		for (i = 0; i < 5000; i++) {
			km_wl_next(a, i, &oa);
			km_wl_next(b, i, &ob);
			km_wl_next(x, i, &oc);
			assert_int_equal(oa.op, ob.op);
			assert_int_equal(oa.session, ob.session);
			assert_int_equal(oa.key, ob.key);
			differ += oa.key != oc.key || oa.op != oc.op;
		}
		/* Another seed, another stream. */
		assert_true(differ > 1000);
		km_wl_free(a);
		km_wl_free(b);
		km_wl_free(x);
	}
}

static void
test_dist_names(void **state)
{
	static const char *const names[] = {"uniform", "zipf", "hotset", "scan", "session"};
	enum km_wl_dist d;
	unsigned int i;

	(void)state;
	for (i = 0; i < 5; i++) {
		assert_int_equal(km_wl_dist_parse(names[i], &d), 0);
		assert_int_equal(d, (enum km_wl_dist)i);
		assert_string_equal(km_wl_dist_name(d), names[i]);
	}
	d = KM_WL_SCAN;
	assert_int_equal(km_wl_dist_parse("Zipf", &d), -EINVAL);
	assert_int_equal(km_wl_dist_parse("", &d), -EINVAL);
	assert_int_equal(km_wl_dist_parse("zipfian", &d), -EINVAL);
	assert_int_equal(d, KM_WL_SCAN);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rng_reference),
		cmocka_unit_test(test_rng_ranges),
		cmocka_unit_test(test_uniform_chi_square),
		cmocka_unit_test(test_zipf_frequencies),
		cmocka_unit_test(test_zipf_large_population),
		cmocka_unit_test(test_hotset_moves),
		cmocka_unit_test(test_hotset_extremes),
		cmocka_unit_test(test_scan_order),
		cmocka_unit_test(test_session_walks),
		cmocka_unit_test(test_session_template_from_seed),
		cmocka_unit_test(test_streams),
		cmocka_unit_test(test_get_ratio),
		cmocka_unit_test(test_flat_keys),
		cmocka_unit_test(test_composite_keys),
		cmocka_unit_test(test_create_errors),
		cmocka_unit_test(test_determinism),
		cmocka_unit_test(test_dist_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
