/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymap-bench's prediction work: the offline prefetch evaluator's report (lib/bench's
 * km_prefsim over lib/predict) next to the LRU and Belady simulators, and the structured
 * trace generators.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <km_cachesim.h>
#include <km_gentrace.h>
#include <km_prefsim.h>
#include <km_trace.h>

#include "options.h"
#include "prefetch.h"
#include "report.h"

#define COST_RECS 200000

static double
ratio(uint64_t a, uint64_t b)
{
	return b > 0 ? (double)a / (double)b : 0;
}

static void
print_one(uint64_t size, size_t nb_keys, const struct km_sim_result *lru,
	const struct km_sim_result *opt, const struct km_prefsim_result *r)
{
	uint64_t misses_off = r->gets - r->hits_off;

	printf("%10" PRIu64 " %7.2f%% %9.4f %9.4f %9.4f %9.4f %8.3f %8.3f %8.2f %8" PRIu64 "\n",
		size, 100.0 * (double)size / (double)(nb_keys ? nb_keys : 1), r->hit_ratio_off,
		r->hit_ratio, lru->hit_ratio, opt->hit_ratio, r->accuracy, r->coverage,
		r->reads_per_avoided, r->all.late);
	printf("%20s %10s %10s %10s %10s %9s %9s\n", "model", "reads", "used", "late", "absent",
		"accuracy", "coverage");
	for (unsigned m = 0; m < KM_PREDICT_NB_MODELS; m++) {
		const struct km_prefsim_model *x = &r->model[m];

		if (x->issued + x->absent == 0)
			continue;
		printf("%20s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %9.3f %9.3f\n",
			km_predict_model_name(m), x->issued, x->used, x->late, x->absent,
			ratio(x->used + x->late, x->issued + x->absent),
			ratio(x->used, misses_off));
	}
	printf("%20s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %9.3f %9.3f\n",
		"ensemble", r->all.issued, r->all.used, r->all.late, r->all.absent, r->accuracy,
		r->coverage);
	printf("%20s threshold %.2f, budget %u in flight per worker, %" PRIu64 " stale, %" PRIu64
	       " harm, %" PRIu64 " below threshold, %" PRIu64 " suppressed by the floor\n",
		"scheduler", r->sched.threshold, r->sched.budget, r->stale, r->harm,
		r->sched.below_threshold, r->pstats.suppressed);
}

static void
json_one(FILE *jf, int first, uint64_t size, const struct km_sim_result *lru,
	const struct km_sim_result *opt, const struct km_prefsim_result *r)
{
	fprintf(jf,
		"%s\n    {\"entries\": %" PRIu64 ", \"gets\": %" PRIu64
		", \"sieve_hit_ratio\": %.6f, \"prefetch_hit_ratio\": %.6f"
		", \"lru_hit_ratio\": %.6f, \"belady_hit_ratio\": %.6f"
		", \"accuracy\": %.6f, \"coverage\": %.6f, \"reads_per_avoided\": %.6f"
		", \"reads\": %" PRIu64 ", \"used\": %" PRIu64 ", \"late\": %" PRIu64
		", \"absent\": %" PRIu64 ", \"avoided\": %" PRIu64 ", \"stale\": %" PRIu64
		", \"harm\": %" PRIu64 ", \"models\": {",
		first ? "" : ",", size, r->gets, r->hit_ratio_off, r->hit_ratio, lru->hit_ratio,
		opt->hit_ratio, r->accuracy, r->coverage, r->reads_per_avoided, r->all.issued,
		r->all.used, r->all.late, r->all.absent, r->avoided, r->stale, r->harm);
	for (unsigned m = 0, n = 0; m < KM_PREDICT_NB_MODELS; m++) {
		const struct km_prefsim_model *x = &r->model[m];

		if (x->issued + x->absent == 0)
			continue;
		fprintf(jf,
			"%s\"%s\": {\"reads\": %" PRIu64 ", \"used\": %" PRIu64
			", \"late\": %" PRIu64 ", \"absent\": %" PRIu64 "}",
			n++ ? ", " : "", km_predict_model_name(m), x->issued, x->used, x->late,
			x->absent);
	}
	fprintf(jf, "}}");
}

static void
models_str(uint32_t m, char *buf, size_t n)
{
	size_t at = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < KM_PREDICT_NB_MODELS; i++)
		if (m & (1u << i))
			at += (size_t)snprintf(
				buf + at, n - at, "%s%s", at ? "," : "", km_predict_model_name(i));
}

