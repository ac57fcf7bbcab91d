/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libkeymap against a fake keymap server: a thread serving n UDP sockets on 127.0.0.1
 * (one per worker, consecutive ports) with km_proto, km_shardmap and an in-memory
 * table. Several fakes on 127.0.0.2, 127.0.0.3, ... play the nodes of a cluster: each
 * holds its node's view of one cluster map, answers MAP with encoding 2.0 and MOVED for
 * the shards of the other nodes. Each test scripts the fake (drop, BUSY, duplicate, silence,
 * publish a new map) and checks what the client did from the fake's request log: ports, req_ids,
 * epochs. It can also play a server that requires cookies (HELLO) or client keys (MACs), or one
 * that predates them.
 *
 * Deterministic: fixed seeds; timing only enters through generous upper bounds.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "km_client.h"
#include "km_proto.h"
#include "km_shardmap.h"

#define FK_WORKERS_MAX 8
#define FK_TABLE       4096 /* power of two */
#define FK_LOG         65536
#define FK_DEDUP       1024
#define FK_KEY_LOG     32

struct fk_entry {
	uint8_t used; /* slot holds this key (present or deleted) */
	uint8_t present;
	uint8_t klen;
	uint8_t key[KM_KEY_MAX];
	uint32_t vlen;
	uint64_t version;
	uint8_t *val; /* malloc'ed: values up to KM_VALUE_MAX_LARGE */
};

/* One request as the fake received it (before any scripted drop). */
struct fk_req {
	uint8_t op;
	uint8_t worker; /* socket index it arrived on */
	uint16_t nkeys; /* MGET: keys in the body */
	uint32_t epoch;
	uint64_t req_id;
	uint64_t version; /* CAS/DEL expected version, MAP cursor */
	uint32_t session;
	uint8_t klen;
	uint8_t key[FK_KEY_LOG];
	uint16_t flags;  /* KM_F_COOKIE, KM_F_AUTH */
	uint64_t cookie; /* flags & KM_F_COOKIE */
	uint32_t key_id; /* flags & KM_F_AUTH ... */
	uint8_t mac_ok;  /* ... and whether the MAC is right for the fake's key */
};

struct fk_dedup {
	uint64_t req_id;
	size_t len;
	uint8_t buf[KM_DGRAM_MAX];
};

struct fake {
	int fd[FK_WORKERS_MAX];
	unsigned int n;
	uint16_t base;
	pthread_t thread;
	atomic_int stop;

	pthread_mutex_t lock; /* all below: test thread and server thread */
	struct km_shardmap *map;
	struct km_shardmap *next_map; /* published right after a MAP chunk at cursor 0 */
	int map_disabled;             /* MAP -> BAD_REQUEST, replies carry epoch 0 */
	int check_owner;              /* apply the MOVED rule (docs/protocol.md 1.1) */
	int silent;                   /* never reply */
	int drop_req;                 /* drop the next k requests */
	int drop_every;               /* drop every k-th request */
	int drop_map;                 /* drop every MAP request */
	int drop_reply;               /* apply the next k writes, then drop their reply */
	int busy;                     /* answer BUSY to the next k key requests */
	int dup;                      /* send every reply twice */
	int replay;                   /* before each reply, send the previous one again */
	size_t map_cap;               /* MAP reply body limit */
	uint8_t map_version;          /* != 0: version byte stamped into MAP chunks */
	size_t mget_cap;              /* MGET reply datagram limit */
	int map_corrupt;              /* != 0: MAP chunk 0 of a cluster map made malformed
				       * (enum fk_corrupt) */
	int reply_fd;                 /* > 0: replies leave from this socket (another
				       * address) */
	/* Address validation: a reply larger than its request needs a cookie. */
	int cookies;          /* require cookies (HELLO answers with flag COOKIES) */
	uint64_t cookie;      /* the cookie HELLO hands out; it and prev_cookie are valid */
	uint64_t prev_cookie; /* 0: none */
	int rotate;           /* every HELLO hands out a new cookie (the old one stays valid) */
	uint32_t valid_ms;    /* in the HELLO reply */
	int hello_bad;        /* HELLO -> BAD_REQUEST (a server without HELLO) */
	int hello_wrong;      /* HELLO hands out a cookie it does not take */
	int drop_hello;       /* never answer HELLO */
	int old_server;       /* any flag in a request, HELLO -> BAD_REQUEST */
	int crew;             /* OK GET replies of keys starting "hot" carry KM_F_CREW */
	/* Client keys. */
	uint32_t auth_id; /* != 0: the one key the fake knows ... */
	uint8_t auth_key[KM_MAC_KEY_LEN];
	int auth_required; /* ... a MAC is required on every request */
	int auth_ro;       /* the key may not write (DENIED/PERM) */
	uint64_t next_version;
	uint64_t applied; /* writes applied */
	unsigned long nreq;
	struct fk_entry *table;
	struct fk_req *log;
	unsigned int nlog;
	struct fk_dedup *dedup;
	unsigned int dedup_next;
	uint8_t prev[KM_MSG_MAX];
	size_t prev_len;
	/* The server thread's buffers: each fake has its own (nodes of a cluster run at
	 * once). */
	uint8_t rx[KM_MSG_MAX + 1];
	uint8_t out[KM_MSG_MAX];
};

static struct fake *fk; /* the fake of the running test */

/* Ways to break the node table of a 2.0 chunk 0 (docs/protocol.md 6.2). */
enum fk_corrupt {
	FK_CORRUPT_NONE = 0,
	FK_CORRUPT_NO_TABLE,   /* flag bit 1 cleared: chunk 0 without the table */
	FK_CORRUPT_EMPTY,      /* n = 0 */
	FK_CORRUPT_TOO_MANY,   /* n = 33 */
	FK_CORRUPT_TRUNCATED,  /* the last node cut short */
	FK_CORRUPT_SUM,        /* workers that do not add up to nb_workers */
	FK_CORRUPT_PORT0,      /* a node with port 0 */
	FK_CORRUPT_ADDR0,      /* a node with address 0 */
	FK_CORRUPT_OWNER,      /* an entry owned by no worker of the table */
	FK_CORRUPT_TABLE_LATE, /* the table in chunk 1 as well */
	FK_CORRUPT_MAX,
};

/* xorshift64*: fixed seeds make every run identical. */
static uint64_t
rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static unsigned int
fk_owner_of(const struct km_shardmap *m, const void *key, size_t klen)
{
	struct km_shardmap_route rt;

	assert_int_equal(km_shardmap_route(m, key, klen, &rt), 0);
	return rt.owner;
}

/* Shard of a key in m. */
static const struct km_shard *
shard_of(const struct km_shardmap *m, const char *key)
{
	struct km_shardmap_route rt;

	assert_int_equal(km_shardmap_route(m, (const uint8_t *)key, strlen(key), &rt), 0);
	return rt.shard;
}

static uint64_t
id_at(const struct km_shardmap *m, uint32_t i)
{
	return km_shard_id(km_shardmap_shard_at(m, i));
}

static uint16_t
owner_at(const struct km_shardmap *m, uint32_t i)
{
	return km_shard_owner(km_shardmap_shard_at(m, i));
}

static uint32_t
fk_hash(const uint8_t *key, size_t len)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ key[i]) * 16777619u;
	return h;
}

/* Entry for key: existing one, or (create) a fresh slot. Entries are never freed. */
static struct fk_entry *
fk_find(struct fake *f, const uint8_t *key, size_t klen, int create)
{
	uint32_t pos = fk_hash(key, klen) & (FK_TABLE - 1);

	while (f->table[pos].used) {
		struct fk_entry *e = &f->table[pos];

		if (e->klen == klen && memcmp(e->key, key, klen) == 0)
			return e;
		pos = (pos + 1) & (FK_TABLE - 1);
	}
	if (!create)
		return NULL;
	f->table[pos].used = 1;
	f->table[pos].klen = (uint8_t)klen;
	memcpy(f->table[pos].key, key, klen);
	return &f->table[pos];
}

static const struct fk_dedup *
fk_dedup_find(const struct fake *f, uint64_t req_id)
{
	unsigned int i;

	for (i = 0; i < FK_DEDUP; i++)
		if (f->dedup[i].len != 0 && f->dedup[i].req_id == req_id)
			return &f->dedup[i];
	return NULL;
}

/* Execute one key op; fills rh (status, version) and the value to send. */
static const uint8_t *
fk_exec(struct fake *f, const struct km_msg *m, struct km_hdr *rh)
{
	struct fk_entry *e = fk_find(f, m->key, m->hdr.key_len, m->hdr.op != KM_OP_GET);
	uint64_t cur = e != NULL && e->present ? e->version : 0;

	switch (m->hdr.op) {
	case KM_OP_GET:
		if (cur == 0) {
			rh->status = KM_ST_NOT_FOUND;
			return NULL;
		}
		rh->version = e->version;
		rh->val_len = e->vlen;
		return e->val;
	case KM_OP_CAS:
		if (m->hdr.version != cur) {
			rh->status = KM_ST_VERSION_MISMATCH;
			rh->version = cur;
			return NULL;
		}
		/* fallthrough */
	case KM_OP_PUT:
		e->present = 1;
		e->vlen = m->hdr.val_len;
		e->val = realloc(e->val, e->vlen + 1);
		assert_non_null(e->val);
		memcpy(e->val, m->val, m->hdr.val_len);
		e->version = ++f->next_version;
		rh->version = e->version;
		f->applied++;
		return NULL;
	case KM_OP_DEL:
		if (cur == 0) {
			rh->status = KM_ST_NOT_FOUND;
			return NULL;
		}
		if (m->hdr.version != 0 && m->hdr.version != cur) {
			rh->status = KM_ST_VERSION_MISMATCH;
			rh->version = cur;
			return NULL;
		}
		e->present = 0;
		rh->version = cur;
		f->applied++;
		return NULL;
	}
	rh->status = KM_ST_BAD_REQUEST;
	return NULL;
}

/*
 * The MOVED rule: a request with a non-zero epoch other than the server's, sent to a
 * worker that does not own its (first) key. Otherwise the owner executes it.
 */
static int
fk_moved(const struct fake *f, const struct km_msg *m, const uint8_t *key, size_t klen,
	unsigned int w)
{
	unsigned int owner;

	if (f->map_disabled)
		return 0;
	owner = fk_owner_of(f->map, key, klen);
	/* A cluster node: a shard of another node is MOVED whatever the epoch. */
	if (owner == KM_OWNER_REMOTE)
		return 1;
	return f->check_owner && m->hdr.epoch != 0 && m->hdr.epoch != km_shardmap_epoch(f->map) &&
	       owner != w;
}

/* Break the 2.0 chunk at out (len bytes, of a cluster map) as f->map_corrupt says.
 * @return its new length. */
static size_t
fk_corrupt(const struct fake *f, uint8_t *out, size_t len)
{
	uint32_t first = km_get32(out + 16), count = km_get16(out + 20);
	uint8_t *t = out + KM_MAP_HDR_LEN + (size_t)count * KM_MAP_ENTRY_LEN;

	if (first != 0) {
		if (f->map_corrupt == FK_CORRUPT_TABLE_LATE) {
			out[11] |= KM_MAP_F_NODES;
			t[0] = 1;
			km_put32(t + 1, 0x7f000002);
			km_put16(t + 5, 7070);
			km_put16(t + 7, km_get16(out + 4));
			return len + 1 + KM_MAP_NODE_LEN;
		}
		return len;
	}
	switch (f->map_corrupt) {
	case FK_CORRUPT_NO_TABLE:
		out[11] &= (uint8_t)~KM_MAP_F_NODES;
		return len;
	case FK_CORRUPT_EMPTY:
		t[0] = 0;
		return len;
	case FK_CORRUPT_TOO_MANY:
		t[0] = KM_MAP_NODES_MAX + 1;
		return len;
	case FK_CORRUPT_TRUNCATED:
		return len - 3;
	case FK_CORRUPT_SUM:
		km_put16(t + 1 + 6, (uint16_t)(km_get16(t + 1 + 6) + 1));
		return len;
	case FK_CORRUPT_PORT0:
		km_put16(t + 1 + 4, 0);
		return len;
	case FK_CORRUPT_ADDR0:
		km_put32(t + 1, 0);
		return len;
	case FK_CORRUPT_OWNER:
		km_put16(out + KM_MAP_HDR_LEN + 4, km_get16(out + 4));
		return len;
	}
	return len;
}

/*
 * MGET body into out (at most cap bytes). Executed by the owner of the first key: other
 * keys it does not own get MOVED; entries that do not fit get TOO_LARGE.
 */
static size_t
fk_mget(struct fake *f, const struct km_msg *m, unsigned int w, uint8_t *out, size_t cap)
{
	struct km_mget_iter it;
	const uint8_t *key;
	size_t off = 2, left;
	uint16_t count = 0;
	uint8_t klen;

	km_mget_req_begin(&it, m->val, m->hdr.val_len);
	left = it.left;
	if (!f->map_disabled) {
		const uint8_t *first = it.p + 1;

		w = fk_owner_of(f->map, first, it.p[0]);
	}
	while (km_mget_req_next(&it, &key, &klen)) {
		struct fk_entry *e = fk_find(f, key, klen, 0);
		uint8_t *p = out + off;

		/* Room for the fixed part of this entry and of every later one. */
		left--;
		p[0] = KM_ST_OK;
		km_put64(p + 1, 0);
		km_put16(p + 9, 0);
		if (f->check_owner && !f->map_disabled && fk_owner_of(f->map, key, klen) != w) {
			p[0] = KM_ST_MOVED;
		} else if (e == NULL || !e->present) {
			p[0] = KM_ST_NOT_FOUND;
		} else if (off + KM_MGET_REP_ENTRY_HDR * (left + 1) + e->vlen > cap) {
			p[0] = KM_ST_TOO_LARGE;
		} else {
			km_put64(p + 1, e->version);
			km_put16(p + 9, e->vlen);
			memcpy(p + KM_MGET_REP_ENTRY_HDR, e->val, e->vlen);
		}
		off += KM_MGET_REP_ENTRY_HDR + km_get16(p + 9);
		count++;
	}
	km_put16(out, count);
	return off;
}

static void
fk_send(struct fake *f, unsigned int w, const uint8_t *buf, size_t len,
	const struct sockaddr_in *to)
{
	(void)sendto(f->reply_fd > 0 ? f->reply_fd : f->fd[w], buf, len, 0,
		(const struct sockaddr *)to, sizeof(*to));
}

