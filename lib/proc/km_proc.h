/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_PROC_H
#define KM_PROC_H

/**
 * @file
 * The request processor: everything a worker does with a parsed request, independent of
 * how packets arrive (DPDK mbufs in keymapd, plain sockets in tests).
 *
 * One km_proc per worker. It owns the stores of the shards the worker owns (shard id ->
 * store), the at-most-once table for retried writes, and the per-op counters.
 *
 * Concurrency: a km_proc is used only by its worker thread. Counters are plain 64-bit
 * stores read by other threads (control, telemetry) without locks: a reader may see a
 * value one update old, never a torn one (aligned 64-bit words on x86-64/arm64).
 * The shard map passed in must stay valid for the call (RCU read side in keymapd).
 */

#include <stddef.h>
#include <stdint.h>

#include <km_cache.h>
#include <km_predict.h>
#include <km_proto.h>
#include <km_auth.h>
#include <km_shardmap.h>
#include <km_store.h>

/* Per-worker request counters, declared once (X-macro): name, help. */
#define KM_PROC_COUNTERS(X)                                                                       \
	X(req_ping, "PING requests")                                                              \
	X(req_get, "GET requests")                                                                \
	X(req_mget, "MGET requests")                                                              \
	X(req_put, "PUT requests")                                                                \
	X(req_cas, "CAS requests")                                                                \
	X(req_del, "DEL requests")                                                                \
	X(req_map, "MAP requests")                                                                \
	X(req_scan, "SCAN requests (one page each)")                                              \
	X(scan_entries, "entries listed in SCAN replies")                                         \
	X(req_hello, "HELLO requests (cookies handed out)")                                       \
	X(denied_cookie, "replies larger than their request refused: no valid cookie (DENIED)")   \
	X(denied_auth, "requests without a valid MAC where one is needed (DENIED)")               \
	X(denied_perm, "requests their client key may not make (DENIED)")                         \
	X(get_hit, "GET/MGET keys found")                                                         \
	X(get_miss, "GET/MGET keys not found")                                                    \
	X(cas_mismatch, "CAS/DEL refused for a version mismatch")                                 \
	X(bad_request, "requests answered BAD_REQUEST")                                           \
	X(too_large, "requests answered TOO_LARGE")                                               \
	X(moved, "requests answered MOVED (stale client map)")                                    \
	X(write_retry, "retried writes answered from the at-most-once table")                     \
	X(mig_done, "incremental splits and merges swapped in")                                   \
	X(mig_copied, "entries copied by incremental splits and merges")                          \
	X(mig_mirrored, "writes repeated in the copy of a shard being split or merged")           \
	X(export_started, "live exports of a shard to another node started")                      \
	X(export_done, "live exports of a shard to another node completed at its detach")         \
	X(export_failed, "live exports that failed (the shard was then copied whole)")            \
	X(store_error, "store failures answered ERROR")                                           \
	X(damaged, "reads answered DAMAGED: the newest record damaged, or the shard quarantined") \
	X(busy_handover, "requests answered BUSY: shard being handed over")                       \
	X(handover_forwarded, "requests handed to the new owner of a shard in transit")           \
	X(busy_pending, "requests answered BUSY: too many reads or replies waiting on disk")      \
	X(busy_backlog, "writes answered BUSY: write buffer full, or the async durability bound") \
	X(busy_overload, "requests answered BUSY: the RX queue over busy_watermark")              \
	X(full, "writes answered FULL: the worker's share of [store] max_bytes reached")          \
	X(disk_reads, "store reads started for cache misses")                                     \
	X(read_coalesced, "cache misses served by a read already in flight")                      \
	X(read_restarts, "reads started again: the entry changed meanwhile")                      \
	X(prefetch_issued, "prefetch reads started")                                              \
	X(prefetch_coalesced, "prefetches a request found still in flight (late)")                \
	X(prefetch_refused, "prefetches refused: budget or pending watermark reached")            \
	X(prefetch_harm, "cache misses on a key a prefetch had evicted")                          \
	X(stream_prefetches, "prefetches asked by the per-shard stream detector")                 \
	X(stream_forwarded, "stream prefetches of keys another worker owns (to control)")         \
	X(samples, "accesses sampled for the predictor")                                          \
	X(notes_dropped, "notes for the control lcore dropped: note buffer full")                 \
	X(shift_fallback_reads, "GETs answered from an override's old place (fallback)")          \
	X(shift_moved_keys, "entries the partition shifter moved to their new place")             \
	X(shift_move_restored, "moves put back in their old place: hand-off ring or mbufs full")  \
	X(shift_walk_steps, "partition shifter background steps that walked part of a shard")     \
	X(shift_walk_entries, "entries the partition shifter's background steps looked at")       \
	X(shift_retry_old, "retried writes answered from the old place's at-most-once record")    \
	X(write_deferred, "write replies held until their group was durable")                     \
	X(repl_waited, "replies held until the replicas acknowledged the write")                  \
	X(repl_read_waits, "GETs held until the replicas acknowledged the key's last write")      \
	X(busy_repl, "writes answered BUSY: replication window full or shard blocked")            \
	X(repl_failed, "replication streams that failed on this worker (restarted)")              \
	X(busy_lease, "requests answered BUSY: replicated shard, this node's lease not sure")     \
	X(write_failed, "writes answered ERROR: their group write failed")                        \
	X(crew_reads, "GETs and MGET entries served from another worker's read copy")             \
	X(crew_retries, "read copy reads repeated: the owner was rewriting the entry")            \
	X(crew_fallbacks, "read copy reads given up (entry kept changing): handed to the owner")  \
	X(crew_added, "keys this owner replicated (read copies made)")                            \
	X(crew_updates, "read copies rewritten by a write to their key")                          \
	X(crew_withdrawn, "read copies withdrawn: deleted, too large, cooled, or shard moved")

struct km_proc_counters {
#define KM_X(name, help) uint64_t name;
	KM_PROC_COUNTERS(KM_X)
#undef KM_X
};

/** Names and help strings of the counters, in struct order. */
extern const char *const km_proc_counter_names[];
extern const char *const km_proc_counter_help[];
#define KM_PROC_NB_COUNTERS (sizeof(struct km_proc_counters) / sizeof(uint64_t))

struct km_proc_params {
	uint16_t worker;             /* this worker's index */
	uint32_t value_max;          /* <= KM_VALUE_MAX_LARGE */
	uint32_t dedup_entries;      /* at-most-once window, power of two (0 = 65536) */
	const char *store_driver;    /* "mem", "log" */
	uint32_t store_initial_keys; /* sizing hint per shard */
	uint8_t store_hugepages;     /* mem: enum km_hugepages */
	/* Persistent drivers (ignored by mem): */
	const char *dir;      /* data directory */
	const char *cold_dir; /* cold segment directory */
	uint8_t durability;   /* enum km_durability */
	uint8_t route_sep;    /* the map's routing, recorded in the files */
	uint8_t route_depth;
	uint32_t sync_interval_ms; /* KM_DUR_ASYNC bound (0 = 10) */
	uint32_t write_buffer;     /* per shard (0 = 4 MiB) */
	uint64_t cache_bytes;      /* per-worker value cache (0 = 64 MiB) */
	uint32_t pending_max;      /* disk reads in flight (0 = 256) */
	uint32_t defer_max;        /* requests waiting for a read or a group write (0 = 1024) */
	/* Versions of a shard km_proc_shard_add() opens start above this; 0: the wall clock
	 * in ns then, so that a store that keeps nothing across restarts (mem) never issues
	 * a version again that a client may hold from before (unless the clock went back). */
	uint64_t version_base;
	/* DRAM this worker's stores may hold (km_store_ops.dram_bytes: mem's keys and values,
	 * log's index), 0 = no bound: over it, a PUT or CAS is answered FULL (reads, DELs and
	 * writes that do not grow go on). The bound may be passed by one index growth, and,
	 * with mem, by the free objects of its slabs, which it does not count (bounded by its
	 * compaction: what a store holds stays below 1.5 x what it counts + 64 KiB). */
	uint64_t dram_max;
	/* Address validation (HELLO cookies): a reply larger than its request goes only to a
	 * source whose request carries a valid cookie; NULL: no validation. Shared by every
	 * worker (a cookie is good on every port); the caller keeps it alive. */
	const struct km_hello_secrets *hello;
	/* Room the caller can give the reply of a GET whose value does not fit the buffer it
	 * came in (KM_PROC_GROW), <= KM_MSG_MAX; 0: none, such a GET is answered TOO_LARGE. */
	uint32_t reply_max;
};

