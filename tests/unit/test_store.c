/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Store registry and "mem" driver. The driver is checked against a plain reference model
 * (ISA-L style) over fixed seeds, plus targeted cases for what a random walk rarely
 * reaches: tag collisions, long probe chains, wrap-around at the table end, growth.
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

#include <km_store.h>

struct tkey {
	uint8_t buf[256];
	struct km_key k;
};

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

/* Mirrors mem_home() in drivers/store/mem/store_mem.c: the home slot of a hash in a table
 * of nb slots, (rotl(hash, 32) * nb) >> 64. */
static uint64_t
mem_home_of(uint64_t hash, uint64_t nb)
{
	uint64_t x = (hash << 32) | (hash >> 32);

	return (uint64_t)(((unsigned __int128)x * nb) >> 64);
}

/* Mirrors mem_next_size() and mem_grow_at(): table sizes are m * 2^e with m one of 8, 10,
 * 12, 14; the table grows to the next when its load would pass 7/8. */
static uint64_t
mem_next_size_of(uint64_t nb)
{
	uint64_t e = 0;

	while ((nb >> e) > 14)
		e++;
	assert_true((nb >> e) << e == nb && (nb >> e) % 2 == 0 && (nb >> e) >= 8);
	return ((nb >> e) + 2) << e;
}

static uint64_t
mem_grow_at_of(uint64_t nb)
{
	return nb - nb / 8;
}

static void
tkey_set(struct tkey *t, const char *prefix, uint64_t id)
{
	int n = snprintf((char *)t->buf, sizeof(t->buf), "%s%llu", prefix, (unsigned long long)id);

	t->k.data = t->buf;
	t->k.len = (uint16_t)n;
	t->k.hash = km_key_hash(t->buf, t->k.len);
}

static struct km_store *
store_new(uint32_t value_max, uint32_t initial_keys, uint64_t version_base)
{
	struct km_store_params p = {
		.name = "test",
		.value_max = value_max,
		.initial_keys = initial_keys,
		.version_base = version_base,
		.socket_id = -1,
	};
	struct km_store *s = NULL;

	assert_int_equal(km_store_create("mem", &p, &s), 0);
	assert_non_null(s);
	return s;
}

static void
check_value(
	struct km_store *s, const struct km_key *k, const void *val, uint32_t len, uint64_t version)
{
	struct km_value_ref v;

	assert_int_equal(km_store_get(s, k, &v), 0);
	assert_int_equal(v.len, len);
	if (len != 0)
		assert_memory_equal(v.data, val, len);
	assert_int_equal(v.version, version);
}

static void
check_absent(struct km_store *s, const struct km_key *k)
{
	struct km_value_ref v;

	assert_int_equal(km_store_get(s, k, &v), -ENOENT);
}

/* Registry */

static int
fake_create(const struct km_store_params *p, struct km_store **out)
{
	(void)p;
	(void)out;
	return -EPERM;
}

static const struct km_store_ops fake_ops = {.name = "fake", .create = fake_create};
static const struct km_store_ops fake_mem_ops = {.name = "mem", .create = fake_create};

static void
test_registry(void **state)
{
	const struct km_store_ops *mem = km_store_driver("mem");
	struct km_store_params p = {.value_max = 16};
	struct km_store *s = NULL;

	(void)state;
	assert_non_null(mem);
	assert_string_equal(mem->name, "mem");
	assert_null(km_store_driver("no-such-driver"));
	assert_null(km_store_driver(NULL));
	assert_int_equal(km_store_create("no-such-driver", &p, &s), -ENOENT);
	assert_int_equal(km_store_create(NULL, &p, &s), -EINVAL);
	assert_int_equal(km_store_create("mem", NULL, &s), -EINVAL);
	assert_int_equal(km_store_create("mem", &p, NULL), -EINVAL);
	assert_null(s);

	/* A second driver named "mem" is ignored: the first registration wins. */
	km_store_register(&fake_mem_ops);
	assert_ptr_equal(km_store_driver("mem"), mem);
	km_store_register(NULL);

	/* create dispatches to the named driver and passes its result through */
	km_store_register(&fake_ops);
	assert_ptr_equal(km_store_driver("fake"), &fake_ops);
	assert_int_equal(km_store_create("fake", &p, &s), -EPERM);

	p.value_max = UINT16_MAX + 1; /* the record keeps value lengths in 16 bits */
	assert_int_equal(km_store_create("mem", &p, &s), -EINVAL);
	p.value_max = UINT16_MAX;
	assert_int_equal(km_store_create("mem", &p, &s), 0);
	km_store_destroy(s);
	km_store_destroy(NULL);
}

static void
test_key_hash(void **state)
{
	(void)state;
	/* XXH3-64 known answer: the client computes the same function. */
	assert_true(km_key_hash("", 0) == UINT64_C(0x2d06800538d394c2));
	assert_true(km_key_hash("a", 1) != km_key_hash("b", 1));
}

/* Basics */

static void
test_basic(void **state)
{
	struct km_store *s = store_new(64, 0, 0);
	struct tkey a, b;
	uint64_t v1, v2, v3, v;

	(void)state;
	tkey_set(&a, "alpha", 1);
	tkey_set(&b, "beta", 2);
	check_absent(s, &a.k);

	assert_int_equal(km_store_put(s, &a.k, "hello", 5, KM_VERSION_ANY, 0, &v1), 0);
	assert_true(v1 > 0);
	check_value(s, &a.k, "hello", 5, v1);
	check_absent(s, &b.k);

	/* same size: in place; other sizes: moved record */
	assert_int_equal(km_store_put(s, &a.k, "world", 5, KM_VERSION_ANY, 0, &v2), 0);
	check_value(s, &a.k, "world", 5, v2);
	assert_int_equal(km_store_put(s, &a.k, "a much longer value", 19, 0, 0, &v3), 0);
	check_value(s, &a.k, "a much longer value", 19, v3);
	assert_int_equal(km_store_put(s, &a.k, NULL, 0, KM_VERSION_ANY, 0, &v), 0);
	check_value(s, &a.k, NULL, 0, v);

	assert_int_equal(km_store_del(s, &a.k, KM_VERSION_ANY, &v2), 0);
	assert_int_equal(v2, v); /* the deleted entry's version */
	check_absent(s, &a.k);
	assert_int_equal(km_store_del(s, &a.k, KM_VERSION_ANY, &v2), -ENOENT);
	assert_int_equal(v2, 0);

	/* NULL version pointers are tolerated */
	assert_int_equal(km_store_put(s, &b.k, "x", 1, KM_VERSION_ANY, 0, NULL), 0);
	assert_int_equal(km_store_del(s, &b.k, KM_VERSION_ANY, NULL), 0);
	km_store_destroy(s);
}

static void
test_versions(void **state)
{
	const uint64_t base = 1000;
	struct km_store *s = store_new(64, 0, base);
	uint64_t last = base, v, dv;
	struct tkey k[4];
	int round, i;

	(void)state;
	for (i = 0; i < 4; i++)
		tkey_set(&k[i], "ver", (uint64_t)i);
	for (round = 0; round < 50; round++) {
		for (i = 0; i < 4; i++) {
			assert_int_equal(km_store_put(s, &k[i].k, "v", 1, 0, 0, &v), 0);
			assert_true(v > last);
			last = v;
		}
		/* delete then re-create: the new entry's version is above the deleted one */
		i = round % 4;
		assert_int_equal(km_store_del(s, &k[i].k, KM_VERSION_ANY, &dv), 0);
		assert_true(dv <= last);
		assert_int_equal(km_store_put(s, &k[i].k, "v", 1, 0, 1, &v), 0);
		assert_true(v > dv && v > last);
		last = v;
	}
	km_store_destroy(s);
}