static void
fk_handle(struct fake *f, unsigned int w, const uint8_t *buf, size_t len,
	const struct sockaddr_in *from)
{
	uint8_t *out = f->out;
	const uint8_t *val = NULL;
	struct km_hdr rh;
	struct km_msg m;
	struct fk_req *lg;
	int st, is_write, is_key;
	size_t olen;

	st = km_req_parse(buf, len, KM_VALUE_MAX_LARGE, &m);
	if (st < 0)
		return;
	if (f->old_server && st == KM_ST_OK && (m.hdr.flags != 0 || m.hdr.op == KM_OP_HELLO))
		st = KM_ST_BAD_REQUEST;
	if (f->nlog < FK_LOG) {
		lg = &f->log[f->nlog++];
		memset(lg, 0, sizeof(*lg));
		lg->op = m.hdr.op;
		lg->worker = (uint8_t)w;
		lg->epoch = m.hdr.epoch;
		lg->req_id = m.hdr.req_id;
		lg->version = m.hdr.version;
		lg->session = m.hdr.session;
		if (st == KM_ST_OK && m.hdr.op == KM_OP_MGET)
			lg->nkeys = km_get16(m.val);
		lg->klen = (uint8_t)(m.hdr.key_len < FK_KEY_LOG ? m.hdr.key_len : FK_KEY_LOG);
		if (st == KM_ST_OK)
			memcpy(lg->key, m.key, lg->klen);
		lg->flags = m.hdr.flags;
		if (st == KM_ST_OK && (m.hdr.flags & KM_F_COOKIE) != 0)
			lg->cookie = m.cookie;
		if (st == KM_ST_OK && m.mac != NULL) {
			lg->key_id = m.key_id;
			lg->mac_ok = m.key_id == f->auth_id && km_mac_check(f->auth_key, buf, &m);
		}
	}
	f->nreq++;
	if (f->silent || (m.hdr.op == KM_OP_MAP && f->drop_map) ||
		(m.hdr.op == KM_OP_HELLO && f->drop_hello))
		return;
	if (f->drop_req > 0) {
		f->drop_req--;
		return;
	}
	if (f->drop_every != 0 && f->nreq % (unsigned long)f->drop_every == 0)
		return;

	is_write = m.hdr.op == KM_OP_PUT || m.hdr.op == KM_OP_CAS || m.hdr.op == KM_OP_DEL;
	is_key = is_write || m.hdr.op == KM_OP_GET || m.hdr.op == KM_OP_MGET;
	rh = m.hdr;
	rh.flags = KM_F_REPLY;
	rh.status = KM_ST_OK;
	rh.epoch = f->map_disabled ? 0 : km_shardmap_epoch(f->map);
	rh.key_len = 0;
	rh.val_len = 0;
	rh.version = 0;

	if (st != KM_ST_OK) {
		rh.status = (uint8_t)st;
	} else if ((m.mac == NULL && f->auth_required) ||
		   (m.mac != NULL &&
			   (m.key_id != f->auth_id || !km_mac_check(f->auth_key, buf, &m)))) {
		rh.status = KM_ST_DENIED;
		rh.version = KM_DENY_AUTH;
	} else if (is_write && f->auth_ro && m.mac != NULL) {
		rh.status = KM_ST_DENIED;
		rh.version = KM_DENY_PERM;
	} else if (m.hdr.op == KM_OP_HELLO) {
		if (f->hello_bad) {
			rh.status = KM_ST_BAD_REQUEST;
		} else {
			if (f->rotate) {
				f->prev_cookie = f->cookie;
				f->cookie =
					f->cookie * 6364136223846793005ull + 1442695040888963407ull;
			}
			rh.val_len = KM_HELLO_LEN;
			val = out + KM_HDR_LEN;
			km_put64(out + KM_HDR_LEN,
				f->cookies ? f->cookie ^ (uint64_t)(f->hello_wrong != 0) : 0);
			km_put32(out + KM_HDR_LEN + 8, f->cookies ? f->valid_ms : 0);
			km_put32(out + KM_HDR_LEN + 12,
				(f->cookies ? KM_HELLO_F_COOKIES : 0) |
					(f->auth_required ? KM_HELLO_F_AUTH : 0));
		}
	} else if (is_write && fk_dedup_find(f, m.hdr.req_id) != NULL) {
		/* A retried write: answer what we answered, do not apply it again. */
		const struct fk_dedup *d = fk_dedup_find(f, m.hdr.req_id);

		fk_send(f, w, d->buf, d->len, from);
		return;
	} else if (is_key && f->busy > 0) {
		f->busy--;
		rh.status = KM_ST_BUSY;
	} else if (m.hdr.op == KM_OP_MAP) {
		if (f->map_disabled) {
			rh.status = KM_ST_BAD_REQUEST;
		} else {
			rh.val_len = (uint32_t)km_shardmap_encode(
				f->map, (uint32_t)m.hdr.version, out + KM_HDR_LEN, f->map_cap);
			if (rh.val_len == 0)
				rh.status = KM_ST_BAD_REQUEST;
			val = out + KM_HDR_LEN;
			if (rh.val_len != 0 && f->map_version != 0)
				out[KM_HDR_LEN + 10] = f->map_version;
			if (rh.val_len != 0 && f->map_corrupt != 0)
				rh.val_len = (uint32_t)fk_corrupt(f, out + KM_HDR_LEN, rh.val_len);
			if (f->next_map != NULL && m.hdr.version == 0) {
				km_shardmap_free(f->map);
				f->map = f->next_map;
				f->next_map = NULL;
			}
		}
	} else if (m.hdr.op == KM_OP_MGET) {
		if (fk_moved(f, &m, m.val + 3, m.val[2], w)) {
			rh.status = KM_ST_MOVED;
		} else {
			rh.val_len = (uint32_t)fk_mget(
				f, &m, w, out + KM_HDR_LEN, f->mget_cap - KM_HDR_LEN);
			val = out + KM_HDR_LEN;
		}
	} else if (is_key && fk_moved(f, &m, m.key, m.hdr.key_len, w)) {
		rh.status = KM_ST_MOVED;
	} else if (is_key) {
		val = fk_exec(f, &m, &rh);
		if (f->crew && m.hdr.op == KM_OP_GET && rh.status == KM_ST_OK &&
			m.hdr.key_len >= 3 && memcmp(m.key, "hot", 3) == 0)
			rh.flags |= KM_F_CREW;
	}

	olen = km_msg_build(out, sizeof(f->out), &rh, NULL, val);
	/* A reply larger than the request goes only to a source with a valid cookie. */
	if (f->cookies && olen > len &&
		((m.hdr.flags & KM_F_COOKIE) == 0 ||
			(m.cookie != f->cookie &&
				(f->prev_cookie == 0 || m.cookie != f->prev_cookie)))) {
		rh.status = KM_ST_DENIED;
		rh.val_len = 0;
		rh.version = KM_DENY_COOKIE;
		olen = km_msg_build(out, sizeof(f->out), &rh, NULL, NULL);
	}
	if (is_write && (rh.status == KM_ST_OK || rh.status == KM_ST_NOT_FOUND ||
				rh.status == KM_ST_VERSION_MISMATCH)) {
		struct fk_dedup *d = &f->dedup[f->dedup_next++ % FK_DEDUP];

		d->req_id = m.hdr.req_id;
		d->len = olen;
		memcpy(d->buf, out, olen);
		if (f->drop_reply > 0) {
			f->drop_reply--;
			return;
		}
	}
	if (f->replay && f->prev_len != 0)
		fk_send(f, w, f->prev, f->prev_len, from);
	fk_send(f, w, out, olen, from);
	if (f->dup)
		fk_send(f, w, out, olen, from);
	memcpy(f->prev, out, olen);
	f->prev_len = olen;
}

static void *
fk_thread(void *arg)
{
	struct fake *f = arg;
	struct pollfd pfd[FK_WORKERS_MAX];
	uint8_t *buf = f->rx;
	unsigned int i;

	for (i = 0; i < f->n; i++) {
		pfd[i].fd = f->fd[i];
		pfd[i].events = POLLIN;
	}
	while (!atomic_load(&f->stop)) {
		if (poll(pfd, f->n, 5) <= 0)
			continue;
		for (i = 0; i < f->n; i++) {
			struct sockaddr_in from;
			socklen_t flen = sizeof(from);
			ssize_t r;

			if ((pfd[i].revents & POLLIN) == 0)
				continue;
			while ((r = recvfrom(f->fd[i], buf, sizeof(f->rx), MSG_DONTWAIT,
					(struct sockaddr *)&from, &flen)) >= 0) {
				pthread_mutex_lock(&f->lock);
				fk_handle(f, i, buf, (size_t)r, &from);
				pthread_mutex_unlock(&f->lock);
				flen = sizeof(from);
			}
		}
	}
	return NULL;
}

static int
fk_socket(const char *ip, uint16_t port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	a.sin_port = htons(port);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Socket 0 on an ephemeral port, the others on the next ports; retry when taken. */
static int
fk_bind(struct fake *f, const char *ip, unsigned int n)
{
	unsigned int attempt, i;

	for (attempt = 0; attempt < 64; attempt++) {
		struct sockaddr_in a;
		socklen_t alen = sizeof(a);

		f->fd[0] = fk_socket(ip, 0);
		if (f->fd[0] < 0)
			return -1;
		getsockname(f->fd[0], (struct sockaddr *)&a, &alen);
		f->base = ntohs(a.sin_port);
		for (i = 1; i < n && (uint32_t)f->base + i <= UINT16_MAX; i++) {
			f->fd[i] = fk_socket(ip, (uint16_t)(f->base + i));
			if (f->fd[i] < 0)
				break;
		}
		if (i == n)
			return 0;
		while (i-- > 0)
			close(f->fd[i]);
	}
	return -1;
}

/* A fake with n worker sockets on ip, not serving yet (fk_run). */
static struct fake *
fk_new(const char *ip, unsigned int n)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->table = calloc(FK_TABLE, sizeof(*f->table));
	f->log = calloc(FK_LOG, sizeof(*f->log));
	f->dedup = calloc(FK_DEDUP, sizeof(*f->dedup));
	assert_non_null(f->table);
	assert_non_null(f->log);
	assert_non_null(f->dedup);
	assert_int_equal(fk_bind(f, ip, n), 0);
	f->n = n;
	return f;
}

/* Serve with map m (the fake owns it). */
static void
fk_run(struct fake *f, struct km_shardmap *m)
{
	f->map = m;
	f->check_owner = 1;
	f->cookie = 0x1234567890abcdefull;
	f->valid_ms = 60000;
	f->map_cap = KM_DGRAM_MAX - KM_HDR_LEN;
	f->mget_cap = KM_DGRAM_MAX;
	pthread_mutex_init(&f->lock, NULL);
	assert_int_equal(pthread_create(&f->thread, NULL, fk_thread, f), 0);
}

static struct fake *
fk_start(unsigned int n, uint32_t nb_shards)
{
	struct km_shardmap_params p = {
		.nb_shards = nb_shards,
		.nb_workers = (uint16_t)n,
		.route_sep = '/',
		.route_depth = 1,
	};
	struct fake *f = fk_new("127.0.0.1", n);
	struct km_shardmap *m;

	p.udp_port_base = f->base;
	assert_int_equal(km_shardmap_create(&p, &m), 0);
	fk_run(f, m);
	return f;
}

static void
fk_stop(struct fake *f)
{
	unsigned int i;

	atomic_store(&f->stop, 1);
	pthread_join(f->thread, NULL);
	for (i = 0; i < f->n; i++)
		close(f->fd[i]);
	km_shardmap_free(f->map);
	km_shardmap_free(f->next_map);
	pthread_mutex_destroy(&f->lock);
	for (i = 0; i < FK_TABLE; i++)
		free(f->table[i].val);
	free(f->table);
	free(f->log);
	free(f->dedup);
	free(f);
}

static void
fk_lock(void)
{
	pthread_mutex_lock(&fk->lock);
}

static void
fk_unlock(void)
{
	pthread_mutex_unlock(&fk->lock);
}

/* Replace the fake's map by m (epoch + 1 built by km_shardmap_split/move). */
static void
fk_publish(struct km_shardmap *m)
{
	fk_lock();
	km_shardmap_free(fk->map);
	fk->map = m;
	fk_unlock();
}

static unsigned int
fk_nlog(void)
{
	unsigned int n;

	fk_lock();
	n = fk->nlog;
	fk_unlock();
	return n;
}

static struct fk_req
fk_log_at(unsigned int i)
{
	struct fk_req r;

	fk_lock();
	r = fk->log[i];
	fk_unlock();
	return r;
}

static unsigned int
fk_count_op(unsigned int from, uint8_t op)
{
	unsigned int i, n = 0;

	fk_lock();
	for (i = from; i < fk->nlog; i++)
		n += fk->log[i].op == op;
	fk_unlock();
	return n;
}

static unsigned int
fk_owner(const char *key)
{
	unsigned int w;

	fk_lock();
	w = fk_owner_of(fk->map, key, strlen(key));
	fk_unlock();
	return w;
}

static struct km_client *
cl_open_key(unsigned int timeout_ms, unsigned int retries, int no_steer, const char *auth_key)
{
	struct km_client_opts o = {
		.host = "127.0.0.1",
		.port = fk->base,
		.timeout_ms = timeout_ms,
		.retries = retries,
		.no_steer = no_steer,
		.auth_key = auth_key,
	};
	struct km_client *c = NULL;

	assert_int_equal(km_client_open(&o, &c), KM_OK);
	assert_non_null(c);
	return c;
}

static struct km_client *
cl_open(unsigned int timeout_ms, unsigned int retries, int no_steer)
{
	return cl_open_key(timeout_ms, retries, no_steer, NULL);
}

/* Requests logged from `from` on, of op (0: any), with every flag of `flags` set. */
static unsigned int
fk_count_flags(unsigned int from, uint8_t op, uint16_t flags)
{
	unsigned int i, n = 0;

	fk_lock();
	for (i = from; i < fk->nlog; i++)
		n += (op == 0 || fk->log[i].op == op) && (fk->log[i].flags & flags) == flags;
	fk_unlock();
	return n;
}

static struct km_client_stats
cl_stats(const struct km_client *c)
{
	struct km_client_stats st;

	km_client_get_stats(c, &st);
	return st;
}

static int
put_s(struct km_client *c, const char *k, const char *v, uint64_t *ver)
{
	return km_put(c, k, strlen(k), v, strlen(v), ver);
}

/* GET k and compare with the expected value. */
static void
check_get(struct km_client *c, const char *k, const char *v, uint64_t ver)
{
	char buf[KM_DGRAM_MAX];
	uint64_t got_ver = 0;
	size_t len = 0;

	assert_int_equal(km_get(c, k, strlen(k), buf, sizeof(buf), &len, &got_ver), KM_OK);
	assert_int_equal(len, strlen(v));
	assert_memory_equal(buf, v, len);
	if (ver != 0)
		assert_int_equal(got_ver, ver);
}

/* A key owned by worker w in the fake's current map. */
static void
key_of_worker(unsigned int w, char *key, size_t cap)
{
	unsigned int i;

	for (i = 0; i < 100000; i++) {
		snprintf(key, cap, "w%u-%u", w, i);
		if (fk_owner(key) == w)
			return;
	}
	fail_msg("no key for worker %u", w);
}

static int
setup4(void **state)
{
	(void)state;
	fk = fk_start(4, 16);
	return 0;
}

static int
setup1(void **state)
{
	(void)state;
	fk = fk_start(1, 1);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	fk_stop(fk);
	fk = NULL;
	return 0;
}

static void
test_strerror(void **state)
{
	static const int codes[] = {KM_OK, KM_ERR_NOT_FOUND, KM_ERR_VERSION_MISMATCH,
		KM_ERR_TOO_LARGE, KM_ERR_BAD_REQUEST, KM_ERR_BUSY, KM_ERR_DENIED, KM_ERR_SERVER,
		KM_ERR_TIMEOUT, KM_ERR_INVAL, KM_ERR_SYSTEM, KM_ERR_PROTO, KM_ERR_MOVED,
		KM_ERR_NOMEM, KM_ERR_BUFFER, KM_ERR_MAP_VERSION, KM_ERR_DAMAGED, KM_ERR_FULL,
		KM_ERR_AUTH, KM_ERR_RESOLVE, KM_ERR_UNREACHABLE};
	size_t i, j;

	(void)state;
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		assert_non_null(km_strerror(codes[i]));
		assert_string_not_equal(km_strerror(codes[i]), "unknown error");
		for (j = 0; j < i; j++)
			assert_string_not_equal(km_strerror(codes[i]), km_strerror(codes[j]));
	}
	assert_string_equal(km_strerror(1), "unknown error");
	assert_string_equal(km_strerror(-21), "unknown error");
	assert_string_equal(km_strerror(-1000), "unknown error");
}

static void
test_open_inval(void **state)
{
	static const char *const bad_keys[] = {
		"",
		"7",
		"7:",
		":000102030405060708090a0b0c0d0e0f",
		"0:000102030405060708090a0b0c0d0e0f",
		"4294967296:000102030405060708090a0b0c0d0e0f",
		"-7:000102030405060708090a0b0c0d0e0f",
		" 7:000102030405060708090a0b0c0d0e0f",
		"7:000102030405060708090a0b0c0d0e0",
		"7:000102030405060708090a0b0c0d0e0f0",
		"7:000102030405060708090a0b0c0d0e0g",
		"7:000102030405060708090a0b0c0d0e0f ",
		"7 000102030405060708090a0b0c0d0e0f",
		"7::000102030405060708090a0b0c0d0e0",
	};
	/* Seed lists that do not parse (none is asked anything). */
	static const char *const bad_hosts[] = {
		",",
		"127.0.0.1,",
		",127.0.0.1",
		"127.0.0.1,,127.0.0.2",
		"127.0.0.1:",
		"127.0.0.1:0",
		"127.0.0.1:65536",
		"127.0.0.1:7a",
		"127.0.0.1:-1",
		":7070",
		"127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,"
		"127.0.0.8,127.0.0.9,127.0.0.10,127.0.0.11,127.0.0.12,127.0.0.13,127.0.0.14,"
		"127.0.0.15,127.0.0.16,127.0.0.17",
	};
	struct km_client_opts o = {.host = NULL};
	struct km_client *c = NULL;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++) {
		o.host = bad_hosts[i];
		if (km_client_open(&o, &c) != KM_ERR_INVAL)
			fail_msg("host '%s' accepted", bad_hosts[i]);
		assert_null(c);
	}
	o.host = NULL;
	assert_int_equal(km_client_open(NULL, &c), KM_ERR_INVAL);
	assert_int_equal(km_client_open(&o, &c), KM_ERR_INVAL);
	o.host = "";
	assert_int_equal(km_client_open(&o, &c), KM_ERR_INVAL);
	o.host = "127.0.0.1";
	assert_int_equal(km_client_open(&o, NULL), KM_ERR_INVAL);
	o.window = 1u << 20;
	assert_int_equal(km_client_open(&o, &c), KM_ERR_INVAL);
	assert_null(c);
	o.window = 0;
	for (i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
		o.auth_key = bad_keys[i];
		assert_int_equal(km_client_open(&o, &c), KM_ERR_INVAL);
		assert_null(c);
	}
	o.auth_key = NULL;
	assert_int_equal(km_client_hello(NULL, NULL), KM_ERR_INVAL);
	km_client_close(NULL);
	assert_int_equal(km_get(NULL, "a", 1, NULL, 0, NULL, NULL), KM_ERR_INVAL);
	assert_int_equal(km_batch(NULL, NULL, 0), KM_ERR_INVAL);
	assert_int_equal(km_mget(NULL, NULL, 0), KM_ERR_INVAL);
	assert_int_equal(km_client_epoch(NULL), 0);
}

