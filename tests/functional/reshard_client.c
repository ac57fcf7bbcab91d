/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * reshard_client: a bounded, model-based libkeymap client for tests that re-shard a running
 * keymapd underneath it.
 *
 * It runs a seeded random mix of GET, PUT, DEL and CAS over keys "k<i>" and composite keys
 * "user<i>/cart" and keeps a reference model of every key (value, version, highest version
 * ever acknowledged). Every reply is checked against the model:
 *   - GET returns exactly the model's value and version, NOT_FOUND iff the key is absent;
 *   - PUT, and CAS with the model's version (0 = absent), succeed with a version above any
 *     the key ever had (versions strictly increase per shard, and a split, merge or move
 *     carries the version base over: protocol.md, "Versions");
 *   - CAS with another version fails VERSION_MISMATCH and reports the model's version;
 *   - DEL succeeds iff the key is present; with a wrong version it is VERSION_MISMATCH
 *     (present) or NOT_FOUND (absent).
 * A handover answers BUSY and moves change the map: the client retries (retries >= 8) and
 * follows MOVED, so the workload must see neither. A failed request (timeout, any error)
 * counts as an error; its key is re-read before it is used again, so one failure is
 * reported once. At the end every key is read back (lost keys, stale values).
 *
 * The operation sequence depends only on the seed, -n and --preload: a run is reproducible
 * (and a failure is replayed with the same options). Exit 0 when no error, mismatch or lost key was
 * seen and at least one operation ran; 1 when a check failed; 2 for bad usage or when the client
 * cannot start.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "km_client.h"
#include <km_shardmap.h>
#include <km_util.h>

#define EXIT_CHECK 1
#define EXIT_USAGE 2

#define KEYS_MAX       100000
#define KEY_LEN_MAX    32 /* "user<99999>/cart" */
#define VALUE_LEN_MAX  200
#define REPORT_MAX     10 /* problems described one by one */
#define VERIFY_BOUND_S 30 /* the final read-back gives up after this long */
/* Preload and read-back give up after this many failed requests in a row: against a dead
 * server each costs (retries + 1) x timeout, 2.2 s. */
#define FAILS_IN_A_ROW 5
#define CLIENT_RETRIES 10 /* BUSY backoff 1, 2, 4 ... ms: covers a handover pause */
#define CLIENT_TIMEOUT 200

struct model_key {
	char key[KEY_LEN_MAX];
	uint8_t klen;
	uint8_t unknown;      /* a write failed: its outcome is unknown until re-read */
	uint16_t len;         /* value length when present */
	uint64_t version;     /* 0: absent */
	uint64_t version_max; /* highest version ever acknowledged or read */
	char val[VALUE_LEN_MAX];
};

struct opts {
	const char *host;
	uint16_t port;
	uint32_t keys;
	uint64_t duration_s;
	uint64_t seed;
	uint64_t ops_max;
	const char *stop_file;
	const char *history;
	const char *mark_file; /* --mark-file: "NS ID..." of a node's kill (failover time) */
	int preload;
	int verbose;
	int failover; /* --failover: failed requests are not checks that fail */
};

#define MARK_SHARDS_MAX 4096

struct run {
	struct km_client *c;
	struct model_key *m;
	uint32_t n;
	uint64_t rng;
	uint64_t ops, errors, mismatches, lost, resyncs, reports;
	uint64_t nb_get, nb_put, nb_del, nb_cas, nb_cas_wrong, nb_del_wrong;
	uint64_t stamp; /* counter embedded in values */
	/* Latency of the random operations: the slowest, and those that followed a MOVED
	 * (a map change: the reply, the MAP fetch and the request at the new place). */
	uint64_t slowest_ns, follow_n, follow_sum_ns, follow_max_ns, follow_retries;
	/* --mark-file: when a node was killed (CLOCK_MONOTONIC ns), its shards then, and the
	 * first write acknowledged on one of them since. */
	uint64_t mark_ns, failover_ns;
	uint64_t op_t0; /* when the operation under way started */
	uint64_t mark_shards[MARK_SHARDS_MAX];
	uint32_t nb_mark_shards;
	FILE *hist;         /* --history, NULL */
	unsigned int hproc; /* the history's process: a new one after an indeterminate op */
};

