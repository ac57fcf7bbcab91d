/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * DPDK transport: one RX and one TX queue of an ethdev (net_memif client, net_tap, a
 * NIC). Requests are framed Ethernet/IPv4/UDP from a template; the server's MAC address
 * is learnt by ARP at start. Replies are matched on our address and UDP port.
 */

#include <string.h>

#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "bench.h"

#define HDRS_LEN \
	(sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) + sizeof(struct rte_udp_hdr))
#define NB_MBUFS     8191
#define NB_DESC      1024
#define LINK_WAIT_MS 5000
#define ARP_WAIT_MS  3000

struct xeth {
	struct bench_xport x;
	uint16_t port;
	uint16_t src_port;
	uint32_t src_ip;
	struct rte_mempool *pool;
	struct rte_ether_addr mac;
	uint8_t hdrs[HDRS_LEN]; /* Ethernet + IPv4 + UDP template */
	struct rte_mbuf *tx[BENCH_BURST];
	unsigned int nb_tx;
	struct rte_mbuf *rx[BENCH_BURST];
	unsigned int nb_rx;
};

static unsigned int
eth_tx_prepare(struct bench_xport *x, unsigned int n, uint8_t **bufs, size_t *cap)
{
	struct xeth *e = (struct xeth *)x;
	unsigned int i;

	if (n > BENCH_BURST)
		n = BENCH_BURST;
	if (rte_pktmbuf_alloc_bulk(e->pool, e->tx, n) != 0)
		return 0;
	e->nb_tx = n;
	for (i = 0; i < n; i++) {
		bufs[i] = rte_pktmbuf_mtod_offset(e->tx[i], uint8_t *, HDRS_LEN);
		cap[i] = RTE_MIN((size_t)BENCH_PAYLOAD_MAX,
			(size_t)rte_pktmbuf_tailroom(e->tx[i]) - HDRS_LEN);
	}
	return n;
}

static unsigned int
eth_tx_send(struct bench_xport *x, unsigned int n, const uint16_t *lens)
{
	struct xeth *e = (struct xeth *)x;
	struct rte_ipv4_hdr *ip;
	struct rte_udp_hdr *udp;
	unsigned int i, sent;
	uint8_t *p;

	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = e->tx[i];

		p = rte_pktmbuf_mtod(m, uint8_t *);
		memcpy(p, e->hdrs, HDRS_LEN);
		ip = (struct rte_ipv4_hdr *)(p + sizeof(struct rte_ether_hdr));
		udp = (struct rte_udp_hdr *)(ip + 1);
		ip->total_length =
			rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + sizeof(*udp) + lens[i]));
		ip->hdr_checksum = rte_ipv4_cksum(ip);
		/* A zero UDP checksum means "none" in IPv4: the server does not need one. */
		udp->dgram_len = rte_cpu_to_be_16((uint16_t)(sizeof(*udp) + lens[i]));
		m->data_len = (uint16_t)(HDRS_LEN + lens[i]);
		m->pkt_len = m->data_len;
	}
	sent = n == 0 ? 0 : rte_eth_tx_burst(e->port, 0, e->tx, (uint16_t)n);
	if (sent < e->nb_tx)
		rte_pktmbuf_free_bulk(&e->tx[sent], e->nb_tx - sent);
	e->nb_tx = 0;
	return sent;
}

/*
 * Answer an ARP request for our address in place (a kernel peer, e.g. behind net_tap,
 * stops talking to a host that does not). @return 1 when m was consumed.
 */
static int
arp_answer(struct xeth *e, struct rte_mbuf *m)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_arp_hdr *arp = (struct rte_arp_hdr *)(eth + 1);
	uint32_t sip;

	if (m->data_len < sizeof(*eth) + sizeof(*arp) ||
		eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP) ||
		arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) ||
		arp->arp_data.arp_tip != e->src_ip)
		return 0;
	sip = arp->arp_data.arp_sip;
	arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
	arp->arp_data.arp_tha = arp->arp_data.arp_sha;
	arp->arp_data.arp_tip = sip;
	arp->arp_data.arp_sha = e->mac;
	arp->arp_data.arp_sip = e->src_ip;
	eth->dst_addr = eth->src_addr;
	eth->src_addr = e->mac;
	if (rte_eth_tx_burst(e->port, 0, &m, 1) != 1)
		rte_pktmbuf_free(m);
	return 1;
}

