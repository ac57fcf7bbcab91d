/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libkeymap's address validation. A server may refuse to send a reply larger than its
 * request (GET, MGET, MAP) to a source that has not proved its address: it answers
 * DENIED with reason KM_DENY_COOKIE instead. The handle then fetches a cookie with HELLO
 * (in a slot of its own, so it never waits for a free one), parks the refused request
 * (KM_SLOT_WAIT_COOKIE) and resends it, same req_id, with the cookie when the HELLO
 * ends. The cookie is bound to the socket's address and port and to the server's
 * secrets: one per server the handle talks to (struct km_peer), each with its own HELLO
 * slot; everything below is per server.
 *
 * When a HELLO is sent:
 *   - a request is answered DENIED/cookie: first contact with a server that requires
 *     cookies, a server restart (new secrets), a cookie refused early;
 *   - renewal: half of valid_ms after the HELLO that brought the cookie, the next request
 *     whose reply may be larger starts one, and goes out at once with the current cookie,
 *     still good; requests that do not need a cookie never start one;
 *   - expiry: valid_ms after that HELLO was sent the cookie is dropped; a request whose
 *     reply may be larger then waits for the HELLO (started if the renewal did not run);
 *   - km_client_hello().
 * A server without HELLO never sends DENIED/cookie, so it never hears one, and no cookie
 * is ever attached to its requests (a cookie is only taken from a HELLO answered OK).
 *
 * What is attached: the cookie, while one is held and not expired, to every request it
 * fits in (all but writes within 8 bytes of the datagram limit: their reply is never
 * larger than the request); the client key's id and MAC, when the handle has a key, to
 * every request, HELLO and MAP included.
 *
 * A HELLO that fails (timeout, BAD_REQUEST from a server without HELLO, DENIED) fails the
 * requests that wait for it: KM_ERR_AUTH when the server refused the key, KM_ERR_TIMEOUT
 * or KM_ERR_BUSY as they came, else KM_ERR_DENIED. A request refused for want of a cookie
 * KM_COOKIE_TRIES + 1 times fails with KM_ERR_DENIED.
 */

#include <string.h>

#include "km_client_priv.h"

void
km_hello_start(struct km_client *c, uint32_t p)
{
	struct km_cookie_state *k = &c->peers[p].ck;

	if (k->hello_busy)
		return;
	k->hello_busy = true;
	memset(&k->op, 0, sizeof(k->op));
	k->op.op = KM_OP_HELLO;
	k->op.val = k->pad;
	k->op.vlen = KM_HELLO_LEN;
	k->op.buf = k->reply;
	k->op.cap = sizeof(k->reply);
	c->st.cookie_fetches++;
	/* To the server's worker 0: the cookie is good on every worker port. */
	km_slot_arm(c, km_hello_slot(c, p), &k->op, KM_WORKER_MAP);
}

bool
km_cookie_gate(struct km_client *c, uint32_t idx)
{
	struct km_slot *s = &c->slots[idx];
	struct km_cookie_state *k = &c->peers[s->peer].ck;
	bool grows;
	uint64_t now;

	/* Nothing to decide: no cookie, none asked for (every request of an old server). */
	if (km_is_hello_slot(c, idx) || (!k->held && !k->required && !k->hello_busy))
		return false;
	grows = km_op_grows(s->hdr.op);
	if (k->held && (k->expires != 0 || k->renew != 0)) {
		now = km_now();
		if (k->expires != 0 && now >= k->expires)
			k->held = false;
		else if (grows && k->renew != 0 && now >= k->renew)
			km_hello_start(c, s->peer);
	}
	/* Without a cookie a larger reply would be refused (the server said it requires
	 * one, or a HELLO is under way for a refused request): wait for the HELLO. */
	if (!grows || k->held || (!k->required && !k->hello_busy))
		return false;
	km_hello_start(c, s->peer);
	s->state = KM_SLOT_WAIT_COOKIE;
	k->nb_wait++;
	return true;
}

