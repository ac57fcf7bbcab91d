/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Wire format tests: header layout, the test vectors of docs/protocol.md, every
 * documented outcome of km_req_parse() and km_reply_parse(), and a fuzz loop.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <km_proto.h>

#define FUZZ_ITERATIONS 200000
#define FUZZ_SEED       0x6b65796d6170ULL /* "keymap" */

/* xorshift64*: deterministic, seedable, no libc state shared with other tests. */
static uint64_t
rnd_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

/*
 * Test vectors. docs/protocol.md section "Test vectors" lists the same bytes; keep them
 * identical. They were produced independently of km_proto.c (Python struct.pack with
 * '<BBBBHHIIQQII'), so they check the encoder rather than restate it.
 */
/* clang-format off */
static const uint8_t vec_ping_req[] = {
	0x4b, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, /*   0 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*   8 */
	0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /*  16 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
};
static const uint8_t vec_get_req[] = {
	0x4b, 0x01, 0x02, 0x00, 0x00, 0x00, 0x07, 0x00, /*   0 */
	0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /*  16 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  24 */
	0xd4, 0xc3, 0xb2, 0xa1, 0x00, 0x00, 0x00, 0x00, /*  32 */
	0x75, 0x73, 0x65, 0x72, 0x2f, 0x34, 0x32, /*  40 */
};
static const uint8_t vec_put_req[] = {
	0x4b, 0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x00, /*   0 */
	0x05, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  16 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
	0x6b, 0x31, 0x68, 0x65, 0x6c, 0x6c, 0x6f, /*  40 */
};
static const uint8_t vec_cas_req[] = {
	0x4b, 0x01, 0x05, 0x00, 0x00, 0x00, 0x02, 0x00, /*   0 */
	0x05, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  16 */
	0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
	0x6b, 0x31, 0x77, 0x6f, 0x72, 0x6c, 0x64, /*  40 */
};
static const uint8_t vec_del_req[] = {
	0x4b, 0x01, 0x06, 0x00, 0x00, 0x00, 0x02, 0x00, /*   0 */
	0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  16 */
	0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
	0x6b, 0x31, /*  40 */
};
static const uint8_t vec_mget_req[] = {
	0x4b, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, /*   0 */
	0x07, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x13, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  16 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
	0x02, 0x00, 0x01, 0x61, 0x02, 0x62, 0x63, /*  40 */
};
static const uint8_t vec_get_rep[] = {
	0x4b, 0x01, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, /*   0 */
	0x05, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /*  16 */
	0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
	0x68, 0x65, 0x6c, 0x6c, 0x6f, /*  40 */
};
static const uint8_t vec_put_rep[] = {
	0x4b, 0x01, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, /*   0 */
	0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  16 */
	0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
};
static const uint8_t vec_mget_rep[] = {
	0x4b, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, /*   0 */
	0x1a, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x13, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  16 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
	0x02, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00, /*  40 */
	0x00, 0x00, 0x00, 0x02, 0x00, 0x78, 0x79, 0x01, /*  48 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  56 */
	0x00, 0x00, /*  64 */
};
static const uint8_t vec_map_err_rep[] = {
	0x4b, 0x01, 0x08, 0x05, 0x01, 0x00, 0x00, 0x00, /*   0 */
	0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  16 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
};
static const uint8_t vec_hello_req[] = {
	0x4b, 0x01, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t vec_hello_rep[] = {
	0x4b, 0x01, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
	0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
	0x60, 0xea, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
};
static const uint8_t vec_get_sealed[] = {
	0x4b, 0x01, 0x02, 0x00, 0x06, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
	0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x75, 0x73, 0x65, 0x72, 0x2f, 0x34, 0x32, 0x88,
	0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x01, 0x00, 0x00, 0x00, 0x79, 0x6f, 0xdb, 0x7e, 0x1c,
	0x92, 0x6d, 0x1e, 0x4e, 0x1b, 0xc4, 0xfe, 0xcd, 0x90, 0x76, 0xf9,
};
static const uint8_t vec_denied_rep[] = {
	0x4b, 0x01, 0x02, 0x07, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
	0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t vec_scan_req[] = {
	0x4b, 0x01, 0x07, 0x00, 0x00, 0x00, 0x05, 0x00, /*   0 */
	0x04, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x15, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  16 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
	0x75, 0x73, 0x65, 0x72, 0x2f, 0x0a, 0x00, 0x00, /*  40 */
	0x00, /*  48 */
};
static const uint8_t vec_scan_rep[] = {
	0x4b, 0x01, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00, /*   0 */
	0x28, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, /*   8 */
	0x15, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  16 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x90, /*  24 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  32 */
	0x02, 0x00, 0x00, 0x06, 0x02, 0x01, 0x00, 0x00, /*  40 */
	0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x75, 0x73, /*  48 */
	0x65, 0x72, 0x2f, 0x31, 0x78, 0x79, 0x04, 0x06, /*  56 */
	0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /*  64 */
	0x00, 0x00, 0x75, 0x73, 0x65, 0x72, 0x2f, 0x32, /*  72 */
};
/* clang-format on */

struct vector {
	const char *name;
	const uint8_t *bytes;
	size_t len;
	struct km_hdr hdr; /* the two framing bytes are filled in by hdr_frame() */
	const char *key;
	const uint8_t *val;
};

/* Bodies of the MGET vectors, spelled out as the structure they encode. */
static const uint8_t mget_req_body[] = {2, 0, 1, 'a', 2, 'b', 'c'};
static const uint8_t mget_rep_body[] = {
	2, 0,                                    /* count */
	KM_ST_OK, 0x02, 0x01, 0, 0, 0, 0, 0, 0,  /* status, version 0x102 */
	2, 0, 'x', 'y',                          /* val_len, value */
	KM_ST_NOT_FOUND, 0, 0, 0, 0, 0, 0, 0, 0, /* status, version 0 */
	0, 0,                                    /* val_len */
};

#define VEC(n) .name = #n, .bytes = vec_##n, .len = sizeof(vec_##n)

/* The SCAN vectors' request body (max entries 10, flags 0) and reply body. */
static const uint8_t scan_req_body[] = {10, 0, 0, 0};
static const uint8_t scan_rep_body[] = {
	2, 0,                                                   /* count */
	KM_ST_OK, 6, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 2, 0,        /* version 0x102, val_len 2 */
	'u', 's', 'e', 'r', '/', '1', 'x', 'y',                 /* key, value */
	KM_ST_TOO_LARGE, 6, 0x03, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, /* version 0x103, no value */
	'u', 's', 'e', 'r', '/', '2',                           /* key */
};

static const uint8_t hello_pad[KM_HELLO_LEN];
static const uint8_t hello_body[KM_HELLO_LEN] = {
	0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x60, 0xea, 0, 0, 1, 0, 0, 0};

static const struct vector vectors[] = {
	{VEC(hello_req), .hdr = {.op = KM_OP_HELLO, .val_len = KM_HELLO_LEN, .req_id = 0x20},
		.val = hello_pad},
	{VEC(hello_rep),
		.hdr = {.op = KM_OP_HELLO,
			.flags = KM_F_REPLY,
			.val_len = KM_HELLO_LEN,
			.epoch = 3,
			.req_id = 0x20},
		.val = hello_body},
	{VEC(denied_rep), .hdr = {.op = KM_OP_GET,
				  .status = KM_ST_DENIED,
				  .flags = KM_F_REPLY,
				  .epoch = 3,
				  .req_id = 0x21,
				  .version = KM_DENY_COOKIE}},
	{VEC(ping_req), .hdr = {.op = KM_OP_PING, .req_id = 0x0102030405060708ULL}},
	{VEC(get_req),
		.hdr = {.op = KM_OP_GET,
			.key_len = 7,
			.epoch = 3,
			.req_id = 0x1122334455667788ULL,
			.session = 0xa1b2c3d4},
		.key = "user/42"},
	{VEC(put_req),
		.hdr = {.op = KM_OP_PUT, .key_len = 2, .val_len = 5, .epoch = 3, .req_id = 0x10},
		.key = "k1", .val = (const uint8_t *)"hello"},
	{VEC(cas_req),
		.hdr = {.op = KM_OP_CAS,
			.key_len = 2,
			.val_len = 5,
			.epoch = 3,
			.req_id = 0x11,
			.version = 0x102},
		.key = "k1", .val = (const uint8_t *)"world"},
	{VEC(del_req),
		.hdr = {.op = KM_OP_DEL,
			.key_len = 2,
			.epoch = 3,
			.req_id = 0x12,
			.version = 0x103},
		.key = "k1"},
	{VEC(mget_req),
		.hdr = {.op = KM_OP_MGET,
			.val_len = sizeof(mget_req_body),
			.epoch = 3,
			.req_id = 0x13},
		.val = mget_req_body},
	{VEC(get_rep),
		.hdr = {.op = KM_OP_GET,
			.flags = KM_F_REPLY,
			.val_len = 5,
			.epoch = 3,
			.req_id = 0x1122334455667788ULL,
			.version = 0x102},
		.val = (const uint8_t *)"hello"},
	{VEC(put_rep), .hdr = {.op = KM_OP_PUT,
			       .flags = KM_F_REPLY,
			       .epoch = 3,
			       .req_id = 0x10,
			       .version = 0x102}},
	{VEC(mget_rep),
		.hdr = {.op = KM_OP_MGET,
			.flags = KM_F_REPLY,
			.val_len = sizeof(mget_rep_body),
			.epoch = 3,
			.req_id = 0x13},
		.val = mget_rep_body},
	{VEC(scan_req),
		.hdr = {.op = KM_OP_SCAN,
			.key_len = 5,
			.val_len = sizeof(scan_req_body),
			.epoch = 3,
			.req_id = 0x15,
			.version = 0x8000000000000000ULL},
		.key = "user/", .val = scan_req_body},
	{VEC(scan_rep),
		.hdr = {.op = KM_OP_SCAN,
			.flags = KM_F_REPLY,
			.val_len = sizeof(scan_rep_body),
			.epoch = 3,
			.req_id = 0x15,
			.version = 0x9000000000000000ULL},
		.val = scan_rep_body},
	{VEC(map_err_rep), .hdr = {.op = KM_OP_MAP,
				   .status = KM_ST_BAD_REQUEST,
				   .flags = KM_F_REPLY,
				   .epoch = 3,
				   .req_id = 0x14}},
};

/*
 * Set the framing bytes (offset 0 magic, offset 1 protocol version) through the wire
 * image: tests address them by offset, as a foreign implementation would.
 */
static void
hdr_frame(struct km_hdr *h, uint8_t magic, uint8_t proto_version)
{
	uint8_t b[KM_HDR_LEN];

	km_hdr_encode(b, h);
	b[0] = magic;
	b[1] = proto_version;
	km_hdr_decode(b, h);
}

static void
assert_hdr_equal(const struct km_hdr *a, const struct km_hdr *b)
{
	uint8_t ea[KM_HDR_LEN], eb[KM_HDR_LEN];

	/* Byte-exact through the encoder (covers the framing bytes), then field by field. */
	km_hdr_encode(ea, a);
	km_hdr_encode(eb, b);
	assert_memory_equal(ea, eb, KM_HDR_LEN);
	assert_int_equal(a->magic, b->magic);
	assert_int_equal(a->op, b->op);
	assert_int_equal(a->status, b->status);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->key_len, b->key_len);
	assert_int_equal(a->val_len, b->val_len);
	assert_int_equal(a->epoch, b->epoch);
	assert_int_equal(a->req_id, b->req_id);
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->session, b->session);
	assert_int_equal(a->reserved, b->reserved);
}

