/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libkeymap. One request engine (km_run) serves every call: the sync calls run it with
 * one op, km_batch with many, km_mget with MGET datagrams, and a map refresh is one more
 * request slot in the same engine. So replies that arrive while a map is being fetched
 * are delivered, not dropped, and every path shares the same retry and MOVED rules.
 *
 * Engine: up to `window` slots, each holding one request (its datagram kept for resends
 * with the same req_id), plus one slot reserved for MAP. An open-addressing table maps
 * req_id -> slot, so a reply whose id is not in flight (a late duplicate) is ignored.
 * No allocation per op: slots, send queue and receive buffers are allocated at open.
 */

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "km_client.h"
#include "km_proto.h"
#include "km_shardmap.h"

/* The public names are the wire values: keep them in step with km_proto.h. */
_Static_assert((int)KM_BATCH_PING == (int)KM_OP_PING && (int)KM_BATCH_GET == (int)KM_OP_GET &&
		       (int)KM_BATCH_PUT == (int)KM_OP_PUT && (int)KM_BATCH_CAS == (int)KM_OP_CAS &&
		       (int)KM_BATCH_DEL == (int)KM_OP_DEL,
	"batch op codes are the wire op codes");
_Static_assert(KM_CLIENT_KEY_MAX == KM_KEY_MAX && KM_CLIENT_VALUE_MAX == KM_VALUE_MAX,
	"client limits are the protocol limits");

#define KM_DEFAULT_PORT       7070
#define KM_DEFAULT_TIMEOUT_MS 200
#define KM_DEFAULT_RETRIES    3
#define KM_DEFAULT_WINDOW     64
#define KM_WINDOW_MAX         4096
#define KM_RETRIES_MAX        100
#define KM_SOCK_BUF           (4 << 20)
#define KM_RX_BURST           32
/* Larger than any valid reply so that an oversized one shows up as MSG_TRUNC. */
#define KM_RX_BUF 2048
/* The map changed this many times while we fetched its chunks: give up for now. */
#define KM_MAP_RESTARTS 4
/* After a failed refresh, replies with a newer epoch do not trigger another one before
 * this hold (doubled per failure): a server that drops MAP must not stall every call. */
#define KM_HOLD_MIN_NS (1000ull * 1000 * 1000)
#define KM_HOLD_MAX_NS (64ull * 1000 * 1000 * 1000)
/* First wait after BUSY, doubled per attempt, capped at the attempt timeout. */
#define KM_BUSY_BACKOFF_NS (1000ull * 1000)
/* MGET datagrams in flight per round of km_mget(). */
#define KM_MGET_WAVE 16

/* Destination of a slot other than an explicit worker index. */
#define KM_WORKER_KEY (-1) /* owner of the key in the current map */
#define KM_WORKER_MAP (-2) /* base port from the options */

enum km_slot_state {
	KM_SLOT_FREE = 0,
	KM_SLOT_QUEUED,   /* datagram ready, waiting in the send queue */
	KM_SLOT_SENT,     /* in flight until deadline */
	KM_SLOT_BACKOFF,  /* answered BUSY: resend at deadline */
	KM_SLOT_WAIT_MAP, /* answered MOVED: resend when the map refresh ends */
};

struct km_slot {
	struct km_batch_op *op;
	struct km_hdr hdr; /* re-encoded at each send: the epoch may have changed */
	uint64_t deadline; /* SENT: end of the attempt; BACKOFF: resend time */
	uint64_t first_ns; /* first send (0: not sent yet), for latency_ns */
	uint32_t map_gen;  /* c->map_gen at the last send */
	int32_t worker;    /* KM_WORKER_KEY, KM_WORKER_MAP or an explicit worker */
	uint16_t len;      /* datagram length in buf */
	uint16_t port;     /* destination port of the last send, host order */
	uint8_t state;     /* enum km_slot_state */
	uint8_t attempts;  /* sends since the first one or the last MOVED */
	uint8_t moves;     /* MOVED replies acted upon */
	uint8_t busy;      /* BUSY replies acted upon (backoff exponent) */
	uint8_t *buf;      /* the request datagram */
};

enum km_refresh_state {
	KM_REFRESH_IDLE = 0,
	KM_REFRESH_WANTED,  /* starts at the next turn of the engine loop */
	KM_REFRESH_RUNNING, /* a MAP chunk request is in the map slot */
};

/* A map being assembled from MAP chunks. */
struct km_refresh {
	int state;  /* enum km_refresh_state */
	int result; /* outcome of the last refresh */
	unsigned int restarts;
	struct km_map_chunk head; /* header fields of the first chunk */
	uint32_t got;             /* entries received */
	uint32_t cap;             /* entries allocated in ids/owners */
	uint64_t *ids;
	uint16_t *owners;
	uint64_t hold_until; /* no epoch-triggered refresh before (after failures) */
	uint64_t hold_ns;
};

struct km_mget_scratch {
	struct km_batch_op ops[KM_MGET_WAVE];
	int32_t workers[KM_MGET_WAVE];
	uint32_t first[KM_MGET_WAVE]; /* first position in the pending list */
	uint32_t count[KM_MGET_WAVE];
	uint8_t req[KM_MGET_WAVE][KM_DGRAM_MAX];
	uint8_t rep[KM_MGET_WAVE][KM_DGRAM_MAX];
};

struct km_client {
	int fd;
	struct sockaddr_in addr; /* server address; the port is set per datagram */
	uint16_t port;           /* base port from the options: MAP, unsteered requests */
	bool no_steer;
	uint32_t session;
	unsigned int retries;
	unsigned int window;
	uint64_t timeout_ns;
	uint64_t next_req_id;

	struct km_shardmap *map; /* NULL: unsteered */
	uint32_t map_gen;        /* bumped whenever a map is installed */
	struct km_refresh refresh;
	struct km_batch_op map_op; /* the MAP request of the refresh in progress */
	uint8_t map_buf[KM_DGRAM_MAX];

	/* Engine. slots[window] is reserved for MAP so a refresh never waits for a slot. */
	struct km_slot *slots;
	uint32_t *free_slots;
	uint32_t nb_free;
	uint32_t *ht; /* req_id -> slot index + 1 (0 = empty), linear probing */
	uint32_t ht_mask;
	uint32_t *txq; /* slots waiting for sendmmsg, in order */
	uint32_t txq_len;
	struct mmsghdr *txmsg;
	struct iovec *txiov;
	struct sockaddr_in *txaddr;
	struct mmsghdr rxmsg[KM_RX_BURST];
	struct iovec rxiov[KM_RX_BURST];
	struct sockaddr_in rxaddr[KM_RX_BURST];
	uint8_t *rxbuf;
	uint64_t earliest;    /* lower bound of every SENT/BACKOFF deadline */
	size_t pending;       /* ops of the current run not completed */
	uint32_t nb_wait_map; /* slots in KM_SLOT_WAIT_MAP */

