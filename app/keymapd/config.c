/* SPDX-License-Identifier: BSD-3-Clause */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cfgfile.h>

#include <km_proto.h>
#include <km_shardmap.h>

#include "config.h"

enum conf_type {
	T_U64,  /* decimal, within [min, max] */
	T_STR,  /* up to size - 1 bytes */
	T_IPV4, /* dotted quad */
	T_CHAR, /* exactly one byte */
	T_ENUM, /* one of the '|'-separated words in `choices` */
};

struct conf_desc {
	const char *section;
	const char *key;
	enum conf_type type;
	size_t off;
	size_t size;
	uint64_t min, max;
	const char *choices;
	const char *def;
	const char *help;
};

#define U64(s, k, field, lo, hi, d, h)                                                             \
	{                                                                                          \
		s, k, T_U64, offsetof(struct km_conf, field), sizeof(uint64_t), lo, hi, NULL, d, h \
	}
#define STR(s, k, field, d, h)                                                 \
	{                                                                      \
		s, k, T_STR, offsetof(struct km_conf, field),                  \
			sizeof(((struct km_conf *)0)->field), 0, 0, NULL, d, h \
	}
#define ENUM(s, k, field, ch, d, h)                                          \
	{                                                                    \
		s, k, T_ENUM, offsetof(struct km_conf, field),               \
			sizeof(((struct km_conf *)0)->field), 0, 0, ch, d, h \
	}

/* Every tunable, once. docs/operations.md and config/keymapd.conf describe the same. */
static const struct conf_desc descs[] = {
	STR("eal", "args", eal_args,
		"--no-huge -m 512 --no-pci --file-prefix keymap --vdev net_tap0,iface=kmtap0 -l "
		"0-1",
		"EAL arguments (replaced by anything after -- on the command line)"),
	U64("net", "port", port_id, 0, 31, "0", "ethdev port id to serve on"),
	{"net", "ip", T_IPV4, offsetof(struct km_conf, ip), sizeof(uint32_t), 0, 0, NULL,
		"198.51.100.2", "IPv4 address keymapd answers for (ARP, ICMP echo, UDP)"},
	U64("net", "udp_port", udp_port, 1, 65535 - KM_WORKERS_MAX, "7070",
		"UDP port of worker 0; worker i listens on udp_port + i"),
	U64("net", "rx_desc", rx_desc, 64, 16384, "1024", "RX descriptors per queue"),
	U64("net", "tx_desc", tx_desc, 64, 16384, "1024", "TX descriptors per queue"),
	U64("net", "mbufs", mbufs, 1024, 1 << 24, "16383", "packet buffers in the pool"),
	U64("net", "rss", rss, 0, 1, "1",
		"spread UDP flows over worker queues by RSS if the port can"),
	ENUM("workers", "mode", worker_mode, "serve|echo", "serve",
		"serve: answer requests; echo: return every datagram to the worker ports unparsed "
		"(the link and generator ceiling for benchmarks)"),
	U64("workers", "burst", burst, 1, 64, "32", "packets per RX/TX burst"),
	U64("workers", "idle_spin", idle_spin, 0, 1 << 30, "2048",
		"empty polls before an idle worker starts sleeping"),
	U64("workers", "idle_sleep_us", idle_sleep_us, 0, 100000, "50",
		"sleep of an idle worker between polls (microseconds, 0 = never sleep)"),
	U64("shards", "count", shard_count, 1, 1 << 16, "16",
		"initial number of shards (power of two)"),
	{"shards", "route_sep", T_CHAR, offsetof(struct km_conf, route_sep), sizeof(uint64_t), 0, 0,
		NULL, "/", "component separator of composite keys"},
	U64("shards", "route_depth", route_depth, 1, 255, "1",
		"components of a composite key that choose its shard"),
	ENUM("store", "driver", store_driver, "mem", "mem", "storage driver"),
	U64("store", "value_max", value_max, 1, KM_VALUE_MAX, "1024", "largest value in bytes"),
	U64("store", "initial_keys", initial_keys, 0, 1 << 26, "1024",
		"index sizing hint per shard"),
	U64("store", "dedup_entries", dedup_entries, 1024, 1 << 24, "65536",
		"per-worker window of writes remembered for at-most-once retries (power of two)"),
	U64("control", "interval_ms", interval_ms, 1, 10000, "100",
		"control loop period (the control lcore sleeps in between)"),
	U64("control", "stats_interval_s", stats_interval_s, 0, 86400, "0",
		"log requests, rate and cycles per request every N seconds (0 = never; the "
		"counter table is logged at shutdown)"),
	ENUM("log", "level", log_level, "emerg|alert|crit|err|warning|notice|info|debug", "info",
		"log level of keymap.* log types"),
};

