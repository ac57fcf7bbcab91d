/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Value cache. km_cache is run side by side with a plain reference model (arrays in queue
 * order, O(n) per operation, written from the SIEVE description in km_cache.h) over fixed
 * pseudo-random traces; every hit/miss, every returned value, the eviction count and the
 * byte/entry counters must agree after each operation. Targeted cases cover scan
 * resistance against FIFO and LRU, tags, prefetch accounting, the byte bound, size limits,
 * replacement under the hand, and clear.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <km_cache.h>

/* ---- helpers: rng, keys, values ---- */

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

enum hash_mode {
	HASH_GOOD,  /* well mixed */
	HASH_WEAK,  /* 7 distinct values: long chains of equal hashes */
	HASH_SHARD, /* top 12 bits fixed, as for the keys of one shard */
};

struct tkey {
	uint8_t buf[32];
	struct km_key k;
};

/* Key of id: "k" + id in decimal, padded with '.' to klen bytes (klen 0: 12 + id % 5). */
static void
tkey_set(struct tkey *t, uint32_t id, enum hash_mode mode, unsigned int klen)
{
	uint64_t s = id;
	uint32_t v = id;
	unsigned int i, n = 0;
	uint8_t digits[16];

	if (klen == 0)
		klen = 12 + id % 5;
	do {
		digits[n++] = (uint8_t)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	t->buf[0] = 'k';
	for (i = 0; i < n; i++)
		t->buf[1 + i] = digits[n - 1 - i];
	for (i = 1 + n; i < klen; i++)
		t->buf[i] = '.';
	t->k.data = t->buf;
	t->k.len = (uint16_t)klen;
	switch (mode) {
	case HASH_WEAK:
		t->k.hash = id % 7;
		break;
	case HASH_SHARD:
		t->k.hash = (UINT64_C(0xabc) << 52) | (rng_next(&s) >> 12);
		break;
	default:
		t->k.hash = rng_next(&s);
		break;
	}
}

static uint8_t
val_byte(uint32_t id, uint64_t version, uint32_t i)
{
	return (uint8_t)(id * 31 + version * 7 + i * 13);
}

static void
val_fill(uint8_t *buf, uint32_t len, uint32_t id, uint64_t version)
{
	uint32_t i;

	for (i = 0; i < len; i++)
		buf[i] = val_byte(id, version, i);
}

static int
val_check(const struct km_value_ref *v, uint32_t id, uint64_t version, uint32_t len)
{
	uint32_t i;

	if (v->len != len || v->version != version)
		return 0;
	for (i = 0; i < len; i++) {
		if (v->data[i] != val_byte(id, version, i))
			return 0;
	}
	return 1;
}

static uint64_t
charge(unsigned int klen, uint32_t len)
{
	return KM_CACHE_ENTRY_OVERHEAD + klen + len;
}

/* ---- reference model ---- */

enum ref_policy { REF_SIEVE, REF_FIFO, REF_LRU };

struct ref_ent {
	uint32_t id;
	uint32_t len;
	uint64_t tag;
	uint64_t version;
	uint64_t charge;
	int visited;
	int prefetched;
};

/* q[0] is the oldest entry (the tail), q[n - 1] the newest (the head). */
struct ref_cache {
	enum ref_policy policy;
	struct ref_ent *q;
	size_t n, room;
	long hand; /* index the SIEVE hand examines next; -1: start at q[0] */
	struct km_cache_counters cnt;
};

static void
ref_init(struct ref_cache *r, enum ref_policy policy, uint64_t capacity)
{
	memset(r, 0, sizeof(*r));
	r->policy = policy;
	r->hand = -1;
	r->cnt.capacity = capacity;
}

static void
ref_fini(struct ref_cache *r)
{
	free(r->q);
}

static long
ref_find(const struct ref_cache *r, uint32_t id)
{
	size_t i;

	for (i = 0; i < r->n; i++) {
		if (r->q[i].id == id)
			return (long)i;
	}
	return -1;
}

/* Remove q[i]; the hand moves to the next newer entry if it was on q[i]. */
static void
ref_remove(struct ref_cache *r, long i)
{
	if (r->q[i].prefetched)
		r->cnt.prefetched_evicted_unused++;
	r->cnt.bytes -= r->q[i].charge;
	r->cnt.entries--;
	memmove(&r->q[i], &r->q[i + 1], (r->n - (size_t)i - 1) * sizeof(r->q[0]));
	r->n--;
	if (r->hand == i && (size_t)i == r->n)
		r->hand = -1;
	else if (r->hand > i)
		r->hand--;
}

/* Evict one entry other than the one of id keep_id (UINT32_MAX: none). */
static void
ref_evict(struct ref_cache *r, uint32_t keep_id)
{
	long i;

	if (r->policy != REF_SIEVE) {
		i = r->q[0].id == keep_id ? 1 : 0;
	} else {
		i = r->hand >= 0 ? r->hand : 0;
		for (;;) {
			if (r->q[i].id != keep_id) {
				if (!r->q[i].visited)
					break;
				r->q[i].visited = 0;
			}
			i = (size_t)i + 1 == r->n ? 0 : i + 1;
		}
		r->hand = i;
	}
	ref_remove(r, i);
	r->cnt.evictions++;
}

static int
ref_get(struct ref_cache *r, uint32_t id, uint64_t tag, struct ref_ent *out)
{
	long i = ref_find(r, id);
	struct ref_ent e;

	if (i < 0 || r->q[i].tag != tag) {
		if (i >= 0)
			ref_remove(r, i);
		r->cnt.misses++;
		return -ENOENT;
	}
	r->cnt.hits++;
	if (r->q[i].prefetched) {
		r->q[i].prefetched = 0;
		r->cnt.prefetched_used++;
	}
	r->q[i].visited = 1;
	*out = r->q[i];
	if (r->policy == REF_LRU) {
		e = r->q[i];
		memmove(&r->q[i], &r->q[i + 1], (r->n - (size_t)i - 1) * sizeof(r->q[0]));
		r->q[r->n - 1] = e;
	}
	return 0;
}

static int
ref_put(struct ref_cache *r, uint32_t id, unsigned int klen, uint64_t tag, uint32_t len,
	uint64_t version, int prefetched)
{
	uint64_t ch = charge(klen, len);
	long i = ref_find(r, id);

	if (ch * 4 > r->cnt.capacity) {
		if (i >= 0) {
			ref_remove(r, i);
			r->cnt.invalidations++;
		}
		return -E2BIG;
	}
	if (i < 0) {
		while (r->cnt.bytes + ch > r->cnt.capacity)
			ref_evict(r, UINT32_MAX);
		if (r->n == r->room) {
			r->room = r->room ? r->room * 2 : 64;
			r->q = realloc(r->q, r->room * sizeof(r->q[0]));
			assert_non_null(r->q);
		}
		i = (long)r->n++;
		r->q[i].id = id;
		r->q[i].visited = 0;
		r->q[i].charge = 0;
		r->q[i].prefetched = 0;
		r->cnt.entries++;
		r->cnt.inserts++;
	} else {
		while (r->cnt.bytes - r->q[i].charge + ch > r->cnt.capacity) {
			ref_evict(r, id);
			i = ref_find(r, id);
		}
		if (r->q[i].prefetched)
			r->cnt.prefetched_evicted_unused++;
	}
	r->cnt.bytes = r->cnt.bytes - r->q[i].charge + ch;
	r->q[i].charge = ch;
	r->q[i].tag = tag;
	r->q[i].len = len;
	r->q[i].version = version;
	r->q[i].prefetched = prefetched != 0;
	return 0;
}

static void
ref_invalidate(struct ref_cache *r, uint32_t id)
{
	long i = ref_find(r, id);

	if (i >= 0) {
		ref_remove(r, i);
		r->cnt.invalidations++;
	}
}

static void
ref_clear(struct ref_cache *r)
{
	while (r->n > 0)
		ref_remove(r, 0);
	r->hand = -1;
}

/* ---- the cache and its model, driven together ---- */

struct pair {
	struct km_cache *c;
	struct ref_cache r;
	const struct km_cache_counters *cnt;
	enum hash_mode mode;
	unsigned int klen; /* 0: varies with the id */
	uint8_t *buf;
	uint64_t op; /* operations done, for messages */
};

static void
pair_init(struct pair *p, uint64_t capacity, enum hash_mode mode, unsigned int klen)
{
	memset(p, 0, sizeof(*p));
	assert_int_equal(km_cache_create(capacity, &p->c), 0);
	ref_init(&p->r, REF_SIEVE, capacity);
	p->cnt = km_cache_counters(p->c);
	p->mode = mode;
	p->klen = klen;
	p->buf = malloc(capacity);
	assert_non_null(p->buf);
}

static void
pair_fini(struct pair *p)
{
	km_cache_destroy(p->c);
	ref_fini(&p->r);
	free(p->buf);
}

static void
pair_check_counters(struct pair *p)
{
	const struct km_cache_counters *a = p->cnt, *b = &p->r.cnt;

	if (a->hits != b->hits || a->misses != b->misses || a->inserts != b->inserts ||
		a->evictions != b->evictions || a->invalidations != b->invalidations ||
		a->prefetched_used != b->prefetched_used ||
		a->prefetched_evicted_unused != b->prefetched_evicted_unused ||
		a->entries != b->entries || a->bytes != b->bytes || a->capacity != b->capacity)
		fail_msg("op %llu: counters differ: evictions %llu/%llu entries %llu/%llu "
			 "bytes %llu/%llu pf_unused %llu/%llu",
			(unsigned long long)p->op, (unsigned long long)a->evictions,
			(unsigned long long)b->evictions, (unsigned long long)a->entries,
			(unsigned long long)b->entries, (unsigned long long)a->bytes,
			(unsigned long long)b->bytes,
			(unsigned long long)a->prefetched_evicted_unused,
			(unsigned long long)b->prefetched_evicted_unused);
	if (a->bytes > a->capacity)
		fail_msg("op %llu: %llu bytes over capacity %llu", (unsigned long long)p->op,
			(unsigned long long)a->bytes, (unsigned long long)a->capacity);
}

/* Get id from both; returns 0 (hit) or -ENOENT, after checking they agree. */
static int
pair_get(struct pair *p, uint32_t id, uint64_t tag)
{
	struct tkey t;
	struct km_value_ref v;
	struct ref_ent e;
	int rc, rrc;

	p->op++;
	tkey_set(&t, id, p->mode, p->klen);
	rc = km_cache_get(p->c, &t.k, tag, &v);
	rrc = ref_get(&p->r, id, tag, &e);
	if (rc != rrc)
		fail_msg("op %llu: get %u: cache %d, model %d", (unsigned long long)p->op, id, rc,
			rrc);
	if (rc == 0 && !val_check(&v, id, e.version, e.len))
		fail_msg("op %llu: get %u: wrong value", (unsigned long long)p->op, id);
	pair_check_counters(p);
	return rc;
}

static int
pair_put(struct pair *p, uint32_t id, uint64_t tag, uint32_t len, uint64_t version, int prefetched)
{
	struct tkey t;
	int rc, rrc;

	p->op++;
	tkey_set(&t, id, p->mode, p->klen);
	val_fill(p->buf, len, id, version);
	rc = km_cache_put(p->c, &t.k, tag, p->buf, len, version, prefetched);
	rrc = ref_put(&p->r, id, t.k.len, tag, len, version, prefetched);
	if (rc != rrc)
		fail_msg("op %llu: put %u (%u bytes): cache %d, model %d",
			(unsigned long long)p->op, id, len, rc, rrc);
	pair_check_counters(p);
	return rc;
}

static void
pair_invalidate(struct pair *p, uint32_t id)
{
	struct tkey t;

	p->op++;
	tkey_set(&t, id, p->mode, p->klen);
	km_cache_invalidate(p->c, &t.k);
	ref_invalidate(&p->r, id);
	pair_check_counters(p);
}

static void
pair_clear(struct pair *p)
{
	p->op++;
	km_cache_clear(p->c);
	ref_clear(&p->r);
	pair_check_counters(p);
}

/* ---- (a) differential traces ---- */

struct trace_cfg {
	uint64_t seed;
	uint64_t capacity;
	uint32_t nb_keys;
	uint32_t nb_ops;
	uint32_t val_min, val_max;
	uint32_t big_permille; /* writes with a value over a quarter of the capacity */
	enum hash_mode mode;
	unsigned int klen; /* 0: varies with the id */
};

/* Skewed key choice: id = n * u^2, so low ids are hot. */
static uint32_t
trace_key(uint64_t *s, uint32_t n)
{
	double u = (double)(rng_next(s) >> 11) / 9007199254740992.0;

	return (uint32_t)((double)n * u * u);
}

static uint32_t
trace_len(uint64_t *s, const struct trace_cfg *cfg)
{
	if (rng_below(s, 1000) < cfg->big_permille)
		return (uint32_t)(cfg->capacity / 4);
	return cfg->val_min + (uint32_t)rng_below(s, cfg->val_max - cfg->val_min + 1);
}

static void
run_trace(const struct trace_cfg *cfg, uint64_t *hits, uint64_t *evictions)
{
	uint64_t s = cfg->seed, *version, gen[4] = {1, 1, 1, 1};
	uint32_t i, id;
	struct pair p;
	unsigned int r;

	pair_init(&p, cfg->capacity, cfg->mode, cfg->klen);
	version = calloc(cfg->nb_keys, sizeof(*version));
	assert_non_null(version);
	for (i = 0; i < cfg->nb_ops; i++) {
		id = trace_key(&s, cfg->nb_keys);
		r = (unsigned int)rng_below(&s, 1000);
		if (r < 550 || r >= 905) {
			/* demand cache: a miss reads the store and fills the cache */
			if (pair_get(&p, id, gen[id % 4]) != 0)
				pair_put(&p, id, gen[id % 4], trace_len(&s, cfg), ++version[id], 0);
		} else if (r < 700) {
			pair_put(&p, id, gen[id % 4], trace_len(&s, cfg), ++version[id], 0);
		} else if (r < 780) {
			pair_put(&p, id, gen[id % 4], trace_len(&s, cfg), ++version[id], 1);
		} else if (r < 860) {
			pair_invalidate(&p, id);
		} else if (r < 900) {
			pair_get(&p, id, gen[id % 4] + 1000);
		} else if (r < 904) {
			gen[id % 4]++; /* a group of shards handed away and back */
		} else if (rng_below(&s, 20) == 0) {
			pair_clear(&p);
		}
	}
	*hits = p.cnt->hits;
	*evictions = p.cnt->evictions;
	free(version);
	pair_fini(&p);
}

static void
test_sieve_vs_model(void **state)
{
	static const struct trace_cfg cfgs[] = {
		/* unit-size entries: 128 of them fit */
		{1, 16384, 400, 60000, 52, 52, 0, HASH_GOOD, 12},
		{2, 16384, 1000, 60000, 52, 52, 0, HASH_GOOD, 12},
		/* byte-charged entries of varying sizes */
		{3, 65536, 300, 60000, 0, 1500, 10, HASH_GOOD, 0},
		{4, KM_CACHE_MIN_BYTES, 30, 40000, 0, 900, 30, HASH_GOOD, 0},
		/* long chains of equal hashes */
		{5, 32768, 500, 40000, 0, 300, 5, HASH_WEAK, 0},
		/* one shard's hashes, and enough entries to grow the index */
		{6, 1 << 20, 8000, 60000, 0, 200, 1, HASH_SHARD, 0},
	};
	uint64_t hits, evictions;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
		run_trace(&cfgs[i], &hits, &evictions);
		print_message("trace %llu: %llu hits, %llu evictions\n",
			(unsigned long long)cfgs[i].seed, (unsigned long long)hits,
			(unsigned long long)evictions);
		/* the traces must exercise both outcomes and eviction */
		assert_true(hits > cfgs[i].nb_ops / 20);
		assert_true(evictions > 100);
	}
}

