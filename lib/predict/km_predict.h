/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_PREDICT_H
#define KM_PREDICT_H

/**
 * @file
 * Online access predictor: observes access records and returns the keys likely to be read
 * next, each with a confidence, merged and ranked. The same code runs in keymapd (fed by the
 * workers' sampled records) and in keymap-bench's offline evaluator.
 *
 * Models (enum km_predict_model, each enabled by a bit of params.models):
 * - SUCC: order-1 Markov, key -> top-4 next keys, learned per context (the session when
 *   the record has one, else its stream);
 * - COACC: keys read together within a window of the context's last 4 accesses (A with Z),
 *   symmetric, top-4 per key;
 * - ENTITY: the other parts of the same entity (same routing part: the bytes before the
 *   first '/'), top-6 per entity;
 * - STRIDE: sequential/stride on the last digit run, by the stream detector (km_stream.h)
 *   run per context; keymapd runs the detector on the owner worker instead and leaves
 *   this bit off;
 * - TEMPLATE: a key's template masks its digit runs (`user42/cart` -> `user#/cart`);
 *   template -> top-4 next templates learned across all contexts and instantiated with the
 *   current key's digit runs, so an entity never seen before is still predicted.
 * Counts decay: every half_life observed accesses they halve (lazily, per entry), so a
 * changed pattern takes over within a few half-lives.
 *
 * Ensemble: every prediction carries a source (struct km_prediction.src: the model and a
 * context bin of its raw score, e.g. the share of a successor among all successors). The
 * confidence is the measured precision of that source, (used + 1/2) / (issued + 1) over
 * decayed counts, fed back through km_predict_feedback(): ISSUED when the caller sends the
 * prefetch, USED when the prefetched entry is hit before eviction (UNUSED, evicted unused,
 * only counts). A source below params.floor stops issuing; its counts decay back towards
 * the prior, which probes it again now and then (a few predictions per half-life). The same
 * key predicted by several sources is one prediction with confidence 1 - prod(1 - c_i) and
 * the strongest source's src.
 *
 * Memory: bounded by params.mem_bytes, split between the key table (KM_PREDICT_KEY_BYTES per
 * tracked key, 70 %), entities (15 %), templates (5 %) and contexts (10 %); all tables are
 * set-associative and replace their least used entry, so a flood of distinct keys cannot
 * grow them. Keys longer than KM_PREDICT_KEY_INLINE bytes are not tracked (counted).
 *
 * Concurrency: a predictor is single-threaded: one owner thread calls every function.
 */

#include <stddef.h>
#include <stdint.h>

#include <km_stream.h>
#include <km_util.h>

#define KM_PREDICT_KEY_INLINE 40  /* longest key tracked */
#define KM_PREDICT_KEY_BYTES  160 /* key table bytes per tracked key */
#define KM_PREDICT_MEM_MIN    (64u << 10)
#define KM_PREDICT_BINS       4 /* context bins per model */

enum km_predict_model {
	KM_PREDICT_SUCC = 0,
	KM_PREDICT_COACC,
	KM_PREDICT_ENTITY,
	KM_PREDICT_STRIDE,
	KM_PREDICT_TEMPLATE,
	KM_PREDICT_NB_MODELS,
};

#define KM_PREDICT_ALL ((1u << KM_PREDICT_NB_MODELS) - 1)

/** A prediction's source: model and context bin, the unit of measured precision. */
#define KM_PREDICT_SRC(model, bin) ((uint8_t)((model)*KM_PREDICT_BINS + (bin)))
#define KM_PREDICT_SRC_MODEL(src)  ((src) / KM_PREDICT_BINS)
#define KM_PREDICT_NB_SRC          (KM_PREDICT_NB_MODELS * KM_PREDICT_BINS)

enum km_predict_op {
	KM_PREDICT_GET = 0,
	KM_PREDICT_PUT,
	KM_PREDICT_DEL,
};

/** One access record (what a worker samples). */
struct km_access {
	const uint8_t *key;
	uint16_t len;
	uint64_t session; /* 0: none */
	uint64_t stream;  /* client or worker stream, used when there is no session */
	uint8_t op;       /* enum km_predict_op */
	uint8_t hit;      /* served from the cache */
	uint64_t t_ns;
};

struct km_prediction {
	float conf;    /* [0, 1] */
	uint8_t model; /* enum km_predict_model of the strongest source */
	uint8_t src;   /* KM_PREDICT_SRC(): give it back to km_predict_feedback() */
	uint16_t len;
	uint64_t hash; /* km_predict_hash() of the key */
	uint8_t key[KM_KEY_MAX];
};

