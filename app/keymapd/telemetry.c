/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * Telemetry commands under /keymap/ (DPDK telemetry socket: dpdk-telemetry.py and
 * keymapctl). Callbacks run on the telemetry library's threads: each one hands its work to
 * the control lcore (km_ctl_call) and waits, so that only the control lcore reads
 * keymapd's state or changes it. Refusals are answered {"error": "message"}.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_telemetry.h>

#include <sodium.h>

#include <km_auth.h>
#include <km_util.h>

#include "cluster.h"
#include "control.h"
#include "crew.h"
#include "datapath.h"
#include "keymapd.h"
#include "shift.h"
#include "stats.h"

#define TEL_TIMEOUT_MS     5000
#define RESHARD_TIMEOUT_MS 60000 /* a split or merge copies the shard's entries */
/* How long /keymap/split and /keymap/merge wait for their job: well inside keymapctl's
 * 60 s, so that it gets the "still copying" reply rather than a timeout. */
#define JOB_WAIT_MS   (RESHARD_TIMEOUT_MS - 10000)
#define SHARDS_PAGE   200 /* shards per /keymap/shards reply (16 KB limit) */
#define STATS_WORKERS 12  /* workers with their own column in /keymap/stats */

struct tel_arg {
	const char *params;
	struct rte_tel_data *d;
};

static int
tel_error(struct rte_tel_data *d, const char *msg)
{
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "error", msg);
	return 0;
}

/* Hand fn(arg) to the control lcore and wait. @return 0 (fn ran: its reply, if any, is
 * in d), or 1 with an error reply in d. */
static int
tel_run_arg(int (*fn)(void *), void *arg, struct rte_tel_data *d, unsigned int timeout_ms)
{
	char msg[128];
	int rc = km_ctl_call(fn, arg, timeout_ms);

	if (rc == 0)
		return 0;
	if (rc == -ETIMEDOUT)
		snprintf(msg, sizeof(msg),
			"the control lcore did not take the command within %u ms", timeout_ms);
	else if (rc == -ESHUTDOWN)
		snprintf(msg, sizeof(msg), "keymapd is stopping");
	else
		snprintf(msg, sizeof(msg), "cannot run the command: %s", strerror(-rc));
	tel_error(d, msg);
	return 1;
}

/* Hand fn to the control lcore and wait; a reply in d either way. */
static int
tel_run(int (*fn)(void *), const char *params, struct rte_tel_data *d, unsigned int timeout_ms)
{
	struct tel_arg a = {.params = params == NULL ? "" : params, .d = d};

	tel_run_arg(fn, &a, d, timeout_ms);
	return 0;
}

/* Strict unsigned decimal (lib/util's parser). @return 0 or < 0. */
static int
parse_u64(const char *s, uint64_t *out)
{
	return km_util_parse_u64(s, 0, UINT64_MAX, out);
}

static uint64_t
uptime_s(void)
{
	return (rte_get_timer_cycles() - km_ctl.start_tsc) / rte_get_timer_hz();
}

static struct rte_tel_data *
u64_array(void)
{
	struct rte_tel_data *a = rte_tel_data_alloc();

	if (a != NULL)
		rte_tel_data_start_array(a, RTE_TEL_U64_VAL);
	return a;
}

/* ---- status ---- */

static int
ctl_status(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d, *lc = u64_array(), *port = rte_tel_data_alloc();
	char buf[RTE_ETH_NAME_MAX_LEN], ip[INET_ADDRSTRLEN];
	struct rte_eth_link link;
	uint16_t i;

	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "version", KM_VERSION);
	rte_tel_data_add_dict_u64(d, "pid", (uint64_t)getpid());
	rte_tel_data_add_dict_u64(d, "uptime_s", uptime_s());
	rte_tel_data_add_dict_u64(d, "main_lcore", rte_get_main_lcore());
	if (lc != NULL) {
		for (i = 0; i < km_dp.nb_workers; i++)
			rte_tel_data_add_array_u64(lc, km_dp.workers[i].lcore);
		rte_tel_data_add_dict_container(d, "worker_lcores", lc, 0);
	}
	rte_tel_data_add_dict_u64(d, "workers", km_dp.nb_workers);
	rte_tel_data_add_dict_string(d, "mode", km_ctl.conf.worker_mode);
	if (port != NULL) {
		rte_tel_data_start_dict(port);
		rte_tel_data_add_dict_u64(port, "id", km_dp.port);
		if (rte_eth_dev_get_name_by_port(km_dp.port, buf) == 0)
			rte_tel_data_add_dict_string(port, "name", buf);
		rte_ether_format_addr(buf, sizeof(buf), &km_dp.mac);
		rte_tel_data_add_dict_string(port, "mac", buf);
		inet_ntop(AF_INET, &km_dp.ip, ip, sizeof(ip));
		rte_tel_data_add_dict_string(port, "ip", ip);
		rte_tel_data_add_dict_u64(port, "udp_base", km_dp.udp_base);
		memset(&link, 0, sizeof(link));
		rte_eth_link_get_nowait(km_dp.port, &link);
		rte_tel_data_add_dict_u64(port, "link_up", link.link_status);
		rte_tel_data_add_dict_u64(port, "speed_mbps", link.link_speed);
		rte_tel_data_add_dict_u64(port, "rss", (uint64_t)km_dp.rss);
		rte_tel_data_add_dict_container(d, "port", port, 0);
	}
	rte_tel_data_add_dict_u64(d, "epoch", km_shardmap_epoch(km_map_current));
	rte_tel_data_add_dict_u64(d, "shards", km_shardmap_nb_shards(km_map_current));
	buf[0] = '\0';
	if (km_ctl.conf.metrics_port != 0) {
		inet_ntop(AF_INET, &km_ctl.conf.metrics_ip, ip, sizeof(ip));
		snprintf(buf, sizeof(buf), "%s:%" PRIu64, ip, km_ctl.conf.metrics_port);
	}
	rte_tel_data_add_dict_string(d, "metrics", buf);
	return 0;
}

