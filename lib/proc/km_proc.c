/* SPDX-License-Identifier: BSD-3-Clause */
/* The processor's life and the table of shards it owns (see proc_private.h). */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proc_private.h"

#define DEDUP_DEFAULT   65536
#define CACHE_DEFAULT   (UINT64_C(64) << 20)
#define PENDING_DEFAULT 256
#define DEFER_DEFAULT   1024
#define IO_ENTRIES      512

const char *const km_proc_counter_names[] = {
#define KM_X(name, help) #name,
	KM_PROC_COUNTERS(KM_X)
#undef KM_X
};

const char *const km_proc_counter_help[] = {
#define KM_X(name, help) help,
	KM_PROC_COUNTERS(KM_X)
#undef KM_X
};

static int
persist_init(struct km_proc *p, const struct km_proc_params *prm)
{
	uint32_t i, slots;
	int rc;

	if (prm->dir == NULL || prm->cold_dir == NULL || strlen(prm->dir) >= PATH_LEN ||
		strlen(prm->cold_dir) >= PATH_LEN)
		return -EINVAL;
	strcpy(p->dir, prm->dir);
	strcpy(p->cold_dir, prm->cold_dir);
	p->durability = prm->durability;
	p->route_sep = prm->route_sep;
	p->route_depth = prm->route_depth;
	p->sync_interval_ms = prm->sync_interval_ms;
	p->write_buffer = prm->write_buffer;
	p->pending_max = prm->pending_max ? prm->pending_max : PENDING_DEFAULT;
	p->defer_max = prm->defer_max ? prm->defer_max : DEFER_DEFAULT;
	rc = km_cache_create(prm->cache_bytes ? prm->cache_bytes : CACHE_DEFAULT, &p->cache);
	if (rc < 0)
		return rc;
	rc = km_io_create(IO_ENTRIES, &p->io);
	if (rc < 0)
		return rc;
	for (slots = 2; slots < 2 * p->pending_max; slots *= 2)
		;
	p->pend_mask = slots - 1;
	p->pend_tab = calloc(slots, sizeof(*p->pend_tab));
	p->pends = calloc(p->pending_max, sizeof(*p->pends));
	p->defers = calloc(p->defer_max, sizeof(*p->defers));
	p->ready_cap = p->defer_max;
	p->ready = calloc(p->ready_cap, sizeof(*p->ready));
	if (p->pend_tab == NULL || p->pends == NULL || p->defers == NULL || p->ready == NULL)
		return -ENOMEM;
	for (i = 0; i < p->pending_max; i++) {
		p->pends[i].next_free = p->pend_free;
		p->pend_free = &p->pends[i];
	}
	for (i = 0; i < p->defer_max; i++) {
		p->defers[i].next = p->defer_free;
		p->defer_free = &p->defers[i];
	}
	return proc_pf_init(p);
}

int
km_proc_create(const struct km_proc_params *prm, struct km_proc **out)
{
	struct km_proc *p;
	uint32_t n = prm->dedup_entries == 0 ? DEDUP_DEFAULT : prm->dedup_entries;

	if (prm->value_max > KM_VALUE_MAX_LARGE || prm->reply_max > KM_MSG_MAX ||
		(n & (n - 1)) != 0 || prm->store_driver == NULL ||
		strlen(prm->store_driver) >= sizeof(p->driver))
		return -EINVAL;
	if (km_store_driver(prm->store_driver) == NULL)
		return -ENOENT;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	p->worker = prm->worker;
	p->value_max = prm->value_max;
	p->reply_max = prm->reply_max;
	p->version_base = prm->version_base;
	p->dram_max = prm->dram_max;
	p->hello = prm->hello;
	p->store_initial_keys = prm->store_initial_keys;
	p->store_hugepages = prm->store_hugepages;
	strcpy(p->driver, prm->store_driver);
	p->shards_mask = 15;
	p->shards = calloc(p->shards_mask + 1, sizeof(*p->shards));
	p->dedup_mask = n - 1;
	p->dedup = malloc((size_t)n * sizeof(*p->dedup));
	if (p->dedup != NULL) {
		/* Written now, not zero pages mapped on first use: the first writes of a
		 * worker, or a shard's entries handed to it (km_proc_dedup_give), would take
		 * the page faults of the whole table (25 ms for 4 MB on a small VM). The barrier
		 * keeps the compiler from turning malloc + memset into calloc. */
		__asm__ volatile("" : : "r"(p->dedup) : "memory");
		memset(p->dedup, 0, (size_t)n * sizeof(*p->dedup));
	}
	if (p->shards == NULL || p->dedup == NULL || proc_guard_init(p) < 0) {
		km_proc_destroy(p);
		return -ENOMEM;
	}
	if (km_store_driver(prm->store_driver)->read_start != NULL) {
		int rc = persist_init(p, prm);

		if (rc < 0) {
			km_proc_destroy(p);
			return rc;
		}
	} else {
		/* No disk: replies wait only for the replicas (proc_export.c). */
		p->defer_max = prm->defer_max ? prm->defer_max : DEFER_DEFAULT;
		p->defers = calloc(p->defer_max, sizeof(*p->defers));
		p->ready_cap = p->defer_max;
		p->ready = calloc(p->ready_cap, sizeof(*p->ready));
		if (p->defers == NULL || p->ready == NULL) {
			km_proc_destroy(p);
			return -ENOMEM;
		}
		for (uint32_t i = 0; i < p->defer_max; i++) {
			p->defers[i].next = p->defer_free;
			p->defer_free = &p->defers[i];
		}
	}
	*out = p;
	return 0;
}

