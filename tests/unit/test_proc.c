/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Request processor tests: two workers over an 8-shard map with the mem store driver.
 * Every request travels as a datagram (km_msg_build -> km_proc_rx_burst -> km_reply_parse) and the
 * reply is written over the request buffer, as keymapd does with its mbufs.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <km_proc.h>

#define NB_WORKERS 2
#define NB_SHARDS  8
#define PORT_BASE  7000
#define VALUE_MAX  1000
#define SEED       0x6b6d70726f63ULL /* "kmproc" */

#define MODEL_KEYS 500
#define MODEL_OPS  20000

struct env {
	struct km_shardmap *map;
	struct km_proc *proc[NB_WORKERS];
};

/* A request as a client would describe it. */
struct req {
	uint8_t op;
	const char *key;
	const void *val;
	uint32_t val_len;
	uint64_t version;
	uint64_t req_id;
	uint64_t src;
};

/* The reply, parsed in place: msg points into buf, the buffer the request was sent in. */
struct rep {
	uint8_t buf[KM_DGRAM_MAX];
	size_t len;
	struct km_msg msg;
	int worker;
};

static uint64_t
rnd_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static int
proc_new(uint16_t worker, struct km_proc **out)
{
	struct km_proc_params pp = {
		.worker = worker,
		.value_max = VALUE_MAX,
		.store_driver = "mem",
		.version_base = 1, /* the same versions in every processor of a test */
	};

	return km_proc_create(&pp, out);
}

static int
env_setup(void **state)
{
	struct km_shardmap_params mp = {
		.nb_shards = NB_SHARDS,
		.nb_workers = NB_WORKERS,
		.udp_port_base = PORT_BASE,
		.route_sep = '/',
		.route_depth = 1,
	};
	struct env *e = calloc(1, sizeof(*e));
	uint32_t i;

	if (e == NULL || km_shardmap_create(&mp, &e->map) != 0)
		return -1;
	for (i = 0; i < NB_WORKERS; i++)
		if (proc_new((uint16_t)i, &e->proc[i]) != 0)
			return -1;
	/* Each worker creates the stores of the shards the map assigns it. */
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		const struct km_shard *sh = km_shardmap_shard_at(e->map, i);

		if (km_proc_shard_add(e->proc[km_shard_owner(sh)], km_shard_id(sh)) != 0)
			return -1;
	}
	*state = e;
	return 0;
}

static int
env_teardown(void **state)
{
	struct env *e = *state;
	unsigned int i;

	for (i = 0; i < NB_WORKERS; i++)
		km_proc_destroy(e->proc[i]);
	km_shardmap_free(e->map);
	free(e);
	return 0;
}

static const struct km_shard *
shard_of(const struct km_shardmap *m, const char *key)
{
	return km_shardmap_lookup(m, km_shardmap_hash(m, (const uint8_t *)key, strlen(key)));
}

/* The i-th key of the form "<prefix><n>" that `worker` owns in map m. */
static void
key_owned(const struct km_shardmap *m, uint16_t worker, const char *prefix, unsigned int i,
	char *key, size_t cap)
{
	unsigned int n;

	for (n = 0;; n++) {
		snprintf(key, cap, "%s%u", prefix, n);
		if (km_shard_owner(shard_of(m, key)) == worker && i-- == 0)
			return;
	}
}

static size_t
req_build(uint8_t *buf, size_t cap, const struct req *r, uint32_t epoch)
{
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = r->op,
		.key_len = r->key == NULL ? 0 : (uint16_t)strlen(r->key),
		.val_len = r->val_len,
		.epoch = epoch,
		.req_id = r->req_id,
		.version = r->version,
	};
	size_t n = km_msg_build(buf, cap, &h, r->key, r->val);

	assert_true(n > 0);
	return n;
}

/* Outcomes of route(): a worker index, or one of these. */
#define T_ANY   -1 /* executed by whichever worker gets it */
#define T_MOVED -2 /* answered MOVED */

/*
 * The datagram buf[0..len) through km_proc_rx() on worker port (worker 0 for -1), as
 * keymapd's worker hands it over: a HANDOFF verdict is followed by the owner's
 * km_proc_rx() of the same datagram, marked handed. Reply written over buf (cap bytes).
 * @return the worker whose verdict is in *r.
 */
static unsigned int
rx_call(struct km_proc *const *procs, const struct km_shardmap *m, uint8_t *buf, size_t len,
	size_t cap, int port, uint64_t src, struct km_proc_req *r)
{
	unsigned int w = port < 0 ? 0 : (unsigned int)port;

	*r = (struct km_proc_req){
		.buf = buf, .len = len, .cap = cap, .src = src, .port_worker = (int16_t)port};
	km_proc_rx(procs[w], m, r);
	if (r->verdict == KM_PROC_HANDOFF) {
		w = r->owner;
		assert_true(w < NB_WORKERS);
		r->handed = 1;
		km_proc_rx(procs[w], m, r);
		assert_int_not_equal(r->verdict, KM_PROC_HANDOFF);
	}
	return w;
}

/*
 * Send r with map m as an up-to-date client would (epoch of m, no port preference), run
 * it through km_proc_rx() (handed to the owner), reply written over the request buffer.
 * Returns the reply status.
 */
static uint8_t
call_map(struct env *e, const struct km_shardmap *m, const struct req *r, struct rep *out,
	size_t cap)
{
	struct km_proc_req pr;
	size_t len;

	assert_true(cap <= sizeof(out->buf));
	len = req_build(out->buf, cap, r, km_shardmap_epoch(m));
	out->worker = (int)rx_call(e->proc, m, out->buf, len, cap, -1, r->src, &pr);
	assert_int_equal(pr.verdict, KM_PROC_REPLY);
	out->len = pr.reply_len;
	assert_true(out->len >= KM_HDR_LEN && out->len <= cap);
	assert_int_equal(km_reply_parse(out->buf, out->len, &out->msg), 0);
	/* Every reply echoes op and request id and tells the map epoch. */
	assert_int_equal(out->msg.hdr.op, r->op);
	assert_int_equal(out->msg.hdr.req_id, r->req_id);
	assert_int_equal(out->msg.hdr.epoch, km_shardmap_epoch(m));
	assert_int_equal(out->msg.hdr.key_len, 0);
	return out->msg.hdr.status;
}

static uint8_t
call(struct env *e, const struct req *r, struct rep *out)
{
	return call_map(e, e->map, r, out, KM_DGRAM_MAX);
}

/* Counter deltas: snapshot both workers, sum them. */
static struct km_proc_counters
cnt_sum(const struct env *e)
{
	struct km_proc_counters s;
	uint64_t *d = (uint64_t *)&s;
	unsigned int w, i;

	memset(&s, 0, sizeof(s));
	for (w = 0; w < NB_WORKERS; w++) {
		const uint64_t *c = (const uint64_t *)km_proc_counters(e->proc[w]);

		for (i = 0; i < KM_PROC_NB_COUNTERS; i++)
			d[i] += c[i];
	}
	return s;
}

#define CNT_DELTA(e, before, name) (cnt_sum(e).name - (before).name)

static int
info_cmp(const void *a, const void *b)
{
	const struct km_shard_info *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* km_proc_shard_infos() of p, sorted by id; checks the count and each entry's store. */
static uint32_t
infos_sorted(struct km_proc *p, struct km_shard_info *out, uint32_t max)
{
	struct km_store_stats st;
	uint32_t n = km_proc_shard_infos(p, out, max), i;

	assert_int_equal(n, km_proc_nb_shards(p));
	assert_true(n <= max);
	qsort(out, n, sizeof(*out), info_cmp);
	for (i = 0; i < n; i++) {
		struct km_store *s = km_proc_shard_store(p, out[i].id);

		assert_non_null(s);
		assert_true(i == 0 || out[i].id != out[i - 1].id);
		km_store_stats(s, &st);
		assert_int_equal(out[i].keys, st.keys);
		assert_int_equal(out[i].bytes, st.value_bytes);
		assert_int_equal(out[i].version_last, st.version_last);
	}
	return n;
}

/* Request count of an owned shard, through km_proc_shard_infos(). */
static uint64_t
shard_requests(struct km_proc *p, uint64_t id)
{
	struct km_shard_info info[64];
	uint32_t n = infos_sorted(p, info, 64), i;

	for (i = 0; i < n; i++)
		if (info[i].id == id)
			return info[i].requests;
	fail_msg("shard %" PRIu64 " not owned", id);
	return 0;
}

static void
test_create(void **state)
{
	struct env *e = *state;
	struct km_proc_params pp = {.value_max = VALUE_MAX, .store_driver = "mem"};
	struct km_proc *p;
	uint32_t total = 0, i, w;

	for (w = 0; w < NB_WORKERS; w++) {
		/* With 8 shards over 2 workers jump hash gives both some: the tests rely on it. */
		assert_true(km_proc_nb_shards(e->proc[w]) > 0);
		total += km_proc_nb_shards(e->proc[w]);
	}
	assert_int_equal(total, NB_SHARDS);
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		const struct km_shard *sh = km_shardmap_shard_at(e->map, i);

		assert_non_null(km_proc_shard_store(e->proc[km_shard_owner(sh)], km_shard_id(sh)));
		assert_null(km_proc_shard_store(e->proc[1 - km_shard_owner(sh)], km_shard_id(sh)));
		assert_int_equal(
			km_proc_shard_add(e->proc[km_shard_owner(sh)], km_shard_id(sh)), -EEXIST);
	}
	assert_int_equal(km_proc_shard_add(e->proc[0], 0), -EINVAL);

	pp.value_max = KM_VALUE_MAX_LARGE + 1;
	assert_int_equal(km_proc_create(&pp, &p), -EINVAL);
	pp.value_max = VALUE_MAX;
	pp.reply_max = KM_MSG_MAX + 1;
	assert_int_equal(km_proc_create(&pp, &p), -EINVAL);
	pp.reply_max = 0;
	pp.dedup_entries = 1000;
	assert_int_equal(km_proc_create(&pp, &p), -EINVAL);
	pp.dedup_entries = 1024;
	pp.store_driver = "no-such-driver";
	assert_int_equal(km_proc_create(&pp, &p), -ENOENT);
	pp.store_driver = NULL;
	assert_int_equal(km_proc_create(&pp, &p), -EINVAL);

	/* Many shards on one worker: the shard table grows. */
	pp.store_driver = "mem";
	assert_int_equal(km_proc_create(&pp, &p), 0);
	for (i = 0; i < 100; i++)
		assert_int_equal(km_proc_shard_add(p, 1000 + i), 0);
	assert_int_equal(km_proc_nb_shards(p), 100);
	for (i = 0; i < 100; i++)
		assert_non_null(km_proc_shard_store(p, 1000 + i));
	assert_null(km_proc_shard_store(p, 999));
	km_proc_destroy(p);
	km_proc_destroy(NULL);

	assert_int_equal(KM_PROC_NB_COUNTERS, sizeof(struct km_proc_counters) / 8);
	assert_string_equal(km_proc_counter_names[0], "req_ping");
	assert_string_equal(km_proc_counter_names[KM_PROC_NB_COUNTERS - 1], "crew_withdrawn");
	for (i = 0; i < KM_PROC_NB_COUNTERS; i++)
		assert_non_null(km_proc_counter_help[i]);
}

/*
 * Where a request for key with the given epoch, sent to port_worker's port (-1: none),
 * ends: the worker that executes it (T_ANY for keyless ops), or T_MOVED.
 */
static int
target_of(struct env *e, const struct km_shardmap *m, uint8_t op, const char *key, uint32_t epoch,
	int port_worker)
{
	uint8_t buf[KM_DGRAM_MAX];
	struct req r = {.op = op, .key = key, .req_id = 1};
	uint8_t body[2 + 1 + KM_KEY_MAX];
	struct km_proc_req pr;
	struct km_msg rep;
	unsigned int w;
	size_t len;

	if (op == KM_OP_MGET) {
		/* First key decides; a second key owned by anyone must not matter. */
		size_t kl = strlen(key);

		km_put16(body, 2);
		body[2] = (uint8_t)kl;
		memcpy(body + 3, key, kl);
		body[3 + kl] = 1;
		body[4 + kl] = 'z';
		r.key = NULL;
		r.val = body;
		r.val_len = (uint32_t)(5 + kl);
	}
	if (op == KM_OP_PUT || op == KM_OP_CAS) {
		r.val = "v";
		r.val_len = 1;
	}
	len = req_build(buf, sizeof(buf), &r, epoch);
	w = rx_call(e->proc, m, buf, len, sizeof(buf), port_worker, 1, &pr);
	assert_int_equal(pr.verdict, KM_PROC_REPLY);
	assert_int_equal(km_reply_parse(buf, pr.reply_len, &rep), 0);
	if (rep.hdr.status == KM_ST_MOVED)
		return T_MOVED;
	return op == KM_OP_PING || op == KM_OP_MAP ? T_ANY : (int)w;
}

static void
test_target(void **state)
{
	static const uint8_t keyed[] = {KM_OP_GET, KM_OP_PUT, KM_OP_CAS, KM_OP_DEL, KM_OP_MGET};
	struct env *e = *state;
	const struct km_shard *sh;
	struct km_shardmap *m2;
	uint8_t buf[KM_DGRAM_MAX];
	struct km_proc_req pr;
	char key[32];
	unsigned int i, k;
	size_t len;

	/* Keys go to the owner of their shard; the route hash is the shard map's hash. */
	for (i = 0; i < 200; i++) {
		struct req r = {.op = KM_OP_GET, .key = key, .req_id = i};

		snprintf(key, sizeof(key), i % 2 ? "key-%u" : "grp%u/item", i);
		sh = shard_of(e->map, key);
		for (k = 0; k < sizeof(keyed); k++)
			assert_int_equal(
				target_of(e, e->map, keyed[k], key, km_shardmap_epoch(e->map), -1),
				km_shard_owner(sh));
		/* Sent to the other worker: handed to the owner, with the route computed. */
		len = req_build(buf, sizeof(buf), &r, 0);
		pr = (struct km_proc_req){.buf = buf,
			.len = len,
			.cap = sizeof(buf),
			.src = 1,
			.port_worker = (int16_t)(1 - km_shard_owner(sh))};
		km_proc_rx(e->proc[1 - km_shard_owner(sh)], e->map, &pr);
		assert_int_equal(pr.verdict, KM_PROC_HANDOFF);
		assert_int_equal(pr.owner, km_shard_owner(sh));
		assert_int_equal(
			pr.rt.hash, km_shardmap_hash(e->map, (const uint8_t *)key, strlen(key)));
		assert_int_equal(pr.rt.key_hash, km_key_hash(key, strlen(key)));
		assert_ptr_equal(pr.rt.shard, sh);
	}
	/* Routing uses only the first component: "g/a" and "g/b" share an owner. */
	assert_ptr_equal(shard_of(e->map, "g/a"), shard_of(e->map, "g/bbbbbbbb"));

	for (i = 0; i < 2; i++) {
		struct req r = {.op = i == 0 ? KM_OP_PING : KM_OP_MAP, .req_id = 9};

		/* Answered where it lands, whatever its epoch: never handed over. */
		for (k = 0; k < NB_WORKERS; k++) {
			len = req_build(buf, sizeof(buf), &r, 1234);
			pr = (struct km_proc_req){.buf = buf,
				.len = len,
				.cap = sizeof(buf),
				.src = 1,
				.port_worker = -1};
			km_proc_rx(e->proc[k], e->map, &pr);
			assert_int_equal(pr.verdict, KM_PROC_REPLY);
		}
	}

	/*
	 * MOVED rule on a map of epoch 2 (one shard moved): only a request that carries an
	 * older non-zero epoch AND was sent to another worker's port than the owner's.
	 */
	key_owned(e->map, 0, "mv-", 0, key, sizeof(key));
	sh = shard_of(e->map, key);
	assert_int_equal(km_shardmap_move(e->map, km_shard_id(sh), 1, &m2), 0);
	assert_int_equal(km_shardmap_epoch(m2), km_shardmap_epoch(e->map) + 1);
	for (k = 0; k < sizeof(keyed); k++) {
		uint8_t op = keyed[k];
		uint32_t old = km_shardmap_epoch(e->map), cur = km_shardmap_epoch(m2);

		assert_int_equal(target_of(e, m2, op, key, old, 0), T_MOVED);
		assert_int_equal(target_of(e, m2, op, key, old, 1), 1);
		assert_int_equal(target_of(e, m2, op, key, old, -1), 1);
		assert_int_equal(target_of(e, m2, op, key, 0, 0), 1);
		assert_int_equal(target_of(e, m2, op, key, cur, 0), 1);
		/*
		 * Any other epoch counts as stale, newer ones too: epochs restart at 1 with
		 * the server, so a client's higher epoch may describe a map that is gone.
		 */
		assert_int_equal(target_of(e, m2, op, key, cur + 1, 0), T_MOVED);
		assert_int_equal(target_of(e, m2, op, key, cur + 1, 1), 1);
		/* The old map is still right for the other keys. */
		for (i = 0; i < 20; i++) {
			char other[32];

			key_owned(m2, 0, "stay-", i, other, sizeof(other));
			assert_int_equal(target_of(e, m2, op, other, old, 0), 0);
			assert_int_equal(target_of(e, m2, op, other, old, 1), T_MOVED);
		}
	}
	km_shardmap_free(m2);
}

static void
test_get_put_cas_del(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0 = cnt_sum(e);
	struct rep rep, rep2;
	uint64_t v1, v2, v3, v4;
	char key[32], key2[32];
	struct req r;
	uint8_t out[KM_DGRAM_MAX];
	struct km_proc_req pr;
	struct km_msg alt;
	size_t len, n;

	key_owned(e->map, 1, "basic-", 0, key, sizeof(key));
	key_owned(e->map, 0, "basic-", 0, key2, sizeof(key2));

	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 1, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_NOT_FOUND);
	assert_int_equal(rep.worker, 1);
	assert_int_equal(rep.msg.hdr.version, 0);
	assert_int_equal(rep.msg.hdr.val_len, 0);

	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "one", .val_len = 3, .req_id = 2, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.len, KM_HDR_LEN);
	v1 = rep.msg.hdr.version;
	assert_true(v1 > 0);

	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 3, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, v1);
	assert_int_equal(rep.msg.hdr.val_len, 3);
	assert_memory_equal(rep.msg.val, "one", 3);

	/* The same GET into a separate buffer gives the same bytes as the aliased one. */
	len = req_build(out, sizeof(out), &r, km_shardmap_epoch(e->map));
	assert_int_equal(rx_call(e->proc, e->map, out, len, sizeof(out), 1, 1, &pr), 1);
	assert_int_equal(pr.verdict, KM_PROC_REPLY);
	n = pr.reply_len;
	assert_int_equal(n, rep.len);
	assert_memory_equal(out, rep.buf, n);
	assert_int_equal(km_reply_parse(out, n, &alt), 0);

	/* Unconditional PUT: versions increase. Empty values are values. */
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "", .val_len = 0, .req_id = 4, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	v2 = rep.msg.hdr.version;
	assert_true(v2 > v1);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 5, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.val_len, 0);
	assert_int_equal(rep.msg.hdr.version, v2);

	/* CAS with the current version succeeds; with a stale one it reports the current. */
	r = (struct req){.op = KM_OP_CAS,
		.key = key,
		.val = "two",
		.val_len = 3,
		.version = v2,
		.req_id = 6,
		.src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	v3 = rep.msg.hdr.version;
	assert_true(v3 > v2);
	r.req_id = 7;
	r.val = "xxx";
	assert_int_equal(call(e, &r, &rep), KM_ST_VERSION_MISMATCH);
	assert_int_equal(rep.msg.hdr.version, v3);
	/* CAS version 0 is create-only: refused on a present key, with its version. */
	r = (struct req){.op = KM_OP_CAS,
		.key = key,
		.val = "new",
		.val_len = 3,
		.version = 0,
		.req_id = 8,
		.src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_VERSION_MISMATCH);
	assert_int_equal(rep.msg.hdr.version, v3);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 9, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, v3);
	assert_memory_equal(rep.msg.val, "two", 3);

	/* ... and creates an absent key. CAS on an absent key with a version: mismatch, 0. */
	r = (struct req){.op = KM_OP_CAS,
		.key = key2,
		.val = "c",
		.val_len = 1,
		.version = 0,
		.req_id = 10,
		.src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.worker, 0);
	assert_true(rep.msg.hdr.version > 0);
	r = (struct req){.op = KM_OP_CAS,
		.key = "absent",
		.val = "c",
		.val_len = 1,
		.version = 77,
		.req_id = 11,
		.src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_VERSION_MISMATCH);
	assert_int_equal(rep.msg.hdr.version, 0);

	/* Conditional DEL: wrong version refused with the current one; right one deletes. */
	r = (struct req){.op = KM_OP_DEL, .key = key, .version = v3 + 100, .req_id = 12, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_VERSION_MISMATCH);
	assert_int_equal(rep.msg.hdr.version, v3);
	r = (struct req){.op = KM_OP_DEL, .key = key, .version = v3, .req_id = 13, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, v3);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 14, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_NOT_FOUND);
	r = (struct req){.op = KM_OP_DEL, .key = key, .req_id = 15, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_NOT_FOUND);
	r = (struct req){.op = KM_OP_DEL, .key = key, .version = v3, .req_id = 16, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_NOT_FOUND);

	/* Re-created after a delete: a higher version than any before (no ABA). */
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "3", .val_len = 1, .req_id = 17, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	v4 = rep.msg.hdr.version;
	assert_true(v4 > v3);
	/* Unconditional DEL (version 0). */
	r = (struct req){.op = KM_OP_DEL, .key = key, .req_id = 18, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, v4);

	/* Largest value accepted by this server. */
	{
		static uint8_t big[VALUE_MAX];

		memset(big, 0xab, sizeof(big));
		r = (struct req){.op = KM_OP_PUT,
			.key = key,
			.val = big,
			.val_len = VALUE_MAX,
			.req_id = 19,
			.src = 1};
		assert_int_equal(call(e, &r, &rep), KM_ST_OK);
		r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 20, .src = 1};
		assert_int_equal(call(e, &r, &rep), KM_ST_OK);
		assert_int_equal(rep.msg.hdr.val_len, VALUE_MAX);
		assert_memory_equal(rep.msg.val, big, VALUE_MAX);
		/* A GET whose reply does not fit the caller's buffer is TOO_LARGE. */
		len = req_build(rep2.buf, sizeof(rep2.buf), &r, km_shardmap_epoch(e->map));
		assert_int_equal(rx_call(e->proc, e->map, rep2.buf, len, 512, -1, 1, &pr), 1);
		assert_int_equal(pr.verdict, KM_PROC_REPLY);
		n = pr.reply_len;
		assert_int_equal(n, KM_HDR_LEN);
		assert_int_equal(km_reply_parse(rep2.buf, n, &alt), 0);
		assert_int_equal(alt.hdr.status, KM_ST_TOO_LARGE);
	}

	assert_int_equal(CNT_DELTA(e, c0, req_get), 8);
	assert_int_equal(CNT_DELTA(e, c0, get_hit), 5);
	assert_int_equal(CNT_DELTA(e, c0, get_miss), 2);
	assert_int_equal(CNT_DELTA(e, c0, req_put), 4);
	assert_int_equal(CNT_DELTA(e, c0, req_cas), 5);
	assert_int_equal(CNT_DELTA(e, c0, req_del), 5);
	assert_int_equal(CNT_DELTA(e, c0, cas_mismatch), 4);
	assert_int_equal(CNT_DELTA(e, c0, too_large), 1);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 0);
	assert_int_equal(CNT_DELTA(e, c0, store_error), 0);
}

