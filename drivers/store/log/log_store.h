/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef LOG_STORE_H
#define LOG_STORE_H

/*
 * What the files of the log driver share; not installed, not for callers (they use
 * km_store.h). The driver is described in store_log.c.
 *
 *   store_log.c   the ops table, create, destroy, figures, birth stamps
 *   log_files.c   paths, the META record, staged files and their commit, recovery of a
 *                 data directory after a crash
 *   log_write.c   the write path: records into the write buffer, group writes and
 *                 fdatasyncs, rollback of a failed group, durability callbacks
 *   log_read.c    the read path: reads from the write buffer or the disk, walks
 *   log_replay.c  opening an existing shard: replay of its log and segment into the index
 *
 * Everything here is used by the owner thread of one instance only.
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
#include <km_util.h>

#define LOG_KEY_MAX       KM_KEY_MAX
#define LOC_SEG           (UINT64_C(1) << 63)
#define LOC_POS_SHIFT     24
#define LOC_POS_MASK      ((UINT64_C(1) << 39) - 1)
#define LOC_LOW_MASK      ((UINT64_C(1) << 24) - 1)
#define LOC_TOMBSTONE     (LOC_SEG - 1) /* replay only: the key was deleted */
#define LOC_DAMAGED       (LOC_SEG - 2) /* the key's newest record is damaged: -EBADMSG */
#define WBUF_DEFAULT      (4u << 20)
#define SYNC_INTERVAL_DEF 10
#define REPLAY_CHUNK      (4u << 20)
#define UNBOUND_WRITE_AT  (1u << 20)                 /* an unbound store writes out at this much */
#define META_MAGIC        UINT64_C(0x314154454d4d4b) /* "KMMETA1" */
#define META_LEN          48
#define SEG_BLOCK         KM_SEG_BLOCK_SIZE_DEFAULT
#define REC_MAX           (KM_REC_HDR_LEN + LOG_KEY_MAX + KM_REC_VLEN_MAX + KM_REC_ALIGN)
#define DEPTH_MAX         24                  /* the shard map's deepest shard */
#define VERSION_RESERVE   (UINT64_C(1) << 20) /* versions reserved by one META record */
#define BUDGET_MIN        4096u               /* async: bytes that may always wait for durability */
#define BUDGET_INIT       (16u << 10)         /* grows with each group durable in time */
#define PREALLOC_CHUNK    (256u << 10)        /* async: file space allocated ahead, at a time */
#define PROBE_BYTES       (1u << 20)          /* free space keymapd needs to start */

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
	uint8_t failed;       /* the log could not be truncated after a failed write: read-only */
	uint8_t degraded;     /* the last group failed: acknowledgements wait (as in sync) */
	uint8_t settling;     /* log_settle(): write out now, whatever the batching */
	uint8_t prealloc_off; /* the file system cannot preallocate */
	int quarantined;      /* KM_STORE_QUARANTINE: why (errno), else 0 */
	uint32_t sync_interval_ms;
	uint32_t wbuf_max;
	uint64_t birth;
	uint64_t version_last;
	/* Versions are handed out only up to a floor a durable META record states (a
	 * restart starts above it: a version lost in a crash is never issued again). The
	 * next reservation is appended when half of the current one is used. */
	uint64_t res_durable;  /* versions up to this may be issued */
	uint64_t res_appended; /* the floor of the last META record appended */
	uint64_t res_off;      /* end of that record while it is not durable, else 0 */

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
	uint64_t synced_end;
	/* The async bound: acknowledged records wait at most sync_interval_ms to be durable.
	 * Each group is a write and its fdatasync; a write is answered BUSY when the oldest
	 * record not durable yet is that old, or when more than budget bytes wait (budget
	 * adapts to what the device made durable within the interval). */
	uint64_t open_t0, flight_t0; /* monotonic ns of the first record of open / of flight */
	uint64_t budget;
	uint64_t seq_acked;    /* the last record acknowledged before it was durable */
	uint64_t prealloc_end; /* file bytes allocated ahead (async: no ENOSPC after an ack) */
	struct km_io *io;
	km_store_durable_fn durable;
	void *darg;
	struct km_io_op wop;

	struct km_store_stats st; /* counters kept here; the rest is computed */
};

static inline struct log_store *
ls_of(struct km_store *s)
{
	return (struct log_store *)s;
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
	return (loc & LOC_SEG) || loc >= LOC_DAMAGED ? 0 : loc_low(loc);
}

void log_birth_seen(uint64_t b);

uint64_t log_birth_take(void);

void log_path(const struct log_store *ls, char *buf, size_t n, int tmp);

void log_seg_path(const struct log_store *ls, char *buf, size_t n, int tmp);

int log_fsync_dir(const char *dir);

int log_meta_decode(const struct km_rec *r, struct meta *m);

int log_meta_read(int fd, struct meta *m);

int log_write_out_unbound(struct log_store *ls);
int log_sync(struct km_store *s);

void log_group_done(struct km_io_op *op, int res);

int log_flush(struct km_store *s);

int log_ack_waits(const struct km_store *s);

void log_settle(struct log_store *ls);

void log_bind(struct km_store *s, struct km_io *io, km_store_durable_fn durable, void *arg);

void log_destroy(struct km_store *s);

int log_meta_write(struct log_store *ls);

int log_reserve_sync(struct log_store *ls);

size_t log_meta_encode(uint8_t *buf, size_t cap, const struct log_store *ls, uint64_t floor);

int log_open_existing(struct log_store *ls, const struct km_store_params *p);

int log_open_staged(struct log_store *ls);

int log_commit(struct km_store *s);

void log_unlink(struct km_store *s);

int log_put(struct km_store *s, const struct km_key *k, const void *val, uint32_t len,
	uint64_t expect, int create_only, uint64_t *version);

int log_del(struct km_store *s, const struct km_key *k, uint64_t expect, uint64_t *version);

int log_load(struct km_store *s, const struct km_key *k, const void *val, uint32_t len,
	uint64_t version);

int log_get(struct km_store *s, const struct km_key *k, struct km_value_ref *out);

int log_scan(struct km_store *s, const uint8_t *prefix, uint16_t plen, uint64_t *cursor,
	uint32_t budget, int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v),
	void *arg);

int log_read_start(
	struct km_store *s, const struct km_key *k, struct km_read *rd, struct km_value_ref *out);

int log_read_done(struct km_store *s, struct km_read *rd, int res, const struct km_key *k,
	struct km_value_ref *out);

uint64_t log_write_seq(const struct km_store *s);

uint64_t log_durable_seq(const struct km_store *s);

int log_walk(struct km_store *s,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg);
void log_version_floor(struct km_store *s, uint64_t v);

int log_walk_step(struct km_store *s, struct km_walk_pos *wp, uint32_t budget,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg);

int log_recover(const struct km_store_params *p, uint64_t *ids, uint32_t max);

int log_manifest(const struct km_store_params *p, const uint64_t *ids, uint32_t n);

int log_missing(
	const struct km_store_params *p, const uint64_t *ids, int n, uint64_t *out, uint32_t max);

#endif /* LOG_STORE_H */
