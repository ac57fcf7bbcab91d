/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Hot-key replication across workers (CREW: concurrent reads, exclusive writes, as MICA
 * does it). See km_proc.h for the contract; docs/architecture.md for the design.
 *
 * Each owner worker has a table of read copies of its hottest keys in memory every worker
 * reads. Only the owner writes its table; each entry is guarded by a sequence counter
 * (seqlock): the owner makes it odd, rewrites the entry, makes it even. A reader copies the
 * entry out between two reads of the counter and keeps the copy only if the counter was
 * even and did not move. The owner rewrites the copy of a key in the same step as it
 * applies a write to its store, before the reply leaves: a read that starts after the
 * acknowledgement of a write finds the new value (or, while the entry is being rewritten,
 * retries or falls back to the owner). No grace period and no waiting on either side.
 *
 * Lookup: the tags (key hash | 1, 0 = free slot) of a group of 8 slots share one cache line;
 * a key lives in a slot of the group its hash selects. A reader whose key is not tagged in
 * the owner's table pays one cache line (none when the table is empty).
 */

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "proc_private.h"

#define CREW_GROUP 8 /* slots per group: their tags fill a cache line */
#define CREW_TRIES 4 /* reads of an entry before the request goes to the owner */
#define CREW_ALIGN 64

/*
 * One read copy. seq: the owner writes it (odd while the entry changes), readers load it.
 * Everything else: written by the owner between an odd and the next even seq, read by
 * other workers only between two loads of seq that found the same even value.
 */
struct crew_entry {
	_Atomic uint32_t seq;
	uint16_t key_len; /* 0: no key (withdrawn) */
	uint16_t pad;
	uint32_t val_len;
	uint32_t pad2;
	uint64_t key_hash;
	uint64_t shard_id;
	uint64_t version;
	uint8_t key[KM_KEY_MAX];
	/* value_max bytes of value follow, at val_off() */
};

/* The copies of one owner worker. */
struct crew_table {
	/* Entries in use: owner rw (release after a tag is set, before one is cleared);
	 * readers load it (relaxed) to skip an empty table. */
	_Atomic uint32_t nb;
	uint32_t pad[CREW_ALIGN / 4 - 1];
	/* Tags, one cache line per group: owner stores (release, after the entry is
	 * written), readers load (acquire, before the entry's seq). */
	_Atomic uint64_t *tags;
	uint8_t *entries; /* slots x stride */
} __attribute__((aligned(CREW_ALIGN)));

struct km_crew {
	uint16_t nb_workers;
	uint32_t keys_max;
	uint32_t value_max;
	uint32_t groups;           /* per table, power of 2 */
	size_t stride;             /* bytes per entry */
	struct crew_table *tables; /* nb_workers */
};

static inline size_t
val_off(void)
{
	return sizeof(struct crew_entry);
}

static inline struct crew_entry *
entry_at(const struct km_crew *c, const struct crew_table *t, uint32_t slot)
{
	return (struct crew_entry *)(t->entries + (size_t)slot * c->stride);
}

static inline uint32_t
group_of(const struct km_crew *c, uint64_t hash)
{
	return (uint32_t)((hash * 0x9e3779b97f4a7c15ULL) >> 40) & (c->groups - 1);
}

static inline uint64_t
tag_of(uint64_t hash)
{
	return hash | 1;
}

int
km_crew_create(const struct km_crew_params *cp, struct km_crew **out)
{
	struct km_crew *c;
	uint32_t groups = 1;
	uint16_t w;

	if (cp == NULL || out == NULL || cp->nb_workers == 0 || cp->keys_max == 0 ||
		cp->keys_max > KM_CREW_KEYS_MAX || cp->value_max == 0 ||
		cp->value_max > KM_CREW_VALUE_MAX)
		return -EINVAL;
	/* Twice the slots of the keys wanted: a group rarely fills up. */
	while (groups * CREW_GROUP < 2 * cp->keys_max)
		groups *= 2;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->nb_workers = cp->nb_workers;
	c->keys_max = cp->keys_max;
	c->value_max = cp->value_max;
	c->groups = groups;
	c->stride = (val_off() + cp->value_max + CREW_ALIGN - 1) & ~(size_t)(CREW_ALIGN - 1);
	c->tables = aligned_alloc(CREW_ALIGN, sizeof(*c->tables) * cp->nb_workers);
	if (c->tables == NULL) {
		free(c);
		return -ENOMEM;
	}
	memset(c->tables, 0, sizeof(*c->tables) * cp->nb_workers);
	for (w = 0; w < cp->nb_workers; w++) {
		struct crew_table *t = &c->tables[w];

		t->tags = aligned_alloc(CREW_ALIGN, sizeof(uint64_t) * groups * CREW_GROUP);
		t->entries = aligned_alloc(CREW_ALIGN, c->stride * groups * CREW_GROUP);
		if (t->tags == NULL || t->entries == NULL) {
			km_crew_destroy(c);
			return -ENOMEM;
		}
		memset((void *)t->tags, 0, sizeof(uint64_t) * groups * CREW_GROUP);
		memset(t->entries, 0, c->stride * groups * CREW_GROUP);
	}
	*out = c;
	return 0;
}

