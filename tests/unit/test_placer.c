/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymap-placer's pure side (app/placer/placer.h): the command line (defaults, every
 * refusal names its option), load reports (member and move records are lib/cluster's:
 * test_cluster.c), the verdict on a move in flight (every rule in order), the routing rule
 * check, the plan of a decision (epochs, local moves folded into one map, moves in flight
 * skipped, the bound) and a map's change in words.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <placer.h>

/* Parse argv (NULL-terminated, after the program name). */
static int
parse(struct placer_opts *o, char *err, size_t errlen, ...)
{
	char *argv[32] = {"keymap-placer"};
	int argc = 1;
	va_list ap;
	char *a;

	va_start(ap, errlen);
	while ((a = va_arg(ap, char *)) != NULL && argc < 31)
		argv[argc++] = a;
	va_end(ap);
	return placer_opts_parse(argc, argv, o, err, errlen);
}

#define EP "--etcd", "http://127.0.0.1:2379"

static void
test_opts(void **state)
{
	struct placer_opts o;
	char err[256];
	size_t i;
	static const struct {
		const char *opt, *arg, *msg;
	} bad[] = {
		{"--shards", "3", "--shards '3': not a power of two"},
		{"--shards", "0", "--shards '0': not an integer in 1..65536"},
		{"--shards", "131072", "--shards '131072'"},
		{"--route-sep", "ab", "--route-sep 'ab'"},
		{"--route-sep", " ", "--route-sep ' '"},
		{"--route-depth", "0", "--route-depth '0'"},
		{"--ttl", "1", "--ttl '1': not an integer in 2..300"},
		{"--max-moves", "101", "--max-moves '101'"},
		{"--balance-pct", "100", "--balance-pct '100': not 0 (off)"},
		{"--min-rate", "-1", "--min-rate '-1'"},
		{"--min-rate", "x", "--min-rate 'x'"},
		{"--interval-ms", "10", "--interval-ms '10'"},
		{"--move-timeout-s", "0", "--move-timeout-s '0'"},
		{"--id", "a b", "--id 'a b'"},
		{"--cluster", "", "--cluster ''"},
		{"--etcd", "https://x:1", "--etcd 'https://x:1'"},
	};

	(void)state;
	assert_int_equal(parse(&o, err, sizeof(err), EP, "--cluster", "demo", NULL), 0);
	assert_string_equal(o.etcd, "http://127.0.0.1:2379");
	assert_string_equal(o.cluster, "demo");
	assert_true(km_cluster_id_valid(o.id));
	assert_int_equal(o.shards, 16);
	assert_int_equal(o.route_sep, '/');
	assert_int_equal(o.route_depth, 1);
	assert_int_equal(o.ttl_s, 6);
	assert_int_equal(o.max_moves, 4);
	assert_int_equal(o.balance_pct, 0);
	assert_int_equal(o.interval_ms, 1000);
	assert_int_equal(o.move_timeout_s, 60);
	assert_false(o.once || o.dry_run || o.verbose);

	assert_int_equal(
		parse(&o, err, sizeof(err), EP, "--cluster", "c1", "--id", "p-1", "--shards", "64",
			"--route-sep", ":", "--route-depth", "2", "--ttl", "3", "--max-moves", "0",
			"--balance-pct", "150", "--min-rate", "2.5", "--interval-ms", "50",
			"--move-timeout-s", "5", "--once", "--dry-run", "-v", NULL),
		0);
	assert_string_equal(o.id, "p-1");
	assert_true(o.shards == 64 && o.route_sep == ':' && o.route_depth == 2 && o.ttl_s == 3);
	assert_true(o.max_moves == 0 && o.balance_pct == 150 && o.min_rate == 2.5);
	assert_true(o.interval_ms == 50 && o.move_timeout_s == 5);
	assert_true(o.once && o.dry_run && o.verbose);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(parse(&o, err, sizeof(err), EP, "--cluster", "c", bad[i].opt,
					 bad[i].arg, NULL),
			-EINVAL);
		if (strstr(err, bad[i].msg) == NULL)
			fail_msg("%s %s: '%s' lacks '%s'", bad[i].opt, bad[i].arg, err, bad[i].msg);
	}
	assert_int_equal(parse(&o, err, sizeof(err), "--cluster", "c", NULL), -EINVAL);
	assert_non_null(strstr(err, "--etcd: required"));
	assert_int_equal(parse(&o, err, sizeof(err), EP, NULL), -EINVAL);
	assert_non_null(strstr(err, "--cluster: required"));
	assert_int_equal(parse(&o, err, sizeof(err), EP, "--cluster", "c", "extra", NULL), -EINVAL);
	assert_non_null(strstr(err, "'extra': unexpected"));
	assert_int_equal(
		parse(&o, err, sizeof(err), EP, "--cluster", "c", "--bogus", NULL), -EINVAL);
	assert_non_null(strstr(err, "--bogus: unknown option"));
	assert_int_equal(
		parse(&o, err, sizeof(err), EP, "--cluster", "c", "--shards", NULL), -EINVAL);
	assert_non_null(strstr(err, "--shards: needs an argument"));
	assert_int_equal(parse(&o, err, sizeof(err), "--help", NULL), 1);
}

