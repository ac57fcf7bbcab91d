/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Cache simulator tests: short traces whose hit counts were worked out by hand (the
 * textbook reference string among them), the model's corner cases (DEL, PUT, capacity 1,
 * a cache that holds every key), and a differential test of both simulators against
 * plain O(n * capacity) versions over random traces with fixed seeds.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <km_cachesim.h>
#include <km_trace.h>
#include <km_workload.h>

#define SPEC_MAX 64

#define DIFF_RECS     3000
#define DIFF_KEYS_MAX 200
#define NEVER         UINT64_MAX

/* xorshift64*: deterministic, seedable. */
static uint64_t
rnd_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

struct spec_trace {
	struct km_trace t;
	struct km_trace_rec recs[SPEC_MAX];
};

/*
 * Build a trace from "Ga Pb Da ...": op letter (G, P, D) then a one-character key name.
 * Key ids follow first appearance, as the loader interns them.
 */
static void
spec_build(struct spec_trace *st, const char *spec)
{
	int id[256];
	const char *p;

	memset(st, 0, sizeof(*st));
	memset(id, -1, sizeof(id));
	st->t.recs = st->recs;
	for (p = spec; *p != '\0'; p++) {
		struct km_trace_rec *r;
		unsigned char name;

		if (*p == ' ')
			continue;
		assert_true(st->t.nb_recs < SPEC_MAX);
		assert_true(p[1] != '\0');
		r = &st->recs[st->t.nb_recs];
		r->ts_us = st->t.nb_recs;
		switch (*p) {
		case 'G':
			r->op = KM_WL_GET;
			break;
		case 'P':
			r->op = KM_WL_PUT;
			break;
		case 'D':
			r->op = KM_WL_DEL;
			break;
		default:
			fail_msg("bad op '%c' in spec", *p);
		}
		name = (unsigned char)*++p;
		if (id[name] < 0)
			id[name] = (int)st->t.nb_keys++;
		r->key_id = (uint32_t)id[name];
		st->t.nb_recs++;
	}
}

/* Both simulators on spec at capacity: the GET count and each one's hits. */
static void
check(const char *spec, uint64_t capacity, uint64_t gets, uint64_t lru_hits, uint64_t min_hits)
{
	struct spec_trace st;
	struct km_sim_result r;

	spec_build(&st, spec);
	memset(&r, 0xff, sizeof(r));
	assert_int_equal(km_sim_lru(&st.t, capacity, &r), 0);
	assert_int_equal(r.gets, gets);
	assert_int_equal(r.hits, lru_hits);
	assert_true(r.hit_ratio == (gets == 0 ? 0.0 : (double)lru_hits / (double)gets));
	memset(&r, 0xff, sizeof(r));
	assert_int_equal(km_sim_belady(&st.t, capacity, &r), 0);
	assert_int_equal(r.gets, gets);
	assert_int_equal(r.hits, min_hits);
	assert_true(r.hit_ratio == (gets == 0 ? 0.0 : (double)min_hits / (double)gets));
}

static void
test_min_beats_lru(void **state)
{
	(void)state;
	/*
	 * LRU:  a- b- a+ c-(evicts b) b-(evicts a) a-          1 hit
	 * MIN:  a- b- a+ c-(evicts a: next use 5 > b's 4) b+ a-  2 hits
	 */
	check("Ga Gb Ga Gc Gb Ga", 2, 6, 1, 2);
	/* A loop one key larger than the cache: LRU always misses, MIN keeps every other. */
	check("Ga Gb Gc Ga Gb Gc Ga Gb Gc", 2, 9, 0, 3);
	/* The textbook reference string with 3 frames: LRU 12 faults, OPT 9 faults. */
	check("G7 G0 G1 G2 G0 G3 G0 G4 G2 G3 G0 G3 G2 G1 G2 G0 G1 G7 G0 G1", 3, 20, 8, 11);
}

static void
test_del(void **state)
{
	(void)state;
	/* A deleted key misses next time. */
	check("Ga Da Ga", 4, 2, 0, 0);
	/* DEL frees its slot: c fits without evicting b. */
	check("Ga Gb Da Gc Gb Ga", 2, 5, 1, 1);
	/* DEL of a key that is not cached changes nothing. */
	check("Db Ga Ga", 1, 2, 1, 1);
	/*
	 * A DEL ends a key's usefulness: MIN evicts a at c (a is deleted before its next GET)
	 * and keeps b for its hit. Counting a's GET after the DEL as its next use would evict
	 * b instead and find no hit.
	 */
	check("Ga Gb Gc Da Ga Gb", 2, 5, 0, 1);
}

