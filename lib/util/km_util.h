/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_UTIL_H
#define KM_UTIL_H

/**
 * @file
 * The small things every layer needs once: the key length limit, little-endian field
 * access for the wire and on-disk formats, strict number parsing for command lines,
 * configuration and telemetry parameters, a monotonic clock and a seed mixer for the tools,
 * the Internet checksum of the datagrams the worker answers.
 *
 * No dependencies, no global state: every function may be called from any thread.
 */

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#if defined(__SSE2__) && defined(__x86_64__)
#include <emmintrin.h>
#endif

/** Longest key, in bytes, anywhere in keymap (wire, stores, clients). */
#define KM_KEY_MAX 250

/**
 * Parse the whole string s as an unsigned decimal number in [min, max].
 * Digits only: no sign, no blanks, no base prefix, no suffix ("1e3", " 5", "+5", "0x10"
 * are errors rather than something strtoull half-accepts).
 * @param out set only on success.
 * @return 0, -EINVAL (NULL, empty, or a character that is not a digit), -ERANGE (digits,
 *   but below min or above max).
 * @note Context: any thread.
 */
int km_util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/**
 * km_util_parse_u64() on exactly len bytes at s (need not be NUL-terminated).
 * A non-digit anywhere wins over an overflow: "99999999999999999999x" is -EINVAL.
 * @note Context: any thread.
 */
int km_util_parse_u64n(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out);

/**
 * Parse the whole string s as a finite decimal number in [min, max] (strtod syntax, but
 * it must start with a digit, a sign or a '.': no blanks, no "inf" or "nan").
 * @param out set only on success.
 * @return 0, -EINVAL (NULL, empty, not a whole number), -ERANGE (overflow, underflow, or
 *   outside [min, max]).
 * @note Context: any thread.
 */
int km_util_parse_double(const char *s, double min, double max, double *out);

/**
 * Remove dir and everything under it, depth first, following no symbolic link (for the
 * temporary directories of tests and tools).
 * @return 0, or -errno: of the first entry that could not be removed, or of the walk
 *   itself (-ENOENT: no such directory).
 * @note Context: any thread (not while another thread changes the working directory).
 */
int km_util_rmtree(const char *dir);

/**
 * @return CLOCK_MONOTONIC in nanoseconds (for timing and deadlines in tools and tests;
 *   the data path uses the TSC).
 * @note Context: any thread.
 */
static inline uint64_t
km_util_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/**
 * splitmix64: advance *state and return 64 well-mixed bits. A full-period generator for
 * tests and tools, and the usual way to spread a seed (0 included) over a larger state.
 * @note Context: the owner of *state.
 */
static inline uint64_t
km_util_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/** Store the n low bytes of v at b, big-endian (the side channel's fields). Any thread. */
static inline void
km_be_put(uint8_t *b, uint64_t v, unsigned int n)
{
	while (n-- > 0) {
		b[n] = (uint8_t)v;
		v >>= 8;
	}
}

/** @return the n big-endian bytes at b. @note Context: any thread. */
static inline uint64_t
km_be_get(const uint8_t *b, unsigned int n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = v << 8 | *b++;
	return v;
}

/*
 * Little-endian fields of the on-disk formats (records, log META, segments).
 * memcpy so that p needs no alignment.
 */
/** Store v at p as 2 little-endian bytes. @note Context: any thread. */
static inline void
km_le_put16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}

/** Store v at p as 4 little-endian bytes. @note Context: any thread. */
static inline void
km_le_put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

/** Store v at p as 8 little-endian bytes. @note Context: any thread. */
static inline void
km_le_put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

/** @return the 2 little-endian bytes at p. @note Context: any thread. */
static inline uint16_t
km_le_get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

/** @return the 4 little-endian bytes at p. @note Context: any thread. */
static inline uint32_t
km_le_get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

/** @return the 8 little-endian bytes at p. @note Context: any thread. */
static inline uint64_t
km_le_get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

/*
 * The Internet checksum (RFC 1071) of datagrams the worker answers: 16-bit words added in
 * one's complement, their order and the machine's byte order not mattering. Words of 32
 * bits in two 64-bit accumulators (no carry to propagate) then folded give the same sum
 * as DPDK's 16-bit loop at a quarter of the instructions (the UDP checksum of a 112-byte
 * GET reply: ~23 TSC cycles instead of ~51, 10 M sums in a loop, docs/benchmarks.md);
 * on x86-64 (SSE2), 32 bytes at a time in four 64-bit lanes: fewer instructions again
 * (1,177 -> 1,122 per request in keymapd, docs/benchmarks.md), no fewer cycles measured.
 */

/**
 * Add the len bytes at buf (any alignment; an odd last byte padded with zero) to the
 * partial sum s. @return the new partial sum, for km_csum_fold().
 * @note Context: any thread. len below 2^32.
 */
