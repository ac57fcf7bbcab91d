/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * lib/etcd tests that need no etcd: endpoint lists, base64 round trips, prefix range ends,
 * the splitting of a watch stream into JSON messages at every read boundary, replies
 * turned into results and errors, and a scripted HTTP server on loopback for the replies
 * and streams a real etcd does not send (malformed, cut, broken). tests/functional/etcd.sh runs the
 * rest against etcd.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <km_util.h>

#include "etcd_private.h"

static void
test_endpoints_good(void **state)
{
	struct km_etcd_endpoints ep;
	char err[128];

	(void)state;
	assert_int_equal(
		km_etcd_endpoints_parse("http://127.0.0.1:2379", &ep, err, sizeof(err)), 0);
	assert_int_equal(ep.n, 1);
	assert_string_equal(ep.url[0], "http://127.0.0.1:2379");
	assert_string_equal(err, "");
	assert_int_equal(km_etcd_endpoints_parse("http://a:1,http://etcd-2.example:65535,"
						 "http://[::1]:2379",
				 &ep, err, sizeof(err)),
		0);
	assert_int_equal(ep.n, 3);
	assert_string_equal(ep.url[1], "http://etcd-2.example:65535");
	assert_string_equal(ep.url[2], "http://[::1]:2379");
	assert_int_equal(km_etcd_endpoints_parse("http://a:1,http://a:2,http://a:3,http://a:4,"
						 "http://a:5,http://a:6,http://a:7,http://a:8",
				 &ep, NULL, 0),
		0);
	assert_int_equal(ep.n, KM_ETCD_ENDPOINTS_MAX);
	assert_string_equal(ep.url[7], "http://a:8");
}

static void
test_endpoints_bad(void **state)
{
	static const struct {
		const char *s;
		const char *why; /* part of the message */
	} bad[] = {
		{"", "no endpoint"},
		{"127.0.0.1:2379", "endpoint 1 '127.0.0.1:2379': not http://"},
		{"https://127.0.0.1:2379", "only http://"},
		{"http://127.0.0.1", "a port is needed"},
		{"http://127.0.0.1:", "bad port"},
		{"http://127.0.0.1:0", "bad port"},
		{"http://127.0.0.1:65536", "bad port"},
		{"http://127.0.0.1:23x", "bad port"},
		{"http://127.0.0.1:2379/", "bad port"},
		{"http://127.0.0.1:2379/v3", "bad port"},
		{"http://:2379", "no host"},
		{"http://a b:1", "a port is needed"},
		{"http://[::1:2379", "bad IPv6"},
		{"http://[]:2379", "bad IPv6"},
		{"http://[::g]:2379", "bad IPv6"},
		{"http://a:1,", "endpoint 2 '': empty"},
		{",http://a:1", "endpoint 1 '': empty"},
		{"http://a:1,,http://b:2", "endpoint 2"},
		{"http://a:1, http://b:2", "endpoint 2"},
		{"http://a:1,http://a:2,http://a:3,http://a:4,http://a:5,http://a:6,http://a:7,"
		 "http://a:8,http://a:9",
			"more than 8"},
		{"http://"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1",
			"too long"},
	};
	struct km_etcd_endpoints ep = {.n = 99};
	struct km_etcd *e = NULL;
	char err[128];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = km_etcd_endpoints_parse(bad[i].s, &ep, err, sizeof(err));

		if (rc != -EINVAL || strstr(err, bad[i].why) == NULL)
			fail_msg("'%s': %d '%s', expected '%s'", bad[i].s, rc, err, bad[i].why);
		assert_int_equal(ep.n, 99); /* untouched */
	}
	assert_int_equal(km_etcd_endpoints_parse(NULL, &ep, err, sizeof(err)), -EINVAL);
	assert_int_equal(km_etcd_open("http://127.0.0.1:0", 1000, &e), -EINVAL);
	assert_int_equal(km_etcd_open("https://127.0.0.1:2379", 1000, &e), -EINVAL);
	assert_int_equal(km_etcd_open(NULL, 1000, &e), -EINVAL);
	assert_int_equal(km_etcd_open("http://127.0.0.1:2379", 0, &e), -EINVAL);
	assert_null(e); /* untouched */
}

