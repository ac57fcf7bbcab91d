/* SPDX-License-Identifier: BSD-3-Clause */

#include <errno.h>
#include <inttypes.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <rte_malloc.h>
#include <rte_lcore.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include <urcu-qsbr.h>

#include "control.h"
#include "datapath.h"
#include "keymapd.h"

void
km_control_publish_map(struct km_shardmap *map)
{
	struct km_shardmap *old = km_map_current;

	/* Release: workers that see the new pointer see the map's contents. */
	rcu_assign_pointer(km_map_current, map);
	if (old == NULL)
		return;
	/* Waits only for online workers to pass a quiescent state; sleeping workers are
	 * offline. The control lcore blocks here, never a worker. */
	synchronize_rcu();
	km_shardmap_free(old);
}

static void
print_row(FILE *f, const char *name, const uint64_t *per, uint16_t n)
{
	uint64_t total = 0;
	uint16_t i;

	for (i = 0; i < n; i++)
		total += per[i];
	fprintf(f, "%-16s %14" PRIu64, name, total);
	if (n > 1)
		for (i = 0; i < n; i++)
			fprintf(f, " %12" PRIu64, per[i]);
	fputc('\n', f);
}

void
km_control_print_interval(FILE *f, struct km_interval *prev, double secs)
{
	uint64_t reqs = 0, cycles = 0, r, c;
	uint16_t i;

	/* Counters are plain words each worker updates alone: a read may be one update old. */
	for (i = 0; i < km_dp.nb_workers; i++) {
		reqs += km_worker_requests(&km_dp.workers[i]);
		cycles += km_dp.workers[i].cnt.busy_cycles;
	}
	r = reqs - prev->requests;
	c = cycles - prev->busy_cycles;
	fprintf(f, "interval %.1f s: requests %" PRIu64 " (%.0f/s) cycles_per_req %" PRIu64 "\n",
		secs, r, secs > 0 ? (double)r / secs : 0.0, r == 0 ? 0 : c / r);
	fflush(f);
	prev->requests = reqs;
	prev->busy_cycles = cycles;
}

void
km_control_print_stats(FILE *f, int workers_stopped)
{
	uint16_t n = km_dp.nb_workers, i;
	uint64_t per[KM_WORKERS_MAX] = {0}, reqs[KM_WORKERS_MAX] = {0}, cyc[KM_WORKERS_MAX] = {0};
	struct km_store_stats st;
	size_t c;

	fprintf(f, "%-16s %14s", "counter", "total");
	if (n > 1)
		for (i = 0; i < n; i++)
			fprintf(f, " %11s%u", "w", i);
	fputc('\n', f);
	for (c = 0; c < sizeof(struct km_worker_counters) / sizeof(uint64_t); c++) {
		for (i = 0; i < n; i++)
			per[i] = ((const uint64_t *)&km_dp.workers[i].cnt)[c];
		print_row(f, km_worker_counter_names[c], per, n);
	}
	for (c = 0; c < KM_PROC_NB_COUNTERS; c++) {
		for (i = 0; i < n; i++)
			per[i] = ((const uint64_t *)km_proc_counters(km_dp.workers[i].proc))[c];
		print_row(f, km_proc_counter_names[c], per, n);
	}
	/* Cost per request as the workers saw it: busy cycles / requests handled. */
	for (i = 0; i < n; i++) {
		reqs[i] = km_worker_requests(&km_dp.workers[i]);
		cyc[i] = reqs[i] == 0 ? 0 : km_dp.workers[i].cnt.busy_cycles / reqs[i];
	}
	print_row(f, "requests", reqs, n);
	fprintf(f, "%-16s", "cycles_per_req");
	for (i = 0; i < n; i++)
		fprintf(f, " %12" PRIu64, cyc[i]);
	fputc('\n', f);
	/* Stores belong to their workers: walk them only once the workers have stopped.
	 * Counters above are plain 64-bit words the workers update, safe to read. */
	for (i = 0; workers_stopped && i < n; i++) {
		km_proc_store_stats(km_dp.workers[i].proc, &st);
		fprintf(f,
			"store w%u: shards %u keys %" PRIu64 " key+value bytes %" PRIu64
			" index bytes %" PRIu64 " entry overhead bytes %" PRIu64 "\n",
			i, km_proc_nb_shards(km_dp.workers[i].proc), st.keys, st.value_bytes,
			st.index_bytes, st.entry_overhead_bytes);
	}
	fflush(f);
}

/* ---- Requests from other threads (telemetry, metrics) ---------------------------- */

struct km_ctl_state km_ctl;

#define CTL_RING_SIZE   64
#define WCMD_TIMEOUT_MS 2000 /* a worker applies commands every loop iteration */
#define RATE_DECAY      0.5  /* weight of the newest sample in a shard's rate */

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
static uint32_t ctl_seq;          /* number of the last command sent (control lcore) */
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
static void
ctl_serve(int refuse)
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
static int
wcmd_post(uint16_t w, struct km_wcmd *c)
{
	struct km_cmsg m = {.type = KM_CMSG_SYNC, .u.sync = c};

	atomic_init(&c->state, KM_WCMD_PENDING);
	return rte_ring_sp_enqueue_elem(km_dp.workers[w].ctl_to_w, &m, sizeof(m)) == 0 ? 0 : -EBUSY;
}

/* Queue a by-value command on worker w's ctl_to_w ring; a full ring drops it (counted).
 * @return 0 or -EAGAIN. */