/* Replacement while the hand rests on, or would pick, the entry being replaced. */
static void
test_replace_under_hand(void **state)
{
	const uint64_t cap = 128 * 128; /* 128 entries of 12-byte keys and 52-byte values */
	struct pair p;
	uint32_t id;

	(void)state;
	pair_init(&p, cap, HASH_GOOD, 12);
	for (id = 0; id < 128; id++)
		assert_int_equal(pair_put(&p, id, 1, 52, 1, 0), 0);
	assert_int_equal(p.cnt->bytes, cap);
	assert_int_equal(p.cnt->evictions, 0);

	/* id 0 is the oldest unvisited entry, the natural victim: it must be kept. */
	assert_int_equal(pair_put(&p, 0, 1, 52 + 128, 2, 0), 0);
	assert_int_equal(p.cnt->evictions, 1);
	assert_int_equal(pair_get(&p, 1, 1), -ENOENT);
	assert_int_equal(pair_get(&p, 0, 1), 0);
	/* The hand rests on id 2; growing it evicts 3, 4 and 5, skipping 2 itself. */
	assert_int_equal(pair_put(&p, 2, 1, 52 + 384, 2, 0), 0);
	assert_int_equal(p.cnt->evictions, 4);
	assert_int_equal(pair_get(&p, 2, 1), 0);
	assert_int_equal(pair_get(&p, 3, 1), -ENOENT);
	assert_int_equal(pair_get(&p, 5, 1), -ENOENT);
	/* The hand is on id 6: shrink it into a new block, then make room: 6 goes first. */
	assert_int_equal(pair_put(&p, 6, 1, 4, 2, 0), 0);
	while (p.cnt->evictions == 4)
		assert_int_equal(pair_put(&p, 1000 + id++, 1, 52, 1, 0), 0);
	assert_int_equal(p.cnt->evictions, 5);
	assert_int_equal(pair_get(&p, 6, 1), -ENOENT);
	assert_int_equal(pair_get(&p, 7, 1), 0);
	/* Visited entries survive a lap; keep going with the model watching. */
	for (id = 0; id < 2000; id++) {
		if (pair_get(&p, id % 300, 1) != 0)
			pair_put(&p, id % 300, 1, (id * 7) % 400, id, 0);
	}
	pair_fini(&p);
}

