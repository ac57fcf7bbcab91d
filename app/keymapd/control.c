/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * The control lcore: its loop (requests of other threads, what workers send back, load
 * samples and the automatic policies), runtime configuration, the map and allow-list
 * publications, the reload on SIGHUP, and the counters printed to the log. The mechanisms live
 * beside it: mailbox.c (rings and handshakes with the workers, km_ctl_call), reshard.c (the
 * re-sharding transaction), sample.c (load sampling); the policies are pure functions of
 * lib/policy.
 */

#define KM_LOG_COMP KM_LOG_CONTROL /* keymapd.h */

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <rte_malloc.h>

#include <urcu-qsbr.h>

#include <km_policy.h>

#include "cluster.h"
#include "control.h"
#include "crew.h"
#include "datapath.h"
#include "keymapd.h"
#include "mailbox.h"
#include "prefetch.h"
#include "shift.h"
#include "stats.h"

#define RESHARD_POLL_US 500  /* control loop period while a split or merge copies */
#define PF_POLL_US      100  /* control loop period while workers' notes flow */
#define PLACE_MOVES_MAX 16   /* moves one placement decision may choose */
#define PF_IDLE_US      1000 /* ... while prefetching is on and nothing flows */

static struct {
	const struct km_store_ops *drv; /* NULL: no manifest */
	char dir[KM_CONF_STR_MAX];
} manifest;

void
km_control_manifest_init(const struct km_conf *conf)
{
	const struct km_store_ops *drv = km_store_driver(conf->store_driver);

	manifest.drv = drv != NULL && drv->manifest != NULL ? drv : NULL;
	snprintf(manifest.dir, sizeof(manifest.dir), "%s", conf->data_dir);
}

/* The data directory's manifest lists the shards of map (a failure is logged: the next
 * change writes it again, and a start finds the files themselves). */
static void
manifest_write(const struct km_shardmap *map)
{
	struct km_store_params sp = {.dir = manifest.dir};
	uint32_t i, n = km_shardmap_nb_shards(map);
	uint64_t *ids;
	int rc = -ENOMEM;

	if (manifest.drv == NULL)
		return;
	ids = malloc((n ? n : 1) * sizeof(*ids));
	if (ids != NULL) {
		uint32_t k = 0;

		/* This node's shards (a cluster map has the others' too). */
		for (i = 0; i < n; i++)
			if (km_shard_owner(km_shardmap_shard_at(map, i)) != KM_OWNER_REMOTE)
				ids[k++] = km_shard_id(km_shardmap_shard_at(map, i));
		rc = manifest.drv->manifest(&sp, ids, k);
		free(ids);
	}
	if (rc < 0)
		KM_LOG(WARNING, "%s/MANIFEST: cannot write it: %s", manifest.dir, strerror(-rc));
}

void
km_control_publish_map(struct km_shardmap *map)
{
	struct km_shardmap *old = km_map_current;

	manifest_write(map);
	/* Release: workers that see the new pointer see the map's contents. */
	rcu_assign_pointer(km_map_current, map);
	if (old == NULL)
		return;
	/* Waits only for online workers to pass a quiescent state; sleeping workers are
	 * offline. The control lcore blocks here, never a worker. */
	synchronize_rcu();
	km_shardmap_free(old);
}

static void
print_row(FILE *f, const char *name, const uint64_t *per, uint16_t n)
{
	uint64_t total = 0;
	uint16_t i;

	for (i = 0; i < n; i++)
		total += per[i];
	fprintf(f, "%-16s %14" PRIu64, name, total);
	if (n > 1)
		for (i = 0; i < n; i++)
			fprintf(f, " %12" PRIu64, per[i]);
	fputc('\n', f);
}

