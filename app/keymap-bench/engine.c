/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * The request engine: one thread, one transport, up to 65536 requests in flight. With
 * --threads, one engine per generator lcore, each with its own transport (a queue pair and
 * source port), slots, source and results; they share the sequence below and the seconds
 * (bench_agg) only.
 *
 * A request id is (sequence << 16) | slot, the sequence counting every request of the
 * process from a random start (the engines take it a burst at a time): ids never repeat
 * within a run, nor (most likely) across runs from the same address, so a server's
 * at-most-once table never mistakes a new write for a retry. A reply whose slot is free or holds
 * another id (a late reply to a request that already timed out) is stray. memcached echoes only the
 * low 32 bits.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define SLOTS_MAX     65536u
#define SWEEP_NS      1000000ull /* look for timeouts every millisecond */
#define LATE_NS       1000000ull /* open loop: a send this much after its due time is late */
#define TICK_NS       1000000000ull
#define PRELOAD_TRIES 5

volatile int bench_stop;

static uint64_t next_seq; /* of the next request; 0: not drawn yet (atomic) */

struct slot {
	uint64_t t_ns;    /* when the request was due (open loop) or sent (closed loop) */
	uint64_t sent_ns; /* when it went out: timeouts count from here */
	uint64_t id;      /* of the request in flight */
	uint32_t key;     /* key index: preload retries resend it */
	uint32_t vlen;    /* PUT: value bytes */
	uint8_t op;
	uint8_t busy;
	uint8_t tries;
};

struct engine {
	struct bench_phase *ph;
	const struct bench_conf *c;
	struct bench_auth *auth; /* keymap: trailers and HELLO; NULL for the other targets */
	struct slot *slots;
	uint64_t id_mask; /* bits of the id the target echoes */
	uint32_t *free_ids;
	uint32_t nb_free, nslots, inflight_max;
	uint32_t hi; /* slots 0..hi-1 have been used: the sweep looks no further */
	struct bench_source src;
	uint64_t t0, next_due, nb_due; /* open loop: request nb_due is due at next_due */
	struct bench_req pend[BENCH_BURST];
	unsigned int nb_pend;
	struct bench_second sec;
	struct km_tgt_tmpl tmpl[KM_WL_DEL + 1]; /* the last request's of each op */
};

/* Is the next request due? Fills e->pend up to BENCH_BURST. @return 1 when exhausted. */
static int
fill_pending(struct engine *e, uint64_t now)
{
	const int open = e->ph->rate > 0 ||
			 (e->ph->trace != NULL && !e->ph->preload && e->c->trace_speed > 0);
	struct bench_req *p;
	unsigned int room;

	if (open)
		room = BENCH_BURST;
	else
		room = e->inflight_max - (e->nslots - e->nb_free);
	if (room > BENCH_BURST)
		room = BENCH_BURST;
	while (e->nb_pend < room && e->nb_pend < e->nb_free) {
		p = &e->pend[e->nb_pend];
		if (open && e->ph->trace == NULL) {
			if (e->next_due > now)
				return 0;
			p->due_ns = e->next_due;
		}
		if (bench_source_next(&e->src, now, p) != 0)
			return 1;
		if (open && e->ph->trace == NULL)
			e->next_due = e->t0 + (uint64_t)((double)++e->nb_due * 1e9 / e->ph->rate);
		if (open && e->ph->trace != NULL && p->due_ns > now) {
			/* Not yet due: keep it first in line. */
			e->nb_pend++;
			return 0;
		}
		if (!open)
			p->due_ns = now;
		e->nb_pend++;
	}
	return 0;
}

/*
 * The transport refused part of a burst: its ring is full now. Between two sends only the
 * server takes from the ring, so its room only grew since the previous send, and this one
 * filled it: of the requests due meanwhile, no more than this send carried could have
 * entered at their due times. The others are dropped without being built (building them
 * only to have them refused would let the server set the generator's pace).
 */
static void
skip_due(struct engine *e, uint64_t now, struct bench_result *r)
{
	uint64_t due = (uint64_t)((double)(now - e->t0) * e->ph->rate / 1e9) + 1;

	if (e->ph->trace != NULL || due <= e->nb_due)
		return;
	r->dropped += due - e->nb_due;
	e->nb_due = due;
	e->next_due = e->t0 + (uint64_t)((double)e->nb_due * 1e9 / e->ph->rate);
}

/*
 * Request p with id and key into buf: from its op's template when p has the template's
 * sizes. A workload's sizes are fixed: its template is made once; a trace's keys and values
 * vary: the template is kept for the first sizes seen and others are encoded in full.
 */
