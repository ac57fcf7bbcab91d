/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Log store index. km_lidx is checked against a plain reference (arrays indexed by a pool
 * of candidate hashes) over fixed seeds, with hashes crafted to share a home slot, to
 * wrap around the end of the table and to sit at slot 0, and the structural invariant of
 * linear probing checked through iteration. Targeted cases pin down backward-shift
 * deletion across the end of the table, growth, fit and the bytes per entry it gives.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <km_lidx.h>
#include <km_store.h>

static uint64_t
rng_next(uint64_t *s)
{
	/* splitmix64: tiny, deterministic, good enough to drive tests */
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t
rng_below(uint64_t *s, uint64_t n)
{
	return rng_next(s) % n;
}

static uint64_t
nb_slots(const struct km_lidx *x)
{
	return km_lidx_bytes(x) / sizeof(struct km_lidx_ent);
}

/* The home slot, as the header defines it. */
static uint64_t
home(uint64_t hash, uint64_t n)
{
	return (uint64_t)(((__uint128_t)km_scan_order(hash) * n) >> 64);
}

/* The hash whose mixed value is m: swapping the halves again. */
static uint64_t
hash_of_mixed(uint64_t m)
{
	return km_scan_order(m);
}

/* A hash whose home slot is h in a table of n slots. */
static uint64_t
hash_at(uint64_t h, uint64_t n, uint64_t delta)
{
	uint64_t m = (uint64_t)((((__uint128_t)h << 64) + n - 1) / n);

	return hash_of_mixed(m + delta);
}

/* Slot index of e (pointer arithmetic through the iteration order). */
static uint64_t
slot_of(struct km_lidx *x, const struct km_lidx_ent *e)
{
	uint64_t pos = 0;
	struct km_lidx_ent *f;

	while ((f = km_lidx_next(x, &pos)) != NULL) {
		if (f == e)
			return pos - 1;
	}
	fail_msg("slot not found by iteration");
	return UINT64_MAX;
}

static struct km_lidx_ent *
insert(struct km_lidx *x, uint64_t hash, uint64_t loc, uint64_t version)
{
	struct km_lidx_ent *e;
	int created = -1;

	e = km_lidx_upsert(x, hash, &created);
	assert_non_null(e);
	assert_int_equal(created, 1);
	assert_int_equal(e->hash, hash);
	assert_int_equal(e->loc, 0);
	assert_int_equal(e->version, 0);
	e->loc = loc;
	e->version = version;
	return e;
}

/*
 * Every used slot must be reachable from its home through used slots, and iteration must
 * return each used slot once, in slot order. Returns the sum of displacements.
 */
static uint64_t
check_structure(struct km_lidx *x)
{
	uint64_t n = nb_slots(x), pos = 0, last = 0, count = 0, disp = 0, i, h, p;
	struct km_lidx_ent *e;
	uint8_t *used = calloc(n, 1);

	assert_non_null(used);
	while ((e = km_lidx_next(x, &pos)) != NULL) {
		p = pos - 1;
		assert_true(p < n);
		assert_true(count == 0 || p > last);
		assert_int_not_equal(e->version, 0);
		used[p] = 1;
		last = p;
		count++;
	}
	assert_null(km_lidx_next(x, &pos));
	assert_int_equal(count, km_lidx_count(x));
	assert_true(count < n);
	pos = 0;
	while ((e = km_lidx_next(x, &pos)) != NULL) {
		p = pos - 1;
		h = home(e->hash, n);
		for (i = h; i != p; i = i + 1 == n ? 0 : i + 1) {
			if (!used[i])
				fail_msg("slot %llu (home %llu) behind free slot %llu",
					(unsigned long long)p, (unsigned long long)h,
					(unsigned long long)i);
		}
		disp += p >= h ? p - h : p + n - h;
	}
	free(used);
	return disp;
}

/* ---- differential test ---- */

struct pool {
	uint64_t *hash;
	uint8_t *present;
	uint64_t *loc;
	uint64_t *version;
	uint32_t n;
	uint64_t count;
};

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void
pool_build(struct pool *p, uint64_t *s)
{
	uint64_t *sorted, base;
	uint32_t i, j;

	memset(p, 0, sizeof(*p));
	p->hash = malloc(40000 * sizeof(*p->hash));
	assert_non_null(p->hash);
	/* random hashes */
	for (i = 0; i < 30000; i++)
		p->hash[p->n++] = rng_next(s);
	/* 20 clusters of 100 adjacent mixed values: one home slot at any table size */
	for (j = 0; j < 20; j++) {
		base = rng_next(s) & ~UINT64_C(0xffff);
		for (i = 0; i < 100; i++)
			p->hash[p->n++] = hash_of_mixed(base + i);
	}
	/* home: the last slot, at any size (the cluster wraps around the end) */
	for (i = 0; i < 800; i++)
		p->hash[p->n++] = hash_of_mixed(UINT64_MAX - i);
	/* home: slot 0, including hash 0 itself (mixed value 0) */
	for (i = 0; i < 800; i++)
		p->hash[p->n++] = hash_of_mixed(i);
	/* one shard's raw hashes: top 16 bits fixed */
	for (i = 0; i < 1000; i++)
		p->hash[p->n++] = (UINT64_C(0x5a5a) << 48) | (rng_next(s) >> 16);
	sorted = malloc(p->n * sizeof(*sorted));
	assert_non_null(sorted);
	memcpy(sorted, p->hash, p->n * sizeof(*sorted));
	qsort(sorted, p->n, sizeof(*sorted), cmp_u64);
	assert_int_equal(sorted[0], 0);
	for (i = 1; i < p->n; i++)
		assert_true(sorted[i] != sorted[i - 1]);
	free(sorted);
	p->present = calloc(p->n, 1);
	p->loc = calloc(p->n, sizeof(*p->loc));
	p->version = calloc(p->n, sizeof(*p->version));
	assert_non_null(p->present);
	assert_non_null(p->loc);
	assert_non_null(p->version);
}

static void
pool_free(struct pool *p)
{
	free(p->hash);
	free(p->present);
	free(p->loc);
	free(p->version);
}

/* Full comparison: every pool hash found iff present, with its loc and version. */
static void
pool_check(struct km_lidx *x, const struct pool *p)
{
	struct km_lidx_ent *e;
	uint32_t i;

	assert_int_equal(km_lidx_count(x), p->count);
	for (i = 0; i < p->n; i++) {
		e = km_lidx_find(x, p->hash[i]);
		if (!p->present[i]) {
			if (e != NULL)
				fail_msg("hash %u found, not present", i);
			continue;
		}
		if (e == NULL)
			fail_msg("hash %u missing", i);
		assert_int_equal(e->hash, p->hash[i]);
		assert_int_equal(e->loc, p->loc[i]);
		assert_int_equal(e->version, p->version[i]);
	}
	check_structure(x);
}

static void
test_differential(void **state)
{
	static const double loads[] = {0.5, 0.8, 0.95};
	/* per phase of 50k ops: percent of upserts and removes (the rest are finds) */
	static const unsigned int mix[4][2] = {{60, 15}, {30, 50}, {55, 25}, {20, 65}};
	uint64_t s = 2024, gver = 0, grows = 0, slots;
	struct km_lidx *x;
	struct km_lidx_ent *e;
	struct pool p;
	uint32_t op, i;
	unsigned int r, ph;
	int created;

	(void)state;
	pool_build(&p, &s);
	assert_int_equal(km_lidx_create(0, &x), 0);
	for (op = 0; op < 200000; op++) {
		ph = op / 50000;
		/* half the operations on the crafted hashes, which are a tenth of the pool */
		if (rng_below(&s, 2) == 0)
			i = (uint32_t)rng_below(&s, p.n);
		else
			i = 30000 + (uint32_t)rng_below(&s, p.n - 30000);
		r = (unsigned int)rng_below(&s, 100);
		if (r < mix[ph][0]) {
			slots = nb_slots(x);
			e = km_lidx_upsert(x, p.hash[i], &created);
			assert_non_null(e);
			if (nb_slots(x) != slots) {
				assert_int_equal(nb_slots(x), slots + slots / 2);
				grows++;
			}
			assert_int_equal(created, !p.present[i]);
			assert_int_equal(e->hash, p.hash[i]);
			if (created) {
				assert_int_equal(e->version, 0);
				assert_int_equal(e->loc, 0);
				p.present[i] = 1;
				p.count++;
			} else {
				assert_int_equal(e->loc, p.loc[i]);
				assert_int_equal(e->version, p.version[i]);
			}
			e->version = p.version[i] = ++gver;
			e->loc = p.loc[i] = rng_next(&s);
		} else if (r < mix[ph][0] + mix[ph][1]) {
			e = km_lidx_find(x, p.hash[i]);
			assert_int_equal(e != NULL, p.present[i]);
			if (e != NULL) {
				km_lidx_remove(x, e);
				p.present[i] = 0;
				p.count--;
			}
		} else {
			e = km_lidx_find(x, p.hash[i]);
			assert_int_equal(e != NULL, p.present[i]);
			if (e != NULL) {
				assert_int_equal(e->loc, p.loc[i]);
				assert_int_equal(e->version, p.version[i]);
			}
		}
		assert_int_equal(km_lidx_count(x), p.count);
		assert_true(p.count < nb_slots(x));
		if (op % 10000 == 9999)
			pool_check(x, &p);
		if (op % 25000 == 24999) {
			assert_int_equal(km_lidx_fit(x, loads[(op / 25000) % 3]), 0);
			pool_check(x, &p);
		}
	}
	assert_true(grows > 3);
	pool_check(x, &p);
	km_lidx_destroy(x);
	pool_free(&p);
}

/* ---- targeted cases ---- */

/* Backward shift across the end: 16 slots, homes 14, 14, 0, 14 fill 14, 15, 0, 1. */
static void
test_remove_wrap(void **state)
{
	struct km_lidx *x;
	struct km_lidx_ent *e;
	uint64_t n, hx, hy, hz, hw;
	int created;

	(void)state;
	assert_int_equal(km_lidx_create(0, &x), 0);
	n = nb_slots(x);
	assert_int_equal(n, 16);
	hx = hash_at(14, n, 0);
	hy = hash_at(14, n, 1);
	hz = hash_at(0, n, 0);
	hw = hash_at(14, n, 2);
	assert_int_equal(home(hz, n), 0);
	assert_int_equal(home(hw, n), 14);
	insert(x, hx, 1, 1);
	insert(x, hy, 2, 2);
	insert(x, hz, 3, 3);
	insert(x, hw, 4, 4);
	assert_int_equal(slot_of(x, km_lidx_find(x, hx)), 14);
	assert_int_equal(slot_of(x, km_lidx_find(x, hy)), 15);
	assert_int_equal(slot_of(x, km_lidx_find(x, hz)), 0);
	assert_int_equal(slot_of(x, km_lidx_find(x, hw)), 1);
	/* a slot just created (version still 0) may be removed at once */
	e = km_lidx_upsert(x, hash_at(14, n, 3), &created);
	assert_int_equal(created, 1);
	assert_int_equal(e->version, 0);
	km_lidx_remove(x, e);
	assert_int_equal(km_lidx_count(x), 4);
	assert_null(km_lidx_find(x, hash_at(14, n, 3)));
	check_structure(x);

	/* y moves back to 14; z stays home at 0; w moves to 15 across the end */
	km_lidx_remove(x, km_lidx_find(x, hx));
	assert_null(km_lidx_find(x, hx));
	e = km_lidx_find(x, hy);
	assert_int_equal(slot_of(x, e), 14);
	assert_int_equal(e->loc, 2);
	e = km_lidx_find(x, hz);
	assert_int_equal(slot_of(x, e), 0);
	assert_int_equal(e->loc, 3);
	e = km_lidx_find(x, hw);
	assert_int_equal(slot_of(x, e), 15);
	assert_int_equal(e->loc, 4);
	assert_int_equal(km_lidx_count(x), 3);
	check_structure(x);

	/* a hole at 0 (home of z) with w before it: nothing after 0 moves */
	km_lidx_remove(x, km_lidx_find(x, hz));
	assert_int_equal(slot_of(x, km_lidx_find(x, hw)), 15);
	assert_int_equal(slot_of(x, km_lidx_find(x, hy)), 14);
	/* removing y pulls w back to its home */
	km_lidx_remove(x, km_lidx_find(x, hy));
	assert_int_equal(slot_of(x, km_lidx_find(x, hw)), 14);
	assert_int_equal(km_lidx_count(x), 1);
	check_structure(x);
	km_lidx_destroy(x);
}

static void
test_hash_zero(void **state)
{
	struct km_lidx *x;
	struct km_lidx_ent *e;
	uint64_t pos = 0;
	int created;

	(void)state;
	assert_int_equal(km_lidx_create(0, &x), 0);
	assert_null(km_lidx_find(x, 0));
	insert(x, 0, 77, 5);
	insert(x, UINT64_MAX, 78, 6);
	e = km_lidx_find(x, 0);
	assert_non_null(e);
	assert_int_equal(e->hash, 0);
	assert_int_equal(e->loc, 77);
	e = km_lidx_upsert(x, 0, &created);
	assert_int_equal(created, 0);
	assert_int_equal(e->version, 5);
	e = km_lidx_next(x, &pos);
	assert_non_null(e);
	e = km_lidx_next(x, &pos);
	assert_non_null(e);
	assert_null(km_lidx_next(x, &pos));
	assert_null(km_lidx_next(x, &pos));
	km_lidx_remove(x, km_lidx_find(x, 0));
	assert_null(km_lidx_find(x, 0));
	assert_non_null(km_lidx_find(x, UINT64_MAX));
	assert_int_equal(km_lidx_count(x), 1);
	km_lidx_destroy(x);
	km_lidx_destroy(NULL);
}

/* Growth by half above 7/8 keeps every entry; create(initial) does not grow before. */
static void
test_growth(void **state)
{
	struct km_lidx *x;
	uint64_t s = 99, slots, i, grows = 0, first;
	struct km_lidx_ent *e;

	(void)state;
	assert_int_equal(km_lidx_create(1000, &x), 0);
	slots = nb_slots(x);
	assert_true(slots * 7 >= 1000 * 8);
	assert_true(slots <= 1000 * 8 / 7 + 2);
	for (i = 0; i < 1000; i++)
		insert(x, rng_next(&s), i, i + 1);
	assert_int_equal(nb_slots(x), slots);
	for (i = 1000; i < 100000; i++) {
		insert(x, rng_next(&s), i, i + 1);
		if (nb_slots(x) != slots) {
			assert_int_equal(nb_slots(x), slots + slots / 2);
			/* grown just when the new entry would have passed 7/8 */
			assert_true((i + 1) * 8 > slots * 7);
			assert_true(i * 8 <= slots * 7);
			slots = nb_slots(x);
			grows++;
		}
	}
	assert_true(grows >= 8);
	assert_int_equal(km_lidx_count(x), 100000);
	s = 99;
	for (i = 0; i < 100000; i++) {
		e = km_lidx_find(x, rng_next(&s));
		assert_non_null(e);
		assert_int_equal(e->loc, i);
		assert_int_equal(e->version, i + 1);
	}
	check_structure(x);
	km_lidx_destroy(x);

	/* no size hint: starts small */
	assert_int_equal(km_lidx_create(0, &x), 0);
	first = km_lidx_bytes(x);
	assert_true(first <= 64 * sizeof(struct km_lidx_ent));
	km_lidx_destroy(x);
	assert_int_equal(km_lidx_create(UINT64_MAX, &x), -ENOMEM);
}

/* One shard's hashes share their top bits; they must still spread over the table. */
static void
test_shard_spread(void **state)
{
	struct km_lidx *x;
	uint64_t s = 5, i, disp;

	(void)state;
	assert_int_equal(km_lidx_create(0, &x), 0);
	for (i = 0; i < 100000; i++)
		insert(x, (UINT64_C(0xa7) << 56) | (rng_next(&s) >> 8), i, i + 1);
	disp = check_structure(x);
	/* linear probing at load <= 7/8 averages a few slots; crowding would be thousands */
	print_message("shard hashes: mean displacement %.2f slots\n", (double)disp / 1e5);
	assert_true(disp < 8 * 100000);
	km_lidx_destroy(x);
}

static void
test_fit(void **state)
{
	const uint64_t nb = 1000000;
	struct km_lidx *x;
	struct km_lidx_ent *e;
	uint64_t s = 3, i;
	double per;

	(void)state;
	assert_int_equal(km_lidx_create(0, &x), 0);
	for (i = 0; i < nb; i++)
		insert(x, rng_next(&s), i, i + 1);
	assert_int_equal(km_lidx_fit(x, 0.0), -EINVAL);
	assert_int_equal(km_lidx_fit(x, -0.5), -EINVAL);
	assert_int_equal(km_lidx_fit(x, 0.96), -EINVAL);
	assert_int_equal(km_lidx_fit(x, NAN), -EINVAL);
	assert_int_equal(km_lidx_fit(x, 0.8), 0);
	per = (double)km_lidx_bytes(x) / (double)km_lidx_count(x);
	print_message("fit 0.8: %.3f bytes per entry\n", per);
	assert_true(per <= 32.0);
	assert_true(per >= 29.9);
	assert_int_equal(km_lidx_count(x), nb);
	s = 3;
	for (i = 0; i < nb; i++) {
		e = km_lidx_find(x, rng_next(&s));
		assert_non_null(e);
		assert_int_equal(e->loc, i);
	}
	check_structure(x);

	/* shrink after removing most entries */
	s = 3;
	for (i = 0; i < nb - 1000; i++)
		km_lidx_remove(x, km_lidx_find(x, rng_next(&s)));
	assert_int_equal(km_lidx_fit(x, 0.95), 0);
	assert_int_equal(nb_slots(x), 1053); /* ceil(1000 / 0.95) */
	for (i = nb - 1000; i < nb; i++) {
		e = km_lidx_find(x, rng_next(&s));
		assert_non_null(e);
		assert_int_equal(e->loc, i);
	}
	check_structure(x);
	/* above 7/8 after a fit at 0.95: the next new entry grows the table first */
	insert(x, 12345, 1, 1);
	assert_int_equal(nb_slots(x), 1053 + 1053 / 2);
	check_structure(x);

	/* never below count + 1: an empty index keeps room to insert */
	while (km_lidx_count(x) > 0) {
		i = 0;
		km_lidx_remove(x, km_lidx_next(x, &i));
	}
	assert_int_equal(km_lidx_fit(x, 0.95), 0);
	assert_true(nb_slots(x) >= 1 && nb_slots(x) <= 64);
	insert(x, 0, 1, 1);
	assert_non_null(km_lidx_find(x, 0));
	km_lidx_destroy(x);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_differential),
		cmocka_unit_test(test_remove_wrap),
		cmocka_unit_test(test_hash_zero),
		cmocka_unit_test(test_growth),
		cmocka_unit_test(test_shard_spread),
		cmocka_unit_test(test_fit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
