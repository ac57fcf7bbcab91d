/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * durability_client: libkeymap client for durability.sh, the crash tests of the log
 * store's promises. Bounded by an operation count and a wall-clock limit.
 *
 *   write -h HOST -k KEYS -n N -o ACKFILE [-w WINDOW] [-t SECONDS]
 *	Overwrite keys d0..d<KEYS-1> round robin, WINDOW distinct keys per batch (default
 *	32), each value "d<i>:<gen>" padded to 100 bytes. Every write is recorded in ACKFILE
 *	with write(2), before it is sent (in flight) and after its answer (acknowledged with
 *	its version and the wall-clock time, or refused): the client survives keymapd's
 *	death, a batch that times out ends the run. Prints the counts.
 *   verify -h HOST -i ACKFILE -K KILL_NS [-b BOUND_MS] [-t SECONDS]
 *	Read every key back. Its last acknowledged write must be there, or a write in
 *	flight after it; otherwise the writes acknowledged since the value found are lost,
 *	each KILL_NS - its acknowledgement time before the crash (KILL_NS: date +%s%N at the
 *	kill). A value no write of the key made is corrupt. For every lost key, a CAS with
 *	the last acknowledged version must fail (versions are never issued twice) and a PUT
 *	must get a higher version. -b: the worst lost write may be at most BOUND_MS before
 *	the kill (-b 0: nothing may be lost).
 *   status -h HOST -k KEYS
 *	GET d0..d<KEYS-1> and count the answers: ok, not found, damaged, other.
 *   put -h HOST -k KEYS
 *	PUT d0..d<KEYS-1> once each (a new value) and count the answers likewise.
 * Common options: -P PORT (default 7070).
 * Exit: 0 success, 1 bad usage or unreadable file, 2 a check failed.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "km_client.h"

#define EXIT_USAGE 1
#define EXIT_CHECK 2
#define VLEN       100
#define KEY_LEN    24
#define WINDOW_MAX 256

enum rec_kind { REC_INFLIGHT = 1, REC_ACKED = 2, REC_REFUSED = 3 };

/* One line of ACKFILE, binary. */
struct rec {
	uint32_t key;
	uint32_t kind;
	uint64_t gen;
	uint64_t version; /* REC_ACKED */
	uint64_t t_ns;    /* CLOCK_REALTIME of the answer */
};

struct args {
	const char *host;
	uint16_t port;
	uint64_t keys, n, secs, window, kill_ns;
	int64_t bound_ms;
	const char *file;
};

static uint64_t
wall_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void
key_of(uint64_t i, char *buf)
{
	snprintf(buf, KEY_LEN, "d%" PRIu64, i);
}

static size_t
value_of(uint64_t i, uint64_t gen, char *buf)
{
	int n = snprintf(buf, VLEN + 1, "d%" PRIu64 ":%" PRIu64 ":", i, gen);

	memset(buf + n, 'x', VLEN - (size_t)n);
	return VLEN;
}

/* The generation a value says it is of key i, or 0 if it is not one of i's values. */
static uint64_t
gen_of(uint64_t i, const char *v, size_t len)
{
	char want[VLEN + 1];
	uint64_t gen;
	char *end;
	int n;

	if (len != VLEN || v[0] != 'd')
		return 0;
	n = snprintf(want, sizeof(want), "d%" PRIu64 ":", i);
	if (memcmp(v, want, (size_t)n) != 0)
		return 0;
	gen = strtoull(v + n, &end, 10);
	if (end == v + n || *end != ':')
		return 0;
	value_of(i, gen, want);
	return memcmp(v, want, VLEN) == 0 ? gen : 0;
}

/* Generations increase across runs (each continues above the clock at its start): the
 * value found tells which write made it, whichever run that was. */
static uint64_t gen_last;

static uint64_t
gen_next(void)
{
	uint64_t t = wall_ns() / 1000;

	gen_last = gen_last < t ? t : gen_last + 1;
	return gen_last;
}

static int
open_client(const struct args *a, struct km_client **c)
{
	struct km_client_opts o = {
		.host = a->host,
		.port = a->port,
		.timeout_ms = 200,
		.retries = 5,
		.window = (unsigned int)a->window,
		.lazy = 1, /* opened around restarts: unsteered until the server answers */
	};
	int rc = km_client_open(&o, c);

	if (rc != KM_OK)
		fprintf(stderr, "durability_client: %s: %s\n", a->host, km_strerror(rc));
	return rc;
}

