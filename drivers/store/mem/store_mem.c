/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * "mem" store driver: volatile, values in DRAM, sized for ~100 M keys per process, so
 * every byte per key counts (16 + 64 B entries: 88 B of record and about 10 B of index).
 *
 * Index: one open-addressing table of 8-byte slots, linear probing:
 *   bits 63..49  tag, 15 bits derived from the key hash: rejects almost every
 *                non-matching slot without touching its record (a cache miss).
 *   bits 48..4   record address / 8: records are 8-byte aligned and below 2^48 (any
 *                user address with 48-bit virtual addresses: x86-64, and arm64 whose
 *                mmap area and heap sit above 2^47).
 *   bits 3..0    the entry's probe distance (slot - home slot), saturated at 15, so
 *                deletion knows where an entry belongs without re-hashing its key in the
 *                common case. 0 in bits 47..0 = empty slot.
 * The home slot is a range reduction, (km_scan_order(hash) * slots) >> 64 (the hash
 * rotated by 32 bits; SCAN visits entries in that order), so the table needs
 * no power-of-two size: it grows by 8/7 to 5/4 (sizes m * 2^e, m = 8, 10, 12, 14) when
 * the load would pass 7/8, so its load stays between 0.7 and 7/8 (9.1 to 11.4 B per key)
 * rather than between 7/16 and 7/8 with doubling; growth rehashes 4 to 7 times as often
 * as doubling did, which slows inserts of a growing store. The rotation puts the hash's
 * low half first: the shard map routes by its top bits, which within one shard's store
 * are (nearly) constant. Deletion shifts the following entries of the cluster back (no
 * tombstones), so lookups stop at the first empty slot however many deletes happened.
 * Records keep no hash (8 bytes per key saved), so growth recomputes km_key_hash() from
 * each record's key. This requires k->hash == km_key_hash(k->data, k->len), which the
 * header's contract for struct km_key already states.
 *
 * Record: 8 bytes of header, the key, then the value, in a block of the instance's slabs
 * (mem_slab.c: size classes of 8 bytes, free lists, compaction), or in a malloc block of
 * its own when it is larger than a slab takes or the store holds fewer than
 * MEM_SMALL_KEYS keys (a small store holds no slab, and its deletes give memory back at
 * once, as [store] memory bounds expect). The header is one little-endian word:
 *   bits 7..0    key length (1..250)
 *   bits 23..8   value length (0..65535)
 *   bit 24       the record is a block of its own
 *   bits 63..25  version - vbase, 1..2^39-1; 0: the version does not fit, and the full
 *                64-bit version follows the value (8 more bytes; the key stays at 8, so
 *                a lookup finds it without decoding the header first).
 * vbase is chosen when the instance holds no record, 2^38 below the version being
 * written: versions issued afterwards fit for 2^38 (2.7e11) writes, and entries loaded
 * from another store fit if they are within 2^38 of the first one (a split's or move's
 * entries all come from one shard lineage; only the far side of a merge of shards opened
 * at very different times pays the wide header). Every version is kept exactly either
 * way: only the record's size depends on it.
 *
 * Concurrency: single owner thread per instance (see km_store.h); nothing here is shared.
 */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <km_store.h>
#include <km_util.h>

#include "mem_slab.h"

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

/* Slots the ENTRY prefetch step looks at for the key's tag. Linear probing puts 3.5 % of
 * the keys 8 or more slots from their home slot at a load of 0.7 and 10 % at 7/8, under
 * 0.02 % and 0.7 % 64 or more (simulated): with 8, their records were not prefetched and
 * their get had no hint (keymap-proc-bench -k 100000 -g 1 at a load of 0.76: 197 -> 188
 * TSC cycles per GET with 64). A longer probe sequence is left to the lookup itself. */
#define MEM_PREFETCH_PROBE 64

/* The ENTRY step prefetches the lines of a record's first MEM_PREFETCH_SPAN bytes at most
 * (three lines): the rest of a larger value is read sequentially after them. */
#define MEM_PREFETCH_SPAN 128

/* The ENTRY prefetch's hint (mem_get_hint()): bits 31..0 the slot + 1 where it found the
 * key's tag (0: none); or bit 32: it came to an empty slot first, so the key was absent,
 * and bits 63..33 the count of inserted keys then (the low 31 bits of ms->inserts). */
