/* SPDX-License-Identifier: BSD-3-Clause */

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <stdlib.h>

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_ip_frag.h>
#include <rte_mbuf.h>
#include <rte_prefetch.h>
#include <rte_udp.h>

#include <urcu-qsbr.h>

#include <km_util.h>

#include "datapath.h"
#include "frag.h"
#include "shift.h"

struct km_datapath km_dp;
struct km_shardmap *km_map_current;
struct km_allow *km_allow_current;

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
/* Packets ahead whose data stage 1 prefetches, as l3fwd does: a NIC without direct cache
 * access leaves received frames in DRAM, and a zero-copy memif in the other CPU's cache. */
#define PKT_PREFETCH_AHEAD 8
#define MIG_STEP_US        50 /* split/merge copy per idle loop iteration, at least */

/* What the L2-L4 checks decided for a packet; the last stage acts on it in arrival order. */
enum pkt_fate {
	PKT_GONE, /* dropped */
	PKT_SEND, /* ARP or ICMP reply built in place: send as is */
	PKT_ECHO, /* echo mode: the datagram goes back as it came */
	PKT_PROC, /* a datagram for km_proc_rx_burst() */
};

struct pkt_next {
	uint8_t fate; /* enum pkt_fate */
	uint16_t arg; /* PKT_ECHO: payload length; PKT_PROC: index in the request array */
};

/* Replies waiting for the TX burst at the end of an iteration. */
struct tx_batch {
	uint16_t n;
	uint16_t replies; /* since the iteration began: a fragmented reply counts once */
	/* Latency (datapath.h): of the pend replies added since the last flush, own were
	 * counted one by one (from their request's km_shift_dyn rx_tsc); the others answer
	 * requests of the RX burst at rx_tsc and are counted at the flush. */
	uint16_t pend;
	uint16_t own;
	uint64_t rx_tsc;
	uint64_t cyc; /* in TX bursts since the busy part of the iteration began */
	struct rte_mbuf *pkts[2 * BURST_MAX];
};

_Static_assert(2 * BURST_MAX >= KM_FRAG_OUT_MAX, "a fragmented reply fits an empty batch");

static void tx_flush(struct km_worker *w, struct tx_batch *tx);

static inline void
tx_add(struct km_worker *w, struct tx_batch *tx, struct rte_mbuf *m)
{
	if (unlikely(tx->n == RTE_DIM(tx->pkts)))
		tx_flush(w, tx);
	tx->pkts[tx->n++] = m;
	tx->replies++;
	tx->pend++;
}

static inline void
lat_add(struct km_worker *w, uint64_t cycles, uint16_t n)
{
	/* Another core's TSC a little ahead (a hand-off, an unsynchronised VM): 0, not 2^64. */
	if (unlikely((int64_t)cycles < 0))
		cycles = 0;
	w->lat[km_lat_bucket(cycles)] += n;
	w->lat_sum += cycles * n;
}

/* The replies added since replies_before (tx->replies then) answer a request that came
 * at rx_tsc: counted now. */
static inline void
lat_own(struct km_worker *w, struct tx_batch *tx, uint64_t rx_tsc, uint16_t replies_before)
{
	uint16_t k = (uint16_t)(tx->replies - replies_before);

	if (k == 0)
		return;
	lat_add(w, rte_rdtsc() - rx_tsc, k);
	tx->own = (uint16_t)(tx->own + k);
}

static void
tx_flush(struct km_worker *w, struct tx_batch *tx)
{
	uint16_t sent = 0;
	uint64_t t0;

	if (tx->n == 0)
		return;
	t0 = rte_rdtsc();
	sent = rte_eth_tx_burst(km_dp.port, w->queue, tx->pkts, tx->n);
	tx->cyc += rte_rdtsc() - t0;
	w->cnt.tx_pkts += sent;
	if (unlikely(sent < tx->n)) {
		w->cnt.tx_drops += tx->n - sent;
		rte_pktmbuf_free_bulk(&tx->pkts[sent], tx->n - sent);
	}
	tx->n = 0;
	if (tx->pend > tx->own)
		lat_add(w, rte_rdtsc() - tx->rx_tsc, (uint16_t)(tx->pend - tx->own));
	tx->pend = 0;
	tx->own = 0;
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
	icmp->icmp_cksum = (uint16_t)~km_csum_fold(km_csum_add(icmp, icmp_len, 0));
	a = ip->src_addr;
	ip->src_addr = ip->dst_addr;
	ip->dst_addr = a;
	ip->time_to_live = 64;
	ip->hdr_checksum = 0;
	ip->hdr_checksum = km_csum_ipv4_hdr(ip);
	eth->dst_addr = eth->src_addr;
	eth->src_addr = km_dp.mac;
	w->cnt.icmp_replies++;
	return 0;
}

/* Turn the request in m (checked by pkt_l4: IPv4 without options, UDP) into a reply of
 * plen payload bytes, headers swapped in place. */
