/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * lib/etcd against a real etcd (started by etcd.sh): binary keys and values, prefixes,
 * compare-and-swap, leases expiring, kept alive and revoked, watches across many writes
 * and after a compaction, an election between two candidates, endpoint failover and
 * unreachable endpoints.
 *
 * Environment: KM_ETCD_ENDPOINT (http://127.0.0.1:PORT of the etcd), KM_ETCD_CLOSED
 * (http://127.0.0.1:PORT where nothing listens). Every wait is bounded.
 */

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <km_etcd.h>
#include <km_util.h>

static const char *endpoint;
static const char *closed;

#define TIMEOUT_MS 3000

static int
setup(void **state)
{
	struct km_etcd *e;

	if (km_etcd_open(endpoint, TIMEOUT_MS, &e) != 0)
		return -1;
	*state = e;
	return 0;
}

static int
teardown(void **state)
{
	km_etcd_close(*state);
	return 0;
}

static void
sleep_ms(unsigned int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

static const char *
errmsg(const struct km_etcd *e)
{
	return e != NULL ? km_etcd_errmsg(e) : "";
}

/* Fail with the call, its errno and e's message when call fails. */
#define OK(e, call)                                                   \
	do {                                                          \
		int rc_ = (call);                                     \
		if (rc_ < 0)                                          \
			fail_msg("%s: %d %s", #call, rc_, errmsg(e)); \
	} while (0)

/* Number of keys under prefix p (plen bytes). */
static int
count(struct km_etcd *e, const void *p, size_t plen)
{
	struct km_etcd_kvs *r;
	int n = km_etcd_get(e, p, plen, KM_ETCD_PREFIX, &r);

	if (n < 0)
		fail_msg("get: %d %s", n, km_etcd_errmsg(e));
	km_etcd_kvs_free(r);
	return n;
}

static void
test_kv_binary(void **state)
{
	struct km_etcd *e = *state;
	static const uint8_t k0[] = {'t', '/', 'k', 'v', '/', 0, 1};
	static const uint8_t k1[] = {'t', '/', 'k', 'v', '/', 0xff, 0};
	static const uint8_t k2[] = {'t', '/', 'k', 'v', '/', 0xff, 0xff};
	static const uint8_t pre_ff[] = {'t', '/', 'k', 'v', '/', 0xff};
	static const uint8_t v0[] = {0, 255, 0, 'x'};
	uint8_t big[70000];
	struct km_etcd_kvs *r;
	int64_t rev0, rev1, rev2, rev;
	size_t i;

	for (i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	km_etcd_delete(e, "t/", 2, KM_ETCD_PREFIX, NULL);
	OK(e, km_etcd_put(e, k0, sizeof(k0), v0, sizeof(v0), 0, &rev0));
	OK(e, km_etcd_put(e, k1, sizeof(k1), big, sizeof(big), 0, &rev1));
	OK(e, km_etcd_put(e, k2, sizeof(k2), "", 0, 0, &rev2));
	OK(e, km_etcd_put(e, "t/kv0", 5, "outside", 7, 0, NULL));
	assert_true(rev0 > 0 && rev1 == rev0 + 1 && rev2 == rev1 + 1);

	/* one key */
	assert_int_equal(km_etcd_get(e, k0, sizeof(k0), 0, &r), 1);
	assert_int_equal(r->kv[0].klen, sizeof(k0));
	assert_memory_equal(r->kv[0].key, k0, sizeof(k0));
	assert_int_equal(r->kv[0].vlen, sizeof(v0));
	assert_memory_equal(r->kv[0].value, v0, sizeof(v0));
	assert_true(r->kv[0].create_rev == rev0 && r->kv[0].mod_rev == rev0);
	assert_true(r->kv[0].version == 1 && r->kv[0].lease == 0);
	assert_true(r->revision >= rev2);
	km_etcd_kvs_free(r);
	assert_int_equal(km_etcd_get(e, "t/kv/none", 9, 0, &r), 0);
	assert_int_equal(r->n, 0);
	km_etcd_kvs_free(r);

	/* a prefix, in key order; the one ending in 0xff stops before t/kv0 */
	assert_int_equal(km_etcd_get(e, "t/kv/", 5, KM_ETCD_PREFIX, &r), 3);
	assert_memory_equal(r->kv[0].key, k0, sizeof(k0));
	assert_memory_equal(r->kv[1].key, k1, sizeof(k1));
	assert_int_equal(r->kv[1].vlen, sizeof(big));
	assert_memory_equal(r->kv[1].value, big, sizeof(big));
	assert_memory_equal(r->kv[2].key, k2, sizeof(k2));
	assert_int_equal(r->kv[2].vlen, 0);
	km_etcd_kvs_free(r);
	assert_int_equal(count(e, pre_ff, sizeof(pre_ff)), 2);
	assert_int_equal(count(e, "t/kv", 4), 4);

	/* versions count changes */
	OK(e, km_etcd_put(e, k0, sizeof(k0), "2", 1, 0, &rev));
	assert_int_equal(km_etcd_get(e, k0, sizeof(k0), 0, &r), 1);
	assert_true(
		r->kv[0].version == 2 && r->kv[0].create_rev == rev0 && r->kv[0].mod_rev == rev);
	km_etcd_kvs_free(r);

	/* deletes: one key, then a prefix */
	assert_int_equal(km_etcd_delete(e, k2, sizeof(k2), 0, &rev), 1);
	assert_int_equal(km_etcd_delete(e, k2, sizeof(k2), 0, NULL), 0);
	assert_int_equal(km_etcd_delete(e, "t/kv/", 5, KM_ETCD_PREFIX, &rev2), 2);
	assert_true(rev2 == rev + 1);
	assert_int_equal(count(e, "t/kv/", 5), 0);
	assert_int_equal(count(e, "t/kv0", 5), 1);
	assert_int_equal(km_etcd_delete(e, "t/", 2, KM_ETCD_PREFIX, NULL), 1);
}

static void
test_txn_cas(void **state)
{
	struct km_etcd *e = *state;
	struct km_etcd_cmp absent = {.key = "t/cas",
		.klen = 5,
		.target = KM_ETCD_VERSION,
		.result = KM_ETCD_EQUAL,
		.num = 0};
	struct km_etcd_op create = {
		.type = KM_ETCD_OP_PUT, .key = "t/cas", .klen = 5, .value = "one", .vlen = 3};
	struct km_etcd_op read[2] = {
		{.type = KM_ETCD_OP_PUT, .key = "t/other", .klen = 7, .value = "o", .vlen = 1},
		{.type = KM_ETCD_OP_GET, .key = "t/", .klen = 2, .flags = KM_ETCD_PREFIX},
	};
	struct km_etcd_cmp val = {.key = "t/cas",
		.klen = 5,
		.target = KM_ETCD_VALUE,
		.result = KM_ETCD_EQUAL,
		.value = "one",
		.vlen = 3};
	struct km_etcd_op swap[2] = {
		{.type = KM_ETCD_OP_PUT, .key = "t/cas", .klen = 5, .value = "two", .vlen = 3},
		{.type = KM_ETCD_OP_DELETE, .key = "t/other", .klen = 7},
	};
	struct km_etcd_cmp mods[3] = {
		{.key = "t/cas", .klen = 5, .target = KM_ETCD_MOD, .result = KM_ETCD_EQUAL},
		{.key = "t/cas", .klen = 5, .target = KM_ETCD_CREATE, .result = KM_ETCD_LESS},
		{.key = "t/cas", .klen = 5, .target = KM_ETCD_LEASE, .result = KM_ETCD_EQUAL},
	};
	struct km_etcd_kvs *g;
	int64_t rev, rev2;

	km_etcd_delete(e, "t/", 2, KM_ETCD_PREFIX, NULL);
	/* create if absent: succeeds once */
	assert_int_equal(km_etcd_txn(e, &absent, 1, &create, 1, NULL, 0, &rev, NULL), 1);
	assert_int_equal(km_etcd_txn(e, &absent, 1, &create, 1, read, 2, &rev2, &g), 0);
	/* the failure branch ran: its put, and its get saw both keys */
	assert_true(rev2 == rev + 1);
	assert_int_equal(g->n, 2);
	assert_int_equal(g->kv[0].op, 1);
	assert_memory_equal(g->kv[0].key, "t/cas", 5);
	assert_memory_equal(g->kv[0].value, "one", 3);
	assert_memory_equal(g->kv[1].key, "t/other", 7);
	assert_true(g->revision == rev2);
	km_etcd_kvs_free(g);

	/* compare the value: swap once, then the value no longer matches */
	assert_int_equal(km_etcd_txn(e, &val, 1, swap, 2, NULL, 0, &rev, &g), 1);
	assert_int_equal(g->n, 0);
	km_etcd_kvs_free(g);
	assert_int_equal(count(e, "t/other", 7), 0);
	assert_int_equal(km_etcd_txn(e, &val, 1, swap, 2, NULL, 0, NULL, NULL), 0);
	val.result = KM_ETCD_NOT_EQUAL;
	assert_int_equal(km_etcd_txn(e, &val, 1, NULL, 0, NULL, 0, NULL, NULL), 1);

	/* mod revision equal, create revision less than now, no lease: all hold */
	mods[0].num = rev;
	mods[1].num = rev + 1;
	assert_int_equal(km_etcd_txn(e, mods, 3, NULL, 0, NULL, 0, NULL, NULL), 1);
	mods[0].num = rev - 1; /* stale */
	assert_int_equal(km_etcd_txn(e, mods, 3, NULL, 0, NULL, 0, NULL, NULL), 0);
	mods[0].result = KM_ETCD_GREATER;
	assert_int_equal(km_etcd_txn(e, mods, 3, NULL, 0, NULL, 0, NULL, NULL), 1);

	/* etcd refuses a key written twice in one branch */
	swap[1] = swap[0];
	assert_int_equal(km_etcd_txn(e, NULL, 0, swap, 2, NULL, 0, NULL, NULL), -EINVAL);
	assert_non_null(strstr(km_etcd_errmsg(e), "/v3/kv/txn"));
	km_etcd_delete(e, "t/", 2, KM_ETCD_PREFIX, NULL);
}

/* Wait up to ms for key to be absent. @return 1 if it went. */
static int
wait_gone(struct km_etcd *e, const char *key, unsigned int ms)
{
	uint64_t end = km_util_now_ns() + (uint64_t)ms * 1000000u;

	do {
		if (count(e, key, strlen(key)) == 0)
			return 1;
		sleep_ms(100);
	} while (km_util_now_ns() < end);
	return 0;
}

static void
test_lease(void **state)
{
	struct km_etcd *e = *state;
	int64_t id, id2, granted, ttl, g;
	struct km_etcd_kvs *r;
	uint64_t t0;

	/* TTL 1 is granted as 2; the key goes with the lease */
	OK(e, km_etcd_lease_grant(e, 1, &id, &granted));
	assert_true(id != 0 && granted == 2);
	OK(e, km_etcd_put(e, "t/lease", 7, "v", 1, id, NULL));
	assert_int_equal(km_etcd_get(e, "t/lease", 7, 0, &r), 1);
	assert_true(r->kv[0].lease == id);
	km_etcd_kvs_free(r);
	OK(e, km_etcd_lease_ttl(e, id, &ttl, &g));
	assert_true(ttl >= 0 && ttl <= 2 && g == 2);
	t0 = km_util_now_ns();
	assert_true(wait_gone(e, "t/lease", 6000));
	assert_true(km_util_now_ns() - t0 > 500000000u); /* not at once */
	assert_int_equal(km_etcd_lease_keepalive(e, id, &ttl), -ENOENT);
	assert_non_null(strstr(km_etcd_errmsg(e), "not found"));
	assert_int_equal(km_etcd_lease_ttl(e, id, &ttl, NULL), -ENOENT);
	assert_int_equal(km_etcd_put(e, "t/lease", 7, "v", 1, id, NULL), -ENOENT);

	/* kept alive: still there after twice its TTL */
	OK(e, km_etcd_lease_grant(e, 2, &id, NULL));
	OK(e, km_etcd_lease_grant(e, 60, &id2, NULL));
	OK(e, km_etcd_put(e, "t/lease", 7, "v", 1, id, NULL));
	OK(e, km_etcd_put(e, "t/lease2", 8, "v", 1, id2, NULL));
	t0 = km_util_now_ns();
	while (km_util_now_ns() - t0 < 4000000000u) {
		OK(e, km_etcd_lease_keepalive(e, id, &ttl));
		assert_true(ttl == 2);
		sleep_ms(500);
	}
	assert_int_equal(count(e, "t/lease", 7), 2);

	/* revoked: its key goes at once */
	OK(e, km_etcd_lease_revoke(e, id2));
	assert_int_equal(count(e, "t/lease2", 8), 0);
	assert_int_equal(km_etcd_lease_revoke(e, id2), -ENOENT);
	OK(e, km_etcd_lease_revoke(e, id));
	assert_int_equal(count(e, "t/lease", 7), 0);
}

/* Read events from w until n have come (bounded), into ev[]. */
static size_t
collect(struct km_etcd *e, struct km_etcd_watch *w, struct km_etcd_kvs **batches, size_t max,
	size_t want)
{
	uint64_t end = km_util_now_ns() + 10000000000u;
	size_t got = 0, nb = 0;

	while (got < want && km_util_now_ns() < end) {
		struct km_etcd_kvs *r;
		int n = km_etcd_watch_next(w, 500, &r);

		if (n < 0)
			fail_msg("watch_next: %d %s", n, km_etcd_errmsg(e));
		if (n == 0)
			continue;
		assert_true(nb < max);
		batches[nb++] = r;
		got += (size_t)n;
	}
	assert_int_equal(got, want);
	return nb;
}

#define WRITES 60

/* Check the batches hold the writes of watch_writes() in order, from rev first. */
static void
check_events(struct km_etcd_kvs **b, size_t nb, int64_t first)
{
	size_t i, j, k = 0;

	for (i = 0; i < nb; i++) {
		for (j = 0; j < b[i]->n; j++, k++) {
			const struct km_etcd_kv *kv = &b[i]->kv[j];
			char key[32];

			assert_true(kv->mod_rev == first + (int64_t)k);
			if (k % 5 == 4) {
				snprintf(key, sizeof(key), "t/w/%zu", k - 1);
				assert_int_equal(kv->deleted, 1);
				assert_int_equal(kv->vlen, 0);
			} else {
				snprintf(key, sizeof(key), "t/w/%zu", k);
				assert_int_equal(kv->deleted, 0);
				assert_int_equal(kv->vlen, k * 997 % 20000);
				if (kv->vlen > 0)
					assert_int_equal(kv->value[kv->vlen - 1], (uint8_t)k);
			}
			assert_int_equal(kv->klen, strlen(key));
			assert_memory_equal(kv->key, key, kv->klen);
		}
		km_etcd_kvs_free(b[i]);
	}
	assert_int_equal(k, WRITES);
}

/* WRITES writes under t/w/: puts of values up to 20 KB, every fifth a delete. */
static void
watch_writes(struct km_etcd *e)
{
	static uint8_t val[20000];
	size_t k;

	for (k = 0; k < WRITES; k++) {
		char key[32];

		if (k % 5 == 4) {
			snprintf(key, sizeof(key), "t/w/%zu", k - 1);
			assert_int_equal(km_etcd_delete(e, key, strlen(key), 0, NULL), 1);
		} else {
			size_t len = k * 997 % 20000;

			snprintf(key, sizeof(key), "t/w/%zu", k);
			memset(val, (int)k, len);
			OK(e, km_etcd_put(e, key, strlen(key), val, len, 0, NULL));
		}
	}
}

static void
test_watch(void **state)
{
	struct km_etcd *e = *state;
	struct km_etcd_watch *w, *w2;
	struct km_etcd_kvs *b[WRITES], *r;
	int64_t start;
	size_t nb;

	km_etcd_delete(e, "t/", 2, KM_ETCD_PREFIX, NULL);
	assert_int_equal(km_etcd_get(e, "t/w/", 4, KM_ETCD_PREFIX, &r), 0);
	start = r->revision + 1;
	km_etcd_kvs_free(r);

	/* live: opened before the writes, from now on */
	OK(e, km_etcd_watch_open(e, "t/w/", 4, KM_ETCD_PREFIX, 0, &w));
	assert_int_equal(km_etcd_watch_next(w, 100, &r), 0); /* nothing yet */
	watch_writes(e);
	OK(e, km_etcd_put(e, "t/x", 3, "not watched", 11, 0, NULL));
	nb = collect(e, w, b, WRITES, WRITES);
	check_events(b, nb, start);
	assert_true(km_etcd_watch_next_rev(w) == start + WRITES);
	assert_int_equal(km_etcd_watch_next(w, 200, &r), 0);

	/* replayed: from a past revision, all in a few messages */
	OK(e, km_etcd_watch_open(e, "t/w/", 4, KM_ETCD_PREFIX, start, &w2));
	nb = collect(e, w2, b, WRITES, WRITES);
	check_events(b, nb, start);
	km_etcd_watch_close(w2);

	/* one key only, from a revision: the first put of t/w/0 and nothing else */
	OK(e, km_etcd_watch_open(e, "t/w/0", 5, 0, start, &w2));
	assert_int_equal(km_etcd_watch_next(w2, 2000, &r), 1);
	assert_true(r->kv[0].mod_rev == start);
	km_etcd_kvs_free(r);
	assert_int_equal(km_etcd_watch_next(w2, 200, &r), 0);
	km_etcd_watch_close(w2);

	/* compacted past the start: -ESTALE, and it stays so */
	OK(e, km_etcd_compact(e, start + WRITES));
	assert_int_equal(km_etcd_compact(e, start), -ESTALE);
	OK(e, km_etcd_watch_open(e, "t/w/", 4, KM_ETCD_PREFIX, start, &w2));
	assert_int_equal(km_etcd_watch_next(w2, 3000, &r), -ESTALE);
	assert_true(km_etcd_watch_compact_rev(w2) == start + WRITES);
	assert_non_null(strstr(km_etcd_errmsg(e), "compacted"));
	assert_int_equal(km_etcd_watch_next(w2, 0, &r), -ESTALE);
	km_etcd_watch_close(w2);
	assert_int_equal(km_etcd_get(e, "t/w/0", 5, KM_ETCD_PREFIX, &r), 1);
	km_etcd_kvs_free(r);

	/* the live watch goes on after all that */
	assert_int_equal(km_etcd_delete(e, "t/w/0", 5, 0, NULL), 1);
	assert_int_equal(km_etcd_watch_next(w, 2000, &r), 1);
	assert_int_equal(r->kv[0].deleted, 1);
	km_etcd_kvs_free(r);
	km_etcd_watch_close(w);
	km_etcd_delete(e, "t/", 2, KM_ETCD_PREFIX, NULL);
}

struct resign_arg {
	const struct km_etcd_leader *l;
	int rc;
};

/* A's thread: resign after a while, on a handle of its own. */
static void *
resign_later(void *p)
{
	struct resign_arg *a = p;
	struct km_etcd *e;

	sleep_ms(700);
	a->rc = km_etcd_open(endpoint, TIMEOUT_MS, &e);
	if (a->rc == 0) {
		a->rc = km_etcd_resign(e, a->l);
		km_etcd_close(e);
	}
	return NULL;
}

static void
test_election(void **state)
{
	static const char name[] = "t/placer";
	struct km_etcd *a = *state, *b;
	struct km_etcd_leader la, la2, lb, who;
	struct km_etcd_kvs *v;
	struct resign_arg arg = {.l = &la};
	int64_t lease_a, lease_b;
	uint64_t t0;
	pthread_t th;
	char keyhex[KM_ETCD_LEADER_KEY_MAX + 1];

	OK(a, km_etcd_open(endpoint, TIMEOUT_MS, &b));
	OK(a, km_etcd_lease_grant(a, 30, &lease_a, NULL));
	OK(b, km_etcd_lease_grant(b, 30, &lease_b, NULL));
	assert_int_equal(km_etcd_leader(a, name, strlen(name), &who, NULL), -ENOENT);

	/* A leads; campaigning again with its lease is the same candidacy */
	OK(a, km_etcd_campaign(a, name, strlen(name), lease_a, "A", 1, 2000, &la));
	snprintf(keyhex, sizeof(keyhex), "%s/%llx", name, (unsigned long long)lease_a);
	assert_int_equal(la.klen, strlen(keyhex));
	assert_memory_equal(la.key, keyhex, la.klen);
	assert_true(la.lease == lease_a && la.rev > 0);
	OK(a, km_etcd_campaign(a, name, strlen(name), lease_a, "A", 1, 2000, &la2));
	assert_true(la2.rev == la.rev && la2.klen == la.klen);
	OK(a, km_etcd_leader(a, name, strlen(name), &who, &v));
	assert_true(who.rev == la.rev && who.lease == lease_a);
	assert_memory_equal(who.key, la.key, la.klen);
	assert_int_equal(v->n, 1);
	assert_int_equal(v->kv[0].vlen, 1);
	assert_memory_equal(v->kv[0].value, "A", 1);
	km_etcd_kvs_free(v);

	/* B waits behind A and gives up; etcd then drops B's candidate key */
	t0 = km_util_now_ns();
	assert_int_equal(
		km_etcd_campaign(b, name, strlen(name), lease_b, "B", 1, 1000, &lb), -ETIMEDOUT);
	assert_true(km_util_now_ns() - t0 >= 900000000u);
	assert_non_null(strstr(km_etcd_errmsg(b), "not leader after 1000 ms"));
	t0 = km_util_now_ns();
	while (count(a, "t/placer/", 9) != 1 && km_util_now_ns() - t0 < 3000000000u)
		sleep_ms(50);
	assert_int_equal(count(a, "t/placer/", 9), 1);

	/* B campaigns again and wins once A resigns (from another thread) */
	assert_int_equal(pthread_create(&th, NULL, resign_later, &arg), 0);
	t0 = km_util_now_ns();
	OK(b, km_etcd_campaign(b, name, strlen(name), lease_b, "B", 1, 5000, &lb));
	assert_true(km_util_now_ns() - t0 >= 500000000u);
	pthread_join(th, NULL);
	assert_int_equal(arg.rc, 0);
	OK(a, km_etcd_leader(a, name, strlen(name), &who, &v));
	assert_true(who.rev == lb.rev && who.lease == lease_b);
	assert_memory_equal(v->kv[0].value, "B", 1);
	km_etcd_kvs_free(v);

	/* the leader publishes in a transaction guarded by its key; A's stale key cannot */
	{
		struct km_etcd_cmp guard = {.key = lb.key,
			.klen = lb.klen,
			.target = KM_ETCD_CREATE,
			.result = KM_ETCD_EQUAL,
			.num = lb.rev};
		struct km_etcd_op pub[2] = {
			{.type = KM_ETCD_OP_PUT,
				.key = "t/map/7",
				.klen = 7,
				.value = "m7",
				.vlen = 2},
			{.type = KM_ETCD_OP_PUT,
				.key = "t/map/current",
				.klen = 13,
				.value = "7",
				.vlen = 1},
		};
		struct km_etcd_cmp stale = {.key = la.key,
			.klen = la.klen,
			.target = KM_ETCD_CREATE,
			.result = KM_ETCD_EQUAL,
			.num = la.rev};

		assert_int_equal(km_etcd_txn(a, &guard, 1, pub, 2, NULL, 0, NULL, NULL), 1);
		assert_int_equal(km_etcd_txn(a, &stale, 1, pub, 2, NULL, 0, NULL, NULL), 0);
		assert_int_equal(count(a, "t/map/", 6), 2);
	}

	/* proclaim by the leader, not by the one that resigned; a stale resign is harmless */
	OK(b, km_etcd_proclaim(b, &lb, "B2", 2));
	OK(a, km_etcd_leader(a, name, strlen(name), NULL, &v));
	assert_int_equal(v->kv[0].vlen, 2);
	assert_memory_equal(v->kv[0].value, "B2", 2);
	km_etcd_kvs_free(v);
	assert_int_equal(km_etcd_proclaim(a, &la, "A2", 2), -EPERM);
	OK(a, km_etcd_resign(a, &la));
	OK(a, km_etcd_leader(a, name, strlen(name), &who, NULL));
	assert_true(who.rev == lb.rev);

	/* the leader's lease goes: no leader */
	OK(b, km_etcd_lease_revoke(b, lease_b));
	assert_int_equal(km_etcd_leader(a, name, strlen(name), &who, NULL), -ENOENT);
	assert_int_equal(
		km_etcd_campaign(a, name, strlen(name), lease_b, "x", 1, 1000, &lb), -ENOENT);
	OK(a, km_etcd_lease_revoke(a, lease_a));
	km_etcd_delete(a, "t/", 2, KM_ETCD_PREFIX, NULL);
	km_etcd_close(b);
}

static void
test_endpoints(void **state)
{
	struct km_etcd *e;
	struct km_etcd_watch *w;
	struct km_etcd_kvs *r;
	char list[512], want[256];

	(void)state;
	/* the first is closed: the second answers, and is then tried first */
	snprintf(list, sizeof(list), "%s,%s", closed, endpoint);
	OK(NULL, km_etcd_open(list, TIMEOUT_MS, &e));
	assert_string_equal(km_etcd_endpoint(e), closed);
	OK(e, km_etcd_put(e, "t/ep", 4, "1", 1, 0, NULL));
	assert_string_equal(km_etcd_endpoint(e), endpoint);
	assert_int_equal(km_etcd_get(e, "t/ep", 4, 0, &r), 1);
	km_etcd_kvs_free(r);
	km_etcd_close(e);
	/* a watch fails over too */
	OK(NULL, km_etcd_open(list, TIMEOUT_MS, &e));
	OK(e, km_etcd_watch_open(e, "t/ep", 4, 0, 0, &w));
	OK(e, km_etcd_delete(e, "t/ep", 4, 0, NULL));
	assert_int_equal(km_etcd_watch_next(w, 2000, &r), 1);
	km_etcd_kvs_free(r);
	km_etcd_watch_close(w);
	km_etcd_close(e);

	/* none reachable: the errno, and every endpoint named */
	snprintf(list, sizeof(list), "%s,%s", closed, closed);
	OK(NULL, km_etcd_open(list, TIMEOUT_MS, &e));
	assert_int_equal(km_etcd_put(e, "t/ep", 4, "1", 1, 0, NULL), -ECONNREFUSED);
	snprintf(want, sizeof(want), "etcd %s: connection refused; %s: connection refused", closed,
		closed);
	assert_string_equal(km_etcd_errmsg(e), want);
	assert_int_equal(km_etcd_watch_open(e, "t/ep", 4, 0, 0, &w), -ECONNREFUSED);
	assert_string_equal(km_etcd_errmsg(e), want);
	km_etcd_close(e);

	/* malformed lists */
	assert_int_equal(km_etcd_open("http://127.0.0.1", TIMEOUT_MS, &e), -EINVAL);
	assert_int_equal(km_etcd_open("https://127.0.0.1:2379", TIMEOUT_MS, &e), -EINVAL);
	assert_int_equal(km_etcd_open("http://127.0.0.1:2379,", TIMEOUT_MS, &e), -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_kv_binary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_txn_cas, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lease, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_election, setup, teardown),
		cmocka_unit_test(test_endpoints),
	};

	endpoint = getenv("KM_ETCD_ENDPOINT");
	closed = getenv("KM_ETCD_CLOSED");
	if (endpoint == NULL || closed == NULL) {
		fprintf(stderr, "KM_ETCD_ENDPOINT and KM_ETCD_CLOSED must be set (etcd.sh)\n");
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
