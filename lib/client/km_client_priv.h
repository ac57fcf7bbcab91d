/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_CLIENT_PRIV_H
#define KM_CLIENT_PRIV_H

/*
 * libkeymap internals, shared by its files and never installed:
 *   km_client.c  open/close, errors, the single-op calls and km_batch
 *   km_engine.c  the request engine: slots, req_id table, send, receive, dispatch,
 *                deadlines, km_run()
 *   km_map.c     the client's shard map: routing a key, refreshing the map in chunks
 *   km_mget.c    MGET: grouping by owner, packing datagrams, the GET fallback
 *   km_hello.c   address validation: the cookie, HELLO, requests waiting for a cookie
 *   km_crew.c    hot keys with read copies on every worker: their GETs go to any worker
 *   km_peer.c    the servers the handle talks to: seeds from the options, the nodes of a
 *                cluster map; where each request goes
 *
 * Concurrency: a handle is single-threaded (km_client.h), so nothing here is shared
 * between threads; every field is read and written by the thread that calls the API.
 */

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "km_client.h"
#include "km_proto.h"
#include "km_shardmap.h"

/* Internal functions: linked into libkeymap.so, not exported from it. */
#define KM_INTERNAL __attribute__((visibility("hidden")))

#define KM_DEFAULT_PORT       7070
#define KM_DEFAULT_TIMEOUT_MS 200
#define KM_DEFAULT_RETRIES    3
#define KM_DEFAULT_WINDOW     64
#define KM_WINDOW_MAX         4096
#define KM_RETRIES_MAX        100
#define KM_SOCK_BUF           (4 << 20)
#define KM_RX_BURST           32
/* Larger than any valid reply so that an oversized one shows up as MSG_TRUNC. The burst's
 * buffers take 2 MB of address space; a page is touched only by a reply that reaches it. */
#define KM_RX_BUF (KM_MSG_MAX + 1)
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
/* A request datagram and the trailers sealed onto it at each send. */
#define KM_SLOT_BUF (KM_DGRAM_MAX + KM_TRAILER_MAX)
/* DENIED for want of a cookie this many times (each followed by a HELLO) is final. */
#define KM_COOKIE_TRIES 2

/* Seeds in km_client_opts.host, and servers the handle keeps apart (seeds, nodes of the
 * current cluster map and of earlier ones, whose cookies are worth keeping). */
#define KM_SEEDS_MAX 16
#define KM_PEERS_MAX 64
#define KM_HOST_MAX  256 /* one seed's "name[:port]", NUL included */

/* Hot keys remembered (km_crew.c), power of 2, and how long a flagged reply holds. */
#define KM_CREW_SET    64
#define KM_CREW_TTL_NS (1000ull * 1000 * 1000)

struct km_crew_key {
	uint64_t hash;    /* XXH3-64 of the key; 0: free */
	uint64_t expires; /* ns */
};

struct km_crew_set {
	struct km_crew_key keys[KM_CREW_SET];
	uint32_t nb;   /* slots in use */
	uint32_t next; /* the worker the next spread GET goes to */
};

/* Destination of a slot other than an explicit worker index (a global owner in a
 * cluster map). */
#define KM_WORKER_KEY (-1) /* owner of the key in the current map */
#define KM_WORKER_MAP                                                     \
	(-2) /* worker 0 of a server: the MAP slot's candidate, the HELLO \
	      * slot's peer */

enum km_slot_state {
	KM_SLOT_FREE = 0,
	KM_SLOT_QUEUED,      /* datagram ready, waiting in the send queue */
	KM_SLOT_SENT,        /* in flight until deadline */
	KM_SLOT_BACKOFF,     /* answered BUSY: resend at deadline */
	KM_SLOT_WAIT_MAP,    /* answered MOVED: resend when the map refresh ends */
	KM_SLOT_WAIT_COOKIE, /* its reply needs a cookie the handle does not hold: resend
			      * when the HELLO ends */
};

