/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_ETCD_H
#define KM_ETCD_H

/**
 * @file
 * A small blocking etcd v3 client over etcd's JSON gateway (libcurl + jansson): keys and
 * values, compare-and-swap transactions, leases, watches and elections, for keymapd's
 * cluster thread and keymap-placer.
 *
 * Concurrency: a struct km_etcd handle is not thread-safe. Each thread opens its own and
 * makes one call at a time on it; its watches (struct km_etcd_watch) belong to it too and
 * are closed before it. Every call blocks for at most its timeout (the handle's, or the
 * one given), except km_etcd_watch_next(), which waits at most the time it is given.
 * Calls return 0, a count, or -errno; on an error km_etcd_errmsg() tells it in words.
 * Nothing aborts on bad server data: a reply that is not what etcd sends is -EPROTO.
 *
 * Endpoints: a call goes to the endpoint that last worked; when it cannot reach it (the
 * connection is refused, the name does not resolve, the connection times out: nothing was
 * sent) it tries the next ones in turn and remembers the one that answered. A request that
 * was sent and then failed is not sent again elsewhere (it may have been applied).
 *
 * What the gateway of etcd 3.4 does (checked against etcd 3.4.23):
 * - It lives under /v3/ (not /v3alpha/ or /v3beta/); each call is a POST of a JSON object.
 * - Keys and values are standard base64 with padding; int64 fields arrive as JSON strings.
 * - Fields with their zero value are left out of replies: "succeeded" is absent when a
 *   transaction failed, "type" is absent on a PUT event, "lease" on a key without one,
 *   "TTL" on the keepalive of an unknown lease, "kvs" on an empty range.
 * - An error is {"error", "message", "code"}: a gRPC status code (5 NOT_FOUND for an
 *   unknown lease, 3 INVALID_ARGUMENT for bad base64 or JSON, 11 OUT_OF_RANGE for a
 *   compacted revision) with an HTTP status to match (404, 400...). The election service
 *   answers code 2 (UNKNOWN) for its own errors ("election: no leader", "election: not
 *   leader") and for etcd's ("etcdserver: requested lease not found"): only the text tells.
 * - Streaming calls (watch, lease keepalive) answer one {"result": ...} object per
 *   message, each followed by a newline, in a chunked reply: a message may be split across
 *   reads, and several may arrive in one.
 * - Lease keepalive of an expired or unknown lease is no error: TTL 0 (absent). Time-to-
 *   live of one is TTL -1. Revoke is at both /v3/lease/revoke and /v3/kv/lease/revoke.
 * - TTLs below 2 s are granted as 2 s.
 * - A transaction's ops apply in order at one revision: a get after a put in the same
 *   branch sees the put. A key written twice in one branch is INVALID_ARGUMENT.
 * - A watch first answers "created": true. A start revision older than the last compaction
 *   then gets "canceled": true with "compact_revision", and the stream stays open.
 * - Campaign names the candidate key name + "/" + the lease id in hex: a campaign again
 *   with the same lease finds the same key and creation revision (and replaces the value
 *   if it differs), so it is idempotent. When a client gives up on a campaign (its timeout
 *   closes the connection), etcd cancels the call and deletes that candidate key, so no
 *   queued candidate is left behind.
 * - Resign with a stale revision, or twice, succeeds and deletes nothing (it is a
 *   transaction on the key's creation revision). Proclaim by a non-leader is an error.
 */

#include <stddef.h>
#include <stdint.h>

/** Most endpoints in one list. */
#define KM_ETCD_ENDPOINTS_MAX 8
/** Longest endpoint, "http://host:port", in bytes. */
#define KM_ETCD_ENDPOINT_LEN 128
/** Longest election name, in bytes. */
#define KM_ETCD_NAME_MAX 256
/** Longest election candidate key: name + "/" + 16 hex digits. */
#define KM_ETCD_LEADER_KEY_MAX (KM_ETCD_NAME_MAX + 17)

/** A parsed endpoint list. */
struct km_etcd_endpoints {
	unsigned int n;                                        /* endpoints in url[] */
	char url[KM_ETCD_ENDPOINTS_MAX][KM_ETCD_ENDPOINT_LEN]; /* "http://host:port" */
};

