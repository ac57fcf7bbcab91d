/* SPDX-License-Identifier: BSD-3-Clause */

#include <malloc.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_pdump.h>
#include <rte_ring.h>
#include <rte_version.h>

#include <systemd/sd-daemon.h>
#include <urcu-qsbr.h>

#include <km_util.h>

#include "cluster.h"
#include "control.h"
#include "datapath.h"
#include "frag.h"
#include "keymapd.h"
#include "prefetch.h"
#include "shift.h"

#define EAL_ARGS_MAX      64
#define HANDOFF_RING_SIZE 4096
#define REC_IDS_MAX       (1 << 20) /* shards a data directory may hold */
#define MISS_IDS_MAX      4096      /* shards whose files may be missing */

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: keymapd [-c FILE] [-o SECTION.KEY=VALUE]... [--echo] [--print-config] "
		"[-- EAL args]\n"
		"  -c, --config FILE      load configuration (INI, ';' comments); without it the\n"
		"                         embedded defaults apply (see --print-config)\n"
		"  -o, --set S.K=V        override one setting, e.g. -o net.ip=198.51.100.2\n"
		"      --echo             benchmark baseline: return every datagram unparsed\n"
		"                         (same as -o workers.mode=echo)\n"
		"      --print-config     print the effective configuration and exit\n"
		"  -h, --help             this text\n"
		"      --version          the version (and DPDK's), then exit\n"
		"EAL arguments after -- replace [eal] args.\n");
}

/* Split [eal] args on blanks (no quoting: EAL arguments have no spaces). */
static int
split_args(char *s, char **argv, int max)
{
	int n = 0;
	char *save = NULL, *tok;

	for (tok = strtok_r(s, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save)) {
		if (n == max)
			return -1;
		argv[n++] = tok;
	}
	return n;
}

static void
on_signal(int sig)
{
	(void)sig;
	atomic_store_explicit(&km_dp.stop, 1, memory_order_relaxed);
	km_ctl_wake(); /* do not wait for the end of its sleep */
}

static void
on_signal_early(int sig)
{
	(void)sig;
	atomic_store_explicit(&km_dp.stop, 1, memory_order_relaxed);
}

/* SIGHUP: reload (control.h), done by the control loop once it runs. */
static void
on_hup(int sig)
{
	(void)sig;
	km_ctl_hup(1);
}

static void
on_hup_early(int sig)
{
	(void)sig;
	km_ctl_hup(0);
}

/*
 * Open the store of shard id on proc: quarantined if its files are missing (miss), or
 * cannot be read or are damaged (the reason logged with the file): the other shards
 * serve. @return 0, or -errno: keymapd cannot start (files of another routing, memory).
 */
static int
shard_open(const struct km_conf *conf, struct km_proc *proc, uint64_t id, const uint64_t *miss,
	int nb_miss)
{
	int i, rc;

	for (i = 0; i < nb_miss; i++)
		if (miss[i] == id)
			return km_proc_shard_quarantine(proc, id, ENOENT);
	rc = km_proc_shard_add(proc, id);
	/* Only what says the files themselves are gone or bad: running out of descriptors,
	 * memory or permissions is keymapd's to fix, not a reason to give up data. */
	if (rc == 0 || km_store_driver(conf->store_driver)->recover == NULL ||
		(rc != -ENOENT && rc != -ENOTDIR && rc != -EISDIR && rc != -EBADMSG && rc != -EIO))
		return rc;
	KM_LOG(ERR,
		"shard %" PRIu64 ": %s/shard-%" PRIu64 ".log (or its segment in %s): %s: "
		"quarantined, its keys answer DAMAGED (docs/operations.md 2.9)",
		id, conf->data_dir, id, conf->cold_dir, strerror(-rc));
	return km_proc_shard_quarantine(proc, id, -rc);
}

