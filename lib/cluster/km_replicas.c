/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * The placer's replica rules (km_cluster.h, km_cluster_replicas()): failover, dropped
 * replicas, the in-sync set, re-replication. Pure: the map, the members and the primaries'
 * reports in, a new map out.
 */

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cluster_private.h"

static const struct km_cluster_member *
live(const struct km_cluster_member *mem, uint32_t nb, const char *id)
{
	const struct km_cluster_member *best = NULL;
	uint32_t i;

	/* Of two records with one id, the newer incarnation counts (as km_cluster_decide). */
	for (i = 0; i < nb; i++)
		if (strcmp(mem[i].id, id) == 0 &&
			(best == NULL || mem[i].incarnation > best->incarnation))
			best = &mem[i];
	return best;
}

/* The node can hold a copy: live at the map's incarnation, serving, active, not down. */
static int
eligible(const struct km_cmap *m, uint16_t n, const struct km_cluster_member *mem, uint32_t nb)
{
	const struct km_cmap_node *nd = &m->nodes[n];
	const struct km_cluster_member *x = live(mem, nb, nd->id);

	return x != NULL && x->incarnation == nd->incarnation && x->serving &&
	       x->state == KM_CMAP_ACTIVE && nd->state == KM_CMAP_ACTIVE && !nd->down;
}

/* The primary's report of shard sh's replica on node rn: its state, or -1 (none). */
static int
reported(const struct km_cmap *m, const struct km_cmap_shard *sh, uint16_t rn,
	const struct km_cluster_repl *const *reports, uint32_t nb)
{
	const struct km_cmap_node *p = &m->nodes[sh->node], *r = &m->nodes[rn];
	uint32_t i, k;

	for (i = 0; i < nb; i++) {
		const struct km_cluster_repl *rp = reports[i];

		if (rp == NULL || strcmp(rp->node, p->id) != 0 || rp->incarnation != p->incarnation)
			continue;
		for (k = 0; k < rp->nb; k++)
			if (rp->e[k].shard == sh->id && strcmp(rp->e[k].node, r->id) == 0 &&
				rp->e[k].incarnation == r->incarnation)
				return rp->e[k].state;
	}
	return -1;
}

static void
drop_replica(struct km_cmap_shard *sh, unsigned int k)
{
	for (; k + 1 < sh->nb_replicas; k++)
		sh->replicas[k] = sh->replicas[k + 1];
	sh->nb_replicas--;
}

int
km_cluster_replicas(const struct km_cmap *m, const struct km_cluster_member *mem, uint32_t nb_mem,
	const struct km_cluster_repl *const *reports, uint32_t nb_reports, unsigned int copies,
	struct km_cmap **out, struct km_cluster_repl_changes *ch)
{
	uint32_t load[KM_CLUSTER_NODES_MAX] = {0}, i, nb_elig = 0;
	uint8_t elig[KM_CLUSTER_NODES_MAX] = {0};
	struct km_cmap *n;
	unsigned int k;
	uint16_t x;

