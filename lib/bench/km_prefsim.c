/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Prefetch evaluator: a unit-size SIEVE over trace key ids (the queue and hand of
 * lib/cache, arrays instead of pointers), an in-flight FIFO (every prefetch takes the same
 * number of requests), and lib/predict fed request by request.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "km_prefsim.h"
#include "km_workload.h"

#include <km_pfsched.h>
#include <km_stream.h>

#define NIL UINT32_MAX

#define F_CACHED   0x01
#define F_VISITED  0x02
#define F_PREF     0x04 /* prefetched, not hit yet */
#define F_INFLIGHT 0x08
#define F_STALE    0x10 /* written while its prefetch was in flight */
#define F_LATE     0x20 /* a GET waits for its prefetch */

#define PRED_MAX   16
#define SHARD_NONE UINT32_MAX

struct sieve {
	uint32_t *qnext, *qprev; /* qnext: towards the tail (older); qprev: towards the head */
	uint8_t *f;
	uint32_t head, tail, hand;
	uint64_t n, cap;
};

static int
sieve_init(struct sieve *s, size_t nb_keys, uint64_t cap)
{
	memset(s, 0, sizeof(*s));
	s->qnext = malloc((nb_keys + 1) * sizeof(*s->qnext));
	s->qprev = malloc((nb_keys + 1) * sizeof(*s->qprev));
	s->f = calloc(nb_keys + 1, 1);
	if (s->qnext == NULL || s->qprev == NULL || s->f == NULL)
		return -ENOMEM;
	s->head = s->tail = s->hand = NIL;
	s->cap = cap;
	return 0;
}

static void
sieve_fini(struct sieve *s)
{
	free(s->qnext);
	free(s->qprev);
	free(s->f);
}

static void
sieve_unlink(struct sieve *s, uint32_t e)
{
	if (s->hand == e)
		s->hand = s->qprev[e];
	if (s->qprev[e] != NIL)
		s->qnext[s->qprev[e]] = s->qnext[e];
	else
		s->head = s->qnext[e];
	if (s->qnext[e] != NIL)
		s->qprev[s->qnext[e]] = s->qprev[e];
	else
		s->tail = s->qprev[e];
	s->f[e] &= (uint8_t) ~(F_CACHED | F_VISITED);
	s->n--;
}

/* Evict by SIEVE (lib/cache's cache_evict): the key evicted. */
static uint32_t
sieve_evict(struct sieve *s)
{
	uint32_t e = s->hand != NIL ? s->hand : s->tail;

	while (s->f[e] & F_VISITED) {
		s->f[e] &= (uint8_t)~F_VISITED;
		e = s->qprev[e] != NIL ? s->qprev[e] : s->tail;
	}
	s->hand = s->qprev[e];
	sieve_unlink(s, e);
	return e;
}

/* Insert at the head; returns the key evicted for it, or NIL. */
static uint32_t
sieve_insert(struct sieve *s, uint32_t e, int visited)
{
	uint32_t v = NIL;

	if (s->n >= s->cap)
		v = sieve_evict(s);
	s->qprev[e] = NIL;
	s->qnext[e] = s->head;
	if (s->head != NIL)
		s->qprev[s->head] = e;
	else
		s->tail = e;
	s->head = e;
	s->f[e] |= F_CACHED | (visited ? F_VISITED : 0);
	s->n++;
	return v;
}

int
km_sim_sieve(const struct km_trace *t, uint64_t capacity, struct km_sim_result *r)
{
	struct sieve s;

	if (capacity == 0)
		return -EINVAL;
	if (sieve_init(&s, t->nb_keys, capacity) < 0) {
		sieve_fini(&s);
		return -ENOMEM;
	}
	memset(r, 0, sizeof(*r));
	for (size_t i = 0; i < t->nb_recs; i++) {
		const struct km_trace_rec *rec = &t->recs[i];
		uint32_t k = rec->key_id;

		if (rec->op == KM_WL_DEL) {
			if (s.f[k] & F_CACHED)
				sieve_unlink(&s, k);
			continue;
		}
		if (rec->op == KM_WL_GET) {
			r->gets++;
			if (s.f[k] & F_CACHED) {
				r->hits++;
				s.f[k] |= F_VISITED;
				continue;
			}
		}
		if (!(s.f[k] & F_CACHED))
			sieve_insert(&s, k, 0);
	}
	r->hit_ratio = r->gets > 0 ? (double)r->hits / (double)r->gets : 0;
	sieve_fini(&s);
	return 0;
}

