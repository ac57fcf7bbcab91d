/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_PROC_PRIVATE_H
#define KM_PROC_PRIVATE_H

/*
 * What the files of lib/proc share; not installed, not for callers.
 *
 *   km_proc.c       creation, the table of owned shards, figures for the control plane
 *   proc_rx.c       the request entry: parse, route, verdict, staged prefetch, execution
 *   proc_exec.c     execution of each op, the at-most-once table, status replies
 *   proc_miss.c     the miss path: deferred replies, reads in flight, group writes, poll
 *   proc_reshard.c  split and merge copies between stores
 *   proc_guard.c    HELLO cookies (address validation), client keys (MACs, permissions)
 *   proc_predict.c  the worker's part of predictive prefetch: stream detector, sampling,
 *                   outcomes of prefetches, budget, notes for the control lcore
 *   proc_crew.c     hot-key replication: read copies, served by every worker
 *
 * Everything here is used by the owner worker only (see km_proc.h).
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <km_stream.h>

#include "km_proc.h"
#include "km_shardmap_fast.h"

#define READ_RESTARTS 4 /* a read whose entry keeps changing answers BUSY after this */
#define PATH_LEN      2048
/* What the GET paths return instead of a reply length when the value needs more room
 * than the request's buffer and the caller can give it (KM_PROC_GROW). */
#define PROC_GROW SIZE_MAX

#define proc_likely(x)   __builtin_expect(!!(x), 1)
#define proc_unlikely(x) __builtin_expect(!!(x), 0)

/*
 * Index of a shard's at-most-once entries (km_proc_dedup_take walks it, not the table):
 * a listing per entry written for the shard, in no particular order. A listing is live
 * when the entry in its slot is valid, of the shard's routing hashes and carries the
 * listing's number (dedup_entry.dseq, from km_proc.dseq): a slot taken over since, or
 * listed again later, is dead there. So indexes are merged by concatenation and a split's
 * halves may both hold the parent's (each keeps what is its own). Dead listings go in a
 * compaction pass that runs a few listings per append (proc_dedup_list_step), so no write
 * waits for a whole pass; a pass starts when the index has doubled since the last one,
 * pauses while the shard is copied by a split or merge, and the array shrinks after a
 * pass that kept little.
 */
struct proc_dlog_ent {
	uint32_t slot, seq;
};

struct proc_dlog {
	struct proc_dlog_ent *e;
	uint32_t n, cap;
	uint32_t keep, scan; /* pass: [0, keep) compacted, [keep, scan) dead, [scan, n) to do */
	uint32_t next;       /* a pass starts once n reaches it */
	uint8_t pass;        /* a pass is under way */
};

/*
 * Owned shard: id -> store, open addressing, linear probing (ids are never 0, 0 marks a
 * free slot); deletion shifts the rest of the cluster back, so no tombstones.
 */
struct km_proc_shard {
	uint64_t id;
	struct km_store *store;
	uint64_t requests;  /* single-key requests executed since attach; worker: rw */
	uint64_t gen;       /* cache tag: unique per attach */
	uint8_t persistent; /* values on disk: cache, reads and writes deferred */
	uint8_t dirty;      /* in the dirty list */
	uint64_t dram;      /* the store's dram_bytes as last counted in p->dram_used */
	struct defer *parked_head, *parked_tail; /* write replies waiting for durability */
	struct km_stream *stream;                /* persistent: KM_STREAM_SET read-ahead
						  * streams (apart: the table stays small) */
	struct proc_dlog dlog;
	struct proc_repl *repl; /* replication to other nodes (proc_export.c), NULL */
};

/*
 * Replication of a shard (km_proc.h, proc_export.c): its streams, the writes numbered, how
 * far every waited stream acknowledged them, and per key slot the last write to it (a GET
 * of a key whose slot is above acked waits: a slot shared by keys only makes it wait
 * longer).
 */
