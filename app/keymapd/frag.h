/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_FRAG_H
#define KEYMAPD_FRAG_H

/*
 * IPv4 fragments in and out of a worker (frag.c).
 *
 * In: a fragment addressed to keymapd goes into the worker's reassembly table
 * (rte_ip_frag: [net] frag_max datagrams at once, each of at most
 * RTE_LIBRTE_IP_FRAG_MAX_FRAG fragments, dropped [net] frag_timeout_ms after its first
 * fragment). A complete datagram is copied into one large buffer, where the worker's L4
 * checks and the processor see it like any other: the processor needs contiguous bytes,
 * and the buffer has room for the request's reply.
 *
 * Large buffers: a per-worker pool of [net] large_bufs mbufs, each of room bytes of UDP
 * payload (km_frag_room()): reassembled requests, and GETs the processor sent back for
 * room (KM_PROC_GROW) copied into one.
 *
 * Out: a reply larger than the port MTU leaves as IPv4 fragments (rte_ipv4_fragment_packet:
 * a direct mbuf per fragment for its IPv4 header, an indirect one pointing into the
 * reply), from two small per-worker pools.
 *
 * Memory, per worker: the table (4 slots of 512 bytes per datagram of frag_max); the
 * fragments it holds, RX mbufs of the port's pool, at most frag_max x
 * RTE_LIBRTE_IP_FRAG_MAX_FRAG (start-up refuses more than a quarter of [net] mbufs for all
 * workers); large_bufs x (room + 400) bytes; two pools of tx_desc + 192 small mbufs.
 *
 * Context: everything here runs on the worker that owns w, except km_frag_init() and
 * km_frag_fini() (main lcore, before the workers start and after they stopped). Large
 * buffers handed to another worker are freed there: the pools are multi-producer.
 */

#include <stdint.h>

#include <rte_ip.h>
#include <rte_mbuf.h>

#include "config.h"

struct km_worker;

/*
 * UDP payload bytes of a large buffer: the largest request (a PUT of [store] value_max
 * with the longest key, or what RTE_LIBRTE_IP_FRAG_MAX_FRAG fragments carry at mtu, so
 * that a request over value_max is still answered TOO_LARGE) and so its largest reply,
 * at most KM_MSG_MAX.
 * @note Context: any thread.
 */
uint32_t km_frag_room(uint64_t value_max, uint16_t mtu);

/*
 * Create w's reassembly table and pools ([net] frag_max, frag_timeout_ms, large_bufs,
 * tx_desc; km_dp.large_room must be set).
 * @return 0 or -errno (logged).
 * @note Context: main lcore, before the workers run.
 */
int km_frag_init(struct km_worker *w, const struct km_conf *conf);

/* Free what km_frag_init() made. @note Context: main lcore, the workers stopped. */
void km_frag_fini(struct km_worker *w);

/*
 * A fragment to keymapd's address, its IPv4 header checked (version, length, checksum,
 * source): into the reassembly table.
 * @return the whole datagram, the frame copied into a large buffer with its IPv4 header
 *   made whole and its checksums judged in ol_flags (the fragments are freed); or NULL:
 *   kept until the rest comes, or dropped and counted (frag_drops, large_drops).
 */
struct rte_mbuf *km_frag_input(struct km_worker *w, struct rte_mbuf *m, struct rte_ipv4_hdr *ip);

/*
 * Once per loop iteration: free the mbufs of dropped fragments (counted in frag_drops) and
 * drop datagrams whose fragments timed out, while any may be in the table.
 */
void km_frag_tick(struct km_worker *w, uint64_t tsc);

/* The frame in m (one segment) copied into a large buffer, or NULL when none is free. */
struct rte_mbuf *km_frag_large_copy(struct km_worker *w, const struct rte_mbuf *m);

/*
 * The reply frame in m (Ethernet, IPv4 without options, UDP, headers already swapped,
 * over the MTU) cut into IPv4 fragments: its UDP checksum computed over the whole
 * datagram first where udp_reply() left it to the port's offload (fragments get none),
 * each fragment's IPv4 checksum after. m is consumed.
 * @return the number of fragments in out (max at least), or 0 (m freed, counted in
 *   large_drops).
 */
unsigned int km_frag_output(
	struct km_worker *w, struct rte_mbuf *m, struct rte_mbuf **out, unsigned int max);

/* Most fragments one reply of KM_MSG_MAX bytes takes at an MTU of at least 576. */
#define KM_FRAG_OUT_MAX 128

#endif /* KEYMAPD_FRAG_H */
