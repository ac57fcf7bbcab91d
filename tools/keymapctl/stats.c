/* SPDX-License-Identifier: BSD-3-Clause */
/* keymapctl: status (keymapd, its port, its map in short) and stats (counters, --watch). */

#include <fnmatch.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The sections of stats a filter names (keymapctl stats [SECTION | worker N | NAME]...). */
enum {
	SEC_SUMMARY = 1 << 0,  /* the first line */
	SEC_COUNTERS = 1 << 1, /* the counters of "total" and the workers */
	SEC_GAUGES = 1 << 2,   /* their gauges */
	SEC_PORT = 1 << 3,
	SEC_BALANCE = 1 << 4,
	SEC_STORE = 1 << 5,
	SEC_CACHE = 1 << 6,
	SEC_PREFETCH = 1 << 7,
};

static const struct {
	const char *name;
	int bit;
} sec_names[] = {
	{"summary", SEC_SUMMARY},
	{"counters", SEC_COUNTERS},
	{"gauges", SEC_GAUGES},
	{"port", SEC_PORT},
	{"balance", SEC_BALANCE},
	{"store", SEC_STORE},
	{"cache", SEC_CACHE},
	{"prefetch", SEC_PREFETCH},
};

#define FILTER_MAX 32

struct stats_filter {
	int sections; /* SEC_* bits; 0: every section */
	uint64_t workers[FILTER_MAX];
	int nb_workers; /* 0: total and every worker; else only those workers' columns */
	const char *pats[FILTER_MAX];
	int nb_pats; /* 0: every figure; else those whose name matches one (fnmatch) */
};

static int
sec_bit(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(sec_names) / sizeof(sec_names[0]); i++)
		if (strcmp(name, sec_names[i].name) == 0)
			return sec_names[i].bit;
	return 0;
}

static int
name_wanted(const struct stats_filter *f, const char *name)
{
	int i;

	if (f->nb_pats == 0)
		return 1;
	for (i = 0; i < f->nb_pats; i++)
		if (fnmatch(f->pats[i], name, 0) == 0)
			return 1;
	return 0;
}

/* Kind of figure key of section sec ("counter", "gauge", or NULL: text, or unknown to an
 * older keymapd: shown without a rate). */
static const char *
kind_of(const json_t *info, const char *sec, const char *key)
{
	return json_string_value(json_object_get(json_object_get(info, sec), key));
}

static int
is_counter(const json_t *info, const char *sec, const char *key)
{
	const char *k = kind_of(info, sec, key);

	/* Without /keymap/stats_info (an older keymapd): the table's rows as counters. */
	if (info == NULL)
		return strcmp(sec, "total") == 0;
	return k != NULL && strcmp(k, "counter") == 0;
}

/*
 * A copy of d (a /keymap/stats reply) with what f selects: the summary's figures, the
 * counter and gauge rows of "total" and of the selected workers' "wI", the sections, each
 * row kept when its name matches. @return the copy (the caller frees it), never NULL.
 */
static json_t *
stats_filter_apply(const json_t *d, const json_t *info, const struct stats_filter *f)
{
	json_t *out = json_object(), *sub, *v, *m;
	const char *key, *k2;
	uint64_t w;
	int bit, i, keep, counter;

	if (out == NULL)
		oom();
	json_object_foreach((json_t *)d, key, v)
	{
		if (!json_is_object(v)) {
			/* The summary: without filters, or when named (all of it, or the figures
			 * a name matches). */
			if ((f->sections == 0 && f->nb_workers == 0 && f->nb_pats == 0) ||
				(f->sections & SEC_SUMMARY) ||
				(f->nb_pats != 0 && f->nb_workers == 0 && name_wanted(f, key)) ||
				strcmp(key, "workers") == 0 || strcmp(key, "workers_listed") == 0)
				json_object_set(out, key, v);
			continue;
		}
		if (strcmp(key, "total") == 0) {
			keep = f->nb_workers == 0;
		} else if (key[0] == 'w' && key[1] >= '0' && key[1] <= '9') {
			keep = f->nb_workers == 0;
			w = strtoull(key + 1, NULL, 10);
			for (i = 0; i < f->nb_workers; i++)
				keep |= f->workers[i] == w;
		} else {
			bit = sec_bit(key);
			keep = f->sections == 0 || (bit != 0 && (f->sections & bit));
		}
		if (!keep)
			continue;
		sub = json_object();
		if (sub == NULL)
			oom();
		bit = strcmp(key, "total") == 0 || key[0] == 'w';
		json_object_foreach(v, k2, m)
		{
			if (!name_wanted(f, k2))
				continue;
			/* Counter and gauge rows of the worker columns: as the sections say. */
			counter = is_counter(info, "total", k2);
			if (bit && f->sections != 0 && !((f->sections & SEC_COUNTERS) && counter) &&
				!((f->sections & SEC_GAUGES) && !counter))
				continue;
			json_object_set(sub, k2, m);
		}
		if (json_object_size(sub) != 0)
			json_object_set(out, key, sub);
		json_decref(sub);
	}
	return out;
}

