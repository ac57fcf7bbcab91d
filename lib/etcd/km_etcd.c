/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The handle, the endpoints and the one request path every call takes: JSON in, POST to
 * the endpoints in turn, JSON out, gateway errors turned into -errno.
 */

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <km_util.h>

#include "etcd_private.h"

int
km_etcd_endpoints_parse(const char *s, struct km_etcd_endpoints *out, char *err, size_t errlen)
{
	static const char scheme[] = "http://";
	struct km_etcd_endpoints ep;
	const char *item = s;
	unsigned int idx = 1;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (s == NULL || s[0] == '\0') {
		if (err != NULL)
			snprintf(err, errlen, "no endpoint given");
		return -EINVAL;
	}
	memset(&ep, 0, sizeof(ep));
	for (;;) {
		const char *end = strchr(item, ',');
		size_t len = end != NULL ? (size_t)(end - item) : strlen(item);
		const char *host = item + sizeof(scheme) - 1;
		const char *hend, *port;
		const char *why = NULL;
		uint64_t pnum;
		const char *c;

		if (len == 0)
			why = "empty";
		else if (ep.n == KM_ETCD_ENDPOINTS_MAX)
			why = "more than 8 endpoints";
		else if (len >= KM_ETCD_ENDPOINT_LEN)
			why = "too long";
		else if (len < sizeof(scheme) - 1 || strncmp(item, scheme, sizeof(scheme) - 1) != 0)
			why = "not http://host:port (only http:// is supported)";
		if (why == NULL) {
			/* host: a name or IPv4 address, or an IPv6 address in brackets */
			if (*host == '[') {
				hend = memchr(host, ']', len - (size_t)(host - item));
				if (hend == NULL || hend == host + 1)
					why = "bad IPv6 address";
				for (c = host + 1; why == NULL && c < hend; c++)
					if (strchr("0123456789abcdefABCDEF:.", *c) == NULL)
						why = "bad IPv6 address";
				if (why == NULL)
					hend++;
			} else {
				for (hend = host; hend < item + len && *hend != ':'; hend++)
					if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU"
						   "VWXYZ"
						   "0123456789.-",
						    *hend) == NULL)
						break;
				if (hend == host)
					why = "no host";
			}
		}
		if (why == NULL) {
			port = hend + 1;
			if (hend >= item + len || *hend != ':')
				why = "not http://host:port (a port is needed, no path)";
			else if (km_util_parse_u64n(
					 port, (size_t)(item + len - port), 1, 65535, &pnum) != 0)
				why = "bad port (1..65535, no path)";
		}
		if (why != NULL) {
			if (err != NULL)
				snprintf(err, errlen, "endpoint %u '%.*s': %s", idx,
					len > 64 ? 64 : (int)len, item, why);
			return -EINVAL;
		}
		memcpy(ep.url[ep.n], item, len);
		ep.url[ep.n][len] = '\0';
		ep.n++;
		if (end == NULL)
			break;
		item = end + 1;
		idx++;
	}
	*out = ep;
	return 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void
curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int
etcd_curl_init(void)
{
	pthread_once(&curl_once, curl_init_once);
	return curl_init_rc == CURLE_OK ? 0 : -ENOMEM;
}

int
km_etcd_open(const char *endpoints, unsigned int timeout_ms, struct km_etcd **out)
{
	struct km_etcd *e;
	struct curl_slist *h;

	if (out == NULL || timeout_ms == 0 || timeout_ms > INT_MAX)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return -ENOMEM;
	if (km_etcd_endpoints_parse(endpoints, &e->ep, NULL, 0) != 0) {
		free(e);
		return -EINVAL;
	}
	e->timeout_ms = timeout_ms;
	if (etcd_curl_init() != 0)
		goto nomem;
	e->curl = curl_easy_init();
	if (e->curl == NULL)
		goto nomem;
	h = curl_slist_append(NULL, "Content-Type: application/json");
	if (h == NULL)
		goto nomem;
	e->hdrs = h;
	/* curl would wait for a 100 Continue before sending a large body */
	h = curl_slist_append(e->hdrs, "Expect:");
	if (h == NULL)
		goto nomem;
	e->hdrs = h;
	*out = e;
	return 0;
nomem:
	km_etcd_close(e);
	return -ENOMEM;
}