static __rte_always_inline void
udp_reply(struct rte_mbuf *m, size_t plen)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	uint32_t a = ip->src_addr, d = ip->dst_addr;
	uint16_t p = udp->src_port, q = udp->dst_port, w0, w4;
	uint16_t tot = rte_cpu_to_be_16((uint16_t)(L3_LEN + L4_LEN + plen));
	uint16_t df = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	const uint8_t ttl_proto[2] = {64, IPPROTO_UDP}; /* header word 4 */

	memcpy(&w0, ip, sizeof(w0)); /* header word 0: version, IHL and TOS, kept */
	memcpy(&w4, ttl_proto, sizeof(w4));
	eth->dst_addr = eth->src_addr;
	eth->src_addr = km_dp.mac;
	ip->src_addr = d;
	ip->dst_addr = a;
	ip->total_length = tot;
	ip->time_to_live = ttl_proto[0];
	ip->packet_id = 0;
	ip->fragment_offset = df;
	ip->hdr_checksum = 0;
	udp->src_port = q;
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
		/* The sums of rte_ipv4_cksum() and rte_ipv4_udptcp_cksum(), the headers'
		 * words from registers (a load over the fields just stored one by one would
		 * wait for the stores), the payload's by 32-bit words (km_csum_add()). */
		m->ol_flags = 0;
		ip->hdr_checksum = km_csum_ipv4_words(w0, tot, 0, df, w4, d, a);
		udp->dgram_cksum = km_csum_udp4_payload(d, a, q, p, udp + 1, plen);
	}
}

/* A reply too large for one frame: its fragments into the batch (frag.h). */
static __rte_noinline void
tx_frags(struct km_worker *w, struct tx_batch *tx, struct rte_mbuf *m)
{
	struct rte_mbuf *frags[KM_FRAG_OUT_MAX];
	unsigned int n = km_frag_output(w, m, frags, RTE_DIM(frags)), i;

	if (n == 0)
		return; /* counted */
	if (tx->n + n > RTE_DIM(tx->pkts))
		tx_flush(w, tx);
	for (i = 0; i < n; i++)
		tx->pkts[tx->n++] = frags[i];
	tx->replies++;
	tx->pend++;
}

/* Send the reply of plen payload bytes written over the request in m: one frame, or IPv4
 * fragments when it is larger than the port MTU. */
static __rte_always_inline void
tx_reply(struct km_worker *w, struct tx_batch *tx, struct rte_mbuf *m, size_t plen)
{
	udp_reply(m, plen);
	if (likely(L3_LEN + L4_LEN + plen <= km_dp.mtu))
		tx_add(w, tx, m);
	else
		tx_frags(w, tx, m);
}

/*
 * L2-L4 of one packet from the NIC (handed == 0) or from another worker's hand-off
 * (handed == 1). A UDP datagram for the processor is described in r; ARP and ICMP echo
 * are answered in place; an IPv4 fragment goes to the reassembly table, and the datagram
 * it completes, in a large buffer, replaces it in *mp; everything else is freed here.
 * @return enum pkt_fate; *plen is the payload length for PKT_ECHO.
 * Always inlined, as pkt_verdict(), tx_reply() and udp_reply() are, into process_burst()
 * (their one caller per packet; pkt_grow() and disk_poll() get copies): GCC kept the first
 * three as calls, each saving and restoring registers (~50 instructions per request in
 * all), and made udp_reply() a call of its own once tx_reply() was inlined. keymapd GET
 * over memif, 6 pairs alternated, the first three inlined: the processing 194-203 ->
 * 187-196 TSC cycles per GET, lower in each pair.
 */
