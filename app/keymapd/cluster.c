/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * keymapd as a node of a cluster (docs/cluster.md).
 *
 * Threads:
 * - the main lcore joins (km_cluster_join): incarnation, member record under a lease, the
 *   first map that has this node;
 * - the cluster thread (a plain pthread: no lcore, not an RCU reader, never touches the
 *   data path) then keeps the lease alive, watches P/map/current and puts the load
 *   reports. It hands each new valid map to the control lcore through cl.mu (the newest
 *   wins) and takes the control lcore's load report the same way;
 * - the control lcore applies maps (km_cluster_tick): it creates the shards the map gives
 *   this node and it does not hold, hands over those on another of its workers, publishes
 *   the node's view, then drops those the map gives to other nodes.
 * etcd lost: the node serves its last map and retries every second.
 */

#define KM_LOG_COMP KM_LOG_CLUSTER /* keymapd.h */

#include <arpa/inet.h>
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
#include <rte_cycles.h>
#include <rte_ether.h>
#include <rte_telemetry.h>

#include <km_cluster.h>
#include <km_etcd.h>
#include <km_proc.h>
#include <km_util.h>

#include "cluster.h"
#include "cluster_priv.h"
#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "mailbox.h"

#define ETCD_TIMEOUT_MS 3000
#define RETRY_MS        1000
#define KEY_MAX         320
#define WAIT_LOG_S      10

static struct {
	int on;
	const struct km_conf *conf; /* keymapd's (the main lcore's boot copy) */
	char prefix[128];           /* /keymap/<name>/ */
	uint32_t ip;                /* advertised, host byte order */
	uint16_t nb_workers;
	struct km_etcd *e;     /* the main lcore's during the join, then the cluster thread's */
	_Atomic int64_t lease; /* the membership thread's once it runs; 0: none */
	uint64_t incarnation;
	char *member; /* the member record (JSON) put at the join */
	pthread_t thr;
	int thr_started;
	pthread_t mthr; /* the membership thread: lease, member record */
	int mthr_started;
	atomic_int stop;
	atomic_int serving; /* the control loop runs: it may be woken */
	atomic_int rescan;  /* a queue overflowed: the cluster thread reads moves/ again */
	int64_t watch_rev;  /* the thread watches map/current from here */

	/*
	 * fence_mu: the lease fence after a lease expired. The node may have been failed
	 * over meanwhile, so a new lease does not reopen km_cluster_lease_ns at once: its
	 * deadline waits in fence_pending_ns until the cluster thread has read map/current
	 * (fence_epoch: the epoch it read, 0 before) and the control lcore has applied that
	 * epoch or a later one.
	 */
	pthread_mutex_t fence_mu;
	int fence_hold; /* fence_mu */
	int fence_read; /* fence_mu: registered again: the cluster thread is to read the map */
	uint32_t fence_epoch;      /* fence_mu */
	uint32_t fence_gen;        /* fence_mu: + 1 per lease lost */
	uint64_t fence_pending_ns; /* fence_mu */

	pthread_mutex_t mu;
	struct km_cmap *pending; /* mu: newest valid map not applied yet */
	/* mu: moves of this node's shards the placer put (with the epoch each was planned
	 * on), and those it gave up */
	struct km_cluster_move_req moves[16];
	uint32_t moves_epoch[16];
	unsigned int nb_moves;
	struct km_cluster_gone gone[64];
	unsigned int nb_gone;
	char *load;           /* mu: the control lcore's last load report */
	char err[160];        /* mu: the cluster thread's last error */
	uint64_t etcd_errors; /* mu */
	uint64_t thr_refused; /* mu: maps the cluster thread refused (undecodable, not ours) */
	int etcd_ok;          /* mu */
	int64_t reported[32]; /* mu: mod revisions of the bad records logged (each once) */
	unsigned int reported_next; /* mu */

	/* Control lcore. */
	struct km_cmap *cur;   /* the map applied */
	uint32_t epoch;        /* of the map applied */
	uint32_t refused;      /* of the last map refused */
	uint32_t stale_logged; /* epoch of the last map logged as not above the current */
	/* Moves planned on a map not applied yet: kept until cl.epoch reaches their epoch. */
	struct km_cluster_move_req defer[16];
	uint32_t defer_epoch[16];
	unsigned int nb_defer;
	struct {
		uint64_t id;
		int64_t rev;
	} started[32]; /* the last move requests started (a request seen again is no news) */
	unsigned int started_next;
	uint64_t ignored_id; /* the last move request dropped (logged once per id, rev) */
	int64_t ignored_rev;
	uint64_t load_tsc;
	struct km_cluster_status st;
} cl = {.mu = PTHREAD_MUTEX_INITIALIZER, .fence_mu = PTHREAD_MUTEX_INITIALIZER};

_Atomic uint64_t km_cluster_lease_ns;

const struct km_cmap *
km_cluster_cmap(void)
{
	return cl.cur;
}

int
km_cluster_on(void)
{
	return cl.on;
}

int
km_cluster_serving(void)
{
	return atomic_load(&cl.serving);
}

static void
key_of(char *buf, size_t cap, const char *what, const char *node)
{
	snprintf(buf, cap, "%s%s%s", cl.prefix, what, node != NULL ? node : "");
}

/* The cluster thread's error, for logs and telemetry. */
static void
etcd_failed(const struct km_etcd *e, const char *what, int rc)
{
	pthread_mutex_lock(&cl.mu);
	cl.etcd_errors++;
	cl.etcd_ok = 0;
	snprintf(cl.err, sizeof(cl.err), "%s: %s", what,
		e != NULL && km_etcd_errmsg(e)[0] != '\0' ? km_etcd_errmsg(e) : strerror(-rc));
	pthread_mutex_unlock(&cl.mu);
}

static void
etcd_worked(void)
{
	pthread_mutex_lock(&cl.mu);
	cl.etcd_ok = 1;
	pthread_mutex_unlock(&cl.mu);
}

/*
 * Whether map m may be applied here: the routing rule of this node, this node in its
 * table with this node's address, port and workers, and this run's incarnation (the map
 * carries no cluster name: a map of another cluster, or of a newer run of this node id, is
 * refused; one of a previous run is waited out).
 * @return this node's index; -ENOENT (not in the table yet, or as a previous run), or
 *   -EINVAL with the reason.
 */
static int
map_for_us(const struct km_cmap *m, char *err, size_t errlen)
{
	const struct km_conf *c = cl.conf;
	const struct km_cmap_node *n;
	char want[INET_ADDRSTRLEN], has[INET_ADDRSTRLEN];
	uint32_t a;
	int self;

	if (m->route_sep != (uint8_t)c->route_sep || m->route_depth != (uint8_t)c->route_depth) {
		snprintf(err, errlen,
			"routing rule '%c' depth %u, this node routes by '%c' depth %u ([shards])",
			m->route_sep, m->route_depth, (int)c->route_sep,
			(unsigned int)c->route_depth);
		return -EINVAL;
	}
	self = km_cmap_node_find(m, c->cluster_node);
	if (self < 0) {
		snprintf(err, errlen, "node %s is not in its table yet", c->cluster_node);
		return -ENOENT;
	}
	n = &m->nodes[self];
	/* A previous run's place: what it served may not be here (a mem store, a failed
	 * promotion's copy); the placer fails its shards over when it sees this run, then
	 * writes this run in a later map, which is waited for. */
	if (n->incarnation < cl.incarnation) {
		snprintf(err, errlen,
			"node %s is there as incarnation %" PRIu64 ", a previous run of this "
			"one (%" PRIu64 ")",
			c->cluster_node, n->incarnation, cl.incarnation);
		return -ENOENT;
	}
	if (n->ip != cl.ip || n->port != c->udp_port || n->workers != cl.nb_workers) {
		a = htonl(n->ip);
		inet_ntop(AF_INET, &a, has, sizeof(has));
		a = htonl(cl.ip);
		inet_ntop(AF_INET, &a, want, sizeof(want));
		snprintf(err, errlen,
			"node %s is %s port %u with %u workers there, it is %s port %" PRIu64
			" with %u workers",
			c->cluster_node, has, n->port, n->workers, want, c->udp_port,
			cl.nb_workers);
		return -EINVAL;
	}
	if (n->incarnation > cl.incarnation) {
		snprintf(err, errlen,
			"node %s has incarnation %" PRIu64 " there, above this run's %" PRIu64
			" (a map of another cluster, or of a newer run of this node id)",
			c->cluster_node, n->incarnation, cl.incarnation);
		return -EINVAL;
	}
	return self;
}

/* Decode a map/current value. @return the map (valid for this node), or NULL with the
 * reason in err (*absent set when it is only that this node is not in it yet). */
static struct km_cmap *
map_decode(const uint8_t *v, size_t len, int *absent, char *err, size_t errlen)
{
	struct km_cmap *m = NULL;
	int rc;

	*absent = 0;
	rc = km_cmap_decode((const char *)v, len, &m, err, errlen);
	if (rc < 0)
		return NULL;
	rc = map_for_us(m, err, errlen);
	if (rc < 0) {
		*absent = rc == -ENOENT;
		km_cmap_free(m);
		return NULL;
	}
	return m;
}

/* Hand m to the control lcore (the newest wins). */
static void
map_post(struct km_cmap *m)
{
	pthread_mutex_lock(&cl.mu);
	if (cl.pending != NULL && cl.pending->epoch >= m->epoch) {
		pthread_mutex_unlock(&cl.mu);
		km_cmap_free(m);
		return;
	}
	km_cmap_free(cl.pending);
	cl.pending = m;
	pthread_mutex_unlock(&cl.mu);
	if (atomic_load(&cl.serving))
		km_ctl_wake();
}

/* A value of map/current: posted, or refused with a log line (once per revision). */
static void
map_seen(const uint8_t *v, size_t len, int64_t rev)
{
	static int64_t refused_rev;
	char err[KM_CLUSTER_ERR_MAX + 64];
	struct km_cmap *m;
	int absent;

	m = map_decode(v, len, &absent, err, sizeof(err));
	if (m != NULL) {
		map_post(m);
		return;
	}
	if (refused_rev == rev)
		return;
	refused_rev = rev;
	if (!absent) {
		/* Counted and shown by /keymap/cluster as well as logged. */
		pthread_mutex_lock(&cl.mu);
		cl.thr_refused++;
		snprintf(cl.err, sizeof(cl.err), "map revision %" PRId64 " refused: %.100s", rev,
			err);
		pthread_mutex_unlock(&cl.mu);
	}
	if (absent)
		KM_LOG(NOTICE, "cluster map (revision %" PRId64 "): %s: waiting", rev, err);
	else
		KM_LOG(ERR, "cluster map (revision %" PRId64 ") refused, the last one kept: %s",
			rev, err);
}

