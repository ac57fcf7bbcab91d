/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The partition shifter without an operator (shift.h): which routing parts (entities such
 * as user42) get an override, and when an automatic override is undone.
 *
 * Input: the accesses the workers sample ([crew] sampling: one GET/PUT/CAS/DEL in N on
 * each worker, as KM_PROC_NOTE_CREW notes drained by the mailbox thread). Each sampled
 * key's routing part is counted in a Space-Saving summary of ENT_MAX counters per
 * interval: a part holding more than 1/ENT_MAX of an interval's samples is always in it,
 * its count overestimated by at most the error recorded when it took its counter. For
 * each part, the parts one component longer (what an override with extra = 1 routes by)
 * are counted too, up to SUB_MAX distinct ones: an override only helps when the part's
 * load spreads over several of them (one hot key is for read copies, crew.c).
 *
 * Every [shift] interval_ms the control lcore judges the interval: a part whose
 * guaranteed count (count - error) reaches share_on % of a mean worker's samples, whose
 * rate reaches the balance threshold in force ([shards] balance_min_rate, derived from the
 * measured capacity by default) and whose samples spread gets an override (km_shift_add,
 * extra 1) after hysteresis intervals in a row, when keymapd has two workers or more and
 * a store with values in DRAM. An automatic override whose part stays below share_off %
 * (or under half the threshold, or idle) for undo_s seconds is undone (km_shift_remove):
 * longer than the way in, since an undo moves the keys back and a pause in the load is
 * not the end of a hot spot. The operator's overrides are never undone here, and a part the
 * operator undoes is forgotten.
 */

#define KM_LOG_COMP KM_LOG_CONTROL /* keymapd.h */

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <rte_cycles.h>

#include <xxhash.h>

#include <km_shardmap.h>

#include "cluster.h"
#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "shift.h"

#define ENT_MAX     64  /* routing parts counted per interval */
#define SUB_MAX     8   /* longer parts counted per routing part */
#define SAMPLES_MIN 32  /* samples of a part in an interval before it may be judged hot */
#define REFUSED_MAX 8   /* parts whose override was refused, remembered ... */
#define REFUSED_S   60  /* ... for so long, so that they are not tried every interval */
#define OPERATOR_S  600 /* a part the operator undid is left alone for so long */

/* One routing part in the interval's summary. */
struct entity {
	uint64_t hash;   /* XXH3-64 of the part: the override's name in the map */
	uint32_t count;  /* Space-Saving count (overestimate) */
	uint32_t error;  /* count it inherited when it took the counter */
	uint32_t nb_sub; /* distinct longer parts counted */
	uint32_t sub_other;
	uint64_t sub_hash[SUB_MAX];
	uint32_t sub_count[SUB_MAX];
	uint16_t len; /* bytes of the part; 0: it holds a NUL (not nameable) */
	char part[KM_KEY_MAX + 1];
};

/* A part on its way to an override, or overridden by this module. */
struct cand {
	uint64_t hash;
	uint64_t hot, cool; /* consecutive intervals over share_on / under share_off */
	uint8_t active;     /* its override was added here and is in the map */
	uint8_t hot_now;    /* the interval judged: over share_on (and the rest) */
	uint8_t cold_now;   /* ... under share_off or half the threshold, or no sample */
	char part[KM_KEY_MAX + 1];
};

static struct {
	uint8_t route_sep; /* [shards] route_sep and route_depth: set before any note */
	unsigned int route_depth;
	atomic_int on; /* whether notes are counted: set by the control lcore */
	/* Written by the thread draining the notes, under sa_lock. */
	struct entity ent[ENT_MAX];
	uint32_t nb_ent;
	uint64_t samples; /* this interval, all workers */
	/* Control lcore only: the interval judged (taken out of the above under the lock,
	 * judged without it: adding an override waits for an RCU grace period, which the
	 * thread draining the notes, an RCU reader, must be free to end). */
	struct entity judge[ENT_MAX];
	uint32_t nb_judge;
	uint64_t judge_samples;
	struct cand cand[KM_OVERRIDES_MAX];
	uint32_t nb_cand;
	struct {
		uint64_t hash, until_tsc;
	} refused[REFUSED_MAX]; /* parts not tried again before until_tsc */
	uint64_t interval_tsc;
} sa;

static pthread_mutex_t sa_lock = PTHREAD_MUTEX_INITIALIZER;

static struct entity *
entity_take(uint64_t hash)
{
	struct entity *e, *min = NULL;
	uint32_t i, count = 0;

	for (i = 0; i < sa.nb_ent; i++) {
		e = &sa.ent[i];
		if (e->hash == hash)
			return e;
		if (min == NULL || e->count < min->count)
			min = e;
	}
	if (sa.nb_ent < ENT_MAX)
		e = &sa.ent[sa.nb_ent++];
	else {
		/* Space-Saving: the smallest counter goes to the newcomer, its count kept as
		 * the newcomer's error. */
		e = min;
		count = min->count;
	}
	memset(e, 0, offsetof(struct entity, part));
	e->hash = hash;
	e->count = count;
	e->error = count;
	return e;
}

