/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Who gets what: HELLO cookies (a reply larger than its request goes only to a source that
 * proved its address, as DNS cookies and QUIC retry tokens do) and client keys (a MAC over
 * every request, per-key permissions). See docs/protocol.md 1.4 and 1.5.
 */

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>

#include "proc_private.h"

static void
draw(struct km_hello_secrets *hs, uint64_t slot)
{
	unsigned int i = (unsigned int)(slot % KM_HELLO_SECRETS);
	uint64_t k[2];

	randombytes_buf(k, sizeof(k));
	atomic_store_explicit(&hs->key[i][0], k[0], memory_order_relaxed);
	atomic_store_explicit(&hs->key[i][1], k[1], memory_order_relaxed);
	sodium_memzero(k, sizeof(k));
}

int
km_hello_init(struct km_hello_secrets *hs, uint32_t slot_ms, uint64_t now_ns)
{
	uint64_t s;
	unsigned int i;

	if (slot_ms == 0)
		return -EINVAL;
	if (sodium_init() < 0)
		return -EIO;
	hs->slot_ns = slot_ms * 1000000ull;
	s = now_ns / hs->slot_ns;
	for (i = 0; i < KM_HELLO_SECRETS; i++)
		draw(hs, s + i);
	hs->drawn = s + 2;
	return 0;
}

void
km_hello_rotate(struct km_hello_secrets *hs, uint64_t now_ns)
{
	uint64_t s = now_ns / hs->slot_ns, t;

	if (hs->drawn >= s + 2)
		return;
	/* Slots s + 1 and before may have started for a reader: left as they are. */
	for (t = hs->drawn + 1 > s + 2 ? hs->drawn + 1 : s + 2; t <= s + 2; t++)
		draw(hs, t);
	hs->drawn = s + 2;
}

/* The cookie of src in slot s. */
static uint64_t
cookie_of(const struct km_hello_secrets *hs, uint64_t src, uint64_t s)
{
	unsigned int i = (unsigned int)(s % KM_HELLO_SECRETS);
	uint8_t key[KM_MAC_KEY_LEN];

	km_put64(key, atomic_load_explicit(&hs->key[i][0], memory_order_relaxed));
	km_put64(key + 8, atomic_load_explicit(&hs->key[i][1], memory_order_relaxed));
	return km_cookie(key, src, s);
}

int
proc_guard_init(struct km_proc *p)
{
	if (p->hello == NULL)
		return 0;
	p->seen = calloc(PROC_COOKIE_SEEN, sizeof(*p->seen));
	return p->seen == NULL ? -ENOMEM : 0;
}

void
proc_guard_fini(struct km_proc *p)
{
	free(p->seen);
	p->seen = NULL;
}

void
km_proc_set_auth(struct km_proc *p, const struct km_auth *a)
{
	p->auth = a;
}

static inline struct proc_cookie_seen *
seen_slot(struct km_proc *p, uint64_t src)
{
	return &p->seen[((src * 0x9e3779b97f4a7c15ULL) >> 40) & (PROC_COOKIE_SEEN - 1)];
}

/*
 * Whether m carries a valid cookie for src: made in the current slot or the one before
 * (the clock of km_proc_time()). A source's last valid cookie is remembered (per worker,
 * direct-mapped), so a client usually costs one SipHash per slot, at most two per request.
 */
int
proc_cookie_valid(struct km_proc *p, uint64_t src, const struct km_msg *m)
{
	const struct km_hello_secrets *hs = p->hello;
	struct proc_cookie_seen *e;
	uint64_t s, t;

	if ((m->hdr.flags & KM_F_COOKIE) == 0)
		return 0;
	s = p->hello_slot;
	e = seen_slot(p, src);
	/* e->slot is the cookie's slot + 1 (0: empty). */
	if (e->src == src && e->cookie == m->cookie && (e->slot == s + 1 || e->slot == s))
		return 1;
	if (cookie_of(hs, src, s) == m->cookie)
		t = s;
	else if (s > 0 && cookie_of(hs, src, s - 1) == m->cookie)
		t = s - 1;
	else
		return 0;
	*e = (struct proc_cookie_seen){.src = src, .cookie = m->cookie, .slot = t + 1};
	return 1;
}

/*
 * The client-key check of a request (not handed over: the receiving worker checked it).
 * @return 0, or the reason to deny it (enum km_deny).
 */
uint8_t
proc_auth_check(struct km_proc *p, const struct km_proc_req *r)
{
	const struct km_msg *m = &r->msg;
	const struct km_auth_key *k;
	struct km_mget_iter it;
	const uint8_t *key;
	uint8_t klen;

	if (m->mac == NULL)
		return p->auth != NULL && p->auth->required ? KM_DENY_AUTH : 0;
	k = km_auth_find(p->auth, m->key_id);
	if (k == NULL || !km_mac_check(k->secret, r->buf, m))
		return KM_DENY_AUTH;
	/* A SCAN's prefix must begin with one of the key's prefixes: then so do its keys. */
	if (op_single_key(m->hdr.op) || m->hdr.op == KM_OP_SCAN)
		return km_auth_allows(k, m->hdr.op, m->key, m->hdr.key_len) ? 0 : KM_DENY_PERM;
	if (m->hdr.op != KM_OP_MGET)
		return km_auth_allows(k, m->hdr.op, NULL, 0) ? 0 : KM_DENY_PERM;
	/* Every key of an MGET (the body was validated by the parser). */
	km_mget_req_begin(&it, m->val, m->hdr.val_len);
	while (km_mget_req_next(&it, &key, &klen))
		if (!km_auth_allows(k, m->hdr.op, key, klen))
			return KM_DENY_PERM;
	return 0;
}

/* HELLO: the cookie of src, how long it is good for at least, what the server requires. */
size_t
proc_exec_hello(struct km_proc *p, const struct km_shardmap *map, const struct km_msg *req,
	uint64_t src, uint8_t *out)
{
	const struct km_hello_secrets *hs = p->hello;
	uint64_t cookie = 0, s;
	uint32_t flags = 0, valid_ms = 0;
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = req->hdr.op,
		.flags = KM_F_REPLY,
		.val_len = KM_HELLO_LEN,
		.epoch = km_shardmap_epoch_fast(map),
		.req_id = req->hdr.req_id,
	};

	p->cnt.req_hello++;
	if (hs != NULL) {
		s = p->hello_slot;
		cookie = cookie_of(hs, src, s);
		*seen_slot(p, src) =
			(struct proc_cookie_seen){.src = src, .cookie = cookie, .slot = s + 1};
		valid_ms = (uint32_t)(hs->slot_ns / 1000000); /* the rest of this slot, the next */
		flags |= KM_HELLO_F_COOKIES;
	}
	if (p->auth != NULL && p->auth->required)
		flags |= KM_HELLO_F_AUTH;
	km_hdr_encode(out, &h);
	km_put64(out + KM_HDR_LEN, cookie);
	km_put32(out + KM_HDR_LEN + 8, valid_ms);
	km_put32(out + KM_HDR_LEN + 12, flags);
	return KM_HDR_LEN + KM_HELLO_LEN;
}