void
km_crew_destroy(struct km_crew *c)
{
	uint16_t w;

	if (c == NULL)
		return;
	for (w = 0; c->tables != NULL && w < c->nb_workers; w++) {
		free((void *)c->tables[w].tags);
		free(c->tables[w].entries);
	}
	free(c->tables);
	free(c);
}

uint32_t
km_crew_value_max(const struct km_crew *c)
{
	return c->value_max;
}

/* ---- The owner's side ------------------------------------------------------------- */

/* Seqlock, writer: odd before the entry changes. The release fence orders the odd store
 * before the stores to the entry (pairs with the reader's acquire fence before its second
 * load of seq: a reader that saw any new byte sees seq moved). */
static inline void
write_begin(struct crew_entry *e)
{
	uint32_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);

	atomic_store_explicit(&e->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

/* Even again: release orders the entry's stores before it (pairs with the reader's
 * acquire load of seq at the start of its copy). */
static inline void
write_end(struct crew_entry *e)
{
	uint32_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);

	atomic_store_explicit(&e->seq, s + 1, memory_order_release);
}

/* Slot of a key (by hash and bytes) in the owner's own table, or -1. Owner only: its own
 * entries never change under it. */
static int
own_find(const struct km_proc *p, uint64_t hash, const uint8_t *key, uint16_t len)
{
	const struct km_crew *c = p->crew;
	const struct crew_table *t = &c->tables[p->worker];
	uint32_t g = group_of(c, hash), i;

	for (i = 0; i < CREW_GROUP; i++) {
		uint32_t slot = g * CREW_GROUP + i;
		const struct crew_entry *e;

		if (atomic_load_explicit(&t->tags[slot], memory_order_relaxed) != tag_of(hash))
			continue;
		e = entry_at(c, t, slot);
		if (e->key_len == len && (key == NULL || memcmp(e->key, key, len) == 0))
			return (int)slot;
	}
	return -1;
}

static void
withdraw_slot(struct km_proc *p, uint32_t slot)
{
	struct crew_table *t = &p->crew->tables[p->worker];
	struct crew_entry *e = entry_at(p->crew, t, slot);

	/* The tag first: new readers stop finding the key; a reader that found it meanwhile
	 * sees seq moved, or a withdrawn entry. */
	atomic_store_explicit(&t->tags[slot], 0, memory_order_release);
	write_begin(e);
	e->key_len = 0;
	e->key_hash = 0;
	write_end(e);
	atomic_store_explicit(&t->nb, atomic_load_explicit(&t->nb, memory_order_relaxed) - 1,
		memory_order_release);
	p->crew_own--;
	p->cnt.crew_withdrawn++;
}