/* ---- key bytes -> trace key id ---- */

struct keyidx {
	uint32_t *slot; /* key id + 1; 0: empty */
	uint64_t mask;
};

static int
keyidx_build(struct keyidx *x, const struct km_trace *t)
{
	uint64_t n = 16;

	while (n < 2 * (uint64_t)t->nb_keys)
		n <<= 1;
	x->mask = n - 1;
	x->slot = calloc(n, sizeof(*x->slot));
	if (x->slot == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < t->nb_keys; i++) {
		const struct km_trace_key *k = &t->keys[i];
		uint64_t h = km_predict_hash((const uint8_t *)k->key, k->len) & x->mask;

		while (x->slot[h] != 0)
			h = (h + 1) & x->mask;
		x->slot[h] = (uint32_t)i + 1;
	}
	return 0;
}

static uint32_t
keyidx_find(const struct keyidx *x, const struct km_trace *t, const uint8_t *key, uint16_t len,
	uint64_t hash)
{
	for (uint64_t h = hash & x->mask; x->slot[h] != 0; h = (h + 1) & x->mask) {
		const struct km_trace_key *k = &t->keys[x->slot[h] - 1];

		if (k->len == len && memcmp(k->key, key, len) == 0)
			return x->slot[h] - 1;
	}
	return NIL;
}

/* ---- the evaluator ---- */

struct flight {
	uint32_t key;
	uint32_t target;
	uint64_t due; /* request index of completion */
};

struct sim {
	const struct km_trace *t;
	struct km_prefsim_params p;
	struct km_prefsim_result *r;
	struct sieve c;
	struct keyidx idx;
	uint8_t *src;      /* per key: source of its prefetch */
	uint32_t *origin;  /* per key: detector stream (shard * KM_STREAM_SET + slot) that
			    * asked for it, SHARD_NONE */
	uint64_t *khash;   /* per key: km_predict_hash */
	struct flight *fl; /* FIFO ring */
	size_t fl_head, fl_n, fl_cap;
	struct km_predict *pr;
	struct km_pfsched *sch;
	struct km_stream_ctx *sctx; /* per worker */
	struct km_stream *st;       /* per shard, KM_STREAM_SET each */
	struct km_prediction pred[PRED_MAX];
	struct km_pfsched_cmd cmd[64];
};

static uint32_t
shard_of(const struct sim *s, const uint8_t *k, uint16_t len)
{
	const uint8_t *sl = memchr(k, '/', len);
	uint16_t rl = sl == NULL ? len : (uint16_t)(sl - k);

	return (uint32_t)(km_predict_hash(k, rl) % s->p.nb_shards);
}

/* What became of a prefetched entry: tell everyone who asked for it. */
static void
outcome(struct sim *s, uint32_t k, enum km_stream_outcome o)
{
	uint8_t src = s->src[k];
	uint32_t sh = s->origin[k];

	if (o != KM_STREAM_UNUSED)
		km_predict_feedback(s->pr, src, KM_PREDICT_USED);
	else
		km_predict_feedback(s->pr, src, KM_PREDICT_UNUSED);
	if (o != KM_STREAM_LATE)
		km_pfsched_outcome(s->sch, o == KM_STREAM_USED);
	else
		km_pfsched_outcome(s->sch, 1);
	if (sh != SHARD_NONE)
		km_stream_feedback(&s->sctx[sh / KM_STREAM_SET % s->p.nb_workers], &s->st[sh], o);
	if (o == KM_STREAM_USED) {
		s->r->all.used++;
		s->r->model[KM_PREDICT_SRC_MODEL(src)].used++;
	} else if (o == KM_STREAM_LATE) {
		s->r->all.late++;
		s->r->model[KM_PREDICT_SRC_MODEL(src)].late++;
	} else {
		s->r->unused++;
	}
}

