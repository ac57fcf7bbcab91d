/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef PLACER_H
#define PLACER_H

/**
 * @file
 * keymap-placer internals (docs/cluster.md, section "keymap-placer").
 *
 * Two layers:
 * - pure functions (placer_opts.c, placer_rec.c, built into a library of their own that the
 *   unit tests link): the command line, the load reports under P/ (member and move records:
 *   lib/cluster, km_cluster.h), the verdict on a move in flight, the plan of a decision (what to
 * publish, which moves to start) and a map's change in words. No I/O, no etcd, no global state.
 * - the process (placer_log.c, placer_round.c, main.c): logging, one round of reading the
 *   cluster from etcd and acting as its leader, the election and the lease.
 *
 * Concurrency: the main thread does everything but renewing the lease, which a thread of
 * its own does on a handle of its own (main.c).
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <km_cluster.h>
#include <km_etcd.h>

#define PLACER_MOVES_MAX    100 /* --max-moves at most: etcd's 128 operations per txn */
#define PLACER_MAPS_KEPT    100 /* map/<epoch> keys kept */
#define PLACER_ETCD_TIMEOUT 3000
#define PLACER_KEY_MAX      (KM_CLUSTER_ID_MAX + 96)

/** The command line. */
struct placer_opts {
	char etcd[KM_ETCD_ENDPOINTS_MAX * KM_ETCD_ENDPOINT_LEN]; /* endpoints as given */
	char cluster[KM_CLUSTER_ID_MAX + 1];                     /* keys under /keymap/<cluster>/ */
	char id[KM_CLUSTER_ID_MAX + 1];                          /* this placer */
	uint32_t shards;   /* initial shards, a power of two */
	uint8_t route_sep; /* routing rule of the first map, checked on later ones */
	uint8_t route_depth;
	uint32_t ttl_s;          /* lease TTL */
	uint32_t max_moves;      /* per decision and in flight, 0..PLACER_MOVES_MAX */
	uint32_t balance_pct;    /* 0: load balancing off, else 101..1000 */
	double min_rate;         /* no load balancing below this mean worker rate */
	uint32_t interval_ms;    /* decision period */
	uint32_t move_timeout_s; /* a move not ready by then is given up */
	uint32_t replicas;       /* copies of every shard, 1..3; 0: the members' largest */
	int once;                /* one decision, then exit */
	int dry_run;             /* print what would be written, write nothing */
	int verbose;             /* log INFO and DEBUG lines too */
};

/**
 * Parse the command line into o (defaults first; --id defaults to <hostname>-<pid> with
 * the characters a node id may not have replaced by '-').
 * @param err, errlen: on -EINVAL, the message for the user, naming the option: "--shards
 *   '3': not a power of two in 1..65536".
 * @return 0, 1 (--help: the caller prints placer_usage() and exits 0), -EINVAL.
 * @note Context: the main thread (getopt_long's state is global); argv is not kept.
 */
int placer_opts_parse(int argc, char **argv, struct placer_opts *o, char *err, size_t errlen);

/**
 * Print the usage text to f.
 * @note Context: any thread.
 */
void placer_usage(FILE *f);

/*
 * Records under P/ (docs/cluster.md section 2). Member and move records are decoded by
 * lib/cluster (km_cluster_member_decode(), km_cluster_move_decode(),
 * km_cluster_move_encode()), which keymapd shares. Load reports are the placer's alone:
 * placer_load_decode() takes the value's bytes (not NUL-terminated), ignores object
 * members it does not know, and on a refusal writes the reason to err.
 */

/**
 * The members a decision sees: of two with one id the higher incarnation (the other is
 * dropped), and every member whose id has a drain key asks to be draining.
 * @param mem, n: the members decoded, reordered and shortened in place.
 * @param drain, nb_drain: the ids of the drain keys.
 * @return the number of members kept (at the head of mem).
 * @note Context: any thread.
 */
uint32_t placer_members_merge(struct km_cluster_member *mem, uint32_t n,
	const char (*drain)[KM_CLUSTER_ID_MAX + 1], uint32_t nb_drain);

/** A growing array of shard rates. */
struct placer_rates {
	struct km_cluster_rate *r;
	uint32_t n;
	uint32_t cap;
};

/**
 * Decode a load report P/load/<node>: {"epoch", "rates": [[shard id, requests/s], ...]}
 * and append its rates to out. With m given, only the rates of the shards m gives to node
 * are kept (a node reports for a while the shards that just moved away).
 * @return the number of rates appended, -EINVAL (reason in err; nothing appended),
 *   -ENOMEM.
 * @note Context: any thread.
 */
int placer_load_decode(const void *json, size_t len, const struct km_cmap *m, const char *node,
	struct placer_rates *out, char *err, size_t errlen);

/**
 * Free the rates and zero *r.
 * @note Context: the owner of r.
 */
void placer_rates_free(struct placer_rates *r);

/** What to do with a move in flight. */
enum placer_verdict {
	PLACER_KEEP = 0,     /* still copying: wait */
	PLACER_COMPLETE = 1, /* ready: publish the map with it applied, delete its key */
	PLACER_DROP = 2,     /* give it up: delete its key (the source serves the shard again) */
};

/**
 * The verdict on a move in flight, in this order: dropped when it no longer matches m
 * (no map, no such shard or node, the shard not on the source, source and target equal,
 * a target worker out of range); dropped when failed; completed when ready and the target
 * has a live member of the run that stored the copy (the copy is done: a source that died
 * since changes nothing); dropped when ready but the target restarted since (its new run
 * may not have the copy); dropped when the source or the target has no live member, when
 * the target is draining, and when it is older than timeout_s; else kept.
 * @param from_live: whether the source has a live member.
 * @param to_inc: the incarnation of the target's live member, 0: none.
 * @param age_s: seconds since the placer first saw the move.
 * @param cm: on COMPLETE, the move in m's node indices (for km_cmap_move_apply()).
 * @param why, whylen: on DROP, the reason in words.
 * @note Context: any thread.
 */