void
km_proc_destroy(struct km_proc *p)
{
	uint32_t i;

	if (p == NULL)
		return;
	km_proc_mig_cancel(p); /* its staged files go */
	km_proc_export_cancel(p);
	/* From here on a completion only releases: no shard is looked at any more. */
	p->closing = 1;
	if (p->shards != NULL)
		for (i = 0; i <= p->shards_mask; i++)
			if (p->shards[i].store != NULL) {
				if (p->shards[i].persistent)
					p->shards[i].store->ops->bind(
						p->shards[i].store, NULL, NULL, NULL);
				proc_repl_detached(p, &p->shards[i]);
				km_store_destroy(p->shards[i].store);
				free(p->shards[i].stream);
				free(p->shards[i].dlog.e);
			}
	/* Reads still in flight complete into their pend: wait for them before it goes. */
	km_io_destroy(p->io);
	if (p->pends != NULL)
		for (i = 0; i < p->pending_max; i++)
			km_store_read_free(&p->pends[i].rd);
	km_cache_destroy(p->cache);
	proc_pf_fini(p);
	proc_guard_fini(p);
	free(p->pend_tab);
	free(p->pends);
	free(p->defers);
	free(p->ready);
	free(p->dirty);
	free(p->shards);
	free(p->dedup);
	free(p->repl_ids);
	free(p);
}

static int
shard_table_grow(struct km_proc *p)
{
	uint32_t mask = p->shards_mask * 2 + 1, i, j;
	struct km_proc_shard *t = calloc(mask + 1, sizeof(*t));

	if (t == NULL)
		return -ENOMEM;
	for (i = 0; i <= p->shards_mask; i++) {
		if (p->shards[i].id == 0)
			continue;
		for (j = id_slot(p->shards[i].id, mask); t[j].id != 0; j = (j + 1) & mask)
			;
		t[j] = p->shards[i];
	}
	free(p->shards);
	p->shards = t;
	p->shards_mask = mask;
	return 0;
}

/* Empty slot `hole`, then move back every following entry of the cluster whose home is
 * not between the hole and itself, so that no probe sequence crosses an empty slot. */
static void
shard_table_remove(struct km_proc *p, uint32_t hole)
{
	uint32_t mask = p->shards_mask, j = hole, dist;

	for (;;) {
		j = (j + 1) & mask;
		if (p->shards[j].id == 0)
			break;
		dist = (j - id_slot(p->shards[j].id, mask)) & mask;
		if (dist >= ((j - hole) & mask)) {
			p->shards[hole] = p->shards[j];
			hole = j;
		}
	}
	p->shards[hole] = (struct km_proc_shard){0};
}

int
km_proc_shard_attach(struct km_proc *p, uint64_t shard_id, struct km_store *s)
{
	struct km_stream *stream = NULL;
	int rc, persistent;
	uint32_t i;

	if (shard_id == 0 || s == NULL)
		return -EINVAL;
	if (shard_find(p, shard_id) != NULL)
		return -EEXIST;
	/* Keep the table at most half full so probes stay short. */
	if ((p->nb_shards + 1) * 2 > p->shards_mask + 1) {
		rc = shard_table_grow(p);
		if (rc < 0)
			return rc;
	}
	persistent = km_store_persistent(s) && p->io != NULL;
	if (persistent) {
		stream = calloc(KM_STREAM_SET, sizeof(*stream));
		if (stream == NULL)
			return -ENOMEM;
	}
	for (i = id_slot(shard_id, p->shards_mask); p->shards[i].id != 0;
		i = (i + 1) & p->shards_mask)
		;
	p->shards[i] = (struct km_proc_shard){
		.id = shard_id,
		.store = s,
		.gen = ++p->gen_next,
		.persistent = (uint8_t)persistent,
		.stream = stream,
		.dram = s->ops->dram_bytes != NULL ? s->ops->dram_bytes(s) : 0,
	};
	p->dram_used += p->shards[i].dram;
	p->gen_ids[p->gen_next & (PROC_GEN_IDS - 1)].gen = p->gen_next;
	p->gen_ids[p->gen_next & (PROC_GEN_IDS - 1)].id = shard_id;
	p->nb_shards++;
	if (p->shards[i].persistent)
		s->ops->bind(s, p->io, proc_store_durable, p);
	for (i = 0; p->nb_fwd != 0 && i < PROC_FWD_MAX; i++)
		if (p->fwd[i].id == shard_id) { /* back here: no longer in transit */
			p->fwd[i].id = 0;
			p->nb_fwd--;
		}
	/* A shard came (back): the shifter's background pass starts over, so that it never
	 * declares this map clean without having walked it. */
	p->shift_epoch = 0;
	return 0;
}