/* ---- stats ---- */

/*
 * The figures of one part of /keymap/stats into dict t, in the table's order (stats.h):
 * where KM_STATS_WORKER: worker w's counters (w == nb_workers: their sums); KM_STATS_TOTAL:
 * the sums followed by the global figures of "total"; the others: that section.
 */
static void
add_section(struct rte_tel_data *t, const struct km_stats_snap *s, enum km_stats_where where,
	uint16_t w)
{
	const struct km_stats_desc *d;
	size_t i;

	for (i = 0; i < km_stats_table_len; i++) {
		d = &km_stats_table[i];
		if (d->tel == NULL || d->is_double ||
			!(d->where == where ||
				(where == KM_STATS_TOTAL && d->where == KM_STATS_WORKER)))
			continue;
		rte_tel_data_add_dict_u64(t, d->tel, km_stats_u64(s, d, w));
	}
}

/* A dict of section where, added to d as name. */
static void
add_dict(struct rte_tel_data *d, const char *name, const struct km_stats_snap *s,
	enum km_stats_where where, uint16_t w)
{
	struct rte_tel_data *t = rte_tel_data_alloc();

	if (t == NULL)
		return;
	rte_tel_data_start_dict(t);
	if (where == KM_STATS_STORE)
		rte_tel_data_add_dict_string(t, "durability", km_ctl.conf.durability);
	if (where == KM_STATS_PORT) {
		rte_tel_data_add_dict_u64(t, "id", s->port_id);
		rte_tel_data_add_dict_string(t, "name", s->port_name);
	}
	add_section(t, s, where, w);
	rte_tel_data_add_dict_container(d, name, t, 0);
}

static int
ctl_stats(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d;
	struct km_stats_snap s;
	char name[16];
	uint16_t i;

	if (km_stats_take(&s) < 0)
		return tel_error(d, "out of memory");
	rte_tel_data_start_dict(d);
	add_section(d, &s, KM_STATS_TOP, 0);
	add_dict(d, "total", &s, KM_STATS_TOTAL, s.nb_workers);
	add_dict(d, "port", &s, KM_STATS_PORT, 0);
	add_dict(d, "balance", &s, KM_STATS_BALANCE, 0);
	if (s.persistent) {
		add_dict(d, "store", &s, KM_STATS_STORE, 0);
		add_dict(d, "cache", &s, KM_STATS_CACHE, 0);
		add_dict(d, "prefetch", &s, KM_STATS_PREFETCH, 0);
	}
	/* One reply holds at most 16 KB: per-worker columns for the first STATS_WORKERS
	 * workers (totals always cover all of them). */
	rte_tel_data_add_dict_u64(d, "workers_listed", RTE_MIN(s.nb_workers, STATS_WORKERS));
	for (i = 0; i < s.nb_workers && i < STATS_WORKERS; i++) {
		snprintf(name, sizeof(name), "w%u", i);
		add_dict(d, name, &s, KM_STATS_WORKER, i);
	}
	km_stats_release(&s);
	return 0;
}

/* What each figure of /keymap/stats is: "counter" (only grows: a rate makes sense) or
 * "gauge" (a level), by the section of the reply it is in ("top" for the top level; the
 * counters of each "wI" are those of "total" without the control lcore's). From the same
 * table as the figures, so that they cannot differ. Needs no snapshot. */
static int
ctl_stats_info(void *arg)
{
	static const struct {
		const char *name;
		enum km_stats_where where;
	} secs[] = {
		{"top", KM_STATS_TOP},
		{"total", KM_STATS_TOTAL},
		{"port", KM_STATS_PORT},
		{"balance", KM_STATS_BALANCE},
		{"store", KM_STATS_STORE},
		{"cache", KM_STATS_CACHE},
		{"prefetch", KM_STATS_PREFETCH},
	};
	struct tel_arg *a = arg;
	struct rte_tel_data *t;
	const struct km_stats_desc *d;
	size_t k, i;

	rte_tel_data_start_dict(a->d);
	for (k = 0; k < RTE_DIM(secs); k++) {
		t = rte_tel_data_alloc();
		if (t == NULL)
			return tel_error(a->d, "out of memory");
		rte_tel_data_start_dict(t);
		for (i = 0; i < km_stats_table_len; i++) {
			d = &km_stats_table[i];
			if (d->tel == NULL || d->is_double ||
				!(d->where == secs[k].where ||
					(secs[k].where == KM_STATS_TOTAL &&
						d->where == KM_STATS_WORKER)))
				continue;
			rte_tel_data_add_dict_string(
				t, d->tel, d->kind == KM_STAT_COUNTER ? "counter" : "gauge");
		}
		rte_tel_data_add_dict_container(a->d, secs[k].name, t, 0);
	}
	return 0;
}

