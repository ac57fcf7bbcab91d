/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Target codec tests: requests and replies of the keymap protocol (checked with the
 * protocol library's own parser and builder), echo mode, and memcached's binary protocol
 * over UDP against hand-written request bytes and replies captured from memcached
 * 1.6.18; limits and names.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <km_proto.h>
#include <km_target.h>
#include <km_workload.h>

#define BUF 2048

/* A keymap server's reply to req: op and req_id echoed, status, optional value. */
static size_t
keymap_reply(const uint8_t *req, size_t len, uint8_t status, const char *val, uint8_t *out)
{
	struct km_msg m;
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.flags = KM_F_REPLY,
		.epoch = 1,
		.version = 7,
	};

	assert_int_equal(km_req_parse(req, len, KM_VALUE_MAX, &m), KM_ST_OK);
	h.op = m.hdr.op;
	h.req_id = m.hdr.req_id;
	h.status = status;
	h.val_len = val != NULL ? (uint32_t)strlen(val) : 0;
	return km_msg_build(out, BUF, &h, NULL, val);
}

/* Parse a reply of kind and compare what it says. */
static void
expect_reply(enum km_tgt_kind kind, const uint8_t *buf, size_t len, uint32_t req_id, uint8_t result,
	uint16_t status, uint32_t val_len)
{
	struct km_tgt_reply r;

	memset(&r, 0xff, sizeof(r));
	assert_int_equal(km_tgt_parse(kind, buf, len, &r), 0);
	assert_int_equal(r.req_id, req_id);
	assert_int_equal(r.result, result);
	assert_int_equal(r.status, status);
	assert_int_equal(r.val_len, val_len);
}

/* keymapd answers req with status (and val): the bench must read result. */
static void
expect_keymap_answer(const uint8_t *req, size_t len, uint32_t req_id, uint8_t status,
	const char *val, uint8_t result)
{
	uint8_t rep[BUF];
	size_t rlen = keymap_reply(req, len, status, val, rep);

	expect_reply(KM_TGT_KEYMAP, rep, rlen, req_id, result, status,
		val != NULL ? (uint32_t)strlen(val) : 0);
}

static void
test_keymap_get(void **state)
{
	uint8_t req[BUF];
	struct km_msg m;
	size_t len;

	(void)state;
	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_GET, 0x89abcdef, 42, "user/42", 7, "ignored", 7,
		req, sizeof(req));
	assert_int_equal(len, KM_HDR_LEN + 7);
	assert_int_equal(km_req_parse(req, len, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.op, KM_OP_GET);
	assert_int_equal(m.hdr.req_id, 0x89abcdef);
	assert_int_equal(m.hdr.session, 42);
	assert_int_equal(m.hdr.epoch, 0); /* unsteered */
	assert_int_equal(m.hdr.version, 0);
	assert_int_equal(m.hdr.key_len, 7);
	assert_int_equal(m.hdr.val_len, 0);
	assert_memory_equal(m.key, "user/42", 7);

	expect_keymap_answer(req, len, 0x89abcdef, KM_ST_OK, "hello", KM_TGT_R_HIT);
	expect_keymap_answer(req, len, 0x89abcdef, KM_ST_NOT_FOUND, NULL, KM_TGT_R_MISS);
	expect_keymap_answer(req, len, 0x89abcdef, KM_ST_MOVED, NULL, KM_TGT_R_ERROR);
	expect_keymap_answer(req, len, 0x89abcdef, KM_ST_BUSY, NULL, KM_TGT_R_ERROR);
}

static void
test_keymap_put(void **state)
{
	uint8_t req[BUF], req2[BUF];
	struct km_msg m;
	size_t len, i;

	(void)state;
	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_PUT, 17, 0, "k1", 2, "hello", 5, req, sizeof(req));
	assert_int_equal(len, KM_HDR_LEN + 2 + 5);
	assert_int_equal(km_req_parse(req, len, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.op, KM_OP_PUT);
	assert_int_equal(m.hdr.req_id, 17);
	assert_int_equal(m.hdr.session, 0);
	assert_memory_equal(m.key, "k1", 2);
	assert_memory_equal(m.val, "hello", 5);

	expect_keymap_answer(req, len, 17, KM_ST_OK, NULL, KM_TGT_R_STORED);
	expect_keymap_answer(req, len, 17, KM_ST_MOVED, NULL, KM_TGT_R_ERROR);
	expect_keymap_answer(req, len, 17, KM_ST_BUSY, NULL, KM_TGT_R_ERROR);
	expect_keymap_answer(req, len, 17, KM_ST_TOO_LARGE, NULL, KM_TGT_R_ERROR);

	/* No value given: a fixed pattern of vlen bytes, the same every time. */
	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_PUT, 18, 0, "k1", 2, NULL, 300, req, sizeof(req));
	assert_int_equal(len, KM_HDR_LEN + 2 + 300);
	assert_int_equal(km_req_parse(req, len, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.val_len, 300);
	memset(req2, 0, sizeof(req2));
	assert_int_equal(km_tgt_build(KM_TGT_KEYMAP, KM_WL_PUT, 18, 0, "k1", 2, NULL, 300, req2,
				 sizeof(req2)),
		len);
	assert_memory_equal(req, req2, len);
	for (i = 1; i < 300 && m.val[i] == m.val[0]; i++)
		;
	assert_true(i < 300); /* not a constant fill that would hide a misplaced offset */
}

