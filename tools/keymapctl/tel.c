/* SPDX-License-Identifier: BSD-3-Clause */
/* keymapctl: the DPDK telemetry v2 client (socket path, hello, one request at a time). */

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <km_util.h>

#include "keymapctl.h"

/* Reply size when the hello does not announce max_output_len, and the most we accept. */
#define TEL_OUT_DEFAULT 16384
#define TEL_OUT_LIMIT   (16u << 20)

/* Socket path of the DPDK process with this --file-prefix, as DPDK's EAL computes its
 * runtime directory. @return 0, or -1 if it does not fit. */
int
tel_socket_path(const char *prefix, char *out, size_t len)
{
	int n = snprintf(
		out, len, "%s/dpdk/%s/%s", km_dpdk_runtime_base(), prefix, TEL_SOCKET_NAME);

	return n < 0 || (size_t)n >= len ? -1 : 0;
}

int
tel_prefixes(char *out, size_t len)
{
	char dir[PATH_MAX], path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct dirent *e;
	size_t used = 0;
	int n = 0;
	DIR *d;

	out[0] = '\0';
	snprintf(dir, sizeof(dir), "%s/dpdk", km_dpdk_runtime_base());
	d = opendir(dir);
	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		int fd, k;

		if (e->d_name[0] == '.' || tel_socket_path(e->d_name, path, sizeof(path)) != 0)
			continue;
		memcpy(sa.sun_path, path, strlen(path) + 1);
		fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			k = snprintf(out + used, len - used, "%s%s", n > 0 ? " " : "", e->d_name);
			if (k > 0 && (size_t)k < len - used) {
				used += (size_t)k;
				n++;
			}
		}
		close(fd);
	}
	closedir(d);
	return n;
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
	char seen[512];

	switch (err) {
	case ENOENT:
	case ENOTDIR:
	case ECONNREFUSED:
		if (tel_prefixes(seen, sizeof(seen)) > 0)
			errmsg("keymapd is not running (%s %s); DPDK processes here run with "
			       "--file-prefix %s (keymapctl -f PREFIX)",
				err == ECONNREFUSED ? "nothing listens on" : "no socket at",
				c->path, seen);
		else
			errmsg("keymapd is not running (%s %s)",
				err == ECONNREFUSED ? "nothing listens on" : "no socket at",
				c->path);
		return EXIT_NOT_RUNNING;
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

void
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
int
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
		c->last_unknown = 1;
		if (!c->quiet_unknown)
			errmsg("%s: keymapd does not know %.*s (or refused it without a message)",
				c->cmd, (int)name_len, req);
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
		if (!c->quiet_refused)
			errmsg("%s: %s", c->cmd, msg);
		json_decref(r);
		return EXIT_REFUSED;
	}
	*root = r;
	*data = d;
	return 0;
}

static int tel_vqueryf(struct ctl *c, json_t **root, json_t **data, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

static int
tel_vqueryf(struct ctl *c, json_t **root, json_t **data, const char *fmt, va_list ap)
{
	char req[TEL_REQ_MAX + 2];
	int n;

	n = vsnprintf(req, sizeof(req), fmt, ap);
	if (n < 0 || n > TEL_REQ_MAX) {
		errmsg("%s: request longer than %d bytes", c->cmd, TEL_REQ_MAX);
		return EXIT_USAGE;
	}
	return tel_query(c, req, root, data);
}

int
tel_queryf(struct ctl *c, json_t **root, json_t **data, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = tel_vqueryf(c, root, data, fmt, ap);
	va_end(ap);
	return rc;
}

/* Query that prints DATA as JSON with --json. @return as tel_query, *root NULL when done. */
int
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

int
tel_showf(struct ctl *c, void (*show)(const json_t *d, const char *arg), const char *arg,
	const char *fmt, ...)
{
	json_t *root, *d;
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = tel_vqueryf(c, &root, &d, fmt, ap);
	va_end(ap);
	if (rc != 0)
		return rc;
	if (c->json)
		print_json(d);
	else
		show(d, arg);
	json_decref(root);
	return 0;
}

int
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
