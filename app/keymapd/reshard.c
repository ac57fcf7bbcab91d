/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Re-sharding: one transaction behind split, merge, move, tier changes and compactions.
 *
 *   detach sources -> stage targets -> copy -> commit -> attach targets -> publish the map
 *
 * The shards concerned answer BUSY from their detach to the publication (clients retry);
 * every step that fails undoes the ones before it, so that the shards go back to their
 * owners unchanged. A tier change or a compaction rewrites a shard in place: once its new
 * files are committed the old store may never serve again, so its attach cannot be
 * undone (the shard then answers BUSY until a restart, logged).
 */

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rte_common.h>
#include <rte_cycles.h>

#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "mailbox.h"

enum reshard_kind {
	RESHARD_SPLIT,  /* src[0] -> dst[0] (2 id) and dst[1] (2 id + 1), copied by route */
	RESHARD_MERGE,  /* src[0] and src[1] -> dst[0] (id / 2), both copied */
	RESHARD_MOVE,   /* src[0]'s store changes owner: no copy */
	RESHARD_RETIER, /* src[0] -> dst[0], same id, staged in a tier and copied */
};

struct reshard_part {
	uint64_t id;
	uint16_t owner;
	struct km_store *store;
};

/* One transaction (control lcore only). */
struct reshard {
	enum reshard_kind kind;
	const char *what;        /* "split", "merge", ... for messages */
	struct km_shardmap *nm;  /* the map to publish (NULL: the map does not change); the
				  * transaction's: published or freed */
	int tier;                /* RESHARD_RETIER: the tier wanted, -1 the same one */
	int accept_loss;         /* RESHARD_RETIER of a quarantined shard: nothing to copy */
	uint32_t nb_src, nb_dst; /* 1 or 2 */
	struct reshard_part src[2];
	struct reshard_part dst[2];
	/* out */
	uint64_t keys;                /* entries handed over */
	struct km_store_stats before; /* src[0] when detached */
	struct km_store_stats after;  /* dst[0] when attached (RESHARD_RETIER) */
};

/* Message in err; counted as a re-sharding failure unless the request itself was wrong. */
static int refuse(char *err, size_t errlen, int rc, const char *fmt, ...) __rte_format_printf(4, 5);

static int
refuse(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (rc != -ENOENT && rc != -EINVAL)
		km_ctl.cnt.reshard_failures++;
	return rc;
}

/* A failure whose message reshard_run wrote: counted as refuse() counts. */
static int
failed(int rc)
{
	if (rc != -ENOENT && rc != -EINVAL)
		km_ctl.cnt.reshard_failures++;
	return rc;
}

static uint64_t
usec_since(uint64_t t0)
{
	return (rte_get_timer_cycles() - t0) * 1000000 / rte_get_timer_hz();
}

/* A store replaced by a re-sharding: its files go too (a persistent driver). */
static void
store_discard(struct km_store *s)
{
	if (s == NULL)
		return;
	if (s->ops->unlink != NULL)
		s->ops->unlink(s);
	else
		km_store_destroy(s);
}

/* Make a staged store durable and put its files in place (persistent drivers). */
static int
store_commit(struct km_store *s)
{
	return s->ops->commit != NULL ? s->ops->commit(s) : 0;
}

/* Give the sources back to their owners (a store nobody takes is destroyed, logged). */
static void
give_back(struct reshard *t)
{
	uint32_t i;

	for (i = 0; i < t->nb_src; i++) {
		if (t->src[i].store == NULL ||
			km_mailbox_attach(t->src[i].owner, t->src[i].id, t->src[i].store) == 0)
			continue;
		km_store_destroy(t->src[i].store);
		KM_LOG(ERR, "%s: cannot give shard %" PRIu64 " back to worker %u", t->what,
			t->src[i].id, t->src[i].owner);
	}
}

/* Drop the staged targets (a moved store is the source itself: kept). */
static void
drop_targets(struct reshard *t)
{
	uint32_t i;

	if (t->kind == RESHARD_MOVE)
		return;
	for (i = 0; i < t->nb_dst; i++) {
		/* A staged rewrite of a shard's own files must not unlink the shard's files. */
		if (t->kind == RESHARD_RETIER)
			km_store_destroy(t->dst[i].store);
		else
			store_discard(t->dst[i].store);
		t->dst[i].store = NULL;
	}
}