static void
test_cas(void **state)
{
	struct km_store *s = store_new(64, 0, 0);
	uint64_t v1, v2, v;
	struct tkey a;

	(void)state;
	tkey_set(&a, "cas", 0);

	/* expected version on an absent key: stale, current = 0, nothing written */
	assert_int_equal(km_store_put(s, &a.k, "x", 1, 77, 0, &v), -ESTALE);
	assert_int_equal(v, 0);
	check_absent(s, &a.k);

	assert_int_equal(km_store_put(s, &a.k, "one", 3, KM_VERSION_ANY, 1, &v1), 0);
	assert_int_equal(km_store_put(s, &a.k, "two", 3, v1, 0, &v2), 0);
	assert_true(v2 > v1);
	check_value(s, &a.k, "two", 3, v2);

	/* lost race: the old version no longer matches */
	assert_int_equal(km_store_put(s, &a.k, "three", 5, v1, 0, &v), -ESTALE);
	assert_int_equal(v, v2);
	check_value(s, &a.k, "two", 3, v2);

	/* create_only on a present key, with or without an expected version */
	assert_int_equal(km_store_put(s, &a.k, "four", 4, KM_VERSION_ANY, 1, &v), -EEXIST);
	assert_int_equal(v, v2);
	assert_int_equal(km_store_put(s, &a.k, "four", 4, v2, 1, &v), -EEXIST);
	assert_int_equal(v, v2);
	check_value(s, &a.k, "two", 3, v2);

	/* failed writes consume no version */
	assert_int_equal(km_store_put(s, &a.k, "five", 4, v2, 0, &v), 0);
	assert_int_equal(v, v2 + 1);
	km_store_destroy(s);
}

static void
test_conditional_del(void **state)
{
	struct km_store *s = store_new(64, 0, 0);
	struct tkey a;
	uint64_t v1, v;

	(void)state;
	tkey_set(&a, "del", 0);
	assert_int_equal(km_store_del(s, &a.k, 5, &v), -ENOENT);
	assert_int_equal(v, 0);
	assert_int_equal(km_store_put(s, &a.k, "x", 1, KM_VERSION_ANY, 0, &v1), 0);
	assert_int_equal(km_store_del(s, &a.k, v1 + 1, &v), -ESTALE);
	assert_int_equal(v, v1);
	check_value(s, &a.k, "x", 1, v1);
	assert_int_equal(km_store_del(s, &a.k, v1, &v), 0);
	assert_int_equal(v, v1);
	check_absent(s, &a.k);
	km_store_destroy(s);
}

static void
test_limits(void **state)
{
	struct km_store *s = store_new(100, 0, 0);
	static uint8_t big[256];
	struct km_store_stats st;
	struct km_value_ref ref;
	struct km_key k;
	uint64_t v;

	(void)state;
	memset(big, 'k', sizeof(big));
	k.data = big;
	k.len = 1;
	k.hash = km_key_hash(big, k.len);
	assert_int_equal(km_store_put(s, &k, big, 100, KM_VERSION_ANY, 0, &v), 0);
	check_value(s, &k, big, 100, v);
	assert_int_equal(km_store_put(s, &k, big, 101, KM_VERSION_ANY, 0, &v), -E2BIG);
	check_value(s, &k, big, 100, 1);
	assert_int_equal(km_store_put(s, &k, NULL, 1, KM_VERSION_ANY, 0, &v), -EINVAL);

	k.len = 250;
	k.hash = km_key_hash(big, k.len);
	assert_int_equal(km_store_put(s, &k, "v", 1, KM_VERSION_ANY, 0, &v), 0);
	check_value(s, &k, "v", 1, v);

	k.len = 251;
	k.hash = km_key_hash(big, k.len);
	assert_int_equal(km_store_put(s, &k, "v", 1, KM_VERSION_ANY, 0, &v), -EINVAL);
	assert_int_equal(km_store_get(s, &k, &ref), -EINVAL);
	assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, &v), -EINVAL);
	k.len = 0;
	k.hash = km_key_hash(big, k.len);
	assert_int_equal(km_store_put(s, &k, "v", 1, KM_VERSION_ANY, 0, &v), -EINVAL);
	assert_int_equal(km_store_get(s, &k, &ref), -EINVAL);
	assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, &v), -EINVAL);
	k.len = 4;
	k.data = NULL;
	assert_int_equal(km_store_put(s, &k, "v", 1, KM_VERSION_ANY, 0, &v), -EINVAL);

	km_store_stats(s, &st);
	assert_int_equal(st.keys, 2);
	assert_int_equal(st.value_bytes, 1 + 100 + 250 + 1);
	km_store_destroy(s);
}

/* Differential test against a reference model */

#define DIFF_KEYS      5000
#define DIFF_OPS       200000
#define DIFF_VALUE_MAX 512

struct ref_entry {
	struct tkey key;
	int present;
	uint64_t version;
	uint32_t len;
	uint8_t val[DIFF_VALUE_MAX];
};

/* The reference: one array slot per key id, semantics written out plainly. */
struct ref_store {
	struct ref_entry e[DIFF_KEYS];
	uint64_t version;
	uint64_t keys;
	uint64_t bytes;
};

static int
ref_put(struct ref_store *r, struct ref_entry *e, const uint8_t *val, uint32_t len, uint64_t expect,
	int create_only, uint64_t *version)
{
	*version = 0;
	if (len > DIFF_VALUE_MAX)
		return -E2BIG;
	if (e->present && create_only) {
		*version = e->version;
		return -EEXIST;
	}
	if (expect != KM_VERSION_ANY && (!e->present || e->version != expect)) {
		*version = e->present ? e->version : 0;
		return -ESTALE;
	}
	if (e->present) {
		r->bytes -= e->key.k.len + e->len;
	} else {
		r->keys++;
		e->present = 1;
	}
	memcpy(e->val, val, len);
	e->len = len;
	e->version = ++r->version;
	r->bytes += e->key.k.len + len;
	*version = e->version;
	return 0;
}

static int
ref_del(struct ref_store *r, struct ref_entry *e, uint64_t expect, uint64_t *version)
{
	*version = 0;
	if (!e->present)
		return -ENOENT;
	*version = e->version;
	if (expect != KM_VERSION_ANY && e->version != expect)
		return -ESTALE;
	r->version++;
	r->keys--;
	r->bytes -= e->key.k.len + e->len;
	e->present = 0;
	return 0;
}

/* Load: the entry takes the given version; versions issued later are above it. */
static int
ref_load(struct ref_store *r, struct ref_entry *e, const uint8_t *val, uint32_t len,
	uint64_t version)
{
	if (version == 0)
		return -EINVAL;
	if (len > DIFF_VALUE_MAX)
		return -E2BIG;
	if (e->present) {
		r->bytes -= e->key.k.len + e->len;
	} else {
		r->keys++;
		e->present = 1;
	}
	memcpy(e->val, val, len);
	e->len = len;
	e->version = version;
	r->bytes += e->key.k.len + len;
	if (version > r->version)
		r->version = version;
	return 0;
}

static uint64_t
pick_expect(uint64_t *rng, const struct ref_entry *e)
{
	/* right version, wrong version, or a version on an absent key */
	switch (rng_below(rng, 3)) {
	case 0:
		return e->present ? e->version : 1 + rng_below(rng, 1000);
	case 1:
		return e->version + 1;
	default:
		return 1 + rng_below(rng, 1u << 20);
	}
}

static int
count_cb(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	(void)k;
	(void)v;
	(*(uint64_t *)arg)++;
	return 0;
}

static void
check_all(struct km_store *s, const struct ref_store *r)
{
	struct km_store_stats st;
	uint64_t walked = 0;
	unsigned int i;

	for (i = 0; i < DIFF_KEYS; i++) {
		const struct ref_entry *e = &r->e[i];

		if (e->present)
			check_value(s, &e->key.k, e->val, e->len, e->version);
		else
			check_absent(s, &e->key.k);
	}
	km_store_stats(s, &st);
	assert_int_equal(st.keys, r->keys);
	assert_int_equal(st.value_bytes, r->bytes);
	assert_int_equal(st.version_last, r->version);
	assert_int_equal(s->ops->walk(s, count_cb, &walked), 0);
	assert_int_equal(walked, r->keys);
}

