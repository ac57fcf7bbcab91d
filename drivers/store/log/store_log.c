/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * "log" store driver: persistent. One shard's entries are
 *   - an append-only log, <dir>/shard-<id>.log, of records (km_record.h): PUT, DEL, and
 *     a META record first (shard id, birth, version floor, routing);
 *   - in the cold tier also a segment, <cold_dir>/shard-<id>.seg (km_seg.h), holding the
 *     entries as they were when the shard went cold; the log then holds the writes since;
 *   - a DRAM index (km_lidx.h): key hash -> where the entry's latest record is, version.
 * Values are read from disk on demand: the worker's cache (lib/cache) sits in front.
 *
 * Writes: a PUT/DEL updates the index at once and appends its record to the open write
 * buffer; flush() (once per worker loop iteration) submits the buffer as one write, linked
 * to an fdatasync in sync mode: group commit. One group is in flight at a time; records
 * appended meanwhile wait for the next. Each record has a sequence number; the owner is
 * told (durable callback) up to which number records are durable. A failed group rolls
 * every record not yet durable back in the index (an undo log), truncates the file to its
 * durable end and reports the failure, so a later read never sees a write the disk
 * refused.
 *
 * Files are replaced, never rewritten: a compaction, a tier change or a split/merge
 * target writes a staged file (.tmp), makes it durable and renames it into place. Every
 * store's files carry a birth stamp, higher than those of the files they replace, so that
 * recover() can tell after a crash which of overlapping files are current.
 *
 * loc (index): bit 63 set: in the segment, bits 62..24 block, 23..0 offset in the block;
 * clear: in the log, bits 62..24 file offset, 23..0 record size.
 *
 * Concurrency: one owner thread per instance; the birth counter is the only shared state.
 */

#include <dirent.h>
#include <inttypes.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <km_io.h>
#include <km_lidx.h>
#include <km_record.h>
#include <km_seg.h>
#include <km_store.h>

#define LOG_KEY_MAX       250
#define LOC_SEG           (UINT64_C(1) << 63)
#define LOC_POS_SHIFT     24
#define LOC_POS_MASK      ((UINT64_C(1) << 39) - 1)
#define LOC_LOW_MASK      ((UINT64_C(1) << 24) - 1)
#define LOC_TOMBSTONE     (LOC_SEG - 1) /* replay only: the key was deleted */
#define WBUF_DEFAULT      (4u << 20)
#define SYNC_INTERVAL_DEF 10
#define REPLAY_CHUNK      (4u << 20)
#define UNBOUND_WRITE_AT  (1u << 20)                 /* an unbound store writes out at this much */
#define META_MAGIC        UINT64_C(0x314154454d4d4b) /* "KMMETA1" */
#define META_LEN          48
#define SEG_BLOCK         KM_SEG_BLOCK_SIZE_DEFAULT
#define REC_MAX           (KM_REC_HDR_LEN + LOG_KEY_MAX + KM_REC_VLEN_MAX + KM_REC_ALIGN)
#define DEPTH_MAX         24 /* the shard map's deepest shard */

/* Birth stamps: above every stamp found on disk. */
static _Atomic uint64_t birth_next = 1;

static void
birth_seen(uint64_t b)
{
	uint64_t cur = atomic_load(&birth_next);

	while (cur <= b && !atomic_compare_exchange_weak(&birth_next, &cur, b + 1))
		;
}

static uint64_t
birth_take(void)
{
	return atomic_fetch_add(&birth_next, 1);
}

struct undo {
	uint64_t hash;
	uint64_t loc;
	uint64_t version; /* 0: the key was absent */
	uint32_t old_size;
	uint32_t new_size; /* live bytes the write added (0 for DEL) */
};

struct wbuf {
	uint8_t *data;
	size_t len;
	size_t cap;
	uint64_t base; /* file offset of data[0] */
};

struct log_store {
	struct km_store base;
	uint64_t id;
	uint32_t value_max;
	uint8_t durability;
	uint8_t tier;
	uint8_t staged;
	uint8_t route_sep;
	uint8_t route_depth;
	uint8_t failed; /* the log could not be truncated after a failed write: read-only */
	uint32_t sync_interval_ms;
	uint32_t wbuf_max;
	uint64_t birth;
	uint64_t version_last;

	char dir[PATH_MAX / 2];
	char cold_dir[PATH_MAX / 2];
	int fd;                     /* the log (staged: the .tmp) */
	struct km_seg *seg;         /* cold tier */
	struct km_seg_writer *segw; /* staged cold store */
	uint8_t *ublk;              /* walk: last inflated block */
	uint32_t ublk_no;
	int ublk_valid;

	struct km_lidx *idx;
	uint64_t live_bytes; /* record bytes of the entries the index points to */
	uint64_t log_bytes;  /* bytes of the log (durable or not), META included */

	/* Group writes. */
	struct wbuf open;   /* records appended since the last flush */
	struct wbuf flight; /* the group in flight */
	uint64_t durable_end;
	uint64_t seq_appended, seq_flight, seq_durable;
	struct undo *undo; /* records after seq_durable, in order */
	size_t nb_undo, undo_cap, undo_flight;
	int group_cqes; /* CQEs of the group still to come */
	int group_err;
	int sync_inflight;
	uint64_t synced_end, sync_target;
	struct timespec last_sync;
	struct km_io *io;
	km_store_durable_fn durable;
	void *darg;
	struct km_io_op wop, sop;

	struct km_store_stats st; /* counters kept here; the rest is computed */
};

static const struct km_store_ops log_ops;

static inline struct log_store *
ls_of(struct km_store *s)
{
	return (struct log_store *)s;
}

/* Paths. */

static void
log_path(const struct log_store *ls, char *buf, size_t n, int tmp)
{
	snprintf(buf, n, "%s/shard-%" PRIu64 ".log%s", ls->dir, ls->id, tmp ? ".tmp" : "");
}

static void
seg_path(const struct log_store *ls, char *buf, size_t n, int tmp)
{
	snprintf(buf, n, "%s/shard-%" PRIu64 ".seg%s", ls->cold_dir, ls->id, tmp ? ".tmp" : "");
}

