/* SPDX-License-Identifier: BSD-3-Clause */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "km_proc.h"

#define DEDUP_DEFAULT   65536
#define CACHE_DEFAULT   (UINT64_C(64) << 20)
#define PENDING_DEFAULT 256
#define DEFER_DEFAULT   1024
#define IO_ENTRIES      512
#define READ_RESTARTS   4 /* a read whose entry keeps changing answers BUSY after this */
#define PATH_LEN        2048

/*
 * Requests of a burst between the record prefetch of a request and its execution: enough
 * for the record to arrive while the ones before it execute, few enough that the lines in
 * flight (two per record) stay within the core's miss buffers. keymap-proc-bench, bursts
 * of 32, 1 M keys, median TSC cycles per GET: 4 -> 236, 6 -> 233, 8 -> 234, 12 -> 240,
 * 16 -> 269, all 32 prefetched before the first executes -> 316 (at 100 k keys: ~190 for
 * all).
 */
#define PREFETCH_AHEAD 8

const char *const km_proc_counter_names[] = {
#define KM_X(name, help) #name,
	KM_PROC_COUNTERS(KM_X)
#undef KM_X
};

const char *const km_proc_counter_help[] = {
#define KM_X(name, help) help,
	KM_PROC_COUNTERS(KM_X)
#undef KM_X
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
	struct defer *parked_head, *parked_tail; /* write replies waiting for durability */
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
	struct km_hdr hdr; /* the request's */
	uint32_t epoch;
	uint64_t seq; /* parked: the record the reply waits for */
	uint64_t src; /* parked: for the at-most-once entry */
};

/* A disk read in flight, keyed by key: every miss on the key waits on it. */
struct pend {
	struct km_read rd; /* first: rd.op is the completion */
	struct km_proc *p;
	uint64_t shard_id;
	uint64_t gen;
	struct km_key key; /* data points to kbuf */
	uint8_t kbuf[KM_KEY_MAX];
	uint8_t prefetch; /* started by a prefetch */
	uint8_t restarts;
	uint32_t slot; /* in the pending hash */
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
	uint64_t version;
	uint64_t seq; /* sync mode: the write's record, 0 = none */
	uint64_t gen; /* ... in the store of this shard generation */
	uint8_t op;
	uint8_t status;
	uint8_t valid;
};

struct km_proc {
	struct km_proc_counters cnt; /* worker: rw, others: ro (see km_proc.h) */
	uint16_t worker;
	uint32_t value_max;
	uint32_t store_initial_keys;
	char driver[32];

	struct km_proc_shard *shards;
	uint32_t shards_mask;
	uint32_t nb_shards;

	struct dedup_entry *dedup;
	uint32_t dedup_mask;

	/* Persistent drivers. */
	struct km_io *io;
	struct km_cache *cache;
	uint64_t gen_next;
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

	uint8_t scratch[KM_DGRAM_MAX]; /* MGET replies are built here: they outgrow requests */
};

static void store_durable(void *arg, uint64_t shard_id, uint64_t seq, int err);
static void parked_fail(struct km_proc *p, struct km_proc_shard *sl, uint8_t status);

static inline uint32_t
id_slot(uint64_t id, uint32_t mask)
{
	return (uint32_t)((id * 0x9e3779b97f4a7c15ULL) >> 32) & mask;
}

static int
persist_init(struct km_proc *p, const struct km_proc_params *prm)
{
	uint32_t i, slots;
	int rc;

	if (prm->dir == NULL || prm->cold_dir == NULL || strlen(prm->dir) >= PATH_LEN ||
		strlen(prm->cold_dir) >= PATH_LEN)
		return -EINVAL;
	strcpy(p->dir, prm->dir);
	strcpy(p->cold_dir, prm->cold_dir);
	p->durability = prm->durability;
	p->route_sep = prm->route_sep;
	p->route_depth = prm->route_depth;
	p->sync_interval_ms = prm->sync_interval_ms;
	p->write_buffer = prm->write_buffer;
	p->pending_max = prm->pending_max ? prm->pending_max : PENDING_DEFAULT;
	p->defer_max = prm->defer_max ? prm->defer_max : DEFER_DEFAULT;
	rc = km_cache_create(prm->cache_bytes ? prm->cache_bytes : CACHE_DEFAULT, &p->cache);
	if (rc < 0)
		return rc;
	rc = km_io_create(IO_ENTRIES, &p->io);
	if (rc < 0)
		return rc;
	for (slots = 2; slots < 2 * p->pending_max; slots *= 2)
		;
	p->pend_mask = slots - 1;
	p->pend_tab = calloc(slots, sizeof(*p->pend_tab));
	p->pends = calloc(p->pending_max, sizeof(*p->pends));
	p->defers = calloc(p->defer_max, sizeof(*p->defers));
	p->ready_cap = p->defer_max;
	p->ready = calloc(p->ready_cap, sizeof(*p->ready));
	if (p->pend_tab == NULL || p->pends == NULL || p->defers == NULL || p->ready == NULL)
		return -ENOMEM;
	for (i = 0; i < p->pending_max; i++) {
		p->pends[i].next_free = p->pend_free;
		p->pend_free = &p->pends[i];
	}
	for (i = 0; i < p->defer_max; i++) {
		p->defers[i].next = p->defer_free;
		p->defer_free = &p->defers[i];
	}
	return 0;
}

int
km_proc_create(const struct km_proc_params *prm, struct km_proc **out)
{
	struct km_proc *p;
	uint32_t n = prm->dedup_entries == 0 ? DEDUP_DEFAULT : prm->dedup_entries;

	if (prm->value_max > KM_VALUE_MAX || (n & (n - 1)) != 0 || prm->store_driver == NULL ||
		strlen(prm->store_driver) >= sizeof(p->driver))
		return -EINVAL;
	if (km_store_driver(prm->store_driver) == NULL)
		return -ENOENT;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	p->worker = prm->worker;
	p->value_max = prm->value_max;
	p->store_initial_keys = prm->store_initial_keys;
	strcpy(p->driver, prm->store_driver);
	p->shards_mask = 15;
	p->shards = calloc(p->shards_mask + 1, sizeof(*p->shards));
	p->dedup_mask = n - 1;
	p->dedup = calloc(n, sizeof(*p->dedup));
	if (p->shards == NULL || p->dedup == NULL) {
		km_proc_destroy(p);
		return -ENOMEM;
	}
	if (km_store_driver(prm->store_driver)->read_start != NULL) {
		int rc = persist_init(p, prm);

		if (rc < 0) {
			km_proc_destroy(p);
			return rc;
		}
	}
	*out = p;
	return 0;
}

