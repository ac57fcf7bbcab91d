/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAP_BENCH_OPTIONS_H
#define KEYMAP_BENCH_OPTIONS_H

/* keymap-bench's command line: the options, their ranges and the checks between them. */

#include "bench.h"
#include "prefetch.h"

#define EXIT_USAGE  1
#define EXIT_FAILED 2

/* What the command line asks for. Filled by bench_options_parse(), read by main. */
struct bench_cli {
	struct bench_conf c;
	const char *cache_list; /* --cache, for --simulate */
	int simulate;           /* --simulate: offline, no network */
	int eal;                /* EAL arguments follow "--": they start at argv[eal_first] */
	int eal_first;

	/* --prefetch*, --gen-trace, --out (prefetch.h) */
	struct bench_prefetch_cli pf;
};

/*
 * Parse argv into cli (defaults first) and check the combination.
 * @return -1 to go on, else the exit status (0 for --help), after saying why.
 */
int bench_options_parse(int argc, char **argv, struct bench_cli *cli);

/*
 * The cache sizes of --cache ("1%,10%,5000") against a trace with nb_keys distinct keys.
 * @return 0, or -1 after saying why.
 */
int bench_cache_sizes(const char *s, size_t nb_keys, uint64_t *sizes, size_t *n);

#define CACHE_SIZES_MAX 16

#endif /* KEYMAP_BENCH_OPTIONS_H */
