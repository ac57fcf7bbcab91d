/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymap-proc-bench: cost of keymapd's per-request processing without network I/O.
 *
 * One km_proc owns every shard (a map with one worker), as a keymapd worker would. The
 * requests of a burst are copied from a pre-built array into per-request buffers (as the
 * NIC would deliver an RX burst), then go through the one call of process_burst() in
 * app/keymapd/worker.c: km_proc_rx_burst() on the burst (parse, route, staged prefetch,
 * execute), replies written over the requests. With -b 0, each request instead goes
 * through km_proc_rx() alone (no overlap of cache misses, for comparison). L2-L4 parsing, RX/TX and
 * hand-off between workers are not measured.
 *
 * -S log measures the log store behind the worker's value cache (sized to hold every key:
 * every GET of a stored key is a cache hit; data in a temporary directory under /var/tmp,
 * durability none), with km_proc_poll() after each burst as the worker loop calls it.
 * -P N turns predictive prefetch's worker part on (the stream detector on every GET, one client in
 * N sampled, 0: none; with one client, 1 samples every access: the notes are taken after each burst
 * as the worker takes them, the ring enqueue is not measured): the cost a GET hit pays for
 * prediction.
 *
 * -A cookie|mac|both measures the guards (lib/proc/proc_guard.c): every request carries a
 * HELLO cookie (fetched first, through the processor) and/or a MAC of client key 1 (with
 * [security] auth = 1: every request checked). The MAC covers the request id, so those
 * requests are sealed once, each with its own id, and not given a fresh id per delivery:
 * with PUTs (-g < 1) every request must then be distinct (-n at most the pre-built count).
 */

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <x86intrin.h>

#include <km_proc.h>

#include <km_proto.h>
#include <km_shardmap.h>
#include <km_util.h>

/* keymapd's defaults (app/keymapd/config.c): the server whose datapath is measured. */
#define CONF_SHARDS       16
#define CONF_ROUTE_SEP    '/'
#define CONF_ROUTE_DEPTH  1
#define CONF_VALUE_MAX    1024
#define CONF_INITIAL_KEYS 1024
#define CONF_DEDUP        65536
#define CONF_UDP_PORT     7070

#define WORKER     0 /* the one worker, addressed by every request */
#define SRC        ((UINT64_C(0x0a000001) << 16) | 40000) /* client 10.0.0.1:40000 */
#define REQ_ID_OFF 16 /* byte offset of req_id in the wire header (struct km_hdr) */

#define OPS_MAX        (UINT64_C(1) << 40)
#define KEYS_MAX       (UINT64_C(1) << 28)
#define REQS_MAX       (UINT64_C(1) << 20)   /* pre-built requests, cycled */
#define REQS_BYTES_MAX (UINT64_C(256) << 20) /* ... within this much memory */
#define BURST_MAX      64                    /* keymapd's largest [workers] burst */
#define BURST_DEFAULT  32                    /* keymapd's default [workers] burst */
#define NB_BUFS        BURST_MAX             /* per-request buffers: one RX burst of mbufs */
#define BUF_LEN        2048                  /* mbuf data room: room for any reply */
/* Distance between two buffers: a DPDK mempool of 2 KB mbufs places objects 37 cache lines
 * apart (data room, headroom, mbuf and object headers, rounded to an odd number of lines).
 * A power-of-two stride would put every request in the same few L1 sets, a conflict
 * keymapd does not have. */
#define BUF_STRIDE (37 * 64)

/* Key characters: 6 bits each, no route separator, so every key routes by all its bytes
 * (flat keys, the common case in km_proc's key_init()). */
static const char key_alphabet[] =
	"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

static uint8_t bufs[NB_BUFS][BUF_STRIDE] __attribute__((aligned(64)));