static size_t
req_build(struct engine *e, const struct bench_req *p, uint64_t id, const char *key, size_t klen,
	uint8_t *buf, size_t cap)
{
	struct km_tgt_tmpl *t = p->op <= KM_WL_DEL ? &e->tmpl[p->op] : NULL;

	if (t != NULL && (t->frame == NULL || t->klen != klen || t->vlen != p->vlen) &&
		(t->frame == NULL || e->ph->trace == NULL)) {
		km_tgt_tmpl_fini(t);
		(void)km_tgt_tmpl_init(t, e->c->target, p->op, klen, p->vlen);
	}
	if (t != NULL && t->frame != NULL && t->klen == klen && t->vlen == p->vlen)
		return km_tgt_tmpl_build(t, id, p->session, key, buf, cap);
	return km_tgt_build(
		e->c->target, p->op, id, p->session, key, klen, NULL, p->vlen, buf, cap);
}

static void
send_pending(struct engine *e, struct bench_xport *x, uint64_t now, struct bench_result *r)
{
	uint8_t *bufs[BENCH_BURST];
	size_t cap[BENCH_BURST];
	uint16_t lens[BENCH_BURST];
	char key[KM_KEY_MAX + 1];
	unsigned int n = 0, k, sent, gone, i;
	uint64_t id, seq;
	uint32_t s;
	size_t klen, len;

	/* Only what is due (a trace's next record may lie in the future). */
	while (n < e->nb_pend && e->pend[n].due_ns <= now)
		n++;
	if (n == 0)
		return;
	k = x->tx_prepare(x, n, bufs, cap);
	/* Ids of unsent requests are not reused either. */
	seq = __atomic_fetch_add(&next_seq, k, __ATOMIC_RELAXED);
	for (i = 0; i < k; i++) {
		struct bench_req *p = &e->pend[i];

		s = e->free_ids[e->nb_free - 1 - i];
		id = ((seq + i) << 16) | s;
		klen = bench_source_key(&e->src, p->key, key);
		len = req_build(e, p, id, key, klen, bufs[i], cap[i]);
		/* The cookie and key id are pre-encoded: a copy, and a MAC with a key. */
		if (e->auth != NULL)
			len = km_tgt_seal(&e->auth->seal, bufs[i], len, cap[i]);
		/* Sizes were checked against the target's limits before the run. */
		lens[i] = (uint16_t)len;
	}
	sent = k == 0 ? 0 : x->tx_send(x, k, lens);
	for (i = 0; i < sent; i++) {
		struct bench_req *p = &e->pend[i];
		struct slot *sl;

		s = e->free_ids[--e->nb_free];
		sl = &e->slots[s];
		sl->id = ((seq + i) << 16) | s;
		sl->busy = 1;
		sl->op = p->op;
		sl->key = p->key;
		sl->vlen = p->vlen;
		sl->tries = p->tries;
		sl->t_ns = p->due_ns;
		sl->sent_ns = now;
		if (s >= e->hi)
			e->hi = s + 1;
		if (p->due_ns + LATE_NS < now)
			r->late++;
		r->sent++;
		if (p->op == KM_WL_GET)
			r->gets++;
		else if (p->op == KM_WL_PUT)
			r->puts++;
		else
			r->dels++;
	}
	/* Refused by the transport: those without a buffer (k < n) were not offered. */
	if (sent < k)
		r->tx_full += k - sent;
	/* Dropped, as a server's full RX ring drops what arrives: the schedule goes on and
	 * the generator does not queue what the server cannot take. Requests without a
	 * buffer (k < n) were not refused by the transport: they wait. */
	gone = sent;
	if (e->c->drop_refused && e->ph->rate > 0 && sent < k) {
		r->dropped += k - sent;
		gone = k;
		skip_due(e, now, r);
	}
	memmove(&e->pend[0], &e->pend[gone], (e->nb_pend - gone) * sizeof(e->pend[0]));
	e->nb_pend -= gone;
}

static inline void
slot_release(struct engine *e, uint32_t s)
{
	e->slots[s].busy = 0;
	e->free_ids[e->nb_free++] = s;
}

/* --check: whether rep does not answer sl's request. A workload's keys all hold values of
 * --value-size (its preload's, its PUTs'); a trace's vary. */
static int
reply_wrong(const struct engine *e, const struct slot *sl, const struct km_tgt_reply *rep)
{
	char key[KM_KEY_MAX + 1];
	size_t klen = bench_source_key(&e->src, sl->key, key);
	size_t vlen = sl->op == KM_WL_PUT ? sl->vlen : e->ph->trace == NULL ? e->c->value_size : 0;

	return km_tgt_check(e->c->target, rep, sl->op, key, klen, vlen) != 0;
}