static void
test_basic(void **state)
{
	struct km_client *c;
	uint64_t v1 = 0, v2 = 0, cur = 0;
	unsigned int w, from;
	char key[32];
	char buf[8];
	size_t len;

	(void)state;
	c = cl_open(500, 3, 0);
	assert_int_equal(km_client_epoch(c), 1);
	assert_int_equal(km_client_nb_workers(c), 4);
	assert_non_null(km_client_map(c));
	assert_int_equal(fk_count_op(0, KM_OP_MAP), 1);

	from = fk_nlog();
	for (w = 0; w < 4; w++) {
		assert_int_equal(km_ping(c, w), KM_OK);
		assert_int_equal(fk_log_at(from + w).worker, w);
	}
	assert_int_equal(km_ping(c, 4), KM_ERR_INVAL);

	for (w = 0; w < 4; w++) {
		key_of_worker(w, key, sizeof(key));
		assert_int_equal(km_client_worker_of(c, key, strlen(key)), w);
		from = fk_nlog();
		assert_int_equal(put_s(c, key, "hello", &v1), KM_OK);
		assert_true(v1 > 0);
		assert_int_equal(fk_log_at(from).worker, w);
		assert_int_equal(fk_log_at(from).epoch, 1);
		check_get(c, key, "hello", v1);
	}

	/* CAS: create-only, mismatch reports the current version, then a good CAS. */
	assert_int_equal(km_cas(c, "cas", 3, "a", 1, 0, &v1), KM_OK);
	assert_int_equal(km_cas(c, "cas", 3, "b", 1, 0, &cur), KM_ERR_VERSION_MISMATCH);
	assert_int_equal(cur, v1);
	assert_int_equal(km_cas(c, "cas", 3, "c", 1, v1 + 100, &cur), KM_ERR_VERSION_MISMATCH);
	assert_int_equal(cur, v1);
	assert_int_equal(km_cas(c, "cas", 3, "d", 1, v1, &v2), KM_OK);
	assert_true(v2 > v1);
	check_get(c, "cas", "d", v2);

	/* Buffer too small: the length is reported. */
	assert_int_equal(put_s(c, "long", "0123456789", NULL), KM_OK);
	assert_int_equal(km_get(c, "long", 4, buf, sizeof(buf), &len, NULL), KM_ERR_BUFFER);
	assert_int_equal(len, 10);

	/* DEL: conditional mismatch, unconditional, then absent. */
	assert_int_equal(km_del(c, "cas", 3, v1), KM_ERR_VERSION_MISMATCH);
	assert_int_equal(km_del(c, "cas", 3, v2), KM_OK);
	assert_int_equal(km_get(c, "cas", 3, buf, sizeof(buf), &len, NULL), KM_ERR_NOT_FOUND);
	assert_int_equal(km_del(c, "cas", 3, 0), KM_ERR_NOT_FOUND);
	assert_int_equal(km_cas(c, "cas", 3, "e", 1, 5, &cur), KM_ERR_VERSION_MISMATCH);
	assert_int_equal(cur, 0);

	assert_int_equal(cl_stats(c).moved, 0);
	assert_int_equal(cl_stats(c).retries, 0);
	assert_int_equal(cl_stats(c).map_refreshes, 1);
	km_client_close(c);
}

static void
test_validation(void **state)
{
	static uint8_t big[KM_MSG_MAX + 64];
	char key[KM_KEY_MAX + 2];
	struct km_batch_op ops[3];
	struct km_client *c;
	unsigned int from;

	(void)state;
	c = cl_open(500, 3, 0);
	memset(key, 'k', sizeof(key));
	from = fk_nlog();

	assert_int_equal(km_put(c, key, 0, "v", 1, NULL), KM_ERR_INVAL);
	assert_int_equal(km_put(c, NULL, 3, "v", 1, NULL), KM_ERR_INVAL);
	assert_int_equal(km_put(c, key, KM_KEY_MAX + 1, "v", 1, NULL), KM_ERR_TOO_LARGE);
	assert_int_equal(km_get(c, key, KM_KEY_MAX + 1, NULL, 0, NULL, NULL), KM_ERR_TOO_LARGE);
	assert_int_equal(km_put(c, key, 1, big, KM_VALUE_MAX_LARGE + 1, NULL), KM_ERR_TOO_LARGE);
	assert_int_equal(km_put(c, key, 1, NULL, 5, NULL), KM_ERR_INVAL);
	/* Each limit fits alone but the datagram would be over KM_MSG_MAX. */
	assert_int_equal(
		km_put(c, key, KM_KEY_MAX, big, KM_MSG_MAX - KM_HDR_LEN - KM_KEY_MAX + 1, NULL),
		KM_ERR_TOO_LARGE);
	assert_int_equal(
		km_cas(c, key, KM_KEY_MAX, big, KM_VALUE_MAX_LARGE, 0, NULL), KM_ERR_TOO_LARGE);
	assert_int_equal(km_del(c, key, 0, 0), KM_ERR_INVAL);

	memset(ops, 0, sizeof(ops));
	ops[0].op = KM_OP_MGET; /* internal to km_mget */
	ops[1].op = 99;
	ops[2].op = KM_OP_GET;
	ops[2].key = key;
	ops[2].klen = KM_KEY_MAX + 1;
	assert_int_equal(km_batch(c, ops, 3), 0);
	assert_int_equal(ops[0].err, KM_ERR_INVAL);
	assert_int_equal(ops[1].err, KM_ERR_INVAL);
	assert_int_equal(ops[2].err, KM_ERR_TOO_LARGE);
	/* Nothing was sent. */
	assert_int_equal(fk_nlog(), from);

	/* The largest valid requests go through. */
	assert_int_equal(km_put(c, key, 1, big, KM_VALUE_MAX_LARGE, NULL), KM_OK);
	assert_int_equal(
		km_put(c, key, KM_KEY_MAX, big, KM_MSG_MAX - KM_HDR_LEN - KM_KEY_MAX, NULL), KM_OK);
	km_client_close(c);
}

/*
 * Values over one datagram: requests from a slot's large buffer, replies up to
 * KM_MSG_MAX received whole, a slot back to its own buffer for a small request after a
 * large one, several large requests in flight, the caller's buffer too small.
 */
static void
test_large_values(void **state)
{
	static uint8_t val[KM_VALUE_MAX_LARGE], got[KM_VALUE_MAX_LARGE];
	static const size_t sizes[] = {KM_VALUE_MAX, KM_VALUE_MAX + 1, 10240,
		KM_MSG_MAX - KM_HDR_LEN - 5}; /* "big/N": 5-byte keys */
	struct km_batch_op ops[8];
	char keys[8][16];
	struct km_client *c;
	uint64_t ver;
	size_t i, len;

	(void)state;
	for (i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)(i * 7 + i / 251);
	c = cl_open(500, 3, 0);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(keys[0], sizeof(keys[0]), "big/%zu", i);
		assert_int_equal(km_put(c, keys[0], strlen(keys[0]), val, sizes[i], &ver), KM_OK);
		memset(got, 0, sizeof(got));
		assert_int_equal(
			km_get(c, keys[0], strlen(keys[0]), got, sizeof(got), &len, &ver), KM_OK);
		assert_int_equal(len, sizes[i]);
		assert_memory_equal(got, val, len);
		/* The same slot, a small request again. */
		assert_int_equal(km_put(c, "small", 5, "v", 1, NULL), KM_OK);
		assert_int_equal(km_get(c, "small", 5, got, sizeof(got), &len, NULL), KM_OK);
		assert_int_equal(len, 1);
	}
	assert_int_equal(km_get(c, "big/2", 5, got, 10239, &len, NULL), KM_ERR_BUFFER);
	assert_int_equal(len, 10240);

	/* Eight large PUTs in flight, then eight GETs of them. */
	memset(ops, 0, sizeof(ops));
	for (i = 0; i < 8; i++) {
		snprintf(keys[i], sizeof(keys[i]), "many/%zu", i);
		ops[i].op = KM_BATCH_PUT;
		ops[i].key = keys[i];
		ops[i].klen = strlen(keys[i]);
		ops[i].val = val + i;
		ops[i].vlen = 20000 + i;
	}
	assert_int_equal(km_batch(c, ops, 8), 8);
	for (i = 0; i < 8; i++) {
		ops[i].op = KM_BATCH_GET;
		ops[i].buf = got + i * 8000;
		ops[i].cap = 8000;
	}
	assert_int_equal(km_batch(c, ops, 8), 0);
	for (i = 0; i < 8; i++) {
		assert_int_equal(ops[i].err, KM_ERR_BUFFER);
		assert_int_equal(ops[i].len, 20000 + i);
	}
	for (i = 0; i < 8; i++) {
		assert_int_equal(
			km_get(c, keys[i], strlen(keys[i]), got, sizeof(got), &len, NULL), KM_OK);
		assert_int_equal(len, 20000 + i);
		assert_memory_equal(got, val + i, len);
	}
	km_client_close(c);
}

static void
test_retry_same_req_id(void **state)
{
	struct km_client *c;
	struct fk_req a, b;
	uint64_t v = 0, applied;
	unsigned int from;
	char key[32];

	(void)state;
	c = cl_open(250, 3, 0);
	key_of_worker(2, key, sizeof(key));

	/* The first datagram is lost: the retry carries the same req_id to the same port. */
	fk_lock();
	fk->drop_req = 1;
	fk_unlock();
	from = fk_nlog();
	assert_int_equal(put_s(c, key, "one", &v), KM_OK);
	assert_int_equal(fk_nlog(), from + 2);
	a = fk_log_at(from);
	b = fk_log_at(from + 1);
	assert_int_equal(a.op, KM_OP_PUT);
	assert_int_equal(b.op, KM_OP_PUT);
	assert_int_equal(a.req_id, b.req_id);
	assert_int_equal(a.worker, 2);
	assert_int_equal(b.worker, 2);
	assert_int_equal(cl_stats(c).retries, 1);
	assert_int_equal(cl_stats(c).timeouts, 1);

	/* The reply is lost after the write was applied: the retry is applied once. */
	fk_lock();
	fk->drop_reply = 1;
	applied = fk->applied;
	fk_unlock();
	from = fk_nlog();
	assert_int_equal(put_s(c, key, "two", &v), KM_OK);
	assert_int_equal(fk_nlog(), from + 2);
	assert_int_equal(fk_log_at(from).req_id, fk_log_at(from + 1).req_id);
	fk_lock();
	assert_int_equal(fk->applied, applied + 1);
	fk_unlock();
	check_get(c, key, "two", v);

	/* Later requests have new ids. */
	from = fk_nlog();
	assert_int_equal(put_s(c, key, "three", NULL), KM_OK);
	assert_int_not_equal(fk_log_at(from).req_id, b.req_id);
	km_client_close(c);
}

static void
test_timeout(void **state)
{
	const unsigned int timeout = 50, retries = 2;
	struct km_client *c;
	uint64_t t0, dt;
	unsigned int from, i;
	char buf[16];

	(void)state;
	c = cl_open(timeout, retries, 0);
	fk_lock();
	fk->silent = 1;
	fk_unlock();
	from = fk_nlog();
	t0 = now_ms();
	assert_int_equal(km_get(c, "k", 1, buf, sizeof(buf), NULL, NULL), KM_ERR_TIMEOUT);
	dt = now_ms() - t0;
	assert_true(dt + 5 >= timeout * (retries + 1));
	assert_true(dt < 3 * timeout * (retries + 1));
	assert_int_equal(fk_nlog(), from + retries + 1);
	for (i = 1; i <= retries; i++)
		assert_int_equal(fk_log_at(from + i).req_id, fk_log_at(from).req_id);
	assert_int_equal(cl_stats(c).timeouts, retries + 1);

	/* The same through the batch API, several ops at once. */
	{
		struct km_batch_op ops[4];

		memset(ops, 0, sizeof(ops));
		for (i = 0; i < 4; i++) {
			ops[i].op = KM_OP_PUT;
			ops[i].key = "batch";
			ops[i].klen = 5;
			ops[i].val = "v";
			ops[i].vlen = 1;
		}
		t0 = now_ms();
		assert_int_equal(km_batch(c, ops, 4), 0);
		dt = now_ms() - t0;
		for (i = 0; i < 4; i++)
			assert_int_equal(ops[i].err, KM_ERR_TIMEOUT);
		assert_true(dt < 3 * timeout * (retries + 1));
	}
	km_client_close(c);
}

static void
test_busy(void **state)
{
	struct km_client *c;
	unsigned int from;

	(void)state;
	c = cl_open(200, 3, 0);
	fk_lock();
	fk->busy = 2;
	fk_unlock();
	from = fk_nlog();
	assert_int_equal(put_s(c, "busykey", "v", NULL), KM_OK);
	assert_int_equal(fk_nlog(), from + 3);
	assert_int_equal(fk_log_at(from).req_id, fk_log_at(from + 2).req_id);
	assert_int_equal(cl_stats(c).retries, 2);
	assert_int_equal(cl_stats(c).timeouts, 0);

	/* BUSY more often than there are retries, within the time budget: still served. */
	fk_lock();
	fk->busy = 6;
	fk_unlock();
	from = fk_nlog();
	assert_int_equal(put_s(c, "busykey", "v", NULL), KM_OK);
	assert_int_equal(fk_nlog(), from + 7);
	assert_int_equal(cl_stats(c).timeouts, 0);

	/* Busy for longer than the budget (200 ms x 4 since the first send): backoff 1, 2,
	 * 4 .. 128 ms then 200 ms, so 11 sends, then KM_ERR_BUSY. */
	fk_lock();
	fk->busy = 100;
	fk_unlock();
	from = fk_nlog();
	assert_int_equal(put_s(c, "busykey", "w", NULL), KM_ERR_BUSY);
	assert_in_range(fk_nlog(), from + 10, from + 12);
	fk_lock();
	fk->busy = 0;
	fk_unlock();
	check_get(c, "busykey", "v", 0);
	km_client_close(c);
}

static void
test_stray_replies(void **state)
{
	struct km_client *c;
	uint64_t stray;
	char buf[32];
	size_t len;

	(void)state;
	c = cl_open(500, 3, 0);
	assert_int_equal(put_s(c, "s1", "value-one", NULL), KM_OK);
	assert_int_equal(put_s(c, "s2", "value-two", NULL), KM_OK);

	/* Every reply twice: the second copy matches no request in flight. */
	fk_lock();
	fk->dup = 1;
	fk_unlock();
	check_get(c, "s1", "value-one", 0);
	check_get(c, "s2", "value-two", 0);
	check_get(c, "s1", "value-one", 0);
	assert_true(cl_stats(c).stray_replies >= 2);

	/*
	 * Before each reply the fake sends the previous one again: GET s2 first receives
	 * the old reply of GET s1 (same op, other req_id) and must not take it for its own.
	 */
	fk_lock();
	fk->dup = 0;
	fk->replay = 1;
	fk_unlock();
	stray = cl_stats(c).stray_replies;
	assert_int_equal(km_get(c, "s1", 2, buf, sizeof(buf), &len, NULL), KM_OK);
	assert_int_equal(km_get(c, "s2", 2, buf, sizeof(buf), &len, NULL), KM_OK);
	assert_int_equal(len, 9);
	assert_memory_equal(buf, "value-two", 9);
	assert_int_equal(km_get(c, "s1", 2, buf, sizeof(buf), &len, NULL), KM_OK);
	assert_memory_equal(buf, "value-one", 9);
	assert_true(cl_stats(c).stray_replies >= stray + 3);
	km_client_close(c);
}

static void
test_moved(void **state)
{
	struct km_shardmap *m2;
	const struct km_shard *sh;
	struct km_client *c;
	unsigned int from, n;
	struct fk_req a, b;
	char key[32];

	(void)state;
	c = cl_open(500, 3, 0);
	key_of_worker(1, key, sizeof(key));
	assert_int_equal(put_s(c, key, "before", NULL), KM_OK);

	/* The server moves the key's shard to worker 3: epoch 2. */
	fk_lock();
	sh = shard_of(fk->map, key);
	assert_int_equal(km_shardmap_move(fk->map, km_shard_id(sh), 3, &m2), 0);
	fk_unlock();
	assert_int_equal(km_shardmap_epoch(m2), 2);
	fk_publish(m2);

	from = fk_nlog();
	assert_int_equal(put_s(c, key, "after", NULL), KM_OK);
	/* PUT to worker 1 (MOVED), MAP, PUT again with the same req_id to worker 3. */
	n = fk_nlog();
	assert_true(n >= from + 3);
	a = fk_log_at(from);
	b = fk_log_at(n - 1);
	assert_int_equal(a.op, KM_OP_PUT);
	assert_int_equal(a.worker, 1);
	assert_int_equal(a.epoch, 1);
	assert_int_equal(b.op, KM_OP_PUT);
	assert_int_equal(b.worker, 3);
	assert_int_equal(b.epoch, 2);
	assert_int_equal(a.req_id, b.req_id);
	assert_true(fk_count_op(from, KM_OP_MAP) >= 1);
	assert_int_equal(km_client_epoch(c), 2);
	assert_int_equal(km_client_worker_of(c, key, strlen(key)), 3);
	assert_int_equal(cl_stats(c).moved, 1);
	assert_int_equal(cl_stats(c).map_refreshes, 2);
	/* The client's copy is the server's map, moved flags included. */
	fk_lock();
	{
		const struct km_shardmap *cm = km_client_map(c);
		uint32_t i;

		assert_int_equal(km_shardmap_nb_shards(cm), km_shardmap_nb_shards(fk->map));
		for (i = 0; i < km_shardmap_nb_shards(cm); i++) {
			assert_int_equal(id_at(cm, i), id_at(fk->map, i));
			assert_int_equal(owner_at(cm, i), owner_at(fk->map, i));
			assert_int_equal(km_shard_moved(km_shardmap_shard_at(cm, i)),
				km_shard_moved(km_shardmap_shard_at(fk->map, i)));
		}
	}
	fk_unlock();

	/* Now routed directly. */
	from = fk_nlog();
	check_get(c, key, "after", 0);
	assert_int_equal(fk_nlog(), from + 1);
	assert_int_equal(fk_log_at(from).worker, 3);

	km_client_close(c);
}

