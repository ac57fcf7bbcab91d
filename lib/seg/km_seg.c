/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Cold segment files: writer and reader. The layout is in km_seg.h; the byte offsets are:
 *
 * Header (KM_SEG_HDR_LEN = 128 bytes at offset 0):
 *   off  size  field
 *     0     8  magic          "KMSEG001"
 *     8     8  shard_id
 *    16     8  birth
 *    24     8  version_floor
 *    32     8  entries        records in the segment
 *    40     1  route_sep
 *    41     1  route_depth
 *    42     2  reserved (0)
 *    44     4  block_size     the writer's block size
 *    48     4  nb_blocks
 *    52     4  reserved (0)
 *    56     8  table_off      offset of the block table
 *    64    60  reserved (0)
 *   124     4  hcrc           CRC32C of bytes 0..123
 *
 * Block table entry (SEG_ENT_LEN = 24 bytes), nb_blocks of them at table_off:
 *     0     8  off            file offset of the compressed bytes
 *     8     4  clen           compressed length
 *    12     4  ulen           uncompressed length
 *    16     4  crc            CRC32C of the compressed bytes
 *    20     4  nrec           records in the block
 * followed by the CRC32C of the whole table (4 bytes), the last bytes of the file.
 *
 * The header is written last: until finish, bytes 0..127 are a hole of zeros and the file
 * is refused by km_seg_open().
 */

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <isa-l/igzip_lib.h>

#include "km_seg.h"

#define SEG_MAGIC     "KMSEG001"
#define SEG_MAGIC_LEN 8

#define SEG_OFF_MAGIC       0
#define SEG_OFF_SHARD       8
#define SEG_OFF_BIRTH       16
#define SEG_OFF_VFLOOR      24
#define SEG_OFF_ENTRIES     32
#define SEG_OFF_ROUTE_SEP   40
#define SEG_OFF_ROUTE_DEPTH 41
#define SEG_OFF_BLOCK_SIZE  44
#define SEG_OFF_NB_BLOCKS   48
#define SEG_OFF_TABLE       56
#define SEG_OFF_HCRC        124

#define SEG_ENT_OFF  0
#define SEG_ENT_CLEN 8
#define SEG_ENT_ULEN 12
#define SEG_ENT_CRC  16
#define SEG_ENT_NREC 20
#define SEG_ENT_LEN  24

#define SEG_BLOCK_SIZE_MIN 4096u

/* igzip level 1; its hash tables live in level_buf, sized as igzip_lib.h recommends. */
#define SEG_LEVEL         1
#define SEG_LEVEL_BUF_LEN ISAL_DEF_LVL1_DEFAULT

/* The largest block: one record of the largest size (it gets a block of its own), which is
 * more than KM_SEG_BLOCK_SIZE_MAX. */
#define SEG_ULEN_LIMIT km_rec_size(UINT8_MAX, KM_REC_VLEN_MAX)

struct seg_block {
	uint64_t off;
	uint32_t clen;
	uint32_t ulen;
	uint32_t crc;
	uint32_t nrec;
};

struct km_seg_writer {
	int fd;
	int err; /* first error of add(); the writer is unusable after it */
	char *path;
	struct km_seg_meta meta;
	uint32_t block_size;
	uint8_t *ubuf; /* the block being filled */
	size_t ucap;
	uint32_t uused;
	uint32_t unrec; /* records in ubuf */
	uint8_t *cbuf;  /* compressed output, seg_cbound(ucap) bytes */
	size_t ccap;
	uint8_t *level_buf; /* igzip level 1 hash tables */
	struct seg_block *blocks;
	uint32_t nb_blocks;
	uint32_t blocks_cap;
	uint64_t file_off; /* where the next block goes */
	uint64_t entries;
	struct isal_zstream zs; /* 80 KB: kept here, not on the stack */
};

struct km_seg {
	int fd;
	struct km_seg_meta meta;
	uint32_t block_size;
	uint32_t nb_blocks;
	uint32_t ublock_max;
	uint32_t cblock_max;
	uint64_t file_bytes;
	struct seg_block *blocks;
};

/*
 * Room deflate needs for ulen input bytes in the worst case: igzip falls back to stored
 * blocks (5 header bytes per 65535 input bytes) when compression does not pay; the rest
 * is slack for the final empty block and bit alignment.
 */
static inline size_t
seg_cbound(size_t ulen)
{
	return ulen + 5 * (ulen / 65535 + 1) + 64;
}

