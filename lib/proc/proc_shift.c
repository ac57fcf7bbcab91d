/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The partition shifter on the workers (km_proc.h): requests of a routing part whose
 * override migrates or reverts, the entries moved between the old and the new place, and
 * the background pass that moves the rest. Only stores with values in DRAM are shifted
 * (a store on disk never gets here: keymapd refuses its overrides).
 *
 * Everything here runs on the owner worker; a move, once handed over, is the receiving
 * worker's (malloc'd by one worker, freed by the other).
 */

#include <errno.h>
#include <stdlib.h>

#include "proc_private.h"

/* Steps of km_proc_req.shift, decided in stage 1 and executed in stage 3 (arrival order,
 * so that a move and the requests around it keep their order). */
enum shift_step {
	SHIFT_NONE = 0,
	SHIFT_GET_NEW,   /* GET at the new owner: a miss looks in the old place */
	SHIFT_GET_OLD,   /* GET handed FALLBACK to the old place's owner */
	SHIFT_WRITE_OLD, /* write at the old place's owner: move its key first */
	SHIFT_APPLY,     /* write handed FINAL with a move: load it, then execute */
};

/* An entry on its way from its old place to its new one. */
struct km_shift_move {
	uint64_t from;    /* shard id of the old place (to put it back) */
	uint64_t version; /* kept: CAS and ordering hold across the move */
	uint64_t floor;   /* the old store's last version: the new one issues above it */
	uint32_t val_len;
	uint16_t key_len;
	uint8_t data[]; /* key, then value */
};

static uint64_t
store_version_last(const struct km_store *s)
{
	struct km_store_stats st;

	km_store_stats(s, &st);
	return st.version_last;
}

/* Keep the worker's DRAM account of a store its entries moved in or out of. */
static void
dram_sync(struct km_proc *p, struct km_proc_shard *shd)
{
	struct km_store *s = shd->store;
	uint64_t now;

	if (s->ops->dram_bytes == NULL)
		return;
	now = s->ops->dram_bytes(s);
	p->dram_used = p->dram_used - shd->dram + now;
	shd->dram = now;
}

static void
move_key(const struct km_shift_move *mv, struct km_key *k)
{
	k->data = mv->data;
	k->len = mv->key_len;
	k->hash = km_key_hash(mv->data, mv->key_len);
}

static struct km_shift_move *
move_new(uint64_t from, uint64_t floor, const struct km_key *k, const struct km_value_ref *v)
{
	struct km_shift_move *mv = malloc(sizeof(*mv) + k->len + v->len);

	if (mv == NULL)
		return NULL;
	mv->from = from;
	mv->floor = floor;
	mv->version = v->version;
	mv->val_len = v->len;
	mv->key_len = k->len;
	memcpy(mv->data, k->data, k->len);
	if (v->len != 0)
		memcpy(mv->data + k->len, v->data, v->len);
	return mv;
}

/* Load mv into shd unless shd has the key (a newer write there wins); mv is freed. */
static void
move_load(struct km_proc *p, struct km_proc_shard *shd, struct km_shift_move *mv)
{
	struct km_value_ref v;
	struct km_key k;

	move_key(mv, &k);
	/* A key deleted in the old place and created here again gets a higher version. */
	km_store_version_floor(shd->store, mv->floor);
	if (km_store_get(shd->store, &k, &v) != 0) {
		if (km_store_load(
			    shd->store, &k, mv->data + mv->key_len, mv->val_len, mv->version) != 0)
			p->cnt.store_error++; /* no room: the entry is lost, and counted */
		else if (proc_unlikely(p->xp != NULL))
			proc_export_write(p, shd->id, &k, KM_OP_PUT, mv->data + mv->key_len,
				mv->val_len, mv->version);
		dram_sync(p, shd);
	}
	free(mv);
}

/*
 * Take key k out of its old place shd: *out is the move (NULL when shd does not hold it).
 * @return 0, -ENOMEM (nothing taken).
 */
static int
move_take(struct km_proc *p, struct km_proc_shard *shd, const struct km_key *k,
	struct km_shift_move **out)
{
	struct km_value_ref v;
	struct km_shift_move *mv;
	uint64_t ver;

