/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_RECORD_H
#define KM_RECORD_H

/**
 * @file
 * On-disk records of the persistent stores (log files and cold segments) and the one
 * CRC32C helper of the project.
 *
 * A record is a 24-byte header, the key, the value, and zero padding to a multiple of
 * KM_REC_ALIGN bytes. All integers are little endian.
 *
 *   off  size  field
 *     0     4  hcrc     CRC32C of bytes 4..23 of the header
 *     4     4  dcrc     CRC32C of key then value (klen + vlen bytes)
 *     8     2  magic    KM_REC_MAGIC
 *    10     1  type     KM_REC_PUT, KM_REC_DEL or KM_REC_META
 *    11     1  klen     key length (0 only for META)
 *    12     4  vlen     value length (0 for DEL)
 *    16     8  version  entry version (META: 0 or anything the writer chose)
 *    24        key, value, padding
 *
 * Two CRCs so that a reader can tell a damaged header (the length cannot be trusted: scan
 * on for the next record start, KM_REC_ALIGN bytes at a time) from damaged data (the
 * length is good: skip exactly this record).
 */

#include <stddef.h>
#include <stdint.h>

#include <km_util.h> /* km_le_get/put: the little-endian fields */

#define KM_REC_HDR_LEN  24
#define KM_REC_ALIGN    8
#define KM_REC_MAGIC    0x4b52     /* "RK" little endian */
#define KM_REC_VLEN_MAX (1u << 20) /* larger lengths are refused as damage */

enum km_rec_type {
	KM_REC_PUT = 1,  /* key = value at version */
	KM_REC_DEL = 2,  /* key deleted (the version is the deleted entry's) */
	KM_REC_META = 3, /* file metadata, no key; the value is the writer's */
};

struct km_rec {
	uint8_t type; /* enum km_rec_type */
	uint8_t klen;
	uint32_t vlen;
	uint64_t version;
	const uint8_t *key; /* klen bytes (may be NULL when klen is 0) */
	const uint8_t *val; /* vlen bytes (may be NULL when vlen is 0) */
};

/* Results of km_rec_decode(). */
enum km_rec_result {
	KM_REC_OK = 0,      /* a whole, valid record */
	KM_REC_SHORT = 1,   /* valid so far, but fewer bytes than the record needs */
	KM_REC_BADHDR = 2,  /* no record starts here (magic, type, lengths or hcrc wrong) */
	KM_REC_BADDATA = 3, /* the header is valid, the key/value CRC is not */
};

/**
 * CRC32C (Castagnoli, reflected, the iSCSI/ext4 one) of buf, continuing from crc:
 * km_crc32c(0, "123456789", 9) == 0xe3069283, and
 * km_crc32c(km_crc32c(0, a, n), b, m) == CRC32C of a followed by b.
 * ISA-L's crc32_iscsi underneath.
 * @note Context: any thread.
 */
uint32_t km_crc32c(uint32_t crc, const void *buf, size_t len);

/** Bytes a record with these lengths takes, padding included. */
static inline size_t
km_rec_size(uint32_t klen, uint32_t vlen)
{
	return (KM_REC_HDR_LEN + (size_t)klen + vlen + KM_REC_ALIGN - 1) &
	       ~(size_t)(KM_REC_ALIGN - 1);
}

/**
 * Encode r at buf (padding bytes zeroed).
 * @return bytes written (km_rec_size()), or 0 if cap is too small or r is invalid
 *   (unknown type, vlen > KM_REC_VLEN_MAX).
 * @note Context: any thread.
 */
size_t km_rec_encode(uint8_t *buf, size_t cap, const struct km_rec *r);

/**
 * Decode the record starting at buf, len bytes available.
 * @param r out: for KM_REC_OK, the record (key and val point into buf); for
 *   KM_REC_BADDATA, the header fields (key/val unset).
 * @param size out: for KM_REC_OK and KM_REC_BADDATA, the record's size (so the caller can
 *   skip it); for KM_REC_SHORT, the bytes needed (KM_REC_HDR_LEN when even the header is
 *   incomplete, else the whole record's size).
 * @return enum km_rec_result.
 * @note Context: any thread.
 */
int km_rec_decode(const uint8_t *buf, size_t len, struct km_rec *r, size_t *size);

/**
 * Write all len bytes at off (retrying short writes and EINTR).
 * @return 0, -errno, or -ENOSPC when the file system takes no more bytes.
 * @note Context: any thread (blocking).
 */
int km_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);

/**
 * Read all len bytes at off (retrying short reads and EINTR).
 * @return 0, -errno, or -EIO when the file ends before len bytes.
 * @note Context: any thread (blocking).
 */
int km_pread_all(int fd, void *buf, size_t len, uint64_t off);

#endif /* KM_RECORD_H */