void
km_control_print_interval(FILE *f, struct km_interval *prev, double secs)
{
	uint64_t reqs = 0, cycles = 0, rxc = 0, txc = 0, r, c, rx, tx;
	uint16_t i;

	/* Counters are plain words each worker updates alone: a read may be one update old. */
	for (i = 0; i < km_dp.nb_workers; i++) {
		reqs += km_worker_requests(&km_dp.workers[i]);
		cycles += km_dp.workers[i].cnt.busy_cycles;
		rxc += km_dp.workers[i].cnt.rx_cycles;
		txc += km_dp.workers[i].cnt.tx_cycles;
	}
	r = reqs - prev->requests;
	c = cycles - prev->busy_cycles;
	rx = rxc - prev->rx_cycles;
	tx = txc - prev->tx_cycles;
	if (tx > c) /* read between a worker's two updates */
		tx = c;
	fprintf(f,
		"interval %.1f s: requests %" PRIu64 " (%.0f/s) cycles_per_req %" PRIu64
		" (rx %" PRIu64 ", proc %" PRIu64 ", tx %" PRIu64 ")\n",
		secs, r, secs > 0 ? (double)r / secs : 0.0, r == 0 ? 0 : c / r, r == 0 ? 0 : rx / r,
		r == 0 ? 0 : c / r - tx / r, r == 0 ? 0 : tx / r);
	fflush(f);
	prev->requests = reqs;
	prev->busy_cycles = cycles;
	prev->rx_cycles = rxc;
	prev->tx_cycles = txc;
}

void
km_control_print_stats(FILE *f, int workers_stopped)
{
	uint64_t per[KM_WORKERS_MAX] = {0};
	const struct km_stats_desc *d;
	struct km_stats_snap s;
	struct km_store_stats st;
	uint16_t n, i;
	size_t k;

	if (km_stats_take(&s) < 0)
		return;
	n = s.nb_workers;
	fprintf(f, "%-16s %14s", "counter", "total");
	if (n > 1)
		for (i = 0; i < n; i++)
			fprintf(f, " %11s%u", "w", i);
	fputc('\n', f);
	/* The per-worker figures of the table (stats.h). A ratio has no total. */
	for (k = 0; k < km_stats_table_len; k++) {
		d = &km_stats_table[k];
		if (d->where != KM_STATS_WORKER)
			continue;
		for (i = 0; i < n; i++)
			per[i] = km_stats_u64(&s, d, i);
		if (d->kind == KM_STAT_COUNTER) {
			print_row(f, d->tel, per, n);
			continue;
		}
		fprintf(f, "%-16s", d->tel);
		for (i = 0; i < n; i++)
			fprintf(f, " %12" PRIu64, per[i]);
		fputc('\n', f);
	}
	/* What the port lost before the workers' queues, and the workers' TX queues. */
	fprintf(f, "%-16s %14s\n", "port", s.port_name);
	for (k = 0; k < km_stats_table_len; k++) {
		d = &km_stats_table[k];
		if (d->where == KM_STATS_PORT)
			fprintf(f, "%-16s %14" PRIu64 "\n", d->tel, km_stats_u64(&s, d, 0));
	}
	km_stats_release(&s);
	/* Stores belong to their workers: walk them only once the workers have stopped. */
	for (i = 0; workers_stopped && i < n; i++) {
		km_proc_store_stats(km_dp.workers[i].proc, &st);
		fprintf(f,
			"store w%u: shards %u keys %" PRIu64 " key+value bytes %" PRIu64
			" index bytes %" PRIu64 " entry overhead bytes %" PRIu64 "\n",
			i, km_proc_nb_shards(km_dp.workers[i].proc), st.keys, st.value_bytes,
			st.index_bytes, st.entry_overhead_bytes);
	}
	fflush(f);
}

struct km_ctl_state km_ctl;

/* ---- Automatic policies ------------------------------------------------------------- */

/* The last sample as the policies see it. @return a malloc'd array, or NULL. */
static struct km_policy_shard *
policy_view(void)
{
	struct km_policy_shard *v = calloc(km_ctl.nb_shards + 1, sizeof(*v));
	const struct km_ctl_shard *s;
	uint32_t i;

	for (i = 0; v != NULL && i < km_ctl.nb_shards; i++) {
		s = &km_ctl.shards[i];
		v[i] = (struct km_policy_shard){
			.id = s->id,
			.owner = s->owner,
			.keys = s->keys,
			.rate = s->rate,
			.tier = s->tier,
			.file_bytes = s->file_bytes,
			.dead_bytes = s->dead_bytes,
			/* A rewrite would turn damaged keys into absent ones: the operator's. */
			.pinned = s->quarantined || s->damaged_keys != 0,
			.hot = s->hot,
			.cold = s->cold,
			.chill = s->chill,
			.warm = s->warm,
		};
	}
	return v;
}

/* Keep the streaks the policy updated. */
static void
policy_keep(const struct km_policy_shard *v)
{
	uint32_t i;

	for (i = 0; i < km_ctl.nb_shards; i++) {
		km_ctl.shards[i].hot = v[i].hot;
		km_ctl.shards[i].cold = v[i].cold;
		km_ctl.shards[i].chill = v[i].chill;
		km_ctl.shards[i].warm = v[i].warm;
	}
}