static int
cmd_write(const struct args *a)
{
	static char keys[WINDOW_MAX][KEY_LEN], vals[WINDOW_MAX][VLEN + 1];
	struct km_batch_op ops[WINDOW_MAX];
	struct rec r[WINDOW_MAX];
	uint64_t acked = 0, refused = 0, done = 0, end = wall_ns() + a->secs * 1000000000u;
	uint64_t next = 0, j, m, t0;
	struct km_client *c;
	int fd, rc, dead = 0;

	fd = open(a->file, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd < 0) {
		perror(a->file);
		return EXIT_USAGE;
	}
	if (open_client(a, &c) != KM_OK)
		return EXIT_CHECK;
	while (done < a->n && wall_ns() < end && !dead) {
		m = a->window < a->n - done ? a->window : a->n - done;
		memset(ops, 0, sizeof(ops));
		for (j = 0; j < m; j++) {
			uint64_t k = (next + j) % a->keys;

			key_of(k, keys[j]);
			ops[j] = (struct km_batch_op){.op = KM_BATCH_PUT,
				.key = keys[j],
				.klen = strlen(keys[j]),
				.val = vals[j],
				.vlen = value_of(k, gen_next(), vals[j])};
			r[j] = (struct rec){
				.key = (uint32_t)k, .kind = REC_INFLIGHT, .gen = gen_last};
		}
		if (write(fd, r, m * sizeof(r[0])) != (ssize_t)(m * sizeof(r[0]))) {
			perror(a->file);
			return EXIT_USAGE;
		}
		t0 = wall_ns();
		rc = km_batch(c, ops, m);
		if (rc < 0) {
			fprintf(stderr, "write: batch: %s\n", km_strerror(rc));
			break;
		}
		for (j = 0; j < m; j++) {
			/* When its reply came (its first send is at t0 or later: never early). */
			r[j].t_ns = t0 + ops[j].latency_ns;
			if (ops[j].err == KM_OK) {
				r[j].kind = REC_ACKED;
				r[j].version = ops[j].out_version;
				acked++;
			} else {
				r[j].kind = REC_REFUSED;
				refused++;
				/* keymapd is gone (killed): the run ends. */
				dead |= ops[j].err == KM_ERR_TIMEOUT;
			}
		}
		if (write(fd, r, m * sizeof(r[0])) != (ssize_t)(m * sizeof(r[0]))) {
			perror(a->file);
			return EXIT_USAGE;
		}
		done += m;
		next += m;
	}
	printf("write: %" PRIu64 " acknowledged, %" PRIu64 " refused or unanswered%s\n", acked,
		refused, dead ? " (the server stopped answering)" : "");
	km_client_close(c);
	close(fd);
	return 0;
}

/* What ACKFILE says of one key: its acknowledged writes in order, the last in flight. */
struct vkey {
	struct rec *ack;
	size_t n, cap;
	uint64_t sent_gen; /* the last generation sent (acknowledged or not) */
};

static int
load(const char *path, struct vkey **out, uint64_t *nkeys)
{
	struct vkey *k = NULL;
	uint64_t nk = 0;
	struct rec r;
	FILE *f = fopen(path, "rb");

	if (f == NULL) {
		perror(path);
		return -1;
	}
	while (fread(&r, sizeof(r), 1, f) == 1) {
		if (r.key >= nk) {
			struct vkey *t = realloc(k, (r.key + 1) * sizeof(*k));

			if (t == NULL)
				return -1;
			memset(t + nk, 0, (r.key + 1 - nk) * sizeof(*k));
			k = t;
			nk = r.key + 1;
		}
		if (r.kind == REC_INFLIGHT) {
			k[r.key].sent_gen = r.gen;
		} else if (r.kind == REC_ACKED) {
			struct vkey *v = &k[r.key];

			if (v->n == v->cap) {
				struct rec *t = realloc(
					v->ack, (v->cap = v->cap ? v->cap * 2 : 8) * sizeof(*t));

				if (t == NULL)
					return -1;
				v->ack = t;
			}
			v->ack[v->n++] = r;
		}
		/* Refused or unanswered: it may still have been applied (a lost reply). */
	}
	fclose(f);
	*out = k;
	*nkeys = nk;
	return 0;
}

