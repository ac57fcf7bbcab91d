/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_CONTROL_H
#define KEYMAPD_CONTROL_H

/*
 * The control lcore (main lcore) and the threads that talk to it.
 *
 * Only the control lcore changes keymapd's state: the shard map (split, merge, move,
 * published through RCU), the configuration, the allow-list, and workers' tunables
 * (through each worker's ctl_to_w ring, datapath.h). Telemetry callbacks and the metrics
 * endpoint run on their own threads: they post a function to the control lcore with
 * km_ctl_call() and wait for it, so everything they read or change is read or changed by
 * the control lcore.
 *
 * Files: control.c (the loop, runtime configuration, automatic policies applied from
 * lib/policy), mailbox.c (km_ctl_call and the worker rings), reshard.c (the re-sharding
 * transaction), sample.c (load sampling), stats.c (the stats snapshot), telemetry.c and
 * metrics.c (the two renderings).
 */

#include <stddef.h>
#include <stdint.h>

#include <km_proc.h>
#include <km_shardmap.h>
#include <km_store.h>

#include "config.h"

/* One shard as the control lcore last sampled it. Control lcore: rw (km_ctl_sample, the
 * policies' streaks); other threads read it only through km_ctl_call. */
struct km_ctl_shard {
	uint64_t id;
	uint16_t owner;
	uint64_t keys;
	uint64_t bytes;         /* key + value bytes */
	uint64_t requests;      /* since it was attached to its owner */
	uint64_t rate_requests; /* requests at the last periodic sample */
	double rate;            /* requests/s, exponentially decayed over the samples */
	uint32_t hot;           /* consecutive samples above [shards] split_rate */
	uint32_t cold;          /* consecutive samples below [shards] merge_rate (with its buddy) */
	uint8_t tier;           /* enum km_tier (log driver) */
	uint64_t file_bytes;    /* on disk (log driver) */
	uint64_t dead_bytes;    /* reclaimable by a compaction (log driver) */
	uint32_t chill;         /* consecutive samples below [tier] cold_rate */
	uint32_t warm;          /* consecutive samples above [tier] warm_rate */
	uint8_t quarantined;    /* its files are missing, unreadable or damaged */
	uint64_t damaged_keys;  /* keys answering DAMAGED (a rewrite would drop them) */
};

/* Counters of the control plane (control lcore: rw; read through km_ctl_call). */
#define KM_CTL_COUNTERS(X)                                                                     \
	X(splits, "shards split (operator and automatic)")                                     \
	X(merges, "buddy shards merged (operator and automatic)")                              \
	X(moves, "shards moved to another worker (operator and automatic)")                    \
	X(auto_splits, "automatic splits of hot shards")                                       \
	X(auto_merges, "automatic merges of cold buddies")                                     \
	X(auto_moves, "automatic moves of shards to even out the workers' load")               \
	X(placements, "placement decisions that moved at least one shard")                     \
	X(reshard_deferred, "automatic changes put off: another re-sharding was in progress")  \
	X(reshard_failures, "re-shardings refused or rolled back")                             \
	X(to_cold, "shards compacted into the cold tier")                                      \
	X(to_hot, "cold shards promoted back to the log")                                      \
	X(compactions, "logs compacted (space of old records reclaimed)")                      \
	X(tier_failures, "tier changes and compactions refused or rolled back")                \
	X(shift_auto_adds, "routing parts overridden automatically: hot, their keys spread")   \
	X(shift_auto_removes, "automatic overrides undone: their routing part cooled")         \
	X(shift_auto_deferred, "automatic override changes put off: a split or merge copying") \
	X(shift_auto_refused, "automatic overrides refused: map full, or not a routing part")  \
	X(keys_handed_over, "entries copied or moved between workers by re-sharding")          \
	X(commands, "control commands executed (telemetry and metrics)")                       \
	X(prefetches, "prefetch commands queued to workers")                                   \
	X(prefetch_started, "prefetches that started a read (worker completions)")             \
	X(prefetch_nothing, "prefetches with nothing to do: cached, being read, or in DRAM")   \
	X(prefetch_refused, "prefetches a worker refused: no such key, or no room")            \
	X(cmd_drops, "commands to workers dropped: ctl_to_w ring full")                        \
	X(samples, "access samples received from workers (w_to_ctl)")

