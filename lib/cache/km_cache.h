/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_CACHE_H
#define KM_CACHE_H

/**
 * @file
 * The per-worker value cache in front of stores whose values live on disk.
 *
 * - Bounded in bytes: every entry is charged KM_CACHE_ENTRY_OVERHEAD + key + value
 *   bytes, and the sum never exceeds the capacity given at creation.
 * - Eviction by SIEVE (Zhang et al., NSDI'24): a FIFO queue with one "visited" bit per
 *   entry; a hit only sets the bit; the hand walks from the oldest entry towards the
 *   newest, clearing bits, and evicts the first entry whose bit is clear; it keeps its
 *   position between evictions and wraps around to the oldest. New entries go to the
 *   head (newest end) with the bit clear. Scan-resistant and lock-free friendly.
 * - Tags: every entry carries a 64-bit tag given by the caller (the generation of the
 *   shard store it came from). A lookup with another tag misses and drops the entry, so
 *   a shard handed away and back never serves values from before.
 * - Prefetched entries: inserted with a nonzero mark (the caller's name for the prefetch
 *   that brought the value: which predictor, which stream), they stay marked until their
 *   first hit (counted prefetched_used, the mark handed to km_cache_get_mark()'s caller);
 *   evicted, invalidated, replaced or dropped still marked, they count
 *   prefetched_evicted_unused and the mark goes to the unused callback. With
 *   km_cache_prefetch_visited(), marked entries enter the queue visited: the hand passes
 *   them once, so a prefetch issued well ahead of its request survives a small cache.
 *
 * Concurrency: single writer, its worker; no call is thread-safe. The counters are plain
 * 64-bit words other threads may read through the pointer returned by
 * km_cache_counters() (possibly one update old, never torn).
 */

#include <stddef.h>
#include <stdint.h>

#include <km_store.h>

#define KM_CACHE_ENTRY_OVERHEAD 64 /* bytes charged per entry besides key and value */
#define KM_CACHE_MIN_BYTES      4096

struct km_cache_counters {
	uint64_t hits;
	uint64_t misses;
	uint64_t inserts;   /* new entries (replacements of a key are not counted) */
	uint64_t evictions; /* entries removed to make room */
	uint64_t invalidations;
	uint64_t prefetched_used;           /* prefetched entries hit at least once */
	uint64_t prefetched_evicted_unused; /* prefetched entries gone before any hit */
	uint64_t entries;                   /* current */
	uint64_t bytes;                     /* current, as charged */
	uint64_t capacity;                  /* bytes */
};

struct km_cache;

/**
 * @param bytes capacity, >= KM_CACHE_MIN_BYTES.
 * @return 0, -EINVAL, -ENOMEM.
 * @note Context: any thread; the cache then belongs to one owner thread.
 */
int km_cache_create(uint64_t bytes, struct km_cache **out);

/** NULL is allowed. @note Context: the owner thread, or any once it stopped using it. */
void km_cache_destroy(struct km_cache *c);

/**
 * Look k up (k->hash, then the key bytes). On a hit, *v is filled (data valid until the
 * next put, invalidate or clear on this cache), the entry is marked visited, and a
 * prefetched entry loses its mark (prefetched_used + 1).
 * @return 0 (hit), -ENOENT (miss; an entry with another tag is dropped and misses).
 * @note Context: the owner thread.
 */
int km_cache_get(struct km_cache *c, const struct km_key *k, uint64_t tag, struct km_value_ref *v);

/**
 * km_cache_get(), and *mark = the prefetch mark the hit cleared (0: none, or a miss).
 * @note Context: the owner thread.
 */
int km_cache_get_mark(struct km_cache *c, const struct km_key *k, uint64_t tag,
	struct km_value_ref *v, uint8_t *mark);

/**
 * Called when a marked value leaves the cache before any hit (eviction, invalidation,
 * replacement, a drop for another tag, clear), with the entry's mark, tag and key (valid
 * for the call only). It must not call into the cache.
 */
typedef void km_cache_unused_fn(
	void *arg, uint8_t mark, uint64_t tag, const uint8_t *key, uint16_t len);

/**
 * Set (fn NULL: remove) the unused callback.
 * @note Context: the owner thread.
 */
void km_cache_on_unused(struct km_cache *c, km_cache_unused_fn *fn, void *arg);

/** Called with the key hash of every entry evicted to make room (before it goes). */
typedef void km_cache_evict_fn(void *arg, uint64_t hash);

/**
 * Set (fn NULL: remove) the eviction callback.
 * @note Context: the owner thread.
 */
void km_cache_on_evict(struct km_cache *c, km_cache_evict_fn *fn, void *arg);

/**
 * Whether marked entries enter the queue visited (default: no, like every new entry).
 * @note Context: the owner thread.
 */
void km_cache_prefetch_visited(struct km_cache *c, int on);

/**
 * Insert or replace k's entry (a replacement keeps the queue position and visited bit,
 * takes the new tag, value, version and mark; an older mark it replaces went unused).
 * Evicts until it fits. mark: 0 for a demand read or a write, else the prefetch's.
 * @return 0, -E2BIG (the entry alone is over 1/4 of the capacity: not cached, and any
 *   older entry of k is dropped), -ENOMEM.
 * @note Context: the owner thread.
 */
int km_cache_put(struct km_cache *c, const struct km_key *k, uint64_t tag, const void *val,
	uint32_t len, uint64_t version, uint8_t mark);

/**
 * Whether k is cached with this tag, without counting a hit or a miss and without
 * touching the visited bit or the prefetched mark.
 * @note Context: the owner thread.
 */
int km_cache_contains(const struct km_cache *c, const struct km_key *k, uint64_t tag);

/** Drop k's entry if cached (counted in invalidations). @note Context: the owner thread. */
void km_cache_invalidate(struct km_cache *c, const struct km_key *k);

/** Drop every entry (not counted as evictions or invalidations).
 * @note Context: the owner thread. */
void km_cache_clear(struct km_cache *c);

/** Live counters (see the concurrency note). @note Context: any thread. */
const struct km_cache_counters *km_cache_counters(const struct km_cache *c);

#endif /* KM_CACHE_H */
