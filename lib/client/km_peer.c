/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libkeymap's servers and where each request goes.
 *
 * Peers: the seeds of km_client_opts.host (peers[0 .. nb_seeds), kept for the handle's
 * life), then the nodes of cluster maps, added when a map names them. A peer holds its own
 * cookie (each keymapd draws its own secrets) and has its own HELLO slot. A node that a
 * new map no longer names keeps its entry (and cookie) until the entry is needed for
 * another node: peers are never freed, only reused.
 *
 * Routing a slot (km_slot_route): the MAP slot goes to the refresh's current candidate,
 * a HELLO slot to its peer; a request to the home server when the handle is unsteered or
 * holds a map of one server (1.x), port base + worker; with a cluster map (2.0) to the
 * node of the key's global owner, port node port + worker.
 */

#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "km_client_priv.h"

static int
km_resolve(const char *host, struct in_addr *addr)
{
	struct addrinfo hints, *res;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_DGRAM;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc == EAI_SYSTEM)
		return KM_ERR_SYSTEM;
	if (rc == EAI_MEMORY)
		return KM_ERR_NOMEM;
	if (rc != 0)
		return KM_ERR_RESOLVE; /* EAI_NONAME, EAI_AGAIN, EAI_FAIL, ...: no address */
	*addr = ((const struct sockaddr_in *)res->ai_addr)->sin_addr;
	freeaddrinfo(res);
	return KM_OK;
}

/* One seed "name[:port]" (len bytes, not NUL-terminated) into *ip, *port. */
static int
km_seed_parse(const char *s, size_t len, uint16_t dflt, uint32_t *ip, uint16_t *port)
{
	char name[KM_HOST_MAX];
	struct in_addr a;
	const char *colon;
	unsigned long v = 0;
	size_t nlen, i;
	int rc;

	if (len == 0 || len >= sizeof(name))
		return KM_ERR_INVAL;
	colon = memchr(s, ':', len);
	nlen = colon != NULL ? (size_t)(colon - s) : len;
	if (nlen == 0)
		return KM_ERR_INVAL;
	*port = dflt;
	if (colon != NULL) {
		/* Decimal 1..65535, nothing else. */
		if (colon + 1 == s + len)
			return KM_ERR_INVAL;
		for (i = nlen + 1; i < len; i++) {
			if (s[i] < '0' || s[i] > '9')
				return KM_ERR_INVAL;
			v = v * 10 + (unsigned long)(s[i] - '0');
			if (v > UINT16_MAX)
				return KM_ERR_INVAL;
		}
		if (v == 0)
			return KM_ERR_INVAL;
		*port = (uint16_t)v;
	}
	memcpy(name, s, nlen);
	name[nlen] = '\0';
	rc = km_resolve(name, &a);
	if (rc != KM_OK)
		return rc;
	*ip = a.s_addr;
	return KM_OK;
}

static int
km_peer_find(const struct km_client *c, uint32_t ip, uint16_t port)
{
	uint32_t p;

	for (p = 0; p < KM_PEERS_MAX; p++)
		if (c->peers[p].ip == ip && c->peers[p].port == port)
			return (int)p;
	return -1;
}

int
km_seeds_parse(struct km_client *c, const char *hosts, uint16_t port)
{
	const char *p = hosts, *end;
	uint32_t ip;
	uint16_t sport;
	int rc;

	for (;;) {
		end = strchr(p, ',');
		if (end == NULL)
			end = p + strlen(p);
		rc = km_seed_parse(p, (size_t)(end - p), port, &ip, &sport);
		if (rc != KM_OK)
			return rc;
		/* The same server named twice is asked once. */
		if (km_peer_find(c, ip, sport) < 0) {
			if (c->nb_seeds == KM_SEEDS_MAX)
				return KM_ERR_INVAL;
			c->peers[c->nb_seeds].ip = ip;
			c->peers[c->nb_seeds].port = sport;
			c->peers[c->nb_seeds].seed = true;
			c->nb_seeds++;
		}
		if (*end == '\0')
			break;
		p = end + 1;
	}
	return c->nb_seeds != 0 ? KM_OK : KM_ERR_INVAL;
}