/* Grow a buffer to at least need bytes (contents kept). */
static int
grow(uint8_t **buf, size_t *cap, size_t need)
{
	uint8_t *p;

	if (*cap >= need)
		return 0;
	p = realloc(*buf, need);
	if (p == NULL)
		return -ENOMEM;
	*buf = p;
	*cap = need;
	return 0;
}

int
km_seg_writer_open(const char *path, const struct km_seg_meta *meta, uint32_t block_size,
	struct km_seg_writer **out)
{
	struct km_seg_writer *w;
	int ret;

	if (path == NULL || meta == NULL || out == NULL)
		return -EINVAL;
	if (block_size == 0)
		block_size = KM_SEG_BLOCK_SIZE_DEFAULT;
	if (block_size < SEG_BLOCK_SIZE_MIN || block_size > KM_SEG_BLOCK_SIZE_MAX)
		return -EINVAL;

	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	w->fd = -1;
	w->meta = *meta;
	w->block_size = block_size;
	w->file_off = KM_SEG_HDR_LEN;
	w->path = strdup(path);
	w->level_buf = malloc(SEG_LEVEL_BUF_LEN);
	if (w->path == NULL || w->level_buf == NULL || grow(&w->ubuf, &w->ucap, block_size) < 0 ||
		grow(&w->cbuf, &w->ccap, seg_cbound(block_size)) < 0) {
		ret = -ENOMEM;
		goto fail;
	}
	w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		ret = -errno;
		goto fail;
	}
	*out = w;
	return 0;

fail:
	free(w->level_buf);
	free(w->cbuf);
	free(w->ubuf);
	free(w->path);
	free(w);
	return ret;
}

/* Compress the buffered block, write it and add it to the table. */
static int
writer_flush(struct km_seg_writer *w)
{
	struct isal_zstream *zs = &w->zs;
	struct seg_block *blk;
	int ret;

	if (w->uused == 0)
		return 0;
	if (w->nb_blocks == w->blocks_cap) {
		uint32_t cap = w->blocks_cap == 0 ? 64 : w->blocks_cap * 2;
		struct seg_block *b;

		if (cap <= w->blocks_cap)
			return -EFBIG;
		b = realloc(w->blocks, sizeof(*b) * cap);
		if (b == NULL)
			return -ENOMEM;
		w->blocks = b;
		w->blocks_cap = cap;
	}

	isal_deflate_stateless_init(zs);
	zs->level = SEG_LEVEL;
	zs->level_buf = w->level_buf;
	zs->level_buf_size = SEG_LEVEL_BUF_LEN;
	zs->gzip_flag = IGZIP_DEFLATE;
	zs->flush = NO_FLUSH;
	zs->end_of_stream = 1;
	zs->next_in = w->ubuf;
	zs->avail_in = w->uused;
	zs->next_out = w->cbuf;
	zs->avail_out = (uint32_t)w->ccap;
	/* Only a bug (level, buffer, bound) can fail here: report it as an I/O error. */
	if (isal_deflate_stateless(zs) != COMP_OK)
		return -EIO;

	blk = &w->blocks[w->nb_blocks];
	blk->off = w->file_off;
	blk->clen = zs->total_out;
	blk->ulen = w->uused;
	blk->crc = km_crc32c(0, w->cbuf, blk->clen);
	blk->nrec = w->unrec;
	ret = km_pwrite_all(w->fd, w->cbuf, blk->clen, blk->off);
	if (ret < 0)
		return ret;
	w->file_off += blk->clen;
	w->nb_blocks++;
	w->uused = 0;
	w->unrec = 0;
	return 0;
}

