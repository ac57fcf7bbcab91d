/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymap-bench's options: one table says each option's name, letter, kind, range and
 * the field it sets; getopt's tables are built from it. Options with more to them
 * (addresses, names, --rate) have a case of their own.
 */

#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <km_predict.h>
#include <km_util.h>

#include "options.h"

#define DURATION_MAX         86400.0
#define LIBKEYMAP_WINDOW_MAX 4096 /* km_client_opts.window */

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: keymap-bench [options] [-- EAL arguments]\n"
		"Targets and transports:\n"
		"  -t, --target T         keymap (default), echo (keymapd --echo), memcached\n"
		"  -x, --transport X      eth (a DPDK port from the EAL arguments; the default "
		"when\n"
		"                         they are given), socket (kernel UDP), libkeymap "
		"(kernel,\n"
		"                         libkeymap's batch API; the default for keymap without "
		"EAL)\n"
		"  -s, --server IP[:PORT] server address (default 198.51.100.2, port 7070; 11211\n"
		"                         for memcached); libkeymap: several, the seeds of a\n"
		"                         cluster, as a list (-s A,B:7071) or repeated (-s A\n"
		"                         -s B:7071), at most 16\n"
		"      --src IP[:PORT]    eth: our address (default 198.51.100.3:40000)\n"
		"      --eth-port N       eth: DPDK port id (default 0)\n"
		"      --threads N        eth: generator lcores (default 1, at most 16), each\n"
		"                         with a queue pair of the port and UDP source port\n"
		"                         (--src's + lcore index); EAL needs N lcores (-l)\n"
		"      --key ID:HEX       keymap: client key (key id, 32 hex digits); every\n"
		"                         request carries its MAC, a SipHash the generator\n"
		"                         computes per request: fewer requests/s per core than\n"
		"                         without a key. (A server that requires cookies needs\n"
		"                         no option: eth and socket fetch one with HELLO at\n"
		"                         start, libkeymap when refused.)\n"
		"Workload:\n"
		"  -k, --keys N           distinct keys (default 100000)\n"
		"      --key-size B       bytes per key (default 16)\n"
		"  -v, --value-size B     bytes per value (default 64)\n"
		"  -g, --get-ratio R      share of GETs, 0..1 (default 0.9; the rest are PUTs)\n"
		"  -d, --dist D           uniform (default), zipf, hotset, scan, session\n"
		"      --theta T          zipf exponent (default 0.99)\n"
		"      --hot-fraction F   hotset: share of keys that are hot (default 0.01)\n"
		"      --hot-prob P       hotset: share of requests to hot keys (default 0.9)\n"
		"      --hot-move-at S    zipf, hotset: the hot keys move to other keys every S "
		"seconds (default never)\n"
		"      --fields N         scan/session: keys per entity (default 16)\n"
		"      --sessions N       session: concurrent sessions (default 64)\n"
		"      --seed N           random seed (default 1)\n"
		"      --no-preload       do not PUT every key before measuring\n"
		"      --trace FILE       replay a trace (docs/trace-format.md) instead\n"
		"      --trace-speed X    replay at X times the trace's pace (default 0: as fast\n"
		"                         as --inflight allows, in order)\n"
		"Load:\n"
		"  -c, --inflight N       closed loop: requests in flight (default 32)\n"
		"  -r, --rate R           open loop: requests per second, latency measured from\n"
		"                         when each request was due\n"
		"      --drop-refused     open loop: a request the transport refuses (ring or\n"
		"                         socket buffer full) is dropped and counted, not sent\n"
		"                         again\n"
		"      --check            check every reply against its request (echo: its key\n"
		"                         and value; a GET hit: the value keymap-bench writes);\n"
		"                         a wrong one fails the run (exit 2)\n"
		"  -D, --duration S       length of the measured phase in seconds (default 10)\n"
		"  -n, --requests N       stop after N requests\n"
		"      --timeout-us N     a request without reply after N us is lost (default\n"
		"                         200000)\n"
		"      --max-timeouts F   fail (exit 2) when more than this share of requests\n"
		"                         times out (default 0.01)\n"
		"Offline:\n"
		"      --simulate         with --trace and --cache: hit ratios of LRU and Belady\n"
		"      --cache LIST       cache sizes: entries or percent of distinct keys, e.g.\n"
		"                         1%%,10%%,5000\n"
		"      --prefetch         with --simulate: replay through lib/predict too and "
		"show\n"
		"                         hit ratios with prefetch off and on, accuracy, coverage\n"
		"      --prefetch-models L succ,coacc,entity,stride,template or all (default)\n"
		"      --prefetch-latency N  a prefetch completes N requests after issue (default\n"
		"                         32)\n"
		"      --prefetch-mem B   predictor memory cap in bytes (default 64 MiB)\n"
		"      --prefetch-unvisited  prefetched entries enter the cache unvisited (by\n"
		"                         default they enter visited: SIEVE's hand would take "
		"them\n"
		"                         first)\n"
		"      --prefetch-no-carry  no carry into the previous digit run at a wrap\n"
		"      --prefetch-no-aimd fixed scheduler threshold and budget\n"
		"      --gen-trace KIND   write a sessions, listing or timeseries trace to --out\n"
		"                         (-k keys, -n requests, --seed, -v value size)\n"
		"      --out FILE         the trace --gen-trace writes\n"
		"Output:\n"
		"      --label S          name of the run in the summary and JSON\n"
		"      --json FILE        summary and per-second figures as JSON\n"
		"      --csv FILE         per-second figures as CSV\n"
		"      --cdf FILE         latency CDF (latency_us fraction), for plots\n"
		"  -q, --quiet            no progress lines\n"
		"  -h, --help             this text\n");
}

