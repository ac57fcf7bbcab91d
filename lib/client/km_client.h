/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_CLIENT_H
#define KM_CLIENT_H

/**
 * @file
 * libkeymap: the UDP client library of keymap. Plain sockets, no DPDK.
 *
 * A client handle owns one UDP socket. Requests are steered to the owner worker's UDP
 * port (base port + worker index) using the shard map fetched with MAP; a MOVED reply
 * (or a reply carrying a newer epoch) makes the client fetch the map again and retry.
 * Pointed at a cluster (several seeds in km_client_opts.host, or any node), the client
 * takes the cluster's map (encoding 2.0) and sends each request to the owning node's
 * worker port, from the same socket (sendto per datagram; a reply is taken only from the
 * address its request went to).
 * Every request has a 64-bit request id; retries after a timeout reuse it, so the server
 * applies a retried write at most once.
 *
 * Concurrency: a handle is single-threaded: it may move between threads, but calls on one
 * handle must not overlap; use one handle per thread. Different handles share nothing
 * (the library keeps no global state), so threads with their own handles never wait on
 * each other.
 * Errors: functions return 0 (KM_OK) or a negative enum km_err value; km_strerror()
 * names it.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum km_err {
	KM_OK = 0,
	KM_ERR_NOT_FOUND = -1,        /* key absent */
	KM_ERR_VERSION_MISMATCH = -2, /* CAS/DEL version condition failed */
	KM_ERR_TOO_LARGE = -3,        /* key or value over the limit */
	KM_ERR_BAD_REQUEST = -4,      /* server refused the request as malformed */
	KM_ERR_BUSY = -5,             /* server overloaded: retry later */
	KM_ERR_DENIED = -6,           /* not allowed */
	KM_ERR_SERVER = -7,           /* server-side failure */
	KM_ERR_TIMEOUT = -8,          /* no reply after all retries */
	KM_ERR_INVAL = -9,            /* bad argument */
	KM_ERR_SYSTEM = -10,          /* socket error, see errno */
	KM_ERR_PROTO = -11,           /* unexpected reply */
	KM_ERR_MOVED = -12,           /* still MOVED after refreshing the map */
	KM_ERR_NOMEM = -13,
	KM_ERR_BUFFER = -14,      /* value larger than the caller's buffer (length reported) */
	KM_ERR_MAP_VERSION = -15, /* the server's MAP encoding has a major version this
				   * library does not know: requests go unsteered */
	KM_ERR_DAMAGED = -16,     /* the key's stored value, or its shard, is damaged or
				   * missing on the server: rewrite or delete the key */
	KM_ERR_FULL = -17,        /* the server's memory bound is reached: the write was
				   * not applied (reads and deletes work) */
	KM_ERR_AUTH = -18,        /* the server refused the client key: unknown key id or
				   * wrong secret, or it requires a key and none is set */
	KM_ERR_RESOLVE = -19,     /* km_client_open: a seed's name does not resolve */
	KM_ERR_UNREACHABLE = -20, /* km_client_open: no seed answered (not with lazy) */
};

/**
 * Text for an error code (never NULL, static storage).
 * @note Context: any thread.
 */
const char *km_strerror(int err);

struct km_client_opts {
	size_t size;             /* KM_CLIENT_OPTS_SIZE as the caller was built with (0:
				  * soname 2's, the first with this field): a library newer
				  * than the caller's header reads only that many bytes */
	const char *host;        /* server IPv4 address or name, required; or several seeds
				  * of a cluster, comma-separated, each "name[:port]" (at
				  * most 16; e.g. "10.0.0.1,10.0.0.2:7071"): MAP is asked of
				  * them in order, the next one on timeout */
	uint16_t port;           /* base UDP port (worker 0), default 7070; the port of
				  * every seed given without one */
	unsigned int timeout_ms; /* per attempt, default 200 */
	unsigned int retries;    /* attempts after the first, default 3 */
	uint32_t session;        /* session id carried in requests, 0 = none (see
				  * km_client_set_session) */
	int no_steer;            /* 1: send everything to the first seed's base port, no MAP */
	unsigned int window;     /* batch API: requests in flight, default 64 */
	const char *auth_key;    /* client key "ID:HEX" (key id 1..4294967295, 32 hex
				  * digits): every request carries a MAC; NULL = none */
	int lazy;                /* 1: open even when no seed answers (unsteered to the
				  * first seed until a later map refresh succeeds); 0:
				  * KM_ERR_UNREACHABLE then */
	uint32_t reserved;       /* 0 (a later field: no tail padding to misread) */
};

