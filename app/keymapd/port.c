/* SPDX-License-Identifier: BSD-3-Clause */

#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>

#include <rte_ethdev.h>

#include "keymapd.h"

/*
 * net_tap: the kernel interface of the port (0: another PMD). A frame the kernel cannot
 * queue to the tap because keymapd did not read it in time is dropped by the kernel and
 * counted in the interface's tx_dropped, which the PMD never sees. Set by km_port_init
 * (main lcore, before any other thread runs), read-only afterwards.
 */
static unsigned int tap_ifindex;

int
km_port_init(uint16_t port, uint16_t nb_queues, const struct km_conf *conf,
	struct rte_mempool *pool, struct km_port_caps *caps)
{
	const uint64_t cksum_tx = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
	const uint64_t cksum_rx = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
	struct rte_eth_conf pc = {0};
	struct rte_eth_dev_info info;
	uint16_t nb_rxd = (uint16_t)conf->rx_desc, nb_txd = (uint16_t)conf->tx_desc, q;
	int rc, socket = rte_eth_dev_socket_id(port);

	rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0) {
		KM_LOG(ERR, "port %u: cannot get device info: %s", port, rte_strerror(-rc));
		return rc;
	}
	if (nb_queues > info.max_rx_queues || nb_queues > info.max_tx_queues) {
		KM_LOG(ERR, "port %u (%s): %u workers need %u RX/TX queues, the port has %u/%u",
			port, info.driver_name, nb_queues, nb_queues, info.max_rx_queues,
			info.max_tx_queues);
		return -EINVAL;
	}
	tap_ifindex = strcmp(info.driver_name, "net_tap") == 0 ? info.if_index : 0;
	caps->tx_cksum_offload = (info.tx_offload_capa & cksum_tx) == cksum_tx;
	if (caps->tx_cksum_offload)
		pc.txmode.offloads |= cksum_tx;
	/* Fragments of a large reply are chains (a header, then a reference into the reply):
	 * asked for where the port offers it, else km_frag_output() makes them flat. */
	caps->tx_multi_seg = (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS) != 0;
	if (caps->tx_multi_seg)
		pc.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
	if ((info.rx_offload_capa & cksum_rx) == cksum_rx)
		pc.rxmode.offloads |= cksum_rx;
	caps->rss = 0;
	if (nb_queues > 1 && conf->rss &&
		(info.flow_type_rss_offloads & RTE_ETH_RSS_NONFRAG_IPV4_UDP) != 0) {
		pc.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		pc.rx_adv_conf.rss_conf.rss_hf = info.flow_type_rss_offloads &
						 (RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_UDP);
		caps->rss = 1;
	}
	rc = rte_eth_dev_configure(port, nb_queues, nb_queues, &pc);
	if (rc != 0 && caps->rss) {
		/* Some vdevs advertise RSS they cannot set up here: hand-off still delivers. */
		KM_LOG(WARNING, "port %u: RSS refused (%s), continuing without", port,
			rte_strerror(-rc));
		pc.rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;
		pc.rx_adv_conf.rss_conf.rss_hf = 0;
		caps->rss = 0;
		rc = rte_eth_dev_configure(port, nb_queues, nb_queues, &pc);
	}
	if (rc != 0) {
		KM_LOG(ERR, "port %u: configure failed: %s", port, rte_strerror(-rc));
		return rc;
	}
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rxd, &nb_txd);
	if (rc != 0) {
		KM_LOG(ERR, "port %u: descriptor counts refused: %s", port, rte_strerror(-rc));
		return rc;
	}
	for (q = 0; q < nb_queues; q++) {
		struct rte_eth_rxconf rxc = info.default_rxconf;
		struct rte_eth_txconf txc = info.default_txconf;

		rxc.offloads = pc.rxmode.offloads;
		txc.offloads = pc.txmode.offloads;
		rc = rte_eth_rx_queue_setup(port, q, nb_rxd, socket, &rxc, pool);
		if (rc == 0)
			rc = rte_eth_tx_queue_setup(port, q, nb_txd, socket, &txc);
		if (rc != 0) {
			KM_LOG(ERR, "port %u: queue %u setup failed: %s", port, q,
				rte_strerror(-rc));
			return rc;
		}
	}
	rc = rte_eth_dev_start(port);
	if (rc != 0) {
		KM_LOG(ERR, "port %u: start failed: %s", port, rte_strerror(-rc));
		return rc;
	}
	caps->nb_rxd = nb_rxd;
	/* Real NICs say whether a descriptor is filled; tap, memif and af_packet do not:
	 * workers then judge their backlog by full bursts (km_policy_backlog_update()). */
	caps->rx_desc_status = rte_eth_rx_descriptor_status(port, 0, 0) >= 0;
	KM_LOG(INFO, "port %u (%s): %u RX descriptors per queue, RX backlog judged by %s", port,
		info.driver_name, nb_rxd,
		caps->rx_desc_status ? "descriptor status" : "consecutive full bursts");
	return 0;
}

/* The tap interface's tx_dropped (sysfs of keymapd's network namespace), 0 if unreadable. */
static uint64_t
tap_kernel_drops(void)
{
	char name[IF_NAMESIZE], path[64 + IF_NAMESIZE];
	uint64_t v = 0;
	FILE *f;

	if (tap_ifindex == 0 || if_indextoname(tap_ifindex, name) == NULL)
		return 0;
	snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/tx_dropped", name);
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%" SCNu64, &v) != 1)
		v = 0;
	fclose(f);
	return v;
}

int
km_port_stats(uint16_t port, struct km_port_counters *pc, uint64_t *rxq_drops, uint16_t nb_queues)
{
	struct rte_eth_stats st;
	uint16_t q;
	int rc;

	memset(pc, 0, sizeof(*pc));
	memset(rxq_drops, 0, sizeof(*rxq_drops) * nb_queues);
	rc = rte_eth_stats_get(port, &st);
	if (rc != 0)
		return rc;
	pc->ipackets = st.ipackets;
	pc->opackets = st.opackets;
	pc->imissed = st.imissed;
	pc->ierrors = st.ierrors;
	pc->rx_nombuf = st.rx_nombuf;
	pc->oerrors = st.oerrors;
	pc->kernel_drops = tap_kernel_drops();
	for (q = 0; q < nb_queues && q < RTE_ETHDEV_QUEUE_STAT_CNTRS; q++)
		rxq_drops[q] = st.q_errors[q];
	return 0;
}

void
km_port_fini(uint16_t port)
{
	rte_eth_dev_stop(port);
	rte_eth_dev_close(port);
}
