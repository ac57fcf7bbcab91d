/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Unit tests of the shard map. Every structural check compares the directory against an
 * independent reference (a linear scan of shards[] for the prefix that matches a hash),
 * and all randomness comes from fixed seeds.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include <km_proto.h>
#include <km_shardmap_priv.h>

/* splitmix64: tiny, fixed-seed, good enough to spread hashes over every prefix. */
static uint64_t
rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static struct km_shardmap *
make_map(uint32_t nb_shards, uint16_t nb_workers, uint8_t sep, uint8_t route_depth)
{
	struct km_shardmap_params p = {
		.nb_shards = nb_shards,
		.nb_workers = nb_workers,
		.udp_port_base = 9000,
		.route_sep = sep,
		.route_depth = route_depth,
	};
	struct km_shardmap *m = NULL;

	assert_int_equal(km_shardmap_create(&p, &m), 0);
	assert_non_null(m);
	return m;
}

static uint64_t
id_prefix(uint64_t id)
{
	return id ^ ((uint64_t)1 << km_shard_depth(id));
}

/* Reference lookup: the one shard whose prefix equals the hash's top bits. */
static const struct km_shard *
ref_lookup(const struct km_shardmap *m, uint64_t hash)
{
	const struct km_shard *found = NULL;
	uint32_t i;

	for (i = 0; i < m->nb_shards; i++) {
		unsigned int d = km_shard_depth(m->shards[i].id);

		if (d == 0 || hash >> (64 - d) == id_prefix(m->shards[i].id)) {
			assert_null(found); /* exactly one shard per hash */
			found = &m->shards[i];
		}
	}
	assert_non_null(found);
	return found;
}

/* Every invariant the header promises, checked the slow way. */
static void
check_map(const struct km_shardmap *m, uint64_t seed, unsigned int nb_hashes)
{
	unsigned int gmax = 0;
	uint64_t next = 0, slot;
	uint32_t i;

	assert_true(m->nb_shards >= 1);
	for (i = 0; i < m->nb_shards; i++) {
		const struct km_shard *s = &m->shards[i];
		unsigned int d = km_shard_depth(s->id);

		if (d > gmax)
			gmax = d;
		assert_int_equal(s->index, i);
		assert_true(s->owner < m->nb_workers);
		if (!s->moved)
			assert_int_equal(s->owner, km_jump_hash(s->id, m->nb_workers));
		assert_ptr_equal(km_shardmap_find(m, s->id), s);
	}
	assert_int_equal(m->global_depth, gmax);
	/* sorted by first slot and contiguous */
	for (i = 0; i < m->nb_shards; i++) {
		unsigned int d = km_shard_depth(m->shards[i].id);

		assert_int_equal(id_prefix(m->shards[i].id) << (gmax - d), next);
		next += (uint64_t)1 << (gmax - d);
	}
	assert_int_equal(next, (uint64_t)1 << gmax);
	/* every slot points at the shard covering it */
	for (slot = 0; slot < ((uint64_t)1 << gmax); slot++) {
		const struct km_shard *s = &m->shards[m->dir[slot]];
		unsigned int d = km_shard_depth(s->id);

		assert_int_equal(slot >> (gmax - d), id_prefix(s->id));
	}
	for (i = 0; i < nb_hashes; i++) {
		uint64_t h = rng_next(&seed);

		assert_ptr_equal(km_shardmap_lookup(m, h), ref_lookup(m, h));
	}
}

/* Copy of a map's visible state, to show that a change left the old map alone. */
struct snapshot {
	struct km_shardmap hdr;
	struct km_shard *shards;
	uint32_t *dir;
};

static void
snap_take(struct snapshot *sn, const struct km_shardmap *m)
{
	size_t nd = (size_t)1 << m->global_depth;

	sn->hdr = *m;
	sn->shards = malloc(m->nb_shards * sizeof(*sn->shards));
	sn->dir = malloc(nd * sizeof(*sn->dir));
	assert_non_null(sn->shards);
	assert_non_null(sn->dir);
	memcpy(sn->shards, m->shards, m->nb_shards * sizeof(*sn->shards));
	memcpy(sn->dir, m->dir, nd * sizeof(*sn->dir));
}

static void
snap_check(struct snapshot *sn, const struct km_shardmap *m)
{
	assert_memory_equal(&sn->hdr, m, sizeof(*m));
	assert_memory_equal(sn->shards, m->shards, m->nb_shards * sizeof(*sn->shards));
	assert_memory_equal(sn->dir, m->dir, ((size_t)1 << m->global_depth) * sizeof(*sn->dir));
	free(sn->shards);
	free(sn->dir);
}

static size_t
rlen(const struct km_shardmap *m, const char *key)
{
	return km_shardmap_route_len(m, (const uint8_t *)key, strlen(key));
}

static void
test_route_len(void **state)
{
	struct km_shardmap *d1 = make_map(1, 1, '/', 1);
	struct km_shardmap *d2 = make_map(1, 1, '/', 2);
	struct km_shardmap *colon = make_map(1, 1, ':', 1);

	(void)state;
	assert_int_equal(rlen(d1, "user42/cart"), 6);
	assert_int_equal(rlen(d1, "user42/orders/17"), 6);
	assert_int_equal(rlen(d1, "user42"), 6);
	assert_int_equal(rlen(d1, "/x"), 0); /* empty first component */
	assert_int_equal(rlen(d1, "x/"), 1);
	assert_int_equal(rlen(d1, "//"), 0);
	assert_int_equal(rlen(d1, ""), 0);
	assert_int_equal(km_shardmap_route_len(d1, NULL, 0), 0);

	assert_int_equal(rlen(d2, "a/b/c"), 3);
	assert_int_equal(rlen(d2, "a/b"), 3); /* fewer components than depth: whole key */
	assert_int_equal(rlen(d2, "a"), 1);
	assert_int_equal(rlen(d2, "a//c"), 2);
	assert_int_equal(rlen(d2, "/x/y"), 2);
	assert_int_equal(rlen(d2, "//"), 1);
	assert_int_equal(rlen(d2, "user42/orders/17/x"), 13);

	/* only the configured separator counts */
	assert_int_equal(rlen(colon, "a/b:c"), 3);
	assert_int_equal(rlen(colon, "a/b/c"), 5);

	/* a separator byte past the given length is not part of the key */
	assert_int_equal(km_shardmap_route_len(d1, (const uint8_t *)"abc/d", 3), 3);

	km_shardmap_free(d1);
	km_shardmap_free(d2);
	km_shardmap_free(colon);
}

static uint64_t
khash(const struct km_shardmap *m, const char *key)
{
	return km_shardmap_hash(m, (const uint8_t *)key, strlen(key));
}

static void
test_hash(void **state)
{
	struct km_shardmap *m = make_map(1024, 8, '/', 1);
	struct km_shardmap *m2 = make_map(1024, 8, '/', 2);
	static const char *const same[] = {"user42", "user42/cart", "user42/orders/17", "user42/"};
	char key[64];
	uint64_t seed = 7;
	unsigned int i, j;

	(void)state;
	assert_int_equal(khash(m, "user42/cart"), XXH3_64bits("user42", 6));
	assert_int_equal(khash(m, "plain"), XXH3_64bits("plain", 5));
	assert_int_equal(khash(m2, "a/b/c"), XXH3_64bits("a/b", 3));
	assert_int_equal(khash(m, "/x"), XXH3_64bits("", 0));
	assert_int_not_equal(khash(m, "user42/cart"), khash(m, "user43/cart"));

	for (i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		assert_int_equal(khash(m, same[i]), khash(m, same[0]));
		assert_ptr_equal(km_shardmap_lookup(m, khash(m, same[i])),
			km_shardmap_lookup(m, khash(m, same[0])));
	}
	/* many entities, many sub-keys each: one shard per entity */
	for (i = 0; i < 1000; i++) {
		uint64_t ent = rng_next(&seed);
		const struct km_shard *s;

		snprintf(key, sizeof(key), "e%llx", (unsigned long long)ent);
		s = km_shardmap_lookup(m, khash(m, key));
		for (j = 0; j < 5; j++) {
			snprintf(key, sizeof(key), "e%llx/%u/%llx", (unsigned long long)ent, j,
				(unsigned long long)rng_next(&seed));
			assert_ptr_equal(km_shardmap_lookup(m, khash(m, key)), s);
		}
	}
	km_shardmap_free(m);
	km_shardmap_free(m2);
}

/* Replace m by the result of `steps` random changes: every `every`-th a move to a random
 * worker, the others splits of a random shard. */
static struct km_shardmap *
grow_map(struct km_shardmap *m, uint64_t *seed, unsigned int steps, unsigned int every)
{
	unsigned int i;

	for (i = 0; i < steps; i++) {
		uint64_t r = rng_next(seed);
		uint64_t id = m->shards[r % m->nb_shards].id;
		struct km_shardmap *n = NULL;

		if (i % every == every - 1)
			assert_int_equal(
				km_shardmap_move(m, id, (uint16_t)((r >> 32) % m->nb_workers), &n),
				0);
		else
			assert_int_equal(km_shardmap_split(m, id, &n), 0);
		km_shardmap_free(m);
		m = n;
	}
	return m;
}

/* A random key of 0..40 bytes over a small alphabet that includes both separators. */
static size_t
rand_key(uint64_t *seed, uint8_t *key)
{
	static const char alpha[] = "ab/:x/0";
	size_t len = rng_next(seed) % 41, i;

	for (i = 0; i < len; i++)
		key[i] = (uint8_t)alpha[rng_next(seed) % (sizeof(alpha) - 1)];
	return len;
}

/* The routing function against the pair it replaces, hash + lookup, over random maps
 * (splits, moves, both separators, depths 1..3) and random keys. */
