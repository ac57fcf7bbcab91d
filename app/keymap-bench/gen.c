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
 * seconds with what they have; the laggard's seconds then land in later ones, shifted
 * (the totals, kept by the engines, stay exact).
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

/* What one lcore does: a phase's share, or the HELLO of its source port. */
struct gen_job {
	struct bench_xport *x;
	int (*fn)(struct gen_job *j); /* NULL: nothing (an empty share) */
	struct bench_conf c;          /* its share of the window */
	struct bench_phase ph;
	struct bench_result r;
	struct bench_auth *auth;     /* HELLO */
	const struct bench_conf *hc; /* HELLO: the run's (the cookie keeps it) */
	char err[256];               /* HELLO */
	unsigned int *running;       /* jobs not done yet (atomic) */
	int rc;
};

static int
gen_main(void *arg)
{
	struct gen_job *j = arg;
	const uint8_t *bufs[BENCH_BURST];
	uint16_t lens[BENCH_BURST];

	j->rc = j->fn != NULL ? j->fn(j) : 0;
	__atomic_fetch_sub(j->running, 1, __ATOMIC_RELEASE);
	/* The others' replies may still arrive on this queue: pass them on until they are
	 * done (what comes for this queue now is late, and dropped). */
	while (__atomic_load_n(j->running, __ATOMIC_ACQUIRE) > 0)
		(void)j->x->rx(j->x, BENCH_BURST, bufs, lens);
	return 0;
}

/* Run jobs[i] on the i-th lcore (0: this main lcore), every queue polled until all are
 * done. @return 0, or -EINVAL: fewer lcores than jobs (checked before the run). */
static int
gens_launch(struct gen_job *jobs, unsigned int n)
{
	unsigned int lcores[BENCH_GEN_MAX], i = 1, lcore, running = n;

	RTE_LCORE_FOREACH_WORKER(lcore)
	{
		if (i == n)
			break;
		lcores[i++] = lcore;
	}
	if (i < n)
		return -EINVAL;
	for (i = 0; i < n; i++)
		jobs[i].running = &running;
	for (i = 1; i < n; i++)
		if (rte_eal_remote_launch(gen_main, &jobs[i], lcores[i]) != 0) {
			/* Busy with something else: cannot happen in keymap-bench. */
			jobs[i].fn = NULL;
			jobs[i].rc = -EBUSY;
			if (jobs[i].ph.agg != NULL)
				bench_agg_leave(jobs[i].ph.agg, i, 0);
			__atomic_fetch_sub(&running, 1, __ATOMIC_RELEASE);
			lcores[i] = RTE_MAX_LCORE;
		}
	gen_main(&jobs[0]);
	for (i = 1; i < n; i++)
		if (lcores[i] != RTE_MAX_LCORE)
			rte_eal_wait_lcore(lcores[i]);
	return 0;
}

static int
job_phase(struct gen_job *j)
{
	return bench_engine_run(j->x, &j->ph, &j->r);
}

static int
job_hello(struct gen_job *j)
{
	return bench_hello_start(j->x, j->hc, j->auth, j->err, sizeof(j->err));
}

int
bench_gens_hello(const struct bench_gen *gens, unsigned int n, const struct bench_conf *c,
	char *err, size_t errlen)
{
	struct gen_job *jobs;
	unsigned int i;
	int rc;

	if (n <= 1)
		return bench_hello_start(gens[0].x, c, gens[0].auth, err, errlen);
	jobs = calloc(n, sizeof(*jobs));
	if (jobs == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < n; i++) {
		jobs[i].x = gens[i].x;
		jobs[i].fn = job_hello;
		jobs[i].hc = c;
		jobs[i].auth = gens[i].auth;
	}
	rc = gens_launch(jobs, n);
	if (rc != 0)
		snprintf(err, errlen, "fewer EAL lcores than --threads");
	for (i = 0; rc == 0 && i < n; i++)
		if (jobs[i].rc != 0) {
			snprintf(err, errlen, "%s", jobs[i].err);
			rc = -1;
		}
	free(jobs);
	return rc == 0 ? 0 : -1;
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
	dst->cpu_share += src->cpu_share; /* the mean of the engines: divided at the end */
	km_hist_merge(&dst->lat, &src->lat);
	km_hist_merge(&dst->lat_sent, &src->lat_sent);
}

int
bench_gens_run(const struct bench_gen *gens, unsigned int n, struct bench_phase *ph,
	struct bench_result *r)
{
	const int closed = ph->rate <= 0;
	struct bench_agg *agg;
	struct gen_job *jobs;
	unsigned int i, ran = 0, active = n;
	int rc = 0;

	if (n <= 1)
		return bench_engine_run(gens[0].x, ph, r);
	jobs = calloc(n, sizeof(*jobs));
	agg = calloc(1, sizeof(*agg));
	if (jobs == NULL || agg == NULL) {
		free(jobs);
		free(agg);
		return -ENOMEM;
	}
	/* The shares go to the lowest engines first: with -c or -n below --threads, the
	 * others have no request to send and only pass the others' replies on. */
	if (closed && ph->conf->inflight < active)
		active = ph->conf->inflight;
	if (ph->max_requests != 0 && ph->max_requests < active)
		active = (unsigned int)ph->max_requests;
	pthread_mutex_init(&agg->lock, NULL);
	agg->ph = ph;
	agg->engines = n;
	for (i = 0; i < AGG_RING; i++)
		km_hist_init(&agg->sec[i].s.lat);
	for (i = 0; i < n; i++) {
		struct gen_job *j = &jobs[i];

		agg->stop[i] = SIZE_MAX;
		j->x = gens[i].x;
		j->fn = job_phase;
		j->c = *ph->conf;
		j->ph = *ph;
		j->ph.conf = &j->c;
		j->ph.auth = ph->auth != NULL ? gens[i].auth : NULL;
		j->ph.wl = ph->wl != NULL ? gens[i].wl : NULL;
		j->ph.rate = ph->rate / active;
		j->ph.part = i;
		j->ph.parts = active;
		j->ph.progress = 0;
		j->ph.ticks = NULL;
		j->ph.nb_ticks = 0;
		j->ph.cap_ticks = 0;
		j->ph.agg = agg;
		if (closed)
			j->c.inflight =
				ph->conf->inflight / active + (i < ph->conf->inflight % active);
		if (ph->max_requests != 0)
			j->ph.max_requests =
				ph->max_requests / active + (i < ph->max_requests % active);
		if (i >= active) {
			j->fn = NULL;
			agg->stop[i] = 0;
		}
	}
	rc = gens_launch(jobs, n);
	memset(r, 0, sizeof(*r));
	km_hist_init(&r->lat);
	km_hist_init(&r->lat_sent);
	for (i = 0; rc == 0 && i < n; i++) {
		if (jobs[i].rc != 0) {
			rc = jobs[i].rc;
		} else if (jobs[i].fn != NULL) {
			result_add(r, &jobs[i].r);
			ran++;
		}
	}
	if (ran > 0)
		r->cpu_share /= ran;
	pthread_mutex_destroy(&agg->lock);
	free(agg);
	free(jobs);
	return rc;
}
