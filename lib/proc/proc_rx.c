/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The request entry: a burst of datagrams in, a verdict per request out (see km_proc.h).
 * Stage 1 parses and routes every request and prefetches the index slot of each one this
 * worker executes; stages 2 and 3 prefetch their records and execute them, pipelined, so
 * that the cache misses of a burst overlap (MICA: hash -> index slot -> record -> execute).
 */

#include "proc_private.h"

/*
 * Requests of a burst between the record prefetch of a request and its execution: enough
 * for the record to arrive while the ones before it execute, few enough that the lines in
 * flight (two per record) stay within the core's miss buffers. keymap-proc-bench, bursts
 * of 32, 1 M keys, median TSC cycles per GET: 4 -> 236, 6 -> 233, 8 -> 234, 12 -> 240,
 * 16 -> 269, all 32 prefetched before the first executes -> 316 (at 100 k keys: ~190 for
 * all).
 */
#define PREFETCH_AHEAD 8

/* Requests executed per pass of stages 2-3 (bursts longer than this take several). */
#define EXEC_CHUNK 64

/* Targets of route_target(). */
#define TARGET_ANY   -1 /* any worker may answer (PING, MAP) */
#define TARGET_MOVED -2 /* answer MOVED: stale client epoch and wrong port */

/*
 * Which worker must execute a parsed request, with the route of its (first) key in rt.
 * A request whose epoch differs from the map's (older, or from before a restart) and that
 * was addressed to another worker than the owner is MOVED (the client re-fetches the map);
 * otherwise it goes to the owner. An up-to-date or unsteered (epoch 0) client is served
 * through the hand-off. A shard of another node (a cluster map) is MOVED.
 */
static inline int
route_target(const struct km_shardmap *map, const struct km_msg *req, int port_worker,
	struct km_route *rt)
{
	const uint8_t *key = req->key;
	struct km_mget_iter it;
	uint16_t owner;
	uint8_t klen;

	switch (req->hdr.op) {
	case KM_OP_GET:
	case KM_OP_PUT:
	case KM_OP_CAS:
	case KM_OP_DEL:
	case KM_OP_SCAN: /* by its prefix: exec_scan() checks it names one shard */
		route_of(map, key, req->hdr.key_len, rt);
		break;
	case KM_OP_MGET:
		/* An MGET belongs to the owner of its first key; the client groups by owner. */
		if (km_mget_req_begin(&it, req->val, req->hdr.val_len) < 0 ||
			km_mget_req_next(&it, &key, &klen) == 0)
			goto any; /* executed here: BAD_REQUEST */
		route_of(map, key, klen, rt);
		break;
	default:
		goto any;
	}
	owner = km_shard_owner_fast(rt->shard);
	/* Another node's shard (a cluster map), whatever the request's epoch. */
	if (proc_unlikely(owner == KM_OWNER_REMOTE))
		return TARGET_MOVED;
	if (req->hdr.epoch != 0 && req->hdr.epoch != km_shardmap_epoch_fast(map) &&
		port_worker >= 0 && port_worker != owner)
		return TARGET_MOVED;
	return owner;
any:
	rt->hash = rt->key_hash = 0;
	rt->shard = NULL;
	return TARGET_ANY;
}

static inline void
reply_now(struct km_proc_req *r, size_t len)
{
	r->verdict = KM_PROC_REPLY;
	r->reply_len = len;
}

/* A request that gets no more than a DENIED (never larger than the request). */
static __attribute__((noinline)) void
deny(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r, uint8_t reason)
{
	if (reason == KM_DENY_AUTH)
		p->cnt.denied_auth++;
	else
		p->cnt.denied_perm++;
	reply_now(r, proc_reply_denied(&r->msg.hdr, reason, km_shardmap_epoch_fast(map), r->buf));
}

/*
 * The worker a shard detached here is in transit to (km_proc_shard_forward), or -1. Entries
 * the map has passed are dropped on the way.
 */