static void
test_at_most_once(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0 = cnt_sum(e);
	uint64_t va, vb, vc;
	struct rep rep, first;
	char key[32];
	struct req put_a, put_b, cas_a, cas_bad, del_a, r;

	key_owned(e->map, 0, "amo-", 0, key, sizeof(key));

	/* Client A (src 100) PUTs; its retry gets the same reply and applies nothing. */
	put_a = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "A", .val_len = 1, .req_id = 500, .src = 100};
	assert_int_equal(call(e, &put_a, &first), KM_ST_OK);
	va = first.msg.hdr.version;
	assert_int_equal(call(e, &put_a, &rep), KM_ST_OK);
	assert_int_equal(rep.len, first.len);
	assert_memory_equal(rep.buf, first.buf, first.len);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 501, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, va);

	/* Client B writes; A's late retry must not overwrite B's value. */
	put_b = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "B", .val_len = 1, .req_id = 500, .src = 200};
	assert_int_equal(call(e, &put_b, &rep), KM_ST_OK);
	vb = rep.msg.hdr.version;
	assert_true(vb > va);
	assert_int_equal(call(e, &put_a, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, va);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 502, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, vb);
	assert_memory_equal(rep.msg.val, "B", 1);

	/* A retried CAS sees its own success, not a VERSION_MISMATCH against itself. */
	cas_a = (struct req){.op = KM_OP_CAS,
		.key = key,
		.val = "C",
		.val_len = 1,
		.version = vb,
		.req_id = 503,
		.src = 100};
	assert_int_equal(call(e, &cas_a, &rep), KM_ST_OK);
	vc = rep.msg.hdr.version;
	assert_true(vc > vb);
	assert_int_equal(call(e, &cas_a, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, vc);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 504, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, vc);

	/* A refused CAS stays refused on retry, even once its version became current. */
	cas_bad = (struct req){.op = KM_OP_CAS,
		.key = key,
		.val = "D",
		.val_len = 1,
		.version = vc + 1,
		.req_id = 505,
		.src = 100};
	assert_int_equal(call(e, &cas_bad, &rep), KM_ST_VERSION_MISMATCH);
	assert_int_equal(rep.msg.hdr.version, vc);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "E", .val_len = 1, .req_id = 506, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, vc + 1);
	assert_int_equal(call(e, &cas_bad, &rep), KM_ST_VERSION_MISMATCH);
	assert_int_equal(rep.msg.hdr.version, vc);

	/* A retried DEL reports its success, not NOT_FOUND. */
	del_a = (struct req){.op = KM_OP_DEL, .key = key, .req_id = 507, .src = 100};
	assert_int_equal(call(e, &del_a, &first), KM_ST_OK);
	assert_int_equal(call(e, &del_a, &rep), KM_ST_OK);
	assert_memory_equal(rep.buf, first.buf, KM_HDR_LEN);
	/* ... and does not delete a value written since. */
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "F", .val_len = 1, .req_id = 508, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(call(e, &del_a, &rep), KM_ST_OK);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 509, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_memory_equal(rep.msg.val, "F", 1);

	/* Another client reusing A's request id is a different request: executed. */
	r = put_a;
	r.src = 300;
	r.val = "G";
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_true(rep.msg.hdr.version > vc + 1);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 510, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_memory_equal(rep.msg.val, "G", 1);

	/* The same client reusing an id with another key: another request, executed (the
	 * table's outcome belongs to the first key). */
	r = (struct req){.op = KM_OP_PUT,
		.key = "other-key",
		.val = "H",
		.val_len = 1,
		.req_id = 510,
		.src = 100};
	r.req_id = put_a.req_id;
	r.src = put_a.src;
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	r = (struct req){.op = KM_OP_GET, .key = "other-key", .req_id = 511, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_memory_equal(rep.msg.val, "H", 1);

	/* Retried: PUT twice, CAS, refused CAS, DEL twice. */
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 6);
	assert_int_equal(CNT_DELTA(e, c0, req_put), 8);
	assert_int_equal(CNT_DELTA(e, c0, req_cas), 4);
	assert_int_equal(CNT_DELTA(e, c0, req_del), 3);
}

/* [store] max_bytes: over the worker's share, PUT and CAS are answered FULL and change
 * nothing; GETs and DELs go on, and a DEL makes room again. */
static void
test_dram_bound(void **state)
{
	struct env *e = *state;
	struct km_proc_params pp = {
		.worker = 0, .value_max = VALUE_MAX, .store_driver = "mem", .version_base = 1};
	uint64_t base = 0;
	char key[32], val[200];
	struct rep rep;
	struct req r;
	unsigned int i, n;

	/* Worker 0 again, bounded at its empty stores plus 20 KB. */
	km_proc_destroy(e->proc[0]);
	assert_int_equal(km_proc_create(&pp, &e->proc[0]), 0);
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		const struct km_shard *sh = km_shardmap_shard_at(e->map, i);
		struct km_store *s;

		if (km_shard_owner(sh) != 0)
			continue;
		assert_int_equal(km_proc_shard_add(e->proc[0], km_shard_id(sh)), 0);
		s = km_proc_shard_store(e->proc[0], km_shard_id(sh));
		base += s->ops->dram_bytes(s);
	}
	km_proc_destroy(e->proc[0]);
	pp.dram_max = base + 20000;
	assert_int_equal(km_proc_create(&pp, &e->proc[0]), 0);
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		const struct km_shard *sh = km_shardmap_shard_at(e->map, i);

		if (km_shard_owner(sh) == 0)
			assert_int_equal(km_proc_shard_add(e->proc[0], km_shard_id(sh)), 0);
	}
	memset(val, 'v', sizeof(val));
	for (n = 0; n < 1000; n++) {
		key_owned(e->map, 0, "full-", n, key, sizeof(key));
		r = (struct req){.op = KM_OP_PUT,
			.key = key,
			.val = val,
			.val_len = sizeof(val),
			.req_id = 9000 + n,
			.src = 100};
		if (call(e, &r, &rep) != KM_ST_OK)
			break;
	}
	print_message("dram bound: %u values of 200 bytes in 20 KB\n", n);
	assert_true(n > 20 && n < 200);
	assert_int_equal(rep.msg.hdr.status, KM_ST_FULL);
	assert_int_equal(km_proc_counters(e->proc[0])->full, 1);
	/* Not applied: absent. The ones before it read back. */
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 1, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_NOT_FOUND);
	key_owned(e->map, 0, "full-", 0, key, sizeof(key));
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 2, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	/* A DEL makes room; the refused key goes in then. */
	r = (struct req){.op = KM_OP_DEL, .key = key, .req_id = 3, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	key_owned(e->map, 0, "full-", n, key, sizeof(key));
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "x", .val_len = 1, .req_id = 4, .src = 100};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
}

/* MGET request body for keys. */
static uint32_t
mget_body(uint8_t *b, const char *const *keys, unsigned int n)
{
	uint32_t off = 2;
	unsigned int i;

	km_put16(b, (uint16_t)n);
	for (i = 0; i < n; i++) {
		size_t kl = strlen(keys[i]);

		b[off] = (uint8_t)kl;
		memcpy(b + off + 1, keys[i], kl);
		off += (uint32_t)(1 + kl);
	}
	return off;
}

struct mget_entry {
	uint8_t status;
	uint64_t version;
	uint16_t len;
	const uint8_t *val;
};

/* Decode an MGET reply body; checks it is exactly consumed. Returns the count. */
static unsigned int
mget_decode(const struct km_msg *m, struct mget_entry *ent, unsigned int max)
{
	const uint8_t *p = m->val, *end = m->val + m->hdr.val_len;
	unsigned int n, i;

	assert_true(m->hdr.val_len >= 2);
	n = km_get16(p);
	assert_true(n <= max);
	p += 2;
	for (i = 0; i < n; i++) {
		assert_true(p + KM_MGET_REP_ENTRY_HDR <= end);
		ent[i].status = p[0];
		ent[i].version = km_get64(p + 1);
		ent[i].len = km_get16(p + 9);
		ent[i].val = p + KM_MGET_REP_ENTRY_HDR;
		p += KM_MGET_REP_ENTRY_HDR + ent[i].len;
		assert_true(p <= end);
	}
	assert_ptr_equal(p, end);
	return n;
}

/* One SCAN page: its entries appended to keys/vals/vers (n of them so far). */
struct scan_got {
	char key[128][32];
	uint8_t status[128];
	uint16_t vlen[128];
	uint64_t version[128];
	unsigned int n;
};

static uint64_t
scan_page(struct env *e, const char *prefix, uint64_t cursor, uint16_t max, uint16_t flags,
	size_t cap, struct scan_got *g, unsigned int *count)
{
	uint8_t body[KM_SCAN_REQ_LEN];
	const uint8_t *p, *end;
	struct km_scan_ent ent;
	struct rep rep;
	struct req r = {.op = KM_OP_SCAN,
		.key = prefix,
		.val = body,
		.val_len = sizeof(body),
		.version = cursor,
		.req_id = 900 + g->n,
		.src = 1};
	unsigned int i;

	km_put16(body, max);
	km_put16(body + 2, flags);
	assert_int_equal(call_map(e, e->map, &r, &rep, cap), KM_ST_OK);
	assert_int_equal(rep.worker, km_shard_owner(shard_of(e->map, prefix)));
	assert_true(rep.msg.hdr.val_len >= 2 && rep.len <= cap);
	*count = km_get16(rep.msg.val);
	p = rep.msg.val + 2;
	end = rep.msg.val + rep.msg.hdr.val_len;
	for (i = 0; i < *count; i++) {
		assert_int_equal(km_scan_rep_next(&p, end, &ent), 1);
		assert_true(ent.key_len < sizeof(g->key[0]) && g->n < 128);
		memcpy(g->key[g->n], ent.key, ent.key_len);
		g->key[g->n][ent.key_len] = '\0';
		g->status[g->n] = ent.status;
		g->vlen[g->n] = ent.val_len;
		g->version[g->n] = ent.version;
		/* Values are the key repeated up to their length. */
		if (ent.status == KM_ST_OK && !(flags & KM_SCAN_F_KEYS))
			assert_true(ent.val_len == 0 || ent.val[0] == ent.key[0]);
		g->n++;
	}
	assert_ptr_equal(p, end);
	return rep.msg.hdr.version;
}

/* SCAN through the processors: pages, cursors, limits, keys only, values over a page. */
static void
test_scan(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0 = cnt_sum(e);
	static struct scan_got g;
	static uint8_t val[VALUE_MAX];
	uint64_t ver[100], cursor, last;
	unsigned int i, j, count, pages;
	char key[32];
	struct rep rep;
	struct req r;

	/* sp/0..sp/99 (one shard: routed by "sp"), values of 0..99 bytes, sp/7 of VALUE_MAX;
	 * and keys of other entities sharing the bytes: "spx0", "sp0". */
	for (i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "sp/%u", i);
		memset(val, 's', sizeof(val));
		r = (struct req){.op = KM_OP_PUT,
			.key = key,
			.val = val,
			.val_len = i == 7 ? VALUE_MAX : i,
			.req_id = 800 + i,
			.src = 1};
		assert_int_equal(call(e, &r, &rep), KM_ST_OK);
		ver[i] = rep.msg.hdr.version;
		snprintf(key, sizeof(key), i % 2 ? "spx%u" : "sp%u", i);
		r.key = key;
		r.req_id += 1000;
		assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	}

	/* Whole pages: every key once, in scan order, each with its value and version. */
	memset(&g, 0, sizeof(g));
	cursor = 0;
	pages = 0;
	do {
		cursor = scan_page(e, "sp/", cursor, 0, 0, KM_DGRAM_MAX, &g, &count);
		pages++;
		assert_true(pages < 1000);
	} while (cursor != 0);
	assert_int_equal(g.n, 100);
	assert_true(pages >= 2); /* 100 values of 0..99 bytes and one of 1000: over 1472 */
	last = 0;
	for (j = 0; j < g.n; j++) {
		uint64_t o = km_scan_order(km_key_hash(g.key[j], strlen(g.key[j])));

		assert_true(j == 0 || o > last);
		last = o;
		assert_int_equal(sscanf(g.key[j], "sp/%u", &i), 1);
		assert_int_equal(g.status[j], KM_ST_OK);
		assert_int_equal(g.vlen[j], i == 7 ? VALUE_MAX : i);
		assert_int_equal(g.version[j], ver[i]);
	}
	assert_int_equal(CNT_DELTA(e, c0, req_scan), pages);
	assert_int_equal(CNT_DELTA(e, c0, scan_entries), 100);

	/* At most 3 per page, keys only: the same keys, no value. */
	memset(&g, 0, sizeof(g));
	cursor = 0;
	do {
		cursor = scan_page(e, "sp/", cursor, 3, KM_SCAN_F_KEYS, KM_DGRAM_MAX, &g, &count);
		assert_true(count <= 3);
	} while (cursor != 0);
	assert_int_equal(g.n, 100);
	for (j = 0; j < g.n; j++)
		assert_int_equal(g.vlen[j], 0);

	/* A reply of at most 600 bytes: sp/7's value never fits, it comes TOO_LARGE, alone
	 * first of its page; every other key with its value. */
	memset(&g, 0, sizeof(g));
	cursor = 0;
	do
		cursor = scan_page(e, "sp/", cursor, 0, 0, 600, &g, &count);
	while (cursor != 0);
	assert_int_equal(g.n, 100);
	for (j = 0; j < g.n; j++) {
		assert_int_equal(sscanf(g.key[j], "sp/%u", &i), 1);
		assert_int_equal(g.status[j], i == 7 ? KM_ST_TOO_LARGE : KM_ST_OK);
		assert_int_equal(g.vlen[j], i == 7 ? 0 : i);
		assert_int_equal(g.version[j], ver[i]);
	}

	/* A longer prefix: sp/1, sp/10..sp/19. */
	memset(&g, 0, sizeof(g));
	cursor = 0;
	do
		cursor = scan_page(e, "sp/1", cursor, 0, KM_SCAN_F_KEYS, KM_DGRAM_MAX, &g, &count);
	while (cursor != 0);
	assert_int_equal(g.n, 11);

	/* Prefixes that end no routing part: BAD_REQUEST. */
	r = (struct req){.op = KM_OP_SCAN, .key = "sp", .req_id = 990, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_BAD_REQUEST);
	r.key = "s";
	assert_int_equal(call(e, &r, &rep), KM_ST_BAD_REQUEST);

	/* The partition shifter overrides "sp" by one more component: a prefix that stops at
	 * "sp/" is BAD_REQUEST while the override is in force (MIGRATING, SETTLED), BUSY while
	 * it reverts; one that names a sub-part is BUSY while the keys move either way and
	 * executes once SETTLED. */
	{
		struct km_shardmap *mig, *set, *rev;
		uint64_t part = km_key_hash("sp", 2);
		static const char *const deep[] = {"sp/", "sp/3/"};

		assert_int_equal(
			km_shardmap_override_add(e->map, (const uint8_t *)"sp", 2, 1, &mig), 0);
		assert_int_equal(km_shardmap_override_settle(mig, part, &set), 0);
		assert_int_equal(km_shardmap_override_remove(set, part, &rev), 0);
		for (i = 0; i < 2; i++) {
			r.key = deep[i];
			r.req_id = 991 + i;
			assert_int_equal(call_map(e, mig, &r, &rep, KM_DGRAM_MAX),
				i == 0 ? KM_ST_BAD_REQUEST : KM_ST_BUSY);
			assert_int_equal(call_map(e, rev, &r, &rep, KM_DGRAM_MAX), KM_ST_BUSY);
		}
		r.key = "sp/";
		assert_int_equal(call_map(e, set, &r, &rep, KM_DGRAM_MAX), KM_ST_BAD_REQUEST);
		r.key = "sp/3/";
		assert_int_equal(call_map(e, set, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
		km_shardmap_free(mig);
		km_shardmap_free(set);
		km_shardmap_free(rev);
	}
}

static void
test_mget(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0 = cnt_sum(e);
	static uint8_t big[VALUE_MAX];
	char k[6][32];
	const char *keys[6];
	uint64_t ver[6];
	uint8_t body[256];
	struct mget_entry ent[KM_MGET_MAX];
	struct rep rep;
	struct req r;
	unsigned int i;

	/* k0, k1: worker 0 present; k2: worker 0 absent; k3: worker 1 present. */
	key_owned(e->map, 0, "mg-", 0, k[0], sizeof(k[0]));
	key_owned(e->map, 0, "mg-", 1, k[1], sizeof(k[1]));
	key_owned(e->map, 0, "mg-", 2, k[2], sizeof(k[2]));
	key_owned(e->map, 1, "mg-", 0, k[3], sizeof(k[3]));
	for (i = 0; i < 4; i++) {
		keys[i] = k[i];
		if (i == 2)
			continue;
		r = (struct req){.op = KM_OP_PUT,
			.key = k[i],
			.val = k[i],
			.val_len = (uint32_t)strlen(k[i]),
			.req_id = 600 + i,
			.src = 1};
		assert_int_equal(call(e, &r, &rep), KM_ST_OK);
		ver[i] = rep.msg.hdr.version;
	}

	r = (struct req){.op = KM_OP_MGET,
		.val = body,
		.val_len = mget_body(body, keys, 4),
		.req_id = 610,
		.src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.worker, 0); /* owner of the first key */
	assert_int_equal(mget_decode(&rep.msg, ent, KM_MGET_MAX), 4);
	for (i = 0; i < 2; i++) {
		assert_int_equal(ent[i].status, KM_ST_OK);
		assert_int_equal(ent[i].version, ver[i]);
		assert_int_equal(ent[i].len, strlen(k[i]));
		assert_memory_equal(ent[i].val, k[i], ent[i].len);
	}
	assert_int_equal(ent[2].status, KM_ST_NOT_FOUND);
	assert_int_equal(ent[2].len, 0);
	assert_int_equal(ent[3].status, KM_ST_MOVED); /* worker 1's key, asked of worker 0 */
	assert_int_equal(ent[3].len, 0);
	assert_int_equal(CNT_DELTA(e, c0, req_mget), 1);
	assert_int_equal(CNT_DELTA(e, c0, get_hit), 2);
	assert_int_equal(CNT_DELTA(e, c0, get_miss), 1);

	/* Same key twice is answered twice. */
	keys[1] = k[0];
	r = (struct req){.op = KM_OP_MGET,
		.val = body,
		.val_len = mget_body(body, keys, 2),
		.req_id = 611,
		.src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(mget_decode(&rep.msg, ent, KM_MGET_MAX), 2);
	assert_int_equal(ent[1].version, ver[0]);

	/*
	 * Three 1000-byte values and a small one: the first big one fills most of the reply,
	 * the next two are marked TOO_LARGE (with their version, no value), the small one
	 * after them still fits.
	 */
	memset(big, 'b', sizeof(big));
	for (i = 0; i < 4; i++) {
		key_owned(e->map, 0, "mgbig-", i, k[i], sizeof(k[i]));
		keys[i] = k[i];
		r = (struct req){.op = KM_OP_PUT,
			.key = k[i],
			.val = big,
			.val_len = i < 3 ? VALUE_MAX : 10,
			.req_id = 620 + i,
			.src = 1};
		assert_int_equal(call(e, &r, &rep), KM_ST_OK);
		ver[i] = rep.msg.hdr.version;
	}
	r = (struct req){.op = KM_OP_MGET,
		.val = body,
		.val_len = mget_body(body, keys, 4),
		.req_id = 630,
		.src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_true(rep.len <= KM_DGRAM_MAX);
	assert_int_equal(mget_decode(&rep.msg, ent, KM_MGET_MAX), 4);
	assert_int_equal(ent[0].status, KM_ST_OK);
	assert_int_equal(ent[0].len, VALUE_MAX);
	assert_memory_equal(ent[0].val, big, VALUE_MAX);
	for (i = 1; i < 3; i++) {
		assert_int_equal(ent[i].status, KM_ST_TOO_LARGE);
		assert_int_equal(ent[i].version, ver[i]);
		assert_int_equal(ent[i].len, 0);
	}
	assert_int_equal(ent[3].status, KM_ST_OK);
	assert_int_equal(ent[3].len, 10);
	assert_int_equal(rep.len, KM_HDR_LEN + 2 + 4 * KM_MGET_REP_ENTRY_HDR + VALUE_MAX + 10);

	/* The most keys an MGET may name, all found: the reply outgrows the request. */
	{
		char many[KM_MGET_MAX][16];
		const char *mk[KM_MGET_MAX];
		uint8_t mbody[2 + KM_MGET_MAX * 16];

		for (i = 0; i < KM_MGET_MAX; i++) {
			key_owned(e->map, 1, "many-", i, many[i], sizeof(many[i]));
			mk[i] = many[i];
			r = (struct req){.op = KM_OP_PUT,
				.key = many[i],
				.val = big,
				.val_len = 8,
				.req_id = 700 + i,
				.src = 1};
			assert_int_equal(call(e, &r, &rep), KM_ST_OK);
		}
		r = (struct req){.op = KM_OP_MGET,
			.val = mbody,
			.val_len = mget_body(mbody, mk, KM_MGET_MAX),
			.req_id = 800,
			.src = 1};
		assert_int_equal(call(e, &r, &rep), KM_ST_OK);
		assert_int_equal(rep.worker, 1);
		assert_int_equal(mget_decode(&rep.msg, ent, KM_MGET_MAX), KM_MGET_MAX);
		for (i = 0; i < KM_MGET_MAX; i++) {
			assert_int_equal(ent[i].status, KM_ST_OK);
			assert_int_equal(ent[i].len, 8);
		}
	}
}

/* Fetch the whole map through MAP requests in chunks of at most cap bytes; rebuild it. */
static void
map_fetch_check(struct env *e, const struct km_shardmap *m, size_t cap)
{
	uint64_t *ids = calloc(km_shardmap_nb_shards(m), sizeof(*ids));
	uint16_t *owners = calloc(km_shardmap_nb_shards(m), sizeof(*owners));
	struct km_shardmap *copy;
	struct km_map_chunk c;
	uint32_t cursor = 0, chunks = 0, i;
	struct rep rep;
	uint64_t seed = SEED;

	assert_non_null(ids);
	assert_non_null(owners);
	while (cursor < km_shardmap_nb_shards(m)) {
		struct req r = {.op = KM_OP_MAP, .version = cursor, .req_id = 900 + chunks};

		assert_int_equal(call_map(e, m, &r, &rep, cap), KM_ST_OK);
		assert_int_equal(rep.msg.hdr.version, cursor);
		assert_int_equal(km_shardmap_decode_chunk(rep.msg.val, rep.msg.hdr.val_len, &c), 0);
		assert_int_equal(rep.msg.hdr.val_len, KM_MAP_HDR_LEN + c.count * KM_MAP_ENTRY_LEN);
		assert_int_equal(c.epoch, km_shardmap_epoch(m));
		assert_int_equal(c.nb_workers, km_shardmap_nb_workers(m));
		assert_int_equal(c.udp_port_base, PORT_BASE);
		assert_int_equal(c.route_sep, '/');
		assert_int_equal(c.route_depth, 1);
		assert_int_equal(c.nb_shards, km_shardmap_nb_shards(m));
		assert_int_equal(c.first, cursor);
		assert_true(c.count >= 1);
		for (i = 0; i < c.count; i++) {
			const uint8_t *en = c.entries + i * KM_MAP_ENTRY_LEN;
			const struct km_shard *s = km_shardmap_shard_at(m, cursor + i);

			ids[cursor + i] = km_get32(en);
			owners[cursor + i] = km_get16(en + 4);
			assert_int_equal(ids[cursor + i], km_shard_id(s));
			assert_int_equal(owners[cursor + i], km_shard_owner(s));
			assert_int_equal(km_get16(en + 6) & 1, km_shard_moved(s));
		}
		cursor += c.count;
		chunks++;
	}
	assert_int_equal(
		chunks, (km_shardmap_nb_shards(m) +
				(cap - KM_HDR_LEN - KM_MAP_HDR_LEN) / KM_MAP_ENTRY_LEN - 1) /
				((cap - KM_HDR_LEN - KM_MAP_HDR_LEN) / KM_MAP_ENTRY_LEN));
	assert_int_equal(km_shardmap_from_list(c.epoch, c.nb_workers, c.udp_port_base, c.route_sep,
				 c.route_depth, ids, owners, c.nb_shards, &copy),
		0);
	assert_int_equal(km_shardmap_epoch(copy), km_shardmap_epoch(m));
	assert_int_equal(km_shardmap_nb_shards(copy), km_shardmap_nb_shards(m));
	/* The rebuilt map routes every hash like the original. */
	for (i = 0; i < 10000; i++) {
		uint64_t h = rnd_next(&seed);

		assert_int_equal(km_shard_id(km_shardmap_lookup(copy, h)),
			km_shard_id(km_shardmap_lookup(m, h)));
		assert_int_equal(km_shard_owner(km_shardmap_lookup(copy, h)),
			km_shard_owner(km_shardmap_lookup(m, h)));
	}
	km_shardmap_free(copy);
	free(ids);
	free(owners);
}

static void
test_map(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0 = cnt_sum(e);
	struct km_shardmap_params mp = {
		.nb_shards = 512,
		.nb_workers = NB_WORKERS,
		.udp_port_base = PORT_BASE,
		.route_sep = '/',
		.route_depth = 1,
	};
	struct km_shardmap *big, *moved, *split;
	uint64_t cursors[] = {NB_SHARDS, NB_SHARDS + 1, UINT32_MAX, (uint64_t)1 << 32, UINT64_MAX};
	struct rep rep;
	unsigned int i;

	/* The 8-shard map in one datagram, and in chunks of 3, 3, 2 entries. */
	map_fetch_check(e, e->map, KM_DGRAM_MAX);
	map_fetch_check(e, e->map, KM_HDR_LEN + KM_MAP_HDR_LEN + 3 * KM_MAP_ENTRY_LEN);
	/* 512 shards need three full-size datagrams. */
	assert_int_equal(km_shardmap_create(&mp, &big), 0);
	map_fetch_check(e, big, KM_DGRAM_MAX);
	/* Moved shards keep their explicit owner and flag; split shards their new ids. */
	assert_int_equal(
		km_shardmap_move(e->map, km_shard_id(km_shardmap_shard_at(e->map, 3)),
			(uint16_t)(1 - km_shard_owner(km_shardmap_shard_at(e->map, 3))), &moved),
		0);
	assert_int_equal(
		km_shardmap_split(moved, km_shard_id(km_shardmap_shard_at(moved, 5)), &split), 0);
	map_fetch_check(e, split, KM_HDR_LEN + KM_MAP_HDR_LEN + 2 * KM_MAP_ENTRY_LEN);

	/* A cursor at or past the end is refused. */
	for (i = 0; i < sizeof(cursors) / sizeof(cursors[0]); i++) {
		struct req r = {.op = KM_OP_MAP, .version = cursors[i], .req_id = 950 + i};

		assert_int_equal(call(e, &r, &rep), KM_ST_BAD_REQUEST);
		assert_int_equal(rep.len, KM_HDR_LEN);
	}
	assert_int_equal(CNT_DELTA(e, c0, bad_request), sizeof(cursors) / sizeof(cursors[0]));
	assert_true(CNT_DELTA(e, c0, req_map) >= 9);
	km_shardmap_free(split);
	km_shardmap_free(moved);
	km_shardmap_free(big);
}

static void
test_ping_status_counters(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0 = cnt_sum(e);
	uint8_t buf[KM_DGRAM_MAX];
	struct km_msg rep;
	struct req r = {.op = KM_OP_PING, .req_id = 77};
	uint64_t ping0[NB_WORKERS];
	struct km_proc_req pr;
	struct km_shardmap *m2;
	unsigned int w;
	char key[32], big[VALUE_MAX + 1];
	size_t len, n;

	for (w = 0; w < NB_WORKERS; w++)
		ping0[w] = km_proc_counters(e->proc[w])->req_ping;
	/* PING is answered by whichever worker gets it, and says which one it was. */
	for (w = 0; w < NB_WORKERS; w++) {
		len = req_build(buf, sizeof(buf), &r, 0);
		assert_int_equal(
			rx_call(e->proc, e->map, buf, len, sizeof(buf), (int)w, 5, &pr), w);
		assert_int_equal(pr.verdict, KM_PROC_REPLY);
		n = pr.reply_len;
		assert_int_equal(n, KM_HDR_LEN);
		assert_int_equal(km_reply_parse(buf, n, &rep), 0);
		assert_int_equal(rep.hdr.status, KM_ST_OK);
		assert_int_equal(rep.hdr.version, w);
		assert_int_equal(rep.hdr.req_id, 77);
		assert_int_equal(km_proc_counters(e->proc[w])->req_ping, ping0[w] + 1);
	}
	assert_int_equal(CNT_DELTA(e, c0, req_ping), NB_WORKERS);

	/*
	 * Requests answered before any execution: a parse error (an op this server does not
	 * know, a value over value_max) or MOVED is answered with a bare status reply and
	 * counted; a datagram that is not a request is dropped, uncounted.
	 */
	r = (struct req){.op = 12, .req_id = 78};
	len = req_build(buf, sizeof(buf), &r, 0);
	rx_call(e->proc, e->map, buf, len, sizeof(buf), 0, 5, &pr);
	assert_int_equal(pr.verdict, KM_PROC_REPLY);
	n = pr.reply_len;
	assert_int_equal(n, KM_HDR_LEN);
	assert_int_equal(km_reply_parse(buf, n, &rep), 0);
	assert_int_equal(rep.hdr.op, 12);
	assert_int_equal(rep.hdr.status, KM_ST_BAD_REQUEST);
	assert_int_equal(rep.hdr.req_id, 78);
	assert_int_equal(rep.hdr.epoch, km_shardmap_epoch(e->map));
	assert_int_equal(rep.hdr.val_len, 0);
	/* MOVED twice: an old epoch sent to a worker that is not the owner any more. */
	key_owned(e->map, 0, "st-", 0, key, sizeof(key));
	assert_int_equal(km_shardmap_move(e->map, km_shard_id(shard_of(e->map, key)), 1, &m2), 0);
	for (w = 0; w < 2; w++)
		assert_int_equal(
			target_of(e, m2, KM_OP_GET, key, km_shardmap_epoch(e->map), 0), T_MOVED);
	km_shardmap_free(m2);
	memset(big, 'b', sizeof(big));
	r = (struct req){.op = KM_OP_PUT, .key = key, .val = big, .val_len = VALUE_MAX + 1};
	len = req_build(buf, sizeof(buf), &r, 0);
	rx_call(e->proc, e->map, buf, len, sizeof(buf), 0, 5, &pr);
	assert_int_equal(pr.verdict, KM_PROC_REPLY);
	assert_int_equal(km_reply_parse(buf, pr.reply_len, &rep), 0);
	assert_int_equal(rep.hdr.status, KM_ST_TOO_LARGE);
	buf[0] ^= 0xff; /* bad magic */
	rx_call(e->proc, e->map, buf, len, sizeof(buf), 0, 5, &pr);
	assert_int_equal(pr.verdict, KM_PROC_DROP);
	assert_int_equal(CNT_DELTA(e, c0, bad_request), 1);
	assert_int_equal(CNT_DELTA(e, c0, moved), 2);
	assert_int_equal(CNT_DELTA(e, c0, too_large), 1);
	assert_int_equal(CNT_DELTA(e, c0, get_miss), 0);
}

/*
 * A worker asked for a shard it should own by the map but has no store for (the map
 * changed before the shard's store moved): BUSY, the client retries.
 */
static void
test_busy_after_move(void **state)
{
	struct env *e = *state;
	struct km_shardmap *m2;
	const struct km_shard *sh;
	struct mget_entry ent[2];
	uint8_t body[64];
	const char *keys[1];
	struct rep rep;
	char key[32];
	struct req r;

	key_owned(e->map, 0, "busy-", 0, key, sizeof(key));
	sh = shard_of(e->map, key);
	assert_int_equal(km_shardmap_move(e->map, km_shard_id(sh), 1, &m2), 0);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 1000, .src = 1};
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_BUSY);
	assert_int_equal(rep.worker, 1);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "x", .val_len = 1, .req_id = 1001, .src = 1};
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_BUSY);
	/* BUSY is not recorded as an outcome: the retry is executed once the store exists. */
	assert_int_equal(km_proc_shard_add(e->proc[1], km_shard_id(sh)), 0);
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	/* The old owner, running on the new map, no longer answers for the key. */
	keys[0] = key;
	r = (struct req){.op = KM_OP_MGET,
		.val = body,
		.val_len = mget_body(body, keys, 1),
		.req_id = 1002,
		.src = 1};
	{
		/* An MGET led by a key worker 0 still owns, sent to worker 0: the moved
		 * key's entry is MOVED (the client re-routes it). */
		uint8_t buf[KM_DGRAM_MAX];
		const char *two[2];
		char stay[32];
		struct km_proc_req pr;
		struct km_msg rp;
		size_t len;

		key_owned(m2, 0, "stay-", 0, stay, sizeof(stay));
		two[0] = stay;
		two[1] = key;
		r.val_len = mget_body(body, two, 2);
		len = req_build(buf, sizeof(buf), &r, km_shardmap_epoch(m2));
		assert_int_equal(rx_call(e->proc, m2, buf, len, sizeof(buf), 0, 1, &pr), 0);
		assert_int_equal(pr.verdict, KM_PROC_REPLY);
		assert_int_equal(km_reply_parse(buf, pr.reply_len, &rp), 0);
		assert_int_equal(mget_decode(&rp, ent, 2), 2);
		assert_int_equal(ent[0].status, KM_ST_NOT_FOUND);
		assert_int_equal(ent[1].status, KM_ST_MOVED);
	}
	km_shardmap_free(m2);
}