struct km_ctl_counters {
#define KM_X(name, help) uint64_t name;
	KM_CTL_COUNTERS(KM_X)
#undef KM_X
};

/* The incremental split or merge in progress, or the last one (reshard.c). */
struct km_reshard_status {
	uint64_t seq;                    /* number of the job (from 1; 0: none yet) */
	int active;                      /* copying, or waiting for its swap */
	int cancelling;                  /* failed: the owner's cancel is being retried */
	uint8_t kind;                    /* enum km_mig_kind */
	uint64_t id;                     /* split: the shard split; merge: the parent made */
	uint16_t owner;                  /* the worker that copies */
	uint64_t t0;                     /* rte_get_timer_cycles() at the start */
	struct km_mig_progress progress; /* as last polled */
	/* Once over: */
	int rc;            /* 0, or -errno (nothing changed) */
	char msg[256];     /* what happened, as logged */
	uint64_t keys;     /* entries of the new shard(s) */
	uint64_t pause_us; /* the swap: the owner answered nothing else meanwhile */
	uint64_t copy_ms;  /* start to end */
	uint32_t epoch;    /* of the map published */
};

/* Where the last move spent its time in transit (reshard.c; keymapctl move --json): the
 * old owner's requests for the shard were handed to the new one meanwhile. */
struct km_move_phases {
	uint64_t old_queued_us; /* the command posted -> claimed by the old owner */
	uint64_t old_run_us;    /* its detach (at-most-once entries taken through the index) */
	uint64_t new_queued_us; /* ... -> the new owner took it (its scheduling) */
	uint64_t new_run_us;    /* its attach (at-most-once entries given) */
	uint64_t seen_us;       /* ... -> seen by the control lcore */
	uint64_t publish_us;    /* the new map's publication, its grace period included */
	uint64_t dedup;         /* at-most-once entries handed over */
};

/*
 * One worker as the control lcore last sampled it (every [shards] sample_ms). Control
 * lcore: rw (km_ctl_sample); other threads read it only through km_ctl_call.
 */
struct km_ctl_worker {
	double rate;          /* requests/s it answered, decayed like the shards' rates */
	double load;          /* sum of its shards' decayed rates: what placement evens out */
	double busy;          /* share of the last period spent on iterations with work, 0..1 */
	double capacity;      /* requests/s it could answer: TSC rate / busy cycles per request
			       * (decayed; 0 until a period with enough requests measured it) */
	uint32_t shards;      /* shards it owns */
	uint64_t requests;    /* km_worker_requests() at the last periodic sample */
	uint64_t busy_cycles; /* its busy_cycles at the last periodic sample */
};

/* The thresholds in force: the configured ones, or those derived from the measured
 * capacity where the configuration says "auto" (docs/operations.md 2.13). Control lcore:
 * rw after every periodic sample. 0: the policy is off (nothing measured yet for auto). */
struct km_ctl_derived {
	uint64_t split_rate;
	uint64_t merge_rate;
	uint64_t balance_min_rate;
	double capacity; /* requests/s of the least capable measured worker, 0: none yet */
};

/* Every field: written by the control lcore only (km_ctl_init on the main lcore before
 * any other thread runs); read by the control lcore and by the functions it runs for
 * other threads through km_ctl_call (telemetry, metrics). Workers never touch it. */
struct km_ctl_state {
	struct km_conf conf;         /* effective configuration, runtime changes applied */
	uint64_t start_tsc;          /* rte_get_timer_cycles() when serving began */
	struct km_ctl_shard *shards; /* last sample, in map order */
	uint32_t nb_shards;
	uint64_t sample_tsc;              /* when the last periodic sample was taken */
	double requests_per_s;            /* all workers, over the last sample period */
	uint64_t sample_reqs;             /* requests of all workers at sample_tsc */
	uint64_t last_pause_us;           /* how long the last re-sharding kept its shard(s) BUSY */
	uint64_t last_keys;               /* entries the last re-sharding handed over */
	struct km_move_phases last_move;  /* the last move's time in transit, by phase */
	struct km_store_stats store;      /* all shards, at the last sample */
	struct km_reshard_status reshard; /* split/merge in progress, or the last one */
	struct km_ctl_counters cnt;
	struct km_ctl_worker workers[KM_WORKERS_MAX]; /* [km_dp.nb_workers] */
	struct km_ctl_derived derived;
};