	*out = NULL;
	if (shd == NULL || shd->persistent || km_store_get(shd->store, k, &v) != 0)
		return 0;
	mv = move_new(shd->id, store_version_last(shd->store), k, &v);
	if (mv == NULL)
		return -ENOMEM;
	if (km_store_del(shd->store, k, mv->version, &ver) != 0) {
		free(mv);
		return -ENOMEM; /* cannot happen: the entry was just read, nothing in between */
	}
	if (proc_unlikely(p->xp != NULL))
		proc_export_write(p, shd->id, k, KM_OP_DEL, NULL, 0, ver);
	dram_sync(p, shd);
	p->cnt.shift_moved_keys++;
	*out = mv;
	return 0;
}

void
km_proc_shift_free(struct km_shift_move *mv)
{
	free(mv);
}

void
km_proc_shift_restore(struct km_proc *p, struct km_shift_move *mv)
{
	struct km_proc_shard *shd = shard_find(p, mv->from);

	p->cnt.shift_move_restored++;
	p->cnt.shift_moved_keys--;
	/* Not clean before a pass that finds it moved. */
	p->shift_found++;
	atomic_store_explicit(&p->shift_clean, 0, memory_order_release);
	if (shd != NULL)
		move_load(p, shd, mv);
	else
		free(mv); /* cannot happen: the move was made in this iteration, same map */
}

int
km_proc_shift_apply(
	struct km_proc *p, const struct km_shardmap *map, struct km_shift_move *mv, uint16_t *owner)
{
	struct km_proc_shard *shd;
	struct km_route rt;

	route_of(map, mv->data, mv->key_len, &rt);
	if (km_shard_owner_fast(rt.shard) != p->worker) {
		*owner = km_shard_owner_fast(rt.shard);
		return 1;
	}
	shd = shard_find(p, km_shard_id_fast(rt.shard));
	if (shd == NULL)
		return -EAGAIN;
	move_load(p, shd, mv);
	return 0;
}

static void
handoff(struct km_proc_req *r, uint16_t owner, uint8_t mark)
{
	r->verdict = KM_PROC_HANDOFF;
	r->owner = owner;
	r->hand_mark = mark;
}

static inline uint16_t
owner_of(const struct km_shard *sh)
{
	return km_shard_owner_fast(sh);
}

int
proc_shift_stage1(
	struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r, int *target)
{
	const struct km_shard *sh = r->rt.shard, *fb = r->rt.fallback;
	uint8_t op = r->msg.hdr.op;

	(void)map;
	r->hand_mark = KM_HAND_PLAIN;
	if (sh == NULL || !op_single_key(op)) {
		/* Marks and moves concern single-key requests only. */
		if (r->move != NULL) {
			km_proc_shift_free(r->move);
			r->move = NULL;
		}
		if (r->handed > KM_HAND_PLAIN)
			r->handed = KM_HAND_PLAIN;
		return 1;
	}
	if (op == KM_OP_GET) {
		if (r->handed == KM_HAND_FALLBACK && fb != NULL && owner_of(fb) == p->worker) {
			r->shift = SHIFT_GET_OLD;
			*target = p->worker;
			return 1;
		}
		if (r->handed == KM_HAND_FALLBACK)
			r->handed = KM_HAND_PLAIN; /* the map changed: no old place any more */
		else if (r->handed <= KM_HAND_PLAIN && fb != NULL && *target == p->worker)
			r->shift = SHIFT_GET_NEW;
		return 1;
	}
	/* PUT, CAS, DEL */
	if (r->handed == KM_HAND_FINAL) {
		if (*target == p->worker) {
			if (r->move != NULL)
				r->shift = SHIFT_APPLY;
			return 1;
		}
		if (r->move == NULL)
			return 1; /* handed, not the owner: BUSY, the client retries */
		/* The map changed while the move crossed: on to the owner now. */
		handoff(r, owner_of(sh), KM_HAND_FINAL);
		return 0;
	}
	if (fb != NULL && owner_of(fb) == p->worker) {
		r->shift = SHIFT_WRITE_OLD;
		*target = p->worker;
		return 1;
	}
	if (fb != NULL && r->handed != KM_HAND_VIA_OLD) {
		handoff(r, owner_of(fb), KM_HAND_VIA_OLD);
		return 0;
	}
	if (r->handed == KM_HAND_VIA_OLD && *target != p->worker) {
		/* The map changed under way: the old place is elsewhere or gone. */
		handoff(r, owner_of(sh), KM_HAND_FINAL);
		return 0;
	}
	return 1;
}

