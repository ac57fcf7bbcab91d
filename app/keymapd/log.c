/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * keymapd's log stream: every message (keymapd's, EAL's, the drivers') goes through rte_log
 * into one stdio stream whose writes land here; each line gets a timestamp (UTC), the
 * message's level and its log type ("keymap.cluster", "lib.eal", "pmd.net.tap") and goes
 * to one file descriptor: stderr, or [log] file (then stdout and stderr are that file too,
 * so that nothing printed directly goes elsewhere). Under systemd with stderr connected to
 * the journal (JOURNAL_STREAM), lines carry the syslog priority prefix "<N>" instead of the
 * timestamp (the journal stamps them). [log] syslog = 1 also sends every line to syslog.
 *
 * The stream is line-buffered and written under its stdio lock: the state below is only
 * touched with that lock held (stream_write runs inside a locked vfprintf or fflush;
 * km_log_configure takes the lock to change it). rte_vlog's vfprintf and fflush take the
 * lock one after the other, so another thread's line may come between two pieces of one
 * message longer than the stream's buffer; lines are never mixed inside.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <rte_log.h>

#include "control.h"
#include "keymapd.h"

#define LINE_MAX_OUT 4096 /* a longer line is written in pieces, the prefix before the first */
#define TYPES_MAX    512  /* log types whose names are looked up (rte_log_dump) */

int km_logtypes[KM_LOG_NB] = {
	RTE_LOGTYPE_USER1,
	RTE_LOGTYPE_USER1,
	RTE_LOGTYPE_USER1,
	RTE_LOGTYPE_USER1,
	RTE_LOGTYPE_USER1,
};

static const char *const comp_names[KM_LOG_NB] = {
	[KM_LOG_MAIN] = "keymap.main",
	[KM_LOG_CONTROL] = "keymap.control",
	[KM_LOG_CLUSTER] = "keymap.cluster",
	[KM_LOG_REPL] = "keymap.repl",
	[KM_LOG_DATAPATH] = "keymap.datapath",
};

static const char *const level_names[] = {
	"",
	"emerg",
	"alert",
	"crit",
	"err",
	"warning",
	"notice",
	"info",
	"debug",
};

static struct {
	FILE *stream;  /* what rte_log writes to */
	int fd;        /* where lines go: 2, or the file dup'ed onto 1 and 2 */
	int saved_out; /* stdout and stderr as keymapd started (to go back to them) */
	int saved_err;
	int journal;   /* stderr is the journal's stream: "<N>" prefixes */
	int to_syslog; /* [log] syslog */
	int at_start;  /* the next byte begins a line */
	char path[KM_CONF_STR_MAX];
	char *names[TYPES_MAX]; /* log type names, from rte_log_dump */
	int nb_names;
	char line[LINE_MAX_OUT + 128];
} lg = {.fd = 2, .saved_out = -1, .saved_err = -1, .at_start = 1};

/* The names of the registered log types (DPDK 22.11 has no call for one type's name). */
static void
names_load(void)
{
	char *buf = NULL, *p, *nl, name[64];
	size_t len = 0;
	FILE *f;
	int id;

	f = open_memstream(&buf, &len);
	if (f == NULL)
		return;
	rte_log_dump(f);
	fclose(f);
	for (p = buf; p != NULL && *p != '\0'; p = nl) {
		nl = strchr(p, '\n');
		if (nl != NULL)
			*nl++ = '\0';
		if (sscanf(p, "id %d: %63[^,]", &id, name) == 2 && id >= 0 && id < TYPES_MAX &&
			lg.names[id] == NULL) {
			lg.names[id] = strdup(name);
			if (id >= lg.nb_names)
				lg.nb_names = id + 1;
		}
	}
	free(buf);
}

static const char *
type_name(int type)
{
	int i;

	for (i = 0; i < KM_LOG_NB; i++)
		if (type == km_logtypes[i] && type != RTE_LOGTYPE_USER1)
			return comp_names[i];
	if (type < 0 || type >= TYPES_MAX)
		return "dpdk";
	if (type >= lg.nb_names || lg.names[type] == NULL)
		names_load();
	return type < lg.nb_names && lg.names[type] != NULL ? lg.names[type] : "dpdk";
}

/* The prefix of a line of a message of this level and type, in lg.line. @return its
 * length. */
