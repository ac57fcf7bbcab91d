/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The cluster map and the placer. Map: JSON round trips in canonical bytes, every refusal
 * with its message, truncated and mutated documents never crash, checks of hand-made maps,
 * owners both ways, the shard map built from it routes every key to the node and worker the
 * cluster map names, single moves. Placer: the first map spread evenly, joins 1 -> 2 -> 3
 * moving about 1/n and nothing between the old nodes, weighted shares, a new incarnation
 * moves nothing, a down node receives nothing and keeps its shards, draining then removal,
 * bounded moves per decision, convergence over random membership histories, load balancing
 * with hysteresis (no oscillation under noisy rates), skipped members, bad arguments.
 * Every decision is checked: valid maps, epoch + 1, moves applied one by one, equal inputs
 * in another order giving equal outputs. Records under P/ (members, moves): round trips,
 * every refusal with its message, an optional side channel.
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

#include <km_cluster.h>
#include <km_shardmap.h>
#include <km_util.h>

/*
 * JSON documents.
 */

#define HDR "\"version\":1,\"epoch\":7,\"route_sep\":\"/\",\"route_depth\":1"
#define N1                                                                                       \
	"{\"id\":\"n1\",\"ip\":\"198.51.100.11\",\"port\":7070,\"workers\":2,\"incarnation\":3," \
	"\"state\":\"active\"}"
#define N2                                                                                       \
	"{\"id\":\"n2\",\"ip\":\"198.51.100.12\",\"port\":7070,\"workers\":2,\"incarnation\":1," \
	"\"state\":\"draining\",\"down\":true}"
#define NODES  "\"nodes\":[" N1 "," N2 "]"
#define SHARDS "\"shards\":[[4,0,0],[5,1,0],[6,0,1],[7,1,1]]"
#define DOC    "{" HDR "," NODES "," SHARDS "}"
/* One node with fields given. */
#define NODE(id, ip, port, workers, inc, state)                               \
	"{\"id\":" id ",\"ip\":" ip ",\"port\":" port ",\"workers\":" workers \
	",\"incarnation\":" inc ",\"state\":" state "}"
#define DOC_N(nodes)  "{" HDR ",\"nodes\":[" nodes "]," SHARDS "}"
#define DOC_S(shards) "{" HDR "," NODES ",\"shards\":[" shards "]}"

static struct km_cmap *
decode_ok(const char *doc)
{
	char err[KM_CLUSTER_ERR_MAX] = "";
	struct km_cmap *m = NULL;
	int rc = km_cmap_decode(doc, strlen(doc), &m, err, sizeof(err));

	if (rc != 0)
		fail_msg("decode: %d %s", rc, err);
	assert_int_equal(km_cmap_check(m, NULL, 0), 0);
	return m;
}

static char *
encode_ok(const struct km_cmap *m)
{
	char *s = NULL;
	size_t len = 0;

	assert_int_equal(km_cmap_encode(m, &s, &len), 0);
	assert_non_null(s);
	assert_int_equal(len, strlen(s));
	return s;
}

/* decode(encode(m)) == m, and encode() of that gives the same bytes. */
static void
round_trip(const struct km_cmap *m)
{
	char *a = encode_ok(m), *b;
	struct km_cmap *x = decode_ok(a);

	assert_true(km_cmap_equal(m, x));
	b = encode_ok(x);
	assert_string_equal(a, b);
	free(a);
	free(b);
	km_cmap_free(x);
}

static void
test_json_round_trip(void **state)
{
	/* The same map, shards in another order, blanks, a member this version does not know. */
	static const char *other =
		"{ \"shards\": [[7, 1, 1], [5, 1, 0], [4, 0, 0], [6, 0, 1]],\n"
		"  \"nodes\": [" N1
		", {\"down\": true, \"state\": \"draining\", \"incarnation\": 1,"
		" \"workers\": 2, \"port\": 7070, \"ip\": \"198.51.100.12\", \"id\": \"n2\","
		" \"zone\": \"b\"}],\n"
		"  \"route_depth\": 1, \"route_sep\": \"/\", \"epoch\": 7, \"version\": 1,"
		" \"later\": {\"x\": [1]} }";
	struct km_cmap *m, *o;
	char *s;

	(void)state;
	m = decode_ok(DOC);
	assert_int_equal(m->epoch, 7);
	assert_int_equal(m->route_sep, '/');
	assert_int_equal(m->nb_nodes, 2);
	assert_string_equal(m->nodes[1].id, "n2");
	assert_int_equal(m->nodes[0].ip, 0xc633640b);
	assert_int_equal(m->nodes[1].first, 2);
	assert_int_equal(m->nodes[1].down, 1);
	assert_int_equal(m->nodes[1].state, KM_CMAP_DRAINING);
	assert_int_equal(m->nodes[0].incarnation, 3);
	assert_int_equal(m->nb_shards, 4);
	/* The canonical form is the document itself. */
	s = encode_ok(m);
	assert_string_equal(s, DOC);
	free(s);
	round_trip(m);

	o = decode_ok(other);
	assert_true(km_cmap_equal(m, o));
	s = encode_ok(o);
	assert_string_equal(s, DOC);
	free(s);
	km_cmap_free(o);

	/* A map that differs only in the down flag is another map, and says so in JSON. */
	o = km_cmap_dup(m);
	o->nodes[1].down = 0;
	assert_false(km_cmap_equal(m, o));
	s = encode_ok(o);
	assert_null(strstr(s, "down"));
	free(s);
	round_trip(o);
	/* Escaped separator characters and the largest values survive. */
	o->route_sep = '"';
	o->route_depth = 255;
	o->epoch = UINT32_MAX;
	o->nodes[0].incarnation = INT64_MAX;
	o->nodes[0].port = 65534;
	round_trip(o);
	o->route_sep = 1;
	round_trip(o);
	km_cmap_free(o);
	km_cmap_free(m);
}

struct bad_doc {
	const char *doc;
	int rc;
	const char *msg; /* exact, or a prefix when it ends with '*' */
};

static const struct bad_doc bad_docs[] = {
	{"{" HDR "," NODES "}", -EINVAL, "shards: missing"},
	{"{\"epoch\":7,\"route_sep\":\"/\",\"route_depth\":1," NODES "," SHARDS "}", -EINVAL,
		"version: missing"},
	{"{\"version\":2,\"epoch\":7,\"whatever\":[]}", -EPROTO, "version: 2 is not known (1 is)"},
	{"{\"version\":0," NODES "," SHARDS "}", -EPROTO, "version: 0 is not known (1 is)"},
	{"{\"version\":\"1\"," NODES "," SHARDS "}", -EINVAL, "version: not an integer"},
	{"{\"version\":1,\"epoch\":0,\"route_sep\":\"/\",\"route_depth\":1," NODES "," SHARDS "}",
		-EINVAL, "epoch: 0 is out of range (1..4294967295)"},
	{"{\"version\":1,\"epoch\":4294967296,\"route_sep\":\"/\",\"route_depth\":1," NODES
	 "," SHARDS "}",
		-EINVAL, "epoch: 4294967296 is out of range (1..4294967295)"},
	{"{\"version\":1,\"epoch\":\"7\",\"route_sep\":\"/\",\"route_depth\":1," NODES "," SHARDS
	 "}",
		-EINVAL, "epoch: not an integer"},
	{"{\"version\":1,\"epoch\":7.0,\"route_sep\":\"/\",\"route_depth\":1," NODES "," SHARDS "}",
		-EINVAL, "epoch: not an integer"},
	{"{\"version\":1,\"route_sep\":\"/\",\"route_depth\":1," NODES "," SHARDS "}", -EINVAL,
		"epoch: missing"},
	{"{\"version\":1,\"epoch\":7,\"route_sep\":\"//\",\"route_depth\":1," NODES "," SHARDS "}",
		-EINVAL, "route_sep: not one ASCII character"},
	{"{\"version\":1,\"epoch\":7,\"route_sep\":\"\\u0000\",\"route_depth\":1," NODES "," SHARDS
	 "}",
		-EINVAL, "invalid JSON at line *"},
	{"{\"version\":1,\"epoch\":7,\"route_sep\":\"\\u00e9\",\"route_depth\":1," NODES "," SHARDS
	 "}",
		-EINVAL, "route_sep: not one ASCII character"},
	{"{\"version\":1,\"epoch\":7,\"route_sep\":47,\"route_depth\":1," NODES "," SHARDS "}",
		-EINVAL, "route_sep: not a string"},
	{"{\"version\":1,\"epoch\":7,\"route_sep\":\"/\",\"route_depth\":0," NODES "," SHARDS "}",
		-EINVAL, "route_depth: 0 is out of range (1..255)"},
	{"{" HDR "," SHARDS "}", -EINVAL, "nodes: missing"},
	{"{" HDR ",\"nodes\":{}," SHARDS "}", -EINVAL, "nodes: not an array"},
	{"{" HDR ",\"nodes\":[]," SHARDS "}", -EINVAL, "nodes: 0 nodes, not 1..32"},
	{DOC_N("1"), -EINVAL, "nodes[0]: not an object"},
	{DOC_N(N1 ",{\"ip\":\"198.51.100.12\",\"port\":7070,\"workers\":2,\"incarnation\":1,"
		  "\"state\":\"active\"}"),
		-EINVAL, "nodes[1].id: missing"},
	{DOC_N(NODE("\"n 1\"", "\"198.51.100.11\"", "7070", "2", "1", "\"active\"") "," N2),
		-EINVAL, "nodes[0].id: not 1..63 characters of [A-Za-z0-9._-]"},
	{DOC_N(NODE("\"\"", "\"198.51.100.11\"", "7070", "2", "1", "\"active\"") "," N2), -EINVAL,
		"nodes[0].id: not 1..63 characters of [A-Za-z0-9._-]"},
	{DOC_N(NODE("\"n\\u00001\"", "\"198.51.100.11\"", "7070", "2", "1", "\"active\"") "," N2),
		-EINVAL, "invalid JSON at line *"},
	{DOC_N(NODE("\"0123456789012345678901234567890123456789012345678901234567890123\"",
		 "\"198.51.100.11\"", "7070", "2", "1", "\"active\"") "," N2),
		-EINVAL, "nodes[0].id: not 1..63 characters of [A-Za-z0-9._-]"},
	{DOC_N(NODE("7", "\"198.51.100.11\"", "7070", "2", "1", "\"active\"") "," N2), -EINVAL,
		"nodes[0].id: not a string"},
	{DOC_N(N1 "," NODE("\"n1\"", "\"198.51.100.12\"", "7070", "2", "1", "\"active\"")), -EINVAL,
		"nodes[1].id: \"n1\" is also nodes[0]'s"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100\"", "7070", "2", "1", "\"active\"")), -EINVAL,
		"nodes[1].ip: not an IPv4 address"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.256\"", "7070", "2", "1", "\"active\"")),
		-EINVAL, "nodes[1].ip: not an IPv4 address"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"2001:db8::1\"", "7070", "2", "1", "\"active\"")), -EINVAL,
		"nodes[1].ip: not an IPv4 address"},
	{DOC_N(N1 "," NODE("\"n2\"", "3325256716", "7070", "2", "1", "\"active\"")), -EINVAL,
		"nodes[1].ip: not a string"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"0.0.0.0\"", "7070", "2", "1", "\"active\"")), -EINVAL,
		"nodes[1].ip: 0.0.0.0 is not a node address"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.12\"", "0", "2", "1", "\"active\"")), -EINVAL,
		"nodes[1].port: 0 is out of range (1..65535)"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.12\"", "65535", "2", "1", "\"active\"")),
		-EINVAL, "nodes[1].port: 65535 with 2 workers is out of range (1..65534)"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.12\"", "7070", "0", "1", "\"active\"")), -EINVAL,
		"nodes[1].workers: 0 is out of range (1..128)"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.12\"", "7070", "129", "1", "\"active\"")),
		-EINVAL, "nodes[1].workers: 129 is out of range (1..128)"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.12\"", "7070", "2.5", "1", "\"active\"")),
		-EINVAL, "nodes[1].workers: not an integer"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.12\"", "7070", "127", "1", "\"active\"")),
		-EINVAL, "nodes: 129 workers in all, over 128"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.12\"", "7070", "2", "0", "\"active\"")), -EINVAL,
		"nodes[1].incarnation: 0 is out of range (1..9223372036854775807)"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.12\"", "7070", "2", "-3", "\"active\"")),
		-EINVAL, "nodes[1].incarnation: -3 is out of range (1..9223372036854775807)"},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.12\"", "7070", "2", "1", "\"gone\"")), -EINVAL,
		"nodes[1].state: not \"active\" or \"draining\""},
	{DOC_N(N1 "," NODE("\"n2\"", "\"198.51.100.12\"", "7070", "2", "1", "null")), -EINVAL,
		"nodes[1].state: not a string"},
	{DOC_N(N1 ",{\"id\":\"n2\",\"ip\":\"198.51.100.12\",\"port\":7070,\"workers\":2,"
		  "\"state\":\"active\"}"),
		-EINVAL, "nodes[1].incarnation: missing"},
	{DOC_N(N1 ",{\"id\":\"n2\",\"ip\":\"198.51.100.12\",\"port\":7070,\"workers\":2,"
		  "\"incarnation\":1,\"state\":\"active\",\"down\":1}"),
		-EINVAL, "nodes[1].down: not a boolean"},
	{"{" HDR "," NODES ",\"shards\":{}}", -EINVAL, "shards: not an array"},
	{DOC_S(""), -EINVAL, "shards: 0 shards, not 1..65536"},
	{DOC_S("[1,0]"), -EINVAL, "shards[0]: not an array [id, node, worker(, replicas)]"},
	{DOC_S("[2,0,0],{\"id\":3}"), -EINVAL,
		"shards[1]: not an array [id, node, worker(, replicas)]"},
	{DOC_S("[2,0,0],[3,\"1\",0]"), -EINVAL, "shards[1][1]: not an integer"},
	{DOC_S("[0,0,0]"), -EINVAL, "shards[0]: 0 is not a shard id"},
	{DOC_S("[33554432,0,0]"), -EINVAL, "shards[0]: 33554432 is not a shard id"},
	{DOC_S("[2,0,0],[3,2,0]"), -EINVAL, "shards[1]: node 2 is out of range (2 nodes)"},
	{DOC_S("[2,0,0],[3,-1,0]"), -EINVAL, "shards[1]: node -1 is out of range (2 nodes)"},
	{DOC_S("[2,0,0],[3,1,2]"), -EINVAL, "shards[1]: worker 2 is out of range (node n2 has 2)"},
	{DOC_S("[2,0,0],[3,0,70000]"), -EINVAL,
		"shards[1]: worker 70000 is out of range (node n1 has 2)"},
	{DOC_S("[2,0,0],[5,0,1],[3,1,0]"), -EINVAL, "shards: id 5 overlaps id 2"},
	{DOC_S("[1,0,0],[3,0,1]"), -EINVAL, "shards: id 3 overlaps id 1"},
	{DOC_S("[2,0,0],[2,0,1],[3,1,0]"), -EINVAL, "shards: id 2 is listed twice"},
	{DOC_S("[4,0,0],[5,0,1],[7,1,0]"), -EINVAL,
		"shards: hole before id 7 (no shard covers it)"},
	{DOC_S("[4,0,0],[5,0,1],[6,1,0]"), -EINVAL, "shards: hole after id 6 (no shard covers it)"},
	{DOC_S("[5,0,1],[3,1,0]"), -EINVAL, "shards: hole before id 5 (no shard covers it)"},
	{"[" DOC "]", -EINVAL, "not a JSON object"},
	{"", -EINVAL, "invalid JSON at line *"},
	{"{" HDR "," NODES "," SHARDS, -EINVAL, "invalid JSON at line *"},
	{DOC "x", -EINVAL, "invalid JSON at line *"},
	{"{\"version\":1," HDR "," NODES "," SHARDS "}", -EINVAL, "invalid JSON at line *"},
};