static int
fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* META record: what a log file says about itself. */
struct meta {
	uint64_t shard_id;
	uint64_t birth;
	uint64_t version_floor;
	uint8_t route_sep;
	uint8_t route_depth;
	uint8_t tier;
};

static size_t
meta_encode(uint8_t *buf, size_t cap, const struct meta *m)
{
	uint8_t v[META_LEN] = {0};
	struct km_rec r = {.type = KM_REC_META, .vlen = META_LEN, .val = v};

	km_le_put64(v, META_MAGIC);
	km_le_put64(v + 8, m->shard_id);
	km_le_put64(v + 16, m->birth);
	km_le_put64(v + 24, m->version_floor);
	v[32] = m->route_sep;
	v[33] = m->route_depth;
	v[34] = m->tier;
	return km_rec_encode(buf, cap, &r);
}

static int
meta_decode(const struct km_rec *r, struct meta *m)
{
	if (r->type != KM_REC_META || r->vlen < META_LEN || km_le_get64(r->val) != META_MAGIC)
		return -EBADMSG;
	m->shard_id = km_le_get64(r->val + 8);
	m->birth = km_le_get64(r->val + 16);
	m->version_floor = km_le_get64(r->val + 24);
	m->route_sep = r->val[32];
	m->route_depth = r->val[33];
	m->tier = r->val[34];
	return 0;
}

/* Read the META record at the start of a log file. */
static int
meta_read(int fd, struct meta *m)
{
	uint8_t buf[KM_REC_HDR_LEN + META_LEN + KM_REC_ALIGN];
	struct km_rec r;
	size_t size;
	ssize_t n = pread(fd, buf, sizeof(buf), 0);

	if (n < 0)
		return -errno;
	if (km_rec_decode(buf, (size_t)n, &r, &size) != KM_REC_OK)
		return -EBADMSG;
	return meta_decode(&r, m);
}

/* Write buffers. */

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

static inline uint64_t
loc_log(uint64_t off, size_t size)
{
	return (off << LOC_POS_SHIFT) | size;
}

static inline uint64_t
loc_pos(uint64_t loc)
{
	return (loc >> LOC_POS_SHIFT) & LOC_POS_MASK;
}

static inline uint32_t
loc_low(uint64_t loc)
{
	return (uint32_t)(loc & LOC_LOW_MASK);
}

/* Live record bytes an entry accounts for. */
static inline uint32_t
entry_size(uint64_t loc)
{
	/* Segment entries: the record size is not in loc; count them by the segment. */
	return (loc & LOC_SEG) ? 0 : loc_low(loc);
}

static int
write_out_unbound(struct log_store *ls)
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
	km_rec_encode(ls->open.data + ls->open.len, size, &r);
	ls->open.len += size;
	ls->log_bytes += size;
	ls->seq_appended++;
	if (ls->io != NULL) {
		struct undo *up = &ls->undo[ls->nb_undo - 1];

		up->loc = e->loc;
		up->version = e->version;
		up->old_size = e->version != 0 ? entry_size(e->loc) : 0;
		up->new_size = del ? 0 : (uint32_t)size;
	}
	if (e->version != 0)
		ls->live_bytes -= entry_size(e->loc);
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
		return write_out_unbound(ls);
	return 0;
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
		}
	}
	if (ls->durability != KM_DUR_SYNC)
		ls->st.writes_lost += ls->seq_appended - ls->seq_durable;
	ls->nb_undo = ls->undo_flight = 0;
	ls->log_bytes = ls->durable_end;
	ls->open.base = ls->durable_end;
	ls->open.len = 0;
	ls->flight.len = 0;
	ls->seq_appended = ls->seq_flight = ls->seq_durable;
	if (ftruncate(ls->fd, (off_t)ls->durable_end) < 0)
		ls->failed = 1;
}

static void
group_finish(struct log_store *ls)
{
	int err = ls->group_err;

	ls->st.write_batches++;
	if (err < 0) {
		ls->st.write_errors++;
		rollback(ls);
	} else {
		ls->durable_end = ls->flight.base + ls->flight.len;
		if (ls->durability == KM_DUR_SYNC) {
			ls->st.fsyncs++;
			ls->synced_end = ls->durable_end;
		}
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

static void
group_done(struct km_io_op *op, int res)
{
	struct log_store *ls =
		(struct log_store *)((uint8_t *)op - offsetof(struct log_store, wop));

	/* The write: all of it or an error; the fdatasync linked to it: 0 or an error
	 * (-ECANCELED when the write failed). */
	if (ls->group_cqes == 2 || ls->durability != KM_DUR_SYNC) {
		if (res >= 0 && (size_t)res != ls->flight.len)
			res = -ENOSPC;
	}
	if (res < 0 && ls->group_err == 0)
		ls->group_err = res;
	if (--ls->group_cqes == 0)
		group_finish(ls);
}

static void
sync_done(struct km_io_op *op, int res)
{
	struct log_store *ls =
		(struct log_store *)((uint8_t *)op - offsetof(struct log_store, sop));

	ls->sync_inflight = 0;
	if (res < 0) {
		/* The page cache may have dropped what it could not write: records already
		 * acknowledged (async mode) may be gone. */
		ls->st.write_errors++;
		return;
	}
	ls->st.fsyncs++;
	ls->synced_end = ls->sync_target;
}

static uint64_t
ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)(now.tv_sec - t->tv_sec) * 1000 +
	       (uint64_t)((now.tv_nsec - t->tv_nsec) / 1000000);
}

static int
flush_more(const struct log_store *ls)
{
	return ls->open.len != 0 || ls->group_cqes != 0 || ls->sync_inflight ||
	       (ls->durability == KM_DUR_ASYNC && ls->synced_end < ls->durable_end);
}