static void
test_base64_round_trip(void **state)
{
	uint8_t in[300], out[300];
	uint64_t seed = 42;
	size_t len, n, i;

	(void)state;
	for (len = 0; len <= sizeof(in); len++) {
		json_t *j;

		for (i = 0; i < len; i++)
			in[i] = (uint8_t)km_util_splitmix64(&seed);
		if (len >= 2) {
			in[0] = 0;
			in[1] = 255;
		}
		j = etcd_b64_json(in, len);
		assert_non_null(j);
		assert_int_equal(json_string_length(j), (len + 2) / 3 * 4);
		assert_int_equal(
			etcd_b64_decode(json_string_value(j), json_string_length(j), out, len, &n),
			0);
		assert_int_equal(n, len);
		assert_memory_equal(in, out, len);
		if (len > 0) /* one byte short */
			assert_int_equal(etcd_b64_decode(json_string_value(j),
						 json_string_length(j), out, len - 1, &n),
				-ENOBUFS);
		json_decref(j);
	}
}

static void
test_base64_known_and_bad(void **state)
{
	static const char *const bad[] = {
		"YQ", "YQ=", "Y", "YW Jj", "YR==", "!!!!", "YQ==YQ==", "YWJj\n"};
	uint8_t out[16];
	size_t n, i;
	json_t *j;

	(void)state;
	j = etcd_b64_json("foo", 3);
	assert_string_equal(json_string_value(j), "Zm9v");
	json_decref(j);
	j = etcd_b64_json("\0\xff", 2);
	assert_string_equal(json_string_value(j), "AP8=");
	json_decref(j);
	assert_int_equal(etcd_b64_decode("", 0, out, 0, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(etcd_b64_decode("YQ==", 4, out, 1, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0], 'a');
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (etcd_b64_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n) != -EPROTO)
			fail_msg("'%s' accepted", bad[i]);
}

static void
test_prefix_end(void **state)
{
	static const struct {
		const char *key;
		size_t klen;
		const char *end;
		size_t elen;
	} t[] = {
		{"a", 1, "b", 1},
		{"map/", 4, "map0", 4},
		{"a\xff", 2, "b", 1},
		{"a\xff\xff", 3, "b", 1},
		{"\x01\xfe\xff", 3, "\x01\xff", 2},
		{"\xff", 1, "\0", 1},
		{"\xff\xff", 2, "\0", 1},
		{"", 0, "\0", 1},
		{"\0", 1, "\x01", 1},
	};
	uint8_t end[8];
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		n = etcd_prefix_end((const uint8_t *)t[i].key, t[i].klen, end);
		assert_int_equal(n, t[i].elen);
		assert_memory_equal(end, t[i].end, n);
	}
}

/* A watch stream: messages with braces, quotes and escapes inside strings. */
static const char *const msgs[] = {
	"{\"result\":{\"header\":{\"revision\":\"4\"},\"created\":true}}",
	"{\"result\":{\"events\":[{\"kv\":{\"key\":\"YQ==\",\"value\":\"MQ==\"}},"
	"{\"type\":\"DELETE\",\"kv\":{\"key\":\"YQ==\"}}]}}",
	"{\"s\":\"}{][\",\"t\":\"a\\\"}b\",\"u\":\"\\\\\",\"v\":[[{}],{\"w\":[]}]}",
	"{}",
	"{\"error\":{\"grpc_code\":14,\"message\":\"x\\\\\\\"}\"}}",
};

