/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Replication of shards to other nodes (docs/cluster.md section 7), both ends.
 *
 * Primary (the node the map gives a shard to): for every replica the map lists, the
 * control lcore starts a replication stream on the shard's worker (km_proc.h): the worker
 * walks the shard into chunks, then a sync record, then every write it applies, numbered.
 * A dialer thread connects to the replica's side channel and has the stream accepted; the
 * pump thread sends the chunks of every stream and reads the replicas' acknowledgements
 * (cumulative: the last write applied), which the workers turn into replies. A stream
 * whose replica the map lists in sync is waited for from its start; any other once the
 * replica acknowledged its sync record (it then has the whole shard). A broken stream is
 * started again from a new walk after RP_RETRY_MS. The streams' states go to etcd
 * (P/repl/<node>): the placer marks a replica in sync once its primary says it caught up,
 * and out of sync when it says the stream is copying again or broken.
 *
 * Replica: a receiver thread per stream (from the side channel's listener) checks that the
 * stream comes from the primary its map names for the shard, at that primary's
 * incarnation, and that the map lists this node as a replica: a deposed primary's stream
 * is refused, and cut when a map names another primary. It applies the records to a new
 * store of the worker the map names (staged: the replica's files are its own, named by
 * the store, until promoted; then committed under the shard's name), keeps the last
 * RP_DEDUP at-most-once entries (the primary's, sent after the walk, then the writes'),
 * and once it applied the sync record it acknowledges, after each batch of records (made
 * durable first with the log store). Until a new stream reaches its sync record, the
 * previous stream's complete copy is kept: it is the one a failover promotes.
 *
 * Promotion: a map that gives the shard to this node stops its receiver and hands the
 * replica's store and at-most-once entries to the map's application as a received shard
 * (the worker attaches it; versions above every one it holds and the clock).
 *
 * Stream (integers big-endian), after the side channel's accept handshake:
 *   header: "KMRP" u16 version (1) u16 worker u64 shard u32 epoch u32 reserved
 *           u64 primary incarnation u64 replica incarnation u8 n, n bytes: primary id
 *   reply (replica to primary): u32 status (0 go, else errno) u16 n, n bytes of message
 *   records (km_proc.h, replication records), primary to replica, until the end
 *   acknowledgements, replica to primary: u64 rseq u8 flags (1: synced)
 */

#define KM_LOG_COMP KM_LOG_REPL /* keymapd.h */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <rte_cycles.h>
#include <rte_telemetry.h>

#include <km_cluster.h>
#include <km_etcd.h>
#include <km_proc.h>
#include <km_util.h>

#include "cluster_priv.h"
#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "mailbox.h"

#define RP_MAGIC    "KMRP"
#define RP_VERSION  1
#define RP_HDR_LEN  24
#define RP_CHUNKS   16 /* chunks of a stream (KM_PROC_XCHUNK_BYTES each) */
#define RP_OUT_MAX  512
#define RP_IN_MAX   512
#define RP_RETRY_MS 500
#define RP_IO_MS    5000
#define RP_STALL_MS 2000  /* a caught-up replica that acknowledges nothing owed this long */
#define RP_DEDUP    16384 /* at-most-once entries a replica keeps per shard */
#define RP_ACK_LEN  9
#define RP_IDLE_US  50
#define RP_BUF      (256u << 10)
#define RP_SOCKBUF  (1u << 20)

enum { RP_NEW = 0, RP_DIALING, RP_RUN, RP_BROKEN, RP_DEAD };

/* One stream of this node's shard to one replica. */
struct rp_out {
	uint64_t shard;
	uint16_t worker; /* the shard's here */
	char node[KM_CLUSTER_ID_MAX + 1];
	uint64_t inc;     /* the replica's incarnation in the map */
	uint16_t rworker; /* its worker in the map */
	uint32_t epoch;   /* the map it started on */
	uint8_t in_sync;  /* the map says so */
	uint8_t unwanted; /* control lcore: the map no longer has it */
	uint64_t tag;     /* its bit among the shard's replicas (km_proc_repl_tag) */
	/* A stream of this replica caught up: a report saying so may be in etcd, and the
	 * placer may still mark it in sync from it. Its streams are waited for until a
	 * report saying otherwise is put (report sequence hold_seq). */
	uint8_t hold;
	uint64_t hold_seq;
	struct km_proc_export *x;
	_Atomic int state;
	atomic_int stop; /* the dialer or the pump closes it */
	int fd;
	uint64_t retry_tsc;
	uint64_t starts;
	char why[160];
	pthread_t dialer;
	uint8_t dialer_live;
	/* The pump's. */
	struct km_proc_xchunk *c;
	size_t off;
	uint8_t ack[RP_ACK_LEN];
	size_t ackn;
	uint64_t stall_acked, stall_tsc; /* writes owed since stall_tsc, acked as then */
};

/* A shard replicated here. */
struct rp_in {
	uint64_t shard;
	char primary[KM_CLUSTER_ID_MAX + 1];
	uint64_t pinc;
	uint16_t rworker;
	/* The complete copy (a stream reached its sync record), NULL: none yet. */
	struct km_proc_replica *copy;
	/* The stream being received (mu). */
	int fd;
	int active; /* a receiver thread streams into it */
	/* + 1 per receiver that claims it, and when it is retired: a receiver whose claim
	 * is not the last one stops (and never replaces the copy). */
	_Atomic uint64_t gen;
	unsigned int refs; /* receiver threads holding it (mu) */
	int dead;          /* retired: out of rp.in, freed by the last of refs (mu) */
	/* Its promotion's commit failed (mu): never promoted, not tried again (after a failed
	 * fdatasync a second one could succeed without the data on the disk) until a stream
	 * gives it a new copy. */
	int promote_failed;
};

static struct {
	pthread_mutex_t mu;
	struct rp_out *out[RP_OUT_MAX];
	unsigned int nb_out;
	struct rp_in *in[RP_IN_MAX];
	unsigned int nb_in;
	pthread_t pump;
	int pump_started;
	atomic_int stop;
	int sync;                 /* [cluster] replication = sync */
	char *report;             /* mu: the last report not yet put */
	uint64_t report_seq;      /* mu: its sequence number */
	uint64_t last_seq;        /* control lcore: of the last report built */
	_Atomic uint64_t put_seq; /* the last report etcd has */
	char *reported;           /* control lcore: the last report built */
	uint64_t report_tsc, built_tsc;
	uint32_t in_epoch; /* mu: the map epoch the receivers' entries follow */
	/* Counters (relaxed). */
	_Atomic uint64_t promoted, streams_in, refused_in, broken_out;
} rp = {.mu = PTHREAD_MUTEX_INITIALIZER, .sync = 1};

static uint64_t
ms_tsc(unsigned int ms)
{
	return rte_get_timer_hz() / 1000 * ms;
}

/* ---- primary: the pump ------------------------------------------------------------- */

static void
out_broken(struct rp_out *o, const char *why, int err)
{
	if (o->c != NULL) {
		km_proc_export_give(o->x, o->c);
		o->c = NULL;
		o->off = 0;
	}
	if (o->fd >= 0)
		close(o->fd);
	o->fd = -1;
	o->ackn = 0;
	snprintf(o->why, sizeof(o->why), "%s%s%s", why, err != 0 ? ": " : "",
		err != 0 ? strerror(err) : "");
	atomic_fetch_add_explicit(&rp.broken_out, 1, memory_order_relaxed);
	atomic_store(&o->state, RP_BROKEN);
}

/* Send what o has, read its acknowledgements. @return 1 something moved. */
static int
pump_one(struct rp_out *o)
{
	struct km_proc_repl_status st;
	int moved = 0;
	ssize_t n;

	if (atomic_load(&o->stop)) {
		out_broken(o, "stopped", 0);
		atomic_store(&o->state, RP_DEAD);
		return 1;
	}
	for (;;) {
		if (o->c == NULL) {
			o->c = km_proc_export_take(o->x);
			o->off = 0;
			if (o->c == NULL)
				break;
		}
		n = send(o->fd, o->c->data + o->off, o->c->len - o->off,
			MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			out_broken(o, "send", n < 0 ? errno : EPIPE);
			return 1;
		}
		moved = 1;
		o->off += (size_t)n;
		if (o->off == o->c->len) {
			km_proc_export_give(o->x, o->c);
			o->c = NULL;
		}
	}
	for (;;) {
		n = recv(o->fd, o->ack + o->ackn, RP_ACK_LEN - o->ackn, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			out_broken(o, n == 0 ? "the replica closed the stream" : "recv",
				n < 0 ? errno : 0);
			return 1;
		}
		moved = 1;
		o->ackn += (size_t)n;
		if (o->ackn == RP_ACK_LEN) {
			km_proc_repl_ack(o->x, km_be_get(o->ack, 8), o->ack[8] & 1);
			o->ackn = 0;
		}
	}
	km_proc_repl_status(o->x, &st);
	if (st.ended && o->c == NULL && st.backlog == 0) {
		out_broken(o,
			st.err == -ENOBUFS ? "the replica fell behind the writes"
					   : "the stream ended on the worker",
			st.err == -ENOBUFS ? 0 : -st.err);
		return 1;
	}
	/* A replica that stalls (its disk, its host) while its connection lives: broken
	 * after RP_STALL_MS, so that its report says so and the placer can take it out of
	 * the in-sync set, rather than the shard's writes waiting for it for good. */
	if (st.caught_up && st.rseq > st.acked) {
		uint64_t now = rte_get_timer_cycles();

		if (o->stall_tsc == 0 || st.acked != o->stall_acked) {
			o->stall_tsc = now;
			o->stall_acked = st.acked;
		} else if (now - o->stall_tsc >= ms_tsc(RP_STALL_MS)) {
			out_broken(o, "the replica acknowledged nothing for 2 s", ETIMEDOUT);
			return 1;
		}
	} else {
		o->stall_tsc = 0;
	}
	return moved;
}

static void *
pump(void *arg)
{
	(void)arg;
	while (!atomic_load(&rp.stop)) {
		unsigned int i;
		int moved = 0;

		pthread_mutex_lock(&rp.mu);
		for (i = 0; i < rp.nb_out; i++)
			if (atomic_load(&rp.out[i]->state) == RP_RUN)
				moved |= pump_one(rp.out[i]);
		pthread_mutex_unlock(&rp.mu);
		if (!moved)
			usleep(RP_IDLE_US);
	}
	return NULL;
}

/* ---- primary: dialing ---------------------------------------------------------------- */

static int
wait_fd(int fd, short ev, unsigned int ms)
{
	struct pollfd p = {.fd = fd, .events = ev};
	unsigned int waited;
	int rc = 0;

	for (waited = 0; waited < ms && !atomic_load(&rp.stop); waited += 100) {
		rc = poll(&p, 1, 100);
		if (rc != 0)
			break;
	}
	return rc > 0 ? 0 : rc == 0 ? -ETIMEDOUT : -errno;
}

static int
read_full(int fd, void *buf, size_t n)
{
	uint8_t *b = buf;

	while (n > 0) {
		ssize_t r = recv(fd, b, n, MSG_DONTWAIT);

		if (r > 0) {
			b += r;
			n -= (size_t)r;
		} else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
			int rc = wait_fd(fd, POLLIN, RP_IO_MS);

			if (rc < 0)
				return rc;
		} else {
			return r == 0 ? -ECONNRESET : -errno;
		}
	}
	return 0;
}

static void *
dialer(void *arg)
{
	struct rp_out *o = arg;
	struct sockaddr_in a = {.sin_family = AF_INET};
	uint8_t h[RP_HDR_LEN + 17 + KM_CLUSTER_ID_MAX], r[6];
	char msg[201] = "", why[160];
	const char *me = km_cluster_node_id();
	struct km_etcd *e = NULL;
	int fd = -1, rc, one = 1, buf = RP_SOCKBUF, flags;
	size_t idlen = strlen(me), n;
	uint32_t ip = 0;

	rc = km_etcd_open(km_cluster_etcd_endpoints(), 2000, &e);
	if (rc == 0)
		rc = km_cluster_side_of(e, o->node, &ip);
	km_etcd_close(e);
	if (rc <= 0) {
		snprintf(why, sizeof(why), "no side channel of node %s: %s", o->node,
			rc == 0 ? "no live member" : strerror(-rc));
		goto fail;
	}
	a.sin_port = htons((uint16_t)rc);
	a.sin_addr.s_addr = htonl(ip);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(why, sizeof(why), "socket: %s", strerror(errno));
		goto fail;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
		snprintf(why, sizeof(why), "connect to %s: %s", o->node, strerror(errno));
		goto fail;
	}
	rc = wait_fd(fd, POLLOUT, RP_IO_MS);
	if (rc == 0) {
		socklen_t l = sizeof(rc);

		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &rc, &l) < 0)
			rc = errno;
		rc = -rc;
	}
	if (rc < 0) {
		snprintf(why, sizeof(why), "connect to %s: %s", o->node, strerror(-rc));
		goto fail;
	}
	memset(h, 0, sizeof(h));
	memcpy(h, RP_MAGIC, 4);
	km_be_put(h + 4, RP_VERSION, 2);
	km_be_put(h + 6, o->rworker, 2);
	km_be_put(h + 8, o->shard, 8);
	km_be_put(h + 16, o->epoch, 4);
	km_be_put(h + RP_HDR_LEN, km_cluster_incarnation(), 8);
	km_be_put(h + RP_HDR_LEN + 8, o->inc, 8);
	h[RP_HDR_LEN + 16] = (uint8_t)idlen;
	memcpy(h + RP_HDR_LEN + 17, me, idlen);
	n = RP_HDR_LEN + 17 + idlen;
	if (send(fd, h, n, MSG_NOSIGNAL) != (ssize_t)n) {
		snprintf(why, sizeof(why), "send to %s: %s", o->node, strerror(errno));
		goto fail;
	}
	rc = read_full(fd, r, sizeof(r));
	if (rc == 0) {
		n = km_be_get(r + 4, 2);
		if (n > 200 || read_full(fd, msg, n) < 0)
			n = 0;
		msg[n] = '\0';
	}
	if (rc < 0) {
		snprintf(why, sizeof(why), "no answer from %s: %s", o->node, strerror(-rc));
		goto fail;
	}
	if (km_be_get(r, 4) != 0) {
		snprintf(why, sizeof(why), "%s refused the stream: %s", o->node, msg);
		goto fail;
	}
	flags = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	if (atomic_load(&o->stop)) {
		snprintf(why, sizeof(why), "stopped");
		goto fail;
	}
	pthread_mutex_lock(&rp.mu);
	o->fd = fd;
	o->why[0] = '\0';
	atomic_store(&o->state, RP_RUN);
	pthread_mutex_unlock(&rp.mu);
	KM_LOG(INFO, "cluster: shard %" PRIu64 " replicating to node %s (worker %u)", o->shard,
		o->node, o->rworker);
	return NULL;