static size_t
prefix(uint32_t level, int type)
{
	struct timespec ts;
	struct tm tm;
	size_t n = 0;

	if (level < 1 || level > RTE_LOG_DEBUG)
		level = RTE_LOG_INFO;
	if (lg.journal)
		return (size_t)snprintf(lg.line, sizeof(lg.line), "<%u>%s %s: ", level - 1,
			level_names[level], type_name(type));
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(lg.line, sizeof(lg.line), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(lg.line + n, sizeof(lg.line) - n,
		".%03ldZ %s %s: ", ts.tv_nsec / 1000000, level_names[level], type_name(type));
	return n;
}

static void
out(const char *p, size_t len)
{
	ssize_t w;

	while (len > 0) {
		w = write(lg.fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* nowhere to say it */
		p += w;
		len -= (size_t)w;
	}
}

static ssize_t
stream_write(void *cookie, const char *buf, size_t len)
{
	uint32_t level = (uint32_t)rte_log_cur_msg_loglevel();
	int type = rte_log_cur_msg_logtype();
	size_t done = 0, n, pre, take;
	const char *nl;

	(void)cookie;
	while (done < len) {
		nl = memchr(buf + done, '\n', len - done);
		n = nl != NULL ? (size_t)(nl - (buf + done)) + 1 : len - done;
		/* A piece of a line: its own prefix only at the line's start. */
		pre = lg.at_start ? prefix(level, type) : 0;
		take = n < LINE_MAX_OUT ? n : LINE_MAX_OUT;
		memcpy(lg.line + pre, buf + done, take);
		out(lg.line, pre + take);
		if (lg.to_syslog && take > 0)
			syslog((int)(level >= 1 && level <= RTE_LOG_DEBUG ? level - 1 : LOG_INFO),
				"%s: %.*s", type_name(type),
				(int)(take - (buf[done + take - 1] == '\n')), buf + done);
		lg.at_start = buf[done + take - 1] == '\n';
		done += take;
	}
	return (ssize_t)len;
}

/* Whether fd 2 is the stream JOURNAL_STREAM names (systemd.exec(5)). */
static int
stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int
km_log_init(const char *level)
{
	static const cookie_io_functions_t io = {.write = stream_write};
	int i, rc;

	lg.journal = stderr_is_journal();
	lg.stream = fopencookie(NULL, "w", io);
	if (lg.stream == NULL)
		return -errno;
	setvbuf(lg.stream, NULL, _IOLBF, 0);
	if (rte_openlog_stream(lg.stream) < 0)
		return -EINVAL;
	for (i = 0; i < KM_LOG_NB; i++) {
		rc = rte_log_register_type_and_pick_level(comp_names[i], RTE_LOG_INFO);
		if (rc >= 0)
			km_logtypes[i] = rc;
	}
	/* [log] level now: EAL's --log-level=keymap.*:LEVEL, parsed later, wins. */
	rte_log_set_level_pattern("keymap.*", (uint32_t)km_log_level_of(level));
	return 0;
}

FILE *
km_log_stream(void)
{
	return lg.stream != NULL ? lg.stream : stderr;
}

void
km_log_text(int comp, uint32_t level, const char *text)
{
	const char *p = text, *nl;

	while (p != NULL && *p != '\0') {
		nl = strchr(p, '\n');
		rte_log(level, km_logtypes[comp], "%.*s\n",
			(int)(nl != NULL ? nl - p : (long)strlen(p)), p);
		p = nl != NULL ? nl + 1 : NULL;
	}
}

/* Point fd 1 and 2 at fd (-1: back to what they were at start). */
static int
redirect(int fd)
{
	if (fd < 0) {
		if (lg.saved_out < 0)
			return 0;
		if (dup2(lg.saved_out, 1) < 0 || dup2(lg.saved_err, 2) < 0)
			return -errno;
		return 0;
	}
	if (lg.saved_out < 0) {
		lg.saved_out = fcntl(1, F_DUPFD_CLOEXEC, 3);
		lg.saved_err = fcntl(2, F_DUPFD_CLOEXEC, 3);
		if (lg.saved_out < 0 || lg.saved_err < 0) {
			int rc = -errno;

			if (lg.saved_out >= 0)
				close(lg.saved_out);
			if (lg.saved_err >= 0)
				close(lg.saved_err);
			lg.saved_out = lg.saved_err = -1;
			return rc;
		}
	}
	if (dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
		return -errno;
	return 0;
}

int
km_log_configure(const char *file, int use_syslog, char *err, size_t errlen)
{
	int fd, rc;

	fflush(stdout);
	if (file[0] != '\0') {
		fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd >= 0 && fd <= 2) {
			/* keymapd started with stdout or stderr closed: not one of them. */
			rc = fcntl(fd, F_DUPFD_CLOEXEC, 3);
			close(fd);
			fd = rc;
		}
		if (fd < 0) {
			rc = -errno;
			snprintf(err, errlen, "[log] file %s: %s", file, strerror(-rc));
			return rc;
		}
		rc = redirect(fd);
		close(fd);
	} else {
		rc = redirect(-1);
	}
	if (rc < 0) {
		snprintf(err, errlen, "[log] file %s: %s", file[0] != '\0' ? file : "(stderr)",
			strerror(-rc));
		return rc;
	}
	/* The state stream_write reads: under the stream's lock, as it is. */
	if (lg.stream != NULL)
		flockfile(lg.stream);
	snprintf(lg.path, sizeof(lg.path), "%s", file);
	if (use_syslog && !lg.to_syslog)
		openlog("keymapd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	else if (!use_syslog && lg.to_syslog)
		closelog();
	lg.to_syslog = use_syslog;
	/* A file is not the journal, whatever JOURNAL_STREAM says. */
	lg.journal = file[0] == '\0' && stderr_is_journal();
	if (lg.stream != NULL)
		funlockfile(lg.stream);
	return 0;
}

int
km_log_reopen(char *err, size_t errlen)
{
	char path[KM_CONF_STR_MAX];

	if (lg.path[0] == '\0')
		return 0;
	snprintf(path, sizeof(path), "%s", lg.path);
	return km_log_configure(path, lg.to_syslog, err, errlen);
}