static const char usage_text[] =
	"usage: reshard_client [-n KEYS] [-d SECONDS] [-s SEED] [-o OPS_MAX] [--stop-file PATH]\n"
	"                      [--preload] [--history PATH] [-h HOST] [-p PORT] [-v]\n"
	"  -n KEYS          keys in the model, half k<i>, half user<i>/cart (default 2000,\n"
	"                   at most 100000)\n"
	"  -d SECONDS       stop the random phase after this long (default 20)\n"
	"  -s SEED          seed of the operation sequence (default 1)\n"
	"  -o OPS_MAX       stop the random phase after this many operations (default: none)\n"
	"  --stop-file PATH stop the random phase as soon as PATH exists\n"
	"  --preload        PUT every key first (otherwise the initial state is read back)\n"
	"  --failover       a failed request (a node down) is not a failed check: the\n"
	"                   replies, the read-back and the history still are\n"
	"  --mark-file PATH once PATH holds \"NS ID...\" (a node killed at CLOCK_MONOTONIC NS,\n"
	"                   its shards): report the time to the first write invoked since\n"
	"                   and acknowledged on one of them (failover_ms)\n"
	"  --history PATH   write every operation's invoke and completion to PATH, JSON lines\n"
	"                   for tests/lincheck/lincheck.py\n"
	"  -h HOST          server (default 198.51.100.2)\n"
	"  -p PORT          base UDP port (default 7070)\n"
	"  -v               print progress once per second\n"
	"exit: 0 every reply matched the model, 1 a check failed, 2 bad usage or no client\n";

