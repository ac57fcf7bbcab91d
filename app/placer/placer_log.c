/* SPDX-License-Identifier: BSD-3-Clause */
/* keymap-placer's log: one line per event on stderr, with the time (UTC) and a level. */

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "placer.h"

static atomic_int verbose; /* main: rw before the lease thread starts; any thread: ro */

static const char *const level_names[] = {
	[PLACER_ERR] = "ERROR",
	[PLACER_WARNING] = "WARNING",
	[PLACER_NOTICE] = "NOTICE",
	[PLACER_INFO] = "INFO",
	[PLACER_DEBUG] = "DEBUG",
};

void
placer_log_verbose(int on)
{
	atomic_store(&verbose, on);
}

void
placer_log(enum placer_level level, const char *fmt, ...)
{
	char line[1024];
	struct timeval tv;
	struct tm tm;
	va_list ap;
	size_t n;
	int k;

	if (level > PLACER_NOTICE && !atomic_load(&verbose))
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	k = snprintf(line + n, sizeof(line) - n,
		".%03ldZ %s keymap-placer: ", (long)tv.tv_usec / 1000, level_names[level]);
	n += k > 0 ? (size_t)k : 0;
	va_start(ap, fmt);
	k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	n += k > 0 ? (size_t)k : 0;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line: lines of the two threads do not mix. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}
