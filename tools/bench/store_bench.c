/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymap-store-bench: the persistent log store as one keymapd worker drives it, without
 * network I/O: requests go through km_proc (cache, pending table, io_uring, group commit)
 * exactly as in app/keymapd/worker.c, replies are collected with km_proc_poll().
 *
 *   GET latency, one request at a time: a DRAM cache hit, a read from the log, a read
 *     from the cold tier (a block read and inflated). The log and segment files are
 *     dropped from the page cache first (posix_fadvise DONTNEED), so a read goes to the
 *     disk.
 *   PUT throughput in each durability mode, bursts of 32 (group commit) and one at a time.
 *   Restart: N keys written, the store closed, then the time to replay them and the
 *     index memory per key.
 *
 * Every figure of a run comes from the same machine state: report ratios side by side.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <km_hist.h>
#include <km_proc.h>
#include <km_util.h>

#define BURST     32
#define SHARDS    16
#define VALUE_MAX 1024
#define KEY_FMT   "user%010u"

struct bench {
	char dir[512];
	char cold[600];
	struct km_shardmap *map;
	struct km_proc *p;
	uint8_t durability;
	uint64_t cache_bytes;
	uint32_t vlen;
	uint64_t req_id;
	uint64_t busy; /* requests answered BUSY (async bound, full buffer) and sent again */
};

struct slot {
	uint8_t buf[KM_DGRAM_MAX];
	size_t len;
	int done;
	uint8_t op;
	uint32_t key;
};

static void
die(const char *what, int rc)
{
	fprintf(stderr, "keymap-store-bench: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

static void
proc_open(struct bench *b)
{
	struct km_proc_params pp = {
		.value_max = VALUE_MAX,
		.store_driver = "log",
		.store_initial_keys = 1024,
		.dir = b->dir,
		.cold_dir = b->cold,
		.durability = b->durability,
		.route_sep = '/',
		.route_depth = 1,
		.cache_bytes = b->cache_bytes,
		.pending_max = 256,
		.defer_max = 1024,
	};
	uint32_t i;
	int rc = km_proc_create(&pp, &b->p);

	if (rc < 0)
		die("km_proc_create", rc);
	for (i = 0; i < km_shardmap_nb_shards(b->map); i++) {
		rc = km_proc_shard_add(b->p, km_shard_id(km_shardmap_shard_at(b->map, i)));
		if (rc < 0)
			die("opening a shard", rc);
	}
}

static void
proc_close(struct bench *b)
{
	km_proc_destroy(b->p);
	b->p = NULL;
}

static void
wipe(struct bench *b)
{
	char cmd[1300];

	snprintf(cmd, sizeof(cmd), "rm -f '%s'/shard-*.log '%s'/shard-*.seg", b->dir, b->cold);
	if (system(cmd) != 0)
		die("removing old files", EIO);
}

/* Drop the store's files from the page cache: the next reads go to the disk. */
static void
drop_dir(const char *dir)
{
	char path[1200];
	struct dirent *de;
	DIR *d = opendir(dir);
	int fd;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "shard-", 6) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		fdatasync(fd);
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
	closedir(d);
}

static void
req_fill(struct bench *b, struct slot *s, uint8_t op, uint32_t k)
{
	char key[32];
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = op,
		.req_id = ++b->req_id,
	};
	uint32_t i;

	s->op = op;
	s->key = k;
	h.key_len = (uint16_t)snprintf(key, sizeof(key), KEY_FMT, k);
	h.val_len = op == KM_OP_PUT ? b->vlen : 0;
	km_hdr_encode(s->buf, &h);
	memcpy(s->buf + KM_HDR_LEN, key, h.key_len);
	for (i = 0; i < h.val_len; i++)
		s->buf[KM_HDR_LEN + h.key_len + i] = (uint8_t)(k * 31 + i);
	s->done = 0;
}

static void run_once(struct bench *b, struct slot *s, unsigned int n);

/* One burst through km_proc, polled until every reply is out; requests answered BUSY are
 * sent again once the store's writes in flight are done, as a client retries. */
