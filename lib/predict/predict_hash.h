/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef PREDICT_HASH_H
#define PREDICT_HASH_H

/*
 * The one key hash of lib/predict: 8 bytes per multiply, chainable over several segments
 * (the stream detector hashes a key without its digit runs), never 0 after pr_hash_fin()
 * (0 marks empty slots in every table).
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t
pr_hash_seg(const uint8_t *p, size_t n, uint64_t h)
{
	uint64_t v;

	h ^= (n + 1) * 0x9e3779b97f4a7c15ULL;
	while (n >= 8) {
		memcpy(&v, p, 8);
		h = (h ^ v) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
		p += 8;
		n -= 8;
	}
	if (n > 0) {
		/* The tail byte by byte (little endian): a memcpy of a variable length is a call
		 * to libc, the most expensive part of a short segment. */
		v = 0;
		for (size_t i = 0; i < n; i++)
			v |= (uint64_t)p[i] << (8 * i);
		h = (h ^ v) * 0xc4ceb9fe1a85ec53ULL;
		h ^= h >> 29;
	}
	return h;
}

static inline uint64_t
pr_hash_fin(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h | 1;
}

static inline uint64_t
pr_hash(const uint8_t *p, size_t n)
{
	return pr_hash_fin(pr_hash_seg(p, n, 0));
}

#endif /* PREDICT_HASH_H */