enum placer_verdict placer_move_judge(const struct km_cmap *m,
	const struct km_cluster_move_record *mv, int from_live, uint64_t to_inc, uint64_t age_s,
	uint32_t timeout_s, struct km_cluster_move *cm, char *why, size_t whylen);

/**
 * Whether a map from etcd is one this placer may build on: its routing rule must be the
 * one the placer was started with (a map of another cluster's layout is not silently
 * continued).
 * @return 0, or -EINVAL (reason in why).
 * @note Context: any thread.
 */
int placer_map_accept(
	const struct km_cmap *m, const struct placer_opts *o, char *why, size_t whylen);

/** What a decision leads to (placer_plan()). */
struct placer_plan {
	struct km_cmap *map;           /* to publish (epoch cur + 1, or first), or NULL */
	uint32_t nb_local;             /* moves within one node applied to map */
	struct km_cluster_move *start; /* cross-node moves to start, node indices of base */
	uint32_t nb_start;
	const struct km_cmap *base; /* the map the moves refer to: map, else cur */
};

/**
 * Turn a decision into what to write: the table map (d->map) with the moves within one
 * node applied (they need no copy), and the cross-node moves to start, in the decision's
 * order, skipping the shards of moves in flight and at most max_moves - nb_flight of them.
 * A map is to be published when the table changed or a local move was made; its epoch is
 * cur's + 1, or first_epoch for the first map (epochs never restart).
 * @param cur: the current map (NULL: none).
 * @param flight, nb_flight: the shards of the moves in flight (kept).
 * @param out: filled; free with placer_plan_free().
 * @return 0, -EINVAL (reason in err: a move that does not apply), -EOVERFLOW (epoch),
 *   -ENOMEM.
 * @note Context: any thread.
 */
int placer_plan(const struct km_cmap *cur, const struct km_cluster_decision *d,
	const uint64_t *flight, uint32_t nb_flight, uint32_t max_moves, uint32_t first_epoch,
	struct placer_plan *out, char *err, size_t errlen);

/**
 * Free what a plan holds and zero it.
 * @note Context: the owner of p.
 */
void placer_plan_free(struct placer_plan *p);

/**
 * The change from map a (NULL: none) to map b in words, for the log: "first map",
 * "n3 joined; n2 down; 2 shards moved".
 * @note Context: any thread.
 */
void placer_map_diff(const struct km_cmap *a, const struct km_cmap *b, char *buf, size_t len);

/*
 * The process.
 */

/** Log levels. */
enum placer_level {
	PLACER_ERR = 0,
	PLACER_WARNING = 1,
	PLACER_NOTICE = 2,
	PLACER_INFO = 3,  /* with -v */
	PLACER_DEBUG = 4, /* with -v */
};

/**
 * Show INFO and DEBUG lines too.
 * @note Context: the main thread, before any other thread starts.
 */
void placer_log_verbose(int on);

/**
 * One line on stderr: "2026-12-04T20:17:39.085Z NOTICE keymap-placer: text".
 * @note Context: any thread (one write per line).
 */
void placer_log(enum placer_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/** Moves the placer has seen in flight: when it first saw each (for --move-timeout-s). */
#define PLACER_SEEN_MAX 256
/** Bad records already reported (by mod revision: reported once each). */
#define PLACER_REPORTED_MAX 64

/** A move seen by the placer: its shard, its key's creation and a time. */
struct placer_seen {
	uint64_t id;
	int64_t create_rev;
	uint64_t at_ns; /* km_util_now_ns() */
};

/** The leader's state across rounds (placer_round.c). */
struct placer_ctx {
	const struct placer_opts *o;
	struct km_etcd *e;
	char prefix[KM_CLUSTER_ID_MAX + 16];      /* "/keymap/<cluster>/" */
	const struct km_etcd_leader *lead;        /* the leader key, NULL with --dry-run */
	int64_t snap_rev;                         /* out: the revision the last round read */
	struct placer_seen seen[PLACER_SEEN_MAX]; /* the moves in flight at the last read */
	uint32_t nb_seen;
	struct placer_seen cool[PLACER_SEEN_MAX]; /* moves given up: at_ns is when the shard
						   * may move again */
	uint32_t nb_cool;
	int64_t reported[PLACER_REPORTED_MAX];
	uint32_t reported_next;
	uint64_t refused_log_ns;          /* when a refused map was last logged */
	int waiting_logged;               /* "no member yet" logged */
	char skipped[KM_CLUSTER_ERR_MAX]; /* the skipped members last logged */
};

/**
 * One round as the leader (or, with --dry-run, as if): read the map, members, drain keys,
 * load reports and moves at one revision; give up the moves that must be, complete the
 * ready ones (one transaction), decide, publish the table map and start moves. Reads again
 * after a completion (a few times at most). Every write is a transaction guarded by the
 * leader key's creation revision.
 * @return 0, -EPERM (no longer the leader: the leader key is gone), or an etcd error
 *   (km_etcd_errmsg(c->e) tells it).
 * @note Context: the main thread.
 */
int placer_round(struct placer_ctx *c);

/**
 * Whether a key (under c->prefix) is one whose change calls for a decision: members/,
 * drain/, load/, moves/, map/current.
 * @note Context: any thread.
 */
int placer_key_relevant(const struct placer_ctx *c, const uint8_t *key, size_t klen);

#endif /* PLACER_H */
