/* SPDX-License-Identifier: BSD-3-Clause */

/* Kernel UDP transport: one connected, non-blocking socket, sendmmsg/recvmmsg bursts. */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

#define SOCK_BUF (4 << 20)

struct xsock {
	struct bench_xport x;
	int fd;
	uint8_t tx[BENCH_BURST][BENCH_PAYLOAD_MAX];
	uint8_t rx[BENCH_BURST][BENCH_PAYLOAD_MAX + 1];
	struct iovec tx_iov[BENCH_BURST], rx_iov[BENCH_BURST];
	struct mmsghdr tx_msg[BENCH_BURST], rx_msg[BENCH_BURST];
};

static unsigned int
sock_tx_prepare(struct bench_xport *x, unsigned int n, uint8_t **bufs, size_t *cap)
{
	struct xsock *s = (struct xsock *)x;
	unsigned int i;

	if (n > BENCH_BURST)
		n = BENCH_BURST;
	for (i = 0; i < n; i++) {
		bufs[i] = s->tx[i];
		cap[i] = BENCH_PAYLOAD_MAX;
	}
	return n;
}

static unsigned int
sock_tx_send(struct bench_xport *x, unsigned int n, const uint16_t *lens)
{
	struct xsock *s = (struct xsock *)x;
	unsigned int i;
	int rc;

	for (i = 0; i < n; i++)
		s->tx_iov[i].iov_len = lens[i];
	rc = sendmmsg(s->fd, s->tx_msg, n, MSG_DONTWAIT);
	/* EAGAIN/ENOBUFS: the socket buffer is full; the engine sends again later. An
	 * ECONNREFUSED (ICMP port unreachable from an earlier datagram) is a lost request:
	 * the engine times it out. */
	return rc < 0 ? 0 : (unsigned int)rc;
}

static unsigned int
sock_rx(struct bench_xport *x, unsigned int n, const uint8_t **bufs, uint16_t *lens)
{
	struct xsock *s = (struct xsock *)x;
	unsigned int i;
	int rc;

	if (n > BENCH_BURST)
		n = BENCH_BURST;
	for (i = 0; i < n; i++)
		s->rx_msg[i].msg_hdr.msg_flags = 0;
	rc = recvmmsg(s->fd, s->rx_msg, n, MSG_DONTWAIT, NULL);
	if (rc <= 0)
		return 0;
	for (i = 0; i < (unsigned int)rc; i++) {
		bufs[i] = s->rx[i];
		/* A truncated datagram is no valid reply: give its real length to the parser,
		 * which rejects it, rather than a clipped one. */
		lens[i] = (s->rx_msg[i].msg_hdr.msg_flags & MSG_TRUNC)
				  ? 0
				  : (uint16_t)s->rx_msg[i].msg_len;
	}
	return (unsigned int)rc;
}

static void
sock_close(struct bench_xport *x)
{
	struct xsock *s = (struct xsock *)x;

	close(s->fd);
	free(s);
}

struct bench_xport *
bench_xport_socket(const struct bench_conf *c, char *err, size_t errlen)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct xsock *s = calloc(1, sizeof(*s));
	int buf = SOCK_BUF;
	unsigned int i;

	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		free(s);
		return NULL;
	}
	/* Bigger buffers than the default keep a window of requests from overflowing. */
	setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	sa.sin_addr.s_addr = c->server_ip;
	sa.sin_port = htons(c->server_port);
	if (connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(err, errlen, "connect: %s", strerror(errno));
		close(s->fd);
		free(s);
		return NULL;
	}
	for (i = 0; i < BENCH_BURST; i++) {
		s->tx_iov[i].iov_base = s->tx[i];
		s->tx_msg[i].msg_hdr.msg_iov = &s->tx_iov[i];
		s->tx_msg[i].msg_hdr.msg_iovlen = 1;
		s->rx_iov[i].iov_base = s->rx[i];
		s->rx_iov[i].iov_len = sizeof(s->rx[i]);
		s->rx_msg[i].msg_hdr.msg_iov = &s->rx_iov[i];
		s->rx_msg[i].msg_hdr.msg_iovlen = 1;
	}
	s->x.tx_prepare = sock_tx_prepare;
	s->x.tx_send = sock_tx_send;
	s->x.rx = sock_rx;
	s->x.close = sock_close;
	return &s->x;
}
