/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_GENTRACE_H
#define KM_GENTRACE_H

/**
 * @file
 * Structured workloads written as replay traces (docs/trace-format.md), for judging
 * prediction: what a per-user session, a listing or a time-series reader does.
 *
 * - sessions: users walk a chain of pages, `u<id>/profile` -> `u<id>/cart` ->
 *   `u<id>/checkout` -> `u<id>/orders` -> `u<id>/reviews`, with branches (a profile may go to
 *   the wishlist or straight to the orders; a walk may stop early); 64 sessions at a time,
 *   each with its own session id, interleaved; users uniform over keys / 6.
 * - listing: `bkt<b>/obj/<8 digits>`, 1000 objects per bucket; a listing reads a bucket in
 *   key order from a random start for 20..200 keys, skipping each with probability 0.15;
 *   8 listings at a time, interleaved, one session id each.
 * - timeseries: `ts<sensor>/d<4 digits>/h<2 digits>`, 365 days per sensor; a reader reads a
 *   window of 1..7 days in ascending order (the hour wraps into the next day); 8 readers at a
 *   time, interleaved.
 * All requests are GETs, one per microsecond; value_size is the same for every key.
 * The output depends only on the configuration (seeded generator).
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum km_gen_kind {
	KM_GEN_SESSIONS = 0,
	KM_GEN_LISTING,
	KM_GEN_TIMESERIES,
};

struct km_gen_conf {
	enum km_gen_kind kind;
	uint64_t keys;     /* size of the key space (rounded to whole entities) */
	uint64_t requests; /* records to write */
	uint64_t seed;
	uint32_t value_size;
};

/**
 * Write the trace (with its header line) to out.
 * @return 0, -EINVAL (keys or requests 0), -EIO (write failed).
 * @note Context: any thread.
 */
int km_gen_trace(const struct km_gen_conf *c, FILE *out);

/**
 * "sessions", "listing", "timeseries" -> enum.
 * @return 0, -EINVAL.
 * @note Context: any thread.
 */
int km_gen_kind_parse(const char *s, enum km_gen_kind *out);

#endif /* KM_GENTRACE_H */