int
km_cluster_map_read(struct km_etcd *e, struct km_cmap **m)
{
	char key[KEY_MAX];
	struct km_etcd_kvs *r = NULL;
	int rc;

	key_of(key, sizeof(key), "map/current", NULL);
	rc = km_etcd_get(e, key, strlen(key), 0, &r);
	if (rc == 0)
		rc = -ENOENT;
	else if (rc > 0)
		rc = km_cmap_decode((const char *)r->kv[0].value, r->kv[0].vlen, m, NULL, 0);
	km_etcd_kvs_free(r);
	return rc;
}

/* Whether the bad record of revision mod_rev is to be logged: the first time only (a watch
 * restarted reads it again). Any thread. */
static int
first_report(int64_t mod_rev)
{
	unsigned int i;
	int first = 1;

	pthread_mutex_lock(&cl.mu);
	for (i = 0; i < RTE_DIM(cl.reported); i++)
		if (cl.reported[i] == mod_rev)
			first = 0;
	if (first) {
		cl.reported[cl.reported_next] = mod_rev;
		cl.reported_next = (cl.reported_next + 1) % RTE_DIM(cl.reported);
	}
	pthread_mutex_unlock(&cl.mu);
	return first;
}

/* The shard id that ends move key kv (P/moves/<id>). @return 0, or -EINVAL. */
static int
move_key_id(const struct km_etcd_kv *kv, uint64_t *id)
{
	size_t plen = strlen(cl.prefix) + strlen("moves/");

	if (kv->klen <= plen)
		return -EINVAL;
	return km_util_parse_u64n((const char *)kv->key + plen, kv->klen - plen, 1, UINT64_MAX, id);
}

/* Decode the move record kv as the placer does (km_cluster_move_decode()). @return 0 and
 * *mv, or -EINVAL: a record refused, logged once with the reason. Any thread. */
static int
move_read(const struct km_etcd_kv *kv, struct km_cluster_move_record *mv)
{
	char err[KM_CLUSTER_ERR_MAX];
	uint64_t id;
	int rc;

	rc = move_key_id(kv, &id);
	if (rc != 0)
		snprintf(err, sizeof(err), "the key does not end in a shard id");
	else
		rc = km_cluster_move_decode(id, kv->value, kv->vlen, mv, err, sizeof(err));
	if (rc != 0) {
		if (first_report(kv->mod_rev))
			KM_LOG(WARNING, "cluster: move record %.*s ignored: %s", (int)kv->klen,
				(const char *)kv->key, err);
		return rc;
	}
	mv->create_rev = kv->create_rev;
	mv->mod_rev = kv->mod_rev;
	return 0;
}

/* At start, before serving: the moves of this node's shards a previous run began are
 * failed (compare-and-swap), so that none is completed with a copy older than what this
 * run will acknowledge. Tried again until moves/ was read and each of them is failed or
 * gone, for at most wait_s (and while the node is not stopped).
 * @return 0, or -errno (logged: the node does not join). */
static int
moves_fail_own(unsigned int wait_s)
{
	uint64_t t0 = rte_get_timer_cycles(), hz = rte_get_timer_hz();
	char key[KEY_MAX];
	unsigned int left = 0;
	int rc;

	key_of(key, sizeof(key), "moves/", NULL);
	for (;;) {
		struct km_etcd_kvs *r = NULL;
		size_t i;

		left = 0;
		rc = km_etcd_get(cl.e, key, strlen(key), KM_ETCD_PREFIX, &r);
		for (i = 0; rc >= 0 && i < r->n; i++) {
			struct km_cluster_move_record mv;
			char *val = NULL;
			int t;

			if (move_read(&r->kv[i], &mv) != 0 ||
				strcmp(mv.from, cl.conf->cluster_node) != 0 ||
				mv.state == KM_CLUSTER_MOVE_FAILED)
				continue;
			left++;
			mv.state = KM_CLUSTER_MOVE_FAILED;
			snprintf(mv.reason, sizeof(mv.reason), "its source node restarted");
			t = km_cluster_move_encode(&mv, &val);
			if (t == 0) {
				struct km_etcd_cmp cmp = {.key = r->kv[i].key,
					.klen = r->kv[i].klen,
					.target = KM_ETCD_MOD,
					.result = KM_ETCD_EQUAL,
					.num = r->kv[i].mod_rev};
				struct km_etcd_op op = {.type = KM_ETCD_OP_PUT,
					.key = r->kv[i].key,
					.klen = r->kv[i].klen,
					.value = val,
					.vlen = strlen(val)};

				t = km_etcd_txn(cl.e, &cmp, 1, &op, 1, NULL, 0, NULL, NULL);
				free(val);
			}
			if (t == 1) {
				KM_LOG(NOTICE, "cluster: move %.*s of a previous run marked failed",
					(int)r->kv[i].klen, (const char *)r->kv[i].key);
				left--;
			} else if (t < 0) {
				rc = t;
			} /* 0: changed meanwhile, read again */
		}
		km_etcd_kvs_free(r);
		if (rc >= 0 && left == 0)
			return 0;
		if (atomic_load(&cl.stop) ||
			atomic_load_explicit(&km_dp.stop, memory_order_relaxed) ||
			(rte_get_timer_cycles() - t0) / hz >= wait_s)
			break;
		usleep(200 * 1000);
	}
	KM_LOG(ERR,
		"cluster: node %s cannot mark the moves of its shards that a previous run began "
		"as failed (%s): it does not join (a stale copy of one could be completed)",
		cl.conf->cluster_node,
		rc < 0 ? km_etcd_errmsg(cl.e) : "their records kept changing");
	return rc < 0 ? rc : -EAGAIN;
}

void
km_cluster_move_key(char *buf, size_t cap, uint64_t id)
{
	snprintf(buf, cap, "%smoves/%" PRIu64, cl.prefix, id);
}

const char *
km_cluster_node_id(void)
{
	return cl.conf->cluster_node;
}

uint64_t
km_cluster_incarnation(void)
{
	return cl.incarnation;
}

const char *
km_cluster_etcd_endpoints(void)
{
	return cl.conf->cluster_etcd;
}

int
km_cluster_side_of(struct km_etcd *e, const char *node, uint32_t *ip)
{
	char key[KEY_MAX], err[KM_CLUSTER_ERR_MAX];
	struct km_etcd_kvs *r = NULL;
	struct km_cluster_member m;
	int rc;

	key_of(key, sizeof(key), "members/", node);
	rc = km_etcd_get(e, key, strlen(key), 0, &r);
	if (rc <= 0) {
		km_etcd_kvs_free(r);
		return rc;
	}
	/* As strict as the placer: a record it skips is no target either. */
	rc = km_cluster_member_decode(node, r->kv[0].value, r->kv[0].vlen, &m, err, sizeof(err));
	if (rc == 0 && m.side_port == 0) {
		snprintf(err, sizeof(err),
			"no side channel: side_port not an integer in 1..65535 or side_ip not an "
			"IPv4 address");
		rc = -EPROTO;
	}
	if (rc != 0 && first_report(r->kv[0].mod_rev))
		KM_LOG(WARNING, "cluster: member record %.*s refused: %s", (int)r->kv[0].klen,
			(const char *)r->kv[0].key, err);
	km_etcd_kvs_free(r);
	if (rc != 0)
		return -EPROTO;
	*ip = m.side_ip;
	return m.side_port;
}

/* ---- moves seen by the cluster thread ---------------------------------------------- */

#define TRACK_MAX   256
#define CHECK_MAX   128
#define RECONCILE_S 5

/* A move of or to this node, as the cluster thread last saw its record. */
struct mv_track {
	uint64_t id;
	int64_t create_rev;
	char from[KM_CLUSTER_ID_MAX + 1];
	char to[KM_CLUSTER_ID_MAX + 1];
	int absent; /* reconciliations that found its key gone (the watch missed it) */
};

/* The cluster thread's own. */
static struct {
	struct mv_track trk[TRACK_MAX]; /* moves in flight that concern this node */
	unsigned int nb_trk;
	/* Deletions of tracked moves not decided yet (completed or given up), in order:
	 * tried again until they are; no further move event is read meanwhile. */
	struct mv_track chk[CHECK_MAX];
	int64_t chk_rev[CHECK_MAX]; /* the deletion's revision */
	unsigned int nb_chk;
	uint64_t reconcile_tsc;
} th;

static int
is_me(const char *node)
{
	return strcmp(node, cl.conf->cluster_node) == 0;
}

static struct mv_track *
track_find(uint64_t id)
{
	unsigned int i;

	for (i = 0; i < th.nb_trk; i++)
		if (th.trk[i].id == id)
			return &th.trk[i];
	return NULL;
}

static void
track_remove(struct mv_track *t)
{
	unsigned int i = (unsigned int)(t - th.trk);

	memmove(&th.trk[i], &th.trk[i + 1], (th.nb_trk - i - 1) * sizeof(th.trk[0]));
	th.nb_trk--;
}

static void
track_put(const struct km_cluster_move_record *mv)
{
	struct mv_track *t = track_find(mv->id);

	if (t == NULL) {
		if (th.nb_trk == TRACK_MAX) {
			/* More moves of this node in flight than the placer's --max-moves allows:
			 * the oldest is forgotten (its deletion then goes by the map alone). */
			KM_LOG(WARNING, "cluster: over %u moves of node %s in flight", TRACK_MAX,
				cl.conf->cluster_node);
			track_remove(&th.trk[0]);
		}
		t = &th.trk[th.nb_trk++];
	}
	*t = (struct mv_track){.id = mv->id, .create_rev = mv->create_rev};
	snprintf(t->from, sizeof(t->from), "%s", mv->from);
	snprintf(t->to, sizeof(t->to), "%s", mv->to);
}