enum {
	O_SRC = 256,
	O_ETH_PORT,
	O_THREADS,
	O_KEY_SIZE,
	O_THETA,
	O_HOT_FRACTION,
	O_HOT_PROB,
	O_HOT_MOVE_AT,
	O_FIELDS,
	O_SESSIONS,
	O_SEED,
	O_NO_PRELOAD,
	O_TRACE,
	O_TRACE_SPEED,
	O_TIMEOUT_US,
	O_DROP_REFUSED,
	O_CHECK,
	O_MAX_TIMEOUTS,
	O_KEY,
	O_SIMULATE,
	O_CACHE,
	O_PREFETCH,
	O_PREFETCH_MODELS,
	O_PREFETCH_LATENCY,
	O_PREFETCH_MEM,
	O_PREFETCH_VISITED,
	O_PREFETCH_NO_CARRY,
	O_PREFETCH_NO_AIMD,
	O_GEN_TRACE,
	O_OUT,
	O_LABEL,
	O_JSON,
	O_CSV,
	O_CDF,
};

enum opt_kind {
	K_UNUM,   /* unsigned integer in [umin, umax] into the field (2, 4 or 8 bytes) */
	K_DNUM,   /* number in [dmin, dmax] into the double field */
	K_STR,    /* the argument itself into the const char * field */
	K_ON,     /* no argument: the int field = 1 */
	K_OFF,    /* no argument: the int field = 0 */
	K_OTHER,  /* its own case in opt_other() */
	K_OTHER0, /* the same, without an argument */
};

struct opt_desc {
	const char *name;
	int val; /* short option letter, or O_* */
	enum opt_kind kind;
	size_t off, size; /* the field in struct bench_conf */
	uint64_t umin, umax;
	double dmin, dmax;
};

#define FIELD(f) offsetof(struct bench_conf, f), sizeof(((struct bench_conf *)NULL)->f)
#define UNUM(name, val, f, lo, hi)                        \
	{                                                 \
		name, val, K_UNUM, FIELD(f), lo, hi, 0, 0 \
	}
#define DNUM(name, val, f, lo, hi)                        \
	{                                                 \
		name, val, K_DNUM, FIELD(f), 0, 0, lo, hi \
	}
#define FLAG(name, val, kind, f)                      \
	{                                             \
		name, val, kind, FIELD(f), 0, 0, 0, 0 \
	}
#define OTHER(name, val)                             \
	{                                            \
		name, val, K_OTHER, 0, 0, 0, 0, 0, 0 \
	}
#define OTHER0(name, val)                             \
	{                                             \
		name, val, K_OTHER0, 0, 0, 0, 0, 0, 0 \
	}

