/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libkeymap's request engine. One engine (km_run) serves every call: the sync calls run
 * it with one op, km_batch with many, km_mget with MGET datagrams, and a map refresh is
 * one more request slot in the same engine. So replies that arrive while a map is being
 * fetched are delivered, not dropped, and every path shares the same retry and MOVED
 * rules.
 *
 * Up to `window` slots, each holding one request (its datagram kept for resends with the
 * same req_id), plus one slot reserved for MAP and one for HELLO. An open-addressing table
 * maps req_id -> slot, so a reply whose id is not in flight (a late duplicate) is ignored.
 * No allocation per op: slots, send queue and receive buffers are allocated at open; a
 * slot's first request over KM_DGRAM_MAX bytes gives it a KM_MSG_MAX buffer it keeps.
 *
 * Trailers (the cookie, the client key's MAC) are sealed onto the datagram at every send,
 * not once: the epoch in the header, which the MAC covers, and the cookie may change
 * between attempts.
 */

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "km_client_priv.h"

/*
 * The next request id: the counter through a bijective mix (xor-shift-multiply rounds,
 * each invertible) keyed at open: every id of a handle is distinct for 2^64 requests and
 * cannot be predicted from the ones before.
 */
static inline uint64_t
km_req_id_next(struct km_client *c)
{
	uint64_t x = c->next_req_id++ ^ c->req_id_key;

	x ^= x >> 31;
	x *= 0x7fb5d329728ea185ULL;
	x ^= x >> 27;
	x *= 0x81dadef4bc2dd44dULL;
	x ^= x >> 33;
	return x ^ (c->req_id_key >> 7);
}

/*
 * req_id -> slot table. Ids are mixed (km_req_id_next), so their low bits spread well; the table
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

void
km_slot_transmit(struct km_client *c, uint32_t idx)
{
	struct km_slot *s = &c->slots[idx];
	const struct km_cookie_state *k = &c->peers[s->peer].ck;
	bool cookie;

	s->map_gen = c->map_gen;
	s->hdr.epoch = c->no_steer ? 0 : km_client_epoch(c);
	km_hdr_encode(s->buf, &s->hdr);
	/* The cookie wherever it fits (km_trailer_room() kept room on the ops that need it);
	 * never on HELLO, which asks for one. */
	cookie = k->held && !km_is_hello_slot(c, idx) &&
		 s->len + KM_COOKIE_LEN + (c->has_key ? KM_AUTH_LEN : 0) <= KM_DGRAM_MAX;
	/* Room was checked before the request was built: sealing cannot fail. */
	s->wlen = (uint32_t)km_req_seal(s->buf, s->len, s->buf == s->big ? KM_MSG_MAX : KM_SLOT_BUF,
		cookie, k->cookie, c->key_id, c->has_key ? c->key : NULL);
	s->cookie_gen = cookie ? k->gen : 0;
	s->attempts++;
	s->state = KM_SLOT_QUEUED;
	c->txq[c->txq_len++] = idx;
}

void
km_slot_send(struct km_client *c, uint32_t idx)
{
	km_slot_route(c, idx);
	if (!km_cookie_gate(c, idx))
		km_slot_transmit(c, idx);
}

/* Client-side validation: nothing that the server would refuse leaves the host. */
static int
km_op_check(const struct km_client *c, const struct km_batch_op *op, bool internal)
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
	case KM_OP_SCAN:
		need_key = true;
		/* fallthrough */
	case KM_OP_MGET:
	case KM_OP_HELLO:
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
		if (op->vlen > KM_VALUE_MAX_LARGE ||
			KM_HDR_LEN + op->klen + op->vlen + km_trailer_room(c, op->op) > KM_MSG_MAX)
			return KM_ERR_TOO_LARGE;
	}
	return KM_OK;
}

