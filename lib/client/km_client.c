/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libkeymap: opening and closing a handle, error names, the single-op calls and km_batch.
 * The work is done by the request engine (km_engine.c); km_client_priv.h lists the files.
 */

#include <errno.h>
#include <stddef.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "km_client_priv.h"
#include "km_util.h"

/* The public names are the wire values: keep them in step with km_proto.h. */
_Static_assert((int)KM_BATCH_PING == (int)KM_OP_PING && (int)KM_BATCH_GET == (int)KM_OP_GET &&
		       (int)KM_BATCH_PUT == (int)KM_OP_PUT && (int)KM_BATCH_CAS == (int)KM_OP_CAS &&
		       (int)KM_BATCH_DEL == (int)KM_OP_DEL,
	"batch op codes are the wire op codes");
/* km_client.h is installed alone, so it cannot include km_util.h: its copy of the key
 * limit is checked here against the one definition, lib/util's. */
_Static_assert(KM_CLIENT_KEY_MAX == KM_KEY_MAX, "KM_CLIENT_KEY_MAX is lib/util's KM_KEY_MAX");
_Static_assert(KM_CLIENT_VALUE_MAX == KM_VALUE_MAX_LARGE, "KM_CLIENT_VALUE_MAX is the protocol's");
_Static_assert(KM_CLIENT_AUTH_LEN == KM_AUTH_LEN, "KM_CLIENT_AUTH_LEN is the protocol's");
_Static_assert(
	KM_CLIENT_HELLO_COOKIES == KM_HELLO_F_COOKIES && KM_CLIENT_HELLO_AUTH == KM_HELLO_F_AUTH,
	"HELLO flags are the wire's");

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
		return "not allowed: the client key may not do this, or the server requires a "
		       "cookie and gives none";
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
	case KM_ERR_DAMAGED:
		return "damaged on the server (rewrite or delete the key)";
	case KM_ERR_FULL:
		return "server memory full (write not applied)";
	case KM_ERR_AUTH:
		return "authentication failed: unknown key id or wrong key, or the server "
		       "requires a key";
	case KM_ERR_RESOLVE:
		return "the server's name does not resolve";
	case KM_ERR_UNREACHABLE:
		return "no server answered (unreachable, not running, or not allowing this "
		       "client)";
	}
	return "unknown error";
}

int
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
	case KM_ST_DAMAGED:
		return KM_ERR_DAMAGED;
	case KM_ST_FULL:
		return KM_ERR_FULL;
	}
	return KM_ERR_PROTO;
}

void
km_client_get_stats(const struct km_client *c, struct km_client_stats *st)
{
	if (c == NULL || st == NULL)
		return;
	*st = c->st;
}

