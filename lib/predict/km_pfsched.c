/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Prefetch scheduler: a max-heap of indices into a fixed pool, a direct-mapped filter of
 * recently pushed keys, per-target in-flight counts and token buckets, a ghost list, and
 * the AIMD step.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "km_pfsched.h"

#define PROBE_EVERY 64 /* one prediction in this many below the threshold is let through */

struct pf_item {
	float conf;
	uint32_t target;
	uint64_t deadline;
	uint64_t hash;
	uint8_t src;
	uint16_t len;
	uint8_t key[KM_KEY_MAX];
};

struct pf_filter {
	uint64_t hash;
	uint64_t expire;
};

struct pf_target {
	uint32_t inflight;
	int over; /* above the pending watermark */
	double tokens;
	uint64_t refill_ns;
};

struct km_pfsched {
	struct km_pfsched_params p;
	struct pf_item *pool;
	uint32_t *heap, *free_idx, *defer;
	uint32_t nb_heap, nb_free;
	struct pf_filter *filter;
	uint64_t *ghost;
	struct pf_target *tg;
	float threshold;
	uint32_t budget;
	uint32_t probe_at;
	uint32_t w_used, w_unused, w_harm;
	struct km_pfsched_stats st;
};

int
km_pfsched_create(const struct km_pfsched_params *p, struct km_pfsched **out)
{
	struct km_pfsched *s;

	if (out == NULL)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	if (p != NULL)
		s->p = *p;
#define DEF(f, v)                     \
	do {                          \
		if (s->p.f == 0)      \
			s->p.f = (v); \
	} while (0)
	DEF(queue_cap, 256);
	DEF(nb_targets, 1);
	DEF(inflight_init, 16);
	DEF(inflight_min, 1);
	DEF(inflight_max, 256);
	DEF(est_bytes, 4096);
	DEF(aimd_window, 64);
	DEF(deadline_ns, 1000000);
	DEF(filter_ttl_ns, 10000000);
	DEF(filter_size, 4096);
	DEF(ghost_size, 1024);
	DEF(threshold, 0.3f);
	DEF(thr_min, 0.1f);
	DEF(thr_max, 0.5f);
	DEF(acc_hi, 0.5f);
	DEF(acc_lo, 0.3f);
	DEF(harm_max, 0.05f);
#undef DEF
	if (s->p.inflight_min > s->p.inflight_max || s->p.inflight_init < s->p.inflight_min ||
		s->p.inflight_init > s->p.inflight_max || s->p.thr_min > s->p.thr_max ||
		s->p.acc_lo > s->p.acc_hi) {
		free(s);
		return -EINVAL;
	}
	s->pool = calloc(s->p.queue_cap, sizeof(*s->pool));
	s->heap = calloc(s->p.queue_cap, sizeof(*s->heap));
	s->free_idx = calloc(s->p.queue_cap, sizeof(*s->free_idx));
	s->defer = calloc(s->p.queue_cap, sizeof(*s->defer));
	s->filter = calloc(s->p.filter_size, sizeof(*s->filter));
	s->ghost = calloc(s->p.ghost_size, sizeof(*s->ghost));
	s->tg = calloc(s->p.nb_targets, sizeof(*s->tg));
	if (s->pool == NULL || s->heap == NULL || s->free_idx == NULL || s->defer == NULL ||
		s->filter == NULL || s->ghost == NULL || s->tg == NULL) {
		km_pfsched_destroy(s);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < s->p.queue_cap; i++)
		s->free_idx[i] = s->p.queue_cap - 1 - i;
	s->nb_free = s->p.queue_cap;
	s->threshold = s->p.threshold;
	s->budget = s->p.inflight_init;
	for (uint32_t i = 0; i < s->p.nb_targets; i++)
		s->tg[i].tokens = -1; /* full at the first refill */
	*out = s;
	return 0;
}