/*
 * The rotating secrets of HELLO cookies. Time is cut in slots of slot_ms; a cookie is
 * km_cookie(secret of slot s, source, s) for the slot s in which HELLO answered, and is
 * accepted during slots s and s + 1 (on the clock of km_proc_time()): it lives between
 * slot_ms and twice that. Slot s's secret is key[s % KM_HELLO_SECRETS]. The one thread
 * that calls km_hello_rotate() draws the secret of slot s + 2 during slot s (never one of
 * a slot that started: readers use slots s and s - 1), so a stalled rotator only leaves
 * older secrets in use longer; the slot number is part of each cookie, so a secret used
 * again four slots later makes other cookies.
 */
#define KM_HELLO_SECRETS 4

struct km_hello_secrets {
	uint64_t slot_ns;                          /* fixed by km_hello_init() */
	uint64_t drawn;                            /* the rotator's: last slot drawn */
	_Atomic uint64_t key[KM_HELLO_SECRETS][2]; /* 16-byte secrets, as two words */
};

/**
 * Random secrets (libsodium's randombytes) for the slots around now_ns.
 * @return 0, -EINVAL (slot_ms 0), or -EIO when the random source fails.
 * @note Context: any thread, before publication.
 */
int km_hello_init(struct km_hello_secrets *hs, uint32_t slot_ms, uint64_t now_ns);

/**
 * Draw the secrets of the slots up to two after now_ns's not drawn yet (never one of a
 * slot that started). Cheap when there is none.
 * @note Context: one thread (keymapd: the control lcore), periodically, on the clock the
 *   workers give km_proc_time().
 */
void km_hello_rotate(struct km_hello_secrets *hs, uint64_t now_ns);

struct km_proc;
struct km_proc_shard;

/**
 * The client keys in force (NULL: none; a request with a MAC is then DENIED, and every
 * request is served without one). Requests of the next bursts are checked against it.
 * @note Context: the owner worker, a held under RCU until the next call or quiescent state.
 */
void km_proc_set_auth(struct km_proc *p, const struct km_auth *a);

/** @return 0, -EINVAL, -ENOMEM. @note Context: any thread, before the worker runs. */
int km_proc_create(const struct km_proc_params *p, struct km_proc **out);
/**
 * Frees the processor and every store it owns (reads in flight are waited for).
 * @note Context: any thread, once the worker has stopped using it.
 */
void km_proc_destroy(struct km_proc *p);

/**
 * Create (empty) the store of a shard this worker now owns.
 * @return 0, -EEXIST, -ENOENT (no such driver), -ENOMEM.
 * @note Context: the owner worker, or any thread before the worker runs.
 */
int km_proc_shard_add(struct km_proc *p, uint64_t shard_id);

/**
 * Add a shard whose files are missing, unreadable or damaged (reason: the errno), with a
 * quarantined store: every request of its keys is answered DAMAGED, nothing of its files
 * is touched (KM_STORE_QUARANTINE).
 * @return 0, -EEXIST, -EINVAL, -ENOMEM (a driver without quarantine: -EINVAL).
 * @note Context: any thread, before the worker runs; then the owner worker only.
 */
int km_proc_shard_quarantine(struct km_proc *p, uint64_t shard_id, int reason);

/**
 * Hand an existing store (entries of shard_id only) to this worker: the receiving side of
 * a shard move, split or merge. The processor owns it from now on.
 * @return 0, -EINVAL (id 0 or store NULL), -EEXIST, -ENOMEM (the store stays the caller's
 *   on any error).
 * @note Context: the owner worker, at a loop boundary (no staged burst in progress).
 */
int km_proc_shard_attach(struct km_proc *p, uint64_t shard_id, struct km_store *s);

/**
 * Shard shard_id, just detached from p, goes to worker `to`, which attaches it before the
 * map that says so (epoch) is published. Until this worker sees that map, a request it
 * would execute for the shard is handed to `to` instead of answered BUSY; there, a handed
 * request for a shard the worker holds executes whatever its map says (the store is the
 * authority: one worker holds it at a time). Attaching the shard here again ends it.
 * @note Context: the owner worker, after km_proc_shard_detach().
 */
void km_proc_shard_forward(struct km_proc *p, uint64_t shard_id, uint16_t to, uint32_t epoch);

/**
 * Remove a shard from this worker and give its store to the caller, who then owns it
 * (this worker answers BUSY for the shard until it is attached somewhere and the new map
 * is published). The shard's request count is returned in *requests if not NULL.
 * @return the store, or NULL if the shard is not owned.
 * @note Context: the owner worker, at a loop boundary (no staged burst in progress).
 */
struct km_store *km_proc_shard_detach(struct km_proc *p, uint64_t shard_id, uint64_t *requests);

struct km_proc_dedup;

/**
 * km_proc_shard_detach(), and the shard's at-most-once entries taken into *dedup (NULL:
 * none) after a persistent shard's write-out, so that a write the write-out failed travels
 * without a record (its retry executes again rather than being answered OK). The way to
 * detach a shard that changes owner.
 * @note Context: the owner worker, at a loop boundary (no staged burst in progress).
 */
struct km_store *km_proc_shard_detach_dedup(
	struct km_proc *p, uint64_t shard_id, uint64_t *requests, struct km_proc_dedup **dedup);

/**
 * Create an empty store of this processor's driver and parameters for shard_id, not
 * attached to anything (the caller owns it): the target of a split or merge copy.
 * Versions it issues are above version_base.
 * @return 0, -EINVAL, -ENOENT, -ENOMEM.
 * @note Context: any thread (reads only parameters fixed at creation).
 */
/**
 * km_proc_store_new() for about `keys` entries: the store is sized for them at once (a copy
 * that grows while it is filled would rehash everything in one step).
 * @note Context: any thread (p is only read).
 */
int km_proc_store_new_sized(const struct km_proc *p, uint64_t shard_id, uint64_t version_base,
	uint64_t keys, struct km_store **out);

int km_proc_store_new(
	const struct km_proc *p, uint64_t shard_id, uint64_t version_base, struct km_store **out);

/**
 * As km_proc_store_new(), for the given tier: the target of a tier change or a
 * compaction of shard_id (persistent drivers put its files in place at km_store_commit();
 * the mem driver has one tier and ignores it).
 * @note Context: any thread (reads only parameters fixed at creation).
 */
int km_proc_store_stage(const struct km_proc *p, uint64_t shard_id, uint64_t version_base,
	uint8_t tier, struct km_store **out);