static void
test_route(void **state)
{
	static const uint8_t seps[] = {'/', ':'};
	uint64_t seed = 0x20a7e;
	struct km_shardmap_route rt;
	uint8_t key[64];
	unsigned int k, i;

	(void)state;
	for (k = 0; k < 6; k++) {
		struct km_shardmap *m =
			grow_map(make_map(4, 5, seps[k % 2], (uint8_t)(1 + k % 3)), &seed, 30, 4);

		for (i = 0; i < 5000; i++) {
			size_t len = rand_key(&seed, key);
			uint64_t h = km_shardmap_hash(m, key, len);
			const struct km_shard *sh = km_shardmap_lookup(m, h);

			assert_int_equal(km_shardmap_route(m, key, len, &rt), 0);
			assert_int_equal(rt.hash, h);
			assert_ptr_equal(rt.shard, sh);
			assert_int_equal(rt.owner, sh->owner);
			assert_null(rt.fallback);
			assert_int_equal(rt.route_len, km_shardmap_route_len(m, key, len));
			assert_int_equal(rt.hash, XXH3_64bits(key, rt.route_len));
			assert_int_equal(rt.part_hash, rt.hash);
		}
		km_shardmap_free(m);
	}

	{
		struct km_shardmap *m = make_map(16, 3, '/', 1);

		/* the empty key routes by the empty routing part */
		assert_int_equal(km_shardmap_route(m, NULL, 0, &rt), 0);
		assert_int_equal(rt.hash, XXH3_64bits("", 0));
		assert_int_equal(rt.route_len, 0);
		assert_int_equal(km_shardmap_route(m, (const uint8_t *)"u1/x", 4, &rt), 0);
		assert_int_equal(rt.route_len, 2);
		assert_int_equal(rt.hash, XXH3_64bits("u1", 2));
		assert_int_equal(km_shardmap_route(NULL, key, 1, &rt), -EINVAL);
		assert_int_equal(km_shardmap_route(m, key, 1, NULL), -EINVAL);
		assert_int_equal(km_shardmap_route(m, NULL, 1, &rt), -EINVAL);
		km_shardmap_free(m);
	}
}

static void
test_create(void **state)
{
	static const uint32_t sizes[] = {1, 2, 16, 1024};
	unsigned int k;

	(void)state;
	for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		uint32_t n = sizes[k];
		struct km_shardmap *m = make_map(n, 5, '/', 1);
		unsigned int g = km_shard_depth(n);
		uint64_t seed = 100 + k;
		uint32_t i;

		assert_int_equal(m->epoch, 1);
		assert_int_equal(m->nb_shards, n);
		assert_int_equal(m->global_depth, g);
		assert_int_equal(m->nb_workers, 5);
		assert_int_equal(m->udp_port_base, 9000);
		assert_int_equal(m->route_sep, '/');
		assert_int_equal(m->route_depth, 1);
		for (i = 0; i < n; i++) {
			/* slot i belongs to the shard with prefix i */
			assert_int_equal(m->dir[i], i);
			assert_int_equal(m->shards[i].id, (uint64_t)n | i);
			assert_int_equal(m->shards[i].index, i);
			assert_int_equal(m->shards[i].moved, 0);
			assert_int_equal(m->shards[i].owner, km_jump_hash(n | i, 5));
		}
		for (i = 0; i < 10000; i++) {
			uint64_t h = rng_next(&seed);
			const struct km_shard *s = km_shardmap_lookup(m, h);

			if (g > 0)
				assert_int_equal(id_prefix(s->id), h >> (64 - g));
			else
				assert_int_equal(s->id, 1);
		}
		check_map(m, seed, 1000);
		km_shardmap_free(m);
	}
}

static void
test_create_invalid(void **state)
{
	struct km_shardmap_params ok = {
		.nb_shards = 4, .nb_workers = 2, .route_sep = '/', .route_depth = 1};
	struct km_shardmap_params p;
	struct km_shardmap *m = NULL;

	(void)state;
	p = ok;
	p.nb_shards = 0;
	assert_int_equal(km_shardmap_create(&p, &m), -EINVAL);
	p.nb_shards = 3;
	assert_int_equal(km_shardmap_create(&p, &m), -EINVAL);
	p.nb_shards = 1u << (KM_SHARD_DEPTH_MAX + 1);
	assert_int_equal(km_shardmap_create(&p, &m), -EINVAL);
	p = ok;
	p.nb_workers = 0;
	assert_int_equal(km_shardmap_create(&p, &m), -EINVAL);
	p.nb_workers = KM_WORKERS_MAX + 1;
	assert_int_equal(km_shardmap_create(&p, &m), -EINVAL);
	p = ok;
	p.route_depth = 0;
	assert_int_equal(km_shardmap_create(&p, &m), -EINVAL);
	p = ok;
	p.route_sep = 0;
	assert_int_equal(km_shardmap_create(&p, &m), -EINVAL);
	assert_int_equal(km_shardmap_create(NULL, &m), -EINVAL);
	assert_int_equal(km_shardmap_create(&ok, NULL), -EINVAL);
	assert_null(m);

	p = ok;
	p.nb_workers = KM_WORKERS_MAX;
	assert_int_equal(km_shardmap_create(&p, &m), 0);
	km_shardmap_free(m);
	km_shardmap_free(NULL);
}

#define NB_KEYS 100000

static void
test_split(void **state)
{
	struct km_shardmap *m = make_map(16, 4, '/', 1), *n = NULL, *n2 = NULL;
	uint64_t *hashes = malloc(NB_KEYS * sizeof(*hashes));
	uint64_t *before = malloc(NB_KEYS * sizeof(*before));
	const uint64_t victim = 16 | 5;
	struct snapshot sn;
	unsigned int moved = 0, i;
	uint64_t seed = 42;
	char key[48];

	(void)state;
	assert_non_null(hashes);
	assert_non_null(before);
	for (i = 0; i < NB_KEYS; i++) {
		snprintf(key, sizeof(key), "k%llx/v", (unsigned long long)rng_next(&seed));
		hashes[i] = khash(m, key);
		before[i] = km_shardmap_lookup(m, hashes[i])->id;
	}

	snap_take(&sn, m);
	assert_int_equal(km_shardmap_split(m, victim, &n), 0);
	snap_check(&sn, m);
	assert_int_equal(n->epoch, m->epoch + 1);
	assert_int_equal(n->nb_shards, 17);
	assert_int_equal(n->global_depth, 5);
	assert_null(km_shardmap_find(n, victim));
	assert_non_null(km_shardmap_find(n, 2 * victim));
	assert_non_null(km_shardmap_find(n, 2 * victim + 1));
	check_map(n, 1, 10000);

	for (i = 0; i < NB_KEYS; i++) {
		const struct km_shard *s = km_shardmap_lookup(n, hashes[i]);

		assert_ptr_equal(s, ref_lookup(n, hashes[i]));
		if (before[i] == victim) {
			/* the child is chosen by the next hash bit below the parent's */
			assert_int_equal(s->id, 2 * victim + ((hashes[i] >> (64 - 5)) & 1));
			moved++;
		} else {
			assert_int_equal(s->id, before[i]);
		}
	}
	/* about 1/16 of the keys were in the split shard */
	assert_true(moved > NB_KEYS / 32 && moved < NB_KEYS / 8);

	/* splitting a shard shallower than the directory does not grow it */
	assert_int_equal(km_shardmap_split(n, 16 | 9, &n2), 0);
	assert_int_equal(n2->global_depth, 5);
	assert_int_equal(n2->epoch, 3);
	check_map(n2, 2, 10000);

	/* errors */
	assert_int_equal(km_shardmap_split(n, victim, &n2), -ENOENT);
	assert_int_equal(km_shardmap_split(n, 0, &n2), -ENOENT);
	assert_int_equal(km_shardmap_split(n, 1, &n2), -ENOENT);
	assert_int_equal(km_shardmap_split(n, 4 * victim, &n2), -ENOENT);

	free(hashes);
	free(before);
	km_shardmap_free(m);
	km_shardmap_free(n);
	km_shardmap_free(n2);
}

static void
test_split_depth_limit(void **state)
{
	/* A comb reaching the maximum depth: (1 << d) | 1 for every d, plus the deepest
	 * all-zero-prefix shard. */
	uint64_t ids[KM_SHARD_DEPTH_MAX + 1];
	uint16_t owners[KM_SHARD_DEPTH_MAX + 1];
	struct km_shardmap *m = NULL, *n = NULL;
	unsigned int d;

	(void)state;
	for (d = 1; d <= KM_SHARD_DEPTH_MAX; d++) {
		ids[d - 1] = ((uint64_t)1 << d) | 1;
		owners[d - 1] = KM_OWNER_JUMP;
	}
	ids[KM_SHARD_DEPTH_MAX] = (uint64_t)1 << KM_SHARD_DEPTH_MAX;
	owners[KM_SHARD_DEPTH_MAX] = KM_OWNER_JUMP;
	assert_int_equal(
		km_shardmap_from_list(1, 2, 0, '/', 1, ids, owners, KM_SHARD_DEPTH_MAX + 1, &m), 0);
	assert_int_equal(m->global_depth, KM_SHARD_DEPTH_MAX);
	assert_int_equal(km_shardmap_split(m, ids[KM_SHARD_DEPTH_MAX], &n), -ERANGE);
	assert_int_equal(km_shardmap_split(m, ids[KM_SHARD_DEPTH_MAX - 1], &n), -ERANGE);
	/* one level up still splits */
	assert_int_equal(km_shardmap_split(m, ids[KM_SHARD_DEPTH_MAX - 2], &n), 0);
	assert_int_equal(n->global_depth, KM_SHARD_DEPTH_MAX);
	km_shardmap_free(n);
	/* merging the deepest pair shrinks the directory by one level */
	assert_int_equal(km_shardmap_merge(m, ids[KM_SHARD_DEPTH_MAX], &n), 0);
	assert_int_equal(n->global_depth, KM_SHARD_DEPTH_MAX - 1);
	check_map(n, 3, 1000);
	km_shardmap_free(n);
	km_shardmap_free(m);
}

static void
assert_same_shards(const struct km_shardmap *a, const struct km_shardmap *b)
{
	uint32_t i;

	assert_int_equal(a->nb_shards, b->nb_shards);
	assert_int_equal(a->global_depth, b->global_depth);
	for (i = 0; i < a->nb_shards; i++) {
		assert_int_equal(a->shards[i].id, b->shards[i].id);
		assert_int_equal(a->shards[i].owner, b->shards[i].owner);
		assert_int_equal(a->shards[i].moved, b->shards[i].moved);
		assert_int_equal(a->shards[i].index, b->shards[i].index);
	}
	assert_memory_equal(a->dir, b->dir, ((size_t)1 << a->global_depth) * sizeof(a->dir[0]));
}

