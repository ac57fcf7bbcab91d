/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The log store through the request processor, as a worker drives it: deferred replies
 * (sync group commit, disk reads), coalesced misses, the pending bound, restarts, the
 * cold tier, damaged logs, and recovery of a data directory after a crash in the middle
 * of a split. Files live in a temporary directory; no EAL.
 */

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <km_proc.h>
#include <km_record.h>
#include <km_util.h>

#define NB_SHARDS 4
#define VALUE_MAX 1024
#define BURST     32

struct env {
	char dir[64];
	char cold[96];
	struct km_shardmap *map;
	struct km_proc *p;
	uint8_t durability;
	uint32_t pending_max;
	uint64_t cache_bytes;
	uint32_t sync_interval_ms;
	uint32_t value_max; /* 0: VALUE_MAX */
	uint32_t reply_max;
};

/* One request in flight through a burst. */
struct slot {
	uint8_t buf[KM_DGRAM_MAX];
	size_t len; /* reply length once answered */
	int done;
};

static int
proc_open(struct env *e)
{
	struct km_proc_params pp = {
		.worker = 0,
		.value_max = e->value_max != 0 ? e->value_max : VALUE_MAX,
		.reply_max = e->reply_max,
		.store_driver = "log",
		.dir = e->dir,
		.cold_dir = e->cold,
		.durability = e->durability,
		.route_sep = '/',
		.route_depth = 1,
		.cache_bytes = e->cache_bytes,
		.sync_interval_ms = e->sync_interval_ms,
		.pending_max = e->pending_max,
		.defer_max = 64,
		.version_base = 1, /* as if the clock went back: the log's reservations only */
	};
	uint32_t i;
	int rc = km_proc_create(&pp, &e->p);

	if (rc < 0)
		return rc;
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		rc = km_proc_shard_add(e->p, km_shard_id(km_shardmap_shard_at(e->map, i)));
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int
setup_mode(void **state, uint8_t durability)
{
	struct km_shardmap_params mp = {
		.nb_shards = NB_SHARDS,
		.nb_workers = 1,
		.udp_port_base = 7070,
		.route_sep = '/',
		.route_depth = 1,
	};
	struct env *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return -1;
	strcpy(e->dir, "/tmp/km-test-log-XXXXXX");
	if (mkdtemp(e->dir) == NULL)
		return -1;
	snprintf(e->cold, sizeof(e->cold), "%s/cold", e->dir);
	if (mkdir(e->cold, 0755) < 0 || km_shardmap_create(&mp, &e->map) != 0)
		return -1;
	e->durability = durability;
	e->pending_max = 16;
	e->cache_bytes = 1 << 20;
	if (proc_open(e) < 0)
		return -1;
	*state = e;
	return 0;
}

static int
setup(void **state)
{
	return setup_mode(state, KM_DUR_SYNC);
}

static int
teardown(void **state)
{
	struct env *e = *state;

	km_proc_destroy(e->p);
	km_shardmap_free(e->map);
	assert_int_equal(km_util_rmtree(e->dir), 0);
	free(e);
	return 0;
}

/* Close and reopen the processor: a clean restart. */
static void
restart(struct env *e)
{
	km_proc_destroy(e->p);
	e->p = NULL;
	assert_int_equal(proc_open(e), 0);
}

static void
req_fill(struct slot *s, uint8_t op, const char *key, const void *val, uint32_t vlen,
	uint64_t version, uint64_t req_id)
{
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = op,
		.key_len = (uint16_t)strlen(key),
		.val_len = vlen,
		.req_id = req_id,
		.version = version,
	};

	km_hdr_encode(s->buf, &h);
	memcpy(s->buf + KM_HDR_LEN, key, h.key_len);
	if (vlen != 0)
		memcpy(s->buf + KM_HDR_LEN + h.key_len, val, vlen);
	s->len = 0;
	s->done = 0;
}

/* Run n requests as one burst, then poll until every reply is out (bounded). */
static void
run(struct env *e, struct slot *s, unsigned int n)
{
	struct km_proc_req r[BURST];
	struct km_proc_done d[BURST];
	unsigned int i, k, left = 0, spins;

	assert_true(n <= BURST);
	for (i = 0; i < n; i++) {
		struct km_hdr h;

		km_hdr_decode(s[i].buf, &h);
		r[i] = (struct km_proc_req){.buf = s[i].buf,
			.len = KM_HDR_LEN + h.key_len + h.val_len,
			.cap = sizeof(s[i].buf),
			.src = 42,
			.cookie = &s[i],
			.port_worker = -1};
	}
	km_proc_rx_burst(e->p, e->map, r, n);
	km_proc_prefetch_run(e->p, e->map); /* as the worker, after the burst's replies */
	for (i = 0; i < n; i++) {
		assert_true(r[i].verdict == KM_PROC_REPLY || r[i].verdict == KM_PROC_DEFER);
		if (r[i].verdict == KM_PROC_REPLY) {
			s[i].len = r[i].reply_len;
			s[i].done = 1;
		} else {
			left++;
		}
	}
	for (spins = 0; left != 0 && spins < 2000000; spins++) {
		k = km_proc_poll(e->p, d, BURST);
		for (i = 0; i < k; i++) {
			struct slot *x = d[i].cookie;

			assert_false(x->done);
			x->len = d[i].len;
			x->done = 1;
			left--;
		}
		if (k == 0)
			usleep(10);
	}
	assert_int_equal(left, 0);
	/* Nothing else is owed. */
	while (km_proc_busy(e->p))
		assert_int_equal(km_proc_poll(e->p, d, BURST), 0);
}

static struct km_hdr
reply(const struct slot *s)
{
	struct km_hdr h;

	assert_true(s->done);
	km_hdr_decode(s->buf, &h);
	return h;
}

static uint64_t
put(struct env *e, const char *key, const char *val)
{
	static uint64_t req_id = 1000;
	struct slot s;
	struct km_hdr h;

	req_fill(&s, KM_OP_PUT, key, val, (uint32_t)strlen(val), 0, req_id++);
	run(e, &s, 1);
	h = reply(&s);
	assert_int_equal(h.status, KM_ST_OK);
	return h.version;
}

/* GET key: its value in val (NUL-terminated), status returned. */
static uint8_t
get(struct env *e, const char *key, char *val, size_t cap, uint64_t *version)
{
	struct slot s;
	struct km_hdr h;

	req_fill(&s, KM_OP_GET, key, NULL, 0, 0, 1);
	run(e, &s, 1);
	h = reply(&s);
	if (h.status == KM_ST_OK) {
		assert_true(h.val_len < cap);
		memcpy(val, s.buf + KM_HDR_LEN, h.val_len);
		val[h.val_len] = '\0';
		if (version != NULL)
			*version = h.version;
	}
	return h.status;
}

