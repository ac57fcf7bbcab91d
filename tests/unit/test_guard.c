/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The processor's guards (lib/proc/proc_guard.c): HELLO cookies (no reply larger than its
 * request to a source without a valid one) and client keys (MACs, permissions). One
 * worker, 512 shards (a MAP chunk outgrows any request), the mem store.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <km_proc.h>

#define SLOT_MS 1000
#define MS      1000000ull
#define SRC     0xc6336401abcdULL /* 198.51.100.1:0xabcd */

static const uint8_t K_RW[KM_MAC_KEY_LEN] = {1, 2, 3};
static const uint8_t K_RO[KM_MAC_KEY_LEN] = {4, 5, 6};

struct env {
	struct km_shardmap *map;
	struct km_proc *proc;
	struct km_proc *proc2; /* another worker: the same secrets, its own cookie cache */
	struct km_hello_secrets hs;
	struct km_auth auth;
	struct km_auth_key keys[2];
	char pfx[8];
};

static int
setup(void **state)
{
	struct km_shardmap_params mp = {.nb_shards = 512,
		.nb_workers = 1,
		.udp_port_base = 7070,
		.route_sep = '/',
		.route_depth = 1};
	struct km_proc_params pp = {.value_max = 1000, .store_driver = "mem", .version_base = 1};
	struct env *e = calloc(1, sizeof(*e));
	uint32_t i;

	if (e == NULL || km_shardmap_create(&mp, &e->map) != 0 ||
		km_hello_init(&e->hs, SLOT_MS, 100 * SLOT_MS * MS) != 0)
		return -1;
	pp.hello = &e->hs;
	if (km_proc_create(&pp, &e->proc) != 0 || km_proc_create(&pp, &e->proc2) != 0)
		return -1;
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++)
		if (km_proc_shard_add(e->proc, km_shard_id(km_shardmap_shard_at(e->map, i))) != 0 ||
			km_proc_shard_add(e->proc2, km_shard_id(km_shardmap_shard_at(e->map, i))) !=
				0)
			return -1;
	km_proc_time(e->proc, 100 * SLOT_MS * MS);
	km_proc_time(e->proc2, 100 * SLOT_MS * MS);
	/* Key 1: read-write, every key; key 2: read-only, keys under pub/. */
	e->keys[0] = (struct km_auth_key){.id = 1, .write = 1};
	memcpy(e->keys[0].secret, K_RW, sizeof(K_RW));
	strcpy(e->pfx, "pub/");
	e->keys[1] = (struct km_auth_key){
		.id = 2, .nb_prefix = 1, .prefix_len = {4}, .prefix = {e->pfx}};
	memcpy(e->keys[1].secret, K_RO, sizeof(K_RO));
	e->auth = (struct km_auth){.required = 1, .nb = 2, .keys = e->keys};
	*state = e;
	return 0;
}

static int
teardown(void **state)
{
	struct env *e = *state;

	km_proc_destroy(e->proc);
	km_proc_destroy(e->proc2);
	km_shardmap_free(e->map);
	free(e);
	return 0;
}

struct rq {
	uint8_t op;
	const char *key;
	const void *val;
	uint32_t val_len;
	int cookie; /* attach cookie c */
	uint64_t c;
	uint32_t key_id; /* with key: MAC */
	const uint8_t *key_secret;
	uint64_t version; /* MAP cursor */
};

/* Build, seal, run; the reply in buf. @return the reply length (0: not a reply). */
static size_t
run(struct env *e, const struct rq *q, uint8_t *buf, size_t cap, int handed, size_t *req_len)
{
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = q->op,
		.key_len = q->key == NULL ? 0 : (uint16_t)strlen(q->key),
		.val_len = q->val_len,
		.req_id = 99,
		.version = q->version,
	};
	struct km_proc_req r;
	size_t len = km_msg_build(buf, cap, &h, q->key, q->val);

	assert_true(len > 0);
	len = km_req_seal(buf, len, cap, q->cookie, q->c, q->key_id, q->key_secret);
	assert_true(len > 0);
	*req_len = len;
	r = (struct km_proc_req){.buf = buf,
		.len = len,
		.cap = cap,
		.src = SRC,
		.port_worker = 0,
		.handed = (uint8_t)handed};
	km_proc_rx(e->proc, e->map, &r);
	return r.verdict == KM_PROC_REPLY ? r.reply_len : 0;
}

