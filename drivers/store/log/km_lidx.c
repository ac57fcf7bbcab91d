/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The log store's DRAM index: linear probing over an array of 24-byte slots.
 *
 * Invariant (what lookups rely on): every used slot is reachable from its home slot
 * through used slots only. Insertion takes the first free slot from home; deletion
 * restores the invariant by moving later entries of the cluster back into the hole when
 * the hole lies on their probe path (from their home to where they are, wrapping around
 * the end of the array). There is always at least one free slot (growth above 7/8,
 * fit never below count + 1), so every probe loop ends.
 */

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <km_store.h>

#include "km_lidx.h"

/* A log store per shard, many shards per worker: keep an unsized index small. */
#define LIDX_SLOTS_MIN 16

struct km_lidx {
	struct km_lidx_ent *slots;
	uint64_t nb_slots;
	uint64_t count; /* used slots */
};

static inline uint64_t
lidx_home(uint64_t hash, uint64_t nb_slots)
{
	return (uint64_t)(((__uint128_t)km_scan_order(hash) * nb_slots) >> 64);
}

static inline uint64_t
lidx_next_slot(uint64_t i, uint64_t nb_slots)
{
	return i + 1 == nb_slots ? 0 : i + 1;
}

/* Forward distance from slot a to slot b, wrapping around the end. */
static inline uint64_t
lidx_dist(uint64_t a, uint64_t b, uint64_t nb_slots)
{
	return b >= a ? b - a : b + nb_slots - a;
}

/* More than 7/8 of the slots used once count entries are in. */
static inline int
lidx_over_load(uint64_t count, uint64_t nb_slots)
{
	/* count > 7 n / 8  <=>  count > floor(7 n / 8) = n - ceil(n / 8) */
	return count > nb_slots - (nb_slots + 7) / 8;
}

static struct km_lidx_ent *
lidx_alloc(uint64_t nb_slots)
{
	if (nb_slots > SIZE_MAX / sizeof(struct km_lidx_ent))
		return NULL;
	/* calloc: version 0 marks every slot free. */
	return calloc(nb_slots, sizeof(struct km_lidx_ent));
}

/* Move every entry into a new array of nb_slots (> count) slots. */
static int
lidx_resize(struct km_lidx *x, uint64_t nb_slots)
{
	struct km_lidx_ent *ns = lidx_alloc(nb_slots);
	uint64_t i, j;

	if (ns == NULL)
		return -ENOMEM;
	for (i = 0; i < x->nb_slots; i++) {
		if (x->slots[i].version == 0)
			continue;
		j = lidx_home(x->slots[i].hash, nb_slots);
		while (ns[j].version != 0)
			j = lidx_next_slot(j, nb_slots);
		ns[j] = x->slots[i];
	}
	free(x->slots);
	x->slots = ns;
	x->nb_slots = nb_slots;
	return 0;
}

int
km_lidx_create(uint64_t initial, struct km_lidx **out)
{
	struct km_lidx *x;
	uint64_t n;

	if (out == NULL)
		return -EINVAL;
	/* The smallest n with initial <= n - n / 8, i.e. about initial * 8 / 7. */
	if (initial > UINT64_MAX / 8)
		return -ENOMEM;
	n = initial + (initial + 6) / 7;
	while (lidx_over_load(initial, n))
		n++;
	if (n < LIDX_SLOTS_MIN)
		n = LIDX_SLOTS_MIN;
	x = calloc(1, sizeof(*x));
	if (x == NULL)
		return -ENOMEM;
	x->slots = lidx_alloc(n);
	if (x->slots == NULL) {
		free(x);
		return -ENOMEM;
	}
	x->nb_slots = n;
	*out = x;
	return 0;
}

void
km_lidx_destroy(struct km_lidx *x)
{
	if (x == NULL)
		return;
	free(x->slots);
	free(x);
}

struct km_lidx_ent *
km_lidx_find(struct km_lidx *x, uint64_t hash)
{
	uint64_t i = lidx_home(hash, x->nb_slots);
	struct km_lidx_ent *e;

	for (;;) {
		e = &x->slots[i];
		if (e->version == 0)
			return NULL;
		if (e->hash == hash)
			return e;
		i = lidx_next_slot(i, x->nb_slots);
	}
}

struct km_lidx_ent *
km_lidx_upsert(struct km_lidx *x, uint64_t hash, int *created)
{
	struct km_lidx_ent *e = km_lidx_find(x, hash);
	uint64_t i;

	if (e != NULL) {
		*created = 0;
		return e;
	}
	if (lidx_over_load(x->count + 1, x->nb_slots) &&
		lidx_resize(x, x->nb_slots + x->nb_slots / 2) != 0)
		return NULL;
	i = lidx_home(hash, x->nb_slots);
	while (x->slots[i].version != 0)
		i = lidx_next_slot(i, x->nb_slots);
	e = &x->slots[i];
	e->hash = hash;
	e->loc = 0;
	x->count++;
	*created = 1;
	return e;
}

void
km_lidx_remove(struct km_lidx *x, struct km_lidx_ent *e)
{
	uint64_t n = x->nb_slots, hole = (uint64_t)(e - x->slots), j = hole, h;

	for (;;) {
		j = lidx_next_slot(j, n);
		if (x->slots[j].version == 0)
			break;
		h = lidx_home(x->slots[j].hash, n);
		/* The hole is on j's probe path when it is no further from j than j's home. */
		if (lidx_dist(h, j, n) >= lidx_dist(hole, j, n)) {
			x->slots[hole] = x->slots[j];
			hole = j;
		}
	}
	memset(&x->slots[hole], 0, sizeof(x->slots[hole]));
	x->count--;
}

int
km_lidx_fit(struct km_lidx *x, double load)
{
	double want;
	uint64_t n;

	if (!(load > 0.0 && load <= 0.95))
		return -EINVAL;
	want = (double)x->count / load;
	if (want >= 18446744073709551615.0)
		return -ENOMEM;
	n = (uint64_t)want;
	if ((double)n < want)
		n++;
	if (n < x->count + 1)
		n = x->count + 1;
	if (n < LIDX_SLOTS_MIN)
		n = LIDX_SLOTS_MIN;
	if (n == x->nb_slots)
		return 0;
	return lidx_resize(x, n);
}

uint64_t
km_lidx_count(const struct km_lidx *x)
{
	return x->count;
}

uint64_t
km_lidx_bytes(const struct km_lidx *x)
{
	return x->nb_slots * sizeof(struct km_lidx_ent);
}

struct km_lidx_ent *
km_lidx_next(struct km_lidx *x, uint64_t *pos)
{
	uint64_t i;

	for (i = *pos; i < x->nb_slots; i++) {
		if (x->slots[i].version != 0) {
			*pos = i + 1;
			return &x->slots[i];
		}
	}
	*pos = x->nb_slots;
	return NULL;
}

struct km_lidx_ent *
km_lidx_slots(struct km_lidx *x, uint64_t *nb_slots)
{
	*nb_slots = x->nb_slots;
	return x->slots;
}