void
km_slot_arm(struct km_client *c, uint32_t idx, struct km_batch_op *op, int32_t worker)
{
	struct km_slot *s = &c->slots[idx];
	bool has_val = op->op == KM_OP_PUT || op->op == KM_OP_CAS || op->op == KM_OP_MGET ||
		       op->op == KM_OP_HELLO || op->op == KM_OP_SCAN;

	s->op = op;
	s->done = NULL;
	s->arg = NULL;
	s->worker = worker;
	s->attempts = 0;
	s->moves = 0;
	s->busy = 0;
	s->denials = 0;
	s->first_ns = 0;
	memset(&s->hdr, 0, sizeof(s->hdr));
	s->hdr.magic = KM_PROTO_MAGIC;
	s->hdr.proto_ver = KM_PROTO_VERSION;
	s->hdr.op = op->op;
	s->hdr.key_len = (uint16_t)op->klen;
	s->hdr.val_len = has_val ? (uint32_t)op->vlen : 0;
	s->hdr.req_id = km_req_id_next(c);
	if (op->op == KM_OP_CAS || op->op == KM_OP_DEL || op->op == KM_OP_MAP ||
		op->op == KM_OP_SCAN)
		s->hdr.version = op->version;
	s->hdr.session = op->session != 0 ? op->session : c->session;
	/* Sizes were checked by km_op_check(), room by km_slot_room(): the build cannot fail. */
	s->len = (uint32_t)km_msg_build(
		s->buf, s->buf == s->big ? KM_MSG_MAX : KM_DGRAM_MAX, &s->hdr, op->key, op->val);
	km_ht_insert(c, idx);
	c->st.requests++;
	km_slot_send(c, idx);
}

/*
 * Room in slot idx for a request of len bytes (checked by km_op_check()): its datagram
 * buffer, or the KM_MSG_MAX one it got for an earlier large request, else a new one.
 * @return KM_OK or KM_ERR_NOMEM.
 */
static int
km_slot_room(struct km_client *c, uint32_t idx, size_t len)
{
	struct km_slot *s = &c->slots[idx];

	if (len <= KM_DGRAM_MAX) {
		s->buf = s->dgram;
		return KM_OK;
	}
	if (s->big == NULL && (s->big = malloc(KM_MSG_MAX)) == NULL)
		return KM_ERR_NOMEM;
	s->buf = s->big;
	return KM_OK;
}

/* Start an op in a free slot, or complete it at once when it is invalid. */
static void
km_op_start(struct km_client *c, struct km_batch_op *op, int32_t worker, bool internal)
{
	bool has_val = op->op == KM_OP_PUT || op->op == KM_OP_CAS || op->op == KM_OP_MGET ||
		       op->op == KM_OP_SCAN;
	int err;

	op->len = 0;
	op->out_version = 0;
	op->latency_ns = 0;
	err = km_op_check(c, op, internal);
	if (err == KM_OK)
		err = km_slot_room(c, c->free_slots[c->nb_free - 1],
			KM_HDR_LEN + op->klen + (has_val ? op->vlen : 0) +
				km_trailer_room(c, op->op));
	if (err != KM_OK) {
		op->err = err;
		c->pending--;
		return;
	}
	km_slot_arm(c, c->free_slots[--c->nb_free], op, worker);
}

void
km_slot_done(struct km_client *c, uint32_t idx, int err, uint64_t now)
{
	struct km_slot *s = &c->slots[idx];

	km_ht_remove(c, s->hdr.req_id);
	if (s->state == KM_SLOT_WAIT_MAP)
		c->nb_wait_map--;
	else if (s->state == KM_SLOT_WAIT_COOKIE)
		c->peers[s->peer].ck.nb_wait--;
	s->state = KM_SLOT_FREE;
	s->op->err = err;
	s->op->latency_ns = s->first_ns == 0 ? 0 : now - s->first_ns;
	if (idx == km_map_slot(c)) {
		km_refresh_step(c, err);
		return;
	}
	if (km_is_hello_slot(c, idx)) {
		km_hello_end(c, idx - c->window - 1, err, now);
		return;
	}
	c->free_slots[c->nb_free++] = idx;
	c->pending--;
	if (s->done != NULL)
		km_async_complete(c, s->op, s->done, s->arg);
}