static int
workers_init(const struct km_conf *conf, const struct km_shardmap *map, const uint64_t *miss,
	int nb_miss)
{
	struct km_proc_params pp = {
		.value_max = (uint32_t)conf->value_max,
		.dedup_entries = (uint32_t)conf->dedup_entries,
		.store_driver = conf->store_driver,
		.store_initial_keys = (uint32_t)conf->initial_keys,
		.store_hugepages = strcmp(conf->hugepages, "off") == 0       ? KM_HUGEPAGES_OFF
				   : strcmp(conf->hugepages, "hugetlb") == 0 ? KM_HUGEPAGES_HUGETLB
									     : KM_HUGEPAGES_AUTO,
		.dir = conf->data_dir,
		.cold_dir = conf->cold_dir,
		.durability = km_durability_of(conf->durability),
		.route_sep = (uint8_t)conf->route_sep,
		.route_depth = (uint8_t)conf->route_depth,
		.sync_interval_ms = (uint32_t)conf->sync_interval_ms,
		.write_buffer = (uint32_t)conf->write_buffer,
		.dram_max = conf->max_bytes / km_dp.nb_workers,
		.cache_bytes = conf->cache_bytes,
		.pending_max = (uint32_t)conf->pending_max,
		.defer_max = (uint32_t)conf->defer_max,
		.hello = conf->cookies ? &km_hello : NULL, /* drawn by km_guard_init() */
		.reply_max = km_dp.large_room,
	};
	struct km_store_stats st;
	uint64_t t0 = rte_get_timer_cycles(), keys = 0, replayed = 0, skipped = 0, torn = 0;
	unsigned int lcore;
	uint16_t i = 0;
	uint32_t s;
	char name[RTE_RING_NAMESIZE];
	int rc;

	RTE_LCORE_FOREACH_WORKER(lcore)
	{
		struct km_worker *w = &km_dp.workers[i];

		if (conf->pf_lcore != 0 && lcore == conf->pf_lcore)
			continue; /* the predictor's own */

		w->lcore = lcore;
		w->index = i;
		w->queue = i;
		snprintf(name, sizeof(name), "km_to_w%u", i);
		w->to_owner = rte_ring_create(
			name, HANDOFF_RING_SIZE, rte_lcore_to_socket_id(lcore), RING_F_SC_DEQ);
		if (w->to_owner == NULL) {
			KM_LOG(ERR, "worker %u: cannot create ring: %s", i,
				rte_strerror(rte_errno));
			return -ENOMEM;
		}
		w->tune = (struct km_worker_tune){
			.burst = (uint16_t)conf->burst,
			.idle_spin = (uint32_t)conf->idle_spin,
			.idle_sleep_us = (uint32_t)conf->idle_sleep_us,
			.busy_pkts = km_policy_backlog_watermark(
				(uint32_t)conf->busy_watermark, km_dp.nb_rxd),
		};
		rc = km_frag_init(w, conf);
		if (rc < 0)
			return rc;
		pp.worker = i;
		w->disk = km_store_driver(conf->store_driver)->read_start != NULL;
		rc = km_proc_create(&pp, &w->proc);
		if (rc < 0) {
			KM_LOG(ERR, "worker %u: cannot create processor: %s", i, strerror(-rc));
			return rc;
		}
		km_cluster_proc_setup(w->proc);
		/* The initial shards are created before the workers run; afterwards only
		 * the owner touches them. */
		for (s = 0; s < km_shardmap_nb_shards(map); s++) {
			if (km_shard_owner(km_shardmap_shard_at(map, s)) != i)
				continue;
			rc = shard_open(conf, w->proc, km_shard_id(km_shardmap_shard_at(map, s)),
				miss, nb_miss);
			if (rc < 0) {
				KM_LOG(ERR, "worker %u: cannot %s shard %" PRIu64 ": %s", i,
					km_store_driver(conf->store_driver)->recover != NULL
						? "open the files of"
						: "create",
					km_shard_id(km_shardmap_shard_at(map, s)),
					rc == -EPROTO ? "written under another [shards] routing"
						      : strerror(-rc));
				return rc;
			}
			km_store_stats(km_proc_shard_store(
					       w->proc, km_shard_id(km_shardmap_shard_at(map, s))),
				&st);
			if (st.skipped_crc != 0 || st.torn_bytes != 0)
				KM_LOG(WARNING,
					"shard %" PRIu64 ": %" PRIu64
					" damaged record(s) skipped (CRC), "
					"%" PRIu64
					" byte(s) of an incomplete tail dropped; %" PRIu64
					" keys served",
					km_shard_id(km_shardmap_shard_at(map, s)), st.skipped_crc,
					st.torn_bytes, st.keys);
			keys += st.keys;
			replayed += st.replayed;
			skipped += st.skipped_crc;
			torn += st.torn_bytes;
		}
		i++;
	}
	if (km_store_driver(conf->store_driver)->recover != NULL)
		KM_LOG(INFO,
			"store: %" PRIu64 " keys from %" PRIu64 " records in %.3f s (%" PRIu64
			" damaged records skipped, %" PRIu64
			" torn tail bytes dropped), %s durability",
			keys, replayed, (double)(rte_get_timer_cycles() - t0) / rte_get_timer_hz(),
			skipped, torn, conf->durability);
	return 0;
}

