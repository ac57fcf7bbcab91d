/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Re-sharding.
 *
 * Split and merge are incremental (a job): the owner copies the shard into new stores
 * between its bursts while it keeps serving (km_proc_mig_*), the control lcore watches the
 * copy from km_ctl_reshard_tick() and, once it is whole, has the owner swap the copies in
 * at one loop boundary and publishes the new map. No request is answered BUSY for it; the
 * swap is the only pause (a few microseconds in DRAM, a commit for persistent shards). Two
 * buddies on different workers are first brought together by a move.
 *
 * A move is one command to the old owner, which detaches the shard and has the new owner
 * attach it, handing the shard's requests over meanwhile (move_run, km_mailbox_move): no
 * request is answered BUSY for it; then the map is published.
 *
 * Tier changes and compactions are one transaction:
 *
 *   detach sources -> stage targets -> copy -> commit -> attach targets -> publish the map
 *
 * The shards concerned answer BUSY from their detach to the publication (clients retry);
 * every step that fails undoes the ones before it, so that the shards go back to their
 * owners unchanged. A tier change or a compaction rewrites a shard in place: once its new
 * files are committed the old store may never serve again, so its attach cannot be
 * undone (the shard then answers BUSY until a restart, logged).
 */

#define KM_LOG_COMP KM_LOG_CONTROL /* keymapd.h */

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_common.h>
#include <rte_cycles.h>

#include "cluster.h"
#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "mailbox.h"

enum reshard_kind {
	RESHARD_MOVE,   /* src[0]'s store changes owner: no copy, one command (move_run) */
	RESHARD_RETIER, /* src[0] -> dst[0], same id, staged in a tier and copied */
};

struct reshard_part {
	uint64_t id;
	uint16_t owner;
	struct km_store *store;
	struct km_proc_dedup *dedup; /* its at-most-once entries, handed over with it */
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
	if (rc != -ENOENT && rc != -EINVAL && rc != -EBUSY)
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
		if (t->src[i].store == NULL || km_mailbox_attach(t->src[i].owner, t->src[i].id,
						       t->src[i].store, &t->src[i].dedup, 1) == 0)
			continue;
		km_proc_dedup_free(t->src[i].dedup);
		t->src[i].dedup = NULL;
		km_store_destroy(t->src[i].store);
		KM_LOG(ERR, "%s: cannot give shard %" PRIu64 " back to worker %u", t->what,
			t->src[i].id, t->src[i].owner);
	}
}