#define PROC_REPL_PEND 256 /* power of 2 */
struct proc_repl {
	struct km_proc_export *x[KM_PROC_REPL_MAX];
	uint8_t nb;
	uint64_t blocked; /* replicas (tags) in sync without a stream: nothing is acknowledged */
	uint64_t rseq;    /* last write numbered */
	uint64_t acked;   /* every write up to it is on every waited replica */
	uint64_t pend[PROC_REPL_PEND];
};

/*
 * A request whose reply waits: for a disk read (a waiter of a struct pend) or for its
 * group write to be durable (parked on its shard). The packet stays the caller's until
 * km_proc_poll() hands the cookie back.
 */
struct defer {
	struct defer *next;
	void *cookie;
	uint8_t *out;
	size_t cap;
	size_t limit;      /* largest reply allowed (km_proc_req.limit) */
	struct km_hdr hdr; /* the request's */
	uint32_t epoch;
	uint64_t seq;  /* parked: the record the reply waits for */
	uint64_t rseq; /* parked: the write the replicas must acknowledge first, 0 */
	size_t len;    /* parked: the reply's length (0: a header) */
	uint64_t src;  /* parked: for the at-most-once entry */
};

/* A disk read in flight, keyed by key: every miss on the key waits on it. */
struct pend {
	struct km_read rd; /* first: rd.op is the completion */
	struct km_proc *p;
	uint64_t shard_id;
	uint64_t gen;
	struct km_key key; /* data points to kbuf */
	uint8_t kbuf[KM_KEY_MAX];
	uint8_t mark; /* started by a prefetch: its mark (0: a demand read) */
	uint8_t late; /* a demand request joined the prefetch (counted once) */
	uint8_t restarts;
	uint64_t t_start; /* km_proc_time() at the start: the read latency */
	uint32_t slot;    /* in the pending hash */
	struct defer *waiters, *waiters_tail;
	struct pend *next_free;
};

/*
 * At-most-once table for writes: direct-mapped by (client address, request id). A retry
 * that finds its own entry gets the recorded outcome instead of a second execution.
 * The window is the last `dedup_mask + 1` writes that did not collide.
 */
struct dedup_entry {
	uint64_t src;
	uint64_t req_id;
	uint64_t key_hash;   /* a reused id with another key is another request */
	uint64_t route_hash; /* the shard the write went to: the entry moves with it */
	uint64_t version;
	uint64_t seq;  /* sync mode: the write's record, 0 = none */
	uint64_t rseq; /* replicated: the write's number (proc_repl), 0 = none */
	uint64_t gen;  /* ... in the store of this shard generation */
	uint8_t op;
	uint8_t status;
	uint8_t valid;
	uint32_t dseq; /* the number of its listing in its shard's index (struct proc_dlog) */
};

/* An entry of the table spans two cache lines at most (8-byte aligned, at most 72
 * bytes): both. */
_Static_assert(sizeof(struct dedup_entry) <= 72 && _Alignof(struct dedup_entry) >= 8,
	"an entry spans two cache lines at most");

static inline void
proc_prefetch_dedup(const struct dedup_entry *e)
{
	__builtin_prefetch(e, 1);
	__builtin_prefetch((const uint8_t *)(e + 1) - 1, 1);
}

/* The at-most-once entries of a shard, handed over with it (km_proc_dedup_take). */
struct km_proc_dedup {
	uint32_t n;
	/*
	 * A replicated shard detached and attached again on this node (another worker, or
	 * back after a failed move) carries what its replicas owed (proc_repl_carry): the
	 * tags of the replicas waited for, blocked at the next attachment until their
	 * streams start there, and the key slots whose last write they had not all
	 * acknowledged. Its entries of such writes wait there too (rseq != 0). Never sent.
	 */
	uint64_t repl_tags;
	uint64_t repl_pend[PROC_REPL_PEND / 64];
	struct dedup_entry e[];
};