/* A valid request header for op; the caller adjusts fields to make it invalid. */
static struct km_hdr
req_hdr(uint8_t op, uint16_t key_len, uint32_t val_len)
{
	struct km_hdr h = {
		.op = op,
		.key_len = key_len,
		.val_len = val_len,
		.epoch = 1,
		.req_id = 42,
	};

	hdr_frame(&h, KM_PROTO_MAGIC, KM_PROTO_VERSION);
	return h;
}

/* Encode h followed by `body` bytes of filler (key then value, 'x'). */
static size_t
build_raw(uint8_t *buf, size_t cap, const struct km_hdr *h, size_t body)
{
	assert_true(KM_HDR_LEN + body <= cap);
	km_hdr_encode(buf, h);
	memset(buf + KM_HDR_LEN, 'x', body);
	return KM_HDR_LEN + body;
}

/* Parse h with a consistent body, against the default value limit. */
static int
parse_hdr(const struct km_hdr *h)
{
	static uint8_t buf[2 * KM_DGRAM_MAX];
	struct km_msg m;
	size_t len = build_raw(buf, sizeof(buf), h, (size_t)h->key_len + h->val_len);

	return km_req_parse(buf, len, KM_VALUE_MAX, &m);
}

static void
test_hdr_offsets(void **state)
{
	struct km_hdr h = {
		.op = 0xa2,
		.status = 0xa3,
		.flags = 0xa5a4,
		.key_len = 0xa7a6,
		.val_len = 0xabaaa9a8,
		.epoch = 0xafaeadac,
		.req_id = 0xb7b6b5b4b3b2b1b0ULL,
		.version = 0xbfbebdbcbbbab9b8ULL,
		.session = 0xc3c2c1c0,
		.reserved = 0xc7c6c5c4,
	};
	uint8_t buf[KM_HDR_LEN], expect[KM_HDR_LEN];
	struct km_hdr d;
	unsigned int i;

	(void)state;
	hdr_frame(&h, 0xa0, 0xa1);
	/* Byte i of the field layout holds 0xa0 + i: every offset and byte order at once. */
	for (i = 0; i < KM_HDR_LEN; i++)
		expect[i] = (uint8_t)(0xa0 + i);
	km_hdr_encode(buf, &h);
	assert_memory_equal(buf, expect, KM_HDR_LEN);
	km_hdr_decode(buf, &d);
	assert_hdr_equal(&d, &h);
	assert_int_equal(offsetof(struct km_hdr, key_len), 6);
	assert_int_equal(offsetof(struct km_hdr, req_id), 16);
	assert_int_equal(offsetof(struct km_hdr, reserved), 36);
}