fail:
	if (fd >= 0)
		close(fd);
	pthread_mutex_lock(&rp.mu);
	snprintf(o->why, sizeof(o->why), "%s", why);
	atomic_store(&o->state, RP_BROKEN);
	pthread_mutex_unlock(&rp.mu);
	return NULL;
}

/* ---- primary: the control lcore's side ------------------------------------------------ */

/*
 * A new stream of o's shard on its worker (waited for when the map says in sync, or a
 * report may say caught up), then the previous one stopped: the new one first, so that
 * the replica is never without a stream while it must be waited for.
 * @return 0 or -errno (the previous stream stays; a replica to wait for that has none is
 * blocked: nothing of the shard is acknowledged).
 */
static int
out_start(struct rp_out *o)
{
	struct km_proc_export *x = NULL, *old = o->x;
	int rc = km_proc_repl_new(o->shard, RP_CHUNKS, &x);

	if (rc == 0) {
		km_proc_repl_tag(x, o->tag);
		km_proc_repl_wait(x, o->in_sync || o->hold);
		rc = km_mailbox_repl_start(o->worker, x);
		if (rc < 0)
			km_proc_export_put(x);
	}
	if (rc < 0) {
		if ((o->in_sync || o->hold) &&
			km_mailbox_repl_block(o->worker, o->shard, o->tag, 1) < 0)
			KM_LOG(CRIT,
				"cluster: shard %" PRIu64 ": no stream to in-sync replica %s and "
				"worker %u not blocked",
				o->shard, o->node, o->worker);
		return rc;
	}
	/* Swapped under mu: km_cluster_repl_list() reads o->x. */
	pthread_mutex_lock(&rp.mu);
	o->x = x;
	pthread_mutex_unlock(&rp.mu);
	if (old != NULL) {
		if (km_mailbox_repl_stop(o->worker, old) < 0)
			KM_LOG(WARNING,
				"cluster: shard %" PRIu64 ": stream to %s not stopped on worker %u",
				o->shard, o->node, o->worker);
		km_proc_export_put(old);
	}
	o->starts++;
	o->c = NULL;
	o->off = o->ackn = 0;
	o->stall_tsc = 0;
	o->fd = -1;
	atomic_store(&o->stop, 0);
	atomic_store(&o->state, RP_NEW);
	return 0;
}

