/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Replay-CSV tests: every accepted line form, every rejected one with its exact message,
 * the loader's line numbers, key interning, and a large generated file.
 * Files are written under a mkdtemp() directory that the group teardown removes.
 */

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <km_trace.h>
#include <km_workload.h>

#define VALUE_MAX 1431
#define ERR_LEN   512

#define LARGE_LINES 200000
#define LARGE_KEYS  50000
#define LARGE_SEED  0x74726163652d31ULL

static char tmpdir[64];

/* xorshift64*: deterministic, seedable. */
static uint64_t
rnd_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static int
group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/km_test_trace.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	return rmdir(tmpdir);
}

static void
tmp_path(char *path, size_t len, const char *name)
{
	snprintf(path, len, "%s/%s", tmpdir, name);
}

static void
write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Write data to a file, load it, remove the file. */
static int
load_str(const char *data, size_t len, uint32_t value_max, struct km_trace **t, char *path,
	size_t path_len, char *err)
{
	int rc;

	tmp_path(path, path_len, "t.csv");
	write_file(path, data, len);
	rc = km_trace_load(path, value_max, t, err, ERR_LEN);
	assert_int_equal(unlink(path), 0);
	return rc;
}

static void
assert_key(const struct km_trace *t, uint32_t id, const char *key, uint32_t first_value_size)
{
	assert_true(id < t->nb_keys);
	assert_int_equal(t->keys[id].len, strlen(key));
	assert_memory_equal(t->keys[id].key, key, strlen(key));
	assert_int_equal(t->keys[id].first_value_size, first_value_size);
}

static void
assert_rec(const struct km_trace_rec *r, uint64_t ts, uint8_t op, uint32_t key_id,
	uint32_t value_size, uint32_t session)
{
	assert_true(r->ts_us == ts);
	assert_int_equal(r->op, op);
	assert_int_equal(r->key_id, key_id);
	assert_int_equal(r->value_size, value_size);
	assert_int_equal(r->session, session);
}

/* --- km_trace_parse_line --- */

struct good_line {
	const char *line;
	size_t len; /* 0: strlen(line) */
	uint64_t ts;
	uint8_t op;
	const char *key;
	size_t klen;
	uint32_t value_size;
	uint32_t session;
};

static void
test_parse_good(void **state)
{
	static char key250[251];
	char line250[300];
	const struct good_line cases[] = {
		{"0,GET,k,0", 0, 0, KM_WL_GET, "k", 1, 0, 0},
		{"10,PUT,user/42,1431,7", 0, 10, KM_WL_PUT, "user/42", 7, VALUE_MAX, 7},
		{"18446744073709551615,DEL,k,0,4294967295", 0, UINT64_MAX, KM_WL_DEL, "k", 1, 0,
			UINT32_MAX},
		{"007,GET,k,0064,00", 0, 7, KM_WL_GET, "k", 1, 64, 0},
		/* Blanks, quotes, '#' inside and bytes >= 0x80 are ordinary key bytes. */
		{"5,GET, a \"b\"#\xc3\xa9 ,3,0", 0, 5, KM_WL_GET, " a \"b\"#\xc3\xa9 ", 10, 3, 0},
		{line250, 0, 1, KM_WL_PUT, key250, 250, 2, 0},
	};
	size_t i;

	(void)state;
	memset(key250, 'x', 250);
	snprintf(line250, sizeof(line250), "1,PUT,%s,2", key250);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct good_line *c = &cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->line);
		struct km_trace_line l;
		char err[ERR_LEN] = "";

		assert_int_equal(
			km_trace_parse_line(c->line, len, VALUE_MAX, &l, err, sizeof(err)), 1);
		assert_string_equal(err, "");
		assert_true(l.ts_us == c->ts);
		assert_int_equal(l.op, c->op);
		assert_int_equal(l.klen, c->klen);
		assert_memory_equal(l.key, c->key, c->klen);
		/* The key is not copied: it points into the line. */
		assert_true(l.key > c->line && l.key < c->line + len);
		assert_int_equal(l.value_size, c->value_size);
		assert_int_equal(l.session, c->session);
	}
}