/* ---- (b) scan resistance ---- */

struct scan_result {
	uint64_t hot_hits;   /* hot-set hits during and after the scan */
	uint64_t hot_cached; /* hot keys still cached after the scan */
};

/* Demand access: get, put on a miss. REF_SIEVE drives the pair, others the model only. */
static int
scan_access(enum ref_policy policy, struct pair *p, struct ref_cache *r, uint32_t id)
{
	struct ref_ent e;
	int rc;

	if (policy == REF_SIEVE) {
		rc = pair_get(p, id, 1);
		if (rc != 0)
			pair_put(p, id, 1, 52, 1, 0);
	} else {
		rc = ref_get(r, id, 1, &e);
		if (rc != 0)
			ref_put(r, id, 12, 1, 52, 1, 0);
	}
	return rc;
}

/*
 * Unit-size entries, 128 fit. A hot set of 96 keys is warmed up, then a one-pass scan of
 * 1024 keys runs, each scan access followed by one hot access (demand get, put on miss),
 * then every hot key is looked up once. policy REF_SIEVE runs km_cache (and checks it
 * against the model); FIFO and LRU run the reference model only.
 */
static void
run_scan(enum ref_policy policy, struct scan_result *res)
{
	const uint32_t hot = 96, scan = 1024;
	uint64_t s = 42, hits0;
	struct ref_cache r;
	struct pair p;
	uint32_t i, id;
	int rc;

	memset(res, 0, sizeof(*res));
	memset(&p, 0, sizeof(p));
	memset(&r, 0, sizeof(r));
	if (policy == REF_SIEVE)
		pair_init(&p, 128 * 128, HASH_GOOD, 12);
	else
		ref_init(&r, policy, 128 * 128);
	for (i = 0; i < 3 * hot; i++)
		scan_access(policy, &p, &r, i % hot);
	hits0 = policy == REF_SIEVE ? p.cnt->hits : r.cnt.hits;
	for (i = 0; i < scan; i++) {
		scan_access(policy, &p, &r, 10000 + i);
		id = (uint32_t)rng_below(&s, hot);
		rc = scan_access(policy, &p, &r, id);
		res->hot_hits += rc == 0;
	}
	for (i = 0; i < hot; i++) {
		rc = scan_access(policy, &p, &r, i);
		res->hot_hits += rc == 0;
		res->hot_cached += rc == 0;
	}
	/* scan keys never hit: every hit counted above is a hot one */
	assert_int_equal((policy == REF_SIEVE ? p.cnt->hits : r.cnt.hits) - hits0, res->hot_hits);
	if (policy == REF_SIEVE)
		pair_fini(&p);
	else
		ref_fini(&r);
}