/** What to put in km_client_opts.size. */
#define KM_CLIENT_OPTS_SIZE sizeof(struct km_client_opts)

struct km_client;

/**
 * Open a client. Fetches the shard map unless opts->no_steer, from the first seed that
 * answers (the next one when a seed times out); the seed that answered is the home
 * server (unsteered requests and a single server's map go there). When no seed answers
 * MAP the open fails with KM_ERR_UNREACHABLE, unless opts->lazy: then the client is
 * unsteered (epoch 0), every request going to the first seed's base port, as with one
 * server, until a later refresh succeeds. With no_steer nothing is asked at open.
 *
 * Address validation is transparent: when the server refuses a reply larger than its
 * request (GET, MGET, MAP) for want of a cookie, the handle fetches one with HELLO and
 * resends the request; the cookie is then attached to every request and renewed before
 * it expires. A server without HELLO is spoken to as before.
 * @return 0, KM_ERR_RESOLVE (a seed's name does not resolve), KM_ERR_UNREACHABLE (no
 *   seed answered MAP within timeout_ms x (retries + 1) each), KM_ERR_INVAL (a bad
 *   option, opts->size larger than this library's struct with its extra bytes not zero, a
 *   malformed auth_key, a host list with an empty entry, a bad port, over 16 seeds),
 *   KM_ERR_SYSTEM, KM_ERR_NOMEM.
 * @note Context: any thread; it blocks for the MAP round trips. The handle then belongs
 *   to the calling thread (it may be handed to another one between calls).
 */
int km_client_open(const struct km_client_opts *opts, struct km_client **out);

/**
 * Close a handle (NULL is allowed): its socket and memory. Keeps errno.
 * @note Context: the thread that uses c, with no call on c in progress.
 */
void km_client_close(struct km_client *c);

/**
 * Round trip to worker `worker` (0 = base port); with a cluster map, `worker` is a global
 * owner (the workers of the map's nodes in node table order). Blocks until the reply or
 * the timeout.
 * @note Context: the thread that uses c (a handle is single-threaded).
 */
int km_ping(struct km_client *c, unsigned int worker);

/**
 * GET. On success copies the value into buf (cap bytes) and sets *len and *version.
 * If the value is larger than cap: KM_ERR_BUFFER with *len = the value's length.
 * Blocks until the reply, the retries or MOVED handling end.
 * @note Context: the thread that uses c (a handle is single-threaded).
 */
int km_get(struct km_client *c, const void *key, size_t klen, void *buf, size_t cap, size_t *len,
	uint64_t *version);

/**
 * PUT (unconditional). *version (may be NULL) receives the new version. Blocks.
 * @note Context: the thread that uses c (a handle is single-threaded).
 */
int km_put(struct km_client *c, const void *key, size_t klen, const void *val, size_t vlen,
	uint64_t *version);

/**
 * CAS: write only if the entry's version is `expect` (0: only if the key is absent).
 * On KM_ERR_VERSION_MISMATCH *version holds the current version (0 if absent). Blocks.
 * @note Context: the thread that uses c (a handle is single-threaded).
 */
int km_cas(struct km_client *c, const void *key, size_t klen, const void *val, size_t vlen,
	uint64_t expect, uint64_t *version);

/**
 * DEL; expect 0 = unconditional, else only if the version matches. Blocks.
 * @note Context: the thread that uses c (a handle is single-threaded).
 */
