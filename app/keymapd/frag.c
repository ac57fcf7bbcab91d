/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * IPv4 fragments in and out of a worker (frag.h): reassembly with rte_ip_frag, large
 * buffers, fragmented replies.
 */

/* rte_ip_frag_table_del_expired_entries() is experimental in DPDK 22.11: without it a
 * table whose fragments never complete holds their mbufs until new fragments land in the
 * same buckets. */
#define ALLOW_EXPERIMENTAL_API

#define KM_LOG_COMP KM_LOG_DATAPATH /* keymapd.h */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ether.h>
#include <rte_ip_frag.h>
#include <rte_lcore.h>
#include <rte_udp.h>

#include <km_proto.h>
#include <km_util.h>

#include "datapath.h"
#include "frag.h"
#include "keymapd.h"

#define L2_LEN sizeof(struct rte_ether_hdr)
#define L3_LEN sizeof(struct rte_ipv4_hdr)
#define L4_LEN sizeof(struct rte_udp_hdr)
/* Associativity of the reassembly table: its slots are 4 x frag_max (rounded up to a
 * power of two), so a datagram rarely finds both of its buckets full before the table is. */
#define FRAG_BUCKET_ENTRIES 4
/* Mbufs one rte_ipv4_frag_reassemble_packet() call may put on the death row: a stale
 * entry it replaces, its own entry on error, and the fragment. */
#define FRAG_DR_PER_CALL (2 * RTE_LIBRTE_IP_FRAG_MAX_FRAG + 1)
/* Fragments of a reply in flight beyond the TX ring: a TX batch and one reply. */
#define FRAG_OUT_SLACK 192
/* Below this MTU a reply of KM_MSG_MAX would take more than KM_FRAG_OUT_MAX fragments. */
#define FRAG_MTU_MIN 576

uint32_t
km_frag_room(uint64_t value_max, uint16_t mtu)
{
	uint64_t req = (uint64_t)KM_HDR_LEN + KM_KEY_MAX + value_max;
	uint64_t reasm = 0;

	/* Every fragment but the last carries a multiple of 8 bytes. */
	if (mtu > L3_LEN + 8)
		reasm = (uint64_t)RTE_LIBRTE_IP_FRAG_MAX_FRAG * ((mtu - L3_LEN) & ~7u) - L4_LEN;
	if (reasm > req)
		req = reasm;
	return req < KM_MSG_MAX ? (uint32_t)req : KM_MSG_MAX;
}

int
km_frag_init(struct km_worker *w, const struct km_conf *conf)
{
	int socket = (int)rte_lcore_to_socket_id(w->lcore);
	unsigned int nb_out = (unsigned int)conf->tx_desc + FRAG_OUT_SLACK;
	uint64_t cycles = rte_get_tsc_hz() / 1000 * conf->frag_timeout_ms;
	char name[RTE_MEMPOOL_NAMESIZE];

	w->frag_dr = rte_zmalloc_socket("km_frag_dr", sizeof(*w->frag_dr), 0, socket);
	if (w->frag_dr == NULL)
		return -ENOMEM;
	if (conf->frag_max != 0) {
		w->frag_tbl = rte_ip_frag_table_create((uint32_t)conf->frag_max,
			FRAG_BUCKET_ENTRIES, (uint32_t)conf->frag_max, cycles, socket);
		if (w->frag_tbl == NULL) {
			KM_LOG(ERR,
				"worker %u: cannot create a reassembly table of %" PRIu64
				" datagrams",
				w->index, conf->frag_max);
			return -ENOMEM;
		}
	}
	snprintf(name, sizeof(name), "km_large%u", w->index);
	w->large = rte_pktmbuf_pool_create(name, (unsigned int)conf->large_bufs, 0, 0,
		(uint16_t)(RTE_PKTMBUF_HEADROOM + L2_LEN + L3_LEN + L4_LEN + km_dp.large_room),
		socket);
	snprintf(name, sizeof(name), "km_fdir%u", w->index);
	/* A fragment's header; where the port cannot send chains, its whole frame (the
	 * fragment's data is copied after the header: rte_pktmbuf_linearize()). */
	w->frag_direct = rte_pktmbuf_pool_create(name, nb_out, 0, 0,
		(uint16_t)(RTE_PKTMBUF_HEADROOM + (km_dp.tx_multi_seg ? L3_LEN : km_dp.mtu)),
		socket);
	snprintf(name, sizeof(name), "km_find%u", w->index);
	w->frag_indirect = rte_pktmbuf_pool_create(name, nb_out, 0, 0, 0, socket);
	if (w->large == NULL || w->frag_direct == NULL || w->frag_indirect == NULL) {
		KM_LOG(ERR,
			"worker %u: cannot create %" PRIu64
			" large buffers of %u bytes and %u fragment mbufs: %s (raise -m in "
			"[eal] args, or lower [net] large_bufs)",
			w->index, conf->large_bufs, km_dp.large_room, nb_out,
			rte_strerror(rte_errno));
		return -ENOMEM;
	}
	/* Fragmented replies get distinct IPv4 ids across workers (their reassembly at the
	 * client keys on source, destination, protocol and id). */
	w->ip_id = w->index;
	return 0;
}