int
km_proc_crew_add(struct km_proc *p, const struct km_shardmap *map, const uint8_t *key, uint16_t len)
{
	struct km_proc_shard *shd;
	struct km_value_ref v;
	struct crew_table *t;
	struct crew_entry *e;
	struct km_route rt;
	struct km_key k;
	uint8_t mark;
	uint32_t g, i;
	int rc;

	if (p->crew == NULL || key == NULL || len == 0 || len > KM_KEY_MAX)
		return -EINVAL;
	route_of(map, key, len, &rt);
	shd = owned_shard(p, rt.shard, rt.hash);
	if (shd == NULL)
		return -EXDEV; /* not this worker's (any more): the control lcore asks the owner */
	key_init(&k, key, len, &rt);
	if (own_find(p, k.hash, key, len) >= 0)
		return 0;
	if (p->crew_own >= p->crew->keys_max)
		return -ENOSPC;
	/* A replicated shard has no read copy: a copy would escape the replicas' waits and
	 * the lease fence. */
	if (shd->repl != NULL)
		return -EPERM;
	/* The value as the owner serves it now: from the store (values in DRAM) or the cache
	 * (a store on disk: a hot key is cached; if not, a later request may find it). */
	if (shd->persistent)
		rc = km_cache_get_mark(p->cache, &k, shd->gen, &v, &mark) == 0 ? 0 : -EAGAIN;
	else
		rc = km_store_get(shd->store, &k, &v);
	if (rc < 0)
		return rc == -EAGAIN ? -EAGAIN : -ENOENT;
	if (v.len > p->crew->value_max)
		return -E2BIG;
	t = &p->crew->tables[p->worker];
	g = group_of(p->crew, k.hash);
	for (i = 0; i < CREW_GROUP; i++)
		if (atomic_load_explicit(&t->tags[g * CREW_GROUP + i], memory_order_relaxed) == 0)
			break;
	if (i == CREW_GROUP)
		return -ENOSPC;
	e = entry_at(p->crew, t, g * CREW_GROUP + i);
	write_begin(e);
	e->key_len = len;
	e->key_hash = k.hash;
	e->shard_id = km_shard_id_fast(rt.shard);
	memcpy(e->key, key, len);
	e->val_len = v.len;
	e->version = v.version;
	if (v.len != 0)
		memcpy((uint8_t *)e + val_off(), v.data, v.len);
	write_end(e);
	/* Release: a reader that loads the tag (acquire) finds the entry written. */
	atomic_store_explicit(&t->tags[g * CREW_GROUP + i], tag_of(k.hash), memory_order_release);
	atomic_store_explicit(&t->nb, atomic_load_explicit(&t->nb, memory_order_relaxed) + 1,
		memory_order_release);
	p->crew_own++;
	p->cnt.crew_added++;
	return 1;
}

int
km_proc_crew_remove(struct km_proc *p, const uint8_t *key, uint16_t len)
{
	int slot;

	if (p->crew == NULL || key == NULL || len == 0 || len > KM_KEY_MAX)
		return -EINVAL;
	if (p->crew_own == 0)
		return 0;
	slot = own_find(p, km_key_hash(key, len), key, len);
	if (slot < 0)
		return 0;
	withdraw_slot(p, (uint32_t)slot);
	return 1;
}

/* Whether shards a and b hold hashes in common: one is the other or an ancestor of it
 * (a copy made before a split carries the parent's id). */
static int
shards_overlap(uint64_t a, uint64_t b)
{
	unsigned int da = km_shard_depth(a), db = km_shard_depth(b);

	return da <= db ? (b >> (db - da)) == a : (a >> (da - db)) == b;
}

unsigned int
km_proc_crew_withdraw(struct km_proc *p, uint64_t shard_id)
{
	const struct crew_table *t;
	unsigned int n = 0;
	uint32_t slot;

	if (p->crew == NULL || p->crew_own == 0)
		return 0;
	t = &p->crew->tables[p->worker];
	for (slot = 0; slot < p->crew->groups * CREW_GROUP && p->crew_own != 0; slot++) {
		if (atomic_load_explicit(&t->tags[slot], memory_order_relaxed) == 0)
			continue;
		if (shard_id != 0 &&
			!shards_overlap(entry_at(p->crew, t, slot)->shard_id, shard_id))
			continue;
		withdraw_slot(p, slot);
		n++;
	}
	return n;
}

unsigned int
km_proc_crew_revalidate(struct km_proc *p, const struct km_shardmap *map)
{
	const struct crew_table *t;
	unsigned int n = 0;
	uint32_t slot;

	if (p->crew == NULL || p->crew_own == 0)
		return 0;
	t = &p->crew->tables[p->worker];
	for (slot = 0; slot < p->crew->groups * CREW_GROUP; slot++) {
		const struct crew_entry *e = entry_at(p->crew, t, slot);
		struct km_route rt;

		if (atomic_load_explicit(&t->tags[slot], memory_order_relaxed) == 0)
			continue;
		route_of(map, e->key, e->key_len, &rt);
		if (owned_shard(p, rt.shard, rt.hash) != NULL &&
			km_shard_id_fast(rt.shard) == e->shard_id)
			continue;
		withdraw_slot(p, slot);
		n++;
	}
	return n;
}

/*
 * The owner applied a write to key k (PUT/CAS: value val of len bytes, version; DEL:
 * val NULL): its copy, if it has one, takes the new value before the reply leaves, or is
 * withdrawn (deleted, or larger than the copies hold).
 */
void
proc_crew_written(struct km_proc *p, const struct km_key *k, const uint8_t *val, uint32_t len,
	uint64_t version)
{
	struct crew_entry *e;
	int slot = own_find(p, k->hash, k->data, k->len);

	if (slot < 0)
		return;
	if (val == NULL || len > p->crew->value_max) {
		withdraw_slot(p, (uint32_t)slot);
		return;
	}
	e = entry_at(p->crew, &p->crew->tables[p->worker], (uint32_t)slot);
	write_begin(e);
	e->val_len = len;
	e->version = version;
	if (len != 0)
		memcpy((uint8_t *)e + val_off(), val, len);
	write_end(e);
	p->cnt.crew_updates++;
}