/* Feed stream to a splitter in the chunks given by cuts; check the messages come back. */
static void
split_check(const char *stream, size_t len, const size_t *cuts, size_t ncuts)
{
	struct etcd_split sp;
	const char *obj;
	size_t olen, at = 0, got = 0, c;
	int rc;

	memset(&sp, 0, sizeof(sp));
	for (c = 0; c <= ncuts; c++) {
		size_t to = c < ncuts ? cuts[c] : len;

		assert_int_equal(etcd_split_feed(&sp, stream + at, to - at), 0);
		at = to;
		while ((rc = etcd_split_next(&sp, &obj, &olen)) == 1) {
			assert_true(got < sizeof(msgs) / sizeof(msgs[0]));
			assert_int_equal(olen, strlen(msgs[got]));
			assert_memory_equal(obj, msgs[got], olen);
			got++;
		}
		assert_int_equal(rc, 0);
	}
	assert_int_equal(got, sizeof(msgs) / sizeof(msgs[0]));
	etcd_split_free(&sp);
}

static void
test_split_every_boundary(void **state)
{
	char stream[1024];
	size_t len = 0, i, j, cuts[2];

	(void)state;
	for (i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++)
		len += (size_t)snprintf(stream + len, sizeof(stream) - len, "%s%s", msgs[i],
			i % 2 == 0 ? "\n" : "\r\n \t");
	/* whole, then in two chunks at every split point, then in three */
	split_check(stream, len, NULL, 0);
	for (i = 0; i <= len; i++) {
		cuts[0] = i;
		split_check(stream, len, cuts, 1);
		for (j = i; j <= len; j += 7) {
			cuts[1] = j;
			split_check(stream, len, cuts, 2);
		}
	}
	/* byte by byte */
	{
		size_t *all = malloc(len * sizeof(*all));

		assert_non_null(all);
		for (i = 0; i < len; i++)
			all[i] = i;
		split_check(stream, len, all, len);
		free(all);
	}
}

static void
test_split_bad(void **state)
{
	struct etcd_split sp;
	const char *obj;
	size_t olen;

	(void)state;
	memset(&sp, 0, sizeof(sp));
	assert_int_equal(etcd_split_feed(&sp, "{\"a\":1}x{}", 10), 0);
	assert_int_equal(etcd_split_next(&sp, &obj, &olen), 1);
	assert_int_equal(etcd_split_next(&sp, &obj, &olen), -EPROTO);
	etcd_split_free(&sp);
	assert_int_equal(etcd_split_feed(&sp, "[1]", 3), 0);
	assert_int_equal(etcd_split_next(&sp, &obj, &olen), -EPROTO);
	etcd_split_free(&sp);
	/* an unfinished object is kept whole across many feeds (buffer moves) */
	assert_int_equal(etcd_split_feed(&sp, "{\"k\":\"", 6), 0);
	for (int i = 0; i < 5000; i++) {
		assert_int_equal(etcd_split_feed(&sp, "xyz}", 4), 0);
		assert_int_equal(etcd_split_next(&sp, &obj, &olen), 0);
	}
	assert_int_equal(etcd_split_feed(&sp, "\"}{}", 4), 0);
	assert_int_equal(etcd_split_next(&sp, &obj, &olen), 1);
	assert_int_equal(olen, 6 + 20000 + 2);
	assert_int_equal(etcd_split_next(&sp, &obj, &olen), 1);
	assert_int_equal(olen, 2);
	assert_int_equal(etcd_split_next(&sp, &obj, &olen), 0);
	etcd_split_free(&sp);
}

static void
test_int_fields(void **state)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:b}", "a",
		"5007618239521227784", "b", "-1", "c", (json_int_t)7, "d", "", "e", "12x", "f",
		"9223372036854775808", "g", "-9223372036854775808", "h", 1);
	int64_t v;

	(void)state;
	assert_int_equal(etcd_int(o, "a", &v), 0);
	assert_true(v == 5007618239521227784LL);
	assert_int_equal(etcd_int(o, "b", &v), 0);
	assert_true(v == -1);
	assert_int_equal(etcd_int(o, "c", &v), 0);
	assert_true(v == 7);
	assert_int_equal(etcd_int(o, "absent", &v), 0); /* zero values are left out */
	assert_true(v == 0);
	assert_int_equal(etcd_int(o, "d", &v), -EPROTO);
	assert_int_equal(etcd_int(o, "e", &v), -EPROTO);
	assert_int_equal(etcd_int(o, "f", &v), -EPROTO);
	assert_int_equal(etcd_int(o, "g", &v), 0);
	assert_true(v == INT64_MIN);
	assert_int_equal(etcd_int(o, "h", &v), -EPROTO);
	json_decref(o);
}