static int
log_flush(struct km_store *s)
{
	struct log_store *ls = ls_of(s);
	struct io_uring_sqe *w, *f;
	struct wbuf t;

	if (ls->io == NULL) {
		write_out_unbound(ls);
		return 0;
	}
	if (ls->group_cqes == 0 && ls->open.len != 0) {
		/* Both entries or none: a write without its fdatasync is not a sync group. */
		if (!km_io_room(ls->io, ls->durability == KM_DUR_SYNC ? 2 : 1))
			return 1;
		w = km_io_sqe(ls->io, &ls->wop);
		f = ls->durability == KM_DUR_SYNC ? km_io_sqe(ls->io, &ls->wop) : NULL;
		if (w == NULL || (ls->durability == KM_DUR_SYNC && f == NULL))
			return 1; /* cannot happen after km_io_room() */
		t = ls->flight;
		ls->flight = ls->open;
		ls->open = t;
		ls->open.len = 0;
		ls->open.base = ls->flight.base + ls->flight.len;
		ls->seq_flight = ls->seq_appended;
		ls->undo_flight = ls->nb_undo;
		ls->group_err = 0;
		ls->group_cqes = f != NULL ? 2 : 1;
		io_uring_prep_write(
			w, ls->fd, ls->flight.data, (unsigned int)ls->flight.len, ls->flight.base);
		if (f != NULL) {
			w->flags |= IOSQE_IO_LINK;
			io_uring_prep_fsync(f, ls->fd, IORING_FSYNC_DATASYNC);
			clock_gettime(CLOCK_MONOTONIC, &ls->last_sync);
		}
		km_io_submit(ls->io);
	}
	if (ls->durability == KM_DUR_ASYNC && !ls->sync_inflight &&
		ls->synced_end < ls->durable_end &&
		ms_since(&ls->last_sync) >= ls->sync_interval_ms) {
		f = km_io_sqe(ls->io, &ls->sop);
		if (f == NULL)
			return 1;
		io_uring_prep_fsync(f, ls->fd, IORING_FSYNC_DATASYNC);
		ls->sync_inflight = 1;
		ls->sync_target = ls->durable_end;
		clock_gettime(CLOCK_MONOTONIC, &ls->last_sync);
		km_io_submit(ls->io);
	}
	return flush_more(ls);
}

/* Write out everything appended and wait for the store's I/O in flight, blocking (a
 * failed write rolls the rest back, so this ends). */
static void
settle(struct log_store *ls)
{
	while (ls->io != NULL && (ls->group_cqes != 0 || ls->sync_inflight || ls->open.len != 0)) {
		log_flush(&ls->base);
		if (km_io_wait(ls->io) < 0)
			break;
	}
}

