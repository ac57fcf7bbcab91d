/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Address validation and client keys for keymap over the eth and socket transports: the
 * HELLO before the run, its renewal during the run (bench.h, struct bench_auth). HELLO
 * datagrams go through the transport like requests; their replies are told apart by op
 * and request id, so they never count as replies (nor as stray ones).
 */

#include <string.h>
#include <time.h>

#include "bench.h"

#define HELLO_TRIES 3
#define HELLO_IDS   0x48454c4c4f000000ull /* "HELLO": far from the engine's ids */

/* Send one HELLO. @return its request id, or 0 when the transport took nothing. */
static uint64_t
hello_send(struct bench_xport *x, struct bench_auth *a)
{
	uint8_t *buf;
	size_t cap, len;
	uint16_t l;
	uint64_t id = HELLO_IDS | (a->next_id++ & 0xffffff);

	if (x->tx_prepare(x, 1, &buf, &cap) != 1)
		return 0;
	len = km_tgt_hello_build(id, buf, cap);
	if (len != 0)
		len = km_tgt_seal(&a->hseal, buf, len, cap);
	l = (uint16_t)len;
	if (x->tx_send(x, len != 0 ? 1 : 0, &l) != 1)
		return 0;
	a->hellos++;
	return id;
}

/* A HELLO answered OK: keep its cookie when the server requires one. */
static void
hello_take(struct bench_auth *a, const struct km_tgt_hello *h)
{
	const struct bench_conf *c = a->c;

	if ((h->flags & KM_HELLO_F_COOKIES) == 0) {
		km_tgt_seal_init(&a->seal, 0, 0, c->key_id, c->has_key ? c->key : NULL);
		a->renew_ns = 0;
		return;
	}
	km_tgt_seal_init(&a->seal, 1, h->cookie, c->key_id, c->has_key ? c->key : NULL);
	/* Good at least valid_ms after the HELLO was sent: renew at half of that. 0: no
	 * lifetime given, renewed when refused. */
	a->renew_ns = h->valid_ms != 0 ? a->hello_ns + (uint64_t)h->valid_ms * 500000ull : 0;
}

int
bench_hello_start(struct bench_xport *x, const struct bench_conf *c, struct bench_auth *a,
	char *err, size_t errlen)
{
	const struct timespec nap = {.tv_nsec = 20000};
	const uint8_t *bufs[BENCH_BURST];
	uint16_t lens[BENCH_BURST];
	struct km_tgt_hello h;
	unsigned int try, n, i;
	uint64_t now;
	int got = 0;

	memset(a, 0, sizeof(*a));
	a->c = c;
	a->timeout_ns = c->timeout_us * 1000;
	a->next_id = 1;
	km_tgt_seal_init(&a->seal, 0, 0, c->key_id, c->has_key ? c->key : NULL);
	km_tgt_seal_init(&a->hseal, 0, 0, c->key_id, c->has_key ? c->key : NULL);
	for (try = 0; try < HELLO_TRIES && !got && !bench_stop; try++) {
		a->hello_ns = bench_now_ns();
		a->hello_id = hello_send(x, a);
		while (!got && !bench_stop &&
			(now = bench_now_ns()) - a->hello_ns < a->timeout_ns) {
			n = x->rx(x, BENCH_BURST, bufs, lens);
			for (i = 0; i < n && !got; i++)
				got = a->hello_id != 0 &&
				      km_tgt_hello_parse(bufs[i], lens[i], a->hello_id, &h) == 0;
			if (n == 0)
				nanosleep(&nap, NULL);
		}
	}
	a->hello_id = 0;
	if (!got) {
		/* The run reports a server that does not answer; a refused request renews. */
		if (!c->quiet)
			fprintf(stderr,
				"keymap-bench: no answer to HELLO: going on without a cookie\n");
		return 0;
	}
	switch (h.status) {
	case KM_ST_OK:
		if ((h.flags & KM_HELLO_F_AUTH) != 0 && !c->has_key) {
			snprintf(
				err, errlen, "the server requires a client key: give --key ID:HEX");
			return -1;
		}
		hello_take(a, &h);
		if (!c->quiet && (h.flags & KM_HELLO_F_COOKIES) != 0)
			fprintf(stderr,
				"keymap-bench: the server requires cookies (valid %u ms): requests "
				"carry one\n",
				h.valid_ms);
		return 0;
	case KM_ST_BAD_REQUEST:
		/* A server from before HELLO: it takes no trailer either. */
		if (c->has_key) {
			snprintf(err, errlen,
				"the server does not know HELLO nor client keys: leave out --key");
			return -1;
		}
		return 0;
	case KM_ST_DENIED:
		if (h.deny == KM_DENY_AUTH) {
			snprintf(err, errlen, "%s",
				c->has_key ? "the server refused the client key (unknown key id "
					     "or wrong secret)"
					   : "the server requires a client key: give --key ID:HEX");
			return -1;
		}
		/* fallthrough */
	default:
		snprintf(err, errlen, "HELLO answered %s", km_status_name(h.status));
		return -1;
	}
}

void
bench_hello_tick(struct bench_xport *x, struct bench_auth *a, uint64_t now)
{
	if (a->hello_id != 0) {
		if (now - a->hello_ns < a->timeout_ns)
			return;
		/* Lost: again. */
		a->hello_id = 0;
		a->renew_ns = now;
	}
	if (a->renew_ns == 0 || now < a->renew_ns)
		return;
	a->hello_ns = now;
	a->hello_id = hello_send(x, a);
}

int
bench_hello_reply(struct bench_auth *a, const uint8_t *buf, size_t len)
{
	struct km_tgt_hello h;

	if (a->hello_id == 0 || km_tgt_hello_parse(buf, len, a->hello_id, &h) != 0)
		return 0;
	a->hello_id = 0;
	if (h.status == KM_ST_OK)
		hello_take(a, &h);
	else
		a->renew_ns = 0; /* refused now: the run's errors tell */
	return 1;
}

void
bench_hello_refused(struct bench_auth *a, uint64_t now)
{
	/* At most one HELLO per timeout: requests sent before the last one's cookie came
	 * may still be coming back refused. */
	if (a->hello_ns != 0 && now - a->hello_ns < a->timeout_ns)
		return;
	if (a->renew_ns == 0 || a->renew_ns > now)
		a->renew_ns = now;
}
