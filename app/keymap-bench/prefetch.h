/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAP_BENCH_PREFETCH_H
#define KEYMAP_BENCH_PREFETCH_H

/* keymap-bench's prediction work: --simulate --prefetch and --gen-trace. */

#include <stdint.h>

#include "bench.h"

/* The command line's prefetch and generator options (parsed in options.c). */
struct bench_prefetch_cli {
	int enabled;        /* --prefetch */
	uint32_t models;    /* --prefetch-models (default all) */
	uint32_t latency;   /* --prefetch-latency, in requests */
	uint64_t mem_bytes; /* --prefetch-mem */
	int visited;        /* 0 with --prefetch-unvisited */
	int no_carry;       /* --prefetch-no-carry */
	int no_aimd;        /* --prefetch-no-aimd */
	const char *gen;    /* --gen-trace KIND */
	const char *out;    /* --out FILE */
};

#define BENCH_PREFETCH_LATENCY_DEFAULT 32

/* --simulate --prefetch: exit status. */
int bench_prefetch_simulate(
	const struct bench_conf *c, const char *cache_list, const struct bench_prefetch_cli *pf);

/* --gen-trace: exit status. */
int bench_gen_trace(const struct bench_conf *c, const struct bench_prefetch_cli *pf);

#endif /* KEYMAP_BENCH_PREFETCH_H */
