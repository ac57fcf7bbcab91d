/* SPDX-License-Identifier: BSD-3-Clause */
/* keymapctl: status (keymapd, its port, its map in short) and stats (counters, --watch). */

#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <km_util.h>

#include "keymapctl.h"

#define WATCH_PERIOD_MS 1000

static void summary_item(int *first, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int
cmd_status(struct ctl *c, int argc, char **argv)
{
	static const char *const shown[] = {"version", "pid", "uptime_s", "mode", "main_lcore",
		"worker_lcores", "workers", "port", "epoch", "shards", "metrics"};
	static const char *const port_shown[] = {
		"id", "name", "mac", "ip", "udp_base", "link_up", "speed_mbps", "rss"};
	json_t *root, *d, *port, *v;
	uint64_t base, workers, up;
	const char *key;
	struct table t;
	size_t i;
	int rc;

	(void)argv;
	if (argc != 1)
		return usage_error("status takes no argument");
	rc = tel_query_json(c, "/keymap/status", &root, &d);
	if (rc != 0 || root == NULL)
		return rc;

	table_init(&t, 2);
	port = json_object_get(d, "port");
	table_kv(&t, "version", "%s", jfmt(json_object_get(d, "version")));
	table_kv(&t, "pid", "%s", jfmt(json_object_get(d, "pid")));
	table_kv(&t, "uptime", "%s s", jfmt(json_object_get(d, "uptime_s")));
	table_kv(&t, "mode", "%s", jfmt(json_object_get(d, "mode")));
	table_kv(&t, "main lcore", "%s", jfmt(json_object_get(d, "main_lcore")));
	table_kv(&t, "worker lcores", "%s", jfmt(json_object_get(d, "worker_lcores")));
	table_kv(&t, "workers", "%s", jfmt(json_object_get(d, "workers")));
	if (port != NULL) {
		table_kv(&t, "port", "%s (%s)", jfmt(json_object_get(port, "id")),
			jfmt(json_object_get(port, "name")));
		table_kv(&t, "mac", "%s", jfmt(json_object_get(port, "mac")));
		table_kv(&t, "ip", "%s", jfmt(json_object_get(port, "ip")));
		/* Worker i listens on udp_base + i. */
		if (jint(port, "udp_base", &base) == 0 && jint(d, "workers", &workers) == 0 &&
			workers > 1)
			table_kv(&t, "udp ports", "%llu-%llu", (unsigned long long)base,
				(unsigned long long)(base + workers - 1));
		else
			table_kv(&t, "udp ports", "%s", jfmt(json_object_get(port, "udp_base")));
		if (jint(port, "link_up", &up) != 0)
			table_kv(&t, "link", "-");
		else if (up)
			table_kv(&t, "link", "up, %s Mb/s",
				jfmt(json_object_get(port, "speed_mbps")));
		else
			table_kv(&t, "link", "down");
		if (jint(port, "rss", &up) != 0)
			table_kv(&t, "rss", "-");
		else
			table_kv(&t, "rss", "%s", up ? "on" : "off");
		json_object_foreach(port, key, v)
		{
			for (i = 0; i < sizeof(port_shown) / sizeof(port_shown[0]); i++)
				if (strcmp(key, port_shown[i]) == 0)
					break;
			if (i == sizeof(port_shown) / sizeof(port_shown[0])) {
				char label[128];

				snprintf(label, sizeof(label), "port.%s", key);
				table_kv_flat(&t, label, v);
			}
		}
	}
	table_kv(&t, "epoch", "%s", jfmt(json_object_get(d, "epoch")));
	table_kv(&t, "shards", "%s", jfmt(json_object_get(d, "shards")));
	v = json_object_get(d, "metrics");
	if (json_is_string(v) && json_string_value(v)[0] == '\0')
		table_kv(&t, "metrics", "disabled");
	else if (json_is_string(v))
		table_kv(&t, "metrics", "http://%s/metrics", json_string_value(v));
	else
		table_kv(&t, "metrics", "%s", jfmt(v));
	/* Whatever a newer keymapd adds. */
	json_object_foreach(d, key, v)
	{
		for (i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
			if (strcmp(key, shown[i]) == 0)
				break;
		if (i == sizeof(shown) / sizeof(shown[0]))
			table_kv_flat(&t, key, v);
	}
	table_print(&t);
	table_free(&t);
	json_decref(root);
	return 0;
}

/* Summary items "a, b, c" on one line. */
static void
summary_item(int *first, const char *fmt, ...)
{
	va_list ap;

	if (!*first)
		fputs(", ", stdout);
	*first = 0;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

/* The rate of one counter between two samples, dt seconds apart ("-" when unknown or the
 * counter went back, e.g. keymapd restarted). */
static void
table_add_rate(struct table *t, const json_t *cur, const json_t *prev, double dt)
{
	json_int_t a, b;

	if (!json_is_integer(cur) || !json_is_integer(prev) || dt <= 0) {
		table_add(t, "-");
		return;
	}
	a = json_integer_value(cur);
	b = json_integer_value(prev);
	if (a < b)
		table_add(t, "-");
	else
		table_add(t, "%.1f", (double)(a - b) / dt);
}

/* Stats column group g: "total", then the workers' objects "w0", "w1"... */
static void
group_name(unsigned int g, char *buf, size_t len)
{
	if (g == 0)
		snprintf(buf, len, "total");
	else
		snprintf(buf, len, "w%u", g - 1);
}

/*
 * Section name of a stats sample: "port" (the port's counters, with the workers' RX and TX
 * queue drops beside them), "balance" (the re-sharding and placement thresholds in force,
 * the measured capacity, the most loaded worker's share of the mean), and the objects keymapd sends
 * only with some store drivers (the log driver's "store" and "cache", totals of all workers): after
 * a blank line, a row per member in keymapd's order, in watch mode with its rate as in the counter
 * table (none for the port's id). A section with hits and misses gets its hit ratio after the
 * misses. Nothing when the sample has no such object.
 */
static void
print_stats_section(const json_t *d, const json_t *prev, const char *name, double dt, int watch)
{
	const json_t *sec = json_object_get(d, name);
	const json_t *psec = json_object_get(prev, name);
	uint64_t hits, misses;
	const char *key;
	struct table t;
	json_t *m;

	if (!json_is_object(sec))
		return;
	table_init(&t, watch ? 3 : 2);
	table_right(&t, 1);
	table_add(&t, "%s", name);
	table_add(&t, "value");
	if (watch) {
		table_right(&t, 2);
		table_add(&t, "value/s");
	}
	json_object_foreach((json_t *)sec, key, m)
	{
		table_add(&t, "%s", key);
		table_add(&t, "%s", jfmt(m));
		if (watch)
			table_add_rate(&t, strcmp(key, "id") == 0 ? NULL : m,
				json_object_get(psec, key), dt);
		if (strcmp(key, "misses") != 0 || jint(sec, "hits", &hits) != 0 ||
			jint(sec, "misses", &misses) != 0)
			continue;
		table_add(&t, "hit_ratio");
		if (hits + misses == 0)
			table_add(&t, "-");
		else
			table_add(&t, "%.1f%%",
				100.0 * (double)hits / ((double)hits + (double)misses));
		if (watch)
			table_add(&t, "-");
	}
	putchar('\n');
	table_print(&t);
	table_free(&t);
}

/*
 * One stats sample: a summary line, then a counter per row, total and per-worker columns;
 * in watch mode each followed by its rate since the previous sample (prev, dt seconds
 * earlier; "-" in the first sample). Then the port section, and the store and cache
 * sections, if any.
 */
static void
print_stats(const json_t *d, const json_t *prev, double dt, int watch)
{
	const json_t *total = json_object_get(d, "total"), *cur;
	unsigned int ngroups, g;
	uint64_t workers = 0, v;
	const char *key;
	char name[32];
	struct table t;
	json_t *m;
	int first = 1;

	if (jint(d, "workers", &workers) == 0)
		summary_item(&first, "%llu worker%s", (unsigned long long)workers,
			workers == 1 ? "" : "s");
	if (jint(d, "uptime_s", &v) == 0)
		summary_item(&first, "up %llu s", (unsigned long long)v);
	if (json_is_number(json_object_get(d, "requests_per_s")))
		summary_item(&first, "%.1f requests/s",
			json_number_value(json_object_get(d, "requests_per_s")));
	if (jint(d, "cycles_per_req", &v) == 0)
		summary_item(&first, "%llu cycles/request", (unsigned long long)v);
	if (jint(d, "latency_p50_ns", &v) == 0)
		summary_item(&first, "latency p50 %llu ns", (unsigned long long)v);
	if (jint(d, "latency_p99_ns", &v) == 0)
		summary_item(&first, "p99 %llu ns", (unsigned long long)v);
	if (!first)
		fputs("\n\n", stdout);

	/* Column groups: total, then w0, w1... with two workers or more. */
	ngroups = workers < 2 ? 1 : 1 + (unsigned int)(workers > 4096 ? 4096 : workers);
	table_init(&t, 1 + ngroups * (watch ? 2 : 1));
	for (g = 1; g < t.ncols; g++)
		table_right(&t, g);
	table_add(&t, "counter");
	for (g = 0; g < ngroups; g++) {
		group_name(g, name, sizeof(name));
		table_add(&t, "%s", name);
		if (watch)
			table_add(&t, "%s/s", name);
	}
	json_object_foreach((json_t *)total, key, m)
	{
		table_add(&t, "%s", key);
		for (g = 0; g < ngroups; g++) {
			group_name(g, name, sizeof(name));
			cur = json_object_get(json_object_get(d, name), key);
			table_add(&t, "%s", jfmt(cur));
			if (watch)
				table_add_rate(&t, cur,
					json_object_get(json_object_get(prev, name), key), dt);
		}
	}
	table_print(&t);
	table_free(&t);
	print_stats_section(d, prev, "port", dt, watch);
	print_stats_section(d, prev, "balance", dt, watch);
	print_stats_section(d, prev, "store", dt, watch);
	print_stats_section(d, prev, "cache", dt, watch);
}

int
cmd_stats(struct ctl *c, int argc, char **argv)
{
	json_t *root, *d, *prev_root = NULL, *prev = NULL;
	uint64_t count = 1, i;
	int64_t t0, t, prev_t = 0, wait;
	const char *n = NULL;
	int watch = 0, tty, rc = 0;

	if (argc > 1) {
		if (strcmp(argv[1], "--watch") == 0 && argc <= 3)
			n = argc == 3 ? argv[2] : "";
		else if (strncmp(argv[1], "--watch=", 8) == 0 && argc == 2)
			n = argv[1] + 8;
		else
			return usage_error("stats: unexpected argument '%s'", argv[argc - 1]);
		watch = 1;
		count = 0; /* until interrupted */
		if (n[0] != '\0' && km_util_parse_u64(n, 1, UINT64_MAX, &count) != 0)
			return usage_error(
				"stats: --watch takes a number of samples >= 1, not '%s'", n);
	}
	tty = isatty(STDOUT_FILENO);
	t0 = now_ms();
	for (i = 0; count == 0 || i < count; i++) {
		if (i > 0) {
			/* One sample per period, whatever each takes. */
			wait = t0 + (int64_t)i * WATCH_PERIOD_MS - now_ms();
			if (wait > 0)
				poll(NULL, 0, (int)wait);
		}
		rc = tel_query(c, "/keymap/stats", &root, &d);
		if (rc != 0)
			break;
		t = now_ms();
		if (i > 0 && !(watch && tty && !c->json))
			putchar('\n');
		if (c->json) {
			print_json(d);
		} else {
			if (watch && tty)
				fputs("\033[H\033[2J", stdout); /* cursor home, clear screen */
			print_stats(d, prev, (t - prev_t) / 1000.0, watch);
		}
		fflush(stdout);
		json_decref(prev_root);
		prev_root = root;
		prev = d;
		prev_t = t;
	}
	json_decref(prev_root);
	return rc;
}