void
km_proc_destroy(struct km_proc *p)
{
	uint32_t i;

	if (p == NULL)
		return;
	/* From here on a completion only releases: no shard is looked at any more. */
	p->closing = 1;
	if (p->shards != NULL)
		for (i = 0; i <= p->shards_mask; i++)
			if (p->shards[i].store != NULL) {
				if (p->shards[i].persistent)
					p->shards[i].store->ops->bind(
						p->shards[i].store, NULL, NULL, NULL);
				km_store_destroy(p->shards[i].store);
			}
	/* Reads still in flight complete into their pend: wait for them before it goes. */
	km_io_destroy(p->io);
	if (p->pends != NULL)
		for (i = 0; i < p->pending_max; i++)
			km_store_read_free(&p->pends[i].rd);
	km_cache_destroy(p->cache);
	free(p->pend_tab);
	free(p->pends);
	free(p->defers);
	free(p->ready);
	free(p->dirty);
	free(p->shards);
	free(p->dedup);
	free(p);
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

static int
shard_table_grow(struct km_proc *p)
{
	uint32_t mask = p->shards_mask * 2 + 1, i, j;
	struct km_proc_shard *t = calloc(mask + 1, sizeof(*t));

	if (t == NULL)
		return -ENOMEM;
	for (i = 0; i <= p->shards_mask; i++) {
		if (p->shards[i].id == 0)
			continue;
		for (j = id_slot(p->shards[i].id, mask); t[j].id != 0; j = (j + 1) & mask)
			;
		t[j] = p->shards[i];
	}
	free(p->shards);
	p->shards = t;
	p->shards_mask = mask;
	return 0;
}

/* Empty slot `hole`, then move back every following entry of the cluster whose home is
 * not between the hole and itself, so that no probe sequence crosses an empty slot. */
static void
shard_table_remove(struct km_proc *p, uint32_t hole)
{
	uint32_t mask = p->shards_mask, j = hole, dist;

	for (;;) {
		j = (j + 1) & mask;
		if (p->shards[j].id == 0)
			break;
		dist = (j - id_slot(p->shards[j].id, mask)) & mask;
		if (dist >= ((j - hole) & mask)) {
			p->shards[hole] = p->shards[j];
			hole = j;
		}
	}
	p->shards[hole] = (struct km_proc_shard){0};
}

int
km_proc_shard_attach(struct km_proc *p, uint64_t shard_id, struct km_store *s)
{
	uint32_t i;
	int rc;

	if (shard_id == 0 || s == NULL)
		return -EINVAL;
	if (shard_find(p, shard_id) != NULL)
		return -EEXIST;
	/* Keep the table at most half full so probes stay short. */
	if ((p->nb_shards + 1) * 2 > p->shards_mask + 1) {
		rc = shard_table_grow(p);
		if (rc < 0)
			return rc;
	}
	for (i = id_slot(shard_id, p->shards_mask); p->shards[i].id != 0;
		i = (i + 1) & p->shards_mask)
		;
	p->shards[i] = (struct km_proc_shard){
		.id = shard_id,
		.store = s,
		.gen = ++p->gen_next,
		.persistent = km_store_persistent(s) && p->io != NULL,
	};
	p->nb_shards++;
	if (p->shards[i].persistent)
		s->ops->bind(s, p->io, store_durable, p);
	return 0;
}

struct km_store *
km_proc_shard_detach(struct km_proc *p, uint64_t shard_id, uint64_t *requests)
{
	struct km_proc_shard *sl;
	struct km_store *s;

	/* Id 0 would "find" the first free slot. */
	if (shard_id == 0)
		return NULL;
	sl = shard_find(p, shard_id);
	if (sl == NULL)
		return NULL;
	s = sl->store;
	if (requests != NULL)
		*requests = sl->requests;
	if (sl->persistent) {
		/* Write out and wait: the replies parked on the shard are released (or
		 * failed) through store_durable() meanwhile. Reads in flight find the shard
		 * gone when they complete and answer BUSY. */
		s->ops->bind(s, NULL, NULL, NULL);
		sl = shard_find(p, shard_id);
		parked_fail(p, sl, KM_ST_BUSY);
	}
	shard_table_remove(p, (uint32_t)(sl - p->shards));
	p->nb_shards--;
	return s;
}

static int
store_create(const struct km_proc *p, uint64_t shard_id, uint64_t version_base, uint8_t mode,
	uint8_t tier, struct km_store **out)
{
	struct km_store_params sp = {
		.shard_id = shard_id,
		.value_max = p->value_max,
		.initial_keys = p->store_initial_keys,
		.version_base = version_base,
		.socket_id = -1,
		.dir = p->dir,
		.cold_dir = p->cold_dir,
		.durability = p->durability,
		.tier = tier,
		.mode = mode,
		.route_sep = p->route_sep,
		.route_depth = p->route_depth,
		.sync_interval_ms = p->sync_interval_ms,
		.write_buffer = p->write_buffer,
	};

	if (shard_id == 0 || out == NULL || tier > KM_TIER_COLD)
		return -EINVAL;
	return km_store_create(p->driver, &sp, out);
}

int
km_proc_store_new(
	const struct km_proc *p, uint64_t shard_id, uint64_t version_base, struct km_store **out)
{
	return store_create(p, shard_id, version_base, KM_STORE_STAGE, KM_TIER_HOT, out);
}

int
km_proc_store_stage(const struct km_proc *p, uint64_t shard_id, uint64_t version_base, uint8_t tier,
	struct km_store **out)
{
	return store_create(p, shard_id, version_base, KM_STORE_STAGE, tier, out);
}

int
km_proc_shard_add(struct km_proc *p, uint64_t shard_id)
{
	struct km_store *s;
	int rc;

	if (shard_id == 0)
		return -EINVAL;
	/* Checked before the store is created: creating one only to drop it costs more. */
	if (shard_find(p, shard_id) != NULL)
		return -EEXIST;
	rc = store_create(p, shard_id, 0, KM_STORE_OPEN, KM_TIER_HOT, &s);
	if (rc < 0)
		return rc;
	rc = km_proc_shard_attach(p, shard_id, s);
	if (rc < 0)
		km_store_destroy(s);
	return rc;
}

struct km_store *
km_proc_shard_store(struct km_proc *p, uint64_t shard_id)
{
	struct km_proc_shard *sl = shard_find(p, shard_id);

	return sl == NULL ? NULL : sl->store;
}

uint32_t
km_proc_nb_shards(const struct km_proc *p)
{
	return p->nb_shards;
}

void
km_proc_store_stats(const struct km_proc *p, struct km_store_stats *st)
{
	struct km_store_stats one;
	uint32_t i;

	memset(st, 0, sizeof(*st));
	for (i = 0; i <= p->shards_mask; i++) {
		if (p->shards[i].store == NULL)
			continue;
		km_store_stats(p->shards[i].store, &one);
		st->keys += one.keys;
		st->value_bytes += one.value_bytes;
		st->index_bytes += one.index_bytes;
		st->entry_overhead_bytes += one.entry_overhead_bytes;
		if (one.version_last > st->version_last)
			st->version_last = one.version_last;
		st->file_bytes += one.file_bytes;
		st->dead_bytes += one.dead_bytes;
		st->replayed += one.replayed;
		st->skipped_crc += one.skipped_crc;
		st->torn_bytes += one.torn_bytes;
		st->disk_reads += one.disk_reads;
		st->disk_read_errors += one.disk_read_errors;
		st->write_batches += one.write_batches;
		st->fsyncs += one.fsyncs;
		st->write_errors += one.write_errors;
		st->writes_lost += one.writes_lost;
	}
}

uint32_t
km_proc_shard_infos(const struct km_proc *p, struct km_shard_info *out, uint32_t max)
{
	const struct km_proc_shard *sl;
	struct km_store_stats st;
	uint32_t i, n = 0;

	for (i = 0; i <= p->shards_mask && n < max; i++) {
		sl = &p->shards[i];
		if (sl->id == 0)
			continue;
		km_store_stats(sl->store, &st);
		out[n++] = (struct km_shard_info){
			.id = sl->id,
			.requests = sl->requests,
			.keys = st.keys,
			.bytes = st.value_bytes,
			.version_last = st.version_last,
			.tier = st.tier,
			.file_bytes = st.file_bytes,
			.dead_bytes = st.dead_bytes,
			.st = st,
		};
	}
	return p->nb_shards;
}

const struct km_proc_counters *
km_proc_counters(const struct km_proc *p)
{
	return &p->cnt;
}

/*
 * Both hashes of a key, with one scan for the routing part. Most keys route by all their
 * bytes: then the routing hash is the key hash. The one place the server routes a key;
 * rt->hash equals km_shardmap_hash() (XXH3 of the routing part), which clients use.
 */
static inline void
route_of(const struct km_shardmap *m, const uint8_t *key, size_t len, struct km_route *rt)
{
	size_t rlen = km_shardmap_route_len(m, key, len);

	rt->hash = km_key_hash(key, rlen);
	rt->key_hash = rlen == len ? rt->hash : km_key_hash(key, len);
}

int
km_proc_target(const struct km_shardmap *map, const struct km_msg *req, int port_worker,
	struct km_route *rt)
{
	const struct km_shard *sh;
	const uint8_t *key = req->key;
	uint8_t klen;

	switch (req->hdr.op) {
	case KM_OP_GET:
	case KM_OP_PUT:
	case KM_OP_CAS:
	case KM_OP_DEL:
		route_of(map, key, req->hdr.key_len, rt);
		break;
	case KM_OP_MGET: {
		/* An MGET belongs to the owner of its first key; the client groups by owner. */
		struct km_mget_iter it;

		if (km_mget_req_begin(&it, req->val, req->hdr.val_len) < 0 ||
			km_mget_req_next(&it, &key, &klen) == 0) {
			rt->hash = rt->key_hash = 0;
			rt->shard = NULL;
			return KM_TARGET_ANY; /* execute answers BAD_REQUEST */
		}
		route_of(map, key, klen, rt);
		break;
	}
	default:
		rt->hash = rt->key_hash = 0;
		rt->shard = NULL;
		return KM_TARGET_ANY;
	}
	sh = km_shardmap_lookup(map, rt->hash);
	rt->shard = sh;
	/* A client with an old map that also picked the wrong worker must learn the new map;
	 * an up-to-date (or unsteered, epoch 0) client is served through the hand-off. */
	if (req->hdr.epoch != 0 && req->hdr.epoch != map->epoch && port_worker >= 0 &&
		port_worker != sh->owner)
		return KM_TARGET_MOVED;
	return sh->owner;
}

static inline void
reply_hdr(struct km_hdr *h, const struct km_hdr *req, uint8_t status, uint32_t epoch)
{
	*h = (struct km_hdr){
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = req->op,
		.status = status,
		.flags = KM_F_REPLY,
		.epoch = epoch,
		.req_id = req->req_id,
	};
}

size_t
km_proc_reply_status(const struct km_hdr *req, uint8_t status, uint32_t epoch, uint8_t *out)
{
	struct km_hdr h;

	reply_hdr(&h, req, status, epoch);
	km_hdr_encode(out, &h);
	return KM_HDR_LEN;
}

void
km_proc_count_status(struct km_proc *p, uint8_t status)
{
	switch (status) {
	case KM_ST_BAD_REQUEST:
		p->cnt.bad_request++;
		break;
	case KM_ST_TOO_LARGE:
		p->cnt.too_large++;
		break;
	case KM_ST_MOVED:
		p->cnt.moved++;
		break;
	default:
		break;
	}
}

/* Table entry of a shard if this worker owns it and holds its store. */
static inline struct km_proc_shard *
owned_shard(struct km_proc *p, const struct km_shard *sh)
{
	if (sh->owner != p->worker)
		return NULL;
	return shard_find(p, sh->id);
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

static uint8_t
status_of_store_rc(struct km_proc *p, int rc)
{
	switch (rc) {
	case 0:
		return KM_ST_OK;
	case -ENOENT:
		return KM_ST_NOT_FOUND;
	case -ESTALE:
	case -EEXIST:
		p->cnt.cas_mismatch++;
		return KM_ST_VERSION_MISMATCH;
	case -E2BIG:
		p->cnt.too_large++;
		return KM_ST_TOO_LARGE;
	case -EINVAL:
		p->cnt.bad_request++;
		return KM_ST_BAD_REQUEST;
	case -EBUSY:
		p->cnt.busy_backlog++;
		return KM_ST_BUSY;
	default:
		p->cnt.store_error++;
		return KM_ST_ERROR;
	}
}

/*
 * BUSY for a single-key request whose shard has no store here. If the map gives the shard
 * to this worker, its store is being handed over (detached, copied for a split or merge,
 * not attached yet): the client retries after a back-off. If not, the caller broke
 * km_proc_execute()'s contract: a server error.
 */
static size_t
reply_busy(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_shard *sh, uint8_t *out)
{
	if (sh->owner == p->worker)
		p->cnt.busy_handover++;
	else
		p->cnt.store_error++;
	return km_proc_reply_status(&req->hdr, KM_ST_BUSY, map->epoch, out);
}

/* A GET reply carrying v, written at out. */
static size_t
value_reply(struct km_proc *p, const struct km_hdr *req, uint32_t epoch,
	const struct km_value_ref *v, uint8_t *out, size_t cap)
{
	struct km_hdr h;

	/* The value may not fit if value_max was raised after it was stored. */
	if ((size_t)KM_HDR_LEN + v->len > cap) {
		p->cnt.too_large++;
		return km_proc_reply_status(req, KM_ST_TOO_LARGE, epoch, out);
	}
	reply_hdr(&h, req, KM_ST_OK, epoch);
	h.val_len = v->len;
	h.version = v->version;
	km_hdr_encode(out, &h);
	/* Not km_msg_build(): a stored value never overlaps the packet, so memcpy will do,
	 * and the length is already checked. */
	memcpy(out + KM_HDR_LEN, v->data, v->len);
	p->cnt.get_hit++;
	return KM_HDR_LEN + v->len;
}

/*
 * Persistent stores: requests whose replies wait (struct defer), reads in flight (struct
 * pend), replies ready for the caller.
 */

static struct defer *
defer_get(struct km_proc *p, const struct km_hdr *req, uint32_t epoch, void *cookie, uint8_t *out,
	size_t cap)
{
	struct defer *d = p->defer_free;

	if (d == NULL)
		return NULL;
	p->defer_free = d->next;
	p->nb_defer++;
	*d = (struct defer){.cookie = cookie, .out = out, .cap = cap, .hdr = *req, .epoch = epoch};
	return d;
}

/* The reply of d is written: hand it to the caller at the next poll. */
static void
ready_push(struct km_proc *p, struct defer *d, size_t len)
{
	uint32_t i;

	if (p->ready_n == p->ready_cap) {
		/* More replies completed than deferrals exist (deferrals were reused between
		 * two polls): make room, keeping the order. */
		struct km_proc_done *t = malloc(2 * (size_t)p->ready_cap * sizeof(*t));

		if (t != NULL) {
			for (i = 0; i < p->ready_n; i++)
				t[i] = p->ready[(p->ready_head + i) % p->ready_cap];
			free(p->ready);
			p->ready = t;
			p->ready_head = 0;
			p->ready_cap *= 2;
		}
		/* Out of memory: the oldest reply is overwritten below, its packet lost
		 * (the client retries); never memory outside the ring. */
	}
	i = (p->ready_head + p->ready_n) % p->ready_cap;
	if (p->ready_n == p->ready_cap) {
		p->ready_head = (p->ready_head + 1) % p->ready_cap;
		p->ready_n--;
	}

	p->ready[i] = (struct km_proc_done){.cookie = d->cookie, .len = len};
	p->ready_n++;
	d->next = p->defer_free;
	p->defer_free = d;
	p->nb_defer--;
}

static inline uint32_t
pend_home(const struct km_proc *p, uint64_t hash)
{
	return (uint32_t)(hash >> 20) & p->pend_mask;
}

static struct pend *
pend_find(struct km_proc *p, const struct km_key *k)
{
	uint32_t i = pend_home(p, k->hash);
	struct pend *pe;

	for (; (pe = p->pend_tab[i]) != NULL; i = (i + 1) & p->pend_mask)
		if (pe->key.hash == k->hash && pe->key.len == k->len &&
			memcmp(pe->kbuf, k->data, k->len) == 0)
			return pe;
	return NULL;
}

static struct pend *
pend_new(struct km_proc *p, const struct km_key *k, const struct km_proc_shard *sl, int prefetch)
{
	struct pend *pe = p->pend_free;
	uint32_t i;

	if (pe == NULL)
		return NULL;
	p->pend_free = pe->next_free;
	memset(pe, 0, offsetof(struct pend, kbuf));
	pe->rd.op.done = NULL; /* set by the caller once the read is submitted */
	pe->p = p;
	pe->shard_id = sl->id;
	pe->gen = sl->gen;
	memcpy(pe->kbuf, k->data, k->len);
	pe->key = (struct km_key){.data = pe->kbuf, .len = k->len, .hash = k->hash};
	pe->prefetch = (uint8_t)prefetch;
	pe->waiters = pe->waiters_tail = NULL;
	for (i = pend_home(p, k->hash); p->pend_tab[i] != NULL; i = (i + 1) & p->pend_mask)
		;
	p->pend_tab[i] = pe;
	pe->slot = i;
	p->nb_pend++;
	return pe;
}

/* Take pe out of the hash (backward shift) and free it. */
static void
pend_release(struct km_proc *p, struct pend *pe)
{
	uint32_t mask = p->pend_mask, hole = pe->slot, j = hole, dist;

	for (;;) {
		j = (j + 1) & mask;
		if (p->pend_tab[j] == NULL)
			break;
		dist = (j - pend_home(p, p->pend_tab[j]->key.hash)) & mask;
		if (dist >= ((j - hole) & mask)) {
			p->pend_tab[hole] = p->pend_tab[j];
			p->pend_tab[hole]->slot = hole;
			hole = j;
		}
	}
	p->pend_tab[hole] = NULL;
	km_store_read_free(&pe->rd);
	pe->next_free = p->pend_free;
	p->pend_free = pe;
	p->nb_pend--;
}

static void
pend_wait(struct pend *pe, struct defer *d)
{
	d->next = NULL;
	if (pe->waiters_tail != NULL)
		pe->waiters_tail->next = d;
	else
		pe->waiters = d;
	pe->waiters_tail = d;
}

/* Answer every waiter of pe: with v (rc 0) or the status rc maps to. */
static void
pend_answer(struct km_proc *p, struct pend *pe, int rc, const struct km_value_ref *v)
{
	struct defer *d = pe->waiters, *next;
	uint8_t status;
	size_t len;

	pe->waiters = pe->waiters_tail = NULL;
	for (; d != NULL; d = next) {
		next = d->next;
		if (rc == 0) {
			len = value_reply(p, &d->hdr, d->epoch, v, d->out, d->cap);
		} else {
			if (rc == -ENOENT) {
				status = KM_ST_NOT_FOUND;
				p->cnt.get_miss++;
			} else if (rc == -EAGAIN) {
				status = KM_ST_BUSY;
				p->cnt.busy_pending++;
			} else {
				status = KM_ST_ERROR;
				p->cnt.store_error++;
			}
			len = km_proc_reply_status(&d->hdr, status, d->epoch, d->out);
		}
		ready_push(p, d, len);
	}
}

static void pend_done(struct km_io_op *op, int res);

/*
 * Start (or restart) pe's read. @return 1 in flight; 0 value at once in *v; < 0 error
 * (-ENOENT, -EAGAIN, ...).
 */
static int
pend_start(struct km_proc *p, struct pend *pe, struct km_store *s, struct km_value_ref *v)
{
	int rc;

	pe->rd.op.done = pend_done;
	rc = s->ops->read_start(s, &pe->key, &pe->rd, v);
	if (rc == 1)
		p->cnt.disk_reads++;
	return rc;
}

static void
pend_done(struct km_io_op *op, int res)
{
	struct pend *pe = (struct pend *)op; /* rd.op is first */
	struct km_proc *p = pe->p;
	struct km_proc_shard *sl;
	struct km_value_ref v;
	int rc;

	if (p->closing) {
		km_store_read_free(&pe->rd);
		return;
	}
	sl = shard_find(p, pe->shard_id);
	if (sl == NULL || sl->gen != pe->gen) {
		/* The shard was handed away meanwhile: its requests try again. */
		pend_answer(p, pe, -EAGAIN, NULL);
		pend_release(p, pe);
		return;
	}
	rc = sl->store->ops->read_done(sl->store, &pe->rd, res, &pe->key, &v);
	while (rc == -EAGAIN && pe->restarts < READ_RESTARTS) {
		/* Written, moved or compacted since: read the entry as it is now. */
		km_store_read_free(&pe->rd);
		pe->restarts++;
		p->cnt.read_restarts++;
		rc = pend_start(p, pe, sl->store, &v);
		if (rc == 1)
			return;
	}
	if (rc == 0 && p->cache != NULL)
		km_cache_put(p->cache, &pe->key, pe->gen, v.data, v.len, v.version,
			pe->prefetch && pe->waiters == NULL);
	pend_answer(p, pe, rc, &v);
	pend_release(p, pe);
}

/*
 * Read k of shard sl for a request (d != NULL: it waits on the read) or for a prefetch
 * (d == NULL). Joins a read of k already in flight.
 * @return 1 the request waits (or the read started); 0 value at once in *v (the request
 *   was not queued); < 0: -ENOENT, -EAGAIN (no room), other errors.
 */
static int
read_key(struct km_proc *p, struct km_proc_shard *sl, const struct km_key *k, struct defer *d,
	int prefetch, struct km_value_ref *v)
{
	struct pend *pe = pend_find(p, k);
	int rc;

	if (pe != NULL) {
		if (pe->shard_id != sl->id || pe->gen != sl->gen)
			return -EAGAIN; /* a read for a previous owner of the shard: soon gone */
		if (d != NULL) {
			pend_wait(pe, d);
			p->cnt.read_coalesced++;
			if (pe->prefetch)
				p->cnt.prefetch_coalesced++;
		}
		return 1;
	}
	pe = pend_new(p, k, sl, prefetch);
	if (pe == NULL)
		return -EAGAIN;
	rc = pend_start(p, pe, sl->store, v);
	if (rc != 1) {
		pend_release(p, pe);
		return rc;
	}
	if (prefetch)
		p->cnt.prefetch_issued++;
	if (d != NULL)
		pend_wait(pe, d);
	return 1;
}

static void
mark_dirty(struct km_proc *p, struct km_proc_shard *sl)
{
	if (sl->dirty)
		return;
	if (p->nb_dirty == p->dirty_cap) {
		uint32_t cap = p->dirty_cap ? p->dirty_cap * 2 : 16;
		uint64_t *t = realloc(p->dirty, cap * sizeof(*t));

		if (t == NULL)
			return; /* flushed by the next write that finds room, or at detach */
		p->dirty = t;
		p->dirty_cap = cap;
	}
	p->dirty[p->nb_dirty++] = sl->id;
	sl->dirty = 1;
}

static void
park(struct km_proc_shard *sl, struct defer *d)
{
	d->next = NULL;
	if (sl->parked_tail != NULL)
		sl->parked_tail->next = d;
	else
		sl->parked_head = d;
	sl->parked_tail = d;
}

/* Every reply parked on sl, with status instead of the one built (a failed group). */
static void
parked_fail(struct km_proc *p, struct km_proc_shard *sl, uint8_t status)
{
	struct defer *d = sl->parked_head, *next;
	struct dedup_entry *e;

	sl->parked_head = sl->parked_tail = NULL;
	for (; d != NULL; d = next) {
		next = d->next;
		/* The outcome recorded for a retry is not the outcome any more. */
		e = dedup_slot(p, d->src, d->hdr.req_id);
		if (e->valid && e->src == d->src && e->req_id == d->hdr.req_id)
			e->valid = 0;
		if (status == KM_ST_ERROR)
			p->cnt.write_failed++;
		else
			p->cnt.busy_handover++;
		ready_push(p, d, km_proc_reply_status(&d->hdr, status, d->epoch, d->out));
	}
}

/* A store tells how far its records are durable (from km_io_poll or a drain). */
static void
store_durable(void *arg, uint64_t shard_id, uint64_t seq, int err)
{
	struct km_proc *p = arg;
	struct km_proc_shard *sl = shard_find(p, shard_id);
	struct defer *d;

	if (sl == NULL)
		return;
	while ((d = sl->parked_head) != NULL && d->seq <= seq) {
		sl->parked_head = d->next;
		if (sl->parked_head == NULL)
			sl->parked_tail = NULL;
		ready_push(p, d, KM_HDR_LEN);
	}
	if (err < 0) {
		/* Rolled back: values of the failed group may be cached. */
		km_cache_clear(p->cache);
		parked_fail(p, sl, KM_ST_ERROR);
	}
}

/* Submit the group writes of the shards written since the last call. */
static void
flush_dirty(struct km_proc *p)
{
	struct km_proc_shard *sl;
	uint32_t i;

	for (i = 0; i < p->nb_dirty;) {
		sl = shard_find(p, p->dirty[i]);
		if (sl != NULL && sl->store->ops->flush(sl->store)) {
			i++;
			continue;
		}
		if (sl != NULL)
			sl->dirty = 0;
		p->dirty[i] = p->dirty[--p->nb_dirty];
	}
}

unsigned int
km_proc_poll(struct km_proc *p, struct km_proc_done *done, unsigned int max)
{
	unsigned int n = 0;

	if (p->io == NULL)
		return 0;
	km_io_poll(p->io, 1024);
	flush_dirty(p);
	while (n < max && p->ready_n != 0) {
		done[n++] = p->ready[p->ready_head];
		p->ready_head = (p->ready_head + 1) % p->ready_cap;
		p->ready_n--;
	}
	return n;
}

int
km_proc_busy(const struct km_proc *p)
{
	return p->io != NULL && (km_io_inflight(p->io) != 0 || p->nb_dirty != 0 || p->ready_n != 0);
}

void
km_proc_waiting(const struct km_proc *p, uint32_t *deferred, uint32_t *reads)
{
	*deferred = p->nb_defer;
	*reads = p->nb_pend;
}

const struct km_cache_counters *
km_proc_cache_counters(const struct km_proc *p)
{
	return p->cache != NULL ? km_cache_counters(p->cache) : NULL;
}

int
km_proc_prefetch_key(
	struct km_proc *p, const struct km_shardmap *map, const uint8_t *key, uint16_t len)
{
	struct km_proc_shard *sl;
	struct km_value_ref v;
	struct km_route rt;
	struct km_key k;
	int rc;

	if (len == 0 || len > KM_KEY_MAX)
		return -EINVAL;
	route_of(map, key, len, &rt);
	sl = owned_shard(p, km_shardmap_lookup(map, rt.hash));
	if (sl == NULL || !sl->persistent)
		return 0;
	key_init(&k, key, len, &rt);
	if (km_cache_contains(p->cache, &k, sl->gen) || pend_find(p, &k) != NULL)
		return 0;
	rc = read_key(p, sl, &k, NULL, 1, &v);
	if (rc == 0) {
		/* In a write buffer: cache it as a prefetch all the same. */
		km_cache_put(p->cache, &k, sl->gen, v.data, v.len, v.version, 1);
		return 1;
	}
	return rc;
}

/* GET of a key whose store keeps values on disk: cache, read in flight, or a new read. */
static size_t
get_persistent(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_key *k, struct km_proc_shard *shd, void *cookie, uint8_t *out, size_t cap)
{
	struct km_value_ref v;
	struct defer *d;
	int rc;

	if (km_cache_get(p->cache, k, shd->gen, &v) == 0)
		return value_reply(p, &req->hdr, map->epoch, &v, out, cap);
	d = defer_get(p, &req->hdr, map->epoch, cookie, out, cap);
	if (d == NULL) {
		p->cnt.busy_pending++;
		return km_proc_reply_status(&req->hdr, KM_ST_BUSY, map->epoch, out);
	}
	rc = read_key(p, shd, k, d, 0, &v);
	if (rc == 1)
		return 0;
	/* Not queued: answer now. */
	d->next = p->defer_free;
	p->defer_free = d;
	p->nb_defer--;
	switch (rc) {
	case 0:
		km_cache_put(p->cache, k, shd->gen, v.data, v.len, v.version, 0);
		return value_reply(p, &req->hdr, map->epoch, &v, out, cap);
	case -ENOENT:
		p->cnt.get_miss++;
		return km_proc_reply_status(&req->hdr, KM_ST_NOT_FOUND, map->epoch, out);
	case -EAGAIN:
	case -ENOMEM:
		p->cnt.busy_pending++;
		return km_proc_reply_status(&req->hdr, KM_ST_BUSY, map->epoch, out);
	default:
		p->cnt.store_error++;
		return km_proc_reply_status(&req->hdr, KM_ST_ERROR, map->epoch, out);
	}
}

static size_t
exec_get(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_shard *sh, const struct km_key *k, struct km_proc_shard *shd, void *cookie,
	uint8_t *out, size_t cap)
{
	struct km_value_ref v;

	p->cnt.req_get++;
	if (shd == NULL)
		return reply_busy(p, map, req, sh, out);
	shd->requests++;
	if (shd->persistent)
		return get_persistent(p, map, req, k, shd, cookie, out, cap);
	if (km_store_get(shd->store, k, &v) != 0) {
		p->cnt.get_miss++;
		return km_proc_reply_status(&req->hdr, KM_ST_NOT_FOUND, map->epoch, out);
	}
	return value_reply(p, &req->hdr, map->epoch, &v, out, cap);
}

/* A write to a persistent store succeeded: keep the cache right and the group coming. */
static void
written_persistent(struct km_proc *p, struct km_proc_shard *shd, const struct km_msg *req,
	const struct km_key *k, uint64_t version)
{
	if (req->hdr.op == KM_OP_DEL)
		km_cache_invalidate(p->cache, k);
	else if (km_cache_put(p->cache, k, shd->gen, req->val, req->hdr.val_len, version, 0) < 0)
		km_cache_invalidate(p->cache, k);
	mark_dirty(p, shd);
}

/*
 * In sync mode, park the reply built at out until record seq of shd is durable.
 * @return 0: parked, km_proc_poll() hands it back; or the length of an ERROR reply
 *   written instead (the disk cannot be waited for).
 */
static size_t
park_reply(struct km_proc *p, struct km_proc_shard *shd, const struct km_msg *req, uint32_t epoch,
	uint64_t seq, uint64_t src, void *cookie, uint8_t *out, size_t cap)
{
	struct defer *d = defer_get(p, &req->hdr, epoch, cookie, out, cap);

	while (d == NULL) {
		/* Every deferral is taken: write out what waits and wait for completions to
		 * free one. Rare, and never an acknowledgement before the disk has the
		 * record. */
		flush_dirty(p);
		if (km_io_inflight(p->io) == 0 || km_io_wait(p->io) < 0)
			break;
		d = defer_get(p, &req->hdr, epoch, cookie, out, cap);
	}
	/* While waiting, the group of this write may have completed, or failed and been
	 * rolled back (numbers after the durable one are then reused). */
	if (d == NULL || shd->store->ops->write_seq(shd->store) < seq) {
		struct dedup_entry *e = dedup_slot(p, src, req->hdr.req_id);

		if (e->valid && e->src == src && e->req_id == req->hdr.req_id)
			e->valid = 0;
		if (d != NULL) {
			d->next = p->defer_free;
			p->defer_free = d;
			p->nb_defer--;
		}
		p->cnt.write_failed++;
		return km_proc_reply_status(&req->hdr, KM_ST_ERROR, epoch, out);
	}
	if (shd->store->ops->durable_seq(shd->store) >= seq) {
		d->next = p->defer_free;
		p->defer_free = d;
		p->nb_defer--;
		return KM_HDR_LEN; /* durable already: the reply built at out stands */
	}
	d->seq = seq;
	d->src = src;
	p->cnt.write_deferred++;
	park(shd, d);
	return 0;
}

static size_t
exec_write(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_shard *sh, const struct km_key *k, struct km_proc_shard *shd, uint64_t src,
	void *cookie, uint8_t *out, size_t cap)
{
	struct dedup_entry *d = dedup_slot(p, src, req->hdr.req_id);
	uint64_t version = 0, seq = 0;
	struct km_store *s;
	struct km_hdr h;
	uint8_t status;
	int rc;

	if (req->hdr.op == KM_OP_PUT)
		p->cnt.req_put++;
	else if (req->hdr.op == KM_OP_CAS)
		p->cnt.req_cas++;
	else
		p->cnt.req_del++;
	/* A retry answered from the at-most-once table counts too: load on the shard. */
	if (shd != NULL)
		shd->requests++;

	if (d->valid && d->src == src && d->req_id == req->hdr.req_id && d->op == req->hdr.op) {
		p->cnt.write_retry++;
		status = d->status;
		version = d->version;
		/* The first copy may still wait for its group: so does the retry. */
		if (d->seq != 0 && shd != NULL && shd->gen == d->gen &&
			shd->store->ops->durable_seq(shd->store) < d->seq)
			seq = d->seq;
		goto reply;
	}
	if (shd == NULL)
		return reply_busy(p, map, req, sh, out);
	s = shd->store;
	switch (req->hdr.op) {
	case KM_OP_PUT:
		rc = km_store_put(s, k, req->val, req->hdr.val_len, KM_VERSION_ANY, 0, &version);
		break;
	case KM_OP_CAS:
		/* CAS with version 0: create only if absent. */
		rc = km_store_put(s, k, req->val, req->hdr.val_len, req->hdr.version,
			req->hdr.version == 0, &version);
		break;
	default:
		rc = km_store_del(s, k, req->hdr.version, &version);
		break;
	}
	status = status_of_store_rc(p, rc);
	if (rc == 0 && shd->persistent) {
		written_persistent(p, shd, req, k, version);
		if (p->durability == KM_DUR_SYNC)
			seq = s->ops->write_seq(s);
	}
	/* Record every definitive outcome, refusals too: a retried CAS must not see its own
	 * write as a mismatch, nor a retried refused CAS succeed later. A server failure
	 * (ERROR) or a full write buffer (BUSY) changed nothing and may pass: its retry
	 * executes again. */
	if (status == KM_ST_ERROR || status == KM_ST_BUSY)
		goto reply;
	*d = (struct dedup_entry){
		.src = src,
		.req_id = req->hdr.req_id,
		.version = version,
		.seq = seq,
		.gen = shd->gen,
		.op = req->hdr.op,
		.status = status,
		.valid = 1,
	};
reply:
	reply_hdr(&h, &req->hdr, status, map->epoch);
	h.version = version;
	km_hdr_encode(out, &h);
	if (seq != 0)
		return park_reply(p, shd, req, map->epoch, seq, src, cookie, out, cap);
	return KM_HDR_LEN;
}

static size_t
exec_mget(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req, uint8_t *out,
	size_t cap)
{
	uint8_t *b = p->scratch, *w;
	size_t lim = cap < sizeof(p->scratch) ? cap : sizeof(p->scratch);
	struct km_mget_iter it;
	const uint8_t *key;
	struct km_hdr h;
	int count, first = 1;
	size_t left;
	uint8_t klen;

	p->cnt.req_mget++;
	count = km_mget_req_begin(&it, req->val, req->hdr.val_len);
	left = (size_t)(count < 0 ? 0 : count);
	if (count < 0) {
		p->cnt.bad_request++;
		return km_proc_reply_status(&req->hdr, KM_ST_BAD_REQUEST, map->epoch, out);
	}
	km_put16(b + KM_HDR_LEN, (uint16_t)count);
	w = b + KM_HDR_LEN + 2;
	while (km_mget_req_next(&it, &key, &klen)) {
		struct km_route rt;
		const struct km_shard *sh;
		struct km_proc_shard *shd;
		struct km_value_ref v = {0};
		uint8_t status = KM_ST_OK;
		struct km_key k;

		route_of(map, key, klen, &rt);
		sh = km_shardmap_lookup(map, rt.hash);
		shd = owned_shard(p, sh);
		/* The request counts once, on the shard of its first key (its owner). */
		if (first && shd != NULL)
			shd->requests++;
		first = 0;
		if (shd == NULL) {
			/* Per entry, not BUSY, even for a shard in hand-over: the wire format
			 * (km_proto.h) gives entries MOVED and the client re-routes them. */
			status = KM_ST_MOVED;
		} else if (shd->persistent) {
			/* Cached, or BUSY: the read starts now and the client GETs the key,
			 * which then finds it cached or in flight. */
			key_init(&k, key, klen, &rt);
			if (km_cache_get(p->cache, &k, shd->gen, &v) != 0) {
				int rc = read_key(p, shd, &k, NULL, 0, &v);

				if (rc == 0)
					km_cache_put(p->cache, &k, shd->gen, v.data, v.len,
						v.version, 0);
				else if (rc == -ENOENT) {
					status = KM_ST_NOT_FOUND;
					p->cnt.get_miss++;
				} else {
					status = KM_ST_BUSY;
					v.len = 0;
				}
			}
		} else {
			key_init(&k, key, klen, &rt);
			if (km_store_get(shd->store, &k, &v) != 0) {
				status = KM_ST_NOT_FOUND;
				p->cnt.get_miss++;
			}
		}
		/* Entries whose value does not fit are marked; the client GETs them. A value
		 * fits only if the headers of the entries after it still do. */
		left--;
		if (status == KM_ST_OK &&
			(size_t)(w - b) + KM_MGET_REP_ENTRY_HDR * (1 + left) + v.len > lim)
			status = KM_ST_TOO_LARGE;
		else if (status == KM_ST_OK)
			p->cnt.get_hit++;
		if (status != KM_ST_OK)
			v.len = 0;
		if ((size_t)(w - b) + KM_MGET_REP_ENTRY_HDR + v.len > lim) {
			/* Not even the entry header fits: cannot happen with KM_MGET_MAX entries
			 * of 11 bytes in a datagram, but never write past the buffer. */
			p->cnt.too_large++;
			return km_proc_reply_status(&req->hdr, KM_ST_TOO_LARGE, map->epoch, out);
		}
		w[0] = status;
		km_put64(w + 1, v.version);
		km_put16(w + 9, (uint16_t)v.len);
		/* MOVED/NOT_FOUND entries have no data pointer: memcpy(NULL, 0) is undefined. */
		if (v.len != 0)
			memcpy(w + KM_MGET_REP_ENTRY_HDR, v.data, v.len);
		w += KM_MGET_REP_ENTRY_HDR + v.len;
	}
	reply_hdr(&h, &req->hdr, KM_ST_OK, map->epoch);
	h.val_len = (uint32_t)(w - b - KM_HDR_LEN);
	km_hdr_encode(b, &h);
	memcpy(out, b, (size_t)(w - b));
	return (size_t)(w - b);
}

static size_t
exec_map(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req, uint8_t *out,
	size_t cap)
{
	size_t lim = cap < KM_DGRAM_MAX ? cap : KM_DGRAM_MAX;
	struct km_hdr h;
	size_t n;

	p->cnt.req_map++;
	/* The cursor (first shard wanted) travels in the version field. */
	if (req->hdr.version >= map->nb_shards) {
		p->cnt.bad_request++;
		return km_proc_reply_status(&req->hdr, KM_ST_BAD_REQUEST, map->epoch, out);
	}
	n = km_shardmap_encode(map, (uint32_t)req->hdr.version, out + KM_HDR_LEN, lim - KM_HDR_LEN);
	reply_hdr(&h, &req->hdr, KM_ST_OK, map->epoch);
	h.val_len = (uint32_t)n;
	h.version = req->hdr.version;
	km_hdr_encode(out, &h);
	return KM_HDR_LEN + n;
}

/* Both execution paths. For a single-key op, rt is its route, k its key and shd its shard
 * (NULL when not owned or not attached); others ignore the three. */
static inline size_t
exec_one(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_route *rt, const struct km_key *k, struct km_proc_shard *shd, uint64_t src,
	void *cookie, uint8_t *out, size_t cap)
{
	struct km_hdr h;

	switch (req->hdr.op) {
	case KM_OP_GET:
		return exec_get(p, map, req, rt->shard, k, shd, cookie, out, cap);
	case KM_OP_PUT:
	case KM_OP_CAS:
	case KM_OP_DEL:
		return exec_write(p, map, req, rt->shard, k, shd, src, cookie, out, cap);
	case KM_OP_MGET:
		return exec_mget(p, map, req, out, cap);
	case KM_OP_MAP:
		return exec_map(p, map, req, out, cap);
	case KM_OP_PING:
		p->cnt.req_ping++;
		reply_hdr(&h, &req->hdr, KM_ST_OK, map->epoch);
		h.version = p->worker; /* which worker answered: useful to check steering */
		km_hdr_encode(out, &h);
		return KM_HDR_LEN;
	default:
		p->cnt.bad_request++;
		return km_proc_reply_status(&req->hdr, KM_ST_BAD_REQUEST, map->epoch, out);
	}
}

static inline int
op_single_key(uint8_t op)
{
	return op == KM_OP_GET || op == KM_OP_PUT || op == KM_OP_CAS || op == KM_OP_DEL;
}

size_t
km_proc_execute(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_route *rt, uint64_t src, uint8_t *out, size_t cap)
{
	struct km_proc_shard *shd = NULL;
	struct km_key k;

	if (op_single_key(req->hdr.op)) {
		key_init(&k, req->key, req->hdr.key_len, rt);
		shd = owned_shard(p, rt->shard);
	}
	return exec_one(p, map, req, rt, &k, shd, src, NULL, out, cap);
}

void
km_proc_prefetch(struct km_proc *p, struct km_proc_req *r)
{
	r->shd = NULL;
	if (!op_single_key(r->msg.hdr.op))
		return;
	/* A write reads and rewrites its at-most-once entry: a miss in a table of
	 * dedup_entries x 32 bytes, as random as the key's. */
	if (r->msg.hdr.op != KM_OP_GET)
		__builtin_prefetch(dedup_slot(p, r->src, r->msg.hdr.req_id), 1);
	key_init(&r->key, r->msg.key, r->msg.hdr.key_len, &r->rt);
	r->shd = owned_shard(p, r->rt.shard);
	if (r->shd != NULL)
		km_store_prefetch(r->shd->store, &r->key, KM_STORE_PREFETCH_INDEX);
}

/* Stage 2 of one request: prefetch the record its (now cached) index slot points to. */
static inline void
req_prefetch_entry(struct km_proc_req *r)
{
	if (r->shd != NULL)
		km_store_prefetch(r->shd->store, &r->key, KM_STORE_PREFETCH_ENTRY);
}

void
km_proc_execute_burst(
	struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n && i < PREFETCH_AHEAD; i++)
		req_prefetch_entry(&r[i]);
	for (i = 0; i < n; i++) {
		if (i + PREFETCH_AHEAD < n)
			req_prefetch_entry(&r[i + PREFETCH_AHEAD]);
		r[i].len = exec_one(p, map, &r[i].msg, &r[i].rt, &r[i].key, r[i].shd, r[i].src,
			r[i].cookie, r[i].out, r[i].cap);
	}
}

/* Re-sharding copies: walk a store, load every entry elsewhere with its version. */

struct reshard_ctx {
	const struct km_shardmap *m;
	unsigned int bit;        /* split: bit of the routing hash that picks the child */
	struct km_store *dst[2]; /* split: lo, hi; copy: dst[0] */
	int64_t copied;
};

static int
reshard_split_one(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct reshard_ctx *c = arg;
	uint64_t hash = km_shardmap_hash(c->m, k->data, k->len);
	int rc;

	rc = km_store_load(c->dst[(hash >> c->bit) & 1], k, v->data, v->len, v->version);
	if (rc == 0)
		c->copied++;
	return rc;
}

int64_t
km_reshard_split(const struct km_shardmap *m, struct km_store *src, uint64_t parent_id,
	struct km_store *lo, struct km_store *hi)
{
	struct reshard_ctx c = {.m = m, .dst = {lo, hi}};
	unsigned int depth = km_shard_depth(parent_id);
	int rc;

	/* The walk must not see its own loads. */
	if (m == NULL || src == NULL || lo == NULL || hi == NULL || lo == hi || src == lo ||
		src == hi || parent_id == 0)
		return -EINVAL;
	if (depth >= KM_SHARD_DEPTH_MAX)
		return -ERANGE;
	/* A shard of depth d owns the hashes whose top d bits are its prefix; its children
	 * differ in the next one. */
	c.bit = 63 - depth;
	rc = km_store_walk(src, reshard_split_one, &c);
	return rc != 0 ? rc : c.copied;
}

static int
reshard_copy_one(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct reshard_ctx *c = arg;
	int rc;

	rc = km_store_load(c->dst[0], k, v->data, v->len, v->version);
	if (rc == 0)
		c->copied++;
	return rc;
}

int64_t
km_reshard_copy(struct km_store *src, struct km_store *dst)
{
	struct reshard_ctx c = {.dst = {dst, NULL}};
	int rc;

	if (src == NULL || dst == NULL || src == dst)
		return -EINVAL;
	rc = km_store_walk(src, reshard_copy_one, &c);
	return rc != 0 ? rc : c.copied;
}
