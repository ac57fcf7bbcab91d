/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * keymap-bench: load generator and trace tools for keymap.
 *
 *   keymap-bench [options] [-- EAL arguments]
 *
 * With EAL arguments the requests go out on a DPDK port (transport eth); without, over a
 * kernel UDP socket or libkeymap. --simulate runs the offline cache simulators on a trace.
 * Exit codes: 0 ok, 1 usage or bad input, 2 the run failed (no answer, too many
 * timeouts, preload incomplete, transport error).
 */

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_version.h>

#include <km_cachesim.h>
#include <km_util.h>

#include "bench.h"
#include "options.h"
#include "report.h"

static void
on_signal(int sig)
{
	(void)sig;
	bench_stop = 1;
}

static int
simulate(const struct bench_conf *c, const char *cache_list)
{
	uint64_t sizes[CACHE_SIZES_MAX];
	struct km_sim_result lru, opt;
	struct km_trace *t = NULL;
	char err[512];
	size_t n, i;
	FILE *jf = NULL;
	int rc;

	rc = km_trace_load(c->trace_path, UINT32_MAX, &t, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "keymap-bench: %s\n", err);
		return EXIT_USAGE;
	}
	if (bench_cache_sizes(cache_list, t->nb_keys, sizes, &n) < 0) {
		km_trace_free(t);
		return EXIT_USAGE;
	}
	if (c->json_path != NULL) {
		jf = fopen(c->json_path, "w");
		if (jf == NULL) {
			fprintf(stderr, "keymap-bench: %s: %s\n", c->json_path, strerror(errno));
			km_trace_free(t);
			return EXIT_FAILED;
		}
		fprintf(jf, "{\n  \"trace\": ");
		bench_json_str(jf, c->trace_path);
		fprintf(jf, ",\n  \"requests\": %zu,\n  \"keys\": %zu,\n", t->nb_recs, t->nb_keys);
		fprintf(jf, "  \"caches\": [");
	}
	printf("trace %s: %zu requests, %zu distinct keys\n", c->trace_path, t->nb_recs,
		t->nb_keys);
	printf("%12s %10s %10s %10s\n", "cache", "share", "lru", "belady");
	for (i = 0; i < n; i++) {
		if (km_sim_lru(t, sizes[i], &lru) < 0 || km_sim_belady(t, sizes[i], &opt) < 0) {
			fprintf(stderr, "keymap-bench: simulation failed (out of memory)\n");
			km_trace_free(t);
			if (jf != NULL)
				fclose(jf);
			return EXIT_FAILED;
		}
		printf("%12" PRIu64 " %9.2f%% %10.4f %10.4f\n", sizes[i],
			100.0 * (double)sizes[i] / (double)(t->nb_keys ? t->nb_keys : 1),
			lru.hit_ratio, opt.hit_ratio);
		if (jf != NULL)
			fprintf(jf,
				"%s\n    {\"entries\": %" PRIu64 ", \"gets\": %" PRIu64
				", \"lru_hit_ratio\": %.6f, \"belady_hit_ratio\": %.6f}",
				i == 0 ? "" : ",", sizes[i], lru.gets, lru.hit_ratio,
				opt.hit_ratio);
	}
	if (jf != NULL) {
		fprintf(jf, "\n  ]\n}\n");
		fclose(jf);
	}
	km_trace_free(t);
	return 0;
}

static const char *
xport_name(enum bench_xport_kind x)
{
	return x == BENCH_X_ETH ? "eth" : (x == BENCH_X_SOCKET ? "socket" : "libkeymap");
}

/* The largest value of a request with a klen-byte key: the target's, less the MAC that
 * shares the datagram with a client key. */
static size_t
value_max(const struct bench_conf *c, size_t klen)
{
	size_t v = km_tgt_value_max(c->target, klen);

	if (c->has_key)
		v = v > KM_AUTH_LEN ? v - KM_AUTH_LEN : 0;
	return v;
}