/* A version for a load: 0 now and then, else around the store's last one (below it is
 * fine: a handed-over entry may be older than what the target issued). */
static uint64_t
pick_load_version(uint64_t *rng, const struct ref_store *r)
{
	switch (rng_below(rng, 8)) {
	case 0:
		return 0;
	case 1:
	case 2:
	case 3:
		return r->version + 1 + rng_below(rng, 1000);
	default:
		return 1 + rng_below(rng, r->version);
	}
}

/* with_load: one op in eight is a load (the others keep their proportions). */
static void
run_differential(uint64_t seed, uint32_t initial_keys, int with_load)
{
	struct ref_store *r = calloc(1, sizeof(*r));
	uint8_t val[DIFF_VALUE_MAX + 1];
	struct km_store *s;
	uint64_t rng = seed;
	unsigned int i, j;

	assert_non_null(r);
	r->version = 1u << 30;
	s = store_new(DIFF_VALUE_MAX, initial_keys, r->version);
	for (i = 0; i < DIFF_KEYS; i++) {
		struct tkey *t = &r->e[i].key;
		/* unique prefix, then random bytes: lengths 1..250, mostly short */
		uint32_t len = rng_below(&rng, 16) == 0 ? 250 : 24;
		int n = snprintf((char *)t->buf, sizeof(t->buf), "%u", i);

		len = n + rng_below(&rng, len - n + 1);
		for (j = n; j < len; j++)
			t->buf[j] = (uint8_t)rng_next(&rng);
		t->k.data = t->buf;
		t->k.len = (uint16_t)len;
		t->k.hash = km_key_hash(t->buf, len);
	}

	for (i = 0; i < DIFF_OPS; i++) {
		struct ref_entry *e = &r->e[rng_below(&rng, DIFF_KEYS)];
		uint32_t op = rng_below(&rng, 100), len;
		uint64_t expect = KM_VERSION_ANY, got_v, ref_v;
		int create_only = 0, got, want;
		struct km_value_ref ref;

		if (with_load && rng_below(&rng, 8) == 0) {
			uint64_t lv = pick_load_version(&rng, r);

			len = rng_below(&rng, 64) == 0 ? DIFF_VALUE_MAX + 1
						       : rng_below(&rng, DIFF_VALUE_MAX + 1);
			for (j = 0; j < len; j++)
				val[j] = (uint8_t)rng_next(&rng);
			want = ref_load(r, e, val, len, lv);
			got = km_store_load(s, &e->key.k, val, len, lv);
			assert_int_equal(got, want);
			continue;
		}
		if (op < 30) {
			if (!e->present)
				assert_int_equal(km_store_get(s, &e->key.k, &ref), -ENOENT);
			else
				check_value(s, &e->key.k, e->val, e->len, e->version);
			continue;
		}
		if (op < 80) {
			/* value sizes 0..value_max, sometimes one too many */
			len = rng_below(&rng, 64) == 0 ? DIFF_VALUE_MAX + 1
						       : rng_below(&rng, DIFF_VALUE_MAX + 1);
			for (j = 0; j < len; j++)
				val[j] = (uint8_t)rng_next(&rng);
			if (op >= 55 && op < 70)
				expect = pick_expect(&rng, e);
			else if (op >= 70)
				create_only = 1;
			want = ref_put(r, e, val, len, expect, create_only, &ref_v);
			got = km_store_put(s, &e->key.k, val, len, expect, create_only, &got_v);
		} else {
			if (op >= 90)
				expect = pick_expect(&rng, e);
			want = ref_del(r, e, expect, &ref_v);
			got = km_store_del(s, &e->key.k, expect, &got_v);
		}
		assert_int_equal(got, want);
		assert_int_equal(got_v, ref_v);
		if (i % 20000 == 0)
			check_all(s, r);
	}
	check_all(s, r);
	km_store_destroy(s);
	free(r);
}

static void
test_differential(void **state)
{
	(void)state;
	run_differential(1, 0, 0);    /* grows from the default size */
	run_differential(2, 6000, 0); /* presized, no growth */
	run_differential(3, 0, 1);    /* loads among the writes */
}

/* Growth */

#define GROW_KEYS 300000

static void
test_growth(void **state)
{
	struct km_store *s = store_new(16, 0, 0);
	uint64_t i, bytes = 0, slots, prev = 64, grows = 0;
	struct km_store_stats st;
	struct km_value_ref v;
	struct tkey t;

	(void)state;
	for (i = 0; i < GROW_KEYS; i++) {
		tkey_set(&t, "grow-", i);
		assert_int_equal(km_store_put(s, &t.k, &i, sizeof(i), 0, 1, NULL), 0);
		bytes += t.k.len + sizeof(i);
		/* grows one size up exactly when the load would pass 7/8 */
		km_store_stats(s, &st);
		slots = st.index_bytes / 8;
		assert_true(i + 1 <= mem_grow_at_of(slots));
		if (slots != prev) {
			assert_int_equal(slots, mem_next_size_of(prev));
			assert_int_equal(i + 1, mem_grow_at_of(prev) + 1);
			prev = slots;
			grows++;
		}
	}
	km_store_stats(s, &st);
	assert_int_equal(st.keys, GROW_KEYS);
	assert_int_equal(st.value_bytes, bytes);
	slots = st.index_bytes / 8;
	assert_true(grows > 20);
	assert_int_equal(slots % 8, 0);
	assert_true(GROW_KEYS <= mem_grow_at_of(slots)); /* load <= 7/8 */
	assert_true(GROW_KEYS * 10 > slots * 7);         /* and >= 0.7: it did not over-grow */
	assert_true(st.entry_overhead_bytes >= GROW_KEYS * 8);

	for (i = 0; i < GROW_KEYS; i++) {
		tkey_set(&t, "grow-", i);
		assert_int_equal(km_store_get(s, &t.k, &v), 0);
		assert_int_equal(v.len, sizeof(i));
		assert_memory_equal(v.data, &i, sizeof(i));
	}
	/* deleting every other key keeps the rest findable */
	for (i = 0; i < GROW_KEYS; i += 2) {
		tkey_set(&t, "grow-", i);
		assert_int_equal(km_store_del(s, &t.k, KM_VERSION_ANY, NULL), 0);
	}
	for (i = 0; i < GROW_KEYS; i++) {
		tkey_set(&t, "grow-", i);
		if (i % 2 == 0)
			check_absent(s, &t.k);
		else
			assert_int_equal(km_store_get(s, &t.k, &v), 0);
	}
	km_store_stats(s, &st);
	assert_int_equal(st.keys, GROW_KEYS / 2);
	km_store_destroy(s);
}

/* Collisions and probe chains */

/* Mirrors mem_tag() in drivers/store/mem/store_mem.c: the top 15 bits of hash * phi. */
static uint64_t
mem_tag_of(uint64_t hash)
{
	return (hash * UINT64_C(0x9e3779b97f4a7c15)) >> 49;
}

/* Insert the keys in one order, delete them in another, checking every key after every
 * step: deletions inside probe chains must not hide later keys. */
static void
churn(struct km_store *s, struct tkey *keys, unsigned int n, uint64_t *rng)
{
	unsigned int order[64], i, j, tmp;
	uint64_t version[64] = {0}, v;

	assert_true(n <= 64);
	for (i = 0; i < n; i++)
		order[i] = i;
	for (i = n - 1; i > 0; i--) {
		j = rng_below(rng, i + 1);
		tmp = order[i], order[i] = order[j], order[j] = tmp;
	}
	for (i = 0; i < n; i++) {
		struct tkey *t = &keys[order[i]];

		assert_int_equal(
			km_store_put(s, &t->k, t->buf, t->k.len, 0, 1, &version[order[i]]), 0);
	}
	for (i = n - 1; i > 0; i--) {
		j = rng_below(rng, i + 1);
		tmp = order[i], order[i] = order[j], order[j] = tmp;
	}
	for (i = 0; i < n; i++) {
		assert_int_equal(km_store_del(s, &keys[order[i]].k, KM_VERSION_ANY, &v), 0);
		assert_int_equal(v, version[order[i]]);
		version[order[i]] = 0;
		for (j = 0; j < n; j++) {
			if (version[j] != 0)
				check_value(s, &keys[j].k, keys[j].buf, keys[j].k.len, version[j]);
			else
				check_absent(s, &keys[j].k);
		}
	}
}

