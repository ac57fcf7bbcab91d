/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Predictive prefetch on the control lcore: the predictor and the scheduler of lib/predict
 * fed by the workers' notes (see prefetch.h).
 */

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <rte_cycles.h>

#include <urcu-qsbr.h>

#include <km_proc.h>
#include <km_shardmap.h>

#include "control.h"
#include "keymapd.h"
#include "mailbox.h"
#include "prefetch.h"

#define PREDICT_MAX     8                      /* predictions per sampled access */
#define POP_MAX         32                     /* commands sent per tick */
#define WINDOW_MAX      (KM_CTL_RING_SIZE / 2) /* commands in flight per worker, at most */
#define ADAPT_NS        100000000ULL           /* sampling is reconsidered every 100 ms */
#define QUIET_PERIODS   10                     /* ... and relaxed after 1 s without drops */
#define SAMPLING_MAX    1024
#define WATERMARK_NS    1000000ULL /* a refusing worker is tried again after 1 ms */
#define BUSY_HI         0.5        /* a worker busier than this samples fewer clients */
#define BUSY_LO         0.25       /* ... and below this, more again (after a quiet second) */
#define PF_LCORE_NAP_NS 50000      /* the predictor's own lcore sleeps this long when idle */

static struct {
	struct km_predict *pr;
	struct km_pfsched *sched;
	struct km_conf conf; /* the [prefetch] section it was configured with */
	int active;
	uint32_t models;   /* conf models: STRIDE = the workers' stream detectors */
	uint32_t sampling; /* now */
	uint32_t seq;
	double ns_per_tsc;
	uint64_t adapt_ns;
	uint64_t drops_seen; /* ctl_drops + notes_dropped of all workers at adapt_ns */
	uint64_t adapt_tsc;
	uint64_t busy_seen[KM_WORKERS_MAX];  /* each worker's busy_cycles at adapt_tsc */
	uint64_t refused_ns[KM_WORKERS_MAX]; /* when the worker last refused (0: it takes) */
	uint32_t quiet;
	uint64_t sent_to[KM_WORKERS_MAX]; /* commands sent to each worker (it counts the applied) */
	uint8_t tune_due[KM_WORKERS_MAX]; /* the worker's ring was full: tune it again */
	struct km_pf_stats st;
} pf;

/* Between the thread that drains w_to_ctl and the control lcore (see prefetch.h). */
static pthread_mutex_t pf_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t
now_ns(void)
{
	return (uint64_t)((double)rte_rdtsc() * pf.ns_per_tsc);
}

/* The workers' part: sampling, stream detector, budget, watermark; to all workers, or
 * to those whose ring was full last time (retried every tick until each took it). */
static void
tune_workers(int all)
{
	const struct km_conf *c = &pf.conf;
	struct km_cmsg m = {.type = KM_CMSG_PREFETCH_TUNE};
	uint16_t i;

	m.u.pf = (struct km_proc_pf_params){
		.sample_every = pf.active && (pf.models & ~(1u << KM_PREDICT_STRIDE)) != 0
					? pf.sampling
					: 0,
		.stream = (uint8_t)(pf.active && (pf.models & (1u << KM_PREDICT_STRIDE)) != 0),
		.inflight_max = (uint32_t)c->pf_budget,
		.watermark = (uint32_t)(c->pending_max * c->pf_watermark / 100),
	};
	if (m.u.pf.watermark == 0)
		m.u.pf.watermark = 1;
	for (i = 0; i < km_dp.nb_workers && i < KM_WORKERS_MAX; i++)
		if (pf.tune_due[i] != 0 || all)
			pf.tune_due[i] = km_mailbox_send(i, &m) != 0;
}

/* (Re)create the predictor (if predictor) and the scheduler (if sched) from c; on
 * failure nothing changes. A new predictor learns from scratch. */