static void
test_hdr_roundtrip(void **state)
{
	uint64_t seed = FUZZ_SEED;
	uint8_t buf[KM_HDR_LEN], again[KM_HDR_LEN];
	struct km_hdr h, d;
	unsigned int i, j;

	(void)state;
	for (i = 0; i < 10000; i++) {
		for (j = 0; j < KM_HDR_LEN; j++)
			buf[j] = (uint8_t)rnd_next(&seed);
		/* decode(bytes) then encode must give the bytes back: no field is lost. */
		km_hdr_decode(buf, &h);
		km_hdr_encode(again, &h);
		assert_memory_equal(buf, again, KM_HDR_LEN);
		km_hdr_decode(again, &d);
		assert_hdr_equal(&d, &h);
	}
}

static void
test_vectors(void **state)
{
	uint8_t buf[KM_DGRAM_MAX];
	unsigned int i;

	(void)state;
	for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		const struct vector *v = &vectors[i];
		struct km_hdr h = v->hdr;
		int is_reply = (h.flags & KM_F_REPLY) != 0;
		struct km_msg m;
		size_t n;

		print_message("vector %s\n", v->name);
		hdr_frame(&h, KM_PROTO_MAGIC, KM_PROTO_VERSION);
		n = km_msg_build(buf, sizeof(buf), &h, v->key, v->val);
		assert_int_equal(n, v->len);
		assert_memory_equal(buf, v->bytes, v->len);

		memset(&m, 0, sizeof(m));
		if (is_reply) {
			assert_int_equal(km_reply_parse(v->bytes, v->len, &m), 0);
			/* A reply is never accepted as a request (reflection). */
			assert_int_equal(km_req_parse(v->bytes, v->len, KM_VALUE_MAX, &m), -1);
			memset(&m, 0, sizeof(m));
			assert_int_equal(km_reply_parse(v->bytes, v->len, &m), 0);
		} else {
			assert_int_equal(
				km_req_parse(v->bytes, v->len, KM_VALUE_MAX, &m), KM_ST_OK);
			assert_int_equal(km_reply_parse(v->bytes, v->len, &m), -1);
			assert_int_equal(
				km_req_parse(v->bytes, v->len, KM_VALUE_MAX, &m), KM_ST_OK);
		}
		assert_hdr_equal(&m.hdr, &h);
		assert_ptr_equal(m.key, v->bytes + KM_HDR_LEN);
		assert_ptr_equal(m.val, v->bytes + KM_HDR_LEN + h.key_len);
		if (h.key_len != 0)
			assert_memory_equal(m.key, v->key, h.key_len);
		if (h.val_len != 0)
			assert_memory_equal(m.val, v->val, h.val_len);
	}
}

/* The sealed GET vector (docs/protocol.md 7): cookie and MAC trailers, byte for byte. */
static void
test_vector_sealed(void **state)
{
	static const uint8_t secret[KM_MAC_KEY_LEN] = {
		0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
	static const uint8_t empty_mac[KM_MAC_LEN] = {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8,
		0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93};
	struct km_hdr h = {.op = KM_OP_GET, .key_len = 7, .epoch = 3, .req_id = 0x21};
	uint8_t buf[KM_DGRAM_MAX], mac[KM_MAC_LEN];
	struct km_msg m;
	size_t n;

	(void)state;
	hdr_frame(&h, KM_PROTO_MAGIC, KM_PROTO_VERSION);
	n = km_msg_build(buf, sizeof(buf), &h, "user/42", NULL);
	n = km_req_seal(buf, n, sizeof(buf), 1, 0x1122334455667788ULL, 1, secret);
	assert_int_equal(n, sizeof(vec_get_sealed));
	assert_memory_equal(buf, vec_get_sealed, n);
	assert_int_equal(km_req_parse(vec_get_sealed, n, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.cookie, 0x1122334455667788ULL);
	assert_int_equal(m.key_id, 1);
	assert_true(km_mac_check(secret, vec_get_sealed, &m));
	/* The reference SipHash-2-4-128 vector: any implementation will do. */
	km_mac(secret, buf, 0, mac);
	assert_memory_equal(mac, empty_mac, KM_MAC_LEN);
}

static void
test_vector_mget_bodies(void **state)
{
	struct km_mget_iter it;
	const uint8_t *key, *p;
	uint8_t klen;

	(void)state;
	/* The request vector's body iterates to "a", "bc". */
	assert_int_equal(km_mget_req_begin(&it, mget_req_body, sizeof(mget_req_body)), 2);
	assert_int_equal(km_mget_req_next(&it, &key, &klen), 1);
	assert_int_equal(klen, 1);
	assert_memory_equal(key, "a", 1);
	assert_int_equal(km_mget_req_next(&it, &key, &klen), 1);
	assert_int_equal(klen, 2);
	assert_memory_equal(key, "bc", 2);
	assert_int_equal(km_mget_req_next(&it, &key, &klen), 0);

	/* The reply vector's body decodes with the documented entry layout. */
	p = vec_mget_rep + KM_HDR_LEN;
	assert_int_equal(km_get16(p), 2);
	p += 2;
	assert_int_equal(p[0], KM_ST_OK);
	assert_int_equal(km_get64(p + 1), 0x102);
	assert_int_equal(km_get16(p + 9), 2);
	assert_memory_equal(p + KM_MGET_REP_ENTRY_HDR, "xy", 2);
	p += KM_MGET_REP_ENTRY_HDR + 2;
	assert_int_equal(p[0], KM_ST_NOT_FOUND);
	assert_int_equal(km_get64(p + 1), 0);
	assert_int_equal(km_get16(p + 9), 0);
	p += KM_MGET_REP_ENTRY_HDR;
	assert_ptr_equal(p, vec_mget_rep + sizeof(vec_mget_rep));
}

/* Datagrams the server must drop without an answer. */
static void
test_req_dropped(void **state)
{
	static uint8_t buf[KM_MSG_MAX + 64];
	struct km_hdr h;
	struct km_msg m;
	size_t len;

	(void)state;
	memcpy(buf, vec_ping_req, sizeof(vec_ping_req));
	for (len = 0; len < KM_HDR_LEN; len++)
		assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), -1);
	assert_int_equal(km_req_parse(buf, KM_HDR_LEN, KM_VALUE_MAX, &m), KM_ST_OK);

	h = req_hdr(KM_OP_PING, 0, 0);
	hdr_frame(&h, 'k', KM_PROTO_VERSION);
	assert_int_equal(parse_hdr(&h), -1);
	hdr_frame(&h, 0, KM_PROTO_VERSION);
	assert_int_equal(parse_hdr(&h), -1);

	h = req_hdr(KM_OP_PING, 0, 0);
	hdr_frame(&h, KM_PROTO_MAGIC, 0);
	assert_int_equal(parse_hdr(&h), -1);
	hdr_frame(&h, KM_PROTO_MAGIC, KM_PROTO_VERSION + 1);
	assert_int_equal(parse_hdr(&h), -1);

	/* A reply flag wins over everything else, even a valid-looking reply. */
	h = req_hdr(KM_OP_GET, 3, 0);
	h.flags = KM_F_REPLY;
	assert_int_equal(parse_hdr(&h), -1);
	h.flags = KM_F_REPLY | 0x8000;
	assert_int_equal(parse_hdr(&h), -1);

	/* Dropping is decided before the size limits: no answer to oversized foreign junk. */
	h = req_hdr(KM_OP_PUT, 1, KM_MSG_MAX);
	hdr_frame(&h, 0, KM_PROTO_VERSION);
	len = build_raw(buf, sizeof(buf), &h, KM_MSG_MAX + 1 - KM_HDR_LEN);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), -1);
}

