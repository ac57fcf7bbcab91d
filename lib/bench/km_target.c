/* SPDX-License-Identifier: BSD-3-Clause */

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <km_proto.h>

#include "km_target.h"
#include "km_workload.h"

/*
 * memcached over UDP: an 8-byte frame header, then the 24-byte binary-protocol header.
 * Every integer is big endian.
 *
 * Frame header:        Binary header (request / response):
 *   0: request id        8: magic 0x80 / 0x81      14: vbucket 0 / status
 *   2: sequence number   9: opcode                 16: total body length
 *   4: total datagrams  10: key length             20: opaque (echoed)
 *   6: reserved 0       12: extras length          24: CAS
 *                       13: data type 0
 * The body is extras, key, value in that order.
 */
#define MC_FRAME_LEN  8
#define MC_HDR_LEN    24
#define MC_MAGIC_REQ  0x80
#define MC_MAGIC_RES  0x81
#define MC_OP_GET     0x00
#define MC_OP_SET     0x01
#define MC_OP_DELETE  0x04
#define MC_SET_EXTRAS 8    /* flags, expiration */
#define MC_GET_EXTRAS 4    /* flags */
#define MC_REPLY_MAX  1400 /* memcached's UDP_MAX_PAYLOAD_SIZE */
#define MC_ST_OK      0
#define MC_ST_NOENT   1
#define MC_KEY_MAX    250 /* memcached's KEY_MAX: its own limit, equal to KM_KEY_MAX today */

static void
put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void
put_be32(uint8_t *p, uint32_t v)
{
	put_be16(p, (uint16_t)(v >> 16));
	put_be16(p + 2, (uint16_t)v);
}

static uint16_t
get_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t
get_be32(const uint8_t *p)
{
	return ((uint32_t)get_be16(p) << 16) | get_be16(p + 2);
}

/* The value of a PUT without one: recognisable in a packet dump. */
static void
fill_pattern(uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)('a' + i % 26);
}

size_t
km_tgt_value_max(enum km_tgt_kind kind, size_t klen)
{
	size_t req_max, reply_max;

	switch (kind) {
	case KM_TGT_KEYMAP:
	case KM_TGT_ECHO:
		if (klen < 1 || klen > KM_KEY_MAX)
			return 0;
		return KM_DGRAM_MAX - KM_HDR_LEN - klen;
	case KM_TGT_MEMCACHED:
		if (klen < 1 || klen > MC_KEY_MAX)
			return 0;
		/* The request must fit one datagram, and so must the GET reply: memcached
		 * splits replies above MC_REPLY_MAX bytes, which the bench does not reassemble. */
		req_max = KM_DGRAM_MAX - MC_FRAME_LEN - MC_HDR_LEN - MC_SET_EXTRAS - klen;
		reply_max = MC_REPLY_MAX - MC_FRAME_LEN - MC_HDR_LEN - MC_GET_EXTRAS;
		return req_max < reply_max ? req_max : reply_max;
	}
	return 0;
}

void
km_tgt_seal_init(
	struct km_tgt_seal *s, int has_cookie, uint64_t cookie, uint32_t key_id, const uint8_t *key)
{
	memset(s, 0, sizeof(*s));
	if (has_cookie) {
		s->flags |= KM_F_COOKIE;
		km_put64(s->tail, cookie);
		s->tail_len = KM_COOKIE_LEN;
	}
	if (key != NULL) {
		s->flags |= KM_F_AUTH;
		s->has_key = 1;
		km_put32(s->tail + s->tail_len, key_id);
		s->tail_len += 4;
		memcpy(s->key, key, KM_MAC_KEY_LEN);
	}
}

size_t
km_tgt_seal(const struct km_tgt_seal *s, uint8_t *buf, size_t len, size_t cap)
{
	size_t lim = cap < KM_DGRAM_MAX ? cap : KM_DGRAM_MAX;
	size_t mac = s->has_key ? KM_MAC_LEN : 0, tlen = s->tail_len;
	const uint8_t *tail = s->tail;
	uint16_t flags = s->flags;

	if (flags == 0)
		return len;
	if (len < KM_HDR_LEN)
		return 0;
	/* No room for the cookie: a write that fills the datagram, which needs none. */
	if ((flags & KM_F_COOKIE) != 0 && len + tlen + mac > lim) {
		flags &= (uint16_t)~KM_F_COOKIE;
		tail += KM_COOKIE_LEN;
		tlen -= KM_COOKIE_LEN;
	}
	if (len + tlen + mac > lim)
		return 0;
	km_put16(buf + 4, (uint16_t)(km_get16(buf + 4) | flags));
	memcpy(buf + len, tail, tlen);
	len += tlen;
	if (s->has_key) {
		km_mac(s->key, buf, len, buf + len);
		len += KM_MAC_LEN;
	}
	return len;
}