static void
test_keymap_del(void **state)
{
	uint8_t req[BUF];
	struct km_msg m;
	size_t len;

	(void)state;
	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_DEL, 19, 3, "k1", 2, NULL, 10, req, sizeof(req));
	assert_int_equal(len, KM_HDR_LEN + 2);
	assert_int_equal(km_req_parse(req, len, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.op, KM_OP_DEL);
	assert_int_equal(m.hdr.version, 0); /* unconditional */

	expect_keymap_answer(req, len, 19, KM_ST_OK, NULL, KM_TGT_R_STORED);
	expect_keymap_answer(req, len, 19, KM_ST_NOT_FOUND, NULL, KM_TGT_R_MISS);
}

static void
test_keymap_rejects(void **state)
{
	uint8_t req[BUF], rep[BUF];
	struct km_tgt_reply r;
	struct km_hdr h;
	size_t len, rlen;

	(void)state;
	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_GET, 5, 0, "k", 1, NULL, 0, req, sizeof(req));
	assert_int_not_equal(len, 0);
	/* A request is not a reply (no reply flag). */
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, req, len, &r), -1);

	rlen = keymap_reply(req, len, KM_ST_OK, "v", rep);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), 0);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen - 1, &r), -1); /* truncated */
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, KM_HDR_LEN - 1, &r), -1);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, 0, &r), -1);
	rep[0] ^= 0xff; /* magic */
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), -1);
	rep[0] ^= 0xff;

	/* An answer to an op the bench never sends. */
	km_hdr_decode(rep, &h);
	h.op = KM_OP_MAP;
	km_hdr_encode(rep, &h);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), -1);
	/* All 64 bits of the id come back. */
	h.op = KM_OP_GET;
	h.req_id = 0xfedcba9876543210ull;
	km_hdr_encode(rep, &h);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), 0);
	assert_true(r.req_id == 0xfedcba9876543210ull);
}

static void
test_echo(void **state)
{
	uint8_t req[BUF], rep[BUF];
	struct km_tgt_reply r;
	size_t len, rlen;

	(void)state;
	/* Echo requests are keymap requests. */
	len = km_tgt_build(
		KM_TGT_ECHO, KM_WL_GET, 0xfeed0001, 9, "abc", 3, NULL, 0, req, sizeof(req));
	assert_int_equal(len, km_tgt_build(KM_TGT_KEYMAP, KM_WL_GET, 0xfeed0001, 9, "abc", 3, NULL,
				      0, rep, sizeof(rep)));
	assert_memory_equal(req, rep, len);

	/* keymapd in echo mode returns the request itself. */
	expect_reply(KM_TGT_ECHO, req, len, 0xfeed0001, KM_TGT_R_HIT, 0, 0);

	len = km_tgt_build(
		KM_TGT_ECHO, KM_WL_PUT, 0xfeed0002, 9, "abc", 3, NULL, 100, req, sizeof(req));
	assert_int_equal(len, KM_HDR_LEN + 3 + 100);
	expect_reply(KM_TGT_ECHO, req, len, 0xfeed0002, KM_TGT_R_STORED, 0, 100);

	/* Not a returned request: truncated, or a real reply. */
	assert_int_equal(km_tgt_parse(KM_TGT_ECHO, req, len - 1, &r), -1);
	assert_int_equal(km_tgt_parse(KM_TGT_ECHO, req, 10, &r), -1);
	assert_int_equal(km_tgt_parse(KM_TGT_ECHO, req, len + 1, &r), -1); /* a byte too many */
	req[0] ^= 0xff;                                                    /* not ours */
	assert_int_equal(km_tgt_parse(KM_TGT_ECHO, req, len, &r), -1);
	req[0] ^= 0xff;
	req[1]++; /* another version */
	assert_int_equal(km_tgt_parse(KM_TGT_ECHO, req, len, &r), -1);
	req[1]--;
	/* A cookie announced and not there; then there. */
	req[4] |= KM_F_COOKIE;
	assert_int_equal(km_tgt_parse(KM_TGT_ECHO, req, len, &r), -1);
	memset(req + len, 0, KM_COOKIE_LEN);
	expect_reply(KM_TGT_ECHO, req, len + KM_COOKIE_LEN, 0xfeed0002, KM_TGT_R_STORED, 0, 100);
	req[4] &= (uint8_t)~KM_F_COOKIE;
	rlen = keymap_reply(req, len, KM_ST_OK, NULL, rep);
	assert_int_equal(km_tgt_parse(KM_TGT_ECHO, rep, rlen, &r), -1);
}

/* Hand-written from the protocol description: frame, then the 24-byte header. */
/* clang-format off */
static const uint8_t mc_get_foo[] = {
	0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, /* frame: id 2, seq 0, total 1 */
	0x80, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, /* magic, GET, klen 3, no extras */
	0x00, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x02, /* body 3, opaque 0x00010002 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* CAS */
	'f', 'o', 'o',
};
static const uint8_t mc_set_foo_bar[] = {
	0xbe, 0xef, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, /* frame: id 0xbeef */
	0x80, 0x01, 0x00, 0x03, 0x08, 0x00, 0x00, 0x00, /* magic, SET, klen 3, extras 8 */
	0x00, 0x00, 0x00, 0x0e, 0xde, 0xad, 0xbe, 0xef, /* body 14, opaque 0xdeadbeef */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* CAS */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* flags 0, expiration 0 */
	'f', 'o', 'o', 'b', 'a', 'r',
};
/* Replies of memcached 1.6.18 (-U, loopback) to GET miss, SET and GET hit. */
static const uint8_t mc_rep_miss[] = {
	0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
	0x81, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* status 1: key not found */
	0x00, 0x00, 0x00, 0x09, 0x00, 0x01, 0x00, 0x01,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	'N', 'o', 't', ' ', 'f', 'o', 'u', 'n', 'd',
};
static const uint8_t mc_rep_stored[] = {
	0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
	0x81, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x02,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* CAS 1 */
};
static const uint8_t mc_rep_hit[] = {
	0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
	0x81, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, /* extras 4: the flags */
	0x00, 0x00, 0x00, 0x0f, 0x00, 0x03, 0x00, 0x03,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x00, 0x00, 0x00, 0x00,
	'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd',
};
/* clang-format on */