/* The key moved but the client cannot get the new map: KM_ERR_MOVED, in bounded time. */
static void
test_moved_forever(void **state)
{
	const unsigned int timeout = 50, retries = 2;
	const struct km_shard *sh;
	struct km_shardmap *m2;
	struct km_client *c;
	char key[32];
	uint64_t t0;

	(void)state;
	c = cl_open(timeout, retries, 0);
	key_of_worker(2, key, sizeof(key));
	fk_lock();
	fk->drop_map = 1;
	sh = shard_of(fk->map, key);
	assert_int_equal(km_shardmap_move(fk->map, km_shard_id(sh), 0, &m2), 0);
	fk_unlock();
	fk_publish(m2);

	t0 = now_ms();
	assert_int_equal(put_s(c, key, "x", NULL), KM_ERR_MOVED);
	/* retries + 1 re-routes, each after a refresh that times out retries + 1 times. */
	assert_int_equal(cl_stats(c).moved, retries + 2);
	assert_true(now_ms() - t0 < 3 * timeout * (retries + 1) * (retries + 1));
	assert_int_equal(km_client_epoch(c), 1);
	km_client_close(c);
}

static void
test_split_follow(void **state)
{
	struct km_shardmap *m2;
	struct km_client *c;
	unsigned int i, moved_owner = 0;
	char key[32], other[32];
	uint64_t id;

	(void)state;
	/* Small MAP chunks: the map crosses in several datagrams. */
	fk_lock();
	fk->map_cap = KM_MAP_HDR_LEN + 3 * KM_MAP_ENTRY_LEN;
	fk_unlock();
	c = cl_open(500, 3, 0);
	assert_int_equal(km_client_epoch(c), 1);
	assert_true(fk_count_op(0, KM_OP_MAP) >= 6);

	/* Split the shard of `key`; `other` lives in another shard, unaffected. */
	snprintf(key, sizeof(key), "split-me");
	fk_lock();
	id = km_shard_id(shard_of(fk->map, key));
	for (i = 0; i < 1000; i++) {
		snprintf(other, sizeof(other), "other-%u", i);
		if (km_shard_id(shard_of(fk->map, other)) != id)
			break;
	}
	assert_int_equal(km_shardmap_split(fk->map, id, &m2), 0);
	moved_owner = fk_owner_of(m2, other, strlen(other));
	assert_int_equal(moved_owner, fk_owner_of(fk->map, other, strlen(other)));
	fk_unlock();
	fk_publish(m2);

	/* An OK reply carrying epoch 2 is enough for the client to fetch the new map. */
	assert_int_equal(put_s(c, other, "o", NULL), KM_OK);
	assert_int_equal(km_client_epoch(c), 2);
	assert_int_equal(cl_stats(c).moved, 0);
	assert_int_equal(cl_stats(c).map_refreshes, 2);

	/* The client now routes every key like the server. */
	for (i = 0; i < 500; i++) {
		snprintf(key, sizeof(key), "k%u", i);
		assert_int_equal(km_client_worker_of(c, key, strlen(key)), fk_owner(key));
	}
	assert_int_equal(put_s(c, "split-me", "s", NULL), KM_OK);
	assert_int_equal(cl_stats(c).moved, 0);
	km_client_close(c);
}

/*
 * The partition shifter: a map with a routing override (map encoding 1.1) crosses in
 * small chunks, and the client steers the overridden entity's keys by the extended part,
 * to the owners the fake computes (no MOVED, no hand-off needed), for every state.
 */
static void
test_override_follow(void **state)
{
	static const uint8_t states[] = {KM_OVR_MIGRATING, KM_OVR_SETTLED, KM_OVR_REVERTING};
	struct km_shardmap *m2, *m3;
	struct km_client *c;
	unsigned int i, k, from, workers_seen, seen_mask;
	uint64_t h = 0;
	char key[32];

	(void)state;
	fk_lock();
	fk->map_cap = KM_MAP_HDR_LEN + 3 * KM_MAP_ENTRY_LEN + 1 + KM_MAP_OVR_LEN;
	fk_unlock();
	c = cl_open(500, 3, 0);
	assert_int_equal(km_client_epoch(c), 1);
	/* without an override every "hot/..." key goes to one worker */
	for (i = 0; i < 64; i++) {
		snprintf(key, sizeof(key), "hot/%u", i);
		assert_int_equal(
			km_client_worker_of(c, key, strlen(key)), km_client_worker_of(c, "hot", 3));
	}
	for (k = 0; k < 3; k++) {
		fk_lock();
		if (k == 0)
			assert_int_equal(km_shardmap_override_add(
						 fk->map, (const uint8_t *)"hot", 3, 1, &m2),
				0);
		else if (k == 1)
			assert_int_equal(km_shardmap_override_settle(fk->map, h, &m2), 0);
		else
			assert_int_equal(km_shardmap_override_remove(fk->map, h, &m2), 0);
		h = km_shardmap_override_at(m2, 0)->hash;
		fk_unlock();
		fk_publish(m2);
		/* An OK reply carrying the new epoch: the client fetches the map. */
		assert_int_equal(put_s(c, "other", "o", NULL), KM_OK);
		assert_int_equal(km_client_epoch(c), 2 + k);
		assert_int_equal(km_shardmap_nb_overrides(km_client_map(c)), 1);
		assert_int_equal(km_shardmap_override_at(km_client_map(c), 0)->state, states[k]);
		from = fk_nlog();
		seen_mask = 0;
		for (i = 0; i < 64; i++) {
			unsigned int w;

			snprintf(key, sizeof(key), "hot/%u", i);
			w = fk_owner(key);
			assert_int_equal(km_client_worker_of(c, key, strlen(key)), w);
			assert_int_equal(put_s(c, key, "v", NULL), KM_OK);
			assert_int_equal(fk_log_at(fk_nlog() - 1).worker, w);
			seen_mask |= 1u << w;
		}
		for (workers_seen = 0, i = 0; i < 4; i++)
			workers_seen += (seen_mask >> i) & 1;
		/* spread over the workers while the override routes, one worker once reverting */
		if (states[k] == KM_OVR_REVERTING)
			assert_int_equal(workers_seen, 1);
		else
			assert_true(workers_seen >= 3);
		assert_int_equal(fk_count_op(from, KM_OP_MAP), 0);
	}
	assert_int_equal(cl_stats(c).moved, 0);

	/* removed: back to the part's own rule */
	fk_lock();
	assert_int_equal(km_shardmap_override_settle(fk->map, h, &m3), 0);
	fk_unlock();
	fk_publish(m3);
	assert_int_equal(put_s(c, "other", "o", NULL), KM_OK);
	assert_int_equal(km_shardmap_nb_overrides(km_client_map(c)), 0);
	km_client_close(c);
}

static void
test_map_changes_during_fetch(void **state)
{
	struct km_shardmap *m2, *m3;
	struct km_client *c;
	unsigned int i, from;
	char key[32];

	(void)state;
	fk_lock();
	fk->map_cap = KM_MAP_HDR_LEN + 4 * KM_MAP_ENTRY_LEN;
	fk_unlock();
	c = cl_open(500, 3, 0);
	assert_int_equal(km_client_epoch(c), 1);

	/* Epoch 2 published now; epoch 3 appears right after the next chunk 0 is served. */
	fk_lock();
	assert_int_equal(km_shardmap_split(fk->map, id_at(fk->map, 0), &m2), 0);
	assert_int_equal(km_shardmap_split(m2, id_at(m2, km_shardmap_nb_shards(m2) - 1), &m3), 0);
	km_shardmap_free(fk->map);
	fk->map = m2;
	fk->next_map = m3;
	fk_unlock();

	from = fk_nlog();
	assert_int_equal(km_map_refresh(c), KM_OK);
	assert_int_equal(km_client_epoch(c), 3);
	/* Restarted: chunk 0 was requested again after the epoch changed. */
	fk_lock();
	{
		unsigned int zero = 0;

		for (i = from; i < fk->nlog; i++)
			zero += fk->log[i].op == KM_OP_MAP && fk->log[i].version == 0;
		assert_int_equal(zero, 2);
	}
	fk_unlock();
	for (i = 0; i < 300; i++) {
		snprintf(key, sizeof(key), "k%u", i);
		assert_int_equal(km_client_worker_of(c, key, strlen(key)), fk_owner(key));
	}
	km_client_close(c);
}

/* A restarted server starts again at epoch 1: a different epoch, not a newer one. */
static void
test_server_restart(void **state)
{
	struct km_shardmap_params p = {
		.nb_shards = 4, .nb_workers = 4, .route_sep = '/', .route_depth = 1};
	struct km_shardmap *m2, *m1;
	struct km_client *c;
	unsigned int i;
	char key[32];

	(void)state;
	c = cl_open(500, 3, 0);
	fk_lock();
	assert_int_equal(km_shardmap_split(fk->map, id_at(fk->map, 3), &m2), 0);
	fk_unlock();
	fk_publish(m2);
	assert_int_equal(put_s(c, "r", "1", NULL), KM_OK);
	assert_int_equal(km_client_epoch(c), 2);

	p.udp_port_base = fk->base;
	assert_int_equal(km_shardmap_create(&p, &m1), 0);
	fk_publish(m1);
	assert_int_equal(put_s(c, "r", "2", NULL), KM_OK);
	assert_int_equal(km_client_epoch(c), 1);
	assert_int_equal(km_shardmap_nb_shards(km_client_map(c)), 4);
	for (i = 0; i < 200; i++) {
		snprintf(key, sizeof(key), "k%u", i);
		assert_int_equal(km_client_worker_of(c, key, strlen(key)), fk_owner(key));
	}
	km_client_close(c);
}

/* Shards move while a batch is in flight: one refresh serves every op answered MOVED. */
static void
test_batch_moved(void **state)
{
	enum { N = 400 };
	static char keys[N][16];
	static char bufs[N][16];
	static struct km_batch_op ops[N];
	struct km_shardmap *m, *next;
	struct km_client *c;
	unsigned int i;

	(void)state;
	c = cl_open(500, 3, 0);
	memset(ops, 0, sizeof(ops));
	for (i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "b%u", i);
		ops[i].op = KM_OP_PUT;
		ops[i].key = keys[i];
		ops[i].klen = strlen(keys[i]);
		ops[i].val = keys[i];
		ops[i].vlen = strlen(keys[i]);
	}
	assert_int_equal(km_batch(c, ops, N), N);

	/* Every other shard moves to the next worker: epoch 1 + 8. */
	fk_lock();
	m = NULL;
	for (i = 0; i < km_shardmap_nb_shards(fk->map); i += 2) {
		const struct km_shardmap *cur = m != NULL ? m : fk->map;

		assert_int_equal(km_shardmap_move(cur, id_at(cur, i),
					 (uint16_t)((owner_at(cur, i) + 1) % 4), &next),
			0);
		km_shardmap_free(m);
		m = next;
	}
	fk_unlock();
	fk_publish(m);

	memset(ops, 0, sizeof(ops));
	for (i = 0; i < N; i++) {
		ops[i].op = KM_OP_GET;
		ops[i].key = keys[i];
		ops[i].klen = strlen(keys[i]);
		ops[i].buf = bufs[i];
		ops[i].cap = sizeof(bufs[i]);
	}
	assert_int_equal(km_batch(c, ops, N), N);
	for (i = 0; i < N; i++) {
		assert_int_equal(ops[i].err, KM_OK);
		assert_int_equal(ops[i].len, strlen(keys[i]));
		assert_memory_equal(bufs[i], keys[i], ops[i].len);
	}
	assert_int_equal(km_client_epoch(c), 9);
	assert_true(cl_stats(c).moved > 0);
	assert_int_equal(cl_stats(c).map_refreshes, 2);
	km_client_close(c);
}

static void
test_no_map_server(void **state)
{
	struct km_client *c;
	unsigned int from, i;

	(void)state;
	fk_lock();
	fk->map_disabled = 1;
	fk_unlock();
	c = cl_open(200, 3, 0);
	assert_int_equal(km_client_epoch(c), 0);
	assert_int_equal(km_client_nb_workers(c), 1);
	assert_null(km_client_map(c));
	from = fk_nlog();
	for (i = 0; i < 20; i++) {
		char key[16];

		snprintf(key, sizeof(key), "u%u", i);
		assert_int_equal(put_s(c, key, "v", NULL), KM_OK);
		check_get(c, key, "v", 0);
	}
	for (i = from; i < fk_nlog(); i++)
		assert_int_equal(fk_log_at(i).worker, 0);
	km_client_close(c);
}

/* MAP chunks of an unknown major version: a clear error, and the client works unsteered;
 * a newer minor (what an older decoder may ignore) is accepted. */
static void
test_map_version(void **state)
{
	struct km_client *c;
	unsigned int i;

	(void)state;
	fk_lock();
	fk->map_version = (KM_MAP_CLUSTER_MAJOR + 1) << 4;
	fk_unlock();
	c = cl_open(200, 1, 0);
	assert_int_equal(km_client_epoch(c), 0);
	assert_null(km_client_map(c));
	assert_int_equal(km_map_refresh(c), KM_ERR_MAP_VERSION);
	assert_string_equal(km_strerror(KM_ERR_MAP_VERSION),
		"shard map encoding of a newer major version: upgrade libkeymap");
	for (i = 0; i < 10; i++) {
		char key[16];

		snprintf(key, sizeof(key), "v%u", i);
		assert_int_equal(put_s(c, key, "v", NULL), KM_OK);
		check_get(c, key, "v", 0);
	}

	fk_lock();
	fk->map_version = (KM_MAP_VERSION_MAJOR << 4) | 0x0f;
	fk_unlock();
	assert_int_equal(km_map_refresh(c), KM_OK);
	assert_int_equal(km_client_epoch(c), 1);
	assert_int_equal(km_client_nb_workers(c), 4);
	km_client_close(c);
}

static void
test_map_dropped(void **state)
{
	struct km_client *c;
	char k0[32];
	uint64_t t0;
	struct km_client_opts o = {.timeout_ms = 30, .retries = 1};

	(void)state;
	fk_lock();
	fk->drop_map = 1;
	fk_unlock();
	o.host = "127.0.0.1";
	o.port = fk->base;
	/* No answer to MAP: the open says so, after its retries. */
	c = NULL;
	t0 = now_ms();
	assert_int_equal(km_client_open(&o, &c), KM_ERR_UNREACHABLE);
	assert_null(c);
	assert_true(now_ms() - t0 < 3 * 30 * 2);
	/* lazy: open gave up on MAP after its retries, stays unsteered and usable. */
	o.lazy = 1;
	t0 = now_ms();
	assert_int_equal(km_client_open(&o, &c), KM_OK);
	assert_true(now_ms() - t0 < 3 * 30 * 2);
	assert_int_equal(km_client_epoch(c), 0);
	assert_int_equal(km_client_worker_of(c, "x", 1), 0);
	key_of_worker(0, k0, sizeof(k0));
	/* The reply's newer epoch does not trigger a refresh right after a failed one. */
	t0 = now_ms();
	assert_int_equal(put_s(c, k0, "v", NULL), KM_OK);
	check_get(c, k0, "v", 0);
	assert_true(now_ms() - t0 < 55);
	km_client_close(c);
}

static void
test_no_steer(void **state)
{
	struct km_client *c;
	unsigned int from = fk_nlog();

	(void)state;
	c = cl_open(200, 3, 1);
	assert_int_equal(fk_count_op(from, KM_OP_MAP), 0);
	assert_int_equal(km_client_epoch(c), 0);
	assert_int_equal(km_map_refresh(c), KM_ERR_INVAL);
	assert_int_equal(put_s(c, "a", "b", NULL), KM_OK);
	check_get(c, "a", "b", 0);
	assert_int_equal(fk_log_at(from).epoch, 0);
	assert_int_equal(fk_count_op(from, KM_OP_MAP), 0);
	assert_int_equal(km_ping(c, 0), KM_OK);
	km_client_close(c);
}

/* Reference model for the batch test. */
#define REF_KEYS  1000
#define REF_VAL   96
#define BATCH_OPS 500

struct ref_entry {
	int present;
	uint64_t version;
	size_t vlen;
	uint8_t val[REF_VAL];
};

static void
ref_value(uint8_t *v, size_t len, unsigned int key, unsigned int round)
{
	size_t i;

	for (i = 0; i < len; i++)
		v[i] = (uint8_t)(key * 31 + round * 7 + i);
}