static int
cmsg_send(uint16_t w, const struct km_cmsg *m)
{
	if (rte_ring_sp_enqueue_elem(km_dp.workers[w].ctl_to_w, (void *)(uintptr_t)m, sizeof(*m)) ==
		0)
		return 0;
	km_ctl.cnt.cmd_drops++;
	return -EAGAIN;
}

/*
 * Wait until the worker applied c. @return c->rc, or -ETIMEDOUT: the worker did not claim
 * it in time (or keymapd is stopping) and never will: c is abandoned, the worker frees it.
 */
static int
wcmd_wait(struct km_wcmd *c)
{
	uint64_t hz = rte_get_timer_hz(),
		 end = rte_get_timer_cycles() + hz * WCMD_TIMEOUT_MS / 1000;
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
			/* Claimed: it completes shortly, wait for it. */
		}
		/* A worker answers within one loop iteration (or one wake-up from its idle
		 * sleep): short naps first, then longer ones, so that a busy host is not
		 * flooded with wake-ups. */
		rte_delay_us_sleep(nap);
		if (nap < 500)
			nap *= 2;
	}
}

/* One command, start to end. */
static int
wcmd_run(uint16_t w, struct km_wcmd *c)
{
	int rc = wcmd_post(w, c);

	if (rc == 0)
		rc = wcmd_wait(c);
	if (rc == -ETIMEDOUT)
		KM_LOG(ERR, "worker %u did not take a command within %u ms: not applied", w,
			WCMD_TIMEOUT_MS);
	return rc;
}

static struct km_wcmd *
wcmd_new(enum km_wcmd_op op, uint64_t shard_id)
{
	struct km_wcmd *c = calloc(1, sizeof(*c));

	if (c != NULL) {
		c->op = op;
		c->shard_id = shard_id;
	}
	return c;
}

/* Free a command after wcmd_run/wcmd_wait returned rc (an abandoned one is the worker's). */
static void
wcmd_free(struct km_wcmd *c, int rc)
{
	if (rc != -ETIMEDOUT)
		free(c);
}

/* Detach shard id from worker w. @return 0 and *store, or -errno. */
static int
shard_detach(uint16_t w, uint64_t id, struct km_store **store)
{
	struct km_wcmd *c = wcmd_new(KM_WCMD_DETACH, id);
	int rc;

	if (c == NULL)
		return -ENOMEM;
	rc = wcmd_run(w, c);
	if (rc == 0)
		*store = c->store;
	wcmd_free(c, rc);
	return rc;
}

/* Attach store to worker w as shard id. On error the store stays the caller's. */
static int
shard_attach(uint16_t w, uint64_t id, struct km_store *store)
{
	struct km_wcmd *c = wcmd_new(KM_WCMD_ATTACH, id);
	int rc;

	if (c == NULL)
		return -ENOMEM;
	c->store = store;
	rc = wcmd_run(w, c);
	wcmd_free(c, rc);
	return rc;
}

/* ---- Re-sharding ---------------------------------------------------------------------- */

static uint64_t
usec_since(uint64_t t0)
{
	return (rte_get_timer_cycles() - t0) * 1000000 / rte_get_timer_hz();
}

static int refuse(char *err, size_t errlen, int rc, const char *fmt, ...) __rte_format_printf(4, 5);

static int
refuse(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (rc != -ENOENT && rc != -EINVAL)
		km_ctl.cnt.reshard_failures++;
	return rc;
}

/* Publish nm and note the pause that started at t0. */
static void
reshard_publish(struct km_shardmap *nm, uint64_t t0)
{
	km_control_publish_map(nm);
	km_ctl.last_pause_us = usec_since(t0);
}

int
km_ctl_prefetch(const uint8_t *key, uint16_t len)
{
	const struct km_shardmap *m = km_map_current;
	struct km_cmsg c = {.type = KM_CMSG_PREFETCH, .key_len = len};
	int rc;

	if (len == 0 || len > KM_KEY_MAX)
		return -EINVAL;
	memcpy(c.u.key, key, len);
	c.seq = ++ctl_seq;
	rc = cmsg_send(km_shardmap_lookup(m, km_shardmap_hash(m, key, len))->owner, &c);
	if (rc == 0)
		km_ctl.cnt.prefetches++;
	return rc;
}

/* A store replaced by a re-sharding: its files go too (a persistent driver). */
static void
store_discard(struct km_store *s)
{
	if (s == NULL)
		return;
	if (s->ops->unlink != NULL)
		s->ops->unlink(s);
	else
		km_store_destroy(s);
}

/* Make a staged store durable and put its files in place (persistent drivers). */
static int
store_commit(struct km_store *s)
{
	return s->ops->commit != NULL ? s->ops->commit(s) : 0;
}

static uint64_t
store_version_last(struct km_store *s)
{
	struct km_store_stats st;

	km_store_stats(s, &st);
	return st.version_last;
}