void
km_etcd_close(struct km_etcd *e)
{
	if (e == NULL)
		return;
	if (e->curl != NULL)
		curl_easy_cleanup(e->curl);
	curl_slist_free_all(e->hdrs);
	free(e->body);
	free(e);
}

const char *
km_etcd_errmsg(const struct km_etcd *e)
{
	return e->err;
}

const char *
km_etcd_endpoint(const struct km_etcd *e)
{
	return e->ep.url[e->cur];
}

int
etcd_fail(struct km_etcd *e, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->err, sizeof(e->err), fmt, ap);
	va_end(ap);
	return rc;
}

int
etcd_req_fail(struct km_etcd *e, json_t *req, int rc, const char *path)
{
	json_decref(req);
	e->path = path;
	return etcd_fail(
		e, rc, "etcd: %s: %s", path, rc == -ENOMEM ? "out of memory" : "invalid arguments");
}

int
etcd_malformed(struct km_etcd *e)
{
	return etcd_fail(e, -EPROTO, "etcd: malformed reply to %s", e->path);
}

/*
 * Base64 through libsodium's original variant (padded), the one etcd's JSON uses.
 */

json_t *
etcd_b64_json(const void *p, size_t len)
{
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	char small[512];
	char *buf = small;
	json_t *j;

	if (len > ETCD_REPLY_MAX)
		return NULL;
	if (cap > sizeof(small)) {
		buf = malloc(cap);
		if (buf == NULL)
			return NULL;
	}
	sodium_bin2base64(buf, cap, p, len, sodium_base64_VARIANT_ORIGINAL);
	j = json_stringn(buf, cap - 1);
	if (buf != small)
		free(buf);
	return j;
}

int
etcd_b64_decode(const char *s, size_t slen, uint8_t *out, size_t cap, size_t *len)
{
	size_t need = slen / 4 * 3;

	if (slen % 4 != 0)
		return -EPROTO;
	if (slen > 0 && s[slen - 1] == '=')
		need -= slen > 1 && s[slen - 2] == '=' ? 2 : 1;
	if (need > cap)
		return -ENOBUFS;
	if (sodium_base642bin(out, cap, s, slen, NULL, len, NULL, sodium_base64_VARIANT_ORIGINAL) !=
		0)
		return -EPROTO;
	return 0;
}

size_t
etcd_prefix_end(const uint8_t *key, size_t klen, uint8_t *end)
{
	size_t i;

	for (i = klen; i > 0; i--)
		if (key[i - 1] != 0xff) {
			memcpy(end, key, i - 1);
			end[i - 1] = (uint8_t)(key[i - 1] + 1);
			return i;
		}
	end[0] = 0;
	return 1;
}

int
etcd_json_bytes(json_t *obj, const char *name, const void *p, size_t len)
{
	if (p == NULL && len > 0)
		return -EINVAL;
	return json_object_set_new(obj, name, etcd_b64_json(p, len)) == 0 ? 0 : -ENOMEM;
}

int
etcd_json_key(json_t *obj, const void *key, size_t klen, unsigned int flags)
{
	static const uint8_t zero;
	uint8_t small[256];
	uint8_t *end = small;
	size_t elen;
	int rc;

	if ((flags & ~KM_ETCD_PREFIX) != 0)
		return -EINVAL;
	if (klen == 0) {
		/* etcd needs a key: "\0" to "\0" is every key */
		if (!(flags & KM_ETCD_PREFIX))
			return -EINVAL;
		key = &zero;
		klen = 1;
	}
	rc = etcd_json_bytes(obj, "key", key, klen);
	if (rc != 0 || !(flags & KM_ETCD_PREFIX))
		return rc;
	if (klen > sizeof(small)) {
		end = malloc(klen);
		if (end == NULL)
			return -ENOMEM;
	}
	if (key == &zero)
		elen = etcd_prefix_end(key, 0, end);
	else
		elen = etcd_prefix_end(key, klen, end);
	rc = etcd_json_bytes(obj, "range_end", end, elen);
	if (end != small)
		free(end);
	return rc;
}

int
etcd_json_int(json_t *obj, const char *name, int64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%lld", (long long)v);
	return json_object_set_new(obj, name, json_string(buf)) == 0 ? 0 : -ENOMEM;
}