/* Whether owner's table tags key hash h (a hint: the copy is checked when read). */
static int
tagged(const struct km_crew *c, uint16_t owner, uint64_t h)
{
	const struct crew_table *t = &c->tables[owner];
	uint32_t g, i;

	if (atomic_load_explicit(&t->nb, memory_order_relaxed) == 0)
		return 0;
	g = group_of(c, h);
	for (i = 0; i < CREW_GROUP; i++)
		if (atomic_load_explicit(&t->tags[g * CREW_GROUP + i], memory_order_relaxed) ==
			tag_of(h))
			return 1;
	return 0;
}

/* Whether key hash h has a copy in the owner's own table: its GET replies say so (a hint
 * to clients: a colliding hash costs a request that another worker hands over). */
int
proc_crew_has(const struct km_proc *p, uint64_t h)
{
	return tagged(p->crew, p->worker, h);
}

/* ---- Readers: any worker ---------------------------------------------------------- */

/*
 * Copy key k's value out of owner's table into buf (room for value_max bytes).
 * @return 0 (*v filled, v->data = buf), -ENOENT no copy, -EAGAIN the owner kept
 *   rewriting the entry (the request then goes to the owner).
 */
int
proc_crew_read(struct km_proc *p, uint16_t owner, const struct km_key *k, uint8_t *buf,
	struct km_value_ref *v)
{
	const struct km_crew *c = p->crew;
	const struct crew_table *t = &c->tables[owner];
	uint32_t g, i, slot, s1, s2, vlen;
	const struct crew_entry *e;
	unsigned int tries;

	if (atomic_load_explicit(&t->nb, memory_order_relaxed) == 0)
		return -ENOENT;
	g = group_of(c, k->hash);
	for (i = 0; i < CREW_GROUP; i++)
		if (atomic_load_explicit(&t->tags[g * CREW_GROUP + i], memory_order_acquire) ==
			tag_of(k->hash))
			break;
	if (i == CREW_GROUP)
		return -ENOENT;
	slot = g * CREW_GROUP + i;
	e = entry_at(c, t, slot);
	for (tries = 0; tries < CREW_TRIES; tries++) {
		if (tries != 0)
			p->cnt.crew_retries++;
		/* Acquire: pairs with the owner's release store of an even seq; the entry's
		 * bytes read below are at least as new as that store. */
		s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		if (e->key_hash != k->hash || e->key_len != k->len ||
			memcmp(e->key, k->data, k->len) != 0) {
			/* Another key (or none) now, unless the entry moved meanwhile. */
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&e->seq, memory_order_relaxed) == s1)
				return -ENOENT;
			continue;
		}
		vlen = e->val_len;
		if (vlen > c->value_max)
			continue; /* torn: the check below fails */
		memcpy(buf, (const uint8_t *)e + val_off(), vlen);
		v->version = e->version;
		/* Acquire fence: the copy above is ordered before the second load of seq
		 * (pairs with the owner's release fence after its odd store). */
		atomic_thread_fence(memory_order_acquire);
		s2 = atomic_load_explicit(&e->seq, memory_order_relaxed);
		if (s1 == s2) {
			v->data = buf;
			v->len = vlen;
			return 0;
		}
	}
	p->cnt.crew_fallbacks++;
	return -EAGAIN;
}

/* A GET another worker owns: served here from the owner's copy if it has one. The reply
 * carries KM_F_CREW. @return 1 answered (r's verdict set), 0 not (hand it over). */
static int
crew_serve(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r, uint16_t owner)
{
	uint8_t buf[KM_CREW_VALUE_MAX];
	struct km_value_ref v;
	size_t limit = SIZE_MAX, len;

	if (r->msg.hdr.op != KM_OP_GET || owner >= p->crew->nb_workers)
		return 0;
	key_init(&r->key, r->msg.key, r->msg.hdr.key_len, &r->rt);
	if (proc_crew_read(p, owner, &r->key, buf, &v) < 0)
		return 0;
	/* Room and address validation as the owner would judge them: a reply that does not
	 * fit here goes to the owner, which grows it. */
	if ((size_t)KM_HDR_LEN + v.len > r->cap)
		return 0;
	if (p->hello != NULL && !proc_cookie_valid(p, r->src, &r->msg))
		limit = r->len;
	if (p->crew_every != 0)
		proc_crew_sample(p, &r->key, KM_OP_GET, km_shard_id_fast(r->rt.shard), owner);
	p->cnt.req_get++;
	len = proc_value_reply(
		p, &r->msg.hdr, km_shardmap_epoch_fast(map), &v, r->buf, r->cap, limit);
	if (len > KM_HDR_LEN)
		km_put16(r->buf + 4, KM_F_REPLY | KM_F_CREW);
	p->cnt.crew_reads++;
	r->verdict = KM_PROC_REPLY;
	r->reply_len = len;
	return 1;
}

