/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Offline LRU and Belady MIN simulators (model in km_cachesim.h).
 *
 * Both index per-key state by the trace's key ids, so no hashing happens here. LRU is an
 * intrusive circular list threaded through a per-key array: O(1) per record. MIN needs
 * the next use of every record (one backward pass) and an indexed max-heap of the cached
 * keys keyed by their next use: O(log capacity) per record, memory bounded by the keys
 * rather than by the records.
 */

#include <errno.h>
#include <stdlib.h>

#include "km_cachesim.h"
#include "km_workload.h"

#define NOT_CACHED UINT32_MAX

static int
sim_args_valid(const struct km_trace *t, uint64_t capacity, const struct km_sim_result *r)
{
	return t != NULL && r != NULL && capacity != 0 && (t->nb_recs == 0 || t->recs != NULL) &&
	       t->nb_keys < UINT32_MAX;
}

static void
sim_result(struct km_sim_result *r, uint64_t gets, uint64_t hits)
{
	r->gets = gets;
	r->hits = hits;
	r->hit_ratio = gets == 0 ? 0.0 : (double)hits / (double)gets;
}

/* Cached keys only; node nb_keys is the list head, next of the head is the MRU key. */
struct lru_node {
	uint32_t prev;
	uint32_t next; /* NOT_CACHED when the key is not in the cache */
};

static inline void
lru_unlink(struct lru_node *n, uint32_t k)
{
	n[n[k].prev].next = n[k].next;
	n[n[k].next].prev = n[k].prev;
}

static inline void
lru_push_front(struct lru_node *n, uint32_t head, uint32_t k)
{
	n[k].prev = head;
	n[k].next = n[head].next;
	n[n[head].next].prev = k;
	n[head].next = k;
}

int
km_sim_lru(const struct km_trace *t, uint64_t capacity, struct km_sim_result *r)
{
	uint64_t gets = 0, hits = 0, used = 0;
	struct lru_node *n;
	uint32_t head;
	size_t i;

	if (!sim_args_valid(t, capacity, r))
		return -EINVAL;
	head = (uint32_t)t->nb_keys;
	n = malloc(((size_t)t->nb_keys + 1) * sizeof(*n));
	if (n == NULL)
		return -ENOMEM;
	for (i = 0; i < t->nb_keys; i++)
		n[i].next = NOT_CACHED;
	n[head].prev = head;
	n[head].next = head;

	for (i = 0; i < t->nb_recs; i++) {
		const struct km_trace_rec *rec = &t->recs[i];
		uint32_t k = rec->key_id;
		int cached;

		if (k >= t->nb_keys) {
			free(n);
			return -EINVAL;
		}
		cached = n[k].next != NOT_CACHED;
		if (rec->op == KM_WL_DEL) {
			if (cached) {
				lru_unlink(n, k);
				n[k].next = NOT_CACHED;
				used--;
			}
			continue;
		}
		if (rec->op == KM_WL_GET) {
			gets++;
			hits += (uint64_t)cached;
		}
		/* A hit or a PUT refreshes; a miss or a PUT of an absent key installs. */
		if (cached) {
			lru_unlink(n, k);
		} else if (used == capacity) {
			uint32_t victim = n[head].prev;

			lru_unlink(n, victim);
			n[victim].next = NOT_CACHED;
		} else {
			used++;
		}
		lru_push_front(n, head, k);
	}
	free(n);
	sim_result(r, gets, hits);
	return 0;
}

/*
 * Indexed binary max-heap of the cached keys by next use. Next uses only grow (a key's
 * next use after record i lies beyond i), so an update is a sift-up.
 */
struct min_heap {
	uint32_t *heap; /* key ids, heap[0] is used farthest in the future */
	uint32_t *pos;  /* key id -> slot in heap, NOT_CACHED */
	uint64_t *prio; /* key id -> record index of its next use, valid while cached */
	size_t size;
};

static inline void
heap_set(struct min_heap *h, size_t slot, uint32_t k)
{
	h->heap[slot] = k;
	h->pos[k] = (uint32_t)slot;
}