void
km_cookie_denied(struct km_client *c, uint32_t idx, uint64_t now)
{
	struct km_slot *s = &c->slots[idx];
	struct km_cookie_state *k = &c->peers[s->peer].ck;

	if (s->denials >= KM_COOKIE_TRIES) {
		km_slot_done(c, idx, KM_ERR_DENIED, now);
		return;
	}
	s->denials++;
	/* An answered attempt does not use up a timeout retry. */
	if (s->attempts > 0)
		s->attempts--;
	/* The cookie this attempt carried is no longer taken (the server restarted, or its
	 * secrets turned over early): drop it, unless a newer one came since. */
	if (k->held && s->cookie_gen == k->gen)
		k->held = false;
	k->required = true;
	/* With a newer cookie: at once. Else parked, and a HELLO started if none is out.
	 * To the same server: the refusal was about its cookie, not about the route. */
	if (!km_cookie_gate(c, idx))
		km_slot_transmit(c, idx);
}

/* The error of a request that waited for a HELLO which failed with err. */
static int
km_hello_wait_err(int err)
{
	switch (err) {
	case KM_ERR_AUTH:
	case KM_ERR_TIMEOUT:
	case KM_ERR_BUSY:
	case KM_ERR_NOMEM:
		return err;
	default:
		/* BAD_REQUEST (a server without HELLO), DENIED, a malformed reply: the server
		 * refuses larger replies without a cookie and gives none. */
		return KM_ERR_DENIED;
	}
}

void
km_hello_end(struct km_client *c, uint32_t p, int err, uint64_t now)
{
	struct km_cookie_state *k = &c->peers[p].ck;
	const struct km_slot *hs = &c->slots[km_hello_slot(c, p)];
	uint64_t life;
	uint32_t i;

	k->hello_busy = false;
	if (err == KM_OK && k->op.len != KM_HELLO_LEN)
		err = KM_ERR_PROTO;
	k->hello_result = err;
	if (err == KM_OK) {
		k->last.cookie = km_get64(k->reply);
		k->last.valid_ms = km_get32(k->reply + 8);
		k->last.flags = km_get32(k->reply + 12);
		k->required = (k->last.flags & KM_HELLO_F_COOKIES) != 0;
		k->held = k->required;
		if (k->held) {
			k->cookie = k->last.cookie;
			if (++k->gen == 0)
				k->gen = 1;
			/* Counted from the HELLO's first send: the server made the cookie after
			 * it, so the cookie lives at least that long. valid_ms 0: no lifetime
			 * given, the cookie is used until refused. */
			life = (uint64_t)k->last.valid_ms * 1000000ull;
			k->expires = life != 0 ? hs->first_ns + life : 0;
			k->renew = life != 0 ? hs->first_ns + life / 2 : 0;
		}
	} else if (!(k->held && (k->expires == 0 || now < k->expires))) {
		/* Send as to a server without cookies; a refusal starts over. A renewal that
		 * failed leaves a cookie still valid in use. */
		k->held = false;
		k->required = false;
	}
	for (i = 0; i <= km_map_slot(c) && k->nb_wait > 0; i++) {
		if (c->slots[i].state != KM_SLOT_WAIT_COOKIE || c->slots[i].peer != p)
			continue;
		if (err == KM_OK) {
			/* Straight out, whatever the cookie's age: it was just handed out. */
			k->nb_wait--;
			km_slot_transmit(c, i);
		} else {
			km_slot_done(c, i, km_hello_wait_err(err), now);
		}
	}
}

int
km_client_hello(struct km_client *c, struct km_client_hello *out)
{
	const struct km_cookie_state *k;
	int rc;

	if (c == NULL || out == NULL || km_engine_busy(c))
		return KM_ERR_INVAL;
	/* To the home server. One under way (a renewal) is as good as a new one. */
	k = &c->peers[c->home].ck;
	km_hello_start(c, c->home);
	c->sync_peer = (int)c->home;
	rc = km_run(c, NULL, NULL, 0, true);
	c->sync_peer = -1;
	if (rc < 0)
		return rc;
	if (k->hello_result == KM_OK)
		*out = k->last;
	return k->hello_result;
}