/* The column groups of a (filtered) sample: "total" if there, then "wI" in order. */
static unsigned int
groups_of(const json_t *d, char names[][16], unsigned int max)
{
	unsigned int n = 0;
	uint64_t listed = 0, w;

	if (json_object_get(d, "total") != NULL && n < max)
		snprintf(names[n++], 16, "total");
	if (jint(d, "workers_listed", &listed) != 0 && jint(d, "workers", &listed) != 0)
		listed = 0;
	/* One worker: its column is the total's (shown only when it is asked for alone). */
	for (w = 0; w < listed && n < max; w++) {
		snprintf(names[n], 16, "w%u", (unsigned int)(w & 0xffff));
		if (json_object_get(d, names[n]) != NULL &&
			(listed > 1 || json_object_get(d, "total") == NULL))
			n++;
	}
	return n;
}

/*
 * Section name of a stats sample: "port" (the port's counters, with the workers' RX and TX
 * queue drops beside them), "balance" (the re-sharding and placement thresholds in force,
 * the measured capacity, the most loaded worker's share of the mean), and the objects
 * keymapd sends only with some store drivers (the log driver's "store", "cache" and
 * "prefetch", totals of all workers): after a blank line, a row per member in keymapd's
 * order, in watch mode with its rate when it is a counter. A section with hits and misses
 * gets its hit ratio after the misses. Nothing when the sample has no such object.
 */
static void
print_stats_section(const json_t *d, const json_t *prev, const json_t *info, const char *name,
	double dt, int watch)
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
		if (watch) {
			if (is_counter(info, name, key) ||
				(info == NULL && strcmp(key, "id") != 0 && json_is_integer(m)))
				table_add_rate(&t, m, json_object_get(psec, key), dt);
			else
				table_add(&t, " ");
		}
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
 * The rows of the worker columns (total, then each worker listed) whose kind is counters
 * (or gauges): a row per figure, in watch mode each counter followed by its rate since the
 * previous sample (prev, dt seconds earlier; "-" in the first). @return rows printed.
 */
static int
print_worker_table(const json_t *d, const json_t *prev, const json_t *info, int counters, double dt,
	int watch, int blank)
{
	char names[4097][16];
	unsigned int ng = groups_of(d, names, 4097), g;
	const json_t *first, *cur;
	const char *key;
	int rows = 0, rate = watch && counters;
	struct table t;
	json_t *m;

	if (ng == 0)
		return 0;
	first = json_object_get(d, names[0]);
	table_init(&t, 1 + ng * (rate ? 2 : 1));
	for (g = 1; g < t.ncols; g++)
		table_right(&t, g);
	table_add(&t, counters ? "counter" : "gauge");
	for (g = 0; g < ng; g++) {
		table_add(&t, "%s", names[g]);
		if (rate)
			table_add(&t, "%s/s", names[g]);
	}
	json_object_foreach((json_t *)first, key, m)
	{
		if (is_counter(info, "total", key) != counters)
			continue;
		rows++;
		table_add(&t, "%s", key);
		for (g = 0; g < ng; g++) {
			cur = json_object_get(json_object_get(d, names[g]), key);
			table_add(&t, "%s", jfmt(cur));
			if (rate)
				table_add_rate(&t, cur,
					json_object_get(json_object_get(prev, names[g]), key), dt);
		}
	}
	if (rows != 0) {
		if (blank)
			putchar('\n');
		table_print(&t);
	}
	table_free(&t);
	return rows;
}

