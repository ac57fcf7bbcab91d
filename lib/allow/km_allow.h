/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_ALLOW_H
#define KM_ALLOW_H

/**
 * @file
 * The allow-list of client sources: a short list of IPv4 prefixes ("a.b.c.d/len,...").
 *
 * Concurrency: a struct km_allow is built whole by one thread (km_allow_parse() or
 * km_allow_create()), then published by pointer (keymapd: rcu_assign_pointer by the
 * control lcore) and only read afterwards: km_allow_match() from any number of threads,
 * lock-free. Replacing a list means publishing a new one and freeing the old one after a
 * grace period (km_allow_free()); a published list is never written in place.
 */

#include <stddef.h>
#include <stdint.h>

/** Most prefixes in one list. */
#define KM_ALLOW_MAX 32

/* All fields: written once by the builder before publication, read-only after. */
struct km_allow {
	uint32_t n;                  /* prefixes in net[] and mask[] */
	int all;                     /* one entry is 0.0.0.0/0: no check needed */
	uint32_t net[KM_ALLOW_MAX];  /* network byte order, already masked */
	uint32_t mask[KM_ALLOW_MAX]; /* network byte order */
};

/**
 * Parse "a.b.c.d/len,..." into out (a bare address means /32; blanks around items are
 * ignored).
 * @param out written only on success.
 * @param err on failure, the reason: empty list, "item N is empty", "'x': not an IPv4
 *   address", "'x/y': bad prefix length", "'x/y': prefix length not in 0..32", more than
 *   KM_ALLOW_MAX items.
 * @return 0 or -EINVAL.
 * @note Context: any thread; out must not be published yet.
 */
int km_allow_parse(const char *s, struct km_allow *out, char *err, size_t errlen);

/**
 * km_allow_parse() into a new list, to be published and later freed with
 * km_allow_free().
 * @return 0, -EINVAL (the reason in err) or -ENOMEM.
 * @note Context: any thread (allocates).
 */
int km_allow_create(const char *s, struct km_allow **out, char *err, size_t errlen);

/**
 * Free a list from km_allow_create() (NULL is fine).
 * @note Context: any thread, once no reader can still hold a (after an RCU grace period
 *   when it was published).
 */
void km_allow_free(struct km_allow *a);

/**
 * @return 1 if the IPv4 address addr (network byte order) is in one of a's prefixes.
 * @note Context: any thread (the data path: per packet), a read-only after publication.
 */
static inline int
km_allow_match(const struct km_allow *a, uint32_t addr)
{
	uint32_t i;

	if (a->all)
		return 1;
	for (i = 0; i < a->n; i++)
		if ((addr & a->mask[i]) == a->net[i])
			return 1;
	return 0;
}

/**
 * Whether a reply may go to source addr (network byte order), port (network byte order)
 * of a server at own: not to an unspecified, "this network" (0/8), loopback (127/8),
 * multicast (224/4), reserved or broadcast (240/4, 255.255.255.255) address, nor to the
 * server's own address, nor to port 0: such a source is spoofed or broken, and a reply
 * could only reflect traffic somewhere it was not asked for.
 * @return 1 if it may, 0 if not.
 * @note Context: any thread (the data path: per packet).
 */
static inline int
km_addr_replyable(uint32_t addr, uint16_t port, uint32_t own)
{
	const uint8_t *b = (const uint8_t *)&addr; /* network order: b[0] is the first octet */

	return port != 0 && addr != own && b[0] != 0 && b[0] != 127 && b[0] < 224;
}

#endif /* KM_ALLOW_H */
