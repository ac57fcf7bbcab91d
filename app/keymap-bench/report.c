/* SPDX-License-Identifier: BSD-3-Clause */

/* What keymap-bench prints and writes: progress lines, the summary, JSON, CSV, CDF. */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "report.h"

static double
us(uint64_t ns)
{
	return (double)ns / 1e3;
}

void
bench_print_tick(const char *phase, const struct bench_tick *t, double interval_s)
{
	fprintf(stderr,
		"[%-7s %4.0fs] %10.0f ops/s  p50 %8.1f us  p99 %8.1f us  timeouts %" PRIu64 "\n",
		phase, t->t_s, (double)t->replies / interval_s, us(t->p50_ns), us(t->p99_ns),
		t->timeouts);
}

void
bench_second_close(struct bench_phase *ph, struct bench_second *s, double t_s)
{
	if (ph->agg != NULL)
		bench_agg_close(ph->agg, s, t_s);
	else
		bench_second_emit(ph, s, t_s);
	km_hist_init(&s->lat);
	s->replies = 0;
	s->timeouts = 0;
	s->idx++;
}

void
bench_second_emit(struct bench_phase *ph, const struct bench_second *s, double t_s)
{
	struct bench_tick t = {
		.t_s = t_s,
		.replies = s->replies,
		.timeouts = s->timeouts,
		.p50_ns = km_hist_percentile(&s->lat, 50),
		.p99_ns = km_hist_percentile(&s->lat, 99),
	};

	if (ph->progress)
		bench_print_tick(ph->name, &t, 1.0);
	if (ph->ticks != NULL && ph->nb_ticks < ph->cap_ticks)
		ph->ticks[ph->nb_ticks++] = t;
}

double
bench_ops_per_s(const struct bench_result *r)
{
	return r->elapsed_s > 0 ? (double)r->replies / r->elapsed_s : 0.0;
}

double
bench_hit_ratio(const struct bench_result *r)
{
	return r->gets > 0 ? (double)r->hits / (double)r->gets : 0.0;
}

void
bench_print_summary(FILE *f, const struct bench_report *rep)
{
	const struct bench_result *r = rep->r;
	const struct km_hist *h = &r->lat;

	fprintf(f, "%s: target %s, transport %s, %s\n", rep->label, rep->target, rep->transport,
		rep->workload);
	fprintf(f, "  requests  %" PRIu64 " sent, %" PRIu64 " answered in %.2f s: %.0f ops/s\n",
		r->sent, r->replies, r->elapsed_s, bench_ops_per_s(r));
	fprintf(f,
		"  latency   p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f (us)\n",
		us(km_hist_percentile(h, 50)), us(km_hist_percentile(h, 90)),
		us(km_hist_percentile(h, 99)), us(km_hist_percentile(h, 99.9)), us(h->max),
		km_hist_mean(h) / 1e3);
	if (rep->open_loop)
		fprintf(f, "  from send p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f (us)\n",
			us(km_hist_percentile(&r->lat_sent, 50)),
			us(km_hist_percentile(&r->lat_sent, 90)),
			us(km_hist_percentile(&r->lat_sent, 99)),
			us(km_hist_percentile(&r->lat_sent, 99.9)));
	fprintf(f,
		"  gets      %" PRIu64 "  hits %" PRIu64 "  misses %" PRIu64 "  hit ratio %.4f\n",
		r->gets, r->hits, r->misses, bench_hit_ratio(r));
	fprintf(f,
		"  puts      %" PRIu64 "  dels %" PRIu64 "  errors %" PRIu64 " (busy %" PRIu64
		")  timeouts %" PRIu64 "  stray %" PRIu64 "  bad %" PRIu64 "\n",
		r->puts, r->dels, r->errors, r->busy, r->timeouts, r->stray, r->bad);
	fprintf(f,
		"  sending   late %" PRIu64 "  unsent %" PRIu64 "  refused %" PRIu64
		"  dropped %" PRIu64 "\n",
		r->late, r->unsent, r->tx_full, r->dropped);
}

void
bench_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

