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

/*
 * keymapd's log types (rte_log "keymap.*", their levels set by [log] level or EAL's
 * --log-level). A file logs as KM_LOG_COMP, defined before its first #include
 * (default: keymap.main). Lines get their timestamp, level and type in log.c.
 */
enum km_log_comp {
	KM_LOG_MAIN,     /* start-up, port, config, telemetry, metrics */
	KM_LOG_CONTROL,  /* the control lcore: re-sharding, tunables, reload */
	KM_LOG_CLUSTER,  /* membership, the cluster map, moves between nodes */
	KM_LOG_REPL,     /* replication streams, promotion */
	KM_LOG_DATAPATH, /* workers: fragments, guards */
	KM_LOG_NB
};
extern int km_logtypes[KM_LOG_NB];
#ifndef KM_LOG_COMP
#define KM_LOG_COMP KM_LOG_MAIN
#endif
#define KM_LOG(level, fmt, ...) \
	rte_log(RTE_LOG_##level, km_logtypes[KM_LOG_COMP], fmt "\n", ##__VA_ARGS__)

/*
 * Route rte_log (every log type) into keymapd's line formatter, writing to stderr, and
 * register the keymap.* types at level ([log] level; EAL's --log-level, parsed later,
 * overrides it). Called before EAL init. @return 0 or -errno.
 */
int km_log_init(const char *level);

/*
 * Lines to file ("" = stderr as keymapd started; a file also takes stdout and stderr),
 * also to syslog when use_syslog. @return 0 or -errno with err filled (the previous
 * destination kept). @note Context: main or control lcore.
 */
int km_log_configure(const char *file, int use_syslog, char *err, size_t errlen);

/* Reopen [log] file (after a rotation moved it). @return 0 or -errno with err filled. */
int km_log_reopen(char *err, size_t errlen);

/* The stream rte_log writes to (stderr before km_log_init). */
FILE *km_log_stream(void);

/* Each line of text as a log line of comp (enum km_log_comp) at level (RTE_LOG_*). */
void km_log_text(int comp, uint32_t level, const char *text);

/*
 * [net] veth (veth.c): when an EAL --vdev of net_af_packet or net_af_xdp is on name + "p",
 * create the veth pair name / name + "p" and set it up, unless name exists; when it
 * cannot be created, that --vdev in eal_argv becomes net_tap0,iface=name. Else, or name
 * "": nothing.
 * km_veth_cleanup: remove the pair if this run created it (after the port is closed).
 * @return 0 or -1 after saying why. @note Context: main lcore, before EAL init.
 */
int km_veth_setup(const char *name, int eal_argc, char **eal_argv);
void km_veth_cleanup(void);

/* What km_port_init() found the port does. */
struct km_port_caps {
	int tx_cksum_offload; /* the port computes IPv4 + UDP checksums */
	int tx_multi_seg;     /* the port sends mbuf chains (fragments built by reference) */
	int rss;              /* RSS spreads flows over the worker queues */
	uint16_t nb_rxd;      /* RX descriptors per queue, as the port took them */
	int rx_desc_status;   /* rte_eth_rx_descriptor_status() answers: a worker can ask
			       * whether its RX queue holds N packets */
};

/*
 * Configure and start the port with one RX and one TX queue per worker, and say what it
 * does in *caps.
 * @return 0 or -errno (message logged).
 */
int km_port_init(uint16_t port, uint16_t nb_queues, const struct km_conf *conf,
	struct rte_mempool *pool, struct km_port_caps *caps);
void km_port_fini(uint16_t port);

/*
 * Counters of the port, declared once (X-macro): name, help. Frames lost before keymapd's
 * RX queues show here and nowhere in the workers' counters. What each PMD counts is in
 * docs/operations.md, 2.11: a counter a PMD does not keep stays 0.
 */
#define KM_PORT_COUNTERS(X)                                                                   \
	X(ipackets, "frames the port received into keymapd's RX queues")                      \
	X(opackets, "frames the port sent")                                                   \
	X(imissed, "frames the port dropped: an RX queue was full (NICs, af_xdp)")            \
	X(ierrors, "received frames the port dropped as erroneous")                           \
	X(rx_nombuf, "frames the port could not receive: no free mbuf")                       \
	X(oerrors, "frames the port failed to send")                                          \
	X(kernel_drops, "net_tap: frames the kernel dropped because keymapd's tap queue was " \
			"full (the interface's tx_dropped)")

struct km_port_counters {
#define KM_X(name, help) uint64_t name;
	KM_PORT_COUNTERS(KM_X)
#undef KM_X
};

/*
 * Read the port's counters (rte_eth_stats_get; for net_tap also the kernel interface's
 * drops, from sysfs) into pc, and the drops of RX queue q (rte_eth_stats q_errors, the
 * first RTE_ETHDEV_QUEUE_STAT_CNTRS queues) into rxq_drops[q] for q < nb_queues.
 * @return 0 or -errno (pc and rxq_drops then zero).
 * @note Context: the control lcore, or the main lcore once the workers have stopped: never
 *   a worker (it may sleep in a system call).
 */
int km_port_stats(
	uint16_t port, struct km_port_counters *pc, uint64_t *rxq_drops, uint16_t nb_queues);

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
	uint64_t rx_cycles, tx_cycles;
};

/*
 * One line: requests, rate and busy cycles per request of all workers since prev (which
 * is updated), and their parts: the RX bursts' (not in the busy cycles), the processing
 * (busy less TX) and the TX bursts', e.g. "interval 1.0 s: requests 6100000 (6100000/s)
 * cycles_per_req 212 (rx 40, proc 150, tx 62)".
 * @note Context: control lcore.
 */
void km_control_print_interval(FILE *f, struct km_interval *prev, double secs);

#endif /* KEYMAPD_H */
