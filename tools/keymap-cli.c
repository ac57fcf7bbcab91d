/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymap-cli: data command line on top of libkeymap (docs/client.md).
 *
 * Exit status: 0 success, 1 bad usage, 2 the request failed (server or transport
 * error), 3 the key does not exist, so that scripts can tell "absent" from "failed".
 */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "km_client.h"
#include "km_proto.h"
#include "km_shardmap.h"
#include "km_util.h"

#define EXIT_USAGE    1
#define EXIT_FAILED   2
#define EXIT_NOTFOUND 3

/* -h given several times: the seeds joined with commas, as km_client_opts.host takes
 * them. */
#define HOSTS_MAX 1024

#define BENCH_DEFAULT_OPS  10000
#define BENCH_MAX_OPS      10000000
#define BENCH_TIME_LIMIT_S 30
/* Ops per km_batch call: small enough that the time limit is checked often even
 * against a server that does not answer. */
#define BENCH_CHUNK    256
#define BENCH_KEY_SLOT 32 /* "bench:<u32>" */

static const char usage_text[] =
	"usage: keymap-cli [-h host[,host...]]... [-p port] [-t timeout_ms] [-r retries] [-v]\n"
	"                  [--no-steer] [--session N] [--key ID:HEX] <command> [args]\n"
	"\n"
	"commands:\n"
	"  ping [WORKER]                     round trip to a worker (default 0; in a cluster\n"
	"                                    a global worker, numbered across the nodes)\n"
	"  get KEY                           print the value (and 'version N' on stderr with -v)\n"
	"  put KEY VALUE                     store VALUE ('-': read it from stdin, up to\n"
	"                                    64959 bytes; over 1431 it is sent as IPv4\n"
	"                                    fragments)\n"
	"  cas KEY EXPECTED_VERSION VALUE    store if the version matches (0: only if absent)\n"
	"  del KEY [EXPECTED_VERSION]        delete (only if the version matches, when given)\n"
	"  mget KEY...                       print 'KEY<tab>VALUE' for each key found\n"
	"  scan [--keys-only] [--limit N] [--page N] [--] PREFIX\n"
	"                                    print 'KEY<tab>VALUE' for each key that begins\n"
	"                                    with PREFIX, which must end the routing part of\n"
	"                                    its keys (e.g. user42/); in the server's order\n"
	"                                    (by key hash), at most N keys (default all),\n"
	"                                    pages of at most N entries (default: a datagram)\n"
	"  map                               print the shard map (and a cluster's nodes)\n"
	"  hello                             ask the server for a cookie: print it, how long\n"
	"                                    it is valid and what the server requires\n"
	"  bench-lite [-n N] [-k KEYS] [-v SIZE] [--get-ratio R]\n"
	"                                    at most N ops (default 10000) over KEYS keys\n"
	"                                    (default 1000), values of SIZE bytes (default 32),\n"
	"                                    a share R of GETs (default 0.9), 30 s at most\n"
	"\n"
	"options:\n"
	"  -h host        server address (default $KEYMAP_HOST, else 127.0.0.1); for a\n"
	"                 cluster, several seeds: -h a,b:7071 or -h a -h b:7071 (at most\n"
	"                 16, host[:port]); the map comes from the first that answers\n"
	"  -p port        base UDP port, worker 0, of every host given without one\n"
	"                 (default 7070)\n"
	"  -t timeout_ms  per attempt (default 200)\n"
	"  -r retries     attempts after the first, 1..100 (default 3)\n"
	"  -v             verbose\n"
	"  --no-steer     send everything to the base port, do not fetch the map\n"
	"  --session N    session id the requests carry, 0..4294967295 (default 0: none);\n"
	"                 the server learns per session what is read next\n"
	"  --key ID:HEX   client key: key id 1..4294967295 and its 32-hex-digit secret;\n"
	"                 every request carries a MAC (default $KEYMAP_KEY, else none;\n"
	"                 prefer the variable: command lines are visible to other users)\n"
	"  --help         this text\n"
	"\n"
	"exit status: 0 success, 1 bad usage, 2 request failed (server or transport error),\n"
	"             3 key not found\n";

