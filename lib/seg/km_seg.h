/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_SEG_H
#define KM_SEG_H

/**
 * @file
 * Cold segments: the cheap tier. A segment is one immutable file of records (km_record.h,
 * KM_REC_PUT only) grouped into blocks of about block_size uncompressed bytes, each
 * block compressed on its own with igzip (ISA-L, raw deflate), so that reading one key
 * reads and inflates one block.
 *
 * File layout (little endian):
 *   header (KM_SEG_HDR_LEN bytes): magic "KMSEG001", then the fields of km_seg_meta, the
 *     block count, the offset of the block table, and a CRC32C of the header;
 *   the compressed blocks, back to back;
 *   the block table: per block {u64 file offset, u32 compressed length, u32 uncompressed
 *     length, u32 CRC32C of the compressed bytes, u32 records in the block};
 *   a CRC32C of the block table (4 bytes) at the end of the file.
 * A record never spans two blocks. A segment is written to a temporary path, made
 * durable (fdatasync) and only then renamed into place by the caller, so an opened
 * segment is either whole or refused.
 *
 * Concurrency: a writer or a reader is used by one thread at a time; a reader's state
 * never changes after km_seg_open(), so km_seg_block_decode() may run on several threads
 * at once on the same segment (each with its own buffers).
 */

#include <stddef.h>
#include <stdint.h>

#include <km_record.h>

#define KM_SEG_HDR_LEN            128
#define KM_SEG_BLOCK_SIZE_DEFAULT 16384u
#define KM_SEG_BLOCK_SIZE_MAX     (1u << 20)

/** What the store layer keeps in a segment's header. */
struct km_seg_meta {
	uint64_t shard_id;
	uint64_t birth;         /* stamp of the store the segment belongs to */
	uint64_t version_floor; /* versions the store issues are above this */
	uint64_t entries;       /* records in the segment (set by the writer) */
	uint8_t route_sep;
	uint8_t route_depth;
};

struct km_seg_writer;
struct km_seg;

/**
 * Create a segment file at path (O_EXCL: it must not exist).
 * @param block_size uncompressed bytes per block, 4096..KM_SEG_BLOCK_SIZE_MAX
 *   (0 = KM_SEG_BLOCK_SIZE_DEFAULT); a record larger than that gets a block of its own.
 * @return 0, -EINVAL, -EEXIST, -errno of open.
 */
int km_seg_writer_open(const char *path, const struct km_seg_meta *meta, uint32_t block_size,
	struct km_seg_writer **out);

/**
 * Append a PUT record. Where it lands is returned: the block number and the record's
 * offset inside the block's uncompressed bytes (what km_seg_block_decode() gives back).
 * @return 0, -EINVAL (not a PUT), -errno of write or -ENOMEM (the writer is then unusable:
 *   abort it).
 */
int km_seg_writer_add(
	struct km_seg_writer *w, const struct km_rec *r, uint32_t *block, uint32_t *off);

/**
 * Compress and write the last block, the table and the header, fdatasync, close.
 * The writer is freed whatever the result.
 * @return 0 or -errno (the file is then removed).
 */
int km_seg_writer_finish(struct km_seg_writer *w);

/** Close, remove the file, free. NULL is allowed. */
void km_seg_writer_abort(struct km_seg_writer *w);

/**
 * Open a segment: checks the header and table CRCs and that the blocks lie inside the
 * file; reads the table into DRAM (16 + 8 bytes per block).
 * @return 0, -EBADMSG (not a segment, damaged header or table), -errno of open/read,
 *   -ENOMEM.
 */
int km_seg_open(const char *path, struct km_seg **out);

/** NULL is allowed. */
void km_seg_close(struct km_seg *s);

const struct km_seg_meta *km_seg_meta(const struct km_seg *s);
uint32_t km_seg_nb_blocks(const struct km_seg *s);
/** File descriptor (O_RDONLY) for the caller's own reads (pread, io_uring). */
int km_seg_fd(const struct km_seg *s);
/** Largest uncompressed and compressed block lengths: buffer sizes for the calls below. */
uint32_t km_seg_ublock_max(const struct km_seg *s);
uint32_t km_seg_cblock_max(const struct km_seg *s);
/** File size in bytes. */
uint64_t km_seg_file_bytes(const struct km_seg *s);

/**
 * Where block b's compressed bytes are. @return 0, -ERANGE (no such block).
 */
int km_seg_block_extent(const struct km_seg *s, uint32_t b, uint64_t *off, uint32_t *clen);

/**
 * Check the CRC of block b's compressed bytes (clen bytes at cbuf, as read from the
 * extent) and inflate them into ubuf.
 * @return the uncompressed length, -ERANGE (no such block), -EBADMSG (CRC, inflate
 *   error or length different from the table's), -ENOSPC (ucap too small).
 */
int km_seg_block_decode(const struct km_seg *s, uint32_t b, const void *cbuf, uint32_t clen,
	void *ubuf, uint32_t ucap);

/**
 * Call fn for every record, block by block in file order (synchronous reads), until it
 * returns non-zero (that value is returned).
 * @return 0, fn's value, or -errno / -EBADMSG for a block that cannot be read or decoded
 *   (the scan stops there).
 */
int km_seg_scan(struct km_seg *s,
	int (*fn)(void *arg, const struct km_rec *r, uint32_t block, uint32_t off), void *arg);

/**
 * km_seg_scan() over blocks [first, first + n_blocks) only (clipped to the segment): a
 * scan made a few blocks at a time.
 * @return as km_seg_scan().
 */
int km_seg_scan_blocks(struct km_seg *s, uint32_t first, uint32_t n_blocks,
	int (*fn)(void *arg, const struct km_rec *r, uint32_t block, uint32_t off), void *arg);

#endif /* KM_SEG_H */