static int
build(const struct km_conf *c, int predictor, int sched)
{
	struct km_predict_params pp = {
		.mem_bytes = c->pf_memory,
		/* Sequential and stride: on the owner worker, where the stream is seen. */
		.models = pf.models & ~(1u << KM_PREDICT_STRIDE),
	};
	float thr = (float)c->pf_threshold / 100.0f;
	/* In flight here: commands a worker has not answered yet (it answers once it started
	 * the read or refused it; its own budget counts the reads). The answer takes a loop
	 * iteration of each side: room for a few times the reads the worker allows, and for
	 * the other commands on the worker's ring. */
	uint64_t window = c->pf_budget * 4 < WINDOW_MAX ? c->pf_budget * 4 : WINDOW_MAX;
	struct km_pfsched_params sp = {
		.nb_targets = km_dp.nb_workers,
		.inflight_max = (uint16_t)window,
		.inflight_init = (uint16_t)(c->pf_budget < window ? c->pf_budget : window),
		/* The worker's budget and watermark keep demand reads first; AIMD here only
		 * trims the window, it cannot close it. */
		.inflight_min = (uint16_t)(c->pf_budget / 4 == 0       ? 1
					   : c->pf_budget / 4 < window ? c->pf_budget / 4
								       : window),
		.bytes_per_s = c->pf_bytes_per_s,
		.threshold = thr,
		.thr_min = thr < 0.1f ? thr : 0.1f,
		.thr_max = thr > 0.5f ? thr : 0.5f,
	};
	struct km_predict *pr = NULL;
	struct km_pfsched *s = NULL;
	int rc;

	if (pp.models == 0)
		pp.models = 1u << KM_PREDICT_SUCC; /* kept idle: nothing is sampled */
	rc = predictor ? km_predict_create(&pp, &pr) : 0;
	if (rc == 0 && sched)
		rc = km_pfsched_create(&sp, &s);
	if (rc < 0) {
		km_predict_destroy(pr);
		return rc;
	}
	if (predictor) {
		km_predict_destroy(pf.pr);
		pf.pr = pr;
	}
	if (sched) {
		km_pfsched_destroy(pf.sched);
		pf.sched = s;
	}
	return 0;
}

static int
pf_configure(const struct km_conf *c)
{
	/* Only what a change parameterizes starts over: the models rebuild the predictor
	 * (what it learned is lost), threshold, budget and bytes/s the scheduler. */
	int predictor = pf.pr == NULL || strcmp(c->pf_models, pf.conf.pf_models) != 0;
	int sched = pf.sched == NULL || c->pf_threshold != pf.conf.pf_threshold ||
		    c->pf_budget != pf.conf.pf_budget ||
		    c->pf_bytes_per_s != pf.conf.pf_bytes_per_s;
	uint32_t models = 0, old = pf.models;
	int rc;

	if (km_predict_models_parse(c->pf_models, &models) < 0)
		return -EINVAL;
	pf.models = models;
	if (predictor || sched) {
		rc = build(c, predictor, sched);
		if (rc < 0) {
			pf.models = old;
			return rc;
		}
	}
	if (c->pf_sampling != pf.conf.pf_sampling || pf.sampling == 0)
		pf.sampling = (uint32_t)c->pf_sampling;
	pf.conf = *c;
	pf.active =
		c->pf_enable && models != 0 && km_store_driver(c->store_driver)->read_start != NULL;
	tune_workers(1);
	return 0;
}

int
km_pf_init(const struct km_conf *c)
{
	memset(&pf, 0, sizeof(pf));
	pf.ns_per_tsc = 1e9 / (double)rte_get_tsc_hz();
	return km_pf_configure(c);
}

int
km_pf_configure(const struct km_conf *c)
{
	int rc;

	pthread_mutex_lock(&pf_lock);
	rc = pf_configure(c);
	pthread_mutex_unlock(&pf_lock);
	return rc;
}

void
km_pf_fini(void)
{
	km_predict_destroy(pf.pr);
	km_pfsched_destroy(pf.sched);
	pf.pr = NULL;
	pf.sched = NULL;
}

/* Offer p to the scheduler, for the worker that owns its key now. */
static void
push(const struct km_prediction *p, uint64_t t)
{
	struct km_shardmap_route rt;

	/* The control lcore writes the map; the predictor's lcore reads it under QSBR. */
	if (km_shardmap_route(rcu_dereference(km_map_current), p->key, p->len, &rt) == 0)
		km_pfsched_push(pf.sched, p, rt.owner, t);
}