static void
test_put(void **state)
{
	(void)state;
	/* PUTs are not counted but install the key. */
	check("Pa Ga Pb Gb Gc", 2, 3, 2, 2);
	/* A PUT refreshes recency: c evicts b, not a. */
	check("Ga Gb Pa Gc Ga Gb", 2, 5, 1, 1);
	/* A PUT installs even when the cache is full: no bypass. */
	check("Ga Pb Ga", 1, 2, 0, 0);
	/* No GET at all: ratio 0, not NaN. */
	check("Pa Pb Pc Da", 2, 0, 0, 0);
}

static void
test_capacity_one(void **state)
{
	(void)state;
	check("Ga Ga Gb Ga Ga Pb Gb", 1, 6, 3, 3);
	/* A miss always installs (demand fetch), even when a is needed again first. */
	check("Ga Gb Ga", 1, 3, 0, 0);
}

static void
test_capacity_all_keys(void **state)
{
	(void)state;
	/* 3 keys, room for 3: only the first GET of a and b miss; c arrives by PUT. */
	check("Ga Gb Ga Pc Gc Gb", 3, 5, 3, 3);
	check("Ga Gb Ga Pc Gc Gb", UINT64_MAX, 5, 3, 3);
}

static void
test_errors(void **state)
{
	struct spec_trace st;
	struct km_trace empty = {0};
	struct km_sim_result r;

	(void)state;
	spec_build(&st, "Ga Gb");
	assert_int_equal(km_sim_lru(&st.t, 0, &r), -EINVAL);
	assert_int_equal(km_sim_belady(&st.t, 0, &r), -EINVAL);
	assert_int_equal(km_sim_lru(NULL, 1, &r), -EINVAL);
	assert_int_equal(km_sim_belady(NULL, 1, &r), -EINVAL);
	assert_int_equal(km_sim_lru(&st.t, 1, NULL), -EINVAL);
	assert_int_equal(km_sim_belady(&st.t, 1, NULL), -EINVAL);
	/* A record naming a key the trace does not have. */
	st.recs[1].key_id = 2;
	assert_int_equal(km_sim_lru(&st.t, 1, &r), -EINVAL);
	assert_int_equal(km_sim_belady(&st.t, 1, &r), -EINVAL);

	memset(&r, 0xff, sizeof(r));
	assert_int_equal(km_sim_lru(&empty, 5, &r), 0);
	assert_int_equal(r.gets, 0);
	assert_int_equal(r.hits, 0);
	assert_true(r.hit_ratio == 0.0);
	memset(&r, 0xff, sizeof(r));
	assert_int_equal(km_sim_belady(&empty, 5, &r), 0);
	assert_int_equal(r.gets, 0);
	assert_int_equal(r.hits, 0);
	assert_true(r.hit_ratio == 0.0);
}

/* --- differential test against plain versions --- */

/*
 * Plain simulators: the cache is an array searched linearly. LRU evicts the entry with the
 * oldest last access; MIN scans the trace forward from the miss for each cached key's next
 * GET or PUT (a DEL first, or none: never) and evicts the farthest.
 */
static void
ref_sim(const struct km_trace *t, uint64_t capacity, int belady, struct km_sim_result *r)
{
	uint32_t cache[DIFF_KEYS_MAX];
	uint64_t last[DIFF_KEYS_MAX], next[DIFF_KEYS_MAX];
	size_t used = 0, cap = capacity < t->nb_keys ? (size_t)capacity : t->nb_keys;
	uint64_t gets = 0, hits = 0;
	size_t i, j;

	assert_true(t->nb_keys <= DIFF_KEYS_MAX);
	for (i = 0; i < t->nb_recs; i++) {
		const struct km_trace_rec *rec = &t->recs[i];
		size_t victim = 0;

		for (j = 0; j < used && cache[j] != rec->key_id; j++)
			;
		if (rec->op == KM_WL_DEL) {
			if (j < used) {
				cache[j] = cache[used - 1];
				last[j] = last[used - 1];
				used--;
			}
			continue;
		}
		if (rec->op == KM_WL_GET) {
			gets++;
			hits += j < used;
		}
		if (j < used) {
			last[j] = i;
			continue;
		}
		if (used < cap) {
			cache[used] = rec->key_id;
			last[used++] = i;
			continue;
		}
		for (j = 0; j < used; j++) {
			if (belady) {
				size_t f;

				next[j] = NEVER;
				for (f = i + 1; f < t->nb_recs; f++) {
					if (t->recs[f].key_id != cache[j])
						continue;
					if (t->recs[f].op != KM_WL_DEL)
						next[j] = f;
					break;
				}
				if (next[j] > next[victim])
					victim = j;
			} else if (last[j] < last[victim]) {
				victim = j;
			}
		}
		cache[victim] = rec->key_id;
		last[victim] = i;
	}
	r->gets = gets;
	r->hits = hits;
}

