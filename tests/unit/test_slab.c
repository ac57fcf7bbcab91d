/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The "mem" store's record memory (drivers/store/mem/mem_slab.c) and the store over it:
 * the allocator's edge cases (empty, every size class, the large-record path, release
 * a little at a time), a long differential run of the store against a malloc-backed
 * model (sizes that change class, versions that need the wide header, loads, CAS,
 * deletes, with the memory accounting checked against what the allocator holds), and
 * the fragmentation bound after churn that keeps moving records between classes, and the
 * 2 MiB slabs of large classes (THP-advised, hugetlb pages when asked for, or none with
 * hugepages off).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <km_store.h>

#include "mem_slab.h"

static uint64_t
rng_next(uint64_t *s)
{
	/* splitmix64 */
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

static struct km_store *
store_new(uint32_t value_max, uint64_t version_base)
{
	struct km_store_params p = {
		.name = "slab",
		.value_max = value_max,
		.version_base = version_base,
		.socket_id = -1,
	};
	struct km_store *s = NULL;

	assert_int_equal(km_store_create("mem", &p, &s), 0);
	return s;
}

/* Bytes the store holds for its records (everything but the index). What it counts for
 * the DRAM bound leaves out only its slabs' free objects: between the live bytes and all
 * of it. */
static uint64_t
entry_held(struct km_store *s, struct km_store_stats *st)
{
	uint64_t used;

	km_store_stats(s, st);
	used = s->ops->dram_bytes(s);
	assert_true(used <= st->index_bytes + st->value_bytes + st->entry_overhead_bytes);
	assert_true(used >= st->index_bytes + st->value_bytes);
	return st->value_bytes + st->entry_overhead_bytes;
}

/* Allocator */

/* Fill p with a pattern of its own, so that overlapping blocks show. */
static void
fill(uint8_t *p, size_t size, uint64_t tag)
{
	size_t i;

	for (i = 0; i < size; i++)
		p[i] = (uint8_t)(tag * 131 + i);
}

static int
filled(const uint8_t *p, size_t size, uint64_t tag)
{
	size_t i;

	for (i = 0; i < size; i++)
		if (p[i] != (uint8_t)(tag * 131 + i))
			return 0;
	return 1;
}

#define EDGE_N 3000

/* As store_mem.c does: a slab block up to MEM_SLAB_REC_MAX bytes, else one of its own. */
static void *
edge_alloc(struct mem_slabs *a, size_t size)
{
	return mem_slab_size(size) != 0 ? mem_slab_alloc(a, size) : mem_own_alloc(a, size);
}

static void
edge_free(struct mem_slabs *a, void *p, size_t size)
{
	if (mem_slab_size(size) != 0)
		mem_slab_free(a, p, size);
	else
		mem_own_free(a, p);
}

static void
test_alloc_edges(void **state)
{
	static const size_t big[] = {MEM_SLAB_REC_MAX + 1, 4096, 65535 + 250 + 16};
	struct mem_slabs a = {0};
	size_t *size = calloc(EDGE_N, sizeof(*size));
	uint8_t **p = calloc(EDGE_N, sizeof(*p));
	uint64_t live = 0, rng = 5;
	unsigned int i;

	(void)state;
	assert_non_null(size);
	assert_non_null(p);
	/* Empty: nothing held, release of nothing, no block of 0 bytes. */
	assert_int_equal(mem_slabs_held(&a), 0);
	mem_slabs_release(&a);
	assert_int_equal(mem_slabs_release_step(&a, 1), 0);
	assert_null(mem_slab_alloc(&a, 0));
	assert_null(mem_slab_alloc(&a, MEM_SLAB_REC_MAX + 1)); /* own blocks only */
	assert_int_equal(mem_slabs_held(&a), 0);
	assert_int_equal(mem_slab_size(1), 8);
	assert_int_equal(mem_slab_size(8), 8);
	assert_int_equal(mem_slab_size(9), 16);
	assert_int_equal(mem_slab_size(MEM_SLAB_REC_MAX), MEM_SLAB_REC_MAX);
	assert_int_equal(mem_slab_size(MEM_SLAB_REC_MAX + 1), 0);

	/* Every class several times, and large blocks up to the largest record. */
	for (i = 0; i < EDGE_N; i++) {
		if (i % 100 == 99)
			size[i] = big[(i / 100) % 3];
		else
			size[i] = 1 + (i % MEM_SLAB_REC_MAX);
		p[i] = edge_alloc(&a, size[i]);
		assert_non_null(p[i]);
		assert_int_equal((uintptr_t)p[i] % 8, 0);
		fill(p[i], size[i], i);
		live += mem_slab_size(size[i]);
	}
	assert_int_equal(a.slab_live, live);
	assert_true(mem_slabs_held(&a) >= live);
	for (i = 0; i < EDGE_N; i++)
		assert_true(filled(p[i], size[i], i));

	/* Free a random half, allocate again: free blocks are reused, nothing overlaps. */
	for (i = 0; i < EDGE_N; i++) {
		if (rng_below(&rng, 2) == 0)
			continue;
		edge_free(&a, p[i], size[i]);
		live -= mem_slab_size(size[i]);
		p[i] = NULL;
	}
	assert_int_equal(a.slab_live, live);
	for (i = 0; i < EDGE_N; i++) {
		if (p[i] != NULL)
			continue;
		p[i] = edge_alloc(&a, size[i]);
		assert_non_null(p[i]);
		fill(p[i], size[i], i + EDGE_N);
		size[i] |= (size_t)1 << 40; /* refilled */
		live += mem_slab_size(size[i] & 0xffffffff);
	}
	for (i = 0; i < EDGE_N; i++) {
		size_t sz = size[i] & 0xffffffff;

		assert_true(filled(p[i], sz, (size[i] >> 40) ? i + EDGE_N : i));
	}
	assert_int_equal(a.slab_live, live);
	/* The free list gave every class back its blocks: no new slab was needed. */

	/* Free of everything: held drops to the slabs alone, then release drops them. */
	for (i = 0; i < EDGE_N; i++)
		edge_free(&a, p[i], size[i] & 0xffffffff);
	assert_int_equal(a.slab_live, 0);
	assert_int_equal(a.own_held, 0);
	assert_true(a.slab_held > 0);
	mem_slabs_release(&a);
	assert_int_equal(mem_slabs_held(&a), 0);
	assert_null(a.cls);

	/* A little at a time: several calls, held shrinks, then nothing. */
	for (i = 0; i < EDGE_N; i++)
		assert_non_null(mem_slab_alloc(&a, 1 + (i % 128) * 8));
	for (i = 0; i < 10; i++)
		assert_non_null(mem_own_alloc(&a, 5000));
	{
		uint64_t before = mem_slabs_held(&a);
		unsigned int calls = 0;

		while (mem_slabs_release_step(&a, 16) == 1) {
			assert_true(mem_slabs_held(&a) < before);
			before = mem_slabs_held(&a);
			calls++;
		}
		assert_true(calls > 10);
		assert_int_equal(mem_slabs_held(&a), 0);
	}
	free(size);
	free(p);
}

/*
 * A small store stays small: a few keys hold the class table and a first slab per class
 * used, not slabs sized for many keys; the empty store holds nothing.
 */
static void
test_small_store(void **state)
{
	struct km_store *s = store_new(1000, 1000);
	static const uint8_t val[64];
	struct km_store_stats st;
	struct km_key k;
	char key[16];
	unsigned int i;
	uint64_t held;

	(void)state;
	assert_int_equal(entry_held(s, &st), 0);
	for (i = 0; i < 8; i++) {
		k.data = (const uint8_t *)key;
		k.len = (uint16_t)snprintf(key, sizeof(key), "small%u", i);
		k.hash = km_key_hash(k.data, k.len);
		assert_int_equal(km_store_put(s, &k, val, sizeof(val), KM_VERSION_ANY, 0, NULL), 0);
	}
	held = entry_held(s, &st);
	assert_true(held <= 4112 + 8 * (8 + 7 + 64 + 256)); /* class table + under 4 slabs */
	for (i = 0; i < 8; i++) {
		k.data = (const uint8_t *)key;
		k.len = (uint16_t)snprintf(key, sizeof(key), "small%u", i);
		k.hash = km_key_hash(k.data, k.len);
		assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, NULL), 0);
	}
	/* The last delete frees everything. */
	assert_int_equal(entry_held(s, &st), 0);
	assert_int_equal(st.entry_overhead_bytes, 0);
	km_store_destroy(s);
}