/* Move the key at slot up or down to where its priority belongs. */
static void
heap_sift(struct min_heap *h, size_t slot)
{
	uint32_t k = h->heap[slot];

	for (;;) {
		size_t next = slot, c = 2 * slot + 1;

		if (slot > 0 && h->prio[h->heap[(slot - 1) / 2]] < h->prio[k]) {
			next = (slot - 1) / 2;
		} else if (c < h->size) {
			if (c + 1 < h->size && h->prio[h->heap[c + 1]] > h->prio[h->heap[c]])
				c++;
			if (h->prio[h->heap[c]] > h->prio[k])
				next = c;
		}
		if (next == slot)
			break;
		heap_set(h, slot, h->heap[next]);
		slot = next;
	}
	heap_set(h, slot, k);
}

static void
heap_remove(struct min_heap *h, uint32_t k)
{
	size_t slot = h->pos[k];
	uint32_t last = h->heap[--h->size];

	h->pos[k] = NOT_CACHED;
	if (slot == h->size)
		return;
	heap_set(h, slot, last);
	heap_sift(h, slot);
}

static void
heap_push(struct min_heap *h, uint32_t k, uint64_t prio)
{
	h->prio[k] = prio;
	heap_set(h, h->size, k);
	h->size++;
	heap_sift(h, h->size - 1);
}

int
km_sim_belady(const struct km_trace *t, uint64_t capacity, struct km_sim_result *r)
{
	uint64_t gets = 0, hits = 0, never = UINT64_MAX;
	struct min_heap h = {0};
	uint64_t *next = NULL;
	size_t i, cap;
	int rc = -ENOMEM;

	if (!sim_args_valid(t, capacity, r))
		return -EINVAL;
	/* The cache never holds more than every key: bound the heap by that. */
	cap = capacity < t->nb_keys ? (size_t)capacity : t->nb_keys;
	next = malloc((t->nb_recs > 0 ? t->nb_recs : 1) * sizeof(*next));
	h.pos = malloc((t->nb_keys > 0 ? t->nb_keys : 1) * sizeof(*h.pos));
	h.prio = malloc((t->nb_keys > 0 ? t->nb_keys : 1) * sizeof(*h.prio));
	h.heap = malloc((cap > 0 ? cap : 1) * sizeof(*h.heap));
	if (next == NULL || h.pos == NULL || h.prio == NULL || h.heap == NULL)
		goto out;

	/*
	 * Backward pass: next[i] is the index of the next GET or PUT of record i's key. A DEL
	 * first makes a cached copy worthless, so it counts as no next use; h.prio serves as
	 * the per-key "seen later" array here.
	 */
	for (i = 0; i < t->nb_keys; i++)
		h.prio[i] = never;
	for (i = t->nb_recs; i-- > 0;) {
		const struct km_trace_rec *rec = &t->recs[i];

		if (rec->key_id >= t->nb_keys) {
			rc = -EINVAL;
			goto out;
		}
		next[i] = h.prio[rec->key_id];
		h.prio[rec->key_id] = rec->op == KM_WL_DEL ? never : i;
	}

	for (i = 0; i < t->nb_keys; i++)
		h.pos[i] = NOT_CACHED;
	for (i = 0; i < t->nb_recs; i++) {
		const struct km_trace_rec *rec = &t->recs[i];
		uint32_t k = rec->key_id;
		int cached = h.pos[k] != NOT_CACHED;

		if (rec->op == KM_WL_DEL) {
			if (cached)
				heap_remove(&h, k);
			continue;
		}
		if (rec->op == KM_WL_GET) {
			gets++;
			hits += (uint64_t)cached;
		}
		if (cached) {
			h.prio[k] = next[i];
			heap_sift(&h, h.pos[k]);
			continue;
		}
		if (h.size == cap)
			heap_remove(&h, h.heap[0]);
		heap_push(&h, k, next[i]);
	}
	sim_result(r, gets, hits);
	rc = 0;
out:
	free(next);
	free(h.pos);
	free(h.prio);
	free(h.heap);
	return rc;
}
