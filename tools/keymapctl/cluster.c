/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymapctl for a cluster (docs/cluster.md): cluster (this keymapd's /keymap/cluster),
 * nodes (the cluster as etcd has it) and cluster drain|undrain NODE (the operator's drain
 * keys). etcd is found through the running keymapd's /keymap/cluster (endpoints and key
 * prefix), or given with --etcd ENDPOINTS --cluster NAME, which needs no keymapd.
 *
 * nodes reads map/current, members/, drain/, load/ and moves/ in one etcd transaction
 * (one revision), then the placer's election; it shows what it read, a map that does not
 * decode included, and changes nothing.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <km_cluster.h>
#include <km_etcd.h>
#include <km_util.h>

#include "keymapctl.h"

#define PREFIX_MAX 128 /* "/keymap/<name>/", as keymapd's */
#define KEY_MAX    (PREFIX_MAX + 96)

/* Where the cluster's keys are. */
struct where {
	const char *etcd; /* endpoints, km_etcd_endpoints_parse() syntax */
	char name[KM_CLUSTER_ID_MAX + 1];
	char prefix[PREFIX_MAX]; /* /keymap/<name>/ */
	json_t *tel;             /* keymapd's /keymap/cluster reply when it told us (owns etcd) */
};

/* What etcd holds under the prefix, read at one revision. */
struct snap {
	int64_t rev;
	int has_map;         /* map/current exists */
	int64_t map_rev;     /* its mod revision */
	struct km_cmap *map; /* decoded, NULL when absent or malformed */
	char map_err[KM_CLUSTER_ERR_MAX];
	json_t *members; /* node id -> member record (null when it is not a JSON object) */
	json_t *drains;  /* node id -> "at" (integer, or null when unreadable) */
	json_t *loads;   /* node id -> sum of its rates (real, or null when unreadable) */
	json_t *moves;   /* [{"shard": id, ...the move's record}] */
	json_t *leader;  /* the placer leader's value (a string when not JSON), NULL: none */
};

/* Which command line options a cluster command was given. */
struct cl_args {
	const char *etcd;
	const char *cluster;
	char *pos[3]; /* positional arguments */
	int npos;
};

/*
 * Split args (after the command name) into --etcd, --cluster (either "--opt VALUE" or
 * "--opt=VALUE") and at most 3 positional ones. @return -1 to go on, or the exit status.
 */
static int
parse_args(const char *cmd, int argc, char **argv, struct cl_args *a)
{
	const char **dst;
	const char *opt;
	int i;

	memset(a, 0, sizeof(*a));
	for (i = 1; i < argc; i++) {
		dst = NULL;
		if (strncmp(argv[i], "--etcd", 6) == 0 &&
			(argv[i][6] == '\0' || argv[i][6] == '=')) {
			dst = &a->etcd;
			opt = argv[i] + 6;
		} else if (strncmp(argv[i], "--cluster", 9) == 0 &&
			   (argv[i][9] == '\0' || argv[i][9] == '=')) {
			dst = &a->cluster;
			opt = argv[i] + 9;
		}
		if (dst != NULL) {
			if (*opt == '=')
				*dst = opt + 1;
			else if (i + 1 < argc)
				*dst = argv[++i];
			else
				return usage_error("%s: %s needs a value", cmd, argv[i]);
			continue;
		}
		if (argv[i][0] == '-' && argv[i][1] != '\0')
			return usage_error("%s: unknown option '%s'", cmd, argv[i]);
		if (a->npos == 3)
			return usage_error("%s: unexpected argument '%s'", cmd, argv[i]);
		a->pos[a->npos++] = argv[i];
	}
	if ((a->etcd == NULL) != (a->cluster == NULL))
		return usage_error("%s: --etcd and --cluster go together", cmd);
	if (a->etcd != NULL) {
		struct km_etcd_endpoints ep;
		char err[160];

		if (km_etcd_endpoints_parse(a->etcd, &ep, err, sizeof(err)) != 0)
			return usage_error("%s: --etcd '%s': %s", cmd, a->etcd, err);
		if (!km_cluster_id_valid(a->cluster))
			return usage_error(
				"%s: --cluster '%s' is not a cluster name (1..%d characters "
				"of A-Z a-z 0-9 . _ -)",
				cmd, a->cluster, KM_CLUSTER_ID_MAX);
	}
	return -1;
}

/*
 * Where etcd is: from the options, else from keymapd's /keymap/cluster.
 * @return -1 to go on (w filled; where_free() it), or the exit status after saying why.
 */
static int
where_find(struct ctl *c, const struct cl_args *a, struct where *w)
{
	const char *name, *prefix, *etcd;
	json_t *root, *d;
	uint64_t on = 0;
	int rc;

	memset(w, 0, sizeof(*w));
	if (a->etcd != NULL) {
		w->etcd = a->etcd;
		snprintf(w->name, sizeof(w->name), "%s", a->cluster);
		snprintf(w->prefix, sizeof(w->prefix), "/keymap/%s/", a->cluster);
		return -1;
	}
	rc = tel_query(c, "/keymap/cluster", &root, &d);
	if (rc != 0)
		return rc;
	tel_close(c);
	if (jint(d, "cluster", &on) == 0 && on == 0) {
		errmsg("%s: keymapd (%s) runs as a single node, not in a cluster: give --etcd "
		       "ENDPOINTS --cluster NAME",
			c->cmd, c->path);
		json_decref(root);
		return EXIT_REFUSED;
	}
	name = json_string_value(json_object_get(d, "name"));
	prefix = json_string_value(json_object_get(d, "prefix"));
	etcd = json_string_value(json_object_get(d, "etcd"));
	if (name == NULL || prefix == NULL || etcd == NULL || !km_cluster_id_valid(name) ||
		strlen(prefix) >= sizeof(w->prefix)) {
		errmsg("%s: keymapd's /keymap/cluster lacks a valid name, prefix or etcd (give "
		       "--etcd ENDPOINTS --cluster NAME)",
			c->cmd);
		json_decref(root);
		return EXIT_TRANSPORT;
	}
	snprintf(w->name, sizeof(w->name), "%s", name);
	snprintf(w->prefix, sizeof(w->prefix), "%s", prefix);
	w->etcd = etcd;
	w->tel = root;
	return -1;
}