static void
test_req_lengths(void **state)
{
	static uint8_t buf[KM_MSG_MAX + 64];
	struct km_hdr h;
	struct km_msg m;
	size_t len;

	(void)state;
	/* key_len/val_len claim more than the datagram holds. */
	h = req_hdr(KM_OP_PUT, 3, 5);
	len = build_raw(buf, sizeof(buf), &h, 8);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(km_req_parse(buf, len - 1, KM_VALUE_MAX, &m), KM_ST_BAD_REQUEST);
	h.key_len = 4;
	km_hdr_encode(buf, &h);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_BAD_REQUEST);
	h = req_hdr(KM_OP_PUT, 3, 6);
	km_hdr_encode(buf, &h);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_BAD_REQUEST);
	/* A huge val_len must not wrap the sum. */
	h = req_hdr(KM_OP_PUT, 3, UINT32_MAX);
	km_hdr_encode(buf, &h);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_BAD_REQUEST);

	/* ... or less: trailing bytes after the value. */
	h = req_hdr(KM_OP_PUT, 3, 5);
	len = build_raw(buf, sizeof(buf), &h, 9);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_BAD_REQUEST);
	h = req_hdr(KM_OP_GET, 3, 0);
	len = build_raw(buf, sizeof(buf), &h, 4);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_BAD_REQUEST);
	h = req_hdr(KM_OP_PING, 0, 0);
	len = build_raw(buf, sizeof(buf), &h, 1);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_BAD_REQUEST);

	/* A request over one unfragmented datagram is a request (it came in fragments): its
	 * value is judged by value_max alone. */
	h = req_hdr(KM_OP_PUT, 1, KM_DGRAM_MAX - KM_HDR_LEN - 1);
	len = build_raw(buf, sizeof(buf), &h, KM_DGRAM_MAX - KM_HDR_LEN);
	assert_int_equal(len, KM_DGRAM_MAX);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_OK);
	h.val_len++;
	len = build_raw(buf, sizeof(buf), &h, KM_DGRAM_MAX + 1 - KM_HDR_LEN);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_TOO_LARGE);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX + 1, &m), KM_ST_OK);
	/* The whole datagram is bounded, consistent lengths or not. */
	h = req_hdr(KM_OP_PUT, 1, KM_VALUE_MAX_LARGE);
	len = build_raw(buf, sizeof(buf), &h, KM_MSG_MAX - KM_HDR_LEN);
	assert_int_equal(len, KM_MSG_MAX);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX_LARGE, &m), KM_ST_OK);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX_LARGE - 1, &m), KM_ST_TOO_LARGE);
	h.val_len++;
	len = build_raw(buf, sizeof(buf), &h, KM_MSG_MAX + 1 - KM_HDR_LEN);
	assert_int_equal(km_req_parse(buf, len, SIZE_MAX, &m), KM_ST_TOO_LARGE);
	h = req_hdr(KM_OP_GET, 1, 0);
	len = build_raw(buf, sizeof(buf), &h, KM_MSG_MAX + 10 - KM_HDR_LEN);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_TOO_LARGE);
	/* The header of a refused request is still decoded for the error reply. */
	assert_int_equal(m.hdr.op, KM_OP_GET);
	assert_int_equal(m.hdr.req_id, 42);
}

static void
test_req_keys(void **state)
{
	static const uint8_t keyed[] = {KM_OP_GET, KM_OP_PUT, KM_OP_CAS, KM_OP_DEL};
	static const uint8_t keyless[] = {KM_OP_PING, KM_OP_MAP};
	struct km_hdr h;
	unsigned int i;

	(void)state;
	for (i = 0; i < sizeof(keyed); i++) {
		h = req_hdr(keyed[i], 0, 0);
		assert_int_equal(parse_hdr(&h), KM_ST_BAD_REQUEST);
		h = req_hdr(keyed[i], 1, 0);
		assert_int_equal(parse_hdr(&h), KM_ST_OK);
		h = req_hdr(keyed[i], KM_KEY_MAX, 0);
		assert_int_equal(parse_hdr(&h), KM_ST_OK);
		h = req_hdr(keyed[i], KM_KEY_MAX + 1, 0);
		assert_int_equal(parse_hdr(&h), KM_ST_TOO_LARGE);
		h = req_hdr(keyed[i], 1000, 0);
		assert_int_equal(parse_hdr(&h), KM_ST_TOO_LARGE);
	}
	for (i = 0; i < sizeof(keyless); i++) {
		h = req_hdr(keyless[i], 0, 0);
		assert_int_equal(parse_hdr(&h), KM_ST_OK);
		h = req_hdr(keyless[i], 1, 0);
		assert_int_equal(parse_hdr(&h), KM_ST_BAD_REQUEST);
	}
	/* MGET names its keys in the body, never in the key field. */
	h = req_hdr(KM_OP_MGET, 1, sizeof(mget_req_body));
	{
		uint8_t buf[128];
		struct km_msg m;

		km_hdr_encode(buf, &h);
		buf[KM_HDR_LEN] = 'k';
		memcpy(buf + KM_HDR_LEN + 1, mget_req_body, sizeof(mget_req_body));
		assert_int_equal(
			km_req_parse(buf, KM_HDR_LEN + 1 + sizeof(mget_req_body), KM_VALUE_MAX, &m),
			KM_ST_BAD_REQUEST);
	}
}

