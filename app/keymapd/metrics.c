/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Metrics endpoint: GET /metrics, Prometheus text exposition format 0.0.4; beside it the
 * status page, GET / and GET /status.json (status.c).
 *
 * libmicrohttpd serves it from one polling thread of its own. That thread reads nothing of
 * keymapd: it posts km_metrics_render() to the control lcore with km_ctl_call(), which is
 * where km_ctl and the map may be read, and sends back the text it gets.
 */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_lcore.h>
#include <rte_version.h>

#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "stats.h"

/* Handlers return enum MHD_Result since 0.9.71, int before. */
#if MHD_VERSION >= 0x00097002
typedef enum MHD_Result km_mhd_result;
#else
typedef int km_mhd_result;
#endif

#define METRICS_PATH           "/metrics"
#define METRICS_CONTENT_TYPE   "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_CONN_LIMIT     16   /* scrapers are few; bounds fds and memory */
#define METRICS_CONN_TIMEOUT_S 10   /* idle connections are closed after this */
#define METRICS_CALL_MS        2000 /* wait for the control lcore at most this long */
#define METRICS_SHARDS_MAX     1024 /* per-shard series only up to this many shards */

/* What a path serves. */
struct metrics_route {
	const char *path;
	const char *content_type;
	char *(*render)(size_t *len); /* on the control lcore; NULL: the status page */
	int browser;                  /* read by browsers: Host checked (DNS rebinding) */
};

static const struct metrics_route metrics_routes[] = {
	{METRICS_PATH, METRICS_CONTENT_TYPE, km_metrics_render, 0},
	{"/status.json", "application/json", km_status_render_json, 1},
	{"/", "text/html; charset=utf-8", NULL, 1},
};

/* The listening address, for the Host check (main lcore at start, read-only after). */
static char metrics_addr[INET_ADDRSTRLEN];

/*
 * Whether a browser's request may be answered: its Host names this endpoint by address or
 * as localhost (any port: an SSH tunnel's). A page of another site whose name an attacker
 * made resolve to this address (DNS rebinding) sends that name: refused, so that script
 * cannot read the map and the rates.
 */
static int
metrics_host_ok(struct MHD_Connection *c)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
	size_t n;

	if (h == NULL)
		return 1; /* HTTP/1.0 without Host: not a browser */
	n = strcspn(h, ":");
	if (h[0] == '[') /* [::1]:port */
		return strncmp(h, "[::1]", 5) == 0;
	return (n == 9 && strncmp(h, "localhost", 9) == 0) ||
	       (n == 9 && strncmp(h, "127.0.0.1", 9) == 0) ||
	       (n == strlen(metrics_addr) && strncmp(h, metrics_addr, n) == 0);
}

/* The daemon while serving. Main lcore only (start, stop). */
static struct MHD_Daemon *metrics_daemon;

/* "# HELP" text escapes backslash and newline. */
static void
put_family(FILE *f, const char *name, const char *type, const char *help)
{
	const char *p;

	fprintf(f, "# HELP %s ", name);
	for (p = help; *p != '\0'; p++) {
		if (*p == '\\')
			fputs("\\\\", f);
		else if (*p == '\n')
			fputs("\\n", f);
		else
			fputc(*p, f);
	}
	fprintf(f, "\n# TYPE %s %s\n", name, type);
}

static void
put_double(FILE *f, double v)
{
	if (isnan(v))
		fputs("NaN", f);
	else if (isinf(v))
		fputs(v > 0 ? "+Inf" : "-Inf", f);
	else
		fprintf(f, "%.9g", v);
}

/*
 * Every figure of the table (stats.h) that Prometheus exports: per-worker ones as one
 * series per worker, the others as one sample.
 */