/* A wanted entry other than o for o's shard and replica run (node, incarnation) from worker w. */
static int
out_made(const struct rp_out *o, uint16_t w)
{
	unsigned int i;

	for (i = 0; i < rp.nb_out; i++) {
		const struct rp_out *e = rp.out[i];

		if (e != o && !e->unwanted && e->shard == o->shard && e->worker == w &&
			e->inc == o->inc && strcmp(e->node, o->node) == 0)
			return 1;
	}
	return 0;
}

/* End o's stream on its worker, and its replica's block (the map no longer has it; the
 * shard may have gone: nothing then). A shard moved to another worker here carried the
 * block with it: it ends there too, unless a stream of the shard took the tag over, or
 * the map still lists that replica and no stream to it from that worker could be made. */
static void
out_unexport(struct rp_out *o)
{
	const struct km_cmap *m = km_cluster_cmap();
	const struct km_cmap_shard *sh = m != NULL ? km_cmap_shard_find(m, o->shard) : NULL;
	struct km_proc_export *x = o->x;
	unsigned int i;

	if (x != NULL) {
		pthread_mutex_lock(&rp.mu);
		o->x = NULL; /* km_cluster_repl_list() reads it */
		pthread_mutex_unlock(&rp.mu);
		if (km_mailbox_repl_stop(o->worker, x) < 0)
			KM_LOG(WARNING,
				"cluster: shard %" PRIu64 ": stream to %s not stopped on worker %u",
				o->shard, o->node, o->worker);
		km_proc_export_put(x);
	}
	(void)km_mailbox_repl_block(o->worker, o->shard, o->tag, 0);
	if (sh == NULL || sh->node != km_cmap_node_find(m, km_cluster_node_id()) ||
		sh->worker == o->worker)
		return;
	/* A stream of the shard took the tag over: it is its block now. */
	for (i = 0; i < rp.nb_out; i++)
		if (rp.out[i] != o && rp.out[i]->shard == o->shard && rp.out[i]->tag == o->tag)
			return;
	/* The map still has that replica and no stream to it from the shard's worker was
	 * made (a full table, no memory): it stays blocked. One that was made (under
	 * another tag, its copy moved to another worker there) blocks under its own. */
	for (i = 0; i < sh->nb_replicas; i++)
		if (strcmp(m->nodes[sh->replicas[i].node].id, o->node) == 0 &&
			m->nodes[sh->replicas[i].node].incarnation == o->inc &&
			!out_made(o, sh->worker))
			return;
	(void)km_mailbox_repl_block(sh->worker, o->shard, o->tag, 0);
}

/* The entry of shard's stream to run inc of node, replica worker rworker: the one from
 * worker w (exact), else one from another worker (another != NULL: the shard changed worker
 * here), else NULL. */