/** One key as read, or one watch event. Pointers into the result that holds it. */
struct km_etcd_kv {
	const uint8_t *key; /* not NUL-terminated */
	size_t klen;
	const uint8_t *value; /* not NUL-terminated; empty for a DELETE event */
	size_t vlen;
	int64_t create_rev; /* revision that created the key (0 in a DELETE event) */
	int64_t mod_rev;    /* revision of its last change (of the deletion in a DELETE event) */
	int64_t version;    /* changes since its creation (0 in a DELETE event) */
	int64_t lease;      /* lease attached, 0 for none */
	int deleted;        /* watch events: 1 for a DELETE event, 0 for a PUT */
	unsigned int op;    /* km_etcd_txn(): index of the GET op it answers, in its branch */
};

/** A result: keys read, or a batch of watch events. One allocation: km_etcd_kvs_free(). */
struct km_etcd_kvs {
	int64_t revision;        /* the store's revision when it was read (reply header) */
	size_t n;                /* entries in kv[] */
	struct km_etcd_kv kv[1]; /* n entries (at least one slot allocated) */
};

/** Flags of km_etcd_get() and km_etcd_delete(), and of GET and DELETE ops. */
#define KM_ETCD_PREFIX 1u /* every key that starts with the key given (an empty key: all) */

/** What a transaction compare looks at. */
enum km_etcd_target {
	KM_ETCD_VERSION, /* changes since creation (0: no such key) */
	KM_ETCD_CREATE,  /* creation revision (0: no such key) */
	KM_ETCD_MOD,     /* revision of the last change */
	KM_ETCD_VALUE,   /* the value, bytewise */
	KM_ETCD_LEASE,   /* attached lease id (0: none) */
};

/** How a compare holds: target RESULT given. */
enum km_etcd_cmp_result {
	KM_ETCD_EQUAL,
	KM_ETCD_NOT_EQUAL,
	KM_ETCD_GREATER,
	KM_ETCD_LESS,
};

/** One compare of a transaction: the key's target, result, the number or value given. */
struct km_etcd_cmp {
	const void *key;
	size_t klen;
	enum km_etcd_target target;
	enum km_etcd_cmp_result result;
	int64_t num;       /* VERSION, CREATE, MOD, LEASE */
	const void *value; /* VALUE */
	size_t vlen;
};

/** Kinds of transaction operations. */
enum km_etcd_op_type {
	KM_ETCD_OP_PUT,    /* key = value, with lease if not 0 */
	KM_ETCD_OP_DELETE, /* key, or with KM_ETCD_PREFIX every key under it */
	KM_ETCD_OP_GET,    /* key, or with KM_ETCD_PREFIX every key under it */
};

/** One operation of a transaction branch. */
struct km_etcd_op {
	enum km_etcd_op_type type;
	const void *key;
	size_t klen;
	const void *value; /* PUT */
	size_t vlen;
	int64_t lease;      /* PUT: 0 for none */
	unsigned int flags; /* DELETE, GET: KM_ETCD_PREFIX */
};

/** An election candidate's key, as campaign returns it: what resign and proclaim need. */
struct km_etcd_leader {
	uint8_t name[KM_ETCD_NAME_MAX]; /* the election */
	size_t nlen;
	uint8_t key[KM_ETCD_LEADER_KEY_MAX]; /* name/<lease in hex> */
	size_t klen;
	int64_t rev;   /* creation revision of the key: compare on it to act as the leader */
	int64_t lease; /* the candidate's lease */
};

struct km_etcd;
struct km_etcd_watch;

/**
 * Parse "http://host:port[,http://host:port...]": http:// only, a host (name, IPv4, or
 * IPv6 in brackets) and a port in 1..65535, no path, at most KM_ETCD_ENDPOINTS_MAX, each
 * shorter than KM_ETCD_ENDPOINT_LEN; no empty items, no blanks.
 * @param out written only on success.
 * @param err on failure, the reason (may be NULL).
 * @return 0 or -EINVAL.
 * @note Context: any thread.
 */
int km_etcd_endpoints_parse(const char *s, struct km_etcd_endpoints *out, char *err, size_t errlen);

/**
 * Open a handle on the cluster at endpoints (km_etcd_endpoints_parse() syntax). No request
 * is made: the first call finds an endpoint that answers.
 * @param timeout_ms bound of each call (connection included), > 0.
 * @return 0, -EINVAL (bad endpoints or timeout: km_etcd_endpoints_parse() tells why),
 *   -ENOMEM.
 * @note Context: any thread; the handle then belongs to that thread.
 */
