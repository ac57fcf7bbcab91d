/* SPDX-License-Identifier: BSD-3-Clause */

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <km_proto.h>

#include <km_util.h>

#include "km_workload.h"

struct wl_session {
	uint64_t entity;
	uint32_t pos; /* index into the template permutation */
};

struct km_wl {
	struct km_wl_conf conf;
	struct km_rng rng;
	uint64_t nb_keys;       /* after rounding to whole entities */
	uint64_t nb_entities;   /* composite: nb_keys / fields */
	unsigned int num_width; /* flat: digits after 'k' */
	unsigned int ent_width; /* composite: digits after 'e' */
	unsigned int fld_width; /* composite: digits after '/' */
	/* ZIPF: constants of the rejection-inversion sampler over ranks 1..nb_keys */
	double z_q; /* 1 - theta */
	double z_hx1, z_hn, z_s;
	/* HOTSET */
	uint64_t hot_n, hot_start;
	/* SCAN */
	uint64_t scan_entity;
	uint32_t scan_field;
	/* SESSION */
	uint32_t *perm;
	struct wl_session *sess;
};

void
km_rng_seed(struct km_rng *r, uint64_t seed)
{
	unsigned int i;

	for (i = 0; i < 4; i++)
		r->s[i] = km_util_splitmix64(&seed);
}

static inline uint64_t
rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t
km_rng_next(struct km_rng *r)
{
	uint64_t *s = r->s;
	const uint64_t out = rotl(s[1] * 5, 7) * 9;
	const uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

uint64_t
km_rng_below(struct km_rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)km_rng_next(r) * n) >> 64);
}

double
km_rng_double(struct km_rng *r)
{
	return (double)(km_rng_next(r) >> 11) * 0x1.0p-53;
}

/*
 * Zipf by rejection-inversion (W. Hoermann, G. Derflinger, "Rejection-inversion to
 * generate variates from monotone discrete distributions", 1996), in the form of Apache
 * Commons RNG. h(x) = x^-theta is the density of ranks k >= 1; H is its integral
 * (x^(1-theta) - 1) / (1-theta), which tends to log(x) as theta -> 1: the helpers keep
 * it exact near theta = 1 instead of special-casing it.
 */
static double
helper1(double x)
{
	/* log1p(x) / x */
	return fabs(x) > 1e-8 ? log1p(x) / x : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

static double
helper2(double x)
{
	/* expm1(x) / x */
	return fabs(x) > 1e-8 ? expm1(x) / x : 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x));
}

static double
zipf_h(const struct km_wl *wl, double x)
{
	return exp((wl->z_q - 1.0) * log(x));
}

static double
zipf_hint(const struct km_wl *wl, double x)
{
	const double lx = log(x);

	return helper2(wl->z_q * lx) * lx;
}

static double
zipf_hint_inv(const struct km_wl *wl, double x)
{
	double t = x * wl->z_q;

	/* Rounding can push t just below -1, where log1p is undefined. */
	if (t < -1.0)
		t = -1.0;
	return exp(helper1(t) * x);
}

static void
zipf_init(struct km_wl *wl)
{
	wl->z_q = 1.0 - wl->conf.zipf_theta;
	wl->z_hx1 = zipf_hint(wl, 1.5) - 1.0;
	wl->z_hn = zipf_hint(wl, (double)wl->nb_keys + 0.5);
	wl->z_s = 2.0 - zipf_hint_inv(wl, zipf_hint(wl, 2.5) - zipf_h(wl, 2.0));
}

/* A rank 0 .. nb_keys-1; a bounded expected number of rounds for any theta and n. */
static uint64_t
zipf_next(struct km_wl *wl)
{
	const double n = (double)wl->nb_keys;
	double u, x, k;

	for (;;) {
		u = wl->z_hn + km_rng_double(&wl->rng) * (wl->z_hx1 - wl->z_hn);
		x = zipf_hint_inv(wl, u);
		k = floor(x + 0.5);
		if (k < 1.0)
			k = 1.0;
		else if (k > n)
			k = n;
		if (k - x <= wl->z_s || u >= zipf_hint(wl, k + 0.5) - zipf_h(wl, k))
			return (uint64_t)k - 1;
	}
}

