/* SPDX-License-Identifier: BSD-3-Clause */

#include <math.h>
#include <string.h>

#include "km_hist.h"

/*
 * Bucket layout: group 0 holds the values 0 .. KM_HIST_SUB-1, one bucket each; group
 * g >= 1 holds [2^e, 2^(e+1)) with e = g + KM_HIST_SUB_BITS - 1, cut into KM_HIST_SUB
 * buckets of width 2^(g-1). The leading KM_HIST_SUB_BITS+1 bits of a value name its
 * bucket, so both directions are a shift.
 */
#define LAST_BUCKET (KM_HIST_BUCKETS - 1u)

void
km_hist_init(struct km_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

uint64_t
km_hist_bucket_low(unsigned int i)
{
	unsigned int g = i / KM_HIST_SUB;

	if (g == 0)
		return i;
	return (uint64_t)(KM_HIST_SUB + i % KM_HIST_SUB) << (g - 1);
}

uint64_t
km_hist_bucket_high(unsigned int i)
{
	if (i >= LAST_BUCKET)
		return UINT64_MAX;
	return km_hist_bucket_low(i + 1) - 1;
}

static uint64_t
sat_add(uint64_t a, uint64_t b)
{
	return a + b < a ? UINT64_MAX : a + b;
}

void
km_hist_merge(struct km_hist *dst, const struct km_hist *src)
{
	unsigned int i;

	for (i = 0; i < KM_HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->count += src->count;
	dst->sum = sat_add(dst->sum, src->sum);
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t
km_hist_percentile(const struct km_hist *h, double p)
{
	uint64_t rank, seen = 0, v;
	double r;
	unsigned int i;

	if (h->count == 0)
		return 0;
	/* p * count is exact for any realistic count, so an integral rank stays integral. */
	r = ceil(p * (double)h->count / 100.0);
	if (!(r >= 1.0))
		rank = 1;
	else if (r >= (double)h->count)
		rank = h->count;
	else
		rank = (uint64_t)r;
	for (i = 0; i < KM_HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank)
			break;
	}
	v = km_hist_bucket_high(i < KM_HIST_BUCKETS ? i : LAST_BUCKET);
	if (v < h->min)
		v = h->min;
	if (v > h->max)
		v = h->max;
	return v;
}

double
km_hist_mean(const struct km_hist *h)
{
	return h->count == 0 ? 0.0 : (double)h->sum / (double)h->count;
}