static uint8_t
predict_op(uint8_t op)
{
	switch (op) {
	case KM_OP_PUT:
	case KM_OP_CAS:
		return KM_PREDICT_PUT;
	case KM_OP_DEL:
		return KM_PREDICT_DEL;
	default:
		return KM_PREDICT_GET;
	}
}

static void
on_sample(const struct km_proc_note *n)
{
	struct km_prediction out[PREDICT_MAX];
	struct km_access a = {
		.key = n->key,
		.len = n->key_len,
		.session = n->session,
		.stream = n->src,
		.op = predict_op(n->op),
		.hit = n->what == KM_PROC_ACC_HIT || n->what == KM_PROC_ACC_PREFETCH_HIT,
		.t_ns = n->t_ns,
	};
	uint64_t t = now_ns();
	int i, nb;

	pf.st.samples++;
	if (n->what == KM_PROC_ACC_MISS)
		km_pfsched_demand_miss(pf.sched, km_predict_hash(n->key, n->key_len));
	nb = km_predict_observe(pf.pr, &a, out, PREDICT_MAX);
	for (i = 0; i < nb; i++)
		push(&out[i], t);
}

static void
on_outcome(const struct km_proc_note *n)
{
	uint8_t src = (uint8_t)(n->mark - 1);

	pf.st.outcomes++;
	if (n->mark == 0 || n->mark > KM_PREDICT_NB_SRC)
		return;
	if (n->what == KM_PROC_PF_HARM) {
		/* The miss itself is counted by its sample, if sampled. */
		pf.st.harm++;
		km_pfsched_harm(pf.sched);
		return;
	}
	switch (n->what) {
	case KM_PROC_PF_USED:
	case KM_PROC_PF_LATE: /* the prediction was right, the read not early enough */
		if (n->what == KM_PROC_PF_LATE)
			pf.st.late++;
		else
			pf.st.used++;
		km_predict_feedback(pf.pr, src, KM_PREDICT_USED);
		km_pfsched_outcome(pf.sched, 1);
		break;
	case KM_PROC_PF_UNUSED:
		pf.st.unused++;
		km_predict_feedback(pf.pr, src, KM_PREDICT_UNUSED);
		km_pfsched_outcome(pf.sched, 0);
		break;
	default:
		break;
	}
}

/* A key a worker's stream detector wants, owned by another worker: a sure prediction. */
static void
on_forward(const struct km_proc_note *n)
{
	struct km_prediction p = {
		.conf = 1.0f,
		.model = KM_PREDICT_STRIDE,
		.src = KM_PREDICT_SRC(KM_PREDICT_STRIDE, n->mark % KM_PREDICT_BINS),
		.len = n->key_len,
	};

	pf.st.forwarded++;
	memcpy(p.key, n->key, n->key_len);
	p.hash = km_predict_hash(p.key, p.len);
	push(&p, now_ns());
}

static void
pf_receive(const struct km_wmsg *m)
{
	if (pf.pr == NULL)
		return;
	if (m->type == KM_WMSG_DONE) {
		const struct km_completion *d = &m->u.done;

		/* In flight is counted apart (pf_tick): completions may be lost. -EBUSY: the worker
		 * is at its budget or at its pending watermark: its prefetches are dropped until
		 * it takes one again, or for WATERMARK_NS (nothing is sent meanwhile, so nothing
		 * else would tell). */
		km_pfsched_watermark(pf.sched, m->worker, d->rc == -EBUSY);
		if (m->worker < KM_WORKERS_MAX)
			pf.refused_ns[m->worker] = d->rc == -EBUSY ? now_ns() : 0;
		if (d->rc > 0) {
			pf.st.started++;
			km_predict_feedback(pf.pr, (uint8_t)(d->mark - 1), KM_PREDICT_ISSUED);
		} else if (d->rc == 0) {
			pf.st.nothing++;
		} else if (d->rc == -ENOENT) {
			pf.st.absent++;
		} else {
			pf.st.refused++;
		}
		return;
	}
	if (m->u.note.key_len > KM_KEY_MAX)
		return;
	switch (m->u.note.type) {
	case KM_PROC_NOTE_SAMPLE:
		on_sample(&m->u.note);
		break;
	case KM_PROC_NOTE_OUTCOME:
		on_outcome(&m->u.note);
		break;
	case KM_PROC_NOTE_FORWARD:
		on_forward(&m->u.note);
		break;
	default:
		break;
	}
}

