/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymapctl: control-plane command line of keymapd (docs/keymapctl.md).
 *
 * It speaks DPDK telemetry v2 on keymapd's socket, an AF_UNIX SOCK_SEQPACKET socket: the
 * server sends a hello JSON on connect, then answers each "/cmd[,params]" message with
 * one JSON message {"/cmd": DATA}. DATA is null for a command the server does not know,
 * and {"error": "..."} for one keymapd refused. The metrics command also speaks HTTP/1.0
 * to keymapd's Prometheus endpoint.
 *
 * Exit status: 0 success; 1 bad usage or transport error (keymapd not running, timeout,
 * unreadable reply); 2 keymapd refused the command or does not know it.
 */

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <km_util.h> /* KM_KEY_MAX */

#define EXIT_USAGE     1
#define EXIT_TRANSPORT 1
#define EXIT_REFUSED   2

#define TEL_SOCKET_NAME    "dpdk_telemetry.v2"
#define TEL_DEFAULT_PREFIX "keymap"
/* The server reads a request into 1024 bytes, its terminating NUL included. */
#define TEL_REQ_MAX 1023
/* Reply size when the hello does not announce max_output_len, and the most we accept. */
#define TEL_OUT_DEFAULT 16384
#define TEL_OUT_LIMIT   (16u << 20)

#define TIMEOUT_DEFAULT_MS 5000
#define RESHARD_TIMEOUT_MS 60000 /* keymapd gives a split, merge, tier or compact as long */
#define WATCH_PERIOD_MS    1000
/* A map that changes under the pager this many times in a row is reported, not shown. */
#define SHARDS_ATTEMPTS 5
#define HTTP_REPLY_MAX  (64u << 20)

#define SUN_PATH_MAX sizeof(((struct sockaddr_un *)NULL)->sun_path)

static const char usage_text[] =
	"usage: keymapctl [-f FILE_PREFIX | -s SOCKET] [--json] [-T TIMEOUT_S] COMMAND [ARGS]\n"
	"\n"
	"commands:\n"
	"  status                     keymapd, its port and its shard map in short\n"
	"  stats [--watch [N]]        counters, total and per worker; --watch: a sample every\n"
	"                             second with rates, N times (default: until interrupted)\n"
	"  shards                     every shard: depth, prefix, owner, keys, bytes, rate, tier\n"
	"  config [SECTION.KEY]       every tunable and whether it can change while running,\n"
	"                             or the value of one\n"
	"  set SECTION.KEY VALUE      change a tunable while running (or SECTION.KEY=VALUE)\n"
	"  split ID                   split shard ID into 2*ID and 2*ID+1\n"
	"  merge ID                   merge shard ID and its buddy ID^1 into ID/2\n"
	"  move ID WORKER             give shard ID to worker WORKER\n"
	"  tier ID hot|cold           move shard ID to the cold tier (compressed segments) or\n"
	"                             back to the hot one (log store)\n"
	"  compact ID                 rewrite shard ID's log without its dead records (log store)\n"
	"  prefetch KEY               read KEY into its worker's cache ahead of requests\n"
	"  log-level [LEVEL]          show or set the level of the keymap.* logs\n"
	"  metrics [--metrics-url HOST:PORT]\n"
	"                             print the Prometheus page (address from status)\n"
	"  raw /CMD[,PARAMS]          send any telemetry command, print the JSON it returns\n"
	"\n"
	"options (before the command):\n"
	"  -f, --file-prefix PREFIX   keymapd's EAL --file-prefix (default keymap); the socket\n"
	"                             is RUNTIME_DIR/dpdk/PREFIX/dpdk_telemetry.v2, RUNTIME_DIR\n"
	"                             being $RUNTIME_DIRECTORY if set, else /var/run for root,\n"
	"                             else $XDG_RUNTIME_DIR or /tmp (as DPDK's EAL)\n"
	"  -s, --socket PATH          telemetry socket path (instead of -f)\n"
	"      --json                 print keymapd's JSON data instead of a table\n"
	"  -T, --timeout SECONDS      to connect, and for each reply (default 5; 60 for\n"
	"                             split, merge, move, tier and compact)\n"
	"  -h, --help                 this text\n"
	"\n"
	"exit status: 0 success, 1 bad usage or transport error (keymapd not running, timeout,\n"
	"             unreadable reply), 2 refused by keymapd or unknown to it\n";

struct ctl {
	/* From the command line. */
	char path[SUN_PATH_MAX];
	int timeout_ms;
	int json;
	const char *metrics_url;
	const char *cmd; /* keymapctl command, for messages */
	/* The telemetry connection, opened by the first request. */
	int fd;
	char *buf;      /* one reply, NUL-terminated */
	size_t buf_len; /* max_output_len + 1 */
};