static struct rp_out *
out_find(uint64_t shard, const char *node, uint64_t inc, uint16_t rworker, uint16_t w,
	struct rp_out **another)
{
	unsigned int i;

	*another = NULL;
	for (i = 0; i < rp.nb_out; i++) {
		struct rp_out *o = rp.out[i];

		if (o->shard != shard || o->inc != inc || o->rworker != rworker ||
			strcmp(o->node, node) != 0)
			continue;
		if (o->worker == w)
			return o;
		/* The stream the last map wanted (not one stopped before it). */
		if (*another == NULL || atomic_load(&(*another)->stop))
			*another = o;
	}
	return NULL;
}

/* Whether a stream of shard to run inc of node, from any worker to any of its workers,
 * holds its wait (a report may still say caught up); *seq: the report sequence it waits
 * for, 0 (the strongest) if any waits for none. */
static int
out_held(uint64_t shard, const char *node, uint64_t inc, uint64_t *seq)
{
	unsigned int i;
	int held = 0;

	*seq = 0;
	for (i = 0; i < rp.nb_out; i++) {
		const struct rp_out *o = rp.out[i];

		if (o->shard != shard || o->inc != inc || !o->hold || strcmp(o->node, node) != 0)
			continue;
		if (!held || o->hold_seq == 0 || (*seq != 0 && o->hold_seq > *seq))
			*seq = o->hold_seq;
		held = 1;
	}
	return held;
}

/* A replica tag no stream of shard has. */
static uint64_t
tag_free(uint64_t shard)
{
	uint64_t used = 0;
	unsigned int i, b;

	for (i = 0; i < rp.nb_out; i++)
		if (rp.out[i]->shard == shard)
			used |= rp.out[i]->tag;
	for (b = 0; b < 63 && (used & (1ULL << b)); b++)
		;
	return 1ULL << b;
}

/* Control lcore: the streams of shards whose map entry (this map) is this node's. */
static void
outs_apply(const struct km_cmap *m, int self)
{
	unsigned int i, j, k;

	for (i = 0; i < rp.nb_out; i++)
		rp.out[i]->unwanted = 1;
	for (i = 0; i < m->nb_shards; i++) {
		const struct km_cmap_shard *sh = &m->shards[i];

		if (sh->node != self)
			continue;
		for (j = 0; j < sh->nb_replicas; j++) {
			const struct km_cmap_replica *r = &sh->replicas[j];
			const struct km_cmap_node *n = &m->nodes[r->node];
			struct rp_out *was, *o = out_find(sh->id, n->id, n->incarnation, r->worker,
						    sh->worker, &was);

			if (o != NULL) {
				o->unwanted = 0;
				if (o->in_sync != r->in_sync) {
					o->in_sync = r->in_sync;
					if (o->x != NULL)
						km_proc_repl_wait(o->x, o->in_sync || o->hold);
					/* No longer in sync: a failed stream of it blocks
					 * nothing any more (unless a report may still say
					 * caught up). */
					if (!o->in_sync && !o->hold)
						(void)km_mailbox_repl_block(
							o->worker, o->shard, o->tag, 0);
				}
				continue;
			}
			if (rp.nb_out == RP_OUT_MAX)
				continue;
			o = calloc(1, sizeof(*o));
			if (o == NULL)
				continue;
			o->shard = sh->id;
			o->worker = sh->worker;
			snprintf(o->node, sizeof(o->node), "%s", n->id);
			o->inc = n->incarnation;
			o->rworker = r->worker;
			o->epoch = m->epoch;
			o->in_sync = r->in_sync;
			o->fd = -1;
			o->tag = tag_free(sh->id);
			/* A report of another stream to that run may still say caught up (it
			 * names no worker): the new one waits as that one did. */
			o->hold = out_held(sh->id, n->id, n->incarnation, &o->hold_seq);
			if (was != NULL) {
				/* The same replica, from the shard's new worker: the worker
				 * holds its tag blocked (carried with the shard) until this
				 * stream starts, and a report may still say caught up. */
				o->tag = was->tag;
			}
			if (out_start(o) < 0) {
				/* Started again by the tick. */
				atomic_store(&o->state, RP_BROKEN);
				snprintf(o->why, sizeof(o->why), "not started on worker %u",
					o->worker);
			}
			pthread_mutex_lock(&rp.mu);
			rp.out[rp.nb_out++] = o;
			pthread_mutex_unlock(&rp.mu);
		}
	}
	/* Streams the map no longer has: stopped (their entries go at the tick). */
	for (k = 0; k < rp.nb_out; k++)
		if (rp.out[k]->unwanted)
			atomic_store(&rp.out[k]->stop, 1);
}

/* Control lcore: start dialers, restart broken streams, free the unwanted. */
static void
outs_tick(void)
{
	uint64_t now = rte_get_timer_cycles();
	unsigned int i;

	for (i = 0; i < rp.nb_out;) {
		struct rp_out *o = rp.out[i];
		int st = atomic_load(&o->state);

		if (o->unwanted && st != RP_DIALING && st != RP_RUN) {
			if (o->dialer_live) {
				pthread_join(o->dialer, NULL);
				o->dialer_live = 0;
			}
			out_unexport(o);
			pthread_mutex_lock(&rp.mu);
			rp.out[i] = rp.out[--rp.nb_out];
			pthread_mutex_unlock(&rp.mu);
			free(o);
			continue;
		}
		if (o->unwanted) {
			i++;
			continue;
		}
		if (st == RP_DEAD) {
			/* Stopped, then wanted again by a map (its export still waits for
			 * it): started again below. */
			atomic_store(&o->state, RP_BROKEN);
			st = RP_BROKEN;
		}
		if (st == RP_BROKEN && o->retry_tsc == 0) {
			KM_LOG(WARNING, "cluster: shard %" PRIu64 ": stream to node %s broken: %s",
				o->shard, o->node, o->why);
			o->retry_tsc = now + ms_tsc(RP_RETRY_MS);
		}
		if (o->x != NULL) {
			struct km_proc_repl_status xs;

			km_proc_repl_status(o->x, &xs);
			if (xs.caught_up && !xs.ended) {
				o->hold = 1;
				o->hold_seq = 0;
			} else if (o->hold && o->hold_seq != 0 &&
				   atomic_load(&rp.put_seq) >= o->hold_seq) {
				/* etcd says it is not caught up: the placer can no longer mark
				 * it in sync from an older report. */
				o->hold = 0;
				o->hold_seq = 0;
				km_proc_repl_wait(o->x, o->in_sync);
			}
		}
		if (st == RP_BROKEN && now >= o->retry_tsc) {
			if (o->dialer_live) {
				pthread_join(o->dialer, NULL);
				o->dialer_live = 0;
			}
			if (out_start(o) < 0)
				o->retry_tsc = now + ms_tsc(RP_RETRY_MS);
			else
				o->retry_tsc = 0;
			st = atomic_load(&o->state);
		}
		if (st == RP_NEW) {
			if (o->dialer_live) {
				pthread_join(o->dialer, NULL);
				o->dialer_live = 0;
			}
			atomic_store(&o->state, RP_DIALING);
			if (pthread_create(&o->dialer, NULL, dialer, o) == 0) {
				o->dialer_live = 1;
			} else {
				atomic_store(&o->state, RP_BROKEN);
				snprintf(o->why, sizeof(o->why), "no thread to dial");
			}
		}
		i++;
	}
}

