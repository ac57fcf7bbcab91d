/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * SCAN (km_store_ops.scan, km_store_scan_table()): prefix scans by pages with a cursor.
 * Both drivers ("mem" and "log") are checked against a reference model while keys are
 * written between pages (growth, overwrites, deletes shifting entries back), for the
 * promises of km_store.h: pages in increasing km_scan_order(), disjoint, each an atomic
 * view of the store, every key at most once per scan, and every key present and untouched
 * from the first page to the last exactly once. The generic helper is also driven
 * directly over a fake table with crafted home slots (wrap-around, one free slot, pages
 * with more candidates than a page sorts). Fixed seeds; log stores live in a temporary
 * directory.
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
#include <sys/stat.h>

#include <km_store.h>
#include <km_util.h>

#define NB_ENT    50   /* entities: keys "e<N>/<M>" */
#define M_MAX     2000 /* M below this (below less for the low entities) */
#define NB_IDS    (NB_ENT * M_MAX)
#define VAL_MAX   200     /* values 0..VAL_MAX bytes */
#define PAGES_MAX 1000000 /* a scan taking more pages than this does not end */
#define PAGE_IDS  1024    /* entries of a page remembered (deletes of test 4) */
#define ID_NONE   UINT32_MAX

/* A key of the reference model. */
struct mkey {
	uint64_t version; /* 0: absent */
	uint64_t wstamp;  /* write number of the last put or delete of the key */
	uint32_t vseed;   /* the value's bytes: val_fill(vseed, vlen) */
	uint32_t seen;    /* number of the last scan that returned the key */
	uint8_t vlen;
};

struct env {
	const char *driver;
	struct km_store *s;
	char dir[64];
	char cold[96];
	uint64_t rng;
	struct mkey *k;   /* NB_IDS */
	uint32_t *pres;   /* ids present */
	uint32_t *pos;    /* NB_IDS: index in pres, or ID_NONE */
	uint32_t nb_pres; /* keys present */
	uint64_t writes;  /* writes done */
	uint32_t scan_id; /* scans started */
};

static uint64_t
xs_next(uint64_t *s)
{
	/* xorshift64*: deterministic from its seed (never 0) */
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * UINT64_C(0x2545f4914f6cdd1d);
}

static uint64_t
xs_below(uint64_t *s, uint64_t n)
{
	return xs_next(s) % n;
}

/* Entity e uses M below m_range(e): a few keys for the low entities, many for the high. */
static uint32_t
m_range(uint32_t e)
{
	return 40 + (M_MAX - 40) * e / (NB_ENT - 1);
}

static uint16_t
key_fmt(uint32_t id, uint8_t *buf)
{
	return (uint16_t)snprintf((char *)buf, 32, "e%u/%u", id / M_MAX, id % M_MAX);
}

static struct km_key
key_of(uint32_t id, uint8_t *buf)
{
	struct km_key k = {.data = buf};

	k.len = key_fmt(id, buf);
	k.hash = km_key_hash(buf, k.len);
	return k;
}

/* The id of a key "e<N>/<M>", or -1. */
static long
key_parse(const uint8_t *d, uint16_t len)
{
	unsigned long e = 0, m = 0;
	uint16_t i = 1;

	if (len < 4 || d[0] != 'e')
		return -1;
	for (; i < len && d[i] >= '0' && d[i] <= '9'; i++)
		e = e * 10 + (d[i] - '0');
	if (i == 1 || i >= len || d[i] != '/' || e >= NB_ENT)
		return -1;
	if (++i == len)
		return -1;
	for (; i < len && d[i] >= '0' && d[i] <= '9'; i++)
		m = m * 10 + (d[i] - '0');
	if (i != len || m >= M_MAX)
		return -1;
	return (long)(e * M_MAX + m);
}

static void
val_fill(uint32_t seed, uint8_t len, uint8_t *buf)
{
	uint64_t x = ((uint64_t)seed << 1) | 1;
	uint8_t i;

	for (i = 0; i < len; i++)
		buf[i] = (uint8_t)(xs_next(&x) >> 56);
}

static struct env *
env_new(const char *driver, uint64_t seed)
{
	struct km_store_params p = {
		.name = "scan",
		.shard_id = 1,
		.value_max = 1024,
		.version_base = 1000,
		.socket_id = -1,
		.durability = KM_DUR_NONE,
		.mode = KM_STORE_OPEN,
	};
	struct env *e = calloc(1, sizeof(*e));
	uint32_t i;

	assert_non_null(e);
	e->driver = driver;
	e->rng = seed | 1;
	e->k = calloc(NB_IDS, sizeof(*e->k));
	e->pres = calloc(NB_IDS, sizeof(*e->pres));
	e->pos = malloc(NB_IDS * sizeof(*e->pos));
	assert_true(e->k != NULL && e->pres != NULL && e->pos != NULL);
	for (i = 0; i < NB_IDS; i++)
		e->pos[i] = ID_NONE;
	if (strcmp(driver, "log") == 0) {
		strcpy(e->dir, "/tmp/km-test-scan-XXXXXX");
		assert_non_null(mkdtemp(e->dir));
		snprintf(e->cold, sizeof(e->cold), "%s/cold", e->dir);
		assert_int_equal(mkdir(e->cold, 0755), 0);
		p.dir = e->dir;
		p.cold_dir = e->cold;
	}
	assert_int_equal(km_store_create(driver, &p, &e->s), 0);
	assert_non_null(e->s);
	return e;
}