/* Find n keys whose home slot in a table of nb slots is home, and, if tag >= 0, that tag. */
static void
find_keys(struct tkey *out, unsigned int n, const char *prefix, uint64_t nb, uint64_t home,
	int64_t tag, uint64_t *id)
{
	unsigned int found = 0;

	while (found < n) {
		tkey_set(&out[found], prefix, (*id)++);
		if (mem_home_of(out[found].k.hash, nb) != home)
			continue;
		if (tag >= 0 && mem_tag_of(out[found].k.hash) != (uint64_t)tag)
			continue;
		found++;
	}
}

static void
test_tag_collisions(void **state)
{
	/* initial_keys 14: 16 slots, so no growth with 14 keys */
	struct km_store *s = store_new(64, 14, 0);
	struct km_store_stats st;
	struct tkey keys[15];
	uint64_t id = 0, rng = 7;
	int64_t tag;
	int round;

	(void)state;
	km_store_stats(s, &st);
	assert_int_equal(st.index_bytes, 16 * 8);
	/* home 15: the chain wraps around the end of the table */
	find_keys(&keys[0], 1, "t", 16, 15, -1, &id);
	tag = (int64_t)mem_tag_of(keys[0].k.hash);
	find_keys(&keys[1], 7, "t", 16, 15, tag, &id);  /* same home, same tag */
	find_keys(&keys[8], 3, "t", 16, 0, tag, &id);   /* same tag, next home */
	find_keys(&keys[11], 3, "t", 16, 14, -1, &id);  /* chain before the end */
	find_keys(&keys[14], 1, "t", 16, 15, tag, &id); /* never inserted */
	for (round = 0; round < 200; round++) {
		churn(s, keys, 14, &rng);
		km_store_stats(s, &st);
		assert_int_equal(st.keys, 0);
		assert_int_equal(st.index_bytes, 16 * 8);
	}
	/* a full-tag, same-home miss must compare keys, not stop at the tag */
	for (round = 0; round < 14; round++)
		assert_int_equal(km_store_put(s, &keys[round].k, "v", 1, 0, 1, NULL), 0);
	check_absent(s, &keys[14].k);
	km_store_destroy(s);
}

static void
test_long_chains(void **state)
{
	/* 32 slots; 28 keys homed on slots 30, 31, 0: probe distances well past 15 */
	struct km_store *s = store_new(64, 28, 0);
	struct km_store_stats st;
	struct tkey keys[28];
	uint64_t id = 0, rng = 11;
	int round;

	(void)state;
	km_store_stats(s, &st);
	assert_int_equal(st.index_bytes, 32 * 8);
	find_keys(&keys[0], 10, "c", 32, 30, -1, &id);
	find_keys(&keys[10], 10, "c", 32, 31, -1, &id);
	find_keys(&keys[20], 8, "c", 32, 0, -1, &id);
	for (round = 0; round < 200; round++)
		churn(s, keys, 28, &rng);
	km_store_stats(s, &st);
	assert_int_equal(st.keys, 0);
	assert_int_equal(st.index_bytes, 32 * 8);
	km_store_destroy(s);
}

/*
 * Keys of one length that share home slot and tag, so that looking one up compares it with
 * the other: the driver compares keys of up to 16 bytes with overlapping word loads, and
 * must tell apart keys that differ only at their start, middle or end, at every length
 * around its cut-offs.
 */
static void
test_key_compare(void **state)
{
	struct tkey a, b;
	uint64_t rng = 31, va, vb, v, c;
	unsigned int len, i, win, at;

	(void)state;
	for (len = 3; len <= 24; len++) {
		for (win = 0; win < 3; win++) {
			/* initial_keys 2: 16 slots */
			struct km_store *s = store_new(64, 2, 0);

			for (i = 0; i < len; i++)
				a.buf[i] = (uint8_t)rng_next(&rng);
			a.k.data = a.buf;
			a.k.len = (uint16_t)len;
			a.k.hash = km_key_hash(a.buf, len);
			/* b differs from a in 3 bytes at the start, middle or end: about 2^20 of
			 * the 2^24 choices share home (4 bits) and tag (16 bits) with a. */
			at = win == 0 ? 0 : win == 1 ? (len - 3) / 2 : len - 3;
			b = a;
			b.k.data = b.buf;
			for (c = 1; c < (1u << 24); c++) {
				b.buf[at] = (uint8_t)(a.buf[at] ^ c);
				b.buf[at + 1] = (uint8_t)(a.buf[at + 1] ^ (c >> 8));
				b.buf[at + 2] = (uint8_t)(a.buf[at + 2] ^ (c >> 16));
				b.k.hash = km_key_hash(b.buf, len);
				if (mem_home_of(b.k.hash, 16) == mem_home_of(a.k.hash, 16) &&
					mem_tag_of(b.k.hash) == mem_tag_of(a.k.hash))
					break;
			}
			assert_true(c < (1u << 24));

			assert_int_equal(km_store_put(s, &a.k, "A", 1, 0, 1, &va), 0);
			check_absent(s, &b.k);
			assert_int_equal(km_store_del(s, &b.k, KM_VERSION_ANY, &v), -ENOENT);
			assert_int_equal(km_store_put(s, &b.k, "B", 1, 0, 1, &vb), 0);
			check_value(s, &a.k, "A", 1, va);
			check_value(s, &b.k, "B", 1, vb);
			assert_int_equal(km_store_del(s, &a.k, KM_VERSION_ANY, &v), 0);
			check_absent(s, &a.k);
			check_value(s, &b.k, "B", 1, vb);
			km_store_destroy(s);
		}
	}
}

/* Prefetch */

static void
prefetch_both(struct km_store *s, const struct km_key *k)
{
	km_store_prefetch(s, k, KM_STORE_PREFETCH_INDEX);
	km_store_prefetch(s, k, KM_STORE_PREFETCH_ENTRY);
}

static const struct km_store_ops fake_noprefetch_ops = {.name = "fake-noprefetch"};

/*
 * Prefetching is a hint: on an empty store, for absent keys, at the end of a long probe
 * chain, or on a driver without it, it changes nothing.
 */
static void
test_prefetch(void **state)
{
	/* 32 slots; 28 keys homed on slots 30, 31, 0: chains of up to 28 slots */
	struct km_store *s = store_new(64, 28, 0);
	struct km_store fake = {.ops = &fake_noprefetch_ops};
	struct km_store_stats st0, st;
	struct tkey keys[30], absent;
	uint64_t id = 0, version[28];
	unsigned int i;

	(void)state;
	assert_non_null(km_store_driver("mem")->prefetch);
	tkey_set(&absent, "absent", 1);
	prefetch_both(s, &absent.k);
	km_store_stats(s, &st0);
	assert_int_equal(st0.keys, 0);
	check_absent(s, &absent.k);

	find_keys(&keys[0], 10, "p", 32, 30, -1, &id);
	find_keys(&keys[10], 10, "p", 32, 31, -1, &id);
	find_keys(&keys[20], 10, "p", 32, 0, -1, &id); /* the last two are never inserted */
	for (i = 0; i < 28; i++) {
		prefetch_both(s, &keys[i].k);
		assert_int_equal(
			km_store_put(s, &keys[i].k, keys[i].buf, keys[i].k.len, 0, 1, &version[i]),
			0);
	}
	km_store_stats(s, &st0);
	assert_int_equal(st0.keys, 28);
	assert_int_equal(st0.index_bytes, 32 * 8); /* no growth: chains stay long */
	/* Every step order a caller may use, present and absent keys. */
	for (i = 0; i < 30; i++)
		km_store_prefetch(s, &keys[i].k, KM_STORE_PREFETCH_INDEX);
	for (i = 0; i < 30; i++)
		km_store_prefetch(s, &keys[i].k, KM_STORE_PREFETCH_ENTRY);
	for (i = 0; i < 30; i++)
		km_store_prefetch(s, &keys[29 - i].k, KM_STORE_PREFETCH_ENTRY);
	prefetch_both(s, &absent.k);
	km_store_stats(s, &st);
	assert_memory_equal(&st, &st0, sizeof(st));
	for (i = 0; i < 28; i++)
		check_value(s, &keys[i].k, keys[i].buf, keys[i].k.len, version[i]);
	check_absent(s, &keys[28].k);
	check_absent(s, &keys[29].k);
	check_absent(s, &absent.k);
	km_store_destroy(s);

	/* A driver without the op: the wrapper skips it. */
	prefetch_both(&fake, &absent.k);
}