static void
put_table(FILE *f, const struct km_stats_snap *s)
{
	const struct km_stats_desc *d;
	size_t i;
	uint16_t w;

	for (i = 0; i < km_stats_table_len; i++) {
		d = &km_stats_table[i];
		if (d->prom == NULL || !km_stats_shown(s, d))
			continue;
		put_family(f, d->prom, d->kind == KM_STAT_COUNTER ? "counter" : "gauge", d->help);
		if (d->where == KM_STATS_WORKER) {
			for (w = 0; w < s->nb_workers; w++)
				fprintf(f, "%s{worker=\"%u\"} %" PRIu64 "\n", d->prom, w,
					km_stats_u64(s, d, w));
		} else if (d->where == KM_STATS_PORT) {
			fprintf(f, "%s{port=\"%u\"} %" PRIu64 "\n", d->prom, s->port_id,
				km_stats_u64(s, d, 0));
		} else if (d->is_double) {
			fprintf(f, "%s ", d->prom);
			put_double(f, km_stats_double(s, d));
			fputc('\n', f);
		} else {
			fprintf(f, "%s %" PRIu64 "\n", d->prom, km_stats_u64(s, d, 0));
		}
	}
}

static void
put_latency(FILE *f, const struct km_stats_snap *s)
{
	static const char name[] = "keymap_request_duration_seconds";
	double hz = (double)rte_get_tsc_hz();
	uint64_t cum;
	unsigned int b;
	uint16_t i;

	put_family(f, name, "histogram",
		"time of a request inside keymapd, from the RX burst that brought it to the TX "
		"burst of its reply (disk reads, group writes and replication included)");
	for (i = 0; i < s->nb_workers; i++) {
		/* From the snapshot, so that the cumulative counts, _count and _sum agree even
		 * though the worker keeps counting. */
		cum = 0;
		for (b = 0; b < KM_LAT_BOUNDS; b++) {
			cum += s->w[i].lat[b];
			fprintf(f, "%s_bucket{worker=\"%u\",le=\"%g\"} %" PRIu64 "\n", name, i,
				(double)km_lat_bounds_ns[b] / 1e9, cum);
		}
		cum += s->w[i].lat[KM_LAT_BOUNDS];
		fprintf(f, "%s_bucket{worker=\"%u\",le=\"+Inf\"} %" PRIu64 "\n", name, i, cum);
		fprintf(f, "%s_sum{worker=\"%u\"} ", name, i);
		put_double(f, (double)s->w[i].lat_sum / hz);
		fprintf(f, "\n%s_count{worker=\"%u\"} %" PRIu64 "\n", name, i, cum);
	}
}

/* Two series per shard: the page stays bounded by leaving them out above
 * METRICS_SHARDS_MAX shards (the totals are still there). */
static void
put_shards(FILE *f)
{
	const struct km_ctl_shard *sh;
	uint32_t s;

	if (km_ctl.nb_shards > METRICS_SHARDS_MAX)
		return;
	put_family(f, "keymap_shard_keys", "gauge", "keys stored in a shard, as last sampled");
	for (s = 0; s < km_ctl.nb_shards; s++) {
		sh = &km_ctl.shards[s];
		fprintf(f, "keymap_shard_keys{shard=\"%" PRIu64 "\",owner=\"%u\"} %" PRIu64 "\n",
			sh->id, sh->owner, sh->keys);
	}
	put_family(f, "keymap_shard_requests_per_second", "gauge",
		"requests per second of a shard, exponentially decayed over the samples");
	for (s = 0; s < km_ctl.nb_shards; s++) {
		sh = &km_ctl.shards[s];
		fprintf(f, "keymap_shard_requests_per_second{shard=\"%" PRIu64 "\",owner=\"%u\"} ",
			sh->id, sh->owner);
		put_double(f, sh->rate);
		fputc('\n', f);
	}
}