/* All fields: the owner worker reads and writes them; cnt is read by others (km_proc.h). */
/* A key a prefetch evicted (hash 0: none), and the mark of that prefetch. */
struct proc_ghost {
	uint64_t hash;
	uint8_t mark;
};

#define PROC_GEN_IDS 1024 /* power of 2 */

/* A shard detached here on its way to another worker, which holds it before the map that
 * says so is published (km_proc_shard_forward): requests for it go there meanwhile. */
struct proc_fwd {
	uint64_t id;    /* 0: free */
	uint32_t epoch; /* dead once the map's epoch reaches it */
	uint16_t to;
};

#define PROC_FWD_MAX 8

struct km_proc {
	struct km_proc_counters cnt;
	uint16_t worker;
	uint8_t overload; /* km_proc_overload(); beside worker, which every request reads */
	uint32_t value_max;
	uint32_t reply_max; /* km_proc_params.reply_max */
	uint32_t store_initial_keys;
	uint8_t store_hugepages; /* km_proc_params.store_hugepages */
	char driver[32];

	struct km_proc_shard *shards;
	uint32_t shards_mask;
	uint32_t nb_shards;

	struct dedup_entry *dedup;
	uint32_t dedup_mask;

	/* Shards in transit to another worker (km_proc_shard_forward). */
	struct proc_fwd fwd[PROC_FWD_MAX];
	uint32_t fwd_next; /* the slot the next one takes when none is free */
	uint8_t nb_fwd;    /* slots with an id */

	/* Persistent drivers. */
	struct km_io *io;
	struct km_cache *cache;
	uint64_t gen_next;
	uint32_t dseq;         /* the last at-most-once listing's number (struct proc_dlog) */
	uint64_t version_base; /* km_proc_params.version_base */
	uint64_t dram_max;     /* km_proc_params.dram_max */
	uint64_t dram_used;    /* the shards' dram, summed */
	/* gen -> shard id of attached shards, direct-mapped: the cache names a shard by gen. */
	struct {
		uint64_t gen, id;
	} gen_ids[PROC_GEN_IDS];
	char dir[PATH_LEN], cold_dir[PATH_LEN];
	uint8_t durability, route_sep, route_depth;
	uint32_t sync_interval_ms, write_buffer;
	struct pend *pends; /* pending_max */
	struct pend *pend_free;
	struct pend **pend_tab; /* hash of reads in flight, 2 * pending_max slots, pow2 */
	uint32_t pend_mask, nb_pend, pending_max;
	struct defer *defers; /* defer_max */
	struct defer *defer_free;
	uint32_t nb_defer, defer_max;
	struct km_proc_done *ready; /* ready_cap entries (grows), FIFO */
	uint32_t ready_head, ready_n, ready_cap;
	uint64_t *dirty; /* shard ids with writes to flush */
	uint32_t nb_dirty, dirty_cap;
	uint8_t closing; /* km_proc_destroy(): completions only release */

	/* Predictive prefetch (proc_predict.c). */
	struct km_proc_pf_params pf;
	uint32_t sample_mask; /* a client is sampled when its hash & mask == 0 */
	uint32_t pf_inflight; /* prefetch reads in flight (pends with a mark) */
	uint64_t now_ns;      /* km_proc_time() */
	uint64_t hello_slot;  /* cookie slot of now_ns (hello != NULL): km_proc_time() */
	uint64_t read_ns;     /* read latency, EWMA 1/8 */
	struct km_stream_ctx sctx;
	struct km_proc_note *notes; /* KM_PROC_NOTES_MAX, FIFO */
	uint32_t notes_head, notes_n;
	struct proc_ghost *ghost;  /* keys prefetches evicted, direct-mapped */
	struct km_stream_key *pfq; /* stream prefetches waiting for km_proc_prefetch_run() */
	uint8_t *pfq_mark;
	uint32_t pfq_n;
	uint8_t again;      /* the request executing is km_proc_req.again */
	uint8_t pf_filling; /* the mark of a prefetched value being cached (its evictions are its
			     harm), 0 */