static void
sub_count(struct entity *e, uint64_t sub)
{
	uint32_t i;

	for (i = 0; i < e->nb_sub; i++)
		if (e->sub_hash[i] == sub) {
			e->sub_count[i]++;
			return;
		}
	if (e->nb_sub == SUB_MAX) {
		e->sub_other++;
		return;
	}
	e->sub_hash[e->nb_sub] = sub;
	e->sub_count[e->nb_sub++] = 1;
}

static int
can_shift(void)
{
	const struct km_store_ops *drv = km_store_driver(km_ctl.conf.store_driver);

	/* A cluster map has no override (the placer's map: docs/cluster.md). */
	return km_dp.nb_workers >= 2 && drv != NULL && drv->read_start == NULL && !km_cluster_on();
}

void
km_shift_auto_init(const struct km_conf *c)
{
	sa.route_sep = (uint8_t)c->route_sep;
	sa.route_depth = (unsigned int)c->route_depth;
	sa.interval_tsc = rte_get_timer_cycles();
	atomic_store_explicit(&sa.on, c->shift_auto && can_shift(), memory_order_relaxed);
}

void
km_shift_note(const struct km_proc_note *n)
{
	size_t plen, slen;
	struct entity *e;

	if (n->key_len == 0 || n->key_len > KM_KEY_MAX ||
		!atomic_load_explicit(&sa.on, memory_order_relaxed))
		return;
	plen = km_shardmap_part_len(sa.route_sep, sa.route_depth, n->key, n->key_len);
	slen = km_shardmap_part_len(sa.route_sep, sa.route_depth + 1, n->key, n->key_len);
	pthread_mutex_lock(&sa_lock);
	sa.samples++;
	e = entity_take(XXH3_64bits(n->key, plen));
	e->count++;
	if (e->count - e->error == 1) {
		/* First sample of this tenure: name the part. */
		e->len = plen == 0 || memchr(n->key, '\0', plen) != NULL ? 0 : (uint16_t)plen;
		memcpy(e->part, n->key, e->len);
		e->part[e->len] = '\0';
	}
	sub_count(e, XXH3_64bits(n->key, slen));
	pthread_mutex_unlock(&sa_lock);
}

/* Whether an override of e would spread it: two longer parts or more, none holding
 * half of the samples e took since it has its counter. */
static int
spreads(const struct entity *e)
{
	uint32_t seen = e->count - e->error, i;

	if (e->nb_sub < 2)
		return 0;
	for (i = 0; i < e->nb_sub; i++)
		if ((uint64_t)e->sub_count[i] * 2 > seen)
			return 0;
	return 1;
}

static struct cand *
cand_find(uint64_t hash)
{
	uint32_t i;

	for (i = 0; i < sa.nb_cand; i++)
		if (sa.cand[i].hash == hash)
			return &sa.cand[i];
	return NULL;
}

static void
cand_drop(struct cand *c)
{
	*c = sa.cand[--sa.nb_cand];
}

/*
 * Requests/s that n of the interval's samples stand for: their share of the samples times
 * the requests/s of all workers (the workers' notes are bounded, so samples x sampling
 * would undercount a fast worker).
 */
static double
rate_of(uint64_t n)
{
	return sa.judge_samples == 0 ? 0
				     : (double)n / (double)sa.judge_samples * km_ctl.requests_per_s;
}

static int
refused(uint64_t hash, uint64_t now)
{
	uint32_t i;

	for (i = 0; i < REFUSED_MAX; i++)
		if (sa.refused[i].hash == hash && now < sa.refused[i].until_tsc)
			return 1;
	return 0;
}

static void
refuse(uint64_t hash, uint64_t now, uint64_t seconds)
{
	uint32_t i, old = 0;

	for (i = 0; i < REFUSED_MAX; i++)
		if (sa.refused[i].until_tsc < sa.refused[old].until_tsc)
			old = i;
	sa.refused[old].hash = hash;
	sa.refused[old].until_tsc = now + seconds * rte_get_timer_hz();
}

static void
add_override(struct cand *c)
{
	char err[320];
	int rc = km_shift_add(c->part, 1, err, sizeof(err));

	if (rc == 0) {
		c->active = 1;
		c->cool = 0;
		km_ctl.cnt.shift_auto_adds++;
		KM_LOG(NOTICE, "partition shifter: routing part %s is hot, its keys spread",
			c->part);
		return;
	}
	if (rc == -EBUSY) {
		km_ctl.cnt.shift_auto_deferred++; /* a split or merge copying: next interval */
		return;
	}
	/* The operator's override, a full map, a part that cannot be one: not ours, and not
	 * tried again for a while. */
	km_ctl.cnt.shift_auto_refused++;
	KM_LOG(INFO, "partition shifter: %s (not tried again for %d s)", err, REFUSED_S);
	refuse(c->hash, rte_get_timer_cycles(), REFUSED_S);
	cand_drop(c);
}