void
km_frag_fini(struct km_worker *w)
{
	if (w->frag_dr != NULL) {
		rte_ip_frag_free_death_row(w->frag_dr, 0);
		rte_free(w->frag_dr);
		w->frag_dr = NULL;
	}
	/* Frees the fragments it still holds too. */
	if (w->frag_tbl != NULL)
		rte_ip_frag_table_destroy(w->frag_tbl);
	w->frag_tbl = NULL;
	rte_mempool_free(w->large);
	rte_mempool_free(w->frag_direct);
	rte_mempool_free(w->frag_indirect);
	w->large = w->frag_direct = w->frag_indirect = NULL;
}

/* Free the death row: every mbuf on it is a fragment dropped. */
static inline void
death_row_free(struct km_worker *w)
{
	if (w->frag_dr->cnt == 0)
		return;
	w->cnt.frag_drops += w->frag_dr->cnt;
	rte_ip_frag_free_death_row(w->frag_dr, 3);
}

/* A large buffer holding the segments of m, one after the other, or NULL. */
static struct rte_mbuf *
large_from(struct km_worker *w, const struct rte_mbuf *m)
{
	struct rte_mbuf *big;
	uint8_t *p;

	if (m->pkt_len > L2_LEN + L3_LEN + L4_LEN + km_dp.large_room)
		return NULL;
	big = rte_pktmbuf_alloc(w->large);
	if (big == NULL)
		return NULL;
	p = rte_pktmbuf_mtod(big, uint8_t *);
	for (; m != NULL; m = m->next) {
		rte_memcpy(p, rte_pktmbuf_mtod(m, const uint8_t *), m->data_len);
		p += m->data_len;
	}
	big->data_len = (uint16_t)(p - rte_pktmbuf_mtod(big, uint8_t *));
	big->pkt_len = big->data_len;
	return big;
}

struct rte_mbuf *
km_frag_large_copy(struct km_worker *w, const struct rte_mbuf *m)
{
	struct rte_mbuf *big = large_from(w, m);

	if (big != NULL)
		big->port = m->port;
	return big;
}

/* The reassembled chain r into one large buffer; checksums judged. r is consumed. */
static struct rte_mbuf *
reassembled(struct km_worker *w, struct rte_mbuf *r)
{
	struct rte_mbuf *big = NULL;
	struct rte_ipv4_hdr *ip;
	struct rte_udp_hdr *udp;

	if (r->pkt_len > L2_LEN + L3_LEN + L4_LEN + km_dp.large_room) {
		/* More than the largest request at this MTU: a sender's fragments larger than
		 * ours. */
		w->cnt.frag_drops += r->nb_segs;
	} else {
		big = large_from(w, r);
		if (big == NULL)
			w->cnt.large_drops++;
	}
	if (big == NULL) {
		rte_pktmbuf_free(r);
		return NULL;
	}
	big->port = r->port;
	rte_pktmbuf_free(r);
	w->cnt.frag_reassembled++;

	/* Every fragment's header checksum was verified; the whole one was rewritten
	 * (total length, flags) and carries none. The UDP checksum covers the whole datagram:
	 * only now can it be checked, in software (a NIC sees fragments). */
	ip = rte_pktmbuf_mtod_offset(big, struct rte_ipv4_hdr *, L2_LEN);
	ip->hdr_checksum = km_csum_ipv4_hdr(ip);
	big->ol_flags = RTE_MBUF_F_RX_IP_CKSUM_GOOD;
	if (big->pkt_len >= L2_LEN + L3_LEN + L4_LEN) {
		udp = (struct rte_udp_hdr *)(ip + 1);
		big->ol_flags |= udp->dgram_cksum == 0 || rte_ipv4_udptcp_cksum_verify(ip, udp) == 0
					 ? RTE_MBUF_F_RX_L4_CKSUM_GOOD
					 : RTE_MBUF_F_RX_L4_CKSUM_BAD;
	}
	return big;
}

