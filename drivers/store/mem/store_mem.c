/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * "mem" store driver: volatile, values in DRAM, sized for ~100 M keys per process, so
 * every byte per key counts.
 *
 * Index: one open-addressing table of 8-byte slots, linear probing:
 *   bits 63..48  tag, 16 bits derived from the key hash: rejects almost every
 *                non-matching slot without touching its record (a cache miss).
 *   bits 47..0   record pointer, 0 = empty slot. malloc returns 16-byte aligned blocks,
 *                so bits 3..0 of the pointer are free: they hold the entry's probe
 *                distance (slot - home slot), saturated at 15, so deletion knows where
 *                an entry belongs without re-hashing its key in the common case.
 * Deletion shifts the following entries of the cluster back (no tombstones), so lookups
 * stop at the first empty slot however many deletes happened. The table doubles at load
 * 7/8; records keep no hash (8 bytes per key saved), so growth recomputes km_key_hash()
 * from each record's key. This requires k->hash == km_key_hash(k->data, k->len), which
 * the header's contract for struct km_key already states.
 *
 * Record: one malloc block, an 11-byte header, the key, then the value.
 *
 * Concurrency: single owner thread per instance (see km_store.h); nothing here is shared.
 */

#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <km_store.h>
#include <km_util.h>

/* The protocol's bound; the record keeps the length in a byte. */
#define MEM_KEY_MAX KM_KEY_MAX
_Static_assert(KM_KEY_MAX <= UINT8_MAX, "a key's length fits the record's byte");
/* A worker holds many shard stores: keep an unsized one small (512 bytes of slots). */
#define MEM_SLOTS_DEFAULT 64
#define MEM_SLOTS_MIN     16

/* Slots ahead whose records growth prefetches, to keep several DRAM misses in flight.
 * Measured (dev VM, 7.3 M keys of 16+64 B): doubling took 0.57-0.86 s without, 0.25-0.28 s
 * with 8 or 16; 32 was no better. */
#define MEM_GROW_PREFETCH 16

/* Slots the ENTRY prefetch step looks at for the key's tag, a cache line's worth; a longer
 * probe sequence is left to the lookup itself. */
#define MEM_PREFETCH_PROBE 8

#define SLOT_TAG_SHIFT 48
#define SLOT_TAG_MASK  (UINT64_C(0xffff) << SLOT_TAG_SHIFT)
#define SLOT_PTR_MASK  UINT64_C(0x0000fffffffffff0)
#define SLOT_DIST_MASK UINT64_C(0xf)
#define SLOT_DIST_SAT  15 /* distance >= 15: recompute it from the key */

/* glibc keeps one size word before each chunk: the real cost of a block is its usable
 * size plus this. */
#define MALLOC_CHUNK_HDR 8

struct mem_rec {
	uint64_t version;
	uint16_t val_len;
	uint8_t key_len;
	uint8_t data[]; /* key_len bytes of key, then val_len bytes of value */
};

/* Bytes before the key: 11, not sizeof (16), since data[] needs no alignment. */
#define MEM_REC_HDR offsetof(struct mem_rec, data)

struct mem_store {
	struct km_store base; /* first: the km_store pointer is cast back to this */
	uint64_t *slots;
	uint64_t mask;    /* number of slots - 1 (a power of two) */
	uint64_t grow_at; /* keys allowed before doubling: 7/8 of the slots */
	uint64_t nb_keys;
	uint64_t version; /* last version issued or loaded; every successful write takes the next */
	uint64_t value_bytes;    /* key + value bytes of all records */
	uint64_t overhead_bytes; /* record headers + allocator rounding and chunk headers */
	uint32_t value_max;
};

static const struct km_store_ops mem_ops;

static inline uint64_t
mem_tag(uint64_t hash)
{
	/* Not the hash's top bits: the shard map routes by them, so within one shard's store
	 * they are (nearly) constant. Multiplying by an odd constant folds every bit of the
	 * hash into the top 16. */
	return (hash * UINT64_C(0x9e3779b97f4a7c15)) & SLOT_TAG_MASK;
}