static const struct opt_desc opts[] = {
	OTHER("target", 't'),
	OTHER("transport", 'x'),
	OTHER("server", 's'),
	OTHER("src", O_SRC),
	UNUM("eth-port", O_ETH_PORT, eth_port, 0, 1023),
	UNUM("threads", O_THREADS, threads, 1, BENCH_GEN_MAX),
	UNUM("keys", 'k', wl.nb_keys, 1, UINT32_MAX),
	UNUM("key-size", O_KEY_SIZE, wl.key_size, 1, KM_KEY_MAX),
	UNUM("value-size", 'v', value_size, 0, BENCH_PAYLOAD_MAX),
	DNUM("get-ratio", 'g', wl.get_ratio, 0, 1),
	OTHER("dist", 'd'),
	DNUM("theta", O_THETA, wl.zipf_theta, 1e-6, 100),
	DNUM("hot-fraction", O_HOT_FRACTION, wl.hot_fraction, 1e-9, 0.999999),
	DNUM("hot-prob", O_HOT_PROB, wl.hot_prob, 0, 1),
	OTHER("hot-move-at", O_HOT_MOVE_AT),
	UNUM("fields", O_FIELDS, wl.fields, 1, 1 << 20),
	UNUM("sessions", O_SESSIONS, wl.sessions, 1, 1 << 20),
	UNUM("seed", O_SEED, wl.seed, 0, UINT64_MAX),
	FLAG("no-preload", O_NO_PRELOAD, K_OFF, preload),
	FLAG("trace", O_TRACE, K_STR, trace_path),
	DNUM("trace-speed", O_TRACE_SPEED, trace_speed, 0, 1e6),
	UNUM("inflight", 'c', inflight, 1, 65536),
	OTHER("rate", 'r'),
	FLAG("drop-refused", O_DROP_REFUSED, K_ON, drop_refused),
	FLAG("check", O_CHECK, K_ON, check),
	DNUM("duration", 'D', duration_s, 0.001, DURATION_MAX),
	UNUM("requests", 'n', max_requests, 1, UINT64_MAX),
	UNUM("timeout-us", O_TIMEOUT_US, timeout_us, 10, 60000000),
	DNUM("max-timeouts", O_MAX_TIMEOUTS, max_timeout_ratio, 0, 1),
	OTHER("key", O_KEY),
	OTHER0("simulate", O_SIMULATE),
	OTHER("cache", O_CACHE),
	OTHER0("prefetch", O_PREFETCH),
	OTHER("prefetch-models", O_PREFETCH_MODELS),
	OTHER("prefetch-latency", O_PREFETCH_LATENCY),
	OTHER("prefetch-mem", O_PREFETCH_MEM),
	OTHER0("prefetch-unvisited", O_PREFETCH_VISITED),
	OTHER0("prefetch-no-carry", O_PREFETCH_NO_CARRY),
	OTHER0("prefetch-no-aimd", O_PREFETCH_NO_AIMD),
	OTHER("gen-trace", O_GEN_TRACE),
	OTHER("out", O_OUT),
	FLAG("label", O_LABEL, K_STR, label),
	FLAG("json", O_JSON, K_STR, json_path),
	FLAG("csv", O_CSV, K_STR, csv_path),
	FLAG("cdf", O_CDF, K_STR, cdf_path),
	FLAG("quiet", 'q', K_ON, quiet),
	OTHER0("help", 'h'),
};

#define NB_OPTS (sizeof(opts) / sizeof(opts[0]))

/* Whole-string numbers in a range; the message names the option. */
static int
opt_u64(const char *name, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	if (km_util_parse_u64(s, min, max, out) < 0) {
		fprintf(stderr,
			"keymap-bench: --%s '%s': expected an integer in %" PRIu64 "..%" PRIu64
			"\n",
			name, s, min, max);
		return -1;
	}
	return 0;
}

static int
opt_double(const char *name, const char *s, double min, double max, double *out)
{
	if (km_util_parse_double(s, min, max, out) < 0) {
		fprintf(stderr, "keymap-bench: --%s '%s': expected a number in %g..%g\n", name, s,
			min, max);
		return -1;
	}
	return 0;
}

/* "IP" or "IP:PORT". */
static int
opt_addr(const char *name, const char *s, uint32_t *ip, uint16_t *port, int *port_set)
{
	char buf[64];
	const char *colon = strchr(s, ':');
	uint64_t p;
	size_t n = colon != NULL ? (size_t)(colon - s) : strlen(s);
	struct in_addr a;

	if (n >= sizeof(buf))
		goto bad;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, &a) != 1)
		goto bad;
	*ip = a.s_addr;
	if (colon != NULL) {
		if (opt_u64(name, colon + 1, 1, 65535, &p) < 0)
			return -1;
		*port = (uint16_t)p;
		if (port_set != NULL)
			*port_set = 1;
	}
	return 0;