int km_etcd_open(const char *endpoints, unsigned int timeout_ms, struct km_etcd **out);

/**
 * Close a handle (NULL is fine), after its watches.
 * @note Context: the thread that owns e.
 */
void km_etcd_close(struct km_etcd *e);

/**
 * @return the last error on e in words ("" before any): "etcd http://127.0.0.1:2379:
 *   connection refused", "etcd: malformed reply to /v3/kv/range", or the server's message
 *   ("etcd: /v3/lease/revoke: etcdserver: requested lease not found"). Valid until the
 *   next call on e.
 * @note Context: the thread that owns e.
 */
const char *km_etcd_errmsg(const struct km_etcd *e);

/**
 * @return the endpoint that the next call tries first (the one that last answered).
 * @note Context: the thread that owns e.
 */
const char *km_etcd_endpoint(const struct km_etcd *e);

/*
 * Errors every call below may return, besides its own: -ECONNREFUSED, -EHOSTUNREACH,
 * -ENETUNREACH (no endpoint reached; errmsg names each), -ETIMEDOUT (no answer in time),
 * -ECONNRESET (the connection broke), -EPROTO (a reply that is not etcd's), -EINVAL (a
 * request etcd refused as invalid), -EACCES (authentication), -EAGAIN (etcd unavailable,
 * e.g. no raft leader), -EMSGSIZE (a reply over 256 MiB), -ENOMEM, -EIO (any other
 * server error).
 */

/**
 * Put key = value, attached to lease (0 for none).
 * @param rev if not NULL, the revision of the write.
 * @return 0, -ENOENT (no such lease) or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_put(struct km_etcd *e, const void *key, size_t klen, const void *value, size_t vlen,
	int64_t lease, int64_t *rev);

/**
 * Read key, or with KM_ETCD_PREFIX every key that starts with it, in key order.
 * @param out on success, the keys found (n may be 0) and the store's revision: free it
 *   with km_etcd_kvs_free().
 * @return the number of keys found, or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_get(struct km_etcd *e, const void *key, size_t klen, unsigned int flags,
	struct km_etcd_kvs **out);

/**
 * Delete key, or with KM_ETCD_PREFIX every key that starts with it.
 * @param rev if not NULL, the store's revision after the delete.
 * @return the number of keys deleted, or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_delete(
	struct km_etcd *e, const void *key, size_t klen, unsigned int flags, int64_t *rev);

/**
 * Free a result (NULL is fine).
 * @note Context: any thread.
 */
void km_etcd_kvs_free(struct km_etcd_kvs *r);

