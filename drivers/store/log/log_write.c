/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The log driver's write path: records appended to the write buffer with an undo entry,
 * group writes linked to their fdatasync (sync and async), the async bound, rollback of a
 * failed group, and the durability callbacks to the owner.
 *
 * sync: every loop iteration's records are one group (a write and its fdatasync); the
 * replies wait for it. async: the replies go at once; records are batched for up to a
 * quarter of sync_interval_ms, then written and fdatasync'ed as one group; a write is
 * refused (BUSY) once the oldest record not durable yet has waited sync_interval_ms or
 * more than the budget of bytes wait, and the file space of what is acknowledged is
 * allocated first (a full disk answers ERROR, it never loses an acknowledged write).
 * After a failed group, acknowledgements wait for durability (as in sync) until a group
 * succeeds again. none: written every iteration, never fdatasync'ed.
 */

#include "log_store.h"

static int
wbuf_reserve(struct wbuf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 65536;
	uint8_t *d;

	if (b->len + more <= b->cap)
		return 0;
	while (cap < b->len + more)
		cap *= 2;
	d = realloc(b->data, cap);
	if (d == NULL)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

static int
undo_push(struct log_store *ls, const struct undo *u)
{
	if (ls->nb_undo == ls->undo_cap) {
		size_t cap = ls->undo_cap ? ls->undo_cap * 2 : 256;
		struct undo *n = realloc(ls->undo, cap * sizeof(*n));

		if (n == NULL)
			return -ENOMEM;
		ls->undo = n;
		ls->undo_cap = cap;
	}
	ls->undo[ls->nb_undo++] = *u;
	return 0;
}

static uint64_t
now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/*
 * Allocate the file space a write of size bytes will take (async: an acknowledged write
 * must not meet a full disk later). Done ahead in chunks; a file system that cannot
 * preallocate is written without.
 * @return 0 or -ENOSPC, -EIO.
 */
static int
prealloc(struct log_store *ls, size_t size)
{
	uint64_t need = ls->log_bytes + size, from;

	if (ls->prealloc_off || need <= ls->prealloc_end)
		return 0;
	from = ls->prealloc_end > ls->log_bytes ? ls->prealloc_end : ls->log_bytes;
	if (fallocate(ls->fd, FALLOC_FL_KEEP_SIZE, (off_t)from,
		    (off_t)(need - from + PREALLOC_CHUNK)) == 0) {
		ls->prealloc_end = need + PREALLOC_CHUNK;
		return 0;
	}
	if (errno == EOPNOTSUPP || errno == ENOSYS) {
		ls->prealloc_off = 1;
		return 0;
	}
	/* Maybe room for this write alone. */
	if (errno == ENOSPC &&
		fallocate(ls->fd, FALLOC_FL_KEEP_SIZE, (off_t)from, (off_t)(need - from)) == 0) {
		ls->prealloc_end = need;
		return 0;
	}
	return errno == ENOSPC ? -ENOSPC : -EIO;
}

/*
 * Whether a write of size bytes may be acknowledged before it is durable (async): not
 * when the bound would be broken (-EBUSY, counted), nor without its file space (-ENOSPC).
 */
static int
async_admit(struct log_store *ls, size_t size)
{
	uint64_t waiting = ls->log_bytes - ls->durable_end, t0;

	if (ls->durability != KM_DUR_ASYNC || ls->io == NULL || ls->degraded)
		return 0;
	/* A version reservation may go in front of the record: its room too. */
	size += KM_REC_HDR_LEN + META_LEN + KM_REC_ALIGN;
	if (waiting != 0) {
		t0 = ls->group_cqes != 0 ? ls->flight_t0 : ls->open_t0;
		/* Over the budget: refused, but a record larger than the budget itself waits
		 * only for a small queue (it would never fit in a full one). */
		if (now_ns() - t0 >= (uint64_t)ls->sync_interval_ms * 1000000u ||
			(waiting + size > ls->budget &&
				(size <= ls->budget || waiting > BUDGET_MIN))) {
			ls->st.write_busy++;
			return -EBUSY;
		}
	}
	return prealloc(ls, size);
}

int
log_write_out_unbound(struct log_store *ls)
{
	int rc;

	if (ls->open.len == 0)
		return 0;
	rc = km_pwrite_all(ls->fd, ls->open.data, ls->open.len, ls->open.base);
	if (rc < 0)
		return rc;
	ls->open.base += ls->open.len;
	ls->open.len = 0;
	ls->durable_end = ls->open.base;
	ls->seq_durable = ls->seq_flight = ls->seq_appended;
	ls->nb_undo = ls->undo_flight = 0;
	ls->st.write_batches++;
	return 0;
}

/*
 * Append a record and point the index at it. For a DEL (val == NULL, del set), the entry
 * is removed. The previous state goes to the undo log until the record is durable.
 */
static int
append(struct log_store *ls, const struct km_key *k, const void *val, uint32_t len,
	uint64_t version, int del, struct km_lidx_ent *e)
{
	struct km_rec r = {
		.type = del ? KM_REC_DEL : KM_REC_PUT,
		.klen = (uint8_t)k->len,
		.vlen = del ? 0 : len,
		.version = version,
		.key = k->data,
		.val = val,
	};
	size_t size = km_rec_size(r.klen, r.vlen);
	struct undo u = {.hash = k->hash};
	uint64_t off;
	int created, rc;

	if (ls->failed)
		return -EIO;
	if (ls->io != NULL && ls->open.len + size > ls->wbuf_max)
		return -EBUSY;
	if (ls->open.base + ls->open.len + size > LOC_POS_MASK)
		return -ENOSPC; /* a log of 512 GiB: compact it */
	rc = wbuf_reserve(&ls->open, size);
	if (rc < 0)
		return rc;
	if (e == NULL) {
		e = km_lidx_upsert(ls->idx, k->hash, &created);
		if (e == NULL)
			return -ENOMEM;
	}
	if (ls->io != NULL && undo_push(ls, &u) < 0) {
		if (e->version == 0)
			km_lidx_remove(ls->idx, e);
		return -ENOMEM;
	}
	off = ls->open.base + ls->open.len;
	if (ls->open.len == 0)
		ls->open_t0 = now_ns();
	km_rec_encode(ls->open.data + ls->open.len, size, &r);
	ls->open.len += size;
	ls->log_bytes += size;
	ls->seq_appended++;
	if (ls->durability != KM_DUR_SYNC && !ls->degraded)
		ls->seq_acked = ls->seq_appended; /* answered before it is durable */
	if (ls->io != NULL) {
		struct undo *up = &ls->undo[ls->nb_undo - 1];

		up->loc = e->loc;
		up->version = e->version;
		up->old_size = e->version != 0 ? entry_size(e->loc) : 0;
		up->new_size = del ? 0 : (uint32_t)size;
	}
	if (e->version != 0)
		ls->live_bytes -= entry_size(e->loc);
	if (e->loc == LOC_DAMAGED && e->version != 0)
		ls->st.damaged_keys--; /* written again: what it is now is known */
	if (del) {
		km_lidx_remove(ls->idx, e);
	} else {
		e->loc = loc_log(off, size);
		e->version = version;
		ls->live_bytes += size;
	}
	if (version > ls->version_last)
		ls->version_last = version;
	if (ls->io == NULL && ls->open.len >= UNBOUND_WRITE_AT)
		return log_write_out_unbound(ls);
	return 0;
}

/* The reservation appended last is durable once the log is, up to its end. */
static void
res_settle(struct log_store *ls)
{
	uint64_t reached = ls->durability == KM_DUR_NONE ? ls->durable_end : ls->synced_end;

	if (ls->res_off != 0 && reached >= ls->res_off) {
		ls->res_durable = ls->res_appended;
		ls->res_off = 0;
	}
}

/*
 * Make version v issuable: a META record reserving the next range goes into the write
 * buffer when half of this one is used, and is durable with the records around it long
 * before the range runs out.
 * @return 0, or -EBUSY: v is above the last durable reservation (the next one is on its
 *   way: retry).
 */
static int
reserve(struct log_store *ls, uint64_t v)
{
	uint8_t buf[KM_REC_HDR_LEN + META_LEN + KM_REC_ALIGN];
	uint64_t floor = (v > ls->res_appended ? v : ls->res_appended) + VERSION_RESERVE;
	size_t n;

	if (ls->res_off == 0 && v + VERSION_RESERVE / 2 > ls->res_appended &&
		(ls->io == NULL || ls->open.len + sizeof(buf) <= ls->wbuf_max) &&
		wbuf_reserve(&ls->open, sizeof(buf)) == 0) {
		n = log_meta_encode(ls->open.data + ls->open.len, sizeof(buf), ls, floor);
		if (ls->open.len == 0)
			ls->open_t0 = now_ns();
		ls->open.len += n;
		ls->log_bytes += n;
		ls->res_appended = floor;
		ls->res_off = ls->open.base + ls->open.len;
		if (ls->io == NULL) {
			/* Unbound: written out with the records, synced when bound. */
			ls->res_durable = floor;
			ls->res_off = 0;
		}
	}
	return v <= ls->res_durable ? 0 : -EBUSY;
}

/* Undo every record after seq_durable, newest first. */
static void
rollback(struct log_store *ls)
{
	struct km_lidx_ent *e;
	size_t i;
	int created;

	for (i = ls->nb_undo; i-- > 0;) {
		const struct undo *u = &ls->undo[i];

		e = km_lidx_find(ls->idx, u->hash);
		if (e != NULL) {
			ls->live_bytes -= entry_size(e->loc);
			if (u->version == 0)
				km_lidx_remove(ls->idx, e);
		}
		if (u->version != 0) {
			e = e != NULL ? e : km_lidx_upsert(ls->idx, u->hash, &created);
			if (e == NULL)
				continue; /* out of memory restoring: the entry is lost */
			e->loc = u->loc;
			e->version = u->version;
			ls->live_bytes += entry_size(u->loc);
			ls->st.damaged_keys += u->loc == LOC_DAMAGED;
		}
	}
	if (ls->seq_acked > ls->seq_durable)
		ls->st.writes_lost += ls->seq_acked - ls->seq_durable;
	ls->seq_acked = ls->seq_durable;
	ls->nb_undo = ls->undo_flight = 0;
	ls->log_bytes = ls->durable_end;
	ls->open.base = ls->durable_end;
	ls->open.len = 0;
	ls->flight.len = 0;
	ls->seq_appended = ls->seq_flight = ls->seq_durable;
	if (ls->res_off > ls->durable_end) {
		ls->res_appended = ls->res_durable; /* its reservation went with the group */
		ls->res_off = 0;
	}
	if (ftruncate(ls->fd, (off_t)ls->durable_end) < 0)
		ls->failed = 1;
	ls->prealloc_end = ls->durable_end; /* the truncation freed it */
}

/* async: the budget follows what the device makes durable within the interval. */
static void
budget_adapt(struct log_store *ls, uint64_t lag_ns)
{
	uint64_t bound = (uint64_t)ls->sync_interval_ms * 1000000u;

	if (lag_ns > bound)
		ls->budget = ls->budget / 2 > BUDGET_MIN ? ls->budget / 2 : BUDGET_MIN;
	else if (lag_ns < bound / 2)
		ls->budget = ls->budget + ls->budget / 8 + BUDGET_MIN < ls->wbuf_max
				     ? ls->budget + ls->budget / 8 + BUDGET_MIN
				     : ls->wbuf_max;
}

static void
group_finish(struct log_store *ls)
{
	int err = ls->group_err;
	uint64_t lag = now_ns() - ls->flight_t0;

	ls->st.write_batches++;
	if (err < 0) {
		ls->st.write_errors++;
		rollback(ls);
		if (ls->durability != KM_DUR_SYNC)
			ls->degraded = 1;
	} else {
		ls->durable_end = ls->flight.base + ls->flight.len;
		if (ls->durability != KM_DUR_NONE) {
			ls->st.fsyncs++;
			ls->synced_end = ls->durable_end;
		}
		if (ls->durability == KM_DUR_ASYNC)
			budget_adapt(ls, lag);
		if (lag / 1000 > ls->st.durable_lag_max_us)
			ls->st.durable_lag_max_us = lag / 1000;
		ls->degraded = 0;
		res_settle(ls);
		ls->seq_durable = ls->seq_flight;
		memmove(ls->undo, ls->undo + ls->undo_flight,
			(ls->nb_undo - ls->undo_flight) * sizeof(*ls->undo));
		ls->nb_undo -= ls->undo_flight;
		ls->undo_flight = 0;
		ls->flight.len = 0;
	}
	if (ls->durable != NULL)
		ls->durable(ls->darg, ls->id, ls->seq_durable, err);
}

void
log_group_done(struct km_io_op *op, int res)
{
	struct log_store *ls =
		(struct log_store *)((uint8_t *)op - offsetof(struct log_store, wop));

	/* The write: all of it or an error; the fdatasync linked to it: 0 or an error
	 * (-ECANCELED when the write failed). */
	if (ls->group_cqes == 2 || ls->durability == KM_DUR_NONE) {
		if (res >= 0 && (size_t)res != ls->flight.len)
			res = -ENOSPC;
	}
	if (res < 0 && ls->group_err == 0)
		ls->group_err = res;
	if (--ls->group_cqes == 0)
		group_finish(ls);
}

/* async: whether the records of open are due to be written now. */
static int
open_due(const struct log_store *ls)
{
	return ls->durability != KM_DUR_ASYNC || ls->settling || ls->degraded ||
	       ls->open.len >= ls->budget / 2 ||
	       now_ns() - ls->open_t0 >= (uint64_t)ls->sync_interval_ms * 250000u;
}

static int
flush_more(const struct log_store *ls)
{
	return ls->open.len != 0 || ls->group_cqes != 0;
}

int
log_flush(struct km_store *s)
{
	struct log_store *ls = ls_of(s);
	struct io_uring_sqe *w, *f;
	struct wbuf t;
	int synced;

	if (ls->io == NULL) {
		log_write_out_unbound(ls);
		return 0;
	}
	if (ls->group_cqes == 0 && ls->open.len != 0 && open_due(ls)) {
		/* Both entries or none: a write without its fdatasync is not a group. */
		synced = ls->durability != KM_DUR_NONE;
		if (!km_io_room(ls->io, synced ? 2 : 1))
			return 1;
		w = km_io_sqe(ls->io, &ls->wop);
		f = synced ? km_io_sqe(ls->io, &ls->wop) : NULL;
		if (w == NULL || (synced && f == NULL))
			return 1; /* cannot happen after km_io_room() */
		t = ls->flight;
		ls->flight = ls->open;
		ls->open = t;
		ls->open.len = 0;
		ls->open.base = ls->flight.base + ls->flight.len;
		ls->seq_flight = ls->seq_appended;
		ls->flight_t0 = ls->open_t0;
		ls->undo_flight = ls->nb_undo;
		ls->group_err = 0;
		ls->group_cqes = f != NULL ? 2 : 1;
		io_uring_prep_write(
			w, ls->fd, ls->flight.data, (unsigned int)ls->flight.len, ls->flight.base);
		if (f != NULL) {
			w->flags |= IOSQE_IO_LINK;
			io_uring_prep_fsync(f, ls->fd, IORING_FSYNC_DATASYNC);
		}
		km_io_submit(ls->io);
	}
	return flush_more(ls);
}

/* Write out everything appended and wait for the store's I/O in flight, blocking (a
 * failed write rolls the rest back, so this ends). */
void
log_settle(struct log_store *ls)
{
	ls->settling = 1;
	while (ls->io != NULL && (ls->group_cqes != 0 || ls->open.len != 0)) {
		log_flush(&ls->base);
		if (km_io_wait(ls->io) < 0)
			break;
	}
	ls->settling = 0;
}

int
log_ack_waits(const struct km_store *s)
{
	const struct log_store *ls = (const struct log_store *)s;

	return ls->durability == KM_DUR_SYNC || ls->degraded;
}

void
log_bind(struct km_store *s, struct km_io *io, km_store_durable_fn durable, void *arg)
{
	struct log_store *ls = ls_of(s);

	log_settle(ls);
	ls->io = io;
	ls->durable = durable;
	ls->darg = arg;
	if (io == NULL && ls->open.len != 0 && log_write_out_unbound(ls) < 0) {
		ls->st.write_errors++;
		ls->nb_undo = 0;
	}
	if (io == NULL && ls->durability != KM_DUR_NONE && ls->synced_end < ls->durable_end) {
		if (fdatasync(ls->fd) == 0) {
			ls->st.fsyncs++;
			ls->synced_end = ls->durable_end;
		}
	}
}

static int
check_key(const struct km_key *k)
{
	return k->len == 0 || k->len > LOG_KEY_MAX ? -EINVAL : 0;
}

int
log_put(struct km_store *s, const struct km_key *k, const void *val, uint32_t len, uint64_t expect,
	int create_only, uint64_t *version)
{
	struct log_store *ls = ls_of(s);
	struct km_lidx_ent *e;
	int created, rc;

	if (check_key(k) < 0)
		return -EINVAL;
	if (ls->quarantined)
		return -EBADMSG;
	if (len > ls->value_max)
		return -E2BIG;
	e = km_lidx_find(ls->idx, k->hash);
	if ((create_only && e != NULL) ||
		(expect != KM_VERSION_ANY && (e == NULL || e->version != expect))) {
		*version = e != NULL ? e->version : 0;
		return create_only && e != NULL ? -EEXIST : -ESTALE;
	}
	if (e == NULL) {
		e = km_lidx_upsert(ls->idx, k->hash, &created);
		if (e == NULL)
			return -ENOMEM;
	}
	rc = async_admit(ls, km_rec_size(k->len, len));
	if (rc == 0)
		rc = reserve(ls, ls->version_last + 1);
	if (rc == 0)
		rc = append(ls, k, val, len, ls->version_last + 1, 0, e);
	if (rc < 0) {
		/* A slot just created and never filled must not stay. */
		e = km_lidx_find(ls->idx, k->hash);
		if (e != NULL && e->version == 0)
			km_lidx_remove(ls->idx, e);
		return rc;
	}
	*version = ls->version_last;
	return 0;
}

int
log_del(struct km_store *s, const struct km_key *k, uint64_t expect, uint64_t *version)
{
	struct log_store *ls = ls_of(s);
	struct km_lidx_ent *e;
	uint64_t v;
	int rc;

	if (check_key(k) < 0)
		return -EINVAL;
	if (ls->quarantined)
		return -EBADMSG;
	e = km_lidx_find(ls->idx, k->hash);
	if (e == NULL)
		return -ENOENT;
	v = e->version;
	if (expect != KM_VERSION_ANY && v != expect) {
		*version = v;
		return -ESTALE;
	}
	rc = async_admit(ls, km_rec_size(k->len, 0));
	if (rc == 0)
		rc = append(ls, k, NULL, 0, v, 1, e);
	if (rc < 0)
		return rc;
	*version = v;
	return 0;
}

int
log_load(
	struct km_store *s, const struct km_key *k, const void *val, uint32_t len, uint64_t version)
{
	struct log_store *ls = ls_of(s);
	struct km_rec r = {.type = KM_REC_PUT,
		.klen = (uint8_t)k->len,
		.vlen = len,
		.version = version,
		.key = k->data,
		.val = val};
	struct km_lidx_ent *e;
	uint32_t block, off;
	int created, rc;

	if (version == 0 || check_key(k) < 0)
		return -EINVAL;
	if (ls->quarantined)
		return -EBADMSG;
	if (len > ls->value_max)
		return -E2BIG;
	if (ls->segw == NULL)
		return append(ls, k, val, len, version, 0, NULL);
	/* A staged cold store: straight into the segment. */
	rc = km_seg_writer_add(ls->segw, &r, &block, &off);
	if (rc < 0)
		return rc;
	e = km_lidx_upsert(ls->idx, k->hash, &created);
	if (e == NULL)
		return -ENOMEM;
	e->loc = LOC_SEG | ((uint64_t)block << LOC_POS_SHIFT) | off;
	e->version = version;
	if (version > ls->version_last)
		ls->version_last = version;
	return 0;
}

uint64_t
log_write_seq(const struct km_store *s)
{
	return ((const struct log_store *)s)->seq_appended;
}

uint64_t
log_durable_seq(const struct km_store *s)
{
	return ((const struct log_store *)s)->seq_durable;
}

void
log_version_floor(struct km_store *s, uint64_t v)
{
	struct log_store *ls = ls_of(s);

	/* The next write reserves versions above it durably before it uses one (reserve()). */
	if (v > ls->version_last)
		ls->version_last = v;
}
