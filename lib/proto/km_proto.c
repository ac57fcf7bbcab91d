/* SPDX-License-Identifier: BSD-3-Clause */

#include <string.h>

#include "km_proto.h"

/* Ops that name one key in the key field. */
static int
op_has_key(unsigned int op)
{
	return op == KM_OP_GET || op == KM_OP_PUT || op == KM_OP_CAS || op == KM_OP_DEL ||
	       op == KM_OP_SCAN;
}

int
km_req_parse(const uint8_t *buf, size_t len, size_t value_max, struct km_msg *msg)
{
	struct km_hdr *h = &msg->hdr;
	const uint8_t *t;

	if (len < KM_HDR_LEN)
		return -1;
	km_hdr_decode(buf, h);
	/* Not ours, or a reply: answering could reflect traffic between two servers. */
	if (h->magic != KM_PROTO_MAGIC || h->proto_ver != KM_PROTO_VERSION ||
		(h->flags & KM_F_REPLY) != 0)
		return -1;
	if (len > KM_MSG_MAX)
		return KM_ST_TOO_LARGE;
	/* The lengths must account for every byte of the datagram, no more, no less. */
	if ((size_t)KM_HDR_LEN + h->key_len + h->val_len + km_trailer_len(h->flags) != len)
		return KM_ST_BAD_REQUEST;
	msg->key = buf + KM_HDR_LEN;
	msg->val = msg->key + h->key_len;
	t = msg->val + h->val_len;
	msg->mac = NULL;
	if ((h->flags & KM_F_COOKIE) != 0) {
		msg->cookie = km_get64(t);
		t += KM_COOKIE_LEN;
	}
	if ((h->flags & KM_F_AUTH) != 0) {
		msg->key_id = km_get32(t);
		msg->mac = t + 4;
	}
	if (h->op == 0 || h->op >= KM_OP__MAX)
		return KM_ST_BAD_REQUEST;
	if (h->status != 0 || h->reserved != 0 || (h->flags & ~KM_F_TRAILERS) != 0)
		return KM_ST_BAD_REQUEST;

	if (op_has_key(h->op)) {
		if (h->key_len == 0)
			return KM_ST_BAD_REQUEST;
		if (h->key_len > KM_KEY_MAX)
			return KM_ST_TOO_LARGE;
	} else if (h->key_len != 0) {
		return KM_ST_BAD_REQUEST;
	}

	switch (h->op) {
	case KM_OP_PUT:
	case KM_OP_CAS:
		if (h->val_len > value_max)
			return KM_ST_TOO_LARGE;
		break;
	case KM_OP_MGET: {
		struct km_mget_iter it;

		if (km_mget_req_begin(&it, msg->val, h->val_len) < 0)
			return KM_ST_BAD_REQUEST;
		break;
	}
	case KM_OP_SCAN:
		/* No body, or max entries and flags. */
		if (h->val_len != 0 && (h->val_len != KM_SCAN_REQ_LEN ||
					       (km_get16(msg->val + 2) & ~KM_SCAN_F_ALL) != 0))
			return KM_ST_BAD_REQUEST;
		break;
	case KM_OP_HELLO:
		/* Padding: the reply is no larger than the request. */
		if (h->val_len != KM_HELLO_LEN)
			return KM_ST_BAD_REQUEST;
		break;
	default:
		/* GET, DEL, PING, MAP carry no value. */
		if (h->val_len != 0)
			return KM_ST_BAD_REQUEST;
		break;
	}
	return KM_ST_OK;
}

int
km_reply_parse(const uint8_t *buf, size_t len, struct km_msg *msg)
{
	struct km_hdr *h = &msg->hdr;

	if (len < KM_HDR_LEN)
		return -1;
	km_hdr_decode(buf, h);
	if (h->magic != KM_PROTO_MAGIC || h->proto_ver != KM_PROTO_VERSION ||
		(h->flags & KM_F_REPLY) == 0 || h->status >= KM_ST__MAX)
		return -1;
	if ((size_t)KM_HDR_LEN + h->key_len + h->val_len != len)
		return -1;
	msg->key = buf + KM_HDR_LEN;
	msg->val = msg->key + h->key_len;
	return 0;
}