/**
 * A transaction: if every compare holds, run the success ops, else the failure ops, as one
 * atomic step. A compare on a key that does not exist sees version, create and mod
 * revisions 0 (etcd's rule). The usual guard of a leader's writes: KM_ETCD_CREATE EQUAL
 * the leader key's rev.
 * @param rev if not NULL, the store's revision after the transaction.
 * @param gets if not NULL, the keys read by the GET ops of the branch that ran, in op
 *   order (kv[i].op tells which op): free with km_etcd_kvs_free().
 * @return 1 (compares held: success ops ran), 0 (failure ops ran), -EINVAL (bad
 *   arguments, or etcd refused the transaction, e.g. a key written twice), -ENOENT (a PUT
 *   names no such lease), or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_txn(struct km_etcd *e, const struct km_etcd_cmp *cmp, size_t ncmp,
	const struct km_etcd_op *success, size_t nsuccess, const struct km_etcd_op *failure,
	size_t nfailure, int64_t *rev, struct km_etcd_kvs **gets);

/**
 * Compact the store's history up to rev: older revisions can no longer be read or
 * watched from.
 * @return 0, -ESTALE (already compacted past rev), -ERANGE (rev is in the future), or a
 *   common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_compact(struct km_etcd *e, int64_t rev);

/**
 * Grant a lease of ttl_s seconds (etcd grants at least 2 s).
 * @param id the new lease.
 * @param granted if not NULL, the TTL granted.
 * @return 0 or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_lease_grant(struct km_etcd *e, int64_t ttl_s, int64_t *id, int64_t *granted);

/**
 * Renew lease id once, to its full TTL.
 * @param ttl if not NULL, its TTL from now on, in seconds.
 * @return 0, -ENOENT (expired, revoked or unknown), or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_lease_keepalive(struct km_etcd *e, int64_t id, int64_t *ttl);

/**
 * Revoke lease id: every key attached to it is deleted.
 * @return 0, -ENOENT (expired, revoked or unknown), or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_lease_revoke(struct km_etcd *e, int64_t id);

/**
 * Time left on lease id.
 * @param ttl seconds left; granted (may be NULL): the TTL it was granted.
 * @return 0, -ENOENT (expired, revoked or unknown), or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_lease_ttl(struct km_etcd *e, int64_t id, int64_t *ttl, int64_t *granted);

/**
 * Watch key, or with KM_ETCD_PREFIX every key under it, from start_rev (0: from now on).
 * Returns once etcd has created the watch (within e's timeout); events come through
 * km_etcd_watch_next().
 * @return 0, -EINVAL, or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_watch_open(struct km_etcd *e, const void *key, size_t klen, unsigned int flags,
	int64_t start_rev, struct km_etcd_watch **out);

/**
 * Wait up to timeout_ms for the next batch of events (kv[i].deleted tells a DELETE), in
 * revision order.
 * @param out on a count > 0, the events: free with km_etcd_kvs_free().
 * @return the number of events, 0 (none in time), -ESTALE (the start revision was
 *   compacted: read the keys again and watch from the revision read;
 *   km_etcd_watch_compact_rev() tells the compaction), -ECONNRESET (the stream ended or
 *   broke: watch again from km_etcd_watch_next_rev()), -ECANCELED (etcd canceled the
 *   watch), -EPROTO, -ENOMEM. After an error the watch stays in it: close it.
 * @note Context: the thread that owns the handle the watch was opened on.
 */
int km_etcd_watch_next(struct km_etcd_watch *w, int timeout_ms, struct km_etcd_kvs **out);

/**
 * @return the revision to watch from again after a break: the last event's mod revision
 *   + 1, or the start revision if no event came yet (0: the watch started from then).
 * @note Context: the thread that owns the watch.
 */
int64_t km_etcd_watch_next_rev(const struct km_etcd_watch *w);

/**
 * @return the compaction revision after -ESTALE, else 0.
 * @note Context: the thread that owns the watch.
 */
int64_t km_etcd_watch_compact_rev(const struct km_etcd_watch *w);

/**
 * Close a watch (NULL is fine).
 * @note Context: the thread that owns the watch.
 */
void km_etcd_watch_close(struct km_etcd_watch *w);

/**
 * Campaign in election name with lease, offering value: block until this candidate leads
 * or timeout_ms passes. Candidates lead in the order they first campaigned; a leader's
 * key goes with its lease. Campaigning again with the same lease is idempotent: the same
 * candidate key, the value replaced (after a timeout etcd has deleted the candidate key:
 * campaigning again queues it anew).
 * @param out on success, the leader key.
 * @return 0, -ETIMEDOUT (not leader in time), -ENOENT (no such lease), -ENAMETOOLONG
 *   (nlen over KM_ETCD_NAME_MAX), -EAGAIN (the key vanished as it won: a lease that
 *   expired, or a racing resign; campaign again), or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_campaign(struct km_etcd *e, const void *name, size_t nlen, int64_t lease,
	const void *value, size_t vlen, unsigned int timeout_ms, struct km_etcd_leader *out);

/**
 * Who leads election name.
 * @param out the leader's key (may be NULL).
 * @param value if not NULL, the leader's key and value as one entry: free with
 *   km_etcd_kvs_free().
 * @return 0, -ENOENT (no leader), -ENAMETOOLONG, or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_leader(struct km_etcd *e, const void *name, size_t nlen, struct km_etcd_leader *out,
	struct km_etcd_kvs **value);

/**
 * Give up leadership (or candidacy): delete the leader key if it is still the one that
 * l names (its creation revision). A stale l deletes nothing and is no error.
 * @return 0 or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_resign(struct km_etcd *e, const struct km_etcd_leader *l);

/**
 * As the leader l, replace the value the election shows.
 * @return 0, -EPERM (l no longer leads), or a common error.
 * @note Context: the thread that owns e.
 */
int km_etcd_proclaim(
	struct km_etcd *e, const struct km_etcd_leader *l, const void *value, size_t vlen);

#endif /* KM_ETCD_H */
