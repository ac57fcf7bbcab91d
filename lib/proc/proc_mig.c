/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Incremental split and merge (see km_proc.h): the owner copies its shard into new stores
 * a little at a time between bursts, serving every request from the old store meanwhile,
 * and repeats each write it applies there in the copy. Invariant: every entry of the copy
 * is an entry of the source, with the same value and version (copies take the source's
 * current entry; writes are repeated; deletions too). So once a walk has visited the whole
 * source and the counts agree, the copy is the source; a walk that missed entries (a driver
 * may miss one written while it walks: km_store.h, walk_step) shows it in the counts and
 * walks again.
 * The swap (km_proc_mig_finish) is one loop boundary: no request is ever answered BUSY for
 * it, and requests routed by a map that does not show the new shards yet find them through
 * proc_shard_resharded().
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proc_private.h"

#define MIG_STEP_ENTRIES 256 /* entries (mem: slots) visited per loop iteration */
#define MIG_PASSES_MAX   8   /* walks of the whole source before giving up */

struct proc_mig {
	uint8_t kind;  /* enum km_mig_kind */
	uint8_t phase; /* enum km_mig_phase */
	int err;
	uint32_t nb_src, nb_dst;
	uint64_t src[2], dst[2];
	struct km_store *dst_store[2];
	unsigned int bit; /* split: bit of the routing hash that picks the child */
	uint32_t cur;     /* source being walked */
	uint32_t passes;
	struct km_walk_pos pos;
	const struct km_shardmap *map; /* during a step: the routing of the walk's keys */
	uint64_t copied, mirrored;
	uint8_t swapping; /* km_proc_mig_finish() detaches the sources */
	/* The new shards' at-most-once indexes, copied from the sources' while the stores
	 * are (dlog_precopy): pre[i] for dst[i]; dpos[j]: how far source j's is copied. */
	struct proc_dlog pre[2];
	uint32_t dpos[2];
};

static int dlog_precopy(const struct km_proc *p, struct proc_mig *m,
	const struct proc_dlog *const src[2], uint32_t budget);

#define DLOG_COPY_STEP 512 /* listings copied per loop iteration */

static void
progress_publish(struct km_proc *p)
{
	const struct proc_mig *m = p->mig;
	struct km_store_stats st;
	uint64_t src = 0, dst = 0;
	uint32_t i;

	for (i = 0; m != NULL && i < m->nb_src; i++) {
		struct km_proc_shard *sl = shard_find(p, m->src[i]);

		if (sl != NULL) {
			km_store_stats(sl->store, &st);
			src += st.keys - st.damaged_keys;
		}
	}
	for (i = 0; m != NULL && i < m->nb_dst; i++) {
		km_store_stats(m->dst_store[i], &st);
		dst += st.keys;
	}
	__atomic_store_n(&p->migp.phase, m != NULL ? m->phase : KM_MIG_NONE, __ATOMIC_RELAXED);
	__atomic_store_n(&p->migp.err, m != NULL ? m->err : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&p->migp.src_keys, src, __ATOMIC_RELAXED);
	__atomic_store_n(&p->migp.dst_keys, dst, __ATOMIC_RELAXED);
	__atomic_store_n(&p->migp.copied, m != NULL ? m->copied : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&p->migp.mirrored, m != NULL ? m->mirrored : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&p->migp.passes, m != NULL ? m->passes : 0, __ATOMIC_RELAXED);
}

int
km_proc_mig_active(const struct km_proc *p)
{
	return p->mig != NULL;
}

void
km_proc_mig_progress(const struct km_proc *p, struct km_mig_progress *out)
{
	out->phase = __atomic_load_n(&p->migp.phase, __ATOMIC_RELAXED);
	out->err = __atomic_load_n(&p->migp.err, __ATOMIC_RELAXED);
	out->src_keys = __atomic_load_n(&p->migp.src_keys, __ATOMIC_RELAXED);
	out->dst_keys = __atomic_load_n(&p->migp.dst_keys, __ATOMIC_RELAXED);
	out->copied = __atomic_load_n(&p->migp.copied, __ATOMIC_RELAXED);
	out->mirrored = __atomic_load_n(&p->migp.mirrored, __ATOMIC_RELAXED);
	out->passes = __atomic_load_n(&p->migp.passes, __ATOMIC_RELAXED);
}