static void
check_value(struct env *e, const char *key, const char *want)
{
	char v[VALUE_MAX + 1];

	assert_int_equal(get(e, key, v, sizeof(v), NULL), KM_ST_OK);
	assert_string_equal(v, want);
}

/* Sync mode: a write's reply waits for its group write and fdatasync. */
static void
test_sync_deferral(void **state)
{
	struct env *e = *state;
	const struct km_proc_counters *c = km_proc_counters(e->p);
	struct km_store_stats st;
	struct slot s[8];
	char key[16];
	unsigned int i;

	for (i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "k%u", i);
		req_fill(&s[i], KM_OP_PUT, key, "value", 5, 0, 100 + i);
	}
	run(e, s, 8);
	for (i = 0; i < 8; i++)
		assert_int_equal(reply(&s[i]).status, KM_ST_OK);
	/* Every reply waited; the eight records went in at most one group per shard. */
	assert_int_equal(c->write_deferred, 8);
	km_proc_store_stats(e->p, &st);
	assert_true(st.write_batches <= NB_SHARDS);
	assert_true(st.fsyncs >= 1 && st.fsyncs <= NB_SHARDS);
	assert_int_equal(st.keys, 8);
	/* Written through the cache: read back without the disk. */
	check_value(e, "k3", "value");
	assert_int_equal(c->disk_reads, 0);
	/* A retry of an acknowledged write is answered from the at-most-once table. */
	req_fill(&s[0], KM_OP_PUT, "k0", "value", 5, 0, 100);
	run(e, s, 1);
	assert_int_equal(reply(&s[0]).status, KM_ST_OK);
	assert_int_equal(c->write_retry, 1);
}

/* Misses of one key share one read; every waiter gets the value. */
static void
test_miss_coalescing(void **state)
{
	struct env *e = *state;
	const struct km_proc_counters *c;
	const struct km_cache_counters *cc;
	struct slot s[6];
	struct km_hdr h;
	unsigned int i;

	put(e, "alpha", "one");
	put(e, "beta", "two");
	restart(e); /* cold cache */
	c = km_proc_counters(e->p);
	cc = km_proc_cache_counters(e->p);
	for (i = 0; i < 4; i++)
		req_fill(&s[i], KM_OP_GET, "alpha", NULL, 0, 0, i);
	req_fill(&s[4], KM_OP_GET, "beta", NULL, 0, 0, 4);
	req_fill(&s[5], KM_OP_GET, "gamma", NULL, 0, 0, 5);
	run(e, s, 6);
	for (i = 0; i < 4; i++) {
		h = reply(&s[i]);
		assert_int_equal(h.status, KM_ST_OK);
		assert_int_equal(h.val_len, 3);
		assert_memory_equal(s[i].buf + KM_HDR_LEN, "one", 3);
	}
	assert_int_equal(reply(&s[4]).status, KM_ST_OK);
	assert_int_equal(reply(&s[5]).status, KM_ST_NOT_FOUND);
	assert_int_equal(c->disk_reads, 2);
	assert_int_equal(c->read_coalesced, 3);
	assert_int_equal(cc->misses, 6);
	/* Now cached. */
	check_value(e, "alpha", "one");
	assert_int_equal(c->disk_reads, 2);
	assert_true(cc->hits >= 1);
}

/* Beyond pending_max reads in flight, misses are answered BUSY. */
static void
test_pending_limit(void **state)
{
	struct env *e = *state;
	struct slot s[8];
	char key[16];
	unsigned int i, ok = 0, busy = 0;

	for (i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "p%u", i);
		put(e, key, "v");
	}
	e->pending_max = 3;
	restart(e);
	for (i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "p%u", i);
		req_fill(&s[i], KM_OP_GET, key, NULL, 0, 0, i);
	}
	run(e, s, 8);
	for (i = 0; i < 8; i++) {
		uint8_t st = reply(&s[i]).status;

		ok += st == KM_ST_OK;
		busy += st == KM_ST_BUSY;
	}
	assert_int_equal(ok, 3);
	assert_int_equal(busy, 5);
	assert_int_equal(km_proc_counters(e->p)->busy_pending, 5);
}

/*
 * Overload with values on disk: a GET that would read the disk is answered BUSY without
 * starting the read, a cached one is served, a write is refused; off again, the read
 * happens.
 */
static void
test_overload(void **state)
{
	struct env *e = *state;
	const struct km_proc_counters *c;
	char v[VALUE_MAX + 1];
	struct slot s;

	put(e, "hot", "cached");
	put(e, "cold", "on disk");
	restart(e); /* cold cache */
	c = km_proc_counters(e->p);
	check_value(e, "hot", "cached"); /* read once: cached now */
	assert_int_equal(c->disk_reads, 1);
	km_proc_overload(e->p, 1);
	assert_int_equal(get(e, "cold", v, sizeof(v), NULL), KM_ST_BUSY);
	check_value(e, "hot", "cached");
	req_fill(&s, KM_OP_PUT, "hot", "new", 3, 0, 77);
	run(e, &s, 1);
	assert_int_equal(reply(&s).status, KM_ST_BUSY);
	assert_int_equal(c->busy_overload, 2);
	assert_int_equal(c->disk_reads, 1);
	assert_int_equal(c->write_deferred, 0);
	km_proc_overload(e->p, 0);
	check_value(e, "cold", "on disk");
	check_value(e, "hot", "cached");
	assert_int_equal(c->disk_reads, 2);
	assert_int_equal(c->busy_overload, 2);
}

/* Versions keep increasing across restarts and deletes; CAS compares them. */
static void
test_restart_versions(void **state)
{
	struct env *e = *state;
	uint64_t v1, v2, v3, v;
	struct slot s;
	char val[64];

	v1 = put(e, "key", "a");
	v2 = put(e, "key", "b");
	assert_true(v2 > v1);
	req_fill(&s, KM_OP_DEL, "key", NULL, 0, 0, 7);
	run(e, &s, 1);
	assert_int_equal(reply(&s).status, KM_ST_OK);
	restart(e);
	assert_int_equal(get(e, "key", val, sizeof(val), NULL), KM_ST_NOT_FOUND);
	v3 = put(e, "key", "c");
	assert_true(v3 > v2); /* no ABA after a delete and a restart */
	restart(e);
	assert_int_equal(get(e, "key", val, sizeof(val), &v), KM_ST_OK);
	assert_string_equal(val, "c");
	assert_int_equal(v, v3);
	/* CAS against an old version fails, against the current one succeeds. */
	req_fill(&s, KM_OP_CAS, "key", "d", 1, v2, 8);
	run(e, &s, 1);
	assert_int_equal(reply(&s).status, KM_ST_VERSION_MISMATCH);
	req_fill(&s, KM_OP_CAS, "key", "d", 1, v3, 9);
	run(e, &s, 1);
	assert_int_equal(reply(&s).status, KM_ST_OK);
	restart(e);
	check_value(e, "key", "d");
}

