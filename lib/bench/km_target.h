/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_TARGET_H
#define KM_TARGET_H

/**
 * @file
 * Request and reply datagrams of the servers keymap-bench measures, as UDP payloads:
 *
 * - KM_TGT_KEYMAP: keymap protocol v1 (km_proto.h). GET/PUT with req_id, epoch 0
 *   (unsteered), session from the caller.
 * - KM_TGT_ECHO: the same request datagrams, sent to keymapd in echo mode, which returns
 *   each datagram unchanged (no reply flag, status 0). A returned datagram counts as a
 *   hit (GET) or stored (PUT).
 * - KM_TGT_MEMCACHED: memcached's UDP frame header (8 bytes, big endian: request id,
 *   sequence number 0, total datagrams 1, reserved 0) followed by a binary-protocol GET
 *   (opcode 0x00) or SET (0x01, extras: flags 0, expiration 0) with the bench's request
 *   id in `opaque`. Replies: the frame header then a binary response (magic 0x81);
 *   status 0 -> hit/stored, 1 (key not found) -> miss, others -> error. Replies of more
 *   than one datagram are errors (values here are small).
 *
 * Request ids: 64 bits; keymap carries all of them, memcached the low 32 in opaque and
 * the low 16 in the frame header (the parser checks that both agree), so a memcached
 * reply's req_id has only its low 32 bits.
 *
 * keymap requests may end with trailers (docs/protocol.md): the cookie a HELLO returned,
 * for a server that requires one, and a MAC with a client key. km_tgt_seal() appends
 * them, pre-encoded by km_tgt_seal_init(), to a request km_tgt_build() made.
 * All functions are pure and thread-safe.
 */

#include <stddef.h>
#include <stdint.h>

#include <km_proto.h>

enum km_tgt_kind {
	KM_TGT_KEYMAP,
	KM_TGT_ECHO,
	KM_TGT_MEMCACHED,
};

/** What a reply says about its request. */
enum km_tgt_result {
	KM_TGT_R_HIT,    /* GET found the key */
	KM_TGT_R_MISS,   /* GET: no such key */
	KM_TGT_R_STORED, /* PUT done */
	KM_TGT_R_ERROR,  /* any other status (status field has the server's code) */
};

struct km_tgt_reply {
	uint64_t req_id;  /* memcached: only the low 32 bits travel */
	uint8_t result;   /* enum km_tgt_result */
	uint8_t deny;     /* keymap DENIED: why (enum km_deny), else 0 */
	uint16_t status;  /* the server's own status code (keymap: enum km_status) */
	uint32_t val_len; /* GET hit: bytes of value; echo: of the request's value */
	uint8_t op;       /* the operation it answers (enum km_wl_opcode) */
	uint16_t key_len; /* echo: the request's key (key_len bytes at key), else 0 */
	const uint8_t *key;
	const uint8_t *val; /* val_len bytes (in the datagram parsed) */
};

/**
 * Build the request datagram for op (KM_WL_GET or KM_WL_PUT from km_workload.h, or a
 * trace's KM_WL_DEL: keymap DEL with expected version 0, memcached DELETE).
 * A PUT's value is vlen bytes of val (val may be NULL: vlen bytes of a fixed pattern).
 * @return payload length, or 0 when it does not fit in cap or the target's limits
 *   (keymap: key 1..250 bytes, value <= KM_VALUE_MAX, whole datagram <= 1472 bytes;
 *   memcached: key 1..250 bytes, whole datagram <= 1472 bytes, value <= 1364 bytes so
 *   that the GET reply fits memcached's 1400-byte UDP payload).
 * @note Context: any thread (pure: writes only buf).
 */
size_t km_tgt_build(enum km_tgt_kind kind, uint8_t op, uint64_t req_id, uint32_t session,
	const void *key, size_t klen, const void *val, size_t vlen, uint8_t *buf, size_t cap);

/**
 * A request pre-encoded for one (target, op, key length, value length): its bytes with the
 * value pattern, the key, the request id and the session left to write. A request costs a copy
 * and two small writes instead of an encoding (and the value pattern).
 */
struct km_tgt_tmpl {
	uint8_t *frame;   /* the request, key and request id zero */
	uint16_t len;     /* its length */
	uint16_t key_off; /* where the key goes */
	uint16_t klen;
	uint8_t kind; /* enum km_tgt_kind */
	uint8_t op;
	uint32_t vlen;
};

/**
 * Pre-encode t as km_tgt_build(kind, op, 0, 0, key, klen, NULL, vlen, ...) would.
 * @return 0, -EINVAL when the request is outside the target's limits (as km_tgt_build()
 *   returning 0 for a large enough buf), -ENOMEM.
 * @note Context: any thread; t is the caller's (release with km_tgt_tmpl_fini()).
 */
int km_tgt_tmpl_init(
	struct km_tgt_tmpl *t, enum km_tgt_kind kind, uint8_t op, size_t klen, size_t vlen);

/** Release t's frame (t may be zeroed or already released). */
void km_tgt_tmpl_fini(struct km_tgt_tmpl *t);

