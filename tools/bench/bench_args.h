/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_BENCH_ARGS_H
#define KM_BENCH_ARGS_H

/* Command-line helpers shared by the benchmark tools under tools/bench. */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* Whole-string unsigned number in [min, max], or -1. */
static inline int
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

#endif /* KM_BENCH_ARGS_H */
