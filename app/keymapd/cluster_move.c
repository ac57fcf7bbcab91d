/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Cross-node shard moves (docs/cluster.md section 4), both ends.
 *
 * Source (node A), when the placer puts P/moves/<S> with from = A:
 *   live phase: S keeps serving on its worker, which exports it (km_proc.h, live export):
 *   its entries a few hundred per loop iteration and every write it applies meanwhile,
 *   as records in chunks; a sender thread streams the chunks to B's side channel (TCP) as
 *   they come. Once the walk is over and the sender has caught up, the control lcore
 *   detaches S (S answers BUSY from then on): the detach queues the last chunk, the
 *   sender adds S's at-most-once entries and the trailer, waits for B's confirmation and
 *   sets the move's state to "ready" (compare-and-swap on the move's revision). The
 *   placer then publishes the map with S on B; A's control lcore drops the parked store
 *   when it applies that map. If the export fails (the writes outrun the sender, a
 *   write-out failed) or cannot start (a driver without a resumable walk), S is detached
 *   and sent whole over a new connection: the pause is then the whole copy. A move that
 *   fails (B unreachable, refused) gets state "failed" and S serves on (or is attached
 *   again); so is S when the move key disappears while the map still gives S to A (the
 *   placer gave up).
 * Target (node B): a listener thread accepts the stream, applies its records in order to
 *   a new store (the target worker's driver and parameters), checks the count and hash,
 *   commits it and keeps it, with the at-most-once entries, as incoming; the control
 *   lcore attaches it when it applies the map that gives S to B.
 *
 * The pause clients see for S: from A's detach (after the catch-up) to A's and B's
 * application of the new map (S answers BUSY at A meanwhile; libkeymap retries BUSY).
 *
 * Stream (all integers big-endian):
 *   header: "KMMV" u16 version (2) u16 to_worker u64 shard id u32 epoch u32 reserved
 *   B answers it (a reply, below: 0 "go", or a refusal such as EBUSY: the source tries
 *     again for up to MV_IO_MS) before the source sends any record
 *   records (km_proc.h): u16 key length (1..KM_KEY_MAX; bit 15: a deletion), u32 value
 *     length, u64 version, key, value; applied in order (a key may come several times)
 *   end: u16 0, u32 n, n at-most-once entries (KM_PROC_DEDUP_WIRE bytes each)
 *   trailer: u64 records, u64 XXH3-64 of every byte from the first record to the last
 *     at-most-once entry, u64 entries the shard has (B's copy must have as many)
 *   reply (B to A): u32 status (0 = stored, else errno), u16 length, that many bytes of
 *   message
 */

#define KM_LOG_COMP KM_LOG_CLUSTER /* keymapd.h */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <rte_cycles.h>
#include <xxhash.h>

#include <km_cluster.h>
#include <km_etcd.h>
#include <km_proc.h>
#include <km_proto.h>
#include <km_util.h>

#include "cluster_priv.h"
#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "mailbox.h"

#define MV_MAGIC     "KMMV"
#define MV_VERSION   2
#define MV_HDR_LEN   24
#define MV_IO_MS     10000      /* a stalled peer: the move fails */
#define MV_CHUNKS    48         /* chunks of a live export (KM_PROC_XCHUNK_BYTES each) */
#define MV_DEDUP_MAX (1u << 22) /* at-most-once entries a stream may carry */
/* stream(): the live copy could not go on, the shard is to be sent whole (not an errno a
 * peer's reply can carry: those are positive numbers below 4096, negated). */
#define MV_WHOLE          (-4096)
#define MV_INCOMING       64 /* incoming stores kept at once */
#define MV_INCOMING_SPARE 8  /* of them, kept for the stores given back */
#define MV_PARKED         64 /* outgoing moves at once */
#define MV_BUF            65536
#define MV_STREAM_S       1800        /* a stream received takes 30 minutes at most */
#define MV_RECEIVERS      4           /* streams received at once */
#define MV_REPL_RECEIVERS 512         /* replication streams besides (cluster_repl.c) */
#define MV_SOCKBUF        (128 << 10) /* side channel socket buffers, each way */

/* ---- buffered socket I/O -------------------------------------------------------------- */

struct mv_io {
	int fd;
	uint8_t buf[MV_BUF];
	size_t len, pos;
	XXH3_state_t *h;
	int err;          /* first error, -errno */
	uint64_t end_tsc; /* receiving: the stream's deadline (MV_STREAM_S), 0: none */
};

static int mv_stopping(void);

/* Wait for io's socket to be ready for ev: MV_IO_MS at most, less when keymapd stops or
 * the stream's deadline passed. */
static int
io_wait(const struct mv_io *io, short ev)
{
	struct pollfd p = {.fd = io->fd, .events = ev};
	unsigned int waited;
	int rc = 0;

	for (waited = 0; waited < MV_IO_MS && !mv_stopping(); waited += 200) {
		if (io->end_tsc != 0 && rte_get_timer_cycles() > io->end_tsc)
			return -ETIMEDOUT;
		rc = poll(&p, 1, 200);
		if (rc != 0)
			break;
	}
	return rc > 0 ? 0 : rc == 0 ? -ETIMEDOUT : -errno;
}

static int
io_flush(struct mv_io *io)
{
	size_t off = 0;

	while (io->err == 0 && off < io->len) {
		ssize_t n = send(io->fd, io->buf + off, io->len - off, MSG_NOSIGNAL);

		if (n > 0)
			off += (size_t)n;
		else if (n < 0 && (errno == EAGAIN || errno == EINTR))
			io->err = io_wait(io, POLLOUT);
		else
			io->err = n == 0 ? -EPIPE : -errno;
	}
	io->len = 0;
	return io->err;
}

static int
io_put(struct mv_io *io, const void *p, size_t n, int hashed)
{
	const uint8_t *b = p;

	if (hashed)
		XXH3_64bits_update(io->h, p, n);
	while (io->err == 0 && n > 0) {
		size_t k = RTE_MIN(n, sizeof(io->buf) - io->len);

		memcpy(io->buf + io->len, b, k);
		io->len += k;
		b += k;
		n -= k;
		if (io->len == sizeof(io->buf))
			io_flush(io);
	}
	return io->err;
}

static int
io_get(struct mv_io *io, void *p, size_t n, int hashed)
{
	uint8_t *b = p;
	size_t want = n;

	while (io->err == 0 && n > 0) {
		if (io->pos == io->len) {
			ssize_t r = recv(io->fd, io->buf, sizeof(io->buf), 0);

			if (r > 0) {
				io->len = (size_t)r;
				io->pos = 0;
			} else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
				io->err = io_wait(io, POLLIN);
			} else {
				io->err = r == 0 ? -ECONNRESET : -errno;
			}
			continue;
		}
		size_t k = RTE_MIN(n, io->len - io->pos);

		memcpy(b, io->buf + io->pos, k);
		io->pos += k;
		b += k;
		n -= k;
	}
	if (io->err == 0 && hashed)
		XXH3_64bits_update(io->h, p, want);
	return io->err;
}

/* ---- target: incoming stores ------------------------------------------------------- */

static struct {
	pthread_mutex_t mu;
	struct {
		uint64_t id;
		struct km_store *s;
		struct km_proc_dedup *dd;
		uint64_t keys;
		time_t at;
	} in[MV_INCOMING];
	pthread_t thr;
	int thr_started;
	int lfd;
	atomic_int stop;
	atomic_int receivers;             /* streams being received */
	uint64_t receiving[MV_RECEIVERS]; /* their shards (mu), 0: none */
	/* Source side (control lcore, and the senders through mu). */
	struct mv_out {
		uint64_t id;
		uint16_t worker; /* where it was, where it goes back on failure */
		/* The live export (NULL: the shard is sent whole once detached). */
		struct km_proc_export *x;
		/* Set by the control lcore before detached (release): the shard, off its
		 * worker, and its at-most-once entries. */
		struct km_store *s;
		struct km_proc_dedup *dd;
		atomic_int detached;    /* 1: s and dd are set; -1: the detach failed */
		atomic_int want_detach; /* sender: the live stream failed, send it whole */
		atomic_int cancel;      /* control lcore: the move is given up */
		int64_t rev;            /* the move key's revision it answers */
		int64_t create_rev;     /* which move of the shard it is */
		uint8_t joined;         /* its sender thread was joined */
		uint8_t refused_early;  /* sender: the target refused before any record */
		char to[KM_CLUSTER_ID_MAX + 1];
		uint32_t to_ip;
		uint16_t to_worker;
		pthread_t thr;
		atomic_int state; /* MV_SENDING, MV_SENT (B has it, state ready), MV_FAILED */
		uint64_t keys;    /* entries sent (records: whole; the shard's: live) */
		uint64_t records;
		uint8_t whole;   /* sent whole (no live export, or it failed) */
		uint64_t to_inc; /* the target's run that stored it (its reply) */
		uint64_t t0;     /* tsc at the start */
		uint64_t t_cut;  /* tsc at the detach */
		int gone;        /* control lcore: the placer deleted the move */
		int superseded;  /* control lcore: a newer copy came back here, this one goes */
	} out[MV_PARKED];
	uint64_t moved_out, moved_in, failed;
	uint64_t last_pause_us; /* the last move out: detach to the map that ended it */
	/* Shards the map gives here whose data has not arrived (control lcore). */
	struct {
		uint64_t id;
		uint16_t worker;
	} missing[MV_INCOMING];
	unsigned int nb_missing;
	/* Moves waiting for their worker's live export (one at a time per worker). */
	struct km_cluster_move_req wait[MV_PARKED];
	uint16_t wait_worker[MV_PARKED];
	unsigned int nb_wait;
} mv = {.mu = PTHREAD_MUTEX_INITIALIZER, .lfd = -1};

/* MV_REATTACH: its move failed and the worker did not take it back yet; MV_UNEXPORT: its
 * move failed while live and the worker's export is not cancelled yet (both tried again
 * every tick). */
enum { MV_FREE = 0, MV_SENDING, MV_SENT, MV_FAILED, MV_REATTACH, MV_UNEXPORT };

static int
mv_stopping(void)
{
	return atomic_load(&mv.stop);
}

static void
incoming_put(uint64_t id, struct km_store *s, struct km_proc_dedup *dd, uint64_t keys)
{
	struct km_store *old = NULL;
	struct km_proc_dedup *old_dd = NULL;
	unsigned int i, slot = MV_INCOMING;

	pthread_mutex_lock(&mv.mu);
	for (i = 0; i < MV_INCOMING; i++) {
		if (mv.in[i].s != NULL && mv.in[i].id == id) {
			old = mv.in[i].s;
			old_dd = mv.in[i].dd;
			slot = i;
			break;
		}
		if (mv.in[i].s == NULL && slot == MV_INCOMING)
			slot = i;
	}
	if (slot == MV_INCOMING) {
		/* Cannot be: the receiver refuses streams while few slots are free (the
		 * control lcore gives back the ones it took). Kept elsewhere, it would be lost. */
		pthread_mutex_unlock(&mv.mu);
		KM_LOG(CRIT, "cluster: shard %" PRIu64 " received but no room to keep it: dropped",
			id);
		km_store_destroy(s);
		km_proc_dedup_free(dd);
		return;
	}
	mv.in[slot].id = id;
	mv.in[slot].s = s;
	mv.in[slot].dd = dd;
	mv.in[slot].keys = keys;
	mv.in[slot].at = time(NULL);
	pthread_mutex_unlock(&mv.mu);
	/* Closed, not discarded: its files' names are the new copy's now (its commit renamed
	 * them into place). */
	if (old != NULL)
		km_store_destroy(old);
	km_proc_dedup_free(old_dd);
}

void
km_cluster_incoming_return(uint64_t id, struct km_store *s, struct km_proc_dedup *dd)
{
	incoming_put(id, s, dd, 0);
}

/* Slots free for streams (a few are kept for the copies the control lcore gives back). */
static unsigned int
incoming_room(void)
{
	unsigned int i, used = 0;

	pthread_mutex_lock(&mv.mu);
	for (i = 0; i < MV_INCOMING; i++)
		used += mv.in[i].s != NULL;
	pthread_mutex_unlock(&mv.mu);
	return used + MV_INCOMING_SPARE >= MV_INCOMING ? 0 : MV_INCOMING - MV_INCOMING_SPARE - used;
}

unsigned int
km_cluster_incoming_ids(uint64_t *ids, unsigned int max, time_t before)
{
	unsigned int i, n = 0;

	pthread_mutex_lock(&mv.mu);
	for (i = 0; i < MV_INCOMING && n < max; i++)
		if (mv.in[i].s != NULL && mv.in[i].at < before)
			ids[n++] = mv.in[i].id;
	pthread_mutex_unlock(&mv.mu);
	return n;
}

int
km_cluster_incoming_has(uint64_t id)
{
	unsigned int i;
	int has = 0;

	pthread_mutex_lock(&mv.mu);
	for (i = 0; i < MV_INCOMING; i++)
		has |= mv.in[i].s != NULL && mv.in[i].id == id;
	pthread_mutex_unlock(&mv.mu);
	return has;
}

/* Take the store received for shard id out of the table (NULL: none), with *dd. */
static struct km_store *
incoming_remove(uint64_t id, struct km_proc_dedup **dd)
{
	struct km_store *s = NULL;
	unsigned int i;

	*dd = NULL;
	pthread_mutex_lock(&mv.mu);
	for (i = 0; i < MV_INCOMING; i++)
		if (mv.in[i].s != NULL && mv.in[i].id == id) {
			s = mv.in[i].s;
			*dd = mv.in[i].dd;
			mv.in[i].s = NULL;
			mv.in[i].dd = NULL;
			break;
		}
	pthread_mutex_unlock(&mv.mu);
	return s;
}

int
km_cluster_incoming_drop(uint64_t id)
{
	struct km_proc_dedup *dd;
	struct km_store *s = incoming_remove(id, &dd);

	if (s == NULL)
		return 0;
	/* Never served here: its files go too. */
	km_store_discard(s);
	km_proc_dedup_free(dd);
	KM_LOG(NOTICE, "cluster: shard %" PRIu64 " received earlier dropped: its move was given up",
		id);
	return 1;
}

struct km_store *
km_cluster_incoming_take(uint64_t id, struct km_proc_dedup **dd)
{
	struct km_store *s = incoming_remove(id, dd);

	if (s != NULL)
		mv.moved_in++; /* the control lcore's (its only writer) */
	return s;
}

void
km_cluster_side_reply(int fd, int status, const char *msg)
{
	uint8_t b[6 + 200];
	size_t n = strlen(msg) < 200 ? strlen(msg) : 200;

	km_be_put(b, (uint32_t)status, 4);
	km_be_put(b + 4, n, 2);
	memcpy(b + 6, msg, n);
	(void)!send(fd, b, 6 + n, MSG_NOSIGNAL);
}

static struct mv_out *out_find(uint64_t id);
static void out_join(struct mv_out *o);

/* On the control lcore: whether shard *arg is this node's: in its map, or parked on its
 * way out and not yet confirmed at the target (a copy confirmed there may come back
 * before this node applied the map that gave it away: that one is newer). */
static int
serves_here(void *arg)
{
	uint64_t id = *(const uint64_t *)arg;
	const struct km_shard *s = km_shardmap_find(km_map_current, id);
	const struct mv_out *o = out_find(id);
	unsigned int i;

	/* The map's, but its data never came: welcome. */
	for (i = 0; i < mv.nb_missing; i++)
		if (mv.missing[i].id == id)
			return 0;
	return (s != NULL && km_shard_owner(s) != KM_OWNER_REMOTE) ||
	       (o != NULL && atomic_load(&o->state) != MV_SENT);
}

/* Mark shard id as being received. @return 0, or -EBUSY: another stream of it is. */
static int
receiving_claim(uint64_t id)
{
	unsigned int i, slot = MV_RECEIVERS;
	int rc = 0;

	pthread_mutex_lock(&mv.mu);
	for (i = 0; i < MV_RECEIVERS; i++) {
		if (mv.receiving[i] == id)
			rc = -EBUSY;
		if (mv.receiving[i] == 0 && slot == MV_RECEIVERS)
			slot = i;
	}
	if (rc == 0 && slot < MV_RECEIVERS)
		mv.receiving[slot] = id;
	pthread_mutex_unlock(&mv.mu);
	return slot < MV_RECEIVERS ? rc : -EBUSY;
}

static void
receiving_release(uint64_t id)
{
	unsigned int i;

	pthread_mutex_lock(&mv.mu);
	for (i = 0; i < MV_RECEIVERS; i++)
		if (mv.receiving[i] == id)
			mv.receiving[i] = 0;
	pthread_mutex_unlock(&mv.mu);
}

static void receive_one(int fd, struct mv_io *io, const uint8_t *h, uint8_t *rec);

/* One incoming stream: its header, then (one stream of a shard at a time) its body. */
static void
receive(int fd)
{
	struct mv_io *io = calloc(1, sizeof(*io));
	uint8_t h[MV_HDR_LEN], *rec = NULL;
	uint64_t id;

	if (io == NULL || (io->h = XXH3_createState()) == NULL ||
		(rec = malloc(KM_PROC_XREC_HDR + KM_KEY_MAX + KM_VALUE_MAX_LARGE)) == NULL) {
		km_cluster_side_reply(fd, ENOMEM, "out of memory");
		goto out;
	}
	XXH3_64bits_reset(io->h);
	io->fd = fd;
	/* A peer that trickles its stream does not hold a receiver for ever. */
	io->end_tsc = rte_get_timer_cycles() + rte_get_timer_hz() * MV_STREAM_S;
	if (io_get(io, h, sizeof(h), 0) == 0 && memcmp(h, "KMRP", 4) == 0) {
		/* A replication stream (cluster_repl.c), with what came after its header. */
		km_cluster_repl_receive(fd, h, io->buf + io->pos, io->len - io->pos);
		goto out;
	}
	if (io->err != 0 || memcmp(h, MV_MAGIC, 4) != 0 || km_be_get(h + 4, 2) != MV_VERSION) {
		km_cluster_side_reply(fd, EPROTO, "not a keymap move stream of version 2");
		goto out;
	}
	id = km_be_get(h + 8, 8);
	if (id == 0 || receiving_claim(id) < 0) {
		km_cluster_side_reply(fd, id == 0 ? EINVAL : EBUSY,
			id == 0 ? "shard 0" : "another stream of this shard is being received");
		goto out;
	}
	receive_one(fd, io, h, rec); /* releases the claim */
out:
	if (io != NULL && io->h != NULL)
		XXH3_freeState(io->h);
	free(io);
	free(rec);
}

/* The body of a stream whose header h was read. */
static void
receive_one(int fd, struct mv_io *io, const uint8_t *h, uint8_t *rec)
{
	uint8_t t[24], *dbuf = NULL;
	uint64_t id, count = 0, vmax = 0, sum;
	struct km_proc_dedup *dd = NULL;
	struct km_store_stats st;
	struct km_store *s = NULL;
	char msg[200] = "";
	uint32_t nd = 0;
	uint16_t to;
	int rc;

	to = (uint16_t)km_be_get(h + 6, 2);
	id = km_be_get(h + 8, 8);
	if (!km_cluster_serving()) {
		km_cluster_side_reply(fd, EAGAIN,
			"this node is still starting: no worker to build the shard for");
		goto out;
	}
	if (to >= km_dp.nb_workers) {
		snprintf(msg, sizeof(msg), "shard %" PRIu64 " for worker %u: this node has %u", id,
			to, km_dp.nb_workers);
		km_cluster_side_reply(fd, EINVAL, msg);
		goto out;
	}
	if (incoming_room() == 0) {
		km_cluster_side_reply(
			fd, EAGAIN, "too many shards received wait for their maps here");
		goto out;
	}
	/* A shard this node serves is never written over (its files are the live ones). */
	rc = km_ctl_call(serves_here, &id, 2000);
	if (rc != 0) {
		snprintf(msg, sizeof(msg), "shard %" PRIu64 " %s", id,
			rc > 0 ? "is served here" : "cannot be checked now");
		km_cluster_side_reply(fd, rc > 0 ? EEXIST : EAGAIN, msg);
		goto out;
	}
	rc = km_proc_store_stage(km_dp.workers[to].proc, id, 0, KM_TIER_HOT, &s);
	if (rc < 0) {
		snprintf(
			msg, sizeof(msg), "cannot create shard %" PRIu64 ": %s", id, strerror(-rc));
		km_cluster_side_reply(fd, -rc, msg);
		goto out;
	}
	km_cluster_side_reply(fd, 0, "go"); /* accepted: the source sends its records */
	/* The records, applied in order. */
	for (;;) {
		uint32_t klen, vlen;
		size_t used;

		if (io_get(io, rec, 2, 0) < 0)
			break;
		klen = (uint32_t)km_be_get(rec, 2) & ~KM_PROC_XREC_DEL;
		if (km_be_get(rec, 2) == 0)
			break;
		XXH3_64bits_update(io->h, rec, 2);
		if (klen > KM_KEY_MAX || io_get(io, rec + 2, KM_PROC_XREC_HDR - 2, 1) < 0) {
			io->err = io->err != 0 ? io->err : -EPROTO;
			break;
		}
		vlen = (uint32_t)km_be_get(rec + 2, 4);
		if (vlen > KM_VALUE_MAX_LARGE ||
			io_get(io, rec + KM_PROC_XREC_HDR, klen + vlen, 1) < 0) {
			io->err = io->err != 0 ? io->err : -EPROTO;
			break;
		}
		rc = km_proc_xrec_apply(s, rec, KM_PROC_XREC_HDR + klen + vlen, &used);
		if (rc < 0) {
			io->err = rc;
			break;
		}
		vmax = RTE_MAX(vmax, km_be_get(rec + 6, 8));
		count++;
	}
	/* The at-most-once entries. */
	if (io->err == 0 && io_get(io, t, 4, 1) == 0) {
		nd = (uint32_t)km_be_get(t, 4);
		if (nd > MV_DEDUP_MAX)
			io->err = -EPROTO;
		else if (nd != 0 && (dbuf = malloc((size_t)nd * KM_PROC_DEDUP_WIRE)) == NULL)
			io->err = -ENOMEM;
		else if (nd != 0 && io_get(io, dbuf, (size_t)nd * KM_PROC_DEDUP_WIRE, 1) == 0 &&
			 (dd = km_proc_dedup_decode(dbuf, nd)) == NULL)
			io->err = -ENOMEM;
	}
	sum = XXH3_64bits_digest(io->h);
	if (io->err == 0 && io_get(io, t, 24, 0) == 0 &&
		(km_be_get(t, 8) != count || km_be_get(t + 8, 8) != sum))
		io->err = -EBADMSG;
	if (io->err != 0) {
		snprintf(msg, sizeof(msg),
			"shard %" PRIu64 ": stream broken after %" PRIu64 " records: %s", id, count,
			strerror(-io->err));
		km_cluster_side_reply(fd, -io->err, msg);
		goto out;
	}
	km_store_stats(s, &st);
	if (st.keys != km_be_get(t + 16, 8)) {
		snprintf(msg, sizeof(msg),
			"shard %" PRIu64 ": %" PRIu64
			" entries rebuilt where the source has %" PRIu64,
			id, (uint64_t)st.keys, km_be_get(t + 16, 8));
		km_cluster_side_reply(fd, EBADMSG, msg);
		goto out;
	}
	/* New writes here get versions above every one it brought and above any it issued
	 * before (deleted keys' too): the clock's, as a shard created anew. */
	{
		struct timespec now;

		clock_gettime(CLOCK_REALTIME, &now);
		km_store_version_floor(s,
			RTE_MAX(vmax, (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec));
	}
	if (s->ops->commit != NULL && (rc = s->ops->commit(s)) < 0) {
		snprintf(msg, sizeof(msg), "shard %" PRIu64 ": cannot write it: %s", id,
			strerror(-rc));
		km_cluster_side_reply(fd, -rc, msg);
		goto out;
	}
	incoming_put(id, s, dd, st.keys);
	s = NULL;
	dd = NULL;
	KM_LOG(NOTICE,
		"cluster: shard %" PRIu64 " received, %" PRIu64 " entries (%" PRIu64
		" records, %u at-most-once entries): waiting for its map",
		id, (uint64_t)st.keys, count, nd);
	/* The run that stores it: the placer completes the move only while it lives. */
	snprintf(msg, sizeof(msg), "%" PRIu64, km_cluster_incarnation());
	km_cluster_side_reply(fd, 0, msg);
out:
	/* Released first: a stream of it sent again at once (the whole copy after a failed
	 * live one) is not refused while this one's partial store goes. */
	receiving_release(id);
	if (s != NULL)
		km_store_discard(s);
	km_proc_dedup_free(dd);
	free(dbuf);
}

/* One stream, in a thread of its own (MV_RECEIVERS at once). */
static void *
receiver(void *arg)
{
	int fd = (int)(intptr_t)arg;

	receive(fd);
	close(fd);
	atomic_fetch_sub(&mv.receivers, 1);
	return NULL;
}

static void *
listener(void *arg)
{
	pthread_attr_t attr;

	(void)arg;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	while (!atomic_load(&mv.stop)) {
		struct pollfd p = {.fd = mv.lfd, .events = POLLIN};
		pthread_t t;
		int fd;

		if (poll(&p, 1, 200) <= 0)
			continue;
		fd = accept4(mv.lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		if (atomic_load(&mv.receivers) >= MV_RECEIVERS + MV_REPL_RECEIVERS) {
			/* Refused at once: the source tries again shortly. */
			km_cluster_side_reply(fd, EBUSY, "receiving as many shards as it can");
			close(fd);
			continue;
		}
		atomic_fetch_add(&mv.receivers, 1);
		if (pthread_create(&t, &attr, receiver, (void *)(intptr_t)fd) != 0) {
			km_cluster_side_reply(fd, EAGAIN, "no thread to receive the shard");
			close(fd);
			atomic_fetch_sub(&mv.receivers, 1);
		}
	}
	pthread_attr_destroy(&attr);
	/* The streams end soon once stop is set (their waits look at it). */
	while (atomic_load(&mv.receivers) > 0)
		usleep(10 * 1000);
	return NULL;
}

int
km_cluster_side_start(uint32_t ip, uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	int one = 1, buf = MV_SOCKBUF;

	a.sin_addr.s_addr = htonl(ip);
	mv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (mv.lfd < 0)
		return -errno;
	setsockopt(mv.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(mv.lfd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf)); /* see dial() */
	if (bind(mv.lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(mv.lfd, 4) < 0) {
		int rc = -errno;

		close(mv.lfd);
		mv.lfd = -1;
		/* The advertised address may be the NIC's (DPDK's, not the kernel's): any. */
		if (ip != 0 && rc == -EADDRNOTAVAIL)
			return km_cluster_side_start(0, port);
		return rc;
	}
	if (pthread_create(&mv.thr, NULL, listener, NULL) != 0) {
		close(mv.lfd);
		mv.lfd = -1;
		return -EAGAIN;
	}
	pthread_setname_np(mv.thr, "km-side");
	mv.thr_started = 1;
	return 0;
}

void
km_cluster_side_stop(void)
{
	unsigned int i;

	atomic_store(&mv.stop, 1);
	if (mv.thr_started)
		pthread_join(mv.thr, NULL);
	mv.thr_started = 0;
	if (mv.lfd >= 0)
		close(mv.lfd);
	mv.lfd = -1;
	for (i = 0; i < MV_PARKED; i++)
		if (atomic_load(&mv.out[i].state) != MV_FREE) {
			atomic_store(&mv.out[i].cancel, 1);
			out_join(&mv.out[i]);
			km_store_destroy(mv.out[i].s);
			km_proc_dedup_free(mv.out[i].dd);
			km_proc_export_put(mv.out[i].x);
			mv.out[i].x = NULL;
			atomic_store(&mv.out[i].state, MV_FREE);
		}
	for (i = 0; i < MV_INCOMING; i++)
		if (mv.in[i].s != NULL) {
			km_store_destroy(mv.in[i].s);
			km_proc_dedup_free(mv.in[i].dd);
			mv.in[i].s = NULL;
			mv.in[i].dd = NULL;
		}
}

/* ---- source: the sender ------------------------------------------------------------- */

struct send_ctx {
	struct mv_io *io;
	uint64_t n;
};

static int
send_one(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct send_ctx *c = arg;
	uint8_t e[14];

	km_be_put(e, k->len, 2);
	km_be_put(e + 2, v->len, 4);
	km_be_put(e + 6, v->version, 8);
	io_put(c->io, e, sizeof(e), 1);
	io_put(c->io, k->data, k->len, 1);
	io_put(c->io, v->data, v->len, 1);
	c->n++;
	return c->io->err;
}

/* Connect to ip:port within MV_IO_MS. @return the socket or -errno. */
static int
dial(uint32_t ip, uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct timeval tv = {.tv_sec = MV_IO_MS / 1000};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, buf = MV_SOCKBUF;

	if (fd < 0)
		return -errno;
	a.sin_addr.s_addr = htonl(ip);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Small buffers: what the live copy has sent is what the target applied but for
	 * them, so the pause after the catch-up does not wait for megabytes in flight. */
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	return fd;
}

/* Wait until the control lcore detached o's shard. @return 0, or -ECANCELED (the move was
 * given up, or the detach failed). */
static int
wait_detached(struct mv_out *o)
{
	int d;

	while ((d = atomic_load_explicit(&o->detached, memory_order_acquire)) == 0) {
		if (atomic_load(&o->cancel))
			return -ECANCELED;
		usleep(200);
	}
	return d > 0 ? 0 : -ECANCELED;
}

/*
 * The live phase: the export's chunks as they come, until the last one (the shard's
 * detach). @return 0 (*keys: the shard's entries at its detach), MV_WHOLE (the export
 * failed or stalled: send the shard whole), -ECANCELED, or the socket's -errno.
 */
static int
stream_live(struct mv_out *o, struct mv_io *io, uint64_t *keys)
{
	uint64_t idle_since = rte_get_timer_cycles();
	const uint64_t stall = rte_get_timer_hz() / 1000 * MV_IO_MS;
	struct km_proc_export_status st;
	struct km_proc_xchunk *c;
	/* Fault injection for tests (docs/cluster.md): the live copy fails after its first
	 * chunk, as when the writes outrun it. */
	const char *fault = getenv("KM_FAULT_LIVE_COPY");
	int fail_after = fault != NULL && strcmp(fault, "fail") == 0;

	for (;;) {
		if (atomic_load(&o->cancel) || atomic_load(&o->detached) < 0)
			return -ECANCELED;
		c = km_proc_export_take(o->x);
		if (c != NULL) {
			int last = c->last;

			io_put(io, c->data, c->len, 1);
			o->records += c->records;
			*keys = c->keys;
			km_proc_export_give(o->x, c);
			if (io->err != 0 || last)
				return io->err;
			if (fail_after) {
				KM_LOG(WARNING,
					"cluster: KM_FAULT_LIVE_COPY=fail: the live copy of "
					"shard %" PRIu64 " fails",
					o->id);
				return MV_WHOLE;
			}
			idle_since = rte_get_timer_cycles();
			continue;
		}
		km_proc_export_status(o->x, &st);
		if (st.ended && st.err != 0)
			return MV_WHOLE;
		if (st.ended)
			continue; /* its last chunk was queued before: taken next */
		/* Nothing to send now: what is buffered goes, so B keeps up. */
		if (io->len != 0 && io_flush(io) < 0)
			return io->err;
		if (rte_get_timer_cycles() - idle_since > stall)
			return MV_WHOLE; /* the worker does not export: send it whole */
		usleep(100);
	}
}

/* Read a reply of the target (status, message) into msg (201 bytes). @return 0 and
 * *status (0 or -errno, the target's), or the socket's -errno. */
static int
read_reply(struct mv_io *io, char *msg, int *status)
{
	uint8_t r[6];
	size_t n;
	int rc;

	io->len = io->pos = 0;
	rc = io_get(io, r, sizeof(r), 0);
	if (rc < 0)
		return rc;
	n = km_be_get(r + 4, 2);
	if (n > 200 || io_get(io, msg, n, 0) < 0)
		n = 0;
	msg[n] = '\0';
	*status = -(int)km_be_get(r, 4);
	io->len = io->pos = 0; /* the buffer is the sending one's again */
	return 0;
}

/*
 * Stream o's shard to B (live when o->x is set, else whole once detached), then its
 * at-most-once entries and the trailer, and read B's answer.
 * @return 0; MV_WHOLE (the live phase failed: the caller sends it whole); or -errno with
 *   the reason in why.
 */
static int
stream(struct mv_out *o, uint16_t side_port, int live, char *why, size_t whylen)
{
	struct send_ctx c = {0};
	uint8_t h[MV_HDR_LEN] = MV_MAGIC, t[24], *dbuf = NULL;
	char msg[201] = "";
	uint64_t keys = 0;
	int fd, rc, status = 0;
	uint32_t nd;

	c.io = calloc(1, sizeof(*c.io));
	if (c.io == NULL || (c.io->h = XXH3_createState()) == NULL) {
		free(c.io);
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	XXH3_64bits_reset(c.io->h);
	o->records = 0;
	fd = dial(o->to_ip, side_port);
	if (fd < 0) {
		snprintf(why, whylen, "cannot reach node %s's side channel (port %u): %s", o->to,
			side_port, strerror(-fd));
		rc = fd;
		goto out;
	}
	c.io->fd = fd;
	km_be_put(h + 4, MV_VERSION, 2);
	km_be_put(h + 6, o->to_worker, 2);
	km_be_put(h + 8, o->id, 8);
	io_put(c.io, h, sizeof(h), 0);
	/* The target accepts the stream (or refuses it: busy, still starting) before any
	 * record is sent, so that a refused stream costs no chunk of the live copy. */
	rc = io_flush(c.io);
	if (rc == 0)
		rc = read_reply(c.io, msg, &status);
	if (rc == 0 && status != 0) {
		snprintf(why, whylen, "node %s refused shard %" PRIu64 ": %s", o->to, o->id, msg);
		o->refused_early = 1;
		rc = status;
		close(fd);
		goto out;
	}
	if (rc != 0) {
		snprintf(why, whylen, "node %s did not accept shard %" PRIu64 ": %s", o->to, o->id,
			strerror(-rc));
		close(fd);
		goto out;
	}
	if (live) {
		rc = stream_live(o, c.io, &keys);
		if (rc == 0)
			rc = wait_detached(o);
	} else {
		rc = wait_detached(o);
		if (rc == 0 && c.io->err == 0) {
			struct km_store_stats st;

			rc = km_store_walk(o->s, send_one, &c);
			o->records = c.n;
			km_store_stats(o->s, &st);
			keys = st.keys;
		}
	}
	if (rc == MV_WHOLE || rc == -ECANCELED) {
		snprintf(why, whylen, "%s",
			rc == MV_WHOLE ? "the live copy could not keep up"
				       : "the move was given up");
		close(fd);
		goto out;
	}
	/* The end of the records, the at-most-once entries, the trailer. */
	nd = km_proc_dedup_count(o->dd);
	km_be_put(t, 0, 2);
	if (rc == 0)
		io_put(c.io, t, 2, 0);
	km_be_put(t, nd, 4);
	if (rc == 0)
		io_put(c.io, t, 4, 1);
	if (rc == 0 && nd != 0) {
		dbuf = malloc((size_t)nd * KM_PROC_DEDUP_WIRE);
		if (dbuf == NULL) {
			rc = -ENOMEM;
		} else {
			km_proc_dedup_encode(o->dd, dbuf);
			io_put(c.io, dbuf, (size_t)nd * KM_PROC_DEDUP_WIRE, 1);
		}
	}
	km_be_put(t, o->records, 8);
	km_be_put(t + 8, XXH3_64bits_digest(c.io->h), 8);
	km_be_put(t + 16, keys, 8);
	if (rc == 0)
		io_put(c.io, t, sizeof(t), 0);
	if (rc == 0)
		rc = io_flush(c.io);
	if (rc == 0)
		rc = read_reply(c.io, msg, &status);
	if (rc == 0) {
		rc = status;
		if (rc != 0)
			snprintf(why, whylen, "node %s refused shard %" PRIu64 ": %s", o->to, o->id,
				msg);
		else if (km_util_parse_u64(msg, 1, UINT64_MAX, &o->to_inc) < 0) {
			snprintf(why, whylen, "node %s stored shard %" PRIu64 " but named no run",
				o->to, o->id);
			rc = -EPROTO;
		}
	} else {
		/* A peer that refused the stream answered before it closed: its reason. */
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		ssize_t n = poll(&pf, 1, 100) == 1 ? recv(fd, msg, sizeof(msg) - 1, 0) : -1;

		if (n > 6) {
			msg[n] = '\0';
			snprintf(why, whylen, "node %s refused shard %" PRIu64 ": %.*s", o->to,
				o->id,
				(int)RTE_MIN((size_t)n - 6, km_be_get((uint8_t *)msg + 4, 2)),
				msg + 6);
		} else {
			snprintf(why, whylen, "stream of shard %" PRIu64 " to node %s broken: %s",
				o->id, o->to, strerror(-rc));
		}
	}
	o->keys = keys;
	close(fd);
out:
	free(dbuf);
	XXH3_freeState(c.io->h);
	free(c.io);
	return rc;
}

/* stream(), again while the target refuses it as busy or still starting (before any
 * record was sent), for MV_IO_MS at most. */
static int
stream_retried(struct mv_out *o, uint16_t side_port, int live, char *why, size_t whylen)
{
	unsigned int waited = 0;
	int rc;

	for (;;) {
		o->refused_early = 0;
		rc = stream(o, side_port, live, why, whylen);
		if (!o->refused_early || (rc != -EBUSY && rc != -EAGAIN) || waited >= MV_IO_MS ||
			atomic_load(&o->cancel) || mv_stopping())
			return rc;
		usleep(100 * 1000);
		waited += 100;
	}
}

/* Put val at key if the key's mod revision is still rev. @return 1 put, 0 the key
 * changed, or -errno. */
static int
put_at(struct km_etcd *e, const char *key, const char *val, int64_t rev)
{
	struct km_etcd_cmp cmp = {.key = key,
		.klen = strlen(key),
		.target = KM_ETCD_MOD,
		.result = KM_ETCD_EQUAL,
		.num = rev};
	struct km_etcd_op op = {.type = KM_ETCD_OP_PUT,
		.key = key,
		.klen = strlen(key),
		.value = val,
		.vlen = strlen(val)};

	return km_etcd_txn(e, &cmp, 1, &op, 1, NULL, 0, NULL, NULL);
}

/* Set the move's state (compare-and-swap on its revision). @return 1 set, 0 the move
 * changed meanwhile, or -errno. */
static int
move_state(struct km_etcd *e, const struct mv_out *o, const char *state, const char *reason)
{
	char key[KM_CLUSTER_MOVE_KEY_MAX], *val;
	struct km_etcd_kvs *r = NULL;
	json_t *j = NULL;
	int rc;

	km_cluster_move_key(key, sizeof(key), o->id);
	rc = km_etcd_get(e, key, strlen(key), 0, &r);
	if (rc <= 0) {
		km_etcd_kvs_free(r);
		return rc < 0 ? rc : 0;
	}
	if (r->kv[0].mod_rev != o->rev) {
		km_etcd_kvs_free(r);
		return 0;
	}
	j = json_loadb((const char *)r->kv[0].value, r->kv[0].vlen, 0, NULL);
	km_etcd_kvs_free(r);
	if (j == NULL || !json_is_object(j)) {
		json_decref(j);
		return -EPROTO;
	}
	json_object_set_new(j, "state", json_string(state));
	if (reason != NULL)
		json_object_set_new(j, "reason", json_string(reason));
	json_object_set_new(j, "keys", json_integer((json_int_t)o->keys));
	if (strcmp(state, "ready") == 0)
		json_object_set_new(j, "to_incarnation", json_integer((json_int_t)o->to_inc));
	val = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (val == NULL)
		return -ENOMEM;
	rc = put_at(e, key, val, o->rev);
	free(val);
	return rc;
}

/* Fence: the move key, read at kv, set to "failed" at that revision, so that a `ready`
 * still in flight (a transaction whose outcome was not known) can no longer land.
 * @return 1 set, 0 the key changed meanwhile, or -errno. */
static int
fence_failed(struct km_etcd *e, const char *key, const struct km_etcd_kv *kv)
{
	json_t *j = json_loadb((const char *)kv->value, kv->vlen, 0, NULL);
	char *val;
	int rc;

	if (j == NULL || !json_is_object(j)) {
		json_decref(j);
		return -EPROTO;
	}
	json_object_set_new(j, "state", json_string("failed"));
	json_object_set_new(j, "reason", json_string("the source could not confirm its copy"));
	val = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (val == NULL)
		return -ENOMEM;
	rc = put_at(e, key, val, kv->mod_rev);
	free(val);
	return rc;
}

/*
 * Whether the move of o is confirmed ready, after an attempt that failed or found the key
 * changed. The key read again: `ready` at a revision above o->rev is; any other state is
 * not, once the key is fenced to `failed` at the revision read (else read again). The key
 * gone: the map decides (a completed move deletes its key with the map that gives the
 * shard away; the placer gives a move up without a map): given up while the map still
 * gives the shard to this node, completed if it gives it to any other (the target, or a
 * third node after later moves). Read again for as long as etcd does not answer: the
 * shard stays detached (BUSY) meanwhile, since serving it again while the placer may
 * still complete the move with this copy would lose the writes taken since.
 * @return 1 ready or completed; 0 not (the shard comes back); -1 keymapd stops first.
 */
static int
move_outcome(struct km_etcd *e, const struct mv_out *o)
{
	char key[KM_CLUSTER_MOVE_KEY_MAX];
	unsigned int i;
	int rc;

	km_cluster_move_key(key, sizeof(key), o->id);
	for (i = 0; !mv_stopping(); i++) {
		struct km_etcd_kvs *r = NULL;
		struct km_cmap *m = NULL;
		const struct km_cmap_shard *sh;
		int ready = 0;

		rc = km_etcd_get(e, key, strlen(key), 0, &r);
		if (rc > 0 && r->kv[0].create_rev != o->create_rev)
			rc = 0; /* another move of the shard: this one was deleted */
		if (rc > 0) {
			json_t *j =
				json_loadb((const char *)r->kv[0].value, r->kv[0].vlen, 0, NULL);
			const char *st = json_string_value(json_object_get(j, "state"));

			ready = st != NULL && strcmp(st, "ready") == 0 && r->kv[0].mod_rev > o->rev;
			json_decref(j);
			rc = ready ? 1 : fence_failed(e, key, &r->kv[0]);
			km_etcd_kvs_free(r);
			if (rc == 1)
				return ready;
			if (rc == 0) {
				usleep(50 * 1000); /* changed meanwhile: read again */
				continue;
			}
		} else {
			km_etcd_kvs_free(r);
		}
		if (rc == 0 && (rc = km_cluster_map_read(e, &m)) == 0) {
			sh = km_cmap_shard_find(m, o->id);
			ready = sh == NULL ||
				strcmp(m->nodes[sh->node].id, km_cluster_node_id()) != 0;
			km_cmap_free(m);
			return ready;
		}
		if (i % 20 == 0)
			KM_LOG(WARNING,
				"cluster: move of shard %" PRIu64
				": whether it is ready is not known "
				"(%s): it stays unavailable here until etcd answers",
				o->id, km_etcd_errmsg(e));
		usleep(500 * 1000);
	}
	return -1;
}

static void *
sender(void *arg)
{
	struct mv_out *o = arg;
	char why[256] = "";
	struct km_etcd *e = NULL;
	int side = 0, rc;

	rc = km_etcd_open(km_cluster_etcd_endpoints(), 3000, &e);
	if (rc == 0)
		side = km_cluster_side_of(e, o->to, &o->to_ip);
	if (rc < 0 || side <= 0) {
		snprintf(why, sizeof(why), "cannot read node %s's member record: %s", o->to,
			rc < 0 || e == NULL ? strerror(-rc)
			: side == 0         ? "no live member"
					    : km_etcd_errmsg(e));
		rc = -EHOSTUNREACH;
	} else {
		rc = stream_retried(o, (uint16_t)side, o->x != NULL, why, sizeof(why));
		if (rc == MV_WHOLE) {
			/* The writes outran the live copy (or it could not go on): the
			 * shard is detached and sent whole, over a new connection. */
			KM_LOG(WARNING,
				"cluster: move of shard %" PRIu64 " to node %s: %s: "
				"sending it whole",
				o->id, o->to, why);
			o->whole = 1;
			atomic_store(&o->want_detach, 1);
			rc = stream_retried(o, (uint16_t)side, 0, why, sizeof(why));
		}
	}
	if (rc == 0) {
		rc = move_state(e, o, "ready", NULL);
		/* Not set, or not known: what etcd has decides (the write may have landed). */
		if (rc != 1 && move_outcome(e, o) == 1)
			rc = 1;
		if (rc != 1)
			snprintf(why, sizeof(why), "could not mark the move ready: %s",
				rc == 0 ? "the move changed meanwhile" : km_etcd_errmsg(e));
		rc = rc == 1 ? 0 : -ESTALE;
	} else if (e != NULL) {
		(void)move_state(e, o, "failed", why);
	}
	if (rc == 0)
		KM_LOG(NOTICE,
			"cluster: shard %" PRIu64 " sent to node %s (%" PRIu64 " entries, %" PRIu64
			" records, %s): ready %" PRIu64 " ms after its detach",
			o->id, o->to, o->keys, o->records, o->whole ? "whole" : "live",
			(rte_get_timer_cycles() - o->t_cut) * 1000 / rte_get_timer_hz());
	else
		KM_LOG(ERR, "cluster: move of shard %" PRIu64 " to node %s failed: %s", o->id,
			o->to, why);
	km_etcd_close(e);
	atomic_store(&o->state, rc == 0 ? MV_SENT : MV_FAILED);
	return NULL;
}

/* ---- source: the control lcore ------------------------------------------------------ */

static struct mv_out *
out_find(uint64_t id)
{
	unsigned int i;

	for (i = 0; i < MV_PARKED; i++)
		if (atomic_load(&mv.out[i].state) != MV_FREE && mv.out[i].id == id)
			return &mv.out[i];
	return NULL;
}

/* Take the shard off its worker for the end of its copy (live: after the catch-up) or
 * for a whole copy. Publishes o->s and o->dd with detached (release). */
static void
out_detach(struct mv_out *o)
{
	int rc;

	o->t_cut = rte_get_timer_cycles();
	/* From here the shard answers BUSY at this node until the map moves it. */
	rc = km_mailbox_detach(o->worker, o->id, &o->s, &o->dd);
	if (rc < 0) {
		KM_LOG(ERR, "cluster: move of shard %" PRIu64 ": worker %u cannot hand it over: %s",
			o->id, o->worker, strerror(-rc));
		o->s = NULL;
		o->dd = NULL;
		atomic_store_explicit(&o->detached, -1, memory_order_release);
		return;
	}
	atomic_store_explicit(&o->detached, 1, memory_order_release);
}

/* The move is over here (sent, failed or given up): free its slot. */
static void
out_free(struct mv_out *o)
{
	km_proc_dedup_free(o->dd);
	km_proc_export_put(o->x);
	o->dd = NULL;
	o->s = NULL;
	o->x = NULL;
	atomic_store(&o->state, MV_FREE);
}

/* Join o's sender once. */
static void
out_join(struct mv_out *o)
{
	if (!o->joined)
		pthread_join(o->thr, NULL);
	o->joined = 1;
}

/* The shard serves here again (a failed or abandoned move): attached again if it was
 * detached, its export ended if it was live. */
static void
out_restore(struct mv_out *o, const char *why)
{
	atomic_store(&o->cancel, 1);
	out_join(o);
	if (atomic_load_explicit(&o->detached, memory_order_acquire) <= 0) {
		/* Never detached: it serves on; its export ends (if it still runs: a worker
		 * that does not take the cancel is asked again every tick). */
		if (o->x != NULL && km_mailbox_export_cancel(o->worker) < 0) {
			KM_LOG(ERR,
				"cluster: shard %" PRIu64 ": its worker %u did not end its "
				"export yet: asked again",
				o->id, o->worker);
			mv.failed++;
			atomic_store(&o->state, MV_UNEXPORT);
			return;
		}
		KM_LOG(NOTICE, "cluster: shard %" PRIu64 " serves on here (%s)", o->id, why);
	} else if (km_mailbox_attach(o->worker, o->id, o->s, &o->dd, 1) == 0) {
		KM_LOG(NOTICE, "cluster: shard %" PRIu64 " serves here again (%s)", o->id, why);
	} else {
		/* Kept, and tried again every tick: it answers BUSY meanwhile. */
		KM_LOG(ERR,
			"cluster: shard %" PRIu64 " (%s) not taken back by worker %u yet: "
			"tried again",
			o->id, why, o->worker);
		mv.failed++;
		atomic_store(&o->state, MV_REATTACH);
		return;
	}
	mv.failed++;
	out_free(o);
}

void
km_cluster_move_superseded(uint64_t id)
{
	struct mv_out *o = out_find(id);

	if (o != NULL)
		o->superseded = 1; /* dropped by the next tick, once its sender is done */
}

void
km_cluster_missing_add(uint64_t id, uint16_t w)
{
	unsigned int i;

	for (i = 0; i < mv.nb_missing && mv.missing[i].id != id; i++)
		;
	if (i == RTE_DIM(mv.missing))
		return; /* the next map lists it again */
	mv.missing[i].id = id;
	mv.missing[i].worker = w;
	if (i == mv.nb_missing)
		mv.nb_missing++;
}

/* Missing shards whose data arrived are attached; those the map moved elsewhere
 * forgotten. */
static void
missing_tick(const struct km_shardmap *map)
{
	unsigned int i = 0;

	while (i < mv.nb_missing) {
		uint64_t id = mv.missing[i].id;
		uint16_t w = mv.missing[i].worker;
		const struct km_shard *s = km_shardmap_find(map, id);
		struct km_proc_dedup *dd = NULL;
		struct km_store *st = NULL;
		int done = s == NULL || km_shard_owner(s) != w;

		if (!done && (st = km_cluster_incoming_take(id, &dd)) != NULL) {
			if (km_mailbox_attach(w, id, st, &dd, 0) == 0) {
				KM_LOG(NOTICE,
					"cluster: shard %" PRIu64
					" arrived from another node: serving on worker %u",
					id, w);
				done = 1;
			} else {
				km_cluster_incoming_return(id, st, dd);
			}
		}
		if (done)
			mv.missing[i] = mv.missing[--mv.nb_missing];
		else
			i++;
	}
}

/* Whether a move out of worker w is in its live phase (its export in use). */
static int
worker_exporting(uint16_t w)
{
	unsigned int i;

	for (i = 0; i < MV_PARKED; i++)
		if (atomic_load(&mv.out[i].state) == MV_SENDING && mv.out[i].worker == w &&
			mv.out[i].x != NULL && atomic_load(&mv.out[i].detached) == 0)
			return 1;
	return 0;
}

/* Queue rq until its worker's export is free (a newer request of the shard replaces an
 * older one). */
static void
wait_put(const struct km_cluster_move_req *rq, uint16_t w)
{
	unsigned int i;

	for (i = 0; i < mv.nb_wait; i++)
		if (mv.wait[i].id == rq->id)
			break;
	if (i == mv.nb_wait) {
		if (mv.nb_wait == RTE_DIM(mv.wait)) {
			KM_LOG(WARNING, "cluster: move of shard %" PRIu64 " put off: %u waiting",
				rq->id, mv.nb_wait);
			return;
		}
		mv.nb_wait++;
	}
	mv.wait[i] = *rq;
	mv.wait_worker[i] = w;
}

void
km_cluster_move_start(const struct km_cluster_move_req *rq)
{
	struct km_shard_info *in = NULL;
	struct mv_out *o = NULL;
	uint32_t n = 0, i;
	int rc;

	o = out_find(rq->id);
	if (o != NULL) {
		/* Under way; or an older move of the shard is not over here yet: this one
		 * waits for it. */
		if (o->create_rev != rq->create_rev)
			wait_put(rq, o->worker);
		return;
	}
	for (i = 0; i < MV_PARKED; i++)
		if (atomic_load(&mv.out[i].state) == MV_FREE) {
			o = &mv.out[i];
			break;
		}
	if (o == NULL) {
		KM_LOG(WARNING, "cluster: move of shard %" PRIu64 " put off: %u moves under way",
			rq->id, MV_PARKED);
		return;
	}
	if (km_ctl_gather_infos(&in, &n) < 0)
		return;
	for (i = 0; i < n; i++)
		if (in[i].id == rq->id)
			break;
	if (i == n) {
		free(in);
		KM_LOG(WARNING, "cluster: move of shard %" PRIu64 " to node %s: not on this node",
			rq->id, rq->to);
		return;
	}
	*o = (struct mv_out){.id = rq->id,
		.worker = (uint16_t)in[i].worker,
		.rev = rq->rev,
		.create_rev = rq->create_rev,
		.to_ip = rq->to_ip,
		.to_worker = rq->to_worker,
		.t0 = rte_get_timer_cycles()};
	snprintf(o->to, sizeof(o->to), "%s", rq->to);
	free(in);
	if (worker_exporting(o->worker)) {
		/* A worker exports one shard at a time: this move waits for it. */
		wait_put(rq, o->worker);
		atomic_store(&o->state, MV_FREE);
		return;
	}
	/* Live: the worker exports it while it serves. Else (a driver without a resumable
	 * walk, no memory) it is detached now and sent whole. */
	rc = km_proc_export_new(o->id, MV_CHUNKS, &o->x);
	if (rc == 0) {
		rc = km_mailbox_export_start(o->worker, o->x);
		if (rc < 0) {
			km_proc_export_put(o->x);
			o->x = NULL;
		}
	}
	if (o->x == NULL) {
		KM_LOG(NOTICE, "cluster: shard %" PRIu64 " cannot be copied live (%s): whole",
			o->id, strerror(-rc));
		o->whole = 1;
		out_detach(o);
		if (atomic_load(&o->detached) < 0)
			return;
	}
	atomic_store(&o->state, MV_SENDING);
	if (pthread_create(&o->thr, NULL, sender, o) != 0) {
		o->joined = 1; /* no thread */
		out_restore(o, "no thread to send it");
		return;
	}
	KM_LOG(NOTICE, "cluster: shard %" PRIu64 " (worker %u) goes to node %s: sending %s", o->id,
		o->worker, o->to, o->x != NULL ? "live" : "whole");
}

/* A live move: detach once the walk is over and the sender caught up, or when the live
 * copy failed (the sender then sends it whole). */
static void
out_live_tick(struct mv_out *o)
{
	struct km_proc_export_status st;

	if (o->x == NULL || atomic_load(&o->detached) != 0 || atomic_load(&o->cancel))
		return;
	km_proc_export_status(o->x, &st);
	if ((st.walked && st.backlog == 0) || atomic_load(&o->want_detach) ||
		(st.ended && st.err != 0))
		out_detach(o);
}

void
km_cluster_move_tick(
	const struct km_shardmap *map, const struct km_cluster_gone *gone, unsigned int nb_gone)
{
	struct km_cluster_move_req waiting[RTE_DIM(mv.wait)];
	unsigned int i, k, nw = 0, nk = 0;

	/* Waiting moves: dropped when the placer deleted them, tried again once their
	 * worker's export is free. */
	for (i = 0; i < mv.nb_wait; i++) {
		for (k = 0; k < nb_gone && (gone[k].id != mv.wait[i].id ||
						   gone[k].create_rev != mv.wait[i].create_rev);
			k++)
			;
		if (k < nb_gone)
			continue;
		if (worker_exporting(mv.wait_worker[i])) {
			mv.wait[nk] = mv.wait[i];
			mv.wait_worker[nk++] = mv.wait_worker[i];
		} else {
			waiting[nw++] = mv.wait[i];
		}
	}
	mv.nb_wait = nk;
	for (i = 0; i < nw; i++)
		km_cluster_move_start(&waiting[i]);
	missing_tick(map);

	for (i = 0; i < MV_PARKED; i++) {
		struct mv_out *o = &mv.out[i];
		int st = atomic_load(&o->state);
		const struct km_shard *s;

		for (k = 0; st != MV_FREE && k < nb_gone; k++)
			if (gone[k].id == o->id && gone[k].create_rev == o->create_rev)
				o->gone = 1;
		if (st == MV_FREE)
			continue;
		if (o->superseded && st != MV_SENDING) {
			out_join(o);
			KM_LOG(NOTICE,
				"cluster: shard %" PRIu64 " came back from another node: the copy "
				"parked here since its move goes",
				o->id);
			km_store_destroy(o->s); /* its files are the newer copy's now */
			out_free(o);
			continue;
		}
		if (st == MV_UNEXPORT) {
			if (km_mailbox_export_cancel(o->worker) == 0) {
				KM_LOG(NOTICE, "cluster: shard %" PRIu64 " serves on here", o->id);
				out_free(o);
			}
			continue;
		}
		if (st == MV_REATTACH) {
			if (km_mailbox_attach(o->worker, o->id, o->s, &o->dd, 1) == 0) {
				KM_LOG(NOTICE, "cluster: shard %" PRIu64 " serves here again",
					o->id);
				out_free(o);
			}
			continue;
		}
		if (st == MV_SENDING) {
			/* Given up while still live: the sender stops (the move then ends
			 * as failed, and the shard never left). */
			if ((o->gone && atomic_load(&o->detached) == 0) ||
				atomic_load(&o->detached) < 0)
				atomic_store(
					&o->cancel, 1); /* the detach failed: so does the move */
			else
				out_live_tick(o);
			continue;
		}
		if (st == MV_FAILED) {
			out_restore(o, "its move failed");
			continue;
		}
		/* Sent: the map that gives it to the target ends it here. */
		s = km_shardmap_find(map, o->id);
		if (s != NULL && km_shard_owner(s) == KM_OWNER_REMOTE) {
			uint64_t now = rte_get_timer_cycles(), hz = rte_get_timer_hz();

			out_join(o);
			KM_LOG(NOTICE,
				"cluster: shard %" PRIu64 " is node %s's now: dropped here after "
				"%" PRIu64 " ms (%s copy), %" PRIu64 " ms of them unavailable",
				o->id, o->to, (now - o->t0) * 1000 / hz,
				o->whole ? "whole" : "live", (now - o->t_cut) * 1000 / hz);
			/* Its files stay: the map does not give it back without a move. */
			km_store_destroy(o->s);
			mv.moved_out++;
			mv.last_pause_us = (now - o->t_cut) * 1000000 / hz;
			out_free(o);
			continue;
		}
		if (o->gone)
			out_restore(o, "the placer gave its move up");
	}
}

int
km_cluster_move_parked(uint64_t id)
{
	return out_find(id) != NULL;
}

void
km_cluster_move_counts(uint64_t *out, uint64_t *in, uint64_t *failed)
{
	*out = mv.moved_out;
	*in = mv.moved_in;
	*failed = mv.failed;
}