/* printf-like helpers, checked by the compiler. */
struct table;
static void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void table_add(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void table_kv(struct table *t, const char *label, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int tel_queryf(struct ctl *c, json_t **root, json_t **data, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void summary_item(int *first, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
errmsg(const char *fmt, ...)
{
	va_list ap;

	fputs("keymapctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A usage error: why, then the usage line. @return EXIT_USAGE */
static int
usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("keymapctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	/* The first line of the usage text, and where the rest is. */
	fprintf(stderr, "%.*s(keymapctl --help lists the commands and options)\n",
		(int)(strchr(usage_text, '\n') - usage_text + 1), usage_text);
	return EXIT_USAGE;
}

static void
oom(void)
{
	errmsg("out of memory");
	exit(EXIT_TRANSPORT);
}

static void *
xrealloc(void *p, size_t len)
{
	p = realloc(p, len);
	if (p == NULL)
		oom();
	return p;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double
timeout_s(const struct ctl *c)
{
	return c->timeout_ms / 1000.0;
}

/* Wait until fd is ready for events or the deadline passes.
 * @return 1 ready (or in error: the next call says which), 0 timed out, -1 errno. */
static int
wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	int64_t left;
	int rc;

	for (;;) {
		left = deadline - now_ms();
		if (left < 0)
			left = 0;
		rc = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (rc > 0)
			return 1;
		if (rc == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

/*
 * JSON value as text, in one of a few rotating static buffers (several may appear in one
 * printf): "-" when absent or null, integers in full, reals with one decimal (rates),
 * arrays as comma-separated items, objects as compact JSON.
 */
static const char *
jfmt(const json_t *v)
{
	static char bufs[8][1024];
	static unsigned int next;
	char *b = bufs[next++ % 8];
	size_t i, n;
	char *s;

	if (v == NULL || json_is_null(v))
		return "-";
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(b, sizeof(bufs[0]), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	} else if (json_is_real(v)) {
		snprintf(b, sizeof(bufs[0]), "%.1f", json_real_value(v));
	} else if (json_is_boolean(v)) {
		snprintf(b, sizeof(bufs[0]), "%s", json_is_true(v) ? "yes" : "no");
	} else if (json_is_array(v)) {
		b[0] = '\0';
		for (i = 0, n = 0; i < json_array_size(v) && n < sizeof(bufs[0]); i++) {
			const json_t *e = json_array_get(v, i);
			const char *t = json_is_string(e) ? json_string_value(e) : NULL;
			char num[32];

			if (t == NULL && json_is_integer(e)) {
				snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
					json_integer_value(e));
				t = num;
			}
			n += snprintf(b + n, sizeof(bufs[0]) - n, "%s%s", i ? "," : "",
				t != NULL ? t : "?");
		}
	} else {
		s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		snprintf(b, sizeof(bufs[0]), "%s", s != NULL ? s : "?");
		free(s);
	}
	return b;
}

/* Non-negative integer member. @return 0, or -1 when absent or of another type. */
static int
jint(const json_t *obj, const char *key, uint64_t *out)
{
	const json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static void
print_json(const json_t *v)
{
	if (json_dumpf(v, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY) != 0)
		oom();
	putchar('\n');
}

/*
 * Aligned text tables: cells are added row by row, left to right; numeric columns are
 * right-aligned, their header included.
 */
struct table {
	unsigned int ncols;
	size_t ncells;
	size_t cap;
	char **cells;
	unsigned char *right; /* per column */
};

static void
table_init(struct table *t, unsigned int ncols)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
	t->right = calloc(ncols, 1);
	if (t->right == NULL)
		oom();
}

static void
table_right(struct table *t, unsigned int col)
{
	t->right[col] = 1;
}

static void
table_add(struct table *t, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		oom();
	va_end(ap);
	if (t->ncells == t->cap) {
		t->cap = t->cap != 0 ? 2 * t->cap : 64;
		t->cells = xrealloc(t->cells, t->cap * sizeof(*t->cells));
	}
	t->cells[t->ncells++] = s;
}

static void
table_print(const struct table *t)
{
	size_t *width = calloc(t->ncols, sizeof(*width));
	size_t i, len;
	unsigned int col;

	if (width == NULL)
		oom();
	for (i = 0; i < t->ncells; i++) {
		len = strlen(t->cells[i]);
		if (len > width[i % t->ncols])
			width[i % t->ncols] = len;
	}
	for (i = 0; i < t->ncells; i++) {
		col = i % t->ncols;
		if (col != 0)
			fputs("  ", stdout);
		if (t->right[col])
			printf("%*s", (int)width[col], t->cells[i]);
		else if (col + 1 < t->ncols)
			printf("%-*s", (int)width[col], t->cells[i]);
		else
			fputs(t->cells[i], stdout); /* no trailing blanks */
		if (col + 1 == t->ncols || i + 1 == t->ncells)
			putchar('\n');
	}
	free(width);
}

static void
table_free(struct table *t)
{
	size_t i;

	for (i = 0; i < t->ncells; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->right);
}

/* A "label  value" row. */
static void
table_kv(struct table *t, const char *label, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		oom();
	va_end(ap);
	table_add(t, "%s", label);
	table_add(t, "%s", s);
	free(s);
}

/* "label  value" rows for v, objects flattened into "label.member". */
static void
table_kv_flat(struct table *t, const char *label, const json_t *v)
{
	const char *key;
	json_t *m;
	char *name;

	if (!json_is_object(v)) {
		table_kv(t, label, "%s", jfmt(v));
		return;
	}
	json_object_foreach((json_t *)v, key, m)
	{
		if (asprintf(&name, "%s.%s", label, key) < 0)
			oom();
		table_kv_flat(t, name, m);
		free(name);
	}
}

/*
 * Telemetry transport.
 */

/* Socket path of the DPDK process with this --file-prefix, as DPDK's EAL computes its
 * runtime directory. @return 0, or -1 if it does not fit. */
static int
tel_socket_path(const char *prefix, char *out, size_t len)
{
	const char *dir = getenv("RUNTIME_DIRECTORY"); /* systemd's RuntimeDirectory= */
	int n;

	if (dir == NULL) {
		if (getuid() == 0)
			dir = "/var/run";
		else if ((dir = getenv("XDG_RUNTIME_DIR")) == NULL)
			dir = "/tmp";
	}
	n = snprintf(out, len, "%s/dpdk/%s/%s", dir, prefix, TEL_SOCKET_NAME);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Receive one message into c->buf. @return 0 with its length in *len, or an exit code
 * after saying why. */
static int
tel_recv(struct ctl *c, int64_t deadline, const char *what, size_t *len)
{
	ssize_t n;
	int rc;

	for (;;) {
		rc = wait_fd(c->fd, POLLIN, deadline);
		if (rc == 0) {
			errmsg("no %s from keymapd within %g s (%s)", what, timeout_s(c), c->path);
			return EXIT_TRANSPORT;
		}
		if (rc < 0) {
			errmsg("%s: poll: %s", c->path, strerror(errno));
			return EXIT_TRANSPORT;
		}
		/* MSG_TRUNC: the length of the whole message even when it does not fit. */
		n = recv(c->fd, c->buf, c->buf_len, MSG_TRUNC | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0) {
			errmsg("%s: %s", c->path, strerror(errno));
			return EXIT_TRANSPORT;
		}
		if (n == 0) {
			/* DPDK closes connections beyond its client limit at once. */
			errmsg("keymapd closed the connection before its %s (%s)%s", what, c->path,
				strcmp(what, "hello") == 0 ? "; too many telemetry clients?" : "");
			return EXIT_TRANSPORT;
		}
		if ((size_t)n >= c->buf_len) {
			errmsg("%s of %zd bytes is larger than announced (%zu bytes)", what, n,
				c->buf_len - 1);
			return EXIT_TRANSPORT;
		}
		c->buf[n] = '\0';
		*len = (size_t)n;
		return 0;
	}
}

static int
tel_connect_error(const struct ctl *c, int err)
{
	switch (err) {
	case ENOENT:
	case ENOTDIR:
		errmsg("keymapd is not running (no socket at %s)", c->path);
		break;
	case ECONNREFUSED:
		errmsg("keymapd is not running (nothing listens on %s)", c->path);
		break;
	case EACCES:
	case EPERM:
		errmsg("cannot connect to %s: %s (DPDK's runtime directory is for its owner only)",
			c->path, strerror(err));
		break;
	case ETIMEDOUT:
		errmsg("keymapd did not accept the connection within %g s (%s)", timeout_s(c),
			c->path);
		break;
	default:
		errmsg("cannot connect to %s: %s", c->path, strerror(err));
		break;
	}
	return EXIT_TRANSPORT;
}

/* Connect and read the hello. @return 0 or an exit code after saying why. */
static int
tel_open(struct ctl *c)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int64_t deadline = now_ms() + c->timeout_ms;
	json_error_t jerr;
	uint64_t out_len;
	json_t *hello;
	socklen_t sl;
	size_t len;
	int err, rc;

	memcpy(sa.sun_path, c->path, sizeof(sa.sun_path));
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		errmsg("socket: %s", strerror(errno));
		return EXIT_TRANSPORT;
	}
	while (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		err = errno;
		if (err == EINTR)
			continue;
		/* A full listen backlog: the server is busy, try again until the deadline. */
		if (err == EAGAIN) {
			if (now_ms() >= deadline)
				return tel_connect_error(c, ETIMEDOUT);
			poll(NULL, 0, 10);
			continue;
		}
		if (err == EINPROGRESS) {
			rc = wait_fd(c->fd, POLLOUT, deadline);
			if (rc <= 0)
				return tel_connect_error(c, rc == 0 ? ETIMEDOUT : errno);
			sl = sizeof(err);
			if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0)
				err = errno;
			if (err == 0)
				break;
		}
		return tel_connect_error(c, err);
	}

	c->buf_len = TEL_OUT_DEFAULT + 1;
	c->buf = xrealloc(c->buf, c->buf_len);
	rc = tel_recv(c, deadline, "hello", &len);
	if (rc != 0)
		return rc;
	hello = json_loadb(c->buf, len, 0, &jerr);
	if (!json_is_object(hello)) {
		errmsg("%s: the hello is not a JSON object (%s): not a DPDK telemetry v2 socket?",
			c->path, hello == NULL ? jerr.text : "other type");
		json_decref(hello);
		return EXIT_TRANSPORT;
	}
	if (jint(hello, "max_output_len", &out_len) == 0 && out_len > TEL_OUT_DEFAULT) {
		if (out_len > TEL_OUT_LIMIT)
			out_len = TEL_OUT_LIMIT;
		c->buf_len = out_len + 1;
		c->buf = xrealloc(c->buf, c->buf_len);
	}
	json_decref(hello);
	return 0;
}

static void
tel_close(struct ctl *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/*
 * Send one request (connecting first if needed) and read its reply.
 * @return 0 with the reply in *root (json_decref it) and its DATA in *data (borrowed from
 *   *root); otherwise an exit code, after saying why: EXIT_TRANSPORT, or EXIT_REFUSED
 *   when DATA is null or {"error": ...}.
 */
static int
tel_query(struct ctl *c, const char *req, json_t **root, json_t **data)
{
	size_t name_len = strcspn(req, ",");
	size_t req_len = strlen(req), len;
	json_error_t jerr;
	const char *key, *msg;
	int64_t deadline;
	json_t *r, *d, *e;
	ssize_t n;
	int rc;

	if (req_len > TEL_REQ_MAX) {
		errmsg("%s: request longer than %d bytes", c->cmd, TEL_REQ_MAX);
		return EXIT_USAGE;
	}
	if (c->fd < 0) {
		rc = tel_open(c);
		if (rc != 0)
			return rc;
	}
	deadline = now_ms() + c->timeout_ms;
	do {
		n = send(c->fd, req, req_len, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n != (ssize_t)req_len) {
		errmsg("%s: send: %s", c->path, n < 0 ? strerror(errno) : "short write");
		return EXIT_TRANSPORT;
	}
	rc = tel_recv(c, deadline, "reply", &len);
	if (rc != 0)
		return rc;

	r = json_loadb(c->buf, len, 0, &jerr);
	if (!json_is_object(r)) {
		errmsg("%s: bad JSON reply to %.*s: %s", c->cmd, (int)name_len, req,
			r == NULL ? jerr.text : "not an object");
		json_decref(r);
		return EXIT_TRANSPORT;
	}
	/* {"/cmd": DATA}; the server shortens very long unknown names in the key. */
	d = NULL;
	json_object_foreach(r, key, e)
	{
		if ((strlen(key) == name_len && memcmp(key, req, name_len) == 0) ||
			json_object_size(r) == 1)
			d = e;
	}
	if (d == NULL) {
		errmsg("%s: the reply does not answer %.*s", c->cmd, (int)name_len, req);
		json_decref(r);
		return EXIT_TRANSPORT;
	}
	if (json_is_null(d)) {
		errmsg("%s: keymapd does not know %.*s (or refused it without a message)", c->cmd,
			(int)name_len, req);
		json_decref(r);
		return EXIT_REFUSED;
	}
	e = json_object_get(d, "error");
	if (json_is_string(e)) {
		msg = json_string_value(e);
		/* A message that names the command already ("prefetch: no such key"). */
		if (strncmp(msg, c->cmd, strlen(c->cmd)) == 0 &&
			strncmp(msg + strlen(c->cmd), ": ", 2) == 0)
			msg += strlen(c->cmd) + 2;
		errmsg("%s: %s", c->cmd, msg);
		json_decref(r);
		return EXIT_REFUSED;
	}
	*root = r;
	*data = d;
	return 0;
}

static int
tel_queryf(struct ctl *c, json_t **root, json_t **data, const char *fmt, ...)
{
	char req[TEL_REQ_MAX + 2];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(req, sizeof(req), fmt, ap);
	va_end(ap);
	if (n < 0 || n > TEL_REQ_MAX) {
		errmsg("%s: request longer than %d bytes", c->cmd, TEL_REQ_MAX);
		return EXIT_USAGE;
	}
	return tel_query(c, req, root, data);
}

/* Query that prints DATA as JSON with --json. @return as tel_query, *root NULL when done. */
static int
tel_query_json(struct ctl *c, const char *req, json_t **root, json_t **data)
{
	int rc = tel_query(c, req, root, data);

	if (rc == 0 && c->json) {
		print_json(*data);
		json_decref(*root);
		*root = NULL;
	}
	return rc;
}

/*
 * Argument checks.
 */

/* "section.key", both made of [A-Za-z0-9_] as telemetry names are. */
static int
valid_name(const char *s)
{
	const char *dot = strchr(s, '.');
	size_t n = strlen(s);

	return dot != NULL && dot != s && dot[1] != '\0' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.") == n &&
	       strchr(dot + 1, '.') == NULL;
}

/* Shard ids are (1 << depth) | prefix: 0 is none. */
static int
parse_shard_id(const char *s, uint64_t *id)
{
	return km_util_parse_u64(s, 1, UINT64_MAX, id);
}

static unsigned int
shard_depth(uint64_t id)
{
	return 63u - (unsigned int)__builtin_clzll(id);
}

/* "0x5/4": the prefix in as many hex digits as its depth needs, then the depth. */
static void
shard_prefix(uint64_t id, char *buf, size_t len)
{
	unsigned int depth = shard_depth(id);
	uint64_t prefix = id & ((UINT64_C(1) << depth) - 1);
	int digits = depth == 0 ? 1 : (int)(depth + 3) / 4;

	snprintf(buf, len, "0x%0*llx/%u", digits, (unsigned long long)prefix, depth);
}

/*
 * Commands. Each checks its arguments before it connects.
 */

static int
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
 * Section name of a stats sample, an object keymapd sends only with some store drivers
 * (the log driver's "store" and "cache", totals of all workers): after a blank line, a
 * row per member in keymapd's order, in watch mode with its rate as in the counter table.
 * A section with hits and misses gets its hit ratio after the misses. Nothing when the
 * sample has no such object.
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
			table_add_rate(&t, m, json_object_get(psec, key), dt);
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
 * earlier; "-" in the first sample). Then the store and cache sections, if any.
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
	print_stats_section(d, prev, "store", dt, watch);
	print_stats_section(d, prev, "cache", dt, watch);
}

static int
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

/* Append the arrays of one shards page to those of the first. */
static void
shards_append(json_t *all, json_t *page)
{
	json_t *v, *dst;
	const char *key;

	json_object_foreach(page, key, v)
	{
		dst = json_object_get(all, key);
		if (json_is_array(v) && json_is_array(dst) && json_array_extend(dst, v) != 0)
			oom();
	}
}

/* Fetch every page, restarting when the map changes between two. @return 0 with the
 * pages merged into one DATA object in *out, or an exit code. */
static int
shards_fetch(struct ctl *c, json_t **out)
{
	uint64_t first, next, nb, epoch, epoch0 = 0, n;
	json_t *root, *d, *all = NULL, *v;
	unsigned int attempt;
	const char *key;
	int rc;

	for (attempt = 0; attempt < SHARDS_ATTEMPTS; attempt++) {
		first = 0;
		for (;;) {
			rc = tel_queryf(
				c, &root, &d, "/keymap/shards,%llu", (unsigned long long)first);
			if (rc != 0) {
				json_decref(all);
				return rc;
			}
			n = json_array_size(json_object_get(d, "id"));
			if (jint(d, "epoch", &epoch) != 0 || jint(d, "nb_shards", &nb) != 0 ||
				jint(d, "next", &next) != 0 ||
				!json_is_array(json_object_get(d, "id")))
				goto bad;
			json_object_foreach(d, key, v)
			{
				if (json_is_array(v) && json_array_size(v) != n)
					goto bad;
			}
			if (first == 0) {
				all = json_deep_copy(d);
				if (all == NULL)
					oom();
				epoch0 = epoch;
			} else if (epoch != epoch0) {
				json_decref(root);
				json_decref(all);
				all = NULL;
				break; /* the map changed while paging: from the start */
			} else {
				shards_append(all, d);
			}
			json_decref(root);
			if (next >= nb) {
				json_object_set_new(all, "next", json_integer((json_int_t)next));
				*out = all;
				return 0;
			}
			if (next <= first) {
				errmsg("shards: page at %llu does not advance (next %llu)",
					(unsigned long long)first, (unsigned long long)next);
				json_decref(all);
				return EXIT_TRANSPORT;
			}
			first = next;
		}
	}
	errmsg("shards: the shard map changed %u times while it was read; try again",
		SHARDS_ATTEMPTS);
	return EXIT_TRANSPORT;
bad:
	errmsg("shards: reply to /keymap/shards,%llu lacks epoch, nb_shards, next or id, or "
	       "its arrays differ in length",
		(unsigned long long)first);
	json_decref(root);
	json_decref(all);
	return EXIT_TRANSPORT;
}

static int
cmd_shards(struct ctl *c, int argc, char **argv)
{
	static const char *const cols[] = {
		"id", "depth", "prefix", "owner", "keys", "bytes", "rate", "tier"};
	json_t *all, *ids, *rate;
	char prefix[40];
	struct table t;
	uint64_t id;
	size_t i;
	int rc;

	(void)argv;
	if (argc != 1)
		return usage_error("shards takes no argument");
	rc = shards_fetch(c, &all);
	if (rc != 0)
		return rc;
	if (c->json) {
		print_json(all);
		json_decref(all);
		return 0;
	}
	ids = json_object_get(all, "id");
	printf("epoch %s, %s shards\n\n", jfmt(json_object_get(all, "epoch")),
		jfmt(json_object_get(all, "nb_shards")));
	table_init(&t, 8);
	for (i = 0; i < 8; i++) {
		if (i != 2 && i != 7)
			table_right(&t, (unsigned int)i);
		table_add(&t, "%s", cols[i]);
	}
	for (i = 0; i < json_array_size(ids); i++) {
		const json_t *idv = json_array_get(ids, i);

		table_add(&t, "%s", jfmt(idv));
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "depth"), i)));
		if (json_is_integer(idv) && json_integer_value(idv) > 0) {
			id = (uint64_t)json_integer_value(idv);
			shard_prefix(id, prefix, sizeof(prefix));
			table_add(&t, "%s", prefix);
		} else {
			table_add(&t, "-");
		}
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "owner"), i)));
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "keys"), i)));
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "bytes"), i)));
		rate = json_array_get(json_object_get(all, "rate"), i);
		if (json_is_number(rate))
			table_add(&t, "%.1f", json_number_value(rate));
		else
			table_add(&t, "%s", jfmt(rate));
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "tier"), i)));
	}
	table_print(&t);
	table_free(&t);
	json_decref(all);
	return 0;
}