static void
test_members_merge(void **state)
{
	struct km_cluster_member m[5] = {
		{.id = "n2", .incarnation = 1},
		{.id = "n1", .incarnation = 4},
		{.id = "n2", .incarnation = 3},
		{.id = "n1", .incarnation = 2},
		{.id = "n3", .incarnation = 1},
	};
	const char drain[2][KM_CLUSTER_ID_MAX + 1] = {"n3", "n9"};
	uint32_t n;

	(void)state;
	n = placer_members_merge(m, 5, drain, 2);
	assert_int_equal(n, 3);
	assert_string_equal(m[0].id, "n2");
	assert_int_equal(m[0].incarnation, 3);
	assert_string_equal(m[1].id, "n1");
	assert_int_equal(m[1].incarnation, 4);
	assert_string_equal(m[2].id, "n3");
	assert_int_equal(m[0].state, KM_CMAP_ACTIVE);
	assert_int_equal(m[1].state, KM_CMAP_ACTIVE);
	assert_int_equal(m[2].state, KM_CMAP_DRAINING);
	assert_int_equal(placer_members_merge(m, 0, NULL, 0), 0);
}

/* The first map of members n1..nb (2 workers each), 8 shards. */
static struct km_cmap *
first_map(uint32_t nb)
{
	struct km_cluster_params p = {.initial_shards = 8, .route_sep = '/', .route_depth = 1};
	struct km_cluster_member m[4];
	struct km_cluster_decision d = {0};
	struct km_cmap *map;
	uint32_t i;

	for (i = 0; i < nb; i++) {
		m[i] = (struct km_cluster_member){
			.ip = 0x7f000101 + i, .port = 7070, .workers = 2, .incarnation = 1};
		snprintf(m[i].id, sizeof(m[i].id), "n%u", i + 1);
	}
	assert_int_equal(km_cluster_decide(&p, NULL, m, nb, NULL, 0, &d, NULL, 0), 0);
	map = d.map;
	d.map = NULL;
	km_cluster_decision_free(&d);
	assert_non_null(map);
	return map;
}

static int
load(const char *json, const struct km_cmap *m, const char *node, struct placer_rates *r, char *err)
{
	return placer_load_decode(json, strlen(json), m, node, r, err, KM_CLUSTER_ERR_MAX);
}