/*
 * One stats sample (filtered): a summary line, the counters (total and per-worker columns)
 * and the gauges, then the port, balance, store, cache and prefetch sections, whichever
 * the sample has.
 */
static void
print_stats(const json_t *d, const json_t *prev, const json_t *info, double dt, int watch)
{
	uint64_t workers = 0, v, win;
	int first = 1, rows;

	if (jint(d, "uptime_s", &v) == 0 && jint(d, "workers", &workers) == 0)
		summary_item(&first, "%llu worker%s", (unsigned long long)workers,
			workers == 1 ? "" : "s");
	if (jint(d, "uptime_s", &v) == 0)
		summary_item(&first, "up %llu s", (unsigned long long)v);
	if (json_is_number(json_object_get(d, "requests_per_s")))
		summary_item(&first, "%.1f requests/s",
			json_number_value(json_object_get(d, "requests_per_s")));
	if (jint(d, "cycles_per_req", &v) == 0)
		summary_item(&first, "%llu cycles/request", (unsigned long long)v);
	if (jint(d, "latency_window_s", &win) == 0 && jint(d, "latency_p50_ns", &v) == 0)
		summary_item(&first, "latency of the last %llu s p50 %llu ns",
			(unsigned long long)win, (unsigned long long)v);
	else if (jint(d, "latency_p50_ns", &v) == 0) /* an older keymapd: since its start */
		summary_item(&first, "latency p50 %llu ns", (unsigned long long)v);
	if (jint(d, "latency_p99_ns", &v) == 0)
		summary_item(&first, "p99 %llu ns", (unsigned long long)v);
	if (jint(d, "latency_p999_ns", &v) == 0)
		summary_item(&first, "p99.9 %llu ns", (unsigned long long)v);
	if (!first)
		putchar('\n');
	rows = print_worker_table(d, prev, info, 1, dt, watch, !first);
	print_worker_table(d, prev, info, 0, dt, watch, !first || rows != 0);
	print_stats_section(d, prev, info, "port", dt, watch);
	print_stats_section(d, prev, info, "balance", dt, watch);
	print_stats_section(d, prev, info, "store", dt, watch);
	print_stats_section(d, prev, info, "cache", dt, watch);
	print_stats_section(d, prev, info, "prefetch", dt, watch);
}

/* Whether a filtered sample has anything to show besides "workers". */
static int
stats_has_rows(const json_t *d)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)d, key, v)
	{
		if (strcmp(key, "workers") != 0 && strcmp(key, "workers_listed") != 0)
			return 1;
	}
	return 0;
}