static void
where_free(struct where *w)
{
	json_decref(w->tel);
	w->tel = NULL;
}

/* An etcd error: the message names the endpoint. @return EXIT_TRANSPORT */
static int
etcd_error(const struct ctl *c, const struct km_etcd *e, const char *etcd, int rc)
{
	const char *m = e != NULL ? km_etcd_errmsg(e) : "";

	if (m[0] != '\0')
		errmsg("%s: %s", c->cmd, m);
	else
		errmsg("%s: etcd %s: %s", c->cmd, etcd, strerror(-rc));
	return EXIT_TRANSPORT;
}

static int
etcd_open(const struct ctl *c, const struct where *w, struct km_etcd **e)
{
	int rc = km_etcd_open(w->etcd, (unsigned int)c->timeout_ms, e);

	if (rc == -EINVAL) {
		errmsg("%s: etcd endpoints '%s' are not http://HOST:PORT[,...]", c->cmd, w->etcd);
		return EXIT_TRANSPORT;
	}
	if (rc < 0) {
		errmsg("%s: etcd %s: %s", c->cmd, w->etcd, strerror(-rc));
		return EXIT_TRANSPORT;
	}
	return -1;
}

static void
snap_free(struct snap *s)
{
	km_cmap_free(s->map);
	json_decref(s->members);
	json_decref(s->drains);
	json_decref(s->loads);
	json_decref(s->moves);
	json_decref(s->leader);
	memset(s, 0, sizeof(*s));
}

/* The part of kv's key after prefix + what, NUL-terminated in out. @return 0, or -1 when
 * it is empty or does not fit. */
static int
key_tail(const struct km_etcd_kv *kv, const char *prefix, const char *what, char *out, size_t cap)
{
	size_t plen = strlen(prefix) + strlen(what);

	if (kv->klen <= plen || kv->klen - plen >= cap)
		return -1;
	memcpy(out, kv->key + plen, kv->klen - plen);
	out[kv->klen - plen] = '\0';
	return 0;
}

static json_t *
xjson(json_t *v)
{
	if (v == NULL)
		oom();
	return v;
}

static void
jset(json_t *o, const char *key, json_t *v)
{
	if (json_object_set_new(o, key, xjson(v)) != 0)
		oom();
}

static void
jappend(json_t *a, json_t *v)
{
	if (json_array_append_new(a, xjson(v)) != 0)
		oom();
}

/* The sum of a load report's rates. @return the sum, or a negative value when the report
 * is not {"rates": [[id, rate], ...], ...}. */
static double
load_sum(const struct km_etcd_kv *kv)
{
	json_t *o = json_loadb((const char *)kv->value, kv->vlen, 0, NULL);
	json_t *rates = json_object_get(o, "rates"), *r;
	double sum = 0;
	size_t i;

	if (!json_is_array(rates)) {
		json_decref(o);
		return -1;
	}
	json_array_foreach(rates, i, r)
	{
		if (!json_is_array(r) || !json_is_number(json_array_get(r, 1)) ||
			!(json_number_value(json_array_get(r, 1)) >= 0)) {
			json_decref(o);
			return -1;
		}
		sum += json_number_value(json_array_get(r, 1));
	}
	json_decref(o);
	return sum;
}

/* What op i of the snapshot transaction read, into s. */
static void
snap_take(struct snap *s, const char *prefix, unsigned int op, const struct km_etcd_kv *kv)
{
	char tail[KEY_MAX];
	json_t *v;
	double sum;

	switch (op) {
	case 0: /* map/current */
		s->has_map = 1;
		s->map_rev = kv->mod_rev;
		if (km_cmap_decode((const char *)kv->value, kv->vlen, &s->map, s->map_err,
			    sizeof(s->map_err)) != 0) {
			s->map = NULL;
			if (s->map_err[0] == '\0')
				snprintf(s->map_err, sizeof(s->map_err), "does not decode");
		}
		return;
	case 1: /* members/<node> */
		if (key_tail(kv, prefix, "members/", tail, sizeof(tail)) != 0 ||
			!km_cluster_id_valid(tail))
			return;
		v = json_loadb((const char *)kv->value, kv->vlen, 0, NULL);
		if (!json_is_object(v)) {
			json_decref(v);
			v = json_null();
		}
		jset(s->members, tail, v);
		return;
	case 2: /* drain/<node> */
		if (key_tail(kv, prefix, "drain/", tail, sizeof(tail)) != 0 ||
			!km_cluster_id_valid(tail))
			return;
		v = json_loadb((const char *)kv->value, kv->vlen, 0, NULL);
		jset(s->drains, tail,
			json_is_integer(json_object_get(v, "at"))
				? json_integer(json_integer_value(json_object_get(v, "at")))
				: json_null());
		json_decref(v);
		return;
	case 3: /* load/<node> */
		if (key_tail(kv, prefix, "load/", tail, sizeof(tail)) != 0 ||
			!km_cluster_id_valid(tail))
			return;
		sum = load_sum(kv);
		jset(s->loads, tail, sum >= 0 ? json_real(sum) : json_null());
		return;
	case 4: { /* moves/<shard id> */
		uint64_t id;

		if (key_tail(kv, prefix, "moves/", tail, sizeof(tail)) != 0 ||
			km_util_parse_u64(tail, 1, UINT64_MAX, &id) != 0)
			return;
		v = json_loadb((const char *)kv->value, kv->vlen, 0, NULL);
		if (!json_is_object(v)) {
			json_decref(v);
			v = xjson(json_object());
		}
		jset(v, "shard", json_integer((json_int_t)id));
		jappend(s->moves, v);
		return;
	}
	default:
		return;
	}
}

