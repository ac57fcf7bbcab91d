/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * The control lcore's mailboxes: requests of other threads (km_ctl_call), commands to the
 * workers on their ctl_to_w rings (by value, or a handshake for attach, detach and info),
 * and what the workers send back on w_to_ctl.
 */

#define KM_LOG_COMP KM_LOG_CONTROL /* keymapd.h */

#include <errno.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "control.h"
#include "crew.h"
#include "datapath.h"
#include "keymapd.h"
#include "mailbox.h"
#include "prefetch.h"

#define CTL_RING_SIZE 64

enum ctl_req_state { REQ_PENDING, REQ_RUNNING, REQ_DONE, REQ_ABANDONED };

struct ctl_req {
	int (*fn)(void *arg);
	void *arg;
	int rc;
	atomic_int state; /* enum ctl_req_state */
	atomic_int refs;  /* caller + control lcore: the last one frees */
	sem_t done;
};

static struct rte_ring *ctl_ring; /* callers (MP) -> control lcore (SC) */
static uint32_t ctl_seq;          /* number of the last prefetch sent (control lcore) */
static sem_t ctl_wake;            /* posted with every request: the loop wakes at once */

static void
ctl_req_put(struct ctl_req *r)
{
	if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1) {
		sem_destroy(&r->done);
		free(r);
	}
}

