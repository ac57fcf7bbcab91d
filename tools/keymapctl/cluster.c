/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymapctl: the cluster (docs/cluster.md). `cluster` shows this keymapd as a node
 * (/keymap/cluster); `nodes` shows the cluster as etcd has it (members, the map, load, the
 * placer leading); `cluster drain|undrain NODE` asks the placer to move a node's shards
 * away, or lets it have shards again. etcd's endpoints and the cluster's prefix come from
 * the keymapd asked.
 */

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <km_cluster.h>
#include <km_etcd.h>

#include "keymapctl.h"

#define ETCD_MS 3000

static void
show_cluster(const json_t *d, const char *arg)
{
	static const char *const keys[] = {"name", "node", "etcd", "incarnation", "epoch",
		"refused_epoch", "etcd_ok", "etcd_errors", "last_error", "maps_applied",
		"maps_refused", "shards_here", "shards_created", "shards_moved", "shards_dropped",
		"shards_sent", "shards_received", "moves_failed"};
	struct table t;
	size_t i;

	(void)arg;
	if (!json_integer_value(json_object_get(d, "cluster"))) {
		printf("a single node: no [cluster] name\n");
		return;
	}
	table_init(&t, 2);
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		table_kv(&t, keys[i], "%s", jfmt(json_object_get(d, keys[i])));
	table_print(&t);
	table_free(&t);
}

/* etcd's endpoints and the prefix, from /keymap/cluster. @return 0 or the exit status. */
static int
where(struct ctl *c, char *ep, size_t eplen, char *prefix, size_t plen)
{
	json_t *root = NULL, *d = NULL;
	int rc = tel_query(c, "/keymap/cluster", &root, &d);

	if (rc != 0)
		return rc;
	if (!json_integer_value(json_object_get(d, "cluster"))) {
		json_decref(root);
		errmsg("%s: this keymapd is a single node (no [cluster] name)", c->cmd);
		return EXIT_REFUSED;
	}
	snprintf(ep, eplen, "%s", jfmt(json_object_get(d, "etcd")));
	snprintf(prefix, plen, "%s", jfmt(json_object_get(d, "prefix")));
	json_decref(root);
	return 0;
}

static int
etcd_open(struct ctl *c, const char *ep, struct km_etcd **e)
{
	if (km_etcd_open(ep, ETCD_MS, e) < 0) {
		errmsg("%s: etcd endpoints '%s' are not valid", c->cmd, ep);
		return EXIT_TRANSPORT;
	}
	return 0;
}

/* cluster drain|undrain NODE */
static int
drain(struct ctl *c, const char *node, int on)
{
	char ep[512], prefix[256], key[512], val[64];
	struct km_etcd *e = NULL;
	int rc;

	if (!km_cluster_id_valid(node))
		return usage_error("cluster %s: '%s' is not a node id (1-63 of A-Z a-z 0-9 . _ -)",
			on ? "drain" : "undrain", node);
	rc = where(c, ep, sizeof(ep), prefix, sizeof(prefix));
	if (rc != 0)
		return rc;
	rc = etcd_open(c, ep, &e);
	if (rc != 0)
		return rc;
	snprintf(key, sizeof(key), "%sdrain/%s", prefix, node);
	if (on) {
		snprintf(val, sizeof(val), "{\"at\":%lld}", (long long)time(NULL));
		rc = km_etcd_put(e, key, strlen(key), val, strlen(val), 0, NULL);
	} else {
		rc = km_etcd_delete(e, key, strlen(key), 0, NULL);
	}
	if (rc < 0) {
		errmsg("%s: etcd %s: %s", c->cmd, ep, km_etcd_errmsg(e));
		km_etcd_close(e);
		return EXIT_TRANSPORT;
	}
	km_etcd_close(e);
	if (c->json)
		printf("{\"node\": \"%s\", \"draining\": %s}\n", node, on ? "true" : "false");
	else if (on)
		printf("node %s draining: keymap-placer moves its shards to the other nodes, then "
		       "removes it from the map once it holds none\n",
			node);
	else
		printf("node %s not draining: keymap-placer may give it shards again\n", node);
	return 0;
}