size_t
km_msg_build(uint8_t *buf, size_t cap, const struct km_hdr *hdr, const void *key, const void *val)
{
	size_t len = (size_t)KM_HDR_LEN + hdr->key_len + hdr->val_len;

	if (len > cap)
		return 0;
	km_hdr_encode(buf, hdr);
	/* memmove: callers may build a reply over the request they are answering. */
	if (hdr->key_len != 0)
		memmove(buf + KM_HDR_LEN, key, hdr->key_len);
	if (hdr->val_len != 0)
		memmove(buf + KM_HDR_LEN + hdr->key_len, val, hdr->val_len);
	return len;
}

int
km_mget_req_begin(struct km_mget_iter *it, const uint8_t *body, size_t len)
{
	const uint8_t *p, *end = body + len;
	unsigned int count, i;

	if (len < 2)
		return -1;
	count = km_get16(body);
	if (count == 0 || count > KM_MGET_MAX)
		return -1;
	p = body + 2;
	for (i = 0; i < count; i++) {
		if (p >= end || p[0] == 0 || p[0] > KM_KEY_MAX || (size_t)(end - p) < 1u + p[0])
			return -1;
		p += 1 + p[0];
	}
	if (p != end)
		return -1;
	it->p = body + 2;
	it->end = end;
	it->left = (uint16_t)count;
	return (int)count;
}

int
km_mget_req_next(struct km_mget_iter *it, const uint8_t **key, uint8_t *len)
{
	if (it->left == 0)
		return 0;
	*len = it->p[0];
	*key = it->p + 1;
	it->p += 1 + it->p[0];
	it->left--;
	return 1;
}

static const char *const op_names[KM_OP__MAX] = {
	[KM_OP_PING] = "PING",
	[KM_OP_GET] = "GET",
	[KM_OP_MGET] = "MGET",
	[KM_OP_PUT] = "PUT",
	[KM_OP_CAS] = "CAS",
	[KM_OP_DEL] = "DEL",
	[KM_OP_SCAN] = "SCAN",
	[KM_OP_MAP] = "MAP",
	[KM_OP_HELLO] = "HELLO",
};

static const char *const status_names[KM_ST__MAX] = {
	[KM_ST_OK] = "OK",
	[KM_ST_NOT_FOUND] = "NOT_FOUND",
	[KM_ST_MOVED] = "MOVED",
	[KM_ST_BUSY] = "BUSY",
	[KM_ST_TOO_LARGE] = "TOO_LARGE",
	[KM_ST_BAD_REQUEST] = "BAD_REQUEST",
	[KM_ST_VERSION_MISMATCH] = "VERSION_MISMATCH",
	[KM_ST_DENIED] = "DENIED",
	[KM_ST_ERROR] = "ERROR",
	[KM_ST_DAMAGED] = "DAMAGED",
	[KM_ST_FULL] = "FULL",
};

const char *
km_op_name(unsigned int op)
{
	return op < KM_OP__MAX && op_names[op] != NULL ? op_names[op] : "?";
}

const char *
km_status_name(unsigned int status)
{
	return status < KM_ST__MAX ? status_names[status] : "?";
}

int
km_scan_rep_next(const uint8_t **p, const uint8_t *end, struct km_scan_ent *e)
{
	const uint8_t *q = *p;

	if (q == end)
		return 0;
	if (end - q < KM_SCAN_REP_ENTRY_HDR)
		return -1;
	e->status = q[0];
	e->key_len = q[1];
	e->version = km_get64(q + 2);
	e->val_len = km_get16(q + 10);
	if (e->key_len == 0 ||
		(size_t)(end - q) < (size_t)KM_SCAN_REP_ENTRY_HDR + e->key_len + e->val_len)
		return -1;
	e->key = q + KM_SCAN_REP_ENTRY_HDR;
	e->val = e->key + e->key_len;
	*p = e->val + e->val_len;
	return 1;
}
