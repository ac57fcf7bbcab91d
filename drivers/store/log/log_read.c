/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The log driver's read path: values from the write buffer or the disk (synchronous for
 * walks and small stores, io_uring for the worker's misses), checked against the index,
 * and walks over every entry.
 */

#include "log_store.h"

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

/* Check a record read for k (NULL: any key, given in *kout): the key, the type, the
 * version. */
static int
rec_check(const uint8_t *p, size_t len, const struct km_key *k, uint64_t version,
	struct km_value_ref *out, struct km_key *kout)
{
	struct km_rec r;
	size_t size;
	int res = km_rec_decode(p, len, &r, &size);

	if (res != KM_REC_OK || r.type != KM_REC_PUT)
		return -EBADMSG;
	if (k != NULL && (r.klen != k->len || memcmp(r.key, k->data, k->len) != 0))
		return -ENOENT; /* another key with the same 64-bit hash */
	if (r.version != version)
		return -EBADMSG;
	out->data = r.val;
	out->len = r.vlen;
	out->version = r.version;
	if (kout != NULL) {
		kout->data = r.key;
		kout->len = (uint16_t)r.klen;
	}
	return 0;
}

/* Blocking read of an entry (unbound use: the control lcore's walk, get; SCAN): the value
 * of key k, or with k NULL of whatever key the record has (then in *kout). */
static int
read_sync(struct log_store *ls, const struct km_lidx_ent *e, const struct km_key *k,
	struct km_value_ref *out, struct km_key *kout)
{
	uint64_t boff;
	uint32_t clen, b;
	const uint8_t *p;
	uint8_t *cbuf;
	int rc;

	if (!(e->loc & LOC_SEG)) {
		p = buffered(ls, loc_pos(e->loc));
		if (p != NULL)
			return rec_check(p, loc_low(e->loc), k, e->version, out, kout);
		if (ls->ublk == NULL && (ls->ublk = malloc(KM_SEG_BLOCK_SIZE_MAX)) == NULL)
			return -ENOMEM;
		ls->ublk_valid = 0;
		rc = km_pread_all(ls->fd, ls->ublk, loc_low(e->loc), loc_pos(e->loc));
		if (rc < 0)
			return rc;
		return rec_check(ls->ublk, loc_low(e->loc), k, e->version, out, kout);
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
		k, e->version, out, kout);
}

int
log_get(struct km_store *s, const struct km_key *k, struct km_value_ref *out)
{
	struct log_store *ls = ls_of(s);
	struct km_lidx_ent *e = km_lidx_find(ls->idx, k->hash);
	int rc;

	if (ls->quarantined)
		return -EBADMSG;
	if (e == NULL)
		return -ENOENT;
	if (e->loc == LOC_DAMAGED)
		return -EBADMSG;
	rc = read_sync(ls, e, k, out, NULL);
	ls->st.disk_reads++;
	if (rc < 0 && rc != -ENOENT)
		ls->st.disk_read_errors++;
	return rc;
}

int
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

	if (ls->quarantined)
		return -EBADMSG;
	if (e == NULL)
		return -ENOENT;
	if (e->loc == LOC_DAMAGED)
		return -EBADMSG;
	if (ls->io == NULL) {
		int rc = log_get(s, k, out);

		return rc;
	}
	if (!(e->loc & LOC_SEG)) {
		p = buffered(ls, loc_pos(e->loc));
		if (p != NULL)
			return rec_check(p, loc_low(e->loc), k, e->version, out, NULL);
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

int
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
		rc = rec_check(rd->buf, rd->len, k, rd->version, out, NULL);
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
					       (uint32_t)rc - loc_low(rd->loc), k, rd->version, out,
					       NULL)
				     : -EBADMSG;
	}
	if (rc < 0 && rc != -ENOENT)
		ls->st.disk_read_errors++;
	return rc;
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

