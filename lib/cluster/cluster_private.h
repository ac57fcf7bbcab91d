/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_CLUSTER_PRIVATE_H
#define KM_CLUSTER_PRIVATE_H

/* Shared by the map (km_cmap.c), the placer (km_placer.c) and the records (km_records.c);
 * not installed. */

#include <stddef.h>

#include "km_cluster.h"

/* Write a message into err (when err is not NULL) and return rc. */
int km_cluster_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Compute every node's first from the table order. */
void km_cluster_set_first(struct km_cmap *m);

/* Everything but the epoch is equal: 1, else 0. */
int km_cluster_table_equal(const struct km_cmap *a, const struct km_cmap *b);

#endif /* KM_CLUSTER_PRIVATE_H */
