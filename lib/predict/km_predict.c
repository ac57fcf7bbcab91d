/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The predictor: bounded tables (predict_private.h), learning from each access, and the
 * ensemble that turns the models' candidates into ranked predictions.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "km_predict.h"
#include "predict_hash.h"
#include "predict_private.h"

static const char *const model_names[KM_PREDICT_NB_MODELS] = {
	"succ", "coacc", "entity", "stride", "template"};

/* Set index of a hash among n sets, without a power-of-two size. */
static inline uint32_t
set_of(uint64_t hash, uint32_t n)
{
	return (uint32_t)(((hash >> 32) * (uint64_t)n) >> 32);
}

static inline uint32_t
tag_of(uint64_t hash)
{
	return (uint32_t)(hash >> 32) | 1;
}

static inline uint16_t
cnt_shift(uint16_t c, uint32_t sh)
{
	return sh >= 16 ? 0 : (uint16_t)(c >> sh);
}

static void
refs_decay(struct pr_ref *r, unsigned n, uint32_t sh)
{
	for (unsigned i = 0; i < n; i++)
		r[i].cnt = cnt_shift(r[i].cnt, sh);
}

/* Add inc to target's count in a top-n list; a newcomer replaces the weakest entry. */
static void
refs_add(struct pr_ref *r, unsigned n, uint32_t slot, uint32_t tag, uint16_t *total)
{
	unsigned i, min = 0;

	for (i = 0; i < n; i++) {
		if (r[i].cnt != 0 && r[i].slot == slot && r[i].tag == tag) {
			if (r[i].cnt >= PR_CNT_MAX) {
				refs_decay(r, n, 1);
				if (total != NULL)
					*total = (uint16_t)(*total >> 1);
			}
			r[i].cnt++;
			goto counted;
		}
		if (r[i].cnt < r[min].cnt)
			min = i;
	}
	if (total != NULL)
		*total = (uint16_t)(*total - (*total >= r[min].cnt ? r[min].cnt : *total));
	r[min].slot = slot;
	r[min].tag = tag;
	r[min].cnt = 1;
counted:
	if (total != NULL && *total < UINT16_MAX)
		(*total)++;
}

static void
key_decay(struct km_predict *pr, struct pr_key *e)
{
	uint32_t sh = pr->epoch - e->epoch;

	if (sh == 0)
		return;
	e->epoch = pr->epoch;
	e->hits = cnt_shift(e->hits, sh);
	e->out_total = cnt_shift(e->out_total, sh);
	refs_decay(e->succ, PR_SUCC, sh);
	refs_decay(e->co, PR_CO, sh);
}

static struct pr_key *
key_at(struct km_predict *pr, uint32_t slot, uint32_t tag)
{
	struct pr_key *e = &pr->keys[slot];

	return e->hash != 0 && tag_of(e->hash) == tag ? e : NULL;
}

/* Find or insert; returns the entry and its slot. */
static struct pr_key *
key_get(struct km_predict *pr, const uint8_t *k, uint16_t len, uint64_t h, uint32_t *slot)
{
	uint32_t base = set_of(h, pr->nb_key_sets) * PR_KEY_WAYS, victim = UINT32_MAX;
	struct pr_key *e;

	for (uint32_t i = base; i < base + PR_KEY_WAYS; i++) {
		e = &pr->keys[i];
		if (e->hash == h && e->len == len && memcmp(e->key, k, len) == 0) {
			*slot = i;
			key_decay(pr, e);
			return e;
		}
	}
	/* The least used entry of the set goes (an empty one first). */
	for (uint32_t i = base; i < base + PR_KEY_WAYS; i++) {
		e = &pr->keys[i];
		if (e->hash == 0) {
			victim = i;
			break;
		}
		key_decay(pr, e);
		if (victim == UINT32_MAX || e->hits < pr->keys[victim].hits)
			victim = i;
	}
	e = &pr->keys[victim];
	if (e->hash != 0)
		pr->st.key_replaced++;
	memset(e, 0, sizeof(*e));
	e->hash = h;
	e->epoch = pr->epoch;
	e->len = (uint8_t)len;
	memcpy(e->key, k, len);
	*slot = victim;
	return e;
}