static void
test_batch_10k(void **state)
{
	static struct ref_entry ref[REF_KEYS];
	static char keys[REF_KEYS][12];
	static uint8_t vals[BATCH_OPS][REF_VAL];
	static uint8_t bufs[BATCH_OPS][REF_VAL];
	static struct km_batch_op ops[BATCH_OPS];
	static unsigned int perm[REF_KEYS];
	struct km_client_opts o = {.host = "127.0.0.1", .timeout_ms = 60, .retries = 5};
	uint64_t seed = 0x6b65796d6170ull, maxv = 0;
	struct km_client *c;
	unsigned int round, i, total = 0;

	(void)state;
	o.port = fk->base;
	assert_int_equal(km_client_open(&o, &c), KM_OK);
	memset(ref, 0, sizeof(ref));
	for (i = 0; i < REF_KEYS; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%u", i);
		perm[i] = i;
	}
	/* Some requests are lost: retries inside the window must not disturb the others. */
	fk_lock();
	fk->drop_every = 97;
	fk_unlock();

	for (round = 0; total < 10000; round++) {
		uint64_t round_max = maxv;
		int ok = 0, got;

		/* Distinct keys within a batch: the order of their execution does not matter. */
		for (i = REF_KEYS - 1; i > 0; i--) {
			unsigned int j = (unsigned int)(rng_next(&seed) % (i + 1)), t = perm[i];

			perm[i] = perm[j];
			perm[j] = t;
		}
		memset(ops, 0, sizeof(ops));
		for (i = 0; i < BATCH_OPS; i++) {
			unsigned int k = perm[i], r = (unsigned int)(rng_next(&seed) % 100);
			const struct ref_entry *e = &ref[k];
			struct km_batch_op *op = &ops[i];

			op->key = keys[k];
			op->klen = strlen(keys[k]);
			if (r < 40) {
				op->op = KM_OP_GET;
				op->buf = bufs[i];
				op->cap = REF_VAL;
			} else if (r < 85) {
				op->op = r < 70 ? KM_OP_PUT : KM_OP_CAS;
				op->vlen = (size_t)(rng_next(&seed) % REF_VAL);
				ref_value(vals[i], op->vlen, k, round);
				op->val = vals[i];
				if (op->op == KM_OP_CAS)
					op->version = (rng_next(&seed) & 1) ? e->version
									    : e->version + 12345;
			} else {
				op->op = KM_OP_DEL;
				op->version = (rng_next(&seed) & 1)   ? 0
					      : (rng_next(&seed) & 1) ? e->version
								      : e->version + 1;
			}
		}
		got = km_batch(c, ops, BATCH_OPS);
		assert_true(got >= 0);

		for (i = 0; i < BATCH_OPS; i++) {
			unsigned int k = perm[i];
			struct ref_entry *e = &ref[k];
			struct km_batch_op *op = &ops[i];
			uint64_t cur = e->present ? e->version : 0;

			ok += op->err == KM_OK || op->err == KM_ERR_NOT_FOUND;
			assert_true(op->latency_ns > 0);
			switch (op->op) {
			case KM_OP_GET:
				if (!e->present) {
					assert_int_equal(op->err, KM_ERR_NOT_FOUND);
					break;
				}
				assert_int_equal(op->err, KM_OK);
				assert_int_equal(op->len, e->vlen);
				assert_int_equal(op->out_version, e->version);
				assert_memory_equal(bufs[i], e->val, e->vlen);
				break;
			case KM_OP_CAS:
				if (op->version != cur) {
					assert_int_equal(op->err, KM_ERR_VERSION_MISMATCH);
					assert_int_equal(op->out_version, cur);
					break;
				}
				/* fallthrough */
			case KM_OP_PUT:
				assert_int_equal(op->err, KM_OK);
				assert_true(op->out_version > maxv);
				if (op->out_version > round_max)
					round_max = op->out_version;
				e->present = 1;
				e->version = op->out_version;
				e->vlen = op->vlen;
				memcpy(e->val, op->val, op->vlen);
				break;
			case KM_OP_DEL:
				if (!e->present) {
					assert_int_equal(op->err, KM_ERR_NOT_FOUND);
				} else if (op->version != 0 && op->version != cur) {
					assert_int_equal(op->err, KM_ERR_VERSION_MISMATCH);
					assert_int_equal(op->out_version, cur);
				} else {
					assert_int_equal(op->err, KM_OK);
					e->present = 0;
				}
				break;
			}
		}
		assert_int_equal(got, ok);
		maxv = round_max;
		total += BATCH_OPS;
	}
	assert_true(cl_stats(c).retries > 0);
	assert_int_equal(cl_stats(c).moved, 0);
	km_client_close(c);
}

static void
test_mget(void **state)
{
	enum { N = 300 };
	static char keys[N][16];
	static uint8_t bufs[N][700];
	static struct km_mget_item items[N + 2];
	static uint8_t val[700];
	struct km_client *c;
	unsigned int i, from, mgets;
	uint64_t vers[N];

	(void)state;
	c = cl_open(500, 3, 0);
	memset(val, 'x', sizeof(val));
	/* Every third key absent; value sizes up to 600 so that replies fill up. */
	for (i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "m%u", i);
		vers[i] = 0;
		if (i % 3 == 2)
			continue;
		val[0] = (uint8_t)i;
		assert_int_equal(
			km_put(c, keys[i], strlen(keys[i]), val, (i * 37) % 600, &vers[i]), KM_OK);
	}
	/* Small reply datagrams: many entries come back TOO_LARGE and need a GET. */
	fk_lock();
	fk->mget_cap = 900;
	fk_unlock();
	memset(items, 0, sizeof(items));
	for (i = 0; i < N; i++) {
		items[i].key = keys[i];
		items[i].klen = strlen(keys[i]);
		items[i].buf = bufs[i];
		items[i].cap = i == 1 ? 10 : sizeof(bufs[i]); /* m1 has 37 bytes */
	}
	items[N].key = "bad";
	items[N].klen = 0;
	items[N + 1].key = keys[0];
	items[N + 1].klen = KM_KEY_MAX + 1;

	from = fk_nlog();
	assert_int_equal(km_mget(c, items, N + 2), KM_OK);
	for (i = 0; i < N; i++) {
		size_t len = (i * 37) % 600;

		if (i % 3 == 2) {
			assert_int_equal(items[i].err, KM_ERR_NOT_FOUND);
			continue;
		}
		if (i == 1) {
			assert_int_equal(items[i].err, KM_ERR_BUFFER);
			assert_int_equal(items[i].len, 37);
			continue;
		}
		assert_int_equal(items[i].err, KM_OK);
		assert_int_equal(items[i].len, len);
		assert_int_equal(items[i].version, vers[i]);
		if (len > 0)
			assert_int_equal(bufs[i][0], (uint8_t)i);
		if (len > 1)
			assert_int_equal(bufs[i][len - 1], 'x');
	}
	assert_int_equal(items[N].err, KM_ERR_INVAL);
	assert_int_equal(items[N + 1].err, KM_ERR_TOO_LARGE);

	/* Grouped by worker, at most KM_MGET_MAX keys each; TOO_LARGE ones fetched by GET. */
	mgets = fk_count_op(from, KM_OP_MGET);
	assert_true(mgets >= 4);
	assert_true(mgets <= 4 * 10);
	assert_true(fk_count_op(from, KM_OP_GET) > 0);
	fk_lock();
	for (i = from; i < fk->nlog; i++)
		if (fk->log[i].op == KM_OP_MGET)
			assert_true(fk->log[i].nkeys >= 1 && fk->log[i].nkeys <= KM_MGET_MAX);
	fk_unlock();
	assert_int_equal(cl_stats(c).moved, 0);
	km_client_close(c);
}

static void
test_mget_moved(void **state)
{
	enum { N = 100 };
	static char keys[N][16];
	static char bufs[N][16];
	static struct km_mget_item items[N];
	struct km_shardmap *m2, *m3;
	struct km_client *c;
	unsigned int i;

	(void)state;
	c = cl_open(500, 3, 0);
	for (i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "mm%u", i);
		assert_int_equal(put_s(c, keys[i], keys[i], NULL), KM_OK);
	}
	/* Two shards change owner behind the client's back. */
	fk_lock();
	assert_int_equal(km_shardmap_move(fk->map, id_at(fk->map, 0),
				 (uint16_t)((owner_at(fk->map, 0) + 1) % 4), &m2),
		0);
	assert_int_equal(
		km_shardmap_move(m2, id_at(m2, 5), (uint16_t)((owner_at(m2, 5) + 2) % 4), &m3), 0);
	km_shardmap_free(m2);
	fk_unlock();
	fk_publish(m3);

	memset(items, 0, sizeof(items));
	for (i = 0; i < N; i++) {
		items[i].key = keys[i];
		items[i].klen = strlen(keys[i]);
		items[i].buf = bufs[i];
		items[i].cap = sizeof(bufs[i]);
	}
	assert_int_equal(km_mget(c, items, N), KM_OK);
	for (i = 0; i < N; i++) {
		assert_int_equal(items[i].err, KM_OK);
		assert_int_equal(items[i].len, strlen(keys[i]));
		assert_memory_equal(bufs[i], keys[i], items[i].len);
	}
	assert_int_equal(km_client_epoch(c), 3);
	assert_true(cl_stats(c).moved > 0);
	km_client_close(c);
}

/* Session ids: the handle's on every request (retries and MGET datagrams too), a batch op's
 * own overrides it, 0 falls back to the handle's. */
static void
test_session(void **state)
{
	struct km_client *c = cl_open(50, 3, 0);
	struct km_batch_op ops[2];
	struct km_mget_item items[8];
	char keys[8][16], bufs[8][16];
	unsigned int from, i, n, mgets = 0;
	uint64_t first_id;

	(void)state;
	assert_int_equal(km_client_session(c), 0);
	assert_int_equal(put_s(c, "s-a", "v", NULL), KM_OK);
	assert_int_equal(fk_log_at(fk_nlog() - 1).session, 0);

	assert_int_equal(km_client_set_session(c, 77), KM_OK);
	assert_int_equal(km_client_session(c), 77);
	check_get(c, "s-a", "v", 0);
	assert_int_equal(fk_log_at(fk_nlog() - 1).session, 77);

	/* A batch op's own session, and 0: the handle's. */
	memset(ops, 0, sizeof(ops));
	ops[0] = (struct km_batch_op){.op = KM_BATCH_GET, .key = "s-a", .klen = 3, .session = 5};
	ops[1] = (struct km_batch_op){.op = KM_BATCH_GET, .key = "s-a", .klen = 3};
	from = fk_nlog();
	assert_int_equal(km_batch(c, ops, 2), 2);
	n = 0;
	for (i = from; i < fk_nlog(); i++) {
		struct fk_req r = fk_log_at(i);

		if (r.op != KM_OP_GET)
			continue;
		assert_true(r.session == 5 || r.session == 77);
		n += r.session == 5 ? 1 : 10;
	}
	assert_int_equal(n, 11);

	/* MGET: every datagram, to every worker. */
	for (i = 0; i < 8; i++) {
		key_of_worker(i % 4, keys[i], sizeof(keys[i]));
		assert_int_equal(put_s(c, keys[i], "x", NULL), KM_OK);
		items[i] = (struct km_mget_item){.key = keys[i],
			.klen = strlen(keys[i]),
			.buf = bufs[i],
			.cap = sizeof(bufs[i])};
	}
	from = fk_nlog();
	assert_int_equal(km_mget(c, items, 8), KM_OK);
	for (i = from; i < fk_nlog(); i++) {
		struct fk_req r = fk_log_at(i);

		if (r.op == KM_OP_MGET) {
			assert_int_equal(r.session, 77);
			mgets++;
		}
	}
	assert_true(mgets >= 4);

	/* A retry carries the session of its first attempt. */
	fk_lock();
	fk->drop_req = 1;
	fk_unlock();
	from = fk_nlog();
	check_get(c, "s-a", "v", 0);
	assert_int_equal(fk_nlog() - from, 2);
	first_id = fk_log_at(from).req_id;
	assert_int_equal(fk_log_at(from + 1).req_id, first_id);
	assert_int_equal(fk_log_at(from).session, 77);
	assert_int_equal(fk_log_at(from + 1).session, 77);
	km_client_close(c);
}

/* A value 25 bytes longer than its key k: its GET reply is larger than the request
 * with a cookie and a MAC. */
static const char *
val_of(const char *k)
{
	static char v[64];

	snprintf(v, sizeof(v), "%s-longer-than-any-trailers", k);
	return v;
}

/* The key the fake knows as id 7, and its spelling for auth_key. */
#define TEST_KEY "7:000102030405060708090a0b0c0d0e0f"

static void
fk_set_key(int required)
{
	unsigned int i;

	fk_lock();
	fk->auth_id = 7;
	for (i = 0; i < KM_MAC_KEY_LEN; i++)
		fk->auth_key[i] = (uint8_t)i;
	fk->auth_required = required;
	fk_unlock();
}

static void
fk_set_cookies(int on, uint32_t valid_ms)
{
	fk_lock();
	fk->cookies = on;
	fk->valid_ms = valid_ms;
	fk_unlock();
}

/*
 * First contact with a server that requires cookies: the MAP at open is refused, the
 * client fetches a cookie with HELLO and resends it; then every request carries the
 * cookie and a whole window of GETs needs no second HELLO.
 */
static void
test_cookie_first_contact(void **state)
{
	static struct km_batch_op ops[200];
	static char keys[200][16];
	static uint8_t bufs[200][48];
	struct km_client_stats st;
	struct km_client *c;
	unsigned int i, n;
	char buf[64];
	size_t len;

	(void)state;
	fk_set_cookies(1, 60000);
	c = cl_open(500, 3, 0);
	/* Steered: the MAP went through after the HELLO. */
	assert_int_equal(km_client_epoch(c), 1);
	st = cl_stats(c);
	assert_int_equal(st.cookie_fetches, 1);
	assert_int_equal(st.denied, 1);
	assert_int_equal(fk_count_op(0, KM_OP_HELLO), 1);
	/* The HELLO carries no cookie; the MAP resent after it carries the cookie. */
	assert_int_equal(fk_count_flags(0, KM_OP_HELLO, KM_F_COOKIE), 0);
	assert_int_equal(fk_count_flags(0, KM_OP_MAP, KM_F_COOKIE), fk_count_op(0, KM_OP_MAP) - 1);

	for (i = 0; i < 200; i++) {
		snprintf(keys[i], sizeof(keys[i]), "c%u", i);
		/* Values longer than keys: a GET's reply is larger than its request. */
		assert_int_equal(put_s(c, keys[i], val_of(keys[i]), NULL), KM_OK);
	}
	memset(ops, 0, sizeof(ops));
	for (i = 0; i < 200; i++) {
		ops[i].op = KM_BATCH_GET;
		ops[i].key = keys[i];
		ops[i].klen = strlen(keys[i]);
		ops[i].buf = bufs[i];
		ops[i].cap = sizeof(bufs[i]);
	}
	assert_int_equal(km_batch(c, ops, 200), 200);
	for (i = 0; i < 200; i++) {
		assert_int_equal(ops[i].len, strlen(keys[i]) + 25);
		assert_memory_equal(bufs[i], keys[i], strlen(keys[i]));
	}
	check_get(c, "c7", "c7-longer-than-any-trailers", 0);
	st = cl_stats(c);
	assert_int_equal(st.cookie_fetches, 1);
	assert_int_equal(st.denied, 1);
	/* Every request after the HELLO carried the cookie the fake handed out. */
	fk_lock();
	for (i = 0, n = 0; i < fk->nlog; i++) {
		if (fk->log[i].op == KM_OP_HELLO) {
			n = 1;
			continue;
		}
		if (n == 0)
			continue;
		assert_true((fk->log[i].flags & KM_F_COOKIE) != 0);
		assert_true(fk->log[i].cookie == fk->cookie);
		assert_true((fk->log[i].flags & KM_F_AUTH) == 0);
	}
	fk_unlock();
	km_client_close(c);

	/* Unsteered (no MAP at open): the first GETs of a batch are refused together, one
	 * HELLO serves them all, and they are resent with their request ids. */
	c = cl_open(500, 3, 1);
	for (i = 0; i < 200; i++)
		ops[i].len = 0;
	assert_int_equal(km_batch(c, ops, 200), 200);
	for (i = 0; i < 200; i++)
		assert_int_equal(ops[i].len, strlen(keys[i]) + 25);
	st = cl_stats(c);
	assert_int_equal(st.cookie_fetches, 1);
	assert_true(st.denied >= 1 && st.denied <= 64);
	assert_int_equal(st.requests, 201);
	len = 0;
	assert_int_equal(km_get(c, "c1", 2, buf, sizeof(buf), &len, NULL), KM_OK);
	assert_int_equal(len, 27);
	km_client_close(c);
}