/* Stage the targets and copy the sources into them. @return 0 or -errno. */
static int
stage_and_copy(struct reshard *t)
{
	uint64_t vbase = 0;
	struct km_store_stats st;
	int64_t copied = 0, c;
	uint32_t i;
	int rc = 0, to;

	for (i = 0; i < t->nb_src; i++) {
		km_store_stats(t->src[i].store, &st);
		vbase = RTE_MAX(vbase, st.version_last);
	}
	if (t->accept_loss) {
		/* The versions the lost files issued are not known: above the clock. */
		struct timespec now;

		clock_gettime(CLOCK_REALTIME, &now);
		vbase = RTE_MAX(vbase, (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec);
	}
	switch (t->kind) {
	case RESHARD_MOVE:
		t->dst[0].store = t->src[0].store; /* the store itself changes hands */
		t->keys = t->before.keys;
		return 0;
	case RESHARD_RETIER:
		to = t->tier < 0 ? (int)t->before.tier : t->tier;
		rc = km_proc_store_stage(km_dp.workers[t->dst[0].owner].proc, t->dst[0].id, vbase,
			(uint8_t)to, &t->dst[0].store);
		break;
	default:
		for (i = 0; i < t->nb_dst && rc == 0; i++)
			rc = km_proc_store_new(km_dp.workers[t->dst[i].owner].proc, t->dst[i].id,
				vbase, &t->dst[i].store);
		break;
	}
	if (rc < 0)
		return rc;
	if (t->accept_loss) {
		copied = 0;
	} else if (t->kind == RESHARD_SPLIT) {
		copied = km_proc_reshard_split(
			t->nm, t->src[0].store, t->src[0].id, t->dst[0].store, t->dst[1].store);
	} else {
		for (i = 0; i < t->nb_src && copied >= 0; i++) {
			c = km_proc_reshard_copy(t->src[i].store, t->dst[0].store);
			copied = c < 0 ? c : copied + c;
		}
	}
	if (copied < 0)
		return (int)copied;
	t->keys = (uint64_t)copied;
	for (i = 0; i < t->nb_dst && rc == 0; i++)
		rc = store_commit(t->dst[i].store);
	return rc;
}

/*
 * Run t. On success the targets serve, the new map (if any) is published and the sources
 * are gone. @return 0; -EALREADY (RESHARD_RETIER into the tier the shard is in: given
 * back, err not written); or -errno with a message in err, everything given back (but
 * after a rewrite's commit, see the top of the file).
 */
static int
reshard_run(struct reshard *t, char *err, size_t errlen)
{
	uint64_t t0 = rte_get_timer_cycles();
	uint32_t i, j;
	int rc = 0;

	for (i = 0; i < t->nb_src; i++) {
		rc = km_mailbox_detach(t->src[i].owner, t->src[i].id, &t->src[i].store);
		if (rc < 0) {
			t->src[i].store = NULL;
			if (i == 0 && t->kind != RESHARD_RETIER) {
				snprintf(err, errlen,
					"worker %u cannot hand over shard %" PRIu64 ": %s",
					t->src[0].owner, t->src[0].id, strerror(-rc));
				goto give_back;
			}
			goto failed;
		}
	}
	km_store_stats(t->src[0].store, &t->before);
	if ((t->kind == RESHARD_RETIER && !t->accept_loss && t->tier >= 0 &&
		    (int)t->before.tier == t->tier) ||
		(t->accept_loss && t->before.quarantined == 0)) {
		rc = -EALREADY;
		goto give_back;
	}
	for (i = 0; i < t->nb_src && !t->accept_loss; i++) {
		struct km_store_stats q;

		km_store_stats(t->src[i].store, &q);
		if (q.quarantined != 0) {
			snprintf(err, errlen,
				"shard %" PRIu64
				" is quarantined (its files are missing or damaged): "
				"restore them and restart, or keymapctl accept-loss %" PRIu64,
				t->src[i].id, t->src[i].id);
			rc = -EBADMSG;
			goto give_back;
		}
	}
	rc = stage_and_copy(t);
	if (rc < 0) {
		drop_targets(t);
		goto failed;
	}
	if (t->kind == RESHARD_RETIER) {
		/* The new files are in place: the old store must never serve again (its log is
		 * gone from the directory), whatever happens now. */
		km_store_destroy(t->src[0].store);
		t->src[0].store = NULL;
	}
	for (i = 0; i < t->nb_dst; i++) {
		rc = km_mailbox_attach(t->dst[i].owner, t->dst[i].id, t->dst[i].store);
		if (rc == 0)
			continue;
		if (t->kind == RESHARD_RETIER) {
			KM_LOG(ERR,
				"shard %" PRIu64 ": rewritten, but worker %u does not take it back "
				"(%s): it answers BUSY until a restart",
				t->dst[0].id, t->dst[0].owner, strerror(-rc));
			km_store_destroy(t->dst[0].store);
			snprintf(err, errlen, "worker %u did not take shard %" PRIu64 " back: %s",
				t->dst[0].owner, t->dst[0].id, strerror(-rc));
			km_shardmap_free(t->nm);
			return rc;
		}
		/* Take back the targets already attached before restoring the sources. */
		for (j = 0; j < i; j++)
			if (km_mailbox_detach(t->dst[j].owner, t->dst[j].id, &t->dst[j].store) < 0)
				t->dst[j].store = NULL; /* unreachable: left, no longer served */
		drop_targets(t);
		goto failed;
	}
	if (t->nm != NULL)
		km_control_publish_map(t->nm);
	km_ctl.last_pause_us = usec_since(t0);
	km_ctl.last_keys = t->keys;
	if (t->kind == RESHARD_RETIER)
		km_store_stats(t->dst[0].store, &t->after);
	if (t->kind == RESHARD_SPLIT || t->kind == RESHARD_MERGE)
		for (i = 0; i < t->nb_src; i++)
			store_discard(t->src[i].store);
	return 0;
failed:
	snprintf(err, errlen, "%s of shard %" PRIu64 " failed, nothing changed: %s", t->what,
		t->src[0].id, strerror(-rc));
give_back:
	km_shardmap_free(t->nm);
	t->nm = NULL;
	give_back(t);
	return rc;
}

int
km_ctl_split(uint64_t id, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *sh = km_shardmap_find(m, id);
	struct reshard t = {.kind = RESHARD_SPLIT, .what = "split", .nb_src = 1, .nb_dst = 2};
	int rc;

	if (sh == NULL)
		return refuse(err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id,
			km_shardmap_epoch(m));
	rc = km_shardmap_split(m, id, &t.nm);
	if (rc == -ERANGE)
		return refuse(err, errlen, -EINVAL, "shard %" PRIu64 " is at the depth limit (%u)",
			id, KM_SHARD_DEPTH_MAX);
	if (rc < 0)
		return refuse(err, errlen, rc, "cannot build the new map: %s", strerror(-rc));
	t.src[0] = (struct reshard_part){.id = id, .owner = km_shard_owner(sh)};
	t.dst[0] = (struct reshard_part){
		.id = id * 2, .owner = km_shard_owner(km_shardmap_find(t.nm, id * 2))};
	t.dst[1] = (struct reshard_part){
		.id = id * 2 + 1, .owner = km_shard_owner(km_shardmap_find(t.nm, id * 2 + 1))};
	rc = reshard_run(&t, err, errlen);
	if (rc < 0)
		return failed(rc);
	km_ctl.cnt.splits++;
	km_ctl.cnt.keys_handed_over += t.keys;
	KM_LOG(NOTICE,
		"split shard %" PRIu64 " (worker %u) into %" PRIu64 " (worker %u) and %" PRIu64
		" (worker %u): %" PRIu64 " entries, epoch %u, paused %" PRIu64 " us",
		id, t.src[0].owner, id * 2, t.dst[0].owner, id * 2 + 1, t.dst[1].owner, t.keys,
		km_shardmap_epoch(km_map_current), km_ctl.last_pause_us);
	return 0;
}

int
km_ctl_merge(uint64_t id, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *a = km_shardmap_find(m, id), *b = km_shardmap_find(m, id ^ 1);
	struct reshard t = {.kind = RESHARD_MERGE, .what = "merge", .nb_src = 2, .nb_dst = 1};
	uint64_t parent = id >> 1;
	int rc;

	if (a == NULL)
		return refuse(err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id,
			km_shardmap_epoch(m));
	if (id <= 1)
		return refuse(
			err, errlen, -EINVAL, "shard 1 is the whole key space: nothing to merge");
	if (b == NULL)
		return refuse(err, errlen, -EINVAL,
			"shard %" PRIu64 " and %" PRIu64 " are not buddies: %" PRIu64
			" is split further",
			id, id ^ 1, id ^ 1);
	rc = km_shardmap_merge(m, id, &t.nm);
	if (rc < 0)
		return refuse(err, errlen, rc, "cannot build the new map: %s", strerror(-rc));
	t.src[0] = (struct reshard_part){.id = id, .owner = km_shard_owner(a)};
	t.src[1] = (struct reshard_part){.id = id ^ 1, .owner = km_shard_owner(b)};
	t.dst[0] = (struct reshard_part){
		.id = parent, .owner = km_shard_owner(km_shardmap_find(t.nm, parent))};
	rc = reshard_run(&t, err, errlen);
	if (rc < 0)
		return failed(rc);
	km_ctl.cnt.merges++;
	km_ctl.cnt.keys_handed_over += t.keys;
	KM_LOG(NOTICE,
		"merged shards %" PRIu64 " (worker %u) and %" PRIu64 " (worker %u) into %" PRIu64
		" (worker %u): %" PRIu64 " entries, epoch %u, paused %" PRIu64 " us",
		id, t.src[0].owner, id ^ 1, t.src[1].owner, parent, t.dst[0].owner, t.keys,
		km_shardmap_epoch(km_map_current), km_ctl.last_pause_us);
	return 0;
}

int
km_ctl_move(uint64_t id, uint16_t worker, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *sh = km_shardmap_find(m, id);
	struct reshard t = {.kind = RESHARD_MOVE, .what = "move", .nb_src = 1, .nb_dst = 1};
	int rc;

	if (sh == NULL)
		return refuse(err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id,
			km_shardmap_epoch(m));
	if (worker >= km_dp.nb_workers)
		return refuse(err, errlen, -EINVAL, "no worker %u (workers are 0..%u)", worker,
			km_dp.nb_workers - 1);
	if (km_shard_owner(sh) == worker)
		return refuse(err, errlen, -EINVAL, "shard %" PRIu64 " is already on worker %u", id,
			worker);
	rc = km_shardmap_move(m, id, worker, &t.nm);
	if (rc < 0)
		return refuse(err, errlen, rc, "cannot build the new map: %s", strerror(-rc));
	t.src[0] = (struct reshard_part){.id = id, .owner = km_shard_owner(sh)};
	t.dst[0] = (struct reshard_part){.id = id, .owner = worker};
	rc = reshard_run(&t, err, errlen);
	if (rc < 0)
		return failed(rc);
	km_ctl.cnt.moves++;
	km_ctl.cnt.keys_handed_over += t.keys;
	KM_LOG(NOTICE,
		"moved shard %" PRIu64 " from worker %u to worker %u: epoch %u, paused %" PRIu64
		" us",
		id, t.src[0].owner, worker, km_shardmap_epoch(km_map_current),
		km_ctl.last_pause_us);
	return 0;
}

static const char *
tier_name(int tier)
{
	return tier == KM_TIER_COLD ? "cold" : "hot";
}

int
km_ctl_retier(uint64_t id, int tier, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *sh = km_shardmap_find(m, id);
	struct reshard t = {.kind = RESHARD_RETIER, .tier = tier, .nb_src = 1, .nb_dst = 1};
	int rc;

	t.what = tier < 0 ? "compaction" : "tier change";
	if (sh == NULL)
		return refuse(err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id,
			km_shardmap_epoch(m));
	if (km_store_driver(km_ctl.conf.store_driver)->commit == NULL)
		return refuse(err, errlen, -EINVAL,
			"[store] driver %s keeps no files: no tiers, nothing to compact",
			km_ctl.conf.store_driver);
	t.src[0] = (struct reshard_part){.id = id, .owner = km_shard_owner(sh)};
	t.dst[0] = t.src[0];
	rc = reshard_run(&t, err, errlen);
	if (rc == -EALREADY)
		return refuse(err, errlen, -EINVAL, "shard %" PRIu64 " is already %s", id,
			tier_name(tier));
	if (rc < 0) {
		km_ctl.cnt.tier_failures++;
		return rc;
	}
	if (tier < 0)
		km_ctl.cnt.compactions++;
	else if (tier == KM_TIER_COLD)
		km_ctl.cnt.to_cold++;
	else
		km_ctl.cnt.to_hot++;
	KM_LOG(NOTICE,
		"%s shard %" PRIu64 " (worker %u): %" PRIu64 " entries, %" PRIu64 " -> %" PRIu64
		" bytes on disk, paused %" PRIu64 " us",
		tier < 0                       ? "compacted"
		: t.after.tier == KM_TIER_COLD ? "moved to the cold tier"
					       : "promoted",
		id, km_shard_owner(sh), t.keys, t.before.file_bytes, t.after.file_bytes,
		km_ctl.last_pause_us);
	return 0;
}

int
km_ctl_accept_loss(uint64_t id, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *sh = km_shardmap_find(m, id);
	struct reshard t = {.kind = RESHARD_RETIER,
		.what = "accept-loss",
		.tier = KM_TIER_HOT,
		.accept_loss = 1,
		.nb_src = 1,
		.nb_dst = 1};
	int rc;

	if (sh == NULL)
		return refuse(err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id,
			km_shardmap_epoch(m));
	if (km_store_driver(km_ctl.conf.store_driver)->commit == NULL)
		return refuse(err, errlen, -EINVAL, "[store] driver %s keeps no files",
			km_ctl.conf.store_driver);
	t.src[0] = (struct reshard_part){.id = id, .owner = km_shard_owner(sh)};
	t.dst[0] = t.src[0];
	rc = reshard_run(&t, err, errlen);
	if (rc == -EALREADY)
		return refuse(err, errlen, -EINVAL, "shard %" PRIu64 " is not quarantined", id);
	if (rc < 0)
		return rc;
	KM_LOG(WARNING,
		"shard %" PRIu64 " (worker %u): its lost data given up by the operator, empty "
		"files in place; it serves again",
		id, km_shard_owner(sh));
	return 0;
}
