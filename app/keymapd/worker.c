/* SPDX-License-Identifier: BSD-3-Clause */

#include <arpa/inet.h>

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include <urcu-qsbr.h>

#include "datapath.h"

struct km_datapath km_dp;
struct km_shardmap *km_map_current;

const char *const km_worker_counter_names[] = {
#define KM_X(name, help) #name,
	KM_WORKER_COUNTERS(KM_X)
#undef KM_X
};

#define L2_LEN     sizeof(struct rte_ether_hdr)
#define L3_LEN     sizeof(struct rte_ipv4_hdr)
#define L4_LEN     sizeof(struct rte_udp_hdr)
#define BURST_MAX  64
#define IPV4_IHL_5 0x45

/* Replies waiting for the TX burst at the end of an iteration. */
struct tx_batch {
	uint16_t n;
	struct rte_mbuf *pkts[2 * BURST_MAX];
};

static inline void
tx_add(struct tx_batch *tx, struct rte_mbuf *m)
{
	tx->pkts[tx->n++] = m;
}

static void
tx_flush(struct km_worker *w, struct tx_batch *tx)
{
	uint16_t sent = 0;

	if (tx->n == 0)
		return;
	sent = rte_eth_tx_burst(km_dp.port, w->queue, tx->pkts, tx->n);
	w->cnt.tx_pkts += sent;
	if (unlikely(sent < tx->n)) {
		w->cnt.tx_drops += tx->n - sent;
		rte_pktmbuf_free_bulk(&tx->pkts[sent], tx->n - sent);
	}
	tx->n = 0;
}

/* Answer an ARP request for our address in place. Not the fast path. */
static __rte_noinline int
arp_reply(struct km_worker *w, struct rte_mbuf *m, struct rte_ether_hdr *eth)
{
	struct rte_arp_hdr *arp = (struct rte_arp_hdr *)(eth + 1);
	uint32_t sip;

	if (m->data_len < L2_LEN + sizeof(*arp) ||
		arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) ||
		arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
		arp->arp_data.arp_tip != km_dp.ip)
		return -1;
	sip = arp->arp_data.arp_sip;
	arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
	arp->arp_data.arp_tha = arp->arp_data.arp_sha;
	arp->arp_data.arp_tip = sip;
	arp->arp_data.arp_sha = km_dp.mac;
	arp->arp_data.arp_sip = km_dp.ip;
	eth->dst_addr = eth->src_addr;
	eth->src_addr = km_dp.mac;
	m->ol_flags = 0;
	w->cnt.arp_replies++;
	return 0;
}

/* Answer an ICMP echo request in place. Not the fast path. */
static __rte_noinline int
icmp_reply(struct km_worker *w, struct rte_ether_hdr *eth, struct rte_ipv4_hdr *ip, uint16_t ip_len)
{
	struct rte_icmp_hdr *icmp = (struct rte_icmp_hdr *)(ip + 1);
	uint16_t icmp_len = ip_len - L3_LEN;
	uint32_t a;

	if (icmp_len < sizeof(*icmp) || icmp->icmp_type != RTE_IP_ICMP_ECHO_REQUEST ||
		icmp->icmp_code != 0)
		return -1;
	icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
	icmp->icmp_cksum = 0;
	icmp->icmp_cksum = ~rte_raw_cksum(icmp, icmp_len);
	a = ip->src_addr;
	ip->src_addr = ip->dst_addr;
	ip->dst_addr = a;
	ip->time_to_live = 64;
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	eth->dst_addr = eth->src_addr;
	eth->src_addr = km_dp.mac;
	w->cnt.icmp_replies++;
	return 0;
}

/* Turn the request in m into a reply of plen payload bytes, headers swapped in place. */
static inline void
udp_reply(struct rte_mbuf *m, struct rte_ether_hdr *eth, struct rte_ipv4_hdr *ip,
	struct rte_udp_hdr *udp, size_t plen)
{
	uint32_t a = ip->src_addr;
	uint16_t p = udp->src_port;