static const char *
out_state_name(const struct rp_out *o)
{
	struct km_proc_repl_status st;
	int s = atomic_load(&o->state);

	if (s == RP_BROKEN || s == RP_DEAD || o->x == NULL)
		return "broken";
	km_proc_repl_status(o->x, &st);
	if (st.ended)
		return "broken";
	return st.caught_up ? "caught_up" : "copy";
}

/* Report seq says the replicas held for that are not caught up (any more). */
static void
holds_reported(uint64_t seq)
{
	unsigned int i;

	for (i = 0; i < rp.nb_out; i++) {
		struct rp_out *o = rp.out[i];

		if (o->hold && o->hold_seq == 0 && strcmp(out_state_name(o), "caught_up") != 0)
			o->hold_seq = seq;
	}
}

/* The report P/repl/<node>, built when it changed (or every 10 s: a lost put heals). */
static void
report_tick(uint32_t epoch)
{
	uint64_t now = rte_get_timer_cycles();
	json_t *o, *a;
	unsigned int i;
	char *s = NULL;

	if (now - rp.built_tsc < ms_tsc(100))
		return; /* a change is reported within 100 ms */
	rp.built_tsc = now;
	o = json_object();
	a = json_array();
	if (o == NULL || a == NULL)
		goto out;
	for (i = 0; i < rp.nb_out; i++) {
		const struct rp_out *r = rp.out[i];
		json_t *e;

		if (r->unwanted)
			continue;
		e = json_pack("[I, s, I, s]", (json_int_t)r->shard, r->node, (json_int_t)r->inc,
			out_state_name(r));
		if (e != NULL)
			json_array_append_new(a, e);
	}
	json_object_set_new(o, "node", json_string(km_cluster_node_id()));
	json_object_set_new(o, "incarnation", json_integer((json_int_t)km_cluster_incarnation()));
	json_object_set_new(o, "epoch", json_integer(epoch));
	json_object_set(o, "shards", a);
	s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	if (s == NULL)
		goto out;
	if (rp.reported != NULL && strcmp(s, rp.reported) == 0 &&
		now - rp.report_tsc < ms_tsc(10000)) {
		free(s);
		holds_reported(rp.last_seq);
		goto out;
	}
	free(rp.reported);
	rp.reported = strdup(s);
	rp.report_tsc = now;
	pthread_mutex_lock(&rp.mu);
	free(rp.report);
	rp.report = s;
	rp.report_seq = ++rp.last_seq;
	pthread_mutex_unlock(&rp.mu);
	holds_reported(rp.last_seq);
out:
	json_decref(a);
	json_decref(o);
}

char *
km_cluster_repl_report_take(uint64_t *seq)
{
	char *s;

	pthread_mutex_lock(&rp.mu);
	s = rp.report;
	*seq = rp.report_seq;
	rp.report = NULL;
	pthread_mutex_unlock(&rp.mu);
	return s;
}

void
km_cluster_repl_report_put(uint64_t seq)
{
	uint64_t cur = atomic_load(&rp.put_seq);

	while (cur < seq && !atomic_compare_exchange_weak(&rp.put_seq, &cur, seq))
		;
}

/* ---- replica ------------------------------------------------------------------------- */

static struct rp_in *
in_find(uint64_t shard)
{
	unsigned int i;

	for (i = 0; i < rp.nb_in; i++)
		if (rp.in[i]->shard == shard)
			return rp.in[i];
	return NULL;
}

static void
in_free(struct rp_in *in)
{
	km_proc_replica_free(in->copy, 0);
	free(in);
}

/*
 * Stop in's stream (mu held; released while waiting): its receiver is asked to stop and
 * waited for (it stops at its next record: its socket is shut down), and receivers
 * waiting to claim it give up. None claims it again meanwhile: a claim waits for the
 * receiver before it too.
 */
static void
in_stop(struct rp_in *in)
{
	atomic_fetch_add(&in->gen, 1);
	if (in->active && in->fd >= 0)
		shutdown(in->fd, SHUT_RDWR);
	while (in->active) {
		pthread_mutex_unlock(&rp.mu);
		usleep(200);
		pthread_mutex_lock(&rp.mu);
	}
}

/* in_stop(), then in leaves rp.in (mu held): freed now, or by the last receiver holding
 * it. */
static void
in_retire(struct rp_in *in)
{
	unsigned int i;

	in->dead = 1;
	in_stop(in);
	for (i = 0; i < rp.nb_in; i++)
		if (rp.in[i] == in) {
			rp.in[i] = rp.in[--rp.nb_in];
			break;
		}
	if (in->refs == 0)
		in_free(in);
}

/* A receiver lets go of in (mu held). */
static void
in_unref(struct rp_in *in)
{
	if (--in->refs == 0 && in->dead)
		in_free(in);
}

/* What a stream's header says. */
struct rp_hello {
	uint64_t shard, pinc, rinc;
	uint32_t epoch;
	uint32_t map_epoch; /* of the map it was checked against */
	uint16_t rworker;
	char primary[KM_CLUSTER_ID_MAX + 1];
	char why[160];
	int err;
};