/* Run q; check status (and for DENIED the reason); return the reply's header. */
static struct km_hdr
expect(struct env *e, const struct rq *q, uint8_t status, uint64_t reason)
{
	uint8_t buf[KM_DGRAM_MAX];
	size_t req_len, len = run(e, q, buf, sizeof(buf), 0, &req_len);
	struct km_msg m;

	assert_true(len >= KM_HDR_LEN);
	assert_int_equal(km_reply_parse(buf, len, &m), 0);
	assert_int_equal(m.hdr.status, status);
	if (status == KM_ST_DENIED) {
		assert_int_equal(m.hdr.version, reason);
		assert_true(len <= req_len); /* never larger than the request */
	}
	return m.hdr;
}

static uint64_t
hello(struct env *e, uint32_t *valid_ms, uint32_t *flags)
{
	static const uint8_t pad[KM_HELLO_LEN];
	struct rq q = {.op = KM_OP_HELLO, .val = pad, .val_len = KM_HELLO_LEN};
	uint8_t buf[KM_DGRAM_MAX];
	size_t req_len, len = run(e, &q, buf, sizeof(buf), 0, &req_len);

	assert_int_equal(len, KM_HDR_LEN + KM_HELLO_LEN);
	assert_int_equal(len, req_len);
	assert_int_equal(buf[3], KM_ST_OK);
	*valid_ms = km_get32(buf + KM_HDR_LEN + 8);
	*flags = km_get32(buf + KM_HDR_LEN + 12);
	return km_get64(buf + KM_HDR_LEN);
}

static void
test_cookies(void **state)
{
	struct env *e = *state;
	char big[600];
	uint32_t valid_ms, flags;
	uint64_t c;
	struct km_hdr h;
	const struct km_proc_counters *cnt = km_proc_counters(e->proc);

	memset(big, 'v', sizeof(big));
	expect(e, &(struct rq){.op = KM_OP_PUT, .key = "big", .val = big, .val_len = 600}, KM_ST_OK,
		0);
	expect(e, &(struct rq){.op = KM_OP_PUT, .key = "s", .val = "x", .val_len = 1}, KM_ST_OK, 0);
	/* Without a cookie: GET of a value larger than the request, MAP: DENIED (cookie). A
	 * reply no larger than the request goes (a 1-byte value, a miss). */
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "big"}, KM_ST_DENIED, KM_DENY_COOKIE);
	expect(e, &(struct rq){.op = KM_OP_MAP}, KM_ST_DENIED, KM_DENY_COOKIE);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "s"}, KM_ST_OK, 0);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "none"}, KM_ST_NOT_FOUND, 0);
	assert_int_equal(cnt->denied_cookie, 2);

	c = hello(e, &valid_ms, &flags);
	assert_int_equal(valid_ms, SLOT_MS);
	assert_int_equal(flags, KM_HELLO_F_COOKIES);
	h = expect(
		e, &(struct rq){.op = KM_OP_GET, .key = "big", .cookie = 1, .c = c}, KM_ST_OK, 0);
	assert_int_equal(h.val_len, 600);
	expect(e, &(struct rq){.op = KM_OP_MAP, .cookie = 1, .c = c}, KM_ST_OK, 0);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "big", .cookie = 1, .c = c + 1},
		KM_ST_DENIED, KM_DENY_COOKIE);
	/* Good in its slot and the next, not after; the rotator draws ahead, never a slot
	 * in use. */
	km_hello_rotate(&e->hs, 101 * SLOT_MS * MS + 5);
	km_proc_time(e->proc, 101 * SLOT_MS * MS + 5);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "big", .cookie = 1, .c = c}, KM_ST_OK, 0);
	/* Another worker, which never saw it: computed for the slot before. */
	km_proc_time(e->proc2, 101 * SLOT_MS * MS + 5);
	{
		struct km_proc *p1 = e->proc;
		struct km_hdr h2;

		e->proc = e->proc2;
		expect(e, &(struct rq){.op = KM_OP_PUT, .key = "big", .val = big, .val_len = 600},
			KM_ST_OK, 0);
		h2 = expect(e, &(struct rq){.op = KM_OP_GET, .key = "big", .cookie = 1, .c = c},
			KM_ST_OK, 0);
		assert_int_equal(h2.val_len, 600);
		e->proc = p1;
	}
	/* A rotator late by slots: what is in use is not redrawn. */
	km_hello_rotate(&e->hs, 101 * SLOT_MS * MS + 6);
	km_proc_time(e->proc, 101 * SLOT_MS * MS + 7);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "big", .cookie = 1, .c = c}, KM_ST_OK, 0);
	km_proc_time(e->proc, 102 * SLOT_MS * MS);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "big", .cookie = 1, .c = c}, KM_ST_DENIED,
		KM_DENY_COOKIE);
	/* A fresh one works again; a stalled rotator (three slots late) leaves it valid. */
	km_hello_rotate(&e->hs, 105 * SLOT_MS * MS);
	km_proc_time(e->proc, 105 * SLOT_MS * MS);
	c = hello(e, &valid_ms, &flags);
	km_proc_time(e->proc, 106 * SLOT_MS * MS + SLOT_MS * MS / 2);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "big", .cookie = 1, .c = c}, KM_ST_OK, 0);
	km_hello_rotate(&e->hs, 106 * SLOT_MS * MS + SLOT_MS * MS / 2);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "big", .cookie = 1, .c = c}, KM_ST_OK, 0);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "big", .cookie = 1, .c = c}, KM_ST_OK, 0);
	assert_int_equal(cnt->req_hello, 2);
}