/* Every key with its largest value must fit the target's datagram. */
static int
check_trace_sizes(const struct bench_conf *c, const struct km_trace *t)
{
	size_t i;

	for (i = 0; i < t->nb_recs; i++) {
		const struct km_trace_rec *r = &t->recs[i];
		const struct km_trace_key *k = &t->keys[r->key_id];
		uint32_t v = r->op == KM_WL_PUT ? r->value_size : k->first_value_size;

		if (v > value_max(c, k->len)) {
			fprintf(stderr,
				"keymap-bench: %s: record %zu: key '%.*s' with a %u-byte value "
				"does not fit one %s request (at most %zu bytes)\n",
				c->trace_path, i + 1, (int)k->len, k->key, v,
				km_tgt_name(c->target), value_max(c, k->len));
			return -1;
		}
	}
	return 0;
}

/* What one run holds; released by run_free(). */
struct run {
	struct bench_conf *c;
	struct bench_gen gen[BENCH_GEN_MAX]; /* eth, socket: a transport per engine */
	unsigned int nb_gen;
	struct km_trace *trace;
	struct km_wl *wl[BENCH_GEN_MAX];       /* one per engine */
	struct bench_auth auth[BENCH_GEN_MAX]; /* keymap over eth/socket, per source port */
	int auth_on;
	int eal_ok;
	char workload[256]; /* one line for the summary */
};

static int
run_phase(const struct run *run, struct bench_phase *ph, struct bench_result *r)
{
	char err[256];
	int rc;

	if (ph->conf->xport == BENCH_X_LIBKEYMAP) {
		if (bench_libkeymap_run(ph, r, err, sizeof(err)) < 0) {
			fprintf(stderr, "keymap-bench: %s: %s\n", ph->name, err);
			return -1;
		}
		return 0;
	}
	rc = bench_gens_run(run->gen, run->nb_gen, ph, r);
	if (rc < 0) {
		fprintf(stderr, "keymap-bench: %s: %s\n", ph->name,
			rc == -ENOMEM ? "out of memory" : "no lcore for every --threads engine");
		return -1;
	}
	return 0;
}

/* The trace or the generated workload, and its one-line description.
 * @return -1 to go on, else the exit status. */