int
km_ctl_split(uint64_t id, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *sh = km_shardmap_find(m, id);
	struct km_store *src = NULL, *lo = NULL, *hi = NULL;
	struct km_shardmap *nm = NULL;
	uint16_t olo, ohi, owner;
	uint64_t t0, vbase;
	int64_t copied;
	int rc;

	if (sh == NULL)
		return refuse(
			err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id, m->epoch);
	owner = sh->owner;
	rc = km_shardmap_split(m, id, &nm);
	if (rc == -ERANGE)
		return refuse(err, errlen, -EINVAL, "shard %" PRIu64 " is at the depth limit (%u)",
			id, KM_SHARD_DEPTH_MAX);
	if (rc < 0)
		return refuse(err, errlen, rc, "cannot build the new map: %s", strerror(-rc));
	olo = km_shardmap_find(nm, id * 2)->owner;
	ohi = km_shardmap_find(nm, id * 2 + 1)->owner;

	t0 = rte_get_timer_cycles();
	rc = shard_detach(owner, id, &src);
	if (rc < 0) {
		km_shardmap_free(nm);
		return refuse(err, errlen, rc, "worker %u cannot hand over shard %" PRIu64 ": %s",
			owner, id, strerror(-rc));
	}
	vbase = store_version_last(src);
	rc = km_proc_store_new(km_dp.workers[olo].proc, id * 2, vbase, &lo);
	if (rc == 0)
		rc = km_proc_store_new(km_dp.workers[ohi].proc, id * 2 + 1, vbase, &hi);
	copied = rc == 0 ? km_reshard_split(nm, src, id, lo, hi) : rc;
	if (copied < 0) {
		rc = (int)copied;
		goto rollback;
	}
	rc = store_commit(lo);
	if (rc == 0)
		rc = store_commit(hi);
	if (rc < 0)
		goto rollback;
	rc = shard_attach(olo, id * 2, lo);
	if (rc < 0)
		goto rollback;
	rc = shard_attach(ohi, id * 2 + 1, hi);
	if (rc < 0) {
		/* lo is attached: take it back before restoring the parent. */
		if (shard_detach(olo, id * 2, &lo) < 0)
			lo = NULL; /* unreachable worker: leave it, it is no longer served */
		goto rollback;
	}
	reshard_publish(nm, t0);
	store_discard(src);
	km_ctl.cnt.splits++;
	km_ctl.cnt.keys_handed_over += (uint64_t)copied;
	km_ctl.last_keys = (uint64_t)copied;
	KM_LOG(NOTICE,
		"split shard %" PRIu64 " (worker %u) into %" PRIu64 " (worker %u) and %" PRIu64
		" (worker %u): %" PRId64 " entries, epoch %u, paused %" PRIu64 " us",
		id, owner, id * 2, olo, id * 2 + 1, ohi, copied, km_map_current->epoch,
		km_ctl.last_pause_us);
	return 0;
rollback:
	store_discard(lo);
	store_discard(hi);
	km_shardmap_free(nm);
	if (shard_attach(owner, id, src) < 0) {
		km_store_destroy(src);
		KM_LOG(ERR, "split of shard %" PRIu64 ": cannot give it back to worker %u", id,
			owner);
	}
	return refuse(err, errlen, rc, "split of shard %" PRIu64 " failed, nothing changed: %s", id,
		strerror(-rc));
}

int
km_ctl_merge(uint64_t id, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *a = km_shardmap_find(m, id), *b = km_shardmap_find(m, id ^ 1);
	struct km_store *sa = NULL, *sb = NULL, *dst = NULL;
	struct km_shardmap *nm = NULL;
	uint64_t t0, vbase, parent = id >> 1;
	uint16_t oa, ob, op;
	int64_t ca = 0, cb = 0;
	int rc;

	if (a == NULL)
		return refuse(
			err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id, m->epoch);
	if (id <= 1)
		return refuse(
			err, errlen, -EINVAL, "shard 1 is the whole key space: nothing to merge");
	if (b == NULL)
		return refuse(err, errlen, -EINVAL,
			"shard %" PRIu64 " and %" PRIu64 " are not buddies: %" PRIu64
			" is split further",
			id, id ^ 1, id ^ 1);
	oa = a->owner;
	ob = b->owner;
	rc = km_shardmap_merge(m, id, &nm);
	if (rc < 0)
		return refuse(err, errlen, rc, "cannot build the new map: %s", strerror(-rc));
	op = km_shardmap_find(nm, parent)->owner;

	t0 = rte_get_timer_cycles();
	rc = shard_detach(oa, id, &sa);
	if (rc < 0) {
		km_shardmap_free(nm);
		return refuse(err, errlen, rc, "worker %u cannot hand over shard %" PRIu64 ": %s",
			oa, id, strerror(-rc));
	}
	rc = shard_detach(ob, id ^ 1, &sb);
	if (rc < 0)
		goto rollback;
	vbase = RTE_MAX(store_version_last(sa), store_version_last(sb));
	rc = km_proc_store_new(km_dp.workers[op].proc, parent, vbase, &dst);
	if (rc < 0)
		goto rollback;
	ca = km_reshard_copy(sa, dst);
	cb = ca < 0 ? 0 : km_reshard_copy(sb, dst);
	if (ca < 0 || cb < 0) {
		rc = (int)(ca < 0 ? ca : cb);
		goto rollback;
	}
	rc = store_commit(dst);
	if (rc < 0)
		goto rollback;
	rc = shard_attach(op, parent, dst);
	if (rc < 0)
		goto rollback;
	reshard_publish(nm, t0);
	store_discard(sa);
	store_discard(sb);
	km_ctl.cnt.merges++;
	km_ctl.cnt.keys_handed_over += (uint64_t)(ca + cb);
	km_ctl.last_keys = (uint64_t)(ca + cb);
	KM_LOG(NOTICE,
		"merged shards %" PRIu64 " (worker %u) and %" PRIu64 " (worker %u) into %" PRIu64
		" (worker %u): %" PRId64 " entries, epoch %u, paused %" PRIu64 " us",
		id, oa, id ^ 1, ob, parent, op, ca + cb, km_map_current->epoch,
		km_ctl.last_pause_us);
	return 0;
rollback:
	store_discard(dst);
	km_shardmap_free(nm);
	if (sa != NULL && shard_attach(oa, id, sa) < 0) {
		km_store_destroy(sa);
		KM_LOG(ERR, "merge: cannot give shard %" PRIu64 " back to worker %u", id, oa);
	}
	if (sb != NULL && shard_attach(ob, id ^ 1, sb) < 0) {
		km_store_destroy(sb);
		KM_LOG(ERR, "merge: cannot give shard %" PRIu64 " back to worker %u", id ^ 1, ob);
	}
	return refuse(err, errlen, rc, "merge of shard %" PRIu64 " failed, nothing changed: %s", id,
		strerror(-rc));
}