/*
 * What the DRAM bound counts falls with deletes in a store of slabs (a worker at its
 * bound that deletes can write again), and rises again as the records come back, within
 * the memory held before.
 */
static void
test_dram_after_deletes(void **state)
{
	struct km_store *s = store_new(1000, 1000);
	static const uint8_t val[64];
	struct km_store_stats st;
	uint64_t full, half, again, held_full;
	struct km_key k;
	char key[24];
	unsigned int i;

	(void)state;
	for (i = 0; i < 4000; i++) {
		k.data = (const uint8_t *)key;
		k.len = (uint16_t)snprintf(key, sizeof(key), "dram%06u", i);
		k.hash = km_key_hash(k.data, k.len);
		assert_int_equal(km_store_put(s, &k, val, sizeof(val), KM_VERSION_ANY, 0, NULL), 0);
	}
	full = s->ops->dram_bytes(s);
	held_full = entry_held(s, &st);
	for (i = 0; i < 4000; i += 2) {
		k.data = (const uint8_t *)key;
		k.len = (uint16_t)snprintf(key, sizeof(key), "dram%06u", i);
		k.hash = km_key_hash(k.data, k.len);
		assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, NULL), 0);
	}
	half = s->ops->dram_bytes(s);
	/* 2000 records of 8 + 10 + 64 bytes (88 in their class) no longer counted. */
	assert_true(half + 2000 * 80 <= full);
	for (i = 0; i < 4000; i += 2) {
		k.data = (const uint8_t *)key;
		k.len = (uint16_t)snprintf(key, sizeof(key), "dram%06u", i);
		k.hash = km_key_hash(k.data, k.len);
		assert_int_equal(km_store_put(s, &k, val, sizeof(val), KM_VERSION_ANY, 0, NULL), 0);
	}
	again = s->ops->dram_bytes(s);
	assert_true(again >= full - 4096 && again <= full + 4096);
	/* The freed objects (or, after a compaction, new slabs) hold them again: no more
	 * memory than before the deletes. */
	assert_true(entry_held(s, &st) <= held_full + 4096);
	km_store_destroy(s);
}