/* ---- shards ---- */

static int
ctl_shards(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d, *col[6], *tier, *state = NULL;
	uint64_t first = 0, end;
	char msg[96];
	int rc;
	const struct km_ctl_shard *s;
	uint32_t i;
	int k;

	if (a->params[0] != '\0' && parse_u64(a->params, &first) < 0)
		return tel_error(
			d, "usage: /keymap/shards[,FIRST] (FIRST: index of the first shard)");
	/* Fresh figures, on the current map. */
	rc = km_ctl_sample(0);
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "cannot sample the shards: %s", strerror(-rc));
		return tel_error(d, msg);
	}
	if (first > km_ctl.nb_shards)
		first = km_ctl.nb_shards;
	end = RTE_MIN(first + SHARDS_PAGE, (uint64_t)km_ctl.nb_shards);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "epoch", km_shardmap_epoch(km_map_current));
	rte_tel_data_add_dict_u64(d, "nb_shards", km_ctl.nb_shards);
	rte_tel_data_add_dict_u64(d, "first", first);
	rte_tel_data_add_dict_u64(d, "next", end);
	for (k = 0; k < 6; k++)
		col[k] = u64_array();
	tier = rte_tel_data_alloc();
	if (tier != NULL)
		rte_tel_data_start_array(tier, RTE_TEL_STRING_VAL);
	state = rte_tel_data_alloc();
	if (state != NULL)
		rte_tel_data_start_array(state, RTE_TEL_STRING_VAL);
	for (k = 0; k < 6; k++)
		if (col[k] == NULL)
			goto oom;
	if (tier == NULL || state == NULL)
		goto oom;
	for (i = (uint32_t)first; i < end; i++) {
		s = &km_ctl.shards[i];
		rte_tel_data_add_array_u64(col[0], s->id);
		rte_tel_data_add_array_u64(col[1], km_shard_depth(s->id));
		rte_tel_data_add_array_u64(col[2], s->owner);
		rte_tel_data_add_array_u64(col[3], s->keys);
		rte_tel_data_add_array_u64(col[4], s->bytes);
		rte_tel_data_add_array_u64(col[5], (uint64_t)(s->rate + 0.5));
		rte_tel_data_add_array_string(
			tier, km_store_driver(km_ctl.conf.store_driver)->commit == NULL
				      ? km_ctl.conf.store_driver
			      : s->tier == KM_TIER_COLD ? "cold"
							: "hot");
		rte_tel_data_add_array_string(state, s->quarantined ? "quarantined" : "ok");
	}
	rte_tel_data_add_dict_container(d, "id", col[0], 0);
	rte_tel_data_add_dict_container(d, "depth", col[1], 0);
	rte_tel_data_add_dict_container(d, "owner", col[2], 0);
	rte_tel_data_add_dict_container(d, "keys", col[3], 0);
	rte_tel_data_add_dict_container(d, "bytes", col[4], 0);
	rte_tel_data_add_dict_container(d, "rate", col[5], 0);
	rte_tel_data_add_dict_container(d, "tier", tier, 0);
	rte_tel_data_add_dict_container(d, "state", state, 0);
	return 0;
oom:
	for (k = 0; k < 6; k++)
		rte_tel_data_free(col[k]);
	rte_tel_data_free(tier);
	rte_tel_data_free(state);
	return tel_error(d, "out of memory");
}

/* ---- config, set, log_level ---- */

static void
add_value(struct rte_tel_data *t, const char *name, size_t i)
{
	struct km_conf_item it;
	char buf[KM_CONF_STR_MAX];
	uint64_t num = 0;

	km_conf_item(i, &it);
	km_conf_value(&km_ctl.conf, i, &num, buf, sizeof(buf));
	if (it.is_number && !(it.can_auto && num == KM_CONF_AUTO)) {
		rte_tel_data_add_dict_u64(t, name, num);
	} else if (strlen(buf) < RTE_TEL_MAX_STRING_LEN) {
		rte_tel_data_add_dict_string(t, name, buf);
	} else {
		/* Telemetry strings stop at 127 bytes: a longer value (an allow-list) goes
		 * as the array of its comma-separated items, never cut. */
		struct rte_tel_data *a = rte_tel_data_alloc();
		char *save = NULL, *item;

		if (a == NULL)
			return;
		rte_tel_data_start_array(a, RTE_TEL_STRING_VAL);
		for (item = strtok_r(buf, ",", &save); item != NULL;
			item = strtok_r(NULL, ",", &save))
			rte_tel_data_add_array_string(a, item);
		rte_tel_data_add_dict_container(t, name, a, 0);
	}
}

