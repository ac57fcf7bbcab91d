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
	struct km_etcd *e; /* the main lcore's during the join, then the thread's */
	int64_t lease;
	uint64_t incarnation;
	char *member; /* the member record (JSON) */
	pthread_t thr;
	int thr_started;
	atomic_int stop;
	atomic_int serving; /* the control loop runs: it may be woken */
	int64_t watch_rev;  /* the thread watches map/current from here */

	pthread_mutex_t mu;
	struct km_cmap *pending; /* mu: newest valid map not applied yet */
	/* mu: moves of this node's shards the placer put, and those it deleted */
	struct km_cluster_move_req moves[16];
	unsigned int nb_moves;
	uint64_t gone[64];
	unsigned int nb_gone;
	char *load;           /* mu: the control lcore's last load report */
	char err[160];        /* mu: the cluster thread's last error */
	uint64_t etcd_errors; /* mu */
	uint64_t thr_refused; /* mu: maps the cluster thread refused (undecodable, not ours) */
	int etcd_ok;          /* mu */
	int64_t reported[32]; /* mu: mod revisions of the bad records logged (each once) */
	unsigned int reported_next; /* mu */

	/* Control lcore. */
	struct km_cmap *cur; /* the map applied */
	uint32_t epoch;      /* of the map applied */
	uint32_t refused;    /* of the last map refused */
	uint64_t load_tsc;
	struct km_cluster_status st;
} cl = {.mu = PTHREAD_MUTEX_INITIALIZER};

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
etcd_failed(const char *what, int rc)
{
	pthread_mutex_lock(&cl.mu);
	cl.etcd_errors++;
	cl.etcd_ok = 0;
	snprintf(cl.err, sizeof(cl.err), "%s: %s", what,
		cl.e != NULL && km_etcd_errmsg(cl.e)[0] != '\0' ? km_etcd_errmsg(cl.e)
								: strerror(-rc));
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
 * table with this node's address, port and workers.
 * @return this node's index; -ENOENT (not in the table yet), or -EINVAL with the reason.
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
 * run will acknowledge. */
static void
moves_fail_own(void)
{
	char key[KEY_MAX];
	struct km_etcd_kvs *r = NULL;
	size_t i;

	key_of(key, sizeof(key), "moves/", NULL);
	if (km_etcd_get(cl.e, key, strlen(key), KM_ETCD_PREFIX, &r) < 0)
		return;
	for (i = 0; i < r->n; i++) {
		struct km_cluster_move_record mv;
		char *val = NULL;

		if (move_read(&r->kv[i], &mv) != 0 || strcmp(mv.from, cl.conf->cluster_node) != 0 ||
			mv.state == KM_CLUSTER_MOVE_FAILED)
			continue;
		mv.state = KM_CLUSTER_MOVE_FAILED;
		snprintf(mv.reason, sizeof(mv.reason), "its source node restarted");
		if (km_cluster_move_encode(&mv, &val) == 0) {
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

			if (km_etcd_txn(cl.e, &cmp, 1, &op, 1, NULL, 0, NULL, NULL) == 1)
				KM_LOG(NOTICE, "cluster: move %.*s of a previous run marked failed",
					(int)r->kv[i].klen, (const char *)r->kv[i].key);
			free(val);
		}
	}
	km_etcd_kvs_free(r);
}

void
km_cluster_move_key(char *buf, size_t cap, uint64_t id)
{
	snprintf(buf, cap, "%smoves/%" PRIu64, cl.prefix, id);
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

/* A move key's value or deletion (the cluster thread). A move of one of this node's
 * shards in state "copy" goes to the control lcore; a deleted one too, when the map still
 * gives the shard to this node (the placer gave the move up; a completed move deletes its
 * key with the map that gives the shard away). A record the placer would refuse is
 * ignored (logged once). */
static void
move_seen(const struct km_etcd_kv *kv)
{
	const char *node = cl.conf->cluster_node;
	struct km_cluster_move_req rq = {0};
	struct km_cluster_move_record mv;

	if (kv->deleted) {
		char key[KEY_MAX];
		struct km_etcd_kvs *r = NULL;
		struct km_cmap *m = NULL;
		const struct km_cmap_shard *sh;
		int mine = 0;

		if (move_key_id(kv, &rq.id) != 0)
			return;
		key_of(key, sizeof(key), "map/current", NULL);
		if (km_etcd_get(cl.e, key, strlen(key), 0, &r) > 0 &&
			km_cmap_decode((const char *)r->kv[0].value, r->kv[0].vlen, &m, NULL, 0) ==
				0 &&
			(sh = km_cmap_shard_find(m, rq.id)) != NULL)
			mine = strcmp(m->nodes[sh->node].id, node) == 0;
		km_cmap_free(m);
		km_etcd_kvs_free(r);
		if (!mine)
			return;
		pthread_mutex_lock(&cl.mu);
		if (cl.nb_gone < RTE_DIM(cl.gone))
			cl.gone[cl.nb_gone++] = rq.id;
		pthread_mutex_unlock(&cl.mu);
		return;
	}
	if (move_read(kv, &mv) != 0 || strcmp(mv.from, node) != 0 ||
		mv.state != KM_CLUSTER_MOVE_COPY)
		return;
	rq.id = mv.id;
	rq.rev = mv.mod_rev;
	snprintf(rq.to, sizeof(rq.to), "%s", mv.to);
	rq.to_worker = mv.to_worker;
	pthread_mutex_lock(&cl.mu);
	if (cl.nb_moves < RTE_DIM(cl.moves))
		cl.moves[cl.nb_moves++] = rq;
	pthread_mutex_unlock(&cl.mu);
}

/* ---- membership -------------------------------------------------------------------- */

static char *
member_json(void)
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
	o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:I, s:s}", "id", c->cluster_node, "ip",
		ip, "mac", mac, "port", (json_int_t)c->udp_port, "workers",
		(json_int_t)cl.nb_workers, "incarnation", (json_int_t)cl.incarnation, "side_ip",
		side, "side_port", (json_int_t)c->cluster_side_port, "state", "active");
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