/*
 * Read the cluster's state: map/current, members, drain keys, load reports and moves in one
 * transaction, then the placer's election.
 * @return -1 to go on (snap_free() s), or the exit status after saying why.
 */
static int
snap_read(const struct ctl *c, struct km_etcd *e, const struct where *w, struct snap *s)
{
	static const char *const what[] = {"map/current", "members/", "drain/", "load/", "moves/"};
	char keys[5][KEY_MAX], name[KEY_MAX];
	struct km_etcd_op ops[5];
	struct km_etcd_kvs *r = NULL;
	size_t i;
	int rc;

	memset(s, 0, sizeof(*s));
	s->members = xjson(json_object());
	s->drains = xjson(json_object());
	s->loads = xjson(json_object());
	s->moves = xjson(json_array());
	for (i = 0; i < 5; i++) {
		snprintf(keys[i], sizeof(keys[i]), "%s%s", w->prefix, what[i]);
		ops[i] = (struct km_etcd_op){.type = KM_ETCD_OP_GET,
			.key = keys[i],
			.klen = strlen(keys[i]),
			.flags = i == 0 ? 0 : KM_ETCD_PREFIX};
	}
	rc = km_etcd_txn(e, NULL, 0, ops, 5, NULL, 0, &s->rev, &r);
	if (rc < 0) {
		snap_free(s);
		return etcd_error(c, e, w->etcd, rc);
	}
	for (i = 0; i < r->n; i++)
		snap_take(s, w->prefix, r->kv[i].op, &r->kv[i]);
	km_etcd_kvs_free(r);
	r = NULL;

	snprintf(name, sizeof(name), "%selection", w->prefix);
	rc = km_etcd_leader(e, name, strlen(name), NULL, &r);
	if (rc == -ENOENT)
		return -1;
	if (rc < 0) {
		snap_free(s);
		return etcd_error(c, e, w->etcd, rc);
	}
	if (r->n > 0) {
		s->leader = json_loadb((const char *)r->kv[0].value, r->kv[0].vlen, 0, NULL);
		if (!json_is_object(s->leader)) {
			json_decref(s->leader);
			s->leader = xjson(
				json_stringn_nocheck((const char *)r->kv[0].value, r->kv[0].vlen));
		}
	}
	km_etcd_kvs_free(r);
	return -1;
}

/* Whether node id has a member record (its lease is alive). */
static int
is_live(const struct snap *s, const char *id)
{
	return json_object_get(s->members, id) != NULL;
}

/* Shards of map node i. */
static uint32_t
shards_of(const struct km_cmap *m, uint16_t node)
{
	uint32_t i, n = 0;

	for (i = 0; i < m->nb_shards; i++)
		n += m->shards[i].node == node;
	return n;
}

/* Replicas held by map node i (in_sync: only those in sync). */
static uint32_t
replicas_of(const struct km_cmap *m, uint16_t node, int in_sync)
{
	uint32_t i, k, n = 0;

	for (i = 0; i < m->nb_shards; i++)
		for (k = 0; k < m->shards[i].nb_replicas; k++)
			n += m->shards[i].replicas[k].node == node &&
			     (!in_sync || m->shards[i].replicas[k].in_sync);
	return n;
}

/* Every shard with its primary and replicas (the --json "replication" array). */
static json_t *
replication_view(const struct km_cmap *m)
{
	json_t *a = xjson(json_array());
	uint32_t i, k;

	for (i = 0; i < m->nb_shards; i++) {
		const struct km_cmap_shard *sh = &m->shards[i];
		json_t *o = xjson(json_object()), *r = xjson(json_array());

		jset(o, "shard", json_integer((json_int_t)sh->id));
		jset(o, "primary", json_string(m->nodes[sh->node].id));
		jset(o, "worker", json_integer(sh->worker));
		for (k = 0; k < sh->nb_replicas; k++) {
			json_t *x = xjson(json_object());

			jset(x, "node", json_string(m->nodes[sh->replicas[k].node].id));
			jset(x, "worker", json_integer(sh->replicas[k].worker));
			jset(x, "in_sync", json_boolean(sh->replicas[k].in_sync));
			jappend(r, x);
		}
		jset(o, "replicas", r);
		jappend(a, o);
	}
	return a;
}

/* One row of nodes: node n of the map, or a member outside it (n NULL); rec is the member
 * record (NULL: none, JSON null: not an object). */