/* Install k; an evicted entry still marked prefetched was unused. */
static void
install(struct sim *s, uint32_t k, int prefetched)
{
	uint32_t v = sieve_insert(&s->c, k, prefetched && s->p.insert_visited);

	if (prefetched)
		s->c.f[k] |= F_PREF;
	if (v == NIL)
		return;
	if (prefetched)
		km_pfsched_evicted(s->sch, s->khash[v]);
	if (s->c.f[v] & F_PREF) {
		s->c.f[v] &= (uint8_t)~F_PREF;
		outcome(s, v, KM_STREAM_UNUSED);
	}
}

static void
complete(struct sim *s, uint64_t now)
{
	while (s->fl_n > 0 && s->fl[s->fl_head].due <= now) {
		struct flight *f = &s->fl[s->fl_head];
		uint32_t k = f->key;
		uint8_t fl = s->c.f[k];

		s->fl_head = (s->fl_head + 1) % s->fl_cap;
		s->fl_n--;
		km_pfsched_done(s->sch, f->target);
		s->c.f[k] &= (uint8_t) ~(F_INFLIGHT | F_STALE | F_LATE);
		if (fl & F_STALE) {
			s->r->stale++;
			outcome(s, k, KM_STREAM_UNUSED);
		} else if (fl & F_CACHED) {
			outcome(s, k, KM_STREAM_UNUSED);
		} else if (fl & F_LATE) {
			install(s, k, 0); /* the waiting request's fill */
		} else {
			install(s, k, 1);
		}
	}
}

static int
flight_push(struct sim *s, uint32_t k, uint32_t target, uint64_t due)
{
	if (s->fl_n == s->fl_cap) {
		size_t cap = s->fl_cap ? 2 * s->fl_cap : 1024;
		struct flight *n = malloc(cap * sizeof(*n));

		if (n == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < s->fl_n; i++)
			n[i] = s->fl[(s->fl_head + i) % s->fl_cap];
		free(s->fl);
		s->fl = n;
		s->fl_head = 0;
		s->fl_cap = cap;
	}
	s->fl[(s->fl_head + s->fl_n) % s->fl_cap] = (struct flight){k, target, due};
	s->fl_n++;
	return 0;
}

static void
push_pred(struct sim *s, struct km_prediction *p, uint32_t origin, uint64_t now_ns)
{
	uint32_t target = shard_of(s, p->key, p->len) % s->p.nb_workers;
	uint32_t k;

	if (km_pfsched_push(s->sch, p, target, now_ns) != 1)
		return;
	k = keyidx_find(&s->idx, s->t, p->key, p->len, p->hash);
	if (k != NIL && !(s->c.f[k] & (F_CACHED | F_INFLIGHT)))
		s->origin[k] = origin;
}

static int
issue(struct sim *s, uint64_t now)
{
	unsigned n = km_pfsched_pop(s->sch, now * 1000, s->cmd, s->p.issue_max);

	for (unsigned i = 0; i < n; i++) {
		struct km_pfsched_cmd *c = &s->cmd[i];
		uint32_t k = keyidx_find(&s->idx, s->t, c->key, c->len, c->hash);
		unsigned m = KM_PREDICT_SRC_MODEL(c->src);

		if (k == NIL) {
			/* The owner's index says no such key: no read, a wrong prediction. */
			km_pfsched_done(s->sch, c->target);
			km_predict_feedback(s->pr, c->src, KM_PREDICT_ISSUED);
			km_pfsched_outcome(s->sch, 0);
			s->r->all.absent++;
			s->r->model[m].absent++;
			continue;
		}
		if (s->c.f[k] & (F_CACHED | F_INFLIGHT)) {
			km_pfsched_done(s->sch, c->target); /* the owner skips it */
			continue;
		}
		km_predict_feedback(s->pr, c->src, KM_PREDICT_ISSUED);
		s->src[k] = c->src;
		s->r->all.issued++;
		s->r->model[m].issued++;
		if (s->p.latency == 0) {
			km_pfsched_done(s->sch, c->target);
			install(s, k, 1);
			continue;
		}
		s->c.f[k] |= F_INFLIGHT;
		if (flight_push(s, k, c->target, now + s->p.latency) < 0)
			return -ENOMEM;
	}
	return 0;
}