int km_del(struct km_client *c, const void *key, size_t klen, uint64_t expect);

/** One key of an MGET; results filled in per key. */
struct km_mget_item {
	const void *key;
	size_t klen;
	void *buf; /* caller's buffer for the value */
	size_t cap;
	size_t len;       /* out: value length */
	uint64_t version; /* out */
	int err;          /* out: KM_OK, KM_ERR_NOT_FOUND, KM_ERR_BUFFER, ... */
};

/**
 * MGET: keys are grouped by owner worker (node and worker in a cluster) and sent in as
 * few datagrams as fit; entries
 * the server could not fit in a reply are fetched with GET.
 * @return 0 when every item has its own err set, or an error for the whole call.
 * @note Context: the thread that uses c (a handle is single-threaded); blocks.
 */
int km_mget(struct km_client *c, struct km_mget_item *items, size_t n);

/** One entry of a SCAN page (km_scan). key and val point into the library's buffers:
 * valid during the callback only. */
struct km_scan_item {
	const void *key;
	size_t klen;
	const void *val; /* NULL with KM_SCAN_KEYS_ONLY */
	size_t vlen;
	uint64_t version;
};

/** km_scan() flags. */
#define KM_SCAN_KEYS_ONLY 0x1 /* keys and versions, no values */

typedef void (*km_scan_fn)(void *arg, const struct km_scan_item *it);

/**
 * SCAN: one page of the keys that begin with prefix, from *cursor (0: the start). The
 * prefix must end the routing part of its keys, so that one shard holds them: with the
 * default routing (one component, '/'), an entity and its separator ("user42/") or more
 * ("user42/cart/"). fn is called for each entry of the page (at most max; 0: as many as
 * one datagram carries), then *cursor is set to where the next page starts, 0 when the
 * scan is complete. Entries whose value did not fit in a page, or whose last write the
 * server's replicas have not acknowledged yet, are fetched with GET (and left out if
 * deleted meanwhile). Pages come in the server's scan order (by key hash), not sorted by
 * key. Over a whole scan every key is listed at most once, and every key present and not
 * written from the first page to the last exactly once, with the value it had when its
 * page was read; keys written meanwhile may or may not be listed (docs/protocol.md 4.3).
 * @return the number of entries given to fn (0 is possible before the end: a page may be
 *   empty), or an error with *cursor unchanged and nothing of the page given to fn (the
 *   page's values are fetched before fn sees any entry: calling again is safe):
 *   KM_ERR_INVAL (prefix empty or not ending its routing part under the client's map,
 *   unknown flags, fn NULL), KM_ERR_TOO_LARGE (prefix over 250 bytes),
 *   KM_ERR_BAD_REQUEST (the prefix stops at a part the server's partition shifter spread
 *   over shards: name the added component too), KM_ERR_BUSY (the shard is handed over,
 *   or that part's keys are moving), KM_ERR_TIMEOUT, KM_ERR_DAMAGED, KM_ERR_DENIED, ...
 * @note Context: the thread that uses c (a handle is single-threaded); blocks.
 */
int km_scan(struct km_client *c, const void *prefix, size_t plen, uint64_t *cursor,
	unsigned int max, unsigned int flags, km_scan_fn fn, void *arg);

/* Batch (asynchronous) API: many requests in flight on one socket (sendmmsg/recvmmsg). */

/** Operations of km_batch_op.op (their wire op codes, so KM_OP_* from km_proto.h work too). */
enum km_batch_opcode {
	KM_BATCH_PING = 1,
	KM_BATCH_GET = 2,
	KM_BATCH_PUT = 4,
	KM_BATCH_CAS = 5,
	KM_BATCH_DEL = 6,
};