static int
cmd_verify(const struct args *a)
{
	static char buf[VLEN + 64], val[VLEN + 1];
	uint64_t nk, i, acked = 0, lost = 0, corrupt = 0, reused = 0, worst = 0, found_gen;
	struct km_client *c;
	struct vkey *k;
	struct rec r;
	size_t len;
	size_t j;
	int rc, fd;

	if (load(a->file, &k, &nk) < 0)
		return EXIT_USAGE;
	/* What it writes itself (a lost key is written again) goes on the same file. */
	fd = open(a->file, O_WRONLY | O_APPEND);
	if (fd < 0) {
		perror(a->file);
		return EXIT_USAGE;
	}
	if (open_client(a, &c) != KM_OK)
		return EXIT_CHECK;
	for (i = 0; i < nk; i++) {
		struct vkey *v = &k[i];
		uint64_t ver = 0, ver_new = 0;
		char key[KEY_LEN];

		acked += v->n;
		key_of(i, key);
		rc = km_get(c, key, strlen(key), buf, sizeof(buf), &len, &ver);
		if (rc != KM_OK && rc != KM_ERR_NOT_FOUND) {
			fprintf(stderr, "verify %s: %s\n", key, km_strerror(rc));
			return EXIT_CHECK;
		}
		found_gen = rc == KM_OK ? gen_of(i, buf, len) : 0;
		if (rc == KM_OK && found_gen == 0) {
			fprintf(stderr, "verify %s: a value no write made: '%.40s'\n", key, buf);
			corrupt++;
			continue;
		}
		if (v->n == 0 || found_gen >= v->ack[v->n - 1].gen) {
			/* The last acknowledged write, or one sent after it. */
			if (found_gen > v->sent_gen) {
				fprintf(stderr, "verify %s: generation %" PRIu64 " never sent\n",
					key, found_gen);
				corrupt++;
			}
			continue;
		}
		/* Lost: every acknowledged write after the one found. */
		for (j = 0; j < v->n && v->ack[j].gen <= found_gen; j++)
			;
		lost += v->n - j;
		if (a->kill_ns > v->ack[j].t_ns && a->kill_ns - v->ack[j].t_ns > worst)
			worst = a->kill_ns - v->ack[j].t_ns;
		/* Its versions are never issued again. */
		rc = km_cas(c, key, strlen(key), "cas", 3, v->ack[v->n - 1].version, &ver_new);
		if (rc != KM_ERR_VERSION_MISMATCH) {
			fprintf(stderr, "verify %s: CAS with the lost version %" PRIu64 ": %s\n",
				key, v->ack[v->n - 1].version, km_strerror(rc));
			reused++;
		}
		r = (struct rec){.key = (uint32_t)i, .kind = REC_INFLIGHT, .gen = gen_next()};
		if (write(fd, &r, sizeof(r)) != sizeof(r)) {
			perror(a->file);
			return EXIT_USAGE;
		}
		rc = km_put(c, key, strlen(key), val, value_of(i, r.gen, val), &ver_new);
		r.kind = rc == KM_OK ? REC_ACKED : REC_REFUSED;
		r.version = ver_new;
		r.t_ns = wall_ns();
		if (write(fd, &r, sizeof(r)) != sizeof(r)) {
			perror(a->file);
			return EXIT_USAGE;
		}
		if (rc != KM_OK || ver_new <= v->ack[v->n - 1].version) {
			fprintf(stderr,
				"verify %s: PUT after the loss: %s, version %" PRIu64
				" (lost %" PRIu64 ")\n",
				key, km_strerror(rc), ver_new, v->ack[v->n - 1].version);
			reused++;
		}
	}
	printf("verify: %" PRIu64 " keys, %" PRIu64 " writes acknowledged, %" PRIu64
	       " lost (the oldest %.1f ms before the kill), %" PRIu64 " corrupt, %" PRIu64
	       " versions reused\n",
		nk, acked, lost, worst / 1e6, corrupt, reused);
	km_client_close(c);
	close(fd);
	if (corrupt != 0 || reused != 0)
		return EXIT_CHECK;
	if (a->bound_ms == 0 && lost != 0)
		return EXIT_CHECK;
	if (a->bound_ms > 0 && worst > (uint64_t)a->bound_ms * 1000000u)
		return EXIT_CHECK;
	return 0;
}