static int
cmd_config(struct ctl *c, int argc, char **argv)
{
	json_t *root, *d, *runtime, *sec, *v, *r;
	const char *skey, *key;
	struct table t;
	char name[160];
	int rc, yes;
	size_t i;

	if (argc > 2)
		return usage_error("config takes at most one SECTION.KEY");
	if (argc == 2) {
		if (!valid_name(argv[1]))
			return usage_error("config: '%s' is not SECTION.KEY", argv[1]);
		rc = tel_queryf(c, &root, &d, "/keymap/config,%s", argv[1]);
		if (rc != 0)
			return rc;
		if (c->json)
			print_json(d);
		else
			printf("%s\n", jfmt(json_object_get(d, "value")));
		json_decref(root);
		return 0;
	}
	rc = tel_query_json(c, "/keymap/config", &root, &d);
	if (rc != 0 || root == NULL)
		return rc;
	runtime = json_object_get(d, "runtime");
	table_init(&t, 3);
	table_add(&t, "key");
	table_add(&t, "value");
	table_add(&t, "runtime");
	json_object_foreach(d, skey, sec)
	{
		if (!json_is_object(sec))
			continue;
		json_object_foreach(sec, key, v)
		{
			snprintf(name, sizeof(name), "%s.%s", skey, key);
			yes = 0;
			json_array_foreach(runtime, i,
				r) if (json_is_string(r) && strcmp(json_string_value(r), name) == 0)
				yes = 1;
			table_add(&t, "%s", name);
			table_add(&t, "%s", jfmt(v));
			table_add(&t, "%s", yes ? "yes" : "no");
		}
	}
	table_print(&t);
	table_free(&t);
	json_decref(root);
	return 0;
}