static unsigned int
dec_digits(uint64_t v)
{
	unsigned int d = 1;

	while (v >= 10) {
		v /= 10;
		d++;
	}
	return d;
}

/* v < 10^8 as eight ASCII digits, zero-padded, in little-endian memory order: v split
 * into 4-digit halves in 32-bit lanes, those into 2-digit quarters in 16-bit lanes, those
 * into digits in bytes, each split one multiply and shift for all lanes (x * 10486 >> 20 is
 * x / 100 for x < 10,000; x * 103 >> 10 is x / 10 for x < 100). No lane overflows into
 * the next: 9,999 * 10,486 < 2^32, 99 * 103 < 2^16. */
static inline uint64_t
dec8(uint32_t v)
{
	uint64_t hi = v / 10000, x = hi | ((uint64_t)(v - hi * 10000) << 32), q;

	q = ((x * 10486) >> 20) & UINT64_C(0x0000007f0000007f);
	x = q | ((x - q * 100) << 16);
	q = ((x * 103) >> 10) & UINT64_C(0x000f000f000f000f);
	x = q | ((x - q * 10) << 8);
	return x | UINT64_C(0x3030303030303030);
}

/* v in exactly width decimal digits, zero-padded (higher digits dropped). A key index
 * below 10^8 in a width of 8 or more (every workload's up to 10^8 keys of 9 bytes or more)
 * takes no division nor data-dependent branch: its digits by dec8(), the padding by 8-byte
 * stores. keymap-bench's echo took 113 instructions per key with a division per digit and
 * memset(). */
static void
put_dec(char *p, unsigned int width, uint64_t v)
{
	const uint64_t zeros = UINT64_C(0x3030303030303030);
	unsigned int n, d;
	uint64_t w;

	if (width >= 8 && v < 100000000) {
		/* The padding, [0, n); the digits then overwrite [n, width). */
		n = width - 8;
		for (d = 0; d + 8 < n; d += 8)
			memcpy(p + d, &zeros, 8);
		memcpy(p + (n >= 8 ? n - 8 : 0), &zeros, 8);
		w = dec8((uint32_t)v);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		w = __builtin_bswap64(w);
#endif
		memcpy(p + n, &w, 8);
		return;
	}
	while (width > 0 && v != 0) {
		p[--width] = (char)('0' + v % 10);
		v /= 10;
	}
	memset(p, '0', width);
}