/* Resend after 1, 2, 4 ms... up to the attempt timeout. An answered attempt does not use
 * up a timeout retry. */
static void
km_slot_backoff(struct km_client *c, uint32_t idx, uint64_t now)
{
	struct km_slot *s = &c->slots[idx];

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
}

/*
 * MOVED from a server at epoch `epoch`. A cluster node whose epoch is older than our map's
 * has not applied the map that sent us there yet: fetching its map would route us back
 * where we came from and use up the op's moves in a ping-pong. It is given time instead,
 * backing off as for BUSY, for half of the op's budget; past that (a cluster that started
 * over at epoch 1 says MOVED from older epochs for good) its map is fetched as usual.
 */
static void
km_slot_moved(struct km_client *c, uint32_t idx, uint32_t epoch, uint64_t now)
{
	struct km_slot *s = &c->slots[idx];

	c->st.moved++;
	if (c->no_steer || idx >= km_map_slot(c)) {
		km_slot_done(c, idx, KM_ERR_MOVED, now);
		return;
	}
	if (km_cluster(c) && s->worker == KM_WORKER_KEY && epoch < km_client_epoch(c) &&
		now - s->first_ns < c->timeout_ns * (c->retries + 1) / 2) {
		c->st.moved_behind++;
		km_slot_backoff(c, idx, now);
		return;
	}
	/* Explicit destination (MGET, PING): the caller regroups after the refresh. */
	if (s->worker != KM_WORKER_KEY) {
		km_refresh_want(c, s->peer);
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
	/* The server that said MOVED is asked for the map first: it has a newer one. */
	km_refresh_want(c, s->peer);
	s->state = KM_SLOT_WAIT_MAP;
	c->nb_wait_map++;
}

static void
km_dispatch(struct km_client *c, const uint8_t *buf, size_t len, uint32_t sip, uint16_t sport,
	uint64_t now)
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
	 * Only the server the request went to answers it: a reply from another address is
	 * foreign, or answers an attempt sent elsewhere before a re-route.
	 * QUEUED: the resend is not out yet; its own reply will come. MOVED, BUSY and DENIED
	 * for want of a cookie only concern the attempt in flight (a parked request has
	 * already acted on one). MOVED comes from the worker that received the request, so
	 * one from another port answers an earlier attempt: stale. (BUSY comes from the
	 * owner, which may not be the worker we sent to.)
	 */
	if (sip != s->ip || s->state == KM_SLOT_QUEUED || m.hdr.op != op->op ||
		((m.hdr.status == KM_ST_MOVED || m.hdr.status == KM_ST_BUSY ||
			 (m.hdr.status == KM_ST_DENIED && m.hdr.version == KM_DENY_COOKIE)) &&
			s->state != KM_SLOT_SENT) ||
		(m.hdr.status == KM_ST_MOVED && sport != s->port)) {
		c->st.stray_replies++;
		return;
	}
	if (op->op != KM_OP_MAP)
		km_note_epoch(c, m.hdr.epoch, s->peer, now);

	switch (m.hdr.status) {
	case KM_ST_MOVED:
		km_slot_moved(c, idx, m.hdr.epoch, now);
		return;
	case KM_ST_BUSY:
		/* The server asks for time (a shard being handed over, overload): back off for
		 * as long as the op's whole budget (timeout x (retries + 1) since its first send)
		 * lasts. */
		if (now - s->first_ns >= c->timeout_ns * (c->retries + 1)) {
			km_slot_done(c, idx, KM_ERR_BUSY, now);
			return;
		}
		km_slot_backoff(c, idx, now);
		return;
	case KM_ST_DENIED:
		/* The reason travels in the version field. */
		c->st.denied++;
		if (m.hdr.version == KM_DENY_COOKIE && !km_is_hello_slot(c, idx)) {
			km_cookie_denied(c, idx, now);
			return;
		}
		km_slot_done(
			c, idx, m.hdr.version == KM_DENY_AUTH ? KM_ERR_AUTH : KM_ERR_DENIED, now);
		return;
	}
	err = km_status_err(m.hdr.status);
	op->out_version = m.hdr.version;
	if (op->op == KM_OP_GET && (err == KM_OK || err == KM_ERR_NOT_FOUND))
		km_crew_reply(c, op->key, op->klen, err == KM_OK && (m.hdr.flags & KM_F_CREW), now);
	if (err == KM_OK && (km_op_grows(op->op) || op->op == KM_OP_HELLO)) {
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

			/* One socket for every server: the address is set per datagram. */
			memset(&c->txaddr[i], 0, sizeof(c->txaddr[i]));
			c->txaddr[i].sin_family = AF_INET;
			c->txaddr[i].sin_addr.s_addr = s->ip;
			c->txaddr[i].sin_port = htons(s->port);
			c->txiov[i].iov_base = s->buf;
			c->txiov[i].iov_len = s->wlen;
			memset(&c->txmsg[i], 0, sizeof(c->txmsg[i]));
			c->txmsg[i].msg_hdr.msg_name = &c->txaddr[i];
			c->txmsg[i].msg_hdr.msg_namelen = sizeof(c->txaddr[i]);
			c->txmsg[i].msg_hdr.msg_iov = &c->txiov[i];
			c->txmsg[i].msg_hdr.msg_iovlen = 1;
		}
		/* Stamped before the call: sending a batch takes time a request waits too. */
		now = km_now();
		r = sendmmsg(c->fd, c->txmsg, c->txq_len, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
				return 0;
			return KM_ERR_SYSTEM;
		}
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

		/* Truncated datagrams are not valid replies; the source is checked against
		 * the request's destination by km_dispatch(). */
		if ((c->rxmsg[i].msg_hdr.msg_flags & MSG_TRUNC) != 0 ||
			c->rxmsg[i].msg_hdr.msg_namelen < sizeof(*from) ||
			from->sin_family != AF_INET) {
			c->st.stray_replies++;
			continue;
		}
		km_dispatch(c, c->rxiov[i].iov_base, c->rxmsg[i].msg_len, from->sin_addr.s_addr,
			ntohs(from->sin_port), now);
	}
	return r;
}