static void
test_parse_value_max(void **state)
{
	struct km_trace_line l;
	char err[ERR_LEN];

	(void)state;
	assert_int_equal(km_trace_parse_line("1,PUT,k,0", 9, 0, &l, err, sizeof(err)), 1);
	assert_int_equal(
		km_trace_parse_line("1,PUT,k,4294967295", 18, UINT32_MAX, &l, err, sizeof(err)), 1);
	assert_int_equal(l.value_size, UINT32_MAX);
	assert_int_equal(km_trace_parse_line("1,PUT,k,1", 9, 0, &l, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "value_size 1 exceeds 0");
	assert_int_equal(km_trace_parse_line("1,PUT,k,10", 10, 10, &l, err, sizeof(err)), 1);
	assert_int_equal(l.value_size, 10);
	assert_int_equal(km_trace_parse_line("1,PUT,k,10", 10, 9, &l, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "value_size 10 exceeds 9");
}

static void
test_parse_skip(void **state)
{
	const char *skip[] = {"", "#", "# a comment, with, commas", "#1,GET,k,1"};
	struct km_trace_line l;
	char err[ERR_LEN] = "";
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
		assert_int_equal(km_trace_parse_line(
					 skip[i], strlen(skip[i]), VALUE_MAX, &l, err, sizeof(err)),
			0);
	assert_int_equal(km_trace_parse_line(NULL, 0, VALUE_MAX, &l, err, sizeof(err)), 0);
	/* Only the length counts: the bytes after it are not part of the line. */
	assert_int_equal(km_trace_parse_line("0,GET,k,1", 0, VALUE_MAX, &l, err, sizeof(err)), 0);
	assert_string_equal(err, "");
}

struct bad_line {
	const char *line;
	size_t len; /* 0: strlen(line) */
	const char *err;
};

static void
test_parse_bad(void **state)
{
	static char key251[252];
	char line251[300];
	const struct bad_line cases[] = {
		{"1", 0, "expected 4 or 5 comma-separated fields, found 1"},
		{"1,GET,k", 0, "expected 4 or 5 comma-separated fields, found 3"},
		{"1,GET,k,1,2,3", 0, "expected 4 or 5 comma-separated fields, found 6"},
		{",,,,,,,,,", 0, "expected 4 or 5 comma-separated fields, found 10"},
		{"   ", 0, "expected 4 or 5 comma-separated fields, found 1"},
		{"x,GET,k,1", 0, "timestamp_us 'x' is not a decimal number"},
		{",GET,k,1", 0, "timestamp_us '' is not a decimal number"},
		{"-1,GET,k,1", 0, "timestamp_us '-1' is not a decimal number"},
		{"+1,GET,k,1", 0, "timestamp_us '+1' is not a decimal number"},
		{" 1,GET,k,1", 0, "timestamp_us ' 1' is not a decimal number"},
		{"1e3,GET,k,1", 0, "timestamp_us '1e3' is not a decimal number"},
		{"0x10,GET,k,1", 0, "timestamp_us '0x10' is not a decimal number"},
		{"18446744073709551616,GET,k,1", 0,
			"timestamp_us 18446744073709551616 exceeds 18446744073709551615"},
		/* A non-digit after the overflow is the more useful complaint. */
		{"99999999999999999999x,GET,k,1", 0,
			"timestamp_us '99999999999999999999x' is not a decimal number"},
		{"1,GETX,k,1", 0, "op 'GETX' is not GET, PUT or DEL"},
		{"1,get,k,1", 0, "op 'get' is not GET, PUT or DEL"},
		{"1,GE,k,1", 0, "op 'GE' is not GET, PUT or DEL"},
		{"1,,k,1", 0, "op '' is not GET, PUT or DEL"},
		{"1, GET,k,1", 0, "op ' GET' is not GET, PUT or DEL"},
		{"1,GETAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,k,1", 0,
			"op 'GETAAAAAAAAAAAAAAAAAAAAAAAAAAAAA...' is not GET, PUT or DEL"},
		{"1,GET,,1", 0, "key is empty"},
		{line251, 0, "key is 251 bytes, longer than 250"},
		{"1,GET,a\tb,1", 0, "key has control character 0x09 at offset 1"},
		{"1,GET,k\r,1", 0, "key has control character 0x0d at offset 1"},
		{"1,GET,\x7fk,1", 0, "key has control character 0x7f at offset 0"},
		{"1,GET,ab\0c,1", 12, "key has control character 0x00 at offset 2"},
		{"1,GET,k,", 0, "value_size '' is not a decimal number"},
		{"1,GET,k,abc", 0, "value_size 'abc' is not a decimal number"},
		{"1,GET,k,-1", 0, "value_size '-1' is not a decimal number"},
		{"1,GET,k,1432", 0, "value_size 1432 exceeds 1431"},
		{"1,PUT,k,2000,3", 0, "value_size 2000 exceeds 1431"},
		{"1,GET,k,99999999999999999999999", 0,
			"value_size 99999999999999999999999 exceeds 1431"},
		{"1,GET,k,1,", 0, "session '' is not a decimal number"},
		{"1,GET,k,1,x", 0, "session 'x' is not a decimal number"},
		{"1,GET,k,1,4294967296", 0, "session 4294967296 exceeds 4294967295"},
		{"1,GET,k,1,1\r", 0, "session '1\\x0d' is not a decimal number"},
	};
	size_t i;

	(void)state;
	memset(key251, 'y', 251);
	snprintf(line251, sizeof(line251), "1,GET,%s,1", key251);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bad_line *c = &cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->line);
		struct km_trace_line l;
		char err[ERR_LEN] = "";

		assert_int_equal(km_trace_parse_line(c->line, len, VALUE_MAX, &l, err, sizeof(err)),
			-EINVAL);
		assert_string_equal(err, c->err);
	}
}