static void
env_free(struct env *e)
{
	km_store_destroy(e->s);
	if (e->dir[0] != '\0')
		assert_int_equal(km_util_rmtree(e->dir), 0);
	free(e->k);
	free(e->pres);
	free(e->pos);
	free(e);
}

/* Put id (present or not) with a fresh random value, in the store and the model. */
static void
m_put(struct env *e, uint32_t id)
{
	struct mkey *mk = &e->k[id];
	uint8_t kb[32], val[VAL_MAX];
	struct km_key k = key_of(id, kb);
	uint64_t ver = 0;

	mk->vlen = (uint8_t)xs_below(&e->rng, VAL_MAX + 1);
	mk->vseed = (uint32_t)xs_next(&e->rng);
	val_fill(mk->vseed, mk->vlen, val);
	assert_int_equal(km_store_put(e->s, &k, val, mk->vlen, KM_VERSION_ANY, 0, &ver), 0);
	assert_true(ver > mk->version);
	if (mk->version == 0) {
		e->pos[id] = e->nb_pres;
		e->pres[e->nb_pres++] = id;
	}
	mk->version = ver;
	mk->wstamp = ++e->writes;
}

static void
m_del(struct env *e, uint32_t id)
{
	struct mkey *mk = &e->k[id];
	uint8_t kb[32];
	struct km_key k = key_of(id, kb);
	uint64_t ver = 0;
	uint32_t last;

	if (mk->version == 0) {
		assert_int_equal(km_store_del(e->s, &k, KM_VERSION_ANY, &ver), -ENOENT);
		return;
	}
	assert_int_equal(km_store_del(e->s, &k, KM_VERSION_ANY, &ver), 0);
	assert_int_equal(ver, mk->version);
	last = e->pres[--e->nb_pres];
	e->pres[e->pos[id]] = last;
	e->pos[last] = e->pos[id];
	e->pos[id] = ID_NONE;
	mk->version = 0;
	mk->wstamp = ++e->writes;
}

/* An absent id, of entity ent if one is found quickly (ent < 0: any entity). */
static uint32_t
pick_absent(struct env *e, int ent)
{
	uint32_t id, t;

	for (t = 0; ent >= 0 && t < 64; t++) {
		id = (uint32_t)ent * M_MAX + (uint32_t)xs_below(&e->rng, m_range((uint32_t)ent));
		if (e->k[id].version == 0)
			return id;
	}
	for (;;) {
		uint32_t en = (uint32_t)xs_below(&e->rng, NB_ENT);

		id = en * M_MAX + (uint32_t)xs_below(&e->rng, m_range(en));
		if (e->k[id].version == 0)
			return id;
	}
}

/* A present id, of entity ent if one is found quickly; ID_NONE when the store is empty. */
static uint32_t
pick_present(struct env *e, int ent)
{
	uint32_t id, t;

	if (e->nb_pres == 0)
		return ID_NONE;
	for (t = 0; ent >= 0 && t < 16; t++) {
		id = (uint32_t)ent * M_MAX + (uint32_t)xs_below(&e->rng, m_range((uint32_t)ent));
		if (e->k[id].version != 0)
			return id;
	}
	return e->pres[xs_below(&e->rng, e->nb_pres)];
}

static void
fill(struct env *e, uint32_t n)
{
	while (n-- > 0)
		m_put(e, pick_absent(e, -1));
}

static int
key_matches(uint32_t id, const uint8_t *prefix, uint16_t plen)
{
	uint8_t kb[32];
	uint16_t len = key_fmt(id, kb);

	return len >= plen && (plen == 0 || memcmp(kb, prefix, plen) == 0);
}

/*
 * One scan against the model: pages until the cursor comes back 0, between(e, c, arg)
 * called between pages (writes). fn checks every entry: prefix, hash, value and version
 * as the model has them now, orders increasing over the whole scan and within the
 * page's range, never twice. At the end every key matching the prefix, present and not
 * written since the first page, must have come.
 */
struct dctx {
	struct env *e;
	const uint8_t *prefix;
	uint16_t plen;
	uint64_t lo;   /* the page's cursor */
	uint64_t prev; /* order of the last entry of the scan */
	int any;       /* the scan visited an entry */
	int page_any;  /* the page visited an entry */
	uint32_t page_n;
	uint32_t page_ids[PAGE_IDS];
	uint64_t visited;
	uint64_t next; /* the cursor the page returned */
};

typedef void (*between_fn)(struct env *e, struct dctx *c, void *arg);

static int
diff_fn(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct dctx *c = arg;
	struct env *e = c->e;
	uint64_t o = km_scan_order(k->hash);
	uint8_t val[VAL_MAX];
	struct mkey *mk;
	long id;

	assert_true(k->len >= c->plen);
	if (c->plen != 0)
		assert_memory_equal(k->data, c->prefix, c->plen);
	assert_true(k->hash == km_key_hash(k->data, k->len));
	assert_true(o >= c->lo);
	if (c->any)
		assert_true(o > c->prev);
	c->prev = o;
	c->any = 1;
	c->page_any = 1;
	id = key_parse(k->data, k->len);
	assert_true(id >= 0);
	mk = &e->k[id];
	assert_true(mk->version != 0); /* present now: the page sees the store as it is */
	assert_true(v->version == mk->version);
	assert_int_equal(v->len, mk->vlen);
	if (mk->vlen != 0) {
		val_fill(mk->vseed, mk->vlen, val);
		assert_memory_equal(v->data, val, mk->vlen);
	}
	assert_true(mk->seen != e->scan_id); /* once per scan */
	mk->seen = e->scan_id;
	if (c->page_n < PAGE_IDS)
		c->page_ids[c->page_n++] = (uint32_t)id;
	c->visited++;
	return 0;
}