static int
setup_handle(void **state)
{
	struct km_etcd *e;

	if (km_etcd_open("http://127.0.0.1:9", 1000, &e) != 0)
		return -1;
	*state = e;
	return 0;
}

static int
teardown_handle(void **state)
{
	km_etcd_close(*state);
	return 0;
}

static void
test_kvs_build(void **state)
{
	struct km_etcd *e = *state;
	json_t *kvs = json_loads("[{\"key\":\"AP8=\",\"create_revision\":\"2\",\"mod_revision\":"
				 "\"3\",\"version\":\"2\",\"value\":\"YmFy\",\"lease\":\"77\"},"
				 "{\"key\":\"Yg==\"}]",
		0, NULL);
	json_t *ev = json_loads(
		"[{\"kv\":{\"key\":\"YQ==\",\"value\":\"\",\"mod_revision\":\"5\"}},"
		"{\"type\":\"DELETE\",\"kv\":{\"key\":\"YQ==\",\"mod_revision\":\"6\"}}]",
		0, NULL);
	json_t *arr[2] = {kvs, NULL};
	unsigned int ops[2] = {3, 4};
	struct km_etcd_kvs *r;

	assert_int_equal(etcd_kvs_build(e, arr, ops, 2, 0, 9, &r), 2);
	assert_true(r->revision == 9);
	assert_int_equal(r->kv[0].klen, 2);
	assert_memory_equal(r->kv[0].key, "\0\xff", 2);
	assert_int_equal(r->kv[0].vlen, 3);
	assert_memory_equal(r->kv[0].value, "bar", 3);
	assert_true(r->kv[0].create_rev == 2 && r->kv[0].mod_rev == 3 && r->kv[0].version == 2);
	assert_true(r->kv[0].lease == 77);
	assert_int_equal(r->kv[0].op, 3);
	assert_int_equal(r->kv[1].vlen, 0);
	assert_true(r->kv[1].create_rev == 0);
	km_etcd_kvs_free(r);
	assert_int_equal(etcd_kvs_build(e, &ev, NULL, 1, 1, 6, &r), 2);
	assert_int_equal(r->kv[0].deleted, 0);
	assert_int_equal(r->kv[1].deleted, 1);
	assert_true(r->kv[1].mod_rev == 6);
	km_etcd_kvs_free(r);
	/* nothing: an empty result */
	assert_int_equal(etcd_kvs_build(e, arr + 1, NULL, 1, 0, 9, &r), 0);
	assert_int_equal(r->n, 0);
	km_etcd_kvs_free(r);
	json_decref(kvs);
	json_decref(ev);
}

static void
test_kvs_build_malformed(void **state)
{
	static const char *const bad[] = {
		"{}",
		"[1]",
		"[{}]",
		"[{\"key\":5}]",
		"[{\"key\":\"YQ=\"}]",
		"[{\"key\":\"YQ==\",\"value\":7}]",
		"[{\"key\":\"YQ==\",\"value\":\"!!!!\"}]",
		"[{\"key\":\"YQ==\",\"version\":\"x\"}]",
		"[{\"key\":\"YQ==\",\"lease\":[]}]",
	};
	struct km_etcd *e = *state;
	struct km_etcd_kvs *r = NULL;
	json_t *j;
	size_t i;

	e->path = "/v3/kv/range";
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = json_loads(bad[i], 0, NULL);
		assert_non_null(j);
		if (etcd_kvs_build(e, &j, NULL, 1, 0, 1, &r) != -EPROTO)
			fail_msg("'%s' accepted", bad[i]);
		assert_string_equal(km_etcd_errmsg(e), "etcd: malformed reply to /v3/kv/range");
		json_decref(j);
	}
	j = json_loads("[{\"type\":\"EXPIRE\",\"kv\":{\"key\":\"YQ==\"}}]", 0, NULL);
	assert_int_equal(etcd_kvs_build(e, &j, NULL, 1, 1, 1, &r), -EPROTO);
	json_decref(j);
	j = json_loads("[{\"key\":\"YQ==\"}]", 0, NULL); /* an event without kv */
	assert_int_equal(etcd_kvs_build(e, &j, NULL, 1, 1, 1, &r), -EPROTO);
	json_decref(j);
	assert_null(r);
}

