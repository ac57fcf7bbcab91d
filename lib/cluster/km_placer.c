/* SPDX-License-Identifier: BSD-3-Clause */
/* The placer's decisions: node table, then drain, fair share and load moves (km_cluster.h). */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <km_policy.h>
#include <km_shardmap.h>

#include "km_cluster.h"
#include "cluster_private.h"

#define fail km_cluster_fail

/* The moves being planned, on a working copy of the table. */
struct plan {
	struct km_cmap *w;                      /* the table, shards as moved so far */
	const double *rate;                     /* per shard of w */
	uint8_t *moved;                         /* per shard: moved in this decision */
	uint32_t cnt[KM_WORKERS_MAX];           /* shards per global owner */
	double load[KM_WORKERS_MAX];            /* rates per global owner */
	uint8_t eligible[KM_CLUSTER_NODES_MAX]; /* ACTIVE and not down: may receive */
	int rates_known;
	double ratio; /* balance_pct / 100, 0 = no load balancing */
	struct km_cluster_move *mv;
	uint32_t nb_mv;
	uint32_t max_mv;
};

static uint16_t
gowner(const struct km_cmap *m, uint16_t node, uint16_t worker)
{
	return (uint16_t)(m->nodes[node].first + worker);
}

/* Shards and load of node n. */
static uint32_t
node_sum(const struct plan *p, uint16_t n, double *load)
{
	const struct km_cmap_node *nd = &p->w->nodes[n];
	uint32_t c = 0;
	uint16_t k;

	*load = 0;
	for (k = 0; k < nd->workers; k++) {
		c += p->cnt[nd->first + k];
		*load += p->load[nd->first + k];
	}
	return c;
}

/* Within node n, the least loaded worker: by rate (when known), shards, index. */
static uint16_t
pick_worker(const struct plan *p, uint16_t n)
{
	const struct km_cmap_node *nd = &p->w->nodes[n];
	uint16_t k, best = 0;

	for (k = 1; k < nd->workers; k++) {
		uint16_t g = nd->first + k, b = nd->first + best;

		if (p->rates_known && p->load[g] != p->load[b]) {
			if (p->load[g] < p->load[b])
				best = k;
			continue;
		}
		if (p->cnt[g] < p->cnt[b])
			best = k;
	}
	return best;
}

/* The least loaded eligible node: load per worker with rates known, then shards per
 * worker, then the lowest index. -1 when none. */
static int
least_loaded_node(const struct plan *p)
{
	double bl = 0, bc = 0;
	int best = -1;
	uint16_t n;

	for (n = 0; n < p->w->nb_nodes; n++) {
		double w = p->w->nodes[n].workers, l, c;

		if (!p->eligible[n])
			continue;
		c = node_sum(p, n, &l) / w;
		l = p->rates_known ? l / w : 0;
		if (best < 0 || l < bl || (l == bl && c < bc)) {
			best = n;
			bl = l;
			bc = c;
		}
	}
	return best;
}

static void
plan_move(struct plan *p, uint32_t i, uint16_t to_node, uint16_t to_worker, uint8_t reason)
{
	struct km_cmap_shard *s = &p->w->shards[i];
	uint16_t from = gowner(p->w, s->node, s->worker), to = gowner(p->w, to_node, to_worker);

	p->mv[p->nb_mv++] = (struct km_cluster_move){
		.id = s->id,
		.from_node = s->node,
		.from_worker = s->worker,
		.to_node = to_node,
		.to_worker = to_worker,
		.reason = reason,
	};
	p->cnt[from]--;
	p->cnt[to]++;
	p->load[from] -= p->rate[i];
	p->load[to] += p->rate[i];
	s->node = to_node;
	s->worker = to_worker;
	p->moved[i] = 1;
}

/* a. Every shard of a live DRAINING node to the least loaded eligible node. */
static void
plan_drain(struct plan *p)
{
	uint32_t i;
	int r;

	for (i = 0; i < p->w->nb_shards && p->nb_mv < p->max_mv; i++) {
		const struct km_cmap_node *nd = &p->w->nodes[p->w->shards[i].node];

		if (nd->state != KM_CMAP_DRAINING || nd->down || p->moved[i])
			continue;
		r = least_loaded_node(p);
		if (r < 0)
			return;
		plan_move(p, i, (uint16_t)r, pick_worker(p, (uint16_t)r), KM_CLUSTER_DRAIN);
	}
}