static void
test_scan_resistance(void **state)
{
	struct scan_result sieve, fifo, lru;

	(void)state;
	run_scan(REF_SIEVE, &sieve);
	run_scan(REF_FIFO, &fifo);
	run_scan(REF_LRU, &lru);
	print_message("scan: hot hits sieve %llu lru %llu fifo %llu of %u; hot kept %llu/%llu/%llu "
		      "of 96\n",
		(unsigned long long)sieve.hot_hits, (unsigned long long)lru.hot_hits,
		(unsigned long long)fifo.hot_hits, 1024 + 96, (unsigned long long)sieve.hot_cached,
		(unsigned long long)lru.hot_cached, (unsigned long long)fifo.hot_cached);
	/* SIEVE keeps most of the hot set through the scan; FIFO and LRU lose much of it. */
	assert_true(sieve.hot_hits * 10 >= (1024 + 96) * 9);
	assert_true(sieve.hot_cached >= 90);
	assert_true(sieve.hot_hits > lru.hot_hits + 100);
	assert_true(sieve.hot_hits > fifo.hot_hits + 100);
	assert_true(sieve.hot_cached > lru.hot_cached + 20);
	assert_true(sieve.hot_cached > fifo.hot_cached + 20);
}

/* ---- (c) tags ---- */

