/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef ETCD_PRIVATE_H
#define ETCD_PRIVATE_H

/*
 * lib/etcd internals shared by its files, and the pure pieces the unit tests reach
 * (endpoints, base64, prefix range ends, the stream splitter).
 */

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>

#include "km_etcd.h"

/** Largest reply or streamed message accepted, in bytes. */
#define ETCD_REPLY_MAX (256u << 20)

/* All fields: the owning thread only. */
struct km_etcd {
	struct km_etcd_endpoints ep;
	unsigned int cur;        /* index in ep of the endpoint tried first */
	unsigned int timeout_ms; /* bound of each call and of each connection attempt */
	CURL *curl;              /* kept between calls: its connection is reused */
	struct curl_slist *hdrs; /* Content-Type, no Expect: 100-continue */
	char *body;              /* the reply being read */
	size_t blen;
	size_t bcap;
	const char *path; /* the call in progress, for messages */
	char err[640];
};

/*
 * Splits a stream of JSON objects (the gateway's streaming replies) into whole objects,
 * whatever the read boundaries: braces are counted outside strings, and anything between
 * objects must be white space.
 */
struct etcd_split {
	char *buf;
	size_t len;   /* bytes in buf */
	size_t cap;   /* bytes allocated */
	size_t start; /* first byte of the object being scanned (or of what follows the last) */
	size_t scan;  /* bytes of buf scanned so far */
	unsigned int depth; /* braces and brackets open in the current object */
	int in_str;         /* inside a string */
	int esc;            /* the previous byte was a backslash inside a string */
};

/** Append n bytes. @return 0, -ENOMEM, -EMSGSIZE (an object over ETCD_REPLY_MAX). */
int etcd_split_feed(struct etcd_split *s, const void *p, size_t n);
/**
 * The next whole object: *obj (not NUL-terminated), *len, valid until the next feed.
 * @return 1, 0 (none complete yet), -EPROTO (not a stream of objects).
 */
int etcd_split_next(struct etcd_split *s, const char **obj, size_t *len);
/** Free the buffer and reset s. */
void etcd_split_free(struct etcd_split *s);

/** Standard base64 of len bytes as a JSON string; NULL on ENOMEM. */
json_t *etcd_b64_json(const void *p, size_t len);
/**
 * Decode the whole standard base64 string s (slen bytes, padded, canonical) into out.
 * @return 0, -EPROTO (not base64), -ENOBUFS (more than cap bytes).
 */
int etcd_b64_decode(const char *s, size_t slen, uint8_t *out, size_t cap, size_t *len);

/**
 * The range end that makes [key, end) every key with prefix key: key with its last byte
 * that is not 0xff incremented, cut after it. A key of only 0xff bytes (or empty) has no
 * such end: "\0", which etcd reads as "every key from key on".
 * @param end klen bytes at least (1 if klen is 0).
 * @return the length of end.
 */
size_t etcd_prefix_end(const uint8_t *key, size_t klen, uint8_t *end);

/** Set field name of obj to len bytes at p in base64. @return 0, -EINVAL, -ENOMEM. */
int etcd_json_bytes(json_t *obj, const char *name, const void *p, size_t len);
/** Set "key" (and with KM_ETCD_PREFIX "range_end") of obj. @return 0, -EINVAL, -ENOMEM. */
int etcd_json_key(json_t *obj, const void *key, size_t klen, unsigned int flags);
/** Set field name of obj to v as a decimal string (gateway int64). @return 0, -ENOMEM. */
int etcd_json_int(json_t *obj, const char *name, int64_t v);
/**
 * Read int64 field name of obj: a decimal string or a JSON integer; absent is 0 (the
 * gateway leaves out zero values). @return 0 or -EPROTO.
 */
int etcd_int(const json_t *obj, const char *name, int64_t *out);

/** Set e's message from fmt. @return rc. */
int etcd_fail(struct km_etcd *e, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/**
 * A request that could not be built: free req (NULL is fine), set the message.
 * @return rc (-EINVAL or -ENOMEM).
 */
int etcd_req_fail(struct km_etcd *e, json_t *req, int rc, const char *path);
/** "etcd: malformed reply to <path>". @return -EPROTO. */
int etcd_malformed(struct km_etcd *e);
/**
 * The errno of a gateway error object (an {"error", "message", "code"} reply, or the
 * "error" object of a stream), its message set on e.
 * @return a negative errno.
 */
int etcd_server_error(struct km_etcd *e, const json_t *err_obj);

/**
 * One call: POST req (consumed, even on failure) to path on the endpoints in turn until
 * one is reached, parse the reply, turn an error reply into -errno.
 * @param build_rc what building req returned: if not 0, nothing is sent and this is the
 *   call's error (etcd_req_fail()); a NULL req is -ENOMEM.
 * @param timeout_ms bound of the call (0: e's).
 * @param reply on success, the reply object (a stream message unwrapped from "result"):
 *   json_decref() it. NULL: the reply is not needed.
 * @return 0 or -errno (message on e).
 */
int etcd_call(struct km_etcd *e, const char *path, json_t *req, int build_rc,
	unsigned int timeout_ms, json_t **reply);

/** The reply header's revision. @return 0 or -EPROTO. */
int etcd_header_rev(struct km_etcd *e, const json_t *reply, int64_t *rev);

/**
 * Build one result from the key-value objects of narr JSON arrays (NULL arrays are
 * empty). With events, the elements are watch events ({"type", "kv"}).
 * @param ops the op index of each array's entries (NULL: 0).
 * @return the number of entries, -EPROTO, -ENOMEM.
 */
int etcd_kvs_build(struct km_etcd *e, json_t *const *arr, const unsigned int *ops, size_t narr,
	int events, int64_t revision, struct km_etcd_kvs **out);

/**
 * Endpoint index i of e as curl handle h's URL plus path, and e's usual options.
 * @return 0 or -ENOMEM.
 */
int etcd_curl_setup(struct km_etcd *e, CURL *h, unsigned int i, const char *path);

/**
 * After a transfer of h on endpoint i failed with rc: set the message (with first 0,
 * appended to the one of the endpoints tried before).
 * @return 1 if nothing was sent (try the next endpoint), 0 otherwise; *err is the errno.
 */
int etcd_curl_failed(struct km_etcd *e, CURL *h, unsigned int i, CURLcode rc, int first, int *err);

/** curl_global_init() once per process. @return 0 or -ENOMEM. */
int etcd_curl_init(void);

#endif /* ETCD_PRIVATE_H */