/* km_store_get_hint() answers as km_store_get() does. */
static void
check_hint(struct km_store *s, const struct km_key *k, uint64_t hint)
{
	struct km_value_ref a, b;
	int rc = km_store_get(s, k, &a);

	assert_int_equal(km_store_get_hint(s, k, hint, &b), rc);
	if (rc == 0) {
		assert_ptr_equal(b.data, a.data);
		assert_int_equal(b.len, a.len);
		assert_int_equal(b.version, a.version);
	}
}

/* Every key of keys[0 .. n - 1] with every slot hint of hints[0 .. nh - 1]: a slot hint is
 * checked against the key, so another key's is as good as none. */
static void
check_hints(struct km_store *s, const struct tkey *keys, unsigned int n, const uint64_t *hints,
	unsigned int nh)
{
	unsigned int i, j;

	for (i = 0; i < n; i++)
		for (j = 0; j < nh; j++)
			check_hint(s, &keys[i].k, hints[j]);
}

/* The hint of an ENTRY prefetch of k (after its INDEX step). */
static uint64_t
entry_hint(struct km_store *s, const struct km_key *k)
{
	assert_int_equal(km_store_prefetch(s, k, KM_STORE_PREFETCH_INDEX), 0);
	return km_store_prefetch(s, k, KM_STORE_PREFETCH_ENTRY);
}

static int fake_get_calls;

static int
fake_get(struct km_store *s, const struct km_key *k, struct km_value_ref *out)
{
	(void)s;
	(void)k;
	(void)out;
	fake_get_calls++;
	return -ENOENT;
}

static const struct km_store_ops fake_get_ops = {.name = "fake-get", .get = fake_get};

/*
 * The ENTRY prefetch's hint: the slot where it found the key's tag (a get from there
 * answers as get() does), or that the key is absent. A slot hint is checked before it is
 * used: another key's, stale ones after deletes shifted the chains back and after growth
 * moved every entry, and slots outside the table all give get()'s answer. An absent key's
 * hint holds until a key is inserted. Probes longer than the step looks give no hint.
 */
static void
test_prefetch_hint(void **state)
{
	/* 32 slots; chains of 10, 10 and 8 keys homed on slots 30, 31 and 0 (across the end) */
	struct km_store *s = store_new(64, 28, 0);
	struct km_store fake = {.ops = &fake_get_ops};
	struct tkey keys[70], absent, other;
	uint64_t hints[28 + 5], ha, ho;
	const uint64_t bad[5] = {1, 31, 32, 33, UINT32_MAX};
	struct km_store_stats st;
	struct km_value_ref v;
	uint64_t id = 0, ver;
	unsigned int i;

	(void)state;
	find_keys(&keys[0], 10, "h", 32, 30, -1, &id);
	find_keys(&keys[10], 10, "h", 32, 31, -1, &id);
	find_keys(&keys[20], 8, "h", 32, 0, -1, &id);
	tkey_set(&absent, "absent", 1);
	tkey_set(&other, "other", 1);
	for (i = 0; i < 28; i++)
		assert_int_equal(
			km_store_put(s, &keys[i].k, keys[i].buf, keys[i].k.len, 0, 1, &ver), 0);
	km_store_stats(s, &st);
	assert_int_equal(st.index_bytes, 32 * 8);
	/* Inserted in order: key i in slot (30 + i) % 32. */
	for (i = 0; i < 28; i++) {
		hints[i] = entry_hint(s, &keys[i].k);
		assert_int_equal(hints[i], (30 + i) % 32 + 1);
	}
	memcpy(&hints[28], bad, sizeof(bad));
	check_hints(s, keys, 28, hints, 33);
	check_hints(s, &absent, 1, hints, 33);

	/* The first of each chain deleted: the rest of it moves back one slot. */
	for (i = 0; i < 28; i += 10)
		assert_int_equal(km_store_del(s, &keys[i].k, KM_VERSION_ANY, &ver), 0);
	check_hints(s, keys, 28, hints, 33);

	/* Absent keys: the hint says so until a key is inserted; a delete changes nothing. */
	ha = entry_hint(s, &absent.k);
	ho = entry_hint(s, &other.k);
	assert_true((ha >> 32 & 1) != 0 && (ho >> 32 & 1) != 0); /* absent, not a slot */
	check_hint(s, &absent.k, ha);
	assert_int_equal(km_store_get_hint(s, &absent.k, ha, &v), -ENOENT);
	assert_int_equal(km_store_del(s, &keys[1].k, KM_VERSION_ANY, &ver), 0);
	assert_int_equal(km_store_get_hint(s, &absent.k, ha, &v), -ENOENT);
	assert_int_equal(km_store_put(s, &absent.k, "A", 1, 0, 1, &ver), 0);
	check_value(s, &absent.k, "A", 1, ver);
	check_hint(s, &absent.k, ha); /* inserted since: found */
	check_hint(s, &other.k, ho);  /* still absent, by the lookup */
	assert_int_equal(km_store_del(s, &absent.k, KM_VERSION_ANY, &ver), 0);
	check_hint(s, &absent.k, ha);

	/* Growth: every entry rehashed into a larger table. */
	for (i = 28; i < 40; i++) {
		tkey_set(&keys[i], "g", i);
		assert_int_equal(
			km_store_put(s, &keys[i].k, keys[i].buf, keys[i].k.len, 0, 1, &ver), 0);
	}
	km_store_stats(s, &st);
	assert_true(st.index_bytes > 32 * 8);
	check_hints(s, keys, 40, hints, 33);
	km_store_destroy(s);

	/* A driver without get_hint: get(), whatever the hint. */
	fake_get_calls = 0;
	assert_int_equal(km_store_get_hint(&fake, &absent.k, 5, &v), -ENOENT);
	assert_int_equal(km_store_get_hint(&fake, &absent.k, 0, &v), -ENOENT);
	assert_int_equal(fake_get_calls, 2);

	/* 128 slots, 70 keys homed on slot 10: the step looks at 64 slots, no further. */
	s = store_new(64, 100, 0);
	km_store_stats(s, &st);
	assert_int_equal(st.index_bytes, 128 * 8);
	id = 0;
	find_keys(keys, 70, "f", 128, 10, -1, &id);
	for (i = 0; i < 70; i++)
		assert_int_equal(
			km_store_put(s, &keys[i].k, keys[i].buf, keys[i].k.len, 0, 1, &ver), 0);
	for (i = 0; i < 70; i++) {
		ha = entry_hint(s, &keys[i].k);
		assert_int_equal(ha, i < 64 ? 10 + i + 1 : 0);
		check_hint(s, &keys[i].k, ha);
	}
	km_store_destroy(s);

	/* Two short keys of one tag: the hint of one is never taken for the other, and the
	 * absent one's prefetch stops at the other's entry (a slot hint, not absent). */
	s = store_new(64, 14, 0);
	id = 0;
	find_keys(&keys[0], 1, "c", 16, 5, -1, &id);
	find_keys(&keys[1], 1, "c", 16, 5, (int64_t)mem_tag_of(keys[0].k.hash), &id);
	assert_int_equal(km_store_put(s, &keys[0].k, "A", 1, 0, 1, &ver), 0);
	hints[0] = entry_hint(s, &keys[0].k);
	assert_int_equal(hints[0], 5 + 1);
	hints[1] = entry_hint(s, &keys[1].k);
	assert_int_equal(hints[1], 5 + 1);
	assert_int_equal(km_store_get_hint(s, &keys[1].k, hints[1], &v), -ENOENT);
	assert_int_equal(km_store_put(s, &keys[1].k, "B", 1, 0, 1, &ver), 0);
	check_hints(s, keys, 2, hints, 2);
	check_value(s, &keys[1].k, "B", 1, ver);
	km_store_destroy(s);
}