/* Reference model of one key. */
struct model_key {
	char name[24];
	int present;
	uint64_t version;
	uint32_t len;
	uint8_t val[VALUE_MAX];
};

static void
model_value(uint64_t *seed, uint8_t *v, uint32_t *len)
{
	uint64_t r = rnd_next(seed);
	uint32_t i;

	/* Mostly small values, some large enough that MGET replies overflow. */
	*len = (uint32_t)(r % 8 == 0 ? (r >> 8) % (VALUE_MAX + 1) : (r >> 8) % 48);
	for (i = 0; i < *len; i++)
		v[i] = (uint8_t)rnd_next(seed);
}

static void
test_model(void **state)
{
	struct env *e = *state;
	struct model_key *mk = calloc(MODEL_KEYS, sizeof(*mk));
	uint64_t shard_max[NB_SHARDS] = {0};
	uint64_t req_ids[4] = {0};
	uint64_t seed = SEED;
	struct km_proc_counters c0 = cnt_sum(e);
	uint64_t gets = 0, hits = 0, misses = 0, retries = 0, mgets = 0;
	static uint8_t val[VALUE_MAX];
	struct rep rep, first;
	struct km_store_stats st, st1;
	unsigned int i, nb_present = 0;

	assert_non_null(mk);
	/* Half the keys route by a shared first component, so routing != key hash for them. */
	for (i = 0; i < MODEL_KEYS; i++) {
		if (i % 2)
			snprintf(mk[i].name, sizeof(mk[i].name), "m-%u", i);
		else
			snprintf(mk[i].name, sizeof(mk[i].name), "grp%u/k%u", i % 37, i);
	}

	for (i = 0; i < MODEL_OPS; i++) {
		uint64_t r = rnd_next(&seed);
		unsigned int client = (unsigned int)(r % 4);
		struct model_key *k = &mk[(r >> 8) % MODEL_KEYS];
		unsigned int kind = (unsigned int)((r >> 24) % 100);
		struct req q = {.key = k->name,
			.src = 0x0a000001ULL << 16 | (1000 + client),
			.req_id = ++req_ids[client]};
		const struct km_shard *sh = shard_of(e->map, k->name);
		uint8_t st_got;
		int is_write = 1;

		if (kind < 30) {
			q.op = KM_OP_GET;
			is_write = 0;
		} else if (kind < 55) {
			q.op = KM_OP_PUT;
			model_value(&seed, val, &q.val_len);
			q.val = val;
		} else if (kind < 70) {
			uint64_t c = rnd_next(&seed) % 3;

			q.op = KM_OP_CAS;
			model_value(&seed, val, &q.val_len);
			q.val = val;
			/* Right version, create-only, or a version that is not current. */
			q.version = c == 0 ? k->version : c == 1 ? 0 : k->version + 1 + c;
		} else if (kind < 82) {
			uint64_t c = rnd_next(&seed) % 3;

			q.op = KM_OP_DEL;
			q.version = c == 0 ? k->version : c == 1 ? 0 : k->version + 7;
		} else if (kind < 97) {
			q.op = KM_OP_MGET;
			is_write = 0;
		} else {
			q.op = rnd_next(&seed) % 2 ? KM_OP_PING : KM_OP_MAP;
			q.key = NULL;
			is_write = 0;
		}

		if (q.op == KM_OP_MGET) {
			/* 1..8 random keys; expected entries follow the documented fill rule. */
			uint8_t body[2 + 8 * 24];
			const char *keys[8];
			struct model_key *ks[8];
			struct mget_entry ent[8];
			unsigned int n = 1 + (unsigned int)(rnd_next(&seed) % 8), j;
			size_t fill = KM_HDR_LEN + 2;
			int owner;

			for (j = 0; j < n; j++) {
				ks[j] = j == 0 ? k : &mk[rnd_next(&seed) % MODEL_KEYS];
				keys[j] = ks[j]->name;
			}
			q.key = NULL;
			q.val = body;
			q.val_len = mget_body(body, keys, n);
			owner = km_shard_owner(shard_of(e->map, keys[0]));
			assert_int_equal(call(e, &q, &rep), KM_ST_OK);
			assert_int_equal(rep.worker, owner);
			assert_int_equal(mget_decode(&rep.msg, ent, 8), n);
			mgets++;
			for (j = 0; j < n; j++) {
				const struct model_key *x = ks[j];
				uint8_t want;

				if (km_shard_owner(shard_of(e->map, x->name)) != owner)
					want = KM_ST_MOVED;
				else if (!x->present)
					want = KM_ST_NOT_FOUND;
				else if (fill + KM_MGET_REP_ENTRY_HDR + x->len > KM_DGRAM_MAX)
					want = KM_ST_TOO_LARGE;
				else
					want = KM_ST_OK;
				assert_int_equal(ent[j].status, want);
				/* TOO_LARGE entries are neither: the client GETs them. */
				if (want == KM_ST_NOT_FOUND)
					misses++;
				else if (want == KM_ST_OK)
					hits++;
				if (want == KM_ST_OK || want == KM_ST_TOO_LARGE)
					assert_int_equal(ent[j].version, x->version);
				if (want == KM_ST_OK) {
					assert_int_equal(ent[j].len, x->len);
					assert_memory_equal(ent[j].val, x->val, x->len);
					fill += x->len;
				} else {
					assert_int_equal(ent[j].len, 0);
				}
				fill += KM_MGET_REP_ENTRY_HDR;
			}
			continue;
		}

		st_got = call(e, &q, &rep);
		if (q.op == KM_OP_PING || q.op == KM_OP_MAP) {
			assert_int_equal(st_got, KM_ST_OK);
			continue;
		}
		assert_int_equal(rep.worker, km_shard_owner(sh));
		switch (q.op) {
		case KM_OP_GET:
			gets++;
			if (!k->present) {
				misses++;
				assert_int_equal(st_got, KM_ST_NOT_FOUND);
				break;
			}
			hits++;
			assert_int_equal(st_got, KM_ST_OK);
			assert_int_equal(rep.msg.hdr.version, k->version);
			assert_int_equal(rep.msg.hdr.val_len, k->len);
			assert_memory_equal(rep.msg.val, k->val, k->len);
			break;
		case KM_OP_PUT:
		case KM_OP_CAS:
			if (q.op == KM_OP_CAS &&
				(q.version == 0 ? k->present
						: !k->present || q.version != k->version)) {
				assert_int_equal(st_got, KM_ST_VERSION_MISMATCH);
				assert_int_equal(rep.msg.hdr.version, k->present ? k->version : 0);
				break;
			}
			assert_int_equal(st_got, KM_ST_OK);
			/* Versions grow across every write of the shard's store. */
			assert_true(rep.msg.hdr.version > shard_max[km_shard_index(sh)]);
			shard_max[km_shard_index(sh)] = rep.msg.hdr.version;
			k->present = 1;
			k->version = rep.msg.hdr.version;
			k->len = q.val_len;
			memcpy(k->val, q.val, q.val_len);
			break;
		case KM_OP_DEL:
			if (!k->present) {
				assert_int_equal(st_got, KM_ST_NOT_FOUND);
			} else if (q.version != 0 && q.version != k->version) {
				assert_int_equal(st_got, KM_ST_VERSION_MISMATCH);
				assert_int_equal(rep.msg.hdr.version, k->version);
			} else {
				assert_int_equal(st_got, KM_ST_OK);
				assert_int_equal(rep.msg.hdr.version, k->version);
				k->present = 0;
			}
			break;
		default:
			fail();
		}
		/* Some writes are retried at once (lost reply): same bytes back, no effect. */
		if (is_write && rnd_next(&seed) % 10 == 0) {
			first = rep;
			assert_int_equal(call(e, &q, &rep), first.msg.hdr.status);
			assert_int_equal(rep.len, first.len);
			assert_memory_equal(rep.buf, first.buf, first.len);
			retries++;
		}
	}

	/* Final state: every key as the model says, and the stores hold nothing else. */
	for (i = 0; i < MODEL_KEYS; i++) {
		struct req q = {.op = KM_OP_GET, .key = mk[i].name, .req_id = 1, .src = 9};

		if (!mk[i].present) {
			assert_int_equal(call(e, &q, &rep), KM_ST_NOT_FOUND);
			continue;
		}
		nb_present++;
		assert_int_equal(call(e, &q, &rep), KM_ST_OK);
		assert_int_equal(rep.msg.hdr.version, mk[i].version);
		assert_int_equal(rep.msg.hdr.val_len, mk[i].len);
		assert_memory_equal(rep.msg.val, mk[i].val, mk[i].len);
	}
	gets += MODEL_KEYS;
	hits += nb_present;
	misses += MODEL_KEYS - nb_present;
	print_message("model: %u ops, %u keys present, %" PRIu64 " write retries\n", MODEL_OPS,
		nb_present, retries);

	assert_int_equal(CNT_DELTA(e, c0, req_get), gets);
	assert_int_equal(CNT_DELTA(e, c0, req_mget), mgets);
	assert_int_equal(CNT_DELTA(e, c0, get_hit), hits);
	assert_int_equal(CNT_DELTA(e, c0, get_miss), misses);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), retries);
	assert_int_equal(CNT_DELTA(e, c0, store_error), 0);
	assert_true(retries > 100);

	km_proc_store_stats(e->proc[0], &st);
	km_proc_store_stats(e->proc[1], &st1);
	assert_int_equal(st.keys + st1.keys, nb_present);
	free(mk);
}

/*
 * Bursts (km_proc_rx_burst, as keymapd's worker runs it) against one request at a time
 * (km_proc_rx), differential (ISA-L style): two sets
 * of processors over the same maps get the same random request sequence, one request at
 * a time or in bursts of 1..64, and must give byte-identical replies, counters and store
 * contents. The sequence mixes every op, hits and misses, retried writes (in and across
 * bursts), small reply buffers (TOO_LARGE), and bursts run on a map that moved a shard to a
 * worker without its store (BUSY, MGET MOVED).
 */
#define BURST_KEYS 300
#define BURST_OPS  40000
#define BURST_MAX  64
#define BURST_SEED 0x6275727374ULL /* "burst" */

struct burst_req {
	uint8_t req[KM_DGRAM_MAX]; /* the datagram as sent */
	size_t len;
	size_t cap;                   /* reply buffer the worker offers, >= len */
	uint64_t src;                 /* client address */
	int port;                     /* worker the client addressed (PING, MAP go there) */
	uint8_t one[KM_DGRAM_MAX];    /* reply from the one-at-a-time path */
	uint8_t staged[KM_DGRAM_MAX]; /* reply from the staged path */
	size_t one_len;
	size_t staged_len;
};

static void
burst_gen(uint64_t *seed, char (*keys)[24], struct burst_req *q, struct burst_req *last_write,
	uint64_t *req_ids, uint32_t epoch)
{
	uint64_t r = rnd_next(seed);
	unsigned int kind = (unsigned int)(r % 100), client = (unsigned int)((r >> 8) % 4);
	static uint8_t val[VALUE_MAX], body[2 + 8 * 25];
	struct req rq = {.key = keys[(r >> 16) % BURST_KEYS]};
	const char *mk[8];
	unsigned int n, j;

	/* A lost reply: the client resends the very same datagram. */
	if (kind < 6 && last_write->len != 0) {
		memcpy(q->req, last_write->req, last_write->len);
		q->len = last_write->len;
		q->src = last_write->src;
		q->port = last_write->port;
		goto cap;
	}
	rq.src = 0x0a000001ULL << 16 | (2000 + client);
	rq.req_id = ++req_ids[client];
	if (kind < 40) {
		rq.op = KM_OP_GET;
	} else if (kind < 60) {
		rq.op = KM_OP_PUT;
		model_value(seed, val, &rq.val_len);
		rq.val = val;
	} else if (kind < 72) {
		rq.op = KM_OP_CAS;
		model_value(seed, val, &rq.val_len);
		rq.val = val;
		/* Versions are small per store: guesses hit now and then, 0 = create only. */
		rq.version = rnd_next(seed) % 40;
	} else if (kind < 84) {
		rq.op = KM_OP_DEL;
		rq.version = rnd_next(seed) % 3 == 0 ? rnd_next(seed) % 40 : 0;
	} else if (kind < 96) {
		rq.op = KM_OP_MGET;
		n = 1 + (unsigned int)(rnd_next(seed) % 8);
		for (j = 0; j < n; j++)
			mk[j] = keys[rnd_next(seed) % BURST_KEYS];
		rq.key = NULL;
		rq.val = body;
		rq.val_len = mget_body(body, mk, n);
	} else {
		rq.op = rnd_next(seed) % 2 ? KM_OP_PING : KM_OP_MAP;
		rq.key = NULL;
	}
	q->len = req_build(q->req, sizeof(q->req), &rq, epoch);
	q->src = rq.src;
	q->port = (int)(rnd_next(seed) % NB_WORKERS);
	if (rq.op == KM_OP_PUT || rq.op == KM_OP_CAS || rq.op == KM_OP_DEL)
		*last_write = *q;
cap:
	/* Now and then a reply buffer that a GET value or an MGET reply overflows. */
	q->cap = rnd_next(seed) % 8 == 0 ? 64 + rnd_next(seed) % 64 : KM_DGRAM_MAX;
	if (q->cap < q->len)
		q->cap = q->len;
}

/* Worker that executes q under map m: the owner of its (first) key, computed here from
 * the shard map's own functions; q->port for keyless ops. */
static unsigned int
burst_owner(const struct km_shardmap *m, const struct burst_req *q)
{
	uint8_t buf[KM_DGRAM_MAX];
	struct km_mget_iter it;
	const uint8_t *key;
	struct km_msg msg;
	uint8_t klen;

	memcpy(buf, q->req, q->len);
	assert_int_equal(km_req_parse(buf, q->len, VALUE_MAX, &msg), KM_ST_OK);
	switch (msg.hdr.op) {
	case KM_OP_MGET:
		if (km_mget_req_begin(&it, msg.val, msg.hdr.val_len) < 0 ||
			km_mget_req_next(&it, &key, &klen) == 0)
			return (unsigned int)q->port;
		break;
	case KM_OP_GET:
	case KM_OP_PUT:
	case KM_OP_CAS:
	case KM_OP_DEL:
		key = msg.key;
		klen = (uint8_t)msg.hdr.key_len;
		break;
	default:
		return (unsigned int)q->port;
	}
	return km_shard_owner(km_shardmap_lookup(m, km_shardmap_hash(m, key, klen)));
}

/* q as the worker w receives it, its reply to be written at buf. */
static struct km_proc_req
burst_rx_req(const struct burst_req *q, uint8_t *buf, unsigned int w)
{
	memcpy(buf, q->req, q->len);
	return (struct km_proc_req){
		.buf = buf, .len = q->len, .cap = q->cap, .src = q->src, .port_worker = (int16_t)w};
}

