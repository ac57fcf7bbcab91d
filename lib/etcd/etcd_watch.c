/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Watches: one streaming POST per watch on its own curl handle, driven by a curl multi
 * handle so that km_etcd_watch_next() can wait with a timeout; the stream is split into
 * JSON messages whatever the read boundaries.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <km_util.h>

#include "etcd_private.h"

int
etcd_split_feed(struct etcd_split *s, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (s->start > 0 && s->start == s->len) {
		/* everything returned: start over at the buffer's head */
		s->len = s->scan = s->start = 0;
	}
	if (n > ETCD_REPLY_MAX - (s->len - s->start))
		return -EMSGSIZE;
	if (s->len + n > s->cap) {
		size_t cap = s->cap != 0 ? s->cap : 4096;
		char *b;

		if (s->start > 0) {
			/* drop what was returned before growing */
			memmove(s->buf, s->buf + s->start, s->len - s->start);
			s->len -= s->start;
			s->scan -= s->start;
			s->start = 0;
		}
		while (cap < s->len + n)
			cap *= 2;
		if (cap > s->cap) {
			b = realloc(s->buf, cap);
			if (b == NULL)
				return -ENOMEM;
			s->buf = b;
			s->cap = cap;
		}
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	return 0;
}

int
etcd_split_next(struct etcd_split *s, const char **obj, size_t *len)
{
	while (s->scan < s->len) {
		char c = s->buf[s->scan++];

		if (s->depth == 0) {
			/* between objects: white space, then '{' */
			if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
				s->start = s->scan;
				continue;
			}
			if (c != '{')
				return -EPROTO;
			s->start = s->scan - 1;
			s->depth = 1;
			continue;
		}
		if (s->in_str) {
			if (s->esc)
				s->esc = 0;
			else if (c == '\\')
				s->esc = 1;
			else if (c == '"')
				s->in_str = 0;
			continue;
		}
		switch (c) {
		case '"':
			s->in_str = 1;
			break;
		case '{':
		case '[':
			s->depth++;
			break;
		case '}':
		case ']':
			if (--s->depth == 0) {
				*obj = s->buf + s->start;
				*len = s->scan - s->start;
				s->start = s->scan;
				return 1;
			}
			break;
		default:
			break;
		}
	}
	return 0;
}

void
etcd_split_free(struct etcd_split *s)
{
	free(s->buf);
	memset(s, 0, sizeof(*s));
}

/* All fields: the thread that owns e. */
struct km_etcd_watch {
	struct km_etcd *e;
	CURLM *multi;
	CURL *curl;      /* the stream's transfer, in multi */
	char *body;      /* the create request */
	unsigned int ep; /* endpoint index of the stream */
	struct etcd_split sp;
	int feed_err;        /* the splitter refused bytes: the transfer was aborted */
	int done;            /* the transfer ended */
	CURLcode result;     /* how, once done */
	int created;         /* etcd confirmed the watch */
	int err;             /* the error it stays in, 0 while healthy */
	int64_t next_rev;    /* where to watch from again */
	int64_t compact_rev; /* after -ESTALE */
};

static size_t
watch_write(char *p, size_t size, size_t n, void *arg)
{
	struct km_etcd_watch *w = arg;
	int rc = etcd_split_feed(&w->sp, p, size * n);

	if (rc != 0) {
		w->feed_err = rc;
		return 0;
	}
	return size * n;
}

/* Detach and free the transfer (the multi handle stays). */
static void
watch_stop(struct km_etcd_watch *w)
{
	if (w->curl != NULL) {
		curl_multi_remove_handle(w->multi, w->curl);
		curl_easy_cleanup(w->curl);
		w->curl = NULL;
	}
}

/* Start the stream on endpoint i. */
static int
watch_start(struct km_etcd_watch *w, unsigned int i)
{
	struct km_etcd *e = w->e;

	w->curl = curl_easy_init();
	if (w->curl == NULL)
		return -ENOMEM;
	w->ep = i;
	w->done = 0;
	w->feed_err = 0;
	etcd_split_free(&w->sp);
	if (etcd_curl_setup(e, w->curl, i, e->path) != 0 ||
		curl_easy_setopt(w->curl, CURLOPT_POSTFIELDS, w->body) != CURLE_OK ||
		curl_easy_setopt(w->curl, CURLOPT_WRITEFUNCTION, watch_write) != CURLE_OK ||
		curl_easy_setopt(w->curl, CURLOPT_WRITEDATA, w) != CURLE_OK ||
		curl_multi_add_handle(w->multi, w->curl) != CURLM_OK) {
		watch_stop(w);
		return -ENOMEM;
	}
	return 0;
}