int
bench_prefetch_simulate(
	const struct bench_conf *c, const char *cache_list, const struct bench_prefetch_cli *pf)
{
	struct km_prefsim_params pp = {
		.latency = pf->latency,
		.models = pf->models,
		.mem_bytes = pf->mem_bytes,
		.insert_visited = pf->visited,
		.no_carry = pf->no_carry,
		.no_aimd = pf->no_aimd,
	};
	uint64_t sizes[CACHE_SIZES_MAX];
	struct km_sim_result lru, opt;
	struct km_prefsim_result r;
	struct km_trace *t = NULL;
	double ns_pred, ns_stream;
	char err[512], models[64];
	FILE *jf = NULL;
	size_t n, i;
	int rc = 0;

	if (km_trace_load(c->trace_path, UINT32_MAX, &t, err, sizeof(err)) < 0) {
		fprintf(stderr, "keymap-bench: %s\n", err);
		return EXIT_USAGE;
	}
	if (bench_cache_sizes(cache_list, t->nb_keys, sizes, &n) < 0) {
		km_trace_free(t);
		return EXIT_USAGE;
	}
	if (c->json_path != NULL && (jf = fopen(c->json_path, "w")) == NULL) {
		fprintf(stderr, "keymap-bench: %s: %s\n", c->json_path, strerror(errno));
		km_trace_free(t);
		return EXIT_FAILED;
	}
	models_str(pf->models, models, sizeof(models));
	if (km_prefsim_cost(t, &pp, COST_RECS, &ns_pred, &ns_stream) < 0) {
		rc = -ENOMEM;
		goto out;
	}
	printf("trace %s: %zu requests, %zu distinct keys\n", c->trace_path, t->nb_recs,
		t->nb_keys);
	printf("prefetch: models %s, latency %u requests, prefetched entries enter SIEVE %s%s\n",
		models, pf->latency, pf->visited ? "visited" : "unvisited",
		pf->no_carry ? ", no carry" : "");
	printf("cost: predictor %.0f ns per observed access, stream detector %.0f ns; %d bytes "
	       "per tracked key\n",
		ns_pred, ns_stream, KM_PREDICT_KEY_BYTES);
	printf("first page of multi-page requests: not derivable from the replay CSV (no request "
	       "boundaries)\n");
	printf("%10s %8s %9s %9s %9s %9s %8s %8s %8s %8s\n", "cache", "share", "sieve-off",
		"sieve-on", "lru", "belady", "accuracy", "coverage", "rd/avoid", "late");
	if (jf != NULL) {
		fprintf(jf, "{\n  \"trace\": ");
		bench_json_str(jf, c->trace_path);
		fprintf(jf,
			",\n  \"requests\": %zu,\n  \"keys\": %zu,\n  \"models\": \"%s\",\n"
			"  \"latency\": %u,\n  \"insert_visited\": %d,\n  \"carry\": %d,\n"
			"  \"ns_per_access_predictor\": %.1f,\n  \"ns_per_access_stream\": %.1f,\n"
			"  \"bytes_per_tracked_key\": %d,\n  \"caches\": [",
			t->nb_recs, t->nb_keys, models, pf->latency, pf->visited, !pf->no_carry,
			ns_pred, ns_stream, KM_PREDICT_KEY_BYTES);
	}
	for (i = 0; i < n && rc == 0; i++) {
		pp.capacity = sizes[i];
		rc = km_sim_lru(t, sizes[i], &lru);
		if (rc == 0)
			rc = km_sim_belady(t, sizes[i], &opt);
		if (rc == 0)
			rc = km_prefsim_run(t, &pp, &r);
		if (rc < 0)
			break;
		print_one(sizes[i], t->nb_keys, &lru, &opt, &r);
		if (jf != NULL)
			json_one(jf, i == 0, sizes[i], &lru, &opt, &r);
	}
	if (jf != NULL)
		fprintf(jf, "\n  ]\n}\n");
out:
	if (jf != NULL)
		fclose(jf);
	km_trace_free(t);
	if (rc < 0) {
		fprintf(stderr, "keymap-bench: simulation failed: %s\n", strerror(-rc));
		return EXIT_FAILED;
	}
	return 0;
}

int
bench_gen_trace(const struct bench_conf *c, const struct bench_prefetch_cli *pf)
{
	struct km_gen_conf g = {
		.keys = c->wl.nb_keys,
		.requests = c->max_requests ? c->max_requests : 1000000,
		.seed = c->wl.seed,
		.value_size = c->value_size,
	};
	FILE *f;
	int rc;

	if (km_gen_kind_parse(pf->gen, &g.kind) < 0) {
		fprintf(stderr,
			"keymap-bench: --gen-trace '%s': expected sessions, listing or "
			"timeseries\n",
			pf->gen);
		return EXIT_USAGE;
	}
	f = fopen(pf->out, "w");
	if (f == NULL) {
		fprintf(stderr, "keymap-bench: %s: %s\n", pf->out, strerror(errno));
		return EXIT_FAILED;
	}
	rc = km_gen_trace(&g, f);
	if (fclose(f) != 0 && rc == 0)
		rc = -EIO;
	if (rc < 0) {
		fprintf(stderr, "keymap-bench: %s: %s\n", pf->out, strerror(-rc));
		return EXIT_FAILED;
	}
	return 0;
}
