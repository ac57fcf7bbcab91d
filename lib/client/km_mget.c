/* SPDX-License-Identifier: BSD-3-Clause */
/* libkeymap's MGET, on top of the request engine. */

#include <stdlib.h>
#include <string.h>

#include "km_client_priv.h"

/*
 * MGET. Each round groups the pending items by owner (counting sort on the worker),
 * packs them into datagrams of at most KM_MGET_MAX keys and KM_DGRAM_MAX bytes (trailers
 * included), and
 * runs KM_MGET_WAVE datagrams at a time. Items answered MOVED wait for the next round,
 * after a map refresh; items answered TOO_LARGE (no room in the reply) are fetched
 * with GET.
 */

/* Bytes of an MGET request with no key yet: header + u16 count. */
#define KM_MGET_REQ_BASE (KM_HDR_LEN + 2)

static int
km_item_check(const struct km_mget_item *it)
{
	if (it->key == NULL || it->klen == 0 || (it->buf == NULL && it->cap != 0))
		return KM_ERR_INVAL;
	if (it->klen > KM_KEY_MAX)
		return KM_ERR_TOO_LARGE;
	return KM_OK;
}

/* Copy an entry's value into the item like a GET would. */
static void
km_item_fill(
	struct km_mget_item *it, unsigned int st, uint64_t version, const uint8_t *val, size_t vlen)
{
	it->err = km_status_err(st);
	it->version = version;
	it->len = 0;
	if (it->err != KM_OK)
		return;
	it->len = vlen;
	if (it->buf == NULL)
		return;
	if (vlen > it->cap)
		it->err = KM_ERR_BUFFER;
	else
		memcpy(it->buf, val, vlen);
}

/* GET each item of list[0..n); their results replace the MGET ones. */
static int
km_mget_fallback(struct km_client *c, struct km_mget_item *items, const uint32_t *list, uint32_t n)
{
	struct km_batch_op *ops = c->mget->ops;
	uint32_t done = 0, k, i;
	int rc;

	while (done < n) {
		k = n - done < KM_MGET_WAVE ? n - done : KM_MGET_WAVE;
		for (i = 0; i < k; i++) {
			struct km_mget_item *it = &items[list[done + i]];

			memset(&ops[i], 0, sizeof(ops[i]));
			ops[i].op = KM_OP_GET;
			ops[i].key = it->key;
			ops[i].klen = it->klen;
			ops[i].buf = it->buf;
			ops[i].cap = it->cap;
		}
		rc = km_run(c, ops, NULL, k, false);
		if (rc < 0)
			return rc;
		for (i = 0; i < k; i++) {
			struct km_mget_item *it = &items[list[done + i]];

			it->err = ops[i].err;
			it->len = ops[i].len;
			it->version = ops[i].out_version;
		}
		done += k;
	}
	return KM_OK;
}

/*
 * Read the reply of datagram d (items pend[first..first+count)). MOVED items are
 * appended to pend[*nmoved], TOO_LARGE ones to big[*nbig].
 */
static void
km_mget_parse(struct km_client *c, struct km_mget_item *items, uint32_t *pend, uint32_t d,
	uint32_t *nmoved, uint32_t *big, uint32_t *nbig)
{
	struct km_mget_scratch *g = c->mget;
	const struct km_batch_op *op = &g->ops[d];
	const uint8_t *p = g->rep[d], *end = g->rep[d] + op->len;
	uint32_t first = g->first[d], count = g->count[d], i;
	int err = op->err;

	if (err == KM_OK && (op->len < 2 || km_get16(p) != count))
		err = KM_ERR_PROTO;
	p += 2;
	for (i = 0; i < count; i++) {
		uint32_t idx = pend[first + i];
		struct km_mget_item *it = &items[idx];
		unsigned int st;
		uint16_t vlen;

		if (err == KM_ERR_MOVED) {
			pend[(*nmoved)++] = idx;
			continue;
		}
		if (err != KM_OK) {
			it->err = err;
			continue;
		}
		if (end - p < KM_MGET_REP_ENTRY_HDR ||
			(size_t)(end - p) < (size_t)KM_MGET_REP_ENTRY_HDR + km_get16(p + 9)) {
			/* Truncated body: this entry and the following ones are lost. */
			err = KM_ERR_PROTO;
			it->err = err;
			continue;
		}
		st = p[0];
		vlen = km_get16(p + 9);
		if (st == KM_ST_MOVED) {
			c->st.moved++;
			pend[(*nmoved)++] = idx;
		} else if (st == KM_ST_TOO_LARGE || st == KM_ST_BUSY) {
			/* Too large for the reply, or not in the server's cache yet (it started
			 * reading it): a GET of its own fetches it. */
			big[(*nbig)++] = idx;
		} else
			km_item_fill(it, st, km_get64(p + 1), p + KM_MGET_REP_ENTRY_HDR, vlen);
		p += KM_MGET_REP_ENTRY_HDR + vlen;
	}
}