/* Move the transfer on, waiting up to wait_ms for something to happen. */
static int
watch_pump(struct km_etcd_watch *w, int wait_ms)
{
	CURLMsg *m;
	int running, left;

	if (wait_ms > 0 && curl_multi_poll(w->multi, NULL, 0, wait_ms, NULL) != CURLM_OK)
		return -ENOMEM;
	if (curl_multi_perform(w->multi, &running) != CURLM_OK)
		return -ENOMEM;
	while ((m = curl_multi_info_read(w->multi, &left)) != NULL)
		if (m->msg == CURLMSG_DONE && m->easy_handle == w->curl) {
			w->done = 1;
			w->result = m->data.result;
		}
	return 0;
}

/*
 * One message of the stream: 1 with *out set (events), 0 (nothing for the caller: the
 * creation, a progress report), or the error the watch is now in.
 */
static int
watch_message(struct km_etcd_watch *w, const char *p, size_t len, struct km_etcd_kvs **out)
{
	struct km_etcd *e = w->e;
	json_t *j = json_loadb(p, len, 0, NULL), *r, *ev;
	int64_t rev;
	int rc = 0;

	e->path = "/v3/watch";
	r = json_object_get(j, "result");
	if (!json_is_object(j)) {
		rc = etcd_malformed(e);
	} else if (json_object_get(j, "error") != NULL) {
		r = json_object_get(j, "error");
		rc = etcd_server_error(e, json_is_object(r) ? r : j);
	} else if (!json_is_object(r)) {
		rc = etcd_malformed(e);
	} else if (json_is_true(json_object_get(r, "created"))) {
		w->created = 1;
	} else if (json_is_true(json_object_get(r, "canceled"))) {
		const json_t *why = json_object_get(r, "cancel_reason");

		if (etcd_int(r, "compact_revision", &w->compact_rev) != 0)
			rc = etcd_malformed(e);
		else if (w->compact_rev > 0)
			rc = etcd_fail(e, -ESTALE,
				"etcd: watch: revision %lld compacted (compaction at %lld)",
				(long long)w->next_rev, (long long)w->compact_rev);
		else
			rc = etcd_fail(e, -ECANCELED, "etcd: watch canceled: %s",
				json_is_string(why) ? json_string_value(why) : "no reason given");
	} else if ((ev = json_object_get(r, "events")) != NULL) {
		rc = etcd_header_rev(e, r, &rev);
		if (rc == 0)
			rc = etcd_kvs_build(e, &ev, NULL, 1, 1, rev, out);
		if (rc > 0) {
			w->next_rev = (*out)->kv[rc - 1].mod_rev + 1;
			rc = 1;
		} else if (rc == 0) {
			km_etcd_kvs_free(*out);
			*out = NULL;
		}
	}
	json_decref(j);
	return rc;
}

/* The error of a stream that ended or broke (w->done). */
static int
watch_ended(struct km_etcd_watch *w)
{
	struct km_etcd *e = w->e;
	int rc;

	if (w->feed_err != 0)
		return etcd_fail(e, w->feed_err, "etcd %s: /v3/watch: %s", e->ep.url[w->ep],
			w->feed_err == -ENOMEM ? "out of memory" : "message too large");
	if (w->result == CURLE_OK)
		return etcd_fail(e, -ECONNRESET, "etcd %s: /v3/watch: stream closed by the server",
			e->ep.url[w->ep]);
	e->path = "/v3/watch";
	etcd_curl_failed(e, w->curl, w->ep, w->result, 1, &rc);
	return -ECONNRESET;
}

/*
 * Process the messages buffered: 1 with *out (events), 0 (none), or an error. With
 * until_created, stop after the creation message.
 */
static int
watch_drain(struct km_etcd_watch *w, int until_created, struct km_etcd_kvs **out)
{
	const char *p;
	size_t len;
	int rc;

	while ((rc = etcd_split_next(&w->sp, &p, &len)) > 0) {
		rc = watch_message(w, p, len, out);
		if (rc != 0 || (until_created && w->created))
			return rc;
	}
	if (rc < 0)
		return etcd_malformed(w->e);
	return 0;
}