int
etcd_int(const json_t *obj, const char *name, int64_t *out)
{
	const json_t *v = json_object_get(obj, name);
	const char *s;
	uint64_t u;
	int neg;

	if (v == NULL) {
		*out = 0;
		return 0;
	}
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		return -EPROTO;
	s = json_string_value(v);
	neg = s[0] == '-';
	if (km_util_parse_u64n(s + neg, json_string_length(v) - (size_t)neg, 0,
		    neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &u) != 0)
		return -EPROTO;
	*out = neg ? (int64_t)(0 - u) : (int64_t)u;
	return 0;
}

int
etcd_header_rev(struct km_etcd *e, const json_t *reply, int64_t *rev)
{
	const json_t *h = json_object_get(reply, "header");

	if (!json_is_object(h) || etcd_int(h, "revision", rev) != 0)
		return etcd_malformed(e);
	return 0;
}

/* gRPC status codes the gateway passes on */
enum {
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNAVAILABLE = 14,
	GRPC_UNAUTHENTICATED = 16,
};

int
etcd_server_error(struct km_etcd *e, const json_t *err_obj)
{
	const json_t *m = json_object_get(err_obj, "message");
	const char *msg = json_is_string(m) ? json_string_value(m) : "unknown error";
	int64_t code;
	int rc;

	if (etcd_int(err_obj, "code", &code) != 0 || code == 0)
		if (etcd_int(err_obj, "grpc_code", &code) != 0)
			code = GRPC_UNKNOWN;
	switch (code) {
	case GRPC_INVALID_ARGUMENT:
	case GRPC_FAILED_PRECONDITION:
		rc = -EINVAL;
		break;
	case GRPC_DEADLINE_EXCEEDED:
		rc = -ETIMEDOUT;
		break;
	case GRPC_NOT_FOUND:
		rc = -ENOENT;
		break;
	case GRPC_PERMISSION_DENIED:
	case GRPC_UNAUTHENTICATED:
		rc = -EACCES;
		break;
	case GRPC_RESOURCE_EXHAUSTED:
		rc = -ENOSPC;
		break;
	case GRPC_OUT_OF_RANGE:
		/* a compacted revision, or one in the future */
		rc = strstr(msg, "compacted") != NULL ? -ESTALE : -ERANGE;
		break;
	case GRPC_UNAVAILABLE:
		rc = -EAGAIN;
		break;
	default:
		/* the election service answers UNKNOWN with these texts, its own or etcd's */
		if (strstr(msg, "election: no leader") != NULL ||
			strstr(msg, "requested lease not found") != NULL)
			rc = -ENOENT;
		else if (strstr(msg, "election: not leader") != NULL)
			rc = -EPERM;
		else
			rc = -EIO;
		break;
	}
	return etcd_fail(e, rc, "etcd: %s: %s", e->path, msg);
}

static size_t
reply_write(char *p, size_t size, size_t n, void *arg)
{
	struct km_etcd *e = arg;
	size_t len = size * n;

	if (len > ETCD_REPLY_MAX - e->blen)
		return 0;
	if (e->blen + len + 1 > e->bcap) {
		size_t cap = e->bcap != 0 ? e->bcap : 4096;
		char *b;

		while (cap < e->blen + len + 1)
			cap *= 2;
		b = realloc(e->body, cap);
		if (b == NULL)
			return 0;
		e->body = b;
		e->bcap = cap;
	}
	memcpy(e->body + e->blen, p, len);
	e->blen += len;
	return len;
}

int
etcd_curl_setup(struct km_etcd *e, CURL *h, unsigned int i, const char *path)
{
	char url[KM_ETCD_ENDPOINT_LEN + 64];

	snprintf(url, sizeof(url), "%s%s", e->ep.url[i], path);
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, e->hdrs) != CURLE_OK ||
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http") != CURLE_OK ||
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)e->timeout_ms) != CURLE_OK ||
		curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK)
		return -ENOMEM;
	return 0;
}