	struct km_mget_scratch *mget; /* allocated by the first km_mget() */
	struct km_client_stats st;
};

const char *
km_strerror(int err)
{
	switch (err) {
	case KM_OK:
		return "success";
	case KM_ERR_NOT_FOUND:
		return "not found";
	case KM_ERR_VERSION_MISMATCH:
		return "version mismatch";
	case KM_ERR_TOO_LARGE:
		return "too large";
	case KM_ERR_BAD_REQUEST:
		return "bad request";
	case KM_ERR_BUSY:
		return "server busy";
	case KM_ERR_DENIED:
		return "denied";
	case KM_ERR_SERVER:
		return "server error";
	case KM_ERR_TIMEOUT:
		return "timed out";
	case KM_ERR_INVAL:
		return "invalid argument";
	case KM_ERR_SYSTEM:
		return "system error";
	case KM_ERR_PROTO:
		return "protocol error";
	case KM_ERR_MOVED:
		return "moved";
	case KM_ERR_NOMEM:
		return "out of memory";
	case KM_ERR_BUFFER:
		return "buffer too small";
	case KM_ERR_MAP_VERSION:
		return "shard map encoding of a newer major version: upgrade libkeymap";
	}
	return "unknown error";
}

static inline uint64_t
km_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int
km_status_err(unsigned int st)
{
	switch (st) {
	case KM_ST_OK:
		return KM_OK;
	case KM_ST_NOT_FOUND:
		return KM_ERR_NOT_FOUND;
	case KM_ST_MOVED:
		return KM_ERR_MOVED;
	case KM_ST_BUSY:
		return KM_ERR_BUSY;
	case KM_ST_TOO_LARGE:
		return KM_ERR_TOO_LARGE;
	case KM_ST_BAD_REQUEST:
		return KM_ERR_BAD_REQUEST;
	case KM_ST_VERSION_MISMATCH:
		return KM_ERR_VERSION_MISMATCH;
	case KM_ST_DENIED:
		return KM_ERR_DENIED;
	case KM_ST_ERROR:
		return KM_ERR_SERVER;
	}
	return KM_ERR_PROTO;
}

uint32_t
km_client_epoch(const struct km_client *c)
{
	return c != NULL && c->map != NULL ? km_shardmap_epoch(c->map) : 0;
}

unsigned int
km_client_nb_workers(const struct km_client *c)
{
	return c != NULL && c->map != NULL ? km_shardmap_nb_workers(c->map) : 1;
}

const struct km_shardmap *
km_client_map(const struct km_client *c)
{
	return c != NULL ? c->map : NULL;
}

static inline unsigned int
km_owner(const struct km_client *c, const void *key, size_t klen)
{
	struct km_shardmap_route rt;

	if (c->map == NULL || c->no_steer || klen == 0 ||
		km_shardmap_route(c->map, key, klen, &rt) != 0)
		return 0;
	return rt.owner;
}

unsigned int
km_client_worker_of(const struct km_client *c, const void *key, size_t klen)
{
	if (c == NULL || key == NULL || klen == 0)
		return 0;
	return km_owner(c, key, klen);
}

void
km_client_get_stats(const struct km_client *c, struct km_client_stats *st)
{
	if (c == NULL || st == NULL)
		return;
	*st = c->st;
}

/* Port of worker 0: the map's, unless the server left it out. */
static inline uint16_t
km_base_port(const struct km_client *c)
{
	if (c->map != NULL && !c->no_steer && km_shardmap_udp_port_base(c->map) != 0)
		return km_shardmap_udp_port_base(c->map);
	return c->port;
}

static inline uint16_t
km_slot_port(const struct km_client *c, const struct km_slot *s)
{
	if (s->worker == KM_WORKER_MAP)
		return c->port;
	if (s->worker >= 0)
		return (uint16_t)(km_base_port(c) + s->worker);
	return (uint16_t)(km_base_port(c) + km_owner(c, s->op->key, s->op->klen));
}

/*
 * req_id -> slot table. Ids are consecutive, so their low bits spread well; the table
 * has at least 4 entries per slot to keep probe chains short.
 */
static inline uint32_t
km_ht_home(const struct km_client *c, uint64_t id)
{
	return (uint32_t)(id ^ (id >> 32)) & c->ht_mask;
}

static void
km_ht_insert(struct km_client *c, uint32_t idx)
{
	uint32_t pos = km_ht_home(c, c->slots[idx].hdr.req_id);

	while (c->ht[pos] != 0)
		pos = (pos + 1) & c->ht_mask;
	c->ht[pos] = idx + 1;
}

static int64_t
km_ht_find(const struct km_client *c, uint64_t id)
{
	uint32_t pos = km_ht_home(c, id);
	uint32_t e;

	while ((e = c->ht[pos]) != 0) {
		if (c->slots[e - 1].hdr.req_id == id)
			return pos;
		pos = (pos + 1) & c->ht_mask;
	}
	return -1;
}