struct rte_mbuf *
km_frag_input(struct km_worker *w, struct rte_mbuf *m, struct rte_ipv4_hdr *ip)
{
	uint16_t fo = rte_be_to_cpu_16(ip->fragment_offset);
	uint32_t off = (uint32_t)(fo & RTE_IPV4_HDR_OFFSET_MASK) * RTE_IPV4_HDR_OFFSET_UNITS;
	uint32_t len = (uint32_t)rte_be_to_cpu_16(ip->total_length) - L3_LEN;
	uint64_t tsc = rte_rdtsc();
	struct rte_mbuf *r;

	w->cnt.frag_rx++;
	/* Only UDP is reassembled, and only well-formed fragments reach the table: data in
	 * every one, a multiple of 8 bytes in all but the last, nothing past 64 KiB (older
	 * rte_ip_frag versions do not check these). */
	if (unlikely(w->frag_tbl == NULL || ip->next_proto_id != IPPROTO_UDP || len == 0 ||
		     ((fo & RTE_IPV4_HDR_MF_FLAG) != 0 && (len & 7) != 0) ||
		     off + len > UINT16_MAX - L3_LEN)) {
		w->cnt.frag_drops++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	if (w->frag_dr->cnt + FRAG_DR_PER_CALL > RTE_IP_FRAG_DEATH_ROW_MBUF_LEN)
		death_row_free(w);
	m->l2_len = L2_LEN;
	m->l3_len = L3_LEN;
	w->frag_last = tsc;
	r = rte_ipv4_frag_reassemble_packet(w->frag_tbl, w->frag_dr, m, tsc, ip);
	return r == NULL ? NULL : reassembled(w, r);
}

void
km_frag_tick(struct km_worker *w, uint64_t tsc)
{
	if (w->frag_last != 0) {
		rte_ip_frag_table_del_expired_entries(w->frag_tbl, w->frag_dr, tsc);
		/* Every entry is expired once the timeout passed since the last fragment; the
		 * call stops early when the death row fills up, so the table is clear only
		 * once a call left the row with room. */
		if (tsc - w->frag_last > km_dp.frag_cycles &&
			w->frag_dr->cnt + FRAG_DR_PER_CALL <= RTE_IP_FRAG_DEATH_ROW_MBUF_LEN)
			w->frag_last = 0;
	}
	death_row_free(w);
}

unsigned int
km_frag_output(struct km_worker *w, struct rte_mbuf *m, struct rte_mbuf **out, unsigned int max)
{
	struct rte_ether_hdr eth = *rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, L2_LEN);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	int n, i;

	/* No checksum offload on fragments: the UDP checksum over the whole datagram now,
	 * unless udp_reply() computed it already (a port without the offload). */
	ip->fragment_offset = 0;
	ip->packet_id = rte_cpu_to_be_16(w->ip_id);
	w->ip_id = (uint16_t)(w->ip_id + km_dp.nb_workers);
	ip->hdr_checksum = 0;
	if ((m->ol_flags & RTE_MBUF_F_TX_UDP_CKSUM) != 0) {
		udp->dgram_cksum = 0;
		udp->dgram_cksum = km_csum_udp4(
			ip->src_addr, ip->dst_addr, udp, rte_be_to_cpu_16(udp->dgram_len));
	}
	m->ol_flags = 0;
	rte_pktmbuf_adj(m, L2_LEN);
	n = km_dp.mtu < FRAG_MTU_MIN ? -ENOTSUP
				     : rte_ipv4_fragment_packet(m, out, (uint16_t)max, km_dp.mtu,
					       w->frag_direct, w->frag_indirect);
	/* The fragments hold references to m's data: m itself goes. */
	rte_pktmbuf_free(m);
	if (n <= 0) {
		w->cnt.large_drops++;
		return 0;
	}
	for (i = 0; i < n; i++) {
		struct rte_ether_hdr *e =
			(struct rte_ether_hdr *)rte_pktmbuf_prepend(out[i], (uint16_t)L2_LEN);
		struct rte_ipv4_hdr *fip = (struct rte_ipv4_hdr *)(e + 1);

		*e = eth;
		fip->hdr_checksum = km_csum_ipv4_hdr(fip);
		/* A port without chains reads one segment: the fragment's data goes after its
		 * header (room made at pool creation). */
		if (!km_dp.tx_multi_seg && rte_pktmbuf_linearize(out[i]) != 0) {
			rte_pktmbuf_free_bulk(out, (unsigned int)n);
			w->cnt.large_drops++;
			return 0;
		}
		out[i]->ol_flags = 0;
		out[i]->l2_len = L2_LEN;
		out[i]->l3_len = L3_LEN;
	}
	w->cnt.frag_tx += (uint64_t)n;
	return (unsigned int)n;
}