static int
setup_async(void **state)
{
	return setup_mode(state, KM_DUR_ASYNC);
}

/*
 * A version acknowledged and lost in a crash is never issued again: the process crashes
 * (exits without writing out) with an acknowledged write in its write buffer; after the
 * restart the key has its older value, a new write gets a higher version than the lost
 * one, and a CAS by a holder of the lost version fails.
 */
static void
test_version_after_crash(void **state)
{
	struct env *e = *state;
	uint64_t kept, lost = 0, v;
	int fd[2], st;
	char val[64];
	pid_t pid;

	kept = put(e, "vr/k", "kept"); /* run() waits until it is written */
	km_proc_destroy(e->p);
	e->p = NULL;
	assert_int_equal(pipe(fd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct km_proc_req r;
		struct slot s;
		struct km_hdr h;

		if (proc_open(e) < 0)
			_exit(2);
		req_fill(&s, KM_OP_PUT, "vr/k", "lost", 4, 0, 77);
		r = (struct km_proc_req){.buf = s.buf,
			.len = KM_HDR_LEN + 4 + 4,
			.cap = sizeof(s.buf),
			.src = 42,
			.cookie = &s,
			.port_worker = -1};
		km_proc_rx_burst(e->p, e->map, &r, 1);
		if (r.verdict != KM_PROC_REPLY)
			_exit(3);
		km_hdr_decode(s.buf, &h);
		if (h.status != KM_ST_OK || write(fd[1], &h.version, 8) != 8)
			_exit(4);
		_exit(0); /* a crash: the write buffer is never written out */
	}
	close(fd[1]);
	assert_int_equal(read(fd[0], &lost, 8), 8);
	close(fd[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_true(lost > kept);
	assert_int_equal(proc_open(e), 0);
	assert_int_equal(get(e, "vr/k", val, sizeof(val), &v), KM_ST_OK);
	assert_string_equal(val, "kept");
	assert_int_equal(v, kept);
	v = put(e, "vr/k", "new");
	assert_true(v > lost);
	/* Its holder's CAS cannot succeed on a value it never saw. */
	{
		struct slot s;

		req_fill(&s, KM_OP_CAS, "vr/k", "cas", 3, lost, 78);
		run(e, &s, 1);
		assert_int_equal(reply(&s).status, KM_ST_VERSION_MISMATCH);
	}
	check_value(e, "vr/k", "new");
}

/* Complete every read in flight. */
static void
drain(struct env *e)
{
	struct km_proc_done d[BURST];
	unsigned int spins;

	for (spins = 0; km_proc_busy(e->p) && spins < 2000000; spins++)
		if (km_proc_poll(e->p, d, BURST) == 0)
			usleep(10);
	assert_false(km_proc_busy(e->p));
}

/* PUT key = val as one burst, without polling: nothing is written out meanwhile. */
static uint8_t
put_nopoll(struct env *e, const char *key, const char *val)
{
	static uint64_t req_id = 500000;
	struct km_proc_req r;
	struct slot s;
	struct km_hdr h;

	req_fill(&s, KM_OP_PUT, key, val, (uint32_t)strlen(val), 0, req_id++);
	r = (struct km_proc_req){.buf = s.buf,
		.len = KM_HDR_LEN + strlen(key) + strlen(val),
		.cap = sizeof(s.buf),
		.src = 42,
		.cookie = &s,
		.port_worker = -1};
	km_proc_rx_burst(e->p, e->map, &r, 1);
	assert_int_equal(r.verdict, KM_PROC_REPLY); /* async: answered at once */
	km_hdr_decode(s.buf, &h);
	return h.status;
}

/* async: a write is refused (BUSY) rather than acknowledged beyond the bound: once the
 * oldest record not durable yet has waited sync_interval_ms, or more than the budget of
 * bytes wait; accepted again once the group is durable. */
static void
test_async_bound(void **state)
{
	struct env *e = *state;
	char key[32], big[1001];
	struct km_store_stats st;
	unsigned int n;

	e->sync_interval_ms = 40;
	restart(e);
	assert_int_equal(put_nopoll(e, "ab/1", "one"), KM_ST_OK);
	usleep(45000);
	assert_int_equal(put_nopoll(e, "ab/1", "two"), KM_ST_BUSY);
	drain(e); /* written and fdatasync'ed */
	assert_int_equal(put_nopoll(e, "ab/1", "three"), KM_ST_OK);
	drain(e);
	check_value(e, "ab/1", "three");
	/* The budget: a few hundred KiB may wait, not the whole write buffer. */
	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (n = 0; n < 4000; n++) {
		snprintf(key, sizeof(key), "ab/%u", n);
		if (put_nopoll(e, key, big) != KM_ST_OK)
			break;
	}
	print_message("async: %u writes of 1 KB acknowledged before the budget\n", n);
	assert_true(n >= 3 && n < 1000); /* 4 KiB at least, far from the 4 MiB buffer */
	drain(e);
	snprintf(key, sizeof(key), "ab/%u", n);
	assert_int_equal(put_nopoll(e, key, big), KM_ST_OK);
	drain(e);
	memset(&st, 0, sizeof(st));
	for (unsigned int i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		struct km_store_stats one;

		km_store_stats(
			km_proc_shard_store(e->p, km_shard_id(km_shardmap_shard_at(e->map, i))),
			&one);
		km_store_stats_add(&st, &one);
	}
	assert_int_equal(st.write_busy, 2);
	assert_int_equal(st.writes_lost, 0);
	restart(e);
	for (unsigned int i = 0; i <= n; i += 97) {
		snprintf(key, sizeof(key), "ab/%u", i);
		check_value(e, key, big);
	}
	e->sync_interval_ms = 0;
}

/* Make the open log of shard id refuse writes (a disk that fails): its descriptor becomes
 * a read-only one. */
static void
log_refuse_writes(const struct env *e, uint64_t id)
{
	char want[128], link[PATH_MAX], path[300];
	struct dirent *de;
	int found = 0, ro;
	DIR *d;

	snprintf(want, sizeof(want), "%s/shard-%" PRIu64 ".log", e->dir, id);
	ro = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(ro >= 0);
	d = opendir("/proc/self/fd");
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (strcmp(link, want) == 0) {
			assert_true(dup2(ro, atoi(de->d_name)) >= 0);
			found++;
		}
	}
	closedir(d);
	close(ro);
	assert_true(found >= 1);
}

/* A shard that changes owner while a sync write waits for its group: the write-out fails,
 * the write is answered ERROR, and no at-most-once record of it travels with the shard (a
 * retry at the new owner must execute, not be answered OK for a write rolled back). */
static void
test_detach_failed_flush(void **state)
{
	struct env *e = *state;
	const struct km_shard *sh =
		km_shardmap_lookup(e->map, km_shardmap_hash(e->map, (const uint8_t *)"ff", 2));
	uint64_t id = km_shard_id(sh);
	struct km_proc_dedup *set = (struct km_proc_dedup *)1;
	struct km_proc_done d[BURST];
	struct km_proc_req r;
	struct km_store *st;
	struct slot s;
	unsigned int k, spins, errors = 0;

	put(e, "ff/0", "durable"); /* a record of an acknowledged write travels */
	req_fill(&s, KM_OP_PUT, "ff/1", "lost", 4, 0, 777);
	r = (struct km_proc_req){.buf = s.buf,
		.len = KM_HDR_LEN + 4 + 4,
		.cap = sizeof(s.buf),
		.src = 42,
		.cookie = &s,
		.port_worker = -1};
	km_proc_rx_burst(e->p, e->map, &r, 1);
	assert_int_equal(r.verdict, KM_PROC_DEFER); /* parked: not written out yet */
	log_refuse_writes(e, id);
	st = km_proc_shard_detach_dedup(e->p, id, NULL, &set);
	assert_non_null(st);
	for (spins = 0; errors == 0 && spins < 1000; spins++) {
		k = km_proc_poll(e->p, d, BURST);
		for (unsigned int i = 0; i < k; i++) {
			assert_ptr_equal(d[i].cookie, &s);
			s.len = d[i].len;
			s.done = 1;
			errors += reply(&s).status == KM_ST_ERROR;
		}
	}
	assert_int_equal(errors, 1);
	/* Only the acknowledged write's record left with the shard. */
	assert_int_equal(km_proc_dedup_count(set), 1);
	km_proc_dedup_free(set);
	km_store_destroy(st);
}

/* Rewrite every shard into the cold tier, read back, write on top, restart, promote. */
static void
retier(struct env *e, uint64_t id, uint8_t tier)
{
	struct km_store *src, *dst;
	struct km_store_stats st;

	src = km_proc_shard_detach(e->p, id, NULL);
	assert_non_null(src);
	km_store_stats(src, &st);
	assert_int_equal(km_proc_store_stage(e->p, id, st.version_last, tier, &dst), 0);
	assert_int_equal(km_proc_reshard_copy(src, dst), (int64_t)st.keys);
	assert_int_equal(dst->ops->commit(dst), 0);
	km_store_destroy(src);
	assert_int_equal(km_proc_shard_attach(e->p, id, dst), 0);
	km_store_stats(dst, &st);
	assert_int_equal(st.tier, tier);
}

static void
test_cold_tier(void **state)
{
	struct env *e = *state;
	char key[32], val[256], want[256], path[256];
	struct stat sb;
	unsigned int i;
	uint32_t s;

	for (i = 0; i < 600; i++) {
		snprintf(key, sizeof(key), "cold/%u", i);
		snprintf(val, sizeof(val), "value-%u-%0*u", i, (int)(i % 150), 7);
		put(e, key, val);
	}
	for (s = 0; s < km_shardmap_nb_shards(e->map); s++)
		retier(e, km_shard_id(km_shardmap_shard_at(e->map, s)), KM_TIER_COLD);
	snprintf(path, sizeof(path), "%s/shard-%" PRIu64 ".seg", e->cold,
		km_shard_id(km_shardmap_shard_at(e->map, 0)));
	assert_int_equal(stat(path, &sb), 0);
	restart(e);
	for (i = 0; i < 600; i++) {
		snprintf(key, sizeof(key), "cold/%u", i);
		snprintf(want, sizeof(want), "value-%u-%0*u", i, (int)(i % 150), 7);
		check_value(e, key, want);
	}
	/* Writes on top of the segment, and a restart. */
	put(e, "cold/1", "new");
	put(e, "fresh", "x");
	restart(e);
	check_value(e, "cold/1", "new");
	check_value(e, "cold/2", "value-2-07");
	check_value(e, "fresh", "x");
	/* Back to the log: the segment goes. */
	for (s = 0; s < km_shardmap_nb_shards(e->map); s++)
		retier(e, km_shard_id(km_shardmap_shard_at(e->map, s)), KM_TIER_HOT);
	assert_int_equal(stat(path, &sb), -1);
	restart(e);
	check_value(e, "cold/1", "new");
	snprintf(want, sizeof(want), "value-%u-%0*u", 599, 599 % 150, 7);
	check_value(e, "cold/599", want);
}

/* Compaction keeps only the latest records. */
static void
test_compaction(void **state)
{
	struct env *e = *state;
	struct km_store_stats before, after;
	char val[64];
	unsigned int i;

	for (i = 0; i < 300; i++) {
		snprintf(val, sizeof(val), "v%u", i);
		put(e, "hotkey", val);
	}
	km_proc_store_stats(e->p, &before);
	assert_true(before.dead_bytes > 200 * 24);
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++)
		retier(e, km_shard_id(km_shardmap_shard_at(e->map, i)), KM_TIER_HOT);
	km_proc_store_stats(e->p, &after);
	assert_true(after.file_bytes < before.file_bytes / 10);
	restart(e);
	check_value(e, "hotkey", "v299");
}

/* A flipped data byte: that record is skipped and counted; a torn tail is cut. */
static void
test_damaged_log(void **state)
{
	struct env *e = *state;
	const struct km_shard *sh =
		km_shardmap_lookup(e->map, km_shardmap_hash(e->map, (const uint8_t *)"dmg", 3));
	struct km_store_stats st;
	char path[256], key[32], v[64];
	uint8_t buf[4096];
	struct km_rec r;
	size_t size, off;
	unsigned int i, found = 0;
	ssize_t n;
	int fd;

	put(e, "dmg", "first");
	put(e, "dmg", "second"); /* the record we damage: the key answers DAMAGED, not "first" */
	for (i = 0; i < 20; i++) {
		snprintf(key, sizeof(key), "other%u", i);
		put(e, key, "fine");
	}
	km_proc_destroy(e->p);
	e->p = NULL;
	snprintf(path, sizeof(path), "%s/shard-%" PRIu64 ".log", e->dir, km_shard_id(sh));
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	n = pread(fd, buf, sizeof(buf), 0);
	assert_true(n > 0);
	for (off = 0; off < (size_t)n; off += size) {
		assert_int_equal(km_rec_decode(buf + off, (size_t)n - off, &r, &size), KM_REC_OK);
		if (r.type == KM_REC_PUT && r.vlen == 6 && memcmp(r.val, "second", 6) == 0) {
			buf[off + KM_REC_HDR_LEN + r.klen + 2] ^= 0x40;
			assert_int_equal(pwrite(fd, buf + off, size, (off_t)off), (ssize_t)size);
			found = 1;
		}
	}
	assert_true(found);
	/* The first 30 bytes of a record at the end: a write the crash cut. */
	assert_int_equal(pwrite(fd, buf, 30, n), 30);
	close(fd);
	assert_int_equal(proc_open(e), 0);
	km_proc_store_stats(e->p, &st);
	assert_int_equal(st.skipped_crc, 1);
	assert_int_equal(st.torn_bytes, 30);
	assert_int_equal(st.damaged_keys, 1);
	assert_int_equal(get(e, "dmg", v, sizeof(v), NULL), KM_ST_DAMAGED);
	for (i = 0; i < 20; i++) {
		snprintf(key, sizeof(key), "other%u", i);
		check_value(e, key, "fine");
	}
	/* Written again, or across a restart: what it is now is known. */
	restart(e);
	assert_int_equal(get(e, "dmg", v, sizeof(v), NULL), KM_ST_DAMAGED);
	put(e, "dmg", "third");
	check_value(e, "dmg", "third");
	km_proc_store_stats(e->p, &st);
	assert_int_equal(st.damaged_keys, 0);
	restart(e);
	check_value(e, "dmg", "third");
	/* Appends go after the last good record; a restart finds them and no tail. */
	put(e, "after", "ok");
	restart(e);
	km_proc_store_stats(e->p, &st);
	assert_int_equal(st.torn_bytes, 0);
	assert_int_equal(get(e, "after", v, sizeof(v), NULL), KM_ST_OK);
}

/* recover(): which files are current after a crash in the middle of a split. */
static int
has(const uint64_t *ids, int n, uint64_t id)
{
	for (int i = 0; i < n; i++)
		if (ids[i] == id)
			return 1;
	return 0;
}

static void
test_recover(void **state)
{
	struct env *e = *state;
	struct km_store_params sp = {
		.dir = e->dir,
		.cold_dir = e->cold,
		.route_sep = '/',
		.route_depth = 1,
	};
	const struct km_store_ops *ops = km_store_driver("log");
	struct km_store *lo, *hi;
	uint64_t ids[16];
	char path[256];
	int n;

	put(e, "x", "1");
	n = ops->recover(&sp, ids, 16);
	assert_int_equal(n, NB_SHARDS);
	/* Shard 4's children staged and only one of them committed: 4 stays, 8 goes. */
	assert_int_equal(km_proc_store_new(e->p, 8, 100, &lo), 0);
	assert_int_equal(km_proc_store_new(e->p, 9, 100, &hi), 0);
	assert_int_equal(lo->ops->commit(lo), 0);
	km_store_destroy(lo);
	km_store_destroy(hi); /* never committed: its staged file is removed */
	n = ops->recover(&sp, ids, 16);
	assert_int_equal(n, NB_SHARDS);
	assert_true(has(ids, n, 4) && !has(ids, n, 8) && !has(ids, n, 9));
	snprintf(path, sizeof(path), "%s/shard-8.log", e->dir);
	assert_int_equal(access(path, F_OK), -1);
	/* Both committed: the children supersede 4. */
	assert_int_equal(km_proc_store_new(e->p, 8, 100, &lo), 0);
	assert_int_equal(km_proc_store_new(e->p, 9, 100, &hi), 0);
	assert_int_equal(lo->ops->commit(lo), 0);
	assert_int_equal(hi->ops->commit(hi), 0);
	km_store_destroy(lo);
	km_store_destroy(hi);
	n = ops->recover(&sp, ids, 16);
	assert_int_equal(n, NB_SHARDS + 1);
	assert_true(!has(ids, n, 4) && has(ids, n, 8) && has(ids, n, 9));
	/* Another routing: refused. */
	sp.route_depth = 2;
	assert_int_equal(ops->recover(&sp, ids, 16), -EPROTO);
	/* A missing directory. */
	sp.dir = "/nonexistent/keymap";
	assert_int_equal(ops->recover(&sp, ids, 16), -ENOENT);
}

/* The manifest: the shards, or parts of shards, it lists that no file covers. */
static void
test_manifest(void **state)
{
	struct env *e = *state;
	struct km_store_params sp = {.dir = e->dir};
	const struct km_store_ops *ops = km_store_driver("log");
	const uint64_t four[] = {4}, kids[] = {8, 9}, some[] = {8, 5, 3};
	uint64_t out[8];
	char path[256];
	FILE *f;

	/* No manifest yet: nothing is missing. */
	snprintf(path, sizeof(path), "%s/MANIFEST", e->dir);
	unlink(path);
	assert_int_equal(ops->missing(&sp, four, 1, out, 8), 0);
	/* Listed 4; files 8 and 9 (a split whose manifest was not written yet): covered. */
	assert_int_equal(ops->manifest(&sp, four, 1), 0);
	assert_int_equal(ops->missing(&sp, kids, 2, out, 8), 0);
	/* Listed 4; only 8 found: 9 is missing. */
	assert_int_equal(ops->missing(&sp, kids, 1, out, 8), 1);
	assert_int_equal(out[0], 9);
	/* Listed 8, 9; file 4 (a merge): covered. Listed 8, 5, 3; files 8, 3: 5 missing. */
	assert_int_equal(ops->manifest(&sp, kids, 2), 0);
	assert_int_equal(ops->missing(&sp, four, 1, out, 8), 0);
	assert_int_equal(ops->manifest(&sp, some, 3), 0);
	assert_int_equal(ops->missing(&sp, (const uint64_t[]){8, 3}, 2, out, 8), 1);
	assert_int_equal(out[0], 5);
	/* Nothing found at all: everything listed. */
	assert_int_equal(ops->missing(&sp, NULL, 0, out, 8), 3);
	/* A damaged manifest says so. */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("keymap-manifest 1\n12x\n", f);
	fclose(f);
	assert_int_equal(ops->missing(&sp, four, 1, out, 8), -EBADMSG);
	unlink(path);
}

/* A cold shard is a segment and a log made together: with one of them lost it does not
 * open (keymapd then quarantines it) instead of serving older values or losing keys. */
static void
test_cold_half_missing(void **state)
{
	struct env *e = *state;
	const struct km_shard *sh =
		km_shardmap_lookup(e->map, km_shardmap_hash(e->map, (const uint8_t *)"cm", 2));
	uint64_t id = km_shard_id(sh);
	char path[256], keep[300];
	int lost;

	for (lost = 0; lost < 2; lost++) {
		put(e, "cm/a", "old");
		retier(e, id, KM_TIER_COLD);
		put(e, "cm/a", "new"); /* in the log, on top of the segment */
		km_proc_destroy(e->p);
		e->p = NULL;
		if (lost == 0)
			snprintf(path, sizeof(path), "%s/shard-%" PRIu64 ".log", e->dir, id);
		else
			snprintf(path, sizeof(path), "%s/shard-%" PRIu64 ".seg", e->cold, id);
		snprintf(keep, sizeof(keep), "%s.keep", path);
		assert_int_equal(rename(path, keep), 0);
		assert_int_equal(proc_open(e), -ENOENT);
		km_proc_destroy(e->p);
		e->p = NULL;
		/* Put back: whole again. */
		assert_int_equal(rename(keep, path), 0);
		assert_int_equal(proc_open(e), 0);
		check_value(e, "cm/a", "new");
		retier(e, id, KM_TIER_HOT);
	}
}

/* ---- Predictive prefetch, the worker's part (km_proc.h) ---- */

static void
pf_params(struct env *e, uint32_t sample_every, uint8_t stream, uint32_t inflight, uint32_t wm)
{
	struct km_proc_pf_params pp = {
		.sample_every = sample_every,
		.stream = stream,
		.inflight_max = inflight,
		.watermark = wm,
	};

	assert_int_equal(km_proc_prefetch_params(e->p, &pp), 0);
}

/* A sequential reader: the shard's stream detector reads ahead, and the reads it started
 * are hit by the requests that follow; every value is the one written. */
static void
test_stream_prefetch(void **state)
{
	struct env *e = *state;
	const struct km_proc_counters *c;
	const struct km_cache_counters *cc;
	char key[32], want[32], v[VALUE_MAX + 1];
	unsigned int i;

	for (i = 0; i < 64; i++) {
		snprintf(key, sizeof(key), "bkt/obj/%08u", i);
		snprintf(want, sizeof(want), "value-%u", i);
		put(e, key, want);
	}
	restart(e); /* cold cache */
	pf_params(e, 0, 1, 0, 0);
	c = km_proc_counters(e->p);
	cc = km_proc_cache_counters(e->p);
	for (i = 0; i < 64; i++) {
		km_proc_time(e->p, (uint64_t)i * 1000000);
		snprintf(key, sizeof(key), "bkt/obj/%08u", i);
		snprintf(want, sizeof(want), "value-%u", i);
		assert_int_equal(get(e, key, v, sizeof(v), NULL), KM_ST_OK);
		assert_string_equal(v, want);
		drain(e);
	}
	assert_true(c->stream_prefetches > 32);
	assert_true(c->prefetch_issued > 32);
	print_message("stream: %" PRIu64 " asked, %" PRIu64 " read, %" PRIu64 " used, %" PRIu64
		      " disk reads, %" PRIu64 " refused\n",
		c->stream_prefetches, c->prefetch_issued, cc->prefetched_used, c->disk_reads,
		c->prefetch_refused);
	/* Once the run is established, the rest come from the prefetches. */
	assert_true(cc->prefetched_used > 48);
	assert_true(c->disk_reads - c->prefetch_issued < 8);
	assert_int_equal(c->stream_forwarded, 0);
}

/* Prefetch reads in flight stop at the budget, and at the pending watermark. */
static void
test_prefetch_budget(void **state)
{
	struct env *e = *state;
	const struct km_proc_counters *c;
	char key[16];
	unsigned int i;
	int rc;

	for (i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "b%u", i);
		put(e, key, "v");
	}
	restart(e);
	c = km_proc_counters(e->p);
	pf_params(e, 0, 0, 2, 16);
	for (i = 0; i < 4; i++) {
		snprintf(key, sizeof(key), "b%u", i);
		rc = km_proc_prefetch_key(
			e->p, e->map, (const uint8_t *)key, (uint16_t)strlen(key), 1);
		assert_int_equal(rc, i < 2 ? 1 : -EBUSY);
	}
	assert_int_equal(c->prefetch_refused, 2);
	/* Already being read: nothing to do, not a refusal. */
	assert_int_equal(km_proc_prefetch_key(e->p, e->map, (const uint8_t *)"b0", 2, 1), 0);
	drain(e);
	/* Watermark: 1 read pending is enough to refuse. */
	pf_params(e, 0, 0, 64, 1);
	assert_int_equal(km_proc_prefetch_key(e->p, e->map, (const uint8_t *)"b4", 2, 1), 1);
	assert_int_equal(km_proc_prefetch_key(e->p, e->map, (const uint8_t *)"b5", 2, 1), -EBUSY);
	drain(e);
	/* Cached now: nothing to do. */
	assert_int_equal(km_proc_prefetch_key(e->p, e->map, (const uint8_t *)"b4", 2, 1), 0);
	assert_int_equal(
		km_proc_prefetch_key(e->p, e->map, (const uint8_t *)"nokey", 5, 1), -ENOENT);
	assert_int_equal(km_proc_prefetch_key(e->p, e->map, (const uint8_t *)"b6", 2, 0), -EINVAL);
	assert_int_equal(c->prefetch_refused, 3);
}