static void
test_merge(void **state)
{
	struct km_shardmap *m = make_map(8, 3, '/', 1), *s1 = NULL, *s2 = NULL, *mg = NULL;
	struct km_shardmap *one = make_map(1, 3, '/', 1), *x = NULL;
	struct snapshot sn;

	(void)state;
	assert_int_equal(km_shardmap_split(m, 8 | 3, &s1), 0);
	assert_int_equal(s1->global_depth, 4);
	snap_take(&sn, s1);
	/* either child names the pair */
	assert_int_equal(km_shardmap_merge(s1, 2 * (8 | 3) + 1, &mg), 0);
	snap_check(&sn, s1);
	assert_int_equal(mg->epoch, 3);
	assert_same_shards(mg, m); /* directory shrinks back to depth 3 */
	check_map(mg, 4, 1000);
	km_shardmap_free(mg);
	assert_int_equal(km_shardmap_merge(s1, 2 * (8 | 3), &mg), 0);
	assert_same_shards(mg, m);
	km_shardmap_free(mg);

	/* merging two original shards into a depth-2 one */
	assert_int_equal(km_shardmap_merge(m, 8 | 6, &mg), 0);
	assert_int_equal(mg->nb_shards, 7);
	assert_non_null(km_shardmap_find(mg, 4 | 3));
	assert_null(km_shardmap_find(mg, 8 | 6));
	assert_null(km_shardmap_find(mg, 8 | 7));
	check_map(mg, 5, 1000);
	km_shardmap_free(mg);

	/* errors */
	assert_int_equal(km_shardmap_merge(one, 1, &x), -EINVAL); /* depth 0 */
	assert_int_equal(km_shardmap_merge(m, 1, &x), -EINVAL);
	assert_int_equal(km_shardmap_merge(m, 0, &x), -ENOENT);
	assert_int_equal(km_shardmap_merge(m, 4 | 1, &x), -ENOENT);  /* parent, not a shard */
	assert_int_equal(km_shardmap_merge(m, 16, &x), -ENOENT);     /* deeper than dir */
	assert_int_equal(km_shardmap_merge(s1, 8 | 3, &x), -ENOENT); /* was split */
	/* buddy 8|3 is split further: 8|2 cannot merge */
	assert_int_equal(km_shardmap_merge(s1, 8 | 2, &x), -EINVAL);
	assert_null(x);

	/* merge of a map down to one shard */
	km_shardmap_free(one);
	one = make_map(2, 3, '/', 1);
	assert_int_equal(km_shardmap_merge(one, 2, &x), 0);
	assert_int_equal(x->nb_shards, 1);
	assert_int_equal(x->global_depth, 0);
	assert_int_equal(x->shards[0].id, 1);
	assert_int_equal(km_shardmap_lookup(x, UINT64_MAX)->id, 1);

	/* s2: split both halves of a shard's children to see that nothing else moves */
	assert_int_equal(km_shardmap_split(s1, 2 * (8 | 3), &s2), 0);
	check_map(s2, 6, 1000);

	km_shardmap_free(m);
	km_shardmap_free(s1);
	km_shardmap_free(s2);
	km_shardmap_free(one);
	km_shardmap_free(x);
}

static void
test_random_split_merge(void **state)
{
	struct km_shardmap *m = make_map(4, 7, '/', 1);
	uint64_t seed = 0x5eed;
	unsigned int step, splits = 0, merges = 0, refused = 0;

	(void)state;
	for (step = 0; step < 1000; step++) {
		uint64_t r = rng_next(&seed);
		const struct km_shard *s = &m->shards[r % m->nb_shards];
		unsigned int d = km_shard_depth(s->id);
		struct km_shardmap *n = NULL;
		uint64_t id = s->id;
		struct snapshot sn;
		int rc;

		snap_take(&sn, m);
		if (((r >> 32) & 1) && d < 12) {
			assert_int_equal(km_shardmap_split(m, id, &n), 0);
			assert_int_equal(n->nb_shards, m->nb_shards + 1);
			splits++;
		} else if ((r >> 33) % 16 == 0) {
			/* occasionally give a shard an explicit owner */
			assert_int_equal(km_shardmap_move(m, id, (r >> 40) % 7, &n), 0);
		} else {
			rc = km_shardmap_merge(m, id, &n);
			if (d == 0 || km_shardmap_find(m, id ^ 1) == NULL) {
				assert_int_equal(rc, -EINVAL);
				refused++;
				snap_check(&sn, m);
				continue;
			}
			assert_int_equal(rc, 0);
			assert_int_equal(n->nb_shards, m->nb_shards - 1);
			merges++;
		}
		snap_check(&sn, m);
		assert_int_equal(n->epoch, m->epoch + 1);
		check_map(n, r, 200);
		km_shardmap_free(m);
		m = n;
	}
	/* the walk really exercised both directions */
	assert_true(splits > 100);
	assert_true(merges > 100);
	assert_true(refused > 10);
	km_shardmap_free(m);
}

static void
test_jump_hash(void **state)
{
	uint64_t *keys = malloc(NB_KEYS * sizeof(*keys));
	uint64_t seed = 99;
	uint32_t n;
	unsigned int i;

	(void)state;
	assert_non_null(keys);
	/* published values of the reference implementation (as used by ClickHouse) */
	assert_int_equal(km_jump_hash(1, 1), 0);
	assert_int_equal(km_jump_hash(42, 57), 43);
	assert_int_equal(km_jump_hash(256, 1024), 520);
	assert_int_equal(km_jump_hash(3735883980ULL, 1), 0);
	assert_int_equal(km_jump_hash(3735883980ULL, 666), 361);
	assert_int_equal(km_jump_hash(16045690984833335023ULL, 255), 237);

	for (i = 0; i < NB_KEYS; i++)
		keys[i] = rng_next(&seed);
	for (n = 1; n <= 1000; n += (n < 20 ? 1 : 97)) {
		for (i = 0; i < 1000; i++)
			assert_true(km_jump_hash(keys[i], n) < n);
	}
	for (n = 1; n <= 16; n++) {
		double expected = (double)NB_KEYS / (n + 1);
		unsigned int changed = 0;

		for (i = 0; i < NB_KEYS; i++) {
			uint32_t a = km_jump_hash(keys[i], n), b = km_jump_hash(keys[i], n + 1);

			if (a != b) {
				assert_int_equal(b, n); /* only ever to the new bucket */
				changed++;
			}
		}
		assert_true(changed > 0.5 * expected && changed < 1.5 * expected);
	}
	free(keys);
}

static void
test_move(void **state)
{
	struct km_shardmap *m = make_map(4, 4, '/', 1), *mv = NULL, *sp = NULL, *mg = NULL;
	struct km_shardmap *x = NULL;
	const uint64_t id = 4 | 2;
	uint16_t target = (uint16_t)((km_jump_hash(id, 4) + 1) % 4);
	struct snapshot sn;

	(void)state;
	snap_take(&sn, m);
	assert_int_equal(km_shardmap_move(m, id, target, &mv), 0);
	snap_check(&sn, m);
	assert_int_equal(mv->epoch, 2);
	assert_int_equal(km_shardmap_find(mv, id)->owner, target);
	assert_int_equal(km_shardmap_find(mv, id)->moved, 1);
	assert_int_equal(km_shardmap_find(m, id)->moved, 0);
	/* others keep their jump-hash owner */
	assert_int_equal(km_shardmap_find(mv, 4 | 1)->moved, 0);
	check_map(mv, 7, 1000);

	/* children inherit the explicit owner */
	assert_int_equal(km_shardmap_split(mv, id, &sp), 0);
	assert_int_equal(km_shardmap_find(sp, 2 * id)->owner, target);
	assert_int_equal(km_shardmap_find(sp, 2 * id)->moved, 1);
	assert_int_equal(km_shardmap_find(sp, 2 * id + 1)->owner, target);
	assert_int_equal(km_shardmap_find(sp, 2 * id + 1)->moved, 1);
	check_map(sp, 8, 1000);

	/* and give it back to the parent when merged */
	assert_int_equal(km_shardmap_merge(sp, 2 * id + 1, &mg), 0);
	assert_int_equal(km_shardmap_find(mg, id)->owner, target);
	assert_int_equal(km_shardmap_find(mg, id)->moved, 1);
	km_shardmap_free(mg);
	km_shardmap_free(sp);

	/* only the upper child moved: the parent takes the lower child's owner */
	assert_int_equal(km_shardmap_split(m, id, &sp), 0);
	assert_int_equal(km_shardmap_move(sp, 2 * id + 1, 3, &x), 0);
	assert_int_equal(km_shardmap_merge(x, 2 * id, &mg), 0);
	assert_int_equal(km_shardmap_find(mg, id)->owner, km_jump_hash(2 * id, 4));
	assert_int_equal(km_shardmap_find(mg, id)->moved, 1);
	km_shardmap_free(mg);
	km_shardmap_free(x);
	x = NULL;
	/* neither moved: jump hash of the parent */
	assert_int_equal(km_shardmap_merge(sp, 2 * id, &mg), 0);
	assert_int_equal(km_shardmap_find(mg, id)->owner, km_jump_hash(id, 4));
	assert_int_equal(km_shardmap_find(mg, id)->moved, 0);
	km_shardmap_free(mg);
	km_shardmap_free(sp);

	/* errors */
	assert_int_equal(km_shardmap_move(m, id, 4, &x), -EINVAL);
	assert_int_equal(km_shardmap_move(m, id, KM_OWNER_JUMP, &x), -EINVAL);
	assert_int_equal(km_shardmap_move(m, 2, 0, &x), -ENOENT);
	assert_int_equal(km_shardmap_move(m, 0, 0, &x), -ENOENT);
	assert_null(x);

	km_shardmap_free(mv);
	km_shardmap_free(m);
}