#define NB_DESCS (sizeof(descs) / sizeof(descs[0]))

static const struct conf_desc *
desc_find(const char *section, const char *key)
{
	size_t i;

	for (i = 0; i < NB_DESCS; i++)
		if (strcmp(descs[i].section, section) == 0 && strcmp(descs[i].key, key) == 0)
			return &descs[i];
	return NULL;
}

static int
section_known(const char *section)
{
	size_t i;

	for (i = 0; i < NB_DESCS; i++)
		if (strcmp(descs[i].section, section) == 0)
			return 1;
	return 0;
}

static int
enum_has(const char *choices, const char *v)
{
	size_t n = strlen(v);
	const char *p = choices;

	while (*p != '\0') {
		const char *e = strchr(p, '|');
		size_t len = e == NULL ? strlen(p) : (size_t)(e - p);

		if (len == n && strncmp(p, v, n) == 0)
			return 1;
		if (e == NULL)
			break;
		p = e + 1;
	}
	return 0;
}

/* Parse value for d into c; returns a reason or NULL. One parser for every source. */
static const char *
desc_apply(const struct conf_desc *d, struct km_conf *c, const char *v)
{
	char *base = (char *)c + d->off, *end;
	unsigned long long u;
	struct in_addr a;

	switch (d->type) {
	case T_U64:
		if (*v == '\0' || *v == '-')
			return "not a non-negative integer";
		errno = 0;
		u = strtoull(v, &end, 10);
		if (errno != 0 || *end != '\0')
			return "not a non-negative integer";
		if (u < d->min || u > d->max)
			return "out of range";
		*(uint64_t *)base = u;
		return NULL;
	case T_ENUM:
		if (!enum_has(d->choices, v))
			return "not one of the allowed values";
		/* fall through */
	case T_STR:
		if (strlen(v) >= d->size)
			return "too long";
		strcpy(base, v);
		return NULL;
	case T_IPV4:
		if (inet_pton(AF_INET, v, &a) != 1)
			return "not an IPv4 address";
		*(uint32_t *)base = a.s_addr;
		return NULL;
	case T_CHAR:
		if (strlen(v) != 1)
			return "not a single character";
		*(uint64_t *)base = (uint8_t)v[0];
		return NULL;
	}
	return "bad type";
}

static const char *
conf_check(const struct km_conf *c)
{
	if ((c->shard_count & (c->shard_count - 1)) != 0)
		return "[shards] count: not a power of two";
	if ((c->dedup_entries & (c->dedup_entries - 1)) != 0)
		return "[store] dedup_entries: not a power of two";
	return NULL;
}

void
km_conf_defaults(struct km_conf *c)
{
	size_t i;

	memset(c, 0, sizeof(*c));
	for (i = 0; i < NB_DESCS; i++)
		desc_apply(&descs[i], c, descs[i].def);
}