/* Per predictor model: what it issued, what was used, its measured precision. */
static void
put_prefetch_models(FILE *f, const struct km_stats_snap *s)
{
	unsigned int m;

	if (!s->persistent)
		return;
	put_family(f, "keymap_prefetch_model_issued_total", "counter",
		"prefetch reads a model's predictions started");
	for (m = 0; m < KM_PREDICT_NB_MODELS; m++)
		fprintf(f, "keymap_prefetch_model_issued_total{model=\"%s\"} %" PRIu64 "\n",
			km_predict_model_name(m), s->pf.model[m].issued);
	put_family(f, "keymap_prefetch_model_used_total", "counter",
		"a model's prefetched values hit before eviction");
	for (m = 0; m < KM_PREDICT_NB_MODELS; m++)
		fprintf(f, "keymap_prefetch_model_used_total{model=\"%s\"} %" PRIu64 "\n",
			km_predict_model_name(m), s->pf.model[m].used);
	put_family(f, "keymap_prefetch_model_precision", "gauge",
		"a model's measured precision now (decayed): the confidence its predictions get");
	for (m = 0; m < KM_PREDICT_NB_MODELS; m++) {
		fprintf(f, "keymap_prefetch_model_precision{model=\"%s\"} ",
			km_predict_model_name(m));
		put_double(f, s->pf.model[m].precision);
		fputc('\n', f);
	}
}

char *
km_snap_render(void (*body)(FILE *f, const struct km_stats_snap *s), size_t *len)
{
	struct km_stats_snap s;
	char *buf = NULL;
	size_t size = 0;
	FILE *f;
	int bad;

	if (km_stats_take(&s) < 0)
		return NULL;
	f = open_memstream(&buf, &size);
	if (f == NULL) {
		km_stats_release(&s);
		return NULL;
	}
	body(f, &s);
	km_stats_release(&s);
	bad = ferror(f);
	if (fclose(f) != 0 || bad) {
		free(buf);
		return NULL;
	}
	*len = size;
	return buf;
}

static void
metrics_body(FILE *f, const struct km_stats_snap *s)
{
	put_family(f, "keymap_build_info", "gauge",
		"1, labelled with the version of keymapd and of the DPDK it runs on");
	fprintf(f, "keymap_build_info{version=\"%s\",dpdk=\"%s\"} 1\n", KM_VERSION, rte_version());
	put_table(f, s);
	put_prefetch_models(f, s);
	put_shards(f);
	put_latency(f, s);
}

char *
km_metrics_render(size_t *len)
{
	return km_snap_render(metrics_body, len);
}

struct metrics_page {
	char *(*render)(size_t *len);
	char *text;
	size_t len;
};

/* Runs on the control lcore. */
static int
metrics_render_call(void *arg)
{
	struct metrics_page *pg = arg;

	pg->text = pg->render(&pg->len);
	return pg->text == NULL ? -ENOMEM : 0;
}

static km_mhd_result
metrics_reply_text(
	struct MHD_Connection *c, unsigned int status, const char *text, const char *allow)
{
	struct MHD_Response *r;
	km_mhd_result ret;

	r = MHD_create_response_from_buffer(
		strlen(text), (void *)(uintptr_t)text, MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain") != MHD_YES ||
		(allow != NULL &&
			MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES)) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/*
 * Errors (404, 405) are queued on the first call, before any request body is read: MHD then
 * closes the connection. A GET is answered on the last call, once the request is complete,
 * so that the connection can be kept alive for the next scrape. *con_cls is the route of
 * the request from the first call on.
 */
static km_mhd_result
metrics_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
	const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	const struct metrics_route *rt = *con_cls;
	struct metrics_page pg = {NULL, NULL, 0};
	struct MHD_Response *r;
	km_mhd_result ret;
	size_t i;
	int rc;

	RTE_SET_USED(cls);
	RTE_SET_USED(version);
	RTE_SET_USED(upload_data);