static int
cmd_set(struct ctl *c, int argc, char **argv)
{
	const char *name, *value, *eq;
	json_t *root, *d;
	char buf[TEL_REQ_MAX + 1];
	int rc;

	if (argc == 2 && (eq = strchr(argv[1], '=')) != NULL) {
		snprintf(buf, sizeof(buf), "%.*s", (int)(eq - argv[1]), argv[1]);
		name = buf;
		value = eq + 1;
	} else if (argc == 3) {
		name = argv[1];
		value = argv[2];
	} else {
		return usage_error("set takes SECTION.KEY VALUE or SECTION.KEY=VALUE");
	}
	if (!valid_name(name))
		return usage_error("set: '%s' is not SECTION.KEY", name);
	rc = tel_queryf(c, &root, &d, "/keymap/set,%s=%s", name, value);
	if (rc != 0)
		return rc;
	if (c->json) {
		print_json(d);
	} else if (json_is_string(json_object_get(d, "section")) &&
		   json_is_string(json_object_get(d, "key"))) {
		printf("%s.%s: %s -> %s\n", jfmt(json_object_get(d, "section")),
			jfmt(json_object_get(d, "key")), jfmt(json_object_get(d, "old")),
			jfmt(json_object_get(d, "value")));
	} else {
		printf("%s: %s -> %s\n", name, jfmt(json_object_get(d, "old")),
			jfmt(json_object_get(d, "value")));
	}
	json_decref(root);
	return 0;
}