static void
test_json_refusals(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_docs) / sizeof(bad_docs[0]); i++) {
		const struct bad_doc *b = &bad_docs[i];
		char err[KM_CLUSTER_ERR_MAX] = "";
		struct km_cmap *m = NULL;
		size_t n = strlen(b->msg);
		int rc = km_cmap_decode(b->doc, strlen(b->doc), &m, err, sizeof(err));

		if (rc != b->rc)
			fail_msg("doc %zu: rc %d, not %d (%s)", i, rc, b->rc, err);
		assert_null(m);
		if (b->msg[n - 1] == '*' ? strncmp(err, b->msg, n - 1) != 0
					 : strcmp(err, b->msg) != 0)
			fail_msg("doc %zu: \"%s\", not \"%s\"", i, err, b->msg);
	}
	/* No buffer for the message: still refused. */
	{
		struct km_cmap *m = NULL;

		assert_int_equal(km_cmap_decode("{}", 2, &m, NULL, 0), -EINVAL);
		assert_int_equal(km_cmap_decode(NULL, 0, &m, NULL, 0), -EINVAL);
		assert_int_equal(km_cmap_decode(DOC, strlen(DOC), NULL, NULL, 0), -EINVAL);
	}
}

/* A map of 48 shards (the lower half at depth 6, the upper at depth 5) over three nodes of
 * 2, 3 and 1 workers, placed at random. */
static struct km_cmap *
sample_map(void)
{
	static const char *ids[] = {"a", "b.2", "c_3-x"};
	static const uint16_t workers[] = {2, 3, 1};
	struct km_cmap *m = km_cmap_alloc(48);
	uint64_t seed = 7;
	uint32_t i;

	assert_non_null(m);
	m->epoch = 12;
	m->route_sep = '/';
	m->route_depth = 2;
	m->nb_nodes = 3;
	for (i = 0; i < 3; i++) {
		strcpy(m->nodes[i].id, ids[i]);
		m->nodes[i].ip = 0xc6336401 + i;
		m->nodes[i].port = (uint16_t)(7070 + 100 * i);
		m->nodes[i].workers = workers[i];
		m->nodes[i].incarnation = 1 + i;
	}
	m->nodes[2].state = KM_CMAP_DRAINING;
	/* Listed upper half first: km_cmap_finish() sorts. */
	for (i = 0; i < 48; i++) {
		m->shards[i].id = i < 16 ? 48 + i : 64 + (i - 16);
		m->shards[i].node = (uint16_t)(km_util_splitmix64(&seed) % 3);
		m->shards[i].worker =
			(uint16_t)(km_util_splitmix64(&seed) % m->nodes[m->shards[i].node].workers);
	}
	assert_int_equal(km_cmap_finish(m, NULL, 0), 0);
	return m;
}

/* Every prefix of a valid document, and documents with one byte changed: refused or
 * valid, never a crash (the sanitizers run this too). */
static void
test_json_fuzz(void **state)
{
	static const char subst[] = {
		'0', '9', '"', '[', ']', '{', '}', ',', ':', '-', ' ', 'x', '\\', '\0', (char)0xff};
	struct km_cmap *m = sample_map(), *x;
	char *doc = encode_ok(m), *mut, err[KM_CLUSTER_ERR_MAX];
	size_t len = strlen(doc), i, k;
	uint32_t ok = 0;

	(void)state;
	round_trip(m);
	for (i = 0; i < len; i++) {
		x = NULL;
		err[0] = '\0';
		assert_int_equal(km_cmap_decode(doc, i, &x, err, sizeof(err)), -EINVAL);
		assert_null(x);
		assert_true(err[0] != '\0');
	}
	mut = malloc(len);
	assert_non_null(mut);
	for (i = 0; i < len; i++) {
		for (k = 0; k < sizeof(subst); k++) {
			int rc;

			memcpy(mut, doc, len);
			mut[i] = subst[k];
			x = NULL;
			rc = km_cmap_decode(mut, len, &x, err, sizeof(err));
			if (rc == 0) {
				char *again = encode_ok(x);

				ok++;
				assert_int_equal(km_cmap_check(x, NULL, 0), 0);
				free(again);
				km_cmap_free(x);
			} else {
				assert_true(rc == -EINVAL || rc == -EPROTO);
				assert_null(x);
			}
		}
	}
	assert_true(ok > 0); /* some digits change into other valid values */
	free(mut);
	free(doc);
	km_cmap_free(m);
}