static void
demand(struct sim *s, const struct km_trace_rec *rec, int *hit)
{
	uint32_t k = rec->key_id;
	uint8_t f = s->c.f[k];

	*hit = 0;
	if (rec->op == KM_WL_DEL) {
		if (f & F_INFLIGHT)
			s->c.f[k] |= F_STALE;
		if (f & F_CACHED) {
			sieve_unlink(&s->c, k);
			if (f & F_PREF) {
				s->c.f[k] &= (uint8_t)~F_PREF;
				outcome(s, k, KM_STREAM_UNUSED);
			}
		}
		return;
	}
	if (rec->op == KM_WL_PUT) {
		if (f & F_INFLIGHT)
			s->c.f[k] |= F_STALE;
		if (f & F_PREF) {
			s->c.f[k] &= (uint8_t)~F_PREF; /* the write replaced the prefetched value */
			outcome(s, k, KM_STREAM_UNUSED);
		}
		if (!(f & F_CACHED))
			install(s, k, 0);
		return;
	}
	s->r->gets++;
	if (f & F_CACHED) {
		*hit = 1;
		s->r->hits++;
		s->c.f[k] |= F_VISITED;
		if (f & F_PREF) {
			s->c.f[k] &= (uint8_t)~F_PREF;
			outcome(s, k, KM_STREAM_USED);
		}
		return;
	}
	if ((f & F_INFLIGHT) && !(f & F_STALE)) {
		if (!(f & F_LATE)) {
			s->c.f[k] |= F_LATE;
			outcome(s, k, KM_STREAM_LATE);
		}
		return;
	}
	km_pfsched_demand_miss(s->sch, s->khash[k]);
	install(s, k, 0);
}

static void
observe(struct sim *s, const struct km_trace_rec *rec, int hit, uint64_t now)
{
	const struct km_trace_key *tk = &s->t->keys[rec->key_id];
	const uint8_t *key = (const uint8_t *)tk->key;
	struct km_access a = {
		.key = key,
		.len = tk->len,
		.session = rec->session,
		.stream = 0,
		.op = rec->op == KM_WL_GET
			      ? KM_PREDICT_GET
			      : (rec->op == KM_WL_PUT ? KM_PREDICT_PUT : KM_PREDICT_DEL),
		.hit = (uint8_t)hit,
		.t_ns = now * 1000,
	};
	int n;

	if (rec->op == KM_WL_GET && (s->p.models & (1u << KM_PREDICT_STRIDE))) {
		uint32_t sh = shard_of(s, key, tk->len);
		struct km_stream_key ks[PRED_MAX];
		unsigned slot;
		unsigned m = km_stream_observe_set(&s->sctx[sh % s->p.nb_workers],
			&s->st[sh * KM_STREAM_SET], KM_STREAM_SET, key, tk->len, a.t_ns, &slot, ks,
			PRED_MAX);
		uint8_t src = KM_PREDICT_SRC(KM_PREDICT_STRIDE,
			km_predict_stride_bin(s->st[sh * KM_STREAM_SET + slot].run));

		for (unsigned i = 0; i < m; i++) {
			struct km_prediction *p = &s->pred[0];

			p->conf = km_predict_confidence(s->pr, src);
			p->src = src;
			p->model = KM_PREDICT_STRIDE;
			p->len = ks[i].len;
			memcpy(p->key, ks[i].key, ks[i].len);
			p->hash = km_predict_hash(p->key, p->len);
			push_pred(s, p, sh * KM_STREAM_SET + slot, a.t_ns);
		}
	}
	if ((s->p.models & ~(1u << KM_PREDICT_STRIDE)) == 0)
		return;
	n = km_predict_observe(s->pr, &a, s->pred, PRED_MAX);
	for (int i = 0; i < n; i++)
		push_pred(s, &s->pred[i], SHARD_NONE, a.t_ns);
}