static void
run(struct bench *b, struct slot *s, unsigned int n)
{
	struct km_proc_done d[BURST];
	struct slot *again[BURST];
	unsigned int i, m;

	for (;;) {
		run_once(b, s, n);
		for (i = m = 0; i < n; i++) {
			struct km_hdr h;

			km_hdr_decode(s[i].buf, &h);
			if (h.status == KM_ST_BUSY)
				again[m++] = &s[i];
			else if (h.status != KM_ST_OK)
				die("a request was not answered OK", EIO);
		}
		if (m == 0)
			return;
		b->busy += m;
		while (km_proc_busy(b->p))
			km_proc_poll(b->p, d, BURST);
		/* Compact the ones to send again to the front of s. */
		for (i = 0; i < m; i++) {
			struct slot t = *again[i];

			req_fill(b, &s[i], t.op, t.key);
		}
		n = m;
	}
}

/* One burst through km_proc, polled until every reply is out. */
static void
run_once(struct bench *b, struct slot *s, unsigned int n)
{
	struct km_proc_req r[BURST];
	struct km_proc_done d[BURST];
	unsigned int i, k, left = 0;

	for (i = 0; i < n; i++) {
		struct km_hdr h;

		km_hdr_decode(s[i].buf, &h);
		r[i] = (struct km_proc_req){.buf = s[i].buf,
			.len = KM_HDR_LEN + h.key_len + h.val_len,
			.cap = sizeof(s[i].buf),
			.src = 1,
			.cookie = &s[i],
			.port_worker = -1};
	}
	km_proc_rx_burst(b->p, b->map, r, n);
	for (i = 0; i < n; i++) {
		if (r[i].verdict != KM_PROC_REPLY && r[i].verdict != KM_PROC_DEFER)
			die("request", EINVAL);
		s[i].len = r[i].verdict == KM_PROC_REPLY ? r[i].reply_len : 0;
		s[i].done = s[i].len != 0;
		left += !s[i].done;
	}
	/* Polled at least once, as the worker loop does: it submits the group writes. */
	do {
		k = km_proc_poll(b->p, d, BURST);
		for (i = 0; i < k; i++) {
			((struct slot *)d[i].cookie)->len = d[i].len;
			((struct slot *)d[i].cookie)->done = 1;
		}
		left -= k;
	} while (left != 0);
}

static void
fill(struct bench *b, uint32_t keys)
{
	static struct slot s[BURST];
	uint32_t k = 0, n;

	while (k < keys) {
		n = keys - k < BURST ? keys - k : BURST;
		for (uint32_t i = 0; i < n; i++)
			req_fill(b, &s[i], KM_OP_PUT, k + i);
		run(b, s, n);
		k += n;
	}
}

static uint32_t
rnd(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return (uint32_t)(*x >> 16);
}

/* Latency of n single GETs of distinct random keys (a permutation walk). */
static void
get_latency(struct bench *b, uint32_t keys, uint32_t n, struct km_hist *h)
{
	static struct slot s;
	uint64_t t0, x = 88172645463325252ull;
	uint32_t i, step = 0x9e3779b1u % keys | 1, k = rnd(&x) % keys;

	/* Odd step over a power-of-two-free walk: distinct keys as long as gcd(step, keys)
	 * is 1; close enough otherwise (a repeat is then a cache hit, counted as such). */
	km_hist_init(h);
	for (i = 0; i < n; i++) {
		k = (k + step) % keys;
		req_fill(b, &s, KM_OP_GET, k);
		t0 = km_util_now_ns();
		run(b, &s, 1);
		km_hist_add(h, km_util_now_ns() - t0);
	}
}

static void
print_lat(const char *what, const struct km_hist *h, double base)
{
	double p50 = (double)km_hist_percentile(h, 50) / 1000.0,
	       p99 = (double)km_hist_percentile(h, 99) / 1000.0;

	printf("%-24s %10.2f %10.2f %10.1fx\n", what, p50, p99, base > 0 ? p50 / base : 1.0);
}

