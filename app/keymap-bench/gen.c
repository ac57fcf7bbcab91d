/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * --threads: a phase on several generator lcores, one engine each (engine.c), each on its
 * own queue pair and source port (xport_eth.c), with its own workload generator, cookie,
 * slots and results. What they share: the request sequence (engine.c) and the seconds of
 * the phase, merged here, so the progress lines, the CSV and the JSON show the whole
 * generator. Their results are added up at the end.
 *
 * The seconds: engine i's k-th second is merged into slot k of a ring; second k is
 * closed for the phase (progress line, ph->ticks) once every engine still running at k
 * closed it. An engine that stops (its share of the preload done, -n reached) says at
 * which second it stopped, so the others do not wait for it. An engine more than
 * AGG_RING seconds ahead of the slowest (one descheduled for a minute) closes the oldest
 * seconds with what they have.
 */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <rte_launch.h>
#include <rte_lcore.h>

#include "bench.h"

#define AGG_RING 64

struct agg_sec {
	struct bench_second s;
	double t_s;
	unsigned int closed; /* engines that merged their second into this one */
};

struct bench_agg {
	pthread_mutex_t lock;
	struct bench_phase *ph; /* where the merged seconds go */
	unsigned int engines;
	size_t next;                  /* the first second not closed for the phase */
	size_t stop[BENCH_GEN_MAX];   /* engine i closed seconds 0..stop[i]-1 only */
	struct agg_sec sec[AGG_RING]; /* second k in sec[k % AGG_RING] */
};

/* Engines that close second k. */
static unsigned int
agg_expected(const struct bench_agg *a, size_t k)
{
	unsigned int i, n = 0;

	for (i = 0; i < a->engines; i++)
		n += a->stop[i] > k;
	return n;
}

/* Close second a->next for the phase, whatever it holds. */
static void
agg_emit(struct bench_agg *a)
{
	struct agg_sec *m = &a->sec[a->next % AGG_RING];

	m->s.idx = a->next;
	bench_second_emit(a->ph, &m->s, m->t_s);
	km_hist_init(&m->s.lat);
	m->s.replies = 0;
	m->s.timeouts = 0;
	m->t_s = 0;
	m->closed = 0;
	a->next++;
}

/* Close every second all its engines closed (the lock held). */
static void
agg_drain(struct bench_agg *a)
{
	unsigned int want;

	for (;;) {
		want = agg_expected(a, a->next);
		if (want == 0 || a->sec[a->next % AGG_RING].closed < want)
			break;
		agg_emit(a);
	}
}

void
bench_agg_close(struct bench_agg *a, const struct bench_second *s, double t_s)
{
	struct agg_sec *m;
	size_t k = s->idx;

	pthread_mutex_lock(&a->lock);
	while (k >= a->next + AGG_RING)
		agg_emit(a);
	/* A second already closed (this engine was far behind): into the oldest open one. */
	if (k < a->next)
		k = a->next;
	m = &a->sec[k % AGG_RING];
	km_hist_merge(&m->s.lat, &s->lat);
	m->s.replies += s->replies;
	m->s.timeouts += s->timeouts;
	if (t_s > m->t_s)
		m->t_s = t_s;
	m->closed++;
	agg_drain(a);
	pthread_mutex_unlock(&a->lock);
}

void
bench_agg_leave(struct bench_agg *a, unsigned int engine, size_t seconds)
{
	pthread_mutex_lock(&a->lock);
	a->stop[engine] = seconds;
	agg_drain(a);
	pthread_mutex_unlock(&a->lock);
}

struct gen_job {
	struct bench_xport *x;
	struct bench_conf c; /* its share of the window */
	struct bench_phase ph;
	struct bench_result r;
	unsigned int *running; /* engines not done yet (atomic) */
	int rc;
};

static int
gen_main(void *arg)
{
	struct gen_job *j = arg;
	const uint8_t *bufs[BENCH_BURST];
	uint16_t lens[BENCH_BURST];

	j->rc = bench_engine_run(j->x, &j->ph, &j->r);
	__atomic_fetch_sub(j->running, 1, __ATOMIC_RELEASE);
	/* The others' replies may still arrive on this queue: pass them on until they are
	 * done (what comes for this engine now is late, and dropped). */
	while (__atomic_load_n(j->running, __ATOMIC_ACQUIRE) > 0)
		(void)j->x->rx(j->x, BENCH_BURST, bufs, lens);
	return 0;
}