static json_t *
node_row(const struct snap *s, const struct km_cmap_node *n, const char *id, const json_t *rec)
{
	json_t *o = xjson(json_object()), *v;
	char ip[INET_ADDRSTRLEN];
	struct in_addr a;

	jset(o, "id", json_string(id));
	if (n != NULL) {
		a.s_addr = htonl(n->ip);
		inet_ntop(AF_INET, &a, ip, sizeof(ip));
		jset(o, "ip", json_string(ip));
		jset(o, "port", json_integer(n->port));
		jset(o, "workers", json_integer(n->workers));
		jset(o, "incarnation", json_integer((json_int_t)n->incarnation));
		/* In the map, not serving yet: a node that starts (its record says so). */
		jset(o, "state",
			json_string(
				n->state == KM_CMAP_DRAINING ? "draining"
				: json_is_false(json_object_get(rec, "serving")) && is_live(s, id)
					? "joining"
					: "active"));
		jset(o, "in_map", json_true());
		v = json_object_get(rec, "incarnation");
		if (json_is_integer(v) && (uint64_t)json_integer_value(v) != n->incarnation)
			jset(o, "member_incarnation", json_integer(json_integer_value(v)));
	} else {
		static const char *const fields[] = {"ip", "port", "workers", "incarnation"};
		size_t i;

		for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
			v = json_object_get(rec, fields[i]);
			jset(o, fields[i], v != NULL ? json_deep_copy(v) : json_null());
		}
		/* Before the first map every member is joining; with a map that does not decode,
		 * the state the member record tells. */
		v = json_object_get(rec, "state");
		jset(o, "state",
			s->has_map && s->map == NULL && json_is_string(v)
				? json_string(json_string_value(v))
				: json_string("joining"));
		jset(o, "in_map", json_false());
	}
	jset(o, "live", json_boolean(is_live(s, id)));
	if (!json_is_object(rec) && is_live(s, id))
		jset(o, "member_error", json_string("member record is not a JSON object"));
	return o;
}

/* The cluster as nodes shows it (its --json output). */
static json_t *
nodes_view(const struct where *w, const struct snap *s)
{
	json_t *o = xjson(json_object()), *nodes = xjson(json_array()), *row, *rec, *v;
	json_t *drain_only = xjson(json_array());
	const char *id;
	uint16_t i;
	size_t j;

	jset(o, "cluster", json_string(w->name));
	jset(o, "prefix", json_string(w->prefix));
	jset(o, "etcd", json_string(w->etcd));
	jset(o, "revision", json_integer(s->rev));
	if (s->map != NULL) {
		jset(o, "epoch", json_integer(s->map->epoch));
		jset(o, "map_revision", json_integer(s->map_rev));
		jset(o, "shards", json_integer(s->map->nb_shards));
	} else {
		jset(o, "epoch", json_null());
		if (s->has_map) {
			jset(o, "map_revision", json_integer(s->map_rev));
			jset(o, "map_error", json_string(s->map_err));
		}
	}
	jset(o, "leader", s->leader != NULL ? json_deep_copy(s->leader) : json_null());

	for (i = 0; s->map != NULL && i < s->map->nb_nodes; i++) {
		const struct km_cmap_node *n = &s->map->nodes[i];

		row = node_row(s, n, n->id, json_object_get(s->members, n->id));
		jset(row, "shards", json_integer(shards_of(s->map, i)));
		jset(row, "replicas", json_integer(replicas_of(s->map, i, 0)));
		jset(row, "replicas_in_sync", json_integer(replicas_of(s->map, i, 1)));
		jappend(nodes, row);
	}
	json_object_foreach(s->members, id, rec)
	{
		if (s->map != NULL && km_cmap_node_find(s->map, id) >= 0)
			continue;
		row = node_row(s, NULL, id, rec);
		/* Unknown when the map does not decode. */
		jset(row, "shards", s->has_map && s->map == NULL ? json_null() : json_integer(0));
		jappend(nodes, row);
	}
	json_array_foreach(nodes, j, row)
	{
		id = json_string_value(json_object_get(row, "id"));
		v = json_object_get(s->loads, id);
		jset(row, "load", v != NULL ? json_deep_copy(v) : json_null());
		v = json_object_get(s->drains, id);
		if (v != NULL)
			jset(row, "drain_at", json_deep_copy(v));
	}
	json_object_foreach(s->drains, id, v)
	{
		int found = 0;
		size_t k;

		json_array_foreach(nodes, k, row)
		{
			if (strcmp(json_string_value(json_object_get(row, "id")), id) == 0)
				found = 1;
		}
		if (!found)
			jappend(drain_only, json_string(id));
	}
	jset(o, "nodes", nodes);
	if (s->map != NULL)
		jset(o, "replication", replication_view(s->map));
	jset(o, "drained_elsewhere", drain_only);
	jset(o, "moves", json_deep_copy(s->moves));
	return o;
}

/* --json of nodes: as print_json, reals with 15 significant digits (a sum of rates prints
 * 2111.1, not 2111.0999999999999). */
static void
print_view(const json_t *v)
{
	if (json_dumpf(v, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) != 0)
		oom();
	putchar('\n');
}

/* A unix time as 2026-12-04T20:17:39Z. */
static const char *
utc(json_int_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, t);
	return buf;
}

/* The state column: the map's (or joining), and a drain key the placer has not acted on. */
static void
state_text(const json_t *row, char *buf, size_t len)
{
	const char *st = jfmt(json_object_get(row, "state"));
	int drain = json_object_get(row, "drain_at") != NULL;

	if (strcmp(st, "draining") == 0 && !drain)
		snprintf(buf, len, "draining, undrain asked");
	else if (strcmp(st, "draining") != 0 && drain)
		snprintf(buf, len, "%s, drain asked", st);
	else
		snprintf(buf, len, "%s", st);
}

