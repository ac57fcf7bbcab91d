/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Live export of a shard (km_proc.h): the copy of a cross-node move while the shard serves.
 *
 * The owner worker produces chunks, one consumer thread sends them; two single-producer
 * single-consumer rings of chunk pointers join them (full: owner -> consumer, free: back).
 * Every chunk is in exactly one place: a ring, the owner's current chunk, or the consumer's
 * hands, so neither ring can overflow.
 *
 * Completeness: the walk (km_store_ops.walk_step) visits every entry that is in the store
 * from its first call to its last and is not written meanwhile; every write applied to the
 * shard meanwhile is encoded when it is applied. Both are encoded in the order the owner
 * does them, so replaying the chunks in order gives each key its last state, and a key the
 * walk missed was written, hence encoded. A walk call that fn stops may break the promise
 * (km_store.h): it is walked again from where it began, with a smaller budget so that it
 * fits in the chunks left.
 *
 * Back pressure: the walk only goes on while more than XRESERVE chunks are free, keeping
 * those for the writes; a write that finds no chunk at all fails the export (the consumer
 * is slower than the writes), and so does any other doubt (a write-out that failed, a walk
 * error, the shard detached before its walk ended): the caller then copies the detached
 * shard whole.
 */

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "proc_private.h"

#define XSTEP_ENTRIES 256 /* entries (mem: slots) visited per call at most */
#define XSTOPPED      2   /* encode_entry: no chunk for the entry, the call stops */

struct xring {
	_Atomic uint32_t head; /* written by the producer */
	_Atomic uint32_t tail; /* written by the consumer */
	uint32_t mask;
	struct km_proc_xchunk **slot;
};

struct km_proc_export {
	uint64_t shard_id;
	uint32_t nb_chunks;
	uint32_t reserve; /* chunks the walk leaves to the writes */
	_Atomic uint32_t refs;
	struct xring full, free;
	/* The owner's. */
	struct km_proc_xchunk *cur;
	struct km_walk_pos pos;
	uint32_t budget;
	uint8_t started;
	/* Status (owner writes, anyone reads). */
	_Atomic int err;
	_Atomic uint8_t walked, ended;
	_Atomic uint64_t entries, writes;
	/* Replication mode (km_proc_repl_*). */
	uint8_t repl;
	_Atomic uint8_t synced; /* consumer: the replica applied the sync record */
	_Atomic uint8_t wait;   /* replies wait for this stream even before synced */
	_Atomic uint64_t acked; /* consumer: the replica applied every write up to it */
	_Atomic uint64_t walk_rseq, rseq;
	uint64_t tag; /* the replica's bit in its shard's blocked mask (0: none) */
	/* The at-most-once entries sent after the walk (wire format), dd_off of dd_n sent;
	 * dd_state 0 not taken yet, 1 being sent, 2 sent. */
	uint8_t *dd;
	uint32_t dd_n, dd_off;
	uint8_t dd_state;
	struct km_proc_xchunk *all[];
};

static int
xring_push(struct xring *r, struct km_proc_xchunk *c)
{
	uint32_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint32_t t = atomic_load_explicit(&r->tail, memory_order_acquire);

	if (h - t > r->mask)
		return -ENOBUFS;
	r->slot[h & r->mask] = c;
	atomic_store_explicit(&r->head, h + 1, memory_order_release);
	return 0;
}

static struct km_proc_xchunk *
xring_pop(struct xring *r)
{
	uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
	uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);
	struct km_proc_xchunk *c;

	if (t == h)
		return NULL;
	c = r->slot[t & r->mask];
	atomic_store_explicit(&r->tail, t + 1, memory_order_release);
	return c;
}

static uint32_t
xring_count(const struct xring *r)
{
	return atomic_load_explicit(&r->head, memory_order_acquire) -
	       atomic_load_explicit(&r->tail, memory_order_acquire);
}

int
km_proc_export_new(uint64_t shard_id, uint32_t nb_chunks, struct km_proc_export **out)
{
	struct km_proc_export *x;
	uint32_t cap = 4, i;

	*out = NULL;
	if (shard_id == 0 || nb_chunks < 4 || nb_chunks > 4096)
		return -EINVAL;
	while (cap < nb_chunks)
		cap <<= 1;
	x = calloc(1, sizeof(*x) + nb_chunks * sizeof(x->all[0]));
	if (x == NULL)
		return -ENOMEM;
	x->shard_id = shard_id;
	x->nb_chunks = nb_chunks;
	x->reserve = nb_chunks / 4;
	x->budget = XSTEP_ENTRIES;
	atomic_init(&x->refs, 1);
	x->full.mask = x->free.mask = cap - 1;
	x->full.slot = calloc(cap, sizeof(x->full.slot[0]));
	x->free.slot = calloc(cap, sizeof(x->free.slot[0]));
	for (i = 0; i < nb_chunks && x->full.slot != NULL && x->free.slot != NULL; i++) {
		x->all[i] = malloc(sizeof(*x->all[i]));
		if (x->all[i] == NULL)
			break;
		xring_push(&x->free, x->all[i]);
	}
	if (i < nb_chunks) {
		x->nb_chunks = i; /* the ones allocated */
		km_proc_export_put(x);
		return -ENOMEM;
	}
	*out = x;
	return 0;
}