int
km_seg_writer_add(struct km_seg_writer *w, const struct km_rec *r, uint32_t *block, uint32_t *off)
{
	size_t size;
	int ret;

	if (w == NULL || r == NULL || r->type != KM_REC_PUT)
		return -EINVAL;
	if (w->err != 0)
		return w->err;
	size = km_rec_size(r->klen, r->vlen);
	if (r->klen == 0 || r->key == NULL || r->vlen > KM_REC_VLEN_MAX ||
		(r->vlen > 0 && r->val == NULL))
		return -EINVAL;

	/* A record never spans two blocks: close the block when this one does not fit. */
	if (w->uused > 0 && w->uused + size > w->block_size) {
		ret = writer_flush(w);
		if (ret < 0)
			goto fail;
	}
	/* A record larger than the block size gets a block of its own, as big as it. */
	if (w->uused + size > w->ucap) {
		ret = grow(&w->ubuf, &w->ucap, w->uused + size);
		if (ret == 0)
			ret = grow(&w->cbuf, &w->ccap, seg_cbound(w->ucap));
		if (ret < 0)
			goto fail;
	}
	if (km_rec_encode(w->ubuf + w->uused, w->ucap - w->uused, r) != size) {
		ret = -EINVAL;
		goto fail;
	}
	if (block != NULL)
		*block = w->nb_blocks;
	if (off != NULL)
		*off = w->uused;
	w->uused += (uint32_t)size;
	w->unrec++;
	w->entries++;
	if (w->uused >= w->block_size) {
		ret = writer_flush(w);
		if (ret < 0)
			goto fail;
	}
	return 0;

fail:
	w->err = ret;
	return ret;
}

static void
writer_free(struct km_seg_writer *w)
{
	free(w->blocks);
	free(w->level_buf);
	free(w->cbuf);
	free(w->ubuf);
	free(w->path);
	free(w);
}

void
km_seg_writer_abort(struct km_seg_writer *w)
{
	if (w == NULL)
		return;
	if (w->fd >= 0)
		close(w->fd);
	unlink(w->path);
	writer_free(w);
}

int
km_seg_writer_finish(struct km_seg_writer *w)
{
	uint8_t hdr[KM_SEG_HDR_LEN];
	uint8_t *table = NULL;
	size_t tlen;
	uint32_t i;
	int ret;

	if (w == NULL)
		return -EINVAL;
	ret = w->err;
	if (ret == 0)
		ret = writer_flush(w);
	if (ret < 0)
		goto fail;

	tlen = (size_t)w->nb_blocks * SEG_ENT_LEN;
	table = malloc(tlen + 4);
	if (table == NULL) {
		ret = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < w->nb_blocks; i++) {
		uint8_t *e = table + (size_t)i * SEG_ENT_LEN;

		km_le_put64(e + SEG_ENT_OFF, w->blocks[i].off);
		km_le_put32(e + SEG_ENT_CLEN, w->blocks[i].clen);
		km_le_put32(e + SEG_ENT_ULEN, w->blocks[i].ulen);
		km_le_put32(e + SEG_ENT_CRC, w->blocks[i].crc);
		km_le_put32(e + SEG_ENT_NREC, w->blocks[i].nrec);
	}
	km_le_put32(table + tlen, km_crc32c(0, table, tlen));
	ret = km_pwrite_all(w->fd, table, tlen + 4, w->file_off);
	if (ret < 0)
		goto fail;

	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr + SEG_OFF_MAGIC, SEG_MAGIC, SEG_MAGIC_LEN);
	km_le_put64(hdr + SEG_OFF_SHARD, w->meta.shard_id);
	km_le_put64(hdr + SEG_OFF_BIRTH, w->meta.birth);
	km_le_put64(hdr + SEG_OFF_VFLOOR, w->meta.version_floor);
	km_le_put64(hdr + SEG_OFF_ENTRIES, w->entries);
	hdr[SEG_OFF_ROUTE_SEP] = w->meta.route_sep;
	hdr[SEG_OFF_ROUTE_DEPTH] = w->meta.route_depth;
	km_le_put32(hdr + SEG_OFF_BLOCK_SIZE, w->block_size);
	km_le_put32(hdr + SEG_OFF_NB_BLOCKS, w->nb_blocks);
	km_le_put64(hdr + SEG_OFF_TABLE, w->file_off);
	km_le_put32(hdr + SEG_OFF_HCRC, km_crc32c(0, hdr, SEG_OFF_HCRC));
	ret = km_pwrite_all(w->fd, hdr, sizeof(hdr), 0);
	if (ret < 0)
		goto fail;

	if (fdatasync(w->fd) < 0) {
		ret = -errno;
		goto fail;
	}
	ret = close(w->fd);
	w->fd = -1;
	if (ret < 0) {
		ret = -errno;
		goto fail;
	}
	free(table);
	writer_free(w);
	return 0;

fail:
	free(table);
	km_seg_writer_abort(w);
	return ret;
}