	if (rt == NULL) {
		for (i = 0; i < RTE_DIM(metrics_routes) && rt == NULL; i++)
			if (strcmp(url, metrics_routes[i].path) == 0)
				rt = &metrics_routes[i];
		if (rt == NULL)
			return metrics_reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
		if (rt->browser && !metrics_host_ok(c))
			return metrics_reply_text(c, MHD_HTTP_FORBIDDEN,
				"the status page answers Host: localhost or this address\n", NULL);
		/* HEAD is GET without the body (MHD leaves it out). */
		if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
			strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
			return metrics_reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
				"method not allowed\n", "GET, HEAD");
		*con_cls = (void *)(uintptr_t)rt;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		*upload_data_size = 0; /* a GET body means nothing: dropped */
		return MHD_YES;
	}

	if (rt->render == NULL) {
		/* The status page: a constant, nothing to ask the control lcore. */
		pg.text = (char *)(uintptr_t)km_status_page(&pg.len);
		r = MHD_create_response_from_buffer(pg.len, pg.text, MHD_RESPMEM_PERSISTENT);
	} else {
		/* On -ETIMEDOUT the control lcore never runs the call: pg on this stack is
		 * safe. */
		pg.render = rt->render;
		rc = km_ctl_call(metrics_render_call, &pg, METRICS_CALL_MS);
		if (rc != 0)
			return metrics_reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
				rc == -ESHUTDOWN   ? "keymapd is stopping\n"
				: rc == -ETIMEDOUT ? "control lcore busy, try again\n"
						   : "out of memory\n",
				NULL);
		r = MHD_create_response_from_buffer(pg.len, pg.text, MHD_RESPMEM_MUST_FREE);
		if (r == NULL)
			free(pg.text);
	}
	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rt->content_type) != MHD_YES ||
		MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* MHD's errors (bind failures, connection limit reached, ...) go to keymapd's log. */
static void
metrics_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];
	size_t n;

	RTE_SET_USED(cls);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	KM_LOG(WARNING, "metrics: %s", msg);
}

/*
 * MHD creates its thread from the calling thread and the new thread inherits that thread's
 * CPU affinity: called on the main lcore, it runs on the main lcore's core, which the EAL
 * pins and no worker polls on. Warn if the caller may run on a worker lcore's core, where every
 * page would steal cycles from the datapath.
 */
static void
metrics_check_affinity(void)
{
	rte_cpuset_t self, wcpus, both;
	unsigned int lcore;

	if (pthread_getaffinity_np(pthread_self(), sizeof(self), &self) != 0)
		return;
	RTE_LCORE_FOREACH_WORKER(lcore)
	{
		wcpus = rte_lcore_cpuset(lcore);
		CPU_AND(&both, &self, &wcpus);
		if (CPU_COUNT(&both) != 0) {
			KM_LOG(WARNING,
				"metrics: the HTTP thread may run on the core of worker lcore %u",
				lcore);
			return;
		}
	}
}

int
km_metrics_start(uint32_t ip, uint16_t port, char *err, size_t errlen)
{
	struct sockaddr_in sa;
	char addr[INET_ADDRSTRLEN];

	if (metrics_daemon != NULL) {
		snprintf(err, errlen, "metrics endpoint already started");
		return -1;
	}
	if (port == 0) {
		snprintf(err, errlen, "metrics port 0");
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = ip; /* network order, as configured */
	sa.sin_port = htons(port);
	inet_ntop(AF_INET, &sa.sin_addr, addr, sizeof(addr));
	snprintf(metrics_addr, sizeof(metrics_addr), "%s", addr);

	metrics_check_affinity();
	/* One option and its value per line. */
	/* clang-format off */
	metrics_daemon = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, port,
		NULL, NULL, metrics_handler, NULL,
		MHD_OPTION_EXTERNAL_LOGGER, metrics_log, NULL, /* first, to catch every message */
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned int)METRICS_CONN_LIMIT,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)METRICS_CONN_TIMEOUT_S,
		MHD_OPTION_END);
	/* clang-format on */
	if (metrics_daemon == NULL) {
		snprintf(err, errlen, "cannot serve metrics on %s:%u (reason logged above)", addr,
			port);
		return -1;
	}
	KM_LOG(INFO, "metrics: http://%s:%u%s", addr, port, METRICS_PATH);
	return 0;
}

void
km_metrics_stop(void)
{
	if (metrics_daemon == NULL)
		return;
	/* Waits for the HTTP thread; a page it is waiting for is answered 503 once
	 * km_ctl_call gives up (at most METRICS_CALL_MS). */
	MHD_stop_daemon(metrics_daemon);
	metrics_daemon = NULL;
}