void
km_proc_export_put(struct km_proc_export *x)
{
	uint32_t i;

	if (x == NULL || atomic_fetch_sub_explicit(&x->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (i = 0; i < x->nb_chunks; i++)
		free(x->all[i]);
	free(x->dd);
	free(x->full.slot);
	free(x->free.slot);
	free(x);
}

/* The owner is done with the export: failed with err (< 0), or complete (0). */
static void
x_end(struct km_proc *p, int err)
{
	struct km_proc_export *x = p->xp;

	if (err < 0) {
		atomic_store_explicit(&x->err, err, memory_order_relaxed);
		p->cnt.export_failed++;
	} else {
		p->cnt.export_done++;
	}
	/* Release: a consumer that sees ended sees the last chunk queued before it. */
	atomic_store_explicit(&x->ended, 1, memory_order_release);
	p->xp = NULL;
	km_proc_export_put(x);
}

/* Room for need bytes in the current chunk. @return 0, or -ENOBUFS: no chunk free. */
static int
x_room(struct km_proc_export *x, size_t need)
{
	if (x->cur != NULL && x->cur->len + need <= sizeof(x->cur->data))
		return 0;
	if (x->cur != NULL) {
		xring_push(&x->full, x->cur); /* never full: it holds every chunk at most */
		x->cur = NULL;
	}
	x->cur = xring_pop(&x->free);
	if (x->cur == NULL)
		return -ENOBUFS;
	x->cur->len = 0;
	x->cur->records = 0;
	x->cur->last = 0;
	x->cur->keys = 0;
	return 0;
}

/* Encode one record into the current chunk, with tail more bytes after its value (a
 * replicated write's: flagged KM_PROC_XREC_W; *tailp where they go, filled by the caller).
 * @return 0 or -ENOBUFS. */
static int
x_encode_tail(struct km_proc_export *x, const struct km_key *k, int del, const void *val,
	uint32_t len, uint64_t version, size_t tail, uint8_t **tailp)
{
	size_t need = KM_PROC_XREC_HDR + k->len + (del ? 0 : len) + tail;
	uint8_t *b;

	if (x_room(x, need) < 0)
		return -ENOBUFS;
	b = x->cur->data + x->cur->len;
	if (tailp != NULL)
		*tailp = b + need - tail;
	km_be_put(b, k->len | (del ? KM_PROC_XREC_DEL : 0) | (tail != 0 ? KM_PROC_XREC_W : 0), 2);
	km_be_put(b + 2, del ? 0 : len, 4);
	km_be_put(b + 6, version, 8);
	memcpy(b + KM_PROC_XREC_HDR, k->data, k->len);
	if (!del && len != 0)
		memcpy(b + KM_PROC_XREC_HDR + k->len, val, len);
	x->cur->len += (uint32_t)need;
	x->cur->records++;
	return 0;
}

static int
x_encode(struct km_proc_export *x, const struct km_key *k, int del, const void *val, uint32_t len,
	uint64_t version)
{
	return x_encode_tail(x, k, del, val, len, version, 0, NULL);
}

/* Whether shard sl can be walked by an export. @return 0, -ENOENT, -ENOTSUP, -EBADMSG. */
static int
x_walkable(const struct km_proc_shard *sl)
{
	struct km_store_stats st;

	if (sl == NULL)
		return -ENOENT;
	if (sl->store->ops->walk_step == NULL)
		return -ENOTSUP;
	km_store_stats(sl->store, &st);
	return st.quarantined != 0 ? -EBADMSG : 0;
}

int
km_proc_export_start(struct km_proc *p, struct km_proc_export *x)
{
	struct km_proc_shard *sl = shard_find(p, x->shard_id);
	int rc;

	if (x->started)
		return -EINVAL;
	if (p->xp != NULL || p->mig != NULL)
		return -EBUSY;
	rc = x_walkable(sl);
	if (rc < 0)
		return rc;
	x->started = 1;
	atomic_fetch_add_explicit(&x->refs, 1, memory_order_relaxed);
	p->xp = x;
	p->cnt.export_started++;
	return 0;
}

int
km_proc_export_active(const struct km_proc *p)
{
	return p->xp != NULL;
}

static int
encode_entry(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct km_proc_export *x = arg;
	size_t need = KM_PROC_XREC_HDR + k->len + v->len;

	/* A new chunk only while more than the writes' reserve is free. */
	if ((x->cur == NULL || x->cur->len + need > sizeof(x->cur->data)) &&
		xring_count(&x->free) <= x->reserve)
		return XSTOPPED;
	if (x_encode(x, k, 0, v->data, v->len, v->version) < 0)
		return XSTOPPED;
	atomic_fetch_add_explicit(&x->entries, 1, memory_order_relaxed);
	return 0;
}

/* One step of x's walk over s (or, walked, the current chunk handed on when the consumer
 * waits). @return 1 more to walk now, 0 not now, 2 the walk just ended, < 0 a walk error. */
static int
x_step(struct km_proc_export *x, struct km_store *s)
{
	struct km_walk_pos before;
	int rc;

	if (atomic_load_explicit(&x->walked, memory_order_relaxed)) {
		/* The writes' records go as soon as the consumer waits for them. */
		if (x->cur != NULL && x->cur->len != 0 && xring_count(&x->full) == 0) {
			xring_push(&x->full, x->cur);
			x->cur = NULL;
		}
		return 0;
	}
	if (xring_count(&x->free) <= x->reserve &&
		(x->cur == NULL || x->cur->len > sizeof(x->cur->data) / 2))
		return 0; /* the consumer is behind: the free chunks are the writes' */
	before = x->pos;
	rc = km_store_walk_step(s, &x->pos, x->budget, encode_entry, x);
	if (rc == XSTOPPED) {
		/* Walked again from where this call began, in smaller calls. */
		x->pos = before;
		x->budget = x->budget > 1 ? x->budget / 2 : 1;
		return 0;
	}
	if (rc < 0)
		return rc;
	if (x->budget < XSTEP_ENTRIES)
		x->budget *= 2;
	return rc == 0 ? 2 : 1;
}

unsigned int
km_proc_export_step(struct km_proc *p)
{
	struct km_proc_export *x = p->xp;
	struct km_proc_shard *sl;
	int rc;

	if (x == NULL)
		return 0;
	sl = shard_find(p, x->shard_id);
	if (sl == NULL) { /* cannot be: its detach ends the export */
		x_end(p, -ENOENT);
		return 0;
	}
	rc = x_step(x, sl->store);
	if (rc < 0) {
		x_end(p, rc);
		return 0;
	}
	if (rc == 2) {
		atomic_store_explicit(&x->walked, 1, memory_order_release);
		return 0;
	}
	return (unsigned int)rc;
}

void
km_proc_export_cancel(struct km_proc *p)
{
	if (p->xp != NULL)
		x_end(p, -ECANCELED);
}

void
proc_export_write(struct km_proc *p, uint64_t shard_id, const struct km_key *k, uint8_t op,
	const void *val, uint32_t len, uint64_t version)
{
	struct km_proc_export *x = p->xp;

	if (x->shard_id != shard_id)
		return;
	if (x_encode(x, k, op == KM_OP_DEL, val, len, version) < 0) {
		x_end(p, -ENOBUFS);
		return;
	}
	atomic_fetch_add_explicit(&x->writes, 1, memory_order_relaxed);
}

void
proc_export_durable_failed(struct km_proc *p, uint64_t shard_id)
{
	/* Writes exported were rolled back. */
	if (p->xp != NULL && p->xp->shard_id == shard_id)
		x_end(p, -EIO);
}

void
proc_export_detached(struct km_proc *p, uint64_t shard_id, struct km_store *s)
{
	struct km_proc_export *x = p->xp;
	struct km_store_stats st;

	if (x == NULL || x->shard_id != shard_id)
		return;
	if (!atomic_load_explicit(&x->walked, memory_order_relaxed)) {
		x_end(p, -ECANCELED);
		return;
	}
	if (x->cur == NULL && x_room(x, 0) < 0) {
		x_end(p, -ENOBUFS);
		return;
	}
	km_store_stats(s, &st);
	x->cur->last = 1;
	x->cur->keys = st.keys;
	xring_push(&x->full, x->cur);
	x->cur = NULL;
	x_end(p, 0);
}

struct km_proc_xchunk *
km_proc_export_take(struct km_proc_export *x)
{
	return xring_pop(&x->full);
}

void
km_proc_export_give(struct km_proc_export *x, struct km_proc_xchunk *c)
{
	xring_push(&x->free, c);
}

void
km_proc_export_status(const struct km_proc_export *x, struct km_proc_export_status *out)
{
	out->ended = atomic_load_explicit(&x->ended, memory_order_acquire);
	out->err = atomic_load_explicit(&x->err, memory_order_relaxed);
	out->walked = atomic_load_explicit(&x->walked, memory_order_acquire);
	out->backlog = xring_count(&x->full);
	out->free = xring_count(&x->free);
	out->entries = atomic_load_explicit(&x->entries, memory_order_relaxed);
	out->writes = atomic_load_explicit(&x->writes, memory_order_relaxed);
}

int
km_proc_xrec_apply(struct km_store *s, const uint8_t *rec, size_t len, size_t *used)
{
	uint32_t klen, vlen;
	uint64_t version, v;
	struct km_key k;
	int del, rc;

	if (len < KM_PROC_XREC_HDR)
		return -EPROTO;
	klen = (uint32_t)km_be_get(rec, 2);
	del = (klen & KM_PROC_XREC_DEL) != 0;
	klen &= ~(KM_PROC_XREC_DEL | KM_PROC_XREC_W); /* a replicated write's tail is skipped */
	vlen = (uint32_t)km_be_get(rec + 2, 4);
	version = km_be_get(rec + 6, 8);
	if (klen == 0 || klen > KM_KEY_MAX || (del && vlen != 0) || vlen > KM_VALUE_MAX_LARGE ||
		version == 0 || len - KM_PROC_XREC_HDR < (size_t)klen + vlen)
		return -EPROTO;
	k = (struct km_key){.data = rec + KM_PROC_XREC_HDR,
		.len = (uint16_t)klen,
		.hash = km_key_hash(rec + KM_PROC_XREC_HDR, klen)};
	if (del) {
		rc = km_store_del(s, &k, KM_VERSION_ANY, &v);
		if (rc == -ENOENT)
			rc = 0;
	} else {
		rc = km_store_load(s, &k, rec + KM_PROC_XREC_HDR + klen, vlen, version);
	}
	if (rc == 0)
		*used = KM_PROC_XREC_HDR + klen + vlen;
	return rc;
}

void
km_proc_dedup_encode(const struct km_proc_dedup *set, uint8_t *buf)
{
	uint32_t i;

	for (i = 0; set != NULL && i < set->n; i++, buf += KM_PROC_DEDUP_WIRE) {
		const struct dedup_entry *d = &set->e[i];

		km_be_put(buf, d->src, 8);
		km_be_put(buf + 8, d->req_id, 8);
		km_be_put(buf + 16, d->key_hash, 8);
		km_be_put(buf + 24, d->route_hash, 8);
		km_be_put(buf + 32, d->version, 8);
		buf[40] = d->op;
		buf[41] = d->status;
	}
}

struct km_proc_dedup *
km_proc_dedup_decode(const uint8_t *buf, uint32_t n)
{
	struct km_proc_dedup *set;
	uint32_t i;

	if (n == 0 || (set = malloc(sizeof(*set) + (size_t)n * sizeof(set->e[0]))) == NULL)
		return NULL;
	set->n = n;
	set->repl_tags = 0; /* nothing carried */
	for (i = 0; i < n; i++, buf += KM_PROC_DEDUP_WIRE)
		set->e[i] = (struct dedup_entry){.src = km_be_get(buf, 8),
			.req_id = km_be_get(buf + 8, 8),
			.key_hash = km_be_get(buf + 16, 8),
			.route_hash = km_be_get(buf + 24, 8),
			.version = km_be_get(buf + 32, 8),
			.op = buf[40],
			.status = buf[41],
			.valid = 1};
	return set;
}

/* ---- Replication (km_proc.h) --------------------------------------------------------- */

int
km_proc_repl_new(uint64_t shard_id, uint32_t nb_chunks, struct km_proc_export **out)
{
	int rc = km_proc_export_new(shard_id, nb_chunks, out);

	if (rc == 0)
		(*out)->repl = 1;
	return rc;
}

static struct proc_repl *
repl_get(struct km_proc *p, struct km_proc_shard *sl)
{
	uint64_t *ids;

	if (sl->repl != NULL)
		return sl->repl;
	if (p->nb_repl == p->repl_cap) {
		ids = realloc(p->repl_ids, (p->repl_cap * 2 + 8) * sizeof(*ids));
		if (ids == NULL)
			return NULL;
		p->repl_ids = ids;
		p->repl_cap = p->repl_cap * 2 + 8;
	}
	sl->repl = calloc(1, sizeof(*sl->repl));
	if (sl->repl != NULL)
		p->repl_ids[p->nb_repl++] = sl->id;
	return sl->repl;
}

int
km_proc_repl_start(struct km_proc *p, struct km_proc_export *x)
{
	struct km_proc_shard *sl = shard_find(p, x->shard_id);
	struct proc_repl *r;
	int rc;

	if (x->started || !x->repl)
		return -EINVAL;
	rc = x_walkable(sl);
	if (rc < 0)
		return rc;
	if (sl->repl != NULL && sl->repl->nb == KM_PROC_REPL_MAX)
		return -EBUSY;
	r = repl_get(p, sl);
	if (r == NULL)
		return -ENOMEM;
	/* Its read copies go (none is made while it is replicated: proc_crew.c). */
	km_proc_crew_withdraw(p, x->shard_id);
	x->started = 1;
	atomic_fetch_add_explicit(&x->refs, 1, memory_order_relaxed);
	atomic_store_explicit(&x->rseq, r->rseq, memory_order_relaxed);
	r->x[r->nb++] = x;
	/* A new stream of this replica takes over: if waited, it holds the replies itself. */
	r->blocked &= ~x->tag;
	p->cnt.export_started++;
	return 0;
}

static int
x_waited(const struct km_proc_export *x)
{
	return atomic_load_explicit(&x->wait, memory_order_relaxed) ||
	       atomic_load_explicit(&x->synced, memory_order_acquire);
}

/* Stream i of r ends: failed with err, or stopped (-ECANCELED). */
static void
repl_end(struct km_proc *p, struct proc_repl *r, unsigned int i, int err)
{
	struct km_proc_export *x = r->x[i];

	atomic_store_explicit(&x->err, err, memory_order_relaxed);
	/* A waited stream that fails leaves its replica without one: nothing is
	 * acknowledged until a new stream of it starts (or the caller unblocks it). */
	if (err != -ECANCELED && x_waited(x))
		r->blocked |= x->tag;
	if (err != -ECANCELED)
		p->cnt.repl_failed++;
	atomic_store_explicit(&x->ended, 1, memory_order_release);
	r->x[i] = r->x[--r->nb];
	r->x[r->nb] = NULL;
	km_proc_export_put(x);
}

void
km_proc_repl_stop(struct km_proc *p, struct km_proc_export *x)
{
	struct km_proc_shard *sl = shard_find(p, x->shard_id);
	unsigned int i;

	for (i = 0; sl != NULL && sl->repl != NULL && i < sl->repl->nb; i++)
		if (sl->repl->x[i] == x) {
			repl_end(p, sl->repl, i, -ECANCELED);
			return;
		}
}

int
km_proc_repl_block(struct km_proc *p, uint64_t shard_id, uint64_t tag, int blocked)
{
	struct km_proc_shard *sl = shard_find(p, shard_id);

	if (sl == NULL)
		return -ENOENT;
	if (!blocked && sl->repl == NULL)
		return 0;
	if (repl_get(p, sl) == NULL)
		return -ENOMEM;
	if (blocked)
		sl->repl->blocked |= tag;
	else
		sl->repl->blocked &= ~tag;
	return 0;
}

void
km_proc_repl_tag(struct km_proc_export *x, uint64_t tag)
{
	x->tag = tag;
}

void
km_proc_repl_lease(struct km_proc *p, const _Atomic uint64_t *until_ns)
{
	p->lease_ns = until_ns;
}

void
km_proc_repl_sync(struct km_proc *p, int sync)
{
	p->repl_async = !sync;
}

int
km_proc_repl_active(const struct km_proc *p)
{
	return p->nb_repl != 0;
}

/* Room for a record of need bytes without taking a chunk (a pure check). */
static int
x_has_room(const struct km_proc_export *x, size_t need)
{
	return (x->cur != NULL && x->cur->len + need <= sizeof(x->cur->data)) ||
	       xring_count(&x->free) != 0;
}

int
proc_repl_admit(struct km_proc *p, struct km_proc_shard *sl, const struct km_key *k, uint32_t len)
{
	struct proc_repl *r = sl->repl;
	size_t need = KM_PROC_XREC_HDR + KM_PROC_XREC_WTAIL + k->len + len;
	unsigned int i;

	(void)p;

	if (r->blocked && r->rseq - r->acked >= KM_PROC_REPL_WINDOW)
		return -EBUSY;
	for (i = 0; i < r->nb; i++) {
		struct km_proc_export *x = r->x[i];

		if (!x_waited(x))
			continue;
		if (r->rseq - atomic_load_explicit(&x->acked, memory_order_acquire) >=
				KM_PROC_REPL_WINDOW ||
			!x_has_room(x, need))
			return -EBUSY;
	}
	return 0;
}

uint64_t
proc_repl_write(struct km_proc *p, struct km_proc_shard *sl, const struct km_key *k, uint8_t op,
	const void *val, uint32_t len, uint64_t version, uint64_t src, uint64_t req_id,
	uint64_t route_hash, uint8_t status)
{
	struct proc_repl *r = sl->repl;
	uint64_t rseq = ++r->rseq;
	unsigned int i = 0;
	int del = op == KM_OP_DEL;

	r->pend[k->hash & (PROC_REPL_PEND - 1)] = rseq;
	while (i < r->nb) {
		struct km_proc_export *x = r->x[i];
		uint8_t *b;

		atomic_store_explicit(&x->rseq, rseq, memory_order_relaxed);
		if (x_encode_tail(x, k, del, val, del ? 0 : len, version, KM_PROC_XREC_WTAIL, &b) <
			0) {
			/* Not waited for (admitted): it starts again with a new walk. */
			repl_end(p, r, i, -ENOBUFS);
			continue;
		}
		km_be_put(b, rseq, 8);
		km_be_put(b + 8, src, 8);
		km_be_put(b + 16, req_id, 8);
		km_be_put(b + 24, route_hash, 8);
		b[32] = op;
		b[33] = status;
		atomic_fetch_add_explicit(&x->writes, 1, memory_order_relaxed);
		i++;
	}
	return rseq;
}

/*
 * After the walk of x (replication): the shard's at-most-once entries, as they are now, in
 * records of up to KM_PROC_XREC_DEDUP_MAX, as far as the chunks the walk may use allow.
 * @return 0 all sent, 1 more to send later, -ENOMEM.
 */
static int
repl_dedup_send(struct km_proc *p, struct km_proc_shard *sl, struct km_proc_export *x)
{
	if (x->dd_state == 0) {
		struct km_proc_dedup *set = proc_dedup_copy(p, sl);

		if (set == NULL && sl->dlog.n != 0)
			return -ENOMEM;
		x->dd_n = km_proc_dedup_count(set);
		if (x->dd_n != 0 &&
			(x->dd = malloc((size_t)x->dd_n * KM_PROC_DEDUP_WIRE)) == NULL) {
			km_proc_dedup_free(set);
			return -ENOMEM;
		}
		km_proc_dedup_encode(set, x->dd);
		km_proc_dedup_free(set);
		x->dd_off = 0;
		x->dd_state = 1;
	}
	while (x->dd_off < x->dd_n) {
		uint32_t m = x->dd_n - x->dd_off;
		size_t need;
		uint8_t *b;

		if (m > KM_PROC_XREC_DEDUP_MAX)
			m = KM_PROC_XREC_DEDUP_MAX;
		need = KM_PROC_XREC_DEDUP_HDR + (size_t)m * KM_PROC_DEDUP_WIRE;

		/* As the walk: the last free chunks are the writes'. */
		if (!(x->cur != NULL && x->cur->len + need <= sizeof(x->cur->data)) &&
			xring_count(&x->free) <= x->reserve)
			return 1;
		if (x_room(x, need) < 0)
			return 1;
		b = x->cur->data + x->cur->len;
		km_be_put(b, KM_PROC_XREC_DEDUP, 2);
		km_be_put(b + 2, m, 4);
		memcpy(b + KM_PROC_XREC_DEDUP_HDR, x->dd + (size_t)x->dd_off * KM_PROC_DEDUP_WIRE,
			(size_t)m * KM_PROC_DEDUP_WIRE);
		x->cur->len += need;
		x->cur->records++;
		x->dd_off += m;
	}
	free(x->dd);
	x->dd = NULL;
	x->dd_state = 2;
	return 0;
}

unsigned int
km_proc_repl_step(struct km_proc *p)
{
	unsigned int more = 0, i, j;

	for (i = 0; i < p->nb_repl; i++) {
		struct km_proc_shard *sl = shard_find(p, p->repl_ids[i]);
		struct proc_repl *r = sl->repl;

		for (j = 0; j < r->nb;) {
			struct km_proc_export *x = r->x[j];
			uint8_t *b;
			int rc = x->dd_state == 1 ? 2 : x_step(x, sl->store);

			if (rc == 2 && x->dd_state != 2) {
				rc = repl_dedup_send(p, sl, x);
				if (rc == 1) {
					more = 1;
					j++;
					continue;
				}
				if (rc == 0)
					rc = 2;
			}
			if (rc == 2) {
				/* The sync record: the replica has every entry once it applied it
				 * (and the writes up to rseq, all before it in the stream). */
				if (x_room(x, KM_PROC_XREC_SYNC_LEN) < 0) {
					rc = -ENOBUFS;
				} else {
					b = x->cur->data + x->cur->len;
					km_be_put(b, KM_PROC_XREC_SYNC, 2);
					km_be_put(b + 2, r->rseq, 8);
					x->cur->len += KM_PROC_XREC_SYNC_LEN;
					x->cur->records++;
					atomic_store_explicit(
						&x->walk_rseq, r->rseq, memory_order_relaxed);
					atomic_store_explicit(&x->walked, 1, memory_order_release);
					rc = 0;
				}
			}
			if (rc < 0) {
				repl_end(p, r, j, rc);
				continue;
			}
			more |= (unsigned int)rc;
			j++;
		}
	}
	return more;
}

/* How far every waited stream of sl acknowledged (r->acked set). */
uint64_t
proc_repl_acked(struct proc_repl *r)
{
	uint64_t acked = r->rseq, a;
	unsigned int i;

	for (i = 0; i < r->nb; i++) {
		if (!x_waited(r->x[i]))
			continue;
		a = atomic_load_explicit(&r->x[i]->acked, memory_order_acquire);
		if (a < acked)
			acked = a;
	}
	if (r->blocked && acked > r->acked)
		acked = r->acked; /* an in-sync replica without a stream acknowledges nothing */
	r->acked = acked;
	return acked;
}

/* The replies of sl that may go, go. */
static void
repl_poll_shard(struct km_proc *p, struct km_proc_shard *sl)
{
	proc_repl_acked(sl->repl);
	if (sl->parked_head != NULL)
		proc_parked_release(p, sl);
}

void
proc_repl_poll(struct km_proc *p)
{
	uint32_t i;

	for (i = 0; i < p->nb_repl; i++)
		repl_poll_shard(p, shard_find(p, p->repl_ids[i]));
}

int
proc_repl_parked(const struct km_proc *p)
{
	uint32_t i;

	for (i = 0; i < p->nb_repl; i++)
		if (shard_find(p, p->repl_ids[i])->parked_head != NULL)
			return 1;
	return 0;
}

void
proc_repl_detached(struct km_proc *p, struct km_proc_shard *sl)
{
	struct proc_repl *r = sl->repl;
	uint32_t i;

	if (r == NULL)
		return;
	while (r->nb != 0)
		repl_end(p, r, r->nb - 1, -ENOENT);
	for (i = 0; i < p->nb_repl; i++)
		if (p->repl_ids[i] == sl->id) {
			p->repl_ids[i] = p->repl_ids[--p->nb_repl];
			break;
		}
	free(r);
	sl->repl = NULL;
}

/*
 * A group write of sl failed: its writes were rolled back here, but its streams sent them.
 * Every stream ends (-EIO; a waited one blocks its replica), so the replicas are copied
 * again from what the shard holds now; nothing is acknowledged meanwhile.
 */
void
proc_repl_rolled_back(struct km_proc *p, struct km_proc_shard *sl)
{
	while (sl->repl != NULL && sl->repl->nb != 0)
		repl_end(p, sl->repl, sl->repl->nb - 1, -EIO);
}

/*
 * What the replicas of a shard being detached still owe (r NULL: none): the tags of those
 * waited for (a stream waited for, or blocked), the key slots (pend, PROC_REPL_PEND bits)
 * whose last write they had not all acknowledged, and how far they had (*acked).
 * @return the tags, 0: nothing is owed.
 */
uint64_t
proc_repl_carry(struct proc_repl *r, uint64_t *pend, uint64_t *acked)
{
	uint64_t tags;
	unsigned int i;

	memset(pend, 0, PROC_REPL_PEND / 8);
	*acked = 0;
	if (r == NULL)
		return 0;
	tags = r->blocked;
	for (i = 0; i < r->nb; i++)
		if (x_waited(r->x[i]))
			tags |= r->x[i]->tag;
	*acked = proc_repl_acked(r);
	for (i = 0; tags != 0 && i < PROC_REPL_PEND; i++)
		if (r->pend[i] > *acked)
			pend[i / 64] |= 1ULL << (i % 64);
	return tags;
}

/*
 * The carried state into the shard's at-most-once set (NULL: none; allocated if need be):
 * its entries of writes not acknowledged by every waited replica keep a number (any: the
 * next attachment gives them its own), the others none. @return the set; NULL when there
 * is nothing to carry, or no memory for it (counted in repl_failed: the next attachment
 * waits for its replicas only once their streams start there).
 */
struct km_proc_dedup *
proc_repl_carry_put(struct km_proc *p, struct km_proc_dedup *set, uint64_t tags,
	const uint64_t *pend, uint64_t acked)
{
	uint32_t i;

	for (i = 0; set != NULL && i < set->n; i++)
		set->e[i].rseq = tags != 0 && set->e[i].rseq > acked ? 1 : 0;
	if (tags == 0)
		return set;
	if (set == NULL && (set = calloc(1, sizeof(*set))) == NULL) {
		p->cnt.repl_failed++;
		return NULL;
	}
	set->repl_tags = tags;
	memcpy(set->repl_pend, pend, sizeof(set->repl_pend));
	return set;
}

/*
 * A shard attached with carried state (set->repl_tags != 0): its replicas are blocked
 * until their streams start here, and the writes they owed wait for them, under a number
 * of their own. @return that number (for the set's entries), 0 if there is no memory
 * (counted in repl_failed).
 */
uint64_t
proc_repl_carried(struct km_proc *p, struct km_proc_shard *sl, const struct km_proc_dedup *set)
{
	struct proc_repl *r = repl_get(p, sl);
	unsigned int i;

	if (r == NULL) {
		p->cnt.repl_failed++;
		return 0;
	}
	r->blocked |= set->repl_tags;
	r->rseq++;
	for (i = 0; i < PROC_REPL_PEND; i++)
		if (set->repl_pend[i / 64] & (1ULL << (i % 64)))
			r->pend[i] = r->rseq;
	return r->rseq;
}

void
km_proc_repl_ack(struct km_proc_export *x, uint64_t rseq, int synced)
{
	if (rseq > atomic_load_explicit(&x->acked, memory_order_relaxed))
		atomic_store_explicit(&x->acked, rseq, memory_order_release);
	if (synced && !atomic_load_explicit(&x->synced, memory_order_relaxed))
		atomic_store_explicit(&x->synced, 1, memory_order_release);
}

void
km_proc_repl_wait(struct km_proc_export *x, int wait)
{
	atomic_store_explicit(&x->wait, wait != 0, memory_order_relaxed);
}

void
km_proc_repl_status(const struct km_proc_export *x, struct km_proc_repl_status *out)
{
	out->err = atomic_load_explicit(&x->err, memory_order_relaxed);
	out->ended = atomic_load_explicit(&x->ended, memory_order_acquire);
	out->walked = atomic_load_explicit(&x->walked, memory_order_acquire);
	out->caught_up = atomic_load_explicit(&x->synced, memory_order_acquire);
	out->waited = x_waited(x);
	out->rseq = atomic_load_explicit(&x->rseq, memory_order_relaxed);
	out->acked = atomic_load_explicit(&x->acked, memory_order_relaxed);
	out->entries = atomic_load_explicit(&x->entries, memory_order_relaxed);
	out->backlog = xring_count(&x->full);
}

long
km_proc_rrec_parse(const uint8_t *rec, size_t len, struct km_proc_rrec *w, size_t *need)
{
	uint32_t f, klen, vlen;
	size_t n;

	*need = 2;
	if (len < 2)
		return -EAGAIN;
	f = (uint32_t)km_be_get(rec, 2);
	if (f == KM_PROC_XREC_SYNC) {
		*need = KM_PROC_XREC_SYNC_LEN;
		if (len < KM_PROC_XREC_SYNC_LEN)
			return -EAGAIN;
		*w = (struct km_proc_rrec){.kind = 2, .rseq = km_be_get(rec + 2, 8)};
		return KM_PROC_XREC_SYNC_LEN;
	}
	if (f == KM_PROC_XREC_DEDUP) {
		*need = KM_PROC_XREC_DEDUP_HDR;
		if (len < KM_PROC_XREC_DEDUP_HDR)
			return -EAGAIN;
		f = (uint32_t)km_be_get(rec + 2, 4);
		if (f == 0 || f > KM_PROC_XREC_DEDUP_MAX)
			return -EPROTO;
		n = KM_PROC_XREC_DEDUP_HDR + (size_t)f * KM_PROC_DEDUP_WIRE;
		*need = n;
		if (len < n)
			return -EAGAIN;
		*w = (struct km_proc_rrec){.kind = 3, .dedup_n = f};
		return (long)n;
	}
	*need = KM_PROC_XREC_HDR;
	if (len < KM_PROC_XREC_HDR)
		return -EAGAIN;
	klen = f & ~(KM_PROC_XREC_DEL | KM_PROC_XREC_W);
	vlen = (uint32_t)km_be_get(rec + 2, 4);
	if (klen == 0 || klen > KM_KEY_MAX || vlen > KM_VALUE_MAX_LARGE ||
		((f & KM_PROC_XREC_DEL) && vlen != 0))
		return -EPROTO;
	n = KM_PROC_XREC_HDR + klen + vlen + ((f & KM_PROC_XREC_W) ? KM_PROC_XREC_WTAIL : 0);
	*need = n;
	if (len < n)
		return -EAGAIN;
	*w = (struct km_proc_rrec){
		.kind = (f & KM_PROC_XREC_W) ? 1 : 0, .version = km_be_get(rec + 6, 8)};
	if (f & KM_PROC_XREC_W) {
		const uint8_t *t = rec + n - KM_PROC_XREC_WTAIL;

		w->rseq = km_be_get(t, 8);
		w->src = km_be_get(t + 8, 8);
		w->req_id = km_be_get(t + 16, 8);
		w->route_hash = km_be_get(t + 24, 8);
		w->op = t[32];
		w->status = t[33];
		w->key_hash = km_key_hash(rec + KM_PROC_XREC_HDR, klen);
		if (w->rseq == 0)
			return -EPROTO;
	}
	return (long)n;
}

void
km_proc_rrec_dedup(const struct km_proc_rrec *w, uint8_t *buf)
{
	km_be_put(buf, w->src, 8);
	km_be_put(buf + 8, w->req_id, 8);
	km_be_put(buf + 16, w->key_hash, 8);
	km_be_put(buf + 24, w->route_hash, 8);
	km_be_put(buf + 32, w->version, 8);
	buf[40] = w->op;
	buf[41] = w->status;
}

/* ---- The replica's side ---------------------------------------------------------------- */

struct km_proc_replica {
	struct km_store *s;
	uint8_t *ring; /* dedup_max entries, KM_PROC_DEDUP_WIRE bytes each */
	uint32_t max, n, next;
	uint8_t synced;
	uint64_t applied, vmax;
};

int
km_proc_replica_new(struct km_store *s, uint32_t dedup_max, struct km_proc_replica **out)
{
	struct km_proc_replica *r;

	*out = NULL;
	if (s == NULL || dedup_max == 0)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (r == NULL || (r->ring = malloc((size_t)dedup_max * KM_PROC_DEDUP_WIRE)) == NULL) {
		free(r);
		return -ENOMEM;
	}
	r->s = s;
	r->max = dedup_max;
	*out = r;
	return 0;
}

long
km_proc_replica_apply(
	struct km_proc_replica *r, const uint8_t *buf, size_t len, size_t max_rec, int *synced_now)
{
	size_t pos = 0, need, used;

	*synced_now = 0;
	while (pos < len) {
		struct km_proc_rrec w;
		long n = km_proc_rrec_parse(buf + pos, len - pos, &w, &need);
		int rc;

		if (n == -EAGAIN)
			return need > max_rec ? -E2BIG : (long)pos;
		if (n < 0)
			return n;
		if (w.kind == 2) {
			if (!r->synced)
				*synced_now = 1;
			r->synced = 1;
			r->applied = w.rseq;
		} else if (w.kind == 3) {
			uint32_t k;

			for (k = 0; k < w.dedup_n; k++) {
				memcpy(r->ring + (size_t)r->next * KM_PROC_DEDUP_WIRE,
					buf + pos + KM_PROC_XREC_DEDUP_HDR +
						(size_t)k * KM_PROC_DEDUP_WIRE,
					KM_PROC_DEDUP_WIRE);
				r->next = (r->next + 1) % r->max;
				if (r->n < r->max)
					r->n++;
			}
		} else {
			rc = km_proc_xrec_apply(r->s, buf + pos, (size_t)n, &used);
			if (rc < 0)
				return rc;
			if (w.version > r->vmax)
				r->vmax = w.version;
			if (w.kind == 1) {
				km_proc_rrec_dedup(
					&w, r->ring + (size_t)r->next * KM_PROC_DEDUP_WIRE);
				r->next = (r->next + 1) % r->max;
				if (r->n < r->max)
					r->n++;
				r->applied = w.rseq;
			}
		}
		pos += (size_t)n;
	}
	return (long)pos;
}

int
km_proc_replica_synced(const struct km_proc_replica *r)
{
	return r->synced;
}

uint64_t
km_proc_replica_applied(const struct km_proc_replica *r)
{
	return r->applied;
}

uint64_t
km_proc_replica_vmax(const struct km_proc_replica *r)
{
	return r->vmax;
}

struct km_store *
km_proc_replica_store(const struct km_proc_replica *r)
{
	return r->s;
}

struct km_proc_dedup *
km_proc_replica_dedup(const struct km_proc_replica *r)
{
	uint32_t first = (r->next + r->max - r->n) % r->max, k;
	struct km_proc_dedup *dd;
	uint8_t *wire;

	if (r->n == 0 || (wire = malloc((size_t)r->n * KM_PROC_DEDUP_WIRE)) == NULL)
		return NULL;
	for (k = 0; k < r->n; k++)
		memcpy(wire + (size_t)k * KM_PROC_DEDUP_WIRE,
			r->ring + (size_t)((first + k) % r->max) * KM_PROC_DEDUP_WIRE,
			KM_PROC_DEDUP_WIRE);
	dd = km_proc_dedup_decode(wire, r->n);
	free(wire);
	return dd;
}

void
km_proc_replica_free(struct km_proc_replica *r, int keep)
{
	if (r == NULL)
		return;
	if (!keep && r->s != NULL)
		km_store_discard(r->s);
	free(r->ring);
	free(r);
}