/* Backward-shift deletion: no tombstones, so lookups never slow down over time. */
static void
km_ht_remove(struct km_client *c, uint64_t id)
{
	int64_t found = km_ht_find(c, id);
	uint32_t i, j, k;

	if (found < 0)
		return;
	i = j = (uint32_t)found;
	for (;;) {
		j = (j + 1) & c->ht_mask;
		if (c->ht[j] == 0)
			break;
		k = km_ht_home(c, c->slots[c->ht[j] - 1].hdr.req_id);
		/* Entry j may stay if its home lies cyclically in (i, j]. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		c->ht[i] = c->ht[j];
		i = j;
	}
	c->ht[i] = 0;
}

/* Queue a (re)send of slot idx, same req_id, to the current owner. */
static void
km_slot_send(struct km_client *c, uint32_t idx)
{
	struct km_slot *s = &c->slots[idx];

	s->port = km_slot_port(c, s);
	s->map_gen = c->map_gen;
	s->hdr.epoch = c->no_steer ? 0 : km_client_epoch(c);
	km_hdr_encode(s->buf, &s->hdr);
	s->attempts++;
	s->state = KM_SLOT_QUEUED;
	c->txq[c->txq_len++] = idx;
}

/* Client-side validation: nothing that the server would refuse leaves the host. */
static int
km_op_check(const struct km_batch_op *op, bool internal)
{
	bool need_key = false, has_val = false;

	switch (op->op) {
	case KM_OP_PUT:
	case KM_OP_CAS:
		has_val = true;
		need_key = true;
		break;
	case KM_OP_GET:
	case KM_OP_DEL:
		need_key = true;
		break;
	case KM_OP_PING:
		break;
	case KM_OP_MGET:
		has_val = true;
		/* fallthrough */
	case KM_OP_MAP:
		if (!internal)
			return KM_ERR_INVAL;
		break;
	default:
		return KM_ERR_INVAL;
	}
	if (need_key && (op->key == NULL || op->klen == 0))
		return KM_ERR_INVAL;
	if (!need_key && op->klen != 0)
		return KM_ERR_INVAL;
	if (op->klen > KM_KEY_MAX)
		return KM_ERR_TOO_LARGE;
	if (has_val) {
		if (op->val == NULL && op->vlen != 0)
			return KM_ERR_INVAL;
		if (op->vlen > KM_VALUE_MAX || KM_HDR_LEN + op->klen + op->vlen > KM_DGRAM_MAX)
			return KM_ERR_TOO_LARGE;
	}
	return KM_OK;
}

/* Put op in slot idx (taken from the free list or the map slot) and queue it. */
static void
km_slot_arm(struct km_client *c, uint32_t idx, struct km_batch_op *op, int32_t worker)
{
	struct km_slot *s = &c->slots[idx];
	bool has_val = op->op == KM_OP_PUT || op->op == KM_OP_CAS || op->op == KM_OP_MGET;

	s->op = op;
	s->worker = worker;
	s->attempts = 0;
	s->moves = 0;
	s->busy = 0;
	s->first_ns = 0;
	memset(&s->hdr, 0, sizeof(s->hdr));
	s->hdr.magic = KM_PROTO_MAGIC;
	s->hdr.proto_ver = KM_PROTO_VERSION;
	s->hdr.op = op->op;
	s->hdr.key_len = (uint16_t)op->klen;
	s->hdr.val_len = has_val ? (uint32_t)op->vlen : 0;
	s->hdr.req_id = c->next_req_id++;
	if (op->op == KM_OP_CAS || op->op == KM_OP_DEL || op->op == KM_OP_MAP)
		s->hdr.version = op->version;
	s->hdr.session = c->session;
	/* Sizes were checked by km_op_check(): the build cannot fail. */
	s->len = (uint16_t)km_msg_build(s->buf, KM_DGRAM_MAX, &s->hdr, op->key, op->val);
	km_ht_insert(c, idx);
	c->st.requests++;
	km_slot_send(c, idx);
}

/* Start an op in a free slot, or complete it at once when it is invalid. */
static void
km_op_start(struct km_client *c, struct km_batch_op *op, int32_t worker, bool internal)
{
	int err;

	op->len = 0;
	op->out_version = 0;
	op->latency_ns = 0;
	err = km_op_check(op, internal);
	if (err != KM_OK) {
		op->err = err;
		c->pending--;
		return;
	}
	km_slot_arm(c, c->free_slots[--c->nb_free], op, worker);
}

static void km_refresh_step(struct km_client *c, int err);

static void
km_slot_done(struct km_client *c, uint32_t idx, int err, uint64_t now)
{
	struct km_slot *s = &c->slots[idx];

	km_ht_remove(c, s->hdr.req_id);
	if (s->state == KM_SLOT_WAIT_MAP)
		c->nb_wait_map--;
	s->state = KM_SLOT_FREE;
	s->op->err = err;
	s->op->latency_ns = s->first_ns == 0 ? 0 : now - s->first_ns;
	if (idx == c->window) {
		km_refresh_step(c, err);
		return;
	}
	c->free_slots[c->nb_free++] = idx;
	c->pending--;
}

static void
km_refresh_want(struct km_client *c)
{
	if (c->refresh.state == KM_REFRESH_IDLE)
		c->refresh.state = KM_REFRESH_WANTED;
}

static void
km_map_request(struct km_client *c, uint32_t cursor)
{
	struct km_batch_op *op = &c->map_op;

	memset(op, 0, sizeof(*op));
	op->op = KM_OP_MAP;
	op->version = cursor;
	op->buf = c->map_buf;
	op->cap = sizeof(c->map_buf);
	km_slot_arm(c, c->window, op, KM_WORKER_MAP);
}

static void
km_refresh_begin(struct km_client *c)
{
	c->refresh.state = KM_REFRESH_RUNNING;
	c->refresh.restarts = 0;
	c->refresh.got = 0;
	km_map_request(c, 0);
}

/* Resend every op that waited for the refresh: with the new map, or the old one. */
static void
km_refresh_end(struct km_client *c, int err)
{
	struct km_refresh *r = &c->refresh;
	uint32_t i;

	r->state = KM_REFRESH_IDLE;
	r->result = err;
	if (err == KM_OK) {
		r->hold_ns = 0;
		r->hold_until = 0;
	} else {
		r->hold_ns = r->hold_ns == 0 ? KM_HOLD_MIN_NS : r->hold_ns * 2;
		if (r->hold_ns > KM_HOLD_MAX_NS)
			r->hold_ns = KM_HOLD_MAX_NS;
		r->hold_until = km_now() + r->hold_ns;
	}
	for (i = 0; i < c->window && c->nb_wait_map > 0; i++) {
		if (c->slots[i].state == KM_SLOT_WAIT_MAP) {
			c->nb_wait_map--;
			km_slot_send(c, i);
		}
	}
}

static int
km_refresh_install(struct km_client *c)
{
	struct km_refresh *r = &c->refresh;
	struct km_shardmap *m;
	int rc;

	rc = km_shardmap_from_list(r->head.epoch, r->head.nb_workers, r->head.udp_port_base,
		r->head.route_sep, r->head.route_depth, r->ids, r->owners, r->head.nb_shards, &m);
	if (rc == -ENOMEM)
		return KM_ERR_NOMEM;
	if (rc != 0)
		return KM_ERR_PROTO;
	/* Every worker port must exist: base + nb_workers - 1 <= 65535. */
	if ((uint32_t)(km_shardmap_udp_port_base(m) != 0 ? km_shardmap_udp_port_base(m) : c->port) +
			km_shardmap_nb_workers(m) - 1 >
		UINT16_MAX) {
		km_shardmap_free(m);
		return KM_ERR_PROTO;
	}
	km_shardmap_free(c->map);
	c->map = m;
	c->map_gen++;
	c->st.map_refreshes++;
	return KM_OK;
}

/* Same map as the chunks received so far? (Else it changed while we fetched it.) */
static bool
km_chunk_same_map(const struct km_map_chunk *a, const struct km_map_chunk *b)
{
	return a->epoch == b->epoch && a->nb_shards == b->nb_shards &&
	       a->nb_workers == b->nb_workers && a->udp_port_base == b->udp_port_base &&
	       a->route_sep == b->route_sep && a->route_depth == b->route_depth;
}

/* A MAP chunk request completed with err: store its entries, ask for the next one. */
static void
km_refresh_step(struct km_client *c, int err)
{
	struct km_refresh *r = &c->refresh;
	struct km_map_chunk ch;
	uint32_t i;
	int rc;

	if (err != KM_OK) {
		km_refresh_end(c, err);
		return;
	}
	rc = km_shardmap_decode_chunk(c->map_buf, c->map_op.len, &ch);
	if (rc != 0) {
		km_refresh_end(c, rc == -EPROTO ? KM_ERR_MAP_VERSION : KM_ERR_PROTO);
		return;
	}
	if (r->got != 0 && !km_chunk_same_map(&r->head, &ch)) {
		if (++r->restarts > KM_MAP_RESTARTS) {
			km_refresh_end(c, KM_ERR_BUSY);
			return;
		}
		r->got = 0;
		km_map_request(c, 0);
		return;
	}
	if (ch.first != r->got || ch.count == 0) {
		km_refresh_end(c, KM_ERR_PROTO);
		return;
	}
	if (r->got == 0) {
		r->head = ch;
		if (r->cap < ch.nb_shards) {
			uint64_t *ids = realloc(r->ids, ch.nb_shards * sizeof(*ids));
			uint16_t *owners;

			if (ids != NULL)
				r->ids = ids;
			owners = ids == NULL ? NULL
					     : realloc(r->owners, ch.nb_shards * sizeof(*owners));
			if (owners == NULL) {
				km_refresh_end(c, KM_ERR_NOMEM);
				return;
			}
			r->owners = owners;
			r->cap = ch.nb_shards;
		}
	}
	for (i = 0; i < ch.count; i++) {
		struct km_map_entry e;

		km_shardmap_chunk_entry(&ch, i, &e);
		r->ids[r->got + i] = e.id;
		/*
		 * Keep jump-hash owners as such so the map reads like the server's; but the owner
		 * sent is the resolved one, and routing must follow it even if our jump hash
		 * disagreed.
		 */
		if ((e.flags & KM_MAP_ENTRY_F_MOVED) == 0 && ch.nb_workers != 0 &&
			km_jump_hash(e.id, ch.nb_workers) == e.owner)
			e.owner = KM_OWNER_JUMP;
		r->owners[r->got + i] = e.owner;
	}
	r->got += ch.count;
	if (r->got < r->head.nb_shards) {
		km_map_request(c, r->got);
		return;
	}
	km_refresh_end(c, km_refresh_install(c));
}

/*
 * A reply carried the server's epoch: if it is not ours, our map is outdated; fetch it
 * (unless refreshes failed recently). "Not ours" rather than "newer": epochs restart at 1
 * when the server restarts (docs/protocol.md 1.1).
 */
static inline void
km_note_epoch(struct km_client *c, uint32_t epoch, uint64_t now)
{
	if (c->no_steer || epoch == km_client_epoch(c) || c->refresh.state != KM_REFRESH_IDLE)
		return;
	if (now < c->refresh.hold_until)
		return;
	c->refresh.state = KM_REFRESH_WANTED;
}

static void
km_slot_moved(struct km_client *c, uint32_t idx, uint64_t now)
{
	struct km_slot *s = &c->slots[idx];

	c->st.moved++;
	if (c->no_steer || idx == c->window) {
		km_slot_done(c, idx, KM_ERR_MOVED, now);
		return;
	}
	/* Explicit destination (MGET, PING): the caller regroups after the refresh. */
	if (s->worker != KM_WORKER_KEY) {
		km_refresh_want(c);
		km_slot_done(c, idx, KM_ERR_MOVED, now);
		return;
	}
	if (s->moves > c->retries) {
		km_slot_done(c, idx, KM_ERR_MOVED, now);
		return;
	}
	s->moves++;
	/* A new owner means a new timeout budget; moves bound the total. */
	s->attempts = 0;
	if (s->map_gen != c->map_gen) {
		/* Sent with an older map than ours: no need to fetch another one. */
		km_slot_send(c, idx);
		return;
	}
	km_refresh_want(c);
	s->state = KM_SLOT_WAIT_MAP;
	c->nb_wait_map++;
}

static void
km_dispatch(struct km_client *c, const uint8_t *buf, size_t len, uint16_t sport, uint64_t now)
{
	struct km_batch_op *op;
	struct km_slot *s;
	struct km_msg m;
	int64_t pos;
	uint32_t idx;
	int err;

	if (km_reply_parse(buf, len, &m) != 0) {
		c->st.stray_replies++;
		return;
	}
	pos = km_ht_find(c, m.hdr.req_id);
	if (pos < 0) {
		c->st.stray_replies++;
		return;
	}
	idx = c->ht[pos] - 1;
	s = &c->slots[idx];
	op = s->op;
	/*
	 * QUEUED: the resend is not out yet; its own reply will come. MOVED and BUSY only
	 * concern the attempt in flight. MOVED comes from the worker that received the
	 * request, so one from another port answers an earlier attempt: stale. (BUSY comes
	 * from the owner, which may not be the worker we sent to.)
	 */
	if (s->state == KM_SLOT_QUEUED || m.hdr.op != op->op ||
		((m.hdr.status == KM_ST_MOVED || m.hdr.status == KM_ST_BUSY) &&
			s->state != KM_SLOT_SENT) ||
		(m.hdr.status == KM_ST_MOVED && sport != s->port)) {
		c->st.stray_replies++;
		return;
	}
	if (op->op != KM_OP_MAP)
		km_note_epoch(c, m.hdr.epoch, now);

	switch (m.hdr.status) {
	case KM_ST_MOVED:
		km_slot_moved(c, idx, now);
		return;
	case KM_ST_BUSY:
		/* The server asks for time (a shard being handed over, overload): back off 1, 2,
		 * 4 ms... up to the attempt timeout, for as long as the op's whole budget
		 * (timeout x (retries + 1) since its first send) lasts. An answered attempt does
		 * not use up a timeout retry. */
		if (now - s->first_ns >= c->timeout_ns * (c->retries + 1)) {
			km_slot_done(c, idx, KM_ERR_BUSY, now);
			return;
		}
		if (s->busy < UINT8_MAX)
			s->busy++;
		if (s->attempts > 0)
			s->attempts--;
		s->state = KM_SLOT_BACKOFF;
		s->deadline = s->busy > 20 ? c->timeout_ns : KM_BUSY_BACKOFF_NS << (s->busy - 1);
		if (s->deadline > c->timeout_ns)
			s->deadline = c->timeout_ns;
		s->deadline += now;
		if (s->deadline < c->earliest)
			c->earliest = s->deadline;
		return;
	}
	err = km_status_err(m.hdr.status);
	op->out_version = m.hdr.version;
	if (err == KM_OK && (op->op == KM_OP_GET || op->op == KM_OP_MGET || op->op == KM_OP_MAP)) {
		op->len = m.hdr.val_len;
		if (op->buf != NULL) {
			if (op->len > op->cap)
				err = KM_ERR_BUFFER;
			else
				memcpy(op->buf, m.val, op->len);
		}
	}
	km_slot_done(c, idx, err, now);
}

/* Send what is queued. Leaves the rest queued when the socket buffer is full. */
static int
km_flush(struct km_client *c)
{
	while (c->txq_len > 0) {
		uint64_t now;
		uint32_t i;
		int r;

		for (i = 0; i < c->txq_len; i++) {
			struct km_slot *s = &c->slots[c->txq[i]];

			c->txaddr[i] = c->addr;
			c->txaddr[i].sin_port = htons(s->port);
			c->txiov[i].iov_base = s->buf;
			c->txiov[i].iov_len = s->len;
			memset(&c->txmsg[i], 0, sizeof(c->txmsg[i]));
			c->txmsg[i].msg_hdr.msg_name = &c->txaddr[i];
			c->txmsg[i].msg_hdr.msg_namelen = sizeof(c->txaddr[i]);
			c->txmsg[i].msg_hdr.msg_iov = &c->txiov[i];
			c->txmsg[i].msg_hdr.msg_iovlen = 1;
		}
		r = sendmmsg(c->fd, c->txmsg, c->txq_len, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
				return 0;
			return KM_ERR_SYSTEM;
		}
		now = km_now();
		for (i = 0; i < (uint32_t)r; i++) {
			struct km_slot *s = &c->slots[c->txq[i]];

			s->state = KM_SLOT_SENT;
			if (s->first_ns == 0)
				s->first_ns = now;
			s->deadline = now + c->timeout_ns;
		}
		if (r > 0 && now + c->timeout_ns < c->earliest)
			c->earliest = now + c->timeout_ns;
		c->txq_len -= (uint32_t)r;
		memmove(c->txq, c->txq + r, c->txq_len * sizeof(c->txq[0]));
	}
	return 0;
}

/* Receive what is there without blocking. @return datagrams read, or an error. */
static int
km_recv(struct km_client *c)
{
	uint64_t now;
	int r, i;

	for (i = 0; i < KM_RX_BURST; i++) {
		c->rxmsg[i].msg_hdr.msg_namelen = sizeof(c->rxaddr[i]);
		c->rxmsg[i].msg_hdr.msg_flags = 0;
	}
	do
		r = recvmmsg(c->fd, c->rxmsg, KM_RX_BURST, MSG_DONTWAIT, NULL);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		/* ECONNREFUSED: an ICMP error for an earlier datagram; the attempt times out. */
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED)
			return 0;
		return KM_ERR_SYSTEM;
	}
	now = km_now();
	for (i = 0; i < r; i++) {
		const struct sockaddr_in *from = &c->rxaddr[i];

		/* Only the server may answer; truncated datagrams are not valid replies. */
		if ((c->rxmsg[i].msg_hdr.msg_flags & MSG_TRUNC) != 0 ||
			c->rxmsg[i].msg_hdr.msg_namelen < sizeof(*from) ||
			from->sin_family != AF_INET ||
			from->sin_addr.s_addr != c->addr.sin_addr.s_addr) {
			c->st.stray_replies++;
			continue;
		}
		km_dispatch(
			c, c->rxiov[i].iov_base, c->rxmsg[i].msg_len, ntohs(from->sin_port), now);
	}
	return r;
}