static void
test_memcached_request_bytes(void **state)
{
	uint8_t buf[BUF], other[BUF];
	size_t len;

	(void)state;
	len = km_tgt_build(
		KM_TGT_MEMCACHED, KM_WL_GET, 0x00010002, 77, "foo", 3, NULL, 0, buf, sizeof(buf));
	assert_int_equal(len, sizeof(mc_get_foo));
	assert_memory_equal(buf, mc_get_foo, len);

	memset(buf, 0xa5, sizeof(buf));
	len = km_tgt_build(
		KM_TGT_MEMCACHED, KM_WL_PUT, 0xdeadbeef, 0, "foo", 3, "bar", 3, buf, sizeof(buf));
	assert_int_equal(len, sizeof(mc_set_foo_bar));
	assert_memory_equal(buf, mc_set_foo_bar, len);

	/* A DEL of a trace: DELETE (0x04), no extras, no value. */
	len = km_tgt_build(
		KM_TGT_MEMCACHED, KM_WL_DEL, 0x00010002, 0, "foo", 3, NULL, 5, buf, sizeof(buf));
	assert_int_equal(len, sizeof(mc_get_foo));
	assert_int_equal(buf[9], 0x04);
	buf[9] = 0x00;
	assert_memory_equal(buf, mc_get_foo, len);

	/* Pattern value: vlen bytes after the key, the body length counts them. */
	len = km_tgt_build(KM_TGT_MEMCACHED, KM_WL_PUT, 1, 0, "foo", 3, NULL, 50, buf, sizeof(buf));
	assert_int_equal(len, 8 + 24 + 8 + 3 + 50);
	assert_int_equal(buf[19], 8 + 3 + 50);
	/* The pattern is written, whatever the buffer held. */
	memset(other, 0x5a, sizeof(other));
	assert_int_equal(km_tgt_build(KM_TGT_MEMCACHED, KM_WL_PUT, 1, 0, "foo", 3, NULL, 50, other,
				 sizeof(other)),
		len);
	assert_memory_equal(buf, other, len);
}

static void
test_memcached_replies(void **state)
{
	(void)state;
	/* "Not found" is a message, not a value. */
	expect_reply(KM_TGT_MEMCACHED, mc_rep_miss, sizeof(mc_rep_miss), 0x00010001, KM_TGT_R_MISS,
		1, 0);
	expect_reply(KM_TGT_MEMCACHED, mc_rep_stored, sizeof(mc_rep_stored), 0x00020002,
		KM_TGT_R_STORED, 0, 0);
	/* The value without the 4 bytes of flags. */
	expect_reply(
		KM_TGT_MEMCACHED, mc_rep_hit, sizeof(mc_rep_hit), 0x00030003, KM_TGT_R_HIT, 0, 11);
}

static void
test_memcached_reply_rejects(void **state)
{
	uint8_t b[sizeof(mc_rep_hit)];
	struct km_tgt_reply r;

	(void)state;
	/* Another error status: reported with the server's code. */
	memcpy(b, mc_rep_miss, sizeof(mc_rep_miss));
	b[15] = 0x82; /* out of memory */
	expect_reply(KM_TGT_MEMCACHED, b, sizeof(mc_rep_miss), 0x00010001, KM_TGT_R_ERROR, 0x82, 0);
	memcpy(b, mc_rep_stored, sizeof(mc_rep_stored));
	b[15] = 0x02; /* key exists */
	expect_reply(KM_TGT_MEMCACHED, b, sizeof(mc_rep_stored), 0x00020002, KM_TGT_R_ERROR, 2, 0);

	/* Sequence 1 of a one-datagram reply is inconsistent. */
	memcpy(b, mc_rep_hit, sizeof(b));
	b[3] = 1;
	assert_int_equal(km_tgt_parse(KM_TGT_MEMCACHED, b, sizeof(b), &r), -1);
	/* The first and the second datagram of a reply split in two. */
	memcpy(b, mc_rep_hit, sizeof(b));
	b[5] = 2;
	assert_int_equal(km_tgt_parse(KM_TGT_MEMCACHED, b, sizeof(b), &r), -1);
	b[3] = 1;
	assert_int_equal(km_tgt_parse(KM_TGT_MEMCACHED, b, sizeof(b), &r), -1);

	/* Frame id and opaque disagree. */
	memcpy(b, mc_rep_hit, sizeof(b));
	b[23] = 0x04;
	assert_int_equal(km_tgt_parse(KM_TGT_MEMCACHED, b, sizeof(b), &r), -1);
	memcpy(b, mc_rep_hit, sizeof(b));
	b[1] = 0x13;
	assert_int_equal(km_tgt_parse(KM_TGT_MEMCACHED, b, sizeof(b), &r), -1);

	/* Truncated, or lengths that do not add up. */
	assert_int_equal(
		km_tgt_parse(KM_TGT_MEMCACHED, mc_rep_hit, sizeof(mc_rep_hit) - 1, &r), -1);
	assert_int_equal(km_tgt_parse(KM_TGT_MEMCACHED, mc_rep_hit, 31, &r), -1);
	assert_int_equal(km_tgt_parse(KM_TGT_MEMCACHED, mc_rep_hit, 0, &r), -1);
	memcpy(b, mc_rep_hit, sizeof(b));
	b[12] = 16; /* extras longer than the body */
	assert_int_equal(km_tgt_parse(KM_TGT_MEMCACHED, b, sizeof(b), &r), -1);

	/* A request, or a response to an op the bench never sends. */
	assert_int_equal(km_tgt_parse(KM_TGT_MEMCACHED, mc_get_foo, sizeof(mc_get_foo), &r), -1);
	memcpy(b, mc_rep_stored, sizeof(mc_rep_stored));
	b[9] = 0x0a; /* NOOP */
	assert_int_equal(km_tgt_parse(KM_TGT_MEMCACHED, b, sizeof(mc_rep_stored), &r), -1);

	/* A keymap reply is not a memcached reply, nor the other way round. */
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, mc_rep_hit, sizeof(mc_rep_hit), &r), -1);
}