int
cmd_cluster(struct ctl *c, int argc, char **argv)
{
	if (argc == 1)
		return tel_showf(c, show_cluster, NULL, "/keymap/cluster");
	if (argc == 3 && strcmp(argv[1], "drain") == 0)
		return drain(c, argv[2], 1);
	if (argc == 3 && strcmp(argv[1], "undrain") == 0)
		return drain(c, argv[2], 0);
	return usage_error("usage: cluster | cluster drain NODE | cluster undrain NODE");
}

/* nodes: the map's nodes with their members, shards and load; members not in it. */
int
cmd_nodes(struct ctl *c, int argc, char **argv)
{
	char ep[512], prefix[256], key[512], name[512];
	struct km_etcd_kvs *mem = NULL, *load = NULL, *cur = NULL, *drn = NULL, *lv = NULL;
	struct km_etcd *e = NULL;
	struct km_cmap *m = NULL;
	json_t *out = NULL, *arr;
	const char *leader = "(none)";
	struct table t;
	size_t i;
	uint32_t k;
	int rc;

	(void)argv;
	if (argc != 1)
		return usage_error("nodes takes no argument");
	rc = where(c, ep, sizeof(ep), prefix, sizeof(prefix));
	if (rc != 0)
		return rc;
	rc = etcd_open(c, ep, &e);
	if (rc != 0)
		return rc;
	snprintf(key, sizeof(key), "%smembers/", prefix);
	rc = km_etcd_get(e, key, strlen(key), KM_ETCD_PREFIX, &mem);
	snprintf(key, sizeof(key), "%sload/", prefix);
	if (rc >= 0)
		rc = km_etcd_get(e, key, strlen(key), KM_ETCD_PREFIX, &load);
	snprintf(key, sizeof(key), "%sdrain/", prefix);
	if (rc >= 0)
		rc = km_etcd_get(e, key, strlen(key), KM_ETCD_PREFIX, &drn);
	snprintf(key, sizeof(key), "%smap/current", prefix);
	if (rc >= 0)
		rc = km_etcd_get(e, key, strlen(key), 0, &cur);
	if (rc < 0) {
		errmsg("%s: etcd %s: %s", c->cmd, ep, km_etcd_errmsg(e));
		rc = EXIT_TRANSPORT;
		goto out;
	}
	snprintf(name, sizeof(name), "%selection", prefix);
	if (km_etcd_leader(e, name, strlen(name), NULL, &lv) == 0 && lv != NULL && lv->n > 0) {
		json_t *v = json_loadb((const char *)lv->kv[0].value, lv->kv[0].vlen, 0, NULL);
		static char id[KM_CLUSTER_ID_MAX + 1];

		snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(v, "id")) ?: "?");
		leader = id;
		json_decref(v);
	}
	if (cur->n > 0 && km_cmap_decode((const char *)cur->kv[0].value, cur->kv[0].vlen, &m, name,
				  sizeof(name)) < 0) {
		errmsg("%s: the map in etcd does not decode: %s", c->cmd, name);
		m = NULL;
	}
	out = json_pack("{s:s, s:I}", "leader", leader, "epoch", (json_int_t)(m ? m->epoch : 0));
	arr = json_array();
	json_object_set_new(out, "nodes", arr);
	for (k = 0; m != NULL && k < m->nb_nodes; k++) {
		const struct km_cmap_node *n = &m->nodes[k];
		char ip[INET_ADDRSTRLEN], lkey[512];
		uint32_t a = htonl(n->ip), shards = 0, s;
		double rate = 0;
		int live = 0, draining = 0;

		for (s = 0; s < m->nb_shards; s++)
			shards += m->shards[s].node == k;
		snprintf(lkey, sizeof(lkey), "%smembers/%s", prefix, n->id);
		for (i = 0; i < mem->n; i++)
			live |= mem->kv[i].klen == strlen(lkey) &&
				memcmp(mem->kv[i].key, lkey, mem->kv[i].klen) == 0;
		snprintf(lkey, sizeof(lkey), "%sdrain/%s", prefix, n->id);
		for (i = 0; i < drn->n; i++)
			draining |= drn->kv[i].klen == strlen(lkey) &&
				    memcmp(drn->kv[i].key, lkey, drn->kv[i].klen) == 0;
		snprintf(lkey, sizeof(lkey), "%sload/%s", prefix, n->id);
		for (i = 0; i < load->n; i++) {
			json_t *v, *r, *x;
			size_t j;

			if (load->kv[i].klen != strlen(lkey) ||
				memcmp(load->kv[i].key, lkey, load->kv[i].klen) != 0)
				continue;
			v = json_loadb((const char *)load->kv[i].value, load->kv[i].vlen, 0, NULL);
			r = json_object_get(v, "rates");
			json_array_foreach(r, j, x) rate += json_number_value(json_array_get(x, 1));
			json_decref(v);
		}
		inet_ntop(AF_INET, &a, ip, sizeof(ip));
		json_array_append_new(arr,
			json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:b, s:I, s:f}", "id", n->id,
				"ip", ip, "port", (json_int_t)n->port, "workers",
				(json_int_t)n->workers, "incarnation", (json_int_t)n->incarnation,
				"state",
				draining || n->state == KM_CMAP_DRAINING ? "draining" : "active",
				"live", live, "shards", (json_int_t)shards, "load", rate));
	}
	/* Members the map does not have: new ones, or drained and removed. */
	for (i = 0; i < mem->n; i++) {
		json_t *v = json_loadb((const char *)mem->kv[i].value, mem->kv[i].vlen, 0, NULL);
		const char *id = json_string_value(json_object_get(v, "id"));
		char dkey[512];
		int drained = 0;
		size_t j;

		snprintf(dkey, sizeof(dkey), "%sdrain/%s", prefix, id != NULL ? id : "");
		for (j = 0; j < drn->n; j++)
			drained |= drn->kv[j].klen == strlen(dkey) &&
				   memcmp(drn->kv[j].key, dkey, drn->kv[j].klen) == 0;

		if (id != NULL && (m == NULL || km_cmap_node_find(m, id) < 0))
			json_array_append_new(arr,
				json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:b, s:I, s:f}", "id", id,
					"ip", json_string_value(json_object_get(v, "ip")) ?: "?",
					"port", json_integer_value(json_object_get(v, "port")),
					"workers",
					json_integer_value(json_object_get(v, "workers")),
					"incarnation",
					json_integer_value(json_object_get(v, "incarnation")),
					"state", drained ? "drained" : "joining", "live", 1,
					"shards", (json_int_t)0, "load", 0.0));
		json_decref(v);
	}
	if (c->json) {
		print_json(out);
	} else {
		printf("map epoch %s, placer leading: %s\n", jfmt(json_object_get(out, "epoch")),
			leader);
		table_init(&t, 8);
		table_right(&t, 2);
		table_right(&t, 3);
		table_right(&t, 6);
		table_right(&t, 7);
		table_add(&t, "node");
		table_add(&t, "address");
		table_add(&t, "workers");
		table_add(&t, "incarnation");
		table_add(&t, "state");
		table_add(&t, "live");
		table_add(&t, "shards");
		table_add(&t, "load/s");
		for (i = 0; i < json_array_size(arr); i++) {
			json_t *n = json_array_get(arr, i);

			table_add(&t, "%s", jfmt(json_object_get(n, "id")));
			table_add(&t, "%s:%s", jfmt(json_object_get(n, "ip")),
				jfmt(json_object_get(n, "port")));
			table_add(&t, "%s", jfmt(json_object_get(n, "workers")));
			table_add(&t, "%s", jfmt(json_object_get(n, "incarnation")));
			table_add(&t, "%s", jfmt(json_object_get(n, "state")));
			table_add(&t, "%s",
				json_is_true(json_object_get(n, "live")) ? "yes" : "down");
			table_add(&t, "%s", jfmt(json_object_get(n, "shards")));
			table_add(&t, "%.0f", json_number_value(json_object_get(n, "load")));
		}
		table_print(&t);
		table_free(&t);
	}
	rc = 0;
out:
	json_decref(out);
	km_etcd_kvs_free(mem);
	km_etcd_kvs_free(load);
	km_etcd_kvs_free(drn);
	km_etcd_kvs_free(cur);
	km_etcd_kvs_free(lv);
	km_cmap_free(m);
	km_etcd_close(e);
	return rc;
}