static int
ctl_config(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d, *sec = NULL, *rt;
	struct km_conf_item it;
	const char *cur = "";
	char name[128];
	size_t i, n = km_conf_nb_items();
	int idx;

	rte_tel_data_start_dict(d);
	if (a->params[0] != '\0') {
		idx = km_conf_find(a->params);
		if (idx < 0) {
			snprintf(name, sizeof(name), "unknown tunable '%.64s' (section.key)",
				a->params);
			return tel_error(d, name);
		}
		km_conf_item((size_t)idx, &it);
		rte_tel_data_add_dict_string(d, "section", it.section);
		rte_tel_data_add_dict_string(d, "key", it.key);
		add_value(d, "value", (size_t)idx);
		rte_tel_data_add_dict_u64(d, "runtime", (uint64_t)it.runtime);
		rte_tel_data_add_dict_string(d, "help", it.help);
		return 0;
	}
	rt = rte_tel_data_alloc();
	if (rt != NULL)
		rte_tel_data_start_array(rt, RTE_TEL_STRING_VAL);
	for (i = 0; i < n; i++) {
		km_conf_item(i, &it);
		if (strcmp(cur, it.section) != 0) {
			if (sec != NULL)
				rte_tel_data_add_dict_container(d, cur, sec, 0);
			sec = rte_tel_data_alloc();
			if (sec == NULL)
				return tel_error(d, "out of memory");
			rte_tel_data_start_dict(sec);
			cur = it.section;
		}
		add_value(sec, it.key, i);
		if (it.runtime && rt != NULL) {
			snprintf(name, sizeof(name), "%s.%s", it.section, it.key);
			rte_tel_data_add_array_string(rt, name);
		}
	}
	if (sec != NULL)
		rte_tel_data_add_dict_container(d, cur, sec, 0);
	if (rt != NULL)
		rte_tel_data_add_dict_container(d, "runtime", rt, 0);
	return 0;
}

static int
do_set(struct rte_tel_data *d, const char *assignment)
{
	const char *eq = strchr(assignment, '=');
	char name[128], old[KM_CONF_STR_MAX], now[KM_CONF_STR_MAX], err[512];
	struct km_conf_item it;
	uint64_t num;
	int idx;

	if (eq == NULL || (size_t)(eq - assignment) >= sizeof(name))
		return tel_error(d, "usage: /keymap/set,SECTION.KEY=VALUE");
	memcpy(name, assignment, (size_t)(eq - assignment));
	name[eq - assignment] = '\0';
	idx = km_conf_find(name);
	if (idx >= 0)
		km_conf_value(&km_ctl.conf, (size_t)idx, &num, old, sizeof(old));
	if (km_ctl_set(assignment, err, sizeof(err)) < 0)
		return tel_error(d, err);
	km_conf_item((size_t)idx, &it);
	km_conf_value(&km_ctl.conf, (size_t)idx, &num, now, sizeof(now));
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "section", it.section);
	rte_tel_data_add_dict_string(d, "key", it.key);
	rte_tel_data_add_dict_string(d, "old", old);
	rte_tel_data_add_dict_string(d, "value", now);
	return 0;
}

static int
ctl_set(void *arg)
{
	struct tel_arg *a = arg;

	return do_set(a->d, a->params);
}

static int
ctl_log_level(void *arg)
{
	struct tel_arg *a = arg;
	char buf[96];

	if (a->params[0] != '\0') {
		snprintf(buf, sizeof(buf), "log.level=%.64s", a->params);
		if (do_set(a->d, buf) != 0 || strcmp(km_ctl.conf.log_level, a->params) != 0)
			return 0; /* the error reply is in d */
	}
	rte_tel_data_start_dict(a->d);
	rte_tel_data_add_dict_string(a->d, "level", km_ctl.conf.log_level);
	return 0;
}

/* ---- split, merge, move ---- */

/*
 * Split and merge run as a job (reshard.c): the command starts it on the control lcore,
 * then this thread polls the job until it is over and answers with its outcome (or, past
 * JOB_WAIT_MS, with its progress: it goes on).
 */
struct tel_job {
	struct tel_arg a;
	int merge;
	uint64_t seq;
	struct km_reshard_status st;
};

static int
ctl_job_start(void *arg)
{
	struct tel_job *j = arg;
	char err[256];
	uint64_t id;
	int rc;

	if (parse_u64(j->a.params, &id) < 0)
		return tel_error(j->a.d,
			j->merge ? "usage: /keymap/merge,SHARD_ID (merged with its buddy ID^1)"
				 : "usage: /keymap/split,SHARD_ID");
	rc = j->merge ? km_ctl_merge(id, err, sizeof(err)) : km_ctl_split(id, err, sizeof(err));
	if (rc < 0)
		return tel_error(j->a.d, err);
	j->seq = km_ctl.reshard.seq;
	return 0;
}

static int
ctl_job_poll(void *arg)
{
	struct tel_job *j = arg;

	j->st = km_ctl.reshard;
	return 0;
}

static void
job_reply(struct tel_job *j)
{
	const struct km_reshard_status *st = &j->st;
	struct rte_tel_data *d = j->a.d, *ch;

	if (!st->active && st->rc < 0) {
		tel_error(d, st->msg);
		return;
	}
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "state", st->active ? "copying" : "done");
	rte_tel_data_add_dict_u64(d, "shard", st->id);
	rte_tel_data_add_dict_u64(d, "owner", st->owner);
	ch = u64_array();
	if (ch != NULL) {
		rte_tel_data_add_array_u64(ch, st->id * 2);
		rte_tel_data_add_array_u64(ch, st->id * 2 + 1);
		rte_tel_data_add_dict_container(
			d, st->kind == KM_MIG_SPLIT ? "children" : "merged", ch, 0);
	}
	if (st->active) {
		rte_tel_data_add_dict_u64(d, "copied", st->progress.copied);
		rte_tel_data_add_dict_u64(d, "source_keys", st->progress.src_keys);
		return;
	}
	if (st->kind == KM_MIG_SPLIT) {
		struct rte_tel_data *ow = u64_array();

		if (ow != NULL) {
			rte_tel_data_add_array_u64(ow, st->owner);
			rte_tel_data_add_array_u64(ow, st->owner);
			rte_tel_data_add_dict_container(d, "owners", ow, 0);
		}
	}
	rte_tel_data_add_dict_u64(d, "epoch", st->epoch);
	rte_tel_data_add_dict_u64(d, "keys", st->keys);
	rte_tel_data_add_dict_u64(d, "pause_us", st->pause_us);
	rte_tel_data_add_dict_u64(d, "copy_ms", st->copy_ms);
	rte_tel_data_add_dict_u64(d, "writes_repeated", st->progress.mirrored);
}