static void
mig_fail(struct km_proc *p, int err)
{
	if (p->mig->phase != KM_MIG_FAILED) {
		p->mig->phase = KM_MIG_FAILED;
		p->mig->err = err < 0 ? err : -EIO;
	}
}

int
km_proc_mig_start(struct km_proc *p, enum km_mig_kind kind, uint64_t id)
{
	struct proc_mig *m;
	struct km_store_stats st;
	uint64_t vbase = 0, keys = 0;
	uint32_t i;
	int rc = 0;

	if (p->mig != NULL || p->xp != NULL)
		return -EBUSY;
	if (id == 0 || (kind != KM_MIG_SPLIT && kind != KM_MIG_MERGE))
		return -EINVAL;
	if (kind == KM_MIG_SPLIT && km_shard_depth(id) >= KM_SHARD_DEPTH_MAX)
		return -ERANGE;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->kind = (uint8_t)kind;
	m->phase = KM_MIG_COPYING;
	if (kind == KM_MIG_SPLIT) {
		m->nb_src = 1;
		m->src[0] = id;
		m->nb_dst = 2;
		m->dst[0] = id * 2;
		m->dst[1] = id * 2 + 1;
		/* A shard of depth d owns the hashes whose top d bits are its prefix; its
		 * children differ in the next one. */
		m->bit = 63 - km_shard_depth(id);
	} else {
		m->nb_src = 2;
		m->src[0] = id * 2;
		m->src[1] = id * 2 + 1;
		m->nb_dst = 1;
		m->dst[0] = id;
	}
	for (i = 0; i < m->nb_src; i++) {
		struct km_proc_shard *sl = shard_find(p, m->src[i]);

		if (sl == NULL) {
			free(m);
			return -ENOENT;
		}
		km_store_stats(sl->store, &st);
		if (st.quarantined != 0) {
			free(m);
			return -EBADMSG;
		}
		if (st.version_last > vbase)
			vbase = st.version_last;
		keys += st.keys;
	}
	/* Sized for what they will hold (a split's halves: a little over half each). */
	if (kind == KM_MIG_SPLIT)
		keys = keys / 2 + keys / 8;
	for (i = 0; i < m->nb_dst && rc == 0; i++)
		rc = km_proc_store_new_sized(p, m->dst[i], vbase, keys, &m->dst_store[i]);
	if (rc < 0) {
		for (i = 0; i < m->nb_dst; i++)
			km_store_discard(m->dst_store[i]);
		free(m);
		return rc;
	}
	p->mig = m;
	progress_publish(p);
	return 0;
}

/* The copy a key of a source belongs in. */
static struct km_store *
mig_target(const struct proc_mig *m, const struct km_shardmap *map, const struct km_key *k)
{
	if (m->kind == KM_MIG_MERGE)
		return m->dst_store[0];
	return m->dst_store[(km_shardmap_hash(map, k->data, k->len) >> m->bit) & 1];
}

static int
mig_copy_one(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct km_proc *p = arg;
	struct proc_mig *m = p->mig;
	int rc;

	rc = km_store_load(mig_target(m, m->map, k), k, v->data, v->len, v->version);
	if (rc == 0) {
		m->copied++;
		p->cnt.mig_copied++;
	}
	return rc;
}

static int
mig_is_src(const struct proc_mig *m, uint64_t shard_id)
{
	return m->src[0] == shard_id || (m->nb_src == 2 && m->src[1] == shard_id);
}

