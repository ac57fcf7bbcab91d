/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * DPDK transport: RX/TX queue pairs of an ethdev (net_memif client, net_tap, a NIC), one
 * per generator lcore. Requests are framed Ethernet/IPv4/UDP from a template; the server's
 * MAC address is learnt by ARP at start. Queue q sends from UDP port src_port + q and takes
 * the replies to that port. A reply may come back on another queue than its request left
 * from (a server worker that answers a handed-over request from its own queue, a NIC's
 * RSS): the queue that receives it passes it to its queue's ring, which that queue's lcore
 * drains before its own RX queue.
 */

#include <string.h>

#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_udp.h>

#include <km_util.h>

#include "bench.h"

#define HDRS_LEN \
	(sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) + sizeof(struct rte_udp_hdr))
#define NB_MBUFS     8191
#define NB_DESC      1024
#define LINK_WAIT_MS 5000
#define ARP_WAIT_MS  3000
#define XRING_SIZE   4096 /* replies waiting for their queue's lcore */

struct xeth_port;

/* One queue pair: the transport of one generator lcore. */
struct xeth {
	struct bench_xport x;
	struct xeth_port *p;
	uint16_t q;
	uint16_t src_port;      /* host order: src_port + q */
	uint8_t hdrs[HDRS_LEN]; /* Ethernet + IPv4 + UDP template */
	uint64_t ip_sum;        /* of the template's IPv4 header, its length and checksum 0 */
	struct rte_mbuf *tx[BENCH_BURST];
	unsigned int nb_tx;
	struct rte_mbuf *rx[BENCH_BURST];
	unsigned int nb_rx;
	/* Replies read, their mbufs kept for the next requests (eth_tx_prepare()). */
	struct rte_mbuf *spare[BENCH_BURST];
	unsigned int nb_spare;
};

/* What the queues share. */
struct xeth_port {
	uint16_t port;
	uint16_t nb_q;
	uint16_t src_port; /* of queue 0 */
	uint32_t src_ip;
	unsigned int refs; /* queues not closed yet */
	struct rte_mempool *pool;
	struct rte_ether_addr mac;
	struct rte_ring *ring[BENCH_GEN_MAX]; /* per queue, with several queues */
};

/*
 * The mbufs of the replies the engine has read, kept for its next requests: a request
 * answered is a request sent, so that what the port's RX took from the pool goes back to
 * its TX without the pool in between (a put and a get per request). Those not plain
 * (another pool, shared, indirect, chained) or beyond the spares' room are freed.
 */
static void
spare_put(struct xeth *e, struct rte_mbuf **m, unsigned int n)
{
	struct rte_mbuf *gone[BENCH_BURST];
	unsigned int i, k = 0;

	for (i = 0; i < n; i++) {
		if (e->nb_spare < RTE_DIM(e->spare) && m[i]->pool == e->p->pool &&
			RTE_MBUF_DIRECT(m[i]) && rte_mbuf_refcnt_read(m[i]) == 1 &&
			m[i]->nb_segs == 1)
			e->spare[e->nb_spare++] = m[i];
		else
			gone[k++] = m[i];
	}
	if (k > 0)
		rte_pktmbuf_free_bulk(gone, k);
}

