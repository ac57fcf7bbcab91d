/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libkeymap's shard map: routing a key with km_shardmap_route() (routing overrides of the
 * partition shifter included: the first chunk carries them), and refreshing the map.
 * A refresh fetches the map chunk by chunk through the engine's map slot, starts over
 * when the map changes in between, and installs it only when every chunk has arrived;
 * the ops that were answered MOVED wait in KM_SLOT_WAIT_MAP and are resent at the end.
 *
 * Which server is asked: the one a MOVED (or a newer epoch) came from, then the server
 * that answered the last MAP, then the seeds in order, then the nodes of the current
 * cluster map; a chunk request that times out goes to the next one, and gives up after
 * every candidate and `retries` more attempts (one seed: retries + 1 attempts, as for
 * any request). The server that answers becomes the home server.
 *
 * Encodings: 1.x, one server (owners are its workers); 2.0, a cluster (global owners and
 * a node table, docs/protocol.md 6.2): the map is built as a client's view with
 * km_shardmap_from_cluster(), and every node gets a peer (km_peer.c).
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "km_client_priv.h"

uint32_t
km_client_epoch(const struct km_client *c)
{
	return c != NULL && c->map != NULL ? km_shardmap_epoch(c->map) : 0;
}

unsigned int
km_client_nb_workers(const struct km_client *c)
{
	return c != NULL && c->map != NULL ? km_shardmap_nb_workers(c->map) : 1;
}

const struct km_shardmap *
km_client_map(const struct km_client *c)
{
	return c != NULL ? c->map : NULL;
}

unsigned int
km_owner(const struct km_client *c, const void *key, size_t klen)
{
	struct km_shardmap_route rt;

	if (c->map == NULL || c->no_steer || klen == 0 ||
		km_shardmap_route(c->map, key, klen, &rt) != 0)
		return 0;
	return rt.owner;
}

unsigned int
km_client_worker_of(const struct km_client *c, const void *key, size_t klen)
{
	if (c == NULL || key == NULL || klen == 0)
		return 0;
	return km_owner(c, key, klen);
}

uint16_t
km_base_port(const struct km_client *c)
{
	if (c->map != NULL && !c->no_steer && !km_cluster(c) &&
		km_shardmap_udp_port_base(c->map) != 0)
		return km_shardmap_udp_port_base(c->map);
	return c->peers[c->home].port;
}

void
km_refresh_want(struct km_client *c, int peer)
{
	if (c->refresh.state == KM_REFRESH_RUNNING)
		return;
	if (peer >= 0 && c->refresh.hint < 0)
		c->refresh.hint = peer;
	c->refresh.state = KM_REFRESH_WANTED;
}

static void
km_cand_add(struct km_refresh *r, uint32_t p)
{
	uint32_t i;

	for (i = 0; i < r->nb_cand; i++)
		if (r->cand[i] == p)
			return;
	r->cand[r->nb_cand++] = (uint8_t)p;
}

bool
km_refresh_timeout(struct km_client *c)
{
	struct km_refresh *r = &c->refresh;

	if (++r->timeouts >= r->nb_cand + c->retries)
		return false;
	r->ci = (r->ci + 1) % r->nb_cand;
	return true;
}

static void
km_map_request(struct km_client *c, uint32_t cursor)
{
	struct km_batch_op *op = &c->map_op;

	memset(op, 0, sizeof(*op));
	op->op = KM_OP_MAP;
	op->version = cursor;
	op->buf = c->map_buf;
	op->cap = sizeof(c->map_buf);
	/* Each chunk request has the whole budget; it starts at the server that answered. */
	c->refresh.timeouts = 0;
	km_slot_arm(c, c->window, op, KM_WORKER_MAP);
}

void
km_refresh_begin(struct km_client *c)
{
	struct km_refresh *r = &c->refresh;
	uint32_t i;

	r->state = KM_REFRESH_RUNNING;
	r->restarts = 0;
	r->got = 0;
	r->nb_cand = 0;
	r->ci = 0;
	if (r->hint >= 0)
		km_cand_add(r, (uint32_t)r->hint);
	r->hint = -1;
	km_cand_add(r, c->home);
	for (i = 0; i < c->nb_seeds; i++)
		km_cand_add(r, i);
	if (km_cluster(c))
		for (i = 0; i < km_shardmap_nb_nodes(c->map); i++)
			km_cand_add(r, c->node_peer[i]);
	km_map_request(c, 0);
}