/*
 * A GET of a key owned by owner, at stage 1. A steered client (epoch set) spreads a hot
 * key's GETs over the workers' ports on purpose: one that arrived at another worker's
 * queue (RSS, or a port that steers by flow, as net_tap does by the queue of the flow's
 * last reply) is handed to the worker the client addressed, whose reply brings the flow
 * back to its queue; one that arrived where it was sent, an unsteered one and a handed
 * one are served here from the copy (the owner executes its own). @return 1 verdict set
 * (REPLY or HANDOFF), 0 the usual path.
 */
int
proc_crew_route(
	struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r, uint16_t owner)
{
	int16_t pw = r->port_worker;

	if (owner >= p->crew->nb_workers)
		return 0;
	if (!r->handed && pw >= 0 && pw != p->worker && pw < p->crew->nb_workers &&
		r->msg.hdr.epoch != 0 && tagged(p->crew, owner, r->rt.key_hash)) {
		r->verdict = KM_PROC_HANDOFF;
		r->owner = (uint16_t)pw;
		return 1;
	}
	if (owner == p->worker)
		return 0;
	return crew_serve(p, map, r, owner);
}

/* One MGET entry another worker owns: its copy, if it has one. @return 0 (*v from buf),
 * < 0 none. */
int
proc_crew_mget_entry(struct km_proc *p, const struct km_route *rt, const struct km_key *k,
	uint8_t *buf, struct km_value_ref *v)
{
	uint16_t owner = km_shard_owner_fast(rt->shard);

	if (owner >= p->crew->nb_workers || proc_crew_read(p, owner, k, buf, v) < 0)
		return -ENOENT;
	p->cnt.crew_reads++;
	return 0;
}

/* ---- Sampling: which keys are hot ------------------------------------------------- */

void
proc_crew_sample(
	struct km_proc *p, const struct km_key *k, uint8_t op, uint64_t shard_id, uint16_t owner)
{
	struct km_proc_note *n;

	if (--p->crew_left != 0)
		return;
	p->crew_left = p->crew_every;
	n = proc_note_new(p, KM_PROC_NOTE_CREW);
	if (n == NULL)
		return;
	n->op = op;
	n->owner = owner;
	n->shard_id = shard_id;
	n->key_len = k->len;
	memcpy(n->key, k->data, k->len);
}

int
km_proc_set_crew(struct km_proc *p, struct km_crew *c)
{
	if (c != NULL && p->worker >= c->nb_workers)
		return -EINVAL;
	if (c != NULL && p->notes == NULL) {
		/* A store with values in DRAM has no prefetch, hence no notes yet. */
		p->notes = calloc(KM_PROC_NOTES_MAX, sizeof(*p->notes));
		if (p->notes == NULL)
			return -ENOMEM;
	}
	p->crew = c;
	return 0;
}

void
km_proc_crew_sampling(struct km_proc *p, uint32_t every)
{
	if (p->crew == NULL)
		every = 0;
	p->crew_every = every;
	p->crew_left = every;
}

uint32_t
km_crew_list(const struct km_crew *c, struct km_crew_info *out, uint32_t max)
{
	uint32_t n = 0, slot, s1;
	uint16_t w;

	for (w = 0; w < c->nb_workers; w++) {
		const struct crew_table *t = &c->tables[w];

		if (atomic_load_explicit(&t->nb, memory_order_acquire) == 0)
			continue;
		for (slot = 0; slot < c->groups * CREW_GROUP && n < max; slot++) {
			const struct crew_entry *e = entry_at(c, t, slot);
			struct km_crew_info *o = &out[n];

			if (atomic_load_explicit(&t->tags[slot], memory_order_acquire) == 0)
				continue;
			s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
			if (s1 & 1)
				continue; /* being rewritten: shown next time */
			o->owner = w;
			o->key_len = e->key_len;
			o->val_len = e->val_len;
			o->version = e->version;
			o->shard_id = e->shard_id;
			if (o->key_len > KM_KEY_MAX)
				continue;
			memcpy(o->key, e->key, o->key_len);
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&e->seq, memory_order_relaxed) == s1 &&
				o->key_len != 0)
				n++;
		}
	}
	return n;
}