/**
 * Limits of protocol version 1 (checked by the client before sending). Copies, since this
 * header is installed alone: the library's build checks them against lib/util's
 * KM_KEY_MAX, the protocol's KM_VALUE_MAX_LARGE and KM_AUTH_LEN. A request or reply over
 * the path MTU (a value over about 1400 bytes at MTU 1500) travels as IPv4 fragments; the
 * server accepts values up to its [store] value_max (docs/protocol.md, section 3). With a
 * client key (auth_key) every request also carries KM_CLIENT_AUTH_LEN bytes (key id and
 * MAC): a PUT's key and value must leave that room in 65,000 bytes.
 */
#define KM_CLIENT_KEY_MAX   250
#define KM_CLIENT_VALUE_MAX 64959
#define KM_CLIENT_AUTH_LEN  20

struct km_batch_op {
	uint8_t op; /* enum km_batch_opcode */
	const void *key;
	size_t klen;
	const void *val; /* PUT/CAS */
	size_t vlen;
	uint64_t version; /* CAS/DEL expected version */
	void *buf;        /* GET: value buffer (may be NULL to discard the value) */
	size_t cap;
	uint32_t session; /* session id of this request; 0: the handle's */
	/* results */
	int err;
	size_t len;
	uint64_t out_version;
	uint64_t latency_ns; /* first send to reply, retries included (0: never sent) */
};

/**
 * Run n operations keeping up to opts->window in flight; each op's err is set.
 * Retries and MOVED handling as for the sync calls.
 * @return number of ops with err == KM_OK or KM_ERR_NOT_FOUND, or a negative error
 *   for the whole call (bad argument, socket failure).
 * @note Context: the thread that uses c (a handle is single-threaded); blocks until
 *   every op has completed. ops and their buffers belong to the call until it returns.
 */
int km_batch(struct km_client *c, struct km_batch_op *ops, size_t n);

/**
 * Asynchronous requests, for event loops (epoll, libuv, asyncio): km_submit queues an op
 * and returns at once; km_process does whatever can be done without blocking (sends,
 * receives, resends, map refreshes) and calls the callback of every op completed, with
 * op->err set as km_batch would. Wait for km_async_fd to be readable (and writable when
 * km_async_want_write) or for km_async_timeout_ms, then call km_process; any number of
 * ops may be submitted, opts->window of them in flight at once.
 *
 * done(op, arg) runs inside km_process, on its thread; it may submit more ops, it must
 * not call a blocking call of the handle (km_get, km_batch...: they return KM_ERR_INVAL
 * while async ops are pending) nor close it. An op and its buffers belong to the library
 * from km_submit until its callback.
 */
typedef void (*km_done_fn)(struct km_batch_op *op, void *arg);

/**
 * Queue op (checked: an invalid op completes with its error at the next km_process).
 * @return 0, KM_ERR_INVAL (op or done NULL), KM_ERR_NOMEM.
 * @note Context: the thread that uses c.
 */
int km_submit(struct km_client *c, struct km_batch_op *op, km_done_fn done, void *arg);

/**
 * Progress without blocking: send what can be sent, take the replies there are, resend
 * or time out what is due, complete ops (their callbacks).
 * @return ops completed (callbacks run), KM_ERR_SYSTEM after a socket failure (every
 *   pending op completed with KM_ERR_SYSTEM, their callbacks run), KM_ERR_INVAL when
 *   called from a callback.
 * @note Context: the thread that uses c.
 */
int km_process(struct km_client *c);

/** The socket to poll for readability (the handle's only file descriptor). */
int km_async_fd(const struct km_client *c);

/** Whether datagrams wait for room in the socket's send buffer: poll for writability too. */
int km_async_want_write(const struct km_client *c);

/** Milliseconds until km_process has a resend or a timeout to do (rounded up), 0 if it
 * has work now, 1 while datagrams wait for room in the socket buffer, -1 with nothing to
 * wait for (no op pending, no map refresh under way). */
int km_async_timeout_ms(const struct km_client *c);

/** Ops submitted and not completed yet. */
size_t km_async_pending(const struct km_client *c);

/**
 * Set the session id every later request of the handle carries (0 = none): the server
 * learns what each session reads next from it and prefetches accordingly (a user's
 * requests, a request handler's, a job's: whatever reads in a pattern). A batch op with
 * its own session overrides it. Retries carry the session of their first attempt.
 * @return 0.
 * @note Context: the thread that uses c (a handle is single-threaded).
 */