static void
test_find(void **state)
{
	struct km_shardmap *m = make_map(4, 2, '/', 1), *n = NULL;

	(void)state;
	assert_int_equal(km_shardmap_split(m, 4 | 1, &n), 0);
	/* shards: 4, 10, 11, 6, 7 at global depth 3 */
	assert_int_equal(km_shardmap_find(n, 4)->index, 0);
	assert_int_equal(km_shardmap_find(n, 10)->index, 1);
	assert_int_equal(km_shardmap_find(n, 11)->index, 2);
	assert_int_equal(km_shardmap_find(n, 6)->index, 3);
	assert_int_equal(km_shardmap_find(n, 7)->index, 4);
	assert_null(km_shardmap_find(n, 0));
	assert_null(km_shardmap_find(n, 1));
	assert_null(km_shardmap_find(n, 2)); /* ancestors */
	assert_null(km_shardmap_find(n, 5));
	assert_null(km_shardmap_find(n, 8)); /* descendant of 4, same depth as dir */
	assert_null(km_shardmap_find(n, 9));
	assert_null(km_shardmap_find(n, 12));
	assert_null(km_shardmap_find(n, 20)); /* deeper than the directory */
	assert_null(km_shardmap_find(n, UINT64_MAX));
	assert_null(km_shardmap_find(n, (uint64_t)1 << 63));
	km_shardmap_free(m);
	km_shardmap_free(n);
}

static int
from_list(const uint64_t *ids, const uint16_t *owners, uint32_t nb, struct km_shardmap **out)
{
	return km_shardmap_from_list(9, 4, 7000, '/', 1, ids, owners, nb, out);
}

static void
test_from_list(void **state)
{
	/* unsorted on purpose: from_list sorts by slot */
	static const uint64_t ids[] = {7, 2, 13, 12};
	static const uint16_t owners[] = {KM_OWNER_JUMP, 3, KM_OWNER_JUMP, 0};
	static const uint64_t overlap[] = {2, 3, 4};
	static const uint64_t gap[] = {2, 6};
	static const uint64_t dup[] = {2, 2, 3};
	static const uint64_t nested[] = {1, 2, 3};
	/* overlap and gap of the same size: the total adds up, the tiling does not */
	static const uint64_t dup_gap[] = {4, 4, 3};
	static const uint64_t dup_gap2[] = {2, 12, 12, 7};
	static const uint64_t too_deep[] = {(uint64_t)1 << (KM_SHARD_DEPTH_MAX + 1)};
	static const uint64_t zero[] = {0};
	static const uint64_t one[] = {1};
	static const uint16_t jump4[] = {
		KM_OWNER_JUMP, KM_OWNER_JUMP, KM_OWNER_JUMP, KM_OWNER_JUMP};
	static const uint16_t bad_owner[] = {KM_OWNER_JUMP, 4, KM_OWNER_JUMP, KM_OWNER_JUMP};
	struct km_shardmap *m = NULL;

	(void)state;
	assert_int_equal(from_list(ids, owners, 4, &m), 0);
	assert_int_equal(m->epoch, 9);
	assert_int_equal(m->nb_workers, 4);
	assert_int_equal(m->udp_port_base, 7000);
	assert_int_equal(m->global_depth, 3);
	assert_int_equal(m->shards[0].id, 2);
	assert_int_equal(m->shards[0].owner, 3);
	assert_int_equal(m->shards[0].moved, 1);
	assert_int_equal(m->shards[1].id, 12);
	assert_int_equal(m->shards[1].owner, 0);
	assert_int_equal(m->shards[1].moved, 1);
	assert_int_equal(m->shards[2].id, 13);
	assert_int_equal(m->shards[2].owner, km_jump_hash(13, 4));
	assert_int_equal(m->shards[2].moved, 0);
	assert_int_equal(m->shards[3].id, 7);
	assert_int_equal(m->shards[3].moved, 0);
	check_map(m, 10, 1000);
	km_shardmap_free(m);
	m = NULL;

	assert_int_equal(from_list(one, jump4, 1, &m), 0);
	assert_int_equal(m->global_depth, 0);
	km_shardmap_free(m);
	m = NULL;

	assert_int_equal(from_list(overlap, jump4, 3, &m), -EINVAL);
	assert_int_equal(from_list(gap, jump4, 2, &m), -EINVAL);
	assert_int_equal(from_list(dup, jump4, 3, &m), -EINVAL);
	assert_int_equal(from_list(nested, jump4, 3, &m), -EINVAL);
	assert_int_equal(from_list(dup_gap, jump4, 3, &m), -EINVAL);
	assert_int_equal(from_list(dup_gap2, jump4, 4, &m), -EINVAL);
	assert_int_equal(from_list(ids, jump4, 3, &m), -EINVAL); /* one missing */
	assert_int_equal(from_list(ids, bad_owner, 4, &m), -EINVAL);
	assert_int_equal(from_list(too_deep, jump4, 1, &m), -EINVAL);
	assert_int_equal(from_list(zero, jump4, 1, &m), -EINVAL);
	assert_int_equal(from_list(ids, owners, 0, &m), -EINVAL);
	assert_int_equal(km_shardmap_from_list(1, 0, 0, '/', 1, ids, owners, 4, &m), -EINVAL);
	assert_int_equal(km_shardmap_from_list(1, 4, 0, '/', 0, ids, owners, 4, &m), -EINVAL);
	assert_int_equal(km_shardmap_from_list(1, 4, 0, 0, 1, ids, owners, 4, &m), -EINVAL);
	assert_int_equal(km_shardmap_from_list(1, 4, 0, '/', 1, NULL, owners, 4, &m), -EINVAL);
	assert_null(m);
}

/* A map with uneven depths and a few explicit owners. */
static struct km_shardmap *
make_busy_map(uint64_t seed)
{
	return grow_map(make_map(8, 6, ':', 2), &seed, 40, 5);
}

static void
test_encode_decode(void **state)
{
	struct km_shardmap *m = make_busy_map(11), *r = NULL;
	uint64_t *ids = malloc(m->nb_shards * sizeof(*ids));
	uint16_t *owners = malloc(m->nb_shards * sizeof(*owners));
	struct km_map_chunk c;
	uint8_t buf[64];
	uint32_t first = 0, i, chunks = 0;
	size_t len;

	(void)state;
	assert_non_null(ids);
	assert_non_null(owners);
	assert_int_equal(m->nb_shards, 8 + 32);
	while ((len = km_shardmap_encode(m, first, buf, sizeof(buf))) > 0) {
		assert_true(len <= sizeof(buf));
		assert_int_equal(km_shardmap_decode_chunk(buf, len, &c), 0);
		assert_int_equal(c.epoch, m->epoch);
		assert_int_equal(c.nb_workers, 6);
		assert_int_equal(c.udp_port_base, 9000);
		assert_int_equal(c.route_sep, ':');
		assert_int_equal(c.route_depth, 2);
		assert_int_equal(c.nb_shards, m->nb_shards);
		assert_int_equal(c.first, first);
		/* (64 - 22) / 8 = 5 entries per full chunk */
		assert_true(c.count == 5 || first + c.count == m->nb_shards);
		assert_int_equal(len, KM_MAP_HDR_LEN + c.count * KM_MAP_ENTRY_LEN);
		for (i = 0; i < c.count; i++) {
			const uint8_t *e = c.entries + i * KM_MAP_ENTRY_LEN;
			uint16_t flags = km_get16(e + 6);

			ids[first + i] = km_get32(e);
			assert_int_equal(km_get16(e + 4), m->shards[first + i].owner);
			owners[first + i] = (flags & 1) ? km_get16(e + 4) : KM_OWNER_JUMP;
		}
		first += c.count;
		chunks++;
	}
	assert_int_equal(first, m->nb_shards);
	assert_int_equal(chunks, 8);

	assert_int_equal(km_shardmap_from_list(c.epoch, c.nb_workers, c.udp_port_base, c.route_sep,
				 c.route_depth, ids, owners, c.nb_shards, &r),
		0);
	assert_int_equal(r->epoch, m->epoch);
	assert_int_equal(r->nb_workers, m->nb_workers);
	assert_int_equal(r->udp_port_base, m->udp_port_base);
	assert_int_equal(r->route_sep, m->route_sep);
	assert_int_equal(r->route_depth, m->route_depth);
	assert_same_shards(r, m);

	/* explicit byte layout of the header */
	len = km_shardmap_encode(m, 3, buf, KM_MAP_HDR_LEN + KM_MAP_ENTRY_LEN);
	assert_int_equal(len, KM_MAP_HDR_LEN + KM_MAP_ENTRY_LEN);
	assert_int_equal(km_get32(buf + 0), m->epoch);
	assert_int_equal(km_get16(buf + 4), 6);
	assert_int_equal(km_get16(buf + 6), 9000);
	assert_int_equal(buf[8], ':');
	assert_int_equal(buf[9], 2);
	assert_int_equal(buf[10], KM_MAP_VERSION_MAJOR << 4 | KM_MAP_VERSION_MINOR);
	assert_int_equal(buf[11], 0);
	assert_int_equal(km_get32(buf + 12), m->nb_shards);
	assert_int_equal(km_get32(buf + 16), 3);
	assert_int_equal(km_get16(buf + 20), 1);
	assert_int_equal(km_get32(buf + 22), m->shards[3].id);
	assert_int_equal(km_get16(buf + 26), m->shards[3].owner);
	assert_int_equal(km_get16(buf + 28), m->shards[3].moved);

	/* nothing to write */
	assert_int_equal(km_shardmap_encode(m, m->nb_shards, buf, sizeof(buf)), 0);
	assert_int_equal(km_shardmap_encode(m, UINT32_MAX, buf, sizeof(buf)), 0);
	assert_int_equal(km_shardmap_encode(m, 0, buf, KM_MAP_HDR_LEN + KM_MAP_ENTRY_LEN - 1), 0);

	free(ids);
	free(owners);
	km_shardmap_free(m);
	km_shardmap_free(r);
}