/* memcached's answer to a request built by km_tgt_build: frame and opaque echoed. */
static size_t
mc_reply(const uint8_t *req, uint16_t status, const char *val, uint8_t *out)
{
	size_t vlen = val != NULL ? strlen(val) : 0, ext = val != NULL ? 4 : 0;

	memcpy(out, req, 32);
	out[8] = 0x81;
	out[10] = out[11] = 0; /* no key */
	out[12] = (uint8_t)ext;
	out[14] = (uint8_t)(status >> 8);
	out[15] = (uint8_t)status;
	out[16] = out[17] = out[18] = 0;
	out[19] = (uint8_t)(ext + vlen);
	memset(out + 32, 0, ext);
	if (vlen != 0)
		memcpy(out + 32 + ext, val, vlen);
	return 32 + ext + vlen;
}

static void
test_memcached_round_trip(void **state)
{
	uint8_t req[BUF], rep[BUF];
	size_t len, rlen;

	(void)state;
	len = km_tgt_build(
		KM_TGT_MEMCACHED, KM_WL_GET, 0x7f3e0a01, 0, "e000/1", 6, NULL, 0, req, sizeof(req));
	assert_int_not_equal(len, 0);
	rlen = mc_reply(req, 0, "0123456789", rep);
	expect_reply(KM_TGT_MEMCACHED, rep, rlen, 0x7f3e0a01, KM_TGT_R_HIT, 0, 10);
	rlen = mc_reply(req, 1, NULL, rep);
	expect_reply(KM_TGT_MEMCACHED, rep, rlen, 0x7f3e0a01, KM_TGT_R_MISS, 1, 0);

	len = km_tgt_build(KM_TGT_MEMCACHED, KM_WL_PUT, 0x7f3e0a02, 0, "e000/1", 6, NULL, 64, req,
		sizeof(req));
	assert_int_not_equal(len, 0);
	rlen = mc_reply(req, 0, NULL, rep);
	expect_reply(KM_TGT_MEMCACHED, rep, rlen, 0x7f3e0a02, KM_TGT_R_STORED, 0, 0);

	len = km_tgt_build(
		KM_TGT_MEMCACHED, KM_WL_DEL, 0x7f3e0a03, 0, "e000/1", 6, NULL, 0, req, sizeof(req));
	assert_int_not_equal(len, 0);
	rlen = mc_reply(req, 0, NULL, rep);
	expect_reply(KM_TGT_MEMCACHED, rep, rlen, 0x7f3e0a03, KM_TGT_R_STORED, 0, 0);
	rlen = mc_reply(req, 1, NULL, rep);
	expect_reply(KM_TGT_MEMCACHED, rep, rlen, 0x7f3e0a03, KM_TGT_R_MISS, 1, 0);
}