int
km_conf_load(struct km_conf *c, const char *path, char *err, size_t errlen)
{
	struct rte_cfgfile *cfg;
	char **secs = NULL;
	struct rte_cfgfile_entry *ents = NULL;
	const char *why;
	int nsec, i, j, k, n, rc = -1;

	cfg = rte_cfgfile_load(path, 0);
	if (cfg == NULL) {
		snprintf(err, errlen, "%s: cannot read or parse (INI syntax, ';' comments)", path);
		return -1;
	}
	nsec = rte_cfgfile_num_sections(cfg, NULL, 0);
	secs = calloc(nsec > 0 ? nsec : 1, sizeof(*secs));
	if (secs == NULL)
		goto oom;
	for (i = 0; i < nsec; i++) {
		secs[i] = malloc(CFG_NAME_LEN);
		if (secs[i] == NULL)
			goto oom;
	}
	rte_cfgfile_sections(cfg, secs, nsec);
	for (i = 0; i < nsec; i++) {
		if (!section_known(secs[i])) {
			snprintf(err, errlen, "%s: [%s]: unknown section", path, secs[i]);
			goto out;
		}
		/* rte_cfgfile keeps a repeated section as a second one: refuse it. */
		for (j = 0; j < i; j++)
			if (strcmp(secs[i], secs[j]) == 0) {
				snprintf(err, errlen, "%s: [%s]: duplicate section", path, secs[i]);
				goto out;
			}
		n = rte_cfgfile_section_num_entries_by_index(cfg, secs[i], i);
		free(ents);
		ents = calloc(n > 0 ? n : 1, sizeof(*ents));
		if (ents == NULL)
			goto oom;
		n = rte_cfgfile_section_entries_by_index(cfg, i, secs[i], ents, n);
		for (j = 0; j < n; j++) {
			const struct conf_desc *d = desc_find(secs[i], ents[j].name);

			if (d == NULL) {
				snprintf(err, errlen, "%s: [%s] %s: unknown key", path, secs[i],
					ents[j].name);
				goto out;
			}
			/* rte_cfgfile silently keeps the first of two equal keys: refuse. */
			for (k = 0; k < j; k++)
				if (strcmp(ents[k].name, ents[j].name) == 0) {
					snprintf(err, errlen, "%s: [%s] %s: duplicate key", path,
						secs[i], ents[j].name);
					goto out;
				}
			why = desc_apply(d, c, ents[j].value);
			if (why != NULL) {
				snprintf(err, errlen, "%s: [%s] %s = '%s': %s", path, secs[i],
					ents[j].name, ents[j].value, why);
				goto out;
			}
		}
	}
	why = conf_check(c);
	if (why != NULL) {
		snprintf(err, errlen, "%s: %s", path, why);
		goto out;
	}
	rc = 0;
	goto out;
oom:
	snprintf(err, errlen, "%s: out of memory", path);
out:
	free(ents);
	if (secs != NULL)
		for (i = 0; i < nsec; i++)
			free(secs[i]);
	free(secs);
	rte_cfgfile_close(cfg);
	return rc;
}

int
km_conf_set(struct km_conf *c, const char *assignment, char *err, size_t errlen)
{
	char section[CFG_NAME_LEN], key[CFG_NAME_LEN];
	const char *dot = strchr(assignment, '.'), *eq = strchr(assignment, '=');
	const struct conf_desc *d;
	const char *why;

	if (dot == NULL || eq == NULL || dot > eq ||
		(size_t)(dot - assignment) >= sizeof(section) ||
		(size_t)(eq - dot - 1) >= sizeof(key)) {
		snprintf(err, errlen, "'%s': expected section.key=value", assignment);
		return -1;
	}
	memcpy(section, assignment, (size_t)(dot - assignment));
	section[dot - assignment] = '\0';
	memcpy(key, dot + 1, (size_t)(eq - dot - 1));
	key[eq - dot - 1] = '\0';
	d = desc_find(section, key);
	if (d == NULL) {
		snprintf(err, errlen, "'%s': unknown key [%s] %s", assignment, section, key);
		return -1;
	}
	why = desc_apply(d, c, eq + 1);
	if (why == NULL)
		why = conf_check(c);
	if (why != NULL) {
		snprintf(err, errlen, "'%s': %s", assignment, why);
		return -1;
	}
	return 0;
}

void
km_conf_print(const struct km_conf *c, FILE *f)
{
	const char *sec = "";
	char ip[INET_ADDRSTRLEN];
	size_t i;

	for (i = 0; i < NB_DESCS; i++) {
		const struct conf_desc *d = &descs[i];
		const char *base = (const char *)c + d->off;

		if (strcmp(sec, d->section) != 0) {
			fprintf(f, "%s[%s]\n", i == 0 ? "" : "\n", d->section);
			sec = d->section;
		}
		fprintf(f, "; %s\n%s = ", d->help, d->key);
		switch (d->type) {
		case T_U64:
			fprintf(f, "%" PRIu64 "\n", *(const uint64_t *)base);
			break;
		case T_STR:
		case T_ENUM:
			fprintf(f, "%s\n", base);
			break;
		case T_IPV4:
			inet_ntop(AF_INET, base, ip, sizeof(ip));
			fprintf(f, "%s\n", ip);
			break;
		case T_CHAR:
			fprintf(f, "%c\n", (char)*(const uint64_t *)base);
			break;
		}
	}
}