/*
 * b. Fair share of shards by workers among the eligible nodes. Node i's deviation from its
 * share is c_i - S x w_i / W; kept times W, it is an integer: c_i x W - S x w_i. A shard
 * moves from the node furthest above to the one furthest below while they are more than one
 * shard apart (each move then lowers the sum of the squared deviations: it ends), so every
 * node ends within one shard of its share. (Receiving only below a rounded share would
 * not do: the rounded shares need not add up to S, and the rest would stay on one node.)
 *
 * With rates known and balancing on, the load step (c) may have left a node with fewer,
 * hotter shards than its share on purpose. So a node receives by share only while it is
 * clearly underloaded (its load per worker below mean / ratio: a new node is), and only a
 * shard that keeps the receiving worker within the balancing target (mean x (1 + (ratio -
 * 1) / 2)): counts never undo what the load step did, nor push a worker towards the next
 * load move.
 */
static void
plan_share(struct plan *p)
{
	uint8_t full[KM_CLUSTER_NODES_MAX] = {0}; /* receives no more (balancing target) */
	const struct km_cmap *m = p->w;

	while (p->nb_mv < p->max_mv) {
		int64_t S = 0, W = 0, dev, bd = 0, be = 0;
		double L = 0, l, target;
		int balancing = p->rates_known && p->ratio > 0;
		int r = -1, d = -1;
		uint32_t i, pick = UINT32_MAX;
		uint16_t n, wk;

		for (n = 0; n < m->nb_nodes; n++) {
			if (!p->eligible[n])
				continue;
			S += node_sum(p, n, &l);
			W += m->nodes[n].workers;
			L += l;
		}
		if (W == 0)
			return;
		for (n = 0; n < m->nb_nodes; n++) {
			if (!p->eligible[n])
				continue;
			dev = (int64_t)node_sum(p, n, &l) * W - S * m->nodes[n].workers;
			if (balancing && l / m->nodes[n].workers >= L / W / p->ratio)
				full[n] = 1;
			if (!full[n] && (r < 0 || dev < bd)) {
				r = n;
				bd = dev;
			}
			if (d < 0 || dev > be) {
				d = n;
				be = dev;
			}
		}
		if (r < 0 || d < 0 || be - bd <= W)
			return;
		/* The donor's coldest shard, then on its fullest worker, then the lowest id. */
		for (i = 0; i < m->nb_shards; i++) {
			const struct km_cmap_shard *s = &m->shards[i], *b;

			if (s->node != d || p->moved[i])
				continue;
			if (pick == UINT32_MAX) {
				pick = i;
				continue;
			}
			b = &m->shards[pick];
			if (p->rate[i] < p->rate[pick] ||
				(p->rate[i] == p->rate[pick] &&
					p->cnt[gowner(m, s->node, s->worker)] >
						p->cnt[gowner(m, b->node, b->worker)]))
				pick = i;
		}
		if (pick == UINT32_MAX)
			return;
		wk = pick_worker(p, (uint16_t)r);
		target = L / W * (1 + (p->ratio - 1) / 2);
		if (balancing && p->load[gowner(m, (uint16_t)r, wk)] + p->rate[pick] > target) {
			full[r] = 1;
			continue;
		}
		plan_move(p, pick, (uint16_t)r, wk, KM_CLUSTER_SHARE);
	}
}

