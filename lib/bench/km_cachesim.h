/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_CACHESIM_H
#define KM_CACHESIM_H

/**
 * @file
 * Offline cache simulators over a loaded trace, for judging caching and prefetch work:
 * the hit ratio a plain LRU cache reaches and the one Belady's MIN reaches with the same
 * number of entries.
 *
 * Model (the one the reference figures in the project's trace notes use): every entry has
 * unit size and the cache holds at most capacity keys; only GETs are counted; a GET miss
 * always installs the key (demand fetch, no bypass), evicting one key if the cache is full;
 * a PUT installs or refreshes the key the same way and is not counted; a DEL removes the
 * key if cached. LRU: a hit or a PUT makes the key most recently used; the least recently
 * used key is evicted. MIN: the evicted key is the cached one whose next GET or PUT lies
 * farthest in the future, a key never requested again (or deleted before its next GET or
 * PUT) first; which of several such keys goes does not change the hit count. On GET-only
 * traces MIN is the optimum for demand caching; with PUTs it is Belady's rule applied to
 * this model, not a proven optimum. MIN runs in O(n log capacity) with next-use indices
 * and an indexed heap.
 */

#include <stdint.h>

#include "km_trace.h"

struct km_sim_result {
	uint64_t gets;
	uint64_t hits;
	double hit_ratio; /* hits / gets, 0 when no GET */
};

/**
 * Simulate the trace through a cache of capacity entries (any value >= 1; more than the
 * trace's keys is a cache that never evicts).
 * @return 0, or -EINVAL (capacity 0, or a record's key_id >= nb_keys), -ENOMEM.
 * @note Context: any thread; t is only read, so several simulations may share it.
 */
int km_sim_lru(const struct km_trace *t, uint64_t capacity, struct km_sim_result *r);

/**
 * As km_sim_lru(), with Belady's optimal policy (evict the key used farthest in the
 * future): the upper bound of any policy's hit ratio at this capacity.
 * @note Context: any thread; t is only read.
 */
int km_sim_belady(const struct km_trace *t, uint64_t capacity, struct km_sim_result *r);

#endif /* KM_CACHESIM_H */