static void
test_req_values(void **state)
{
	static const uint8_t no_value[] = {KM_OP_GET, KM_OP_DEL};
	uint8_t buf[KM_DGRAM_MAX];
	struct km_hdr h;
	struct km_msg m;
	unsigned int i;
	size_t len;

	(void)state;
	for (i = 0; i < sizeof(no_value); i++) {
		h = req_hdr(no_value[i], 2, 1);
		assert_int_equal(parse_hdr(&h), KM_ST_BAD_REQUEST);
	}
	h = req_hdr(KM_OP_PING, 0, 1);
	assert_int_equal(parse_hdr(&h), KM_ST_BAD_REQUEST);
	h = req_hdr(KM_OP_MAP, 0, 8);
	assert_int_equal(parse_hdr(&h), KM_ST_BAD_REQUEST);

	/* PUT and CAS: up to value_max, empty values included. */
	for (i = 0; i < 2; i++) {
		uint8_t op = i == 0 ? KM_OP_PUT : KM_OP_CAS;

		h = req_hdr(op, 4, 0);
		assert_int_equal(parse_hdr(&h), KM_ST_OK);
		h = req_hdr(op, 4, 100);
		len = build_raw(buf, sizeof(buf), &h, 104);
		assert_int_equal(km_req_parse(buf, len, 100, &m), KM_ST_OK);
		assert_int_equal(km_req_parse(buf, len, 99, &m), KM_ST_TOO_LARGE);
		assert_int_equal(km_req_parse(buf, len, 0, &m), KM_ST_TOO_LARGE);
		/* KM_VALUE_MAX with a 1-byte key is exactly one full datagram. */
		h = req_hdr(op, 1, KM_VALUE_MAX);
		len = build_raw(buf, sizeof(buf), &h, 1 + KM_VALUE_MAX);
		assert_int_equal(len, KM_DGRAM_MAX);
		assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_OK);
		assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX - 1, &m), KM_ST_TOO_LARGE);
	}
}

/* SCAN requests: a prefix of 1..250 bytes, no body or 4 bytes of known flags. */
static void
test_req_scan(void **state)
{
	uint8_t buf[KM_HDR_LEN + 300];
	struct km_hdr h = {.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = KM_OP_SCAN,
		.req_id = 7};
	struct km_msg m;
	static const struct {
		uint16_t klen;
		uint32_t vlen;
		uint16_t flags;
		int st;
	} cases[] = {
		{5, 0, 0, KM_ST_OK},
		{5, 4, 0, KM_ST_OK},
		{5, 4, KM_SCAN_F_KEYS, KM_ST_OK},
		{250, 4, 0, KM_ST_OK},
		{5, 4, 2, KM_ST_BAD_REQUEST},
		{5, 4, 0x8000, KM_ST_BAD_REQUEST},
		{5, 3, 0, KM_ST_BAD_REQUEST},
		{5, 5, 0, KM_ST_BAD_REQUEST},
		{0, 0, 0, KM_ST_BAD_REQUEST},
		{0, 4, 0, KM_ST_BAD_REQUEST},
		{251, 0, 0, KM_ST_TOO_LARGE},
	};
	unsigned int i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		h.key_len = cases[i].klen;
		h.val_len = cases[i].vlen;
		memset(buf, 'p', sizeof(buf));
		km_hdr_encode(buf, &h);
		if (cases[i].vlen >= 4)
			km_put16(buf + KM_HDR_LEN + cases[i].klen + 2, cases[i].flags);
		print_message("scan case %u\n", i);
		assert_int_equal(km_req_parse(buf, KM_HDR_LEN + cases[i].klen + cases[i].vlen,
					 KM_VALUE_MAX, &m),
			cases[i].st);
	}
}

/* SCAN reply bodies: entries read back, a truncated or malformed one refused. */
static void
test_scan_rep(void **state)
{
	const uint8_t *p = scan_rep_body + 2, *end = scan_rep_body + sizeof(scan_rep_body);
	uint8_t bad[sizeof(scan_rep_body)];
	struct km_scan_ent e;
	size_t n;

	(void)state;
	assert_int_equal(km_get16(scan_rep_body), 2);
	assert_int_equal(km_scan_rep_next(&p, end, &e), 1);
	assert_int_equal(e.status, KM_ST_OK);
	assert_int_equal(e.version, 0x102);
	assert_int_equal(e.key_len, 6);
	assert_memory_equal(e.key, "user/1", 6);
	assert_int_equal(e.val_len, 2);
	assert_memory_equal(e.val, "xy", 2);
	assert_int_equal(km_scan_rep_next(&p, end, &e), 1);
	assert_int_equal(e.status, KM_ST_TOO_LARGE);
	assert_int_equal(e.version, 0x103);
	assert_int_equal(e.val_len, 0);
	assert_memory_equal(e.key, "user/2", 6);
	assert_int_equal(km_scan_rep_next(&p, end, &e), 0);
	assert_ptr_equal(p, end);
	/* Every truncation of the body ends in a refusal, never a read past it. */
	for (n = 3; n < sizeof(scan_rep_body); n++) {
		int rc;

		p = scan_rep_body + 2;
		while ((rc = km_scan_rep_next(&p, scan_rep_body + n, &e)) == 1)
			;
		assert_int_equal(rc, n == 22 ? 0 : -1);
	}
	/* A key of length 0. */
	memcpy(bad, scan_rep_body, sizeof(bad));
	bad[3] = 0;
	p = bad + 2;
	assert_int_equal(km_scan_rep_next(&p, bad + sizeof(bad), &e), -1);
}

static void
test_req_ops(void **state)
{
	static const unsigned int bad_ops[] = {0, 10, 11, 128, 255};
	struct km_hdr h;
	unsigned int i;

	(void)state;
	for (i = 0; i < sizeof(bad_ops) / sizeof(bad_ops[0]); i++) {
		h = req_hdr((uint8_t)bad_ops[i], 0, 0);
		assert_int_equal(parse_hdr(&h), KM_ST_BAD_REQUEST);
		h = req_hdr((uint8_t)bad_ops[i], 3, 0);
		assert_int_equal(parse_hdr(&h), KM_ST_BAD_REQUEST);
	}
	/* The error reply needs the op and id even of an unknown op. */
	{
		uint8_t buf[KM_HDR_LEN];
		struct km_msg m;

		h = req_hdr(200, 0, 0);
		km_hdr_encode(buf, &h);
		assert_int_equal(
			km_req_parse(buf, sizeof(buf), KM_VALUE_MAX, &m), KM_ST_BAD_REQUEST);
		assert_int_equal(m.hdr.op, 200);
		assert_int_equal(m.hdr.req_id, 42);
	}
}

static void
test_req_zero_fields(void **state)
{
	static const uint16_t bad_flags[] = {0x0002, 0x0100, 0x8000, 0xfffe};
	struct km_hdr h;
	unsigned int i;

	(void)state;
	for (i = 1; i < 256; i++) {
		h = req_hdr(KM_OP_GET, 1, 0);
		h.status = (uint8_t)i;
		assert_int_equal(parse_hdr(&h), KM_ST_BAD_REQUEST);
	}
	for (i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
		h = req_hdr(KM_OP_GET, 1, 0);
		h.flags = bad_flags[i];
		assert_int_equal(parse_hdr(&h), KM_ST_BAD_REQUEST);
	}
	for (i = 0; i < 32; i++) {
		h = req_hdr(KM_OP_PING, 0, 0);
		h.reserved = 1u << i;
		assert_int_equal(parse_hdr(&h), KM_ST_BAD_REQUEST);
	}
	/* Fields a client may set freely. */
	h = req_hdr(KM_OP_GET, 1, 0);
	h.epoch = UINT32_MAX;
	h.session = UINT32_MAX;
	h.version = UINT64_MAX;
	h.req_id = 0;
	assert_int_equal(parse_hdr(&h), KM_ST_OK);
}

