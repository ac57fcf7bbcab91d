/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * /keymap/prefetch without a parameter: what predictive prefetch does (prefetch.h), for
 * keymapctl prefetch and dpdk-telemetry.py. Built on the control lcore (telemetry.c hands
 * the call over). Numbers that are not integers travel as strings ("0.57"): DPDK
 * telemetry dicts have no floating point values. Keys of learned transitions are
 * percent-encoded where they are not printable ASCII (and for '%', '"' and '\'), so that
 * any key survives the JSON reply.
 */

#include <stdio.h>
#include <string.h>

#include <rte_telemetry.h>

#include <km_predict.h>

#include "keymapd.h"
#include "prefetch.h"
#include "control.h"

#define TOP_MAX 10 /* transitions shown */

static void
add_ratio(struct rte_tel_data *d, const char *name, double v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%.3f", v);
	rte_tel_data_add_dict_string(d, name, buf);
}

void
km_tel_key_text(const uint8_t *key, unsigned int len, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	unsigned int i;

	for (i = 0; i < len && n + 4 <= cap; i++) {
		if (key[i] >= 0x20 && key[i] < 0x7f && key[i] != '%' && key[i] != '"' &&
			key[i] != '\\') {
			out[n++] = (char)key[i];
		} else {
			out[n++] = '%';
			out[n++] = hex[key[i] >> 4];
			out[n++] = hex[key[i] & 15];
		}
	}
	out[n] = '\0';
}

static struct rte_tel_data *
dict_new(void)
{
	struct rte_tel_data *t = rte_tel_data_alloc();

	if (t != NULL)
		rte_tel_data_start_dict(t);
	return t;
}

static void
dict_put(struct rte_tel_data *d, const char *name, struct rte_tel_data *t)
{
	if (t != NULL)
		rte_tel_data_add_dict_container(d, name, t, 0);
}

static struct rte_tel_data *
predictor_dict(const struct km_pf_stats *st)
{
	struct rte_tel_data *t = dict_new();

	if (t == NULL)
		return NULL;
	rte_tel_data_add_dict_u64(t, "observed", st->pred.observed);
	rte_tel_data_add_dict_u64(t, "predicted", st->pred.predicted);
	rte_tel_data_add_dict_u64(t, "suppressed", st->pred.suppressed);
	rte_tel_data_add_dict_u64(t, "untracked", st->pred.untracked);
	rte_tel_data_add_dict_u64(t, "key_replaced", st->pred.key_replaced);
	rte_tel_data_add_dict_u64(t, "tracked_max", st->pred.tracked_max);
	rte_tel_data_add_dict_u64(t, "mem_bytes", st->pred.mem_bytes);
	return t;
}

static struct rte_tel_data *
scheduler_dict(const struct km_pf_stats *st)
{
	const struct km_pfsched_stats *s = &st->sched;
	struct rte_tel_data *t = dict_new();

	if (t == NULL)
		return NULL;
	rte_tel_data_add_dict_u64(t, "pushed", s->pushed);
	rte_tel_data_add_dict_u64(t, "below_threshold", s->below_threshold);
	rte_tel_data_add_dict_u64(t, "filtered", s->filtered);
	rte_tel_data_add_dict_u64(t, "queue_full", s->queue_full);
	rte_tel_data_add_dict_u64(t, "stale", s->stale);
	rte_tel_data_add_dict_u64(t, "dropped_watermark", s->dropped_watermark);
	rte_tel_data_add_dict_u64(t, "issued", s->issued);
	rte_tel_data_add_dict_u64(t, "probes", s->probes);
	rte_tel_data_add_dict_u64(t, "increases", s->increases);
	rte_tel_data_add_dict_u64(t, "decreases", s->decreases);
	rte_tel_data_add_dict_u64(t, "harm", s->harm);
	return t;
}

static struct rte_tel_data *
control_dict(const struct km_pf_stats *st)
{
	struct rte_tel_data *t = dict_new();

	if (t == NULL)
		return NULL;
	rte_tel_data_add_dict_u64(t, "samples", st->samples);
	rte_tel_data_add_dict_u64(t, "outcomes", st->outcomes);
	rte_tel_data_add_dict_u64(t, "forwarded", st->forwarded);
	rte_tel_data_add_dict_u64(t, "sent", st->sent);
	rte_tel_data_add_dict_u64(t, "started", st->started);
	rte_tel_data_add_dict_u64(t, "nothing", st->nothing);
	rte_tel_data_add_dict_u64(t, "absent", st->absent);
	rte_tel_data_add_dict_u64(t, "refused", st->refused);
	rte_tel_data_add_dict_u64(t, "used", st->used);
	rte_tel_data_add_dict_u64(t, "unused", st->unused);
	rte_tel_data_add_dict_u64(t, "late", st->late);
	rte_tel_data_add_dict_u64(t, "harm", st->harm);
	rte_tel_data_add_dict_u64(t, "sampling_up", st->sampling_up);
	rte_tel_data_add_dict_u64(t, "sampling_down", st->sampling_down);
	return t;
}

static struct rte_tel_data *
workers_dict(const struct km_pf_stats *st)
{
	struct rte_tel_data *t = dict_new();

	if (t == NULL)
		return NULL;
	rte_tel_data_add_dict_u64(t, "issued", st->w_issued);
	rte_tel_data_add_dict_u64(t, "used", st->w_used);
	rte_tel_data_add_dict_u64(t, "unused", st->w_unused);
	rte_tel_data_add_dict_u64(t, "late", st->w_late);
	rte_tel_data_add_dict_u64(t, "refused", st->w_refused);
	rte_tel_data_add_dict_u64(t, "harm", st->w_harm);
	rte_tel_data_add_dict_u64(t, "stream", st->w_stream);
	rte_tel_data_add_dict_u64(t, "stream_forwarded", st->w_stream_fwd);
	rte_tel_data_add_dict_u64(t, "samples", st->w_samples);
	rte_tel_data_add_dict_u64(t, "notes_dropped", st->w_notes_dropped);
	rte_tel_data_add_dict_u64(t, "disk_reads", st->w_disk_reads);
	return t;
}

static struct rte_tel_data *
models_dict(const struct km_pf_stats *st)
{
	struct rte_tel_data *t = dict_new(), *m;
	unsigned int i;

	if (t == NULL)
		return NULL;
	for (i = 0; i < KM_PREDICT_NB_MODELS; i++) {
		m = dict_new();
		if (m == NULL)
			break;
		rte_tel_data_add_dict_u64(m, "issued", st->model[i].issued);
		rte_tel_data_add_dict_u64(m, "used", st->model[i].used);
		add_ratio(m, "precision", st->model[i].precision);
		rte_tel_data_add_dict_u64(m, "on", (st->models >> i) & 1);
		dict_put(t, km_predict_model_name(i), m);
	}
	return t;
}

/* The strongest transitions as {"1": {...}, "2": ...}: a telemetry array holds only
 * numbers or strings, not dicts. */
static struct rte_tel_data *
top_dict(void)
{
	struct km_predict_transition tr[TOP_MAX];
	struct rte_tel_data *a = dict_new(), *e;
	char from[3 * KM_PREDICT_KEY_INLINE + 1], to[3 * KM_PREDICT_KEY_INLINE + 1], rank[8];
	unsigned int i, n = km_pf_top(tr, TOP_MAX);

	if (a == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		e = dict_new();
		if (e == NULL)
			break;
		km_tel_key_text(tr[i].from, tr[i].from_len, from, sizeof(from));
		km_tel_key_text(tr[i].to, tr[i].to_len, to, sizeof(to));
		rte_tel_data_add_dict_string(e, "model", km_predict_model_name(tr[i].model));
		rte_tel_data_add_dict_string(e, "from", from);
		rte_tel_data_add_dict_string(e, "to", to);
		rte_tel_data_add_dict_u64(e, "count", tr[i].count);
		add_ratio(e, "share", tr[i].share);
		snprintf(rank, sizeof(rank), "%u", i + 1);
		dict_put(a, rank, e);
	}
	return a;
}

int
km_telemetry_prefetch_stats(struct rte_tel_data *d)
{
	struct km_pf_stats st;
	char models[96] = "";
	unsigned int i;

	km_pf_stats(&st);
	for (i = 0; i < KM_PREDICT_NB_MODELS; i++)
		if ((st.models >> i) & 1)
			snprintf(models + strlen(models), sizeof(models) - strlen(models), "%s%s",
				models[0] != '\0' ? "," : "", km_predict_model_name(i));
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "active", (uint64_t)st.active);
	rte_tel_data_add_dict_string(d, "models", models[0] != '\0' ? models : "none");
	rte_tel_data_add_dict_u64(d, "sampling", st.sampling);
	add_ratio(d, "threshold", st.sched.threshold);
	rte_tel_data_add_dict_u64(d, "budget", st.sched.budget);
	add_ratio(d, "accuracy", st.accuracy);
	add_ratio(d, "coverage", st.coverage);
	add_ratio(d, "busy_share", st.busy_share);
	dict_put(d, "workers", workers_dict(&st));
	dict_put(d, "control", control_dict(&st));
	dict_put(d, "scheduler", scheduler_dict(&st));
	dict_put(d, "predictor", predictor_dict(&st));
	dict_put(d, "per_model", models_dict(&st));
	dict_put(d, "top", top_dict());
	return 0;
}
