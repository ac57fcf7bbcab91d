/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * On-disk record codec and CRC32C. The layout is in km_record.h; the header offsets are
 * named below so that encode and decode read from one list.
 */

#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "km_record.h"

/* Header field offsets (km_record.h). */
#define REC_OFF_HCRC    0
#define REC_OFF_DCRC    4
#define REC_OFF_MAGIC   8
#define REC_OFF_TYPE    10
#define REC_OFF_KLEN    11
#define REC_OFF_VLEN    12
#define REC_OFF_VERSION 16

uint32_t
km_crc32c(uint32_t crc, const void *buf, size_t len)
{
	/* crc32_iscsi() neither pre- nor post-inverts: its init is the raw register. Inverting
	 * on the way in and out gives the standard CRC32C (init and final xor 0xffffffff) and
	 * makes a finished value a valid starting point for the next piece. */
	unsigned char *p = (unsigned char *)(uintptr_t)buf;
	uint32_t reg = ~crc;

	while (len > 0) {
		/* crc32_iscsi takes an int length. */
		int n = len > (size_t)INT_MAX ? INT_MAX : (int)len;

		reg = crc32_iscsi(p, n, reg);
		p += n;
		len -= (size_t)n;
	}
	return ~reg;
}

/* The rules km_rec_decode() enforces on the lengths, shared with the encoder so that it
 * never writes a record the decoder refuses. */
static int
rec_lengths_valid(uint8_t type, uint8_t klen, uint32_t vlen)
{
	if (vlen > KM_REC_VLEN_MAX)
		return 0;
	switch (type) {
	case KM_REC_PUT:
		return klen >= 1;
	case KM_REC_DEL:
		return klen >= 1 && vlen == 0;
	case KM_REC_META:
		return 1;
	default:
		return 0;
	}
}

static uint32_t
rec_dcrc(const uint8_t *key, uint8_t klen, const uint8_t *val, uint32_t vlen)
{
	return km_crc32c(km_crc32c(0, key, klen), val, vlen);
}

size_t
km_rec_encode(uint8_t *buf, size_t cap, const struct km_rec *r)
{
	size_t size, used;

	if (buf == NULL || r == NULL || !rec_lengths_valid(r->type, r->klen, r->vlen))
		return 0;
	if ((r->klen > 0 && r->key == NULL) || (r->vlen > 0 && r->val == NULL))
		return 0;
	size = km_rec_size(r->klen, r->vlen);
	if (cap < size)
		return 0;

	km_le_put32(buf + REC_OFF_DCRC, rec_dcrc(r->key, r->klen, r->val, r->vlen));
	km_le_put16(buf + REC_OFF_MAGIC, KM_REC_MAGIC);
	buf[REC_OFF_TYPE] = r->type;
	buf[REC_OFF_KLEN] = r->klen;
	km_le_put32(buf + REC_OFF_VLEN, r->vlen);
	km_le_put64(buf + REC_OFF_VERSION, r->version);
	km_le_put32(buf + REC_OFF_HCRC,
		km_crc32c(0, buf + REC_OFF_DCRC, KM_REC_HDR_LEN - REC_OFF_DCRC));

	used = KM_REC_HDR_LEN;
	if (r->klen > 0)
		memcpy(buf + used, r->key, r->klen);
	used += r->klen;
	if (r->vlen > 0)
		memcpy(buf + used, r->val, r->vlen);
	used += r->vlen;
	memset(buf + used, 0, size - used);
	return size;
}

int
km_rec_decode(const uint8_t *buf, size_t len, struct km_rec *r, size_t *size)
{
	struct km_rec h;
	size_t need;

	if (len < KM_REC_HDR_LEN) {
		*size = KM_REC_HDR_LEN;
		return KM_REC_SHORT;
	}
	if (km_le_get16(buf + REC_OFF_MAGIC) != KM_REC_MAGIC)
		return KM_REC_BADHDR;
	h.type = buf[REC_OFF_TYPE];
	h.klen = buf[REC_OFF_KLEN];
	h.vlen = km_le_get32(buf + REC_OFF_VLEN);
	h.version = km_le_get64(buf + REC_OFF_VERSION);
	h.key = NULL;
	h.val = NULL;
	if (!rec_lengths_valid(h.type, h.klen, h.vlen))
		return KM_REC_BADHDR;
	if (km_le_get32(buf + REC_OFF_HCRC) !=
		km_crc32c(0, buf + REC_OFF_DCRC, KM_REC_HDR_LEN - REC_OFF_DCRC))
		return KM_REC_BADHDR;

	need = km_rec_size(h.klen, h.vlen);
	*size = need;
	if (len < need)
		return KM_REC_SHORT;
	if (h.klen > 0)
		h.key = buf + KM_REC_HDR_LEN;
	if (h.vlen > 0)
		h.val = buf + KM_REC_HDR_LEN + h.klen;
	if (km_le_get32(buf + REC_OFF_DCRC) != rec_dcrc(h.key, h.klen, h.val, h.vlen)) {
		h.key = NULL;
		h.val = NULL;
		*r = h;
		return KM_REC_BADDATA;
	}
	*r = h;
	return KM_REC_OK;
}

int
km_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	ssize_t n;

	while (len > 0) {
		n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ENOSPC;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int
km_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	ssize_t n;

	while (len > 0) {
		n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}