static void
usage(void)
{
	fputs(usage_text, stderr);
}

static int
fail(const char *what, int err)
{
	fprintf(stderr, "keymap-cli: %s: %s\n", what, km_strerror(err));
	return err == KM_ERR_NOT_FOUND ? EXIT_NOTFOUND : EXIT_FAILED;
}

static int
cmd_ping(struct km_client *c, int argc, char **argv, int verbose)
{
	uint64_t worker = 0, t0;
	int rc;

	(void)verbose;
	if (argc > 2 || (argc == 2 && km_util_parse_u64(argv[1], 0, UINT16_MAX, &worker) != 0)) {
		usage();
		return EXIT_USAGE;
	}
	t0 = km_util_now_ns();
	rc = km_ping(c, (unsigned int)worker);
	if (rc != KM_OK)
		return fail("ping", rc);
	printf("PONG worker %u rtt %.1f us\n", (unsigned int)worker, (km_util_now_ns() - t0) / 1e3);
	return 0;
}

static int
cmd_get(struct km_client *c, int argc, char **argv, int verbose)
{
	static uint8_t buf[KM_VALUE_MAX_LARGE];
	uint64_t version = 0;
	size_t len = 0;
	int rc;

	if (argc != 2) {
		usage();
		return EXIT_USAGE;
	}
	rc = km_get(c, argv[1], strlen(argv[1]), buf, sizeof(buf), &len, &version);
	if (rc != KM_OK)
		return fail("get", rc);
	fwrite(buf, 1, len, stdout);
	putchar('\n');
	if (verbose)
		fprintf(stderr, "version %llu\n", (unsigned long long)version);
	return 0;
}

/* VALUE argument, or stdin for "-" (one byte more than allowed, so the library can
 * report TOO_LARGE rather than storing a truncated value). */
static int
read_value(const char *arg, const void **val, size_t *len)
{
	static uint8_t buf[KM_VALUE_MAX_LARGE + 1];

	if (strcmp(arg, "-") != 0) {
		*val = arg;
		*len = strlen(arg);
		return 0;
	}
	*len = fread(buf, 1, sizeof(buf), stdin);
	if (ferror(stdin)) {
		fprintf(stderr, "keymap-cli: stdin: %s\n", strerror(errno));
		return -1;
	}
	*val = buf;
	return 0;
}

static int
cmd_put(struct km_client *c, int argc, char **argv, int verbose)
{
	uint64_t version = 0;
	const void *val;
	size_t vlen;
	int rc;

	(void)verbose;
	if (argc != 3) {
		usage();
		return EXIT_USAGE;
	}
	if (read_value(argv[2], &val, &vlen) != 0)
		return EXIT_FAILED;
	rc = km_put(c, argv[1], strlen(argv[1]), val, vlen, &version);
	if (rc != KM_OK)
		return fail("put", rc);
	printf("OK version %llu\n", (unsigned long long)version);
	return 0;
}

static int
cmd_cas(struct km_client *c, int argc, char **argv, int verbose)
{
	uint64_t expect, version = 0;
	const void *val;
	size_t vlen;
	int rc;

	(void)verbose;
	if (argc != 4 || km_util_parse_u64(argv[2], 0, UINT64_MAX, &expect) != 0) {
		usage();
		return EXIT_USAGE;
	}
	if (read_value(argv[3], &val, &vlen) != 0)
		return EXIT_FAILED;
	rc = km_cas(c, argv[1], strlen(argv[1]), val, vlen, expect, &version);
	if (rc == KM_ERR_VERSION_MISMATCH)
		fprintf(stderr, "keymap-cli: cas: current version %llu\n",
			(unsigned long long)version);
	if (rc != KM_OK)
		return fail("cas", rc);
	printf("OK version %llu\n", (unsigned long long)version);
	return 0;
}

static int
cmd_del(struct km_client *c, int argc, char **argv, int verbose)
{
	uint64_t expect = 0;
	int rc;

	(void)verbose;
	if (argc < 2 || argc > 3 ||
		(argc == 3 && km_util_parse_u64(argv[2], 0, UINT64_MAX, &expect) != 0)) {
		usage();
		return EXIT_USAGE;
	}
	rc = km_del(c, argv[1], strlen(argv[1]), expect);
	if (rc != KM_OK)
		return fail("del", rc);
	printf("OK\n");
	return 0;
}

