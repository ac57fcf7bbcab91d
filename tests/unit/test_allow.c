/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Allow-list tests (lib/allow): every refusal and its message, the list left untouched on
 * error, prefixes masked, matching at the edges of each prefix, /0, the item limit, and
 * the allocating create/free pair.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <km_allow.h>

struct refusal {
	const char *input;
	const char *want; /* substring of the message */
};

static uint32_t
ip4(const char *s)
{
	struct in_addr a;

	assert_int_equal(inet_pton(AF_INET, s, &a), 1);
	return a.s_addr;
}

/* "a.b.c.d,..." with n addresses 1.0.0.1, 1.0.0.2, ... */
static void
allow_list(char *buf, size_t len, unsigned int n)
{
	size_t off = 0;
	unsigned int i;

	buf[0] = '\0';
	for (i = 0; i < n; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s1.0.%u.%u", i == 0 ? "" : ",",
			i / 200, i % 200 + 1);
}

static void
test_allow(void **state)
{
	static const struct refusal bad[] = {
		{"", "empty list"},
		{"   ", "empty list"},
		{"1.2.3.4/33", "'1.2.3.4/33': prefix length not in 0..32"},
		{"300.1.1.1/8", "'300.1.1.1': not an IPv4 address"},
		{"1.2.3.4/8/1", "'1.2.3.4/8/1': bad prefix length"},
		{"1.2.3.4/", "bad prefix length"},
		{"1.2.3.4/-1", "bad prefix length"},
		{"1.2.3.4/ 8", "bad prefix length"},
		{"1.2.3.4/3x", "'1.2.3.4/3x': bad prefix length"},
		{"1.2.3.4/100", "'1.2.3.4/100': prefix length not in 0..32"},
		{"1.2.3.4/+8", "bad prefix length"},
		{"1.2.3", "not an IPv4 address"},
		{"10.0.0.0/8,", "item 2 is empty"},
		{",10.0.0.0/8", "item 1 is empty"},
	};
	char err[256], list[1024];
	struct km_allow a, keep;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&a, 0x5a, sizeof(a));
		keep = a;
		err[0] = '\0';
		if (km_allow_parse(bad[i].input, &a, err, sizeof(err)) == 0)
			fail_msg("'%s' accepted", bad[i].input);
		if (strstr(err, bad[i].want) == NULL)
			fail_msg("'%s': '%s' lacks '%s'", bad[i].input, err, bad[i].want);
		assert_memory_equal(&a, &keep, sizeof(a)); /* untouched */
	}

	/* A bare address is a /32. */
	assert_int_equal(km_allow_parse("192.0.2.7", &a, err, sizeof(err)), 0);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.all, 0);
	assert_int_equal(a.mask[0], 0xffffffff);
	assert_true(km_allow_match(&a, ip4("192.0.2.7")));
	assert_false(km_allow_match(&a, ip4("192.0.2.8")));

	/* Host bits set: most likely a typo, refused with the network meant. */
	assert_int_equal(km_allow_parse("10.1.2.3/8", &a, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "host bits set (the network is 10.0.0.0/8)"));
	assert_int_equal(km_allow_parse("10.0.0.0/8", &a, err, sizeof(err)), 0);
	assert_int_equal(a.net[0], ip4("10.0.0.0"));
	assert_int_equal(a.mask[0], ip4("255.0.0.0"));
	assert_true(km_allow_match(&a, ip4("10.9.9.9")));
	assert_true(km_allow_match(&a, ip4("10.1.2.3")));
	assert_false(km_allow_match(&a, ip4("11.1.2.3")));

	/* Several, with blanks; /0 anywhere allows everything. */
	assert_int_equal(
		km_allow_parse(" 10.0.0.0/8 , 192.168.0.0/16 ,192.0.2.1/32", &a, err, sizeof(err)),
		0);
	assert_int_equal(a.n, 3);
	assert_int_equal(a.all, 0);
	assert_true(km_allow_match(&a, ip4("192.168.200.1")));
	assert_true(km_allow_match(&a, ip4("192.0.2.1")));
	assert_false(km_allow_match(&a, ip4("192.0.2.2")));
	assert_false(km_allow_match(&a, ip4("172.16.0.1")));
	assert_int_equal(km_allow_parse("0.0.0.0/0", &a, err, sizeof(err)), 0);
	assert_int_equal(a.all, 1);
	assert_true(km_allow_match(&a, ip4("203.0.113.9")));
	assert_int_equal(km_allow_parse("192.0.2.1, 0.0.0.0/0", &a, err, sizeof(err)), 0);
	assert_int_equal(a.all, 1);

	/* At most KM_ALLOW_MAX items. */
	allow_list(list, sizeof(list), KM_ALLOW_MAX);
	assert_int_equal(km_allow_parse(list, &a, err, sizeof(err)), 0);
	assert_int_equal(a.n, KM_ALLOW_MAX);
	assert_true(km_allow_match(&a, ip4("1.0.0.32")));
	assert_false(km_allow_match(&a, ip4("1.0.0.33")));
	allow_list(list, sizeof(list), KM_ALLOW_MAX + 1);
	assert_int_equal(km_allow_parse(list, &a, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "more than 32 items"));
}