	eth->dst_addr = eth->src_addr;
	eth->src_addr = km_dp.mac;
	ip->src_addr = ip->dst_addr;
	ip->dst_addr = a;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(L3_LEN + L4_LEN + plen));
	ip->time_to_live = 64;
	ip->packet_id = 0;
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->hdr_checksum = 0;
	udp->src_port = udp->dst_port;
	udp->dst_port = p;
	udp->dgram_len = rte_cpu_to_be_16((uint16_t)(L4_LEN + plen));
	udp->dgram_cksum = 0;
	m->data_len = (uint16_t)(L2_LEN + L3_LEN + L4_LEN + plen);
	m->pkt_len = m->data_len;
	if (km_dp.tx_cksum_offload) {
		m->ol_flags = RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_UDP_CKSUM;
		m->l2_len = L2_LEN;
		m->l3_len = L3_LEN;
		udp->dgram_cksum = rte_ipv4_phdr_cksum(ip, m->ol_flags);
	} else {
		m->ol_flags = 0;
		ip->hdr_checksum = rte_ipv4_cksum(ip);
		udp->dgram_cksum = rte_ipv4_udptcp_cksum(ip, udp);
	}
}

/*
 * One packet from the NIC (handed == 0) or from another worker's hand-off (handed == 1).
 * The packet ends in the TX batch (a reply built in place), in its owner's ring, or freed.
 */
static inline void
process_pkt(struct km_worker *w, const struct km_shardmap *map, struct rte_mbuf *m, int handed,
	struct tx_batch *tx)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip;
	struct rte_udp_hdr *udp;
	struct km_msg msg;
	uint16_t ip_len, udp_len, dport;
	uint8_t *payload;
	struct km_route rt;
	size_t plen, cap;
	int st, target, pw;

	if (unlikely(m->nb_segs != 1 || m->data_len < L2_LEN)) {
		w->cnt.drop_l2++;
		goto drop;
	}
	if (unlikely(eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))) {
		if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP) &&
			arp_reply(w, m, eth) == 0) {
			tx_add(tx, m);
			return;
		}
		w->cnt.drop_l2++;
		goto drop;
	}
	ip = (struct rte_ipv4_hdr *)(eth + 1);
	if (unlikely(m->data_len < L2_LEN + L3_LEN || ip->version_ihl != IPV4_IHL_5 ||
		     ip->dst_addr != km_dp.ip)) {
		w->cnt.drop_l3++;
		goto drop;
	}
	ip_len = rte_be_to_cpu_16(ip->total_length);
	if (unlikely(ip_len < L3_LEN || L2_LEN + ip_len > m->data_len ||
		     (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG |
							     RTE_IPV4_HDR_OFFSET_MASK)) != 0)) {
		w->cnt.drop_l3++;
		goto drop;
	}
	/* Check the header checksum unless the NIC did (20 bytes: cheap). */
	if (unlikely((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD ||
		     ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) != RTE_MBUF_F_RX_IP_CKSUM_GOOD &&
			     rte_raw_cksum(ip, L3_LEN) != 0xffff))) {
		w->cnt.drop_l3++;
		goto drop;
	}
	if (unlikely(ip->next_proto_id != IPPROTO_UDP)) {
		if (ip->next_proto_id == IPPROTO_ICMP && icmp_reply(w, eth, ip, ip_len) == 0) {
			m->ol_flags = 0;
			m->data_len = (uint16_t)(L2_LEN + ip_len);
			m->pkt_len = m->data_len;
			tx_add(tx, m);
			return;
		}
		w->cnt.drop_l4++;
		goto drop;
	}
	udp = (struct rte_udp_hdr *)(ip + 1);
	udp_len = ip_len >= L3_LEN + L4_LEN ? rte_be_to_cpu_16(udp->dgram_len) : 0;
	dport = rte_be_to_cpu_16(udp->dst_port);
	pw = (int)dport - km_dp.udp_base;
	if (unlikely(udp_len < L4_LEN || udp_len > ip_len - L3_LEN || pw < 0 ||
		     pw >= km_dp.nb_workers ||
		     (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_BAD)) {
		w->cnt.drop_l4++;
		goto drop;
	}
	payload = (uint8_t *)(udp + 1);
	plen = udp_len - L4_LEN;
	if (unlikely(km_dp.echo))
		goto reply; /* the benchmark baseline: same path, no request processing */
	/* Room for the reply: from the payload to the end of the buffer. */
	cap = (size_t)((uint8_t *)m->buf_addr + m->buf_len - payload);

	st = km_req_parse(payload, plen, km_dp.value_max, &msg);
	if (unlikely(st < 0)) {
		w->cnt.drop_proto++;
		goto drop;
	}
	if (unlikely(st != KM_ST_OK)) {
		/* Error replies are never larger than the request: safe to any source. */
		km_proc_count_status(w->proc, (uint8_t)st);
		plen = km_proc_reply_status(&msg.hdr, (uint8_t)st, map->epoch, payload);
		goto reply;
	}
	target = km_proc_target(map, &msg, pw, &rt);
	if (unlikely(target == KM_TARGET_MOVED)) {
		km_proc_count_status(w->proc, KM_ST_MOVED);
		plen = km_proc_reply_status(&msg.hdr, KM_ST_MOVED, map->epoch, payload);
		goto reply;
	}
	if (target >= 0 && target != w->index) {
		if (handed) {
			/* The map changed while the request crossed: let the client retry. */
			plen = km_proc_reply_status(&msg.hdr, KM_ST_BUSY, map->epoch, payload);
			goto reply;
		}
		if (rte_ring_mp_enqueue(km_dp.workers[target].to_owner, m) == 0) {
			w->cnt.handoff_out++;
			return;
		}
		w->cnt.handoff_drops++;
		goto drop;
	}
	plen = km_proc_execute(w->proc, map, &msg, &rt,
		((uint64_t)ip->src_addr << 16) | udp->src_port, payload, cap);
reply:
	udp_reply(m, eth, ip, udp, plen);
	tx_add(tx, m);
	return;
drop:
	rte_pktmbuf_free(m);
}