static void
deadline_after(struct timespec *ts, unsigned int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

int
km_ctl_call(int (*fn)(void *arg), void *arg, unsigned int timeout_ms)
{
	struct ctl_req *r;
	struct timespec ts;
	int expected = REQ_PENDING, rc;

	if (ctl_ring == NULL || atomic_load_explicit(&km_dp.stop, memory_order_relaxed))
		return -ESHUTDOWN;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->fn = fn;
	r->arg = arg;
	atomic_init(&r->state, REQ_PENDING);
	atomic_init(&r->refs, 2);
	sem_init(&r->done, 0, 0);
	if (rte_ring_mp_enqueue(ctl_ring, r) != 0) {
		sem_destroy(&r->done);
		free(r);
		return -EBUSY;
	}
	sem_post(&ctl_wake);
	deadline_after(&ts, timeout_ms);
	while ((rc = sem_clockwait(&r->done, CLOCK_MONOTONIC, &ts)) != 0 && errno == EINTR)
		;
	if (rc != 0) {
		/* Not started yet: abandon it, the control lcore will skip it. Started: it
		 * uses arg until it is done, so wait for the end. */
		if (atomic_compare_exchange_strong(&r->state, &expected, REQ_ABANDONED)) {
			ctl_req_put(r);
			return -ETIMEDOUT;
		}
		while (sem_wait(&r->done) != 0 && errno == EINTR)
			;
	}
	rc = r->rc;
	ctl_req_put(r);
	return rc;
}

/* Run (or, when stopping, refuse) every queued request. */
void
km_mailbox_serve(int refuse)
{
	struct ctl_req *r;
	int expected;

	while (rte_ring_sc_dequeue(ctl_ring, (void **)&r) == 0) {
		expected = REQ_PENDING;
		if (!atomic_compare_exchange_strong(&r->state, &expected, REQ_RUNNING)) {
			ctl_req_put(r); /* abandoned by its caller */
			continue;
		}
		r->rc = refuse ? -ESHUTDOWN : r->fn(r->arg);
		if (!refuse)
			km_ctl.cnt.commands++;
		atomic_store(&r->state, REQ_DONE);
		sem_post(&r->done);
		ctl_req_put(r);
	}
}

/* ---- Commands to workers ---------------------------------------------------------- */

/* Queue c on worker w's ctl_to_w ring. @return 0 or -EBUSY (ring full). */
int
km_mailbox_post(uint16_t w, struct km_wcmd *c)
{
	struct km_cmsg m = {.type = KM_CMSG_SYNC, .u.sync = c};

	atomic_init(&c->state, KM_WCMD_PENDING);
	return rte_ring_mp_enqueue_elem(km_dp.workers[w].ctl_to_w, &m, sizeof(m)) == 0 ? 0 : -EBUSY;
}

/* Queue a by-value command on worker w's ctl_to_w ring; a full ring drops it (counted).
 * @return 0 or -EAGAIN. */
int
km_mailbox_send(uint16_t w, const struct km_cmsg *m)
{
	if (rte_ring_mp_enqueue_elem(km_dp.workers[w].ctl_to_w, (void *)(uintptr_t)m, sizeof(*m)) ==
		0)
		return 0;
	/* Two senders when the predictor has an lcore of its own. */
	__atomic_fetch_add(&km_ctl.cnt.cmd_drops, 1, __ATOMIC_RELAXED);
	return -EAGAIN;
}

/*
 * Wait until the worker applied c. @return c->rc, or -ETIMEDOUT: the worker did not claim
 * it in time (or keymapd is stopping) and never will: c is abandoned, the worker frees it.
 */
int
km_mailbox_wait(struct km_wcmd *c)
{
	uint64_t hz = rte_get_timer_hz(),
		 end = rte_get_timer_cycles() + hz * KM_WCMD_TIMEOUT_MS / 1000;
	unsigned int nap = 10;
	int expected;

	for (;;) {
		if (atomic_load_explicit(&c->state, memory_order_acquire) == KM_WCMD_DONE)
			return c->rc;
		if (rte_get_timer_cycles() > end ||
			atomic_load_explicit(&km_dp.stop, memory_order_relaxed)) {
			expected = KM_WCMD_PENDING;
			if (atomic_compare_exchange_strong(&c->state, &expected, KM_WCMD_ABANDONED))
				return -ETIMEDOUT;
			/* Claimed: it completes shortly, wait for it. But the second half of a
			 * move waits on another worker, which may have stopped: left to
			 * km_mailbox_fini() then. */
			if (c->op == KM_WCMD_MOVE &&
				atomic_load_explicit(&km_dp.stop, memory_order_relaxed))
				return -ETIMEDOUT;
		}
		/* A worker answers within one loop iteration (or one wake-up from its idle
		 * sleep): short naps first, then longer ones, so that a busy host is not
		 * flooded with wake-ups. */
		rte_delay_us_sleep(nap);
		if (nap < 500)
			nap *= 2;
	}
}

struct km_mailbox_timing km_mailbox_last;

/* Microseconds from TSC a to b (0 if b is not after a: stamps of two CPUs). */
static uint64_t
tsc_us(uint64_t a, uint64_t b)
{
	return b > a ? (b - a) * 1000000 / rte_get_tsc_hz() : 0;
}

/* One command, start to end. */
int
km_mailbox_run(uint16_t w, struct km_wcmd *c)
{
	uint64_t t0 = rte_rdtsc();
	int rc = km_mailbox_post(w, c);

	if (rc == 0)
		rc = km_mailbox_wait(c);
	km_mailbox_last = (struct km_mailbox_timing){0};
	if (rc != -ETIMEDOUT && rc != -EBUSY) { /* c was applied: its stamps are set */
		uint64_t done = c->claim_tsc + c->run_tsc;

		km_mailbox_last.queued_us = tsc_us(t0, c->claim_tsc);
		km_mailbox_last.run_us = tsc_us(0, c->run_tsc);
		if (c->op == KM_WCMD_MOVE && c->in_claim_tsc != 0) {
			km_mailbox_last.in_queued_us = tsc_us(done, c->in_claim_tsc);
			km_mailbox_last.in_run_us = tsc_us(0, c->in_run_tsc);
			done = c->in_claim_tsc + c->in_run_tsc;
		}
		km_mailbox_last.seen_us = tsc_us(done, rte_rdtsc());
	}
	if (rc == -ETIMEDOUT)
		KM_LOG(ERR, "worker %u did not take a command within %u ms: not applied", w,
			KM_WCMD_TIMEOUT_MS);
	return rc;
}

struct km_wcmd *
km_mailbox_cmd_new(enum km_wcmd_op op, uint64_t shard_id)
{
	struct km_wcmd *c = calloc(1, sizeof(*c));

	if (c != NULL) {
		c->op = op;
		c->shard_id = shard_id;
	}
	return c;
}

void
km_mailbox_cmd_free(struct km_wcmd *c, int rc)
{
	if (rc != -ETIMEDOUT)
		free(c);
}

int
km_mailbox_detach(uint16_t w, uint64_t id, struct km_store **store, struct km_proc_dedup **dedup)
{
	struct km_wcmd *c = km_mailbox_cmd_new(KM_WCMD_DETACH, id);
	int rc;

	if (c == NULL)
		return -ENOMEM;
	rc = km_mailbox_run(w, c);
	if (rc == 0) {
		*store = c->store;
		*dedup = c->dedup;
	}
	km_mailbox_cmd_free(c, rc);
	return rc;
}

/* A command about export x (the worker takes its own reference when it starts one). */
static int
xp_cmd(uint16_t w, int op, struct km_proc_export *x)
{
	struct km_wcmd *c = km_mailbox_cmd_new(op, 0);
	int rc;

	if (c == NULL)
		return -ENOMEM;
	c->xp = x;
	rc = km_mailbox_run(w, c);
	km_mailbox_cmd_free(c, rc);
	return rc;
}

int
km_mailbox_export_start(uint16_t w, struct km_proc_export *x)
{
	return xp_cmd(w, KM_WCMD_EXPORT_START, x);
}

int
km_mailbox_export_cancel(uint16_t w)
{
	struct km_wcmd *c = km_mailbox_cmd_new(KM_WCMD_EXPORT_CANCEL, 0);
	int rc;

	if (c == NULL)
		return -ENOMEM;
	rc = km_mailbox_run(w, c);
	km_mailbox_cmd_free(c, rc);
	return rc;
}

int
km_mailbox_repl_start(uint16_t w, struct km_proc_export *x)
{
	return xp_cmd(w, KM_WCMD_REPL_START, x);
}

int
km_mailbox_repl_stop(uint16_t w, struct km_proc_export *x)
{
	return xp_cmd(w, KM_WCMD_REPL_STOP, x);
}

int
km_mailbox_repl_block(uint16_t w, uint64_t id, uint64_t tag, int blocked)
{
	struct km_wcmd *c = km_mailbox_cmd_new(KM_WCMD_REPL_BLOCK, id);
	int rc;

	if (c == NULL)
		return -ENOMEM;
	c->floor = tag;
	c->kind = (uint8_t)(blocked != 0);
	rc = km_mailbox_run(w, c);
	km_mailbox_cmd_free(c, rc);
	return rc;
}

int
km_mailbox_attach(
	uint16_t w, uint64_t id, struct km_store *store, struct km_proc_dedup **dedup, int same)
{
	struct km_wcmd *c = km_mailbox_cmd_new(KM_WCMD_ATTACH, id);
	int rc;

	if (c == NULL)
		return -ENOMEM;
	c->store = store;
	c->dedup = *dedup;
	c->same_store = (uint8_t)same;
	rc = km_mailbox_run(w, c);
	if (rc == 0)
		*dedup = NULL; /* the worker's now */
	km_mailbox_cmd_free(c, rc);
	return rc;
}

int
km_mailbox_move(uint16_t from, uint16_t to, uint64_t id, uint32_t epoch, struct km_store **store,
	struct km_proc_dedup **dedup, uint64_t *keys, uint32_t *nb_dedup)
{
	struct km_wcmd *c = km_mailbox_cmd_new(KM_WCMD_MOVE, id);
	int rc;

	*store = NULL;
	*dedup = NULL;
	if (c == NULL)
		return -ENOMEM;
	c->to = to;
	c->epoch = epoch;
	rc = km_mailbox_run(from, c);
	if (rc < 0 && rc != -ETIMEDOUT) {
		/* Detached but attached nowhere (the new owner refused it, or the old one
		 * could neither queue nor keep it): the caller's. NULL: nothing detached. */
		*store = c->store;
		*dedup = c->dedup;
	}
	*keys = rc == 0 ? c->keys : 0;
	*nb_dedup = rc == 0 ? c->n : 0;
	km_mailbox_cmd_free(c, rc);
	return rc;
}

int
km_ctl_prefetch(const uint8_t *key, uint16_t len)
{
	const struct km_shardmap *m = km_map_current;
	struct km_cmsg c = {
		.type = KM_CMSG_PREFETCH, .key_len = len, .mark = KM_PROC_MARK_OPERATOR};
	struct km_shardmap_route rt;
	int rc;

	if (len == 0 || len > KM_KEY_MAX)
		return -EINVAL;
	memcpy(c.u.key, key, len);
	c.seq = ++ctl_seq;
	rc = km_shardmap_route(m, key, len, &rt);
	if (rc == 0)
		rc = km_mailbox_send(rt.owner, &c);
	if (rc == 0)
		km_ctl.cnt.prefetches++;
	return rc;
}

/* What a worker sends back: notes and the completions of the predictor's prefetches go
 * to it (prefetch.c); an operator's prefetch is counted here. */
static int
ctl_receive(const struct km_wmsg *m)
{
	if (km_crew_receive(m))
		return 1; /* hot-key replication's notes and completions */
	switch (m->type) {
	case KM_WMSG_NOTE:
		if (m->u.note.type == KM_PROC_NOTE_SAMPLE)
			km_ctl.cnt.samples++;
		km_pf_receive(m);
		return 1;
	case KM_WMSG_DONE:
		if (m->u.done.cmd != KM_CMSG_PREFETCH)
			break;
		if (m->u.done.mark != KM_PROC_MARK_OPERATOR) {
			km_pf_receive(m);
			return 1;
		}
		if (m->u.done.rc > 0)
			km_ctl.cnt.prefetch_started++;
		else if (m->u.done.rc == 0)
			km_ctl.cnt.prefetch_nothing++;
		else
			km_ctl.cnt.prefetch_refused++;
		break;
	default:
		break;
	}
	return 0;
}

unsigned int
km_mailbox_drain(void)
{
	struct km_wmsg m[16];
	unsigned int n, k, pf = 0;
	uint16_t i;

	for (i = 0; i < km_dp.nb_workers; i++)
		while ((n = rte_ring_sc_dequeue_burst_elem(
				km_dp.workers[i].w_to_ctl, m, sizeof(m[0]), RTE_DIM(m), NULL)) != 0)
			for (k = 0; k < n; k++)
				pf += (unsigned int)ctl_receive(&m[k]);
	return pf;
}

int
km_mailbox_init(void)
{
	char name[RTE_RING_NAMESIZE];
	struct km_worker *w;
	uint16_t i;
	int socket;

	if (sem_init(&ctl_wake, 0, 0) != 0)
		return -errno;
	ctl_ring = rte_ring_create("km_ctl", CTL_RING_SIZE, (int)rte_socket_id(), RING_F_SC_DEQ);
	if (ctl_ring == NULL)
		return -rte_errno;
	for (i = 0; i < km_dp.nb_workers; i++) {
		w = &km_dp.workers[i];
		socket = (int)rte_lcore_to_socket_id(w->lcore);
		snprintf(name, sizeof(name), "km_ctl_to_w%u", i);
		w->ctl_to_w = rte_ring_create_elem(
			name, sizeof(struct km_cmsg), KM_CTL_RING_SIZE, socket, RING_F_SC_DEQ);
		snprintf(name, sizeof(name), "km_w%u_to_ctl", i);
		w->w_to_ctl = rte_ring_create_elem(name, sizeof(struct km_wmsg), KM_CTL_RING_SIZE,
			socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
		if (w->ctl_to_w == NULL || w->w_to_ctl == NULL)
			return -rte_errno;
	}
	return 0;
}

void
km_mailbox_fini(void)
{
	struct km_worker *w;
	struct km_cmsg m;
	uint16_t i;

	/* The request ring stays: a telemetry thread may still be about to post (it then
	 * times out or sees the stop flag). */
	if (ctl_ring != NULL)
		km_mailbox_serve(1);
	/* The workers have stopped. Handshakes left in ctl_to_w were abandoned by the control
	 * lcore (it gives up when keymapd stops): never claimed, they are freed here. */
	for (i = 0; km_dp.workers != NULL && i < km_dp.nb_workers; i++) {
		w = &km_dp.workers[i];
		while (w->ctl_to_w != NULL &&
			rte_ring_sc_dequeue_elem(w->ctl_to_w, &m, sizeof(m)) == 0) {
			if (m.type == KM_CMSG_MOVE_IN) {
				/* A move's second half that no worker took: its shard goes. */
				km_proc_dedup_free(m.u.sync->dedup);
				km_store_destroy(m.u.sync->store);
			}
			if (m.type == KM_CMSG_SYNC || m.type == KM_CMSG_MOVE_IN)
				free(m.u.sync);
		}
		rte_ring_free(w->ctl_to_w);
		rte_ring_free(w->w_to_ctl);
		w->ctl_to_w = NULL;
		w->w_to_ctl = NULL;
	}
}

void
km_mailbox_sleep(unsigned int us)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += us / 1000000;
	ts.tv_nsec += (long)(us % 1000000) * 1000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	sem_clockwait(&ctl_wake, CLOCK_MONOTONIC, &ts);
}

void
km_ctl_wake(void)
{
	sem_post(&ctl_wake);
}