/* Control lcore only, and functions it runs for other threads through km_ctl_call(). */
extern struct km_ctl_state km_ctl;

/*
 * Run fn(arg) on the control lcore and wait for its return value.
 * @return fn's return value, or -ETIMEDOUT if the control lcore did not start it within
 *   timeout_ms (it then never will), -ENOMEM, -ESHUTDOWN once keymapd is stopping.
 * @note Context: any thread but the control lcore.
 */
int km_ctl_call(int (*fn)(void *arg), void *arg, unsigned int timeout_ms);

/*
 * Control loop: serves km_ctl_call requests, takes what workers send on w_to_ctl, samples
 * shard load, re-shards and re-tiers by the thresholds, logs interval lines; returns when
 * km_dp.stop is set.
 * @note Context: the main lcore (it becomes the control lcore), after km_ctl_init.
 */
void km_ctl_loop(void);

/*
 * Create the request ring and every worker's ctl_to_w and w_to_ctl rings.
 * @return 0 or -errno.
 * @note Context: main lcore, workers set up but not launched, before any other thread may
 *   call km_ctl_call.
 */
int km_ctl_init(const struct km_conf *conf);

/* Wake the control loop now (sem_post: async-signal-safe).
 * @note Context: any thread, signal handlers included. */
void km_ctl_wake(void);

/* Refuse the requests still queued, free the worker rings and the last sample.
 * @note Context: main lcore, after km_ctl_loop returned and the workers stopped. */
void km_ctl_fini(void);

/*
 * Operator re-sharding, run on the control lcore. The new map is published only once the
 * data is in place; requests for the shards concerned are answered BUSY (clients retry)
 * meanwhile, never lost. On failure the previous state is restored.
 * @return 0, or -errno with a message in err: -ENOENT no such shard, -EINVAL not buddies /
 *   depth limit / bad worker, -ENOMEM, -ETIMEDOUT a worker did not answer.
 * @note Context: control lcore (waits for the workers' handshakes and a grace period).
 */
int km_ctl_move(uint64_t id, uint16_t worker, char *err, size_t errlen);
/*
 * Start an incremental split of shard id, or a merge of id with its buddy (brought onto one
 * worker by a move first): the owner copies while serving, km_ctl_reshard_tick() swaps the
 * copies in and publishes the map; km_ctl.reshard tells how it went.
 * @return 0 started; -EBUSY one is in progress; -ENOENT, -EINVAL, -EBADMSG (quarantined),
 *   -ENOMEM, -ETIMEDOUT, with a message in err.
 * @note Context: control lcore.
 */
int km_ctl_split(uint64_t id, char *err, size_t errlen);
int km_ctl_merge(uint64_t id, char *err, size_t errlen);
/* Drive the split or merge in progress: poll the copy, swap, publish, log.
 * @note Context: control lcore, every loop iteration. */
void km_ctl_reshard_tick(void);
/* 1 while a split or merge is in progress, or the stores it replaced are being freed.
 * @note Context: control lcore. */
int km_ctl_reshard_active(void);
/* Free what split and merge left to free. @note Context: main lcore, at shutdown. */
void km_ctl_reshard_fini(void);

/*
 * The worker a new shard with this request rate should go to, by current load: the one
 * whose load (the sum of its shards' decayed rates, km_ctl.workers[].load, as last
 * sampled) plus rate is the smallest, the first by index on a tie (lib/policy:
 * km_policy_place_new). The automatic placement moves shards to the same worker.
 * @return a worker index < km_dp.nb_workers.
 * @note Context: control lcore (reads the last sample).
 */
uint16_t km_ctl_place(double rate);

/*
 * Rewrite a shard of a persistent store while the others serve: into the given tier
 * (KM_TIER_COLD: a compressed segment; KM_TIER_HOT: a log), or, with tier -1, into a
 * new log of its tier (a compaction: only each key's latest record is kept). The shard
 * answers BUSY meanwhile. The new files replace the old ones atomically; on failure the
 * shard keeps its store.
 * @return 0, or -errno with a message in err: -ENOENT no such shard, -EINVAL the driver
 *   has no tiers / already in that tier, -ETIMEDOUT, -errno of the disk.
 * @note Context: control lcore (waits for the owner's handshakes and the disk).
 */