/* status (put 0) or put (put 1) over d0..d<keys-1>. */
static int
cmd_status(const struct args *a, int put)
{
	static char keys[WINDOW_MAX][KEY_LEN], vals[WINDOW_MAX][VLEN + 1];
	struct km_batch_op ops[WINDOW_MAX];
	uint64_t ok = 0, nf = 0, dmg = 0, other = 0, i, j, m;
	struct km_client *c;

	if (open_client(a, &c) != KM_OK)
		return EXIT_CHECK;
	for (i = 0; i < a->keys; i += m) {
		m = a->keys - i < a->window ? a->keys - i : a->window;
		memset(ops, 0, sizeof(ops));
		for (j = 0; j < m; j++) {
			key_of(i + j, keys[j]);
			ops[j].op = put ? KM_BATCH_PUT : KM_BATCH_GET;
			ops[j].key = keys[j];
			ops[j].klen = strlen(keys[j]);
			if (put) {
				ops[j].val = vals[j];
				ops[j].vlen = value_of(i + j, gen_next(), vals[j]);
			} else {
				ops[j].buf = vals[j];
				ops[j].cap = sizeof(vals[j]);
			}
		}
		if (km_batch(c, ops, m) < 0)
			return EXIT_CHECK;
		for (j = 0; j < m; j++) {
			if (ops[j].err == KM_OK)
				ok++;
			else if (ops[j].err == KM_ERR_NOT_FOUND)
				nf++;
			else if (ops[j].err == KM_ERR_DAMAGED)
				dmg++;
			else
				other++;
		}
	}
	printf("%s: ok %" PRIu64 " not_found %" PRIu64 " damaged %" PRIu64 " other %" PRIu64 "\n",
		put ? "put" : "status", ok, nf, dmg, other);
	km_client_close(c);
	return 0;
}

static int
usage(void)
{
	fprintf(stderr, "usage: durability_client write -h HOST -k KEYS -n N -o ACKFILE "
			"[-w WINDOW] [-t S] [-P PORT]\n"
			"       durability_client verify -h HOST -i ACKFILE -K KILL_NS "
			"[-b BOUND_MS] [-P PORT]\n"
			"       durability_client status|put -h HOST -k KEYS [-P PORT]\n");
	return EXIT_USAGE;
}

int
main(int argc, char **argv)
{
	struct args a = {
		.port = 7070, .keys = 1000, .n = 1000000, .secs = 60, .window = 32, .bound_ms = -1};
	int i;

	if (argc < 2)
		return usage();
	for (i = 2; i + 1 < argc; i += 2) {
		const char *o = argv[i], *v = argv[i + 1];

		if (strcmp(o, "-h") == 0)
			a.host = v;
		else if (strcmp(o, "-P") == 0)
			a.port = (uint16_t)strtoul(v, NULL, 10);
		else if (strcmp(o, "-k") == 0)
			a.keys = strtoull(v, NULL, 10);
		else if (strcmp(o, "-n") == 0)
			a.n = strtoull(v, NULL, 10);
		else if (strcmp(o, "-t") == 0)
			a.secs = strtoull(v, NULL, 10);
		else if (strcmp(o, "-w") == 0)
			a.window = strtoull(v, NULL, 10);
		else if (strcmp(o, "-o") == 0 || strcmp(o, "-i") == 0)
			a.file = v;
		else if (strcmp(o, "-K") == 0)
			a.kill_ns = strtoull(v, NULL, 10);
		else if (strcmp(o, "-b") == 0)
			a.bound_ms = strtoll(v, NULL, 10);
		else
			return usage();
	}
	if (i != argc || a.host == NULL || a.keys == 0 || a.window == 0 || a.window > WINDOW_MAX)
		return usage();
	if (strcmp(argv[1], "status") == 0 || strcmp(argv[1], "put") == 0)
		return cmd_status(&a, argv[1][0] == 'p');
	if (a.file == NULL)
		return usage();
	if (strcmp(argv[1], "write") == 0)
		return cmd_write(&a);
	if (strcmp(argv[1], "verify") == 0)
		return cmd_verify(&a);
	return usage();
}
