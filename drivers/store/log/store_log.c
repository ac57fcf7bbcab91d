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

#include "log_store.h"

static const struct km_store_ops log_ops;

/* Birth stamps: above every stamp found on disk. */
static _Atomic uint64_t birth_next = 1;

void
log_birth_seen(uint64_t b)
{
	uint64_t cur = atomic_load(&birth_next);

	while (cur <= b && !atomic_compare_exchange_weak(&birth_next, &cur, b + 1))
		;
}

uint64_t
log_birth_take(void)
{
	return atomic_fetch_add(&birth_next, 1);
}

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
	ls->budget = BUDGET_INIT < ls->wbuf_max ? BUDGET_INIT : ls->wbuf_max;
	return 0;
}

void
log_destroy(struct km_store *s)
{
	struct log_store *ls = ls_of(s);
	char path[PATH_MAX];

	log_settle(ls);
	if (ls->staged) {
		/* Never committed: its files go. */
		if (ls->fd >= 0) {
			log_path(ls, path, sizeof(path), 1);
			unlink(path);
		}
		km_seg_writer_abort(ls->segw);
		ls->segw = NULL;
	} else {
		if (ls->open.len != 0)
			log_write_out_unbound(ls);
		/* Space allocated ahead and not used goes back. */
		if (ls->prealloc_end > ls->log_bytes && ls->fd >= 0 && !ls->failed &&
			ftruncate(ls->fd, (off_t)ls->log_bytes) < 0)
			ls->st.write_errors++;
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

static int
log_create(const struct km_store_params *p, struct km_store **out)
{
	struct log_store *ls = calloc(1, sizeof(*ls));
	int rc;

	if (ls == NULL)
		return -ENOMEM;
	ls->base.ops = &log_ops;
	ls->wop.done = log_group_done;
	rc = params_copy(ls, p);
	if (rc < 0) {
		free(ls);
		return rc;
	}
	ls->tier = p->tier;
	rc = km_lidx_create(p->initial_keys, &ls->idx);
	if (rc == 0 && p->mode == KM_STORE_QUARANTINE)
		ls->quarantined = p->quarantine > 0 ? p->quarantine : EIO;
	else if (rc == 0)
		rc = p->mode == KM_STORE_STAGE ? log_open_staged(ls) : log_open_existing(ls, p);
	if (rc < 0) {
		ls->staged = p->mode == KM_STORE_STAGE && ls->fd >= 0;
		log_destroy(&ls->base);
		return rc;
	}
	*out = &ls->base;
	return 0;
}

static uint64_t
log_dram_bytes(const struct km_store *s)
{
	return km_lidx_bytes(((const struct log_store *)s)->idx);
}

static void
log_stats(const struct km_store *s, struct km_store_stats *st)
{
	const struct log_store *ls = (const struct log_store *)s;

	*st = ls->st;
	st->quarantined = ls->quarantined != 0;
	st->keys = km_lidx_count(ls->idx);
	st->value_bytes = ls->live_bytes;
	st->index_bytes = km_lidx_bytes(ls->idx);
	st->entry_overhead_bytes = 0;
	st->version_last = ls->version_last;
	st->tier = ls->tier;
	st->file_bytes = ls->log_bytes + (ls->seg != NULL ? km_seg_file_bytes(ls->seg) : 0);
	st->dead_bytes = ls->log_bytes > ls->live_bytes ? ls->log_bytes - ls->live_bytes : 0;
}

static const struct km_store_ops log_ops = {
	.name = "log",
	.create = log_create,
	.destroy = log_destroy,
	.get = log_get,
	.put = log_put,
	.del = log_del,
	.walk = log_walk,
	.walk_step = log_walk_step,
	.scan = log_scan,
	.version_floor = log_version_floor,
	.stats = log_stats,
	.prefetch = NULL,
	.load = log_load,
	.bind = log_bind,
	.read_start = log_read_start,
	.read_done = log_read_done,
	.write_seq = log_write_seq,
	.durable_seq = log_durable_seq,
	.dram_bytes = log_dram_bytes,
	.ack_waits = log_ack_waits,
	.flush = log_flush,
	.commit = log_commit,
	.sync = log_sync,
	.unlink = log_unlink,
	.recover = log_recover,
	.manifest = log_manifest,
	.missing = log_missing,
};

KM_STORE_REGISTER(log_ops)
