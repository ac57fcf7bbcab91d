/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_SHARDMAP_FAST_H
#define KM_SHARDMAP_FAST_H

/*
 * Inline readers for the per-request path of keymapd (lib/proc), not installed and
 * included nowhere else: the same answers as km_shardmap_epoch(), km_shard_owner() and
 * km_shard_id(), without a call. Measured: the out-of-line accessors cost lib/proc about
 * 32 instructions per request (callgrind, keymap-proc-bench -g 0.9), 3% of the request.
 * The route itself, inline too, is km_route_key() of km_shardmap_priv.h (included here).
 * Everyone else reads the map through km_shardmap.h.
 */

#include "km_shardmap_priv.h"

/** km_shardmap_epoch(), inline. @note Context: any thread holding m. */
static inline uint32_t
km_shardmap_epoch_fast(const struct km_shardmap *m)
{
	return m->epoch;
}

/** km_shard_owner(), inline. @note Context: any thread holding the shard's map. */
static inline uint16_t
km_shard_owner_fast(const struct km_shard *s)
{
	return s->owner;
}

/** km_shard_id(), inline. @note Context: any thread holding the shard's map. */
static inline uint64_t
km_shard_id_fast(const struct km_shard *s)
{
	return s->id;
}

#endif /* KM_SHARDMAP_FAST_H */