static int
tel_job(const char *params, struct rte_tel_data *d, int merge)
{
	struct tel_job j = {.a = {.params = params == NULL ? "" : params, .d = d}, .merge = merge};
	struct timespec t0, now;
	int rc;

	rc = tel_run_arg(ctl_job_start, &j, d, TEL_TIMEOUT_MS);
	if (rc != 0 || j.seq == 0)
		return 0; /* the error reply is in d */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		usleep(2000);
		if (tel_run_arg(ctl_job_poll, &j, d, TEL_TIMEOUT_MS) != 0)
			return 0;
		if (j.st.seq != j.seq || !j.st.active)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 >=
			JOB_WAIT_MS)
			break;
	}
	job_reply(&j);
	return 0;
}

static int
tel_split(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	return tel_job(params, d, 0);
}

static int
tel_merge(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	return tel_job(params, d, 1);
}

/* "ID,REST": the shard id and where the second parameter starts. @return 0 or -1. */
static int
parse_id_rest(const char *params, uint64_t *id, const char **rest)
{
	const char *comma = strchr(params, ',');
	char idbuf[32];

	if (comma == NULL || (size_t)(comma - params) >= sizeof(idbuf))
		return -1;
	memcpy(idbuf, params, (size_t)(comma - params));
	idbuf[comma - params] = '\0';
	*rest = comma + 1;
	return parse_u64(idbuf, id);
}

static int
ctl_move(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d;
	const char *rest;
	char err[256];
	uint64_t id, w;
	uint16_t from;

	if (parse_id_rest(a->params, &id, &rest) < 0 || parse_u64(rest, &w) < 0)
		return tel_error(d, "usage: /keymap/move,SHARD_ID,WORKER");
	if (w >= km_dp.nb_workers) {
		snprintf(err, sizeof(err), "no worker %" PRIu64 " (workers are 0..%u)", w,
			km_dp.nb_workers - 1);
		return tel_error(d, err);
	}
	from = km_shardmap_find(km_map_current, id) == NULL
		       ? 0
		       : km_shard_owner(km_shardmap_find(km_map_current, id));
	if (km_ctl_move(id, (uint16_t)w, err, sizeof(err)) < 0)
		return tel_error(d, err);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "epoch", km_shardmap_epoch(km_map_current));
	rte_tel_data_add_dict_u64(d, "shard", id);
	rte_tel_data_add_dict_u64(d, "from", from);
	rte_tel_data_add_dict_u64(d, "to", w);
	rte_tel_data_add_dict_u64(d, "keys", km_ctl.last_keys);
	rte_tel_data_add_dict_u64(d, "pause_us", km_ctl.last_pause_us);
	/* Where the time in transit went (requests were handed over meanwhile). */
	rte_tel_data_add_dict_u64(d, "old_queued_us", km_ctl.last_move.old_queued_us);
	rte_tel_data_add_dict_u64(d, "old_run_us", km_ctl.last_move.old_run_us);
	rte_tel_data_add_dict_u64(d, "new_queued_us", km_ctl.last_move.new_queued_us);
	rte_tel_data_add_dict_u64(d, "new_run_us", km_ctl.last_move.new_run_us);
	rte_tel_data_add_dict_u64(d, "seen_us", km_ctl.last_move.seen_us);
	rte_tel_data_add_dict_u64(d, "publish_us", km_ctl.last_move.publish_us);
	rte_tel_data_add_dict_u64(d, "dedup_moved", km_ctl.last_move.dedup);
	return 0;
}

/* ---- tier, compact, prefetch ---- */

static int
retier_reply(struct rte_tel_data *d, uint64_t id, const char *what)
{
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "shard", id);
	rte_tel_data_add_dict_string(d, "done", what);
	rte_tel_data_add_dict_u64(d, "keys", km_ctl.last_keys);
	rte_tel_data_add_dict_u64(d, "pause_us", km_ctl.last_pause_us);
	return 0;
}

static int
ctl_tier(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d;
	const char *rest;
	char err[256];
	int tier = -1;
	uint64_t id;

	if (parse_id_rest(a->params, &id, &rest) == 0)
		tier = strcmp(rest, "hot") == 0    ? KM_TIER_HOT
		       : strcmp(rest, "cold") == 0 ? KM_TIER_COLD
						   : -1;
	if (tier < 0)
		return tel_error(d, "usage: /keymap/tier,SHARD_ID,hot|cold");
	if (km_ctl_retier(id, tier, err, sizeof(err)) < 0)
		return tel_error(d, err);
	return retier_reply(d, id, tier == KM_TIER_COLD ? "cold" : "hot");
}

