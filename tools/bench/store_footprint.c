/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymap-store-footprint: memory cost per key of the "mem" store driver, as the store
 * reports it and as the process really pays it (RSS), plus single-thread insert and
 * lookup rates. One store instance, keys inserted in order, looked up in random order.
 */

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <km_store.h>
#include <km_util.h>

static void
usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [-n keys] [-k keylen] [-v vallen]\n"
		"  -n keys    number of keys to insert (default 10000000)\n"
		"  -k keylen  key length in bytes, 1..%d (default 16)\n"
		"  -v vallen  value length in bytes, 0..65535 (default 64)\n",
		prog, KM_KEY_MAX);
}

/* Resident set size in bytes, from /proc/self/statm (second field, in pages). */
static int
rss_bytes(uint64_t *out)
{
	unsigned long long size, resident;
	FILE *f = fopen("/proc/self/statm", "r");
	int n;

	if (f == NULL)
		return -errno;
	n = fscanf(f, "%llu %llu", &size, &resident);
	fclose(f);
	if (n != 2)
		return -EIO;
	*out = resident * (uint64_t)sysconf(_SC_PAGESIZE);
	return 0;
}

/* Key number id: its bytes in the first (up to 8) bytes, the rest a constant filler, so
 * keys are distinct as long as id fits in the key. */
static void
key_make(uint8_t *buf, uint32_t klen, uint64_t id, struct km_key *k)
{
	uint32_t i;

	for (i = 0; i < klen; i++) {
		buf[i] = i < 8 ? (uint8_t)id : 'k';
		if (i < 8)
			id >>= 8;
	}
	k->data = buf;
	k->len = (uint16_t)klen;
	k->hash = km_key_hash(buf, klen);
}

int
main(int argc, char **argv)
{
	uint64_t n = 10000000, klen = 16, vlen = 64, rss0, rss1, i, rng, version;
	struct km_store_params p = {.name = "footprint", .socket_id = -1};
	static uint8_t key[KM_KEY_MAX], val[UINT16_MAX];
	struct km_store_stats st;
	struct km_value_ref ref;
	struct km_store *s;
	double t0, t_ins, t_get;
	struct km_key k;
	int opt, rc;

	while ((opt = getopt(argc, argv, "n:k:v:h")) != -1) {
		switch (opt) {
		case 'n':
			rc = km_util_parse_u64(optarg, 1, UINT64_MAX, &n);
			break;
		case 'k':
			rc = km_util_parse_u64(optarg, 1, KM_KEY_MAX, &klen);
			break;
		case 'v':
			rc = km_util_parse_u64(optarg, 0, UINT16_MAX, &vlen);
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
	if (optind != argc || (klen < 8 && n > (UINT64_C(1) << (8 * klen)))) {
		usage(argv[0]);
		return 1;
	}

	p.value_max = (uint32_t)vlen;
	rc = km_store_create("mem", &p, &s);
	if (rc != 0) {
		fprintf(stderr, "store create: %s\n", strerror(-rc));
		return 1;
	}
	memset(val, 'v', vlen);
	if (rss_bytes(&rss0) != 0) {
		fprintf(stderr, "cannot read /proc/self/statm\n");
		return 1;
	}

	t0 = km_util_now_ns() * 1e-9;
	for (i = 0; i < n; i++) {
		key_make(key, klen, i, &k);
		rc = km_store_put(s, &k, val, vlen, KM_VERSION_ANY, 1, &version);
		if (rc != 0) {
			fprintf(stderr, "put key %llu: %s\n", (unsigned long long)i, strerror(-rc));
			return 1;
		}
	}
	t_ins = km_util_now_ns() * 1e-9 - t0;
	if (rss_bytes(&rss1) != 0) {
		fprintf(stderr, "cannot read /proc/self/statm\n");
		return 1;
	}

	/* random order: every lookup pays the cache misses a server would */
	rng = 88172645463325252ULL;
	t0 = km_util_now_ns() * 1e-9;
	for (i = 0; i < n; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		key_make(key, klen, rng % n, &k);
		rc = km_store_get(s, &k, &ref);
		if (rc != 0 || ref.len != vlen) {
			fprintf(stderr, "get key %llu: %s\n", (unsigned long long)(rng % n),
				rc != 0 ? strerror(-rc) : "wrong length");
			return 1;
		}
	}
	t_get = km_util_now_ns() * 1e-9 - t0;

	km_store_stats(s, &st);
	printf("keys:                 %llu (key %llu B, value %llu B)\n",
		(unsigned long long)st.keys, (unsigned long long)klen, (unsigned long long)vlen);
	printf("payload (key+value):  %.1f B/key\n", (double)st.value_bytes / n);
	printf("index:                %.1f B/key (%.1f MiB)\n", (double)st.index_bytes / n,
		st.index_bytes / 1048576.0);
	printf("entry overhead:       %.1f B/key\n", (double)st.entry_overhead_bytes / n);
	printf("store total:          %.1f B/key\n",
		(double)(st.value_bytes + st.index_bytes + st.entry_overhead_bytes) / n);
	printf("RSS growth:           %.1f B/key (%.1f MiB)\n", (double)(rss1 - rss0) / n,
		(rss1 - rss0) / 1048576.0);
	printf("insert:               %.2f Mkeys/s (%.2f s, incl. key hashing)\n", n / t_ins / 1e6,
		t_ins);
	printf("lookup:               %.2f Mkeys/s (%.2f s, random order, incl. key hashing)\n",
		n / t_get / 1e6, t_get);
	km_store_destroy(s);
	return 0;
}
