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
 * - Prefetched entries: inserted with prefetched = 1, they stay marked until their first
 *   hit (counted prefetched_used); evicted or invalidated still marked, they count
 *   prefetched_evicted_unused.
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
 */
int km_cache_create(uint64_t bytes, struct km_cache **out);

/** NULL is allowed. */
void km_cache_destroy(struct km_cache *c);

/**
 * Look k up (k->hash, then the key bytes). On a hit, *v is filled (data valid until the
 * next put, invalidate or clear on this cache), the entry is marked visited, and a
 * prefetched entry loses its mark (prefetched_used + 1).
 * @return 0 (hit), -ENOENT (miss; an entry with another tag is dropped and misses).
 */
int km_cache_get(struct km_cache *c, const struct km_key *k, uint64_t tag, struct km_value_ref *v);

/**
 * Insert or replace k's entry (a replacement keeps the queue position and visited bit,
 * takes the new tag, value, version and prefetched mark). Evicts until it fits.
 * @return 0, -E2BIG (the entry alone is over 1/4 of the capacity: not cached, and any
 *   older entry of k is dropped), -ENOMEM.
 */
int km_cache_put(struct km_cache *c, const struct km_key *k, uint64_t tag, const void *val,
	uint32_t len, uint64_t version, int prefetched);

/**
 * Whether k is cached with this tag, without counting a hit or a miss and without
 * touching the visited bit or the prefetched mark.
 */
int km_cache_contains(const struct km_cache *c, const struct km_key *k, uint64_t tag);

/** Drop k's entry if cached (counted in invalidations). */
void km_cache_invalidate(struct km_cache *c, const struct km_key *k);

/** Drop every entry (not counted as evictions or invalidations). */
void km_cache_clear(struct km_cache *c);

/** Live counters (see the concurrency note). */
const struct km_cache_counters *km_cache_counters(const struct km_cache *c);

#endif /* KM_CACHE_H */