static void
test_server_errors(void **state)
{
	static const struct {
		const char *json;
		int rc;
	} t[] = {
		{"{\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: "
		 "requested lease not found\",\"code\":5}",
			-ENOENT},
		{"{\"message\":\"illegal base64 data at input byte 0\",\"code\":3}", -EINVAL},
		{"{\"message\":\"etcdserver: mvcc: required revision has been compacted\","
		 "\"code\":11}",
			-ESTALE},
		{"{\"message\":\"etcdserver: mvcc: required revision is a future revision\","
		 "\"code\":11}",
			-ERANGE},
		{"{\"message\":\"election: no leader\",\"code\":2}", -ENOENT},
		{"{\"message\":\"election: not leader\",\"code\":2}", -EPERM},
		{"{\"message\":\"etcdserver: requested lease not found\",\"code\":2}", -ENOENT},
		{"{\"message\":\"etcdserver: no leader\",\"code\":14}", -EAGAIN},
		{"{\"grpc_code\":14,\"http_code\":503,\"message\":\"unavailable\"}", -EAGAIN},
		{"{\"message\":\"something\",\"code\":13}", -EIO},
		{"{\"code\":\"x\"}", -EIO},
	};
	struct km_etcd *e = *state;
	size_t i;

	e->path = "/v3/lease/revoke";
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		json_t *j = json_loads(t[i].json, 0, NULL);

		assert_non_null(j);
		assert_int_equal(etcd_server_error(e, j), t[i].rc);
		json_decref(j);
	}
	e->path = "/v3/lease/revoke";
	{
		json_t *j = json_loads(t[0].json, 0, NULL);

		etcd_server_error(e, j);
		assert_string_equal(km_etcd_errmsg(e),
			"etcd: /v3/lease/revoke: etcdserver: requested lease not found");
		json_decref(j);
	}
}

static void
test_bad_requests(void **state)
{
	struct km_etcd *e = *state;
	struct km_etcd_kvs *r = NULL;
	struct km_etcd_leader l;
	struct km_etcd_cmp c = {.key = "k", .klen = 1, .target = 9};
	struct km_etcd_op op = {
		.type = KM_ETCD_OP_PUT, .key = "k", .klen = 1, .flags = KM_ETCD_PREFIX};
	uint8_t big[KM_ETCD_NAME_MAX + 1] = {0};

	/* refused before anything is sent (the endpoint is never reached) */
	assert_int_equal(km_etcd_put(e, "", 0, "v", 1, 0, NULL), -EINVAL);
	assert_string_equal(km_etcd_errmsg(e), "etcd: /v3/kv/put: invalid arguments");
	assert_int_equal(km_etcd_get(e, "", 0, 0, &r), -EINVAL);
	assert_int_equal(km_etcd_get(e, "k", 1, 2, &r), -EINVAL);
	assert_int_equal(km_etcd_delete(e, NULL, 3, 0, NULL), -EINVAL);
	assert_int_equal(km_etcd_txn(e, &c, 1, NULL, 0, NULL, 0, NULL, NULL), -EINVAL);
	assert_int_equal(km_etcd_txn(e, NULL, 0, &op, 1, NULL, 0, NULL, NULL), -EINVAL);
	assert_int_equal(km_etcd_txn(e, NULL, 1, NULL, 0, NULL, 0, NULL, NULL), -EINVAL);
	assert_int_equal(km_etcd_lease_grant(e, 0, NULL, NULL), -EINVAL);
	assert_int_equal(km_etcd_campaign(e, big, sizeof(big), 1, "v", 1, 100, &l), -ENAMETOOLONG);
	assert_int_equal(km_etcd_campaign(e, "n", 1, 0, "v", 1, 100, &l), -EINVAL);
	assert_int_equal(km_etcd_leader(e, "", 0, &l, NULL), -EINVAL);
	assert_null(r);
}