/* Check one decoded table entry against the header and the previous block. */
static int
seg_block_valid(
	const struct km_seg *s, const struct seg_block *b, uint64_t expect_off, uint64_t table_off)
{
	if (b->off != expect_off || b->clen == 0 || b->clen > table_off - b->off)
		return 0;
	if (b->nrec == 0 || b->ulen < (uint64_t)KM_REC_HDR_LEN * b->nrec ||
		b->clen > seg_cbound(b->ulen))
		return 0;
	/* Blocks are filled up to block_size; only a lone record may make one larger. */
	if (b->ulen > s->block_size && (b->nrec != 1 || b->ulen > SEG_ULEN_LIMIT))
		return 0;
	return 1;
}

int
km_seg_open(const char *path, struct km_seg **out)
{
	uint8_t hdr[KM_SEG_HDR_LEN];
	uint8_t *table = NULL;
	struct km_seg *s;
	uint64_t table_off, entries, nrec = 0, expect_off = KM_SEG_HDR_LEN;
	size_t tlen;
	struct stat st;
	uint32_t i;
	int ret;

	if (path == NULL || out == NULL)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->fd < 0) {
		ret = -errno;
		free(s);
		return ret;
	}
	if (fstat(s->fd, &st) < 0) {
		ret = -errno;
		goto fail;
	}
	s->file_bytes = (uint64_t)st.st_size;
	ret = -EBADMSG;
	if (s->file_bytes < KM_SEG_HDR_LEN + 4)
		goto fail;
	ret = km_pread_all(s->fd, hdr, sizeof(hdr), 0);
	if (ret < 0)
		goto fail;

	ret = -EBADMSG;
	if (memcmp(hdr + SEG_OFF_MAGIC, SEG_MAGIC, SEG_MAGIC_LEN) != 0 ||
		km_le_get32(hdr + SEG_OFF_HCRC) != km_crc32c(0, hdr, SEG_OFF_HCRC))
		goto fail;
	s->meta.shard_id = km_le_get64(hdr + SEG_OFF_SHARD);
	s->meta.birth = km_le_get64(hdr + SEG_OFF_BIRTH);
	s->meta.version_floor = km_le_get64(hdr + SEG_OFF_VFLOOR);
	entries = km_le_get64(hdr + SEG_OFF_ENTRIES);
	s->meta.entries = entries;
	s->meta.route_sep = hdr[SEG_OFF_ROUTE_SEP];
	s->meta.route_depth = hdr[SEG_OFF_ROUTE_DEPTH];
	s->block_size = km_le_get32(hdr + SEG_OFF_BLOCK_SIZE);
	s->nb_blocks = km_le_get32(hdr + SEG_OFF_NB_BLOCKS);
	table_off = km_le_get64(hdr + SEG_OFF_TABLE);
	if (s->block_size < SEG_BLOCK_SIZE_MIN || s->block_size > KM_SEG_BLOCK_SIZE_MAX)
		goto fail;
	/* The table and its CRC end the file exactly. */
	tlen = (size_t)s->nb_blocks * SEG_ENT_LEN;
	if (table_off < KM_SEG_HDR_LEN || table_off > s->file_bytes ||
		s->file_bytes - table_off != (uint64_t)tlen + 4)
		goto fail;

	ret = -ENOMEM;
	table = malloc(tlen + 4);
	if (table == NULL)
		goto fail;
	s->blocks = calloc(s->nb_blocks > 0 ? s->nb_blocks : 1, sizeof(*s->blocks));
	if (s->blocks == NULL)
		goto fail;
	ret = km_pread_all(s->fd, table, tlen + 4, table_off);
	if (ret < 0)
		goto fail;
	ret = -EBADMSG;
	if (km_le_get32(table + tlen) != km_crc32c(0, table, tlen))
		goto fail;
	for (i = 0; i < s->nb_blocks; i++) {
		const uint8_t *e = table + (size_t)i * SEG_ENT_LEN;
		struct seg_block *b = &s->blocks[i];

		b->off = km_le_get64(e + SEG_ENT_OFF);
		b->clen = km_le_get32(e + SEG_ENT_CLEN);
		b->ulen = km_le_get32(e + SEG_ENT_ULEN);
		b->crc = km_le_get32(e + SEG_ENT_CRC);
		b->nrec = km_le_get32(e + SEG_ENT_NREC);
		if (!seg_block_valid(s, b, expect_off, table_off))
			goto fail;
		expect_off = b->off + b->clen;
		nrec += b->nrec;
		if (b->ulen > s->ublock_max)
			s->ublock_max = b->ulen;
		if (b->clen > s->cblock_max)
			s->cblock_max = b->clen;
	}
	/* Blocks lie back to back between the header and the table. */
	if (expect_off != table_off || nrec != entries)
		goto fail;
	free(table);
	*out = s;
	return 0;

