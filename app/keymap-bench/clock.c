/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Nanosecond clock for the engine. Two reads per request: on x86 the TSC (about 20
 * cycles) instead of clock_gettime (about 60), converted with a factor calibrated once
 * against CLOCK_MONOTONIC. The TSC is invariant on every x86 CPU DPDK supports.
 */

#include <time.h>

#include "bench.h"

#if defined(__x86_64__)
#include <x86intrin.h>

static uint64_t tsc0;
static uint64_t mult; /* ns per TSC tick, 32.32 fixed point */

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void
bench_clock_init(void)
{
	struct timespec d = {0, 50 * 1000 * 1000};
	uint64_t n0, n1, t0, t1;

	n0 = mono_ns();
	t0 = __rdtsc();
	nanosleep(&d, NULL);
	n1 = mono_ns();
	t1 = __rdtsc();
	mult = (uint64_t)(((unsigned __int128)(n1 - n0) << 32) / (t1 - t0));
	tsc0 = t1;
}

uint64_t
bench_now_ns(void)
{
	return (uint64_t)(((unsigned __int128)(__rdtsc() - tsc0) * mult) >> 32);
}

#else

void
bench_clock_init(void)
{
}

uint64_t
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
