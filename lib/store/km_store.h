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

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <km_io.h>

struct km_store;

/* Whether the mem driver may put its slabs on 2 MiB pages ([store] hugepages). */
enum km_hugepages {
	KM_HUGEPAGES_AUTO = 0,    /* 2 MiB aligned slabs advised for transparent huge pages */
	KM_HUGEPAGES_OFF = 1,     /* slabs of at most 1 MiB, advised against THP */
	KM_HUGEPAGES_HUGETLB = 2, /* hugetlb pool pages while it has free ones, else as auto */
};

/* Durability of the persistent drivers (the volatile mem driver ignores it). */
enum km_durability {
	KM_DUR_NONE = 0,  /* records written each loop iteration, never fdatasync'ed */
	KM_DUR_ASYNC = 1, /* ack at once, durable within sync_interval_ms (BUSY beyond) */
	KM_DUR_SYNC = 2,  /* a write is acknowledged after its record and an fdatasync */
};

/* Tiers of a persistent store. */
enum km_tier {
	KM_TIER_HOT = 0,  /* an append-only log, values read from it */
	KM_TIER_COLD = 1, /* a compressed segment plus a log of the writes since */
};

/* How km_store_create() treats the shard's files. */
enum km_store_mode {
	KM_STORE_OPEN = 0,  /* open the shard's files and replay them (created if absent) */
	KM_STORE_STAGE = 1, /* new files beside the shard's, put in their place at commit */
	/* Quarantined: the shard's files are missing, unreadable or damaged (params.quarantine
	 * says why). No file is touched, not even at unlink; every get, read, put, del, load
	 * and walk fails with -EBADMSG, stats count it in quarantined. */
	KM_STORE_QUARANTINE = 2,
};

struct km_store_params {
	const char *name; /* for messages, e.g. "shard-5" */
	uint64_t shard_id;
	uint32_t value_max;    /* largest value accepted (bytes) */
	uint32_t initial_keys; /* sizing hint, 0 = driver default */
	uint64_t version_base; /* versions issued are > version_base */
	int socket_id;         /* NUMA node hint, -1 = any */
	uint8_t hugepages;     /* mem driver: enum km_hugepages */
	/* Persistent drivers: */
	const char *dir;           /* data directory (logs) */
	const char *cold_dir;      /* cold segments */
	uint8_t durability;        /* enum km_durability */
	uint8_t tier;              /* enum km_tier: layout of a staged store */
	uint8_t mode;              /* enum km_store_mode */
	uint8_t route_sep;         /* routing of the map the files were written under: */
	uint8_t route_depth;       /*   refused at open when they differ */
	uint32_t sync_interval_ms; /* KM_DUR_ASYNC bound (0 = 10 ms) */
	uint32_t write_buffer;     /* bytes of records waiting for the disk before writes get
				    * -EBUSY (0 = 4 MiB) */
	int quarantine;            /* KM_STORE_QUARANTINE: the errno that put it there */
};