void
km_proc_shard_forward(struct km_proc *p, uint64_t shard_id, uint16_t to, uint32_t epoch)
{
	uint32_t i, slot = PROC_FWD_MAX;

	for (i = 0; i < PROC_FWD_MAX; i++) {
		if (p->fwd[i].id == shard_id) {
			slot = i;
			break;
		}
		if (p->fwd[i].id == 0 && slot == PROC_FWD_MAX)
			slot = i;
	}
	if (slot == PROC_FWD_MAX) {
		/* All taken (moves are one at a time: these are dead ones the map has not
		 * passed yet): the oldest goes, its shard's requests answer BUSY again. */
		slot = p->fwd_next++ % PROC_FWD_MAX;
		p->fwd[slot].id = 0;
		p->nb_fwd--;
	}
	if (p->fwd[slot].id == 0)
		p->nb_fwd++;
	p->fwd[slot] = (struct proc_fwd){.id = shard_id, .epoch = epoch, .to = to};
}

struct km_store *
km_proc_shard_detach(struct km_proc *p, uint64_t shard_id, uint64_t *requests)
{
	return km_proc_shard_detach_dedup(p, shard_id, requests, NULL);
}

struct km_store *
km_proc_shard_detach_dedup(
	struct km_proc *p, uint64_t shard_id, uint64_t *requests, struct km_proc_dedup **dedup)
{
	uint64_t pend[PROC_REPL_PEND / 64], tags, acked;
	struct km_proc_shard *sl;
	struct km_store *s;

	/* Id 0 would "find" the first free slot. */
	if (shard_id == 0)
		return NULL;
	sl = shard_find(p, shard_id);
	if (sl == NULL)
		return NULL;
	proc_mig_detaching(p, shard_id);
	s = sl->store;
	if (requests != NULL)
		*requests = sl->requests;
	/* Its read copies go before its store: the next owner's writes must not find them. */
	km_proc_crew_withdraw(p, shard_id);
	if (sl->persistent) {
		/* Write out and wait: the replies parked on the shard are released (or
		 * failed) through proc_store_durable() meanwhile. Reads in flight find the shard
		 * gone when they complete and answer BUSY. */
		s->ops->bind(s, NULL, NULL, NULL);
		sl = shard_find(p, shard_id);
	}
	/* Replies still waiting (for the disk or the replicas) are refused: BUSY, the
	 * client retries at the shard's next owner, which has the write or not. */
	proc_parked_fail(p, sl, KM_ST_BUSY);
	tags = proc_repl_carry(sl->repl, pend, &acked);
	proc_repl_detached(p, sl);
	/* Its at-most-once entries after the write-out, through its own index: a write the
	 * write-out failed has forgotten its entry by now, so its retry cannot be answered
	 * OK from a record taken along. With them, what its replicas still owe. */
	if (dedup != NULL)
		*dedup = proc_repl_carry_put(p, km_proc_dedup_take(p, shard_id), tags, pend, acked);
	/* An export of it ends here, after the write-out: its last chunk. */
	if (proc_unlikely(p->xp != NULL))
		proc_export_detached(p, shard_id, s);
	free(sl->stream);
	free(sl->dlog.e);
	p->dram_used -= sl->dram;
	shard_table_remove(p, (uint32_t)(sl - p->shards));
	p->nb_shards--;
	/* shard_table_remove() may move a shard the shifter's pass has not walked yet behind
	 * its cursor: the pass starts over (as after an attach). */
	p->shift_epoch = 0;
	return s;
}

static int
store_create_sized(const struct km_proc *p, uint64_t shard_id, uint64_t version_base, uint8_t mode,
	uint8_t tier, int quarantine, uint32_t initial_keys, struct km_store **out)
{
	struct km_store_params sp = {
		.shard_id = shard_id,
		.value_max = p->value_max,
		.initial_keys = initial_keys,
		.version_base = version_base,
		.socket_id = -1,
		.hugepages = p->store_hugepages,
		.dir = p->dir,
		.cold_dir = p->cold_dir,
		.durability = p->durability,
		.tier = tier,
		.mode = mode,
		.route_sep = p->route_sep,
		.route_depth = p->route_depth,
		.sync_interval_ms = p->sync_interval_ms,
		.write_buffer = p->write_buffer,
		.quarantine = quarantine,
	};

	if (shard_id == 0 || out == NULL || tier > KM_TIER_COLD)
		return -EINVAL;
	return km_store_create(p->driver, &sp, out);
}