/*
 * Tiers and compaction by the last sample (lib/policy: km_policy_tiers): one change per
 * period. @return 1 if something changed.
 */
static int
ctl_autotier(void)
{
	const struct km_conf *c = &km_ctl.conf;
	const struct km_policy_tier_conf pc = {
		.cold_rate = c->cold_rate,
		.warm_rate = c->warm_rate,
		.hysteresis = c->hysteresis,
		.compact_pct = c->compact_pct,
		.compact_min_bytes = c->compact_min_bytes,
	};
	struct km_policy_decision d;
	struct km_policy_shard *v;
	char err[256];
	int rc, tier;

	if (km_ctl.shards == NULL || km_store_driver(c->store_driver)->commit == NULL)
		return 0;
	v = policy_view();
	if (v == NULL)
		return 0;
	rc = km_policy_tiers(&pc, v, km_ctl.nb_shards, &d);
	if (rc == 0)
		policy_keep(v);
	free(v);
	if (rc < 0 || d.action == KM_POLICY_NONE)
		return 0;
	tier = d.action == KM_POLICY_TO_HOT    ? KM_TIER_HOT
	       : d.action == KM_POLICY_TO_COLD ? KM_TIER_COLD
					       : -1;
	rc = km_ctl_retier(d.id, tier, err, sizeof(err));
	if (rc < 0)
		KM_LOG(WARNING, "automatic %s: %s", tier < 0 ? "compaction" : "tier change", err);
	return rc == 0;
}

/*
 * Splits and merges by the last sample (lib/policy: km_policy_shards) and the thresholds
 * in force (km_ctl.derived): one change per period, so that each is measured before the
 * next. A change put off because another re-sharding is in progress (-EBUSY) is tried
 * again at a later sample: the streaks stay as they were. @return 1 if something was
 * tried.
 */
static int
ctl_autoshard(void)
{
	const struct km_conf *c = &km_ctl.conf;
	const struct km_policy_shard_conf pc = {
		.split_rate = km_ctl.derived.split_rate,
		.merge_rate = km_ctl.derived.merge_rate,
		.hysteresis = c->hysteresis,
		.min_count = c->shard_count,
		.max_count = c->max_count,
	};
	struct km_policy_decision d;
	struct km_policy_shard *v;
	char err[256];
	int rc;

	if (km_ctl.shards == NULL)
		return 0;
	v = policy_view();
	if (v == NULL)
		return 0;
	rc = km_policy_shards(&pc, v, km_ctl.nb_shards, &d);
	if (rc < 0 || d.action == KM_POLICY_NONE) {
		if (rc == 0)
			policy_keep(v);
		free(v);
		return 0;
	}
	if (d.action == KM_POLICY_SPLIT)
		rc = km_ctl_split(d.id, err, sizeof(err));
	else
		rc = km_ctl_merge(d.id, err, sizeof(err));
	if (rc == -EBUSY) {
		/* Later: placement and tiers go on meanwhile. */
		km_ctl.cnt.reshard_deferred++;
		free(v);
		return 0;
	}
	policy_keep(v);
	free(v);
	if (rc == 0 && d.action == KM_POLICY_SPLIT)
		km_ctl.cnt.auto_splits++;
	else if (rc == 0)
		km_ctl.cnt.auto_merges++;
	else
		KM_LOG(WARNING, "automatic %s: %s", d.action == KM_POLICY_SPLIT ? "split" : "merge",
			err);
	/* The map changed: the next sample starts from it (the policy restarted every
	 * streak). */
	km_ctl_sample(0);
	return 1;
}

/* Placement's streak and tokens (control lcore only). */
static struct km_policy_place_state place_state;

uint16_t
km_ctl_place(double rate)
{
	double load[KM_WORKERS_MAX];
	uint16_t w;

	for (w = 0; w < km_dp.nb_workers; w++)
		load[w] = km_ctl.workers[w].load;
	return km_policy_place_new(load, km_dp.nb_workers, rate);
}