static void
print_leader(const json_t *l, const char *name)
{
	if (l == NULL || json_is_null(l))
		printf("placer leader  none (no keymap-placer leads cluster %s)\n", name);
	else if (json_is_object(l))
		printf("placer leader  %s (pid %s on %s)\n", jfmt(json_object_get(l, "id")),
			jfmt(json_object_get(l, "pid")), jfmt(json_object_get(l, "host")));
	else
		printf("placer leader  %s\n", jfmt(l));
}

static void
print_nodes(const json_t *v)
{
	const json_t *nodes = json_object_get(v, "nodes"), *row, *x;
	const char *name = jfmt(json_object_get(v, "cluster"));
	char state[64], inc[64];
	struct table t;
	size_t i;

	printf("cluster        %s (etcd %s, keys under %s)\n", name,
		jfmt(json_object_get(v, "etcd")), jfmt(json_object_get(v, "prefix")));
	if (json_object_get(v, "map_error") != NULL)
		printf("map            MALFORMED: map/current (revision %s) does not decode: %s; "
		       "the placer publishes nothing until it is fixed or deleted\n",
			jfmt(json_object_get(v, "map_revision")),
			jfmt(json_object_get(v, "map_error")));
	else if (json_is_null(json_object_get(v, "epoch")))
		printf("map            none yet (the placer publishes the first one from the "
		       "members present)\n");
	else {
		size_t in_map = 0;

		json_array_foreach(nodes, i, row) in_map +=
			json_is_true(json_object_get(row, "in_map"));
		printf("map            epoch %s, %zu nodes, %s shards\n",
			jfmt(json_object_get(v, "epoch")), in_map,
			jfmt(json_object_get(v, "shards")));
	}
	print_leader(json_object_get(v, "leader"), name);
	if (json_array_size(nodes) == 0) {
		printf("\nno node in the map and no member\n");
	} else {
		putchar('\n');
		table_init(&t, 9);
		table_right(&t, 2);
		table_right(&t, 3);
		table_right(&t, 6);
		table_right(&t, 7);
		table_right(&t, 8);
		table_add(&t, "node");
		table_add(&t, "address");
		table_add(&t, "workers");
		table_add(&t, "incarnation");
		table_add(&t, "state");
		table_add(&t, "live");
		table_add(&t, "shards");
		table_add(&t, "replicas");
		table_add(&t, "load");
		json_array_foreach(nodes, i, row)
		{
			table_add(&t, "%s", jfmt(json_object_get(row, "id")));
			if (json_object_get(row, "ip") != NULL &&
				!json_is_null(json_object_get(row, "ip")))
				table_add(&t, "%s:%s", jfmt(json_object_get(row, "ip")),
					jfmt(json_object_get(row, "port")));
			else
				table_add(&t, "-");
			table_add(&t, "%s", jfmt(json_object_get(row, "workers")));
			x = json_object_get(row, "member_incarnation");
			if (x != NULL)
				snprintf(inc, sizeof(inc), "%s (member %s)",
					jfmt(json_object_get(row, "incarnation")), jfmt(x));
			else
				snprintf(inc, sizeof(inc), "%s",
					jfmt(json_object_get(row, "incarnation")));
			table_add(&t, "%s", inc);
			state_text(row, state, sizeof(state));
			table_add(&t, "%s", state);
			table_add(&t, "%s",
				json_is_true(json_object_get(row, "live")) ? "live" : "down");
			table_add(&t, "%s", jfmt(json_object_get(row, "shards")));
			if (json_object_get(row, "replicas") != NULL)
				table_add(&t, "%s (%s in sync)",
					jfmt(json_object_get(row, "replicas")),
					jfmt(json_object_get(row, "replicas_in_sync")));
			else
				table_add(&t, "-");
			table_add(&t, "%s", jfmt(json_object_get(row, "load")));
		}
		table_print(&t);
		table_free(&t);
	}
	json_array_foreach(json_object_get(v, "nodes"), i, row)
	{
		x = json_object_get(row, "member_error");
		if (x != NULL)
			printf("%s: %s\n", jfmt(json_object_get(row, "id")), jfmt(x));
	}
	x = json_object_get(v, "replication");
	{
		size_t repl = 0;

		json_array_foreach(x, i, row) repl +=
			json_array_size(json_object_get(row, "replicas")) != 0;
		if (repl > 0) {
			const json_t *r;
			size_t k;

			printf("\nshard  primary (worker)  replicas (worker, in sync or not)\n");
			json_array_foreach(x, i, row)
			{
				printf("%-6s %s (%s) ", jfmt(json_object_get(row, "shard")),
					jfmt(json_object_get(row, "primary")),
					jfmt(json_object_get(row, "worker")));
				json_array_foreach(json_object_get(row, "replicas"), k, r)
					printf(" %s (%s, %s)", jfmt(json_object_get(r, "node")),
						jfmt(json_object_get(r, "worker")),
						json_is_true(json_object_get(r, "in_sync"))
							? "in sync"
							: "not in sync");
				if (json_array_size(json_object_get(row, "replicas")) == 0)
					printf(" none");
				putchar('\n');
			}
		}
	}
	x = json_object_get(v, "drained_elsewhere");
	if (json_array_size(x) > 0)
		printf("\ndrain asked for nodes neither in the map nor members: %s\n", jfmt(x));
	x = json_object_get(v, "moves");
	if (json_array_size(x) > 0) {
		printf("\nmoves in flight:\n");
		json_array_foreach(x, i, row)
		{
			printf("  shard %s  %s -> %s (worker %s)  %s%s%s\n",
				jfmt(json_object_get(row, "shard")),
				jfmt(json_object_get(row, "from")),
				jfmt(json_object_get(row, "to")),
				jfmt(json_object_get(row, "to_worker")),
				jfmt(json_object_get(row, "state")),
				json_object_get(row, "reason") != NULL ? ": " : "",
				json_object_get(row, "reason") != NULL
					? jfmt(json_object_get(row, "reason"))
					: "");
		}
	}
}