/* Add src's counts to dst (the engines' results of one phase). */
static void
result_add(struct bench_result *dst, const struct bench_result *src)
{
	dst->sent += src->sent;
	dst->replies += src->replies;
	dst->gets += src->gets;
	dst->hits += src->hits;
	dst->misses += src->misses;
	dst->puts += src->puts;
	dst->dels += src->dels;
	dst->errors += src->errors;
	dst->busy += src->busy;
	dst->timeouts += src->timeouts;
	dst->stray += src->stray;
	dst->bad += src->bad;
	dst->tx_full += src->tx_full;
	dst->dropped += src->dropped;
	dst->late += src->late;
	dst->failed += src->failed;
	dst->unsent += src->unsent;
	if (src->elapsed_s > dst->elapsed_s)
		dst->elapsed_s = src->elapsed_s;
	dst->cpu_share += src->cpu_share; /* divided by the engines at the end */
	km_hist_merge(&dst->lat, &src->lat);
	km_hist_merge(&dst->lat_sent, &src->lat_sent);
}

int
bench_gens_run(const struct bench_gen *gens, unsigned int n, struct bench_phase *ph,
	struct bench_result *r)
{
	unsigned int lcores[BENCH_GEN_MAX], i = 1, lcore, running;
	struct bench_agg *agg;
	struct gen_job *jobs;
	int rc = 0;

	if (n <= 1)
		return bench_engine_run(gens[0].x, ph, r);
	/* -n or a window smaller than the engines: no share for some (and -n 0 is no bound). */
	if (ph->max_requests != 0 && ph->max_requests < n)
		n = (unsigned int)ph->max_requests;
	if (ph->conf->inflight < n)
		n = ph->conf->inflight;
	RTE_LCORE_FOREACH_WORKER(lcore)
	{
		if (i == n)
			break;
		lcores[i++] = lcore;
	}
	if (i < n)
		return -EINVAL; /* checked before the run: an lcore per engine */
	jobs = calloc(n, sizeof(*jobs));
	agg = calloc(1, sizeof(*agg));
	if (jobs == NULL || agg == NULL) {
		free(jobs);
		free(agg);
		return -ENOMEM;
	}
	pthread_mutex_init(&agg->lock, NULL);
	agg->ph = ph;
	agg->engines = n;
	for (i = 0; i < AGG_RING; i++)
		km_hist_init(&agg->sec[i].s.lat);
	running = n;
	for (i = 0; i < n; i++) {
		struct gen_job *j = &jobs[i];

		agg->stop[i] = SIZE_MAX;
		j->x = gens[i].x;
		j->c = *ph->conf;
		j->c.inflight = ph->conf->inflight / n + (i < ph->conf->inflight % n);
		j->ph = *ph;
		j->ph.conf = &j->c;
		j->ph.auth = ph->auth != NULL ? gens[i].auth : NULL;
		j->ph.wl = ph->wl != NULL ? gens[i].wl : NULL;
		j->ph.rate = ph->rate / n;
		if (ph->max_requests != 0)
			j->ph.max_requests = ph->max_requests / n + (i < ph->max_requests % n);
		j->ph.part = i;
		j->ph.parts = n;
		j->ph.progress = 0;
		j->ph.ticks = NULL;
		j->ph.nb_ticks = 0;
		j->ph.cap_ticks = 0;
		j->ph.agg = agg;
		j->running = &running;
	}
	for (i = 1; i < n; i++)
		if (rte_eal_remote_launch(gen_main, &jobs[i], lcores[i]) != 0) {
			/* Busy with something else: cannot happen in keymap-bench. */
			jobs[i].rc = -EBUSY;
			bench_agg_leave(agg, i, 0);
			__atomic_fetch_sub(&running, 1, __ATOMIC_RELEASE);
			lcores[i] = RTE_MAX_LCORE;
		}
	gen_main(&jobs[0]);
	for (i = 1; i < n; i++)
		if (lcores[i] != RTE_MAX_LCORE)
			rte_eal_wait_lcore(lcores[i]);
	memset(r, 0, sizeof(*r));
	km_hist_init(&r->lat);
	km_hist_init(&r->lat_sent);
	for (i = 0; i < n; i++) {
		if (jobs[i].rc != 0)
			rc = jobs[i].rc;
		else
			result_add(r, &jobs[i].r);
	}
	r->cpu_share /= n;
	pthread_mutex_destroy(&agg->lock);
	free(agg);
	free(jobs);
	return rc;
}