static unsigned int
eth_rx(struct bench_xport *x, unsigned int n, const uint8_t **bufs, uint16_t *lens)
{
	struct xeth *e = (struct xeth *)x;
	struct rte_mbuf *pkts[BENCH_BURST];
	unsigned int nb, i, k = 0;

	if (e->nb_rx > 0) {
		rte_pktmbuf_free_bulk(e->rx, e->nb_rx);
		e->nb_rx = 0;
	}
	if (n > BENCH_BURST)
		n = BENCH_BURST;
	nb = rte_eth_rx_burst(e->port, 0, pkts, (uint16_t)n);
	for (i = 0; i < nb; i++) {
		struct rte_mbuf *m = pkts[i];
		struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
		struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
		struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
		uint16_t ulen;

		if (m->nb_segs != 1 || m->data_len < HDRS_LEN ||
			eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
			ip->version_ihl != 0x45 || ip->next_proto_id != IPPROTO_UDP ||
			ip->dst_addr != e->src_ip ||
			udp->dst_port != rte_cpu_to_be_16(e->src_port)) {
			if (!arp_answer(e, m))
				rte_pktmbuf_free(m);
			continue;
		}
		ulen = rte_be_to_cpu_16(udp->dgram_len);
		if (ulen < sizeof(*udp) || HDRS_LEN - sizeof(*udp) + ulen > m->data_len) {
			rte_pktmbuf_free(m);
			continue;
		}
		e->rx[e->nb_rx++] = m;
		bufs[k] = (const uint8_t *)(udp + 1);
		lens[k] = (uint16_t)(ulen - sizeof(*udp));
		k++;
	}
	return k;
}

static void
eth_close(struct bench_xport *x)
{
	struct xeth *e = (struct xeth *)x;

	if (e->nb_rx > 0)
		rte_pktmbuf_free_bulk(e->rx, e->nb_rx);
	rte_eth_dev_stop(e->port);
	rte_eth_dev_close(e->port);
	rte_mempool_free(e->pool);
	rte_free(e);
}

static int
send_arp_request(struct xeth *e, uint32_t tip)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(e->pool);
	struct rte_ether_hdr *eth;
	struct rte_arp_hdr *arp;

	if (m == NULL)
		return -1;
	eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	arp = (struct rte_arp_hdr *)(eth + 1);
	memset(&eth->dst_addr, 0xff, sizeof(eth->dst_addr));
	eth->src_addr = e->mac;
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
	arp->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
	arp->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	arp->arp_hlen = RTE_ETHER_ADDR_LEN;
	arp->arp_plen = 4;
	arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REQUEST);
	arp->arp_data.arp_sha = e->mac;
	arp->arp_data.arp_sip = e->src_ip;
	memset(&arp->arp_data.arp_tha, 0, sizeof(arp->arp_data.arp_tha));
	arp->arp_data.arp_tip = tip;
	m->data_len = (uint16_t)(sizeof(*eth) + sizeof(*arp));
	m->pkt_len = m->data_len;
	if (rte_eth_tx_burst(e->port, 0, &m, 1) != 1) {
		rte_pktmbuf_free(m);
		return -1;
	}
	return 0;
}

/* Ask for the server's MAC address until it answers or ARP_WAIT_MS pass. */
static int
arp_resolve(struct xeth *e, uint32_t tip, struct rte_ether_addr *out)
{
	uint64_t hz = rte_get_timer_hz(), end = rte_get_timer_cycles() + hz * ARP_WAIT_MS / 1000;
	uint64_t next_req = 0, now;
	struct rte_mbuf *pkts[BENCH_BURST];
	unsigned int nb, i;
	int found = 0;

	while (!found && (now = rte_get_timer_cycles()) < end && !bench_stop) {
		if (now >= next_req) {
			send_arp_request(e, tip);
			next_req = now + hz / 5;
		}
		nb = rte_eth_rx_burst(e->port, 0, pkts, BENCH_BURST);
		for (i = 0; i < nb; i++) {
			struct rte_ether_hdr *eth =
				rte_pktmbuf_mtod(pkts[i], struct rte_ether_hdr *);
			struct rte_arp_hdr *arp = (struct rte_arp_hdr *)(eth + 1);

			if (!found && pkts[i]->data_len >= sizeof(*eth) + sizeof(*arp) &&
				eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP) &&
				arp->arp_opcode == rte_cpu_to_be_16(RTE_ARP_OP_REPLY) &&
				arp->arp_data.arp_sip == tip) {
				*out = arp->arp_data.arp_sha;
				found = 1;
			}
			if (!arp_answer(e, pkts[i]))
				rte_pktmbuf_free(pkts[i]);
		}
		if (nb == 0)
			rte_delay_us_block(100);
	}
	return found ? 0 : -1;
}