void
km_pfsched_destroy(struct km_pfsched *s)
{
	if (s == NULL)
		return;
	free(s->pool);
	free(s->heap);
	free(s->free_idx);
	free(s->defer);
	free(s->filter);
	free(s->ghost);
	free(s->tg);
	free(s);
}

static inline int
higher(const struct km_pfsched *s, uint32_t a, uint32_t b)
{
	return s->pool[a].conf > s->pool[b].conf;
}

static void
heap_push(struct km_pfsched *s, uint32_t idx)
{
	uint32_t i = s->nb_heap++;

	while (i > 0 && higher(s, idx, s->heap[(i - 1) / 2])) {
		s->heap[i] = s->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	s->heap[i] = idx;
}

static uint32_t
heap_pop(struct km_pfsched *s)
{
	uint32_t top = s->heap[0], last = s->heap[--s->nb_heap], i = 0;

	for (;;) {
		uint32_t c = 2 * i + 1;

		if (c >= s->nb_heap)
			break;
		if (c + 1 < s->nb_heap && higher(s, s->heap[c + 1], s->heap[c]))
			c++;
		if (!higher(s, s->heap[c], last))
			break;
		s->heap[i] = s->heap[c];
		i = c;
	}
	if (s->nb_heap > 0)
		s->heap[i] = last;
	return top;
}

int
km_pfsched_push(
	struct km_pfsched *s, const struct km_prediction *p, uint32_t target, uint64_t now_ns)
{
	struct pf_filter *f;
	struct pf_item *it;
	uint32_t idx;

	if (s == NULL || p == NULL || target >= s->p.nb_targets || p->len > KM_KEY_MAX)
		return -EINVAL;
	s->st.pushed++;
	if (p->conf < s->threshold) {
		/* A probe now and then keeps feedback flowing, so the threshold can come back. */
		if (p->conf < s->p.thr_min || ++s->probe_at % PROBE_EVERY != 0) {
			s->st.below_threshold++;
			return 0;
		}
		s->st.probes++;
	}
	f = &s->filter[p->hash % s->p.filter_size];
	if (f->hash == p->hash && f->expire > now_ns) {
		s->st.filtered++;
		return 0;
	}
	if (s->nb_free == 0) {
		s->st.queue_full++;
		return 0;
	}
	f->hash = p->hash;
	f->expire = now_ns + s->p.filter_ttl_ns;
	idx = s->free_idx[--s->nb_free];
	it = &s->pool[idx];
	it->conf = p->conf;
	it->target = target;
	it->deadline = now_ns + s->p.deadline_ns;
	it->hash = p->hash;
	it->src = p->src;
	it->len = p->len;
	memcpy(it->key, p->key, p->len);
	heap_push(s, idx);
	return 1;
}

/* Whether target may take one more prefetch now (token bucket refilled lazily). */
static int
target_ready(struct km_pfsched *s, struct pf_target *t, uint64_t now_ns)
{
	if (t->inflight >= s->budget)
		return 0;
	if (s->p.bytes_per_s == 0)
		return 1;
	{
		double cap = (double)s->p.bytes_per_s / 100.0; /* 10 ms of burst */

		if (cap < s->p.est_bytes)
			cap = s->p.est_bytes;
		if (t->tokens < 0)
			t->tokens = cap;
		else if (now_ns > t->refill_ns)
			t->tokens +=
				(double)(now_ns - t->refill_ns) * 1e-9 * (double)s->p.bytes_per_s;
		if (t->tokens > cap)
			t->tokens = cap;
		t->refill_ns = now_ns;
		return t->tokens >= s->p.est_bytes;
	}
}

unsigned
km_pfsched_pop(struct km_pfsched *s, uint64_t now_ns, struct km_pfsched_cmd *out, unsigned max)
{
	uint32_t nb_defer = 0;
	unsigned n = 0;

	while (n < max && s->nb_heap > 0) {
		uint32_t idx = heap_pop(s);
		struct pf_item *it = &s->pool[idx];
		struct pf_target *t = &s->tg[it->target];

		if (it->deadline < now_ns) {
			s->st.stale++;
		} else if (t->over) {
			s->st.dropped_watermark++;
		} else if (!target_ready(s, t, now_ns)) {
			s->defer[nb_defer++] = idx;
			continue;
		} else {
			struct km_pfsched_cmd *c = &out[n++];

			c->conf = it->conf;
			c->target = it->target;
			c->src = it->src;
			c->len = it->len;
			c->hash = it->hash;
			memcpy(c->key, it->key, it->len);
			t->inflight++;
			if (s->p.bytes_per_s != 0)
				t->tokens -= s->p.est_bytes;
			s->st.issued++;
		}
		s->free_idx[s->nb_free++] = idx;
	}
	while (nb_defer > 0)
		heap_push(s, s->defer[--nb_defer]);
	return n;
}

void
km_pfsched_done(struct km_pfsched *s, uint32_t target)
{
	if (target >= s->p.nb_targets)
		return;
	if (s->tg[target].inflight > 0)
		s->tg[target].inflight--;
	s->st.completed++;
}

void
km_pfsched_inflight(struct km_pfsched *s, uint32_t target, uint32_t n)
{
	if (target < s->p.nb_targets)
		s->tg[target].inflight = n;
}

void
km_pfsched_watermark(struct km_pfsched *s, uint32_t target, int over)
{
	if (target < s->p.nb_targets)
		s->tg[target].over = over != 0;
}

static void
aimd_step(struct km_pfsched *s)
{
	uint32_t n = s->w_used + s->w_unused;
	float acc = (float)s->w_used / (float)n, harm = (float)s->w_harm / (float)n;

	/* Harm only counts when it outweighs what the prefetches brought. */
	if ((harm > s->p.harm_max && s->w_harm * 2 > s->w_used) || acc < s->p.acc_lo) {
		s->budget = s->budget / 2 < s->p.inflight_min ? s->p.inflight_min : s->budget / 2;
		s->threshold += 0.05f;
		if (s->threshold > s->p.thr_max)
			s->threshold = s->p.thr_max;
		s->st.decreases++;
	} else if (acc >= s->p.acc_hi) {
		if (s->budget < s->p.inflight_max)
			s->budget++;
		s->threshold -= 0.02f;
		if (s->threshold < s->p.thr_min)
			s->threshold = s->p.thr_min;
		s->st.increases++;
	}
	s->w_used = 0;
	s->w_unused = 0;
	s->w_harm = 0;
}

void
km_pfsched_outcome(struct km_pfsched *s, int used)
{
	if (used) {
		s->st.used++;
		s->w_used++;
	} else {
		s->st.unused++;
		s->w_unused++;
	}
	if (s->w_used + s->w_unused >= s->p.aimd_window)
		aimd_step(s);
}

void
km_pfsched_evicted(struct km_pfsched *s, uint64_t hash)
{
	s->ghost[hash % s->p.ghost_size] = hash;
}

void
km_pfsched_demand_miss(struct km_pfsched *s, uint64_t hash)
{
	uint64_t *g = &s->ghost[hash % s->p.ghost_size];

	s->st.demand_misses++;
	if (*g == hash && hash != 0) {
		*g = 0;
		s->st.harm++;
		s->w_harm++;
	}
}

void
km_pfsched_harm(struct km_pfsched *s)
{
	s->st.harm++;
	s->w_harm++;
}

void
km_pfsched_stats(const struct km_pfsched *s, struct km_pfsched_stats *st)
{
	uint64_t r = s->st.used + s->st.unused, m = s->st.used + s->st.demand_misses;

	*st = s->st;
	st->threshold = s->threshold;
	st->budget = s->budget;
	st->accuracy = r > 0 ? (double)s->st.used / (double)r : 0;
	st->coverage = m > 0 ? (double)s->st.used / (double)m : 0;
}