static void
test_build_limits(void **state)
{
	static const enum km_tgt_kind kinds[] = {KM_TGT_KEYMAP, KM_TGT_ECHO, KM_TGT_MEMCACHED};
	char key[KM_KEY_MAX + 2];
	uint8_t buf[BUF];
	size_t vmax, len, need;
	unsigned int i;

	(void)state;
	memset(key, 'k', sizeof(key));
	for (i = 0; i < 3; i++) {
		enum km_tgt_kind k = kinds[i];

		/* Key 1..250 bytes. */
		assert_int_equal(km_tgt_build(k, KM_WL_GET, 1, 0, key, 0, NULL, 0, buf, BUF), 0);
		assert_int_equal(km_tgt_build(k, KM_WL_PUT, 1, 0, key, 0, NULL, 0, buf, BUF), 0);
		assert_int_equal(km_tgt_build(k, KM_WL_GET, 1, 0, key, 251, NULL, 0, buf, BUF), 0);
		assert_int_not_equal(
			km_tgt_build(k, KM_WL_GET, 1, 0, key, 250, NULL, 0, buf, BUF), 0);
		/* The largest value fills a whole datagram; one more byte does not fit. */
		vmax = km_tgt_value_max(k, 1);
		/* memcached: the GET reply's limit (1400 bytes) is the tighter one. */
		assert_int_equal(km_tgt_build(k, KM_WL_PUT, 1, 0, key, 1, NULL, vmax, buf, BUF),
			k == KM_TGT_MEMCACHED ? 8 + 24 + 8 + 1 + vmax : KM_DGRAM_MAX);
		assert_int_equal(
			km_tgt_build(k, KM_WL_PUT, 1, 0, key, 1, NULL, vmax + 1, buf, BUF), 0);
		vmax = km_tgt_value_max(k, 250);
		assert_int_equal(km_tgt_build(k, KM_WL_PUT, 1, 0, key, 250, NULL, vmax, buf, BUF),
			KM_DGRAM_MAX);
		assert_int_equal(
			km_tgt_build(k, KM_WL_PUT, 1, 0, key, 250, NULL, vmax + 1, buf, BUF), 0);
		/* cap: exactly enough works, one byte less does not. */
		need = km_tgt_build(k, KM_WL_PUT, 1, 0, key, 10, "0123456789", 10, buf, BUF);
		assert_int_not_equal(need, 0);
		len = km_tgt_build(k, KM_WL_PUT, 1, 0, key, 10, "0123456789", 10, buf, need);
		assert_int_equal(len, need);
		assert_int_equal(
			km_tgt_build(k, KM_WL_PUT, 1, 0, key, 10, "0123456789", 10, buf, need - 1),
			0);
		assert_int_equal(km_tgt_build(k, KM_WL_GET, 1, 0, key, 10, NULL, 0, buf, 0), 0);
		assert_int_equal(km_tgt_build(k, KM_WL_GET, 1, 0, key, 10, NULL, 0, buf, 20), 0);
		/* Unknown op. */
		assert_int_equal(km_tgt_build(k, 7, 1, 0, key, 10, NULL, 0, buf, BUF), 0);
	}
	assert_int_equal(
		km_tgt_build((enum km_tgt_kind)9, KM_WL_GET, 1, 0, key, 10, NULL, 0, buf, BUF), 0);
}

static void
test_value_max(void **state)
{
	(void)state;
	assert_int_equal(km_tgt_value_max(KM_TGT_KEYMAP, 1), KM_VALUE_MAX);
	assert_int_equal(km_tgt_value_max(KM_TGT_KEYMAP, 250), KM_DGRAM_MAX - KM_HDR_LEN - 250);
	assert_int_equal(km_tgt_value_max(KM_TGT_KEYMAP, 16), 1416);
	assert_int_equal(km_tgt_value_max(KM_TGT_KEYMAP, 0), 0);
	assert_int_equal(km_tgt_value_max(KM_TGT_KEYMAP, 251), 0);
	assert_int_equal(km_tgt_value_max(KM_TGT_ECHO, 16), 1416);
	assert_int_equal(km_tgt_value_max(KM_TGT_ECHO, 0), 0);
	/* The GET reply must fit memcached's 1400-byte UDP payload: 1400 - frame 8 - header 24
	 * - flags 4; the SET request one datagram: 1472 - frame 8 - header 24 - extras 8 - key */
	assert_int_equal(km_tgt_value_max(KM_TGT_MEMCACHED, 1), 1364);
	assert_int_equal(km_tgt_value_max(KM_TGT_MEMCACHED, 16), 1364);
	assert_int_equal(km_tgt_value_max(KM_TGT_MEMCACHED, 68), 1364);
	assert_int_equal(km_tgt_value_max(KM_TGT_MEMCACHED, 69), 1363);
	assert_int_equal(km_tgt_value_max(KM_TGT_MEMCACHED, 250), 1182);
	assert_int_equal(km_tgt_value_max(KM_TGT_MEMCACHED, 0), 0);
	assert_int_equal(km_tgt_value_max(KM_TGT_MEMCACHED, 251), 0);
	assert_int_equal(km_tgt_value_max((enum km_tgt_kind)9, 10), 0);
}

static void
test_names(void **state)
{
	static const char *const names[] = {"keymap", "echo", "memcached"};
	enum km_tgt_kind k;
	unsigned int i;

	(void)state;
	for (i = 0; i < 3; i++) {
		assert_int_equal(km_tgt_parse_name(names[i], &k), 0);
		assert_int_equal(k, (enum km_tgt_kind)i);
		assert_string_equal(km_tgt_name(k), names[i]);
	}
	k = KM_TGT_ECHO;
	assert_int_equal(km_tgt_parse_name("memcache", &k), -EINVAL);
	assert_int_equal(km_tgt_parse_name("Keymap", &k), -EINVAL);
	assert_int_equal(km_tgt_parse_name("", &k), -EINVAL);
	assert_int_equal(k, KM_TGT_ECHO);
}