/* Half the requests uniform over all keys, half over the first eighth (a hot set). */
static void
random_trace(struct km_trace *t, uint64_t *s, uint32_t nb_keys, unsigned int put_pct,
	unsigned int del_pct)
{
	size_t i;

	t->nb_keys = nb_keys;
	t->nb_recs = DIFF_RECS;
	for (i = 0; i < DIFF_RECS; i++) {
		struct km_trace_rec *r = &t->recs[i];
		uint64_t x = rnd_next(s);
		unsigned int pct = (unsigned int)(x % 100);
		uint32_t hot = nb_keys / 8 > 0 ? nb_keys / 8 : 1;

		x = rnd_next(s);
		r->key_id = (uint32_t)((x & 1) != 0 ? (x >> 1) % nb_keys : (x >> 1) % hot);
		r->op = pct < put_pct ? KM_WL_PUT : pct < put_pct + del_pct ? KM_WL_DEL : KM_WL_GET;
		r->ts_us = i;
	}
}

static void
test_differential(void **state)
{
	static const uint64_t seeds[] = {
		0x6361636865ULL, 0x73696d31ULL, 0x73696d32ULL, 0x73696d33ULL};
	static const uint32_t nb_keys[] = {3, 12, 50, DIFF_KEYS_MAX};
	static const unsigned int mix[][2] = {{0, 0}, {25, 0}, {20, 10}}; /* PUT %, DEL % */
	static const uint64_t caps[] = {1, 2, 3, 7, 20, 64, UINT64_MAX};
	struct km_trace_rec *recs = malloc(DIFF_RECS * sizeof(*recs));
	struct km_trace t = {.recs = recs};
	size_t si, ki, mi, ci;

	(void)state;
	assert_non_null(recs);
	for (si = 0; si < sizeof(seeds) / sizeof(seeds[0]); si++)
		for (ki = 0; ki < sizeof(nb_keys) / sizeof(nb_keys[0]); ki++)
			for (mi = 0; mi < sizeof(mix) / sizeof(mix[0]); mi++) {
				uint64_t s = seeds[si];

				random_trace(&t, &s, nb_keys[ki], mix[mi][0], mix[mi][1]);
				for (ci = 0; ci < sizeof(caps) / sizeof(caps[0]); ci++) {
					struct km_sim_result lru, min, ref_lru, ref_min;

					assert_int_equal(km_sim_lru(&t, caps[ci], &lru), 0);
					assert_int_equal(km_sim_belady(&t, caps[ci], &min), 0);
					ref_sim(&t, caps[ci], 0, &ref_lru);
					ref_sim(&t, caps[ci], 1, &ref_min);
					assert_int_equal(lru.gets, ref_lru.gets);
					assert_int_equal(lru.hits, ref_lru.hits);
					assert_int_equal(min.gets, ref_min.gets);
					assert_int_equal(min.hits, ref_min.hits);
					/* With GETs only, MIN is the demand-paging optimum. */
					if (mix[mi][0] == 0 && mix[mi][1] == 0)
						assert_true(min.hits >= lru.hits);
				}
			}
	free(recs);
}

/* A cache holding every key misses only where the key is absent: first use or after DEL. */
static void
test_compulsory_only(void **state)
{
	static const uint64_t seeds[] = {11, 12, 13};
	struct km_trace_rec *recs = malloc(DIFF_RECS * sizeof(*recs));
	struct km_trace t = {.recs = recs};
	size_t si, i;

	(void)state;
	assert_non_null(recs);
	for (si = 0; si < sizeof(seeds) / sizeof(seeds[0]); si++) {
		uint64_t s = seeds[si], gets = 0, misses = 0;
		uint8_t present[DIFF_KEYS_MAX] = {0};
		const uint64_t caps[] = {DIFF_KEYS_MAX, DIFF_KEYS_MAX + 1, UINT64_MAX};
		size_t ci;

		random_trace(&t, &s, DIFF_KEYS_MAX, 20, 5);
		for (i = 0; i < t.nb_recs; i++) {
			const struct km_trace_rec *r = &t.recs[i];

			if (r->op == KM_WL_GET) {
				gets++;
				misses += !present[r->key_id];
			}
			present[r->key_id] = r->op != KM_WL_DEL;
		}
		for (ci = 0; ci < sizeof(caps) / sizeof(caps[0]); ci++) {
			struct km_sim_result lru, min;

			assert_int_equal(km_sim_lru(&t, caps[ci], &lru), 0);
			assert_int_equal(km_sim_belady(&t, caps[ci], &min), 0);
			assert_int_equal(lru.gets, gets);
			assert_int_equal(lru.hits, gets - misses);
			assert_int_equal(min.gets, gets);
			assert_int_equal(min.hits, gets - misses);
		}
	}
	free(recs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_min_beats_lru),
		cmocka_unit_test(test_del),
		cmocka_unit_test(test_put),
		cmocka_unit_test(test_capacity_one),
		cmocka_unit_test(test_capacity_all_keys),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_differential),
		cmocka_unit_test(test_compulsory_only),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