/* Queue a move request for the control lcore (a newer one of the shard replaces an older
 * one; a deletion queued before it still ends the move it names). @return 0, or -ENOSPC (the queue
 * is full: moves/ is read again once the control lcore took the queue). */
static int
move_queue(const struct km_cluster_move_req *rq, uint32_t epoch)
{
	unsigned int i;
	int rc = 0;

	pthread_mutex_lock(&cl.mu);
	for (i = 0; i < cl.nb_moves && cl.moves[i].id != rq->id; i++)
		;
	if (i < cl.nb_moves || cl.nb_moves < RTE_DIM(cl.moves)) {
		cl.moves[i] = *rq;
		cl.moves_epoch[i] = epoch;
		if (i == cl.nb_moves)
			cl.nb_moves++;
	} else {
		rc = -ENOSPC;
	}
	pthread_mutex_unlock(&cl.mu);
	if (rc < 0)
		atomic_store(&cl.rescan, 1);
	return rc;
}

/* Queue a move of this node's shard id as given up (deleted at revision rev): a request
 * of it queued before goes. @return 0, or -ENOSPC (full: tried again later). */
static int
gone_queue(uint64_t id, int64_t create_rev, int64_t rev)
{
	unsigned int i;
	int rc = 0;

	pthread_mutex_lock(&cl.mu);
	for (i = 0; i < cl.nb_moves; i++)
		if (cl.moves[i].id == id && cl.moves[i].rev < rev) {
			cl.moves[i] = cl.moves[cl.nb_moves - 1];
			cl.moves_epoch[i] = cl.moves_epoch[cl.nb_moves - 1];
			cl.nb_moves--;
			i--;
		}
	if (cl.nb_gone < RTE_DIM(cl.gone))
		cl.gone[cl.nb_gone++] =
			(struct km_cluster_gone){.id = id, .create_rev = create_rev};
	else
		rc = -ENOSPC;
	pthread_mutex_unlock(&cl.mu);
	if (rc == 0 && atomic_load(&cl.serving))
		km_ctl_wake();
	return rc;
}

/* A move record of this node's shard, or to this node: tracked; one of this node's shards
 * in state "copy" goes to the control lcore. */
static void
move_record_seen(const struct km_cluster_move_record *mv)
{
	struct km_cluster_move_req rq = {0};

	if (!is_me(mv->from) && !is_me(mv->to))
		return;
	track_put(mv);
	if (!is_me(mv->from) || mv->state != KM_CLUSTER_MOVE_COPY)
		return;
	rq.id = mv->id;
	rq.rev = mv->mod_rev;
	rq.create_rev = mv->create_rev;
	snprintf(rq.to, sizeof(rq.to), "%s", mv->to);
	rq.to_worker = mv->to_worker;
	if (move_queue(&rq, mv->epoch) < 0)
		KM_LOG(INFO, "cluster: move of shard %" PRIu64 " put off (queue full): read again",
			mv->id);
}

/* A move key's value or deletion (the cluster thread). A record the placer would refuse
 * is ignored (logged once). The deletion of a tracked move is decided by check_one(). */
static void
move_seen(const struct km_etcd_kv *kv)
{
	struct km_cluster_move_record mv;
	struct mv_track *t;
	uint64_t id;

	if (!kv->deleted) {
		if (move_read(kv, &mv) == 0)
			move_record_seen(&mv);
		return;
	}
	if (move_key_id(kv, &id) != 0 || (t = track_find(id)) == NULL ||
		t->create_rev >= kv->mod_rev)
		return; /* not one of this node's moves (or a newer one, read meanwhile) */
	if (th.nb_chk == CHECK_MAX) {
		/* Left tracked: the reconciliation finds its key gone. */
		th.reconcile_tsc = 0;
		return;
	}
	th.chk[th.nb_chk] = *t;
	th.chk_rev[th.nb_chk++] = kv->mod_rev;
	track_remove(t);
}

/* Whether map/current was written at revision rev (the publication that completed a move
 * deletes its key at the same revision; giving a move up writes no map). When that
 * revision is compacted, *map_now is set and the current map tells instead.
 * @return 1 written then, 0 not, or -errno (try again). */
static int
map_written_at(int64_t rev, struct km_cmap **map_now)
{
	char key[KEY_MAX];
	struct km_etcd_kvs *r = NULL, *ev = NULL;
	struct km_etcd_watch *w = NULL;
	int64_t mod;
	int rc;

	*map_now = NULL;
	key_of(key, sizeof(key), "map/current", NULL);
	rc = km_etcd_get(cl.e, key, strlen(key), 0, &r);
	if (rc <= 0) {
		km_etcd_kvs_free(r);
		return rc; /* no map: none was written */
	}
	mod = r->kv[0].mod_rev;
	if (mod <= rev) {
		km_etcd_kvs_free(r);
		return mod == rev;
	}
	/* Changed since: its history from rev on, through a watch (its first event). */
	rc = km_etcd_watch_open(cl.e, key, strlen(key), 0, rev, &w);
	if (rc == 0)
		rc = km_etcd_watch_next(w, ETCD_TIMEOUT_MS, &ev);
	if (rc > 0)
		rc = ev->kv[0].mod_rev == rev;
	else if (rc == 0)
		rc = -ETIMEDOUT;
	else if (rc == -ESTALE) {
		rc = km_cmap_decode((const char *)r->kv[0].value, r->kv[0].vlen, map_now, NULL, 0);
		if (rc == 0)
			rc = -ESTALE;
	}
	km_etcd_kvs_free(ev);
	km_etcd_watch_close(w);
	km_etcd_kvs_free(r);
	return rc;
}

/* Whether map m gives shard id to node. */
static int
map_gives(const struct km_cmap *m, uint64_t id, const char *node)
{
	const struct km_cmap_shard *sh = m != NULL ? km_cmap_shard_find(m, id) : NULL;

	return sh != NULL && strcmp(m->nodes[sh->node].id, node) == 0;
}

/* Whether a newer move of shard id to this node than the one deleted at rev exists.
 * @return 1, 0, or -errno. */
static int
newer_move_here(uint64_t id, int64_t rev)
{
	struct km_cluster_move_record mv;
	struct km_etcd_kvs *r = NULL;
	char key[KEY_MAX];
	int rc;

	km_cluster_move_key(key, sizeof(key), id);
	rc = km_etcd_get(cl.e, key, strlen(key), 0, &r);
	if (rc > 0)
		rc = r->kv[0].create_rev > rev && move_read(&r->kv[0], &mv) == 0 && is_me(mv.to);
	km_etcd_kvs_free(r);
	return rc;
}

/* A move of or to this node was given up: its source serves the shard again, its target
 * drops the copy it received. @return 0, or -errno (try again). */
static int
given_up(const struct mv_track *t, int64_t rev)
{
	int rc;

	if (is_me(t->from))
		return gone_queue(t->id, t->create_rev, rev);
	rc = newer_move_here(t->id, rev);
	if (rc < 0)
		return rc;
	if (rc == 0)
		km_cluster_incoming_drop(t->id);
	return 0;
}

/* Decide the deletion of move t at revision rev: completed (the map of that revision
 * moves the shard: nothing to do here) or given up. @return 0, or -errno (try again). */
static int
check_one(const struct mv_track *t, int64_t rev)
{
	struct km_cmap *now = NULL;
	int rc;

	rc = map_written_at(rev, &now);
	if (rc == -ESTALE) {
		/* That revision is compacted: the map as it is now tells (given up while it
		 * still gives the shard to its source; another node, the target or a third one
		 * after later moves, means completed). */
		rc = map_gives(now, t->id, t->from);
		km_cmap_free(now);
		return rc ? given_up(t, rev) : 0;
	}
	if (rc < 0)
		return rc;
	return rc == 1 ? 0 : given_up(t, rev);
}

/* Decide the deletions in order; stop at the first that cannot be yet. */
static void
checks_run(void)
{
	unsigned int i;
	int rc = 0;

	for (i = 0; i < th.nb_chk && !atomic_load(&cl.stop); i++) {
		rc = check_one(&th.chk[i], th.chk_rev[i]);
		if (rc < 0)
			break;
	}
	if (rc < 0 && rc != -ENOSPC)
		etcd_failed(cl.e, "decide a move deleted", rc);
	memmove(&th.chk[0], &th.chk[i], (th.nb_chk - i) * sizeof(th.chk[0]));
	memmove(&th.chk_rev[0], &th.chk_rev[i], (th.nb_chk - i) * sizeof(th.chk_rev[0]));
	th.nb_chk -= i;
}

/*
 * Every RECONCILE_S: moves/ and the map at one revision. A move of this node's shards in
 * state "copy" goes to the control lcore again (one it runs already is left alone), and a
 * tracked move whose key is gone at two reconciliations in a row (the watch missed its
 * deletion: compaction) is decided by that map. @return 0 or -errno.
 */