fail:
	free(table);
	km_seg_close(s);
	return ret;
}

void
km_seg_close(struct km_seg *s)
{
	if (s == NULL)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s->blocks);
	free(s);
}

const struct km_seg_meta *
km_seg_meta(const struct km_seg *s)
{
	return &s->meta;
}

uint32_t
km_seg_nb_blocks(const struct km_seg *s)
{
	return s->nb_blocks;
}

int
km_seg_fd(const struct km_seg *s)
{
	return s->fd;
}

uint32_t
km_seg_ublock_max(const struct km_seg *s)
{
	return s->ublock_max;
}

uint32_t
km_seg_cblock_max(const struct km_seg *s)
{
	return s->cblock_max;
}

uint64_t
km_seg_file_bytes(const struct km_seg *s)
{
	return s->file_bytes;
}

int
km_seg_block_extent(const struct km_seg *s, uint32_t b, uint64_t *off, uint32_t *clen)
{
	if (b >= s->nb_blocks)
		return -ERANGE;
	*off = s->blocks[b].off;
	*clen = s->blocks[b].clen;
	return 0;
}

int
km_seg_block_decode(const struct km_seg *s, uint32_t b, const void *cbuf, uint32_t clen, void *ubuf,
	uint32_t ucap)
{
	/* 85 KB of stack: callers run on threads with default (MB-sized) stacks, and this
	 * keeps concurrent decodes free of shared state and allocation. */
	struct inflate_state st;
	const struct seg_block *blk;

	if (b >= s->nb_blocks)
		return -ERANGE;
	blk = &s->blocks[b];
	if (clen != blk->clen || km_crc32c(0, cbuf, clen) != blk->crc)
		return -EBADMSG;
	if (ucap < blk->ulen)
		return -ENOSPC;

	isal_inflate_init(&st);
	st.crc_flag = ISAL_DEFLATE;
	st.next_in = (uint8_t *)(uintptr_t)cbuf;
	st.avail_in = clen;
	st.next_out = ubuf;
	/* Exactly ulen of room: a block inflating to more overflows and is refused. */
	st.avail_out = blk->ulen;
	if (isal_inflate_stateless(&st) != ISAL_DECOMP_OK || st.total_out != blk->ulen)
		return -EBADMSG;
	return (int)blk->ulen;
}

int
km_seg_scan_blocks(struct km_seg *s, uint32_t first, uint32_t n_blocks,
	int (*fn)(void *arg, const struct km_rec *r, uint32_t block, uint32_t off), void *arg)
{
	uint8_t *cbuf, *ubuf;
	uint32_t b, last;
	int ret = 0;

	if (first >= s->nb_blocks || n_blocks == 0)
		return 0;
	last = n_blocks < s->nb_blocks - first ? first + n_blocks : s->nb_blocks;
	cbuf = malloc(s->cblock_max);
	ubuf = malloc(s->ublock_max);
	if (cbuf == NULL || ubuf == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	for (b = first; b < last && ret == 0; b++) {
		const struct seg_block *blk = &s->blocks[b];
		uint32_t off = 0, n = 0;
		int ulen;

		ret = km_pread_all(s->fd, cbuf, blk->clen, blk->off);
		if (ret < 0)
			break;
		ulen = km_seg_block_decode(s, b, cbuf, blk->clen, ubuf, s->ublock_max);
		if (ulen < 0) {
			ret = ulen;
			break;
		}
		while (off < (uint32_t)ulen) {
			struct km_rec r;
			size_t size;

			if (km_rec_decode(ubuf + off, (uint32_t)ulen - off, &r, &size) !=
					KM_REC_OK ||
				r.type != KM_REC_PUT) {
				ret = -EBADMSG;
				break;
			}
			ret = fn(arg, &r, b, off);
			if (ret != 0)
				break;
			off += (uint32_t)size;
			n++;
		}
		if (ret == 0 && n != blk->nrec)
			ret = -EBADMSG;
	}
out:
	free(ubuf);
	free(cbuf);
	return ret;
}

int
km_seg_scan(struct km_seg *s,
	int (*fn)(void *arg, const struct km_rec *r, uint32_t block, uint32_t off), void *arg)
{
	return km_seg_scan_blocks(s, 0, s->nb_blocks, fn, arg);
}