static int
is_composite(enum km_wl_dist d)
{
	return d == KM_WL_SCAN || d == KM_WL_SESSION;
}

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* Everything km_wl_create() refuses; fills the derived sizes of wl on success. */
static int
check_conf(const struct km_wl_conf *c, struct km_wl *wl, char *err, size_t errlen)
{
	unsigned int need;

	if (c->nb_keys == 0)
		return fail(err, errlen, "nb_keys must be at least 1");
	if (c->key_size < 1 || c->key_size > KM_KEY_MAX)
		return fail(err, errlen, "key_size %u is not in 1..%u", c->key_size, KM_KEY_MAX);
	/* Written so that NaN fails too. */
	if (!(c->get_ratio >= 0.0 && c->get_ratio <= 1.0))
		return fail(err, errlen, "get_ratio %g is not in [0, 1]", c->get_ratio);

	wl->nb_keys = c->nb_keys;
	switch (c->dist) {
	case KM_WL_UNIFORM:
		break;
	case KM_WL_ZIPF:
		if (!(c->zipf_theta > 0.0 && isfinite(c->zipf_theta)))
			return fail(err, errlen, "zipf theta %g must be > 0", c->zipf_theta);
		break;
	case KM_WL_HOTSET:
		if (!(c->hot_fraction > 0.0 && c->hot_fraction < 1.0))
			return fail(
				err, errlen, "hot_fraction %g is not in (0, 1)", c->hot_fraction);
		if (!(c->hot_prob >= 0.0 && c->hot_prob <= 1.0))
			return fail(err, errlen, "hot_prob %g is not in [0, 1]", c->hot_prob);
		wl->hot_n = (uint64_t)(c->hot_fraction * (double)c->nb_keys);
		if (wl->hot_n == 0 || wl->hot_n >= c->nb_keys)
			return fail(err, errlen,
				"hot_fraction %g of %llu keys leaves the hot or the cold set empty",
				c->hot_fraction, (unsigned long long)c->nb_keys);
		if (c->hot_move_at_us != 0 && wl->hot_n > c->nb_keys - wl->hot_n)
			return fail(err, errlen,
				"the hot range of %llu keys cannot move to a second block within "
				"%llu keys (hot_fraction must be <= 0.5)",
				(unsigned long long)wl->hot_n, (unsigned long long)c->nb_keys);
		break;
	case KM_WL_SCAN:
	case KM_WL_SESSION:
		if (c->fields == 0)
			return fail(err, errlen, "fields must be at least 1");
		if (c->dist == KM_WL_SESSION && c->sessions == 0)
			return fail(err, errlen, "sessions must be at least 1");
		wl->nb_entities = c->nb_keys / c->fields;
		if (wl->nb_entities == 0)
			return fail(err, errlen,
				"nb_keys %llu is fewer than one entity of %u fields",
				(unsigned long long)c->nb_keys, c->fields);
		wl->nb_keys = wl->nb_entities * c->fields;
		break;
	default:
		return fail(err, errlen, "unknown distribution %d", (int)c->dist);
	}

	if (is_composite(c->dist)) {
		wl->fld_width = dec_digits(c->fields - 1);
		/* "e" entity "/" field */
		need = 2 + dec_digits(wl->nb_entities - 1) + wl->fld_width;
		if (c->key_size < need)
			return fail(err, errlen,
				"key_size %u cannot hold %llu entities of %u fields (needs %u)",
				c->key_size, (unsigned long long)wl->nb_entities, c->fields, need);
		wl->ent_width = c->key_size - 2 - wl->fld_width;
	} else {
		need = 1 + dec_digits(c->nb_keys - 1);
		if (c->key_size < need)
			return fail(err, errlen, "key_size %u cannot hold %llu keys (needs %u)",
				c->key_size, (unsigned long long)c->nb_keys, need);
		wl->num_width = c->key_size - 1;
	}
	return 0;
}

/* A stream of its own: draws of its own after what the seed alone decides. */
static void
stream_seed(struct km_wl *wl)
{
	uint64_t x = (uint64_t)wl->conf.stream << 32;

	if (wl->conf.stream != 0)
		km_rng_seed(&wl->rng, wl->conf.seed ^ km_util_splitmix64(&x));
}

static int
session_init(struct km_wl *wl)
{
	uint32_t i, j, t, n = wl->conf.fields;

	wl->perm = malloc((size_t)n * sizeof(*wl->perm));
	wl->sess = malloc((size_t)wl->conf.sessions * sizeof(*wl->sess));
	if (wl->perm == NULL || wl->sess == NULL)
		return -ENOMEM;
	/* Fisher-Yates: the template order every session follows. */
	for (i = 0; i < n; i++)
		wl->perm[i] = i;
	for (i = n - 1; i > 0; i--) {
		j = (uint32_t)km_rng_below(&wl->rng, (uint64_t)i + 1);
		t = wl->perm[i];
		wl->perm[i] = wl->perm[j];
		wl->perm[j] = t;
	}
	stream_seed(wl);
	for (i = 0; i < wl->conf.sessions; i++) {
		wl->sess[i].entity = km_rng_below(&wl->rng, wl->nb_entities);
		wl->sess[i].pos = 0;
	}
	return 0;
}

int
km_wl_create(const struct km_wl_conf *conf, struct km_wl **out, char *err, size_t errlen)
{
	struct km_wl *wl;
	int rc;

	if (conf == NULL || out == NULL)
		return fail(err, errlen, "no configuration or no place for the generator");
	wl = calloc(1, sizeof(*wl));
	if (wl == NULL) {
		fail(err, errlen, "out of memory");
		return -ENOMEM;
	}
	wl->conf = *conf;
	rc = check_conf(conf, wl, err, errlen);
	if (rc != 0) {
		free(wl);
		return rc;
	}
	km_rng_seed(&wl->rng, conf->seed);
	if (conf->dist != KM_WL_SESSION)
		stream_seed(wl); /* SESSION: after the template order */
	switch (conf->dist) {
	case KM_WL_ZIPF:
		zipf_init(wl);
		break;
	case KM_WL_SCAN:
		/* The first draw picks an entity. */
		wl->scan_field = conf->fields;
		break;
	case KM_WL_SESSION:
		if (session_init(wl) != 0) {
			km_wl_free(wl);
			fail(err, errlen, "out of memory for %u sessions of %u fields",
				conf->sessions, conf->fields);
			return -ENOMEM;
		}
		break;
	default:
		break;
	}
	*out = wl;
	return 0;
}