/*
 * A scripted HTTP server on loopback for what a real etcd never sends: each connection
 * gets the next reply, written in segments (separated by '|') 20 ms apart, then closed.
 * A segment "~" waits 500 ms instead. In a reply that starts with "S:" (a stream), every
 * segment after the first (the head) goes as one HTTP chunk, and "END" as the last chunk.
 */
struct fake {
	int lfd;
	char url[64];
	const char *const *replies;
	size_t n;
	pthread_t th;
};

static int
fake_send(int fd, const char *p, size_t len, int chunked)
{
	char head[16];

	if (len == 1 && p[0] == '~') {
		usleep(500000);
		return 0;
	}
	if (chunked && len == 3 && memcmp(p, "END", 3) == 0)
		return send(fd, "0\r\n\r\n", 5, MSG_NOSIGNAL) < 0 ? -1 : 0;
	if (chunked) {
		snprintf(head, sizeof(head), "%zx\r\n", len);
		if (send(fd, head, strlen(head), MSG_NOSIGNAL) < 0)
			return -1;
	}
	if (send(fd, p, len, MSG_NOSIGNAL) < 0)
		return -1;
	if (chunked && send(fd, "\r\n", 2, MSG_NOSIGNAL) < 0)
		return -1;
	return 0;
}

static void *
fake_run(void *arg)
{
	struct fake *f = arg;
	size_t i;

	for (i = 0; i < f->n; i++) {
		char req[8192];
		size_t got = 0;
		const char *r = f->replies[i], *bar;
		int stream = strncmp(r, "S:", 2) == 0, seg = 0;
		int fd = accept(f->lfd, NULL, NULL);

		if (fd < 0)
			break;
		/* the request: headers and the body curl sends with them */
		while (got < sizeof(req) - 1) {
			ssize_t n = recv(fd, req + got, sizeof(req) - 1 - got, 0);

			if (n <= 0)
				break;
			got += (size_t)n;
			req[got] = '\0';
			if (strstr(req, "\r\n\r\n") != NULL && req[got - 1] == '}')
				break;
		}
		if (stream)
			r += 2;
		for (;; seg++) {
			bar = strchr(r, '|');
			if (fake_send(fd, r, bar != NULL ? (size_t)(bar - r) : strlen(r),
				    stream && seg > 0) != 0 ||
				bar == NULL)
				break;
			usleep(20000);
			r = bar + 1;
		}
		close(fd);
	}
	return NULL;
}

static void
fake_start(struct fake *f, const char *const *replies, size_t n)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	f->replies = replies;
	f->n = n;
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(f->lfd, 4), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&a, &alen), 0);
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u", ntohs(a.sin_port));
	assert_int_equal(pthread_create(&f->th, NULL, fake_run, f), 0);
}

static void
fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	pthread_join(f->th, NULL);
	close(f->lfd);
}

#define HTTP_OK "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
#define HDR     "{\"header\":{\"revision\":\"9\"}"

