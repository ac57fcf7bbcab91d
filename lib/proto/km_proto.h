/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_PROTO_H
#define KM_PROTO_H

/**
 * @file
 * keymap wire protocol, version 1 (docs/protocol.md is the normative description).
 *
 * One request and one reply per UDP datagram (at most KM_MSG_MAX bytes: IPv4 fragments
 * above the MTU). Every message starts with the fixed 40-byte header below, all integers
 * little-endian, followed by the key (key_len bytes) and the value (val_len bytes). MGET
 * and MAP carry a structured body in the value.
 *
 * The library has no DPDK dependency: keymapd and libkeymap both use it. All functions
 * are pure (no global state) and may be called from any thread.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <km_util.h> /* KM_KEY_MAX */

#define KM_PROTO_MAGIC   0x4b /* 'K' */
#define KM_PROTO_VERSION 1
#define KM_HDR_LEN       40
/**
 * Largest request or reply that travels unfragmented at a 1500-byte MTU (minus the IPv4
 * and UDP headers). MGET and MAP replies stay within it.
 */
#define KM_DGRAM_MAX 1472
/**
 * Largest request or reply (UDP payload). One over the path MTU travels as IPv4
 * fragments. Below IPv4's 65,507 so that a whole frame (Ethernet, IPv4 and UDP headers,
 * and a DPDK buffer's headroom) fits one mbuf, whose length is 16 bits.
 */
#define KM_MSG_MAX 65000
/** Largest value in one unfragmented request: a PUT with a 1-byte key fills KM_DGRAM_MAX. */
#define KM_VALUE_MAX (KM_DGRAM_MAX - KM_HDR_LEN - 1)
/** Largest value a request can carry: a PUT with a 1-byte key fills KM_MSG_MAX. */
#define KM_VALUE_MAX_LARGE (KM_MSG_MAX - KM_HDR_LEN - 1)
/** Largest number of keys in one MGET. */
#define KM_MGET_MAX 64

enum km_op {
	KM_OP_PING = 1,
	KM_OP_GET = 2,
	KM_OP_MGET = 3,
	KM_OP_PUT = 4,
	KM_OP_CAS = 5,
	KM_OP_DEL = 6,
	KM_OP_SCAN = 7, /* prefix scan with a cursor (docs/protocol.md 4.3) */
	KM_OP_MAP = 8,
	KM_OP_HELLO = 9, /* address validation: returns a cookie (docs/protocol.md 4.2) */
	KM_OP__MAX
};

enum km_status {
	KM_ST_OK = 0,
	KM_ST_NOT_FOUND = 1,
	KM_ST_MOVED = 2,
	KM_ST_BUSY = 3,
	KM_ST_TOO_LARGE = 4,
	KM_ST_BAD_REQUEST = 5,
	KM_ST_VERSION_MISMATCH = 6,
	KM_ST_DENIED = 7,
	KM_ST_ERROR = 8,   /* server-side failure (out of memory, I/O error) */
	KM_ST_DAMAGED = 9, /* the key's newest record, or its shard, is damaged or missing */
	KM_ST_FULL = 10,   /* the server's memory bound ([store] max_bytes) is reached */
	KM_ST__MAX
};

/** Header flags. */
#define KM_F_REPLY    0x0001 /* set in every reply */
#define KM_F_COOKIE   0x0002 /* request: an 8-byte server cookie follows the value */
#define KM_F_AUTH     0x0004 /* request: a key id and a MAC follow (after the cookie), last */
#define KM_F_CREW     0x0008 /* GET reply: the key has read copies, any worker may serve it */
#define KM_F_TRAILERS (KM_F_COOKIE | KM_F_AUTH)

/*
 * Request trailers, after the value, in this order, each present when its flag is set:
 *   cookie  u64                    KM_F_COOKIE: from HELLO, proves the source address
 *   key id  u32, MAC 16 bytes      KM_F_AUTH: SipHash-2-4-128 keyed with the client key
 *                                  over every byte of the datagram before the MAC
 */
#define KM_COOKIE_LEN  8
#define KM_MAC_LEN     16
#define KM_MAC_KEY_LEN 16
#define KM_AUTH_LEN    (4 + KM_MAC_LEN)
#define KM_TRAILER_MAX (KM_COOKIE_LEN + KM_AUTH_LEN)