static void
test_burst_differential(void **state)
{
	struct env *e = *state;
	struct km_proc *staged[NB_WORKERS];
	struct km_proc_req *rq[NB_WORKERS];
	unsigned int nr[NB_WORKERS], rq_of[BURST_MAX];
	struct burst_req *q = calloc(BURST_MAX, sizeof(*q)), *last_write;
	char(*keys)[24] = calloc(BURST_KEYS, sizeof(*keys));
	struct km_store_stats st1, st2;
	struct km_shardmap *moved;
	const struct km_shard *sh;
	uint64_t seed = BURST_SEED, req_ids[4] = {0}, nb_st[KM_ST__MAX] = {0};
	uint64_t nb_ops = 0, nb_bursts = 0;
	unsigned int i, w, n;
	char key[32];

	assert_non_null(q);
	assert_non_null(keys);
	last_write = calloc(1, sizeof(*last_write));
	assert_non_null(last_write);
	for (w = 0; w < NB_WORKERS; w++) {
		assert_int_equal(proc_new((uint16_t)w, &staged[w]), 0);
		rq[w] = calloc(BURST_MAX, sizeof(*rq[w]));
		assert_non_null(rq[w]);
	}
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		sh = km_shardmap_shard_at(e->map, i);
		assert_int_equal(km_proc_shard_add(staged[km_shard_owner(sh)], km_shard_id(sh)), 0);
	}
	/* Half the keys route by a shared first component (routing hash != key hash). */
	for (i = 0; i < BURST_KEYS; i++)
		snprintf(keys[i], sizeof(keys[i]), i % 2 ? "burst-key-%u" : "g%u/bk%u", i % 23, i);
	/* A shard of worker 0 moved to worker 1, which has no store for it yet. */
	key_owned(e->map, 0, "mv-", 0, key, sizeof(key));
	assert_int_equal(
		km_shardmap_move(e->map, km_shard_id(shard_of(e->map, key)), 1, &moved), 0);

	/* Empty bursts are allowed. */
	km_proc_rx_burst(staged[0], e->map, rq[0], 0);

	while (nb_ops < BURST_OPS) {
		const struct km_shardmap *m = rnd_next(&seed) % 8 == 0 ? moved : e->map;

		n = 1 + (unsigned int)(rnd_next(&seed) % BURST_MAX);
		for (i = 0; i < n; i++)
			burst_gen(&seed, keys, &q[i], last_write, req_ids, km_shardmap_epoch(m));

		/* One at a time, in order. */
		for (i = 0; i < n; i++) {
			struct km_proc_req one;

			w = burst_owner(m, &q[i]);
			one = burst_rx_req(&q[i], q[i].one, w);
			km_proc_rx(e->proc[w], m, &one);
			assert_int_equal(one.verdict, KM_PROC_REPLY);
			q[i].one_len = one.reply_len;
		}
		/* In bursts: each worker's share of the burst in one call. */
		memset(nr, 0, sizeof(nr));
		for (i = 0; i < n; i++) {
			w = burst_owner(m, &q[i]);
			rq[w][nr[w]] = burst_rx_req(&q[i], q[i].staged, w);
			rq_of[i] = w * BURST_MAX + nr[w]++;
		}
		for (w = 0; w < NB_WORKERS; w++)
			km_proc_rx_burst(staged[w], m, rq[w], nr[w]);
		for (i = 0; i < n; i++) {
			const struct km_proc_req *sr =
				&rq[rq_of[i] / BURST_MAX][rq_of[i] % BURST_MAX];

			assert_int_equal(sr->verdict, KM_PROC_REPLY);
			q[i].staged_len = sr->reply_len;
			assert_true(q[i].one_len >= KM_HDR_LEN && q[i].one_len <= q[i].cap);
			assert_int_equal(q[i].staged_len, q[i].one_len);
			assert_memory_equal(q[i].staged, q[i].one, q[i].one_len);
			nb_st[q[i].one[3] < KM_ST__MAX ? q[i].one[3] : KM_ST_ERROR]++;
		}
		nb_ops += n;
		nb_bursts++;
	}
	print_message("burst: %" PRIu64 " ops in %" PRIu64 " bursts: OK %" PRIu64
		      ", NOT_FOUND %" PRIu64 ", VERSION_MISMATCH %" PRIu64 ", TOO_LARGE %" PRIu64
		      ", BUSY %" PRIu64 "\n",
		nb_ops, nb_bursts, nb_st[KM_ST_OK], nb_st[KM_ST_NOT_FOUND],
		nb_st[KM_ST_VERSION_MISMATCH], nb_st[KM_ST_TOO_LARGE], nb_st[KM_ST_BUSY]);
	/* The sequence reached every outcome it is meant to compare. */
	assert_true(nb_st[KM_ST_OK] > 1000);
	assert_true(nb_st[KM_ST_NOT_FOUND] > 100);
	assert_true(nb_st[KM_ST_VERSION_MISMATCH] > 100);
	assert_true(nb_st[KM_ST_TOO_LARGE] > 100);
	assert_true(nb_st[KM_ST_BUSY] > 100);

	for (w = 0; w < NB_WORKERS; w++) {
		const struct km_proc_counters *c1 = km_proc_counters(e->proc[w]);
		const struct km_proc_counters *c2 = km_proc_counters(staged[w]);

		assert_memory_equal(c1, c2, sizeof(*c1));
		assert_true(c1->write_retry > 50);
		assert_true(c1->get_hit > 1000);
		assert_int_equal(c1->store_error, 0);
		/* Same requests counted on the same shards, and every shard saw some. */
		{
			struct km_shard_info i1[NB_SHARDS], i2[NB_SHARDS];
			uint32_t n1 = infos_sorted(e->proc[w], i1, NB_SHARDS);

			assert_int_equal(infos_sorted(staged[w], i2, NB_SHARDS), n1);
			/* Allocator rounding depends on where malloc found room: not compared. */
			for (i = 0; i < n1; i++)
				i1[i].st.entry_overhead_bytes = i2[i].st.entry_overhead_bytes = 0;
			assert_memory_equal(i1, i2, n1 * sizeof(i1[0]));
			for (i = 0; i < n1; i++)
				assert_true(i1[i].requests > 100);
		}
		km_proc_store_stats(e->proc[w], &st1);
		km_proc_store_stats(staged[w], &st2);
		st1.entry_overhead_bytes = st2.entry_overhead_bytes = 0;
		assert_memory_equal(&st1, &st2, sizeof(st1));
		km_proc_destroy(staged[w]);
		free(rq[w]);
	}
	/* The moved shard's requests on the worker without its store. */
	assert_true(km_proc_counters(e->proc[1])->busy_handover > 50);
	km_shardmap_free(moved);
	free(last_write);
	free(keys);
	free(q);
}

/*
 * The staged path on empty stores and for absent keys: prefetching finds nothing, and the
 * replies are the one-at-a-time path's (NOT_FOUND, a delete of nothing, then a create).
 */
static void
test_burst_empty(void **state)
{
	struct env *e = *state;
	static const uint8_t ops[] = {KM_OP_GET, KM_OP_DEL, KM_OP_CAS, KM_OP_MGET, KM_OP_PING,
		KM_OP_GET, KM_OP_PUT, KM_OP_GET};
	static const uint8_t want[] = {KM_ST_NOT_FOUND, KM_ST_NOT_FOUND, KM_ST_VERSION_MISMATCH,
		KM_ST_OK, KM_ST_OK, KM_ST_NOT_FOUND, KM_ST_OK, KM_ST_OK};
	struct km_proc_counters c0 = cnt_sum(e);
	struct km_proc_req r[sizeof(ops)];
	uint8_t buf[sizeof(ops)][KM_DGRAM_MAX], body[64];
	struct mget_entry ent[2];
	const char *mk[2];
	struct km_msg rep;
	char key[32], other[32];
	unsigned int i;

	key_owned(e->map, 1, "empty-", 0, key, sizeof(key));
	key_owned(e->map, 1, "empty-", 1, other, sizeof(other));
	mk[0] = key;
	mk[1] = other;
	for (i = 0; i < sizeof(ops); i++) {
		struct req q = {.op = ops[i], .key = key, .req_id = 500 + i, .src = 3};
		size_t len;

		if (ops[i] == KM_OP_CAS) {
			q.val = "c";
			q.val_len = 1;
			q.version = 9; /* no entry has a version */
		} else if (ops[i] == KM_OP_PUT) {
			q.val = "p";
			q.val_len = 1;
		} else if (ops[i] == KM_OP_MGET) {
			q.key = NULL;
			q.val = body;
			q.val_len = mget_body(body, mk, 2);
		} else if (ops[i] == KM_OP_PING) {
			q.key = NULL;
		}
		len = req_build(buf[i], sizeof(buf[i]), &q, km_shardmap_epoch(e->map));
		r[i] = (struct km_proc_req){.buf = buf[i],
			.len = len,
			.cap = sizeof(buf[i]),
			.src = q.src,
			.port_worker = 1};
	}
	km_proc_rx_burst(e->proc[1], e->map, r, sizeof(ops));
	for (i = 0; i < sizeof(ops); i++) {
		assert_int_equal(r[i].verdict, KM_PROC_REPLY);
		assert_int_equal(km_reply_parse(buf[i], r[i].reply_len, &rep), 0);
		assert_int_equal(rep.hdr.op, ops[i]);
		assert_int_equal(rep.hdr.req_id, 500 + i);
		assert_int_equal(rep.hdr.status, want[i]);
	}
	/* The GET after the PUT in the same burst sees it. */
	assert_int_equal(km_reply_parse(buf[7], r[7].reply_len, &rep), 0);
	assert_int_equal(rep.hdr.val_len, 1);
	assert_memory_equal(rep.val, "p", 1);
	assert_int_equal(km_reply_parse(buf[3], r[3].reply_len, &rep), 0);
	assert_int_equal(mget_decode(&rep, ent, 2), 2);
	assert_int_equal(ent[0].status, KM_ST_NOT_FOUND);
	assert_int_equal(ent[1].status, KM_ST_NOT_FOUND);
	assert_int_equal(CNT_DELTA(e, c0, get_miss), 4);
	assert_int_equal(CNT_DELTA(e, c0, get_hit), 1);
	assert_int_equal(CNT_DELTA(e, c0, req_get), 3);
	assert_int_equal(CNT_DELTA(e, c0, cas_mismatch), 1);
	assert_int_equal(CNT_DELTA(e, c0, store_error), 0);
}

/*
 * The shard table under attach and detach: growth from 16 slots, and deletes inside probe
 * clusters (backward shift) that must leave every other shard findable.
 */
#define AD_IDS   200
#define AD_STEPS 3000
#define AD_SEED  0x617474616368ULL /* "attach" */

/* The first n ids: attached ones found with their store, the others absent. */
static void
ad_check(struct km_proc *p, const uint64_t *ids, struct km_store *const *st, const int *in,
	unsigned int n)
{
	uint32_t i, nb = 0;

	for (i = 0; i < n; i++) {
		if (in[i]) {
			assert_ptr_equal(km_proc_shard_store(p, ids[i]), st[i]);
			nb++;
		} else {
			assert_null(km_proc_shard_store(p, ids[i]));
		}
	}
	assert_int_equal(km_proc_nb_shards(p), nb);
}

static void
test_attach_detach(void **state)
{
	static struct km_shard_info info[AD_IDS];
	struct km_store *st[AD_IDS], *other;
	uint64_t ids[AD_IDS], seed = AD_SEED, req;
	unsigned int order[AD_IDS], i, j, tmp, step;
	int in[AD_IDS];
	struct km_proc *p;

	(void)state;
	assert_int_equal(proc_new(0, &p), 0);
	/* Distinct ids from a small range: sequential runs and shared home slots. */
	for (i = 0; i < AD_IDS; i++) {
		do {
			ids[i] = 1 + rnd_next(&seed) % 1000;
			for (j = 0; j < i && ids[j] != ids[i]; j++)
				;
		} while (j < i);
		assert_int_equal(km_proc_store_new(p, ids[i], 0, &st[i]), 0);
		assert_int_equal(km_proc_shard_attach(p, ids[i], st[i]), 0);
		in[i] = 1;
		ad_check(p, ids, st, in, i + 1);
	}
	assert_int_equal(km_proc_store_new(p, 5000, 0, &other), 0);
	for (i = 0; i < AD_IDS; i++)
		assert_int_equal(km_proc_shard_attach(p, ids[i], other), -EEXIST);
	assert_int_equal(km_proc_shard_attach(p, 0, other), -EINVAL);
	assert_int_equal(km_proc_shard_attach(p, 5000, NULL), -EINVAL);
	assert_int_equal(km_proc_store_new(p, 0, 0, &other), -EINVAL);
	assert_null(km_proc_shard_detach(p, 0, &req));
	assert_null(km_proc_shard_detach(p, 5000, NULL));
	ad_check(p, ids, st, in, AD_IDS);

	/* Detach a random half, checking every id after each one. */
	for (i = 0; i < AD_IDS; i++)
		order[i] = i;
	for (i = AD_IDS - 1; i > 0; i--) {
		j = (unsigned int)(rnd_next(&seed) % (i + 1));
		tmp = order[i], order[i] = order[j], order[j] = tmp;
	}
	for (i = 0; i < AD_IDS / 2; i++) {
		req = 99;
		assert_ptr_equal(km_proc_shard_detach(p, ids[order[i]], &req), st[order[i]]);
		assert_int_equal(req, 0);
		in[order[i]] = 0;
		ad_check(p, ids, st, in, AD_IDS);
		assert_null(km_proc_shard_detach(p, ids[order[i]], &req));
	}
	assert_int_equal(km_proc_shard_infos(p, info, AD_IDS), AD_IDS / 2);
	for (i = 0; i < AD_IDS / 2; i++) {
		for (j = 0; j < AD_IDS && ids[j] != info[i].id; j++)
			;
		assert_true(j < AD_IDS && in[j]);
		assert_int_equal(info[i].requests, 0);
	}
	/* Attach them again: the same stores come back under their ids. */
	for (i = 0; i < AD_IDS / 2; i++) {
		assert_int_equal(km_proc_shard_attach(p, ids[order[i]], st[order[i]]), 0);
		in[order[i]] = 1;
	}
	ad_check(p, ids, st, in, AD_IDS);

	/* Random churn. */
	for (step = 0; step < AD_STEPS; step++) {
		i = (unsigned int)(rnd_next(&seed) % AD_IDS);
		if (in[i]) {
			assert_ptr_equal(km_proc_shard_detach(p, ids[i], NULL), st[i]);
		} else {
			assert_int_equal(km_proc_shard_attach(p, ids[i], st[i]), 0);
		}
		in[i] = !in[i];
		ad_check(p, ids, st, in, AD_IDS);
	}
	/* Detached stores are the caller's; attached ones go with the processor. */
	for (i = 0; i < AD_IDS; i++)
		if (!in[i])
			km_store_destroy(st[i]);
	km_store_destroy(other);
	km_proc_destroy(p);
}

/* Requests for a shard its owner has detached: BUSY, counted as a hand-over. */
/*
 * Overload (km_proc_overload(), the worker's RX backlog over its watermark): writes are
 * answered BUSY and change nothing, a retry of a write already applied too (its outcome
 * stays in the at-most-once table), GETs of values in DRAM and PINGs are served. Once off,
 * the retry gets its outcome and the write the BUSY refused executes with its request id
 * (the BUSY left no at-most-once entry).
 */
static void
test_overload(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0;
	uint64_t v1;
	struct rep rep;
	char key[32];
	struct req r;
	unsigned int w;

	key_owned(e->map, 1, "ov-", 0, key, sizeof(key));
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "v1", .val_len = 2, .req_id = 1, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	v1 = rep.msg.hdr.version;
	for (w = 0; w < NB_WORKERS; w++)
		km_proc_overload(e->proc[w], 1);
	c0 = cnt_sum(e);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "v2", .val_len = 2, .req_id = 2, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_BUSY);
	assert_int_equal(rep.worker, 1);
	r = (struct req){.op = KM_OP_CAS,
		.key = key,
		.val = "v3",
		.val_len = 2,
		.version = v1,
		.req_id = 3,
		.src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_BUSY);
	r = (struct req){.op = KM_OP_DEL, .key = key, .req_id = 4, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_BUSY);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "v1", .val_len = 2, .req_id = 1, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_BUSY);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 5, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.val_len, 2);
	assert_memory_equal(rep.msg.val, "v1", 2);
	assert_int_equal(rep.msg.hdr.version, v1);
	r = (struct req){.op = KM_OP_PING, .req_id = 6, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(CNT_DELTA(e, c0, busy_overload), 4);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 0);
	assert_int_equal(CNT_DELTA(e, c0, get_hit), 1);
	assert_int_equal(CNT_DELTA(e, c0, req_put), 2);
	assert_int_equal(CNT_DELTA(e, c0, req_cas), 1);
	assert_int_equal(CNT_DELTA(e, c0, req_del), 1);

	for (w = 0; w < NB_WORKERS; w++)
		km_proc_overload(e->proc[w], 0);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "v1", .val_len = 2, .req_id = 1, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, v1);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 1);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "v2", .val_len = 2, .req_id = 2, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_true(rep.msg.hdr.version > v1);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 8, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_memory_equal(rep.msg.val, "v2", 2);
	assert_int_equal(CNT_DELTA(e, c0, busy_overload), 4);
}

static void
test_busy_handover(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0;
	struct mget_entry ent[1];
	struct km_proc_req pr;
	const struct km_shard *sh;
	const char *keys[1];
	uint8_t body[64], buf[KM_DGRAM_MAX];
	struct km_store *s;
	struct km_msg rp;
	uint64_t v1, req;
	struct rep rep;
	char key[32];
	struct req r;
	size_t len;

	key_owned(e->map, 0, "ho-", 0, key, sizeof(key));
	sh = shard_of(e->map, key);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "v1", .val_len = 2, .req_id = 1, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	v1 = rep.msg.hdr.version;
	s = km_proc_shard_detach(e->proc[0], km_shard_id(sh), &req);
	assert_non_null(s);
	assert_int_equal(req, 1);

	c0 = cnt_sum(e);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 2, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_BUSY);
	assert_int_equal(rep.worker, 0);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "v2", .val_len = 2, .req_id = 3, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_BUSY);
	r = (struct req){.op = KM_OP_CAS,
		.key = key,
		.val = "v3",
		.val_len = 2,
		.version = v1,
		.req_id = 4,
		.src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_BUSY);
	r = (struct req){.op = KM_OP_DEL, .key = key, .req_id = 5, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_BUSY);
	/* The staged path too. */
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 6, .src = 1};
	len = req_build(buf, sizeof(buf), &r, km_shardmap_epoch(e->map));
	pr = (struct km_proc_req){
		.buf = buf, .len = len, .cap = sizeof(buf), .src = 1, .port_worker = 0};
	km_proc_rx_burst(e->proc[0], e->map, &pr, 1);
	assert_int_equal(pr.verdict, KM_PROC_REPLY);
	assert_int_equal(km_reply_parse(buf, pr.reply_len, &rp), 0);
	assert_int_equal(rp.hdr.status, KM_ST_BUSY);
	assert_int_equal(CNT_DELTA(e, c0, busy_handover), 5);
	assert_int_equal(CNT_DELTA(e, c0, store_error), 0);
	assert_int_equal(CNT_DELTA(e, c0, req_get), 2);
	assert_int_equal(CNT_DELTA(e, c0, req_put), 1);

	/* MGET entries keep their wire meaning: not served here, MOVED. */
	keys[0] = key;
	r = (struct req){.op = KM_OP_MGET,
		.val = body,
		.val_len = mget_body(body, keys, 1),
		.req_id = 7,
		.src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(mget_decode(&rep.msg, ent, 1), 1);
	assert_int_equal(ent[0].status, KM_ST_MOVED);
	assert_int_equal(CNT_DELTA(e, c0, busy_handover), 5);

	/* A request handed to a worker the map does not give the shard to (the map changed
	 * while it crossed): BUSY, never handed on again. */
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 8, .src = 1};
	len = req_build(buf, sizeof(buf), &r, km_shardmap_epoch(e->map));
	pr = (struct km_proc_req){.buf = buf,
		.len = len,
		.cap = sizeof(buf),
		.src = 1,
		.port_worker = 1,
		.handed = 1};
	km_proc_rx(e->proc[1], e->map, &pr);
	assert_int_equal(pr.verdict, KM_PROC_REPLY);
	assert_int_equal(km_reply_parse(buf, pr.reply_len, &rp), 0);
	assert_int_equal(rp.hdr.status, KM_ST_BUSY);
	assert_int_equal(CNT_DELTA(e, c0, store_error), 0);
	assert_int_equal(CNT_DELTA(e, c0, busy_handover), 6);

	/* Attached again: served, and the retry of the PUT answered BUSY executes now. */
	assert_int_equal(km_proc_shard_attach(e->proc[0], km_shard_id(sh), s), 0);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 9, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, v1);
	assert_memory_equal(rep.msg.val, "v1", 2);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "v2", .val_len = 2, .req_id = 3, .src = 1};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_true(rep.msg.hdr.version > v1);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 0);
	/* Counting restarted at the attach. */
	assert_int_equal(shard_requests(e->proc[0], km_shard_id(sh)), 2);
}

/*
 * Per-shard request counts over a random sequence: every single-key request once on its
 * key's shard (retried writes too), an MGET once on its first key's, PING and MAP nowhere.
 */
#define SR_OPS  4000
#define SR_KEYS 200

static void
test_shard_requests(void **state)
{
	struct env *e = *state;
	struct km_shard_info info[NB_SHARDS + 1];
	uint64_t want[NB_SHARDS] = {0}, seed = SEED ^ 0x7265717ULL, req_id = 0, req;
	char keys[SR_KEYS][24];
	const char *mk[4];
	uint8_t body[128];
	struct req last = {0}, r;
	struct rep rep;
	unsigned int i, j, w, nmk, total = 0;

	for (i = 0; i < SR_KEYS; i++)
		snprintf(keys[i], sizeof(keys[i]), i % 3 ? "sr-%u" : "u%u/sr%u", i % 17, i);
	for (i = 0; i < SR_OPS; i++) {
		uint64_t x = rnd_next(&seed);
		const char *key = keys[(x >> 8) % SR_KEYS];

		r = (struct req){.key = key, .req_id = ++req_id, .src = 9};
		switch (x % 10) {
		case 0:
		case 1:
		case 2:
			r.op = KM_OP_GET;
			break;
		case 3:
		case 4:
			r.op = KM_OP_PUT;
			r.val = key;
			r.val_len = (uint32_t)strlen(key);
			break;
		case 5:
			r.op = KM_OP_CAS;
			r.val = "c";
			r.val_len = 1;
			r.version = (x >> 32) % 4;
			break;
		case 6:
			r.op = KM_OP_DEL;
			break;
		case 7:
			r.op = KM_OP_MGET;
			r.key = NULL;
			nmk = 1 + (unsigned int)((x >> 20) % 4);
			for (j = 0; j < nmk; j++)
				mk[j] = keys[rnd_next(&seed) % SR_KEYS];
			r.val = body;
			r.val_len = mget_body(body, mk, nmk);
			break;
		case 8:
			r.op = (x >> 20) % 2 ? KM_OP_PING : KM_OP_MAP;
			r.key = NULL;
			break;
		default:
			/* A resent write, answered from the at-most-once table. */
			if (last.op == 0)
				continue;
			r = last;
			break;
		}
		call(e, &r, &rep);
		if (r.op == KM_OP_MGET)
			want[km_shard_index(shard_of(e->map, mk[0]))]++;
		else if (r.op != KM_OP_PING && r.op != KM_OP_MAP)
			want[km_shard_index(shard_of(e->map, r.key))]++;
		if (r.op == KM_OP_PUT || r.op == KM_OP_CAS || r.op == KM_OP_DEL)
			last = r;
	}
	assert_true(CNT_DELTA(e, (struct km_proc_counters){0}, write_retry) > 100);

	for (w = 0; w < NB_WORKERS; w++) {
		uint32_t n = infos_sorted(e->proc[w], info, NB_SHARDS);

		for (i = 0; i < n; i++) {
			const struct km_shard *sh = km_shardmap_find(e->map, info[i].id);

			assert_non_null(sh);
			assert_int_equal(km_shard_owner(sh), w);
			assert_true(want[km_shard_index(sh)] > 100);
			assert_int_equal(info[i].requests, want[km_shard_index(sh)]);
			assert_true(info[i].version_last > 0);
		}
		total += n;
		/* Fewer slots than shards: the count is still the total, only max written. */
		assert_true(n >= 2);
		memset(info, 0xa5, sizeof(info));
		assert_int_equal(km_proc_shard_infos(e->proc[w], info, 1), n);
		assert_true(km_shardmap_find(e->map, info[0].id) != NULL);
		assert_int_equal(info[1].id, 0xa5a5a5a5a5a5a5a5ULL);
		assert_int_equal(km_proc_shard_infos(e->proc[w], NULL, 0), n);
	}
	assert_int_equal(total, NB_SHARDS);
	/* Detach hands over the count. */
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		const struct km_shard *sh = km_shardmap_shard_at(e->map, i);
		struct km_store *s =
			km_proc_shard_detach(e->proc[km_shard_owner(sh)], km_shard_id(sh), &req);

		assert_non_null(s);
		assert_int_equal(req, want[i]);
		km_store_destroy(s);
	}
}

/*
 * Split copy: ~5000 keys of one shard (plain, random bytes that may hold the separator,
 * and composite keys that route by their first component), with overwrites and deletes
 * behind them, split into the two children. Every key must be in the child the split
 * map routes it to, with its value and version, and nowhere else.
 */
#define SPLIT_KEYS 5000

struct split_key {
	uint8_t key[48];
	uint16_t len;
	uint8_t val[32];
	uint32_t vlen;
	uint64_t version;
	int present;
};

static void
skey_init(struct km_key *k, const struct split_key *sk)
{
	k->data = sk->key;
	k->len = sk->len;
	k->hash = km_key_hash(sk->key, sk->len);
}

