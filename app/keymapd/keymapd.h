/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_H
#define KEYMAPD_H

/* Pieces of keymapd shared between its files (the app only, not a library). */

#include <stdint.h>
#include <stdio.h>

#include <rte_log.h>
#include <rte_mempool.h>

#include <km_shardmap.h>

#include "config.h"

extern int km_logtype;
#define KM_LOG(level, fmt, ...) \
	rte_log(RTE_LOG_##level, km_logtype, "keymapd: " fmt "\n", ##__VA_ARGS__)

/*
 * Configure and start the port with one RX and one TX queue per worker.
 * Sets *tx_cksum_offload when the port computes IPv4/UDP checksums, *rss when RSS is on.
 * @return 0 or -errno (message logged).
 */
int km_port_init(uint16_t port, uint16_t nb_queues, const struct km_conf *conf,
	struct rte_mempool *pool, int *tx_cksum_offload, int *rss);
void km_port_fini(uint16_t port);

/* Publish a new shard map to the workers and free the old one after a grace period; the
 * data directory's manifest (km_control_manifest_init) then lists its shards. */
void km_control_publish_map(struct km_shardmap *map);
/* Where and how the manifest of a persistent store is written (a copy of conf's parts is
 * kept; nothing is written for a driver without one). */
void km_control_manifest_init(const struct km_conf *conf);
/* Write the counters of every worker and their total; store sizes too once the workers
 * have stopped (stores are owned by their workers). */
void km_control_print_stats(FILE *f, int workers_stopped);

/* Totals at the previous interval line (control lcore only). */
struct km_interval {
	uint64_t requests;
	uint64_t busy_cycles;
};

/*
 * One line: requests, rate and busy cycles per request of all workers since prev (which
 * is updated), e.g. "interval 1.0 s: requests 6100000 (6100000/s) cycles_per_req 212".
 * @note Context: control lcore.
 */
void km_control_print_interval(FILE *f, struct km_interval *prev, double secs);

#endif /* KEYMAPD_H */
