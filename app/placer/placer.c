/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * keymap-placer: the placement leader of a keymap cluster (docs/cluster.md).
 *
 * One process is the leader (etcd election P/election, its lease kept alive at a third of
 * its TTL); the others wait in the election as standbys. The leader, every --interval-ms
 * and on every change under P/: reads the members, drain keys, load reports, the map and
 * the moves in flight; publishes the next table map and the moves km_cluster_decide()
 * wants (lib/cluster); completes the moves the nodes report ready (the map with the move
 * applied, the move key deleted, one transaction); gives up moves that failed, stalled or
 * lost a node. Every write is a transaction guarded by its leadership (the election key's
 * creation revision) and, for maps, by map/current's revision: a deposed leader writes
 * nothing, and no two maps share an epoch.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <km_cluster.h>
#include <km_etcd.h>
#include <km_util.h>

#define ETCD_TIMEOUT_MS 3000
#define KEY_MAX         320
#define MEMBERS_MAX     (KM_CLUSTER_NODES_MAX * 2)
#define MOVES_MAX       256
#define MAPS_KEPT       100

struct opts {
	const char *etcd;
	const char *cluster;
	char id[KM_CLUSTER_ID_MAX + 1];
	uint32_t shards;
	uint8_t route_sep, route_depth;
	int64_t ttl_s;
	uint32_t max_moves;
	uint32_t balance_pct;
	double min_rate;
	unsigned int interval_ms;
	unsigned int move_timeout_s;
	int once, dry_run, verbose;
};

/* A move in flight, as P/moves/<id> holds it. */
struct move {
	uint64_t id;
	int64_t rev; /* mod revision of its key */
	char from[KM_CLUSTER_ID_MAX + 1], to[KM_CLUSTER_ID_MAX + 1], state[16], reason[160];
	uint16_t to_worker;
	time_t seen; /* when this placer first saw it */
};

static struct {
	struct opts o;
	char prefix[128];
	struct km_etcd *e;
	int64_t lease;
	struct km_etcd_leader lead;
	int leading;
	int64_t refused_rev; /* map/current revision last refused (logged once) */
	struct {
		uint64_t id;
		time_t seen;
	} seen[MOVES_MAX];
} pl;

static atomic_int stop;

static void
on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop, 1);
}