static __rte_always_inline enum pkt_fate
pkt_l4(struct km_worker *w, const struct km_allow *allow, struct rte_mbuf **mp, int handed,
	struct km_proc_req *r, uint16_t *plen)
{
	struct rte_mbuf *m = *mp;
	struct rte_ether_hdr *eth;
	struct rte_ipv4_hdr *ip;
	struct rte_udp_hdr *udp;
	uint16_t ip_len, udp_len, dport;
	uint8_t *payload;
	int pw;

again:
	eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	if (unlikely(m->nb_segs != 1 || m->data_len < L2_LEN)) {
		w->cnt.drop_l2++;
		goto drop;
	}
	if (unlikely(eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))) {
		if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP) &&
			arp_reply(w, m, eth) == 0)
			return PKT_SEND;
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
	if (unlikely(ip_len < L3_LEN || L2_LEN + ip_len > m->data_len)) {
		w->cnt.drop_l3++;
		goto drop;
	}
	/* Check the header checksum unless the NIC did (20 bytes: cheap). */
	if (unlikely((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD ||
		     ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) != RTE_MBUF_F_RX_IP_CKSUM_GOOD &&
			     km_csum_fold(km_csum_add(ip, L3_LEN, 0)) != 0xffff))) {
		w->cnt.drop_l3++;
		goto drop;
	}
	/* No reply to a source it could only reflect traffic from (ICMP included). A
	 * broadcast or multicast frame is not a request to this server either. */
	if (unlikely(!km_addr_replyable(ip->src_addr, 1, km_dp.ip) ||
		     rte_is_multicast_ether_addr(&eth->src_addr))) {
		w->cnt.drop_src++;
		goto drop;
	}
	if (unlikely((ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG |
							     RTE_IPV4_HDR_OFFSET_MASK)) != 0)) {
		/* Hand-offs are whole datagrams. A source outside the allow-list fills no
		 * reassembly entry. */
		if (handed) {
			w->cnt.drop_l3++;
			goto drop;
		}
		if (!km_allow_match(allow, ip->src_addr)) {
			w->cnt.drop_denied++;
			goto drop;
		}
		m = km_frag_input(w, m, ip);
		if (m == NULL)
			return PKT_GONE; /* kept for the rest, or dropped and counted */
		*mp = m;
		goto again; /* the whole datagram, checked like any other */
	}
	if (unlikely(ip->next_proto_id != IPPROTO_UDP)) {
		if (ip->next_proto_id == IPPROTO_ICMP && icmp_reply(w, eth, ip, ip_len) == 0) {
			m->ol_flags = 0;
			m->data_len = (uint16_t)(L2_LEN + ip_len);
			m->pkt_len = m->data_len;
			return PKT_SEND;
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
	if (unlikely(udp->src_port == 0)) {
		w->cnt.drop_src++;
		goto drop;
	}
	/* Sources outside the allow-list get nothing, not even an error (no amplification). A
	 * request handed over by another worker was checked there. */
	if (unlikely(!handed && !km_allow_match(allow, ip->src_addr))) {
		w->cnt.drop_denied++;
		goto drop;
	}
	payload = (uint8_t *)(udp + 1);
	*plen = (uint16_t)(udp_len - L4_LEN);
	if (unlikely(km_dp.echo))
		return PKT_ECHO; /* the benchmark baseline: same path, no request processing */
	r->buf = payload;
	r->len = *plen;
	/* Room for the reply: from the payload to the end of the buffer. */
	r->cap = (size_t)((uint8_t *)m->buf_addr + m->buf_len - payload);
	r->src = ((uint64_t)ip->src_addr << 16) | udp->src_port;
	r->cookie = m;
	r->port_worker = (int16_t)pw;
	r->handed = (uint8_t)handed;
	r->move = NULL;
	r->hand_mark = 0;
	r->again = 0; /* pkt_grow() sets it for the second pass */
	return PKT_PROC;
drop:
	rte_pktmbuf_free(m);
	return PKT_GONE;
}

static void pkt_grow(struct km_worker *w, const struct km_shardmap *map, struct rte_mbuf *m,
	struct tx_batch *tx);

/* Act on the processor's verdict for the datagram in m. */
static __rte_always_inline void
pkt_verdict(struct km_worker *w, const struct km_shardmap *map, struct rte_mbuf *m,
	const struct km_proc_req *r, struct tx_batch *tx)
{
	uint16_t before = tx->replies;
	uint64_t rx_tsc;

	/* A request answered later or elsewhere keeps the time it came (latency). */
	if (r->handed == 0 && unlikely(r->verdict != KM_PROC_REPLY))
		km_shift_dyn(m)->rx_tsc = tx->rx_tsc;
	switch (r->verdict) {
	case KM_PROC_REPLY:
		if (likely(r->handed == 0)) {
			tx_reply(w, tx, m, r->reply_len);
			break;
		}
		/* Handed on or grown: it came in another burst (m may be gone after). */
		rx_tsc = km_shift_dyn(m)->rx_tsc;
		tx_reply(w, tx, m, r->reply_len);
		lat_own(w, tx, rx_tsc, before);
		break;
	case KM_PROC_GROW:
		pkt_grow(w, map, m, tx);
		break;
	case KM_PROC_DEFER: /* the reply waits for the disk; km_proc_poll() gives it back */
		break;
	case KM_PROC_HANDOFF:
		/* The mark (and a move riding along) for the owner: shift.h. */
		km_shift_dyn(m)->mark = r->hand_mark != 0 ? r->hand_mark : KM_HAND_PLAIN;
		km_shift_dyn(m)->mv = r->move;
		if (likely(rte_ring_mp_enqueue(km_dp.workers[r->owner].to_owner, m) == 0)) {
			w->cnt.handoff_out++;
			break;
		}
		w->cnt.handoff_drops++;
		if (unlikely(r->move != NULL))
			km_proc_shift_restore(w->proc, r->move); /* back in its old place */
		rte_pktmbuf_free(m);
		break;
	default: /* KM_PROC_DROP */
		w->cnt.drop_proto++;
		rte_pktmbuf_free(m);
		break;
	}
}

/*
 * A moved entry alone from another worker's background pass (KM_HAND_MOVE): loaded into
 * its new place here, or sent on to the owner of its shard now (the map changed), or, its
 * store being handed over, queued again behind what waits.
 */
static __rte_noinline void
shift_move_in(struct km_worker *w, const struct km_shardmap *map, struct rte_mbuf *m)
{
	struct km_shift_dyn *d = km_shift_dyn(m);
	uint16_t owner = w->index;
	int rc;

	rc = km_proc_shift_apply(w->proc, map, d->mv, &owner);
	if (rc == 0) {
		rte_pktmbuf_free(m);
		return;
	}
	if (rte_ring_mp_enqueue(km_dp.workers[owner].to_owner, m) == 0)
		return;
	/* Nowhere to go: the entry is lost, and counted. */
	w->cnt.handoff_drops++;
	km_proc_shift_free(d->mv);
	rte_pktmbuf_free(m);
}

/*
 * The partition shifter's background pass (km_proc_shift_step()): entries of a migrating
 * or reverting override taken out of their old place go to their new owner in small
 * mbufs; one that cannot go is put back.
 */
static __rte_noinline void
shift_step(struct km_worker *w, const struct km_shardmap *map)
{
	struct km_shift_move *mv[32];
	uint16_t to[32];
	unsigned int n, i;

	n = km_proc_shift_step(w->proc, map, mv, to, RTE_DIM(mv));
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = rte_pktmbuf_alloc(w->frag_indirect);

		if (m != NULL) {
			km_shift_dyn(m)->mark = KM_HAND_MOVE;
			km_shift_dyn(m)->mv = mv[i];
			if (rte_ring_mp_enqueue(km_dp.workers[to[i]].to_owner, m) == 0)
				continue;
			rte_pktmbuf_free(m);
		}
		km_proc_shift_restore(w->proc, mv[i]);
	}
}