static inline struct mem_rec *
slot_rec(uint64_t s)
{
	return (struct mem_rec *)(uintptr_t)(s & SLOT_PTR_MASK);
}

static inline uint64_t
slot_make(uint64_t tag, const struct mem_rec *r, uint64_t dist)
{
	return tag | (uintptr_t)r | (dist < SLOT_DIST_SAT ? dist : SLOT_DIST_SAT);
}

static inline uint64_t
rec_cost(const struct mem_rec *r)
{
	return malloc_usable_size((void *)(uintptr_t)r) + MALLOC_CHUNK_HDR;
}

static inline int
mem_key_ok(const struct km_key *k)
{
	return k != NULL && k->data != NULL && k->len >= 1 && k->len <= MEM_KEY_MAX;
}

/* Allocate a record the slot format can point to. */
static struct mem_rec *
rec_alloc(size_t key_len, size_t val_len)
{
	struct mem_rec *r = malloc(MEM_REC_HDR + key_len + val_len);

	/* Only an allocator that breaks the 16-byte alignment or a 57-bit address space
	 * could fail this; report it as lack of (usable) memory rather than corrupt slots. */
	if (r != NULL && ((uintptr_t)r & ~SLOT_PTR_MASK) != 0) {
		free(r);
		return NULL;
	}
	return r;
}

/* Exact probe distance of the entry in slot i. */
static uint64_t
mem_slot_dist(const struct mem_store *ms, uint64_t s, uint64_t i)
{
	const struct mem_rec *r;

	if ((s & SLOT_DIST_MASK) < SLOT_DIST_SAT)
		return s & SLOT_DIST_MASK;
	r = slot_rec(s);
	return (i - (km_key_hash(r->data, r->key_len) & ms->mask)) & ms->mask;
}

/* Longest key compared inline; longer ones go through memcmp(). */
#define MEM_KEY_SHORT 16

static inline uint64_t
load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint32_t
load32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* Equality of two keys of len 1..MEM_KEY_SHORT bytes, with two overlapping loads of
 * each: a memcmp() call took 20 instructions per 16-byte key, half the probe's. */
static inline int
key_eq_short(const uint8_t *a, const uint8_t *b, size_t len)
{
	if (len >= 8)
		return ((load64(a) ^ load64(b)) | (load64(a + len - 8) ^ load64(b + len - 8))) == 0;
	if (len >= 4)
		return ((load32(a) ^ load32(b)) | (load32(a + len - 4) ^ load32(b + len - 4))) == 0;
	return a[0] == b[0] && a[len / 2] == b[len / 2] && a[len - 1] == b[len - 1];
}

/* The probe loop, specialised by the constant short_key so that the loop for short keys
 * calls nothing. */
static inline __attribute__((always_inline)) uint64_t
mem_probe(const struct mem_store *ms, const struct km_key *k, uint64_t tag, int short_key)
{
	uint64_t i = k->hash & ms->mask;
	const struct mem_rec *r;
	uint64_t s;

	for (;;) {
		s = ms->slots[i];
		if (s == 0)
			return i;
		if ((s & SLOT_TAG_MASK) == tag) {
			r = slot_rec(s);
			if (r->key_len == k->len &&
				(short_key ? key_eq_short(r->data, k->data, k->len)
					   : memcmp(r->data, k->data, k->len) == 0))
				return i;
		}
		i = (i + 1) & ms->mask;
	}
}

static __attribute__((noinline)) uint64_t
mem_probe_long(const struct mem_store *ms, const struct km_key *k, uint64_t tag)
{
	return mem_probe(ms, k, tag, 0);
}

/* Slot holding the key, or the empty slot ending its probe sequence. The table always
 * has an empty slot (load <= 7/8), so the loop ends. */
static inline uint64_t
mem_lookup(const struct mem_store *ms, const struct km_key *k, uint64_t tag)
{
	if (k->len <= MEM_KEY_SHORT)
		return mem_probe(ms, k, tag, 1);
	return mem_probe_long(ms, k, tag);
}