static void
remove_override(struct cand *c)
{
	char err[320];
	int rc = km_shift_remove(c->part, err, sizeof(err));

	if (rc == -EBUSY) {
		km_ctl.cnt.shift_auto_deferred++;
		return;
	}
	if (rc == 0) {
		km_ctl.cnt.shift_auto_removes++;
		KM_LOG(NOTICE, "partition shifter: routing part %s cooled, override undone",
			c->part);
	} else
		KM_LOG(INFO, "partition shifter: %s", err);
	cand_drop(c);
}

/* Act on a candidate's verdict. */
static void
act(struct cand *c, const struct km_conf *conf)
{
	if (!c->active) {
		c->hot = c->hot_now ? c->hot + 1 : 0;
		if (c->hot == 0)
			cand_drop(c);
		else if (c->hot >= conf->shift_hysteresis)
			add_override(c);
		return;
	}
	c->cool = c->cold_now ? c->cool + 1 : 0;
	if (c->cool * conf->shift_interval_ms >= conf->shift_undo_s * 1000)
		remove_override(c);
}

/* Judge the interval taken into sa.judge. Control lcore. */
static void
decide(void)
{
	const struct km_conf *conf = &km_ctl.conf;
	const struct km_shardmap *m = km_map_current;
	double floor = (double)km_ctl.derived.balance_min_rate;
	/* As the other automatic policies: off while the floor is derived from a capacity
	 * not measured yet. */
	int measured = conf->balance_min_rate != KM_CONF_AUTO || km_ctl.derived.capacity > 0;
	uint64_t total = sa.judge_samples, nw = km_dp.nb_workers, now = rte_get_timer_cycles();
	uint32_t i;

	/* A part not in the summary had no sample at all: cold. */
	for (i = 0; i < sa.nb_cand; i++) {
		sa.cand[i].hot_now = 0;
		sa.cand[i].cold_now = 1;
	}
	for (i = 0; i < sa.nb_judge; i++) {
		const struct entity *e = &sa.judge[i];
		const struct km_override_info *o = km_shardmap_override_find(m, e->hash);
		uint64_t est = e->count - e->error;
		struct cand *c = cand_find(e->hash);
		int hot = measured && est >= SAMPLES_MIN &&
			  est * 100 * nw >= conf->shift_share_on * total && rate_of(est) >= floor &&
			  spreads(e) && e->len != 0;

		if (c == NULL) {
			/* Cool, no room, or overridden by the operator. */
			if (!hot || sa.nb_cand == KM_OVERRIDES_MAX ||
				(o != NULL && o->state != KM_OVR_REVERTING) ||
				refused(e->hash, now))
				continue;
			c = &sa.cand[sa.nb_cand++];
			memset(c, 0, sizeof(*c));
			c->hash = e->hash;
			memcpy(c->part, e->part, (size_t)e->len + 1);
		}
		c->hot_now = (uint8_t)hot;
		c->cold_now =
			est * 100 * nw < conf->shift_share_off * total || rate_of(est) * 2 < floor;
	}
	/* Backwards: a candidate dropped takes the last one's place, already judged. */
	for (i = sa.nb_cand; i-- > 0;)
		act(&sa.cand[i], conf);
}

void
km_shift_auto_tick(void)
{
	const struct km_conf *conf = &km_ctl.conf;
	const struct km_shardmap *m = km_map_current;
	uint64_t now = rte_get_timer_cycles();
	int on = conf->shift_auto && can_shift();
	uint32_t i;

	if (now - sa.interval_tsc < conf->shift_interval_ms * rte_get_timer_hz() / 1000)
		return;
	sa.interval_tsc = now;
	atomic_store_explicit(&sa.on, on, memory_order_relaxed);
	pthread_mutex_lock(&sa_lock);
	memcpy(sa.judge, sa.ent, sa.nb_ent * sizeof(sa.ent[0]));
	sa.nb_judge = sa.nb_ent;
	sa.judge_samples = sa.samples;
	sa.nb_ent = 0;
	sa.samples = 0;
	pthread_mutex_unlock(&sa_lock);
	/* An automatic override the operator undid is forgotten. */
	for (i = sa.nb_cand; i-- > 0;) {
		const struct km_override_info *o = km_shardmap_override_find(m, sa.cand[i].hash);

		if (sa.cand[i].active && (o == NULL || o->state == KM_OVR_REVERTING))
			cand_drop(&sa.cand[i]);
	}
	if (on)
		decide();
	else
		/* Off: the automatic overrides go (the operator's stay). */
		for (i = sa.nb_cand; i-- > 0;)
			if (!sa.cand[i].active)
				cand_drop(&sa.cand[i]);
			else
				remove_override(&sa.cand[i]);
}

void
km_shift_auto_forget(uint64_t hash, int removed)
{
	struct cand *c = cand_find(hash);

	if (c != NULL)
		cand_drop(c);
	if (removed)
		refuse(hash, rte_get_timer_cycles(), OPERATOR_S);
}

int
km_shift_auto_sampling(const struct km_conf *c)
{
	/* One worker: nobody to serve a read copy or an entity's spread keys. */
	return km_dp.nb_workers >= 2 && (c->crew_enable || c->shift_auto);
}

int
km_shift_is_auto(uint64_t hash)
{
	const struct cand *c;

	c = cand_find(hash);
	return c != NULL && c->active;
}