/*
 * The shard map a persistent store's files describe: the recovered shards, and new ones
 * for any part of the hash space none of them covers (largest aligned blocks).
 */
static int
map_fill(uint64_t id, const uint64_t *ids, int n, uint64_t *out, uint32_t *nout, uint32_t max)
{
	int i, below = 0;

	for (i = 0; i < n; i++) {
		unsigned int d = 63 - (unsigned int)__builtin_clzll(ids[i]);
		unsigned int di = 63 - (unsigned int)__builtin_clzll(id);

		if (ids[i] == id) {
			below = -1;
			break;
		}
		if (d > di && (ids[i] >> (d - di)) == id)
			below = 1;
	}
	if (below == 0 || below == -1) {
		if (*nout == max)
			return -ENOSPC;
		out[(*nout)++] = id;
		return 0;
	}
	if (map_fill(id * 2, ids, n, out, nout, max) < 0)
		return -ENOSPC;
	return map_fill(id * 2 + 1, ids, n, out, nout, max);
}

static int
map_recovered(const struct km_conf *conf, const struct km_shardmap_params *mp, const uint64_t *ids,
	int n, struct km_shardmap **out)
{
	/* Each shard found adds at most one filler per level above it. */
	uint32_t nb = 0, max = (uint32_t)n * (KM_SHARD_DEPTH_MAX + 1) + 64;
	uint64_t *all = calloc(max, sizeof(*all));
	uint16_t *owners = calloc(max, sizeof(*owners));
	uint32_t i;
	int rc = -ENOMEM;

	if (all != NULL && owners != NULL) {
		rc = map_fill(1, ids, n, all, &nb, max);
		for (i = 0; i < nb; i++)
			owners[i] = KM_OWNER_JUMP;
		if (rc == 0)
			rc = km_shardmap_from_list(1, mp->nb_workers, mp->udp_port_base,
				(uint8_t)conf->route_sep, (uint8_t)conf->route_depth, all, owners,
				nb, out);
		if (rc == 0 && nb != (uint32_t)n)
			KM_LOG(NOTICE,
				"store: %u shard(s) recovered, %u new to cover the key space", n,
				nb - (uint32_t)n);
	}
	free(all);
	free(owners);
	return rc;
}

static void
workers_fini(void)
{
	uint16_t i;

	if (km_dp.workers == NULL)
		return;
	for (i = 0; i < km_dp.nb_workers; i++) {
		struct km_worker *w = &km_dp.workers[i];
		struct rte_mbuf *m[32];
		unsigned int n;

		if (w->to_owner != NULL) {
			while ((n = rte_ring_dequeue_burst(
					w->to_owner, (void **)m, RTE_DIM(m), NULL)) != 0) {
				km_shift_drop(m, n); /* moves riding in them */
				rte_pktmbuf_free_bulk(m, n);
			}
			rte_ring_free(w->to_owner);
		}
		km_proc_destroy(w->proc);
	}
	/* After every ring is drained: a worker's large buffers may wait in another's. */
	for (i = 0; i < km_dp.nb_workers; i++)
		km_frag_fini(&km_dp.workers[i]);
	rte_free(km_dp.workers);
	km_dp.workers = NULL;
}

/*
 * What start-up built, in the order it is built; shutdown() releases whatever exists.
 * Used by the main thread only.
 */
struct boot {
	struct km_conf conf;
	uint64_t *rec_ids; /* shards found in the data directory (nb_rec of them) */
	int nb_rec;
	uint64_t *miss_ids; /* shards whose files are missing (nb_miss of them) */
	int nb_miss;
	struct rte_mempool *pool;
	struct km_shardmap *map; /* until published */
	int port_ok;
	int pdump_ok;
	struct km_port_caps caps;
};

/* Options, then defaults < file < -o overrides, whatever their order on the command line.
 * @return -1 to go on, else the exit status. */