/* A prefix matches exactly its addresses: the first and last in, their neighbours out. */
static void
test_allow_prefix_edges(void **state)
{
	static const struct {
		const char *list, *first, *last, *before, *after;
	} c[] = {
		{"192.0.2.0/24", "192.0.2.0", "192.0.2.255", "192.0.1.255", "192.0.3.0"},
		{"10.0.0.0/8", "10.0.0.0", "10.255.255.255", "9.255.255.255", "11.0.0.0"},
		{"198.51.100.64/26", "198.51.100.64", "198.51.100.127", "198.51.100.63",
			"198.51.100.128"},
		{"203.0.113.6/31", "203.0.113.6", "203.0.113.7", "203.0.113.5", "203.0.113.8"},
	};
	struct km_allow a;
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		assert_int_equal(km_allow_parse(c[i].list, &a, err, sizeof(err)), 0);
		assert_true(km_allow_match(&a, ip4(c[i].first)));
		assert_true(km_allow_match(&a, ip4(c[i].last)));
		assert_false(km_allow_match(&a, ip4(c[i].before)));
		assert_false(km_allow_match(&a, ip4(c[i].after)));
	}
}

/* Sources no reply may go to. */
static void
test_replyable(void **state)
{
	static const struct {
		const char *addr;
		uint16_t port;
		int ok;
	} t[] = {
		{"198.51.100.1", 40000, 1}, {"10.0.0.1", 1, 1}, {"169.254.1.1", 5000, 1},
		{"223.255.255.254", 5000, 1}, {"198.51.100.1", 0, 0}, /* port 0 */
		{"0.0.0.0", 5000, 0},                                 /* unspecified */
		{"0.1.2.3", 5000, 0},                                 /* this network */
		{"127.0.0.1", 5000, 0},                               /* loopback */
		{"127.255.0.9", 5000, 0},                             /* loopback */
		{"224.0.0.1", 5000, 0},                               /* multicast */
		{"239.255.255.250", 5000, 0}, {"240.0.0.1", 5000, 0}, /* reserved */
		{"255.255.255.255", 5000, 0},                         /* broadcast */
		{"198.51.100.2", 5000, 0},                            /* the server itself */
	};
	unsigned int i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		assert_int_equal(
			km_addr_replyable(ip4(t[i].addr), htons(t[i].port), ip4("198.51.100.2")),
			t[i].ok);
}

static void
test_allow_create_free(void **state)
{
	struct km_allow *a = NULL;
	char err[256];

	(void)state;
	assert_int_equal(km_allow_create("192.0.2.0/24, 10.0.0.1", &a, err, sizeof(err)), 0);
	assert_non_null(a);
	assert_int_equal(a->n, 2);
	assert_true(km_allow_match(a, ip4("10.0.0.1")));
	assert_false(km_allow_match(a, ip4("10.0.0.2")));
	km_allow_free(a);

	a = NULL;
	err[0] = '\0';
	assert_int_equal(km_allow_create("10.0.0.0/40", &a, err, sizeof(err)), -EINVAL);
	assert_null(a);
	assert_non_null(strstr(err, "prefix length not in 0..32"));
	assert_int_equal(km_allow_create("10.0.0.0/8, 1.2.3.4/8", &a, err, sizeof(err)), -EINVAL);
	assert_null(a);
	assert_non_null(strstr(err, "'1.2.3.4/8': host bits set (the network is 1.0.0.0/8)"));
	km_allow_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allow),
		cmocka_unit_test(test_allow_prefix_edges),
		cmocka_unit_test(test_allow_create_free),
		cmocka_unit_test(test_replyable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
