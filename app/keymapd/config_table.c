/* SPDX-License-Identifier: BSD-3-Clause */

/* The table of keymapd's tunables: section, key, type, range, default, help. */

#include <km_proto.h>
#include <km_shardmap.h>

#include "config_priv.h"

#define FIELD_SIZE(field) sizeof(((struct km_conf *)0)->field)
#define DESC(s, k, t, fl, field, d, h, ...)                                                  \
	{                                                                                    \
		.section = s, .key = k, .type = t, .flags = fl,                              \
		.off = offsetof(struct km_conf, field), .size = FIELD_SIZE(field), .def = d, \
		.help = h, __VA_ARGS__                                                       \
	}
#define U64(s, k, fl, field, lo, hi, d, h) DESC(s, k, T_U64, fl, field, d, h, .min = lo, .max = hi)
#define STR(s, k, fl, field, d, h)         DESC(s, k, T_STR, fl, field, d, h)
#define ENUM(s, k, fl, field, ch, d, h)    DESC(s, k, T_ENUM, fl, field, d, h, .choices = ch)
#define IPV4(s, k, fl, field, d, h)        DESC(s, k, T_IPV4, fl, field, d, h)
#define CHAR(s, k, fl, field, d, h)        DESC(s, k, T_CHAR, fl, field, d, h)
#define CIDRS(s, k, fl, field, d, h)       DESC(s, k, T_CIDRS, fl, field, d, h)
#define MODELS(s, k, fl, field, d, h)      DESC(s, k, T_MODELS, fl, field, d, h)

/*
 * Every tunable, once, in file order (the keys of one section together). config/keymapd.conf
 * is --print-config of this table and docs/operations.md has it as a table.
 */