/** @return the bytes of the trailers a header's flags announce. @note Context: any thread. */
static inline size_t
km_trailer_len(uint16_t flags)
{
	return ((flags & KM_F_COOKIE) != 0 ? KM_COOKIE_LEN : 0) +
	       ((flags & KM_F_AUTH) != 0 ? KM_AUTH_LEN : 0);
}

/* HELLO: the request's value is KM_HELLO_LEN bytes of padding (zeros), so that the reply,
 * whose value is { u64 cookie; u32 valid_ms; u32 server flags }, is no larger. */
#define KM_HELLO_LEN       16
#define KM_HELLO_F_COOKIES 0x1 /* replies larger than their request need a cookie */
#define KM_HELLO_F_AUTH    0x2 /* every request needs a valid MAC */

/* Why a request was DENIED: the reply's version field. */
enum km_deny {
	KM_DENY_COOKIE = 1, /* the reply would be larger than the request and the request has
			     * no valid cookie for its source: HELLO, then resend */
	KM_DENY_AUTH = 2,   /* no MAC where one is required, unknown key id or wrong MAC */
	KM_DENY_PERM = 3,   /* the key may not do this op or touch this key */
};

/**
 * Fixed header, byte offsets in comments. Little-endian on the wire: on a little-endian
 * machine the packed struct is the wire layout (km_hdr_encode()/km_hdr_decode() copy it
 * whole); elsewhere they convert field by field. Read and write it only through them.
 */
struct km_hdr {
	uint8_t magic;     /*  0: KM_PROTO_MAGIC */
	uint8_t proto_ver; /*  1: KM_PROTO_VERSION */
	uint8_t op;        /*  2: enum km_op */
	uint8_t status;    /*  3: enum km_status; 0 in requests */
	uint16_t flags;    /*  4: KM_F_* */
	uint16_t key_len;  /*  6: 0..KM_KEY_MAX */
	uint32_t val_len;  /*  8: bytes of value or body after the key */
	uint32_t epoch;    /* 12: request: client's map epoch (0 = none); reply: server's */
	uint64_t req_id;   /* 16: chosen by the client, echoed; retries reuse it */
	uint64_t version;  /* 24: CAS/DEL expected version, reply entry version, MAP cursor */
	uint32_t session;  /* 32: client session id (0 = none), for access prediction */
	uint32_t reserved; /* 36: must be 0 */
} __attribute__((packed));

_Static_assert(sizeof(struct km_hdr) == KM_HDR_LEN, "wire header is 40 bytes");
_Static_assert(
	offsetof(struct km_hdr, flags) == 4 && offsetof(struct km_hdr, key_len) == 6 &&
		offsetof(struct km_hdr, val_len) == 8 && offsetof(struct km_hdr, epoch) == 12 &&
		offsetof(struct km_hdr, req_id) == 16 && offsetof(struct km_hdr, version) == 24 &&
		offsetof(struct km_hdr, session) == 32 && offsetof(struct km_hdr, reserved) == 36,
	"the struct is the wire layout (km_hdr_encode())");

/** A request or reply parsed in place: key and val point into the datagram. */
struct km_msg {
	struct km_hdr hdr;
	const uint8_t *key;
	const uint8_t *val;
	uint64_t cookie;    /* hdr.flags & KM_F_COOKIE: the request's cookie */
	uint32_t key_id;    /* hdr.flags & KM_F_AUTH: the client key it names ... */
	const uint8_t *mac; /* ... and its MAC, over the mac - buf bytes before it */
};

/**
 * Parse and validate a request datagram.
 *
 * @return KM_ST_OK and msg filled in; or the status the server answers with
 *   (KM_ST_BAD_REQUEST, KM_ST_TOO_LARGE); or -1 when the datagram must be dropped
 *   silently (too short for a header, wrong magic or version, a reply flag: answering
 *   those could reflect traffic). When a status is returned, msg->hdr holds enough of
 *   the header (op, req_id) to build the error reply.
 * @note Context: any thread.
 */
int km_req_parse(const uint8_t *buf, size_t len, size_t value_max, struct km_msg *msg);

/**
 * MAC of a request: SipHash-2-4 with a 128-bit output (libsodium's
 * crypto_shorthash_siphashx24) keyed with the client key, over len bytes at buf.
 * @note Context: any thread.
 */
