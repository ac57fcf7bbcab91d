/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_CONFIG_H
#define KEYMAPD_CONFIG_H

/*
 * keymapd configuration: one table of tunables (section, key, type, default, range, help)
 * drives the embedded defaults, the INI file (rte_cfgfile), command-line overrides
 * (-o section.key=value) and --print-config. Loaded before EAL init.
 */

#include <stdint.h>
#include <stdio.h>

#define KM_CONF_STR_MAX 256

struct km_conf {
	/* [eal] */
	char eal_args[KM_CONF_STR_MAX];
	/* [net] */
	uint64_t port_id;
	uint32_t ip; /* network byte order */
	uint64_t udp_port;
	uint64_t rx_desc;
	uint64_t tx_desc;
	uint64_t mbufs;
	uint64_t rss;
	/* [workers] */
	char worker_mode[8];
	uint64_t burst;
	uint64_t idle_spin;
	uint64_t idle_sleep_us;
	/* [shards] */
	uint64_t shard_count;
	uint64_t route_sep;
	uint64_t route_depth;
	/* [store] */
	char store_driver[32];
	uint64_t value_max;
	uint64_t initial_keys;
	uint64_t dedup_entries;
	/* [control] */
	uint64_t interval_ms;
	uint64_t stats_interval_s;
	/* [log] */
	char log_level[16];
};

/* Fill c with the embedded defaults. */
void km_conf_defaults(struct km_conf *c);

/*
 * Load an INI file over c. Unknown sections or keys, duplicate sections or keys and bad
 * values are refused. @return 0, or -1 with a message "file: [section] key: reason" in err.
 */
int km_conf_load(struct km_conf *c, const char *path, char *err, size_t errlen);

/* Apply one "section.key=value" override. @return 0 or -1 with a message in err. */
int km_conf_set(struct km_conf *c, const char *assignment, char *err, size_t errlen);

/* Write the effective configuration as an INI file. */
void km_conf_print(const struct km_conf *c, FILE *f);

#endif /* KEYMAPD_CONFIG_H */
