/* SPDX-License-Identifier: BSD-3-Clause */
/* Execution of each op, the at-most-once table, status replies (see proc_private.h). */

#include <errno.h>
#include <string.h>

#include "proc_private.h"

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
proc_reply_status(const struct km_hdr *req, uint8_t status, uint32_t epoch, uint8_t *out)
{
	struct km_hdr h;

	reply_hdr(&h, req, status, epoch);
	km_hdr_encode(out, &h);
	return KM_HDR_LEN;
}

/* DENIED, the reason (enum km_deny) in the version field. */
size_t
proc_reply_denied(const struct km_hdr *req, uint8_t reason, uint32_t epoch, uint8_t *out)
{
	struct km_hdr h;

	reply_hdr(&h, req, KM_ST_DENIED, epoch);
	h.version = reason;
	km_hdr_encode(out, &h);
	return KM_HDR_LEN;
}

/* Count a status answered without executing the op (parse errors, MOVED). */
void
proc_count_status(struct km_proc *p, uint8_t status)
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

/*
 * The one mapping of a store's return code to a wire status, counted. A read (read != 0:
 * a GET, a read completion) knows only found, not found, no room now and failure; a
 * write's refusals each have their status.
 */
uint8_t
proc_status_of_rc(struct km_proc *p, int rc, int read)
{
	if (rc == 0)
		return KM_ST_OK;
	if (rc == -ENOENT) {
		if (read)
			p->cnt.get_miss++;
		return KM_ST_NOT_FOUND;
	}
	if (read) {
		if (rc == -EAGAIN || rc == -ENOMEM) {
			p->cnt.busy_pending++;
			return KM_ST_BUSY;
		}
		if (rc == -EBADMSG) {
			p->cnt.damaged++;
			return KM_ST_DAMAGED;
		}
		p->cnt.store_error++;
		return KM_ST_ERROR;
	}
	switch (rc) {
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
	case -EBADMSG: /* a quarantined shard */
		p->cnt.damaged++;
		return KM_ST_DAMAGED;
	default:
		p->cnt.store_error++;
		return KM_ST_ERROR;
	}
}

/*
 * BUSY for a single-key request whose shard has no store here. If the map gives the shard
 * to this worker, its store is being handed over (detached, copied for a split or merge,
 * not attached yet): the client retries after a back-off. If not, the request was routed
 * against another map than the one it executes on: a server error.
 */
static size_t
reply_busy(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_shard *sh, uint8_t *out)
{
	if (km_shard_owner_fast(sh) == p->worker)
		p->cnt.busy_handover++;
	else
		p->cnt.store_error++;
	return proc_reply_status(&req->hdr, KM_ST_BUSY, km_shardmap_epoch_fast(map), out);
}

/* A GET reply carrying v, written at out; PROC_GROW (nothing written, the GET not
 * counted: it comes back) when it needs more room than cap and the caller can give it. */