/* Peer p may be given to another server: nothing refers to it. */
static bool
km_peer_idle(const struct km_client *c, uint32_t p, uint32_t keep, const bool *needed)
{
	const struct km_peer *e = &c->peers[p];

	return !e->seed && p != keep && !needed[p] && !e->ck.hello_busy && e->ck.nb_wait == 0 &&
	       c->sync_peer != (int)p;
}

int
km_peers_bind(struct km_client *c, const struct km_shardmap *m, uint32_t keep, uint8_t *node_peer)
{
	bool needed[KM_PEERS_MAX] = {false};
	bool fresh[KM_MAP_NODES_MAX] = {false};
	uint16_t n = km_shardmap_nb_nodes(m), i;
	uint32_t p, pass;
	int f;

	for (i = 0; i < n; i++) {
		const struct km_map_node *nd = km_shardmap_node_at(m, i);

		f = km_peer_find(c, htonl(nd->ip), nd->port);
		if (f >= 0) {
			node_peer[i] = (uint8_t)f;
			needed[f] = true;
		} else {
			fresh[i] = true;
		}
	}
	/* Entries for the new nodes, chosen before any is changed: on failure the current
	 * map's peers stay as they are. A free entry first, else one of a node gone from
	 * the maps, else one of a node of the map being replaced. */
	for (i = 0; i < n; i++) {
		if (!fresh[i])
			continue;
		f = -1;
		for (pass = 0; pass < 3 && f < 0; pass++)
			for (p = c->nb_seeds; p < KM_PEERS_MAX && f < 0; p++)
				if (!needed[p] &&
					((pass == 0 && c->peers[p].ip == 0) ||
						(pass == 1 && !c->peers[p].in_map &&
							km_peer_idle(c, p, keep, needed)) ||
						(pass == 2 && km_peer_idle(c, p, keep, needed))))
					f = (int)p;
		if (f < 0)
			return KM_ERR_BUSY;
		node_peer[i] = (uint8_t)f;
		needed[f] = true;
	}
	for (i = 0; i < n; i++) {
		const struct km_map_node *nd = km_shardmap_node_at(m, i);
		struct km_peer *e = &c->peers[node_peer[i]];

		if (!fresh[i])
			continue;
		memset(e, 0, sizeof(*e));
		e->ip = htonl(nd->ip);
		e->port = nd->port;
	}
	for (p = 0; p < KM_PEERS_MAX; p++)
		c->peers[p].in_map = needed[p];
	return KM_OK;
}

void
km_slot_route(struct km_client *c, uint32_t idx)
{
	struct km_slot *s = &c->slots[idx];
	uint32_t p = c->home;
	uint16_t port;
	unsigned int g;

	if (km_is_hello_slot(c, idx)) {
		/* Worker 0 of that server: the cookie is good on every worker port. */
		p = idx - c->window - 1;
		port = c->peers[p].port;
	} else if (idx == km_map_slot(c)) {
		if (c->refresh.nb_cand != 0)
			p = c->refresh.cand[c->refresh.ci];
		port = c->peers[p].port;
	} else {
		if (s->worker >= 0)
			g = (unsigned int)s->worker;
		else if (s->op->op == KM_OP_GET)
			g = km_crew_worker(
				c, s->op->key, s->op->klen, km_owner(c, s->op->key, s->op->klen));
		else
			g = km_owner(c, s->op->key, s->op->klen);
		if (km_cluster(c)) {
			uint16_t w = 0;
			int node = km_shardmap_owner_node(c->map, (uint16_t)g, &w);

			/* Every global owner has a node: the map was checked when built. */
			if (node >= 0) {
				p = c->node_peer[node];
				port = (uint16_t)(km_shardmap_node_at(c->map, (uint16_t)node)
							  ->port +
						  w);
			} else {
				port = c->peers[p].port;
			}
		} else {
			port = (uint16_t)(km_base_port(c) + g);
		}
	}
	s->peer = (uint8_t)p;
	s->ip = c->peers[p].ip;
	s->port = port;
}