/* Take the next note; fails when there is none. */
static struct km_proc_note
note_next(struct env *e)
{
	struct km_proc_note n;

	assert_int_equal(km_proc_notes(e->p, &n, 1), 1);
	return n;
}

/* Sampled accesses and what became of each prefetch go to the control lcore as notes. */
static void
test_prefetch_notes(void **state)
{
	struct env *e = *state;
	struct km_proc_note n;
	char v[VALUE_MAX + 1];

	put(e, "n/a", "A");
	put(e, "n/b", "B");
	put(e, "n/c", "C");
	restart(e);
	pf_params(e, 1, 0, 0, 0);
	km_proc_time(e->p, 777);

	/* A sampled miss: key, op, session, source, what it found. */
	assert_int_equal(get(e, "n/a", v, sizeof(v), NULL), KM_ST_OK);
	n = note_next(e);
	assert_int_equal(n.type, KM_PROC_NOTE_SAMPLE);
	assert_int_equal(n.op, KM_OP_GET);
	assert_int_equal(n.what, KM_PROC_ACC_MISS);
	assert_int_equal(n.src, 42);
	assert_int_equal(n.t_ns, 777);
	assert_int_equal(n.key_len, 3);
	assert_memory_equal(n.key, "n/a", 3);
	assert_int_equal(km_proc_notes(e->p, &n, 1), 0);

	/* A prefetch of source 5 hit: USED with its mark, and the access says PREFETCH_HIT. */
	assert_int_equal(km_proc_prefetch_key(e->p, e->map, (const uint8_t *)"n/b", 3, 5), 1);
	drain(e);
	assert_int_equal(get(e, "n/b", v, sizeof(v), NULL), KM_ST_OK);
	assert_string_equal(v, "B");
	n = note_next(e);
	assert_int_equal(n.type, KM_PROC_NOTE_OUTCOME);
	assert_int_equal(n.what, KM_PROC_PF_USED);
	assert_int_equal(n.mark, 5);
	n = note_next(e);
	assert_int_equal(n.type, KM_PROC_NOTE_SAMPLE);
	assert_int_equal(n.what, KM_PROC_ACC_PREFETCH_HIT);

	/* A request that waits for a prefetch in flight: LATE, counted once. */
	assert_int_equal(km_proc_prefetch_key(e->p, e->map, (const uint8_t *)"n/c", 3, 6), 1);
	assert_int_equal(get(e, "n/c", v, sizeof(v), NULL), KM_ST_OK);
	assert_string_equal(v, "C");
	n = note_next(e);
	assert_int_equal(n.type, KM_PROC_NOTE_OUTCOME);
	assert_int_equal(n.what, KM_PROC_PF_LATE);
	assert_int_equal(n.mark, 6);
	n = note_next(e);
	assert_int_equal(n.what, KM_PROC_ACC_LATE);
	assert_int_equal(km_proc_counters(e->p)->prefetch_coalesced, 1);

	/* A prefetched value replaced by a write before any hit: UNUSED; the write is
	 * sampled too. */
	put(e, "n/d", "D");
	while (km_proc_notes(e->p, &n, 1) == 1)
		;
	restart(e);
	pf_params(e, 1, 0, 0, 0);
	assert_int_equal(km_proc_prefetch_key(e->p, e->map, (const uint8_t *)"n/d", 3, 9), 1);
	drain(e);
	put(e, "n/d", "D2");
	n = note_next(e);
	assert_int_equal(n.type, KM_PROC_NOTE_OUTCOME);
	assert_int_equal(n.what, KM_PROC_PF_UNUSED);
	assert_int_equal(n.mark, 9);
	n = note_next(e);
	assert_int_equal(n.type, KM_PROC_NOTE_SAMPLE);
	assert_int_equal(n.what, KM_PROC_ACC_WRITE);
	assert_int_equal(n.op, KM_OP_PUT);
	check_value(e, "n/d", "D2");

	/* Operator and stream marks stay on the worker: no note. */
	while (km_proc_notes(e->p, &n, 1) == 1)
		;
	pf_params(e, 0, 0, 0, 0);
	put(e, "n/e", "E");
	restart(e);
	assert_int_equal(km_proc_prefetch_key(
				 e->p, e->map, (const uint8_t *)"n/e", 3, KM_PROC_MARK_OPERATOR),
		1);
	drain(e);
	check_value(e, "n/e", "E");
	assert_int_equal(km_proc_notes(e->p, &n, 1), 0);
}

