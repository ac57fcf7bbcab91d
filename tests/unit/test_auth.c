/* SPDX-License-Identifier: BSD-3-Clause */
/* Client keys (lib/auth) and request trailers (lib/proto: km_req_seal, km_mac_check). */

#include <errno.h>
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

#include <km_auth.h>

static const uint8_t K1[KM_MAC_KEY_LEN] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static int
write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		return -1;
	fputs(text, f);
	fclose(f);
	return chmod(path, mode);
}

static void
test_parse_line(void **state)
{
	struct km_auth_key k;
	char err[256];

	(void)state;
	assert_int_equal(km_auth_parse_line("  # only a comment\n", &k, err, sizeof(err)), 1);
	assert_int_equal(km_auth_parse_line("\n", &k, err, sizeof(err)), 1);
	assert_int_equal(km_auth_parse_line("7 000102030405060708090a0b0c0d0e0F rw # c\n", &k, err,
				 sizeof(err)),
		0);
	assert_int_equal(k.id, 7);
	assert_memory_equal(k.secret, K1, sizeof(K1));
	assert_int_equal(k.write, 1);
	assert_int_equal(k.nb_prefix, 0);
	assert_int_equal(km_auth_parse_line("8 000102030405060708090a0b0c0d0e0f ro a/ b\n", &k, err,
				 sizeof(err)),
		0);
	assert_int_equal(k.write, 0);
	assert_int_equal(k.nb_prefix, 2);
	assert_string_equal(k.prefix[1], "b");
	assert_true(km_auth_allows(&k, KM_OP_GET, (const uint8_t *)"a/x", 3));
	assert_true(km_auth_allows(&k, KM_OP_GET, (const uint8_t *)"bcd", 3));
	assert_false(km_auth_allows(&k, KM_OP_GET, (const uint8_t *)"a", 1)); /* shorter */
	assert_false(km_auth_allows(&k, KM_OP_GET, (const uint8_t *)"c/x", 3));
	assert_false(km_auth_allows(&k, KM_OP_PUT, (const uint8_t *)"a/x", 3));
	assert_false(km_auth_allows(&k, KM_OP_DEL, (const uint8_t *)"a/x", 3));
	assert_true(km_auth_allows(&k, KM_OP_MAP, NULL, 0));
	free(k.prefix[0]);
	free(k.prefix[1]);
	/* A '#' inside a word is part of the prefix; at a word's start, a comment. */
	assert_int_equal(km_auth_parse_line("8 000102030405060708090a0b0c0d0e0f ro a#b/ #c/ d\n",
				 &k, err, sizeof(err)),
		0);
	assert_int_equal(k.nb_prefix, 1);
	assert_string_equal(k.prefix[0], "a#b/");
	assert_false(km_auth_allows(&k, KM_OP_GET, (const uint8_t *)"a/x", 3));
	free(k.prefix[0]);
	assert_int_equal(km_auth_parse_line(
				 "#8 000102030405060708090a0b0c0d0e0f ro\n", &k, err, sizeof(err)),
		1);

	/* Each bad field is named. */
	assert_int_equal(
		km_auth_parse_line("0 000102030405060708090a0b0c0d0e0f rw", &k, err, sizeof(err)),
		-EINVAL);
	assert_non_null(strstr(err, "key id"));
	assert_int_equal(km_auth_parse_line("4294967296 000102030405060708090a0b0c0d0e0f rw", &k,
				 err, sizeof(err)),
		-EINVAL);
	assert_int_equal(
		km_auth_parse_line("1 000102030405060708090a0b0c0d0e rw", &k, err, sizeof(err)),
		-EINVAL);
	assert_non_null(strstr(err, "32 hex"));
	assert_int_equal(
		km_auth_parse_line("1 000102030405060708090a0b0c0d0e0g rw", &k, err, sizeof(err)),
		-EINVAL);
	assert_int_equal(
		km_auth_parse_line("1 000102030405060708090a0b0c0d0e0f wr", &k, err, sizeof(err)),
		-EINVAL);
	assert_non_null(strstr(err, "ro or rw"));
	assert_int_equal(
		km_auth_parse_line("1 000102030405060708090a0b0c0d0e0f", &k, err, sizeof(err)),
		-EINVAL);
	assert_int_equal(km_auth_parse_line("1 000102030405060708090a0b0c0d0e0f ro a b c d e f g "
					    "h i j k l m n o p q",
				 &k, err, sizeof(err)),
		-EINVAL);
	assert_non_null(strstr(err, "prefixes"));
}