static void
test_mget_cookie(void **state)
{
	struct env *e = *state;
	char big[300];
	uint8_t body[64];
	uint32_t valid_ms, flags;
	uint64_t c;

	memset(big, 'v', sizeof(big));
	expect(e, &(struct rq){.op = KM_OP_PUT, .key = "m", .val = big, .val_len = 300}, KM_ST_OK,
		0);
	km_put16(body, 1);
	body[2] = 1;
	body[3] = 'm';
	expect(e, &(struct rq){.op = KM_OP_MGET, .val = body, .val_len = 4}, KM_ST_DENIED,
		KM_DENY_COOKIE);
	c = hello(e, &valid_ms, &flags);
	expect(e, &(struct rq){.op = KM_OP_MGET, .val = body, .val_len = 4, .cookie = 1, .c = c},
		KM_ST_OK, 0);
}

static void
test_auth(void **state)
{
	struct env *e = *state;
	const struct km_proc_counters *cnt = km_proc_counters(e->proc);
	uint8_t buf[KM_DGRAM_MAX], body[64];
	uint32_t valid_ms, flags;
	size_t req_len;
	uint64_t c;

	km_proc_set_auth(e->proc, &e->auth);
	/* Required: no MAC, an unknown id, a wrong key: DENIED (auth). */
	expect(e, &(struct rq){.op = KM_OP_PING}, KM_ST_DENIED, KM_DENY_AUTH);
	expect(e, &(struct rq){.op = KM_OP_PUT, .key = "pub/a", .key_id = 3, .key_secret = K_RW},
		KM_ST_DENIED, KM_DENY_AUTH);
	expect(e, &(struct rq){.op = KM_OP_PUT, .key = "pub/a", .key_id = 1, .key_secret = K_RO},
		KM_ST_DENIED, KM_DENY_AUTH);
	assert_int_equal(cnt->denied_auth, 3);
	/* The rw key writes anything; the ro key reads pub/ only. */
	expect(e,
		&(struct rq){.op = KM_OP_PUT,
			.key = "pub/a",
			.val = "1",
			.val_len = 1,
			.key_id = 1,
			.key_secret = K_RW},
		KM_ST_OK, 0);
	expect(e, &(struct rq){.op = KM_OP_DEL, .key = "x", .key_id = 1, .key_secret = K_RW},
		KM_ST_NOT_FOUND, 0);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "pub/a", .key_id = 2, .key_secret = K_RO},
		KM_ST_OK, 0);
	expect(e, &(struct rq){.op = KM_OP_GET, .key = "priv", .key_id = 2, .key_secret = K_RO},
		KM_ST_DENIED, KM_DENY_PERM);
	expect(e, &(struct rq){.op = KM_OP_PUT, .key = "pub/a", .key_id = 2, .key_secret = K_RO},
		KM_ST_DENIED, KM_DENY_PERM);
	/* MGET: every key must be allowed. */
	km_put16(body, 2);
	memcpy(body + 2, "\x05pub/a\x04priv", 11);
	expect(e,
		&(struct rq){.op = KM_OP_MGET,
			.val = body,
			.val_len = 13,
			.key_id = 2,
			.key_secret = K_RO},
		KM_ST_DENIED, KM_DENY_PERM);
	assert_int_equal(cnt->denied_perm, 3);
	/* HELLO with a MAC tells that auth is required; the cookie and MAC go together. */
	{
		static const uint8_t pad[KM_HELLO_LEN];
		struct rq q = {.op = KM_OP_HELLO,
			.val = pad,
			.val_len = KM_HELLO_LEN,
			.key_id = 2,
			.key_secret = K_RO};
		size_t len = run(e, &q, buf, sizeof(buf), 0, &req_len);

		assert_int_equal(len, KM_HDR_LEN + KM_HELLO_LEN);
		c = km_get64(buf + KM_HDR_LEN);
		assert_int_equal(
			km_get32(buf + KM_HDR_LEN + 12), KM_HELLO_F_COOKIES | KM_HELLO_F_AUTH);
	}
	expect(e,
		&(struct rq){.op = KM_OP_MAP, .cookie = 1, .c = c, .key_id = 2, .key_secret = K_RO},
		KM_ST_OK, 0);
	/* A request handed over by another worker was checked there. */
	assert_true(run(e, &(struct rq){.op = KM_OP_PING}, buf, sizeof(buf), 1, &req_len) > 0);
	assert_int_equal(buf[3], KM_ST_OK);
	/* Not required: no MAC is served, a wrong MAC is still refused. */
	e->auth.required = 0;
	expect(e, &(struct rq){.op = KM_OP_PUT, .key = "priv", .val = "2", .val_len = 1}, KM_ST_OK,
		0);
	expect(e, &(struct rq){.op = KM_OP_PUT, .key = "pub/a", .key_id = 1, .key_secret = K_RO},
		KM_ST_DENIED, KM_DENY_AUTH);
	/* No table: a MAC names an unknown key. */
	km_proc_set_auth(e->proc, NULL);
	expect(e, &(struct rq){.op = KM_OP_PING, .key_id = 1, .key_secret = K_RW}, KM_ST_DENIED,
		KM_DENY_AUTH);
	expect(e, &(struct rq){.op = KM_OP_PING}, KM_ST_OK, 0);
	(void)valid_ms;
	(void)flags;
}

static void
test_hello_parse(void **state)
{
	struct env *e = *state;
	uint8_t pad[KM_HELLO_LEN + 1] = {0};

	expect(e, &(struct rq){.op = KM_OP_HELLO}, KM_ST_BAD_REQUEST, 0);
	expect(e, &(struct rq){.op = KM_OP_HELLO, .val = pad, .val_len = KM_HELLO_LEN + 1},
		KM_ST_BAD_REQUEST, 0);
	expect(e, &(struct rq){.op = KM_OP_HELLO, .key = "k", .val = pad, .val_len = KM_HELLO_LEN},
		KM_ST_BAD_REQUEST, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cookies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mget_cookie, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello_parse, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