static void
log_bind(struct km_store *s, struct km_io *io, km_store_durable_fn durable, void *arg)
{
	struct log_store *ls = ls_of(s);

	settle(ls);
	ls->io = io;
	ls->durable = durable;
	ls->darg = arg;
	if (io == NULL && ls->open.len != 0 && write_out_unbound(ls) < 0) {
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

/* Store lifecycle. */

static int
params_copy(struct log_store *ls, const struct km_store_params *p)
{
	if (p->dir == NULL || p->cold_dir == NULL || strlen(p->dir) >= sizeof(ls->dir) - 32 ||
		strlen(p->cold_dir) >= sizeof(ls->cold_dir) - 32 || p->shard_id == 0 ||
		p->durability > KM_DUR_SYNC || p->tier > KM_TIER_COLD)
		return -EINVAL;
	strcpy(ls->dir, p->dir);
	strcpy(ls->cold_dir, p->cold_dir);
	ls->id = p->shard_id;
	ls->value_max = p->value_max;
	ls->durability = p->durability;
	ls->route_sep = p->route_sep;
	ls->route_depth = p->route_depth;
	ls->sync_interval_ms = p->sync_interval_ms ? p->sync_interval_ms : SYNC_INTERVAL_DEF;
	ls->wbuf_max = p->write_buffer ? p->write_buffer : WBUF_DEFAULT;
	ls->version_last = p->version_base;
	ls->fd = -1;
	clock_gettime(CLOCK_MONOTONIC, &ls->last_sync);
	return 0;
}

static void
log_destroy(struct km_store *s)
{
	struct log_store *ls = ls_of(s);
	char path[PATH_MAX];

	settle(ls);
	if (ls->staged) {
		/* Never committed: its files go. */
		if (ls->fd >= 0) {
			log_path(ls, path, sizeof(path), 1);
			unlink(path);
		}
		km_seg_writer_abort(ls->segw);
		ls->segw = NULL;
	} else if (ls->open.len != 0) {
		write_out_unbound(ls);
	}
	if (ls->fd >= 0)
		close(ls->fd);
	km_seg_close(ls->seg);
	km_lidx_destroy(ls->idx);
	free(ls->open.data);
	free(ls->flight.data);
	free(ls->undo);
	free(ls->ublk);
	free(ls);
}

/* Write the META record of a new log file (synchronously). */
static int
meta_write(struct log_store *ls)
{
	uint8_t buf[KM_REC_HDR_LEN + META_LEN + KM_REC_ALIGN];
	struct meta m = {
		.shard_id = ls->id,
		.birth = ls->birth,
		.version_floor = ls->version_last,
		.route_sep = ls->route_sep,
		.route_depth = ls->route_depth,
		.tier = ls->tier,
	};
	size_t n = meta_encode(buf, sizeof(buf), &m);
	int rc = km_pwrite_all(ls->fd, buf, n, 0);

	if (rc < 0)
		return rc;
	ls->log_bytes = ls->durable_end = ls->open.base = n;
	return 0;
}

/* Replay: apply one record found in the log at off. */
static int
replay_rec(struct log_store *ls, const struct km_rec *r, uint64_t off, size_t size)
{
	struct km_lidx_ent *e;
	uint64_t hash;
	int created;
	struct meta m;

	if (r->version > ls->version_last)
		ls->version_last = r->version;
	if (r->type == KM_REC_META) {
		if (meta_decode(r, &m) == 0 && m.version_floor > ls->version_last)
			ls->version_last = m.version_floor;
		return 0;
	}
	ls->st.replayed++;
	hash = km_key_hash(r->key, r->klen);
	e = km_lidx_upsert(ls->idx, hash, &created);
	if (e == NULL)
		return -ENOMEM;
	/* Versions only go up: a record older than what the index has is a leftover (a
	 * rolled-back group the disk kept part of) and must not win. */
	if (!created && r->version < e->version)
		return 0;
	if (!created && e->loc != LOC_TOMBSTONE)
		ls->live_bytes -= entry_size(e->loc);
	if (r->type == KM_REC_DEL) {
		e->loc = LOC_TOMBSTONE;
		e->version = r->version;
		return 0;
	}
	e->loc = loc_log(off, size);
	e->version = r->version;
	ls->live_bytes += size;
	return 0;
}

/*
 * Read the whole log: apply valid records, skip damaged ones (counted), cut an
 * incomplete tail. Sets log_bytes / durable_end to the end of the last valid record.
 */
static int
replay_log(struct log_store *ls, int skip_records)
{
	uint8_t *buf = malloc(REPLAY_CHUNK);
	uint64_t off = 0, bad_from = UINT64_MAX, end_valid = 0, fsize;
	size_t have = 0, pos = 0, size;
	uint64_t buf_off = 0;
	struct km_rec r;
	struct stat sb;
	int rc = 0, res;
	ssize_t n;

	if (buf == NULL)
		return -ENOMEM;
	if (fstat(ls->fd, &sb) < 0) {
		free(buf);
		return -errno;
	}
	fsize = (uint64_t)sb.st_size;
	while (off < fsize) {
		/* Keep at least one largest record in the buffer from off on. */
		if (pos + REC_MAX > have && buf_off + have < fsize) {
			buf_off = off;
			n = pread(ls->fd, buf, REPLAY_CHUNK, (off_t)off);
			if (n < 0) {
				rc = -errno;
				break;
			}
			have = (size_t)n;
			pos = 0;
			if (have == 0)
				break;
		}
		res = km_rec_decode(buf + pos, have - pos, &r, &size);
		if (res == KM_REC_OK || res == KM_REC_BADDATA) {
			if (bad_from != UINT64_MAX) {
				/* Damage between two records: one skipped stretch. */
				ls->st.skipped_crc++;
				bad_from = UINT64_MAX;
			}
			if (res == KM_REC_BADDATA) {
				ls->st.skipped_crc++;
			} else if (!skip_records || r.type == KM_REC_META) {
				rc = replay_rec(ls, &r, off, size);
				if (rc < 0)
					break;
			}
			off += size;
			pos += size;
			end_valid = off;
			continue;
		}
		if (res == KM_REC_SHORT && off + size > fsize) {
			/* A record the file ends inside of: the torn tail of a crash. */
			break;
		}
		if (bad_from == UINT64_MAX)
			bad_from = off;
		off += KM_REC_ALIGN;
		pos += KM_REC_ALIGN;
	}
	free(buf);
	if (rc < 0)
		return rc;
	if (end_valid < fsize) {
		ls->st.torn_bytes += fsize - end_valid;
		if (ftruncate(ls->fd, (off_t)end_valid) < 0)
			return -errno;
	}
	ls->log_bytes = ls->durable_end = ls->synced_end = ls->open.base = end_valid;
	return 0;
}

static int
replay_seg_one(void *arg, const struct km_rec *r, uint32_t block, uint32_t off)
{
	struct log_store *ls = arg;
	struct km_lidx_ent *e;
	int created;

	ls->st.replayed++;
	if (r->version > ls->version_last)
		ls->version_last = r->version;
	e = km_lidx_upsert(ls->idx, km_key_hash(r->key, r->klen), &created);
	if (e == NULL)
		return -ENOMEM;
	if (!created && r->version < e->version)
		return 0;
	e->loc = LOC_SEG | ((uint64_t)block << LOC_POS_SHIFT) | off;
	e->version = r->version;
	return 0;
}

/* Remove the replay's tombstones from the index. */
static int
drop_tombstones(struct log_store *ls)
{
	uint64_t pos = 0, *h = NULL;
	size_t n = 0, cap = 0, i;
	struct km_lidx_ent *e;

	while ((e = km_lidx_next(ls->idx, &pos)) != NULL) {
		if (e->loc != LOC_TOMBSTONE)
			continue;
		if (n == cap) {
			uint64_t *t = realloc(h, (cap = cap ? cap * 2 : 1024) * sizeof(*h));

			if (t == NULL) {
				free(h);
				return -ENOMEM;
			}
			h = t;
		}
		h[n++] = e->hash;
	}
	for (i = 0; i < n; i++) {
		e = km_lidx_find(ls->idx, h[i]);
		if (e != NULL)
			km_lidx_remove(ls->idx, e);
	}
	free(h);
	return 0;
}

static int
open_existing(struct log_store *ls, const struct km_store_params *p)
{
	char path[PATH_MAX];
	struct meta lm = {0};
	int rc, have_log, log_stale = 0;
	struct km_seg *seg = NULL;
	const struct km_seg_meta *sm;

	log_path(ls, path, sizeof(path), 0);
	ls->fd = open(path, O_RDWR | O_CLOEXEC);
	have_log = ls->fd >= 0;
	if (!have_log && errno != ENOENT)
		return -errno;
	if (have_log && meta_read(ls->fd, &lm) < 0) {
		/* A log without a readable META record: its first record was damaged.
		 * Replay what follows; the store takes a new birth. */
		lm.birth = 0;
		lm.shard_id = ls->id;
		lm.route_sep = p->route_sep;
		lm.route_depth = p->route_depth;
	}
	if (have_log && (lm.shard_id != ls->id || lm.route_sep != p->route_sep ||
				lm.route_depth != p->route_depth))
		return -EPROTO;
	seg_path(ls, path, sizeof(path), 0);
	rc = km_seg_open(path, &seg);
	if (rc < 0 && rc != -ENOENT)
		return rc;
	if (seg != NULL) {
		sm = km_seg_meta(seg);
		if (sm->shard_id != ls->id || sm->route_sep != p->route_sep ||
			sm->route_depth != p->route_depth) {
			km_seg_close(seg);
			return -EPROTO;
		}
		if (have_log && lm.birth > sm->birth) {
			/* Promoted back to the log, crashed before the segment was removed. */
			km_seg_close(seg);
			seg = NULL;
			unlink(path);
		} else if (have_log && lm.birth != 0 && lm.birth < sm->birth) {
			/* Went cold, crashed before the log was replaced: the segment has it all.
			 */
			log_stale = 1;
		}
	}
	ls->seg = seg;
	ls->tier = seg != NULL ? KM_TIER_COLD : KM_TIER_HOT;
	if (seg != NULL) {
		birth_seen(km_seg_meta(seg)->birth);
		if (km_seg_meta(seg)->version_floor > ls->version_last)
			ls->version_last = km_seg_meta(seg)->version_floor;
		rc = km_seg_scan(seg, replay_seg_one, ls);
		if (rc < 0)
			return rc;
	}
	if (have_log) {
		birth_seen(lm.birth);
		rc = replay_log(ls, log_stale);
		if (rc < 0)
			return rc;
	}
	rc = drop_tombstones(ls);
	if (rc < 0)
		return rc;
	if (have_log && !log_stale && lm.birth != 0) {
		ls->birth = lm.birth;
	} else {
		/* A new log (none, stale or unreadable META): write it from the index. */
		ls->birth = seg != NULL ? km_seg_meta(seg)->birth : birth_take();
		if (log_stale) {
			/* The log stays only when its META alone is damaged (records replayed). */
			close(ls->fd);
			ls->fd = -1;
			log_path(ls, path, sizeof(path), 0);
			unlink(path);
		}
		if (!have_log || log_stale) {
			log_path(ls, path, sizeof(path), 0);
			ls->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
			if (ls->fd < 0)
				return -errno;
			rc = meta_write(ls);
			if (rc == 0 && fdatasync(ls->fd) < 0)
				rc = -errno;
			if (rc == 0)
				rc = fsync_dir(ls->dir);
			if (rc < 0)
				return rc;
			ls->synced_end = ls->durable_end;
		}
	}
	if (km_lidx_count(ls->idx) > 1024)
		km_lidx_fit(ls->idx, 0.8);
	return 0;
}

static int
open_staged(struct log_store *ls)
{
	char path[PATH_MAX];
	struct km_seg_meta sm;
	int rc;

	ls->birth = birth_take();
	ls->staged = 1;
	log_path(ls, path, sizeof(path), 1);
	unlink(path); /* a leftover of a crash or an aborted stage */
	ls->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (ls->fd < 0)
		return -errno;
	rc = meta_write(ls);
	if (rc < 0)
		return rc;
	if (ls->tier == KM_TIER_COLD) {
		sm = (struct km_seg_meta){
			.shard_id = ls->id,
			.birth = ls->birth,
			.version_floor = ls->version_last,
			.route_sep = ls->route_sep,
			.route_depth = ls->route_depth,
		};
		seg_path(ls, path, sizeof(path), 1);
		unlink(path);
		rc = km_seg_writer_open(path, &sm, SEG_BLOCK, &ls->segw);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int
log_create(const struct km_store_params *p, struct km_store **out)
{
	struct log_store *ls = calloc(1, sizeof(*ls));
	int rc;

	if (ls == NULL)
		return -ENOMEM;
	ls->base.ops = &log_ops;
	ls->wop.done = group_done;
	ls->sop.done = sync_done;
	rc = params_copy(ls, p);
	if (rc < 0) {
		free(ls);
		return rc;
	}
	ls->tier = p->tier;
	rc = km_lidx_create(p->initial_keys, &ls->idx);
	if (rc == 0)
		rc = p->mode == KM_STORE_STAGE ? open_staged(ls) : open_existing(ls, p);
	if (rc < 0) {
		ls->staged = p->mode == KM_STORE_STAGE && ls->fd >= 0;
		log_destroy(&ls->base);
		return rc;
	}
	*out = &ls->base;
	return 0;
}

/*
 * Everything that can fail comes before the first rename: once a new file has its name,
 * the commit has happened (a restart would take the new files), so it must not be
 * reported as failed and the old store must not serve again.
 */
static int
log_commit(struct km_store *s)
{
	struct log_store *ls = ls_of(s);
	char tmp[PATH_MAX], path[PATH_MAX], stmp[PATH_MAX], spath[PATH_MAX];
	struct km_seg_writer *w;
	struct km_seg *seg = NULL;
	int rc;

	if (!ls->staged)
		return -EINVAL;
	rc = write_out_unbound(ls);
	if (rc == 0 && fdatasync(ls->fd) < 0)
		rc = -errno;
	if (rc < 0)
		return rc;
	ls->synced_end = ls->durable_end;
	seg_path(ls, stmp, sizeof(stmp), 1);
	seg_path(ls, spath, sizeof(spath), 0);
	if (ls->segw != NULL) {
		w = ls->segw;
		ls->segw = NULL;
		rc = km_seg_writer_finish(w);
		if (rc == 0)
			rc = km_seg_open(stmp, &seg); /* its descriptor outlives the rename */
		if (rc < 0) {
			unlink(stmp);
			return rc;
		}
		if (rename(stmp, spath) < 0) {
			rc = -errno;
			km_seg_close(seg);
			unlink(stmp);
			return rc;
		}
	}
	log_path(ls, tmp, sizeof(tmp), 1);
	log_path(ls, path, sizeof(path), 0);
	if (rename(tmp, path) < 0) {
		rc = -errno;
		if (seg != NULL) {
			/* Not committed: the segment must not outrank the shard's log. */
			if (rename(spath, stmp) == 0)
				unlink(stmp);
			km_seg_close(seg);
		}
		return rc;
	}
	ls->staged = 0;
	if (seg != NULL)
		ls->seg = seg;
	/* The new names are in place; an error making them durable is reported, the commit
	 * stands (a crash before the directory reaches the disk finds the old files). */
	if (fsync_dir(ls->dir) < 0 || (seg != NULL && fsync_dir(ls->cold_dir) < 0))
		ls->st.write_errors++;
	if (ls->tier == KM_TIER_HOT && unlink(spath) == 0 && fsync_dir(ls->cold_dir) < 0)
		ls->st.write_errors++; /* promoted: the segment is superseded */
	return 0;
}

static void
log_unlink(struct km_store *s)
{
	struct log_store *ls = ls_of(s);
	char path[PATH_MAX];

	if (!ls->staged) {
		log_path(ls, path, sizeof(path), 0);
		unlink(path);
		seg_path(ls, path, sizeof(path), 0);
		unlink(path);
		fsync_dir(ls->dir);
		fsync_dir(ls->cold_dir);
		/* Nothing is left to write to. */
		ls->open.len = 0;
	}
	log_destroy(s);
}

/* Data path. */

static int
check_key(const struct km_key *k)
{
	return k->len == 0 || k->len > LOG_KEY_MAX ? -EINVAL : 0;
}

static int
log_put(struct km_store *s, const struct km_key *k, const void *val, uint32_t len, uint64_t expect,
	int create_only, uint64_t *version)
{
	struct log_store *ls = ls_of(s);
	struct km_lidx_ent *e;
	int created, rc;

	if (check_key(k) < 0)
		return -EINVAL;
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

static int
log_del(struct km_store *s, const struct km_key *k, uint64_t expect, uint64_t *version)
{
	struct log_store *ls = ls_of(s);
	struct km_lidx_ent *e;
	uint64_t v;
	int rc;

	if (check_key(k) < 0)
		return -EINVAL;
	e = km_lidx_find(ls->idx, k->hash);
	if (e == NULL)
		return -ENOENT;
	v = e->version;
	if (expect != KM_VERSION_ANY && v != expect) {
		*version = v;
		return -ESTALE;
	}
	rc = append(ls, k, NULL, 0, v, 1, e);
	if (rc < 0)
		return rc;
	*version = v;
	return 0;
}

static int
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

/* A record in a write buffer (not on disk yet), or NULL. */
static const uint8_t *
buffered(const struct log_store *ls, uint64_t off)
{
	if (ls->flight.len != 0 && off >= ls->flight.base && off < ls->flight.base + ls->flight.len)
		return ls->flight.data + (off - ls->flight.base);
	if (off >= ls->open.base && off < ls->open.base + ls->open.len)
		return ls->open.data + (off - ls->open.base);
	return NULL;
}

/* Check a record read for k: the key, the type, the version. */
static int
rec_check(const uint8_t *p, size_t len, const struct km_key *k, uint64_t version,
	struct km_value_ref *out)
{
	struct km_rec r;
	size_t size;
	int res = km_rec_decode(p, len, &r, &size);

	if (res != KM_REC_OK || r.type != KM_REC_PUT)
		return -EBADMSG;
	if (r.klen != k->len || memcmp(r.key, k->data, k->len) != 0)
		return -ENOENT; /* another key with the same 64-bit hash */
	if (r.version != version)
		return -EBADMSG;
	out->data = r.val;
	out->len = r.vlen;
	out->version = r.version;
	return 0;
}

/* Blocking read of an entry (unbound use: the control lcore's walk, get). */
static int
read_sync(struct log_store *ls, const struct km_lidx_ent *e, const struct km_key *k,
	struct km_value_ref *out)
{
	uint64_t boff;
	uint32_t clen, b;
	const uint8_t *p;
	uint8_t *cbuf;
	int rc;

	if (!(e->loc & LOC_SEG)) {
		p = buffered(ls, loc_pos(e->loc));
		if (p != NULL)
			return rec_check(p, loc_low(e->loc), k, e->version, out);
		if (ls->ublk == NULL && (ls->ublk = malloc(KM_SEG_BLOCK_SIZE_MAX)) == NULL)
			return -ENOMEM;
		ls->ublk_valid = 0;
		rc = km_pread_all(ls->fd, ls->ublk, loc_low(e->loc), loc_pos(e->loc));
		if (rc < 0)
			return rc;
		return rec_check(ls->ublk, loc_low(e->loc), k, e->version, out);
	}
	b = (uint32_t)loc_pos(e->loc);
	if (ls->ublk == NULL && (ls->ublk = malloc(KM_SEG_BLOCK_SIZE_MAX)) == NULL)
		return -ENOMEM;
	if (!ls->ublk_valid || ls->ublk_no != b) {
		ls->ublk_valid = 0;
		rc = km_seg_block_extent(ls->seg, b, &boff, &clen);
		if (rc < 0)
			return rc;
		cbuf = malloc(clen);
		if (cbuf == NULL)
			return -ENOMEM;
		rc = km_pread_all(km_seg_fd(ls->seg), cbuf, clen, boff);
		if (rc == 0)
			rc = km_seg_block_decode(
				ls->seg, b, cbuf, clen, ls->ublk, KM_SEG_BLOCK_SIZE_MAX);
		free(cbuf);
		if (rc < 0)
			return rc;
		ls->ublk_no = b;
		ls->ublk_valid = 1;
	}
	if (loc_low(e->loc) >= km_seg_ublock_max(ls->seg))
		return -EBADMSG;
	return rec_check(ls->ublk + loc_low(e->loc), km_seg_ublock_max(ls->seg) - loc_low(e->loc),
		k, e->version, out);
}

static int
log_get(struct km_store *s, const struct km_key *k, struct km_value_ref *out)
{
	struct log_store *ls = ls_of(s);
	struct km_lidx_ent *e = km_lidx_find(ls->idx, k->hash);
	int rc;

	if (e == NULL)
		return -ENOENT;
	rc = read_sync(ls, e, k, out);
	ls->st.disk_reads++;
	if (rc < 0 && rc != -ENOENT)
		ls->st.disk_read_errors++;
	return rc;
}

static int
log_read_start(
	struct km_store *s, const struct km_key *k, struct km_read *rd, struct km_value_ref *out)
{
	struct log_store *ls = ls_of(s);
	struct km_lidx_ent *e = km_lidx_find(ls->idx, k->hash);
	struct io_uring_sqe *sqe;
	const uint8_t *p;
	uint64_t off;
	uint32_t len;
	int fd;

	if (e == NULL)
		return -ENOENT;
	if (ls->io == NULL) {
		int rc = log_get(s, k, out);

		return rc;
	}
	if (!(e->loc & LOC_SEG)) {
		p = buffered(ls, loc_pos(e->loc));
		if (p != NULL)
			return rec_check(p, loc_low(e->loc), k, e->version, out);
		off = loc_pos(e->loc);
		len = loc_low(e->loc);
		fd = ls->fd;
	} else {
		if (km_seg_block_extent(ls->seg, (uint32_t)loc_pos(e->loc), &off, &len) < 0)
			return -EBADMSG;
		fd = km_seg_fd(ls->seg);
	}
	rd->buf = calloc(1, len); /* zeroed: memory checkers do not see the kernel fill it */
	if (rd->buf == NULL)
		return -ENOMEM;
	sqe = km_io_sqe(ls->io, &rd->op);
	if (sqe == NULL) {
		km_store_read_free(rd);
		return -EAGAIN;
	}
	io_uring_prep_read(sqe, fd, rd->buf, len, off);
	km_io_submit(ls->io);
	rd->loc = e->loc;
	rd->version = e->version;
	rd->len = len;
	return 1;
}

static int
log_read_done(struct km_store *s, struct km_read *rd, int res, const struct km_key *k,
	struct km_value_ref *out)
{
	struct log_store *ls = ls_of(s);
	struct km_lidx_ent *e = km_lidx_find(ls->idx, k->hash);
	uint32_t b, ulen;
	int rc;

	ls->st.disk_reads++;
	if (res < 0 || (uint32_t)res != rd->len) {
		ls->st.disk_read_errors++;
		return -EIO;
	}
	if (e == NULL)
		return -ENOENT;
	if (e->loc != rd->loc || e->version != rd->version)
		return -EAGAIN;
	if (!(rd->loc & LOC_SEG)) {
		rc = rec_check(rd->buf, rd->len, k, rd->version, out);
	} else {
		b = (uint32_t)loc_pos(rd->loc);
		ulen = km_seg_ublock_max(ls->seg);
		rd->ubuf = malloc(ulen);
		if (rd->ubuf == NULL)
			return -ENOMEM;
		rc = km_seg_block_decode(ls->seg, b, rd->buf, rd->len, rd->ubuf, ulen);
		if (rc >= 0)
			rc = loc_low(rd->loc) < (uint32_t)rc
				     ? rec_check(rd->ubuf + loc_low(rd->loc),
					       (uint32_t)rc - loc_low(rd->loc), k, rd->version, out)
				     : -EBADMSG;
	}
	if (rc < 0 && rc != -ENOENT)
		ls->st.disk_read_errors++;
	return rc;
}

static uint64_t
log_write_seq(const struct km_store *s)
{
	return ((const struct log_store *)s)->seq_appended;
}

static uint64_t
log_durable_seq(const struct km_store *s)
{
	return ((const struct log_store *)s)->seq_durable;
}

/* Walk: every live record, read sequentially (segment, then log), checked against the
 * index so that only each key's latest record is reported. */
struct walk_ctx {
	struct log_store *ls;
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v);
	void *arg;
};

static int
walk_seg_one(void *arg, const struct km_rec *r, uint32_t block, uint32_t off)
{
	struct walk_ctx *c = arg;
	struct km_key k = {.data = r->key, .len = r->klen, .hash = km_key_hash(r->key, r->klen)};
	struct km_lidx_ent *e = km_lidx_find(c->ls->idx, k.hash);
	struct km_value_ref v = {.data = r->val, .len = r->vlen, .version = r->version};

	if (e == NULL || e->loc != (LOC_SEG | ((uint64_t)block << LOC_POS_SHIFT) | off))
		return 0;
	return c->fn(c->arg, &k, &v);
}

static int
log_walk(struct km_store *s,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	struct log_store *ls = ls_of(s);
	struct walk_ctx c = {.ls = ls, .fn = fn, .arg = arg};
	uint8_t *buf;
	uint64_t off = 0, end;
	size_t have = 0, pos = 0, size;
	struct km_rec r;
	int rc = 0;
	ssize_t n;

	if (ls->seg != NULL) {
		rc = km_seg_scan(ls->seg, walk_seg_one, &c);
		if (rc != 0)
			return rc;
	}
	/* Whatever is still buffered goes to the file first (a bound store's owner may
	 * walk it too: the group in flight is waited for). */
	if (ls->io != NULL) {
		settle(ls);
	} else {
		rc = write_out_unbound(ls);
		if (rc < 0)
			return rc;
	}
	end = ls->durable_end;
	buf = malloc(REPLAY_CHUNK);
	if (buf == NULL)
		return -ENOMEM;
	while (off < end) {
		if (pos + REC_MAX > have && off + (have - pos) < end) {
			n = pread(ls->fd, buf, REPLAY_CHUNK, (off_t)off);
			if (n <= 0) {
				rc = n < 0 ? -errno : -EIO;
				break;
			}
			have = (size_t)n;
			pos = 0;
		}
		rc = km_rec_decode(buf + pos, have - pos, &r, &size);
		if (rc == KM_REC_BADHDR || rc == KM_REC_SHORT) {
			/* Damage replay already skipped: resynchronise the same way. */
			off += KM_REC_ALIGN;
			pos += KM_REC_ALIGN;
			rc = 0;
			continue;
		}
		if (rc == KM_REC_OK && r.type == KM_REC_PUT) {
			struct km_key k = {
				.data = r.key, .len = r.klen, .hash = km_key_hash(r.key, r.klen)};
			struct km_lidx_ent *e = km_lidx_find(ls->idx, k.hash);
			struct km_value_ref v = {
				.data = r.val, .len = r.vlen, .version = r.version};

			if (e != NULL && e->loc == loc_log(off, size)) {
				rc = fn(arg, &k, &v);
				if (rc != 0)
					break;
			}
		}
		rc = 0;
		off += size;
		pos += size;
	}
	free(buf);
	return rc;
}

static void
log_stats(const struct km_store *s, struct km_store_stats *st)
{
	const struct log_store *ls = (const struct log_store *)s;

	*st = ls->st;
	st->keys = km_lidx_count(ls->idx);
	st->value_bytes = ls->live_bytes;
	st->index_bytes = km_lidx_bytes(ls->idx);
	st->entry_overhead_bytes = 0;
	st->version_last = ls->version_last;
	st->tier = ls->tier;
	st->file_bytes = ls->log_bytes + (ls->seg != NULL ? km_seg_file_bytes(ls->seg) : 0);
	st->dead_bytes = ls->log_bytes > ls->live_bytes ? ls->log_bytes - ls->live_bytes : 0;
}

/* Recovery of a data directory: which shards' files are current. */

struct found {
	uint64_t id;
	uint64_t birth;
	int keep;
};

static int
shard_file_id(const char *name, const char *suffix, uint64_t *id)
{
	char *end;
	unsigned long long v;

	if (strncmp(name, "shard-", 6) != 0)
		return 0;
	v = strtoull(name + 6, &end, 10);
	if (end == name + 6 || strcmp(end, suffix) != 0 || v == 0 || v >> (DEPTH_MAX + 1) != 0)
		return 0;
	*id = v;
	return 1;
}

static unsigned int
id_depth(uint64_t id)
{
	return 63 - (unsigned int)__builtin_clzll(id);
}

/* Whether a (shallower or equal) contains b. */
static int
id_contains(uint64_t a, uint64_t b)
{
	unsigned int da = id_depth(a), db = id_depth(b);

	return db >= da && (b >> (db - da)) == a;
}

static int
found_add(struct found **f, size_t *n, size_t *cap, uint64_t id, uint64_t birth)
{
	size_t i;

	for (i = 0; i < *n; i++)
		if ((*f)[i].id == id) {
			if (birth > (*f)[i].birth)
				(*f)[i].birth = birth;
			return 0;
		}
	if (*n == *cap) {
		struct found *t = realloc(*f, (*cap = *cap ? *cap * 2 : 64) * sizeof(**f));

		if (t == NULL)
			return -ENOMEM;
		*f = t;
	}
	(*f)[(*n)++] = (struct found){.id = id, .birth = birth};
	return 0;
}

static int
cmp_birth_desc(const void *a, const void *b)
{
	const struct found *x = a, *y = b;

	return x->birth < y->birth ? 1 : x->birth > y->birth ? -1 : 0;
}

static int
scan_dir(const struct km_store_params *p, const char *dir, const char *suffix, struct found **f,
	size_t *n, size_t *cap)
{
	char path[PATH_MAX];
	struct dirent *de;
	struct meta m;
	uint64_t id;
	DIR *d = opendir(dir);
	int rc = 0, fd;

	if (d == NULL)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);

		if (l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0 &&
			strncmp(de->d_name, "shard-", 6) == 0) {
			/* A staged file never committed. */
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
			continue;
		}
		if (!shard_file_id(de->d_name, suffix, &id))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (strcmp(suffix, ".log") == 0) {
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				rc = -errno;
				break;
			}
			if (meta_read(fd, &m) < 0)
				m = (struct meta){.shard_id = id,
					.route_sep = p->route_sep,
					.route_depth = p->route_depth};
			close(fd);
		} else {
			struct km_seg *seg;

			if (km_seg_open(path, &seg) < 0)
				continue; /* reported when the shard opens it */
			m.shard_id = km_seg_meta(seg)->shard_id;
			m.birth = km_seg_meta(seg)->birth;
			m.route_sep = km_seg_meta(seg)->route_sep;
			m.route_depth = km_seg_meta(seg)->route_depth;
			km_seg_close(seg);
		}
		if (m.route_sep != p->route_sep || m.route_depth != p->route_depth) {
			rc = -EPROTO;
			break;
		}
		birth_seen(m.birth);
		rc = found_add(f, n, cap, id, m.birth);
		if (rc < 0)
			break;
	}
	closedir(d);
	return rc;
}

static void
remove_shard_files(const struct km_store_params *p, uint64_t id)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/shard-%" PRIu64 ".log", p->dir, id);
	unlink(path);
	snprintf(path, sizeof(path), "%s/shard-%" PRIu64 ".seg", p->cold_dir, id);
	unlink(path);
}

