/* SPDX-License-Identifier: BSD-3-Clause */

#include <errno.h>
#include <stdlib.h>

#include <km_shardmap.h>
#include <km_store.h>

#include "km_policy.h"

/* Shard ids and their index in s, sorted by id: to find a shard's buddy. */
struct id_idx {
	uint64_t id;
	uint32_t i;
};

static int
id_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct id_idx *)a)->id, y = ((const struct id_idx *)b)->id;

	return x < y ? -1 : x > y;
}

static const struct km_policy_shard *
find(const struct km_policy_shard *s, const struct id_idx *t, uint32_t n, uint64_t id)
{
	uint32_t lo = 0, hi = n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (t[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && t[lo].id == id ? &s[t[lo].i] : NULL;
}

int
km_policy_shards(const struct km_policy_shard_conf *c, struct km_policy_shard *s, uint32_t n,
	struct km_policy_decision *d)
{
	const struct km_policy_shard *b;
	struct km_policy_shard *hot = NULL, *cold = NULL;
	struct id_idx *t;
	uint32_t i;

	if (c == NULL || d == NULL || (s == NULL && n != 0))
		return -EINVAL;
	d->action = KM_POLICY_NONE;
	d->id = 0;
	if (c->split_rate == 0 && c->merge_rate == 0)
		return 0;
	t = malloc(((size_t)n + 1) * sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		t[i] = (struct id_idx){.id = s[i].id, .i = i};
	qsort(t, n, sizeof(*t), id_cmp);
	for (i = 0; i < n; i++) {
		s[i].hot =
			c->split_rate != 0 && s[i].rate > (double)c->split_rate ? s[i].hot + 1 : 0;
		b = s[i].id <= 1 ? NULL : find(s, t, n, s[i].id ^ 1);
		/* Splitting cannot spread one hot key, nor a shard whose last split sent all the
		 * load one way (its buddy gets under a tenth of it): such a shard stays. */
		if (s[i].hot >= c->hysteresis && !s[i].pinned &&
			km_shard_depth(s[i].id) < KM_SHARD_DEPTH_MAX && n < c->max_count &&
			s[i].keys >= 2 && (b == NULL || b->rate * 10 >= s[i].rate) &&
			(hot == NULL || s[i].rate > hot->rate))
			hot = &s[i];
		/* Buddy pairs are tracked on their even member. */
		if ((s[i].id & 1) != 0)
			b = NULL;
		s[i].cold = c->merge_rate != 0 && b != NULL &&
					    s[i].rate + b->rate < (double)c->merge_rate
				    ? s[i].cold + 1
				    : 0;
		if (s[i].cold >= c->hysteresis && n > c->min_count && !s[i].pinned && b != NULL &&
			!b->pinned && (cold == NULL || s[i].rate < cold->rate))
			cold = &s[i];
	}
	free(t);
	if (hot != NULL) {
		d->action = KM_POLICY_SPLIT;
		d->id = hot->id;
	} else if (cold != NULL) {
		d->action = KM_POLICY_MERGE;
		d->id = cold->id;
	} else {
		return 0;
	}
	for (i = 0; i < n; i++)
		s[i].hot = s[i].cold = 0;
	return 0;
}

int
km_policy_tiers(const struct km_policy_tier_conf *c, struct km_policy_shard *s, uint32_t n,
	struct km_policy_decision *d)
{
	struct km_policy_shard *pick = NULL;
	uint32_t i;

	if (c == NULL || d == NULL || (s == NULL && n != 0))
		return -EINVAL;
	d->action = KM_POLICY_NONE;
	d->id = 0;
	for (i = 0; i < n; i++) {
		s[i].chill = c->cold_rate != 0 && s[i].tier == KM_TIER_HOT &&
					     s[i].rate < (double)c->cold_rate
				     ? s[i].chill + 1
				     : 0;
		s[i].warm = c->warm_rate != 0 && s[i].tier == KM_TIER_COLD &&
					    s[i].rate > (double)c->warm_rate
				    ? s[i].warm + 1
				    : 0;
		if (pick != NULL || s[i].pinned)
			continue;
		if (s[i].warm >= c->hysteresis)
			d->action = KM_POLICY_TO_HOT;
		else if (s[i].chill >= c->hysteresis && s[i].keys != 0)
			d->action = KM_POLICY_TO_COLD;
		else if (c->compact_pct != 0 && s[i].file_bytes >= c->compact_min_bytes &&
			 s[i].dead_bytes * 100 > s[i].file_bytes * c->compact_pct)
			d->action = KM_POLICY_COMPACT;
		else
			continue;
		pick = &s[i];
		d->id = pick->id;
	}
	if (pick != NULL)
		pick->chill = pick->warm = 0;
	return 0;
}

uint16_t
km_policy_place_new(const double *load, uint16_t nb_workers, double rate)
{
	uint16_t w, best = 0;

	if (load == NULL)
		return 0;
	for (w = 1; w < nb_workers; w++)
		if (load[w] + rate < load[best] + rate)
			best = w;
	return best;
}

/* The most loaded of load[0..nb) (the first by index on a tie). */
static uint16_t
most_loaded(const double *load, uint16_t nb)
{
	uint16_t w, best = 0;

	for (w = 1; w < nb; w++)
		if (load[w] > load[best])
			best = w;
	return best;
}

int
km_policy_place(const struct km_policy_place_conf *c, struct km_policy_place_state *st,
	const struct km_policy_shard *s, uint32_t n, uint16_t nb_workers, double dt,
	struct km_policy_move *mv, uint32_t max_mv, uint32_t *nb_mv)
{
	double *load, total = 0, mean, target, gap, burst;
	uint8_t *moved;
	uint16_t hi, lo;
	uint32_t i, pick;
	int rc = 0;

	if (c == NULL || st == NULL || nb_mv == NULL || (s == NULL && n != 0) ||
		(mv == NULL && max_mv != 0) || nb_workers == 0 || c->hysteresis == 0 ||
		!(c->ratio == 0 || c->ratio > 1) || !(c->moves_per_s > 0) || !(dt >= 0))
		return -EINVAL;
	*nb_mv = 0;
	for (i = 0; i < n; i++)
		if (s[i].owner >= nb_workers)
			return -EINVAL;
	load = calloc(nb_workers, sizeof(*load));
	moved = calloc((size_t)n + 1, 1);
	if (load == NULL || moved == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	burst = c->moves_per_s > 1 ? c->moves_per_s : 1;
	st->tokens += c->moves_per_s * dt;
	if (st->tokens > burst)
		st->tokens = burst;
	for (i = 0; i < n; i++) {
		load[s[i].owner] += s[i].rate;
		total += s[i].rate;
	}
	mean = total / nb_workers;
	hi = most_loaded(load, nb_workers);
	if (c->ratio == 0 || nb_workers < 2 || !(mean > 0) || mean < c->min_load ||
		load[hi] <= c->ratio * mean) {
		st->over = 0;
		goto out;
	}
	if (st->over < UINT32_MAX)
		st->over++;
	if (st->over < c->hysteresis)
		goto out;
	target = mean * (1 + (c->ratio - 1) / 2);
	while (*nb_mv < max_mv && st->tokens >= 1) {
		hi = most_loaded(load, nb_workers);
		lo = km_policy_place_new(load, nb_workers, 0);
		if (load[hi] <= target)
			break;
		gap = load[hi] - load[lo];
		pick = n;
		for (i = 0; i < n; i++) {
			if (s[i].owner != hi || moved[i] || s[i].pinned || !(s[i].rate > 0) ||
				s[i].rate > gap / 2)
				continue;
			if (pick == n || s[i].rate > s[pick].rate)
				pick = i;
		}
		if (pick == n)
			break;
		moved[pick] = 1;
		load[hi] -= s[pick].rate;
		load[lo] += s[pick].rate;
		mv[(*nb_mv)++] = (struct km_policy_move){.id = s[pick].id, .from = hi, .to = lo};
		st->tokens -= 1;
	}
	if (*nb_mv > 0)
		st->over = 0;
out:
	free(load);
	free(moved);
	return rc;
}