	/* Address validation and client keys (proc_guard.c). */
	const struct km_hello_secrets *hello;
	const struct km_auth *auth;
	struct proc_cookie_seen *seen; /* cookies verified lately, direct-mapped by source */

	/* Incremental split and merge (proc_mig.c): the one in progress, NULL; migp: its
	 * progress for the control lcore (relaxed atomic stores; read by others). */
	struct proc_mig *mig;
	struct km_mig_progress migp;
	/* Live export of a shard to another node (proc_export.c), NULL. */
	struct km_proc_export *xp;
	/* Replication (proc_export.c): shards with a struct proc_repl, replies wait for it. */
	uint64_t *repl_ids;
	uint32_t nb_repl, repl_cap;
	uint8_t repl_async;               /* replies do not wait for the replicas */
	const _Atomic uint64_t *lease_ns; /* km_proc_repl_lease(), NULL: none */
	/* The partition shifter's background pass (proc_shift.c). */
	uint32_t shift_epoch;         /* map epoch of the pass under way (0: start over) */
	uint32_t shift_cursor;        /* slot of shards[] it walks */
	uint32_t shift_found;         /* entries it took out so far */
	_Atomic uint32_t shift_clean; /* km_proc_shift_clean(); worker: rw, others: ro */
	struct {
		uint64_t gen;           /* km_proc_shard.gen of the store pos belongs to (unique
					 * per attach, unlike a store's address), 0: none */
		struct km_walk_pos pos; /* where its walk resumes */
	} shift_walk;
	/* Hot-key replication (proc_crew.c). */
	struct km_crew *crew; /* every worker's copy tables (shared), NULL: none */
	uint32_t crew_own;    /* copies in this worker's own table */
	uint32_t crew_every;  /* sample one access in this many (0: off) */
	uint32_t crew_left;   /* accesses until the next sample */

	uint8_t scratch[KM_DGRAM_MAX]; /* MGET replies are built here: they outgrow requests */
};

/* A cookie found valid for a source in slot `slot` (the one it was made in). */
struct proc_cookie_seen {
	uint64_t src;
	uint64_t cookie;
	uint64_t slot;
};

#define PROC_COOKIE_SEEN 1024 /* power of 2 */

static inline uint32_t
id_slot(uint64_t id, uint32_t mask)
{
	return (uint32_t)((id * 0x9e3779b97f4a7c15ULL) >> 32) & mask;
}

static inline struct km_proc_shard *
shard_find(const struct km_proc *p, uint64_t id)
{
	uint32_t i = id_slot(id, p->shards_mask);

	for (;; i = (i + 1) & p->shards_mask) {
		if (p->shards[i].id == id)
			return &p->shards[i];
		if (p->shards[i].id == 0)
			return NULL;
	}
}

/* proc_mig.c */
struct km_proc_shard *proc_shard_resharded(struct km_proc *p, uint64_t id, uint64_t hash);
void proc_mig_mirror(struct km_proc *p, const struct km_shardmap *map, uint64_t shard_id,
	const struct km_key *k, uint8_t op, const void *val, uint32_t len, uint64_t version);
void proc_mig_durable_failed(struct km_proc *p, uint64_t shard_id);
void proc_mig_detaching(struct km_proc *p, uint64_t shard_id);

/* proc_export.c: the hooks of the export in progress (p->xp). */
void proc_export_write(struct km_proc *p, uint64_t shard_id, const struct km_key *k, uint8_t op,
	const void *val, uint32_t len, uint64_t version);
void proc_export_durable_failed(struct km_proc *p, uint64_t shard_id);
void proc_export_detached(struct km_proc *p, uint64_t shard_id, struct km_store *s);
/* Replication hooks: before a write (0, or -EBUSY: the window is full), after it (its
 * number, 0 when not replicated), a GET's wait (the write to wait for, 0), the shard's
 * detach (streams fail, state freed). */