/* Count the HARM notes of mark among the notes waiting. */
static unsigned int
harm_notes(struct env *e, uint8_t mark)
{
	struct km_proc_note n;
	unsigned int harm = 0;

	while (km_proc_notes(e->p, &n, 1) == 1)
		if (n.type == KM_PROC_NOTE_OUTCOME && n.what == KM_PROC_PF_HARM) {
			assert_int_equal(n.mark, mark);
			harm++;
		}
	return harm;
}

/* A prefetch that evicts a key read again does harm: told to the control lcore for its
 * predictions only; a value cached again by a read or a write is no longer its harm. */
static void
test_prefetch_harm(void **state)
{
	struct env *e = *state;
	const struct km_proc_counters *c;
	char key[16], big[1001], v[VALUE_MAX + 1];
	unsigned int i;
	/* The prefetch (mark, key), and what it should be told. */
	static const struct {
		uint8_t mark;
		const char *key;
		unsigned int notes;
	} t[] = {{5, "h/a", 1}, {KM_PROC_MARK_OPERATOR, "h/b", 0}, {KM_PROC_MARK_STREAM, "h/c", 0}};

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "h/%u", i);
		put(e, key, big);
	}
	put(e, "h/a", big);
	put(e, "h/b", big);
	put(e, "h/c", big);
	e->cache_bytes = 8 * 1024; /* 7 values */
	for (i = 0; i < 3; i++) {
		restart(e);
		c = km_proc_counters(e->p);
		pf_params(e, 1, 0, 0, 0);
		for (unsigned int j = 0; j < 7; j++) {
			snprintf(key, sizeof(key), "h/%u", j);
			assert_int_equal(get(e, key, v, sizeof(v), NULL), KM_ST_OK);
		}
		harm_notes(e, 0);
		assert_int_equal(
			km_proc_prefetch_key(e->p, e->map, (const uint8_t *)t[i].key, 3, t[i].mark),
			1);
		drain(e);
		/* Exactly one of the 7 was evicted by the prefetch; reading them all again
		 * finds it (the misses' own fills evict others, no harm). */
		for (unsigned int j = 0; j < 7; j++) {
			snprintf(key, sizeof(key), "h/%u", j);
			assert_int_equal(get(e, key, v, sizeof(v), NULL), KM_ST_OK);
			assert_string_equal(v, big);
		}
		assert_int_equal(c->prefetch_harm, 1);
		assert_int_equal(harm_notes(e, t[i].mark), t[i].notes);
	}
	/* Cached again by a write before it is missed: not the prefetch's harm. */
	restart(e);
	c = km_proc_counters(e->p);
	pf_params(e, 1, 0, 0, 0);
	for (i = 0; i < 7; i++) {
		snprintf(key, sizeof(key), "h/%u", i);
		assert_int_equal(get(e, key, v, sizeof(v), NULL), KM_ST_OK);
	}
	assert_int_equal(km_proc_prefetch_key(e->p, e->map, (const uint8_t *)"h/a", 3, 5), 1);
	drain(e);
	for (i = 0; i < 7; i++) {
		snprintf(key, sizeof(key), "h/%u", i);
		put(e, key, big);
	}
	/* The writes cached all 7 (evicting the prefetched value); fill the cache with
	 * others, then read the 7 again: misses, none of them harm. */
	for (i = 0; i < 3; i++)
		assert_int_equal(get(e, t[i].key, v, sizeof(v), NULL), KM_ST_OK);
	put(e, "h/7", big);
	for (i = 0; i < 7; i++) {
		snprintf(key, sizeof(key), "h/%u", i);
		assert_int_equal(get(e, key, v, sizeof(v), NULL), KM_ST_OK);
	}
	assert_int_equal(c->prefetch_harm, 0);
	assert_int_equal(harm_notes(e, 5), 0);
}

