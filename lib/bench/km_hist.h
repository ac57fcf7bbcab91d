/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_HIST_H
#define KM_HIST_H

/**
 * @file
 * Log-bucketed histogram of non-negative integers (latencies in nanoseconds).
 *
 * Values below 2^KM_HIST_SUB_BITS have a bucket each; above, every power of two
 * [2^e, 2^(e+1)) is cut into 2^KM_HIST_SUB_BITS equal buckets, so the relative width of a
 * bucket is at most 2^-KM_HIST_SUB_BITS (3.1 %). Values of 2^(KM_HIST_MAX_EXP+1) and more
 * go to the last bucket. The struct has a fixed size and needs no allocation.
 *
 * Concurrency: one writer per histogram (each generator lcore owns one); aggregate by
 * km_hist_merge() after the writers stopped or on copies.
 */

#include <stdint.h>

#define KM_HIST_SUB_BITS 5
#define KM_HIST_SUB      (1u << KM_HIST_SUB_BITS)
/** Largest exponent with its own buckets: 2^40 ns is about 18 minutes. */
#define KM_HIST_MAX_EXP 40
#define KM_HIST_BUCKETS ((KM_HIST_MAX_EXP - KM_HIST_SUB_BITS + 2) * KM_HIST_SUB)

struct km_hist {
	uint64_t count;
	uint64_t sum; /* of the values added (saturating) */
	uint64_t min; /* UINT64_MAX when empty */
	uint64_t max; /* 0 when empty */
	uint64_t b[KM_HIST_BUCKETS];
};

/** Empty h. @note Context: any thread. */
void km_hist_init(struct km_hist *h);

/** Index of the bucket holding v. @note Context: any thread (pure). */
static inline unsigned int
km_hist_bucket_of(uint64_t v)
{
	/* The layout is described in km_hist.c. Inline: every reply the bench counts takes it. */
	unsigned int e, g;

	if (v < KM_HIST_SUB)
		return (unsigned int)v;
	e = 63u - (unsigned int)__builtin_clzll(v);
	if (e > KM_HIST_MAX_EXP)
		return KM_HIST_BUCKETS - 1u;
	g = e - KM_HIST_SUB_BITS + 1;
	/* v >> (g - 1) is in [KM_HIST_SUB, 2 * KM_HIST_SUB): its low bits are the sub-bucket. */
	return g * KM_HIST_SUB + (unsigned int)(v >> (g - 1)) - KM_HIST_SUB;
}

/** Smallest value of bucket i. @note Context: any thread (pure). */
uint64_t km_hist_bucket_low(unsigned int i);

/**
 * Largest value of bucket i (UINT64_MAX for the last one).
 * @note Context: any thread (pure).
 */
uint64_t km_hist_bucket_high(unsigned int i);

/**
 * Add one value v whose bucket the caller has: bucket = km_hist_bucket_of(v), so that
 * one value added to several histograms is bucketed once. @note Context: the histogram's
 * writer.
 */
static inline void
km_hist_add_at(struct km_hist *h, unsigned int bucket, uint64_t v)
{
	h->b[bucket]++;
	h->count++;
	h->sum = h->sum + v < h->sum ? UINT64_MAX : h->sum + v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

/** Add one value. @note Context: the histogram's writer. */
static inline void
km_hist_add(struct km_hist *h, uint64_t v)
{
	km_hist_add_at(h, km_hist_bucket_of(v), v);
}

/**
 * Add every value of src to dst.
 * @note Context: dst's writer; src not written meanwhile (its writer stopped, or a copy).
 */
void km_hist_merge(struct km_hist *dst, const struct km_hist *src);

/**
 * Percentile p (0 < p <= 100): the value of rank ceil(p/100 * count) in sorted order,
 * reported as the upper bound of its bucket, clamped to [min, max] (so p=100 is max and
 * a histogram of one value reports it exactly). 0 when empty.
 * @note Context: any thread, h not written meanwhile.
 */
uint64_t km_hist_percentile(const struct km_hist *h, double p);

/** Mean of the values added (0 when empty). @note Context: any thread, h not written meanwhile. */
double km_hist_mean(const struct km_hist *h);

#endif /* KM_HIST_H */