/** Where a resumable walk (km_store_ops.walk_step) stands: zero it to start. */
struct km_walk_pos {
	uint64_t pos;  /* the driver's: a slot, or a file offset + 1 */
	uint64_t end;  /* the driver's: where the walk stops */
	uint32_t part; /* the driver's: which part of the store */
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

/*
 * Figures of a store, declared once: X(name, kind, merge, help).
 * kind: KM_STAT_GAUGE (a level: may fall) or KM_STAT_COUNTER (only grows while the store
 * lives); merge: how km_store_stats_add() combines two stores (KM_STAT_SUM or KM_STAT_MAX).
 * The figures from tier on are the persistent drivers' (0 for the others).
 */
#define KM_STORE_STATS(X)                                                                          \
	X(keys, GAUGE, SUM, "keys stored")                                                         \
	X(value_bytes, GAUGE, SUM, "sum of key + value bytes stored")                              \
	X(entry_overhead_bytes, GAUGE, SUM, "per-entry headers and allocator rounding")            \
	X(hugepage_bytes, GAUGE, SUM, "mem: slab bytes on hugetlb pages or advised for THP")       \
	X(version_last, GAUGE, MAX, "highest version issued or loaded (version_base: none)")       \
	X(tier, GAUGE, SUM, "enum km_tier; summed over shards: the shards in the cold tier")       \
	X(index_bytes, GAUGE, SUM, "DRAM index bytes")                                             \
	X(file_bytes, GAUGE, SUM, "bytes of logs and segments")                                    \
	X(dead_bytes, GAUGE, SUM, "log bytes a compaction would reclaim")                          \
	X(replayed, GAUGE, SUM, "records read back at open")                                       \
	X(skipped_crc, GAUGE, SUM, "damaged records skipped at start-up")                          \
	X(damaged_keys, GAUGE, SUM, "keys whose newest record is damaged: answered DAMAGED")       \
	X(quarantined, GAUGE, SUM, "shards quarantined: files missing, unreadable or damaged")     \
	X(torn_bytes, GAUGE, SUM, "bytes of an incomplete tail dropped at open")                   \
	X(disk_reads, COUNTER, SUM, "values read from disk")                                       \
	X(disk_read_errors, COUNTER, SUM, "disk reads that failed (I/O error, CRC, key mismatch)") \
	X(write_batches, COUNTER, SUM, "group writes")                                             \
	X(fsyncs, COUNTER, SUM, "fdatasyncs completed")                                            \
	X(write_errors, COUNTER, SUM, "group writes or fdatasyncs that failed")                    \
	X(writes_lost, COUNTER, SUM, "records acknowledged before a failed write (none, async)")   \
	X(write_busy, COUNTER, SUM, "writes answered BUSY: write buffer full, or the async bound") \
	X(durable_lag_max_us, GAUGE, MAX, "longest wait of a group to be durable since start (us)")

enum km_stat_kind { KM_STAT_COUNTER, KM_STAT_GAUGE };
enum km_stat_merge { KM_STAT_SUM, KM_STAT_MAX };

struct km_store_stats {
#define KM_X(name, kind, merge, help) uint64_t name;
	KM_STORE_STATS(KM_X)
#undef KM_X
};

/**
 * Add the figures of one store to a sum of several (each by its merge rule: summed, or the
 * maximum for version_last). sum starts zeroed.
 * @note Context: any thread; the caller owns both structs.
 */
void km_store_stats_add(struct km_store_stats *sum, const struct km_store_stats *one);

/**
 * An asynchronous read of one value (persistent drivers). The caller owns the struct
 * and sets op.done; the driver owns the other fields and the buffers until
 * km_store_read_free().
 */
struct km_read {
	struct km_io_op op; /* the caller's completion */
	uint8_t *buf;       /* driver: bytes read */
	uint8_t *ubuf;      /* driver: inflated block (cold tier) */
	uint64_t loc;       /* driver: where the record was */
	uint64_t version;   /* driver: the version the index had at submission */
	uint32_t len;       /* driver: bytes asked */
};

/**
 * Told by a persistent store bound to a thread (km_store_ops.bind) when records reach
 * the disk: every record numbered up to seq is durable as the store's durability mode
 * defines it. err < 0: the write failed; every record numbered after seq was rolled back
 * (undone in the index) and its write must be answered with an error.
 */
typedef void (*km_store_durable_fn)(void *arg, uint64_t shard_id, uint64_t seq, int err);

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
	 * nothing of the index; KM_STORE_PREFETCH_ENTRY reads the index, starting with the
	 * lines the first step asked for, and prefetches the entry it finds, so call it for a
	 * key some time after its first step (after the other keys of the burst got theirs).
	 * Never modifies the store and never fails: a prefetch only costs time, and results
	 * never depend on it (nor on its hint, used as get_hint() says).
	 * @return for KM_STORE_PREFETCH_ENTRY, what the step found for get_hint() of k in
	 * this store (0: nothing); 0 for KM_STORE_PREFETCH_INDEX.
	 */
	uint64_t (*prefetch)(struct km_store *s, const struct km_key *k, unsigned int step);
	/**
	 * Optional (NULL: get() is used). get() of k with hint, what an ENTRY prefetch of k
	 * in this store returned: the lookup the prefetch already did is not done again. A
	 * hint is checked against the store before it is trusted, so the result is get()'s
	 * whatever the writes and growth since: a stale hint costs the lookup it would have
	 * saved. Hints are for the operations that follow the prefetch (mem: an absent hint
	 * is trusted while fewer than 2^31 keys were inserted since); a hint of another key
	 * or of another store is the caller's to keep out.
	 */
	int (*get_hint)(struct km_store *s, const struct km_key *k, uint64_t hint,
		struct km_value_ref *out);
	/**
	 * Insert or replace an entry keeping the given version: a shard handed from one store
	 * to another (split, merge), or an entry replayed from a log. Versions the instance
	 * issues afterwards are above every version loaded, so CAS and ordering hold across
	 * the handover.
	 * @return 0; -EINVAL (version 0 or key length 0); -E2BIG value over value_max; -ENOMEM.
	 */
	int (*load)(struct km_store *s, const struct km_key *k, const void *val, uint32_t len,
		uint64_t version);
	/**
	 * Optional. A resumable walk, for copies made a little at a time while the store
	 * keeps serving: call fn for the entries from *pos on (zeroed: the start), about
	 * `budget` entries or slots per call, and advance *pos. Between calls the store may
	 * be written: an entry written or deleted meanwhile may be visited or not, an entry
	 * may be visited more than once (the mem driver's walk starts over when its table
	 * grows), and entries appended after the first call are never visited. But every
	 * entry that is in the store from the first call to the last and is not written
	 * meanwhile is visited at least once, however other keys are written or deleted
	 * (the mem driver ends each call just after an empty slot for this) - unless fn
	 * stopped a call: *pos is then just after the entry fn stopped at, and a caller that
	 * needs the promise walks again from the position it had before that call. lib/proc's
	 * partition shifter relies on it; a caller that must copy everything repeats every
	 * write it makes meanwhile in its copy and compares counts at the end (lib/proc's
	 * incremental split/merge). fn must not modify the store.
	 * @return 1: more to walk; 0: the end was reached; -errno, or fn's non-zero value.
	 */
	int (*walk_step)(struct km_store *s, struct km_walk_pos *pos, uint32_t budget,
		int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v),
		void *arg);
	/**
	 * Optional. One page of a prefix scan (the SCAN op): call fn, in increasing
	 * km_scan_order() of their key hashes, for the entries whose key begins with the plen
	 * bytes at prefix and whose order is at least *cursor (0: the start), examining about
	 * `budget` index slots (a driver may examine fewer), until fn returns non-zero.
	 * *cursor is then where the next page starts: the order of the entry fn stopped at
	 * (not consumed), else past every order the page covered; 0 when the rest of the
	 * order space was covered (the scan is complete). Pages cover disjoint ranges of
	 * orders, each page sees the store as it is when it runs, and an entry's order never
	 * changes, whatever is written or how the table grows: so over a whole scan every
	 * entry is visited at most once, and an entry present from the first page to the last
	 * exactly once (two keys with the same 64-bit hash aside: one of them may come twice).
	 * fn must not modify the store; k and v are valid during the call only.
	 * @return 0; -errno (-EBADMSG: quarantined; -EIO: a read failed); or fn's negative
	 *   value (*cursor then where fn stopped).
	 */
	int (*scan)(struct km_store *s, const uint8_t *prefix, uint16_t plen, uint64_t *cursor,
		uint32_t budget,
		int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v),
		void *arg);
	/**
	 * Optional. Destroy a store nobody uses any more a little at a time (about `budget`
	 * entries per call), so that freeing a large one does not hold its thread: after a
	 * call returns 1 only further destroy_step calls are allowed; 0: it is gone.
	 */
	int (*destroy_step)(struct km_store *s, uint32_t budget);
	/**
	 * Optional. Versions issued from now on are above v (entries moved in from another
	 * store that issued versions up to v: a key deleted there and created here again
	 * must not get a version it had before). Never lowers anything.
	 */
	void (*version_floor)(struct km_store *s, uint64_t v);
	/**
	 * DRAM the instance's entries use (mem: slots, records and the class states; the
	 * free objects of its slabs are not counted: records of their class take them, and
	 * its compaction keeps them below half the live bytes + 64 KiB; log: the index; the
	 * value cache is apart). For a memory bound: a delete makes room. Optional. O(1).
	 */
	uint64_t (*dram_bytes)(const struct km_store *s);

	/*
	 * Persistent drivers only (NULL for mem): values on disk, reads and writes through
	 * the io_uring of the thread that owns the store.
	 */

	/**
	 * Bind the store to its owner's io context (io NULL: unbind; the store then reads
	 * and writes with blocking calls, for the control lcore). Unbinding waits for the
	 * store's I/O in flight. durable is called from km_io_poll() on io.
	 */
	void (*bind)(struct km_store *s, struct km_io *io, km_store_durable_fn durable, void *arg);
	/**
	 * Start reading k's value.
	 * @return 0: the value is in DRAM, *out filled (valid until the next write);
	 *   1: a read is in flight, rd->op.done will be called from km_io_poll();
	 *   -ENOENT; -EAGAIN: no room to submit now (answer BUSY); -ENOMEM.
	 */
	int (*read_start)(struct km_store *s, const struct km_key *k, struct km_read *rd,
		struct km_value_ref *out);
	/**
	 * Finish a read whose done() was called with res: check the record (CRC, key, the
	 * version the index has now).
	 * @return 0 and *out (pointing into rd's buffers: valid until km_store_read_free());
	 *   -EAGAIN: the entry changed or moved since the read started (start again);
	 *   -ENOENT: deleted since; -EIO, -EBADMSG: a failed or damaged read (counted).
	 */
	int (*read_done)(struct km_store *s, struct km_read *rd, int res, const struct km_key *k,
		struct km_value_ref *out);
	/** Number of the last record appended (0: none yet): what a write waits for. */
	uint64_t (*write_seq)(const struct km_store *s);
	/** Number of the last durable record. */
	uint64_t (*durable_seq)(const struct km_store *s);
	/**
	 * Whether the reply to a write must wait until its record is durable (write_seq()
	 * after the write, durable_seq() reaching it): sync durability, or a store whose
	 * last group failed (acknowledging at once could lose the write again).
	 */
	int (*ack_waits)(const struct km_store *s);
	/**
	 * Submit the records appended since the last call (a group write, and an fdatasync
	 * as the durability mode asks). Called once per loop iteration by the owner.
	 * @return 1 while the store needs more calls (records not written or not synced
	 *   yet, a group in flight), 0 when it is idle.
	 */
	int (*flush)(struct km_store *s);
	/**
	 * A staged store (KM_STORE_STAGE) is complete: write it out, fdatasync, and put its
	 * files in place of the shard's (atomic rename). The store then serves as if opened.
	 * @return 0 or -errno (the shard's files are then unchanged).
	 */
	int (*commit)(struct km_store *s);
	/**
	 * An unbound store (a replica's, written by the thread that receives it): write out
	 * what was appended and fdatasync it, blocking. @return 0 or -errno.
	 */
	int (*sync)(struct km_store *s);
	/** Remove the store's files (a shard split or merged away), then destroy it. */
	void (*unlink)(struct km_store *s);
	/**
	 * Shards whose files are in the data directory, after a crash resolved (files a
	 * newer store superseded are removed). @return the number of ids (at most max are
	 * written), or -errno (-ENOENT: no such directory; -EACCES; -EPROTO: files written
	 * under another routing).
	 */
	int (*recover)(const struct km_store_params *p, uint64_t *ids, uint32_t max);
	/**
	 * Record, durably, which shards the data directory holds (after start-up and after
	 * every change of the set): missing() compares the files found with it. Optional.
	 * @return 0 or -errno.
	 */
	int (*manifest)(const struct km_store_params *p, const uint64_t *ids, uint32_t n);
	/**
	 * The shards, or parts of shards, the manifest lists that none of the n files
	 * recover() found covers: files that went missing (a manifest that does not exist
	 * yet lists nothing).
	 * @return the number of ids (at most max written to out), or -errno (-EBADMSG: the
	 *   manifest is damaged).
	 */
	int (*missing)(const struct km_store_params *p, const uint64_t *ids, int n, uint64_t *out,
		uint32_t max);
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