/* Empty slot i, then move back every following entry of the cluster that may live in the
 * hole (its home is not between the hole and itself), so no probe sequence is broken. */
static void
mem_slot_remove(struct mem_store *ms, uint64_t hole)
{
	uint64_t j = hole, s, dist, gap;

	for (;;) {
		j = (j + 1) & ms->mask;
		s = ms->slots[j];
		if (s == 0)
			break;
		dist = mem_slot_dist(ms, s, j);
		gap = (j - hole) & ms->mask;
		if (dist >= gap) {
			ms->slots[hole] = slot_make(s & SLOT_TAG_MASK, slot_rec(s), dist - gap);
			hole = j;
		}
	}
	ms->slots[hole] = 0;
}

static int
mem_grow(struct mem_store *ms)
{
	uint64_t nb = (ms->mask + 1) * 2, mask = nb - 1;
	uint64_t *slots, i, j, h, s;
	struct mem_rec *r;

	slots = calloc(nb, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	/* Tags are partial: the new home needs the full hash, recomputed from the key. Each
	 * record is a cache miss: prefetching a few slots ahead overlaps them. */
	for (i = 0; i <= ms->mask; i++) {
		if (i + MEM_GROW_PREFETCH <= ms->mask)
			__builtin_prefetch(slot_rec(ms->slots[i + MEM_GROW_PREFETCH]));
		s = ms->slots[i];
		if (s == 0)
			continue;
		r = slot_rec(s);
		h = km_key_hash(r->data, r->key_len);
		j = h & mask;
		while (slots[j] != 0)
			j = (j + 1) & mask;
		slots[j] = slot_make(mem_tag(h), r, (j - h) & mask);
	}
	free(ms->slots);
	ms->slots = slots;
	ms->mask = mask;
	ms->grow_at = nb - nb / 8;
	return 0;
}

static int
mem_create(const struct km_store_params *p, struct km_store **out)
{
	struct mem_store *ms;
	uint64_t nb = MEM_SLOTS_MIN;

	if (p == NULL || out == NULL || p->value_max > UINT16_MAX || p->mode == KM_STORE_QUARANTINE)
		return -EINVAL;
	if (p->initial_keys == 0)
		nb = MEM_SLOTS_DEFAULT;
	while (nb - nb / 8 < p->initial_keys)
		nb *= 2;
	ms = calloc(1, sizeof(*ms));
	if (ms == NULL)
		return -ENOMEM;
	/* socket_id is not used: large tables come zeroed from mmap and records from the
	 * writing thread's arena, so first touch by the owner worker places them on its
	 * socket. */
	ms->slots = calloc(nb, sizeof(*ms->slots));
	if (ms->slots == NULL) {
		free(ms);
		return -ENOMEM;
	}
	ms->base.ops = &mem_ops;
	ms->mask = nb - 1;
	ms->grow_at = nb - nb / 8;
	ms->version = p->version_base;
	ms->value_max = p->value_max;
	*out = &ms->base;
	return 0;
}

static void
mem_destroy(struct km_store *s)
{
	struct mem_store *ms = (struct mem_store *)s;
	uint64_t i;

	if (ms == NULL)
		return;
	for (i = 0; i <= ms->mask; i++)
		free(slot_rec(ms->slots[i]));
	free(ms->slots);
	free(ms);
}

/* Free the records of `budget` slots (from the last one down), then everything. */
static int
mem_destroy_step(struct km_store *s, uint32_t budget)
{
	struct mem_store *ms = (struct mem_store *)s;

	while (budget-- > 0 && ms->nb_keys > 0) {
		if (ms->slots[ms->mask] != 0) {
			free(slot_rec(ms->slots[ms->mask]));
			ms->slots[ms->mask] = 0;
			ms->nb_keys--;
		}
		if (ms->mask == 0)
			break;
		ms->mask--; /* the table is never probed again: only its size shrinks */
	}
	if (ms->nb_keys > 0 && ms->mask > 0)
		return 1;
	mem_destroy(s);
	return 0;
}

/* A read, specialised by the constant short_key as mem_probe() is. */
static inline __attribute__((always_inline)) int
mem_get_probe(struct mem_store *ms, const struct km_key *k, struct km_value_ref *out, int short_key)
{
	const struct mem_rec *r;
	uint64_t slot;

	slot = ms->slots[mem_probe(ms, k, mem_tag(k->hash), short_key)];
	if (slot == 0)
		return -ENOENT;
	r = slot_rec(slot);
	out->data = r->data + r->key_len;
	out->len = r->val_len;
	out->version = r->version;
	return 0;
}

static __attribute__((noinline)) int
mem_get_long(struct mem_store *ms, const struct km_key *k, struct km_value_ref *out)
{
	return mem_get_probe(ms, k, out, 0);
}

static int
mem_get(struct km_store *s, const struct km_key *k, struct km_value_ref *out)
{
	struct mem_store *ms = (struct mem_store *)s;

	if (!mem_key_ok(k) || out == NULL)
		return -EINVAL;
	/* Short keys (the hot case) take a path without calls, which spills fewer registers. */
	if (k->len > MEM_KEY_SHORT)
		return mem_get_long(ms, k, out);
	return mem_get_probe(ms, k, out, 1);
}

/*
 * Staged prefetch (km_store.h). INDEX: the line of the key's home slot. ENTRY: the probe
 * sequence from there (now cached) up to the first slot with the key's tag, whose record
 * is prefetched: header and key in its first line, the rest of a small value in the next
 * (a 16 + 64 B entry spans two or three lines). A tag match of another key costs a wasted
 * prefetch, as rare as a tag collision.
 */
static void
mem_prefetch(struct km_store *s, const struct km_key *k, unsigned int step)
{
	const struct mem_store *ms = (const struct mem_store *)s;
	uint64_t i = k->hash & ms->mask, tag, slot, n;
	const uint8_t *r;

	if (step == KM_STORE_PREFETCH_INDEX) {
		__builtin_prefetch(&ms->slots[i]);
		return;
	}
	tag = mem_tag(k->hash);
	for (n = 0; n < MEM_PREFETCH_PROBE; n++) {
		slot = ms->slots[i];
		if (slot == 0)
			return;
		if ((slot & SLOT_TAG_MASK) == tag) {
			r = (const uint8_t *)slot_rec(slot);
			__builtin_prefetch(r);
			__builtin_prefetch(r + 64);
			return;
		}
		i = (i + 1) & ms->mask;
	}
}

/* New entry in the empty slot i ending k's probe sequence, with the given version. */
static int
mem_insert(struct mem_store *ms, const struct km_key *k, uint64_t tag, uint64_t i, const void *val,
	uint32_t len, uint64_t version)
{
	struct mem_rec *r;
	int rc;

	if (ms->nb_keys + 1 > ms->grow_at) {
		rc = mem_grow(ms);
		if (rc != 0)
			return rc;
		i = mem_lookup(ms, k, tag);
	}
	r = rec_alloc(k->len, len);
	if (r == NULL)
		return -ENOMEM;
	r->version = version;
	r->val_len = len;
	r->key_len = k->len;
	memcpy(r->data, k->data, k->len);
	if (len != 0)
		memcpy(r->data + k->len, val, len);
	ms->slots[i] = slot_make(tag, r, (i - k->hash) & ms->mask);
	ms->nb_keys++;
	ms->value_bytes += k->len + len;
	ms->overhead_bytes += rec_cost(r) - (k->len + len);
	return 0;
}

/* New value and version for the entry r in slot i. */
static int
mem_update(struct mem_store *ms, uint64_t i, struct mem_rec *r, const void *val, uint32_t len,
	uint64_t version)
{
	struct mem_rec *nr;

	if (r->val_len != len) {
		/* Not realloc(): if the moved block failed rec_alloc()'s check, the old record
		 * would already be gone. */
		nr = rec_alloc(r->key_len, len);
		if (nr == NULL)
			return -ENOMEM;
		memcpy(nr, r, MEM_REC_HDR + r->key_len);
		ms->value_bytes += (uint64_t)len - r->val_len;
		ms->overhead_bytes += (rec_cost(nr) - (r->key_len + len)) -
				      (rec_cost(r) - (r->key_len + r->val_len));
		free(r);
		r = nr;
		ms->slots[i] = (ms->slots[i] & ~SLOT_PTR_MASK) | (uintptr_t)r;
		r->val_len = len;
	}
	if (len != 0)
		memcpy(r->data + r->key_len, val, len);
	r->version = version;
	return 0;
}

static int
mem_put(struct km_store *s, const struct km_key *k, const void *val, uint32_t len, uint64_t expect,
	int create_only, uint64_t *version)
{
	struct mem_store *ms = (struct mem_store *)s;
	uint64_t tag, i, slot, unused;
	struct mem_rec *r;
	int rc;

	if (version == NULL)
		version = &unused;
	*version = 0;
	if (!mem_key_ok(k) || (val == NULL && len != 0))
		return -EINVAL;
	if (len > ms->value_max)
		return -E2BIG;
	tag = mem_tag(k->hash);
	i = mem_lookup(ms, k, tag);
	slot = ms->slots[i];
	if (slot == 0) {
		/* No entry can have the expected version (versions are never 0). */
		if (expect != KM_VERSION_ANY)
			return -ESTALE;
		rc = mem_insert(ms, k, tag, i, val, len, ms->version + 1);
	} else {
		r = slot_rec(slot);
		if (create_only) {
			*version = r->version;
			return -EEXIST;
		}
		if (expect != KM_VERSION_ANY && expect != r->version) {
			*version = r->version;
			return -ESTALE;
		}
		rc = mem_update(ms, i, r, val, len, ms->version + 1);
	}
	/* A failed write consumes no version. */
	if (rc == 0)
		*version = ++ms->version;
	return rc;
}

/*
 * Insert or replace with the caller's version, whatever the entry had (the source store
 * ordered its writes already). The counter only moves up, so that versions issued later
 * are above every loaded one, whatever order the entries arrive in.
 */
static int
mem_load(
	struct km_store *s, const struct km_key *k, const void *val, uint32_t len, uint64_t version)
{
	struct mem_store *ms = (struct mem_store *)s;
	uint64_t tag, i, slot;
	int rc;

	if (!mem_key_ok(k) || (val == NULL && len != 0) || version == 0)
		return -EINVAL;
	if (len > ms->value_max)
		return -E2BIG;
	tag = mem_tag(k->hash);
	i = mem_lookup(ms, k, tag);
	slot = ms->slots[i];
	if (slot == 0)
		rc = mem_insert(ms, k, tag, i, val, len, version);
	else
		rc = mem_update(ms, i, slot_rec(slot), val, len, version);
	if (rc == 0 && version > ms->version)
		ms->version = version;
	return rc;
}

static int
mem_del(struct km_store *s, const struct km_key *k, uint64_t expect, uint64_t *version)
{
	struct mem_store *ms = (struct mem_store *)s;
	uint64_t i, slot, unused;
	struct mem_rec *r;

	if (version == NULL)
		version = &unused;
	*version = 0;
	if (!mem_key_ok(k))
		return -EINVAL;
	i = mem_lookup(ms, k, mem_tag(k->hash));
	slot = ms->slots[i];
	if (slot == 0)
		return -ENOENT;
	r = slot_rec(slot);
	*version = r->version;
	if (expect != KM_VERSION_ANY && expect != r->version)
		return -ESTALE;
	/* A delete is a write: it consumes a version so that the instance's write order
	 * stays totally ordered by version. */
	ms->version++;
	ms->nb_keys--;
	ms->value_bytes -= r->key_len + r->val_len;
	ms->overhead_bytes -= rec_cost(r) - (r->key_len + r->val_len);
	free(r);
	mem_slot_remove(ms, i);
	return 0;
}

/* Report one record to a walk's fn. */
static inline int
mem_visit(const struct mem_rec *r,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	/* Callers may re-route keys by hash (shard split): give them the real one. */
	struct km_key k = {
		.data = r->data, .len = r->key_len, .hash = km_key_hash(r->data, r->key_len)};
	struct km_value_ref v = {
		.data = r->data + r->key_len, .len = r->val_len, .version = r->version};

	return fn(arg, &k, &v);
}

static int
mem_walk(struct km_store *s,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	struct mem_store *ms = (struct mem_store *)s;
	uint64_t i;
	int rc;

	if (fn == NULL)
		return -EINVAL;
	for (i = 0; i <= ms->mask; i++) {
		if (ms->slots[i] == 0)
			continue;
		rc = mem_visit(slot_rec(ms->slots[i]), fn, arg);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/*
 * Slots in the order of the table: pos->pos is the next slot, pos->end the table's size
 * when the walk (re)started. A call ends just after an empty slot: its window is cut back
 * to the last empty slot in it, or stretched to the next one when it holds none (a
 * cluster longer than the budget). A deletion moves entries back only within their
 * cluster, toward their home slot, and never across an empty slot: so an entry ahead of
 * the walk when a call ends stays ahead of it until a call visits it. Growth places every
 * entry anew: the walk then starts over (entries may be visited twice, none is missed).
 */
static int
mem_walk_step(struct km_store *s, struct km_walk_pos *pos, uint32_t budget,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	struct mem_store *ms = (struct mem_store *)s;
	uint64_t nb = ms->mask + 1, i, end;
	int rc;

	if (fn == NULL || pos == NULL)
		return -EINVAL;
	if (pos->end != nb) {
		/* The first call, or the table grew since the last one. */
		pos->pos = 0;
		pos->end = nb;
	}
	if (pos->pos >= nb)
		return 0;
	end = pos->pos + (budget == 0 ? 1 : budget);
	if (end >= nb) {
		end = nb;
	} else {
		i = end;
		while (i > pos->pos && ms->slots[i - 1] != 0)
			i--;
		if (i > pos->pos) {
			end = i;
		} else {
			while (end < nb && ms->slots[end] != 0)
				end++;
			if (end < nb)
				end++;
		}
	}
	for (i = pos->pos; i < end; i++) {
		if (ms->slots[i] == 0)
			continue;
		rc = mem_visit(slot_rec(ms->slots[i]), fn, arg);
		if (rc != 0) {
			pos->pos = i + 1;
			return rc;
		}
	}
	pos->pos = end;
	return end < nb;
}

static void
mem_version_floor(struct km_store *s, uint64_t v)
{
	struct mem_store *ms = (struct mem_store *)s;

	if (v > ms->version)
		ms->version = v;
}

static void
mem_stats(const struct km_store *s, struct km_store_stats *st)
{
	const struct mem_store *ms = (const struct mem_store *)s;

	memset(st, 0, sizeof(*st)); /* the persistent drivers' figures stay 0 */
	st->keys = ms->nb_keys;
	st->value_bytes = ms->value_bytes;
	st->index_bytes = (ms->mask + 1) * sizeof(*ms->slots);
	st->entry_overhead_bytes = ms->overhead_bytes;
	/* Deletes consume versions too, and an instance that wrote nothing reports its
	 * version_base: a store created above this value never reissues a version seen here. */
	st->version_last = ms->version;
}

static uint64_t
mem_dram_bytes(const struct km_store *s)
{
	const struct mem_store *ms = (const struct mem_store *)s;

	return (ms->mask + 1) * sizeof(*ms->slots) + ms->value_bytes + ms->overhead_bytes;
}

static const struct km_store_ops mem_ops = {
	.dram_bytes = mem_dram_bytes,
	.name = "mem",
	.create = mem_create,
	.destroy = mem_destroy,
	.get = mem_get,
	.put = mem_put,
	.del = mem_del,
	.walk = mem_walk,
	.walk_step = mem_walk_step,
	.version_floor = mem_version_floor,
	.destroy_step = mem_destroy_step,
	.stats = mem_stats,
	.prefetch = mem_prefetch,
	.load = mem_load,
};

KM_STORE_REGISTER(mem_ops)