/*
 * The largest records the store takes: a 250-byte key with a value of value_max, at the
 * client's bound (KM_CLIENT_VALUE_MAX) and at the store's own (65535); both with a
 * version that needs the full header. Updates between small and large, deletes.
 */
static void
test_largest(void **state)
{
	static const uint32_t vmax[] = {64959, 65535};
	static uint8_t val[65536], key[250]; /* val + 1 at 65535 bytes too */
	struct km_store_stats st;
	struct km_value_ref ref;
	unsigned int i, j;

	(void)state;
	for (i = 0; i < 250; i++)
		key[i] = (uint8_t)(i * 7 + 1);
	for (i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)(i * 13 + 5);
	for (j = 0; j < 2; j++) {
		struct km_store *s = store_new(vmax[j], 10);
		struct km_key k = {.data = key, .len = 250, .hash = km_key_hash(key, 250)};
		uint64_t v, far = UINT64_C(1) << 62;

		assert_int_equal(km_store_put(s, &k, val, vmax[j] + 1, 0, 0, &v), -E2BIG);
		assert_int_equal(km_store_put(s, &k, val, vmax[j], 0, 0, &v), 0);
		assert_int_equal(km_store_get(s, &k, &ref), 0);
		assert_int_equal(ref.len, vmax[j]);
		assert_memory_equal(ref.data, val, vmax[j]);
		assert_int_equal(ref.version, v);
		entry_held(s, &st);
		assert_int_equal(st.value_bytes, 250 + vmax[j]);
		assert_true(st.entry_overhead_bytes >= 8 + 16);
		/* a far version: the full header, the same large block size or not */
		assert_int_equal(km_store_load(s, &k, val + 1, vmax[j], far), 0);
		assert_int_equal(km_store_get(s, &k, &ref), 0);
		assert_int_equal(ref.version, far);
		assert_memory_equal(ref.data, val + 1, vmax[j]);
		/* large -> small -> large */
		assert_int_equal(km_store_put(s, &k, val, 3, far, 0, &v), 0);
		assert_int_equal(v, far + 1);
		assert_int_equal(km_store_get(s, &k, &ref), 0);
		assert_int_equal(ref.len, 3);
		assert_int_equal(km_store_put(s, &k, val, vmax[j], v, 0, &v), 0);
		assert_int_equal(km_store_get(s, &k, &ref), 0);
		assert_int_equal(ref.len, vmax[j]);
		assert_int_equal(ref.version, far + 2);
		assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, &v), 0);
		assert_int_equal(v, far + 2);
		assert_int_equal(entry_held(s, &st), 0);
		/* destroy with a large record in it */
		assert_int_equal(km_store_put(s, &k, val, vmax[j], 0, 0, &v), 0);
		km_store_destroy(s);
	}
}

/*
 * Versions across the header's two layouts: a 39-bit offset from a base the store picks
 * while empty (2^38 below the first version written), or the full 64 bits. An anchor key
 * is written first; then other keys are loaded at the limits of the offset's range
 * around it, far below and above, and each of them is loaded again at every other
 * version, so that updates switch layout within one size class. Then the store is
 * emptied (the base may move) and it starts over with another first version.
 */