size_t
km_tgt_hello_build(uint64_t req_id, uint8_t *buf, size_t cap)
{
	static const uint8_t pad[KM_HELLO_LEN];
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = KM_OP_HELLO,
		.val_len = KM_HELLO_LEN,
		.req_id = req_id,
	};

	return km_msg_build(buf, cap, &h, NULL, pad);
}

int
km_tgt_hello_parse(const uint8_t *buf, size_t len, uint64_t req_id, struct km_tgt_hello *out)
{
	struct km_msg m;

	if (km_reply_parse(buf, len, &m) != 0 || m.hdr.op != KM_OP_HELLO || m.hdr.req_id != req_id)
		return -1;
	if (m.hdr.status == KM_ST_OK && m.hdr.val_len != KM_HELLO_LEN)
		return -1;
	memset(out, 0, sizeof(*out));
	out->status = m.hdr.status;
	if (m.hdr.status == KM_ST_DENIED)
		out->deny = (uint8_t)m.hdr.version;
	if (m.hdr.status == KM_ST_OK) {
		out->cookie = km_get64(m.val);
		out->valid_ms = km_get32(m.val + 8);
		out->flags = km_get32(m.val + 12);
	}
	return 0;
}

static size_t
keymap_build(uint8_t op, uint64_t req_id, uint32_t session, const void *key, size_t klen,
	const void *val, size_t vlen, uint8_t *buf, size_t cap)
{
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.req_id = req_id,
		.session = session,
	};

	switch (op) {
	case KM_WL_GET:
		h.op = KM_OP_GET;
		vlen = 0;
		break;
	case KM_WL_PUT:
		h.op = KM_OP_PUT;
		break;
	case KM_WL_DEL:
		h.op = KM_OP_DEL;
		vlen = 0;
		break;
	default:
		return 0;
	}
	if (klen < 1 || klen > KM_KEY_MAX || vlen > km_tgt_value_max(KM_TGT_KEYMAP, klen) ||
		KM_HDR_LEN + klen + vlen > cap)
		return 0;
	h.key_len = (uint16_t)klen;
	h.val_len = (uint32_t)vlen;
	if (vlen != 0 && val == NULL) {
		/* Write the pattern in place: km_msg_build() copies it onto itself. */
		val = buf + KM_HDR_LEN + klen;
		fill_pattern(buf + KM_HDR_LEN + klen, vlen);
	}
	return km_msg_build(buf, cap, &h, key, val);
}

static size_t
memcached_build(uint8_t op, uint64_t req_id, const void *key, size_t klen, const void *val,
	size_t vlen, uint8_t *buf, size_t cap)
{
	uint8_t *h = buf + MC_FRAME_LEN, *body = h + MC_HDR_LEN;
	unsigned int extlen = 0;
	uint8_t opcode;
	size_t len;

	switch (op) {
	case KM_WL_GET:
		opcode = MC_OP_GET;
		vlen = 0;
		break;
	case KM_WL_PUT:
		opcode = MC_OP_SET;
		extlen = MC_SET_EXTRAS;
		break;
	case KM_WL_DEL:
		opcode = MC_OP_DELETE;
		vlen = 0;
		break;
	default:
		return 0;
	}
	len = MC_FRAME_LEN + MC_HDR_LEN + extlen + klen + vlen;
	if (klen < 1 || klen > MC_KEY_MAX || vlen > km_tgt_value_max(KM_TGT_MEMCACHED, klen) ||
		len > cap)
		return 0;

	put_be16(buf, (uint16_t)req_id); /* the low 16 bits; opaque carries the low 32 */
	put_be16(buf + 2, 0);            /* sequence number */
	put_be16(buf + 4, 1);            /* total datagrams */
	put_be16(buf + 6, 0);
	memset(h, 0, MC_HDR_LEN);
	h[0] = MC_MAGIC_REQ;
	h[1] = opcode;
	put_be16(h + 2, (uint16_t)klen);
	h[4] = (uint8_t)extlen;
	put_be32(h + 8, (uint32_t)(extlen + klen + vlen));
	put_be32(h + 12, (uint32_t)req_id);
	memset(body, 0, extlen);
	memcpy(body + extlen, key, klen);
	if (val != NULL)
		memcpy(body + extlen + klen, val, vlen);
	else
		fill_pattern(body + extlen + klen, vlen);
	return len;
}

size_t
km_tgt_build(enum km_tgt_kind kind, uint8_t op, uint64_t req_id, uint32_t session, const void *key,
	size_t klen, const void *val, size_t vlen, uint8_t *buf, size_t cap)
{
	switch (kind) {
	case KM_TGT_KEYMAP:
	case KM_TGT_ECHO:
		return keymap_build(op, req_id, session, key, klen, val, vlen, buf, cap);
	case KM_TGT_MEMCACHED:
		return memcached_build(op, req_id, key, klen, val, vlen, buf, cap);
	}
	return 0;
}