/* One round over pend[0..npend): returns the MOVED items, compacted at pend[0..). */
static int
km_mget_round(struct km_client *c, struct km_mget_item *items, uint32_t *pend, uint32_t npend,
	const uint16_t *wk, uint32_t *nmoved)
{
	struct km_mget_scratch *g = c->mget;
	uint32_t big[KM_MGET_WAVE * KM_MGET_MAX];
	uint32_t pos = 0, nbig, d, nd;
	/* Room for the trailers: the cookie and the client key's MAC. */
	const size_t max = KM_DGRAM_MAX - km_trailer_room(c, KM_OP_MGET);
	int rc;

	*nmoved = 0;
	while (pos < npend) {
		for (nd = 0; nd < KM_MGET_WAVE && pos < npend; nd++) {
			uint16_t w = wk[pend[pos]];
			uint8_t *p = g->req[nd] + 2;
			size_t size = KM_MGET_REQ_BASE;
			uint32_t cnt = 0;

			g->first[nd] = pos;
			while (pos < npend && wk[pend[pos]] == w && cnt < KM_MGET_MAX &&
				size + KM_MGET_REQ_ENTRY_HDR + items[pend[pos]].klen <= max) {
				const struct km_mget_item *it = &items[pend[pos]];

				*p = (uint8_t)it->klen;
				memcpy(p + 1, it->key, it->klen);
				p += KM_MGET_REQ_ENTRY_HDR + it->klen;
				size += KM_MGET_REQ_ENTRY_HDR + it->klen;
				cnt++;
				pos++;
			}
			km_put16(g->req[nd], (uint16_t)cnt);
			g->count[nd] = cnt;
			memset(&g->ops[nd], 0, sizeof(g->ops[nd]));
			g->ops[nd].op = KM_OP_MGET;
			g->ops[nd].val = g->req[nd];
			g->ops[nd].vlen = (size_t)(p - g->req[nd]);
			g->ops[nd].buf = g->rep[nd];
			g->ops[nd].cap = KM_DGRAM_MAX;
			g->workers[nd] = w;
		}
		rc = km_run(c, g->ops, g->workers, nd, true);
		if (rc < 0)
			return rc;
		/* Compaction is safe: MOVED items found so far never outnumber those read. */
		nbig = 0;
		for (d = 0; d < nd; d++)
			km_mget_parse(c, items, pend, d, nmoved, big, &nbig);
		rc = km_mget_fallback(c, items, big, nbig);
		if (rc < 0)
			return rc;
	}
	return KM_OK;
}

/* Stable counting sort of pend[0..n) by owner worker into tmp, then back. */
static void
km_mget_group(const struct km_client *c, const struct km_mget_item *items, uint32_t *pend,
	uint32_t *tmp, uint16_t *wk, uint32_t n)
{
	uint32_t start[KM_WORKERS_MAX + 1] = {0};
	uint32_t i;

	for (i = 0; i < n; i++) {
		const struct km_mget_item *it = &items[pend[i]];

		wk[pend[i]] = (uint16_t)km_owner(c, it->key, it->klen);
		start[wk[pend[i]] + 1]++;
	}
	for (i = 1; i <= KM_WORKERS_MAX; i++)
		start[i] += start[i - 1];
	for (i = 0; i < n; i++)
		tmp[start[wk[pend[i]]]++] = pend[i];
	memcpy(pend, tmp, n * sizeof(*pend));
}

int
km_mget(struct km_client *c, struct km_mget_item *items, size_t n)
{
	uint32_t *pend, *tmp, npend = 0, nmoved, i;
	unsigned int round;
	uint16_t *wk;
	uint32_t gen;
	int rc = KM_OK;

	if (c == NULL || (items == NULL && n != 0) || n > UINT32_MAX || km_engine_busy(c))
		return KM_ERR_INVAL;
	if (n == 0)
		return KM_OK;
	if (c->mget == NULL) {
		c->mget = malloc(sizeof(*c->mget));
		if (c->mget == NULL)
			return KM_ERR_NOMEM;
	}
	pend = malloc(n * (2 * sizeof(*pend) + sizeof(*wk)));
	if (pend == NULL)
		return KM_ERR_NOMEM;
	tmp = pend + n;
	wk = (uint16_t *)(tmp + n);

	for (i = 0; i < n; i++) {
		items[i].len = 0;
		items[i].version = 0;
		items[i].err = km_item_check(&items[i]);
		/* Until its reply arrives an item holds the error it ends with if the socket fails.
		 */
		if (items[i].err == KM_OK) {
			items[i].err = KM_ERR_SYSTEM;
			pend[npend++] = (uint32_t)i;
		}
	}
	gen = c->map_gen;
	for (round = 0; npend > 0; round++) {
		if (round > 0) {
			/*
			 * The MOVED items: as for single requests, retries + 1 re-routes. A client
			 * that cannot re-route (unsteered, or its map keeps disagreeing) GETs them
			 * one by one: the server hands a GET to its owner, never an MGET entry.
			 */
			if (c->no_steer || round > c->retries + 1) {
				rc = km_mget_fallback(c, items, pend, npend);
				break;
			}
			if (c->map_gen == gen)
				(void)km_map_refresh(c);
		}
		gen = c->map_gen;
		km_mget_group(c, items, pend, tmp, wk, npend);
		rc = km_mget_round(c, items, pend, npend, wk, &nmoved);
		if (rc < 0)
			break;
		npend = nmoved;
	}
	free(pend);
	return rc < 0 ? rc : KM_OK;
}