struct km_slot {
	struct km_batch_op *op;
	km_done_fn done; /* an async op's callback (km_submit), NULL for the others */
	void *arg;
	struct km_hdr hdr;   /* re-encoded at each send: the epoch may have changed */
	uint64_t deadline;   /* SENT: end of the attempt; BACKOFF: resend time */
	uint64_t first_ns;   /* first send (0: not sent yet), for latency_ns */
	uint32_t map_gen;    /* c->map_gen at the last send */
	uint32_t cookie_gen; /* c->cookie_gen of the cookie the last send carried (0: none) */
	int32_t worker;      /* KM_WORKER_KEY, KM_WORKER_MAP or an explicit worker */
	uint32_t len;        /* request length in buf, without trailers */
	uint32_t wlen;       /* as sent: trailers included */
	uint32_t ip;         /* destination of the last send (or the one waiting for a
			      * cookie): address, network order ... */
	uint16_t port;       /* ... and port, host order */
	uint8_t peer;        /* ... and its server in c->peers */
	uint8_t state;       /* enum km_slot_state */
	uint8_t attempts;    /* sends since the first one or the last MOVED */
	uint8_t moves;       /* MOVED replies acted upon */
	uint8_t busy;        /* BUSY replies acted upon (backoff exponent) */
	uint8_t denials;     /* DENIED (no valid cookie) replies acted upon */
	uint8_t *buf;        /* the request datagram: dgram, or big above KM_DGRAM_MAX bytes */
	uint8_t *dgram;      /* KM_SLOT_BUF bytes of the handle's slot_bufs */
	uint8_t *big;        /* KM_MSG_MAX bytes, allocated by the slot's first request that
			      * needs them (fragmented on the wire), kept until close */
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
	uint32_t nb_ovr; /* routing overrides of the first chunk (map encoding 1.1) */
	struct km_override_info ovr[KM_OVERRIDES_MAX];
	uint32_t nb_nodes; /* node table of the first chunk (map encoding 2.0) */
	struct km_map_node nodes[KM_MAP_NODES_MAX];
	/* Servers asked, in this order: the one a MOVED or a newer epoch came from, the
	 * server that answered the last MAP, the seeds, the nodes of the current map. A
	 * chunk request that times out goes to the next one. */
	int hint; /* peer to ask first at the next refresh (-1: none) */
	uint8_t cand[KM_PEERS_MAX];
	uint32_t nb_cand;
	uint32_t ci;         /* candidate being asked */
	uint32_t timeouts;   /* of the current chunk request, over every candidate */
	uint64_t hold_until; /* no epoch-triggered refresh before (after failures) */
	uint64_t hold_ns;
};

/*
 * Address validation (docs/protocol.md): a server's cookie, bound by it to the socket's
 * address and port, and the HELLO that fetches it. One per server (struct km_peer): each
 * keymapd draws its own secrets.
 */
struct km_cookie_state {
	bool held;       /* cookie is attached to every request (where it fits) */
	bool required;   /* the server refuses larger replies without one: requests whose
			  * reply may be larger wait for a cookie rather than go without */
	bool hello_busy; /* a HELLO is in the server's hello slot */
	uint64_t cookie;
	uint32_t gen;     /* bumped per cookie received, so never 0 once one is held */
	uint64_t expires; /* ns: good at least until then (0: no lifetime given) */
	uint64_t renew;   /* ns: the next GET/MGET/MAP from then starts a HELLO (0: never) */
	int hello_result; /* outcome of the last HELLO */
	struct km_client_hello last; /* what the last successful HELLO said */
	uint32_t nb_wait;            /* slots in KM_SLOT_WAIT_COOKIE for this server */
	struct km_batch_op op;
	uint8_t pad[KM_HELLO_LEN];   /* the request's value: zeros */
	uint8_t reply[KM_HELLO_LEN]; /* the reply's value */
};

/* A server: a seed, or a node of a cluster map. */
struct km_peer {
	uint32_t ip;   /* IPv4, network order; 0: entry free */
	uint16_t port; /* UDP port of its worker 0, host order */
	bool seed;     /* from the options: kept for the handle's life */
	bool in_map;   /* a node of the current map */
	struct km_cookie_state ck;
};

struct km_async_req {
	struct km_batch_op *op;
	km_done_fn done;
	void *arg;
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
	/*
	 * Servers. peers[0 .. nb_seeds) are the seeds, in the order given; nodes of cluster
	 * maps are added after them. home is the server that answered the last MAP (seed 0
	 * until one does): unsteered requests and those of a 1.x map go there.
	 */
	struct km_peer peers[KM_PEERS_MAX];
	uint32_t nb_seeds;
	uint32_t home;
	uint8_t node_peer[KM_MAP_NODES_MAX]; /* cluster map: node index -> peer */
	int sync_peer;                       /* km_client_hello() waits for its HELLO (-1) */
	bool no_steer;
	uint32_t session;
	unsigned int retries;
	unsigned int window;
	uint64_t timeout_ns;
	uint64_t next_req_id; /* a counter from a random start ... */
	uint64_t req_id_key;  /* ... mixed with this random key into each request id */

