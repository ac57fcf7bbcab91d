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

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>

#include <km_cachesim.h>
#include <km_proto.h>
#include <km_util.h>

#include "bench.h"
#include "report.h"

#define EXIT_USAGE           1
#define EXIT_FAILED          2
#define DURATION_MAX         86400.0
#define CACHE_SIZES_MAX      16
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
		"                         for memcached)\n"
		"      --src IP[:PORT]    eth: our address (default 198.51.100.3:40000)\n"
		"      --eth-port N       eth: DPDK port id (default 0)\n"
		"Workload:\n"
		"  -k, --keys N           distinct keys (default 100000)\n"
		"      --key-size B       bytes per key (default 16)\n"
		"  -v, --value-size B     bytes per value (default 64)\n"
		"  -g, --get-ratio R      share of GETs, 0..1 (default 0.9; the rest are PUTs)\n"
		"  -d, --dist D           uniform (default), zipf, hotset, scan, session\n"
		"      --theta T          zipf exponent (default 0.99)\n"
		"      --hot-fraction F   hotset: share of keys that are hot (default 0.01)\n"
		"      --hot-prob P       hotset: share of requests to hot keys (default 0.9)\n"
		"      --hot-move-at S    hotset: the hot set moves after S seconds (default "
		"never)\n"
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
	O_MAX_TIMEOUTS,
	O_SIMULATE,
	O_CACHE,
	O_LABEL,
	O_JSON,
	O_CSV,
	O_CDF,
};