static void
test_load_rotate_save(void **state)
{
	char dir[] = "/tmp/km_auth_XXXXXX", path[64], err[256];
	struct km_auth *a, *b, *c;
	struct km_auth_key k = {.id = 5, .write = 1};

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/keys", dir);
	assert_int_equal(write_file(path,
				 "# keys\n9 000102030405060708090a0b0c0d0e0f ro p/\n"
				 "2 ffffffffffffffffffffffffffffffff rw\n",
				 0600),
		0);
	assert_int_equal(km_auth_load(path, &a, err, sizeof(err)), 0);
	assert_int_equal(a->nb, 2);
	assert_int_equal(a->keys[0].id, 2); /* sorted */
	assert_non_null(km_auth_find(a, 9));
	assert_null(km_auth_find(a, 3));
	assert_null(km_auth_find(NULL, 3));

	/* Rotation: add, remove, copy; the original stays as it was. */
	memcpy(k.secret, K1, sizeof(K1));
	assert_int_equal(km_auth_with(a, &k, 0, &b), 0);
	assert_int_equal(b->nb, 3);
	assert_int_equal(b->keys[1].id, 5);
	assert_int_equal(km_auth_with(b, &k, 0, &c), -EEXIST);
	assert_int_equal(km_auth_with(b, NULL, 4, &c), -ENOENT);
	assert_int_equal(km_auth_with(b, NULL, 9, &c), 0);
	assert_int_equal(c->nb, 2);
	assert_null(km_auth_find(c, 9));
	assert_int_equal(a->nb, 2);

	/* Saved and loaded again: the same keys, mode 0600 whatever was there: a stale
	 * temporary file readable by others, or a symbolic link where it goes, is not used. */
	{
		char tmp[80], victim[80];
		struct stat st;

		snprintf(tmp, sizeof(tmp), "%s.tmp", path);
		snprintf(victim, sizeof(victim), "%s/victim", dir);
		assert_int_equal(write_file(tmp, "stale\n", 0644), 0);
		assert_int_equal(km_auth_save(c, path, err, sizeof(err)), 0);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
		assert_int_equal(write_file(victim, "keep\n", 0644), 0);
		assert_int_equal(symlink(victim, tmp), 0);
		assert_int_equal(km_auth_save(c, path, err, sizeof(err)), 0);
		assert_int_equal(lstat(path, &st), 0);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(st.st_mode & 0777, 0600);
		assert_int_equal(stat(victim, &st), 0);
		assert_int_equal(st.st_size, 5); /* untouched */
		unlink(victim);
		/* An unwritable place: the error names the temporary file. */
		assert_int_equal(mkdir(tmp, 0700), 0);
		assert_true(km_auth_save(c, path, err, sizeof(err)) < 0);
		assert_non_null(strstr(err, ".tmp"));
		rmdir(tmp);
	}
	km_auth_free(b);
	assert_int_equal(km_auth_load(path, &b, err, sizeof(err)), 0);
	assert_int_equal(b->nb, 2);
	assert_memory_equal(km_auth_find(b, 5)->secret, K1, sizeof(K1));
	assert_int_equal(km_auth_find(b, 2)->write, 1);
	km_auth_free(a);
	km_auth_free(b);
	km_auth_free(c);

	/* Refused: readable by others, a bad line (file:line), a duplicate id, no file. */
	assert_int_equal(write_file(path, "1 000102030405060708090a0b0c0d0e0f rw\n", 0644), 0);
	assert_int_equal(km_auth_load(path, &a, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "chmod 600"));
	assert_int_equal(write_file(path, "\n1 000102030405060708090a0b0c0d0e0f rx\n", 0600), 0);
	assert_int_equal(km_auth_load(path, &a, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "keys:2:"));
	assert_int_equal(write_file(path,
				 "1 000102030405060708090a0b0c0d0e0f rw\n"
				 "1 000102030405060708090a0b0c0d0e0f ro\n",
				 0600),
		0);
	assert_int_equal(km_auth_load(path, &a, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "twice"));
	unlink(path);
	assert_int_equal(km_auth_load(path, &a, err, sizeof(err)), -ENOENT);
	rmdir(dir);
}