/* Key id of 24 bytes, its number in the middle. */
static void
tkey_long(struct tkey *t, uint64_t id)
{
	t->k.data = t->buf;
	t->k.len = (uint16_t)snprintf(
		(char *)t->buf, sizeof(t->buf), "prefix--%08llu--suffix", (unsigned long long)id);
	t->k.hash = km_key_hash(t->buf, t->k.len);
}

/* Keys of more than 16 bytes that differ only in the middle, of one tag: the hint of one is
 * not taken for the other (the long keys' compare, not the short keys' two 8-byte words). */
static void
test_prefetch_hint_long(void **state)
{
	struct km_store *s = store_new(64, 14, 0);
	struct tkey a, b;
	uint64_t id = 0, ha, ver;
	struct km_value_ref v;

	(void)state;
	tkey_long(&a, id++);
	do
		tkey_long(&b, id++);
	while (mem_tag_of(b.k.hash) != mem_tag_of(a.k.hash));
	assert_true(a.k.len > 16 && a.k.len == b.k.len);
	assert_int_equal(km_store_put(s, &a.k, "A", 1, 0, 1, &ver), 0);
	ha = entry_hint(s, &a.k);
	assert_true(ha != 0);
	check_hint(s, &a.k, ha);
	assert_int_equal(km_store_get_hint(s, &b.k, ha, &v), -ENOENT);
	assert_int_equal(km_store_put(s, &b.k, "B", 1, 0, 1, &ver), 0);
	assert_int_equal(km_store_get_hint(s, &b.k, ha, &v), 0);
	assert_int_equal(v.len, 1);
	assert_memory_equal(v.data, "B", 1);
	km_store_destroy(s);
}

/* Walk */

#define WALK_KEYS 10000

struct walk_state {
	uint8_t seen[WALK_KEYS];
	uint64_t calls;
	uint64_t stop_after;
};

static int
walk_cb(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct walk_state *w = arg;
	char buf[32];
	unsigned long id;

	assert_true(k->len < sizeof(buf));
	memcpy(buf, k->data, k->len);
	buf[k->len] = '\0';
	id = strtoul(buf + 1, NULL, 10);
	assert_true(id < WALK_KEYS);
	assert_true(k->hash == km_key_hash(k->data, k->len));
	assert_int_equal(v->len, sizeof(id));
	assert_memory_equal(v->data, &id, sizeof(id));
	w->seen[id]++;
	if (++w->calls == w->stop_after)
		return 42;
	return 0;
}

static void
test_walk(void **state)
{
	struct km_store *s = store_new(64, 0, 0);
	struct walk_state *w = calloc(1, sizeof(*w));
	unsigned long i;
	struct tkey t;

	(void)state;
	assert_non_null(w);
	assert_int_equal(s->ops->walk(s, walk_cb, w), 0);
	assert_int_equal(w->calls, 0);
	for (i = 0; i < WALK_KEYS; i++) {
		tkey_set(&t, "w", i);
		assert_int_equal(km_store_put(s, &t.k, &i, sizeof(i), 0, 0, NULL), 0);
	}
	/* delete some, so that the walk crosses shifted chains */
	for (i = 0; i < WALK_KEYS; i += 3) {
		tkey_set(&t, "w", i);
		assert_int_equal(km_store_del(s, &t.k, 0, NULL), 0);
	}
	assert_int_equal(s->ops->walk(s, walk_cb, w), 0);
	for (i = 0; i < WALK_KEYS; i++)
		assert_int_equal(w->seen[i], i % 3 == 0 ? 0 : 1);

	/* a non-zero return stops the walk and is passed through */
	memset(w, 0, sizeof(*w));
	w->stop_after = 100;
	assert_int_equal(s->ops->walk(s, walk_cb, w), 42);
	assert_int_equal(w->calls, 100);
	free(w);
	km_store_destroy(s);
}

/* Stats */

static void
test_stats(void **state)
{
	struct km_store *s = store_new(1000, 0, 0);
	static uint8_t val[1000];
	struct km_store_stats st;
	struct tkey a, b;

	(void)state;
	km_store_stats(s, &st);
	assert_int_equal(st.keys, 0);
	assert_int_equal(st.value_bytes, 0);
	assert_int_equal(st.entry_overhead_bytes, 0);
	assert_true(st.index_bytes > 0);
	assert_int_equal(st.version_last, 0);

	tkey_set(&a, "stats-a", 0);  /* 8 bytes */
	tkey_set(&b, "stats-bb", 0); /* 9 bytes */
	assert_int_equal(km_store_put(s, &a.k, val, 100, 0, 0, NULL), 0);
	assert_int_equal(km_store_put(s, &b.k, val, 10, 0, 0, NULL), 0);
	km_store_stats(s, &st);
	assert_int_equal(st.keys, 2);
	assert_int_equal(st.value_bytes, 8 + 100 + 9 + 10);
	/* at least the 8-byte header per record; at most the class table (4 KiB and malloc's
	 * word) and a first slab of two records of each class: a small store stays small */
	assert_true(st.entry_overhead_bytes >= 2 * 8);
	assert_true(st.entry_overhead_bytes <= 4112 + 2 * (256 + 16));
	assert_int_equal(
		s->ops->dram_bytes(s), st.index_bytes + st.value_bytes + st.entry_overhead_bytes);

	assert_int_equal(km_store_put(s, &a.k, val, 1000, 0, 0, NULL), 0); /* grows */
	assert_int_equal(km_store_put(s, &b.k, val, 10, 0, 0, NULL), 0);   /* in place */
	km_store_stats(s, &st);
	assert_int_equal(st.keys, 2);
	assert_int_equal(st.value_bytes, 8 + 1000 + 9 + 10);

	assert_int_equal(st.version_last, 4);

	assert_int_equal(km_store_del(s, &a.k, 0, NULL), 0);
	assert_int_equal(km_store_del(s, &b.k, 0, NULL), 0);
	km_store_stats(s, &st);
	assert_int_equal(st.keys, 0);
	assert_int_equal(st.value_bytes, 0);
	assert_int_equal(st.entry_overhead_bytes, 0);
	assert_int_equal(st.version_last, 6); /* deletes consume versions */
	km_store_destroy(s);

	/* Nothing written yet: the base, below which nothing will be issued. */
	s = store_new(16, 0, 777);
	km_store_stats(s, &st);
	assert_int_equal(st.version_last, 777);
	km_store_destroy(s);
}

/* Load */

static void
check_stats(struct km_store *s, uint64_t keys, uint64_t bytes, uint64_t version_last)
{
	struct km_store_stats st;

	km_store_stats(s, &st);
	assert_int_equal(st.keys, keys);
	assert_int_equal(st.value_bytes, bytes);
	assert_int_equal(st.version_last, version_last);
}