static int
load_config(int argc, char **argv, struct km_conf *conf)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"set", required_argument, NULL, 'o'},
		{"print-config", no_argument, NULL, 'P'},
		{"echo", no_argument, NULL, 'E'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static char echo_set[] = "workers.mode=echo";
	const char *conf_path = NULL;
	int opt, i, nb_sets = 0, print = 0, ret = -1;
	char **sets, err[512];

	km_conf_defaults(conf);
	sets = calloc((size_t)argc, sizeof(*sets));
	if (sets == NULL)
		return 1;
	while (ret < 0 && (opt = getopt_long(argc, argv, "c:o:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			conf_path = optarg;
			break;
		case 'o':
			sets[nb_sets++] = optarg;
			break;
		case 'P':
			print = 1;
			break;
		case 'E':
			sets[nb_sets++] = echo_set;
			break;
		case 'h':
			usage(stdout);
			ret = 0;
			break;
		default:
			usage(stderr);
			ret = 1;
			break;
		}
	}
	if (ret < 0 && conf_path != NULL && km_conf_load(conf, conf_path, err, sizeof(err)) < 0) {
		fprintf(stderr, "keymapd: config: %s\n", err);
		ret = 1;
	}
	for (i = 0; ret < 0 && i < nb_sets; i++)
		if (km_conf_set(conf, sets[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "keymapd: -o %s\n", err);
			ret = 1;
		}
	if (ret < 0 && print) {
		km_conf_print(conf, stdout);
		ret = 0;
	}
	if (ret < 0) /* a reload reads the same again: the strings stay */
		km_ctl_reload_source(conf_path, sets, nb_sets, optind < argc, conf->eal_args);
	else
		free(sets);
	return ret;
}

/*
 * Shards the manifest lists and no file covers (deleted, lost): they stay in the map,
 * quarantined (their keys answer DAMAGED), instead of coming back empty. They go to
 * b->miss_ids and to b->rec_ids. @return 0 or -1 after saying why.
 */
static int
missing_files(struct boot *b, const struct km_store_ops *drv, const struct km_store_params *sp)
{
	int i, n;

	if (drv->missing == NULL)
		return 0;
	b->miss_ids = calloc(MISS_IDS_MAX, sizeof(*b->miss_ids));
	if (b->miss_ids == NULL)
		return -1;
	n = drv->missing(sp, b->rec_ids, b->nb_rec, b->miss_ids, MISS_IDS_MAX);
	if (n == -EBADMSG) {
		KM_LOG(WARNING,
			"%s/MANIFEST is damaged: missing shard files cannot be told; it is "
			"written anew",
			sp->dir);
		return 0;
	}
	if (n < 0 || n > MISS_IDS_MAX || b->nb_rec + n > REC_IDS_MAX) {
		KM_LOG(ERR, "%s/MANIFEST: %s", sp->dir,
			n < 0 ? strerror(-n) : "too many missing shards");
		return -1;
	}
	for (i = 0; i < n; i++) {
		KM_LOG(ERR,
			"shard %" PRIu64 ": its files are missing from %s (the manifest lists "
			"it): quarantined, its keys answer DAMAGED (docs/operations.md 2.9)",
			b->miss_ids[i], sp->dir);
		b->rec_ids[b->nb_rec++] = b->miss_ids[i];
	}
	b->nb_miss = n;
	return 0;
}

/* A data directory keymapd cannot use is an error before anything starts: the shards it
 * holds go to b->rec_ids. @return 0 or -1 after saying why. */
/* As many file descriptors as allowed: every shard of the log store holds its log (and a
 * cold one its segment) open. */
static void
raise_nofile(void)
{
	struct rlimit r;

	if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_NOFILE, &r);
	}
}

static int
recover_dir(struct boot *b)
{
	const struct km_conf *conf = &b->conf;
	struct km_store_params sp = {
		.dir = conf->data_dir,
		.cold_dir = conf->cold_dir,
		.route_sep = (uint8_t)conf->route_sep,
		.route_depth = (uint8_t)conf->route_depth,
	};
	const struct km_store_ops *drv = km_store_driver(conf->store_driver);

	if (drv->recover == NULL)
		return 0;
	raise_nofile();
	b->rec_ids = calloc(REC_IDS_MAX, sizeof(*b->rec_ids));
	b->nb_rec = b->rec_ids == NULL ? -ENOMEM : drv->recover(&sp, b->rec_ids, REC_IDS_MAX);
	if (b->nb_rec < 0) {
		KM_LOG(ERR, "[store] dir %s / cold_dir %s: %s", conf->data_dir, conf->cold_dir,
			b->nb_rec == -EPROTO ? "files written under another [shards] route_sep/"
					       "route_depth"
					     : strerror(-b->nb_rec));
		return -1;
	}
	if (b->nb_rec > REC_IDS_MAX) {
		KM_LOG(ERR, "[store] dir %s: more than %d shards", conf->data_dir, REC_IDS_MAX);
		return -1;
	}
	return missing_files(b, drv, &sp);
}