int
cmd_nodes(struct ctl *c, int argc, char **argv)
{
	struct km_etcd *e = NULL;
	struct cl_args a;
	struct where w;
	struct snap s;
	json_t *view;
	int rc;

	rc = parse_args("nodes", argc, argv, &a);
	if (rc >= 0)
		return rc;
	if (a.npos != 0)
		return usage_error("nodes: unexpected argument '%s'", a.pos[0]);
	rc = where_find(c, &a, &w);
	if (rc >= 0)
		return rc;
	rc = etcd_open(c, &w, &e);
	if (rc < 0)
		rc = snap_read(c, e, &w, &s);
	if (rc < 0) {
		view = nodes_view(&w, &s);
		if (c->json)
			print_view(view);
		else
			print_nodes(view);
		json_decref(view);
		snap_free(&s);
		rc = 0;
	}
	km_etcd_close(e);
	where_free(&w);
	return rc;
}

/* ---- cluster drain | undrain NODE ------------------------------------------------------ */

/* Whether node t may receive shards at the placer's next decision: live, not drained, and
 * either in the map or a member that asks to be active (the placer adds it first). */
static int
is_target(const struct snap *s, const char *t)
{
	const json_t *st = json_object_get(json_object_get(s->members, t), "state");

	if (!is_live(s, t) || json_object_get(s->drains, t) != NULL)
		return 0;
	if (s->map != NULL && km_cmap_node_find(s->map, t) >= 0)
		return 1;
	return !json_is_string(st) || strcmp(json_string_value(st), "draining") != 0;
}

/* The nodes other than id that can take shards, as "n2, n4" in buf, n of them. */
static void
targets(const struct snap *s, const char *id, char *buf, size_t len, unsigned int *n)
{
	const char *t;
	size_t off = 0;
	json_t *rec;
	uint16_t i;

	buf[0] = '\0';
	*n = 0;
	for (i = 0; s->map != NULL && i < s->map->nb_nodes; i++) {
		t = s->map->nodes[i].id;
		if (strcmp(t, id) == 0 || !is_target(s, t))
			continue;
		if (off < len)
			off += (size_t)snprintf(buf + off, len - off, "%s%s", *n ? ", " : "", t);
		(*n)++;
	}
	json_object_foreach(s->members, t, rec)
	{
		if (strcmp(t, id) == 0 || km_cmap_node_find(s->map, t) >= 0 || !is_target(s, t))
			continue;
		if (off < len)
			off += (size_t)snprintf(
				buf + off, len - off, "%s%s (joining)", *n ? ", " : "", t);
		(*n)++;
	}
}

/* What the placer does after a drain (draining 1) or undrain of id, in words. */
static void
plan(const struct snap *s, const char *name, const char *id, int draining, char *buf, size_t len)
{
	int idx = s->map != NULL ? km_cmap_node_find(s->map, id) : -ENOENT;
	int live = is_live(s, id);
	char to[512];
	unsigned int nt;
	uint32_t k;
	int n;

	if (s->has_map && s->map == NULL)
		n = snprintf(buf, len,
			"map/current does not decode (%s): the placer does nothing until it is "
			"fixed or deleted",
			s->map_err);
	else if (draining && idx >= 0) {
		k = shards_of(s->map, (uint16_t)idx);
		targets(s, id, to, sizeof(to), &nt);
		if (k == 0)
			n = snprintf(buf, len,
				"%s holds no shard: the placer removes it from the map at its next "
				"decision",
				id);
		else if (!live)
			n = snprintf(buf, len,
				"%s is down: its %u shard%s wait%s for it (nothing moves off a "
				"down node); once it is back they move away, then it leaves the "
				"map",
				id, k, k == 1 ? "" : "s", k == 1 ? "s" : "");
		else if (nt == 0)
			n = snprintf(buf, len,
				"no other node is active and live: the %u shard%s of %s stay%s "
				"until one is",
				k, k == 1 ? "" : "s", id, k == 1 ? "s" : "");
		else
			n = snprintf(buf, len,
				"the placer moves the %u shard%s of %s, a few at a time, each to "
				"the "
				"least loaded of %s, then removes %s from the map",
				k, k == 1 ? "" : "s", id, to, id);
	} else if (draining && live)
		n = snprintf(buf, len,
			"%s is a member outside the map: the placer does not add it while it is "
			"drained",
			id);
	else if (draining)
		n = snprintf(buf, len,
			"%s is neither in the map nor a member: it is not added when it registers, "
			"until keymapctl cluster undrain %s",
			id, id);
	else if (idx >= 0 && live)
		n = snprintf(buf, len,
			"the placer marks %s active at its next decision; it receives its fair "
			"share of shards again",
			id);
	else if (idx >= 0)
		n = snprintf(buf, len,
			"the placer marks %s active at its next decision; it is down: it "
			"receives shards once it is back",
			id);
	else if (live)
		n = snprintf(buf, len,
			"the placer adds %s to the map at its next decision and gives it its fair "
			"share of shards",
			id);
	else
		n = snprintf(buf, len, "%s joins the map once it registers", id);
	if (n >= 0 && (size_t)n < len && s->leader == NULL)
		snprintf(buf + n, len - (size_t)n,
			" (no keymap-placer leads cluster %s now: nothing happens until one "
			"runs)",
			name);
}

