/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymapctl top: a live view of keymapd, one frame per interval: throughput, latency,
 * cache hit ratio and prefetch accuracy of the last interval, each worker's load, the
 * hottest shards. On a terminal each frame replaces the previous one and q (or Ctrl-C)
 * quits; otherwise frames follow one another (-n N: N frames).
 */

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <km_util.h>

#include "keymapctl.h"

#define TOP_SHARDS 10
#define BAR_WIDTH  20

static struct termios saved_tio;
static int tio_saved;
static volatile sig_atomic_t stop_req;

static void
tty_restore(void)
{
	if (tio_saved) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
		tio_saved = 0;
	}
	if (isatty(STDOUT_FILENO))
		fputs("\033[?25h", stdout); /* cursor shown again */
}

static void
on_stop(int sig)
{
	(void)sig;
	stop_req = 1;
}

/* Keys one by one, without echo (q quits); restored at exit. */
static void
tty_raw(void)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tio) != 0)
		return;
	t = saved_tio;
	t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) {
		tio_saved = 1;
		atexit(tty_restore);
	}
}

/* Wait up to ms for the next frame; @return 1 when q was pressed or a signal came. */
static int
wait_or_quit(int64_t ms)
{
	struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
	int64_t end = now_ms() + ms, left;
	char ch;

	while (!stop_req && (left = end - now_ms()) > 0) {
		if (!tio_saved) {
			poll(NULL, 0, (int)left);
			continue;
		}
		if (poll(&p, 1, (int)left) > 0 && read(STDIN_FILENO, &ch, 1) == 1 &&
			(ch == 'q' || ch == 'Q'))
			return 1;
	}
	return stop_req != 0;
}

/* Difference of counter key of section sec between two samples (0 when unknown); without
 * a previous sample, the counter since keymapd started. */
static double
delta(const json_t *cur, const json_t *prev, const char *sec, const char *key)
{
	uint64_t a, b = 0;

	if (jint(json_object_get(cur, sec), key, &a) != 0 ||
		(prev != NULL && jint(json_object_get(prev, sec), key, &b) != 0) || a < b)
		return 0;
	return (double)(a - b);
}

/* "12.3 us" from nanoseconds. */
static const char *
dur(uint64_t ns, char *buf, size_t len)
{
	if (ns < 10000)
		snprintf(buf, len, "%llu ns", (unsigned long long)ns);
	else if (ns < 1000000)
		snprintf(buf, len, "%.1f us", (double)ns / 1e3);
	else
		snprintf(buf, len, "%.1f ms", (double)ns / 1e6);
	return buf;
}

static void
bar(char *out, size_t len, double frac)
{
	int n = (int)(frac * BAR_WIDTH + 0.5), i;
	size_t k = 0;

	if (n < 0)
		n = 0;
	if (n > BAR_WIDTH)
		n = BAR_WIDTH;
	for (i = 0; i < BAR_WIDTH && k + 1 < len; i++)
		out[k++] = i < n ? '#' : '.';
	out[k] = '\0';
}