/* Put the member record under a new lease, if no live member has this id.
 * @param wait_s how long a record of another incarnation may take to expire.
 * @return 0, -EEXIST (a live member has the id), or -errno. */
static int
register_member(unsigned int wait_s)
{
	char key[KEY_MAX];
	uint64_t t0 = rte_get_timer_cycles(), hz = rte_get_timer_hz();
	int rc;

	key_of(key, sizeof(key), "members/", cl.conf->cluster_node);
	rc = km_etcd_lease_grant(cl.e, (int64_t)cl.conf->cluster_ttl_s, &cl.lease, NULL);
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
			.lease = cl.lease};
		struct km_etcd_op get = {.type = KM_ETCD_OP_GET, .key = key, .klen = strlen(key)};
		struct km_etcd_kvs *r = NULL;

		rc = km_etcd_txn(cl.e, &cmp, 1, &op, 1, &get, 1, NULL, &r);
		if (rc == 1 || rc < 0) {
			km_etcd_kvs_free(r);
			return rc < 0 ? rc : 0;
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
			km_etcd_lease_revoke(cl.e, cl.lease);
			return -EEXIST;
		}
		km_etcd_kvs_free(r);
		usleep(200 * 1000);
	}
}

/* ---- the cluster thread ------------------------------------------------------------ */

static void
thread_sleep_ms(unsigned int ms)
{
	while (ms > 0 && !atomic_load(&cl.stop)) {
		unsigned int step = ms < 100 ? ms : 100;

		usleep(step * 1000);
		ms -= step;
	}
}

/* Keep the lease; a lease that expired (etcd lost for longer than the TTL) is replaced
 * and the record put again. */