static void
test_fake_malformed(void **state)
{
	static const char *const replies[] = {
		HTTP_OK "hello",
		HTTP_OK "{\"kvs\":[]}",
		HTTP_OK HDR ",\"kvs\":[{\"key\":\"YQ=\"}]}",
		HTTP_OK HDR ",\"kvs\":{}}",
		HTTP_OK HDR ",\"deleted\":\"-1\"}",
		HTTP_OK HDR ",\"succeeded\":\"yes\"}",
		HTTP_OK HDR ",\"succeeded\":true,\"responses\":[{\"response_put\":{}}]}",
		HTTP_OK HDR ",\"ID\":\"0\",\"TTL\":\"5\"}",
		HTTP_OK "{\"result\":7}",
		HTTP_OK HDR "}",
		"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n<html>",
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"header\":|",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n|~",
	};
	struct km_etcd_op get = {.type = KM_ETCD_OP_GET, .key = "a", .klen = 1};
	struct km_etcd_kvs *r = NULL;
	struct km_etcd *e;
	struct km_etcd_leader l;
	struct fake f;
	int64_t id;

	(void)state;
	fake_start(&f, replies, sizeof(replies) / sizeof(replies[0]));
	assert_int_equal(km_etcd_open(f.url, 300, &e), 0);
	assert_int_equal(km_etcd_get(e, "a", 1, 0, &r), -EPROTO);
	assert_string_equal(km_etcd_errmsg(e), "etcd: malformed reply to /v3/kv/range");
	assert_int_equal(km_etcd_get(e, "a", 1, 0, &r), -EPROTO);
	assert_int_equal(km_etcd_get(e, "a", 1, 0, &r), -EPROTO);
	assert_int_equal(km_etcd_get(e, "a", 1, 0, &r), -EPROTO);
	assert_int_equal(km_etcd_delete(e, "a", 1, 0, NULL), -EPROTO);
	assert_int_equal(km_etcd_txn(e, NULL, 0, NULL, 0, NULL, 0, NULL, NULL), -EPROTO);
	/* a GET op whose response is not a range */
	assert_int_equal(km_etcd_txn(e, NULL, 0, &get, 1, NULL, 0, NULL, &r), -EPROTO);
	assert_string_equal(km_etcd_errmsg(e), "etcd: malformed reply to /v3/kv/txn");
	assert_int_equal(km_etcd_lease_grant(e, 5, &id, NULL), -EPROTO);
	assert_int_equal(km_etcd_lease_keepalive(e, 1, NULL), -EPROTO);
	assert_int_equal(km_etcd_campaign(e, "n", 1, 1, "v", 1, 300, &l), -EPROTO);
	assert_int_equal(km_etcd_get(e, "a", 1, 0, &r), -EPROTO);
	assert_non_null(strstr(km_etcd_errmsg(e), "HTTP 502 to /v3/kv/range"));
	/* cut short, then no reply at all in time: no other endpoint is tried */
	assert_int_equal(km_etcd_get(e, "a", 1, 0, &r), -ECONNRESET);
	assert_int_equal(km_etcd_get(e, "a", 1, 0, &r), -ETIMEDOUT);
	assert_null(r);
	km_etcd_close(e);
	fake_stop(&f);
}

#define HTTP_STREAM                                                                  \
	"S:HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: " \
	"chunked\r\nConnection: close\r\n\r\n|"
#define CREATED "{\"result\":{\"header\":{\"revision\":\"4\"},\"created\":true}}\n|"