/* A server restart (new secrets: the cookie is refused), expiry and renewal. */
static void
test_cookie_change(void **state)
{
	struct km_mget_item items[3];
	uint8_t bufs[3][48];
	struct km_client_stats st;
	struct km_client *c;
	unsigned int from, i;

	(void)state;
	fk_set_cookies(1, 60000);
	c = cl_open(500, 3, 0);
	assert_int_equal(put_s(c, "a/1", "one-longer-than-any-trailers", NULL), KM_OK);
	assert_int_equal(put_s(c, "b/2", "two-longer-than-any-trailers", NULL), KM_OK);
	check_get(c, "a/1", "one-longer-than-any-trailers", 0);
	assert_int_equal(cl_stats(c).cookie_fetches, 1);

	/* Restart: the cookie the client holds is no longer valid. */
	fk_lock();
	fk->cookie ^= 0xffff;
	fk_unlock();
	from = fk_nlog();
	check_get(c, "a/1", "one-longer-than-any-trailers", 0);
	st = cl_stats(c);
	assert_int_equal(st.cookie_fetches, 2);
	assert_int_equal(st.denied, 2);
	/* GET (refused), HELLO, the same GET again with the new cookie. */
	assert_int_equal(fk_nlog() - from, 3);
	assert_int_equal(fk_log_at(from).op, KM_OP_GET);
	assert_int_equal(fk_log_at(from + 1).op, KM_OP_HELLO);
	assert_int_equal(fk_log_at(from + 2).op, KM_OP_GET);
	assert_true(fk_log_at(from + 2).req_id == fk_log_at(from).req_id);
	assert_true(fk_log_at(from + 2).cookie != fk_log_at(from).cookie);

	/* MGET refused, then served with the new cookie. */
	fk_lock();
	fk->cookie ^= 0xffff;
	fk_unlock();
	memset(items, 0, sizeof(items));
	items[0].key = "a/1";
	items[1].key = "b/2";
	items[2].key = "a/none";
	for (i = 0; i < 3; i++) {
		items[i].klen = strlen(items[i].key);
		items[i].buf = bufs[i];
		items[i].cap = sizeof(bufs[i]);
	}
	assert_int_equal(km_mget(c, items, 3), KM_OK);
	assert_int_equal(items[0].err, KM_OK);
	assert_int_equal(items[1].err, KM_OK);
	assert_int_equal(items[2].err, KM_ERR_NOT_FOUND);
	assert_memory_equal(bufs[1], "two-longer-than-any-trailers", 28);
	assert_int_equal(cl_stats(c).cookie_fetches, 3);
	km_client_close(c);

	/* Short-lived cookies, a new one per HELLO (the previous one stays valid). */
	fk_lock();
	fk->rotate = 1;
	fk_unlock();
	fk_set_cookies(1, 400);
	c = cl_open(500, 3, 0);
	assert_int_equal(cl_stats(c).cookie_fetches, 1);
	/* Past half of valid_ms: the GET goes out with the current cookie at once and a
	 * HELLO renews it, before it expires. */
	usleep(250 * 1000);
	from = fk_nlog();
	check_get(c, "a/1", "one-longer-than-any-trailers", 0);
	st = cl_stats(c);
	assert_int_equal(st.cookie_fetches, 2);
	assert_int_equal(st.denied, 1);
	/* The HELLO's reply, behind the GET's, is taken by the next call. */
	usleep(20 * 1000);
	check_get(c, "a/1", "one-longer-than-any-trailers", 0);
	/* Expired (no request in between to renew it): the GET waits for a HELLO rather
	 * than being refused. */
	usleep(450 * 1000);
	from = fk_nlog();
	check_get(c, "b/2", "two-longer-than-any-trailers", 0);
	st = cl_stats(c);
	assert_int_equal(st.cookie_fetches, 3);
	assert_int_equal(st.denied, 1);
	assert_int_equal(fk_log_at(from).op, KM_OP_HELLO);
	assert_int_equal(fk_log_at(from + 1).op, KM_OP_GET);
	fk_lock();
	assert_true(fk->log[from + 1].cookie == fk->cookie);
	fk_unlock();
	/* Writes never start a HELLO, even with the cookie expired. */
	usleep(450 * 1000);
	assert_int_equal(put_s(c, "a/1", "uno-longer-than-any-trailers", NULL), KM_OK);
	assert_int_equal(cl_stats(c).cookie_fetches, 3);
	km_client_close(c);
}

/* HELLO answered BAD_REQUEST: a server that refuses larger replies but has no HELLO. */
static void
test_cookie_no_hello(void **state)
{
	struct km_client_hello h;
	struct km_client *c;
	char buf[16];
	size_t len;

	(void)state;
	fk_set_cookies(1, 60000);
	fk_lock();
	fk->hello_bad = 1;
	fk_unlock();
	c = cl_open(500, 3, 0);
	/* The MAP failed: unsteered. */
	assert_int_equal(km_client_epoch(c), 0);
	/* Writes need no cookie. */
	assert_int_equal(put_s(c, "k", "a longer value", NULL), KM_OK);
	assert_int_equal(km_get(c, "k", 1, buf, sizeof(buf), &len, NULL), KM_ERR_DENIED);
	assert_non_null(strstr(km_strerror(KM_ERR_DENIED), "cookie"));
	assert_int_equal(km_get(c, "k", 1, buf, sizeof(buf), &len, NULL), KM_ERR_DENIED);
	/* A NOT_FOUND is no larger than the request: no cookie needed. */
	assert_int_equal(km_get(c, "nokey", 5, buf, sizeof(buf), &len, NULL), KM_ERR_NOT_FOUND);
	assert_int_equal(km_client_hello(c, &h), KM_ERR_BAD_REQUEST);
	assert_int_equal(put_s(c, "k", "w-longer-than-any-trailers", NULL), KM_OK);
	/* No cookie was ever attached. */
	assert_int_equal(fk_count_flags(0, 0, KM_F_COOKIE), 0);
	km_client_close(c);

	/* Cookies that never work: three refusals, two HELLOs, then KM_ERR_DENIED. */
	fk_lock();
	fk->hello_bad = 0;
	fk->hello_wrong = 1;
	fk_unlock();
	c = cl_open(500, 3, 1);
	assert_int_equal(km_get(c, "k", 1, buf, sizeof(buf), &len, NULL), KM_ERR_DENIED);
	assert_int_equal(cl_stats(c).cookie_fetches, 2);
	assert_int_equal(cl_stats(c).denied, 3);
	assert_int_equal(put_s(c, "k", "w-longer-than-any-trailers", NULL), KM_OK);
	km_client_close(c);

	/* HELLO lost: the GET waiting for it times out. */
	fk_lock();
	fk->hello_wrong = 0;
	fk->drop_hello = 1;
	fk_unlock();
	c = cl_open(50, 1, 1);
	assert_int_equal(km_get(c, "k", 1, buf, sizeof(buf), &len, NULL), KM_ERR_TIMEOUT);
	assert_int_equal(put_s(c, "k", "x-longer-than-any-trailers", NULL), KM_OK);
	km_client_close(c);
}

/* A server from before cookies and keys: no HELLO, no trailer ever reaches it. */
static void
test_old_server(void **state)
{
	struct km_client_hello h;
	struct km_client *c;

	(void)state;
	fk_lock();
	fk->old_server = 1;
	fk_unlock();
	c = cl_open(500, 3, 0);
	assert_int_equal(km_client_epoch(c), 1);
	assert_int_equal(put_s(c, "o/1", "v1", NULL), KM_OK);
	check_get(c, "o/1", "v1", 0);
	assert_int_equal(fk_count_op(0, KM_OP_HELLO), 0);
	assert_int_equal(fk_count_flags(0, 0, KM_F_COOKIE), 0);
	assert_int_equal(fk_count_flags(0, 0, KM_F_AUTH), 0);
	assert_int_equal(cl_stats(c).cookie_fetches, 0);
	/* Asked explicitly, HELLO fails; nothing changes for the other requests. */
	assert_int_equal(km_client_hello(c, &h), KM_ERR_BAD_REQUEST);
	check_get(c, "o/1", "v1", 0);
	km_client_close(c);

	/* A key given for such a server: every request is refused as malformed. */
	c = cl_open_key(500, 3, 1, TEST_KEY);
	assert_int_equal(put_s(c, "o/1", "v2", NULL), KM_ERR_BAD_REQUEST);
	km_client_close(c);
}

/* With a client key every request carries a MAC the server can check: MAP, HELLO too. */
static void
test_auth_mac(void **state)
{
	static uint8_t big[KM_DGRAM_MAX], large[KM_VALUE_MAX_LARGE];
	struct km_client_hello h;
	struct km_mget_item it[2];
	uint8_t b0[48], b1[48];
	struct km_client *c;
	unsigned int i, n;

	(void)state;
	fk_set_key(1);
	fk_set_cookies(1, 60000);
	c = cl_open_key(500, 3, 0, TEST_KEY);
	assert_int_equal(km_client_epoch(c), 1);
	assert_int_equal(put_s(c, "x/1", "one-longer-than-any-trailers", NULL), KM_OK);
	assert_int_equal(put_s(c, "y/2", "two-longer-than-any-trailers", NULL), KM_OK);
	check_get(c, "x/1", "one-longer-than-any-trailers", 0);
	memset(it, 0, sizeof(it));
	it[0] = (struct km_mget_item){.key = "x/1", .klen = 3, .buf = b0, .cap = sizeof(b0)};
	it[1] = (struct km_mget_item){.key = "y/2", .klen = 3, .buf = b1, .cap = sizeof(b1)};
	assert_int_equal(km_mget(c, it, 2), KM_OK);
	assert_int_equal(it[0].err, KM_OK);
	assert_int_equal(it[1].err, KM_OK);
	assert_int_equal(km_ping(c, 1), KM_OK);
	assert_int_equal(km_client_hello(c, &h), KM_OK);
	assert_true(h.cookie == 0x1234567890abcdefull);
	assert_int_equal(h.valid_ms, 60000);
	assert_int_equal(h.flags, KM_CLIENT_HELLO_COOKIES | KM_CLIENT_HELLO_AUTH);

	/* The MAC takes room in the request: the size checks count it (the largest value,
	 * with a 1-byte key, leaves none; refused before sending). */
	assert_int_equal(km_put(c, "k", 1, large, KM_VALUE_MAX_LARGE, NULL), KM_ERR_TOO_LARGE);
	assert_int_equal(km_put(c, "k", 1, big, KM_VALUE_MAX - KM_CLIENT_AUTH_LEN, NULL), KM_OK);

	fk_lock();
	n = fk->nlog;
	for (i = 0; i < n; i++) {
		assert_true((fk->log[i].flags & KM_F_AUTH) != 0);
		assert_int_equal(fk->log[i].key_id, 7);
		assert_int_equal(fk->log[i].mac_ok, 1);
	}
	/* The largest PUT left no room for the cookie: it went without. */
	assert_int_equal(fk->log[n - 1].op, KM_OP_PUT);
	assert_int_equal(fk->log[n - 1].flags, KM_F_AUTH);
	fk_unlock();
	assert_int_equal(fk_count_op(0, KM_OP_HELLO), 2);
	assert_int_equal(
		fk_count_flags(0, KM_OP_MGET, KM_F_COOKIE | KM_F_AUTH), fk_count_op(0, KM_OP_MGET));
	km_client_close(c);
}

/* The server refuses the key (KM_ERR_AUTH), or what the key asks (KM_ERR_DENIED). */
static void
test_auth_denied(void **state)
{
	struct km_client *c;
	char buf[16];
	size_t len;

	(void)state;
	fk_set_key(1);
	/* Wrong secret. */
	c = cl_open_key(500, 3, 1, "7:000102030405060708090a0b0c0d0eff");
	assert_int_equal(put_s(c, "k", "v", NULL), KM_ERR_AUTH);
	assert_int_equal(km_get(c, "k", 1, buf, sizeof(buf), &len, NULL), KM_ERR_AUTH);
	assert_int_equal(cl_stats(c).denied, 2);
	km_client_close(c);
	/* Unknown key id. */
	c = cl_open_key(500, 3, 1, "8:000102030405060708090a0b0c0d0e0f");
	assert_int_equal(put_s(c, "k", "v", NULL), KM_ERR_AUTH);
	km_client_close(c);
	/* No key where one is required; with cookies too, the HELLO is refused likewise. */
	fk_set_cookies(1, 60000);
	c = cl_open(500, 3, 0);
	assert_int_equal(km_client_epoch(c), 0);
	assert_int_equal(put_s(c, "k", "v", NULL), KM_ERR_AUTH);
	assert_int_equal(km_get(c, "k", 1, buf, sizeof(buf), &len, NULL), KM_ERR_AUTH);
	km_client_close(c);
	assert_non_null(strstr(km_strerror(KM_ERR_AUTH), "key"));

	/* A read-only key: writes are not allowed, reads are. */
	fk_lock();
	fk->auth_ro = 1;
	fk_unlock();
	c = cl_open_key(500, 3, 0, TEST_KEY);
	assert_int_equal(km_client_epoch(c), 1);
	assert_int_equal(put_s(c, "k", "v", NULL), KM_ERR_DENIED);
	assert_int_equal(km_del(c, "k", 1, 0), KM_ERR_DENIED);
	assert_int_equal(km_get(c, "k", 1, buf, sizeof(buf), &len, NULL), KM_ERR_NOT_FOUND);
	assert_int_equal(cl_stats(c).denied, 3); /* the MAP at open (cookie), PUT, DEL */
	km_client_close(c);
}

/* Workers the GETs logged from `from` on went to, as a bit set. */
static unsigned int
crew_workers(unsigned int from, const char *key)
{
	unsigned int i, set = 0;

	for (i = from; i < fk_nlog(); i++) {
		struct fk_req r = fk_log_at(i);

		if (r.op == KM_OP_GET && r.klen == strlen(key) && memcmp(r.key, key, r.klen) == 0)
			set |= 1u << r.worker;
	}
	return set;
}

/* Hot keys (docs/protocol.md 2.3): a flagged GET reply spreads the key's next GETs over
 * every worker; an unflagged reply, NOT_FOUND or a second without a flagged reply brings
 * them back to the owner; other keys and writes stay steered. */