int
km_ctl_move(uint64_t id, uint16_t worker, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *sh = km_shardmap_find(m, id);
	struct km_shardmap *nm = NULL;
	struct km_store *st = NULL;
	struct km_store_stats ss;
	uint16_t from;
	uint64_t t0;
	int rc;

	if (sh == NULL)
		return refuse(
			err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id, m->epoch);
	if (worker >= km_dp.nb_workers)
		return refuse(err, errlen, -EINVAL, "no worker %u (workers are 0..%u)", worker,
			km_dp.nb_workers - 1);
	from = sh->owner;
	if (from == worker)
		return refuse(err, errlen, -EINVAL, "shard %" PRIu64 " is already on worker %u", id,
			worker);
	rc = km_shardmap_move(m, id, worker, &nm);
	if (rc < 0)
		return refuse(err, errlen, rc, "cannot build the new map: %s", strerror(-rc));
	t0 = rte_get_timer_cycles();
	rc = shard_detach(from, id, &st);
	if (rc < 0) {
		km_shardmap_free(nm);
		return refuse(err, errlen, rc, "worker %u cannot hand over shard %" PRIu64 ": %s",
			from, id, strerror(-rc));
	}
	km_store_stats(st, &ss);
	/* The store itself changes hands: no copy. */
	rc = shard_attach(worker, id, st);
	if (rc < 0) {
		km_shardmap_free(nm);
		if (shard_attach(from, id, st) < 0) {
			km_store_destroy(st);
			KM_LOG(ERR, "move: cannot give shard %" PRIu64 " back to worker %u", id,
				from);
		}
		return refuse(err, errlen, rc,
			"move of shard %" PRIu64 " failed, nothing changed: %s", id, strerror(-rc));
	}
	reshard_publish(nm, t0);
	km_ctl.last_keys = ss.keys;
	km_ctl.cnt.moves++;
	km_ctl.cnt.keys_handed_over += ss.keys;
	KM_LOG(NOTICE,
		"moved shard %" PRIu64 " from worker %u to worker %u: epoch %u, paused %" PRIu64
		" us",
		id, from, worker, km_map_current->epoch, km_ctl.last_pause_us);
	return 0;
}

/* ---- Load sampling and automatic re-sharding ------------------------------------------ */

static int
info_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct km_shard_info *)a)->id,
		 y = ((const struct km_shard_info *)b)->id;

	return x < y ? -1 : x > y;
}

static int
ctl_shard_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct km_ctl_shard *)a)->id, y = ((const struct km_ctl_shard *)b)->id;

	return x < y ? -1 : x > y;
}

uint64_t
km_worker_requests(const struct km_worker *w)
{
	const struct km_proc_counters *pc = km_proc_counters(w->proc);

	if (km_dp.echo)
		return w->cnt.rx_pkts;
	return pc->req_ping + pc->req_get + pc->req_mget + pc->req_put + pc->req_cas + pc->req_del +
	       pc->req_map + pc->bad_request + pc->moved;
}

/* Ask every worker for its shards (all in parallel). @return 0 and a sorted array of
 * *n infos (free it), or -errno. */
static int
gather_infos(struct km_shard_info **out, uint32_t *n)
{
	uint16_t nw = km_dp.nb_workers, i;
	struct km_wcmd *c[KM_WORKERS_MAX] = {NULL};
	struct km_shard_info *all = NULL;
	uint32_t total = 0, max;
	int rc = 0, r;

	/* A worker's shard count changes only through this lcore's commands: exact here. */
	for (i = 0; i < nw && rc == 0; i++) {
		max = km_proc_nb_shards(km_dp.workers[i].proc);
		c[i] = wcmd_new(KM_WCMD_INFO, 0);
		if (c[i] != NULL)
			c[i]->infos = calloc(max + 1, sizeof(*c[i]->infos));
		if (c[i] == NULL || c[i]->infos == NULL) {
			if (c[i] != NULL)
				free(c[i]);
			c[i] = NULL;
			rc = -ENOMEM;
			break;
		}
		c[i]->max = max;
		total += max;
		rc = wcmd_post(i, c[i]);
		if (rc < 0) {
			free(c[i]->infos);
			free(c[i]);
			c[i] = NULL;
		}
	}
	if (rc == 0) {
		all = calloc(total + 1, sizeof(*all));
		if (all == NULL)
			rc = -ENOMEM;
	}
	total = 0;
	for (i = 0; i < nw; i++) {
		if (c[i] == NULL)
			continue;
		r = wcmd_wait(c[i]);
		if (r == -ETIMEDOUT) {
			/* Abandoned: the worker will free the command and never write infos. */
			KM_LOG(ERR, "worker %u did not report its shards within %u ms", i,
				WCMD_TIMEOUT_MS);
			free(c[i]->infos);
			rc = r;
			continue;
		}
		if (rc == 0) {
			memcpy(all + total, c[i]->infos,
				RTE_MIN(c[i]->n, c[i]->max) * sizeof(*all));
			total += RTE_MIN(c[i]->n, c[i]->max);
		}
		free(c[i]->infos);
		free(c[i]);
	}
	if (rc < 0) {
		free(all);
		return rc;
	}
	qsort(all, total, sizeof(*all), info_cmp);
	*out = all;
	*n = total;
	return 0;
}