static __attribute__((noinline)) int
fwd_target(struct km_proc *p, const struct km_shardmap *map, uint64_t id)
{
	uint32_t epoch = km_shardmap_epoch_fast(map), i;
	int to = -1;

	for (i = 0; i < PROC_FWD_MAX; i++) {
		if (p->fwd[i].id == 0)
			continue;
		if ((int32_t)(epoch - p->fwd[i].epoch) >= 0) {
			p->fwd[i].id = 0;
			p->nb_fwd--;
		} else if (p->fwd[i].id == id) {
			to = p->fwd[i].to;
		}
	}
	return to;
}

/*
 * Whether a request handed here for a shard the map gives to another worker executes here
 * all the same: the shard's store was handed to this worker ahead of the map
 * (km_proc_shard_forward). Plain hand-offs of single-key requests only.
 */
static inline struct km_proc_shard *
ahead_of_map(struct km_proc *p, const struct km_proc_req *r)
{
	if (r->handed != KM_HAND_PLAIN || r->rt.shard == NULL || r->rt.fallback != NULL ||
		!op_single_key(r->msg.hdr.op))
		return NULL;
	return shard_find(p, km_shard_id_fast(r->rt.shard));
}

/*
 * Stage 1 of one request: parse, route, decide. @return 1 if this worker executes it (its
 * index slot is then being prefetched), 0 if its verdict is final.
 */
static inline int
rx_stage1(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r)
{
	struct km_proc_shard *ahead = NULL;
	uint8_t why;
	int st, target;

	st = km_req_parse(r->buf, r->len, p->value_max, &r->msg);
	if (proc_unlikely(st < 0)) {
		r->verdict = KM_PROC_DROP;
		return 0;
	}
	if (proc_unlikely(st != KM_ST_OK)) {
		/* Error replies are never larger than the request: safe to any source. */
		proc_count_status(p, (uint8_t)st);
		reply_now(r, proc_reply_status(&r->msg.hdr, (uint8_t)st,
				     km_shardmap_epoch_fast(map), r->buf));
		return 0;
	}
	/* Client keys: checked once, by the worker that received the request. */
	if (proc_unlikely(!r->handed && (r->msg.mac != NULL || p->auth != NULL))) {
		why = proc_auth_check(p, r);
		if (why != 0) {
			deny(p, map, r, why);
			return 0;
		}
	}
	target = route_target(map, &r->msg, r->port_worker, &r->rt);
	/* Partition shifter (proc_shift.c): a part whose keys are moving, or its hand-offs. */
	r->shift = 0;
	if (proc_unlikely(
		    (r->rt.shard != NULL && r->rt.fallback != NULL) || r->handed > KM_HAND_PLAIN) &&
		proc_shift_stage1(p, map, r, &target) == 0)
		return 0;
	if (proc_unlikely(target == TARGET_MOVED)) {
		proc_count_status(p, KM_ST_MOVED);
		reply_now(r, proc_reply_status(&r->msg.hdr, KM_ST_MOVED,
				     km_shardmap_epoch_fast(map), r->buf));
		return 0;
	}
	/* A hot key with read copies is served by the worker the client chose (proc_crew.c). */
	if (p->crew != NULL && target >= 0 && r->msg.hdr.op == KM_OP_GET &&
		proc_crew_route(p, map, r, (uint16_t)target))
		return 0;
	/* A handed request for a shard whose store came here before the map: executed. */
	if (target >= 0 && target != p->worker &&
		!(proc_unlikely(r->handed) && (ahead = ahead_of_map(p, r)) != NULL)) {
		if (proc_unlikely(r->handed)) {
			/* The map changed while the request crossed: let the client retry. */
			p->cnt.busy_handover++;
			reply_now(r, proc_reply_status(&r->msg.hdr, KM_ST_BUSY,
					     km_shardmap_epoch_fast(map), r->buf));
			return 0;
		}
		r->verdict = KM_PROC_HANDOFF;
		r->owner = (uint16_t)target;
		return 0;
	}
	/* Address validation: a source without a valid cookie gets no reply larger than its
	 * request (checked where it executes). */
	r->limit = SIZE_MAX;
	if (p->hello != NULL && op_may_grow(r->msg.hdr.op) &&
		!proc_cookie_valid(p, r->src, &r->msg))
		r->limit = r->len;
	r->shd = NULL;
	if (!op_single_key(r->msg.hdr.op))
		return 1;
	if (proc_unlikely(p->overload) && r->msg.hdr.op != KM_OP_GET) {
		/* Overload (km_proc_overload()): BUSY before the write's two cache misses (its
		 * at-most-once entry, its index slot). Nothing happened: its retry executes. */
		proc_count_write(p, r->msg.hdr.op);
		p->cnt.busy_overload++;
		reply_now(r, proc_reply_status(
				     &r->msg.hdr, KM_ST_BUSY, km_shardmap_epoch_fast(map), r->buf));
		return 0;
	}
	/* A write reads and rewrites its at-most-once entry: misses in a table of
	 * dedup_entries x 72 bytes, as random as the key's (both lines of the entry). */
	if (r->msg.hdr.op != KM_OP_GET)
		proc_prefetch_dedup(dedup_slot(p, r->src, r->msg.hdr.req_id));
	key_init(&r->key, r->msg.key, r->msg.hdr.key_len, &r->rt);
	r->shd = proc_likely(ahead == NULL) ? owned_shard(p, r->rt.shard, r->rt.hash) : ahead;
	if (proc_likely(r->shd != NULL)) {
		km_store_prefetch(r->shd->store, &r->key, KM_STORE_PREFETCH_INDEX);
		return 1;
	}
	if (proc_unlikely(p->nb_fwd != 0) && r->rt.fallback == NULL && r->move == NULL &&
		r->shift == 0 && r->handed <= KM_HAND_PLAIN &&
		(target = fwd_target(p, map, km_shard_id_fast(r->rt.shard))) >= 0) {
		/* Its store is on its way to another worker: the request follows it. */
		p->cnt.handover_forwarded++;
		r->verdict = KM_PROC_HANDOFF;
		r->owner = (uint16_t)target;
		r->hand_mark = 0;
		return 0;
	}
	return 1;
}