static void
receive(struct engine *e, struct bench_xport *x, uint64_t now, struct bench_result *r)
{
	const uint8_t *bufs[BENCH_BURST];
	uint16_t lens[BENCH_BURST];
	struct km_tgt_reply rep;
	unsigned int n, i;
	struct slot *sl;
	uint32_t s;
	uint64_t lat, lat_sent;
	unsigned int b;

	n = x->rx(x, BENCH_BURST, bufs, lens);
	for (i = 0; i < n; i++) {
		if (km_tgt_parse(e->c->target, bufs[i], lens[i], &rep) != 0) {
			if (e->auth == NULL || !bench_hello_reply(e->auth, bufs[i], lens[i]))
				r->stray++;
			continue;
		}
		s = rep.req_id & 0xffff;
		if (s >= e->nslots || !e->slots[s].busy ||
			((e->slots[s].id ^ rep.req_id) & e->id_mask) != 0) {
			r->stray++;
			continue;
		}
		sl = &e->slots[s];
		if (e->c->check && reply_wrong(e, sl, &rep))
			r->bad++;
		/* In a closed loop the two latencies are usually one (a request is due when it is
		 * sent, unless it waited for a buffer): bucketed once then. */
		lat = now > sl->t_ns ? now - sl->t_ns : 0;
		lat_sent = now > sl->sent_ns ? now - sl->sent_ns : 0;
		b = km_hist_bucket_of(lat);
		km_hist_add_at(&r->lat, b, lat);
		km_hist_add_at(&e->sec.lat, b, lat);
		km_hist_add_at(
			&r->lat_sent, lat_sent == lat ? b : km_hist_bucket_of(lat_sent), lat_sent);
		r->replies++;
		e->sec.replies++;
		switch (rep.result) {
		case KM_TGT_R_HIT:
			if (sl->op == KM_WL_GET)
				r->hits++;
			break;
		case KM_TGT_R_MISS:
			/* A DEL of an absent key is answered NOT_FOUND too: only GETs miss. */
			if (sl->op == KM_WL_GET)
				r->misses++;
			break;
		case KM_TGT_R_STORED:
			break;
		default:
			r->errors++;
			if (e->c->target == KM_TGT_KEYMAP && rep.status == KM_ST_BUSY)
				r->busy++;
			/* The server no longer takes our cookie (it restarted, or its
			 * secrets turned over): get another one. */
			if (rep.deny == KM_DENY_COOKIE && e->auth != NULL)
				bench_hello_refused(e->auth, now);
			break;
		}
		slot_release(e, s);
	}
}

/* Requests older than the timeout are given up (preload: sent again, a few times). */
static void
sweep(struct engine *e, uint64_t now, struct bench_result *r)
{
	const uint64_t tmo = e->c->timeout_us * 1000;
	uint32_t s;

	/* Free slots are taken lowest first: the busy ones sit below hi. */
	for (s = 0; s < e->hi; s++) {
		struct slot *sl = &e->slots[s];

		if (!sl->busy || now - sl->sent_ns < tmo)
			continue;
		r->timeouts++;
		e->sec.timeouts++;
		if (e->ph->preload && sl->tries + 1 < PRELOAD_TRIES) {
			e->src.retry[e->src.nb_retry] = sl->key;
			e->src.retry_tries[e->src.nb_retry] = (uint8_t)(sl->tries + 1);
			e->src.nb_retry++;
		} else if (e->ph->preload) {
			r->failed++;
		}
		slot_release(e, s);
	}
}

