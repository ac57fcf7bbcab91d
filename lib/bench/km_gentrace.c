/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Structured trace generators: a fixed number of concurrent actors (sessions, listings,
 * readers), each request taken from a random one; an actor that finishes is replaced.
 */

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "km_gentrace.h"
#include "km_workload.h"

#define ACTORS_MAX 64

enum page { P_PROFILE, P_CART, P_CHECKOUT, P_ORDERS, P_REVIEWS, P_WISHLIST, P_END };

static const char *const page_names[] = {
	"profile", "cart", "checkout", "orders", "reviews", "wishlist"};

struct actor {
	uint64_t session;
	uint64_t entity; /* user, bucket, sensor */
	uint64_t pos;    /* page, object or hour index */
	uint64_t left;   /* keys still to read (listing, timeseries) */
};

/* Next page of a session walk (percent thresholds). */
static enum page
page_next(enum page p, struct km_rng *r)
{
	uint64_t x = km_rng_below(r, 100);

	switch (p) {
	case P_PROFILE:
		return x < 70 ? P_CART : (x < 85 ? P_WISHLIST : P_ORDERS);
	case P_WISHLIST:
		return x < 80 ? P_CART : P_END;
	case P_CART:
		return x < 85 ? P_CHECKOUT : P_END;
	case P_CHECKOUT:
		return x < 90 ? P_ORDERS : P_END;
	case P_ORDERS:
		return x < 50 ? P_REVIEWS : P_END;
	default:
		return P_END;
	}
}

static void
actor_start(const struct km_gen_conf *c, struct actor *a, struct km_rng *r, uint64_t *session)
{
	a->session = ++*session;
	switch (c->kind) {
	case KM_GEN_SESSIONS:
		a->entity = km_rng_below(r, c->keys / 6 > 0 ? c->keys / 6 : 1);
		a->pos = P_PROFILE;
		a->left = 1;
		break;
	case KM_GEN_LISTING:
		a->entity = km_rng_below(r, c->keys / 1000 > 0 ? c->keys / 1000 : 1);
		a->left = 20 + km_rng_below(r, 181);
		a->pos = km_rng_below(r, 1000);
		break;
	case KM_GEN_TIMESERIES:
		a->entity = km_rng_below(r, c->keys / (365 * 24) > 0 ? c->keys / (365 * 24) : 1);
		a->left = 24 * (1 + km_rng_below(r, 7));
		a->pos = 24 * km_rng_below(r, 365);
		break;
	}
}

/* Key of the actor's current position; 0 when it has finished. */
static int
actor_key(const struct km_gen_conf *c, struct actor *a, struct km_rng *r, char *buf, size_t n)
{
	switch (c->kind) {
	case KM_GEN_SESSIONS:
		if (a->pos == P_END)
			return 0;
		snprintf(buf, n, "u%" PRIu64 "/%s", a->entity, page_names[a->pos]);
		a->pos = page_next((enum page)a->pos, r);
		return 1;
	case KM_GEN_LISTING:
		while (a->left > 0 && a->pos < 1000 && km_rng_below(r, 100) < 15)
			a->pos++; /* skipped */
		if (a->left == 0 || a->pos >= 1000)
			return 0;
		snprintf(buf, n, "bkt%" PRIu64 "/obj/%08" PRIu64, a->entity, a->pos);
		a->pos++;
		a->left--;
		return 1;
	case KM_GEN_TIMESERIES:
		if (a->left == 0 || a->pos >= 365 * 24)
			return 0;
		snprintf(buf, n, "ts%" PRIu64 "/d%04" PRIu64 "/h%02" PRIu64, a->entity, a->pos / 24,
			a->pos % 24);
		a->pos++;
		a->left--;
		return 1;
	}
	return 0;
}

int
km_gen_trace(const struct km_gen_conf *c, FILE *out)
{
	struct actor act[ACTORS_MAX];
	unsigned nb = c->kind == KM_GEN_SESSIONS ? 64 : 8;
	uint64_t session = 0;
	struct km_rng r;
	char key[128];

	if (c == NULL || out == NULL || c->keys == 0 || c->requests == 0)
		return -EINVAL;
	km_rng_seed(&r, c->seed);
	for (unsigned i = 0; i < nb; i++)
		actor_start(c, &act[i], &r, &session);
	if (fprintf(out, "timestamp_us,op,key,value_size,session\n") < 0)
		return -EIO;
	for (uint64_t i = 0; i < c->requests; i++) {
		struct actor *a = &act[km_rng_below(&r, nb)];

		while (!actor_key(c, a, &r, key, sizeof(key)))
			actor_start(c, a, &r, &session);
		if (fprintf(out, "%" PRIu64 ",GET,%s,%u,%" PRIu64 "\n", i, key, c->value_size,
			    a->session & 0xffffffffu) < 0)
			return -EIO;
	}
	return ferror(out) ? -EIO : 0;
}

int
km_gen_kind_parse(const char *s, enum km_gen_kind *out)
{
	static const char *const names[] = {"sessions", "listing", "timeseries"};

	for (unsigned i = 0; i < 3; i++)
		if (s != NULL && strcmp(s, names[i]) == 0) {
			*out = (enum km_gen_kind)i;
			return 0;
		}
	return -EINVAL;
}