static void
test_versions_wide(void **state)
{
	static const uint8_t val[16] = "0123456789abcdef";
	const uint64_t half = UINT64_C(1) << 38;
	const uint64_t firsts[] = {UINT64_C(1) << 60, half + 5, 3, UINT64_MAX - 2 * half};
	struct km_store *s = store_new(64, 7);
	struct km_value_ref ref;
	unsigned int i, f, n;
	uint8_t key[8];
	uint64_t v;

	(void)state;
	for (f = 0; f < sizeof(firsts) / sizeof(firsts[0]); f++) {
		const uint64_t a = firsts[f];
		const uint64_t cand[] = {a - half - 1, a - half, a - half + 1, a + 1, a + half - 1,
			a + half, a + half + 1, 1, 2, a + (UINT64_C(1) << 39), UINT64_MAX - 10};
		uint64_t vs[16];
		struct km_key anchor = {.data = (const uint8_t *)"anchor", .len = 6};

		anchor.hash = km_key_hash(anchor.data, anchor.len);
		for (i = 0, n = 0; i < sizeof(cand) / sizeof(cand[0]); i++)
			if (cand[i] >= 1 && cand[i] <= UINT64_MAX - 10)
				vs[n++] = cand[i];
		assert_int_equal(km_store_load(s, &anchor, "a", 1, a), 0);
		for (i = 0; i < n; i++) {
			struct km_key k = {.data = key, .len = sizeof(key)};

			memcpy(key, &i, sizeof(i));
			memset(key + sizeof(i), (int)f, sizeof(key) - sizeof(i));
			k.hash = km_key_hash(key, sizeof(key));
			for (v = 0; v < n; v++) {
				uint64_t lv = vs[(i + v) % n];

				assert_int_equal(km_store_load(s, &k, val, (uint32_t)v, lv), 0);
				assert_int_equal(km_store_get(s, &k, &ref), 0);
				assert_int_equal(ref.version, lv);
				assert_int_equal(ref.len, v);
				assert_memory_equal(ref.data, val, v);
			}
			/* and once more at its first version, checked with a CAS */
			assert_int_equal(km_store_load(s, &k, val, 3, vs[i]), 0);
			assert_int_equal(km_store_put(s, &k, val, 3, vs[i] + 1, 0, &v), -ESTALE);
			assert_int_equal(v, vs[i]);
		}
		assert_int_equal(km_store_get(s, &anchor, &ref), 0);
		assert_int_equal(ref.version, a);
		/* the counter is at the highest loaded; a put goes one above */
		{
			struct km_key k = {.data = (const uint8_t *)"fresh", .len = 5};

			k.hash = km_key_hash(k.data, k.len);
			assert_int_equal(km_store_put(s, &k, "x", 1, 0, 1, &v), 0);
			assert_int_equal(v, UINT64_MAX - 9);
			assert_int_equal(km_store_del(s, &k, v, &v), 0);
		}
		/* empty the store: the base is free to move with the next first record */
		for (i = 0; i < n; i++) {
			struct km_key k = {.data = key, .len = sizeof(key)};

			memcpy(key, &i, sizeof(i));
			memset(key + sizeof(i), (int)f, sizeof(key) - sizeof(i));
			k.hash = km_key_hash(key, sizeof(key));
			assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, NULL), 0);
		}
		assert_int_equal(km_store_del(s, &anchor, a, NULL), 0);
		km_store_destroy(s);
		s = store_new(64, f);
	}
	km_store_destroy(s);
}

/* Differential: the store against a model of malloc'ed values */

#define DIFF_KEYS      20000
#define DIFF_OPS       2000000
#define DIFF_VALUE_MAX 3000

struct model_entry {
	uint8_t key[40];
	uint8_t klen;
	uint8_t present;
	uint32_t len;
	uint64_t version;
	uint8_t *val; /* malloc'ed, len bytes */
};

struct model {
	struct model_entry *e;
	uint64_t version; /* the store's counter */
	uint64_t keys, bytes;
};

static void
model_set(struct model_entry *e, const uint8_t *val, uint32_t len, uint64_t version)
{
	free(e->val);
	e->val = malloc(len + 1);
	assert_non_null(e->val);
	memcpy(e->val, val, len);
	e->len = len;
	e->version = version;
	e->present = 1;
}

static struct km_key
model_key(const struct model_entry *e)
{
	struct km_key k = {.data = e->key, .len = e->klen, .hash = km_key_hash(e->key, e->klen)};

	return k;
}

/* A value size: mostly small, often across a class boundary from the last, sometimes
 * large (own block), sometimes over the bound. */
static uint32_t
pick_len(uint64_t *rng, const struct model_entry *e)
{
	switch (rng_below(rng, 16)) {
	case 0:
		return MEM_SLAB_REC_MAX +
		       (uint32_t)rng_below(rng, DIFF_VALUE_MAX - MEM_SLAB_REC_MAX);
	case 1:
		return DIFF_VALUE_MAX + (uint32_t)rng_below(rng, 2); /* the bound, and over */
	case 2:
	case 3:
		return e->len + 1 + (uint32_t)rng_below(rng, 8); /* the next class or so */
	case 4:
		return e->len > 8 ? e->len - 8 : 0;
	default:
		return (uint32_t)rng_below(rng, 200);
	}
}

static void
check_model(struct km_store *s, const struct model *m)
{
	struct km_store_stats st;
	uint64_t held = entry_held(s, &st);

	assert_int_equal(st.keys, m->keys);
	assert_int_equal(st.value_bytes, m->bytes);
	assert_int_equal(st.version_last, m->version);
	/* at least an 8-byte header per record */
	assert_true(held >= m->bytes + 8 * m->keys);
}

