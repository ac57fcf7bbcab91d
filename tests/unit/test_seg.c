/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Cold segment tests: write/read round trips over record counts, value kinds and block
 * sizes (every record found again through its (block, off) and through km_seg_scan()),
 * records larger than a block, metadata, the empty segment, damage anywhere in blocks,
 * header and table, truncation, and files forged from the documented layout with stored
 * deflate blocks (so that the reader is checked against the format, not only against
 * its own writer).
 */

#include <errno.h>
#include <fcntl.h>
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

#include <km_record.h>
#include <km_seg.h>
#include <km_util.h>

#define SEED 0x636f6c64ULL /* "cold" */

/* Layout of km_seg.c's header and table, restated for the forged files. */
#define HDR_OFF_ENTRIES    32
#define HDR_OFF_BLOCK_SIZE 44
#define HDR_OFF_NB_BLOCKS  48
#define HDR_OFF_TABLE      56
#define HDR_OFF_HCRC       124
#define ENT_LEN            24

static char tmpdir[64];
static unsigned int file_seq;

/* xorshift64*: deterministic, seedable, no libc state shared with other tests. */
static uint64_t
rnd_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static uint64_t
mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x | 1; /* never 0: it seeds xorshift */
}

static void
new_path(char *buf, size_t len)
{
	snprintf(buf, len, "%s/seg-%u", tmpdir, file_seq++);
}

static uint64_t
file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static void
read_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		assert_true(n > 0);
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
}