/* stats [--watch [N]] [--interval SECONDS] [SECTION | worker N | NAME]... */
static int
stats_args(int argc, char **argv, struct stats_filter *f, uint64_t *count, int *watch,
	int64_t *period_ms)
{
	const char *n;
	double secs;
	int i, bit;

	*count = 1;
	*watch = 0;
	*period_ms = WATCH_PERIOD_MS;
	for (i = 1; i < argc; i++) {
		n = NULL;
		if (strcmp(argv[i], "--watch") == 0) {
			/* N is optional: a number right after --watch. */
			n = i + 1 < argc && argv[i + 1][0] >= '0' && argv[i + 1][0] <= '9'
				    ? argv[++i]
				    : "";
		} else if (strncmp(argv[i], "--watch=", 8) == 0) {
			n = argv[i] + 8;
		} else if (strcmp(argv[i], "--interval") == 0 ||
			   strncmp(argv[i], "--interval=", 11) == 0) {
			const char *v =
				argv[i][10] == '=' ? argv[i] + 11 : (i + 1 < argc ? argv[++i] : "");
			char *end;

			secs = strtod(v, &end);
			if (v[0] == '\0' || *end != '\0' || !(secs >= 0.1 && secs <= 3600))
				return usage_error("stats: --interval takes seconds from 0.1 to "
						   "3600, not '%s'",
					v);
			*period_ms = (int64_t)(secs * 1000 + 0.5);
			if (!*watch) {
				*watch = 1;
				*count = 0;
			}
			continue;
		} else if (strcmp(argv[i], "worker") == 0) {
			if (i + 1 >= argc || f->nb_workers == FILTER_MAX ||
				km_util_parse_u64(
					argv[i + 1], 0, 4095, &f->workers[f->nb_workers]) != 0)
				return usage_error("stats: worker takes a worker number (0-4095), "
						   "not '%s'",
					i + 1 < argc ? argv[i + 1] : "");
			f->nb_workers++;
			i++;
			continue;
		} else if ((bit = sec_bit(argv[i])) != 0) {
			f->sections |= bit;
			continue;
		} else if (argv[i][0] == '-') {
			return usage_error("stats: unknown option '%s'", argv[i]);
		} else if (argv[i][0] >= '0' && argv[i][0] <= '9') {
			return usage_error(
				"stats: '%s' is not a section, worker N or a name", argv[i]);
		} else {
			if (f->nb_pats == FILTER_MAX)
				return usage_error("stats: at most %d names", FILTER_MAX);
			f->pats[f->nb_pats++] = argv[i];
			continue;
		}
		*watch = 1;
		*count = 0; /* until interrupted */
		if (n[0] != '\0' && km_util_parse_u64(n, 1, UINT64_MAX, count) != 0)
			return usage_error(
				"stats: --watch takes a number of samples >= 1, not '%s'", n);
	}
	return -1;
}

int
cmd_stats(struct ctl *c, int argc, char **argv)
{
	json_t *root, *d, *info_root = NULL, *info = NULL, *prev = NULL, *fd;
	struct stats_filter f = {.sections = 0};
	uint64_t count, i, listed = 0;
	int64_t t0, t, prev_t = 0, wait, period;
	int watch, tty, rc;

	rc = stats_args(argc, argv, &f, &count, &watch, &period);
	if (rc >= 0)
		return rc;
	/* Counters and gauges, from keymapd's own table (an older keymapd: without). */
	c->quiet_unknown = 1;
	rc = tel_query(c, "/keymap/stats_info", &info_root, &info);
	c->quiet_unknown = 0;
	if (rc == EXIT_REFUSED) {
		info_root = NULL;
		info = NULL;
	} else if (rc != 0) {
		return rc;
	}
	tty = isatty(STDOUT_FILENO);
	t0 = now_ms();
	rc = 0;
	for (i = 0; count == 0 || i < count; i++) {
		if (i > 0) {
			/* One sample per period, whatever each takes. */
			wait = t0 + (int64_t)i * period - now_ms();
			if (wait > 0)
				poll(NULL, 0, (int)wait);
		}
		rc = tel_query(c, "/keymap/stats", &root, &d);
		if (rc != 0)
			break;
		t = now_ms();
		if (i == 0 && f.nb_workers != 0 &&
			(jint(d, "workers_listed", &listed) == 0 ||
				jint(d, "workers", &listed) == 0)) {
			for (int k = 0; k < f.nb_workers; k++)
				if (f.workers[k] >= listed) {
					errmsg("stats: no worker %llu (keymapd lists %llu)",
						(unsigned long long)f.workers[k],
						(unsigned long long)listed);
					json_decref(root);
					rc = EXIT_REFUSED;
					goto out;
				}
		}
		fd = stats_filter_apply(d, info, &f);
		json_decref(root);
		if (!stats_has_rows(fd)) {
			errmsg("stats: nothing matches (the names are those of keymapctl stats)");
			json_decref(fd);
			rc = EXIT_REFUSED;
			break;
		}
		if (i > 0 && !(watch && tty && !c->json))
			putchar('\n');
		if (c->json) {
			print_json(fd);
		} else {
			if (watch && tty)
				fputs("\033[H\033[2J", stdout); /* cursor home, clear screen */
			print_stats(fd, prev, info, (double)(t - prev_t) / 1000.0, watch);
		}
		fflush(stdout);
		json_decref(prev);
		prev = fd;
		prev_t = t;
	}
out:
	json_decref(prev);
	json_decref(info_root);
	return rc;
}