static struct pr_entity *
entity_get(struct km_predict *pr, uint64_t h)
{
	uint32_t base = set_of(h, pr->nb_ent_sets) * PR_WAYS, victim = base, sh;
	struct pr_entity *e;

	for (uint32_t i = base; i < base + PR_WAYS; i++) {
		e = &pr->ents[i];
		if (e->hash == h)
			goto found;
		if (e->hash == 0 ||
			(pr->ents[victim].hash != 0 && e->total < pr->ents[victim].total))
			victim = i;
	}
	e = &pr->ents[victim];
	memset(e, 0, sizeof(*e));
	e->hash = h;
	e->epoch = pr->epoch;
found:
	sh = pr->epoch - e->epoch;
	if (sh != 0) {
		e->epoch = pr->epoch;
		e->total = cnt_shift(e->total, sh);
		refs_decay(e->m, PR_MEMBERS, sh);
	}
	return e;
}

static struct pr_tpl *
tpl_get(struct km_predict *pr, const uint8_t *s, uint16_t len, uint64_t h, uint32_t *slot)
{
	uint32_t base = set_of(h, pr->nb_tpl_sets) * PR_WAYS, victim = base, sh;
	struct pr_tpl *e;

	for (uint32_t i = base; i < base + PR_WAYS; i++) {
		e = &pr->tpls[i];
		if (e->hash == h && e->len == len && memcmp(e->str, s, len) == 0) {
			victim = i;
			goto found;
		}
		if (e->hash == 0 ||
			(pr->tpls[victim].hash != 0 && e->total < pr->tpls[victim].total))
			victim = i;
	}
	e = &pr->tpls[victim];
	memset(e, 0, sizeof(*e));
	e->hash = h;
	e->epoch = pr->epoch;
	e->len = (uint8_t)len;
	memcpy(e->str, s, len);
found:
	e = &pr->tpls[victim];
	sh = pr->epoch - e->epoch;
	if (sh != 0) {
		e->epoch = pr->epoch;
		e->total = cnt_shift(e->total, sh);
		refs_decay(e->next, PR_TPL_NEXT, sh);
	}
	*slot = victim;
	return e;
}

static struct pr_ctx *
ctx_get(struct km_predict *pr, uint64_t id, uint64_t t_ns)
{
	uint64_t h = pr_hash((const uint8_t *)&id, sizeof(id));
	uint32_t base = set_of(h, pr->nb_ctx_sets) * PR_WAYS, victim = base;
	struct pr_ctx *c;

	for (uint32_t i = base; i < base + PR_WAYS; i++) {
		c = &pr->ctxs[i];
		if (c->id == id)
			goto found;
		if (c->id == 0 || (pr->ctxs[victim].id != 0 && c->t_ns < pr->ctxs[victim].t_ns))
			victim = i;
	}
	c = &pr->ctxs[victim];
	memset(c, 0, sizeof(*c));
	c->id = id;
found:
	c->t_ns = t_ns;
	return c;
}

/* ---- creation ---- */