static void
test_parse_err_buffer(void **state)
{
	struct km_trace_line l;
	char err[8];

	(void)state;
	/* A short buffer is truncated and terminated; no buffer at all is allowed. */
	memset(err, 'z', sizeof(err));
	assert_int_equal(
		km_trace_parse_line("1,GETX,k,1", 10, VALUE_MAX, &l, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "op 'GET");
	assert_int_equal(km_trace_parse_line("1,GETX,k,1", 10, VALUE_MAX, &l, NULL, 0), -EINVAL);
	assert_int_equal(km_trace_parse_line("1,GET,k,1", 9, VALUE_MAX, NULL, NULL, 0), -EINVAL);
}

/* --- km_trace_load --- */

static void
test_load_forms(void **state)
{
	static const char data[] = "timestamp_us,op,key,value_size,session\r\n"
				   "# comment\n"
				   "\n"
				   "0,PUT,alpha,100,1\r\n"
				   "\r\n"
				   "0,GET,beta,20\n"
				   "#0,GET,gamma,1\n"
				   "5,GET,alpha,7,2\n"
				   "9,DEL,beta,0";
	char path[128], err[ERR_LEN] = "";
	struct km_trace *t = NULL;

	(void)state;
	assert_int_equal(
		load_str(data, sizeof(data) - 1, VALUE_MAX, &t, path, sizeof(path), err), 0);
	assert_non_null(t);
	assert_int_equal(t->nb_recs, 4);
	assert_int_equal(t->nb_keys, 2);
	/* Equal timestamps are fine: only going backwards is an error. */
	assert_rec(&t->recs[0], 0, KM_WL_PUT, 0, 100, 1);
	assert_rec(&t->recs[1], 0, KM_WL_GET, 1, 20, 0);
	assert_rec(&t->recs[2], 5, KM_WL_GET, 0, 7, 2);
	assert_rec(&t->recs[3], 9, KM_WL_DEL, 1, 0, 0);
	assert_key(t, 0, "alpha", 100);
	assert_key(t, 1, "beta", 20);
	km_trace_free(t);
}

static void
test_load_empty(void **state)
{
	const char *files[] = {"", "\n", "timestamp_us,op,key,value_size\n",
		"timestamp_us\r\n# nothing yet\n\n", "# only a comment"};
	char path[128], err[ERR_LEN];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		struct km_trace *t = NULL;

		assert_int_equal(load_str(files[i], strlen(files[i]), VALUE_MAX, &t, path,
					 sizeof(path), err),
			0);
		assert_non_null(t);
		assert_int_equal(t->nb_recs, 0);
		assert_int_equal(t->nb_keys, 0);
		km_trace_free(t);
	}
	km_trace_free(NULL);
}

static void
test_load_no_final_newline(void **state)
{
	static const char data[] = "1,GET,a,1\r\n2,PUT,b,2,3";
	char path[128], err[ERR_LEN];
	struct km_trace *t = NULL;

	(void)state;
	assert_int_equal(
		load_str(data, sizeof(data) - 1, VALUE_MAX, &t, path, sizeof(path), err), 0);
	assert_int_equal(t->nb_recs, 2);
	assert_rec(&t->recs[1], 2, KM_WL_PUT, 1, 2, 3);
	assert_key(t, 1, "b", 2);
	km_trace_free(t);
}

struct bad_file {
	const char *data;
	const char *err; /* after "<path>:" */
};