/* A GET answered from shd's value v (shd found it). */
static void
reply_value(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r,
	struct km_proc_shard *shd, const struct km_value_ref *v)
{
	size_t len;

	p->cnt.req_get++;
	shd->requests++;
	len = proc_value_reply(
		p, &r->msg.hdr, km_shardmap_epoch_fast(map), v, r->buf, r->cap, r->limit);
	if (proc_unlikely(len == PROC_GROW)) {
		shd->requests--;
		r->verdict = KM_PROC_GROW;
		return;
	}
	r->verdict = KM_PROC_REPLY;
	r->reply_len = len;
}

static void
reply_status(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r, uint8_t st)
{
	if (r->msg.hdr.op == KM_OP_GET)
		p->cnt.req_get++;
	else
		proc_count_write(p, r->msg.hdr.op);
	if (st == KM_ST_NOT_FOUND)
		p->cnt.get_miss++;
	else
		p->cnt.busy_handover++;
	r->verdict = KM_PROC_REPLY;
	r->reply_len = proc_reply_status(&r->msg.hdr, st, km_shardmap_epoch_fast(map), r->buf);
}

/* The value of key k in the old place fb if this worker holds it in DRAM. */
static struct km_proc_shard *
old_place(struct km_proc *p, const struct km_shard *fb)
{
	struct km_proc_shard *f = shard_find(p, km_shard_id_fast(fb));

	return f != NULL && !f->persistent ? f : NULL;
}

void
proc_shift_exec(struct km_proc *p, const struct km_shardmap *map, struct km_proc_req *r)
{
	const struct km_shard *fb = r->rt.fallback;
	struct km_proc_shard *f;
	struct km_shift_move *mv;
	struct km_value_ref v;

	switch (r->shift) {
	case SHIFT_GET_NEW:
		if (r->shd == NULL || r->shd->persistent) {
			proc_exec_req(p, map, r);
			return;
		}
		if (km_store_get(r->shd->store, &r->key, &v) == 0) {
			reply_value(p, map, r, r->shd, &v);
			return;
		}
		if (owner_of(fb) != p->worker) {
			handoff(r, owner_of(fb), KM_HAND_FALLBACK);
			return;
		}
		f = old_place(p, fb);
		if (f != NULL && km_store_get(f->store, &r->key, &v) == 0) {
			p->cnt.shift_fallback_reads++;
			reply_value(p, map, r, f, &v);
			return;
		}
		reply_status(p, map, r, KM_ST_NOT_FOUND);
		return;
	case SHIFT_GET_OLD:
		f = old_place(p, fb);
		if (f != NULL && km_store_get(f->store, &r->key, &v) == 0) {
			p->cnt.shift_fallback_reads++;
			reply_value(p, map, r, f, &v);
			return;
		}
		/* Moved meanwhile (its move is ahead of this request in the ring), or absent:
		 * the new owner answers, once. */
		if (owner_of(r->rt.shard) != p->worker) {
			handoff(r, owner_of(r->rt.shard), KM_HAND_FINAL);
			return;
		}
		proc_exec_req(p, map, r);
		return;
	case SHIFT_WRITE_OLD:
		/* A retry of a write this worker executed (in the old place before the
		 * override changed, or here through it): its record answers, nothing moves. */
		if (dedup_find(p, r->src, &r->msg.hdr, r->key.hash) != NULL) {
			p->cnt.shift_retry_old++;
			proc_exec_req(p, map, r);
			return;
		}
		if (move_take(p, old_place(p, fb), &r->key, &mv) < 0) {
			reply_status(p, map, r, KM_ST_BUSY);
			return;
		}
		if (owner_of(r->rt.shard) != p->worker) {
			r->move = mv;
			handoff(r, owner_of(r->rt.shard), KM_HAND_FINAL);
			return;
		}
		if (mv != NULL) {
			if (r->shd == NULL) {
				/* The new place is being handed over: nothing moves now. */
				km_proc_shift_restore(p, mv);
				p->cnt.shift_move_restored--;
				reply_status(p, map, r, KM_ST_BUSY);
				return;
			}
			move_load(p, r->shd, mv);
		}
		proc_exec_req(p, map, r);
		return;
	case SHIFT_APPLY:
		if (r->shd == NULL) {
			/* Our store of the shard is being handed over: the move waits in our own
			 * ring (the request comes back with it) until it is attached. */
			handoff(r, p->worker, KM_HAND_FINAL);
			return;
		}
		mv = r->move;
		r->move = NULL;
		move_load(p, r->shd, mv);
		proc_exec_req(p, map, r);
		return;
	default:
		proc_exec_req(p, map, r);
		return;
	}
}