static void plog(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
plog(const char *level, const char *fmt, ...)
{
	struct timeval tv;
	struct tm tm;
	char ts[32];
	va_list ap;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s keymap-placer: ", ts, (long)tv.tv_usec / 1000, level);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
key_of(char *buf, size_t cap, const char *what)
{
	snprintf(buf, cap, "%s%s", pl.prefix, what);
}

/* ---- reading the cluster's state ---------------------------------------------------- */

static int
json_u64(json_t *o, const char *k, uint64_t lo, uint64_t hi, uint64_t *out)
{
	json_t *v = json_object_get(o, k);

	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		(uint64_t)json_integer_value(v) < lo || (uint64_t)json_integer_value(v) > hi)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* A member record. @return 0, or -1 with the reason in err. */
static int
member_decode(const uint8_t *v, size_t len, struct km_cluster_member *m, char *err, size_t errlen)
{
	json_t *o = json_loadb((const char *)v, len, 0, NULL);
	const char *id, *ip, *state;
	struct in_addr a;
	uint64_t port, workers, inc;
	int rc = -1;

	memset(m, 0, sizeof(*m));
	if (!json_is_object(o)) {
		snprintf(err, errlen, "not a JSON object");
		goto out;
	}
	id = json_string_value(json_object_get(o, "id"));
	ip = json_string_value(json_object_get(o, "ip"));
	state = json_string_value(json_object_get(o, "state"));
	if (id == NULL || !km_cluster_id_valid(id)) {
		snprintf(err, errlen, "id: not a node id");
		goto out;
	}
	if (ip == NULL || inet_pton(AF_INET, ip, &a) != 1 || a.s_addr == 0) {
		snprintf(err, errlen, "ip: not an IPv4 address");
		goto out;
	}
	if (json_u64(o, "port", 1, 65535, &port) < 0 ||
		json_u64(o, "workers", 1, 128, &workers) < 0 ||
		json_u64(o, "incarnation", 1, INT64_MAX, &inc) < 0) {
		snprintf(err, errlen, "port, workers or incarnation missing or out of range");
		goto out;
	}
	snprintf(m->id, sizeof(m->id), "%s", id);
	m->ip = ntohl(a.s_addr);
	m->port = (uint16_t)port;
	m->workers = (uint16_t)workers;
	m->incarnation = inc;
	m->state =
		state != NULL && strcmp(state, "draining") == 0 ? KM_CMAP_DRAINING : KM_CMAP_ACTIVE;
	rc = 0;
out:
	json_decref(o);
	return rc;
}

/* The last path component of a key after prefix+what (a node id or a shard id). */
static int
key_tail(const struct km_etcd_kv *kv, const char *what, char *out, size_t cap)
{
	size_t plen = strlen(pl.prefix) + strlen(what);

	if (kv->klen <= plen || kv->klen - plen >= cap)
		return -1;
	memcpy(out, kv->key + plen, kv->klen - plen);
	out[kv->klen - plen] = '\0';
	return 0;
}

static int
get_prefix(const char *what, struct km_etcd_kvs **r)
{
	char key[KEY_MAX];

	key_of(key, sizeof(key), what);
	return km_etcd_get(pl.e, key, strlen(key), KM_ETCD_PREFIX, r);
}

struct state {
	struct km_cmap *map; /* NULL: none yet */
	int64_t map_rev;     /* map/current's mod revision (0: absent) */
	struct km_cluster_member mem[MEMBERS_MAX];
	uint32_t nb_mem;
	struct km_cluster_rate *rates;
	uint32_t nb_rates;
	struct move moves[MOVES_MAX];
	uint32_t nb_moves;
};

static void
state_free(struct state *s)
{
	km_cmap_free(s->map);
	free(s->rates);
	memset(s, 0, sizeof(*s));
}

static time_t
move_seen_at(uint64_t id)
{
	time_t now = time(NULL);
	unsigned int i, free_slot = MOVES_MAX;

	for (i = 0; i < MOVES_MAX; i++) {
		if (pl.seen[i].id == id)
			return pl.seen[i].seen;
		if (pl.seen[i].id == 0 && free_slot == MOVES_MAX)
			free_slot = i;
	}
	if (free_slot == MOVES_MAX)
		free_slot = (unsigned int)(id % MOVES_MAX);
	pl.seen[free_slot].id = id;
	pl.seen[free_slot].seen = now;
	return now;
}

static void
move_forget(uint64_t id)
{
	unsigned int i;

	for (i = 0; i < MOVES_MAX; i++)
		if (pl.seen[i].id == id)
			pl.seen[i].id = 0;
}

/* Read everything a decision needs. @return 0, -EBADMSG (a map/current that does not
 * decode: logged once per revision, nothing is to be published), or -errno. */
static int
state_read(struct state *s)
{
	struct km_etcd_kvs *r = NULL;
	char key[KEY_MAX], id[64], err[KM_CLUSTER_ERR_MAX];
	char drained[MEMBERS_MAX][KM_CLUSTER_ID_MAX + 1];
	uint32_t nb_drained = 0, i, k;
	int rc;

	memset(s, 0, sizeof(*s));
	key_of(key, sizeof(key), "map/current");
	rc = km_etcd_get(pl.e, key, strlen(key), 0, &r);
	if (rc < 0)
		return rc;
	if (rc > 0) {
		s->map_rev = r->kv[0].mod_rev;
		rc = km_cmap_decode(
			(const char *)r->kv[0].value, r->kv[0].vlen, &s->map, err, sizeof(err));
		if (rc < 0) {
			if (pl.refused_rev != s->map_rev)
				plog("ERROR",
					"%s (revision %" PRId64
					") refused: %s; nothing is published "
					"until it is fixed or deleted",
					key, s->map_rev, err);
			pl.refused_rev = s->map_rev;
			km_etcd_kvs_free(r);
			return -EBADMSG;
		}
	}
	km_etcd_kvs_free(r);
	r = NULL;

	rc = get_prefix("drain/", &r);
	if (rc < 0)
		return rc;
	for (i = 0; i < r->n && nb_drained < MEMBERS_MAX; i++)
		if (key_tail(&r->kv[i], "drain/", drained[nb_drained], sizeof(drained[0])) == 0)
			nb_drained++;
	km_etcd_kvs_free(r);
	r = NULL;

	rc = get_prefix("members/", &r);
	if (rc < 0)
		return rc;
	for (i = 0; i < r->n && s->nb_mem < MEMBERS_MAX; i++) {
		struct km_cluster_member *m = &s->mem[s->nb_mem];

		if (member_decode(r->kv[i].value, r->kv[i].vlen, m, err, sizeof(err)) < 0) {
			if (pl.o.verbose)
				plog("WARNING", "member record %.*s skipped: %s",
					(int)r->kv[i].klen, (const char *)r->kv[i].key, err);
			continue;
		}
		for (k = 0; k < nb_drained; k++)
			if (strcmp(drained[k], m->id) == 0)
				m->state = KM_CMAP_DRAINING;
		s->nb_mem++;
	}
	km_etcd_kvs_free(r);
	r = NULL;

	rc = get_prefix("load/", &r);
	if (rc < 0)
		return rc;
	for (i = 0; i < r->n; i++) {
		json_t *o = json_loadb((const char *)r->kv[i].value, r->kv[i].vlen, 0, NULL);
		json_t *rates = json_object_get(o, "rates"), *e;
		size_t j;

		json_array_foreach(rates, j, e)
		{
			struct km_cluster_rate *t;

			if (!json_is_array(e) || !json_is_integer(json_array_get(e, 0)) ||
				!json_is_number(json_array_get(e, 1)))
				continue;
			t = realloc(s->rates, (s->nb_rates + 1) * sizeof(*t));
			if (t == NULL)
				break;
			s->rates = t;
			t[s->nb_rates].id = (uint64_t)json_integer_value(json_array_get(e, 0));
			t[s->nb_rates].rate = json_number_value(json_array_get(e, 1));
			s->nb_rates++;
		}
		json_decref(o);
	}
	km_etcd_kvs_free(r);
	r = NULL;

	rc = get_prefix("moves/", &r);
	if (rc < 0)
		return rc;
	for (i = 0; i < r->n && s->nb_moves < MOVES_MAX; i++) {
		struct move *mv = &s->moves[s->nb_moves];
		json_t *o = json_loadb((const char *)r->kv[i].value, r->kv[i].vlen, 0, NULL);
		const char *v;
		uint64_t w = 0;

		memset(mv, 0, sizeof(*mv));
		if (key_tail(&r->kv[i], "moves/", id, sizeof(id)) < 0 ||
			km_util_parse_u64(id, 1, UINT64_MAX, &mv->id) < 0) {
			json_decref(o);
			continue;
		}
		mv->rev = r->kv[i].mod_rev;
		if ((v = json_string_value(json_object_get(o, "from"))) != NULL)
			snprintf(mv->from, sizeof(mv->from), "%s", v);
		if ((v = json_string_value(json_object_get(o, "to"))) != NULL)
			snprintf(mv->to, sizeof(mv->to), "%s", v);
		if ((v = json_string_value(json_object_get(o, "state"))) != NULL)
			snprintf(mv->state, sizeof(mv->state), "%s", v);
		if ((v = json_string_value(json_object_get(o, "reason"))) != NULL)
			snprintf(mv->reason, sizeof(mv->reason), "%s", v);
		(void)json_u64(o, "to_worker", 0, 127, &w);
		mv->to_worker = (uint16_t)w;
		mv->seen = move_seen_at(mv->id);
		s->nb_moves++;
		json_decref(o);
	}
	km_etcd_kvs_free(r);
	return 0;
}

/* ---- writing, as the leader --------------------------------------------------------- */

/* The compare every write of the leader carries. */
static struct km_etcd_cmp
leader_cmp(void)
{
	return (struct km_etcd_cmp){.key = pl.lead.key,
		.klen = pl.lead.klen,
		.target = KM_ETCD_CREATE,
		.result = KM_ETCD_EQUAL,
		.num = pl.lead.rev};
}

/*
 * Publish m as the next map (from the map at revision rev), with extra ops in the same
 * transaction. @return 1 published, 0 not (leadership lost, or another map came: the
 * caller reads again), or -errno.
 */
static int
publish(const struct km_cmap *m, int64_t rev, const struct km_etcd_op *extra, size_t nb_extra)
{
	char kcur[KEY_MAX], kep[KEY_MAX], kold[KEY_MAX], *json = NULL;
	struct km_etcd_cmp cmp[2];
	struct km_etcd_op ops[4];
	size_t len, n = 0, i;
	int rc;

	rc = km_cmap_encode(m, &json, &len);
	if (rc < 0)
		return rc;
	if (pl.o.dry_run) {
		printf("map epoch %u: %s\n", m->epoch, json);
		free(json);
		return 1;
	}
	key_of(kcur, sizeof(kcur), "map/current");
	snprintf(kep, sizeof(kep), "%smap/%u", pl.prefix, m->epoch);
	cmp[0] = leader_cmp();
	cmp[1] = (struct km_etcd_cmp){.key = kcur,
		.klen = strlen(kcur),
		.target = KM_ETCD_MOD,
		.result = KM_ETCD_EQUAL,
		.num = rev};
	ops[n++] = (struct km_etcd_op){.type = KM_ETCD_OP_PUT,
		.key = kep,
		.klen = strlen(kep),
		.value = json,
		.vlen = len};
	ops[n++] = (struct km_etcd_op){.type = KM_ETCD_OP_PUT,
		.key = kcur,
		.klen = strlen(kcur),
		.value = json,
		.vlen = len};
	for (i = 0; i < nb_extra && n < 3; i++)
		ops[n++] = extra[i];
	if (m->epoch > MAPS_KEPT) {
		/* The map that falls out of the window kept. */
		snprintf(kold, sizeof(kold), "%smap/%u", pl.prefix, m->epoch - MAPS_KEPT);
		ops[n++] = (struct km_etcd_op){
			.type = KM_ETCD_OP_DELETE, .key = kold, .klen = strlen(kold)};
	}
	rc = km_etcd_txn(pl.e, cmp, 2, ops, n, NULL, 0, NULL, NULL);
	free(json);
	if (rc == 1)
		plog("NOTICE", "published map epoch %u (%u nodes, %u shards)", m->epoch,
			m->nb_nodes, m->nb_shards);
	return rc;
}

/* Put a move (guarded by leadership; only if no move of that shard is in flight). */
static int
move_put(const struct km_cmap *m, const struct km_cluster_move *mv)
{
	char key[KEY_MAX], *val;
	struct km_etcd_cmp cmp[2];
	struct km_etcd_op op;
	json_t *o;
	int rc;

	snprintf(key, sizeof(key), "%smoves/%" PRIu64, pl.prefix, mv->id);
	o = json_pack("{s:I, s:I, s:s, s:s, s:I, s:s}", "id", (json_int_t)mv->id, "epoch",
		(json_int_t)m->epoch, "from", m->nodes[mv->from_node].id, "to",
		m->nodes[mv->to_node].id, "to_worker", (json_int_t)mv->to_worker, "state", "copy");
	val = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (val == NULL)
		return -ENOMEM;
	if (pl.o.dry_run) {
		printf("move %s\n", val);
		free(val);
		return 1;
	}
	cmp[0] = leader_cmp();
	cmp[1] = (struct km_etcd_cmp){.key = key,
		.klen = strlen(key),
		.target = KM_ETCD_CREATE,
		.result = KM_ETCD_EQUAL,
		.num = 0};
	op = (struct km_etcd_op){.type = KM_ETCD_OP_PUT,
		.key = key,
		.klen = strlen(key),
		.value = val,
		.vlen = strlen(val)};
	rc = km_etcd_txn(pl.e, cmp, 2, &op, 1, NULL, 0, NULL, NULL);
	if (rc == 1)
		plog("NOTICE",
			"move of shard %" PRIu64 " from node %s to node %s (worker %u) started",
			mv->id, m->nodes[mv->from_node].id, m->nodes[mv->to_node].id,
			mv->to_worker);
	free(val);
	return rc;
}

/* Give a move up (its key deleted, guarded by leadership and its revision). */
static void
move_drop(const struct move *mv, const char *why)
{
	char key[KEY_MAX];
	struct km_etcd_cmp cmp[2];
	struct km_etcd_op op;

	if (pl.o.dry_run)
		return;
	snprintf(key, sizeof(key), "%smoves/%" PRIu64, pl.prefix, mv->id);
	cmp[0] = leader_cmp();
	cmp[1] = (struct km_etcd_cmp){.key = key,
		.klen = strlen(key),
		.target = KM_ETCD_MOD,
		.result = KM_ETCD_EQUAL,
		.num = mv->rev};
	op = (struct km_etcd_op){.type = KM_ETCD_OP_DELETE, .key = key, .klen = strlen(key)};
	if (km_etcd_txn(pl.e, cmp, 2, &op, 1, NULL, 0, NULL, NULL) == 1) {
		plog("WARNING", "move of shard %" PRIu64 " to node %s given up: %s", mv->id, mv->to,
			why);
		move_forget(mv->id);
	}
}

static int
member_live(const struct state *s, const char *id)
{
	uint32_t i;

	for (i = 0; i < s->nb_mem; i++)
		if (strcmp(s->mem[i].id, id) == 0)
			return 1;
	return 0;
}

/* Complete, give up or keep each move in flight. @return 1 when a map was published (the
 * state must be read again), 0, or -errno. */
static int
moves_check(struct state *s)
{
	time_t now = time(NULL);
	uint32_t i;

	for (i = 0; i < s->nb_moves; i++) {
		struct move *mv = &s->moves[i];
		const struct km_cmap_shard *sh =
			s->map != NULL ? km_cmap_shard_find(s->map, mv->id) : NULL;
		int from = s->map != NULL ? km_cmap_node_find(s->map, mv->from) : -1;
		int to = s->map != NULL ? km_cmap_node_find(s->map, mv->to) : -1;

		if (sh == NULL || from < 0 || to < 0 || sh->node != from ||
			mv->to_worker >= s->map->nodes[to].workers) {
			move_drop(mv, "it does not match the map any more");
			continue;
		}
		if (strcmp(mv->state, "failed") == 0) {
			move_drop(mv, mv->reason[0] != '\0' ? mv->reason : "the source failed");
			continue;
		}
		if (strcmp(mv->state, "ready") == 0) {
			struct km_cluster_move cm = {.id = mv->id,
				.from_node = (uint16_t)from,
				.from_worker = sh->worker,
				.to_node = (uint16_t)to,
				.to_worker = mv->to_worker};
			char key[KEY_MAX];
			struct km_etcd_op del;
			struct km_cmap *next = NULL;
			int rc;

			rc = km_cmap_move_apply(s->map, &cm, &next);
			if (rc < 0) {
				move_drop(mv, strerror(-rc));
				continue;
			}
			snprintf(key, sizeof(key), "%smoves/%" PRIu64, pl.prefix, mv->id);
			del = (struct km_etcd_op){
				.type = KM_ETCD_OP_DELETE, .key = key, .klen = strlen(key)};
			rc = publish(next, s->map_rev, &del, 1);
			km_cmap_free(next);
			if (rc == 1) {
				plog("NOTICE", "shard %" PRIu64 " moved from node %s to node %s",
					mv->id, mv->from, mv->to);
				move_forget(mv->id);
				return 1;
			}
			return rc < 0 ? rc : 1;
		}
		if (!member_live(s, mv->from) || !member_live(s, mv->to)) {
			move_drop(mv, "a node of the move has no live member");
			continue;
		}
		if (now - mv->seen > (time_t)pl.o.move_timeout_s)
			move_drop(mv, "not ready in time");
	}
	return 0;
}

static int
move_in_flight(const struct state *s, uint64_t id)
{
	uint32_t i;

	for (i = 0; i < s->nb_moves; i++)
		if (s->moves[i].id == id)
			return 1;
	return 0;
}

/* One decision. @return 0, or -errno. */
static int
decide_once(void)
{
	const struct km_cluster_params p = {
		.initial_shards = pl.o.shards,
		.route_sep = pl.o.route_sep,
		.route_depth = pl.o.route_depth,
		.max_moves = pl.o.max_moves * 4 < KM_CLUSTER_MOVES_MAX ? pl.o.max_moves * 4
								       : KM_CLUSTER_MOVES_MAX,
		.balance_pct = pl.o.balance_pct,
		.min_rate = pl.o.min_rate,
	};
	struct km_cluster_decision d = {0};
	struct state s;
	char err[KM_CLUSTER_ERR_MAX];
	uint32_t i, started = 0;
	int rc, round;

	for (round = 0; round < 4; round++) {
		rc = state_read(&s);
		if (rc < 0) {
			state_free(&s);
			return rc == -EBADMSG ? 0 : rc;
		}
		rc = moves_check(&s);
		if (rc == 0)
			break;
		state_free(&s);
		if (rc < 0)
			return rc;
	}
	if (round == 4)
		return 0; /* busy: the next interval goes on */
	rc = km_cluster_decide(
		&p, s.map, s.mem, s.nb_mem, s.rates, s.nb_rates, &d, err, sizeof(err));
	if (rc < 0) {
		plog("ERROR", "no decision: %s", err[0] != '\0' ? err : strerror(-rc));
		goto out;
	}
	if (d.nb_skipped != 0 && pl.o.verbose)
		plog("WARNING", "%u member(s) left out: %s", d.nb_skipped, d.skipped);
	if (s.nb_mem == 0 && s.map == NULL)
		goto out; /* no member yet: no first map */
	if (d.map != NULL) {
		rc = publish(d.map, s.map_rev, NULL, 0);
		if (rc != 1)
			goto out; /* another map or not leading: read again next time */
	}
	/* Moves against the map just published (or the current one). */
	{
		const struct km_cmap *base = d.map != NULL ? d.map : s.map;
		uint32_t flight = s.nb_moves;

		for (i = 0; base != NULL && i < d.nb_moves && flight < pl.o.max_moves; i++) {
			const struct km_cluster_move *mv = &d.moves[i];

			if (move_in_flight(&s, mv->id))
				continue;
			if (mv->from_node == mv->to_node) {
				/* Between the workers of one node: no copy, the map at once. */
				struct km_cmap *next = NULL;

				if (km_cmap_move_apply(base, mv, &next) == 0) {
					int64_t rev = d.map != NULL ? 0 : s.map_rev;

					/* After a table map the revision changed: next interval. */
					if (d.map == NULL && publish(next, rev, NULL, 0) == 1)
						started++;
					km_cmap_free(next);
				}
				break; /* the map changed: decide again next time */
			}
			rc = move_put(base, mv);
			if (rc == 1) {
				flight++;
				started++;
			}
		}
	}
	rc = 0;
out:
	km_cluster_decision_free(&d);
	state_free(&s);
	(void)started;
	return rc;
}

/* ---- leadership ---------------------------------------------------------------------- */

static int
lease_ensure(void)
{
	int64_t ttl = 0;
	int rc;

	if (pl.lease != 0) {
		rc = km_etcd_lease_keepalive(pl.e, pl.lease, &ttl);
		if (rc == 0 && ttl > 0)
			return 0;
		if (rc < 0 && rc != -ENOENT)
			return rc;
		if (pl.leading)
			plog("WARNING", "the lease expired: no longer the leader");
		pl.leading = 0;
		pl.lease = 0;
	}
	rc = km_etcd_lease_grant(pl.e, pl.o.ttl_s, &pl.lease, NULL);
	return rc;
}

static int
campaign(unsigned int timeout_ms)
{
	char name[KEY_MAX], host[64] = "", *val;
	json_t *o;
	int rc;

	key_of(name, sizeof(name), "election");
	gethostname(host, sizeof(host) - 1);
	o = json_pack("{s:s, s:I, s:s}", "id", pl.o.id, "pid", (json_int_t)getpid(), "host", host);
	val = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (val == NULL)
		return -ENOMEM;
	rc = km_etcd_campaign(
		pl.e, name, strlen(name), pl.lease, val, strlen(val), timeout_ms, &pl.lead);
	free(val);
	if (rc == 0) {
		pl.leading = 1;
		plog("NOTICE", "%s leads cluster %s", pl.o.id, pl.o.cluster);
	}
	return rc;
}

/* Whether this placer still leads (its key is the election's leader). */
static int
still_leading(void)
{
	char name[KEY_MAX];
	struct km_etcd_leader l;
	int rc;

	key_of(name, sizeof(name), "election");
	rc = km_etcd_leader(pl.e, name, strlen(name), &l, NULL);
	if (rc < 0)
		return rc == -ENOENT ? 0 : rc;
	return l.rev == pl.lead.rev && l.klen == pl.lead.klen &&
	       memcmp(l.key, pl.lead.key, l.klen) == 0;
}

static void
sleep_ms(unsigned int ms)
{
	while (ms > 0 && !atomic_load(&stop)) {
		unsigned int s = ms < 100 ? ms : 100;

		usleep(s * 1000);
		ms -= s;
	}
}

static int
run(void)
{
	uint64_t last_err = 0;
	int rc;

	while (!atomic_load(&stop)) {
		rc = lease_ensure();
		if (rc == 0 && !pl.leading) {
			/* Standby: wait in the election a third of the TTL at a time, the lease
			 * kept alive between. */
			rc = campaign((unsigned int)(pl.o.ttl_s * 1000 / 3));
			if (rc == -ETIMEDOUT)
				continue;
			if (rc == -ENOENT || rc == -EAGAIN) {
				pl.lease = 0;
				continue;
			}
		}
		if (rc == 0 && pl.leading) {
			rc = still_leading();
			if (rc == 0) {
				plog("WARNING", "no longer the leader");
				pl.leading = 0;
				continue;
			}
			if (rc > 0)
				rc = decide_once();
		}
		if (rc < 0) {
			if (time(NULL) - (time_t)last_err >= 5) {
				plog("ERROR", "etcd %s: %s", pl.o.etcd, km_etcd_errmsg(pl.e));
				last_err = (uint64_t)time(NULL);
			}
			pl.leading = pl.leading && rc != -ECONNREFUSED && rc != -ETIMEDOUT;
		}
		if (pl.o.once)
			break;
		sleep_ms(pl.o.interval_ms);
	}
	if (pl.leading) {
		(void)km_etcd_resign(pl.e, &pl.lead);
		plog("NOTICE", "%s resigned", pl.o.id);
	}
	if (pl.lease != 0)
		(void)km_etcd_lease_revoke(pl.e, pl.lease);
	return 0;
}

/* ---- options ------------------------------------------------------------------------- */

static const char usage_text[] =
	"usage: keymap-placer --etcd ENDPOINTS --cluster NAME [options]\n"
	"The placement leader of a keymap cluster (docs/cluster.md): elected through etcd,\n"
	"it publishes the cluster map and moves shards between nodes.\n"
	"  --etcd ENDPOINTS     etcd endpoints, http://host:port[,...] (required)\n"
	"  --cluster NAME       cluster name: keys under /keymap/NAME/ (required)\n"
	"  --id ID              this placer's id (default: hostname-pid)\n"
	"  --shards N           shards of the first map, a power of two (default 16)\n"
	"  --route-sep C        routing separator of the first map (default /)\n"
	"  --route-depth D      routing depth of the first map (default 1)\n"
	"  --ttl S              lease time-to-live, seconds (default 6)\n"
	"  --max-moves N        cross-node moves in flight at most (default 4)\n"
	"  --balance-pct P      move shards for load above P %% of the mean (default 0: off)\n"
	"  --min-rate R         no load balancing below this mean worker rate (default 0)\n"
	"  --interval-ms MS     decision period (default 1000)\n"
	"  --move-timeout-s S   a move not ready in S seconds is given up (default 60)\n"
	"  --once               one decision as the leader, then exit\n"
	"  --dry-run            print the maps and moves it would write; write nothing\n"
	"  -v, --verbose        log skipped members and records\n"
	"  -h, --help           this text\n"
	"Exit status: 0 stopped by SIGTERM/SIGINT (or --once done), 1 etcd error at start,\n"
	"2 bad usage.\n";

static int
bad(const char *opt, const char *arg, const char *why)
{
	fprintf(stderr, "keymap-placer: %s '%s': %s\n", opt, arg, why);
	return -1;
}

static int
parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{"etcd", required_argument, NULL, 'e'},
		{"cluster", required_argument, NULL, 'c'},
		{"id", required_argument, NULL, 'i'},
		{"shards", required_argument, NULL, 's'},
		{"route-sep", required_argument, NULL, 'S'},
		{"route-depth", required_argument, NULL, 'D'},
		{"ttl", required_argument, NULL, 't'},
		{"max-moves", required_argument, NULL, 'm'},
		{"balance-pct", required_argument, NULL, 'b'},
		{"min-rate", required_argument, NULL, 'r'},
		{"interval-ms", required_argument, NULL, 'I'},
		{"move-timeout-s", required_argument, NULL, 'T'},
		{"once", no_argument, NULL, 'o'},
		{"dry-run", no_argument, NULL, 'n'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct km_etcd_endpoints ep;
	char err[160], host[48] = "placer";
	uint64_t v;
	int c;

	*o = (struct opts){.shards = 16,
		.route_sep = '/',
		.route_depth = 1,
		.ttl_s = 6,
		.max_moves = 4,
		.interval_ms = 1000,
		.move_timeout_s = 60};
	gethostname(host, sizeof(host) - 1);
	snprintf(o->id, sizeof(o->id), "%.40s-%ld", host, (long)getpid());
	for (c = 0; o->id[c] != '\0'; c++)
		if (!km_cluster_id_valid((char[]){o->id[c], '\0'}))
			o->id[c] = '-';
	while ((c = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
		switch (c) {
		case 'e':
			if (km_etcd_endpoints_parse(optarg, &ep, err, sizeof(err)) < 0)
				return bad("--etcd", optarg, err);
			o->etcd = optarg;
			break;
		case 'c':
			if (!km_cluster_id_valid(optarg))
				return bad("--cluster", optarg, "1-63 of A-Z a-z 0-9 . _ -");
			o->cluster = optarg;
			break;
		case 'i':
			if (!km_cluster_id_valid(optarg))
				return bad("--id", optarg, "1-63 of A-Z a-z 0-9 . _ -");
			snprintf(o->id, sizeof(o->id), "%s", optarg);
			break;
		case 's':
			if (km_util_parse_u64(optarg, 1, KM_CLUSTER_SHARDS_MAX, &v) < 0 ||
				(v & (v - 1)) != 0)
				return bad("--shards", optarg, "a power of two, 1..65536");
			o->shards = (uint32_t)v;
			break;
		case 'S':
			if (strlen(optarg) != 1 || optarg[0] < 0x21 || optarg[0] > 0x7e)
				return bad("--route-sep", optarg, "one printable ASCII character");
			o->route_sep = (uint8_t)optarg[0];
			break;
		case 'D':
			if (km_util_parse_u64(optarg, 1, 255, &v) < 0)
				return bad("--route-depth", optarg, "1..255");
			o->route_depth = (uint8_t)v;
			break;
		case 't':
			if (km_util_parse_u64(optarg, 2, 300, &v) < 0)
				return bad("--ttl", optarg, "2..300 seconds");
			o->ttl_s = (int64_t)v;
			break;
		case 'm':
			if (km_util_parse_u64(optarg, 0, 1024, &v) < 0)
				return bad("--max-moves", optarg, "0..1024");
			o->max_moves = (uint32_t)v;
			break;
		case 'b':
			if (km_util_parse_u64(optarg, 0, 1000, &v) < 0 || (v != 0 && v <= 100))
				return bad("--balance-pct", optarg, "0 (off) or 101..1000");
			o->balance_pct = (uint32_t)v;
			break;
		case 'r':
			if (km_util_parse_u64(optarg, 0, UINT32_MAX, &v) < 0)
				return bad("--min-rate", optarg, "0..4294967295 requests/s");
			o->min_rate = (double)v;
			break;
		case 'I':
			if (km_util_parse_u64(optarg, 50, 600000, &v) < 0)
				return bad("--interval-ms", optarg, "50..600000");
			o->interval_ms = (unsigned int)v;
			break;
		case 'T':
			if (km_util_parse_u64(optarg, 1, 86400, &v) < 0)
				return bad("--move-timeout-s", optarg, "1..86400");
			o->move_timeout_s = (unsigned int)v;
			break;
		case 'o':
			o->once = 1;
			break;
		case 'n':
			o->dry_run = 1;
			break;
		case 'v':
			o->verbose = 1;
			break;
		case 'h':
			fputs(usage_text, stdout);
			exit(0);
		default:
			fputs(usage_text, stderr);
			return -1;
		}
	}
	if (optind != argc)
		return bad("argument", argv[optind], "unexpected");
	if (o->etcd == NULL || o->cluster == NULL) {
		fprintf(stderr, "keymap-placer: --etcd and --cluster are required\n%s", usage_text);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	int rc;

	if (parse(argc, argv, &pl.o) < 0)
		return 2;
	snprintf(pl.prefix, sizeof(pl.prefix), "/keymap/%s/", pl.o.cluster);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	rc = km_etcd_open(pl.o.etcd, ETCD_TIMEOUT_MS, &pl.e);
	if (rc < 0) {
		fprintf(stderr, "keymap-placer: --etcd %s: %s\n", pl.o.etcd, strerror(-rc));
		return 2;
	}
	if (pl.o.dry_run) {
		/* Read only: what the leader would do now. */
		rc = decide_once();
		if (rc < 0)
			fprintf(stderr, "keymap-placer: etcd %s: %s\n", pl.o.etcd,
				km_etcd_errmsg(pl.e));
		km_etcd_close(pl.e);
		return rc < 0 ? 1 : 0;
	}
	rc = lease_ensure();
	if (rc < 0) {
		fprintf(stderr, "keymap-placer: etcd %s: %s\n", pl.o.etcd, km_etcd_errmsg(pl.e));
		km_etcd_close(pl.e);
		return 1;
	}
	plog("NOTICE", "%s: cluster %s at %s, standing for election", pl.o.id, pl.o.cluster,
		pl.o.etcd);
	run();
	km_etcd_close(pl.e);
	return 0;
}