/* Deadlines: time out or resend; recompute the earliest one. */
static void
km_expire(struct km_client *c, uint64_t now)
{
	uint64_t earliest = UINT64_MAX;
	uint32_t i;

	for (i = 0; i <= c->window; i++) {
		struct km_slot *s = &c->slots[i];

		if (s->state != KM_SLOT_SENT && s->state != KM_SLOT_BACKOFF)
			continue;
		if (now < s->deadline) {
			if (s->deadline < earliest)
				earliest = s->deadline;
			continue;
		}
		if (s->state == KM_SLOT_SENT) {
			c->st.timeouts++;
			if (s->attempts > c->retries) {
				km_slot_done(c, i, KM_ERR_TIMEOUT, now);
				continue;
			}
		}
		c->st.retries++;
		km_slot_send(c, i);
	}
	c->earliest = earliest;
}

/* Socket failure: every op not completed gets KM_ERR_SYSTEM, the engine is reset. */
static int
km_abort(struct km_client *c, struct km_batch_op *ops, size_t next, size_t n)
{
	int saved = errno;
	uint32_t i;

	for (i = 0; i <= c->window; i++) {
		struct km_slot *s = &c->slots[i];

		if (s->state == KM_SLOT_FREE)
			continue;
		km_ht_remove(c, s->hdr.req_id);
		s->state = KM_SLOT_FREE;
		s->op->err = KM_ERR_SYSTEM;
		if (i != c->window)
			c->free_slots[c->nb_free++] = i;
	}
	for (; next < n; next++)
		ops[next].err = KM_ERR_SYSTEM;
	c->refresh.state = KM_REFRESH_IDLE;
	c->refresh.result = KM_ERR_SYSTEM;
	c->txq_len = 0;
	c->pending = 0;
	c->nb_wait_map = 0;
	c->earliest = UINT64_MAX;
	errno = saved;
	return KM_ERR_SYSTEM;
}