static void
bench_get(struct bench *b, uint32_t keys, uint32_t n)
{
	struct km_hist hit, log, cold;
	uint32_t s;

	b->durability = KM_DUR_NONE;
	wipe(b);
	proc_open(b);
	fill(b, keys);
	/* Cache hits: every key read once, then timed reads of the same keys. */
	get_latency(b, keys, keys < n ? keys : n, &hit);
	get_latency(b, keys, n, &hit);
	proc_close(b);
	/* Log reads: a restart empties the cache; the files leave the page cache after the
	 * replay read them. */
	proc_open(b);
	drop_dir(b->dir);
	get_latency(b, keys, n, &log);
	/* Cold reads: every shard rewritten into the cold tier. */
	for (s = 0; s < km_shardmap_nb_shards(b->map); s++) {
		uint64_t id = km_shard_id(km_shardmap_shard_at(b->map, s));
		struct km_store *src = km_proc_shard_detach(b->p, id, NULL), *dst;
		struct km_store_stats st;

		km_store_stats(src, &st);
		if (km_proc_store_stage(b->p, id, st.version_last, KM_TIER_COLD, &dst) < 0 ||
			km_proc_reshard_copy(src, dst) < 0 || dst->ops->commit(dst) < 0)
			die("moving a shard to the cold tier", EIO);
		km_store_destroy(src);
		km_proc_shard_attach(b->p, id, dst);
	}
	proc_close(b);
	proc_open(b);
	drop_dir(b->dir);
	drop_dir(b->cold);
	get_latency(b, keys, n, &cold);
	proc_close(b);
	printf("\nGET latency, one request at a time, %u keys of %u-byte values, %u reads each "
	       "(us):\n",
		keys, b->vlen, n);
	printf("%-24s %10s %10s %11s\n", "", "p50", "p99", "p50 ratio");
	print_lat("DRAM cache hit", &hit, 0);
	print_lat("log read (disk)", &log, (double)km_hist_percentile(&hit, 50) / 1000.0);
	print_lat("cold read (disk+inflate)", &cold, (double)km_hist_percentile(&hit, 50) / 1000.0);
}

static double
put_rate(struct bench *b, uint8_t mode, uint32_t n, unsigned int burst)
{
	static struct slot s[BURST];
	uint64_t t0;
	uint32_t k = 0, m, i;

	b->durability = mode;
	b->busy = 0;
	wipe(b);
	proc_open(b);
	t0 = km_util_now_ns();
	while (k < n) {
		m = n - k < burst ? n - k : burst;
		for (i = 0; i < m; i++)
			req_fill(b, &s[i], KM_OP_PUT, k + i);
		run(b, s, m);
		k += m;
	}
	t0 = km_util_now_ns() - t0;
	proc_close(b);
	return (double)n * 1e9 / (double)t0;
}

static void
bench_put(struct bench *b, uint32_t n)
{
	static const char *const names[] = {"none", "async", "sync"};
	double r32[3], r1[3];
	uint64_t busy[3];
	int m;

	for (m = 0; m < 3; m++) {
		r32[m] = put_rate(b, (uint8_t)m, n, BURST);
		busy[m] = b->busy;
		r1[m] = put_rate(b, (uint8_t)m, n / 10 + 1, 1);
	}
	printf("\nPUT throughput, %u-byte values (ops/s; ratio to none; BUSY answers sent "
	       "again, bursts):\n",
		b->vlen);
	printf("%-8s %14s %8s %16s %8s %8s\n", "mode", "bursts of 32", "ratio", "one at a time",
		"ratio", "BUSY");
	for (m = 0; m < 3; m++)
		printf("%-8s %14.0f %7.2fx %16.0f %7.2fx %8" PRIu64 "\n", names[m], r32[m],
			r32[m] / r32[0], r1[m], r1[m] / r1[0], busy[m]);
}