static void
test_load(void **state)
{
	struct placer_rates r = {0};
	struct km_cmap *m = first_map(2); /* n1: 8, 10, 12, 14; n2: 9, 11, 13, 15 */
	char err[KM_CLUSTER_ERR_MAX];
	char big[8192];
	size_t n;
	uint32_t i;

	(void)state;
	assert_int_equal(
		load("{\"epoch\":3,\"rates\":[[8,10.5],[10,0],[9,7]]}", NULL, "n1", &r, err), 3);
	assert_int_equal(r.n, 3);
	assert_true(r.r[0].id == 8 && r.r[0].rate == 10.5 && r.r[2].id == 9 && r.r[2].rate == 7);
	/* with a map: only the node's own shards (9 is n2's; 99 is in no map) */
	assert_int_equal(load("{\"rates\":[[8,1],[9,2],[99,3],[12,4]]}", m, "n1", &r, err), 2);
	assert_int_equal(r.n, 5);
	assert_true(r.r[3].id == 8 && r.r[4].id == 12);
	assert_int_equal(load("{\"rates\":[[8,1]]}", m, "n7", &r, err), 0);
	/* a bad entry: nothing appended */
	assert_int_equal(load("{\"rates\":[[8,1],[9,-1]]}", NULL, "n1", &r, err), -EINVAL);
	assert_non_null(strstr(err, "rates[1]: not [shard id, requests/s]"));
	assert_int_equal(load("{\"rates\":[[0,1]]}", NULL, "n1", &r, err), -EINVAL);
	assert_int_equal(load("{\"rates\":[[8]]}", NULL, "n1", &r, err), -EINVAL);
	assert_int_equal(load("{\"rates\":{}}", NULL, "n1", &r, err), -EINVAL);
	assert_non_null(strstr(err, "rates: missing or not an array"));
	assert_int_equal(load("{\"epoch\":1}", NULL, "n1", &r, err), -EINVAL);
	assert_int_equal(load("nope", NULL, "n1", &r, err), -EINVAL);
	assert_non_null(strstr(err, "invalid JSON"));
	assert_int_equal(r.n, 5);
	/* growth past the first allocation */
	n = (size_t)snprintf(big, sizeof(big), "{\"rates\":[");
	for (i = 0; i < 500; i++)
		n += (size_t)snprintf(
			big + n, sizeof(big) - n, "%s[%u,%u]", i ? "," : "", i + 1, i);
	snprintf(big + n, sizeof(big) - n, "]}");
	assert_int_equal(load(big, NULL, "n1", &r, err), 500);
	assert_int_equal(r.n, 505);
	assert_true(r.r[504].id == 500 && r.r[504].rate == 499);
	placer_rates_free(&r);
	assert_null(r.r);
	km_cmap_free(m);
}

/* Judge mv on m with the given liveness (to_inc: the target's live run, 0: none) and age; check the
 * verdict and the reason. */
static void
judge(const struct km_cmap *m, const struct km_cluster_move_record *mv, int from_live,
	uint64_t to_inc, uint64_t age, enum placer_verdict want, const char *why_part)
{
	struct km_cluster_move cm;
	char why[KM_CLUSTER_ERR_MAX] = "";
	enum placer_verdict v =
		placer_move_judge(m, mv, from_live, to_inc, age, 60, &cm, why, sizeof(why));

	if (v != want)
		fail_msg("shard %lu: verdict %d, not %d (%s)", (unsigned long)mv->id, v, want, why);
	if (why_part != NULL && strstr(why, why_part) == NULL)
		fail_msg("shard %lu: '%s' lacks '%s'", (unsigned long)mv->id, why, why_part);
}