/* Parse an MGET whose body is `body`, as the server does. */
static int
parse_mget(const uint8_t *body, size_t len)
{
	uint8_t buf[KM_DGRAM_MAX + 64];
	struct km_hdr h = req_hdr(KM_OP_MGET, 0, (uint32_t)len);
	struct km_msg m;

	assert_true(KM_HDR_LEN + len <= sizeof(buf));
	km_hdr_encode(buf, &h);
	memcpy(buf + KM_HDR_LEN, body, len);
	return km_req_parse(buf, KM_HDR_LEN + len, KM_VALUE_MAX, &m);
}

/* MGET body of n keys "k<i>" (1 + digits bytes each); returns its length. */
static size_t
mget_body(uint8_t *b, unsigned int n, unsigned int key_len)
{
	size_t off = 2;
	unsigned int i;

	km_put16(b, (uint16_t)n);
	for (i = 0; i < n; i++) {
		b[off] = (uint8_t)key_len;
		memset(b + off + 1, 'a' + i % 26, key_len);
		off += 1 + key_len;
	}
	return off;
}

static void
test_req_mget_body(void **state)
{
	uint8_t b[KM_DGRAM_MAX];
	struct km_mget_iter it;
	const uint8_t *key;
	uint8_t klen;
	size_t len;
	unsigned int n;

	(void)state;
	assert_int_equal(parse_mget(mget_req_body, sizeof(mget_req_body)), KM_ST_OK);
	/* No body, a count alone, count 0. */
	assert_int_equal(parse_mget(b, 0), KM_ST_BAD_REQUEST);
	assert_int_equal(parse_mget(mget_req_body, 1), KM_ST_BAD_REQUEST);
	len = mget_body(b, 0, 1);
	assert_int_equal(parse_mget(b, len), KM_ST_BAD_REQUEST);

	/* 1..KM_MGET_MAX keys, each iterated back. */
	for (n = 1; n <= KM_MGET_MAX; n++) {
		len = mget_body(b, n, 3);
		assert_int_equal(parse_mget(b, len), KM_ST_OK);
		assert_int_equal(km_mget_req_begin(&it, b, len), (int)n);
		while (km_mget_req_next(&it, &key, &klen)) {
			assert_int_equal(klen, 3);
			assert_true(key > b && key + klen <= b + len);
		}
	}
	/* count over KM_MGET_MAX, with the keys present. */
	len = mget_body(b, KM_MGET_MAX + 1, 3);
	assert_int_equal(parse_mget(b, len), KM_ST_BAD_REQUEST);
	km_put16(b, UINT16_MAX);
	assert_int_equal(parse_mget(b, len), KM_ST_BAD_REQUEST);

	/* Truncated: count says 3, two entries present; last entry cut short. */
	len = mget_body(b, 3, 4);
	assert_int_equal(parse_mget(b, len - 5), KM_ST_BAD_REQUEST);
	assert_int_equal(parse_mget(b, len - 1), KM_ST_BAD_REQUEST);
	assert_int_equal(parse_mget(b, len - 4), KM_ST_BAD_REQUEST);
	/* Entry with key length 0, first or last. */
	len = mget_body(b, 3, 4);
	b[2] = 0;
	assert_int_equal(parse_mget(b, len - 4), KM_ST_BAD_REQUEST);
	len = mget_body(b, 3, 4);
	b[len - 5] = 0;
	assert_int_equal(parse_mget(b, len - 4), KM_ST_BAD_REQUEST);
	/* Trailing bytes after the last entry. */
	len = mget_body(b, 3, 4);
	b[len] = 0;
	assert_int_equal(parse_mget(b, len + 1), KM_ST_BAD_REQUEST);
	/* An MGET key longer than KM_KEY_MAX is malformed (BAD_REQUEST, not TOO_LARGE). */
	len = mget_body(b, 1, KM_KEY_MAX);
	assert_int_equal(parse_mget(b, len), KM_ST_OK);
	len = mget_body(b, 1, KM_KEY_MAX + 1);
	assert_int_equal(parse_mget(b, len), KM_ST_BAD_REQUEST);
}

static void
test_reply_parse(void **state)
{
	uint8_t buf[KM_DGRAM_MAX + 8];
	struct km_hdr h;
	struct km_msg m;
	size_t len;

	(void)state;
	memcpy(buf, vec_get_rep, sizeof(vec_get_rep));
	len = sizeof(vec_get_rep);
	assert_int_equal(km_reply_parse(buf, len, &m), 0);
	for (size_t l = 0; l < KM_HDR_LEN; l++)
		assert_int_equal(km_reply_parse(buf, l, &m), -1);
	/* Lengths disagreeing with the datagram, either way. */
	assert_int_equal(km_reply_parse(buf, len - 1, &m), -1);
	buf[len] = 0;
	assert_int_equal(km_reply_parse(buf, len + 1, &m), -1);

	buf[0] = 0;
	assert_int_equal(km_reply_parse(buf, len, &m), -1);
	buf[0] = KM_PROTO_MAGIC;
	buf[1] = KM_PROTO_VERSION + 1;
	assert_int_equal(km_reply_parse(buf, len, &m), -1);
	buf[1] = KM_PROTO_VERSION;
	assert_int_equal(km_reply_parse(buf, len, &m), 0);
	/* A request is not a reply. */
	km_hdr_decode(vec_get_rep, &h);
	h.flags = 0;
	km_hdr_encode(buf, &h);
	assert_int_equal(km_reply_parse(buf, len, &m), -1);
	/* Every defined status is accepted, none beyond. */
	km_hdr_decode(vec_get_rep, &h);
	for (unsigned int st = 0; st < 256; st++) {
		h.status = (uint8_t)st;
		km_hdr_encode(buf, &h);
		assert_int_equal(km_reply_parse(buf, len, &m), st < KM_ST__MAX ? 0 : -1);
	}
	/* A reply may carry a key (unused in version 1): lengths just have to add up. */
	h = (struct km_hdr){.op = KM_OP_GET, .flags = KM_F_REPLY, .key_len = 2, .val_len = 3};
	hdr_frame(&h, KM_PROTO_MAGIC, KM_PROTO_VERSION);
	len = km_msg_build(buf, sizeof(buf), &h, "ab", "cde");
	assert_int_equal(km_reply_parse(buf, len, &m), 0);
	assert_memory_equal(m.key, "ab", 2);
	assert_memory_equal(m.val, "cde", 3);
}