struct km_predict_params {
	uint64_t mem_bytes;      /* cap of all tables, >= KM_PREDICT_MEM_MIN (default 32 MiB) */
	uint32_t models;         /* bitmask of 1 << enum km_predict_model (default all) */
	uint32_t half_life;      /* observed accesses per halving of counts (default 65536) */
	uint32_t prec_half_life; /* same for the precision counts (default 16384) */
	float floor;             /* a source below this precision stops issuing (default 0.15) */
	float min_share;         /* raw scores below this are not predicted (default 0.05) */
	uint64_t window_ns;      /* co-access window in time (0: the last 4 accesses only) */
	struct km_stream_params stream; /* the STRIDE model's detector */
};

/** Per-source measured figures (decayed) and totals. */
struct km_predict_stats {
	uint64_t observed;
	uint64_t predicted;    /* predictions returned */
	uint64_t suppressed;   /* predictions of a source below the floor */
	uint64_t untracked;    /* keys too long to track */
	uint64_t key_replaced; /* key table entries replaced (memory cap at work) */
	uint64_t tracked_max;  /* key table capacity */
	uint64_t mem_bytes;    /* allocated for tables */
	uint64_t issued[KM_PREDICT_NB_SRC], used[KM_PREDICT_NB_SRC]; /* totals, not decayed */
};

struct km_predict;

/**
 * @param p NULL or parameters (zero fields take the defaults).
 * @return 0, -EINVAL (mem_bytes below KM_PREDICT_MEM_MIN, floor outside [0,1]), -ENOMEM.
 * @note Context: any thread; the predictor then belongs to the caller's thread.
 */
int km_predict_create(const struct km_predict_params *p, struct km_predict **out);

/**
 * NULL is allowed.
 * @note Context: the owner thread.
 */
void km_predict_destroy(struct km_predict *pr);

/**
 * Learn from one access and return what it makes likely next (only after a GET; writes
 * are learned from): at most max predictions, confidence descending, duplicates merged,
 * never the accessed key itself.
 * @return the number of predictions written (0..max), -EINVAL (NULL, empty key).
 * @note Context: the owner thread.
 */
int km_predict_observe(
	struct km_predict *pr, const struct km_access *a, struct km_prediction *out, unsigned max);

enum km_predict_fb {
	KM_PREDICT_ISSUED = 0, /* a prefetch of the prediction was sent */
	KM_PREDICT_USED,       /* the prefetched entry was hit before eviction */
	KM_PREDICT_UNUSED,     /* the prefetched entry was evicted (or invalidated) unused */
};

/**
 * Feed back what became of a prediction from source src.
 * @return 0, -EINVAL (src out of range).
 * @note Context: the owner thread.
 */
int km_predict_feedback(struct km_predict *pr, uint8_t src, enum km_predict_fb fb);

/**
 * The confidence a prediction of src gets now (its measured precision), for predictions
 * made outside the predictor (the worker's stream detector, with KM_PREDICT_STRIDE).
 * @note Context: the owner thread.
 */
float km_predict_confidence(const struct km_predict *pr, uint8_t src);

/**
 * The context bin of a stream window position (1 = next key): used by the owner worker to
 * give its detector's prefetches a src.
 * @note Context: any thread.
 */
uint8_t km_predict_stride_bin(unsigned run);

/**
 * Figures so far.
 * @note Context: the owner thread.
 */
void km_predict_stats(const struct km_predict *pr, struct km_predict_stats *st);

/** One learned transition: after `from`, `to` (a key, or a template for TEMPLATE). */
struct km_predict_transition {
	uint8_t model; /* KM_PREDICT_SUCC or KM_PREDICT_TEMPLATE */
	uint8_t from_len, to_len;
	uint16_t count; /* decayed count of the transition */
	float share;    /* count / all transitions out of `from` */
	uint8_t from[KM_PREDICT_KEY_INLINE];
	uint8_t to[KM_PREDICT_KEY_INLINE];
};

/**
 * The strongest learned transitions (successors and template transitions), by decayed
 * count, descending. Scans every table: for an operator's command, not per access.
 * @return the number written to out (0..max).
 * @note Context: the owner thread.
 */
unsigned km_predict_top(
	const struct km_predict *pr, struct km_predict_transition *out, unsigned max);

/**
 * The key hash lib/predict uses (the scheduler's filter and ghost list take it).
 * @note Context: any thread.
 */
uint64_t km_predict_hash(const uint8_t *key, uint16_t len);

/** Name of a model ("succ", "coacc", "entity", "stride", "template"), NULL if out of range. */
const char *km_predict_model_name(unsigned model);

/**
 * Parse a comma-separated list of model names (or "all", "none") into a bitmask.
 * @return 0, -EINVAL.
 * @note Context: any thread.
 */
int km_predict_models_parse(const char *s, uint32_t *mask);

#endif /* KM_PREDICT_H */