#define HINT_SLOT_MASK     UINT64_C(0xffffffff)
#define HINT_ABSENT        (UINT64_C(1) << 32)
#define HINT_INSERTS_SHIFT 33
#define HINT_INSERTS_MASK  UINT64_C(0x7fffffff)

#define SLOT_TAG_SHIFT 49
#define SLOT_TAG_MASK  (UINT64_C(0x7fff) << SLOT_TAG_SHIFT)
#define SLOT_PTR_MASK  UINT64_C(0x0001fffffffffff0)
#define SLOT_DIST_MASK UINT64_C(0xf)
#define SLOT_DIST_SAT  15 /* distance >= 15: recompute it from the key */

/* Record header word. */
#define REC_HDR        8
#define REC_OWN        (UINT64_C(1) << 24) /* the record is a block of its own */
#define REC_VOFF_SHIFT 25
#define REC_VOFF_LIMIT (UINT64_C(1) << 39) /* offsets 1..2^39-1 fit */
#define REC_VBASE_BACK (UINT64_C(1) << 38) /* vbase: this far below the first version */

/* A store of fewer keys puts its records in blocks of their own (mem_slab.c). */
#define MEM_SMALL_KEYS 64

struct mem_store {
	struct km_store base; /* first: the km_store pointer is cast back to this */
	uint64_t *slots;
	uint64_t nb;      /* number of slots */
	uint64_t grow_at; /* keys allowed before growing: 7/8 of the slots */
	uint64_t nb_keys;
	uint64_t version; /* last version issued or loaded; every successful write takes the next */
	uint64_t vbase;   /* versions in record headers are offsets from this */
	uint64_t value_bytes; /* key + value bytes of all records */
	uint32_t pf_last;     /* offset of an average record's last byte, < MEM_PREFETCH_SPAN */
	uint32_t inserts;     /* keys inserted, ever (wraps): what makes an absent key present */
	struct mem_slabs mem; /* every record's memory */
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

/* Home slot of a hash in a table of nb slots. */
static inline uint64_t
mem_home(uint64_t hash, uint64_t nb)
{
	return (uint64_t)(((unsigned __int128)km_scan_order(hash) * nb) >> 64);
}

static inline uint64_t
slot_next(uint64_t i, uint64_t nb)
{
	return i + 1 == nb ? 0 : i + 1;
}

/* Slots from `from` forward to `to`, around the table's end. */
static inline uint64_t
slot_gap(uint64_t to, uint64_t from, uint64_t nb)
{
	return to >= from ? to - from : to + nb - from;
}

/* The table size after nb: sizes are m * 2^e with m one of 8, 10, 12, 14 (steps of 5/4
 * to 8/7), so that a table presized for a number of keys (mem_create()) has the size one
 * grown to it from any smaller one would have. */
static inline uint64_t
mem_next_size(uint64_t nb)
{
	int e = 63 - __builtin_clzll(nb) - 3;

	return ((nb >> e) + 2) << e;
}

static inline uint64_t
mem_grow_at(uint64_t nb)
{
	return nb - nb / 8;
}

static inline uint8_t *
slot_rec(uint64_t s)
{
	return (uint8_t *)(uintptr_t)((s & SLOT_PTR_MASK) >> 1);
}

static inline uint64_t
slot_make(uint64_t tag, const uint8_t *r, uint64_t dist)
{
	return tag | ((uint64_t)(uintptr_t)r << 1) | (dist < SLOT_DIST_SAT ? dist : SLOT_DIST_SAT);
}

static inline int
mem_key_ok(const struct km_key *k)
{
	return k != NULL && k->data != NULL && k->len >= 1 && k->len <= MEM_KEY_MAX;
}

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

static inline uint64_t
rec_word(const uint8_t *r)
{
	return load64(r); /* aligned: records are */
}

static inline uint32_t
rec_klen(uint64_t w)
{
	return (uint32_t)(w & 0xff);
}

static inline uint32_t
rec_vlen(uint64_t w)
{
	return (uint32_t)((w >> 8) & 0xffff);
}

/* The key follows the header whatever its layout: finding it needs no header field. */
static inline const uint8_t *
rec_key(const uint8_t *r, uint64_t w)
{
	(void)w;
	return r + REC_HDR;
}

static inline uint64_t
rec_version(const struct mem_store *ms, const uint8_t *r, uint64_t w)
{
	uint64_t off = w >> REC_VOFF_SHIFT;

	return off != 0 ? ms->vbase + off : load64(r + REC_HDR + rec_klen(w) + rec_vlen(w));
}

/* The header offset of version v, or 0: it needs the full one. */
static inline uint64_t
rec_voff(const struct mem_store *ms, uint64_t v)
{
	return v > ms->vbase && v - ms->vbase < REC_VOFF_LIMIT ? v - ms->vbase : 0;
}

static inline size_t
rec_size_of(uint32_t klen, uint32_t vlen, uint64_t voff)
{
	return REC_HDR + klen + vlen + (voff != 0 ? 0 : sizeof(uint64_t));
}

static inline size_t
rec_size(uint64_t w)
{
	return rec_size_of(rec_klen(w), rec_vlen(w), w >> REC_VOFF_SHIFT);
}

/* Write the header of a record: lengths, where it lives (own: REC_OWN or 0), version. */
static inline void
rec_set_hdr(uint8_t *r, uint32_t klen, uint32_t vlen, uint64_t own, uint64_t voff, uint64_t version)
{
	uint64_t w = klen | ((uint64_t)vlen << 8) | own | (voff << REC_VOFF_SHIFT);

	memcpy(r, &w, sizeof(w));
	if (voff == 0)
		memcpy(r + REC_HDR + klen + vlen, &version, sizeof(version));
}

/* Whether a record of size bytes gets a block of its own (REC_OWN) or a slab's (0). */
static inline uint64_t
rec_own(const struct mem_store *ms, size_t size)
{
	return mem_slab_size(size) == 0 || ms->nb_keys < MEM_SMALL_KEYS ? REC_OWN : 0;
}

/* Only an allocator that breaks the 8-byte alignment or a 57-bit address space could fail
 * this; lack of (usable) memory is reported then rather than corrupt slots. */
static inline int
rec_addr_ok(const void *r)
{
	return ((uintptr_t)r & ~(SLOT_PTR_MASK >> 1)) == 0;
}

/* A record block the slot format can point to, of its own or from a slab of m. */
static uint8_t *
rec_alloc(struct mem_slabs *m, size_t size, uint64_t own)
{
	uint8_t *r = own ? mem_own_alloc(m, size) : mem_slab_alloc(m, size);

	if (r != NULL && !rec_addr_ok(r)) {
		if (own)
			mem_own_free(m, r);
		else
			mem_slab_free(m, r, size);
		return NULL;
	}
	return r;
}

static void
rec_free(struct mem_store *ms, uint8_t *r, uint64_t w)
{
	if (w & REC_OWN)
		mem_own_free(&ms->mem, r);
	else
		mem_slab_free(&ms->mem, r, rec_size(w));
}

/* Exact probe distance of the entry in slot i. */
static uint64_t
mem_slot_dist(const struct mem_store *ms, uint64_t s, uint64_t i)
{
	const uint8_t *r;
	uint64_t w;

	if ((s & SLOT_DIST_MASK) < SLOT_DIST_SAT)
		return s & SLOT_DIST_MASK;
	r = slot_rec(s);
	w = rec_word(r);
	return slot_gap(i, mem_home(km_key_hash(rec_key(r, w), rec_klen(w)), ms->nb), ms->nb);
}

/* Longest key compared inline; longer ones go through memcmp(). */
#define MEM_KEY_SHORT 16

/* Whether the record r holds key k, specialised by the constant short_key. */
static inline __attribute__((always_inline)) int
mem_rec_is(const uint8_t *r, const struct km_key *k, int short_key)
{
	uint64_t w = rec_word(r);

	return rec_klen(w) == k->len && (short_key ? key_eq_short(rec_key(r, w), k->data, k->len)
						   : memcmp(rec_key(r, w), k->data, k->len) == 0);
}

/* The probe loop, specialised by the constant short_key so that the loop for short keys
 * calls nothing. */
static inline __attribute__((always_inline)) uint64_t
mem_probe(const struct mem_store *ms, const struct km_key *k, uint64_t tag, int short_key)
{
	uint64_t i = mem_home(k->hash, ms->nb), s;

	for (;;) {
		s = ms->slots[i];
		if (s == 0)
			return i;
		if ((s & SLOT_TAG_MASK) == tag && mem_rec_is(slot_rec(s), k, short_key))
			return i;
		i = slot_next(i, ms->nb);
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
		j = slot_next(j, ms->nb);
		s = ms->slots[j];
		if (s == 0)
			break;
		dist = mem_slot_dist(ms, s, j);
		gap = slot_gap(j, hole, ms->nb);
		if (dist >= gap) {
			ms->slots[hole] = slot_make(s & SLOT_TAG_MASK, slot_rec(s), dist - gap);
			hole = j;
		}
	}
	ms->slots[hole] = 0;
}

/* Place an entry (hash h, record r) in a table being filled. */
static inline void
mem_place(uint64_t *slots, uint64_t nb, uint64_t h, const uint8_t *r)
{
	uint64_t home = mem_home(h, nb), j = home;

	while (slots[j] != 0)
		j = slot_next(j, nb);
	slots[j] = slot_make(mem_tag(h), r, slot_gap(j, home, nb));
}

/* Entries whose new home slot growth prefetches before placing them. */
#define MEM_GROW_RING 16

static int
mem_grow(struct mem_store *ms)
{
	uint64_t nb = mem_next_size(ms->nb);
	uint64_t *slots, i, h, s, w, ring_h[MEM_GROW_RING], n = 0;
	const uint8_t *r, *ring_r[MEM_GROW_RING];

	slots = calloc(nb, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	/* Tags are partial: the new home needs the full hash, recomputed from the key. Each
	 * record is a cache miss, and so is its new slot: the records are prefetched a few
	 * slots ahead, and an entry waits in a ring with its new slot prefetched until
	 * MEM_GROW_RING others were hashed (entries may go in in any order). */
	for (i = 0; i < ms->nb; i++) {
		if (i + MEM_GROW_PREFETCH < ms->nb)
			__builtin_prefetch(slot_rec(ms->slots[i + MEM_GROW_PREFETCH]));
		s = ms->slots[i];
		if (s == 0)
			continue;
		r = slot_rec(s);
		w = rec_word(r);
		h = km_key_hash(rec_key(r, w), rec_klen(w));
		__builtin_prefetch(&slots[mem_home(h, nb)], 1);
		if (n >= MEM_GROW_RING)
			mem_place(slots, nb, ring_h[n % MEM_GROW_RING], ring_r[n % MEM_GROW_RING]);
		ring_h[n % MEM_GROW_RING] = h;
		ring_r[n % MEM_GROW_RING] = r;
		n++;
	}
	for (i = n > MEM_GROW_RING ? n - MEM_GROW_RING : 0; i < n; i++)
		mem_place(slots, nb, ring_h[i % MEM_GROW_RING], ring_r[i % MEM_GROW_RING]);
	free(ms->slots);
	ms->slots = slots;
	ms->nb = nb;
	ms->grow_at = mem_grow_at(nb);
	return 0;
}

/*
 * Move every slab record into fresh slabs, packed, and free the old ones (mem_slab.c:
 * called when frees left too much slab space unused). Records of their own (large ones,
 * and those written while the store was small) stay where they are.
 * On lack of memory half-way, the old and new slabs are both kept: nothing is lost, the
 * space is reclaimed by the next compaction or the store's destruction.
 */
static void
mem_compact(struct mem_store *ms)
{
	struct mem_slabs dst = {.no_huge = ms->mem.no_huge, .hugetlb = ms->mem.hugetlb};
	uint64_t i, s, w;
	uint8_t *r, *nr;
	size_t size;

	for (i = 0; i < ms->nb; i++) {
		if (i + MEM_GROW_PREFETCH < ms->nb)
			__builtin_prefetch(slot_rec(ms->slots[i + MEM_GROW_PREFETCH]));
		s = ms->slots[i];
		if (s == 0)
			continue;
		r = slot_rec(s);
		w = rec_word(r);
		size = rec_size(w);
		/* Only slab records move: the classes of dst are then all classes of the
		 * instance, which a failure half-way relies on (records of their own are
		 * few: written while the store was small, or large). */
		if ((w & REC_OWN) != 0 || mem_slab_size(size) == 0)
			continue;
		nr = rec_alloc(&dst, size, 0);
		if (nr == NULL) {
			mem_slabs_absorb(&ms->mem, &dst);
			/* Not again at the next free: only once as much is free again. */
			mem_slabs_compacted(&ms->mem);
			return;
		}
		memcpy(nr, r, size);
		rec_free(ms, r, w);
		ms->slots[i] = (s & ~SLOT_PTR_MASK) | ((uint64_t)(uintptr_t)nr << 1);
	}
	mem_slabs_hand_own(&dst, &ms->mem);
	ms->mem = dst;
	mem_slabs_compacted(&ms->mem);
}

/* pf_last from the records held (at least one). A hint, never read for correctness: kept
 * roughly current by every 64th insert and by values that move to a block of another size
 * (a value rewritten in its block changes value_bytes, not this). */
static inline void
mem_pf_update(struct mem_store *ms)
{
	uint64_t avg = REC_HDR + ms->value_bytes / ms->nb_keys;

	ms->pf_last = (uint32_t)(avg < MEM_PREFETCH_SPAN ? avg : MEM_PREFETCH_SPAN) - 1;
}

/* A record was freed: the instance's memory may need compacting, or releasing. */
static inline void
mem_freed(struct mem_store *ms)
{
	if (ms->nb_keys == 0)
		mem_slabs_release(&ms->mem);
	else if (mem_slabs_fragmented(&ms->mem))
		mem_compact(ms);
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
	while (mem_grow_at(nb) < p->initial_keys)
		nb = mem_next_size(nb);
	ms = calloc(1, sizeof(*ms));
	if (ms == NULL)
		return -ENOMEM;
	/* socket_id is not used: large tables and slabs come zeroed from mmap, so first
	 * touch by the owner worker places them on its socket. */
	ms->slots = calloc(nb, sizeof(*ms->slots));
	if (ms->slots == NULL) {
		free(ms);
		return -ENOMEM;
	}
	ms->base.ops = &mem_ops;
	ms->nb = nb;
	ms->grow_at = mem_grow_at(nb);
	ms->version = p->version_base;
	ms->vbase = p->version_base;
	ms->value_max = p->value_max;
	ms->mem.no_huge = p->hugepages == KM_HUGEPAGES_OFF;
	ms->mem.hugetlb = p->hugepages == KM_HUGEPAGES_HUGETLB;
	*out = &ms->base;
	return 0;
}

static void
mem_destroy(struct km_store *s)
{
	struct mem_store *ms = (struct mem_store *)s;

	if (ms == NULL)
		return;
	mem_slabs_release(&ms->mem);
	free(ms->slots);
	free(ms);
}

/* Free the slabs and large records about `budget` entries at a time, then everything. */
static int
mem_destroy_step(struct km_store *s, uint32_t budget)
{
	struct mem_store *ms = (struct mem_store *)s;

	if (mem_slabs_release_step(&ms->mem, budget) != 0)
		return 1;
	mem_destroy(s);
	return 0;
}

/* The value of record r. */
static inline void
mem_value_of(const struct mem_store *ms, const uint8_t *r, struct km_value_ref *out)
{
	uint64_t w = rec_word(r);

	out->data = rec_key(r, w) + rec_klen(w);
	out->len = rec_vlen(w);
	out->version = rec_version(ms, r, w);
}

/* A read, specialised by the constant short_key as mem_probe() is. */
static inline __attribute__((always_inline)) int
mem_get_probe(struct mem_store *ms, const struct km_key *k, struct km_value_ref *out, int short_key)
{
	uint64_t slot = ms->slots[mem_probe(ms, k, mem_tag(k->hash), short_key)];

	if (slot == 0)
		return -ENOENT;
	mem_value_of(ms, slot_rec(slot), out);
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
 * get() with what an ENTRY prefetch of k found (the HINT_* layout). A slot with k's tag
 * is used if it still holds k: keys are unique in the table, so the entry is k's whatever
 * happened since; otherwise (a write or growth since, another key's tag) the lookup from
 * k's home slot. An absent key is still absent if no key was inserted since: deletes,
 * growth and compaction never make one present. The probe from the home slot is what the
 * prefetch already did: its length varies from key to key (at a load of 0.76, 1.6 slots
 * from the home slot on average, 5 % of the keys 8 or more; an absent key's walk to the
 * first empty slot 8.9), and a loop that stops at a varying slot mispredicts its exit.
 * keymap-proc-bench -k 100000, 3 runs each: GET hits 188 -> 170 TSC cycles per GET; with
 * -m 1 (every GET a miss) 234-239 -> 200-201 for the absent hint.
 */
static int
mem_get_hint(struct km_store *s, const struct km_key *k, uint64_t hint, struct km_value_ref *out)
{
	struct mem_store *ms = (struct mem_store *)s;
	uint64_t slot, i = hint & HINT_SLOT_MASK;
	int is;

	if (!mem_key_ok(k) || out == NULL)
		return -EINVAL;
	if (hint & HINT_ABSENT) {
		if (hint >> HINT_INSERTS_SHIFT == (ms->inserts & HINT_INSERTS_MASK))
			return -ENOENT;
	} else if (i != 0 && i <= ms->nb) {
		slot = ms->slots[i - 1];
		if (slot != 0 && (slot & SLOT_TAG_MASK) == mem_tag(k->hash)) {
			is = k->len <= MEM_KEY_SHORT ? mem_rec_is(slot_rec(slot), k, 1)
						     : mem_rec_is(slot_rec(slot), k, 0);
			if (is) {
				mem_value_of(ms, slot_rec(slot), out);
				return 0;
			}
		}
	}
	return mem_get(s, k, out);
}

/*
 * Staged prefetch (km_store.h). INDEX: the line of the key's home slot. ENTRY: the probe
 * sequence from there (now cached) up to the first slot with the key's tag, whose record
 * is prefetched: the lines of its first pf_last + 1 bytes (the store's average record, up
 * to three lines), and whose slot is the hint for mem_get_hint() (or, when the probe came
 * to an empty slot first, that the key is absent). Records are 8-byte aligned, not
 * line-aligned: a 16 + 64 B entry (88 B) spans two lines or, a quarter of them, three.
 * keymap-proc-bench -k 100000 -g 1, 8 runs alternated: median 232.5 TSC cycles per GET with two
 * lines prefetched, 223 with these. A tag match of another key costs a wasted prefetch (and a hint
 * the get finds wrong), as rare as a tag collision.
 */
static uint64_t
mem_prefetch(struct km_store *s, const struct km_key *k, unsigned int step)
{
	const struct mem_store *ms = (const struct mem_store *)s;
	uint64_t i = mem_home(k->hash, ms->nb), tag, slot, n;
	const uint8_t *r;

	if (step == KM_STORE_PREFETCH_INDEX) {
		__builtin_prefetch(&ms->slots[i]);
		return 0;
	}
	tag = mem_tag(k->hash);
	for (n = 0; n < MEM_PREFETCH_PROBE; n++) {
		slot = ms->slots[i];
		if (slot == 0)
			return HINT_ABSENT | (ms->inserts & HINT_INSERTS_MASK)
						     << HINT_INSERTS_SHIFT;
		if ((slot & SLOT_TAG_MASK) == tag) {
			/* r's line, the last byte's (r + pf_last) and, past 64 bytes, the one
			 * between (r + 64). */
			r = slot_rec(slot);
			__builtin_prefetch(r);
			__builtin_prefetch(r + ms->pf_last);
			if (ms->pf_last > 64)
				__builtin_prefetch(r + 64);
			return i < HINT_SLOT_MASK ? i + 1 : 0;
		}
		i = slot_next(i, ms->nb);
	}
	return 0;
}

/* New entry in the empty slot i ending k's probe sequence, with the given version. */
static int
mem_insert(struct mem_store *ms, const struct km_key *k, uint64_t tag, uint64_t i, const void *val,
	uint32_t len, uint64_t version)
{
	uint64_t voff, own;
	uint8_t *r;
	size_t size;
	int rc;

	if (ms->nb_keys + 1 > ms->grow_at) {
		rc = mem_grow(ms);
		if (rc != 0)
			return rc;
		i = mem_lookup(ms, k, tag);
	}
	if (ms->nb_keys == 0) /* no record refers to vbase: place it for this version */
		ms->vbase = version > REC_VBASE_BACK ? version - REC_VBASE_BACK : 0;
	voff = rec_voff(ms, version);
	size = rec_size_of(k->len, len, voff);
	own = rec_own(ms, size);
	r = rec_alloc(&ms->mem, size, own);
	if (r == NULL) {
		if (ms->nb_keys == 0)
			mem_slabs_release(&ms->mem);
		return -ENOMEM;
	}
	rec_set_hdr(r, k->len, len, own, voff, version);
	memcpy((uint8_t *)rec_key(r, rec_word(r)), k->data, k->len);
	if (len != 0)
		memcpy((uint8_t *)rec_key(r, rec_word(r)) + k->len, val, len);
	ms->slots[i] = slot_make(tag, r, slot_gap(i, mem_home(k->hash, ms->nb), ms->nb));
	ms->nb_keys++;
	ms->inserts++;
	ms->value_bytes += k->len + len;
	if ((ms->nb_keys & 63) == 1)
		mem_pf_update(ms);
	return 0;
}

/* New value and version for the entry r in slot i. */
static int
mem_update(struct mem_store *ms, uint64_t i, uint8_t *r, const void *val, uint32_t len,
	uint64_t version)
{
	uint64_t w = rec_word(r), voff = rec_voff(ms, version), own;
	uint32_t klen = rec_klen(w), old_len = rec_vlen(w);
	size_t old_size = rec_size(w), size = rec_size_of(klen, len, voff);
	uint8_t *nr;

	if ((w & REC_OWN) ? size == old_size
			  : mem_slab_size(size) == mem_slab_size(old_size) &&
				    mem_slab_size(size) != 0) {
		/* Same block: the same size (own block) or class. The value first: a full
		 * version written after it may cover where the old value was. */
		if (len != 0)
			memmove(r + REC_HDR + klen, val, len);
		rec_set_hdr(r, klen, len, w & REC_OWN, voff, version);
		ms->value_bytes += (uint64_t)len - old_len;
		return 0;
	}
	own = rec_own(ms, size);
	nr = rec_alloc(&ms->mem, size, own);
	if (nr == NULL)
		return -ENOMEM;
	rec_set_hdr(nr, klen, len, own, voff, version);
	memcpy((uint8_t *)rec_key(nr, rec_word(nr)), rec_key(r, w), klen);
	if (len != 0)
		memcpy((uint8_t *)rec_key(nr, rec_word(nr)) + klen, val, len);
	ms->slots[i] = (ms->slots[i] & ~SLOT_PTR_MASK) | ((uint64_t)(uintptr_t)nr << 1);
	ms->value_bytes += (uint64_t)len - old_len;
	mem_pf_update(ms);
	rec_free(ms, r, w);
	mem_freed(ms);
	return 0;
}

static int
mem_put(struct km_store *s, const struct km_key *k, const void *val, uint32_t len, uint64_t expect,
	int create_only, uint64_t *version)
{
	struct mem_store *ms = (struct mem_store *)s;
	uint64_t tag, i, slot, unused, cur;
	uint8_t *r;
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
		cur = rec_version(ms, r, rec_word(r));
		if (create_only) {
			*version = cur;
			return -EEXIST;
		}
		if (expect != KM_VERSION_ANY && expect != cur) {
			*version = cur;
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
	uint64_t i, slot, unused, w;
	uint8_t *r;

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
	w = rec_word(r);
	*version = rec_version(ms, r, w);
	if (expect != KM_VERSION_ANY && expect != *version)
		return -ESTALE;
	/* A delete is a write: it consumes a version so that the instance's write order
	 * stays totally ordered by version. */
	ms->version++;
	ms->nb_keys--;
	ms->value_bytes -= rec_klen(w) + rec_vlen(w);
	mem_slot_remove(ms, i);
	rec_free(ms, r, w);
	mem_freed(ms);
	return 0;
}

/* Report one record to a walk's fn. */
static inline int
mem_visit(const struct mem_store *ms, const uint8_t *r,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	uint64_t w = rec_word(r);
	const uint8_t *key = rec_key(r, w);
	/* Callers may re-route keys by hash (shard split): give them the real one. */
	struct km_key k = {
		.data = key, .len = (uint16_t)rec_klen(w), .hash = km_key_hash(key, rec_klen(w))};
	struct km_value_ref v = {
		.data = key + rec_klen(w), .len = rec_vlen(w), .version = rec_version(ms, r, w)};

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
	for (i = 0; i < ms->nb; i++) {
		if (ms->slots[i] == 0)
			continue;
		rc = mem_visit(ms, slot_rec(ms->slots[i]), fn, arg);
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
	uint64_t nb = ms->nb, i, end;
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
		rc = mem_visit(ms, slot_rec(ms->slots[i]), fn, arg);
		if (rc != 0) {
			pos->pos = i + 1;
			return rc;
		}
	}
	pos->pos = end;
	return end < nb;
}

/* SCAN (km_store_scan_table() over the slots). */
static int
mem_scan_used(void *tab, uint64_t i)
{
	return ((const struct mem_store *)tab)->slots[i] != 0;
}

static uint64_t
mem_scan_order(void *tab, uint64_t i)
{
	const uint8_t *r = slot_rec(((const struct mem_store *)tab)->slots[i]);
	uint64_t w = rec_word(r);

	return km_scan_order(km_key_hash(rec_key(r, w), rec_klen(w)));
}

static int
mem_scan_visit(void *tab, uint64_t i, const uint8_t *prefix, uint16_t plen,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	const struct mem_store *ms = tab;
	const uint8_t *r = slot_rec(ms->slots[i]);
	uint64_t w = rec_word(r);

	if (rec_klen(w) < plen || (plen != 0 && memcmp(rec_key(r, w), prefix, plen) != 0))
		return 0;
	return mem_visit(ms, r, fn, arg);
}

static int
mem_scan(struct km_store *s, const uint8_t *prefix, uint16_t plen, uint64_t *cursor,
	uint32_t budget, int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v),
	void *arg)
{
	struct mem_store *ms = (struct mem_store *)s;
	const struct km_scan_table t = {
		.tab = ms,
		.nb = ms->nb,
		.used = mem_scan_used,
		.order = mem_scan_order,
		.visit = mem_scan_visit,
	};

	if (fn == NULL || cursor == NULL || (prefix == NULL && plen != 0))
		return -EINVAL;
	if (ms->nb_keys == 0) {
		*cursor = 0; /* complete at once, not a page per budget of empty slots */
		return 0;
	}
	return km_store_scan_table(&t, prefix, plen, cursor, budget, fn, arg);
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
	st->index_bytes = ms->nb * sizeof(*ms->slots);
	/* Everything the records' memory holds beyond their keys and values: headers, class
	 * rounding, free objects, slab ends and headers, the class table, malloc's share. */
	st->entry_overhead_bytes = mem_slabs_held(&ms->mem) - ms->value_bytes;
	st->hugepage_bytes = ms->mem.huge_held;
	/* Deletes consume versions too, and an instance that wrote nothing reports its
	 * version_base: a store created above this value never reissues a version seen here. */
	st->version_last = ms->version;
}

/*
 * For [store] dram_max: what the records use, not what the slabs hold. The free objects
 * of a slab take the next records of their class; counting them would keep a worker at
 * its bound answering FULL after deletes (a client deletes to make room) until a
 * compaction. They stay bounded: past half the live bytes the store compacts.
 */
static uint64_t
mem_dram_bytes(const struct km_store *s)
{
	const struct mem_store *ms = (const struct mem_store *)s;

	return ms->nb * sizeof(*ms->slots) + ms->mem.slab_live + ms->mem.cls_cost +
	       ms->mem.own_held;
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
	.scan = mem_scan,
	.version_floor = mem_version_floor,
	.destroy_step = mem_destroy_step,
	.stats = mem_stats,
	.prefetch = mem_prefetch,
	.get_hint = mem_get_hint,
	.load = mem_load,
};

KM_STORE_REGISTER(mem_ops)