int
km_worker_main(void *arg)
{
	struct km_worker *w = arg;
	struct rte_mbuf *pkts[BURST_MAX];
	const struct km_shardmap *map;
	struct tx_batch tx = {.n = 0};
	uint32_t idle = 0;
	uint16_t nb_rx, nb_ho, i;
	uint64_t t0;

	rcu_register_thread();
	while (!atomic_load_explicit(&km_dp.stop, memory_order_relaxed)) {
		/* Nothing from the previous iteration is still referenced: old maps may go. */
		rcu_quiescent_state();
		map = rcu_dereference(km_map_current);

		nb_rx = rte_eth_rx_burst(km_dp.port, w->queue, pkts, km_dp.burst);
		if (nb_rx == 0 && rte_ring_empty(w->to_owner)) {
			if (++idle < km_dp.idle_spin || km_dp.idle_sleep_us == 0) {
				rte_pause();
				continue;
			}
			/* Offline while asleep so that grace periods never wait for us. */
			rcu_thread_offline();
			rte_delay_us_sleep(km_dp.idle_sleep_us);
			rcu_thread_online();
			continue;
		}
		idle = 0;
		t0 = rte_rdtsc();
		w->cnt.rx_pkts += nb_rx;
		for (i = 0; i < nb_rx; i++)
			process_pkt(w, map, pkts[i], 0, &tx);
		nb_ho = (uint16_t)rte_ring_sc_dequeue_burst(
			w->to_owner, (void **)pkts, km_dp.burst, NULL);
		w->cnt.handoff_in += nb_ho;
		for (i = 0; i < nb_ho; i++)
			process_pkt(w, map, pkts[i], 1, &tx);
		tx_flush(w, &tx);
		w->cnt.busy_cycles += rte_rdtsc() - t0;
		w->cnt.busy_iters++;
	}
	rcu_thread_offline();
	rcu_unregister_thread();
	return 0;
}