static int
reconcile(void)
{
	char mkey[KEY_MAX], ckey[KEY_MAX];
	struct km_etcd_op ops[2] = {{0}};
	struct km_etcd_kvs *r = NULL;
	struct km_cmap *m = NULL;
	int64_t rev = 0;
	unsigned int i;
	size_t k;
	int rc;

	time_t t_read = time(NULL);

	key_of(mkey, sizeof(mkey), "moves/", NULL);
	key_of(ckey, sizeof(ckey), "map/current", NULL);
	ops[0] = (struct km_etcd_op){
		.type = KM_ETCD_OP_GET, .key = mkey, .klen = strlen(mkey), .flags = KM_ETCD_PREFIX};
	ops[1] = (struct km_etcd_op){.type = KM_ETCD_OP_GET, .key = ckey, .klen = strlen(ckey)};
	rc = km_etcd_txn(cl.e, NULL, 0, ops, 2, NULL, 0, &rev, &r);
	if (rc < 0)
		return rc;
	for (k = 0; r != NULL && k < r->n; k++) {
		struct km_cluster_move_record mv;

		struct mv_track *t;

		if (r->kv[k].op == 1) {
			(void)km_cmap_decode(
				(const char *)r->kv[k].value, r->kv[k].vlen, &m, NULL, 0);
			continue;
		}
		if (move_read(&r->kv[k], &mv) != 0)
			continue;
		/* Another move of a tracked shard: the watch tells its predecessor's end first. */
		t = track_find(mv.id);
		if (t == NULL || t->create_rev == mv.create_rev)
			move_record_seen(&mv);
	}
	for (i = 0; i < th.nb_trk; i++) {
		struct mv_track *t = &th.trk[i];
		int present = 0;

		for (k = 0; r != NULL && k < r->n && !present; k++) {
			uint64_t id;

			present = r->kv[k].op == 0 && move_key_id(&r->kv[k], &id) == 0 &&
				  id == t->id && r->kv[k].create_rev == t->create_rev;
		}
		if (present || t->create_rev > rev) {
			t->absent = 0;
			continue;
		}
		if (++t->absent < 2)
			continue;
		KM_LOG(INFO, "cluster: the deletion of move %" PRIu64 " was not seen: by the map",
			t->id);
		if (map_gives(m, t->id, t->from) && given_up(t, rev) < 0)
			continue; /* tried again */
		track_remove(t);
		i--;
	}
	/* Shards received here that no move to this node and no map explain (their move was
	 * given up before their stream ended): they go. Only those kept since before this
	 * read, so that a stream of a move created since is not taken for one. */
	{
		uint64_t ids[64];
		unsigned int n = km_cluster_incoming_ids(ids, RTE_DIM(ids), t_read - 2);

		for (i = 0; m != NULL && i < n; i++) {
			int moving = 0;

			for (k = 0; r != NULL && k < r->n && !moving; k++) {
				struct km_cluster_move_record mv;

				moving = r->kv[k].op == 0 && move_read(&r->kv[k], &mv) == 0 &&
					 mv.id == ids[i] && is_me(mv.to);
			}
			if (!moving && !map_gives(m, ids[i], cl.conf->cluster_node))
				km_cluster_incoming_drop(ids[i]);
		}
	}
	km_cmap_free(m);
	km_etcd_kvs_free(r);
	return 0;
}

/* ---- membership -------------------------------------------------------------------- */

/* The member record. serving: false until the node serves (the placer starts no move to
 * it before: it would refuse them). */
static char *
member_json(int serving)
{
	const struct km_conf *c = cl.conf;
	char ip[INET_ADDRSTRLEN], side[INET_ADDRSTRLEN], mac[RTE_ETHER_ADDR_FMT_SIZE];
	uint32_t a = htonl(cl.ip);
	json_t *o;
	char *s;

	inet_ntop(AF_INET, &a, ip, sizeof(ip));
	rte_ether_format_addr(mac, sizeof(mac), &km_dp.mac);
	a = c->cluster_side_addr != 0 ? c->cluster_side_addr : htonl(cl.ip);
	inet_ntop(AF_INET, &a, side, sizeof(side));
	o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:I, s:s, s:b, s:I}", "id",
		c->cluster_node, "ip", ip, "mac", mac, "port", (json_int_t)c->udp_port, "workers",
		(json_int_t)cl.nb_workers, "incarnation", (json_int_t)cl.incarnation, "side_ip",
		side, "side_port", (json_int_t)c->cluster_side_port, "state", "active", "serving",
		serving, "replicas", (json_int_t)c->cluster_replicas);
	if (o == NULL)
		return NULL;
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* P/incarnation/<node> + 1, by compare-and-swap. @return 0 or -errno (logged). */
static int
claim_incarnation(void)
{
	char key[KEY_MAX], val[32];
	struct km_etcd_kvs *r = NULL;
	int i, rc;

	key_of(key, sizeof(key), "incarnation/", cl.conf->cluster_node);
	for (i = 0; i < 10; i++) {
		uint64_t n = 0;
		int64_t mod = 0;

		rc = km_etcd_get(cl.e, key, strlen(key), 0, &r);
		if (rc < 0)
			break;
		if (rc > 0) {
			char num[32] = "";

			memcpy(num, r->kv[0].value, RTE_MIN(r->kv[0].vlen, sizeof(num) - 1));
			n = strtoull(num, NULL, 10);
			mod = r->kv[0].mod_rev;
		}
		km_etcd_kvs_free(r);
		r = NULL;
		snprintf(val, sizeof(val), "%" PRIu64, n + 1);
		{
			struct km_etcd_cmp cmp = {.key = key,
				.klen = strlen(key),
				.target = KM_ETCD_MOD,
				.result = KM_ETCD_EQUAL,
				.num = mod};
			struct km_etcd_op op = {.type = KM_ETCD_OP_PUT,
				.key = key,
				.klen = strlen(key),
				.value = val,
				.vlen = strlen(val)};

			rc = km_etcd_txn(cl.e, &cmp, 1, &op, 1, NULL, 0, NULL, NULL);
		}
		if (rc == 1) {
			cl.incarnation = n + 1;
			return 0;
		}
		if (rc < 0)
			break;
	}
	KM_LOG(ERR, "cluster: cannot claim an incarnation of node %s at %s: %s",
		cl.conf->cluster_node, cl.conf->cluster_etcd,
		rc < 0 ? km_etcd_errmsg(cl.e) : "lost the race ten times");
	return rc < 0 ? rc : -EAGAIN;
}

/*
 * The lease surely lives until ttl seconds after the renewal that answered ttl was sent
 * (etcd counts from its receipt, later), less a margin for the clocks' rates: workers stop
 * serving replicated shards past it (km_proc_repl_lease), before the placer can see the
 * lease expire and promote a replica.
 */
static void
lease_alive_until(uint64_t t_send, int64_t ttl)
{
	double ns = (double)t_send * 1e9 / (double)rte_get_tsc_hz();
	uint64_t margin = (uint64_t)ttl * 100000000u; /* 10 % */
	uint64_t until = (uint64_t)ns + (uint64_t)ttl * 1000000000u - margin;

	pthread_mutex_lock(&cl.fence_mu);
	if (cl.fence_hold)
		cl.fence_pending_ns = until;
	else
		atomic_store(&km_cluster_lease_ns, until);
	pthread_mutex_unlock(&cl.fence_mu);
}

/* The lease expired: the fence closes now, and stays closed under the next lease until a
 * map read after it is applied (fence_mu). Membership thread. */
static void
lease_lost(void)
{
	pthread_mutex_lock(&cl.fence_mu);
	atomic_store(&km_cluster_lease_ns, 0);
	if (!cl.fence_hold)
		KM_LOG(WARNING, "cluster: replicated shards fenced (BUSY) until the node has a "
				"lease again and has applied the map as it is then");
	cl.fence_hold = 1;
	cl.fence_read = 0;
	cl.fence_epoch = 0;
	cl.fence_gen++;
	cl.fence_pending_ns = 0;
	pthread_mutex_unlock(&cl.fence_mu);
}

/* Membership thread: the member record is in etcd again under the new lease. From now on
 * the placer cannot publish a failover decided on the node's absence (it compares the
 * member records), so a map read now has every one of them. */
static void
lease_registered(void)
{
	pthread_mutex_lock(&cl.fence_mu);
	if (cl.fence_hold && cl.fence_epoch == 0)
		cl.fence_read = 1;
	pthread_mutex_unlock(&cl.fence_mu);
}

static void thread_sleep_ms(unsigned int ms);

/* Cluster thread: read map/current for a fence held (its epoch, then posted as any map
 * read). */
static void
fence_read_map(void)
{
	struct km_etcd_kvs *r = NULL;
	char key[KEY_MAX];
	struct km_cmap *m = NULL;
	uint32_t epoch = 1, gen;
	int rc, want, bad = 0;

	pthread_mutex_lock(&cl.fence_mu);
	want = cl.fence_read;
	cl.fence_read = 0;
	gen = cl.fence_gen;
	pthread_mutex_unlock(&cl.fence_mu);
	if (!want)
		return;
	key_of(key, sizeof(key), "map/current", NULL);
	rc = km_etcd_get(cl.e, key, strlen(key), 0, &r);
	if (rc > 0 &&
		km_cmap_decode((const char *)r->kv[0].value, r->kv[0].vlen, &m, NULL, 0) == 0) {
		epoch = m->epoch;
		km_cmap_free(m);
		map_seen(r->kv[0].value, r->kv[0].vlen, r->kv[0].mod_rev);
	} else if (rc >= 0) {
		/* No map, or one this node cannot read (a newer placer's): the fence stays
		 * held, as a failover map may stand there. */
		static uint32_t logged_gen = UINT32_MAX;

		if (logged_gen != gen) /* once per fence */
			KM_LOG(WARNING, "cluster: lease fence: %s; replicated shards stay fenced",
				rc == 0 ? "no map in etcd" : "the map in etcd does not decode");
		logged_gen = gen;
		bad = 1;
	}
	km_etcd_kvs_free(r);
	pthread_mutex_lock(&cl.fence_mu);
	/* A lease lost again meanwhile: the map is read after the next registration. */
	if (gen == cl.fence_gen && (rc < 0 || bad))
		cl.fence_read = 1; /* tried again */
	else if (gen == cl.fence_gen)
		cl.fence_epoch = epoch;
	pthread_mutex_unlock(&cl.fence_mu);
	if (rc < 0)
		etcd_failed(cl.e, "read the map for the lease fence", rc);
	else if (bad)
		thread_sleep_ms(200); /* not read again at once */
}

/* Control lcore: reopen a held fence once the map read under the new lease is applied. */
static void
fence_tick(void)
{
	pthread_mutex_lock(&cl.fence_mu);
	if (cl.fence_hold && cl.fence_epoch != 0 && cl.epoch >= cl.fence_epoch &&
		cl.fence_pending_ns != 0) {
		atomic_store(&km_cluster_lease_ns, cl.fence_pending_ns);
		cl.fence_hold = 0;
		KM_LOG(NOTICE,
			"cluster: replicated shards serve again: map epoch %u applied "
			"under the new lease",
			cl.epoch);
	}
	pthread_mutex_unlock(&cl.fence_mu);
}

/* Put the member record under a new lease, if no live member has this id.
 * @param wait_s how long a record of another incarnation may take to expire.
 * @return 0, -EEXIST (a live member has the id), or -errno. */