/* Resumable walk, or -ENOTSUP when the driver has none. */
static inline int
km_store_walk_step(struct km_store *s, struct km_walk_pos *pos, uint32_t budget,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	return s->ops->walk_step != NULL ? s->ops->walk_step(s, pos, budget, fn, arg) : -ENOTSUP;
}

/* One SCAN page (km_store_ops.scan), or -ENOTSUP when the driver has none. */
static inline int
km_store_scan(struct km_store *s, const uint8_t *prefix, uint16_t plen, uint64_t *cursor,
	uint32_t budget, int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v),
	void *arg)
{
	return s->ops->scan != NULL ? s->ops->scan(s, prefix, plen, cursor, budget, fn, arg)
				    : -ENOTSUP;
}

/**
 * The order SCAN visits entries in: a bijection of the key hash, its two halves swapped.
 * Both drivers put an entry's home slot at (km_scan_order(hash) * slots) >> 64 (the
 * rotation also keeps one shard's keys, whose routing hashes share their top bits, from
 * crowding a part of the table), so a table is in this order but for the entries linear
 * probing pushed past their home slot; a cursor is an order, valid in any table size and
 * in either driver.
 */
static inline uint64_t
km_scan_order(uint64_t hash)
{
	return (hash << 32) | (hash >> 32);
}