static void
run_split(struct km_proc *p, const struct km_shardmap *m, uint64_t parent, uint64_t seed)
{
	struct split_key *keys = calloc(SPLIT_KEYS, sizeof(*keys));
	struct km_store_stats st0, st, stlo, sthi;
	struct km_store *src, *lo, *hi, *dst;
	struct km_shardmap *m2;
	struct km_value_ref v;
	struct km_key k;
	uint64_t serial = 0, nb_present = 0, composite = 0, ver;
	unsigned int i, j, n;
	int64_t copied;

	assert_non_null(keys);
	assert_int_equal(km_proc_store_new(p, parent, 0, &src), 0);
	for (i = 0; i < SPLIT_KEYS;) {
		struct split_key *sk = &keys[i];
		uint64_t x = rnd_next(&seed);
		int len;

		switch (x % 3) {
		case 0: /* a few hundred groups: routing part != key */
			len = snprintf((char *)sk->key, sizeof(sk->key), "g%u/item-%" PRIu64,
				(unsigned int)((x >> 8) % 300), serial++);
			break;
		case 1: /* random bytes, '/' among them now and then, then a unique tail */
			n = (unsigned int)((x >> 8) % 16);
			for (j = 0; j < n; j++) {
				uint64_t b = rnd_next(&seed);

				sk->key[j] = b % 16 == 0 ? '/' : (uint8_t)(b >> 8);
			}
			len = (int)n + snprintf((char *)sk->key + n, sizeof(sk->key) - n,
					       "#%" PRIu64, serial++);
			break;
		default:
			len = snprintf(
				(char *)sk->key, sizeof(sk->key), "plain-%" PRIu64, serial++);
			break;
		}
		sk->len = (uint16_t)len;
		if (km_shard_id(km_shardmap_lookup(m, km_shardmap_hash(m, sk->key, sk->len))) !=
			parent)
			continue;
		if (km_shardmap_route_len(m, sk->key, sk->len) != sk->len)
			composite++;
		sk->vlen = (uint32_t)((x >> 32) % sizeof(sk->val));
		for (j = 0; j < sk->vlen; j++)
			sk->val[j] = (uint8_t)rnd_next(&seed);
		skey_init(&k, sk);
		assert_int_equal(
			km_store_put(src, &k, sk->val, sk->vlen, KM_VERSION_ANY, 1, &sk->version),
			0);
		sk->present = 1;
		i++;
	}
	/* Overwrites and deletes: versions out of key order, gaps in the sequence. */
	for (i = 0; i < SPLIT_KEYS; i++) {
		struct split_key *sk = &keys[rnd_next(&seed) % SPLIT_KEYS];

		skey_init(&k, sk);
		if (rnd_next(&seed) % 4 == 0) {
			if (sk->present)
				assert_int_equal(km_store_del(src, &k, sk->version, NULL), 0);
			sk->present = 0;
		} else {
			sk->vlen = (uint32_t)(rnd_next(&seed) % sizeof(sk->val));
			memset(sk->val, (int)i, sk->vlen);
			assert_int_equal(km_store_put(src, &k, sk->val, sk->vlen, KM_VERSION_ANY, 0,
						 &sk->version),
				0);
			sk->present = 1;
		}
	}
	for (i = 0; i < SPLIT_KEYS; i++)
		nb_present += keys[i].present;
	assert_true(composite > SPLIT_KEYS / 4);

	km_store_stats(src, &st0);
	assert_int_equal(st0.keys, nb_present);
	assert_int_equal(km_proc_store_new(p, 2 * parent, st0.version_last, &lo), 0);
	assert_int_equal(km_proc_store_new(p, 2 * parent + 1, st0.version_last, &hi), 0);
	copied = km_proc_reshard_split(m, src, parent, lo, hi);
	assert_int_equal(copied, nb_present);

	/* The map's split routes each key to the store it went to. */
	assert_int_equal(km_shardmap_split(m, parent, &m2), 0);
	for (i = 0; i < SPLIT_KEYS; i++) {
		const struct split_key *sk = &keys[i];
		uint64_t child =
			km_shard_id(km_shardmap_lookup(m2, km_shardmap_hash(m2, sk->key, sk->len)));
		struct km_store *in = child == 2 * parent ? lo : hi;
		struct km_store *out = child == 2 * parent ? hi : lo;

		assert_true(child == 2 * parent || child == 2 * parent + 1);
		skey_init(&k, sk);
		assert_int_equal(km_store_get(out, &k, &v), -ENOENT);
		if (!sk->present) {
			assert_int_equal(km_store_get(in, &k, &v), -ENOENT);
			continue;
		}
		assert_int_equal(km_store_get(in, &k, &v), 0);
		assert_int_equal(v.version, sk->version);
		assert_int_equal(v.len, sk->vlen);
		if (v.len != 0)
			assert_memory_equal(v.data, sk->val, v.len);
		/* The source is intact. */
		assert_int_equal(km_store_get(src, &k, &v), 0);
		assert_int_equal(v.version, sk->version);
	}
	/* Nothing else in the children: together they hold exactly the source. */
	km_store_stats(lo, &stlo);
	km_store_stats(hi, &sthi);
	assert_int_equal(stlo.keys + sthi.keys, nb_present);
	assert_int_equal(stlo.value_bytes + sthi.value_bytes, st0.value_bytes);
	assert_true(stlo.keys > nb_present / 4 && sthi.keys > nb_present / 4);
	km_store_stats(src, &st);
	assert_memory_equal(&st, &st0, sizeof(st));

	/* New writes in a child are above every version of the parent. */
	k.data = (const uint8_t *)"after-split";
	k.len = 11;
	k.hash = km_key_hash(k.data, k.len);
	assert_int_equal(km_store_put(lo, &k, "n", 1, KM_VERSION_ANY, 1, &ver), 0);
	assert_true(ver > st0.version_last);

	/* A failed load stops the copy and is reported: children that take smaller values. */
	km_store_destroy(lo);
	km_store_destroy(hi);
	{
		struct km_store_params sp = {.value_max = 4, .socket_id = -1};

		assert_int_equal(km_store_create("mem", &sp, &lo), 0);
		assert_int_equal(km_store_create("mem", &sp, &hi), 0);
	}
	assert_int_equal(km_proc_reshard_split(m, src, parent, lo, hi), -E2BIG);
	assert_int_equal(km_proc_reshard_copy(src, lo), -E2BIG);

	/* Arguments. */
	assert_int_equal(km_proc_reshard_split(NULL, src, parent, lo, hi), -EINVAL);
	assert_int_equal(km_proc_reshard_split(m, NULL, parent, lo, hi), -EINVAL);
	assert_int_equal(km_proc_reshard_split(m, src, parent, lo, lo), -EINVAL);
	assert_int_equal(km_proc_reshard_split(m, src, parent, src, hi), -EINVAL);
	assert_int_equal(km_proc_reshard_split(m, src, 0, lo, hi), -EINVAL);
	assert_int_equal(
		km_proc_reshard_split(m, src, (uint64_t)1 << KM_SHARD_DEPTH_MAX, lo, hi), -ERANGE);
	assert_int_equal(km_proc_reshard_copy(src, src), -EINVAL);
	assert_int_equal(km_proc_reshard_copy(NULL, lo), -EINVAL);
	assert_int_equal(km_proc_reshard_copy(src, NULL), -EINVAL);

	/* A copy reproduces the source entry for entry. */
	assert_int_equal(km_proc_store_new(p, parent, 0, &dst), 0);
	assert_int_equal(km_proc_reshard_copy(src, dst), (int64_t)nb_present);
	km_store_stats(dst, &st);
	assert_int_equal(st.keys, st0.keys);
	assert_int_equal(st.value_bytes, st0.value_bytes);
	for (i = 0; i < SPLIT_KEYS; i++) {
		skey_init(&k, &keys[i]);
		if (!keys[i].present) {
			assert_int_equal(km_store_get(dst, &k, &v), -ENOENT);
			continue;
		}
		assert_int_equal(km_store_get(dst, &k, &v), 0);
		assert_int_equal(v.version, keys[i].version);
	}

	km_store_destroy(dst);
	km_store_destroy(lo);
	km_store_destroy(hi);
	km_store_destroy(src);
	km_shardmap_free(m2);
	free(keys);
}

static void
test_reshard_split(void **state)
{
	struct km_shardmap_params mp = {
		.nb_shards = 4,
		.nb_workers = 1,
		.udp_port_base = PORT_BASE,
		.route_sep = '/',
		.route_depth = 1,
	};
	struct km_shardmap *m, *m2;
	struct km_proc *p;

	(void)state;
	assert_int_equal(proc_new(0, &p), 0);
	assert_int_equal(km_shardmap_create(&mp, &m), 0);
	/* Depth 2, then one of its children at depth 3 on the split map. */
	run_split(p, m, km_shard_id(km_shardmap_shard_at(m, 1)), SEED + 1);
	assert_int_equal(km_shardmap_split(m, km_shard_id(km_shardmap_shard_at(m, 2)), &m2), 0);
	run_split(p, m2, 2 * km_shard_id(km_shardmap_shard_at(m, 2)) + 1, SEED + 2);
	km_shardmap_free(m2);
	km_shardmap_free(m);
	km_proc_destroy(p);
}

/*
 * Merge: two buddy shards filled through requests, detached from their owners, copied
 * into one parent store attached to the merged map's owner; every key is then served
 * through km_proc on the merged map with its value and version.
 */
#define MERGE_KEYS 1500

struct merge_key {
	char name[32];
	char val[32];
	uint64_t version;
	int present;
};

static void
test_reshard_merge(void **state)
{
	struct env *e = *state;
	struct merge_key *keys = calloc(MERGE_KEYS, sizeof(*keys));
	uint64_t seed = SEED + 3, req_id = 0, want[2] = {0}, req, max = 0;
	uint64_t lo_id = km_shard_id(km_shardmap_shard_at(e->map, 2)) & ~1ULL, parent = lo_id >> 1;
	struct km_store *src[2], *dst;
	const struct km_shard *psh;
	struct km_shardmap *m2;
	uint64_t present[2] = {0}, gets = 0;
	unsigned int i, b, serial = 0;
	char fresh[32];
	struct rep rep;
	struct req r;

	assert_non_null(keys);
	assert_true(km_shard_depth(lo_id) == 3);
	for (i = 0; i < MERGE_KEYS;) {
		struct merge_key *mk = &keys[i];
		uint64_t x = rnd_next(&seed);

		if (x % 2)
			snprintf(mk->name, sizeof(mk->name), "u%u/m%u", (unsigned int)(x >> 8) % 97,
				serial++);
		else
			snprintf(mk->name, sizeof(mk->name), "merge-%u", serial++);
		if ((km_shard_id(shard_of(e->map, mk->name)) | 1) != (lo_id | 1))
			continue;
		snprintf(mk->val, sizeof(mk->val), "v%" PRIu64, x % 100000);
		r = (struct req){.op = KM_OP_PUT,
			.key = mk->name,
			.val = mk->val,
			.val_len = (uint32_t)strlen(mk->val),
			.req_id = ++req_id,
			.src = 4};
		assert_int_equal(call(e, &r, &rep), KM_ST_OK);
		want[km_shard_id(shard_of(e->map, mk->name)) & 1]++;
		mk->version = rep.msg.hdr.version;
		mk->present = 1;
		/* Some deleted again. */
		if (x % 7 == 0) {
			r = (struct req){.op = KM_OP_DEL,
				.key = mk->name,
				.version = mk->version,
				.req_id = ++req_id,
				.src = 4};
			assert_int_equal(call(e, &r, &rep), KM_ST_OK);
			want[km_shard_id(shard_of(e->map, mk->name)) & 1]++;
			mk->present = 0;
		}
		i++;
	}
	for (i = 0; i < MERGE_KEYS; i++) {
		if (!keys[i].present)
			continue;
		present[km_shard_id(shard_of(e->map, keys[i].name)) & 1]++;
		if (keys[i].version > max)
			max = keys[i].version;
	}
	assert_true(present[0] > 100 && present[1] > 100);

	assert_int_equal(km_shardmap_merge(e->map, lo_id, &m2), 0);
	psh = km_shardmap_find(m2, parent);
	assert_non_null(psh);
	for (b = 0; b < 2; b++) {
		uint16_t owner = km_shard_owner(km_shardmap_find(e->map, lo_id + b));

		src[b] = km_proc_shard_detach(e->proc[owner], lo_id + b, &req);
		assert_non_null(src[b]);
		assert_int_equal(req, want[b]);
	}
	/* Base 0: only the loads keep new versions above the copied ones. */
	assert_int_equal(km_proc_store_new(e->proc[km_shard_owner(psh)], parent, 0, &dst), 0);
	for (b = 0; b < 2; b++)
		assert_int_equal(km_proc_reshard_copy(src[b], dst), (int64_t)present[b]);
	assert_int_equal(km_proc_shard_attach(e->proc[km_shard_owner(psh)], parent, dst), 0);
	assert_int_equal(km_proc_shard_attach(e->proc[km_shard_owner(psh)], parent, dst), -EEXIST);

	for (i = 0; i < MERGE_KEYS; i++) {
		const struct merge_key *mk = &keys[i];

		r = (struct req){.op = KM_OP_GET, .key = mk->name, .req_id = ++req_id, .src = 4};
		if (!mk->present) {
			assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_NOT_FOUND);
		} else {
			assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
			assert_int_equal(rep.msg.hdr.version, mk->version);
			assert_int_equal(rep.msg.hdr.val_len, strlen(mk->val));
			assert_memory_equal(rep.msg.val, mk->val, rep.msg.hdr.val_len);
		}
		assert_int_equal(rep.worker, km_shard_owner(psh));
		gets++;
	}
	/* Writes on the merged shard: versions above everything copied, for existing keys
	 * and new ones. */
	for (i = 0; i < MERGE_KEYS && !keys[i].present; i++)
		;
	r = (struct req){.op = KM_OP_CAS,
		.key = keys[i].name,
		.val = "w",
		.val_len = 1,
		.version = keys[i].version,
		.req_id = ++req_id,
		.src = 4};
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	assert_true(rep.msg.hdr.version > max);
	max = rep.msg.hdr.version;
	serial = 0;
	do
		snprintf(fresh, sizeof(fresh), "new-%u", serial++);
	while (shard_of(m2, fresh) != psh);
	r = (struct req){
		.op = KM_OP_PUT, .key = fresh, .val = "n", .val_len = 1, .req_id = ++req_id};
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	assert_true(rep.msg.hdr.version > max);
	assert_int_equal(shard_requests(e->proc[km_shard_owner(psh)], parent), gets + 2);

	for (b = 0; b < 2; b++)
		km_store_destroy(src[b]);
	km_shardmap_free(m2);
	free(keys);
}

/*
 * A GET whose value does not fit the buffer it came in: KM_PROC_GROW with the room it
 * needs, the request left intact and not counted; submitted again with that room it is
 * answered (and counted once). Without reply_max it is TOO_LARGE; an MGET entry never
 * grows (TOO_LARGE, fetched with GET).
 */
static void
test_grow(void **state)
{
	static uint8_t big[KM_MSG_MAX], val[KM_VALUE_MAX_LARGE];
	struct km_shardmap_params mp = {
		.nb_shards = 1,
		.nb_workers = 1,
		.udp_port_base = PORT_BASE,
		.route_sep = '/',
		.route_depth = 1,
	};
	struct km_proc_params pp = {
		.worker = 0,
		.value_max = KM_VALUE_MAX_LARGE,
		.reply_max = KM_MSG_MAX,
		.store_driver = "mem",
		.version_base = 1,
	};
	uint8_t small[KM_DGRAM_MAX], copy[KM_DGRAM_MAX], body[8];
	struct req put = {.op = KM_OP_PUT, .key = "g", .val = val, .req_id = 1};
	struct req get = {.op = KM_OP_GET, .key = "g", .req_id = 2};
	struct km_proc_counters c0;
	struct km_shardmap *m;
	struct km_proc *p;
	struct km_proc_req r;
	struct km_msg msg;
	size_t len, i;

	(void)state;
	for (i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)(i ^ (i >> 8));
	assert_int_equal(km_shardmap_create(&mp, &m), 0);
	assert_int_equal(km_proc_create(&pp, &p), 0);
	assert_int_equal(km_proc_shard_add(p, km_shard_id(km_shardmap_shard_at(m, 0))), 0);

	/* The largest PUT (a reassembled datagram: its buffer has room for it). */
	put.val_len = KM_VALUE_MAX_LARGE;
	len = req_build(big, sizeof(big), &put, 0);
	assert_int_equal(len, KM_MSG_MAX);
	r = (struct km_proc_req){.buf = big, .len = len, .cap = sizeof(big), .port_worker = 0};
	km_proc_rx(p, m, &r);
	assert_int_equal(r.verdict, KM_PROC_REPLY);
	assert_int_equal(km_reply_parse(big, r.reply_len, &msg), 0);
	assert_int_equal(msg.hdr.status, KM_ST_OK);

	/* GET in a datagram-sized buffer: sent back for room, untouched, not counted. */
	len = req_build(small, sizeof(small), &get, 0);
	memcpy(copy, small, len);
	c0 = *km_proc_counters(p);
	r = (struct km_proc_req){.buf = small, .len = len, .cap = sizeof(small), .port_worker = 0};
	km_proc_rx(p, m, &r);
	assert_int_equal(r.verdict, KM_PROC_GROW);
	assert_memory_equal(small, copy, len);
	assert_memory_equal(km_proc_counters(p), &c0, sizeof(c0));
	/* ... and answered with room. */
	memcpy(big, small, len);
	r = (struct km_proc_req){.buf = big, .len = len, .cap = sizeof(big), .port_worker = 0};
	km_proc_rx(p, m, &r);
	assert_int_equal(r.verdict, KM_PROC_REPLY);
	assert_int_equal(r.reply_len, KM_HDR_LEN + KM_VALUE_MAX_LARGE);
	assert_int_equal(km_reply_parse(big, r.reply_len, &msg), 0);
	assert_int_equal(msg.hdr.status, KM_ST_OK);
	assert_memory_equal(msg.val, val, KM_VALUE_MAX_LARGE);
	assert_int_equal(km_proc_counters(p)->req_get, c0.req_get + 1);
	assert_int_equal(km_proc_counters(p)->get_hit, c0.get_hit + 1);
	assert_int_equal(km_proc_counters(p)->too_large, c0.too_large);

	/* An MGET entry that does not fit is TOO_LARGE, the MGET is answered. */
	body[0] = 1;
	body[1] = 0;
	body[2] = 1;
	body[3] = 'g';
	get = (struct req){.op = KM_OP_MGET, .val = body, .val_len = 4, .req_id = 3};
	len = req_build(small, sizeof(small), &get, 0);
	r = (struct km_proc_req){.buf = small, .len = len, .cap = sizeof(small), .port_worker = 0};
	km_proc_rx(p, m, &r);
	assert_int_equal(r.verdict, KM_PROC_REPLY);
	assert_int_equal(km_reply_parse(small, r.reply_len, &msg), 0);
	assert_int_equal(msg.hdr.status, KM_ST_OK);
	assert_int_equal(msg.val[2], KM_ST_TOO_LARGE);
	km_proc_destroy(p);

	/* No room to give (reply_max 0): TOO_LARGE, as before fragments. */
	pp.reply_max = 0;
	assert_int_equal(km_proc_create(&pp, &p), 0);
	assert_int_equal(km_proc_shard_add(p, km_shard_id(km_shardmap_shard_at(m, 0))), 0);
	put.val_len = KM_DGRAM_MAX; /* a reply of 40 more bytes than small */
	len = req_build(big, sizeof(big), &put, 0);
	r = (struct km_proc_req){.buf = big, .len = len, .cap = sizeof(big), .port_worker = 0};
	km_proc_rx(p, m, &r);
	assert_int_equal(r.verdict, KM_PROC_REPLY);
	get = (struct req){.op = KM_OP_GET, .key = "g", .req_id = 4};
	len = req_build(small, sizeof(small), &get, 0);
	r = (struct km_proc_req){.buf = small, .len = len, .cap = sizeof(small), .port_worker = 0};
	km_proc_rx(p, m, &r);
	assert_int_equal(r.verdict, KM_PROC_REPLY);
	assert_int_equal(km_reply_parse(small, r.reply_len, &msg), 0);
	assert_int_equal(msg.hdr.status, KM_ST_TOO_LARGE);
	assert_int_equal(km_proc_counters(p)->too_large, 1);
	km_proc_destroy(p);
	km_shardmap_free(m);
}

/* ---- incremental split and merge (proc_mig.c) ---- */

#define MIG_KEYS 1500

struct mig_ref {
	char key[24];
	int present;
	uint64_t version;
	uint32_t len;
	uint8_t val[64];
};

/* Every key of the reference as GET answers it through map m. */
static void
mig_check_all(struct env *e, const struct km_shardmap *m, const struct mig_ref *ref, unsigned int n)
{
	struct rep rep;
	unsigned int i;

	for (i = 0; i < n; i++) {
		struct req r = {.op = KM_OP_GET, .key = ref[i].key, .req_id = 900000 + i, .src = 3};
		uint8_t st = call_map(e, m, &r, &rep, KM_DGRAM_MAX);

		if (!ref[i].present) {
			assert_int_equal(st, KM_ST_NOT_FOUND);
			continue;
		}
		assert_int_equal(st, KM_ST_OK);
		assert_int_equal(rep.msg.hdr.version, ref[i].version);
		assert_int_equal(rep.msg.hdr.val_len, ref[i].len);
		if (ref[i].len != 0)
			assert_memory_equal(rep.msg.val, ref[i].val, ref[i].len);
	}
}

/* One random write of the reference through map m (old or new: both must work). */
static void
mig_write(struct env *e, const struct km_shardmap *m, struct mig_ref *ref, unsigned int n,
	uint64_t *seed, uint64_t req_id)
{
	struct mig_ref *k = &ref[rnd_next(seed) % n];
	struct rep rep;
	struct req r = {.key = k->key, .req_id = req_id, .src = 4};
	unsigned int what = (unsigned int)(rnd_next(seed) % 8);
	uint8_t st;

	if (what == 0) {
		r.op = KM_OP_DEL;
		st = call_map(e, m, &r, &rep, KM_DGRAM_MAX);
		assert_int_equal(st, k->present ? KM_ST_OK : KM_ST_NOT_FOUND);
		k->present = 0;
		return;
	}
	k->len = (uint32_t)(rnd_next(seed) % sizeof(k->val));
	memset(k->val, (int)(req_id & 0xff), k->len);
	r.op = what == 1 && k->present ? KM_OP_CAS : KM_OP_PUT;
	r.version = r.op == KM_OP_CAS ? k->version : 0;
	r.val = k->val;
	r.val_len = k->len;
	st = call_map(e, m, &r, &rep, KM_DGRAM_MAX);
	assert_int_equal(st, KM_ST_OK);
	assert_true(rep.msg.hdr.version > k->version);
	k->version = rep.msg.hdr.version;
	k->present = 1;
}

/* Copy with writes between the steps until the copy is whole; every key checked as it
 * goes. @return steps taken. */
static unsigned int
mig_run(struct env *e, struct km_proc *p, const struct km_shardmap *m, struct mig_ref *ref,
	unsigned int n, uint64_t *seed, uint64_t *req_id)
{
	struct km_mig_progress pg;
	unsigned int steps = 0;

	for (;;) {
		km_proc_mig_progress(p, &pg);
		if (pg.phase != KM_MIG_COPYING)
			break;
		km_proc_mig_step(p, m);
		mig_write(e, m, ref, n, seed, (*req_id)++);
		mig_write(e, m, ref, n, seed, (*req_id)++);
		if (++steps % 8 == 0)
			mig_check_all(e, m, ref, n);
		assert_true(steps < 100000);
	}
	assert_int_equal(pg.phase, KM_MIG_READY);
	assert_true(pg.mirrored > 0);
	return steps;
}

/* The map after a split or merge done on worker w: its new shard(s) on w. */
static struct km_shardmap *
mig_map(const struct km_shardmap *m, int split, uint64_t id, uint16_t w)
{
	struct km_shardmap *nm, *mv;
	uint64_t ids[2] = {split ? id * 2 : id, id * 2 + 1};
	unsigned int i;

	assert_int_equal(
		split ? km_shardmap_split(m, id, &nm) : km_shardmap_merge(m, id * 2, &nm), 0);
	for (i = 0; i < (split ? 2u : 1u); i++) {
		if (km_shard_owner(km_shardmap_find(nm, ids[i])) == w)
			continue;
		assert_int_equal(km_shardmap_move(nm, ids[i], w, &mv), 0);
		km_shardmap_free(nm);
		nm = mv;
	}
	return nm;
}

