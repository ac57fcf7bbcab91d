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

/* The coldest buddy pair colder than `below` for hysteresis samples (cold streaks are
 * kept on the even member), or -1. */
static int64_t
place_cold_pair(
	const struct km_policy_place_conf *c, struct km_policy_shard *s, uint32_t n, double below)
{
	int64_t best = -1;
	double best_rate = 0;
	uint32_t i, j;

	for (i = 0; i < n; i++) {
		if ((s[i].id & 1) != 0 || s[i].id < 2)
			continue;
		for (j = 0; j < n && s[j].id != (s[i].id ^ 1); j++)
			;
		if (j == n || s[i].pinned || s[j].pinned || s[i].rate + s[j].rate >= below) {
			s[i].cold = 0;
			continue;
		}
		if (++s[i].cold < c->hysteresis)
			continue;
		if (best < 0 || s[i].rate + s[j].rate < best_rate) {
			best = i;
			best_rate = s[i].rate + s[j].rate;
		}
	}
	return best;
}

int
km_policy_place(const struct km_policy_place_conf *c, struct km_policy_shard *s, uint32_t n,
	uint16_t nb_workers, uint32_t *streak, struct km_policy_decision *d)
{
	double load[KM_WORKERS_MAX] = {0}, total = 0, mean, gap, best_rate = -1;
	uint16_t w, hi = 0, lo = 0;
	int64_t best = -1, hottest = -1, pair;
	uint32_t i;

	if (c == NULL || s == NULL || streak == NULL || d == NULL || nb_workers == 0 ||
		nb_workers > KM_WORKERS_MAX)
		return -EINVAL;
	*d = (struct km_policy_decision){.action = KM_POLICY_NONE};
	for (i = 0; i < n; i++) {
		if (s[i].owner >= nb_workers)
			return -EINVAL;
		load[s[i].owner] += s[i].rate;
		total += s[i].rate;
	}
	if (nb_workers < 2 || total < c->min_rate || total <= 0) {
		*streak = 0;
		return 0;
	}
	mean = total / nb_workers;
	for (w = 1; w < nb_workers; w++) {
		if (load[w] > load[hi])
			hi = w;
		if (load[w] < load[lo])
			lo = w;
	}
	if (load[hi] * 100 <= mean * (double)c->imbalance_pct) {
		*streak = 0;
		/* Balanced: fold back a pair of buddies that went cold. */
		if (n > c->min_count) {
			pair = place_cold_pair(c, s, n, total / n / 16);
			if (pair >= 0) {
				for (i = 0; i < n; i++)
					s[i].cold = 0;
				*d = (struct km_policy_decision){
					.action = KM_POLICY_MERGE, .id = s[pair].id};
			}
		}
		return 0;
	}
	if (++*streak < c->hysteresis)
		return 0;
	gap = load[hi] - load[lo];
	for (i = 0; i < n; i++) {
		if (s[i].owner != hi || s[i].pinned)
			continue;
		if (hottest < 0 || s[i].rate > s[hottest].rate)
			hottest = i;
		/* Worth a move: a twentieth of the gap at least. */
		if (s[i].rate >= gap / 20 && s[i].rate <= gap / 2 && s[i].rate > best_rate) {
			best = i;
			best_rate = s[i].rate;
		}
	}
	*streak = 0;
	if (best >= 0) {
		*d = (struct km_policy_decision){
			.action = KM_POLICY_MOVE, .id = s[best].id, .to = lo};
		return 0;
	}
	if (hottest < 0 || s[hottest].keys < 2 ||
		km_shard_depth(s[hottest].id) >= KM_SHARD_DEPTH_MAX || n >= c->max_count)
		return 0;
	/* A buddy beside it under a tenth of its rate: the last split did not spread the
	 * load (one hot key), another would not either. */
	for (i = 0; i < n; i++)
		if (s[i].id == (s[hottest].id ^ 1) && s[i].owner == hi &&
			s[i].rate * 10 < s[hottest].rate)
			return 0;
	*d = (struct km_policy_decision){.action = KM_POLICY_SPLIT, .id = s[hottest].id};
	return 0;
}