size_t
proc_value_reply(struct km_proc *p, const struct km_hdr *req, uint32_t epoch,
	const struct km_value_ref *v, uint8_t *out, size_t cap, size_t limit)
{
	struct km_hdr h;

	/* Larger than the request for a source without a valid cookie: first (no room is
	 * found for a reply that will not go). */
	if (proc_unlikely((size_t)KM_HDR_LEN + v->len > limit)) {
		p->cnt.denied_cookie++;
		return proc_reply_denied(req, KM_DENY_COOKIE, epoch, out);
	}
	if (proc_unlikely((size_t)KM_HDR_LEN + v->len > cap)) {
		if ((size_t)KM_HDR_LEN + v->len <= p->reply_max) {
			p->cnt.req_get--;
			return PROC_GROW;
		}
		/* Larger than any reply: stored before value_max was lowered. */
		p->cnt.too_large++;
		return proc_reply_status(req, KM_ST_TOO_LARGE, epoch, out);
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

static size_t
exec_get(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_shard *sh, const struct km_key *k, uint64_t hint, struct km_proc_shard *shd,
	uint64_t src, void *cookie, uint8_t *out, size_t cap, size_t limit)
{
	struct km_value_ref v;
	uint8_t acc;
	size_t len;

	p->cnt.req_get++;
	if (shd == NULL)
		return reply_busy(p, map, req, sh, out);
	if (proc_unlikely(proc_repl_fenced(p, shd))) {
		p->cnt.busy_lease++;
		return proc_reply_status(&req->hdr, KM_ST_BUSY, km_shardmap_epoch_fast(map), out);
	}
	shd->requests++;
	if (proc_unlikely(p->crew_every != 0))
		proc_crew_sample(p, k, KM_OP_GET, shd->id, p->worker);
	if (shd->persistent) {
		struct km_key kc;
		uint8_t kbuf[KM_KEY_MAX];

		if (proc_likely(!proc_pf_on(p))) {
			len = proc_get_persistent(
				p, map, req, k, shd, cookie, out, cap, limit, &acc);
			goto out;
		}
		/* The reply overwrites the request, key included; and what the access teaches
		 * must wait for the reply (a prefetch may evict the value it copies). */
		memcpy(kbuf, k->data, k->len);
		kc = (struct km_key){.data = kbuf, .len = k->len, .hash = k->hash};
		len = proc_get_persistent(p, map, req, k, shd, cookie, out, cap, limit, &acc);
		/* Once per GET: on its first pass (what it found then), not when it comes back
		 * for room. */
		if (!p->again)
			proc_pf_access(p, map, shd, &kc, &req->hdr, src, acc);
		goto out;
	}
	if (km_store_get_hint(shd->store, k, hint, &v) != 0) {
		p->cnt.get_miss++;
		len = proc_reply_status(
			&req->hdr, KM_ST_NOT_FOUND, km_shardmap_epoch_fast(map), out);
		goto out;
	}
	len = proc_value_reply(p, &req->hdr, km_shardmap_epoch_fast(map), &v, out, cap, limit);
out:
	/* A value (or an absence) the replicas may not have yet waits for them. */
	if (proc_unlikely(shd->repl != NULL) && len >= KM_HDR_LEN && len != PROC_GROW &&
		(out[3] == KM_ST_OK || out[3] == KM_ST_NOT_FOUND)) {
		uint64_t w = proc_repl_read_wait(p, shd, k->hash);

		if (w != 0)
			return proc_park_read(p, shd, req, km_shardmap_epoch_fast(map), w, cookie,
				out, cap, limit, len);
	}
	if (proc_unlikely(len == PROC_GROW))
		shd->requests--; /* counted when it comes back */
	else if (proc_unlikely(p->crew_own != 0) && len >= KM_HDR_LEN && out[3] == KM_ST_OK &&
		 proc_crew_has(p, k->hash))
		km_put16(out + 4, KM_F_REPLY | KM_F_CREW); /* any worker may serve it */
	return len;
}

static size_t
exec_write(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_route *rt, const struct km_key *k, struct km_proc_shard *shd, uint64_t src,
	void *cookie, uint8_t *out, size_t cap)
{
	struct dedup_entry *d = dedup_find(p, src, &req->hdr, k->hash);
	uint64_t version = 0, seq = 0, rseq = 0;
	struct km_store *s;
	struct km_hdr h;
	uint8_t status;
	int rc;

	proc_count_write(p, req->hdr.op);
	/* A retry answered from the at-most-once table counts too: load on the shard. */
	if (shd != NULL)
		shd->requests++;

	/* A deposed primary answers nothing of a replicated shard, retries included. */
	if (proc_unlikely(shd != NULL && proc_repl_fenced(p, shd))) {
		p->cnt.busy_lease++;
		status = KM_ST_BUSY;
		goto reply;
	}
	if (d != NULL) {
		p->cnt.write_retry++;
		status = d->status;
		version = d->version;
		/* The first copy may still wait for its group: so does the retry. */
		if (d->seq != 0 && shd != NULL && shd->gen == d->gen &&
			shd->store->ops->durable_seq(shd->store) < d->seq)
			seq = d->seq;
		/* ... and for the replicas. */
		if (d->rseq != 0 && shd != NULL && shd->gen == d->gen && shd->repl != NULL &&
			!p->repl_async && shd->repl->acked < d->rseq)
			rseq = d->rseq;
		goto reply;
	}
	if (shd == NULL)
		return reply_busy(p, map, req, rt->shard, out);
	if (proc_unlikely(p->crew_every != 0))
		proc_crew_sample(p, k, req->hdr.op, shd->id, p->worker);
	s = shd->store;
	/* The DRAM bound: a write that may grow the store waits for room (reads and DELs go
	 * on). Its own size is a lower bound of what it adds. */
	if (p->dram_max != 0 && req->hdr.op != KM_OP_DEL &&
		p->dram_used + k->len + req->hdr.val_len > p->dram_max) {
		p->cnt.full++;
		status = KM_ST_FULL;
		goto reply;
	}
	if (proc_unlikely(proc_repl_fenced(p, shd))) {
		p->cnt.busy_lease++;
		status = KM_ST_BUSY;
		goto reply;
	}
	/* The replication window: a write the replicas cannot take now is not applied. */
	if (proc_unlikely(shd->repl != NULL) &&
		proc_repl_admit(p, shd, k, req->hdr.op == KM_OP_DEL ? 0 : req->hdr.val_len) < 0) {
		p->cnt.busy_repl++;
		status = KM_ST_BUSY;
		goto reply;
	}
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
	status = proc_status_of_rc(p, rc, 0);
	/* The key's read copy takes the write before the reply leaves (proc_crew.c). */
	if (rc == 0 && proc_unlikely(p->crew_own != 0))
		/* A replicated shard's copy goes instead (sync: the write is not acknowledged
		 * yet, and other workers would show it). */
		proc_crew_written(p, k,
			req->hdr.op == KM_OP_DEL || (shd->repl != NULL && !p->repl_async)
				? NULL
				: req->val,
			req->hdr.val_len, version);
	if (rc == 0 && s->ops->dram_bytes != NULL) {
		uint64_t now = s->ops->dram_bytes(s);

		p->dram_used = p->dram_used - shd->dram + now;
		shd->dram = now;
	}
	if (rc < 0 && shd->persistent)
		proc_mark_dirty(p, shd); /* a refused write may have left a record (a version
					  * reservation) that must still be written */
	if (proc_unlikely(p->mig != NULL) && rc == 0)
		proc_mig_mirror(
			p, map, shd->id, k, req->hdr.op, req->val, req->hdr.val_len, version);
	if (proc_unlikely(p->xp != NULL) && rc == 0)
		proc_export_write(p, shd->id, k, req->hdr.op, req->val, req->hdr.val_len, version);
	if (proc_unlikely(shd->repl != NULL) && rc == 0) {
		rseq = proc_repl_write(p, shd, k, req->hdr.op, req->val, req->hdr.val_len, version,
			src, req->hdr.req_id, rt->hash, status);
		if (p->repl_async)
			rseq = 0;
	}
	if (rc == 0 && shd->persistent) {
		proc_written_persistent(p, shd, req, k, version);
		if (proc_pf_on(p)) /* before the reply header is written over the request */
			proc_pf_access(p, map, shd, k, &req->hdr, src, KM_PROC_ACC_WRITE);
		if (s->ops->ack_waits != NULL && s->ops->ack_waits(s))
			seq = s->ops->write_seq(s);
	}
	/* Record every definitive outcome, refusals too: a retried CAS must not see its own
	 * write as a mismatch, nor a retried refused CAS succeed later. A server failure
	 * (ERROR) or a full write buffer (BUSY) changed nothing and may pass: its retry
	 * executes again. */
	if (status == KM_ST_ERROR || status == KM_ST_BUSY)
		goto reply;
	d = dedup_slot(p, src, req->hdr.req_id);
	*d = (struct dedup_entry){
		.src = src,
		.req_id = req->hdr.req_id,
		.key_hash = k->hash,
		.route_hash = rt->hash,
		.version = version,
		.seq = seq,
		.rseq = rseq,
		.gen = shd->gen,
		.op = req->hdr.op,
		.status = status,
		.valid = 1,
	};
	proc_dedup_listed(p, shd, (uint32_t)(d - p->dedup));
reply:
	reply_hdr(&h, &req->hdr, status, km_shardmap_epoch_fast(map));
	h.version = version;
	km_hdr_encode(out, &h);
	if (seq != 0 || rseq != 0)
		return proc_park_reply(
			p, shd, req, km_shardmap_epoch_fast(map), seq, rseq, src, cookie, out, cap);
	return KM_HDR_LEN;
}

/* One MGET entry's value: found (OK, *v), not found, or BUSY (not cached: its read starts
 * now and the client GETs the key, which then finds it cached or in flight). *acc tells
 * what it found (enum km_proc_access). */
static uint8_t
mget_entry(struct km_proc *p, struct km_proc_shard *shd, const struct km_key *k,
	struct km_value_ref *v, uint8_t *acc)
{
	uint8_t mark;
	int rc;

	/* A value the replicas may not have yet: the client GETs it, which waits. */
	if (proc_unlikely(proc_repl_read_wait(p, shd, k->hash) != 0 || proc_repl_fenced(p, shd)))
		return KM_ST_BUSY;
	if (!shd->persistent) {
		if (km_store_get(shd->store, k, v) == 0)
			return KM_ST_OK;
		p->cnt.get_miss++;
		return KM_ST_NOT_FOUND;
	}
	if (km_cache_get_mark(p->cache, k, shd->gen, v, &mark) == 0) {
		*acc = KM_PROC_ACC_HIT;
		if (mark != 0) {
			*acc = KM_PROC_ACC_PREFETCH_HIT;
			proc_pf_used(p, shd, mark);
		}
		return KM_ST_OK;
	}
	*acc = KM_PROC_ACC_MISS;
	if (proc_unlikely(p->overload))
		return KM_ST_BUSY; /* no new disk read while overloaded */
	rc = proc_read_key(p, shd, k, NULL, 0, v);
	if (rc == 0) {
		proc_cache_fill(p, k, shd->gen, v, 0);
		return KM_ST_OK;
	}
	if (rc == -ENOENT) {
		*acc = KM_PROC_ACC_NOT_FOUND;
		p->cnt.get_miss++;
		return KM_ST_NOT_FOUND;
	}
	if (rc == -EBADMSG) {
		p->cnt.damaged++;
		return KM_ST_DAMAGED;
	}
	return KM_ST_BUSY;
}

static size_t
exec_mget(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req, uint64_t src,
	uint8_t *out, size_t cap, size_t limit)
{
	uint8_t *b = p->scratch, *w, cbuf[KM_CREW_VALUE_MAX];
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
		return proc_reply_status(
			&req->hdr, KM_ST_BAD_REQUEST, km_shardmap_epoch_fast(map), out);
	}
	km_put16(b + KM_HDR_LEN, (uint16_t)count);
	w = b + KM_HDR_LEN + 2;
	while (km_mget_req_next(&it, &key, &klen)) {
		struct km_route rt;
		struct km_proc_shard *shd;
		struct km_value_ref v = {0};
		uint8_t status, acc = KM_PROC_ACC_HIT;
		struct km_key k;

		route_of(map, key, klen, &rt);
		shd = owned_shard(p, rt.shard, rt.hash);
		/* The request counts once, on the shard of its first key (its owner). */
		if (first && shd != NULL)
			shd->requests++;
		first = 0;
		if (shd == NULL) {
			/* Per entry, not BUSY, even for a shard in hand-over: the wire format
			 * (km_proto.h) gives entries MOVED and the client re-routes them; a
			 * hot key of another owner is served from its read copy. */
			key_init(&k, key, klen, &rt);
			status = KM_ST_MOVED;
			if (p->crew != NULL && proc_crew_mget_entry(p, &rt, &k, cbuf, &v) == 0)
				status = KM_ST_OK;
		} else {
			key_init(&k, key, klen, &rt);
			status = mget_entry(p, shd, &k, &v, &acc);
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
			return proc_reply_status(
				&req->hdr, KM_ST_TOO_LARGE, km_shardmap_epoch_fast(map), out);
		}
		w[0] = status;
		km_put64(w + 1, v.version);
		km_put16(w + 9, (uint16_t)v.len);
		/* MOVED/NOT_FOUND entries have no data pointer: memcpy(NULL, 0) is undefined. */
		if (v.len != 0)
			memcpy(w + KM_MGET_REP_ENTRY_HDR, v.data, v.len);
		w += KM_MGET_REP_ENTRY_HDR + v.len;
		/* After the copy: what the access teaches may evict the value v points to. */
		if (shd != NULL && shd->persistent && proc_pf_on(p))
			proc_pf_access(p, map, shd, &k, &req->hdr, src, acc);
	}
	if (proc_unlikely((size_t)(w - b) > limit)) {
		p->cnt.denied_cookie++;
		return proc_reply_denied(
			&req->hdr, KM_DENY_COOKIE, km_shardmap_epoch_fast(map), out);
	}
	reply_hdr(&h, &req->hdr, KM_ST_OK, km_shardmap_epoch_fast(map));
	h.val_len = (uint32_t)(w - b - KM_HDR_LEN);
	km_hdr_encode(b, &h);
	memcpy(out, b, (size_t)(w - b));
	return (size_t)(w - b);
}

static size_t
exec_map(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req, uint8_t *out,
	size_t cap, size_t limit)
{
	size_t lim = cap < KM_DGRAM_MAX ? cap : KM_DGRAM_MAX;
	struct km_hdr h;
	size_t n;

	p->cnt.req_map++;
	/* The cursor (first shard wanted) travels in the version field. */
	if (req->hdr.version >= km_shardmap_nb_shards(map)) {
		p->cnt.bad_request++;
		return proc_reply_status(
			&req->hdr, KM_ST_BAD_REQUEST, km_shardmap_epoch_fast(map), out);
	}
	n = km_shardmap_encode(map, (uint32_t)req->hdr.version, out + KM_HDR_LEN, lim - KM_HDR_LEN);
	if (KM_HDR_LEN + n > limit) {
		p->cnt.denied_cookie++;
		return proc_reply_denied(
			&req->hdr, KM_DENY_COOKIE, km_shardmap_epoch_fast(map), out);
	}
	reply_hdr(&h, &req->hdr, KM_ST_OK, km_shardmap_epoch_fast(map));
	h.val_len = (uint32_t)n;
	h.version = req->hdr.version;
	km_hdr_encode(out, &h);
	return KM_HDR_LEN + n;
}

/* Index slots one SCAN page examines (a driver may examine fewer: km_store.h). */
#define PROC_SCAN_SLOTS 256

/* A SCAN page being built in p->scratch (exec_scan()). */
struct scan_page {
	struct km_proc *p;
	struct km_proc_shard *shd;
	uint8_t *b; /* the reply */
	uint8_t *w; /* where the next entry goes */
	size_t lim; /* reply bytes at most */
	uint32_t count;
	uint32_t max; /* entries at most */
	int keys_only;
};

/* One entry into the page. @return 0, or 1: the page is full, the next one starts here. */
static int
scan_entry(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct scan_page *sp = arg;
	uint8_t status = KM_ST_OK;
	uint32_t vlen = sp->keys_only ? 0 : v->len;

	if (sp->count == sp->max)
		return 1;
	/* A write the replicas may not have yet: listed without its value, the client GETs
	 * the key, which waits for them. */
	if (proc_unlikely(sp->shd->repl != NULL) &&
		proc_repl_read_wait(sp->p, sp->shd, k->hash) != 0) {
		status = KM_ST_BUSY;
		vlen = 0;
	}
	if ((size_t)(sp->w - sp->b) + KM_SCAN_REP_ENTRY_HDR + k->len + vlen > sp->lim) {
		if (sp->count != 0)
			return 1;
		/* First of its page and still too large: no page can carry its value. */
		status = KM_ST_TOO_LARGE;
		vlen = 0;
	}
	sp->w[0] = status;
	sp->w[1] = (uint8_t)k->len;
	km_put64(sp->w + 2, v->version);
	km_put16(sp->w + 10, (uint16_t)vlen);
	memcpy(sp->w + KM_SCAN_REP_ENTRY_HDR, k->data, k->len);
	if (vlen != 0)
		memcpy(sp->w + KM_SCAN_REP_ENTRY_HDR + k->len, v->data, vlen);
	sp->w += KM_SCAN_REP_ENTRY_HDR + k->len + vlen;
	sp->count++;
	return 0;
}

/*
 * SCAN: one page of the keys beginning with the prefix, from the cursor on, in the store's
 * scan order (km_store.h: every key present throughout a scan is listed exactly once).
 */
static size_t
exec_scan(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req, uint8_t *out,
	size_t cap, size_t limit)
{
	uint32_t epoch = km_shardmap_epoch_fast(map);
	uint64_t cursor = req->hdr.version;
	const struct km_override_info *o;
	struct km_shardmap_route sr;
	struct km_proc_shard *shd;
	struct scan_page sp;
	struct km_hdr h;
	size_t size;
	int rc;

	p->cnt.req_scan++;
	/* Its keys share one shard only if the prefix ends their routing part: a separator
	 * follows it in the prefix. */
	if (km_shardmap_route_len(map, req->key, req->hdr.key_len) >= req->hdr.key_len) {
		p->cnt.bad_request++;
		return proc_reply_status(&req->hdr, KM_ST_BAD_REQUEST, epoch, out);
	}
	km_shardmap_route(map, req->key, req->hdr.key_len, &sr);
	/* A part the partition shifter overrides: its keys are spread by the added
	 * components (MIGRATING, SETTLED), so the prefix must name them too; and while they
	 * move (either way) they are in two places, whatever the prefix: later. */
	if (proc_unlikely(km_shardmap_nb_overrides(map) != 0) &&
		(o = km_shardmap_override_find(map, sr.part_hash)) != NULL) {
		if (o->state != KM_OVR_REVERTING && sr.route_len >= req->hdr.key_len) {
			p->cnt.bad_request++;
			return proc_reply_status(&req->hdr, KM_ST_BAD_REQUEST, epoch, out);
		}
		if (o->state != KM_OVR_SETTLED) {
			p->cnt.busy_handover++;
			return proc_reply_status(&req->hdr, KM_ST_BUSY, epoch, out);
		}
	}
	shd = owned_shard(p, sr.shard, sr.hash);
	if (shd == NULL)
		return reply_busy(p, map, req, sr.shard, out);
	if (proc_unlikely(proc_repl_fenced(p, shd))) {
		p->cnt.busy_lease++;
		return proc_reply_status(&req->hdr, KM_ST_BUSY, epoch, out);
	}
	/* A persistent store's page reads from the disk: not while overloaded. */
	if (proc_unlikely(p->overload) && shd->persistent) {
		p->cnt.busy_overload++;
		return proc_reply_status(&req->hdr, KM_ST_BUSY, epoch, out);
	}
	shd->requests++;
	sp = (struct scan_page){
		.p = p,
		.shd = shd,
		.b = p->scratch,
		.w = p->scratch + KM_HDR_LEN + 2,
		.lim = cap < sizeof(p->scratch) ? cap : sizeof(p->scratch),
		.max = req->hdr.val_len == KM_SCAN_REQ_LEN && km_get16(req->val) != 0
			       ? km_get16(req->val)
			       : UINT32_MAX,
		.keys_only = req->hdr.val_len == KM_SCAN_REQ_LEN &&
			     (km_get16(req->val + 2) & KM_SCAN_F_KEYS) != 0,
	};
	rc = km_store_scan(
		shd->store, req->key, req->hdr.key_len, &cursor, PROC_SCAN_SLOTS, scan_entry, &sp);
	if (rc < 0)
		return proc_reply_status(&req->hdr, proc_status_of_rc(p, rc, 1), epoch, out);
	size = (size_t)(sp.w - sp.b);
	if (proc_unlikely(size > limit)) {
		p->cnt.denied_cookie++;
		return proc_reply_denied(&req->hdr, KM_DENY_COOKIE, epoch, out);
	}
	p->cnt.scan_entries += sp.count;
	reply_hdr(&h, &req->hdr, KM_ST_OK, epoch);
	h.val_len = (uint32_t)(size - KM_HDR_LEN);
	h.version = cursor;
	km_hdr_encode(sp.b, &h);
	km_put16(sp.b + KM_HDR_LEN, (uint16_t)sp.count);
	memcpy(out, sp.b, size);
	return size;
}

/* Execute one request. For a single-key op, rt is its route, k its key (hint: the store's,
 * for a GET) and shd its shard (NULL when not owned or not attached); others ignore them.
 * @return the reply length, 0 when the reply is deferred. */
static inline __attribute__((always_inline)) size_t
exec_one(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_route *rt, const struct km_key *k, uint64_t hint, struct km_proc_shard *shd,
	uint64_t src, void *cookie, uint8_t *out, size_t cap, size_t limit)
{
	struct km_hdr h;

	switch (req->hdr.op) {
	case KM_OP_GET:
		return exec_get(p, map, req, rt->shard, k, hint, shd, src, cookie, out, cap, limit);
	case KM_OP_PUT:
	case KM_OP_CAS:
	case KM_OP_DEL:
		return exec_write(p, map, req, rt, k, shd, src, cookie, out, cap);
	case KM_OP_MGET:
		return exec_mget(p, map, req, src, out, cap, limit);
	case KM_OP_MAP:
		return exec_map(p, map, req, out, cap, limit);
	case KM_OP_SCAN:
		return exec_scan(p, map, req, out, cap, limit);
	case KM_OP_HELLO:
		return proc_exec_hello(p, map, req, src, out);
	case KM_OP_PING:
		p->cnt.req_ping++;
		reply_hdr(&h, &req->hdr, KM_ST_OK, km_shardmap_epoch_fast(map));
		h.version = p->worker; /* which worker answered: useful to check steering */
		km_hdr_encode(out, &h);
		return KM_HDR_LEN;
	default:
		p->cnt.bad_request++;
		return proc_reply_status(
			&req->hdr, KM_ST_BAD_REQUEST, km_shardmap_epoch_fast(map), out);
	}
}

void
proc_exec_req(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r)
{
	size_t len;

	p->again = r->again;
	len = exec_one(p, map, &r->msg, &r->rt, &r->key, r->hint, r->shd, r->src, r->cookie, r->buf,
		r->cap, r->limit);
	p->again = 0;
	if (len == 0) {
		r->verdict = KM_PROC_DEFER;
	} else if (proc_unlikely(len == PROC_GROW)) {
		r->verdict = KM_PROC_GROW;
	} else {
		r->verdict = KM_PROC_REPLY;
		r->reply_len = len;
	}
}