/* cluster drain NODE (drain 1) or cluster undrain NODE (drain 0), etcd opened. */
static int
drain_node(const struct ctl *c, struct km_etcd *e, const struct where *w, const char *id, int drain)
{
	char key[KEY_MAX], value[64], words[1024], when[40];
	struct km_etcd_kvs *r = NULL;
	json_int_t at = (json_int_t)time(NULL);
	struct snap s;
	int changed, rc;
	json_t *o;

	rc = snap_read(c, e, w, &s);
	if (rc >= 0)
		return rc;
	if (drain && !s.has_map && json_object_size(s.members) == 0) {
		errmsg("cluster: nothing under %s at %s (no map, no member): is the cluster "
		       "name right?",
			w->prefix, w->etcd);
		snap_free(&s);
		return EXIT_REFUSED;
	}
	snprintf(key, sizeof(key), "%sdrain/%s", w->prefix, id);
	if (drain) {
		/* Put it unless it exists: a drain asked again keeps its first time. */
		struct km_etcd_cmp cmp = {.key = key,
			.klen = strlen(key),
			.target = KM_ETCD_VERSION,
			.result = KM_ETCD_EQUAL,
			.num = 0};
		struct km_etcd_op put = {.type = KM_ETCD_OP_PUT,
			.key = key,
			.klen = strlen(key),
			.value = value,
			.vlen = (size_t)snprintf(
				value, sizeof(value), "{\"at\": %" JSON_INTEGER_FORMAT "}", at)};
		struct km_etcd_op get = {.type = KM_ETCD_OP_GET, .key = key, .klen = strlen(key)};

		rc = km_etcd_txn(e, &cmp, 1, &put, 1, &get, 1, NULL, &r);
		if (rc < 0) {
			snap_free(&s);
			return etcd_error(c, e, w->etcd, rc);
		}
		changed = rc;
		if (!changed) {
			json_t *v = r->n > 0 ? json_loadb((const char *)r->kv[0].value,
						       r->kv[0].vlen, 0, NULL)
					     : NULL;

			at = json_is_integer(json_object_get(v, "at"))
				     ? json_integer_value(json_object_get(v, "at"))
				     : -1;
			json_decref(v);
		}
		km_etcd_kvs_free(r);
		/* The plan as the placer will see it. */
		if (json_object_get(s.drains, id) == NULL)
			jset(s.drains, id, json_integer(at));
	} else {
		rc = km_etcd_delete(e, key, strlen(key), 0, NULL);
		if (rc < 0) {
			snap_free(&s);
			return etcd_error(c, e, w->etcd, rc);
		}
		changed = rc > 0;
		json_object_del(s.drains, id);
	}
	plan(&s, w->name, id, drain, words, sizeof(words));
	if (c->json) {
		o = xjson(json_object());
		jset(o, "cluster", json_string(w->name));
		jset(o, "node", json_string(id));
		jset(o, "key", json_string(key));
		jset(o, "draining", json_boolean(drain));
		jset(o, "changed", json_boolean(changed));
		if (drain)
			jset(o, "at", at >= 0 ? json_integer(at) : json_null());
		jset(o, "placer", json_string(words));
		print_json(o);
		json_decref(o);
	} else if (drain && changed) {
		printf("%s: drain asked (%s, at %s)\n%s\n", id, key, utc(at, when, sizeof(when)),
			words);
	} else if (drain) {
		printf("%s: already draining (%s, asked at %s)\n%s\n", id, key,
			at >= 0 ? utc(at, when, sizeof(when)) : "an unreadable time", words);
	} else if (changed) {
		printf("%s: drain withdrawn (%s deleted)\n%s\n", id, key, words);
	} else {
		printf("%s: was not draining (no %s): nothing changes\n", id, key);
	}
	snap_free(&s);
	return 0;
}

/* ---- cluster (this keymapd) ------------------------------------------------------------ */

