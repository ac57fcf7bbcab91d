/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Stream detector: parse the key's last two digit runs, place the access on its stream,
 * keep a window of positions issued ahead of it. Everything is O(key length) with no
 * allocation: it runs on the owner worker for every access.
 */

#include <string.h>

#include "km_stream.h"
#include "predict_hash.h"

#define F_LINEAR        0x01 /* pos = prev * mod + last */
#define F_HAS_PREV      0x02
#define F_PAD_LAST      0x04 /* the last run was seen zero padded: keep its width */
#define F_PAD_PREV      0x08
#define WINDOW_MAX      255
#define PREV_DIGITS_MAX 9

struct skey {
	int ls, le; /* last digit run [ls, le) */
	int ps, pe; /* previous digit run, ps < 0 when none */
	uint64_t last;
	uint32_t prev;
	uint64_t shape;
};

static inline int
is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static const uint64_t pow10_tab[KM_STREAM_DIGITS_MAX + 1] = {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL,
	100000ULL, 1000000ULL, 10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL,
	100000000000ULL, 1000000000000ULL, 10000000000000ULL, 100000000000000ULL,
	1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL, 1000000000000000000ULL};

/*
 * 0: parsed; -1: no usable position. One backward pass: digit values are summed by powers
 * of ten as they are met (no chain of multiplications), then the shape is hashed.
 */
static int
skey_parse(const uint8_t *k, uint16_t len, struct skey *o)
{
	int i = (int)len - 1, d;
	uint64_t v = 0, h;
	uint32_t pv = 0;

	while (i >= 0 && !is_digit(k[i]))
		i--;
	if (i < 0)
		return -1;
	o->le = i + 1;
	for (d = 0; i >= 0 && is_digit(k[i]); i--, d++)
		if (d < KM_STREAM_DIGITS_MAX)
			v += (uint64_t)(k[i] - '0') * pow10_tab[d];
	if (d > KM_STREAM_DIGITS_MAX)
		return -1;
	o->ls = i + 1;
	o->last = v;
	o->ps = -1;
	o->pe = -1;
	o->prev = 0;
	while (i >= 0 && !is_digit(k[i]))
		i--;
	if (i >= 0) {
		o->pe = i + 1;
		for (d = 0; i >= 0 && is_digit(k[i]); i--, d++)
			if (d < PREV_DIGITS_MAX)
				pv += (uint32_t)(k[i] - '0') * (uint32_t)pow10_tab[d];
		if (d <= PREV_DIGITS_MAX) {
			o->ps = i + 1;
			o->prev = pv;
		}
	}
	if (o->ps >= 0) {
		h = pr_hash_seg(k, (size_t)o->ps, 0);
		h = pr_hash_seg(k + o->pe, (size_t)(o->ls - o->pe), h);
	} else {
		h = pr_hash_seg(k, (size_t)o->ls, 0x5f);
	}
	h = pr_hash_seg(k + o->le, (size_t)(len - o->le), h);
	o->shape = pr_hash_fin(h);
	return 0;
}

/*
 * The key with every digit run masked: the key of learned moduli (they are a property of
 * the key scheme, shared by every entity: ts12, ts13, ...). Computed only when a modulus
 * is looked up or learned: a byte-wise hash of the whole key.
 */
static uint64_t
skey_tshape(const uint8_t *k, uint16_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (int j = 0; j < (int)len; j++) {
		if (is_digit(k[j]) && j > 0 && is_digit(k[j - 1]))
			continue;
		h = (h ^ (is_digit(k[j]) ? '#' : k[j])) * 0x100000001b3ULL;
	}
	return pr_hash_fin(h);
}

