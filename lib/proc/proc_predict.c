/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The worker's part of predictive prefetch (km_proc.h, DESIGN §5): the per-shard stream
 * detector, sampling of accesses, what became of each prefetch (marks in the cache), the
 * prefetch budget, and the notes for the control lcore's predictor.
 *
 * Cost on the request path, for shards whose values live on disk only: a GET runs the
 * shard's stream detector (a scan of the key's last digit run and a hash of its shape)
 * and a sampling test (one multiply); a sampled access copies its key into a note. A
 * store with values in DRAM has nothing to prefetch and never comes here.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proc_private.h"

#define INFLIGHT_DEFAULT 64
#define SAMPLE_EVERY_MAX (1u << 20)
#define GHOST_SIZE       1024 /* keys prefetches evicted, remembered for harm (power of 2) */
#define STREAM_KEYS      8    /* keys the detector may ask for per access */
#define PF_QUEUE         64   /* keys queued for km_proc_prefetch_run() */

static inline uint32_t
ghost_slot(uint64_t hash)
{
	return (uint32_t)((hash * 0x9e3779b97f4a7c15ULL) >> 54) & (GHOST_SIZE - 1);
}

/* A new note at the end of the buffer, header zeroed, or NULL (full: counted). */
struct km_proc_note *
proc_note_new(struct km_proc *p, uint8_t type)
{
	struct km_proc_note *n;

	if (p->notes_n == KM_PROC_NOTES_MAX) {
		p->cnt.notes_dropped++;
		return NULL;
	}
	n = &p->notes[(p->notes_head + p->notes_n++) % KM_PROC_NOTES_MAX];
	memset(n, 0, offsetof(struct km_proc_note, key));
	n->type = type;
	n->t_ns = p->now_ns;
	return n;
}

static void
note_key(struct km_proc_note *n, const uint8_t *key, uint16_t len)
{
	n->key_len = len;
	memcpy(n->key, key, len);
}

/* Whether mark names a prediction of the control lcore (it wants to hear of it). */
static inline int
mark_control(uint8_t mark)
{
	return mark != 0 && mark < KM_PROC_MARK_OPERATOR;
}

static void
outcome(struct km_proc *p, uint8_t mark, enum km_proc_pf_event ev, uint64_t shard_id)
{
	struct km_proc_note *n;

	if (!mark_control(mark) || (n = proc_note_new(p, KM_PROC_NOTE_OUTCOME)) == NULL)
		return;
	n->what = (uint8_t)ev;
	n->mark = mark;
	n->shard_id = shard_id;
}

/* The stream of shard sl a stream mark names. */
static inline struct km_stream *
mark_stream(struct km_proc_shard *sl, uint8_t mark)
{
	return &sl->stream[(mark >> 2) % KM_STREAM_SET];
}

/* What became of a prefetch of shard sl: to its stream, or to whoever else asked. */
static void
pf_event(struct km_proc *p, struct km_proc_shard *sl, uint8_t mark, enum km_proc_pf_event ev)
{
	static const enum km_stream_outcome to_stream[] = {
		[KM_PROC_PF_USED] = KM_STREAM_USED,
		[KM_PROC_PF_UNUSED] = KM_STREAM_UNUSED,
		[KM_PROC_PF_LATE] = KM_STREAM_LATE,
	};

	if (mark & KM_PROC_MARK_STREAM)
		km_stream_feedback(&p->sctx, mark_stream(sl, mark), to_stream[ev]);
	else
		outcome(p, mark, ev, sl->id);
}

void
proc_pf_used(struct km_proc *p, struct km_proc_shard *shd, uint8_t mark)
{
	pf_event(p, shd, mark, KM_PROC_PF_USED);
}

void
proc_pf_late(struct km_proc *p, struct km_proc_shard *shd, uint8_t mark)
{
	pf_event(p, shd, mark, KM_PROC_PF_LATE);
}

/* The cache tells of a marked value that left unused (tag: the shard's generation). */
static void
cache_unused(void *arg, uint8_t mark, uint64_t tag, const uint8_t *key, uint16_t len)
{
	struct km_proc *p = arg;
	struct km_proc_shard *sl;
	uint32_t i;

	(void)key;
	(void)len;
	if (p->closing)
		return;
	if (p->gen_ids[tag & (PROC_GEN_IDS - 1)].gen == tag) {
		sl = shard_find(p, p->gen_ids[tag & (PROC_GEN_IDS - 1)].id);
		if (sl != NULL && sl->gen == tag)
			pf_event(p, sl, mark, KM_PROC_PF_UNUSED);
		return;
	}
	/* Overwritten by a later shard's gen (over PROC_GEN_IDS attaches apart): look. */
	for (i = 0; i <= p->shards_mask; i++) {
		sl = &p->shards[i];
		if (sl->id != 0 && sl->gen == tag) {
			pf_event(p, sl, mark, KM_PROC_PF_UNUSED);
			return;
		}
	}
}