static void
test_tags(void **state)
{
	struct km_cache *c;
	const struct km_cache_counters *cnt;
	struct km_value_ref v;
	struct tkey t;

	(void)state;
	assert_int_equal(km_cache_create(KM_CACHE_MIN_BYTES, &c), 0);
	cnt = km_cache_counters(c);
	tkey_set(&t, 1, HASH_GOOD, 0);
	assert_int_equal(km_cache_put(c, &t.k, 7, "abc", 3, 11, 0), 0);
	assert_int_equal(km_cache_get(c, &t.k, 7, &v), 0);
	assert_int_equal(v.len, 3);
	assert_int_equal(v.version, 11);
	assert_memory_equal(v.data, "abc", 3);

	/* another tag: a miss, and the entry is gone */
	assert_int_equal(km_cache_get(c, &t.k, 8, &v), -ENOENT);
	assert_int_equal(cnt->misses, 1);
	assert_int_equal(cnt->entries, 0);
	assert_int_equal(cnt->bytes, 0);
	assert_int_equal(km_cache_get(c, &t.k, 7, &v), -ENOENT);
	assert_int_equal(cnt->misses, 2);
	assert_int_equal(cnt->invalidations, 0);
	assert_int_equal(cnt->evictions, 0);

	/* a put under a new tag is a new entry; a replacement takes the new tag */
	assert_int_equal(km_cache_put(c, &t.k, 8, "defg", 4, 12, 0), 0);
	assert_int_equal(cnt->inserts, 2);
	assert_int_equal(km_cache_put(c, &t.k, 9, "hi", 2, 13, 0), 0);
	assert_int_equal(cnt->inserts, 2);
	assert_int_equal(cnt->entries, 1);
	assert_int_equal(cnt->bytes, charge(t.k.len, 2));
	assert_int_equal(km_cache_get(c, &t.k, 9, &v), 0);
	assert_int_equal(v.version, 13);
	assert_memory_equal(v.data, "hi", 2);
	assert_int_equal(km_cache_get(c, &t.k, 8, &v), -ENOENT);
	assert_int_equal(cnt->entries, 0);
	assert_int_equal(cnt->hits, 2);
	assert_int_equal(cnt->misses, 3);
	km_cache_destroy(c);
}

/* Equal hashes: keys differ by length (one a prefix of the other) or by their bytes. */
static void
test_key_identity(void **state)
{
	static const char *const keys[] = {"ab", "abc", "abd", "abcd", "b"};
	struct km_key k[5];
	struct km_cache *c;
	struct km_value_ref v;
	unsigned int i, j;

	(void)state;
	assert_int_equal(km_cache_create(KM_CACHE_MIN_BYTES, &c), 0);
	for (i = 0; i < 5; i++) {
		k[i].data = (const uint8_t *)keys[i];
		k[i].len = (uint16_t)strlen(keys[i]);
		k[i].hash = 42;
	}
	for (i = 0; i < 5; i++) {
		assert_int_equal(km_cache_get(c, &k[i], 1, &v), -ENOENT);
		assert_int_equal(km_cache_put(c, &k[i], 1, keys[i], k[i].len, i + 1, 0), 0);
		for (j = 0; j <= i; j++) {
			assert_int_equal(km_cache_get(c, &k[j], 1, &v), 0);
			assert_int_equal(v.version, j + 1);
			assert_int_equal(v.len, k[j].len);
			assert_memory_equal(v.data, keys[j], k[j].len);
		}
	}
	assert_int_equal(km_cache_counters(c)->entries, 5);
	km_cache_invalidate(c, &k[1]);
	assert_int_equal(km_cache_get(c, &k[1], 1, &v), -ENOENT);
	assert_int_equal(km_cache_get(c, &k[0], 1, &v), 0);
	assert_int_equal(km_cache_get(c, &k[3], 1, &v), 0);
	assert_int_equal(v.version, 4);
	km_cache_destroy(c);
}