	struct km_shardmap *map; /* NULL: unsteered */
	uint32_t map_gen;        /* bumped whenever a map is installed */
	struct km_refresh refresh;
	struct km_batch_op map_op; /* the MAP request of the refresh in progress */
	uint8_t map_buf[KM_DGRAM_MAX];

	bool has_key; /* a client key: every request carries a MAC */
	uint32_t key_id;
	uint8_t key[KM_MAC_KEY_LEN];

	/*
	 * Engine. slots[window] is reserved for MAP and slots[window + 1 + p] for the HELLO
	 * of peer p, so a refresh or a cookie never waits for a slot.
	 */
	struct km_slot *slots;
	uint32_t nb_slots;  /* window + 1 + KM_PEERS_MAX */
	uint8_t *slot_bufs; /* nb_slots x KM_SLOT_BUF: every slot's dgram */
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

	/* Async ops (km_submit): queued, not started yet (a ring of cap entries), and
	 * completed, their callbacks not run yet (run by km_process). */
	struct km_async_req *aq;
	size_t aq_head, aq_len, aq_cap;
	struct km_async_req *adone;
	size_t adone_len, adone_cap;
	size_t async_pending; /* submitted, callback not run yet */
	bool in_process;      /* km_process on the stack: no re-entry */

	struct km_mget_scratch *mget; /* allocated by the first km_mget() */
	struct km_crew_set crew;      /* hot keys any worker serves */
	struct km_client_stats st;
};

/* Async ops own the engine (pending, or km_process on the stack): the blocking calls are
 * refused before they change anything. */
static inline bool
km_engine_busy(const struct km_client *c)
{
	return c->async_pending != 0 || c->in_process;
}

static inline uint64_t
km_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Index of the reserved slots. */
static inline uint32_t
km_map_slot(const struct km_client *c)
{
	return c->window;
}

/* The HELLO slot of peer p. */
static inline uint32_t
km_hello_slot(const struct km_client *c, uint32_t p)
{
	return c->window + 1 + p;
}

static inline bool
km_is_hello_slot(const struct km_client *c, uint32_t idx)
{
	return idx > c->window;
}

/* A cluster map (encoding 2.0) is installed and used. */
static inline bool
km_cluster(const struct km_client *c)
{
	return c->map != NULL && !c->no_steer && km_shardmap_nb_nodes(c->map) != 0;
}

/* Ops whose reply may be larger than the request: the server wants a cookie for them. */
static inline bool
km_op_grows(uint8_t op)
{
	return op == KM_OP_GET || op == KM_OP_MGET || op == KM_OP_MAP || op == KM_OP_SCAN;
}

/* Trailer bytes a request of op may carry: what the size checks leave room for. A cookie
 * only on ops that need one: a write that fills the datagram goes without (its reply is
 * never larger than the request). */
static inline size_t
km_trailer_room(const struct km_client *c, uint8_t op)
{
	return (km_op_grows(op) ? KM_COOKIE_LEN : 0) + (c->has_key ? KM_AUTH_LEN : 0);
}

/* km_client.c */
/** Wire status -> enum km_err. */
KM_INTERNAL int km_status_err(unsigned int st);

/* km_engine.c */
/**
 * Run ops to completion, keeping up to window in flight, plus any map refresh they
 * trigger. workers: explicit destination per op, or NULL to route each op by its key.
 * internal: MAP and MGET ops allowed. @return 0 (each op->err set) or KM_ERR_SYSTEM.
 */
KM_INTERNAL int km_run(struct km_client *c, struct km_batch_op *ops, const int32_t *workers,
	size_t n, bool internal);
/** km_run() of one op. @return KM_ERR_SYSTEM or the op's err. */
KM_INTERNAL int km_run_one(struct km_client *c, struct km_batch_op *op, int32_t worker);
/** Put op in slot idx (a free slot or the map slot) and queue it. */
KM_INTERNAL void km_slot_arm(
	struct km_client *c, uint32_t idx, struct km_batch_op *op, int32_t worker);
/**
 * Queue a (re)send of slot idx, same req_id, to the current owner; or, when its reply
 * needs a cookie the handle does not hold, park it until the HELLO ends.
 */