/* @return the number of pages. */
static uint64_t
diff_scan(struct env *e, const uint8_t *prefix, uint16_t plen, uint32_t budget, between_fn between,
	void *barg)
{
	struct dctx c = {.e = e, .prefix = prefix, .plen = plen};
	uint64_t cur = 0, pages = 0, start;
	uint32_t j, id, expect = 0;

	e->scan_id++;
	start = e->writes;
	do {
		c.lo = cur;
		c.page_any = 0;
		c.page_n = 0;
		assert_int_equal(km_store_scan(e->s, prefix, plen, &cur, budget, diff_fn, &c), 0);
		if (cur != 0) {
			assert_true(cur > c.lo);           /* progress */
			if (c.page_any)                    /* entries of the page below the next */
				assert_true(c.prev < cur); /* cursor: ranges are disjoint */
		}
		assert_true(++pages <= PAGES_MAX);
		if (cur != 0 && between != NULL) {
			c.next = cur;
			between(e, &c, barg);
		}
	} while (cur != 0);
	for (j = 0; j < e->nb_pres; j++) {
		id = e->pres[j];
		if (e->k[id].wstamp > start || !key_matches(id, prefix, plen))
			continue;
		if (e->k[id].seen != e->scan_id) {
			uint8_t kb[32];

			key_fmt(id, kb);
			fail_msg("%s: key %s (untouched during the scan) not visited, prefix %.*s "
				 "budget %u",
				e->driver, kb, (int)plen,
				prefix != NULL ? (const char *)prefix : "", budget);
		}
		expect++;
	}
	assert_true(c.visited >= expect);
	return pages;
}

/* Random writes between pages. */
struct wmix {
	uint32_t nmax;  /* 0..nmax writes, */
	uint32_t every; /* between one page in `every` (0, 1: every page) */
	uint32_t fixed; /* or exactly this many (nmax 0) */
	uint8_t ins;    /* % new keys */
	uint8_t ovw;    /* % overwrites; the rest deletes */
	int ent;        /* the scanned entity (-1: none), written half of the time */
};

static void
rand_writes(struct env *e, struct dctx *c, void *arg)
{
	const struct wmix *w = arg;
	uint32_t n, i, r, id;
	int ent;

	(void)c;
	if (w->every > 1 && xs_below(&e->rng, w->every) != 0)
		return;
	n = w->nmax != 0 ? (uint32_t)xs_below(&e->rng, w->nmax + 1) : w->fixed;
	for (i = 0; i < n; i++) {
		ent = w->ent >= 0 && (xs_next(&e->rng) & 1) ? w->ent
							    : (int)xs_below(&e->rng, NB_ENT);
		r = (uint32_t)xs_below(&e->rng, 100);
		if (r < w->ins) {
			if (e->nb_pres >= NB_IDS / 2)
				continue; /* room left for pick_absent() */
			m_put(e, pick_absent(e, ent));
		} else {
			id = pick_present(e, ent);
			if (id == ID_NONE)
				continue;
			if (r < (uint32_t)w->ins + w->ovw)
				m_put(e, id);
			else
				m_del(e, id);
		}
	}
}

static uint64_t
index_bytes(struct env *e)
{
	struct km_store_stats st;

	e->s->ops->stats(e->s, &st);
	return st.index_bytes;
}

/* 1. Differential, random writes between pages. */
static void
diff_driver(const char *driver, uint64_t seed, uint32_t nb_scans)
{
	static const uint32_t budgets[] = {1, 7, 64, 1000};
	struct env *e = env_new(driver, seed);
	uint8_t prefix[300];
	uint16_t plen;
	uint32_t s, b;
	uint64_t before, pages;
	int ent;

	fill(e, 3000);
	for (s = 0; s < nb_scans; s++) {
		struct wmix w = {.ins = 34, .ovw = 33, .ent = -1};
		uint32_t kind = (uint32_t)xs_below(&e->rng, 20);

		ent = (int)xs_below(&e->rng, NB_ENT);
		if (kind < 14) {
			plen = (uint16_t)snprintf((char *)prefix, sizeof(prefix), "e%d/", ent);
			w.ent = ent;
		} else if (kind < 16) {
			plen = 0; /* everything */
		} else if (kind < 18) {
			/* "e1": e1/, e10/ .. e19/ */
			plen = (uint16_t)snprintf((char *)prefix, sizeof(prefix), "e%d", ent % 5);
		} else if (kind < 19) {
			plen = (uint16_t)snprintf(
				(char *)prefix, sizeof(prefix), "e%d/", NB_ENT + 7);
		} else {
			memcpy(prefix, "x/", 2); /* nothing */
			plen = 2;
		}
		b = budgets[xs_below(&e->rng, 4)];
		switch (b) {
		case 1:
			w.nmax = 1;
			w.every = 4;
			break;
		case 7:
			w.nmax = 2;
			break;
		case 64:
			w.nmax = 6;
			break;
		default:
			w.nmax = 40;
			break;
		}
		diff_scan(e, prefix, plen, b, rand_writes, &w);
	}
	/* Thousands of new keys during one scan: the table grows under it, twice. */
	for (s = 0; s < 2; s++) {
		struct wmix w = {.fixed = 12, .ins = 100, .ent = s == 0 ? 7 : -1};

		if (s == 0)
			plen = (uint16_t)snprintf((char *)prefix, sizeof(prefix), "e%d/", 7);
		else
			plen = 0;
		before = index_bytes(e);
		pages = diff_scan(e, plen != 0 ? prefix : NULL, plen, 7, rand_writes, &w);
		assert_true(pages * 12 >= 2000);
		assert_true(index_bytes(e) > before);
	}
	env_free(e);
}