static void
show_cluster(const json_t *d)
{
	static const char *const shown[] = {"cluster", "name", "node", "etcd", "prefix",
		"incarnation", "epoch", "refused_epoch", "etcd_ok", "etcd_errors", "last_error",
		"maps_applied", "maps_refused", "shards_created", "shards_moved", "shards_dropped",
		"shards_here", "shards_sent", "shards_received", "moves_failed", "replication",
		"replicas", "repl_out", "repl_out_in_sync", "repl_in", "repl_promoted",
		"repl_streams_in", "repl_refused_in", "repl_broken_out", "lease_fenced"};
	const json_t *v;
	const char *key, *err;
	uint64_t on = 0, ok = 0, refused = 0;
	struct table t;
	size_t i;

	if (jint(d, "cluster", &on) == 0 && on == 0) {
		printf("single node: keymapd runs without a [cluster] section\n");
		return;
	}
	err = json_string_value(json_object_get(d, "last_error"));
	table_init(&t, 2);
	table_kv(&t, "cluster", "%s", jfmt(json_object_get(d, "name")));
	table_kv(&t, "node", "%s", jfmt(json_object_get(d, "node")));
	jint(d, "etcd_ok", &ok);
	table_kv(&t, "etcd", "%s (%s)", jfmt(json_object_get(d, "etcd")),
		ok ? "reachable" : "unreachable");
	table_kv(&t, "prefix", "%s", jfmt(json_object_get(d, "prefix")));
	table_kv(&t, "incarnation", "%s", jfmt(json_object_get(d, "incarnation")));
	table_kv(&t, "map epoch", "%s", jfmt(json_object_get(d, "epoch")));
	if (jint(d, "refused_epoch", &refused) == 0 && refused == 0)
		table_kv(&t, "refused epoch", "none");
	else
		table_kv(&t, "refused epoch", "%s", jfmt(json_object_get(d, "refused_epoch")));
	table_kv(&t, "maps", "%s applied, %s refused", jfmt(json_object_get(d, "maps_applied")),
		jfmt(json_object_get(d, "maps_refused")));
	table_kv(&t, "shards here", "%s", jfmt(json_object_get(d, "shards_here")));
	table_kv(&t, "shards", "%s created, %s moved between workers, %s dropped",
		jfmt(json_object_get(d, "shards_created")),
		jfmt(json_object_get(d, "shards_moved")),
		jfmt(json_object_get(d, "shards_dropped")));
	table_kv(&t, "cross-node", "%s sent, %s received, %s failed",
		jfmt(json_object_get(d, "shards_sent")),
		jfmt(json_object_get(d, "shards_received")),
		jfmt(json_object_get(d, "moves_failed")));
	if (json_object_get(d, "replication") != NULL) {
		table_kv(&t, "replication", "%s, %s copies of every shard asked",
			jfmt(json_object_get(d, "replication")),
			jfmt(json_object_get(d, "replicas")));
		table_kv(&t, "streams",
			"%s to replicas (%s in sync), %s replicas held here; %s promoted here, "
			"%s streams received, %s refused, %s broken",
			jfmt(json_object_get(d, "repl_out")),
			jfmt(json_object_get(d, "repl_out_in_sync")),
			jfmt(json_object_get(d, "repl_in")),
			jfmt(json_object_get(d, "repl_promoted")),
			jfmt(json_object_get(d, "repl_streams_in")),
			jfmt(json_object_get(d, "repl_refused_in")),
			jfmt(json_object_get(d, "repl_broken_out")));
		if (json_object_get(d, "lease_fenced") != NULL) {
			uint64_t fenced = 0;

			jint(d, "lease_fenced", &fenced);
			table_kv(&t, "lease fence",
				fenced ? "closed: replicated shards answer BUSY (lease not sure, "
					 "or "
					 "the map not read again since it was renewed)"
				       : "open");
		}
	}
	table_kv(&t, "etcd errors", "%s", jfmt(json_object_get(d, "etcd_errors")));
	table_kv(&t, "last error", "%s", err != NULL && err[0] != '\0' ? err : "none");
	/* Whatever a newer keymapd adds. */
	json_object_foreach((json_t *)d, key, v)
	{
		for (i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
			if (strcmp(key, shown[i]) == 0)
				break;
		if (i == sizeof(shown) / sizeof(shown[0]))
			table_kv_flat(&t, key, v);
	}
	table_print(&t);
	table_free(&t);
}

/* cluster repl: this node's replication streams, one per line as keymapd lists them. */
static void
show_repl(const json_t *d)
{
	const json_t *row;
	size_t i;

	printf("mode  %s\n", jfmt(json_object_get(d, "mode")));
	printf("\nto replicas (shard replica state in_sync rseq acked lag starts [why]):\n");
	json_array_foreach(json_object_get(d, "out"), i, row) printf("  %s\n", jfmt(row));
	if (json_array_size(json_object_get(d, "out")) == 0)
		printf("  none\n");
	printf("\nreplicas held here (shard primary state complete applied):\n");
	json_array_foreach(json_object_get(d, "in"), i, row) printf("  %s\n", jfmt(row));
	if (json_array_size(json_object_get(d, "in")) == 0)
		printf("  none\n");
}

int
cmd_cluster(struct ctl *c, int argc, char **argv)
{
	struct km_etcd *e = NULL;
	struct cl_args a;
	struct where w;
	json_t *root, *d;
	int rc, drain;

	rc = parse_args("cluster", argc, argv, &a);
	if (rc >= 0)
		return rc;
	if (a.npos == 0) {
		if (a.etcd != NULL)
			return usage_error("cluster: --etcd and --cluster apply to cluster drain, "
					   "cluster undrain and nodes");
		rc = tel_query(c, "/keymap/cluster", &root, &d);
		if (rc != 0)
			return rc;
		if (c->json)
			print_json(d);
		else
			show_cluster(d);
		json_decref(root);
		return 0;
	}
	if (strcmp(a.pos[0], "repl") == 0) {
		if (a.npos != 1 || a.etcd != NULL)
			return usage_error("cluster repl takes no argument");
		rc = tel_query(c, "/keymap/cluster/repl", &root, &d);
		if (rc != 0)
			return rc;
		if (c->json)
			print_json(d);
		else
			show_repl(d);
		json_decref(root);
		return 0;
	}
	if (strcmp(a.pos[0], "drain") == 0)
		drain = 1;
	else if (strcmp(a.pos[0], "undrain") == 0)
		drain = 0;
	else
		return usage_error(
			"cluster: unknown subcommand '%s' (repl, drain NODE, undrain NODE)",
			a.pos[0]);
	if (a.npos != 2)
		return usage_error("cluster %s takes one node id", a.pos[0]);
	if (!km_cluster_id_valid(a.pos[1]))
		return usage_error("cluster %s: '%s' is not a node id (1..%d characters of A-Z a-z "
				   "0-9 . _ -)",
			a.pos[0], a.pos[1], KM_CLUSTER_ID_MAX);
	rc = where_find(c, &a, &w);
	if (rc >= 0)
		return rc;
	rc = etcd_open(c, &w, &e);
	if (rc < 0)
		rc = drain_node(c, e, &w, a.pos[1], drain);
	km_etcd_close(e);
	where_free(&w);
	return rc;
}
