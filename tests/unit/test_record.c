/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Record codec and CRC32C tests: the RFC 3720 CRC32C vectors, km_crc32c() against a
 * bitwise reference (ISA-L style differential test), chaining, the byte layout of
 * km_record.h checked with that reference, round trips, and every documented outcome of
 * km_rec_decode() (single-bit damage anywhere in header or data, every truncation).
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <km_record.h>

#define SEED 0x7265636f7264ULL /* "record" */

/* Enough for the largest record used here (KM_REC_VLEN_MAX value) plus slack. */
#define BUF_LEN (KM_REC_HDR_LEN + 256 + KM_REC_VLEN_MAX + 64)

/* xorshift64*: deterministic, seedable, no libc state shared with other tests. */
static uint64_t
rnd_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static void
rnd_fill(uint64_t *s, uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (uint8_t)rnd_next(s);
}

/* Bitwise CRC32C, reflected polynomial 0x82f63b78, init and final xor 0xffffffff. */
static uint32_t
crc32c_ref(uint32_t crc, const uint8_t *p, size_t len)
{
	size_t i;
	int k;

	crc = ~crc;
	for (i = 0; i < len; i++) {
		crc ^= p[i];
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
	}
	return ~crc;
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void
test_crc32c_vectors(void **state)
{
	uint8_t buf[32];
	int i;

	(void)state;
	assert_int_equal(km_crc32c(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(km_crc32c(0, NULL, 0), 0);
	assert_int_equal(km_crc32c(0x12345678u, NULL, 0), 0x12345678u);

	/* RFC 3720 appendix B.4. */
	memset(buf, 0x00, sizeof(buf));
	assert_int_equal(km_crc32c(0, buf, sizeof(buf)), 0x8a9136aau);
	memset(buf, 0xff, sizeof(buf));
	assert_int_equal(km_crc32c(0, buf, sizeof(buf)), 0x62a8ab43u);
	for (i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(km_crc32c(0, buf, sizeof(buf)), 0x46dd794eu);
	for (i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	assert_int_equal(km_crc32c(0, buf, sizeof(buf)), 0x113fdb5cu);

	/* The reference agrees with the same vectors, so it can judge the rest. */
	assert_int_equal(crc32c_ref(0, (const uint8_t *)"123456789", 9), 0xe3069283u);
	assert_int_equal(crc32c_ref(0, buf, sizeof(buf)), 0x113fdb5cu);
}

static void
test_crc32c_differential(void **state)
{
	uint64_t rng = SEED;
	uint8_t *buf = malloc(8192);
	int i;

	(void)state;
	assert_non_null(buf);
	rnd_fill(&rng, buf, 8192);
	for (i = 0; i < 2000; i++) {
		size_t off = rnd_next(&rng) % 64;
		size_t len = i < 300 ? (size_t)i : rnd_next(&rng) % (8192 - 64);
		uint32_t init = i % 3 == 0 ? 0 : (uint32_t)rnd_next(&rng);

		assert_int_equal(km_crc32c(init, buf + off, len), crc32c_ref(init, buf + off, len));
	}
	free(buf);
}

static void
test_crc32c_chaining(void **state)
{
	uint64_t rng = SEED + 1;
	uint8_t buf[4096];
	int i;

	(void)state;
	rnd_fill(&rng, buf, sizeof(buf));
	for (i = 0; i < 2000; i++) {
		size_t len = rnd_next(&rng) % (sizeof(buf) + 1);
		uint32_t whole = km_crc32c(0, buf, len);
		uint32_t crc = 0;
		size_t done = 0;

		/* Split into 1..8 random pieces, empty pieces included. */
		while (done < len) {
			size_t n = rnd_next(&rng) % 8 == 0 ? 0 : rnd_next(&rng) % (len - done + 1);

			crc = km_crc32c(crc, buf + done, n);
			done += n;
		}
		assert_int_equal(crc, whole);
	}
}

/* The bytes of km_record.h's table, checked with the reference CRC. */
static void
test_rec_layout(void **state)
{
	static const uint8_t key[] = "user:42";
	static const uint8_t val[] = "hello, world";
	struct km_rec r = {
		.type = KM_REC_PUT,
		.klen = 7,
		.vlen = 12,
		.version = 0x1122334455667788ULL,
		.key = key,
		.val = val,
	};
	uint8_t buf[128];
	uint8_t kv[19];
	size_t n, i;

	(void)state;
	memset(buf, 0xa5, sizeof(buf));
	n = km_rec_encode(buf, sizeof(buf), &r);
	assert_int_equal(n, 48); /* 24 + 7 + 12 = 43, padded to 48 */
	assert_int_equal(n, km_rec_size(7, 12));
	assert_int_equal(le32(buf + 0), crc32c_ref(0, buf + 4, 20));
	memcpy(kv, key, 7);
	memcpy(kv + 7, val, 12);
	assert_int_equal(le32(buf + 4), crc32c_ref(0, kv, sizeof(kv)));
	assert_int_equal(buf[8], 0x52);
	assert_int_equal(buf[9], 0x4b);
	assert_int_equal(buf[10], KM_REC_PUT);
	assert_int_equal(buf[11], 7);
	assert_int_equal(le32(buf + 12), 12);
	assert_int_equal(le64(buf + 16), 0x1122334455667788ULL);
	assert_memory_equal(buf + 24, key, 7);
	assert_memory_equal(buf + 31, val, 12);
	for (i = 43; i < 48; i++)
		assert_int_equal(buf[i], 0);
	/* Nothing written past the record. */
	for (i = 48; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0xa5);
}

static void
check_roundtrip(uint8_t *buf, const struct km_rec *r)
{
	struct km_rec d;
	size_t n, size = 0, used, i;

	/* Dirty buffer: the padding must come out zero. */
	memset(buf, 0xee, km_rec_size(r->klen, r->vlen) + 16);
	n = km_rec_encode(buf, BUF_LEN, r);
	assert_int_equal(n, km_rec_size(r->klen, r->vlen));
	assert_int_equal(n % KM_REC_ALIGN, 0);
	used = KM_REC_HDR_LEN + r->klen + r->vlen;
	assert_true(n >= used && n - used < KM_REC_ALIGN);
	for (i = used; i < n; i++)
		assert_int_equal(buf[i], 0);

	memset(&d, 0, sizeof(d));
	/* Exactly the record, and with more bytes after it. */
	assert_int_equal(km_rec_decode(buf, n, &d, &size), KM_REC_OK);
	assert_int_equal(size, n);
	assert_int_equal(km_rec_decode(buf, n + 16, &d, &size), KM_REC_OK);
	assert_int_equal(size, n);
	assert_int_equal(d.type, r->type);
	assert_int_equal(d.klen, r->klen);
	assert_int_equal(d.vlen, r->vlen);
	assert_int_equal(d.version, r->version);
	if (r->klen > 0) {
		assert_ptr_equal(d.key, buf + KM_REC_HDR_LEN);
		assert_memory_equal(d.key, r->key, r->klen);
	}
	if (r->vlen > 0) {
		assert_ptr_equal(d.val, buf + KM_REC_HDR_LEN + r->klen);
		assert_memory_equal(d.val, r->val, r->vlen);
	}
}

static void
test_rec_roundtrip(void **state)
{
	uint64_t rng = SEED + 2;
	uint8_t *buf = malloc(BUF_LEN + 16);
	uint8_t *data = malloc(KM_REC_VLEN_MAX);
	uint8_t key[256];
	struct km_rec r;
	uint32_t klen, vlen;

	(void)state;
	assert_non_null(buf);
	assert_non_null(data);
	rnd_fill(&rng, key, sizeof(key));
	rnd_fill(&rng, data, KM_REC_VLEN_MAX);

	/* PUT: every key length 1..250 with every value length 0..2000. */
	for (klen = 1; klen <= 250; klen++) {
		for (vlen = 0; vlen <= 2000; vlen++) {
			r = (struct km_rec){.type = KM_REC_PUT,
				.klen = (uint8_t)klen,
				.vlen = vlen,
				.version = rnd_next(&rng),
				.key = key + (klen & 3),
				.val = data + vlen};
			check_roundtrip(buf, &r);
		}
	}
	/* DEL: every key length, no value. */
	for (klen = 1; klen <= 255; klen++) {
		r = (struct km_rec){.type = KM_REC_DEL,
			.klen = (uint8_t)klen,
			.version = rnd_next(&rng),
			.key = key};
		check_roundtrip(buf, &r);
	}
	/* META: no key (NULL allowed) or a key; values 0..2000. */
	for (vlen = 0; vlen <= 2000; vlen++) {
		r = (struct km_rec){.type = KM_REC_META,
			.vlen = vlen,
			.version = 0,
			.val = vlen > 0 ? data : NULL};
		check_roundtrip(buf, &r);
		r.klen = (uint8_t)(vlen % 251);
		r.key = key;
		r.version = rnd_next(&rng);
		check_roundtrip(buf, &r);
	}
	/* The largest lengths. */
	r = (struct km_rec){.type = KM_REC_PUT,
		.klen = 255,
		.vlen = KM_REC_VLEN_MAX,
		.version = UINT64_MAX,
		.key = key,
		.val = data};
	check_roundtrip(buf, &r);
	free(data);
	free(buf);
}

/* A handful of records of every type, for the damage tests. */
struct sample {
	uint8_t type, klen;
	uint32_t vlen;
};

static const struct sample samples[] = {
	{KM_REC_PUT, 1, 0},
	{KM_REC_PUT, 1, 1},
	{KM_REC_PUT, 7, 12},
	{KM_REC_PUT, 16, 100},
	{KM_REC_PUT, 250, 1400},
	{KM_REC_PUT, 255, 4001},
	{KM_REC_DEL, 1, 0},
	{KM_REC_DEL, 33, 0},
	{KM_REC_META, 0, 0},
	{KM_REC_META, 0, 77},
	{KM_REC_META, 5, 64},
};

static size_t
encode_sample(uint8_t *buf, size_t cap, const struct sample *s, uint64_t *rng, uint8_t *kv)
{
	struct km_rec r;
	size_t n;

	rnd_fill(rng, kv, (size_t)s->klen + s->vlen);
	r = (struct km_rec){.type = s->type,
		.klen = s->klen,
		.vlen = s->vlen,
		.version = rnd_next(rng),
		.key = kv,
		.val = kv + s->klen};
	n = km_rec_encode(buf, cap, &r);
	assert_int_equal(n, km_rec_size(s->klen, s->vlen));
	return n;
}

static void
test_rec_header_damage(void **state)
{
	uint64_t rng = SEED + 3;
	uint8_t buf[8192], kv[8192];
	struct km_rec d;
	size_t i, n, size;
	int bit;

	(void)state;
	for (i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		n = encode_sample(buf, sizeof(buf), &samples[i], &rng, kv);
		for (bit = 0; bit < KM_REC_HDR_LEN * 8; bit++) {
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			size = 12345;
			assert_int_equal(km_rec_decode(buf, n, &d, &size), KM_REC_BADHDR);
			/* Even with the whole buffer: the lengths are not trusted. */
			assert_int_equal(km_rec_decode(buf, sizeof(buf), &d, &size), KM_REC_BADHDR);
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		}
		assert_int_equal(km_rec_decode(buf, n, &d, &size), KM_REC_OK);
	}
}

static void
test_rec_data_damage(void **state)
{
	uint64_t rng = SEED + 4;
	uint8_t buf[8192], kv[8192];
	struct km_rec d;
	size_t i, n, size, bit, nbits;

	(void)state;
	for (i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		const struct sample *s = &samples[i];

		n = encode_sample(buf, sizeof(buf), s, &rng, kv);
		nbits = ((size_t)s->klen + s->vlen) * 8;
		for (bit = 0; bit < nbits; bit++) {
			uint8_t *p = buf + KM_REC_HDR_LEN + bit / 8;

			*p ^= (uint8_t)(1u << (bit % 8));
			memset(&d, 0, sizeof(d));
			size = 0;
			assert_int_equal(km_rec_decode(buf, n, &d, &size), KM_REC_BADDATA);
			assert_int_equal(size, n);
			assert_int_equal(d.type, s->type);
			assert_int_equal(d.klen, s->klen);
			assert_int_equal(d.vlen, s->vlen);
			*p ^= (uint8_t)(1u << (bit % 8));
		}
		assert_int_equal(km_rec_decode(buf, n, &d, &size), KM_REC_OK);
	}
}

static void
test_rec_truncation(void **state)
{
	uint64_t rng = SEED + 5;
	uint8_t buf[8192], kv[8192];
	struct km_rec d;
	size_t i, n, len, size;

	(void)state;
	for (i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		n = encode_sample(buf, sizeof(buf), &samples[i], &rng, kv);
		for (len = 0; len < n; len++) {
			size = 0;
			assert_int_equal(km_rec_decode(buf, len, &d, &size), KM_REC_SHORT);
			assert_int_equal(size, len < KM_REC_HDR_LEN ? KM_REC_HDR_LEN : n);
		}
		assert_int_equal(km_rec_decode(buf, n, &d, &size), KM_REC_OK);
	}
}

static void
test_rec_encode_refused(void **state)
{
	uint64_t rng = SEED + 6;
	uint8_t buf[8192], kv[8192];
	struct km_rec r;
	size_t i, n, cap;

	(void)state;
	/* Every capacity short of the record: 0, and nothing written. */
	for (i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		const struct sample *s = &samples[i];

		rnd_fill(&rng, kv, (size_t)s->klen + s->vlen);
		r = (struct km_rec){.type = s->type,
			.klen = s->klen,
			.vlen = s->vlen,
			.key = kv,
			.val = kv + s->klen};
		n = km_rec_size(s->klen, s->vlen);
		for (cap = 0; cap < n; cap++) {
			memset(buf, 0x5a, n);
			assert_int_equal(km_rec_encode(buf, cap, &r), 0);
			assert_true(buf[0] == 0x5a && buf[n - 1] == 0x5a);
			assert_int_equal(memcmp(buf, buf + 1, n - 1), 0);
		}
		assert_int_equal(km_rec_encode(buf, n, &r), n);
	}

	/* Records the decoder would refuse are not written. */
	r = (struct km_rec){.type = KM_REC_PUT, .klen = 3, .vlen = 3, .key = kv, .val = kv};
	assert_int_equal(km_rec_encode(buf, sizeof(buf), &r), km_rec_size(3, 3));
	r.type = 0;
	assert_int_equal(km_rec_encode(buf, sizeof(buf), &r), 0);
	r.type = 4;
	assert_int_equal(km_rec_encode(buf, sizeof(buf), &r), 0);
	r.type = 255;
	assert_int_equal(km_rec_encode(buf, sizeof(buf), &r), 0);
	r.type = KM_REC_PUT;
	r.klen = 0;
	assert_int_equal(km_rec_encode(buf, sizeof(buf), &r), 0);
	r.type = KM_REC_DEL;
	assert_int_equal(km_rec_encode(buf, sizeof(buf), &r), 0);
	r.klen = 3; /* DEL with a value */
	assert_int_equal(km_rec_encode(buf, sizeof(buf), &r), 0);
	r.type = KM_REC_PUT;
	r.vlen = KM_REC_VLEN_MAX + 1;
	assert_int_equal(km_rec_encode(buf, sizeof(buf), &r), 0);
	r.vlen = 3;
	r.key = NULL;
	assert_int_equal(km_rec_encode(buf, sizeof(buf), &r), 0);
	r.key = kv;
	r.val = NULL;
	assert_int_equal(km_rec_encode(buf, sizeof(buf), &r), 0);
	assert_int_equal(km_rec_encode(NULL, sizeof(buf), &r), 0);
	assert_int_equal(km_rec_encode(buf, sizeof(buf), NULL), 0);
}

/* Headers with a valid hcrc but fields the decoder must refuse. */
static void
patch_and_decode(uint8_t *buf, size_t len, uint8_t type, uint8_t klen, uint32_t vlen, int expect)
{
	uint8_t save[KM_REC_HDR_LEN];
	struct km_rec d;
	size_t size;
	uint32_t crc;

	memcpy(save, buf, KM_REC_HDR_LEN);
	buf[10] = type;
	buf[11] = klen;
	buf[12] = (uint8_t)vlen;
	buf[13] = (uint8_t)(vlen >> 8);
	buf[14] = (uint8_t)(vlen >> 16);
	buf[15] = (uint8_t)(vlen >> 24);
	crc = crc32c_ref(0, buf + 4, KM_REC_HDR_LEN - 4);
	buf[0] = (uint8_t)crc;
	buf[1] = (uint8_t)(crc >> 8);
	buf[2] = (uint8_t)(crc >> 16);
	buf[3] = (uint8_t)(crc >> 24);
	assert_int_equal(km_rec_decode(buf, len, &d, &size), expect);
	memcpy(buf, save, KM_REC_HDR_LEN);
}

static void
test_rec_decode_fields(void **state)
{
	uint8_t buf[256];
	uint8_t key[4] = {1, 2, 3, 4};
	struct km_rec r = {.type = KM_REC_DEL, .klen = 4, .key = key};
	size_t n;

	(void)state;
	memset(buf, 0, sizeof(buf));
	n = km_rec_encode(buf, sizeof(buf), &r);
	assert_int_equal(n, 32);
	/* Control: re-sealing the unchanged header still decodes. */
	patch_and_decode(buf, n, KM_REC_DEL, 4, 0, KM_REC_OK);
	patch_and_decode(buf, n, 0, 4, 0, KM_REC_BADHDR);
	patch_and_decode(buf, n, 4, 4, 0, KM_REC_BADHDR);
	patch_and_decode(buf, n, 0xff, 4, 0, KM_REC_BADHDR);
	patch_and_decode(buf, n, KM_REC_DEL, 0, 0, KM_REC_BADHDR);
	patch_and_decode(buf, n, KM_REC_PUT, 0, 0, KM_REC_BADHDR);
	patch_and_decode(buf, n, KM_REC_DEL, 4, 1, KM_REC_BADHDR);
	patch_and_decode(buf, n, KM_REC_PUT, 4, KM_REC_VLEN_MAX + 1, KM_REC_BADHDR);
	patch_and_decode(buf, n, KM_REC_PUT, 4, UINT32_MAX, KM_REC_BADHDR);
	/* Valid headers whose record is longer than the bytes given. */
	patch_and_decode(buf, n, KM_REC_PUT, 4, KM_REC_VLEN_MAX, KM_REC_SHORT);
	patch_and_decode(buf, n, KM_REC_META, 0, 100, KM_REC_SHORT);
	/* Wrong magic, right hcrc. */
	buf[8] ^= 1;
	patch_and_decode(buf, n, KM_REC_DEL, 4, 0, KM_REC_BADHDR);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_vectors),
		cmocka_unit_test(test_crc32c_differential),
		cmocka_unit_test(test_crc32c_chaining),
		cmocka_unit_test(test_rec_layout),
		cmocka_unit_test(test_rec_roundtrip),
		cmocka_unit_test(test_rec_header_damage),
		cmocka_unit_test(test_rec_data_damage),
		cmocka_unit_test(test_rec_truncation),
		cmocka_unit_test(test_rec_encode_refused),
		cmocka_unit_test(test_rec_decode_fields),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