void
proc_mig_mirror(struct km_proc *p, const struct km_shardmap *map, uint64_t shard_id,
	const struct km_key *k, uint8_t op, const void *val, uint32_t len, uint64_t version)
{
	struct proc_mig *m = p->mig;
	struct km_store *t;
	uint64_t v;
	int rc;

	if (!mig_is_src(m, shard_id) || m->phase == KM_MIG_FAILED)
		return;
	t = mig_target(m, map, k);
	if (op == KM_OP_DEL) {
		rc = km_store_del(t, k, KM_VERSION_ANY, &v);
		if (rc == -ENOENT)
			rc = 0; /* not copied yet: nothing to repeat */
	} else {
		rc = km_store_load(t, k, val, len, version);
	}
	if (rc < 0)
		mig_fail(p, rc);
	else {
		m->mirrored++;
		p->cnt.mig_mirrored++;
	}
}

void
proc_mig_durable_failed(struct km_proc *p, uint64_t shard_id)
{
	/* The source rolled writes back that the copy holds: the copy is wrong. */
	if (p->mig != NULL && mig_is_src(p->mig, shard_id))
		mig_fail(p, -EIO);
}

void
proc_mig_detaching(struct km_proc *p, uint64_t shard_id)
{
	/* A source handed away (not by the swap): the copy has no source any more. */
	if (p->mig != NULL && !p->mig->swapping && mig_is_src(p->mig, shard_id))
		km_proc_mig_cancel(p);
}

/* Whether the copies hold every entry of the sources. */
static int
mig_complete(struct km_proc *p)
{
	progress_publish(p);
	/* Never more: every entry of a copy is one of the sources'. */
	return p->migp.dst_keys == p->migp.src_keys;
}

unsigned int
km_proc_mig_step(struct km_proc *p, const struct km_shardmap *map)
{
	struct proc_mig *m = p->mig;
	const struct proc_dlog *srcl[2] = {NULL, NULL};
	struct km_proc_shard *sl;
	uint64_t before;
	uint32_t i;
	int rc;

	if (m == NULL || (m->phase != KM_MIG_COPYING && m->phase != KM_MIG_READY))
		return 0;
	for (i = 0; i < m->nb_src; i++) {
		sl = shard_find(p, m->src[i]);
		if (sl == NULL) {
			mig_fail(p, -ENOENT);
			progress_publish(p);
			return 0;
		}
		srcl[i] = &sl->dlog;
	}
	/* The indexes first, then the stores: at the swap only what was listed since the
	 * last step is left to copy. */
	rc = dlog_precopy(p, m, srcl, DLOG_COPY_STEP);
	if (rc < 0) {
		mig_fail(p, rc);
		progress_publish(p);
		return 0;
	}
	if (rc == 0 && m->phase == KM_MIG_COPYING)
		return 1;
	/* Whole: the listings made until the swap are copied as they come. */
	if (m->phase == KM_MIG_READY)
		return 0;
	sl = shard_find(p, m->src[m->cur]);
	before = m->pos.pos;
	m->map = map;
	rc = km_store_walk_step(sl->store, &m->pos, MIG_STEP_ENTRIES, mig_copy_one, p);
	m->map = NULL;
	if (rc < 0 || rc > 1) {
		mig_fail(p, rc < 0 ? rc : -EIO);
	} else if (rc == 0) {
		m->pos = (struct km_walk_pos){0};
		if (++m->cur == m->nb_src) {
			m->cur = 0;
			m->passes++;
			if (mig_complete(p))
				m->phase = KM_MIG_READY;
			else if (m->passes >= MIG_PASSES_MAX)
				mig_fail(p, -EAGAIN);
		}
	}
	progress_publish(p);
	return m->phase == KM_MIG_COPYING && (rc != 1 || m->pos.pos != before);
}

/* Drop the copies and forget the migration (the sources serve on). */
void
km_proc_mig_cancel(struct km_proc *p)
{
	uint32_t i;

	if (p->mig == NULL)
		return;
	for (i = 0; i < p->mig->nb_dst; i++) {
		km_store_discard(p->mig->dst_store[i]);
		free(p->mig->pre[i].e);
	}
	free(p->mig);
	p->mig = NULL;
	progress_publish(p);
}