struct bench {
	struct km_proc *proc;
	const struct km_shardmap *map;
	uint32_t klen;
	uint32_t vlen;
	uint32_t burst;      /* requests per staged burst, 0 = one at a time */
	int disk;            /* a store with values on disk: poll, take the notes */
	const uint8_t *reqs; /* pre-built datagrams, back to back */
	const uint32_t *off; /* request i is reqs[off[i], off[i + 1]) */
	const uint8_t *miss; /* request i is a GET of a key never stored */
	uint64_t nb_reqs;
	int has_cookie;         /* -A cookie|both */
	uint64_t cookie;        /* ... fetched with HELLO */
	const uint8_t *mac_key; /* -A mac|both: client key 1's secret, else NULL */
};

/* -A mac|both: client key 1, read-write, every key. */
static const uint8_t bench_secret[KM_MAC_KEY_LEN] = {
	0x6b, 0x6d, 0x2d, 0x62, 0x65, 0x6e, 0x63, 0x68, 1, 2, 3, 4, 5, 6, 7, 8};

/* Outcomes of the measured requests: [is_get][status], dropped, GET OK of the wrong size. */
struct tally {
	uint64_t st[2][KM_ST__MAX];
	uint64_t dropped[2];
	uint64_t get_bad_len;
	/* GETs answered OK for a key never stored, or NOT_FOUND for one stored. */
	uint64_t get_wrong;
	uint64_t reply_bytes;
};

static void
usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [-n ops] [-k keys] [-K keylen] [-v vallen] [-g get_ratio]\n"
		"          [-m miss_ratio] [-s seed] [-b burst] [-S mem|log] [-P sampling]\n"
		"          [-A cookie|mac|both]\n"
		"  -n ops        requests measured, 1..%llu (default 10000000)\n"
		"  -k keys       distinct keys, all preloaded with PUT, 1..%llu (default 100000)\n"
		"  -K keylen     key length in bytes, 1..%d (default 16)\n"
		"  -v vallen     value length in bytes, 0..%d - keylen (default 64)\n"
		"  -g get_ratio  share of GETs, the rest PUTs, 0..1 (default 1.0)\n"
		"  -m miss_ratio share of the GETs for keys never stored (NOT_FOUND), 0..1\n"
		"                (default 0)\n"
		"  -s seed       seed of the uniform key sequence (default 1)\n"
		"  -b burst      requests per burst, staged as keymapd runs them, 1..%d\n"
		"                (default %d); 0: one at a time through km_proc_rx()\n"
		"  -S driver     store: mem (default) or log (values on disk behind a cache\n"
		"                that holds every key: GETs of stored keys are cache hits)\n"
		"  -P sampling   log: predictive prefetch's worker part on: the stream\n"
		"                detector, and one client in `sampling` sampled (0: none)\n"
		"  -A guards     every request carries a HELLO cookie (cookie), a MAC of a client\n"
		"                key with auth required (mac), or both: their cost per request\n",
		prog, (unsigned long long)OPS_MAX, (unsigned long long)KEYS_MAX, KM_KEY_MAX,
		KM_DGRAM_MAX - KM_HDR_LEN, BURST_MAX, BURST_DEFAULT);
}

static const char *tmp_dir; /* -S log: removed at exit */

static void
cleanup_dir(void)
{
	if (tmp_dir != NULL)
		(void)km_util_rmtree(tmp_dir);
}

/* Key number id, distinct for id < 64^klen. */
static void
key_make(uint8_t *key, uint32_t klen, uint64_t id)
{
	uint32_t i;

	for (i = 0; i < klen; i++) {
		key[i] = (uint8_t)key_alphabet[id & 63];
		id >>= 6;
	}
}

/* A request datagram as a client builds it (up-to-date epoch), with the trailers of -A. */
static size_t
req_build(const struct bench *b, uint8_t *out, size_t cap, uint8_t op, uint64_t id,
	const uint8_t *val, uint64_t req_id)
{
	uint8_t key[KM_KEY_MAX];
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = op,
		.key_len = (uint16_t)b->klen,
		.val_len = op == KM_OP_PUT ? b->vlen : 0,
		.epoch = km_shardmap_epoch(b->map),
		.req_id = req_id,
	};
	size_t len;

	key_make(key, b->klen, id);
	len = km_msg_build(out, cap, &h, key, val);
	if (len != 0 && (b->has_cookie || b->mac_key != NULL))
		len = km_req_seal(out, len, cap, b->has_cookie, b->cookie, 1, b->mac_key);
	return len;
}