void km_mac(
	const uint8_t key[KM_MAC_KEY_LEN], const uint8_t *buf, size_t len, uint8_t mac[KM_MAC_LEN]);

/**
 * Whether the MAC of a request parsed by km_req_parse() (KM_F_AUTH set) is right for key:
 * compared in constant time. buf is the datagram msg was parsed from.
 * @return 1 if it is, 0 if not.
 */
int km_mac_check(const uint8_t key[KM_MAC_KEY_LEN], const uint8_t *buf, const struct km_msg *msg);

/**
 * Append the trailers to the request of len bytes at buf (header, key, value, no
 * trailers): the cookie if has_cookie, then key_id and the MAC if key is not NULL; the
 * header's KM_F_COOKIE and KM_F_AUTH flags are set to match (first cleared).
 * @return the new length, or 0 when it does not fit in cap.
 * @note Context: any thread.
 */
size_t km_req_seal(uint8_t *buf, size_t len, size_t cap, int has_cookie, uint64_t cookie,
	uint32_t key_id, const uint8_t *key);

/**
 * The cookie a server with secret hands to the client at src (its IPv4 address and port,
 * as the server keeps them) for time slot slot: SipHash-2-4 (crypto_shorthash) of
 * { u64 src; u64 slot } little-endian. Only the server computes it; clients treat cookies
 * as opaque.
 */
uint64_t km_cookie(const uint8_t secret[KM_MAC_KEY_LEN], uint64_t src, uint64_t slot);

/**
 * Parse a client key as clients are given it: "ID:HEX", the key id in decimal
 * (1..4294967295) and the 16-byte secret as 32 hex digits (either case), nothing else.
 * @param id, key set only on success.
 * @return 0 or -EINVAL.
 * @note Context: any thread.
 */
int km_key_parse(const char *spec, uint32_t *id, uint8_t key[KM_MAC_KEY_LEN]);

/** A client key's secret from its 2 * KM_MAC_KEY_LEN hex digits. @return 0 or -EINVAL. */
int km_secret_parse(const char *hex, uint8_t key[KM_MAC_KEY_LEN]);

/**
 * Parse a reply datagram; checks magic, version, reply flag and lengths.
 * @return 0 or -1 when malformed.
 */
int km_reply_parse(const uint8_t *buf, size_t len, struct km_msg *msg);

/**
 * Build a message (request or reply) into buf.
 * @return bytes written, or 0 when it does not fit in cap.
 */
size_t km_msg_build(
	uint8_t *buf, size_t cap, const struct km_hdr *hdr, const void *key, const void *val);

/*
 * MGET body (the value of an MGET request):
 *   u16 count; count x { u8 key_len; key bytes }
 * MGET reply body:
 *   u16 count; count x { u8 status; u64 version; u16 val_len; value bytes }
 * Entries that would not fit in the reply datagram get status TOO_LARGE and no value
 * (the client fetches them with GET); entries whose shard the worker does not own
 * get MOVED; entries of a persistent store not in the worker's cache get BUSY, no value,
 * and the worker starts reading them (the client GETs them: the GET waits for that read).
 */
#define KM_MGET_REQ_ENTRY_HDR 1
#define KM_MGET_REP_ENTRY_HDR 11

/*
 * SCAN (docs/protocol.md 4.3). Request: the key field is the prefix (it must end the
 * routing part of the keys it names: one shard holds them), the version field the
 * cursor (0: the start); an optional body of KM_SCAN_REQ_LEN bytes:
 *   u16 max entries (0: as many as fit); u16 flags (KM_SCAN_F_*)
 * Reply (status OK): the version field is the next cursor (0: the scan is complete);
 * the body:
 *   u16 count; count x { u8 status; u8 key_len; u64 version; u16 val_len; key; value }
 * An entry's status is OK (its value, none with KM_SCAN_F_KEYS), TOO_LARGE (its value
 * does not fit in a datagram: no value) or BUSY (its last write is not acknowledged by
 * the replicas yet: no value); the client GETs those two.
 */
#define KM_SCAN_REQ_LEN       4
#define KM_SCAN_F_KEYS        0x0001 /* keys and versions only */
#define KM_SCAN_F_ALL         KM_SCAN_F_KEYS
#define KM_SCAN_REP_ENTRY_HDR 12