static int
store_create(const struct km_proc *p, uint64_t shard_id, uint64_t version_base, uint8_t mode,
	uint8_t tier, int quarantine, struct km_store **out)
{
	return store_create_sized(
		p, shard_id, version_base, mode, tier, quarantine, p->store_initial_keys, out);
}

int
km_proc_store_new_sized(const struct km_proc *p, uint64_t shard_id, uint64_t version_base,
	uint64_t keys, struct km_store **out)
{
	uint32_t n = keys > UINT32_MAX ? UINT32_MAX : (uint32_t)keys;

	return store_create_sized(p, shard_id, version_base, KM_STORE_STAGE, KM_TIER_HOT, 0,
		n > p->store_initial_keys ? n : p->store_initial_keys, out);
}

int
km_proc_store_new(
	const struct km_proc *p, uint64_t shard_id, uint64_t version_base, struct km_store **out)
{
	return store_create(p, shard_id, version_base, KM_STORE_STAGE, KM_TIER_HOT, 0, out);
}

int
km_proc_store_stage(const struct km_proc *p, uint64_t shard_id, uint64_t version_base, uint8_t tier,
	struct km_store **out)
{
	return store_create(p, shard_id, version_base, KM_STORE_STAGE, tier, 0, out);
}

/* Where the versions of a shard opened now start (km_proc_params.version_base). */
static uint64_t
version_base_now(const struct km_proc *p)
{
	struct timespec t;

	if (p->version_base != 0)
		return p->version_base;
	clock_gettime(CLOCK_REALTIME, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Open (mode) a store for a shard not here yet and attach it. */
static int
shard_open(struct km_proc *p, uint64_t shard_id, uint8_t mode, int reason)
{
	struct km_store *s;
	int rc;

	if (shard_id == 0)
		return -EINVAL;
	/* Checked before the store is created: creating one only to drop it costs more. */
	if (shard_find(p, shard_id) != NULL)
		return -EEXIST;
	rc = store_create(p, shard_id, mode == KM_STORE_OPEN ? version_base_now(p) : 0, mode,
		KM_TIER_HOT, reason, &s);
	if (rc < 0)
		return rc;
	rc = km_proc_shard_attach(p, shard_id, s);
	if (rc < 0)
		km_store_destroy(s);
	return rc;
}

int
km_proc_shard_add(struct km_proc *p, uint64_t shard_id)
{
	return shard_open(p, shard_id, KM_STORE_OPEN, 0);
}

int
km_proc_shard_quarantine(struct km_proc *p, uint64_t shard_id, int reason)
{
	return reason <= 0 ? -EINVAL : shard_open(p, shard_id, KM_STORE_QUARANTINE, reason);
}

struct km_store *
km_proc_shard_store(struct km_proc *p, uint64_t shard_id)
{
	struct km_proc_shard *sl = shard_find(p, shard_id);

	return sl == NULL ? NULL : sl->store;
}

uint32_t
km_proc_nb_shards(const struct km_proc *p)
{
	return p->nb_shards;
}

void
km_proc_store_stats(const struct km_proc *p, struct km_store_stats *st)
{
	struct km_store_stats one;
	uint32_t i;

	memset(st, 0, sizeof(*st));
	for (i = 0; i <= p->shards_mask; i++) {
		if (p->shards[i].store == NULL)
			continue;
		km_store_stats(p->shards[i].store, &one);
		km_store_stats_add(st, &one);
	}
}

uint32_t
km_proc_shard_infos(const struct km_proc *p, struct km_shard_info *out, uint32_t max)
{
	const struct km_proc_shard *sl;
	struct km_store_stats st;
	uint32_t i, n = 0;

	for (i = 0; i <= p->shards_mask && n < max; i++) {
		sl = &p->shards[i];
		if (sl->id == 0)
			continue;
		km_store_stats(sl->store, &st);
		out[n++] = (struct km_shard_info){
			.id = sl->id,
			.worker = p->worker,
			.requests = sl->requests,
			.keys = st.keys,
			.bytes = st.value_bytes,
			.version_last = st.version_last,
			.tier = st.tier,
			.file_bytes = st.file_bytes,
			.dead_bytes = st.dead_bytes,
			.dedup_listed = sl->dlog.n,
			.st = st,
		};
	}
	return p->nb_shards;
}

const struct km_proc_counters *
km_proc_counters(const struct km_proc *p)
{
	return &p->cnt;
}

void
km_proc_overload(struct km_proc *p, int on)
{
	p->overload = on != 0;
}
