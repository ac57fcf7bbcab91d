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

/* The value of a numeric tunable set to "auto" (those whose help says so): keymapd derives
 * it from what it measures (docs/operations.md 2.13), an explicit number wins. */
#define KM_CONF_AUTO UINT64_MAX

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
	uint64_t busy_watermark;  /* percent of rx_desc, 0 = never BUSY for backlog */
	uint64_t frag_max;        /* datagrams in reassembly per worker, 0 = fragments dropped */
	uint64_t frag_timeout_ms; /* a datagram's fragments must all come within this */
	uint64_t large_bufs;      /* large buffers per worker */
	/* [workers] */
	char worker_mode[8];
	uint64_t burst;
	uint64_t idle_spin;
	uint64_t idle_sleep_us;
	/* [shards] */
	uint64_t shard_count;
	uint64_t route_sep;
	uint64_t route_depth;
	uint64_t split_rate;  /* req/s of one shard above which it is split (0 = never, or auto) */
	uint64_t merge_rate;  /* req/s of two buddies below which they merge (0 = never, or auto) */
	uint64_t hysteresis;  /* consecutive samples a condition must hold before acting */
	uint64_t sample_ms;   /* per-shard load sampling period */
	uint64_t max_count;   /* automatic splits stop at this many shards */
	uint64_t balance_pct; /* move shards while the busiest worker carries more than
			       * this percentage of the mean load (0 = never) */
	uint64_t balance_moves;    /* automatic moves per second at most */
	uint64_t balance_min_rate; /* mean worker req/s below which nothing moves (or auto) */
	/* [store] */
	char store_driver[32];
	uint64_t value_max;
	uint64_t initial_keys;
	char hugepages[8];
	uint64_t dedup_entries;
	char data_dir[KM_CONF_STR_MAX];
	char cold_dir[KM_CONF_STR_MAX];
	char durability[8];
	uint64_t sync_interval_ms;
	uint64_t write_buffer;
	uint64_t max_bytes;
	uint64_t pending_max;
	uint64_t defer_max;
	/* [cache] */
	uint64_t cache_bytes;
	/* [tier] */
	uint64_t cold_rate;         /* req/s below which a shard goes cold (0 = never) */
	uint64_t warm_rate;         /* req/s above which a cold shard is promoted (0 = never) */
	uint64_t compact_pct;       /* dead share of a log that triggers a compaction */
	uint64_t compact_min_bytes; /* smaller logs are left alone */
	/* [control] */
	uint64_t interval_ms;
	uint64_t stats_interval_s;
	/* [security] */
	char allow[KM_CONF_STR_MAX];     /* comma-separated IPv4 CIDR list */
	uint64_t cookies;                /* address validation (HELLO cookies) on */
	uint64_t cookie_lifetime_s;      /* a cookie lives between this and twice this */
	uint64_t auth;                   /* every request needs a valid MAC */
	char keys_file[KM_CONF_STR_MAX]; /* client keys, "" = none */
	/* [prefetch] */
	uint64_t pf_enable;
	char pf_models[64];      /* km_predict_models_parse() list */
	uint64_t pf_threshold;   /* percent */
	uint64_t pf_budget;      /* reads in flight per worker */
	uint64_t pf_bytes_per_s; /* per worker, 0 = no limit */
	uint64_t pf_watermark;   /* percent of pending_max */
	uint64_t pf_sampling;    /* one client in N, power of two */
	uint64_t pf_memory;      /* predictor tables, bytes */
	uint64_t pf_lcore;       /* the predictor's own lcore, 0 = the control lcore */
	/* [crew] hot-key replication (app/keymapd/crew.c) */
	uint64_t crew_enable;
	uint64_t crew_keys;        /* read copies per worker */
	uint64_t crew_value_max;   /* value bytes of a copy */
	uint64_t crew_sampling;    /* one access in N sampled, power of two */
	uint64_t crew_interval_ms; /* decisions every ... */
	uint64_t crew_share_on;    /* percent of the owner's sampled accesses: replicate */
	uint64_t crew_share_off;   /* ... below: withdraw */
	uint64_t crew_write_max;   /* percent of a key's accesses that may be writes */
	uint64_t crew_hysteresis;  /* intervals a condition holds before acting */
	uint64_t crew_min_samples; /* samples of a key in an interval to replicate it */
	/* [shift] automatic partition shifter (app/keymapd/shift_auto.c) */
	uint64_t shift_auto;        /* override hot routing parts without the operator */
	uint64_t shift_interval_ms; /* decisions every ... */
	uint64_t shift_share_on;    /* percent of a mean worker's sampled accesses: spread */
	uint64_t shift_share_off;   /* ... below: undo an automatic override */
	uint64_t shift_hysteresis;  /* intervals a part is hot before it is overridden */
	uint64_t shift_undo_s;      /* seconds an automatic override's part is cool before undo */
	uint64_t shift_settle_ms;   /* an override settles no sooner after its last change */
	/* [cluster] several nodes, metadata in etcd (docs/cluster.md, app/keymapd/cluster.c) */
	char cluster_name[64];              /* "" = a single node */
	char cluster_node[64];              /* this node's id */
	char cluster_etcd[KM_CONF_STR_MAX]; /* etcd endpoints, comma-separated */
	uint32_t cluster_advertise;         /* network byte order; 0 = [net] ip */
	uint32_t cluster_side_addr;         /* network byte order; 0 = advertise */
	uint64_t cluster_side_port;         /* TCP port of the side channel */
	uint64_t cluster_ttl_s;             /* membership lease */
	uint64_t cluster_load_ms;           /* load reports every ... */
	uint64_t cluster_replicas;          /* copies wanted (1..3) */
	char cluster_replication[8];        /* "sync" or "async" */
	/* [metrics] */
	uint32_t metrics_ip;   /* network byte order */
	uint64_t metrics_port; /* 0 = no metrics endpoint */
	/* [log] */
	char log_level[16];
	char log_file[KM_CONF_STR_MAX]; /* "" = stderr */
	char veth[16];                  /* [net] veth: "" = none */
	uint64_t log_syslog;
};