int
bench_write_json(const char *path, const struct bench_report *rep, const struct bench_phase *ph)
{
	const struct bench_result *r = rep->r;
	const struct km_hist *h = &r->lat;
	FILE *f = fopen(path, "w");
	size_t i;

	if (f == NULL)
		return -errno;
	fprintf(f, "{\n  \"label\": ");
	bench_json_str(f, rep->label);
	fprintf(f, ",\n  \"target\": ");
	bench_json_str(f, rep->target);
	fprintf(f, ",\n  \"transport\": ");
	bench_json_str(f, rep->transport);
	fprintf(f, ",\n  \"workload\": ");
	bench_json_str(f, rep->workload);
	fprintf(f,
		",\n  \"sent\": %" PRIu64 ",\n  \"replies\": %" PRIu64
		",\n  \"elapsed_s\": %.6f,\n  \"ops_per_s\": %.1f,\n",
		r->sent, r->replies, r->elapsed_s, bench_ops_per_s(r));
	fprintf(f,
		"  \"gets\": %" PRIu64 ",\n  \"hits\": %" PRIu64 ",\n  \"misses\": %" PRIu64
		",\n  \"hit_ratio\": %.6f,\n  \"puts\": %" PRIu64 ",\n  \"dels\": %" PRIu64
		",\n  \"errors\": %" PRIu64 ",\n  \"timeouts\": %" PRIu64 ",\n  \"stray\": %" PRIu64
		",\n  \"bad\": %" PRIu64 ",\n  \"late\": %" PRIu64 ",\n  \"unsent\": %" PRIu64
		",\n",
		r->gets, r->hits, r->misses, bench_hit_ratio(r), r->puts, r->dels, r->errors,
		r->timeouts, r->stray, r->bad, r->late, r->unsent);
	fprintf(f,
		"  \"busy\": %" PRIu64 ",\n  \"refused\": %" PRIu64 ",\n  \"dropped\": %" PRIu64
		",\n  \"cpu_share\": %.4f,\n",
		r->busy, r->tx_full, r->dropped, r->cpu_share);
	fprintf(f,
		"  \"latency_us\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, "
		"\"max\": %.3f, \"mean\": %.3f},\n",
		us(km_hist_percentile(h, 50)), us(km_hist_percentile(h, 90)),
		us(km_hist_percentile(h, 99)), us(km_hist_percentile(h, 99.9)), us(h->max),
		km_hist_mean(h) / 1e3);
	fprintf(f,
		"  \"latency_from_send_us\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, "
		"\"p999\": %.3f},\n",
		us(km_hist_percentile(&r->lat_sent, 50)), us(km_hist_percentile(&r->lat_sent, 90)),
		us(km_hist_percentile(&r->lat_sent, 99)),
		us(km_hist_percentile(&r->lat_sent, 99.9)));
	fprintf(f, "  \"seconds\": [");
	for (i = 0; ph != NULL && i < ph->nb_ticks; i++)
		fprintf(f,
			"%s\n    {\"t_s\": %.3f, \"ops\": %" PRIu64 ", \"p50_us\": %.3f, "
			"\"p99_us\": %.3f, \"timeouts\": %" PRIu64 "}",
			i == 0 ? "" : ",", ph->ticks[i].t_s, ph->ticks[i].replies,
			us(ph->ticks[i].p50_ns), us(ph->ticks[i].p99_ns), ph->ticks[i].timeouts);
	fprintf(f, "\n  ]\n}\n");
	return fclose(f) == 0 ? 0 : -errno;
}

int
bench_write_csv(const char *path, const struct bench_phase *ph)
{
	FILE *f = fopen(path, "w");
	size_t i;

	if (f == NULL)
		return -errno;
	fprintf(f, "t_s,ops_per_s,p50_us,p99_us,timeouts\n");
	for (i = 0; i < ph->nb_ticks; i++)
		fprintf(f, "%.3f,%" PRIu64 ",%.3f,%.3f,%" PRIu64 "\n", ph->ticks[i].t_s,
			ph->ticks[i].replies, us(ph->ticks[i].p50_ns), us(ph->ticks[i].p99_ns),
			ph->ticks[i].timeouts);
	return fclose(f) == 0 ? 0 : -errno;
}

int
bench_write_cdf(const char *path, const struct km_hist *h)
{
	FILE *f = fopen(path, "w");
	uint64_t seen = 0, hi;
	unsigned int i;

	if (f == NULL)
		return -errno;
	/* One point per non-empty bucket, at its upper bound (clamped to the largest value). */
	fprintf(f, "# latency_us cumulative_fraction\n");
	for (i = 0; i < KM_HIST_BUCKETS && h->count > 0; i++) {
		if (h->b[i] == 0)
			continue;
		seen += h->b[i];
		hi = km_hist_bucket_high(i);
		fprintf(f, "%.3f %.6f\n", us(hi < h->max ? hi : h->max),
			(double)seen / (double)h->count);
	}
	return fclose(f) == 0 ? 0 : -errno;
}