/*
 * The GET in m needs more room for its reply than m has (KM_PROC_GROW, or a disk read's
 * km_proc_done of length 0): submitted again from a large buffer. Marked handed: its
 * source was checked, and it is executed here (or answered BUSY if its shard moved).
 */
static __rte_noinline void
pkt_grow(
	struct km_worker *w, const struct km_shardmap *map, struct rte_mbuf *m, struct tx_batch *tx)
{
	struct rte_mbuf *big = km_frag_large_copy(w, m);
	uint64_t rx_tsc = km_shift_dyn(m)->rx_tsc;
	struct km_proc_req r;
	uint16_t plen;

	rte_pktmbuf_free(m);
	if (big == NULL) {
		w->cnt.large_drops++;
		return;
	}
	km_shift_dyn(big)->rx_tsc = rx_tsc;
	if (pkt_l4(w, NULL, &big, 1, &r, &plen) != PKT_PROC)
		return; /* cannot happen: it passed before; freed and counted */
	r.again = 1;
	km_proc_rx(w->proc, map, &r);
	if (unlikely(r.verdict == KM_PROC_GROW)) {
		/* Cannot happen: it has the room reply_max promised. */
		w->cnt.large_drops++;
		rte_pktmbuf_free(big);
		return;
	}
	pkt_verdict(w, map, big, &r, tx);
}

/* A line this worker will read and then write (a request whose reply is built in place):
 * fetched for writing, so that the line another CPU wrote is not moved here twice (once
 * shared for the read, once more for the write). In asm because under -march=corei7 the
 * compiler makes a read prefetch of __builtin_prefetch(p, 1, 3); x86 processors without
 * PREFETCHW (Intel's before Broadwell) are known to execute it as a no-op. */
static inline void
prefetch_rw(const void *p)
{
#ifdef RTE_ARCH_X86
	__asm__ volatile("prefetchw %0" : : "m"(*(const volatile char *)p));
#else
	__builtin_prefetch(p, 1, 3);
#endif
}

/* The lines of m's frame that stage 1 and the processor's parse read and its reply
 * rewrites: the headers and a request's header and key (98 bytes for a GET of a 16-byte
 * key), and the line after them a 64-byte value's reply ends in (146 bytes), the frame
 * starting on a line as in keymapd's pools (128 bytes of headroom). A packet then handed to
 * another worker leaves it lines to take back. */
static inline void
pkt_prefetch(const struct rte_mbuf *m)
{
	const uint8_t *p = rte_pktmbuf_mtod(m, const uint8_t *);

	prefetch_rw(p);
	prefetch_rw(p + RTE_CACHE_LINE_SIZE);
	prefetch_rw(p + 2 * RTE_CACHE_LINE_SIZE);
}

/*
 * A burst of packets: L2-L4 checks of every packet, then the datagrams in one call to the
 * processor (which parses, routes and executes them in stages so that their cache misses
 * overlap), then each packet ends in the TX batch (a reply built in place), in its owner's
 * ring, or freed, in arrival order.
 */
static void
process_burst(struct km_worker *w, const struct km_shardmap *map, const struct km_allow *allow,
	struct rte_mbuf **pkts, uint16_t n, int handed, struct tx_batch *tx)
{
	struct km_proc_req reqs[BURST_MAX];
	struct pkt_next next[BURST_MAX];
	uint16_t nb_req = 0, plen = 0, i;
	enum pkt_fate f;