static void
keepalive(void)
{
	char key[KEY_MAX], ikey[KEY_MAX], inc[32];
	int64_t ttl = 0;
	int rc;

	rc = km_etcd_lease_keepalive(cl.e, cl.lease, &ttl);
	if (rc == 0 && ttl > 0) {
		etcd_worked();
		return;
	}
	if (rc < 0 && rc != -ENOENT) {
		etcd_failed("lease keepalive", rc);
		return;
	}
	KM_LOG(WARNING, "cluster: the membership lease expired: registering again");
	key_of(key, sizeof(key), "members/", cl.conf->cluster_node);
	key_of(ikey, sizeof(ikey), "incarnation/", cl.conf->cluster_node);
	snprintf(inc, sizeof(inc), "%" PRIu64, cl.incarnation);
	rc = km_etcd_lease_grant(cl.e, (int64_t)cl.conf->cluster_ttl_s, &cl.lease, NULL);
	if (rc == 0) {
		/* Only while no newer run of this node id claimed an incarnation since. */
		struct km_etcd_cmp cmp = {.key = ikey,
			.klen = strlen(ikey),
			.target = KM_ETCD_VALUE,
			.result = KM_ETCD_EQUAL,
			.value = inc,
			.vlen = strlen(inc)};
		struct km_etcd_op op = {.type = KM_ETCD_OP_PUT,
			.key = key,
			.klen = strlen(key),
			.value = cl.member,
			.vlen = strlen(cl.member),
			.lease = cl.lease};

		rc = km_etcd_txn(cl.e, &cmp, 1, &op, 1, NULL, 0, NULL, NULL);
		if (rc == 0) {
			KM_LOG(CRIT,
				"cluster: node id %s was taken by a newer run (incarnation above "
				"%s): "
				"this one stops",
				cl.conf->cluster_node, inc);
			atomic_store_explicit(&km_dp.stop, 1, memory_order_relaxed);
			km_ctl_wake();
			atomic_store(&cl.stop, 1);
			return;
		}
	}
	if (rc < 0)
		etcd_failed("register again", rc);
	else
		etcd_worked();
}