static void
run_store_diff(uint64_t seed, uint64_t base)
{
	struct model m = {.e = calloc(DIFF_KEYS, sizeof(struct model_entry)), .version = base};
	static uint8_t val[DIFF_VALUE_MAX + 2];
	struct km_store *s = store_new(DIFF_VALUE_MAX, base);
	uint64_t rng = seed, i, j, v, far = UINT64_C(1) << 61;
	struct km_value_ref ref;
	time_t t0 = time(NULL);

	assert_non_null(m.e);
	for (i = 0; i < DIFF_KEYS; i++) {
		struct model_entry *e = &m.e[i];

		e->klen = (uint8_t)(8 + rng_below(&rng, 33));
		memcpy(e->key, &i, sizeof(i));
		for (j = sizeof(i); j < e->klen; j++)
			e->key[j] = (uint8_t)rng_next(&rng);
	}
	for (i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)rng_next(&rng);
	for (i = 0; i < DIFF_OPS; i++) {
		/* a working set that moves: keys come and go in waves */
		uint64_t id = (rng_below(&rng, DIFF_KEYS / 2) + i / 64) % DIFF_KEYS;
		struct model_entry *e = &m.e[id];
		struct km_key k = model_key(e);
		uint32_t op = (uint32_t)rng_below(&rng, 100), len = pick_len(&rng, e);
		const uint8_t *src = val + rng_below(&rng, 2);
		int rc, want;

		if (op < 30) { /* get */
			rc = km_store_get(s, &k, &ref);
			if (!e->present) {
				assert_int_equal(rc, -ENOENT);
				continue;
			}
			assert_int_equal(rc, 0);
			assert_int_equal(ref.len, e->len);
			assert_int_equal(ref.version, e->version);
			assert_memory_equal(ref.data, e->val, e->len);
		} else if (op < 65) { /* put, sometimes CAS or create-only */
			uint64_t expect = KM_VERSION_ANY;
			int create_only = op >= 60;

			if (op >= 50 && op < 60)
				expect = e->present && rng_below(&rng, 2) ? e->version
									  : 1 + rng_below(&rng, 3);
			rc = km_store_put(s, &k, src, len, expect, create_only, &v);
			if (len > DIFF_VALUE_MAX)
				want = -E2BIG;
			else if (create_only && e->present)
				want = -EEXIST;
			else if (expect != KM_VERSION_ANY && (!e->present || e->version != expect))
				want = -ESTALE;
			else
				want = 0;
			assert_int_equal(rc, want);
			if (rc == 0) {
				assert_int_equal(v, m.version + 1);
				m.version++;
				if (e->present)
					m.bytes -= e->klen + e->len;
				else
					m.keys++;
				m.bytes += e->klen + len;
				model_set(e, src, len, v);
			} else if (rc == -EEXIST || rc == -ESTALE) {
				assert_int_equal(v, e->present ? e->version : 0);
			}
		} else if (op < 80) { /* load: near, below, or far from the counter */
			uint64_t lv;

			switch (rng_below(&rng, 4)) {
			case 0:
				lv = far + rng_below(&rng, 1000);
				break;
			case 1:
				lv = 1 + rng_below(&rng, m.version);
				break;
			default:
				lv = m.version + 1 + rng_below(&rng, 100);
				break;
			}
			rc = km_store_load(s, &k, src, len, lv);
			assert_int_equal(rc, len > DIFF_VALUE_MAX ? -E2BIG : 0);
			if (rc == 0) {
				if (e->present)
					m.bytes -= e->klen + e->len;
				else
					m.keys++;
				m.bytes += e->klen + len;
				model_set(e, src, len, lv);
				if (lv > m.version)
					m.version = lv;
			}
		} else { /* delete, sometimes conditional */
			uint64_t expect = op >= 95 ? (e->present && rng_below(&rng, 2)
								     ? e->version
								     : 1 + rng_below(&rng, 3))
						   : KM_VERSION_ANY;

			rc = km_store_del(s, &k, expect, &v);
			if (!e->present) {
				assert_int_equal(rc, -ENOENT);
				continue;
			}
			if (expect != KM_VERSION_ANY && expect != e->version) {
				assert_int_equal(rc, -ESTALE);
				assert_int_equal(v, e->version);
				continue;
			}
			assert_int_equal(rc, 0);
			assert_int_equal(v, e->version);
			m.version++;
			m.keys--;
			m.bytes -= e->klen + e->len;
			e->present = 0;
		}
		if (i % 100000 == 0)
			check_model(s, &m);
	}
	check_model(s, &m);
	for (i = 0; i < DIFF_KEYS; i++) {
		struct km_key k = model_key(&m.e[i]);

		if (!m.e[i].present) {
			assert_int_equal(km_store_get(s, &k, &ref), -ENOENT);
			continue;
		}
		assert_int_equal(km_store_get(s, &k, &ref), 0);
		assert_int_equal(ref.len, m.e[i].len);
		assert_int_equal(ref.version, m.e[i].version);
		assert_memory_equal(ref.data, m.e[i].val, m.e[i].len);
		assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, NULL), 0);
	}
	/* Free of everything: the records' memory goes with the last one. */
	check_model(s, &(struct model){.version = m.version + m.keys});
	{
		struct km_store_stats st;

		assert_int_equal(entry_held(s, &st), 0);
	}
	km_store_destroy(s);
	for (i = 0; i < DIFF_KEYS; i++)
		free(m.e[i].val);
	free(m.e);
	/* bounded time: 2 M ops take a few seconds; a slow allocator shows here */
	assert_true(time(NULL) - t0 < 120);
}

static void
test_store_differential(void **state)
{
	(void)state;
	run_store_diff(1, 1000);
	run_store_diff(2, UINT64_C(1) << 60); /* a clock-like base, as keymapd's */
}

/* Fragmentation */