/** What the control plane sees of one owned shard. */
struct km_shard_info {
	uint64_t id;
	uint64_t worker;   /* the processor's worker index */
	uint64_t requests; /* single-key requests executed on it since it was attached */
	uint64_t keys;
	uint64_t bytes;           /* key + value bytes */
	uint64_t version_last;    /* highest version its store issued */
	uint64_t tier;            /* enum km_tier (persistent drivers) */
	uint64_t file_bytes;      /* on disk */
	uint64_t dead_bytes;      /* reclaimable by a compaction */
	uint64_t dedup_listed;    /* positions of its at-most-once index (live or not yet
				   * compacted: bounded by twice its entries plus a pass) */
	struct km_store_stats st; /* everything the store reports */
};

/**
 * Figures of every owned shard, in no particular order.
 * @return the number of shards owned; at most max are written to out.
 * @note Context: the owner worker (stores are read).
 */
uint32_t km_proc_shard_infos(const struct km_proc *p, struct km_shard_info *out, uint32_t max);

/*
 * Incremental split and merge (proc_mig.c). The owner copies a shard (split: into its two
 * children; merge: two buddies into their parent, both owned here) into new stores a few
 * hundred entries per loop iteration, serving every request from the old store meanwhile
 * and repeating each write in the copy; km_proc_mig_finish() then swaps the copies in at
 * one loop boundary. Persistent copies are staged files, committed at the swap: a crash
 * before leaves the old files, after it the new ones (km_store_ops.commit).
 *
 *   km_proc_mig_start -> km_proc_mig_step (every loop iteration) ... phase READY
 *     -> km_proc_mig_finish (swap; -EAGAIN: not ready, the copy goes on) | km_proc_mig_cancel
 *
 * One at a time per worker. Until the new map is published, requests routed to a shard
 * that was swapped out find the child or parent that holds their hash.
 */
enum km_mig_kind { KM_MIG_SPLIT = 1, KM_MIG_MERGE = 2 };
enum km_mig_phase { KM_MIG_NONE, KM_MIG_COPYING, KM_MIG_READY, KM_MIG_FAILED };

/* Where the migration of a worker stands (km_proc_mig_progress). */
struct km_mig_progress {
	uint8_t phase;     /* enum km_mig_phase */
	int32_t err;       /* KM_MIG_FAILED: why (-errno) */
	uint32_t passes;   /* walks of the sources completed */
	uint64_t src_keys; /* entries of the sources (damaged ones apart) */
	uint64_t dst_keys; /* entries of the copies */
	uint64_t copied;   /* entries copied by the walks */
	uint64_t mirrored; /* writes repeated in the copies */
};

/**
 * Start a split of shard id (kind KM_MIG_SPLIT), or a merge of its children 2 id and
 * 2 id + 1 into id (KM_MIG_MERGE). The shards must be attached here.
 * @return 0; -EBUSY one is in progress; -ENOENT a source is not here; -EBADMSG a source is
 *   quarantined; -ERANGE depth limit; -EINVAL; -ENOMEM or the store's -errno.
 * @note Context: the owner worker (a handshake command).
 */
int km_proc_mig_start(struct km_proc *p, enum km_mig_kind kind, uint64_t id);

/**
 * Copy the next few hundred entries of the migration in progress (nothing if none).
 * map: the current map (only its routing rule is used).
 * @return 1 when it moved on and more is to copy (call again while time allows), 0 when
 *   there is nothing more to do now (done, failed, none, or waiting for the disk).
 * @note Context: the owner worker, between bursts.
 */
unsigned int km_proc_mig_step(struct km_proc *p, const struct km_shardmap *map);

/**
 * Swap the copies in: detach the sources (into old[0..1], NULL-filled by the caller: the
 * caller's to discard once the new map is published), commit and attach the copies.
 * *keys: entries of the copies.
 * @return 0; -EAGAIN not ready (the copy goes on); -ENOENT none in progress; another
 *   -errno: failed, the sources serve on unchanged and the migration is cancelled, except
 *   that a failure before the call (phase KM_MIG_FAILED) leaves it for km_proc_mig_cancel().
 * @note Context: the owner worker (a handshake command).
 */
int km_proc_mig_finish(struct km_proc *p, struct km_store **old, uint64_t *keys);

/**
 * Drop the copies of the migration in progress (if any); the sources serve on.
 * @note Context: the owner worker (a handshake command), or km_proc_destroy().
 */
void km_proc_mig_cancel(struct km_proc *p);

/**
 * Whether a migration is in progress (started, not finished or cancelled).
 * @note Context: the owner worker.
 */
int km_proc_mig_active(const struct km_proc *p);

/**
 * The highest version any store of p issued or loaded.
 * @note Context: the worker of p (a handshake), or the thread that owns p.
 */
uint64_t km_proc_version_last(const struct km_proc *p);

/**
 * Raise every store of p so that the versions it issues from now on are above v: keys a
 * routing change sends to other stores (partition shifter) never get a version again that
 * they had before.
 * @note Context: the worker of p (a handshake), or the thread that owns p.
 */
void km_proc_version_floor(struct km_proc *p, uint64_t v);

/*
 * The at-most-once entries of a shard travel with it when it changes owner: taken from the
 * old owner's table at its detach, given to the new owner's after its attach, so that a
 * write retried after the move is answered from its first outcome there.
 */
struct km_proc_dedup;

/**
 * Take (remove) the at-most-once entries of writes to shard shard_id. While the shard is
 * attached this walks its own index of entries (O(its entries)); afterwards it walks the
 * whole table. A shard that changes owner takes them with km_proc_shard_detach_dedup().
 * @return them (the caller's: km_proc_dedup_give or km_proc_dedup_free), or NULL when
 *   there are none (or no memory: their retries would then execute again).
 * @note Context: the worker of p (a handshake), at the shard's detach.
 */
struct km_proc_dedup *km_proc_dedup_take(struct km_proc *p, uint64_t shard_id);

/**
 * Put entries taken by km_proc_dedup_take() into p's table (and free them); set may be
 * NULL. Call it after the shard's attach. same_store: the store attached is the one the
 * entries were taken with (a move: retries wait for the durability of their write there);
 * 0: a committed rewrite (nothing to wait for).
 * @note Context: the worker of p (a handshake).
 */
void km_proc_dedup_give(
	struct km_proc *p, uint64_t shard_id, struct km_proc_dedup *set, int same_store);

/** Number of entries in set (NULL: 0). @note Context: any thread. */
uint32_t km_proc_dedup_count(const struct km_proc_dedup *set);

/** Free entries nobody takes (NULL allowed). @note Context: any thread. */
void km_proc_dedup_free(struct km_proc_dedup *set);

/**
 * The at-most-once entries of a shard that goes to another node: KM_PROC_DEDUP_WIRE bytes
 * each (big-endian: src, request id, key hash, route hash, version (u64 each), op,
 * status), written to buf (KM_PROC_DEDUP_WIRE * km_proc_dedup_count(set) bytes).
 * km_proc_dedup_decode() makes a set of n of them again (NULL: n is 0 or no memory), for
 * km_proc_dedup_give(..., 0) after the shard's attach there.
 * @note Context: any thread.
 */
#define KM_PROC_DEDUP_WIRE 42
void km_proc_dedup_encode(const struct km_proc_dedup *set, uint8_t *buf);
struct km_proc_dedup *km_proc_dedup_decode(const uint8_t *buf, uint32_t n);