/* Control lcore (km_ctl_call): whether this node takes the stream the header describes. */
static int
hello_check(void *arg)
{
	struct rp_hello *h = arg;
	const struct km_cmap *m = km_cluster_cmap();
	const struct km_cmap_shard *sh;
	int self, p;
	unsigned int j;

	h->err = EAGAIN;
	if (m == NULL) {
		snprintf(h->why, sizeof(h->why), "no map applied here yet");
		return 0;
	}
	h->map_epoch = m->epoch;
	if (h->rinc != km_cluster_incarnation()) {
		h->err = ESTALE;
		snprintf(h->why, sizeof(h->why), "for incarnation %" PRIu64 ", this is %" PRIu64,
			h->rinc, km_cluster_incarnation());
		return 0;
	}
	if (m->epoch < h->epoch) {
		snprintf(h->why, sizeof(h->why), "map epoch %u not applied here yet (%u is)",
			h->epoch, m->epoch);
		return 0;
	}
	self = km_cmap_node_find(m, km_cluster_node_id());
	p = km_cmap_node_find(m, h->primary);
	sh = km_cmap_shard_find(m, h->shard);
	h->err = EPERM;
	if (sh == NULL || self < 0 || p < 0 || sh->node != p ||
		m->nodes[p].incarnation != h->pinc) {
		snprintf(h->why, sizeof(h->why),
			"map epoch %u does not name %s (incarnation %" PRIu64
			") primary of shard %" PRIu64,
			m->epoch, h->primary, h->pinc, h->shard);
		return 0;
	}
	for (j = 0; j < sh->nb_replicas; j++)
		if (sh->replicas[j].node == self && sh->replicas[j].worker == h->rworker)
			break;
	if (j == sh->nb_replicas) {
		snprintf(h->why, sizeof(h->why),
			"map epoch %u does not list this node (worker %u) as a replica of shard "
			"%" PRIu64,
			m->epoch, h->rworker, h->shard);
		return 0;
	}
	h->err = 0;
	return 0;
}

/* The receiver's state of one stream. */
struct rx {
	int fd;
	uint8_t *buf;
	size_t len;
	struct rp_in *in;
	struct km_proc_replica *r; /* the copy being built (in->copy once synced) */
	int synced;
	uint64_t gen; /* of its claim of in */
};

/* Apply the records buffered (whole ones). @return 0 or -errno. */
static int
rx_apply(struct rx *x)
{
	int synced_now;
	long n = km_proc_replica_apply(x->r, x->buf, x->len, RP_BUF, &synced_now);

	if (n < 0)
		return (int)n;
	if (synced_now) {
		/* The walk is over: this copy is complete and replaces the previous one, whose
		 * files go. It stays staged (with the log store: a file of its own, never the
		 * shard's name, which is a primary's) until it is promoted. */
		struct km_proc_replica *old;

		pthread_mutex_lock(&rp.mu);
		if (atomic_load(&x->in->gen) != x->gen) {
			/* Claimed by a newer stream, or retired: this copy is not the one. */
			pthread_mutex_unlock(&rp.mu);
			return -ECANCELED;
		}
		old = x->in->copy;
		x->in->copy = x->r;
		x->in->promote_failed = 0; /* a new copy */
		pthread_mutex_unlock(&rp.mu);
		km_proc_replica_free(old, 0);
		x->synced = 1;
	}
	if ((size_t)n < x->len)
		memmove(x->buf, x->buf + n, x->len - (size_t)n);
	x->len -= (size_t)n;
	return 0;
}

/* Acknowledge what was applied (made durable first). @return 0 or -errno. */
static int
rx_ack(struct rx *x)
{
	struct km_store *s = km_proc_replica_store(x->r);
	uint8_t a[RP_ACK_LEN];
	int rc;

	if (!x->synced)
		return 0; /* a copy in progress vouches for nothing */
	if (s->ops->sync != NULL && (rc = s->ops->sync(s)) < 0)
		return rc;
	km_be_put(a, km_proc_replica_applied(x->r), 8);
	a[8] = 1;
	if (send(x->fd, a, sizeof(a), MSG_NOSIGNAL) != (ssize_t)sizeof(a))
		return -errno;
	return 0;
}

void
km_cluster_repl_receive(int fd, const uint8_t *h, const uint8_t *more, size_t nmore)
{
	struct rp_hello hello = {0};
	uint8_t ext[17 + KM_CLUSTER_ID_MAX];
	struct rx r = {.fd = fd};
	struct km_store *st = NULL;
	struct rp_in *in;
	size_t got, idlen;
	char msg[200];
	int rc;

	if (km_be_get(h + 4, 2) != RP_VERSION) {
		km_cluster_side_reply(fd, EPROTO, "not a keymap replication stream of version 1");
		return;
	}
	hello.rworker = (uint16_t)km_be_get(h + 6, 2);
	hello.shard = km_be_get(h + 8, 8);
	hello.epoch = (uint32_t)km_be_get(h + 16, 4);
	/* The extension: what came with the header, then the socket. */
	got = RTE_MIN(nmore, sizeof(ext));
	memcpy(ext, more, got);
	if (got < 17 && read_full(fd, ext + got, 17 - got) < 0)
		return;
	got = RTE_MAX(got, (size_t)17);
	idlen = ext[16];
	if (idlen == 0 || idlen > KM_CLUSTER_ID_MAX) {
		km_cluster_side_reply(fd, EPROTO, "bad primary id");
		return;
	}
	if (got < 17 + idlen && read_full(fd, ext + got, 17 + idlen - got) < 0)
		return;
	hello.pinc = km_be_get(ext, 8);
	hello.rinc = km_be_get(ext + 8, 8);
	memcpy(hello.primary, ext + 17, idlen);
	hello.primary[idlen] = '\0';
	if (hello.rworker >= km_dp.nb_workers || hello.shard == 0) {
		km_cluster_side_reply(fd, EINVAL, "worker or shard out of range");
		return;
	}
	rc = km_ctl_call(hello_check, &hello, 2000);
	if (rc != 0 || hello.err != 0) {
		atomic_fetch_add_explicit(&rp.refused_in, 1, memory_order_relaxed);
		km_cluster_side_reply(fd, rc != 0 ? EAGAIN : hello.err,
			rc != 0 ? "cannot be checked now" : hello.why);
		return;
	}
	r.buf = malloc(RP_BUF);
	if (r.buf == NULL) {
		km_cluster_side_reply(fd, ENOMEM, "out of memory");
		return;
	}
	/*
	 * Claim the shard's entry, under the map the header was checked against (a map
	 * applied since may name another primary): a stream received before is cut and
	 * waited for (its complete copy stays until this one has one); a newer claim wins.
	 */
	pthread_mutex_lock(&rp.mu);
	if (rp.in_epoch != hello.map_epoch) {
		pthread_mutex_unlock(&rp.mu);
		atomic_fetch_add_explicit(&rp.refused_in, 1, memory_order_relaxed);
		km_cluster_side_reply(fd, EAGAIN, "the map changed while checking: try again");
		free(r.buf);
		return;
	}
	in = in_find(hello.shard);
	if (in == NULL && rp.nb_in < RP_IN_MAX && (in = calloc(1, sizeof(*in))) != NULL) {
		in->shard = hello.shard;
		in->fd = -1;
		rp.in[rp.nb_in++] = in;
	}
	if (in != NULL) {
		in->refs++;
		r.gen = atomic_fetch_add(&in->gen, 1) + 1;
		if (in->active && in->fd >= 0)
			shutdown(in->fd, SHUT_RDWR);
		while (in->active && atomic_load(&in->gen) == r.gen) {
			pthread_mutex_unlock(&rp.mu);
			usleep(200);
			pthread_mutex_lock(&rp.mu);
		}
		if (atomic_load(&in->gen) != r.gen) {
			in_unref(in);
			pthread_mutex_unlock(&rp.mu);
			km_cluster_side_reply(fd, EAGAIN, "a newer stream of the shard came");
			free(r.buf);
			return;
		}
		/* Another primary, or another run of it: its complete copy may hold writes
		 * this primary never had; it stays the failover copy until this stream's is
		 * complete. */
		snprintf(in->primary, sizeof(in->primary), "%s", hello.primary);
		in->pinc = hello.pinc;
		in->rworker = hello.rworker;
		in->fd = fd;
		in->active = 1;
		r.in = in;
	}
	pthread_mutex_unlock(&rp.mu);
	if (in == NULL) {
		km_cluster_side_reply(fd, ENOMEM, "no room for another replica here");
		free(r.buf);
		return;
	}
	rc = km_proc_store_stage(
		km_dp.workers[hello.rworker].proc, hello.shard, 0, KM_TIER_HOT, &st);
	if (rc == 0) {
		rc = km_proc_replica_new(st, RP_DEDUP, &r.r);
		if (rc < 0)
			km_store_discard(st);
	}
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "cannot create shard %" PRIu64 ": %s", hello.shard,
			strerror(-rc));
		km_cluster_side_reply(fd, -rc, msg);
		goto out;
	}
	km_cluster_side_reply(fd, 0, "go");
	atomic_fetch_add_explicit(&rp.streams_in, 1, memory_order_relaxed);
	KM_LOG(INFO, "cluster: shard %" PRIu64 ": replica of node %s's, receiving", hello.shard,
		hello.primary);
	rc = 0;
	while (rc == 0 && atomic_load(&in->gen) == r.gen && !atomic_load(&rp.stop)) {
		ssize_t n = recv(fd, r.buf + r.len, RP_BUF - r.len, MSG_DONTWAIT);

		if (n > 0) {
			r.len += (size_t)n;
			rc = rx_apply(&r);
			continue;
		}
		if (n == 0) {
			rc = -ECONNRESET;
			break;
		}
		if (errno != EAGAIN && errno != EINTR) {
			rc = -errno;
			break;
		}
		/* Everything received is applied: acknowledged, then wait for more. */
		rc = rx_ack(&r);
		if (rc == 0) {
			struct pollfd p = {.fd = fd, .events = POLLIN};

			if (poll(&p, 1, 200) < 0 && errno != EINTR)
				rc = -errno;
		}
	}
	KM_LOG(INFO,
		"cluster: shard %" PRIu64 ": replication from node %s ended at write %" PRIu64
		": %s",
		hello.shard, hello.primary, r.r != NULL ? km_proc_replica_applied(r.r) : 0,
		atomic_load(&in->gen) != r.gen ? "cut" : strerror(-rc));