static void
test_load_bad(void **state)
{
	static char long_key_file[400];
	const struct bad_file cases[] = {
		{"0,GET,a,1\n1,GET,b\n", "2: expected 4 or 5 comma-separated fields, found 3"},
		{"0,GET,a,1\n1,GET,b,1,2,3\n",
			"2: expected 4 or 5 comma-separated fields, found 6"},
		{"timestamp_us,op,key,value_size\n# c\nnow,GET,a,1\n",
			"3: timestamp_us 'now' is not a decimal number"},
		{"0,GET,a,1\n18446744073709551616,GET,a,1\n",
			"2: timestamp_us 18446744073709551616 exceeds 18446744073709551615"},
		{"0,GET,a,1\r\n\r\n1,GET,a,1\r\n2,GETX,a,1\r\n",
			"4: op 'GETX' is not GET, PUT or DEL"},
		{"0,GET,,1\n", "1: key is empty"},
		{long_key_file, "3: key is 251 bytes, longer than 250"},
		{"0,GET,a\rb,1\n", "1: key has control character 0x0d at offset 1"},
		{"0,GET,a,x\n", "1: value_size 'x' is not a decimal number"},
		{"0,GET,a,1\n0,PUT,a,2000\n", "2: value_size 2000 exceeds 1431"},
		{"0,GET,a,1,s1\n", "1: session 's1' is not a decimal number"},
		{"0,GET,a,1,4294967296\n", "1: session 4294967296 exceeds 4294967295"},
		{"10,GET,a,1\n9,GET,a,1",
			"2: timestamp_us 9 is less than the previous record's 10"},
		{"5,GET,a,1\n# c\n4,GET,a,1\n",
			"3: timestamp_us 4 is less than the previous record's 5"},
		{"0,GET,a,1\ntimestamp_us,op,key,value_size\n",
			"2: header line is only allowed as line 1"},
		{"# c\ntimestamp_us,op,key,value_size\n0,GET,a,1\n",
			"2: header line is only allowed as line 1"},
		{"\ntimestamp_us\n", "2: header line is only allowed as line 1"},
		/* The last line, without its newline, still has a number. */
		{"0,GET,a,1\n1,GET,a,x", "2: value_size 'x' is not a decimal number"},
		/* A lone '\r' is no line ending, and only one is stripped before "\n". */
		{"0,GET,a,1\r2\n", "1: value_size '1\\x0d2' is not a decimal number"},
		{"0,GET,a,1\r\r\n", "1: value_size '1\\x0d' is not a decimal number"},
	};
	char key251[252];
	size_t i;

	(void)state;
	memset(key251, 'y', 251);
	key251[251] = '\0';
	snprintf(
		long_key_file, sizeof(long_key_file), "0,GET,a,1\n1,GET,b,1\n2,GET,%s,1\n", key251);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bad_file *c = &cases[i];
		char path[128], err[ERR_LEN] = "", want[ERR_LEN];
		struct km_trace *t = NULL;

		assert_int_equal(
			load_str(c->data, strlen(c->data), VALUE_MAX, &t, path, sizeof(path), err),
			-EINVAL);
		snprintf(want, sizeof(want), "%s:%s", path, c->err);
		assert_string_equal(err, want);
		assert_null(t);
	}
}

/* docs/trace-format.md, section 2: keep the two identical. */
static void
test_doc_example(void **state)
{
	static const char data[] = "timestamp_us,op,key,value_size,session\n"
				   "# warm-up\n"
				   "0,PUT,user:42/profile,512,7\n"
				   "150,GET,user:42/profile,0,7\n"
				   "150,GET,user:43/profile,128\n"
				   "\n"
				   "2000,DEL,user:42/profile,0,7\n";
	char path[128], err[ERR_LEN];
	struct km_trace *t = NULL;

	(void)state;
	assert_int_equal(
		load_str(data, sizeof(data) - 1, VALUE_MAX, &t, path, sizeof(path), err), 0);
	assert_int_equal(t->nb_recs, 4);
	assert_int_equal(t->nb_keys, 2);
	assert_rec(&t->recs[0], 0, KM_WL_PUT, 0, 512, 7);
	assert_rec(&t->recs[1], 150, KM_WL_GET, 0, 0, 7);
	assert_rec(&t->recs[2], 150, KM_WL_GET, 1, 128, 0);
	assert_rec(&t->recs[3], 2000, KM_WL_DEL, 0, 0, 7);
	assert_key(t, 0, "user:42/profile", 512);
	assert_key(t, 1, "user:43/profile", 128);
	km_trace_free(t);
}