/* Deadlines: time out or resend; recompute the earliest one. */
static void
km_expire(struct km_client *c, uint64_t now)
{
	uint64_t earliest = UINT64_MAX;
	uint32_t i;

	for (i = 0; i < c->nb_slots; i++) {
		struct km_slot *s = &c->slots[i];

		if (s->state != KM_SLOT_SENT && s->state != KM_SLOT_BACKOFF)
			continue;
		if (now < s->deadline) {
			if (s->deadline < earliest)
				earliest = s->deadline;
			continue;
		}
		if (s->state == KM_SLOT_SENT && i == km_map_slot(c)) {
			/* MAP: the next candidate server, within the refresh's own budget. */
			c->st.timeouts++;
			if (!km_refresh_timeout(c)) {
				km_slot_done(c, i, KM_ERR_TIMEOUT, now);
				continue;
			}
		} else if (s->state == KM_SLOT_SENT) {
			c->st.timeouts++;
			/* A cluster node that does not answer may be down and its shards
			 * promoted elsewhere: the map is fetched again (from any node), and
			 * the retries go where it says. */
			if (km_cluster(c) && s->worker == KM_WORKER_KEY)
				km_refresh_want(c, -1);
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

	for (i = 0; i < c->nb_slots; i++) {
		struct km_slot *s = &c->slots[i];

		if (s->state == KM_SLOT_FREE)
			continue;
		km_ht_remove(c, s->hdr.req_id);
		s->state = KM_SLOT_FREE;
		s->op->err = KM_ERR_SYSTEM;
		if (i < km_map_slot(c))
			c->free_slots[c->nb_free++] = i;
		if (s->done != NULL)
			km_async_complete(c, s->op, s->done, s->arg);
	}
	for (; next < n; next++)
		ops[next].err = KM_ERR_SYSTEM;
	/* Async ops not started yet fail too. */
	for (; c->aq_len > 0; c->aq_len--) {
		struct km_async_req *q = &c->aq[c->aq_head];

		q->op->err = KM_ERR_SYSTEM;
		km_async_complete(c, q->op, q->done, q->arg);
		c->aq_head = (c->aq_head + 1) % c->aq_cap;
	}
	c->refresh.state = KM_REFRESH_IDLE;
	c->refresh.result = KM_ERR_SYSTEM;
	c->txq_len = 0;
	c->pending = 0;
	c->nb_wait_map = 0;
	for (i = 0; i < KM_PEERS_MAX; i++) {
		c->peers[i].ck.nb_wait = 0;
		c->peers[i].ck.hello_busy = false;
		c->peers[i].ck.hello_result = KM_ERR_SYSTEM;
	}
	c->earliest = UINT64_MAX;
	errno = saved;
	return KM_ERR_SYSTEM;
}

/*
 * Run ops to completion, keeping up to window in flight, plus any map refresh they
 * trigger. workers: explicit destination per op, or NULL to route each op by its key.
 * @return 0 (each op->err set) or KM_ERR_SYSTEM.
 */
int
km_run(struct km_client *c, struct km_batch_op *ops, const int32_t *workers, size_t n,
	bool internal)
{
	size_t next = 0;
	int r;

	/* The blocking calls own the engine while they run: not with async ops pending, nor
	 * from a callback (the last one's op is no longer pending). */
	if (km_engine_busy(c)) {
		for (; next < n; next++)
			ops[next].err = KM_ERR_INVAL;
		return KM_ERR_INVAL;
	}
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
		/* A HELLO started ahead of a cookie's expiry may still be out: its reply is
		 * taken by a later call. */
		if (c->pending == 0 && c->refresh.state == KM_REFRESH_IDLE &&
			!(c->sync_peer >= 0 && c->peers[c->sync_peer].ck.hello_busy))
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

int
km_run_one(struct km_client *c, struct km_batch_op *op, int32_t worker)
{
	int rc = km_run(c, op, &worker, 1, false);

	return rc < 0 ? rc : op->err;
}

/* ---- Asynchronous requests (km_client.h) ------------------------------------------------ */

void
km_async_complete(struct km_client *c, struct km_batch_op *op, km_done_fn done, void *arg)
{
	struct km_async_req *n;
	size_t cap;

	if (c->adone_len == c->adone_cap) {
		/* Room was made at submit (one entry per op): this only grows on a failure. */
		cap = c->adone_cap != 0 ? 2 * c->adone_cap : 64;
		n = realloc(c->adone, cap * sizeof(*n));
		if (n == NULL)
			return; /* cannot happen: km_submit reserved it */
		c->adone = n;
		c->adone_cap = cap;
	}
	c->adone[c->adone_len++] = (struct km_async_req){op, done, arg};
}

int
km_submit(struct km_client *c, struct km_batch_op *op, km_done_fn done, void *arg)
{
	struct km_async_req *n;
	size_t cap, i;

	if (c == NULL || op == NULL || done == NULL)
		return KM_ERR_INVAL;
	/* Room for its completion now, so that completing never needs memory. */
	if (c->adone_cap < c->async_pending + 1) {
		cap = c->adone_cap != 0 ? 2 * c->adone_cap : 64;
		while (cap < c->async_pending + 1)
			cap *= 2;
		n = realloc(c->adone, cap * sizeof(*n));
		if (n == NULL)
			return KM_ERR_NOMEM;
		c->adone = n;
		c->adone_cap = cap;
	}
	if (c->aq_len == c->aq_cap) {
		cap = c->aq_cap != 0 ? 2 * c->aq_cap : 64;
		n = malloc(cap * sizeof(*n));
		if (n == NULL)
			return KM_ERR_NOMEM;
		for (i = 0; i < c->aq_len; i++)
			n[i] = c->aq[(c->aq_head + i) % c->aq_cap];
		free(c->aq);
		c->aq = n;
		c->aq_head = 0;
		c->aq_cap = cap;
	}
	c->aq[(c->aq_head + c->aq_len) % c->aq_cap] = (struct km_async_req){op, done, arg};
	c->aq_len++;
	c->async_pending++;
	return KM_OK;
}

/* Start queued ops while slots are free. */
static void
km_async_start(struct km_client *c)
{
	struct km_async_req q;
	uint32_t idx;
	uint32_t before;

	while (c->aq_len > 0 && c->nb_free > 0) {
		q = c->aq[c->aq_head];
		c->aq_head = (c->aq_head + 1) % c->aq_cap;
		c->aq_len--;
		idx = c->free_slots[c->nb_free - 1];
		before = c->nb_free;
		c->pending++;
		km_op_start(c, q.op, KM_WORKER_KEY, false);
		if (c->nb_free < before) {
			c->slots[idx].done = q.done;
			c->slots[idx].arg = q.arg;
		} else {
			km_async_complete(c, q.op, q.done, q.arg); /* invalid: its err is set */
		}
	}
}

/* Run the callbacks of the ops completed (they may submit more). @return how many. */
static int
km_async_deliver(struct km_client *c)
{
	struct km_async_req q;
	size_t i = 0;

	/* Callbacks may submit: km_submit never touches adone's entries, only grows it. */
	for (i = 0; i < c->adone_len; i++) {
		q = c->adone[i];
		c->async_pending--;
		q.done(q.op, q.arg);
	}
	c->adone_len = 0;
	return (int)i;
}

int
km_process(struct km_client *c)
{
	int r, got = 0, done = 0, rounds, burst;
	uint64_t now;

	if (c == NULL || c->in_process)
		return KM_ERR_INVAL;
	c->in_process = true;
	/* A few rounds: what a reply frees starts the next op at once. */
	for (rounds = 0; rounds < 4; rounds++) {
		if (c->refresh.state == KM_REFRESH_WANTED)
			km_refresh_begin(c);
		km_async_start(c);
		if (c->txq_len > 0 && km_flush(c) < 0)
			goto fail;
		/* Every reply already there before any deadline is judged: a loop that came
		 * back late must not resend (or time out) what was answered meanwhile. */
		for (r = 0, burst = 0; burst < 64; burst++) {
			got = km_recv(c);
			if (got < 0)
				break;
			r += got;
			if (got < KM_RX_BURST)
				break;
		}
		if (got < 0)
			goto fail;
		now = km_now();
		if (now >= c->earliest)
			km_expire(c, now);
		if (c->adone_len == 0 && r == 0 && c->refresh.state != KM_REFRESH_WANTED)
			break;
		done += km_async_deliver(c);
	}
	km_async_start(c);
	if (c->txq_len > 0 && km_flush(c) < 0)
		goto fail;
	done += km_async_deliver(c);
	c->in_process = false;
	return done;
fail:
	/* Every pending op completes with KM_ERR_SYSTEM, its callback run. */
	km_abort(c, NULL, 0, 0);
	km_async_deliver(c);
	c->in_process = false;
	return KM_ERR_SYSTEM;
}

int
km_async_fd(const struct km_client *c)
{
	return c != NULL ? c->fd : -1;
}

int
km_async_want_write(const struct km_client *c)
{
	return c != NULL && c->txq_len > 0;
}

int
km_async_timeout_ms(const struct km_client *c)
{
	uint64_t now, ms;

	if (c == NULL || (c->async_pending == 0 && c->refresh.state == KM_REFRESH_IDLE))
		return -1;
	if (c->adone_len > 0 || (c->aq_len > 0 && c->nb_free > 0) ||
		c->refresh.state == KM_REFRESH_WANTED)
		return 0;
	/* Datagrams waiting for room in the socket buffer (and no deadline armed for them
	 * yet): soon, whether the caller watches for writability or not. */
	if (c->txq_len > 0 && c->earliest == UINT64_MAX)
		return 1;
	if (c->earliest == UINT64_MAX)
		return -1;
	now = km_now();
	if (now >= c->earliest)
		return 0;
	ms = (c->earliest - now + 999999) / 1000000;
	return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

size_t
km_async_pending(const struct km_client *c)
{
	return c != NULL ? c->async_pending : 0;
}