/**
 * For drivers: a table of nb slots with linear probing (forward, around the end,
 * deletions shifting entries back, never a tombstone) and home slots as km_scan_order()
 * says. tab is the driver's.
 */
struct km_scan_table {
	void *tab;
	uint64_t nb;
	/** Entries a page visits at most (0: no bound): the page then ends before the next
	 * one, as when fn stops (a driver whose visit reads from the disk bounds it). */
	uint32_t visit_max;
	/** Whether slot i holds an entry. */
	int (*used)(void *tab, uint64_t i);
	/** km_scan_order() of the hash of the entry in slot i. */
	uint64_t (*order)(void *tab, uint64_t i);
	/** Call fn for the entry of slot i if its key begins with the prefix. @return 0 (no
	 * match, or fn returned 0), fn's value, or -errno (a read failed). */
	int (*visit)(void *tab, uint64_t i, const uint8_t *prefix, uint16_t plen,
		int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v),
		void *arg);
};

/**
 * km_store_ops.scan over such a table: the slots from the home slot of *cursor on, until
 * an empty slot after `budget` of them (or around the table's end up to an empty slot,
 * which completes the scan), the entries of the page's order range sorted and visited.
 * @note Context: the store's owner thread.
 */
int km_store_scan_table(const struct km_scan_table *t, const uint8_t *prefix, uint16_t plen,
	uint64_t *cursor, uint32_t budget,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg);