	if (m == NULL || out == NULL || ch == NULL || (mem == NULL && nb_mem != 0) ||
		(reports == NULL && nb_reports != 0) || copies < 1 || copies > 3 ||
		km_cmap_check(m, NULL, 0) != 0)
		return -EINVAL;
	memset(ch, 0, sizeof(*ch));
	*out = NULL;
	if (m->epoch == UINT32_MAX)
		return -EOVERFLOW;
	n = km_cmap_dup(m);
	if (n == NULL)
		return -ENOMEM;
	for (x = 0; x < n->nb_nodes; x++) {
		elig[x] = (uint8_t)eligible(n, x, mem, nb_mem);
		nb_elig += elig[x];
	}
	for (i = 0; i < n->nb_shards; i++) {
		struct km_cmap_shard *sh = &n->shards[i];
		const struct km_cmap_node *pn = &n->nodes[sh->node];
		const struct km_cluster_member *pm = live(mem, nb_mem, pn->id);

		/* a. Failover. */
		if (pm == NULL || pm->incarnation != pn->incarnation) {
			for (k = 0; k < sh->nb_replicas; k++)
				if (sh->replicas[k].in_sync && elig[sh->replicas[k].node])
					break;
			if (k < sh->nb_replicas) {
				uint16_t from = sh->node;

				sh->node = sh->replicas[k].node;
				sh->worker = sh->replicas[k].worker;
				drop_replica(sh, k);
				for (k = 0; k < sh->nb_replicas; k++)
					sh->replicas[k].in_sync = 0;
				if (ch->failovers++ == 0)
					snprintf(ch->first, sizeof(ch->first),
						"shard %llu failed over from %s to %s",
						(unsigned long long)sh->id, n->nodes[from].id,
						n->nodes[sh->node].id);
			}
		}
		/* b. Replicas that cannot be. */
		for (k = 0; k < sh->nb_replicas;) {
			const struct km_cmap_replica *r = &sh->replicas[k];

			if (r->node == sh->node || !elig[r->node]) {
				drop_replica(sh, k);
				ch->dropped++;
				continue;
			}
			k++;
		}
		/* c. The in-sync set, from the primary's word. */
		for (k = 0; k < sh->nb_replicas; k++) {
			struct km_cmap_replica *r = &sh->replicas[k];
			int st = reported(n, sh, r->node, reports, nb_reports);

			if (!r->in_sync && st == KM_CLUSTER_REPL_CAUGHT_UP) {
				r->in_sync = 1;
				ch->in_sync++;
			} else if (r->in_sync &&
				   (st == KM_CLUSTER_REPL_COPY || st == KM_CLUSTER_REPL_BROKEN)) {
				r->in_sync = 0;
				ch->out_of_sync++;
			}
		}
		load[sh->node]++;
		for (k = 0; k < sh->nb_replicas; k++)
			load[sh->replicas[k].node]++;
	}
	/* d. Re-replication, shard by shard in id order (deterministic). */
	if (copies > nb_elig + 1)
		copies = nb_elig + 1;
	for (i = 0; i < n->nb_shards; i++) {
		struct km_cmap_shard *sh = &n->shards[i];

		/* Fewer copies asked: the excess goes, replicas out of sync first. */
		while (sh->nb_replicas + 1u > copies) {
			for (k = sh->nb_replicas; k > 0 && sh->replicas[k - 1].in_sync; k--)
				;
			k = k > 0 ? k - 1 : sh->nb_replicas - 1u;
			load[sh->replicas[k].node]--;
			drop_replica(sh, k);
			ch->dropped++;
		}
		while (sh->nb_replicas + 1u < copies && sh->nb_replicas < KM_CLUSTER_REPLICAS_MAX) {
			uint32_t wl[KM_WORKERS_MAX] = {0}, j;
			int best = -1;
			uint16_t w = 0;

			for (x = 0; x < n->nb_nodes; x++) {
				if (!elig[x] || x == sh->node)
					continue;
				for (k = 0; k < sh->nb_replicas && sh->replicas[k].node != x; k++)
					;
				if (k < sh->nb_replicas)
					continue;
				if (best < 0 || load[x] < load[best])
					best = x;
			}
			if (best < 0)
				break;
			/* Its worker with the fewest copies. */
			for (j = 0; j < n->nb_shards; j++) {
				const struct km_cmap_shard *o = &n->shards[j];

				if (o->node == best)
					wl[o->worker]++;
				for (k = 0; k < o->nb_replicas; k++)
					if (o->replicas[k].node == best)
						wl[o->replicas[k].worker]++;
			}
			for (j = 1; j < n->nodes[best].workers; j++)
				if (wl[j] < wl[w])
					w = (uint16_t)j;
			sh->replicas[sh->nb_replicas++] =
				(struct km_cmap_replica){.node = (uint16_t)best, .worker = w};
			load[best]++;
			ch->added++;
		}
	}
	if (km_cluster_table_equal(n, m)) {
		km_cmap_free(n);
		return 0;
	}
	n->epoch++;
	if (km_cmap_check(n, NULL, 0) != 0) {
		km_cmap_free(n);
		return -EINVAL; /* cannot be: every rule keeps the map valid */
	}
	*out = n;
	return 1;
}