/* One frame from status st, stats s (and the previous stats ps, dt s before), shards sh. */
static void
frame(const json_t *st, const json_t *s, const json_t *ps, double dt, const json_t *sh,
	const json_t *pf)
{
	uint64_t workers = 0, v, win = 0, lat[3] = {0, 0, 0}, w;
	double hits, misses, used, unused;
	char name[16], b1[32], b2[32], b3[32], g[BAR_WIDTH + 1];
	const json_t *ids, *rates, *keys, *owners, *ws;
	size_t n, i, j, top[TOP_SHARDS], ntop = 0;
	struct table t;

	jint(s, "workers", &workers);
	printf("keymapd %s pid %s, up %s s, %llu worker%s, %s shards (epoch %s), %.1f "
	       "requests/s\n",
		jfmt(json_object_get(st, "version")), jfmt(json_object_get(st, "pid")),
		jfmt(json_object_get(s, "uptime_s")), (unsigned long long)workers,
		workers == 1 ? "" : "s", jfmt(json_object_get(st, "shards")),
		jfmt(json_object_get(st, "epoch")),
		json_number_value(json_object_get(s, "requests_per_s")));
	jint(s, "latency_window_s", &win);
	jint(s, "latency_p50_ns", &lat[0]);
	jint(s, "latency_p99_ns", &lat[1]);
	jint(s, "latency_p999_ns", &lat[2]);
	printf("latency of the last %llu s: p50 %s, p99 %s, p99.9 %s\n", (unsigned long long)win,
		dur(lat[0], b1, sizeof(b1)), dur(lat[1], b2, sizeof(b2)),
		dur(lat[2], b3, sizeof(b3)));
	if (json_object_get(s, "cache") != NULL) {
		hits = delta(s, ps, "cache", "hits");
		misses = delta(s, ps, "cache", "misses");
		if (hits + misses > 0)
			printf("cache hit ratio %.1f%% of %.0f lookups",
				100 * hits / (hits + misses), hits + misses);
		else
			printf("cache hit ratio - (no lookups)");
		used = delta(s, ps, "prefetch", "used");
		unused = delta(s, ps, "prefetch", "unused");
		if (used + unused > 0)
			printf(", prefetch accuracy %.1f%% of %.0f prefetched",
				100 * used / (used + unused), used + unused);
		else if (pf != NULL && json_object_get(pf, "accuracy") != NULL)
			printf(", prefetch accuracy %s (since start)",
				jfmt(json_object_get(pf, "accuracy")));
		if (ps != NULL)
			printf(" (last %.1f s)\n", dt);
		else
			printf(" (since start)\n");
	} else {
		printf("cache and prefetch: none (the mem store keeps every value in DRAM)\n");
	}

	putchar('\n');
	table_init(&t, 6);
	for (i = 1; i < 5; i++)
		table_right(&t, (unsigned int)i);
	table_add(&t, "worker");
	table_add(&t, "requests/s");
	table_add(&t, "busy");
	table_add(&t, "shards");
	table_add(&t, "capacity/s");
	table_add(&t, "load");
	for (w = 0; w < workers; w++) {
		snprintf(name, sizeof(name), "w%u", (unsigned int)(w & 0xffff));
		ws = json_object_get(s, name);
		if (ws == NULL)
			break; /* not listed (very many workers) */
		table_add(&t, "%s", name);
		table_add(&t, "%s", jfmt(json_object_get(ws, "req_per_s")));
		v = 0;
		jint(ws, "busy_pct", &v);
		table_add(&t, "%llu%%", (unsigned long long)v);
		table_add(&t, "%s", jfmt(json_object_get(ws, "owned_shards")));
		table_add(&t, "%s", jfmt(json_object_get(ws, "capacity")));
		bar(g, sizeof(g), (double)v / 100.0);
		table_add(&t, "%s", g);
	}
	table_print(&t);
	table_free(&t);

	/* The hottest shards, by decayed request rate. */
	ids = json_object_get(sh, "id");
	rates = json_object_get(sh, "rate");
	keys = json_object_get(sh, "keys");
	owners = json_object_get(sh, "owner");
	n = json_array_size(ids);
	for (i = 0; i < n; i++) {
		double r = json_number_value(json_array_get(rates, i));

		for (j = ntop; j > 0 && json_number_value(json_array_get(rates, top[j - 1])) < r;
			j--)
			if (j < TOP_SHARDS)
				top[j] = top[j - 1];
		if (j < TOP_SHARDS) {
			top[j] = i;
			if (ntop < TOP_SHARDS)
				ntop++;
		}
	}
	putchar('\n');
	table_init(&t, 5);
	for (i = 1; i < 5; i++)
		table_right(&t, (unsigned int)i);
	table_add(&t, "shard");
	table_add(&t, "owner");
	table_add(&t, "keys");
	table_add(&t, "requests/s");
	table_add(&t, "share");
	for (i = 0; i < ntop; i++) {
		double r = json_number_value(json_array_get(rates, top[i]));
		double all = json_number_value(json_object_get(s, "requests_per_s"));

		shard_prefix(
			(uint64_t)json_integer_value(json_array_get(ids, top[i])), b1, sizeof(b1));
		table_add(&t, "%s", b1);
		table_add(&t, "w%s", jfmt(json_array_get(owners, top[i])));
		table_add(&t, "%s", jfmt(json_array_get(keys, top[i])));
		table_add(&t, "%.0f", r);
		if (all > 0)
			table_add(&t, "%.1f%%", 100 * r / all);
		else
			table_add(&t, "-");
	}
	table_print(&t);
	table_free(&t);
	if (n > ntop)
		printf("(the %zu hottest of %zu shards)\n", ntop, n);
}