/* Trailers: the cookie and the key id pre-encoded, the MAC computed per request. */
static void
test_seal(void **state)
{
	static const uint8_t key[KM_MAC_KEY_LEN] = {
		1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	struct km_tgt_seal none, ck, auth, both;
	uint8_t req[BUF];
	struct km_msg m;
	size_t len, vmax, sealed;

	(void)state;
	km_tgt_seal_init(&none, 0, 0, 0, NULL);
	km_tgt_seal_init(&ck, 1, 0x1122334455667788ull, 0, NULL);
	km_tgt_seal_init(&auth, 0, 0, 9, key);
	km_tgt_seal_init(&both, 1, 0x1122334455667788ull, 9, key);

	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_GET, 5, 0, "user/42", 7, NULL, 0, req, sizeof(req));
	assert_int_equal(km_tgt_seal(&none, req, len, sizeof(req)), len);
	assert_int_equal(km_req_parse(req, len, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.flags, 0);

	sealed = km_tgt_seal(&ck, req, len, sizeof(req));
	assert_int_equal(sealed, len + KM_COOKIE_LEN);
	assert_int_equal(km_req_parse(req, sealed, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.flags, KM_F_COOKIE);
	assert_true(m.cookie == 0x1122334455667788ull);
	assert_null(m.mac);

	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_GET, 5, 0, "user/42", 7, NULL, 0, req, sizeof(req));
	sealed = km_tgt_seal(&auth, req, len, sizeof(req));
	assert_int_equal(sealed, len + KM_AUTH_LEN);
	assert_int_equal(km_req_parse(req, sealed, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.flags, KM_F_AUTH);
	assert_int_equal(m.key_id, 9);
	assert_int_equal(km_mac_check(key, req, &m), 1);

	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_GET, 5, 0, "user/42", 7, NULL, 0, req, sizeof(req));
	sealed = km_tgt_seal(&both, req, len, sizeof(req));
	assert_int_equal(sealed, len + KM_TRAILER_MAX);
	assert_int_equal(km_req_parse(req, sealed, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.flags, KM_F_COOKIE | KM_F_AUTH);
	assert_true(m.cookie == 0x1122334455667788ull);
	assert_int_equal(m.key_id, 9);
	assert_int_equal(km_mac_check(key, req, &m), 1);
	/* The same as libkeymap's sealing. */
	{
		uint8_t ref[BUF];

		len = km_tgt_build(
			KM_TGT_KEYMAP, KM_WL_GET, 5, 0, "user/42", 7, NULL, 0, ref, sizeof(ref));
		assert_int_equal(
			km_req_seal(ref, len, sizeof(ref), 1, 0x1122334455667788ull, 9, key),
			sealed);
		assert_memory_equal(ref, req, sealed);
	}
	/* No room for the MAC: refused. */
	assert_int_equal(km_tgt_seal(&both, req, len, len + KM_AUTH_LEN - 1), 0);

	/* A PUT that fills the datagram with its MAC leaves no room for the cookie: it goes
	 * without (its reply is never larger than the request). */
	vmax = km_tgt_value_max(KM_TGT_KEYMAP, 1) - KM_AUTH_LEN;
	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_PUT, 6, 0, "k", 1, NULL, vmax, req, sizeof(req));
	sealed = km_tgt_seal(&both, req, len, sizeof(req));
	assert_int_equal(sealed, KM_DGRAM_MAX);
	assert_int_equal(km_req_parse(req, sealed, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.flags, KM_F_AUTH);
	assert_int_equal(km_mac_check(key, req, &m), 1);
	/* One byte more and the MAC does not fit. */
	len = km_tgt_build(
		KM_TGT_KEYMAP, KM_WL_PUT, 6, 0, "k", 1, NULL, vmax + 1, req, sizeof(req));
	assert_int_equal(km_tgt_seal(&both, req, len, sizeof(req)), 0);
	/* Without a key the cookie fits wherever it can, and is left out where not. */
	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_PUT, 6, 0, "k", 1, NULL, vmax, req, sizeof(req));
	assert_int_equal(km_tgt_seal(&ck, req, len, sizeof(req)), len + KM_COOKIE_LEN);
	len = km_tgt_build(
		KM_TGT_KEYMAP, KM_WL_PUT, 6, 0, "k", 1, NULL, vmax + KM_AUTH_LEN, req, sizeof(req));
	assert_int_equal(km_tgt_seal(&ck, req, len, sizeof(req)), len);
	assert_int_equal(km_req_parse(req, len, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.flags, 0);
}

/* A keymap reply to req (its op and req_id) with status, version and a value. */
static size_t
hello_reply(const uint8_t *req, size_t len, uint8_t status, uint64_t version, const uint8_t *val,
	uint32_t vlen, uint8_t *out)
{
	struct km_msg m;
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC, .proto_ver = KM_PROTO_VERSION, .flags = KM_F_REPLY};

	assert_int_equal(km_req_parse(req, len, KM_VALUE_MAX, &m), KM_ST_OK);
	h.op = m.hdr.op;
	h.req_id = m.hdr.req_id;
	h.status = status;
	h.version = version;
	h.val_len = vlen;
	return km_msg_build(out, BUF, &h, NULL, val);
}

static void
test_hello(void **state)
{
	static const uint8_t zero[KM_HELLO_LEN];
	static const uint8_t key[KM_MAC_KEY_LEN] = {7};
	uint8_t req[BUF], rep[BUF], body[KM_HELLO_LEN];
	struct km_tgt_seal auth;
	struct km_tgt_reply r;
	struct km_tgt_hello h;
	struct km_msg m;
	size_t len, rlen, sealed;

	(void)state;
	len = km_tgt_hello_build(0xabcdef, req, sizeof(req));
	assert_int_equal(len, KM_HDR_LEN + KM_HELLO_LEN);
	assert_int_equal(km_tgt_hello_build(1, req, len - 1), 0);
	len = km_tgt_hello_build(0xabcdef, req, sizeof(req));
	assert_int_equal(km_req_parse(req, len, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.op, KM_OP_HELLO);
	assert_int_equal(m.hdr.req_id, 0xabcdef);
	assert_int_equal(m.hdr.key_len, 0);
	assert_int_equal(m.hdr.val_len, KM_HELLO_LEN);
	assert_memory_equal(m.val, zero, KM_HELLO_LEN);
	/* A key's MAC on the HELLO too. */
	km_tgt_seal_init(&auth, 0, 0, 3, key);
	sealed = km_tgt_seal(&auth, req, len, sizeof(req));
	assert_int_equal(sealed, len + KM_AUTH_LEN);
	assert_int_equal(km_req_parse(req, sealed, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(km_mac_check(key, req, &m), 1);

	/* OK: cookie, valid_ms, flags. */
	km_put64(body, 0x0102030405060708ull);
	km_put32(body + 8, 30000);
	km_put32(body + 12, KM_HELLO_F_COOKIES | KM_HELLO_F_AUTH);
	rlen = hello_reply(req, sealed, KM_ST_OK, 0, body, KM_HELLO_LEN, rep);
	memset(&h, 0xff, sizeof(h));
	assert_int_equal(km_tgt_hello_parse(rep, rlen, 0xabcdef, &h), 0);
	assert_int_equal(h.status, KM_ST_OK);
	assert_true(h.cookie == 0x0102030405060708ull);
	assert_int_equal(h.valid_ms, 30000);
	assert_int_equal(h.flags, KM_HELLO_F_COOKIES | KM_HELLO_F_AUTH);
	/* Another request's reply, a truncated one, or not a HELLO reply at all. */
	assert_int_equal(km_tgt_hello_parse(rep, rlen, 0xabcdee, &h), -1);
	assert_int_equal(km_tgt_hello_parse(rep, rlen - 1, 0xabcdef, &h), -1);
	/* The bench never sends HELLO through km_tgt_parse: it is no reply of its ops. */
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), -1);
	rlen = hello_reply(req, sealed, KM_ST_OK, 0, body, 8, rep);
	assert_int_equal(km_tgt_hello_parse(rep, rlen, 0xabcdef, &h), -1);

	/* A server without HELLO; one that refuses the key. */
	rlen = hello_reply(req, sealed, KM_ST_BAD_REQUEST, 0, NULL, 0, rep);
	assert_int_equal(km_tgt_hello_parse(rep, rlen, 0xabcdef, &h), 0);
	assert_int_equal(h.status, KM_ST_BAD_REQUEST);
	rlen = hello_reply(req, sealed, KM_ST_DENIED, KM_DENY_AUTH, NULL, 0, rep);
	assert_int_equal(km_tgt_hello_parse(rep, rlen, 0xabcdef, &h), 0);
	assert_int_equal(h.status, KM_ST_DENIED);
	assert_int_equal(h.deny, KM_DENY_AUTH);

	/* A GET refused for want of a cookie: an error, and why. */
	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_GET, 77, 0, "k", 1, NULL, 0, req, sizeof(req));
	rlen = hello_reply(req, len, KM_ST_DENIED, KM_DENY_COOKIE, NULL, 0, rep);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), 0);
	assert_int_equal(r.req_id, 77);
	assert_int_equal(r.result, KM_TGT_R_ERROR);
	assert_int_equal(r.status, KM_ST_DENIED);
	assert_int_equal(r.deny, KM_DENY_COOKIE);
	rlen = hello_reply(req, len, KM_ST_OK, 0, (const uint8_t *)"v", 1, rep);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), 0);
	assert_int_equal(r.deny, 0);
}