/*
 * Moves between workers by the last sample (lib/policy: km_policy_place), dt seconds
 * after the previous decision, each through km_ctl_move() (an O(1) hand-over of the
 * store). Nothing moves before a capacity was measured when [shards] balance_min_rate is
 * auto. When a move is put off (-EBUSY: another re-sharding in progress) the decision's
 * remaining moves are dropped; if none was made, the streak and tokens are restored so
 * that the next sample tries again. @return 1 if a shard moved.
 */
static int
ctl_autoplace(double dt)
{
	const struct km_conf *c = &km_ctl.conf;
	const struct km_policy_place_conf pc = {
		.ratio = (double)c->balance_pct / 100.0,
		.min_load = (double)km_ctl.derived.balance_min_rate,
		.hysteresis = (uint32_t)c->hysteresis,
		.moves_per_s = (double)c->balance_moves,
	};
	struct km_policy_place_state saved = place_state;
	struct km_policy_move mv[PLACE_MOVES_MAX];
	struct km_policy_shard *v;
	uint32_t nb = 0, k, done = 0;
	char err[256];
	int rc;

	if (km_ctl.shards == NULL || km_dp.nb_workers < 2 ||
		(c->balance_min_rate == KM_CONF_AUTO && km_ctl.derived.capacity <= 0))
		return 0;
	v = policy_view();
	if (v == NULL)
		return 0;
	rc = km_policy_place(&pc, &place_state, v, km_ctl.nb_shards, km_dp.nb_workers, dt, mv,
		PLACE_MOVES_MAX, &nb);
	free(v);
	if (rc < 0) {
		KM_LOG(WARNING, "automatic placement: %s", strerror(-rc));
		return 0;
	}
	for (k = 0; k < nb; k++) {
		rc = km_ctl_move(mv[k].id, mv[k].to, err, sizeof(err));
		if (rc == -EBUSY) {
			km_ctl.cnt.reshard_deferred++;
			break;
		}
		if (rc < 0) {
			KM_LOG(WARNING, "automatic move of shard %" PRIu64 " to worker %u: %s",
				mv[k].id, mv[k].to, err);
			break;
		}
		km_ctl.cnt.auto_moves++;
		done++;
	}
	if (nb > 0 && done == 0 && rc == -EBUSY)
		place_state = saved;
	if (done == 0)
		return 0;
	km_ctl.cnt.placements++;
	KM_LOG(INFO, "placement: %u shard(s) moved to even out the workers' load", done);
	km_ctl_sample(0);
	return 1;
}

/* ---- Runtime configuration ------------------------------------------------------------ */

int
km_log_level_of(const char *name)
{
	static const char *const names[] = {
		"", "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"};
	unsigned int i;

	for (i = 1; i < RTE_DIM(names); i++)
		if (strcmp(names[i], name) == 0)
			return (int)i;
	return RTE_LOG_INFO;
}

int
km_ctl_publish_allow(const char *list, char *err, size_t errlen)
{
	struct km_allow *a = malloc(sizeof(*a)), *old = km_allow_current;

	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (km_allow_parse(list, a, err, errlen) < 0) {
		free(a);
		return -EINVAL;
	}
	rcu_assign_pointer(km_allow_current, a);
	if (old != NULL) {
		synchronize_rcu();
		free(old);
	}
	return 0;
}

/* Send the [workers] tunables and [net] busy_watermark of c to every worker (applied at
 * their next loop boundary). */
static int
ctl_tune_workers(const struct km_conf *c)
{
	struct km_cmsg m = {
		.type = KM_CMSG_TUNE,
		.u.tune =
			{
				.burst = (uint16_t)c->burst,
				.idle_spin = (uint32_t)c->idle_spin,
				.idle_sleep_us = (uint32_t)c->idle_sleep_us,
				.busy_pkts = km_policy_backlog_watermark(
					(uint32_t)c->busy_watermark, km_dp.nb_rxd),
			},
	};
	uint16_t i;
	int rc, ret = 0;

	for (i = 0; i < km_dp.nb_workers; i++) {
		rc = km_mailbox_send(i, &m);
		if (rc < 0)
			ret = rc;
	}
	return ret;
}

/* "what" to the list of steps done (for the message of a later failure). */
static void
done_add(char *done, size_t len, const char *what)
{
	size_t n = strlen(done);

	snprintf(done + n, len - n, "%s%s", n != 0 ? ", " : "", what);
}

/*
 * Make nc (km_ctl.conf with runtime tunables changed) the running configuration: push
 * what changed to where it acts, step by step; km_ctl.conf follows the steps that took, so
 * that it always says what is in force (a later set or reload pushes the rest again).
 * @return 0, or -errno with err saying why and which steps took before the failure.
 */