int
km_tgt_tmpl_init(struct km_tgt_tmpl *t, enum km_tgt_kind kind, uint8_t op, size_t klen, size_t vlen)
{
	uint8_t key[KM_KEY_MAX];
	uint8_t *f = malloc(KM_DGRAM_MAX);
	size_t len;

	memset(t, 0, sizeof(*t));
	if (f == NULL)
		return -ENOMEM;
	if (klen > sizeof(key)) {
		free(f);
		return -EINVAL;
	}
	memset(key, 0, klen);
	len = km_tgt_build(kind, op, 0, 0, key, klen, NULL, vlen, f, KM_DGRAM_MAX);
	if (len == 0) {
		free(f);
		return -EINVAL;
	}
	t->frame = f;
	t->len = (uint16_t)len;
	t->klen = (uint16_t)klen;
	t->kind = (uint8_t)kind;
	t->op = op;
	t->vlen = (uint32_t)vlen;
	if (kind == KM_TGT_MEMCACHED)
		t->key_off = MC_FRAME_LEN + MC_HDR_LEN + (op == KM_WL_PUT ? MC_SET_EXTRAS : 0);
	else
		t->key_off = KM_HDR_LEN;
	return 0;
}

void
km_tgt_tmpl_fini(struct km_tgt_tmpl *t)
{
	free(t->frame);
	t->frame = NULL;
}

size_t
km_tgt_tmpl_build(const struct km_tgt_tmpl *t, uint64_t req_id, uint32_t session, const void *key,
	uint8_t *buf, size_t cap)
{
	if (t->len > cap)
		return 0;
	memcpy(buf, t->frame, t->len);
	memcpy(buf + t->key_off, key, t->klen);
	if (t->kind == KM_TGT_MEMCACHED) {
		put_be16(buf, (uint16_t)req_id);
		put_be32(buf + MC_FRAME_LEN + 12, (uint32_t)req_id);
	} else {
		/* km_hdr_encode()'s places of req_id and session */
		km_put64(buf + 16, req_id);
		km_put32(buf + 32, session);
	}
	return t->len;
}

/*
 * Every target reports success as 0 and "no such key" as 1 (keymap: KM_ST_OK,
 * KM_ST_NOT_FOUND; memcached: status 0 and 1); what success means depends on the op.
 * @return 0, or -1 for an op the bench never sends.
 */
static int
classify(uint8_t op, uint16_t status, uint32_t val_len, struct km_tgt_reply *out)
{
	if (op != KM_WL_GET && op != KM_WL_PUT && op != KM_WL_DEL)
		return -1;
	out->op = op;
	out->status = status;
	out->val_len = 0;
	out->key_len = 0;
	out->key = NULL;
	out->val = NULL;
	if (status == 0 && op == KM_WL_GET) {
		out->result = KM_TGT_R_HIT;
		out->val_len = val_len;
	} else if (status == 0) {
		out->result = KM_TGT_R_STORED;
	} else if (status == 1) {
		out->result = KM_TGT_R_MISS;
	} else {
		out->result = KM_TGT_R_ERROR;
	}
	return 0;
}

/* keymap op code -> enum km_wl_opcode (0xff for ops the bench never sends). */
static uint8_t
keymap_wl_op(uint8_t op)
{
	switch (op) {
	case KM_OP_GET:
		return KM_WL_GET;
	case KM_OP_PUT:
		return KM_WL_PUT;
	case KM_OP_DEL:
		return KM_WL_DEL;
	default:
		return 0xff;
	}
}

static int
keymap_parse(const uint8_t *buf, size_t len, struct km_tgt_reply *out)
{
	struct km_msg m;

	if (km_reply_parse(buf, len, &m) != 0)
		return -1;
	out->req_id = m.hdr.req_id;
	/* DENIED says why in its version field. */
	out->deny = m.hdr.status == KM_ST_DENIED ? (uint8_t)m.hdr.version : 0;
	if (classify(keymap_wl_op(m.hdr.op), m.hdr.status, m.hdr.val_len, out) != 0)
		return -1;
	if (out->val_len != 0)
		out->val = m.val;
	return 0;
}

/*
 * The request itself, returned unparsed by keymapd in echo mode: decoded no further than
 * what the bench counts by (the id, the op) and the bounds of its key and value, which
 * --check compares. The bench built it: validating it as keymapd does (km_req_parse())
 * took 124 of the 1,395 instructions per request of keymap-bench's echo.
 */
