/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAP_BENCH_REPORT_H
#define KEYMAP_BENCH_REPORT_H

#include <stdio.h>

#include "bench.h"

struct bench_report {
	const char *label;
	const char *target;
	const char *transport;
	const char *workload; /* one line describing the load */
	int open_loop;        /* the summary shows the latency from the send too */
	const struct bench_result *r;
};

double bench_ops_per_s(const struct bench_result *r);
double bench_hit_ratio(const struct bench_result *r);
void bench_print_summary(FILE *f, const struct bench_report *rep);
/* @return 0 or -errno. */
int bench_write_json(
	const char *path, const struct bench_report *rep, const struct bench_phase *ph);
int bench_write_csv(const char *path, const struct bench_phase *ph);
/* s as a JSON string, quotes included. */
void bench_json_str(FILE *f, const char *s);
int bench_write_cdf(const char *path, const struct km_hist *h);

#endif /* KEYMAP_BENCH_REPORT_H */