static void
test_decode_invalid(void **state)
{
	struct km_shardmap *m = make_map(16, 2, '/', 1);
	struct km_map_chunk c;
	uint8_t buf[KM_MAP_HDR_LEN + 4 * KM_MAP_ENTRY_LEN];
	uint8_t bad[sizeof(buf)];
	size_t len;

	(void)state;
	len = km_shardmap_encode(m, 10, buf, sizeof(buf));
	assert_int_equal(len, sizeof(buf));
	assert_int_equal(km_shardmap_decode_chunk(buf, len, &c), 0);
	assert_int_equal(c.count, 4);
	/* trailing bytes are tolerated */
	memcpy(bad, buf, len);
	km_put16(bad + 20, 3);
	assert_int_equal(km_shardmap_decode_chunk(bad, len, &c), 0);
	assert_int_equal(c.count, 3);

	/* truncated: header or entries */
	assert_int_equal(km_shardmap_decode_chunk(buf, 0, &c), -EINVAL);
	assert_int_equal(km_shardmap_decode_chunk(buf, KM_MAP_HDR_LEN - 1, &c), -EINVAL);
	assert_int_equal(km_shardmap_decode_chunk(buf, len - 1, &c), -EINVAL);
	assert_int_equal(km_shardmap_decode_chunk(buf, KM_MAP_HDR_LEN, &c), -EINVAL);

	/* count beyond the length */
	memcpy(bad, buf, len);
	km_put16(bad + 20, 5);
	assert_int_equal(km_shardmap_decode_chunk(bad, len, &c), -EINVAL);
	km_put16(bad + 20, UINT16_MAX);
	assert_int_equal(km_shardmap_decode_chunk(bad, len, &c), -EINVAL);

	/* entries beyond the map */
	memcpy(bad, buf, len);
	km_put32(bad + 16, 13);
	assert_int_equal(km_shardmap_decode_chunk(bad, len, &c), -EINVAL);
	km_put32(bad + 16, UINT32_MAX - 1); /* first + count wraps in 32 bits */
	assert_int_equal(km_shardmap_decode_chunk(bad, len, &c), -EINVAL);
	memcpy(bad, buf, len);
	km_put32(bad + 12, 0);
	assert_int_equal(km_shardmap_decode_chunk(bad, len, &c), -EINVAL);

	/* map parameters from_list would refuse */
	memcpy(bad, buf, len);
	km_put16(bad + 4, 0);
	assert_int_equal(km_shardmap_decode_chunk(bad, len, &c), -EINVAL);
	memcpy(bad, buf, len);
	bad[9] = 0;
	assert_int_equal(km_shardmap_decode_chunk(bad, len, &c), -EINVAL);

	/* versions: an unknown major is refused before anything else is read */
	memcpy(bad, buf, len);
	bad[10] = (KM_MAP_CLUSTER_MAJOR + 1) << 4;
	assert_int_equal(km_shardmap_decode_chunk(bad, len, &c), -EPROTO);
	bad[10] = 0xf0;
	km_put16(bad + 20, UINT16_MAX); /* would be -EINVAL in a known version */
	assert_int_equal(km_shardmap_decode_chunk(bad, len, &c), -EPROTO);
	assert_int_equal(km_shardmap_decode_chunk(bad, KM_MAP_HDR_LEN, &c), -EPROTO);

	km_shardmap_free(m);
}

/* Newer minors, the pre-version encoding (0) and reserved flag bits are all accepted. */
static void
test_decode_versions(void **state)
{
	struct km_shardmap *m = make_map(16, 2, '/', 1);
	uint8_t buf[KM_MAP_HDR_LEN + 2 * KM_MAP_ENTRY_LEN + 5];
	struct km_map_entry e;
	struct km_map_chunk c;
	size_t len;

	(void)state;
	len = km_shardmap_encode(m, 0, buf, KM_MAP_HDR_LEN + 2 * KM_MAP_ENTRY_LEN);
	assert_int_equal(len, KM_MAP_HDR_LEN + 2 * KM_MAP_ENTRY_LEN);
	assert_int_equal(km_shardmap_decode_chunk(buf, len, &c), 0);
	assert_int_equal(c.version_major, KM_MAP_VERSION_MAJOR);
	assert_int_equal(c.version_minor, KM_MAP_VERSION_MINOR);
	assert_int_equal(c.flags, 0);

	buf[10] = 0; /* before versions: the same layout */
	assert_int_equal(km_shardmap_decode_chunk(buf, len, &c), 0);
	assert_int_equal(c.version_major, 1);
	assert_int_equal(c.version_minor, 0);

	/* a later minor: header flags not defined yet (bit 0 is the override list since 1.1),
	 * reserved entry flags, bytes after the entries */
	buf[10] = KM_MAP_VERSION_MAJOR << 4 | 0x0f;
	buf[11] = 0xfe;
	km_put16(buf + KM_MAP_HDR_LEN + 6, 0xfffe);
	memset(buf + len, 0xee, 5);
	assert_int_equal(km_shardmap_decode_chunk(buf, len + 5, &c), 0);
	assert_int_equal(c.version_minor, 0x0f);
	assert_int_equal(c.flags, 0xfe);
	assert_int_equal(c.nb_overrides, 0);
	assert_int_equal(c.count, 2);
	km_shardmap_chunk_entry(&c, 0, &e);
	assert_int_equal(e.id, m->shards[0].id);
	assert_int_equal(e.owner, m->shards[0].owner);
	assert_int_equal(e.flags & KM_MAP_ENTRY_F_MOVED, 0);
	km_shardmap_free(m);
}

/* A cluster of three nodes (2, 1 and 2 workers) and 8 shards of depth 3, global owners
 * 0..4 round-robin. */
static const struct km_map_node cl_nodes[3] = {
	{.ip = 0xc6336410, .port = 7070, .workers = 2},
	{.ip = 0xc6336411, .port = 7070, .workers = 1},
	{.ip = 0xc6336412, .port = 8000, .workers = 2},
};
static const uint64_t cl_ids[8] = {8, 9, 10, 11, 12, 13, 14, 15};
static const uint16_t cl_owners[8] = {0, 1, 2, 3, 4, 0, 1, 2};

/* Cluster maps: a node's view (its shards local, the others remote), a client's view
 * (global owners), the node table, and no derived map. */
static void
test_cluster_map(void **state)
{
	struct km_shardmap *m, *c, *n;
	uint64_t seed = 5;
	uint16_t w;
	uint32_t i;

	(void)state;
	assert_int_equal(
		km_shardmap_from_cluster(3, '/', 1, cl_ids, cl_owners, 8, cl_nodes, 3, 2, &m), 0);
	assert_int_equal(
		km_shardmap_from_cluster(3, '/', 1, cl_ids, cl_owners, 8, cl_nodes, 3, -1, &c), 0);
	assert_int_equal(km_shardmap_nb_workers(m), 2);
	assert_int_equal(km_shardmap_udp_port_base(m), 8000);
	assert_int_equal(km_shardmap_nb_workers(c), 5);
	assert_int_equal(km_shardmap_self(m), 2);
	assert_int_equal(km_shardmap_self(c), -1);
	assert_int_equal(km_shardmap_nb_nodes(m), 3);
	assert_int_equal(km_shardmap_node_at(m, 0)->first, 0);
	assert_int_equal(km_shardmap_node_at(m, 1)->first, 2);
	assert_int_equal(km_shardmap_node_at(m, 2)->first, 3);
	assert_null(km_shardmap_node_at(m, 3));
	for (i = 0; i < 8; i++) {
		const struct km_shard *sm = km_shardmap_find(m, cl_ids[i]);
		const struct km_shard *sc = km_shardmap_find(c, cl_ids[i]);
		uint16_t g = cl_owners[i];

		assert_int_equal(km_shardmap_global_owner(m, sm), g);
		assert_int_equal(km_shardmap_global_owner(c, sc), g);
		assert_int_equal(km_shard_owner(sc), g);
		assert_int_equal(km_shard_owner(sm), g >= 3 ? g - 3 : KM_OWNER_REMOTE);
		assert_int_equal(km_shardmap_owner_node(c, g, &w), g < 2 ? 0 : g < 3 ? 1 : 2);
		assert_int_equal(w, g < 2 ? g : g < 3 ? 0 : g - 3);
	}
	assert_int_equal(km_shardmap_owner_node(c, 5, &w), -ENOENT);
	/* Both views route every key to the same shard. */
	for (i = 0; i < 1000; i++) {
		uint64_t h = rng_next(&seed);

		assert_int_equal(km_shard_id(km_shardmap_lookup(m, h)),
			km_shard_id(km_shardmap_lookup(c, h)));
	}
	/* The placer changes a cluster map, nobody else. */
	assert_int_equal(km_shardmap_split(m, 8, &n), -EPERM);
	assert_int_equal(km_shardmap_merge(c, 8, &n), -EPERM);
	assert_int_equal(km_shardmap_move(m, 8, 0, &n), -EPERM);
	assert_int_equal(km_shardmap_override_add(m, (const uint8_t *)"u", 1, 1, &n), -EPERM);
	/* A map that is not a cluster map. */
	n = make_map(4, 2, '/', 1);
	assert_int_equal(km_shardmap_nb_nodes(n), 0);
	assert_int_equal(km_shardmap_self(n), -1);
	assert_int_equal(km_shardmap_global_owner(n, km_shardmap_shard_at(n, 1)),
		km_shard_owner(km_shardmap_shard_at(n, 1)));
	km_shardmap_free(n);
	km_shardmap_free(m);
	km_shardmap_free(c);
}

static void
test_cluster_map_invalid(void **state)
{
	struct km_map_node t[KM_MAP_NODES_MAX + 1];
	uint16_t owners[8];
	uint64_t ids[8];
	struct km_shardmap *m = NULL;
	unsigned int i;

	(void)state;
	memcpy(t, cl_nodes, sizeof(cl_nodes));
	memcpy(owners, cl_owners, sizeof(owners));
	memcpy(ids, cl_ids, sizeof(ids));
	assert_int_equal(
		km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, t, 0, -1, &m), -EINVAL);
	assert_int_equal(km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, t, 3, 3, &m), -EINVAL);
	assert_int_equal(
		km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, NULL, 3, 0, &m), -EINVAL);
	owners[3] = 5; /* no such worker */
	assert_int_equal(km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, t, 3, 0, &m), -EINVAL);
	owners[3] = 3;
	ids[7] = 7; /* overlaps 14 and 15 */
	assert_int_equal(km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, t, 3, 0, &m), -EINVAL);
	ids[7] = 15;
	t[1].workers = 0;
	assert_int_equal(km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, t, 3, 0, &m), -EINVAL);
	t[1].workers = 1;
	t[1].ip = 0;
	assert_int_equal(km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, t, 3, 0, &m), -EINVAL);
	t[1].ip = 1;
	t[2].port = 65535; /* its second worker would need port 65536 */
	assert_int_equal(km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, t, 3, 0, &m), -EINVAL);
	t[2].port = 0;
	assert_int_equal(km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, t, 3, 0, &m), -EINVAL);
	for (i = 0; i <= KM_MAP_NODES_MAX; i++)
		t[i] = (struct km_map_node){.ip = 1 + i, .port = 7000, .workers = 1};
	assert_int_equal(
		km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, t, KM_MAP_NODES_MAX + 1, 0, &m),
		-EINVAL);
	t[0].workers = KM_WORKERS_MAX; /* with the 31 others: over the workers a map holds */
	assert_int_equal(
		km_shardmap_from_cluster(1, '/', 1, ids, owners, 8, t, KM_MAP_NODES_MAX, 0, &m),
		-EINVAL);
	assert_null(m);
}