/* Hand-made maps: finish sorts and derives first; check refuses what finish would fix. */
static void
test_check(void **state)
{
	struct km_cmap *m = sample_map(), *c;
	char err[KM_CLUSTER_ERR_MAX];
	uint16_t node, worker, owner;
	uint32_t o;

	(void)state;
	assert_int_equal(m->nodes[0].first, 0);
	assert_int_equal(m->nodes[1].first, 2);
	assert_int_equal(m->nodes[2].first, 5);
	assert_int_equal(km_cmap_total_workers(m), 6);
	for (o = 1; o < m->nb_shards; o++)
		assert_true(m->shards[o - 1].id < m->shards[o].id);

	c = km_cmap_dup(m);
	assert_true(km_cmap_equal(m, c));
	c->nodes[1].first = 3;
	assert_int_equal(km_cmap_check(c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "nodes[1].first: 3, not 2");
	km_cmap_free(c);

	c = km_cmap_dup(m);
	c->shards[3] = m->shards[4];
	c->shards[4] = m->shards[3];
	assert_int_equal(km_cmap_check(c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not above the previous id"));
	assert_int_equal(km_cmap_finish(c, err, sizeof(err)), 0);
	assert_true(km_cmap_equal(m, c));
	c->nodes[2].state = 7;
	assert_int_equal(km_cmap_check(c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "nodes[2].state: 7 is not a state");
	c->nodes[2].state = KM_CMAP_ACTIVE;
	c->nodes[2].down = 2;
	assert_int_equal(km_cmap_check(c, err, sizeof(err)), -EINVAL);
	c->nodes[2].down = 0;
	c->epoch = 0;
	assert_int_equal(km_cmap_check(c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "epoch: 0 is out of range (1..4294967295)");
	c->epoch = 1;
	memset(c->nodes[0].id, 'a', sizeof(c->nodes[0].id)); /* not terminated */
	assert_int_equal(km_cmap_check(c, err, sizeof(err)), -EINVAL);
	assert_int_equal(km_cmap_encode(c, &(char *){NULL}, NULL), -EINVAL);
	km_cmap_free(c);
	assert_int_equal(km_cmap_check(NULL, err, sizeof(err)), -EINVAL);
	assert_null(km_cmap_alloc(0));
	assert_null(km_cmap_alloc(KM_CLUSTER_SHARDS_MAX + 1));
	assert_null(km_cmap_dup(NULL));
	assert_false(km_cmap_equal(m, NULL));

	/* Owners both ways, over every global owner. */
	for (o = 0; o < km_cmap_total_workers(m); o++) {
		assert_int_equal(km_cmap_owner(m, (uint16_t)o, &node, &worker), 0);
		assert_true(worker < m->nodes[node].workers);
		assert_int_equal(km_cmap_global_owner(m, node, worker, &owner), 0);
		assert_int_equal(owner, o);
	}
	assert_int_equal(km_cmap_owner(m, 6, &node, &worker), -ENOENT);
	assert_int_equal(km_cmap_global_owner(m, 0, 2, &owner), -ENOENT);
	assert_int_equal(km_cmap_global_owner(m, 3, 0, &owner), -ENOENT);
	assert_int_equal(km_cmap_node_find(m, "b.2"), 1);
	assert_int_equal(km_cmap_node_find(m, "b"), -ENOENT);
	assert_int_equal(km_cmap_node_find(m, NULL), -ENOENT);
	assert_non_null(km_cmap_shard_find(m, 64));
	assert_non_null(km_cmap_shard_find(m, 63));
	assert_null(km_cmap_shard_find(m, 96));
	assert_true(km_cluster_id_valid("node-1.rack_2"));
	assert_false(km_cluster_id_valid(""));
	assert_false(km_cluster_id_valid("n/1"));
	km_cmap_free(m);
}

/* The shard map of a cluster map sends every key to the node and worker the cluster map
 * names for the key's hash. */
static void
test_shardmap(void **state)
{
	struct km_cmap *m = sample_map();
	struct km_shardmap *sm = NULL;
	struct km_shardmap_route r;
	uint64_t seed = 99;
	char key[64];
	int i;

	(void)state;
	assert_int_equal(km_cmap_shardmap(m, -1, &sm), 0);
	assert_int_equal(km_shardmap_epoch(sm), m->epoch);
	assert_int_equal(km_shardmap_nb_workers(sm), 6);
	assert_int_equal(km_shardmap_nb_shards(sm), m->nb_shards);
	assert_int_equal(km_shardmap_route_sep(sm), '/');
	assert_int_equal(km_shardmap_route_depth(sm), 2);
	assert_int_equal(km_shardmap_nb_overrides(sm), 0);
	for (i = 0; i < 20000; i++) {
		const struct km_cmap_shard *s = NULL;
		uint16_t node, worker;
		unsigned int d;
		int len = snprintf(key, sizeof(key), "user%u/%u/x",
			(unsigned int)(km_util_splitmix64(&seed) % 5000), (unsigned int)(i % 7));

		assert_int_equal(km_shardmap_route(sm, (const uint8_t *)key, (size_t)len, &r), 0);
		/* The cluster map's own answer: the shard whose prefix the hash starts with. */
		for (d = 0; d <= KM_SHARD_DEPTH_MAX && s == NULL; d++)
			s = km_cmap_shard_find(
				m, ((uint64_t)1 << d) | (d ? r.hash >> (64 - d) : 0));
		assert_non_null(s);
		assert_int_equal(km_shard_id(r.shard), s->id);
		assert_int_equal(km_cmap_owner(m, r.owner, &node, &worker), 0);
		assert_int_equal(node, s->node);
		assert_int_equal(worker, s->worker);
	}
	km_shardmap_free(sm);
	assert_int_equal(km_cmap_shardmap(NULL, -1, &sm), -EINVAL);
	assert_int_equal(km_cmap_shardmap(m, m->nb_nodes, &sm), -EINVAL);
	/* Each node's view: its shards on its own workers, every other one remote. */
	for (i = 0; i < m->nb_nodes; i++) {
		assert_int_equal(km_cmap_shardmap(m, i, &sm), 0);
		assert_int_equal(km_shardmap_self(sm), i);
		assert_int_equal(km_shardmap_nb_workers(sm), m->nodes[i].workers);
		for (uint32_t k = 0; k < m->nb_shards; k++) {
			const struct km_shard *sh = km_shardmap_find(sm, m->shards[k].id);

			assert_int_equal(km_shard_owner(sh),
				m->shards[k].node == i ? m->shards[k].worker : KM_OWNER_REMOTE);
		}
		km_shardmap_free(sm);
	}
	km_cmap_free(m);
}

static void
test_move_apply(void **state)
{
	struct km_cmap *m = sample_map(), *n = NULL;
	struct km_cluster_move mv = {.id = m->shards[0].id,
		.from_node = m->shards[0].node,
		.from_worker = m->shards[0].worker};

	(void)state;
	mv.to_node = (uint16_t)((mv.from_node + 1) % 3);
	mv.to_worker = 0;
	assert_int_equal(km_cmap_move_apply(m, &mv, &n), 0);
	assert_int_equal(n->epoch, m->epoch + 1);
	assert_int_equal(n->shards[0].node, mv.to_node);
	assert_int_equal(km_cmap_check(n, NULL, 0), 0);
	/* Planned on m, applied again on n: stale. */
	assert_int_equal(km_cmap_move_apply(n, &mv, &(struct km_cmap *){NULL}), -ESTALE);
	km_cmap_free(n);
	mv.id = 96;
	assert_int_equal(km_cmap_move_apply(m, &mv, &n), -ENOENT);
	mv.id = m->shards[0].id;
	mv.to_node = 3;
	assert_int_equal(km_cmap_move_apply(m, &mv, &n), -EINVAL);
	mv.to_node = 2;
	mv.to_worker = 1; /* node c_3-x has one worker */
	assert_int_equal(km_cmap_move_apply(m, &mv, &n), -EINVAL);
	mv.to_node = mv.from_node;
	mv.to_worker = mv.from_worker;
	assert_int_equal(km_cmap_move_apply(m, &mv, &n), -EINVAL);
	mv.to_node = (uint16_t)((mv.from_node + 1) % 3);
	mv.to_worker = 0;
	m->epoch = UINT32_MAX;
	assert_int_equal(km_cmap_move_apply(m, &mv, &n), -EOVERFLOW);
	assert_int_equal(km_cmap_move_apply(NULL, &mv, &n), -EINVAL);
	km_cmap_free(m);
}

/*
 * The placer.
 */

static struct km_cluster_member
member(const char *id, uint32_t host, uint16_t workers, uint64_t inc, uint8_t st)
{
	struct km_cluster_member x;

	memset(&x, 0, sizeof(x));
	strcpy(x.id, id);
	x.ip = 0xc6336400 | host;
	x.port = 7070;
	x.workers = workers;
	x.incarnation = inc;
	x.state = st;
	return x;
}

static struct km_cluster_params
params(uint32_t max_moves, uint32_t balance_pct)
{
	return (struct km_cluster_params){
		.initial_shards = 64,
		.route_sep = '/',
		.route_depth = 1,
		.max_moves = max_moves,
		.balance_pct = balance_pct,
		.min_rate = 0,
	};
}

static int
decision_equal(const struct km_cluster_decision *a, const struct km_cluster_decision *b)
{
	if ((a->map == NULL) != (b->map == NULL) || (a->map && !km_cmap_equal(a->map, b->map)))
		return 0;
	if (a->nb_moves != b->nb_moves || a->nb_skipped != b->nb_skipped)
		return 0;
	return a->nb_moves == 0 ||
	       memcmp(a->moves, b->moves, a->nb_moves * sizeof(a->moves[0])) == 0;
}

/* Check a decision on cur and return the map after its table and all its moves, applied
 * one by one (the caller frees it). */
static struct km_cmap *
apply_all(const struct km_cmap *cur, const struct km_cluster_decision *d)
{
	const struct km_cmap *base = d->map != NULL ? d->map : cur;
	struct km_cmap *m, *n;
	uint32_t i, k;

	if (d->map != NULL) {
		assert_int_equal(km_cmap_check(d->map, NULL, 0), 0);
		assert_int_equal(d->map->epoch, cur != NULL ? cur->epoch + 1 : 1);
	}
	if (base == NULL) {
		assert_int_equal(d->nb_moves, 0);
		return NULL;
	}
	m = km_cmap_dup(base);
	for (i = 0; i < d->nb_moves; i++) {
		const struct km_cluster_move *mv = &d->moves[i];

		/* Only to an active live node, only from a live one, a shard at most once. */
		assert_true(mv->to_node < base->nb_nodes);
		assert_int_equal(base->nodes[mv->to_node].state, KM_CMAP_ACTIVE);
		assert_int_equal(base->nodes[mv->to_node].down, 0);
		assert_int_equal(base->nodes[mv->from_node].down, 0);
		assert_true(mv->reason >= KM_CLUSTER_DRAIN && mv->reason <= KM_CLUSTER_LOAD);
		for (k = 0; k < i; k++)
			assert_true(d->moves[k].id != mv->id);
		assert_int_equal(km_cmap_move_apply(m, mv, &n), 0);
		assert_int_equal(n->epoch, m->epoch + 1);
		assert_int_equal(km_cmap_check(n, NULL, 0), 0);
		km_cmap_free(m);
		m = n;
	}
	return m;
}

/* One decision, checked; the same inputs in reverse order must give the same decision.
 * Returns the map after it (a copy of cur when nothing changes); d keeps the decision. */
static struct km_cmap *
step(const struct km_cluster_params *p, const struct km_cmap *cur,
	const struct km_cluster_member *mem, uint32_t nb_mem, const struct km_cluster_rate *rates,
	uint32_t nb_rates, struct km_cluster_decision *d)
{
	struct km_cluster_member rm[KM_CLUSTER_NODES_MAX * 2];
	struct km_cluster_rate *rr = NULL;
	struct km_cluster_decision d2 = {0};
	char err[KM_CLUSTER_ERR_MAX] = "";
	uint32_t i;
	int rc;

	rc = km_cluster_decide(p, cur, mem, nb_mem, rates, nb_rates, d, err, sizeof(err));
	if (rc != 0)
		fail_msg("decide: %d %s", rc, err);
	assert_true(d->nb_moves <= p->max_moves);
	assert_true(nb_mem <= KM_CLUSTER_NODES_MAX * 2);
	for (i = 0; i < nb_mem; i++)
		rm[i] = mem[nb_mem - 1 - i];
	if (nb_rates > 0) {
		rr = malloc(nb_rates * sizeof(*rr));
		for (i = 0; i < nb_rates; i++)
			rr[i] = rates[nb_rates - 1 - i];
	}
	assert_int_equal(km_cluster_decide(p, cur, rm, nb_mem, rr, nb_rates, &d2, NULL, 0), 0);
	assert_true(decision_equal(d, &d2));
	km_cluster_decision_free(&d2);
	free(rr);
	if (d->map == NULL && d->nb_moves == 0)
		return cur != NULL ? km_cmap_dup(cur) : NULL;
	return apply_all(cur, d);
}

/* Decide and apply until nothing changes (at most rounds decisions): the stable map. */
static struct km_cmap *
converge(const struct km_cluster_params *p, struct km_cmap *cur,
	const struct km_cluster_member *mem, uint32_t nb_mem, const struct km_cluster_rate *rates,
	uint32_t nb_rates, unsigned int rounds, uint32_t *moves)
{
	struct km_cluster_decision d = {0};
	unsigned int r;

	for (r = 0; r < rounds; r++) {
		struct km_cmap *n = step(p, cur, mem, nb_mem, rates, nb_rates, &d);
		int still = d.map == NULL && d.nb_moves == 0;

		if (moves != NULL)
			*moves += d.nb_moves;
		km_cluster_decision_free(&d);
		km_cmap_free(cur);
		cur = n;
		if (still)
			return cur;
	}
	fail_msg("no stable map after %u decisions", rounds);
	return NULL;
}

static uint32_t
node_shards(const struct km_cmap *m, uint16_t node)
{
	uint32_t i, c = 0;

	for (i = 0; i < m->nb_shards; i++)
		c += m->shards[i].node == node;
	return c;
}

/* Shards of each global owner: max - min over the workers of the given nodes. */
static uint32_t
worker_spread(const struct km_cmap *m, uint32_t node_mask)
{
	uint32_t cnt[KM_WORKERS_MAX] = {0}, lo = UINT32_MAX, hi = 0, i;
	uint16_t n, k;

	for (i = 0; i < m->nb_shards; i++)
		cnt[m->nodes[m->shards[i].node].first + m->shards[i].worker]++;
	for (n = 0; n < m->nb_nodes; n++) {
		if (!(node_mask & (1u << n)))
			continue;
		for (k = 0; k < m->nodes[n].workers; k++) {
			uint32_t c = cnt[m->nodes[n].first + k];

			lo = c < lo ? c : lo;
			hi = c > hi ? c : hi;
		}
	}
	return hi - lo;
}

/* Rule 1: members in any order become nodes sorted by id, 64 shards within one per worker,
 * and across nodes by workers. */
static void
test_first_map(void **state)
{
	struct km_cluster_member mem[4] = {
		member("n3", 13, 1, 1, KM_CMAP_ACTIVE), member("n1", 11, 2, 5, KM_CMAP_ACTIVE),
		member("n2", 12, 2, 1, KM_CMAP_ACTIVE),
		member("n0", 10, 2, 1, KM_CMAP_DRAINING), /* asks to leave: not in the map */
	};
	struct km_cluster_params p = params(8, 0);
	struct km_cluster_decision d = {0};
	struct km_cmap *m;
	uint32_t i;

	(void)state;
	m = step(&p, NULL, mem, 4, NULL, 0, &d);
	assert_non_null(d.map);
	assert_int_equal(d.nb_moves, 0);
	assert_int_equal(m->epoch, 1);
	assert_int_equal(m->nb_nodes, 3);
	assert_string_equal(m->nodes[0].id, "n1");
	assert_string_equal(m->nodes[2].id, "n3");
	assert_int_equal(m->nodes[0].incarnation, 5);
	assert_int_equal(m->nb_shards, 64);
	for (i = 0; i < 64; i++)
		assert_int_equal(m->shards[i].id, 64 + i);
	assert_true(worker_spread(m, 7) <= 1);
	/* 64 over 5 workers: 13 or 12 each; n3 (one worker) holds 12 or 13. */
	assert_int_equal(node_shards(m, 0) + node_shards(m, 1) + node_shards(m, 2), 64);
	assert_true(node_shards(m, 2) >= 12 && node_shards(m, 2) <= 13);
	assert_true(node_shards(m, 0) >= 25 && node_shards(m, 0) <= 26);
	km_cluster_decision_free(&d);
	/* Stable from the start. */
	m = converge(&p, m, mem, 4, NULL, 0, 1, NULL);
	km_cmap_free(m);

	/* Fewer shards than workers: one each on the first workers of every node in turn. */
	p.initial_shards = 2;
	m = step(&p, NULL, mem, 4, NULL, 0, &d);
	assert_int_equal(m->shards[0].node, 0);
	assert_int_equal(m->shards[1].node, 1);
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	p.initial_shards = 1;
	m = step(&p, NULL, mem, 4, NULL, 0, &d);
	assert_int_equal(m->nb_shards, 1);
	assert_int_equal(m->shards[0].id, 1);
	km_cluster_decision_free(&d);
	km_cmap_free(m);

	/* No member that asks to be active: no map. */
	m = step(&p, NULL, &mem[3], 1, NULL, 0, &d);
	assert_null(m);
	assert_null(d.map);
	m = step(&p, NULL, NULL, 0, NULL, 0, &d);
	assert_null(m);
}

/* Joins 1 -> 2 -> 3: each newcomer gets about 1/n, all moves go to it. */
static void
test_join(void **state)
{
	struct km_cluster_member mem[3] = {
		member("n1", 11, 2, 1, KM_CMAP_ACTIVE),
		member("n2", 12, 2, 1, KM_CMAP_ACTIVE),
		member("n3", 13, 2, 1, KM_CMAP_ACTIVE),
	};
	struct km_cluster_params p = params(64, 0);
	struct km_cluster_decision d = {0};
	struct km_cmap *m, *n;
	uint32_t i;

	(void)state;
	m = step(&p, NULL, mem, 1, NULL, 0, &d);
	km_cluster_decision_free(&d);
	assert_int_equal(node_shards(m, 0), 64);

	n = step(&p, m, mem, 2, NULL, 0, &d);
	assert_non_null(d.map);
	assert_int_equal(d.map->nb_nodes, 2);
	assert_string_equal(d.map->nodes[1].id, "n2");
	assert_int_equal(d.map->nodes[1].first, 2);
	/* The table changes, the shards do not: they move by the moves. */
	for (i = 0; i < 64; i++)
		assert_int_equal(d.map->shards[i].node, 0);
	assert_int_equal(d.nb_moves, 32);
	for (i = 0; i < d.nb_moves; i++) {
		assert_int_equal(d.moves[i].from_node, 0);
		assert_int_equal(d.moves[i].to_node, 1);
		assert_int_equal(d.moves[i].reason, KM_CLUSTER_SHARE);
	}
	assert_int_equal(n->epoch, m->epoch + 1 + 32);
	assert_int_equal(node_shards(n, 1), 32);
	assert_true(worker_spread(n, 3) <= 1);
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	m = n;

	n = step(&p, m, mem, 3, NULL, 0, &d);
	/* About a third moves, all of it to n3: nothing between n1 and n2. */
	assert_true(d.nb_moves >= 20 && d.nb_moves <= 22);
	for (i = 0; i < d.nb_moves; i++)
		assert_int_equal(d.moves[i].to_node, 2);
	for (i = 0; i < 3; i++)
		assert_true(node_shards(n, (uint16_t)i) >= 21 && node_shards(n, (uint16_t)i) <= 22);
	assert_true(worker_spread(n, 7) <= 1);
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	/* And then it stays. */
	n = converge(&p, n, mem, 3, NULL, 0, 1, NULL);
	km_cmap_free(n);
}

/* A node of 4 workers joining one of 2 receives two thirds; one of 1 joining two of 2,
 * a fifth. */
static void
test_join_weighted(void **state)
{
	struct km_cluster_member mem[3] = {
		member("a", 11, 2, 1, KM_CMAP_ACTIVE),
		member("b", 12, 4, 1, KM_CMAP_ACTIVE),
		member("c", 13, 1, 1, KM_CMAP_ACTIVE),
	};
	struct km_cluster_params p = params(100, 0);
	struct km_cluster_decision d = {0};
	struct km_cmap *m;
	uint32_t moves = 0;

	(void)state;
	m = step(&p, NULL, mem, 1, NULL, 0, &d);
	km_cluster_decision_free(&d);
	m = converge(&p, m, mem, 2, NULL, 0, 3, &moves);
	assert_int_equal(moves, 43); /* round(64 x 4 / 6) */
	assert_int_equal(node_shards(m, 1), 43);
	m = converge(&p, m, mem, 3, NULL, 0, 3, &moves);
	assert_int_equal(node_shards(m, 2), 9); /* round(64 / 7) */
	assert_int_equal(moves, 43 + 9);
	assert_true(worker_spread(m, 7) <= 1);
	km_cmap_free(m);
}

/* Three nodes of two workers, 64 shards, as a sequence of joins leaves them. */
static struct km_cmap *
three_nodes(const struct km_cluster_member *mem)
{
	struct km_cluster_params p = params(64, 0);
	struct km_cluster_decision d = {0};
	struct km_cmap *m = step(&p, NULL, mem, 3, NULL, 0, &d);

	km_cluster_decision_free(&d);
	return m;
}

/* A restarted node (new incarnation, even a new address) keeps its shards: nothing moves. */
static void
test_incarnation(void **state)
{
	struct km_cluster_member mem[3] = {
		member("n1", 11, 2, 1, KM_CMAP_ACTIVE),
		member("n2", 12, 2, 1, KM_CMAP_ACTIVE),
		member("n3", 13, 2, 1, KM_CMAP_ACTIVE),
	};
	struct km_cluster_params p = params(64, 0);
	struct km_cluster_decision d = {0};
	struct km_cmap *m = three_nodes(mem), *n;
	uint32_t i;

	(void)state;
	mem[1].incarnation = 2;
	mem[1].ip = 0xc6336420;
	mem[1].port = 9000;
	n = step(&p, m, mem, 3, NULL, 0, &d);
	assert_non_null(d.map);
	assert_int_equal(d.nb_moves, 0);
	assert_int_equal(n->epoch, m->epoch + 1);
	assert_int_equal(n->nodes[1].incarnation, 2);
	assert_int_equal(n->nodes[1].ip, 0xc6336420);
	assert_int_equal(n->nodes[1].port, 9000);
	for (i = 0; i < m->nb_shards; i++)
		assert_memory_equal(&n->shards[i], &m->shards[i], sizeof(m->shards[i]));
	km_cluster_decision_free(&d);
	km_cmap_free(m);

	/* Back with fewer workers: the shards of the workers gone stay on the node. */
	mem[1].incarnation = 3;
	mem[1].workers = 1;
	m = step(&p, n, mem, 3, NULL, 0, &d);
	assert_non_null(d.map);
	assert_int_equal(d.map->nodes[1].workers, 1);
	assert_int_equal(d.map->nodes[2].first, 3);
	assert_int_equal(node_shards(d.map, 1), node_shards(n, 1));
	km_cluster_decision_free(&d);
	km_cmap_free(n);
	/* ... then the fair share by workers takes about half of them away. */
	m = converge(&p, m, mem, 3, NULL, 0, 3, NULL);
	assert_int_equal(node_shards(m, 1), 13); /* round(64 / 5) */
	km_cmap_free(m);
}

/* A node without a live member is marked down, keeps its shards and receives none. */
static void
test_down_node(void **state)
{
	struct km_cluster_member mem[4] = {
		member("n1", 11, 2, 1, KM_CMAP_ACTIVE),
		member("n2", 12, 2, 1, KM_CMAP_ACTIVE),
		member("n3", 13, 2, 1, KM_CMAP_ACTIVE),
		member("n4", 14, 2, 1, KM_CMAP_ACTIVE),
	};
	struct km_cluster_member live[3] = {mem[0], mem[1], mem[3]}; /* n3 gone */
	struct km_cluster_params p = params(64, 0);
	struct km_cluster_decision d = {0};
	struct km_cmap *m = three_nodes(mem), *n;
	uint32_t i, n3 = node_shards(m, 2);

	(void)state;
	n = step(&p, m, mem, 2, NULL, 0, &d);
	assert_non_null(d.map);
	assert_int_equal(d.nb_moves, 0);
	assert_int_equal(n->nodes[2].down, 1);
	assert_int_equal(node_shards(n, 2), n3);
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	m = n;

	/* n4 joins while n3 is down: moves only to n4, none of n3's shards. */
	n = converge(&p, km_cmap_dup(m), live, 3, NULL, 0, 3, NULL);
	assert_int_equal(n->nb_nodes, 4);
	assert_int_equal(n->nodes[2].down, 1);
	assert_int_equal(node_shards(n, 2), n3);
	for (i = 0; i < m->nb_shards; i++)
		if (m->shards[i].node == 2)
			assert_int_equal(n->shards[i].node, 2);
	/* Fair share among the three live nodes: the 43 shards not on n3. */
	for (i = 0; i < 4; i++)
		if (i != 2)
			assert_true(node_shards(n, (uint16_t)i) >= 14 &&
				    node_shards(n, (uint16_t)i) <= 15);
	km_cmap_free(m);
	m = n;

	/* n1 drains while n3 is down: its shards go to n2 and n4, never to n3. */
	live[0].state = KM_CMAP_DRAINING;
	n = step(&p, m, live, 3, NULL, 0, &d);
	assert_int_equal(d.nb_moves, node_shards(m, 0));
	for (i = 0; i < d.nb_moves; i++) {
		assert_int_equal(d.moves[i].reason, KM_CLUSTER_DRAIN);
		assert_true(d.moves[i].to_node == 1 || d.moves[i].to_node == 3);
	}
	assert_int_equal(node_shards(n, 2), n3);
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	n = converge(&p, n, live, 3, NULL, 0, 3, NULL);
	assert_int_equal(n->nb_nodes, 3); /* n1 removed */
	assert_int_equal(km_cmap_node_find(n, "n1"), -ENOENT);

	/* n3 comes back: it keeps its shards, the share evens out over n2, n3 and n4. */
	n = converge(&p, n, &mem[1], 3, NULL, 0, 3, NULL);
	assert_int_equal(n->nodes[1].down, 0);
	for (i = 0; i < 3; i++)
		assert_true(node_shards(n, (uint16_t)i) >= 21 && node_shards(n, (uint16_t)i) <= 22);
	km_cmap_free(n);
}

/* Leaving: a draining node is emptied, then removed; the later nodes' first shifts. */
static void
test_drain(void **state)
{
	struct km_cluster_member mem[3] = {
		member("n1", 11, 2, 1, KM_CMAP_ACTIVE),
		member("n2", 12, 2, 1, KM_CMAP_ACTIVE),
		member("n3", 13, 3, 1, KM_CMAP_ACTIVE),
	};
	struct km_cluster_params p = params(64, 0);
	struct km_cluster_decision d = {0};
	struct km_cmap *m = three_nodes(mem), *n;
	uint32_t i, n2 = node_shards(m, 1);

	(void)state;
	mem[1].state = KM_CMAP_DRAINING;
	n = step(&p, m, mem, 3, NULL, 0, &d);
	assert_non_null(d.map);
	assert_int_equal(d.map->nodes[1].state, KM_CMAP_DRAINING);
	/* The drain first: every shard of n2. */
	assert_true(d.nb_moves >= n2);
	for (i = 0; i < n2; i++) {
		assert_int_equal(d.moves[i].from_node, 1);
		assert_int_equal(d.moves[i].reason, KM_CLUSTER_DRAIN);
	}
	assert_int_equal(node_shards(n, 1), 0);
	/* Spread by workers: n1 (2 workers) and n3 (3) end near 2/5 and 3/5 of 64. */
	assert_true(node_shards(n, 0) >= 25 && node_shards(n, 0) <= 27);
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	m = n;

	/* The next decision removes it: n3 becomes node 1, its first 2. */
	n = step(&p, m, mem, 3, NULL, 0, &d);
	assert_non_null(d.map);
	assert_int_equal(n->nb_nodes, 2);
	assert_string_equal(n->nodes[1].id, "n3");
	assert_int_equal(n->nodes[1].first, 2);
	assert_int_equal(node_shards(n, 1), node_shards(m, 2));
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	/* Still asking to drain, no longer in the table: it stays out. */
	n = converge(&p, n, mem, 3, NULL, 0, 2, NULL);
	assert_int_equal(n->nb_nodes, 2);
	/* A node whose member asks to be active again leaves the draining state. */
	km_cmap_free(n);
	mem[1].state = KM_CMAP_ACTIVE;
	m = three_nodes(mem);
	mem[1].state = KM_CMAP_DRAINING;
	p.max_moves = 3;
	n = step(&p, m, mem, 3, NULL, 0, &d);
	assert_int_equal(d.nb_moves, 3);
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	mem[1].state = KM_CMAP_ACTIVE;
	n = converge(&p, n, mem, 3, NULL, 0, 4, NULL);
	assert_int_equal(n->nodes[1].state, KM_CMAP_ACTIVE);
	assert_true(node_shards(n, 1) >= 18);
	km_cmap_free(n);
}

/* At most max_moves a decision; the moves of several decisions add up to what one
 * unbounded decision does. */
static void
test_bounded(void **state)
{
	struct km_cluster_member mem[2] = {
		member("n1", 11, 2, 1, KM_CMAP_ACTIVE),
		member("n2", 12, 2, 1, KM_CMAP_ACTIVE),
	};
	struct km_cluster_params p = params(5, 0);
	struct km_cluster_decision d = {0};
	struct km_cmap *m, *n;
	unsigned int rounds = 0;
	uint32_t total = 0;

	(void)state;
	m = step(&p, NULL, mem, 1, NULL, 0, &d);
	km_cluster_decision_free(&d);
	for (;;) {
		n = step(&p, m, mem, 2, NULL, 0, &d);
		if (d.map == NULL && d.nb_moves == 0)
			break;
		assert_true(d.nb_moves <= 5);
		total += d.nb_moves;
		rounds++;
		km_cluster_decision_free(&d);
		km_cmap_free(m);
		m = n;
		assert_true(rounds < 20);
	}
	km_cmap_free(n);
	assert_int_equal(total, 32);
	assert_int_equal(rounds, 7); /* 32 / 5, rounded up */
	assert_int_equal(node_shards(m, 1), 32);
	km_cmap_free(m);

	/* max_moves 0: the table follows the members, no shard moves. */
	p.max_moves = 0;
	m = step(&p, NULL, mem, 1, NULL, 0, &d);
	km_cluster_decision_free(&d);
	n = step(&p, m, mem, 2, NULL, 0, &d);
	assert_non_null(d.map);
	assert_int_equal(d.nb_moves, 0);
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	km_cmap_free(n);
}

/* Random histories: nodes join, restart, go away and come back, drain, with few moves a
 * decision; every decision is checked, and once the members hold still the placer
 * converges to a fair, stable map. */
static void
test_converge_random(void **state)
{
	uint64_t seed = 2024;
	int run;

	(void)state;
	for (run = 0; run < 20; run++) {
		struct km_cluster_member all[12];
		struct km_cluster_member live[12];
		uint8_t up[12] = {0};
		struct km_cluster_params p = params(1 + km_util_splitmix64(&seed) % 8, 0);
		struct km_cluster_decision d = {0};
		struct km_cmap *m = NULL, *n;
		uint32_t nb, i, S, W;
		int ev;

		p.initial_shards = 1u << (3 + km_util_splitmix64(&seed) % 5);
		for (i = 0; i < 12; i++) {
			char id[8];

			snprintf(id, sizeof(id), "m%02u", i);
			all[i] = member(id, 20 + i, (uint16_t)(1 + km_util_splitmix64(&seed) % 4),
				1, KM_CMAP_ACTIVE);
		}
		up[0] = 1;
		for (ev = 0; ev < 40; ev++) {
			uint32_t k = km_util_splitmix64(&seed) % 12;

			switch (km_util_splitmix64(&seed) % 5) {
			case 0: /* join or come back */
				up[k] = 1;
				all[k].state = KM_CMAP_ACTIVE;
				break;
			case 1: /* go away */
				up[k] = 0;
				break;
			case 2: /* restart */
				all[k].incarnation++;
				break;
			case 3: /* drain */
				all[k].state = KM_CMAP_DRAINING;
				break;
			default: /* nothing: a decision with the same members */
				break;
			}
			for (i = 0, nb = 0; i < 12; i++)
				if (up[i])
					live[nb++] = all[i];
			n = step(&p, m, live, nb, NULL, 0, &d);
			km_cluster_decision_free(&d);
			km_cmap_free(m);
			m = n;
		}
		/* Everyone back and active: converge, every node at its share. */
		for (i = 0; i < 12; i++)
			all[i].state = KM_CMAP_ACTIVE;
		m = converge(&p, m, all, 12, NULL, 0, 200, NULL);
		if (m == NULL)
			continue; /* no member was ever active: no map */
		assert_int_equal(m->nb_nodes, 12);
		S = m->nb_shards;
		W = km_cmap_total_workers(m);
		for (i = 0; i < m->nb_nodes; i++) {
			double share = (double)S * m->nodes[i].workers / W;
			double c = node_shards(m, (uint16_t)i);

			/* Within one shard of the share (not of the rounded one). */
			assert_true(c > share - 1 && c < share + 1);
			assert_int_equal(m->nodes[i].down, 0);
		}
		km_cmap_free(m);
	}
}

/* Rates per shard of a map: base[i] for shard i, times a noise factor. */
static uint32_t
make_rates(const struct km_cmap *m, const double *base, double noise, uint64_t *seed,
	struct km_cluster_rate *r)
{
	uint32_t i;

	for (i = 0; i < m->nb_shards; i++) {
		double u = (double)(km_util_splitmix64(seed) >> 11) / (double)(1ull << 53);

		r[i].id = m->shards[i].id;
		r[i].rate = base[i] * (1 + noise * (2 * u - 1));
	}
	return m->nb_shards;
}

/* Most loaded worker's load / mean worker load, over the active live nodes. */
static double
imbalance(const struct km_cmap *m, const struct km_cluster_rate *r)
{
	double load[KM_WORKERS_MAX] = {0}, total = 0, hi = 0;
	uint32_t i, w = km_cmap_total_workers(m);

	for (i = 0; i < m->nb_shards; i++) {
		const struct km_cmap_shard *s = km_cmap_shard_find(m, r[i].id);

		load[m->nodes[s->node].first + s->worker] += r[i].rate;
		total += r[i].rate;
	}
	for (i = 0; i < w; i++)
		hi = load[i] > hi ? load[i] : hi;
	return hi / (total / w);
}

/* Load balancing: nothing while within balance_pct, then moves toward the mean until
 * within half the margin; noisy rates afterwards move nothing. */
static void
test_load(void **state)
{
	struct km_cluster_member mem[2] = {
		member("n1", 11, 2, 1, KM_CMAP_ACTIVE),
		member("n2", 12, 2, 1, KM_CMAP_ACTIVE),
	};
	struct km_cluster_rate r[64];
	double base[64];
	struct km_cluster_params p = params(16, 125);
	struct km_cluster_decision d = {0};
	struct km_cmap *m, *n;
	uint64_t seed = 5;
	uint32_t i, nr, moves = 0;
	int round;

	(void)state;
	m = step(&p, NULL, mem, 2, NULL, 0, &d);
	km_cluster_decision_free(&d);
	/* Even rates: balanced, nothing moves. */
	for (i = 0; i < 64; i++)
		base[i] = 100;
	nr = make_rates(m, base, 0, &seed, r);
	n = step(&p, m, mem, 2, r, nr, &d);
	assert_null(d.map);
	assert_int_equal(d.nb_moves, 0);
	km_cmap_free(n);
	/* Worker 0 of n1 at 1.2 x the mean (below 1.25): still nothing. */
	for (i = 0; i < 64; i++)
		base[i] = m->shards[i].node == 0 && m->shards[i].worker == 0 ? 120 : 100 - 20.0 / 3;
	nr = make_rates(m, base, 0, &seed, r);
	assert_true(imbalance(m, r) > 1.19 && imbalance(m, r) < 1.21);
	n = step(&p, m, mem, 2, r, nr, &d);
	assert_int_equal(d.nb_moves, 0);
	km_cmap_free(n);
	/* One worker at 3 x the others: moves by load from it, until within 1.125. */
	for (i = 0; i < 64; i++)
		base[i] = m->shards[i].node == 0 && m->shards[i].worker == 0 ? 300 : 100;
	nr = make_rates(m, base, 0, &seed, r);
	n = step(&p, m, mem, 2, r, nr, &d);
	assert_true(d.nb_moves > 0);
	for (i = 0; i < d.nb_moves; i++) {
		assert_int_equal(d.moves[i].reason, KM_CLUSTER_LOAD);
		assert_int_equal(d.moves[i].from_node, 0);
		assert_int_equal(d.moves[i].from_worker, 0);
	}
	assert_true(imbalance(n, r) <= 1.125 + 1e-9);
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	m = n;
	/* Then the rates jitter by 10 %: after a few decisions (shares settle within the
	 * balancing target), nothing moves for 200 decisions. */
	for (round = 0; round < 220; round++) {
		nr = make_rates(m, base, 0.1, &seed, r);
		n = step(&p, m, mem, 2, r, nr, &d);
		if (round >= 20)
			moves += d.nb_moves;

		km_cluster_decision_free(&d);
		km_cmap_free(m);
		m = n;
		assert_true(imbalance(m, r) < 1.25);
	}
	assert_int_equal(moves, 0);
	/* min_rate: an idle cluster is not balanced. */
	p.min_rate = 1e9;
	for (i = 0; i < 64; i++)
		base[i] = i == 0 ? 1000 : 1;
	nr = make_rates(m, base, 0, &seed, r);
	n = step(&p, m, mem, 2, r, nr, &d);
	assert_int_equal(d.nb_moves, 0);
	km_cmap_free(n);
	km_cmap_free(m);
}

/* A node joining a loaded cluster, rates known: it gets shards by share and load, every
 * worker ends within the balancing ratio, then nothing moves. */
static void
test_join_rates(void **state)
{
	struct km_cluster_member mem[3] = {
		member("n1", 11, 2, 1, KM_CMAP_ACTIVE),
		member("n2", 12, 2, 1, KM_CMAP_ACTIVE),
		member("n3", 13, 2, 1, KM_CMAP_ACTIVE),
	};
	struct km_cluster_params p = params(64, 125);
	struct km_cluster_decision d = {0};
	struct km_cluster_rate r[64];
	double base[64];
	struct km_cmap *m;
	uint64_t seed = 3;
	uint32_t i, moves = 0, nr;

	(void)state;
	m = step(&p, NULL, mem, 2, NULL, 0, &d);
	km_cluster_decision_free(&d);
	for (i = 0; i < 64; i++)
		base[i] = 50 + (double)(km_util_splitmix64(&seed) % 100);
	nr = make_rates(m, base, 0, &seed, r);
	m = converge(&p, m, mem, 2, r, nr, 4, NULL);
	assert_true(imbalance(m, r) <= 1.25);
	m = converge(&p, m, mem, 3, r, nr, 4, &moves);
	assert_true(imbalance(m, r) <= 1.25);
	/* About a third of the shards, coldest first, then some more for their load. */
	assert_true(node_shards(m, 2) >= 21 && node_shards(m, 2) <= 28);
	assert_true(moves == node_shards(m, 2));
	km_cmap_free(m);
}

/* Shares and loads do not fight: one shard hot enough to need a node of its own, noisy
 * rates, a node joining; after a few decisions nothing moves for 300 decisions. */
static void
test_load_no_oscillation(void **state)
{
	struct km_cluster_member mem[3] = {
		member("n1", 11, 1, 1, KM_CMAP_ACTIVE),
		member("n2", 12, 1, 1, KM_CMAP_ACTIVE),
		member("n3", 13, 2, 1, KM_CMAP_ACTIVE),
	};
	struct km_cluster_params p = params(4, 120);
	struct km_cluster_decision d = {0};
	struct km_cluster_rate r[64];
	double rate_of[64]; /* by shard id - 64 */
	struct km_cmap *m, *n;
	uint64_t seed = 11;
	uint32_t i, late = 0, early = 0;
	int round;

	(void)state;
	p.initial_shards = 64;
	for (i = 0; i < 64; i++)
		rate_of[i] = i == 5 ? 2000 : 20 + (double)(km_util_splitmix64(&seed) % 40);
	m = step(&p, NULL, mem, 2, NULL, 0, &d);
	km_cluster_decision_free(&d);
	for (round = 0; round < 400; round++) {
		const struct km_cluster_member *live = mem;

		for (i = 0; i < 64; i++) {
			double u = (double)(km_util_splitmix64(&seed) >> 11) / (double)(1ull << 53);

			r[i].id = 64 + i;
			r[i].rate = rate_of[i] * (0.9 + 0.2 * u);
		}
		n = step(&p, m, live, round < 50 ? 2 : 3, r, 64, &d);
		if (round < 100)
			early += d.nb_moves;
		else
			late += d.nb_moves;
		km_cluster_decision_free(&d);
		km_cmap_free(m);
		m = n;
	}
	assert_true(early > 0);
	assert_int_equal(late, 0);
	/* The hot shard's worker carries it and little else; no worker is far above the
	 * mean otherwise. */
	km_cmap_free(m);
}

/* Members that are not valid, listed twice or over the limits are skipped and counted. */
static void
test_skipped(void **state)
{
	struct km_cluster_member mem[40];
	struct km_cluster_params p = params(8, 0);
	struct km_cluster_decision d = {0};
	struct km_cmap *m, *n;
	uint32_t i;

	(void)state;
	for (i = 0; i < 40; i++) {
		char id[8];

		snprintf(id, sizeof(id), "n%02u", i);
		mem[i] = member(id, 1 + i, 1, 1, KM_CMAP_ACTIVE);
	}
	m = step(&p, NULL, mem, 40, NULL, 0, &d);
	assert_int_equal(m->nb_nodes, KM_CLUSTER_NODES_MAX);
	assert_int_equal(d.nb_skipped, 8);
	assert_string_equal(d.skipped, "member n32: over the limits of the node table");
	assert_int_equal(km_cmap_node_find(m, "n39"), -ENOENT);
	km_cluster_decision_free(&d);
	km_cmap_free(m);

	/* Workers: 100 + 28 fit, one more worker does not. */
	mem[0].workers = 100;
	mem[1].workers = 28;
	mem[2].workers = 1;
	m = step(&p, NULL, mem, 3, NULL, 0, &d);
	assert_int_equal(m->nb_nodes, 2);
	assert_int_equal(d.nb_skipped, 1);
	km_cluster_decision_free(&d);
	/* A member asking for more workers than there is room for: its node counts as down. */
	mem[1].workers = 29;
	mem[1].incarnation = 2;
	n = step(&p, m, mem, 2, NULL, 0, &d);
	assert_int_equal(n->nodes[1].down, 1);
	assert_int_equal(n->nodes[1].workers, 28);
	assert_string_equal(d.skipped, "member n01: more workers than the cluster has room for");
	km_cluster_decision_free(&d);
	km_cmap_free(m);
	km_cmap_free(n);

	/* Not valid, or twice. */
	mem[0] = member("a", 1, 2, 1, KM_CMAP_ACTIVE);
	mem[1] = member("b", 2, 2, 1, KM_CMAP_ACTIVE);
	mem[2] = member("b", 3, 2, 4, KM_CMAP_ACTIVE); /* the newer incarnation wins */
	mem[3] = member("c d", 4, 2, 1, KM_CMAP_ACTIVE);
	mem[4] = member("e", 5, 0, 1, KM_CMAP_ACTIVE);
	mem[5] = member("f", 0, 2, 1, KM_CMAP_ACTIVE);
	mem[5].ip = 0;
	mem[6] = member("g", 7, 2, 0, KM_CMAP_ACTIVE);
	mem[7] = member("h", 8, 2, 1, 9);
	mem[8] = member("i", 9, 2, 1, KM_CMAP_ACTIVE);
	mem[8].port = 65535;
	memset(mem[9].id, 'x', sizeof(mem[9].id)); /* not terminated */
	m = step(&p, NULL, mem, 10, NULL, 0, &d);
	assert_int_equal(m->nb_nodes, 2);
	assert_int_equal(m->nodes[1].incarnation, 4);
	assert_int_equal(d.nb_skipped, 8);
	km_cluster_decision_free(&d);
	km_cmap_free(m);
}

static void
test_args(void **state)
{
	struct km_cluster_member mem[1] = {member("n1", 11, 2, 1, KM_CMAP_ACTIVE)};
	struct km_cluster_params p = params(8, 0);
	struct km_cluster_decision d = {0};
	char err[KM_CLUSTER_ERR_MAX];
	struct km_cmap *m;

	(void)state;
	p.initial_shards = 48;
	assert_int_equal(
		km_cluster_decide(&p, NULL, mem, 1, NULL, 0, &d, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "initial_shards: 48 is not a power of two in 1..65536");
	p = params(8, 100);
	assert_int_equal(
		km_cluster_decide(&p, NULL, mem, 1, NULL, 0, &d, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "balance_pct: 100 is not above 100");
	p = params(KM_CLUSTER_MOVES_MAX + 1, 0);
	assert_int_equal(
		km_cluster_decide(&p, NULL, mem, 1, NULL, 0, &d, err, sizeof(err)), -EINVAL);
	p = params(8, 0);
	p.route_depth = 0;
	assert_int_equal(
		km_cluster_decide(&p, NULL, mem, 1, NULL, 0, &d, err, sizeof(err)), -EINVAL);
	p = params(8, 0);
	p.min_rate = -1;
	assert_int_equal(
		km_cluster_decide(&p, NULL, mem, 1, NULL, 0, &d, err, sizeof(err)), -EINVAL);
	p = params(8, 0);
	assert_int_equal(
		km_cluster_decide(NULL, NULL, mem, 1, NULL, 0, &d, err, sizeof(err)), -EINVAL);
	assert_int_equal(
		km_cluster_decide(&p, NULL, NULL, 1, NULL, 0, &d, err, sizeof(err)), -EINVAL);
	assert_int_equal(
		km_cluster_decide(&p, NULL, mem, 1, NULL, 1, &d, err, sizeof(err)), -EINVAL);
	assert_int_equal(
		km_cluster_decide(&p, NULL, mem, 1, NULL, 0, NULL, err, sizeof(err)), -EINVAL);

	assert_int_equal(km_cluster_decide(&p, NULL, mem, 1, NULL, 0, &d, err, sizeof(err)), 0);
	m = d.map;
	d.map = NULL;
	km_cluster_decision_free(&d);
	/* A current map that is not valid. */
	m->nodes[0].workers = 0;
	assert_int_equal(km_cluster_decide(&p, m, mem, 1, NULL, 0, &d, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "current map: nodes[0].workers: 0 is out of range (1..128)");
	assert_null(d.map);
	m->nodes[0].workers = 2;
	/* An epoch that cannot grow. */
	m->epoch = UINT32_MAX;
	mem[0].incarnation = 2;
	assert_int_equal(
		km_cluster_decide(&p, m, mem, 1, NULL, 0, &d, err, sizeof(err)), -EOVERFLOW);
	assert_null(d.map);
	km_cmap_free(m);
	km_cluster_decision_free(NULL);
}

/*
 * Records under P/: members and moves, as keymap-placer and keymapd decode them.
 */

#define MEMBER(id, ip, workers, inc, state)                                                 \
	"{\"id\":\"" id "\",\"ip\":\"" ip "\",\"mac\":\"02:00:00:00:00:01\",\"port\":7070," \
	"\"workers\":" workers ",\"incarnation\":" inc ",\"side_port\":7069,\"state\":" state "}"
/* A member n1 with the side channel fields given (JSON text after the others). */
#define MEMBER_SIDE(side)                                                                     \
	"{\"id\":\"n1\",\"ip\":\"198.51.100.1\",\"port\":7070,\"workers\":2,\"incarnation\":" \
	"1" side "}"

static int
member_rec(const char *key_id, const char *json, struct km_cluster_member *m, char *err)
{
	return km_cluster_member_decode(key_id, json, strlen(json), m, err, KM_CLUSTER_ERR_MAX);
}

static void
test_member_record(void **state)
{
	struct km_cluster_member m;
	char err[KM_CLUSTER_ERR_MAX];
	size_t i;
	static const struct {
		const char *json, *msg;
	} bad[] = {
		{"[1]", "not a JSON object"},
		{"{\"id\":", "invalid JSON at line 1"},
		{MEMBER("n 1", "198.51.100.1", "2", "1", "\"active\""), "id: missing or not"},
		{MEMBER("n2", "198.51.100.1", "2", "1", "\"active\""), "id: 'n2' under the key"},
		{MEMBER("n1", "198.51.100", "2", "1", "\"active\""), "ip: missing or not"},
		{MEMBER("n1", "0.0.0.0", "2", "1", "\"active\""), "ip: missing or not"},
		{MEMBER("n1", "198.51.100.1", "0", "1", "\"active\""), "workers: missing"},
		{MEMBER("n1", "198.51.100.1", "129", "1", "\"active\""), "workers: missing"},
		{MEMBER("n1", "198.51.100.1", "\"2\"", "1", "\"active\""), "workers: missing"},
		{MEMBER("n1", "198.51.100.1", "2", "0", "\"active\""), "incarnation: missing"},
		{MEMBER("n1", "198.51.100.1", "2", "1", "\"gone\""), "state: 'gone' is neither"},
		{MEMBER("n1", "198.51.100.1", "2", "1", "3"), "state: not a string"},
		{MEMBER("n1", "198.51.100.1", "2", "1", "null"), "state: not a string"},
		{"{\"id\":\"n1\",\"ip\":\"198.51.100.1\",\"port\":65535,\"workers\":2,"
		 "\"incarnation\":1}",
			"port: 65535 + 2 workers passes 65535"},
		{"{\"id\":\"n1\",\"ip\":\"198.51.100.1\",\"port\":0,\"workers\":2,"
		 "\"incarnation\":1}",
			"port: missing or not an integer in 1..65535"},
	};
	/* a side channel that is not one */
	static const char *const no_side[] = {
		MEMBER_SIDE(""),
		MEMBER_SIDE(",\"side_ip\":\"192.0.2.7\""),
		MEMBER_SIDE(",\"side_ip\":\"192.0.2.7\",\"side_port\":0"),
		MEMBER_SIDE(",\"side_ip\":\"192.0.2.7\",\"side_port\":65536"),
		MEMBER_SIDE(",\"side_ip\":\"192.0.2.7\",\"side_port\":\"7069\""),
		MEMBER_SIDE(",\"side_ip\":\"192.0.2\",\"side_port\":7069"),
		MEMBER_SIDE(",\"side_ip\":\"0.0.0.0\",\"side_port\":7069"),
		MEMBER_SIDE(",\"side_ip\":7,\"side_port\":7069"),
	};

	(void)state;
	assert_int_equal(
		member_rec("n1", MEMBER("n1", "198.51.100.11", "2", "3", "\"active\""), &m, err),
		0);
	assert_string_equal(m.id, "n1");
	assert_int_equal(m.ip, (198u << 24) | (51u << 16) | (100u << 8) | 11u);
	assert_true(m.port == 7070 && m.workers == 2 && m.incarnation == 3);
	assert_int_equal(m.state, KM_CMAP_ACTIVE);
	/* side_port without side_ip: no side channel, the member still counts */
	assert_true(m.side_port == 0 && m.side_ip == 0);
	assert_int_equal(
		member_rec("n1", MEMBER("n1", "198.51.100.11", "1", "9", "\"draining\""), &m, err),
		0);
	assert_int_equal(m.state, KM_CMAP_DRAINING);
	/* no state: active; members it does not know are ignored; any id without a key */
	assert_int_equal(member_rec(NULL,
				 "{\"id\":\"n1\",\"ip\":\"198.51.100.1\",\"port\":1,\"workers\":1,"
				 "\"incarnation\":1,\"later\":[1]}",
				 &m, err),
		0);
	assert_int_equal(m.state, KM_CMAP_ACTIVE);
	/* the side channel, as keymapd writes it */
	assert_int_equal(
		member_rec("n1", MEMBER_SIDE(",\"side_ip\":\"192.0.2.7\",\"side_port\":7069"), &m,
			err),
		0);
	assert_int_equal(m.side_ip, (192u << 24) | (2u << 8) | 7u);
	assert_int_equal(m.side_port, 7069);
	/* a side channel that is not one: none, never a refusal (the placer places on it) */
	for (i = 0; i < sizeof(no_side) / sizeof(no_side[0]); i++) {
		memset(&m, 0xff, sizeof(m));
		if (member_rec("n1", no_side[i], &m, err) != 0)
			fail_msg("%s: refused: %s", no_side[i], err);
		if (m.side_port != 0 || m.side_ip != 0)
			fail_msg("%s: side channel %x:%u", no_side[i], m.side_ip, m.side_port);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		memset(&m, 0, sizeof(m));
		assert_int_equal(member_rec("n1", bad[i].json, &m, err), -EINVAL);
		if (strstr(err, bad[i].msg) == NULL)
			fail_msg("%s: '%s' lacks '%s'", bad[i].json, err, bad[i].msg);
		assert_string_equal(m.id, ""); /* *out untouched */
	}
	/* err may be NULL */
	assert_int_equal(km_cluster_member_decode("n1", "[", 1, &m, NULL, 0), -EINVAL);
}

static int
move_rec(uint64_t id, const char *json, struct km_cluster_move_record *mv, char *err)
{
	return km_cluster_move_decode(id, json, strlen(json), mv, err, KM_CLUSTER_ERR_MAX);
}

/* A move record of shard 9 with the fields given after "id". */
#define MOVE(fields) "{\"id\":9," fields "}"

/*
 * Replicas: the JSON form, refusals, a move's target, node removal; the placer's rules
 * (failover, dropped replicas, in sync on the primary's word, re-replication).
 */
static void
test_replicas_json(void **state)
{
	static const char *const bad[] = {
		DOC_S("[4,0,0,[[0,0,0]]],[5,1,0],[6,0,1],[7,1,1]"),         /* on its own node */
		DOC_S("[4,0,0,[[1,0,0],[1,1,0]]],[5,1,0],[6,0,1],[7,1,1]"), /* twice one node */
		DOC_S("[4,0,0,[[1,5,0]]],[5,1,0],[6,0,1],[7,1,1]"), /* worker out of range */
		DOC_S("[4,0,0,[[1,0,2]]],[5,1,0],[6,0,1],[7,1,1]"), /* in_sync 2 */
		DOC_S("[4,0,0,[]],[5,1,0],[6,0,1],[7,1,1]"),        /* an empty list */
		DOC_S("[4,0,0,[[1,0]]],[5,1,0],[6,0,1],[7,1,1]"),   /* not a triple */
		DOC_S("[4,0,0,[[2,0,0]]],[5,1,0],[6,0,1],[7,1,1]"), /* node out of range */
	};
	const char *doc = DOC_S("[4,0,0,[[1,1,1]]],[5,1,0,[[0,0,0]]],[6,0,1],[7,1,1]");
	struct km_cmap *m = decode_ok(doc), *n;
	struct km_cluster_move mv = {.id = 4,
		.from_node = 0,
		.from_worker = 0,
		.to_node = 1,
		.to_worker = 0,
		.reason = KM_CLUSTER_SHARE};
	char *enc;
	unsigned int i;

	(void)state;
	assert_int_equal(m->shards[0].nb_replicas, 1);
	assert_int_equal(m->shards[0].replicas[0].node, 1);
	assert_int_equal(m->shards[0].replicas[0].worker, 1);
	assert_int_equal(m->shards[0].replicas[0].in_sync, 1);
	assert_int_equal(m->shards[2].nb_replicas, 0);
	round_trip(m);
	enc = encode_ok(m);
	assert_non_null(strstr(enc, "[4,0,0,[[1,1,1]]],[5,1,0,[[0,0,0]]],[6,0,1],[7,1,1]"));
	free(enc);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct km_cmap *x = NULL;
		char err[KM_CLUSTER_ERR_MAX] = "";

		assert_int_equal(
			km_cmap_decode(bad[i], strlen(bad[i]), &x, err, sizeof(err)), -EINVAL);
		assert_null(x);
		assert_non_null(strstr(err, "shards["));
	}
	/* A move to the replica's node: it becomes the primary, no longer a replica. */
	assert_int_equal(km_cmap_move_apply(m, &mv, &n), 0);
	assert_int_equal(n->shards[0].node, 1);
	assert_int_equal(n->shards[0].nb_replicas, 0);
	assert_int_equal(km_cmap_check(n, NULL, 0), 0);
	/* Only the replicas make two maps differ. */
	n->shards[0].node = 0;
	n->shards[0].worker = 0;
	n->epoch = m->epoch;
	assert_false(km_cmap_equal(m, n));
	n->shards[0].nb_replicas = 1;
	n->shards[0].replicas[0] = m->shards[0].replicas[0];
	assert_true(km_cmap_equal(m, n));
	n->shards[0].replicas[0].in_sync = 0;
	assert_false(km_cmap_equal(m, n));
	km_cmap_free(n);
	km_cmap_free(m);
}

/* A report of node (incarnation inc) about shard -> (replica node rinc, state). */
static struct km_cluster_repl *
report1(const char *node, uint64_t inc, uint64_t shard, const char *rn, uint64_t rinc, uint8_t st)
{
	struct km_cluster_repl *r = calloc(1, sizeof(*r) + sizeof(r->e[0]));

	assert_non_null(r);
	strcpy(r->node, node);
	r->incarnation = inc;
	r->nb = 1;
	r->e[0].shard = shard;
	strcpy(r->e[0].node, rn);
	r->e[0].incarnation = rinc;
	r->e[0].state = st;
	return r;
}

static void
test_replicas_rules(void **state)
{
	struct km_cluster_member mem[3] = {member("n1", 11, 2, 1, KM_CMAP_ACTIVE),
		member("n2", 12, 2, 1, KM_CMAP_ACTIVE), member("n3", 13, 2, 1, KM_CMAP_ACTIVE)};
	struct km_cluster_decision d = {0};
	struct km_cluster_repl_changes ch;
	struct km_cluster_params p = params(0, 0);
	struct km_cmap *m, *n, *n2;
	const struct km_cluster_repl *reps[2];
	struct km_cluster_repl *r1, *r2;
	uint32_t i, copies[3];
	unsigned int k;

	(void)state;
	for (i = 0; i < 3; i++)
		mem[i].serving = 1;
	p.initial_shards = 8;
	/* The first map over n1, n2: no replica yet; 2 copies: every shard gets one, on the
	 * other node, not in sync. */
	m = step(&p, NULL, mem, 2, NULL, 0, &d);
	km_cluster_decision_free(&d);
	assert_int_equal(km_cluster_replicas(m, mem, 2, NULL, 0, 0, &n, &ch), -EINVAL);
	assert_int_equal(km_cluster_replicas(m, mem, 2, NULL, 0, 1, &n, &ch), 0);
	assert_int_equal(km_cluster_replicas(m, mem, 2, NULL, 0, 2, &n, &ch), 1);
	assert_int_equal(n->epoch, m->epoch + 1);
	assert_int_equal(ch.added, 8);
	for (i = 0; i < n->nb_shards; i++) {
		assert_int_equal(n->shards[i].nb_replicas, 1);
		assert_int_not_equal(n->shards[i].replicas[0].node, n->shards[i].node);
		assert_int_equal(n->shards[i].replicas[0].in_sync, 0);
	}
	/* 3 copies with 2 nodes: capped. Deterministic: members in another order. */
	{
		struct km_cluster_member rev[2] = {mem[1], mem[0]};

		assert_int_equal(km_cluster_replicas(m, rev, 2, NULL, 0, 3, &n2, &ch), 1);
		assert_true(km_cmap_equal(n, n2));
		km_cmap_free(n2);
	}
	km_cmap_free(m);
	m = n;
	/* In sync on the primary's word only: its report at its incarnation, naming the
	 * replica at its incarnation; a stale report (another incarnation) changes nothing. */
	r1 = report1("n1", 2, m->shards[0].id, m->nodes[m->shards[0].replicas[0].node].id, 1,
		KM_CLUSTER_REPL_CAUGHT_UP);
	assert_int_equal(m->nodes[m->shards[0].node].incarnation, 1);
	assert_string_equal(m->nodes[m->shards[0].node].id, "n1");
	reps[0] = r1;
	assert_int_equal(km_cluster_replicas(m, mem, 2, reps, 1, 2, &n, &ch), 0);
	r1->incarnation = 1;
	assert_int_equal(km_cluster_replicas(m, mem, 2, reps, 1, 2, &n, &ch), 1);
	assert_int_equal(ch.in_sync, 1);
	assert_int_equal(n->shards[0].replicas[0].in_sync, 1);
	km_cmap_free(m);
	m = n;
	/* The same report again: nothing changes; "copy" takes it out of sync. */
	assert_int_equal(km_cluster_replicas(m, mem, 2, reps, 1, 2, &n, &ch), 0);
	r1->e[0].state = KM_CLUSTER_REPL_COPY;
	assert_int_equal(km_cluster_replicas(m, mem, 2, reps, 1, 2, &n, &ch), 1);
	assert_int_equal(ch.out_of_sync, 1);
	assert_int_equal(n->shards[0].replicas[0].in_sync, 0);
	km_cmap_free(n);
	r1->e[0].state = KM_CLUSTER_REPL_CAUGHT_UP;
	/* n1 dies: its shard with an in-sync replica fails over, the others wait. */
	assert_int_equal(km_cluster_replicas(m, &mem[1], 1, reps, 1, 2, &n, &ch), 1);
	assert_int_equal(ch.failovers, 1);
	assert_non_null(strstr(ch.first, "failed over from n1 to n2"));
	assert_string_equal(n->nodes[n->shards[0].node].id, "n2");
	assert_int_equal(n->shards[0].worker, m->shards[0].replicas[0].worker);
	assert_int_equal(n->shards[0].nb_replicas, 0); /* n1 is no replica: not live */
	for (i = 1; i < n->nb_shards; i++)
		if (m->shards[i].node == m->shards[0].node)
			assert_int_equal(n->shards[i].node, m->shards[i].node); /* waits */
		else
			assert_int_equal(n->shards[i].nb_replicas, 0); /* n1's replica dropped */
	km_cmap_free(n);
	/* A restarted n1 (incarnation 2) is not live at the map's incarnation either. */
	mem[0].incarnation = 2;
	assert_int_equal(km_cluster_replicas(m, mem, 2, reps, 1, 2, &n, &ch), 1);
	assert_int_equal(ch.failovers, 1);
	km_cmap_free(n);
	mem[0].incarnation = 1;
	/* n3 joins (in the table): 3 copies: every shard gets a second replica, the copies
	 * spread evenly (8 shards x 3 copies over 3 nodes). */
	n = step(&p, m, mem, 3, NULL, 0, &d);
	km_cmap_free(m);
	m = n;
	km_cluster_decision_free(&d);
	assert_int_equal(km_cluster_replicas(m, mem, 3, reps, 1, 3, &n, &ch), 1);
	memset(copies, 0, sizeof(copies));
	for (i = 0; i < n->nb_shards; i++) {
		assert_int_equal(n->shards[i].nb_replicas, 2);
		copies[n->shards[i].node]++;
		for (k = 0; k < 2; k++)
			copies[n->shards[i].replicas[k].node]++;
	}
	assert_int_equal(copies[0], 8);
	assert_int_equal(copies[1], 8);
	assert_int_equal(copies[2], 8);
	assert_int_equal(km_cmap_check(n, NULL, 0), 0);
	/* Back to 2 copies: one replica of each goes. */
	assert_int_equal(km_cluster_replicas(n, mem, 3, reps, 1, 2, &n2, &ch), 1);
	assert_int_equal(ch.dropped, 8);
	for (i = 0; i < n2->nb_shards; i++)
		assert_int_equal(n2->shards[i].nb_replicas, 1);
	km_cmap_free(n2);
	km_cmap_free(m);
	m = n;
	/* A draining node's replicas go (and are placed again: nowhere else here). */
	mem[2].state = KM_CMAP_DRAINING;
	r2 = report1("n2", 1, 1, "n1", 1, KM_CLUSTER_REPL_OTHER);
	reps[1] = r2;
	assert_int_equal(km_cluster_replicas(m, mem, 3, reps, 2, 3, &n, &ch), 1);
	assert_true(ch.dropped > 0);
	for (i = 0; i < n->nb_shards; i++)
		for (k = 0; k < n->shards[i].nb_replicas; k++)
			assert_string_not_equal(n->nodes[n->shards[i].replicas[k].node].id, "n3");
	km_cmap_free(n);
	km_cmap_free(m);
	free(r1);
	free(r2);
}

static void
test_repl_record(void **state)
{
	const char *ok = "{\"node\":\"n1\",\"incarnation\":3,\"epoch\":9,\"x\":1,"
			 "\"shards\":[[9,\"n2\",4,\"caught_up\"],[5,\"n3\",1,\"copy\"],"
			 "[6,\"n2\",4,\"later\"]]}";
	static const char *const bad[] = {
		"{\"incarnation\":3,\"epoch\":9,\"shards\":[]}",
		"{\"node\":\"n1\",\"epoch\":9,\"shards\":[]}",
		"{\"node\":\"n1\",\"incarnation\":3,\"epoch\":9}",
		"{\"node\":\"n1\",\"incarnation\":3,\"epoch\":9,\"shards\":[[9,\"n2\",4]]}",
		"{\"node\":\"n1\",\"incarnation\":3,\"epoch\":9,\"shards\":[[0,\"n2\",4,\"copy\"]]"
		"}",
		"{\"node\":\"n1\",\"incarnation\":3,\"epoch\":9,\"shards\":[[9,\"n "
		"2\",4,\"copy\"]]}",
		"[]",
	};
	struct km_cluster_repl *r = NULL;
	char err[KM_CLUSTER_ERR_MAX];
	unsigned int i;

	(void)state;
	assert_int_equal(km_cluster_repl_decode("n1", ok, strlen(ok), &r, err, sizeof(err)), 0);
	assert_string_equal(r->node, "n1");
	assert_int_equal(r->incarnation, 3);
	assert_int_equal(r->epoch, 9);
	assert_int_equal(r->nb, 3);
	assert_int_equal(r->e[0].shard, 9);
	assert_string_equal(r->e[0].node, "n2");
	assert_int_equal(r->e[0].incarnation, 4);
	assert_int_equal(r->e[0].state, KM_CLUSTER_REPL_CAUGHT_UP);
	assert_int_equal(r->e[1].state, KM_CLUSTER_REPL_COPY);
	assert_int_equal(r->e[2].state, KM_CLUSTER_REPL_OTHER);
	free(r);
	assert_int_equal(
		km_cluster_repl_decode("n2", ok, strlen(ok), &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "under the key of n2"));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = NULL;
		assert_int_equal(
			km_cluster_repl_decode(NULL, bad[i], strlen(bad[i]), &r, err, sizeof(err)),
			-EINVAL);
		assert_null(r);
	}
}

static void
test_move_record(void **state)
{
	struct km_cluster_move_record mv = {.id = 9,
					      .epoch = 4,
					      .from = "n1",
					      .to = "n3",
					      .to_worker = 1},
				      back;
	char err[KM_CLUSTER_ERR_MAX], *s = NULL;
	size_t i;
	static const struct {
		const char *json, *msg;
	} bad[] = {
		/* id mismatch: the record under another shard's key */
		{"{\"id\":8,\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,\"state\":"
		 "\"copy\"}",
			"id: 8 under the key of shard 9"},
		{"{\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,\"state\":\"copy\"}",
			"id: missing"},
		{"{\"id\":\"9\",\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,"
		 "\"state\":\"copy\"}",
			"id: missing or not a shard id"},
		{"{\"id\":0,\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,"
		 "\"state\":\"copy\"}",
			"id: missing or not a shard id"},
		{MOVE("\"epoch\":0,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,\"state\":"
		      "\"copy\""),
			"epoch: missing"},
		{MOVE("\"epoch\":4294967296,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,"
		      "\"state\":\"copy\""),
			"epoch: missing or not an integer in 1..4294967295"},
		{MOVE("\"epoch\":4,\"from\":\"n 1\",\"to\":\"n3\",\"to_worker\":1,\"state\":"
		      "\"copy\""),
			"from: missing"},
		{MOVE("\"epoch\":4,\"from\":\"n1\",\"to_worker\":1,\"state\":\"copy\""),
			"to: missing"},
		{MOVE("\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":128,\"state\":"
		      "\"copy\""),
			"to_worker: missing"},
		/* missing to_worker, and ones that are not a worker index */
		{MOVE("\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"state\":\"copy\""),
			"to_worker: missing or not an integer in 0..127"},
		{MOVE("\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":-1,\"state\":"
		      "\"copy\""),
			"to_worker: missing or not an integer in 0..127"},
		{MOVE("\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":\"1\",\"state\":"
		      "\"copy\""),
			"to_worker: missing or not an integer in 0..127"},
		{MOVE("\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1.5,\"state\":"
		      "\"copy\""),
			"to_worker: missing or not an integer in 0..127"},
		/* bad states: missing, or not a string */
		{MOVE("\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1"),
			"state: missing"},
		{MOVE("\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,\"state\":2"),
			"state: missing or not a string"},
		{MOVE("\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,\"state\":null"),
			"state: missing or not a string"},
		{MOVE("\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,\"state\":"
		      "[\"copy\"]"),
			"state: missing or not a string"},
		{"[7]", "not a JSON object"},
		{"{\"id\":9,", "invalid JSON at line 1"},
	};

	(void)state;
	assert_int_equal(km_cluster_move_encode(&mv, &s), 0);
	assert_string_equal(s, "{\"id\":9,\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":"
			       "1,\"state\":\"copy\"}");
	assert_int_equal(move_rec(9, s, &back, err), 0);
	assert_true(back.id == 9 && back.epoch == 4 && back.to_worker == 1);
	assert_string_equal(back.from, "n1");
	assert_string_equal(back.to, "n3");
	assert_int_equal(back.state, KM_CLUSTER_MOVE_COPY);
	assert_string_equal(back.reason, "");
	assert_true(back.create_rev == 0 && back.mod_rev == 0);
	free(s);
	/* as a node writes it back: other members kept by the node, a reason */
	assert_int_equal(
		move_rec(9,
			"{\"id\":9,\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,"
			"\"state\":\"failed\",\"reason\":\"n3 unreachable\",\"keys\":12}",
			&back, err),
		0);
	assert_int_equal(back.state, KM_CLUSTER_MOVE_FAILED);
	assert_string_equal(back.reason, "n3 unreachable");
	/* failed with its reason: the reason encoded after the state, and back */
	assert_int_equal(km_cluster_move_encode(&back, &s), 0);
	assert_string_equal(s, "{\"id\":9,\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":"
			       "1,\"state\":\"failed\",\"reason\":\"n3 unreachable\"}");
	assert_int_equal(move_rec(9, s, &back, err), 0);
	assert_int_equal(back.state, KM_CLUSTER_MOVE_FAILED);
	assert_string_equal(back.reason, "n3 unreachable");
	free(s);
	assert_int_equal(
		move_rec(9,
			"{\"id\":9,\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,"
			"\"state\":\"ready\"}",
			&back, err),
		0);
	assert_int_equal(back.state, KM_CLUSTER_MOVE_READY);
	assert_int_equal(back.to_incarnation, 0);
	/* ready with the target's run that stored the copy, and back */
	back.to_incarnation = 7;
	assert_int_equal(km_cluster_move_encode(&back, &s), 0);
	assert_non_null(strstr(s, "\"to_incarnation\":7"));
	memset(&back, 0, sizeof(back));
	assert_int_equal(move_rec(9, s, &back, err), 0);
	assert_int_equal(back.to_incarnation, 7);
	free(s);
	assert_int_equal(
		move_rec(9,
			"{\"id\":9,\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,"
			"\"state\":\"ready\",\"to_incarnation\":0}",
			&back, err),
		-EINVAL);
	assert_non_null(strstr(err, "to_incarnation"));
	/* a state of a later node: in progress, not a refusal */
	assert_int_equal(
		move_rec(9,
			"{\"id\":9,\"epoch\":4,\"from\":\"n1\",\"to\":\"n3\",\"to_worker\":1,"
			"\"state\":\"staging\"}",
			&back, err),
		0);
	assert_int_equal(back.state, KM_CLUSTER_MOVE_OTHER);
	mv.state = KM_CLUSTER_MOVE_OTHER;
	s = NULL;
	assert_int_equal(km_cluster_move_encode(&mv, &s), -EINVAL);
	assert_null(s);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		memset(&back, 0, sizeof(back));
		assert_int_equal(move_rec(9, bad[i].json, &back, err), -EINVAL);
		if (strstr(err, bad[i].msg) == NULL)
			fail_msg("%s: '%s' lacks '%s'", bad[i].json, err, bad[i].msg);
		assert_int_equal(back.id, 0); /* *out untouched */
	}
	assert_int_equal(km_cluster_move_decode(9, "[", 1, &back, NULL, 0), -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_round_trip),
		cmocka_unit_test(test_json_refusals),
		cmocka_unit_test(test_json_fuzz),
		cmocka_unit_test(test_check),
		cmocka_unit_test(test_shardmap),
		cmocka_unit_test(test_move_apply),
		cmocka_unit_test(test_first_map),
		cmocka_unit_test(test_join),
		cmocka_unit_test(test_join_weighted),
		cmocka_unit_test(test_incarnation),
		cmocka_unit_test(test_down_node),
		cmocka_unit_test(test_drain),
		cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_converge_random),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_join_rates),
		cmocka_unit_test(test_load_no_oscillation),
		cmocka_unit_test(test_skipped),
		cmocka_unit_test(test_args),
		cmocka_unit_test(test_member_record),
		cmocka_unit_test(test_replicas_json),
		cmocka_unit_test(test_replicas_rules),
		cmocka_unit_test(test_repl_record),
		cmocka_unit_test(test_move_record),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