/*
 * Live export of a shard to another node (proc_export.c): the copy of a cross-node move,
 * made while the shard serves. The owner encodes the shard's entries a few hundred per
 * loop iteration between bursts, and every write it applies to the shard meanwhile, in
 * the order it applies them, into chunks another thread takes and sends: applying the
 * records of every chunk in order to an empty store (km_proc_xrec_apply) rebuilds the
 * shard as it is at the end (an entry may come more than once; the last record of a key
 * is its state). The export ends at the shard's detach (km_proc_shard_detach_dedup),
 * whose chunk is the last one (flag last, keys: the shard's entries then). It fails, and
 * no chunk follows, when a write finds no free chunk (the consumer is too slow), when a
 * write-out of the shard fails (rolled-back writes were exported), on a walk error, on
 * km_proc_export_cancel(), or when the shard is detached before its walk ended: the
 * caller then copies the detached shard whole.
 *
 *   km_proc_export_new -> km_proc_export_start (owner) -> km_proc_export_step (owner,
 *   every loop iteration) ... status walked -> detach (owner): last chunk
 *   consumer: km_proc_export_take / km_proc_export_give until the last chunk or an error
 *   km_proc_export_put by the creator and (implicitly) by the owner: freed by the last.
 *
 * Record (big-endian): u16 key length, bit 15 set for a deletion; u32 value length (0 for
 * a deletion); u64 version; the key; the value.
 */
#define KM_PROC_XREC_HDR     14
#define KM_PROC_XREC_DEL     0x8000u
#define KM_PROC_XCHUNK_BYTES (128u << 10) /* holds the largest record */

struct km_proc_xchunk {
	uint32_t len;     /* bytes of data used */
	uint32_t records; /* records in data */
	uint8_t last;     /* the shard's detach: nothing follows */
	uint64_t keys;    /* last: the shard's entries at its detach */
	uint8_t data[KM_PROC_XCHUNK_BYTES];
};

struct km_proc_export;

/* Where an export stands (km_proc_export_status). */
struct km_proc_export_status {
	int err;          /* the failure (-errno), 0 */
	uint8_t walked;   /* every entry that was there from the start was encoded */
	uint8_t ended;    /* the owner is done with it (last chunk queued, or failed) */
	uint32_t backlog; /* chunks queued for the consumer */
	uint32_t free;    /* chunks free for the owner */
	uint64_t entries; /* entries encoded by the walk */
	uint64_t writes;  /* writes encoded */
};

/**
 * An export of shard_id with nb_chunks chunks (at least 4), unstarted, with one reference
 * (the caller's). @return 0 or -ENOMEM / -EINVAL. @note Context: any thread.
 */
int km_proc_export_new(uint64_t shard_id, uint32_t nb_chunks, struct km_proc_export **out);

/**
 * Start x on its shard: p takes a reference (given back when the export ends).
 * @return 0; -EBUSY one is in progress here; -ENOENT the shard is not here; -EBADMSG it is
 *   quarantined; -ENOTSUP its driver has no resumable walk; -EINVAL x was started before.
 * @note Context: the owner worker (a handshake command).
 */
int km_proc_export_start(struct km_proc *p, struct km_proc_export *x);

/** Whether an export is in progress on p. @note Context: the owner worker. */
int km_proc_export_active(const struct km_proc *p);

/**
 * Encode the next few hundred entries of the export in progress, or hand the current
 * chunk on when the walk is over and the consumer waits.
 * @return 1 when more is to encode now (call again while time allows), else 0.
 * @note Context: the owner worker, between bursts.
 */
unsigned int km_proc_export_step(struct km_proc *p);

/** End the export in progress (if any) as failed with -ECANCELED.
 * @note Context: the owner worker (a handshake command), or km_proc_destroy(). */
void km_proc_export_cancel(struct km_proc *p);

/** The next chunk queued, in order (the caller's until km_proc_export_give), or NULL.
 * @note Context: the one consumer thread. */
struct km_proc_xchunk *km_proc_export_take(struct km_proc_export *x);
/** Give a chunk taken back to the owner. @note Context: the one consumer thread. */
void km_proc_export_give(struct km_proc_export *x, struct km_proc_xchunk *c);

/** @note Context: any thread (relaxed figures). */
void km_proc_export_status(const struct km_proc_export *x, struct km_proc_export_status *out);

/** Drop the caller's reference (NULL allowed). @note Context: any thread. */
void km_proc_export_put(struct km_proc_export *x);

/*
 * Replication of a shard to its replicas (docs/cluster.md section 7): one export per
 * replica, in replication mode. It does not end at a detach (it fails there) and goes on
 * for as long as the shard is here: first the walk, as a live export's, then a sync
 * record, then every write the owner applies, each with its replication sequence number
 * (rseq: 1, 2, ... per attach of the shard, every stream of the shard numbering alike) and
 * its at-most-once identity. The consumer sends the chunks and reports the replica's
 * cumulative acknowledgements (km_proc_repl_ack).
 *
 * A stream is *waited for* once it is caught up (the replica acknowledged the sync record
 * and every write up to it) or once km_proc_repl_wait() says so (the map lists the replica
 * in sync). In sync mode a write's reply leaves only when every waited stream acknowledged
 * it (and, with a store on disk, it is durable here), and a GET of a key whose last write
 * is not yet acknowledged so waits for it: no reply shows a value a failover may lose.
 * The window: a write is answered BUSY, not applied, while a waited stream has
 * KM_PROC_REPL_WINDOW writes unacknowledged or no chunk for it, or while the shard is
 * blocked (an in-sync replica with no stream: km_proc_repl_block). A stream not waited for
 * that finds no chunk fails instead (its consumer starts it again, with a new walk).
 *
 * Records, after those of a live export: a write is a live export record whose key length
 * has bit 14 (KM_PROC_XREC_W) set, followed after its value by KM_PROC_XREC_WTAIL bytes:
 * u64 rseq, u64 client (source), u64 request id, u64 routing hash, u8 op, u8 status. The
 * sync record is u16 KM_PROC_XREC_SYNC, u64 rseq (the last write numbered before it).
 * Between the walk and the sync record come the shard's at-most-once entries as they were
 * at the walk's end: u16 KM_PROC_XREC_DEDUP, u32 n (1..KM_PROC_XREC_DEDUP_MAX), n entries
 * of KM_PROC_DEDUP_WIRE bytes (km_proc_dedup_encode), in as many records as needed; a
 * replica answers the retries of writes made before its copy from them after a failover.
 */
#define KM_PROC_REPL_MAX       4   /* streams per shard: 2 replicas, each restarted */
#define KM_PROC_REPL_WINDOW    512 /* writes a waited replica may leave unacknowledged */
#define KM_PROC_XREC_W         0x4000u
#define KM_PROC_XREC_WTAIL     34
#define KM_PROC_XREC_SYNC      0x4000u /* with a key length of 0 */
#define KM_PROC_XREC_SYNC_LEN  10
#define KM_PROC_XREC_DEDUP     0xc000u /* + u32 n, n at-most-once entries */
#define KM_PROC_XREC_DEDUP_HDR 6
#define KM_PROC_XREC_DEDUP_MAX 1024 /* entries per record */

/**
 * A replication stream of shard_id with nb_chunks chunks, unstarted, one reference.
 * @return 0, -EINVAL, -ENOMEM. @note Context: any thread.
 */
int km_proc_repl_new(uint64_t shard_id, uint32_t nb_chunks, struct km_proc_export **out);

/**
 * Start stream x on its shard here (p takes a reference).
 * @return 0; -ENOENT the shard is not here; -EBUSY KM_PROC_REPL_MAX streams already;
 *   -ENOTSUP no resumable walk; -EBADMSG quarantined; -EINVAL x started before or not a
 *   replication stream.
 * @note Context: the owner worker (a handshake command).
 */
int km_proc_repl_start(struct km_proc *p, struct km_proc_export *x);

/**
 * End stream x (failed, -ECANCELED) if it is still on its shard here.
 * @note Context: the owner worker (a handshake command).
 */
void km_proc_repl_stop(struct km_proc *p, struct km_proc_export *x);