int proc_repl_admit(
	struct km_proc *p, struct km_proc_shard *sl, const struct km_key *k, uint32_t len);
uint64_t proc_repl_write(struct km_proc *p, struct km_proc_shard *sl, const struct km_key *k,
	uint8_t op, const void *val, uint32_t len, uint64_t version, uint64_t src, uint64_t req_id,
	uint64_t route_hash, uint8_t status);
/* A replicated shard serves only while this node's lease surely lives (a failover may
 * promote a replica once it expired). */
static inline int
proc_repl_fenced(const struct km_proc *p, const struct km_proc_shard *sl)
{
	return sl->repl != NULL && p->lease_ns != NULL &&
	       p->now_ns > atomic_load_explicit(p->lease_ns, memory_order_relaxed);
}

static inline uint64_t
proc_repl_read_wait(const struct km_proc *p, const struct km_proc_shard *sl, uint64_t hash)
{
	uint64_t w;

	if (sl->repl == NULL || p->repl_async)
		return 0;
	w = sl->repl->pend[hash & (PROC_REPL_PEND - 1)];
	return w > sl->repl->acked ? w : 0;
}
void proc_repl_detached(struct km_proc *p, struct km_proc_shard *sl);
void proc_repl_rolled_back(struct km_proc *p, struct km_proc_shard *sl);
/* A copy of sl's at-most-once entries (NULL: none, or no memory when sl has some). */
struct km_proc_dedup *proc_dedup_copy(struct km_proc *p, struct km_proc_shard *sl);
uint64_t proc_repl_carry(struct proc_repl *r, uint64_t *pend, uint64_t *acked);
struct km_proc_dedup *proc_repl_carry_put(struct km_proc *p, struct km_proc_dedup *set,
	uint64_t tags, const uint64_t *pend, uint64_t acked);
uint64_t proc_repl_carried(
	struct km_proc *p, struct km_proc_shard *sl, const struct km_proc_dedup *set);
void proc_repl_poll(struct km_proc *p);
uint64_t proc_repl_acked(struct proc_repl *r);
int proc_repl_parked(const struct km_proc *p);
/* Release the replies parked on sl that are durable and acknowledged. */
void proc_parked_release(struct km_proc *p, struct km_proc_shard *sl);
/* Park a reply built at d->out until write rseq of sl is acknowledged (d filled). */
void proc_park_defer(struct km_proc_shard *sl, struct defer *d);

/*
 * Table entry of a shard if this worker owns it and holds its store. A shard this worker
 * has just split or merged is not in the table any more while the map that says so is not
 * published: the request goes to the child or parent holding its routing hash.
 */
static inline struct km_proc_shard *
owned_shard(struct km_proc *p, const struct km_shard *sh, uint64_t hash)
{
	struct km_proc_shard *sl;

	if (km_shard_owner_fast(sh) != p->worker)
		return NULL;
	sl = shard_find(p, km_shard_id_fast(sh));
	if (proc_likely(sl != NULL))
		return sl;
	return proc_shard_resharded(p, km_shard_id_fast(sh), hash);
}

/*
 * Route of a key through the shard map's one routing function (the same as libkeymap's),
 * plus the hash of the whole key that indexes the store. Most keys route by all their
 * bytes: then the key hash is the routing hash, computed once.
 */
static inline void
route_of(const struct km_shardmap *m, const uint8_t *key, size_t len, struct km_route *rt)
{
	struct km_shardmap_route sr;

	km_route_key(m, key, len, &sr);
	rt->hash = sr.hash;
	rt->shard = sr.shard;
	rt->fallback = sr.fallback;
	rt->key_hash = sr.route_len == len ? sr.hash : km_key_hash(key, len);
}

static inline void
key_init(struct km_key *k, const uint8_t *key, size_t len, const struct km_route *rt)
{
	k->data = key;
	k->len = (uint16_t)len;
	k->hash = rt->key_hash;
}