static uint64_t
rnd(struct run *r)
{
	/* splitmix64: small, fast and good enough to drive a workload. */
	uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Describe the first REPORT_MAX problems; the counters carry the rest. */
static void report(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
report(struct run *r, const char *fmt, ...)
{
	va_list ap;

	if (r->reports++ >= REPORT_MAX)
		return;
	fprintf(stderr, "reshard_client: op %" PRIu64 ": ", r->ops);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The history (--history, tests/lincheck): one JSON line per invoke and completion.
 * Values are printable (make_value), keys too. */
static void
hist_invoke(struct run *r, const char *op, const struct model_key *k, const char *val, size_t len,
	int has_expect, uint64_t expect)
{
	if (r->hist == NULL)
		return;
	fprintf(r->hist,
		"{\"t\":%" PRIu64 ",\"proc\":%u,\"type\":\"invoke\",\"op\":\"%s\","
		"\"key\":\"%s\"",
		km_util_now_ns(), r->hproc, op, k->key);
	if (val != NULL)
		fprintf(r->hist, ",\"value\":\"%.*s\"", (int)len, val);
	if (has_expect)
		fprintf(r->hist, ",\"expect\":%" PRIu64, expect);
	fputs("}\n", r->hist);
}

/* type: "ok", "fail" or "info" (which ends the process: the next one is another). */
static void
hist_done(struct run *r, const char *type, const char *op, const struct model_key *k,
	const char *val, size_t len, uint64_t version)
{
	if (r->hist == NULL)
		return;
	fprintf(r->hist,
		"{\"t\":%" PRIu64 ",\"proc\":%u,\"type\":\"%s\",\"op\":\"%s\","
		"\"key\":\"%s\"",
		km_util_now_ns(), r->hproc, type, op, k->key);
	if (val != NULL)
		fprintf(r->hist, ",\"value\":\"%.*s\"", (int)len, val);
	if (version != 0)
		fprintf(r->hist, ",\"version\":%" PRIu64, version);
	fputs("}\n", r->hist);
	if (strcmp(type, "info") == 0)
		r->hproc++;
}

static void
error(struct run *r, struct model_key *k, const char *op, int rc)
{
	r->errors++;
	k->unknown = 1;
	report(r, "%s %s: %s", op, k->key, km_strerror(rc));
}

/* The server holds (val, len, version) for k: adopt it (version 0: absent). */
static void
adopt(struct model_key *k, const void *val, size_t len, uint64_t version)
{
	k->version = version;
	k->len = (uint16_t)len;
	if (version != 0)
		memcpy(k->val, val, len);
	if (version > k->version_max)
		k->version_max = version;
	k->unknown = 0;
}

/* The shard of key k in the client's map now (0: none). */
static uint64_t
shard_of_key(const struct run *r, const struct model_key *k)
{
	const struct km_shardmap *m = km_client_map(r->c);
	const struct km_shard *s;

	if (m == NULL)
		return 0;
	s = km_shardmap_lookup(m, km_shardmap_hash(m, (const uint8_t *)k->key, k->klen));
	return s != NULL ? km_shard_id(s) : 0;
}

/* --mark-file: a write acknowledged on a shard of the killed node ends the failover. */
static void
failover_note(struct run *r, const struct model_key *k)
{
	uint64_t id;
	uint32_t i;

	/* An operation that started before the kill may have been answered by the node
	 * before it died. */
	if (r->mark_ns == 0 || r->failover_ns != 0 || r->op_t0 < r->mark_ns)
		return;
	id = shard_of_key(r, k);
	for (i = 0; i < r->nb_mark_shards; i++)
		if (r->mark_shards[i] == id) {
			r->failover_ns = km_util_now_ns() - r->mark_ns;
			return;
		}
}

/* The mark file appeared: "NS ID..." a node was killed at NS (CLOCK_MONOTONIC), and these
 * were its shards. */
static void
mark_take(struct run *r, const char *path)
{
	uint64_t ns, id;
	FILE *f;

	if (r->mark_ns != 0 || access(path, F_OK) != 0 || (f = fopen(path, "r")) == NULL)
		return;
	if (fscanf(f, "%" SCNu64, &ns) != 1) {
		fclose(f);
		return; /* not written whole yet (it is renamed into place) */
	}
	while (r->nb_mark_shards < MARK_SHARDS_MAX && fscanf(f, "%" SCNu64, &id) == 1)
		r->mark_shards[r->nb_mark_shards++] = id;
	fclose(f);
	r->mark_ns = ns;
}

/* A write was acknowledged with version v: it must be above any version the key had. */
static void
check_new_version(struct run *r, struct model_key *k, const char *op, uint64_t v)
{
	failover_note(r, k);
	if (v > k->version_max)
		return;
	r->mismatches++;
	report(r, "%s %s: new version %" PRIu64 " is not above %" PRIu64 " (versions went back)",
		op, k->key, v, k->version_max);
}

static void
make_value(struct run *r, const struct model_key *k, char *val, uint16_t *len)
{
	size_t want = 1 + rnd(r) % VALUE_LEN_MAX, n, i;
	char head[VALUE_LEN_MAX + 1];

	n = (size_t)snprintf(head, sizeof(head), "%s#%" PRIu64 "#", k->key, ++r->stamp);
	if (n > want)
		n = want;
	memcpy(val, head, n);
	for (i = n; i < want; i++)
		val[i] = (char)('a' + rnd(r) % 26);
	*len = (uint16_t)want;
}

/*
 * GET k and compare with the model. final: the read-back at the end (a present key read
 * as absent is "lost" there). @return 0 when the request was answered (match or not).
 */
static int
do_get(struct run *r, struct model_key *k, int final)
{
	char buf[KM_CLIENT_VALUE_MAX];
	uint64_t version = 0;
	size_t len = 0;
	int rc;

	r->nb_get++;
	r->ops++;
	hist_invoke(r, "get", k, NULL, 0, 0, 0);
	rc = km_get(r->c, k->key, k->klen, buf, sizeof(buf), &len, &version);
	if (rc != KM_OK && rc != KM_ERR_NOT_FOUND) {
		hist_done(r, "info", "get", k, NULL, 0, 0);
		error(r, k, "GET", rc);
		return -1;
	}
	hist_done(r, "ok", "get", k, rc == KM_OK ? buf : NULL, len, rc == KM_OK ? version : 0);
	if (rc == KM_OK && version == 0) {
		r->mismatches++;
		report(r, "GET %s: found with version 0", k->key);
	}
	if (k->unknown) {
		adopt(k, buf, rc == KM_OK ? len : 0, rc == KM_OK ? version : 0);
		return 0;
	}
	if (rc == KM_ERR_NOT_FOUND) {
		if (k->version != 0) {
			if (final)
				r->lost++;
			else
				r->mismatches++;
			report(r, "GET %s: not found, expected version %" PRIu64 " (%u bytes)%s",
				k->key, k->version, k->len, final ? ": lost" : "");
		}
	} else if (k->version == 0) {
		r->mismatches++;
		report(r, "GET %s: found version %" PRIu64 " (%zu bytes), expected absent", k->key,
			version, len);
	} else if (version != k->version || len != k->len || memcmp(buf, k->val, len) != 0) {
		r->mismatches++;
		report(r,
			"GET %s: version %" PRIu64 ", %zu bytes '%.*s', expected version %" PRIu64
			", %u bytes '%.*s'",
			k->key, version, len, (int)(len < 40 ? len : 40), buf, k->version, k->len,
			(int)(k->len < 40 ? k->len : 40), k->val);
	}
	adopt(k, buf, rc == KM_OK ? len : 0, rc == KM_OK ? version : 0);
	return 0;
}

static void
do_put(struct run *r, struct model_key *k)
{
	char val[VALUE_LEN_MAX];
	uint64_t version = 0;
	uint16_t len;
	int rc;

	make_value(r, k, val, &len);
	r->nb_put++;
	r->ops++;
	hist_invoke(r, "put", k, val, len, 0, 0);
	rc = km_put(r->c, k->key, k->klen, val, len, &version);
	hist_done(r, rc == KM_OK ? "ok" : "info", "put", k, NULL, 0, rc == KM_OK ? version : 0);
	if (rc != KM_OK) {
		error(r, k, "PUT", rc);
		return;
	}
	check_new_version(r, k, "PUT", version);
	adopt(k, val, len, version);
}

static void
do_cas(struct run *r, struct model_key *k, int wrong)
{
	char val[VALUE_LEN_MAX];
	uint64_t expect = k->version, version = 0;
	uint16_t len;
	int rc;

	/* A wrong expectation: another version when present, any non-zero one when absent. */
	if (wrong)
		expect = k->version + 1 + rnd(r) % 1000;
	make_value(r, k, val, &len);
	r->nb_cas++;
	r->nb_cas_wrong += (uint64_t)wrong;
	r->ops++;
	hist_invoke(r, "cas", k, val, len, 1, expect);
	rc = km_cas(r->c, k->key, k->klen, val, len, expect, &version);
	hist_done(r,
		rc == KM_OK                     ? "ok"
		: rc == KM_ERR_VERSION_MISMATCH ? "fail"
						: "info",
		"cas", k, NULL, 0, rc == KM_OK ? version : 0);
	if (rc != KM_OK && rc != KM_ERR_VERSION_MISMATCH) {
		error(r, k, "CAS", rc);
		return;
	}
	if (!wrong && rc != KM_OK) {
		r->mismatches++;
		k->unknown = 1;
		report(r, "CAS %s expect %" PRIu64 ": version mismatch (server has %" PRIu64 ")",
			k->key, expect, version);
		return;
	}
	if (wrong && rc == KM_OK) {
		r->mismatches++;
		report(r, "CAS %s expect %" PRIu64 ": succeeded, model has version %" PRIu64,
			k->key, expect, k->version);
		adopt(k, val, len, version);
		return;
	}
	if (wrong) {
		if (version != k->version) {
			r->mismatches++;
			k->unknown = 1;
			report(r,
				"CAS %s expect %" PRIu64 ": mismatch reports version %" PRIu64
				", model has %" PRIu64,
				k->key, expect, version, k->version);
		}
		return;
	}
	check_new_version(r, k, "CAS", version);
	adopt(k, val, len, version);
}

static void
do_del(struct run *r, struct model_key *k)
{
	uint64_t pick = rnd(r) % 100, expect = 0;
	int wrong = 0, want, rc;

	if (pick >= 70 && pick < 85) {
		expect = k->version; /* 0 when absent: unconditional */
	} else if (pick >= 85) {
		expect = k->version + 1 + rnd(r) % 1000;
		wrong = 1;
	}
	r->nb_del++;
	r->nb_del_wrong += (uint64_t)wrong;
	r->ops++;
	hist_invoke(r, "del", k, NULL, 0, expect != 0, expect);
	rc = km_del(r->c, k->key, k->klen, expect);
	hist_done(r,
		rc == KM_OK                                               ? "ok"
		: rc == KM_ERR_NOT_FOUND || rc == KM_ERR_VERSION_MISMATCH ? "fail"
									  : "info",
		"del", k, NULL, 0, 0);
	if (rc != KM_OK && rc != KM_ERR_NOT_FOUND && rc != KM_ERR_VERSION_MISMATCH) {
		error(r, k, "DEL", rc);
		return;
	}
	if (k->version == 0)
		want = KM_ERR_NOT_FOUND;
	else
		want = wrong ? KM_ERR_VERSION_MISMATCH : KM_OK;
	if (rc != want) {
		r->mismatches++;
		k->unknown = 1;
		report(r, "DEL %s expect %" PRIu64 ": %s, expected %s (model version %" PRIu64 ")",
			k->key, expect, km_strerror(rc), km_strerror(want), k->version);
		return;
	}
	if (rc == KM_OK)
		adopt(k, NULL, 0, 0);
}

/* One random operation on a random key. */
static void
step(struct run *r)
{
	struct model_key *k = &r->m[rnd(r) % r->n];
	uint64_t pick = rnd(r) % 100;

	if (k->unknown) {
		/* Learn what a failed write left behind before checking anything else. */
		r->resyncs++;
		if (do_get(r, k, 0) < 0 || k->unknown)
			return;
	}
	if (pick < 35)
		do_get(r, k, 0);
	else if (pick < 60)
		do_put(r, k);
	else if (pick < 72)
		do_del(r, k);
	else
		do_cas(r, k, pick >= 90);
}

static int
parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"stop-file", required_argument, NULL, 'S'},
		{"history", required_argument, NULL, 'Y'},
		{"preload", no_argument, NULL, 'P'},
		{"failover", no_argument, NULL, 'F'},
		{"mark-file", required_argument, NULL, 'M'},
		{"help", no_argument, NULL, 'H'},
		{NULL, 0, NULL, 0},
	};
	uint64_t v;
	int opt;

	*o = (struct opts){.host = "198.51.100.2",
		.port = 7070,
		.keys = 2000,
		.duration_s = 20,
		.seed = 1,
		.ops_max = UINT64_MAX};
	while ((opt = getopt_long(argc, argv, "n:d:s:o:h:p:v", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (km_util_parse_u64(optarg, 1, KEYS_MAX, &v) < 0)
				goto bad;
			o->keys = (uint32_t)v;
			break;
		case 'd':
			if (km_util_parse_u64(optarg, 1, 3600, &o->duration_s) < 0)
				goto bad;
			break;
		case 's':
			if (km_util_parse_u64(optarg, 0, UINT64_MAX, &o->seed) < 0)
				goto bad;
			break;
		case 'o':
			if (km_util_parse_u64(optarg, 1, UINT64_MAX, &o->ops_max) < 0)
				goto bad;
			break;
		case 'h':
			o->host = optarg;
			break;
		case 'p':
			if (km_util_parse_u64(optarg, 1, 65535, &v) < 0)
				goto bad;
			o->port = (uint16_t)v;
			break;
		case 'S':
			o->stop_file = optarg;
			break;
		case 'Y':
			o->history = optarg;
			break;
		case 'P':
			o->preload = 1;
			break;
		case 'F':
			o->failover = 1;
			break;
		case 'M':
			o->mark_file = optarg;
			break;
		case 'v':
			o->verbose = 1;
			break;
		case 'H':
			fputs(usage_text, stdout);
			exit(0);
		default:
			fputs(usage_text, stderr);
			return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "reshard_client: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	return 0;
bad:
	fprintf(stderr, "reshard_client: -%c '%s': bad or out-of-range number\n", opt, optarg);
	return -1;
}

static int
stop_requested(const struct opts *o)
{
	return o->stop_file != NULL && access(o->stop_file, F_OK) == 0;
}

/* Known initial state: every key written, or read back from whatever is stored.
 * @return 0, or -1 when the server stopped answering (FAILS_IN_A_ROW). */
static int
initial_state(struct run *r, int preload)
{
	unsigned int fails = 0;
	uint64_t before;
	uint32_t i;

	for (i = 0; i < r->n && fails < FAILS_IN_A_ROW; i++) {
		before = r->errors;
		if (preload) {
			do_put(r, &r->m[i]);
		} else {
			r->m[i].unknown = 1;
			do_get(r, &r->m[i], 0);
		}
		fails = r->errors == before ? 0 : fails + 1;
	}
	if (i == r->n)
		return 0;
	fprintf(stderr, "reshard_client: %s stopped after %u failed requests in a row\n",
		preload ? "preload" : "initial read-back", fails);
	return -1;
}

/* Read every key back. Bounded: a dead server cannot keep it busy for n x timeout. */
static void
verify_all(struct run *r)
{
	uint64_t deadline = km_util_now_ns() + VERIFY_BOUND_S * 1000000000ull, unverified = 0;
	unsigned int fails = 0;
	uint32_t i;

	for (i = 0; i < r->n; i++) {
		struct model_key *k = &r->m[i];

		if (fails >= FAILS_IN_A_ROW || km_util_now_ns() > deadline) {
			unverified = r->n - i;
			break;
		}
		/* A key whose write failed (counted already) is only read: do_get adopts it. */
		if (do_get(r, k, 1) < 0)
			fails++;
		else
			fails = 0;
	}
	if (unverified != 0) {
		r->errors += unverified;
		fprintf(stderr, "reshard_client: read-back gave up, %" PRIu64 " keys unverified\n",
			unverified);
	}
}

int
main(int argc, char **argv)
{
	struct km_client_opts co = {0};
	struct km_client_stats st, st0;
	struct run r = {0};
	struct opts o;
	uint64_t t0, deadline, next_report, live_ops, present = 0;
	uint32_t epoch_first, epoch_last, i;
	int rc, ok;

	if (parse_opts(argc, argv, &o) < 0)
		return EXIT_USAGE;
	r.n = o.keys;
	r.rng = o.seed;
	r.hproc = 1;
	if (o.history != NULL && (r.hist = fopen(o.history, "w")) == NULL) {
		fprintf(stderr, "reshard_client: cannot write %s: %s\n", o.history,
			strerror(errno));
		return EXIT_USAGE;
	}
	r.m = calloc(r.n, sizeof(*r.m));
	if (r.m == NULL) {
		fprintf(stderr, "reshard_client: out of memory\n");
		return EXIT_USAGE;
	}
	for (i = 0; i < r.n; i++)
		r.m[i].klen = (uint8_t)snprintf(r.m[i].key, KEY_LEN_MAX,
			i % 2 == 0 ? "k%" PRIu32 : "user%" PRIu32 "/cart", i);
	co.host = o.host;
	co.port = o.port;
	co.timeout_ms = CLIENT_TIMEOUT;
	co.retries = CLIENT_RETRIES;
	co.lazy = 1; /* a seed may be down (a killed node): the others answer later */
	rc = km_client_open(&co, &r.c);
	if (rc != KM_OK) {
		fprintf(stderr, "reshard_client: cannot open a client for %s:%u: %s\n", o.host,
			o.port, km_strerror(rc));
		free(r.m);
		return EXIT_USAGE;
	}
	epoch_first = km_client_epoch(r.c);
	km_client_get_stats(r.c, &st0);
	if (epoch_first == 0)
		fprintf(stderr, "reshard_client: no shard map from %s:%u (unsteered)\n", o.host,
			o.port);

	t0 = km_util_now_ns();
	deadline = t0 + o.duration_s * 1000000000ull;
	next_report = t0 + 1000000000ull;
	live_ops = 0;
	if (initial_state(&r, o.preload) < 0)
		goto summary;
	/* The clock and the stop file at every operation (a syscall against a round trip):
	 * an operation that times out must not delay the stop by many more. */
	while (live_ops < o.ops_max) {
		uint64_t now = km_util_now_ns();

		if (now >= deadline || stop_requested(&o))
			break;
		if (o.mark_file != NULL)
			mark_take(&r, o.mark_file);
		if (o.verbose && now >= next_report) {
			printf("t %.0f s ops %" PRIu64 " errors %" PRIu64 " mismatches %" PRIu64
			       " epoch %" PRIu32 "\n",
				(double)(now - t0) / 1e9, r.ops, r.errors, r.mismatches,
				km_client_epoch(r.c));
			fflush(stdout);
			next_report += 1000000000ull;
		}
		{
			struct km_client_stats s0, s1;
			uint64_t t = km_util_now_ns(), d;

			km_client_get_stats(r.c, &s0);
			r.op_t0 = t;
			step(&r);
			d = km_util_now_ns() - t;
			km_client_get_stats(r.c, &s1);
			r.slowest_ns = d > r.slowest_ns ? d : r.slowest_ns;
			if (s1.moved != s0.moved) {
				r.follow_n++;
				r.follow_sum_ns += d;
				r.follow_max_ns = d > r.follow_max_ns ? d : r.follow_max_ns;
				r.follow_retries += s1.retries - s0.retries;
			}
		}
		live_ops++;
	}
	verify_all(&r);
summary:
	/* Refreshes the workload caused (MOVED or a newer epoch in a reply), not our own. */
	km_client_get_stats(r.c, &st);
	for (i = 0; i < r.n; i++)
		present += r.m[i].version != 0 && !r.m[i].unknown;
	km_map_refresh(r.c);
	epoch_last = km_client_epoch(r.c);
	printf("ops %" PRIu64 " errors %" PRIu64 " mismatches %" PRIu64 " lost %" PRIu64
	       " moved_refreshes %" PRIu64 " epoch_first %" PRIu32 " epoch_last %" PRIu32 "\n",
		r.ops, r.errors, r.mismatches, r.lost, st.map_refreshes - st0.map_refreshes,
		epoch_first, epoch_last);
	printf("detail: random_ops %" PRIu64 " get %" PRIu64 " put %" PRIu64 " del %" PRIu64
	       " (wrong version %" PRIu64 ") cas %" PRIu64 " (wrong version %" PRIu64
	       ") resyncs %" PRIu64 " keys_present %" PRIu64 " client_requests %" PRIu64
	       " retries %" PRIu64 " timeouts %" PRIu64 " moved %" PRIu64 " seed %" PRIu64
	       " duration %.1f s\n",
		live_ops, r.nb_get, r.nb_put, r.nb_del, r.nb_del_wrong, r.nb_cas, r.nb_cas_wrong,
		r.resyncs, present, st.requests, st.retries, st.timeouts, st.moved, o.seed,
		(double)(km_util_now_ns() - t0) / 1e9);
	if (o.mark_file != NULL)
		printf("failover: marked %d shards %" PRIu32 " failover_ms %.1f\n", r.mark_ns != 0,
			r.nb_mark_shards, r.failover_ns != 0 ? (double)r.failover_ns / 1e6 : -1.0);
	printf("latency: slowest_ms %.1f followed_moved %" PRIu64 " follow_mean_ms %.1f "
	       "follow_max_ms %.1f follow_retries %" PRIu64 "\n",
		(double)r.slowest_ns / 1e6, r.follow_n,
		r.follow_n != 0 ? (double)r.follow_sum_ns / (double)r.follow_n / 1e6 : 0.0,
		(double)r.follow_max_ns / 1e6, r.follow_retries);
	km_client_close(r.c);
	free(r.m);
	if (r.hist != NULL && fclose(r.hist) != 0) {
		fprintf(stderr, "reshard_client: cannot write %s: %s\n", o.history,
			strerror(errno));
		r.errors++;
	}
	ok = (r.errors == 0 || o.failover) && r.mismatches == 0 && r.lost == 0 && live_ops > 0;
	if (!ok && live_ops == 0)
		fprintf(stderr, "reshard_client: no random operation ran\n");
	return ok ? 0 : EXIT_CHECK;
}