static unsigned int
eth_tx_prepare(struct bench_xport *x, unsigned int n, uint8_t **bufs, size_t *cap)
{
	struct xeth *e = (struct xeth *)x;
	unsigned int i, k;

	if (n > BENCH_BURST)
		n = BENCH_BURST;
	/* The spares first, the latest read first (their lines are the warmest), reset as
	 * an allocation resets them; the rest from the pool (none: fewer requests). */
	k = RTE_MIN(n, e->nb_spare);
	for (i = 0; i < k; i++) {
		e->tx[i] = e->spare[--e->nb_spare];
		rte_pktmbuf_reset(e->tx[i]);
	}
	if (k < n && rte_pktmbuf_alloc_bulk(e->p->pool, &e->tx[k], n - k) != 0)
		n = k;
	if (n == 0)
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
	uint16_t tot;
	uint8_t *p;

	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = e->tx[i];

		p = rte_pktmbuf_mtod(m, uint8_t *);
		memcpy(p, e->hdrs, HDRS_LEN);
		ip = (struct rte_ipv4_hdr *)(p + sizeof(struct rte_ether_hdr));
		udp = (struct rte_udp_hdr *)(ip + 1);
		tot = rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + sizeof(*udp) + lens[i]));
		ip->total_length = tot;
		/* Only the length differs from the template's header: its sum plus the length. */
		ip->hdr_checksum = (uint16_t)~km_csum_fold(e->ip_sum + tot);
		/* A zero UDP checksum means "none" in IPv4: the server does not need one. */
		udp->dgram_len = rte_cpu_to_be_16((uint16_t)(sizeof(*udp) + lens[i]));
		m->data_len = (uint16_t)(HDRS_LEN + lens[i]);
		m->pkt_len = m->data_len;
	}
	sent = n == 0 ? 0 : rte_eth_tx_burst(e->p->port, e->q, e->tx, (uint16_t)n);
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
		arp->arp_data.arp_tip != e->p->src_ip)
		return 0;
	sip = arp->arp_data.arp_sip;
	arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
	arp->arp_data.arp_tha = arp->arp_data.arp_sha;
	arp->arp_data.arp_tip = sip;
	arp->arp_data.arp_sha = e->p->mac;
	arp->arp_data.arp_sip = e->p->src_ip;
	eth->dst_addr = eth->src_addr;
	eth->src_addr = e->p->mac;
	if (rte_eth_tx_burst(e->p->port, e->q, &m, 1) != 1)
		rte_pktmbuf_free(m);
	return 1;
}

/* m is a UDP datagram to our address: @return its payload and length, or NULL. */
static const uint8_t *
udp_payload(struct rte_mbuf *m, uint16_t *len)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	uint16_t ulen = rte_be_to_cpu_16(udp->dgram_len);

	if (ulen < sizeof(*udp) || HDRS_LEN - sizeof(*udp) + ulen > m->data_len)
		return NULL;
	*len = (uint16_t)(ulen - sizeof(*udp));
	return (const uint8_t *)(udp + 1);
}

/*
 * The queue whose UDP port m is addressed to, or -1: not a UDP datagram for our address
 * and ports (ARP is answered, anything else dropped by the caller).
 */
static int
rx_queue_of(const struct xeth_port *p, struct rte_mbuf *m)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	unsigned int dq;

	if (m->nb_segs != 1 || m->data_len < HDRS_LEN ||
		eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
		ip->version_ihl != 0x45 || ip->next_proto_id != IPPROTO_UDP ||
		ip->dst_addr != p->src_ip)
		return -1;
	dq = (uint16_t)(rte_be_to_cpu_16(udp->dst_port) - p->src_port);
	return dq < p->nb_q ? (int)dq : -1;
}

static unsigned int
eth_rx(struct bench_xport *x, unsigned int n, const uint8_t **bufs, uint16_t *lens)
{
	struct xeth *e = (struct xeth *)x;
	struct xeth_port *p = e->p;
	struct rte_mbuf *pkts[BENCH_BURST];
	unsigned int nb = 0, i, k = 0;
	const uint8_t *pl;
	int dq;

	if (e->nb_rx > 0) {
		spare_put(e, e->rx, e->nb_rx);
		e->nb_rx = 0;
	}
	if (n > BENCH_BURST)
		n = BENCH_BURST;
	/* Replies another queue received for us first: they were checked there. */
	if (p->nb_q > 1)
		nb = rte_ring_sc_dequeue_burst(p->ring[e->q], (void **)pkts, n, NULL);
	for (i = 0; i < nb; i++) {
		pl = udp_payload(pkts[i], &lens[k]);
		e->rx[e->nb_rx++] = pkts[i];
		bufs[k++] = pl;
	}
	if (nb == n)
		return k;
	nb = rte_eth_rx_burst(p->port, e->q, pkts, (uint16_t)(n - nb));
	for (i = 0; i < nb; i++) {
		struct rte_mbuf *m = pkts[i];

		dq = rx_queue_of(p, m);
		if (dq < 0) {
			if (!arp_answer(e, m))
				rte_pktmbuf_free(m);
			continue;
		}
		pl = udp_payload(m, &lens[k]);
		if (pl == NULL) {
			rte_pktmbuf_free(m);
			continue;
		}
		if (dq != e->q) {
			/* A full ring loses the reply: its request times out. */
			if (rte_ring_mp_enqueue(p->ring[dq], m) != 0)
				rte_pktmbuf_free(m);
			continue;
		}
		e->rx[e->nb_rx++] = m;
		bufs[k++] = pl;
	}
	return k;
}