static int
ctl_compact(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d;
	char err[256];
	uint64_t id;

	if (parse_u64(a->params, &id) < 0)
		return tel_error(d, "usage: /keymap/compact,SHARD_ID");
	if (km_ctl_retier(id, -1, err, sizeof(err)) < 0)
		return tel_error(d, err);
	return retier_reply(d, id, "compacted");
}

static int
ctl_accept_loss(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d;
	char err[256];
	uint64_t id;

	if (parse_u64(a->params, &id) < 0)
		return tel_error(d, "usage: /keymap/accept_loss,SHARD_ID");
	if (km_ctl_accept_loss(id, err, sizeof(err)) < 0)
		return tel_error(d, err);
	return retier_reply(d, id, "emptied");
}

static int
ctl_prefetch(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d;
	size_t len = strlen(a->params);
	char err[128];
	int rc;

	if (len == 0)
		return km_telemetry_prefetch_stats(d);
	if (len > KM_KEY_MAX)
		return tel_error(d, "usage: /keymap/prefetch[,KEY (1..250 bytes)]");
	/* Fire and forget: the owner reads the key at its next loop boundary; what it did is
	 * counted in prefetch_started, prefetch_nothing and prefetch_refused (stats). */
	rc = km_ctl_prefetch((const uint8_t *)a->params, (uint16_t)len);
	if (rc < 0) {
		snprintf(err, sizeof(err), "prefetch: %s",
			rc == -EAGAIN ? "no room now, try again" : strerror(-rc));
		return tel_error(d, err);
	}
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "prefetch", "queued");
	return 0;
}

/* ---- client keys ---- */

static int
ctl_keys(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d, *ids = u64_array(), *perm = rte_tel_data_alloc(),
			    *pfx = rte_tel_data_alloc();
	const struct km_auth *t = km_auth_current;
	char buf[4400];
	uint32_t i;

	if (ids == NULL || perm == NULL || pfx == NULL) {
		rte_tel_data_free(ids);
		rte_tel_data_free(perm);
		rte_tel_data_free(pfx);
		return tel_error(d, "out of memory");
	}
	rte_tel_data_start_array(perm, RTE_TEL_STRING_VAL);
	rte_tel_data_start_array(pfx, RTE_TEL_STRING_VAL);
	for (i = 0; t != NULL && i < t->nb; i++) {
		const struct km_auth_key *k = &t->keys[i];
		size_t off = 0;
		unsigned int j;

		rte_tel_data_add_array_u64(ids, k->id);
		rte_tel_data_add_array_string(perm, k->write ? "rw" : "ro");
		buf[0] = '\0';
		for (j = 0; j < k->nb_prefix && off < RTE_TEL_MAX_STRING_LEN; j++)
			off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s",
				j == 0 ? "" : " ", k->prefix[j]);
		/* Telemetry strings stop at 127 bytes. */
		if (off >= RTE_TEL_MAX_STRING_LEN)
			strcpy(buf + RTE_TEL_MAX_STRING_LEN - 4, "...");
		rte_tel_data_add_array_string(pfx, buf);
	}
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "auth", km_ctl.conf.auth);
	rte_tel_data_add_dict_u64(d, "cookies", km_ctl.conf.cookies);
	rte_tel_data_add_dict_string(d, "keys_file",
		strlen(km_ctl.conf.keys_file) < RTE_TEL_MAX_STRING_LEN ? km_ctl.conf.keys_file
								       : "(long path)");
	rte_tel_data_add_dict_container(d, "id", ids, 0);
	rte_tel_data_add_dict_container(d, "perm", perm, 0);
	rte_tel_data_add_dict_container(d, "prefixes", pfx, 0);
	return 0;
}

/* /keymap/key_add,ID,ro|rw[,PREFIX...] (ID 0: the lowest free): the new secret is in the
 * reply, and only there. */
static int
ctl_key_add(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d;
	struct km_auth_key k = {0};
	char line[1200], err[300], hex[2 * KM_MAC_KEY_LEN + 1], *p;
	uint64_t id;
	unsigned int i;
	int rc;

	/* The keys-file parser checks the rest: "ID SECRET PERM PREFIX..." with a dummy
	 * secret, commas as blanks. */
	if ((size_t)snprintf(line, sizeof(line), "%s", a->params) >= sizeof(line))
		return tel_error(d, "key_add: too long");
	p = strchr(line, ',');
	if (p == NULL)
		return tel_error(d, "usage: /keymap/key_add,ID(0 = next free),ro|rw[,PREFIX...]");
	*p++ = '\0';
	if (km_util_parse_u64(line, 0, UINT32_MAX, &id) < 0)
		return tel_error(d, "key_add: the key id must be 0..4294967295 (0: the next free)");
	{
		char full[1300];

		/* Prefixes are comma-separated here: no blank in one, none starting with
		 * '#' (the keys file could not say them). */
		for (i = 0; p[i] != '\0'; i++) {
			if (p[i] == ' ' || p[i] == '\t' ||
				(p[i] == '#' && (i == 0 || p[i - 1] == ',')))
				return tel_error(d,
					"key_add: a prefix may not hold a blank or start "
					"with '#'");
			if (p[i] == ',')
				p[i] = ' ';
		}
		snprintf(full, sizeof(full), "1 %0*d %s", 2 * KM_MAC_KEY_LEN, 0, p);
		rc = km_auth_parse_line(full, &k, err, sizeof(err));
		if (rc != 0)
			return tel_error(d, rc == 1 ? "key_add: no permission given" : err);
	}
	k.id = (uint32_t)id;
	rc = km_guard_key_add(&k, err, sizeof(err));
	for (i = 0; i < k.nb_prefix; i++)
		free(k.prefix[i]);
	if (rc < 0) {
		sodium_memzero(k.secret, sizeof(k.secret));
		return tel_error(d, err);
	}
	for (i = 0; i < KM_MAC_KEY_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", k.secret[i]);
	snprintf(line, sizeof(line), "%u:%s", k.id, hex);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "id", k.id);
	rte_tel_data_add_dict_string(d, "perm", k.write ? "rw" : "ro");
	rte_tel_data_add_dict_string(d, "key", line);
	sodium_memzero(k.secret, sizeof(k.secret));
	sodium_memzero(hex, sizeof(hex));
	sodium_memzero(line, sizeof(line));
	return 0;
}

