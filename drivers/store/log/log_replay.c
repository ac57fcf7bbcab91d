/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Opening an existing shard of the log driver: its segment and log are replayed into the
 * DRAM index (damaged records skipped, an incomplete tail cut), tombstones dropped.
 */

#include "log_store.h"

/*
 * Replay: a record whose header is sound and whose key or value is not (its CRC fails).
 * If it is the key's newest, the key answers DAMAGED until it is written again: an older
 * value must not pass for the current one. Its key is read as it is on disk: if the
 * damage hit the key itself, the record cannot be told from another key's (counted in
 * skipped_crc all the same).
 */
static int
replay_damaged(struct log_store *ls, const struct km_rec *r, const uint8_t *key)
{
	struct km_lidx_ent *e;
	int created;

	if (r->version > ls->version_last)
		ls->version_last = r->version;
	if (r->type == KM_REC_META || r->klen == 0)
		return 0;
	e = km_lidx_upsert(ls->idx, km_key_hash(key, r->klen), &created);
	if (e == NULL)
		return -ENOMEM;
	if (!created && r->version < e->version)
		return 0;
	if (!created)
		ls->live_bytes -= entry_size(e->loc);
	e->loc = LOC_DAMAGED;
	e->version = r->version;
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
		if (log_meta_decode(r, &m) == 0 && m.version_floor > ls->version_last)
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
				if (!skip_records)
					rc = replay_damaged(ls, &r, buf + pos + KM_REC_HDR_LEN);
				if (rc < 0)
					break;
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

	ls->st.damaged_keys = 0;
	while ((e = km_lidx_next(ls->idx, &pos)) != NULL) {
		ls->st.damaged_keys += e->loc == LOC_DAMAGED;
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

int
log_open_existing(struct log_store *ls, const struct km_store_params *p)
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
	if (have_log && log_meta_read(ls->fd, &lm) < 0) {
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
	log_seg_path(ls, path, sizeof(path), 0);
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
	/* A cold shard is a segment and a log made together: one without the other lost
	 * data (the writes on top, or the segment's keys) and must not serve as whole. */
	if ((seg != NULL && !have_log) ||
		(seg == NULL && have_log && lm.birth != 0 && lm.tier == KM_TIER_COLD)) {
		km_seg_close(seg);
		return -ENOENT;
	}
	ls->seg = seg;
	ls->tier = seg != NULL ? KM_TIER_COLD : KM_TIER_HOT;
	if (seg != NULL) {
		log_birth_seen(km_seg_meta(seg)->birth);
		if (km_seg_meta(seg)->version_floor > ls->version_last)
			ls->version_last = km_seg_meta(seg)->version_floor;
		rc = km_seg_scan(seg, replay_seg_one, ls);
		if (rc < 0)
			return rc;
	}
	if (have_log) {
		log_birth_seen(lm.birth);
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
		ls->birth = seg != NULL ? km_seg_meta(seg)->birth : log_birth_take();
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
			rc = log_meta_write(ls);
			if (rc == 0 && fdatasync(ls->fd) < 0)
				rc = -errno;
			if (rc == 0)
				rc = log_fsync_dir(ls->dir);
			if (rc < 0)
				return rc;
			ls->synced_end = ls->durable_end;
		}
	}
	if (ls->res_durable <= ls->version_last) {
		rc = log_reserve_sync(ls);
		if (rc < 0)
			return rc;
	}
	if (km_lidx_count(ls->idx) > 1024)
		km_lidx_fit(ls->idx, 0.8);
	return 0;
}
