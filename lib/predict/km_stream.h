/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_STREAM_H
#define KM_STREAM_H

/**
 * @file
 * Sequential and stride stream detector, cheap enough to run on the owner worker for every
 * access of a shard (a prefetch decided on the control lcore arrives too late for a
 * sequential stream).
 *
 * A key's position is its last digit run (`bkt7/obj/00000123` -> 123, `42` -> 42). Two
 * accesses continue a stream when everything else in the key (its "shape") is equal and
 * the position moved by the stream's stride; a forward step of 1..gap_max continues a
 * stride-1 stream (listings read in order with skips). When the last component wraps at a
 * modulus into the previous digit run (`blk12/255` -> `blk13/0`, the block trace's key
 * scheme), the modulus is learned once per key scheme (the key with every digit run
 * masked: `ts12/d0153/h23` and `ts40/d0007/h23` share it) and shared by every stream of the
 * owner (struct km_stream_ctx), so streams carry across routing parts.
 *
 * Depth (how many keys ahead are kept prefetched) starts at depth_min once a run is
 * established, doubles each time the run consumes a whole window (readahead), and shrinks
 * by an eighth for every prefetched entry evicted unused (AMP). Distance: the window also
 * covers latency_ns / (the stream's mean time between accesses) keys, so prefetches land
 * before their request; a late prefetch (a request waited for one in flight) widens it by one.
 * Only keys not issued before are returned: in steady state one or two per access.
 *
 * Padding is kept: a zero-padded run keeps its width (`…/00000124`), a plain one is
 * written in its natural width.
 *
 * Concurrency: one struct km_stream per shard and one struct km_stream_ctx per owner
 * thread; no call is thread-safe; the owner thread calls them all.
 */

#include <stdint.h>

#include <km_util.h>

/** Keys whose last digit run is longer than this are not numbers for the detector. */
#define KM_STREAM_DIGITS_MAX 18
#define KM_STREAM_MODS       8 /* learned moduli kept per owner */

enum km_stream_flags {
	KM_STREAM_NO_CARRY = 1 << 0, /* do not learn moduli nor carry into the previous run */
};

struct km_stream_params {
	uint16_t depth_min;  /* first window once a run is established (default 4) */
	uint16_t depth_max;  /* cap of the window, distance included (default 64) */
	uint16_t gap_max;    /* a forward step up to this continues a stride-1 stream (4) */
	uint16_t flags;      /* enum km_stream_flags */
	uint64_t latency_ns; /* measured prefetch read latency (0: prefetches are instant) */
};

/** Per owner thread: parameters, learned moduli, counters. */
struct km_stream_ctx {
	struct km_stream_params p;
	uint64_t mod_shape[KM_STREAM_MODS]; /* shape hash; 0: free */
	uint32_t mod[KM_STREAM_MODS];
	uint32_t mod_next; /* round-robin replacement */
	uint64_t observed, issued, carries, used, unused, late;
};

/** Per shard: 56 bytes. */
struct km_stream {
	uint64_t shape;  /* hash of the key without its position digits; 0: no stream */
	uint64_t pos;    /* last position (with a learned modulus: prev * mod + last) */
	uint64_t ahead;  /* last position already issued, in stream order */
	uint64_t t_ns;   /* time of the last access */
	uint32_t gap_ns; /* mean time between the stream's accesses (EWMA 1/8) */
	uint32_t prev;   /* the previous digit run's value when there is no modulus */
	int32_t stride;
	uint16_t run;   /* steps that continued the stream */
	uint16_t depth; /* current window without distance; 0 until the run is established */
	uint8_t extra;  /* distance added by late prefetches */
	uint8_t flags;  /* private: whether pos is linear (prev * mod + last), has a prev run */
	uint16_t mark;  /* run when the depth last changed: it grows after a whole window */
};

/** A key the detector (or the predictor) wants prefetched. */
struct km_stream_key {
	uint16_t len;
	uint8_t key[KM_KEY_MAX];
};

/**
 * Reset the owner's state with these parameters (zeros take the defaults).
 * @note Context: the owner thread.
 */
void km_stream_ctx_init(struct km_stream_ctx *sc, const struct km_stream_params *p);

/**
 * Forget a shard's stream.
 * @note Context: the owner thread.
 */
void km_stream_init(struct km_stream *s);

/**
 * Observe one access of the shard and return the keys to prefetch now (never one already
 * returned for this stream), at most max, nearest first.
 * @return the number of keys written to out (0..max).
 * @note Context: the owner thread of sc and s.
 */
unsigned km_stream_observe(struct km_stream_ctx *sc, struct km_stream *s, const uint8_t *key,
	uint16_t len, uint64_t t_ns, struct km_stream_key *out, unsigned max);

/** Streams per shard in a set (interleaved readers of one shard: listings, windows). */
#define KM_STREAM_SET 4

/**
 * km_stream_observe() on a set of nb streams of one shard, as readahead keeps one state
 * per reader: the key goes to the stream it may continue (same shape, same previous digit
 * run or the next one at a wrap), else to a free slot or the one idle longest, which starts
 * over. A key without a position changes nothing. *slot tells which stream (for
 * km_stream_feedback()).
 * @return the number of keys written to out (0..max).
 * @note Context: the owner thread of sc and set.
 */
unsigned km_stream_observe_set(struct km_stream_ctx *sc, struct km_stream *set, unsigned nb,
	const uint8_t *key, uint16_t len, uint64_t t_ns, unsigned *slot, struct km_stream_key *out,
	unsigned max);

enum km_stream_outcome {
	KM_STREAM_UNUSED = 0, /* a prefetched entry was evicted before any hit */
	KM_STREAM_USED = 1,   /* a prefetched entry was hit */
	KM_STREAM_LATE = 2,   /* a request waited for a prefetch still in flight */
};

/**
 * Feed back what became of one prefetch this stream issued: an unused one shrinks the
 * depth, a late one widens the distance.
 * @note Context: the owner thread of sc and s.
 */
void km_stream_feedback(struct km_stream_ctx *sc, struct km_stream *s, enum km_stream_outcome o);

/**
 * The window (depth + distance) the stream would keep ahead now; 0 when no stream.
 * @note Context: the owner thread of sc and s.
 */
unsigned km_stream_window(const struct km_stream_ctx *sc, const struct km_stream *s);

#endif /* KM_STREAM_H */