/* MAP of a cluster map: 2.0, global owners, the node table in chunk 0 only; decoded, the
 * chunks rebuild the client's view; malformed tables refused. */
static void
test_cluster_encode(void **state)
{
	uint8_t buf[KM_MAP_HDR_LEN + 4 * KM_MAP_ENTRY_LEN + 1 + 3 * KM_MAP_NODE_LEN];
	uint8_t bad[sizeof(buf)];
	struct km_shardmap *m, *c;
	struct km_map_node nodes[KM_MAP_NODES_MAX];
	struct km_map_chunk ch;
	struct km_map_entry e;
	uint16_t owners[8], nb_nodes = 0;
	uint64_t ids[8];
	uint32_t first = 0, n = 0, i;
	size_t len, len0 = 0;

	(void)state;
	assert_int_equal(
		km_shardmap_from_cluster(9, '/', 1, cl_ids, cl_owners, 8, cl_nodes, 3, 1, &m), 0);
	while ((len = km_shardmap_encode(m, first, buf, sizeof(buf))) > 0) {
		assert_int_equal(km_shardmap_decode_chunk(buf, len, &ch), 0);
		assert_int_equal(ch.version_major, KM_MAP_CLUSTER_MAJOR);
		assert_int_equal(ch.version_minor, KM_MAP_CLUSTER_MINOR);
		assert_int_equal(ch.nb_workers, 5);
		assert_int_equal(ch.udp_port_base, 0);
		assert_int_equal(ch.epoch, 9);
		assert_int_equal(ch.first, first);
		if (first == 0) {
			len0 = len;
			memcpy(bad, buf, len);
			assert_int_equal(ch.flags, KM_MAP_F_NODES);
			assert_int_equal(ch.count, 4); /* the table took room */
			nb_nodes = ch.nb_nodes;
			for (i = 0; i < ch.nb_nodes; i++)
				km_shardmap_chunk_node(&ch, i, &nodes[i]);
		} else {
			assert_int_equal(ch.flags, 0);
			assert_int_equal(ch.nb_nodes, 0);
		}
		for (i = 0; i < ch.count; i++, n++) {
			km_shardmap_chunk_entry(&ch, i, &e);
			ids[n] = e.id;
			owners[n] = e.owner;
			assert_int_equal(e.flags, 0);
		}
		first += ch.count;
	}
	assert_int_equal(n, 8);
	assert_int_equal(nb_nodes, 3);
	for (i = 0; i < 3; i++) {
		assert_int_equal(nodes[i].ip, cl_nodes[i].ip);
		assert_int_equal(nodes[i].port, cl_nodes[i].port);
		assert_int_equal(nodes[i].workers, cl_nodes[i].workers);
	}
	assert_int_equal(nodes[2].first, 3);
	assert_int_equal(km_shardmap_from_cluster(9, '/', 1, ids, owners, 8, nodes, 3, -1, &c), 0);
	for (i = 0; i < 8; i++)
		assert_int_equal(km_shard_owner(km_shardmap_find(c, cl_ids[i])), cl_owners[i]);

	/* Refused: no table in chunk 0, a table elsewhere, workers that do not add up, a
	 * truncated or empty table, a node on port 0. */
	bad[11] = 0;
	assert_int_equal(km_shardmap_decode_chunk(bad, len0, &ch), -EINVAL);
	assert_int_equal(km_shardmap_encode(m, 0, bad, sizeof(bad)), len0);
	km_put32(bad + 16, 1);
	assert_int_equal(km_shardmap_decode_chunk(bad, len0, &ch), -EINVAL);
	km_put32(bad + 16, 0);
	km_put16(bad + 4, 6);
	assert_int_equal(km_shardmap_decode_chunk(bad, len0, &ch), -EINVAL);
	km_put16(bad + 4, 5);
	assert_int_equal(km_shardmap_decode_chunk(bad, len0 - 1, &ch), -EINVAL);
	bad[KM_MAP_HDR_LEN + 4 * KM_MAP_ENTRY_LEN] = 0;
	assert_int_equal(km_shardmap_decode_chunk(bad, len0, &ch), -EINVAL);
	bad[KM_MAP_HDR_LEN + 4 * KM_MAP_ENTRY_LEN] = 3;
	km_put16(bad + KM_MAP_HDR_LEN + 4 * KM_MAP_ENTRY_LEN + 1 + 4, 0);
	assert_int_equal(km_shardmap_decode_chunk(bad, len0, &ch), -EINVAL);
	km_put16(bad + KM_MAP_HDR_LEN + 4 * KM_MAP_ENTRY_LEN + 1 + 4, 7070);
	assert_int_equal(km_shardmap_decode_chunk(bad, len0, &ch), 0);
	/* A 1.x chunk with the reserved bit set: ignored there, as reserved bits are. */
	km_shardmap_free(c);
	c = make_map(4, 2, '/', 1);
	len = km_shardmap_encode(c, 0, buf, sizeof(buf));
	buf[11] = KM_MAP_F_NODES;
	assert_int_equal(km_shardmap_decode_chunk(buf, len, &ch), 0);
	assert_int_equal(ch.nb_nodes, 0);
	km_shardmap_free(c);
	km_shardmap_free(m);
}

/*
 * The test vector of docs/protocol.md section 7 ("MAP chunk"), byte for byte: epoch 7,
 * 4 workers, port base 7070, route '/' depth 1, version 1.0, shards 2 (owner 3 by jump
 * hash), 6 (moved to worker 1) and 7 (owner 0 by jump hash); encoded as 1.1, without
 * overrides. Keep the two identical.
 */
static const uint8_t map_vector[] = {
	0x07,
	0x00,
	0x00,
	0x00,
	0x04,
	0x00,
	0x9e,
	0x1b,
	0x2f,
	0x01,
	0x11,
	0x00,
	0x03,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x03,
	0x00,
	0x02,
	0x00,
	0x00,
	0x00,
	0x03,
	0x00,
	0x00,
	0x00,
	0x06,
	0x00,
	0x00,
	0x00,
	0x01,
	0x00,
	0x01,
	0x00,
	0x07,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
};

static void
test_map_vector(void **state)
{
	static const uint64_t ids[] = {2, 6, 7};
	static const uint16_t owners[] = {3, 1, 0}, flags[] = {0, KM_MAP_ENTRY_F_MOVED, 0};
	uint16_t list_owners[3] = {KM_OWNER_JUMP, 1, KM_OWNER_JUMP};
	struct km_shardmap *m = NULL;
	struct km_map_chunk c;
	struct km_map_entry e;
	uint8_t buf[64];
	uint32_t i;

	(void)state;
	assert_int_equal(sizeof(map_vector), KM_MAP_HDR_LEN + 3 * KM_MAP_ENTRY_LEN);
	assert_int_equal(km_shardmap_decode_chunk(map_vector, sizeof(map_vector), &c), 0);
	assert_int_equal(c.epoch, 7);
	assert_int_equal(c.nb_workers, 4);
	assert_int_equal(c.udp_port_base, 7070);
	assert_int_equal(c.route_sep, '/');
	assert_int_equal(c.route_depth, 1);
	assert_int_equal(c.version_major, 1);
	assert_int_equal(c.version_minor, 1);
	assert_int_equal(c.flags, 0);
	assert_int_equal(c.nb_shards, 3);
	assert_int_equal(c.first, 0);
	assert_int_equal(c.count, 3);
	for (i = 0; i < 3; i++) {
		km_shardmap_chunk_entry(&c, i, &e);
		assert_int_equal(e.id, ids[i]);
		assert_int_equal(e.owner, owners[i]);
		assert_int_equal(e.flags, flags[i]);
	}
	/* the jump-hash owners really are the jump hash; the moved one is not */
	assert_int_equal(km_jump_hash(2, 4), 3);
	assert_int_equal(km_jump_hash(7, 4), 0);
	assert_int_not_equal(km_jump_hash(6, 4), 1);

	/* and the encoder writes exactly these bytes for that map */
	assert_int_equal(km_shardmap_from_list(7, 4, 7070, '/', 1, ids, list_owners, 3, &m), 0);
	assert_int_equal(km_shardmap_encode(m, 0, buf, sizeof(buf)), sizeof(map_vector));
	assert_memory_equal(buf, map_vector, sizeof(map_vector));
	km_shardmap_free(m);
}