static inline struct dedup_entry *
dedup_slot(struct km_proc *p, uint64_t src, uint64_t req_id)
{
	uint64_t h = (src ^ (req_id * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;

	return &p->dedup[(h >> 32) & p->dedup_mask];
}

/* The at-most-once record of write req with key hash key_hash from src, or NULL. */
static inline struct dedup_entry *
dedup_find(struct km_proc *p, uint64_t src, const struct km_hdr *req, uint64_t key_hash)
{
	struct dedup_entry *d = dedup_slot(p, src, req->req_id);

	return d->valid && d->src == src && d->req_id == req->req_id && d->op == req->op &&
			       d->key_hash == key_hash
		       ? d
		       : NULL;
}

void proc_dedup_list_step(struct km_proc *p, struct km_proc_shard *sl);

/* List slot `slot` of p->dedup, just written for shard sl, in sl's index (O(1): a few
 * positions of a compaction pass while one is under way, see struct proc_dlog). */
static inline void
proc_dedup_listed(struct km_proc *p, struct km_proc_shard *sl, uint32_t slot)
{
	struct proc_dlog *l = &sl->dlog;

	p->dedup[slot].dseq = ++p->dseq;
	if (proc_unlikely(l->pass || l->n >= l->next || l->n == l->cap)) {
		proc_dedup_list_step(p, sl);
		if (l->n == l->cap)
			return; /* no memory: a move then leaves it behind (its retry executes) */
	}
	l->e[l->n++] = (struct proc_dlog_ent){.slot = slot, .seq = p->dseq};
}

/* Forget the at-most-once outcome of (src, req_id): it is not the outcome any more. */
static inline void
dedup_forget(struct km_proc *p, uint64_t src, uint64_t req_id)
{
	struct dedup_entry *e = dedup_slot(p, src, req_id);

	if (e->valid && e->src == src && e->req_id == req_id)
		e->valid = 0;
}

static inline int
op_single_key(uint8_t op)
{
	return op == KM_OP_GET || op == KM_OP_PUT || op == KM_OP_CAS || op == KM_OP_DEL;
}

/* Count a write request (PUT, CAS or DEL) by its op. */
static inline void
proc_count_write(struct km_proc *p, uint8_t op)
{
	if (op == KM_OP_PUT)
		p->cnt.req_put++;
	else if (op == KM_OP_CAS)
		p->cnt.req_cas++;
	else
		p->cnt.req_del++;
}

/* proc_guard.c */
int proc_guard_init(struct km_proc *p);
void proc_guard_fini(struct km_proc *p);
uint8_t proc_auth_check(struct km_proc *p, const struct km_proc_req *r);
int proc_cookie_valid(struct km_proc *p, uint64_t src, const struct km_msg *m);
size_t proc_exec_hello(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	uint64_t src, uint8_t *out);

/* Ops whose reply may be larger than their request: they need a cookie. */
static inline int
op_may_grow(uint8_t op)
{
	return op == KM_OP_GET || op == KM_OP_MGET || op == KM_OP_MAP || op == KM_OP_SCAN;
}

/* proc_exec.c */
size_t proc_reply_status(const struct km_hdr *req, uint8_t status, uint32_t epoch, uint8_t *out);
size_t proc_reply_denied(const struct km_hdr *req, uint8_t reason, uint32_t epoch, uint8_t *out);
void proc_count_status(struct km_proc *p, uint8_t status);
uint8_t proc_status_of_rc(struct km_proc *p, int rc, int read);
size_t proc_value_reply(struct km_proc *p, const struct km_hdr *req, uint32_t epoch,
	const struct km_value_ref *v, uint8_t *out, size_t cap, size_t limit);
/* Execute r as a request of its route (r->rt, r->key, r->shd: NULL when its shard is not
 * owned or not attached here) and set its verdict: REPLY (reply_len bytes at buf), DEFER
 * (the reply waits for the disk) or GROW (it needs a larger buffer). */
void proc_exec_req(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r);

/* proc_miss.c */
void proc_store_durable(void *arg, uint64_t shard_id, uint64_t seq, int err);
void proc_parked_fail(struct km_proc *p, struct km_proc_shard *sl, uint8_t status);
size_t proc_get_persistent(struct km_proc *p, const struct km_shardmap *map,
	const struct km_msg *req, const struct km_key *k, struct km_proc_shard *shd, void *cookie,
	uint8_t *out, size_t cap, size_t limit, uint8_t *acc);
int proc_read_key(struct km_proc *p, struct km_proc_shard *sl, const struct km_key *k,
	struct defer *d, uint8_t mark, struct km_value_ref *v);
void proc_cache_fill(struct km_proc *p, const struct km_key *k, uint64_t gen,
	const struct km_value_ref *v, uint8_t mark);
void proc_ghost_clear(struct km_proc *p, uint64_t hash);
void proc_mark_dirty(struct km_proc *p, struct km_proc_shard *sl);
int proc_read_pending(struct km_proc *p, const struct km_key *k);
void proc_written_persistent(struct km_proc *p, struct km_proc_shard *shd, const struct km_msg *req,
	const struct km_key *k, uint64_t version);
size_t proc_park_read(struct km_proc *p, struct km_proc_shard *shd, const struct km_msg *req,
	uint32_t epoch, uint64_t rseq, void *cookie, uint8_t *out, size_t cap, size_t limit,
	size_t len);
size_t proc_park_reply(struct km_proc *p, struct km_proc_shard *shd, const struct km_msg *req,
	uint32_t epoch, uint64_t seq, uint64_t rseq, uint64_t src, void *cookie, uint8_t *out,
	size_t cap);

/* proc_shift.c: verdicts of the partition shifter's requests (a route with a fallback,
 * or a KM_HAND_* mark past PLAIN). stage1: @return 0 verdict final, 1 go on with *target
 * (p->worker: executed here, by proc_shift_exec() when r->shift is set). */
int proc_shift_stage1(
	struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r, int *target);
void proc_shift_exec(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r);

/* proc_predict.c */
/* Whether accesses feed prediction (stream detector or sampling). */
static inline int
proc_pf_on(const struct km_proc *p)
{
	return p->pf.stream || p->pf.sample_every != 0;
}

int proc_pf_init(struct km_proc *p);
void proc_pf_fini(struct km_proc *p);
void proc_pf_access(struct km_proc *p, const struct km_shardmap *map, struct km_proc_shard *shd,
	const struct km_key *k, const struct km_hdr *req, uint64_t src, uint8_t acc);
void proc_pf_used(struct km_proc *p, struct km_proc_shard *shd, uint8_t mark);
void proc_pf_late(struct km_proc *p, struct km_proc_shard *shd, uint8_t mark);
void proc_pf_read_done(struct km_proc *p, uint64_t t_start);
int proc_prefetch(struct km_proc *p, const struct km_shardmap *map, const uint8_t *key,
	uint16_t len, uint8_t mark);

/* proc_predict.c: a new note at the end of the buffer, header zeroed, or NULL (full:
 * counted). */
struct km_proc_note *proc_note_new(struct km_proc *p, uint8_t type);

/* proc_crew.c */
void proc_crew_written(struct km_proc *p, const struct km_key *k, const uint8_t *val, uint32_t len,
	uint64_t version);
int proc_crew_has(const struct km_proc *p, uint64_t h);
int proc_crew_read(struct km_proc *p, uint16_t owner, const struct km_key *k, uint8_t *buf,
	struct km_value_ref *v);
int proc_crew_route(
	struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r, uint16_t owner);
int proc_crew_mget_entry(struct km_proc *p, const struct km_route *rt, const struct km_key *k,
	uint8_t *buf, struct km_value_ref *v);
void proc_crew_sample(
	struct km_proc *p, const struct km_key *k, uint8_t op, uint64_t shard_id, uint16_t owner);

#endif /* KM_PROC_PRIVATE_H */