static void
test_load(void **state)
{
	struct km_store *s = store_new(64, 0, 0);
	static uint8_t big[256];
	struct tkey a, b, c;
	struct km_key k;
	uint64_t v, v2;

	(void)state;
	tkey_set(&a, "load-a", 0); /* 7 bytes */
	tkey_set(&b, "load-b", 0);
	tkey_set(&c, "load-c", 0);

	/* Into an empty store: the entry keeps the given version. */
	assert_int_equal(km_store_load(s, &a.k, "hello", 5, 100), 0);
	check_value(s, &a.k, "hello", 5, 100);
	check_stats(s, 1, 7 + 5, 100);

	/* Replacing, with an older version and another size: value and version replaced,
	 * the counter stays at the highest version seen. */
	assert_int_equal(km_store_load(s, &a.k, "a longer value", 14, 40), 0);
	check_value(s, &a.k, "a longer value", 14, 40);
	check_stats(s, 1, 7 + 14, 100);
	assert_int_equal(km_store_load(s, &a.k, "same size val!", 14, 41), 0);
	check_value(s, &a.k, "same size val!", 14, 41);
	assert_int_equal(km_store_load(s, &b.k, NULL, 0, 7), 0);
	check_value(s, &b.k, NULL, 0, 7);
	check_stats(s, 2, 7 + 14 + 7, 100);

	/* Versions issued afterwards are above every loaded one, and CAS on a loaded version
	 * holds across the handover. */
	assert_int_equal(km_store_put(s, &c.k, "x", 1, KM_VERSION_ANY, 1, &v), 0);
	assert_int_equal(v, 101);
	assert_int_equal(km_store_put(s, &a.k, "y", 1, 40, 0, &v2), -ESTALE);
	assert_int_equal(v2, 41);
	assert_int_equal(km_store_put(s, &a.k, "y", 1, 41, 0, &v2), 0);
	assert_int_equal(v2, 102);
	assert_int_equal(km_store_del(s, &b.k, 7, &v2), 0);
	assert_int_equal(v2, 7);
	check_stats(s, 2, 7 + 1 + 7 + 1, 103);

	/* A load above the counter moves it; the next delete and put are above that. */
	assert_int_equal(km_store_load(s, &b.k, "z", 1, 5000), 0);
	check_stats(s, 3, 7 + 1 + 7 + 1 + 7 + 1, 5000);
	assert_int_equal(km_store_del(s, &b.k, 5000, &v2), 0);
	assert_int_equal(km_store_put(s, &b.k, "w", 1, KM_VERSION_ANY, 1, &v2), 0);
	assert_int_equal(v2, 5002);

	/* Bad input changes nothing. */
	assert_int_equal(km_store_load(s, &c.k, "q", 1, 0), -EINVAL);
	memset(big, 'v', sizeof(big));
	assert_int_equal(km_store_load(s, &c.k, big, 65, 9000), -E2BIG);
	assert_int_equal(km_store_load(s, &c.k, NULL, 1, 9000), -EINVAL);
	k = c.k;
	k.len = 0;
	k.hash = km_key_hash(c.buf, 0);
	assert_int_equal(km_store_load(s, &k, "q", 1, 9000), -EINVAL);
	k.data = big;
	k.len = 251;
	k.hash = km_key_hash(big, k.len);
	assert_int_equal(km_store_load(s, &k, "q", 1, 9000), -EINVAL);
	check_value(s, &c.k, "x", 1, 101);
	check_stats(s, 3, 3 * (7 + 1), 5002);
	/* value_max exactly, and the longest key, are accepted. */
	assert_int_equal(km_store_load(s, &c.k, big, 64, 9000), 0);
	check_value(s, &c.k, big, 64, 9000);
	k.len = 250;
	k.hash = km_key_hash(big, k.len);
	assert_int_equal(km_store_load(s, &k, "q", 1, 1), 0);
	check_value(s, &k, "q", 1, 1);
	km_store_destroy(s);
}

#define LOAD_KEYS 20000

/*
 * A handover in bulk: entries loaded in random order with random versions into a store
 * that starts small (growth during loads) and has a base of its own. Then every write,
 * new key or loaded one, gets a version above the highest loaded, and so does a delete.
 */
static void
test_load_bulk(void **state)
{
	const uint64_t base = 1000;
	struct km_store *s = store_new(64, 0, base);
	uint64_t *ver = calloc(LOAD_KEYS, sizeof(*ver));
	uint64_t rng = 41, max = 0, v, i, bytes = 0;
	struct km_store_stats st;
	struct tkey t;

	(void)state;
	assert_non_null(ver);
	for (i = 0; i < LOAD_KEYS; i++) {
		/* Versions below the base too: the source store had its own numbering. */
		ver[i] = 1 + rng_below(&rng, 4 * base);
		if (ver[i] > max)
			max = ver[i];
		tkey_set(&t, "bulk-", i);
		assert_int_equal(km_store_load(s, &t.k, &ver[i], sizeof(ver[i]), ver[i]), 0);
		bytes += t.k.len + sizeof(ver[i]);
	}
	assert_true(max > base); /* else the base alone would explain the next checks */
	km_store_stats(s, &st);
	assert_int_equal(st.keys, LOAD_KEYS);
	assert_int_equal(st.value_bytes, bytes);
	assert_int_equal(st.version_last, max);
	assert_true(st.index_bytes / 8 > LOAD_KEYS); /* grew from 64 slots */
	for (i = 0; i < LOAD_KEYS; i++) {
		tkey_set(&t, "bulk-", i);
		check_value(s, &t.k, &ver[i], sizeof(ver[i]), ver[i]);
	}
	for (i = 0; i < LOAD_KEYS; i += 97) {
		tkey_set(&t, "bulk-", i);
		assert_int_equal(km_store_put(s, &t.k, "n", 1, ver[i], 0, &v), 0);
		assert_true(v > max);
		max = v;
		tkey_set(&t, "fresh-", i);
		assert_int_equal(km_store_put(s, &t.k, "n", 1, KM_VERSION_ANY, 1, &v), 0);
		assert_true(v > max);
		max = v;
		assert_int_equal(km_store_del(s, &t.k, KM_VERSION_ANY, NULL), 0);
	}
	km_store_stats(s, &st);
	assert_true(st.version_last > max);
	free(ver);
	km_store_destroy(s);
}

/* A store freed a little at a time, and a resumable walk that sees every entry once when
 * nothing changes. */
static void
test_walk_step_destroy_step(void **state)
{
	struct km_store_params sp = {.value_max = 64, .socket_id = -1};
	struct km_walk_pos pos = {0};
	struct km_store *s;
	unsigned int i, calls = 0;
	uint64_t seen = 0;
	char key[16];
	int rc;

	(void)state;
	assert_int_equal(km_store_create("mem", &sp, &s), 0);
	for (i = 0; i < 5000; i++) {
		struct km_key k = {.data = (const uint8_t *)key};
		uint64_t v;

		k.len = (uint16_t)snprintf(key, sizeof(key), "k%u", i);
		k.hash = km_key_hash(k.data, k.len);
		assert_int_equal(km_store_put(s, &k, "v", 1, KM_VERSION_ANY, 0, &v), 0);
	}
	do {
		rc = km_store_walk_step(s, &pos, 100, count_cb, &seen);
		calls++;
	} while (rc == 1);
	assert_int_equal(rc, 0);
	assert_int_equal(seen, 5000);
	assert_true(calls > 10);
	/* Version floor: the next write is above it. */
	km_store_version_floor(s, UINT64_C(1) << 40);
	{
		struct km_key k = {.data = (const uint8_t *)"x", .len = 1};
		uint64_t v;

		k.hash = km_key_hash(k.data, k.len);
		assert_int_equal(km_store_put(s, &k, "v", 1, KM_VERSION_ANY, 0, &v), 0);
		assert_true(v > UINT64_C(1) << 40);
	}
	calls = 0;
	while (km_store_destroy_step(s, 100) == 1)
		calls++;
	assert_true(calls > 10);
}

/* Keys "k<i>" of the churn test: which were seen by the walk. */
struct churn {
	uint8_t *seen;
	uint32_t nb;
	uint64_t visits;
	uint32_t stop_at; /* stop a call at its stop_at-th entry (0: never) */
	uint32_t in_call; /* entries visited by the call under way */
	uint32_t last;    /* the last "k" key visited */
};

