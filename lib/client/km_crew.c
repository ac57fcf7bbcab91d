/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Hot keys with read copies on every worker (docs/protocol.md, KM_F_CREW): a GET reply
 * carrying the flag says any worker may serve the key. The handle remembers a few such
 * keys, each for KM_CREW_TTL_NS after the last reply that said so, and sends their GETs
 * to the workers in turn instead of to the owner, so a hot key's reads use every worker.
 * With a cluster map, the workers of the owner's node: copies never cross nodes.
 * A reply without the flag (the copies were withdrawn: the owner answered), or NOT_FOUND,
 * forgets the key. Apart from the routing (km_map.c): a choice among workers for keys the
 * map routes anyway.
 */

#include <string.h>

#include <xxhash.h>

#include "km_client_priv.h"

static inline struct km_crew_key *
crew_slot(struct km_client *c, uint64_t h)
{
	return &c->crew.keys[(h ^ (h >> 29)) & (KM_CREW_SET - 1)];
}

unsigned int
km_crew_worker(struct km_client *c, const void *key, size_t klen, unsigned int owner)
{
	struct km_crew_key *e;
	unsigned int lo = 0, nw;
	uint64_t h;

	if (c->crew.nb == 0 || c->map == NULL || c->no_steer)
		return owner;
	nw = km_shardmap_nb_workers(c->map);
	if (km_cluster(c)) {
		/* The copies are on the workers of the owner's node. */
		int node = km_shardmap_owner_node(c->map, (uint16_t)owner, NULL);

		if (node < 0)
			return owner;
		lo = km_shardmap_node_at(c->map, (uint16_t)node)->first;
		nw = km_shardmap_node_at(c->map, (uint16_t)node)->workers;
	}
	if (nw < 2)
		return owner;
	h = XXH3_64bits(key, klen);
	e = crew_slot(c, h);
	if (e->hash != h || e->hash == 0)
		return owner;
	if (km_now() >= e->expires) {
		e->hash = 0;
		c->crew.nb--;
		return owner;
	}
	/* In turn over the workers: every one holds the copy. */
	owner = lo + c->crew.next++ % nw;
	c->st.crew_spread++;
	return owner;
}

void
km_crew_reply(struct km_client *c, const void *key, size_t klen, bool flagged, uint64_t now)
{
	uint64_t h = XXH3_64bits(key, klen);
	struct km_crew_key *e = crew_slot(c, h);

	if (h == 0)
		return;
	if (flagged) {
		if (e->hash == 0)
			c->crew.nb++;
		/* A key hashed to a taken slot replaces it: the newest hot key wins. */
		e->hash = h;
		e->expires = now + KM_CREW_TTL_NS;
		return;
	}
	if (e->hash == h) {
		e->hash = 0;
		c->crew.nb--;
	}
}