/* Resend every op that waited for the refresh: with the new map, or the old one. */
static void
km_refresh_end(struct km_client *c, int err)
{
	struct km_refresh *r = &c->refresh;
	uint32_t i;

	r->state = KM_REFRESH_IDLE;
	r->result = err;
	if (err == KM_OK) {
		r->hold_ns = 0;
		r->hold_until = 0;
	} else {
		r->hold_ns = r->hold_ns == 0 ? KM_HOLD_MIN_NS : r->hold_ns * 2;
		if (r->hold_ns > KM_HOLD_MAX_NS)
			r->hold_ns = KM_HOLD_MAX_NS;
		r->hold_until = km_now() + r->hold_ns;
	}
	for (i = 0; i < c->window && c->nb_wait_map > 0; i++) {
		if (c->slots[i].state == KM_SLOT_WAIT_MAP) {
			c->nb_wait_map--;
			km_slot_send(c, i);
		}
	}
}

/* The map of a single server (encoding 1.x), answered by peer p. */
static int
km_refresh_install_one(struct km_client *c, uint32_t p, struct km_shardmap **out)
{
	struct km_refresh *r = &c->refresh;
	struct km_shardmap *m;
	uint32_t i;
	int rc;

	rc = km_shardmap_from_list(r->head.epoch, r->head.nb_workers, r->head.udp_port_base,
		r->head.route_sep, r->head.route_depth, r->ids, r->owners, r->head.nb_shards, &m);
	if (rc == -ENOMEM)
		return KM_ERR_NOMEM;
	if (rc != 0)
		return KM_ERR_PROTO;
	/* Routing overrides (partition shifter): steer a hot entity's keys as the server does. */
	if (km_shardmap_set_overrides(m, r->ovr, r->nb_ovr) != 0) {
		km_shardmap_free(m);
		return KM_ERR_PROTO;
	}
	/* Every worker port must exist: base + nb_workers - 1 <= 65535. */
	if ((uint32_t)(km_shardmap_udp_port_base(m) != 0 ? km_shardmap_udp_port_base(m)
							 : c->peers[p].port) +
			km_shardmap_nb_workers(m) - 1 >
		UINT16_MAX) {
		km_shardmap_free(m);
		return KM_ERR_PROTO;
	}
	for (i = 0; i < KM_PEERS_MAX; i++)
		c->peers[i].in_map = false;
	*out = m;
	return KM_OK;
}

/*
 * A cluster's map (encoding 2.0), answered by peer p: the client's view (global owners)
 * and a peer for every node. Overrides are not carried over: in a cluster the partition
 * shifter is off (docs/cluster.md), and a key routed by its own rule is handed over or
 * answered MOVED by the node, never answered from the wrong place.
 */
static int
km_refresh_install_cluster(struct km_client *c, uint32_t p, struct km_shardmap **out)
{
	struct km_refresh *r = &c->refresh;
	uint8_t node_peer[KM_MAP_NODES_MAX];
	struct km_shardmap *m;
	int rc;

	rc = km_shardmap_from_cluster(r->head.epoch, r->head.route_sep, r->head.route_depth, r->ids,
		r->owners, r->head.nb_shards, r->nodes, (uint16_t)r->nb_nodes, -1, &m);
	if (rc == -ENOMEM)
		return KM_ERR_NOMEM;
	if (rc != 0)
		return KM_ERR_PROTO;
	/* Busy: no peer entry free for a new node now (HELLOs or parked requests hold them):
	 * the old map stays until a later refresh. */
	rc = km_peers_bind(c, m, p, node_peer);
	if (rc != KM_OK) {
		km_shardmap_free(m);
		return rc;
	}
	memcpy(c->node_peer, node_peer, sizeof(node_peer));
	*out = m;
	return KM_OK;
}

static int
km_refresh_install(struct km_client *c)
{
	struct km_refresh *r = &c->refresh;
	uint32_t p = r->cand[r->ci];
	struct km_shardmap *m = NULL;
	int rc;

	rc = r->head.version_major == KM_MAP_CLUSTER_MAJOR ? km_refresh_install_cluster(c, p, &m)
							   : km_refresh_install_one(c, p, &m);
	if (rc != KM_OK)
		return rc;
	km_shardmap_free(c->map);
	c->map = m;
	c->map_gen++;
	c->home = p;
	c->st.map_refreshes++;
	return KM_OK;
}

/* Same map as the chunks received so far? (Else it changed while we fetched it.) */
static bool
km_chunk_same_map(const struct km_map_chunk *a, const struct km_map_chunk *b)
{
	return a->version_major == b->version_major && a->epoch == b->epoch &&
	       a->nb_shards == b->nb_shards && a->nb_workers == b->nb_workers &&
	       a->udp_port_base == b->udp_port_base && a->route_sep == b->route_sep &&
	       a->route_depth == b->route_depth;
}