static int
register_member(unsigned int wait_s)
{
	char key[KEY_MAX];
	uint64_t t0 = rte_get_timer_cycles(), hz = rte_get_timer_hz(), t_send;
	int64_t lease = 0;
	int rc;

	key_of(key, sizeof(key), "members/", cl.conf->cluster_node);
	t_send = rte_rdtsc();
	rc = km_etcd_lease_grant(cl.e, (int64_t)cl.conf->cluster_ttl_s, &lease, NULL);
	if (rc == 0)
		lease_alive_until(t_send, (int64_t)cl.conf->cluster_ttl_s);
	if (rc < 0)
		return rc;
	for (;;) {
		struct km_etcd_cmp cmp = {.key = key,
			.klen = strlen(key),
			.target = KM_ETCD_CREATE,
			.result = KM_ETCD_EQUAL,
			.num = 0};
		struct km_etcd_op op = {.type = KM_ETCD_OP_PUT,
			.key = key,
			.klen = strlen(key),
			.value = cl.member,
			.vlen = strlen(cl.member),
			.lease = lease};
		struct km_etcd_op get = {.type = KM_ETCD_OP_GET, .key = key, .klen = strlen(key)};
		struct km_etcd_kvs *r = NULL;

		rc = km_etcd_txn(cl.e, &cmp, 1, &op, 1, &get, 1, NULL, &r);
		if (rc == 1) {
			km_etcd_kvs_free(r);
			atomic_store(&cl.lease, lease);
			return 0;
		}
		if (rc < 0) {
			/* Not registered: the lease goes (with the record, had it been put). */
			km_etcd_kvs_free(r);
			(void)km_etcd_lease_revoke(cl.e, lease);
			return rc;
		}
		/* A record with this id: a previous run's, expiring, or a live duplicate. */
		if ((rte_get_timer_cycles() - t0) / hz >= wait_s || atomic_load(&cl.stop)) {
			KM_LOG(ERR,
				"cluster: node id %s is in use by a live member (%.*s): give each "
				"node its own [cluster] node",
				cl.conf->cluster_node,
				r != NULL && r->n > 0 ? (int)RTE_MIN(r->kv[0].vlen, 200) : 0,
				r != NULL && r->n > 0 ? (const char *)r->kv[0].value : "");
			km_etcd_kvs_free(r);
			km_etcd_lease_revoke(cl.e, lease);
			return -EEXIST;
		}
		km_etcd_kvs_free(r);
		usleep(200 * 1000);
	}
}

/* ---- the membership thread ----------------------------------------------------------- */

static void
thread_sleep_ms(unsigned int ms)
{
	while (ms > 0 && !atomic_load(&cl.stop)) {
		unsigned int step = ms < 100 ? ms : 100;

		usleep(step * 1000);
		ms -= step;
	}
}

/* The membership thread's etcd timeout: well inside the TTL (a renewal that hangs must not
 * outlast the lease). */
static unsigned int
member_timeout_ms(void)
{
	uint64_t ms = cl.conf->cluster_ttl_s * 1000 / 3;

	return ms < 500 ? 500 : ms > ETCD_TIMEOUT_MS ? ETCD_TIMEOUT_MS : (unsigned int)ms;
}

/* Put the member record under lease, only while no newer run of this node id claimed an
 * incarnation since. @return 1 put, 0 a newer run has the id, -ENOENT (the lease is
 * gone), or -errno. */
static int
member_put(struct km_etcd *e, int64_t lease, int serving)
{
	char key[KEY_MAX], ikey[KEY_MAX], inc[32], *val = member_json(serving);
	int rc;

	if (val == NULL)
		return -ENOMEM;
	key_of(key, sizeof(key), "members/", cl.conf->cluster_node);
	key_of(ikey, sizeof(ikey), "incarnation/", cl.conf->cluster_node);
	snprintf(inc, sizeof(inc), "%" PRIu64, cl.incarnation);
	{
		struct km_etcd_cmp cmp = {.key = ikey,
			.klen = strlen(ikey),
			.target = KM_ETCD_VALUE,
			.result = KM_ETCD_EQUAL,
			.value = inc,
			.vlen = strlen(inc)};
		struct km_etcd_op op = {.type = KM_ETCD_OP_PUT,
			.key = key,
			.klen = strlen(key),
			.value = val,
			.vlen = strlen(val),
			.lease = lease};

		rc = km_etcd_txn(e, &cmp, 1, &op, 1, NULL, 0, NULL, NULL);
	}
	free(val);
	return rc;
}

struct member_state {
	int registered;  /* the record is in etcd under cl.lease */
	int put_serving; /* its "serving" */
};

/*
 * Keep the lease (renew: its time) and the member record: a lease that expired (etcd lost
 * for longer than the TTL) is replaced; the record is put again under it, tried at every
 * renewal until it is in (a registration that failed half-way is not left so), and again
 * when the node starts serving.
 */
static void
member_tick(struct km_etcd *e, struct member_state *ms, int renew)
{
	int64_t lease = atomic_load(&cl.lease), ttl = 0;
	int want = atomic_load(&cl.serving), rc;

	if (!renew && (!ms->registered || ms->put_serving == want))
		return;
	if (renew && lease != 0) {
		uint64_t t_send = rte_rdtsc();

		rc = km_etcd_lease_keepalive(e, lease, &ttl);
		if (rc == 0 && ttl > 0)
			lease_alive_until(t_send, ttl);
		if (rc < 0 && rc != -ENOENT) {
			etcd_failed(e, "lease keepalive", rc);
			return;
		}
		if (rc == -ENOENT || ttl <= 0) {
			KM_LOG(WARNING, "cluster: the membership lease expired: registering again");
			lease_lost();
			atomic_store(&cl.lease, 0);
			lease = 0;
			ms->registered = 0;
		}
	}
	if (lease == 0) {
		uint64_t t_send = rte_rdtsc();

		rc = km_etcd_lease_grant(e, (int64_t)cl.conf->cluster_ttl_s, &lease, NULL);
		if (rc == 0)
			lease_alive_until(t_send, (int64_t)cl.conf->cluster_ttl_s);
		if (rc < 0) {
			etcd_failed(e, "lease grant", rc);
			return;
		}
		atomic_store(&cl.lease, lease);
		ms->registered = 0;
	}
	if (ms->registered && ms->put_serving == want) {
		etcd_worked();
		return;
	}
	rc = member_put(e, lease, want);
	if (rc == 1) {
		if (!ms->registered)
			KM_LOG(NOTICE, "cluster: node %s registered (lease %" PRIx64 ")",
				cl.conf->cluster_node, (uint64_t)lease);
		if (want && !ms->put_serving)
			KM_LOG(NOTICE, "cluster: node %s serves: its member record says so",
				cl.conf->cluster_node);
		ms->registered = 1;
		ms->put_serving = want;
		lease_registered();
		etcd_worked();
		return;
	}
	if (rc == 0) {
		KM_LOG(CRIT,
			"cluster: node id %s was taken by a newer run (incarnation above %" PRIu64
			"): this one stops",
			cl.conf->cluster_node, cl.incarnation);
		(void)km_etcd_lease_revoke(e, lease);
		atomic_store(&cl.lease, 0);
		atomic_store_explicit(&km_dp.stop, 1, memory_order_relaxed);
		km_ctl_wake();
		atomic_store(&cl.stop, 1);
		return;
	}
	if (rc == -ENOENT) {
		/* The lease expired meanwhile: a new one at the next renewal. */
		lease_lost();
		atomic_store(&cl.lease, 0);
		ms->registered = 0;
	}
	etcd_failed(e, ms->registered ? "member record" : "register again", rc);
}

/* The membership thread: its own etcd handle (arg), so that no other call delays a
 * renewal; renews every third of the TTL. */
static void *
member_thread(void *arg)
{
	struct km_etcd *e = arg;
	uint64_t hz = rte_get_timer_hz(), last = rte_get_timer_cycles(), now;
	uint64_t every = cl.conf->cluster_ttl_s * hz / 3;
	struct member_state ms = {.registered = 1, .put_serving = 0};

	while (!atomic_load(&cl.stop)) {
		now = rte_get_timer_cycles();
		if (now - last >= every) {
			last = now;
			member_tick(e, &ms, 1);
		} else {
			member_tick(e, &ms, 0);
		}
		thread_sleep_ms(100);
	}
	km_etcd_close(e);
	return NULL;
}

/* ---- the cluster thread ------------------------------------------------------------ */

/* Put P/<what><node> = val under the lease (none: not put). @return the put's rc. */
static int
put_report(const char *what, const char *val, const char *name)
{
	int64_t lease = atomic_load(&cl.lease);
	char key[KEY_MAX];
	int rc;

	if (lease == 0)
		return -ENOENT;
	key_of(key, sizeof(key), what, cl.conf->cluster_node);
	rc = km_etcd_put(cl.e, key, strlen(key), val, strlen(val), lease, NULL);
	if (rc < 0 && rc != -ENOENT)
		etcd_failed(cl.e, name, rc);
	return rc;
}

/* The replication report, when it changed (docs/cluster.md section 7). */
static void
put_repl(void)
{
	uint64_t seq = 0;
	char *r = km_cluster_repl_report_take(&seq);

	if (r == NULL)
		return;
	if (put_report("repl/", r, "replication report") >= 0)
		km_cluster_repl_report_put(seq);
	free(r);
}

static void
put_load(void)
{
	char *load;

	pthread_mutex_lock(&cl.mu);
	load = cl.load;
	cl.load = NULL;
	pthread_mutex_unlock(&cl.mu);
	if (load == NULL)
		return;
	(void)put_report("load/", load, "load report");
	free(load);
}

/* Read map/current again (after a compaction or at a watch's start). @return 0 and the
 * revision to watch from, or -errno. */
static int
map_read(int64_t *from)
{
	char key[KEY_MAX];
	struct km_etcd_kvs *r = NULL;
	int rc;

	key_of(key, sizeof(key), "map/current", NULL);
	rc = km_etcd_get(cl.e, key, strlen(key), 0, &r);
	if (rc < 0)
		return rc;
	if (rc > 0)
		map_seen(r->kv[0].value, r->kv[0].vlen, r->kv[0].mod_rev);
	*from = r->revision + 1;
	km_etcd_kvs_free(r);
	return 0;
}