static void
test_incremental_split_merge(void **state)
{
	struct env *e = *state;
	struct mig_ref *ref = calloc(MIG_KEYS, sizeof(*ref));
	struct km_shardmap *m1 = e->map, *m2, *m3;
	struct km_store *old[2] = {NULL, NULL};
	uint64_t seed = SEED, req_id = 1, keys, sid, v;
	struct km_proc_counters c0;
	struct km_proc *p;
	struct rep rep;
	struct req r;
	unsigned int i, n = 0, cand;
	char key[24];
	uint16_t w;

	assert_non_null(ref);
	key_owned(m1, 1, "mig-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(m1, key));
	w = km_shard_owner(shard_of(m1, key));
	p = e->proc[w];
	/* Keys of that shard, plain and composite (routed by their first component). */
	for (cand = 0; n < MIG_KEYS; cand++) {
		if (cand % 3 == 0)
			snprintf(key, sizeof(key), "ent%u/k%u", cand % 97, cand);
		else
			snprintf(key, sizeof(key), "mig-%u", cand);
		if (km_shard_id(shard_of(m1, key)) != sid)
			continue;
		memcpy(ref[n].key, key, sizeof(key));
		n++;
	}
	for (i = 0; i < n; i++)
		mig_write(e, m1, ref, n, &seed, req_id++);
	/* A write whose retry comes after the split: applied once. */
	r = (struct req){.op = KM_OP_PUT,
		.key = ref[0].key,
		.val = "once",
		.val_len = 4,
		.req_id = 777777,
		.src = 9};
	assert_int_equal(call_map(e, m1, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	v = rep.msg.hdr.version;
	ref[0].present = 1;
	ref[0].version = v;
	ref[0].len = 4;
	memcpy(ref[0].val, "once", 4);

	/* Arguments and states. */
	assert_int_equal(km_proc_mig_finish(p, old, &keys), -ENOENT);
	assert_int_equal(km_proc_mig_start(p, KM_MIG_SPLIT, 0), -EINVAL);
	assert_int_equal(km_proc_mig_start(p, (enum km_mig_kind)9, sid), -EINVAL);
	assert_int_equal(km_proc_mig_start(e->proc[1 - w], KM_MIG_SPLIT, sid), -ENOENT);
	assert_int_equal(km_proc_mig_start(p, KM_MIG_MERGE, sid), -ENOENT); /* no children */

	/* Split while serving through the old map. */
	c0 = cnt_sum(e);
	assert_int_equal(km_proc_mig_start(p, KM_MIG_SPLIT, sid), 0);
	assert_true(km_proc_mig_active(p));
	assert_int_equal(km_proc_mig_start(p, KM_MIG_SPLIT, sid), -EBUSY);
	assert_int_equal(km_proc_mig_finish(p, old, &keys), -EAGAIN);
	mig_run(e, p, m1, ref, n, &seed, &req_id);
	assert_int_equal(km_proc_mig_finish(p, old, &keys), 0);
	assert_false(km_proc_mig_active(p));
	assert_non_null(old[0]);
	assert_null(old[1]);
	km_store_destroy(old[0]);
	old[0] = NULL;
	assert_int_equal(CNT_DELTA(e, c0, busy_handover), 0);
	assert_int_equal(CNT_DELTA(e, c0, mig_done), 1);
	/* The map is not published yet: requests routed to the parent find the children. */
	mig_check_all(e, m1, ref, n);
	for (i = 0; i < 50; i++)
		mig_write(e, m1, ref, n, &seed, req_id++);
	m2 = mig_map(m1, 1, sid, w);
	mig_check_all(e, m2, ref, n);
	/* The retry of the write made before the split is answered, not applied again. */
	r = (struct req){.op = KM_OP_PUT,
		.key = ref[0].key,
		.val = "once",
		.val_len = 4,
		.req_id = 777777,
		.src = 9};
	c0 = cnt_sum(e);
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, v);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 1);

	/* Merge the children back while serving through the map that has them. */
	assert_int_equal(km_proc_mig_start(p, KM_MIG_MERGE, sid), 0);
	mig_run(e, p, m2, ref, n, &seed, &req_id);
	assert_int_equal(km_proc_mig_finish(p, old, &keys), 0);
	assert_non_null(old[0]);
	assert_non_null(old[1]);
	km_store_destroy(old[0]);
	km_store_destroy(old[1]);
	mig_check_all(e, m2, ref, n); /* children gone: the parent answers */
	m3 = mig_map(m2, 0, sid, w);
	mig_check_all(e, m3, ref, n);

	/* A cancelled split leaves the shard as it was. */
	assert_int_equal(km_proc_mig_start(p, KM_MIG_SPLIT, sid), 0);
	km_proc_mig_step(p, m3);
	km_proc_mig_cancel(p);
	assert_false(km_proc_mig_active(p));
	mig_check_all(e, m3, ref, n);
	/* Handing a source away cancels its copy. */
	assert_int_equal(km_proc_mig_start(p, KM_MIG_SPLIT, sid), 0);
	old[0] = km_proc_shard_detach(p, sid, NULL);
	assert_non_null(old[0]);
	assert_false(km_proc_mig_active(p));
	assert_int_equal(km_proc_shard_attach(p, sid, old[0]), 0);
	mig_check_all(e, m3, ref, n);

	km_shardmap_free(m1);
	km_shardmap_free(m2);
	e->map = m3;
	free(ref);
}

/* Apply every chunk queued by export x to store dst; *last set at the last one (its
 * keys in *keys). @return chunks applied. */
static unsigned int
export_drain(struct km_proc_export *x, struct km_store *dst, int *last, uint64_t *keys)
{
	struct km_proc_xchunk *c;
	unsigned int n = 0;

	while ((c = km_proc_export_take(x)) != NULL) {
		size_t off = 0, used;

		while (off < c->len) {
			assert_int_equal(
				km_proc_xrec_apply(dst, c->data + off, c->len - off, &used), 0);
			off += used;
		}
		assert_int_equal(off, c->len);
		if (c->last) {
			*last = 1;
			*keys = c->keys;
		}
		km_proc_export_give(x, c);
		n++;
	}
	return n;
}

/* The copy dst holds exactly the reference's present keys, with their values and
 * versions. */
static void
export_check(struct km_store *dst, const struct mig_ref *ref, unsigned int n)
{
	struct km_store_stats st;
	unsigned int i, present = 0;

	for (i = 0; i < n; i++) {
		struct km_key k = {.data = (const uint8_t *)ref[i].key,
			.len = (uint16_t)strlen(ref[i].key),
			.hash = km_key_hash(ref[i].key, strlen(ref[i].key))};
		struct km_value_ref v;
		int rc = km_store_get(dst, &k, &v);

		if (!ref[i].present) {
			assert_int_equal(rc, -ENOENT);
			continue;
		}
		present++;
		assert_int_equal(rc, 0);
		assert_int_equal(v.version, ref[i].version);
		assert_int_equal(v.len, ref[i].len);
		if (v.len != 0)
			assert_memory_equal(v.data, ref[i].val, v.len);
	}
	km_store_stats(dst, &st);
	assert_int_equal(st.keys, present);
}

/* A request through the owner's km_proc_rx() with a cookie: its verdict, the reply (if
 * any) parsed into *msg. */
static uint8_t
repl_send(struct env *e, struct km_proc *p, uint8_t *buf, const struct req *r, void *cookie,
	struct km_msg *msg)
{
	struct km_proc_req pr;
	size_t len = req_build(buf, KM_DGRAM_MAX, r, km_shardmap_epoch(e->map));

	pr = (struct km_proc_req){
		.buf = buf, .len = len, .cap = KM_DGRAM_MAX, .src = r->src, .port_worker = -1};
	pr.cookie = cookie;
	km_proc_rx(p, e->map, &pr);
	if (pr.verdict == KM_PROC_REPLY)
		assert_int_equal(km_reply_parse(buf, pr.reply_len, msg), 0);
	return pr.verdict;
}

/* Every record of the chunks queued by x, parsed; *sync the last sync record's rseq
 * (unchanged when none), *last_w the last write's tail. @return records. */
static unsigned int
repl_drain(struct km_proc_export *x, uint64_t *sync, struct km_proc_rrec *last_w)
{
	struct km_proc_xchunk *c;
	unsigned int n = 0;

	while ((c = km_proc_export_take(x)) != NULL) {
		size_t off = 0, need;

		while (off < c->len) {
			struct km_proc_rrec w;
			long l = km_proc_rrec_parse(c->data + off, c->len - off, &w, &need);

			assert_true(l > 0); /* a record never spans two chunks */
			if (w.kind == 2)
				*sync = w.rseq;
			if (w.kind == 1)
				*last_w = w;
			off += (size_t)l;
			n++;
		}
		km_proc_export_give(x, c);
	}
	return n;
}

/* Feed every chunk queued by x to replica r (if r is not NULL; else drop them). */
static void
repl_feed(struct km_proc *p, struct km_proc_export *x, struct km_proc_replica *r)
{
	struct km_proc_xchunk *c;
	int synced_now;

	km_proc_repl_step(p);
	while ((c = km_proc_export_take(x)) != NULL) {
		if (r != NULL)
			assert_int_equal(km_proc_replica_apply(r, c->data, c->len,
						 KM_PROC_XCHUNK_BYTES, &synced_now),
				(long)c->len);
		km_proc_export_give(x, c);
	}
}

/* The value of key in store s, "" when absent. */
static void
store_value(struct km_store *s, const char *key, char *out, size_t cap)
{
	struct km_key k = {.data = (const uint8_t *)key,
		.len = (uint16_t)strlen(key),
		.hash = km_key_hash((const uint8_t *)key, strlen(key))};
	struct km_value_ref v;

	out[0] = '\0';
	if (km_store_get(s, &k, &v) == 0)
		snprintf(out, cap, "%.*s", (int)v.len, (const char *)v.data);
}

/*
 * Replication: the stream's walk and sync record, writes numbered with their at-most-once
 * identity, replies held until the waited stream acknowledges them, a GET of a key whose
 * write is unacknowledged held too, the window (BUSY), a blocked shard, async mode, the
 * detach.
 */
static void
test_repl_window(void **state)
{
	struct env *e = *state;
	static uint8_t buf[8][KM_DGRAM_MAX];
	struct km_proc_done done[16];
	struct km_proc_repl_status st;
	struct km_proc_rrec w = {0};
	struct km_proc_export *x;
	uint64_t sid, sync = UINT64_MAX, req_id = 7000000, src = 0x0a000001ULL << 16;
	char key[24], other[24];
	struct km_proc *p;
	struct km_msg msg;
	unsigned int i, n;
	uint16_t wk;

	key_owned(e->map, 0, "rp-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(e->map, key));
	wk = km_shard_owner(shard_of(e->map, key));
	p = e->proc[wk];
	/* Another key of the same shard. */
	for (i = 1;; i++) {
		key_owned(e->map, wk, "rp-", i, other, sizeof(other));
		if (km_shard_id(shard_of(e->map, other)) == sid &&
			(km_key_hash((const uint8_t *)other, strlen(other)) & 255) !=
				(km_key_hash((const uint8_t *)key, strlen(key)) & 255))
			break;
	}
	{
		struct req r = {.op = KM_OP_PUT,
			.key = other,
			.val = "o1",
			.val_len = 2,
			.req_id = req_id++,
			.src = src};

		assert_int_equal(repl_send(e, p, buf[0], &r, NULL, &msg), KM_PROC_REPLY);
		assert_int_equal(msg.hdr.status, KM_ST_OK);
	}
	assert_int_equal(km_proc_repl_new(0, 8, &x), -EINVAL);
	assert_int_equal(km_proc_repl_new(sid, 8, &x), 0);
	assert_int_equal(km_proc_repl_start(p, x), 0);
	assert_int_equal(km_proc_repl_start(p, x), -EINVAL);
	assert_true(km_proc_repl_active(p));
	/* The walk, then the sync record (no write numbered yet: rseq 0). */
	for (i = 0; i < 1000 && !(km_proc_repl_status(x, &st), st.walked); i++)
		km_proc_repl_step(p);
	assert_true(st.walked);
	km_proc_repl_step(p); /* hands the chunk on */
	n = repl_drain(x, &sync, &w);
	assert_true(n >= 2);
	assert_int_equal(sync, 0);
	assert_false(st.caught_up);
	assert_false(st.waited);

	/* Not waited for yet: a write is answered at once, and numbered 1. */
	{
		struct req r = {.op = KM_OP_PUT,
			.key = key,
			.val = "v1",
			.val_len = 2,
			.req_id = req_id++,
			.src = src};

		assert_int_equal(repl_send(e, p, buf[0], &r, NULL, &msg), KM_PROC_REPLY);
		assert_int_equal(msg.hdr.status, KM_ST_OK);
		km_proc_repl_step(p);
		assert_int_equal(repl_drain(x, &sync, &w), 1);
		assert_int_equal(w.kind, 1);
		assert_int_equal(w.rseq, 1);
		assert_int_equal(w.src, src);
		assert_int_equal(w.req_id, r.req_id);
		assert_int_equal(w.op, KM_OP_PUT);
		assert_int_equal(w.status, KM_ST_OK);
	}
	/* The replica applied the sync record: waited for from now on. */
	km_proc_repl_ack(x, 0, 1);
	km_proc_repl_status(x, &st);
	assert_true(st.caught_up && st.waited);
	assert_int_equal(km_proc_poll(p, done, 16), 0);
	/* A write waits for its acknowledgement, so does a GET of its key (not of another
	 * key), so does its retry. */
	{
		struct req r = {.op = KM_OP_PUT,
			.key = key,
			.val = "v2",
			.val_len = 2,
			.req_id = req_id++,
			.src = src};
		struct req g = {.op = KM_OP_GET, .key = key, .req_id = req_id++, .src = src};
		struct req g2 = {.op = KM_OP_GET, .key = other, .req_id = req_id++, .src = src};

		assert_int_equal(repl_send(e, p, buf[1], &r, buf[1], &msg), KM_PROC_DEFER);
		assert_int_equal(repl_send(e, p, buf[2], &g, buf[2], &msg), KM_PROC_DEFER);
		assert_int_equal(repl_send(e, p, buf[3], &g2, buf[3], &msg), KM_PROC_REPLY);
		assert_int_equal(msg.hdr.status, KM_ST_OK);
		assert_int_equal(repl_send(e, p, buf[4], &r, buf[4], &msg), KM_PROC_DEFER);
		assert_int_equal(km_proc_poll(p, done, 16), 0);
		assert_true(km_proc_busy(p));
		km_proc_repl_ack(x, 1, 1); /* not yet the write: number 2 */
		assert_int_equal(km_proc_poll(p, done, 16), 0);
		km_proc_repl_ack(x, 2, 1);
		n = km_proc_poll(p, done, 16);
		assert_int_equal(n, 3);
		assert_ptr_equal(done[0].cookie, buf[1]);
		assert_ptr_equal(done[1].cookie, buf[2]);
		assert_ptr_equal(done[2].cookie, buf[4]);
		assert_int_equal(km_reply_parse(buf[2], done[1].len, &msg), 0);
		assert_int_equal(msg.hdr.status, KM_ST_OK);
		assert_int_equal(msg.hdr.val_len, 2);
		assert_memory_equal(msg.val, "v2", 2);
		assert_int_equal(km_reply_parse(buf[4], done[2].len, &msg), 0);
		assert_int_equal(msg.hdr.status, KM_ST_OK);
		assert_false(km_proc_busy(p));
	}
	km_proc_repl_step(p);
	repl_drain(x, &sync, &w);
	assert_int_equal(w.rseq, 2);
	/* The window: KM_PROC_REPL_WINDOW writes unacknowledged, the next one is BUSY and not
	 * applied; an acknowledgement opens it again. */
	{
		struct km_proc_done *dn = calloc(KM_PROC_REPL_WINDOW + 16, sizeof(*dn));
		uint64_t busy0 = km_proc_counters(p)->busy_repl;
		struct req r = {
			.op = KM_OP_PUT, .key = other, .val = "w", .val_len = 1, .src = src};

		assert_non_null(dn);
		for (i = 0; i < KM_PROC_REPL_WINDOW; i++) {
			r.req_id = req_id++;
			assert_int_equal(repl_send(e, p, buf[5], &r, NULL, &msg), KM_PROC_DEFER);
			if (i % 64 == 0) {
				km_proc_repl_step(p);
				repl_drain(x, &sync, &w);
			}
		}
		r.req_id = req_id++;
		assert_int_equal(repl_send(e, p, buf[5], &r, NULL, &msg), KM_PROC_REPLY);
		assert_int_equal(msg.hdr.status, KM_ST_BUSY);
		assert_int_equal(km_proc_counters(p)->busy_repl, busy0 + 1);
		km_proc_repl_ack(x, 2 + KM_PROC_REPL_WINDOW, 1);
		assert_int_equal(
			km_proc_poll(p, dn, KM_PROC_REPL_WINDOW + 16), KM_PROC_REPL_WINDOW);
		km_proc_repl_step(p);
		repl_drain(x, &sync, &w);
		assert_int_equal(w.rseq, 2 + KM_PROC_REPL_WINDOW);
		free(dn);
	}
	/* Blocked (an in-sync replica without a stream): nothing is acknowledged, even
	 * what x acknowledges. */
	assert_int_equal(km_proc_repl_block(p, sid, 2, 1), 0);
	{
		struct req r = {.op = KM_OP_DEL, .key = key, .req_id = req_id++, .src = src};

		assert_int_equal(repl_send(e, p, buf[6], &r, buf[6], &msg), KM_PROC_DEFER);
		km_proc_repl_ack(x, 3 + KM_PROC_REPL_WINDOW, 1);
		assert_int_equal(km_proc_poll(p, done, 16), 0);
		assert_int_equal(km_proc_repl_block(p, sid, 2, 0), 0);
		assert_int_equal(km_proc_poll(p, done, 16), 1);
		assert_ptr_equal(done[0].cookie, buf[6]);
	}
	/* A waited stream that fails blocks its replica's tag until a new stream of the
	 * replica starts; a stream stopped blocks nothing. */
	{
		struct req r = {
			.op = KM_OP_PUT, .key = other, .val = "b", .val_len = 1, .src = src};
		struct km_proc_export *y, *y2;
		uint64_t acked_y;

		assert_int_equal(km_proc_repl_new(sid, 4, &y), 0);
		km_proc_repl_tag(y, 4);
		km_proc_repl_wait(y, 1); /* the map lists its replica in sync */
		assert_int_equal(km_proc_repl_start(p, y), 0);
		for (i = 0; i < 1000 && !(km_proc_repl_status(y, &st), st.walked); i++)
			km_proc_repl_step(p);
		repl_feed(p, y, NULL);
		km_proc_repl_ack(y, 3 + KM_PROC_REPL_WINDOW, 1);
		r.req_id = req_id++;
		assert_int_equal(repl_send(e, p, buf[6], &r, buf[6], &msg), KM_PROC_DEFER);
		km_proc_repl_status(x, &st);
		acked_y = st.rseq; /* the write's number */
		km_proc_repl_ack(x, acked_y, 1);
		/* The write waits for y (waited: in sync per the map); y stopped (replaced,
		 * or no longer in the map) blocks nothing. */
		assert_int_equal(km_proc_poll(p, done, 16), 0);
		km_proc_repl_stop(p, y);
		assert_int_equal(km_proc_poll(p, done, 16), 1); /* y gone, nothing blocked */
		km_proc_export_put(y);
		/* A blocked tag: the writes wait; a stream of that replica that starts takes
		 * over (waited: until it acknowledges). */
		assert_int_equal(km_proc_repl_block(p, sid, 4, 1), 0);
		r.req_id = req_id++;
		assert_int_equal(repl_send(e, p, buf[6], &r, buf[6], &msg), KM_PROC_DEFER);
		km_proc_repl_status(x, &st);
		km_proc_repl_ack(x, st.rseq, 1);
		assert_int_equal(km_proc_poll(p, done, 16), 0);
		assert_int_equal(km_proc_repl_new(sid, 4, &y2), 0);
		km_proc_repl_tag(y2, 4);
		km_proc_repl_wait(y2, 1);
		assert_int_equal(km_proc_repl_start(p, y2), 0);
		assert_int_equal(km_proc_poll(p, done, 16), 0); /* y2 has acknowledged nothing */
		km_proc_repl_ack(y2, st.rseq, 1);
		assert_int_equal(km_proc_poll(p, done, 16), 1);
		km_proc_repl_stop(p, y2);
		km_proc_export_put(y2);
	}
	/* Async: replies go at once, the stream still numbers the writes. */
	km_proc_repl_sync(p, 0);
	{
		struct req r = {.op = KM_OP_PUT,
			.key = key,
			.val = "v4",
			.val_len = 2,
			.req_id = req_id++,
			.src = src};

		uint64_t before;

		km_proc_repl_status(x, &st);
		before = st.rseq;
		assert_int_equal(repl_send(e, p, buf[6], &r, NULL, &msg), KM_PROC_REPLY);
		assert_int_equal(msg.hdr.status, KM_ST_OK);
		km_proc_repl_status(x, &st);
		assert_int_equal(st.rseq, before + 1);
		assert_true(st.acked < st.rseq); /* not acknowledged, answered anyway */
	}
	km_proc_repl_sync(p, 1);
	/* A write waiting at the detach is refused BUSY; the stream ends. */
	{
		struct req r = {.op = KM_OP_PUT,
			.key = key,
			.val = "v5",
			.val_len = 2,
			.req_id = req_id++,
			.src = src};
		struct km_proc_dedup *dd = NULL;
		struct km_store *s;

		assert_int_equal(repl_send(e, p, buf[7], &r, buf[7], &msg), KM_PROC_DEFER);
		s = km_proc_shard_detach_dedup(p, sid, NULL, &dd);
		assert_non_null(s);
		assert_int_equal(km_proc_poll(p, done, 16), 1);
		assert_int_equal(km_reply_parse(buf[7], done[0].len, &msg), 0);
		assert_int_equal(msg.hdr.status, KM_ST_BUSY);
		km_proc_repl_status(x, &st);
		assert_true(st.ended);
		assert_int_equal(st.err, -ENOENT);
		assert_false(km_proc_repl_active(p));
		assert_int_equal(km_proc_shard_attach(p, sid, s), 0);
		km_proc_dedup_give(p, sid, dd, 1);
	}
	km_proc_export_put(x);
}

/*
 * A replicated shard detached and attached again on this node (a failed move put back, a
 * move between workers) carries what its replicas owed: a write they had not acknowledged
 * is not answered OK on its retry, nor read by a GET, until a stream of the replica
 * acknowledges it from the new attachment; the lease fence holds from the attachment on.
 */
static void
test_repl_carry(void **state)
{
	struct env *e = *state;
	static uint8_t buf[6][KM_DGRAM_MAX];
	struct km_proc_done done[8];
	struct km_proc_repl_status st;
	struct km_proc_export *x, *y;
	struct km_proc_dedup *dd = NULL;
	uint64_t sid, src = 0x0a000002ULL << 16, sync = UINT64_MAX;
	_Atomic uint64_t lease = UINT64_MAX;
	struct km_proc_rrec w = {0};
	char key[24], other[24];
	struct km_store *s;
	struct km_proc *p;
	struct km_msg msg;
	unsigned int i;
	uint16_t wk;
	struct req put = {.op = KM_OP_PUT, .val = "c1", .val_len = 2, .req_id = 9100000};
	struct req get = {.op = KM_OP_GET, .req_id = 9100001};
	struct req get2 = {.op = KM_OP_GET, .req_id = 9100002};

	key_owned(e->map, 0, "rc-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(e->map, key));
	wk = km_shard_owner(shard_of(e->map, key));
	p = e->proc[wk];
	for (i = 1;; i++) {
		key_owned(e->map, wk, "rc-", i, other, sizeof(other));
		if (km_shard_id(shard_of(e->map, other)) == sid &&
			(km_key_hash((const uint8_t *)other, strlen(other)) & 255) !=
				(km_key_hash((const uint8_t *)key, strlen(key)) & 255))
			break;
	}
	put.key = get.key = key;
	get2.key = other;
	put.src = get.src = get2.src = src;
	km_proc_repl_lease(p, &lease);
	/* A replica in sync (tag 1), caught up. */
	assert_int_equal(km_proc_repl_new(sid, 8, &x), 0);
	km_proc_repl_tag(x, 1);
	km_proc_repl_wait(x, 1);
	assert_int_equal(km_proc_repl_start(p, x), 0);
	for (i = 0; i < 1000 && !(km_proc_repl_status(x, &st), st.walked); i++)
		km_proc_repl_step(p);
	km_proc_repl_step(p);
	repl_drain(x, &sync, &w);
	km_proc_repl_ack(x, sync, 1);

	/* A write the replica has not acknowledged when the shard is detached: BUSY. */
	assert_int_equal(repl_send(e, p, buf[0], &put, buf[0], &msg), KM_PROC_DEFER);
	s = km_proc_shard_detach_dedup(p, sid, NULL, &dd);
	assert_non_null(s);
	assert_non_null(dd);
	assert_int_equal(km_proc_poll(p, done, 8), 1);
	assert_int_equal(km_reply_parse(buf[0], done[0].len, &msg), 0);
	assert_int_equal(msg.hdr.status, KM_ST_BUSY);
	km_proc_export_put(x);

	/* Attached again: its retry and a GET of its key wait, a GET of another key is
	 * answered; the fence holds. */
	assert_int_equal(km_proc_shard_attach(p, sid, s), 0);
	km_proc_dedup_give(p, sid, dd, 1);
	assert_int_equal(repl_send(e, p, buf[1], &put, buf[1], &msg), KM_PROC_DEFER);
	assert_int_equal(repl_send(e, p, buf[2], &get, buf[2], &msg), KM_PROC_DEFER);
	assert_int_equal(repl_send(e, p, buf[3], &get2, buf[3], &msg), KM_PROC_REPLY);
	assert_int_equal(msg.hdr.status, KM_ST_NOT_FOUND);
	assert_int_equal(km_proc_poll(p, done, 8), 0);
	atomic_store(&lease, 0);
	km_proc_time(p, 1);
	get2.req_id++;
	assert_int_equal(repl_send(e, p, buf[3], &get2, buf[3], &msg), KM_PROC_REPLY);
	assert_int_equal(msg.hdr.status, KM_ST_BUSY);
	atomic_store(&lease, UINT64_MAX);

	/* The replica's stream starts from here: once it has the whole shard, they go. */
	assert_int_equal(km_proc_repl_new(sid, 8, &y), 0);
	km_proc_repl_tag(y, 1);
	km_proc_repl_wait(y, 1);
	assert_int_equal(km_proc_repl_start(p, y), 0);
	for (i = 0; i < 1000 && !(km_proc_repl_status(y, &st), st.walked); i++)
		km_proc_repl_step(p);
	km_proc_repl_step(p);
	assert_int_equal(km_proc_poll(p, done, 8), 0);
	sync = 0;
	repl_drain(y, &sync, &w);
	assert_true(sync >= 1);
	km_proc_repl_ack(y, sync, 1);
	assert_int_equal(km_proc_poll(p, done, 8), 2);
	assert_ptr_equal(done[0].cookie, buf[1]);
	assert_int_equal(km_reply_parse(buf[1], done[0].len, &msg), 0);
	assert_int_equal(msg.hdr.status, KM_ST_OK);
	assert_int_equal(km_reply_parse(buf[2], done[1].len, &msg), 0);
	assert_int_equal(msg.hdr.status, KM_ST_OK);
	assert_memory_equal(msg.val, "c1", 2);
	km_proc_repl_stop(p, y);
	km_proc_export_put(y);
	km_proc_repl_lease(p, NULL);
}

/* A stream not waited for that finds no chunk fails; the shard's writes go on. */
static void
test_repl_overrun(void **state)
{
	struct env *e = *state;
	static uint8_t buf[KM_DGRAM_MAX];
	static char val[900];
	struct km_proc_repl_status st;
	struct km_proc_export *x;
	uint64_t sid, req_id = 8000000;
	struct km_msg msg;
	struct km_proc *p;
	char key[24];
	unsigned int i;
	uint16_t wk;

	key_owned(e->map, 1, "ro-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(e->map, key));
	wk = km_shard_owner(shard_of(e->map, key));
	p = e->proc[wk];
	memset(val, 'v', sizeof(val));
	assert_int_equal(km_proc_repl_new(sid, 4, &x), 0);
	assert_int_equal(km_proc_repl_start(p, x), 0);
	for (i = 0; i < 1000 && !(km_proc_repl_status(x, &st), st.walked); i++)
		km_proc_repl_step(p);
	/* Nobody takes the chunks: 4 x 128 KiB fill up. */
	for (i = 0; i < 1000; i++) {
		struct req r = {.op = KM_OP_PUT,
			.key = key,
			.val = val,
			.val_len = sizeof(val),
			.req_id = req_id++,
			.src = 9};

		assert_int_equal(repl_send(e, p, buf, &r, NULL, &msg), KM_PROC_REPLY);
		assert_int_equal(msg.hdr.status, KM_ST_OK);
		km_proc_repl_step(p);
	}
	km_proc_repl_status(x, &st);
	assert_true(st.ended);
	assert_int_equal(st.err, -ENOBUFS);
	assert_false(km_proc_repl_active(p) && 0);
	km_proc_export_put(x);
}

/*
 * Two replicas A and B of a shard; the primary's last write reaches only A (never
 * acknowledged); B is promoted; A is copied again from B: its copy ends equal to B's
 * (the write only it had is gone: its truncation), with B's at-most-once entries. A record
 * cut between two calls is applied once whole; a malformed one is refused.
 */
static void
test_repl_rejoin(void **state)
{
	struct env *e = *state;
	static uint8_t buf[KM_DGRAM_MAX];
	struct km_proc_export *xa, *xb, *xa2;
	struct km_proc_replica *ra, *rb, *ra2;
	struct km_store *sa, *sb, *sa2, *old;
	struct km_proc_dedup *dd;
	uint64_t sid, req_id = 9000000, src = 77;
	char key[24], key2[24], v[64];
	struct km_msg msg;
	struct km_proc *p;
	unsigned int i;
	uint16_t wk;
	int synced_now;

	key_owned(e->map, 0, "rj-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(e->map, key));
	wk = km_shard_owner(shard_of(e->map, key));
	p = e->proc[wk];
	for (i = 1;; i++) {
		key_owned(e->map, wk, "rj-", i, key2, sizeof(key2));
		if (km_shard_id(shard_of(e->map, key2)) == sid)
			break;
	}
	{
		struct req r = {.op = KM_OP_PUT,
			.key = key,
			.val = "a1",
			.val_len = 2,
			.req_id = req_id++,
			.src = src};

		assert_int_equal(repl_send(e, p, buf, &r, NULL, &msg), KM_PROC_REPLY);
	}
	assert_int_equal(km_proc_store_stage(e->proc[1 - wk], sid, 0, KM_TIER_HOT, &sa), 0);
	assert_int_equal(km_proc_store_stage(e->proc[1 - wk], sid, 0, KM_TIER_HOT, &sb), 0);
	assert_int_equal(km_proc_replica_new(sa, 0, &ra), -EINVAL);
	assert_int_equal(km_proc_replica_new(sa, 4, &ra), 0);
	assert_int_equal(km_proc_replica_new(sb, 4, &rb), 0);
	assert_int_equal(km_proc_repl_new(sid, 8, &xa), 0);
	assert_int_equal(km_proc_repl_new(sid, 8, &xb), 0);
	assert_int_equal(km_proc_repl_start(p, xa), 0);
	assert_int_equal(km_proc_repl_start(p, xb), 0);
	for (i = 0; i < 100 && !(km_proc_replica_synced(ra) && km_proc_replica_synced(rb)); i++) {
		repl_feed(p, xa, ra);
		repl_feed(p, xb, rb);
	}
	assert_true(km_proc_replica_synced(ra) && km_proc_replica_synced(rb));
	km_proc_repl_ack(xa, 0, 1);
	km_proc_repl_ack(xb, 0, 1);
	/* Acknowledged by both. */
	{
		struct req r = {.op = KM_OP_PUT,
			.key = key,
			.val = "a2",
			.val_len = 2,
			.req_id = req_id++,
			.src = src};
		struct km_proc_done done[4];

		assert_int_equal(repl_send(e, p, buf, &r, buf, &msg), KM_PROC_DEFER);
		repl_feed(p, xa, ra);
		repl_feed(p, xb, rb);
		assert_int_equal(km_proc_replica_applied(ra), 1);
		assert_int_equal(km_proc_replica_applied(rb), 1);
		km_proc_repl_ack(xa, 1, 1);
		km_proc_repl_ack(xb, 1, 1);
		assert_int_equal(km_proc_poll(p, done, 4), 1);
	}
	/* The last write reaches A only, and is never acknowledged. */
	{
		struct req r = {.op = KM_OP_PUT,
			.key = key2,
			.val = "lost",
			.val_len = 4,
			.req_id = req_id++,
			.src = src};

		assert_int_equal(repl_send(e, p, buf, &r, buf, &msg), KM_PROC_DEFER);
		repl_feed(p, xa, ra);
		repl_feed(p, xb, NULL);
		assert_int_equal(km_proc_replica_applied(ra), 2);
		store_value(sa, key2, v, sizeof(v));
		assert_string_equal(v, "lost");
	}
	/* The primary is gone; B is promoted (here: on the same worker, for the test). */
	old = km_proc_shard_detach_dedup(p, sid, NULL, &dd);
	assert_non_null(old);
	km_store_destroy(old);
	km_proc_dedup_free(dd);
	km_proc_export_put(xa);
	km_proc_export_put(xb);
	dd = km_proc_replica_dedup(rb);
	assert_non_null(dd);
	km_proc_replica_free(rb, 1);
	assert_int_equal(km_proc_shard_attach(p, sid, sb), 0);
	km_proc_dedup_give(p, sid, dd, 0);
	store_value(sb, key, v, sizeof(v));
	assert_string_equal(v, "a2");
	store_value(sb, key2, v, sizeof(v));
	assert_string_equal(v, "");
	/* A retry of the acknowledged write is answered from its first outcome. */
	{
		struct req r = {.op = KM_OP_PUT,
			.key = key,
			.val = "a2",
			.val_len = 2,
			.req_id = req_id - 2,
			.src = src};
		uint64_t retries = km_proc_counters(p)->write_retry;

		assert_int_equal(repl_send(e, p, buf, &r, NULL, &msg), KM_PROC_REPLY);
		assert_int_equal(msg.hdr.status, KM_ST_OK);
		assert_int_equal(km_proc_counters(p)->write_retry, retries + 1);
	}
	/* A rejoins: copied again from B, in pieces cut anywhere. Until the new copy is
	 * complete, A's previous one stands (the caller keeps it). */
	assert_int_equal(km_proc_store_stage(e->proc[1 - wk], sid, 0, KM_TIER_HOT, &sa2), 0);
	assert_int_equal(km_proc_replica_new(sa2, 4, &ra2), 0);
	assert_int_equal(km_proc_repl_new(sid, 8, &xa2), 0);
	assert_int_equal(km_proc_repl_start(p, xa2), 0);
	for (i = 0; i < 100 && !km_proc_replica_synced(ra2); i++) {
		struct km_proc_xchunk *c;

		km_proc_repl_step(p);
		while ((c = km_proc_export_take(xa2)) != NULL) {
			size_t off = 0, cut = c->len / 3 + 1;
			long n;

			n = km_proc_replica_apply(
				ra2, c->data, cut, KM_PROC_XCHUNK_BYTES, &synced_now);
			assert_true(n >= 0 && (size_t)n <= cut);
			off = (size_t)n;
			n = km_proc_replica_apply(ra2, c->data + off, c->len - off,
				KM_PROC_XCHUNK_BYTES, &synced_now);
			assert_int_equal(n, (long)(c->len - off));
			km_proc_export_give(xa2, c);
		}
	}
	assert_true(km_proc_replica_synced(ra2));
	store_value(sa2, key, v, sizeof(v));
	assert_string_equal(v, "a2");
	store_value(sa2, key2, v, sizeof(v));
	assert_string_equal(v, ""); /* the write only A had is gone */
	/* The copy came with B's at-most-once entries (sent after the walk): a retry of the
	 * acknowledged write is answered from them after another failover. */
	dd = km_proc_replica_dedup(ra2);
	assert_non_null(dd);
	{
		uint32_t nd = km_proc_dedup_count(dd), k;
		uint8_t *wire = malloc((size_t)nd * KM_PROC_DEDUP_WIRE);
		int found = 0;

		assert_non_null(wire);
		km_proc_dedup_encode(dd, wire);
		for (k = 0; k < nd; k++)
			found |= km_be_get(wire + (size_t)k * KM_PROC_DEDUP_WIRE, 8) == src &&
				 km_be_get(wire + (size_t)k * KM_PROC_DEDUP_WIRE + 8, 8) ==
					 req_id - 2;
		assert_true(found);
		free(wire);
	}
	km_proc_dedup_free(dd);
	/* Malformed: a record with key length 0 that is not the sync record. */
	{
		uint8_t bad[KM_PROC_XREC_HDR] = {0};

		assert_int_equal(km_proc_replica_apply(
					 ra2, bad, sizeof(bad), KM_PROC_XCHUNK_BYTES, &synced_now),
			-EPROTO);
	}
	km_proc_replica_free(ra, 0);
	km_proc_replica_free(ra2, 0);
	km_proc_export_put(xa2);
}

/*
 * Live export of a shard (a cross-node move's copy): chunks taken while the shard serves
 * writes, deletions and CAS, replayed in order into another store, rebuild the shard as it
 * is at its detach; the last chunk carries its entry count; the at-most-once entries go
 * over the wire format and back. Failures: a consumer that takes nothing (no chunk for a
 * write), a detach before the walk ended, a cancel.
 */
static void
test_export_live(void **state)
{
	struct env *e = *state;
	struct mig_ref *ref = calloc(MIG_KEYS, sizeof(*ref));
	struct km_proc_export *x, *x2;
	struct km_proc_export_status st;
	struct km_proc_dedup *dd = NULL, *dd2;
	struct km_store *dst, *s;
	uint64_t seed = SEED + 7, req_id = 5000000, sid, keys = 0;
	unsigned int i, n = 0, cand, steps = 0;
	int last = 0;
	uint8_t *w1, *w2;
	char key[24];
	struct km_proc *p;
	uint16_t w;

	assert_non_null(ref);
	key_owned(e->map, 1, "xp-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(e->map, key));
	w = km_shard_owner(shard_of(e->map, key));
	p = e->proc[w];
	for (cand = 0; n < MIG_KEYS; cand++) {
		snprintf(key, sizeof(key), "xp-%u", cand);
		if (km_shard_id(shard_of(e->map, key)) != sid)
			continue;
		memcpy(ref[n].key, key, sizeof(key));
		n++;
	}
	for (i = 0; i < n; i++)
		mig_write(e, e->map, ref, n, &seed, req_id++);

	/* Arguments and states. */
	assert_int_equal(km_proc_export_new(0, 8, &x), -EINVAL);
	assert_int_equal(km_proc_export_new(sid, 2, &x), -EINVAL);
	assert_int_equal(km_proc_export_new(sid + 1000003, 8, &x), 0);
	assert_int_equal(km_proc_export_start(p, x), -ENOENT);
	km_proc_export_put(x);
	assert_int_equal(km_proc_export_new(sid, 8, &x), 0);
	assert_int_equal(km_proc_export_start(p, x), 0);
	assert_true(km_proc_export_active(p));
	assert_int_equal(km_proc_export_start(p, x), -EINVAL);
	assert_int_equal(km_proc_export_new(sid, 8, &x2), 0);
	assert_int_equal(km_proc_export_start(p, x2), -EBUSY);
	assert_int_equal(km_proc_mig_start(p, KM_MIG_SPLIT, sid), -EBUSY);
	km_proc_export_put(x2);

	/* The copy, with writes between the steps and the consumer taking chunks. */
	assert_int_equal(km_proc_store_stage(e->proc[1 - w], sid, 0, KM_TIER_HOT, &dst), 0);
	do {
		km_proc_export_step(p);
		mig_write(e, e->map, ref, n, &seed, req_id++);
		mig_write(e, e->map, ref, n, &seed, req_id++);
		if (++steps % 3 == 0)
			export_drain(x, dst, &last, &keys);
		km_proc_export_status(x, &st);
		assert_int_equal(st.err, 0);
		assert_true(steps < 100000);
	} while (!st.walked);
	assert_true(st.entries >= n / 2);
	assert_true(st.writes > 0);
	/* Caught up: more writes, then the detach ends it with the last chunk. */
	for (i = 0; i < 100; i++) {
		mig_write(e, e->map, ref, n, &seed, req_id++);
		km_proc_export_step(p);
		export_drain(x, dst, &last, &keys);
	}
	assert_false(last);
	s = km_proc_shard_detach_dedup(p, sid, NULL, &dd);
	assert_non_null(s);
	assert_false(km_proc_export_active(p));
	km_proc_export_status(x, &st);
	assert_true(st.ended);
	assert_int_equal(st.err, 0);
	export_drain(x, dst, &last, &keys);
	assert_true(last);
	export_check(dst, ref, n);
	for (i = 0, cand = 0; i < n; i++)
		cand += ref[i].present;
	assert_int_equal(keys, cand); /* the shard's entries at its detach */
	km_proc_export_put(x);

	/* The at-most-once entries over the wire and back. */
	assert_non_null(dd);
	w1 = malloc((size_t)km_proc_dedup_count(dd) * KM_PROC_DEDUP_WIRE);
	w2 = malloc((size_t)km_proc_dedup_count(dd) * KM_PROC_DEDUP_WIRE);
	km_proc_dedup_encode(dd, w1);
	dd2 = km_proc_dedup_decode(w1, km_proc_dedup_count(dd));
	assert_int_equal(km_proc_dedup_count(dd2), km_proc_dedup_count(dd));
	km_proc_dedup_encode(dd2, w2);
	assert_memory_equal(w1, w2, (size_t)km_proc_dedup_count(dd) * KM_PROC_DEDUP_WIRE);
	assert_null(km_proc_dedup_decode(w1, 0));
	free(w1);
	free(w2);
	km_proc_dedup_free(dd2);
	assert_int_equal(km_proc_shard_attach(p, sid, s), 0);
	km_proc_dedup_give(p, sid, dd, 1);
	km_store_destroy(dst);

	/* A consumer that takes nothing: the writes find no chunk, the export fails. */
	assert_int_equal(km_proc_export_new(sid, 4, &x), 0);
	assert_int_equal(km_proc_export_start(p, x), 0);
	for (i = 0; i < 200000 && km_proc_export_active(p); i++) {
		km_proc_export_step(p);
		mig_write(e, e->map, ref, n, &seed, req_id++);
	}
	km_proc_export_status(x, &st);
	assert_true(st.ended);
	assert_int_equal(st.err, -ENOBUFS);
	km_proc_export_put(x);
	/* A detach before the walk ended, and a cancel: no last chunk, an error. */
	assert_int_equal(km_proc_export_new(sid, 8, &x), 0);
	assert_int_equal(km_proc_export_start(p, x), 0);
	s = km_proc_shard_detach_dedup(p, sid, NULL, &dd);
	km_proc_export_status(x, &st);
	assert_int_equal(st.err, -ECANCELED);
	assert_int_equal(km_proc_shard_attach(p, sid, s), 0);
	km_proc_dedup_give(p, sid, dd, 1);
	km_proc_export_put(x);
	assert_int_equal(km_proc_export_new(sid, 8, &x), 0);
	assert_int_equal(km_proc_export_start(p, x), 0);
	km_proc_export_step(p);
	km_proc_export_cancel(p);
	assert_false(km_proc_export_active(p));
	km_proc_export_status(x, &st);
	assert_int_equal(st.err, -ECANCELED);
	km_proc_export_put(x);
	mig_check_all(e, e->map, ref, n);
	free(ref);
}

/* A write retried after its shard moved is answered from its first outcome (the entries
 * travel with the shard), not applied again. */
static void
test_dedup_moves(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0;
	struct km_proc_dedup *dd;
	struct km_shardmap *m2;
	struct km_store *s;
	struct rep rep;
	char key[32], other[32];
	uint64_t sid, v;
	struct req r;

	key_owned(e->map, 0, "dd-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(e->map, key));
	/* A key of another shard of worker 0: its entry stays. */
	for (unsigned int i = 0;; i++) {
		key_owned(e->map, 0, "dd-", i, other, sizeof(other));
		if (km_shard_id(shard_of(e->map, other)) != sid)
			break;
	}
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "a", .val_len = 1, .req_id = 4242, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	v = rep.msg.hdr.version;
	r = (struct req){
		.op = KM_OP_PUT, .key = other, .val = "b", .val_len = 1, .req_id = 4343, .src = 7};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);

	s = km_proc_shard_detach(e->proc[0], sid, NULL);
	assert_non_null(s);
	dd = km_proc_dedup_take(e->proc[0], sid);
	assert_non_null(dd);
	assert_null(km_proc_dedup_take(e->proc[0], sid)); /* taken: none left */
	assert_int_equal(km_proc_shard_attach(e->proc[1], sid, s), 0);
	km_proc_dedup_give(e->proc[1], sid, dd, 1);
	assert_int_equal(km_shardmap_move(e->map, sid, 1, &m2), 0);

	c0 = cnt_sum(e);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "a", .val_len = 1, .req_id = 4242, .src = 7};
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	assert_int_equal(rep.msg.hdr.version, v);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 1);
	/* The other shard's entry stayed with worker 0. */
	r = (struct req){
		.op = KM_OP_PUT, .key = other, .val = "b", .val_len = 1, .req_id = 4343, .src = 7};
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 2);
	km_proc_dedup_free(NULL);
	km_shardmap_free(e->map);
	e->map = m2;
}

/*
 * A move as keymapd makes it (KM_WCMD_MOVE): the entries of the shard taken through its own
 * index before the detach, more of them than the index holds at first (compactions), the
 * old owner handing the shard's requests to the new one before the map says so, the new
 * one executing them: a retried write is answered from its first outcome on both sides of
 * the publication, and another shard's entries stay where they were.
 */
#define DD_WRITES 200

static void
test_dedup_index_forward(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0;
	struct km_proc_dedup *dd;
	struct km_shardmap *m2;
	struct km_store *s;
	struct rep rep;
	char key[32], other[32];
	uint64_t sid, v[DD_WRITES];
	struct req r;
	unsigned int i;

	key_owned(e->map, 0, "dx-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(e->map, key));
	for (i = 0;; i++) {
		key_owned(e->map, 0, "dx-", i, other, sizeof(other));
		if (km_shard_id(shard_of(e->map, other)) != sid)
			break;
	}
	/* Writes to the shard, each key written twice (the index lists a slot per write). */
	for (i = 0; i < DD_WRITES; i++) {
		r = (struct req){.op = KM_OP_PUT,
			.key = key,
			.val = "a",
			.val_len = 1,
			.req_id = 10000 + i,
			.src = 9};
		assert_int_equal(call(e, &r, &rep), KM_ST_OK);
		v[i] = rep.msg.hdr.version;
	}
	r = (struct req){
		.op = KM_OP_PUT, .key = other, .val = "b", .val_len = 1, .req_id = 4343, .src = 9};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);

	/* The move's first half, on worker 0: entries, detach, requests follow the store. */
	assert_int_equal(km_shardmap_move(e->map, sid, 1, &m2), 0);
	dd = km_proc_dedup_take(e->proc[0], sid);
	assert_non_null(dd);
	assert_int_equal(km_proc_dedup_count(dd), DD_WRITES);
	s = km_proc_shard_detach(e->proc[0], sid, NULL);
	assert_non_null(s);
	assert_null(km_proc_dedup_take(e->proc[0], sid)); /* taken: none left */
	km_proc_shard_forward(e->proc[0], sid, 1, km_shardmap_epoch(m2));
	/* Second half, on worker 1. */
	assert_int_equal(km_proc_shard_attach(e->proc[1], sid, s), 0);
	km_proc_dedup_give(e->proc[1], sid, dd, 1);

	/* The old map still says worker 0: handed to 1, executed there, no BUSY. */
	c0 = cnt_sum(e);
	for (i = 0; i < DD_WRITES; i++) {
		r = (struct req){.op = KM_OP_PUT,
			.key = key,
			.val = "a",
			.val_len = 1,
			.req_id = 10000 + i,
			.src = 9};
		assert_int_equal(call(e, &r, &rep), KM_ST_OK);
		assert_int_equal(rep.worker, 1);
		assert_int_equal(rep.msg.hdr.version, v[i]);
	}
	assert_int_equal(CNT_DELTA(e, c0, write_retry), DD_WRITES);
	assert_int_equal(CNT_DELTA(e, c0, handover_forwarded), DD_WRITES);
	assert_int_equal(CNT_DELTA(e, c0, busy_handover), 0);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 1, .src = 9};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	assert_int_equal(rep.worker, 1);
	/* A new write goes through too, once. */
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "c", .val_len = 1, .req_id = 777, .src = 9};
	assert_int_equal(call(e, &r, &rep), KM_ST_OK);
	v[0] = rep.msg.hdr.version;

	/* The new map published: straight to worker 1, still from the table. */
	c0 = cnt_sum(e);
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	assert_int_equal(rep.worker, 1);
	assert_int_equal(rep.msg.hdr.version, v[0]);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 1);
	assert_int_equal(CNT_DELTA(e, c0, handover_forwarded), 0);
	/* The other shard's entry stayed with worker 0. */
	r = (struct req){
		.op = KM_OP_PUT, .key = other, .val = "b", .val_len = 1, .req_id = 4343, .src = 9};
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	assert_int_equal(rep.worker, 0);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 2);
	km_shardmap_free(e->map);
	e->map = m2;

	/* Back to worker 0 the same way: the entries travel back, the forward ends. */
	assert_int_equal(km_shardmap_move(e->map, sid, 0, &m2), 0);
	dd = km_proc_dedup_take(e->proc[1], sid);
	assert_int_equal(km_proc_dedup_count(dd), DD_WRITES + 1);
	s = km_proc_shard_detach(e->proc[1], sid, NULL);
	assert_int_equal(km_proc_shard_attach(e->proc[0], sid, s), 0);
	km_proc_dedup_give(e->proc[0], sid, dd, 1);
	c0 = cnt_sum(e);
	r = (struct req){
		.op = KM_OP_PUT, .key = key, .val = "c", .val_len = 1, .req_id = 777, .src = 9};
	assert_int_equal(call_map(e, m2, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	assert_int_equal(rep.worker, 0);
	assert_int_equal(rep.msg.hdr.version, v[0]);
	assert_int_equal(CNT_DELTA(e, c0, write_retry), 1);
	km_shardmap_free(e->map);
	e->map = m2;
}

/* Worker 0 and a twin of it, both with a table of 1024 at-most-once entries. */
static struct km_proc *
dedup_twins(struct env *e)
{
	struct km_proc_params pp = {.worker = 0,
		.value_max = VALUE_MAX,
		.store_driver = "mem",
		.version_base = 1,
		.dedup_entries = 1024};
	struct km_proc *twin;
	unsigned int i;

	km_proc_destroy(e->proc[0]);
	assert_int_equal(km_proc_create(&pp, &e->proc[0]), 0);
	assert_int_equal(km_proc_create(&pp, &twin), 0);
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		const struct km_shard *sh = km_shardmap_shard_at(e->map, i);

		if (km_shard_owner(sh) != 0)
			continue;
		assert_int_equal(km_proc_shard_add(e->proc[0], km_shard_id(sh)), 0);
		assert_int_equal(km_proc_shard_add(twin, km_shard_id(sh)), 0);
	}
	return twin;
}