static void
test_fake_watch_stream(void **state)
{
	/* chunks that cut messages anywhere, two messages in one, then the stream breaks */
	static const char *const replies[] = {
		HTTP_STREAM CREATED
		"{\"result\":{\"header\":{\"re|visio|n\":\"5\"},\"events\":[{"
		"\"kv\":{\"key\":\"YQ==\",\"value\":\"MQ==\",\"mod_revision\":"
		"\"5\"}}]}}\n{\"result\":{\"header\":{\"revision\":\"6\"},\"ev|"
		"ents\":[{\"type\":\"DELETE\",\"kv\":{\"key\":\"YQ==\",\"mod_"
		"revision\":\"6\"}}]}}\n|{\"result\":{\"header\":{\"revision\":\"7\"},"
		"\"created",
		HTTP_STREAM CREATED "{\"result\":{\"canceled\":true}}|END",
		HTTP_STREAM CREATED "{\"a\":]",
		HTTP_STREAM CREATED "END",
		HTTP_STREAM CREATED "{\"error\":{\"grpc_code\":14,\"message\":\"etcdserver: no "
				    "leader\"}}",
		HTTP_OK "{\"error\":\"bad\",\"message\":\"etcdserver: bad\",\"code\":3}",
		HTTP_STREAM "~|~|~|~|~",
	};
	struct km_etcd_kvs *r = NULL;
	struct km_etcd_watch *w;
	struct km_etcd *e;
	struct fake f;
	int total = 0, n;

	(void)state;
	fake_start(&f, replies, sizeof(replies) / sizeof(replies[0]));
	assert_int_equal(km_etcd_open(f.url, 2000, &e), 0);
	assert_int_equal(km_etcd_watch_open(e, "a", 1, 0, 5, &w), 0);
	while ((n = km_etcd_watch_next(w, 1000, &r)) > 0) {
		assert_true(r->kv[0].mod_rev == 5 + total);
		assert_int_equal(r->kv[0].deleted, total);
		assert_memory_equal(r->kv[0].key, "a", 1);
		total += n;
		km_etcd_kvs_free(r);
	}
	assert_int_equal(total, 2);
	assert_int_equal(n, -ECONNRESET);
	assert_true(km_etcd_watch_next_rev(w) == 7);
	assert_int_equal(km_etcd_watch_next(w, 0, &r), -ECONNRESET);
	km_etcd_watch_close(w);
	/* canceled without a compaction; a broken message; a stream closed; an error in it */
	assert_int_equal(km_etcd_watch_open(e, "a", 1, 0, 0, &w), 0);
	assert_int_equal(km_etcd_watch_next(w, 1000, &r), -ECANCELED);
	assert_true(km_etcd_watch_compact_rev(w) == 0);
	km_etcd_watch_close(w);
	assert_int_equal(km_etcd_watch_open(e, "a", 1, 0, 0, &w), 0);
	assert_int_equal(km_etcd_watch_next(w, 1000, &r), -EPROTO);
	km_etcd_watch_close(w);
	assert_int_equal(km_etcd_watch_open(e, "a", 1, 0, 0, &w), 0);
	assert_int_equal(km_etcd_watch_next(w, 1000, &r), -ECONNRESET);
	assert_non_null(strstr(km_etcd_errmsg(e), "stream closed by the server"));
	km_etcd_watch_close(w);
	assert_int_equal(km_etcd_watch_open(e, "a", 1, 0, 0, &w), 0);
	assert_int_equal(km_etcd_watch_next(w, 1000, &r), -ECONNRESET);
	assert_non_null(strstr(km_etcd_errmsg(e), "no leader"));
	km_etcd_watch_close(w);
	/* refused at creation; not created in time (2 s) */
	assert_int_equal(km_etcd_watch_open(e, "a", 1, 0, 0, &w), -EINVAL);
	assert_string_equal(km_etcd_errmsg(e), "etcd: /v3/watch: etcdserver: bad");
	assert_int_equal(km_etcd_watch_open(e, "a", 1, 0, 0, &w), -ETIMEDOUT);
	km_etcd_close(e);
	fake_stop(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_endpoints_good),
		cmocka_unit_test(test_endpoints_bad),
		cmocka_unit_test(test_base64_round_trip),
		cmocka_unit_test(test_base64_known_and_bad),
		cmocka_unit_test(test_prefix_end),
		cmocka_unit_test(test_split_every_boundary),
		cmocka_unit_test(test_split_bad),
		cmocka_unit_test(test_int_fields),
		cmocka_unit_test_setup_teardown(test_kvs_build, setup_handle, teardown_handle),
		cmocka_unit_test_setup_teardown(
			test_kvs_build_malformed, setup_handle, teardown_handle),
		cmocka_unit_test_setup_teardown(test_server_errors, setup_handle, teardown_handle),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup_handle, teardown_handle),
		cmocka_unit_test(test_fake_malformed),
		cmocka_unit_test(test_fake_watch_stream),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