	for (i = 0; i < n && i < PKT_PREFETCH_AHEAD; i++)
		pkt_prefetch(pkts[i]);
	for (i = 0; i < n; i++) {
		struct km_shift_dyn *d = NULL;

		if (i + PKT_PREFETCH_AHEAD < n)
			pkt_prefetch(pkts[i + PKT_PREFETCH_AHEAD]);
		if (handed) {
			/* Hand-offs carry a mark and maybe a move (shift.h). */
			d = km_shift_dyn(pkts[i]);
			if (unlikely(d->mark == KM_HAND_MOVE)) {
				shift_move_in(w, map, pkts[i]);
				next[i].fate = PKT_GONE;
				continue;
			}
		}
		f = pkt_l4(w, allow, &pkts[i], handed, &reqs[nb_req], &plen);
		if (d != NULL && f == PKT_PROC) {
			reqs[nb_req].handed = d->mark;
			reqs[nb_req].move = d->mv;
		} else if (unlikely(d != NULL && d->mv != NULL)) {
			km_proc_shift_free(d->mv); /* cannot happen: it passed L2-L4 before */
		}
		next[i].fate = (uint8_t)f;
		next[i].arg = f == PKT_PROC ? nb_req++ : plen;
	}
	if (nb_req != 0)
		km_proc_rx_burst(w->proc, map, reqs, nb_req);
	for (i = 0; i < n; i++) {
		switch (next[i].fate) {
		case PKT_PROC:
			pkt_verdict(w, map, pkts[i], &reqs[next[i].arg], tx);
			break;
		case PKT_ECHO:
			tx_reply(w, tx, pkts[i], next[i].arg);
			break;
		case PKT_SEND:
			tx_add(w, tx, pkts[i]);
			break;
		case PKT_GONE: /* freed in pkt_l4() */
			break;
		}
	}
}

/*
 * Replies that waited for the disk (persistent stores): reap completions, submit group
 * writes, send what is ready. @return replies sent.
 */
static uint16_t
disk_poll(struct km_worker *w, const struct km_shardmap *map, struct tx_batch *tx)
{
	struct km_proc_done done[BURST_MAX];
	unsigned int n, i, total = 0;
	uint64_t rx_tsc;
	uint16_t before;

	do {
		n = km_proc_poll(w->proc, done, BURST_MAX);
		for (i = 0; i < n; i++) {
			if (unlikely(done[i].len == 0)) {
				pkt_grow(w, map, done[i].cookie, tx);
				total--; /* answered by pkt_grow(), not from the disk */
			} else {
				before = tx->replies;
				rx_tsc = km_shift_dyn(done[i].cookie)->rx_tsc;
				tx_reply(w, tx, done[i].cookie, done[i].len);
				lat_own(w, tx, rx_tsc, before);
			}
		}
		total += n;
	} while (n == BURST_MAX);
	w->cnt.disk_replies += total;
	return (uint16_t)total;
}

/*
 * First half of a MOVE (datapath.h): detach the shard, take its at-most-once entries, hand
 * its requests to the new owner from now on and queue the attach there. @return 0 (c is
 * the new owner's: not to be touched any more), or -errno with c->rc set (nothing
 * changed; c->store NULL).
 */
static int
worker_move_out(struct km_worker *w, struct km_wcmd *c)
{
	struct km_cmsg m = {.type = KM_CMSG_MOVE_IN, .u.sync = c};
	struct km_store *s = km_proc_shard_store(w->proc, c->shard_id);
	struct km_store_stats st;

	if (s == NULL) {
		c->rc = -ENOENT;
		return c->rc;
	}
	km_store_stats(s, &st);
	if (st.quarantined != 0) {
		c->rc = -EBADMSG; /* its files are missing or damaged: it stays */
		return c->rc;
	}
	c->keys = st.keys;
	c->store = km_proc_shard_detach_dedup(w->proc, c->shard_id, &c->requests, &c->dedup);
	c->n = km_proc_dedup_count(c->dedup);
	c->rc = 0;
	c->run_tsc = rte_rdtsc() - c->claim_tsc;
	/* Before the enqueue: the requests handed on after it find the attach ahead of
	 * them. */
	km_proc_shard_forward(w->proc, c->shard_id, c->to, c->epoch);
	/* Release (the ring's): the new owner that dequeues c sees the store as we left it. */
	if (rte_ring_mp_enqueue_elem(km_dp.workers[c->to].ctl_to_w, &m, sizeof(m)) == 0)
		return 0;
	/* Its ring is full: the shard stays here (or, if even that fails, goes back to the
	 * control lcore with the command, which gives it back as after any failed move). */
	if (km_proc_shard_attach(w->proc, c->shard_id, c->store) == 0) {
		km_proc_dedup_give(w->proc, c->shard_id, c->dedup, 1);
		c->store = NULL;
		c->dedup = NULL;
	}
	c->rc = -EBUSY;
	return c->rc;
}

/* Second half of a MOVE (datapath.h): attach what the old owner detached, store DONE. */
static void
worker_move_in(struct km_worker *w, struct km_wcmd *c)
{
	c->in_claim_tsc = rte_rdtsc();
	c->rc = km_proc_shard_attach(w->proc, c->shard_id, c->store);
	if (c->rc == 0) {
		km_proc_dedup_give(w->proc, c->shard_id, c->dedup, 1);
		c->dedup = NULL;
		c->store = NULL; /* ours */
	}
	c->in_run_tsc = rte_rdtsc() - c->in_claim_tsc;
	/* Release: pairs with the control lcore's acquire load of DONE. */
	atomic_store_explicit(&c->state, KM_WCMD_DONE, memory_order_release);
}

