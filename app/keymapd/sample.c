/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Load sampling: every [shards] sample_ms, and on demand, the control lcore asks every
 * worker for the figures of its shards (the INFO handshake, all workers in parallel) and
 * keeps them in km_ctl.shards with a decayed request rate per shard, which the automatic
 * policies read; beside them each worker's rate, busy share and capacity (km_ctl.workers)
 * and the thresholds derived from them (km_ctl.derived, docs/operations.md 2.13).
 */

#define KM_LOG_COMP KM_LOG_CONTROL /* keymapd.h */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <rte_common.h>
#include <rte_cycles.h>

#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "mailbox.h"

#define RATE_DECAY 0.5 /* weight of the newest sample in a shard's rate */
/* A period measures a worker's cost per request only with this many requests: fewer say
 * more about the loop's fixed costs than about requests. */
#define CAPACITY_MIN_REQS 1000
/* Derived thresholds (docs/operations.md 2.13), as fractions of the least capable
 * worker's capacity: a shard that alone takes half a worker cannot be evened out by moves
 * (it must split); a buddy pair under a sixteenth is cold (and under a quarter of the
 * split rate: a merged pair is never hot enough to split again); below a twentieth of a
 * worker's capacity on average, an imbalance costs nothing worth a move. */
#define AUTO_SPLIT_SHARE   0.5
#define AUTO_MERGE_SHARE   (1.0 / 16)
#define AUTO_BALANCE_SHARE (1.0 / 20)

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
	       pc->req_map + pc->req_scan + pc->bad_request + pc->moved;
}

/* The thresholds in force: explicit values of the configuration, or derived from cap. */
static void
derive(const struct km_conf *c, double cap, struct km_ctl_derived *d)
{
	d->capacity = cap;
	if (c->split_rate != KM_CONF_AUTO)
		d->split_rate = c->split_rate;
	else if (cap <= 0 || km_dp.nb_workers < 2)
		d->split_rate = 0; /* one worker: halves of a shard would share its core */
	else
		/* Keeps above an explicit merge_rate: a merged pair must not split again. */
		d->split_rate = RTE_MAX((uint64_t)(cap * AUTO_SPLIT_SHARE),
			c->merge_rate == KM_CONF_AUTO ? 1 : 2 * c->merge_rate + 1);
	if (c->merge_rate != KM_CONF_AUTO)
		d->merge_rate = c->merge_rate;
	else if (cap <= 0)
		d->merge_rate = 0;
	else if (d->split_rate != 0)
		d->merge_rate = RTE_MIN((uint64_t)(cap * AUTO_MERGE_SHARE), d->split_rate / 4);
	else
		d->merge_rate = (uint64_t)(cap * AUTO_MERGE_SHARE);
	if (c->balance_min_rate != KM_CONF_AUTO)
		d->balance_min_rate = c->balance_min_rate;
	else
		d->balance_min_rate = (uint64_t)(cap * AUTO_BALANCE_SHARE);
}

/*
 * Each worker's load and shard count from the new sample ns[0..n); with periodic, dt
 * seconds after the previous periodic sample, its rate, busy share and capacity too, and
 * then the derived thresholds.
 */
static void
workers_update(const struct km_ctl_shard *ns, uint32_t n, int periodic, double dt)
{
	const double hz = (double)rte_get_tsc_hz();
	struct km_ctl_worker *w;
	uint64_t req, busy, dreq, dbusy;
	double cap = 0, c;
	uint32_t i;
	uint16_t k;

	for (k = 0; k < km_dp.nb_workers; k++) {
		km_ctl.workers[k].load = 0;
		km_ctl.workers[k].shards = 0;
	}
	for (i = 0; i < n; i++) {
		if (ns[i].owner >= km_dp.nb_workers)
			continue;
		km_ctl.workers[ns[i].owner].load += ns[i].rate;
		km_ctl.workers[ns[i].owner].shards++;
	}
	if (!periodic)
		return;
	for (k = 0; k < km_dp.nb_workers; k++) {
		w = &km_ctl.workers[k];
		/* Plain words the worker updates alone: may be one update old, never torn. */
		req = km_worker_requests(&km_dp.workers[k]);
		busy = km_dp.workers[k].cnt.busy_cycles;
		if (dt > 0 && req >= w->requests && busy >= w->busy_cycles) {
			dreq = req - w->requests;
			dbusy = busy - w->busy_cycles;
			w->rate = (1.0 - RATE_DECAY) * w->rate + RATE_DECAY * (double)dreq / dt;
			w->busy = RTE_MIN(1.0, (double)dbusy / (dt * hz));
			if (dreq >= CAPACITY_MIN_REQS && dbusy > 0) {
				c = hz * (double)dreq / (double)dbusy;
				w->capacity = w->capacity <= 0 ? c
							       : (1.0 - RATE_DECAY) * w->capacity +
									 RATE_DECAY * c;
			}
		}
		w->requests = req;
		w->busy_cycles = busy;
		if (w->capacity > 0 && (cap <= 0 || w->capacity < cap))
			cap = w->capacity;
	}
	derive(&km_ctl.conf, cap, &km_ctl.derived);
}