/* Keys "part/c<i>" routed on m: the reference of every override rule, the slow way. */
static void
check_override_routes(const struct km_shardmap *m, const char *part, uint8_t state, int present,
	unsigned int extra)
{
	const struct km_shard *own = ref_lookup(m, XXH3_64bits(part, strlen(part)));
	struct km_shardmap_route rt;
	char key[96];
	unsigned int i, spread = 0;
	const struct km_shard *first = NULL;

	for (i = 0; i < 200; i++) {
		size_t plen, len;
		const struct km_shard *ext;

		len = (size_t)snprintf(key, sizeof(key), "%s/c%u/leaf", part, i);
		/* one more component: "part/c<i>"; two: the whole key */
		plen = extra == 1 ? strlen(part) + (size_t)snprintf(NULL, 0, "/c%u", i) : len;
		ext = ref_lookup(m, XXH3_64bits(key, plen));
		assert_int_equal(km_shardmap_route(m, (const uint8_t *)key, len, &rt), 0);
		assert_int_equal(rt.part_hash, XXH3_64bits(part, strlen(part)));
		assert_int_equal(km_shardmap_hash(m, (const uint8_t *)key, len), rt.hash);
		if (!present || state == KM_OVR_REVERTING) {
			assert_int_equal(rt.hash, rt.part_hash);
			assert_int_equal(rt.route_len, strlen(part));
			assert_ptr_equal(rt.shard, own);
			if (present)
				assert_ptr_equal(rt.fallback, ext != own ? ext : NULL);
			else
				assert_null(rt.fallback);
		} else {
			assert_int_equal(rt.route_len, plen);
			assert_int_equal(rt.hash, XXH3_64bits(key, plen));
			assert_ptr_equal(rt.shard, ext);
			if (state == KM_OVR_MIGRATING)
				assert_ptr_equal(rt.fallback, ext != own ? own : NULL);
			else
				assert_null(rt.fallback);
		}
		assert_int_equal(rt.owner, rt.shard->owner);
		if (first == NULL)
			first = rt.shard;
		else if (rt.shard != first)
			spread++;
	}
	/* 200 sub-parts over 16+ shards: an override spreads, no override does not. */
	if (present && state != KM_OVR_REVERTING)
		assert_true(spread > 100);
	else
		assert_int_equal(spread, 0);
	/* the part alone has no component past it: the same route by either rule */
	assert_int_equal(km_shardmap_route(m, (const uint8_t *)part, strlen(part), &rt), 0);
	assert_ptr_equal(rt.shard, own);
	assert_null(rt.fallback);
}

static void
test_override_route(void **state)
{
	struct km_shardmap *m = make_map(16, 4, '/', 1), *a = NULL, *b = NULL, *c = NULL, *d = NULL,
			   *e = NULL, *f = NULL;
	const struct km_override_info *o;
	struct km_shardmap_route rt;
	uint64_t h = XXH3_64bits("user42", 6);

	(void)state;
	check_override_routes(m, "user42", 0, 0, 1);
	assert_int_equal(km_shardmap_override_add(m, (const uint8_t *)"user42", 6, 1, &a), 0);
	assert_int_equal(a->epoch, m->epoch + 1);
	assert_int_equal(km_shardmap_nb_overrides(a), 1);
	o = km_shardmap_override_at(a, 0);
	assert_non_null(o);
	assert_int_equal(o->hash, h);
	assert_int_equal(o->extra, 1);
	assert_int_equal(o->state, KM_OVR_MIGRATING);
	assert_string_equal(o->name, "user42");
	assert_ptr_equal(km_shardmap_override_find(a, h), o);
	assert_null(km_shardmap_override_at(a, 1));
	check_override_routes(a, "user42", KM_OVR_MIGRATING, 1, 1);
	/* other parts keep their route */
	check_override_routes(a, "user43", 0, 0, 1);
	assert_int_equal(km_shardmap_route(a, (const uint8_t *)"user4/x", 7, &rt), 0);
	assert_int_equal(rt.hash, XXH3_64bits("user4", 5));

	/* the original map is untouched */
	assert_int_equal(km_shardmap_nb_overrides(m), 0);
	check_override_routes(m, "user42", 0, 0, 1);

	/* errors */
	assert_int_equal(km_shardmap_override_add(a, (const uint8_t *)"user42", 6, 1, &b), -EEXIST);
	assert_int_equal(km_shardmap_override_add(a, (const uint8_t *)"u/x", 3, 1, &b), -EINVAL);
	assert_int_equal(km_shardmap_override_add(a, (const uint8_t *)"u", 0, 1, &b), -EINVAL);
	assert_int_equal(km_shardmap_override_add(a, (const uint8_t *)"u", 1, 0, &b), -EINVAL);
	assert_int_equal(km_shardmap_override_add(a, (const uint8_t *)"u", 1, 255, &b), -EINVAL);
	assert_int_equal(km_shardmap_override_settle(a, h + 1, &b), -ENOENT);
	assert_int_equal(km_shardmap_override_remove(a, h + 1, &b), -ENOENT);
	assert_null(b);

	/* settle: new rule only */
	assert_int_equal(km_shardmap_override_settle(a, h, &b), 0);
	assert_int_equal(b->epoch, a->epoch + 1);
	assert_int_equal(km_shardmap_override_at(b, 0)->state, KM_OVR_SETTLED);
	check_override_routes(b, "user42", KM_OVR_SETTLED, 1, 1);
	assert_int_equal(km_shardmap_override_settle(b, h, &c), -EALREADY);

	/* overrides survive splits, merges and moves */
	assert_int_equal(km_shardmap_split(b, b->shards[3].id, &c), 0);
	assert_int_equal(km_shardmap_nb_overrides(c), 1);
	check_override_routes(c, "user42", KM_OVR_SETTLED, 1, 1);
	km_shardmap_free(c);
	c = NULL;

	/* remove: reverting, then settled away */
	assert_int_equal(km_shardmap_override_remove(b, h, &c), 0);
	assert_int_equal(km_shardmap_override_at(c, 0)->state, KM_OVR_REVERTING);
	check_override_routes(c, "user42", KM_OVR_REVERTING, 1, 1);
	assert_int_equal(km_shardmap_override_remove(c, h, &d), -EALREADY);
	/* hot again while reverting: migrating again */
	assert_int_equal(km_shardmap_override_add(c, (const uint8_t *)"user42", 6, 1, &d), 0);
	assert_int_equal(km_shardmap_nb_overrides(d), 1);
	assert_int_equal(km_shardmap_override_at(d, 0)->state, KM_OVR_MIGRATING);
	assert_int_equal(km_shardmap_override_settle(c, h, &e), 0);
	assert_int_equal(km_shardmap_nb_overrides(e), 0);
	check_override_routes(e, "user42", 0, 0, 1);
	assert_int_equal(e->epoch, m->epoch + 4);

	/* KM_OVERRIDES_MAX at most */
	{
		struct km_shardmap *cur = e, *next;
		char part[16];
		int i, len;

		for (i = 0; i < KM_OVERRIDES_MAX; i++) {
			len = snprintf(part, sizeof(part), "e%d", i);
			assert_int_equal(km_shardmap_override_add(
						 cur, (const uint8_t *)part, (size_t)len, 1, &next),
				0);
			if (cur != e)
				km_shardmap_free(cur);
			cur = next;
		}
		assert_int_equal(
			km_shardmap_override_add(cur, (const uint8_t *)"one", 3, 1, &f), -ENOSPC);
		check_override_routes(cur, "e7", KM_OVR_MIGRATING, 1, 1);
		km_shardmap_free(cur);
	}

	/* a deeper route: the part is route_depth components, the override adds one */
	{
		struct km_shardmap *m2 = make_map(16, 4, ':', 2), *o2 = NULL;

		assert_int_equal(
			km_shardmap_override_add(m2, (const uint8_t *)"t:u", 3, 1, &o2), 0);
		assert_int_equal(km_shardmap_route(o2, (const uint8_t *)"t:u:v:w", 7, &rt), 0);
		assert_int_equal(rt.route_len, 5);
		assert_int_equal(rt.hash, XXH3_64bits("t:u:v", 5));
		assert_int_equal(rt.part_hash, XXH3_64bits("t:u", 3));
		assert_int_equal(
			km_shardmap_override_add(m2, (const uint8_t *)"t:u:v", 5, 1, &f), -EINVAL);
		km_shardmap_free(m2);
		km_shardmap_free(o2);
	}
	km_shardmap_free(m);
	km_shardmap_free(a);
	km_shardmap_free(b);
	km_shardmap_free(c);
	km_shardmap_free(d);
	km_shardmap_free(e);
}