/* The cache evicts an entry: if a prefetched value is being cached, that is its harm. */
static void
cache_evicted(void *arg, uint64_t hash)
{
	struct km_proc *p = arg;

	if (p->pf_filling != 0)
		p->ghost[ghost_slot(hash)] =
			(struct proc_ghost){.hash = hash, .mark = p->pf_filling};
}

void
proc_ghost_clear(struct km_proc *p, uint64_t hash)
{
	struct proc_ghost *g = &p->ghost[ghost_slot(hash)];

	if (g->hash == hash)
		g->hash = 0;
}

int
proc_pf_init(struct km_proc *p)
{
	p->notes = calloc(KM_PROC_NOTES_MAX, sizeof(*p->notes));
	p->ghost = calloc(GHOST_SIZE, sizeof(*p->ghost));
	p->pfq = calloc(PF_QUEUE, sizeof(*p->pfq));
	p->pfq_mark = calloc(PF_QUEUE, sizeof(*p->pfq_mark));
	if (p->notes == NULL || p->ghost == NULL || p->pfq == NULL || p->pfq_mark == NULL)
		return -ENOMEM;
	p->pf = (struct km_proc_pf_params){
		.inflight_max = INFLIGHT_DEFAULT,
		.watermark = p->pending_max * 3 / 4,
	};
	km_stream_ctx_init(&p->sctx, NULL);
	km_cache_on_unused(p->cache, cache_unused, p);
	km_cache_on_evict(p->cache, cache_evicted, p);
	/* Measured offline (docs/benchmarks.md, Prediction): a prefetch issued well ahead
	 * survives a small cache only if the hand passes it once. */
	km_cache_prefetch_visited(p->cache, 1);
	return 0;
}

void
proc_pf_fini(struct km_proc *p)
{
	free(p->notes);
	free(p->ghost);
	free(p->pfq);
	free(p->pfq_mark);
	p->notes = NULL;
	p->ghost = NULL;
	p->pfq = NULL;
	p->pfq_mark = NULL;
}

int
km_proc_prefetch_params(struct km_proc *p, const struct km_proc_pf_params *pp)
{
	uint32_t every = 1;

	if (pp == NULL || pp->sample_every > SAMPLE_EVERY_MAX)
		return -EINVAL;
	while (every < pp->sample_every)
		every *= 2;
	p->pf = *pp;
	p->pf.sample_every = pp->sample_every == 0 ? 0 : every;
	p->sample_mask = every - 1;
	if (p->pf.inflight_max == 0)
		p->pf.inflight_max = INFLIGHT_DEFAULT;
	if (p->pf.watermark == 0)
		p->pf.watermark = p->pending_max * 3 / 4;
	p->sctx.p.depth_max = pp->depth_max != 0 ? pp->depth_max : 64;
	if (p->sctx.p.depth_max < p->sctx.p.depth_min)
		p->sctx.p.depth_max = p->sctx.p.depth_min;
	return 0;
}

void
km_proc_time(struct km_proc *p, uint64_t now_ns)
{
	p->now_ns = now_ns;
	/* Once per burst, not a division per request (proc_cookie_valid()). slot_ns is 0
	 * only before km_hello_init(): no cookie is valid or handed out then anyway. */
	if (p->hello != NULL && p->hello->slot_ns != 0)
		p->hello_slot = now_ns / p->hello->slot_ns;
}

unsigned int
km_proc_notes(struct km_proc *p, struct km_proc_note *out, unsigned int max)
{
	unsigned int n = 0;

	while (n < max && p->notes_n != 0) {
		const struct km_proc_note *x = &p->notes[p->notes_head];

		/* The header and the key's bytes only: most of key[] is unused. */
		memcpy(&out[n++], x, offsetof(struct km_proc_note, key) + x->key_len);
		p->notes_head = (p->notes_head + 1) % KM_PROC_NOTES_MAX;
		p->notes_n--;
	}
	return n;
}

/* A prefetch read completed: its latency sets the detectors' distance. */
void
proc_pf_read_done(struct km_proc *p, uint64_t t_start)
{
	uint64_t lat = p->now_ns > t_start ? p->now_ns - t_start : 0;

	if (p->read_ns == 0)
		p->read_ns = lat;
	else
		p->read_ns = p->read_ns - p->read_ns / 8 + lat / 8;
	p->sctx.p.latency_ns = p->read_ns;
}

int
proc_prefetch(struct km_proc *p, const struct km_shardmap *map, const uint8_t *key, uint16_t len,
	uint8_t mark)
{
	struct km_proc_shard *sl;
	struct km_value_ref v;
	struct km_route rt;
	struct km_key k;
	int rc;

	if (len == 0 || len > KM_KEY_MAX || mark == 0)
		return -EINVAL;
	route_of(map, key, len, &rt);
	if (km_shard_owner_fast(rt.shard) != p->worker)
		return -EXDEV;
	sl = shard_find(p, km_shard_id_fast(rt.shard));
	if (sl == NULL || !sl->persistent)
		return 0;
	key_init(&k, key, len, &rt);
	if (km_cache_contains(p->cache, &k, sl->gen) || proc_read_pending(p, &k))
		return 0;
	/* Demand misses first: a prefetch never takes the last reads. */
	if (p->pf_inflight >= p->pf.inflight_max || p->nb_pend >= p->pf.watermark) {
		p->cnt.prefetch_refused++;
		return -EBUSY;
	}
	rc = proc_read_key(p, sl, &k, NULL, mark, &v);
	if (rc == 0) {
		/* In a write buffer: cache it as a prefetch all the same. */
		proc_cache_fill(p, &k, sl->gen, &v, mark);
		return 1;
	}
	return rc;
}