/* [store] durability as enum km_durability (none 0, async 1, sync 2). */
uint8_t km_durability_of(const char *name);

/* Fill c with the embedded defaults. */
void km_conf_defaults(struct km_conf *c);

/*
 * Load an INI file over c. Unknown sections or keys, duplicate sections or keys and bad
 * values are refused; nothing is applied then. @return 0, or -1 with a message in err:
 * "file:LINE: [section] key = 'value': reason" (or file:LINE: [section]: ..., file: ...).
 */
int km_conf_load(struct km_conf *c, const char *path, char *err, size_t errlen);

/* Apply one "section.key=value" override. @return 0 or -1 with a message in err. */
int km_conf_set(struct km_conf *c, const char *assignment, char *err, size_t errlen);

/*
 * Copy every runtime tunable (keymapctl set can change it) of from into c, the others
 * kept. @return 0, or -1 with err filled when the result breaks a constraint between
 * tunables (c unchanged).
 */
int km_conf_take_runtime(struct km_conf *c, const struct km_conf *from, char *err, size_t errlen);

/* Write the effective configuration as an INI file. */
void km_conf_print(const struct km_conf *c, FILE *f);

/* One tunable, as the control plane shows it. */
struct km_conf_item {
	const char *section;
	const char *key;
	const char *help;
	int is_number; /* value is a number (u64); otherwise a string */
	int runtime;   /* can be changed while keymapd runs (keymapctl set) */
	int can_auto;  /* a number that may also be "auto" (KM_CONF_AUTO) */
};

/** Number of tunables. */
size_t km_conf_nb_items(void);

/** Tunable i (0 <= i < km_conf_nb_items()), in file order. */
void km_conf_item(size_t i, struct km_conf_item *out);

/*
 * Value of tunable i in c: *num for numbers (KM_CONF_AUTO for "auto"), text in buf (always
 * filled, the form the INI file takes).
 */
void km_conf_value(const struct km_conf *c, size_t i, uint64_t *num, char *buf, size_t len);

/** Index of "section.key", or -1. */
int km_conf_find(const char *name);

#endif /* KEYMAPD_CONFIG_H */