static void
write_at(const char *path, const void *buf, size_t len, uint64_t off)
{
	int fd = open(path, O_WRONLY);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void
put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

/*
 * Records are generated from (seed, index) so that a reader can check a record without the
 * test keeping 100000 values around.
 */
enum val_kind {
	VAL_RANDOM,
	VAL_TEXT, /* compressible: words from a small vocabulary */
};

struct gen {
	uint64_t seed;
	enum val_kind kind;
	uint32_t vmax;      /* values 0..vmax bytes */
	uint32_t big_every; /* every n-th record (n > 0) gets a value of big_len bytes */
	uint32_t big_len;
};

struct rec_buf {
	struct km_rec r;
	uint8_t key[64];
	uint8_t *val; /* KM_REC_VLEN_MAX bytes */
};

static void
gen_rec(const struct gen *g, uint32_t i, struct rec_buf *out)
{
	static const char *const words[] = {
		"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"};
	uint64_t h = mix(g->seed ^ ((uint64_t)i * 0x9e3779b97f4a7c15ULL));
	uint32_t vlen, klen, n = 0;
	int len;

	len = snprintf((char *)out->key, sizeof(out->key), "key:%u:%llx", i,
		(unsigned long long)(h % (1ULL << (h % 40))));
	klen = (uint32_t)len;
	if (g->big_every != 0 && i % g->big_every == g->big_every - 1)
		vlen = g->big_len;
	else
		vlen = (uint32_t)(rnd_next(&h) % (g->vmax + 1));
	if (g->kind == VAL_RANDOM) {
		for (n = 0; n < vlen; n++)
			out->val[n] = (uint8_t)rnd_next(&h);
	} else {
		while (n < vlen) {
			const char *w = words[rnd_next(&h) % 8];

			while (*w != '\0' && n < vlen)
				out->val[n++] = (uint8_t)*w++;
			if (n < vlen)
				out->val[n++] = ' ';
		}
	}
	out->r = (struct km_rec){.type = KM_REC_PUT,
		.klen = (uint8_t)klen,
		.vlen = vlen,
		.version = (uint64_t)i * 3 + 1,
		.key = out->key,
		.val = out->val};
}

static void
rec_buf_init(struct rec_buf *b)
{
	b->val = malloc(KM_REC_VLEN_MAX);
	assert_non_null(b->val);
}

static void
assert_rec_equal(const struct km_rec *a, const struct km_rec *b)
{
	assert_int_equal(a->type, b->type);
	assert_int_equal(a->klen, b->klen);
	assert_int_equal(a->vlen, b->vlen);
	assert_int_equal(a->version, b->version);
	assert_memory_equal(a->key, b->key, a->klen);
	if (a->vlen > 0)
		assert_memory_equal(a->val, b->val, a->vlen);
}

static const struct km_seg_meta meta_sample = {
	.shard_id = 7,
	.birth = 0x0123456789abcdefULL,
	.version_floor = 1000,
	.entries = 0,
	.route_sep = '/',
	.route_depth = 2,
};

struct placed {
	uint32_t block;
	uint32_t off;
};

/* Write n generated records; returns where each one landed (caller frees) and the raw
 * record bytes in *raw. */
static struct placed *
write_seg(const char *path, const struct gen *g, uint32_t n, uint32_t block_size, uint64_t *raw)
{
	struct km_seg_writer *w = NULL;
	struct placed *pl = calloc(n > 0 ? n : 1, sizeof(*pl));
	struct rec_buf rb;
	uint32_t i;

	assert_non_null(pl);
	rec_buf_init(&rb);
	*raw = 0;
	assert_int_equal(km_seg_writer_open(path, &meta_sample, block_size, &w), 0);
	for (i = 0; i < n; i++) {
		gen_rec(g, i, &rb);
		assert_int_equal(km_seg_writer_add(w, &rb.r, &pl[i].block, &pl[i].off), 0);
		*raw += km_rec_size(rb.r.klen, rb.r.vlen);
		/* Records fill blocks in order, back to back. */
		if (i == 0) {
			assert_int_equal(pl[i].block, 0);
			assert_int_equal(pl[i].off, 0);
		} else if (pl[i].block == pl[i - 1].block) {
			assert_true(pl[i].off > pl[i - 1].off);
		} else {
			assert_int_equal(pl[i].block, pl[i - 1].block + 1);
			assert_int_equal(pl[i].off, 0);
		}
	}
	assert_int_equal(km_seg_writer_finish(w), 0);
	free(rb.val);
	return pl;
}

struct scan_ctx {
	const struct gen *g;
	const struct placed *pl;
	struct rec_buf rb;
	uint32_t next;
	uint32_t stop_at; /* return 42 at this index (UINT32_MAX: never) */
};

static int
scan_check(void *arg, const struct km_rec *r, uint32_t block, uint32_t off)
{
	struct scan_ctx *c = arg;

	gen_rec(c->g, c->next, &c->rb);
	assert_rec_equal(r, &c->rb.r);
	if (c->pl != NULL) {
		assert_int_equal(block, c->pl[c->next].block);
		assert_int_equal(off, c->pl[c->next].off);
	}
	if (c->next++ == c->stop_at)
		return 42;
	return 0;
}

static void
check_seg(const char *path, const struct gen *g, uint32_t n, uint32_t block_size,
	const struct placed *pl)
{
	struct km_seg *s = NULL;
	struct scan_ctx ctx = {.g = g, .pl = pl, .stop_at = UINT32_MAX};
	const struct km_seg_meta *m;
	uint8_t *cbuf, *ubuf;
	uint32_t i, cur = UINT32_MAX, nb;
	int ulen = 0;

	assert_int_equal(km_seg_open(path, &s), 0);
	m = km_seg_meta(s);
	assert_int_equal(m->shard_id, meta_sample.shard_id);
	assert_int_equal(m->birth, meta_sample.birth);
	assert_int_equal(m->version_floor, meta_sample.version_floor);
	assert_int_equal(m->entries, n);
	assert_int_equal(m->route_sep, meta_sample.route_sep);
	assert_int_equal(m->route_depth, meta_sample.route_depth);
	assert_int_equal(km_seg_file_bytes(s), file_size(path));
	nb = km_seg_nb_blocks(s);
	assert_int_equal(nb, n == 0 ? 0 : pl[n - 1].block + 1);

	cbuf = malloc(km_seg_cblock_max(s) + 1);
	ubuf = malloc(km_seg_ublock_max(s) + 1);
	assert_non_null(cbuf);
	assert_non_null(ubuf);
	rec_buf_init(&ctx.rb);
	for (i = 0; i < n; i++) {
		struct km_rec r;
		size_t size;

		if (pl[i].block != cur) {
			uint64_t off;
			uint32_t clen;

			cur = pl[i].block;
			assert_int_equal(km_seg_block_extent(s, cur, &off, &clen), 0);
			assert_true(clen <= km_seg_cblock_max(s));
			assert_true(off >= KM_SEG_HDR_LEN && off + clen <= km_seg_file_bytes(s));
			read_all(km_seg_fd(s), cbuf, clen, off);
			ulen = km_seg_block_decode(s, cur, cbuf, clen, ubuf, km_seg_ublock_max(s));
			assert_true(ulen > 0 && (uint32_t)ulen <= km_seg_ublock_max(s));
		}
		gen_rec(g, i, &ctx.rb);
		/* A block holds block_size bytes of records, unless one record alone is larger. */
		if ((uint32_t)ulen > block_size)
			assert_int_equal((uint32_t)ulen, km_rec_size(ctx.rb.r.klen, ctx.rb.r.vlen));
		assert_true(pl[i].off < (uint32_t)ulen);
		assert_int_equal(
			km_rec_decode(ubuf + pl[i].off, (uint32_t)ulen - pl[i].off, &r, &size),
			KM_REC_OK);
		assert_rec_equal(&r, &ctx.rb.r);
	}
	assert_int_equal(km_seg_block_extent(s, nb, &(uint64_t){0}, &(uint32_t){0}), -ERANGE);

	assert_int_equal(km_seg_scan(s, scan_check, &ctx), 0);
	assert_int_equal(ctx.next, n);
	if (n > 2) {
		/* The callback's non-zero value stops the scan and comes back. */
		ctx.next = 0;
		ctx.stop_at = n / 2;
		assert_int_equal(km_seg_scan(s, scan_check, &ctx), 42);
		assert_int_equal(ctx.next, n / 2 + 1);
	}
	free(ctx.rb.val);
	free(ubuf);
	free(cbuf);
	km_seg_close(s);
}

static void
roundtrip(const struct gen *g, uint32_t n, uint32_t block_size)
{
	char path[128];
	struct placed *pl;
	uint64_t raw;

	new_path(path, sizeof(path));
	pl = write_seg(path, g, n, block_size, &raw);
	check_seg(path, g, n, block_size, pl);
	if (g->kind == VAL_TEXT && raw >= 64 * 1024)
		assert_true(file_size(path) < raw / 2);
	/* Incompressible data costs only the stored-block framing, table and header. */
	if (g->kind == VAL_RANDOM)
		assert_true(file_size(path) <=
			    raw + raw / 64 + KM_SEG_HDR_LEN + 4 +
				    (uint64_t)(pl[n - 1].block + 1) * (ENT_LEN + 64));
	free(pl);
	assert_int_equal(unlink(path), 0);
}

static void
test_roundtrip(void **state)
{
	static const uint32_t counts[] = {1, 1000, 100000};
	static const uint32_t block_sizes[] = {4096, 65536};
	unsigned int c, b, k;

	(void)state;
	for (k = 0; k < 2; k++) {
		for (b = 0; b < 2; b++) {
			for (c = 0; c < 3; c++) {
				struct gen g = {.seed = SEED + c * 16 + b * 4 + k,
					.kind = k == 0 ? VAL_RANDOM : VAL_TEXT,
					.vmax = 1400};

				roundtrip(&g, counts[c], block_sizes[b]);
			}
		}
	}
}

/* Records larger than the block: each gets a block of its own and the blocks around it
 * are unaffected. */
static void
test_big_records(void **state)
{
	struct gen g = {.seed = SEED + 100, .kind = VAL_RANDOM, .vmax = 1400};

	(void)state;
	g.big_every = 7;
	g.big_len = 5000;
	roundtrip(&g, 200, 4096);
	g.kind = VAL_TEXT;
	g.big_len = 200000;
	roundtrip(&g, 50, 65536);
	g.big_len = KM_REC_VLEN_MAX;
	roundtrip(&g, 10, 4096);
	g.kind = VAL_RANDOM;
	roundtrip(&g, 8, KM_SEG_BLOCK_SIZE_MAX);
	g.big_every = 1; /* only big records */
	g.big_len = 4096;
	roundtrip(&g, 20, 4096);
}

static void
test_meta(void **state)
{
	struct km_seg_meta in = {
		.shard_id = UINT64_MAX,
		.birth = 0x8000000000000001ULL,
		.version_floor = UINT64_MAX - 1,
		.entries = 999, /* the writer sets it */
		.route_sep = 0xff,
		.route_depth = 0x80,
	};
	struct gen g = {.seed = SEED + 200, .kind = VAL_TEXT, .vmax = 100};
	struct km_seg_writer *w = NULL;
	struct km_seg *s = NULL;
	struct rec_buf rb;
	char path[128];
	uint32_t i;

	(void)state;
	rec_buf_init(&rb);
	new_path(path, sizeof(path));
	assert_int_equal(km_seg_writer_open(path, &in, 0, &w), 0);
	for (i = 0; i < 3; i++) {
		gen_rec(&g, i, &rb);
		assert_int_equal(km_seg_writer_add(w, &rb.r, NULL, NULL), 0);
	}
	assert_int_equal(km_seg_writer_finish(w), 0);
	assert_int_equal(km_seg_open(path, &s), 0);
	assert_int_equal(km_seg_meta(s)->shard_id, in.shard_id);
	assert_int_equal(km_seg_meta(s)->birth, in.birth);
	assert_int_equal(km_seg_meta(s)->version_floor, in.version_floor);
	assert_int_equal(km_seg_meta(s)->entries, 3);
	assert_int_equal(km_seg_meta(s)->route_sep, in.route_sep);
	assert_int_equal(km_seg_meta(s)->route_depth, in.route_depth);
	assert_int_equal(km_seg_nb_blocks(s), 1);
	km_seg_close(s);
	assert_int_equal(unlink(path), 0);
	free(rb.val);
}

static int
scan_count(void *arg, const struct km_rec *r, uint32_t block, uint32_t off)
{
	(void)r;
	(void)block;
	(void)off;
	(*(uint32_t *)arg)++;
	return 0;
}

static void
test_empty(void **state)
{
	struct km_seg_writer *w = NULL;
	struct km_seg *s = NULL;
	char path[128];
	uint8_t buf[16];
	uint32_t count = 0;
	uint64_t off;
	uint32_t clen;

	(void)state;
	new_path(path, sizeof(path));
	assert_int_equal(km_seg_writer_open(path, &meta_sample, 0, &w), 0);
	assert_int_equal(km_seg_writer_finish(w), 0);
	assert_int_equal(file_size(path), KM_SEG_HDR_LEN + 4);
	assert_int_equal(km_seg_open(path, &s), 0);
	assert_int_equal(km_seg_nb_blocks(s), 0);
	assert_int_equal(km_seg_meta(s)->entries, 0);
	assert_int_equal(km_seg_meta(s)->shard_id, meta_sample.shard_id);
	assert_int_equal(km_seg_file_bytes(s), KM_SEG_HDR_LEN + 4);
	assert_int_equal(km_seg_scan(s, scan_count, &count), 0);
	assert_int_equal(count, 0);
	assert_int_equal(km_seg_block_extent(s, 0, &off, &clen), -ERANGE);
	assert_int_equal(km_seg_block_decode(s, 0, buf, sizeof(buf), buf, sizeof(buf)), -ERANGE);
	km_seg_close(s);
	km_seg_close(NULL);
	assert_int_equal(unlink(path), 0);
}

/* A small finished segment of several blocks for the damage tests. */
static void
small_seg(char *path, size_t len, uint32_t n)
{
	struct gen g = {.seed = SEED + 300, .kind = VAL_TEXT, .vmax = 600};
	uint64_t raw;

	new_path(path, len);
	free(write_seg(path, &g, n, 4096, &raw));
}

static void
test_block_damage(void **state)
{
	struct km_seg *s = NULL;
	char path[128];
	uint8_t *cbuf, *ubuf;
	uint32_t clen, b, i, count = 0;
	uint64_t off;
	int ulen;

	(void)state;
	small_seg(path, sizeof(path), 100);
	assert_int_equal(km_seg_open(path, &s), 0);
	assert_true(km_seg_nb_blocks(s) > 2);
	cbuf = malloc(km_seg_cblock_max(s));
	ubuf = malloc(km_seg_ublock_max(s));
	assert_non_null(cbuf);
	assert_non_null(ubuf);

	for (b = 0; b < km_seg_nb_blocks(s); b++) {
		assert_int_equal(km_seg_block_extent(s, b, &off, &clen), 0);
		read_all(km_seg_fd(s), cbuf, clen, off);
		ulen = km_seg_block_decode(s, b, cbuf, clen, ubuf, km_seg_ublock_max(s));
		assert_true(ulen > 0);
		/* Every byte, every bit pattern change: the CRC refuses it. */
		for (i = 0; i < clen; i++) {
			cbuf[i] ^= (uint8_t)(1u << (i % 8));
			assert_int_equal(
				km_seg_block_decode(s, b, cbuf, clen, ubuf, km_seg_ublock_max(s)),
				-EBADMSG);
			cbuf[i] ^= (uint8_t)(1u << (i % 8));
		}
		/* Wrong length, wrong block, too small a buffer. */
		assert_int_equal(
			km_seg_block_decode(s, b, cbuf, clen - 1, ubuf, (uint32_t)ulen), -EBADMSG);
		if (km_seg_nb_blocks(s) > 1)
			assert_int_equal(km_seg_block_decode(s, (b + 1) % km_seg_nb_blocks(s), cbuf,
						 clen, ubuf, km_seg_ublock_max(s)),
				-EBADMSG);
		assert_int_equal(
			km_seg_block_decode(s, b, cbuf, clen, ubuf, (uint32_t)ulen - 1), -ENOSPC);
		assert_int_equal(km_seg_block_decode(s, b, cbuf, clen, ubuf, (uint32_t)ulen), ulen);
	}
	assert_int_equal(
		km_seg_block_decode(s, km_seg_nb_blocks(s), cbuf, clen, ubuf, km_seg_ublock_max(s)),
		-ERANGE);

	/* On disk: the table and header are intact, so open works, and the scan stops at the
	 * damaged block after the records of the blocks before it. */
	assert_int_equal(km_seg_block_extent(s, 2, &off, &clen), 0);
	read_all(km_seg_fd(s), cbuf, 1, off + clen / 2);
	km_seg_close(s);
	cbuf[0] ^= 0x10;
	write_at(path, cbuf, 1, off + clen / 2);
	assert_int_equal(km_seg_open(path, &s), 0);
	assert_int_equal(km_seg_scan(s, scan_count, &count), -EBADMSG);
	assert_true(count > 0 && count < 100);
	km_seg_close(s);
	free(ubuf);
	free(cbuf);
	assert_int_equal(unlink(path), 0);
}

static void
test_header_table_damage(void **state)
{
	struct km_seg *s = NULL;
	char path[128];
	uint64_t size, table_off, pos;
	uint8_t byte;
	int fd;

	(void)state;
	small_seg(path, sizeof(path), 60);
	size = file_size(path);
	assert_int_equal(km_seg_open(path, &s), 0);
	table_off = size - 4 - (uint64_t)km_seg_nb_blocks(s) * ENT_LEN;
	km_seg_close(s);

	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	for (pos = 0; pos < size; pos++) {
		if (pos == KM_SEG_HDR_LEN)
			pos = table_off; /* blocks: test_block_damage */
		read_all(fd, &byte, 1, pos);
		byte ^= 0xff;
		write_at(path, &byte, 1, pos);
		assert_int_equal(km_seg_open(path, &s), -EBADMSG);
		byte ^= 0xff;
		write_at(path, &byte, 1, pos);
	}
	close(fd);
	assert_int_equal(km_seg_open(path, &s), 0);
	km_seg_close(s);
	assert_int_equal(unlink(path), 0);
}

static void
test_truncated(void **state)
{
	struct km_seg *s = NULL;
	char path[128];
	uint64_t size, len;
	uint8_t zero = 0;

	(void)state;
	small_seg(path, sizeof(path), 30);
	size = file_size(path);
	for (len = size; len-- > 0;) {
		assert_int_equal(truncate(path, (off_t)len), 0);
		assert_true(km_seg_open(path, &s) < 0);
	}
	unlink(path);

	/* A byte appended is as wrong as one missing. */
	small_seg(path, sizeof(path), 30);
	write_at(path, &zero, 1, file_size(path));
	assert_int_equal(km_seg_open(path, &s), -EBADMSG);
	assert_int_equal(unlink(path), 0);
}

static void
test_not_a_segment(void **state)
{
	struct gen g = {.seed = SEED + 400, .kind = VAL_RANDOM, .vmax = 1400};
	struct km_seg_writer *w = NULL;
	struct km_seg *s = NULL;
	struct rec_buf rb;
	char path[128];
	uint8_t zeros[4096];
	uint32_t i, block = 0;

	(void)state;
	new_path(path, sizeof(path));
	assert_int_equal(km_seg_open(path, &s), -ENOENT);

	memset(zeros, 0, sizeof(zeros));
	assert_int_equal(creat(path, 0644) >= 0, 1);
	assert_int_equal(km_seg_open(path, &s), -EBADMSG);
	write_at(path, zeros, sizeof(zeros), 0);
	assert_int_equal(km_seg_open(path, &s), -EBADMSG);
	assert_int_equal(unlink(path), 0);

	/* A segment being written has blocks on disk but no header yet: refused. */
	rec_buf_init(&rb);
	assert_int_equal(km_seg_writer_open(path, &meta_sample, 4096, &w), 0);
	for (i = 0; block < 3; i++) {
		gen_rec(&g, i, &rb);
		assert_int_equal(km_seg_writer_add(w, &rb.r, &block, NULL), 0);
	}
	assert_true(file_size(path) > KM_SEG_HDR_LEN + 2 * 4096);
	assert_int_equal(km_seg_open(path, &s), -EBADMSG);
	km_seg_writer_abort(w);
	free(rb.val);
}

static void
test_writer_errors(void **state)
{
	struct gen g = {.seed = SEED + 500, .kind = VAL_TEXT, .vmax = 200};
	struct km_seg_writer *w = NULL;
	struct km_seg *s = NULL;
	struct rec_buf rb;
	struct km_rec del;
	char path[128];
	uint64_t size;
	uint32_t i;

	(void)state;
	rec_buf_init(&rb);
	new_path(path, sizeof(path));
	assert_int_equal(km_seg_writer_open(path, &meta_sample, 4095, &w), -EINVAL);
	assert_int_equal(
		km_seg_writer_open(path, &meta_sample, KM_SEG_BLOCK_SIZE_MAX + 1, &w), -EINVAL);
	assert_int_equal(km_seg_writer_open(path, NULL, 0, &w), -EINVAL);
	assert_int_equal(access(path, F_OK), -1);

	/* Only PUTs; a refused record leaves the writer usable. */
	assert_int_equal(km_seg_writer_open(path, &meta_sample, 4096, &w), 0);
	gen_rec(&g, 0, &rb);
	del = rb.r;
	del.type = KM_REC_DEL;
	del.vlen = 0;
	assert_int_equal(km_seg_writer_add(w, &del, NULL, NULL), -EINVAL);
	del.type = KM_REC_META;
	assert_int_equal(km_seg_writer_add(w, &del, NULL, NULL), -EINVAL);
	del = rb.r;
	del.klen = 0;
	assert_int_equal(km_seg_writer_add(w, &del, NULL, NULL), -EINVAL);
	for (i = 0; i < 10; i++) {
		gen_rec(&g, i, &rb);
		assert_int_equal(km_seg_writer_add(w, &rb.r, NULL, NULL), 0);
	}
	assert_int_equal(km_seg_writer_finish(w), 0);
	assert_int_equal(km_seg_open(path, &s), 0);
	assert_int_equal(km_seg_meta(s)->entries, 10);
	km_seg_close(s);

	/* O_EXCL: an existing file is neither opened nor touched. */
	size = file_size(path);
	assert_int_equal(km_seg_writer_open(path, &meta_sample, 0, &w), -EEXIST);
	assert_int_equal(file_size(path), size);
	assert_int_equal(km_seg_open(path, &s), 0);
	km_seg_close(s);
	assert_int_equal(unlink(path), 0);

	/* Abort removes the file, blocks written or not. */
	assert_int_equal(km_seg_writer_open(path, &meta_sample, 4096, &w), 0);
	km_seg_writer_abort(w);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(km_seg_writer_open(path, &meta_sample, 4096, &w), 0);
	for (i = 0; i < 200; i++) {
		gen_rec(&g, i, &rb);
		assert_int_equal(km_seg_writer_add(w, &rb.r, NULL, NULL), 0);
	}
	assert_true(file_size(path) > KM_SEG_HDR_LEN);
	km_seg_writer_abort(w);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(errno, ENOENT);
	km_seg_writer_abort(NULL);
	free(rb.val);
}

/*
 * Forged files: written here from the documented layout, blocks as deflate stored blocks
 * (BFINAL=1, BTYPE=00, LEN, NLEN, bytes), so the block contents can be anything.
 */
struct forge_block {
	const uint8_t *data;
	uint32_t len;       /* at most 65535: one stored block */
	uint32_t nrec;      /* what the table claims */
	int32_t ulen_delta; /* added to the table's ulen */
};

static void
forge(const char *path, const struct forge_block *blocks, uint32_t nb, uint64_t entries,
	uint32_t gap)
{
	uint8_t hdr[KM_SEG_HDR_LEN];
	uint8_t *table = calloc(nb + 1, ENT_LEN);
	uint64_t off = KM_SEG_HDR_LEN;
	uint32_t i;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);

	assert_true(fd >= 0);
	assert_non_null(table);
	for (i = 0; i < nb; i++) {
		uint32_t len = blocks[i].len;
		uint8_t *c = malloc(len + 5);
		uint8_t *e = table + (size_t)i * ENT_LEN;

		assert_non_null(c);
		c[0] = 0x01;
		c[1] = (uint8_t)len;
		c[2] = (uint8_t)(len >> 8);
		c[3] = (uint8_t)~len;
		c[4] = (uint8_t)(~len >> 8);
		memcpy(c + 5, blocks[i].data, len);
		assert_int_equal(pwrite(fd, c, len + 5, (off_t)off), (ssize_t)len + 5);
		put64(e, off);
		put32(e + 8, len + 5);
		put32(e + 12, (uint32_t)((int32_t)len + blocks[i].ulen_delta));
		put32(e + 16, km_crc32c(0, c, len + 5));
		put32(e + 20, blocks[i].nrec);
		off += len + 5;
		free(c);
	}
	/* Bytes no block covers, between the last block and the table. */
	off += gap;
	put32(table + (size_t)nb * ENT_LEN, km_crc32c(0, table, (size_t)nb * ENT_LEN));
	assert_int_equal(
		pwrite(fd, table, (size_t)nb * ENT_LEN + 4, (off_t)off), (ssize_t)nb * ENT_LEN + 4);

	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, "KMSEG001", 8);
	put64(hdr + 8, 5);
	put64(hdr + HDR_OFF_ENTRIES, entries);
	put32(hdr + HDR_OFF_BLOCK_SIZE, 4096);
	put32(hdr + HDR_OFF_NB_BLOCKS, nb);
	put64(hdr + HDR_OFF_TABLE, off);
	put32(hdr + HDR_OFF_HCRC, km_crc32c(0, hdr, HDR_OFF_HCRC));
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	assert_int_equal(close(fd), 0);
	free(table);
}