/* ---- (d) prefetched entries ---- */

static void
test_prefetched(void **state)
{
	const uint64_t cap = 64 * 128; /* 64 entries of 12-byte keys and 52-byte values */
	struct km_cache *c;
	const struct km_cache_counters *cnt;
	struct km_value_ref v;
	struct tkey t;
	uint8_t val[52] = {0};
	uint64_t marks = 0;
	uint32_t id;

	(void)state;
	assert_int_equal(km_cache_create(cap, &c), 0);
	cnt = km_cache_counters(c);
#define PUT(id_, tag_, pf_)                                                            \
	do {                                                                           \
		tkey_set(&t, (id_), HASH_GOOD, 12);                                    \
		assert_int_equal(km_cache_put(c, &t.k, (tag_), val, 52, 1, (pf_)), 0); \
		marks += (pf_);                                                        \
	} while (0)
#define GET(id_, tag_) (tkey_set(&t, (id_), HASH_GOOD, 12), km_cache_get(c, &t.k, (tag_), &v))

	/* used: counted on the first hit only */
	PUT(1, 1, 1);
	assert_int_equal(GET(1, 1), 0);
	assert_int_equal(cnt->prefetched_used, 1);
	assert_int_equal(GET(1, 1), 0);
	assert_int_equal(cnt->prefetched_used, 1);
	assert_int_equal(cnt->prefetched_evicted_unused, 0);

	/* invalidated unused */
	PUT(2, 1, 1);
	tkey_set(&t, 2, HASH_GOOD, 12);
	km_cache_invalidate(c, &t.k);
	assert_int_equal(cnt->prefetched_evicted_unused, 1);

	/* evicted unused: 3 is the oldest unvisited entry when room is needed */
	PUT(3, 1, 1);
	for (id = 100; cnt->evictions == 0; id++)
		PUT(id, 1, 0);
	assert_int_equal(GET(3, 1), -ENOENT);
	assert_int_equal(cnt->evictions, 1);
	assert_int_equal(cnt->prefetched_evicted_unused, 2);
	/* 1 was visited and survives; it is no longer marked, so evicting it later counts
	 * nothing */
	assert_int_equal(GET(1, 1), 0);

	/* dropped by another tag, unused */
	PUT(4, 1, 1);
	assert_int_equal(GET(4, 2), -ENOENT);
	assert_int_equal(cnt->prefetched_evicted_unused, 3);
	assert_int_equal(cnt->prefetched_used, 1);

	/* replaced while marked: that prefetched value went unused */
	PUT(5, 1, 1);
	PUT(5, 1, 0);
	assert_int_equal(cnt->prefetched_evicted_unused, 4);
	assert_int_equal(GET(5, 1), 0);
	assert_int_equal(cnt->prefetched_used, 1);
	/* a replacement takes the new mark */
	PUT(6, 1, 0);
	PUT(6, 1, 1);
	assert_int_equal(cnt->prefetched_evicted_unused, 4);
	assert_int_equal(GET(6, 1), 0);
	assert_int_equal(cnt->prefetched_used, 2);

	/* every mark is accounted for once: used, gone unused, or still cached */
	PUT(7, 1, 1);
	PUT(8, 1, 1);
	assert_int_equal(marks, cnt->prefetched_used + cnt->prefetched_evicted_unused + 2);
	km_cache_clear(c);
	assert_int_equal(marks, cnt->prefetched_used + cnt->prefetched_evicted_unused);
	assert_int_equal(cnt->prefetched_used, 2);
#undef PUT
#undef GET
	km_cache_destroy(c);
}

/* ---- (e) the byte bound, checked without the model ---- */

struct shadow {
	uint64_t version; /* 0: not cached (never put, invalidated, or refused) */
	uint64_t tag;
	uint32_t len;
};

/* Probe every key with its current tag: hits must return the latest value; afterwards
 * the counters must equal exactly what was found. */
static void
bound_probe(struct km_cache *c, struct shadow *sh, uint32_t nb_keys)
{
	const struct km_cache_counters *cnt = km_cache_counters(c);
	uint64_t sum = 0, n = 0;
	struct km_value_ref v;
	struct tkey t;
	uint32_t id;

	for (id = 0; id < nb_keys; id++) {
		tkey_set(&t, id, HASH_GOOD, 0);
		if (km_cache_get(c, &t.k, sh[id].tag, &v) != 0)
			continue;
		assert_int_not_equal(sh[id].version, 0);
		assert_true(val_check(&v, id, sh[id].version, sh[id].len));
		sum += charge(t.k.len, v.len);
		n++;
	}
	assert_int_equal(cnt->bytes, sum);
	assert_int_equal(cnt->entries, n);
}