void
km_wl_free(struct km_wl *wl)
{
	if (wl == NULL)
		return;
	free(wl->perm);
	free(wl->sess);
	free(wl);
}

void
km_wl_next(struct km_wl *wl, uint64_t now_us, struct km_wl_op *op)
{
	const struct km_wl_conf *c = &wl->conf;
	struct wl_session *s;
	uint64_t k;
	uint32_t i;

	op->op = km_rng_double(&wl->rng) < c->get_ratio ? KM_WL_GET : KM_WL_PUT;
	op->session = 0;
	switch (c->dist) {
	case KM_WL_ZIPF:
		op->key = zipf_next(wl);
		break;
	case KM_WL_HOTSET:
		/* Sticky: the range moves once, even if a caller's clock stepped back. */
		if (c->hot_move_at_us != 0 && now_us >= c->hot_move_at_us)
			wl->hot_start = wl->hot_n;
		if (km_rng_double(&wl->rng) < c->hot_prob) {
			op->key = wl->hot_start + km_rng_below(&wl->rng, wl->hot_n);
		} else {
			/* Uniform over the keys outside [hot_start, hot_start + hot_n). */
			k = km_rng_below(&wl->rng, wl->nb_keys - wl->hot_n);
			op->key = k >= wl->hot_start ? k + wl->hot_n : k;
		}
		break;
	case KM_WL_SCAN:
		if (wl->scan_field >= c->fields) {
			wl->scan_entity = km_rng_below(&wl->rng, wl->nb_entities);
			wl->scan_field = 0;
		}
		op->key = wl->scan_entity * c->fields + wl->scan_field++;
		break;
	case KM_WL_SESSION:
		i = (uint32_t)km_rng_below(&wl->rng, c->sessions);
		s = &wl->sess[i];
		op->session = c->session_base + i + 1;
		op->key = s->entity * c->fields + wl->perm[s->pos];
		if (++s->pos == c->fields) {
			s->pos = 0;
			s->entity = km_rng_below(&wl->rng, wl->nb_entities);
		}
		break;
	case KM_WL_UNIFORM:
	default:
		op->key = km_rng_below(&wl->rng, wl->nb_keys);
		break;
	}
}

size_t
km_wl_key(const struct km_wl *wl, uint64_t idx, char *buf)
{
	const uint32_t fields = wl->conf.fields;

	if (!is_composite(wl->conf.dist)) {
		buf[0] = 'k';
		put_dec(buf + 1, wl->num_width, idx);
	} else {
		buf[0] = 'e';
		put_dec(buf + 1, wl->ent_width, idx / fields);
		buf[1 + wl->ent_width] = '/';
		put_dec(buf + 2 + wl->ent_width, wl->fld_width, idx % fields);
	}
	return wl->conf.key_size;
}

uint64_t
km_wl_nb_keys(const struct km_wl *wl)
{
	return wl->nb_keys;
}

static const char *const dist_names[] = {
	[KM_WL_UNIFORM] = "uniform",
	[KM_WL_ZIPF] = "zipf",
	[KM_WL_HOTSET] = "hotset",
	[KM_WL_SCAN] = "scan",
	[KM_WL_SESSION] = "session",
};

#define NB_DISTS (sizeof(dist_names) / sizeof(dist_names[0]))

int
km_wl_dist_parse(const char *name, enum km_wl_dist *out)
{
	unsigned int i;

	for (i = 0; name != NULL && i < NB_DISTS; i++) {
		if (strcmp(name, dist_names[i]) == 0) {
			*out = (enum km_wl_dist)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *
km_wl_dist_name(enum km_wl_dist d)
{
	return (unsigned int)d < NB_DISTS ? dist_names[d] : "?";
}
