/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * SCAN against a running keymapd, under concurrent writes, checked against what the test
 * knows (tests/functional/scan.sh):
 *   - ENTITIES entities "sc<E>/", each with STABLE keys nobody writes during the scans
 *     ("sc<E>/s<I>", value "s:<key>") and WRITTEN keys a writer thread puts, deletes and
 *     creates all along ("sc<E>/w<I>", "sc<E>/n<seq>", value "w:<key>:<seq>"), plus keys
 *     of no entity ("sc<E>s<I>": the same bytes without the separator);
 *   - every scan of "sc<E>/" (pages of every size, keys only or not) lists each stable key
 *     exactly once with its value and version, never a key twice, never a key without
 *     the prefix, and written keys only with a value their writer wrote;
 *   - a longer prefix ("sc<E>/s1") lists exactly its stable keys;
 *   - a prefix that does not end the routing part: KM_ERR_INVAL here, BAD_REQUEST from
 *     the server (an unsteered handle sends it);
 *   - a value over a datagram ("big/v", when BIG > 0) comes through the GET fallback.
 * usage: scan_client SERVER SECONDS BIG   (rounds of scans for SECONDS, at least one; prints
 *        "scan: ..." lines; exit 0 = passed)
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <km_client.h>

#define ENTITIES   16
#define STABLE     150
#define WRITTEN    60
#define NOISE      20
#define WRITER_OPS 2000000
#define TIME_MAX_S 120

static const char *server;
static atomic_int stop;
static atomic_ulong writes;