int km_ctl_retier(uint64_t id, int tier, char *err, size_t errlen);

/*
 * Give up the data of a quarantined shard (its files missing, unreadable or damaged): it
 * gets new, empty files (its versions start above the wall clock) and serves again. What
 * stands in the shard's path must be removed first (e.g. a directory).
 * @return 0, or -errno with a message in err: -ENOENT no such shard, -EINVAL not
 *   quarantined or no files, -errno of the disk.
 * @note Context: control lcore.
 */
int km_ctl_accept_loss(uint64_t id, char *err, size_t errlen);

/*
 * Have the owner of key read it into its cache ahead of requests (persistent drivers):
 * fire and forget, the command is queued on the owner's ctl_to_w ring. The worker's
 * result comes back as a completion on w_to_ctl, counted in prefetch_started,
 * prefetch_nothing (cached, being read, or values in DRAM) and prefetch_refused (no such
 * key, no room).
 * @return 0 queued, -EINVAL bad key, -EAGAIN the owner's ring is full (counted in
 *   cmd_drops).
 * @note Context: control lcore (ctl_to_w has one more producer: the predictor's lcore).
 */
int km_ctl_prefetch(const uint8_t *key, uint16_t len);

/*
 * Change one tunable ("section.key=value") while running. Refused (-EPERM) for a tunable
 * that needs a restart, -EINVAL for a bad value; err says why. Worker tunables are queued
 * on every ctl_to_w (applied at each worker's next loop iteration): -EAGAIN if a ring is
 * full.
 * @note Context: control lcore.
 */
int km_ctl_set(const char *assignment, char *err, size_t errlen);

/*
 * Reload (SIGHUP, keymapctl reload): read the configuration again as the command line
 * gave it (defaults < -c FILE < -o overrides; [eal] args from after -- stays), make its
 * runtime tunables the running ones (what keymapctl set changed is replaced), log each
 * change and each changed tunable that needs a restart (kept), reload [security]
 * keys_file and reopen [log] file. A file with an error changes nothing.
 * km_ctl_reload_source: what to read, and [eal] args as configured (main lcore, before
 * km_ctl_loop; the strings stay). The log file is reopened first, whatever follows.
 * km_ctl_hup: ask for a reload (async-signal-safe; wake: the control loop runs, wake it
 * now). km_ctl_reload: do it now.
 * @return 0 or -errno with err filled.
 * @note Context: km_ctl_reload: control lcore.
 */
struct km_reload_result {
	unsigned int changed; /* runtime tunables that took a new value */
	unsigned int restart; /* tunables that differ and need a restart */
	const char *path;     /* the file read, NULL: none (-c not given) */
};
void km_ctl_reload_source(
	const char *path, char *const *sets, int nb_sets, int eal_cmdline, const char *eal_conf);
void km_ctl_hup(int wake);
int km_ctl_reload(struct km_reload_result *res, char *err, size_t errlen);

/*
 * systemd's service notification (sd_notify(3)): state is "READY=1", "RELOADING=1",
 * "STOPPING=1", "STATUS=..."; nothing when keymapd is not run by systemd with
 * Type=notify (no NOTIFY_SOCKET). km_notify_watchdog: "WATCHDOG=1" at half of
 * WatchdogSec= when the unit sets it (control lcore, every iteration).
 * @note Context: main or control lcore.
 */
void km_notify(const char *state);
void km_notify_watchdog(void);

/*
 * Take a fresh sample of every shard (keys, bytes, request counts) into km_ctl.shards.
 * periodic (every [shards] sample_ms): also update the decayed rates and the total rate;
 * on demand (keymapctl shards, after a re-sharding): rates are carried over (a new shard
 * starts at half its parent's rate, a merged one at the sum of its children's).
 * @return 0 or -errno (a worker did not answer; the previous sample stays).
 * @note Context: control lcore (waits for every worker's INFO handshake).
 */
int km_ctl_sample(int periodic);

/* Ask every worker for its shards (all in parallel). @return 0 and an array of *n infos
 * sorted by id, each with its worker (the caller frees it), or -errno.
 * @note Context: control lcore. */