static void
test_msg_build(void **state)
{
	uint8_t buf[64];
	struct km_hdr h = req_hdr(KM_OP_PUT, 2, 5);
	struct km_msg m;
	size_t n;

	(void)state;
	assert_int_equal(km_msg_build(buf, KM_HDR_LEN + 6, &h, "k1", "hello"), 0);
	assert_int_equal(km_msg_build(buf, 0, &h, "k1", "hello"), 0);
	n = km_msg_build(buf, KM_HDR_LEN + 7, &h, "k1", "hello");
	assert_int_equal(n, KM_HDR_LEN + 7);
	assert_int_equal(km_req_parse(buf, n, KM_VALUE_MAX, &m), KM_ST_OK);

	/* A reply built over the request it answers, value taken from the request. */
	h = (struct km_hdr){.op = KM_OP_GET, .flags = KM_F_REPLY, .val_len = 5, .req_id = 42};
	hdr_frame(&h, KM_PROTO_MAGIC, KM_PROTO_VERSION);
	n = km_msg_build(buf, sizeof(buf), &h, NULL, m.val);
	assert_int_equal(n, KM_HDR_LEN + 5);
	assert_int_equal(km_reply_parse(buf, n, &m), 0);
	assert_memory_equal(m.val, "hello", 5);
}

static void
test_names(void **state)
{
	static const char *const ops[] = {
		"?", "PING", "GET", "MGET", "PUT", "CAS", "DEL", "SCAN", "MAP", "HELLO"};
	static const char *const sts[] = {"OK", "NOT_FOUND", "MOVED", "BUSY", "TOO_LARGE",
		"BAD_REQUEST", "VERSION_MISMATCH", "DENIED", "ERROR", "DAMAGED", "FULL"};
	unsigned int i;

	(void)state;
	assert_int_equal(sizeof(ops) / sizeof(ops[0]), KM_OP__MAX);
	assert_int_equal(sizeof(sts) / sizeof(sts[0]), KM_ST__MAX);
	for (i = 0; i < KM_OP__MAX; i++)
		assert_string_equal(km_op_name(i), ops[i]);
	for (i = 0; i < KM_ST__MAX; i++)
		assert_string_equal(km_status_name(i), sts[i]);
	assert_string_equal(km_op_name(KM_OP__MAX), "?");
	assert_string_equal(km_op_name(255), "?");
	assert_string_equal(km_op_name(UINT32_MAX), "?");
	assert_string_equal(km_status_name(KM_ST__MAX), "?");
	assert_string_equal(km_status_name(255), "?");
	assert_string_equal(km_status_name(UINT32_MAX), "?");
}

/* Make one fuzz datagram into buf; returns its length (may exceed KM_MSG_MAX). */
static size_t
fuzz_make(uint8_t *buf, size_t cap, uint64_t *seed)
{
	uint64_t r = rnd_next(seed);
	const struct vector *v = &vectors[(r >> 8) % (sizeof(vectors) / sizeof(vectors[0]))];
	size_t len, i, n;

	switch (r & 7) {
	case 0: /* pure noise */
		len = rnd_next(seed) % (KM_DGRAM_MAX + 64);
		for (i = 0; i < len; i++)
			buf[i] = (uint8_t)rnd_next(seed);
		return len;
	case 1: { /* a random but plausible header: right magic and version, small lengths
		   * (one in 3 around the largest request, on either side) */
		uint32_t vlen = rnd_next(seed) % 3 == 0
					? KM_MSG_MAX - 128 + (uint32_t)(rnd_next(seed) % 256)
					: (uint32_t)(rnd_next(seed) % 1500);
		struct km_hdr h = req_hdr(
			(uint8_t)(rnd_next(seed) % 12), (uint16_t)(rnd_next(seed) % 300), vlen);

		if (rnd_next(seed) % 4 == 0)
			h.flags = (uint16_t)rnd_next(seed);
		len = (size_t)h.key_len + h.val_len + KM_HDR_LEN;
		if (rnd_next(seed) % 4 == 0)
			len = rnd_next(seed) % cap;
		if (len > cap)
			len = cap;
		if (len < KM_HDR_LEN)
			len = KM_HDR_LEN;
		km_hdr_encode(buf, &h);
		for (i = KM_HDR_LEN; i < len; i++)
			buf[i] = (uint8_t)rnd_next(seed);
		return len;
	}
	case 2: { /* an MGET with a random structured body */
		unsigned int cnt = (unsigned int)(rnd_next(seed) % (KM_MGET_MAX + 3));
		size_t off = KM_HDR_LEN + 2;
		struct km_hdr h;

		for (i = 0; i < cnt && off + 1 + KM_KEY_MAX < cap; i++) {
			uint8_t kl = (uint8_t)(rnd_next(seed) % 20);

			buf[off] = kl;
			memset(buf + off + 1, 'm', kl);
			off += 1 + kl;
		}
		if (rnd_next(seed) % 4 == 0)
			cnt = (unsigned int)rnd_next(seed) % 80;
		km_put16(buf + KM_HDR_LEN, (uint16_t)cnt);
		h = req_hdr(KM_OP_MGET, 0, (uint32_t)(off - KM_HDR_LEN));
		if (rnd_next(seed) % 4 == 0)
			off -= rnd_next(seed) % (off - KM_HDR_LEN + 1);
		km_hdr_encode(buf, &h);
		return off;
	}
	default: /* a test vector with a few byte or bit mutations and a new length */
		memcpy(buf, v->bytes, v->len);
		len = v->len;
		n = 1 + rnd_next(seed) % 4;
		for (i = 0; i < n; i++) {
			uint64_t m = rnd_next(seed);
			size_t at = (size_t)(m >> 16) % len;

			if (m & 1)
				buf[at] ^= (uint8_t)(1u << ((m >> 1) & 7));
			else
				buf[at] = (uint8_t)(m >> 8);
		}
		if (rnd_next(seed) % 8 == 0) {
			size_t nl = rnd_next(seed) % (v->len + 16);

			for (i = len; i < nl; i++)
				buf[i] = (uint8_t)rnd_next(seed);
			len = nl;
		}
		return len;
	}
}

