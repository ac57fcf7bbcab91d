/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Store driver registry. Drivers register from constructors before main() runs, so the
 * table is written single-threaded and only read afterwards: no locking needed.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "km_store.h"

/* A handful of drivers exist (mem, log, cold, peer): a fixed array avoids allocation in
 * constructors, where a failure could not be reported. */
#define KM_STORE_DRIVERS_MAX 16

static const struct km_store_ops *km_store_drivers[KM_STORE_DRIVERS_MAX];
static unsigned int km_store_nb_drivers;

void
km_store_register(const struct km_store_ops *ops)
{
	if (ops == NULL || ops->name == NULL)
		return;
	/* A driver linked twice (e.g. a test that also links it) registers twice: the first
	 * one wins, so lookups stay stable. */
	if (km_store_driver(ops->name) != NULL)
		return;
	/* Constructors cannot report errors; a full table is a build problem that
	 * km_store_create() then reports as -ENOENT. */
	if (km_store_nb_drivers == KM_STORE_DRIVERS_MAX)
		return;
	km_store_drivers[km_store_nb_drivers++] = ops;
}

const struct km_store_ops *
km_store_driver(const char *name)
{
	unsigned int i;

	if (name == NULL)
		return NULL;
	for (i = 0; i < km_store_nb_drivers; i++) {
		if (strcmp(km_store_drivers[i]->name, name) == 0)
			return km_store_drivers[i];
	}
	return NULL;
}

int
km_store_create(const char *driver, const struct km_store_params *p, struct km_store **out)
{
	const struct km_store_ops *ops;

	if (driver == NULL || p == NULL || out == NULL)
		return -EINVAL;
	ops = km_store_driver(driver);
	if (ops == NULL)
		return -ENOENT;
	return ops->create(p, out);
}

uint64_t
km_key_hash(const void *key, size_t len)
{
	return XXH3_64bits(key, len);
}

void
km_store_read_free(struct km_read *rd)
{
	free(rd->buf);
	free(rd->ubuf);
	rd->buf = NULL;
	rd->ubuf = NULL;
}

void
km_store_stats_add(struct km_store_stats *sum, const struct km_store_stats *one)
{
#define KM_STAT_MERGE_SUM(a, b)       ((a) + (b))
#define KM_STAT_MERGE_MAX(a, b)       ((a) > (b) ? (a) : (b))
#define KM_X(name, kind, merge, help) sum->name = KM_STAT_MERGE_##merge(sum->name, one->name);
	KM_STORE_STATS(KM_X)
#undef KM_X
#undef KM_STAT_MERGE_SUM
#undef KM_STAT_MERGE_MAX
}

/*
 * SCAN pages. The entries whose order is at least the cursor c have their home slot at
 * or after c's, and sit at or after it (linear probing), or past the table's end in the
 * run of used slots from slot 0. An empty slot e ends every probe sequence that reaches
 * it: the entries with their home before e are all before e. So the slots from c's home
 * to an empty slot e hold every entry of orders [c, first order homed at e), plus
 * entries of lower orders (pushed there from before c's home) and of higher ones (from
 * the table's end, around): the page keeps the range and drops the others. A page that
 * reaches the table's end goes on around it up to the first empty slot and covers every
 * order from c on.
 */

/* Entries one page sorts at most: with more in its slots, it keeps the lowest orders and
 * ends before the others. */
#define SCAN_CAND_MAX 384

struct scan_cand {
	uint64_t order;
	uint64_t slot;
};

static int
scan_cand_cmp(const void *a, const void *b)
{
	const struct scan_cand *x = a, *y = b;

	return x->order < y->order ? -1 : x->order > y->order;
}

/* The first order whose home is slot i or after (0 < i < nb): ceil(i * 2^64 / nb). */
static inline uint64_t
scan_slot_order(uint64_t i, uint64_t nb)
{
	return (uint64_t)((((unsigned __int128)i << 64) + nb - 1) / nb);
}

int
km_store_scan_table(const struct km_scan_table *t, const uint8_t *prefix, uint16_t plen,
	uint64_t *cursor, uint32_t budget,
	int (*fn)(void *arg, const struct km_key *k, const struct km_value_ref *v), void *arg)
{
	struct scan_cand cand[SCAN_CAND_MAX];
	uint64_t c = *cursor, nb = t->nb, start, i, o, seen = 0, end = 0, cut = UINT64_MAX;
	uint32_t n = 0, j, hi, keep;
	int wrapped = 0, all, has_cut = 0, rc;

	if (nb == 0) {
		*cursor = 0;
		return 0;
	}
	if (budget == 0)
		budget = 1;
	start = (uint64_t)(((unsigned __int128)c * nb) >> 64);
	i = start;
	for (;;) {
		if (!t->used(t->tab, i)) {
			if (wrapped) {
				all = 1;
				break;
			}
			if (seen >= budget) {
				all = 0;
				end = scan_slot_order(i, nb);
				break;
			}
		} else if ((o = t->order(t->tab, i)) >= c) {
			if (n < SCAN_CAND_MAX) {
				cand[n++] = (struct scan_cand){.order = o, .slot = i};
			} else {
				/* Full: the highest order gives way, and the page ends before it.
				 */
				for (hi = 0, j = 1; j < n; j++)
					if (cand[j].order > cand[hi].order)
						hi = j;
				if (o < cand[hi].order) {
					uint64_t out = cand[hi].order;

					cand[hi] = (struct scan_cand){.order = o, .slot = i};
					o = out;
				}
				if (o < cut)
					cut = o;
				has_cut = 1;
			}
		}
		seen++;
		if (++i == nb) {
			i = 0;
			wrapped = 1;
		}
		if (wrapped && i == start) {
			all = 1; /* every slot seen */
			break;
		}
	}
	/* The page covers [c, end), [c, cut) when it had to drop entries, or [c, 2^64). */
	if (has_cut && (all || cut < end)) {
		all = 0;
		end = cut;
	}
	for (keep = 0, j = 0; j < n; j++)
		if (all || cand[j].order < end)
			cand[keep++] = cand[j];
	qsort(cand, keep, sizeof(cand[0]), scan_cand_cmp);
	for (j = 0; j < keep; j++) {
		if (t->visit_max != 0 && j == t->visit_max) {
			*cursor = cand[j].order; /* the next page starts with it */
			return 0;
		}
		rc = t->visit(t->tab, cand[j].slot, prefix, plen, fn, arg);
		if (rc != 0) {
			*cursor = cand[j].order;
			return rc > 0 ? 0 : rc;
		}
	}
	*cursor = all ? 0 : end;
	return 0;
}