/* Overrides cross in MAP: chunk 0 carries them, a 1.0 decoder skips them. */
static void
test_override_encode(void **state)
{
	struct km_shardmap *m = make_map(64, 4, '/', 1), *a = NULL, *b = NULL, *r = NULL;
	uint64_t ids[64];
	uint16_t owners[64];
	struct km_override_info got[KM_OVERRIDES_MAX];
	/* Chunks of 10 entries at most; room behind them for the bytes the invalid lists
	 * below append or claim. */
	const size_t cap = KM_MAP_HDR_LEN + 10 * KM_MAP_ENTRY_LEN;
	uint8_t buf[KM_MAP_HDR_LEN + 10 * KM_MAP_ENTRY_LEN + 256];
	struct km_map_chunk c;
	uint32_t first = 0, i, nov = 0;
	size_t len;

	(void)state;
	assert_int_equal(km_shardmap_override_add(m, (const uint8_t *)"hot", 3, 1, &a), 0);
	assert_int_equal(km_shardmap_override_settle(a, XXH3_64bits("hot", 3), &b), 0);
	km_shardmap_free(a);
	assert_int_equal(km_shardmap_override_add(b, (const uint8_t *)"warm", 4, 2, &a), 0);
	while ((len = km_shardmap_encode(a, first, buf, cap)) > 0) {
		assert_int_equal(km_shardmap_decode_chunk(buf, len, &c), 0);
		assert_int_equal(c.version_minor, 1);
		if (first == 0) {
			/* 2 overrides: 21 bytes, so 7 entries instead of 10 */
			assert_int_equal(c.flags, KM_MAP_F_OVERRIDES);
			assert_int_equal(c.count, 7);
			assert_int_equal(len,
				KM_MAP_HDR_LEN + 7 * KM_MAP_ENTRY_LEN + 1 + 2 * KM_MAP_OVR_LEN);
			nov = c.nb_overrides;
			for (i = 0; i < nov; i++)
				km_shardmap_chunk_override(&c, i, &got[i]);
		} else {
			assert_int_equal(c.flags, 0);
			assert_int_equal(c.nb_overrides, 0);
			assert_int_equal(len, KM_MAP_HDR_LEN + c.count * KM_MAP_ENTRY_LEN);
		}
		/* what a 1.0 decoder reads: the entries, whatever follows them */
		assert_true(KM_MAP_HDR_LEN + (size_t)c.count * KM_MAP_ENTRY_LEN <= len);
		for (i = 0; i < c.count; i++) {
			struct km_map_entry e;

			km_shardmap_chunk_entry(&c, i, &e);
			ids[first + i] = e.id;
			owners[first + i] = e.owner;
		}
		first += c.count;
	}
	assert_int_equal(first, 64);
	assert_int_equal(nov, 2);
	assert_int_equal(got[0].hash, XXH3_64bits("hot", 3));
	assert_int_equal(got[0].extra, 1);
	assert_int_equal(got[0].state, KM_OVR_SETTLED);
	assert_string_equal(got[0].name, "");
	assert_int_equal(got[1].hash, XXH3_64bits("warm", 4));
	assert_int_equal(got[1].extra, 2);
	assert_int_equal(got[1].state, KM_OVR_MIGRATING);

	assert_int_equal(km_shardmap_from_list(a->epoch, 4, 9000, '/', 1, ids, owners, 64, &r), 0);
	assert_int_equal(km_shardmap_set_overrides(r, got, nov), 0);
	check_override_routes(r, "hot", KM_OVR_SETTLED, 1, 1);
	check_override_routes(r, "warm", KM_OVR_MIGRATING, 1, 2);
	/* and they agree with the server's map key by key */
	for (i = 0; i < 300; i++) {
		struct km_shardmap_route x, y;
		char key[32];
		int kl = snprintf(key, sizeof(key), "%s/%u/%u", i % 2 ? "hot" : "warm", i, i * 7);

		assert_int_equal(km_shardmap_route(a, (const uint8_t *)key, (size_t)kl, &x), 0);
		assert_int_equal(km_shardmap_route(r, (const uint8_t *)key, (size_t)kl, &y), 0);
		assert_int_equal(x.hash, y.hash);
		assert_int_equal(x.owner, y.owner);
		assert_int_equal(km_shard_id(x.shard), km_shard_id(y.shard));
		assert_int_equal(x.fallback == NULL, y.fallback == NULL);
	}
	/* set_overrides refuses what is not a list of overrides */
	got[1].hash = got[0].hash;
	assert_int_equal(km_shardmap_set_overrides(r, got, 2), -EINVAL);
	got[1].hash = 5;
	got[1].extra = 0;
	assert_int_equal(km_shardmap_set_overrides(r, got, 2), -EINVAL);
	got[1].extra = 1;
	got[1].state = 3;
	assert_int_equal(km_shardmap_set_overrides(r, got, 2), -EINVAL);
	assert_int_equal(km_shardmap_set_overrides(r, got, KM_OVERRIDES_MAX + 1), -EINVAL);
	assert_int_equal(km_shardmap_nb_overrides(r), 2); /* unchanged */

	/* chunk 0 too small for one entry and the list: nothing */
	assert_int_equal(km_shardmap_encode(a, 0, buf, KM_MAP_HDR_LEN + KM_MAP_ENTRY_LEN + 20), 0);
	assert_int_equal(km_shardmap_encode(a, 0, buf, KM_MAP_HDR_LEN + KM_MAP_ENTRY_LEN + 21),
		KM_MAP_HDR_LEN + KM_MAP_ENTRY_LEN + 21);

	/* invalid lists */
	len = km_shardmap_encode(a, 0, buf, cap);
	assert_int_equal(km_shardmap_decode_chunk(buf, len - 1, &c), -EINVAL); /* truncated */
	assert_int_equal(km_shardmap_decode_chunk(buf, KM_MAP_HDR_LEN + 7 * KM_MAP_ENTRY_LEN, &c),
		-EINVAL);                                       /* no count */
	buf[KM_MAP_HDR_LEN + 7 * KM_MAP_ENTRY_LEN + 1 + 8] = 0; /* extra 0 */
	assert_int_equal(km_shardmap_decode_chunk(buf, len, &c), -EINVAL);
	buf[KM_MAP_HDR_LEN + 7 * KM_MAP_ENTRY_LEN + 1 + 8] = 1;
	buf[KM_MAP_HDR_LEN + 7 * KM_MAP_ENTRY_LEN + 1 + 9] = 3; /* unknown state */
	assert_int_equal(km_shardmap_decode_chunk(buf, len, &c), -EINVAL);
	buf[KM_MAP_HDR_LEN + 7 * KM_MAP_ENTRY_LEN + 1 + 9] = 1;
	buf[KM_MAP_HDR_LEN + 7 * KM_MAP_ENTRY_LEN] = KM_OVERRIDES_MAX + 1; /* too many */
	assert_int_equal(km_shardmap_decode_chunk(buf, len + 200, &c), -EINVAL);
	buf[KM_MAP_HDR_LEN + 7 * KM_MAP_ENTRY_LEN] = 2;
	assert_int_equal(km_shardmap_decode_chunk(buf, len, &c), 0);
	len = km_shardmap_encode(a, 7, buf, cap);
	buf[11] = KM_MAP_F_OVERRIDES; /* only chunk 0 carries the list */
	buf[len] = 0;
	assert_int_equal(km_shardmap_decode_chunk(buf, len + 1, &c), -EINVAL);

	km_shardmap_free(m);
	km_shardmap_free(a);
	km_shardmap_free(b);
	km_shardmap_free(r);
}

/*
 * The override test vector of docs/protocol.md section 7 ("MAP chunk with an override"):
 * epoch 9, 4 workers, port base 7070, route '/' depth 1, version 1.1, one shard (id 1,
 * owner 0), routing part "user42" (XXH3-64 0x9fdc8e44c5b9267c) overridden by one more
 * component, MIGRATING. Keep the two identical.
 */
static const uint8_t map_ovr_vector[] = {
	0x09,
	0x00,
	0x00,
	0x00,
	0x04,
	0x00,
	0x9e,
	0x1b,
	0x2f,
	0x01,
	0x11,
	0x01,
	0x01,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x01,
	0x00,
	0x01,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x00,
	0x01,
	0x7c,
	0x26,
	0xb9,
	0xc5,
	0x44,
	0x8e,
	0xdc,
	0x9f,
	0x01,
	0x01,
};

static void
test_map_ovr_vector(void **state)
{
	static const uint64_t ids[] = {1};
	static const uint16_t owners[] = {KM_OWNER_JUMP};
	struct km_shardmap *m = NULL, *o = NULL;
	struct km_override_info ov;
	struct km_map_chunk c;
	uint8_t buf[64];

	(void)state;
	assert_int_equal(km_shardmap_decode_chunk(map_ovr_vector, sizeof(map_ovr_vector), &c), 0);
	assert_int_equal(c.epoch, 9);
	assert_int_equal(c.version_minor, 1);
	assert_int_equal(c.flags, KM_MAP_F_OVERRIDES);
	assert_int_equal(c.count, 1);
	assert_int_equal(c.nb_overrides, 1);
	km_shardmap_chunk_override(&c, 0, &ov);
	assert_int_equal(ov.hash, 0x9fdc8e44c5b9267cULL);
	assert_int_equal(ov.hash, XXH3_64bits("user42", 6));
	assert_int_equal(ov.extra, 1);
	assert_int_equal(ov.state, KM_OVR_MIGRATING);

	assert_int_equal(km_shardmap_from_list(8, 4, 7070, '/', 1, ids, owners, 1, &m), 0);
	assert_int_equal(km_shardmap_override_add(m, (const uint8_t *)"user42", 6, 1, &o), 0);
	assert_int_equal(km_shardmap_encode(o, 0, buf, sizeof(buf)), sizeof(map_ovr_vector));
	assert_memory_equal(buf, map_ovr_vector, sizeof(map_ovr_vector));
	km_shardmap_free(m);
	km_shardmap_free(o);
}

/* The first depth components by the definition: bytes up to the depth-th separator. */
static size_t
part_len_ref(uint8_t sep, unsigned int depth, const uint8_t *key, size_t len)
{
	unsigned int seen = 0;
	size_t i;

	for (i = 0; i < len; i++)
		if (key[i] == sep && ++seen == depth)
			return i;
	return len;
}

/* km_part_len() against the definition: every length to 40, a separator at one position,
 * at two, or none, separators with the high bit set, bytes next to the separator's value,
 * depths 1-3. */
static void
test_part_len(void **state)
{
	static const uint8_t seps[] = {'/', 0, 0x80, 0xff, 0x7f, 0x01};
	uint8_t key[48];
	uint64_t rng = 1;
	size_t len, i, j;
	unsigned int d, si, round;

	(void)state;
	for (si = 0; si < sizeof(seps); si++) {
		uint8_t sep = seps[si];

		for (len = 0; len <= 40; len++) {
			for (round = 0; round < 40; round++) {
				for (i = 0; i < len; i++) {
					rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
					/* near the separator: its neighbours and its high bit */
					key[i] = (uint8_t)(sep ^ (1u << ((rng >> 33) % 8)));
					if ((rng >> 40) % 4 == 0)
						key[i] = (uint8_t)(rng >> 48);
				}
				/* none, one at round % len, two */
				if (len != 0 && round % 3 != 0)
					key[round % len] = sep;
				if (len != 0 && round % 3 == 2)
					key[(round * 7) % len] = sep;
				for (d = 1; d <= 3; d++)
					assert_int_equal(km_part_len(sep, d, key, len),
						part_len_ref(sep, d, key, len));
			}
		}
	}
	/* every single separator position in a 16-byte key, and none */
	for (j = 0; j <= 16; j++) {
		memset(key, 'a', 16);
		if (j < 16)
			key[j] = '/';
		assert_int_equal(km_part_len('/', 1, key, 16), j);
		assert_int_equal(km_shardmap_part_len('/', 1, key, 16), j);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_route_len),
		cmocka_unit_test(test_hash),
		cmocka_unit_test(test_route),
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_create_invalid),
		cmocka_unit_test(test_split),
		cmocka_unit_test(test_split_depth_limit),
		cmocka_unit_test(test_merge),
		cmocka_unit_test(test_random_split_merge),
		cmocka_unit_test(test_jump_hash),
		cmocka_unit_test(test_move),
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_from_list),
		cmocka_unit_test(test_encode_decode),
		cmocka_unit_test(test_decode_invalid),
		cmocka_unit_test(test_decode_versions),
		cmocka_unit_test(test_map_vector),
		cmocka_unit_test(test_override_route),
		cmocka_unit_test(test_override_encode),
		cmocka_unit_test(test_map_ovr_vector),
		cmocka_unit_test(test_cluster_map),
		cmocka_unit_test(test_cluster_map_invalid),
		cmocka_unit_test(test_cluster_encode),
		cmocka_unit_test(test_part_len),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