static int
ctl_apply(const struct km_conf *nc, char *err, size_t errlen)
{
	struct km_conf cur = km_ctl.conf; /* in force, step by step */
	char done[96] = "", why[256];
	int rc = 0;

	/* What may be refused first: a log file that cannot be opened, auth without keys. */
	if (strcmp(nc->log_file, cur.log_file) != 0 || nc->log_syslog != cur.log_syslog) {
		rc = km_log_configure(nc->log_file, (int)nc->log_syslog, why, sizeof(why));
		if (rc < 0)
			goto out;
		memcpy(cur.log_file, nc->log_file, sizeof(cur.log_file));
		cur.log_syslog = nc->log_syslog;
		done_add(done, sizeof(done), "[log] file/syslog");
	}
	if (nc->auth != cur.auth) {
		rc = km_guard_required((int)nc->auth, why, sizeof(why));
		if (rc < 0)
			goto out;
		cur.auth = nc->auth;
		done_add(done, sizeof(done), "[security] auth");
	}
	if (strcmp(nc->allow, cur.allow) != 0) {
		rc = km_ctl_publish_allow(nc->allow, why, sizeof(why));
		if (rc < 0)
			goto out;
		memcpy(cur.allow, nc->allow, sizeof(cur.allow));
		done_add(done, sizeof(done), "[security] allow");
	}
	if (nc->burst != cur.burst || nc->idle_spin != cur.idle_spin ||
		nc->idle_sleep_us != cur.idle_sleep_us ||
		nc->busy_watermark != cur.busy_watermark) {
		rc = ctl_tune_workers(nc);
		if (rc < 0) {
			/* Some workers may have them: the old values stay recorded, so that the
			 * next set or reload sends them to every worker again. */
			snprintf(why, sizeof(why),
				"a worker did not take the [workers] tunables: %s", strerror(-rc));
			goto out;
		}
		cur.burst = nc->burst;
		cur.idle_spin = nc->idle_spin;
		cur.idle_sleep_us = nc->idle_sleep_us;
		cur.busy_watermark = nc->busy_watermark;
		done_add(done, sizeof(done), "[workers]");
	}
	if (strcmp(nc->log_level, cur.log_level) != 0) {
		rte_log_set_level_pattern("keymap.*", (uint32_t)km_log_level_of(nc->log_level));
		memcpy(cur.log_level, nc->log_level, sizeof(cur.log_level));
	}
	rc = km_pf_configure(nc);
	if (rc < 0) {
		snprintf(why, sizeof(why), "prefetch: %s", strerror(-rc));
		goto out;
	}
	km_crew_configure(nc);
	cur = *nc;
out:
	km_ctl.conf = cur;
	km_ctl_derive();
	if (rc < 0)
		snprintf(err, errlen, "%s: %s%s", why, done[0] != '\0' ? done : "nothing changed",
			done[0] != '\0' ? " changed before it, the rest kept" : "");
	return rc;
}

int
km_ctl_set(const char *assignment, char *err, size_t errlen)
{
	const char *eq = strchr(assignment, '=');
	struct km_conf nc = km_ctl.conf;
	struct km_conf_item it;
	char name[128];
	int idx, rc;

	if (eq == NULL || (size_t)(eq - assignment) >= sizeof(name)) {
		snprintf(err, errlen, "'%s': expected section.key=value", assignment);
		return -EINVAL;
	}
	memcpy(name, assignment, (size_t)(eq - assignment));
	name[eq - assignment] = '\0';
	idx = km_conf_find(name);
	if (idx < 0) {
		snprintf(err, errlen, "unknown tunable '%s' (keymapctl config lists them)", name);
		return -ENOENT;
	}
	km_conf_item((size_t)idx, &it);
	if (!it.runtime) {
		snprintf(err, errlen,
			"%s cannot change while keymapd runs: set it in the configuration file "
			"and restart",
			name);
		return -EPERM;
	}
	if (km_conf_set(&nc, assignment, err, errlen) < 0)
		return -EINVAL;
	rc = ctl_apply(&nc, err, errlen);
	if (rc < 0)
		return rc;
	KM_LOG(NOTICE, "set %s", assignment);
	return 0;
}

/* ---- Reload (SIGHUP) -------------------------------------------------------------------- */