static void *
cluster_thread(void *arg)
{
	uint64_t hz = rte_get_timer_hz(), load = 0, now;
	uint64_t load_every = cl.conf->cluster_load_ms * hz / 1000;
	struct km_etcd_watch *w = NULL, *mw = NULL;
	int64_t from = cl.watch_rev, mfrom = 0;
	char key[KEY_MAX], mkey[KEY_MAX];
	int rc;

	(void)arg;
	key_of(key, sizeof(key), "map/current", NULL);
	key_of(mkey, sizeof(mkey), "moves/", NULL);
	th.reconcile_tsc = rte_get_timer_cycles();
	while (!atomic_load(&cl.stop)) {
		struct km_etcd_kvs *ev = NULL;
		size_t i;

		now = rte_get_timer_cycles();
		if (now - load >= load_every) {
			put_load();
			load = now;
		}
		put_repl();
		fence_read_map();
		if (w == NULL) {
			if (from == 0 && (rc = map_read(&from)) < 0) {
				etcd_failed(cl.e, "read the map", rc);
				thread_sleep_ms(RETRY_MS);
				continue;
			}
			rc = km_etcd_watch_open(cl.e, key, strlen(key), 0, from, &w);
			if (rc < 0) {
				etcd_failed(cl.e, "watch the map", rc);
				w = NULL;
				thread_sleep_ms(RETRY_MS);
				continue;
			}
		}
		if (mw == NULL) {
			if (mfrom == 0) {
				/* The moves as they are, then their changes. */
				rc = km_etcd_get(cl.e, mkey, strlen(mkey), KM_ETCD_PREFIX, &ev);
				if (rc < 0) {
					etcd_failed(cl.e, "read the moves", rc);
					thread_sleep_ms(RETRY_MS);
					continue;
				}
				for (i = 0; i < (size_t)rc; i++)
					move_seen(&ev->kv[i]);
				mfrom = ev->revision + 1;
				km_etcd_kvs_free(ev);
				ev = NULL;
			}
			rc = km_etcd_watch_open(
				cl.e, mkey, strlen(mkey), KM_ETCD_PREFIX, mfrom, &mw);
			if (rc < 0) {
				etcd_failed(cl.e, "watch the moves", rc);
				mw = NULL;
				thread_sleep_ms(RETRY_MS);
				continue;
			}
		}
		/* Deletions first, in order: no later move event is read before they are
		 * decided. */
		checks_run();
		if (th.nb_chk > 0) {
			thread_sleep_ms(200);
		} else {
			rc = km_etcd_watch_next(mw, 100, &ev);
			if (rc < 0) {
				mfrom = rc == -ESTALE ? 0 : km_etcd_watch_next_rev(mw);
				km_etcd_watch_close(mw);
				mw = NULL;
				if (rc != -ESTALE && rc != -ECONNRESET)
					etcd_failed(cl.e, "moves watch", rc);
			} else {
				for (i = 0; i < (size_t)rc; i++)
					move_seen(&ev->kv[i]);
				km_etcd_kvs_free(ev);
			}
			ev = NULL;
			checks_run();
		}
		now = rte_get_timer_cycles();
		if (atomic_exchange(&cl.rescan, 0))
			th.reconcile_tsc = 0; /* a queue was full: read moves/ again */
		if (th.nb_chk == 0 && now - th.reconcile_tsc >= RECONCILE_S * hz) {
			rc = reconcile();
			if (rc < 0)
				etcd_failed(cl.e, "reconcile the moves", rc);
			else
				th.reconcile_tsc = now;
		}
		rc = km_etcd_watch_next(w, 100, &ev);
		if (rc < 0) {
			/* Compacted: read it again; broken: resume after the last event. */
			from = rc == -ESTALE ? 0 : km_etcd_watch_next_rev(w);
			km_etcd_watch_close(w);
			w = NULL;
			if (rc != -ESTALE && rc != -ECONNRESET)
				etcd_failed(cl.e, "map watch", rc);
			continue;
		}
		etcd_worked(); /* etcd answers (the status shows the last call's outcome) */
		for (i = 0; i < (size_t)rc; i++)
			if (!ev->kv[i].deleted)
				map_seen(ev->kv[i].value, ev->kv[i].vlen, ev->kv[i].mod_rev);
		km_etcd_kvs_free(ev);
	}
	km_etcd_watch_close(w);
	km_etcd_watch_close(mw);
	return NULL;
}

/* ---- join and leave ----------------------------------------------------------------- */

int
km_cluster_join(const struct km_conf *conf, uint16_t nb_workers, struct km_shardmap **map)
{
	uint64_t hz = rte_get_timer_hz(), t0 = rte_get_timer_cycles(), logged = 0;
	struct km_etcd *me = NULL;
	struct km_cmap *m = NULL;
	uint32_t mine = 0;
	int self, rc;
	char err[KM_CLUSTER_ERR_MAX + 64];

	*map = NULL;
	if (conf->cluster_name[0] == '\0')
		return 0;
	cl.conf = conf;
	cl.nb_workers = nb_workers;
	cl.ip = ntohl(conf->cluster_advertise != 0 ? conf->cluster_advertise : conf->ip);
	if (!km_cluster_id_valid(conf->cluster_name) || !km_cluster_id_valid(conf->cluster_node)) {
		KM_LOG(ERR,
			"[cluster] name '%s', node '%s': each must be 1-63 of A-Z a-z 0-9 . _ -",
			conf->cluster_name, conf->cluster_node);
		return -1;
	}
	snprintf(cl.prefix, sizeof(cl.prefix), "/keymap/%s/", conf->cluster_name);
	rc = km_etcd_open(conf->cluster_etcd, ETCD_TIMEOUT_MS, &cl.e);
	if (rc < 0) {
		KM_LOG(ERR, "[cluster] etcd '%s': not a list of http://host:port endpoints",
			conf->cluster_etcd);
		return -1;
	}
	if (claim_incarnation() < 0)
		goto fail;
	cl.member = member_json(0);
	if (cl.member == NULL) {
		KM_LOG(ERR, "cluster: out of memory");
		goto fail;
	}
	rc = register_member((unsigned int)conf->cluster_ttl_s + 2);
	if (rc < 0) {
		if (rc != -EEXIST)
			KM_LOG(ERR, "cluster: cannot register node %s at %s: %s",
				conf->cluster_node, conf->cluster_etcd, km_etcd_errmsg(cl.e));
		goto fail;
	}
	/* From here the membership thread keeps the lease and the record, on its own
	 * handle (handed to it). */
	rc = km_etcd_open(conf->cluster_etcd, member_timeout_ms(), &me);
	if (rc < 0 || pthread_create(&cl.mthr, NULL, member_thread, me) != 0) {
		KM_LOG(ERR, "cluster: cannot start its membership thread");
		km_etcd_close(me);
		goto fail;
	}
	cl.mthr_started = 1;
	pthread_setname_np(cl.mthr, "km-member");
	rc = km_cluster_side_start(
		ntohl(conf->cluster_side_addr), (uint16_t)conf->cluster_side_port);
	if (rc < 0) {
		KM_LOG(ERR, "[cluster] side_port %" PRIu64 ": cannot listen: %s",
			conf->cluster_side_port, strerror(-rc));
		goto fail;
	}
	if (moves_fail_own((unsigned int)conf->cluster_ttl_s + 2 < 10
				   ? 10
				   : (unsigned int)conf->cluster_ttl_s + 2) < 0)
		goto fail;
	rc = km_cluster_repl_start(strcmp(conf->cluster_replication, "async") != 0);
	if (rc < 0) {
		KM_LOG(ERR, "cluster: cannot start replication: %s", strerror(-rc));
		goto fail;
	}
	cl.on = 1;
	KM_LOG(NOTICE,
		"cluster %s: node %s registered (incarnation %" PRIu64 ", lease %" PRIx64 ")",
		conf->cluster_name, conf->cluster_node, cl.incarnation,
		(uint64_t)atomic_load(&cl.lease));
	/* The map as it is now; then the thread watches it from there. */
	rc = map_read(&cl.watch_rev);
	if (rc < 0) {
		KM_LOG(ERR, "cluster: cannot read the map: %s", km_etcd_errmsg(cl.e));
		goto fail;
	}
	if (pthread_create(&cl.thr, NULL, cluster_thread, NULL) != 0) {
		KM_LOG(ERR, "cluster: cannot start its thread");
		goto fail;
	}
	cl.thr_started = 1;
	pthread_setname_np(cl.thr, "km-cluster");
	/* Wait for a map with this node: the placer adds new members to its table. */
	while (m == NULL) {
		if (atomic_load_explicit(&km_dp.stop, memory_order_relaxed))
			goto fail;
		pthread_mutex_lock(&cl.mu);
		m = cl.pending;
		cl.pending = NULL;
		pthread_mutex_unlock(&cl.mu);
		if (m != NULL)
			break;
		if ((rte_get_timer_cycles() - t0) / hz >= logged) {
			if (logged != 0)
				KM_LOG(NOTICE,
					"cluster %s: waiting for a map with node %s from "
					"keymap-placer "
					"(%" PRIu64 " s)",
					conf->cluster_name, conf->cluster_node, logged);
			logged += WAIT_LOG_S;
		}
		usleep(100 * 1000);
	}
	self = map_for_us(m, err, sizeof(err));
	rc = self < 0 ? self : km_cmap_shardmap(m, self, map);
	if (rc < 0) {
		KM_LOG(ERR, "cluster map epoch %u: %s", m->epoch, strerror(-rc));
		km_cmap_free(m);
		goto fail;
	}
	cl.epoch = m->epoch;
	cl.st.maps_applied = 1;
	cl.cur = m;
	for (uint32_t i = 0; i < km_shardmap_nb_shards(*map); i++)
		mine += km_shard_owner(km_shardmap_shard_at(*map, i)) != KM_OWNER_REMOTE;
	KM_LOG(NOTICE, "cluster %s: map epoch %u, %u of its %u shards on this node",
		conf->cluster_name, cl.epoch, mine, km_shardmap_nb_shards(*map));
	return 0;
fail:
	km_cluster_leave();
	return -1;
}