#define FRAG_KEYS   20000
#define FRAG_ROUNDS 60

/* Records' bytes held, against the live ones: factor 2 plus a per-store constant. */
#define FRAG_FACTOR 2
#define FRAG_CONST  (256u << 10)

/*
 * Churn that keeps moving every record to another size class (values growing round
 * after round, then shrinking, keys deleted and re-created among them): free lists of
 * the classes left behind would hold all the rounds' memory without compaction. After
 * each round the bytes held for records stay within FRAG_FACTOR of the live record bytes
 * (key, value, an 8-byte header, rounded to 8) plus FRAG_CONST, and every value reads back.
 */
static void
test_fragmentation(void **state)
{
	struct km_store *s = store_new(1200, 1);
	static uint8_t val[1200];
	uint64_t rng = 99, live, held, max_ratio_x100 = 0, peak = 0;
	struct km_store_stats st;
	struct km_value_ref ref;
	unsigned int round, i;
	uint8_t key[16];
	uint32_t *len = calloc(FRAG_KEYS, sizeof(*len));

	(void)state;
	assert_non_null(len);
	memset(val, 'f', sizeof(val));
	for (round = 0; round < FRAG_ROUNDS; round++) {
		/* up to ~1 KiB then back down: every slab class is visited twice */
		uint32_t base = round < FRAG_ROUNDS / 2 ? round * 33 : (FRAG_ROUNDS - round) * 33;

		live = 0;
		for (i = 0; i < FRAG_KEYS; i++) {
			struct km_key k = {.data = key, .len = sizeof(key)};

			memcpy(key, &i, sizeof(i));
			memset(key + sizeof(i), 'k', sizeof(key) - sizeof(i));
			k.hash = km_key_hash(key, sizeof(key));
			if (rng_below(&rng, 10) == 0) {
				km_store_del(s, &k, KM_VERSION_ANY, NULL);
				len[i] = UINT32_MAX;
				continue;
			}
			len[i] = base + (uint32_t)rng_below(&rng, 8);
			assert_int_equal(km_store_put(s, &k, val, len[i], 0, 0, NULL), 0);
			live += (8 + sizeof(key) + len[i] + 7) & ~(uint64_t)7;
		}
		held = entry_held(s, &st);
		if (held > peak)
			peak = held;
		if (held * 100 / live > max_ratio_x100)
			max_ratio_x100 = held * 100 / live;
		if (held > FRAG_FACTOR * live + FRAG_CONST)
			fail_msg("round %u: %llu bytes held for %llu live", round,
				(unsigned long long)held, (unsigned long long)live);
	}
	for (i = 0; i < FRAG_KEYS; i++) {
		struct km_key k = {.data = key, .len = sizeof(key)};

		memcpy(key, &i, sizeof(i));
		memset(key + sizeof(i), 'k', sizeof(key) - sizeof(i));
		k.hash = km_key_hash(key, sizeof(key));
		if (len[i] == UINT32_MAX) {
			assert_int_equal(km_store_get(s, &k, &ref), -ENOENT);
			continue;
		}
		assert_int_equal(km_store_get(s, &k, &ref), 0);
		assert_int_equal(ref.len, len[i]);
		assert_memory_equal(ref.data, val, len[i]);
	}
	print_message("fragmentation: held/live at most %llu.%02llu, peak %llu KiB\n",
		(unsigned long long)max_ratio_x100 / 100, (unsigned long long)max_ratio_x100 % 100,
		(unsigned long long)peak >> 10);
	free(len);
	km_store_destroy(s);
}

/* Huge pages */

/* 2 MiB pages of the hugetlb pool free and not promised to a mapping yet (0: none, or no
 * pool of 2 MiB pages). */
static long
hugetlb_free(void)
{
	static const char *const f[2] = {
		"/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
		"/sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages",
	};
	long v[2] = {0, 0};
	unsigned int i;

	for (i = 0; i < 2; i++) {
		FILE *fp = fopen(f[i], "r");

		if (fp == NULL)
			return 0;
		if (fscanf(fp, "%ld", &v[i]) != 1)
			v[i] = 0;
		fclose(fp);
	}
	return v[0] - v[1];
}

#define HUGE_SZ   88
#define HUGE_N    400000 /* 35 MB of one class: 8 MiB in small slabs, then 2 MiB ones */
#define HUGE_SLAB (2u << 20)
#define HUGE_MAX  64

struct slab_walk {
	uint64_t bytes;         /* all slabs */
	uint64_t huge;          /* kinds HUGETLB and THP */
	uint64_t biggest_small; /* largest slab of the other kinds */
	unsigned int n_2m, n_tlb, n_thp, misaligned;
	enum mem_slab_kind oldest_2m; /* the first 2 MiB slab's kind (the walk is newest first) */
	const void *at[HUGE_MAX];     /* the 2 MiB slabs */
};