void
km_refresh_step(struct km_client *c, int err)
{
	struct km_refresh *r = &c->refresh;
	struct km_map_chunk ch;
	uint32_t i;
	int rc;

	if (err != KM_OK) {
		km_refresh_end(c, err);
		return;
	}
	/* 1.x and 2.0 are known; another major is -EPROTO. */
	rc = km_shardmap_decode_chunk(c->map_buf, c->map_op.len, &ch);
	if (rc != 0) {
		km_refresh_end(c, rc == -EPROTO ? KM_ERR_MAP_VERSION : KM_ERR_PROTO);
		return;
	}
	if (r->got != 0 && !km_chunk_same_map(&r->head, &ch)) {
		if (++r->restarts > KM_MAP_RESTARTS) {
			km_refresh_end(c, KM_ERR_BUSY);
			return;
		}
		r->got = 0;
		km_map_request(c, 0);
		return;
	}
	if (ch.first != r->got || ch.count == 0) {
		km_refresh_end(c, KM_ERR_PROTO);
		return;
	}
	if (r->got == 0) {
		r->head = ch;
		r->nb_ovr = ch.version_major == KM_MAP_CLUSTER_MAJOR ? 0 : ch.nb_overrides;
		for (i = 0; i < r->nb_ovr; i++)
			km_shardmap_chunk_override(&ch, i, &r->ovr[i]);
		r->nb_nodes = ch.nb_nodes;
		for (i = 0; i < ch.nb_nodes; i++)
			km_shardmap_chunk_node(&ch, i, &r->nodes[i]);
		if (r->cap < ch.nb_shards) {
			uint64_t *ids = realloc(r->ids, ch.nb_shards * sizeof(*ids));
			uint16_t *owners;

			if (ids != NULL)
				r->ids = ids;
			owners = ids == NULL ? NULL
					     : realloc(r->owners, ch.nb_shards * sizeof(*owners));
			if (owners == NULL) {
				km_refresh_end(c, KM_ERR_NOMEM);
				return;
			}
			r->owners = owners;
			r->cap = ch.nb_shards;
		}
	}
	for (i = 0; i < ch.count; i++) {
		struct km_map_entry e;

		km_shardmap_chunk_entry(&ch, i, &e);
		r->ids[r->got + i] = e.id;
		/*
		 * Keep jump-hash owners as such so the map reads like the server's; but the owner
		 * sent is the resolved one, and routing must follow it even if our jump hash
		 * disagreed. A cluster's owners are global: kept as they are.
		 */
		if (ch.version_major != KM_MAP_CLUSTER_MAJOR &&
			(e.flags & KM_MAP_ENTRY_F_MOVED) == 0 && ch.nb_workers != 0 &&
			km_jump_hash(e.id, ch.nb_workers) == e.owner)
			e.owner = KM_OWNER_JUMP;
		r->owners[r->got + i] = e.owner;
	}
	r->got += ch.count;
	if (r->got < r->head.nb_shards) {
		km_map_request(c, r->got);
		return;
	}
	km_refresh_end(c, km_refresh_install(c));
}

/*
 * A reply carried the server's epoch: if it is not ours, our map is outdated; fetch it,
 * from that server first (unless refreshes failed recently). "Not ours" rather than
 * "newer": epochs restart at 1 when the server restarts (docs/protocol.md 1.1). With a
 * cluster map, only a newer epoch: the placer numbers the cluster's maps, and a node with
 * an older one has not applied ours yet (a node without a map says 0); if the cluster
 * starts over at 1, its nodes' MOVED replies bring the new map.
 */
void
km_note_epoch(struct km_client *c, uint32_t epoch, uint32_t peer, uint64_t now)
{
	uint32_t ours = km_client_epoch(c);

	if (c->no_steer || epoch == ours || c->refresh.state != KM_REFRESH_IDLE)
		return;
	if (km_cluster(c) && epoch < ours)
		return;
	if (now < c->refresh.hold_until)
		return;
	km_refresh_want(c, (int)peer);
}

int
km_map_refresh(struct km_client *c)
{
	int rc;

	if (c == NULL || c->no_steer || km_engine_busy(c))
		return KM_ERR_INVAL;
	/* Explicit request: ignore the hold that follows failed refreshes. One running (left
	 * by km_process) is finished by km_run: re-arming its slot would lose track of it. */
	if (c->refresh.state == KM_REFRESH_IDLE)
		c->refresh.state = KM_REFRESH_WANTED;
	rc = km_run(c, NULL, NULL, 0, true);
	return rc < 0 ? rc : c->refresh.result;
}