/* ---- the background pass ---- */

/*
 * A pass walks every owned shard a slice at a time (KM_PROC_SHIFT_BUDGET per call, resumed
 * through p->shift_walk) and takes out "stale" entries: those whose key has a fallback
 * under the pass's map and routes to another shard than the one holding them. It may
 * publish shift_clean = epoch only if one complete pass over all owned shards, under that
 * one epoch, took nothing out. Why that is sound although the stores are written between
 * the calls of a pass:
 *
 * - No stale entry appears in a store of this worker during a pass. A write of a key with
 *   a fallback executes in its route shard (the new place), after SHIFT_WRITE_OLD took the
 *   key out of the old place; a write of a key without one creates no stale entry. A move
 *   is loaded into the route shard of its key under the current map (move_load() from
 *   km_proc_shift_apply(), SHIFT_WRITE_OLD, SHIFT_APPLY). Keys inserted behind the walk
 *   are therefore never keys that must move. The exceptions reset the pass:
 *   km_proc_shift_restore() puts a stale entry back and counts it in shift_found (this
 *   pass is not clean); an attached store (a shard moved in, a split's or merge's swap)
 *   and a new map epoch start the pass over.
 * - So while a store is walked its stale entries can only go away, and one that is there
 *   from the walk's first call to its last was not written (a write would have taken it
 *   out): km_store_walk_step() promises to visit it at least once (km_store.h;
 *   the mem driver ends each call just after an empty slot, so deletions that move
 *   entries back in its table never move one from ahead of the walk to behind it, and it
 *   starts over when its table grows). That promise does not hold across a call that fn
 *   stopped (the step's moves full) nor across the deletions of the entries the pass
 *   takes out; but a pass that took anything out is not clean in any case, and a pass
 *   that took nothing never stopped a call and deleted nothing.
 * - A walk position belongs to one store: it is kept with the generation of the attach
 *   that brought that store (km_proc_shard.gen: a store's address may come back for
 *   another one), and a walk restarts from the beginning when the slot under the cursor
 *   holds another generation. A detach (a shard moved away, split or merged) may move
 *   another shard of the table behind the cursor, and an attach adds one: both start the
 *   pass over (km_proc_shard_detach/attach set shift_epoch to 0).
 * - Stores without walk_step are walked whole in one call (km_store_walk), as one slice.
 * - A walk that fails (out of memory, a store error) counts as having found something:
 *   the pass is not clean, and the next one walks that shard again.
 */

#define SHIFT_WALK_MAX  64 /* entries one step takes out of a shard */
#define SHIFT_WALK_FULL 2  /* walk_one(): the step's moves are full (1 is walk_step's "more") */

struct walk_ctx {
	const struct km_shardmap *map;
	uint64_t id;    /* the shard walked */
	uint64_t floor; /* its store's last version */
	struct km_shift_move *mv[SHIFT_WALK_MAX];
	uint16_t to[SHIFT_WALK_MAX];
	unsigned int n, max;
	uint64_t visited; /* entries looked at */
};

static int
walk_one(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct walk_ctx *c = arg;
	struct km_route rt;

	c->visited++;
	route_of(c->map, k->data, k->len, &rt);
	/* Only the parts of a migrating or reverting override have a fallback. */
	if (rt.fallback == NULL || km_shard_id_fast(rt.shard) == c->id)
		return 0;
	c->mv[c->n] = move_new(c->id, c->floor, k, v);
	if (c->mv[c->n] == NULL)
		return -ENOMEM;
	c->to[c->n] = km_shard_owner_fast(rt.shard);
	return ++c->n == c->max ? SHIFT_WALK_FULL : 0;
}

static void
walk_reset(struct km_proc *p)
{
	p->shift_walk.gen = 0;
	p->shift_walk.pos = (struct km_walk_pos){0};
}

/*
 * Walk the next slice of shd into c. @return 1 the shard has more (the next call goes on
 * with it), 0 its walk is over (a failed one counted in shift_found).
 */