static int
cmd_split(struct ctl *c, int argc, char **argv)
{
	json_t *root, *d, *ch, *ow;
	uint64_t id;
	int rc;

	if (argc != 2 || parse_shard_id(argv[1], &id) != 0)
		return usage_error("split takes one shard id (an integer >= 1)");
	rc = tel_queryf(c, &root, &d, "/keymap/split,%llu", (unsigned long long)id);
	if (rc != 0)
		return rc;
	if (c->json) {
		print_json(d);
	} else {
		ch = json_object_get(d, "children");
		ow = json_object_get(d, "owners");
		printf("shard %s split into %s (worker %s) and %s (worker %s): %s keys, "
		       "paused %s us, epoch %s\n",
			jfmt(json_object_get(d, "shard")), jfmt(json_array_get(ch, 0)),
			jfmt(json_array_get(ow, 0)), jfmt(json_array_get(ch, 1)),
			jfmt(json_array_get(ow, 1)), jfmt(json_object_get(d, "keys")),
			jfmt(json_object_get(d, "pause_us")), jfmt(json_object_get(d, "epoch")));
	}
	json_decref(root);
	return 0;
}

static int
cmd_merge(struct ctl *c, int argc, char **argv)
{
	json_t *root, *d, *m;
	uint64_t id;
	int rc;

	if (argc != 2 || parse_shard_id(argv[1], &id) != 0)
		return usage_error("merge takes one shard id (an integer >= 1)");
	rc = tel_queryf(c, &root, &d, "/keymap/merge,%llu", (unsigned long long)id);
	if (rc != 0)
		return rc;
	if (c->json) {
		print_json(d);
	} else {
		m = json_object_get(d, "merged");
		printf("shards %s and %s merged into %s (worker %s): %s keys, paused %s us, "
		       "epoch %s\n",
			jfmt(json_array_get(m, 0)), jfmt(json_array_get(m, 1)),
			jfmt(json_object_get(d, "shard")), jfmt(json_object_get(d, "owner")),
			jfmt(json_object_get(d, "keys")), jfmt(json_object_get(d, "pause_us")),
			jfmt(json_object_get(d, "epoch")));
	}
	json_decref(root);
	return 0;
}

