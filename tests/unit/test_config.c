/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Unit tests of keymapd's configuration (app/keymapd/config.c): the INI loader and its
 * error messages (file:line), -o overrides, the allow-list through the configuration and the
 * item API the
 * control plane uses. Files are written to /tmp with mkstemp and removed afterwards.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <km_allow.h>

#include "config.h"

#define ERR_LEN 1024

/* Write text to a new temporary file; its name goes to path (at least 64 bytes). */
static void
tmp_write(const char *text, char *path)
{
	FILE *f;
	int fd;

	strcpy(path, "/tmp/km-test-config-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* Load text over c; the message goes to err, the file name to path (file removed). */
static int
load_text(struct km_conf *c, const char *text, char *path, char *err)
{
	int rc;

	tmp_write(text, path);
	err[0] = '\0';
	rc = km_conf_load(c, path, err, ERR_LEN);
	unlink(path);
	return rc;
}

static uint32_t
ip4(const char *s)
{
	struct in_addr a;

	assert_int_equal(inet_pton(AF_INET, s, &a), 1);
	return a.s_addr;
}

/* km_conf_print into a malloc'd string. */
static char *
print_str(const struct km_conf *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	km_conf_print(c, f);
	assert_int_equal(fclose(f), 0);
	return buf;
}

/* Every item of a and b has the same value (text and number). */
static void
assert_conf_equal(const struct km_conf *a, const struct km_conf *b)
{
	char va[KM_CONF_STR_MAX], vb[KM_CONF_STR_MAX];
	uint64_t na, nb;
	size_t i;

	for (i = 0; i < km_conf_nb_items(); i++) {
		km_conf_value(a, i, &na, va, sizeof(va));
		km_conf_value(b, i, &nb, vb, sizeof(vb));
		assert_string_equal(va, vb);
		assert_int_equal(na, nb);
	}
}

/* print -> load gives the same configuration, and printing it again the same text. */
static void
round_trip(const struct km_conf *a)
{
	char path[64], err[ERR_LEN];
	char *text = print_str(a), *again;
	struct km_conf b;

	memset(&b, 0, sizeof(b));
	if (load_text(&b, text, path, err) != 0)
		fail_msg("%s", err);
	assert_conf_equal(a, &b);
	again = print_str(&b);
	assert_string_equal(text, again);
	free(again);
	free(text);
}

static void
test_defaults_round_trip(void **state)
{
	struct km_conf c;

	(void)state;
	km_conf_defaults(&c);
	assert_int_equal(c.burst, 32);
	assert_int_equal(c.shard_count, 16);
	assert_true(c.split_rate == KM_CONF_AUTO);
	assert_true(c.merge_rate == KM_CONF_AUTO);
	assert_true(c.balance_min_rate == KM_CONF_AUTO);
	assert_int_equal(c.balance_pct, 110);
	assert_int_equal(c.balance_moves, 4);
	assert_int_equal(c.hysteresis, 3);
	assert_int_equal(c.sample_ms, 250);
	assert_int_equal(c.max_count, 4096);
	assert_string_equal(c.allow, "0.0.0.0/0");
	assert_int_equal(c.metrics_ip, ip4("127.0.0.1"));
	assert_int_equal(c.metrics_port, 9470);
	assert_int_equal(c.ip, ip4("198.51.100.2"));
	assert_int_equal(c.route_sep, '/');
	round_trip(&c);
}

static void
test_changed_round_trip(void **state)
{
	static const char *const sets[] = {
		"net.ip=192.0.2.10",
		"workers.mode=echo",
		"workers.burst=8",
		"shards.count=64",
		"shards.route_sep=:",
		"shards.split_rate=50000",
		"shards.merge_rate=1000",
		"shards.max_count=1024",
		"shards.balance_pct=0",
		"shards.balance_min_rate=5000",
		"security.allow=10.0.0.0/8, 192.168.1.1",
		"metrics.ip=0.0.0.0",
		"metrics.port=0",
		"log.level=debug",
		"eal.args=-l 0-4 -a 0000:3b:00.0 --file-prefix km",
	};
	char err[ERR_LEN];
	struct km_conf c;
	size_t i;

	(void)state;
	km_conf_defaults(&c);
	for (i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
		if (km_conf_set(&c, sets[i], err, sizeof(err)) != 0)
			fail_msg("%s: %s", sets[i], err);
	assert_int_equal(c.route_sep, ':');
	assert_int_equal(c.metrics_port, 0);
	assert_string_equal(c.allow, "10.0.0.0/8, 192.168.1.1");
	round_trip(&c);
}

/* "auto": back to the derived value from a number, printed and parsed as itself; an order
 * between two tunables is lifted while either side is auto. */
static void
test_auto(void **state)
{
	char err[ERR_LEN], buf[64];
	struct km_conf c;
	struct km_conf_item it;
	uint64_t num;
	int i;

	(void)state;
	km_conf_defaults(&c);
	assert_int_equal(km_conf_set(&c, "shards.split_rate=1000", err, sizeof(err)), 0);
	assert_int_equal(c.split_rate, 1000);
	/* merge_rate auto under an explicit split_rate: accepted (derived below it). */
	assert_int_equal(km_conf_set(&c, "shards.merge_rate=1000", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "is not below"));
	assert_int_equal(km_conf_set(&c, "shards.split_rate=auto", err, sizeof(err)), 0);
	assert_true(c.split_rate == KM_CONF_AUTO);
	assert_int_equal(km_conf_set(&c, "shards.merge_rate=1000", err, sizeof(err)), 0);
	i = km_conf_find("shards.split_rate");
	assert_true(i >= 0);
	km_conf_item((size_t)i, &it);
	assert_true(it.is_number && it.can_auto);
	km_conf_value(&c, (size_t)i, &num, buf, sizeof(buf));
	assert_true(num == KM_CONF_AUTO);
	assert_string_equal(buf, "auto");
	km_conf_item((size_t)km_conf_find("shards.hysteresis"), &it);
	assert_false(it.can_auto);
	assert_int_equal(km_conf_set(&c, "shards.hysteresis=auto", err, sizeof(err)), -1);
	round_trip(&c);
}

/* A file that loads, with comments, blanks and inline comments. */
static void
test_load_good(void **state)
{
	char path[64], err[ERR_LEN];
	struct km_conf c;

	(void)state;
	km_conf_defaults(&c);
	if (load_text(&c,
		    "; keymapd\n"
		    "\n"
		    "  [ workers ]  ; spaces around the name\n"
		    "burst=16 ; sixteen\n"
		    "\tidle_spin =   0\n"
		    "[shards]\n"
		    "merge_rate = 500\n" /* split_rate auto: no constraint */
		    "[security]\n"
		    "allow = 10.0.0.0/8,192.0.2.1\n"
		    "[metrics]\n"
		    "port = 0\n"
		    "\n",
		    path, err) != 0)
		fail_msg("%s", err);
	assert_int_equal(c.burst, 16);
	assert_int_equal(c.idle_spin, 0);
	assert_int_equal(c.merge_rate, 500);
	assert_string_equal(c.allow, "10.0.0.0/8,192.0.2.1");
	assert_int_equal(c.metrics_port, 0);
	assert_int_equal(c.rx_desc, 1024); /* untouched */
}

struct bad_case {
	const char *text;
	int line;            /* expected "path:line: " prefix; 0: "path: " */
	const char *want[3]; /* substrings of the message */
};

static const struct bad_case bad_cases[] = {
	{"[net]\nport = 0\n\n[bogus]\nx = 1\n", 4, {"[bogus]: unknown section", "net, "}},
	{"[net]\n; comment\n  bogus = 1\n", 3,
		{"[net] bogus = '1': unknown key", "keys of [net]: port, ip,"}},
	{"[workers]\nburst = 16\nidle_spin = 1\n burst=8 ; again\n", 4,
		{"[workers] burst = '8': duplicate key", "first at line 2"}},
	{"[net]\nport = 0\n[log]\nlevel = info\n  [ net ]  \nrss = 0\n", 5,
		{"[net]: duplicate section", "first at line 1"}},
	{"[workers]\nburst = 65\n", 2, {"[workers] burst = '65': out of range 1..64"}},
	{"[net]\nrx_desc = 12x\n", 2, {"[net] rx_desc = '12x': not a non-negative integer"}},
	{"[net]\nrx_desc = -1\n", 2, {"[net] rx_desc = '-1': not a non-negative integer"}},
	{"[net]\nrx_desc = +100\n", 2, {"rx_desc = '+100': not a non-negative integer"}},
	{"[net]\nport =\n", 2, {"[net] port = '': not a non-negative integer"}},
	{"[shards]\nsplit_rate = 99999999999999999999999\n", 2,
		{"split_rate = '99999999999999999999999': neither a non-negative integer nor "
		 "auto"}},
	{"[shards]\nbalance_pct = 100\n", 2, {"[shards] balance_pct = 100 is not above 100"}},
	{"[shards]\nbalance_pct = auto\n", 2,
		{"[shards] balance_pct = 'auto': not a non-negative integer"}},
	{"[shards]\nbalance_moves = 0\n", 2, {"balance_moves = '0': out of range 1..1000"}},
	{"[net]\nip = 198.51.100.256\n", 2, {"[net] ip = '198.51.100.256': not an IPv4 address"}},
	{"[metrics]\nip = localhost\n", 2, {"[metrics] ip = 'localhost': not an IPv4 address"}},
	{"[metrics]\nport = 65536\n", 2, {"[metrics] port = '65536': out of range 0..65535"}},
	{"[workers]\nmode = fast\n", 2, {"[workers] mode = 'fast': not one of serve|echo"}},
	{"[log]\nlevel = verbose\n", 2, {"[log] level = 'verbose': not one of emerg|"}},
	{"[store]\nhugepages = on\n", 2, {"[store] hugepages = 'on': not one of auto|hugetlb|off"}},
	{"[shards]\nroute_sep = ::\n", 2, {"[shards] route_sep = '::': not a single character"}},
	{"[shards]\ncount = 12\n", 2, {"[shards] count = '12': not a power of two"}},
	{"[shards]\ncount = 0\n", 2, {"[shards] count = '0': out of range 1..65536"}},
	{"[store]\ndedup_entries = 3000\n", 2,
		{"[store] dedup_entries = '3000': not a power of two"}},
	{"[shards]\nhysteresis = 0\n", 2, {"[shards] hysteresis = '0': out of range 1..1000"}},
	{"[shards]\nsample_ms = 99\n", 2, {"[shards] sample_ms = '99': out of range 100..60000"}},
	{"[shards]\nmax_count = 2097152\n", 2, {"max_count = '2097152': out of range 1..1048576"}},
	/* max_count < count: the later of the two keys in the file */
	{"[shards]\nmax_count = 32\ncount = 64\n", 3,
		{"[shards] max_count = 32 is below [shards] count = 64"}},
	{"[shards]\nmax_count = 8\n", 2, {"[shards] max_count = 8 is below [shards] count = 16"}},
	{"[shards]\nsplit_rate = 1000\nhysteresis = 2\nmerge_rate = 1000\n", 4,
		{"[shards] merge_rate = 1000 is not below [shards] split_rate = 1000",
			"split again"}},
	{"[shards]\nmerge_rate = 5000\nsplit_rate = 4000\n", 3,
		{"merge_rate = 5000 is not below [shards] split_rate = 4000"}},
	{"[security]\nallow =\n", 2, {"[security] allow = '': empty list"}},
	{"[security]\nallow = 1.2.3.4/33\n", 2,
		{"[security] allow = '1.2.3.4/33': ", "prefix length not in 0..32"}},
	{"[security]\nallow = 10.0.0.0/8, 300.1.1.1/8\n", 2, {"'300.1.1.1': not an IPv4 address"}},
	{"[security]\nallow = 10.1.2.3/8\n", 2, {"host bits set (the network is 10.0.0.0/8)"}},
	{"[security]\nallow = 1.2.3.4/8/1\n", 2, {"'1.2.3.4/8/1': bad prefix length"}},
	{"[security]\nallow = 1.2.3.4,,5.6.7.8\n", 2, {"item 2 is empty"}},
	{"[net]\nport = 0\nburst 64\n", 3,
		{"syntax error", "in [net]: neither [section] nor key = value"}},
	{"; top\n[net\nport = 0\n", 2, {"syntax error: no closing ']'"}},
	{"port = 0\n[net]\n", 1, {"syntax error: key = value before any [section]"}},
	{"[net] port = 1\n", 1, {"syntax error: text after ']'"}},
	{"[net]\n= 1\n", 2, {"syntax error: in [net]: no key before '='"}},
	{"[]\n", 1, {"syntax error: empty section name"}},
};

static void
test_load_errors(void **state)
{
	char path[64], err[ERR_LEN], prefix[192];
	struct km_conf c, before;
	size_t i, j;

	(void)state;
	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *b = &bad_cases[i];

		km_conf_defaults(&c);
		before = c;
		if (load_text(&c, b->text, path, err) == 0)
			fail_msg("case %zu loaded: %s", i, b->text);
		if (b->line > 0)
			snprintf(prefix, sizeof(prefix), "%s:%d: ", path, b->line);
		else
			snprintf(prefix, sizeof(prefix), "%s: ", path);
		if (strncmp(err, prefix, strlen(prefix)) != 0)
			fail_msg("case %zu: '%s' does not start with '%s'", i, err, prefix);
		for (j = 0; j < 3 && b->want[j] != NULL; j++)
			if (strstr(err, b->want[j]) == NULL)
				fail_msg("case %zu: '%s' lacks '%s'", i, err, b->want[j]);
		/* Nothing of a refused file is applied. */
		assert_conf_equal(&c, &before);
	}
}

/* A file that sets a key before failing leaves c as it was. */
static void
test_load_error_atomic(void **state)
{
	char path[64], err[ERR_LEN];
	struct km_conf c;

	(void)state;
	km_conf_defaults(&c);
	assert_int_equal(load_text(&c, "[workers]\nburst = 8\n[net]\nbogus = 1\n", path, err), -1);
	assert_int_equal(c.burst, 32);
}

static void
test_load_long_lines(void **state)
{
	char path[64], err[ERR_LEN], prefix[192];
	char text[1024];
	struct km_conf c;

	(void)state;
	/* A value rte_cfgfile would truncate to 255 characters silently. */
	km_conf_defaults(&c);
	snprintf(text, sizeof(text), "[eal]\n; args\nargs = %0300d\n", 0);
	assert_int_equal(load_text(&c, text, path, err), -1);
	snprintf(prefix, sizeof(prefix), "%s:3: syntax error: in [eal]: value too long", path);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("'%s' does not start with '%s'", err, prefix);

	/* A line rte_cfgfile refuses, even a comment. */
	snprintf(text, sizeof(text), "[eal]\n;%0400d\n", 0);
	assert_int_equal(load_text(&c, text, path, err), -1);
	snprintf(prefix, sizeof(prefix), "%s:2: syntax error: in [eal]: line too long", path);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("'%s' does not start with '%s'", err, prefix);

	/* 255 characters fit. */
	snprintf(text, sizeof(text), "[eal]\nargs = %0255d\n", 0);
	if (load_text(&c, text, path, err) != 0)
		fail_msg("%s", err);
	assert_int_equal(strlen(c.eal_args), 255);
}

static void
test_load_unreadable(void **state)
{
	char err[ERR_LEN];
	struct km_conf c;

	(void)state;
	km_conf_defaults(&c);
	assert_int_equal(
		km_conf_load(&c, "/tmp/km-test-config-no-such-file", err, sizeof(err)), -1);
	assert_string_equal(
		err, "/tmp/km-test-config-no-such-file: cannot open: No such file or directory");
	assert_int_equal(km_conf_load(&c, "/tmp", err, sizeof(err)), -1);
	assert_string_equal(err, "/tmp: cannot read: Is a directory");
}

/* An input that must be refused, and a part of the message that says why. */
struct refusal {
	const char *input;
	const char *want;
};

static void
test_set(void **state)
{
	static const struct refusal bad[] = {
		{"workers.bogus=1", "unknown key [workers] bogus"},
		{"burst=1", "'burst=1': expected section.key=value"},
		{"workers.burst", "expected section.key=value"},
		{"workers.burst=0", "[workers] burst = '0': out of range 1..64"},
		{"shards.merge_rate=1000",
			"merge_rate = 1000 is not below [shards] split_rate = 1000"},
		{"shards.split_rate=999",
			"merge_rate = 999 is not below [shards] split_rate = 999"},
		{"shards.max_count=8", "max_count = 8 is below [shards] count = 16"},
		{"shards.count=8192", "max_count = 4096 is below [shards] count = 8192"},
		{"security.allow=", "empty list"},
		{"security.allow=1.2.3.4/33", "prefix length not in 0..32"},
		{"shards.route_sep=ab", "not a single character"},
		{"shards.route_sep=;", "not a visible character other than ';'"},
		{"shards.route_sep= ", "not a visible character"},
		{"prefetch.models=succ,bogus", "not a list of succ, coacc"},
		{"prefetch.sampling=3", "not a power of two"},
		{"prefetch.threshold=0", "out of range 1..99"},
		{"prefetch.memory=1024", "out of range"},
	};
	char err[ERR_LEN], longv[400];
	struct km_conf c, before;
	size_t i;

	(void)state;
	km_conf_defaults(&c);
	assert_int_equal(km_conf_set(&c, "workers.burst=8", err, sizeof(err)), 0);
	assert_int_equal(c.burst, 8);
	assert_int_equal(km_conf_set(&c, "net.ip=192.0.2.1", err, sizeof(err)), 0);
	assert_int_equal(c.ip, ip4("192.0.2.1"));
	assert_int_equal(km_conf_set(&c, "shards.split_rate=1000", err, sizeof(err)), 0);
	assert_int_equal(km_conf_set(&c, "shards.merge_rate=999", err, sizeof(err)), 0);
	assert_int_equal(c.merge_rate, 999);
	assert_int_equal(km_conf_set(&c, "prefetch.models=succ,template", err, sizeof(err)), 0);
	assert_string_equal(c.pf_models, "succ,template");
	assert_int_equal(km_conf_set(&c, "prefetch.sampling=8", err, sizeof(err)), 0);
	assert_int_equal(c.pf_sampling, 8);

	before = c;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (km_conf_set(&c, bad[i].input, err, sizeof(err)) == 0)
			fail_msg("'%s' accepted", bad[i].input);
		if (strstr(err, bad[i].want) == NULL)
			fail_msg("'%s': '%s' lacks '%s'", bad[i].input, err, bad[i].want);
	}
	memset(longv, 0, sizeof(longv));
	strcpy(longv, "eal.args=");
	memset(longv + strlen(longv), 'x', 300);
	assert_int_equal(km_conf_set(&c, longv, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "too long (at most 255 characters)"));
	/* Refused changes leave c as it was. */
	assert_conf_equal(&c, &before);
	assert_int_equal(c.split_rate, 1000);

	/* 0 disables a threshold, and the constraint with it. */
	assert_int_equal(km_conf_set(&c, "shards.split_rate=0", err, sizeof(err)), 0);
	assert_int_equal(km_conf_set(&c, "shards.merge_rate=5000", err, sizeof(err)), 0);
}

/* 33 items through the configuration: refused for the count, not the length. */
static void
test_allow_conf(void **state)
{
	char err[ERR_LEN], set[1100];
	struct km_conf c;
	unsigned int i;
	size_t off;

	(void)state;
	km_conf_defaults(&c);
	off = (size_t)snprintf(set, sizeof(set), "security.allow=");
	for (i = 1; i <= KM_ALLOW_MAX + 1; i++)
		off += (size_t)snprintf(
			set + off, sizeof(set) - off, "%s1.0.0.%u", i > 1 ? "," : "", i);
	assert_int_equal(km_conf_set(&c, set, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "[security] allow = '1.0.0.1,"));
	assert_non_null(strstr(err, "more than 32 items"));
	assert_string_equal(c.allow, "0.0.0.0/0");
	assert_int_equal(km_conf_set(&c, "security.allow=192.0.2.0/24", err, sizeof(err)), 0);
	assert_string_equal(c.allow, "192.0.2.0/24");
}

static void
test_items(void **state)
{
	static const char *const runtime[] = {
		"net.busy_watermark",
		"workers.burst",
		"workers.idle_spin",
		"workers.idle_sleep_us",
		"shards.split_rate",
		"shards.merge_rate",
		"shards.hysteresis",
		"shards.sample_ms",
		"shards.max_count",
		"shards.balance_pct",
		"shards.balance_moves",
		"shards.balance_min_rate",
		"tier.cold_rate",
		"tier.warm_rate",
		"tier.compact_pct",
		"tier.compact_min_bytes",
		"control.interval_ms",
		"control.stats_interval_s",
		"prefetch.enable",
		"prefetch.models",
		"prefetch.threshold",
		"prefetch.budget",
		"prefetch.bytes_per_s",
		"prefetch.watermark",
		"prefetch.sampling",
		"crew.enable",
		"crew.sampling",
		"crew.interval_ms",
		"crew.share_on",
		"crew.share_off",
		"crew.write_max",
		"crew.hysteresis",
		"crew.min_samples",
		"shift.auto",
		"shift.interval_ms",
		"shift.share_on",
		"shift.share_off",
		"shift.hysteresis",
		"shift.undo_s",
		"shift.settle_ms",
		"security.allow",
		"security.auth",
		"log.level",
		"log.file",
		"log.syslog",
	};
	struct km_conf_item it;
	char buf[KM_CONF_STR_MAX], name[160];
	struct km_conf c;
	size_t i, j, nb_rt = 0;
	uint64_t num;
	int idx;

	(void)state;
	km_conf_defaults(&c);

	idx = km_conf_find("workers.burst");
	assert_true(idx >= 0);
	km_conf_item((size_t)idx, &it);
	assert_string_equal(it.section, "workers");
	assert_string_equal(it.key, "burst");
	assert_int_equal(it.is_number, 1);
	assert_int_equal(it.runtime, 1);
	assert_non_null(strstr(it.help, "burst"));
	km_conf_value(&c, (size_t)idx, &num, buf, sizeof(buf));
	assert_int_equal(num, 32);
	assert_string_equal(buf, "32");

	idx = km_conf_find("net.ip");
	assert_true(idx >= 0);
	km_conf_item((size_t)idx, &it);
	assert_string_equal(it.key, "ip");
	assert_int_equal(it.is_number, 0);
	assert_int_equal(it.runtime, 0);
	num = 7;
	km_conf_value(&c, (size_t)idx, &num, buf, sizeof(buf));
	assert_int_equal(num, 0);
	assert_string_equal(buf, "198.51.100.2");

	idx = km_conf_find("security.allow");
	assert_true(idx >= 0);
	km_conf_item((size_t)idx, &it);
	assert_int_equal(it.is_number, 0);
	assert_int_equal(it.runtime, 1);
	km_conf_value(&c, (size_t)idx, NULL, buf, sizeof(buf));
	assert_string_equal(buf, "0.0.0.0/0");

	idx = km_conf_find("shards.route_sep");
	km_conf_item((size_t)idx, &it);
	assert_int_equal(it.is_number, 0);
	km_conf_value(&c, (size_t)idx, &num, buf, sizeof(buf));
	assert_string_equal(buf, "/");

	/* A short buffer is cut, still terminated. */
	km_conf_value(&c, (size_t)km_conf_find("net.ip"), &num, buf, 4);
	assert_string_equal(buf, "198");
	km_conf_value(&c, (size_t)km_conf_find("eal.args"), &num, buf, 5);
	assert_string_equal(buf, "--no");

	assert_int_equal(km_conf_find("workers.bogus"), -1);
	assert_int_equal(km_conf_find("workers"), -1);
	assert_int_equal(km_conf_find("burst"), -1);
	assert_int_equal(km_conf_find("work.burst"), -1);
	assert_int_equal(km_conf_find("workers.burs"), -1);
	assert_int_equal(km_conf_find(""), -1);

	/* Exactly the documented tunables are runtime-settable; every item is findable. */
	for (i = 0; i < km_conf_nb_items(); i++) {
		int want = 0;

		km_conf_item(i, &it);
		snprintf(name, sizeof(name), "%s.%s", it.section, it.key);
		assert_int_equal(km_conf_find(name), (int)i);
		for (j = 0; j < sizeof(runtime) / sizeof(runtime[0]); j++)
			want |= strcmp(runtime[j], name) == 0;
		if (it.runtime != want)
			fail_msg("%s: runtime %d, expected %d", name, it.runtime, want);
		nb_rt += (size_t)it.runtime;
	}
	assert_int_equal(nb_rt, sizeof(runtime) / sizeof(runtime[0]));
}

/* km_conf_value gives the text km_conf_print writes: rebuild the file from the items. */
static void
test_value_matches_print(void **state)
{
	char err[ERR_LEN], buf[KM_CONF_STR_MAX];
	char *want = NULL, *got;
	const char *sec = "";
	struct km_conf_item it;
	struct km_conf c;
	size_t len = 0, i;
	uint64_t num;
	FILE *f;

	(void)state;
	km_conf_defaults(&c);
	assert_int_equal(
		km_conf_set(&c, "security.allow=10.0.0.0/8,192.0.2.1", err, sizeof(err)), 0);
	assert_int_equal(km_conf_set(&c, "shards.route_sep=|", err, sizeof(err)), 0);
	f = open_memstream(&want, &len);
	assert_non_null(f);
	for (i = 0; i < km_conf_nb_items(); i++) {
		km_conf_item(i, &it);
		km_conf_value(&c, i, &num, buf, sizeof(buf));
		if (strcmp(sec, it.section) != 0) {
			fprintf(f, "%s[%s]\n", i == 0 ? "" : "\n", it.section);
			sec = it.section;
		}
		fprintf(f, "; %s\n%s = %s\n", it.help, it.key, buf);
	}
	assert_int_equal(fclose(f), 0);
	got = print_str(&c);
	assert_string_equal(got, want);
	free(got);
	free(want);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_round_trip),
		cmocka_unit_test(test_changed_round_trip),
		cmocka_unit_test(test_auto),
		cmocka_unit_test(test_load_good),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_error_atomic),
		cmocka_unit_test(test_load_long_lines),
		cmocka_unit_test(test_load_unreadable),
		cmocka_unit_test(test_set),
		cmocka_unit_test(test_allow_conf),
		cmocka_unit_test(test_items),
		cmocka_unit_test(test_value_matches_print),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
