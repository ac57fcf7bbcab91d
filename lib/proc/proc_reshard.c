/* SPDX-License-Identifier: BSD-3-Clause */
/* Split and merge copies between stores (see proc_private.h). */

#include <errno.h>

#include "proc_private.h"

/* Re-sharding copies: walk a store, load every entry elsewhere with its version. */

struct reshard_ctx {
	const struct km_shardmap *m;
	unsigned int bit;        /* split: bit of the routing hash that picks the child */
	struct km_store *dst[2]; /* split: lo, hi; copy: dst[0] */
	int64_t copied;
};

static int
reshard_split_one(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct reshard_ctx *c = arg;
	uint64_t hash = km_shardmap_hash(c->m, k->data, k->len);
	int rc;

	rc = km_store_load(c->dst[(hash >> c->bit) & 1], k, v->data, v->len, v->version);
	if (rc == 0)
		c->copied++;
	return rc;
}

int64_t
km_proc_reshard_split(const struct km_shardmap *m, struct km_store *src, uint64_t parent_id,
	struct km_store *lo, struct km_store *hi)
{
	struct reshard_ctx c = {.m = m, .dst = {lo, hi}};
	unsigned int depth = km_shard_depth(parent_id);
	int rc;

	/* The walk must not see its own loads. */
	if (m == NULL || src == NULL || lo == NULL || hi == NULL || lo == hi || src == lo ||
		src == hi || parent_id == 0)
		return -EINVAL;
	if (depth >= KM_SHARD_DEPTH_MAX)
		return -ERANGE;
	/* A shard of depth d owns the hashes whose top d bits are its prefix; its children
	 * differ in the next one. */
	c.bit = 63 - depth;
	rc = km_store_walk(src, reshard_split_one, &c);
	return rc != 0 ? rc : c.copied;
}

static int
reshard_copy_one(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct reshard_ctx *c = arg;
	int rc;

	rc = km_store_load(c->dst[0], k, v->data, v->len, v->version);
	if (rc == 0)
		c->copied++;
	return rc;
}

int64_t
km_proc_reshard_copy(struct km_store *src, struct km_store *dst)
{
	struct reshard_ctx c = {.dst = {dst, NULL}};
	int rc;

	if (src == NULL || dst == NULL || src == dst)
		return -EINVAL;
	rc = km_store_walk(src, reshard_copy_one, &c);
	return rc != 0 ? rc : c.copied;
}