bad:
	fprintf(stderr, "keymap-bench: --%s '%s': expected IPv4[:PORT]\n", name, s);
	return -1;
}

/* -s: one server or a comma-separated list, appended to c's servers; the first one is
 * also server_ip (and server_port when it has one). @return 0 or -1 after saying why. */
static int
opt_servers(const char *s, struct bench_conf *c, int *port_set)
{
	char item[64];
	const char *end;
	size_t n;

	for (;;) {
		end = strchr(s, ',');
		n = end != NULL ? (size_t)(end - s) : strlen(s);
		if (n == 0 || n >= sizeof(item)) {
			fprintf(stderr,
				"keymap-bench: --server: expected IPv4[:PORT][,IPv4[:PORT]...]\n");
			return -1;
		}
		if (c->nb_servers == BENCH_SERVERS_MAX) {
			fprintf(stderr, "keymap-bench: --server: at most %d servers\n",
				BENCH_SERVERS_MAX);
			return -1;
		}
		memcpy(item, s, n);
		item[n] = '\0';
		c->servers_port[c->nb_servers] = 0;
		if (opt_addr("server", item, &c->servers_ip[c->nb_servers],
			    &c->servers_port[c->nb_servers], NULL) < 0)
			return -1;
		if (c->nb_servers == 0) {
			c->server_ip = c->servers_ip[0];
			if (c->servers_port[0] != 0) {
				c->server_port = c->servers_port[0];
				*port_set = 1;
			}
		}
		c->nb_servers++;
		if (end == NULL)
			return 0;
		s = end + 1;
	}
}

/* Store an option of the table into c. @return 0 or -1 after saying why. */
static int
opt_table(const struct opt_desc *d, const char *arg, struct bench_conf *c)
{
	char *field = (char *)c + d->off;
	uint64_t u;
	double v;
	int one = d->kind == K_ON;

	switch (d->kind) {
	case K_UNUM:
		if (opt_u64(d->name, arg, d->umin, d->umax, &u) < 0)
			return -1;
		if (d->size == sizeof(uint16_t))
			*(uint16_t *)field = (uint16_t)u;
		else if (d->size == sizeof(uint32_t))
			*(uint32_t *)field = (uint32_t)u;
		else
			*(uint64_t *)field = u;
		return 0;
	case K_DNUM:
		if (opt_double(d->name, arg, d->dmin, d->dmax, &v) < 0)
			return -1;
		memcpy(field, &v, sizeof(v));
		return 0;
	case K_STR:
		memcpy(field, &arg, sizeof(arg));
		return 0;
	case K_ON:
	case K_OFF:
		memcpy(field, &one, sizeof(one));
		return 0;
	default:
		return -1;
	}
}

