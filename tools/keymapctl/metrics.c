/* SPDX-License-Identifier: BSD-3-Clause */
/* keymapctl metrics: keymapd's Prometheus page over HTTP/1.0 (address from status). */

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <km_util.h>

#include "keymapctl.h"

#define HTTP_REPLY_MAX (64u << 20)

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
/* Why the last connection failed (said unless quiet). */
static char connect_err[512];

static int
tcp_connect(const struct ctl *c, const char *host, const char *port, int64_t deadline, int quiet)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res, *ai;
	int fd = -1, err = 0, rc;
	socklen_t sl;

	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		snprintf(connect_err, sizeof(connect_err), "metrics: %s: %s", host,
			gai_strerror(rc));
		if (!quiet)
			errmsg("%s", connect_err);
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
		snprintf(connect_err, sizeof(connect_err),
			"metrics: %s:%s did not answer within %g s", host, port, timeout_s(c));
	else if (fd < 0)
		snprintf(connect_err, sizeof(connect_err), "metrics: cannot connect to %s:%s: %s",
			host, port, strerror(err));
	if (fd < 0 && !quiet)
		errmsg("%s", connect_err);
	return fd;
}

/* GET http://url/metrics and print the body. @return 0, EXIT_REFUSED for an HTTP status
 * other than 200, EXIT_TRANSPORT; -1 when quiet and the connection failed (unsaid:
 * connect_err). */
static int
http_get_metrics(struct ctl *c, const char *url, int quiet)
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
	fd = tcp_connect(c, host, port, deadline, quiet);
	if (fd < 0)
		return quiet ? -1 : EXIT_TRANSPORT;
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

/* Whether url is a loopback address and keymapd (pid in status d) runs in another network
 * namespace than this process (unknown: no). */
static int
other_netns_loopback(const json_t *d, const char *url)
{
	char path[64], ours[64], theirs[64];
	uint64_t pid;
	ssize_t a, b;

	if (strncmp(url, "127.", 4) != 0 && strncmp(url, "localhost:", 10) != 0)
		return 0;
	if (jint(d, "pid", &pid) != 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%llu/ns/net", (unsigned long long)pid);
	a = readlink("/proc/self/ns/net", ours, sizeof(ours) - 1);
	b = readlink(path, theirs, sizeof(theirs) - 1);
	if (a <= 0 || b <= 0)
		return 0;
	return a != b || memcmp(ours, theirs, (size_t)a) != 0;
}

/*
 * The page through telemetry (/keymap/metrics, in chunks of one rendering), printed whole.
 * @return 0, an exit code (said), or -1 when keymapd does not know the command (unsaid).
 */
static int
tel_get_metrics(struct ctl *c)
{
	char req[64], *page = NULL;
	uint64_t id = 0, next = 0, len = 0;
	unsigned int attempt;
	const char *s, *nl;
	size_t have = 0;
	json_t *root, *d;
	int rc, n;

	for (attempt = 0; attempt < 3; attempt++) {
		have = 0;
		next = 0;
		snprintf(req, sizeof(req), "/keymap/metrics");
		for (;;) {
			c->quiet_unknown = 1;
			c->last_unknown = 0;
			/* A page replaced meanwhile (another reader): from the start, unsaid. */
			c->quiet_refused = attempt + 1 < 3;
			rc = tel_query(c, req, &root, &d);
			c->quiet_unknown = 0;
			c->quiet_refused = 0;
			if (rc == EXIT_REFUSED && c->last_unknown) {
				free(page);
				return -1;
			}
			if (rc != 0)
				break; /* said (a changed page: from the start) */
			s = json_string_value(d);
			nl = s != NULL ? strchr(s, '\n') : NULL;
			n = 0;
			if (nl == NULL ||
				sscanf(s, "%" SCNu64 " %" SCNu64 " %" SCNu64 "%n", &id, &next, &len,
					&n) != 3 ||
				next != have + strlen(nl + 1)) {
				errmsg("metrics: a bad /keymap/metrics reply");
				json_decref(root);
				free(page);
				return EXIT_TRANSPORT;
			}
			page = xrealloc(page, have + strlen(nl + 1) + 1);
			memcpy(page + have, nl + 1, strlen(nl + 1));
			have += strlen(nl + 1);
			json_decref(root);
			if (next >= len || have >= len) {
				fwrite(page, 1, have, stdout);
				free(page);
				return 0;
			}
			snprintf(
				req, sizeof(req), "/keymap/metrics,%" PRIu64 ",%" PRIu64, next, id);
		}
		if (rc != EXIT_REFUSED)
			break;
	}
	free(page);
	return rc;
}

int
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
	if (url != NULL)
		return http_get_metrics(c, url, 0);
	rc = tel_query(c, "/keymap/status", &root, &d);
	if (rc != 0)
		return rc;
	m = json_object_get(d, "metrics");
	if (!json_is_string(m)) {
		errmsg("metrics: keymapd's status has no metrics address");
		json_decref(root);
		return EXIT_TRANSPORT;
	}
	if (json_string_value(m)[0] == '\0') {
		/* No endpoint: the same page through telemetry. */
		rc = tel_get_metrics(c);
		if (rc == -1) {
			errmsg("metrics endpoint disabled ([metrics] port = 0)");
			rc = EXIT_REFUSED;
		}
		json_decref(root);
		return rc;
	}
	/* keymapd's loopback is not ours when it runs in another network namespace: what
	 * answers there here is someone else (another keymapd, another service). */
	if (other_netns_loopback(d, json_string_value(m)))
		rc = -1;
	else
		rc = http_get_metrics(c, json_string_value(m), 1);
	if (rc == -1) {
		/* Not reachable from here (keymapd in another network namespace, a firewall):
		 * the same page through telemetry, which reached it. */
		rc = tel_get_metrics(c);
		if (rc == -1) {
			errmsg("%s", connect_err);
			rc = EXIT_TRANSPORT;
		}
	}
	json_decref(root);
	return rc;
}