static void
store_stats_add(struct km_store_stats *t, const struct km_store_stats *s)
{
	t->keys += s->keys;
	t->value_bytes += s->value_bytes;
	t->index_bytes += s->index_bytes;
	t->file_bytes += s->file_bytes;
	t->dead_bytes += s->dead_bytes;
	t->replayed += s->replayed;
	t->skipped_crc += s->skipped_crc;
	t->torn_bytes += s->torn_bytes;
	t->disk_reads += s->disk_reads;
	t->disk_read_errors += s->disk_read_errors;
	t->write_batches += s->write_batches;
	t->fsyncs += s->fsyncs;
	t->write_errors += s->write_errors;
	t->writes_lost += s->writes_lost;
	t->tier += s->tier; /* the number of cold shards */
}

int
km_ctl_sample(int periodic)
{
	const struct km_shardmap *m = km_map_current;
	uint64_t now = rte_get_timer_cycles(), reqs = 0, d;
	double dt =
		km_ctl.sample_tsc == 0 ? 0 : (double)(now - km_ctl.sample_tsc) / rte_get_timer_hz();
	struct km_ctl_shard *ns, *old = km_ctl.shards, *o, *p, key;
	struct km_shard_info *infos, *in, ik;
	struct km_store_stats tot = {0};
	uint32_t n, i, nold = km_ctl.nb_shards;
	uint16_t w;
	int rc;

	rc = gather_infos(&infos, &n);
	if (rc < 0)
		return rc;
	ns = calloc(m->nb_shards + 1, sizeof(*ns));
	if (ns == NULL) {
		free(infos);
		return -ENOMEM;
	}
	/* Look shards of the previous sample up by id. */
	if (old != NULL)
		qsort(old, nold, sizeof(*old), ctl_shard_cmp);
#define OLD(x) \
	(old == NULL ? NULL : (key.id = (x), bsearch(&key, old, nold, sizeof(*old), ctl_shard_cmp)))
	for (i = 0; i < m->nb_shards; i++) {
		ns[i].id = m->shards[i].id;
		ns[i].owner = m->shards[i].owner;
		ik.id = ns[i].id;
		in = bsearch(&ik, infos, n, sizeof(*infos), info_cmp);
		if (in != NULL) {
			ns[i].keys = in->keys;
			ns[i].bytes = in->bytes;
			ns[i].requests = in->requests;
		}
		o = OLD(ns[i].id);
		if (in != NULL) {
			store_stats_add(&tot, &in->st);
			ns[i].tier = in->tier;
			ns[i].file_bytes = in->file_bytes;
			ns[i].dead_bytes = in->dead_bytes;
		}
		if (o != NULL) {
			ns[i].rate = o->rate;
			ns[i].hot = o->hot;
			ns[i].cold = o->cold;
			ns[i].chill = o->chill;
			ns[i].warm = o->warm;
			/* A moved shard's count restarted at its attach. */
			ns[i].rate_requests =
				o->owner == ns[i].owner && ns[i].requests >= o->rate_requests
					? o->rate_requests
					: 0;
		} else if ((p = OLD(ns[i].id >> 1)) != NULL) {
			ns[i].rate = p->rate / 2; /* half of the parent it was split from */
		} else {
			/* Merged: the sum of its two children. */
			p = OLD(ns[i].id * 2);
			ns[i].rate = p == NULL ? 0 : p->rate;
			p = OLD(ns[i].id * 2 + 1);
			ns[i].rate += p == NULL ? 0 : p->rate;
		}
		/* Rates move only with the periodic samples, at their pace; an operator's query
		 * refreshes keys and bytes. */
		if (periodic && dt > 0) {
			d = ns[i].requests - ns[i].rate_requests;
			ns[i].rate = (1.0 - RATE_DECAY) * ns[i].rate + RATE_DECAY * (double)d / dt;
			ns[i].rate_requests = ns[i].requests;
		}
	}
#undef OLD
	if (periodic) {
		for (w = 0; w < km_dp.nb_workers; w++)
			reqs += km_worker_requests(&km_dp.workers[w]);
		if (dt > 0)
			km_ctl.requests_per_s = (double)(reqs - km_ctl.sample_reqs) / dt;
		km_ctl.sample_reqs = reqs;
		km_ctl.sample_tsc = now;
	}
	free(infos);
	free(old);
	km_ctl.store = tot;
	km_ctl.shards = ns;
	km_ctl.nb_shards = m->nb_shards;
	return 0;
}

static const char *
tier_name(int tier)
{
	return tier == KM_TIER_COLD ? "cold" : "hot";
}

