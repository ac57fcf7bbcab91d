/* SPDX-License-Identifier: BSD-3-Clause */

#include <inttypes.h>

#include <urcu-qsbr.h>

#include "datapath.h"
#include "keymapd.h"

void
km_control_publish_map(struct km_shardmap *map)
{
	struct km_shardmap *old = km_map_current;

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

/* Requests a worker handled: every datagram that got an answer from the processor, or,
 * in echo mode, every packet it received. */
static uint64_t
worker_requests(const struct km_worker *w)
{
	const struct km_proc_counters *pc = km_proc_counters(w->proc);

	if (km_dp.echo)
		return w->cnt.rx_pkts;
	return pc->req_ping + pc->req_get + pc->req_mget + pc->req_put + pc->req_cas + pc->req_del +
	       pc->req_map + pc->bad_request + pc->moved;
}

void
km_control_print_interval(FILE *f, struct km_interval *prev, double secs)
{
	uint64_t reqs = 0, cycles = 0, r, c;
	uint16_t i;

	/* Counters are plain words each worker updates alone: a read may be one update old. */
	for (i = 0; i < km_dp.nb_workers; i++) {
		reqs += worker_requests(&km_dp.workers[i]);
		cycles += km_dp.workers[i].cnt.busy_cycles;
	}
	r = reqs - prev->requests;
	c = cycles - prev->busy_cycles;
	fprintf(f, "interval %.1f s: requests %" PRIu64 " (%.0f/s) cycles_per_req %" PRIu64 "\n",
		secs, r, secs > 0 ? (double)r / secs : 0.0, r == 0 ? 0 : c / r);
	fflush(f);
	prev->requests = reqs;
	prev->busy_cycles = cycles;
}

void
km_control_print_stats(FILE *f, int workers_stopped)
{
	uint16_t n = km_dp.nb_workers, i;
	uint64_t per[KM_WORKERS_MAX] = {0}, reqs[KM_WORKERS_MAX] = {0}, cyc[KM_WORKERS_MAX] = {0};
	struct km_store_stats st;
	size_t c;

	fprintf(f, "%-16s %14s", "counter", "total");
	if (n > 1)
		for (i = 0; i < n; i++)
			fprintf(f, " %11s%u", "w", i);
	fputc('\n', f);
	for (c = 0; c < sizeof(struct km_worker_counters) / sizeof(uint64_t); c++) {
		for (i = 0; i < n; i++)
			per[i] = ((const uint64_t *)&km_dp.workers[i].cnt)[c];
		print_row(f, km_worker_counter_names[c], per, n);
	}
	for (c = 0; c < KM_PROC_NB_COUNTERS; c++) {
		for (i = 0; i < n; i++)
			per[i] = ((const uint64_t *)km_proc_counters(km_dp.workers[i].proc))[c];
		print_row(f, km_proc_counter_names[c], per, n);
	}
	/* Cost per request as the workers saw it: busy cycles / requests handled. */
	for (i = 0; i < n; i++) {
		reqs[i] = worker_requests(&km_dp.workers[i]);
		cyc[i] = reqs[i] == 0 ? 0 : km_dp.workers[i].cnt.busy_cycles / reqs[i];
	}
	print_row(f, "requests", reqs, n);
	fprintf(f, "%-16s", "cycles_per_req");
	for (i = 0; i < n; i++)
		fprintf(f, " %12" PRIu64, cyc[i]);
	fputc('\n', f);
	/* Stores belong to their workers: walk them only once the workers have stopped.
	 * Counters above are plain 64-bit words the workers update, safe to read. */
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