/* Destroy a store with its files (a persistent driver's unlink), e.g. one a re-sharding
 * replaced, or a staged one never served; NULL allowed. */
static inline void
km_store_discard(struct km_store *s)
{
	if (s == NULL)
		return;
	if (s->ops->unlink != NULL)
		s->ops->unlink(s);
	else
		s->ops->destroy(s);
}

/* destroy_step, or the whole destroy at once (drivers without it). @return 1 more, 0 gone. */
static inline int
km_store_destroy_step(struct km_store *s, uint32_t budget)
{
	if (s->ops->destroy_step != NULL)
		return s->ops->destroy_step(s, budget);
	s->ops->destroy(s);
	return 0;
}

/* Raise the versions the store issues above v (drivers without the op: nothing). */
static inline void
km_store_version_floor(struct km_store *s, uint64_t v)
{
	if (s->ops->version_floor != NULL)
		s->ops->version_floor(s, v);
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
static inline uint64_t
km_store_prefetch(struct km_store *s, const struct km_key *k, unsigned int step)
{
	return s->ops->prefetch != NULL ? s->ops->prefetch(s, k, step) : 0;
}

/** km_store_get() with the hint of an ENTRY prefetch of k in s (km_store_ops.get_hint). */
static inline int
km_store_get_hint(
	struct km_store *s, const struct km_key *k, uint64_t hint, struct km_value_ref *out)
{
	if (hint != 0 && s->ops->get_hint != NULL)
		return s->ops->get_hint(s, k, hint, out);
	return km_store_get(s, k, out);
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

/** Release a finished (or abandoned) read's buffers. */
void km_store_read_free(struct km_read *rd);

/** Whether the driver keeps values on disk (asynchronous reads, durability). */
static inline int
km_store_persistent(const struct km_store *s)
{
	return s->ops->read_start != NULL;
}

/** XXH3-64 of a whole key: the hash stores index by. */
uint64_t km_key_hash(const void *key, size_t len);

#endif /* KM_STORE_H */