static int
cmd_move(struct ctl *c, int argc, char **argv)
{
	uint64_t id, worker;
	json_t *root, *d;
	int rc;

	if (argc != 3 || parse_shard_id(argv[1], &id) != 0 ||
		km_util_parse_u64(argv[2], 0, UINT16_MAX, &worker) != 0)
		return usage_error("move takes a shard id (an integer >= 1) and a worker number");
	rc = tel_queryf(c, &root, &d, "/keymap/move,%llu,%llu", (unsigned long long)id,
		(unsigned long long)worker);
	if (rc != 0)
		return rc;
	if (c->json)
		print_json(d);
	else
		printf("shard %s moved from worker %s to worker %s: %s keys, paused %s us, "
		       "epoch %s\n",
			jfmt(json_object_get(d, "shard")), jfmt(json_object_get(d, "from")),
			jfmt(json_object_get(d, "to")), jfmt(json_object_get(d, "keys")),
			jfmt(json_object_get(d, "pause_us")), jfmt(json_object_get(d, "epoch")));
	json_decref(root);
	return 0;
}

/* Send req, a tier change or a compaction, and print its reply {shard, done, keys,
 * pause_us}: done is the tier the shard is now in, or "compacted". */
static int
retier(struct ctl *c, const char *req)
{
	json_t *root, *d, *done;
	int rc;

	rc = tel_query(c, req, &root, &d);
	if (rc != 0)
		return rc;
	done = json_object_get(d, "done");
	if (c->json)
		print_json(d);
	else if (json_is_string(done) && (strcmp(json_string_value(done), "hot") == 0 ||
						 strcmp(json_string_value(done), "cold") == 0))
		printf("shard %s moved to the %s tier: %s keys, paused %s us\n",
			jfmt(json_object_get(d, "shard")), jfmt(done),
			jfmt(json_object_get(d, "keys")), jfmt(json_object_get(d, "pause_us")));
	else
		printf("shard %s %s: %s keys, paused %s us\n", jfmt(json_object_get(d, "shard")),
			jfmt(done), jfmt(json_object_get(d, "keys")),
			jfmt(json_object_get(d, "pause_us")));
	json_decref(root);
	return 0;
}

static int
cmd_tier(struct ctl *c, int argc, char **argv)
{
	char req[64];
	uint64_t id;

	if (argc != 3 || parse_shard_id(argv[1], &id) != 0)
		return usage_error("tier takes a shard id (an integer >= 1) and hot or cold");
	if (strcmp(argv[2], "hot") != 0 && strcmp(argv[2], "cold") != 0)
		return usage_error("tier: '%s' is not a tier (hot or cold)", argv[2]);
	snprintf(req, sizeof(req), "/keymap/tier,%llu,%s", (unsigned long long)id, argv[2]);
	return retier(c, req);
}

static int
cmd_compact(struct ctl *c, int argc, char **argv)
{
	char req[64];
	uint64_t id;

	if (argc != 2 || parse_shard_id(argv[1], &id) != 0)
		return usage_error("compact takes one shard id (an integer >= 1)");
	snprintf(req, sizeof(req), "/keymap/compact,%llu", (unsigned long long)id);
	return retier(c, req);
}

static int
cmd_prefetch(struct ctl *c, int argc, char **argv)
{
	json_t *root, *d;
	size_t len;
	int rc;

	if (argc != 2)
		return usage_error("prefetch takes one KEY");
	len = strlen(argv[1]);
	if (len == 0 || len > KM_KEY_MAX)
		return usage_error("prefetch: a key is 1 to %d bytes, not %zu", KM_KEY_MAX, len);
	/* DPDK telemetry requests are "/cmd,params": a comma would read as a separator. */
	if (strchr(argv[1], ',') != NULL)
		return usage_error("prefetch: a key with a comma cannot be sent (telemetry "
				   "parameters are comma-separated)");
	rc = tel_queryf(c, &root, &d, "/keymap/prefetch,%s", argv[1]);
	if (rc != 0)
		return rc;
	if (c->json)
		print_json(d);
	else
		printf("prefetch '%s': %s\n", argv[1], jfmt(json_object_get(d, "prefetch")));
	json_decref(root);
	return 0;
}