/* Open a forged file (asserting open's result) and scan it: the scan's result, records seen
 * in *count. */
static int
forge_scan(const struct forge_block *blocks, uint32_t nb, uint64_t entries, int open_ret,
	uint32_t *count)
{
	struct km_seg *s = NULL;
	char path[128];
	int ret;

	new_path(path, sizeof(path));
	forge(path, blocks, nb, entries, 0);
	ret = km_seg_open(path, &s);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(ret, open_ret);
	*count = 0;
	if (ret < 0)
		return ret;
	ret = km_seg_scan(s, scan_count, count);
	km_seg_close(s);
	return ret;
}

static size_t
put_rec(uint8_t *buf, uint8_t type, const char *key, uint32_t vlen)
{
	static const uint8_t val[256];
	struct km_rec r = {.type = type,
		.klen = (uint8_t)strlen(key),
		.vlen = vlen,
		.version = 9,
		.key = (const uint8_t *)key,
		.val = val};
	size_t n = km_rec_encode(buf, 4096, &r);

	assert_true(n > 0);
	return n;
}

static void
test_forged(void **state)
{
	uint8_t a[4096], b[4096], junk[64];
	size_t na, nb;
	uint32_t count = 0;
	uint64_t rng = SEED + 600;
	unsigned int i;

	(void)state;
	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)rnd_next(&rng);
	na = put_rec(a, KM_REC_PUT, "one", 10);
	na += put_rec(a + na, KM_REC_PUT, "two", 200);
	nb = put_rec(b, KM_REC_PUT, "three", 0);

	/* Well formed: two blocks, three records. */
	{
		struct forge_block fb[] = {{a, (uint32_t)na, 2, 0}, {b, (uint32_t)nb, 1, 0}};

		assert_int_equal(forge_scan(fb, 2, 3, 0, &count), 0);
		assert_int_equal(count, 3);
		/* The header's entry count must match the table's. */
		assert_int_equal(forge_scan(fb, 2, 4, -EBADMSG, &count), -EBADMSG);
		/* A block claiming more uncompressed bytes than the segment's block size. */
		fb[0].ulen_delta = 5000;
		assert_int_equal(forge_scan(fb, 2, 3, -EBADMSG, &count), -EBADMSG);
	}
	/* Blocks must lie back to back up to the table. */
	{
		struct forge_block fb[] = {{a, (uint32_t)na, 2, 0}};
		struct km_seg *s = NULL;
		char path[128];

		new_path(path, sizeof(path));
		forge(path, fb, 1, 2, 8);
		assert_int_equal(km_seg_open(path, &s), -EBADMSG);
		assert_int_equal(unlink(path), 0);
	}
	/* The table's ulen disagrees with the inflated length: refused by decode. */
	{
		struct forge_block fb[] = {{a, (uint32_t)na, 2, 8}};

		assert_int_equal(forge_scan(fb, 1, 2, 0, &count), -EBADMSG);
		assert_int_equal(count, 0);
		fb[0].ulen_delta = -8;
		assert_int_equal(forge_scan(fb, 1, 2, 0, &count), -EBADMSG);
		assert_int_equal(count, 0);
	}
	/* More records in the block than the table says. */
	{
		struct forge_block fb[] = {{a, (uint32_t)na, 1, 0}};

		assert_int_equal(forge_scan(fb, 1, 1, 0, &count), -EBADMSG);
		assert_int_equal(count, 2);
	}
	/* Junk after a valid record, inside a block whose CRC is right. */
	memcpy(b + nb, junk, sizeof(junk));
	{
		struct forge_block fb[] = {{b, (uint32_t)nb + 64, 2, 0}};

		assert_int_equal(forge_scan(fb, 1, 2, 0, &count), -EBADMSG);
		assert_int_equal(count, 1);
		/* A truncated record at the end of the block. */
		put_rec(b + nb, KM_REC_PUT, "four", 100);
		fb[0].len = (uint32_t)nb + KM_REC_HDR_LEN + 8;
		assert_int_equal(forge_scan(fb, 1, 2, 0, &count), -EBADMSG);
		assert_int_equal(count, 1);
	}
	/* Only PUTs belong in a segment. */
	nb = put_rec(b, KM_REC_PUT, "five", 1);
	nb += put_rec(b + nb, KM_REC_DEL, "six", 0);
	{
		struct forge_block fb[] = {{b, (uint32_t)nb, 2, 0}};

		assert_int_equal(forge_scan(fb, 1, 2, 0, &count), -EBADMSG);
		assert_int_equal(count, 1);
	}
}