static inline uint64_t
km_csum_add(const void *buf, size_t len, uint64_t s)
{
	const uint8_t *p = buf;
	uint64_t a = 0, b = 0, w, x;

#if defined(__SSE2__) && defined(__x86_64__)
	/* 32 bytes per step: eight 32-bit words widened into four 64-bit lanes (15
	 * instructions against 24 for the same bytes in the 64-bit loop below). */
	if (len >= 32) {
		const __m128i z = _mm_setzero_si128();
		__m128i lo = z, hi = z, v, u;

		for (; len >= 32; len -= 32, p += 32) {
			v = _mm_loadu_si128((const __m128i *)(const void *)p);
			u = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
			lo = _mm_add_epi64(lo, _mm_unpacklo_epi32(v, z));
			hi = _mm_add_epi64(hi, _mm_unpackhi_epi32(v, z));
			lo = _mm_add_epi64(lo, _mm_unpacklo_epi32(u, z));
			hi = _mm_add_epi64(hi, _mm_unpackhi_epi32(u, z));
		}
		lo = _mm_add_epi64(lo, hi);
		a = (uint64_t)_mm_cvtsi128_si64(lo);
		b = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(lo, lo));
	}
#endif
	for (; len >= 16; len -= 16, p += 16) {
		memcpy(&w, p, 8);
		memcpy(&x, p + 8, 8);
		a += (w & 0xffffffff) + (x & 0xffffffff);
		b += (w >> 32) + (x >> 32);
	}
	if (len >= 8) {
		memcpy(&w, p, 8);
		a += w & 0xffffffff;
		b += w >> 32;
		len -= 8;
		p += 8;
	}
	if (len > 0) {
		w = 0;
		memcpy(&w, p, len);
		a += w & 0xffffffff;
		b += w >> 32;
	}
	/* len < 2^32: a and b stay below 2^61, and s folded once keeps the total in 64 bits. */
	return (s & 0xffffffff) + (s >> 32) + a + b;
}

/**
 * @return partial sum s folded to 16 bits (not complemented): 0 only for a sum of zero
 * words, 0xffff for a sum the data's checksum makes complete. @note Context: any thread.
 */
static inline uint16_t
km_csum_fold(uint64_t s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/**
 * @return the checksum of the 20-byte IPv4 header at hdr (no options), its checksum field
 * zero, to store as it is (memory order, like the words it sums). @note Context: any thread.
 */
static inline uint16_t
km_csum_ipv4_hdr(const void *hdr)
{
	return (uint16_t)~km_csum_fold(km_csum_add(hdr, 20, 0));
}

/* A UDP checksum from the sum s of its pseudo-header, header and payload: never 0, which
 * would say "no checksum" (RFC 768). */
static inline uint16_t
km_csum_udp_final(uint64_t s)
{
	uint16_t c = (uint16_t)~km_csum_fold(s);

	return c != 0 ? c : 0xffff;
}

/**
 * @return the checksum of a 20-byte IPv4 header from its words, each as it sits in memory
 * (network order): w0 the version, IHL and TOS, tot the total length, id, frag the flags
 * and fragment offset, w4 the TTL and protocol, src and dst the addresses; the same as
 * km_csum_ipv4_hdr() over the header, without reading it (see km_csum_udp4_payload()).
 * @note Context: any thread.
 */
static inline uint16_t
km_csum_ipv4_words(uint16_t w0, uint16_t tot, uint16_t id, uint16_t frag, uint16_t w4, uint32_t src,
	uint32_t dst)
{
	return (uint16_t)~km_csum_fold((uint64_t)w0 + tot + id + frag + w4 + src + dst);
}

/**
 * @return the UDP checksum of a datagram from its header's fields and its payload (plen
 * bytes at payload): the same as km_csum_udp4() over the whole datagram, without reading
 * its header. A worker that has just written the header with narrow stores sums it from
 * registers: a wide load over several recent stores waits for them to complete. Ports
 * and addresses in network order. @note Context: any thread.
 */
static inline uint16_t
km_csum_udp4_payload(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
	const void *payload, size_t plen)
{
	uint16_t ulen = htobe16((uint16_t)(8 + plen));
	/* Pseudo-header (addresses, protocol, length) and header (ports, length, sum 0). */
	uint64_t s = (uint64_t)src + dst + htobe16(17) + 2 * (uint64_t)ulen + sport + dport;

	return km_csum_udp_final(km_csum_add(payload, plen, s));
}

/**
 * @return the UDP checksum of the datagram at udp (len bytes, its header included, its
 * checksum field zero) from IPv4 address src to dst (as in the header: network order),
 * over the pseudo-header (addresses, protocol 17, UDP length); never 0, which would say
 * "no checksum" (RFC 768). @note Context: any thread.
 */
static inline uint16_t
km_csum_udp4(uint32_t src, uint32_t dst, const void *udp, size_t len)
{
	return km_csum_udp_final(
		km_csum_add(udp, len, (uint64_t)src + dst + htobe16(17) + htobe16((uint16_t)len)));
}

/**
 * The directory DPDK's EAL puts its runtime directories (<dir>/dpdk/<prefix>) in:
 * $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=) if set, else /var/run for root, else
 * $XDG_RUNTIME_DIR or /tmp.
 * @note Context: any thread.
 */
const char *km_dpdk_runtime_base(void);

/**
 * --version: when argv has it among its options (before a "--"), print
 * "PROG VERSION" (and " (extra)" when extra is not NULL) on stdout.
 * @return 1 when printed (the caller exits 0), else 0.
 * @note Context: main(), before parsing options.
 */
int km_version_opt(int argc, char *const *argv, const char *prog, const char *extra);

#endif /* KM_UTIL_H */