/* A handshake command: claim it, apply it, publish its outputs with DONE. */
static void
worker_sync(struct km_worker *w, struct km_wcmd *c)
{
	int expected = KM_WCMD_PENDING;

	if (!atomic_compare_exchange_strong(&c->state, &expected, KM_WCMD_RUNNING)) {
		free(c); /* abandoned by the control lcore: not applied, ours to free */
		return;
	}
	c->claim_tsc = rte_rdtsc();
	switch (c->op) {
	case KM_WCMD_ATTACH:
		c->rc = km_proc_shard_attach(w->proc, c->shard_id, c->store);
		if (c->rc == 0) {
			km_proc_dedup_give(w->proc, c->shard_id, c->dedup, c->same_store);
			c->dedup = NULL;
		}
		break;
	case KM_WCMD_DETACH:
		c->store =
			km_proc_shard_detach_dedup(w->proc, c->shard_id, &c->requests, &c->dedup);
		c->rc = c->store == NULL ? -ENOENT : 0;
		break;
	case KM_WCMD_INFO:
		c->n = km_proc_shard_infos(w->proc, c->infos, c->max);
		c->rc = 0;
		break;
	case KM_WCMD_MIG_START:
		c->rc = km_proc_mig_start(w->proc, (enum km_mig_kind)c->kind, c->shard_id);
		w->mig = km_proc_mig_active(w->proc);
		break;
	case KM_WCMD_MIG_FINISH: {
		uint64_t t0 = rte_rdtsc();

		c->rc = km_proc_mig_finish(w->proc, c->old, &c->keys);
		c->pause_tsc = rte_rdtsc() - t0;
		w->mig = km_proc_mig_active(w->proc);
		break;
	}
	case KM_WCMD_FLOOR:
		if (c->floor != 0)
			km_proc_version_floor(w->proc, c->floor);
		c->keys = km_proc_version_last(w->proc);
		c->rc = 0;
		break;
	case KM_WCMD_MIG_CANCEL:
		km_proc_mig_cancel(w->proc);
		w->mig = km_proc_mig_active(w->proc);
		c->rc = 0;
		break;
	case KM_WCMD_EXPORT_START:
		c->rc = km_proc_export_start(w->proc, c->xp);
		w->xp = (uint8_t)km_proc_export_active(w->proc);
		break;
	case KM_WCMD_EXPORT_CANCEL:
		km_proc_export_cancel(w->proc);
		w->xp = 0;
		c->rc = 0;
		break;
	case KM_WCMD_REPL_START:
		c->rc = km_proc_repl_start(w->proc, c->xp);
		w->repl = (uint8_t)km_proc_repl_active(w->proc);
		break;
	case KM_WCMD_REPL_STOP:
		km_proc_repl_stop(w->proc, c->xp);
		w->repl = (uint8_t)km_proc_repl_active(w->proc);
		c->rc = 0;
		break;
	case KM_WCMD_REPL_BLOCK:
		c->rc = km_proc_repl_block(w->proc, c->shard_id, c->floor, c->kind);
		w->repl = (uint8_t)km_proc_repl_active(w->proc);
		break;
	case KM_WCMD_MOVE:
		if (worker_move_out(w, c) == 0)
			return; /* the new owner's now: it stores DONE */
		break;
	default:
		c->rc = -EINVAL;
		break;
	}
	c->run_tsc = rte_rdtsc() - c->claim_tsc;
	/* Release: the control lcore that sees DONE (acquire) sees the outputs (and, for a
	 * detach, everything this worker wrote to the store). */
	atomic_store_explicit(&c->state, KM_WCMD_DONE, memory_order_release);
}

/* Apply the control lcore's commands (ctl_to_w), at a loop boundary: no staged burst is in
 * progress and nothing of a shard is referenced across it. */
static __rte_noinline void
worker_commands(struct km_worker *w)
{
	struct km_wmsg done = {.type = KM_WMSG_DONE, .worker = w->index};
	struct km_cmsg m;

	while (rte_ring_sc_dequeue_elem(w->ctl_to_w, &m, sizeof(m)) == 0) {
		switch (m.type) {
		case KM_CMSG_SYNC:
			worker_sync(w, m.u.sync);
			break;
		case KM_CMSG_MOVE_IN:
			worker_move_in(w, m.u.sync);
			break;
		case KM_CMSG_TUNE:
			w->tune = m.u.tune;
			break;
		case KM_CMSG_PREFETCH:
			done.u.done.cmd = KM_CMSG_PREFETCH;
			done.u.done.seq = m.seq;
			done.u.done.mark = m.mark;
			done.u.done.rc = km_proc_prefetch_key(w->proc,
				rcu_dereference(km_map_current), m.u.key, m.key_len, m.mark);
			/* The predictor's count of commands in flight: a completion lost on
			 * a full ring must not hold its slot. */
			if (m.mark != KM_PROC_MARK_OPERATOR)
				w->cnt.pf_commands++;
			km_worker_to_ctl(w, &done);
			break;
		case KM_CMSG_PREFETCH_TUNE:
			km_proc_prefetch_params(w->proc, &m.u.pf);
			break;
		case KM_CMSG_CREW_ADD:
			done.u.done.cmd = KM_CMSG_CREW_ADD;
			done.u.done.seq = m.seq;
			done.u.done.mark = 0;
			done.u.done.rc = km_proc_crew_add(
				w->proc, rcu_dereference(km_map_current), m.u.key, m.key_len);
			km_worker_to_ctl(w, &done);
			break;
		case KM_CMSG_CREW_DEL:
			if (m.key_len == 0)
				km_proc_crew_withdraw(w->proc, 0);
			else
				km_proc_crew_remove(w->proc, m.u.key, m.key_len);
			break;
		case KM_CMSG_CREW_TUNE:
			km_proc_crew_sampling(w->proc, m.seq);
			break;
		default:
			break;
		}
	}
}