/* CPU time of the calling thread (ns). */
static uint64_t
thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int
bench_engine_run(struct bench_xport *x, struct bench_phase *ph, struct bench_result *r)
{
	const struct bench_conf *c = ph->conf;
	struct engine e = {.ph = ph, .c = c, .auth = ph->auth};
	uint64_t now, end, next_sweep, next_tick, drain_end, last_reply = 0, replies, cpu0;
	int exhausted = 0, open = ph->rate > 0;
	uint32_t s;

	memset(r, 0, sizeof(*r));
	km_hist_init(&r->lat);
	km_hist_init(&r->lat_sent);
	km_hist_init(&e.sec.lat);
	e.id_mask = c->target == KM_TGT_MEMCACHED ? UINT32_MAX : UINT64_MAX;
	if (__atomic_load_n(&next_seq, __ATOMIC_RELAXED) == 0) {
		struct timespec ts;
		uint64_t zero = 0, seq;

		clock_gettime(CLOCK_REALTIME, &ts);
		seq = (((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
			       ((uint64_t)getpid() << 12)) &
			      ((1ull << 40) - 1)) |
		      1;
		/* The first engine to start draws it. */
		__atomic_compare_exchange_n(
			&next_seq, &zero, seq, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	}
	/* Open loop: as many slots as a timeout's worth of requests could need. */
	e.inflight_max = c->inflight;
	e.nslots = c->inflight;
	if (open || (ph->trace != NULL && !ph->preload && c->trace_speed > 0))
		e.nslots = SLOTS_MAX;
	if (e.nslots > SLOTS_MAX)
		e.nslots = SLOTS_MAX;
	if (open)
		e.inflight_max = e.nslots;
	e.slots = calloc(e.nslots, sizeof(*e.slots));
	e.free_ids = calloc(e.nslots, sizeof(*e.free_ids));
	if (e.slots == NULL || e.free_ids == NULL || bench_source_init(&e.src, ph, e.nslots) != 0) {
		free(e.slots);
		free(e.free_ids);
		if (ph->agg != NULL)
			bench_agg_leave(ph->agg, ph->part, 0);
		return -ENOMEM;
	}
	/* Lowest slots on top of the stack: few slots in use stay in few cache lines. */
	for (s = 0; s < e.nslots; s++)
		e.free_ids[s] = e.nslots - 1 - s;
	e.nb_free = e.nslots;

	cpu0 = thread_cpu_ns();
	now = bench_now_ns();
	e.t0 = now;
	e.src.t0 = now;
	e.next_due = now;
	end = now + (uint64_t)(ph->duration_s * 1e9);
	next_sweep = now + SWEEP_NS;
	next_tick = now + TICK_NS;
	while (!bench_stop) {
		now = bench_now_ns();
		/* A key that failed every try already fails the preload: stop there. */
		if (now >= end || (ph->preload && r->failed > 0))
			break;
		replies = r->replies;
		receive(&e, x, now, r);
		if (r->replies != replies)
			last_reply = now;
		if (!exhausted)
			exhausted = fill_pending(&e, now);
		if (e.nb_pend > 0)
			send_pending(&e, x, now, r);
		else if (exhausted && e.nb_free == e.nslots && e.src.nb_retry == 0)
			break;
		if (now >= next_sweep) {
			sweep(&e, now, r);
			if (e.auth != NULL)
				bench_hello_tick(x, e.auth, now);
			/* Preload retries refill the source. */
			if (exhausted && e.src.nb_retry > 0)
				exhausted = 0;
			next_sweep = now + SWEEP_NS;
		}
		if (now >= next_tick) {
			bench_second_close(ph, &e.sec, (double)(now - e.t0) / 1e9);
			next_tick += TICK_NS;
		}
	}
	/* Wait for the replies still in flight, at most one timeout. */
	drain_end = bench_now_ns() + c->timeout_us * 1000;
	while (e.nb_free < e.nslots && !bench_stop) {
		now = bench_now_ns();
		if (now >= drain_end)
			break;
		replies = r->replies;
		receive(&e, x, now, r);
		if (r->replies != replies)
			last_reply = now;
	}
	/* Open loop: requests that fell due but never went out. */
	if (open && !bench_stop) {
		uint64_t stop_ns = end < now ? end : now;

		r->unsent = e.nb_pend;
		if (stop_ns > e.next_due)
			r->unsent += (uint64_t)((double)(stop_ns - e.next_due) * ph->rate / 1e9);
	}
	for (s = 0; s < e.nslots; s++)
		if (e.slots[s].busy) {
			r->timeouts++;
			e.sec.timeouts++;
			if (ph->preload)
				r->failed++;
		}
	if (ph->preload)
		r->failed += e.src.nb_retry + e.nb_pend + bench_source_left(&e.src);
	if (e.sec.replies > 0 || e.sec.timeouts > 0)
		bench_second_close(ph, &e.sec, (double)(bench_now_ns() - e.t0) / 1e9);
	if (ph->agg != NULL)
		bench_agg_leave(ph->agg, ph->part, e.sec.idx);
	r->elapsed_s = (double)((last_reply > e.t0 ? last_reply : bench_now_ns()) - e.t0) / 1e9;
	now = bench_now_ns();
	r->cpu_share = now > e.t0 ? (double)(thread_cpu_ns() - cpu0) / (double)(now - e.t0) : 0;
	free(e.slots);
	free(e.free_ids);
	for (s = 0; s <= KM_WL_DEL; s++)
		km_tgt_tmpl_fini(&e.tmpl[s]);
	bench_source_fini(&e.src);
	return 0;
}