/*
 * Sample fewer clients while workers drop notes or are busy (the load they carry is worth
 * more than the predictions); more again, back towards [prefetch] sampling, after a quiet
 * second.
 */
static void
adapt_sampling(uint64_t t)
{
	uint64_t drops = 0, tsc = rte_rdtsc(), busy;
	double share, share_max = 0;
	uint32_t want = pf.sampling;
	uint16_t i;

	if (t - pf.adapt_ns < ADAPT_NS)
		return;
	pf.adapt_ns = t;
	for (i = 0; i < km_dp.nb_workers; i++) {
		drops += km_dp.workers[i].cnt.ctl_drops +
			 km_proc_counters(km_dp.workers[i].proc)->notes_dropped;
		busy = km_dp.workers[i].cnt.busy_cycles;
		share = pf.adapt_tsc == 0 || tsc <= pf.adapt_tsc
				? 0
				: (double)(busy - pf.busy_seen[i]) / (double)(tsc - pf.adapt_tsc);
		share_max = share > share_max ? share : share_max;
		pf.busy_seen[i] = busy;
	}
	pf.adapt_tsc = tsc;
	pf.st.busy_share = share_max;
	if (drops > pf.drops_seen || share_max > BUSY_HI) {
		pf.quiet = 0;
		if (pf.sampling < SAMPLING_MAX)
			want = pf.sampling * 2;
	} else if (share_max < BUSY_LO && ++pf.quiet >= QUIET_PERIODS &&
		   pf.sampling > pf.conf.pf_sampling) {
		pf.quiet = 0;
		want = pf.sampling / 2;
	}
	pf.drops_seen = drops;
	if (want == pf.sampling)
		return;
	if (want > pf.sampling)
		pf.st.sampling_up++;
	else
		pf.st.sampling_down++;
	pf.sampling = want;
	tune_workers(1);
}

static int
pf_tick(void)
{
	struct km_pfsched_cmd cmd[POP_MAX];
	struct km_cmsg m = {.type = KM_CMSG_PREFETCH};
	unsigned int i, n;
	uint64_t t;

	tune_workers(0);
	if (!pf.active || pf.pr == NULL)
		return 0;
	t = now_ns();
	for (i = 0; i < km_dp.nb_workers && i < KM_WORKERS_MAX; i++) {
		if (pf.refused_ns[i] != 0 && t - pf.refused_ns[i] > WATERMARK_NS) {
			pf.refused_ns[i] = 0;
			km_pfsched_watermark(pf.sched, i, 0);
		}
		/* Sent minus applied: the worker counts before it answers, so this never
		 * undercounts; it reads the counter one update late at worst. */
		km_pfsched_inflight(
			pf.sched, i, (uint32_t)(pf.sent_to[i] - km_dp.workers[i].cnt.pf_commands));
	}
	n = km_pfsched_pop(pf.sched, t, cmd, POP_MAX);
	for (i = 0; i < n; i++) {
		m.key_len = cmd[i].len;
		m.seq = ++pf.seq;
		m.mark = (uint8_t)(cmd[i].src + 1);
		memcpy(m.u.key, cmd[i].key, cmd[i].len);
		if (km_mailbox_send((uint16_t)cmd[i].target, &m) == 0) {
			pf.st.sent++;
			pf.sent_to[cmd[i].target]++;
		} else {
			km_pfsched_done(pf.sched, cmd[i].target); /* never sent: not in flight */
		}
	}
	adapt_sampling(t);
	return 1;
}