/**
 * The replica tag (one bit, unique among the shard's replicas) of stream x, before its
 * start. A waited stream that fails blocks its tag: nothing of the shard is acknowledged
 * while a tag is blocked (an in-sync replica has no stream); a stream of the tag that
 * starts unblocks it (replace a stream by starting the new one first, then stopping the
 * old: a stream stopped blocks nothing). @note Context: the creator, before the start.
 */
void km_proc_repl_tag(struct km_proc_export *x, uint64_t tag);

/**
 * Block (an in-sync replica without a stream: its stream could not start) or unblock (the
 * map no longer calls it in sync) tag of shard_id. @return 0, -ENOENT, -ENOMEM.
 * @note Context: the owner worker.
 */
int km_proc_repl_block(struct km_proc *p, uint64_t shard_id, uint64_t tag, int blocked);

/**
 * The lease: a replicated shard answers BUSY (counted in busy_lease) to every request
 * once km_proc_time() passes *until_ns (this node's membership may have expired: a
 * replica may be promoted); NULL: no lease. @note Context: the owner, before it runs.
 */
void km_proc_repl_lease(struct km_proc *p, const _Atomic uint64_t *until_ns);

/** Sync mode (1, the default: replies wait for the replicas) or async (0). @note Owner. */
void km_proc_repl_sync(struct km_proc *p, int sync);

/**
 * Walk the streams that have not walked their shard yet, and hand on the chunks of the
 * writes. @return 1 when more is to do now. @note Context: the owner worker, every loop
 * iteration while km_proc_repl_active().
 */
unsigned int km_proc_repl_step(struct km_proc *p);

/** Whether p has a replicated or blocked shard (repl_step/poll to call). @note Owner. */
int km_proc_repl_active(const struct km_proc *p);

/** The replica applied every record up to write rseq (synced: and the sync record).
 * @note Context: the consumer thread. */
void km_proc_repl_ack(struct km_proc_export *x, uint64_t rseq, int synced);

/** Wait for stream x's acknowledgements even before it caught up (the map lists its
 * replica in sync). @note Context: any thread. */
void km_proc_repl_wait(struct km_proc_export *x, int wait);

/** Where a replication stream stands. */
struct km_proc_repl_status {
	int err;           /* failed (-errno), 0 */
	uint8_t ended;     /* no longer on its shard (failed or stopped) */
	uint8_t walked;    /* the walk is over (the sync record is queued) */
	uint8_t caught_up; /* the replica acknowledged the sync record */
	uint8_t waited;    /* replies wait for it */
	uint64_t rseq;     /* last write numbered on the shard (as the stream saw it) */
	uint64_t acked;    /* acknowledged by the replica */
	uint64_t entries;  /* entries walked */
	uint32_t backlog;  /* chunks queued */
};
/** @note Context: any thread (relaxed figures). */
void km_proc_repl_status(const struct km_proc_export *x, struct km_proc_repl_status *out);

/**
 * Parse the replication-only parts of the record at rec (len bytes): kind 0 a live export
 * record (apply it with km_proc_xrec_apply), 1 a write (its tail in *w), 2 the sync
 * record (w->rseq), 3 at-most-once entries (w->dedup_n of them, KM_PROC_DEDUP_WIRE bytes
 * each from rec + KM_PROC_XREC_DEDUP_HDR). @return the record's length, or -EPROTO (malformed),
 * -EAGAIN (len too short: more bytes are needed; *need how many in all).
 * @note Context: any thread.
 */
struct km_proc_rrec {
	uint8_t kind;
	uint8_t op, status;
	uint64_t rseq, src, req_id, route_hash;
	uint64_t key_hash; /* kind 1: of the key */
	uint64_t version;
	uint32_t dedup_n; /* kind 3 */
};
long km_proc_rrec_parse(const uint8_t *rec, size_t len, struct km_proc_rrec *w, size_t *need);

/**
 * The at-most-once entry of write w (kind 1), KM_PROC_DEDUP_WIRE bytes at buf, as
 * km_proc_dedup_encode() writes them.
 * @note Context: any thread.
 */
void km_proc_rrec_dedup(const struct km_proc_rrec *w, uint8_t *buf);

/*
 * The replica's side of a replication stream (proc_export.c): a copy being built from the
 * stream's bytes. Whole records are applied in order to store s (the caller's until the
 * copy is complete, then kept: km_proc_replica_take); the writes' at-most-once entries are
 * kept (the last dedup_max); the sync record marks the copy complete (synced): from then
 * on it holds every entry of the primary's shard and every write up to applied. A replica
 * that held another copy (a deposed primary's writes, never acknowledged) drops it for
 * this one once synced: that is its truncation to the new primary's state.
 */
struct km_proc_replica;

/** @return 0 and *out, -EINVAL (NULL, dedup_max 0), -ENOMEM. @note Context: any thread. */
int km_proc_replica_new(struct km_store *s, uint32_t dedup_max, struct km_proc_replica **out);

/**
 * Apply the whole records at buf (len bytes). @return the bytes used (a record cut at the
 * end is left: give it again with what follows), or -EPROTO (malformed), -E2BIG (a
 * record longer than max_rec), or the store's -errno. *synced_now: the sync record was
 * among them (the caller commits a staged store then).
 * @note Context: the thread that owns r.
 */
long km_proc_replica_apply(
	struct km_proc_replica *r, const uint8_t *buf, size_t len, size_t max_rec, int *synced_now);

/** Whether the sync record was applied, and the last write applied (its rseq). */
int km_proc_replica_synced(const struct km_proc_replica *r);
uint64_t km_proc_replica_applied(const struct km_proc_replica *r);
/** The largest version applied. */
uint64_t km_proc_replica_vmax(const struct km_proc_replica *r);
/** The store (still r's). */
struct km_store *km_proc_replica_store(const struct km_proc_replica *r);
/** The at-most-once entries kept, oldest first (the caller's: km_proc_dedup_free), NULL when
 * none (or no memory). */
struct km_proc_dedup *km_proc_replica_dedup(const struct km_proc_replica *r);
/** Free r; its store too unless keep (then the caller's). @note NULL allowed. */
void km_proc_replica_free(struct km_proc_replica *r, int keep);

/**
 * Apply the record at rec (len bytes available) to s: an insert or replace keeping its
 * version, or a deletion (of an absent key: nothing). *used: the record's length.
 * @return 0; -EPROTO malformed or truncated; the store's -errno.
 * @note Context: the thread that owns s.
 */
int km_proc_xrec_apply(struct km_store *s, const uint8_t *rec, size_t len, size_t *used);

/**
 * Progress of the migration in progress (phase KM_MIG_NONE: none).
 * @note Context: any thread (relaxed reads of what the worker last published).
 */
void km_proc_mig_progress(const struct km_proc *p, struct km_mig_progress *out);

/**
 * Split copy: every entry of src goes to lo (shard 2 * parent_id) or hi (2 * parent_id + 1)
 * by the bit of its routing hash below the parent's depth (route rules of m), with its
 * version. src is not modified.
 * @return entries copied, or -errno of the first failed load (lo and hi then hold a part);
 *   -EINVAL (NULL or shared stores, id 0), -ERANGE (parent at KM_SHARD_DEPTH_MAX).
 * @note Context: the thread that owns all three stores.
 */
int64_t km_proc_reshard_split(const struct km_shardmap *m, struct km_store *src, uint64_t parent_id,
	struct km_store *lo, struct km_store *hi);

/**
 * Merge copy: every entry of src is loaded into dst with its version.
 * @return entries copied, or -errno of the first failed load; -EINVAL (NULL, src == dst).
 * @note Context: the thread that owns both stores.
 */