void
km_ctl_derive(void)
{
	derive(&km_ctl.conf, km_ctl.derived.capacity, &km_ctl.derived);
}

/* Ask every worker for its shards (all in parallel). @return 0 and a sorted array of
 * *n infos (free it), or -errno. */
int
km_ctl_gather_infos(struct km_shard_info **out, uint32_t *n)
{
	uint16_t nw = km_dp.nb_workers, i;
	struct km_wcmd *c[KM_WORKERS_MAX] = {NULL};
	struct km_shard_info *all = NULL;
	uint32_t total = 0, max;
	int rc = 0, r;

	/* A worker's shard count changes only through this lcore's commands: exact here. */
	for (i = 0; i < nw && rc == 0; i++) {
		max = km_proc_nb_shards(km_dp.workers[i].proc);
		c[i] = km_mailbox_cmd_new(KM_WCMD_INFO, 0);
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
		rc = km_mailbox_post(i, c[i]);
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
		r = km_mailbox_wait(c[i]);
		if (r == -ETIMEDOUT) {
			/* Abandoned: the worker will free the command and never write infos. */
			KM_LOG(ERR, "worker %u did not report its shards within %u ms", i,
				KM_WCMD_TIMEOUT_MS);
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
	uint32_t n, i, k, nold = km_ctl.nb_shards;
	uint16_t w;
	int rc;

	rc = km_ctl_gather_infos(&infos, &n);
	if (rc < 0)
		return rc;
	ns = calloc(km_shardmap_nb_shards(m) + 1, sizeof(*ns));
	if (ns == NULL) {
		free(infos);
		return -ENOMEM;
	}
	/* Look shards of the previous sample up by id. */
	if (old != NULL)
		qsort(old, nold, sizeof(*old), ctl_shard_cmp);
#define OLD(x) \
	(old == NULL ? NULL : (key.id = (x), bsearch(&key, old, nold, sizeof(*old), ctl_shard_cmp)))
	for (i = 0, k = 0; k < km_shardmap_nb_shards(m); k++) {
		/* Only this node's shards (a cluster map has the others' too). */
		if (km_shard_owner(km_shardmap_shard_at(m, k)) == KM_OWNER_REMOTE)
			continue;
		ns[i].id = km_shard_id(km_shardmap_shard_at(m, k));
		ns[i].owner = km_shard_owner(km_shardmap_shard_at(m, k));
		ik.id = ns[i].id;
		in = bsearch(&ik, infos, n, sizeof(*infos), info_cmp);
		if (in != NULL) {
			ns[i].keys = in->keys;
			ns[i].bytes = in->bytes;
			ns[i].requests = in->requests;
		}
		o = OLD(ns[i].id);
		if (in != NULL) {
			km_store_stats_add(&tot, &in->st);
			ns[i].tier = in->tier;
			ns[i].file_bytes = in->file_bytes;
			ns[i].dead_bytes = in->dead_bytes;
			ns[i].quarantined = in->st.quarantined != 0;
			ns[i].damaged_keys = in->st.damaged_keys;
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
		i++;
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
	km_ctl.nb_shards = i;
	workers_update(ns, km_ctl.nb_shards, periodic, dt);
	return 0;
}