/* Write v in the run's width when it was zero padded, else naturally. */
static int
put_digits(uint8_t *out, int room, uint64_t v, int run_len, int padded)
{
	uint8_t tmp[24];
	int n = 0, w;

	do {
		tmp[n++] = (uint8_t)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	w = padded ? run_len : n;
	if (n > w || w > room)
		return -1;
	for (int i = 0; i < w; i++)
		out[i] = i < w - n ? '0' : tmp[w - 1 - i];
	return w;
}

static int
key_build(const uint8_t *k, uint16_t len, const struct skey *p, uint64_t last, uint32_t prev,
	int with_prev, uint8_t flags, struct km_stream_key *out)
{
	int at = 0, n, room = KM_KEY_MAX;
	int lpad = p->le - p->ls > 1 && (k[p->ls] == '0' || (flags & F_PAD_LAST));
	int ppad = p->ps >= 0 && p->pe - p->ps > 1 && (k[p->ps] == '0' || (flags & F_PAD_PREV));
	int cut = with_prev ? p->ps : p->ls;

	memcpy(out->key, k, (size_t)cut);
	at = cut;
	if (with_prev) {
		n = put_digits(out->key + at, room - at, prev, p->pe - p->ps, ppad);
		if (n < 0 || at + n + (p->ls - p->pe) > room)
			return -1;
		at += n;
		memcpy(out->key + at, k + p->pe, (size_t)(p->ls - p->pe));
		at += p->ls - p->pe;
	}
	n = put_digits(out->key + at, room - at, last, p->le - p->ls, lpad);
	if (n < 0 || at + n + (len - p->le) > room)
		return -1;
	at += n;
	memcpy(out->key + at, k + p->le, (size_t)(len - p->le));
	at += len - p->le;
	/* A padded run that overflows its width is not the same scheme any more. */
	if (lpad && n != p->le - p->ls)
		return -1;
	out->len = (uint16_t)at;
	return 0;
}

static uint32_t
mod_find(const struct km_stream_ctx *sc, uint64_t shape)
{
	for (unsigned i = 0; i < KM_STREAM_MODS; i++)
		if (sc->mod_shape[i] == shape)
			return sc->mod[i];
	return 0;
}

static void
mod_learn(struct km_stream_ctx *sc, uint64_t shape, uint32_t mod)
{
	unsigned i = sc->mod_next++ % KM_STREAM_MODS;

	sc->mod_shape[i] = shape;
	sc->mod[i] = mod;
	sc->carries++;
}

void
km_stream_ctx_init(struct km_stream_ctx *sc, const struct km_stream_params *p)
{
	memset(sc, 0, sizeof(*sc));
	if (p != NULL)
		sc->p = *p;
	if (sc->p.depth_min == 0)
		sc->p.depth_min = 4;
	if (sc->p.depth_max == 0)
		sc->p.depth_max = 64;
	if (sc->p.depth_max < sc->p.depth_min)
		sc->p.depth_max = sc->p.depth_min;
	if (sc->p.gap_max == 0)
		sc->p.gap_max = 4;
}

void
km_stream_init(struct km_stream *s)
{
	memset(s, 0, sizeof(*s));
}

unsigned
km_stream_window(const struct km_stream_ctx *sc, const struct km_stream *s)
{
	uint64_t dist = 0, w;

	if (s->shape == 0 || s->depth == 0)
		return 0;
	if (sc->p.latency_ns > 0 && s->gap_ns > 0)
		dist = (sc->p.latency_ns + s->gap_ns - 1) / s->gap_ns;
	w = s->depth + dist + s->extra;
	return w > WINDOW_MAX ? WINDOW_MAX : (unsigned)w;
}

/* A new stream starts at this access. */
static void
stream_reset(struct km_stream *s, const struct skey *p, uint64_t pos, int linear)
{
	s->shape = p->shape;
	s->pos = pos;
	s->ahead = pos;
	s->stride = 0;
	s->run = 0;
	s->depth = 0;
	s->extra = 0;
	s->mark = 0;
	s->gap_ns = 0;
	s->prev = p->prev;
	s->flags = (uint8_t)((linear ? F_LINEAR : 0) | (p->ps >= 0 ? F_HAS_PREV : 0));
}

/* km_stream_observe() of a parsed key. */
static unsigned
observe_parsed(struct km_stream_ctx *sc, struct km_stream *s, const struct skey *pk,
	const uint8_t *key, uint16_t len, uint64_t t_ns, struct km_stream_key *out, unsigned max)
{
	struct skey p = *pk;
	uint32_t mod = 0;
	uint64_t pos, last_t = s->t_ns, tshape = 0;
	int64_t d, step;
	unsigned n = 0, win;
	int carry = !(sc->p.flags & KM_STREAM_NO_CARRY);

	s->t_ns = t_ns;
	/* No modulus learned yet (the common case): no need of the key scheme's hash. */
	if (carry && p.ps >= 0 && sc->carries != 0) {
		tshape = skey_tshape(key, len);
		mod = mod_find(sc, tshape);
	}
	if (mod != 0 && p.last >= mod)
		mod = 0;
	pos = mod != 0 ? (uint64_t)p.prev * mod + p.last : p.last;

	if (s->shape != p.shape) {
		stream_reset(s, &p, pos, mod != 0);
		return 0;
	}
	/* Another stream of this owner learned the modulus since: move to linear positions. */
	if (mod != 0 && !(s->flags & F_LINEAR)) {
		s->pos = (uint64_t)s->prev * mod + (s->pos < mod ? s->pos : mod - 1);
		s->ahead = (uint64_t)s->prev * mod + (s->ahead < mod ? s->ahead : mod - 1);
		s->flags |= F_LINEAR;
	}
	if (mod == 0 && (s->flags & F_HAS_PREV) && p.prev != s->prev) {
		/* The last run wrapped into the previous one: learn where it wraps. */
		if (carry && p.prev == s->prev + 1 && p.last == 0 && s->stride == 1 && s->run > 0 &&
			s->pos > 0 && s->pos < UINT32_MAX) {
			mod = (uint32_t)s->pos + 1;
			if (tshape == 0)
				tshape = skey_tshape(key, len);
			mod_learn(sc, tshape, mod);
			s->pos = (uint64_t)s->prev * mod + s->pos;
			s->ahead = (uint64_t)s->prev * mod + (s->ahead < mod ? s->ahead : mod - 1);
			s->flags |= F_LINEAR;
			pos = (uint64_t)p.prev * mod;
		} else {
			stream_reset(s, &p, pos, 0);
			return 0;
		}
	}
	if (s->flags & F_LINEAR && mod == 0) {
		stream_reset(s, &p, pos, 0);
		return 0;
	}

	d = (int64_t)(pos - s->pos);
	if (d == 0)
		return 0; /* a repeat neither extends nor breaks the stream */
	if (s->run > 0 && (d == s->stride || (s->stride == 1 && d > 0 && d <= sc->p.gap_max))) {
		if (s->run < UINT16_MAX)
			s->run++;
	} else {
		s->stride = d > INT32_MAX || d < -INT32_MAX ? 0 : (int32_t)d;
		s->run = s->stride != 0;
		s->depth = 0;
		s->extra = 0;
		s->ahead = pos;
	}
	if (last_t != 0 && t_ns > last_t) {
		uint64_t g = t_ns - last_t;

		g = g > UINT32_MAX ? UINT32_MAX : g;
		s->gap_ns = s->gap_ns == 0 ? (uint32_t)g : (uint32_t)((s->gap_ns * 7ULL + g) / 8);
	}
	s->pos = pos;
	s->prev = p.prev;
	/* `h09` -> `h10` -> ... `h23` -> `h00`: a run once seen padded stays padded. */
	if (p.le - p.ls > 1 && key[p.ls] == '0')
		s->flags |= F_PAD_LAST;
	if (p.ps >= 0 && p.pe - p.ps > 1 && key[p.ps] == '0')
		s->flags |= F_PAD_PREV;
	if (s->run == 0 || (s->stride != 1 && s->run < 2))
		return 0;
	if (s->depth == 0) {
		s->depth = sc->p.depth_min;
		s->mark = s->run;
	} else if (s->run - s->mark >= s->depth && s->depth < sc->p.depth_max) {
		s->depth = (uint16_t)(2u * s->depth > sc->p.depth_max ? sc->p.depth_max
								      : 2u * s->depth);
		s->mark = s->run;
	}

	/* Issue the positions of the window not issued yet, nearest first. */
	step = s->stride;
	if ((step > 0 && s->ahead < pos) || (step < 0 && s->ahead > pos))
		s->ahead = pos;
	win = km_stream_window(sc, s);
	while (n < max) {
		int64_t next = (int64_t)s->ahead + step;
		uint64_t last;
		uint32_t prev;

		if ((step > 0 && next > (int64_t)pos + step * (int64_t)win) ||
			(step < 0 && next < (int64_t)pos + step * (int64_t)win) || next < 0)
			break;
		if (s->flags & F_LINEAR) {
			prev = (uint32_t)((uint64_t)next / mod);
			last = (uint64_t)next % mod;
		} else {
			prev = p.prev;
			last = (uint64_t)next;
		}
		if (key_build(key, len, &p, last, prev, (s->flags & F_LINEAR) != 0, s->flags,
			    &out[n]) < 0)
			break;
		s->ahead = (uint64_t)next;
		n++;
	}
	sc->issued += n;
	return n;
}

unsigned
km_stream_observe(struct km_stream_ctx *sc, struct km_stream *s, const uint8_t *key, uint16_t len,
	uint64_t t_ns, struct km_stream_key *out, unsigned max)
{
	struct skey p;

	sc->observed++;
	if (skey_parse(key, len, &p) < 0) {
		s->t_ns = t_ns;
		s->shape = 0;
		return 0;
	}
	return observe_parsed(sc, s, &p, key, len, t_ns, out, max);
}

/* Whether key p may continue stream s: same shape, and the same previous digit run or the
 * next one at a wrap (the position decides then). */
static inline int
may_continue(const struct km_stream *s, const struct skey *p)
{
	return s->shape == p->shape &&
	       (s->prev == p->prev || (p->last == 0 && p->prev == s->prev + 1));
}

unsigned
km_stream_observe_set(struct km_stream_ctx *sc, struct km_stream *set, unsigned nb,
	const uint8_t *key, uint16_t len, uint64_t t_ns, unsigned *slot, struct km_stream_key *out,
	unsigned max)
{
	struct skey p;
	unsigned i, best = nb, victim = 0;

	sc->observed++;
	*slot = 0;
	if (nb == 0 || skey_parse(key, len, &p) < 0)
		return 0; /* not a position: no stream is broken by it */
	for (i = 0; i < nb; i++) {
		if (may_continue(&set[i], &p)) {
			best = i;
			break;
		}
		/* The victim: a free slot, else the one idle longest. */
		if (set[victim].shape != 0 && (set[i].shape == 0 || set[i].t_ns < set[victim].t_ns))
			victim = i;
	}
	if (best == nb)
		best = victim;
	*slot = best;
	return observe_parsed(sc, &set[best], &p, key, len, t_ns, out, max);
}

void
km_stream_feedback(struct km_stream_ctx *sc, struct km_stream *s, enum km_stream_outcome o)
{
	switch (o) {
	case KM_STREAM_USED:
		sc->used++;
		break;
	case KM_STREAM_UNUSED:
		sc->unused++;
		if (s->depth > sc->p.depth_min) {
			uint16_t dec = s->depth / 8 > 0 ? s->depth / 8 : 1;

			s->depth = (uint16_t)(s->depth - dec < sc->p.depth_min ? sc->p.depth_min
									       : s->depth - dec);
			s->mark = s->run;
		}
		break;
	case KM_STREAM_LATE:
		sc->late++;
		if (s->extra < 64)
			s->extra++;
		break;
	}
}