/* EAL's argv: what follows "--", else [eal] args. @return its argc, or -1 after saying
 * why. */
static int
eal_args(int argc, char **argv, int first, struct km_conf *conf, char **eal_argv)
{
	int i, eal_argc;

	eal_argv[0] = argv[0];
	if (first < argc) {
		/* getopt stops at "--": the rest are EAL arguments. */
		if (argc - first > EAL_ARGS_MAX) {
			KM_LOG(ERR, "too many EAL arguments");
			return -1;
		}
		for (i = first; i < argc; i++)
			eal_argv[1 + i - first] = argv[i];
		eal_argc = 1 + argc - first;
	} else {
		eal_argc = split_args(conf->eal_args, eal_argv + 1, EAL_ARGS_MAX);
		if (eal_argc < 0) {
			KM_LOG(ERR, "[eal] args: too many arguments");
			return -1;
		}
		eal_argc++;
	}
	eal_argv[eal_argc] = NULL;
	return eal_argc;
}

/* eal_argv[1..] as one line, in out (cut with " ..." when it does not fit). */
static void
join_args(int eal_argc, char **eal_argv, char *out, size_t len)
{
	size_t n = 0;
	int i;

	out[0] = '\0';
	for (i = 1; i < eal_argc && n < len; i++)
		n += (size_t)snprintf(out + n, len - n, "%s%s", i == 1 ? "" : " ", eal_argv[i]);
	if (n >= len && len > 5)
		memcpy(out + len - 5, " ...", 5);
}

/*
 * Whether another DPDK primary process runs with the file prefix of eal_argv: it holds a
 * write lock on <runtime dir>/<prefix>/config (EAL takes it at start). Said here, with its
 * pid, rather than as EAL's "Cannot init config". @return 1 taken (said), else 0.
 */
static int
prefix_taken(int eal_argc, char **eal_argv)
{
	const char *prefix = "rte";
	struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	char path[512];
	int i, fd, taken = 0;

	for (i = 1; i < eal_argc; i++) {
		if (strcmp(eal_argv[i], "--file-prefix") == 0 && i + 1 < eal_argc)
			prefix = eal_argv[++i];
		else if (strncmp(eal_argv[i], "--file-prefix=", 14) == 0)
			prefix = eal_argv[i] + 14;
	}
	snprintf(path, sizeof(path), "%s/dpdk/%s/config", km_dpdk_runtime_base(), prefix);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (fcntl(fd, F_GETLK, &lk) == 0 && lk.l_type != F_UNLCK) {
		KM_LOG(ERR,
			"another DPDK process (pid %ld) runs with --file-prefix %s: stop it, or "
			"give this one another prefix",
			(long)lk.l_pid, prefix);
		taken = 1;
	}
	close(fd);
	return taken;
}

/* EAL and the logs. @return 0 or -1 after saying why. */
static int
eal_start(int eal_argc, char **eal_argv)
{
	sigset_t rx_sigs;

	/* Drivers that signal received packets (net_tap: SIGIO or a real-time signal per
	 * packet) must interrupt the polling workers, not the control lcore and the telemetry
	 * threads: block those signals here, before EAL creates its threads (they inherit
	 * the mask); the workers unblock them. */
	if (prefix_taken(eal_argc, eal_argv))
		return -1;
	km_rx_signals(&rx_sigs);
	pthread_sigmask(SIG_BLOCK, &rx_sigs, NULL);
	if (rte_eal_init(eal_argc, eal_argv) < 0) {
		/* Some failures leave rte_errno 0: EAL's own messages above say why. */
		if (rte_errno != 0)
			KM_LOG(ERR, "EAL init failed: %s", rte_strerror(rte_errno));
		else
			KM_LOG(ERR, "EAL init failed (EAL's messages above say why)");
		return -1;
	}
	return 0;
}

/* The data path's constants (km_dp), the mbuf pool and the port. @return 0 or -1 after
 * saying why. */