static void
pf_stats(struct km_pf_stats *st)
{
	const struct km_proc_counters *pc;
	const struct km_cache_counters *cc;
	unsigned int s, m;
	uint64_t demand = 0;
	uint16_t i;

	*st = pf.st;
	st->active = pf.active;
	st->models = pf.models;
	st->sampling = pf.sampling;
	if (pf.sched != NULL)
		km_pfsched_stats(pf.sched, &st->sched);
	if (pf.pr != NULL) {
		km_predict_stats(pf.pr, &st->pred);
		for (s = 0; s < KM_PREDICT_NB_SRC; s++) {
			m = KM_PREDICT_SRC_MODEL(s);
			st->model[m].issued += st->pred.issued[s];
			st->model[m].used += st->pred.used[s];
		}
		for (m = 0; m < KM_PREDICT_NB_MODELS; m++) {
			double best = 0;

			for (s = 0; s < KM_PREDICT_BINS; s++) {
				double c = km_predict_confidence(pf.pr, KM_PREDICT_SRC(m, s));

				best = c > best ? c : best;
			}
			st->model[m].precision = best;
		}
	}
	for (i = 0; i < km_dp.nb_workers; i++) {
		pc = km_proc_counters(km_dp.workers[i].proc);
		cc = km_proc_cache_counters(km_dp.workers[i].proc);
		st->w_issued += pc->prefetch_issued;
		st->w_late += pc->prefetch_coalesced;
		st->w_refused += pc->prefetch_refused;
		st->w_harm += pc->prefetch_harm;
		st->w_stream += pc->stream_prefetches;
		st->w_stream_fwd += pc->stream_forwarded;
		st->w_samples += pc->samples;
		st->w_notes_dropped += pc->notes_dropped;
		st->w_disk_reads += pc->disk_reads;
		if (cc != NULL) {
			st->w_used += cc->prefetched_used;
			st->w_unused += cc->prefetched_evicted_unused;
		}
	}
	/* Reads for requests: every store read but the prefetches. */
	demand = st->w_disk_reads > st->w_issued ? st->w_disk_reads - st->w_issued : 0;
	st->accuracy = st->w_used + st->w_unused == 0
			       ? 0
			       : (double)st->w_used / (double)(st->w_used + st->w_unused);
	st->coverage =
		st->w_used + demand == 0 ? 0 : (double)st->w_used / (double)(st->w_used + demand);
}

void
km_pf_receive(const struct km_wmsg *m)
{
	pthread_mutex_lock(&pf_lock);
	pf_receive(m);
	pthread_mutex_unlock(&pf_lock);
}

int
km_pf_tick(void)
{
	int active;

	pthread_mutex_lock(&pf_lock);
	active = pf_tick();
	pthread_mutex_unlock(&pf_lock);
	return active;
}

void
km_pf_stats(struct km_pf_stats *st)
{
	pthread_mutex_lock(&pf_lock);
	pf_stats(st);
	pthread_mutex_unlock(&pf_lock);
}

unsigned int
km_pf_top(struct km_predict_transition *out, unsigned int max)
{
	unsigned int n;

	pthread_mutex_lock(&pf_lock);
	n = pf.pr == NULL ? 0 : km_predict_top(pf.pr, out, max);
	pthread_mutex_unlock(&pf_lock);
	return n;
}

int
km_pf_lcore_main(void *arg)
{
	struct timespec nap = {.tv_sec = 0, .tv_nsec = PF_LCORE_NAP_NS};
	unsigned int n;

	(void)arg;
	rcu_register_thread();
	while (!atomic_load_explicit(&km_dp.stop, memory_order_relaxed)) {
		/* Nothing of the previous iteration is referenced: old maps may go. */
		rcu_quiescent_state();
		n = km_mailbox_drain();
		km_pf_tick();
		if (n != 0)
			continue;
		/* Nothing flows: offline while asleep, so grace periods never wait. */
		rcu_thread_offline();
		nanosleep(&nap, NULL);
		rcu_thread_online();
	}
	rcu_thread_offline();
	rcu_unregister_thread();
	return 0;
}