int
cmd_top(struct ctl *c, int argc, char **argv)
{
	json_t *sroot = NULL, *st, *root = NULL, *s, *prev = NULL, *sh = NULL, *pfr = NULL, *pf;
	uint64_t frames = 0, i;
	int64_t period = 1000, t, prev_t = 0;
	int tty = isatty(STDOUT_FILENO), k, rc = 0;
	double secs;
	char *end;

	for (k = 1; k < argc; k++) {
		if ((strcmp(argv[k], "--interval") == 0 || strcmp(argv[k], "-d") == 0) &&
			k + 1 < argc) {
			secs = strtod(argv[++k], &end);
			if (argv[k][0] == '\0' || *end != '\0' || !(secs >= 0.1 && secs <= 3600))
				return usage_error(
					"top: --interval takes seconds from 0.1 to 3600, not '%s'",
					argv[k]);
			period = (int64_t)(secs * 1000 + 0.5);
		} else if (strcmp(argv[k], "-n") == 0 && k + 1 < argc) {
			if (km_util_parse_u64(argv[++k], 1, UINT64_MAX, &frames) != 0)
				return usage_error(
					"top: -n takes a number of frames >= 1, not '%s'", argv[k]);
		} else {
			return usage_error("top: unexpected argument '%s'", argv[k]);
		}
	}
	if (c->json)
		return usage_error("top: no --json (use stats --watch --json)");
	signal(SIGINT, on_stop);
	signal(SIGTERM, on_stop);
	signal(SIGHUP, on_stop); /* the terminal went away */
	signal(SIGQUIT, on_stop);
	if (tty) {
		tty_raw();
		fputs("\033[?25l", stdout); /* no cursor while it redraws */
	}
	for (i = 0; frames == 0 || i < frames; i++) {
		if (i > 0 && wait_or_quit(period))
			break;
		rc = tel_query(c, "/keymap/status", &sroot, &st);
		if (rc == 0)
			rc = tel_query(c, "/keymap/stats", &root, &s);
		if (rc == 0)
			rc = shards_fetch(c, &sh);
		if (rc != 0)
			break;
		pf = NULL;
		if (json_object_get(s, "prefetch") != NULL) {
			c->quiet_unknown = 1;
			if (tel_query(c, "/keymap/prefetch", &pfr, &pf) != 0)
				pf = NULL;
			c->quiet_unknown = 0;
		}
		t = now_ms();
		if (tty)
			fputs("\033[H\033[2J", stdout);
		else if (i > 0)
			putchar('\n');
		frame(st, s, prev, (double)(t - prev_t) / 1000.0, sh, pf);
		if (tty)
			printf("\n(every %.1f s; q quits)", (double)period / 1000.0);
		fflush(stdout);
		json_decref(sroot);
		json_decref(sh);
		json_decref(pfr);
		sroot = sh = pfr = NULL;
		json_decref(prev);
		prev = json_incref(s);
		json_decref(root);
		root = NULL;
		prev_t = t;
	}
	json_decref(prev);
	if (tty) {
		putchar('\n');
		tty_restore();
	}
	return rc;
}