/* The options with more to them than a field. @return -1 to go on, else the exit status. */
static int
opt_other(int val, const char *arg, struct bench_cli *cli, int *xport_set, int *port_set)
{
	struct bench_conf *c = &cli->c;
	double d;

	switch (val) {
	case 't':
		if (km_tgt_parse_name(arg, &c->target) < 0) {
			fprintf(stderr,
				"keymap-bench: --target '%s': expected keymap, echo or memcached\n",
				arg);
			return EXIT_USAGE;
		}
		return -1;
	case 'x':
		if (strcmp(arg, "eth") == 0)
			c->xport = BENCH_X_ETH;
		else if (strcmp(arg, "socket") == 0)
			c->xport = BENCH_X_SOCKET;
		else if (strcmp(arg, "libkeymap") == 0)
			c->xport = BENCH_X_LIBKEYMAP;
		else {
			fprintf(stderr,
				"keymap-bench: --transport '%s': expected eth, socket or "
				"libkeymap\n",
				arg);
			return EXIT_USAGE;
		}
		*xport_set = 1;
		return -1;
	case 's':
		return opt_servers(arg, c, port_set) < 0 ? EXIT_USAGE : -1;
	case O_SRC:
		return opt_addr("src", arg, &c->src_ip, &c->src_port, NULL) < 0 ? EXIT_USAGE : -1;
	case 'd':
		if (km_wl_dist_parse(arg, &c->wl.dist) < 0) {
			fprintf(stderr,
				"keymap-bench: --dist '%s': expected uniform, zipf, hotset, scan "
				"or "
				"session\n",
				arg);
			return EXIT_USAGE;
		}
		return -1;
	case O_HOT_MOVE_AT:
		if (opt_double("hot-move-at", arg, 0.000001, DURATION_MAX, &d) < 0)
			return EXIT_USAGE;
		c->hot_move_us = (uint64_t)(d * 1e6);
		return -1;
	case 'r':
		if (opt_double("rate", arg, 0, 1e9, &c->rate) < 0)
			return EXIT_USAGE;
		if (c->rate <= 0) {
			fprintf(stderr, "keymap-bench: --rate must be > 0 requests/s (leave it out "
					"for a closed loop)\n");
			return EXIT_USAGE;
		}
		if (c->rate < 1) {
			fprintf(stderr, "keymap-bench: --rate must be at least 1 request/s\n");
			return EXIT_USAGE;
		}
		return -1;
	case O_KEY:
		if (km_key_parse(arg, &c->key_id, c->key) != 0) {
			fprintf(stderr,
				"keymap-bench: --key: expected ID:HEX, a key id 1..%u and 32 hex "
				"digits\n",
				UINT32_MAX);
			return EXIT_USAGE;
		}
		c->auth_key = arg;
		c->has_key = 1;
		return -1;
	case O_SIMULATE:
		cli->simulate = 1;
		return -1;
	case O_CACHE:
		cli->cache_list = arg;
		return -1;
	case O_PREFETCH:
		cli->pf.enabled = 1;
		return -1;
	case O_PREFETCH_MODELS:
		if (km_predict_models_parse(arg, &cli->pf.models) < 0 || cli->pf.models == 0) {
			fprintf(stderr,
				"keymap-bench: --prefetch-models '%s': expected a list of "
				"succ, coacc, entity, stride, template, or all\n",
				arg);
			return EXIT_USAGE;
		}
		return -1;
	case O_PREFETCH_LATENCY: {
		uint64_t v;

		if (opt_u64("prefetch-latency", arg, 0, 1 << 20, &v) < 0)
			return EXIT_USAGE;
		cli->pf.latency = (uint32_t)v;
		return -1;
	}
	case O_PREFETCH_MEM:
		return opt_u64("prefetch-mem", arg, KM_PREDICT_MEM_MIN, 1ULL << 40,
			       &cli->pf.mem_bytes) < 0
			       ? EXIT_USAGE
			       : -1;
	case O_PREFETCH_VISITED:
		cli->pf.visited = 0;
		return -1;
	case O_PREFETCH_NO_CARRY:
		cli->pf.no_carry = 1;
		return -1;
	case O_PREFETCH_NO_AIMD:
		cli->pf.no_aimd = 1;
		return -1;
	case O_GEN_TRACE:
		cli->pf.gen = arg;
		return -1;
	case O_OUT:
		cli->pf.out = arg;
		return -1;
	case 'h':
		usage(stdout);
		return 0;
	default:
		usage(stderr);
		return EXIT_USAGE;
	}
}

static void
conf_defaults(struct bench_conf *c)
{
	struct in_addr a;

	*c = (struct bench_conf){
		.target = KM_TGT_KEYMAP,
		.xport = BENCH_X_LIBKEYMAP,
		.server_port = 7070,
		.src_port = 40000,
		.threads = 1,
		.wl =
			{
				.nb_keys = 100000,
				.key_size = 16,
				.get_ratio = 0.9,
				.dist = KM_WL_UNIFORM,
				.zipf_theta = 0.99,
				.hot_fraction = 0.01,
				.hot_prob = 0.9,
				.fields = 16,
				.sessions = 64,
				.seed = 1,
			},
		.value_size = 64,
		.preload = 1,
		.inflight = 32,
		.duration_s = 10,
		.timeout_us = 200000,
		.max_timeout_ratio = 0.01,
		.label = "run",
	};
	inet_pton(AF_INET, "198.51.100.2", &a);
	c->server_ip = a.s_addr;
	inet_pton(AF_INET, "198.51.100.3", &a);
	c->src_ip = a.s_addr;
}

/* The transport, chosen when not given, and the combinations that cannot work.
 * @return -1 to go on, else the exit status. */