static void
test_fuzz(void **state)
{
	uint8_t *src = malloc(KM_MSG_MAX + 64), *again = malloc(KM_MSG_MAX + 64);
	unsigned int counts[4] = {0};
	uint64_t seed = FUZZ_SEED;
	unsigned int i;

	(void)state;
	assert_non_null(src);
	assert_non_null(again);
	for (i = 0; i < FUZZ_ITERATIONS; i++) {
		size_t len = fuzz_make(src, KM_MSG_MAX + 64, &seed);
		/* Exact-size copy so that a sanitizer catches any read past the datagram. */
		uint8_t *buf = malloc(len == 0 ? 1 : len);
		size_t value_max = rnd_next(&seed) % 2 ? KM_VALUE_MAX_LARGE : 100;
		struct km_msg m, r;
		int rc, rrc;

		assert_non_null(buf);
		memcpy(buf, src, len);
		rc = km_req_parse(buf, len, value_max, &m);
		rrc = km_reply_parse(buf, len, &r);
		assert_true(rrc == 0 || rrc == -1);
		switch (rc) {
		case -1:
			counts[0]++;
			break;
		case KM_ST_OK:
			counts[1]++;
			/* Accepted: every documented invariant holds and it re-encodes exactly. */
			assert_int_equal(rrc, -1);
			assert_true(len <= KM_MSG_MAX);
			assert_int_equal(
				len, (size_t)KM_HDR_LEN + m.hdr.key_len + m.hdr.val_len +
					     ((m.hdr.flags & KM_F_COOKIE) ? KM_COOKIE_LEN : 0) +
					     ((m.hdr.flags & KM_F_AUTH) ? KM_AUTH_LEN : 0));
			assert_true(m.hdr.op >= KM_OP_PING && m.hdr.op < KM_OP__MAX);
			assert_true(m.hdr.op != KM_OP_SCAN || m.hdr.val_len == 0 ||
				    (m.hdr.val_len == KM_SCAN_REQ_LEN &&
					    (km_get16(m.val + 2) & ~KM_SCAN_F_ALL) == 0));
			assert_true(m.hdr.op != KM_OP_HELLO || m.hdr.val_len == KM_HELLO_LEN);
			assert_int_equal(m.hdr.status, 0);
			assert_int_equal(m.hdr.flags & ~KM_F_TRAILERS, 0);
			assert_int_equal(m.hdr.reserved, 0);
			assert_true(m.hdr.key_len <= KM_KEY_MAX);
			if (m.hdr.op == KM_OP_PUT || m.hdr.op == KM_OP_CAS)
				assert_true(m.hdr.val_len <= value_max);
			if (m.hdr.op == KM_OP_MGET) {
				struct km_mget_iter it;
				const uint8_t *k;
				uint8_t kl;
				int cnt = km_mget_req_begin(&it, m.val, m.hdr.val_len);

				assert_in_range(cnt, 1, KM_MGET_MAX);
				while (km_mget_req_next(&it, &k, &kl)) {
					assert_true(kl >= 1 && kl <= KM_KEY_MAX);
					assert_true(k >= buf && k + kl <= buf + len);
					cnt--;
				}
				assert_int_equal(cnt, 0);
			}
			assert_int_equal(
				km_msg_build(again, KM_MSG_MAX + 64, &m.hdr, m.key, m.val), len);
			assert_memory_equal(again, buf, len);
			break;
		case KM_ST_BAD_REQUEST:
			counts[2]++;
			break;
		case KM_ST_TOO_LARGE:
			counts[3]++;
			break;
		default:
			fail_msg("km_req_parse returned %d", rc);
		}
		free(buf);
	}
	print_message("fuzz: %u dropped, %u ok, %u bad request, %u too large\n", counts[0],
		counts[1], counts[2], counts[3]);
	/* The generator must reach every outcome, or the loop proves little. */
	for (i = 0; i < 4; i++)
		assert_true(counts[i] > FUZZ_ITERATIONS / 100);
	free(src);
	free(again);
}

/* Client keys as given to clients: "ID:HEX". */
static void
test_key_parse(void **state)
{
	static const char *const bad[] = {NULL, "", "7", "7:", ":00112233445566778899aabbccddeeff",
		"0:00112233445566778899aabbccddeeff", "4294967296:00112233445566778899aabbccddeeff",
		"+7:00112233445566778899aabbccddeeff", "7 :00112233445566778899aabbccddeeff",
		"7:00112233445566778899aabbccddeef", "7:00112233445566778899aabbccddeeff0",
		"7:00112233445566778899aabbccddeefg", "7:00112233445566778899aabbccddeeff\n",
		"7:0x112233445566778899aabbccddeeff"};
	uint8_t key[KM_MAC_KEY_LEN], want[KM_MAC_KEY_LEN];
	uint32_t id = 99;
	unsigned int i;

	(void)state;
	for (i = 0; i < KM_MAC_KEY_LEN; i++)
		want[i] = (uint8_t)(i * 0x11);
	assert_int_equal(km_key_parse("7:00112233445566778899aabbccddeeff", &id, key), 0);
	assert_int_equal(id, 7);
	assert_memory_equal(key, want, sizeof(key));
	assert_int_equal(km_key_parse("4294967295:00112233445566778899AABBCCDDEEFF", &id, key), 0);
	assert_int_equal(id, UINT32_MAX);
	assert_memory_equal(key, want, sizeof(key));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		id = 99;
		memset(key, 0xa5, sizeof(key));
		assert_int_equal(km_key_parse(bad[i], &id, key), -EINVAL);
		/* Nothing written on failure. */
		assert_int_equal(id, 99);
		assert_int_equal(key[0], 0xa5);
	}
}

/* km_req_seal: cookie then key id and MAC, flags set; km_req_parse finds them. */
static void
test_req_seal(void **state)
{
	struct km_hdr h = {.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = KM_OP_GET,
		.key_len = 3,
		.req_id = 5};
	uint8_t key[KM_MAC_KEY_LEN], buf[KM_HDR_LEN + 3 + KM_TRAILER_MAX];
	struct km_msg m;
	size_t len, sealed;

	(void)state;
	memset(key, 0x42, sizeof(key));
	len = km_msg_build(buf, sizeof(buf), &h, "abc", NULL);
	sealed = km_req_seal(buf, len, sizeof(buf), 1, 0x0102030405060708ull, 9, key);
	assert_int_equal(sealed, len + KM_TRAILER_MAX);
	assert_int_equal(km_req_parse(buf, sealed, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.flags, KM_F_COOKIE | KM_F_AUTH);
	assert_true(m.cookie == 0x0102030405060708ull);
	assert_int_equal(m.key_id, 9);
	assert_int_equal(km_mac_check(key, buf, &m), 1);
	key[0] ^= 1;
	assert_int_equal(km_mac_check(key, buf, &m), 0);
	/* Resealed without trailers: the flags are cleared. */
	assert_int_equal(km_req_seal(buf, len, sizeof(buf), 0, 0, 0, NULL), len);
	assert_int_equal(km_req_parse(buf, len, KM_VALUE_MAX, &m), KM_ST_OK);
	assert_int_equal(m.hdr.flags, 0);
	/* No room. */
	assert_int_equal(km_req_seal(buf, len, len + KM_COOKIE_LEN - 1, 1, 1, 0, NULL), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_offsets),
		cmocka_unit_test(test_hdr_roundtrip),
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_vector_mget_bodies),
		cmocka_unit_test(test_vector_sealed),
		cmocka_unit_test(test_req_dropped),
		cmocka_unit_test(test_req_lengths),
		cmocka_unit_test(test_req_keys),
		cmocka_unit_test(test_req_values),
		cmocka_unit_test(test_req_ops),
		cmocka_unit_test(test_req_zero_fields),
		cmocka_unit_test(test_req_mget_body),
		cmocka_unit_test(test_req_scan),
		cmocka_unit_test(test_scan_rep),
		cmocka_unit_test(test_reply_parse),
		cmocka_unit_test(test_msg_build),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_fuzz),
		cmocka_unit_test(test_key_parse),
		cmocka_unit_test(test_req_seal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