int
km_predict_create(const struct km_predict_params *p, struct km_predict **out)
{
	struct km_predict *pr;
	uint64_t mem;

	if (out == NULL)
		return -EINVAL;
	pr = calloc(1, sizeof(*pr));
	if (pr == NULL)
		return -ENOMEM;
	if (p != NULL)
		pr->p = *p;
	if (pr->p.mem_bytes == 0)
		pr->p.mem_bytes = 32u << 20;
	if (pr->p.models == 0)
		pr->p.models = KM_PREDICT_ALL;
	if (pr->p.half_life == 0)
		pr->p.half_life = 65536;
	if (pr->p.prec_half_life == 0)
		pr->p.prec_half_life = 16384;
	if (pr->p.floor == 0)
		pr->p.floor = 0.15f;
	if (pr->p.min_share == 0)
		pr->p.min_share = 0.05f;
	if (pr->p.mem_bytes < KM_PREDICT_MEM_MIN || pr->p.floor < 0 || pr->p.floor > 1 ||
		(pr->p.models & ~KM_PREDICT_ALL) != 0) {
		free(pr);
		return -EINVAL;
	}
	mem = pr->p.mem_bytes;
	pr->nb_key_sets = (uint32_t)(mem * 70 / 100 / (PR_KEY_WAYS * sizeof(struct pr_key)));
	pr->nb_ent_sets = (uint32_t)(mem * 15 / 100 / (PR_WAYS * sizeof(struct pr_entity)));
	pr->nb_tpl_sets = (uint32_t)(mem * 5 / 100 / (PR_WAYS * sizeof(struct pr_tpl)));
	pr->nb_ctx_sets = (uint32_t)(mem * 10 / 100 / (PR_WAYS * sizeof(struct pr_ctx)));
	pr->keys = calloc((size_t)pr->nb_key_sets * PR_KEY_WAYS, sizeof(*pr->keys));
	pr->ents = calloc((size_t)pr->nb_ent_sets * PR_WAYS, sizeof(*pr->ents));
	pr->tpls = calloc((size_t)pr->nb_tpl_sets * PR_WAYS, sizeof(*pr->tpls));
	pr->ctxs = calloc((size_t)pr->nb_ctx_sets * PR_WAYS, sizeof(*pr->ctxs));
	if (pr->keys == NULL || pr->ents == NULL || pr->tpls == NULL || pr->ctxs == NULL) {
		km_predict_destroy(pr);
		return -ENOMEM;
	}
	pr->st.tracked_max = (uint64_t)pr->nb_key_sets * PR_KEY_WAYS;
	pr->st.mem_bytes = pr->st.tracked_max * sizeof(struct pr_key) +
			   (uint64_t)pr->nb_ent_sets * PR_WAYS * sizeof(struct pr_entity) +
			   (uint64_t)pr->nb_tpl_sets * PR_WAYS * sizeof(struct pr_tpl) +
			   (uint64_t)pr->nb_ctx_sets * PR_WAYS * sizeof(struct pr_ctx);
	km_stream_ctx_init(&pr->sctx, &pr->p.stream);
	*out = pr;
	return 0;
}

void
km_predict_destroy(struct km_predict *pr)
{
	if (pr == NULL)
		return;
	free(pr->keys);
	free(pr->ents);
	free(pr->tpls);
	free(pr->ctxs);
	free(pr);
}

/* ---- ensemble ---- */

float
km_predict_confidence(const struct km_predict *pr, uint8_t src)
{
	if (src >= KM_PREDICT_NB_SRC)
		return 0;
	return (pr->used[src] + 0.5f) / (pr->issued[src] + 1.0f);
}

