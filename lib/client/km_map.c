/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libkeymap's shard map: routing a key with km_shardmap_route() (routing overrides of the
 * partition shifter included: the first chunk carries them), and refreshing the map.
 * A refresh fetches the map chunk by chunk through the engine's map slot, starts over
 * when the map changes in between, and installs it only when every chunk has arrived;
 * the ops that were answered MOVED wait in KM_SLOT_WAIT_MAP and are resent at the end.
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
	if (c->map != NULL && !c->no_steer && km_shardmap_udp_port_base(c->map) != 0)
		return km_shardmap_udp_port_base(c->map);
	return c->port;
}

void
km_refresh_want(struct km_client *c)
{
	if (c->refresh.state == KM_REFRESH_IDLE)
		c->refresh.state = KM_REFRESH_WANTED;
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
	km_slot_arm(c, c->window, op, KM_WORKER_MAP);
}

void
km_refresh_begin(struct km_client *c)
{
	c->refresh.state = KM_REFRESH_RUNNING;
	c->refresh.restarts = 0;
	c->refresh.got = 0;
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

static int
km_refresh_install(struct km_client *c)
{
	struct km_refresh *r = &c->refresh;
	struct km_shardmap *m;
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
	if ((uint32_t)(km_shardmap_udp_port_base(m) != 0 ? km_shardmap_udp_port_base(m) : c->port) +
			km_shardmap_nb_workers(m) - 1 >
		UINT16_MAX) {
		km_shardmap_free(m);
		return KM_ERR_PROTO;
	}
	km_shardmap_free(c->map);
	c->map = m;
	c->map_gen++;
	c->st.map_refreshes++;
	return KM_OK;
}

/* Same map as the chunks received so far? (Else it changed while we fetched it.) */
static bool
km_chunk_same_map(const struct km_map_chunk *a, const struct km_map_chunk *b)
{
	return a->epoch == b->epoch && a->nb_shards == b->nb_shards &&
	       a->nb_workers == b->nb_workers && a->udp_port_base == b->udp_port_base &&
	       a->route_sep == b->route_sep && a->route_depth == b->route_depth;
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
	rc = km_shardmap_decode_chunk(c->map_buf, c->map_op.len, &ch);
	/* A cluster's map (2.0): this client steers within one server only. */
	if (rc == 0 && ch.version_major != KM_MAP_VERSION_MAJOR)
		rc = -EPROTO;
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
		r->nb_ovr = ch.nb_overrides;
		for (i = 0; i < ch.nb_overrides; i++)
			km_shardmap_chunk_override(&ch, i, &r->ovr[i]);
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
		 * disagreed.
		 */
		if ((e.flags & KM_MAP_ENTRY_F_MOVED) == 0 && ch.nb_workers != 0 &&
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
 * A reply carried the server's epoch: if it is not ours, our map is outdated; fetch it
 * (unless refreshes failed recently). "Not ours" rather than "newer": epochs restart at 1
 * when the server restarts (docs/protocol.md 1.1).
 */
void
km_note_epoch(struct km_client *c, uint32_t epoch, uint64_t now)
{
	if (c->no_steer || epoch == km_client_epoch(c) || c->refresh.state != KM_REFRESH_IDLE)
		return;
	if (now < c->refresh.hold_until)
		return;
	c->refresh.state = KM_REFRESH_WANTED;
}

int
km_map_refresh(struct km_client *c)
{
	int rc;

	if (c == NULL || c->no_steer)
		return KM_ERR_INVAL;
	/* Explicit request: ignore the hold that follows failed refreshes. */
	c->refresh.state = KM_REFRESH_WANTED;
	rc = km_run(c, NULL, NULL, 0, true);
	return rc < 0 ? rc : c->refresh.result;
}