/**
 * Write t's request with key (t->klen bytes), req_id and session (keymap; memcached has
 * none) into buf: the same bytes as km_tgt_build() with t's parameters.
 * @return its length, or 0 when cap is too small.
 * @note Context: any thread (writes only buf).
 */
size_t km_tgt_tmpl_build(const struct km_tgt_tmpl *t, uint64_t req_id, uint32_t session,
	const void *key, uint8_t *buf, size_t cap);

/**
 * Read a reply datagram. The wire tells which operation it answers (keymap: the reply's
 * op; memcached: the response opcode; echo: the request's op), so an OK reply is
 * KM_TGT_R_HIT for a GET and KM_TGT_R_STORED for a PUT or DEL.
 * @return 0, or -1 when buf is not a reply of this target (wrong magic, truncated,
 *   inconsistent lengths, keymap reply flag missing): the caller counts it as stray.
 * @note Context: any thread (pure: writes only out).
 */
int km_tgt_parse(enum km_tgt_kind kind, const uint8_t *buf, size_t len, struct km_tgt_reply *out);

/**
 * Whether reply r (km_tgt_parse()) answers the request of op with key (klen bytes) and a
 * vlen-byte pattern value (PUT) as it should: the same op; echo: the request's own key and
 * value; a GET hit: a value of the pattern km_tgt_build() writes (the bench writes no
 * other), vlen bytes of it when vlen is not 0.
 * @return 0, or -1 when it does not.
 * @note Context: any thread (pure).
 */
int km_tgt_check(enum km_tgt_kind kind, const struct km_tgt_reply *r, uint8_t op, const void *key,
	size_t klen, size_t vlen);

/**
 * Largest value a PUT can carry for a key of klen bytes and a GET can read back in one
 * datagram (0 if klen is invalid). Trailers are not counted: with a client key a keymap
 * value must leave KM_AUTH_LEN more bytes (the MAC shares the datagram); a cookie needs
 * no room (a write that leaves none goes without: its reply is no larger than the
 * request).
 * @note Context: any thread (pure).
 */
size_t km_tgt_value_max(enum km_tgt_kind kind, size_t klen);

/** The trailers of a run's keymap requests, encoded once. */
struct km_tgt_seal {
	uint16_t flags;                  /* KM_F_COOKIE, KM_F_AUTH: 0 = nothing to add */
	uint8_t has_key;                 /* a MAC is computed per request */
	uint8_t tail_len;                /* bytes of tail */
	uint8_t tail[KM_COOKIE_LEN + 4]; /* the cookie, then the key id, wire order */
	uint8_t key[KM_MAC_KEY_LEN];     /* the client key's secret */
};

/**
 * Encode the trailers: the cookie if has_cookie, the key id and a MAC if key is not NULL.
 * @note Context: any thread (pure: writes only s).
 */
void km_tgt_seal_init(struct km_tgt_seal *s, int has_cookie, uint64_t cookie, uint32_t key_id,
	const uint8_t *key);

/**
 * Append s's trailers to the keymap request of len bytes at buf and set its flags: the
 * cookie when it fits in the datagram (KM_DGRAM_MAX) with the MAC, the key id and MAC
 * always. Costs a copy of up to 12 bytes, plus a SipHash of the datagram with a key.
 * @return the new length (len when s adds nothing), or 0 when the MAC does not fit in
 *   cap or KM_DGRAM_MAX.
 * @note Context: any thread (pure: writes only buf).
 */
size_t km_tgt_seal(const struct km_tgt_seal *s, uint8_t *buf, size_t len, size_t cap);

/** What a keymap server answered to HELLO. */
struct km_tgt_hello {
	uint8_t status;    /* enum km_status: OK, BAD_REQUEST (a server without HELLO), ... */
	uint8_t deny;      /* status DENIED: why (enum km_deny) */
	uint64_t cookie;   /* status OK: the cookie ... */
	uint32_t valid_ms; /* ... good at least this long after the HELLO ... */
	uint32_t flags;    /* ... and KM_HELLO_F_* (what the server requires) */
};

/**
 * Build a keymap HELLO request (no trailers: km_tgt_seal() adds the MAC, with a seal
 * without cookie).
 * @return its length, or 0 when cap is too small.
 * @note Context: any thread (pure: writes only buf).
 */
size_t km_tgt_hello_build(uint64_t req_id, uint8_t *buf, size_t cap);

/**
 * Read the reply to the HELLO of req_id.
 * @return 0 with out filled in, or -1 when buf is not that reply (another datagram,
 *   malformed, an OK without the 16-byte value).
 * @note Context: any thread (pure: writes only out).
 */
int km_tgt_hello_parse(const uint8_t *buf, size_t len, uint64_t req_id, struct km_tgt_hello *out);

/**
 * "keymap", "echo", "memcached" -> enum. @return 0 or -EINVAL.
 * @note Context: any thread (pure).
 */
int km_tgt_parse_name(const char *name, enum km_tgt_kind *out);

/** enum -> "keymap", "echo", "memcached" (a static string). @note Context: any thread. */
const char *km_tgt_name(enum km_tgt_kind kind);

#endif /* KM_TARGET_H */