/* The port and what the queues share, once no queue uses them. */
static void
port_free(struct xeth_port *p)
{
	struct rte_mbuf *m;
	unsigned int q;

	if (p->port != UINT16_MAX) {
		rte_eth_dev_stop(p->port);
		rte_eth_dev_close(p->port); /* before its RX queues' pool goes */
	}
	for (q = 0; q < p->nb_q; q++) {
		if (p->ring[q] == NULL)
			continue;
		while (rte_ring_dequeue(p->ring[q], (void **)&m) == 0)
			rte_pktmbuf_free(m);
		rte_ring_free(p->ring[q]);
	}
	rte_mempool_free(p->pool);
	rte_free(p);
}

static void
eth_close(struct bench_xport *x)
{
	struct xeth *e = (struct xeth *)x;
	struct xeth_port *p = e->p;

	if (e->nb_rx > 0)
		rte_pktmbuf_free_bulk(e->rx, e->nb_rx);
	if (e->nb_spare > 0)
		rte_pktmbuf_free_bulk(e->spare, e->nb_spare);
	rte_free(e);
	if (--p->refs == 0)
		port_free(p);
}

static int
send_arp_request(struct xeth *e, uint32_t tip)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(e->p->pool);
	struct rte_ether_hdr *eth;
	struct rte_arp_hdr *arp;

	if (m == NULL)
		return -1;
	eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	arp = (struct rte_arp_hdr *)(eth + 1);
	memset(&eth->dst_addr, 0xff, sizeof(eth->dst_addr));
	eth->src_addr = e->p->mac;
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
	arp->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
	arp->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	arp->arp_hlen = RTE_ETHER_ADDR_LEN;
	arp->arp_plen = 4;
	arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REQUEST);
	arp->arp_data.arp_sha = e->p->mac;
	arp->arp_data.arp_sip = e->p->src_ip;
	memset(&arp->arp_data.arp_tha, 0, sizeof(arp->arp_data.arp_tha));
	arp->arp_data.arp_tip = tip;
	m->data_len = (uint16_t)(sizeof(*eth) + sizeof(*arp));
	m->pkt_len = m->data_len;
	if (rte_eth_tx_burst(e->p->port, e->q, &m, 1) != 1) {
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
		nb = rte_eth_rx_burst(e->p->port, e->q, pkts, BENCH_BURST);
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

/* The template of e's headers is complete: the sum of its IPv4 header for eth_tx_send(). */
static void
hdrs_done(struct xeth *e)
{
	const struct rte_ipv4_hdr *ip =
		(const struct rte_ipv4_hdr *)(e->hdrs + sizeof(struct rte_ether_hdr));

	RTE_ASSERT(ip->total_length == 0 && ip->hdr_checksum == 0);
	e->ip_sum = km_csum_add(ip, sizeof(*ip), 0);
}

/* Queue q's transport, its headers from queue 0's template. @return NULL: no memory. */
static struct xeth *
queue_new(struct xeth_port *p, uint16_t q, const uint8_t *hdrs)
{
	struct xeth *e = rte_zmalloc("bench_xeth", sizeof(*e), RTE_CACHE_LINE_SIZE);
	struct rte_udp_hdr *udp;

	if (e == NULL)
		return NULL;
	e->p = p;
	e->q = q;
	e->src_port = (uint16_t)(p->src_port + q);
	if (hdrs != NULL) {
		memcpy(e->hdrs, hdrs, HDRS_LEN);
		udp = (struct rte_udp_hdr *)(e->hdrs + HDRS_LEN - sizeof(*udp));
		udp->src_port = rte_cpu_to_be_16(e->src_port);
		hdrs_done(e);
	}
	e->x.tx_prepare = eth_tx_prepare;
	e->x.tx_send = eth_tx_send;
	e->x.rx = eth_rx;
	e->x.close = eth_close;
	p->refs++;
	return e;
}

/* Configure and start the port with nb_q queue pairs (RSS where the port has it). */
static int
port_start(struct xeth_port *p, char *err, size_t errlen)
{
	struct rte_eth_conf pconf = {0};
	struct rte_eth_dev_info info;
	unsigned int socket = (unsigned int)rte_eth_dev_socket_id(p->port);
	uint16_t q;
	int rc;

	rc = rte_eth_dev_info_get(p->port, &info);
	if (rc != 0) {
		snprintf(err, errlen, "port %u: no device info: %s", p->port, rte_strerror(-rc));
		return -1;
	}
	if (p->nb_q > info.max_rx_queues || p->nb_q > info.max_tx_queues) {
		snprintf(err, errlen,
			"port %u (%s): --threads %u needs %u RX and TX queues, the port has "
			"%u/%u",
			p->port, info.driver_name, p->nb_q, p->nb_q, info.max_rx_queues,
			info.max_tx_queues);
		return -1;
	}
	if (p->nb_q > 1 && (info.flow_type_rss_offloads & RTE_ETH_RSS_NONFRAG_IPV4_UDP) != 0) {
		pconf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		pconf.rx_adv_conf.rss_conf.rss_hf =
			info.flow_type_rss_offloads &
			(RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_UDP);
	}
	rc = rte_eth_dev_configure(p->port, p->nb_q, p->nb_q, &pconf);
	if (rc != 0 && pconf.rxmode.mq_mode == RTE_ETH_MQ_RX_RSS) {
		/* Advertised, refused: replies reach their queue through the rings anyway. */
		memset(&pconf, 0, sizeof(pconf));
		rc = rte_eth_dev_configure(p->port, p->nb_q, p->nb_q, &pconf);
	}
	for (q = 0; rc == 0 && q < p->nb_q; q++) {
		rc = rte_eth_rx_queue_setup(p->port, q, NB_DESC, socket, NULL, p->pool);
		if (rc == 0)
			rc = rte_eth_tx_queue_setup(p->port, q, NB_DESC, socket, NULL);
	}
	if (rc != 0) {
		snprintf(err, errlen, "port %u (%s) setup failed: %s", p->port, info.driver_name,
			rte_strerror(-rc));
		return -1;
	}
	rc = rte_eth_dev_start(p->port);
	if (rc != 0) {
		/* memif's client end fails here (with -1, no errno) when no server end
		 * listens on its socket. */
		snprintf(err, errlen, "port %u (%s) did not start: %s", p->port, info.driver_name,
			strstr(info.driver_name, "memif") != NULL
				? "is the server end listening on that socket, in this network "
				  "namespace?"
				: rte_strerror(-rc));
		return -1;
	}
	return 0;
}

int
bench_xport_eth(const struct bench_conf *c, unsigned int nb, struct bench_xport **xs, char *err,
	size_t errlen)
{
	struct rte_eth_link link;
	struct rte_ether_addr dst;
	struct rte_ether_hdr *eth;
	struct rte_ipv4_hdr *ip;
	struct rte_udp_hdr *udp;
	struct xeth_port *p;
	struct xeth *e0;
	uint64_t hz = rte_get_timer_hz(), end;
	unsigned int q;
	char name[RTE_RING_NAMESIZE];

	if (!rte_eth_dev_is_valid_port(c->eth_port)) {
		snprintf(err, errlen,
			"ethdev port %u does not exist (%u available): give a --vdev or a device "
			"after --; a device given that failed to probe says why above",
			c->eth_port, rte_eth_dev_count_avail());
		return -1;
	}
	if (nb == 0 || nb > BENCH_GEN_MAX || (uint32_t)c->src_port + nb - 1 > UINT16_MAX) {
		snprintf(err, errlen, "%u queues from UDP port %u: out of range", nb, c->src_port);
		return -1;
	}
	p = rte_zmalloc("bench_xeth_port", sizeof(*p), RTE_CACHE_LINE_SIZE);
	if (p == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	p->port = UINT16_MAX; /* not configured yet */
	p->nb_q = (uint16_t)nb;
	p->src_ip = c->src_ip;
	p->src_port = c->src_port;
	/* Enough for every queue's descriptors and bursts, and the rings between them. */
	p->pool = rte_pktmbuf_pool_create("bench_mbufs",
		nb == 1 ? NB_MBUFS : nb * (2 * NB_DESC + XRING_SIZE) + 2047, 256, 0,
		RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	if (p->pool == NULL) {
		snprintf(
			err, errlen, "cannot create mbufs: %s (raise -m)", rte_strerror(rte_errno));
		rte_free(p);
		return -1;
	}
	for (q = 0; nb > 1 && q < nb; q++) {
		snprintf(name, sizeof(name), "bench_rx%u", q);
		p->ring[q] = rte_ring_create(
			name, XRING_SIZE, (int)rte_socket_id(), RING_F_SC_DEQ | RING_F_EXACT_SZ);
		if (p->ring[q] == NULL) {
			snprintf(err, errlen, "cannot create a ring: %s (raise -m)",
				rte_strerror(rte_errno));
			port_free(p);
			return -1;
		}
	}
	p->port = c->eth_port;
	if (port_start(p, err, errlen) != 0) {
		port_free(p);
		return -1;
	}
	rte_eth_macaddr_get(p->port, &p->mac);
	e0 = queue_new(p, 0, NULL);
	if (e0 == NULL) {
		snprintf(err, errlen, "out of memory");
		port_free(p);
		return -1;
	}
	/* memif comes up once the server accepts the connection. */
	end = rte_get_timer_cycles() + hz * LINK_WAIT_MS / 1000;
	do {
		memset(&link, 0, sizeof(link));
		/* No link status (-ENOTSUP): go on, ARP tells whether the peer is there. */
		if (rte_eth_link_get_nowait(p->port, &link) != 0) {
			link.link_status = RTE_ETH_LINK_UP;
			break;
		}
		if (link.link_status == RTE_ETH_LINK_UP)
			break;
		rte_delay_ms(10);
	} while (rte_get_timer_cycles() < end && !bench_stop);
	if (link.link_status != RTE_ETH_LINK_UP) {
		snprintf(err, errlen, "port %u: link down after %d ms (is the server running%s?)",
			p->port, LINK_WAIT_MS,
			nb > 1 ? ", with as many queues as --threads (memif: as many workers)"
			       : "");
		eth_close(&e0->x);
		return -1;
	}
	if (arp_resolve(e0, c->server_ip, &dst) != 0) {
		snprintf(err, errlen, "no ARP reply from the server within %d ms", ARP_WAIT_MS);
		eth_close(&e0->x);
		return -1;
	}
	eth = (struct rte_ether_hdr *)e0->hdrs;
	ip = (struct rte_ipv4_hdr *)(eth + 1);
	udp = (struct rte_udp_hdr *)(ip + 1);
	eth->dst_addr = dst;
	eth->src_addr = p->mac;
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	ip->version_ihl = 0x45;
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->src_addr = c->src_ip;
	ip->dst_addr = c->server_ip;
	udp->src_port = rte_cpu_to_be_16(c->src_port);
	udp->dst_port = rte_cpu_to_be_16(c->server_port);
	hdrs_done(e0);
	xs[0] = &e0->x;
	for (q = 1; q < nb; q++) {
		struct xeth *e = queue_new(p, (uint16_t)q, e0->hdrs);

		if (e == NULL) {
			snprintf(err, errlen, "out of memory");
			while (q-- > 0)
				xs[q]->close(xs[q]);
			return -1;
		}
		xs[q] = &e->x;
	}
	return 0;
}