static int
cmd_log_level(struct ctl *c, int argc, char **argv)
{
	json_t *root, *d;
	int rc;

	if (argc > 2)
		return usage_error("log-level takes at most one LEVEL");
	if (argc == 2) {
		if (argv[1][0] == '\0' ||
			strspn(argv[1], "abcdefghijklmnopqrstuvwxyz"
					"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != strlen(argv[1]))
			return usage_error("log-level: '%s' is not a level name", argv[1]);
		rc = tel_queryf(c, &root, &d, "/keymap/log_level,%s", argv[1]);
	} else {
		rc = tel_query(c, "/keymap/log_level", &root, &d);
	}
	if (rc != 0)
		return rc;
	if (c->json)
		print_json(d);
	else
		printf("log level: %s\n", jfmt(json_object_get(d, "level")));
	json_decref(root);
	return 0;
}

/* "HOST:PORT", "[IPV6]:PORT". @return 0 or -1. */
static int
parse_host_port(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
	const char *h = s, *colon;
	uint64_t p;
	size_t n;

	if (s[0] == '[') {
		colon = strchr(s, ']');
		if (colon == NULL || colon[1] != ':')
			return -1;
		h = s + 1;
		n = (size_t)(colon - h);
		colon++;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return -1;
		n = (size_t)(colon - s);
		if (memchr(s, ':', n) != NULL) /* a bare IPv6 address needs brackets */
			return -1;
	}
	if (n == 0 || n >= hlen || km_util_parse_u64(colon + 1, 1, UINT16_MAX, &p) != 0)
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	snprintf(port, plen, "%llu", (unsigned long long)p);
	return 0;
}

/* Connect to host:port over TCP within the deadline. @return the socket or -1 after
 * saying why. */
static int
tcp_connect(const struct ctl *c, const char *host, const char *port, int64_t deadline)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res, *ai;
	int fd = -1, err = 0, rc;
	socklen_t sl;

	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		errmsg("metrics: %s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		err = errno;
		if (err == EINPROGRESS) {
			rc = wait_fd(fd, POLLOUT, deadline);
			if (rc == 0) {
				err = ETIMEDOUT;
			} else if (rc < 0) {
				err = errno;
			} else {
				sl = sizeof(err);
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0)
					err = errno;
				if (err == 0)
					break;
			}
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0 && err == ETIMEDOUT)
		errmsg("metrics: %s:%s did not answer within %g s", host, port, timeout_s(c));
	else if (fd < 0)
		errmsg("metrics: cannot connect to %s:%s: %s", host, port, strerror(err));
	return fd;
}

/* GET http://url/metrics and print the body. @return 0, EXIT_REFUSED for an HTTP status
 * other than 200, EXIT_TRANSPORT. */
static int
http_get_metrics(struct ctl *c, const char *url)
{
	int64_t deadline = now_ms() + c->timeout_ms;
	size_t len = 0, cap = 0, off, hdr;
	char host[256], port[8], *req, *buf = NULL, *end;
	int fd, rc = EXIT_TRANSPORT;
	uint64_t code;
	ssize_t n;

	if (parse_host_port(url, host, sizeof(host), port, sizeof(port)) != 0) {
		errmsg("metrics: '%s' is not HOST:PORT", url);
		return EXIT_TRANSPORT;
	}
	fd = tcp_connect(c, host, port, deadline);
	if (fd < 0)
		return EXIT_TRANSPORT;
	if (asprintf(&req, "GET /metrics HTTP/1.0\r\nHost: %s\r\nAccept: text/plain\r\n\r\n", url) <
		0)
		oom();
	for (off = 0; off < strlen(req);) {
		n = send(fd, req + off, strlen(req) - off, MSG_NOSIGNAL);
		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || wait_fd(fd, POLLOUT, deadline) != 1) {
			errmsg("metrics: %s: send: %s", url,
				errno == EAGAIN ? "timed out" : strerror(errno));
			goto out;
		}
	}
	/* HTTP/1.0: the server closes the connection after the body. */
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap = cap != 0 ? 2 * cap : 65536;
			if (cap > HTTP_REPLY_MAX + 4096 + 1) {
				errmsg("metrics: %s: reply larger than %u bytes", url,
					HTTP_REPLY_MAX);
				goto out;
			}
			buf = xrealloc(buf, cap);
		}
		rc = wait_fd(fd, POLLIN, deadline);
		if (rc != 1) {
			errmsg("metrics: %s: %s", url,
				rc == 0 ? "no complete reply within the timeout" : strerror(errno));
			rc = EXIT_TRANSPORT;
			goto out;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			errmsg("metrics: %s: %s", url, strerror(errno));
			rc = EXIT_TRANSPORT;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	rc = EXIT_TRANSPORT;
	if (buf == NULL || len < 12 || strncmp(buf, "HTTP/", 5) != 0) {
		errmsg("metrics: %s: not an HTTP reply", url);
		goto out;
	}
	buf[len] = '\0';
	end = strchr(buf, ' ');
	/* The status: three digits after the first blank. */
	if (end == NULL || km_util_parse_u64n(end + 1, 3, 0, 999, &code) < 0)
		code = 0;
	end = memmem(buf, len, "\r\n\r\n", 4);
	hdr = end != NULL ? (size_t)(end - buf) + 4 : 0;
	if (end == NULL) {
		end = memmem(buf, len, "\n\n", 2);
		hdr = end != NULL ? (size_t)(end - buf) + 2 : len;
	}
	if (code != 200) {
		errmsg("metrics: http://%s/metrics: %.*s", url, (int)strcspn(buf, "\r\n"), buf);
		rc = EXIT_REFUSED;
		goto out;
	}
	fwrite(buf + hdr, 1, len - hdr, stdout);
	rc = 0;
out:
	free(req);
	free(buf);
	close(fd);
	return rc;
}

