/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Cross-node shard moves (docs/cluster.md section 4), both ends.
 *
 * Source (node A), when the placer puts P/moves/<S> with from = A:
 *   the control lcore detaches S from its worker (S answers BUSY from then on) and parks
 *   the store; a sender thread streams its entries to B's side channel (TCP), waits for
 *   B's confirmation and sets the move's state to "ready" (compare-and-swap on the move's
 *   revision). The placer then publishes the map with S on B; A's control lcore drops the
 *   parked store when it applies that map. A move that fails (B unreachable, refused)
 *   gets state "failed" and S is attached again; so is S when the move key disappears
 *   while the map still gives S to A (the placer gave up).
 * Target (node B): a listener thread accepts the stream, loads it into a new store
 *   (the target worker's driver and parameters), commits it and keeps it as incoming; the
 *   control lcore attaches it when it applies the map that gives S to B.
 *
 * The pause clients see for S: from A's detach to A's and B's application of the new map
 * (writes and reads of S answer BUSY at A meanwhile; libkeymap retries BUSY).
 *
 * Stream (all integers big-endian):
 *   header: "KMMV" u16 version (1) u16 to_worker u64 shard id u32 epoch u32 reserved
 *   entries: u16 key length (1..KM_KEY_MAX), u32 value length, u64 version, key, value
 *   trailer: u16 0 (no key), u64 entries, u64 XXH3-64 of every entry's bytes
 *   reply (B to A): u32 status (0 = stored, else errno), u16 length, that many bytes of
 *   message
 */

#include <arpa/inet.h>
#include <errno.h>
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
#include <xxhash.h>

#include <km_cluster.h>
#include <km_etcd.h>
#include <km_proc.h>
#include <km_proto.h>

#include "cluster_priv.h"
#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "mailbox.h"

#define MV_MAGIC    "KMMV"
#define MV_VERSION  1
#define MV_HDR_LEN  24
#define MV_IO_MS    10000 /* a stalled peer: the move fails */
#define MV_INCOMING 64    /* incoming stores kept at once */
#define MV_PARKED   64    /* outgoing moves at once */
#define MV_BUF      65536

/* ---- buffered socket I/O -------------------------------------------------------------- */

struct mv_io {
	int fd;
	uint8_t buf[MV_BUF];
	size_t len, pos;
	XXH3_state_t *h;
	int err; /* first error, -errno */
};

static int
io_wait(int fd, short ev)
{
	struct pollfd p = {.fd = fd, .events = ev};
	int rc = poll(&p, 1, MV_IO_MS);

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
			io->err = io_wait(io->fd, POLLOUT);
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
				io->err = io_wait(io->fd, POLLIN);
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

static void
put_be(uint8_t *b, uint64_t v, unsigned int n)
{
	while (n-- > 0) {
		b[n] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t
get_be(const uint8_t *b, unsigned int n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = v << 8 | *b++;
	return v;
}

/* ---- target: incoming stores ------------------------------------------------------- */

static struct {
	pthread_mutex_t mu;
	struct {
		uint64_t id;
		struct km_store *s;
		uint64_t keys;
		time_t at;
	} in[MV_INCOMING];
	pthread_t thr;
	int thr_started;
	int lfd;
	atomic_int stop;
	/* Source side (control lcore, and the senders through mu). */
	struct mv_out {
		uint64_t id;
		uint16_t worker; /* where it was, where it goes back on failure */
		struct km_store *s;
		struct km_proc_dedup *dd;
		int64_t rev; /* the move key's revision it answers */
		char to[KM_CLUSTER_ID_MAX + 1];
		uint32_t to_ip;
		uint16_t to_worker;
		pthread_t thr;
		atomic_int state; /* MV_SENDING, MV_SENT (B has it, state ready), MV_FAILED */
		uint64_t keys;
		uint64_t t0; /* tsc at the detach */
		int gone;    /* control lcore: the placer deleted the move */
	} out[MV_PARKED];
	uint64_t moved_out, moved_in, failed;
} mv = {.mu = PTHREAD_MUTEX_INITIALIZER, .lfd = -1};

enum { MV_FREE = 0, MV_SENDING, MV_SENT, MV_FAILED };

static void
incoming_put(uint64_t id, struct km_store *s, uint64_t keys)
{
	struct km_store *old = NULL;
	unsigned int i, slot = MV_INCOMING;

	pthread_mutex_lock(&mv.mu);
	for (i = 0; i < MV_INCOMING; i++) {
		if (mv.in[i].s != NULL && mv.in[i].id == id) {
			old = mv.in[i].s;
			slot = i;
			break;
		}
		if (mv.in[i].s == NULL && slot == MV_INCOMING)
			slot = i;
	}
	if (slot == MV_INCOMING) {
		/* Full: the oldest goes. */
		slot = 0;
		for (i = 1; i < MV_INCOMING; i++)
			if (mv.in[i].at < mv.in[slot].at)
				slot = i;
		old = mv.in[slot].s;
	}
	mv.in[slot].id = id;
	mv.in[slot].s = s;
	mv.in[slot].keys = keys;
	mv.in[slot].at = time(NULL);
	pthread_mutex_unlock(&mv.mu);
	/* Closed, not discarded: its files' names are the new copy's now (its commit renamed
	 * them into place). */
	if (old != NULL)
		km_store_destroy(old);
}

void
km_cluster_incoming_return(uint64_t id, struct km_store *s)
{
	incoming_put(id, s, 0);
}

struct km_store *
km_cluster_incoming_take(uint64_t id)
{
	struct km_store *s = NULL;
	unsigned int i;

	pthread_mutex_lock(&mv.mu);
	for (i = 0; i < MV_INCOMING; i++)
		if (mv.in[i].s != NULL && mv.in[i].id == id) {
			s = mv.in[i].s;
			mv.in[i].s = NULL;
			mv.moved_in++;
			break;
		}
	pthread_mutex_unlock(&mv.mu);
	return s;
}

static void
reply(int fd, int status, const char *msg)
{
	uint8_t b[6 + 200];
	size_t n = strlen(msg) < 200 ? strlen(msg) : 200;

	put_be(b, (uint32_t)status, 4);
	put_be(b + 4, n, 2);
	memcpy(b + 6, msg, n);
	(void)!send(fd, b, 6 + n, MSG_NOSIGNAL);
}

/* One incoming stream. */
static void
receive(int fd)
{
	struct mv_io *io = calloc(1, sizeof(*io));
	uint8_t h[MV_HDR_LEN], e[14], key[KM_KEY_MAX], *val = NULL;
	uint64_t id, count = 0, vmax = 0, sum;
	struct km_store *s = NULL;
	char msg[200] = "";
	uint16_t to;
	int rc;

	if (io == NULL || (io->h = XXH3_createState()) == NULL ||
		(val = malloc(KM_VALUE_MAX_LARGE)) == NULL) {
		reply(fd, ENOMEM, "out of memory");
		goto out;
	}
	XXH3_64bits_reset(io->h);
	io->fd = fd;
	if (io_get(io, h, sizeof(h), 0) < 0 || memcmp(h, MV_MAGIC, 4) != 0 ||
		get_be(h + 4, 2) != MV_VERSION) {
		reply(fd, EPROTO, "not a keymap move stream of version 1");
		goto out;
	}
	to = (uint16_t)get_be(h + 6, 2);
	id = get_be(h + 8, 8);
	if (!km_cluster_serving()) {
		reply(fd, EAGAIN, "this node is still starting: no worker to build the shard for");
		goto out;
	}
	if (to >= km_dp.nb_workers || id == 0) {
		snprintf(msg, sizeof(msg), "shard %" PRIu64 " for worker %u: this node has %u", id,
			to, km_dp.nb_workers);
		reply(fd, EINVAL, msg);
		goto out;
	}
	rc = km_proc_store_stage(km_dp.workers[to].proc, id, 0, KM_TIER_HOT, &s);
	if (rc < 0) {
		snprintf(
			msg, sizeof(msg), "cannot create shard %" PRIu64 ": %s", id, strerror(-rc));
		reply(fd, -rc, msg);
		goto out;
	}
	for (;;) {
		struct km_key k;
		uint32_t klen, vlen;
		uint64_t v;

		if (io_get(io, e, 2, 0) < 0)
			break;
		klen = (uint32_t)get_be(e, 2);
		if (klen == 0)
			break;
		XXH3_64bits_update(io->h, e, 2);
		if (klen > KM_KEY_MAX || io_get(io, e + 2, 12, 1) < 0) {
			io->err = io->err != 0 ? io->err : -EPROTO;
			break;
		}
		vlen = (uint32_t)get_be(e + 2, 4);
		v = get_be(e + 6, 8);
		if (vlen > KM_VALUE_MAX_LARGE || io_get(io, key, klen, 1) < 0 ||
			io_get(io, val, vlen, 1) < 0) {
			io->err = io->err != 0 ? io->err : -EPROTO;
			break;
		}
		k = (struct km_key){
			.data = key, .len = (uint16_t)klen, .hash = km_key_hash(key, klen)};
		rc = km_store_load(s, &k, val, vlen, v);
		if (rc < 0) {
			io->err = rc;
			break;
		}
		vmax = RTE_MAX(vmax, v);
		count++;
	}
	sum = XXH3_64bits_digest(io->h);
	if (io->err == 0 && io_get(io, e, 16, 0) == 0 &&
		(get_be(e, 8) != count || get_be(e + 8, 8) != sum))
		io->err = -EBADMSG;
	if (io->err != 0) {
		snprintf(msg, sizeof(msg),
			"shard %" PRIu64 ": stream broken after %" PRIu64 " entries: %s", id, count,
			strerror(-io->err));
		reply(fd, -io->err, msg);
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
		reply(fd, -rc, msg);
		goto out;
	}
	incoming_put(id, s, count);
	s = NULL;
	KM_LOG(NOTICE,
		"cluster: shard %" PRIu64 " received, %" PRIu64 " entries: waiting for its map", id,
		count);
	reply(fd, 0, "stored");
out:
	if (s != NULL)
		km_store_discard(s);
	if (io != NULL && io->h != NULL)
		XXH3_freeState(io->h);
	free(io);
	free(val);
}

static void *
listener(void *arg)
{
	(void)arg;
	while (!atomic_load(&mv.stop)) {
		struct pollfd p = {.fd = mv.lfd, .events = POLLIN};
		int fd;

		if (poll(&p, 1, 200) <= 0)
			continue;
		fd = accept(mv.lfd, NULL, NULL);
		if (fd < 0)
			continue;
		receive(fd);
		close(fd);
	}
	return NULL;
}

int
km_cluster_side_start(uint32_t ip, uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	int one = 1;

	a.sin_addr.s_addr = htonl(ip);
	mv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (mv.lfd < 0)
		return -errno;
	setsockopt(mv.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
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
			pthread_join(mv.out[i].thr, NULL);
			km_store_destroy(mv.out[i].s);
			km_proc_dedup_free(mv.out[i].dd);
			atomic_store(&mv.out[i].state, MV_FREE);
		}
	for (i = 0; i < MV_INCOMING; i++)
		if (mv.in[i].s != NULL) {
			km_store_destroy(mv.in[i].s);
			mv.in[i].s = NULL;
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

	put_be(e, k->len, 2);
	put_be(e + 2, v->len, 4);
	put_be(e + 6, v->version, 8);
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
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -errno;
	a.sin_addr.s_addr = htonl(ip);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	return fd;
}

/* Stream o's store to B. @return 0, or -errno with the reason in why. */
static int
stream(struct mv_out *o, uint16_t side_port, char *why, size_t whylen)
{
	struct send_ctx c = {0};
	uint8_t h[MV_HDR_LEN] = MV_MAGIC, t[18], r[6];
	char msg[201] = "";
	int fd, rc;

	c.io = calloc(1, sizeof(*c.io));
	if (c.io == NULL || (c.io->h = XXH3_createState()) == NULL) {
		free(c.io);
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	XXH3_64bits_reset(c.io->h);
	fd = dial(o->to_ip, side_port);
	if (fd < 0) {
		snprintf(why, whylen, "cannot reach node %s's side channel (port %u): %s", o->to,
			side_port, strerror(-fd));
		rc = fd;
		goto out;
	}
	c.io->fd = fd;
	put_be(h + 4, MV_VERSION, 2);
	put_be(h + 6, o->to_worker, 2);
	put_be(h + 8, o->id, 8);
	io_put(c.io, h, sizeof(h), 0);
	rc = km_store_walk(o->s, send_one, &c);
	put_be(t, 0, 2);
	put_be(t + 2, c.n, 8);
	put_be(t + 10, XXH3_64bits_digest(c.io->h), 8);
	if (rc == 0)
		io_put(c.io, t, sizeof(t), 0);
	if (rc == 0)
		rc = io_flush(c.io);
	if (rc == 0) {
		c.io->len = c.io->pos = 0;
		rc = io_get(c.io, r, sizeof(r), 0);
	}
	if (rc == 0) {
		size_t n = get_be(r + 4, 2);

		if (n > 200 || io_get(c.io, msg, n, 0) < 0)
			n = 0;
		msg[n] = '\0';
		rc = -(int)get_be(r, 4);
		if (rc != 0)
			snprintf(why, whylen, "node %s refused shard %" PRIu64 ": %s", o->to, o->id,
				msg);
	} else {
		snprintf(why, whylen, "stream of shard %" PRIu64 " to node %s broken: %s", o->id,
			o->to, strerror(-rc));
	}
	o->keys = c.n;
	close(fd);
out:
	XXH3_freeState(c.io->h);
	free(c.io);
	return rc;
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
	val = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (val == NULL)
		return -ENOMEM;
	{
		struct km_etcd_cmp cmp = {.key = key,
			.klen = strlen(key),
			.target = KM_ETCD_MOD,
			.result = KM_ETCD_EQUAL,
			.num = o->rev};
		struct km_etcd_op op = {.type = KM_ETCD_OP_PUT,
			.key = key,
			.klen = strlen(key),
			.value = val,
			.vlen = strlen(val)};

		rc = km_etcd_txn(e, &cmp, 1, &op, 1, NULL, 0, NULL, NULL);
	}
	free(val);
	return rc;
}

/*
 * Whether the move of o is confirmed ready, after an attempt that failed or found the key
 * changed: the key read again, and if it is gone, the map (a completed move deletes its
 * key with the map that gives the shard away). Retried while etcd does not answer, so that
 * the outcome is definite. @return 1 ready or completed, 0 not (the shard comes back).
 */
static int
move_outcome(struct km_etcd *e, const struct mv_out *o)
{
	char key[KM_CLUSTER_MOVE_KEY_MAX];
	int i, rc;

	km_cluster_move_key(key, sizeof(key), o->id);
	for (i = 0; i < 60; i++) {
		struct km_etcd_kvs *r = NULL;
		struct km_cmap *m = NULL;
		const struct km_cmap_shard *sh;
		int ready = 0;

		rc = km_etcd_get(e, key, strlen(key), 0, &r);
		if (rc > 0) {
			json_t *j =
				json_loadb((const char *)r->kv[0].value, r->kv[0].vlen, 0, NULL);
			const char *st = json_string_value(json_object_get(j, "state"));

			ready = st != NULL && strcmp(st, "ready") == 0 && r->kv[0].mod_rev > o->rev;
			json_decref(j);
			km_etcd_kvs_free(r);
			return ready;
		}
		km_etcd_kvs_free(r);
		if (rc == 0) {
			rc = km_cluster_map_read(e, &m);
			if (rc == 0) {
				sh = km_cmap_shard_find(m, o->id);
				ready = sh != NULL && strcmp(m->nodes[sh->node].id, o->to) == 0;
				km_cmap_free(m);
				return ready;
			}
		}
		usleep(500 * 1000);
	}
	return 0;
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
		rc = stream(o, (uint16_t)side, why, sizeof(why));
	}
	if (rc == 0) {
		rc = move_state(e, o, "ready", NULL);
		/* Not set, or not known: what etcd has decides (the write may have landed). */
		if (rc != 1 && move_outcome(e, o))
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
			"cluster: shard %" PRIu64 " sent to node %s (%" PRIu64 " entries): ready",
			o->id, o->to, o->keys);
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

/* The shard goes back to its worker (a failed or abandoned move). */
static void
out_restore(struct mv_out *o, const char *why)
{
	pthread_join(o->thr, NULL);
	if (km_mailbox_attach(o->worker, o->id, o->s, &o->dd, 1) == 0)
		KM_LOG(NOTICE, "cluster: shard %" PRIu64 " serves here again (%s)", o->id, why);
	else
		KM_LOG(CRIT,
			"cluster: shard %" PRIu64 " cannot be attached again: it answers BUSY "
			"until a restart",
			o->id);
	km_proc_dedup_free(o->dd);
	o->dd = NULL;
	o->s = NULL;
	mv.failed++;
	atomic_store(&o->state, MV_FREE);
}

void
km_cluster_move_start(const struct km_cluster_move_req *rq)
{
	struct km_shard_info *in = NULL;
	struct mv_out *o = NULL;
	uint32_t n = 0, i;
	int rc;

	if (out_find(rq->id) != NULL)
		return; /* under way */
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
		.to_ip = rq->to_ip,
		.to_worker = rq->to_worker,
		.t0 = rte_get_timer_cycles()};
	snprintf(o->to, sizeof(o->to), "%s", rq->to);
	free(in);
	/* From here the shard answers BUSY at this node until the map moves it. */
	rc = km_mailbox_detach(o->worker, o->id, &o->s, &o->dd);
	if (rc < 0) {
		KM_LOG(ERR, "cluster: move of shard %" PRIu64 ": worker %u cannot hand it over: %s",
			o->id, o->worker, strerror(-rc));
		return;
	}
	atomic_store(&o->state, MV_SENDING);
	if (pthread_create(&o->thr, NULL, sender, o) != 0) {
		atomic_store(&o->state, MV_FAILED);
		o->thr = pthread_self();
		if (km_mailbox_attach(o->worker, o->id, o->s, &o->dd, 1) == 0)
			o->s = NULL;
		km_proc_dedup_free(o->dd);
		o->dd = NULL;
		atomic_store(&o->state, MV_FREE);
		return;
	}
	KM_LOG(NOTICE, "cluster: shard %" PRIu64 " (worker %u) goes to node %s: sending", o->id,
		o->worker, o->to);
}

void
km_cluster_move_tick(const struct km_shardmap *map, const uint64_t *gone, unsigned int nb_gone)
{
	unsigned int i, k;

	for (i = 0; i < MV_PARKED; i++) {
		struct mv_out *o = &mv.out[i];
		int st = atomic_load(&o->state);
		const struct km_shard *s;

		for (k = 0; st != MV_FREE && k < nb_gone; k++)
			if (gone[k] == o->id)
				o->gone = 1;
		if (st == MV_FREE || st == MV_SENDING)
			continue;
		if (st == MV_FAILED) {
			out_restore(o, "its move failed");
			continue;
		}
		/* Sent: the map that gives it to the target ends it here. */
		s = km_shardmap_find(map, o->id);
		if (s != NULL && km_shard_owner(s) == KM_OWNER_REMOTE) {
			pthread_join(o->thr, NULL);
			KM_LOG(NOTICE,
				"cluster: shard %" PRIu64 " is node %s's now: dropped here after "
				"%" PRIu64 " ms in transit",
				o->id, o->to,
				(rte_get_timer_cycles() - o->t0) * 1000 / rte_get_timer_hz());
			/* Its files stay: the map does not give it back without a move. */
			km_store_destroy(o->s);
			km_proc_dedup_free(o->dd);
			o->s = NULL;
			o->dd = NULL;
			mv.moved_out++;
			atomic_store(&o->state, MV_FREE);
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