/*
 * Run ops to completion, keeping up to window in flight, plus any map refresh they
 * trigger. workers: explicit destination per op, or NULL to route each op by its key.
 * @return 0 (each op->err set) or KM_ERR_SYSTEM.
 */
static int
km_run(struct km_client *c, struct km_batch_op *ops, const int32_t *workers, size_t n,
	bool internal)
{
	size_t next = 0;
	int r;

	c->pending = n;
	for (;;) {
		uint64_t now, wait;
		struct timespec ts;
		struct pollfd pfd;

		if (c->refresh.state == KM_REFRESH_WANTED)
			km_refresh_begin(c);
		while (next < n && c->nb_free > 0) {
			km_op_start(c, &ops[next], workers != NULL ? workers[next] : KM_WORKER_KEY,
				internal);
			next++;
		}
		if (c->txq_len > 0 && km_flush(c) < 0)
			return km_abort(c, ops, next, n);
		if (c->pending == 0 && c->refresh.state == KM_REFRESH_IDLE)
			return 0;

		r = km_recv(c);
		if (r < 0)
			return km_abort(c, ops, next, n);
		now = km_now();
		if (now >= c->earliest) {
			km_expire(c, now);
			continue;
		}
		if (r > 0 || c->refresh.state == KM_REFRESH_WANTED)
			continue;

		/* Nothing to do until a reply or the next deadline. */
		wait = c->earliest == UINT64_MAX ? c->timeout_ns : c->earliest - now;
		ts.tv_sec = (time_t)(wait / 1000000000ull);
		ts.tv_nsec = (long)(wait % 1000000000ull);
		pfd.fd = c->fd;
		pfd.events = POLLIN | (c->txq_len > 0 ? POLLOUT : 0);
		pfd.revents = 0;
		if (ppoll(&pfd, 1, &ts, NULL) < 0 && errno != EINTR)
			return km_abort(c, ops, next, n);
	}
}