/* A record of the log at off: reported if it is its key's newest. */
static int
walk_log_one(struct log_store *ls, const struct km_rec *r, uint64_t off, size_t size,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	struct km_key k = {.data = r->key, .len = r->klen, .hash = km_key_hash(r->key, r->klen)};
	struct km_value_ref v = {.data = r->val, .len = r->vlen, .version = r->version};
	struct km_lidx_ent *e;

	if (r->type != KM_REC_PUT)
		return 0;
	e = km_lidx_find(ls->idx, k.hash);
	return e != NULL && e->loc == loc_log(off, size) ? fn(arg, &k, &v) : 0;
}

int
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

	if (ls->quarantined)
		return -EBADMSG; /* nothing to copy: its data is not known */
	if (ls->seg != NULL) {
		rc = km_seg_scan(ls->seg, walk_seg_one, &c);
		if (rc != 0)
			return rc;
	}
	/* Whatever is still buffered goes to the file first (a bound store's owner may
	 * walk it too: the group in flight is waited for). */
	if (ls->io != NULL) {
		log_settle(ls);
	} else {
		rc = log_write_out_unbound(ls);
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
		rc = rc == KM_REC_OK ? walk_log_one(ls, &r, off, size, fn, arg) : 0;
		if (rc != 0)
			break;
		off += size;
		pos += size;
	}
	free(buf);
	return rc;
}

/*
 * Resumable walk: the segment a few blocks at a time (part 1), then the log from its
 * start to where it ended at the first call (part 2), a window at a time. Records never
 * move in either; what is appended after the first call is not visited. Part 2 reads only
 * what is written out: while the rest waits for its group, the call visits nothing and
 * returns 1.
 */
#define WALK_SEG_BLOCKS 2
#define WALK_WINDOW     (64u << 10)

int
log_walk_step(struct km_store *s, struct km_walk_pos *wp, uint32_t budget,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	struct log_store *ls = ls_of(s);
	struct walk_ctx c = {.ls = ls, .fn = fn, .arg = arg};
	uint64_t limit, want;
	size_t off = 0, size;
	uint32_t seen = 0;
	struct km_rec r;
	uint8_t *buf;
	ssize_t n;
	int rc;

	if (fn == NULL || wp == NULL)
		return -EINVAL;
	if (ls->quarantined)
		return -EBADMSG;
	if (wp->part == 0) {
		wp->end = ls->log_bytes;
		wp->pos = 0;
		wp->part = ls->seg != NULL ? 1 : 2;
	}
	if (wp->part == 1) {
		rc = km_seg_scan_blocks(
			ls->seg, (uint32_t)wp->pos, WALK_SEG_BLOCKS, walk_seg_one, &c);
		if (rc != 0)
			return rc;
		wp->pos += WALK_SEG_BLOCKS;
		if (wp->pos >= km_seg_nb_blocks(ls->seg)) {
			wp->part = 2;
			wp->pos = 0;
		}
		return 1;
	}
	if (ls->io == NULL) {
		rc = log_write_out_unbound(ls);
		if (rc < 0)
			return rc;
	}
	/* A failed group is cut off the log: the walk ends where the log ends now. */
	if (wp->end > ls->log_bytes)
		wp->end = ls->log_bytes;
	if (wp->pos >= wp->end)
		return 0;
	limit = wp->end < ls->durable_end ? wp->end : ls->durable_end;
	if (wp->pos >= limit)
		return 1;
	/* A window for about `budget` small records; one that holds any record when the
	 * first one is larger. */
	want = limit - wp->pos;
	if (want > WALK_WINDOW)
		want = WALK_WINDOW;
	buf = malloc(REC_MAX > WALK_WINDOW ? REC_MAX : WALK_WINDOW);
	if (buf == NULL)
		return -ENOMEM;
	n = pread(ls->fd, buf, want, (off_t)wp->pos);
	if (n > 0 && km_rec_decode(buf, (size_t)n, &r, &size) == KM_REC_SHORT &&
		wp->pos + (uint64_t)n < limit) {
		want = limit - wp->pos < REC_MAX ? limit - wp->pos : REC_MAX;
		n = pread(ls->fd, buf, want, (off_t)wp->pos);
	}
	if (n <= 0) {
		free(buf);
		return n < 0 ? -errno : -EIO;
	}
	rc = 0;
	while (off < (size_t)n && seen < budget) {
		rc = km_rec_decode(buf + off, (size_t)n - off, &r, &size);
		if (rc == KM_REC_SHORT && off > 0 && wp->pos + off + REC_MAX > wp->pos + n &&
			wp->pos + n < limit) {
			rc = 0; /* cut by the window: the next call reads it from its start */
			break;
		}
		if (rc == KM_REC_BADHDR || rc == KM_REC_SHORT) {
			/* Damage replay already skipped: resynchronise the same way. */
			off += KM_REC_ALIGN;
			rc = 0;
			continue;
		}
		rc = rc == KM_REC_OK ? walk_log_one(ls, &r, wp->pos + off, size, fn, arg) : 0;
		off += size;
		seen++;
		if (rc != 0)
			break;
	}
	free(buf);
	wp->pos += off;
	if (rc != 0)
		return rc;
	return wp->pos < wp->end;
}

