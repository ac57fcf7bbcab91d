/* SPDX-License-Identifier: BSD-3-Clause */
/* The allow-list parser: "a.b.c.d[/len]" items separated by commas. */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <km_util.h>

#include "km_allow.h"

/* One CIDR item "a.b.c.d[/len]" (NUL-terminated, no blanks). @return 0 or -EINVAL with why. */
static int
allow_item(char *item, uint32_t *net, uint32_t *mask, char *why, size_t len)
{
	char *slash = strchr(item, '/');
	uint64_t plen = 32;
	struct in_addr a;
	int rc;

	if (slash != NULL) {
		*slash = '\0';
		rc = km_util_parse_u64(slash + 1, 0, 32, &plen);
		if (rc == -ERANGE) {
			snprintf(why, len, "'%s/%s': prefix length not in 0..32", item, slash + 1);
			return -EINVAL;
		}
		if (rc < 0) {
			snprintf(why, len, "'%s/%s': bad prefix length", item, slash + 1);
			return -EINVAL;
		}
	}
	if (inet_pton(AF_INET, item, &a) != 1) {
		snprintf(why, len, "'%s': not an IPv4 address", item);
		return -EINVAL;
	}
	*mask = plen == 0 ? 0 : htonl(UINT32_MAX << (32 - plen));
	*net = a.s_addr & *mask;
	if (*net != a.s_addr) {
		/* 1.2.3.4/8 is most likely a typo: say which network it would have been. */
		char want[INET_ADDRSTRLEN];
		struct in_addr n = {.s_addr = *net};

		inet_ntop(AF_INET, &n, want, sizeof(want));
		snprintf(why, len, "'%s/%u': host bits set (the network is %s/%u)", item,
			(unsigned int)plen, want, (unsigned int)plen);
		return -EINVAL;
	}
	return 0;
}

int
km_allow_parse(const char *s, struct km_allow *out, char *err, size_t errlen)
{
	struct km_allow a = {.n = 0};
	char item[INET_ADDRSTRLEN + 4];
	const char *p = s;

	for (;;) {
		const char *e = strchr(p, ',');
		const char *end = e == NULL ? p + strlen(p) : e;
		size_t len;

		while (p < end && isspace((unsigned char)*p))
			p++;
		while (end > p && isspace((unsigned char)end[-1]))
			end--;
		len = (size_t)(end - p);
		if (len == 0) {
			if (e == NULL && a.n == 0)
				snprintf(err, errlen, "empty list");
			else
				snprintf(err, errlen, "item %u is empty", a.n + 1);
			return -EINVAL;
		}
		if (a.n == KM_ALLOW_MAX) {
			snprintf(err, errlen, "more than %u items", KM_ALLOW_MAX);
			return -EINVAL;
		}
		if (len >= sizeof(item)) {
			snprintf(err, errlen, "'%.*s': not an IPv4 address or CIDR", (int)len, p);
			return -EINVAL;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		if (allow_item(item, &a.net[a.n], &a.mask[a.n], err, errlen) < 0)
			return -EINVAL;
		if (a.mask[a.n] == 0)
			a.all = 1;
		a.n++;
		if (e == NULL)
			break;
		p = e + 1;
	}
	*out = a;
	return 0;
}

int
km_allow_create(const char *s, struct km_allow **out, char *err, size_t errlen)
{
	struct km_allow *a = malloc(sizeof(*a));
	int rc;

	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = km_allow_parse(s, a, err, errlen);
	if (rc < 0) {
		free(a);
		return rc;
	}
	*out = a;
	return 0;
}

void
km_allow_free(struct km_allow *a)
{
	free(a);
}
