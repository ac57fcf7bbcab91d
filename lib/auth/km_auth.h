/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_AUTH_H
#define KM_AUTH_H

/**
 * @file
 * Client keys: who may send requests, and what each key may do.
 *
 * A key has an id (1..2^32-1, carried in every authenticated request), a 16-byte secret
 * (the MAC key, km_mac()), a permission (read-only or read-write) and up to
 * KM_AUTH_PREFIX_MAX key prefixes it is limited to (none: every key).
 *
 * The keys file has one key per line: `ID SECRET ro|rw [PREFIX ...]`, SECRET as 32 hex
 * digits, PREFIX the first bytes of the keys allowed (no blanks, not starting with `#`);
 * a `#` at the start of a word starts a comment.
 * It must not be readable by group or others.
 *
 * Concurrency: as struct km_allow: a table is built whole by one thread, published by
 * pointer (keymapd: rcu_assign_pointer by the control lcore), then only read; replacing
 * it means publishing a new one and freeing the old one after a grace period.
 */

#include <stddef.h>
#include <stdint.h>

#include <km_proto.h>

#define KM_AUTH_KEYS_MAX   1024 /* keys in one table */
#define KM_AUTH_PREFIX_MAX 16   /* prefixes of one key */

struct km_auth_key {
	uint32_t id;
	uint8_t secret[KM_MAC_KEY_LEN];
	uint8_t write;     /* 1: read-write; 0: read-only (GET, MGET, MAP, PING, HELLO) */
	uint8_t nb_prefix; /* 0: every key */
	uint16_t prefix_len[KM_AUTH_PREFIX_MAX];
	char *prefix[KM_AUTH_PREFIX_MAX];
};

/* All fields: written by the builder before publication, read-only after. */
struct km_auth {
	uint8_t required; /* every request needs a valid MAC ([auth] required) */
	uint32_t nb;      /* keys, sorted by id */
	struct km_auth_key *keys;
};

/**
 * Read a keys file into a new table (required = 0).
 * @param err on failure, "file:line: reason" or the system error.
 * @return 0, -EINVAL (a bad line, a duplicate id, too many keys), -EPERM (readable by
 *   group or others), -errno of open/read, or -ENOMEM.
 * @note Context: any thread (allocates, reads a file).
 */
int km_auth_load(const char *path, struct km_auth **out, char *err, size_t errlen);

/**
 * Parse one line of a keys file into k (its prefixes allocated). Blank lines and comments
 * leave k untouched and return 1.
 * @return 0 (a key), 1 (nothing), or -EINVAL with the reason in err.
 */
int km_auth_parse_line(const char *line, struct km_auth_key *k, char *err, size_t errlen);

/**
 * A new table holding a's keys and k, or a's keys without remove_id (k NULL), or a copy of a
 * (k NULL, remove_id 0), with a's required flag: for key rotation.
 * @return 0, -EEXIST (k's id is taken), -ENOENT (no key id to remove), -ENOSPC, -ENOMEM.
 */
int km_auth_with(const struct km_auth *a, const struct km_auth_key *k, uint32_t remove_id,
	struct km_auth **out);

/**
 * Write a's keys to path in the keys-file format: a new temporary file PATH.tmp (mode
 * 0600; a stale one or a symbolic link of that name is removed first) written,
 * fsync'ed, renamed over path, and the directory fsync'ed.
 * @return 0; 1 when only the directory's fsync failed (path holds the keys; err says
 *   so); or -errno, path untouched, the reason (naming the file) in err.
 */
int km_auth_save(const struct km_auth *a, const char *path, char *err, size_t errlen);

/** One key as a keys-file line (no newline) into buf. @return its length (snprintf). */
int km_auth_format(const struct km_auth_key *k, char *buf, size_t len);

/** Free a table (NULL is fine; secrets wiped), after a grace period when it was
 * published. */
void km_auth_free(struct km_auth *a);

/**
 * The key of id, or NULL.
 * @note Context: any thread (the data path), a read-only.
 */
const struct km_auth_key *km_auth_find(const struct km_auth *a, uint32_t id);

/**
 * Whether k may send op (write ops need a read-write key) for the key of klen bytes at key
 * (a prefix must match; klen 0: an op without a key).
 */
static inline int
km_auth_allows(const struct km_auth_key *k, uint8_t op, const uint8_t *key, size_t klen)
{
	unsigned int i;

	if (!k->write && (op == KM_OP_PUT || op == KM_OP_CAS || op == KM_OP_DEL))
		return 0;
	if (k->nb_prefix == 0 || klen == 0)
		return 1;
	for (i = 0; i < k->nb_prefix; i++)
		if (k->prefix_len[i] <= klen &&
			__builtin_memcmp(key, k->prefix[i], k->prefix_len[i]) == 0)
			return 1;
	return 0;
}

#endif /* KM_AUTH_H */