/* Template requests are byte for byte km_tgt_build()'s, for every target, op and size. */
static void
test_tmpl(void **state)
{
	static const enum km_tgt_kind kinds[] = {KM_TGT_KEYMAP, KM_TGT_ECHO, KM_TGT_MEMCACHED};
	static const uint8_t ops[] = {KM_WL_GET, KM_WL_PUT, KM_WL_DEL};
	static const size_t klens[] = {1, 16, 250};
	static const size_t vlens[] = {0, 1, 64, 1000};
	uint8_t want[BUF], got[BUF], key[KM_KEY_MAX];
	struct km_tgt_tmpl t;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	unsigned int a, b, c, d, r, k;
	size_t n;

	(void)state;
	for (a = 0; a < 3; a++)
		for (b = 0; b < 3; b++)
			for (c = 0; c < 3; c++)
				for (d = 0; d < 4; d++) {
					assert_int_equal(km_tgt_tmpl_init(&t, kinds[a], ops[b],
								 klens[c], vlens[d]),
						0);
					for (r = 0; r < 8; r++) {
						uint64_t id;

						x ^= x << 13, x ^= x >> 7, x ^= x << 17;
						id = x;
						for (k = 0; k < klens[c]; k++)
							key[k] = (uint8_t)(x >> (k % 8 * 8)) +
								 (uint8_t)k;
						n = km_tgt_build(kinds[a], ops[b], id,
							(uint32_t)(x >> 32), key, klens[c], NULL,
							vlens[d], want, sizeof(want));
						assert_true(n > 0);
						memset(got, 0x5a, sizeof(got));
						assert_int_equal(km_tgt_tmpl_build(&t, id,
									 (uint32_t)(x >> 32), key,
									 got, sizeof(got)),
							n);
						assert_memory_equal(got, want, n);
						/* Too small a buffer: nothing. */
						assert_int_equal(km_tgt_tmpl_build(&t, id, 0, key,
									 got, n - 1),
							0);
					}
					km_tgt_tmpl_fini(&t);
					km_tgt_tmpl_fini(&t); /* twice: harmless */
				}
	/* Outside the limits: refused as km_tgt_build() refuses them. */
	assert_int_equal(km_tgt_tmpl_init(&t, KM_TGT_KEYMAP, KM_WL_GET, 0, 0), -EINVAL);
	assert_int_equal(
		km_tgt_tmpl_init(&t, KM_TGT_KEYMAP, KM_WL_GET, KM_KEY_MAX + 1, 0), -EINVAL);
	assert_int_equal(km_tgt_tmpl_init(&t, KM_TGT_KEYMAP, KM_WL_PUT, 16, KM_VALUE_MAX), -EINVAL);
	assert_int_equal(km_tgt_tmpl_init(&t, KM_TGT_MEMCACHED, KM_WL_PUT, 16, 1400), -EINVAL);
	assert_int_equal(km_tgt_tmpl_init(&t, KM_TGT_KEYMAP, 99, 16, 0), -EINVAL);
	assert_null(t.frame);
}