int
km_ctl_retier(uint64_t id, int tier, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *sh = km_shardmap_find(m, id);
	struct km_store *src = NULL, *dst = NULL;
	struct km_store_stats ss, ds;
	uint64_t t0;
	int64_t copied;
	uint16_t owner;
	int rc, to;

	if (sh == NULL)
		return refuse(
			err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id, m->epoch);
	if (km_store_driver(km_ctl.conf.store_driver)->commit == NULL)
		return refuse(err, errlen, -EINVAL,
			"[store] driver %s keeps no files: no tiers, nothing to compact",
			km_ctl.conf.store_driver);
	owner = sh->owner;
	t0 = rte_get_timer_cycles();
	rc = shard_detach(owner, id, &src);
	if (rc < 0)
		goto fail;
	km_store_stats(src, &ss);
	to = tier < 0 ? (int)ss.tier : tier;
	if (tier >= 0 && (int)ss.tier == tier) {
		rc = shard_attach(owner, id, src);
		if (rc < 0)
			goto give_back;
		return refuse(err, errlen, -EINVAL, "shard %" PRIu64 " is already %s", id,
			tier_name(tier));
	}
	rc = km_proc_store_stage(km_dp.workers[owner].proc, id, ss.version_last, (uint8_t)to, &dst);
	copied = rc == 0 ? km_reshard_copy(src, dst) : rc;
	if (copied < 0) {
		rc = (int)copied;
		km_store_destroy(dst);
		goto give_back;
	}
	rc = store_commit(dst);
	if (rc < 0) {
		km_store_destroy(dst);
		goto give_back;
	}
	/* The new files are in place: the old store must never serve again (its log is
	 * gone from the directory), whatever happens now. */
	km_store_destroy(src);
	rc = shard_attach(owner, id, dst);
	if (rc < 0) {
		KM_LOG(ERR,
			"shard %" PRIu64 ": rewritten, but worker %u does not take it back (%s): "
			"it answers BUSY until a restart",
			id, owner, strerror(-rc));
		km_store_destroy(dst);
		km_ctl.cnt.tier_failures++;
		snprintf(err, errlen, "worker %u did not take shard %" PRIu64 " back: %s", owner,
			id, strerror(-rc));
		return rc;
	}
	km_ctl.last_pause_us = usec_since(t0);
	km_ctl.last_keys = (uint64_t)copied;
	km_store_stats(dst, &ds);
	if (tier < 0)
		km_ctl.cnt.compactions++;
	else if (tier == KM_TIER_COLD)
		km_ctl.cnt.to_cold++;
	else
		km_ctl.cnt.to_hot++;
	KM_LOG(NOTICE,
		"%s shard %" PRIu64 " (worker %u): %" PRId64 " entries, %" PRIu64 " -> %" PRIu64
		" bytes on disk, paused %" PRIu64 " us",
		tier < 0             ? "compacted"
		: to == KM_TIER_COLD ? "moved to the cold tier"
				     : "promoted",
		id, owner, copied, ss.file_bytes, ds.file_bytes, km_ctl.last_pause_us);
	return 0;
give_back:
	if (shard_attach(owner, id, src) < 0) {
		km_store_destroy(src);
		KM_LOG(ERR, "shard %" PRIu64 ": cannot give it back to worker %u", id, owner);
	}
fail:
	km_ctl.cnt.tier_failures++;
	snprintf(err, errlen, "%s of shard %" PRIu64 " failed, nothing changed: %s",
		tier < 0 ? "compaction" : "tier change", id, strerror(-rc));
	return rc;
}

/*
 * Tiers and compaction by the last sample: a shard colder than [tier] cold_rate for
 * [shards] hysteresis samples goes to the cold tier, a cold one warmer than warm_rate
 * comes back, a log mostly made of dead records is compacted. One change per period.
 * @return 1 if something changed.
 */
static int
ctl_autotier(void)
{
	const struct km_conf *c = &km_ctl.conf;
	struct km_ctl_shard *s = km_ctl.shards, *pick = NULL;
	uint32_t n = km_ctl.nb_shards, i;
	int tier = -1, rc;
	char err[256];

	if (s == NULL || km_store_driver(c->store_driver)->commit == NULL)
		return 0;
	for (i = 0; i < n; i++) {
		s[i].chill = c->cold_rate != 0 && s[i].tier == KM_TIER_HOT &&
					     s[i].rate < (double)c->cold_rate
				     ? s[i].chill + 1
				     : 0;
		s[i].warm = c->warm_rate != 0 && s[i].tier == KM_TIER_COLD &&
					    s[i].rate > (double)c->warm_rate
				    ? s[i].warm + 1
				    : 0;
		if (pick != NULL)
			continue;
		if (s[i].warm >= c->hysteresis) {
			pick = &s[i];
			tier = KM_TIER_HOT;
		} else if (s[i].chill >= c->hysteresis && s[i].keys != 0) {
			pick = &s[i];
			tier = KM_TIER_COLD;
		} else if (c->compact_pct != 0 && s[i].file_bytes >= c->compact_min_bytes &&
			   s[i].dead_bytes * 100 > s[i].file_bytes * c->compact_pct) {
			pick = &s[i];
			tier = -1;
		}
	}
	if (pick == NULL)
		return 0;
	rc = km_ctl_retier(pick->id, tier, err, sizeof(err));
	if (rc < 0)
		KM_LOG(WARNING, "automatic %s: %s", tier < 0 ? "compaction" : "tier change", err);
	pick->chill = pick->warm = 0;
	return rc == 0;
}

/* Update the hot/cold streaks of the last sample and act on the first one long enough:
 * one change per period, so that each is measured before the next. */