const struct conf_desc km_conf_descs[] = {
	STR("eal", "args", 0, eal_args,
		"--no-huge -m 512 --no-pci --file-prefix keymap --vdev "
		"net_af_packet0,iface=km0p,blocksz=4096,framesz=2048,framecnt=512 -l 0-1",
		"EAL arguments (replaced by anything after -- on the command line)"),
	U64("net", "port", 0, port_id, 0, 31, "0", "ethdev port id to serve on"),
	IPV4("net", "ip", 0, ip, "198.51.100.2",
		"IPv4 address keymapd answers for (ARP, ICMP echo, UDP)"),
	STR("net", "veth", 0, veth, "km0",
		"with an af_packet or af_xdp vdev on NAMEp: create the veth pair NAME (the "
		"kernel's end, for local clients) / NAMEp (keymapd's) at start unless NAME exists, "
		"removed at exit; if it cannot be created, net_tap NAME replaces that vdev "
		"(docs/operations.md 2.3.1)"),
	U64("net", "udp_port", 0, udp_port, 1, 65535 - KM_WORKERS_MAX, "7070",
		"UDP port of worker 0; worker i listens on udp_port + i"),
	U64("net", "rx_desc", 0, rx_desc, 64, 16384, "1024", "RX descriptors per queue"),
	U64("net", "tx_desc", 0, tx_desc, 64, 16384, "1024", "TX descriptors per queue"),
	U64("net", "mbufs", 0, mbufs, 1024, 1 << 24, "16383", "packet buffers in the pool"),
	U64("net", "rss", 0, rss, 0, 1, "1",
		"spread UDP flows over worker queues by RSS if the port can"),
	U64("net", "busy_watermark", F_RUNTIME, busy_watermark, 0, 100, "0",
		"a worker whose RX queue holds more than this percentage of rx_desc (judged from "
		"consecutive full bursts where the port cannot tell) answers writes and disk "
		"reads BUSY until it catches up (0 = never)"),
	U64("net", "frag_max", 0, frag_max, 0, 65536, "64",
		"datagrams each worker reassembles from IPv4 fragments at once, each of at most 8 "
		"fragments (0 = fragments dropped); frag_max x 8 x workers must stay within a "
		"quarter of mbufs"),
	U64("net", "frag_timeout_ms", 0, frag_timeout_ms, 1, 60000, "100",
		"a datagram whose fragments are not all in this long after its first one is "
		"dropped (milliseconds)"),
	U64("net", "large_bufs", 0, large_bufs, 16, 65536, "128",
		"buffers per worker for requests reassembled from fragments and replies larger "
		"than a packet buffer, each of the largest request or reply (at most 65,000 "
		"bytes): docs/operations.md 2.5"),
	ENUM("workers", "mode", 0, worker_mode, "serve|echo", "serve",
		"serve: answer requests; echo: return every datagram to the worker ports unparsed "
		"(the link and generator ceiling for benchmarks)"),
	U64("workers", "burst", F_RUNTIME, burst, 1, 64, "32", "packets per RX/TX burst"),
	U64("workers", "idle_spin", F_RUNTIME, idle_spin, 0, 1 << 30, "2048",
		"empty polls before an idle worker starts sleeping"),
	U64("workers", "idle_sleep_us", F_RUNTIME, idle_sleep_us, 0, 100000, "50",
		"sleep of an idle worker between polls (microseconds, 0 = never sleep)"),
	U64("shards", "count", F_POW2, shard_count, 1, 1 << 16, "16",
		"initial number of shards (power of two)"),
	CHAR("shards", "route_sep", 0, route_sep, "/", "component separator of composite keys"),
	U64("shards", "route_depth", 0, route_depth, 1, 255, "1",
		"components of a composite key that choose its shard"),
	U64("shards", "split_rate", F_RUNTIME | F_AUTO, split_rate, 0, 1000000000, "auto",
		"requests/s of one shard above which keymapd splits it (0 = never; auto = half "
		"the capacity keymapd measures for the least capable worker: docs/operations.md "
		"2.13)"),
	U64("shards", "merge_rate", F_RUNTIME | F_AUTO, merge_rate, 0, 1000000000, "auto",
		"combined requests/s of two buddy shards below which keymapd merges them, never "
		"below count shards (0 = never; below split_rate; auto = a sixteenth of the "
		"measured worker capacity and at most a quarter of the split rate)"),
	U64("shards", "hysteresis", F_RUNTIME, hysteresis, 1, 1000, "3",
		"consecutive samples a split, merge or placement condition must hold before "
		"keymapd acts"),
	U64("shards", "sample_ms", F_RUNTIME, sample_ms, 100, 60000, "250",
		"period of the per-shard and per-worker load samples (milliseconds); rates are "
		"decayed by half each sample"),
	U64("shards", "max_count", F_RUNTIME, max_count, 1, 1 << 20, "4096",
		"automatic splits stop at this many shards (at least count)"),
	U64("shards", "balance_pct", F_RUNTIME, balance_pct, 0, 1000, "110",
		"keymapd moves shards between workers while the most loaded worker carries more "
		"than this percentage of the mean worker load for hysteresis samples (0 = never; "
		"otherwise above 100)"),
	U64("shards", "balance_moves", F_RUNTIME, balance_moves, 1, 1000, "4",
		"automatic moves per second at most"),
	U64("shards", "balance_min_rate", F_RUNTIME | F_AUTO, balance_min_rate, 0, 1000000000,
		"auto",
		"mean requests/s of a worker below which no shard moves for balance (auto = a "
		"twentieth of the measured worker capacity)"),
	ENUM("store", "driver", 0, store_driver, "mem|log", "mem",
		"storage driver: mem (volatile, values in DRAM) or log (persistent: a log per "
		"shard "
		"on disk, values read through a per-worker cache)"),
	U64("store", "value_max", 0, value_max, 1, KM_VALUE_MAX_LARGE, "1024",
		"largest value in bytes; over 1431 requests and replies travel in IPv4 fragments, "
		"a request in at most 8: at MTU 1500, 11,792 bytes of key and value "
		"(docs/protocol.md 3)"),
	U64("store", "initial_keys", 0, initial_keys, 0, 1 << 26, "1024",
		"index sizing hint per shard"),
	ENUM("store", "hugepages", 0, hugepages, "auto|hugetlb|off", "auto",
		"mem driver: auto = slabs of size classes holding 8 MiB or more are 2 MiB "
		"mappings advised for transparent huge pages; hugetlb = pages of the hugetlb pool "
		"first (while it has free ones); off = slabs of at most 1 MiB advised against THP "
		"(docs/operations.md 2.1)"),
	U64("store", "dedup_entries", F_POW2, dedup_entries, 1024, 1 << 24, "65536",
		"per-worker window of writes remembered for at-most-once retries (power of two)"),
	STR("store", "dir", 0, data_dir, "/var/lib/keymap",
		"log driver: data directory (one log per shard; must exist and be writable)"),
	STR("store", "cold_dir", 0, cold_dir, "/var/lib/keymap/cold",
		"log driver: directory of the cold tier's compressed segments (must exist)"),
	ENUM("store", "durability", 0, durability, "none|async|sync", "sync",
		"log driver: none = written every loop, never fdatasync'ed; async = acknowledged "
		"at once, durable within sync_interval_ms plus two group writes (BUSY beyond); "
		"sync = acknowledged after the record and an fdatasync (group commit per loop)"),
	U64("store", "sync_interval_ms", 0, sync_interval_ms, 1, 60000, "10",
		"log driver, async durability: how long an acknowledged write may wait to be "
		"durable, plus two group writes (milliseconds)"),
	U64("store", "max_bytes", 0, max_bytes, 0, UINT64_C(1) << 50, "0",
		"DRAM the stores may hold, all workers (each an equal share): mem keys, values "
		"and slots, log indexes; over it PUT/CAS are answered FULL (0: no bound)"),
	U64("store", "write_buffer", 0, write_buffer, 65536, 1 << 30, "4194304",
		"log driver: bytes of records per shard waiting for the disk before writes are "
		"answered BUSY"),
	U64("store", "pending_max", 0, pending_max, 1, 65536, "256",
		"log driver: disk reads in flight per worker before misses are answered BUSY"),
	U64("store", "defer_max", 0, defer_max, 16, 1 << 20, "1024",
		"log driver: requests per worker waiting for a read or a group write"),
	U64("cache", "bytes", 0, cache_bytes, 4096, UINT64_C(1) << 40, "67108864",
		"log driver: per-worker value cache (bytes, SIEVE eviction)"),
	U64("tier", "cold_rate", F_RUNTIME, cold_rate, 0, 1000000000, "0",
		"log driver: requests/s below which a shard moves to the cold tier after "
		"[shards] hysteresis samples (0 = never)"),
	U64("tier", "warm_rate", F_RUNTIME, warm_rate, 0, 1000000000, "0",
		"log driver: requests/s above which a cold shard moves back to the log "
		"(0 = never; above cold_rate)"),
	U64("tier", "compact_pct", F_RUNTIME, compact_pct, 0, 99, "50",
		"log driver: a log whose dead bytes are over this percentage of it is compacted "
		"(0 = never)"),
	U64("tier", "compact_min_bytes", F_RUNTIME, compact_min_bytes, 0, UINT64_C(1) << 40,
		"16777216", "log driver: logs smaller than this are not compacted"),
	U64("control", "interval_ms", F_RUNTIME, interval_ms, 1, 10000, "100",
		"control loop period (the control lcore sleeps in between)"),
	U64("control", "stats_interval_s", F_RUNTIME, stats_interval_s, 0, 86400, "0",
		"log requests, rate and cycles per request every N seconds (0 = never; the "
		"counter table is logged at shutdown)"),
	CIDRS("security", "allow", F_RUNTIME, allow, "0.0.0.0/0",
		"client sources served: comma-separated IPv4 CIDRs, a bare address is a /32 (at "
		"most 32 items); datagrams from other sources are dropped unanswered"),
	U64("security", "cookies", 0, cookies, 0, 1, "1",
		"address validation: a reply larger than its request (GET, MGET, MAP) goes only to "
		"a source whose request carries a valid HELLO cookie, others get DENIED; 0 = to "
		"any allowed source (an amplifier where sources can be spoofed)"),
	U64("security", "cookie_lifetime_s", 0, cookie_lifetime_s, 1, 86400, "60",
		"a HELLO cookie is accepted for between this and twice this; the secret it is "
		"made with rotates as often"),
	U64("security", "auth", F_RUNTIME, auth, 0, 1, "0",
		"1 = every request must carry a valid MAC of a client key of keys_file (DENIED "
		"otherwise); 0 = requests without a MAC are served with every right (those with "
		"one are checked)"),
	STR("security", "keys_file", 0, keys_file, "",
		"client keys, one per line: ID SECRET(32 hex) ro|rw [PREFIX ...], mode 0600; "
		"keymapctl key add/remove rewrite it (empty = no keys)"),
	U64("prefetch", "enable", F_RUNTIME, pf_enable, 0, 1, "1",
		"log driver: predictive prefetch (per-shard stream detector on the workers, "
		"predictor and scheduler on the control lcore)"),
	MODELS("prefetch", "models", F_RUNTIME, pf_models, "all",
		"predictor models, comma-separated: succ, coacc, entity, stride, template, or all, "
		"none (stride: the workers' stream detectors)"),
	U64("prefetch", "threshold", F_RUNTIME, pf_threshold, 1, 99, "30",
		"initial confidence (percent) a prediction needs to be prefetched; AIMD moves "
		"it between min(10, threshold) and max(50, threshold)"),
	U64("prefetch", "budget", F_RUNTIME, pf_budget, 1, 4096, "64",
		"prefetch reads in flight per worker; the predictor's commands not yet taken "
		"adapt (AIMD) between a quarter and 4 times it"),
	U64("prefetch", "bytes_per_s", F_RUNTIME, pf_bytes_per_s, 0, UINT64_C(1) << 40, "0",
		"disk bytes per second per worker the predictor's prefetches may read, each "
		"charged a 4 KiB page (0 = no limit; the streams are bounded by budget and "
		"watermark)"),
	U64("prefetch", "watermark", F_RUNTIME, pf_watermark, 1, 100, "75",
		"no prefetch starts while a worker's disk reads in flight are above this "
		"percentage of [store] pending_max (demand misses first)"),
	U64("prefetch", "sampling", F_RUNTIME | F_POW2, pf_sampling, 1, 1024, "1",
		"sample the accesses of one client (session) in N for the predictor (power of "
		"two); keymapd raises it while notes are dropped or a worker is over half busy"),
	U64("prefetch", "lcore", 0, pf_lcore, 0, RTE_MAX_LCORE - 1, "0",
		"an EAL lcore of its own for the predictor (taken from the workers); 0 = on the "
		"control lcore"),
	U64("prefetch", "memory", 0, pf_memory, 65536, UINT64_C(1) << 36, "33554432",
		"bytes of the predictor's tables (160 per tracked key)"),
	U64("crew", "enable", F_RUNTIME, crew_enable, 0, 1, "1",
		"hot-key replication: read copies of the hottest read-mostly keys, served by "
		"every worker (0 = off, copies withdrawn)"),
	U64("crew", "keys", 0, crew_keys, 1, 1024, "64",
		"read copies each worker may hold for the keys it owns"),
	U64("crew", "value_max", 0, crew_value_max, 1, 4096, "256",
		"largest value (bytes) a read copy holds; a key written larger is withdrawn"),
	U64("crew", "sampling", F_RUNTIME | F_POW2, crew_sampling, 1, 4096, "16",
		"sample one GET/PUT/CAS/DEL in N on each worker to find hot keys and hot routing "
		"parts ([shift]) (power of two)"),
	U64("crew", "interval_ms", F_RUNTIME, crew_interval_ms, 10, 60000, "200",
		"the control lcore decides which keys to replicate every interval_ms"),
	U64("crew", "share_on", F_RUNTIME, crew_share_on, 1, 100, "25",
		"replicate a key whose reads reach this percentage of its owner's sampled "
		"accesses"),
	U64("crew", "share_off", F_RUNTIME, crew_share_off, 0, 99, "10",
		"withdraw a key's copies once its accesses fall below this percentage of its "
		"owner's"),
	U64("crew", "write_max", F_RUNTIME, crew_write_max, 0, 100, "10",
		"a key whose writes are above this percentage of its accesses is not replicated "
		"(or is withdrawn)"),
	U64("crew", "hysteresis", F_RUNTIME, crew_hysteresis, 1, 100, "2",
		"consecutive intervals a condition must hold before a key is replicated or "
		"withdrawn"),
	U64("crew", "min_samples", F_RUNTIME, crew_min_samples, 1, 1000000, "16",
		"samples of a key within an interval before it may be replicated"),
	U64("shift", "auto", F_RUNTIME, shift_auto, 0, 1, "1",
		"partition shifter: spread a hot routing part (entity) over several shards by "
		"an override, undone when it cools (0 = only keymapctl override add/remove; the "
		"automatic overrides are then undone)"),
	U64("shift", "interval_ms", F_RUNTIME, shift_interval_ms, 50, 60000, "500",
		"the control lcore looks for hot routing parts every interval_ms (from the "
		"accesses [crew] sampling samples)"),
	U64("shift", "share_on", F_RUNTIME, shift_share_on, 1, 1000, "50",
		"override a routing part whose sampled accesses reach this percentage of a mean "
		"worker's and whose keys spread (not one hot key)"),
	U64("shift", "share_off", F_RUNTIME, shift_share_off, 0, 999, "20",
		"undo an automatic override once its part falls below this percentage of a mean "
		"worker's accesses"),
	U64("shift", "hysteresis", F_RUNTIME, shift_hysteresis, 1, 100, "3",
		"consecutive intervals a part must be hot before it is overridden"),
	U64("shift", "undo_s", F_RUNTIME, shift_undo_s, 1, 86400, "10",
		"seconds an automatic override's part must stay cool (or idle) before the "
		"override is undone: its keys move back"),
	U64("shift", "settle_ms", F_RUNTIME, shift_settle_ms, 0, 3600000, "2000",
		"an override settles no sooner than this after the last override change: a "
		"retried write that comes within it is answered from its first outcome, never "
		"executed again (milliseconds; more than a client retries a request)"),
	STR("cluster", "name", 0, cluster_name, "",
		"cluster name: keys under /keymap/NAME/ in etcd (docs/cluster.md); empty = a "
		"single node, the rest of [cluster] ignored"),
	STR("cluster", "node", 0, cluster_node, "",
		"this node's id in the cluster, unique (1-63 of A-Z a-z 0-9 . _ -)"),
	STR("cluster", "etcd", 0, cluster_etcd, "http://127.0.0.1:2379",
		"etcd endpoints (its v3 JSON gateway), comma-separated"),
	IPV4("cluster", "advertise", 0, cluster_advertise, "0.0.0.0",
		"address clients and nodes reach this node at (0.0.0.0 = [net] ip)"),
	IPV4("cluster", "side_addr", 0, cluster_side_addr, "0.0.0.0",
		"kernel address other nodes reach this node's side channel at (TCP; 0.0.0.0 = "
		"advertise, which a NIC that DPDK drives does not answer for)"),
	U64("cluster", "side_port", 0, cluster_side_port, 1, 65535, "7069",
		"TCP port of this node's side channel (cross-node shard moves)"),
	U64("cluster", "ttl_s", 0, cluster_ttl_s, 2, 300, "6",
		"membership lease: a node silent for this long is down (kept alive every third)"),
	U64("cluster", "load_interval_ms", 0, cluster_load_ms, 100, 600000, "2000",
		"how often the node reports its shards' request rates to etcd (milliseconds)"),
	U64("cluster", "replicas", 0, cluster_replicas, 1, 3, "2",
		"copies of every shard the placer keeps on distinct nodes (primary + replicas; "
		"fewer while the cluster has fewer nodes); the largest of the nodes' counts"),
	ENUM("cluster", "replication", 0, cluster_replication, "sync|async", "sync",
		"sync: a write is acknowledged once durable here and applied (durable, with the "
		"log store) on every in-sync replica, and a GET never shows a write not yet so; "
		"async: at once (a failover loses at most the writes of the replication window)"),
	IPV4("metrics", "ip", 0, metrics_ip, "127.0.0.1",
		"address of the Prometheus endpoint http://ip:port/metrics"),
	U64("metrics", "port", 0, metrics_port, 0, 65535, "9470",
		"TCP port of the Prometheus endpoint (0 = no endpoint)"),
	ENUM("log", "level", F_RUNTIME, log_level, "emerg|alert|crit|err|warning|notice|info|debug",
		"info", "log level of keymap.* log types"),
	STR("log", "file", F_RUNTIME, log_file, "",
		"append log lines to this file (also keymapd's stdout and stderr), reopened on "
		"SIGHUP; empty = stderr"),
	U64("log", "syslog", F_RUNTIME, log_syslog, 0, 1, "0",
		"1 = also send every log line to syslog (facility daemon)"),
};

const size_t km_conf_nb_descs = sizeof(km_conf_descs) / sizeof(km_conf_descs[0]);