static const struct option longopts[] = {
	{"target", required_argument, NULL, 't'},
	{"transport", required_argument, NULL, 'x'},
	{"server", required_argument, NULL, 's'},
	{"src", required_argument, NULL, O_SRC},
	{"eth-port", required_argument, NULL, O_ETH_PORT},
	{"keys", required_argument, NULL, 'k'},
	{"key-size", required_argument, NULL, O_KEY_SIZE},
	{"value-size", required_argument, NULL, 'v'},
	{"get-ratio", required_argument, NULL, 'g'},
	{"dist", required_argument, NULL, 'd'},
	{"theta", required_argument, NULL, O_THETA},
	{"hot-fraction", required_argument, NULL, O_HOT_FRACTION},
	{"hot-prob", required_argument, NULL, O_HOT_PROB},
	{"hot-move-at", required_argument, NULL, O_HOT_MOVE_AT},
	{"fields", required_argument, NULL, O_FIELDS},
	{"sessions", required_argument, NULL, O_SESSIONS},
	{"seed", required_argument, NULL, O_SEED},
	{"no-preload", no_argument, NULL, O_NO_PRELOAD},
	{"trace", required_argument, NULL, O_TRACE},
	{"trace-speed", required_argument, NULL, O_TRACE_SPEED},
	{"inflight", required_argument, NULL, 'c'},
	{"rate", required_argument, NULL, 'r'},
	{"duration", required_argument, NULL, 'D'},
	{"requests", required_argument, NULL, 'n'},
	{"timeout-us", required_argument, NULL, O_TIMEOUT_US},
	{"max-timeouts", required_argument, NULL, O_MAX_TIMEOUTS},
	{"simulate", no_argument, NULL, O_SIMULATE},
	{"cache", required_argument, NULL, O_CACHE},
	{"label", required_argument, NULL, O_LABEL},
	{"json", required_argument, NULL, O_JSON},
	{"csv", required_argument, NULL, O_CSV},
	{"cdf", required_argument, NULL, O_CDF},
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static void
on_signal(int sig)
{
	(void)sig;
	bench_stop = 1;
}

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

/* --cache "1%,10%,5000" against a trace with nb_keys distinct keys. */
static int
parse_cache_sizes(const char *s, size_t nb_keys, uint64_t *sizes, size_t *n)
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
	if (parse_cache_sizes(cache_list, t->nb_keys, sizes, &n) < 0) {
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

/* Every key with its largest value must fit the target's datagram. */
static int
check_trace_sizes(const struct bench_conf *c, const struct km_trace *t)
{
	size_t i;

	for (i = 0; i < t->nb_recs; i++) {
		const struct km_trace_rec *r = &t->recs[i];
		const struct km_trace_key *k = &t->keys[r->key_id];
		uint32_t v = r->op == KM_WL_PUT ? r->value_size : k->first_value_size;

		if (v > km_tgt_value_max(c->target, k->len)) {
			fprintf(stderr,
				"keymap-bench: %s: record %zu: key '%.*s' with a %u-byte value "
				"does not fit one %s request (at most %zu bytes)\n",
				c->trace_path, i + 1, (int)k->len, k->key, v,
				km_tgt_name(c->target), km_tgt_value_max(c->target, k->len));
			return -1;
		}
	}
	return 0;
}

static int
run_phase(struct bench_xport *x, struct bench_phase *ph, struct bench_result *r)
{
	char err[256];

	if (ph->conf->xport == BENCH_X_LIBKEYMAP) {
		if (bench_libkeymap_run(ph, r, err, sizeof(err)) < 0) {
			fprintf(stderr, "keymap-bench: %s: %s\n", ph->name, err);
			return -1;
		}
		return 0;
	}
	if (bench_engine_run(x, ph, r) < 0) {
		fprintf(stderr, "keymap-bench: %s: out of memory\n", ph->name);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct bench_conf c = {
		.target = KM_TGT_KEYMAP,
		.xport = BENCH_X_LIBKEYMAP,
		.server_port = 7070,
		.src_port = 40000,
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
	};
	const char *cache_list = NULL;
	int opt, xport_set = 0, port_set = 0, simulate_mode = 0, eal = 0, eal_ok = 0, rc;
	int ret = EXIT_FAILED, out_err = 0;
	uint64_t lost;
	struct bench_xport *x = NULL;
	struct km_trace *trace = NULL;
	struct km_wl *wl = NULL;
	struct bench_result pre, res;
	struct bench_phase ph;
	char err[512], workload[256];
	uint64_t u;
	double d;
	struct in_addr a;

	inet_pton(AF_INET, "198.51.100.2", &a);
	c.server_ip = a.s_addr;
	inet_pton(AF_INET, "198.51.100.3", &a);
	c.src_ip = a.s_addr;
	c.label = "run";

	while ((opt = getopt_long(argc, argv, "t:x:s:k:v:g:d:c:r:D:n:qh", longopts, NULL)) != -1) {
		switch (opt) {
		case 't':
			if (km_tgt_parse_name(optarg, &c.target) < 0) {
				fprintf(stderr,
					"keymap-bench: --target '%s': expected keymap, echo or "
					"memcached\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case 'x':
			if (strcmp(optarg, "eth") == 0)
				c.xport = BENCH_X_ETH;
			else if (strcmp(optarg, "socket") == 0)
				c.xport = BENCH_X_SOCKET;
			else if (strcmp(optarg, "libkeymap") == 0)
				c.xport = BENCH_X_LIBKEYMAP;
			else {
				fprintf(stderr,
					"keymap-bench: --transport '%s': expected eth, socket or "
					"libkeymap\n",
					optarg);
				return EXIT_USAGE;
			}
			xport_set = 1;
			break;
		case 's':
			if (opt_addr("server", optarg, &c.server_ip, &c.server_port, &port_set) < 0)
				return EXIT_USAGE;
			break;
		case O_SRC:
			if (opt_addr("src", optarg, &c.src_ip, &c.src_port, NULL) < 0)
				return EXIT_USAGE;
			break;
		case O_ETH_PORT:
			if (opt_u64("eth-port", optarg, 0, 1023, &u) < 0)
				return EXIT_USAGE;
			c.eth_port = (uint16_t)u;
			break;
		case 'k':
			if (opt_u64("keys", optarg, 1, UINT32_MAX, &c.wl.nb_keys) < 0)
				return EXIT_USAGE;
			break;
		case O_KEY_SIZE:
			if (opt_u64("key-size", optarg, 1, KM_KEY_MAX, &u) < 0)
				return EXIT_USAGE;
			c.wl.key_size = (unsigned int)u;
			break;
		case 'v':
			if (opt_u64("value-size", optarg, 0, BENCH_PAYLOAD_MAX, &u) < 0)
				return EXIT_USAGE;
			c.value_size = (uint32_t)u;
			break;
		case 'g':
			if (opt_double("get-ratio", optarg, 0, 1, &c.wl.get_ratio) < 0)
				return EXIT_USAGE;
			break;
		case 'd':
			if (km_wl_dist_parse(optarg, &c.wl.dist) < 0) {
				fprintf(stderr,
					"keymap-bench: --dist '%s': expected uniform, zipf, "
					"hotset, "
					"scan or session\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case O_THETA:
			if (opt_double("theta", optarg, 1e-6, 100, &c.wl.zipf_theta) < 0)
				return EXIT_USAGE;
			break;
		case O_HOT_FRACTION:
			if (opt_double("hot-fraction", optarg, 1e-9, 0.999999, &c.wl.hot_fraction) <
				0)
				return EXIT_USAGE;
			break;
		case O_HOT_PROB:
			if (opt_double("hot-prob", optarg, 0, 1, &c.wl.hot_prob) < 0)
				return EXIT_USAGE;
			break;
		case O_HOT_MOVE_AT:
			if (opt_double("hot-move-at", optarg, 0.000001, DURATION_MAX, &d) < 0)
				return EXIT_USAGE;
			c.wl.hot_move_at_us = (uint64_t)(d * 1e6);
			break;
		case O_FIELDS:
			if (opt_u64("fields", optarg, 1, 1 << 20, &u) < 0)
				return EXIT_USAGE;
			c.wl.fields = (uint32_t)u;
			break;
		case O_SESSIONS:
			if (opt_u64("sessions", optarg, 1, 1 << 20, &u) < 0)
				return EXIT_USAGE;
			c.wl.sessions = (uint32_t)u;
			break;
		case O_SEED:
			if (opt_u64("seed", optarg, 0, UINT64_MAX, &c.wl.seed) < 0)
				return EXIT_USAGE;
			break;
		case O_NO_PRELOAD:
			c.preload = 0;
			break;
		case O_TRACE:
			c.trace_path = optarg;
			break;
		case O_TRACE_SPEED:
			if (opt_double("trace-speed", optarg, 0, 1e6, &c.trace_speed) < 0)
				return EXIT_USAGE;
			break;
		case 'c':
			if (opt_u64("inflight", optarg, 1, 65536, &u) < 0)
				return EXIT_USAGE;
			c.inflight = (uint32_t)u;
			break;
		case 'r':
			if (opt_double("rate", optarg, 0, 1e9, &c.rate) < 0)
				return EXIT_USAGE;
			if (c.rate <= 0) {
				fprintf(stderr,
					"keymap-bench: --rate must be > 0 requests/s (leave it "
					"out for a closed loop)\n");
				return EXIT_USAGE;
			}
			if (c.rate < 1) {
				fprintf(stderr,
					"keymap-bench: --rate must be at least 1 request/s\n");
				return EXIT_USAGE;
			}
			break;
		case 'D':
			if (opt_double("duration", optarg, 0.001, DURATION_MAX, &c.duration_s) < 0)
				return EXIT_USAGE;
			break;
		case 'n':
			if (opt_u64("requests", optarg, 1, UINT64_MAX, &c.max_requests) < 0)
				return EXIT_USAGE;
			break;
		case O_TIMEOUT_US:
			if (opt_u64("timeout-us", optarg, 10, 60000000, &c.timeout_us) < 0)
				return EXIT_USAGE;
			break;
		case O_MAX_TIMEOUTS:
			if (opt_double("max-timeouts", optarg, 0, 1, &c.max_timeout_ratio) < 0)
				return EXIT_USAGE;
			break;
		case O_SIMULATE:
			simulate_mode = 1;
			break;
		case O_CACHE:
			cache_list = optarg;
			break;
		case O_LABEL:
			c.label = optarg;
			break;
		case O_JSON:
			c.json_path = optarg;
			break;
		case O_CSV:
			c.csv_path = optarg;
			break;
		case O_CDF:
			c.cdf_path = optarg;
			break;
		case 'q':
			c.quiet = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	/* EAL arguments only after "--": a stray word is a mistake, not an EAL argument. */
	if (optind < argc && strcmp(argv[optind - 1], "--") != 0) {
		fprintf(stderr,
			"keymap-bench: unexpected argument '%s' (EAL arguments go after "
			"--)\n",
			argv[optind]);
		return EXIT_USAGE;
	}
	eal = optind < argc;

	/* Offline mode: no network at all. */
	if (simulate_mode) {
		if (c.trace_path == NULL || cache_list == NULL) {
			fprintf(stderr, "keymap-bench: --simulate needs --trace FILE and --cache "
					"SIZES\n");
			return EXIT_USAGE;
		}
		return simulate(&c, cache_list);
	}
	if (cache_list != NULL) {
		fprintf(stderr, "keymap-bench: --cache is for --simulate\n");
		return EXIT_USAGE;
	}

	/* Choose and check the transport. */
	if (!xport_set)
		c.xport = eal ? BENCH_X_ETH
			      : (c.target == KM_TGT_KEYMAP ? BENCH_X_LIBKEYMAP : BENCH_X_SOCKET);
	if (eal && c.xport != BENCH_X_ETH) {
		fprintf(stderr, "keymap-bench: EAL arguments after -- are only for --transport "
				"eth\n");
		return EXIT_USAGE;
	}
	if (c.xport == BENCH_X_ETH && !eal) {
		fprintf(stderr, "keymap-bench: --transport eth needs EAL arguments after --, e.g. "
				"-- --no-huge --no-pci --vdev net_memif0,role=client\n");
		return EXIT_USAGE;
	}
	if (c.xport == BENCH_X_LIBKEYMAP && c.target != KM_TGT_KEYMAP) {
		fprintf(stderr,
			"keymap-bench: --transport libkeymap speaks only to keymap "
			"targets; use socket for %s\n",
			km_tgt_name(c.target));
		return EXIT_USAGE;
	}
	if (c.xport == BENCH_X_LIBKEYMAP && c.inflight > LIBKEYMAP_WINDOW_MAX) {
		fprintf(stderr,
			"keymap-bench: --inflight %u: libkeymap keeps at most %d requests "
			"in flight\n",
			c.inflight, LIBKEYMAP_WINDOW_MAX);
		return EXIT_USAGE;
	}
	if (c.xport == BENCH_X_LIBKEYMAP && c.wl.dist == KM_WL_SESSION && c.trace_path == NULL) {
		fprintf(stderr, "keymap-bench: --dist session sends session ids, which libkeymap's "
				"batch API does not carry: use --transport socket or eth\n");
		return EXIT_USAGE;
	}
	if (c.xport == BENCH_X_LIBKEYMAP && c.rate > 0) {
		fprintf(stderr, "keymap-bench: libkeymap runs a closed loop: --rate needs "
				"--transport socket or eth\n");
		return EXIT_USAGE;
	}
	if (c.trace_speed > 0 && c.trace_path == NULL) {
		fprintf(stderr, "keymap-bench: --trace-speed needs --trace\n");
		return EXIT_USAGE;
	}
	if (c.trace_path != NULL && c.rate > 0) {
		fprintf(stderr, "keymap-bench: a trace sets its own pace: use --trace-speed, not "
				"--rate\n");
		return EXIT_USAGE;
	}
	if (c.xport == BENCH_X_LIBKEYMAP && c.trace_speed > 0) {
		fprintf(stderr, "keymap-bench: --trace-speed needs --transport socket or eth "
				"(libkeymap runs a closed loop)\n");
		return EXIT_USAGE;
	}
	if (c.target == KM_TGT_MEMCACHED && !port_set)
		c.server_port = 11211;
	/* Echo has nothing to preload. */
	if (c.target == KM_TGT_ECHO)
		c.preload = 0;

	if (c.trace_path != NULL) {
		rc = km_trace_load(c.trace_path, BENCH_PAYLOAD_MAX, &trace, err, sizeof(err));
		if (rc < 0) {
			fprintf(stderr, "keymap-bench: %s\n", err);
			return EXIT_USAGE;
		}
		if (check_trace_sizes(&c, trace) < 0) {
			km_trace_free(trace);
			return EXIT_USAGE;
		}
		snprintf(workload, sizeof(workload), "trace %s (%zu requests, %zu keys), speed %g",
			c.trace_path, trace->nb_recs, trace->nb_keys, c.trace_speed);
	} else {
		if (c.value_size > km_tgt_value_max(c.target, c.wl.key_size)) {
			fprintf(stderr,
				"keymap-bench: --value-size %u: a %s request with a "
				"%u-byte key "
				"carries at most %zu bytes\n",
				c.value_size, km_tgt_name(c.target), c.wl.key_size,
				km_tgt_value_max(c.target, c.wl.key_size));
			return EXIT_USAGE;
		}
		rc = km_wl_create(&c.wl, &wl, err, sizeof(err));
		if (rc < 0) {
			fprintf(stderr, "keymap-bench: workload: %s\n", err);
			return EXIT_USAGE;
		}
		snprintf(workload, sizeof(workload),
			"%s, %" PRIu64 " keys of %u B, values %u B, %.0f%% GET, %s %g%s",
			km_wl_dist_name(c.wl.dist), km_wl_nb_keys(wl), c.wl.key_size, c.value_size,
			c.wl.get_ratio * 100, c.rate > 0 ? "open loop" : "closed loop",
			c.rate > 0 ? c.rate : (double)c.inflight,
			c.rate > 0 ? " req/s" : " in flight");
	}

	if (eal) {
		/* EAL sees argv[0] and what follows "--". */
		argv[optind - 1] = argv[0];
		if (rte_eal_init(argc - optind + 1, &argv[optind - 1]) < 0) {
			fprintf(stderr, "keymap-bench: EAL init failed: %s\n",
				rte_strerror(rte_errno));
			goto out;
		}
		eal_ok = 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	bench_clock_init();

	if (c.xport == BENCH_X_ETH)
		x = bench_xport_eth(&c, err, sizeof(err));
	else if (c.xport == BENCH_X_SOCKET)
		x = bench_xport_socket(&c, err, sizeof(err));
	if (c.xport != BENCH_X_LIBKEYMAP && x == NULL) {
		fprintf(stderr, "keymap-bench: %s transport: %s\n", xport_name(c.xport), err);
		goto out;
	}

	if (c.preload) {
		ph = (struct bench_phase){
			.name = "preload",
			.conf = &c,
			.wl = wl,
			.trace = trace,
			.preload = 1,
			.duration_s = 600,
			.progress = !c.quiet,
		};
		if (run_phase(x, &ph, &pre) < 0)
			goto out;
		if (pre.failed > 0 || pre.errors > 0 || bench_stop) {
			fprintf(stderr,
				"keymap-bench: preload incomplete: %" PRIu64
				" keys not stored, %" PRIu64 " error replies, %" PRIu64
				" timeouts (is the target up?)\n",
				pre.failed, pre.errors, pre.timeouts);
			goto out;
		}
		if (!c.quiet)
			fprintf(stderr, "preload: %" PRIu64 " keys in %.2f s\n", pre.replies,
				pre.elapsed_s);
	}

	ph = (struct bench_phase){
		.name = trace != NULL ? "replay" : "run",
		.conf = &c,
		.wl = wl,
		.trace = trace,
		.rate = c.rate,
		.duration_s = c.duration_s,
		.max_requests = c.max_requests,
		.progress = !c.quiet,
		.cap_ticks = (size_t)c.duration_s + 2,
	};
	ph.ticks = calloc(ph.cap_ticks, sizeof(*ph.ticks));
	if (ph.ticks == NULL) {
		fprintf(stderr, "keymap-bench: out of memory\n");
		goto out;
	}
	rc = run_phase(x, &ph, &res);
	if (rc == 0) {
		struct bench_report rep = {
			.label = c.label,
			.target = km_tgt_name(c.target),
			.transport = xport_name(c.xport),
			.workload = workload,
			.r = &res,
		};

		bench_print_summary(stdout, &rep);
		if (c.json_path != NULL && (rc = bench_write_json(c.json_path, &rep, &ph)) < 0) {
			fprintf(stderr, "keymap-bench: %s: %s\n", c.json_path, strerror(-rc));
			out_err = 1;
		}
		if (c.csv_path != NULL && (rc = bench_write_csv(c.csv_path, &ph)) < 0) {
			fprintf(stderr, "keymap-bench: %s: %s\n", c.csv_path, strerror(-rc));
			out_err = 1;
		}
		if (c.cdf_path != NULL && (rc = bench_write_cdf(c.cdf_path, &res.lat)) < 0) {
			fprintf(stderr, "keymap-bench: %s: %s\n", c.cdf_path, strerror(-rc));
			out_err = 1;
		}
		lost = res.timeouts + res.unsent;
		if (bench_stop)
			fprintf(stderr, "keymap-bench: interrupted\n");
		else if (res.replies == 0)
			fprintf(stderr, "keymap-bench: no reply from the target\n");
		else if ((double)lost > c.max_timeout_ratio * (double)(res.sent + res.unsent))
			fprintf(stderr,
				"keymap-bench: %" PRIu64 " of %" PRIu64
				" requests timed out or were never sent (more than "
				"--max-timeouts "
				"%g)\n",
				lost, res.sent + res.unsent, c.max_timeout_ratio);
		else if (!out_err)
			ret = 0;
	}
	free(ph.ticks);
out:
	if (x != NULL)
		x->close(x);
	km_wl_free(wl);
	km_trace_free(trace);
	if (eal_ok)
		rte_eal_cleanup();
	return ret;
}