static int
load_workload(struct run *r)
{
	const struct bench_conf *c = r->c;
	char err[512], threads[64];
	uint32_t session_base = 0;
	unsigned int i;

	if (c->trace_path != NULL) {
		if (km_trace_load(c->trace_path, BENCH_PAYLOAD_MAX, &r->trace, err, sizeof(err)) <
			0) {
			fprintf(stderr, "keymap-bench: %s\n", err);
			return EXIT_USAGE;
		}
		if (check_trace_sizes(c, r->trace) < 0)
			return EXIT_USAGE;
		snprintf(r->workload, sizeof(r->workload),
			"trace %s (%zu requests, %zu keys), speed %g", c->trace_path,
			r->trace->nb_recs, r->trace->nb_keys, c->trace_speed);
		return -1;
	}
	snprintf(threads, sizeof(threads), " in all, %u generator lcores", c->threads);
	if (c->value_size > value_max(c, c->wl.key_size)) {
		fprintf(stderr,
			"keymap-bench: --value-size %u: a %s request with a %u-byte key carries at "
			"most %zu bytes\n",
			c->value_size, km_tgt_name(c->target), c->wl.key_size,
			value_max(c, c->wl.key_size));
		return EXIT_USAGE;
	}
	/* One generator per engine, each its own stream of the seed: the engines draw
	 * different keys (sessions: the same template order); the sessions are shared out,
	 * numbered apart. */
	for (i = 0; i < c->threads; i++) {
		struct km_wl_conf wc = c->wl;

		wc.stream = i;
		if (c->threads > 1) {
			wc.sessions =
				c->wl.sessions / c->threads + (i < c->wl.sessions % c->threads);
			if (wc.sessions == 0)
				wc.sessions = 1;
			wc.session_base = session_base;
			session_base += wc.sessions;
		}
		if (km_wl_create(&wc, &r->wl[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "keymap-bench: workload: %s\n", err);
			return EXIT_USAGE;
		}
		r->gen[i].wl = r->wl[i];
	}
	snprintf(r->workload, sizeof(r->workload),
		"%s, %" PRIu64 " keys of %u B, values %u B, %.0f%% GET, %s %g%s%s",
		km_wl_dist_name(c->wl.dist), km_wl_nb_keys(r->wl[0]), c->wl.key_size, c->value_size,
		c->wl.get_ratio * 100, c->rate > 0 ? "open loop" : "closed loop",
		c->rate > 0 ? c->rate : (double)c->inflight, c->rate > 0 ? " req/s" : " in flight",
		c->threads > 1 ? threads : "");
	return -1;
}

/* EAL (with arguments after "--"), signals, clock, transport. @return 0, or the exit
 * status after saying why. */
static int
start(struct run *r, const struct bench_cli *cli, int argc, char **argv)
{
	struct bench_xport *xs[BENCH_GEN_MAX] = {NULL};
	char err[512];
	unsigned int i;

	if (cli->eal) {
		/* EAL sees argv[0] and what follows "--". */
		argv[cli->eal_first - 1] = argv[0];
		if (rte_eal_init(argc - cli->eal_first + 1, &argv[cli->eal_first - 1]) < 0) {
			fprintf(stderr, "keymap-bench: EAL init failed: %s\n",
				rte_strerror(rte_errno));
			return EXIT_FAILED;
		}
		r->eal_ok = 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	bench_clock_init();

	r->nb_gen = 1;
	if (r->c->threads > 1 && rte_lcore_count() < r->c->threads) {
		fprintf(stderr,
			"keymap-bench: --threads %u needs %u EAL lcores, EAL has %u (give -l or "
			"--lcores with %u)\n",
			r->c->threads, r->c->threads, rte_lcore_count(), r->c->threads);
		return EXIT_USAGE;
	}
	if (r->c->xport == BENCH_X_ETH) {
		if (bench_xport_eth(r->c, r->c->threads, xs, err, sizeof(err)) == 0)
			r->nb_gen = r->c->threads;
		else
			xs[0] = NULL;
	} else if (r->c->xport == BENCH_X_SOCKET) {
		xs[0] = bench_xport_socket(r->c, err, sizeof(err));
	}
	if (r->c->xport != BENCH_X_LIBKEYMAP && xs[0] == NULL) {
		fprintf(stderr, "keymap-bench: %s transport: %s\n", xport_name(r->c->xport), err);
		return EXIT_FAILED;
	}
	for (i = 0; i < r->nb_gen; i++) {
		r->gen[i].x = xs[i];
		r->gen[i].auth = &r->auth[i];
	}
	/* One source address and port per transport: one cookie each (libkeymap gets its
	 * own). */
	if (r->c->xport != BENCH_X_LIBKEYMAP && r->c->target == KM_TGT_KEYMAP) {
		if (bench_gens_hello(r->gen, r->nb_gen, r->c, err, sizeof(err)) < 0) {
			fprintf(stderr, "keymap-bench: %s\n", err);
			return EXIT_FAILED;
		}
		r->auth_on = 1;
	}
	return 0;
}

/* PUT every key once. @return 0 or -1 after saying why. */
static int
preload(struct run *r)
{
	const struct bench_conf *c = r->c;
	struct bench_phase ph = {
		.name = "preload",
		.conf = c,
		.wl = r->wl[0],
		.trace = r->trace,
		.auth = r->auth_on ? &r->auth[0] : NULL,
		.preload = 1,
		.duration_s = 600,
		.progress = !c->quiet,
	};
	struct bench_result pre;

	if (run_phase(r, &ph, &pre) < 0)
		return -1;
	if (pre.failed > 0 || pre.errors > 0 || bench_stop) {
		fprintf(stderr,
			"keymap-bench: preload incomplete: %" PRIu64 " keys not stored, %" PRIu64
			" error replies, %" PRIu64 " timeouts (is the target up?)\n",
			pre.failed, pre.errors, pre.timeouts);
		return -1;
	}
	if (!c->quiet)
		fprintf(stderr, "preload: %" PRIu64 " keys in %.2f s\n", pre.replies,
			pre.elapsed_s);
	return 0;
}

/* Summary on stdout, then the files asked for. @return 0, or -1 if a file failed. */
static int
report(const struct run *r, const struct bench_phase *ph, const struct bench_result *res)
{
	const struct bench_conf *c = r->c;
	struct bench_report rep = {
		.label = c->label,
		.target = km_tgt_name(c->target),
		.transport = xport_name(c->xport),
		.workload = r->workload,
		.open_loop = c->rate > 0 || (c->trace_path != NULL && c->trace_speed > 0),
		.r = res,
	};
	int rc, out_err = 0;

	bench_print_summary(stdout, &rep);
	if (c->json_path != NULL && (rc = bench_write_json(c->json_path, &rep, ph)) < 0) {
		fprintf(stderr, "keymap-bench: %s: %s\n", c->json_path, strerror(-rc));
		out_err = 1;
	}
	if (c->csv_path != NULL && (rc = bench_write_csv(c->csv_path, ph)) < 0) {
		fprintf(stderr, "keymap-bench: %s: %s\n", c->csv_path, strerror(-rc));
		out_err = 1;
	}
	if (c->cdf_path != NULL && (rc = bench_write_cdf(c->cdf_path, &res->lat)) < 0) {
		fprintf(stderr, "keymap-bench: %s: %s\n", c->cdf_path, strerror(-rc));
		out_err = 1;
	}
	return out_err ? -1 : 0;
}

/* Did the run succeed? Interrupted, silent or too lossy runs did not. */
static int
judge(const struct bench_conf *c, const struct bench_result *res)
{
	uint64_t lost = res->timeouts + res->unsent + res->dropped;

	if (bench_stop)
		fprintf(stderr, "keymap-bench: interrupted\n");
	else if (res->replies == 0)
		fprintf(stderr, "keymap-bench: no reply from the target\n");
	else if (res->bad > 0)
		fprintf(stderr,
			"keymap-bench: %" PRIu64
			" replies did not answer their request (--check)\n",
			res->bad);
	else if ((double)lost >
		 c->max_timeout_ratio * (double)(res->sent + res->unsent + res->dropped))
		fprintf(stderr,
			"keymap-bench: %" PRIu64 " of %" PRIu64
			" requests timed out or were never sent (more than --max-timeouts %g)\n",
			lost, res->sent + res->unsent + res->dropped, c->max_timeout_ratio);
	else
		return 0;
	return -1;
}

/* The measured phase, its report and verdict. @return the exit status. */
static int
measure(struct run *r)
{
	const struct bench_conf *c = r->c;
	struct bench_phase ph = {
		.name = r->trace != NULL ? "replay" : "run",
		.conf = c,
		.wl = r->wl[0],
		.trace = r->trace,
		.auth = r->auth_on ? &r->auth[0] : NULL,
		.rate = c->rate,
		.duration_s = c->duration_s,
		.max_requests = c->max_requests,
		.progress = !c->quiet,
		.cap_ticks = (size_t)c->duration_s + 2,
	};
	struct bench_result res;
	int ret = EXIT_FAILED;

	ph.ticks = calloc(ph.cap_ticks, sizeof(*ph.ticks));
	if (ph.ticks == NULL) {
		fprintf(stderr, "keymap-bench: out of memory\n");
		return EXIT_FAILED;
	}
	if (run_phase(r, &ph, &res) == 0) {
		int out_ok = report(r, &ph, &res) == 0;

		if (judge(c, &res) == 0 && out_ok)
			ret = 0;
	}
	free(ph.ticks);
	return ret;
}

static void
run_free(struct run *r)
{
	unsigned int i;

	for (i = 0; i < BENCH_GEN_MAX; i++) {
		if (r->gen[i].x != NULL)
			r->gen[i].x->close(r->gen[i].x);
		km_wl_free(r->wl[i]);
	}
	km_trace_free(r->trace);
	if (r->eal_ok)
		rte_eal_cleanup();
}

int
main(int argc, char **argv)
{
	struct bench_cli cli;
	struct run r = {.c = &cli.c};
	int ret;
	if (km_version_opt(argc, argv, "keymap-bench", rte_version()))
		return 0;

	ret = bench_options_parse(argc, argv, &cli);
	if (ret >= 0)
		return ret;
	if (cli.pf.gen != NULL)
		return bench_gen_trace(&cli.c, &cli.pf);
	if (cli.simulate && cli.pf.enabled)
		return bench_prefetch_simulate(&cli.c, cli.cache_list, &cli.pf);
	if (cli.simulate)
		return simulate(&cli.c, cli.cache_list);
	ret = load_workload(&r);
	if (ret < 0) {
		ret = start(&r, &cli, argc, argv);
		if (ret == 0)
			ret = !cli.c.preload || preload(&r) == 0 ? measure(&r) : EXIT_FAILED;
	}
	run_free(&r);
	return ret;
}