/* A write while a prefetch of its key is in flight: the old value is never served. */
static void
test_prefetch_write_race(void **state)
{
	struct env *e = *state;
	char key[16], want[16];
	uint64_t used;
	unsigned int i;

	for (i = 0; i < 16; i++) {
		snprintf(key, sizeof(key), "r%u", i);
		put(e, key, "old");
	}
	restart(e);
	pf_params(e, 0, 0, 0, 0);
	for (i = 0; i < 16; i++) {
		snprintf(key, sizeof(key), "r%u", i);
		assert_int_equal(km_proc_prefetch_key(e->p, e->map, (const uint8_t *)key,
					 (uint16_t)strlen(key), 3),
			1);
		/* The write lands while the read is in flight (its reply may wait for the
		 * group; run() polls, which may complete the read before or after). */
		snprintf(want, sizeof(want), "new%u", i);
		put(e, key, want);
	}
	drain(e);
	used = km_proc_cache_counters(e->p)->prefetched_used;
	for (i = 0; i < 16; i++) {
		snprintf(key, sizeof(key), "r%u", i);
		snprintf(want, sizeof(want), "new%u", i);
		check_value(e, key, want);
	}
	/* The values are the writes': no prefetch claims them. */
	assert_int_equal(km_proc_cache_counters(e->p)->prefetched_used, used);
}