/*
 * Hand the processor's notes (samples for prefetch and for hot-key replication, outcomes of
 * prefetches) to the control lcore. They
 * leave room on w_to_ctl for the completions of commands (the processor keeps, or drops
 * and counts, what does not fit).
 */
static inline void
worker_notes(struct km_worker *w)
{
	struct km_wmsg m = {.type = KM_WMSG_NOTE, .worker = w->index};

	while (rte_ring_free_count(w->w_to_ctl) > KM_NOTES_RESERVE &&
		km_proc_notes(w->proc, &m.u.note, 1) == 1)
		km_worker_to_ctl(w, &m);
}

/*
 * Whether the RX queue still holds w->tune.busy_pkts packets, after a full burst: 1 yes,
 * 0 no, -1 the port cannot tell (the worker then counts full bursts). One descriptor read
 * where the PMD answers (rte_eth_rx_queue_count() would walk the ring on several PMDs).
 */
static inline int
rx_deep(const struct km_worker *w)
{
	int rc;

	if (!km_dp.rx_desc_status || w->tune.busy_pkts == 0)
		return -1;
	rc = rte_eth_rx_descriptor_status(km_dp.port, w->queue, (uint16_t)(w->tune.busy_pkts - 1));
	return rc == RTE_ETH_RX_DESC_DONE ? 1 : rc >= 0 ? 0 : -1;
}

/*
 * Judge the RX backlog after a burst of nb_rx packets and tell the processor when overload
 * starts or ends (km_proc_overload(): requests that cost more than a BUSY reply get one).
 */
static inline void
backlog_update(struct km_worker *w, uint16_t nb_rx)
{
	int deep = nb_rx == w->tune.burst ? rx_deep(w) : -1;
	int over = km_policy_backlog_update(
		&w->backlog, nb_rx, w->tune.burst, deep, w->tune.busy_pkts);

	if (unlikely(over != w->overload)) {
		w->overload = (uint8_t)over;
		km_proc_overload(w->proc, over);
	}
}

/*
 * Sleep us microseconds, to an absolute deadline: RX signals (net_tap raises one per
 * packet) interrupt the sleep, and a relative sleep restarted with its remainder could,
 * with timer slack, never end under a steady stream of them.
 */
static void
sleep_us(uint32_t us)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_nsec += (long)us * 1000;
	while (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR)
		;
}

void
km_rx_signals(sigset_t *set)
{
	int s;

	sigemptyset(set);
	sigaddset(set, SIGIO);
	for (s = SIGRTMIN; s <= SIGRTMAX; s++)
		sigaddset(set, s);
}