static int
km_run_one(struct km_client *c, struct km_batch_op *op, int32_t worker)
{
	int rc = km_run(c, op, &worker, 1, false);

	return rc < 0 ? rc : op->err;
}

int
km_map_refresh(struct km_client *c)
{
	int rc;

	if (c == NULL || c->no_steer)
		return KM_ERR_INVAL;
	/* Explicit request: ignore the hold that follows failed refreshes. */
	c->refresh.state = KM_REFRESH_WANTED;
	rc = km_run(c, NULL, NULL, 0, true);
	return rc < 0 ? rc : c->refresh.result;
}

static int
km_client_alloc(struct km_client *c)
{
	uint32_t nslots = c->window + 1;
	uint32_t htsize = 1, i;

	while (htsize < 4 * nslots)
		htsize <<= 1;
	c->ht_mask = htsize - 1;
	c->slots = calloc(nslots, sizeof(*c->slots));
	c->free_slots = calloc(nslots, sizeof(*c->free_slots));
	c->ht = calloc(htsize, sizeof(*c->ht));
	c->txq = calloc(nslots, sizeof(*c->txq));
	c->txmsg = calloc(nslots, sizeof(*c->txmsg));
	c->txiov = calloc(nslots, sizeof(*c->txiov));
	c->txaddr = calloc(nslots, sizeof(*c->txaddr));
	c->rxbuf = malloc((size_t)KM_RX_BURST * KM_RX_BUF);
	if (c->slots == NULL || c->free_slots == NULL || c->ht == NULL || c->txq == NULL ||
		c->txmsg == NULL || c->txiov == NULL || c->txaddr == NULL || c->rxbuf == NULL)
		return KM_ERR_NOMEM;
	/* One allocation for every request datagram: resends reuse them as they are. */
	c->slots[0].buf = malloc((size_t)nslots * KM_DGRAM_MAX);
	if (c->slots[0].buf == NULL)
		return KM_ERR_NOMEM;
	for (i = 0; i < nslots; i++)
		c->slots[i].buf = c->slots[0].buf + (size_t)i * KM_DGRAM_MAX;
	/* Popped from the end: slot 0 is used first. */
	for (i = 0; i < c->window; i++)
		c->free_slots[i] = c->window - 1 - i;
	c->nb_free = c->window;
	for (i = 0; i < KM_RX_BURST; i++) {
		c->rxiov[i].iov_base = c->rxbuf + (size_t)i * KM_RX_BUF;
		c->rxiov[i].iov_len = KM_RX_BUF;
		c->rxmsg[i].msg_hdr.msg_name = &c->rxaddr[i];
		c->rxmsg[i].msg_hdr.msg_iov = &c->rxiov[i];
		c->rxmsg[i].msg_hdr.msg_iovlen = 1;
	}
	return KM_OK;
}

static int
km_resolve(const char *host, struct in_addr *addr)
{
	struct addrinfo hints, *res;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_DGRAM;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc == EAI_SYSTEM)
		return KM_ERR_SYSTEM;
	if (rc == EAI_MEMORY)
		return KM_ERR_NOMEM;
	if (rc != 0)
		return KM_ERR_INVAL;
	*addr = ((const struct sockaddr_in *)res->ai_addr)->sin_addr;
	freeaddrinfo(res);
	return KM_OK;
}

int
km_client_open(const struct km_client_opts *opts, struct km_client **out)
{
	struct km_client *c;
	int rc, buf = KM_SOCK_BUF;

	if (opts == NULL || out == NULL || opts->host == NULL || opts->host[0] == '\0' ||
		opts->window > KM_WINDOW_MAX || opts->retries > KM_RETRIES_MAX)
		return KM_ERR_INVAL;
	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return KM_ERR_NOMEM;
	c->fd = -1;
	c->port = opts->port != 0 ? opts->port : KM_DEFAULT_PORT;
	c->timeout_ns =
		(uint64_t)(opts->timeout_ms != 0 ? opts->timeout_ms : KM_DEFAULT_TIMEOUT_MS) *
		1000000ull;
	c->retries = opts->retries != 0 ? opts->retries : KM_DEFAULT_RETRIES;
	c->window = opts->window != 0 ? opts->window : KM_DEFAULT_WINDOW;
	c->session = opts->session;
	c->no_steer = opts->no_steer != 0;
	c->earliest = UINT64_MAX;
	c->addr.sin_family = AF_INET;

	rc = km_resolve(opts->host, &c->addr.sin_addr);
	if (rc != KM_OK)
		goto fail;
	rc = km_client_alloc(c);
	if (rc != KM_OK)
		goto fail;
	/* Ids of different clients (and runs) must not collide at the server's dedup. */
	if (getrandom(&c->next_req_id, sizeof(c->next_req_id), GRND_NONBLOCK) !=
		sizeof(c->next_req_id))
		c->next_req_id = km_now() ^ ((uint64_t)getpid() << 32);

	rc = KM_ERR_SYSTEM;
	c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		goto fail;
	/* Best effort: a full window of replies must not overflow the receive buffer. */
	(void)setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	(void)setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));

	if (!c->no_steer) {
		rc = km_map_refresh(c);
		/* A server that does not answer MAP leaves us unsteered, which still works. */
		if (rc == KM_ERR_SYSTEM || rc == KM_ERR_NOMEM)
			goto fail;
	}
	*out = c;
	return KM_OK;
fail:
	km_client_close(c);
	return rc;
}

