/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * persist_client: libkeymap client for persist.sh, the end-to-end test of the log store.
 * Every subcommand is bounded by an operation count and a wall-clock limit and prints a
 * one-line summary.
 *
 *   load -h HOST -n N -t SECONDS -o ACKFILE [-s SEED]
 *	PUTs of new keys k<seed>-<i>, overwrites and conditional DELs of earlier ones, one
 *	at a time. Each op is announced in ACKFILE before it is sent ("inflight ...") and
 *	recorded after it was acknowledged ("put ..." / "del ..."), with write(2): the
 *	client is killed with SIGKILL, buffered lines would be lost.
 *   verify -h HOST -i ACKFILE [-x KEY] [-t SECONDS]
 *	Rebuild the acknowledged state from ACKFILE (the last line of a key wins) and read
 *	every key back: exact value and version, NOT_FOUND for deleted keys. An op in
 *	flight when keymapd died may or may not have happened: either outcome passes, and
 *	the one found is appended to ACKFILE ("resolved put|del ..." or "unapplied KEY")
 *	so that the next verify expects exactly it. -x KEY: that key may instead answer
 *	DAMAGED, be absent or hold any earlier acknowledged value (its last record was
 *	damaged).
 *   model -h HOST -s STATEFILE -n N -t SECONDS [-seed S] [-k KEYS]
 *	Random PUT/CAS/DEL/GET/MGET over KEYS keys (default 300), values 0..1000 bytes,
 *	every reply checked against a model loaded from STATEFILE (if present) and saved
 *	back at the end: value, version (strictly above any version the key ever had),
 *	CAS and DEL conditions, NOT_FOUND. Every key is read back first and last.
 *   fill -h HOST -n N -p PREFIX -v VLEN [-f FIRST] [-g GEN] [-k]
 *	PUT keys PREFIX<FIRST>..PREFIX<FIRST+N-1>, values of VLEN bytes derived from the
 *	key and GEN. -k: one PUT at a time, stop at the first failure and report how many
 *	were acknowledged (a full disk), exit 0.
 *   check -h HOST -n N -p PREFIX -v VLEN [-f FIRST] [-g GEN] [-a] [-w WINDOW]
 *	GET those keys, in order, and compare (-a: every one must be NOT_FOUND); -w: at
 *	most WINDOW requests in flight (1..64, default 64; 1 reads one key at a time).
 *   drop -h HOST -n N -p PREFIX [-f FIRST]
 *	DEL those keys (each must exist).
 * Common options: -P PORT (default 7070), -t SECONDS (wall-clock limit, default 60).
 * Exit: 0 success, 1 bad usage (or an unreadable file), 2 a check or a request failed.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "km_client.h"
#include <km_util.h>

#define EXIT_USAGE 1
#define EXIT_CHECK 2

#define KEY_MAX      64
#define VALUE_CAP    1500 /* above KM_CLIENT_VALUE_MAX */
#define REPORT_MAX   10   /* problems described one by one */
#define BATCH        256  /* ops per km_batch call: the time limit is checked between */
#define LOAD_VMIN    16
#define LOAD_VMAX    200
#define MODEL_VMAX   1000
#define MGET_MAX     10
#define TIME_DEFAULT 60

struct args {
	const char *host;
	uint16_t port;
	uint64_t n;
	uint64_t secs;
	uint64_t seed;
	const char *file; /* -o, -i or -s (model) */
	const char *prefix;
	const char *exempt;
	uint64_t vlen;
	uint64_t first;
	uint64_t gen;
	uint64_t keys;
	int absent;
	int keep_going;
	uint64_t window; /* requests in flight, 0: 64 */
};

static uint64_t t_end; /* km_util_now_ns() limit of the subcommand */
static unsigned int reports;

static int
time_left(void)
{
	return km_util_now_ns() < t_end;
}

static uint64_t
fnv1a(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
	return h;
}