static int
port_start(struct boot *b)
{
	const struct km_conf *conf = &b->conf;
	unsigned int nb_workers = rte_lcore_count() - 1;

	if (conf->pf_lcore != 0) {
		if (conf->pf_lcore >= RTE_MAX_LCORE ||
			!rte_lcore_is_enabled((unsigned int)conf->pf_lcore) ||
			conf->pf_lcore == rte_get_main_lcore()) {
			KM_LOG(ERR,
				"[prefetch] lcore %" PRIu64
				": not one of the EAL lcores besides the main lcore (-l/--lcores)",
				conf->pf_lcore);
			return -1;
		}
		nb_workers--;
	}
	if (nb_workers == 0 || nb_workers > KM_WORKERS_MAX) {
		KM_LOG(ERR,
			"need 1..%u worker lcores besides the main lcore (and the predictor's), "
			"have %u",
			KM_WORKERS_MAX, nb_workers);
		return -1;
	}
	if (!rte_eth_dev_is_valid_port((uint16_t)conf->port_id)) {
		KM_LOG(ERR,
			"[net] port %" PRIu64 ": no such port (%u ports available; give a "
			"--vdev or a PCI device in [eal] args)",
			conf->port_id, rte_eth_dev_count_avail());
		return -1;
	}
	km_dp.nb_workers = (uint16_t)nb_workers;
	km_dp.port = (uint16_t)conf->port_id;
	km_dp.ip = conf->ip;
	km_dp.udp_base = (uint16_t)conf->udp_port;
	km_dp.echo = strcmp(conf->worker_mode, "echo") == 0;
	rte_eth_macaddr_get(km_dp.port, &km_dp.mac);

	if (km_store_driver(conf->store_driver)->read_start != NULL &&
		conf->defer_max * nb_workers > conf->mbufs / 2) {
		KM_LOG(ERR,
			"[store] defer_max = %" PRIu64
			" x %u workers: requests waiting for the disk "
			"could hold more than half of [net] mbufs = %" PRIu64
			" (lower defer_max or raise mbufs)",
			conf->defer_max, nb_workers, conf->mbufs);
		return -1;
	}
	/* Fragments waiting in the reassembly tables hold RX mbufs: a flood of fragments that
	 * never complete must leave the port most of its pool. */
	if (conf->frag_max * RTE_LIBRTE_IP_FRAG_MAX_FRAG * nb_workers > conf->mbufs / 4) {
		KM_LOG(ERR,
			"[net] frag_max = %" PRIu64 " x %u fragments x %u workers: fragments "
			"waiting for reassembly could hold more than a quarter of [net] mbufs = "
			"%" PRIu64 " (lower frag_max or raise mbufs)",
			conf->frag_max, RTE_LIBRTE_IP_FRAG_MAX_FRAG, nb_workers, conf->mbufs);
		return -1;
	}
	b->pool = rte_pktmbuf_pool_create("km_mbufs", (unsigned int)conf->mbufs, 256, 0,
		RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	if (b->pool == NULL) {
		KM_LOG(ERR, "cannot create %" PRIu64 " mbufs: %s (raise -m in [eal] args)",
			conf->mbufs, rte_strerror(rte_errno));
		return -1;
	}
	if (km_port_init(km_dp.port, km_dp.nb_workers, conf, b->pool, &b->caps) != 0)
		return -1;
	b->port_ok = 1;
	km_dp.tx_cksum_offload = b->caps.tx_cksum_offload;
	km_dp.tx_multi_seg = b->caps.tx_multi_seg;
	km_dp.rss = b->caps.rss;
	km_dp.nb_rxd = b->caps.nb_rxd;
	km_dp.rx_desc_status = b->caps.rx_desc_status;
	if (rte_eth_dev_get_mtu(km_dp.port, &km_dp.mtu) != 0 || km_dp.mtu < RTE_ETHER_MIN_MTU)
		km_dp.mtu = RTE_ETHER_MTU;
	km_dp.large_room = km_frag_room(conf->value_max, km_dp.mtu);
	km_dp.frag_cycles = rte_get_tsc_hz() / 1000 * conf->frag_timeout_ms;
	KM_LOG(INFO,
		"port %u: MTU %u; fragments: %" PRIu64 " datagrams per worker, %" PRIu64
		" ms; %" PRIu64 " large buffers of %u bytes per worker",
		km_dp.port, km_dp.mtu, conf->frag_max, conf->frag_timeout_ms, conf->large_bufs,
		km_dp.large_room);
	return 0;
}

/* The shard map (fresh, or the recovered shards'), the workers, and the map published.
 * @return 0 or -1 after saying why. */
static int
workers_start(struct boot *b)
{
	const struct km_conf *conf = &b->conf;
	struct km_shardmap_params mp = {
		.nb_shards = (uint32_t)conf->shard_count,
		.nb_workers = km_dp.nb_workers,
		.udp_port_base = km_dp.udp_base,
		.route_sep = (uint8_t)conf->route_sep,
		.route_depth = (uint8_t)conf->route_depth,
	};
	int rc;

	if (km_cluster_join(conf, km_dp.nb_workers, &b->map) < 0)
		return -1;
	if (b->map != NULL)
		rc = 0; /* a cluster node: the placer's map, the files of its shards opened */
	else
		rc = b->nb_rec > 0 ? map_recovered(conf, &mp, b->rec_ids, b->nb_rec, &b->map)
				   : km_shardmap_create(&mp, &b->map);
	if (rc < 0) {
		KM_LOG(ERR, "cannot create the shard map: %s", strerror(-rc));
		return -1;
	}
	km_dp.workers = rte_zmalloc(
		"km_workers", sizeof(*km_dp.workers) * km_dp.nb_workers, RTE_CACHE_LINE_SIZE);
	if (km_dp.workers == NULL || workers_init(conf, b->map, b->miss_ids, b->nb_miss) != 0)
		return -1;
	km_control_manifest_init(conf);
	km_control_publish_map(b->map);
	b->map = NULL; /* published: freed at shutdown through km_map_current */
	return 0;
}

/* The allow-list, the control plane, telemetry, packet capture and metrics.
 * @return 0 or -1 after saying why. */
static int
control_start(struct boot *b)
{
	const struct km_conf *conf = &b->conf;
	char err[512];
	int rc;

	if (km_ctl_publish_allow(conf->allow, err, sizeof(err)) < 0) {
		KM_LOG(ERR, "[security] allow: %s", err);
		return -1;
	}
	if (km_guard_init(conf, err, sizeof(err)) < 0) {
		KM_LOG(ERR, "[security] %s", err);
		return -1;
	}
	rc = km_ctl_init(conf);
	if (rc < 0) {
		KM_LOG(ERR, "cannot start the control plane: %s", strerror(-rc));
		return -1;
	}
	km_lat_init(); /* the latency buckets' bounds in TSC cycles, before the workers run */
	rc = km_shift_init();
	if (rc < 0) {
		KM_LOG(ERR, "cannot register the hand-off mbuf field: %s", strerror(-rc));
		return -1;
	}
	rc = km_telemetry_register();
	if (rc < 0) {
		KM_LOG(ERR, "cannot register telemetry commands: %s", strerror(-rc));
		return -1;
	}
	/* Packet capture with dpdk-dumpcap (secondary process: hugepage deployments only). */
	rc = rte_pdump_init();
	if (rc < 0)
		KM_LOG(WARNING, "packet capture unavailable: rte_pdump_init: %s",
			rte_strerror(rte_errno));
	else
		b->pdump_ok = 1;
	if (conf->metrics_port != 0 &&
		km_metrics_start(conf->metrics_ip, (uint16_t)conf->metrics_port, err, sizeof(err)) <
			0) {
		KM_LOG(ERR, "[metrics]: %s", err);
		return -1;
	}
	return 0;
}

/* The counters at exit, a log line each (their own level and type, whatever was logged
 * last). */
static void
log_counters(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (f == NULL)
		return;
	km_control_print_stats(f, 1);
	fclose(f);
	km_log_text(KM_LOG_MAIN, RTE_LOG_NOTICE, buf);
	free(buf);
}

/* Launch the workers, run the control loop until SIGINT/SIGTERM, wait for the workers. */
static void
serve(const struct boot *b)
{
	char ipbuf[INET_ADDRSTRLEN];
	int i;

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_hup);
	for (i = 0; i < km_dp.nb_workers; i++)
		rte_eal_remote_launch(km_worker_main, &km_dp.workers[i], km_dp.workers[i].lcore);
	if (b->conf.pf_lcore != 0)
		rte_eal_remote_launch(km_pf_lcore_main, NULL, (unsigned int)b->conf.pf_lcore);

	inet_ntop(AF_INET, &b->conf.ip, ipbuf, sizeof(ipbuf));
	KM_LOG(NOTICE,
		"ready: %s udp %u-%u, port %u, %u workers, %u shards, epoch %u, rss %s, "
		"checksums %s, mode %s",
		ipbuf, km_dp.udp_base, km_dp.udp_base + km_dp.nb_workers - 1, km_dp.port,
		km_dp.nb_workers, km_shardmap_nb_shards(km_map_current),
		km_shardmap_epoch(km_map_current), b->caps.rss ? "on" : "off",
		km_dp.tx_cksum_offload ? "offloaded" : "software", b->conf.worker_mode);
	km_notify("READY=1");
	sd_notifyf(0, "STATUS=serving %s udp %u-%u, %u workers", ipbuf, km_dp.udp_base,
		km_dp.udp_base + km_dp.nb_workers - 1, km_dp.nb_workers);

	km_ctl_loop();

	km_notify("STOPPING=1");
	KM_LOG(NOTICE, "stopping");
	rte_eal_mp_wait_lcore();
	log_counters();
}