/* Invalid deflate data under a valid CRC: a stored block whose NLEN is not ~LEN. */
static void
test_bad_deflate(void **state)
{
	uint8_t a[4096], blk[4096 + 5], tail[ENT_LEN + 4];
	struct forge_block fb[1];
	struct km_seg *s = NULL;
	char path[128];
	uint32_t clen, count = 0;
	uint64_t off;
	int fd;

	(void)state;
	fb[0] = (struct forge_block){a, (uint32_t)put_rec(a, KM_REC_PUT, "one", 10), 1, 0};
	new_path(path, sizeof(path));
	forge(path, fb, 1, 1, 0);
	assert_int_equal(km_seg_open(path, &s), 0);
	assert_int_equal(km_seg_block_extent(s, 0, &off, &clen), 0);
	assert_true(clen <= sizeof(blk));
	fd = km_seg_fd(s);
	read_all(fd, blk, clen, off);
	read_all(fd, tail, ENT_LEN, off + clen);
	km_seg_close(s);

	/* Damage NLEN, then re-seal the block CRC and the table CRC. */
	blk[3] ^= 1;
	put32(tail + 16, km_crc32c(0, blk, clen));
	put32(tail + ENT_LEN, km_crc32c(0, tail, ENT_LEN));
	write_at(path, blk, clen, off);
	write_at(path, tail, sizeof(tail), off + clen);

	assert_int_equal(km_seg_open(path, &s), 0);
	assert_int_equal(km_seg_scan(s, scan_count, &count), -EBADMSG);
	assert_int_equal(count, 0);
	km_seg_close(s);
	assert_int_equal(unlink(path), 0);
}

static int
rm_tree(void **state)
{
	(void)state;
	return km_util_rmtree(tmpdir) == 0 ? 0 : -1;
}

static int
mk_tree(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/km_test_seg.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_big_records),
		cmocka_unit_test(test_meta),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_block_damage),
		cmocka_unit_test(test_header_table_damage),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_not_a_segment),
		cmocka_unit_test(test_writer_errors),
		cmocka_unit_test(test_forged),
		cmocka_unit_test(test_bad_deflate),
	};

	return cmocka_run_group_tests(tests, mk_tree, rm_tree);
}
