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
 * All functions are pure and thread-safe.
 */

#include <stddef.h>
#include <stdint.h>

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
	uint16_t status;  /* the server's own status code (keymap: enum km_status) */
	uint32_t val_len; /* GET hit: bytes of value */
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
 * Read a reply datagram. The wire tells which operation it answers (keymap: the reply's
 * op; memcached: the response opcode; echo: the request's op), so an OK reply is
 * KM_TGT_R_HIT for a GET and KM_TGT_R_STORED for a PUT or DEL.
 * @return 0, or -1 when buf is not a reply of this target (wrong magic, truncated,
 *   inconsistent lengths, keymap reply flag missing): the caller counts it as stray.
 * @note Context: any thread (pure: writes only out).
 */
int km_tgt_parse(enum km_tgt_kind kind, const uint8_t *buf, size_t len, struct km_tgt_reply *out);

/**
 * Largest value a PUT can carry for a key of klen bytes and a GET can read back in one
 * datagram (0 if klen is invalid).
 * @note Context: any thread (pure).
 */
size_t km_tgt_value_max(enum km_tgt_kind kind, size_t klen);

/**
 * "keymap", "echo", "memcached" -> enum. @return 0 or -EINVAL.
 * @note Context: any thread (pure).
 */
int km_tgt_parse_name(const char *name, enum km_tgt_kind *out);

/** enum -> "keymap", "echo", "memcached" (a static string). @note Context: any thread. */
const char *km_tgt_name(enum km_tgt_kind kind);

#endif /* KM_TARGET_H */
