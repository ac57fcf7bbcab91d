/* SPDX-License-Identifier: BSD-3-Clause */
/* libkeymap's SCAN, on top of the request engine: one page per call. */

#include <stdlib.h>
#include <string.h>

#include "km_client_priv.h"

/* An entry of the page as fn gets it; a value fetched with GET is the library's (big). */
struct km_scan_slot {
	struct km_scan_item it;
	void *big;
	int gone; /* deleted before its GET */
};

/* The value of an entry the page listed without one (too large for a datagram, or not
 * acknowledged by the replicas yet): a GET of its own. @return KM_OK, or an error. */
static int
km_scan_fetch(struct km_client *c, const struct km_scan_ent *e, unsigned int flags,
	struct km_scan_slot *sl)
{
	struct km_batch_op op = {.op = KM_OP_GET, .key = e->key, .klen = e->key_len};
	int rc;

	if (!(flags & KM_SCAN_KEYS_ONLY)) {
		sl->big = malloc(KM_VALUE_MAX_LARGE);
		if (sl->big == NULL)
			return KM_ERR_NOMEM;
		op.buf = sl->big;
		op.cap = KM_VALUE_MAX_LARGE;
	}
	rc = km_run_one(c, &op, KM_WORKER_KEY);
	if (rc == KM_ERR_NOT_FOUND) {
		sl->gone = 1;
		return KM_OK;
	}
	if (rc != KM_OK)
		return rc;
	if (sl->big != NULL && op.len < KM_VALUE_MAX_LARGE) {
		/* A page may hold a hundred such entries: keep what each value needs. */
		void *v = realloc(sl->big, op.len != 0 ? op.len : 1);

		if (v != NULL)
			sl->big = v;
	}
	sl->it.val = sl->big;
	sl->it.vlen = sl->big != NULL ? op.len : 0;
	sl->it.version = op.out_version;
	return KM_OK;
}

int
km_scan(struct km_client *c, const void *prefix, size_t plen, uint64_t *cursor, unsigned int max,
	unsigned int flags, km_scan_fn fn, void *arg)
{
	uint8_t body[KM_SCAN_REQ_LEN], rep[KM_DGRAM_MAX];
	/* A page holds at most (1472 - 42) / 13 entries. */
	struct km_scan_slot slot[(KM_DGRAM_MAX - KM_HDR_LEN - 2) / (KM_SCAN_REP_ENTRY_HDR + 1)];
	struct km_batch_op op = {.op = KM_OP_SCAN};
	const uint8_t *p, *end;
	struct km_scan_ent e;
	unsigned int count, i;
	int rc = KM_OK, n = 0;

	if (c == NULL || prefix == NULL || plen == 0 || cursor == NULL || fn == NULL ||
		(flags & ~KM_SCAN_KEYS_ONLY) != 0 || km_engine_busy(c))
		return KM_ERR_INVAL;
	if (plen > KM_KEY_MAX)
		return KM_ERR_TOO_LARGE;
	/* The server refuses a prefix that does not end its routing part: so does the map
	 * here, when there is one. (A part the server's partition shifter overrides is its
	 * to judge: BUSY while the part's keys move, BAD_REQUEST once they are spread.) */
	if (c->map != NULL && !c->no_steer && km_shardmap_route_len(c->map, prefix, plen) >= plen)
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
	if (count > sizeof(slot) / sizeof(slot[0]) || (max != 0 && count > max))
		return KM_ERR_PROTO;
	p = rep + 2;
	end = rep + op.len;
	/* The whole page is checked, and the values it lacks fetched, before fn sees any of
	 * it: an error then leaves nothing delivered, and the call can be repeated. */
	for (i = 0; i < count; i++) {
		if (km_scan_rep_next(&p, end, &e) != 1 ||
			(e.status != KM_ST_OK && e.status != KM_ST_TOO_LARGE &&
				e.status != KM_ST_BUSY) ||
			(e.status != KM_ST_OK && e.val_len != 0) ||
			((flags & KM_SCAN_KEYS_ONLY) && e.val_len != 0))
			rc = KM_ERR_PROTO;
		if (rc != KM_OK)
			break;
		slot[i] = (struct km_scan_slot){
			.it = {
				.key = e.key,
				.klen = e.key_len,
				.val = (flags & KM_SCAN_KEYS_ONLY) ? NULL : e.val,
				.vlen = e.val_len,
				.version = e.version,
			}};
		if (e.status != KM_ST_OK)
			rc = km_scan_fetch(c, &e, flags, &slot[i]);
		if (rc != KM_OK) {
			i++;
			break;
		}
	}
	if (rc == KM_OK && p != end)
		rc = KM_ERR_PROTO;
	count = i;
	for (i = 0; i < count; i++) {
		if (rc == KM_OK && !slot[i].gone) {
			fn(arg, &slot[i].it);
			n++;
		}
		free(slot[i].big);
	}
	if (rc != KM_OK)
		return rc;
	*cursor = op.out_version;
	return n;
}