/* A directory keymapd can create files in (permission bits do not stop root; a
 * read-only or full file system does). */
static int
probe_dir(const char *dir)
{
	char path[PATH_MAX];
	struct stat sb;
	int fd;

	if (stat(dir, &sb) < 0)
		return -errno;
	if (!S_ISDIR(sb.st_mode))
		return -ENOTDIR;
	snprintf(path, sizeof(path), "%s/.keymapd-probe", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	close(fd);
	unlink(path);
	return 0;
}

static int
log_recover(const struct km_store_params *p, uint64_t *ids, uint32_t max)
{
	struct found *f = NULL;
	size_t n = 0, cap = 0, i, j;
	unsigned __int128 covered, size;
	int rc, out = 0, removed = 0;

	if (p->dir == NULL || p->cold_dir == NULL)
		return -EINVAL;
	rc = probe_dir(p->dir);
	if (rc == 0)
		rc = probe_dir(p->cold_dir);
	if (rc < 0)
		return rc;
	rc = scan_dir(p, p->dir, ".log", &f, &n, &cap);
	if (rc == 0)
		rc = scan_dir(p, p->cold_dir, ".seg", &f, &n, &cap);
	if (rc < 0) {
		free(f);
		return rc;
	}
	/* Newest first: a file is current unless newer current files cover its range (it was
	 * split or merged away). Newer files covering only part of an older one are a copy
	 * that never completed (the others of the set were never committed): they go. */
	qsort(f, n, sizeof(*f), cmp_birth_desc);
	for (i = 0; i < n; i++) {
		int ancestor = 0;

		f[i].keep = 1;
		covered = 0;
		size = (unsigned __int128)1 << (64 - id_depth(f[i].id));
		for (j = 0; j < i; j++) {
			if (!f[j].keep)
				continue;
			if (id_contains(f[j].id, f[i].id))
				ancestor = 1;
			else if (id_contains(f[i].id, f[j].id))
				covered += (unsigned __int128)1 << (64 - id_depth(f[j].id));
		}
		if (ancestor || (covered != 0 && covered >= size)) {
			f[i].keep = 0;
		} else if (covered != 0) {
			for (j = 0; j < i; j++)
				if (f[j].keep && id_contains(f[i].id, f[j].id))
					f[j].keep = 0;
		}
	}
	for (i = 0; i < n; i++) {
		if (!f[i].keep) {
			remove_shard_files(p, f[i].id);
			removed = 1;
			continue;
		}
		if ((uint32_t)out < max)
			ids[out] = f[i].id;
		out++;
	}
	if (removed) {
		fsync_dir(p->dir);
		fsync_dir(p->cold_dir);
	}
	free(f);
	return out;
}

static const struct km_store_ops log_ops = {
	.name = "log",
	.create = log_create,
	.destroy = log_destroy,
	.get = log_get,
	.put = log_put,
	.del = log_del,
	.walk = log_walk,
	.stats = log_stats,
	.prefetch = NULL,
	.load = log_load,
	.bind = log_bind,
	.read_start = log_read_start,
	.read_done = log_read_done,
	.write_seq = log_write_seq,
	.durable_seq = log_durable_seq,
	.flush = log_flush,
	.commit = log_commit,
	.unlink = log_unlink,
	.recover = log_recover,
};

KM_STORE_REGISTER(log_ops)