/* The words of a connection failure, from the system's errno curl saw. */
static const char *
conn_words(long os_errno, CURLcode rc, int *err)
{
	switch (os_errno) {
	case ECONNREFUSED:
		*err = -ECONNREFUSED;
		return "connection refused";
	case EHOSTUNREACH:
		*err = -EHOSTUNREACH;
		return "host unreachable";
	case ENETUNREACH:
		*err = -ENETUNREACH;
		return "network unreachable";
	default:
		break;
	}
	if (rc == CURLE_COULDNT_RESOLVE_HOST) {
		*err = -EHOSTUNREACH;
		return "host name not resolved";
	}
	if (rc == CURLE_OPERATION_TIMEDOUT) {
		*err = -ETIMEDOUT;
		return "connection timed out";
	}
	*err = -ECONNREFUSED;
	return curl_easy_strerror(rc);
}

int
etcd_curl_failed(struct km_etcd *e, CURL *h, unsigned int i, CURLcode rc, int first, int *err)
{
	long os_errno = 0, sent = 0;
	size_t off = first ? 0 : strlen(e->err);

	curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
	curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &sent);
	if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
		(rc == CURLE_OPERATION_TIMEDOUT && sent == 0)) {
		const char *w = conn_words(os_errno, rc, err);

		if (first)
			snprintf(e->err, sizeof(e->err), "etcd %s: %s", e->ep.url[i], w);
		else if (off < sizeof(e->err))
			snprintf(e->err + off, sizeof(e->err) - off, "; %s: %s", e->ep.url[i], w);
		return 1;
	}
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		*err = -ETIMEDOUT;
		break;
	case CURLE_WRITE_ERROR:
		*err = -EMSGSIZE;
		break;
	case CURLE_OUT_OF_MEMORY:
		*err = -ENOMEM;
		break;
	default:
		*err = -ECONNRESET;
		break;
	}
	etcd_fail(e, *err, "etcd %s: %s: %s", e->ep.url[i], e->path, curl_easy_strerror(rc));
	return 0;
}

/* Parse e->body as the reply to e->path from endpoint i. */
static int
parse_reply(struct km_etcd *e, unsigned int i, json_t **reply)
{
	json_t *j, *r;
	long status = 0;

	curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &status);
	j = json_loadb(e->body != NULL ? e->body : "", e->blen, JSON_DISABLE_EOF_CHECK, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		if (status != 200)
			return etcd_fail(e, -EPROTO, "etcd %s: HTTP %ld to %s", e->ep.url[i],
				status, e->path);
		return etcd_malformed(e);
	}
	r = json_object_get(j, "error");
	if (r != NULL) {
		int rc = etcd_server_error(e, json_is_object(r) ? r : j);

		json_decref(j);
		return rc;
	}
	r = json_object_get(j, "result");
	if (r != NULL) {
		/* one message of a streaming call */
		if (!json_is_object(r)) {
			json_decref(j);
			return etcd_malformed(e);
		}
		json_incref(r);
		json_decref(j);
		j = r;
	}
	if (status != 200) {
		json_decref(j);
		return etcd_fail(
			e, -EPROTO, "etcd %s: HTTP %ld to %s", e->ep.url[i], status, e->path);
	}
	*reply = j;
	return 0;
}