static int
ctl_key_remove(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d;
	char err[300];
	uint64_t id;

	if (km_util_parse_u64(a->params, 1, UINT32_MAX, &id) < 0)
		return tel_error(d, "usage: /keymap/key_remove,ID (1..4294967295)");
	if (km_guard_key_remove((uint32_t)id, err, sizeof(err)) < 0)
		return tel_error(d, err);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "removed", id);
	return 0;
}

static int
ctl_keys_reload(void *arg)
{
	struct tel_arg *a = arg;
	struct rte_tel_data *d = a->d;
	char err[300];

	if (km_guard_keys_reload(err, sizeof(err)) < 0)
		return tel_error(d, err);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "keys", km_auth_current != NULL ? km_auth_current->nb : 0);
	return 0;
}

/*
 * /keymap/metrics[,OFFSET,ID]: the Prometheus page through telemetry (keymapctl metrics
 * where the HTTP endpoint cannot be reached: another network namespace, no [metrics]
 * port). Without a parameter the page is rendered and kept (one at a time, ID its
 * generation) and its first chunk given; then chunk after chunk from OFFSET (a line
 * boundary) of page ID: a reply has at most TEL_PAGE_CHUNK bytes of text, so that its
 * JSON (newlines and quotes escaped) fits the 16 KB of a telemetry reply. An ID that is
 * not the kept page's: refused (the client starts again).
 */
#define TEL_PAGE_CHUNK 3000

#define TEL_PAGES 4 /* renderings kept at once: readers at the same time */

static struct tel_page {
	char *text;
	size_t len;
	uint64_t id;
} tel_pages[TEL_PAGES];      /* control lcore; page id in slot id % TEL_PAGES */
static uint64_t tel_page_id; /* the last one rendered */

static int
ctl_metrics(void *arg)
{
	struct tel_arg *a = arg;
	uint64_t off = 0, id = 0;
	char chunk[TEL_PAGE_CHUNK + 64], *comma;
	struct tel_page *pg;
	size_t n, k0;

	if (a->params[0] == '\0') {
		pg = &tel_pages[++tel_page_id % TEL_PAGES];
		free(pg->text);
		pg->id = tel_page_id;
		pg->text = km_metrics_render(&pg->len);
		if (pg->text == NULL)
			return tel_error(a->d, "out of memory");
	} else {
		comma = strchr(a->params, ',');
		if (comma == NULL)
			return tel_error(a->d, "usage: /keymap/metrics[,OFFSET,ID]");
		*comma = '\0';
		if (parse_u64(a->params, &off) < 0 || parse_u64(comma + 1, &id) < 0)
			return tel_error(a->d, "usage: /keymap/metrics[,OFFSET,ID]");
		pg = &tel_pages[id % TEL_PAGES];
		if (pg->text == NULL || pg->id != id)
			return tel_error(a->d, "the page changed: start again");
		if (off > pg->len)
			return tel_error(a->d, "offset past the page");
	}
	/* Whole lines, unless one is longer than a chunk. */
	n = pg->len - off < TEL_PAGE_CHUNK ? pg->len - off : TEL_PAGE_CHUNK;
	if (off + n < pg->len) {
		size_t k = n;

		while (k > 0 && pg->text[off + k - 1] != '\n')
			k--;
		if (k > 0)
			n = k;
	}
	/* One string (dict strings stop at 127 bytes): "ID NEXT LENGTH\n" and the chunk. */
	k0 = (size_t)snprintf(chunk, sizeof(chunk), "%" PRIu64 " %" PRIu64 " %zu\n", pg->id,
		(uint64_t)(off + n), pg->len);
	memcpy(chunk + k0, pg->text + off, n);
	chunk[k0 + n] = '\0';
	rte_tel_data_string(a->d, chunk);
	/* Its last chunk given: not kept longer. */
	if (off + n == pg->len) {
		free(pg->text);
		pg->text = NULL;
	}
	return 0;
}

