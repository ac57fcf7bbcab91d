/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymap-placer: the placement leader of a keymap cluster (docs/cluster.md).
 *
 * Every placer campaigns in the election P/election with a lease that a thread of its own
 * keeps alive at a third of the TTL. A standby waits in the campaign (a second at a time,
 * so that it notices a signal) and writes nothing else. The leader runs a round
 * (placer_round.c) every --interval-ms and whenever a key under P/members/, P/drain/,
 * P/load/, P/moves/ or P/map/current changes (one watch on P/ from the revision it read;
 * after a compaction it reads everything again). A leader whose lease is gone (expired,
 * revoked, or etcd unreachable for a whole TTL) or whose leader key vanished steps down
 * and campaigns again with a new lease. SIGTERM or SIGINT: resign, revoke the lease,
 * exit 0.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <km_util.h>

#include "placer.h"

static atomic_int stop; /* signal handler: w; every thread: r */

/*
 * The lease, shared with the keepalive thread. lease: main writes (a new lease), the
 * thread reads. lost: the thread writes the id of a lease it found gone, main reads it;
 * main never reuses an id the thread reported (etcd does not reissue lease ids).
 */
static _Atomic int64_t lease;
static _Atomic int64_t lost;

static struct placer_opts opts;

static void
on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop, 1);
}

static void
sleep_ms(unsigned int ms)
{
	while (ms > 0 && !atomic_load(&stop)) {
		unsigned int s = ms < 100 ? ms : 100;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)s * 1000000};

		nanosleep(&ts, NULL);
		ms -= s;
	}
}

/* Log an etcd error at most every 5 s per kind (etcd down is one event, not a flood). */
static void
log_etcd(uint64_t *last_ns, const char *what, const struct km_etcd *e)
{
	uint64_t now = km_util_now_ns();

	if (*last_ns != 0 && now - *last_ns < 5000000000ull)
		return;
	*last_ns = now;
	placer_log(PLACER_ERR, "%s: %s", what, km_etcd_errmsg(e));
}

/*
 * The keepalive thread: renews the lease every third of the TTL on its own handle. A
 * lease etcd says is gone, or one it could not renew for a whole TTL, is reported lost.
 */
static void *
keepalive_main(void *arg)
{
	struct km_etcd *e = arg;
	uint64_t last_ok = km_util_now_ns(), last_log = 0;
	int64_t cur = 0;

	while (!atomic_load(&stop)) {
		int64_t id = atomic_load(&lease), ttl = 0;
		uint64_t now;
		int rc;

		sleep_ms(opts.ttl_s * 1000 / 3);
		if (atomic_load(&stop))
			break;
		now = km_util_now_ns();
		if (id == 0 || id == atomic_load(&lost))
			continue;
		if (id != cur) {
			cur = id;
			last_ok = now;
		}
		rc = km_etcd_lease_keepalive(e, id, &ttl);
		if (rc == 0 && ttl > 0) {
			last_ok = km_util_now_ns();
			continue;
		}
		if (rc == -ENOENT || rc == 0) {
			placer_log(PLACER_WARNING, "lease %" PRIx64 " expired", (uint64_t)id);
			atomic_store(&lost, id);
		} else if (now - last_ok >= (uint64_t)opts.ttl_s * 1000000000ull) {
			placer_log(PLACER_WARNING,
				"lease %" PRIx64 " not renewed for %u s (%s): taken as lost",
				(uint64_t)id, opts.ttl_s, km_etcd_errmsg(e));
			atomic_store(&lost, id);
		} else {
			log_etcd(&last_log, "lease keepalive", e);
		}
	}
	return NULL;
}

/* The state of the main loop. */
struct run {
	struct km_etcd *e;
	struct km_etcd_leader lead;
	int leading;
	struct km_etcd_watch *w;
	struct placer_ctx ctx;
	char election[PLACER_KEY_MAX];
	char value[256]; /* the leader's value: {"id", "pid", "host"} */
	uint64_t log_ns[4];
};

static void
step_down(struct run *r, const char *why)
{
	km_etcd_watch_close(r->w);
	r->w = NULL;
	if (r->leading)
		placer_log(PLACER_WARNING, "%s no longer leads cluster %s: %s", opts.id,
			opts.cluster, why);
	r->leading = 0;
}