int
etcd_call(struct km_etcd *e, const char *path, json_t *req, int build_rc, unsigned int timeout_ms,
	json_t **reply)
{
	json_t *j = NULL;
	unsigned int k;
	char *body;
	int rc = -ENOMEM;

	if (build_rc != 0 || req == NULL)
		return etcd_req_fail(e, req, build_rc != 0 ? build_rc : -ENOMEM, path);
	e->path = path;
	body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (body == NULL)
		return etcd_fail(e, -ENOMEM, "etcd: %s: out of memory", path);
	for (k = 0; k < e->ep.n; k++) {
		unsigned int i = (e->cur + k) % e->ep.n;
		CURLcode cc;

		curl_easy_reset(e->curl);
		e->blen = 0;
		if (etcd_curl_setup(e, e->curl, i, path) != 0 ||
			curl_easy_setopt(e->curl, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
			curl_easy_setopt(e->curl, CURLOPT_TIMEOUT_MS,
				(long)(timeout_ms != 0 ? timeout_ms : e->timeout_ms)) != CURLE_OK ||
			curl_easy_setopt(e->curl, CURLOPT_WRITEFUNCTION, reply_write) != CURLE_OK ||
			curl_easy_setopt(e->curl, CURLOPT_WRITEDATA, e) != CURLE_OK) {
			rc = etcd_fail(e, -ENOMEM, "etcd: %s: out of memory", path);
			break;
		}
		cc = curl_easy_perform(e->curl);
		if (cc == CURLE_OK) {
			e->cur = i;
			rc = parse_reply(e, i, &j);
			break;
		}
		if (!etcd_curl_failed(e, e->curl, i, cc, k == 0, &rc))
			break;
	}
	free(body);
	if (rc == 0 && reply != NULL)
		*reply = j;
	else
		json_decref(j);
	return rc;
}

/* The "kv" of a watch event, or the element itself. */
static const json_t *
kv_of(const json_t *elem, int events)
{
	return events ? json_object_get(elem, "kv") : elem;
}

int
etcd_kvs_build(struct km_etcd *e, json_t *const *arr, const unsigned int *ops, size_t narr,
	int events, int64_t revision, struct km_etcd_kvs **out)
{
	static const char *const fields[2] = {"key", "value"};
	struct km_etcd_kvs *r;
	size_t n = 0, bytes = 0, a, i, f, k = 0;
	uint8_t *p, *end;
	json_t *elem;

	/* first pass: count and bound the decoded bytes */
	for (a = 0; a < narr; a++) {
		if (arr[a] == NULL)
			continue;
		if (!json_is_array(arr[a]))
			return etcd_malformed(e);
		json_array_foreach(arr[a], i, elem)
		{
			const json_t *kv = kv_of(elem, events);

			if (!json_is_object(kv) || !json_is_string(json_object_get(kv, "key")))
				return etcd_malformed(e);
			for (f = 0; f < 2; f++) {
				const json_t *s = json_object_get(kv, fields[f]);

				if (s != NULL && !json_is_string(s))
					return etcd_malformed(e);
				bytes += json_string_length(s) / 4 * 3;
			}
			n++;
		}
	}
	if (n > (SIZE_MAX - sizeof(*r) - bytes) / sizeof(r->kv[0]))
		return etcd_fail(e, -ENOMEM, "etcd: %s: reply too large", e->path);
	r = malloc(sizeof(*r) + n * sizeof(r->kv[0]) + bytes);
	if (r == NULL)
		return etcd_fail(e, -ENOMEM, "etcd: %s: out of memory", e->path);
	r->revision = revision;
	r->n = n;
	p = (uint8_t *)&r->kv[n > 0 ? n : 1];
	end = p + bytes;
	for (a = 0; a < narr; a++) {
		if (arr[a] == NULL)
			continue;
		json_array_foreach(arr[a], i, elem)
		{
			const json_t *kv = kv_of(elem, events);
			struct km_etcd_kv *o = &r->kv[k++];
			const json_t *t;
			const uint8_t *ptr[2];
			size_t len[2];

			memset(o, 0, sizeof(*o));
			o->op = ops != NULL ? ops[a] : 0;
			for (f = 0; f < 2; f++) {
				const json_t *s = json_object_get(kv, fields[f]);

				ptr[f] = p;
				len[f] = 0;
				if (s != NULL &&
					etcd_b64_decode(json_string_value(s), json_string_length(s),
						p, (size_t)(end - p), &len[f]) != 0)
					goto bad;
				p += len[f];
			}
			o->key = ptr[0];
			o->klen = len[0];
			o->value = ptr[1];
			o->vlen = len[1];
			if (etcd_int(kv, "create_revision", &o->create_rev) != 0 ||
				etcd_int(kv, "mod_revision", &o->mod_rev) != 0 ||
				etcd_int(kv, "version", &o->version) != 0 ||
				etcd_int(kv, "lease", &o->lease) != 0)
				goto bad;
			if (events) {
				/* PUT is 0, left out by the gateway */
				t = json_object_get(elem, "type");
				if (t == NULL || (json_is_string(t) &&
							 strcmp(json_string_value(t), "PUT") == 0))
					o->deleted = 0;
				else if (json_is_string(t) &&
					 strcmp(json_string_value(t), "DELETE") == 0)
					o->deleted = 1;
				else
					goto bad;
			}
		}
	}
	*out = r;
	return (int)n;
bad:
	free(r);
	return etcd_malformed(e);
}

void
km_etcd_kvs_free(struct km_etcd_kvs *r)
{
	free(r);
}
