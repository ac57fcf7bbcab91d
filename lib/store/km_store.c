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