void
km_client_close(struct km_client *c)
{
	int saved = errno;

	if (c == NULL)
		return;
	if (c->fd >= 0)
		close(c->fd);
	km_shardmap_free(c->map);
	free(c->refresh.ids);
	free(c->refresh.owners);
	if (c->slots != NULL)
		free(c->slots[0].buf);
	free(c->slots);
	free(c->free_slots);
	free(c->ht);
	free(c->txq);
	free(c->txmsg);
	free(c->txiov);
	free(c->txaddr);
	free(c->rxbuf);
	free(c->mget);
	free(c);
	errno = saved;
}

int
km_batch(struct km_client *c, struct km_batch_op *ops, size_t n)
{
	size_t i;
	int rc, ok = 0;

	if (c == NULL || (ops == NULL && n != 0) || n > INT_MAX)
		return KM_ERR_INVAL;
	rc = km_run(c, ops, NULL, n, false);
	if (rc < 0)
		return rc;
	for (i = 0; i < n; i++)
		ok += ops[i].err == KM_OK || ops[i].err == KM_ERR_NOT_FOUND;
	return ok;
}

int
km_ping(struct km_client *c, unsigned int worker)
{
	struct km_batch_op op;

	if (c == NULL)
		return KM_ERR_INVAL;
	if ((c->map != NULL && !c->no_steer && worker >= km_shardmap_nb_workers(c->map)) ||
		(uint32_t)km_base_port(c) + worker > UINT16_MAX)
		return KM_ERR_INVAL;
	memset(&op, 0, sizeof(op));
	op.op = KM_OP_PING;
	return km_run_one(c, &op, (int32_t)worker);
}

int
km_get(struct km_client *c, const void *key, size_t klen, void *buf, size_t cap, size_t *len,
	uint64_t *version)
{
	struct km_batch_op op;
	int rc;

	if (c == NULL || (buf == NULL && cap != 0))
		return KM_ERR_INVAL;
	memset(&op, 0, sizeof(op));
	op.op = KM_OP_GET;
	op.key = key;
	op.klen = klen;
	op.buf = buf;
	op.cap = cap;
	rc = km_run_one(c, &op, KM_WORKER_KEY);
	if (len != NULL)
		*len = op.len;
	if (version != NULL)
		*version = op.out_version;
	return rc;
}

static int
km_write(struct km_client *c, uint8_t opcode, const void *key, size_t klen, const void *val,
	size_t vlen, uint64_t expect, uint64_t *version)
{
	struct km_batch_op op;
	int rc;

	if (c == NULL)
		return KM_ERR_INVAL;
	memset(&op, 0, sizeof(op));
	op.op = opcode;
	op.key = key;
	op.klen = klen;
	op.val = val;
	op.vlen = vlen;
	op.version = expect;
	rc = km_run_one(c, &op, KM_WORKER_KEY);
	if (version != NULL)
		*version = op.out_version;
	return rc;
}

int
km_put(struct km_client *c, const void *key, size_t klen, const void *val, size_t vlen,
	uint64_t *version)
{
	return km_write(c, KM_OP_PUT, key, klen, val, vlen, 0, version);
}

int
km_cas(struct km_client *c, const void *key, size_t klen, const void *val, size_t vlen,
	uint64_t expect, uint64_t *version)
{
	return km_write(c, KM_OP_CAS, key, klen, val, vlen, expect, version);
}

int
km_del(struct km_client *c, const void *key, size_t klen, uint64_t expect)
{
	return km_write(c, KM_OP_DEL, key, klen, NULL, 0, expect, NULL);
}

/*
 * MGET. Each round groups the pending items by owner (counting sort on the worker),
 * packs them into datagrams of at most KM_MGET_MAX keys and KM_DGRAM_MAX bytes, and
 * runs KM_MGET_WAVE datagrams at a time. Items answered MOVED wait for the next round,
 * after a map refresh; items answered TOO_LARGE (no room in the reply) are fetched
 * with GET.
 */

/* Bytes of an MGET request with no key yet: header + u16 count. */
#define KM_MGET_REQ_BASE (KM_HDR_LEN + 2)

static int
km_item_check(const struct km_mget_item *it)
{
	if (it->key == NULL || it->klen == 0 || (it->buf == NULL && it->cap != 0))
		return KM_ERR_INVAL;
	if (it->klen > KM_KEY_MAX)
		return KM_ERR_TOO_LARGE;
	return KM_OK;
}

/* Copy an entry's value into the item like a GET would. */
static void
km_item_fill(
	struct km_mget_item *it, unsigned int st, uint64_t version, const uint8_t *val, size_t vlen)
{
	it->err = km_status_err(st);
	it->version = version;
	it->len = 0;
	if (it->err != KM_OK)
		return;
	it->len = vlen;
	if (it->buf == NULL)
		return;
	if (vlen > it->cap)
		it->err = KM_ERR_BUFFER;
	else
		memcpy(it->buf, val, vlen);
}

/* GET each item of list[0..n); their results replace the MGET ones. */
static int
km_mget_fallback(struct km_client *c, struct km_mget_item *items, const uint32_t *list, uint32_t n)
{
	struct km_batch_op *ops = c->mget->ops;
	uint32_t done = 0, k, i;
	int rc;

	while (done < n) {
		k = n - done < KM_MGET_WAVE ? n - done : KM_MGET_WAVE;
		for (i = 0; i < k; i++) {
			struct km_mget_item *it = &items[list[done + i]];

			memset(&ops[i], 0, sizeof(ops[i]));
			ops[i].op = KM_OP_GET;
			ops[i].key = it->key;
			ops[i].klen = it->klen;
			ops[i].buf = it->buf;
			ops[i].cap = it->cap;
		}
		rc = km_run(c, ops, NULL, k, false);
		if (rc < 0)
			return rc;
		for (i = 0; i < k; i++) {
			struct km_mget_item *it = &items[list[done + i]];

			it->err = ops[i].err;
			it->len = ops[i].len;
			it->version = ops[i].out_version;
		}
		done += k;
	}
	return KM_OK;
}

/*
 * Read the reply of datagram d (items pend[first..first+count)). MOVED items are
 * appended to pend[*nmoved], TOO_LARGE ones to big[*nbig].
 */