static void
sim_free(struct sim *s)
{
	sieve_fini(&s->c);
	free(s->idx.slot);
	free(s->src);
	free(s->origin);
	free(s->khash);
	free(s->fl);
	free(s->sctx);
	free(s->st);
	km_predict_destroy(s->pr);
	km_pfsched_destroy(s->sch);
}

static int
sim_init(struct sim *s, const struct km_trace *t, const struct km_prefsim_params *p)
{
	struct km_predict_params pp = {0};
	struct km_pfsched_params sp = {0};
	struct km_stream_params stp = {0};

	memset(s, 0, sizeof(*s));
	s->t = t;
	s->p = *p;
	if (s->p.nb_shards == 0)
		s->p.nb_shards = 64;
	if (s->p.nb_workers == 0)
		s->p.nb_workers = 4;
	if (s->p.issue_max == 0 || s->p.issue_max > 64)
		s->p.issue_max = 16;
	if (s->p.mem_bytes == 0)
		s->p.mem_bytes = 64u << 20;
	stp.latency_ns = (uint64_t)s->p.latency * 1000;
	stp.flags = s->p.no_carry ? KM_STREAM_NO_CARRY : 0;
	pp.mem_bytes = s->p.mem_bytes;
	pp.models = s->p.models & ~(1u << KM_PREDICT_STRIDE);
	pp.stream = stp;
	sp.nb_targets = (uint16_t)s->p.nb_workers;
	sp.inflight_init = 64;
	sp.inflight_max = 1024;
	/* Virtual time runs at 1 us per request: deadlines and filter in requests. */
	sp.deadline_ns = 64000 + stp.latency_ns;
	sp.filter_ttl_ns = 256000 + 4 * stp.latency_ns;
	if (s->p.no_aimd) {
		sp.acc_lo = 0.0001f;
		sp.acc_hi = 1.0f;
		sp.harm_max = 1.0f;
	}
	if (sieve_init(&s->c, t->nb_keys, p->capacity) < 0 || keyidx_build(&s->idx, t) < 0)
		return -ENOMEM;
	s->src = calloc(t->nb_keys + 1, 1);
	s->origin = malloc((t->nb_keys + 1) * sizeof(*s->origin));
	s->khash = malloc((t->nb_keys + 1) * sizeof(*s->khash));
	s->sctx = calloc(s->p.nb_workers, sizeof(*s->sctx));
	s->st = calloc((size_t)s->p.nb_shards * KM_STREAM_SET, sizeof(*s->st));
	if (s->src == NULL || s->origin == NULL || s->khash == NULL || s->sctx == NULL ||
		s->st == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < t->nb_keys; i++) {
		s->origin[i] = SHARD_NONE;
		s->khash[i] = km_predict_hash((const uint8_t *)t->keys[i].key, t->keys[i].len);
	}
	for (uint32_t i = 0; i < s->p.nb_workers; i++)
		km_stream_ctx_init(&s->sctx[i], &stp);
	if (km_predict_create(&pp, &s->pr) < 0 || km_pfsched_create(&sp, &s->sch) < 0)
		return -ENOMEM;
	return 0;
}