/* docs/trace-format.md, section 3: every line of the error table, as line 2 of a file. */
static void
test_doc_errors(void **state)
{
	static char long_key_line[300];
	const struct bad_line cases[] = {
		{"1,GET,user:1", 0, "expected 4 or 5 comma-separated fields, found 3"},
		{"1,GET,user:1,64,3,9", 0, "expected 4 or 5 comma-separated fields, found 6"},
		{"1.5,GET,user:1,64", 0, "timestamp_us '1.5' is not a decimal number"},
		{"-1,GET,user:1,64", 0, "timestamp_us '-1' is not a decimal number"},
		{"18446744073709551616,GET,user:1,64", 0,
			"timestamp_us 18446744073709551616 exceeds 18446744073709551615"},
		{"1,get,user:1,64", 0, "op 'get' is not GET, PUT or DEL"},
		{"1,SET,user:1,64", 0, "op 'SET' is not GET, PUT or DEL"},
		{"1, GET,user:1,64", 0, "op ' GET' is not GET, PUT or DEL"},
		{"1,GET,,64", 0, "key is empty"},
		{long_key_line, 0, "key is 251 bytes, longer than 250"},
		{"1,GET,user 1\t,64", 0, "key has control character 0x09 at offset 6"},
		{"1,PUT,user:1,2000", 0, "value_size 2000 exceeds 1431"},
		{"1,PUT,user:1,64KB", 0, "value_size '64KB' is not a decimal number"},
		{"1,GET,user:1,64,-3", 0, "session '-3' is not a decimal number"},
		{"1,GET,user:1,64,4294967296", 0, "session 4294967296 exceeds 4294967295"},
		{"timestamp_us,op,key,value_size,session", 0,
			"header line is only allowed as line 1"},
		{"0,GET,a,1", 0, "timestamp_us 0 is less than the previous record's 1"},
	};
	char key251[252];
	size_t i;

	(void)state;
	memset(key251, 'k', 251);
	key251[251] = '\0';
	snprintf(long_key_line, sizeof(long_key_line), "1,GET,%s,64", key251);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char data[400], path[128], err[ERR_LEN] = "", want[ERR_LEN];
		struct km_trace *t = NULL;
		int n;

		n = snprintf(data, sizeof(data), "1,GET,a,1\n%s\n", cases[i].line);
		assert_true(n > 0 && (size_t)n < sizeof(data));
		assert_int_equal(
			load_str(data, (size_t)n, VALUE_MAX, &t, path, sizeof(path), err), -EINVAL);
		snprintf(want, sizeof(want), "%s:2: %s", path, cases[i].err);
		assert_string_equal(err, want);
	}
}