static void
test_judge(void **state)
{
	struct km_cmap *m = first_map(3); /* 8 -> n1 w0, 9 -> n2 w0, 10 -> n3 w0, 11 -> n1 w1 */
	struct km_cluster_move_record mv = {
		.id = 8, .epoch = 1, .from = "n1", .to = "n3", .to_worker = 1};
	struct km_cluster_move_record t;
	struct km_cluster_move cm;
	char why[KM_CLUSTER_ERR_MAX];

	(void)state;
	judge(m, &mv, 1, 1, 0, PLACER_KEEP, NULL);
	judge(m, &mv, 1, 1, 59, PLACER_KEEP, NULL);
	judge(m, &mv, 1, 1, 60, PLACER_DROP, "not ready within 60 s");
	judge(NULL, &mv, 1, 1, 0, PLACER_DROP, "there is no map");
	t = mv;
	t.id = 99;
	judge(m, &t, 1, 1, 0, PLACER_DROP, "shard 99 is not in the map of epoch 1");
	t = mv;
	snprintf(t.to, sizeof(t.to), "n9");
	judge(m, &t, 1, 1, 0, PLACER_DROP, "node n9 is not in the map");
	t = mv;
	snprintf(t.from, sizeof(t.from), "n2");
	judge(m, &t, 1, 1, 0, PLACER_DROP, "gives the shard to node n1, not n2");
	t = mv;
	snprintf(t.to, sizeof(t.to), "n1");
	judge(m, &t, 1, 1, 0, PLACER_DROP, "source and target are both node n1");
	t = mv;
	t.to_worker = 2;
	judge(m, &t, 1, 1, 0, PLACER_DROP, "node n3 has no worker 2");
	t = mv;
	t.state = KM_CLUSTER_MOVE_FAILED;
	snprintf(t.reason, sizeof(t.reason), "refused");
	judge(m, &t, 1, 1, 0, PLACER_DROP, "the copy failed: refused");
	t.reason[0] = '\0';
	judge(m, &t, 1, 1, 0, PLACER_DROP, "no reason given");
	judge(m, &mv, 0, 1, 0, PLACER_DROP, "node n1 has no live member");
	judge(m, &mv, 1, 0, 0, PLACER_DROP, "node n3 has no live member");
	/* ready: completed while the target's run that stored it lives, whatever the source
	 * and the age */
	t = mv;
	t.state = KM_CLUSTER_MOVE_READY;
	t.to_incarnation = 1;
	judge(m, &t, 1, 2, 0, PLACER_DROP, "node n3 restarted since it stored the copy");
	t.to_incarnation = 0;
	judge(m, &t, 1, 1, 0, PLACER_DROP, "restarted since");
	t.to_incarnation = 1;
	assert_int_equal(
		placer_move_judge(m, &t, 0, 1, 600, 60, &cm, why, sizeof(why)), PLACER_COMPLETE);
	assert_true(cm.id == 8 && cm.from_node == 0 && cm.from_worker == 0 && cm.to_node == 2 &&
		    cm.to_worker == 1);
	judge(m, &t, 1, 0, 0, PLACER_DROP, "node n3 has no live member");
	/* a target that started draining: the copy is not worth finishing */
	m->nodes[2].state = KM_CMAP_DRAINING;
	judge(m, &mv, 1, 1, 0, PLACER_DROP, "node n3 is draining");
	judge(m, &t, 1, 1, 0, PLACER_COMPLETE, NULL);
	t.state = KM_CLUSTER_MOVE_OTHER;
	m->nodes[2].state = KM_CMAP_ACTIVE;
	judge(m, &t, 1, 1, 0, PLACER_KEEP, NULL);
	km_cmap_free(m);
}

static void
test_map_accept(void **state)
{
	struct km_cmap *m = first_map(1);
	struct placer_opts o = {.route_sep = '/', .route_depth = 1};
	char why[KM_CLUSTER_ERR_MAX];

	(void)state;
	assert_int_equal(placer_map_accept(m, &o, why, sizeof(why)), 0);
	o.route_depth = 2;
	assert_int_equal(placer_map_accept(m, &o, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "its routing rule is separator '/' depth 1, this placer's is "
				    "'/' depth 2"));
	o.route_depth = 1;
	o.route_sep = ':';
	assert_int_equal(placer_map_accept(m, &o, why, sizeof(why)), -EINVAL);
	km_cmap_free(m);
}