static int
ctl_reload(void *arg)
{
	struct tel_arg *a = arg;
	struct km_reload_result res;
	char err[768];

	if (km_ctl_reload(&res, err, sizeof(err)) < 0)
		return tel_error(a->d, err);
	rte_tel_data_start_dict(a->d);
	rte_tel_data_add_dict_string(a->d, "file", res.path != NULL ? res.path : "");
	rte_tel_data_add_dict_u64(a->d, "changed", res.changed);
	rte_tel_data_add_dict_u64(a->d, "restart", res.restart);
	return 0;
}

/* ---- registration ---- */

#define TEL_CB(name, fn, timeout)                                                          \
	static int tel_##name(const char *cmd, const char *params, struct rte_tel_data *d) \
	{                                                                                  \
		(void)cmd;                                                                 \
		return tel_run(fn, params, d, timeout);                                    \
	}

TEL_CB(status, ctl_status, TEL_TIMEOUT_MS)
TEL_CB(stats, ctl_stats, TEL_TIMEOUT_MS)
TEL_CB(stats_info, ctl_stats_info, TEL_TIMEOUT_MS)
TEL_CB(shards, ctl_shards, TEL_TIMEOUT_MS)
TEL_CB(config, ctl_config, TEL_TIMEOUT_MS)
TEL_CB(set, ctl_set, TEL_TIMEOUT_MS)
TEL_CB(log_level, ctl_log_level, TEL_TIMEOUT_MS)
TEL_CB(move, ctl_move, RESHARD_TIMEOUT_MS)
TEL_CB(tier, ctl_tier, RESHARD_TIMEOUT_MS)
TEL_CB(compact, ctl_compact, RESHARD_TIMEOUT_MS)
TEL_CB(accept_loss, ctl_accept_loss, RESHARD_TIMEOUT_MS)
TEL_CB(prefetch, ctl_prefetch, TEL_TIMEOUT_MS)
TEL_CB(keys, ctl_keys, TEL_TIMEOUT_MS)
TEL_CB(key_add, ctl_key_add, TEL_TIMEOUT_MS)
TEL_CB(key_remove, ctl_key_remove, TEL_TIMEOUT_MS)
TEL_CB(keys_reload, ctl_keys_reload, TEL_TIMEOUT_MS)
TEL_CB(reload, ctl_reload, TEL_TIMEOUT_MS)
TEL_CB(metrics, ctl_metrics, TEL_TIMEOUT_MS)

int
km_telemetry_register(void)
{
	static const struct {
		const char *cmd;
		telemetry_cb fn;
		const char *help;
	} cmds[] = {
		{"/keymap/status", tel_status,
			"Version, uptime, lcores, port, epoch, shard count, metrics address."},
		{"/keymap/stats", tel_stats,
			"Counters per worker and in total, request rate, cycles and latency."},
		{"/keymap/stats_info", tel_stats_info,
			"Whether each figure of /keymap/stats is a counter or a gauge, by "
			"section."},
		{"/keymap/shards", tel_shards,
			"Shards: id, depth, owner, keys, bytes, req/s, tier. Param: first index."},
		{"/keymap/config", tel_config,
			"Every tunable and its value. Param: section.key for one."},
		{"/keymap/set", tel_set, "Change a runtime tunable. Param: section.key=value"},
		{"/keymap/split", tel_split, "Split a shard in two. Param: shard id"},
		{"/keymap/merge", tel_merge, "Merge a shard with its buddy. Param: shard id"},
		{"/keymap/move", tel_move, "Give a shard to another worker. Params: id,worker"},
		{"/keymap/tier", tel_tier,
			"Move a shard to the cold tier or back (log driver). Params: id,hot|cold"},
		{"/keymap/compact", tel_compact,
			"Rewrite a shard's log without its dead records (log driver). Param: id"},
		{"/keymap/accept_loss", tel_accept_loss,
			"Give up a quarantined shard's data: new empty files. Param: id"},
		{"/keymap/prefetch", tel_prefetch,
			"Predictive prefetch's figures; with a key as param, read it into its "
			"worker's cache ahead of requests"},
		{"/keymap/keys", tel_keys,
			"Client keys: id, permission, prefixes (never the secrets)."},
		{"/keymap/key_add", tel_key_add,
			"Add a client key, written to keys_file. Params: ID(0 = next free),ro|rw"
			"[,PREFIX...]; the reply holds the new ID:SECRET"},
		{"/keymap/key_remove", tel_key_remove,
			"Remove a client key from keys_file and from service. Param: ID"},
		{"/keymap/keys_reload", tel_keys_reload, "Read keys_file again."},
		{"/keymap/metrics", tel_metrics,
			"The Prometheus page in chunks. Params: none (a new page), or "
			"OFFSET,ID of the next chunk"},
		{"/keymap/reload", tel_reload,
			"Read the configuration again (as SIGHUP): runtime tunables, keys_file, "
			"log file"},
		{"/keymap/log_level", tel_log_level,
			"Log level of keymap.* (emerg..debug). Param: new level"},
	};
	unsigned int i;
	int rc;

	for (i = 0; i < RTE_DIM(cmds); i++) {
		rc = rte_telemetry_register_cmd(cmds[i].cmd, cmds[i].fn, cmds[i].help);
		if (rc < 0)
			return rc;
	}
	rc = km_telemetry_shift_register(); /* telemetry_shift.c */
	if (rc == 0)
		rc = km_telemetry_cluster_register(); /* cluster.c */
	return rc < 0 ? rc : km_telemetry_crew_register();
}