static int
echo_parse(const uint8_t *buf, size_t len, struct km_tgt_reply *out)
{
	size_t klen, vlen;
	uint16_t flags;

	if (len < KM_HDR_LEN || buf[0] != KM_PROTO_MAGIC || buf[1] != KM_PROTO_VERSION)
		return -1;
	flags = km_get16(buf + offsetof(struct km_hdr, flags));
	klen = km_get16(buf + offsetof(struct km_hdr, key_len));
	vlen = km_get32(buf + offsetof(struct km_hdr, val_len));
	/* A request (not a reply), whose lengths account for every byte. */
	if ((flags & ~KM_F_TRAILERS) != 0 ||
		KM_HDR_LEN + klen + vlen + km_trailer_len(flags) != len)
		return -1;
	out->req_id = km_get64(buf + offsetof(struct km_hdr, req_id));
	out->deny = 0;
	/* Status 0 in every request: a GET counts as a hit (of its empty value), a PUT as
	 * stored. */
	if (classify(keymap_wl_op(buf[offsetof(struct km_hdr, op)]), KM_ST_OK, 0, out) != 0)
		return -1;
	out->key = buf + KM_HDR_LEN;
	out->key_len = (uint16_t)klen;
	out->val = out->key + klen;
	out->val_len = (uint32_t)vlen;
	return 0;
}

static int
memcached_parse(const uint8_t *buf, size_t len, struct km_tgt_reply *out)
{
	const uint8_t *h = buf + MC_FRAME_LEN;
	uint32_t body, opaque, extlen, klen;
	uint8_t op;

	if (len < MC_FRAME_LEN + MC_HDR_LEN || h[0] != MC_MAGIC_RES)
		return -1;
	/* Sequence 0 of 1: a reply split over datagrams is not one the bench asked for. */
	if (get_be16(buf + 2) != 0 || get_be16(buf + 4) != 1)
		return -1;
	klen = get_be16(h + 2);
	extlen = h[4];
	body = get_be32(h + 8);
	opaque = get_be32(h + 12);
	if ((size_t)body != len - MC_FRAME_LEN - MC_HDR_LEN || extlen + klen > body)
		return -1;
	if ((opaque & 0xffff) != get_be16(buf))
		return -1;
	switch (h[1]) {
	case MC_OP_GET:
		op = KM_WL_GET;
		break;
	case MC_OP_SET:
		op = KM_WL_PUT;
		break;
	case MC_OP_DELETE:
		op = KM_WL_DEL;
		break;
	default:
		return -1;
	}
	out->req_id = opaque;
	out->deny = 0;
	if (classify(op, get_be16(h + 6), body - extlen - klen, out) != 0)
		return -1;
	if (out->val_len != 0)
		out->val = h + MC_HDR_LEN + extlen + klen;
	return 0;
}

int
km_tgt_check(enum km_tgt_kind kind, const struct km_tgt_reply *r, uint8_t op, const void *key,
	size_t klen, size_t vlen)
{
	size_t i;

	if (r->op != op)
		return -1;
	if (kind == KM_TGT_ECHO) {
		if (r->key_len != klen || memcmp(r->key, key, klen) != 0 ||
			r->val_len != (op == KM_WL_PUT ? vlen : 0))
			return -1;
	} else if (r->result != KM_TGT_R_HIT || op != KM_WL_GET) {
		return 0; /* nothing more to check */
	} else if (vlen != 0 && r->val_len != vlen) {
		return -1;
	}
	for (i = 0; i < r->val_len; i++)
		if (r->val[i] != (uint8_t)('a' + i % 26))
			return -1;
	return 0;
}

int
km_tgt_parse(enum km_tgt_kind kind, const uint8_t *buf, size_t len, struct km_tgt_reply *out)
{
	switch (kind) {
	case KM_TGT_KEYMAP:
		return keymap_parse(buf, len, out);
	case KM_TGT_ECHO:
		return echo_parse(buf, len, out);
	case KM_TGT_MEMCACHED:
		return memcached_parse(buf, len, out);
	}
	return -1;
}

static const char *const kind_names[] = {
	[KM_TGT_KEYMAP] = "keymap",
	[KM_TGT_ECHO] = "echo",
	[KM_TGT_MEMCACHED] = "memcached",
};

#define NB_KINDS (sizeof(kind_names) / sizeof(kind_names[0]))

int
km_tgt_parse_name(const char *name, enum km_tgt_kind *out)
{
	unsigned int i;

	for (i = 0; name != NULL && i < NB_KINDS; i++) {
		if (strcmp(name, kind_names[i]) == 0) {
			*out = (enum km_tgt_kind)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *
km_tgt_name(enum km_tgt_kind kind)
{
	return (unsigned int)kind < NB_KINDS ? kind_names[kind] : "?";
}