static void
test_load_missing(void **state)
{
	char path[128], err[ERR_LEN] = "", want[ERR_LEN];
	struct km_trace *t = NULL;

	(void)state;
	tmp_path(path, sizeof(path), "does-not-exist.csv");
	assert_int_equal(km_trace_load(path, VALUE_MAX, &t, err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "%s: %s", path, strerror(ENOENT));
	assert_string_equal(err, want);
	assert_null(t);
	assert_int_equal(km_trace_load(NULL, VALUE_MAX, &t, err, sizeof(err)), -EINVAL);
	assert_int_equal(km_trace_load(path, VALUE_MAX, NULL, err, sizeof(err)), -EINVAL);
}

static void
test_load_directory(void **state)
{
	char err[ERR_LEN] = "", want[ERR_LEN];
	struct km_trace *t = NULL;

	(void)state;
	/* fopen() accepts a directory; the failure comes from the first read. */
	assert_int_equal(km_trace_load(tmpdir, VALUE_MAX, &t, err, sizeof(err)), -EISDIR);
	snprintf(want, sizeof(want), "%s: %s", tmpdir, strerror(EISDIR));
	assert_string_equal(err, want);
	assert_null(t);
}

static void
test_load_intern(void **state)
{
	/* Prefixes of each other, same length, differing in the last byte. */
	static const char data[] = "0,GET,c,30\n"
				   "1,PUT,a,10\n"
				   "2,GET,ab,20\n"
				   "3,DEL,a,11\n"
				   "4,GET,c,31\n"
				   "5,PUT,ac,40\n"
				   "6,GET,ab,21\n"
				   "7,GET,a b,50\n"
				   "8,PUT,a,12\n";
	static const uint32_t ids[] = {0, 1, 2, 1, 0, 3, 2, 4, 1};
	char path[128], err[ERR_LEN];
	struct km_trace *t = NULL;
	size_t i;

	(void)state;
	assert_int_equal(
		load_str(data, sizeof(data) - 1, VALUE_MAX, &t, path, sizeof(path), err), 0);
	assert_int_equal(t->nb_recs, 9);
	assert_int_equal(t->nb_keys, 5);
	for (i = 0; i < t->nb_recs; i++)
		assert_int_equal(t->recs[i].key_id, ids[i]);
	assert_key(t, 0, "c", 30);
	assert_key(t, 1, "a", 10);
	assert_key(t, 2, "ab", 20);
	assert_key(t, 3, "ac", 40);
	assert_key(t, 4, "a b", 50);
	km_trace_free(t);
}

/* Key of number n: short for most, 200 bytes for every 7th, to grow the arena unevenly. */
static int
large_key(uint64_t n, char *buf, size_t len)
{
	if (n % 7 == 0)
		return snprintf(buf, len, "%0200" PRIu64, n);
	return snprintf(buf, len, "key/%" PRIu64, n);
}

static void
test_load_large(void **state)
{
	uint32_t *id_of = malloc(LARGE_KEYS * sizeof(*id_of));
	uint32_t *first_vs = malloc(LARGE_KEYS * sizeof(*first_vs));
	uint64_t *key_of_rec = malloc(LARGE_LINES * sizeof(*key_of_rec));
	uint32_t *vs_of_rec = malloc(LARGE_LINES * sizeof(*vs_of_rec));
	char path[128], err[ERR_LEN], key[256];
	uint64_t s = LARGE_SEED, ts = 0;
	uint32_t nb_keys = 0;
	struct km_trace *t = NULL;
	FILE *f;
	size_t i;

	(void)state;
	assert_non_null(id_of);
	assert_non_null(first_vs);
	assert_non_null(key_of_rec);
	assert_non_null(vs_of_rec);
	for (i = 0; i < LARGE_KEYS; i++)
		id_of[i] = UINT32_MAX;

	tmp_path(path, sizeof(path), "large.csv");
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "timestamp_us,op,key,value_size,session\n");
	for (i = 0; i < LARGE_LINES; i++) {
		uint64_t n = rnd_next(&s) % LARGE_KEYS;
		uint32_t vs = (uint32_t)(rnd_next(&s) % (VALUE_MAX + 1));
		static const char *ops[] = {"GET", "PUT", "DEL"};

		ts += rnd_next(&s) % 3;
		large_key(n, key, sizeof(key));
		fprintf(f, "%" PRIu64 ",%s,%s,%" PRIu32 ",%" PRIu64 "\n", ts, ops[i % 3], key, vs,
			(uint64_t)(i % 5));
		if (id_of[n] == UINT32_MAX) {
			id_of[n] = nb_keys++;
			first_vs[n] = vs;
		}
		key_of_rec[i] = n;
		vs_of_rec[i] = vs;
	}
	assert_int_equal(fclose(f), 0);

	assert_int_equal(km_trace_load(path, VALUE_MAX, &t, err, sizeof(err)), 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(t->nb_recs, LARGE_LINES);
	assert_int_equal(t->nb_keys, nb_keys);
	for (i = 0; i < LARGE_LINES; i++) {
		const struct km_trace_rec *r = &t->recs[i];

		assert_int_equal(r->key_id, id_of[key_of_rec[i]]);
		assert_int_equal(r->value_size, vs_of_rec[i]);
		assert_int_equal(r->op, i % 3);
		assert_int_equal(r->session, i % 5);
		if (i > 0)
			assert_true(r->ts_us >= t->recs[i - 1].ts_us);
	}
	for (i = 0; i < LARGE_KEYS; i++) {
		if (id_of[i] == UINT32_MAX)
			continue;
		large_key(i, key, sizeof(key));
		assert_key(t, id_of[i], key, first_vs[i]);
	}
	km_trace_free(t);
	free(id_of);
	free(first_vs);
	free(key_of_rec);
	free(vs_of_rec);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_value_max),
		cmocka_unit_test(test_parse_skip),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_err_buffer),
		cmocka_unit_test(test_load_forms),
		cmocka_unit_test(test_load_empty),
		cmocka_unit_test(test_load_no_final_newline),
		cmocka_unit_test(test_load_bad),
		cmocka_unit_test(test_doc_example),
		cmocka_unit_test(test_doc_errors),
		cmocka_unit_test(test_load_missing),
		cmocka_unit_test(test_load_directory),
		cmocka_unit_test(test_load_intern),
		cmocka_unit_test(test_load_large),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