/* km_tgt_check(): a reply that is not its request's answer is caught. */
static void
test_check(void **state)
{
	uint8_t req[BUF], rep[BUF];
	struct km_tgt_reply r;
	size_t len, rlen;
	char val[64];
	unsigned int i;

	(void)state;
	for (i = 0; i < sizeof(val); i++)
		val[i] = (char)('a' + i % 26);
	/* Echo: the request's own key, op and value. */
	len = km_tgt_build(KM_TGT_ECHO, KM_WL_PUT, 1, 0, "k001", 4, NULL, 64, req, sizeof(req));
	assert_int_equal(km_tgt_parse(KM_TGT_ECHO, req, len, &r), 0);
	assert_int_equal(km_tgt_check(KM_TGT_ECHO, &r, KM_WL_PUT, "k001", 4, 64), 0);
	assert_int_equal(km_tgt_check(KM_TGT_ECHO, &r, KM_WL_PUT, "k002", 4, 64), -1);
	assert_int_equal(km_tgt_check(KM_TGT_ECHO, &r, KM_WL_PUT, "k0010", 5, 64), -1);
	assert_int_equal(km_tgt_check(KM_TGT_ECHO, &r, KM_WL_PUT, "k001", 4, 63), -1);
	assert_int_equal(km_tgt_check(KM_TGT_ECHO, &r, KM_WL_GET, "k001", 4, 0), -1);
	req[len - 1] ^= 1; /* a value byte */
	assert_int_equal(km_tgt_parse(KM_TGT_ECHO, req, len, &r), 0);
	assert_int_equal(km_tgt_check(KM_TGT_ECHO, &r, KM_WL_PUT, "k001", 4, 64), -1);

	/* keymap GET hit: the pattern, of the length asked for. */
	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_GET, 2, 0, "k001", 4, NULL, 0, req, sizeof(req));
	rlen = keymap_reply(req, len, KM_ST_OK, "abcdefghij", rep);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), 0);
	assert_int_equal(km_tgt_check(KM_TGT_KEYMAP, &r, KM_WL_GET, "k001", 4, 0), 0);
	assert_int_equal(km_tgt_check(KM_TGT_KEYMAP, &r, KM_WL_GET, "k001", 4, 10), 0);
	assert_int_equal(km_tgt_check(KM_TGT_KEYMAP, &r, KM_WL_GET, "k001", 4, 11), -1);
	assert_int_equal(km_tgt_check(KM_TGT_KEYMAP, &r, KM_WL_PUT, "k001", 4, 10), -1);
	rlen = keymap_reply(req, len, KM_ST_OK, "abcdefghiX", rep);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), 0);
	assert_int_equal(km_tgt_check(KM_TGT_KEYMAP, &r, KM_WL_GET, "k001", 4, 0), -1);
	/* A miss, a stored PUT: the op only. */
	rlen = keymap_reply(req, len, KM_ST_NOT_FOUND, NULL, rep);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), 0);
	assert_int_equal(km_tgt_check(KM_TGT_KEYMAP, &r, KM_WL_GET, "k001", 4, 10), 0);
	len = km_tgt_build(KM_TGT_KEYMAP, KM_WL_PUT, 3, 0, "k001", 4, val, 64, req, sizeof(req));
	rlen = keymap_reply(req, len, KM_ST_OK, NULL, rep);
	assert_int_equal(km_tgt_parse(KM_TGT_KEYMAP, rep, rlen, &r), 0);
	assert_int_equal(km_tgt_check(KM_TGT_KEYMAP, &r, KM_WL_PUT, "k001", 4, 64), 0);
	assert_int_equal(km_tgt_check(KM_TGT_KEYMAP, &r, KM_WL_GET, "k001", 4, 64), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keymap_get),
		cmocka_unit_test(test_keymap_put),
		cmocka_unit_test(test_keymap_del),
		cmocka_unit_test(test_keymap_rejects),
		cmocka_unit_test(test_echo),
		cmocka_unit_test(test_memcached_request_bytes),
		cmocka_unit_test(test_memcached_replies),
		cmocka_unit_test(test_memcached_reply_rejects),
		cmocka_unit_test(test_memcached_round_trip),
		cmocka_unit_test(test_build_limits),
		cmocka_unit_test(test_value_max),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_seal),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_tmpl),
		cmocka_unit_test(test_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