static void
test_crew_spread(void **state)
{
	struct km_client *c = cl_open(200, 3, 0), *u;
	unsigned int hot_owner = 1u << fk_owner("hot1"), cold_owner = 1u << fk_owner("cold1");
	uint8_t buf[64];
	unsigned int n0, i;
	size_t len;

	(void)state;
	assert_int_equal(km_put(c, "hot1", 4, "h", 1, NULL), KM_OK);
	assert_int_equal(km_put(c, "cold1", 5, "c", 1, NULL), KM_OK);
	/* Without the flag: the owner only. */
	n0 = fk_nlog();
	for (i = 0; i < 4; i++)
		assert_int_equal(km_get(c, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_OK);
	assert_int_equal(crew_workers(n0, "hot1"), hot_owner);
	assert_int_equal(cl_stats(c).crew_spread, 0);

	/* Flagged: the first GET learns it, the next ones go to every worker in turn. */
	fk_lock();
	fk->crew = 1;
	fk_unlock();
	assert_int_equal(km_get(c, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_OK);
	n0 = fk_nlog();
	for (i = 0; i < 8; i++) {
		assert_int_equal(km_get(c, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_OK);
		assert_int_equal(km_get(c, "cold1", 5, buf, sizeof(buf), &len, NULL), KM_OK);
	}
	assert_int_equal(crew_workers(n0, "hot1"), 0xf);
	assert_int_equal(crew_workers(n0, "cold1"), cold_owner);
	assert_int_equal(cl_stats(c).crew_spread, 8);
	/* Writes of the hot key still go to its owner. */
	n0 = fk_nlog();
	assert_int_equal(km_put(c, "hot1", 4, "h2", 2, NULL), KM_OK);
	assert_int_equal(fk_log_at(n0).worker, fk_owner("hot1"));

	/* A reply without the flag (the copies were withdrawn): back to the owner. */
	fk_lock();
	fk->crew = 0;
	fk_unlock();
	assert_int_equal(km_get(c, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_OK);
	n0 = fk_nlog();
	for (i = 0; i < 4; i++)
		assert_int_equal(km_get(c, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_OK);
	assert_int_equal(crew_workers(n0, "hot1"), hot_owner);

	/* The hint expires a second after the last flagged reply. */
	fk_lock();
	fk->crew = 1;
	fk_unlock();
	assert_int_equal(km_get(c, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_OK);
	fk_lock();
	fk->crew = 0;
	fk_unlock();
	usleep(1100 * 1000);
	n0 = fk_nlog();
	assert_int_equal(km_get(c, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_OK);
	assert_int_equal(crew_workers(n0, "hot1"), hot_owner);

	/* NOT_FOUND forgets it too. */
	fk_lock();
	fk->crew = 1;
	fk_unlock();
	assert_int_equal(km_get(c, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_OK);
	assert_int_equal(km_del(c, "hot1", 4, 0), KM_OK);
	assert_int_equal(km_get(c, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_ERR_NOT_FOUND);
	n0 = fk_nlog();
	assert_int_equal(km_get(c, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_ERR_NOT_FOUND);
	assert_int_equal(crew_workers(n0, "hot1"), hot_owner);

	/* An unsteered client sends everything to the base port, flag or not. */
	assert_int_equal(km_put(c, "hot1", 4, "h", 1, NULL), KM_OK);
	u = cl_open(200, 3, 1);
	for (i = 0; i < 4; i++)
		assert_int_equal(km_get(u, "hot1", 4, buf, sizeof(buf), &len, NULL), KM_OK);
	assert_int_equal(cl_stats(u).crew_spread, 0);
	km_client_close(u);
	km_client_close(c);
}

/*
 * A cluster of fake nodes: FC_NODES fakes on 127.0.0.2, 127.0.0.3, ..., FC_WORKERS
 * workers each, one cluster map (fcl's layout) of which each node holds its own view.
 */
#define FC_NODES   3
#define FC_WORKERS 2
#define FC_SHARDS  16

struct fcluster {
	struct fake *node[FC_NODES];
	struct km_map_node nodes[FC_NODES];
	uint64_t ids[FC_SHARDS];
	uint16_t owners[FC_SHARDS]; /* global owners */
	uint32_t epoch;
	char addr[FC_NODES][32]; /* "127.0.0.N:PORT" */
	char hosts[160];         /* every node, comma-separated */
};

static struct fcluster fcl;

/* The layout's map as node self sees it (-1: as a client does). */
static struct km_shardmap *
fc_view(int self)
{
	struct km_shardmap *m = NULL;

	assert_int_equal(km_shardmap_from_cluster(fcl.epoch, '/', 1, fcl.ids, fcl.owners, FC_SHARDS,
				 fcl.nodes, FC_NODES, self, &m),
		0);
	return m;
}

static void
fx_lock(struct fake *f)
{
	pthread_mutex_lock(&f->lock);
}

static void
fx_unlock(struct fake *f)
{
	pthread_mutex_unlock(&f->lock);
}

/* Give node i the layout's map now. */
static void
fc_publish_to(unsigned int i)
{
	struct km_shardmap *m = fc_view((int)i);

	fx_lock(fcl.node[i]);
	km_shardmap_free(fcl.node[i]->map);
	fcl.node[i]->map = m;
	fx_unlock(fcl.node[i]);
}

static void
fc_publish(void)
{
	unsigned int i;

	for (i = 0; i < FC_NODES; i++)
		fc_publish_to(i);
}

static int
setup_cluster(void **state)
{
	unsigned int i;
	size_t off = 0;

	(void)state;
	memset(&fcl, 0, sizeof(fcl));
	for (i = 0; i < FC_NODES; i++) {
		char ip[16];
		struct in_addr a;

		snprintf(ip, sizeof(ip), "127.0.0.%u", i + 2);
		fcl.node[i] = fk_new(ip, FC_WORKERS);
		assert_int_equal(inet_pton(AF_INET, ip, &a), 1);
		fcl.nodes[i].ip = ntohl(a.s_addr);
		fcl.nodes[i].port = fcl.node[i]->base;
		fcl.nodes[i].workers = FC_WORKERS;
		snprintf(fcl.addr[i], sizeof(fcl.addr[i]), "%s:%u", ip, fcl.node[i]->base);
		off += (size_t)snprintf(fcl.hosts + off, sizeof(fcl.hosts) - off, "%s%s",
			i == 0 ? "" : ",", fcl.addr[i]);
	}
	/* Depth 4: shards 16..31, spread over every worker of the cluster. */
	for (i = 0; i < FC_SHARDS; i++) {
		fcl.ids[i] = FC_SHARDS + i;
		fcl.owners[i] = (uint16_t)(i % (FC_NODES * FC_WORKERS));
	}
	fcl.epoch = 1;
	for (i = 0; i < FC_NODES; i++)
		fk_run(fcl.node[i], fc_view((int)i));
	return 0;
}

static int
teardown_cluster(void **state)
{
	unsigned int i;

	(void)state;
	for (i = 0; i < FC_NODES; i++)
		fk_stop(fcl.node[i]);
	memset(&fcl, 0, sizeof(fcl));
	return 0;
}

static struct km_client *
fc_open(const char *hosts, unsigned int timeout_ms, unsigned int retries)
{
	struct km_client_opts o = {.host = hosts, .timeout_ms = timeout_ms, .retries = retries};
	struct km_client *c = NULL;

	assert_int_equal(km_client_open(&o, &c), KM_OK);
	assert_non_null(c);
	return c;
}

/* Global owner of key in the layout, and the index of its shard. */
static unsigned int
fc_owner(const char *key, uint32_t *shard)
{
	struct km_shardmap *m = fc_view(-1);
	struct km_shardmap_route rt;
	unsigned int owner;

	assert_int_equal(km_shardmap_route(m, (const uint8_t *)key, strlen(key), &rt), 0);
	owner = rt.owner;
	if (shard != NULL)
		*shard = km_shard_index(rt.shard);
	km_shardmap_free(m);
	return owner;
}

/* A key whose global owner is g in the layout. */
static void
fc_key_of(unsigned int g, const char *prefix, char *key, size_t cap)
{
	unsigned int i;

	for (i = 0; i < 100000; i++) {
		snprintf(key, cap, "%s%u-%u", prefix, g, i);
		if (fc_owner(key, NULL) == g)
			return;
	}
	fail_msg("no key for global owner %u", g);
}

static unsigned int
fc_nlog(unsigned int node)
{
	unsigned int n;

	fx_lock(fcl.node[node]);
	n = fcl.node[node]->nlog;
	fx_unlock(fcl.node[node]);
	return n;
}

/* Requests logged by node from `from` on, of op (0: any), for key (NULL: any); *workers
 * (may be NULL) gets the bit set of the workers they arrived on. */
static unsigned int
fc_count(unsigned int node, unsigned int from, uint8_t op, const char *key, unsigned int *workers)
{
	struct fake *f = fcl.node[node];
	unsigned int i, n = 0;

	if (workers != NULL)
		*workers = 0;
	fx_lock(f);
	for (i = from; i < f->nlog; i++) {
		const struct fk_req *r = &f->log[i];

		if ((op != 0 && r->op != op) ||
			(key != NULL &&
				(r->klen != strlen(key) || memcmp(r->key, key, r->klen) != 0)))
			continue;
		n++;
		if (workers != NULL)
			*workers |= 1u << r->worker;
	}
	fx_unlock(f);
	return n;
}

/* Every node's log length, to count what came after. */
static void
fc_marks(unsigned int *mark)
{
	unsigned int i;

	for (i = 0; i < FC_NODES; i++)
		mark[i] = fc_nlog(i);
}

/* Requests reach the owner's node on the owner's worker port: single ops, batch, MGET
 * grouped by node and worker, PING of every global worker, GETs of a hot key spread over
 * the workers of its node only; every node hands out its own cookie. */
static void
test_cluster_route(void **state)
{
	enum { N = 48 };
	static char keys[N][32];
	static char vals[N][32];
	static uint8_t bufs[N][32];
	static struct km_mget_item items[N];
	static struct km_batch_op ops[N];
	const struct km_shardmap *m;
	struct km_client *c;
	unsigned int mark[FC_NODES], i, node, workers, g;
	uint8_t buf[64];
	char hot[64];
	size_t len;

	(void)state;
	/* Each node requires cookies and draws its own. */
	for (i = 0; i < FC_NODES; i++) {
		fx_lock(fcl.node[i]);
		fcl.node[i]->cookies = 1;
		fcl.node[i]->cookie = 0x1000 + i;
		fx_unlock(fcl.node[i]);
	}
	c = fc_open(fcl.hosts, 500, 3);
	assert_int_equal(km_client_epoch(c), 1);
	assert_int_equal(km_client_nb_workers(c), FC_NODES * FC_WORKERS);
	m = km_client_map(c);
	assert_non_null(m);
	assert_int_equal(km_shardmap_nb_nodes(m), FC_NODES);
	for (i = 0; i < FC_NODES; i++)
		assert_int_equal(km_shardmap_node_at(m, (uint16_t)i)->port, fcl.node[i]->base);

	for (i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "user%u/k", i);
		/* Longer than the request: every GET needs the node's cookie. */
		snprintf(vals[i], sizeof(vals[i]), "value-%u-of-a-cluster", i);
		g = fc_owner(keys[i], NULL);
		assert_int_equal(km_client_worker_of(c, keys[i], strlen(keys[i])), g);
		fc_marks(mark);
		assert_int_equal(put_s(c, keys[i], vals[i], NULL), KM_OK);
		check_get(c, keys[i], vals[i], 0);
		for (node = 0; node < FC_NODES; node++) {
			unsigned int puts =
				fc_count(node, mark[node], KM_OP_PUT, keys[i], &workers);

			if (node == g / FC_WORKERS) {
				assert_int_equal(puts, 1);
				assert_int_equal(workers, 1u << (g % FC_WORKERS));
				fc_count(node, mark[node], KM_OP_GET, keys[i], &workers);
				assert_int_equal(workers, 1u << (g % FC_WORKERS));
			} else {
				assert_int_equal(puts, 0);
				assert_int_equal(fc_count(node, mark[node], 0, keys[i], NULL), 0);
			}
		}
	}
	assert_int_equal(cl_stats(c).moved, 0);

	/* Every node was asked for a cookie, and its requests carry its own. */
	for (node = 0; node < FC_NODES; node++) {
		struct fake *f = fcl.node[node];

		assert_true(fc_count(node, 0, KM_OP_HELLO, NULL, NULL) >= 1);
		fx_lock(f);
		for (i = 0; i < f->nlog; i++)
			if (f->log[i].flags & KM_F_COOKIE)
				assert_int_equal(f->log[i].cookie, 0x1000 + node);
		fx_unlock(f);
	}

	/* Batch: every GET answered, each by its owner. */
	fc_marks(mark);
	memset(ops, 0, sizeof(ops));
	for (i = 0; i < N; i++) {
		ops[i].op = KM_BATCH_GET;
		ops[i].key = keys[i];
		ops[i].klen = strlen(keys[i]);
		ops[i].buf = bufs[i];
		ops[i].cap = sizeof(bufs[i]);
	}
	assert_int_equal(km_batch(c, ops, N), N);
	for (i = 0; i < N; i++) {
		assert_int_equal(ops[i].len, strlen(vals[i]));
		assert_memory_equal(bufs[i], vals[i], ops[i].len);
	}
	assert_int_equal(cl_stats(c).moved, 0);

	/* MGET: grouped by node and worker, one datagram each here; no MOVED entry. */
	fc_marks(mark);
	memset(items, 0, sizeof(items));
	for (i = 0; i < N; i++) {
		items[i].key = keys[i];
		items[i].klen = strlen(keys[i]);
		items[i].buf = bufs[i];
		items[i].cap = sizeof(bufs[i]);
	}
	assert_int_equal(km_mget(c, items, N), KM_OK);
	for (i = 0; i < N; i++) {
		assert_int_equal(items[i].err, KM_OK);
		assert_memory_equal(bufs[i], vals[i], items[i].len);
	}
	for (node = 0, i = 0; node < FC_NODES; node++) {
		i += fc_count(node, mark[node], KM_OP_MGET, NULL, &workers);
		assert_int_equal(workers, (1u << FC_WORKERS) - 1);
		assert_int_equal(fc_count(node, mark[node], KM_OP_GET, NULL, NULL), 0);
	}
	assert_int_equal(i, FC_NODES * FC_WORKERS);
	assert_int_equal(cl_stats(c).moved, 0);

	/* PING of global worker g: node g / FC_WORKERS, its worker g % FC_WORKERS. */
	for (g = 0; g < FC_NODES * FC_WORKERS; g++) {
		fc_marks(mark);
		assert_int_equal(km_ping(c, g), KM_OK);
		assert_int_equal(
			fc_count(g / FC_WORKERS, mark[g / FC_WORKERS], KM_OP_PING, NULL, &workers),
			1);
		assert_int_equal(workers, 1u << (g % FC_WORKERS));
	}
	assert_int_equal(km_ping(c, FC_NODES * FC_WORKERS), KM_ERR_INVAL);

	/* A hot key with copies: its GETs go to every worker of its node, no other node. */
	fc_key_of(2, "hot", hot, sizeof(hot));
	node = 2 / FC_WORKERS;
	assert_int_equal(put_s(c, hot, "h", NULL), KM_OK);
	fx_lock(fcl.node[node]);
	fcl.node[node]->crew = 1;
	fx_unlock(fcl.node[node]);
	assert_int_equal(km_get(c, hot, strlen(hot), buf, sizeof(buf), &len, NULL), KM_OK);
	fc_marks(mark);
	for (i = 0; i < 4; i++)
		assert_int_equal(km_get(c, hot, strlen(hot), buf, sizeof(buf), &len, NULL), KM_OK);
	assert_int_equal(fc_count(node, mark[node], KM_OP_GET, hot, &workers), 4);
	assert_int_equal(workers, (1u << FC_WORKERS) - 1);
	for (i = 0; i < FC_NODES; i++)
		if (i != node)
			assert_int_equal(fc_count(i, mark[i], 0, NULL, NULL), 0);
	assert_int_equal(cl_stats(c).crew_spread, 4);
	km_client_close(c);
}

/* A shard moves to another node (new epoch): its old node answers MOVED, the client
 * fetches the map from that node and resends to the new owner. A newer epoch in a reply
 * from an unaffected node brings the map too; an older one (a node that lags) does not. */
static void
test_cluster_moved(void **state)
{
	struct km_client *c;
	struct km_client_stats st;
	unsigned int mark[FC_NODES], g, g2, a, b, other, workers, i;
	uint32_t shard;
	char key[64], key2[64];

	(void)state;
	c = fc_open(fcl.hosts, 500, 3);
	assert_int_equal(km_client_epoch(c), 1);
	fc_key_of(0, "mv", key, sizeof(key));
	g = fc_owner(key, &shard);
	a = g / FC_WORKERS;
	assert_int_equal(put_s(c, key, "old", NULL), KM_OK);

	/* Epoch 2: the key's shard goes to worker 1 of the next node. */
	b = (a + 1) % FC_NODES;
	fcl.owners[shard] = (uint16_t)(b * FC_WORKERS + 1);
	fcl.epoch = 2;
	fc_publish();
	fc_marks(mark);
	st = cl_stats(c);
	assert_int_equal(put_s(c, key, "new", NULL), KM_OK);
	check_get(c, key, "new", 0);
	assert_int_equal(km_client_epoch(c), 2);
	assert_int_equal(km_client_worker_of(c, key, strlen(key)), b * FC_WORKERS + 1);
	assert_int_equal(cl_stats(c).moved, st.moved + 1);
	assert_int_equal(cl_stats(c).map_refreshes, st.map_refreshes + 1);
	/* The old node answered MOVED and was asked for the map; nobody else was. */
	assert_int_equal(fc_count(a, mark[a], KM_OP_PUT, key, NULL), 1);
	assert_true(fc_count(a, mark[a], KM_OP_MAP, NULL, NULL) >= 1);
	for (i = 0; i < FC_NODES; i++)
		if (i != a)
			assert_int_equal(fc_count(i, mark[i], KM_OP_MAP, NULL, NULL), 0);
	assert_int_equal(fc_count(b, mark[b], KM_OP_PUT, key, &workers), 1);
	assert_int_equal(workers, 1u << 1);

	/* Epoch 3 moves a shard of another node; a GET to a third node sees epoch 3 in
	 * its reply and the client fetches the map from it. */
	other = (b + 1) % FC_NODES;
	fc_key_of(other * FC_WORKERS, "ep", key2, sizeof(key2));
	g2 = fc_owner(key2, NULL);
	assert_int_equal(put_s(c, key2, "x", NULL), KM_OK);
	for (i = 0; i < FC_SHARDS; i++)
		if (fcl.owners[i] / FC_WORKERS == a && i != shard) {
			fcl.owners[i] = (uint16_t)(b * FC_WORKERS);
			break;
		}
	assert_true(i < FC_SHARDS);
	fcl.epoch = 3;
	fc_publish();
	fc_marks(mark);
	st = cl_stats(c);
	check_get(c, key2, "x", 0);
	assert_int_equal(km_client_epoch(c), 3);
	assert_int_equal(cl_stats(c).moved, st.moved);
	assert_int_equal(cl_stats(c).map_refreshes, st.map_refreshes + 1);
	assert_true(fc_count(g2 / FC_WORKERS, mark[g2 / FC_WORKERS], KM_OP_MAP, NULL, NULL) >= 1);

	/* A node still at epoch 2 (it has not applied 3): its replies bring no refresh. */
	fcl.epoch = 2;
	fc_publish_to(other);
	fcl.epoch = 3;
	st = cl_stats(c);
	for (i = 0; i < 5; i++)
		check_get(c, key2, "x", 0);
	assert_int_equal(km_client_epoch(c), 3);
	assert_int_equal(cl_stats(c).map_refreshes, st.map_refreshes);
	km_client_close(c);
}

static void *
fc_late_publish(void *arg)
{
	unsigned int i = (unsigned int)(uintptr_t)arg;

	usleep(30 * 1000);
	fc_publish_to(i);
	return NULL;
}

/*
 * A shard's new node has not applied the map that moved it there: it answers MOVED from
 * its older epoch. The client waits for it (backoff, no map fetched from it) rather than
 * going back and forth between the two nodes until its moves run out; once the node
 * catches up, the op succeeds. A node that never catches up fails the op with MOVED after
 * half the op's budget at the earliest.
 */
static void
test_cluster_moved_lagging(void **state)
{
	struct km_client *c;
	struct km_client_stats st;
	unsigned int a, b, g;
	uint32_t shard;
	pthread_t th;
	uint64_t t0;
	char key[64];

	(void)state;
	c = fc_open(fcl.hosts, 100, 3);
	fc_key_of(0, "lag", key, sizeof(key));
	g = fc_owner(key, &shard);
	a = g / FC_WORKERS;
	b = (a + 1) % FC_NODES;
	assert_int_equal(put_s(c, key, "v1", NULL), KM_OK);

	/* Epoch 2 moves the key's shard to b, which still has epoch 1 when asked. */
	fcl.owners[shard] = (uint16_t)(b * FC_WORKERS);
	fcl.epoch = 2;
	fc_publish_to(a);
	fc_publish_to((b + 1) % FC_NODES);
	st = cl_stats(c);
	assert_int_equal(pthread_create(&th, NULL, fc_late_publish, (void *)(uintptr_t)b), 0);
	assert_int_equal(put_s(c, key, "v2", NULL), KM_OK);
	pthread_join(th, NULL);
	assert_int_equal(km_client_epoch(c), 2);
	assert_true(cl_stats(c).moved_behind > st.moved_behind);
	/* One map fetched (from a, the node at the newer epoch), none from the lagging b. */
	assert_int_equal(cl_stats(c).map_refreshes, st.map_refreshes + 1);
	check_get(c, key, "v2", 0);

	/* Epoch 3 moves it back to a, and a never applies it. */
	fcl.owners[shard] = (uint16_t)(a * FC_WORKERS);
	fcl.epoch = 3;
	fc_publish_to(b);
	fc_publish_to((b + 1) % FC_NODES);
	t0 = now_ms();
	assert_int_equal(put_s(c, key, "v3", NULL), KM_ERR_MOVED);
	assert_true(now_ms() - t0 >= 100 * 4 / 2);
	km_client_close(c);
}

/* Seeds that never answer are skipped (an address with nobody, a silent node); when no
 * seed answers the open fails (KM_ERR_UNREACHABLE), or with lazy opens unsteered, as with
 * one server. */
static void
test_cluster_dead_seed(void **state)
{
	struct km_client *c;
	char hosts[256], key[64];
	unsigned int g, mark[FC_NODES];
	uint64_t t0;

	(void)state;
	fx_lock(fcl.node[0]);
	fcl.node[0]->silent = 1;
	fx_unlock(fcl.node[0]);
	snprintf(hosts, sizeof(hosts), "127.0.0.9:%u,%s,%s", fcl.node[0]->base, fcl.addr[0],
		fcl.addr[1]);
	fc_marks(mark);
	c = fc_open(hosts, 50, 1);
	assert_int_equal(km_client_epoch(c), 1);
	assert_int_equal(cl_stats(c).map_refreshes, 1);
	assert_true(cl_stats(c).timeouts >= 2);
	assert_true(fc_count(0, mark[0], KM_OP_MAP, NULL, NULL) >= 1);
	assert_true(fc_count(1, mark[1], KM_OP_MAP, NULL, NULL) >= 1);
	/* The nodes that answer serve their keys. */
	for (g = FC_WORKERS; g < FC_NODES * FC_WORKERS; g++) {
		fc_key_of(g, "ds", key, sizeof(key));
		assert_int_equal(put_s(c, key, "d", NULL), KM_OK);
		check_get(c, key, "d", 0);
	}
	/* A refresh goes past the dead ones as well. */
	assert_int_equal(km_map_refresh(c), KM_OK);
	km_client_close(c);

	/* No seed answers: KM_ERR_UNREACHABLE, or unsteered with lazy, within (retries +
	 * seeds) timeouts. */
	snprintf(hosts, sizeof(hosts), "127.0.0.9:%u,%s", fcl.node[0]->base, fcl.addr[0]);
	{
		struct km_client_opts o = {.host = hosts, .timeout_ms = 50, .retries = 1};

		c = NULL;
		t0 = now_ms();
		assert_int_equal(km_client_open(&o, &c), KM_ERR_UNREACHABLE);
		assert_null(c);
		assert_true(now_ms() - t0 < 50 * 3 * 4);
		o.lazy = 1;
		t0 = now_ms();
		assert_int_equal(km_client_open(&o, &c), KM_OK);
		assert_true(now_ms() - t0 < 50 * 3 * 4);
	}
	assert_int_equal(km_client_epoch(c), 0);
	assert_null(km_client_map(c));
	assert_int_equal(km_map_refresh(c), KM_ERR_TIMEOUT);
	km_client_close(c);
}

/* A 2.0 map with a malformed node table (or owners past it): KM_ERR_PROTO, the client
 * stays unsteered; the same node with a good table is then followed. */
static void
test_cluster_malformed(void **state)
{
	struct km_client *c;
	int k;

	(void)state;
	/* Chunks of 4 entries (the first one with the table): the map takes several. */
	fx_lock(fcl.node[0]);
	fcl.node[0]->map_cap =
		KM_MAP_HDR_LEN + 4 * KM_MAP_ENTRY_LEN + 1 + FC_NODES * KM_MAP_NODE_LEN;
	fx_unlock(fcl.node[0]);
	for (k = FK_CORRUPT_NONE + 1; k < FK_CORRUPT_MAX; k++) {
		fx_lock(fcl.node[0]);
		fcl.node[0]->map_corrupt = k;
		fx_unlock(fcl.node[0]);
		c = fc_open(fcl.addr[0], 200, 1);
		assert_int_equal(km_client_epoch(c), 0);
		assert_null(km_client_map(c));
		if (km_map_refresh(c) != KM_ERR_PROTO)
			fail_msg("corruption %d: not KM_ERR_PROTO", k);
		km_client_close(c);
	}
	fx_lock(fcl.node[0]);
	fcl.node[0]->map_corrupt = FK_CORRUPT_NONE;
	fx_unlock(fcl.node[0]);
	c = fc_open(fcl.addr[0], 200, 1);
	assert_int_equal(km_client_epoch(c), 1);
	assert_int_equal(km_shardmap_nb_shards(km_client_map(c)), FC_SHARDS);
	assert_int_equal(km_shardmap_nb_nodes(km_client_map(c)), FC_NODES);
	km_client_close(c);
}

/* A reply must come from the address its request went to: the same reply from another
 * address is ignored (the request times out), and taken again once it comes from the
 * node. */
static void
test_cluster_foreign_reply(void **state)
{
	struct km_client *c;
	struct km_client_stats st;
	char key[64], buf[16];
	size_t len;
	int fd;

	(void)state;
	c = fc_open(fcl.hosts, 50, 2);
	fc_key_of(FC_WORKERS, "fr", key, sizeof(key));
	assert_int_equal(put_s(c, key, "f", NULL), KM_OK);
	fd = fk_socket("127.0.0.5", 0);
	assert_true(fd > 0);
	fx_lock(fcl.node[1]);
	fcl.node[1]->reply_fd = fd;
	fx_unlock(fcl.node[1]);
	st = cl_stats(c);
	assert_int_equal(km_get(c, key, strlen(key), buf, sizeof(buf), &len, NULL), KM_ERR_TIMEOUT);
	assert_true(cl_stats(c).stray_replies >= st.stray_replies + 3);
	fx_lock(fcl.node[1]);
	fcl.node[1]->reply_fd = 0;
	fx_unlock(fcl.node[1]);
	check_get(c, key, "f", 0);
	close(fd);
	km_client_close(c);
}

/* Several seeds in front of one server of map 1.x: the one that answers is used as
 * before (its worker ports, its MOVED), a dead seed is skipped. */
static void
test_seeds_one_server(void **state)
{
	struct km_client_opts o = {.timeout_ms = 50, .retries = 1};
	struct km_client *c = NULL;
	char hosts[128], key[32];
	unsigned int w, from;

	(void)state;
	snprintf(hosts, sizeof(hosts), "127.0.0.9:%u,127.0.0.1", fk->base);
	o.host = hosts;
	o.port = fk->base;
	assert_int_equal(km_client_open(&o, &c), KM_OK);
	assert_int_equal(km_client_epoch(c), 1);
	assert_int_equal(km_client_nb_workers(c), 4);
	assert_int_equal(km_shardmap_nb_nodes(km_client_map(c)), 0);
	for (w = 0; w < 4; w++) {
		key_of_worker(w, key, sizeof(key));
		from = fk_nlog();
		assert_int_equal(put_s(c, key, "s", NULL), KM_OK);
		check_get(c, key, "s", 0);
		assert_int_equal(fk_log_at(from).worker, w);
		assert_int_equal(km_ping(c, w), KM_OK);
	}
	km_client_close(c);
}

/* ---- The async calls ---- */

#define AS_OPS 2000

struct as_ctx {
	struct km_client *c;
	struct km_batch_op ops[AS_OPS];
	char keys[AS_OPS][24];
	char vals[AS_OPS][24];
	char bufs[AS_OPS][32];
	unsigned int done, ok, bad, chained;
	int chain; /* the callback of op 0 submits op AS_OPS - 1 */
};

static void
as_done(struct km_batch_op *op, void *arg)
{
	struct as_ctx *x = arg;
	size_t i = (size_t)(op - x->ops);

	x->done++;
	if (op->err == KM_OK || op->err == KM_ERR_NOT_FOUND)
		x->ok++;
	else
		x->bad++;
	/* A blocking call of the handle is refused while async ops are pending, and from a
	 * callback (the last one's too: km_process is on the stack). */
	if (i == 1 || x->done == AS_OPS) {
		assert_int_equal(km_ping(x->c, 0), KM_ERR_INVAL);
		assert_int_equal(km_map_refresh(x->c), KM_ERR_INVAL);
	}
	if (x->chain && i == 0) {
		x->chained++;
		assert_int_equal(km_submit(x->c, &x->ops[AS_OPS - 1], as_done, x), KM_OK);
	}
}

/* Until nothing is pending: poll the handle's fd with its timeout, then process. */
static void
as_drain(struct km_client *c)
{
	uint64_t t0 = now_ms();
	struct pollfd p;
	int to, r;

	while (km_async_pending(c) != 0) {
		assert_true(now_ms() - t0 < 20000);
		/* The handle's own timeout, as an event loop would use it: ops pending and no
		 * deadline would hang such a loop. */
		to = km_async_timeout_ms(c);
		assert_true(to >= 0);
		p.fd = km_async_fd(c);
		p.events = (short)(POLLIN | (km_async_want_write(c) ? POLLOUT : 0));
		p.revents = 0;
		if (to != 0)
			poll(&p, 1, to);
		r = km_process(c);
		assert_true(r >= 0);
	}
}

static void
test_async(void **state)
{
	struct as_ctx *x = calloc(1, sizeof(*x));
	unsigned int i;
	struct km_batch_op bad = {.op = KM_BATCH_GET, .key = NULL, .klen = 0};

	(void)state;
	assert_non_null(x);
	x->c = cl_open(200, 3, 0);
	assert_int_equal(km_async_pending(x->c), 0);
	assert_int_equal(km_async_timeout_ms(x->c), -1);
	assert_true(km_async_fd(x->c) >= 0);
	assert_int_equal(km_submit(x->c, NULL, as_done, x), KM_ERR_INVAL);
	assert_int_equal(km_submit(x->c, &bad, NULL, x), KM_ERR_INVAL);
	/* PUTs, more than the window, then their GETs; one invalid op among them. */
	for (i = 0; i < AS_OPS - 1; i++) {
		snprintf(x->keys[i], sizeof(x->keys[i]), "as%u", i);
		snprintf(x->vals[i], sizeof(x->vals[i]), "v%u", i * 7);
		x->ops[i] = (struct km_batch_op){.op = KM_BATCH_PUT,
			.key = x->keys[i],
			.klen = strlen(x->keys[i]),
			.val = x->vals[i],
			.vlen = strlen(x->vals[i])};
		assert_int_equal(km_submit(x->c, &x->ops[i], as_done, x), KM_OK);
	}
	assert_int_equal(km_submit(x->c, &bad, as_done, x), KM_OK);
	assert_int_equal(km_async_pending(x->c), AS_OPS);
	assert_int_equal(km_async_timeout_ms(x->c), 0); /* work to do now */
	as_drain(x->c);
	assert_int_equal(x->done, AS_OPS);
	assert_int_equal(x->bad, 1);
	assert_int_equal(bad.err, KM_ERR_INVAL);
	for (i = 0; i < AS_OPS - 1; i++)
		assert_int_equal(x->ops[i].err, KM_OK);
	/* The blocking calls work again. */
	check_get(x->c, "as5", "v35", 0);
	/* GETs, one submitted from a callback. */
	x->done = x->ok = x->bad = 0;
	x->chain = 1;
	for (i = 0; i < AS_OPS - 1; i++) {
		x->ops[i] = (struct km_batch_op){.op = KM_BATCH_GET,
			.key = x->keys[i],
			.klen = strlen(x->keys[i]),
			.buf = x->bufs[i],
			.cap = sizeof(x->bufs[i])};
		assert_int_equal(km_submit(x->c, &x->ops[i], as_done, x), KM_OK);
	}
	snprintf(x->keys[AS_OPS - 1], sizeof(x->keys[0]), "as-absent");
	x->ops[AS_OPS - 1] = (struct km_batch_op){.op = KM_BATCH_GET,
		.key = x->keys[AS_OPS - 1],
		.klen = strlen(x->keys[AS_OPS - 1]),
		.buf = x->bufs[0],
		.cap = 0};
	as_drain(x->c);
	assert_int_equal(x->chained, 1);
	assert_int_equal(x->done, AS_OPS);
	assert_int_equal(x->bad, 0);
	assert_int_equal(x->ops[AS_OPS - 1].err, KM_ERR_NOT_FOUND);
	for (i = 0; i < AS_OPS - 1; i++) {
		assert_int_equal(x->ops[i].err, KM_OK);
		assert_int_equal(x->ops[i].len, strlen(x->vals[i]));
		assert_memory_equal(x->bufs[i], x->vals[i], x->ops[i].len);
	}
	km_client_close(x->c);
	free(x);
}

/* A server that does not answer: every async op times out, its callback says so. */
static void
test_async_timeout(void **state)
{
	struct as_ctx *x = calloc(1, sizeof(*x));
	unsigned int i;
	uint64_t t0;

	(void)state;
	assert_non_null(x);
	x->c = cl_open(30, 1, 0);
	fk_lock();
	fk->silent = 1;
	fk_unlock();
	for (i = 0; i < 100; i++) {
		snprintf(x->keys[i], sizeof(x->keys[i]), "to%u", i);
		x->ops[i] = (struct km_batch_op){
			.op = KM_BATCH_GET, .key = x->keys[i], .klen = strlen(x->keys[i])};
		assert_int_equal(km_submit(x->c, &x->ops[i], as_done, x), KM_OK);
	}
	t0 = now_ms();
	as_drain(x->c);
	assert_true(now_ms() - t0 < 2000);
	assert_int_equal(x->done, 100);
	for (i = 0; i < 100; i++)
		assert_int_equal(x->ops[i].err, KM_ERR_TIMEOUT);
	fk_lock();
	fk->silent = 0;
	fk_unlock();
	km_client_close(x->c);
	free(x);
}

static void
test_open_errors(void **state)
{
	struct km_client_opts o = {.host = "nosuch.invalid", .timeout_ms = 30, .retries = 0};
	struct km_client *c = NULL;
	uint8_t big[sizeof(o) + 16];

	(void)state;
	assert_int_equal(km_client_open(&o, &c), KM_ERR_RESOLVE);
	assert_null(c);
	/* A caller's struct from a newer header: its extra bytes must be zero. */
	memset(big, 0, sizeof(big));
	o.host = "127.0.0.1";
	o.no_steer = 1;
	o.size = sizeof(big);
	memcpy(big, &o, sizeof(o));
	assert_int_equal(km_client_open((struct km_client_opts *)(void *)big, &c), KM_OK);
	km_client_close(c);
	big[sizeof(o) + 3] = 1;
	c = NULL;
	assert_int_equal(km_client_open((struct km_client_opts *)(void *)big, &c), KM_ERR_INVAL);
	assert_null(c);
	/* An older caller's: only the fields it had (here: up to host). */
	o.size = offsetof(struct km_client_opts, host) + sizeof(o.host);
	assert_int_equal(km_client_open(&o, &c), KM_ERR_UNREACHABLE); /* no_steer not seen */
	o.size = 1;
	assert_int_equal(km_client_open(&o, &c), KM_ERR_INVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test_setup_teardown(test_async, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_async_timeout, setup4, teardown),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_open_inval),
		cmocka_unit_test_setup_teardown(test_basic, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_session, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_validation, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_large_values, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_retry_same_req_id, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_busy, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_stray_replies, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_moved, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_moved_forever, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_split_follow, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_override_follow, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_map_changes_during_fetch, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_server_restart, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_batch_moved, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_no_map_server, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_map_version, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_map_dropped, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_no_steer, setup1, teardown),
		cmocka_unit_test_setup_teardown(test_batch_10k, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_mget, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_mget_moved, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_cookie_first_contact, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_cookie_change, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_cookie_no_hello, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_old_server, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_auth_mac, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_auth_denied, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_crew_spread, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_seeds_one_server, setup4, teardown),
		cmocka_unit_test_setup_teardown(
			test_cluster_route, setup_cluster, teardown_cluster),
		cmocka_unit_test_setup_teardown(
			test_cluster_moved, setup_cluster, teardown_cluster),
		cmocka_unit_test_setup_teardown(
			test_cluster_moved_lagging, setup_cluster, teardown_cluster),
		cmocka_unit_test_setup_teardown(
			test_cluster_dead_seed, setup_cluster, teardown_cluster),
		cmocka_unit_test_setup_teardown(
			test_cluster_malformed, setup_cluster, teardown_cluster),
		cmocka_unit_test_setup_teardown(
			test_cluster_foreign_reply, setup_cluster, teardown_cluster),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
