/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libkeymap's async calls against a running keymapd, through epoll: N PUTs submitted at
 * once (N in flight from the program's view, the handle's window on the wire), then N
 * GETs whose values are checked. Prints "async: puts N gets N ok N ops/s R" and exits 0
 * when every op succeeded with the right value, 1 otherwise.
 *
 * usage: async_client HOST [N]   (N default 10000)
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <km_client.h>

struct req {
	struct km_batch_op op;
	char key[24];
	char val[32];
	char buf[32];
};

struct run {
	struct km_client *c;
	struct req *r;
	unsigned int n, done, bad;
};

static void
on_done(struct km_batch_op *op, void *arg)
{
	struct run *x = arg;
	struct req *q = (struct req *)op;

	x->done++;
	if (op->err != KM_OK) {
		if (x->bad++ < 5)
			fprintf(stderr, "async: %s %s: %s\n",
				op->op == KM_BATCH_PUT ? "put" : "get", q->key,
				km_strerror(op->err));
		return;
	}
	if (op->op == KM_BATCH_GET &&
		(op->len != strlen(q->val) || memcmp(q->buf, q->val, op->len) != 0)) {
		if (x->bad++ < 5)
			fprintf(stderr, "async: get %s: '%.*s', want '%s'\n", q->key, (int)op->len,
				q->buf, q->val);
	}
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Until every op is done (at most 60 s). @return 0 or -1. */
static int
drain(struct run *x, int ep)
{
	struct epoll_event ev;
	double t0 = now_s();

	while (km_async_pending(x->c) != 0) {
		if (now_s() - t0 > 60) {
			fprintf(stderr, "async: %zu ops still pending after 60 s\n",
				km_async_pending(x->c));
			return -1;
		}
		ev.events = EPOLLIN | (km_async_want_write(x->c) ? EPOLLOUT : 0);
		ev.data.ptr = x;
		epoll_ctl(ep, EPOLL_CTL_MOD, km_async_fd(x->c), &ev);
		epoll_wait(ep, &ev, 1, km_async_timeout_ms(x->c));
		if (km_process(x->c) < 0) {
			fprintf(stderr, "async: km_process: socket failure\n");
			return -1;
		}
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct km_client_opts o = {.size = sizeof(o), .timeout_ms = 300, .retries = 5};
	struct epoll_event ev = {.events = EPOLLIN};
	struct run x = {.n = 10000};
	unsigned int i;
	double t0, dt;
	int ep, rc;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: async_client HOST [N]\n");
		return 2;
	}
	o.host = argv[1];
	if (argc == 3)
		x.n = (unsigned int)strtoul(argv[2], NULL, 10);
	if (x.n == 0 || x.n > 1000000)
		return 2;
	rc = km_client_open(&o, &x.c);
	if (rc != KM_OK) {
		fprintf(stderr, "async: open %s: %s\n", o.host, km_strerror(rc));
		return 1;
	}
	x.r = calloc(x.n, sizeof(*x.r));
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev.data.ptr = &x;
	if (x.r == NULL || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, km_async_fd(x.c), &ev) < 0)
		return 1;
	t0 = now_s();
	for (i = 0; i < x.n; i++) {
		struct req *q = &x.r[i];

		snprintf(q->key, sizeof(q->key), "async/%u", i);
		snprintf(q->val, sizeof(q->val), "value-%u", i * 31);
		q->op = (struct km_batch_op){.op = KM_BATCH_PUT,
			.key = q->key,
			.klen = strlen(q->key),
			.val = q->val,
			.vlen = strlen(q->val)};
		if (km_submit(x.c, &q->op, on_done, &x) != KM_OK)
			return 1;
	}
	if (km_async_pending(x.c) != x.n) {
		fprintf(stderr, "async: %zu pending, want %u\n", km_async_pending(x.c), x.n);
		return 1;
	}
	if (drain(&x, ep) < 0)
		return 1;
	for (i = 0; i < x.n; i++) {
		struct req *q = &x.r[i];

		q->op = (struct km_batch_op){.op = KM_BATCH_GET,
			.key = q->key,
			.klen = strlen(q->key),
			.buf = q->buf,
			.cap = sizeof(q->buf)};
		if (km_submit(x.c, &q->op, on_done, &x) != KM_OK)
			return 1;
	}
	if (drain(&x, ep) < 0)
		return 1;
	dt = now_s() - t0;
	printf("async: puts %u gets %u ok %u ops/s %.0f\n", x.n, x.n, 2 * x.n - x.bad,
		2.0 * x.n / dt);
	close(ep);
	free(x.r);
	km_client_close(x.c);
	return x.bad == 0 && x.done == 2 * x.n ? 0 : 1;
}