static void
test_plan(void **state)
{
	struct km_cmap *m = first_map(2), *table;
	struct km_cluster_move mv[4] = {
		{.id = 8, .from_node = 0, .from_worker = 0, .to_node = 1, .to_worker = 0},
		{.id = 10, .from_node = 0, .from_worker = 1, .to_node = 0, .to_worker = 0},
		{.id = 9, .from_node = 1, .from_worker = 0, .to_node = 0, .to_worker = 1},
		{.id = 11, .from_node = 1, .from_worker = 1, .to_node = 1, .to_worker = 0},
	};
	struct km_cluster_decision d = {.moves = mv, .nb_moves = 4};
	struct placer_plan p;
	const uint64_t flight[1] = {9};
	char err[KM_CLUSTER_ERR_MAX];

	(void)state;
	/* nothing decided: nothing to do */
	d.nb_moves = 0;
	assert_int_equal(placer_plan(m, &d, NULL, 0, 4, 0, &p, err, sizeof(err)), 0);
	assert_null(p.map);
	assert_int_equal(p.nb_start, 0);
	assert_ptr_equal(p.base, m);
	placer_plan_free(&p);

	/* two local moves folded into one new epoch; shard 9 in flight; 2 cross moves left */
	d.nb_moves = 4;
	assert_int_equal(placer_plan(m, &d, flight, 1, 4, 0, &p, err, sizeof(err)), 0);
	assert_non_null(p.map);
	assert_int_equal(p.map->epoch, m->epoch + 1);
	assert_int_equal(p.nb_local, 2);
	assert_int_equal(km_cmap_shard_find(p.map, 10)->worker, 0);
	assert_int_equal(km_cmap_shard_find(p.map, 11)->worker, 0);
	assert_int_equal(km_cmap_shard_find(p.map, 8)->node, 0); /* a cross move: not yet */
	assert_int_equal(p.nb_start, 1);
	assert_int_equal(p.start[0].id, 8);
	assert_ptr_equal(p.base, p.map);
	assert_int_equal(km_cmap_check(p.map, NULL, 0), 0);
	placer_plan_free(&p);

	/* the bound counts the moves in flight */
	assert_int_equal(placer_plan(m, &d, flight, 1, 1, 0, &p, err, sizeof(err)), 0);
	assert_int_equal(p.nb_start, 0);
	placer_plan_free(&p);
	assert_int_equal(placer_plan(m, &d, NULL, 0, 2, 0, &p, err, sizeof(err)), 0);
	assert_int_equal(p.nb_start, 2);
	assert_true(p.start[0].id == 8 && p.start[1].id == 9);
	placer_plan_free(&p);

	/* a table map with no local move: published as decided, cross moves on it */
	table = km_cmap_dup(m);
	table->epoch = m->epoch + 1;
	table->nodes[1].down = 1;
	d.map = table;
	d.moves = &mv[0];
	d.nb_moves = 1;
	assert_int_equal(placer_plan(m, &d, NULL, 0, 4, 0, &p, err, sizeof(err)), 0);
	assert_true(km_cmap_equal(p.map, table));
	assert_int_equal(p.nb_local, 0);
	assert_int_equal(p.nb_start, 1);
	placer_plan_free(&p);

	/* the first map continues after the epochs already published */
	table->epoch = 1;
	assert_int_equal(placer_plan(NULL, &d, NULL, 0, 4, 42, &p, err, sizeof(err)), 0);
	assert_int_equal(p.map->epoch, 42);
	placer_plan_free(&p);
	assert_int_equal(placer_plan(NULL, &d, NULL, 0, 4, 0, &p, err, sizeof(err)), 0);
	assert_int_equal(p.map->epoch, 1);
	placer_plan_free(&p);

	/* a local move that does not apply (the shard is elsewhere): refused */
	d.map = NULL;
	mv[1].from_worker = 0; /* shard 10 is on n1 worker 1 */
	d.moves = &mv[1];
	d.nb_moves = 1;
	assert_int_equal(placer_plan(m, &d, NULL, 0, 4, 0, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "move of shard 10 within node n1"));
	assert_null(p.map);

	/* no epoch left */
	mv[1].from_worker = 1;
	m->epoch = UINT32_MAX;
	assert_int_equal(placer_plan(m, &d, NULL, 0, 4, 0, &p, err, sizeof(err)), -EOVERFLOW);
	km_cmap_free(table);
	km_cmap_free(m);
}

static void
test_map_diff(void **state)
{
	struct km_cmap *a = first_map(2), *b = first_map(3), *c;
	char buf[256];

	(void)state;
	placer_map_diff(NULL, a, buf, sizeof(buf));
	assert_string_equal(buf, "first map");
	placer_map_diff(a, a, buf, sizeof(buf));
	assert_string_equal(buf, "no change");
	/* b: n3 joined and 8 shards spread over three nodes */
	placer_map_diff(a, b, buf, sizeof(buf));
	assert_non_null(strstr(buf, "n3 joined"));
	assert_non_null(strstr(buf, "shards moved"));
	placer_map_diff(b, a, buf, sizeof(buf));
	assert_non_null(strstr(buf, "n3 removed"));
	c = km_cmap_dup(a);
	c->nodes[0].down = 1;
	c->nodes[1].state = KM_CMAP_DRAINING;
	c->nodes[1].incarnation = 5;
	placer_map_diff(a, c, buf, sizeof(buf));
	assert_string_equal(buf, "n1 down; n2 draining; n2 incarnation 5");
	placer_map_diff(c, a, buf, sizeof(buf));
	assert_string_equal(buf, "n1 back; n2 active; n2 incarnation 1");
	/* cut short, still terminated */
	placer_map_diff(a, c, buf, 8);
	assert_int_equal(strlen(buf), 7);
	km_cmap_free(a);
	km_cmap_free(b);
	km_cmap_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_opts),
		cmocka_unit_test(test_members_merge),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_judge),
		cmocka_unit_test(test_map_accept),
		cmocka_unit_test(test_plan),
		cmocka_unit_test(test_map_diff),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