int
km_proc_prefetch_key(struct km_proc *p, const struct km_shardmap *map, const uint8_t *key,
	uint16_t len, uint8_t mark)
{
	int rc = proc_prefetch(p, map, key, len, mark);

	return rc == -EXDEV ? 0 : rc; /* owned elsewhere (the map changed): nothing to do */
}

/* Feed the shard's stream detector; read what it asks for, or forward it to its owner. */
static void
stream_step(struct km_proc *p, const struct km_shardmap *map, struct km_proc_shard *shd,
	const struct km_key *k)
{
	unsigned int i, nb, slot, room = PF_QUEUE - p->pfq_n;
	uint8_t mark;

	(void)map;
	/* Queued, read by km_proc_prefetch_run() once the burst's replies are out. */
	nb = km_stream_observe_set(&p->sctx, shd->stream, KM_STREAM_SET, k->data, k->len, p->now_ns,
		&slot, &p->pfq[p->pfq_n], room < STREAM_KEYS ? room : STREAM_KEYS);
	if (nb == 0)
		return;
	mark = (uint8_t)(KM_PROC_MARK_STREAM | slot << 2 |
			 km_predict_stride_bin(shd->stream[slot].run));
	for (i = 0; i < nb; i++)
		p->pfq_mark[p->pfq_n + i] = mark;
	p->pfq_n += nb;
	p->cnt.stream_prefetches += nb;
}

unsigned int
km_proc_prefetch_run(struct km_proc *p, const struct km_shardmap *map)
{
	struct km_proc_note *n;
	unsigned int i, started = 0;
	int rc;

	for (i = 0; i < p->pfq_n; i++) {
		rc = proc_prefetch(p, map, p->pfq[i].key, p->pfq[i].len, p->pfq_mark[i]);
		if (rc == 1)
			started++;
		if (rc != -EXDEV || (n = proc_note_new(p, KM_PROC_NOTE_FORWARD)) == NULL)
			continue;
		p->cnt.stream_forwarded++;
		n->mark = p->pfq_mark[i];
		note_key(n, p->pfq[i].key, p->pfq[i].len);
	}
	p->pfq_n = 0;
	return started;
}

/* Whether the client of req is sampled: one in sample_every, by session, else by source. */
static inline int
sampled(const struct km_proc *p, const struct km_hdr *req, uint64_t src)
{
	uint64_t h = req->session != 0 ? req->session : src;

	if (p->pf.sample_every == 0)
		return 0;
	return (((h + 1) * 0xff51afd7ed558ccdULL) >> 40 & p->sample_mask) == 0;
}

void
proc_pf_access(struct km_proc *p, const struct km_shardmap *map, struct km_proc_shard *shd,
	const struct km_key *k, const struct km_hdr *req, uint64_t src, uint8_t acc)
{
	struct proc_ghost *g;
	struct km_proc_note *n;

	g = &p->ghost[ghost_slot(k->hash)];
	if (acc == KM_PROC_ACC_MISS && g->hash == k->hash && k->hash != 0) {
		/* A prefetch evicted this key, and it was wanted: that prefetch did harm
		 * (told to the control lcore when one of its predictions did it). */
		g->hash = 0;
		p->cnt.prefetch_harm++;
		if (g->mark <= KM_PREDICT_NB_SRC &&
			(n = proc_note_new(p, KM_PROC_NOTE_OUTCOME)) != NULL) {
			n->what = KM_PROC_PF_HARM;
			n->mark = g->mark;
			n->shard_id = shd->id;
			note_key(n, k->data, k->len);
		}
	}
	/* The streams watch what went to the disk, or was saved from it: a read-ahead keeps
	 * its stream going through the prefetched values it hits, and a value already cached
	 * needs no read-ahead (a run of them only restarts the stream). A GET served from
	 * the cache by an older read pays nothing for the detector. */
	if (p->pf.stream && (acc == KM_PROC_ACC_MISS || acc == KM_PROC_ACC_PREFETCH_HIT ||
				    acc == KM_PROC_ACC_LATE))
		stream_step(p, map, shd, k);
	if (!sampled(p, req, src) || (n = proc_note_new(p, KM_PROC_NOTE_SAMPLE)) == NULL)
		return;
	p->cnt.samples++;
	n->op = req->op;
	n->what = acc;
	n->session = req->session;
	n->shard_id = shd->id;
	n->src = src;
	note_key(n, k->data, k->len);
}