/* c. Load: km_policy_place() over the workers of the eligible nodes. */
static int
plan_load(struct plan *p, double min_rate)
{
	const struct km_cmap *m = p->w;
	uint16_t kn[KM_WORKERS_MAX], kw[KM_WORKERS_MAX], kidx[KM_WORKERS_MAX];
	struct km_policy_place_conf conf;
	struct km_policy_place_state st;
	struct km_policy_shard *s = NULL;
	struct km_policy_move *pm = NULL;
	uint32_t left = p->max_mv - p->nb_mv, i, n = 0, nb = 0;
	uint16_t nb_w = 0, node, k;
	int rc;

	if (left == 0 || !p->rates_known || p->ratio == 0)
		return 0;
	for (node = 0; node < m->nb_nodes; node++) {
		if (!p->eligible[node])
			continue;
		for (k = 0; k < m->nodes[node].workers; k++) {
			kidx[gowner(m, node, k)] = nb_w;
			kn[nb_w] = node;
			kw[nb_w++] = k;
		}
	}
	if (nb_w < 2)
		return 0;
	s = calloc(m->nb_shards, sizeof(*s));
	pm = calloc(left, sizeof(*pm));
	if (s == NULL || pm == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < m->nb_shards; i++) {
		const struct km_cmap_shard *sh = &m->shards[i];

		if (!p->eligible[sh->node])
			continue;
		s[n++] = (struct km_policy_shard){
			.id = sh->id,
			.owner = kidx[gowner(m, sh->node, sh->worker)],
			.rate = p->rate[i],
			.pinned = p->moved[i],
		};
	}
	conf = (struct km_policy_place_conf){
		.ratio = p->ratio,
		.min_load = min_rate,
		.hysteresis = 1,
		.moves_per_s = left,
	};
	/* One decision is one sample; the band between ratio and the stop line is the
	 * hysteresis (the placer keeps no streak between decisions). */
	st = (struct km_policy_place_state){.over = 0, .tokens = left};
	rc = km_policy_place(&conf, &st, s, n, nb_w, 0, pm, left, &nb);
	for (i = 0; rc == 0 && i < nb; i++) {
		const struct km_cmap_shard *sh = km_cmap_shard_find(m, pm[i].id);

		plan_move(
			p, (uint32_t)(sh - m->shards), kn[pm[i].to], kw[pm[i].to], KM_CLUSTER_LOAD);
	}
out:
	free(s);
	free(pm);
	return rc;
}

static int
member_cmp(const void *a, const void *b)
{
	const struct km_cluster_member *x = a, *y = b;
	int c = strcmp(x->id, y->id);

	if (c != 0)
		return c;
	/* Same id twice: the newest incarnation first, then any stable order. */
	if (x->incarnation != y->incarnation)
		return x->incarnation > y->incarnation ? -1 : 1;
	if (x->ip != y->ip)
		return x->ip < y->ip ? -1 : 1;
	if (x->port != y->port)
		return x->port < y->port ? -1 : 1;
	if (x->workers != y->workers)
		return x->workers < y->workers ? -1 : 1;
	return (x->state > y->state) - (x->state < y->state);
}

static void
skip(struct km_cluster_decision *d, const char *id, const char *why)
{
	if (d->nb_skipped++ == 0)
		fail(d->skipped, sizeof(d->skipped), 0, "member %.*s: %s", KM_CLUSTER_ID_MAX, id,
			why);
}

/* The valid members, sorted by id, one per id; the others counted in d. */
static struct km_cluster_member *
members_sorted(const struct km_cluster_member *mem, uint32_t nb_mem, uint32_t *nb,
	struct km_cluster_decision *d)
{
	struct km_cluster_member *v;
	uint32_t i, n = 0;

	v = malloc(((size_t)nb_mem + 1) * sizeof(*v));
	if (v == NULL)
		return NULL;
	for (i = 0; i < nb_mem; i++) {
		const struct km_cluster_member *x = &mem[i];
		const char *why = NULL;

		if (memchr(x->id, '\0', sizeof(x->id)) == NULL || !km_cluster_id_valid(x->id))
			why = "not a valid id";
		else if (x->ip == 0)
			why = "address 0.0.0.0";
		else if (x->workers == 0 || x->workers > KM_WORKERS_MAX)
			why = "workers out of range";
		else if (x->port == 0 || (uint32_t)x->port + x->workers - 1 > UINT16_MAX)
			why = "port out of range";
		else if (x->incarnation == 0 || x->incarnation > INT64_MAX)
			why = "incarnation out of range";
		else if (x->state != KM_CMAP_ACTIVE && x->state != KM_CMAP_DRAINING)
			why = "not a state";
		if (why != NULL) {
			/* An id that is not valid may not even be a string: not shown. */
			skip(d,
				memchr(x->id, 0, sizeof(x->id)) && km_cluster_id_valid(x->id)
					? x->id
					: "?",
				why);
			continue;
		}
		v[n++] = *x;
	}
	qsort(v, n, sizeof(*v), member_cmp);
	for (i = 0, *nb = 0; i < n; i++) {
		if (*nb > 0 && strcmp(v[*nb - 1].id, v[i].id) == 0) {
			skip(d, v[i].id, "listed twice");
			continue;
		}
		v[(*nb)++] = v[i];
	}
	return v;
}

