/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * One snapshot of keymapd's figures and the one table that describes them (stats.h).
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>

#include "control.h"
#include "datapath.h"
#include "stats.h"

#define SNAP(field) offsetof(struct km_stats_snap, field)
#define WORK(field) offsetof(struct km_stats_worker, field)

/* A global figure. */
#define G(where, tel, prom, kind, field, help)                                    \
	{                                                                         \
		tel, prom, help, KM_STAT_##kind, KM_STATS_##where, 0, SNAP(field) \
	}
#define G_DOUBLE(where, prom, field, help)                                        \
	{                                                                         \
		NULL, prom, help, KM_STAT_GAUGE, KM_STATS_##where, 1, SNAP(field) \
	}

const struct km_stats_desc km_stats_table[] = {
	G(TOP, "workers", "keymap_workers", GAUGE, workers, "worker lcores"),
	G(TOP, "uptime_s", NULL, GAUGE, uptime_s, "time since keymapd began serving (s)"),
	G_DOUBLE(TOP, "keymap_uptime_seconds", uptime_seconds, "time since keymapd began serving"),
	G(TOP, "requests_per_s", NULL, GAUGE, requests_per_s,
		"requests per second of all workers over the last sample period"),
	G_DOUBLE(TOP, "keymap_requests_per_second", requests_per_second,
		"requests per second of all workers over the last sample period"),
	G(TOP, "cycles_per_req", NULL, GAUGE, total.cycles_per_req,
		"busy TSC cycles per request, all workers"),
	G(TOP, "latency_window_s", NULL, GAUGE, latency_window_s,
		"the last seconds whose requests the latency quantiles describe"),
	G(TOP, "latency_p50_ns", NULL, GAUGE, latency_p50_ns,
		"median latency inside keymapd, RX to TX, over latency_window_s"),
	G(TOP, "latency_p99_ns", NULL, GAUGE, latency_p99_ns,
		"99th percentile latency inside keymapd, RX to TX, over latency_window_s"),
	G(TOP, "latency_p999_ns", NULL, GAUGE, latency_p999_ns,
		"99.9th percentile latency inside keymapd, RX to TX, over latency_window_s"),
#define KM_X(n, h) {#n, "keymap_" #n "_total", h, KM_STAT_COUNTER, KM_STATS_WORKER, 0, WORK(w.n)},
	KM_WORKER_COUNTERS(KM_X)
#undef KM_X
		{"rxq_drops", "keymap_rxq_drops_total",
			"frames the port dropped on the worker's RX queue (PMDs that count per "
			"queue)",
			KM_STAT_COUNTER, KM_STATS_WORKER, 0, WORK(rxq_drops)},
#define KM_X(n, h) {#n, "keymap_" #n "_total", h, KM_STAT_COUNTER, KM_STATS_WORKER, 0, WORK(p.n)},
	KM_PROC_COUNTERS(KM_X)
#undef KM_X
		{"requests", NULL, "requests answered", KM_STAT_COUNTER, KM_STATS_WORKER, 0,
			WORK(requests)},
	{"cycles_per_req", NULL, "busy TSC cycles per request", KM_STAT_GAUGE, KM_STATS_WORKER, 0,
		WORK(cycles_per_req)},
	{"req_per_s", "keymap_worker_requests_per_second",
		"requests per second the worker answered, decayed over the load samples",
		KM_STAT_GAUGE, KM_STATS_WORKER, 0, WORK(req_per_s)},
	{"busy_pct", "keymap_worker_busy_percent",
		"share of the last load sample period the worker spent on iterations with work",
		KM_STAT_GAUGE, KM_STATS_WORKER, 0, WORK(busy_pct)},
	{"owned_shards", "keymap_worker_shards", "shards the worker owns", KM_STAT_GAUGE,
		KM_STATS_WORKER, 0, WORK(owned_shards)},
	{"capacity", "keymap_worker_capacity_requests_per_second",
		"requests per second the worker could answer: TSC rate / busy cycles per request "
		"(0 until measured)",
		KM_STAT_GAUGE, KM_STATS_WORKER, 0, WORK(capacity)},
	G(TOTAL, "store_keys", "keymap_store_keys", GAUGE, store_keys,
		"keys stored, as last sampled"),
	G(TOTAL, "store_bytes", "keymap_store_bytes", GAUGE, store_bytes,
		"key and value bytes stored, as last sampled"),
	G(TOTAL, "store_hugepage_bytes", "keymap_store_hugepage_bytes", GAUGE, store.hugepage_bytes,
		"mem store: slab bytes on hugetlb pages or THP-advised mappings, as last sampled"),
	G(TOTAL, "shards", "keymap_shards", GAUGE, shards, "shards in the map"),
	G(TOTAL, "epoch", "keymap_map_epoch", GAUGE, epoch, "epoch of the current shard map"),
#define KM_X(n, h) \
	{#n, "keymap_control_" #n "_total", h, KM_STAT_COUNTER, KM_STATS_TOTAL, 0, SNAP(ctl.n)},
	KM_CTL_COUNTERS(KM_X)
#undef KM_X
		G_DOUBLE(TOTAL, "keymap_reshard_pause_seconds", reshard_pause_seconds,
			"how long the last re-sharding kept its shards answering BUSY"),
#define KM_X(n, h) \
	{#n, "keymap_port_" #n "_total", h, KM_STAT_COUNTER, KM_STATS_PORT, 0, SNAP(port.n)},
	KM_PORT_COUNTERS(KM_X)
#undef KM_X
	/* Beside the port's, what the workers lost at their queues (exported per worker). */
	G(PORT, "rxq_drops", NULL, COUNTER, total.rxq_drops,
		"frames the port dropped on the workers' RX queues"),
	G(PORT, "tx_drops", NULL, COUNTER, total.w.tx_drops,
		"replies the workers dropped: a TX queue was full"),
	G(BALANCE, "split_rate", "keymap_balance_split_rate", GAUGE, bal_split_rate,
		"requests/s of a shard above which it is split, in force (0: off)"),
	G(BALANCE, "merge_rate", "keymap_balance_merge_rate", GAUGE, bal_merge_rate,
		"requests/s of a buddy pair below which it merges, in force (0: off)"),
	G(BALANCE, "min_rate", "keymap_balance_min_rate", GAUGE, bal_min_rate,
		"mean worker requests/s below which no shard moves for balance, in force"),
	G(BALANCE, "capacity", "keymap_balance_capacity", GAUGE, bal_capacity,
		"requests/s of the least capable worker, as measured (0: not yet)"),
	G(BALANCE, "imbalance_pct", "keymap_balance_imbalance_percent", GAUGE, bal_imbalance_pct,
		"load of the most loaded worker in percent of the mean worker load"),
	G(STORE, "cold_shards", "keymap_store_cold_shards", GAUGE, store.tier,
		"shards in the cold tier"),
	G(STORE, "index_bytes", "keymap_store_index_bytes", GAUGE, store.index_bytes,
		"DRAM index bytes"),
	G(STORE, "file_bytes", "keymap_store_file_bytes", GAUGE, store.file_bytes,
		"bytes of logs and segments"),
	G(STORE, "dead_bytes", "keymap_store_dead_bytes", GAUGE, store.dead_bytes,
		"log bytes a compaction would reclaim"),
	G(STORE, "replayed", NULL, GAUGE, store.replayed, "records read back at start-up"),
	G(STORE, "skipped_crc", "keymap_store_skipped_crc", GAUGE, store.skipped_crc,
		"damaged records skipped at start-up"),
	G(STORE, "torn_bytes", NULL, GAUGE, store.torn_bytes,
		"bytes of an incomplete tail dropped at start-up"),
	G(STORE, "disk_reads", "keymap_store_disk_reads_total", COUNTER, store.disk_reads,
		"values read from disk"),
	G(STORE, "disk_read_errors", "keymap_store_disk_read_errors_total", COUNTER,
		store.disk_read_errors, "disk reads that failed (I/O error, CRC, key mismatch)"),
	G(STORE, "write_batches", "keymap_store_write_batches_total", COUNTER, store.write_batches,
		"group writes"),
	G(STORE, "fsyncs", "keymap_store_fsyncs_total", COUNTER, store.fsyncs,
		"fdatasyncs completed"),
	G(STORE, "write_errors", "keymap_store_write_errors_total", COUNTER, store.write_errors,
		"group writes or fdatasyncs that failed"),
	G(STORE, "writes_lost", "keymap_store_writes_lost_total", COUNTER, store.writes_lost,
		"records acknowledged before a failed write (async, none): lost"),
	G(STORE, "write_busy", "keymap_store_write_busy_total", COUNTER, store.write_busy,
		"writes answered BUSY: write buffer full, or the async durability bound"),
	G(STORE, "durable_lag_max_us", "keymap_store_durable_lag_max_microseconds", GAUGE,
		store.durable_lag_max_us, "longest wait of a group to be durable since start"),
	G(STORE, "damaged_keys", "keymap_store_damaged_keys", GAUGE, store.damaged_keys,
		"keys whose newest record is damaged: answered DAMAGED until rewritten"),
	G(STORE, "quarantined", "keymap_store_quarantined_shards", GAUGE, store.quarantined,
		"shards quarantined (files missing, unreadable or damaged): answered DAMAGED"),
	G(CACHE, "hits", "keymap_cache_hits_total", COUNTER, cache.hits, "value cache hits"),
	G(CACHE, "misses", "keymap_cache_misses_total", COUNTER, cache.misses,
		"value cache misses"),
	G(CACHE, "inserts", NULL, COUNTER, cache.inserts, "value cache inserts"),
	G(CACHE, "evictions", "keymap_cache_evictions_total", COUNTER, cache.evictions,
		"value cache evictions"),
	G(CACHE, "invalidations", NULL, COUNTER, cache.invalidations, "value cache invalidations"),
	G(CACHE, "prefetched_used", "keymap_cache_prefetched_used_total", COUNTER,
		cache.prefetched_used, "prefetched entries hit before eviction"),
	G(CACHE, "prefetched_evicted_unused", "keymap_cache_prefetched_evicted_unused_total",
		COUNTER, cache.prefetched_evicted_unused, "prefetched entries gone without a hit"),
	G(CACHE, "entries", NULL, GAUGE, cache.entries, "value cache entries"),
	G(CACHE, "bytes", "keymap_cache_bytes", GAUGE, cache.bytes, "value cache bytes in use"),
	G(CACHE, "capacity", NULL, GAUGE, cache.capacity, "value cache capacity in bytes"),
	G(PREFETCH, "active", "keymap_prefetch_active", GAUGE, pf_active,
		"predictive prefetch on (enabled, store on disk)"),
	G(PREFETCH, "sampling", "keymap_prefetch_sampling", GAUGE, pf_sampling,
		"one client (session) in N sampled for the predictor now"),
	G(PREFETCH, "budget", "keymap_prefetch_budget", GAUGE, pf_budget,
		"prefetch commands in flight per worker the scheduler allows now (AIMD)"),
	G_DOUBLE(PREFETCH, "keymap_prefetch_threshold", pf_threshold,
		"confidence a prediction needs now (AIMD)"),
	G_DOUBLE(PREFETCH, "keymap_prefetch_accuracy", pf_accuracy,
		"prefetched values hit before eviction / prefetched values resolved, all sources"),
	G_DOUBLE(PREFETCH, "keymap_prefetch_coverage", pf_coverage,
		"prefetched values hit / (those + reads for requests)"),
	G(PREFETCH, "samples", "keymap_predictor_samples_total", COUNTER, pf.samples,
		"sampled accesses the predictor learned from"),
	G(PREFETCH, "predicted", "keymap_predictor_predictions_total", COUNTER, pf.pred.predicted,
		"predictions made"),
	G(PREFETCH, "suppressed", "keymap_predictor_suppressed_total", COUNTER, pf.pred.suppressed,
		"predictions of a source below its precision floor, not made"),
	G(PREFETCH, "below_threshold", "keymap_predictor_below_threshold_total", COUNTER,
		pf.sched.below_threshold, "predictions below the confidence threshold"),
	G(PREFETCH, "filtered", "keymap_predictor_filtered_total", COUNTER, pf.sched.filtered,
		"predictions of a key pushed moments ago"),
	G(PREFETCH, "stale", "keymap_predictor_stale_total", COUNTER, pf.sched.stale,
		"predictions queued past their deadline"),
	G(PREFETCH, "dropped_watermark", "keymap_predictor_dropped_watermark_total", COUNTER,
		pf.sched.dropped_watermark,
		"predictions dropped while their worker refused prefetches"),
	G(PREFETCH, "sent", "keymap_predictor_sent_total", COUNTER, pf.sent,
		"prefetch commands the predictor sent to workers"),
	G(PREFETCH, "started", "keymap_predictor_started_total", COUNTER, pf.started,
		"... that started a read"),
	G(PREFETCH, "nothing", "keymap_predictor_nothing_total", COUNTER, pf.nothing,
		"... whose key was cached or being read"),
	G(PREFETCH, "absent", "keymap_predictor_absent_total", COUNTER, pf.absent,
		"... whose key does not exist"),
	G(PREFETCH, "refused", "keymap_predictor_refused_total", COUNTER, pf.refused,
		"... refused by the worker: budget, pending watermark, no room"),
	G(PREFETCH, "used", "keymap_predictor_used_total", COUNTER, pf.used,
		"the predictor's prefetches hit before eviction"),
	G(PREFETCH, "unused", "keymap_predictor_unused_total", COUNTER, pf.unused,
		"the predictor's prefetches evicted or replaced unused"),
	G(PREFETCH, "late", "keymap_predictor_late_total", COUNTER, pf.late,
		"the predictor's prefetches a request had to wait for"),
	G(PREFETCH, "harm", "keymap_predictor_harm_total", COUNTER, pf.harm,
		"misses on a key a prefetch had evicted"),
	G(PREFETCH, "forwarded", "keymap_predictor_forwarded_total", COUNTER, pf.forwarded,
		"stream keys forwarded to the worker that owns them"),
	G(PREFETCH, "sampling_up", NULL, COUNTER, pf.sampling_up,
		"times sampling backed off (notes dropped, worker busy)"),
	G(PREFETCH, "sampling_down", NULL, COUNTER, pf.sampling_down, "times sampling came back"),
};

const size_t km_stats_table_len = RTE_DIM(km_stats_table);

const uint64_t km_lat_bounds_ns[KM_LAT_BOUNDS] = {
	250,
	500,
	1000,
	2000,
	5000,
	10000,
	20000,
	50000,
	100000,
	200000,
	500000,
	1000000,
	2000000,
	5000000,
	10000000,
	20000000,
	50000000,
	100000000,
	200000000,
	500000000,
	1000000000,
	2000000000,
	5000000000,
	10000000000,
};
uint64_t km_lat_bounds_tsc[KM_LAT_BOUNDS];

void
km_lat_init(void)
{
	double per_ns = (double)rte_get_tsc_hz() / 1e9;
	unsigned int b;

	for (b = 0; b < KM_LAT_BOUNDS; b++)
		km_lat_bounds_tsc[b] = (uint64_t)((double)km_lat_bounds_ns[b] * per_ns + 0.5);
}

uint64_t
km_stats_lat_quantile_ns(const uint64_t *h, double q)
{
	uint64_t total = 0, acc = 0, lo, hi;
	double target;
	unsigned int b;

	for (b = 0; b < KM_LAT_BUCKETS; b++)
		total += h[b];
	if (total == 0)
		return 0;
	target = q * (double)total;
	for (b = 0; b < KM_LAT_BUCKETS - 1; b++) {
		if ((double)(acc + h[b]) >= target)
			break;
		acc += h[b];
	}
	if (b == KM_LAT_BOUNDS) /* above the last bound: that bound, a floor */
		return km_lat_bounds_ns[KM_LAT_BOUNDS - 1];
	/* Linear within the bucket, as Prometheus's histogram_quantile(). */
	lo = b == 0 ? 0 : km_lat_bounds_ns[b - 1];
	hi = km_lat_bounds_ns[b];
	return lo + (uint64_t)((double)(hi - lo) * (target - (double)acc) / (double)h[b]);
}

/*
 * The histogram of all workers, once a second for the last LAT_RING - 1 seconds: the
 * quantiles of /keymap/stats are those of the requests answered in the last
 * KM_LAT_WINDOW_S seconds (the difference between now and then). Control lcore only.
 */
#define LAT_RING 64
static struct {
	uint64_t h[LAT_RING][KM_LAT_BUCKETS];
	uint64_t tsc[LAT_RING];
	unsigned int head; /* the next to write */
	unsigned int n;    /* written (at most LAT_RING) */
} lw;

static void add_words(void *dst, const void *src, size_t size);

static void
lat_total(uint64_t *h)
{
	uint16_t i;

	memset(h, 0, sizeof(uint64_t) * KM_LAT_BUCKETS);
	for (i = 0; i < km_dp.nb_workers; i++)
		add_words(h, km_dp.workers[i].lat, sizeof(km_dp.workers[i].lat));
}

void
km_stats_lat_tick(uint64_t now)
{
	uint64_t hz = rte_get_timer_hz();

	if (lw.n != 0 && now - lw.tsc[(lw.head + LAT_RING - 1) % LAT_RING] < hz)
		return;
	lat_total(lw.h[lw.head]);
	lw.tsc[lw.head] = now;
	lw.head = (lw.head + 1) % LAT_RING;
	if (lw.n < LAT_RING)
		lw.n++;
}

/* h (all workers now) minus the newest record at least window_s old (else the oldest):
 * the requests of the window. @return the window's length in seconds (since start when
 * there is no record). */
static double
lat_window(uint64_t *h, uint64_t now, unsigned int window_s)
{
	uint64_t hz = rte_get_timer_hz();
	unsigned int k, idx, best = LAT_RING;

	for (k = 1; k <= lw.n; k++) {
		idx = (lw.head + LAT_RING - k) % LAT_RING;
		best = idx;
		if (now - lw.tsc[idx] >= (uint64_t)window_s * hz)
			break;
	}
	if (best == LAT_RING)
		return km_ctl.start_tsc != 0 ? (double)(now - km_ctl.start_tsc) / (double)hz : 0;
	for (k = 0; k < KM_LAT_BUCKETS; k++)
		h[k] = h[k] >= lw.h[best][k] ? h[k] - lw.h[best][k] : 0;
	return (double)(now - lw.tsc[best]) / (double)hz;
}

/* dst += src, word by word (structs made only of uint64_t counters). */
static void
add_words(void *dst, const void *src, size_t size)
{
	uint64_t *d = dst;
	const uint64_t *s = src;
	size_t i;

	for (i = 0; i < size / sizeof(uint64_t); i++)
		d[i] += s[i];
}

_Static_assert(sizeof(((struct km_stats_snap *)0)->port_name) >= RTE_ETH_NAME_MAX_LEN,
	"room for an ethdev name");

int
km_stats_take(struct km_stats_snap *s)
{
	uint64_t now = rte_get_timer_cycles(), hz = rte_get_timer_hz();
	uint64_t rxq_drops[KM_WORKERS_MAX], win[KM_LAT_BUCKETS];
	const struct km_cache_counters *cc;
	struct km_stats_worker *x;
	double load_sum = 0, load_max = 0;
	uint16_t i;
	uint32_t k;

	memset(s, 0, sizeof(*s));
	s->nb_workers = km_dp.nb_workers;
	s->w = calloc(s->nb_workers + 1, sizeof(*s->w));
	if (s->w == NULL)
		return -ENOMEM;
	/* Worker i polls RX queue i. */
	s->port_id = km_dp.port;
	if (rte_eth_dev_get_name_by_port(km_dp.port, s->port_name) != 0)
		s->port_name[0] = '\0';
	km_port_stats(km_dp.port, &s->port, rxq_drops, s->nb_workers);
	for (i = 0; i < s->nb_workers; i++) {
		const struct km_worker *w = &km_dp.workers[i];

		x = &s->w[i];
		/* Plain words each worker updates alone: a value may be one update old. */
		x->w = w->cnt;
		memcpy(x->lat, w->lat, sizeof(x->lat));
		x->lat_sum = w->lat_sum;
		if (w->proc != NULL)
			x->p = *km_proc_counters(w->proc);
		x->requests = km_worker_requests(w);
		x->cycles_per_req = x->requests == 0 ? 0 : x->w.busy_cycles / x->requests;
		x->rxq_drops = rxq_drops[i];
		x->req_per_s = (uint64_t)(km_ctl.workers[i].rate + 0.5);
		x->busy_pct = (uint64_t)(km_ctl.workers[i].busy * 100 + 0.5);
		x->owned_shards = km_ctl.workers[i].shards;
		x->capacity = (uint64_t)(km_ctl.workers[i].capacity + 0.5);
		s->total.req_per_s += x->req_per_s;
		s->total.busy_pct += x->busy_pct;
		s->total.owned_shards += x->owned_shards;
		s->total.capacity += x->capacity;
		load_sum += km_ctl.workers[i].load;
		if (km_ctl.workers[i].load > load_max)
			load_max = km_ctl.workers[i].load;
		s->total.rxq_drops += x->rxq_drops;
		add_words(&s->total.w, &x->w, sizeof(x->w));
		add_words(&s->total.p, &x->p, sizeof(x->p));
		add_words(s->total.lat, x->lat, sizeof(x->lat));
		s->total.lat_sum += x->lat_sum;
		s->total.requests += x->requests;
		cc = w->proc == NULL ? NULL : km_proc_cache_counters(w->proc);
		if (cc != NULL)
			add_words(&s->cache, cc, sizeof(*cc));
	}
	s->total.cycles_per_req =
		s->total.requests == 0 ? 0 : s->total.w.busy_cycles / s->total.requests;
	if (s->nb_workers != 0)
		s->total.busy_pct /= s->nb_workers;
	s->bal_split_rate = km_ctl.derived.split_rate;
	s->bal_merge_rate = km_ctl.derived.merge_rate;
	s->bal_min_rate = km_ctl.derived.balance_min_rate;
	s->bal_capacity = (uint64_t)(km_ctl.derived.capacity + 0.5);
	s->bal_imbalance_pct =
		load_sum > 0 ? (uint64_t)(100 * load_max * s->nb_workers / load_sum + 0.5) : 0;
	s->persistent = km_store_driver(km_ctl.conf.store_driver)->commit != NULL;
	s->workers = s->nb_workers;
	if (km_ctl.start_tsc != 0 && now >= km_ctl.start_tsc && hz != 0) {
		s->uptime_s = (now - km_ctl.start_tsc) / hz;
		s->uptime_seconds = (double)(now - km_ctl.start_tsc) / (double)hz;
	}
	s->requests_per_second = km_ctl.requests_per_s;
	s->requests_per_s = (uint64_t)(km_ctl.requests_per_s + 0.5);
	memcpy(win, s->total.lat, sizeof(win));
	s->latency_window_s = (uint64_t)(lat_window(win, now, KM_LAT_WINDOW_S) + 0.5);
	s->latency_p50_ns = km_stats_lat_quantile_ns(win, 0.50);
	s->latency_p99_ns = km_stats_lat_quantile_ns(win, 0.99);
	s->latency_p999_ns = km_stats_lat_quantile_ns(win, 0.999);
	for (k = 0; k < km_ctl.nb_shards; k++) {
		s->store_keys += km_ctl.shards[k].keys;
		s->store_bytes += km_ctl.shards[k].bytes;
	}
	/* The control lcore is the only writer of the map pointer: a plain read is safe. */
	if (km_map_current != NULL) {
		s->shards = km_shardmap_nb_shards(km_map_current);
		s->epoch = km_shardmap_epoch(km_map_current);
	}
	s->reshard_pause_seconds = (double)km_ctl.last_pause_us / 1e6;
	s->ctl = km_ctl.cnt;
	s->store = km_ctl.store;
	km_pf_stats(&s->pf);
	s->pf_active = (uint64_t)s->pf.active;
	s->pf_sampling = s->pf.sampling;
	s->pf_budget = s->pf.sched.budget;
	s->pf_threshold = s->pf.sched.threshold;
	s->pf_accuracy = s->pf.accuracy;
	s->pf_coverage = s->pf.coverage;
	return 0;
}

void
km_stats_release(struct km_stats_snap *s)
{
	free(s->w);
	s->w = NULL;
}

uint64_t
km_stats_u64(const struct km_stats_snap *s, const struct km_stats_desc *d, uint16_t w)
{
	const void *base = d->where != KM_STATS_WORKER ? (const void *)s
			   : w < s->nb_workers         ? (const void *)&s->w[w]
						       : (const void *)&s->total;

	return *(const uint64_t *)(const void *)((const char *)base + d->off);
}

double
km_stats_double(const struct km_stats_snap *s, const struct km_stats_desc *d)
{
	return *(const double *)(const void *)((const char *)s + d->off);
}

int
km_stats_shown(const struct km_stats_snap *s, const struct km_stats_desc *d)
{
	return (d->where != KM_STATS_STORE && d->where != KM_STATS_CACHE &&
		       d->where != KM_STATS_PREFETCH) ||
	       s->persistent;
}