static int
cmd_metrics(struct ctl *c, int argc, char **argv)
{
	const char *url = c->metrics_url;
	char host[256], port[8];
	json_t *root = NULL, *d, *m;
	int rc;

	if (argc == 3 && strcmp(argv[1], "--metrics-url") == 0)
		url = argv[2];
	else if (argc == 2 && strncmp(argv[1], "--metrics-url=", 14) == 0)
		url = argv[1] + 14;
	else if (argc != 1)
		return usage_error("metrics takes only --metrics-url HOST:PORT");
	if (url != NULL && parse_host_port(url, host, sizeof(host), port, sizeof(port)) != 0)
		return usage_error("metrics: '%s' is not HOST:PORT", url);
	if (url == NULL) {
		rc = tel_query(c, "/keymap/status", &root, &d);
		if (rc != 0)
			return rc;
		tel_close(c);
		m = json_object_get(d, "metrics");
		if (!json_is_string(m)) {
			errmsg("metrics: keymapd's status has no metrics address");
			json_decref(root);
			return EXIT_TRANSPORT;
		}
		if (json_string_value(m)[0] == '\0') {
			errmsg("metrics endpoint disabled ([metrics] port = 0)");
			json_decref(root);
			return EXIT_REFUSED;
		}
		url = json_string_value(m);
	}
	rc = http_get_metrics(c, url);
	json_decref(root);
	return rc;
}

static int
cmd_raw(struct ctl *c, int argc, char **argv)
{
	json_t *root, *d;
	int rc;

	if (argc != 2 || argv[1][0] != '/')
		return usage_error("raw takes one telemetry request, /CMD or /CMD,PARAMS");
	if (strlen(argv[1]) > TEL_REQ_MAX)
		return usage_error("raw: request longer than %d bytes", TEL_REQ_MAX);
	rc = tel_query(c, argv[1], &root, &d);
	if (rc != 0)
		return rc;
	print_json(d);
	json_decref(root);
	return 0;
}

static const struct command {
	const char *name;
	int (*fn)(struct ctl *c, int argc, char **argv);
	int long_running; /* copies a shard before keymapd answers: RESHARD_TIMEOUT_MS */
} commands[] = {
	{"status", cmd_status, 0},
	{"stats", cmd_stats, 0},
	{"shards", cmd_shards, 0},
	{"config", cmd_config, 0},
	{"set", cmd_set, 0},
	{"split", cmd_split, 1},
	{"merge", cmd_merge, 1},
	{"move", cmd_move, 1},
	{"tier", cmd_tier, 1},
	{"compact", cmd_compact, 1},
	{"prefetch", cmd_prefetch, 0},
	{"log-level", cmd_log_level, 0},
	{"metrics", cmd_metrics, 0},
	{"raw", cmd_raw, 0},
};

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"file-prefix", required_argument, NULL, 'f'},
		{"socket", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"timeout", required_argument, NULL, 'T'},
		{"metrics-url", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct ctl c = {.timeout_ms = TIMEOUT_DEFAULT_MS, .fd = -1};
	int timeout_set = 0;
	const char *prefix = NULL, *socket_path = NULL;
	double secs;
	size_t i;
	int opt, rc, j;

	opterr = 0;
	/* '+': options end at the command, whose own arguments may start with '-'. */
	while ((opt = getopt_long(argc, argv, "+:f:s:T:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			prefix = optarg;
			break;
		case 's':
			socket_path = optarg;
			break;
		case 'j':
			c.json = 1;
			break;
		case 'T':
			if (km_util_parse_double(optarg, 0, 86400, &secs) != 0 || !(secs > 0))
				return usage_error(
					"-T takes seconds, more than 0 and at most 86400");
			c.timeout_ms = secs * 1000 < 1 ? 1 : (int)(secs * 1000 + 0.5);
			timeout_set = 1;
			break;
		case 'm':
			c.metrics_url = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case ':':
			return usage_error("option '%s' needs an argument", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind == argc)
		return usage_error("no command");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[optind], commands[i].name) == 0)
			break;
	if (i == sizeof(commands) / sizeof(commands[0])) {
		if (strcmp(argv[optind], "help") == 0) {
			fputs(usage_text, stdout);
			return 0;
		}
		return usage_error("unknown command '%s'", argv[optind]);
	}
	/* A common slip; set and raw may take any text as their value. */
	if (commands[i].fn != cmd_set && commands[i].fn != cmd_raw)
		for (j = optind + 1; j < argc; j++)
			if (strcmp(argv[j], "--json") == 0)
				return usage_error(
					"--json goes before the command: keymapctl --json %s",
					commands[i].name);
	if (prefix != NULL && socket_path != NULL)
		return usage_error("-f and -s exclude each other");
	if (c.metrics_url != NULL && commands[i].fn != cmd_metrics)
		return usage_error("--metrics-url applies to the metrics command only");
	if (socket_path != NULL) {
		if (socket_path[0] == '\0' || strlen(socket_path) >= sizeof(c.path))
			return usage_error(
				"socket path empty or longer than %zu bytes", sizeof(c.path) - 1);
		strcpy(c.path, socket_path);
	} else {
		if (prefix == NULL)
			prefix = TEL_DEFAULT_PREFIX;
		if (prefix[0] == '\0' || strchr(prefix, '/') != NULL)
			return usage_error("bad file prefix '%s'", prefix);
		if (tel_socket_path(prefix, c.path, sizeof(c.path)) != 0)
			return usage_error("socket path for prefix '%s' longer than %zu bytes",
				prefix, sizeof(c.path) - 1);
	}

	c.cmd = commands[i].name;
	/* A split, merge, move, tier change or compaction copies the shard's entries before
	 * keymapd answers (keymapd allows it 60 s): wait as long unless told otherwise, or a
	 * slow copy would look like a failure that still happens later. */
	if (!timeout_set && commands[i].long_running)
		c.timeout_ms = RESHARD_TIMEOUT_MS;
	rc = commands[i].fn(&c, argc - optind, argv + optind);
	tel_close(&c);
	free(c.buf);
	if (fflush(stdout) != 0 && rc == 0) {
		errmsg("stdout: %s", strerror(errno));
		rc = EXIT_TRANSPORT;
	}
	return rc;
}