/*
 * SCAN over the index (km_store_scan_table()). The index keeps no key: each entry a page
 * looks at is read from the write buffer, the log or the segment, blocking, as a walk
 * reads, on the worker: so a page examines at most LOG_SCAN_SLOTS slots and reads at
 * most LOG_SCAN_READS records.
 */
#define LOG_SCAN_SLOTS 64
#define LOG_SCAN_READS 32

struct log_scan {
	struct log_store *ls;
	struct km_lidx_ent *slots;
};

static int
log_scan_used(void *tab, uint64_t i)
{
	return ((const struct log_scan *)tab)->slots[i].version != 0;
}

static uint64_t
log_scan_order(void *tab, uint64_t i)
{
	return km_scan_order(((const struct log_scan *)tab)->slots[i].hash);
}

static int
log_scan_visit(void *tab, uint64_t i, const uint8_t *prefix, uint16_t plen,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	struct log_scan *sc = tab;
	const struct km_lidx_ent *e = &sc->slots[i];
	struct km_value_ref v;
	struct km_key k;
	int rc;

	/* A key whose newest record is damaged is not known any more: not listed (a GET of
	 * it answers DAMAGED). */
	if (e->loc == LOC_DAMAGED)
		return 0;
	rc = read_sync(sc->ls, e, NULL, &v, &k);
	sc->ls->st.disk_reads++;
	if (rc < 0) {
		sc->ls->st.disk_read_errors++;
		/* A record that fails its check is left out like a damaged one; a read that
		 * failed fails the page (the client retries it). */
		return rc == -EBADMSG ? 0 : rc;
	}
	if (k.len < plen || (plen != 0 && memcmp(k.data, prefix, plen) != 0))
		return 0;
	k.hash = e->hash;
	return fn(arg, &k, &v);
}

int
log_scan(struct km_store *s, const uint8_t *prefix, uint16_t plen, uint64_t *cursor,
	uint32_t budget, int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v),
	void *arg)
{
	struct log_store *ls = ls_of(s);
	struct log_scan sc = {.ls = ls};
	struct km_scan_table t = {
		.tab = &sc,
		.visit_max = LOG_SCAN_READS,
		.used = log_scan_used,
		.order = log_scan_order,
		.visit = log_scan_visit,
	};

	if (fn == NULL || cursor == NULL || (prefix == NULL && plen != 0))
		return -EINVAL;
	if (ls->quarantined)
		return -EBADMSG;
	if (km_lidx_count(ls->idx) == 0) {
		*cursor = 0; /* complete at once, not a page per budget of empty slots */
		return 0;
	}
	sc.slots = km_lidx_slots(ls->idx, &t.nb);
	return km_store_scan_table(&t, prefix, plen, cursor,
		budget < LOG_SCAN_SLOTS ? budget : LOG_SCAN_SLOTS, fn, arg);
}