#define CHECK(cond, ...)                                                           \
	do {                                                                       \
		if (!(cond)) {                                                     \
			fprintf(stderr, "scan: FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                              \
			fputc('\n', stderr);                                       \
			exit(1);                                                   \
		}                                                                  \
	} while (0)

static struct km_client *
open_client(int no_steer)
{
	struct km_client_opts o = {.size = KM_CLIENT_OPTS_SIZE,
		.host = server,
		.timeout_ms = 300,
		.retries = 8,
		.no_steer = no_steer};
	struct km_client *c;
	int rc = km_client_open(&o, &c);

	CHECK(rc == KM_OK, "open: %s", km_strerror(rc));
	return c;
}

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Keys the writer owns: puts, deletes, new keys. Bounded by count and time. */
static void *
writer(void *arg)
{
	struct km_client *c = open_client(0);
	uint64_t seed = 0x5ca1ab1e, seq = 0;
	time_t end = time(NULL) + TIME_MAX_S;
	char key[64], val[96];

	(void)arg;
	while (!atomic_load(&stop) && seq < WRITER_OPS && time(NULL) < end) {
		uint64_t r = rnd(&seed);
		unsigned int e = (unsigned int)(r % ENTITIES);
		int rc;

		seq++;
		if ((r >> 8) % 4 == 0)
			snprintf(key, sizeof(key), "sc%u/n%llu", e, (unsigned long long)seq);
		else
			snprintf(key, sizeof(key), "sc%u/w%u", e,
				(unsigned int)((r >> 16) % WRITTEN));
		snprintf(val, sizeof(val), "w:%s:%llu", key, (unsigned long long)seq);
		if ((r >> 24) % 5 == 0)
			rc = km_del(c, key, strlen(key), 0);
		else
			rc = km_put(c, key, strlen(key), val, strlen(val), NULL);
		CHECK(rc == KM_OK || rc == KM_ERR_NOT_FOUND || rc == KM_ERR_BUSY, "write %s: %s",
			key, km_strerror(rc));
		atomic_fetch_add(&writes, 1);
	}
	km_client_close(c);
	return NULL;
}

/* What one scan saw. */
struct seen {
	const char *prefix;
	size_t plen;
	int keys_only;
	uint64_t stable_version[STABLE]; /* of the entity, as loaded */
	unsigned int stable_count[STABLE];
	unsigned int entity;
	char **keys; /* every key listed, to find duplicates */
	size_t n, cap;
};

static void
on_item(void *arg, const struct km_scan_item *it)
{
	struct seen *s = arg;
	char key[256], want[320], tail;
	const char *slash;
	unsigned int i;

	CHECK(it->klen < sizeof(key), "key of %zu bytes", it->klen);
	memcpy(key, it->key, it->klen);
	key[it->klen] = '\0';
	CHECK(it->klen >= s->plen && memcmp(key, s->prefix, s->plen) == 0,
		"'%s' listed for prefix '%s'", key, s->prefix);
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 256;
		s->keys = realloc(s->keys, s->cap * sizeof(*s->keys));
		CHECK(s->keys != NULL, "no memory");
	}
	s->keys[s->n++] = strdup(key);
	CHECK(s->keys[s->n - 1] != NULL, "no memory");
	CHECK(it->version != 0, "'%s' with version 0", key);
	if (s->keys_only)
		CHECK(it->val == NULL && it->vlen == 0, "'%s' with a value in a keys-only scan",
			key);
	slash = strchr(key, '/');
	if (slash != NULL && slash[1] == 's' && sscanf(slash + 2, "%u%c", &i, &tail) == 1) {
		CHECK(i < STABLE, "unknown stable key '%s'", key);
		s->stable_count[i]++;
		CHECK(it->version == s->stable_version[i], "'%s' version %llu, loaded as %llu", key,
			(unsigned long long)it->version, (unsigned long long)s->stable_version[i]);
		if (!s->keys_only) {
			snprintf(want, sizeof(want), "s:%s", key);
			CHECK(it->vlen == strlen(want) && memcmp(it->val, want, it->vlen) == 0,
				"'%s' has '%.*s'", key, (int)it->vlen, (const char *)it->val);
		}
	} else if (!s->keys_only) {
		snprintf(want, sizeof(want), "w:%s:", key);
		CHECK(it->vlen > strlen(want) && memcmp(it->val, want, strlen(want)) == 0,
			"written key '%s' has '%.*s'", key, (int)it->vlen, (const char *)it->val);
	}
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Scan prefix to the end; check. @return pages. */
static unsigned int
scan_all(struct km_client *c, struct seen *s, unsigned int max, unsigned int *empty)
{
	uint64_t cursor = 0;
	unsigned int pages = 0;
	size_t i;
	int rc;

	s->n = 0;
	memset(s->stable_count, 0, sizeof(s->stable_count));
	do {
		rc = km_scan(c, s->prefix, s->plen, &cursor, max,
			s->keys_only ? KM_SCAN_KEYS_ONLY : 0, on_item, s);
		CHECK(rc >= 0, "scan '%s' page %u: %s", s->prefix, pages, km_strerror(rc));
		CHECK(max == 0 || (unsigned int)rc <= max, "%d entries in a page of %u", rc, max);
		if (rc == 0 && cursor != 0)
			(*empty)++;
		pages++;
		CHECK(pages < 1000000, "scan '%s' does not end", s->prefix);
	} while (cursor != 0);
	qsort(s->keys, s->n, sizeof(*s->keys), cmp_str);
	for (i = 1; i < s->n; i++)
		CHECK(strcmp(s->keys[i - 1], s->keys[i]) != 0, "'%s' listed twice", s->keys[i]);
	for (i = 0; i < s->n; i++)
		free(s->keys[i]);
	return pages;
}

static void
load(struct km_client *c, uint64_t (*ver)[STABLE])
{
	char key[64], val[96];
	unsigned int e, i;
	int rc;

	for (e = 0; e < ENTITIES; e++) {
		for (i = 0; i < STABLE; i++) {
			snprintf(key, sizeof(key), "sc%u/s%u", e, i);
			snprintf(val, sizeof(val), "s:%s", key);
			rc = km_put(c, key, strlen(key), val, strlen(val), &ver[e][i]);
			CHECK(rc == KM_OK, "put %s: %s", key, km_strerror(rc));
		}
		for (i = 0; i < NOISE; i++) {
			snprintf(key, sizeof(key), "sc%us%u", e, i);
			rc = km_put(c, key, strlen(key), "x", 1, NULL);
			CHECK(rc == KM_OK, "put %s: %s", key, km_strerror(rc));
		}
	}
}

/* The value of big/s0, listed through the GET fallback. */
struct big_got {
	size_t vlen;
};

static void
fetch(void *arg, const struct km_scan_item *it)
{
	struct big_got *got = arg;
	size_t i;

	CHECK(it->klen == 6 && memcmp(it->key, "big/s0", 6) == 0, "big/s listed another key");
	for (i = 0; i < it->vlen; i++)
		CHECK(((const char *)it->val)[i] == (char)('a' + i % 26), "big/s0 byte %zu", i);
	got->vlen = it->vlen;
}

static void
nop(void *arg, const struct km_scan_item *it)
{
	(void)arg;
	(void)it;
}

int
main(int argc, char **argv)
{
	static uint64_t ver[ENTITIES][STABLE];
	static const unsigned int pages_of[] = {0, 1, 7, 33};
	struct km_client *c, *u;
	unsigned int seconds, big, r, e, i, pages = 0, scans = 0, empty = 0;
	char prefix[32];
	struct seen s = {0};
	uint64_t cursor = 0;
	time_t end;
	pthread_t w;
	int rc;

	if (argc != 4) {
		fprintf(stderr, "usage: scan_client SERVER SECONDS BIG\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0); /* the test waits for the lines */
	server = argv[1];
	seconds = (unsigned int)atoi(argv[2]);
	big = (unsigned int)atoi(argv[3]);
	c = open_client(0);
	load(c, ver);
	printf("scan: loaded %u stable keys\n", ENTITIES * STABLE);

	/* Refusals first: a prefix that names no single shard. */
	rc = km_scan(c, "sc1", 3, &cursor, 0, 0, nop, NULL);
	CHECK(rc == KM_ERR_INVAL, "prefix 'sc1': %s", km_strerror(rc));
	u = open_client(1);
	rc = km_scan(u, "sc1", 3, &cursor, 0, 0, nop, NULL);
	CHECK(rc == KM_ERR_BAD_REQUEST, "prefix 'sc1' unsteered: %s", km_strerror(rc));
	km_client_close(u);
	rc = km_scan(c, "", 0, &cursor, 0, 0, nop, NULL);
	CHECK(rc == KM_ERR_INVAL, "empty prefix: %s", km_strerror(rc));
	printf("scan: prefixes without their separator refused\n");

	if (big > 0) {
		char *v = malloc(big);
		struct seen b = {.prefix = "big/", .plen = 4};
		struct big_got got = {0};

		CHECK(v != NULL, "no memory");
		for (i = 0; i < big; i++)
			v[i] = (char)('a' + i % 26);
		/* A stable key of entity "big": slot 0, "big/s0". */
		rc = km_put(c, "big/s0", 6, v, big, &b.stable_version[0]);
		CHECK(rc == KM_OK, "put big/s0: %s", km_strerror(rc));
		rc = km_put(c, "big/w", 5, "w:big/w:1", 9, NULL);
		CHECK(rc == KM_OK, "put big/w: %s", km_strerror(rc));
		/* on_item checks "s:<key>" values: check this one here. */
		b.keys_only = 1;
		scan_all(c, &b, 0, &empty);
		CHECK(b.n == 2 && b.stable_count[0] == 1, "big/: %zu keys", b.n);
		cursor = 0;
		do {
			rc = km_scan(c, "big/s", 5, &cursor, 0, 0, fetch, &got);
			CHECK(rc >= 0, "scan big/s: %s", km_strerror(rc));
		} while (cursor != 0);
		CHECK(got.vlen == big, "big/s0: %zu bytes listed, %u stored", got.vlen, big);
		free(b.keys);
		free(v);
		printf("scan: a %u-byte value listed through GET\n", big);
	}

	pthread_create(&w, NULL, writer, NULL);
	end = time(NULL) + (seconds < TIME_MAX_S ? seconds : TIME_MAX_S);
	for (r = 0; r == 0 || time(NULL) < end; r++) {
		for (e = 0; e < ENTITIES; e++) {
			snprintf(prefix, sizeof(prefix), "sc%u/", e);
			s.prefix = prefix;
			s.plen = strlen(prefix);
			s.entity = e;
			s.keys_only = (e + r) % 3 == 0;
			memcpy(s.stable_version, ver[e], sizeof(s.stable_version));
			pages += scan_all(c, &s, pages_of[(e + r) % 4], &empty);
			scans++;
			for (i = 0; i < STABLE; i++)
				CHECK(s.stable_count[i] == 1, "sc%u/s%u listed %u times (scan %u)",
					e, i, s.stable_count[i], scans);
		}
		/* A longer prefix: sc3/s1, sc3/s10..s19, sc3/s100..s149. */
		snprintf(prefix, sizeof(prefix), "sc3/s1");
		s.prefix = prefix;
		s.plen = strlen(prefix);
		s.keys_only = 0;
		memcpy(s.stable_version, ver[3], sizeof(s.stable_version));
		pages += scan_all(c, &s, 0, &empty);
		scans++;
		for (i = 0; i < STABLE; i++) {
			char k[16];

			snprintf(k, sizeof(k), "%u", i);
			CHECK(s.stable_count[i] == (k[0] == '1'),
				"sc3/s%u listed %u times under sc3/s1", i, s.stable_count[i]);
		}
	}
	atomic_store(&stop, 1);
	pthread_join(w, NULL);
	free(s.keys);
	printf("scan: %u rounds, %u scans, %u pages (%u empty), %lu concurrent writes: every "
	       "stable key "
	       "exactly once\n",
		r, scans, pages, empty, atomic_load(&writes));
	km_client_close(c);
	return 0;
}
