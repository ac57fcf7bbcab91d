/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libFuzzer target: the request path of a worker (parse -> route -> execute -> reply),
 * km_proc_rx_burst() over a mem store, as keymapd runs it after its L2-L4 checks. The
 * input is cut into datagrams (2-byte little-endian length, then the bytes) and given as
 * one burst; every reply must fit the buffer it was written into, and a request must get
 * a verdict, and no reply may be larger than its request unless the request carries a
 * valid cookie (no amplification). As in keymapd, a datagram gets a buffer of
 * KM_DGRAM_MAX bytes, or one of KM_MSG_MAX when it is larger (reassembled from fragments),
 * and a GET sent back for room (KM_PROC_GROW) is submitted again in a KM_MSG_MAX one.
 * State (keys, versions, the at-most-once table) carries over between inputs, as in a
 * server.
 *
 * Cookies are on with fixed secrets (all zero bytes) and slot 1, so that seeds can carry
 * valid cookies (km_cookie(0, src, 1) for the sources below); client keys: key 1 (read-write)
 * and key 2 (read-only, keys under "pub/"), both with an all-zero secret, not required.
 */

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <km_proc.h>
#include <km_proto.h>

#define BURST 32

static struct km_proc *proc;
static struct km_shardmap *map;
static struct km_hello_secrets hs;
static struct km_auth_key keys[2];
static char pub[] = "pub/";
static struct km_auth auth = {.nb = 2, .keys = keys};
static const uint8_t zero_secret[KM_MAC_KEY_LEN];

/* At exit, before the leak check: what the inputs stored is not a leak. */
static void
fini(void)
{
	km_proc_destroy(proc);
	km_shardmap_free(map);
}

static void
init(void)
{
	struct km_shardmap_params mp = {
		.nb_shards = 4,
		.nb_workers = 1,
		.udp_port_base = 7070,
		.route_sep = '/',
		.route_depth = 1,
	};
	struct km_proc_params pp = {
		.worker = 0,
		.value_max = KM_VALUE_MAX_LARGE,
		.reply_max = KM_MSG_MAX,
		.store_driver = "mem",
		.version_base = 1,
		.dram_max = 8 << 20, /* the FULL path too, and bounded memory */
	};
	uint32_t i, j;

	if (km_hello_init(&hs, 60000, 0) != 0)
		abort();
	for (i = 0; i < KM_HELLO_SECRETS; i++)
		for (j = 0; j < 2; j++)
			atomic_store(&hs.key[i][j], 0);
	pp.hello = &hs;
	keys[0] = (struct km_auth_key){.id = 1, .write = 1};
	keys[1] = (struct km_auth_key){.id = 2, .nb_prefix = 1, .prefix_len = {4}, .prefix = {pub}};
	if (km_shardmap_create(&mp, &map) != 0 || km_proc_create(&pp, &proc) != 0)
		abort();
	km_proc_set_auth(proc, &auth);
	km_proc_time(proc, hs.slot_ns + 1); /* slot 1 */
	for (i = 0; i < km_shardmap_nb_shards(map); i++)
		if (km_proc_shard_add(proc, km_shard_id(km_shardmap_shard_at(map, i))) != 0)
			abort();
	atexit(fini);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t bufs[BURST][KM_DGRAM_MAX], large[BURST][KM_MSG_MAX];
	struct km_proc_req r[BURST];
	uint8_t validated[BURST];
	struct km_msg m;
	unsigned int n = 0, i;
	size_t len;
	uint8_t *b;

	if (proc == NULL)
		init();
	while (size >= 2 && n < BURST) {
		len = (size_t)data[0] | (size_t)data[1] << 8;
		data += 2;
		size -= 2;
		len = len < size ? len : size;
		len = len < KM_MSG_MAX ? len : KM_MSG_MAX;
		b = len <= KM_DGRAM_MAX ? bufs[n] : large[n];
		memcpy(b, data, len);
		r[n] = (struct km_proc_req){
			.buf = b,
			.len = len,
			.cap = len <= KM_DGRAM_MAX ? KM_DGRAM_MAX : KM_MSG_MAX,
			.src = (uint64_t)(n & 3) << 16 | 40000, /* a few clients */
			.port_worker = (int16_t)(n % 3) - 1,
		};
		/* Whether it carries the cookie of its source (slot 1 or 0). */
		validated[n] = km_req_parse(b, len, KM_VALUE_MAX_LARGE, &m) >= 0 &&
			       (m.hdr.flags & KM_F_COOKIE) != 0 &&
			       (m.cookie == km_cookie(zero_secret, r[n].src, 1) ||
				       m.cookie == km_cookie(zero_secret, r[n].src, 0));
		data += len;
		size -= len;
		n++;
	}
	if (n == 0)
		return 0;
	km_proc_rx_burst(proc, map, r, n);
	for (i = 0; i < n; i++) {
		if (r[i].verdict == KM_PROC_GROW) {
			if (r[i].cap == KM_MSG_MAX)
				abort(); /* it had all the room there is */
			memcpy(large[i], r[i].buf, r[i].len);
			r[i].buf = large[i];
			r[i].cap = KM_MSG_MAX;
			r[i].again = 1;
			km_proc_rx(proc, map, &r[i]);
		}
		if (r[i].verdict == KM_PROC_REPLY &&
			(r[i].reply_len < KM_HDR_LEN || r[i].reply_len > r[i].cap))
			abort();
		if (r[i].verdict == KM_PROC_DEFER) /* no disk: nothing may wait */
			abort();
		if (r[i].verdict == KM_PROC_REPLY && r[i].reply_len > r[i].len && !validated[i])
			abort(); /* an amplifier */
	}
	return 0;
}