out:
	pthread_mutex_lock(&rp.mu);
	if (!r.synced)
		km_proc_replica_free(r.r, 0); /* an incomplete copy */
	in->active = 0;
	in->fd = -1;
	in_unref(in);
	pthread_mutex_unlock(&rp.mu);
	free(r.buf);
}

/* Control lcore, mu held: the complete copy of in becomes the shard's store here, with its
 * at-most-once entries. Not before its files are committed (they take the shard's name with
 * the log store, so that a restart of this node finds the shard's data as a primary's):
 * a copy served from staged files would be discarded by a restart with acknowledged writes.
 * 0, or the commit's error (in keeps its copy, never served: promote_failed). */
static int
in_promote(struct rp_in *in, uint32_t epoch)
{
	struct km_proc_dedup *dd = km_proc_replica_dedup(in->copy);
	struct km_store *st = km_proc_replica_store(in->copy);
	struct timespec now;
	int rc;

	if (st->ops->commit != NULL && (rc = st->ops->commit(st)) < 0) {
		KM_LOG(CRIT,
			"cluster: shard %" PRIu64 ": replica not promoted, its files not committed "
			"(%s): the shard stays unavailable here until a map gives it elsewhere or "
			"a stream brings a new copy",
			in->shard, strerror(-rc));
		in->promote_failed = 1;
		return rc;
	}
	in->promote_failed = 0;
	clock_gettime(CLOCK_REALTIME, &now);
	km_store_version_floor(
		st, RTE_MAX(km_proc_replica_vmax(in->copy),
			    (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec));
	KM_LOG(NOTICE,
		"cluster map epoch %u: shard %" PRIu64 " promoted here (replica of node %s, last "
		"write %" PRIu64 ")",
		epoch, in->shard, in->primary, km_proc_replica_applied(in->copy));
	km_proc_replica_free(in->copy, 1);
	in->copy = NULL;
	km_cluster_incoming_return(in->shard, st, dd);
	atomic_fetch_add_explicit(&rp.promoted, 1, memory_order_relaxed);
	return 0;
}

/* Control lcore: replicas the map (m, this node at index self) no longer has here, or
 * whose primary changed, stop; shards it gives to this node that are replicated here are
 * promoted (handed to the application as received stores). */
static void
ins_apply(const struct km_cmap *m, int self)
{
	unsigned int i, j;

	pthread_mutex_lock(&rp.mu);
	rp.in_epoch = m->epoch; /* a stream checked against an older map is refused */
	for (i = 0; i < rp.nb_in;) {
		struct rp_in *in = rp.in[i];
		const struct km_cmap_shard *sh = km_cmap_shard_find(m, in->shard);
		int listed = 0, same = 0;

		if (sh != NULL) {
			for (j = 0; j < sh->nb_replicas; j++)
				listed |= sh->replicas[j].node == self;
			same = strcmp(m->nodes[sh->node].id, in->primary) == 0 &&
			       m->nodes[sh->node].incarnation == in->pinc;
		}
		if (sh != NULL && listed && same) {
			i++;
			continue;
		}
		in_stop(in);
		/* A cross-node move's copy (complete at its detach) wins over the replica's. */
		if (sh != NULL && sh->node == self && in->copy != NULL &&
			!km_cluster_incoming_has(in->shard)) {
			/* Its commit failed: kept, never served. */
			if (in->promote_failed || in_promote(in, m->epoch) < 0) {
				i++;
				continue;
			}
		} else if (sh != NULL && listed) {
			/* Another primary: its stream comes; the copy stays until then. */
			i++;
			continue;
		}
		in_retire(in); /* rp.in[i] is the next one now */
	}
	pthread_mutex_unlock(&rp.mu);
}

/* ---- wiring ------------------------------------------------------------------------- */

void
km_cluster_repl_map_pre(const struct km_cmap *m, int self)
{
	ins_apply(m, self);
}

void
km_cluster_repl_map_post(const struct km_cmap *m, int self)
{
	outs_apply(m, self);
}

void
km_cluster_repl_tick(uint32_t epoch)
{
	outs_tick();
	report_tick(epoch);
}

void
km_cluster_proc_setup(struct km_proc *p)
{
	if (!km_cluster_on())
		return;
	km_proc_repl_sync(p, rp.sync);
	km_proc_repl_lease(p, &km_cluster_lease_ns);
}

int
km_cluster_repl_start(int sync)
{
	int rc;

	rp.sync = sync;
	rc = pthread_create(&rp.pump, NULL, pump, NULL);
	if (rc != 0)
		return -rc;
	rp.pump_started = 1;
	return 0;
}

void
km_cluster_repl_stop(void)
{
	unsigned int i;

	atomic_store(&rp.stop, 1);
	if (rp.pump_started)
		pthread_join(rp.pump, NULL);
	rp.pump_started = 0;
	pthread_mutex_lock(&rp.mu);
	while (rp.nb_in != 0)
		in_retire(rp.in[0]);
	pthread_mutex_unlock(&rp.mu);
	for (i = 0; i < rp.nb_out; i++) {
		struct rp_out *o = rp.out[i];

		atomic_store(&o->stop, 1);
		if (o->dialer_live)
			pthread_join(o->dialer, NULL);
		if (o->fd >= 0)
			close(o->fd);
		if (o->c != NULL)
			km_proc_export_give(o->x, o->c);
		km_proc_export_put(o->x); /* a worker still on it holds its own reference */
		free(o);
	}
	rp.nb_out = 0;
	free(rp.report);
	free(rp.reported);
	rp.report = rp.reported = NULL;
}

unsigned int
km_cluster_repl_list(struct km_cluster_repl_info *out, unsigned int max)
{
	unsigned int i, n = 0;

	pthread_mutex_lock(&rp.mu);
	for (i = 0; i < rp.nb_out && n < max; i++) {
		const struct rp_out *o = rp.out[i];
		struct km_proc_repl_status st = {0};

		if (o->x != NULL)
			km_proc_repl_status(o->x, &st);
		out[n] = (struct km_cluster_repl_info){.shard = o->shard,
			.out = 1,
			.in_sync = o->in_sync,
			.rseq = st.rseq,
			.acked = st.acked,
			.starts = o->starts};
		snprintf(out[n].node, sizeof(out[n].node), "%s", o->node);
		snprintf(out[n].state, sizeof(out[n].state), "%s", out_state_name(o));
		snprintf(out[n].why, sizeof(out[n].why), "%s", o->why);
		n++;
	}
	for (i = 0; i < rp.nb_in && n < max; i++) {
		const struct rp_in *in = rp.in[i];

		out[n] = (struct km_cluster_repl_info){.shard = in->shard,
			.out = 0,
			.in_sync = in->copy != NULL,
			.acked = in->copy != NULL ? km_proc_replica_applied(in->copy) : 0};
		snprintf(out[n].node, sizeof(out[n].node), "%s", in->primary);
		snprintf(out[n].state, sizeof(out[n].state), "%s",
			in->promote_failed ? "promote_failed"
			: in->active       ? (in->copy != NULL ? "receiving" : "copying")
					   : "idle");
		n++;
	}
	pthread_mutex_unlock(&rp.mu);
	return n;
}

void
km_cluster_repl_counts(struct km_cluster_repl_counts *c)
{
	unsigned int i;

	pthread_mutex_lock(&rp.mu);
	c->out = rp.nb_out;
	c->out_in_sync = 0;
	for (i = 0; i < rp.nb_out; i++)
		c->out_in_sync += rp.out[i]->in_sync;
	c->in = rp.nb_in;
	pthread_mutex_unlock(&rp.mu);
	c->promoted = atomic_load_explicit(&rp.promoted, memory_order_relaxed);
	c->streams_in = atomic_load_explicit(&rp.streams_in, memory_order_relaxed);
	c->refused_in = atomic_load_explicit(&rp.refused_in, memory_order_relaxed);
	c->broken_out = atomic_load_explicit(&rp.broken_out, memory_order_relaxed);
}

int
km_cluster_repl_tel(const char *cmd, const char *params, struct rte_tel_data *d)
{
	struct km_cluster_repl_info *in = calloc(RP_OUT_MAX + RP_IN_MAX, sizeof(*in));
	struct rte_tel_data *out, *rin;
	unsigned int n, i;

	(void)cmd;
	(void)params;
	rte_tel_data_start_dict(d);
	if (in == NULL) {
		rte_tel_data_add_dict_string(d, "error", "out of memory");
		return 0;
	}
	n = km_cluster_repl_list(in, RP_OUT_MAX + RP_IN_MAX);
	out = rte_tel_data_alloc();
	rin = rte_tel_data_alloc();
	if (out == NULL || rin == NULL) {
		rte_tel_data_free(out);
		rte_tel_data_free(rin);
		free(in);
		rte_tel_data_add_dict_string(d, "error", "out of memory");
		return 0;
	}
	/* Rows as strings: telemetry dicts do not nest deeper than one container. */
	rte_tel_data_start_array(out, RTE_TEL_STRING_VAL);
	rte_tel_data_start_array(rin, RTE_TEL_STRING_VAL);
	for (i = 0; i < n; i++) {
		char row[RTE_TEL_MAX_STRING_LEN];

		if (in[i].out)
			snprintf(row, sizeof(row),
				"%" PRIu64 " %s %s in_sync=%u rseq=%" PRIu64 " acked=%" PRIu64
				" lag=%" PRIu64 " starts=%" PRIu64 "%s%s",
				in[i].shard, in[i].node, in[i].state, in[i].in_sync, in[i].rseq,
				in[i].acked,
				in[i].rseq > in[i].acked ? in[i].rseq - in[i].acked : 0,
				in[i].starts, in[i].why[0] != '\0' ? " why=" : "", in[i].why);
		else
			snprintf(row, sizeof(row), "%" PRIu64 " %s %s complete=%u applied=%" PRIu64,
				in[i].shard, in[i].node, in[i].state, in[i].in_sync, in[i].acked);
		rte_tel_data_add_array_string(in[i].out ? out : rin, row);
	}
	rte_tel_data_add_dict_string(d, "mode", rp.sync ? "sync" : "async");
	rte_tel_data_add_dict_container(d, "out", out, 0);
	rte_tel_data_add_dict_container(d, "in", rin, 0);
	free(in);
	return 0;
}