/* Whether a routing hash falls in shard id. */
static int
shard_holds(uint64_t id, uint64_t route_hash)
{
	unsigned int d = km_shard_depth(id);

	return d == 0 || route_hash >> (64 - d) == (id ^ ((uint64_t)1 << d));
}

#define DLOG_PREFETCH 8  /* entries a walk of an index reads ahead */
#define DLOG_MIN      64 /* listings of a shard's index at least */
#define DLOG_STEP     4  /* listings a compaction pass examines per append */
#define DLOG_AHEAD    16 /* listings a pass prefetches the entry of ahead */

/* Whether listing i of index l (of shard id) is live (struct proc_dlog). */
static inline int
dlog_live(const struct km_proc *p, const struct proc_dlog *l, uint64_t id, uint32_t i)
{
	const struct dedup_entry *e = &p->dedup[l->e[i].slot];

	return e->valid && e->dseq == l->e[i].seq && shard_holds(id, e->route_hash);
}

#define DLOG_CAP_MAX (UINT32_C(1) << 28) /* listings of one index at most */

/* Resize l to cap listings (at least n; at most DLOG_CAP_MAX). @return 0, or -ENOMEM (l
 * unchanged). */
static int
dlog_resize(struct proc_dlog *l, uint32_t cap)
{
	struct proc_dlog_ent *t;

	if (cap > DLOG_CAP_MAX)
		return -ENOMEM;
	t = realloc(l->e, (size_t)cap * sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	l->e = t;
	l->cap = cap;
	return 0;
}

/* Room for one more listing in l (doubling). @return 0, -ENOMEM. */
static int
dlog_room(struct proc_dlog *l)
{
	if (l->n < l->cap)
		return 0;
	return dlog_resize(l, l->cap < DLOG_MIN ? DLOG_MIN : l->cap * 2);
}

/*
 * Up to steps listings of a compaction pass over l (of shard id): started once l reached
 * l->next; at its end what follows the kept listings is gone, the next pass comes once as
 * many again were appended (amortized O(1) per append) and the array shrinks if it kept
 * little.
 */
static void
dlog_pass(const struct km_proc *p, struct proc_dlog *l, uint64_t id, uint32_t steps)
{
	uint32_t k;

	if (!l->pass && l->n >= l->next && l->n != 0) {
		l->pass = 1;
		l->keep = l->scan = 0;
	}
	for (k = 0; l->pass && k < steps; k++) {
		if (l->scan == l->n) {
			l->pass = 0;
			l->n = l->keep;
			l->next = l->keep * 2 < DLOG_MIN ? DLOG_MIN : l->keep * 2;
			if (l->cap > 4 * l->next)
				(void)dlog_resize(
					l, 2 * l->next); /* smaller: cannot fail for long */
			break;
		}
		if (l->scan + DLOG_AHEAD < l->n)
			proc_prefetch_dedup(&p->dedup[l->e[l->scan + DLOG_AHEAD].slot]);
		if (dlog_live(p, l, id, l->scan))
			l->e[l->keep++] = l->e[l->scan];
		l->scan++;
	}
}

/*
 * Copy up to budget more listings of the sources' indexes src[] into the new shards'
 * (m->pre): only live ones (a dead listing stays dead: numbers only grow), each into the
 * new shard that holds its entry (a split's half, a merge's parent); the listings a
 * source's paused pass found dead are skipped (copied, they would be live twice). The
 * copies are compacted as they grow, as a shard's own index is.
 * @return 1: all copied; 0: more to copy; -ENOMEM.
 */
static int
dlog_precopy(const struct km_proc *p, struct proc_mig *m, const struct proc_dlog *const src[2],
	uint32_t budget)
{
	uint32_t i, j;

	for (j = 0; j < m->nb_src; j++) {
		const struct proc_dlog *l = src[j];

		for (; m->dpos[j] < l->n && budget > 0; m->dpos[j]++, budget--) {
			const struct dedup_entry *e;
			struct proc_dlog *d;

			if (l->pass && m->dpos[j] >= l->keep && m->dpos[j] < l->scan)
				m->dpos[j] = l->scan;
			if (m->dpos[j] == l->n)
				break;
			if (!dlog_live(p, l, m->src[j], m->dpos[j]))
				continue;
			e = &p->dedup[l->e[m->dpos[j]].slot];
			i = m->nb_dst == 2 && !shard_holds(m->dst[0], e->route_hash);
			d = &m->pre[i];
			if (dlog_room(d) < 0)
				return -ENOMEM;
			d->e[d->n++] = l->e[m->dpos[j]];
			dlog_pass(p, d, m->dst[i], DLOG_STEP);
		}
		if (m->dpos[j] < l->n)
			return 0;
	}
	return 1;
}

void
proc_dedup_list_step(struct km_proc *p, struct km_proc_shard *sl)
{
	struct proc_dlog *l = &sl->dlog;

	/* A shard being copied keeps its listings where they are (dlog_precopy). */
	if (p->mig == NULL || !mig_is_src(p->mig, sl->id))
		dlog_pass(p, l, sl->id, DLOG_STEP);
	(void)dlog_room(l); /* no memory: the caller leaves the entry out */
}

int
km_proc_mig_finish(struct km_proc *p, struct km_store **old, uint64_t *keys)
{
	struct km_proc_shard dlog[2] = {{0}, {0}}, *sl;
	struct proc_mig *m = p->mig;
	uint32_t i, j;
	int rc = 0;

	if (m == NULL)
		return -ENOENT;
	if (m->phase == KM_MIG_FAILED)
		return m->err;
	/* Writes since READY were repeated: the copies are still whole, unless the walk
	 * missed an entry; then it walks again. */
	if (m->phase != KM_MIG_READY || !mig_complete(p)) {
		m->phase = KM_MIG_COPYING;
		return -EAGAIN;
	}
	*keys = p->migp.dst_keys;
	/* The sources first: their writes in flight settle (a failure there makes the
	 * copies wrong, see proc_mig_durable_failed()). */
	m->swapping = 1;
	for (i = 0; i < m->nb_src; i++) {
		/* Their at-most-once index goes to the new shards (below). */
		sl = shard_find(p, m->src[i]);
		if (sl != NULL) {
			dlog[i] = *sl;
			sl->dlog = (struct proc_dlog){0};
		}
		old[i] = km_proc_shard_detach(p, m->src[i], NULL);
	}
	m->swapping = 0;
	if (m->phase == KM_MIG_FAILED)
		rc = m->err;
	/* What the sources listed since the last step. */
	if (rc == 0) {
		const struct proc_dlog *srcl[2] = {&dlog[0].dlog, &dlog[1].dlog};

		rc = dlog_precopy(p, m, srcl, UINT32_MAX) < 0 ? -ENOMEM : 0;
	}
	for (i = 0; i < m->nb_dst && rc == 0; i++)
		if (m->dst_store[i]->ops->commit != NULL)
			rc = m->dst_store[i]->ops->commit(m->dst_store[i]);
	for (i = 0; i < m->nb_dst && rc == 0; i++) {
		rc = km_proc_shard_attach(p, m->dst[i], m->dst_store[i]);
		if (rc < 0)
			for (j = 0; j < i; j++)
				km_proc_shard_detach(p, m->dst[j], NULL);
	}
	if (rc < 0) {
		/* The sources serve again, unchanged; the copies go. */
		for (i = 0; i < m->nb_src; i++) {
			if (old[i] != NULL && km_proc_shard_attach(p, m->src[i], old[i]) < 0)
				km_store_destroy(
					old[i]); /* files kept: it serves after a restart */
			else if (old[i] != NULL && (sl = shard_find(p, m->src[i])) != NULL) {
				free(sl->dlog.e);
				sl->dlog = dlog[i].dlog;
				dlog[i].dlog = (struct proc_dlog){0};
			}
			old[i] = NULL;
			free(dlog[i].dlog.e);
		}
		m->phase = KM_MIG_FAILED;
		m->err = rc;
		km_proc_mig_cancel(p);
		return rc;
	}
	/* The indexes copied: a split's halves both hold the parent's, a merge's parent
	 * both halves' (each keeps what is its own); a pass starts at their next append. */
	for (i = 0; i < m->nb_dst; i++) {
		sl = shard_find(p, m->dst[i]);
		free(sl->dlog.e);
		sl->dlog = m->pre[i]; /* with its pass, if one is under way */
		sl->dlog.next = 0;
	}
	for (j = 0; j < m->nb_src; j++)
		free(dlog[j].dlog.e);
	p->cnt.mig_done++;
	free(m);
	p->mig = NULL;
	progress_publish(p);
	return 0;
}

struct km_proc_shard *
proc_shard_resharded(struct km_proc *p, uint64_t id, uint64_t hash)
{
	struct km_proc_shard *sl = NULL;
	unsigned int d = km_shard_depth(id);

	/* Split here, the map not published yet: the child holding the hash. */
	if (d < KM_SHARD_DEPTH_MAX)
		sl = shard_find(p, id * 2 + ((hash >> (63 - d)) & 1));
	/* Merged here: the parent. */
	if (sl == NULL && id > 1)
		sl = shard_find(p, id >> 1);
	return sl;
}

/* ---- the at-most-once entries of a shard, handed over with it ---- */

/*
 * Walk sl's index: fn(e, slot, arg) for every live listing. An entry listed twice (a
 * split's listing kept by both halves, then merged again) is passed twice unless fn
 * invalidates it, as a take does. @return the listings passed.
 */
static uint32_t
dlog_walk(struct km_proc *p, struct km_proc_shard *sl,
	void (*fn)(struct dedup_entry *e, uint32_t slot, void *arg), void *arg)
{
	const struct proc_dlog *l = &sl->dlog;
	uint32_t i, n = 0;

	for (i = 0; i < l->n; i++) {
		if (l->pass && i == l->keep)
			i = l->scan; /* the dead part of a pass under way */
		if (i == l->n)
			break;
		if (i + DLOG_PREFETCH < l->n)
			__builtin_prefetch(&p->dedup[l->e[i + DLOG_PREFETCH].slot], 1);
		if (!dlog_live(p, l, sl->id, i))
			continue;
		fn(&p->dedup[l->e[i].slot], l->e[i].slot, arg);
		n++;
	}
	return n;
}

/* dlog_walk() step of a take: the entry goes into the set, out of the table. */
static void
dedup_take_one(struct dedup_entry *e, uint32_t slot, void *arg)
{
	struct km_proc_dedup *set = arg;

	(void)slot;
	set->e[set->n++] = *e;
	e->valid = 0;
}

/* dlog_walk() step of a copy: the entry goes into the set, and stays. */
static void
dedup_copy_one(struct dedup_entry *e, uint32_t slot, void *arg)
{
	struct km_proc_dedup *set = arg;

	(void)slot;
	set->e[set->n++] = *e;
}

struct km_proc_dedup *
proc_dedup_copy(struct km_proc *p, struct km_proc_shard *sl)
{
	struct km_proc_dedup *set;

	if (sl->dlog.n == 0 ||
		(set = malloc(sizeof(*set) + (size_t)sl->dlog.n * sizeof(set->e[0]))) == NULL)
		return NULL;
	set->n = 0;
	set->repl_tags = 0;
	dlog_walk(p, sl, dedup_copy_one, set);
	return set;
}

struct km_proc_dedup *
km_proc_dedup_take(struct km_proc *p, uint64_t shard_id)
{
	struct km_proc_shard *sl = shard_id != 0 ? shard_find(p, shard_id) : NULL;
	struct km_proc_dedup *set;
	uint32_t i, n = 0;

	if (sl != NULL) {
		/* Through its index: O(its entries), not O(the table). */
		if (sl->dlog.n == 0)
			return NULL;
		set = malloc(sizeof(*set) + (size_t)sl->dlog.n * sizeof(set->e[0]));
		if (set == NULL)
			return NULL; /* retries of those writes would execute again */
		set->n = 0;
		set->repl_tags = 0; /* nothing carried */
		dlog_walk(p, sl, dedup_take_one, set);
		sl->dlog.n = sl->dlog.keep = sl->dlog.scan = sl->dlog.pass = 0;
		sl->dlog.next = 0;
		if (set->n != 0)
			return set;
		free(set);
		return NULL;
	}
	/* Not attached here (any more): a walk of the whole table. */
	for (i = 0; i <= p->dedup_mask; i++)
		n += p->dedup[i].valid && shard_holds(shard_id, p->dedup[i].route_hash);
	if (n == 0)
		return NULL;
	set = malloc(sizeof(*set) + n * sizeof(set->e[0]));
	if (set == NULL)
		return NULL; /* retries of those writes would execute again: as before moves */
	set->n = 0;
	set->repl_tags = 0; /* nothing carried */
	for (i = 0; i <= p->dedup_mask; i++) {
		struct dedup_entry *d = &p->dedup[i];

		if (!d->valid || !shard_holds(shard_id, d->route_hash))
			continue;
		set->e[set->n++] = *d;
		d->valid = 0;
	}
	return set;
}

void
km_proc_dedup_give(struct km_proc *p, uint64_t shard_id, struct km_proc_dedup *set, int same_store)
{
	struct km_proc_shard *sl = shard_find(p, shard_id);
	uint64_t rseq = 0;
	uint32_t i;

	if (set == NULL)
		return;
	if (set->repl_tags != 0 && sl != NULL)
		rseq = proc_repl_carried(p, sl, set);
	for (i = 0; i < set->n; i++) {
		struct dedup_entry *d = dedup_slot(p, set->e[i].src, set->e[i].req_id);

		if (d->valid)
			continue; /* a write recorded here since is newer: it keeps the slot */
		*d = set->e[i];
		/* The store moved with its record numbers: a retry still waits for its write
		 * to be durable there. A rewritten store was committed: nothing to wait for. */
		d->gen = sl != NULL ? sl->gen : 0;
		if (sl == NULL || !same_store)
			d->seq = 0;
		/* A write its replicas owed (carried): its retry waits for them here. */
		d->rseq = d->rseq != 0 ? rseq : 0;
		if (sl != NULL)
			proc_dedup_listed(p, sl, (uint32_t)(d - p->dedup));
	}
	free(set);
}

uint32_t
km_proc_dedup_count(const struct km_proc_dedup *set)
{
	return set != NULL ? set->n : 0;
}

void
km_proc_dedup_free(struct km_proc_dedup *set)
{
	free(set);
}

uint64_t
km_proc_version_last(const struct km_proc *p)
{
	struct km_store_stats st;
	uint64_t v = 0;
	uint32_t i;

	for (i = 0; i <= p->shards_mask; i++) {
		if (p->shards[i].store == NULL)
			continue;
		km_store_stats(p->shards[i].store, &st);
		if (st.version_last > v)
			v = st.version_last;
	}
	return v;
}

void
km_proc_version_floor(struct km_proc *p, uint64_t v)
{
	uint32_t i;

	for (i = 0; i <= p->shards_mask; i++)
		if (p->shards[i].store != NULL)
			km_store_version_floor(p->shards[i].store, v);
	/* The copies of a split or merge become shards too. */
	for (i = 0; p->mig != NULL && i < p->mig->nb_dst; i++)
		km_store_version_floor(p->mig->dst_store[i], v);
}
