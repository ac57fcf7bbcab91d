/* SPDX-License-Identifier: BSD-3-Clause */
/* libkeymap's SCAN, on top of the request engine: one page per call. */

#include <stdlib.h>
#include <string.h>

#include "km_client_priv.h"

/* The value of an entry the page listed without one (too large for a datagram, or not
 * acknowledged by the replicas yet): a GET of its own. @return 1 found, 0 gone, or an
 * error. */
static int
km_scan_fetch(struct km_client *c, const struct km_scan_ent *e, unsigned int flags, void **buf,
	struct km_scan_item *it)
{
	struct km_batch_op op = {.op = KM_OP_GET, .key = e->key, .klen = e->key_len};
	int rc;

	if (!(flags & KM_SCAN_KEYS_ONLY)) {
		if (*buf == NULL && (*buf = malloc(KM_VALUE_MAX_LARGE)) == NULL)
			return KM_ERR_NOMEM;
		op.buf = *buf;
		op.cap = KM_VALUE_MAX_LARGE;
	}
	rc = km_run_one(c, &op, KM_WORKER_KEY);
	if (rc == KM_ERR_NOT_FOUND)
		return 0;
	if (rc != KM_OK)
		return rc;
	it->val = (flags & KM_SCAN_KEYS_ONLY) ? NULL : *buf;
	it->vlen = (flags & KM_SCAN_KEYS_ONLY) ? 0 : op.len;
	it->version = op.out_version;
	return 1;
}

int
km_scan(struct km_client *c, const void *prefix, size_t plen, uint64_t *cursor, unsigned int max,
	unsigned int flags, km_scan_fn fn, void *arg)
{
	uint8_t body[KM_SCAN_REQ_LEN], rep[KM_DGRAM_MAX];
	struct km_batch_op op = {.op = KM_OP_SCAN};
	struct km_shardmap_route sr;
	const uint8_t *p, *end;
	struct km_scan_ent e;
	void *big = NULL;
	unsigned int count, i;
	int rc, n = 0;

	if (c == NULL || prefix == NULL || plen == 0 || cursor == NULL || fn == NULL ||
		(flags & ~KM_SCAN_KEYS_ONLY) != 0 || km_engine_busy(c))
		return KM_ERR_INVAL;
	if (plen > KM_KEY_MAX)
		return KM_ERR_TOO_LARGE;
	/* The server refuses a prefix that does not end its routing part: so does the map
	 * here, when there is one (the server's may have changed since: BAD_REQUEST then). */
	if (c->map != NULL && !c->no_steer &&
		(km_shardmap_route(c->map, prefix, plen, &sr) != 0 || sr.route_len >= plen))
		return KM_ERR_INVAL;
	km_put16(body, (uint16_t)(max > UINT16_MAX ? UINT16_MAX : max));
	km_put16(body + 2, (uint16_t)((flags & KM_SCAN_KEYS_ONLY) ? KM_SCAN_F_KEYS : 0));
	op.key = prefix;
	op.klen = plen;
	op.val = body;
	op.vlen = sizeof(body);
	op.version = *cursor;
	op.buf = rep;
	op.cap = sizeof(rep);
	rc = km_run(c, &op, NULL, 1, true);
	if (rc < 0)
		return rc;
	if (op.err != KM_OK)
		return op.err;
	if (op.len < 2)
		return KM_ERR_PROTO;
	count = km_get16(rep);
	p = rep + 2;
	end = rep + op.len;
	/* The whole page is checked before fn sees any of it. */
	for (i = 0; i < count; i++)
		if (km_scan_rep_next(&p, end, &e) != 1 ||
			(e.status != KM_ST_OK && e.status != KM_ST_TOO_LARGE &&
				e.status != KM_ST_BUSY) ||
			(e.status != KM_ST_OK && e.val_len != 0) || (max != 0 && i >= max))
			return KM_ERR_PROTO;
	if (p != end)
		return KM_ERR_PROTO;
	p = rep + 2;
	for (i = 0; i < count; i++) {
		struct km_scan_item it;

		km_scan_rep_next(&p, end, &e);
		it = (struct km_scan_item){
			.key = e.key,
			.klen = e.key_len,
			.val = (flags & KM_SCAN_KEYS_ONLY) ? NULL : e.val,
			.vlen = e.val_len,
			.version = e.version,
		};
		if (e.status != KM_ST_OK) {
			rc = km_scan_fetch(c, &e, flags, &big, &it);
			if (rc < 0) {
				free(big);
				return rc;
			}
			if (rc == 0)
				continue;
		}
		fn(arg, &it);
		n++;
	}
	free(big);
	*cursor = op.out_version;
	return n;
}