struct bench_xport *
bench_xport_eth(const struct bench_conf *c, char *err, size_t errlen)
{
	struct rte_eth_conf pconf = {0};
	struct rte_eth_link link;
	struct rte_ether_addr dst;
	struct rte_ether_hdr *eth;
	struct rte_ipv4_hdr *ip;
	struct rte_udp_hdr *udp;
	struct xeth *e;
	uint64_t hz = rte_get_timer_hz(), end;
	int rc;

	if (!rte_eth_dev_is_valid_port(c->eth_port)) {
		snprintf(err, errlen,
			"ethdev port %u does not exist (%u available; give a --vdev or a device "
			"after --)",
			c->eth_port, rte_eth_dev_count_avail());
		return NULL;
	}
	e = rte_zmalloc("bench_xeth", sizeof(*e), RTE_CACHE_LINE_SIZE);
	if (e == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	e->port = c->eth_port;
	e->src_ip = c->src_ip;
	e->src_port = c->src_port;
	e->pool = rte_pktmbuf_pool_create(
		"bench_mbufs", NB_MBUFS, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	if (e->pool == NULL) {
		snprintf(
			err, errlen, "cannot create mbufs: %s (raise -m)", rte_strerror(rte_errno));
		rte_free(e);
		return NULL;
	}
	rc = rte_eth_dev_configure(e->port, 1, 1, &pconf);
	if (rc == 0)
		rc = rte_eth_rx_queue_setup(e->port, 0, NB_DESC,
			(unsigned int)rte_eth_dev_socket_id(e->port), NULL, e->pool);
	if (rc == 0)
		rc = rte_eth_tx_queue_setup(
			e->port, 0, NB_DESC, (unsigned int)rte_eth_dev_socket_id(e->port), NULL);
	if (rc == 0)
		rc = rte_eth_dev_start(e->port);
	if (rc != 0) {
		snprintf(err, errlen, "port %u setup failed: %s", e->port, rte_strerror(-rc));
		rte_eth_dev_close(e->port); /* before its RX queue's pool goes */
		rte_mempool_free(e->pool);
		rte_free(e);
		return NULL;
	}
	e->x.tx_prepare = eth_tx_prepare;
	e->x.tx_send = eth_tx_send;
	e->x.rx = eth_rx;
	e->x.close = eth_close;
	rte_eth_macaddr_get(e->port, &e->mac);
	/* memif comes up once the server accepts the connection. */
	end = rte_get_timer_cycles() + hz * LINK_WAIT_MS / 1000;
	do {
		memset(&link, 0, sizeof(link));
		/* No link status (-ENOTSUP): go on, ARP tells whether the peer is there. */
		if (rte_eth_link_get_nowait(e->port, &link) != 0) {
			link.link_status = RTE_ETH_LINK_UP;
			break;
		}
		if (link.link_status == RTE_ETH_LINK_UP)
			break;
		rte_delay_ms(10);
	} while (rte_get_timer_cycles() < end && !bench_stop);
	if (link.link_status != RTE_ETH_LINK_UP) {
		snprintf(err, errlen, "port %u: link down after %d ms (is the server running?)",
			e->port, LINK_WAIT_MS);
		eth_close(&e->x);
		return NULL;
	}
	if (arp_resolve(e, c->server_ip, &dst) != 0) {
		snprintf(err, errlen, "no ARP reply from the server within %d ms", ARP_WAIT_MS);
		eth_close(&e->x);
		return NULL;
	}
	eth = (struct rte_ether_hdr *)e->hdrs;
	ip = (struct rte_ipv4_hdr *)(eth + 1);
	udp = (struct rte_udp_hdr *)(ip + 1);
	eth->dst_addr = dst;
	eth->src_addr = e->mac;
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	ip->version_ihl = 0x45;
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->src_addr = c->src_ip;
	ip->dst_addr = c->server_ip;
	udp->src_port = rte_cpu_to_be_16(c->src_port);
	udp->dst_port = rte_cpu_to_be_16(c->server_port);
	return &e->x;
}