/* A request datagram as keymapd's worker hands it to the processor (after L2-L4). */
static inline struct km_proc_req
req_of(uint8_t *buf, size_t len)
{
	return (struct km_proc_req){
		.buf = buf, .len = len, .cap = BUF_LEN, .src = SRC, .port_worker = WORKER};
}

/* The reply length of a request the processor is done with, 0 when it would drop it or
 * hand it off (impossible with one worker). */
static inline size_t
reply_len(const struct km_proc_req *r)
{
	return r->verdict == KM_PROC_REPLY ? r->reply_len : 0;
}

/*
 * One request alone through km_proc_rx(); the reply overwrites the request.
 * @return reply length, 0 when the worker would drop or hand the request off.
 */
static inline size_t
proc_one(const struct bench *b, uint8_t *buf, size_t len)
{
	struct km_proc_req r = req_of(buf, len);

	km_proc_rx(b->proc, b->map, &r);
	return reply_len(&r);
}

/* After a burst, as keymapd's worker loop: reap completions, write groups out, and hand
 * the notes for the control lcore on (here: dropped). */
static __attribute__((noinline)) void
worker_after_disk(const struct bench *b)
{
	struct km_proc_done done[BURST_MAX];
	struct km_proc_note notes[8];

	km_proc_prefetch_run(b->proc, b->map);
	while (km_proc_poll(b->proc, done, BURST_MAX) != 0)
		;
	while (km_proc_notes(b->proc, notes, 8) != 0)
		;
}

static inline void
worker_after(const struct bench *b)
{
	if (b->disk)
		worker_after_disk(b);
}

/* -A cookie|both: HELLO through the processor, as a client's first request. */
static int
hello(struct bench *b)
{
	static const uint8_t pad[KM_HELLO_LEN];
	uint8_t *buf = bufs[0];
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = KM_OP_HELLO,
		.val_len = KM_HELLO_LEN,
		.req_id = 1,
	};
	size_t len = km_msg_build(buf, BUF_LEN, &h, NULL, pad);

	if (b->mac_key != NULL)
		len = km_req_seal(buf, len, BUF_LEN, 0, 0, 1, b->mac_key);
	if (proc_one(b, buf, len) != KM_HDR_LEN + KM_HELLO_LEN || buf[3] != KM_ST_OK) {
		fprintf(stderr, "HELLO failed (%s)\n", km_status_name(buf[3]));
		return -1;
	}
	b->cookie = km_get64(buf + KM_HDR_LEN);
	b->has_cookie = 1;
	return 0;
}

/* PUT every key once, through the same path. @return 0 or -1 (a PUT failed). */
static int
preload(const struct bench *b, uint64_t nb_keys, const uint8_t *val, uint64_t *req_id)
{
	uint64_t id;
	size_t len;

	for (id = 0; id < nb_keys; id++) {
		uint8_t *buf = bufs[id % NB_BUFS];

		len = req_build(b, buf, BUF_LEN, KM_OP_PUT, id, val, ++*req_id);
		if (len == 0 || proc_one(b, buf, len) != KM_HDR_LEN || buf[3] != KM_ST_OK) {
			fprintf(stderr, "preload: PUT of key %llu failed (%s)\n",
				(unsigned long long)id, km_status_name(buf[3]));
			return -1;
		}
		if (id % 1024 == 0)
			worker_after(b);
	}
	while (b->disk && km_proc_busy(b->proc))
		worker_after(b);
	return 0;
}

/* Count the outcome of a request from its reply (n bytes in buf, 0: none). Every reply
 * echoes the request's op. */