int64_t km_proc_reshard_copy(struct km_store *src, struct km_store *dst);

/** Store of an owned shard, or NULL. @note Context: the owner worker. */
struct km_store *km_proc_shard_store(struct km_proc *p, uint64_t shard_id);

/** Number of shards owned. @note Context: the owner worker. */
uint32_t km_proc_nb_shards(const struct km_proc *p);

/** Sum of the stats of all owned stores. @note Context: the owner worker (stores are read). */
void km_proc_store_stats(const struct km_proc *p, struct km_store_stats *st);

/**
 * Overload: while on (the worker's RX backlog is over its watermark), a request that costs
 * several times the BUSY reply standing for it gets that reply, counted in busy_overload:
 * PUT, CAS and DEL, answered in stage 1 before their cache misses (a retry of a write
 * already applied too: its outcome stays in the at-most-once table for the next try), and
 * a GET whose value is not in DRAM (not in the cache of a store on disk; no read starts).
 * GETs of values in DRAM, MGET, PING and MAP are served: with the packet I/O both pay, a
 * GET hit costs little more than its BUSY, and a refused one would be sent again. MGET
 * entries not cached are BUSY as always, but start no read. Off at creation.
 * keymap-proc-bench, mem store, 100 k keys, TSC cycles of processing: a write answered
 * BUSY 95, a GET hit 245, a PUT 310 (docs/operations.md, 2.11).
 * @note Context: the owner worker, between bursts.
 */
void km_proc_overload(struct km_proc *p, int on);

/**
 * Counters of this processor: written by the owner worker with plain stores, read by any
 * thread (a value may be one update old, never torn).
 * @note Context: any thread.
 */
const struct km_proc_counters *km_proc_counters(const struct km_proc *p);

/** Route of a request's (first) key, computed once in stage 1. */
struct km_route {
	uint64_t hash;                   /* XXH3 of the routing part: selects the shard */
	uint64_t key_hash;               /* XXH3 of the whole key: indexes the store */
	const struct km_shard *shard;    /* shard of hash in the map; NULL for keyless ops */
	const struct km_shard *fallback; /* km_shardmap_route(): old place of a shifted part */
};

/** What the caller does with a request after km_proc_rx_burst(). */
enum km_proc_verdict {
	KM_PROC_REPLY,   /* reply_len bytes of reply written at buf: send them */
	KM_PROC_DEFER,   /* the reply waits (disk read, group write): km_proc_poll() returns
			  * cookie once it is written at buf; keep buf valid until then */
	KM_PROC_HANDOFF, /* another worker (owner) executes it: hand the datagram over */
	KM_PROC_DROP,    /* not a request (short, bad magic or version, a reply): drop it
			  * silently, nothing is answered */
	KM_PROC_GROW,    /* a GET whose value does not fit cap (it fits reply_max): nothing
			  * was written, the request is intact at buf; the caller submits it
			  * again (km_proc_rx) in a buffer with reply_max bytes of room, or
			  * drops it. It is counted once, when it executes. */
};

/**
 * One received datagram. The caller fills the input fields; km_proc_rx_burst() sets the
 * verdict. The reply is written over the request (buf), which is read before any byte it
 * overlaps is written.
 */
struct km_proc_req {
	/* in: set by the caller */
	uint8_t *buf;        /* the datagram (UDP payload) */
	size_t len;          /* its length */
	size_t cap;          /* bytes writable at buf, >= len: room for the reply */
	uint64_t src;        /* client address (e.g. IPv4 << 16 | UDP port): at-most-once key */
	void *cookie;        /* the caller's handle (its packet), returned by km_proc_poll() */
	int16_t port_worker; /* worker the client addressed (UDP dst port - base), -1: none */
	uint8_t handed;      /* handed over by another worker (a KM_HAND_* mark): never handed
			      * on again, but along the partition shifter's marks */
	struct km_shift_move *move; /* in: an entry moved along with a handed write (the
				     * processor's from now on); out (HANDOFF): one to send
				     * with the request, or to put back if it cannot go */
	uint8_t again; /* a GET submitted again for room (KM_PROC_GROW, a done of length
			* 0): the predictor learnt from its first pass */
	/* out: set by km_proc_rx_burst() */
	uint8_t verdict;   /* enum km_proc_verdict */
	uint16_t owner;    /* KM_PROC_HANDOFF: the worker that executes it */
	uint8_t hand_mark; /* KM_PROC_HANDOFF: the KM_HAND_* mark it travels with */
	uint8_t shift;     /* private: the partition shifter's step (proc_shift.c) */
	size_t reply_len;  /* KM_PROC_REPLY: reply bytes at buf */
	/* private to the processor */
	struct km_msg msg;
	struct km_route rt;
	struct km_key key;
	struct km_proc_shard *shd;
	size_t limit;  /* largest reply allowed: len without a valid cookie */
	uint64_t hint; /* a GET's ENTRY prefetch hint in shd's store (0: none) */
};

/**
 * The request entry: everything a worker does with a burst of received datagrams between
 * its L2-L4 checks and its TX burst. Each request is parsed (a malformed one: DROP, or a
 * status reply), routed on map (MOVED for a stale client that addressed the wrong worker;
 * HANDOFF to the owner; BUSY for a handed-over request whose shard moved meanwhile), and
 * the ones this worker owns are executed in stages so that their cache misses overlap:
 * index slots prefetched for the whole burst, then each record prefetched a few requests
 * before it executes. Every outcome is counted in the processor's counters.
 * @note Context: the owner worker, map held under RCU for the call.
 */
void km_proc_rx_burst(
	struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r, unsigned int n);

/**
 * km_proc_rx_burst() of one request.
 * @note Context: the owner worker, map held under RCU for the call.
 */
void km_proc_rx(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r);

/**
 * A deferred reply now written at its request's buffer; or, len 0, a GET whose value
 * turned out larger than that buffer: nothing was written, the request is intact, and the
 * caller submits it again with more room, as for KM_PROC_GROW (the value is cached by
 * then, unless the cache cannot hold it: then it is read again).
 */
struct km_proc_done {
	void *cookie;
	size_t len;
};

/**
 * Reap disk completions (answering the requests that waited for them), submit the group
 * writes of the shards written since the last call, and return the replies ready.
 * Call once per loop iteration, after the bursts.
 * @return replies written to done (at most max; the others wait for the next call).
 * @note Context: the owner worker.
 */
unsigned int km_proc_poll(struct km_proc *p, struct km_proc_done *done, unsigned int max);

/**
 * Whether disk I/O is in flight or replies are waiting: the worker must keep polling.
 * @note Context: the owner worker.
 */
int km_proc_busy(const struct km_proc *p);

/*
 * Predictive prefetch, the worker's part (DESIGN §5). Everything below concerns shards
 * whose values live on disk (a store with values in DRAM has nothing to prefetch).
 *
 * - Stream detector: every GET of a shard feeds the shard's streams (lib/predict); the
 *   keys they ask for are read into the cache by km_proc_prefetch_run() once the burst's
 *   replies are sent when this worker owns them, or handed to the control lcore as
 *   FORWARD notes when another does.
 * - Sampling: accesses of one in sample_every clients (by session id, else by source
 *   address: a sampled client is sampled whole, so its successions stay intact) become
 *   SAMPLE notes for the control lcore's predictor; writes are sampled too.
 * - Outcomes: every prefetched value is marked in the cache with who asked for it (a
 *   mark: 1..KM_PREDICT_NB_SRC the control lcore's prediction source + 1,
 *   KM_PROC_MARK_OPERATOR, KM_PROC_MARK_STREAM | bin the stream detector); its first hit
 *   (USED), its eviction unused (UNUSED), a request that waited for it (LATE) and a miss
 *   on a key one of them evicted (HARM) go back to the stream (its depth and distance)
 *   and, for the control lcore's marks, as OUTCOME notes.
 * - Budget: prefetch reads in flight are capped (inflight_max), and none starts while
 *   the pending table holds watermark reads or more: demand misses first (refusals counted).
 * - Validation: a prefetch read whose entry is written meanwhile is restarted by the
 *   store (read_restarts), a write replaces or drops the cached entry: no read after an
 *   acknowledged write returns an older value.
 * Notes wait in a bounded buffer (KM_PROC_NOTES_MAX; overflow counted in notes_dropped)
 * until the worker takes them with km_proc_notes().
 */