static void
slab_seen(void *arg, const void *slab, uint64_t bytes, enum mem_slab_kind kind)
{
	struct slab_walk *w = arg;

	w->bytes += bytes;
	if (kind == MEM_SLAB_HUGETLB || kind == MEM_SLAB_THP) {
		w->huge += bytes;
		w->n_tlb += kind == MEM_SLAB_HUGETLB;
		w->n_thp += kind == MEM_SLAB_THP;
	} else if (bytes > w->biggest_small && bytes != HUGE_SLAB) {
		w->biggest_small = bytes;
	}
	if (bytes == HUGE_SLAB && kind != MEM_SLAB_MALLOC) {
		if (w->n_2m < HUGE_MAX)
			w->at[w->n_2m] = slab;
		w->n_2m++;
		w->misaligned += (uintptr_t)slab % HUGE_SLAB != 0;
		w->oldest_2m = kind;
	}
}

/* The process's address space (VmSize, kB). */
static long
vm_size_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmSize: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* Whether no page of [p, p + len) is mapped any more (msync() of a range with an unmapped
 * page fails with ENOMEM: page by page, a mapping left behind shows). */
static int
all_unmapped(const void *p, size_t len)
{
	size_t off, pg = (size_t)sysconf(_SC_PAGESIZE);

	for (off = 0; off < len; off += pg) {
		errno = 0;
		if (msync((void *)((uintptr_t)p + off), pg, MS_ASYNC) != -1 || errno != ENOMEM)
			return 0;
	}
	return 1;
}

/*
 * One class filled with 35 MB of records: with huge pages allowed, its slabs past 8 MiB
 * are 2 MiB, aligned, THP-advised where the kernel has THP (auto; hugetlb: on pool pages
 * when the pool had free ones at the start, never with auto); none with no_huge, slabs of
 * at most 1 MiB then. Every record reads back, the figures are the slabs' lengths, the
 * class holds within 5/4 of its records, the address space grows by what the slabs hold
 * (the ends of the larger mappings that made them aligned are gone), and release unmaps
 * every page of every 2 MiB slab.
 */
static void
huge_run(int no_huge, int hugetlb)
{
	struct mem_slabs a = {.no_huge = no_huge, .hugetlb = hugetlb};
	uint8_t **p = calloc(HUGE_N, sizeof(*p));
	long tlb_free = hugetlb_free(), vm0 = vm_size_kb(), vm1;
	int thp = access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0;
	struct slab_walk w = {0};
	unsigned int i;

	assert_non_null(p);
	for (i = 0; i < HUGE_N; i++) {
		p[i] = mem_slab_alloc(&a, HUGE_SZ - (i % 8)); /* one class */
		assert_non_null(p[i]);
		assert_int_equal((uintptr_t)p[i] % 8, 0);
		fill(p[i], HUGE_SZ - (i % 8), i);
	}
	for (i = 0; i < HUGE_N; i++)
		assert_true(filled(p[i], HUGE_SZ - (i % 8), i));
	assert_int_equal(a.slab_live, (uint64_t)HUGE_N * HUGE_SZ);
	mem_slabs_each(&a, slab_seen, &w);
	/* What the process pays: the slabs' lengths (or malloc costs) and the class table. */
	assert_int_equal(w.bytes + a.cls_cost, a.slab_held);
	assert_int_equal(w.huge, a.huge_held);
	/* The mappings: the slabs, not the 4 MiB the aligned ones came from (+ 1 MiB slack
	 * for malloc's own arenas and the test's array). */
	vm1 = vm_size_kb();
	assert_true(vm0 > 0 && vm1 > 0);
	assert_true(
		(uint64_t)(vm1 - vm0) * 1024 <= a.slab_held + (HUGE_N * sizeof(*p)) + (1u << 20));
	assert_true(a.slab_held <= a.slab_live + a.slab_live / 4 + (64u << 10));
	assert_true(w.biggest_small <= 1u << 20);
	if (no_huge) {
		assert_int_equal(w.n_2m, 0);
		assert_int_equal(a.huge_held, 0);
	} else {
		/* 35 MB past the first 8 MiB: at least 12 slabs of 2 MiB */
		assert_true(w.n_2m >= 12 && w.n_2m <= HUGE_MAX);
		assert_int_equal(w.misaligned, 0);
		if (!hugetlb)
			assert_int_equal(w.n_tlb, 0); /* the pool is the system's: not by default */
		if (hugetlb && tlb_free > 0)
			assert_int_equal(w.oldest_2m, MEM_SLAB_HUGETLB);
		if (thp)
			assert_int_equal(w.n_tlb + w.n_thp, w.n_2m);
		assert_int_equal(a.huge_held, (uint64_t)(w.n_tlb + w.n_thp) * HUGE_SLAB);
		print_message("2 MiB slabs: %u hugetlb, %u THP-advised (pool had %ld free)\n",
			w.n_tlb, w.n_thp, tlb_free);
	}
	/* Half freed, then the rest: free objects are reused, nothing leaves the slabs. */
	for (i = 0; i < HUGE_N; i += 2)
		mem_slab_free(&a, p[i], HUGE_SZ - (i % 8));
	for (i = 0; i < HUGE_N; i += 2) {
		p[i] = mem_slab_alloc(&a, HUGE_SZ);
		assert_non_null(p[i]);
		fill(p[i], HUGE_SZ, i + HUGE_N);
	}
	for (i = 0; i < HUGE_N; i++)
		assert_true(i % 2 == 0 ? filled(p[i], HUGE_SZ, i + HUGE_N)
				       : filled(p[i], HUGE_SZ - (i % 8), i));
	for (i = 0; i < HUGE_N; i++)
		mem_slab_free(&a, p[i], HUGE_SZ);
	assert_int_equal(a.slab_live, 0);
	mem_slabs_release(&a);
	assert_int_equal(mem_slabs_held(&a), 0);
	assert_int_equal(a.huge_held, 0);
	assert_int_equal(a.no_huge, no_huge);
	assert_int_equal(a.hugetlb, hugetlb);
	for (i = 0; i < w.n_2m && i < HUGE_MAX; i++)
		assert_true(all_unmapped(w.at[i], HUGE_SLAB));
	free(p);
}