static inline void
tally_add(const struct bench *b, struct tally *t, const uint8_t *buf, size_t n, uint64_t j)
{
	int is_get = buf[2] == KM_OP_GET;

	/* A hit for a miss or the other way round (other statuses are counted below). */
	if (is_get && n != 0 && (buf[3] == KM_ST_OK || buf[3] == KM_ST_NOT_FOUND) &&
		(buf[3] == KM_ST_NOT_FOUND) != b->miss[j])
		t->get_wrong++;

	if (n == 0) {
		t->dropped[is_get]++;
	} else {
		t->st[is_get][buf[3] < KM_ST__MAX ? buf[3] : KM_ST_ERROR]++;
		if (is_get && buf[3] == KM_ST_OK && n != (size_t)KM_HDR_LEN + b->vlen)
			t->get_bad_len++;
	}
	t->reply_bytes += n;
}

/* Copy request j into buf as the NIC would deliver it, with a fresh req_id (a retry would
 * be answered from the at-most-once table instead of executed). @return its length. */
static inline uint32_t
req_deliver(const struct bench *b, uint64_t j, uint64_t req_id, uint8_t *buf)
{
	uint32_t len = b->off[j + 1] - b->off[j];

	memcpy(buf, b->reqs + b->off[j], len);
	if (b->mac_key == NULL) /* sealed requests keep the id their MAC covers */
		km_put64(buf + REQ_ID_OFF, req_id);
	return len;
}

/* One request at a time through km_proc_rx() (-b 0). */
static inline void
run_single(const struct bench *b, uint64_t ops, uint64_t req_id, struct tally *t)
{
	uint64_t i, j = 0;

	for (i = 0; i < ops; i++) {
		uint8_t *buf = bufs[i % NB_BUFS];
		uint32_t len = req_deliver(b, j, req_id + i, buf);

		tally_add(b, t, buf, proc_one(b, buf, len), j);
		worker_after(b);
		if (++j == b->nb_reqs)
			j = 0;
	}
}

/* Bursts through km_proc_rx_burst(), as process_burst() in keymapd's worker runs them. */
static inline void
run_burst(const struct bench *b, uint64_t ops, uint64_t req_id, struct tally *t)
{
	struct km_proc_req r[BURST_MAX];
	uint64_t i = 0, j = 0, jk[BURST_MAX];
	unsigned int k, nb;

	while (i < ops) {
		nb = ops - i < b->burst ? (unsigned int)(ops - i) : b->burst;
		for (k = 0; k < nb; k++) {
			r[k] = req_of(bufs[k], req_deliver(b, j, req_id + i + k, bufs[k]));
			jk[k] = j;
			if (++j == b->nb_reqs)
				j = 0;
		}
		km_proc_rx_burst(b->proc, b->map, r, nb);
		for (k = 0; k < nb; k++)
			tally_add(b, t, bufs[k], reply_len(&r[k]), jk[k]);
		worker_after(b);
		i += nb;
	}
}

/*
 * The measured loop: deliver, process, count the outcome.
 * Not inlined so that callgrind --toggle-collect=bench_run isolates it.
 */
static __attribute__((noinline)) void
bench_run(const struct bench *b, uint64_t ops, uint64_t req_id, struct tally *t)
{
	if (b->burst == 0)
		run_single(b, ops, req_id, t);
	else
		run_burst(b, ops, req_id, t);
}

/* The request copy alone, to show how much of the figure is the simulated NIC. */
static __attribute__((noinline)) void
copy_run(const struct bench *b, uint64_t ops, uint64_t req_id)
{
	uint64_t i, j = 0;

	for (i = 0; i < ops; i++) {
		uint8_t *buf = bufs[i % NB_BUFS];

		req_deliver(b, j, req_id + i, buf);
		__asm__ volatile("" : : "r"(buf) : "memory"); /* keep the copy */
		if (++j == b->nb_reqs)
			j = 0;
	}
}

/* Pre-build the request sequence: uniform keys, GET with probability get_ratio, and of
 * the GETs, miss_ratio for keys nb_keys .. 2 nb_keys - 1 (never stored). */