static const struct km_cluster_member *
member_find(const struct km_cluster_member *v, uint32_t n, const char *id)
{
	uint32_t lo = 0, hi = n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (strcmp(v[mid].id, id) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && strcmp(v[lo].id, id) == 0 ? &v[lo] : NULL;
}

static void
node_from_member(struct km_cmap_node *n, const struct km_cluster_member *x)
{
	memcpy(n->id, x->id, sizeof(n->id));
	n->ip = x->ip;
	n->port = x->port;
	n->workers = x->workers;
	n->incarnation = x->incarnation;
	n->state = x->state;
	n->down = 0;
}

/* Rule 1: the first map. NULL map and 0 when no member asks to be active. */
static int
first_map(const struct km_cluster_params *p, const struct km_cluster_member *v, uint32_t nb,
	struct km_cluster_decision *d)
{
	uint16_t slot_node[KM_WORKERS_MAX], slot_worker[KM_WORKERS_MAX], maxw = 0, k, n;
	uint32_t i, total = 0, nb_slots = 0;
	struct km_cmap *m;

	m = km_cmap_alloc(p->initial_shards);
	if (m == NULL)
		return -ENOMEM;
	m->epoch = 1;
	m->route_sep = p->route_sep;
	m->route_depth = p->route_depth;
	for (i = 0; i < nb; i++) {
		if (v[i].state != KM_CMAP_ACTIVE)
			continue;
		if (m->nb_nodes == KM_CLUSTER_NODES_MAX || total + v[i].workers > KM_WORKERS_MAX) {
			skip(d, v[i].id, "over the limits of the node table");
			continue;
		}
		node_from_member(&m->nodes[m->nb_nodes++], &v[i]);
		total += v[i].workers;
		if (v[i].workers > maxw)
			maxw = v[i].workers;
	}
	if (m->nb_nodes == 0) {
		km_cmap_free(m);
		return 0;
	}
	/* Workers in rounds: worker 0 of every node, then worker 1, ... */
	for (k = 0; k < maxw; k++)
		for (n = 0; n < m->nb_nodes; n++)
			if (k < m->nodes[n].workers) {
				slot_node[nb_slots] = n;
				slot_worker[nb_slots++] = k;
			}
	for (i = 0; i < m->nb_shards; i++) {
		m->shards[i].id = (uint64_t)p->initial_shards | i;
		m->shards[i].node = slot_node[i % nb_slots];
		m->shards[i].worker = slot_worker[i % nb_slots];
	}
	if (km_cmap_finish(m, NULL, 0) != 0) {
		km_cmap_free(m);
		return -EINVAL;
	}
	d->map = m;
	return 0;
}

/* Rule 2 on t (a copy of the current map). */
static void
update_table(struct km_cmap *t, const struct km_cluster_member *v, uint32_t nb,
	struct km_cluster_decision *d)
{
	uint32_t cnt[KM_CLUSTER_NODES_MAX] = {0}, total = km_cmap_total_workers(t), i;
	int remap[KM_CLUSTER_NODES_MAX];
	uint16_t n, k, kept;

	for (n = 0; n < t->nb_nodes; n++) {
		struct km_cmap_node *nd = &t->nodes[n];
		const struct km_cluster_member *x = member_find(v, nb, nd->id);

		if (x == NULL || total - nd->workers + x->workers > KM_WORKERS_MAX) {
			if (x != NULL)
				skip(d, x->id, "more workers than the cluster has room for");
			nd->down = 1;
			continue;
		}
		total = total - nd->workers + x->workers;
		if (x->workers < nd->workers) {
			/* Back with fewer workers: the shards of the workers gone go to the
			 * remaining ones, fewest shards first (their data is on this node). */
			uint32_t wc[KM_WORKERS_MAX] = {0};

			for (i = 0; i < t->nb_shards; i++)
				if (t->shards[i].node == n && t->shards[i].worker < x->workers)
					wc[t->shards[i].worker]++;
			for (i = 0; i < t->nb_shards; i++) {
				uint16_t best = 0;

				if (t->shards[i].node != n || t->shards[i].worker < x->workers)
					continue;
				for (k = 1; k < x->workers; k++)
					if (wc[k] < wc[best])
						best = k;
				t->shards[i].worker = best;
				wc[best]++;
			}
			/* Its replicas of the workers gone: on worker 0 (copied again there). */
			for (i = 0; i < t->nb_shards; i++)
				for (k = 0; k < t->shards[i].nb_replicas; k++)
					if (t->shards[i].replicas[k].node == n &&
						t->shards[i].replicas[k].worker >= x->workers) {
						t->shards[i].replicas[k].worker = 0;
						t->shards[i].replicas[k].in_sync = 0;
					}
		}
		node_from_member(nd, x);
	}
	for (i = 0; i < nb; i++) {
		if (v[i].state != KM_CMAP_ACTIVE || km_cmap_node_find(t, v[i].id) >= 0)
			continue;
		if (t->nb_nodes == KM_CLUSTER_NODES_MAX || total + v[i].workers > KM_WORKERS_MAX) {
			skip(d, v[i].id, "over the limits of the node table");
			continue;
		}
		node_from_member(&t->nodes[t->nb_nodes++], &v[i]);
		total += v[i].workers;
	}
	/* Rule 2, last part: a draining or down node without shards leaves. */
	for (i = 0; i < t->nb_shards; i++)
		cnt[t->shards[i].node]++;
	for (n = 0, kept = 0; n < t->nb_nodes; n++) {
		struct km_cmap_node *nd = &t->nodes[n];

		if (cnt[n] == 0 && (nd->state == KM_CMAP_DRAINING || nd->down)) {
			remap[n] = -1;
			continue;
		}
		remap[n] = kept;
		if (kept != n)
			t->nodes[kept] = *nd;
		kept++;
	}
	if (kept != t->nb_nodes) {
		memset(&t->nodes[kept], 0, (size_t)(t->nb_nodes - kept) * sizeof(t->nodes[0]));
		t->nb_nodes = kept;
		for (i = 0; i < t->nb_shards; i++) {
			struct km_cmap_shard *sh = &t->shards[i];
			unsigned int r, j = 0;

			sh->node = (uint16_t)remap[sh->node];
			/* Replicas on a node that left go with it. */
			for (r = 0; r < sh->nb_replicas; r++)
				if (remap[sh->replicas[r].node] >= 0) {
					sh->replicas[j] = sh->replicas[r];
					sh->replicas[j++].node =
						(uint16_t)remap[sh->replicas[r].node];
				}
			sh->nb_replicas = (uint8_t)j;
		}
	}
	km_cluster_set_first(t);
}

static int
params_check(const struct km_cluster_params *p, char *err, size_t errlen)
{
	uint32_t s = p->initial_shards;

	if (s == 0 || s > KM_CLUSTER_SHARDS_MAX || (s & (s - 1)) != 0)
		return fail(err, errlen, -EINVAL,
			"initial_shards: %" PRIu32 " is not a power of two in 1..%u", s,
			KM_CLUSTER_SHARDS_MAX);
	if (p->route_sep == 0 || p->route_sep > 0x7f)
		return fail(err, errlen, -EINVAL, "route_sep: not one ASCII character");
	if (p->route_depth == 0)
		return fail(err, errlen, -EINVAL, "route_depth: 0 is out of range (1..255)");
	if (p->max_moves > KM_CLUSTER_MOVES_MAX)
		return fail(err, errlen, -EINVAL, "max_moves: %" PRIu32 " is over %u", p->max_moves,
			KM_CLUSTER_MOVES_MAX);
	if (p->balance_pct != 0 && p->balance_pct <= 100)
		return fail(err, errlen, -EINVAL, "balance_pct: %" PRIu32 " is not above 100",
			p->balance_pct);
	if (!(p->min_rate >= 0) || isinf(p->min_rate))
		return fail(err, errlen, -EINVAL, "min_rate: not a finite number >= 0");
	return 0;
}

void
km_cluster_decision_free(struct km_cluster_decision *d)
{
	if (d == NULL)
		return;
	km_cmap_free(d->map);
	free(d->moves);
	memset(d, 0, sizeof(*d));
}

int
km_cluster_decide(const struct km_cluster_params *p, const struct km_cmap *cur,
	const struct km_cluster_member *mem, uint32_t nb_mem, const struct km_cluster_rate *rates,
	uint32_t nb_rates, struct km_cluster_decision *d, char *err, size_t errlen)
{
	struct km_cluster_member *v = NULL;
	struct plan pl;
	struct km_cmap *t = NULL;
	double *rate = NULL;
	uint32_t nb = 0, i;
	uint16_t n;
	int rc;

	if (d == NULL)
		return fail(err, errlen, -EINVAL, "no decision");
	km_cluster_decision_free(d);
	if (p == NULL || (mem == NULL && nb_mem != 0) || (rates == NULL && nb_rates != 0))
		return fail(err, errlen, -EINVAL, "missing argument");
	rc = params_check(p, err, errlen);
	if (rc != 0)
		return rc;
	if (cur != NULL) {
		char why[KM_CLUSTER_ERR_MAX];

		if (km_cmap_check(cur, why, sizeof(why)) != 0)
			return fail(err, errlen, -EINVAL, "current map: %s", why);
	}
	v = members_sorted(mem, nb_mem, &nb, d);
	if (v == NULL)
		return fail(err, errlen, -ENOMEM, "out of memory");
	if (cur == NULL) {
		rc = first_map(p, v, nb, d);
		goto out;
	}

	t = km_cmap_dup(cur);
	if (t == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	update_table(t, v, nb, d);
	if (!km_cluster_table_equal(t, cur)) {
		if (cur->epoch == UINT32_MAX) {
			rc = fail(err, errlen, -EOVERFLOW, "epoch: cannot grow past %" PRIu32,
				cur->epoch);
			goto out;
		}
		t->epoch = cur->epoch + 1;
		if (km_cmap_check(t, err, errlen) != 0) {
			rc = -EINVAL; /* not reached: every rule keeps the map valid */
			goto out;
		}
		d->map = km_cmap_dup(t);
		if (d->map == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}

	/* Rule 3 on t, which becomes the working copy. */
	memset(&pl, 0, sizeof(pl));
	pl.w = t;
	pl.max_mv = p->max_moves;
	pl.ratio = p->balance_pct / 100.0;
	rate = calloc(t->nb_shards, sizeof(*rate));
	pl.moved = calloc(t->nb_shards, 1);
	pl.mv = calloc(p->max_moves + 1, sizeof(*pl.mv));
	if (rate == NULL || pl.moved == NULL || pl.mv == NULL) {
		rc = -ENOMEM;
		goto plan_out;
	}
	for (i = 0; i < nb_rates; i++) {
		const struct km_cmap_shard *s = km_cmap_shard_find(t, rates[i].id);
		double r = rates[i].rate;

		/* Order-free: an id given twice counts with its largest rate. */
		if (s != NULL && r > 0 && isfinite(r) && r > rate[s - t->shards])
			rate[s - t->shards] = r;
	}
	pl.rate = rate;
	for (n = 0; n < t->nb_nodes; n++)
		pl.eligible[n] = t->nodes[n].state == KM_CMAP_ACTIVE && !t->nodes[n].down;
	for (i = 0; i < t->nb_shards; i++) {
		uint16_t g = gowner(t, t->shards[i].node, t->shards[i].worker);

		pl.cnt[g]++;
		pl.load[g] += rate[i];
		if (rate[i] > 0 && pl.eligible[t->shards[i].node])
			pl.rates_known = 1;
	}
	plan_drain(&pl);
	plan_share(&pl);
	rc = plan_load(&pl, p->min_rate);
	if (rc == 0 && pl.nb_mv > 0) {
		d->moves = pl.mv;
		d->nb_moves = pl.nb_mv;
		pl.mv = NULL;
	}
plan_out:
	free(rate);
	free(pl.moved);
	free(pl.mv);
out:
	free(v);
	km_cmap_free(t);
	if (rc != 0) {
		uint32_t ns = d->nb_skipped;
		char sk[KM_CLUSTER_ERR_MAX];

		memcpy(sk, d->skipped, sizeof(sk));
		km_cluster_decision_free(d);
		d->nb_skipped = ns;
		memcpy(d->skipped, sk, sizeof(sk));
		if (rc == -ENOMEM)
			fail(err, errlen, rc, "out of memory");
	}
	return rc;
}