static void
test_byte_bound(void **state)
{
	static const uint64_t caps[] = {KM_CACHE_MIN_BYTES, 4099, 10000, 65536};
	const uint32_t nb_keys = 150;
	struct shadow sh[150];
	struct km_cache *c;
	const struct km_cache_counters *cnt;
	uint8_t *buf;
	struct tkey t;
	uint64_t s = 7, cap;
	uint32_t i, id, len;
	size_t ci;
	int rc;

	(void)state;
	for (ci = 0; ci < sizeof(caps) / sizeof(caps[0]); ci++) {
		cap = caps[ci];
		buf = malloc(cap);
		assert_non_null(buf);
		memset(sh, 0, sizeof(sh));
		assert_int_equal(km_cache_create(cap, &c), 0);
		cnt = km_cache_counters(c);
		for (i = 0; i < 20000; i++) {
			id = (uint32_t)rng_below(&s, nb_keys);
			tkey_set(&t, id, HASH_GOOD, 0);
			switch (rng_below(&s, 10)) {
			case 0:
				km_cache_invalidate(c, &t.k);
				sh[id].version = 0;
				break;
			case 1:
				sh[id].tag++; /* the cached entry, if any, is stale now */
				break;
			default:
				/* sizes up to just past the quarter: some replacements grow a lot
				 */
				len = (uint32_t)rng_below(&s, cap / 4 - 64 - 8);
				if (rng_below(&s, 20) == 0)
					len = (uint32_t)(cap / 4);
				val_fill(buf, len, id, i + 1);
				rc = km_cache_put(
					c, &t.k, sh[id].tag, buf, len, i + 1, (int)(i & 1));
				if (charge(t.k.len, len) * 4 > cap) {
					assert_int_equal(rc, -E2BIG);
					sh[id].version = 0;
				} else {
					assert_int_equal(rc, 0);
					sh[id].version = i + 1;
					sh[id].len = len;
				}
				break;
			}
			assert_true(cnt->bytes <= cap);
			if (i % 3 == 0)
				bound_probe(c, sh, nb_keys);
		}
		assert_true(cnt->evictions > 1000);
		km_cache_destroy(c);
		free(buf);
	}
}

/* ---- (f) limits ---- */

static void
test_limits(void **state)
{
	struct km_cache *c = NULL;
	const struct km_cache_counters *cnt;
	struct km_value_ref v;
	struct tkey t;
	static uint8_t big[2048];

	(void)state;
	assert_int_equal(km_cache_create(0, &c), -EINVAL);
	assert_int_equal(km_cache_create(KM_CACHE_MIN_BYTES - 1, &c), -EINVAL);
	assert_null(c);
	assert_int_equal(km_cache_create(KM_CACHE_MIN_BYTES, NULL), -EINVAL);
	km_cache_destroy(NULL);

	/* capacity 4099: a quarter is 1024.75, so a 1024-byte charge fits and 1025 does not */
	assert_int_equal(km_cache_create(4099, &c), 0);
	cnt = km_cache_counters(c);
	assert_int_equal(cnt->capacity, 4099);
	tkey_set(&t, 1, HASH_GOOD, 12);
	assert_int_equal(km_cache_put(c, &t.k, 1, big, 1024 - 64 - 12, 1, 0), 0);
	assert_int_equal(cnt->bytes, 1024);
	assert_int_equal(km_cache_put(c, &t.k, 1, big, 1025 - 64 - 12, 2, 0), -E2BIG);
	/* the older value is dropped with the refused one */
	assert_int_equal(cnt->entries, 0);
	assert_int_equal(cnt->bytes, 0);
	assert_int_equal(cnt->invalidations, 1);
	assert_int_equal(km_cache_get(c, &t.k, 1, &v), -ENOENT);
	/* refused without an older entry: nothing changes */
	assert_int_equal(km_cache_put(c, &t.k, 1, big, sizeof(big), 3, 0), -E2BIG);
	assert_int_equal(cnt->inserts, 1);
	assert_int_equal(cnt->invalidations, 1);
	assert_int_equal(cnt->entries, 0);
	/* empty values and the largest entry that fits four times */
	assert_int_equal(km_cache_put(c, &t.k, 1, NULL, 0, 4, 0), 0);
	assert_int_equal(km_cache_get(c, &t.k, 1, &v), 0);
	assert_int_equal(v.len, 0);
	assert_int_equal(v.version, 4);
	km_cache_destroy(c);
}

/* ---- (g) clear ---- */

static void
test_clear(void **state)
{
	struct pair p;
	uint32_t id;
	uint64_t ev, inv;

	(void)state;
	pair_init(&p, 64 * 128, HASH_GOOD, 12);
	/* leave the hand somewhere in the middle of the queue */
	for (id = 0; id < 100; id++)
		pair_put(&p, id, 1, 52, 1, 0);
	assert_int_equal(pair_get(&p, 90, 1), 0);
	ev = p.cnt->evictions;
	inv = p.cnt->invalidations;
	assert_true(ev > 0);
	pair_clear(&p);
	assert_int_equal(p.cnt->entries, 0);
	assert_int_equal(p.cnt->bytes, 0);
	assert_int_equal(p.cnt->evictions, ev);
	assert_int_equal(p.cnt->invalidations, inv);
	for (id = 0; id < 100; id++)
		assert_int_equal(pair_get(&p, id, 1), -ENOENT);
	/* usable again, eviction included */
	for (id = 0; id < 300; id++) {
		if (pair_get(&p, id % 80, 1) != 0)
			pair_put(&p, id % 80, 1, 52, 2, 0);
	}
	assert_true(p.cnt->evictions > ev);
	pair_clear(&p);
	pair_clear(&p);
	assert_int_equal(p.cnt->entries, 0);
	pair_fini(&p);
}

