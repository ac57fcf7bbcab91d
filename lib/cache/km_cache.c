/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Per-worker value cache: a chained hash index over malloc'd entries and a SIEVE queue.
 *
 * Entry: one malloc block, a header, the key, then the value. The header links the
 * entry into its hash chain (hlist: next + pointer to the previous link, O(1) unlink) and
 * into the SIEVE queue (doubly linked, head = newest, tail = oldest).
 *
 * Index: a power-of-two array of chain heads, grown by doubling when there are more
 * entries than heads. The bucket is taken from the top bits of hash * an odd constant:
 * a worker caches the keys of the shards it owns, and shards are ranges of the top hash
 * bits, so neither the raw top bits nor (with route prefixes) the raw low bits can be
 * trusted to vary; the product's top bits depend on every bit of the hash.
 *
 * SIEVE: the hand walks from the tail towards the head (prev pointers), clearing visited
 * bits, and evicts the first clear entry; it then rests on that entry's newer neighbour,
 * NULL meaning "start again at the tail". Removing the entry under the hand for any other
 * reason moves the hand the same way, so it never points at freed memory.
 *
 * A replacement evicts other entries to make room while the entry being replaced stays
 * linked: the hand passes over it without evicting it or clearing its bit (its queue
 * position and visited bit are kept, as the header promises). Any entry other than the
 * one being replaced is a candidate, and one always exists when room is needed, because
 * an entry alone never exceeds a quarter of the capacity.
 *
 * Prefetch marks: every mark set by a put ends in exactly one of prefetched_used (first
 * hit, which returns it to km_cache_get_mark()'s caller) or prefetched_evicted_unused (told
 * to the unused callback) (the marked value left the cache any other way:
 * eviction, invalidation, tag drop, replacement by a put, -E2BIG drop, clear), so
 * used + evicted_unused + marks still cached = prefetched puts.
 *
 * Counters are written with relaxed atomic stores (the single writer reads its own
 * values plainly): readers on other threads see whole 64-bit words.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "km_cache.h"

#define CACHE_BUCKETS_MIN 256
/* 2^64 / golden ratio, odd: multiplicative hashing spreads every bit of the hash. */
#define CACHE_HASH_MUL UINT64_C(0x9e3779b97f4a7c15)

struct cache_ent {
	struct cache_ent *hnext;   /* hash chain */
	struct cache_ent **hpprev; /* the link pointing at this entry */
	struct cache_ent *qprev;   /* queue: newer neighbour (NULL at the head) */
	struct cache_ent *qnext;   /* queue: older neighbour (NULL at the tail) */
	uint64_t hash;
	uint64_t tag;
	uint64_t version;
	uint32_t val_len;
	uint32_t val_room; /* value bytes the block can hold */
	uint16_t key_len;
	uint8_t visited;
	uint8_t mark;   /* the prefetch that brought the value, until its first hit; 0: none */
	uint8_t data[]; /* key_len bytes of key, then val_len bytes of value */
};

struct km_cache {
	struct cache_ent **buckets;
	unsigned int shift; /* 64 - log2(number of buckets) */
	uint64_t nb_buckets;
	struct cache_ent *head;     /* newest */
	struct cache_ent *tail;     /* oldest */
	struct cache_ent *hand;     /* next entry the hand examines; NULL: the tail */
	km_cache_unused_fn *unused; /* told of every marked value that leaves unused */
	void *unused_arg;
	km_cache_evict_fn *evicted; /* told of every eviction */
	void *evicted_arg;
	uint8_t pf_visited; /* marked entries enter the queue visited */
	struct km_cache_counters cnt;
};

static inline void
cnt_add(uint64_t *p, uint64_t d)
{
	__atomic_store_n(p, *p + d, __ATOMIC_RELAXED);
}

static inline void
cnt_sub(uint64_t *p, uint64_t d)
{
	__atomic_store_n(p, *p - d, __ATOMIC_RELAXED);
}

static inline uint64_t
ent_charge(uint16_t key_len, uint32_t val_len)
{
	return KM_CACHE_ENTRY_OVERHEAD + (uint64_t)key_len + val_len;
}

static inline struct cache_ent **
bucket_of(const struct km_cache *c, uint64_t hash)
{
	return &c->buckets[(hash * CACHE_HASH_MUL) >> c->shift];
}

static inline void
hash_link(struct cache_ent **b, struct cache_ent *e)
{
	e->hnext = *b;
	if (e->hnext != NULL)
		e->hnext->hpprev = &e->hnext;
	e->hpprev = b;
	*b = e;
}

static inline void
hash_unlink(struct cache_ent *e)
{
	*e->hpprev = e->hnext;
	if (e->hnext != NULL)
		e->hnext->hpprev = e->hpprev;
}

static struct cache_ent *
cache_lookup(const struct km_cache *c, const struct km_key *k)
{
	struct cache_ent *e;

	for (e = *bucket_of(c, k->hash); e != NULL; e = e->hnext) {
		if (e->hash == k->hash && e->key_len == k->len &&
			memcmp(e->data, k->data, k->len) == 0)
			return e;
	}
	return NULL;
}