/* Drop the staged targets. */
static void
drop_targets(struct reshard *t)
{
	uint32_t i;

	for (i = 0; i < t->nb_dst; i++) {
		/* A staged rewrite of a shard's own files must not unlink the shard's files. */
		if (t->kind == RESHARD_RETIER)
			km_store_destroy(t->dst[i].store);
		else
			km_store_discard(t->dst[i].store);
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
	to = t->tier < 0 ? (int)t->before.tier : t->tier;
	rc = km_proc_store_stage(km_dp.workers[t->dst[0].owner].proc, t->dst[0].id, vbase,
		(uint8_t)to, &t->dst[0].store);
	if (rc < 0)
		return rc;
	if (t->accept_loss) {
		copied = 0;
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
reshard_steps(struct reshard *t, char *err, size_t errlen)
{
	uint64_t t0 = rte_get_timer_cycles();
	uint32_t i, j;
	int rc = 0;

	for (i = 0; i < t->nb_src; i++) {
		rc = km_mailbox_detach(
			t->src[i].owner, t->src[i].id, &t->src[i].store, &t->src[i].dedup);
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
		/* A move hands the entries over with the store; a rewrite keeps them. */
		/* A rewrite keeps the entries, with nothing to wait for (committed). */
		rc = km_mailbox_attach(
			t->dst[i].owner, t->dst[i].id, t->dst[i].store, &t->src[i].dedup, 0);
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
			if (km_mailbox_detach(t->dst[j].owner, t->dst[j].id, &t->dst[j].store,
				    &t->src[j].dedup) < 0)
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

/* reshard_steps(), then the at-most-once entries no worker took are dropped (their
 * retries execute again). */
static int
reshard_run(struct reshard *t, char *err, size_t errlen)
{
	int rc = reshard_steps(t, err, errlen);
	uint32_t i;

	for (i = 0; i < t->nb_src; i++) {
		km_proc_dedup_free(t->src[i].dedup);
		t->src[i].dedup = NULL;
	}
	return rc;
}

/* ---- incremental split and merge ---- */

/* Whether shard id takes part in the job in progress (its source or its target). */
static int
job_involves(uint64_t id)
{
	const struct km_reshard_status *j = &km_ctl.reshard;

	if (!j->active)
		return 0;
	if (j->kind == KM_MIG_SPLIT)
		return id == j->id || id == j->id * 2 || id == j->id * 2 + 1;
	return id == j->id || id >> 1 == j->id;
}

static const char *
job_what(uint8_t kind)
{
	return kind == KM_MIG_SPLIT ? "split" : "merge";
}

/* -EBUSY with a message when a job is in progress, or a routing override still moves
 * keys (a copy would not see the shifter's moves), else 0. */
static int
job_busy(char *err, size_t errlen)
{
	const struct km_reshard_status *j = &km_ctl.reshard;
	uint32_t i;

	for (i = 0; i < km_shardmap_nb_overrides(km_map_current); i++)
		if (km_shardmap_override_at(km_map_current, i)->state != KM_OVR_SETTLED)
			return refuse(err, errlen, -EBUSY,
				"a routing override is still moving keys (keymapctl overrides): "
				"split and merge wait until it is settled");
	if (!j->active)
		return 0;
	return refuse(err, errlen, -EBUSY,
		"a %s of shard %" PRIu64 " is in progress (keymapctl shards shows it): "
		"try again when it is done",
		job_what(j->kind), j->kind == KM_MIG_SPLIT ? j->id : j->id * 2);
}

static int
job_start(enum km_mig_kind kind, uint64_t id, uint16_t owner, char *err, size_t errlen)
{
	struct km_reshard_status *j = &km_ctl.reshard;
	struct km_wcmd *c = km_mailbox_cmd_new(KM_WCMD_MIG_START, id);
	int rc;

	if (c == NULL)
		return refuse(err, errlen, -ENOMEM, "out of memory");
	c->kind = (uint8_t)kind;
	rc = km_mailbox_run(owner, c);
	km_mailbox_cmd_free(c, rc);
	if (rc == -EBADMSG && kind == KM_MIG_SPLIT)
		return refuse(err, errlen, rc,
			"shard %" PRIu64 " is quarantined (its files are missing or damaged): "
			"restore them and restart, or keymapctl accept-loss %" PRIu64,
			id, id);
	if (rc == -EBADMSG)
		return refuse(err, errlen, rc,
			"shard %" PRIu64 " or %" PRIu64
			" is quarantined (its files are missing or damaged): "
			"restore them and restart, or keymapctl accept-loss",
			id * 2, id * 2 + 1);
	if (rc < 0)
		return refuse(err, errlen, rc, "worker %u cannot start the %s: %s", owner,
			job_what(kind), strerror(-rc));
	*j = (struct km_reshard_status){
		.seq = j->seq + 1,
		.active = 1,
		.kind = (uint8_t)kind,
		.id = id,
		.owner = owner,
		.t0 = rte_get_timer_cycles(),
	};
	KM_LOG(INFO, "%s of shard %" PRIu64 " started on worker %u", job_what(kind),
		kind == KM_MIG_SPLIT ? id : id * 2, owner);
	return 0;
}

/* The job is over: rc and its message. */
static void job_end(int rc, const char *fmt, ...) __rte_format_printf(2, 3);

static void
job_end(int rc, const char *fmt, ...)
{
	struct km_reshard_status *j = &km_ctl.reshard;
	va_list ap;

	j->active = 0;
	j->rc = rc;
	j->copy_ms = usec_since(j->t0) / 1000;
	va_start(ap, fmt);
	vsnprintf(j->msg, sizeof(j->msg), fmt, ap);
	va_end(ap);
	if (rc < 0) {
		km_ctl.cnt.reshard_failures++;
		KM_LOG(ERR, "%s", j->msg);
	} else {
		KM_LOG(NOTICE, "%s", j->msg);
	}
}

/* Have the owner drop its copies (the sources serve on). @return 0 or -errno. */
static int
job_cancel(void)
{
	struct km_wcmd *c = km_mailbox_cmd_new(KM_WCMD_MIG_CANCEL, km_ctl.reshard.id);
	int rc;

	if (c == NULL)
		return -ENOMEM;
	rc = km_mailbox_run(km_ctl.reshard.owner, c);
	km_mailbox_cmd_free(c, rc);
	return rc;
}

/*
 * The job failed (rc, message): the owner drops its copies, then the job ends. A cancel
 * the worker did not take is tried again at every tick (the job stays active meanwhile:
 * the worker would refuse another migration, and repeats writes into its copies).
 */
static void job_fail(int rc, const char *fmt, ...) __rte_format_printf(2, 3);

static void
job_fail(int rc, const char *fmt, ...)
{
	struct km_reshard_status *j = &km_ctl.reshard;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->msg, sizeof(j->msg), fmt, ap);
	va_end(ap);
	j->rc = rc;
	j->cancelling = 1;
	if (job_cancel() == 0) {
		char msg[sizeof(j->msg)];

		j->cancelling = 0;
		memcpy(msg, j->msg, sizeof(msg));
		job_end(rc, "%s", msg);
	}
}

/* The map after the job, from the current one, at the next epoch: the new shards on the
 * owner that holds them (it may move them afterwards). @return 0 or -errno. */
static int
job_map(struct km_shardmap **out)
{
	const struct km_reshard_status *j = &km_ctl.reshard;
	const struct km_shardmap *cur = km_map_current;
	struct km_shardmap *nm;
	uint64_t *ids;
	uint16_t *owners;
	uint32_t i, n;
	int rc;

	rc = j->kind == KM_MIG_SPLIT ? km_shardmap_split(cur, j->id, &nm)
				     : km_shardmap_merge(cur, j->id * 2, &nm);
	if (rc < 0)
		return rc;
	n = km_shardmap_nb_shards(nm);
	ids = calloc(n, sizeof(*ids));
	owners = calloc(n, sizeof(*owners));
	if (ids == NULL || owners == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		const struct km_shard *sh = km_shardmap_shard_at(nm, i);
		uint64_t id = km_shard_id(sh);
		int made = j->kind == KM_MIG_SPLIT ? id >> 1 == j->id : id == j->id;

		ids[i] = id;
		/* Explicit owners stay explicit; the new shards are where their copies are. */
		owners[i] = made || km_shard_moved(sh) ? (made ? j->owner : km_shard_owner(sh))
						       : KM_OWNER_JUMP;
	}
	rc = km_shardmap_from_list(km_shardmap_epoch(cur) + 1, km_shardmap_nb_workers(cur),
		km_shardmap_udp_port_base(cur), km_shardmap_route_sep(cur),
		km_shardmap_route_depth(cur), ids, owners, n, out);
	if (rc == 0 && km_shardmap_nb_overrides(cur) != 0) {
		/* The routing overrides stay (jobs run only while they are settled). */
		struct km_override_info ov[KM_OVERRIDES_MAX];

		for (i = 0; i < km_shardmap_nb_overrides(cur); i++)
			ov[i] = *km_shardmap_override_at(cur, i);
		rc = km_shardmap_set_overrides(*out, ov, km_shardmap_nb_overrides(cur));
		if (rc < 0) {
			km_shardmap_free(*out);
			*out = NULL;
		}
	}
out:
	free(ids);
	free(owners);
	km_shardmap_free(nm);
	return rc;
}

/*
 * Stores a split or merge replaced, freed a little per control loop iteration (a store of
 * a million entries takes a few hundred milliseconds to free: at once, it would hold the
 * control lcore, and on a small host the CPU it shares).
 */
#define GRAVE_STEP 16384 /* entries freed per iteration */
static struct km_store **grave;
static uint32_t nb_grave;

static void
store_bury(struct km_store *s)
{
	struct km_store **g;

	if (s == NULL)
		return;
	if (s->ops->unlink != NULL || s->ops->destroy_step == NULL) {
		km_store_discard(s); /* files to remove now, or nothing worth spreading */
		return;
	}
	g = realloc(grave, (nb_grave + 1) * sizeof(*grave));
	if (g == NULL) {
		km_store_destroy(s);
		return;
	}
	grave = g;
	grave[nb_grave++] = s;
}

static void
grave_step(void)
{
	if (nb_grave == 0)
		return;
	if (km_store_destroy_step(grave[nb_grave - 1], GRAVE_STEP) == 0)
		nb_grave--;
	if (nb_grave == 0) {
		free(grave);
		grave = NULL;
	}
}

void
km_ctl_reshard_fini(void)
{
	while (nb_grave > 0)
		grave_step();
}

/*
 * A split's halves are copied on the parent's owner: with placement on ([shards]
 * balance_pct), the upper one then goes where placement would put a new shard of its rate
 * (km_ctl_place: the least loaded worker), if that is another worker. The store is handed
 * over: O(1).
 */
static void
place_child(uint64_t id, uint16_t owner)
{
	double rate = 0;
	char err[256];
	uint16_t to;
	uint32_t i;

	for (i = 0; i < km_ctl.nb_shards; i++)
		if (km_ctl.shards[i].id == id >> 1)
			rate = km_ctl.shards[i].rate / 2;
	if (km_ctl.conf.balance_pct == 0 || km_dp.nb_workers < 2 || rate <= 0)
		return; /* placement off: the operator places */
	to = km_ctl_place(rate);
	if (to == owner || to >= km_dp.nb_workers)
		return;
	if (km_ctl_move(id, to, err, sizeof(err)) < 0)
		KM_LOG(WARNING, "placing shard %" PRIu64 " of a split: %s", id, err);
}

int
km_ctl_reshard_active(void)
{
	return km_ctl.reshard.active || nb_grave > 0;
}

void
km_ctl_reshard_tick(void)
{
	struct km_reshard_status *j = &km_ctl.reshard;
	struct km_shardmap *nm = NULL;
	struct km_wcmd *c;
	uint64_t keys = 0, pause_us = 0;
	struct km_store *old[2] = {NULL, NULL};
	int rc, place = 0;

	grave_step();
	if (!j->active)
		return;
	if (j->cancelling) {
		if (job_cancel() == 0) {
			char msg[sizeof(j->msg)];

			j->cancelling = 0;
			memcpy(msg, j->msg, sizeof(msg));
			job_end(j->rc, "%s", msg);
		}
		return;
	}
	km_proc_mig_progress(km_dp.workers[j->owner].proc, &j->progress);
	if (j->progress.phase == KM_MIG_COPYING)
		return;
	if (j->progress.phase != KM_MIG_READY) {
		rc = j->progress.err < 0 ? j->progress.err : -ECANCELED;
		job_fail(rc, "%s of shard %" PRIu64 " failed while copying, nothing changed: %s",
			job_what(j->kind), j->kind == KM_MIG_SPLIT ? j->id : j->id * 2,
			strerror(-rc));
		return;
	}
	rc = job_map(&nm);
	c = rc == 0 ? km_mailbox_cmd_new(KM_WCMD_MIG_FINISH, j->id) : NULL;
	if (c == NULL) {
		km_shardmap_free(nm);
		job_fail(rc < 0 ? rc : -ENOMEM,
			"%s of shard %" PRIu64 " failed, nothing changed: cannot build the map: %s",
			job_what(j->kind), j->id, strerror(rc < 0 ? -rc : ENOMEM));
		return;
	}
	rc = km_mailbox_run(j->owner, c);
	if (rc == 0) { /* an abandoned command is the worker's: read nothing of it */
		memcpy(old, c->old, sizeof(old));
		keys = c->keys;
		pause_us = c->pause_tsc * 1000000 / rte_get_tsc_hz();
	}
	km_mailbox_cmd_free(c, rc);
	if (rc == -EAGAIN || rc == -EBUSY || rc == -ETIMEDOUT) {
		/* Not whole any more (the copy goes on), or the worker did not take the
		 * command: again at the next tick. */
		km_shardmap_free(nm);
		return;
	}
	if (rc < 0) {
		km_shardmap_free(nm);
		job_fail(rc, "%s of shard %" PRIu64 " failed at the swap, nothing changed: %s",
			job_what(j->kind), j->kind == KM_MIG_SPLIT ? j->id : j->id * 2,
			strerror(-rc));
		return;
	}
	km_control_publish_map(nm);
	store_bury(old[0]);
	store_bury(old[1]);
	km_ctl.last_pause_us = pause_us;
	km_ctl.last_keys = keys;
	km_ctl.cnt.keys_handed_over += keys;
	j->keys = keys;
	j->pause_us = pause_us;
	j->epoch = km_shardmap_epoch(km_map_current);
	if (j->kind == KM_MIG_SPLIT) {
		km_ctl.cnt.splits++;
		place = 1;
		job_end(0,
			"split shard %" PRIu64 " (worker %u) into %" PRIu64 " and %" PRIu64
			": %" PRIu64 " entries copied while serving in %" PRIu64
			" ms, epoch %u, paused %" PRIu64 " us",
			j->id, j->owner, j->id * 2, j->id * 2 + 1, keys, usec_since(j->t0) / 1000,
			j->epoch, pause_us);
	} else {
		km_ctl.cnt.merges++;
		job_end(0,
			"merged shards %" PRIu64 " and %" PRIu64 " (worker %u) into %" PRIu64
			": %" PRIu64 " entries copied while serving in %" PRIu64
			" ms, epoch %u, paused %" PRIu64 " us",
			j->id * 2, j->id * 2 + 1, j->owner, j->id, keys, usec_since(j->t0) / 1000,
			j->epoch, pause_us);
	}
	if (place)
		place_child(j->id * 2 + 1, j->owner);
}

int
km_ctl_split(uint64_t id, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *sh = km_shardmap_find(m, id);
	int rc;

	if (km_cluster_on())
		return refuse(err, errlen, -ENOTSUP,
			"a cluster node's shards are split, merged and moved by keymap-placer "
			"(docs/cluster.md)");
	if (sh == NULL)
		return refuse(err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id,
			km_shardmap_epoch(m));
	if (km_shard_depth(id) >= KM_SHARD_DEPTH_MAX)
		return refuse(err, errlen, -EINVAL, "shard %" PRIu64 " is at the depth limit (%u)",
			id, KM_SHARD_DEPTH_MAX);
	rc = job_busy(err, errlen);
	if (rc < 0)
		return rc;
	return job_start(KM_MIG_SPLIT, id, km_shard_owner(sh), err, errlen);
}

int
km_ctl_merge(uint64_t id, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *a = km_shardmap_find(m, id), *b = km_shardmap_find(m, id ^ 1);
	uint16_t owner;
	int rc;

	if (km_cluster_on())
		return refuse(err, errlen, -ENOTSUP,
			"a cluster node's shards are split, merged and moved by keymap-placer "
			"(docs/cluster.md)");
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
	rc = job_busy(err, errlen);
	if (rc < 0)
		return rc;
	/* Both halves on one worker first: the merge copies on the owner. (The move
	 * publishes a new map: a and b are gone with the old one.) */
	owner = km_shard_owner(a);
	if (km_shard_owner(b) != owner) {
		rc = km_ctl_move(id ^ 1, owner, err, errlen);
		if (rc < 0)
			return rc;
	}
	return job_start(KM_MIG_MERGE, id >> 1, owner, err, errlen);
}

/*
 * A move: one command to the old owner, which detaches the shard and has the new owner
 * attach it (km_mailbox_move), handing the shard's requests over meanwhile instead of
 * answering BUSY; then the new map is published. t->nm is published or freed.
 * @return 0, or -errno with a message in err (the shard given back: nothing changed).
 */
static int
move_run(struct reshard *t, char *err, size_t errlen)
{
	struct km_move_phases *ph = &km_ctl.last_move;
	uint64_t t0 = rte_get_timer_cycles(), t1;
	struct reshard_part *src = &t->src[0];
	uint32_t dedup_n = 0;
	int rc;

	rc = km_mailbox_move(src->owner, t->dst[0].owner, src->id, km_shardmap_epoch(t->nm),
		&src->store, &src->dedup, &t->keys, &dedup_n);
	*ph = (struct km_move_phases){
		.dedup = dedup_n,
		.old_queued_us = km_mailbox_last.queued_us,
		.old_run_us = km_mailbox_last.run_us,
		.new_queued_us = km_mailbox_last.in_queued_us,
		.new_run_us = km_mailbox_last.in_run_us,
		.seen_us = km_mailbox_last.seen_us,
	};
	if (rc < 0) {
		km_shardmap_free(t->nm);
		t->nm = NULL;
		if (rc == -EBADMSG)
			snprintf(err, errlen,
				"shard %" PRIu64
				" is quarantined (its files are missing or damaged): "
				"restore them and restart, or keymapctl accept-loss %" PRIu64,
				src->id, src->id);
		else if (src->store == NULL)
			snprintf(err, errlen, "worker %u cannot hand over shard %" PRIu64 ": %s",
				src->owner, src->id, strerror(-rc));
		else
			snprintf(err, errlen,
				"move of shard %" PRIu64 " failed, nothing changed: worker %u "
				"cannot take it: %s",
				src->id, t->dst[0].owner, strerror(-rc));
		give_back(t);
		km_proc_dedup_free(src->dedup);
		src->dedup = NULL;
		return rc;
	}
	t1 = rte_get_timer_cycles();
	km_control_publish_map(t->nm);
	t->nm = NULL;
	km_ctl.last_pause_us = usec_since(t0);
	km_ctl.last_keys = t->keys;
	ph->publish_us = usec_since(t1);
	KM_LOG(DEBUG,
		"move of shard %" PRIu64 ": old owner %" PRIu64 "+%" PRIu64
		" us (queued, run), new owner %" PRIu64 "+%" PRIu64 " us, seen after %" PRIu64
		" us, published in %" PRIu64 " us",
		src->id, ph->old_queued_us, ph->old_run_us, ph->new_queued_us, ph->new_run_us,
		ph->seen_us, ph->publish_us);
	return 0;
}

int
km_ctl_move(uint64_t id, uint16_t worker, char *err, size_t errlen)
{
	const struct km_shardmap *m = km_map_current;
	const struct km_shard *sh = km_shardmap_find(m, id);
	struct reshard t = {.kind = RESHARD_MOVE, .what = "move", .nb_src = 1, .nb_dst = 1};
	uint32_t i;
	int rc;

	if (km_cluster_on())
		return refuse(err, errlen, -ENOTSUP,
			"a cluster node's shards are split, merged and moved by keymap-placer "
			"(docs/cluster.md)");
	if (sh == NULL)
		return refuse(err, errlen, -ENOENT, "no shard %" PRIu64 " in map epoch %u", id,
			km_shardmap_epoch(m));
	if (worker >= km_dp.nb_workers)
		return refuse(err, errlen, -EINVAL, "no worker %u (workers are 0..%u)", worker,
			km_dp.nb_workers - 1);
	if (job_involves(id))
		return job_busy(err, errlen);
	/* An override that still moves keys: its old places' requests and at-most-once
	 * records must stay where its fallback looks for them. */
	for (i = 0; i < km_shardmap_nb_overrides(m); i++)
		if (km_shardmap_override_at(m, i)->state != KM_OVR_SETTLED)
			return refuse(err, errlen, -EBUSY,
				"a routing override is still moving keys (keymapctl overrides): "
				"moves wait until it is settled");
	if (km_shard_owner(sh) == worker)
		return refuse(err, errlen, -EINVAL, "shard %" PRIu64 " is already on worker %u", id,
			worker);
	rc = km_shardmap_move(m, id, worker, &t.nm);
	if (rc < 0)
		return refuse(err, errlen, rc, "cannot build the new map: %s", strerror(-rc));
	t.src[0] = (struct reshard_part){.id = id, .owner = km_shard_owner(sh)};
	t.dst[0] = (struct reshard_part){.id = id, .owner = worker};
	rc = move_run(&t, err, errlen);
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
	if (sh == NULL || km_shard_owner(sh) == KM_OWNER_REMOTE)
		return refuse(err, errlen, -ENOENT,
			"no shard %" PRIu64 " on this node in map epoch %u", id,
			km_shardmap_epoch(m));
	if (job_involves(id))
		return job_busy(err, errlen);
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

	if (sh == NULL || km_shard_owner(sh) == KM_OWNER_REMOTE)
		return refuse(err, errlen, -ENOENT,
			"no shard %" PRIu64 " on this node in map epoch %u", id,
			km_shardmap_epoch(m));
	if (job_involves(id))
		return job_busy(err, errlen);
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