static int
cmd_mget(struct km_client *c, int argc, char **argv, int verbose)
{
	struct km_mget_item *items;
	size_t n = (size_t)argc - 1, i;
	int rc, ret = 0;
	uint8_t *bufs;

	if (argc < 2) {
		usage();
		return EXIT_USAGE;
	}
	items = calloc(n, sizeof(*items));
	bufs = malloc(n * KM_VALUE_MAX_LARGE);
	if (items == NULL || bufs == NULL) {
		free(items);
		free(bufs);
		return fail("mget", KM_ERR_NOMEM);
	}
	for (i = 0; i < n; i++) {
		items[i].key = argv[i + 1];
		items[i].klen = strlen(argv[i + 1]);
		items[i].buf = bufs + i * KM_VALUE_MAX_LARGE;
		items[i].cap = KM_VALUE_MAX_LARGE;
	}
	rc = km_mget(c, items, n);
	if (rc != KM_OK) {
		ret = fail("mget", rc);
		goto out;
	}
	for (i = 0; i < n; i++) {
		char what[KM_KEY_MAX + 16];

		if (items[i].err != KM_OK) {
			snprintf(what, sizeof(what), "mget %s", argv[i + 1]);
			rc = fail(what, items[i].err);
			/* A failure outranks an absent key. */
			if (ret != EXIT_FAILED)
				ret = rc;
			continue;
		}
		printf("%s\t", argv[i + 1]);
		fwrite(items[i].buf, 1, items[i].len, stdout);
		putchar('\n');
		if (verbose)
			fprintf(stderr, "%s version %llu\n", argv[i + 1],
				(unsigned long long)items[i].version);
	}
out:
	free(items);
	free(bufs);
	return ret;
}

struct scan_out {
	int keys_only;
	int verbose;
	uint64_t listed;
	uint64_t limit;
};

static void
scan_print(void *arg, const struct km_scan_item *it)
{
	struct scan_out *o = arg;

	if (o->listed == o->limit)
		return; /* the last page went past --limit */
	o->listed++;
	fwrite(it->key, 1, it->klen, stdout);
	if (!o->keys_only) {
		putchar('\t');
		fwrite(it->val, 1, it->vlen, stdout);
	}
	if (o->verbose)
		printf("\tversion %llu", (unsigned long long)it->version);
	putchar('\n');
}

static int
cmd_scan(struct km_client *c, int argc, char **argv, int verbose)
{
	struct scan_out o = {.verbose = verbose, .limit = UINT64_MAX};
	uint64_t cursor = 0, page = 0, pages = 0;
	const char *prefix = NULL;
	int i, rc;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--keys-only") == 0) {
			o.keys_only = 1;
		} else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
			if (km_util_parse_u64(argv[++i], 1, UINT64_MAX, &o.limit) != 0) {
				fprintf(stderr,
					"keymap-cli: scan: --limit: not a number >= 1: %s\n",
					argv[i]);
				return EXIT_USAGE;
			}
		} else if (strcmp(argv[i], "--page") == 0 && i + 1 < argc) {
			if (km_util_parse_u64(argv[++i], 1, UINT16_MAX, &page) != 0) {
				fprintf(stderr, "keymap-cli: scan: --page: not in 1..65535: %s\n",
					argv[i]);
				return EXIT_USAGE;
			}
		} else if (strcmp(argv[i], "--") == 0 && prefix == NULL && i + 1 == argc - 1) {
			prefix = argv[++i]; /* a prefix that begins with '-' */
		} else if (prefix == NULL && argv[i][0] != '\0' &&
			   (argv[i][0] != '-' || argv[i][1] == '\0')) {
			prefix = argv[i];
		} else {
			usage();
			return EXIT_USAGE;
		}
	}
	if (prefix == NULL) {
		usage();
		return EXIT_USAGE;
	}
	do {
		rc = km_scan(c, prefix, strlen(prefix), &cursor, (unsigned int)page,
			o.keys_only ? KM_SCAN_KEYS_ONLY : 0, scan_print, &o);
		if (rc == KM_ERR_INVAL) {
			fprintf(stderr,
				"keymap-cli: scan: %s does not end the routing part of its keys: "
				"give the entity and its separator (e.g. user42/)\n",
				prefix);
			return EXIT_USAGE;
		}
		if (rc < 0)
			return fail("scan", rc);
		pages++;
	} while (cursor != 0 && o.listed < o.limit);
	if (verbose)
		fprintf(stderr, "%llu keys in %llu pages\n", (unsigned long long)o.listed,
			(unsigned long long)pages);
	return 0;
}