/* Double the chain heads. Failing to allocate only leaves chains longer: not an error. */
static void
cache_grow_index(struct km_cache *c)
{
	uint64_t n = c->nb_buckets * 2, i;
	struct cache_ent **nb, *e, *next;

	nb = calloc(n, sizeof(*nb));
	if (nb == NULL)
		return;
	c->shift--;
	for (i = 0; i < c->nb_buckets; i++) {
		for (e = c->buckets[i]; e != NULL; e = next) {
			next = e->hnext;
			hash_link(&nb[(e->hash * CACHE_HASH_MUL) >> c->shift], e);
		}
	}
	free(c->buckets);
	c->buckets = nb;
	c->nb_buckets = n;
}

static inline void
queue_push_head(struct km_cache *c, struct cache_ent *e)
{
	e->qprev = NULL;
	e->qnext = c->head;
	if (c->head != NULL)
		c->head->qprev = e;
	else
		c->tail = e;
	c->head = e;
}

static inline void
queue_unlink(struct km_cache *c, struct cache_ent *e)
{
	if (c->hand == e)
		c->hand = e->qprev;
	if (e->qprev != NULL)
		e->qprev->qnext = e->qnext;
	else
		c->head = e->qnext;
	if (e->qnext != NULL)
		e->qnext->qprev = e->qprev;
	else
		c->tail = e->qprev;
}

/* Put n where o is, in the queue, the hash chain and under the hand. */
static void
ent_substitute(struct km_cache *c, struct cache_ent *o, struct cache_ent *n)
{
	n->qprev = o->qprev;
	n->qnext = o->qnext;
	if (n->qprev != NULL)
		n->qprev->qnext = n;
	else
		c->head = n;
	if (n->qnext != NULL)
		n->qnext->qprev = n;
	else
		c->tail = n;
	if (c->hand == o)
		c->hand = n;
	n->hnext = o->hnext;
	n->hpprev = o->hpprev;
	*n->hpprev = n;
	if (n->hnext != NULL)
		n->hnext->hpprev = &n->hnext;
}

/* e's marked value leaves the cache before any hit. */
static void
mark_unused(struct km_cache *c, struct cache_ent *e)
{
	cnt_add(&c->cnt.prefetched_evicted_unused, 1);
	if (c->unused != NULL)
		c->unused(c->unused_arg, e->mark, e->tag, e->data, e->key_len);
	e->mark = 0;
}

/* Unlink and free e, fixing the byte, entry and prefetch counters. */
static void
ent_drop(struct km_cache *c, struct cache_ent *e)
{
	hash_unlink(e);
	queue_unlink(c, e);
	if (e->mark != 0)
		mark_unused(c, e);
	cnt_sub(&c->cnt.bytes, ent_charge(e->key_len, e->val_len));
	cnt_sub(&c->cnt.entries, 1);
	free(e);
}

/* Evict one entry by SIEVE, never keep (may be NULL). The queue holds another entry. */
static void
cache_evict(struct km_cache *c, const struct cache_ent *keep)
{
	struct cache_ent *e = c->hand != NULL ? c->hand : c->tail;

	for (;;) {
		if (e != keep) {
			if (!e->visited)
				break;
			e->visited = 0;
		}
		e = e->qprev != NULL ? e->qprev : c->tail;
	}
	c->hand = e->qprev;
	if (c->evicted != NULL)
		c->evicted(c->evicted_arg, e->hash);
	ent_drop(c, e);
	cnt_add(&c->cnt.evictions, 1);
}

static struct cache_ent *
ent_alloc(uint16_t key_len, uint32_t val_len)
{
	struct cache_ent *e = malloc(sizeof(*e) + key_len + val_len);

	if (e != NULL)
		e->val_room = val_len;
	return e;
}

static inline void
ent_fill(struct cache_ent *e, uint64_t tag, const void *val, uint32_t len, uint64_t version,
	uint8_t mark)
{
	e->tag = tag;
	e->version = version;
	e->mark = mark;
	e->val_len = len;
	if (len != 0)
		memcpy(e->data + e->key_len, val, len);
}

int
km_cache_create(uint64_t bytes, struct km_cache **out)
{
	struct km_cache *c;

	if (out == NULL || bytes < KM_CACHE_MIN_BYTES)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->nb_buckets = CACHE_BUCKETS_MIN;
	c->shift = 64 - __builtin_ctzll(CACHE_BUCKETS_MIN);
	c->buckets = calloc(c->nb_buckets, sizeof(*c->buckets));
	if (c->buckets == NULL) {
		free(c);
		return -ENOMEM;
	}
	c->cnt.capacity = bytes;
	*out = c;
	return 0;
}