static void
bench_restart(struct bench *b, uint32_t keys)
{
	struct km_store_stats st;
	uint64_t t0;
	double fill_s, open_s, disk_s;

	b->durability = KM_DUR_NONE;
	wipe(b);
	t0 = km_util_now_ns();
	proc_open(b);
	fill(b, keys);
	proc_close(b);
	fill_s = (double)(km_util_now_ns() - t0) / 1e9;
	/* From the disk: the logs leave the page cache first. */
	drop_dir(b->dir);
	t0 = km_util_now_ns();
	proc_open(b);
	disk_s = (double)(km_util_now_ns() - t0) / 1e9;
	proc_close(b);
	/* Again, the logs now in the page cache (a restart right after a stop). */
	t0 = km_util_now_ns();
	proc_open(b);
	open_s = (double)(km_util_now_ns() - t0) / 1e9;
	km_proc_store_stats(b->p, &st);
	printf("\nRestart: %" PRIu64 " keys (%u-byte values) written in %.1f s, %" PRIu64
	       " MB of logs\n",
		st.keys, b->vlen, fill_s, st.file_bytes >> 20);
	printf("  replay to serving, logs read from the disk: %.2f s (%.1f M records/s)\n", disk_s,
		(double)st.replayed / disk_s / 1e6);
	printf("  replay to serving, logs in the page cache: %.2f s (%.1f M records/s)\n", open_s,
		(double)st.replayed / open_s / 1e6);
	printf("  index: %" PRIu64 " bytes = %.1f bytes per key (values excluded)\n",
		st.index_bytes, (double)st.index_bytes / (double)st.keys);
	if (st.keys != keys)
		die("keys lost across the restart", EIO);
	proc_close(b);
	wipe(b);
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: keymap-store-bench -d DIR [-k KEYS] [-n READS] [-v VLEN] [-p PUTS]\n"
		   "                          [-r RESTART_KEYS] [--only get|put|restart]\n"
		   "  -d DIR   an existing directory for the logs (DIR/cold is created)\n"
		   "  -k KEYS  keys for the GET latency runs (default 100000)\n"
		   "  -n READS timed GETs per kind (default 20000)\n"
		   "  -v VLEN  value bytes (default 64)\n"
		   "  -p PUTS  PUTs per durability mode (default 100000)\n"
		   "  -r KEYS  keys of the restart run (default 1000000; 0 = skip)\n");
}

/* A count on the command line: decimal, 0..UINT32_MAX (zero checked by the caller). */
static int
opt_u32(const char *s, uint32_t *out)
{
	uint64_t v;
	int rc = km_util_parse_u64(s, 0, UINT32_MAX, &v);

	if (rc == 0)
		*out = (uint32_t)v;
	return rc;
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"only", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct km_shardmap_params mp = {
		.nb_shards = SHARDS,
		.nb_workers = 1,
		.udp_port_base = 7070,
		.route_sep = '/',
		.route_depth = 1,
	};
	struct bench b = {.vlen = 64, .cache_bytes = UINT64_C(1) << 30};
	uint32_t keys = 100000, reads = 20000, puts = 100000, rkeys = 1000000;
	const char *only = NULL;
	int opt;

	b.dir[0] = '\0';
	while ((opt = getopt_long(argc, argv, "d:k:n:v:p:r:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'd':
			snprintf(b.dir, sizeof(b.dir), "%s", optarg);
			break;
		case 'k':
			if (opt_u32(optarg, &keys) < 0)
				goto bad;
			break;
		case 'n':
			if (opt_u32(optarg, &reads) < 0)
				goto bad;
			break;
		case 'v':
			if (opt_u32(optarg, &b.vlen) < 0)
				goto bad;
			break;
		case 'p':
			if (opt_u32(optarg, &puts) < 0)
				goto bad;
			break;
		case 'r':
			if (opt_u32(optarg, &rkeys) < 0)
				goto bad;
			break;
		case 'o':
			only = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (b.dir[0] == '\0' || keys == 0 || reads == 0 || b.vlen == 0 || b.vlen > VALUE_MAX ||
		puts == 0 ||
		(only != NULL && strcmp(only, "get") != 0 && strcmp(only, "put") != 0 &&
			strcmp(only, "restart") != 0))
		goto bad;
	snprintf(b.cold, sizeof(b.cold), "%s/cold", b.dir);
	if (mkdir(b.cold, 0755) < 0 && errno != EEXIST)
		die(b.cold, errno);
	if (km_shardmap_create(&mp, &b.map) < 0)
		die("shard map", ENOMEM);
	printf("keymap-store-bench: %s, %u shards, one worker (km_proc), cache %" PRIu64 " MB\n",
		b.dir, SHARDS, b.cache_bytes >> 20);
	if (only == NULL || strcmp(only, "get") == 0)
		bench_get(&b, keys, reads);
	if (only == NULL || strcmp(only, "put") == 0)
		bench_put(&b, puts);
	if ((only == NULL || strcmp(only, "restart") == 0) && rkeys != 0)
		bench_restart(&b, rkeys);
	wipe(&b);
	km_shardmap_free(b.map);
	return 0;
bad:
	usage(stderr);
	return 1;
}