/*
 * A GET that waited for the disk and whose value turns out larger than its buffer comes
 * back unanswered (km_proc_done len 0, the request intact); submitted again with room, it
 * finds the value cached. Counted once.
 */
static void
test_grow_after_read(void **state)
{
	static uint8_t val[20000], big[KM_MSG_MAX];
	struct env *e = *state;
	struct km_proc_done d[BURST];
	struct km_proc_req r;
	struct slot s;
	struct km_msg m;
	unsigned int n = 0, spins;
	size_t i, len;

	for (i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)(i * 13);
	km_proc_destroy(e->p);
	e->value_max = sizeof(val);
	e->reply_max = KM_MSG_MAX;
	assert_int_equal(proc_open(e), 0);
	/* The PUT comes in a buffer large enough for it (reassembled, in keymapd). */
	req_fill(&s, KM_OP_PUT, "big", NULL, 0, 0, 7);
	km_hdr_decode(s.buf, &m.hdr);
	m.hdr.val_len = sizeof(val);
	km_hdr_encode(big, &m.hdr);
	memcpy(big + KM_HDR_LEN, "big", 3);
	memcpy(big + KM_HDR_LEN + 3, val, sizeof(val));
	r = (struct km_proc_req){.buf = big,
		.len = KM_HDR_LEN + 3 + sizeof(val),
		.cap = sizeof(big),
		.src = 42,
		.cookie = big,
		.port_worker = -1};
	km_proc_rx(e->p, e->map, &r);
	assert_int_equal(r.verdict, KM_PROC_DEFER); /* sync: after its fdatasync */
	drain(e);
	restart(e); /* nothing cached */

	req_fill(&s, KM_OP_GET, "big", NULL, 0, 0, 8);
	len = KM_HDR_LEN + 3;
	r = (struct km_proc_req){
		.buf = s.buf, .len = len, .cap = sizeof(s.buf), .cookie = &s, .port_worker = -1};
	km_proc_rx(e->p, e->map, &r);
	assert_int_equal(r.verdict, KM_PROC_DEFER);
	for (spins = 0; n == 0 && spins < 2000000; spins++)
		if ((n = km_proc_poll(e->p, d, BURST)) == 0)
			usleep(10);
	assert_int_equal(n, 1);
	assert_ptr_equal(d[0].cookie, &s);
	assert_int_equal(d[0].len, 0);
	assert_int_equal(km_proc_counters(e->p)->req_get, 0);
	assert_int_equal(km_proc_counters(e->p)->disk_reads, 1);
	/* Intact: submitted again with room, answered from the cache. */
	memcpy(big, s.buf, len);
	r = (struct km_proc_req){
		.buf = big, .len = len, .cap = sizeof(big), .cookie = big, .port_worker = -1};
	km_proc_rx(e->p, e->map, &r);
	assert_int_equal(r.verdict, KM_PROC_REPLY);
	assert_int_equal(km_reply_parse(big, r.reply_len, &m), 0);
	assert_int_equal(m.hdr.status, KM_ST_OK);
	assert_int_equal(m.hdr.val_len, sizeof(val));
	assert_memory_equal(m.val, val, sizeof(val));
	assert_int_equal(km_proc_counters(e->p)->req_get, 1);
	assert_int_equal(km_proc_counters(e->p)->get_hit, 1);
	assert_int_equal(km_proc_counters(e->p)->disk_reads, 1);
}