/** One entry of a SCAN reply body (pointers into the body). */
struct km_scan_ent {
	uint8_t status;
	uint8_t key_len;
	uint16_t val_len;
	uint64_t version;
	const uint8_t *key;
	const uint8_t *val;
};

/**
 * Next entry of a SCAN reply body: *p starts just after the u16 count and advances.
 * @return 1 with *e filled, 0 when *p == end, -1 when the entry is malformed (runs past
 *   end, key length 0).
 */
int km_scan_rep_next(const uint8_t **p, const uint8_t *end, struct km_scan_ent *e);

/** Iterator over the keys of an MGET request body. */
struct km_mget_iter {
	const uint8_t *p;
	const uint8_t *end;
	uint16_t left;
};

/**
 * Validate an MGET request body and start iterating it.
 * @return number of keys (1..KM_MGET_MAX) or -1 when malformed.
 */
int km_mget_req_begin(struct km_mget_iter *it, const uint8_t *body, size_t len);
/** Next key of a validated MGET body; returns 0 when done, 1 with key/len set. */
int km_mget_req_next(struct km_mget_iter *it, const uint8_t **key, uint8_t *len);

/* Little-endian helpers shared by every encoder/decoder in the project. */
static inline void
km_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void
km_put32(uint8_t *p, uint32_t v)
{
	km_put16(p, (uint16_t)v);
	km_put16(p + 2, (uint16_t)(v >> 16));
}

static inline void
km_put64(uint8_t *p, uint64_t v)
{
	km_put32(p, (uint32_t)v);
	km_put32(p + 4, (uint32_t)(v >> 32));
}

static inline uint16_t
km_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t
km_get32(const uint8_t *p)
{
	return (uint32_t)km_get16(p) | ((uint32_t)km_get16(p + 2) << 16);
}

static inline uint64_t
km_get64(const uint8_t *p)
{
	return (uint64_t)km_get32(p) | ((uint64_t)km_get32(p + 4) << 32);
}

/**
 * Write hdr at buf (KM_HDR_LEN bytes, any alignment) in wire byte order: on a
 * little-endian machine the packed struct is the wire layout, one copy (every request and
 * reply goes through here and km_hdr_decode()).
 * @note Context: any thread.
 */
static inline void
km_hdr_encode(uint8_t *buf, const struct km_hdr *h)
{
#if defined(__BYTE_ORDER) && __BYTE_ORDER == __LITTLE_ENDIAN /* <endian.h> (km_util.h) */
	memcpy(buf, h, KM_HDR_LEN);
#else
	buf[0] = h->magic;
	buf[1] = h->proto_ver;
	buf[2] = h->op;
	buf[3] = h->status;
	km_put16(buf + 4, h->flags);
	km_put16(buf + 6, h->key_len);
	km_put32(buf + 8, h->val_len);
	km_put32(buf + 12, h->epoch);
	km_put64(buf + 16, h->req_id);
	km_put64(buf + 24, h->version);
	km_put32(buf + 32, h->session);
	km_put32(buf + 36, h->reserved);
#endif
}

/**
 * Read the header at buf (KM_HDR_LEN bytes, any alignment) without validating it.
 * @note Context: any thread.
 */
static inline void
km_hdr_decode(const uint8_t *buf, struct km_hdr *h)
{
#if defined(__BYTE_ORDER) && __BYTE_ORDER == __LITTLE_ENDIAN /* <endian.h> (km_util.h) */
	memcpy(h, buf, KM_HDR_LEN);
#else
	h->magic = buf[0];
	h->proto_ver = buf[1];
	h->op = buf[2];
	h->status = buf[3];
	h->flags = km_get16(buf + 4);
	h->key_len = km_get16(buf + 6);
	h->val_len = km_get32(buf + 8);
	h->epoch = km_get32(buf + 12);
	h->req_id = km_get64(buf + 16);
	h->version = km_get64(buf + 24);
	h->session = km_get32(buf + 32);
	h->reserved = km_get32(buf + 36);
#endif
}

/** Name of an op or status for logs and CLIs ("GET", "NOT_FOUND"); "?" if unknown. */
const char *km_op_name(unsigned int op);
const char *km_status_name(unsigned int status);

#endif /* KM_PROTO_H */