static int
reqs_build(struct bench *b, uint64_t ops, uint64_t nb_keys, double get_ratio, double miss_ratio,
	uint64_t seed, const uint8_t *val, uint64_t *nb_get)
{
	size_t max_len =
		(size_t)KM_HDR_LEN + b->klen + (get_ratio < 1.0 ? b->vlen : 0) + KM_TRAILER_MAX;
	uint64_t rng = seed, i, pos = 0, n;
	uint32_t *off;
	uint8_t *reqs, *miss;

	n = ops < REQS_MAX ? ops : REQS_MAX;
	if (n > REQS_BYTES_MAX / max_len)
		n = REQS_BYTES_MAX / max_len;
	reqs = malloc(n * max_len);
	off = malloc((n + 1) * sizeof(*off));
	miss = calloc(n, 1);
	if (reqs == NULL || off == NULL || miss == NULL) {
		free(reqs);
		free(off);
		free(miss);
		return -ENOMEM;
	}
	*nb_get = 0;
	for (i = 0; i < n; i++) {
		uint64_t id = km_util_splitmix64(&rng) % nb_keys;
		/* 53 random bits as a double in [0, 1): exact comparison with the ratio. */
		int get = (double)(km_util_splitmix64(&rng) >> 11) * 0x1.0p-53 < get_ratio;

		if (get && miss_ratio > 0 &&
			(double)(km_util_splitmix64(&rng) >> 11) * 0x1.0p-53 < miss_ratio) {
			id += nb_keys;
			miss[i] = 1;
		}
		off[i] = (uint32_t)pos;
		/* Ids above the preload's; sealed requests keep theirs. */
		pos += req_build(b, reqs + pos, max_len, get ? KM_OP_GET : KM_OP_PUT, id, val,
			(UINT64_C(1) << 40) + i);
		*nb_get += get;
	}
	off[n] = (uint32_t)pos;
	b->reqs = reqs;
	b->off = off;
	b->miss = miss;
	b->nb_reqs = n;
	return 0;
}

/* GETs of never-stored keys among the first ops requests of the cycled sequence. */
static uint64_t
misses_of(const struct bench *b, uint64_t ops)
{
	uint64_t i, in_cycle = 0, in_rest = 0;

	for (i = 0; i < b->nb_reqs; i++) {
		in_cycle += b->miss[i];
		if (i < ops % b->nb_reqs)
			in_rest += b->miss[i];
	}
	return ops / b->nb_reqs * in_cycle + in_rest;
}