/* Stage 2 of one request: prefetch the record its (now cached) index slot points to; what
 * the store found (the key's slot, or that it is absent) is the GET's hint. r->shd and its
 * store stay as they are until the request executes: shards are attached and detached
 * between bursts. */
static inline void
prefetch_entry(struct km_proc_req *r)
{
	r->hint = r->shd != NULL
			  ? km_store_prefetch(r->shd->store, &r->key, KM_STORE_PREFETCH_ENTRY)
			  : 0;
}

static inline void
exec_req(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r)
{
	if (proc_unlikely(r->shift != 0))
		proc_shift_exec(p, map, r);
	else
		proc_exec_req(p, map, r);
}

void
km_proc_rx_burst(
	struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r, unsigned int n)
{
	struct km_proc_req *run[EXEC_CHUNK];
	unsigned int i = 0, k, nr;

	while (i < n) {
		/* Stage 1 of the next requests, up to EXEC_CHUNK of them to execute. */
		for (nr = 0; i < n && nr < EXEC_CHUNK; i++)
			if (rx_stage1(p, map, &r[i]))
				run[nr++] = &r[i];
		/* Stages 2 and 3, pipelined. */
		for (k = 0; k < nr && k < PREFETCH_AHEAD; k++)
			prefetch_entry(run[k]);
		for (k = 0; k < nr; k++) {
			if (k + PREFETCH_AHEAD < nr)
				prefetch_entry(run[k + PREFETCH_AHEAD]);
			exec_req(p, map, run[k]);
		}
	}
}

void
km_proc_rx(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r)
{
	km_proc_rx_burst(p, map, r, 1);
}