static int
cmd_map(struct km_client *c, int argc, char **argv, int no_steer)
{
	const struct km_shardmap *m;
	uint32_t i;
	int rc;

	(void)argv;
	if (argc != 1) {
		usage();
		return EXIT_USAGE;
	}
	if (no_steer) {
		fprintf(stderr, "keymap-cli: map: not fetched with --no-steer\n");
		return EXIT_USAGE;
	}
	m = km_client_map(c);
	if (m == NULL) {
		/* Open stays unsteered when MAP fails: ask again to report why. */
		rc = km_map_refresh(c);
		if (rc != KM_OK)
			return fail("map", rc);
		m = km_client_map(c);
	}
	printf("epoch %u\nworkers %u\nbase port %u\nshards %u\n", km_shardmap_epoch(m),
		km_shardmap_nb_workers(m), km_shardmap_udp_port_base(m), km_shardmap_nb_shards(m));
	/* A cluster: owners are global, node i has the workers first .. first + workers - 1. */
	if (km_shardmap_nb_nodes(m) != 0) {
		printf("nodes %u\n", km_shardmap_nb_nodes(m));
		printf("%-5s %-21s %-8s %s\n", "node", "address", "workers", "owners");
		for (i = 0; i < km_shardmap_nb_nodes(m); i++) {
			const struct km_map_node *n = km_shardmap_node_at(m, (uint16_t)i);
			char addr[24];

			snprintf(addr, sizeof(addr), "%u.%u.%u.%u:%u", n->ip >> 24,
				(n->ip >> 16) & 0xff, (n->ip >> 8) & 0xff, n->ip & 0xff, n->port);
			printf("%-5u %-21s %-8u %u-%u\n", i, addr, n->workers, n->first,
				n->first + n->workers - 1);
		}
	}
	printf("%-10s %-5s %-10s %s\n", "id", "depth", "prefix", "owner");
	for (i = 0; i < km_shardmap_nb_shards(m); i++) {
		const struct km_shard *s = km_shardmap_shard_at(m, i);
		uint64_t id = km_shard_id(s);
		unsigned int depth = km_shard_depth(id) & 63;
		uint64_t prefix = id & (((uint64_t)1 << depth) - 1);
		int digits = depth == 0 ? 1 : (int)(depth + 3) / 4;
		char hex[24];

		/* As many hex digits as the depth needs: the prefix has `depth` bits. */
		snprintf(hex, sizeof(hex), "0x%0*llx", digits, (unsigned long long)prefix);
		printf("%-10llu %-5u %-10s %u%s\n", (unsigned long long)id, depth, hex,
			km_shard_owner(s), km_shard_moved(s) ? " (moved)" : "");
	}
	return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* xorshift64*: a fixed seed makes two runs issue the same operations. */
static uint64_t
bench_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* One bench-lite run: its options, buffers and tallies. */
struct bench_lite {
	uint64_t n, nkeys, vsize, seed;
	double ratio;
	char *keys; /* nkeys slots of BENCH_KEY_SLOT bytes: "bench:<i>" */
	uint8_t *val;
	uint64_t *lat; /* one per answered op */
	uint64_t done, ok, missing, errors, nlat;
};

/* bench-lite's own options. @return 0 or -1 (bad usage). */
static int
bench_opts(int argc, char **argv, struct bench_lite *b)
{
	static const struct option longopts[] = {
		{"get-ratio", required_argument, NULL, 'g'},
		{NULL, 0, NULL, 0},
	};
	int opt, rc;

	optind = 0; /* glibc: restart getopt on the command's own arguments */
	while ((opt = getopt_long(argc, argv, "+n:k:v:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			rc = km_util_parse_u64(optarg, 1, BENCH_MAX_OPS, &b->n);
			break;
		case 'k':
			rc = km_util_parse_u64(optarg, 1, 100000000, &b->nkeys);
			break;
		case 'v':
			rc = km_util_parse_u64(optarg, 0, KM_VALUE_MAX_LARGE - 32, &b->vsize);
			break;
		case 'g':
			rc = km_util_parse_double(optarg, 0, 1, &b->ratio);
			break;
		default:
			rc = -1;
			break;
		}
		if (rc != 0)
			return -1;
	}
	return optind == argc ? 0 : -1;
}

/*
 * k random GETs and PUTs in one km_batch call, tallied. @return 0; 1 when none succeeded
 * (a server that answers nothing: do not wait out the time limit); a KM_ERR (< 0).
 */
static int
bench_chunk(struct km_client *c, struct bench_lite *b, struct km_batch_op *ops, size_t k)
{
	uint64_t chunk_ok = 0;
	size_t i;
	int rc;

	memset(ops, 0, k * sizeof(ops[0]));
	for (i = 0; i < k; i++) {
		const char *key = b->keys + (bench_rand(&b->seed) % b->nkeys) * BENCH_KEY_SLOT;

		ops[i].key = key;
		ops[i].klen = strlen(key);
		if ((double)(bench_rand(&b->seed) >> 11) / (double)(1ull << 53) < b->ratio) {
			ops[i].op = KM_OP_GET; /* buf NULL: the value is discarded */
		} else {
			ops[i].op = KM_OP_PUT;
			ops[i].val = b->val;
			ops[i].vlen = b->vsize;
		}
	}
	rc = km_batch(c, ops, k);
	if (rc < 0)
		return rc;
	for (i = 0; i < k; i++) {
		if (ops[i].err == KM_OK || ops[i].err == KM_ERR_NOT_FOUND) {
			b->ok++;
			chunk_ok++;
			b->missing += ops[i].err == KM_ERR_NOT_FOUND;
			b->lat[b->nlat++] = ops[i].latency_ns;
		} else {
			b->errors++;
		}
	}
	b->done += k;
	return chunk_ok == 0 ? 1 : 0;
}

/* Totals, throughput and latency percentiles. @return 0, or EXIT_FAILED if nothing
 * succeeded. */
static int
bench_report(struct bench_lite *b, double secs)
{
	qsort(b->lat, b->nlat, sizeof(*b->lat), cmp_u64);
	printf("ops %llu ok %llu not_found %llu errors %llu time %.3f s\n",
		(unsigned long long)b->done, (unsigned long long)b->ok,
		(unsigned long long)b->missing, (unsigned long long)b->errors, secs);
	printf("throughput %.0f ops/s\n", secs > 0 ? (double)b->done / secs : 0.0);
	if (b->nlat > 0)
		printf("latency p50 %.1f us p99 %.1f us\n", b->lat[b->nlat / 2] / 1e3,
			b->lat[b->nlat * 99 / 100] / 1e3);
	if (b->ok == 0) {
		fprintf(stderr, "keymap-cli: bench-lite: no request succeeded\n");
		return EXIT_FAILED;
	}
	return 0;
}

static int
cmd_bench(struct km_client *c, int argc, char **argv, int verbose)
{
	struct bench_lite b = {
		.n = BENCH_DEFAULT_OPS,
		.nkeys = 1000,
		.vsize = 32,
		.seed = 0x6b6d62656e6368ull,
		.ratio = 0.9,
	};
	struct km_batch_op ops[BENCH_CHUNK];
	int ret = 0, rc = 0;
	uint64_t t0;
	size_t i;

	(void)verbose;
	if (bench_opts(argc, argv, &b) < 0) {
		usage();
		return EXIT_USAGE;
	}
	/* Keys "bench:<i>", fixed width slots so an op points into the array. */
	b.keys = malloc(b.nkeys * BENCH_KEY_SLOT);
	b.val = malloc(b.vsize + 1);
	b.lat = malloc(b.n * sizeof(*b.lat));
	if (b.keys == NULL || b.val == NULL || b.lat == NULL) {
		ret = fail("bench-lite", KM_ERR_NOMEM);
		goto out;
	}
	for (i = 0; i < b.nkeys; i++)
		snprintf(b.keys + i * BENCH_KEY_SLOT, BENCH_KEY_SLOT, "bench:%u", (unsigned int)i);
	for (i = 0; i < b.vsize; i++)
		b.val[i] = (uint8_t)('a' + i % 26);

	t0 = km_util_now_ns();
	while (rc == 0 && b.done < b.n &&
		km_util_now_ns() - t0 < BENCH_TIME_LIMIT_S * 1000000000ull) {
		size_t k = b.n - b.done < BENCH_CHUNK ? (size_t)(b.n - b.done) : BENCH_CHUNK;

		rc = bench_chunk(c, &b, ops, k);
	}
	if (rc < 0)
		ret = fail("bench-lite", rc);
	else
		ret = bench_report(&b, (double)(km_util_now_ns() - t0) / 1e9);
out:
	free(b.keys);
	free(b.val);
	free(b.lat);
	return ret;
}

static int
cmd_hello(struct km_client *c, int argc, char **argv, int verbose)
{
	struct km_client_hello h;
	int rc;

	(void)argv;
	(void)verbose;
	if (argc != 1) {
		usage();
		return EXIT_USAGE;
	}
	rc = km_client_hello(c, &h);
	if (rc == KM_ERR_BAD_REQUEST) {
		fprintf(stderr, "keymap-cli: hello: the server does not know HELLO (it predates "
				"cookies and client keys)\n");
		return EXIT_FAILED;
	}
	if (rc != KM_OK)
		return fail("hello", rc);
	printf("cookie 0x%016llx\nvalid_ms %u\nflags 0x%x", (unsigned long long)h.cookie,
		h.valid_ms, h.flags);
	if (h.flags & KM_CLIENT_HELLO_COOKIES)
		printf(" cookies");
	if (h.flags & KM_CLIENT_HELLO_AUTH)
		printf(" key");
	printf("\n");
	return 0;
}

static const struct cli_cmd {
	const char *name;
	int (*fn)(struct km_client *c, int argc, char **argv, int flag);
	int flag_is_no_steer; /* flag: --no-steer (map), else -v */
} commands[] = {
	{"ping", cmd_ping, 0},
	{"get", cmd_get, 0},
	{"put", cmd_put, 0},
	{"cas", cmd_cas, 0},
	{"del", cmd_del, 0},
	{"mget", cmd_mget, 0},
	{"scan", cmd_scan, 0},
	{"map", cmd_map, 1},
	{"hello", cmd_hello, 0},
	{"bench-lite", cmd_bench, 0},
};

/* The options before the command into opts and *verbose. @return -1 to go on, else the
 * exit status. */
static int
parse_opts(int argc, char **argv, struct km_client_opts *opts, int *verbose)
{
	static const struct option longopts[] = {
		{"no-steer", no_argument, NULL, 'N'},
		{"session", required_argument, NULL, 'S'},
		{"key", required_argument, NULL, 'K'},
		{"help", no_argument, NULL, 'H'},
		{NULL, 0, NULL, 0},
	};
	static char hosts[HOSTS_MAX];
	uint8_t secret[KM_MAC_KEY_LEN];
	const char *key_from = NULL;
	size_t hlen = 0, alen;
	uint32_t key_id;
	uint64_t v;
	int opt;

	memset(opts, 0, sizeof(*opts));
	opts->host = getenv("KEYMAP_HOST");
	if (opts->host == NULL || opts->host[0] == '\0')
		opts->host = "127.0.0.1";
	opts->auth_key = getenv("KEYMAP_KEY");
	if (opts->auth_key != NULL && opts->auth_key[0] == '\0')
		opts->auth_key = NULL;
	if (opts->auth_key != NULL)
		key_from = "$KEYMAP_KEY";
	/* "+": options stop at the command, which has its own (bench-lite -v). */
	while ((opt = getopt_long(argc, argv, "+h:p:t:r:v", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			/* Repeated: the seeds of a cluster, joined as the library takes them. */
			alen = strlen(optarg);
			if (hlen + (hlen != 0) + alen >= sizeof(hosts)) {
				fprintf(stderr,
					"keymap-cli: -h: more than %d characters of hosts\n",
					HOSTS_MAX - 1);
				goto bad;
			}
			if (hlen != 0)
				hosts[hlen++] = ',';
			memcpy(hosts + hlen, optarg, alen + 1);
			hlen += alen;
			opts->host = hosts;
			break;
		case 'p':
			if (km_util_parse_u64(optarg, 1, UINT16_MAX, &v) != 0)
				goto bad;
			opts->port = (uint16_t)v;
			break;
		case 't':
			if (km_util_parse_u64(optarg, 1, 3600 * 1000, &v) != 0)
				goto bad;
			opts->timeout_ms = (unsigned int)v;
			break;
		case 'r':
			/* The library reads 0 as "default": no way to ask for no retry. */
			if (km_util_parse_u64(optarg, 1, 100, &v) != 0)
				goto bad;
			opts->retries = (unsigned int)v;
			break;
		case 'v':
			*verbose = 1;
			break;
		case 'N':
			opts->no_steer = 1;
			break;
		case 'S':
			if (km_util_parse_u64(optarg, 0, UINT32_MAX, &v) != 0) {
				fprintf(stderr,
					"keymap-cli: --session '%s': expected a number 0..%u\n",
					optarg, UINT32_MAX);
				goto bad;
			}
			opts->session = (uint32_t)v;
			break;
		case 'K':
			/* The option wins over the variable. */
			opts->auth_key = optarg;
			key_from = "--key";
			break;
		case 'H':
			fputs(usage_text, stdout);
			return 0;
		default:
			goto bad;
		}
	}
	/* Checked here for a message that says what is wrong (never the secret). */
	if (opts->auth_key != NULL && km_key_parse(opts->auth_key, &key_id, secret) != 0) {
		fprintf(stderr,
			"keymap-cli: %s: expected ID:HEX, a key id 1..%u and 32 hex digits\n",
			key_from, UINT32_MAX);
		goto bad;
	}
	explicit_bzero(secret, sizeof(secret));
	if (optind < argc)
		return -1;
bad:
	usage();
	return EXIT_USAGE;
}

/* -v: the client's own counters, on stderr. */
static void
print_client_stats(struct km_client *c)
{
	struct km_client_stats st;

	km_client_get_stats(c, &st);
	fprintf(stderr,
		"requests %llu retries %llu timeouts %llu moved %llu map_refreshes %llu stray "
		"%llu cookie_fetches %llu denied %llu\n",
		(unsigned long long)st.requests, (unsigned long long)st.retries,
		(unsigned long long)st.timeouts, (unsigned long long)st.moved,
		(unsigned long long)st.map_refreshes, (unsigned long long)st.stray_replies,
		(unsigned long long)st.cookie_fetches, (unsigned long long)st.denied);
}

int
main(int argc, char **argv)
{
	const struct cli_cmd *cmd = NULL;
	struct km_client_opts opts;
	struct km_client *c;
	int rc, verbose = 0;
	char what[300];
	size_t i;
	if (km_version_opt(argc, argv, "keymap-cli", NULL))
		return 0;

	rc = parse_opts(argc, argv, &opts, &verbose);
	if (rc >= 0)
		return rc;
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[optind], commands[i].name) == 0)
			cmd = &commands[i];
	if (cmd == NULL) {
		fprintf(stderr, "keymap-cli: unknown command '%s'\n", argv[optind]);
		usage();
		return EXIT_USAGE;
	}
	argc -= optind;
	argv += optind;

	rc = km_client_open(&opts, &c);
	if (rc != KM_OK) {
		snprintf(what, sizeof(what), "open %s", opts.host);
		return fail(what, rc);
	}
	rc = cmd->fn(c, argc, argv, cmd->flag_is_no_steer ? opts.no_steer : verbose);
	if (verbose)
		print_client_stats(c);
	km_client_close(c);
	fflush(stdout);
	return rc;
}