#define KM_PROC_MARK_OPERATOR 0x7f /* keymapctl prefetch KEY */
#define KM_PROC_MARK_STREAM   0x80 /* | slot << 2 | km_predict_stride_bin(): a stream */
#define KM_PROC_NOTES_MAX     256

_Static_assert(KM_PREDICT_NB_SRC < KM_PROC_MARK_OPERATOR, "marks of sources fit below 0x7f");

struct km_proc_pf_params {
	uint32_t sample_every; /* 0: no sampling; else one client in N (rounded up to 2^k) */
	uint8_t stream;        /* run the per-shard stream detector */
	uint32_t inflight_max; /* prefetch reads in flight (0: 64) */
	uint32_t watermark;    /* no prefetch while this many reads are pending (0: 3/4 of
				* pending_max) */
	uint16_t depth_max;    /* stream window cap (0: 64) */
};

/**
 * Apply prefetch parameters. At creation: no sampling, no stream detector, 64 reads in
 * flight, watermark 3/4 of pending_max.
 * @return 0, -EINVAL (sample_every over 2^20).
 * @note Context: the owner worker.
 */
int km_proc_prefetch_params(struct km_proc *p, const struct km_proc_pf_params *pp);

/**
 * The worker's clock for what follows (stream timing, read latency, note times): call
 * once per loop iteration.
 * @note Context: the owner worker.
 */
void km_proc_time(struct km_proc *p, uint64_t now_ns);

enum km_proc_note_type {
	KM_PROC_NOTE_SAMPLE = 1, /* a sampled access: what is KM_PROC_ACC_* */
	KM_PROC_NOTE_OUTCOME,    /* what became of a prefetch: what is KM_PROC_PF_* */
	KM_PROC_NOTE_FORWARD,    /* a key the stream detector wants, owned by another worker */
	KM_PROC_NOTE_CREW,       /* a sampled access for hot-key replication: op, key, owner */
};

/** What a sampled access found. */
enum km_proc_access {
	KM_PROC_ACC_HIT = 0,      /* cached, not by a prefetch (or already hit since) */
	KM_PROC_ACC_PREFETCH_HIT, /* the first hit on a prefetched value */
	KM_PROC_ACC_LATE,         /* waited for a prefetch still in flight */
	KM_PROC_ACC_MISS,         /* a read from the store */
	KM_PROC_ACC_NOT_FOUND,
	KM_PROC_ACC_WRITE, /* PUT, CAS or DEL */
};

/** What became of a prefetch. */
enum km_proc_pf_event {
	KM_PROC_PF_USED = 0,
	KM_PROC_PF_UNUSED,
	KM_PROC_PF_LATE,
	KM_PROC_PF_HARM, /* a demand miss on a key this mark's prefetch had evicted */
};

/** One note for the control lcore. */
struct km_proc_note {
	uint8_t type;     /* enum km_proc_note_type */
	uint8_t op;       /* SAMPLE: enum km_op */
	uint8_t what;     /* SAMPLE: enum km_proc_access; OUTCOME: enum km_proc_pf_event */
	uint8_t mark;     /* OUTCOME (HARM: a prediction's), FORWARD: the prefetch's mark */
	uint16_t key_len; /* SAMPLE, FORWARD, OUTCOME (HARM: the missed key), CREW */
	uint16_t owner;   /* CREW: the key's owner worker (where it was served may differ) */
	uint32_t session; /* SAMPLE: the request's session id, 0 = none */
	uint32_t pad2;
	uint64_t shard_id;
	uint64_t src;  /* SAMPLE: the client's address (its stream when there is no session) */
	uint64_t t_ns; /* km_proc_time() when it happened */
	uint8_t key[KM_KEY_MAX];
};

/**
 * Read what the stream detectors asked for during the last bursts (a key owned by another
 * worker becomes a FORWARD note). Call after the replies of the bursts are sent: the
 * reads are not on their way.
 * @return the prefetch reads started.
 * @note Context: the owner worker, map held under RCU for the call (the same map as the
 *   bursts').
 */
unsigned int km_proc_prefetch_run(struct km_proc *p, const struct km_shardmap *map);

/**
 * Take up to max notes, oldest first.
 * @return the number taken.
 * @note Context: the owner worker.
 */
unsigned int km_proc_notes(struct km_proc *p, struct km_proc_note *out, unsigned int max);

/**
 * Read key into the cache ahead of its requests (a prefetch): the entry carries mark (see
 * above, nonzero) until its first hit. Nothing happens if the key is cached, already being
 * read, not owned here, or its store keeps values in DRAM.
 * @return 1 read started (or the value was in a write buffer and is cached now), 0 nothing
 *   to do, -EBUSY refused (budget or watermark), -EAGAIN/-ENOMEM no room now, -ENOENT no
 *   such key, -EINVAL (length, mark 0).
 * @note Context: the owner worker.
 */
int km_proc_prefetch_key(struct km_proc *p, const struct km_shardmap *map, const uint8_t *key,
	uint16_t len, uint8_t mark);

/**
 * The worker's value cache counters, or NULL (a driver with values in DRAM). Written by
 * the owner worker, readable (possibly one update old) by any thread.
 * @note Context: any thread.
 */
const struct km_cache_counters *km_proc_cache_counters(const struct km_proc *p);

/**
 * Requests waiting for disk (deferred), reads in flight.
 * @note Context: the owner worker (others may read a stale value).
 */
void km_proc_waiting(const struct km_proc *p, uint32_t *deferred, uint32_t *reads);

/*
 * The partition shifter's part on the workers (proc_shift.c; docs/architecture.md). While
 * a routing override migrates or reverts (km_shardmap.h), a key may still be in its old
 * place, the route's fallback shard:
 * - a GET that misses in the new place is handed to the fallback's owner (FALLBACK),
 *   which answers from the old place, or, the key not there either, hands it back once
 *   (FINAL) to the new owner, which answers authoritatively;
 * - a write goes first to the fallback's owner (VIA_OLD), which takes the key out of the
 *   old place (value and version) and sends it along with the write (FINAL) to the new
 *   owner: it loads the entry unless it has a newer one, then executes the write;
 * - km_proc_shift_step() moves the rest in the background, a bounded slice of one owned
 *   shard per call.
 * Moves and the requests behind them go through the same FIFO hand-off ring, so no read
 * after an acknowledged write sees an older value, and nothing is lost: a move that
 * cannot be sent is put back (km_proc_shift_restore()) and its write dropped (the client
 * retries). Stores that keep values on disk are not shifted (keymapd refuses overrides).
 */
#define KM_HAND_PLAIN    1 /* routed here by another worker */
#define KM_HAND_FALLBACK 2 /* a GET the new owner missed: answer from the old place */
#define KM_HAND_VIA_OLD  3 /* a write: take its key out of the old place first */
#define KM_HAND_FINAL    4 /* execute here without fallback (a move may ride along) */
#define KM_HAND_MOVE     5 /* no request: a moved entry only */