int km_client_set_session(struct km_client *c, uint32_t session);

/**
 * The handle's session id (0 = none).
 * @note Context: the thread that uses c.
 */
uint32_t km_client_session(const struct km_client *c);

/**
 * Fetch the shard map again: from the home server, then the seeds, then the nodes of the
 * current cluster map (the next one when one times out).
 * @return 0, KM_ERR_MAP_VERSION (the server's map encoding is newer than this library:
 *   the client stays unsteered), KM_ERR_PROTO (a malformed map, a 2.0 node table
 *   included), KM_ERR_TIMEOUT (no server answered), or another error.
 * @note Context: the thread that uses c (a handle is single-threaded); blocks.
 */
int km_map_refresh(struct km_client *c);

/**
 * Epoch of the client's map (0 = none).
 * @note Context: the thread that uses c.
 */
uint32_t km_client_epoch(const struct km_client *c);

/**
 * Worker the key is routed to (0 when unsteered); with a cluster map its global owner
 * (km_shardmap_owner_node() on km_client_map() names the node).
 * @note Context: the thread that uses c.
 */
unsigned int km_client_worker_of(const struct km_client *c, const void *key, size_t klen);

/**
 * Number of workers in the client's map (1 when unsteered); of every node of a cluster
 * map.
 * @note Context: the thread that uses c.
 */
unsigned int km_client_nb_workers(const struct km_client *c);

struct km_shardmap; /* km_shardmap.h */

/**
 * The client's shard map, read-only (NULL when unsteered), e.g. for keymap-cli map.
 * Read it with the km_shardmap_* accessors. Valid until the next call on c (a refresh
 * replaces it).
 * @note Context: the thread that uses c.
 */
const struct km_shardmap *km_client_map(const struct km_client *c);

/** Client-side counters. */
struct km_client_stats {
	uint64_t requests;
	uint64_t retries;
	uint64_t timeouts;
	uint64_t moved;
	uint64_t map_refreshes;
	uint64_t stray_replies;  /* replies matching no request in flight (late duplicates) */
	uint64_t cookie_fetches; /* HELLO exchanges started to get a cookie */
	uint64_t denied;         /* DENIED replies (no valid cookie, key refused, not allowed) */
	uint64_t crew_spread;    /* GETs of hot keys sent to any worker (the server said every
				  * worker holds a read copy) rather than to the owner */
	uint64_t moved_behind;   /* MOVED from a cluster node at an older epoch than ours:
				  * resent there after a backoff, not counted as a move */
};

/**
 * Copy the handle's counters into *st.
 * @note Context: the thread that uses c.
 */
void km_client_get_stats(const struct km_client *c, struct km_client_stats *st);

/** What a server said to HELLO (km_client_hello). */
struct km_client_hello {
	uint64_t cookie;   /* opaque; bound to the handle's address and port */
	uint32_t valid_ms; /* the cookie is good at least this long after the HELLO */
	uint32_t flags;    /* KM_CLIENT_HELLO_* */
};

#define KM_CLIENT_HELLO_COOKIES 0x1 /* replies larger than their request need a cookie */
#define KM_CLIENT_HELLO_AUTH    0x2 /* every request needs a client key */

/**
 * Send a HELLO to the home server now and wait for its answer (the handle fetches
 * cookies on its own when needed, one per server: this is for tools and diagnostics). A
 * cookie received is used from then on.
 * @return 0 with *out filled in; KM_ERR_BAD_REQUEST from a server without HELLO;
 *   KM_ERR_AUTH, KM_ERR_TIMEOUT, ...
 * @note Context: the thread that uses c (a handle is single-threaded); blocks.
 */
int km_client_hello(struct km_client *c, struct km_client_hello *out);

#ifdef __cplusplus
}
#endif

#endif /* KM_CLIENT_H */