/* Stop and free whatever start-up built (after EAL init). */
static void
shutdown_all(struct boot *b)
{
	km_cluster_leave();
	if (km_dp.workers != NULL)
		atomic_store_explicit(&km_dp.stop, 1, memory_order_relaxed);
	rte_eal_mp_wait_lcore();
	/* Requests still queued are refused first; then no metrics request waits on them. */
	km_ctl_fini();
	km_metrics_stop();
	if (b->pdump_ok)
		rte_pdump_uninit();
	if (b->port_ok)
		km_port_fini(km_dp.port);
	workers_fini();
	/* No worker runs any more: no reader can hold the map. */
	km_shardmap_free(km_map_current);
	km_map_current = NULL;
	km_shardmap_free(b->map);
	km_allow_free(km_allow_current);
	km_allow_current = NULL;
	km_guard_fini();
	rte_mempool_free(b->pool);
	rte_eal_cleanup();
}

int
main(int argc, char **argv)
{
	char *eal_argv[EAL_ARGS_MAX + 1], err[512], eal_eff[KM_CONF_STR_MAX];
	struct boot b = {.nb_rec = 0};
	int eal_argc, ret = 1;
	/* First: a SIGHUP (a log rotation) during a long start-up must not end keymapd; the
	 * reload it asks for runs once the control loop does. */
	signal(SIGHUP, on_hup_early);
	if (km_version_opt(argc, argv, "keymapd", rte_version()))
		return 0;

	/*
	 * No fastbins: a store freed on the control lcore (a split's or merge's source, a
	 * rewritten shard) returns its entries to the arena of the worker that allocated
	 * them; in fastbins they would wait there for that worker's next large allocation,
	 * which would then spend hundreds of milliseconds consolidating a million of them.
	 * Without, each free coalesces at once (per-thread caches still serve the hot path).
	 */
	mallopt(M_MXFAST, 0);
	ret = load_config(argc, argv, &b.conf);
	if (ret >= 0)
		return ret;
	ret = 1;
	/* From here on every message is a log line (log.c), in one stream. */
	if (km_log_init(b.conf.log_level) < 0)
		fprintf(stderr, "keymapd: log lines without timestamps: cannot set up the "
				"log stream\n");
	if (km_log_configure(b.conf.log_file, (int)b.conf.log_syslog, err, sizeof(err)) < 0) {
		fprintf(stderr, "keymapd: %s\n", err);
		return 1;
	}
	if (recover_dir(&b) < 0)
		goto out;
	/* Until serve() takes over: a stop while a cluster node waits for its first map. */
	signal(SIGINT, on_signal_early);
	signal(SIGTERM, on_signal_early);
	eal_argc = eal_args(argc, argv, optind, &b.conf, eal_argv);
	if (eal_argc < 0 || km_veth_setup(b.conf.veth, eal_argc, eal_argv) < 0)
		goto out;
	/* What keymapctl config eal.args shows: the arguments in effect (EAL permutes
	 * eal_argv, whose strings may lie in [eal] args: taken before, set after). */
	join_args(eal_argc, eal_argv, eal_eff, sizeof(eal_eff));
	if (eal_start(eal_argc, eal_argv) < 0)
		goto out;
	memcpy(b.conf.eal_args, eal_eff, sizeof(b.conf.eal_args));
	if (port_start(&b) == 0 && workers_start(&b) == 0 && control_start(&b) == 0) {
		serve(&b);
		ret = 0;
	}
	shutdown_all(&b);
out:
	km_veth_cleanup(); /* after the port is closed */
	free(b.rec_ids);
	free(b.miss_ids);
	return ret;
}
