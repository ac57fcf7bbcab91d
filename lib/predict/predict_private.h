/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef PREDICT_PRIVATE_H
#define PREDICT_PRIVATE_H

/*
 * The predictor's tables. Every table is set-associative over one allocation made at
 * creation: a lookup touches one set, a miss replaces the set's least used entry, so memory
 * never grows. Entries point at each other by (slot, tag): the tag is the upper half of the
 * target's hash, checked on use, so a replaced target is simply a dead reference.
 */

#include <stdint.h>

#include "km_predict.h"

#define PR_KEY_WAYS 8
#define PR_WAYS     4
#define PR_SUCC     4
#define PR_CO       4
#define PR_MEMBERS  6
#define PR_TPL_NEXT 4
#define PR_WIN      4
#define PR_RUNS     8
#define PR_CAND_MAX 48
#define PR_CNT_MAX  60000

struct pr_ref {
	uint32_t slot;
	uint32_t tag; /* hash >> 32 of the target */
	uint16_t cnt; /* decayed; 0: empty */
	uint16_t pad;
};

struct pr_key {
	uint64_t hash; /* 0: free */
	uint32_t epoch;
	uint16_t hits;
	uint16_t out_total; /* sum of the successor counts, decayed alike */
	uint8_t len;
	uint8_t pad[3];
	struct pr_ref succ[PR_SUCC];
	struct pr_ref co[PR_CO];
	uint8_t key[KM_PREDICT_KEY_INLINE];
};

struct pr_entity {
	uint64_t hash;
	uint32_t epoch;
	uint16_t total;
	uint16_t pad;
	struct pr_ref m[PR_MEMBERS];
};

struct pr_tpl {
	uint64_t hash;
	uint32_t epoch;
	uint16_t total;
	uint8_t len;
	uint8_t pad;
	struct pr_ref next[PR_TPL_NEXT];
	uint8_t str[KM_PREDICT_KEY_INLINE];
};

struct pr_win {
	uint32_t slot, tag;
	uint64_t t_ns;
};

struct pr_ctx {
	uint64_t id; /* session, or stream with the top bit set; 0: free */
	uint64_t t_ns;
	uint32_t last_slot, last_tag; /* last key; last_tag 0: none */
	uint32_t tpl_slot, tpl_tag;   /* its template; tpl_tag 0: none */
	struct pr_win win[PR_WIN];
	uint32_t win_at;
	struct km_stream st;
};

struct pr_cand {
	uint64_t hash;
	float conf;
	float best;
	uint8_t src;
	uint16_t len;
	const uint8_t *key; /* into a table entry or the candidate's own buffer */
	uint8_t buf[KM_KEY_MAX];
};

struct km_predict {
	struct km_predict_params p;
	struct pr_key *keys;
	uint32_t nb_key_sets;
	struct pr_entity *ents;
	uint32_t nb_ent_sets;
	struct pr_tpl *tpls;
	uint32_t nb_tpl_sets;
	struct pr_ctx *ctxs;
	uint32_t nb_ctx_sets;
	uint32_t epoch;
	float issued[KM_PREDICT_NB_SRC], used[KM_PREDICT_NB_SRC]; /* decayed */
	struct km_stream_ctx sctx;
	struct km_predict_stats st;
	struct pr_cand cand[PR_CAND_MAX];
	unsigned nb_cand;
};

_Static_assert(sizeof(struct pr_key) == KM_PREDICT_KEY_BYTES, "bytes per tracked key");

#endif /* PREDICT_PRIVATE_H */