static void
test_diff_mem(void **state)
{
	(void)state;
	diff_driver("mem", 0x5ca1ab1e, 150);
	diff_driver("mem", 0xdecafbad, 60);
}

static void
test_diff_log(void **state)
{
	(void)state;
	diff_driver("log", 0x10c5ca17, 50);
}

/* A scan without writes, every entry in a list. */
struct seq {
	uint64_t *order;
	uint32_t *id;
	uint32_t n, cap;
};

static void
seq_add(struct seq *q, uint64_t o, uint32_t id)
{
	if (q->n == q->cap) {
		q->cap = q->cap != 0 ? 2 * q->cap : 1024;
		q->order = realloc(q->order, q->cap * sizeof(*q->order));
		q->id = realloc(q->id, q->cap * sizeof(*q->id));
		assert_true(q->order != NULL && q->id != NULL);
	}
	q->order[q->n] = o;
	q->id[q->n++] = id;
}

static void
seq_free(struct seq *q)
{
	free(q->order);
	free(q->id);
	memset(q, 0, sizeof(*q));
}

static void
seq_equal(const struct seq *a, const struct seq *b)
{
	uint32_t i;

	assert_int_equal(a->n, b->n);
	for (i = 0; i < a->n; i++) {
		assert_true(a->order[i] == b->order[i]);
		assert_int_equal(a->id[i], b->id[i]);
	}
}

/* fn for stops: takes `take` entries a page then stops (returns ret) at the next one. */
struct sctx {
	struct seq q;
	uint32_t take; /* UINT32_MAX: never stops */
	int ret;
	uint32_t in_page;
	int stopped;
	uint64_t stop_order;
	int has_first; /* the page must begin with first */
	uint64_t first;
	uint32_t calls;
};

static int
stop_fn(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct sctx *c = arg;
	uint64_t o = km_scan_order(k->hash);
	long id = key_parse(k->data, k->len);

	(void)v;
	assert_true(id >= 0);
	assert_true(k->hash == km_key_hash(k->data, k->len));
	if (c->has_first) {
		assert_true(o == c->first);
		c->has_first = 0;
	}
	c->calls++;
	if (c->in_page == c->take) {
		c->stopped = 1;
		c->stop_order = o;
		return c->ret;
	}
	c->in_page++;
	seq_add(&c->q, o, (uint32_t)id);
	return 0;
}

static void
scan_seq(struct env *e, const uint8_t *prefix, uint16_t plen, uint32_t budget, uint32_t take,
	struct seq *out)
{
	struct sctx c = {.take = take, .ret = 1};
	uint64_t cur = 0, pages = 0;

	do {
		int after_stop = c.has_first;

		c.in_page = 0;
		c.stopped = 0;
		assert_int_equal(km_store_scan(e->s, prefix, plen, &cur, budget, stop_fn, &c), 0);
		if (after_stop)
			assert_false(c.has_first); /* the entry stopped at began this page */
		if (c.stopped) {
			assert_true(cur == c.stop_order);
			c.has_first = 1;
			c.first = cur;
		}
		assert_true(++pages <= PAGES_MAX);
	} while (cur != 0);
	assert_false(c.has_first); /* the stopped entry came back */
	*out = c.q;
}

