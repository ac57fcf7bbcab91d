/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_WORKLOAD_H
#define KM_WORKLOAD_H

/**
 * @file
 * Synthetic request streams for keymap-bench: which key to ask next and whether to read
 * or write it.
 *
 * Keys are numbered 0 .. nb_keys-1 and rendered as exactly key_size bytes:
 * - flat distributions (uniform, zipf, hotset): "k" then the number zero-padded,
 *   e.g. key_size 16, key 42 -> "k000000000000042";
 * - composite distributions (scan, session): "e<entity>/<field>" with both parts
 *   zero-padded so that the whole key has key_size bytes: key = entity * fields + field,
 *   fields = conf.fields. The routing part is the entity, so one entity's keys share
 *   a shard.
 *
 * Distributions:
 * - UNIFORM: every key equally likely.
 * - ZIPF: P(key of rank r) ~ 1 / (r+1)^theta, theta > 0 (any value, 1 included); rank 0
 *   is key 0. Sampled in O(1) per draw (rejection-inversion, Hoermann and Derflinger).
 * - HOTSET: a hot range of hot_fraction * nb_keys keys receives hot_prob of the requests
 *   (uniform inside, uniform over the other keys otherwise). The hot range starts at key
 *   0 and, once now_us >= hot_move_at_us (if not 0), moves to the next hot-range-sized
 *   block of keys (once), so a cache or a re-sharder has to follow.
 * - SCAN: sequential scans over composite keys: pick an entity uniformly, request its
 *   fields 0 .. fields-1 in order, then pick the next entity.
 * - SESSION: `sessions` clients, each walking its own entity's keys in one template order
 *   (a fixed permutation of the fields, the same for every session, drawn from the seed);
 *   requests interleave the sessions at random; a session that finished its walk starts
 *   over on a new entity chosen uniformly. op.session tells which session asked
 *   (1-based; 0 for other distributions).
 *
 * Each generator is used by one thread; give each thread its own: the same seed and
 * different streams draw different requests over the same template order (SESSION).
 */

#include <stddef.h>
#include <stdint.h>

enum km_wl_dist {
	KM_WL_UNIFORM,
	KM_WL_ZIPF,
	KM_WL_HOTSET,
	KM_WL_SCAN,
	KM_WL_SESSION,
};

enum km_wl_opcode {
	KM_WL_GET = 0,
	KM_WL_PUT = 1,
	KM_WL_DEL = 2, /* only from traces */
};

struct km_wl_conf {
	uint64_t nb_keys;      /* >= 1 (composite: rounded down to a multiple of fields) */
	unsigned int key_size; /* bytes per key, 1..250; must hold the largest key number */
	double get_ratio;      /* 0..1: share of GETs, the rest are PUTs */
	enum km_wl_dist dist;
	double zipf_theta;       /* ZIPF: > 0 */
	double hot_fraction;     /* HOTSET: (0, 1) */
	double hot_prob;         /* HOTSET: [0, 1] */
	uint64_t hot_move_at_us; /* HOTSET: when the hot range moves (0: never) */
	uint32_t fields;         /* SCAN, SESSION: keys per entity, >= 1 */
	uint32_t sessions;       /* SESSION: >= 1 */
	uint64_t seed;
	/* 0, or one of several generators of one run: the same seed gives them the same
	 * template order (SESSION), the stream their own draws */
	uint32_t stream;
	/* SESSION: this generator's sessions are numbered session_base + 1 .. session_base +
	 * sessions (generators of one run: distinct sessions, as a server's predictor sees
	 * them) */
	uint32_t session_base;
};

struct km_wl_op {
	uint8_t op;       /* enum km_wl_opcode */
	uint32_t session; /* SESSION: session_base + 1..sessions; 0 otherwise */
	uint64_t key;     /* 0 .. nb_keys-1 */
};

struct km_wl;

/**
 * Check conf and build a generator.
 * @return 0, or -EINVAL with a readable reason in err (e.g. "key_size 4 cannot hold
 *   1000000 keys (needs 7)"), or -ENOMEM.
 * @note Context: any thread; the generator then belongs to its caller (not thread-safe).
 */
int km_wl_create(const struct km_wl_conf *conf, struct km_wl **out, char *err, size_t errlen);

/** Free a generator; NULL is fine. @note Context: the generator's owner. */
void km_wl_free(struct km_wl *wl);

/**
 * The next request; now_us is the time since the run started (HOTSET uses it).
 * @note Context: the generator's owner (it advances the generator's state).
 */
void km_wl_next(struct km_wl *wl, uint64_t now_us, struct km_wl_op *op);

/**
 * Write key number idx as exactly conf.key_size bytes into buf (no NUL). @return key_size
 * @note Context: any thread (reads only the generator's configuration).
 */
size_t km_wl_key(const struct km_wl *wl, uint64_t idx, char *buf);

/**
 * Number of keys actually used (nb_keys after rounding for composite keys).
 * @note Context: any thread.
 */
uint64_t km_wl_nb_keys(const struct km_wl *wl);

/**
 * Name <-> enum for command lines: "uniform", "zipf", "hotset", "scan", "session".
 * @return 0 or -EINVAL.
 * @note Context: any thread (pure).
 */
int km_wl_dist_parse(const char *name, enum km_wl_dist *out);

/** enum -> name (a static string). @note Context: any thread. */
const char *km_wl_dist_name(enum km_wl_dist d);

/** A small, fast PRNG (xoshiro256**) shared by the generators and the bench. One owner. */
struct km_rng {
	uint64_t s[4];
};

/** Seed r (splitmix64 of seed: any seed, 0 included). @note Context: r's owner. */
void km_rng_seed(struct km_rng *r, uint64_t seed);

/** The next 64 random bits. @note Context: r's owner. */
uint64_t km_rng_next(struct km_rng *r);

/**
 * Uniform in [0, n) without modulo bias worth mentioning (Lemire's multiply-shift).
 * @note Context: r's owner.
 */
uint64_t km_rng_below(struct km_rng *r, uint64_t n);

/** Uniform double in [0, 1). @note Context: r's owner. */
double km_rng_double(struct km_rng *r);

#endif /* KM_WORKLOAD_H */