/* The resumable walk of a log (what a split copies from): every live record once, small
 * and large ones, a few per call, overwritten keys only at their newest record. */
static int
walk_count(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	(void)k;
	(void)v;
	(*(uint64_t *)arg)++;
	return 0;
}

static void
test_walk_step(void **state)
{
	struct env *e = *state;
	static uint8_t val[VALUE_MAX];
	struct km_walk_pos pos = {0};
	struct km_store *s;
	uint64_t seen = 0, calls = 0;
	unsigned int i;
	char key[16];
	int rc;

	assert_int_equal(km_proc_store_new(e->p, 999, 1, &s), 0);
	memset(val, 'v', sizeof(val));
	for (i = 0; i < 3000; i++) {
		struct km_key k = {.data = (const uint8_t *)key};
		uint32_t len = i % 97 == 0 ? VALUE_MAX : i % 64;

		k.len = (uint16_t)snprintf(key, sizeof(key), "w%u", i % 2500);
		k.hash = km_key_hash(k.data, k.len);
		assert_int_equal(km_store_load(s, &k, val, len, 1000 + i), 0);
	}
	do {
		rc = km_store_walk_step(s, &pos, 7, walk_count, &seen);
		calls++;
	} while (rc == 1 && calls < 100000);
	assert_int_equal(rc, 0);
	assert_int_equal(seen, 2500);
	assert_true(calls > 300);
	km_store_destroy(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sync_deferral, setup, teardown),
		cmocka_unit_test_setup_teardown(test_detach_failed_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_grow_after_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_miss_coalescing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pending_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_versions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cold_tier, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_prefetch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prefetch_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prefetch_notes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prefetch_harm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_manifest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cold_half_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_version_after_crash, setup_async, teardown),
		cmocka_unit_test_setup_teardown(test_async_bound, setup_async, teardown),
		cmocka_unit_test_setup_teardown(test_prefetch_write_race, setup, teardown),
		cmocka_unit_test_setup_teardown(test_walk_step, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
