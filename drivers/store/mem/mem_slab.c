/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Record memory of one "mem" store instance: per-instance slabs in size classes.
 *
 * Why slabs and not a log-structured arena: a record of the mem store is rewritten in
 * place when its size class does not change (the common update), and a delete gives its
 * block straight back to a free list of its class, so the steady state needs no cleaner
 * at all; an arena would turn every update into an append plus a dead record to compact
 * away later. What slabs lose is memory stranded in the free lists of classes the
 * workload left (values growing, sizes shifting): that is bounded by a compaction of the
 * whole instance (mem_slabs_fragmented(), done by store_mem.c, which alone knows where
 * the records are pointed to from).
 *
 * Classes: every multiple of 8 bytes up to MEM_SLAB_REC_MAX (8-byte aligned records, as
 * the store's slot format needs). Blocks of their own (mem_own_alloc()): one malloc block
 * each, linked in a list of the instance (16 bytes of links), for records larger than
 * that (under 2% of such a record) and for the records of a store of a few keys, which
 * store_mem.c keeps in malloc blocks as before slabs: it holds no slab, and a delete gives
 * the memory back at once (a [store] memory bound then sees the room it makes).
 *
 * Slabs of a class start small (MEM_SLAB_MIN, at least two objects) and grow with the
 * class: a new one has a quarter of what the class holds already, up to MEM_SLAB_MAX.
 * So a store just past the small size holds a few hundred bytes per class used (plus the
 * states of the classes in use: 136 bytes and 32 per class, allocated at the first slab
 * record and freed with the last record), and a class never holds more than about 5/4 of
 * what it ever needed at once. Slabs of MEM_SLAB_MMAP bytes or more are mapped directly
 * (munmap gives them back to the system at once, whatever malloc's mmap threshold
 * became); smaller ones come from malloc.
 *
 * Huge pages: a class that holds MEM_SLAB_HUGE_FROM (8 MiB) or more gets slabs of one
 * 2 MiB page, MEM_SLAB_HUGE, so that a store of millions of records walks fewer TLB
 * entries. 8 MiB is where the growth rule asks for 2 MiB (a quarter of it), so the 5/4
 * bound holds as for smaller slabs. Such a slab is an anonymous mapping cut to a 2 MiB
 * boundary (a larger one, its ends unmapped) with MADV_HUGEPAGE: the kernel backs it with
 * a transparent huge page when THP is in madvise or always mode and it can find one, and
 * with 4 KiB pages otherwise (the advice is taken either way: huge_held counts what was
 * advised, not what the kernel did). With hugetlb (struct km_store_params), it is first a
 * MAP_HUGETLB | MAP_HUGE_2MB mapping while the system's pool has a free 2 MiB page, written
 * at once with MADV_POPULATE_WRITE: a page the mmap reserved but a hugetlb cgroup limit
 * or a memory policy refuses then fails the madvise (the slab falls back to THP) instead
 * of killing the worker with SIGBUS at the first record. Not by default: the pool is the
 * system's, reserved for EAL or for other processes. A class keeps asking for hugetlb
 * pages (one failed mmap per 2 MiB: nothing next to filling 2 MiB of records). Either
 * costs 2 MiB. The kind of each slab is in its header (munmap needs the length of the
 * mapping, and a hugetlb one must be unmapped whole); huge_held counts them. A store
 * created with hugepages off keeps slabs of at most MEM_SLAB_MAX, its mapped ones advised
 * MADV_NOHUGEPAGE (THP in always mode would otherwise back them too).
 *
 * Accounting is what the process pays: malloc'ed blocks at their usable size plus
 * malloc's size word, mapped slabs at their page-rounded length, the class states
 * included. Free objects, the unused end of a slab and the slab headers are all held:
 * a delete in a store of slabs makes room for the store's next records of that class,
 * not in what the store reports, until a compaction gives the space back.
 *
 * Everything belongs to the instance: releasing it frees every slab and block in one go,
 * from whichever thread then owns it (a moved shard carries its memory whole).
 */

#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mem_slab.h"

#define MEM_SLAB_MIN  256
#define MEM_SLAB_MAX  (1u << 20)
#define MEM_SLAB_MMAP (64u << 10)
/* Slabs of a 2 MiB page, for classes of at least 4 of them (a new slab is at most a quarter
 * of what its class holds). */
#define MEM_SLAB_HUGE      (2u << 20)
#define MEM_SLAB_HUGE_FROM (4 * (uint64_t)MEM_SLAB_HUGE)
#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif
/* Free slab bytes tolerated beyond half the live ones before a compaction (per store). */
#define MEM_COMPACT_SLACK (64u << 10)
/* glibc's size word before each chunk. */
#define MALLOC_CHUNK_HDR 8

struct mem_slab {
	struct mem_slab *next;
	uint64_t bytes;   /* as accounted: a mapping's length, or malloc's cost */
	uint32_t objects; /* capacity, for release_step's budget */
	uint32_t kind;    /* enum mem_slab_kind: how to free it */
};

struct mem_own {
	struct mem_own *prev, *next;
};

_Static_assert(sizeof(struct mem_slab) % MEM_SLAB_ALIGN == 0, "objects stay aligned");
_Static_assert(sizeof(struct mem_own) % 16 == 0, "records stay aligned");

static uint64_t
malloc_cost(void *p)
{
	return malloc_usable_size(p) + MALLOC_CHUNK_HDR;
}

static uint64_t
page_size(void)
{
	static uint64_t ps;

	if (ps == 0) {
		long v = sysconf(_SC_PAGESIZE);

		ps = v > 0 ? (uint64_t)v : 4096;
	}
	return ps;
}

static int
slab_huge(enum mem_slab_kind k)
{
	return k == MEM_SLAB_HUGETLB || k == MEM_SLAB_THP;
}

/* A slab of MEM_SLAB_HUGE bytes, on a 2 MiB page of the pool if hugetlb and the system
 * has one, else MEM_SLAB_HUGE-aligned for THP; *kind says which. NULL: no memory at all. */
static void *
slab_map_huge(int hugetlb, enum mem_slab_kind *kind)
{
	size_t len = 2 * (size_t)MEM_SLAB_HUGE - page_size(), lead;
	uint8_t *p;

	if (hugetlb) {
		p = mmap(NULL, MEM_SLAB_HUGE, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
		if (p != MAP_FAILED && madvise(p, MEM_SLAB_HUGE, MADV_POPULATE_WRITE) == 0) {
			*kind = MEM_SLAB_HUGETLB;
			return p;
		}
		if (p != MAP_FAILED)
			munmap(p, MEM_SLAB_HUGE);
	}
	/* Any len bytes hold an aligned MEM_SLAB_HUGE: keep those, unmap the rest. */
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	lead = (MEM_SLAB_HUGE - (uintptr_t)p % MEM_SLAB_HUGE) % MEM_SLAB_HUGE;
	if (lead != 0)
		munmap(p, lead);
	if (len - lead > MEM_SLAB_HUGE)
		munmap(p + lead + MEM_SLAB_HUGE, len - lead - MEM_SLAB_HUGE);
	p += lead;
	/* EINVAL without THP in the kernel: then it is a mapping as any other. */
	*kind = madvise(p, MEM_SLAB_HUGE, MADV_HUGEPAGE) == 0 ? MEM_SLAB_THP : MEM_SLAB_MAPPED;
	return p;
}

static int
slab_new(struct mem_slabs *a, struct mem_slab_class *c, size_t sz)
{
	uint64_t want = c->held / 4, bytes, n, cost;
	enum mem_slab_kind kind = MEM_SLAB_MALLOC;
	struct mem_slab *s = NULL;

	if (!a->no_huge && c->held >= MEM_SLAB_HUGE_FROM)
		s = slab_map_huge(a->hugetlb, &kind);
	if (s != NULL) {
		bytes = cost = MEM_SLAB_HUGE;
	} else {
		if (want < MEM_SLAB_MIN)
			want = MEM_SLAB_MIN;
		if (want > MEM_SLAB_MAX)
			want = MEM_SLAB_MAX;
		n = (want - sizeof(*s)) / sz;
		if (n < 2)
			n = 2;
		bytes = sizeof(*s) + n * sz;
		if (bytes >= MEM_SLAB_MMAP) {
			bytes = (bytes + page_size() - 1) & ~(page_size() - 1);
			s = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				-1, 0);
			if (s == MAP_FAILED)
				return -1;
			if (a->no_huge)
				(void)madvise(s, bytes, MADV_NOHUGEPAGE);
			kind = MEM_SLAB_MAPPED;
			cost = bytes;
		} else {
			s = malloc(bytes);
			if (s == NULL)
				return -1;
			cost = malloc_cost(s);
			bytes = malloc_usable_size(s);
		}
	}
	n = (bytes - sizeof(*s)) / sz; /* the whole block: malloc may give more */
	s->bytes = cost;
	s->objects = (uint32_t)n;
	s->kind = kind;
	s->next = a->slabs;
	a->slabs = s;
	a->slab_held += cost;
	if (slab_huge(kind))
		a->huge_held += cost;
	c->held += cost;
	c->bump = (uint8_t *)(s + 1);
	c->end = c->bump + n * sz;
	return 0;
}

/* The state of the class of sz-byte objects, added if not in use yet; NULL: no memory. */
static struct mem_slab_class *
class_get(struct mem_slabs *a, size_t sz)
{
	size_t ci = sz / MEM_SLAB_ALIGN - 1;
	struct mem_slab_tab *t = a->cls;
	uint32_t cap;

	if (t != NULL && t->idx[ci] != 0)
		return &t->c[t->idx[ci] - 1];
	if (t == NULL || t->n == t->cap) {
		cap = t == NULL ? 1 : 2 * t->cap;
		t = realloc(t, sizeof(*t) + cap * sizeof(t->c[0]));
		if (t == NULL)
			return NULL;
		if (a->cls == NULL) {
			memset(t, 0, sizeof(*t));
		} else {
			a->slab_held -= a->cls_cost;
		}
		a->cls = t;
		a->cls_cost = malloc_cost(t);
		a->slab_held += a->cls_cost;
		t->cap = cap;
	}
	memset(&t->c[t->n], 0, sizeof(t->c[0]));
	t->idx[ci] = (uint8_t)++t->n;
	return &t->c[t->n - 1];
}

void *
mem_own_alloc(struct mem_slabs *a, size_t size)
{
	struct mem_own *b = malloc(sizeof(*b) + size);

	if (b == NULL)
		return NULL;
	b->prev = NULL;
	b->next = a->own;
	if (a->own != NULL)
		a->own->prev = b;
	a->own = b;
	a->own_held += malloc_cost(b);
	return b + 1;
}

void
mem_own_free(struct mem_slabs *a, void *p)
{
	struct mem_own *b = (struct mem_own *)p - 1;

	if (b->prev != NULL)
		b->prev->next = b->next;
	else
		a->own = b->next;
	if (b->next != NULL)
		b->next->prev = b->prev;
	a->own_held -= malloc_cost(b);
	free(b);
}

void *
mem_slab_alloc(struct mem_slabs *a, size_t size)
{
	size_t sz = mem_slab_size(size);
	struct mem_slab_class *c;
	uint8_t *p;

	if (size == 0 || sz == 0)
		return NULL;
	c = class_get(a, sz);
	if (c == NULL)
		return NULL;
	if (c->free != NULL) {
		p = c->free;
		memcpy(&c->free, p, sizeof(c->free));
	} else {
		if ((size_t)(c->end - c->bump) < sz && slab_new(a, c, sz) != 0)
			return NULL;
		p = c->bump;
		c->bump += sz;
	}
	a->slab_live += sz;
	return p;
}

void
mem_slab_free(struct mem_slabs *a, void *p, size_t size)
{
	size_t sz = mem_slab_size(size);
	struct mem_slab_class *c = &a->cls->c[a->cls->idx[sz / MEM_SLAB_ALIGN - 1] - 1];

	memcpy(p, &c->free, sizeof(c->free));
	c->free = p;
	a->slab_live -= sz;
}

/*
 * Free slab space (held, minus live records) past half the live bytes, plus a slack, plus
 * what the last compaction left (class tails, slab headers: compacting again would not
 * get it back). A compaction leaves at most about a quarter of the live bytes free (the
 * growth rule above), so it takes a quarter of the live bytes of new churn at least before
 * the next: its cost is amortised over the frees that caused it. Between compactions,
 * slab_held <= 1.5 * slab_live + MEM_COMPACT_SLACK + free0.
 */
int
mem_slabs_fragmented(const struct mem_slabs *a)
{
	return a->slab_held - a->slab_live > a->slab_live / 2 + MEM_COMPACT_SLACK + a->free0;
}

/* Free s and take it out of a's figures. */
static void
slab_free(struct mem_slabs *a, struct mem_slab *s)
{
	a->slab_held -= s->bytes;
	if (slab_huge(s->kind))
		a->huge_held -= s->bytes;
	if (s->kind == MEM_SLAB_MALLOC)
		free(s);
	else
		munmap(s, s->bytes);
}

static void
slabs_free_cls(struct mem_slabs *a)
{
	if (a->cls != NULL) {
		a->slab_held -= a->cls_cost;
		free(a->cls);
		a->cls = NULL;
		a->cls_cost = 0;
	}
}

int
mem_slabs_release_step(struct mem_slabs *a, uint32_t budget)
{
	struct mem_slab *s;
	struct mem_own *b;
	uint8_t no_huge, hugetlb;
	uint32_t cost;

	if (budget == 0)
		budget = 1;
	while (budget > 0 && (a->slabs != NULL || a->own != NULL)) {
		if (a->slabs != NULL) {
			s = a->slabs;
			a->slabs = s->next;
			cost = s->objects;
			slab_free(a, s);
		} else {
			b = a->own;
			a->own = b->next;
			cost = 1;
			a->own_held -= malloc_cost(b);
			free(b);
		}
		budget = cost >= budget ? 0 : budget - cost;
	}
	if (a->slabs != NULL || a->own != NULL)
		return 1;
	slabs_free_cls(a);
	no_huge = a->no_huge;
	hugetlb = a->hugetlb;
	memset(a, 0, sizeof(*a));
	a->no_huge = no_huge;
	a->hugetlb = hugetlb;
	return 0;
}

void
mem_slabs_release(struct mem_slabs *a)
{
	while (mem_slabs_release_step(a, UINT32_MAX) != 0)
		;
}

void
mem_slabs_hand_own(struct mem_slabs *dst, struct mem_slabs *src)
{
	dst->own = src->own;
	dst->own_held = src->own_held;
	src->own = NULL;
	src->own_held = 0;
	mem_slabs_release(src);
}

void
mem_slabs_absorb(struct mem_slabs *src, struct mem_slabs *dst)
{
	struct mem_slab *s;

	slabs_free_cls(dst);
	if (dst->slabs != NULL) {
		for (s = dst->slabs; s->next != NULL; s = s->next)
			;
		s->next = src->slabs;
		src->slabs = dst->slabs;
	}
	src->slab_held += dst->slab_held;
	src->slab_live += dst->slab_live;
	src->huge_held += dst->huge_held;
	/* dst allocated only: no free objects; the unused ends of its slabs stay held. */
	memset(dst, 0, sizeof(*dst));
}

void
mem_slabs_each(const struct mem_slabs *a,
	void (*fn)(void *arg, const void *slab, uint64_t bytes, enum mem_slab_kind kind), void *arg)
{
	const struct mem_slab *s;

	for (s = a->slabs; s != NULL; s = s->next)
		fn(arg, s, s->bytes, (enum mem_slab_kind)s->kind);
}