static struct {
	const char *path;  /* -c FILE, or NULL */
	char *const *sets; /* -o overrides, in command line order */
	int nb_sets;
	int eal_cmdline; /* EAL arguments came after --: [eal] args of the file is not used */
	char eal_conf[KM_CONF_STR_MAX]; /* [eal] args as configured at start */
	atomic_int pending;             /* SIGHUP seen */
} rl;

void
km_ctl_reload_source(
	const char *path, char *const *sets, int nb_sets, int eal_cmdline, const char *eal_conf)
{
	snprintf(rl.eal_conf, sizeof(rl.eal_conf), "%s", eal_conf);
	rl.path = path;
	rl.sets = sets;
	rl.nb_sets = nb_sets;
	rl.eal_cmdline = eal_cmdline;
}

void
km_ctl_hup(int wake)
{
	atomic_store_explicit(&rl.pending, 1, memory_order_relaxed);
	if (wake)
		km_ctl_wake();
}

int
km_ctl_reload(struct km_reload_result *res, char *err, size_t errlen)
{
	char name[128], was[KM_CONF_STR_MAX], now[KM_CONF_STR_MAX], why[512], logerr[300] = "";
	static struct km_conf fc, nc, oc; /* control lcore only */
	struct km_conf_item it;
	unsigned int changed = 0, restart = 0;
	uint64_t num;
	size_t i;
	int k, rc;

	/* First, whatever else happens: a rotation's postrotate must never leave keymapd
	 * writing to the moved file (a reopen that fails keeps the old one). */
	if (km_log_reopen(why, sizeof(why)) < 0)
		snprintf(logerr, sizeof(logerr), "; %.200s: still writing to the file it had", why);
	oc = km_ctl.conf;
	nc = oc;
	km_conf_defaults(&fc);
	if (rl.path != NULL && km_conf_load(&fc, rl.path, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: the running configuration is kept%s", why, logerr);
		return -EINVAL;
	}
	for (k = 0; k < rl.nb_sets; k++)
		if (km_conf_set(&fc, rl.sets[k], why, sizeof(why)) < 0) {
			snprintf(err, errlen, "-o %s: the running configuration is kept%s", why,
				logerr);
			return -EINVAL;
		}
	/* [eal] args as given (the command line's, or the file's as keymapd started with
	 * them): what is shown is their effect, joined and maybe rewritten ([net] veth). */
	if (rl.eal_cmdline || strcmp(fc.eal_args, rl.eal_conf) == 0)
		memcpy(fc.eal_args, oc.eal_args, sizeof(fc.eal_args));
	if (km_conf_take_runtime(&nc, &fc, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: the running configuration is kept%s", why, logerr);
		return -EINVAL;
	}
	rc = ctl_apply(&nc, why, sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "%s%s", why, logerr);
		return rc;
	}
	/* Said once applied: to [log] file when the reload set it. */
	for (i = 0; i < km_conf_nb_items(); i++) {
		km_conf_item(i, &it);
		km_conf_value(&oc, i, &num, was, sizeof(was));
		km_conf_value(&fc, i, &num, now, sizeof(now));
		if (strcmp(was, now) == 0)
			continue;
		snprintf(name, sizeof(name), "%s.%s", it.section, it.key);
		if (it.runtime) {
			changed++;
			KM_LOG(NOTICE, "reload: %s = %s (was %s)", name, now, was);
		} else {
			restart++;
			KM_LOG(WARNING, "reload: %s = %s needs a restart: %s stays in effect", name,
				now, was);
		}
	}
	res->changed = changed;
	res->restart = restart;
	res->path = rl.path;
	if (km_ctl.conf.keys_file[0] != '\0' && km_guard_keys_reload(why, sizeof(why)) < 0) {
		snprintf(err, errlen,
			"the tunables are reloaded (%u changed), but [security] keys_file: %s: the "
			"keys in use are kept%s",
			changed, why, logerr);
		return -EINVAL;
	}
	if (logerr[0] != '\0') {
		snprintf(err, errlen, "the configuration is reloaded (%u changed)%s", changed,
			logerr);
		return -EIO;
	}
	KM_LOG(NOTICE, "reloaded %s: %u tunables changed, %u need a restart, logs reopened",
		rl.path != NULL ? rl.path : "(no -c file: the defaults and -o)", changed, restart);
	return 0;
}

static void
ctl_reload_pending(void)
{
	struct km_reload_result res;
	char err[768];

	if (!atomic_exchange_explicit(&rl.pending, 0, memory_order_relaxed))
		return;
	km_notify("RELOADING=1");
	if (km_ctl_reload(&res, err, sizeof(err)) < 0)
		KM_LOG(ERR, "reload: %s", err);
	km_notify("READY=1");
}

/* ---- The loop ------------------------------------------------------------------------- */

/* The interval's figures, a log line each (at their own level, not the last message's). */
static void
ctl_log_interval(struct km_interval *prev, double secs)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (f == NULL)
		return;
	km_control_print_interval(f, prev, secs);
	fclose(f);
	km_log_text(KM_LOG_CONTROL, RTE_LOG_INFO, buf);
	free(buf);
}

