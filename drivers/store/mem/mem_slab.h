/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Record memory of one "mem" store instance (see mem_slab.c): slabs cut in size classes
 * of 8 bytes for records of up to MEM_SLAB_REC_MAX bytes, one malloc block each for
 * larger ones and for the few records of a small store. Everything is freed with the
 * instance. Single owner thread, as the store.
 */
#ifndef MEM_SLAB_H
#define MEM_SLAB_H

#include <stddef.h>
#include <stdint.h>

/* Largest record carved from a slab; larger ones get their own malloc block. */
#define MEM_SLAB_REC_MAX 1024
#define MEM_SLAB_ALIGN   8
#define MEM_SLAB_CLASSES (MEM_SLAB_REC_MAX / MEM_SLAB_ALIGN)

struct mem_slab;
struct mem_own;

struct mem_slab_class {
	uint8_t *free; /* free objects, linked through their first 8 bytes */
	uint8_t *bump; /* next never-used object of the newest slab */
	uint8_t *end;  /* end of the newest slab */
	uint64_t held; /* bytes of the class's slabs (as accounted) */
};

/* The states of the classes in use, allocated at the first record, grown by doubling: a
 * store of a few keys uses a class or two. */
struct mem_slab_tab {
	uint8_t idx[MEM_SLAB_CLASSES]; /* class -> position in c[] + 1; 0: not in use */
	uint32_t n, cap;
	struct mem_slab_class c[];
};

/* How a slab's memory was obtained (mem_slab.c). */
enum mem_slab_kind {
	MEM_SLAB_MALLOC = 0,  /* a malloc block */
	MEM_SLAB_MAPPED = 1,  /* an anonymous mapping */
	MEM_SLAB_HUGETLB = 2, /* a 2 MiB page of the system's hugetlb pool */
	MEM_SLAB_THP = 3,     /* a 2 MiB aligned mapping advised MADV_HUGEPAGE */
};

/* Zeroed: empty, 2 MiB slabs allowed. */
struct mem_slabs {
	struct mem_slab_tab *cls; /* NULL until the first slab record */
	struct mem_slab *slabs;   /* every slab, newest first */
	struct mem_own *own;      /* every block of its own (mem_own_alloc()) */
	uint64_t slab_held;       /* slabs + the class states, as the process pays them */
	uint64_t slab_live;       /* bytes of live slab records (rounded to their class) */
	uint64_t own_held;        /* blocks of their own, with malloc's rounding and header */
	uint64_t free0;           /* slab_held - slab_live after the last compaction */
	uint64_t cls_cost;        /* what cls costs (within slab_held) */
	uint64_t huge_held;       /* slabs of kind HUGETLB or THP (within slab_held) */
	uint8_t no_huge;          /* 1: no 2 MiB slabs (kept by mem_slabs_release()) */
	uint8_t hugetlb;          /* 1: 2 MiB slabs from the hugetlb pool first (kept too) */
};

/* Bytes an allocation of `size` takes in a slab (its class's size), or 0: too large. */
static inline size_t
mem_slab_size(size_t size)
{
	return size <= MEM_SLAB_REC_MAX
		       ? (size + MEM_SLAB_ALIGN - 1) & ~(size_t)(MEM_SLAB_ALIGN - 1)
		       : 0;
}

/* All the bytes held. */
static inline uint64_t
mem_slabs_held(const struct mem_slabs *a)
{
	return a->slab_held + a->own_held;
}

/* An 8-byte aligned block of size bytes (1..MEM_SLAB_REC_MAX) from a slab, or NULL. */
void *mem_slab_alloc(struct mem_slabs *a, size_t size);

/* Give back p, allocated from a slab with the same size. */
void mem_slab_free(struct mem_slabs *a, void *p, size_t size);

/* A 16-byte aligned block of its own (a malloc block, linked to the instance), or NULL. */
void *mem_own_alloc(struct mem_slabs *a, size_t size);

/* Give back a block of its own. */
void mem_own_free(struct mem_slabs *a, void *p);

/* Whether the slabs hold enough free space that a compaction should run (see mem_slab.c). */
int mem_slabs_fragmented(const struct mem_slabs *a);

/* Free everything; a is then empty and reusable. */
void mem_slabs_release(struct mem_slabs *a);

/* Free slabs (counted as the objects they hold) and blocks of their own (one each) for
 * about budget. @return 1: more left, 0: a is empty. */
int mem_slabs_release_step(struct mem_slabs *a, uint32_t budget);

/* After a compaction into dst: move src's own blocks to dst, then free src's slabs. */
void mem_slabs_hand_own(struct mem_slabs *dst, struct mem_slabs *src);

/* A compaction into dst failed half-way: src keeps dst's slabs and records too. */
void mem_slabs_absorb(struct mem_slabs *src, struct mem_slabs *dst);

/* Call fn for every slab: its start, its bytes as accounted (a mapping's length), its kind.
 * For checks. */
void mem_slabs_each(const struct mem_slabs *a,
	void (*fn)(void *arg, const void *slab, uint64_t bytes, enum mem_slab_kind kind),
	void *arg);

/* Mark the end of a compaction (the free space then is the new reference). */
static inline void
mem_slabs_compacted(struct mem_slabs *a)
{
	a->free0 = a->slab_held - a->slab_live;
}

#endif /* MEM_SLAB_H */