/* ---- (e) prefetch marks: returned on the first hit, told to the callback when unused ---- */

struct unused_log {
	unsigned int n;
	uint8_t mark[8];
	uint64_t tag[8];
	uint32_t id[8];
};

static void
on_unused(void *arg, uint8_t mark, uint64_t tag, const uint8_t *key, uint16_t len)
{
	struct unused_log *l = arg;
	uint32_t id = 0;
	uint16_t i;

	/* tkey_set(): "k", the id in decimal, '.' padding */
	assert_true(len > 1 && key[0] == 'k');
	for (i = 1; i < len && key[i] != '.'; i++)
		id = id * 10 + (uint32_t)(key[i] - '0');
	if (l->n < 8) {
		l->mark[l->n] = mark;
		l->tag[l->n] = tag;
		l->id[l->n] = id;
	}
	l->n++;
}

static void
test_marks(void **state)
{
	const uint64_t cap = 64 * 128; /* 64 entries of 12-byte keys and 52-byte values */
	struct unused_log log = {0};
	struct km_cache *c;
	struct km_value_ref v;
	struct tkey t;
	uint8_t val[52] = {0}, mark = 0xff;
	uint32_t id;

	(void)state;
	assert_int_equal(km_cache_create(cap, &c), 0);
	km_cache_on_unused(c, on_unused, &log);

	/* the mark comes back once, with the first hit */
	tkey_set(&t, 1, HASH_GOOD, 12);
	assert_int_equal(km_cache_put(c, &t.k, 5, val, 52, 1, 0x81), 0);
	assert_int_equal(km_cache_get_mark(c, &t.k, 5, &v, &mark), 0);
	assert_int_equal(mark, 0x81);
	assert_int_equal(km_cache_get_mark(c, &t.k, 5, &v, &mark), 0);
	assert_int_equal(mark, 0);
	/* a miss says no mark */
	tkey_set(&t, 2, HASH_GOOD, 12);
	mark = 0xff;
	assert_int_equal(km_cache_get_mark(c, &t.k, 5, &v, &mark), -ENOENT);
	assert_int_equal(mark, 0);
	assert_int_equal(log.n, 0);

	/* replaced by a write before any hit: unused, with its mark and tag */
	assert_int_equal(km_cache_put(c, &t.k, 5, val, 52, 1, 7), 0);
	assert_int_equal(km_cache_put(c, &t.k, 5, val, 52, 2, 0), 0);
	assert_int_equal(log.n, 1);
	assert_int_equal(log.mark[0], 7);
	assert_int_equal(log.tag[0], 5);
	assert_int_equal(log.id[0], 2);
	/* invalidated marked */
	tkey_set(&t, 3, HASH_GOOD, 12);
	assert_int_equal(km_cache_put(c, &t.k, 6, val, 52, 1, 9), 0);
	km_cache_invalidate(c, &t.k);
	assert_int_equal(log.n, 2);
	assert_int_equal(log.mark[1], 9);
	assert_int_equal(log.id[1], 3);

	/* without prefetch_visited, a marked entry is the hand's first victim */
	km_cache_clear(c);
	log.n = 0;
	tkey_set(&t, 10, HASH_GOOD, 12);
	assert_int_equal(km_cache_put(c, &t.k, 1, val, 52, 1, 3), 0);
	for (id = 100; km_cache_counters(c)->evictions == 0; id++) {
		tkey_set(&t, id, HASH_GOOD, 12);
		assert_int_equal(km_cache_put(c, &t.k, 1, val, 52, 1, 0), 0);
	}
	assert_int_equal(log.n, 1);
	assert_int_equal(log.id[0], 10);

	/* with it, the hand passes it once: the oldest unmarked entry goes first */
	km_cache_clear(c);
	log.n = 0;
	km_cache_prefetch_visited(c, 1);
	tkey_set(&t, 10, HASH_GOOD, 12);
	assert_int_equal(km_cache_put(c, &t.k, 1, val, 52, 1, 3), 0);
	for (id = 100; km_cache_counters(c)->evictions == 1; id++) {
		tkey_set(&t, id, HASH_GOOD, 12);
		assert_int_equal(km_cache_put(c, &t.k, 1, val, 52, 1, 0), 0);
	}
	assert_int_equal(log.n, 0);
	tkey_set(&t, 10, HASH_GOOD, 12);
	assert_int_equal(km_cache_get_mark(c, &t.k, 1, &v, &mark), 0);
	assert_int_equal(mark, 3);
	tkey_set(&t, 100, HASH_GOOD, 12);
	assert_int_equal(km_cache_get(c, &t.k, 1, &v), -ENOENT);
	km_cache_destroy(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sieve_vs_model),
		cmocka_unit_test(test_replace_under_hand),
		cmocka_unit_test(test_scan_resistance),
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_key_identity),
		cmocka_unit_test(test_prefetched),
		cmocka_unit_test(test_marks),
		cmocka_unit_test(test_byte_bound),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_clear),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
