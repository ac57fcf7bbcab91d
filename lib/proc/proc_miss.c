/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The miss path of persistent stores (DESIGN §5): requests whose replies wait (struct
 * defer), reads in flight keyed by key (struct pend), write replies parked until their
 * group is durable, and the replies ready for the caller (see proc_private.h).
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proc_private.h"

static struct defer *
defer_get(struct km_proc *p, const struct km_hdr *req, uint32_t epoch, void *cookie, uint8_t *out,
	size_t cap, size_t limit)
{
	struct defer *d = p->defer_free;

	if (d == NULL)
		return NULL;
	p->defer_free = d->next;
	p->nb_defer++;
	*d = (struct defer){.cookie = cookie,
		.out = out,
		.cap = cap,
		.limit = limit,
		.hdr = *req,
		.epoch = epoch};
	return d;
}

static inline void
defer_put(struct km_proc *p, struct defer *d)
{
	d->next = p->defer_free;
	p->defer_free = d;
	p->nb_defer--;
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
	defer_put(p, d);
}

/* A value read from the store enters the cache (a prefetch's: marked until its first hit;
 * what it evicts is remembered, to count its harm). */
void
proc_cache_fill(struct km_proc *p, const struct km_key *k, uint64_t gen,
	const struct km_value_ref *v, uint8_t mark)
{
	proc_ghost_clear(p, k->hash);
	p->pf_filling = mark;
	km_cache_put(p->cache, k, gen, v->data, v->len, v->version, mark);
	p->pf_filling = 0;
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

int
proc_read_pending(struct km_proc *p, const struct km_key *k)
{
	return pend_find(p, k) != NULL;
}

static struct pend *
pend_new(struct km_proc *p, const struct km_key *k, const struct km_proc_shard *sl, uint8_t mark)
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
	pe->mark = mark;
	pe->late = 0; /* after kbuf: not cleared by the memset above */
	pe->restarts = 0;
	pe->t_start = p->now_ns;
	if (mark != 0)
		p->pf_inflight++;
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
	if (pe->mark != 0)
		p->pf_inflight--;
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

/*
 * Answer every waiter of pe: with v (rc 0) or the status rc maps to. A waiter whose buffer
 * is too small for v goes back to the caller unanswered (len 0, km_proc_done).
 * @return the waiters sent back so.
 */
static unsigned int
pend_answer(struct km_proc *p, struct pend *pe, int rc, const struct km_value_ref *v)
{
	struct defer *d = pe->waiters, *next;
	unsigned int grown = 0;
	size_t len;

	pe->waiters = pe->waiters_tail = NULL;
	for (; d != NULL; d = next) {
		next = d->next;
		if (rc == 0)
			len = proc_value_reply(p, &d->hdr, d->epoch, v, d->out, d->cap, d->limit);
		else
			len = proc_reply_status(
				&d->hdr, proc_status_of_rc(p, rc, 1), d->epoch, d->out);
		if (len == PROC_GROW) {
			len = 0;
			grown++;
		} else if (rc == 0 && len > KM_HDR_LEN) {
			/* A value the replicas may not have yet waits for them. */
			struct km_proc_shard *sl = shard_find(p, pe->shard_id);
			uint64_t w = sl != NULL ? proc_repl_read_wait(p, sl, pe->key.hash) : 0;

			if (w != 0) {
				d->seq = 0;
				d->rseq = w;
				d->len = len;
				p->cnt.repl_read_waits++;
				proc_park_defer(sl, d);
				continue;
			}
		}
		ready_push(p, d, len);
	}
	return grown;
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
	if (pe->mark != 0)
		proc_pf_read_done(p, pe->t_start);
	/* A prefetch a request joined is a demand read now: cached unmarked. A prefetch
	 * nobody waited for leaves a value cached meanwhile alone (a write put it there: it
	 * is as new, and it is not the prefetch's to claim). */
	if (rc == 0 && p->cache != NULL &&
		(pe->waiters != NULL || pe->mark == 0 ||
			!km_cache_contains(p->cache, &pe->key, pe->gen)))
		proc_cache_fill(p, &pe->key, pe->gen, &v, pe->waiters == NULL ? pe->mark : 0);
	/* A GET sent back for room counts on its shard when it comes back. */
	sl->requests -= pend_answer(p, pe, rc, &v);
	pend_release(p, pe);
}

/*
 * Read k of shard sl for a request (d != NULL: it waits on the read) or for a prefetch
 * (d == NULL, mark != 0). Joins a read of k already in flight.
 * @return 1 the request waits (or the read started); 2 the request waits for a prefetch
 *   still in flight (late); 0 value at once in *v (the request was not queued); < 0:
 *   -ENOENT, -EAGAIN (no room), other errors.
 */
int
proc_read_key(struct km_proc *p, struct km_proc_shard *sl, const struct km_key *k, struct defer *d,
	uint8_t mark, struct km_value_ref *v)
{
	struct pend *pe = pend_find(p, k);
	int rc;

	if (pe != NULL) {
		if (pe->shard_id != sl->id || pe->gen != sl->gen)
			return -EAGAIN; /* a read for a previous owner of the shard: soon gone */
		if (d == NULL)
			return 1;
		pend_wait(pe, d);
		p->cnt.read_coalesced++;
		if (pe->mark == 0 || pe->late)
			return 1;
		/* The first request that waits for a prefetch: it came too late. */
		pe->late = 1;
		p->cnt.prefetch_coalesced++;
		proc_pf_late(p, sl, pe->mark);
		return 2;
	}
	pe = pend_new(p, k, sl, mark);
	if (pe == NULL)
		return -EAGAIN;
	rc = pend_start(p, pe, sl->store, v);
	if (rc != 1) {
		pend_release(p, pe);
		return rc;
	}
	if (mark != 0)
		p->cnt.prefetch_issued++;
	if (d != NULL)
		pend_wait(pe, d);
	return 1;
}

/* GET of a key whose store keeps values on disk: cache, read in flight, or a new read.
 * *acc tells what it found (enum km_proc_access). */
size_t
proc_get_persistent(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	const struct km_key *k, struct km_proc_shard *shd, void *cookie, uint8_t *out, size_t cap,
	size_t limit, uint8_t *acc)
{
	struct km_value_ref v;
	struct defer *d;
	uint8_t mark;
	int rc;

	if (km_cache_get_mark(p->cache, k, shd->gen, &v, &mark) == 0) {
		*acc = KM_PROC_ACC_HIT;
		if (mark != 0) {
			*acc = KM_PROC_ACC_PREFETCH_HIT;
			proc_pf_used(p, shd, mark);
		}
		return proc_value_reply(
			p, &req->hdr, km_shardmap_epoch_fast(map), &v, out, cap, limit);
	}
	*acc = KM_PROC_ACC_MISS;
	if (proc_unlikely(p->overload)) {
		/* A read costs a read slot, a packet held and a disk access: more than BUSY. */
		p->cnt.busy_overload++;
		return proc_reply_status(&req->hdr, KM_ST_BUSY, km_shardmap_epoch_fast(map), out);
	}
	d = defer_get(p, &req->hdr, km_shardmap_epoch_fast(map), cookie, out, cap, limit);
	if (d == NULL) {
		p->cnt.busy_pending++;
		return proc_reply_status(&req->hdr, KM_ST_BUSY, km_shardmap_epoch_fast(map), out);
	}
	rc = proc_read_key(p, shd, k, d, 0, &v);
	if (rc == 2)
		*acc = KM_PROC_ACC_LATE;
	if (rc >= 1)
		return 0;
	/* Not queued: answer now. */
	defer_put(p, d);
	if (rc == -ENOENT)
		*acc = KM_PROC_ACC_NOT_FOUND;
	if (rc != 0)
		return proc_reply_status(
			&req->hdr, proc_status_of_rc(p, rc, 1), km_shardmap_epoch_fast(map), out);
	proc_cache_fill(p, k, shd->gen, &v, 0);
	return proc_value_reply(p, &req->hdr, km_shardmap_epoch_fast(map), &v, out, cap, limit);
}

void
proc_mark_dirty(struct km_proc *p, struct km_proc_shard *sl)
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

/* A write to a persistent store succeeded: keep the cache right and the group coming. */
void
proc_written_persistent(struct km_proc *p, struct km_proc_shard *shd, const struct km_msg *req,
	const struct km_key *k, uint64_t version)
{
	proc_ghost_clear(p, k->hash); /* what it was, a miss now does not say */
	if (req->hdr.op == KM_OP_DEL)
		km_cache_invalidate(p->cache, k);
	else if (km_cache_put(p->cache, k, shd->gen, req->val, req->hdr.val_len, version, 0) < 0)
		km_cache_invalidate(p->cache, k);
	proc_mark_dirty(p, shd);
}

void
proc_park_defer(struct km_proc_shard *sl, struct defer *d)
{
	d->next = NULL;
	if (sl->parked_tail != NULL)
		sl->parked_tail->next = d;
	else
		sl->parked_head = d;
	sl->parked_tail = d;
}

/* Every reply parked on sl, with status instead of the one built (a failed group). */
void
proc_parked_fail(struct km_proc *p, struct km_proc_shard *sl, uint8_t status)
{
	struct defer *d = sl->parked_head, *next;

	sl->parked_head = sl->parked_tail = NULL;
	for (; d != NULL; d = next) {
		next = d->next;
		/* A write refused here may be retried and executed again, except one that
		 * only waited for the replicas: it stands, and its entry goes along with the
		 * shard to answer the retry. A GET has no entry. */
		if (d->hdr.op != KM_OP_GET &&
			(status == KM_ST_ERROR || d->seq != 0 || d->rseq == 0))
			dedup_forget(p, d->src, d->hdr.req_id);
		if (status == KM_ST_ERROR)
			p->cnt.write_failed++;
		else
			p->cnt.busy_handover++;
		ready_push(p, d, proc_reply_status(&d->hdr, status, d->epoch, d->out));
	}
}

/* A store tells how far its records are durable (from km_io_poll or a drain). */
void
proc_store_durable(void *arg, uint64_t shard_id, uint64_t seq, int err)
{
	struct km_proc *p = arg;
	struct km_proc_shard *sl = shard_find(p, shard_id);
	struct defer *d;

	if (sl == NULL)
		return;
	while ((d = sl->parked_head) != NULL && d->seq <= seq &&
		(d->rseq == 0 || (sl->repl != NULL && d->rseq <= sl->repl->acked))) {
		sl->parked_head = d->next;
		if (sl->parked_head == NULL)
			sl->parked_tail = NULL;
		ready_push(p, d, d->len != 0 ? d->len : KM_HDR_LEN);
	}
	if (err < 0) {
		proc_mig_durable_failed(p, shard_id);
		proc_export_durable_failed(p, shard_id);
		proc_repl_rolled_back(p, sl);
		/* Rolled back: values of the failed group may be cached, or copied. */
		km_cache_clear(p->cache);
		km_proc_crew_withdraw(p, shard_id);
		proc_parked_fail(p, sl, KM_ST_ERROR);
	}
}

void
proc_parked_release(struct km_proc *p, struct km_proc_shard *sl)
{
	uint64_t durable = sl->persistent ? sl->store->ops->durable_seq(sl->store) : UINT64_MAX;
	uint64_t acked = sl->repl != NULL ? sl->repl->acked : UINT64_MAX;
	struct defer *d;

	while ((d = sl->parked_head) != NULL && d->seq <= durable && d->rseq <= acked) {
		sl->parked_head = d->next;
		if (sl->parked_head == NULL)
			sl->parked_tail = NULL;
		ready_push(p, d, d->len != 0 ? d->len : KM_HDR_LEN);
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

/*
 * In sync mode, park the reply built at out until record seq of shd is durable (seq 0:
 * nothing to wait for on disk) and write rseq acknowledged by the replicas (0: none).
 * @return 0: parked, km_proc_poll() hands it back; or the length of the reply at out
 *   (durable and acknowledged already), or of an ERROR reply written instead (the disk
 *   cannot be waited for), or of a BUSY one (no deferral to wait for the replicas with:
 *   the retry is answered from the at-most-once entry, once acknowledged).
 */
size_t
proc_park_reply(struct km_proc *p, struct km_proc_shard *shd, const struct km_msg *req,
	uint32_t epoch, uint64_t seq, uint64_t rseq, uint64_t src, void *cookie, uint8_t *out,
	size_t cap)
{
	struct defer *d = defer_get(p, &req->hdr, epoch, cookie, out, cap, SIZE_MAX);

	while (d == NULL && seq != 0) {
		/* Every deferral is taken: write out what waits and wait for completions to
		 * free one. Rare, and never an acknowledgement before the disk has the
		 * record. */
		flush_dirty(p);
		if (km_io_inflight(p->io) == 0 || km_io_wait(p->io) < 0)
			break;
		d = defer_get(p, &req->hdr, epoch, cookie, out, cap, SIZE_MAX);
	}
	/* While waiting, the group of this write may have completed, or failed and been
	 * rolled back (numbers after the durable one are then reused). */
	if (seq != 0 && (d == NULL || shd->store->ops->write_seq(shd->store) < seq)) {
		dedup_forget(p, src, req->hdr.req_id);
		if (d != NULL)
			defer_put(p, d);
		p->cnt.write_failed++;
		return proc_reply_status(&req->hdr, KM_ST_ERROR, epoch, out);
	}
	if ((seq == 0 || shd->store->ops->durable_seq(shd->store) >= seq) &&
		(rseq == 0 || (shd->repl != NULL && proc_repl_acked(shd->repl) >= rseq))) {
		if (d != NULL)
			defer_put(p, d);
		return KM_HDR_LEN; /* durable already: the reply built at out stands */
	}
	if (d == NULL) {
		p->cnt.busy_pending++;
		return proc_reply_status(&req->hdr, KM_ST_BUSY, epoch, out);
	}
	d->seq = seq;
	d->rseq = rseq;
	d->src = src;
	if (rseq != 0)
		p->cnt.repl_waited++;
	else
		p->cnt.write_deferred++;
	proc_park_defer(shd, d);
	return 0;
}

/* A GET's reply (len bytes built at out) waits for write rseq of shd to be acknowledged.
 * @return 0 parked, or the length of a BUSY reply written instead (no deferral free). */
size_t
proc_park_read(struct km_proc *p, struct km_proc_shard *shd, const struct km_msg *req,
	uint32_t epoch, uint64_t rseq, void *cookie, uint8_t *out, size_t cap, size_t limit,
	size_t len)
{
	struct defer *d = defer_get(p, &req->hdr, epoch, cookie, out, cap, limit);

	if (d == NULL) {
		p->cnt.busy_pending++;
		return proc_reply_status(&req->hdr, KM_ST_BUSY, epoch, out);
	}
	d->rseq = rseq;
	d->len = len;
	p->cnt.repl_read_waits++;
	proc_park_defer(shd, d);
	return 0;
}

unsigned int
km_proc_poll(struct km_proc *p, struct km_proc_done *done, unsigned int max)
{
	unsigned int n = 0;

	if (p->io != NULL) {
		km_io_poll(p->io, 1024);
		flush_dirty(p);
	}
	if (proc_unlikely(p->nb_repl != 0))
		proc_repl_poll(p);
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
	return (p->io != NULL && (km_io_inflight(p->io) != 0 || p->nb_dirty != 0)) ||
	       p->ready_n != 0 || (p->nb_repl != 0 && proc_repl_parked(p));
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