struct km_shard_info;
int km_ctl_gather_infos(struct km_shard_info **out, uint32_t *n);

/* Derive km_ctl.derived again from km_ctl.conf and the last measured capacity (after a
 * change of the configuration: an explicit value takes effect at once).
 * @note Context: control lcore. */
void km_ctl_derive(void);

/* Parse and publish a new allow-list (RCU). @return 0, -EINVAL (err says why), -ENOMEM.
 * @note Context: control lcore, or the main lcore before it (waits for a grace period). */
int km_ctl_publish_allow(const char *list, char *err, size_t errlen);

/*
 * Cookies and client keys (guard.c). km_guard_init: draw the cookie secrets, load and
 * publish the keys (main lcore, before the workers start); km_guard_tick: rotate the
 * secrets (control lcore, every iteration); the others change the keys at run time
 * (control lcore: telemetry, km_ctl_set), writing the keys file before publishing.
 * @return 0 or -errno with the reason in err.
 */
struct km_auth_key;
int km_guard_init(const struct km_conf *c, char *err, size_t errlen);
void km_guard_fini(void);
void km_guard_tick(void);
int km_guard_required(int required, char *err, size_t errlen);
/* k->id 0: the lowest free id (set in k); the secret is drawn here (set in k). */
int km_guard_key_add(struct km_auth_key *k, char *err, size_t errlen);
int km_guard_key_remove(uint32_t id, char *err, size_t errlen);
int km_guard_keys_reload(char *err, size_t errlen);

/* Requests a worker answered (its share of km_ctl.requests_per_s).
 * @note Context: any thread (reads counters the worker writes: may be one update old). */
struct km_worker;
uint64_t km_worker_requests(const struct km_worker *w);

/* rte_log level of a [log] level name. @note Context: any thread. */
int km_log_level_of(const char *name);

/* Telemetry commands /keymap/... (telemetry.c). @return 0 or -errno.
 * @note Context: main lcore, after km_ctl_init. */
int km_telemetry_register(void);

/* key (len bytes) as text for telemetry: printable ASCII kept, the rest %XX, cut to fit
 * cap (telemetry_prefetch.c). @note Context: any thread. */
void km_tel_key_text(const uint8_t *key, unsigned int len, char *out, size_t cap);
/* /keymap/prefetch without a parameter: predictive prefetch's figures into d
 * (telemetry_prefetch.c). @return 0. @note Context: control lcore. */
struct rte_tel_data;
int km_telemetry_prefetch_stats(struct rte_tel_data *d);

/*
 * Metrics endpoint (metrics.c): Prometheus text exposition over HTTP (libmicrohttpd) at
 * http://ip:port/metrics, served by its own thread (not a worker core).
 * @return 0, or -1 with a message in err.
 * @note Context: main lcore, after km_ctl_init.
 */
int km_metrics_start(uint32_t ip, uint16_t port, char *err, size_t errlen);

/* Stop the endpoint, waiting for its thread. @note Context: main lcore. */
void km_metrics_stop(void);

/*
 * The metrics page (Prometheus text format 0.0.4), malloc'd, length in *len; NULL when
 * out of memory. Reads per-worker counters and km_ctl.
 * @note Context: the control lcore (through km_ctl_call from the HTTP thread).
 */
char *km_metrics_render(size_t *len);

/* A page written by body from one snapshot of the figures (km_stats_take), malloc'd,
 * length in *len; NULL when out of memory. @note Context: as km_metrics_render. */
struct km_stats_snap;
char *km_snap_render(void (*body)(FILE *f, const struct km_stats_snap *s), size_t *len);

/*
 * Status page (status.c): what the metrics endpoint serves at / and /status.json.
 * km_status_tick: one point of the history (requests/s, cache hit ratio, prefetch
 * accuracy, each worker's busy share) every 5 s, the last 10 minutes kept (control lcore,
 * every loop iteration). km_status_render_json: /status.json, malloc'd, length in *len;
 * NULL when out of memory (control lcore, through km_ctl_call from the HTTP thread).
 * km_status_page: the page, a constant document that fetches /status.json (any thread).
 */
void km_status_tick(uint64_t now);
char *km_status_render_json(size_t *len);
const char *km_status_page(size_t *len);

#endif /* KEYMAPD_CONTROL_H */