/* n random writes of the keys of worker 0, executed by worker 0 and by its twin alike;
 * every shard's index stays within its bound meanwhile. */
static void
dedup_writes(struct env *e, struct km_proc *twin, const struct km_shardmap *m, unsigned int n,
	uint64_t *seed, uint64_t *req_id)
{
	struct km_proc *procs[NB_WORKERS] = {twin, e->proc[1]};
	struct km_shard_info info[4 * NB_SHARDS];
	struct km_proc_req pr;
	struct rep rep;
	char key[32];
	unsigned int i, j, k;

	for (i = 0; i < n; i++) {
		struct req r = {.op = KM_OP_PUT,
			.key = key,
			.val = "x",
			.val_len = 1,
			.req_id = ++*req_id,
			.src = 1 + rnd_next(seed) % 4};
		size_t len;

		key_owned(m, 0, "ix-", (unsigned int)(rnd_next(seed) % 64), key, sizeof(key));
		assert_int_equal(call_map(e, m, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
		len = req_build(rep.buf, sizeof(rep.buf), &r, km_shardmap_epoch(m));
		assert_int_equal(
			rx_call(procs, m, rep.buf, len, sizeof(rep.buf), -1, r.src, &pr), 0);
		if (i % 251 != 0)
			continue;
		k = km_proc_shard_infos(e->proc[0], info, 4 * NB_SHARDS);
		for (j = 0; j < k; j++)
			assert_true(info[j].dedup_listed <= 3 * 1024 + 64);
	}
}

/* Split (or merge) shard sid on worker 0 and on its twin alike, with writes through m
 * between the steps (listed in the sources' indexes while they are copied). */
static void
dedup_mig(struct env *e, struct km_proc *twin, const struct km_shardmap *m, int split, uint64_t sid,
	uint64_t *seed, uint64_t *req_id)
{
	struct km_proc *pp[2] = {e->proc[0], twin};
	struct km_store *old[2] = {NULL, NULL};
	struct km_mig_progress pg;
	uint64_t keys;
	unsigned int i, k;

	for (k = 0; k < 2; k++)
		assert_int_equal(
			km_proc_mig_start(pp[k], split ? KM_MIG_SPLIT : KM_MIG_MERGE, sid), 0);
	for (i = 0; i < 100000; i++) {
		km_proc_mig_progress(e->proc[0], &pg);
		if (pg.phase != KM_MIG_COPYING)
			break;
		for (k = 0; k < 2; k++)
			km_proc_mig_step(pp[k], m);
		dedup_writes(e, twin, m, 3, seed, req_id);
	}
	dedup_writes(e, twin, m, 20, seed, req_id); /* listed after the last step */
	for (k = 0; k < 2; k++) {
		assert_int_equal(km_proc_mig_finish(pp[k], old, &keys), 0);
		km_store_destroy(old[0]);
		if (old[1] != NULL)
			km_store_destroy(old[1]);
	}
}

/* The entries of shard id that a take through worker 0's index finds, and those a walk of
 * the twin's whole table finds (its shard detached meanwhile): the same count. Both
 * given back. */
static void
dedup_compare(struct env *e, struct km_proc *twin, uint64_t id)
{
	struct km_proc_dedup *a = km_proc_dedup_take(e->proc[0], id);
	struct km_store *s = km_proc_shard_detach(twin, id, NULL);
	struct km_proc_dedup *b;

	assert_non_null(s);
	b = km_proc_dedup_take(twin, id);
	print_message("dedup index: %u entries of shard %" PRIu64 " taken, %u in the table\n",
		km_proc_dedup_count(a), id, km_proc_dedup_count(b));
	assert_true(km_proc_dedup_count(b) > 20);
	assert_int_equal(km_proc_dedup_count(a), km_proc_dedup_count(b));
	assert_int_equal(km_proc_shard_attach(twin, id, s), 0);
	km_proc_dedup_give(e->proc[0], id, a, 1);
	km_proc_dedup_give(twin, id, b, 1);
}

/* Split and merge a shard again and again with no write between: its index keeps one
 * listing per entry (a half that gets no write keeps no listing of its sibling's). */
static void
test_dedup_index_cycles(void **state)
{
	struct env *e = *state;
	struct km_shard_info info[4 * NB_SHARDS];
	struct km_store *old[2] = {NULL, NULL};
	struct km_mig_progress pg;
	struct km_proc_dedup *dd;
	uint64_t sid, req_id = 1, seed = SEED, keys, listed = 0;
	unsigned int i, c, kind, n;
	struct rep rep;
	char key[32];

	key_owned(e->map, 0, "g-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(e->map, key));
	for (i = 0; i < 1000; i++) {
		struct req r = {.op = KM_OP_PUT,
			.key = key,
			.val = "x",
			.val_len = 1,
			.req_id = ++req_id,
			.src = 1 + rnd_next(&seed) % 100000};

		do
			snprintf(key, sizeof(key), "d-%u",
				(unsigned int)(rnd_next(&seed) % 1000000));
		while (km_shard_id(shard_of(e->map, key)) != sid);
		assert_int_equal(call_map(e, e->map, &r, &rep, KM_DGRAM_MAX), KM_ST_OK);
	}
	for (c = 0; c < 8; c++)
		for (kind = 0; kind < 2; kind++) {
			assert_int_equal(km_proc_mig_start(e->proc[0],
						 kind == 0 ? KM_MIG_SPLIT : KM_MIG_MERGE, sid),
				0);
			do {
				km_proc_mig_step(e->proc[0], e->map);
				km_proc_mig_progress(e->proc[0], &pg);
			} while (pg.phase == KM_MIG_COPYING);
			assert_int_equal(km_proc_mig_finish(e->proc[0], old, &keys), 0);
			km_store_destroy(old[0]);
			if (old[1] != NULL)
				km_store_destroy(old[1]);
			old[0] = old[1] = NULL;
		}
	n = km_proc_shard_infos(e->proc[0], info, 4 * NB_SHARDS);
	for (i = 0; i < n; i++)
		if (info[i].id == sid)
			listed = info[i].dedup_listed;
	dd = km_proc_dedup_take(e->proc[0], sid);
	print_message("dedup index after 8 splits and merges: %" PRIu64 " listings, %u entries\n",
		listed, km_proc_dedup_count(dd));
	assert_true(km_proc_dedup_count(dd) > 500);
	assert_true(listed <= km_proc_dedup_count(dd) + 64);
	km_proc_dedup_free(dd);
}

/*
 * The index of a shard's at-most-once entries, under many writes that take over each
 * other's slots (a small table), compacted a few positions per write: it stays bounded,
 * and a take through it finds exactly the entries a walk of the whole table finds (the
 * twin's, detached first), after a split and a merge copied while written to.
 */
static void
test_dedup_index_compaction(void **state)
{
	struct env *e = *state;
	struct km_proc *twin = dedup_twins(e);
	struct km_shardmap *m2, *m3;
	struct km_proc_dedup *a;
	struct km_shard_info info[4 * NB_SHARDS];
	uint64_t seed = SEED, req_id = 0, sid;
	char key[32];
	unsigned int k, j;

	key_owned(e->map, 0, "ix-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(e->map, key));
	dedup_writes(e, twin, e->map, 20000, &seed, &req_id);
	/* Split: each half starts with its parent's index, sheds the other half's entries. */
	dedup_mig(e, twin, e->map, 1, sid, &seed, &req_id);
	dedup_compare(e, twin, sid * 2);
	dedup_compare(e, twin, sid * 2 + 1);
	m2 = mig_map(e->map, 1, sid, 0);
	dedup_writes(e, twin, m2, 5000, &seed, &req_id);
	/* Merge: the halves' indexes, concatenated. */
	dedup_mig(e, twin, m2, 0, sid, &seed, &req_id);
	dedup_compare(e, twin, sid);
	m3 = mig_map(m2, 0, sid, 0);
	dedup_writes(e, twin, m3, 3000, &seed, &req_id);

	dedup_compare(e, twin, sid);
	a = km_proc_dedup_take(e->proc[0], sid);
	assert_non_null(a);
	k = km_proc_shard_infos(e->proc[0], info, 4 * NB_SHARDS);
	for (j = 0; j < k; j++)
		if (info[j].id == sid)
			assert_int_equal(info[j].dedup_listed, 0);
	km_proc_dedup_free(a);
	km_proc_destroy(twin);
	km_shardmap_free(e->map);
	km_shardmap_free(m2);
	e->map = m3;
}

/* A request for a shard detached without a forward (a move in progress the old way, or
 * one that failed) is answered BUSY, and a handed request for a shard the receiving
 * worker does not hold too. */
static void
test_forward_none(void **state)
{
	struct env *e = *state;
	struct km_proc_counters c0;
	struct km_store *s;
	struct rep rep;
	char key[32];
	uint64_t sid;
	struct req r;

	key_owned(e->map, 0, "fn-", 0, key, sizeof(key));
	sid = km_shard_id(shard_of(e->map, key));
	s = km_proc_shard_detach(e->proc[0], sid, NULL);
	assert_non_null(s);
	c0 = cnt_sum(e);
	r = (struct req){.op = KM_OP_GET, .key = key, .req_id = 1, .src = 9};
	assert_int_equal(call(e, &r, &rep), KM_ST_BUSY);
	/* Forwarded to a worker that does not hold it (its attach failed): BUSY there. */
	km_proc_shard_forward(e->proc[0], sid, 1, km_shardmap_epoch(e->map) + 1);
	assert_int_equal(call(e, &r, &rep), KM_ST_BUSY);
	assert_int_equal(rep.worker, 1);
	assert_int_equal(CNT_DELTA(e, c0, handover_forwarded), 1);
	/* Given back: served again, the forward gone. */
	assert_int_equal(km_proc_shard_attach(e->proc[0], sid, s), 0);
	c0 = cnt_sum(e);
	assert_int_not_equal(call(e, &r, &rep), KM_ST_BUSY);
	assert_int_equal(rep.worker, 0);
	assert_int_equal(CNT_DELTA(e, c0, handover_forwarded), 0);
}

/* ---- Hot-key replication (proc_crew.c) ---- */

#define CREW_VALUE_MAX 16

/* One datagram sent by an up-to-date client to worker `port`, run through that worker
 * only (no hand-off followed): the verdict and the reply in *pr, parsed in *rep. */
static void
crew_rx(struct env *e, unsigned int port, const struct req *r, uint8_t *buf, size_t cap,
	struct km_proc_req *pr, struct km_msg *rep)
{
	size_t len = req_build(buf, cap, r, km_shardmap_epoch(e->map));

	*pr = (struct km_proc_req){
		.buf = buf, .len = len, .cap = cap, .src = r->src, .port_worker = (int16_t)port};
	km_proc_rx(e->proc[port], e->map, pr);
	if (pr->verdict == KM_PROC_REPLY)
		assert_int_equal(km_reply_parse(buf, pr->reply_len, rep), 0);
}

static struct km_crew *
crew_setup(struct env *e)
{
	struct km_crew_params cp = {
		.nb_workers = NB_WORKERS, .keys_max = 4, .value_max = CREW_VALUE_MAX};
	struct km_crew *c;
	unsigned int w;

	assert_int_equal(km_crew_create(&cp, &c), 0);
	for (w = 0; w < NB_WORKERS; w++)
		assert_int_equal(km_proc_set_crew(e->proc[w], c), 0);
	return c;
}

static void
crew_teardown(struct env *e, struct km_crew *c)
{
	unsigned int w;

	for (w = 0; w < NB_WORKERS; w++)
		km_proc_set_crew(e->proc[w], NULL);
	km_crew_destroy(c);
}

static void
test_crew(void **state)
{
	struct env *e = *state;
	struct km_crew_params bad = {.nb_workers = NB_WORKERS, .keys_max = 0, .value_max = 8};
	struct km_crew *c, *x;
	struct km_crew_info info[8];
	struct km_proc_note note;
	struct km_proc_req pr;
	struct km_msg rep;
	struct rep out;
	uint8_t buf[KM_DGRAM_MAX], body[64];
	char key[32], other[32], big[CREW_VALUE_MAX + 1];
	uint64_t v2;
	size_t kl;

	assert_int_equal(km_crew_create(&bad, &x), -EINVAL);
	bad.keys_max = KM_CREW_KEYS_MAX + 1;
	assert_int_equal(km_crew_create(&bad, &x), -EINVAL);
	c = crew_setup(e);
	key_owned(e->map, 0, "hot", 0, key, sizeof(key));
	key_owned(e->map, 1, "cold", 0, other, sizeof(other));
	assert_int_equal(call(e,
				 &(struct req){.op = KM_OP_PUT,
					 .key = key,
					 .val = "v1",
					 .val_len = 2,
					 .req_id = 1,
					 .src = 9},
				 &out),
		KM_ST_OK);

	/* Only the owner makes copies, of keys that exist, with values that fit. */
	assert_int_equal(
		km_proc_crew_add(e->proc[1], e->map, (const uint8_t *)key, strlen(key)), -EXDEV);
	key_owned(e->map, 0, "absent", 0, big, sizeof(big));
	assert_int_equal(
		km_proc_crew_add(e->proc[0], e->map, (const uint8_t *)big, strlen(big)), -ENOENT);
	assert_int_equal(
		km_proc_crew_add(e->proc[0], e->map, (const uint8_t *)key, strlen(key)), 1);
	assert_int_equal(
		km_proc_crew_add(e->proc[0], e->map, (const uint8_t *)key, strlen(key)), 0);
	assert_int_equal(km_crew_list(c, info, 8), 1);
	assert_int_equal(info[0].owner, 0);
	assert_memory_equal(info[0].key, key, strlen(key));

	/* The other worker serves it from the copy, flagged; so does the owner's reply. */
	crew_rx(e, 1, &(struct req){.op = KM_OP_GET, .key = key, .req_id = 2}, buf, sizeof(buf),
		&pr, &rep);
	assert_int_equal(pr.verdict, KM_PROC_REPLY);
	assert_int_equal(rep.hdr.status, KM_ST_OK);
	assert_true((rep.hdr.flags & KM_F_CREW) != 0);
	assert_int_equal(rep.hdr.val_len, 2);
	assert_memory_equal(rep.val, "v1", 2);
	assert_int_equal(km_proc_counters(e->proc[1])->crew_reads, 1);
	crew_rx(e, 0, &(struct req){.op = KM_OP_GET, .key = key, .req_id = 3}, buf, sizeof(buf),
		&pr, &rep);
	assert_true((rep.hdr.flags & KM_F_CREW) != 0);
	crew_rx(e, 1, &(struct req){.op = KM_OP_GET, .key = other, .req_id = 4}, buf, sizeof(buf),
		&pr, &rep);
	assert_int_equal(rep.hdr.status, KM_ST_NOT_FOUND);
	assert_true((rep.hdr.flags & KM_F_CREW) == 0);

	/* A GET the client sent to worker 0's port that reached worker 1 goes to worker 0. */
	{
		size_t len = req_build(buf, sizeof(buf),
			&(struct req){.op = KM_OP_GET, .key = key, .req_id = 5},
			km_shardmap_epoch(e->map));

		pr = (struct km_proc_req){
			.buf = buf, .len = len, .cap = sizeof(buf), .port_worker = 0};
		km_proc_rx(e->proc[1], e->map, &pr);
		assert_int_equal(pr.verdict, KM_PROC_HANDOFF);
		assert_int_equal(pr.owner, 0);
	}

	/* A write replaces the copy before its reply: the next read anywhere sees it. */
	assert_int_equal(call(e,
				 &(struct req){.op = KM_OP_PUT,
					 .key = key,
					 .val = "v2",
					 .val_len = 2,
					 .req_id = 6,
					 .src = 9},
				 &out),
		KM_ST_OK);
	v2 = out.msg.hdr.version;
	assert_int_equal(km_proc_counters(e->proc[0])->crew_updates, 1);
	crew_rx(e, 1, &(struct req){.op = KM_OP_GET, .key = key, .req_id = 7}, buf, sizeof(buf),
		&pr, &rep);
	assert_int_equal(pr.verdict, KM_PROC_REPLY);
	assert_memory_equal(rep.val, "v2", 2);
	assert_int_equal(rep.hdr.version, v2);

	/* An MGET entry of the key at the other worker comes from the copy, not MOVED. */
	kl = strlen(key);
	km_put16(body, 1);
	body[2] = (uint8_t)kl;
	memcpy(body + 3, key, kl);
	crew_rx(e, 1,
		&(struct req){
			.op = KM_OP_MGET, .val = body, .val_len = (uint32_t)(3 + kl), .req_id = 8},
		buf, sizeof(buf), &pr, &rep);
	assert_int_equal(
		pr.verdict, KM_PROC_HANDOFF); /* an MGET belongs to its first key's owner */
	pr.handed = 1;
	pr.verdict = 0;
	km_proc_rx(e->proc[0], e->map, &pr);
	assert_int_equal(pr.verdict, KM_PROC_REPLY);

	/* Sampling: a served copy read becomes a note naming the owner. */
	km_proc_crew_sampling(e->proc[1], 1);
	crew_rx(e, 1, &(struct req){.op = KM_OP_GET, .key = key, .req_id = 9}, buf, sizeof(buf),
		&pr, &rep);
	assert_int_equal(km_proc_notes(e->proc[1], &note, 1), 1);
	assert_int_equal(note.type, KM_PROC_NOTE_CREW);
	assert_int_equal(note.op, KM_OP_GET);
	assert_int_equal(note.owner, 0);
	assert_int_equal(note.key_len, strlen(key));
	assert_memory_equal(note.key, key, strlen(key));
	km_proc_crew_sampling(e->proc[1], 0);

	/* A value over value_max withdraws the copy: the read goes to the owner, unflagged. */
	memset(big, 'b', sizeof(big));
	assert_int_equal(call(e,
				 &(struct req){.op = KM_OP_PUT,
					 .key = key,
					 .val = big,
					 .val_len = sizeof(big),
					 .req_id = 10,
					 .src = 9},
				 &out),
		KM_ST_OK);
	assert_int_equal(km_crew_list(c, info, 8), 0);
	assert_int_equal(km_proc_counters(e->proc[0])->crew_withdrawn, 1);
	crew_rx(e, 1, &(struct req){.op = KM_OP_GET, .key = key, .req_id = 11}, buf, sizeof(buf),
		&pr, &rep);
	assert_int_equal(pr.verdict, KM_PROC_HANDOFF);
	assert_int_equal(
		km_proc_crew_add(e->proc[0], e->map, (const uint8_t *)key, strlen(key)), -E2BIG);

	/* DEL withdraws it; so do a detach of its shard, a remove and a withdraw-all. */
	assert_int_equal(call(e,
				 &(struct req){.op = KM_OP_PUT,
					 .key = key,
					 .val = "v3",
					 .val_len = 2,
					 .req_id = 12,
					 .src = 9},
				 &out),
		KM_ST_OK);
	assert_int_equal(
		km_proc_crew_add(e->proc[0], e->map, (const uint8_t *)key, strlen(key)), 1);
	assert_int_equal(
		call(e, &(struct req){.op = KM_OP_DEL, .key = key, .req_id = 13, .src = 9}, &out),
		KM_ST_OK);
	assert_int_equal(km_crew_list(c, info, 8), 0);
	assert_int_equal(call(e, &(struct req){.op = KM_OP_GET, .key = key, .req_id = 14}, &out),
		KM_ST_NOT_FOUND);
	assert_int_equal(call(e,
				 &(struct req){.op = KM_OP_PUT,
					 .key = key,
					 .val = "v4",
					 .val_len = 2,
					 .req_id = 15,
					 .src = 9},
				 &out),
		KM_ST_OK);
	assert_int_equal(
		km_proc_crew_add(e->proc[0], e->map, (const uint8_t *)key, strlen(key)), 1);
	{
		uint64_t id = km_shard_id(shard_of(e->map, key));
		struct km_store *st = km_proc_shard_detach(e->proc[0], id, NULL);

		assert_non_null(st);
		assert_int_equal(km_crew_list(c, info, 8), 0);
		assert_int_equal(km_proc_shard_attach(e->proc[0], id, st), 0);
	}
	assert_int_equal(
		km_proc_crew_add(e->proc[0], e->map, (const uint8_t *)key, strlen(key)), 1);
	assert_int_equal(km_proc_crew_remove(e->proc[0], (const uint8_t *)key, strlen(key)), 1);
	assert_int_equal(km_proc_crew_remove(e->proc[0], (const uint8_t *)key, strlen(key)), 0);
	assert_int_equal(
		km_proc_crew_add(e->proc[0], e->map, (const uint8_t *)key, strlen(key)), 1);
	assert_int_equal(km_proc_crew_withdraw(e->proc[0], 0), 1);
	assert_int_equal(km_crew_list(c, info, 8), 0);
	/* A copy made before a split carries the parent's id: a detach of either child, or of
	 * an ancestor, withdraws it; another shard's does not. */
	{
		uint64_t id = km_shard_id(shard_of(e->map, key)), other = id ^ 1;
		uint64_t ids[] = {2 * id, 2 * id + 1, id >> 1};
		unsigned int i, n = km_shard_depth(id) > 0 ? 3 : 2;

		assert_true(km_shard_depth(id) > 0); /* the env has several shards */

		for (i = 0; i < n; i++) {
			assert_int_equal(km_proc_crew_add(e->proc[0], e->map, (const uint8_t *)key,
						 strlen(key)),
				1);
			if (km_shard_depth(id) > 0) {
				assert_int_equal(km_proc_crew_withdraw(e->proc[0], other), 0);
				assert_int_equal(
					km_proc_crew_withdraw(e->proc[0], 4 * other + 1), 0);
			}
			assert_int_equal(km_proc_crew_withdraw(e->proc[0], ids[i]), 1);
			assert_int_equal(km_crew_list(c, info, 8), 0);
		}
	}
	crew_teardown(e, c);
}

/* The owner rewrites a copy while the other worker reads it: every value read is whole
 * (one writer's bytes, never a mix) and never older than the one read before. */
struct crew_race {
	struct env *e;
	const char *key;
	volatile int stop;
	uint64_t writes;
};

static void *
crew_writer(void *arg)
{
	struct crew_race *r = arg;
	struct km_proc_req pr;
	struct km_msg rep;
	uint8_t buf[KM_DGRAM_MAX], v[CREW_VALUE_MAX];
	uint64_t n;

	for (n = 1; !r->stop && n < 300000; n++) {
		memset(v, (int)(n & 0xff), sizeof(v));
		km_put64(v, n);
		crew_rx(r->e, 0,
			&(struct req){.op = KM_OP_PUT,
				.key = r->key,
				.val = v,
				.val_len = sizeof(v),
				.req_id = n,
				.src = 7},
			buf, sizeof(buf), &pr, &rep);
		if (pr.verdict != KM_PROC_REPLY || rep.hdr.status != KM_ST_OK)
			break;
		r->writes = n;
	}
	r->stop = 1;
	return NULL;
}

static void
test_crew_race(void **state)
{
	struct env *e = *state;
	struct crew_race r = {.e = e};
	struct km_crew *c = crew_setup(e);
	struct km_proc_req pr;
	struct km_msg rep;
	uint8_t buf[KM_DGRAM_MAX], v[CREW_VALUE_MAX];
	char key[32];
	uint64_t last = 0, got, reads = 0, i;
	pthread_t th;

	key_owned(e->map, 0, "race", 0, key, sizeof(key));
	r.key = key;
	memset(v, 0, sizeof(v));
	assert_int_equal(call(e,
				 &(struct req){.op = KM_OP_PUT,
					 .key = key,
					 .val = v,
					 .val_len = sizeof(v),
					 .req_id = 1,
					 .src = 8},
				 &(struct rep){0}),
		KM_ST_OK);
	assert_int_equal(
		km_proc_crew_add(e->proc[0], e->map, (const uint8_t *)key, strlen(key)), 1);
	assert_int_equal(pthread_create(&th, NULL, crew_writer, &r), 0);
	for (i = 0; i < 1000000 && !r.stop; i++) {
		crew_rx(e, 1, &(struct req){.op = KM_OP_GET, .key = key, .req_id = i + 1}, buf,
			sizeof(buf), &pr, &rep);
		if (pr.verdict == KM_PROC_HANDOFF)
			continue; /* gave up on an entry that kept changing: the owner's turn */
		assert_int_equal(pr.verdict, KM_PROC_REPLY);
		assert_int_equal(rep.hdr.status, KM_ST_OK);
		assert_int_equal(rep.hdr.val_len, CREW_VALUE_MAX);
		got = km_get64(rep.val);
		for (size_t b = 8; b < CREW_VALUE_MAX; b++)
			assert_int_equal(rep.val[b], (uint8_t)(got & 0xff));
		assert_true(got >= last);
		last = got;
		reads++;
	}
	r.stop = 1;
	pthread_join(th, NULL);
	print_message("crew race: %" PRIu64 " reads of %" PRIu64 " writes, %" PRIu64
		      " retries, %" PRIu64 " fallbacks\n",
		reads, r.writes, km_proc_counters(e->proc[1])->crew_retries,
		km_proc_counters(e->proc[1])->crew_fallbacks);
	assert_true(reads > 0 && r.writes > 0);
	crew_teardown(e, c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create, env_setup, env_teardown),
		cmocka_unit_test(test_grow),
		cmocka_unit_test_setup_teardown(test_target, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_get_put_cas_del, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_at_most_once, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_dram_bound, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_mget, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_scan, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_map, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_ping_status_counters, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_busy_after_move, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_model, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_burst_differential, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_burst_empty, env_setup, env_teardown),
		cmocka_unit_test(test_attach_detach),
		cmocka_unit_test_setup_teardown(test_busy_handover, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_overload, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_shard_requests, env_setup, env_teardown),
		cmocka_unit_test(test_reshard_split),
		cmocka_unit_test_setup_teardown(
			test_incremental_split_merge, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_export_live, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_repl_window, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_repl_overrun, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_repl_rejoin, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_repl_carry, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_dedup_moves, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_dedup_index_forward, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(
			test_dedup_index_compaction, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_dedup_index_cycles, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_forward_none, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_reshard_merge, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_crew, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_crew_race, env_setup, env_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