int
km_ctl_init(const struct km_conf *conf)
{
	int rc;

	km_ctl.conf = *conf;
	km_ctl.start_tsc = rte_get_timer_cycles();
	km_ctl_derive();
	km_shift_auto_init(conf);
	rc = km_mailbox_init();
	if (rc == 0)
		rc = km_pf_init(conf);
	if (rc == 0)
		rc = km_crew_init(conf);
	return rc;
}

void
km_ctl_loop(void)
{
	uint64_t hz = rte_get_timer_hz(), last = rte_get_timer_cycles(), now, before;
	double place_dt = 0;
	struct km_interval prev = {0};
	unsigned int notes = 0;
	int pf_active = 0;

	while (!atomic_load_explicit(&km_dp.stop, memory_order_relaxed)) {
		/* Sleep between iterations (the control lcore shares a CPU on small hosts),
		 * but wake at once for a request. While prefetching, the workers' notes are
		 * taken every PF_POLL_US while they flow, every PF_IDLE_US otherwise: a
		 * prediction is worth something only before its request. */
		if (km_ctl_reshard_active())
			km_mailbox_sleep(RESHARD_POLL_US); /* a swap follows its copy closely */
		else if (!pf_active)
			km_mailbox_sleep((unsigned int)km_ctl.conf.interval_ms * 1000);
		else
			km_mailbox_sleep(notes != 0 ? PF_POLL_US : PF_IDLE_US);
		km_mailbox_serve(0);
		ctl_reload_pending(); /* SIGHUP */
		km_notify_watchdog();
		km_guard_tick();
		km_ctl_reshard_tick();
		km_shift_tick(); /* partition shifter: settle overrides whose keys have moved */
		km_shift_auto_tick(); /* ... and override hot routing parts, undo cool ones */
		/* With [prefetch] lcore, that lcore takes the workers' notes. */
		if (km_ctl.conf.pf_lcore == 0) {
			notes = km_mailbox_drain();
			pf_active = km_pf_tick();
		}
		km_crew_tick();
		km_cluster_tick(); /* a cluster node: the placer's maps */
		now = rte_get_timer_cycles();
		km_stats_lat_tick(now); /* the latency quantiles' window */
		km_status_tick(now);    /* the status page's history */
		if (now - km_ctl.sample_tsc >= km_ctl.conf.sample_ms * hz / 1000) {
			/* One kind of change per sample: splits and merges first (a shard too hot
			 * to be evened out by moves), then moves, then tiers. Placement's token
			 * bucket counts the time of the samples it did not see. */
			before = km_ctl.sample_tsc;
			if (km_ctl_sample(1) == 0) {
				if (before != 0)
					place_dt +=
						(double)(km_ctl.sample_tsc - before) / (double)hz;
				/* A cluster node's shards are the placer's to split, merge and
				 * move (docs/cluster.md); tiers stay the node's. */
				if (km_cluster_on())
					ctl_autotier();
				else if (!ctl_autoshard()) {
					if (!ctl_autoplace(place_dt))
						ctl_autotier();
					place_dt = 0;
				}
			}
		}
		if (km_ctl.conf.stats_interval_s != 0 &&
			now - last >= km_ctl.conf.stats_interval_s * hz) {
			ctl_log_interval(&prev, (double)(now - last) / (double)hz);
			last = now;
		}
	}
	km_mailbox_serve(1);
}

void
km_ctl_fini(void)
{
	km_ctl_reshard_fini();
	km_mailbox_fini();
	km_pf_fini();
	km_crew_fini();
	free(km_ctl.shards);
	km_ctl.shards = NULL;
	km_ctl.nb_shards = 0;
}
