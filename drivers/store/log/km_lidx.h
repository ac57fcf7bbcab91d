/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_LIDX_H
#define KM_LIDX_H

/**
 * @file
 * The DRAM index of the log store: key hash -> (location, version), 24 bytes per slot.
 *
 * Open addressing with linear probing over any number of slots (not a power of two: the
 * home slot is fastrange, (m * nb_slots) >> 64, so the table can be sized close to its
 * load), backward-shift deletion (no tombstones). m = km_scan_order(hash), the hash with
 * its halves swapped, rather than the hash itself: one store holds one shard, whose
 * hashes may share their top bits, and fastrange of the raw hash would crowd them into a
 * fraction of the table; and SCAN visits entries in that order (km_store_scan_table()).
 * A slot is free when its version is 0 (versions are never 0). The table grows by half
 * when more than 7/8 of the slots are used; km_lidx_fit() resizes it to a given load
 * (after a restart's replay). Keys are identified by their 64-bit hash only (the caller
 * verifies the key when it reads the record).
 *
 * Concurrency: single-threaded. A pointer to a slot is valid until the next upsert,
 * remove or fit.
 */

#include <stdint.h>

struct km_lidx_ent {
	uint64_t hash;
	uint64_t loc;     /* the caller's: where the record is */
	uint64_t version; /* 0 = free slot */
};

struct km_lidx;

/** @param initial entries to size for without growing (0 = small). @return 0, -ENOMEM. */
int km_lidx_create(uint64_t initial, struct km_lidx **out);
/** NULL is allowed. */
void km_lidx_destroy(struct km_lidx *x);

/** Slot of hash, or NULL. */
struct km_lidx_ent *km_lidx_find(struct km_lidx *x, uint64_t hash);

/**
 * Slot of hash, created if absent (then *created = 1 and the slot has hash set, loc 0,
 * version 0: the caller must set a non-zero version, or km_lidx_remove() the slot, before
 * any other call).
 * @return the slot, or NULL (-ENOMEM growing).
 */
struct km_lidx_ent *km_lidx_upsert(struct km_lidx *x, uint64_t hash, int *created);

/** Free a slot returned by find/upsert (the entries after it shift back). */
void km_lidx_remove(struct km_lidx *x, struct km_lidx_ent *e);

/** Resize to about count / load slots (load in (0, 0.95]); never below count + 1. @return 0,
 * -ENOMEM, -EINVAL. */
int km_lidx_fit(struct km_lidx *x, double load);

uint64_t km_lidx_count(const struct km_lidx *x);
/** Bytes of the slot array. */
uint64_t km_lidx_bytes(const struct km_lidx *x);

/** The slot array (free slots have version 0) and its size, for a SCAN over it; valid
 * until the next upsert, remove or fit. */
struct km_lidx_ent *km_lidx_slots(struct km_lidx *x, uint64_t *nb_slots);

/**
 * Iterate: start with *pos = 0; returns the next used slot and advances *pos, NULL at
 * the end. The table must not change during an iteration.
 */
struct km_lidx_ent *km_lidx_next(struct km_lidx *x, uint64_t *pos);

#endif /* KM_LIDX_H */
