/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_STATS_H
#define KEYMAPD_STATS_H

/*
 * keymapd's figures, gathered once into a snapshot and described once by a table
 * (km_stats_table): /keymap/stats (telemetry.c), the Prometheus page (metrics.c) and the
 * counters printed at exit (control.c) iterate the table instead of listing the figures.
 * Per-shard series and the latency histogram are rendered from the snapshot by their
 * own code (they are not scalars).
 */

#include <stddef.h>
#include <stdint.h>

#include <km_cache.h>
#include <km_proc.h>
#include <km_store.h>

#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "prefetch.h"

/* The figures of one worker (or their sum over all workers). */
struct km_stats_worker {
	struct km_worker_counters w;
	struct km_proc_counters p;
	uint64_t requests;       /* km_worker_requests() */
	uint64_t cycles_per_req; /* busy cycles / requests */
	uint64_t rxq_drops;      /* the port's drops on this worker's RX queue (q_errors) */
	/* Load as last sampled (km_ctl.workers); total: sums, busy_pct the mean. */
	uint64_t req_per_s;    /* requests/s answered, decayed */
	uint64_t busy_pct;     /* share of the last sample period with work, percent */
	uint64_t owned_shards; /* shards it owns */
	uint64_t capacity;     /* requests/s it could answer (0: not measured yet) */
	uint64_t lat[KM_LAT_BUCKETS];
	uint64_t lat_sum; /* TSC cycles */
};

/* One snapshot, taken by km_stats_take(). */
struct km_stats_snap {
	uint16_t nb_workers;
	int persistent;               /* the store driver keeps files: store and cache */
	struct km_stats_worker *w;    /* [nb_workers] */
	struct km_stats_worker total; /* sums (cycles_per_req: of the sums) */
	uint16_t port_id;
	char port_name[64];           /* the ethdev's name, e.g. net_tap0 */
	struct km_port_counters port; /* as read when the snapshot was taken */
	uint64_t workers;             /* nb_workers */
	uint64_t uptime_s;
	double uptime_seconds;
	uint64_t requests_per_s; /* rounded */
	double requests_per_second;
	uint64_t latency_window_s; /* the quantiles' window (shorter just after start) */
	uint64_t latency_p50_ns;
	uint64_t latency_p99_ns;
	uint64_t latency_p999_ns;
	uint64_t store_keys;  /* as last sampled */
	uint64_t store_bytes; /* as last sampled */
	uint64_t shards;      /* in the current map */
	uint64_t epoch;
	double reshard_pause_seconds;
	struct km_ctl_counters ctl;
	/* Placement and re-sharding thresholds in force (km_ctl.derived) */
	uint64_t bal_split_rate, bal_merge_rate, bal_min_rate, bal_capacity;
	uint64_t bal_imbalance_pct;     /* most loaded worker's load / mean load, percent */
	struct km_store_stats store;    /* as last sampled */
	struct km_cache_counters cache; /* summed over the workers */
	struct km_pf_stats pf;          /* predictive prefetch (persistent drivers) */
	uint64_t pf_active, pf_sampling, pf_budget;
	double pf_threshold, pf_accuracy, pf_coverage;
};

/* Where a figure lives, and where /keymap/stats shows it. */
enum km_stats_where {
	KM_STATS_WORKER,   /* per worker (struct km_stats_worker): "total" and each "wI" */
	KM_STATS_TOP,      /* struct km_stats_snap, top level of /keymap/stats */
	KM_STATS_TOTAL,    /* struct km_stats_snap, in "total" */
	KM_STATS_STORE,    /* struct km_stats_snap, in "store" (persistent drivers only) */
	KM_STATS_CACHE,    /* struct km_stats_snap, in "cache" (persistent drivers only) */
	KM_STATS_PREFETCH, /* struct km_stats_snap, in "prefetch" (persistent drivers only) */
	KM_STATS_PORT,     /* struct km_stats_snap, in "port"; Prometheus: a port label */
	KM_STATS_BALANCE,  /* struct km_stats_snap, in "balance" */
};

/* One figure. */
struct km_stats_desc {
	const char *tel;  /* key in /keymap/stats; NULL: not there */
	const char *prom; /* Prometheus family; NULL: not exported */
	const char *help; /* Prometheus HELP */
	uint8_t kind;     /* enum km_stat_kind: counter or gauge */
	uint8_t where;    /* enum km_stats_where */
	uint8_t is_double;
	size_t off; /* of a uint64_t (or a double) in the struct where says */
};

/* The table, in the order of /keymap/stats. */
extern const struct km_stats_desc km_stats_table[];
extern const size_t km_stats_table_len;

/*
 * Take a snapshot of every figure. Counters are plain words each worker updates alone: a
 * value may be one update old, never torn. @return 0 or -ENOMEM.
 * @note Context: control lcore (reads km_ctl and the map), or the main lcore once the
 *   workers have stopped.
 */
int km_stats_take(struct km_stats_snap *s);

/* Free what km_stats_take allocated. @note Context: as km_stats_take. */
void km_stats_release(struct km_stats_snap *s);

/* Value of d in s for worker w (KM_STATS_WORKER; w == nb_workers: the total) or global.
 * @note Context: any thread that owns s. */
uint64_t km_stats_u64(const struct km_stats_snap *s, const struct km_stats_desc *d, uint16_t w);
double km_stats_double(const struct km_stats_snap *s, const struct km_stats_desc *d);

/* Whether the section of d is shown (store and cache: persistent drivers only).
 * @note Context: any thread that owns s. */
int km_stats_shown(const struct km_stats_snap *s, const struct km_stats_desc *d);

/* Latency quantile q of the histogram h (KM_LAT_BUCKETS counts), in ns, linear within its
 * bucket; above the last bound: that bound. @note Context: any thread. */
uint64_t km_stats_lat_quantile_ns(const uint64_t *h, double q);

/* The window of the latency quantiles of the snapshot, seconds. */
#define KM_LAT_WINDOW_S 10

/* Record the workers' histograms (once a second; every control loop iteration calls it).
 * @note Context: control lcore. */
void km_stats_lat_tick(uint64_t now);

#endif /* KEYMAPD_STATS_H */