static int
check_transport(struct bench_conf *c, int eal, int xport_set)
{
	if (!xport_set)
		c->xport = eal ? BENCH_X_ETH
			       : (c->target == KM_TGT_KEYMAP ? BENCH_X_LIBKEYMAP : BENCH_X_SOCKET);
	if (eal && c->xport != BENCH_X_ETH) {
		fprintf(stderr, "keymap-bench: EAL arguments after -- are only for --transport "
				"eth\n");
		return EXIT_USAGE;
	}
	if (c->xport == BENCH_X_ETH && !eal) {
		fprintf(stderr, "keymap-bench: --transport eth needs EAL arguments after --, e.g. "
				"-- --no-huge --no-pci --vdev net_memif0,role=client\n");
		return EXIT_USAGE;
	}
	if (c->threads > 1 && c->xport != BENCH_X_ETH) {
		fprintf(stderr, "keymap-bench: --threads is for --transport eth (a queue pair "
				"per generator lcore)\n");
		return EXIT_USAGE;
	}
	if (c->threads > 1 && c->trace_path != NULL) {
		fprintf(stderr, "keymap-bench: --threads: a trace is replayed in order, by one "
				"lcore\n");
		return EXIT_USAGE;
	}
	if ((uint32_t)c->src_port + c->threads - 1 > UINT16_MAX) {
		fprintf(stderr,
			"keymap-bench: --threads %u from source port %u: the ports pass 65535\n",
			c->threads, c->src_port);
		return EXIT_USAGE;
	}
	if (c->xport != BENCH_X_LIBKEYMAP && c->nb_servers > 1) {
		fprintf(stderr, "keymap-bench: several servers need --transport libkeymap (eth "
				"and socket talk to one)\n");
		return EXIT_USAGE;
	}
	if (c->xport != BENCH_X_LIBKEYMAP)
		return -1;
	if (c->target != KM_TGT_KEYMAP) {
		fprintf(stderr,
			"keymap-bench: --transport libkeymap speaks only to keymap targets; use "
			"socket for %s\n",
			km_tgt_name(c->target));
		return EXIT_USAGE;
	}
	if (c->inflight > LIBKEYMAP_WINDOW_MAX) {
		fprintf(stderr,
			"keymap-bench: --inflight %u: libkeymap keeps at most %d requests in "
			"flight\n",
			c->inflight, LIBKEYMAP_WINDOW_MAX);
		return EXIT_USAGE;
	}
	if (c->rate > 0) {
		fprintf(stderr, "keymap-bench: libkeymap runs a closed loop: --rate needs "
				"--transport socket or eth\n");
		return EXIT_USAGE;
	}
	if (c->check) {
		fprintf(stderr, "keymap-bench: --check needs --transport socket or eth (libkeymap "
				"checks its replies itself)\n");
		return EXIT_USAGE;
	}
	return -1;
}

/* Pace, trace and target defaults. @return -1 to go on, else the exit status. */
static int
check_load(struct bench_conf *c, int port_set)
{
	if (c->trace_speed > 0 && c->trace_path == NULL) {
		fprintf(stderr, "keymap-bench: --trace-speed needs --trace\n");
		return EXIT_USAGE;
	}
	if (c->trace_path != NULL && c->rate > 0) {
		fprintf(stderr, "keymap-bench: a trace sets its own pace: use --trace-speed, not "
				"--rate\n");
		return EXIT_USAGE;
	}
	if (c->xport == BENCH_X_LIBKEYMAP && c->trace_speed > 0) {
		fprintf(stderr, "keymap-bench: --trace-speed needs --transport socket or eth "
				"(libkeymap runs a closed loop)\n");
		return EXIT_USAGE;
	}
	if (c->has_key && c->target != KM_TGT_KEYMAP) {
		fprintf(stderr, "keymap-bench: --key is for the keymap target\n");
		return EXIT_USAGE;
	}
	if (c->hot_move_us != 0 && (c->trace_path != NULL || (c->wl.dist != KM_WL_ZIPF &&
								     c->wl.dist != KM_WL_HOTSET))) {
		fprintf(stderr, "keymap-bench: --hot-move-at is for --dist zipf or hotset\n");
		return EXIT_USAGE;
	}
	if (c->drop_refused && c->rate <= 0) {
		fprintf(stderr, "keymap-bench: --drop-refused is for an open loop (--rate)\n");
		return EXIT_USAGE;
	}
	if (c->target == KM_TGT_MEMCACHED && !port_set)
		c->server_port = 11211;
	/* Echo has nothing to preload. */
	if (c->target == KM_TGT_ECHO)
		c->preload = 0;
	return -1;
}