static int
ctl_autoshard(void)
{
	const struct km_conf *c = &km_ctl.conf;
	struct km_ctl_shard *s = km_ctl.shards, *hot = NULL, *cold = NULL, *b, key;
	struct km_ctl_shard *byid;
	uint32_t n = km_ctl.nb_shards, i;
	char err[256];
	int rc;

	if (s == NULL || (c->split_rate == 0 && c->merge_rate == 0))
		return 0;
	byid = malloc((n + 1) * sizeof(*byid));
	if (byid == NULL)
		return 0;
	memcpy(byid, s, n * sizeof(*s));
	qsort(byid, n, sizeof(*byid), ctl_shard_cmp);
	for (i = 0; i < n; i++) {
		s[i].hot =
			c->split_rate != 0 && s[i].rate > (double)c->split_rate ? s[i].hot + 1 : 0;
		key.id = s[i].id ^ 1;
		b = s[i].id <= 1 ? NULL : bsearch(&key, byid, n, sizeof(*byid), ctl_shard_cmp);
		/* Splitting cannot spread one hot key, nor a shard whose last split sent all the
		 * load one way (its buddy gets under a tenth of it): such a shard stays. */
		if (s[i].hot >= c->hysteresis && km_shard_depth(s[i].id) < KM_SHARD_DEPTH_MAX &&
			n < c->max_count && s[i].keys >= 2 &&
			(b == NULL || b->rate * 10 >= s[i].rate) &&
			(hot == NULL || s[i].rate > hot->rate))
			hot = &s[i];
		/* Buddy pairs are tracked on their even member. */
		if ((s[i].id & 1) != 0)
			b = NULL;
		s[i].cold = c->merge_rate != 0 && b != NULL &&
					    s[i].rate + b->rate < (double)c->merge_rate
				    ? s[i].cold + 1
				    : 0;
		if (s[i].cold >= c->hysteresis && n > c->shard_count &&
			(cold == NULL || s[i].rate < cold->rate))
			cold = &s[i];
	}
	free(byid);
	if (hot != NULL) {
		rc = km_ctl_split(hot->id, err, sizeof(err));
		if (rc == 0)
			km_ctl.cnt.auto_splits++;
		else
			KM_LOG(WARNING, "automatic split: %s", err);
	} else if (cold != NULL) {
		rc = km_ctl_merge(cold->id, err, sizeof(err));
		if (rc == 0)
			km_ctl.cnt.auto_merges++;
		else
			KM_LOG(WARNING, "automatic merge: %s", err);
	} else {
		return 0;
	}
	/* The map changed: streaks start again from the next sample. */
	km_ctl_sample(0);
	for (i = 0; i < km_ctl.nb_shards; i++)
		km_ctl.shards[i].hot = km_ctl.shards[i].cold = 0;
	return 1;
}

/* ---- Runtime configuration ------------------------------------------------------------ */

int
km_log_level_of(const char *name)
{
	static const char *const names[] = {
		"", "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"};
	unsigned int i;

	for (i = 1; i < RTE_DIM(names); i++)
		if (strcmp(names[i], name) == 0)
			return (int)i;
	return RTE_LOG_INFO;
}

int
km_ctl_publish_allow(const char *list, char *err, size_t errlen)
{
	struct km_allow *a = malloc(sizeof(*a)), *old = km_allow_current;

	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (km_allow_parse(list, a, err, errlen) < 0) {
		free(a);
		return -EINVAL;
	}
	rcu_assign_pointer(km_allow_current, a);
	if (old != NULL) {
		synchronize_rcu();
		free(old);
	}
	return 0;
}

/* Send the [workers] tunables of c to every worker (applied at their next loop
 * boundary). */
static int
ctl_tune_workers(const struct km_conf *c)
{
	struct km_cmsg m = {
		.type = KM_CMSG_TUNE,
		.u.tune =
			{
				.burst = (uint16_t)c->burst,
				.idle_spin = (uint32_t)c->idle_spin,
				.idle_sleep_us = (uint32_t)c->idle_sleep_us,
			},
	};
	uint16_t i;
	int rc, ret = 0;

	for (i = 0; i < km_dp.nb_workers; i++) {
		rc = cmsg_send(i, &m);
		if (rc < 0)
			ret = rc;
	}
	return ret;
}

int
km_ctl_set(const char *assignment, char *err, size_t errlen)
{
	const char *eq = strchr(assignment, '=');
	struct km_conf nc = km_ctl.conf;
	struct km_conf_item it;
	char name[128];
	int idx, rc;

	if (eq == NULL || (size_t)(eq - assignment) >= sizeof(name)) {
		snprintf(err, errlen, "'%s': expected section.key=value", assignment);
		return -EINVAL;
	}
	memcpy(name, assignment, (size_t)(eq - assignment));
	name[eq - assignment] = '\0';
	idx = km_conf_find(name);
	if (idx < 0) {
		snprintf(err, errlen, "unknown tunable '%s' (keymapctl config lists them)", name);
		return -ENOENT;
	}
	km_conf_item((size_t)idx, &it);
	if (!it.runtime) {
		snprintf(err, errlen,
			"%s cannot change while keymapd runs: set it in the configuration file "
			"and restart",
			name);
		return -EPERM;
	}
	if (km_conf_set(&nc, assignment, err, errlen) < 0)
		return -EINVAL;
	if (strcmp(nc.allow, km_ctl.conf.allow) != 0) {
		rc = km_ctl_publish_allow(nc.allow, err, errlen);
		if (rc < 0)
			return rc;
	}
	if (nc.burst != km_ctl.conf.burst || nc.idle_spin != km_ctl.conf.idle_spin ||
		nc.idle_sleep_us != km_ctl.conf.idle_sleep_us) {
		rc = ctl_tune_workers(&nc);
		if (rc < 0) {
			snprintf(err, errlen, "a worker did not take %s: %s", name, strerror(-rc));
			return rc;
		}
	}
	if (strcmp(nc.log_level, km_ctl.conf.log_level) != 0)
		rte_log_set_level_pattern("keymap.*", (uint32_t)km_log_level_of(nc.log_level));
	km_ctl.conf = nc;
	KM_LOG(NOTICE, "set %s", assignment);
	return 0;
}

