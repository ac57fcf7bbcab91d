/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_STORE_H
#define KM_STORE_H

/**
 * @file
 * Storage back ends ("keymap information sources") behind one ops table.
 *
 * One store instance holds the entries of one shard. Drivers live under drivers/store/
 * and register themselves at load time (constructor + link_whole).
 *
 * Concurrency: a store instance has a single owner thread (the shard's owner worker);
 * no call is thread-safe against another on the same instance. Different instances are
 * independent. Drivers never print: they return 0 or -errno.
 *
 * Versions: every entry carries a 64-bit version, strictly increasing across all writes
 * of the instance (a deleted then re-created key gets a higher version than before), so
 * CAS never suffers ABA. Versions start above params->version_base.
 */

#include <stddef.h>
#include <stdint.h>

struct km_store;

struct km_store_params {
	const char *name; /* for messages, e.g. "shard-5" */
	uint64_t shard_id;
	uint32_t value_max;    /* largest value accepted (bytes) */
	uint32_t initial_keys; /* sizing hint, 0 = driver default */
	uint64_t version_base; /* versions issued are > version_base */
	int socket_id;         /* NUMA node hint, -1 = any */
};

/** A key with its precomputed 64-bit hash (XXH3-64 of the whole key). */
struct km_key {
	const uint8_t *data;
	uint16_t len;
	uint64_t hash;
};

/** Result of a read: the value stays valid until the next write to the same store. */
struct km_value_ref {
	const uint8_t *data;
	uint32_t len;
	uint64_t version;
};

struct km_store_stats {
	uint64_t keys;
	uint64_t value_bytes;          /* sum of key + value bytes stored */
	uint64_t index_bytes;          /* index structure only */
	uint64_t entry_overhead_bytes; /* per-entry headers and allocator rounding */
	uint64_t version_last;         /* highest version issued or loaded (version_base: none) */
};

/** Version condition for writes. */
#define KM_VERSION_ANY 0 /* write unconditionally */

struct km_store_ops {
	const char *name;
	int (*create)(const struct km_store_params *p, struct km_store **out);
	void (*destroy)(struct km_store *s);
	/** 0 and *out filled, or -ENOENT. */
	int (*get)(struct km_store *s, const struct km_key *k, struct km_value_ref *out);
	/**
	 * Write a value. expect: KM_VERSION_ANY, or the version the entry must have (CAS);
	 * with create_only set, the key must be absent.
	 * @return 0 and *version = new version; -EEXIST (create_only, key present) or
	 *   -ESTALE (version differs) with *version = current version (0 if absent);
	 *   -E2BIG value over value_max; -ENOMEM.
	 */
	int (*put)(struct km_store *s, const struct km_key *k, const void *val, uint32_t len,
		uint64_t expect, int create_only, uint64_t *version);
	/**
	 * Delete. expect as for put. @return 0 and *version = the deleted entry's version;
	 * -ENOENT; -ESTALE with *version = current version.
	 */
	int (*del)(struct km_store *s, const struct km_key *k, uint64_t expect, uint64_t *version);
	/**
	 * Call fn for each entry until it returns non-zero (that value is returned).
	 * The store must not be modified from fn.
	 */
	int (*walk)(struct km_store *s,
		int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v),
		void *arg);
	void (*stats)(const struct km_store *s, struct km_store_stats *st);
	/**
	 * Optional (NULL: the driver has nothing worth prefetching). Start loading what a
	 * get/put/del of k will read, one step at a time, so that a caller with a burst of
	 * requests overlaps their cache misses instead of taking them one after the other
	 * (MICA's staged prefetch). KM_STORE_PREFETCH_INDEX uses k->hash only and reads
	 * nothing of the index; KM_STORE_PREFETCH_ENTRY reads the index lines the first step
	 * asked for and prefetches the entry they point to, so call it for a key some time
	 * after its first step (after the other keys of the burst got theirs).
	 * Never modifies the store and never fails: a prefetch only costs time, and results
	 * never depend on it.
	 */
	void (*prefetch)(struct km_store *s, const struct km_key *k, unsigned int step);
	/**
	 * Insert or replace an entry keeping the given version: a shard handed from one store
	 * to another (split, merge), or an entry replayed from a log. Versions the instance
	 * issues afterwards are above every version loaded, so CAS and ordering hold across
	 * the handover.
	 * @return 0; -EINVAL (version 0 or key length 0); -E2BIG value over value_max; -ENOMEM.
	 */
	int (*load)(struct km_store *s, const struct km_key *k, const void *val, uint32_t len,
		uint64_t version);
};

/* Steps of km_store_ops.prefetch. */
#define KM_STORE_PREFETCH_INDEX 0 /* the index slots of the key's hash */
#define KM_STORE_PREFETCH_ENTRY 1 /* the entry those slots point to */

/** Common header of every store instance (drivers embed it first). */
struct km_store {
	const struct km_store_ops *ops;
};

/**
 * Register a driver. Called from driver constructors (KM_STORE_REGISTER).
 * @note Context: process start, single-threaded.
 */
void km_store_register(const struct km_store_ops *ops);

/** Driver by name, or NULL. */
const struct km_store_ops *km_store_driver(const char *name);

/** Create an instance of the named driver. @return 0, -ENOENT (no driver), or driver's. */
int km_store_create(const char *driver, const struct km_store_params *p, struct km_store **out);

#define KM_STORE_REGISTER(ops_var)                                                 \
	__attribute__((constructor)) static void km_store_register_##ops_var(void) \
	{                                                                          \
		km_store_register(&(ops_var));                                     \
	}

/* Thin inline wrappers so call sites read as calls on the store. */
static inline void
km_store_destroy(struct km_store *s)
{
	if (s != NULL)
		s->ops->destroy(s);
}

static inline int
km_store_get(struct km_store *s, const struct km_key *k, struct km_value_ref *out)
{
	return s->ops->get(s, k, out);
}

static inline int
km_store_put(struct km_store *s, const struct km_key *k, const void *val, uint32_t len,
	uint64_t expect, int create_only, uint64_t *version)
{
	return s->ops->put(s, k, val, len, expect, create_only, version);
}

static inline int
km_store_del(struct km_store *s, const struct km_key *k, uint64_t expect, uint64_t *version)
{
	return s->ops->del(s, k, expect, version);
}

/** Prefetch step for k (see km_store_ops.prefetch); nothing for drivers without it. */
static inline void
km_store_prefetch(struct km_store *s, const struct km_key *k, unsigned int step)
{
	if (s->ops->prefetch != NULL)
		s->ops->prefetch(s, k, step);
}

static inline int
km_store_load(
	struct km_store *s, const struct km_key *k, const void *val, uint32_t len, uint64_t version)
{
	return s->ops->load(s, k, val, len, version);
}

/**
 * Walk every entry (see km_store_ops.walk). The store must not be modified from fn.
 * @return 0, or the first non-zero value fn returned.
 */
static inline int
km_store_walk(struct km_store *s,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	return s->ops->walk(s, fn, arg);
}

static inline void
km_store_stats(const struct km_store *s, struct km_store_stats *st)
{
	s->ops->stats(s, st);
}

/** XXH3-64 of a whole key: the hash stores index by. */
uint64_t km_key_hash(const void *key, size_t len);

#endif /* KM_STORE_H */