static void
km_mget_parse(struct km_client *c, struct km_mget_item *items, uint32_t *pend, uint32_t d,
	uint32_t *nmoved, uint32_t *big, uint32_t *nbig)
{
	struct km_mget_scratch *g = c->mget;
	const struct km_batch_op *op = &g->ops[d];
	const uint8_t *p = g->rep[d], *end = g->rep[d] + op->len;
	uint32_t first = g->first[d], count = g->count[d], i;
	int err = op->err;

	if (err == KM_OK && (op->len < 2 || km_get16(p) != count))
		err = KM_ERR_PROTO;
	p += 2;
	for (i = 0; i < count; i++) {
		uint32_t idx = pend[first + i];
		struct km_mget_item *it = &items[idx];
		unsigned int st;
		uint16_t vlen;

		if (err == KM_ERR_MOVED) {
			pend[(*nmoved)++] = idx;
			continue;
		}
		if (err != KM_OK) {
			it->err = err;
			continue;
		}
		if (end - p < KM_MGET_REP_ENTRY_HDR ||
			(size_t)(end - p) < (size_t)KM_MGET_REP_ENTRY_HDR + km_get16(p + 9)) {
			/* Truncated body: this entry and the following ones are lost. */
			err = KM_ERR_PROTO;
			it->err = err;
			continue;
		}
		st = p[0];
		vlen = km_get16(p + 9);
		if (st == KM_ST_MOVED) {
			c->st.moved++;
			pend[(*nmoved)++] = idx;
		} else if (st == KM_ST_TOO_LARGE || st == KM_ST_BUSY) {
			/* Too large for the reply, or not in the server's cache yet (it started
			 * reading it): a GET of its own fetches it. */
			big[(*nbig)++] = idx;
		} else
			km_item_fill(it, st, km_get64(p + 1), p + KM_MGET_REP_ENTRY_HDR, vlen);
		p += KM_MGET_REP_ENTRY_HDR + vlen;
	}
}

/* One round over pend[0..npend): returns the MOVED items, compacted at pend[0..). */
static int
km_mget_round(struct km_client *c, struct km_mget_item *items, uint32_t *pend, uint32_t npend,
	const uint16_t *wk, uint32_t *nmoved)
{
	struct km_mget_scratch *g = c->mget;
	uint32_t big[KM_MGET_WAVE * KM_MGET_MAX];
	uint32_t pos = 0, nbig, d, nd;
	int rc;

	*nmoved = 0;
	while (pos < npend) {
		for (nd = 0; nd < KM_MGET_WAVE && pos < npend; nd++) {
			uint16_t w = wk[pend[pos]];
			uint8_t *p = g->req[nd] + 2;
			size_t size = KM_MGET_REQ_BASE;
			uint32_t cnt = 0;

			g->first[nd] = pos;
			while (pos < npend && wk[pend[pos]] == w && cnt < KM_MGET_MAX &&
				size + KM_MGET_REQ_ENTRY_HDR + items[pend[pos]].klen <=
					KM_DGRAM_MAX) {
				const struct km_mget_item *it = &items[pend[pos]];

				*p = (uint8_t)it->klen;
				memcpy(p + 1, it->key, it->klen);
				p += KM_MGET_REQ_ENTRY_HDR + it->klen;
				size += KM_MGET_REQ_ENTRY_HDR + it->klen;
				cnt++;
				pos++;
			}
			km_put16(g->req[nd], (uint16_t)cnt);
			g->count[nd] = cnt;
			memset(&g->ops[nd], 0, sizeof(g->ops[nd]));
			g->ops[nd].op = KM_OP_MGET;
			g->ops[nd].val = g->req[nd];
			g->ops[nd].vlen = (size_t)(p - g->req[nd]);
			g->ops[nd].buf = g->rep[nd];
			g->ops[nd].cap = KM_DGRAM_MAX;
			g->workers[nd] = w;
		}
		rc = km_run(c, g->ops, g->workers, nd, true);
		if (rc < 0)
			return rc;
		/* Compaction is safe: MOVED items found so far never outnumber those read. */
		nbig = 0;
		for (d = 0; d < nd; d++)
			km_mget_parse(c, items, pend, d, nmoved, big, &nbig);
		rc = km_mget_fallback(c, items, big, nbig);
		if (rc < 0)
			return rc;
	}
	return KM_OK;
}

/* Stable counting sort of pend[0..n) by owner worker into tmp, then back. */
static void
km_mget_group(const struct km_client *c, const struct km_mget_item *items, uint32_t *pend,
	uint32_t *tmp, uint16_t *wk, uint32_t n)
{
	uint32_t start[KM_WORKERS_MAX + 1] = {0};
	uint32_t i;

	for (i = 0; i < n; i++) {
		const struct km_mget_item *it = &items[pend[i]];

		wk[pend[i]] = (uint16_t)km_owner(c, it->key, it->klen);
		start[wk[pend[i]] + 1]++;
	}
	for (i = 1; i <= KM_WORKERS_MAX; i++)
		start[i] += start[i - 1];
	for (i = 0; i < n; i++)
		tmp[start[wk[pend[i]]]++] = pend[i];
	memcpy(pend, tmp, n * sizeof(*pend));
}

int
km_mget(struct km_client *c, struct km_mget_item *items, size_t n)
{
	uint32_t *pend, *tmp, npend = 0, nmoved, i;
	unsigned int round;
	uint16_t *wk;
	uint32_t gen;
	int rc = KM_OK;

	if (c == NULL || (items == NULL && n != 0) || n > UINT32_MAX)
		return KM_ERR_INVAL;
	if (n == 0)
		return KM_OK;
	if (c->mget == NULL) {
		c->mget = malloc(sizeof(*c->mget));
		if (c->mget == NULL)
			return KM_ERR_NOMEM;
	}
	pend = malloc(n * (2 * sizeof(*pend) + sizeof(*wk)));
	if (pend == NULL)
		return KM_ERR_NOMEM;
	tmp = pend + n;
	wk = (uint16_t *)(tmp + n);

	for (i = 0; i < n; i++) {
		items[i].len = 0;
		items[i].version = 0;
		items[i].err = km_item_check(&items[i]);
		/* Until its reply arrives an item holds the error it ends with if the socket fails.
		 */
		if (items[i].err == KM_OK) {
			items[i].err = KM_ERR_SYSTEM;
			pend[npend++] = (uint32_t)i;
		}
	}
	gen = c->map_gen;
	for (round = 0; npend > 0; round++) {
		if (round > 0) {
			/*
			 * The MOVED items: as for single requests, retries + 1 re-routes. A client
			 * that cannot re-route (unsteered, or its map keeps disagreeing) GETs them
			 * one by one: the server hands a GET to its owner, never an MGET entry.
			 */
			if (c->no_steer || round > c->retries + 1) {
				rc = km_mget_fallback(c, items, pend, npend);
				break;
			}
			if (c->map_gen == gen)
				(void)km_map_refresh(c);
		}
		gen = c->map_gen;
		km_mget_group(c, items, pend, tmp, wk, npend);
		rc = km_mget_round(c, items, pend, npend, wk, &nmoved);
		if (rc < 0)
			break;
		npend = nmoved;
	}
	free(pend);
	return rc < 0 ? rc : KM_OK;
}