static size_t
build_get(uint8_t *buf, const char *key)
{
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = KM_OP_GET,
		.key_len = (uint16_t)strlen(key),
		.req_id = 0x10,
	};

	return km_msg_build(buf, KM_DGRAM_MAX, &h, key, NULL);
}

static void
test_seal(void **state)
{
	uint8_t buf[KM_DGRAM_MAX], mac[KM_MAC_LEN];
	struct km_msg m;
	size_t len = build_get(buf, "k1"), n;
	uint8_t other[KM_MAC_KEY_LEN] = {1};

	(void)state;
	/* Cookie and MAC: flags set, trailers after the key, MAC over all before it. */
	n = km_req_seal(buf, len, sizeof(buf), 1, 0x0102030405060708ULL, 42, K1);
	assert_int_equal(n, len + KM_COOKIE_LEN + KM_AUTH_LEN);
	assert_int_equal(km_req_parse(buf, n, 100, &m), KM_ST_OK);
	assert_int_equal(m.hdr.flags, KM_F_COOKIE | KM_F_AUTH);
	assert_int_equal(m.cookie, 0x0102030405060708ULL);
	assert_int_equal(m.key_id, 42);
	assert_ptr_equal(m.mac, buf + n - KM_MAC_LEN);
	km_mac(K1, buf, n - KM_MAC_LEN, mac);
	assert_memory_equal(mac, m.mac, KM_MAC_LEN);
	assert_true(km_mac_check(K1, buf, &m));
	assert_false(km_mac_check(other, buf, &m));
	buf[KM_HDR_LEN] ^= 1; /* a changed key byte */
	assert_false(km_mac_check(K1, buf, &m));
	buf[KM_HDR_LEN] ^= 1;
	buf[n - 1] ^= 1; /* a changed MAC byte */
	assert_false(km_mac_check(K1, buf, &m));

	/* Sealed again without a cookie: the flag goes. */
	n = km_req_seal(buf, len, sizeof(buf), 0, 0, 42, K1);
	assert_int_equal(n, len + KM_AUTH_LEN);
	assert_int_equal(km_req_parse(buf, n, 100, &m), KM_ST_OK);
	assert_int_equal(m.hdr.flags, KM_F_AUTH);
	assert_true(km_mac_check(K1, buf, &m));
	/* Only a cookie. */
	n = km_req_seal(buf, len, sizeof(buf), 1, 7, 0, NULL);
	assert_int_equal(km_req_parse(buf, n, 100, &m), KM_ST_OK);
	assert_null(m.mac);
	assert_false(km_mac_check(K1, buf, &m));
	/* No room, or not a request. */
	assert_int_equal(km_req_seal(buf, len, len + 8, 1, 7, 42, K1), 0);
	assert_int_equal(km_req_seal(buf, 10, sizeof(buf), 1, 7, 42, K1), 0);
	/* A flag without its trailer bytes, or an unknown flag: BAD_REQUEST. */
	km_put16(buf + 4, KM_F_AUTH);
	assert_int_equal(km_req_parse(buf, len, 100, &m), KM_ST_BAD_REQUEST);
	km_put16(buf + 4, 0x0008);
	assert_int_equal(km_req_parse(buf, len, 100, &m), KM_ST_BAD_REQUEST);
}

static void
test_cookie(void **state)
{
	uint8_t s1[KM_MAC_KEY_LEN] = {1}, s2[KM_MAC_KEY_LEN] = {2};
	uint64_t c = km_cookie(s1, 0x0a000001abcdULL, 100);

	(void)state;
	assert_int_equal(c, km_cookie(s1, 0x0a000001abcdULL, 100)); /* stateless */
	assert_int_not_equal(c, km_cookie(s1, 0x0a000001abceULL, 100));
	assert_int_not_equal(c, km_cookie(s1, 0x0a000001abcdULL, 101));
	assert_int_not_equal(c, km_cookie(s2, 0x0a000001abcdULL, 100));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_line),
		cmocka_unit_test(test_load_rotate_save),
		cmocka_unit_test(test_seal),
		cmocka_unit_test(test_cookie),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