/* ---- The loop ------------------------------------------------------------------------- */

/* What a worker sends back: counted now; samples feed the predictor later. */
static void
ctl_receive(const struct km_wmsg *m)
{
	switch (m->type) {
	case KM_WMSG_SAMPLE:
		km_ctl.cnt.samples++;
		break;
	case KM_WMSG_DONE:
		if (m->u.done.cmd != KM_CMSG_PREFETCH)
			break;
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
}

/* Take everything the workers sent (w_to_ctl). */
static void
ctl_drain(void)
{
	struct km_wmsg m[16];
	unsigned int n, k;
	uint16_t i;

	for (i = 0; i < km_dp.nb_workers; i++)
		while ((n = rte_ring_sc_dequeue_burst_elem(
				km_dp.workers[i].w_to_ctl, m, sizeof(m[0]), RTE_DIM(m), NULL)) != 0)
			for (k = 0; k < n; k++)
				ctl_receive(&m[k]);
}

int
km_ctl_init(const struct km_conf *conf)
{
	char name[RTE_RING_NAMESIZE];
	struct km_worker *w;
	uint16_t i;
	int socket;

	km_ctl.conf = *conf;
	km_ctl.start_tsc = rte_get_timer_cycles();
	if (sem_init(&ctl_wake, 0, 0) != 0)
		return -errno;
	ctl_ring = rte_ring_create("km_ctl", CTL_RING_SIZE, (int)rte_socket_id(), RING_F_SC_DEQ);
	if (ctl_ring == NULL)
		return -rte_errno;
	for (i = 0; i < km_dp.nb_workers; i++) {
		w = &km_dp.workers[i];
		socket = (int)rte_lcore_to_socket_id(w->lcore);
		snprintf(name, sizeof(name), "km_ctl_to_w%u", i);
		w->ctl_to_w = rte_ring_create_elem(name, sizeof(struct km_cmsg), KM_CTL_RING_SIZE,
			socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
		snprintf(name, sizeof(name), "km_w%u_to_ctl", i);
		w->w_to_ctl = rte_ring_create_elem(name, sizeof(struct km_wmsg), KM_CTL_RING_SIZE,
			socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
		if (w->ctl_to_w == NULL || w->w_to_ctl == NULL)
			return -rte_errno;
	}
	return 0;
}

void
km_ctl_loop(void)
{
	uint64_t hz = rte_get_timer_hz(), last = rte_get_timer_cycles(), now;
	struct km_interval prev = {0, 0};
	struct timespec ts;

	while (!atomic_load_explicit(&km_dp.stop, memory_order_relaxed)) {
		/* Sleep between iterations (the control lcore shares a CPU on small hosts),
		 * but wake at once for a request. */
		deadline_after(&ts, (unsigned int)km_ctl.conf.interval_ms);
		sem_clockwait(&ctl_wake, CLOCK_MONOTONIC, &ts);
		ctl_serve(0);
		ctl_drain();
		now = rte_get_timer_cycles();
		if (now - km_ctl.sample_tsc >= km_ctl.conf.sample_ms * hz / 1000) {
			if (km_ctl_sample(1) == 0 && !ctl_autoshard())
				ctl_autotier();
		}
		if (km_ctl.conf.stats_interval_s != 0 &&
			now - last >= km_ctl.conf.stats_interval_s * hz) {
			km_control_print_interval(stdout, &prev, (double)(now - last) / (double)hz);
			last = now;
		}
	}
	ctl_serve(1);
}

void
km_ctl_wake(void)
{
	sem_post(&ctl_wake);
}

void
km_ctl_fini(void)
{
	struct km_worker *w;
	struct km_cmsg m;
	uint16_t i;

	/* The request ring stays: a telemetry thread may still be about to post (it then
	 * times out or sees the stop flag). */
	if (ctl_ring != NULL)
		ctl_serve(1);
	/* The workers have stopped. Handshakes left in ctl_to_w were abandoned by the control
	 * lcore (it gives up when keymapd stops): never claimed, they are freed here. */
	for (i = 0; km_dp.workers != NULL && i < km_dp.nb_workers; i++) {
		w = &km_dp.workers[i];
		while (w->ctl_to_w != NULL &&
			rte_ring_sc_dequeue_elem(w->ctl_to_w, &m, sizeof(m)) == 0)
			if (m.type == KM_CMSG_SYNC)
				free(m.u.sync);
		rte_ring_free(w->ctl_to_w);
		rte_ring_free(w->w_to_ctl);
		w->ctl_to_w = NULL;
		w->w_to_ctl = NULL;
	}
	free(km_ctl.shards);
	km_ctl.shards = NULL;
	km_ctl.nb_shards = 0;
}