void
km_cluster_leave(void)
{
	char key[KEY_MAX];

	int64_t lease;

	atomic_store(&cl.stop, 1);
	if (cl.thr_started) {
		pthread_join(cl.thr, NULL);
		cl.thr_started = 0;
	}
	if (cl.mthr_started) {
		pthread_join(cl.mthr, NULL);
		cl.mthr_started = 0;
	}
	lease = atomic_exchange(&cl.lease, 0);
	if (cl.e != NULL) {
		/* The record and the load report go with the lease: the placer sees this node
		 * leave at once instead of after the TTL. A lease of a join that did not
		 * complete goes too. */
		if (lease != 0 && km_etcd_lease_revoke(cl.e, lease) == 0 && cl.on)
			KM_LOG(NOTICE, "cluster: node %s left", cl.conf->cluster_node);
		(void)key;
		km_etcd_close(cl.e);
		cl.e = NULL;
	}
	km_cluster_repl_stop();
	km_cluster_side_stop();
	cl.on = 0;
	km_cmap_free(cl.cur);
	cl.cur = NULL;
	pthread_mutex_lock(&cl.mu);
	km_cmap_free(cl.pending);
	cl.pending = NULL;
	free(cl.load);
	cl.load = NULL;
	pthread_mutex_unlock(&cl.mu);
	free(cl.member);
	cl.member = NULL;
}

/* ---- applying maps (control lcore) ------------------------------------------------- */

/* An empty store for shard id on worker w (a shard new to this node). @return 0 or -errno. */
static int
shard_create(uint16_t w, uint64_t id)
{
	struct km_proc_dedup *dd = NULL;
	struct km_store *s = NULL;
	struct timespec now;
	uint64_t vbase;
	int rc;

	/* Versions above any this shard had anywhere: the clock's. */
	clock_gettime(CLOCK_REALTIME, &now);
	vbase = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	rc = km_proc_store_stage(km_dp.workers[w].proc, id, vbase, KM_TIER_HOT, &s);
	if (rc == 0 && s->ops->commit != NULL)
		rc = s->ops->commit(s);
	if (rc == 0)
		rc = km_mailbox_attach(w, id, s, &dd, 0);
	if (rc < 0 && s != NULL)
		km_store_discard(s);
	return rc;
}