int
bench_options_parse(int argc, char **argv, struct bench_cli *cli)
{
	struct option lo[NB_OPTS + 1];
	char shortopts[2 * NB_OPTS + 1];
	int opt, rc, xport_set = 0, port_set = 0;
	size_t i, n = 0;

	memset(cli, 0, sizeof(*cli));
	conf_defaults(&cli->c);
	cli->pf.models = KM_PREDICT_ALL;
	cli->pf.latency = BENCH_PREFETCH_LATENCY_DEFAULT;
	cli->pf.visited = 1;
	for (i = 0; i < NB_OPTS; i++) {
		int has_arg =
			opts[i].kind != K_ON && opts[i].kind != K_OFF && opts[i].kind != K_OTHER0;

		lo[i] = (struct option){
			opts[i].name, has_arg ? required_argument : no_argument, NULL, opts[i].val};
		if (opts[i].val < 256) {
			shortopts[n++] = (char)opts[i].val;
			if (has_arg)
				shortopts[n++] = ':';
		}
	}
	lo[NB_OPTS] = (struct option){NULL, 0, NULL, 0};
	shortopts[n] = '\0';

	while ((opt = getopt_long(argc, argv, shortopts, lo, NULL)) != -1) {
		for (i = 0; i < NB_OPTS && opts[i].val != opt; i++)
			;
		if (i < NB_OPTS && opts[i].kind != K_OTHER && opts[i].kind != K_OTHER0) {
			if (opt_table(&opts[i], optarg, &cli->c) < 0)
				return EXIT_USAGE;
			continue;
		}
		rc = opt_other(opt, optarg, cli, &xport_set, &port_set);
		if (rc >= 0)
			return rc;
	}
	/* EAL arguments only after "--": a stray word is a mistake, not an EAL argument. */
	if (optind < argc && strcmp(argv[optind - 1], "--") != 0) {
		fprintf(stderr,
			"keymap-bench: unexpected argument '%s' (EAL arguments go after --)\n",
			argv[optind]);
		return EXIT_USAGE;
	}
	cli->eal = optind < argc;
	cli->eal_first = optind;

	/* Offline modes: no network at all. */
	if (cli->pf.gen != NULL || cli->pf.out != NULL) {
		if (cli->pf.gen == NULL || cli->pf.out == NULL) {
			fprintf(stderr,
				"keymap-bench: --gen-trace KIND and --out FILE go together\n");
			return EXIT_USAGE;
		}
		return -1;
	}
	if (cli->pf.enabled && !cli->simulate) {
		fprintf(stderr, "keymap-bench: --prefetch is for --simulate\n");
		return EXIT_USAGE;
	}
	if (cli->simulate) {
		if (cli->c.trace_path == NULL || cli->cache_list == NULL) {
			fprintf(stderr, "keymap-bench: --simulate needs --trace FILE and --cache "
					"SIZES\n");
			return EXIT_USAGE;
		}
		return -1;
	}
	if (cli->cache_list != NULL) {
		fprintf(stderr, "keymap-bench: --cache is for --simulate\n");
		return EXIT_USAGE;
	}
	rc = check_transport(&cli->c, cli->eal, xport_set);
	if (rc >= 0)
		return rc;
	return check_load(&cli->c, port_set);
}

/* --cache "1%,10%,5000" against a trace with nb_keys distinct keys. */
int
bench_cache_sizes(const char *s, size_t nb_keys, uint64_t *sizes, size_t *n)
{
	char buf[256], *tok, *save = NULL;
	double pct;
	uint64_t v;
	size_t len;

	*n = 0;
	if (strlen(s) >= sizeof(buf))
		goto bad;
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (*n == CACHE_SIZES_MAX)
			goto bad;
		len = strlen(tok);
		if (len > 1 && tok[len - 1] == '%') {
			tok[len - 1] = '\0';
			if (opt_double("cache", tok, 0.0001, 100, &pct) < 0)
				return -1;
			v = (uint64_t)(pct / 100.0 * (double)nb_keys);
			sizes[(*n)++] = v == 0 ? 1 : v;
		} else {
			if (opt_u64("cache", tok, 1, UINT32_MAX, &v) < 0)
				return -1;
			sizes[(*n)++] = v;
		}
	}
	if (*n > 0)
		return 0;
bad:
	fprintf(stderr,
		"keymap-bench: --cache '%s': expected up to %d sizes, entries or percent, e.g. "
		"1%%,10%%\n",
		s, CACHE_SIZES_MAX);
	return -1;
}