void
km_cache_destroy(struct km_cache *c)
{
	struct cache_ent *e, *next;

	if (c == NULL)
		return;
	for (e = c->head; e != NULL; e = next) {
		next = e->qnext;
		free(e);
	}
	free(c->buckets);
	free(c);
}

int
km_cache_get(struct km_cache *c, const struct km_key *k, uint64_t tag, struct km_value_ref *v)
{
	uint8_t mark;

	return km_cache_get_mark(c, k, tag, v, &mark);
}

int
km_cache_get_mark(struct km_cache *c, const struct km_key *k, uint64_t tag, struct km_value_ref *v,
	uint8_t *mark)
{
	struct cache_ent *e = cache_lookup(c, k);

	*mark = 0;
	if (e == NULL || e->tag != tag) {
		/* A value from another generation of the shard must never be served. */
		if (e != NULL)
			ent_drop(c, e);
		cnt_add(&c->cnt.misses, 1);
		return -ENOENT;
	}
	e->visited = 1;
	if (e->mark != 0) {
		*mark = e->mark;
		e->mark = 0;
		cnt_add(&c->cnt.prefetched_used, 1);
	}
	v->data = e->data + e->key_len;
	v->len = e->val_len;
	v->version = e->version;
	cnt_add(&c->cnt.hits, 1);
	return 0;
}

int
km_cache_contains(const struct km_cache *c, const struct km_key *k, uint64_t tag)
{
	const struct cache_ent *e = cache_lookup(c, k);

	return e != NULL && e->tag == tag;
}

int
km_cache_put(struct km_cache *c, const struct km_key *k, uint64_t tag, const void *val,
	uint32_t len, uint64_t version, uint8_t mark)
{
	uint64_t charge = ent_charge(k->len, len), old_charge;
	struct cache_ent *e = cache_lookup(c, k), *n;

	/* charge * 4 > capacity, without overflow: charge is an integer. */
	if (charge > c->cnt.capacity / 4) {
		/* An older value of k must not outlive the write it was superseded by. */
		if (e != NULL) {
			ent_drop(c, e);
			cnt_add(&c->cnt.invalidations, 1);
		}
		return -E2BIG;
	}

	if (e == NULL) {
		n = ent_alloc(k->len, len);
		if (n == NULL)
			return -ENOMEM;
		while (c->cnt.bytes + charge > c->cnt.capacity)
			cache_evict(c, NULL);
		n->hash = k->hash;
		n->key_len = k->len;
		memcpy(n->data, k->data, k->len);
		n->visited = mark != 0 && c->pf_visited;
		ent_fill(n, tag, val, len, version, mark);
		queue_push_head(c, n);
		hash_link(bucket_of(c, k->hash), n);
		cnt_add(&c->cnt.bytes, charge);
		cnt_add(&c->cnt.entries, 1);
		cnt_add(&c->cnt.inserts, 1);
		if (c->cnt.entries > c->nb_buckets)
			cache_grow_index(c);
		return 0;
	}

	/* Replacement: reuse the block unless it is too small or more than twice too big. */
	n = e;
	if (len > e->val_room || len < e->val_room / 2) {
		n = ent_alloc(k->len, len);
		if (n == NULL) {
			ent_drop(c, e);
			cnt_add(&c->cnt.invalidations, 1);
			return -ENOMEM;
		}
	}
	old_charge = ent_charge(e->key_len, e->val_len);
	while (c->cnt.bytes - old_charge + charge > c->cnt.capacity)
		cache_evict(c, e);
	if (e->mark != 0)
		mark_unused(c, e);
	if (n != e) {
		n->hash = e->hash;
		n->key_len = e->key_len;
		n->visited = e->visited;
		memcpy(n->data, e->data, e->key_len);
		ent_substitute(c, e, n);
		free(e);
	}
	ent_fill(n, tag, val, len, version, mark);
	cnt_sub(&c->cnt.bytes, old_charge);
	cnt_add(&c->cnt.bytes, charge);
	return 0;
}

void
km_cache_invalidate(struct km_cache *c, const struct km_key *k)
{
	struct cache_ent *e = cache_lookup(c, k);

	if (e == NULL)
		return;
	ent_drop(c, e);
	cnt_add(&c->cnt.invalidations, 1);
}

void
km_cache_clear(struct km_cache *c)
{
	/* Dropping from the head moves the hand to NULL with the last entry it was on. */
	while (c->head != NULL)
		ent_drop(c, c->head);
}

void
km_cache_on_unused(struct km_cache *c, km_cache_unused_fn *fn, void *arg)
{
	c->unused = fn;
	c->unused_arg = arg;
}

void
km_cache_on_evict(struct km_cache *c, km_cache_evict_fn *fn, void *arg)
{
	c->evicted = fn;
	c->evicted_arg = arg;
}

void
km_cache_prefetch_visited(struct km_cache *c, int on)
{
	c->pf_visited = on != 0;
}

const struct km_cache_counters *
km_cache_counters(const struct km_cache *c)
{
	return &c->cnt;
}