/* A new lease when there is none or the thread reported it lost. @return 0 or -errno. */
static int
lease_ensure(struct run *r)
{
	int64_t id = atomic_load(&lease), granted = 0;
	int rc;

	if (id != 0 && id != atomic_load(&lost))
		return 0;
	if (id != 0) {
		step_down(r, "its lease is gone");
		/* Taken as lost after a TTL without etcd: make sure its keys go now. */
		(void)km_etcd_lease_revoke(r->e, id);
	}
	rc = km_etcd_lease_grant(r->e, opts.ttl_s, &id, &granted);
	if (rc != 0) {
		log_etcd(&r->log_ns[0], "cannot grant a lease", r->e);
		return rc;
	}
	atomic_store(&lease, id);
	placer_log(PLACER_INFO, "lease %" PRIx64 " granted (%" PRId64 " s)", (uint64_t)id, granted);
	return 0;
}

/* Wait in the election up to timeout_ms. @return 0 (leads), -ETIMEDOUT, or -errno. */
static int
campaign(struct run *r, unsigned int timeout_ms)
{
	int rc;

	rc = km_etcd_campaign(r->e, r->election, strlen(r->election), atomic_load(&lease), r->value,
		strlen(r->value), timeout_ms, &r->lead);
	if (rc == 0) {
		r->leading = 1;
		r->ctx.nb_seen = 0; /* move ages count from this leadership */
		r->ctx.nb_cool = 0;
		placer_log(PLACER_NOTICE, "%s leads cluster %s", opts.id, opts.cluster);
		return 0;
	}
	if (rc == -ENOENT) {
		/* the lease is gone: a new one next time */
		atomic_store(&lost, atomic_load(&lease));
	} else if (rc != -ETIMEDOUT && rc != -EAGAIN) {
		log_etcd(&r->log_ns[1], "campaign", r->e);
	}
	return rc;
}

/*
 * As the leader, wait until the next round is due: interval_ms, or sooner when a relevant
 * key changes. Returns early on a signal or a lost lease.
 */
static void
wait_change(struct run *r)
{
	uint64_t end = km_util_now_ns() + (uint64_t)opts.interval_ms * 1000000u;
	char key[PLACER_KEY_MAX];
	int rc;

	if (r->w == NULL && r->ctx.snap_rev > 0) {
		snprintf(key, sizeof(key), "%s", r->ctx.prefix);
		rc = km_etcd_watch_open(
			r->e, key, strlen(key), KM_ETCD_PREFIX, r->ctx.snap_rev + 1, &r->w);
		if (rc != 0) {
			r->w = NULL;
			log_etcd(&r->log_ns[2], "watch", r->e);
		}
	}
	while (!atomic_load(&stop) && atomic_load(&lease) != atomic_load(&lost)) {
		uint64_t now = km_util_now_ns();
		struct km_etcd_kvs *ev = NULL;
		int ms, i;

		if (now >= end)
			return;
		ms = (int)((end - now) / 1000000u);
		ms = ms > 200 ? 200 : ms < 1 ? 1 : ms;
		if (r->w == NULL) {
			sleep_ms((unsigned int)ms);
			continue;
		}
		rc = km_etcd_watch_next(r->w, ms, &ev);
		if (rc < 0) {
			if (rc == -ESTALE)
				placer_log(PLACER_WARNING,
					"watch from revision %" PRId64 " compacted (at %" PRId64
					"): reading everything again",
					r->ctx.snap_rev + 1, km_etcd_watch_compact_rev(r->w));
			else
				log_etcd(&r->log_ns[2], "watch", r->e);
			km_etcd_watch_close(r->w);
			r->w = NULL;
			if (rc == -ESTALE)
				return;
			continue;
		}
		for (i = 0; i < rc; i++)
			if (placer_key_relevant(&r->ctx, ev->kv[i].key, ev->kv[i].klen))
				break;
		km_etcd_kvs_free(ev);
		if (rc > 0 && i < rc) {
			sleep_ms(20); /* let a burst of changes land together */
			return;
		}
	}
}

/* The loop of a placer: lease, election, rounds as the leader. @return the exit status. */
static int
run_loop(struct run *r)
{
	uint64_t once_end = km_util_now_ns() + ((uint64_t)opts.ttl_s * 2 + 5) * 1000000000ull;
	int rc;

	while (!atomic_load(&stop)) {
		if (lease_ensure(r) != 0) {
			sleep_ms(1000);
			continue;
		}
		if (!r->leading) {
			rc = campaign(r, 1000);
			if (rc != 0 && opts.once && km_util_now_ns() >= once_end) {
				placer_log(PLACER_ERR,
					"--once: not the leader within %u s (another placer leads)",
					opts.ttl_s * 2 + 5);
				return 1;
			}
			if (rc != 0) {
				if (rc != -ETIMEDOUT && rc != -EAGAIN && rc != -ENOENT)
					sleep_ms(1000);
				continue;
			}
		}
		rc = placer_round(&r->ctx);
		if (rc == -EPERM) {
			step_down(r, "its leader key is gone");
			continue;
		}
		if (rc < 0)
			log_etcd(&r->log_ns[3], "round", r->e);
		if (opts.once)
			return rc < 0 ? 1 : 0;
		wait_change(r);
	}
	return 0;
}