int
km_etcd_watch_open(struct km_etcd *e, const void *key, size_t klen, unsigned int flags,
	int64_t start_rev, struct km_etcd_watch **out)
{
	static const char path[] = "/v3/watch";
	json_t *o = json_object(), *c = json_object();
	struct km_etcd_watch *w;
	struct km_etcd_kvs *none = NULL;
	unsigned int k;
	int rc = 0;

	if (o == NULL || c == NULL) {
		json_decref(c);
		rc = -ENOMEM;
	} else if (json_object_set_new(o, "create_request", c) != 0) { /* c is freed */
		rc = -ENOMEM;
	}
	if (rc == 0)
		rc = etcd_json_key(c, key, klen, flags);
	if (rc == 0 && start_rev < 0)
		rc = -EINVAL;
	if (rc == 0 && start_rev > 0)
		rc = etcd_json_int(c, "start_revision", start_rev);
	w = rc == 0 ? calloc(1, sizeof(*w)) : NULL;
	if (rc == 0 && w == NULL)
		rc = -ENOMEM;
	if (rc != 0)
		return etcd_req_fail(e, o, rc, path);
	e->path = path;
	w->e = e;
	w->next_rev = start_rev;
	w->body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	w->multi = curl_multi_init();
	if (w->body == NULL || w->multi == NULL) {
		km_etcd_watch_close(w);
		return etcd_req_fail(e, NULL, -ENOMEM, path);
	}
	for (k = 0; k < e->ep.n; k++) {
		unsigned int i = (e->cur + k) % e->ep.n;
		uint64_t deadline = km_util_now_ns() + (uint64_t)e->timeout_ms * 1000000u;
		int timed_out = 0;

		rc = watch_start(w, i);
		while (rc == 0 && !w->created && !w->done) {
			uint64_t now = km_util_now_ns();

			if (now >= deadline) {
				timed_out = 1;
				break;
			}
			rc = watch_pump(w, (int)((deadline - now + 999999) / 1000000));
			if (rc == 0)
				rc = watch_drain(w, 1, &none);
		}
		if (rc == 0 && w->created) {
			e->cur = i;
			*out = w;
			return 0;
		}
		if (rc == 0 &&
			(timed_out || (w->done && w->feed_err == 0 && w->result != CURLE_OK))) {
			if (etcd_curl_failed(e, w->curl, i,
				    timed_out ? CURLE_OPERATION_TIMEDOUT : w->result, k == 0,
				    &rc)) {
				/* nothing was sent: the next endpoint */
				watch_stop(w);
				continue;
			}
			break;
		}
		if (rc == 0)
			rc = watch_ended(w);
		break;
	}
	km_etcd_kvs_free(none);
	km_etcd_watch_close(w);
	return rc;
}

int
km_etcd_watch_next(struct km_etcd_watch *w, int timeout_ms, struct km_etcd_kvs **out)
{
	uint64_t deadline =
		km_util_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
	int pumped = 0;
	int rc;

	*out = NULL;
	if (w->err != 0)
		return w->err;
	for (;;) {
		uint64_t now;

		rc = watch_drain(w, 0, out);
		if (rc == 0 && w->done)
			rc = watch_ended(w);
		if (rc != 0)
			break;
		now = km_util_now_ns();
		if (pumped && now >= deadline)
			return 0;
		rc = watch_pump(w, now < deadline ? (int)((deadline - now + 999999) / 1000000) : 0);
		if (rc != 0)
			break;
		pumped = 1;
	}
	if (rc > 0)
		return (int)(*out)->n;
	/* a server error in the stream (not a compaction) is a break: watch again */
	if (rc != -ESTALE && rc != -ECANCELED && rc != -EPROTO && rc != -ENOMEM)
		rc = -ECONNRESET;
	w->err = rc;
	return rc;
}

int64_t
km_etcd_watch_next_rev(const struct km_etcd_watch *w)
{
	return w->next_rev;
}

int64_t
km_etcd_watch_compact_rev(const struct km_etcd_watch *w)
{
	return w->compact_rev;
}

void
km_etcd_watch_close(struct km_etcd_watch *w)
{
	if (w == NULL)
		return;
	watch_stop(w);
	if (w->multi != NULL)
		curl_multi_cleanup(w->multi);
	etcd_split_free(&w->sp);
	free(w->body);
	free(w);
}
