/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Status page: GET / and GET /status.json of the metrics endpoint (metrics.c).
 *
 * The page is one constant document, its CSS and script inline: it fetches /status.json
 * from the same server every 2 s and draws the shard map as a strip of the hash space,
 * the workers' load and charts of the last 10 minutes. Nothing on it changes keymapd.
 *
 * The history is kept here by the control lcore (km_status_tick, every loop iteration):
 * one point every STATUS_PERIOD_S seconds, the figures of that interval (differences of
 * the workers' counters), the last STATUS_POINTS points. /status.json is rendered on the
 * control lcore too (km_ctl_call from the HTTP thread), so that the ring needs no lock.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_version.h>

#include <km_cache.h>
#include <km_proc.h>
#include <km_shardmap.h>

#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "stats.h"

#define STATUS_PERIOD_S   5    /* one point every ... */
#define STATUS_POINTS     120  /* ... for the last 10 minutes */
#define STATUS_SHARDS_MAX 4096 /* shards in /status.json, in map order; the rest cut */

/* One point of the history: the figures of the STATUS_PERIOD_S seconds before it. */
struct status_point {
	int64_t time;       /* wall clock, Unix seconds */
	double req_per_s;   /* all workers */
	double hit_ratio;   /* cache hits / lookups; < 0: no lookup, or no cache */
	double pf_accuracy; /* prefetched values used / resolved; < 0: none resolved */
	uint8_t busy_pct[KM_WORKERS_MAX]; /* share of the interval each worker had work */
};

/* The workers' counters at the last point (or when sampling began). */
struct status_mark {
	uint64_t tsc; /* rte_get_timer_cycles(); 0: not yet */
	uint64_t requests;
	uint64_t hits, misses;
	uint64_t pf_used, pf_unused;
	int cache; /* some worker has a value cache */
	uint64_t busy_cycles[KM_WORKERS_MAX];
};

/* Control lcore only (km_status_tick; km_status_render_json through km_ctl_call). */
static struct {
	struct status_point p[STATUS_POINTS];
	unsigned int head; /* the next to write */
	unsigned int n;    /* written (at most STATUS_POINTS) */
	struct status_mark last;
} hist;

/* The counters now. Plain words each worker updates alone: a value may be one update
 * old, never torn. */
static void
status_mark(struct status_mark *m, uint64_t now)
{
	const struct km_cache_counters *cc;
	const struct km_worker *w;
	uint16_t i;

	memset(m, 0, sizeof(*m));
	m->tsc = now;
	for (i = 0; i < km_dp.nb_workers; i++) {
		w = &km_dp.workers[i];
		m->requests += km_worker_requests(w);
		m->busy_cycles[i] = w->cnt.busy_cycles;
		cc = w->proc == NULL ? NULL : km_proc_cache_counters(w->proc);
		if (cc == NULL)
			continue;
		m->cache = 1;
		m->hits += cc->hits;
		m->misses += cc->misses;
		m->pf_used += cc->prefetched_used;
		m->pf_unused += cc->prefetched_evicted_unused;
	}
}

/* b - a, 0 if the counter went back. */
static uint64_t
delta(uint64_t a, uint64_t b)
{
	return b >= a ? b - a : 0;
}

/* part / (part + rest), or -1 when both are 0. */
static double
ratio(uint64_t part, uint64_t rest)
{
	return part + rest == 0 ? -1.0 : (double)part / (double)(part + rest);
}

void
km_status_tick(uint64_t now)
{
	uint64_t hz = rte_get_timer_hz();
	double dt, tsc_hz = (double)rte_get_tsc_hz(), busy;
	struct status_mark m;
	struct status_point *p;
	uint16_t i;

	if (hist.last.tsc != 0 && now - hist.last.tsc < STATUS_PERIOD_S * hz)
		return;
	status_mark(&m, now);
	if (hist.last.tsc == 0) {
		hist.last = m; /* the first interval starts here */
		return;
	}
	dt = (double)(now - hist.last.tsc) / (double)hz;
	p = &hist.p[hist.head];
	p->time = (int64_t)time(NULL);
	p->req_per_s = (double)delta(hist.last.requests, m.requests) / dt;
	p->hit_ratio =
		m.cache ? ratio(delta(hist.last.hits, m.hits), delta(hist.last.misses, m.misses))
			: -1.0;
	p->pf_accuracy =
		ratio(delta(hist.last.pf_used, m.pf_used), delta(hist.last.pf_unused, m.pf_unused));
	for (i = 0; i < km_dp.nb_workers; i++) {
		busy = (double)delta(hist.last.busy_cycles[i], m.busy_cycles[i]) / (dt * tsc_hz);
		p->busy_pct[i] = (uint8_t)(RTE_MIN(1.0, busy) * 100 + 0.5);
	}
	hist.head = (hist.head + 1) % STATUS_POINTS;
	if (hist.n < STATUS_POINTS)
		hist.n++;
	hist.last = m;
}

/* A JSON string: quotes, backslashes and control characters escaped. */
static void
put_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", (unsigned int)(unsigned char)*s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

/* A ratio with 4 decimals, null below 0 (none). */
static void
put_ratio(FILE *f, double v)
{
	if (v < 0)
		fputs("null", f);
	else
		fprintf(f, "%.4f", v);
}

static void
put_workers(FILE *f, const struct km_stats_snap *s)
{
	const struct km_stats_worker *w;
	uint16_t i;

	fputs(",\"workers\":[", f);
	for (i = 0; i < s->nb_workers; i++) {
		w = &s->w[i];
		fprintf(f,
			"%s{\"id\":%u,\"req_per_s\":%" PRIu64 ",\"busy_pct\":%" PRIu64
			",\"owned_shards\":%" PRIu64 ",\"capacity\":%" PRIu64 "}",
			i == 0 ? "" : ",", i, w->req_per_s, w->busy_pct, w->owned_shards,
			w->capacity);
	}
	fputc(']', f);
}

/* The last sample, in map order (that is, hash order), at most STATUS_SHARDS_MAX. A shard
 * of another node (a cluster map) has no owner here: null. */
static void
put_shards(FILE *f)
{
	const struct km_ctl_shard *sh;
	uint32_t k, n = RTE_MIN(km_ctl.nb_shards, (uint32_t)STATUS_SHARDS_MAX);
	unsigned int depth;

	fprintf(f, ",\"shards_total\":%u,\"shards_cut\":%s,\"shards\":[", km_ctl.nb_shards,
		n < km_ctl.nb_shards ? "true" : "false");
	for (k = 0; k < n; k++) {
		sh = &km_ctl.shards[k];
		depth = km_shard_depth(sh->id);
		fprintf(f, "%s{\"id\":%" PRIu64 ",\"depth\":%u,\"prefix\":%" PRIu64 ",\"owner\":",
			k == 0 ? "" : ",", sh->id, depth, sh->id ^ (UINT64_C(1) << depth));
		if (sh->owner < km_dp.nb_workers)
			fprintf(f, "%u", sh->owner);
		else
			fputs("null", f);
		fprintf(f, ",\"keys\":%" PRIu64 ",\"rate\":%.1f}", sh->keys, sh->rate);
	}
	fputc(']', f);
}

/* Oldest first. */
static void
put_history(FILE *f)
{
	const struct status_point *p;
	unsigned int k;
	uint16_t i;

	fprintf(f, ",\"history_period_s\":%u,\"history_points_max\":%u,\"history\":[",
		STATUS_PERIOD_S, STATUS_POINTS);
	for (k = 0; k < hist.n; k++) {
		p = &hist.p[(hist.head + STATUS_POINTS - hist.n + k) % STATUS_POINTS];
		fprintf(f, "%s{\"time\":%" PRId64 ",\"requests_per_s\":%.1f,\"hit_ratio\":",
			k == 0 ? "" : ",", p->time, p->req_per_s);
		put_ratio(f, p->hit_ratio);
		fputs(",\"prefetch_accuracy\":", f);
		put_ratio(f, p->pf_accuracy);
		fputs(",\"busy_pct\":[", f);
		for (i = 0; i < km_dp.nb_workers; i++)
			fprintf(f, "%s%u", i == 0 ? "" : ",", p->busy_pct[i]);
		fputs("]}", f);
	}
	fputc(']', f);
}

/* Whether some worker has a value cache (a driver that keeps values on disk). */
static int
status_cache(void)
{
	uint16_t i;

	for (i = 0; i < km_dp.nb_workers; i++)
		if (km_dp.workers[i].proc != NULL &&
			km_proc_cache_counters(km_dp.workers[i].proc) != NULL)
			return 1;
	return 0;
}

static void
status_body(FILE *f, const struct km_stats_snap *sp)
{
	fputs("{\"version\":", f);
	put_str(f, KM_VERSION);
	fputs(",\"dpdk\":", f);
	put_str(f, rte_version());
	fputs(",\"store\":", f);
	put_str(f, km_ctl.conf.store_driver);
	fprintf(f,
		",\"cache\":%s,\"time\":%" PRId64 ",\"uptime_s\":%.1f,\"requests_per_s\":%.1f"
		",\"latency_window_s\":%" PRIu64 ",\"latency_p50_ns\":%" PRIu64
		",\"latency_p99_ns\":%" PRIu64 ",\"latency_p999_ns\":%" PRIu64,
		status_cache() ? "true" : "false", (int64_t)time(NULL), sp->uptime_seconds,
		sp->requests_per_second, sp->latency_window_s, sp->latency_p50_ns,
		sp->latency_p99_ns, sp->latency_p999_ns);
	put_workers(f, sp);
	put_shards(f);
	put_history(f);
	fputs("}\n", f);
}

/*
 * Rendered at most once a second, whatever the number of pages open: each polls every
 * 2 s, and every rendering takes a snapshot on the control lcore (and the HTTP thread
 * that /metrics scrapes share). A copy of the last one is served meanwhile.
 */
char *
km_status_render_json(size_t *len)
{
	static char *last;
	static size_t last_len;
	static uint64_t last_tsc;
	uint64_t now = rte_get_timer_cycles();
	char *copy;

	if (last == NULL || now - last_tsc >= rte_get_timer_hz()) {
		free(last);
		last = km_snap_render(status_body, &last_len);
		last_tsc = now;
		if (last == NULL)
			return NULL;
	}
	copy = malloc(last_len);
	if (copy == NULL)
		return NULL;
	memcpy(copy, last, last_len);
	*len = last_len;
	return copy;
}

/*
 * The page. Attribute values and script strings are in single quotes, so that few
 * characters need escaping here. Its Content-Security-Policy lets it load nothing but
 * /status.json from the server that sent it: no external asset, no form.
 */
static const char status_page[] =
	"<!DOCTYPE html>\n"
	"<html lang='en'>\n"
	"<head>\n"
	"<meta charset='utf-8'>\n"
	"<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; script-src"
	" 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:\">\n"
	"<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
	"<title>keymapd status</title>\n"
	"<link rel='icon' href='data:,'>\n"
	"<style>\n"
	"body { margin: 14px 22px; font: 13px/1.45 system-ui, sans-serif; color: #1d2327;"
	" background: #fbfcfd; }\n"
	"h1 { font-size: 17px; margin: 0 0 2px; }\n"
	"h2 { font-size: 14px; margin: 16px 0 6px; }\n"
	"h3 { font-size: 12px; font-weight: 600; margin: 0 0 2px; }\n"
	".mute, .axis, #err { color: #66707a; }\n"
	"#err { color: #b42318; }\n"
	"#head span { margin-right: 16px; white-space: nowrap; }\n"
	"#strip, #owners { position: relative; background: #fff; }\n"
	"#strip { height: 46px; border: 1px solid #d9dee3; }\n"
	"#owners { height: 8px; margin: 2px 1px 0; }\n"
	".shard, .own { position: absolute; top: 0; bottom: 0; box-sizing: border-box; }\n"
	".axis { display: flex; font: 11px ui-monospace, monospace; }\n"
	".axis span { flex: 1; text-align: center; }\n"
	".axis span:first-child { flex: 0.5; text-align: left; }\n"
	".axis span:last-child { flex: 0.5; text-align: right; }\n"
	".key i { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 10px; }\n"
	"table { border-collapse: collapse; }\n"
	"th, td { padding: 3px 12px; text-align: right; border-bottom: 1px solid #d9dee3; }\n"
	"th { font-weight: 600; color: #66707a; }\n"
	"td.bar { width: 220px; text-align: left; }\n"
	".bar div { height: 10px; border-radius: 2px; }\n"
	"#charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 12px"
	" 28px; }\n"
	"svg text { font: 10px system-ui, sans-serif; fill: #66707a; }\n"
	"</style>\n"
	"</head>\n"
	"<body>\n"
	"<h1 id='title'>keymapd</h1>\n"
	"<div id='head' class='mute'>loading /status.json&hellip;</div>\n"
	"<div id='err'></div>\n"
	"<noscript><p>This page needs JavaScript: it draws itself from\n"
	"<a href='/status.json'>/status.json</a>, which has every figure it"
	" shows.</p></noscript>\n"
	"<h2>Shard map <span id='mapnote' class='mute'></span></h2>\n"
	"<div id='strip'></div>\n"
	"<div id='owners'></div>\n"
	"<div class='axis'><span>hash 0x0000&hellip;</span><span>0x4000&hellip;</span>\n"
	"<span>0x8000&hellip;</span><span>0xc000&hellip;</span><span>0xffff&hellip;</span></div>"
	"\n"
	"<div id='legend' class='mute'></div>\n"
	"<h2>Workers</h2>\n"
	"<table>\n"
	"<thead><tr><th>worker</th><th>requests/s</th><th>busy</th><th></th><th>shards</th>\n"
	"<th>capacity (req/s)</th></tr></thead>\n"
	"<tbody id='workers'></tbody>\n"
	"</table>\n"
	"<h2>Last 10 minutes <span class='mute'>(one point every 5 s)</span></h2>\n"
	"<div id='charts'>\n"
	"<div id='c-rps'></div><div id='c-busy'></div><div id='c-hit'></div><div"
	" id='c-pf'></div>\n"
	"</div>\n"
	"<script>\n"
	"'use strict';\n"
	"const SPAN = 600;\n"
	"const COLORS = ['#4c78a8', '#f58518', '#54a24b', '#b279a2', '#e45756', '#72b7b2',"
	" '#9d755d',\n"
	"\t'#eeca3b', '#ff9da6', '#bab0ac'];\n"
	"const $ = (id) => document.getElementById(id);\n"
	"const color = (w) => COLORS[w % COLORS.length];\n"
	"\n"
	"/* Text from the server into markup: escaped. */\n"
	"function esc(t) {\n"
	"\treturn String(t).replace(/[&<>\"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', "
	"'\"': '&quot;', \"'\": '&#39;'})[c]);\n"
	"}\n"
	"function num(v) {\n"
	"\tif (v == null)\n"
	"\t\treturn '-';\n"
	"\tif (v >= 1e6)\n"
	"\t\treturn (v / 1e6).toFixed(2) + ' M';\n"
	"\tif (v >= 1e4)\n"
	"\t\treturn (v / 1e3).toFixed(1) + ' k';\n"
	"\treturn String(Math.round(v));\n"
	"}\n"
	"function pct(v) {\n"
	"\treturn v == null ? '-' : (100 * v).toFixed(1) + ' %';\n"
	"}\n"
	"function ns(v) {\n"
	"\tif (!v)\n"
	"\t\treturn '-';\n"
	"\tif (v < 1e3)\n"
	"\t\treturn v + ' ns';\n"
	"\tif (v < 1e6)\n"
	"\t\treturn (v / 1e3).toFixed(1) + ' \\u00b5s';\n"
	"\treturn (v / 1e6).toFixed(1) + ' ms';\n"
	"}\n"
	"function uptime(s) {\n"
	"\ts = Math.floor(s);\n"
	"\tconst d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24;\n"
	"\tconst m = Math.floor(s / 60) % 60;\n"
	"\treturn d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` :"
	" `${s}s`;\n"
	"}\n"
	"/* The smallest of 1, 2, 2.5, 5 times a power of ten that is v or more. */\n"
	"function nice(v) {\n"
	"\tconst p = 10 ** Math.floor(Math.log10(v));\n"
	"\tfor (const m of [1, 2, 2.5, 5])\n"
	"\t\tif (m * p >= v)\n"
	"\t\t\treturn m * p;\n"
	"\treturn 10 * p;\n"
	"}\n"
	"/* Pale at 0, red at the hottest shard's rate (t = 1). */\n"
	"function heat(t) {\n"
	"\tt = Math.sqrt(Math.max(0, Math.min(1, t)));\n"
	"\treturn `hsl(${(45 - 45 * t).toFixed(0)}, 90%, ${(95 - 47 * t).toFixed(0)}%)`;\n"
	"}\n"
	"\n"
	"function head(d) {\n"
	"\t$('title').textContent = `keymapd ${d.version}`;\n"
	"\tconst spans = [\n"
	"\t\t`up ${uptime(d.uptime_s)}`,\n"
	"\t\t`${num(d.requests_per_s)} requests/s`,\n"
	"\t\t`latency p50 ${ns(d.latency_p50_ns)}, p99 ${ns(d.latency_p99_ns)} ` +\n"
	"\t\t\t`(last ${d.latency_window_s} s)`,\n"
	"\t\t`${d.shards_total} shards, ${d.workers.length} workers, ${d.store} store`,\n"
	"\t\t`updated ${new Date(d.time * 1000).toLocaleTimeString()}`,\n"
	"\t];\n"
	"\tconst h = $('head');\n"
	"\th.replaceChildren();\n"
	"\tfor (const t of spans) {\n"
	"\t\tconst e = document.createElement('span');\n"
	"\t\te.textContent = t;\n"
	"\t\th.append(e);\n"
	"\t}\n"
	"}\n"
	"\n"
	"/* Each shard owns the hashes whose top depth bits are its prefix: it starts at\n"
	" * prefix / 2^depth of the strip and spans 1 / 2^depth of it. */\n"
	"function strip(d) {\n"
	"\tlet hot = 0;\n"
	"\tfor (const s of d.shards)\n"
	"\t\thot = Math.max(hot, s.rate);\n"
	"\tconst a = document.createDocumentFragment(), b = document.createDocumentFragment();\n"
	"\tfor (const s of d.shards) {\n"
	"\t\tconst w = 100 / 2 ** s.depth;\n"
	"\t\tconst e = document.createElement('div');\n"
	"\t\te.className = 'shard';\n"
	"\t\te.style.left = s.prefix * w + '%';\n"
	"\t\te.style.width = w + '%';\n"
	"\t\te.style.background = heat(hot > 0 ? s.rate / hot : 0);\n"
	"\t\tif (d.shards.length <= 256)\n"
	"\t\t\te.style.borderRight = '1px solid #fff';\n"
	"\t\te.title = `shard ${s.id} (depth ${s.depth}, prefix ${s.prefix})\\n` +\n"
	"\t\t\t`owner: ${s.owner == null ? 'another node' : 'worker ' + s.owner}\\n` +\n"
	"\t\t\t`keys: ${s.keys}\\nrate: ${s.rate.toFixed(1)} requests/s`;\n"
	"\t\ta.append(e);\n"
	"\t\tconst o = document.createElement('div');\n"
	"\t\to.className = 'own';\n"
	"\t\to.style.left = e.style.left;\n"
	"\t\to.style.width = e.style.width;\n"
	"\t\to.style.background = s.owner == null ? '#ccc' : color(s.owner);\n"
	"\t\tb.append(o);\n"
	"\t}\n"
	"\t$('strip').replaceChildren(a);\n"
	"\t$('owners').replaceChildren(b);\n"
	"\t$('mapnote').textContent = d.shards_cut ?\n"
	"\t\t`(the first ${d.shards.length} of ${d.shards_total} shards, in hash order)` : '';\n"
	"\tconst l = $('legend');\n"
	"\tl.replaceChildren(`Colour: requests/s relative to the hottest shard ` +\n"
	"\t\t`(${hot.toFixed(1)} requests/s); hover a shard for its figures. Bar below: owner"
	" `);\n"
	"\tconst k = document.createElement('span');\n"
	"\tk.className = 'key';\n"
	"\tfor (const w of d.workers) {\n"
	"\t\tconst i = document.createElement('i');\n"
	"\t\ti.style.background = color(w.id);\n"
	"\t\tk.append(i, `worker ${w.id}`);\n"
	"\t}\n"
	"\tl.append(k);\n"
	"}\n"
	"\n"
	"function workers(d) {\n"
	"\tconst f = document.createDocumentFragment();\n"
	"\tfor (const w of d.workers) {\n"
	"\t\tconst r = document.createElement('tr');\n"
	"\t\tr.className = 'worker';\n"
	"\t\tr.id = 'worker-' + w.id;\n"
	"\t\tconst cells = [`${w.id}`, num(w.req_per_s), `${w.busy_pct} %`, '',\n"
	"\t\t\t`${w.owned_shards}`, w.capacity ? num(w.capacity) : 'not measured'];\n"
	"\t\tfor (const [i, t] of cells.entries()) {\n"
	"\t\t\tconst c = document.createElement('td');\n"
	"\t\t\tc.textContent = t;\n"
	"\t\t\tif (i == 3) {\n"
	"\t\t\t\tconst bar = document.createElement('div');\n"
	"\t\t\t\tbar.style.width = Math.min(100, w.busy_pct) + '%';\n"
	"\t\t\t\tbar.style.background = color(w.id);\n"
	"\t\t\t\tc.className = 'bar';\n"
	"\t\t\t\tc.append(bar);\n"
	"\t\t\t}\n"
	"\t\t\tr.append(c);\n"
	"\t\t}\n"
	"\t\tf.append(r);\n"
	"\t}\n"
	"\t$('workers').replaceChildren(f);\n"
	"}\n"
	"\n"
	"/* A line chart of the history: series [{color, values}] (null: no value, a gap), y"
	" from 0\n"
	" * to max (or the largest value), x the last SPAN seconds. */\n"
	"function chart(id, title, now, times, series, max, fmt, empty) {\n"
	"\tconst box = $(id);\n"
	"\tconst W = Math.max(280, box.clientWidth), H = 118, L = 46, R = 8, T = 6, B = 16;\n"
	"\tlet top = max, last = null;\n"
	"\tfor (const s of series)\n"
	"\t\tfor (const v of s.values)\n"
	"\t\t\tif (v != null) {\n"
	"\t\t\t\ttop = max != null ? max : Math.max(top || 0, v);\n"
	"\t\t\t\tlast = v;\n"
	"\t\t\t}\n"
	"\ttop = !top ? 1 : max != null ? max : nice(top);\n"
	"\tconst x = (t) => (L + (W - L - R) * (1 - (now - t) / SPAN)).toFixed(1);\n"
	"\tconst y = (v) => (T + (H - T - B) * (1 - Math.min(v, top) / top)).toFixed(1);\n"
	"\tlet g = '';\n"
	"\tfor (const f of [0, 0.5, 1]) {\n"
	"\t\tconst yy = y(top * f);\n"
	"\t\tg += `<line x1='${L}' x2='${W - R}' y1='${yy}' y2='${yy}' stroke='#e3e7eb'/>`;\n"
	"\t\tg += `<text x='${L - 4}' y='${+yy + 3}' text-anchor='end'>${fmt(top * f)}</text>`;\n"
	"\t}\n"
	"\tfor (const [t, a] of [[SPAN, 'start'], [SPAN / 2, 'middle'], [0, 'end']])\n"
	"\t\tg += `<text x='${x(now - t)}' y='${H - 3}' text-anchor='${a}'>` +\n"
	"\t\t\t`${t ? '-' + t / 60 + ' min' : 'now'}</text>`;\n"
	"\tfor (const s of series) {\n"
	"\t\tlet p = '', n = 0, solo = '';\n"
	"\t\tfor (let i = 0; i < times.length; i++) {\n"
	"\t\t\tconst v = s.values[i];\n"
	"\t\t\tif (v == null || now - times[i] > SPAN) {\n"
	"\t\t\t\tn = 0;\n"
	"\t\t\t\tcontinue;\n"
	"\t\t\t}\n"
	"\t\t\tp += `${n++ ? 'L' : 'M'}${x(times[i])} ${y(v)}`;\n"
	"\t\t\tconst next = s.values[i + 1];\n"
	"\t\t\tif (n == 1 && next == null)\n"
	"\t\t\t\tsolo += `<circle cx='${x(times[i])}' cy='${y(v)}' r='2' ` +\n"
	"\t\t\t\t\t`fill='${s.color}'/>`;\n"
	"\t\t}\n"
	"\t\tg += `<path d='${p}' fill='none' stroke='${s.color}' stroke-width='1.5'/>` + solo;\n"
	"\t}\n"
	"\tif (last == null)\n"
	"\t\tg += `<text x='${(L + W) / 2}' y='${H / 2}' "
	"text-anchor='middle'>${esc(empty)}</text>`;\n"
	"\tconst now_v = last == null || series.length > 1 ? '' : fmt(last);\n"
	"\tbox.innerHTML = `<h3>${esc(title)} <span class='mute'>${esc(now_v)}` +\n"
	"\t\t`</span></h3><svg width='${W}' height='${H}'>${g}</svg>`;\n"
	"}\n"
	"\n"
	"function charts(d) {\n"
	"\tconst h = d.history, t = h.map((p) => p.time);\n"
	"\tconst one = (k) => [{color: COLORS[0], values: h.map((p) => p[k])}];\n"
	"\tchart('c-rps', 'Requests/s', d.time, t, one('requests_per_s'), null, num,\n"
	"\t\t'no point yet');\n"
	"\tchart('c-busy', 'Busy % per worker', d.time, t,\n"
	"\t\td.workers.map((w) => ({color: color(w.id),\n"
	"\t\t\tvalues: h.map((p) => p.busy_pct[w.id])})),\n"
	"\t\t100, (v) => v.toFixed(0) + ' %', 'no point yet');\n"
	"\tchart('c-hit', 'Cache hit ratio', d.time, t, one('hit_ratio'), 1, pct,\n"
	"\t\td.cache ? 'no cache lookup' : 'no cache: the ' + d.store + ' store keeps values in"
	" DRAM');\n"
	"\tchart('c-pf', 'Prefetch accuracy (used / resolved)', d.time, t,\n"
	"\t\tone('prefetch_accuracy'), 1, pct, 'no prefetch resolved');\n"
	"}\n"
	"\n"
	"async function refresh() {\n"
	"\ttry {\n"
	"\t\tconst r = await fetch('/status.json', {cache: 'no-store'});\n"
	"\t\tif (!r.ok)\n"
	"\t\t\tthrow new Error(`${r.status} ${r.statusText}`);\n"
	"\t\tconst d = await r.json();\n"
	"\t\thead(d);\n"
	"\t\tstrip(d);\n"
	"\t\tworkers(d);\n"
	"\t\tcharts(d);\n"
	"\t\t$('err').textContent = '';\n"
	"\t} catch (e) {\n"
	"\t\t$('err').textContent = `not updated: /status.json: ${e.message}`;\n"
	"\t}\n"
	"\tsetTimeout(refresh, 2000);\n"
	"}\n"
	"refresh();\n"
	"</script>\n"
	"</body>\n"
	"</html>\n";

const char *
km_status_page(size_t *len)
{
	*len = sizeof(status_page) - 1;
	return status_page;
}