static int
churn_cb(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct churn *c = arg;
	char buf[16];
	unsigned long i;

	(void)v;
	c->visits++;
	if (k->len < 2 || k->len >= sizeof(buf) || k->data[0] != 'k')
		return 0;
	memcpy(buf, k->data + 1, k->len - 1u);
	buf[k->len - 1] = '\0';
	i = strtoul(buf, NULL, 10);
	assert_true(i < c->nb);
	c->seen[i] = 1;
	c->last = (uint32_t)i;
	return c->stop_at != 0 && ++c->in_call == c->stop_at ? 2 : 0;
}

static void
churn_key(struct km_key *k, char *buf, size_t cap, char c, unsigned int i)
{
	k->data = (const uint8_t *)buf;
	k->len = (uint16_t)snprintf(buf, cap, "%c%u", c, i);
	k->hash = km_key_hash(k->data, k->len);
}

/* A "k" key still there, from start on, whose home slot (mem_home_of()) is one of the 16
 * slots just behind slot at; UINT32_MAX: none. */
static uint32_t
churn_behind(const uint64_t *hash, const uint8_t *gone, uint32_t nb, uint64_t slots, uint64_t at,
	uint32_t start)
{
	uint32_t n, i;

	for (n = 0; n < nb; n++) {
		i = (start + n) % nb;
		if (!gone[i] && (at + 2 * slots - 1 - mem_home_of(hash[i], slots)) % slots < 16)
			return i;
	}
	return UINT32_MAX;
}

/*
 * A resumable walk while keys are deleted (which moves entries of their cluster back in
 * the mem table) and inserted (which makes the table grow and place every entry anew),
 * calls stopped by the walk's fn included: every key that is there from the first call to
 * the last is visited. Over several budgets and seeds; each walk sees deletions and growth.
 */
static void
test_walk_step_churn(void **state)
{
	static const uint32_t budgets[] = {1, 7, 64, 300};
	const uint32_t nb = 3300, adds = 1200; /* over the 5/4 growth's slack */
	uint8_t *gone = calloc(nb, 1), *seen = calloc(nb, 1);
	uint64_t *hash = calloc(nb, sizeof(*hash));
	unsigned int b, seed;
	char key[16];

	(void)state;
	assert_non_null(gone);
	assert_non_null(seen);
	assert_non_null(hash);
	for (b = 0; b < sizeof(budgets) / sizeof(budgets[0]); b++) {
		for (seed = 1; seed <= 3; seed++) {
			struct km_store_params sp = {.value_max = 64, .socket_id = -1};
			struct churn c = {.seen = seen, .nb = nb};
			struct km_walk_pos pos = {0};
			struct km_store_stats st;
			uint64_t rng = seed * 1000 + b, v, slots0, last_pos = 0;
			uint32_t i, added = 0, dels = 0, calls = 0;
			struct km_store *s;
			struct km_key k;
			int rc;

			memset(gone, 0, nb);
			memset(seen, 0, nb);
			assert_int_equal(km_store_create("mem", &sp, &s), 0);
			for (i = 0; i < nb; i++) {
				churn_key(&k, key, sizeof(key), 'k', i);
				hash[i] = k.hash;
				assert_int_equal(
					km_store_put(s, &k, "v", 1, KM_VERSION_ANY, 0, &v), 0);
			}
			km_store_stats(s, &st);
			slots0 = st.index_bytes;
			do {
				/* Between calls: deletions of "k" keys, about one per 20 slots
				 * the last call walked (a call ends after an empty slot: at the
				 * mem table's load, often well past its budget), and once many
				 * insertions (the table grows mid-walk). */
				uint64_t walked =
					pos.pos > last_pos ? pos.pos - last_pos : budgets[b];
				uint32_t nd = (uint32_t)(walked / 20 +
							 (rng_below(&rng, 20) < walked % 20));

				km_store_stats(s, &st);
				for (i = 0; i < nd; i++) {
					uint32_t d = (uint32_t)rng_below(&rng, nb);

					/* Half of them just behind where the walk stands:
					 * their clusters may reach ahead of it. */
					if (rng_below(&rng, 2) == 0)
						d = churn_behind(hash, gone, nb,
							st.index_bytes / sizeof(uint64_t), pos.pos,
							d);
					if (d == UINT32_MAX || gone[d])
						continue;
					churn_key(&k, key, sizeof(key), 'k', d);
					assert_int_equal(
						km_store_del(s, &k, KM_VERSION_ANY, &v), 0);
					gone[d] = 1;
					dels++;
				}
				for (i = 0; calls == 2 && i < adds; i++) {
					churn_key(&k, key, sizeof(key), 'n', added++);
					assert_int_equal(
						km_store_put(s, &k, "v", 1, KM_VERSION_ANY, 0, &v),
						0);
				}
				last_pos = pos.pos;
				rc = km_store_walk_step(s, &pos, budgets[b], churn_cb, &c);
				calls++;
			} while (rc == 1 && calls < 1000000);
			assert_int_equal(rc, 0);
			km_store_stats(s, &st);
			assert_true(st.index_bytes > slots0); /* it grew during the walk */
			assert_true(dels > 100);
			for (i = 0; i < nb; i++)
				if (!gone[i] && !seen[i])
					fail_msg("budget %u seed %u: k%u never visited", budgets[b],
						seed, i);
			km_store_destroy(s);
		}
	}
	/* A call stopped by fn: walked again from where it began, nothing is missed. */
	{
		struct km_store_params sp = {.value_max = 64, .socket_id = -1};
		struct churn c = {.seen = seen, .nb = nb, .stop_at = 3};
		struct km_walk_pos pos = {0}, from;
		uint64_t rng = 77, v;
		uint32_t i, calls = 0;
		struct km_store *s;
		struct km_key k;
		int rc;

		memset(gone, 0, nb);
		memset(seen, 0, nb);
		assert_int_equal(km_store_create("mem", &sp, &s), 0);
		for (i = 0; i < nb; i++) {
			churn_key(&k, key, sizeof(key), 'k', i);
			assert_int_equal(km_store_put(s, &k, "v", 1, KM_VERSION_ANY, 0, &v), 0);
		}
		do {
			uint64_t before = c.visits;

			from = pos;
			c.in_call = 0;
			rc = km_store_walk_step(s, &pos, 50, churn_cb, &c);
			if (rc == 2) {
				/* Stopped after the third entry: delete it (entries behind it in
				 * its cluster move back), and resume from the call's start. */
				assert_int_equal(c.visits - before, 3);
				churn_key(&k, key, sizeof(key), 'k', c.last);
				assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, &v), 0);
				gone[c.last] = 1;
				pos = from;
				rc = 1;
			}
			/* Deletions elsewhere too. */
			i = (uint32_t)rng_below(&rng, nb);
			if (!gone[i]) {
				churn_key(&k, key, sizeof(key), 'k', i);
				assert_int_equal(km_store_del(s, &k, KM_VERSION_ANY, &v), 0);
				gone[i] = 1;
			}
			calls++;
		} while (rc == 1 && calls < 1000000);
		assert_int_equal(rc, 0);
		for (i = 0; i < nb; i++)
			if (!gone[i] && !seen[i])
				fail_msg("stopped walk: k%u never visited", i);
		km_store_destroy(s);
	}
	free(gone);
	free(seen);
	free(hash);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_registry),
		cmocka_unit_test(test_key_hash),
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_versions),
		cmocka_unit_test(test_cas),
		cmocka_unit_test(test_conditional_del),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_differential),
		cmocka_unit_test(test_growth),
		cmocka_unit_test(test_tag_collisions),
		cmocka_unit_test(test_long_chains),
		cmocka_unit_test(test_key_compare),
		cmocka_unit_test(test_prefetch),
		cmocka_unit_test(test_prefetch_hint),
		cmocka_unit_test(test_prefetch_hint_long),
		cmocka_unit_test(test_walk),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_load_bulk),
		cmocka_unit_test(test_walk_step_destroy_step),
		cmocka_unit_test(test_walk_step_churn),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