/* The present keys of the model under a prefix, sorted by order. */
static int
u64_cmp2(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

static void
model_seq(struct env *e, const uint8_t *prefix, uint16_t plen, struct seq *out)
{
	uint64_t(*pairs)[2] = malloc((e->nb_pres + 1) * sizeof(*pairs));
	uint32_t j, n = 0;
	uint8_t kb[32];

	assert_non_null(pairs);
	memset(out, 0, sizeof(*out));
	for (j = 0; j < e->nb_pres; j++) {
		uint32_t id = e->pres[j];
		struct km_key k;

		if (!key_matches(id, prefix, plen))
			continue;
		k = key_of(id, kb);
		pairs[n][0] = km_scan_order(k.hash);
		pairs[n++][1] = id;
	}
	qsort(pairs, n, sizeof(pairs[0]), u64_cmp2);
	for (j = 0; j < n; j++)
		seq_add(out, pairs[j][0], (uint32_t)pairs[j][1]);
	free(pairs);
}

/* 2 and 3. Stops and order, no writes. */
static void
stop_driver(const char *driver, uint64_t seed)
{
	static const uint32_t budgets[] = {1, 7, 64, 1000};
	static const uint32_t takes[] = {1, 2, 5};
	struct env *e = env_new(driver, seed);
	const uint8_t *prefixes[] = {NULL, (const uint8_t *)"e42/", (const uint8_t *)"e3"};
	uint16_t plens[] = {0, 4, 2};
	struct seq ref, got;
	uint32_t p, b, t;

	fill(e, 1500);
	for (p = 0; p < 3; p++) {
		/* 3: strictly increasing orders, exactly the model's keys, whatever the budget */
		model_seq(e, prefixes[p], plens[p], &ref);
		assert_true(ref.n > (p == 0 ? 1000u : 10u));
		for (b = 0; b < 4; b++) {
			scan_seq(e, prefixes[p], plens[p], budgets[b], UINT32_MAX, &got);
			seq_equal(&got, &ref);
			seq_free(&got);
		}
		/* 2: a page stopped after `take` entries resumes at the entry it stopped at */
		for (t = 0; t < 3; t++) {
			for (b = 0; b < 4; b++) {
				scan_seq(e, prefixes[p], plens[p], budgets[b], takes[t], &got);
				seq_equal(&got, &ref);
				seq_free(&got);
			}
		}
		seq_free(&ref);
	}

	/* fn stopping at the first entry: the cursor stays there. */
	{
		struct sctx c = {.take = 0, .ret = 1};
		uint64_t cur = 0, first;

		model_seq(e, NULL, 0, &ref);
		first = ref.order[0];
		assert_int_equal(km_store_scan(e->s, NULL, 0, &cur, 1000, stop_fn, &c), 0);
		assert_true(c.stopped && cur == first && c.calls == 1);
		c.stopped = 0;
		assert_int_equal(km_store_scan(e->s, NULL, 0, &cur, 1000, stop_fn, &c), 0);
		assert_true(c.stopped && cur == first && c.calls == 2);
		seq_free(&c.q);
		seq_free(&ref);
	}

	/* A negative value from fn is returned, the cursor at the entry: resuming there
	 * gives the rest, that entry first. */
	for (b = 0; b < 4; b++) {
		struct sctx c = {.take = UINT32_MAX, .ret = 1};
		struct sctx neg = {.take = 0, .ret = -77};
		uint64_t cur = 0, pages = 0;
		int rc;

		model_seq(e, NULL, 0, &ref);
		/* take 3 entries overall with a never-stopping fn, page by page, then fail */
		c.take = UINT32_MAX;
		for (;;) {
			c.in_page = 0;
			if (c.q.n >= 3) {
				/* next entry: fn fails on it */
				neg.calls = 0;
				neg.stopped = 0;
				rc = km_store_scan(e->s, NULL, 0, &cur, budgets[b], stop_fn, &neg);
				if (neg.stopped) {
					assert_int_equal(rc, -77);
					assert_true(cur == neg.stop_order);
					assert_true(cur == ref.order[c.q.n]);
					assert_int_equal(neg.calls, 1);
					break;
				}
				assert_int_equal(rc, 0);
				assert_true(cur != 0);
			} else {
				c.take = 3 - c.q.n;
				c.stopped = 0;
				assert_int_equal(
					km_store_scan(e->s, NULL, 0, &cur, budgets[b], stop_fn, &c),
					0);
				if (c.stopped) {
					assert_true(cur == c.stop_order);
					c.has_first = 0;
				}
				assert_true(cur != 0);
			}
			assert_true(++pages <= PAGES_MAX);
		}
		/* resume: the failed entry first, then the rest */
		c.take = UINT32_MAX;
		c.has_first = 1;
		c.first = cur;
		do {
			c.in_page = 0;
			assert_int_equal(
				km_store_scan(e->s, NULL, 0, &cur, budgets[b], stop_fn, &c), 0);
			assert_true(++pages <= PAGES_MAX);
		} while (cur != 0);
		assert_false(c.has_first);
		seq_equal(&c.q, &ref);
		seq_free(&c.q);
		seq_free(&neg.q);
		seq_free(&ref);
	}
	env_free(e);
}

static void
test_stop_order_mem(void **state)
{
	(void)state;
	stop_driver("mem", 0x0dd5ca9);
}

static void
test_stop_order_log(void **state)
{
	(void)state;
	stop_driver("log", 0x0dd10c);
}

/* 4. Most keys deleted during a scan: the ones just visited (entries behind them shift
 * back across the cursor's home slot) and random ones. */
struct dmix {
	uint32_t n0;      /* keys when the scan began */
	uint32_t deleted; /* since */
};

static void
del_writes(struct env *e, struct dctx *c, void *arg)
{
	struct dmix *d = arg;
	uint32_t i, id, want;

	for (i = 0; i < c->page_n; i++) {
		if ((xs_next(&e->rng) & 1) && e->k[c->page_ids[i]].version != 0) {
			m_del(e, c->page_ids[i]);
			d->deleted++;
		}
	}
	/* 90% of the keys gone as the cursor crosses the order space */
	want = (uint32_t)((double)d->n0 * 0.9 * ((double)c->next / 18446744073709551616.0));
	while (d->deleted < want) {
		id = pick_present(e, -1);
		if (id == ID_NONE)
			return;
		m_del(e, id);
		d->deleted++;
	}
}

static void
del_driver(const char *driver, uint64_t seed)
{
	static const uint32_t budgets[] = {1, 7, 64};
	struct env *e = env_new(driver, seed);
	uint32_t b;
	int p;

	for (p = 0; p < 2; p++) {
		for (b = 0; b < 3; b++) {
			const uint8_t *prefix = p == 0 ? NULL : (const uint8_t *)"e4";
			uint16_t plen = p == 0 ? 0 : 2;
			struct dmix d = {0};

			fill(e, 4000 - e->nb_pres);
			d.n0 = e->nb_pres;
			diff_scan(e, prefix, plen, budgets[b], del_writes, &d);
			assert_true(e->nb_pres < d.n0 / 4);
		}
	}
	env_free(e);
}

static void
test_deletes_mem(void **state)
{
	(void)state;
	del_driver("mem", 0xde1e7e);
}

static void
test_deletes_log(void **state)
{
	(void)state;
	del_driver("log", 0xde110c);
}

/*
 * 5. km_store_scan_table() over a fake table: linear probing, home (order * nb) >> 64.
 * Entries are known by their order; the key is "f<order in hex>", the hash is
 * km_scan_order(order) (the rotation is its own inverse).
 */
struct ftab {
	uint64_t nb;
	uint8_t *used;
	uint64_t *ord;
	uint32_t n;
	uint64_t fail_order; /* visit fails with -EIO on this entry (0: never) */
};

static int
ft_used(void *tab, uint64_t i)
{
	const struct ftab *t = tab;

	assert_true(i < t->nb);
	return t->used[i];
}

static uint64_t
ft_order(void *tab, uint64_t i)
{
	const struct ftab *t = tab;

	assert_true(i < t->nb && t->used[i]);
	return t->ord[i];
}

static int
ft_visit(void *tab, uint64_t i, const uint8_t *prefix, uint16_t plen,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	const struct ftab *t = tab;
	char buf[24];
	struct km_key k = {.data = (const uint8_t *)buf};
	struct km_value_ref v = {.data = (const uint8_t *)buf, .version = i + 1};

	assert_true(i < t->nb && t->used[i]);
	if (t->fail_order != 0 && t->ord[i] == t->fail_order)
		return -EIO;
	k.len = (uint16_t)snprintf(buf, sizeof(buf), "f%016llx", (unsigned long long)t->ord[i]);
	k.hash = km_scan_order(t->ord[i]);
	v.len = k.len;
	if (k.len < plen || (plen != 0 && memcmp(buf, prefix, plen) != 0))
		return 0;
	return fn(arg, &k, &v);
}

static uint64_t
ft_home(uint64_t o, uint64_t nb)
{
	return (uint64_t)(((unsigned __int128)o * nb) >> 64);
}

/* The first order homed at slot h: ceil(h * 2^64 / nb). */
static uint64_t
ft_slot_order(uint64_t h, uint64_t nb)
{
	return (uint64_t)((((unsigned __int128)h << 64) + nb - 1) / nb);
}

static struct ftab *
ft_new(uint64_t nb)
{
	struct ftab *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	t->nb = nb;
	t->used = calloc(nb + 1, 1);
	t->ord = calloc(nb + 1, sizeof(*t->ord));
	assert_true(t->used != NULL && t->ord != NULL);
	return t;
}

static void
ft_free(struct ftab *t)
{
	free(t->used);
	free(t->ord);
	free(t);
}

static void
ft_insert(struct ftab *t, uint64_t o)
{
	uint64_t i = ft_home(o, t->nb), n;

	for (n = 0; t->used[i]; n++) {
		assert_true(n < t->nb);
		assert_true(t->ord[i] != o);
		i = i + 1 == t->nb ? 0 : i + 1;
	}
	t->used[i] = 1;
	t->ord[i] = o;
	t->n++;
}

/* An order homed at slot h (j-th of those crafted there). */
static uint64_t
ft_at(uint64_t h, uint64_t nb, uint64_t j)
{
	uint64_t o = ft_slot_order(h, nb) + j * 1000 + 1;

	assert_true(ft_home(o, nb) == h);
	return o;
}

struct fctx {
	uint64_t lo;
	uint64_t prev;
	int any;
	uint32_t n;
};

static int
ft_fn(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct fctx *c = arg;
	uint64_t o = km_scan_order(k->hash);
	char buf[24];

	snprintf(buf, sizeof(buf), "f%016llx", (unsigned long long)o);
	assert_int_equal(k->len, strlen(buf));
	assert_memory_equal(k->data, buf, k->len);
	assert_int_equal(v->len, k->len);
	assert_true(o >= c->lo);
	if (c->any)
		assert_true(o > c->prev);
	c->any = 1;
	c->prev = o;
	c->n++;
	return 0;
}

/* km_scan_table.visit_max of the pages ft_check_from() runs (0: none). */
static uint32_t ft_visit_max;

/* A whole scan from cursor c0 gives exactly the entries of order >= c0, in order.
 * @return the pages. */
static uint64_t
ft_check_from(struct ftab *t, uint64_t c0, uint32_t budget)
{
	const struct km_scan_table st = {.tab = t,
		.nb = t->nb,
		.visit_max = ft_visit_max,
		.used = ft_used,
		.order = ft_order,
		.visit = ft_visit};
	struct fctx c = {0};
	uint64_t cur = c0, pages = 0, i;
	uint32_t expect = 0;

	do {
		c.lo = cur;
		assert_int_equal(km_store_scan_table(&st, NULL, 0, &cur, budget, ft_fn, &c), 0);
		if (cur != 0) {
			assert_true(cur > c.lo);
			if (c.any)
				assert_true(c.prev < cur);
		}
		assert_true(++pages <= PAGES_MAX);
	} while (cur != 0);
	/* strictly increasing orders, each of the table and >= c0: the count decides */
	for (i = 0; i < t->nb; i++)
		expect += t->used[i] && t->ord[i] >= c0;
	if (c.n != expect)
		fail_msg("nb %llu budget %u from %016llx: %u entries, expected %u",
			(unsigned long long)t->nb, budget, (unsigned long long)c0, c.n, expect);
	return pages;
}

/* From many cursors: 0, every entry's order and the next, every slot's first order. */
static void
ft_check_all(struct ftab *t, const uint32_t *budgets, uint32_t nb_budgets)
{
	uint32_t b;
	uint64_t i;

	for (b = 0; b < nb_budgets; b++) {
		ft_check_from(t, 0, budgets[b]);
		ft_check_from(t, UINT64_MAX, budgets[b]);
		for (i = 0; i < t->nb; i++) {
			if (i != 0)
				ft_check_from(t, ft_slot_order(i, t->nb), budgets[b]);
			if (t->used[i]) {
				ft_check_from(t, t->ord[i], budgets[b]);
				if (t->ord[i] != UINT64_MAX)
					ft_check_from(t, t->ord[i] + 1, budgets[b]);
			}
		}
	}
}

static void
test_table_wrap(void **state)
{
	static const uint32_t budgets[] = {1, 2, 3, 5, 16, 100};
	struct ftab *t = ft_new(16);

	(void)state;
	/* homes 13, 14, 14, 15 x4 spill over the end into 0..3; then 0, 0, 1, 5, 5, 9 */
	ft_insert(t, ft_at(15, 16, 0));
	ft_insert(t, ft_at(13, 16, 0));
	ft_insert(t, ft_at(15, 16, 1));
	ft_insert(t, ft_at(14, 16, 0));
	ft_insert(t, ft_at(15, 16, 2));
	ft_insert(t, ft_at(14, 16, 1));
	ft_insert(t, ft_at(15, 16, 3));
	ft_insert(t, ft_at(0, 16, 0));
	ft_insert(t, ft_at(1, 16, 0));
	ft_insert(t, ft_at(0, 16, 1));
	ft_insert(t, ft_at(5, 16, 0));
	ft_insert(t, ft_at(5, 16, 1));
	ft_insert(t, ft_at(9, 16, 0));
	/* entries homed at 14 and 15 sit in slots 0.. */
	assert_true(t->used[0] && ft_home(t->ord[0], 16) >= 13);
	assert_true(t->used[1] && ft_home(t->ord[1], 16) >= 13);
	ft_check_all(t, budgets, 6);
	/* Pages that visit at most 1, 2 or 3 entries (the log store's bound on its reads):
	 * every entry all the same, exactly once. */
	for (ft_visit_max = 1; ft_visit_max <= 3; ft_visit_max++)
		ft_check_all(t, budgets, 6);
	ft_visit_max = 0;
	ft_free(t);
}

static void
test_table_one_free(void **state)
{
	static const uint32_t budgets[] = {1, 2, 4, 15, 16, 17, 1000};
	uint64_t rng = 0xf1ee, nb;
	uint32_t round, j;
	struct ftab *t;

	(void)state;
	for (round = 0; round < 24; round++) {
		nb = 5 + round % 20;
		t = ft_new(nb);

		/* nb - 1 entries: random, or crowding the end of the table */
		for (j = 0; j + 1 < nb; j++) {
			uint64_t o = xs_next(&rng);

			if (round % 3 == 1)
				o = ft_at(nb - 1 - xs_below(&rng, 2), nb, j);
			ft_insert(t, o);
		}
		ft_check_all(t, budgets, 7);
		ft_free(t);
	}
}

/* Every slot used: km_scan_table's drivers never get there, but the helper's loop must
 * still end after one turn. */
static void
test_table_full(void **state)
{
	static const uint32_t budgets[] = {1, 3, 8, 100};
	uint64_t rng = 0xf011;
	uint32_t j;
	struct ftab *t = ft_new(8);

	(void)state;
	for (j = 0; j < 8; j++)
		ft_insert(t, xs_next(&rng));
	ft_check_all(t, budgets, 4);
	ft_free(t);
}

/* The order of a random entry. */
static uint64_t
ft_some(const struct ftab *t, uint64_t *rng)
{
	uint64_t i = xs_below(rng, t->nb);

	while (!t->used[i])
		i = i + 1 == t->nb ? 0 : i + 1;
	return t->ord[i];
}

/* More candidates in a page's slots than the page sorts (384): it ends early, the rest
 * comes in the next pages. */
static void
test_table_many(void **state)
{
	static const uint32_t budgets[] = {5000, 2048, 1000, 64, 1};
	uint64_t rng = 0x3a4b, pages;
	uint32_t j, b;
	struct ftab *t = ft_new(2048);

	(void)state;
	for (j = 0; j < 2000; j++)
		ft_insert(t, xs_next(&rng));
	for (b = 0; b < 5; b++) {
		pages = ft_check_from(t, 0, budgets[b]);
		if (budgets[b] >= 2048)
			assert_true(pages >= 2000 / 384 + 1);
		for (j = 0; j < 8; j++)
			ft_check_from(t, xs_next(&rng), budgets[b]);
		for (j = 0; j < 8; j++)
			ft_check_from(t, ft_some(t, &rng), budgets[b]);
	}
	ft_free(t);
}

static void
test_table_empty(void **state)
{
	struct ftab *t = ft_new(8);
	struct km_scan_table st = {
		.tab = t, .nb = 8, .used = ft_used, .order = ft_order, .visit = ft_visit};
	struct fctx c = {0};
	uint64_t cur;

	(void)state;
	/* budget >= nb: one page */
	cur = 0;
	assert_int_equal(km_store_scan_table(&st, NULL, 0, &cur, 8, ft_fn, &c), 0);
	assert_true(cur == 0);
	cur = 12345;
	assert_int_equal(km_store_scan_table(&st, NULL, 0, &cur, 100, ft_fn, &c), 0);
	assert_true(cur == 0);
	cur = UINT64_MAX;
	assert_int_equal(km_store_scan_table(&st, NULL, 0, &cur, 8, ft_fn, &c), 0);
	assert_true(cur == 0);
	/* smaller budgets (0 counts as 1): a page per `budget` empty slots, then done */
	assert_int_equal(ft_check_from(t, 0, 0), 8);
	assert_int_equal(ft_check_from(t, 0, 1), 8);
	assert_int_equal(ft_check_from(t, 0, 3), 3);
	assert_int_equal(ft_check_from(t, UINT64_MAX, 1), 1);
	st.nb = 0;
	cur = 777;
	assert_int_equal(km_store_scan_table(&st, NULL, 0, &cur, 100, ft_fn, &c), 0);
	assert_true(cur == 0);
	assert_int_equal(c.n, 0);
	ft_free(t);
}

/* visit failing: its error is returned, the cursor at the entry; and a prefix. */
static void
test_table_fail_prefix(void **state)
{
	struct ftab *t = ft_new(64);
	struct km_scan_table st = {
		.tab = t, .nb = 64, .used = ft_used, .order = ft_order, .visit = ft_visit};
	uint64_t rng = 0xfa11, cur = 0, sorted[40];
	uint32_t j, n = 0;
	struct fctx c = {0};
	char pf[24];

	(void)state;
	for (j = 0; j < 40; j++) {
		sorted[j] = xs_next(&rng);
		ft_insert(t, sorted[j]);
	}
	qsort(sorted, 40, sizeof(sorted[0]), u64_cmp2);
	t->fail_order = sorted[17];
	do {
		int rc = km_store_scan_table(&st, NULL, 0, &cur, 4, ft_fn, &c);

		if (rc != 0) {
			assert_int_equal(rc, -EIO);
			assert_true(cur == sorted[17]);
			assert_int_equal(c.n, 17);
			n++;
			break;
		}
	} while (cur != 0);
	assert_int_equal(n, 1);
	/* a prefix of one entry's key: that entry only */
	t->fail_order = 0;
	snprintf(pf, sizeof(pf), "f%016llx", (unsigned long long)sorted[23]);
	memset(&c, 0, sizeof(c));
	cur = 0;
	do
		assert_int_equal(
			km_store_scan_table(&st, (const uint8_t *)pf, 17, &cur, 4, ft_fn, &c), 0);
	while (cur != 0);
	assert_int_equal(c.n, 1);
	assert_true(c.prev == sorted[23]);
	ft_free(t);
}

/* 6. Edges, both drivers. */
static int
count_fn(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	(void)k;
	(void)v;
	(*(uint32_t *)arg)++;
	return 0;
}

static void
edge_driver(const char *driver)
{
	struct env *e = env_new(driver, 0xed9e);
	uint8_t longp[300];
	uint64_t cur, pages;
	uint32_t n = 0, b;

	/* Empty store: nothing visited, the scan complete at once whatever the budget. */
	for (b = 1; b <= 1000; b *= 10) {
		cur = 0;
		pages = 0;
		do {
			assert_int_equal(km_store_scan(e->s, NULL, 0, &cur, b, count_fn, &n), 0);
			pages++;
		} while (cur != 0);
		assert_int_equal(pages, 1);
		cur = UINT64_MAX / 3;
		pages = 0;
		do {
			assert_int_equal(km_store_scan(e->s, (const uint8_t *)"e1/", 3, &cur, b,
						 count_fn, &n),
				0);
			pages++;
		} while (cur != 0);
		assert_int_equal(pages, 1);
	}
	assert_int_equal(n, 0);
	/* bad arguments */
	cur = 0;
	assert_int_equal(km_store_scan(e->s, NULL, 0, &cur, 10, NULL, NULL), -EINVAL);
	assert_int_equal(km_store_scan(e->s, NULL, 0, NULL, 10, count_fn, &n), -EINVAL);
	assert_int_equal(km_store_scan(e->s, NULL, 3, &cur, 10, count_fn, &n), -EINVAL);

	fill(e, 500);
	cur = 0;
	assert_int_equal(km_store_scan(e->s, NULL, 0, &cur, 10, NULL, NULL), -EINVAL);
	/* a prefix longer than every key; one that is a whole key and more */
	memset(longp, 'e', sizeof(longp));
	for (b = 0; b < 2; b++) {
		uint16_t plen = b == 0 ? sizeof(longp) : 0;

		if (b == 1) {
			key_fmt(e->pres[0], longp);
			plen = (uint16_t)(strlen((char *)longp) + 1); /* with its NUL */
		}
		cur = 0;
		pages = 0;
		do {
			assert_int_equal(
				km_store_scan(e->s, longp, plen, &cur, 64, count_fn, &n), 0);
			assert_true(++pages <= PAGES_MAX);
		} while (cur != 0);
		assert_int_equal(n, 0);
	}
	/* the whole key as prefix: exactly that key */
	cur = 0;
	do
		assert_int_equal(km_store_scan(e->s, longp, (uint16_t)strlen((char *)longp), &cur,
					 64, count_fn, &n),
			0);
	while (cur != 0);
	assert_true(n >= 1);
	/* no prefix, budget 0: every key */
	n = 0;
	cur = 0;
	do
		assert_int_equal(km_store_scan(e->s, NULL, 0, &cur, 0, count_fn, &n), 0);
	while (cur != 0);
	assert_int_equal(n, 500);
	env_free(e);
}

static void
test_edges(void **state)
{
	(void)state;
	edge_driver("mem");
	edge_driver("log");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_empty),
		cmocka_unit_test(test_table_wrap),
		cmocka_unit_test(test_table_one_free),
		cmocka_unit_test(test_table_full),
		cmocka_unit_test(test_table_many),
		cmocka_unit_test(test_table_fail_prefix),
		cmocka_unit_test(test_edges),
		cmocka_unit_test(test_stop_order_mem),
		cmocka_unit_test(test_stop_order_log),
		cmocka_unit_test(test_deletes_mem),
		cmocka_unit_test(test_deletes_log),
		cmocka_unit_test(test_diff_mem),
		cmocka_unit_test(test_diff_log),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