int
km_prefsim_run(
	const struct km_trace *t, const struct km_prefsim_params *p, struct km_prefsim_result *r)
{
	struct km_sim_result off;
	struct km_pfsched_stats ss;
	struct sim s;
	uint64_t misses_off, misses, resolved;
	int rc, hit;

	if (p == NULL || p->capacity == 0)
		return -EINVAL;
	rc = km_sim_sieve(t, p->capacity, &off);
	if (rc < 0)
		return rc;
	memset(r, 0, sizeof(*r));
	rc = sim_init(&s, t, p);
	s.r = r;
	for (size_t i = 0; rc == 0 && i < t->nb_recs; i++) {
		complete(&s, i);
		demand(&s, &t->recs[i], &hit);
		observe(&s, &t->recs[i], hit, i);
		rc = issue(&s, i);
	}
	if (rc == 0) {
		r->hits_off = off.hits;
		r->hit_ratio_off = off.hit_ratio;
		r->hit_ratio = r->gets > 0 ? (double)r->hits / (double)r->gets : 0;
		misses_off = off.gets - off.hits;
		misses = r->gets - r->hits;
		r->avoided = misses_off > misses ? misses_off - misses : 0;
		resolved = r->all.used + r->all.late + r->unused + r->all.absent;
		r->accuracy =
			resolved > 0 ? (double)(r->all.used + r->all.late) / (double)resolved : 0;
		r->coverage = misses_off > 0 ? (double)r->avoided / (double)misses_off : 0;
		r->reads_per_avoided =
			r->avoided > 0 ? (double)r->all.issued / (double)r->avoided : 0;
		km_predict_stats(s.pr, &r->pstats);
		km_pfsched_stats(s.sch, &ss);
		r->harm = ss.harm;
		r->sched.below_threshold = ss.below_threshold;
		r->sched.filtered = ss.filtered;
		r->sched.queue_full = ss.queue_full;
		r->sched.stale = ss.stale;
		r->sched.pushed = ss.pushed;
		r->sched.threshold = ss.threshold;
		r->sched.budget = ss.budget;
	}
	sim_free(&s);
	return rc;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* not inflated by other load */
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int
km_prefsim_cost(const struct km_trace *t, const struct km_prefsim_params *p, size_t n,
	double *ns_predict, double *ns_stream)
{
	struct km_predict_params pp = {.mem_bytes = p->mem_bytes ? p->mem_bytes : 64u << 20,
		.models = p->models & ~(1u << KM_PREDICT_STRIDE)};
	struct km_prediction out[PRED_MAX];
	struct km_stream_key ks[PRED_MAX];
	struct km_stream_ctx sc;
	struct km_stream st[64];
	struct km_predict *pr;
	double t0;
	size_t i;

	n = n < t->nb_recs ? n : t->nb_recs;
	*ns_predict = 0;
	*ns_stream = 0;
	if (n == 0)
		return 0;
	if (pp.models == 0)
		pp.models = KM_PREDICT_ALL & ~(1u << KM_PREDICT_STRIDE);
	if (km_predict_create(&pp, &pr) < 0)
		return -ENOMEM;
	t0 = now_s();
	for (i = 0; i < n; i++) {
		const struct km_trace_key *k = &t->keys[t->recs[i].key_id];
		struct km_access a = {.key = (const uint8_t *)k->key,
			.len = k->len,
			.session = t->recs[i].session,
			.op = KM_PREDICT_GET,
			.t_ns = i * 1000};

		km_predict_observe(pr, &a, out, PRED_MAX);
	}
	*ns_predict = (now_s() - t0) * 1e9 / (double)n;
	km_predict_destroy(pr);
	km_stream_ctx_init(&sc, NULL);
	for (i = 0; i < 64; i++)
		km_stream_init(&st[i]);
	t0 = now_s();
	for (i = 0; i < n; i++) {
		const struct km_trace_key *k = &t->keys[t->recs[i].key_id];

		km_stream_observe(&sc, &st[t->recs[i].key_id & 63], (const uint8_t *)k->key, k->len,
			i * 1000, ks, PRED_MAX);
	}
	*ns_stream = (now_s() - t0) * 1e9 / (double)n;
	return 0;
}