/* --dry-run: rounds without election or writes, printed on stdout. */
static int
dry_run(struct run *r)
{
	int rc;

	while (!atomic_load(&stop)) {
		rc = placer_round(&r->ctx);
		fflush(stdout);
		if (rc < 0) {
			placer_log(PLACER_ERR, "etcd %s: %s", opts.etcd, km_etcd_errmsg(r->e));
			if (opts.once)
				return 1;
		}
		if (opts.once)
			return 0;
		sleep_ms(opts.interval_ms);
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct km_etcd *ke = NULL;
	pthread_t ka;
	struct sigaction sa;
	char err[256], host[64] = "";
	struct run r;
	json_t *v;
	char *s;
	int rc;
	if (km_version_opt(argc, argv, "keymap-placer", NULL))
		return 0;

	rc = placer_opts_parse(argc, argv, &opts, err, sizeof(err));
	if (rc == 1) {
		placer_usage(stdout);
		return 0;
	}
	if (rc != 0) {
		fprintf(stderr, "keymap-placer: %s\n(keymap-placer --help for the options)\n", err);
		return 2;
	}
	placer_log_verbose(opts.verbose);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	memset(&r, 0, sizeof(r));
	snprintf(r.ctx.prefix, sizeof(r.ctx.prefix), "/keymap/%s/", opts.cluster);
	snprintf(r.election, sizeof(r.election), "%selection", r.ctx.prefix);
	r.ctx.o = &opts;
	r.ctx.lead = opts.dry_run ? NULL : &r.lead;
	rc = km_etcd_open(opts.etcd, PLACER_ETCD_TIMEOUT, &r.e);
	/* A renewal that hangs must not outlast the lease: a third of the TTL at most. */
	if (rc == 0 && !opts.dry_run)
		rc = km_etcd_open(opts.etcd,
			opts.ttl_s * 1000 / 3 < PLACER_ETCD_TIMEOUT ? opts.ttl_s * 1000 / 3
								    : PLACER_ETCD_TIMEOUT,
			&ke);
	if (rc != 0) {
		fprintf(stderr, "keymap-placer: --etcd %s: %s\n", opts.etcd, strerror(-rc));
		km_etcd_close(r.e);
		return 2;
	}
	r.ctx.e = r.e;
	if (opts.dry_run) {
		rc = dry_run(&r);
		km_etcd_close(r.e);
		return rc;
	}

	/* The first lease tells whether etcd answers at all. */
	rc = lease_ensure(&r);
	if (rc != 0) {
		fprintf(stderr, "keymap-placer: etcd %s: %s\n", opts.etcd, km_etcd_errmsg(r.e));
		km_etcd_close(ke);
		km_etcd_close(r.e);
		return 1;
	}
	if (gethostname(host, sizeof(host) - 1) != 0)
		host[0] = '\0';
	v = json_pack("{s:s, s:I, s:s}", "id", opts.id, "pid", (json_int_t)getpid(), "host", host);
	s = v != NULL ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(v);
	if (s == NULL || strlen(s) >= sizeof(r.value)) {
		fprintf(stderr, "keymap-placer: out of memory\n");
		free(s);
		km_etcd_close(ke);
		km_etcd_close(r.e);
		return 1;
	}
	snprintf(r.value, sizeof(r.value), "%s", s);
	free(s);
	rc = pthread_create(&ka, NULL, keepalive_main, ke);
	if (rc != 0) {
		fprintf(stderr, "keymap-placer: cannot start the lease thread: %s\n", strerror(rc));
		km_etcd_close(ke);
		km_etcd_close(r.e);
		return 1;
	}
	placer_log(PLACER_NOTICE, "%s: cluster %s at %s, standing for election", opts.id,
		opts.cluster, opts.etcd);

	rc = run_loop(&r);

	atomic_store(&stop, 1);
	pthread_join(ka, NULL);
	km_etcd_watch_close(r.w);
	if (r.leading) {
		if (km_etcd_resign(r.e, &r.lead) == 0)
			placer_log(PLACER_NOTICE, "%s resigned", opts.id);
		else
			placer_log(PLACER_WARNING, "resign: %s", km_etcd_errmsg(r.e));
	}
	if (atomic_load(&lease) != 0 && atomic_load(&lease) != atomic_load(&lost))
		(void)km_etcd_lease_revoke(r.e, atomic_load(&lease));
	km_etcd_close(ke);
	km_etcd_close(r.e);
	return rc;
}