int
km_worker_main(void *arg)
{
	struct km_worker *w = arg;
	struct rte_mbuf *pkts[BURST_MAX];
	const struct km_shardmap *map;
	uint32_t epoch_seen = 0; /* of the map the read copies were last checked against */
	const struct km_allow *allow;
	struct tx_batch tx = {.n = 0, .replies = 0};
	uint32_t idle = 0;
	uint16_t nb_rx, nb_ho;
	uint64_t t0 = 0, t1;
	/* The processor's clock (stream timing, read latency) in ns, from the TSC. */
	const double ns_per_tsc = 1e9 / (double)rte_get_tsc_hz();
	const uint64_t mig_step_tsc = rte_get_tsc_hz() / 1000000 * MIG_STEP_US;
	uint64_t iter_tsc = 0; /* TSC cycles of the last busy iteration */
	sigset_t sigs;

	km_rx_signals(&sigs);
	pthread_sigmask(SIG_UNBLOCK, &sigs, NULL); /* see main(): RX signals land here */
	rcu_register_thread();
	while (!atomic_load_explicit(&km_dp.stop, memory_order_relaxed)) {
		/* Nothing from the previous iteration is still referenced: old maps may go. */
		rcu_quiescent_state();
		if (unlikely(!rte_ring_empty(w->ctl_to_w)))
			worker_commands(w);
		map = rcu_dereference(km_map_current);
		if (unlikely(km_shardmap_epoch(map) != epoch_seen)) {
			/* Read copies of keys this worker no longer owns go (crew). Epochs,
			 * not pointers: a freed map's address may come back. */
			km_proc_crew_revalidate(w->proc, map);
			epoch_seen = km_shardmap_epoch(map);
		}
		allow = rcu_dereference(km_allow_current);
		km_proc_set_auth(w->proc, rcu_dereference(km_auth_current));
		if (unlikely(w->mig)) {
			/* A split/merge copy, idle or not: MIG_STEP_US per iteration, or half
			 * as long as the last busy iteration took (the copy then takes a third
			 * of the worker, whatever the port's cost per burst). */
			t0 = rte_rdtsc();
			t1 = t0 + RTE_MAX(mig_step_tsc, iter_tsc / 2);
			while (km_proc_mig_step(w->proc, map) != 0 && rte_rdtsc() < t1)
				;
			/* Not in busy_cycles: the capacity measured from them is the serving's. */
			idle = 0;
		}
		if (unlikely(w->xp)) {
			/* A live export to another node: the same share of the worker. */
			t0 = rte_rdtsc();
			t1 = t0 + RTE_MAX(mig_step_tsc, iter_tsc / 2);
			while (km_proc_export_step(w->proc) != 0 && rte_rdtsc() < t1)
				;
			w->xp = (uint8_t)km_proc_export_active(w->proc);
			idle = 0;
		}
		if (unlikely(w->repl)) {
			/* Replication streams: their walks (the same share as an export), the
			 * writes' chunks handed on, the acknowledged replies released. */
			t0 = rte_rdtsc();
			t1 = t0 + RTE_MAX(mig_step_tsc, iter_tsc / 2);
			while (km_proc_repl_step(w->proc) != 0 && rte_rdtsc() < t1)
				;
			w->repl = (uint8_t)km_proc_repl_active(w->proc);
			if (km_proc_busy(w->proc)) {
				km_proc_time(w->proc, (uint64_t)((double)rte_rdtsc() * ns_per_tsc));
				if (disk_poll(w, map, &tx) != 0)
					tx_flush(w, &tx);
				tx.replies = 0;
				idle = 0;
			}
		}
		/* An override migrating or reverting: move its entries, a shard per iteration. */
		if (unlikely(km_proc_shift_pending(w->proc, map))) {
			shift_step(w, map);
			idle = 0;
		}
		/* Fragments dropped, datagrams whose fragments timed out: freed while idle too. */
		if (unlikely(w->frag_last != 0 || w->frag_dr->cnt != 0))
			km_frag_tick(w, rte_rdtsc());

		if (w->disk && km_proc_busy(w->proc)) {
			/* Completions are answered as they come, whatever the traffic. */
			km_proc_time(w->proc, (uint64_t)((double)rte_rdtsc() * ns_per_tsc));
			if (disk_poll(w, map, &tx) != 0)
				tx_flush(w, &tx);
			tx.replies = 0;
			worker_notes(w);
			idle = 0;
		}
		t1 = rte_rdtsc();
		nb_rx = rte_eth_rx_burst(km_dp.port, w->queue, pkts, w->tune.burst);
		if (nb_rx != 0) {
			/* The port's receive path (memif and tap copy every packet here). */
			t0 = rte_rdtsc();
			w->cnt.rx_cycles += t0 - t1;
		}
		backlog_update(w, nb_rx);
		if (nb_rx == 0 && rte_ring_empty(w->to_owner)) {
			if (++idle < w->tune.idle_spin || w->tune.idle_sleep_us == 0 ||
				((w->disk || w->repl) && km_proc_busy(w->proc))) {
				rte_pause();
				continue;
			}
			/* Offline while asleep so that grace periods never wait for us. */
			rcu_thread_offline();
			sleep_us(w->tune.idle_sleep_us);
			rcu_thread_online();
			continue;
		}
		idle = 0;
		/* The busy part: from the end of the RX burst (hand-offs only: from here). */
		if (nb_rx == 0)
			t0 = rte_rdtsc();
		tx.cyc = 0;
		tx.rx_tsc = t0; /* the latency of this burst's replies, counted at their TX */
		/* The clock of cookie slots and read latencies: once per burst. */
		km_proc_time(w->proc, (uint64_t)((double)t0 * ns_per_tsc));
		w->cnt.rx_pkts += nb_rx;
		process_burst(w, map, allow, pkts, nb_rx, 0, &tx);
		nb_ho = (uint16_t)rte_ring_sc_dequeue_burst(
			w->to_owner, (void **)pkts, w->tune.burst, NULL);
		/* A shard moving here: its old owner queued the attach (KM_CMSG_MOVE_IN)
		 * before it handed on any request for it, so the attach is visible now (the
		 * dequeue's acquire) and goes first. Between two bursts: a loop boundary. */
		if (unlikely(nb_ho != 0 && !rte_ring_empty(w->ctl_to_w)))
			worker_commands(w);
		w->cnt.handoff_in += nb_ho;
		process_burst(w, map, allow, pkts, nb_ho, 1, &tx);
		if (w->disk)
			disk_poll(w, map, &tx);
		tx.replies = 0;
		tx_flush(w, &tx);
		/* Read-ahead after the replies are out: not on their way. */
		if (w->disk)
			km_proc_prefetch_run(w->proc, map);
		worker_notes(w);
		t1 = rte_rdtsc();
		iter_tsc = t1 - t0;
		w->cnt.busy_cycles += t1 - t0;
		w->cnt.tx_cycles += tx.cyc;
		w->cnt.busy_iters++;
	}
	/* Answer what waits for the disk before leaving (bounded: a stuck disk must not
	 * keep keymapd from stopping). */
	t0 = rte_rdtsc();
	map = rcu_dereference(km_map_current);
	while (w->disk && km_proc_busy(w->proc) && rte_rdtsc() - t0 < rte_get_tsc_hz()) {
		disk_poll(w, map, &tx);
		tx_flush(w, &tx);
		rte_pause();
	}
	rcu_thread_offline();
	rcu_unregister_thread();
	return 0;
}