/* CRC-32 (IEEE), bitwise: a few thousand short values, speed does not matter. */
static uint32_t
crc32_ieee(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = 0xffffffffu;
	size_t i;
	int k;

	for (i = 0; i < len; i++) {
		c ^= p[i];
		for (k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
	}
	return ~c;
}

/* Printable bytes, so that a value read with keymap-cli or found in a log is legible. */
static void
fill_bytes(uint64_t *s, char *buf, size_t len)
{
	static const char abc[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = abc[km_util_splitmix64(s) & 63];
}

/*
 * The value of a key at write number stamp: length vlen, or LOAD_VMIN..LOAD_VMAX derived
 * from (key, stamp) when vlen is 0. Reproducible: verify regenerates what load wrote.
 */
static size_t
gen_value(const char *key, uint64_t stamp, size_t vlen, char *buf)
{
	uint64_t s = fnv1a(key, strlen(key)) ^ (stamp * 0xd1b54a32d192ed03ull);

	if (vlen == 0)
		vlen = LOAD_VMIN + km_util_splitmix64(&s) % (LOAD_VMAX - LOAD_VMIN + 1);
	fill_bytes(&s, buf, vlen);
	return vlen;
}

static void
report(const char *fmt, ...)
{
	va_list ap;

	if (++reports > REPORT_MAX)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* One line with write(2): it survives a SIGKILL of this process right after. */
static int
write_line(int fd, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	size_t len, off = 0;
	ssize_t n;
	int rc;

	va_start(ap, fmt);
	rc = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (rc < 0 || (size_t)rc >= sizeof(line) - 1)
		return -1;
	len = (size_t)rc;
	line[len++] = '\n';
	while (off < len) {
		n = write(fd, line + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

/*
 * Open ACKFILE to append, without the piece of a line a kill may have cut at its end (the
 * lines are written whole, so it would be the last): that op is announced by the complete
 * "inflight" line before it, or was never sent. @return the fd, or -1 (reported).
 */
static int
ackfile_open(const char *path, int flags)
{
	char tail[512];
	struct stat sb;
	off_t from, keep;
	ssize_t n;
	int fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | flags, 0644);

	if (fd < 0 || fstat(fd, &sb) < 0)
		goto fail;
	if (sb.st_size == 0)
		return fd;
	from = sb.st_size > (off_t)sizeof(tail) ? sb.st_size - (off_t)sizeof(tail) : 0;
	n = pread(fd, tail, (size_t)(sb.st_size - from), from);
	if (n != sb.st_size - from)
		goto fail;
	if (tail[n - 1] == '\n')
		return fd;
	for (keep = n; keep > 0 && tail[keep - 1] != '\n'; keep--)
		;
	if (keep == 0 && from != 0) {
		errno = EBADMSG; /* a line over 512 bytes: not ours */
		goto fail;
	}
	if (ftruncate(fd, from + keep) < 0)
		goto fail;
	fprintf(stderr, "persist_client: %s: dropped %zd bytes of a cut line\n", path, n - keep);
	return fd;
fail:
	fprintf(stderr, "persist_client: %s: %s\n", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static int
usage(const char *fmt, ...)
{
	va_list ap;

	fputs("persist_client: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nusage: persist_client load|verify|model|fill|check|drop -h HOST ... "
	      "(see the head of persist_client.c)\n",
		stderr);
	return EXIT_USAGE;
}

/* Whether name is a word of the space-separated list. */
static int
allowed(const char *list, const char *name)
{
	size_t n = strlen(name);
	const char *p = list;

	while ((p = strstr(p, name)) != NULL) {
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return 1;
		p += n;
	}
	return 0;
}

/*
 * Options of a subcommand: every one takes a value except -a and -k. Hand-made rather
 * than getopt: model has both -s STATEFILE and -seed S.
 */
static int
parse_args(int argc, char **argv, const char *ok, struct args *a)
{
	uint64_t v;
	int i;

	*a = (struct args){.port = 7070, .secs = TIME_DEFAULT, .seed = 1, .keys = 300};
	for (i = 2; i < argc; i++) {
		const char *o = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (o[0] != '-' || !allowed(ok, o + 1))
			return usage("%s: unexpected argument '%s'", argv[1], o);
		if (strcmp(o, "-a") == 0) {
			a->absent = 1;
			continue;
		}
		if (strcmp(o, "-k") == 0 && strcmp(argv[1], "fill") == 0) {
			a->keep_going = 1;
			continue;
		}
		if (val == NULL)
			return usage("%s: %s needs a value", argv[1], o);
		i++;
		if (strcmp(o, "-h") == 0) {
			a->host = val;
		} else if (strcmp(o, "-o") == 0 || strcmp(o, "-i") == 0) {
			a->file = val;
		} else if (strcmp(o, "-p") == 0) {
			if (strlen(val) == 0 || strlen(val) > 20)
				return usage("-p: prefix of 1..20 characters");
			a->prefix = val;
		} else if (strcmp(o, "-x") == 0) {
			a->exempt = val;
		} else if (strcmp(o, "-s") == 0 && strcmp(argv[1], "model") == 0) {
			a->file = val;
		} else if (km_util_parse_u64(val, 0, UINT32_MAX, &v) < 0) {
			return usage("%s %s: not a number", o, val);
		} else if (strcmp(o, "-P") == 0) {
			if (v == 0 || v > 65535)
				return usage("-P: port 1..65535");
			a->port = (uint16_t)v;
		} else if (strcmp(o, "-n") == 0) {
			a->n = v;
		} else if (strcmp(o, "-t") == 0) {
			if (v == 0 || v > 3600)
				return usage("-t: 1..3600 seconds");
			a->secs = v;
		} else if (strcmp(o, "-s") == 0 || strcmp(o, "-seed") == 0) {
			a->seed = v;
		} else if (strcmp(o, "-v") == 0) {
			if (v > KM_CLIENT_VALUE_MAX)
				return usage("-v: at most %d bytes", KM_CLIENT_VALUE_MAX);
			a->vlen = v;
		} else if (strcmp(o, "-f") == 0) {
			a->first = v;
		} else if (strcmp(o, "-g") == 0) {
			a->gen = v;
		} else if (strcmp(o, "-k") == 0) {
			if (v == 0 || v > 100000)
				return usage("-k: 1..100000 keys");
			a->keys = v;
		} else if (strcmp(o, "-w") == 0) {
			if (v == 0 || v > 64)
				return usage("-w: 1..64 requests in flight");
			a->window = v;
		}
	}
	if (a->host == NULL)
		return usage("%s: -h HOST is required", argv[1]);
	t_end = km_util_now_ns() + a->secs * 1000000000ull;
	return 0;
}

static int
client_open(const struct args *a, unsigned int retries, struct km_client **c)
{
	struct km_client_opts o = {
		.host = a->host,
		.port = a->port,
		.timeout_ms = 200,
		.retries = retries,
		.window = a->window != 0 ? (unsigned int)a->window : 64,
		.lazy = 1, /* opened around restarts: unsteered until the server answers */
	};
	int rc = km_client_open(&o, c);

	if (rc != KM_OK)
		fprintf(stderr, "persist_client: cannot open a client for %s: %s\n", a->host,
			km_strerror(rc));
	return rc;
}

/* ---- load ---- */

struct lkey {
	uint64_t version; /* last acknowledged (of the deleted entry when !live) */
	uint8_t live;
};

static int
cmd_load(int argc, char **argv)
{
	uint64_t ops = 0, puts = 0, dels = 0, created = 0, rng, v, t0 = km_util_now_ns();
	char key[KEY_MAX], val[VALUE_CAP];
	const char *why = "op limit";
	struct km_client *c = NULL;
	struct lkey *ks;
	struct args a;
	int fd, rc, ret = 0;
	size_t len;

	rc = parse_args(argc, argv, "h P n t o s", &a);
	if (rc != 0)
		return rc;
	if (a.file == NULL || a.n == 0)
		return usage("load: -o ACKFILE and -n N (> 0) are required");
	fd = ackfile_open(a.file, O_CREAT);
	if (fd < 0)
		return EXIT_USAGE;
	ks = calloc(a.n, sizeof(*ks));
	if (ks == NULL || client_open(&a, 3, &c) != KM_OK) {
		free(ks);
		close(fd);
		return EXIT_CHECK;
	}
	rng = a.seed * 0x2545f4914f6cdd1dull + 1;
	for (ops = 0; ops < a.n; ops++) {
		uint64_t r = km_util_splitmix64(&rng) % 100, x;
		int del = 0;

		if (!time_left()) {
			why = "time limit";
			break;
		}
		/* 70 % new keys, 20 % overwrites (of a deleted key: re-created), 10 % DELs. */
		if (created == 0 || r < 70) {
			x = created++;
		} else {
			x = km_util_splitmix64(&rng) % created;
			del = r >= 90 && ks[x].live;
		}
		snprintf(key, sizeof(key), "k%" PRIu64 "-%" PRIu64, a.seed, x);
		if (del) {
			if (write_line(fd, "inflight del %s %" PRIu64, key, ks[x].version) < 0)
				goto io_error;
			/* Conditional: KM_OK also says the server had exactly our version. */
			rc = km_del(c, key, strlen(key), ks[x].version);
			if (rc != KM_OK) {
				fprintf(stderr, "load: DEL %s (version %" PRIu64 "): %s\n", key,
					ks[x].version, km_strerror(rc));
				why = km_strerror(rc);
				ret = EXIT_CHECK;
				break;
			}
			if (write_line(fd, "del %s %" PRIu64, key, ks[x].version) < 0)
				goto io_error;
			ks[x].live = 0;
			dels++;
			continue;
		}
		len = gen_value(key, ops, 0, val);
		if (write_line(fd, "inflight put %s %" PRIu64, key, ops) < 0)
			goto io_error;
		rc = km_put(c, key, strlen(key), val, len, &v);
		if (rc != KM_OK) {
			fprintf(stderr, "load: PUT %s: %s\n", key, km_strerror(rc));
			why = km_strerror(rc);
			ret = EXIT_CHECK;
			break;
		}
		if (v <= ks[x].version) {
			fprintf(stderr,
				"load: PUT %s: version %" PRIu64 ", not above %" PRIu64 "\n", key,
				v, ks[x].version);
			why = "version went down";
			ret = EXIT_CHECK;
			break;
		}
		if (write_line(fd, "put %s %" PRIu64 " %" PRIu64 " %zu %08" PRIx32, key, v, ops,
			    len, crc32_ieee(val, len)) < 0)
			goto io_error;
		ks[x].version = v;
		ks[x].live = 1;
		puts++;
	}
	printf("load: seed %" PRIu64 ": %" PRIu64 " acked writes (%" PRIu64 " puts, %" PRIu64
	       " dels), %" PRIu64 " keys, %.2f s, stopped: %s\n",
		a.seed, puts + dels, puts, dels, created, (km_util_now_ns() - t0) / 1e9, why);
	km_client_close(c);
	free(ks);
	close(fd);
	return ret;
io_error:
	fprintf(stderr, "load: %s: %s\n", a.file, strerror(errno));
	km_client_close(c);
	free(ks);
	close(fd);
	return EXIT_USAGE;
}

/* ---- verify ---- */

/* pending: an op in flight (PEND_*), then how verify found it ended (RES_*). */
enum { PEND_NONE, PEND_PUT, PEND_DEL, RES_UNAPPLIED, RES_PUT, RES_DEL };

struct hist {
	uint64_t version, stamp;
};

struct vkey {
	char key[KEY_MAX];
	uint8_t present;
	uint8_t pending;
	uint64_t version; /* present: the entry's; absent: the deleted entry's (0: never) */
	uint64_t stamp;
	uint32_t len, crc;
	uint64_t p_stamp;  /* pending PUT */
	struct hist *hist; /* -x key: every acknowledged PUT */
	size_t nb_hist;
};

struct vtab {
	struct vkey *k;
	size_t n, cap;
	uint32_t *slot; /* index + 1, 0 = empty */
	size_t nslot;
};

static int
vtab_grow(struct vtab *t)
{
	size_t i, nslot = t->nslot ? t->nslot * 2 : 1024;
	uint32_t *s = calloc(nslot, sizeof(*s));
	struct vkey *k = realloc(t->k, nslot / 2 * sizeof(*k));

	if (s == NULL || k == NULL) {
		free(s);
		if (k != NULL)
			t->k = k;
		return -1;
	}
	t->k = k;
	t->cap = nslot / 2;
	for (i = 0; i < t->n; i++) {
		uint64_t h = fnv1a(k[i].key, strlen(k[i].key)) & (nslot - 1);

		while (s[h] != 0)
			h = (h + 1) & (nslot - 1);
		s[h] = (uint32_t)i + 1;
	}
	free(t->slot);
	t->slot = s;
	t->nslot = nslot;
	return 0;
}

static struct vkey *
vtab_get(struct vtab *t, const char *key)
{
	uint64_t h;

	if (strlen(key) >= KEY_MAX)
		return NULL;
	if (t->n + 1 > t->cap && vtab_grow(t) < 0)
		return NULL;
	h = fnv1a(key, strlen(key)) & (t->nslot - 1);
	while (t->slot[h] != 0) {
		if (strcmp(t->k[t->slot[h] - 1].key, key) == 0)
			return &t->k[t->slot[h] - 1];
		h = (h + 1) & (t->nslot - 1);
	}
	memset(&t->k[t->n], 0, sizeof(t->k[0]));
	snprintf(t->k[t->n].key, KEY_MAX, "%s", key);
	t->slot[h] = (uint32_t)++t->n;
	return &t->k[t->n - 1];
}

/*
 * Apply one ACKFILE line, counting acknowledged writes in *acked and in-flight ones an
 * earlier verify found applied in *resolved.
 * @return 0, 1 (ignored: a comment or an empty line), -1 bad.
 */
static int
vtab_line(struct vtab *t, char *line, const char *exempt, uint64_t *acked, uint64_t *resolved)
{
	char w0[16], w1[KEY_MAX], w2[KEY_MAX];
	unsigned long long a0 = 0, a1 = 0, a2 = 0;
	unsigned int crc = 0;
	struct vkey *k;
	int n;

	if (line[0] == '#' || line[0] == '\0')
		return 1;
	/* verify's record of an op in flight that happened: a write, not an acknowledged one. */
	if (strncmp(line, "resolved ", 9) == 0)
		return strncmp(line + 9, "put ", 4) == 0 || strncmp(line + 9, "del ", 4) == 0
			       ? vtab_line(t, line + 9, exempt, resolved, resolved)
			       : -1;
	n = sscanf(line, "%15s %63s %63s", w0, w1, w2);
	if (n < 2)
		return -1;
	if (strcmp(w0, "inflight") == 0) {
		if (n != 3 || (k = vtab_get(t, w2)) == NULL)
			return -1;
		if (strcmp(w1, "put") == 0 && sscanf(line, "%*s %*s %*s %llu", &a0) == 1) {
			k->pending = PEND_PUT;
			k->p_stamp = a0;
			return 0;
		}
		if (strcmp(w1, "del") == 0) {
			k->pending = PEND_DEL;
			return 0;
		}
		return -1;
	}
	if ((k = vtab_get(t, w1)) == NULL)
		return -1;
	if (strcmp(w0, "put") == 0) {
		if (sscanf(line, "%*s %*s %llu %llu %llu %x", &a0, &a1, &a2, &crc) != 4)
			return -1;
		k->present = 1;
		k->version = a0;
		k->stamp = a1;
		k->len = (uint32_t)a2;
		k->crc = crc;
		k->pending = PEND_NONE;
		(*acked)++;
		if (exempt != NULL && strcmp(exempt, k->key) == 0) {
			struct hist *h = realloc(k->hist, (k->nb_hist + 1) * sizeof(*h));

			if (h == NULL)
				return -1;
			k->hist = h;
			h[k->nb_hist++] = (struct hist){.version = a0, .stamp = a1};
		}
		return 0;
	}
	if (strcmp(w0, "del") == 0) {
		if (sscanf(line, "%*s %*s %llu", &a0) != 1)
			return -1;
		k->present = 0;
		k->version = a0;
		k->pending = PEND_NONE;
		(*acked)++;
		return 0;
	}
	if (strcmp(w0, "unapplied") == 0) {
		k->pending = PEND_NONE;
		return 0;
	}
	return -1;
}

static int
vtab_load(struct vtab *t, const char *path, const char *exempt, uint64_t *acked, uint64_t *resolved)
{
	char line[512];
	unsigned int lineno = 0;
	FILE *f = fopen(path, "r");
	size_t len;

	if (f == NULL) {
		fprintf(stderr, "persist_client: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		len = strlen(line);
		if (len == 0 || line[len - 1] != '\n')
			continue; /* the piece of a line a kill cut: its op stays in flight */
		line[len - 1] = '\0';
		if (vtab_line(t, line, exempt, acked, resolved) < 0) {
			fprintf(stderr, "persist_client: %s:%u: cannot parse '%s'\n", path, lineno,
				line);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

/* Whether (val, len, version) is the value stamp of k wrote. */
static int
value_is(const struct vkey *k, uint64_t stamp, const char *val, size_t len)
{
	char want[VALUE_CAP];
	size_t wl = gen_value(k->key, stamp, 0, want);

	return wl == len && memcmp(want, val, len) == 0;
}

static int
cmd_verify(int argc, char **argv)
{
	uint64_t acked = 0, present = 0, deleted = 0, resolved = 0, applied = 0, bad = 0;
	uint64_t earlier = 0, t0 = km_util_now_ns();
	struct vtab t = {0};
	struct km_batch_op *ops = NULL;
	struct km_client *c = NULL;
	char(*bufs)[VALUE_CAP] = NULL;
	char want[VALUE_CAP];
	struct args a;
	size_t i, j, m;
	int rc, fd = -1, ret = EXIT_CHECK;

	rc = parse_args(argc, argv, "h P i x t", &a);
	if (rc != 0)
		return rc;
	if (a.file == NULL)
		return usage("verify: -i ACKFILE is required");
	if (vtab_load(&t, a.file, a.exempt, &acked, &earlier) < 0)
		return EXIT_USAGE;
	/* The generator must still produce what load recorded. */
	for (i = 0; i < t.n; i++) {
		const struct vkey *k = &t.k[i];

		if (k->present && (gen_value(k->key, k->stamp, 0, want) != k->len ||
					  crc32_ieee(want, k->len) != k->crc)) {
			report("verify: %s: the recorded length/CRC do not match the value of "
			       "stamp %" PRIu64,
				k->key, k->stamp);
			bad++;
		}
	}
	ops = calloc(BATCH, sizeof(*ops));
	bufs = malloc((size_t)BATCH * sizeof(*bufs));
	if (ops == NULL || bufs == NULL || client_open(&a, 10, &c) != KM_OK)
		goto out;
	for (i = 0; i < t.n && bad == 0; i += m) {
		m = t.n - i < BATCH ? t.n - i : BATCH;
		if (!time_left()) {
			fprintf(stderr,
				"verify: time limit (%" PRIu64 " s) after %zu of %zu keys\n",
				a.secs, i, t.n);
			goto out;
		}
		memset(ops, 0, m * sizeof(*ops));
		for (j = 0; j < m; j++) {
			ops[j].op = KM_BATCH_GET;
			ops[j].key = t.k[i + j].key;
			ops[j].klen = strlen(t.k[i + j].key);
			ops[j].buf = bufs[j];
			ops[j].cap = VALUE_CAP;
		}
		rc = km_batch(c, ops, m);
		if (rc < 0) {
			fprintf(stderr, "verify: batch of GETs: %s\n", km_strerror(rc));
			goto out;
		}
		for (j = 0; j < m; j++) {
			struct vkey *k = &t.k[i + j];
			const struct km_batch_op *o = &ops[j];
			int found = o->err == KM_OK;
			int acked_state, inflight_state = 0;
			size_t h;

			if (o->err == KM_ERR_DAMAGED && a.exempt != NULL &&
				strcmp(a.exempt, k->key) == 0) {
				/* Its newest record is damaged: it says so, it is still a key. */
				printf("verify: exempt %s is damaged\n", k->key);
				present++;
				continue;
			}
			if (o->err != KM_OK && o->err != KM_ERR_NOT_FOUND) {
				report("verify: GET %s: %s", k->key, km_strerror(o->err));
				bad++;
				continue;
			}
			acked_state = k->present ? found && o->out_version == k->version &&
							   value_is(k, k->stamp, bufs[j], o->len)
						 : !found;
			if (k->pending == PEND_PUT)
				inflight_state = found && o->out_version > k->version &&
						 value_is(k, k->p_stamp, bufs[j], o->len);
			else if (k->pending == PEND_DEL)
				inflight_state = !found;
			if (a.exempt != NULL && strcmp(a.exempt, k->key) == 0) {
				/* Its last record was damaged: absent or an earlier value. */
				if (!found) {
					printf("verify: exempt %s is absent\n", k->key);
					continue;
				}
				for (h = 0; h < k->nb_hist; h++)
					if (k->hist[h].version == o->out_version &&
						value_is(k, k->hist[h].stamp, bufs[j], o->len))
						break;
				if (h < k->nb_hist) {
					printf("verify: exempt %s has version %" PRIu64 "\n",
						k->key, o->out_version);
					present++;
					continue;
				}
				report("verify: %s (exempt): version %" PRIu64
				       ", %zu bytes '%.40s': "
				       "no value it ever had",
					k->key, o->out_version, o->len, bufs[j]);
				bad++;
				continue;
			}
			if (acked_state) {
				if (k->pending != PEND_NONE) {
					k->pending = RES_UNAPPLIED;
					resolved++;
				}
			} else if (inflight_state) {
				resolved++;
				applied++;
				if (k->pending == PEND_PUT) {
					k->present = 1;
					k->version = o->out_version;
					k->stamp = k->p_stamp;
					k->len = (uint32_t)o->len;
					k->crc = crc32_ieee(bufs[j], o->len);
					k->pending = RES_PUT;
				} else {
					k->present = 0;
					k->pending = RES_DEL;
				}
			} else {
				report("verify: %s: %s (version %" PRIu64 ", %zu bytes '%.40s'), "
				       "acknowledged: %s version %" PRIu64 "%s",
					k->key, found ? "found" : "NOT FOUND",
					found ? o->out_version : 0, found ? o->len : 0,
					found ? bufs[j] : "",
					k->present ? "present at" : "deleted,", k->version,
					k->pending == PEND_PUT   ? ", a PUT in flight"
					: k->pending == PEND_DEL ? ", a DEL in flight"
								 : "");
				bad++;
				continue;
			}
			if (k->present)
				present++;
			else
				deleted++;
		}
	}
	if (bad != 0) {
		fprintf(stderr, "verify: %" PRIu64 " of %zu keys wrong\n", bad, t.n);
		goto out;
	}
	/* Record how the ops in flight ended: the next verify expects exactly that. */
	fd = ackfile_open(a.file, 0);
	if (fd < 0)
		goto out;
	for (i = 0; i < t.n; i++) {
		struct vkey *k = &t.k[i];

		if (k->pending == RES_UNAPPLIED)
			rc = write_line(fd, "unapplied %s", k->key);
		else if (k->pending == RES_PUT)
			rc = write_line(fd,
				"resolved put %s %" PRIu64 " %" PRIu64 " %" PRIu32 " %08" PRIx32,
				k->key, k->version, k->stamp, k->len, k->crc);
		else if (k->pending == RES_DEL)
			rc = write_line(fd, "resolved del %s %" PRIu64, k->key, k->version);
		else
			rc = 0;
		if (rc < 0) {
			fprintf(stderr, "verify: %s: %s\n", a.file, strerror(errno));
			goto out;
		}
	}
	/* Writes applied: one log record each (the shell compares with the replay). */
	printf("verify: %zu keys checked, %" PRIu64 " acked writes, all found: %" PRIu64
	       " present, %" PRIu64 " deleted, %" PRIu64 " op(s) in flight (%" PRIu64
	       " applied), %" PRIu64 " writes applied, %.2f s\n",
		t.n, acked, present, deleted, resolved, applied, acked + earlier + applied,
		(km_util_now_ns() - t0) / 1e9);
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	km_client_close(c);
	for (i = 0; i < t.n; i++)
		free(t.k[i].hist);
	free(t.k);
	free(t.slot);
	free(ops);
	free(bufs);
	return ret;
}

/* ---- model ---- */

struct mkey {
	char key[16];
	uint8_t present;
	uint16_t len;
	uint64_t version;     /* present: current */
	uint64_t version_max; /* highest ever acknowledged or read */
	char val[MODEL_VMAX];
};

struct model {
	struct km_client *c;
	struct mkey *k;
	uint32_t n;
	uint64_t rng;
	uint64_t ops, gets, puts, cas, cas_wrong, dels, dels_wrong, mgets, mismatches;
};

static int
hexval(int ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/*
 * STATEFILE: one line per key, "KEY PRESENT VERSION VERSION_MAX HEX" (HEX "-" for an
 * empty or absent value). @return 1 loaded, 0 no file, -1 error.
 */
static int
model_load(struct model *md, const char *path)
{
	static char line[2 * MODEL_VMAX + 128], hex[2 * MODEL_VMAX + 2];
	unsigned long long pr, v, vm;
	char key[16];
	FILE *f = fopen(path, "r");
	uint32_t i, lineno = 0;
	size_t hl, b;

	if (f == NULL)
		return errno == ENOENT ? 0 : -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		if (sscanf(line, "%15s %llu %llu %llu %2001s", key, &pr, &v, &vm, hex) != 5 ||
			sscanf(key, "m%u", &i) != 1 || i >= md->n || strcmp(md->k[i].key, key) != 0)
			goto bad;
		hl = strcmp(hex, "-") == 0 ? 0 : strlen(hex);
		if (hl % 2 != 0 || hl / 2 > MODEL_VMAX)
			goto bad;
		for (b = 0; b < hl / 2; b++) {
			int hi = hexval(hex[2 * b]), lo = hexval(hex[2 * b + 1]);

			if (hi < 0 || lo < 0)
				goto bad;
			md->k[i].val[b] = (char)(hi << 4 | lo);
		}
		md->k[i].present = pr != 0;
		md->k[i].len = (uint16_t)(hl / 2);
		md->k[i].version = v;
		md->k[i].version_max = vm;
	}
	fclose(f);
	return 1;
bad:
	fprintf(stderr, "model: %s:%u: bad line (another -k?)\n", path, lineno);
	fclose(f);
	return -1;
}

static int
model_save(const struct model *md, const char *path)
{
	char tmp[4096];
	uint32_t i;
	uint16_t b;
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL)
		return -1;
	for (i = 0; i < md->n; i++) {
		const struct mkey *k = &md->k[i];

		fprintf(f, "%s %d %" PRIu64 " %" PRIu64 " ", k->key, k->present, k->version,
			k->version_max);
		if (!k->present || k->len == 0)
			fputc('-', f);
		for (b = 0; k->present && b < k->len; b++)
			fprintf(f, "%02x", (uint8_t)k->val[b]);
		fputc('\n', f);
	}
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		fclose(f);
		return -1;
	}
	if (fclose(f) != 0)
		return -1;
	return rename(tmp, path);
}

/* A GET (or MGET item) reply against the model. @return 0 or -1 (reported). */
static int
model_check_read(struct model *md, struct mkey *k, const char *what, int err, const char *val,
	size_t len, uint64_t version)
{
	if (!k->present) {
		if (err == KM_ERR_NOT_FOUND)
			return 0;
		report("model: %s %s: %s (version %" PRIu64 ", %zu bytes), the key is absent", what,
			k->key, err == KM_OK ? "found" : km_strerror(err), version, len);
	} else if (err != KM_OK) {
		report("model: %s %s: %s, expected version %" PRIu64 " (%u bytes)", what, k->key,
			km_strerror(err), k->version, k->len);
	} else if (version != k->version || len != k->len || memcmp(val, k->val, len) != 0) {
		report("model: %s %s: version %" PRIu64 ", %zu bytes, expected version %" PRIu64
		       ", %u bytes%s",
			what, k->key, version, len, k->version, k->len,
			len == k->len ? " (other bytes)" : "");
	} else {
		return 0;
	}
	md->mismatches++;
	return -1;
}

/* A write the server acknowledged at version v. */
static void
model_written(
	struct model *md, struct mkey *k, const char *what, const char *val, size_t len, uint64_t v)
{
	if (v <= k->version_max) {
		report("model: %s %s: new version %" PRIu64 " not above %" PRIu64
		       ", the highest the key had",
			what, k->key, v, k->version_max);
		md->mismatches++;
	}
	k->present = 1;
	k->version = v;
	if (v > k->version_max)
		k->version_max = v;
	k->len = (uint16_t)len;
	memcpy(k->val, val, len);
}

static int
model_readback(struct model *md, const char *when)
{
	static char buf[VALUE_CAP];
	uint64_t v = 0;
	size_t len = 0;
	uint32_t i;
	int rc;

	for (i = 0; i < md->n; i++) {
		if (!time_left()) {
			fprintf(stderr, "model: time limit during the read-back %s\n", when);
			return -1;
		}
		rc = km_get(md->c, md->k[i].key, strlen(md->k[i].key), buf, sizeof(buf), &len, &v);
		if (model_check_read(md, &md->k[i], when, rc, buf, len, v) < 0)
			continue;
		if (rc == KM_OK && v > md->k[i].version_max)
			md->k[i].version_max = v;
	}
	return md->mismatches == 0 ? 0 : -1;
}

static void
model_op(struct model *md)
{
	static char buf[MGET_MAX][VALUE_CAP], val[MODEL_VMAX];
	struct km_mget_item it[MGET_MAX];
	struct mkey *k = &md->k[km_util_splitmix64(&md->rng) % md->n], *mk[MGET_MAX];
	uint64_t r = km_util_splitmix64(&md->rng) % 100, v = 0, expect;
	size_t len = 0, n, i, bad;
	int rc, right;

	md->ops++;
	if (r < 30) {
		md->gets++;
		rc = km_get(md->c, k->key, strlen(k->key), buf[0], VALUE_CAP, &len, &v);
		model_check_read(md, k, "GET", rc, buf[0], len, v);
	} else if (r < 50) {
		md->puts++;
		len = km_util_splitmix64(&md->rng) % (MODEL_VMAX + 1);
		fill_bytes(&md->rng, val, len);
		rc = km_put(md->c, k->key, strlen(k->key), val, len, &v);
		if (rc != KM_OK) {
			report("model: PUT %s: %s", k->key, km_strerror(rc));
			md->mismatches++;
			return;
		}
		model_written(md, k, "PUT", val, len, v);
	} else if (r < 65) {
		md->cas++;
		len = km_util_splitmix64(&md->rng) % (MODEL_VMAX + 1);
		fill_bytes(&md->rng, val, len);
		right = km_util_splitmix64(&md->rng) % 3 != 0;
		if (right)
			expect = k->present ? k->version : 0;
		else if (k->present)
			expect = km_util_splitmix64(&md->rng) % 2
					 ? 0
					 : k->version + 1 + km_util_splitmix64(&md->rng) % 5;
		else
			expect = k->version_max + 1 + km_util_splitmix64(&md->rng) % 5;
		if (!right)
			md->cas_wrong++;
		rc = km_cas(md->c, k->key, strlen(k->key), val, len, expect, &v);
		if (right && rc == KM_OK) {
			model_written(md, k, "CAS", val, len, v);
		} else if (!right && rc == KM_ERR_VERSION_MISMATCH &&
			   v == (k->present ? k->version : 0)) {
			/* refused, and told the current version */
		} else {
			report("model: CAS %s expect %" PRIu64 ": %s (version %" PRIu64
			       "), the key is %s version %" PRIu64,
				k->key, expect, km_strerror(rc), v,
				k->present ? "present at" : "absent, highest", k->version_max);
			md->mismatches++;
		}
	} else if (r < 80) {
		md->dels++;
		/* Unconditional, with the right version, or with a wrong one. */
		r = km_util_splitmix64(&md->rng) % 3;
		expect = r == 0 ? 0 : r == 1 ? k->version : k->version_max + 1;
		if (!k->present && r == 1)
			expect = 0;
		if (r == 2)
			md->dels_wrong++;
		rc = km_del(md->c, k->key, strlen(k->key), expect);
		if (!k->present && rc == KM_ERR_NOT_FOUND)
			return;
		if (k->present && r != 2 && rc == KM_OK) {
			k->present = 0;
			return;
		}
		if (k->present && r == 2 && rc == KM_ERR_VERSION_MISMATCH)
			return;
		report("model: DEL %s expect %" PRIu64 ": %s, the key is %s version %" PRIu64,
			k->key, expect, km_strerror(rc),
			k->present ? "present at" : "absent, highest",
			k->present ? k->version : k->version_max);
		md->mismatches++;
	} else {
		md->mgets++;
		n = 2 + km_util_splitmix64(&md->rng) % (MGET_MAX - 1);
		if (n > md->n)
			n = md->n;
		for (i = 0; i < n; i++) {
			/* n distinct keys: consecutive from a random one. */
			mk[i] = &md->k[(k - md->k + i) % md->n];
			it[i] = (struct km_mget_item){
				.key = mk[i]->key,
				.klen = strlen(mk[i]->key),
				.buf = buf[i],
				.cap = VALUE_CAP,
			};
		}
		rc = km_mget(md->c, it, n);
		if (rc != KM_OK) {
			report("model: MGET of %zu keys: %s", n, km_strerror(rc));
			md->mismatches++;
			return;
		}
		bad = 0;
		for (i = 0; i < n; i++)
			bad += model_check_read(md, mk[i], "MGET", it[i].err, buf[i], it[i].len,
				       it[i].version) < 0;
		if (bad == 0)
			return;
		/* The whole request, to replay it: keys and the value sizes they hold. */
		fprintf(stderr, "model: that MGET asked for %zu keys:", n);
		for (i = 0; i < n; i++)
			if (mk[i]->present)
				fprintf(stderr, " %s (%u bytes)", mk[i]->key, mk[i]->len);
			else
				fprintf(stderr, " %s (absent)", mk[i]->key);
		fputc('\n', stderr);
	}
}

static int
cmd_model(int argc, char **argv)
{
	struct model md = {0};
	uint64_t t0 = km_util_now_ns(), present = 0;
	struct args a;
	uint32_t i;
	int rc, loaded, ret = EXIT_CHECK;

	rc = parse_args(argc, argv, "h P s n t seed k", &a);
	if (rc != 0)
		return rc;
	if (a.file == NULL || a.n == 0)
		return usage("model: -s STATEFILE and -n N (> 0) are required");
	md.n = (uint32_t)a.keys;
	md.k = calloc(md.n, sizeof(*md.k));
	if (md.k == NULL)
		return EXIT_CHECK;
	for (i = 0; i < md.n; i++)
		snprintf(md.k[i].key, sizeof(md.k[i].key), "m%u", i);
	loaded = model_load(&md, a.file);
	if (loaded < 0) {
		free(md.k);
		return EXIT_USAGE;
	}
	md.rng = a.seed * 0x9e3779b97f4a7c15ull + 7;
	if (client_open(&a, 10, &md.c) != KM_OK)
		goto out;
	/* What the previous run left (across a restart of keymapd) must be there. */
	if (model_readback(&md, "first read-back") < 0) {
		fprintf(stderr, "model: %" PRIu64 " key(s) differ from %s %s\n", md.mismatches,
			loaded ? "the state saved in" : "an empty store, no", a.file);
		goto out;
	}
	while (md.ops < a.n && time_left() && md.mismatches == 0)
		model_op(&md);
	if (md.mismatches == 0)
		model_readback(&md, "last read-back");
	for (i = 0; i < md.n; i++)
		present += md.k[i].present;
	if (model_save(&md, a.file) < 0) {
		fprintf(stderr, "model: cannot save %s: %s\n", a.file, strerror(errno));
		goto out;
	}
	printf("model: %" PRIu64 " ops (%" PRIu64 " GET, %" PRIu64 " PUT, %" PRIu64
	       " CAS of which %" PRIu64 " refused, %" PRIu64 " DEL of which %" PRIu64
	       " refused, %" PRIu64 " MGET), %" PRIu64 " of %u keys present, state %s, %" PRIu64
	       " mismatches, %.2f s\n",
		md.ops, md.gets, md.puts, md.cas, md.cas_wrong, md.dels, md.dels_wrong, md.mgets,
		present, md.n, loaded ? "loaded" : "new", md.mismatches,
		(km_util_now_ns() - t0) / 1e9);
	if (md.mismatches == 0 && md.ops > 0)
		ret = 0;
out:
	km_client_close(md.c);
	free(md.k);
	return ret;
}

/* ---- fill, check, drop ---- */

/* fill (put != 0), check or drop over PREFIX<first>..: km_batch, BATCH ops at a time. */
static int
run_range(const struct args *a, const char *cmd, uint8_t op)
{
	static char keys[BATCH][KEY_MAX], vals[BATCH][VALUE_CAP], bufs[BATCH][VALUE_CAP];
	struct km_batch_op ops[BATCH];
	uint64_t done = 0, bad = 0, t0 = km_util_now_ns(), i, m, j;
	struct km_client *c = NULL;
	size_t vl;
	int rc;

	if (client_open(a, 10, &c) != KM_OK)
		return EXIT_CHECK;
	for (i = 0; i < a->n && bad == 0; i += m) {
		m = a->n - i < BATCH ? a->n - i : BATCH;
		if (!time_left()) {
			fprintf(stderr, "%s: time limit after %" PRIu64 " of %" PRIu64 " keys\n",
				cmd, i, a->n);
			bad++;
			break;
		}
		memset(ops, 0, sizeof(ops));
		for (j = 0; j < m; j++) {
			snprintf(keys[j], KEY_MAX, "%s%" PRIu64, a->prefix, a->first + i + j);
			ops[j].op = op;
			ops[j].key = keys[j];
			ops[j].klen = strlen(keys[j]);
			if (op == KM_BATCH_PUT) {
				ops[j].val = vals[j];
				ops[j].vlen = gen_value(keys[j], a->gen, a->vlen, vals[j]);
			} else if (op == KM_BATCH_GET) {
				ops[j].buf = bufs[j];
				ops[j].cap = VALUE_CAP;
			}
		}
		rc = km_batch(c, ops, m);
		if (rc < 0) {
			fprintf(stderr, "%s: batch: %s\n", cmd, km_strerror(rc));
			bad++;
			break;
		}
		for (j = 0; j < m; j++) {
			const struct km_batch_op *o = &ops[j];

			if (op != KM_BATCH_GET || a->absent) {
				if (o->err == (a->absent ? KM_ERR_NOT_FOUND : KM_OK)) {
					done++;
					continue;
				}
				report("%s %s: %s%s", cmd, keys[j], km_strerror(o->err),
					a->absent && o->err == KM_OK ? " (found, should be absent)"
								     : "");
				bad++;
				continue;
			}
			vl = gen_value(keys[j], a->gen, a->vlen, vals[j]);
			if (o->err == KM_OK && o->len == vl && memcmp(bufs[j], vals[j], vl) == 0 &&
				o->out_version > 0) {
				done++;
				continue;
			}
			if (o->err != KM_OK)
				report("%s %s: %s", cmd, keys[j], km_strerror(o->err));
			else
				report("%s %s: version %" PRIu64
				       ", %zu bytes '%.30s', expected %zu "
				       "bytes '%.30s' (generation %" PRIu64 ")",
					cmd, keys[j], o->out_version, o->len, bufs[j], vl, vals[j],
					a->gen);
			bad++;
		}
	}
	printf("%s: %" PRIu64 " of %" PRIu64 " keys %s%s, %.2f s\n", cmd, done, a->n,
		op == KM_BATCH_PUT   ? "written"
		: op == KM_BATCH_DEL ? "deleted"
		: a->absent          ? "absent"
				     : "read back intact",
		bad != 0 ? " (FAILED)" : "", (km_util_now_ns() - t0) / 1e9);
	km_client_close(c);
	return bad == 0 ? 0 : EXIT_CHECK;
}

/* fill -k: one PUT at a time until one fails; every PUT before it was acknowledged. */
static int
fill_until_error(const struct args *a)
{
	char key[KEY_MAX], val[VALUE_CAP];
	struct km_client *c = NULL;
	uint64_t i, v, t0 = km_util_now_ns();
	size_t vl;
	int rc = KM_OK;

	if (client_open(a, 3, &c) != KM_OK)
		return EXIT_CHECK;
	for (i = 0; i < a->n && time_left(); i++) {
		snprintf(key, sizeof(key), "%s%" PRIu64, a->prefix, a->first + i);
		vl = gen_value(key, a->gen, a->vlen, val);
		rc = km_put(c, key, strlen(key), val, vl, &v);
		if (rc != KM_OK)
			break;
	}
	printf("fill: stopped at %s%" PRIu64 ": %s, %.2f s, acked %" PRIu64 "\n", a->prefix,
		a->first + i,
		rc == KM_OK ? (i == a->n ? "op limit" : "time limit") : km_strerror(rc),
		(km_util_now_ns() - t0) / 1e9, i);
	km_client_close(c);
	return 0;
}

static int
cmd_range(int argc, char **argv)
{
	const char *cmd = argv[1];
	struct args a;
	int rc;

	rc = parse_args(argc, argv,
		strcmp(cmd, "fill") == 0    ? "h P n p v f g k t"
		: strcmp(cmd, "check") == 0 ? "h P n p v f g a t w"
					    : "h P n p f t",
		&a);
	if (rc != 0)
		return rc;
	if (a.prefix == NULL || a.n == 0)
		return usage("%s: -p PREFIX and -n N (> 0) are required", cmd);
	if (strcmp(cmd, "drop") != 0 && a.vlen == 0 && !a.absent)
		return usage("%s: -v VLEN (> 0) is required", cmd);
	if (strcmp(cmd, "fill") == 0)
		return a.keep_going ? fill_until_error(&a) : run_range(&a, cmd, KM_BATCH_PUT);
	if (strcmp(cmd, "check") == 0)
		return run_range(&a, cmd, KM_BATCH_GET);
	return run_range(&a, cmd, KM_BATCH_DEL);
}

int
main(int argc, char **argv)
{
	int rc;

	if (argc < 2)
		return usage("no subcommand");
	if (strcmp(argv[1], "load") == 0)
		rc = cmd_load(argc, argv);
	else if (strcmp(argv[1], "verify") == 0)
		rc = cmd_verify(argc, argv);
	else if (strcmp(argv[1], "model") == 0)
		rc = cmd_model(argc, argv);
	else if (strcmp(argv[1], "fill") == 0 || strcmp(argv[1], "check") == 0 ||
		 strcmp(argv[1], "drop") == 0)
		rc = cmd_range(argc, argv);
	else
		return usage("unknown subcommand '%s'", argv[1]);
	if (reports > REPORT_MAX)
		fprintf(stderr, "(%u more problems not shown)\n", reports - REPORT_MAX);
	return rc;
}