int
km_predict_feedback(struct km_predict *pr, uint8_t src, enum km_predict_fb fb)
{
	if (pr == NULL || src >= KM_PREDICT_NB_SRC)
		return -EINVAL;
	switch (fb) {
	case KM_PREDICT_ISSUED:
		pr->issued[src] += 1;
		pr->st.issued[src]++;
		break;
	case KM_PREDICT_USED:
		pr->used[src] += 1;
		if (pr->used[src] > pr->issued[src])
			pr->used[src] = pr->issued[src];
		pr->st.used[src]++;
		break;
	case KM_PREDICT_UNUSED:
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

static uint8_t
share_bin(float share)
{
	return share >= 0.6f ? 3 : (share >= 0.35f ? 2 : (share >= 0.15f ? 1 : 0));
}

uint8_t
km_predict_stride_bin(unsigned run)
{
	return run >= 16 ? 3 : (run >= 4 ? 2 : (run >= 2 ? 1 : 0));
}

/* Offer one candidate: gated by its source's precision, merged with an equal key. */
static void
cand_add(struct km_predict *pr, uint8_t model, uint8_t bin, const uint8_t *key, uint16_t len,
	uint64_t hash, int copy)
{
	uint8_t src = KM_PREDICT_SRC(model, bin);
	float c = km_predict_confidence(pr, src);
	struct pr_cand *x;

	if (c < pr->p.floor) {
		pr->st.suppressed++;
		return;
	}
	for (unsigned i = 0; i < pr->nb_cand; i++) {
		x = &pr->cand[i];
		if (x->hash == hash && x->len == len && memcmp(x->key, key, len) == 0) {
			x->conf = 1 - (1 - x->conf) * (1 - c);
			if (c > x->best) {
				x->best = c;
				x->src = src;
			}
			return;
		}
	}
	if (pr->nb_cand == PR_CAND_MAX)
		return;
	x = &pr->cand[pr->nb_cand++];
	x->hash = hash;
	x->conf = c;
	x->best = c;
	x->src = src;
	x->len = len;
	if (copy) {
		memcpy(x->buf, key, len);
		x->key = x->buf;
	} else {
		x->key = key;
	}
}

static int
cand_cmp(const void *a, const void *b)
{
	const struct pr_cand *x = a, *y = b;

	return x->conf < y->conf ? 1 : (x->conf > y->conf ? -1 : 0);
}

/* ---- learning and candidates, per model ---- */

/* The digit runs of a key and its template (runs masked by '#'). */
struct pr_shape {
	uint8_t nruns;
	uint8_t rs[PR_RUNS], rl[PR_RUNS];
	uint16_t tlen;
	uint8_t t[KM_PREDICT_KEY_INLINE];
};

static int
shape_of(const uint8_t *k, uint16_t len, struct pr_shape *s)
{
	uint16_t i = 0;

	s->nruns = 0;
	s->tlen = 0;
	while (i < len) {
		if (k[i] >= '0' && k[i] <= '9') {
			uint16_t st = i;

			while (i < len && k[i] >= '0' && k[i] <= '9')
				i++;
			if (s->nruns == PR_RUNS)
				return -1;
			s->rs[s->nruns] = (uint8_t)st;
			s->rl[s->nruns++] = (uint8_t)(i - st);
			s->t[s->tlen++] = '#';
		} else {
			s->t[s->tlen++] = k[i++];
		}
	}
	return 0;
}

/* Fill a template's '#' with the key's digit runs, in order. */
static int
tpl_instantiate(const struct pr_tpl *t, const uint8_t *k, const struct pr_shape *s, uint8_t *out,
	uint16_t *len)
{
	uint16_t at = 0;
	unsigned r = 0;

	for (unsigned i = 0; i < t->len; i++) {
		if (t->str[i] != '#') {
			if (at >= KM_KEY_MAX)
				return -1;
			out[at++] = t->str[i];
			continue;
		}
		if (r == s->nruns || at + s->rl[r] > KM_KEY_MAX)
			return -1;
		memcpy(out + at, k + s->rs[r], s->rl[r]);
		at = (uint16_t)(at + s->rl[r]);
		r++;
	}
	*len = at;
	return 0;
}

static int
in_window(const struct pr_ctx *c, uint32_t slot, uint32_t tag)
{
	for (unsigned i = 0; i < PR_WIN; i++)
		if (c->win[i].tag == tag && c->win[i].slot == slot)
			return 1;
	return 0;
}

/* Candidates from a list of key references, scored by count / total. */
static void
cand_refs(struct km_predict *pr, const struct pr_ctx *c, uint8_t model, const struct pr_ref *r,
	unsigned n, unsigned total, uint32_t self)
{
	for (unsigned i = 0; i < n; i++) {
		struct pr_key *t;
		float share;

		if (r[i].cnt == 0 || r[i].slot == self)
			continue;
		/* Keys read together with this one were just read: no use predicting them. */
		if (model != KM_PREDICT_SUCC && in_window(c, r[i].slot, r[i].tag))
			continue;
		t = key_at(pr, r[i].slot, r[i].tag);
		if (t == NULL)
			continue;
		share = total > 0 ? (float)r[i].cnt / (float)total : 0;
		if (share > 1)
			share = 1;
		if (share < pr->p.min_share)
			continue;
		cand_add(pr, model, share_bin(share), t->key, t->len, t->hash, 0);
	}
}

static void
predict_templates(struct km_predict *pr, const struct pr_tpl *t, const uint8_t *k, uint16_t len,
	const struct pr_shape *s)
{
	for (unsigned i = 0; i < PR_TPL_NEXT; i++) {
		const struct pr_ref *r = &t->next[i];
		const struct pr_tpl *n;
		float share;
		uint16_t olen;
		uint8_t buf[KM_KEY_MAX];

		if (r->cnt == 0 || t->total == 0)
			continue;
		n = &pr->tpls[r->slot];
		if (n->hash == 0 || tag_of(n->hash) != r->tag)
			continue;
		share = (float)r->cnt / (float)t->total;
		if (share < pr->p.min_share || tpl_instantiate(n, k, s, buf, &olen) < 0)
			continue;
		if (olen == len && memcmp(buf, k, len) == 0)
			continue;
		cand_add(pr, KM_PREDICT_TEMPLATE, share_bin(share), buf, olen, pr_hash(buf, olen),
			1);
	}
}

static void
predict_stride(struct km_predict *pr, struct pr_ctx *c, const struct km_access *a, int predict)
{
	struct km_stream_key ks[8];
	unsigned n = km_stream_observe(&pr->sctx, &c->st, a->key, a->len, a->t_ns, ks, 8);
	uint8_t bin = km_predict_stride_bin(c->st.run);

	if (!predict)
		return;
	for (unsigned i = 0; i < n; i++)
		cand_add(pr, KM_PREDICT_STRIDE, bin, ks[i].key, ks[i].len,
			pr_hash(ks[i].key, ks[i].len), 1);
}

static uint16_t
routing_len(const uint8_t *k, uint16_t len)
{
	const uint8_t *sl = memchr(k, '/', len);

	return sl == NULL ? 0 : (uint16_t)(sl - k);
}

int
km_predict_observe(
	struct km_predict *pr, const struct km_access *a, struct km_prediction *out, unsigned max)
{
	uint32_t m, slot = 0, tslot = 0;
	struct pr_key *x = NULL;
	struct pr_tpl *t = NULL;
	struct pr_shape sh;
	struct pr_ctx *c;
	uint64_t h;
	uint16_t rl;
	int predict;
	unsigned i, n;

	if (pr == NULL || a == NULL || a->key == NULL || a->len == 0 || a->len > KM_KEY_MAX ||
		(out == NULL && max > 0))
		return -EINVAL;
	m = pr->p.models;
	predict = a->op == KM_PREDICT_GET && max > 0;
	pr->nb_cand = 0;
	if (++pr->st.observed % pr->p.half_life == 0)
		pr->epoch++;
	if (pr->st.observed % pr->p.prec_half_life == 0)
		for (i = 0; i < KM_PREDICT_NB_SRC; i++) {
			pr->issued[i] *= 0.5f;
			pr->used[i] *= 0.5f;
		}
	c = ctx_get(pr, a->session != 0 ? a->session : (a->stream | (1ULL << 63)), a->t_ns);
	if (m & (1u << KM_PREDICT_STRIDE))
		predict_stride(pr, c, a, predict);
	if (a->len > KM_PREDICT_KEY_INLINE) {
		pr->st.untracked++;
		goto rank;
	}
	h = pr_hash(a->key, a->len);
	x = key_get(pr, a->key, a->len, h, &slot);
	if (x->hits < UINT16_MAX)
		x->hits++;

	if ((m & (1u << KM_PREDICT_SUCC)) && c->last_tag != 0 &&
		!(c->last_slot == slot && c->last_tag == tag_of(h))) {
		struct pr_key *l = key_at(pr, c->last_slot, c->last_tag);

		if (l != NULL)
			refs_add(l->succ, PR_SUCC, slot, tag_of(h), &l->out_total);
	}
	if (m & (1u << KM_PREDICT_COACC))
		for (i = 0; i < PR_WIN; i++) {
			struct pr_win *w = &c->win[i];
			struct pr_key *y;

			if (w->tag == 0 || (w->slot == slot && w->tag == tag_of(h)))
				continue;
			if (pr->p.window_ns != 0 && a->t_ns - w->t_ns > pr->p.window_ns)
				continue;
			y = key_at(pr, w->slot, w->tag);
			if (y == NULL)
				continue;
			refs_add(y->co, PR_CO, slot, tag_of(h), NULL);
			refs_add(x->co, PR_CO, w->slot, w->tag, NULL);
		}
	rl = routing_len(a->key, a->len);
	if ((m & (1u << KM_PREDICT_ENTITY)) && rl > 0) {
		struct pr_entity *e = entity_get(pr, pr_hash(a->key, rl));

		refs_add(e->m, PR_MEMBERS, slot, tag_of(h), &e->total);
		if (predict)
			cand_refs(pr, c, KM_PREDICT_ENTITY, e->m, PR_MEMBERS, e->total, slot);
	}
	if ((m & (1u << KM_PREDICT_TEMPLATE)) && shape_of(a->key, a->len, &sh) == 0 &&
		sh.nruns > 0) {
		t = tpl_get(pr, sh.t, sh.tlen, pr_hash(sh.t, sh.tlen), &tslot);
		if (c->tpl_tag != 0 && !(c->tpl_slot == tslot && c->tpl_tag == tag_of(t->hash))) {
			struct pr_tpl *p = &pr->tpls[c->tpl_slot];

			if (p->hash != 0 && tag_of(p->hash) == c->tpl_tag)
				refs_add(p->next, PR_TPL_NEXT, tslot, tag_of(t->hash), &p->total);
		}
		if (predict)
			predict_templates(pr, t, a->key, a->len, &sh);
	}
	if (predict && (m & (1u << KM_PREDICT_SUCC)))
		cand_refs(pr, c, KM_PREDICT_SUCC, x->succ, PR_SUCC, x->out_total, slot);
	if (predict && (m & (1u << KM_PREDICT_COACC)))
		cand_refs(pr, c, KM_PREDICT_COACC, x->co, PR_CO, x->hits, slot);

	c->last_slot = slot;
	c->last_tag = tag_of(h);
	if (t != NULL) {
		c->tpl_slot = tslot;
		c->tpl_tag = tag_of(t->hash);
	} else {
		c->tpl_tag = 0;
	}
	if (!in_window(c, slot, tag_of(h))) {
		c->win[c->win_at % PR_WIN] = (struct pr_win){slot, tag_of(h), a->t_ns};
		c->win_at++;
	}

rank:
	if (!predict)
		return 0;
	qsort(pr->cand, pr->nb_cand, sizeof(pr->cand[0]), cand_cmp);
	n = pr->nb_cand < max ? pr->nb_cand : max;
	for (i = 0; i < n; i++) {
		const struct pr_cand *y = &pr->cand[i];

		out[i].conf = y->conf;
		out[i].src = y->src;
		out[i].model = KM_PREDICT_SRC_MODEL(y->src);
		out[i].len = y->len;
		out[i].hash = y->hash;
		memcpy(out[i].key, y->key, y->len);
	}
	pr->st.predicted += n;
	return (int)n;
}

void
km_predict_stats(const struct km_predict *pr, struct km_predict_stats *st)
{
	*st = pr->st;
}

/* Keep out[0..*n) the max strongest, descending: insert t if it is strong enough. */
static void
top_insert(struct km_predict_transition *out, unsigned max, unsigned *n,
	const struct km_predict_transition *t)
{
	unsigned i;

	if (t->count == 0 || (*n == max && out[max - 1].count >= t->count))
		return;
	i = *n < max ? (*n)++ : max - 1;
	for (; i > 0 && out[i - 1].count < t->count; i--)
		out[i] = out[i - 1];
	out[i] = *t;
}

/* One transition from -> to (the decayed count of its reference r, out of total). */
static void
top_offer(struct km_predict_transition *out, unsigned max, unsigned *n, uint8_t model,
	const uint8_t *from, uint8_t from_len, const uint8_t *to, uint8_t to_len,
	const struct pr_ref *r, uint16_t total, uint32_t shift)
{
	struct km_predict_transition t = {
		.model = model,
		.from_len = from_len,
		.to_len = to_len,
		.count = cnt_shift(r->cnt, shift),
		.share = (float)r->cnt / (float)total,
	};

	memcpy(t.from, from, from_len);
	memcpy(t.to, to, to_len);
	top_insert(out, max, n, &t);
}

unsigned
km_predict_top(const struct km_predict *pr, struct km_predict_transition *out, unsigned max)
{
	unsigned n = 0;
	uint32_t i, j;

	if (pr == NULL || out == NULL || max == 0)
		return 0;
	/* Successors: key -> key, out of the key's transitions. */
	for (i = 0; i < pr->nb_key_sets * PR_KEY_WAYS; i++) {
		const struct pr_key *e = &pr->keys[i], *to;

		for (j = 0; e->hash != 0 && e->out_total != 0 && j < PR_SUCC; j++) {
			to = &pr->keys[e->succ[j].slot];
			if (e->succ[j].cnt != 0 && to->hash != 0 &&
				tag_of(to->hash) == e->succ[j].tag)
				top_offer(out, max, &n, KM_PREDICT_SUCC, e->key, e->len, to->key,
					to->len, &e->succ[j], e->out_total, pr->epoch - e->epoch);
		}
	}
	/* Templates: template -> template, out of the template's transitions. */
	for (i = 0; i < pr->nb_tpl_sets * PR_WAYS; i++) {
		const struct pr_tpl *e = &pr->tpls[i], *to;

		for (j = 0; e->hash != 0 && e->total != 0 && j < PR_TPL_NEXT; j++) {
			to = &pr->tpls[e->next[j].slot];
			if (e->next[j].cnt != 0 && to->hash != 0 &&
				tag_of(to->hash) == e->next[j].tag)
				top_offer(out, max, &n, KM_PREDICT_TEMPLATE, e->str, e->len,
					to->str, to->len, &e->next[j], e->total,
					pr->epoch - e->epoch);
		}
	}
	return n;
}

uint64_t
km_predict_hash(const uint8_t *key, uint16_t len)
{
	return pr_hash(key, len);
}

const char *
km_predict_model_name(unsigned model)
{
	return model < KM_PREDICT_NB_MODELS ? model_names[model] : NULL;
}

int
km_predict_models_parse(const char *s, uint32_t *mask)
{
	uint32_t m = 0;
	const char *p = s;

	if (s == NULL || mask == NULL || *s == '\0')
		return -EINVAL;
	if (strcmp(s, "all") == 0) {
		*mask = KM_PREDICT_ALL;
		return 0;
	}
	if (strcmp(s, "none") == 0) {
		*mask = 0;
		return 0;
	}
	while (*p != '\0') {
		size_t l = strcspn(p, ",");
		unsigned i;

		for (i = 0; i < KM_PREDICT_NB_MODELS; i++)
			if (strlen(model_names[i]) == l && strncmp(p, model_names[i], l) == 0)
				break;
		if (i == KM_PREDICT_NB_MODELS)
			return -EINVAL;
		m |= 1u << i;
		p += l;
		if (*p == ',')
			p++;
	}
	*mask = m;
	return 0;
}