static int
km_client_alloc(struct km_client *c)
{
	uint32_t nslots = c->window + 1 + KM_PEERS_MAX; /* and the MAP and HELLO slots */
	uint32_t htsize = 1, i;

	while (htsize < 4 * nslots)
		htsize <<= 1;
	c->ht_mask = htsize - 1;
	c->nb_slots = nslots;
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
	c->slot_bufs = malloc((size_t)nslots * KM_SLOT_BUF);
	if (c->slot_bufs == NULL)
		return KM_ERR_NOMEM;
	for (i = 0; i < nslots; i++)
		c->slots[i].buf = c->slots[i].dgram = c->slot_bufs + (size_t)i * KM_SLOT_BUF;
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

/* The size of soname 2's options (up to reserved): what size 0 means, for ever. */
#define KM_OPTS_SIZE_V2 56
_Static_assert(offsetof(struct km_client_opts, reserved) + sizeof(uint32_t) == KM_OPTS_SIZE_V2,
	"soname 2's km_client_opts ends at reserved, byte 56");

int
km_client_open(const struct km_client_opts *given, struct km_client **out)
{
	struct km_client_opts o, *opts = &o;
	struct km_client *c;
	int rc, buf = KM_SOCK_BUF;
	size_t size, i;

	if (given == NULL || out == NULL)
		return KM_ERR_INVAL;
	/* A caller built with an older header passes fewer fields (the rest: defaults); one
	 * built with a newer header, more: accepted if they are zero (not asked for). size 0
	 * is soname 2's struct, whatever this library's is: KM_OPTS_SIZE_V2 never changes. */
	size = given->size != 0 ? given->size : KM_OPTS_SIZE_V2;
	if (size < offsetof(struct km_client_opts, host) + sizeof(o.host) || size > 4096)
		return KM_ERR_INVAL;
	for (i = sizeof(o); i < size; i++)
		if (((const uint8_t *)given)[i] != 0)
			return KM_ERR_INVAL;
	memset(&o, 0, sizeof(o));
	memcpy(&o, given, size < sizeof(o) ? size : sizeof(o));
	if (o.reserved != 0)
		return KM_ERR_INVAL;
	if (opts->host == NULL || opts->host[0] == '\0' || opts->window > KM_WINDOW_MAX ||
		opts->retries > KM_RETRIES_MAX)
		return KM_ERR_INVAL;
	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return KM_ERR_NOMEM;
	c->fd = -1;
	c->sync_peer = -1;
	c->refresh.hint = -1;
	c->timeout_ns =
		(uint64_t)(opts->timeout_ms != 0 ? opts->timeout_ms : KM_DEFAULT_TIMEOUT_MS) *
		1000000ull;
	c->retries = opts->retries != 0 ? opts->retries : KM_DEFAULT_RETRIES;
	c->window = opts->window != 0 ? opts->window : KM_DEFAULT_WINDOW;
	c->session = opts->session;
	c->no_steer = opts->no_steer != 0;
	c->earliest = UINT64_MAX;
	if (opts->auth_key != NULL) {
		rc = KM_ERR_INVAL;
		if (km_key_parse(opts->auth_key, &c->key_id, c->key) != 0)
			goto fail;
		c->has_key = true;
	}

	/* Seeds: every one must resolve; none is asked anything yet. */
	rc = km_seeds_parse(c, opts->host, opts->port != 0 ? opts->port : KM_DEFAULT_PORT);
	if (rc != KM_OK)
		goto fail;
	rc = km_client_alloc(c);
	if (rc != KM_OK)
		goto fail;
	/* Ids of different clients (and runs) must not collide at the server's dedup, and
	 * must not be guessable (another source reusing one is not a retry there, but a
	 * guess should not even come close). */
	if (getrandom(&c->next_req_id, sizeof(c->next_req_id), GRND_NONBLOCK) !=
			sizeof(c->next_req_id) ||
		getrandom(&c->req_id_key, sizeof(c->req_id_key), GRND_NONBLOCK) !=
			sizeof(c->req_id_key)) {
		c->next_req_id = km_now() ^ ((uint64_t)getpid() << 32);
		c->req_id_key = km_now() * 0x9e3779b97f4a7c15ULL;
	}

	rc = KM_ERR_SYSTEM;
	c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		goto fail;
	/* Best effort: a full window of replies must not overflow the receive buffer. */
	(void)setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	(void)setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));

	if (!c->no_steer) {
		rc = km_map_refresh(c);
		if (rc == KM_ERR_SYSTEM || rc == KM_ERR_NOMEM)
			goto fail;
		/* No seed answered MAP: an error, unless asked to start unsteered (to seed 0,
		 * which works with one server) until a later refresh succeeds. */
		if (rc == KM_ERR_TIMEOUT && !opts->lazy) {
			rc = KM_ERR_UNREACHABLE;
			goto fail;
		}
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
	uint32_t i;

	if (c == NULL)
		return;
	if (c->fd >= 0)
		close(c->fd);
	km_shardmap_free(c->map);
	free(c->refresh.ids);
	free(c->refresh.owners);
	free(c->aq);
	free(c->adone);
	for (i = 0; c->slots != NULL && i <= c->window; i++)
		free(c->slots[i].big);
	free(c->slot_bufs);
	free(c->slots);
	free(c->free_slots);
	free(c->ht);
	free(c->txq);
	free(c->txmsg);
	free(c->txiov);
	free(c->txaddr);
	free(c->rxbuf);
	free(c->mget);
	/* The key's secret does not outlive the handle in freed memory. */
	explicit_bzero(c->key, sizeof(c->key));
	free(c);
	errno = saved;
}

int
km_client_set_session(struct km_client *c, uint32_t session)
{
	c->session = session;
	return KM_OK;
}

uint32_t
km_client_session(const struct km_client *c)
{
	return c->session;
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
	if (c->map != NULL && !c->no_steer && worker >= km_shardmap_nb_workers(c->map))
		return KM_ERR_INVAL;
	/* A cluster map's ports were checked when it was built. */
	if (!km_cluster(c) && (uint32_t)km_base_port(c) + worker > UINT16_MAX)
		return KM_ERR_INVAL;
	memset(&op, 0, sizeof(op));
	op.op = KM_OP_PING;
	return km_run_one(c, &op, (int32_t)worker);
}

/* Run one keyed op built by the caller; report its length and version (either may be NULL). */
static int
km_run_key(struct km_client *c, struct km_batch_op *op, size_t *len, uint64_t *version)
{
	int rc = km_run_one(c, op, KM_WORKER_KEY);

	if (len != NULL)
		*len = op->len;
	if (version != NULL)
		*version = op->out_version;
	return rc;
}

int
km_get(struct km_client *c, const void *key, size_t klen, void *buf, size_t cap, size_t *len,
	uint64_t *version)
{
	struct km_batch_op op = {.op = KM_OP_GET, .key = key, .klen = klen, .buf = buf, .cap = cap};

	if (c == NULL || (buf == NULL && cap != 0))
		return KM_ERR_INVAL;
	return km_run_key(c, &op, len, version);
}

int
km_put(struct km_client *c, const void *key, size_t klen, const void *val, size_t vlen,
	uint64_t *version)
{
	struct km_batch_op op = {
		.op = KM_OP_PUT, .key = key, .klen = klen, .val = val, .vlen = vlen};

	if (c == NULL)
		return KM_ERR_INVAL;
	return km_run_key(c, &op, NULL, version);
}

int
km_cas(struct km_client *c, const void *key, size_t klen, const void *val, size_t vlen,
	uint64_t expect, uint64_t *version)
{
	struct km_batch_op op = {.op = KM_OP_CAS,
		.key = key,
		.klen = klen,
		.val = val,
		.vlen = vlen,
		.version = expect};

	if (c == NULL)
		return KM_ERR_INVAL;
	return km_run_key(c, &op, NULL, version);
}

int
km_del(struct km_client *c, const void *key, size_t klen, uint64_t expect)
{
	struct km_batch_op op = {.op = KM_OP_DEL, .key = key, .klen = klen, .version = expect};

	if (c == NULL)
		return KM_ERR_INVAL;
	return km_run_key(c, &op, NULL, NULL);
}
