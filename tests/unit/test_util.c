/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * lib/util tests: the strict number parsers (accepted syntax, bounds, overflow, which
 * error wins), the little-endian fields (byte order, unaligned access, round trips) and the
 * Internet checksum (against a 16-bit reference, every length, alignment and carry case).
 */

#include <errno.h>
#include <float.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <km_util.h>

#define SENTINEL 0x5a5a5a5a5a5a5a5aULL

static int
u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	*out = SENTINEL;
	return km_util_parse_u64(s, min, max, out);
}

static void
test_u64_accepts_decimal(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(u64("0", 0, 10, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(u64("7", 0, 10, &v), 0);
	assert_int_equal(v, 7);
	assert_int_equal(u64("007", 0, 10, &v), 0); /* decimal, not octal */
	assert_int_equal(v, 7);
	assert_int_equal(u64("18446744073709551615", 0, UINT64_MAX, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(u64("250", 250, 250, &v), 0);
	assert_int_equal(v, 250);
}

static void
test_u64_rejects_syntax(void **state)
{
	static const char *const bad[] = {
		"",
		" 5",
		"5 ",
		"+5",
		"-5",
		"-0",
		"0x10",
		"1e3",
		"5k",
		"1.0",
		"abc",
		"5\n",
	};
	uint64_t v;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(u64(bad[i], 0, UINT64_MAX, &v), -EINVAL);
		assert_true(v == SENTINEL); /* untouched on error */
	}
	assert_int_equal(km_util_parse_u64(NULL, 0, 1, &v), -EINVAL);
}

static void
test_u64_bounds(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(u64("9", 10, 20, &v), -ERANGE);
	assert_int_equal(u64("21", 10, 20, &v), -ERANGE);
	assert_true(v == SENTINEL);
	assert_int_equal(u64("10", 10, 20, &v), 0);
	assert_int_equal(u64("20", 10, 20, &v), 0);
	/* One above UINT64_MAX, and far above it. */
	assert_int_equal(u64("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
	assert_int_equal(u64("99999999999999999999999", 0, UINT64_MAX, &v), -ERANGE);
	assert_true(v == SENTINEL);
	/* A non-digit after an overflow is the better message. */
	assert_int_equal(u64("99999999999999999999999x", 0, UINT64_MAX, &v), -EINVAL);
}

static void
test_u64n_length(void **state)
{
	const char buf[] = "1234,56";
	uint64_t v = SENTINEL;

	(void)state;
	assert_int_equal(km_util_parse_u64n(buf, 4, 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, 1234);
	assert_int_equal(km_util_parse_u64n(buf + 5, 2, 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, 56);
	assert_int_equal(km_util_parse_u64n(buf, 5, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(km_util_parse_u64n(buf, 0, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(km_util_parse_u64n(buf, 4, 0, 999, &v), -ERANGE);
}

static int
dbl(const char *s, double min, double max, double *out)
{
	*out = -12345.0;
	return km_util_parse_double(s, min, max, out);
}

static void
test_double_accepts(void **state)
{
	double v;

	(void)state;
	assert_int_equal(dbl("0", 0, 1, &v), 0);
	assert_true(v == 0.0);
	assert_int_equal(dbl("1", 0, 1, &v), 0);
	assert_true(v == 1.0);
	assert_int_equal(dbl(".5", 0, 1, &v), 0);
	assert_true(v == 0.5);
	assert_int_equal(dbl("0.25", 0, 1, &v), 0);
	assert_true(v == 0.25);
	assert_int_equal(dbl("2.5e1", 0, 100, &v), 0);
	assert_true(v == 25.0);
	assert_int_equal(dbl("-1.5", -2, 0, &v), 0);
	assert_true(v == -1.5);
	assert_int_equal(dbl("+3", 0, 10, &v), 0);
	assert_true(v == 3.0);
}

static void
test_double_rejects(void **state)
{
	static const char *const bad[] = {
		"",
		" 1",
		"1 ",
		"x",
		"1x",
		"inf",
		"nan",
		"-inf",
		"+nan",
		"e5",
		".",
		"-",
	};
	double v;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(dbl(bad[i], -DBL_MAX, DBL_MAX, &v), -EINVAL);
		assert_true(v == -12345.0);
	}
	assert_int_equal(km_util_parse_double(NULL, 0, 1, &v), -EINVAL);
	assert_int_equal(dbl("1.5", 0, 1, &v), -ERANGE);
	assert_int_equal(dbl("-0.1", 0, 1, &v), -ERANGE);
	assert_int_equal(dbl("1e999", -DBL_MAX, DBL_MAX, &v), -ERANGE);
	assert_true(v == -12345.0);
}

static void
test_le_byte_order(void **state)
{
	uint8_t b[1 + 8];

	(void)state;
	memset(b, 0, sizeof(b));
	/* Offset 1: the helpers must not need alignment. */
	km_le_put16(b + 1, 0x0102);
	assert_int_equal(b[1], 0x02);
	assert_int_equal(b[2], 0x01);
	km_le_put32(b + 1, 0x01020304);
	assert_memory_equal(b + 1, "\x04\x03\x02\x01", 4);
	km_le_put64(b + 1, 0x0102030405060708ULL);
	assert_memory_equal(b + 1, "\x08\x07\x06\x05\x04\x03\x02\x01", 8);
	assert_true(km_le_get64(b + 1) == 0x0102030405060708ULL);
	assert_int_equal(km_le_get32(b + 1), 0x05060708);
	assert_int_equal(km_le_get16(b + 1), 0x0708);
}

/* xorshift64: the next of the tests' pseudo-random words, reproducible from x's seed. */
static uint64_t
xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void
test_le_round_trip(void **state)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	uint8_t b[8];
	int i;

	(void)state;
	for (i = 0; i < 1000; i++) {
		xorshift(&x);
		km_le_put64(b, x);
		assert_true(km_le_get64(b) == x);
		km_le_put32(b, (uint32_t)x);
		assert_int_equal(km_le_get32(b), (uint32_t)x);
		km_le_put16(b, (uint16_t)x);
		assert_int_equal(km_le_get16(b), (uint16_t)x);
	}
}

/* RFC 1071 the plain way: 16-bit words in memory order (an odd last byte padded with zero)
 * and the 16-bit words of s, added exactly and folded: 0 only if all are 0. */
static uint16_t
csum_ref(const uint8_t *p, size_t len, uint64_t s)
{
	uint64_t sum = (s & 0xffff) + (s >> 16 & 0xffff) + (s >> 32 & 0xffff) + (s >> 48);
	uint16_t w;
	size_t i;

	for (i = 0; i + 1 < len; i += 2) {
		memcpy(&w, p + i, 2);
		sum += w;
	}
	if (len % 2 != 0) {
		w = 0;
		memcpy(&w, p + len - 1, 1);
		sum += w;
	}
	while (sum > 0xffff)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* km_csum_fold() of s: its value modulo 0xffff in 1..0xffff, 0 only for 0. */
static uint16_t
fold_ref(uint64_t s)
{
	return s == 0 ? 0 : s % 0xffff == 0 ? 0xffff : (uint16_t)(s % 0xffff);
}

/* km_csum_add() + km_csum_fold() = the reference for every length up to past a jumbo
 * frame's 16-byte blocks, at every alignment, on random bytes, all-ones, all-zero (the one
 * zero sum), with initial sums from 0 to all-ones (one whose halves' sum carries past 32
 * bits); the fold alone on values where a fold step short would differ. */
static void
test_csum(void **state)
{
	static const uint64_t inits[] = {
		0, 1, 0xffff, 0x00010000ffffffffULL, 0x1234567890abcdefULL, UINT64_MAX};
	static const uint64_t folds[] = {0, 1, 0xfffe, 0xffff, 0x10000, 0x1fffe, 0xffffffff,
		0x100000000ULL, 0x00010000ffffffffULL, 0xffff0000ffffULL, 0x8000000000000000ULL,
		0xfffffffeffffffffULL, UINT64_MAX};
	static uint8_t buf[9100 + 8];
	uint8_t ip[20] = {0x45, 0, 0, 84, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 198, 51, 100, 1, 198,
		51, 100, 2};
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	size_t len, off, i, k, f;
	uint16_t c;

	(void)state;
	for (f = 0; f < 3; f++) {
		for (i = 0; i < sizeof(buf); i++) {
			xorshift(&x);
			buf[i] = f == 0 ? (uint8_t)x : f == 1 ? 0xff : 0;
		}
		for (len = 0; len <= 9100; len += len < 300 ? 1 : 97)
			for (off = 0; off < 8; off++)
				for (k = 0; k < sizeof(inits) / sizeof(inits[0]); k++)
					assert_int_equal(
						km_csum_fold(km_csum_add(buf + off, len, inits[k])),
						csum_ref(buf + off, len, inits[k]));
	}
	for (i = 0; i < sizeof(folds) / sizeof(folds[0]); i++)
		assert_int_equal(km_csum_fold(folds[i]), fold_ref(folds[i]));
	for (i = 0; i < 100000; i++) {
		xorshift(&x);
		assert_int_equal(km_csum_fold(x >> (i % 64)), fold_ref(x >> (i % 64)));
	}
	assert_int_equal(km_csum_fold(km_csum_add(buf, 64, 0)), 0);
	c = (uint16_t)~km_csum_fold(km_csum_add(ip, sizeof(ip), 0));
	memcpy(ip + 10, &c, 2);
	assert_int_equal(km_csum_fold(km_csum_add(ip, sizeof(ip), 0)), 0xffff);
	assert_int_equal(csum_ref(ip, sizeof(ip), 0), 0xffff);
}

/* km_csum_udp4_payload() = km_csum_udp4() over the header it does not read: random
 * addresses, ports and payloads of every length to past a 9000-byte frame, all-zero
 * payloads, and ports and addresses of all-ones. */
static void
test_csum_payload(void **state)
{
	static uint8_t dg[8 + 9100];
	uint64_t x = 0x2545f4914f6cdd1dULL;
	uint32_t s, d;
	uint16_t sp, dp, ul;
	size_t len, i, f;

	(void)state;
	for (f = 0; f < 3; f++)
		for (len = 0; len <= 9100; len += len < 300 ? 1 : 89) {
			xorshift(&x);
			s = f == 2 ? UINT32_MAX : (uint32_t)x;
			d = f == 2 ? UINT32_MAX : (uint32_t)(x >> 32);
			sp = f == 2 ? UINT16_MAX : (uint16_t)(x >> 8);
			dp = f == 2 ? UINT16_MAX : (uint16_t)(x >> 40);
			for (i = 0; i < len; i++) {
				xorshift(&x);
				dg[8 + i] = f == 0 ? (uint8_t)x : 0;
			}
			ul = htobe16((uint16_t)(8 + len));
			memcpy(dg, &sp, 2);
			memcpy(dg + 2, &dp, 2);
			memcpy(dg + 4, &ul, 2);
			memset(dg + 6, 0, 2);
			assert_int_equal(km_csum_udp4_payload(s, d, sp, dp, dg + 8, len),
				km_csum_udp4(s, d, dg, 8 + len));
		}
	/* A datagram whose words sum to all-ones: its checksum, 0 complemented, is sent as
	 * all-ones (0 says "no checksum"). Pseudo-header 17 + 10 + header 10 = 0x25 (in
	 * network order), payload ff da: 0xffff in either byte order. */
	memcpy(dg + 8, (const uint8_t[]){0xff, 0xda}, 2);
	assert_int_equal(km_csum_udp4_payload(0, 0, 0, 0, dg + 8, 2), 0xffff);
}

/* km_csum_ipv4_words() = km_csum_ipv4_hdr() over the header of those words: random
 * headers, and all-ones words. */
static void
test_csum_ipv4_words(void **state)
{
	uint64_t x = 0x5851f42d4c957f2dULL;
	uint8_t h[20];
	uint16_t w[5];
	uint32_t s, d;
	size_t i, k;

	(void)state;
	for (i = 0; i < 100000; i++) {
		for (k = 0; k < sizeof(h); k++) {
			xorshift(&x);
			h[k] = i == 0 ? 0xff : (uint8_t)x;
		}
		h[10] = h[11] = 0; /* the checksum field */
		memcpy(&w[0], h, 2);
		memcpy(&w[1], h + 2, 2);
		memcpy(&w[2], h + 4, 2);
		memcpy(&w[3], h + 6, 2);
		memcpy(&w[4], h + 8, 2);
		memcpy(&s, h + 12, 4);
		memcpy(&d, h + 16, 4);
		assert_int_equal(km_csum_ipv4_words(w[0], w[1], w[2], w[3], w[4], s, d),
			km_csum_ipv4_hdr(h));
	}
}

/* Known answers, from RFC 1071 sums over big-endian words: the IPv4 header of the usual
 * example (checksum b861) and two UDP datagrams 198.51.100.2:7070 -> 198.51.100.1:40000,
 * an even and an odd payload; the sums are stored as computed (memory order). */
static void
test_csum_known(void **state)
{
	uint8_t ip[20] = {0x45, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0, 1, 0xc0,
		0xa8, 0, 0xc7};
	uint8_t udp[15] = {
		0x1b, 0x9e, 0x9c, 0x40, 0, 0x0e, 0, 0, 'k', 'e', 'y', 'm', 'a', 'p', '!'};
	const uint8_t src[4] = {198, 51, 100, 2}, dst[4] = {198, 51, 100, 1};
	uint32_t s, d;
	uint16_t c;

	(void)state;
	c = km_csum_ipv4_hdr(ip);
	memcpy(ip + 10, &c, 2);
	assert_int_equal(ip[10], 0xb8);
	assert_int_equal(ip[11], 0x61);
	memcpy(&s, src, 4);
	memcpy(&d, dst, 4);
	c = km_csum_udp4(s, d, udp, 14); /* "keymap" */
	assert_int_equal(km_csum_udp4_payload(s, d, htobe16(7070), htobe16(40000), udp + 8, 6), c);
	memcpy(udp + 6, &c, 2);
	assert_int_equal(udp[6], 0xad);
	assert_int_equal(udp[7], 0x45);
	udp[5] = 0x0f; /* "keymap!" */
	udp[6] = udp[7] = 0;
	c = km_csum_udp4(s, d, udp, 15);
	assert_int_equal(km_csum_udp4_payload(s, d, htobe16(7070), htobe16(40000), udp + 8, 7), c);
	memcpy(udp + 6, &c, 2);
	assert_int_equal(udp[6], 0x8c);
	assert_int_equal(udp[7], 0x43);
	/* With its checksum in, a datagram sums to all-ones. */
	assert_int_equal(
		km_csum_fold(km_csum_add(udp, 15, (uint64_t)s + d + htobe16(17) + htobe16(15))),
		0xffff);
}

/* A tree with files, a subdirectory and a link to a directory outside: all of it goes,
 * what the link points to stays (the walk does not follow it); a directory that does not
 * exist is -ENOENT. */
static void
test_rmtree(void **state)
{
	char root[] = "/tmp/km-test-util-XXXXXX", out[] = "/tmp/km-test-util-out-XXXXXX";
	char path[128], kept[128];
	struct stat st;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(root));
	assert_non_null(mkdtemp(out));
	snprintf(kept, sizeof(kept), "%s/kept", out);
	f = fopen(kept, "w");
	assert_non_null(f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/a", root);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/a/b", root);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/a/b/file", root);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("x", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/link", root);
	assert_int_equal(symlink(out, path), 0);
	assert_int_equal(km_util_rmtree(root), 0);
	assert_int_equal(stat(root, &st), -1);
	assert_int_equal(stat(kept, &st), 0);
	assert_int_equal(km_util_rmtree(root), -ENOENT);
	assert_int_equal(km_util_rmtree(out), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_u64_accepts_decimal),
		cmocka_unit_test(test_u64_rejects_syntax),
		cmocka_unit_test(test_u64_bounds),
		cmocka_unit_test(test_u64n_length),
		cmocka_unit_test(test_double_accepts),
		cmocka_unit_test(test_double_rejects),
		cmocka_unit_test(test_le_byte_order),
		cmocka_unit_test(test_le_round_trip),
		cmocka_unit_test(test_rmtree),
		cmocka_unit_test(test_csum),
		cmocka_unit_test(test_csum_known),
		cmocka_unit_test(test_csum_payload),
		cmocka_unit_test(test_csum_ipv4_words),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