KM_INTERNAL void km_slot_send(struct km_client *c, uint32_t idx);
/** Queue a (re)send of slot idx now, with the trailers the handle holds. */
KM_INTERNAL void km_slot_transmit(struct km_client *c, uint32_t idx);
/** Complete slot idx with err: its op, the map refresh or the HELLO. */
KM_INTERNAL void km_slot_done(struct km_client *c, uint32_t idx, int err, uint64_t now);
/* An async op completed: its callback to run at the end of km_process. */
KM_INTERNAL void km_async_complete(
	struct km_client *c, struct km_batch_op *op, km_done_fn done, void *arg);

/* km_map.c */
/** Owner worker of a key in the client's map (0 when unsteered). */
KM_INTERNAL unsigned int km_owner(const struct km_client *c, const void *key, size_t klen);
/** Port of worker 0 of the home server: the map's (1.x), unless the server left it out. */
KM_INTERNAL uint16_t km_base_port(const struct km_client *c);
/**
 * Ask for a map refresh at the next turn of the engine (no-op if one is under way); peer
 * (>= 0) is asked first, unless an earlier call named one.
 */
KM_INTERNAL void km_refresh_want(struct km_client *c, int peer);
/** Start the wanted refresh: the first MAP chunk request goes into the map slot. */
KM_INTERNAL void km_refresh_begin(struct km_client *c);
/** The MAP chunk request completed with err: take its entries, ask for the next. */
KM_INTERNAL void km_refresh_step(struct km_client *c, int err);
/** A reply of peer carried its epoch: want a refresh if it is not ours (cluster: newer). */
KM_INTERNAL void km_note_epoch(struct km_client *c, uint32_t epoch, uint32_t peer, uint64_t now);
/**
 * The MAP chunk request timed out: move on to the next candidate server.
 * @return false when every candidate and the retries are used up.
 */
KM_INTERNAL bool km_refresh_timeout(struct km_client *c);

/* km_hello.c */
/**
 * Before a send of slot idx: expire the cookie, start a HELLO when one is due.
 * @return true when the slot must wait for a cookie (it is then parked).
 */
KM_INTERNAL bool km_cookie_gate(struct km_client *c, uint32_t idx);
/** Slot idx was answered DENIED for want of a valid cookie: HELLO, then resend it. */
KM_INTERNAL void km_cookie_denied(struct km_client *c, uint32_t idx, uint64_t now);
/** Start a HELLO to peer p in its hello slot (no-op if one is under way). */
KM_INTERNAL void km_hello_start(struct km_client *c, uint32_t p);
/** The HELLO to peer p completed with err: take the cookie, resend or fail the waiting
 * slots. */
KM_INTERNAL void km_hello_end(struct km_client *c, uint32_t p, int err, uint64_t now);

/* km_peer.c */
/**
 * Parse opts->host ("name[:port]" entries separated by commas) into the seeds.
 * @return KM_OK, KM_ERR_INVAL (empty entry, bad port, over KM_SEEDS_MAX, a name that
 *   does not resolve), KM_ERR_SYSTEM, KM_ERR_NOMEM.
 */
KM_INTERNAL int km_seeds_parse(struct km_client *c, const char *hosts, uint16_t port);
/**
 * Peers of the nodes of cluster map m into node_peer[] (found or added: a free entry, or
 * one no seed, node of m, HELLO or parked request needs); keep is a peer not to reuse.
 * @return KM_OK or KM_ERR_BUSY (no entry to reuse now).
 */
KM_INTERNAL int km_peers_bind(
	struct km_client *c, const struct km_shardmap *m, uint32_t keep, uint8_t *node_peer);
/** Set slot idx's destination (peer, address, port) for its next send. */
KM_INTERNAL void km_slot_route(struct km_client *c, uint32_t idx);

/* km_crew.c */
/** Worker a GET of key goes to: owner, or any worker (of the owner's node in a cluster) in
 * turn for a hot key with copies. */
KM_INTERNAL unsigned int km_crew_worker(
	struct km_client *c, const void *key, size_t klen, unsigned int owner);
/** A GET reply of key: OK with KM_F_CREW (flagged) remembers it, anything else forgets it. */
KM_INTERNAL void km_crew_reply(
	struct km_client *c, const void *key, size_t klen, bool flagged, uint64_t now);

#endif /* KM_CLIENT_PRIV_H */