static void
put_load(void)
{
	char key[KEY_MAX], *load;
	int rc;

	pthread_mutex_lock(&cl.mu);
	load = cl.load;
	cl.load = NULL;
	pthread_mutex_unlock(&cl.mu);
	if (load == NULL)
		return;
	key_of(key, sizeof(key), "load/", cl.conf->cluster_node);
	rc = km_etcd_put(cl.e, key, strlen(key), load, strlen(load), cl.lease, NULL);
	if (rc < 0)
		etcd_failed("load report", rc);
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
	uint64_t hz = rte_get_timer_hz(), ka = 0, load = 0, now;
	uint64_t ka_every = cl.conf->cluster_ttl_s * hz / 3;
	uint64_t load_every = cl.conf->cluster_load_ms * hz / 1000;
	struct km_etcd_watch *w = NULL, *mw = NULL;
	int64_t from = cl.watch_rev, mfrom = 0;
	char key[KEY_MAX], mkey[KEY_MAX];
	int rc;

	(void)arg;
	key_of(key, sizeof(key), "map/current", NULL);
	key_of(mkey, sizeof(mkey), "moves/", NULL);
	while (!atomic_load(&cl.stop)) {
		struct km_etcd_kvs *ev = NULL;
		size_t i;

		now = rte_get_timer_cycles();
		if (now - ka >= ka_every) {
			keepalive();
			ka = now;
		}
		if (now - load >= load_every) {
			put_load();
			load = now;
		}
		if (w == NULL) {
			if (from == 0 && (rc = map_read(&from)) < 0) {
				etcd_failed("read the map", rc);
				thread_sleep_ms(RETRY_MS);
				continue;
			}
			rc = km_etcd_watch_open(cl.e, key, strlen(key), 0, from, &w);
			if (rc < 0) {
				etcd_failed("watch the map", rc);
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
					etcd_failed("read the moves", rc);
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
				etcd_failed("watch the moves", rc);
				mw = NULL;
				thread_sleep_ms(RETRY_MS);
				continue;
			}
		}
		rc = km_etcd_watch_next(mw, 100, &ev);
		if (rc < 0) {
			mfrom = rc == -ESTALE ? 0 : km_etcd_watch_next_rev(mw);
			km_etcd_watch_close(mw);
			mw = NULL;
			if (rc != -ESTALE && rc != -ECONNRESET)
				etcd_failed("moves watch", rc);
		} else {
			for (i = 0; i < (size_t)rc; i++)
				move_seen(&ev->kv[i]);
			km_etcd_kvs_free(ev);
		}
		ev = NULL;
		rc = km_etcd_watch_next(w, 100, &ev);
		if (rc < 0) {
			/* Compacted: read it again; broken: resume after the last event. */
			from = rc == -ESTALE ? 0 : km_etcd_watch_next_rev(w);
			km_etcd_watch_close(w);
			w = NULL;
			if (rc != -ESTALE && rc != -ECONNRESET)
				etcd_failed("map watch", rc);
			continue;
		}
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
	cl.member = member_json();
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
	rc = km_cluster_side_start(
		ntohl(conf->cluster_side_addr), (uint16_t)conf->cluster_side_port);
	if (rc < 0) {
		KM_LOG(ERR, "[cluster] side_port %" PRIu64 ": cannot listen: %s",
			conf->cluster_side_port, strerror(-rc));
		goto fail;
	}
	moves_fail_own();
	cl.on = 1;
	KM_LOG(NOTICE,
		"cluster %s: node %s registered (incarnation %" PRIu64 ", lease %" PRIx64 ")",
		conf->cluster_name, conf->cluster_node, cl.incarnation, (uint64_t)cl.lease);
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

	atomic_store(&cl.stop, 1);
	if (cl.thr_started) {
		pthread_join(cl.thr, NULL);
		cl.thr_started = 0;
	}
	if (cl.e != NULL) {
		/* The record and the load report go with the lease: the placer sees this node
		 * leave at once instead of after the TTL. */
		if (cl.on && cl.lease != 0 && km_etcd_lease_revoke(cl.e, cl.lease) == 0)
			KM_LOG(NOTICE, "cluster: node %s left", cl.conf->cluster_node);
		(void)key;
		km_etcd_close(cl.e);
		cl.e = NULL;
	}
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
					km_logtype,
					"keymapd: cluster map epoch %u gives shard %" PRIu64
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

void
km_cluster_tick(void)
{
	struct km_cluster_move_req mvs[RTE_DIM(cl.moves)];
	uint64_t gone[RTE_DIM(cl.gone)], now;
	unsigned int nmv, ngone, i;
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
	nmv = cl.nb_moves;
	memcpy(mvs, cl.moves, nmv * sizeof(mvs[0]));
	cl.nb_moves = 0;
	ngone = cl.nb_gone;
	memcpy(gone, cl.gone, ngone * sizeof(gone[0]));
	cl.nb_gone = 0;
	pthread_mutex_unlock(&cl.mu);
	if (m != NULL)
		tick_map(m);
	/* Moves after the map: a move of a shard the map just gave away is over. */
	for (i = 0; i < nmv; i++) {
		const struct km_shard *sh = km_shardmap_find(km_map_current, mvs[i].id);
		int to = cl.cur != NULL ? km_cmap_node_find(cl.cur, mvs[i].to) : -1;

		if (sh == NULL || km_shard_owner(sh) == KM_OWNER_REMOTE || to < 0) {
			KM_LOG(WARNING, "cluster: move of shard %" PRIu64 " to node %s ignored: %s",
				mvs[i].id, mvs[i].to,
				to < 0 ? "no such node in the map" : "not this node's shard");
			continue;
		}
		mvs[i].to_ip = cl.cur->nodes[to].ip;
		km_cluster_move_start(&mvs[i]);
	}
	km_cluster_move_tick(km_map_current, gone, ngone);
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
	return rte_telemetry_register_cmd("/keymap/cluster", tel_cluster,
		"This node in its cluster: name, node, etcd, incarnation, map epoch applied, "
		"counters (cluster 0: a single node).");
}