static int
walk_slice(struct km_proc *p, struct km_proc_shard *shd, struct walk_ctx *c)
{
	int rc;

	if (p->shift_walk.gen != shd->gen) {
		/* Another shard, or another store of it: from its start. */
		walk_reset(p);
		p->shift_walk.gen = shd->gen;
	}
	p->cnt.shift_walk_steps++;
	if (shd->store->ops->walk_step != NULL) {
		rc = km_store_walk_step(
			shd->store, &p->shift_walk.pos, KM_PROC_SHIFT_BUDGET, walk_one, c);
		if (rc == SHIFT_WALK_FULL)
			rc = 1; /* the rest of the slice at the next step */
	} else {
		rc = km_store_walk(shd->store, walk_one, c);
		if (rc == SHIFT_WALK_FULL)
			rc = 1; /* the whole store again */
	}
	p->cnt.shift_walk_entries += c->visited;
	if (rc < 0) {
		p->shift_found++; /* not walked whole: this pass is not clean */
		rc = 0;
	}
	if (rc == 0)
		walk_reset(p);
	return rc;
}

int
km_proc_shift_pending(const struct km_proc *p, const struct km_shardmap *map)
{
	uint32_t i, n = km_shardmap_nb_overrides(map);

	if (proc_likely(n == 0))
		return 0;
	if (atomic_load_explicit(&p->shift_clean, memory_order_relaxed) ==
		km_shardmap_epoch_fast(map))
		return 0;
	for (i = 0; i < n; i++)
		if (km_shardmap_override_at(map, i)->state != KM_OVR_SETTLED)
			return 1;
	return 0;
}

uint32_t
km_proc_shift_clean(const struct km_proc *p)
{
	/* Acquire: pairs with the worker's release store when its pass ended clean. */
	return atomic_load_explicit(&p->shift_clean, memory_order_acquire);
}

unsigned int
km_proc_shift_step(struct km_proc *p, const struct km_shardmap *map, struct km_shift_move **out,
	uint16_t *to, unsigned int max)
{
	struct walk_ctx c = {.map = map};
	struct km_proc_shard *shd = NULL;
	unsigned int i, nout = 0;
	uint64_t ver;

	if (p->shift_epoch != km_shardmap_epoch_fast(map)) {
		/* A new map (or a shard came or went): a new pass. */
		p->shift_epoch = km_shardmap_epoch_fast(map);
		p->shift_cursor = 0;
		p->shift_found = 0;
		walk_reset(p);
	}
	while (p->shift_cursor <= p->shards_mask && p->shards[p->shift_cursor].id == 0)
		p->shift_cursor++;
	if (p->shift_cursor > p->shards_mask) {
		/* The pass is over: clean if it took nothing out. Release: pairs with the
		 * control lcore's acquire in km_proc_shift_clean(). */
		if (p->shift_found == 0)
			atomic_store_explicit(
				&p->shift_clean, p->shift_epoch, memory_order_release);
		p->shift_cursor = 0;
		p->shift_found = 0;
		walk_reset(p);
		return 0;
	}
	shd = &p->shards[p->shift_cursor];
	if (shd->persistent) {
		p->shift_cursor++;
		return 0;
	}
	c.id = shd->id;
	c.floor = store_version_last(shd->store);
	c.max = max < SHIFT_WALK_MAX ? max : SHIFT_WALK_MAX;
	if (c.max == 0)
		return 0;
	/* Its walk over: the next shard at the next step; else more of this one. */
	if (walk_slice(p, shd, &c) == 0)
		p->shift_cursor++;
	for (i = 0; i < c.n; i++) {
		struct km_shift_move *mv = c.mv[i];
		struct km_key k;

		move_key(mv, &k);
		if (km_store_del(shd->store, &k, mv->version, &ver) != 0) {
			free(mv);
			continue;
		}
		if (proc_unlikely(p->xp != NULL))
			proc_export_write(p, shd->id, &k, KM_OP_DEL, NULL, 0, ver);
		p->cnt.shift_moved_keys++;
		p->shift_found++;
		if (c.to[i] == p->worker) {
			uint16_t owner;

			/* The new place is ours: no ring. */
			if (km_proc_shift_apply(p, map, mv, &owner) != 0) {
				km_proc_shift_restore(p, mv);
				p->cnt.shift_move_restored--;
			}
			continue;
		}
		out[nout] = mv;
		to[nout++] = c.to[i];
	}
	dram_sync(p, shd);
	return nout;
}