int
main(int argc, char **argv)
{
	uint64_t ops = 10000000, nb_keys = 100000, klen = 16, vlen = 64, seed = 1;
	uint64_t burst = BURST_DEFAULT, sample_every = 0;
	uint64_t req_id = 0, nb_get_built, i, nb_get, nb_put, nb_miss, get_fail, put_fail;
	struct km_shardmap_params mp = {
		.nb_shards = CONF_SHARDS,
		.nb_workers = 1,
		.udp_port_base = CONF_UDP_PORT,
		.route_sep = CONF_ROUTE_SEP,
		.route_depth = CONF_ROUTE_DEPTH,
	};
	struct km_proc_params pp = {
		.worker = WORKER,
		.dedup_entries = CONF_DEDUP,
		.store_driver = "mem",
		.store_initial_keys = CONF_INITIAL_KEYS,
	};
	struct km_proc_counters c0, c1;
	static uint8_t val[KM_VALUE_MAX];
	struct km_shardmap *map;
	struct tally t;
	double get_ratio = 1.0, miss_ratio = 0, t0, t_pre, t_run, t_copy, hz;
	uint64_t tsc0, tsc1;
	struct bench b = {0};
	char dir[64] = "", cold[80];
	const char *guards = NULL;
	static struct km_hello_secrets hs;
	struct km_auth_key key = {.id = 1, .write = 1};
	struct km_auth auth = {.required = 1, .nb = 1, .keys = &key};
	int opt, rc, pf = 0;

	while ((opt = getopt(argc, argv, "n:k:K:v:g:m:s:b:S:P:A:h")) != -1) {
		switch (opt) {
		case 'n':
			rc = km_util_parse_u64(optarg, 1, OPS_MAX, &ops);
			break;
		case 'k':
			rc = km_util_parse_u64(optarg, 1, KEYS_MAX, &nb_keys);
			break;
		case 'K':
			rc = km_util_parse_u64(optarg, 1, KM_KEY_MAX, &klen);
			break;
		case 'v':
			rc = km_util_parse_u64(optarg, 0, KM_VALUE_MAX, &vlen);
			break;
		case 'g':
			rc = km_util_parse_double(optarg, 0, 1, &get_ratio);
			break;
		case 'm':
			rc = km_util_parse_double(optarg, 0, 1, &miss_ratio);
			break;
		case 's':
			rc = km_util_parse_u64(optarg, 0, UINT64_MAX, &seed);
			break;
		case 'b':
			rc = km_util_parse_u64(optarg, 0, BURST_MAX, &burst);
			break;
		case 'S':
			rc = strcmp(optarg, "mem") == 0 || strcmp(optarg, "log") == 0 ? 0 : -1;
			pp.store_driver = optarg;
			break;
		case 'P':
			pf = 1;
			rc = km_util_parse_u64(optarg, 0, 1024, &sample_every);
			break;
		case 'A':
			guards = optarg;
			rc = strcmp(optarg, "cookie") == 0 || strcmp(optarg, "mac") == 0 ||
					     strcmp(optarg, "both") == 0
				     ? 0
				     : -1;
			break;
		default:
			rc = -1;
			break;
		}
		if (rc != 0) {
			usage(argv[0]);
			return 1;
		}
	}
	/* A PUT must fit in a datagram; keys must be distinct; -P needs a store on disk. */
	if (optind != argc || (pf && strcmp(pp.store_driver, "log") != 0) ||
		KM_HDR_LEN + klen + vlen + (guards != NULL ? KM_TRAILER_MAX : 0) > KM_DGRAM_MAX ||
		(klen * 6 < 64 &&
			nb_keys * (miss_ratio > 0 ? 2 : 1) > (UINT64_C(1) << (klen * 6)))) {
		usage(argv[0]);
		return 1;
	}

	rc = km_shardmap_create(&mp, &map);
	if (rc < 0) {
		fprintf(stderr, "shard map: %s\n", strerror(-rc));
		return 1;
	}
	/* keymapd's value_max, raised when the values measured need more. */
	pp.value_max = vlen > CONF_VALUE_MAX ? (uint32_t)vlen : CONF_VALUE_MAX;
	if (strcmp(pp.store_driver, "log") == 0) {
		strcpy(dir, "/var/tmp/km-proc-bench-XXXXXX");
		if (mkdtemp(dir) == NULL) {
			fprintf(stderr, "%s: %s\n", dir, strerror(errno));
			return 1;
		}
		snprintf(cold, sizeof(cold), "%s/cold", dir);
		if (mkdir(cold, 0700) < 0) {
			fprintf(stderr, "%s: %s\n", cold, strerror(errno));
			(void)km_util_rmtree(dir);
			return 1;
		}
		atexit(cleanup_dir);
		tmp_dir = dir;
		pp.dir = dir;
		pp.cold_dir = cold;
		pp.durability = KM_DUR_NONE;
		pp.route_sep = CONF_ROUTE_SEP;
		pp.route_depth = CONF_ROUTE_DEPTH;
		/* Room for every entry: the cache's charge per entry plus key and value. */
		pp.cache_bytes = nb_keys * (KM_CACHE_ENTRY_OVERHEAD + klen + vlen) * 5 / 4 + 65536;
		b.disk = 1;
	}
	if (guards != NULL && strcmp(guards, "mac") != 0) {
		/* One slot of an hour: the run stays in it (the processor's clock is set once). */
		rc = km_hello_init(&hs, 3600000, 0);
		if (rc < 0) {
			fprintf(stderr, "cookie secrets: %s\n", strerror(-rc));
			return 1;
		}
		pp.hello = &hs;
	}
	rc = km_proc_create(&pp, &b.proc);
	if (rc < 0) {
		fprintf(stderr, "processor: %s\n", strerror(-rc));
		return 1;
	}
	if (guards != NULL && strcmp(guards, "cookie") != 0) {
		memcpy(key.secret, bench_secret, sizeof(bench_secret));
		km_proc_set_auth(b.proc, &auth);
		b.mac_key = bench_secret;
	}
	if (pf) {
		struct km_proc_pf_params pfp = {
			.sample_every = (uint32_t)sample_every, .stream = 1};

		km_proc_prefetch_params(b.proc, &pfp);
	}
	for (i = 0; i < km_shardmap_nb_shards(map); i++) {
		rc = km_proc_shard_add(b.proc, km_shard_id(km_shardmap_shard_at(map, i)));
		if (rc < 0) {
			fprintf(stderr, "shard %llu: %s\n",
				(unsigned long long)km_shard_id(km_shardmap_shard_at(map, i)),
				strerror(-rc));
			return 1;
		}
	}
	b.map = map;
	b.klen = (uint32_t)klen;
	b.vlen = (uint32_t)vlen;
	b.burst = (uint32_t)burst;
	km_proc_time(b.proc, 1);
	if (pp.hello != NULL && hello(&b) != 0)
		return 1;
	memset(val, 'v', sizeof(val));
	memset(&t, 0, sizeof(t));

	t0 = km_util_now_ns() * 1e-9;
	if (preload(&b, nb_keys, val, &req_id) != 0)
		return 1;
	t_pre = km_util_now_ns() * 1e-9 - t0;
	if (reqs_build(&b, ops, nb_keys, get_ratio, miss_ratio, seed, val, &nb_get_built) != 0) {
		fprintf(stderr, "cannot allocate the request array\n");
		return 1;
	}
	if (b.mac_key != NULL && get_ratio < 1.0 && ops > b.nb_reqs) {
		fprintf(stderr,
			"-A %s with PUTs: -n must be at most %llu (sealed requests are not "
			"given fresh ids, and a repeated PUT is a retry)\n",
			guards, (unsigned long long)b.nb_reqs);
		return 1;
	}

	c0 = *km_proc_counters(b.proc);
	t0 = km_util_now_ns() * 1e-9;
	tsc0 = __rdtsc();
	bench_run(&b, ops, req_id + 1, &t);
	tsc1 = __rdtsc();
	t_run = km_util_now_ns() * 1e-9 - t0;
	c1 = *km_proc_counters(b.proc);
	req_id += ops;

	t0 = km_util_now_ns() * 1e-9;
	copy_run(&b, ops, req_id + 1);
	t_copy = km_util_now_ns() * 1e-9 - t0;

	nb_get = nb_put = get_fail = put_fail = 0;
	for (i = 0; i < KM_ST__MAX; i++) {
		nb_get += t.st[1][i];
		nb_put += t.st[0][i];
	}
	nb_get += t.dropped[1];
	nb_put += t.dropped[0];
	/* Other statuses, drops, values of the wrong size, and GETs answered otherwise than
	 * built (each reply against its request). */
	nb_miss = misses_of(&b, ops);
	get_fail =
		nb_get - t.st[1][KM_ST_OK] - t.st[1][KM_ST_NOT_FOUND] + t.get_bad_len + t.get_wrong;
	put_fail = nb_put - t.st[0][KM_ST_OK];
	hz = (double)(tsc1 - tsc0) / t_run;

	printf("setup:      1 worker, %u shards, %llu keys (key %llu B, value %llu B), "
	       "get ratio %.3f, miss ratio %.3f, seed %llu\n",
		km_shardmap_nb_shards(map), (unsigned long long)nb_keys, (unsigned long long)klen,
		(unsigned long long)vlen, get_ratio, miss_ratio, (unsigned long long)seed);
	printf("store:      %s%s\n", pp.store_driver,
		b.disk ? (pf ? ", cache holds every key, prefetch on" : ", cache holds every key")
		       : "");
	if (guards != NULL)
		printf("guards:     %s%s\n", b.has_cookie ? "HELLO cookie on every request" : "",
			b.mac_key != NULL ? (b.has_cookie ? ", MAC of client key 1, auth required"
							  : "MAC of client key 1, auth required")
					  : "");
	if (pf)
		printf("prefetch:   stream detector on every GET, sampling %s%llu\n",
			sample_every ? "1 in " : "", (unsigned long long)sample_every);
	if (burst == 0)
		printf("path:       one request at a time (km_proc_rx)\n");
	else
		printf("path:       staged, bursts of %llu (km_proc_rx_burst)\n",
			(unsigned long long)burst);
	printf("preload:    %llu PUT in %.3f s (%.2f Mops/s)\n", (unsigned long long)nb_keys, t_pre,
		nb_keys / t_pre / 1e6);
	printf("requests:   %llu pre-built (%.1f MiB, %llu GET), cycled\n",
		(unsigned long long)b.nb_reqs, b.off[b.nb_reqs] / 1048576.0,
		(unsigned long long)nb_get_built);
	printf("ops:        %llu (GET %llu, PUT %llu) in %.3f s\n", (unsigned long long)ops,
		(unsigned long long)nb_get, (unsigned long long)nb_put, t_run);
	printf("rate:       %.2f Mops/s\n", ops / t_run / 1e6);
	printf("ns/op:      %.1f\n", t_run * 1e9 / ops);
	printf("cycles/op:  %.1f TSC (TSC %.3f GHz, estimated against CLOCK_MONOTONIC)\n",
		(double)(tsc1 - tsc0) / ops, hz / 1e9);
	printf("copy only:  %.1f ns/op (request copy into the buffer, included above)\n",
		t_copy * 1e9 / ops);
	printf("statuses:   GET OK %llu, NOT_FOUND %llu, other %llu; PUT OK %llu, other %llu\n",
		(unsigned long long)t.st[1][KM_ST_OK], (unsigned long long)t.st[1][KM_ST_NOT_FOUND],
		(unsigned long long)(nb_get - t.st[1][KM_ST_OK] - t.st[1][KM_ST_NOT_FOUND]),
		(unsigned long long)t.st[0][KM_ST_OK], (unsigned long long)put_fail);
	printf("counters:   req_get %llu, get_hit %llu, req_put %llu, write_retry %llu\n",
		(unsigned long long)(c1.req_get - c0.req_get),
		(unsigned long long)(c1.get_hit - c0.get_hit),
		(unsigned long long)(c1.req_put - c0.req_put),
		(unsigned long long)(c1.write_retry - c0.write_retry));
	if (pf)
		printf("prefetch:   stream asked %llu, reads started %llu, samples %llu\n",
			(unsigned long long)(c1.stream_prefetches - c0.stream_prefetches),
			(unsigned long long)(c1.prefetch_issued - c0.prefetch_issued),
			(unsigned long long)(c1.samples - c0.samples));
	/* Every key but the -m ones was preloaded and none is deleted: every GET must hit or
	 * miss as built, every PUT succeed, and the processor's own counters must agree. */
	if (get_fail != 0 || put_fail != 0 || c1.get_hit - c0.get_hit != nb_get - nb_miss ||
		c1.req_put - c0.req_put != nb_put || c1.write_retry != c0.write_retry) {
		printf("check:      FAILED (%llu GET, %llu PUT failed)\n",
			(unsigned long long)get_fail, (unsigned long long)put_fail);
		return 1;
	}
	printf("check:      ok, %s, all PUTs succeeded\n",
		nb_miss != 0 ? "every GET hit or missed as built" : "all GETs hit");

	free((void *)b.reqs);
	free((void *)b.off);
	free((void *)b.miss);
	km_proc_destroy(b.proc);
	km_shardmap_free(map);
	return 0;
}