static int
info_find(const struct km_shard_info *in, uint32_t n, uint64_t id)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (in[mid].id == id)
			return (int)mid;
		if (in[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/*
 * Apply cluster map m: from what the workers hold (asked, not assumed), create and hand
 * over, publish this node's view, drop what went to other nodes.
 * @return 0, or -errno with the reason logged (the previous view stays published).
 */
static int
apply(const struct km_cmap *m, int quiet)
{
	struct km_shard_info *in = NULL;
	struct km_shardmap *nm = NULL;
	char err[KM_CLUSTER_ERR_MAX + 64];
	uint32_t n = 0, i, mine = 0;
	struct km_proc_dedup *dd_in = NULL;
	const struct km_cmap_shard *was;
	struct km_store *st_in;
	int self, rc, k;

	self = map_for_us(m, err, sizeof(err));
	if (self < 0) {
		KM_LOG(ERR, "cluster map epoch %u refused, epoch %u kept: %s", m->epoch, cl.epoch,
			err);
		return -EINVAL;
	}
	/* Replicas first: a shard promoted here arrives as a received one. */
	km_cluster_repl_map_pre(m, self);
	rc = km_cmap_shardmap(m, self, &nm);
	if (rc == 0)
		rc = km_ctl_gather_infos(&in, &n);
	if (rc < 0) {
		KM_LOG(ERR, "cluster map epoch %u: %s", m->epoch, strerror(-rc));
		km_shardmap_free(nm);
		return rc;
	}
	for (i = 0; i < km_shardmap_nb_shards(nm); i++) {
		const struct km_shard *s = km_shardmap_shard_at(nm, i);
		uint16_t w = km_shard_owner(s);
		uint64_t id = km_shard_id(s);

		if (w == KM_OWNER_REMOTE)
			continue;
		mine++;
		k = info_find(in, n, id);
		if (k >= 0 && in[k].worker == w)
			continue; /* where it should be */
		if (k < 0 && km_cluster_move_parked(id)) {
			/* On its way to another node, or back here: a copy received since
			 * is newer than the one parked (its move was completed before). */
			if (!km_cluster_incoming_has(id))
				continue;
			km_cluster_move_superseded(id);
		}
		if (k < 0 && (st_in = km_cluster_incoming_take(id, &dd_in)) != NULL) {
			/* Sent here by its previous node (a cross-node move), with its
			 * at-most-once entries. */
			rc = km_mailbox_attach(w, id, st_in, &dd_in, 0);
			if (rc < 0) {
				km_cluster_incoming_return(id, st_in, dd_in); /* tried again */
				dd_in = NULL;
			} else
				KM_LOG(NOTICE,
					"cluster map epoch %u: shard %" PRIu64
					" received from another node, serving on worker %u",
					m->epoch, id, w);
		} else if (k < 0 && cl.cur != NULL &&
			   (was = km_cmap_shard_find(cl.cur, id)) != NULL) {
			/* It existed (here or elsewhere) and is not here: it comes with its
			 * data or not at all. The rest of the map applies; the shard answers
			 * BUSY until its data arrives (a move's stream). */
			km_cluster_missing_add(id, w);
			if (!quiet)
				rte_log(strcmp(cl.cur->nodes[was->node].id,
						cl.conf->cluster_node) == 0
						? RTE_LOG_CRIT
						: RTE_LOG_ERR,
					km_logtypes[KM_LOG_COMP],
					"cluster map epoch %u gives shard %" PRIu64
					" to worker %u, held by node %s in epoch %u, but its data "
					"is not here: it answers BUSY until it arrives\n",
					m->epoch, id, w, cl.cur->nodes[was->node].id, cl.epoch);
		} else if (k < 0) {
			rc = shard_create(w, id);
			if (rc == 0) {
				cl.st.shards_created++;
				KM_LOG(NOTICE,
					"cluster map epoch %u: shard %" PRIu64
					" created on worker %u",
					m->epoch, id, w);
			}
		} else {
			struct km_proc_dedup *dd = NULL;
			struct km_store *st = NULL;
			uint64_t keys = 0;
			uint32_t nd = 0;

			rc = km_mailbox_move((uint16_t)in[k].worker, w, id, km_shardmap_epoch(nm),
				&st, &dd, &keys, &nd);
			if (rc < 0 && st != NULL) {
				/* Detached, not attached: back where it was. */
				if (km_mailbox_attach((uint16_t)in[k].worker, id, st, &dd, 1) < 0)
					KM_LOG(CRIT,
						"shard %" PRIu64 ": lost between workers %u and %u",
						id, (unsigned int)in[k].worker, w);
				km_proc_dedup_free(dd);
			}
			if (rc == 0)
				cl.st.shards_moved++;
		}
		if (rc < 0) {
			if (!quiet)
				KM_LOG(ERR,
					"cluster map epoch %u: shard %" PRIu64 " on worker %u: %s: "
					"the map is tried again",
					m->epoch, id, w, strerror(-rc));
			free(in);
			km_shardmap_free(nm);
			return rc;
		}
	}
	/* The streams to its replicas before the map serves: a write acknowledged from
	 * now on waits for every replica the map lists in sync. */
	km_cluster_repl_map_post(m, self);
	km_control_publish_map(nm);
	cl.epoch = m->epoch;
	/* Shards now another node's: they answer MOVED since the publication. */
	for (i = 0; i < n; i++) {
		const struct km_shard *s = km_shardmap_find(km_map_current, in[i].id);
		struct km_proc_dedup *dd = NULL;
		struct km_store *st = NULL;

		if (s != NULL && km_shard_owner(s) != KM_OWNER_REMOTE)
			continue;
		rc = km_mailbox_detach((uint16_t)in[i].worker, in[i].id, &st, &dd);
		if (rc < 0) {
			KM_LOG(ERR,
				"shard %" PRIu64 " (another node's now): worker %u keeps it: %s",
				in[i].id, (unsigned int)in[i].worker, strerror(-rc));
			continue;
		}
		/* Its files stay (a persistent store): a later map giving it back creates it
		 * anew, and a restart does not serve it unless the map gives it back. */
		km_store_destroy(st);
		km_proc_dedup_free(dd);
		cl.st.shards_dropped++;
		KM_LOG(NOTICE, "cluster map epoch %u: shard %" PRIu64 " is another node's: dropped",
			m->epoch, in[i].id);
	}
	free(in);
	cl.st.maps_applied++;
	KM_LOG(NOTICE, "cluster map epoch %u applied: %u shards on this node", m->epoch, mine);
	return 0;
}

/* The load report: this node's shards and their rates. */
static void
load_report(void)
{
	json_t *o = json_object(), *rates = json_array();
	uint32_t i;
	char *s;

	if (o == NULL || rates == NULL)
		goto out;
	for (i = 0; i < km_ctl.nb_shards; i++) {
		json_t *r =
			json_pack("[I, f]", (json_int_t)km_ctl.shards[i].id, km_ctl.shards[i].rate);

		if (r != NULL)
			json_array_append_new(rates, r);
	}
	json_object_set_new(o, "epoch", json_integer(cl.epoch));
	json_object_set(o, "rates", rates);
	s = json_dumps(o, JSON_COMPACT);
	if (s != NULL) {
		pthread_mutex_lock(&cl.mu);
		free(cl.load);
		cl.load = s;
		pthread_mutex_unlock(&cl.mu);
	}
out:
	json_decref(rates);
	json_decref(o);
}

/* A new map from the cluster thread: applied, kept as the current one; one that cannot
 * be applied for now (not one refused) is tried again at the next tick unless a newer map
 * came meanwhile. */
static void
tick_map(struct km_cmap *m)
{
	int rc;

	if (m->epoch <= cl.epoch) {
		/* The current map again (a watch restarted) is no news; an older one, or
		 * another map of this epoch, is refused: logged once per epoch. */
		if ((m->epoch < cl.epoch || !km_cmap_equal(m, cl.cur)) &&
			cl.stale_logged != m->epoch) {
			KM_LOG(WARNING,
				"cluster map epoch %u refused: %s epoch %u applied, which is kept",
				m->epoch,
				m->epoch < cl.epoch ? "not above the" : "another map of the",
				cl.epoch);
			cl.stale_logged = m->epoch;
		}
		km_cmap_free(m);
		return;
	}
	rc = apply(m, cl.refused == m->epoch);
	if (rc == 0) {
		km_cmap_free(cl.cur);
		cl.cur = m;
		return;
	}
	if (cl.refused != m->epoch)
		cl.st.maps_refused++;
	cl.refused = m->epoch;
	pthread_mutex_lock(&cl.mu);
	if (rc != -EINVAL && cl.pending == NULL) {
		cl.pending = m;
		m = NULL;
	}
	pthread_mutex_unlock(&cl.mu);
	km_cmap_free(m);
}

/* A move request on the control lcore: started, kept while this node has not applied the
 * map it was planned on (epoch), or dropped (logged once per request). @return 1 kept. */
static int
tick_move(struct km_cluster_move_req *rq, uint32_t epoch)
{
	const struct km_shard *sh = km_shardmap_find(km_map_current, rq->id);
	int to = cl.cur != NULL ? km_cmap_node_find(cl.cur, rq->to) : -1;

	if (sh == NULL || km_shard_owner(sh) == KM_OWNER_REMOTE || to < 0) {
		unsigned int i;

		if (cl.epoch < epoch)
			return 1; /* planned on a map not applied here yet */
		for (i = 0; i < RTE_DIM(cl.started); i++)
			if (cl.started[i].id == rq->id && cl.started[i].rev == rq->rev)
				return 0; /* started already, over since */
		if (cl.ignored_id != rq->id || cl.ignored_rev != rq->rev)
			KM_LOG(WARNING,
				"cluster: move of shard %" PRIu64
				" to node %s (planned on epoch %u) "
				"ignored at epoch %u: %s",
				rq->id, rq->to, epoch, cl.epoch,
				to < 0 ? "no such node in the map" : "not this node's shard");
		cl.ignored_id = rq->id;
		cl.ignored_rev = rq->rev;
		return 0;
	}
	rq->to_ip = cl.cur->nodes[to].ip;
	km_cluster_move_start(rq);
	cl.started[cl.started_next].id = rq->id;
	cl.started[cl.started_next].rev = rq->rev;
	cl.started_next = (cl.started_next + 1) % RTE_DIM(cl.started);
	return 0;
}

/* Keep rq for a later map (a newer request of the shard replaces an older one). */
static void
defer_put(const struct km_cluster_move_req *rq, uint32_t epoch)
{
	unsigned int i;

	for (i = 0; i < cl.nb_defer && cl.defer[i].id != rq->id; i++)
		;
	if (i == cl.nb_defer) {
		if (cl.nb_defer == RTE_DIM(cl.defer)) {
			/* The cluster thread queues it again at its next reconciliation. */
			KM_LOG(INFO,
				"cluster: move of shard %" PRIu64 " put off: %u wait for a map",
				rq->id, cl.nb_defer);
			return;
		}
		cl.nb_defer++;
	}
	cl.defer[i] = *rq;
	cl.defer_epoch[i] = epoch;
}

void
km_cluster_tick(void)
{
	struct km_cluster_move_req mvs[RTE_DIM(cl.moves) + RTE_DIM(cl.defer)];
	uint32_t eps[RTE_DIM(cl.moves) + RTE_DIM(cl.defer)];
	struct km_cluster_gone gone[RTE_DIM(cl.gone)];
	uint64_t now;
	unsigned int nmv, ngone, i, k;
	struct km_cmap *m;

	if (!cl.on)
		return;
	atomic_store(&cl.serving, 1);
	now = rte_get_timer_cycles();
	if (now - cl.load_tsc >= cl.conf->cluster_load_ms * rte_get_timer_hz() / 1000) {
		load_report();
		cl.load_tsc = now;
	}
	if (pthread_mutex_trylock(&cl.mu) != 0)
		return;
	m = cl.pending;
	cl.pending = NULL;
	/* The requests kept for a map first, then the new ones (which replace them). */
	nmv = cl.nb_defer;
	memcpy(mvs, cl.defer, nmv * sizeof(mvs[0]));
	memcpy(eps, cl.defer_epoch, nmv * sizeof(eps[0]));
	cl.nb_defer = 0;
	memcpy(mvs + nmv, cl.moves, cl.nb_moves * sizeof(mvs[0]));
	memcpy(eps + nmv, cl.moves_epoch, cl.nb_moves * sizeof(eps[0]));
	nmv += cl.nb_moves;
	cl.nb_moves = 0;
	ngone = cl.nb_gone;
	memcpy(gone, cl.gone, ngone * sizeof(gone[0]));
	cl.nb_gone = 0;
	pthread_mutex_unlock(&cl.mu);
	if (m != NULL)
		tick_map(m);
	fence_tick();
	/* Moves after the map: a move of a shard the map just gave away is over. */
	for (i = 0; i < nmv; i++) {
		for (k = i + 1; k < nmv && mvs[k].id != mvs[i].id; k++)
			;
		if (k < nmv)
			continue; /* a newer request of the shard follows */
		for (k = 0; k < ngone &&
			    (gone[k].id != mvs[i].id || gone[k].create_rev != mvs[i].create_rev);
			k++)
			;
		if (k < ngone)
			continue; /* given up before it started */
		if (tick_move(&mvs[i], eps[i]))
			defer_put(&mvs[i], eps[i]);
	}
	km_cluster_move_tick(km_map_current, gone, ngone);
	km_cluster_repl_tick(cl.epoch);
}

void
km_cluster_status(struct km_cluster_status *st)
{
	*st = cl.st;
	if (cl.conf != NULL) {
		snprintf(st->name, sizeof(st->name), "%s", cl.conf->cluster_name);
		snprintf(st->node, sizeof(st->node), "%s", cl.conf->cluster_node);
	}
	st->incarnation = cl.incarnation;
	st->epoch = cl.epoch;
	st->refused_epoch = cl.refused;
	pthread_mutex_lock(&cl.mu);
	st->etcd_ok = cl.etcd_ok;
	st->etcd_errors = cl.etcd_errors;
	st->maps_refused += cl.thr_refused;
	snprintf(st->last_error, sizeof(st->last_error), "%s", cl.err);
	pthread_mutex_unlock(&cl.mu);
}

/* /keymap/cluster on the control lcore. */
static int
ctl_cluster(void *arg)
{
	struct rte_tel_data *d = arg;
	struct km_cluster_status st;

	km_cluster_status(&st);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "cluster", cl.on);
	if (!cl.on)
		return 0;
	rte_tel_data_add_dict_string(d, "name", st.name);
	rte_tel_data_add_dict_string(d, "node", st.node);
	rte_tel_data_add_dict_string(d, "etcd", cl.conf->cluster_etcd);
	rte_tel_data_add_dict_string(d, "prefix", cl.prefix);
	rte_tel_data_add_dict_u64(d, "incarnation", st.incarnation);
	rte_tel_data_add_dict_u64(d, "epoch", st.epoch);
	rte_tel_data_add_dict_u64(d, "refused_epoch", st.refused_epoch);
	rte_tel_data_add_dict_u64(d, "etcd_ok", (uint64_t)st.etcd_ok);
	rte_tel_data_add_dict_u64(d, "etcd_errors", st.etcd_errors);
	rte_tel_data_add_dict_string(d, "last_error", st.last_error);
	rte_tel_data_add_dict_u64(d, "maps_applied", st.maps_applied);
	rte_tel_data_add_dict_u64(d, "maps_refused", st.maps_refused);
	rte_tel_data_add_dict_u64(d, "shards_created", st.shards_created);
	rte_tel_data_add_dict_u64(d, "shards_moved", st.shards_moved);
	rte_tel_data_add_dict_u64(d, "shards_dropped", st.shards_dropped);
	rte_tel_data_add_dict_u64(d, "shards_here", km_ctl.nb_shards);
	{
		uint64_t out, in, failed;

		km_cluster_move_counts(&out, &in, &failed);
		rte_tel_data_add_dict_u64(d, "shards_sent", out);
		rte_tel_data_add_dict_u64(d, "shards_received", in);
		rte_tel_data_add_dict_u64(d, "moves_failed", failed);
	}
	{
		struct km_cluster_repl_counts rc;

		km_cluster_repl_counts(&rc);
		rte_tel_data_add_dict_string(d, "replication", cl.conf->cluster_replication);
		rte_tel_data_add_dict_u64(d, "replicas", cl.conf->cluster_replicas);
		rte_tel_data_add_dict_u64(d, "repl_out", rc.out);
		rte_tel_data_add_dict_u64(d, "repl_out_in_sync", rc.out_in_sync);
		rte_tel_data_add_dict_u64(d, "repl_in", rc.in);
		rte_tel_data_add_dict_u64(d, "repl_promoted", rc.promoted);
		rte_tel_data_add_dict_u64(d, "repl_streams_in", rc.streams_in);
		rte_tel_data_add_dict_u64(d, "repl_refused_in", rc.refused_in);
		rte_tel_data_add_dict_u64(d, "repl_broken_out", rc.broken_out);
		{
			uint64_t until = atomic_load(&km_cluster_lease_ns), now;
			int hold;

			pthread_mutex_lock(&cl.fence_mu);
			hold = cl.fence_hold;
			pthread_mutex_unlock(&cl.fence_mu);
			now = (uint64_t)((double)rte_rdtsc() * 1e9 / (double)rte_get_tsc_hz());
			/* Replicated shards answer BUSY: the lease may have expired, or a new
			 * one waits for the map read under it to be applied. */
			rte_tel_data_add_dict_u64(d, "lease_fenced", hold || now >= until);
		}
	}
	return 0;
}

static int
tel_cluster(const char *cmd, const char *params, struct rte_tel_data *d)
{
	int rc;

	(void)cmd;
	(void)params;
	rc = km_ctl_call(ctl_cluster, d, 2000);
	if (rc < 0) {
		rte_tel_data_start_dict(d);
		rte_tel_data_add_dict_string(d, "error", strerror(-rc));
	}
	return 0;
}

int
km_telemetry_cluster_register(void)
{
	int rc = rte_telemetry_register_cmd("/keymap/cluster", tel_cluster,
		"This node in its cluster: name, node, etcd, incarnation, map epoch applied, "
		"counters (cluster 0: a single node).");

	if (rc == 0)
		rc = rte_telemetry_register_cmd("/keymap/cluster/repl", km_cluster_repl_tel,
			"Replication streams: out (to replicas) and in (replicas held here).");
	return rc;
}