struct km_shift_move;

/**
 * Load a moved entry into this worker's store of its shard, unless that store has the key
 * already (a newer write there wins); the move is freed.
 * @return 0; 1 when another worker owns the key's shard in map (*owner: send it there,
 *   the move is still the caller's); -EAGAIN the shard's store is being handed over (the
 *   move is still the caller's: send it again later).
 * @note Context: the owner worker, map held under RCU.
 */
int km_proc_shift_apply(struct km_proc *p, const struct km_shardmap *map, struct km_shift_move *mv,
	uint16_t *owner);

/**
 * Put back a move that could not be sent (ring or mbufs full) into its old place, unless
 * the key is there again; the move is freed, and the background pass starts over.
 * @note Context: the worker that made the move, in the iteration that made it (same map).
 */
void km_proc_shift_restore(struct km_proc *p, struct km_shift_move *mv);

/**
 * Free a move nobody will apply (keymapd stopping).
 * @note Context: any thread that holds it.
 */
void km_proc_shift_free(struct km_shift_move *mv);

/*
 * Entries (mem: slots of its table) one km_proc_shift_step() looks at, about: a step
 * costs a bounded slice of a worker loop iteration whatever the size of the shard.
 * Measured (2-core VM under load, one mem shard of 1 M entries of 15+64 B in 2 M slots,
 * nothing to move): a whole pass takes ~150 ms (the time one step took before steps were
 * bounded); a step of 4096 slots (~1950 entries) 280-450 us, of 1024 slots (~490
 * entries) 75-100 us.
 */
#define KM_PROC_SHIFT_BUDGET 1024

/**
 * Background migration: walk about KM_PROC_SHIFT_BUDGET more entries of the owned shard
 * under the pass's cursor (where the last call stopped) for entries of migrating or
 * reverting overrides that are not in the shard their key routes to, and take them out of
 * it (at most max per call): those this worker owns the new place of are loaded there,
 * the others go to out[] with their new owner in to[] for the caller to hand over (or put
 * back). A full pass over every owned shard, under one map epoch, that finds nothing marks
 * the worker clean for that epoch. Counted: shift_walk_steps, shift_walk_entries.
 * @return the moves written to out.
 * @note Context: the owner worker, map held under RCU, once per loop iteration while
 *   km_proc_shift_pending() says so.
 */
unsigned int km_proc_shift_step(struct km_proc *p, const struct km_shardmap *map,
	struct km_shift_move **out, uint16_t *to, unsigned int max);

/**
 * Whether map has overrides migrating or reverting that this worker has not yet found
 * clean: km_proc_shift_step() has work.
 * @note Context: the owner worker, map held under RCU.
 */
int km_proc_shift_pending(const struct km_proc *p, const struct km_shardmap *map);

/**
 * The last map epoch for which this worker found no entry left to move (0: none).
 * Written by the owner worker with release order, read by the control lcore with acquire.
 * @note Context: any thread.
 */
uint32_t km_proc_shift_clean(const struct km_proc *p);

/*
 * Hot-key replication across workers (CREW: concurrent reads, exclusive writes; MICA).
 *
 * An owner worker keeps read copies of a few hot keys (key, value up to value_max bytes,
 * version) in a table every worker reads; the other workers serve GETs (and MGET entries)
 * of those keys from the copy instead of handing them over, so one key can use every
 * core. Only the owner writes its table, each entry under a sequence counter (seqlock);
 * it rewrites a key's copy in the same step as it applies a write to the key, before the
 * reply leaves, so no read after an acknowledged write returns the older value. A copy is
 * withdrawn when its key is deleted, written with a value over value_max, no longer
 * wanted, or its shard leaves the owner (km_proc_crew_withdraw, _revalidate). Replies
 * served from a copy, and the owner's GET replies of a replicated key, carry KM_F_CREW.
 * Which keys: the control lcore, from sampled accesses (KM_PROC_NOTE_CREW notes).
 *
 * The tables are created once, before the workers run, and freed after they stopped; the
 * same struct km_crew is given to every worker's processor.
 */
#define KM_CREW_KEYS_MAX  1024 /* read copies per owner worker, at most */
#define KM_CREW_VALUE_MAX 4096 /* value bytes of one copy, at most */

struct km_crew;

struct km_crew_params {
	uint16_t nb_workers; /* one table per worker */
	uint32_t keys_max;   /* copies per worker, 1..KM_CREW_KEYS_MAX */
	uint32_t value_max;  /* value bytes per copy, 1..KM_CREW_VALUE_MAX */
};

/**
 * @return 0, -EINVAL (a parameter out of range), -ENOMEM.
 * @note Context: any thread, before the workers run.
 */
int km_crew_create(const struct km_crew_params *cp, struct km_crew **out);

/** @note Context: any thread, once no processor uses it any more. */
void km_crew_destroy(struct km_crew *c);

/** value_max it was created with. @note Context: any thread. */
uint32_t km_crew_value_max(const struct km_crew *c);

/**
 * Use the copy tables c (NULL: none): this processor serves GETs of other owners' copies
 * and keeps its own. Sampling starts off (km_proc_crew_sampling).
 * @return 0, -EINVAL (the worker has no table in c), -ENOMEM.
 * @note Context: any thread, before the worker runs.
 */
int km_proc_set_crew(struct km_proc *p, struct km_crew *c);

/**
 * Sample one GET/PUT/CAS/DEL in every (0: none) executed or served from a copy into a
 * KM_PROC_NOTE_CREW note (km_proc_notes()).
 * @note Context: the owner worker.
 */
void km_proc_crew_sampling(struct km_proc *p, uint32_t every);

/**
 * Make a read copy of key, a key this worker owns under map, with its current value.
 * @return 1 made, 0 already there, -EXDEV not owned here, -ENOENT no such key (or damaged),
 *   -EAGAIN its value is not in DRAM now (a store on disk, not cached), -E2BIG value over
 *   value_max, -ENOSPC table (or the key's group of slots) full, -EINVAL.
 * @note Context: the owner worker, at a loop boundary, map held under RCU.
 */
int km_proc_crew_add(
	struct km_proc *p, const struct km_shardmap *map, const uint8_t *key, uint16_t len);

/**
 * Withdraw key's read copy. @return 1 withdrawn, 0 there was none, -EINVAL.
 * @note Context: the owner worker.
 */
int km_proc_crew_remove(struct km_proc *p, const uint8_t *key, uint16_t len);

/**
 * Withdraw the copies of keys of shard_id (0: every copy).
 * @return the copies withdrawn.
 * @note Context: the owner worker; before the shard's store leaves it (detach), and
 *   whenever the copies must go (replication off).
 */
unsigned int km_proc_crew_withdraw(struct km_proc *p, uint64_t shard_id);

/**
 * Withdraw the copies of keys this worker no longer owns under map (a map changed).
 * @return the copies withdrawn.
 * @note Context: the owner worker, map held under RCU.
 */
unsigned int km_proc_crew_revalidate(struct km_proc *p, const struct km_shardmap *map);

/** One read copy, as km_crew_list() sees it. */
struct km_crew_info {
	uint16_t owner;
	uint16_t key_len;
	uint32_t val_len;
	uint64_t version;
	uint64_t shard_id;
	uint8_t key[KM_KEY_MAX];
};

/**
 * The read copies of every worker (an entry being rewritten at that moment is left out).
 * @return the number written to out (at most max).
 * @note Context: any thread (reads the tables as workers do).
 */
uint32_t km_crew_list(const struct km_crew *c, struct km_crew_info *out, uint32_t max);

#endif /* KM_PROC_H */
