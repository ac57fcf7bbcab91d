/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * keymap through libkeymap's batch API: the kernel-socket client applications use, with
 * its steering, retries and MOVED handling. Closed loop: km_batch keeps conf->inflight
 * requests in flight; each call runs a chunk of CHUNK_WINDOWS windows of requests.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <km_client.h>

#include "bench.h"

#define CHUNK_WINDOWS 4
#define CHUNK_MAX     4096

/* c's servers as km_client_opts.host takes them; ports not given are opts.port. */
static void
libkm_hosts(const struct bench_conf *c, char *out, size_t cap)
{
	uint32_t i, n = c->nb_servers != 0 ? c->nb_servers : 1;
	size_t off = 0;

	out[0] = '\0';
	for (i = 0; i < n; i++) {
		char ip[INET_ADDRSTRLEN];
		uint32_t addr = c->nb_servers != 0 ? c->servers_ip[i] : c->server_ip;
		uint16_t port = c->nb_servers != 0 ? c->servers_port[i] : 0;

		inet_ntop(AF_INET, &addr, ip, sizeof(ip));
		off += (size_t)snprintf(out + off, cap - off, "%s%s", i == 0 ? "" : ",", ip);
		if (port != 0)
			off += (size_t)snprintf(out + off, cap - off, ":%u", port);
	}
}

int
bench_libkeymap_run(struct bench_phase *ph, struct bench_result *r, char *err, size_t errlen)
{
	const struct bench_conf *c = ph->conf;
	/* Every server as IP[:PORT], comma-separated: km_client_opts.host's seeds. */
	char host[BENCH_SERVERS_MAX * (INET_ADDRSTRLEN + 7)];
	struct km_client_opts opts = {0};
	struct km_client *cl = NULL;
	struct km_batch_op *ops = NULL;
	struct km_client_stats cs;
	struct bench_source src;
	struct bench_second sec = {.replies = 0, .timeouts = 0};
	struct bench_req q;
	uint64_t t0, now, end, next_tick;
	char *keys = NULL, *vals = NULL;
	size_t chunk, n, i;
	int rc, ret = -1, exhausted = 0;

	memset(r, 0, sizeof(*r));
	memset(&src, 0, sizeof(src));
	km_hist_init(&r->lat);
	km_hist_init(&r->lat_sent);
	km_hist_init(&sec.lat);
	libkm_hosts(c, host, sizeof(host));
	opts.host = host;
	opts.port = c->server_port;
	opts.timeout_ms = (unsigned int)(c->timeout_us / 1000 > 0 ? c->timeout_us / 1000 : 1);
	opts.window = c->inflight;
	opts.auth_key = c->has_key ? c->auth_key : NULL; /* cookies: libkeymap's own */
	chunk = (size_t)c->inflight * CHUNK_WINDOWS;
	if (chunk > CHUNK_MAX)
		chunk = CHUNK_MAX;
	ops = calloc(chunk, sizeof(*ops));
	keys = malloc(chunk * KM_KEY_MAX);
	vals = malloc(KM_CLIENT_VALUE_MAX);
	if (ops == NULL || keys == NULL || vals == NULL || bench_source_init(&src, ph, 1) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	memset(vals, 'v', KM_CLIENT_VALUE_MAX);
	rc = km_client_open(&opts, &cl);
	if (rc != 0) {
		snprintf(err, errlen, "libkeymap: %s", km_strerror(rc));
		goto out;
	}
	t0 = bench_now_ns();
	src.t0 = t0;
	end = t0 + (uint64_t)(ph->duration_s * 1e9);
	next_tick = t0 + 1000000000ull;
	/* A preload stops at its first lost key: that already fails it. */
	while (!bench_stop && !exhausted && (now = bench_now_ns()) < end &&
		!(ph->preload && r->failed > 0)) {
		for (n = 0; n < chunk; n++) {
			struct km_batch_op *o = &ops[n];

			if (bench_source_next(&src, now, &q) != 0) {
				exhausted = 1;
				break;
			}
			memset(o, 0, sizeof(*o));
			o->key = keys + n * KM_KEY_MAX;
			o->klen = bench_source_key(&src, q.key, keys + n * KM_KEY_MAX);
			o->op = q.op == KM_WL_GET
					? KM_BATCH_GET
					: (q.op == KM_WL_PUT ? KM_BATCH_PUT : KM_BATCH_DEL);
			o->val = vals;
			o->vlen = q.vlen;
			o->session = q.session; /* the trace's or the workload's, 0: none */
		}
		if (n == 0)
			break;
		rc = km_batch(cl, ops, n);
		if (rc < 0) {
			snprintf(err, errlen, "libkeymap batch: %s", km_strerror(rc));
			goto out;
		}
		now = bench_now_ns();
		for (i = 0; i < n; i++) {
			const struct km_batch_op *o = &ops[i];

			r->sent++;
			if (o->op == KM_BATCH_GET)
				r->gets++;
			else if (o->op == KM_BATCH_PUT)
				r->puts++;
			else
				r->dels++;
			if (o->err == KM_ERR_TIMEOUT) {
				/* Lost after every retry: one timeout per request, as the
				 * engine counts them. */
				r->timeouts++;
				sec.timeouts++;
				if (ph->preload)
					r->failed++;
				continue;
			}
			r->replies++;
			sec.replies++;
			km_hist_add(&r->lat, o->latency_ns);
			km_hist_add(&r->lat_sent, o->latency_ns);
			km_hist_add(&sec.lat, o->latency_ns);
			if (o->err == KM_OK && o->op == KM_BATCH_GET)
				r->hits++;
			else if (o->err == KM_ERR_NOT_FOUND && o->op == KM_BATCH_GET)
				r->misses++;
			else if (o->err != KM_OK && o->err != KM_ERR_NOT_FOUND)
				r->errors++;
		}
		if (now >= next_tick) {
			bench_second_close(ph, &sec, (double)(now - t0) / 1e9);
			next_tick += 1000000000ull;
		}
	}
	r->elapsed_s = (double)(bench_now_ns() - t0) / 1e9;
	if (ph->preload)
		r->failed += bench_source_left(&src); /* never tried */
	km_client_get_stats(cl, &cs);
	r->stray = cs.stray_replies;
	ret = 0;
out:
	km_client_close(cl);
	bench_source_fini(&src);
	free(ops);
	free(keys);
	free(vals);
	return ret;
}