static void
test_huge_slabs(void **state)
{
	(void)state;
	huge_run(0, 0);
	huge_run(0, 1);
	huge_run(1, 0);
}

#define HSTORE_KEYS 250000 /* 22 MB of 88-byte records in one class */

static void
hstore_key(uint8_t *key, unsigned int i, struct km_key *k)
{
	memcpy(key, &i, sizeof(i));
	memset(key + sizeof(i), 'h', 16 - sizeof(i));
	k->data = key;
	k->len = 16;
	k->hash = km_key_hash(key, 16);
}

static void
hstore_check(struct km_store *s, const uint8_t *val, unsigned int del_mod)
{
	struct km_value_ref ref;
	uint8_t key[16];
	struct km_key k;
	unsigned int i;

	for (i = 0; i < HSTORE_KEYS; i++) {
		hstore_key(key, i, &k);
		if (del_mod != 0 && i % 5 < del_mod) {
			assert_int_equal(km_store_get(s, &k, &ref), -ENOENT);
			continue;
		}
		assert_int_equal(km_store_get(s, &k, &ref), 0);
		assert_int_equal(ref.len, 64);
		assert_memory_equal(ref.data, val + i % 64, 64);
	}
}

/*
 * The store over 2 MiB slabs: hugepage_bytes reports them (0 with hugepages off), records
 * read back after a compaction that moves them into new 2 MiB slabs, and the last delete
 * gives everything back.
 */
static void
hstore_run(uint8_t hugepages)
{
	struct km_store_params prm = {
		.name = "huge", .value_max = 64, .socket_id = -1, .hugepages = hugepages};
	int thp = access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0;
	static uint8_t val[128];
	struct km_store *s = NULL;
	struct km_store_stats st;
	uint64_t held_full, held_after;
	uint8_t key[16];
	struct km_key k;
	unsigned int i;

	for (i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)(i * 7);
	assert_int_equal(km_store_create("mem", &prm, &s), 0);
	for (i = 0; i < HSTORE_KEYS; i++) {
		hstore_key(key, i, &k);
		assert_int_equal(km_store_put(s, &k, val + i % 64, 64, KM_VERSION_ANY, 0, NULL), 0);
	}
	held_full = entry_held(s, &st);
	if (hugepages == KM_HUGEPAGES_OFF)
		assert_int_equal(st.hugepage_bytes, 0);
	else if (thp)
		assert_true(st.hugepage_bytes >= 5 * (uint64_t)HUGE_SLAB);
	assert_true(st.hugepage_bytes <= held_full);
	hstore_check(s, val, 0);
	/* 2 in 5 deleted: past the fragmentation bound, a compaction packs the 13 MB left. */
	for (i = 0; i < HSTORE_KEYS; i++) {
		hstore_key(key, i, &k);
		if (i % 5 < 2)
			assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, NULL), 0);
	}
	held_after = entry_held(s, &st);
	assert_true(held_after < held_full * 3 / 4);
	if (hugepages == KM_HUGEPAGES_OFF)
		assert_int_equal(st.hugepage_bytes, 0);
	else if (thp)
		assert_true(st.hugepage_bytes > 0);
	hstore_check(s, val, 2);
	for (i = 0; i < HSTORE_KEYS; i++) {
		hstore_key(key, i, &k);
		if (i % 5 >= 2)
			assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, NULL), 0);
	}
	assert_int_equal(entry_held(s, &st), 0);
	assert_int_equal(st.hugepage_bytes, 0);
	km_store_destroy(s);
}

static void
test_huge_store(void **state)
{
	(void)state;
	hstore_run(KM_HUGEPAGES_AUTO);
	hstore_run(KM_HUGEPAGES_HUGETLB);
	hstore_run(KM_HUGEPAGES_OFF);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_edges),
		cmocka_unit_test(test_small_store),
		cmocka_unit_test(test_dram_after_deletes),
		cmocka_unit_test(test_largest),
		cmocka_unit_test(test_versions_wide),
		cmocka_unit_test(test_store_differential),
		cmocka_unit_test(test_fragmentation),
		cmocka_unit_test(test_huge_slabs),
		cmocka_unit_test(test_huge_store),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
