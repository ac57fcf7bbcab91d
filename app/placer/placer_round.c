/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * One round of the leader: read the cluster at one revision, settle the moves in flight,
 * decide, publish. Every write is one transaction that compares the leader key's creation
 * revision (a deposed leader writes nothing) and, for a map, map/current's mod revision
 * (no second map for one epoch); docs/cluster.md sections 2 and 4.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <km_util.h>

#include "placer.h"

/* The reads of a snapshot, in the order of the transaction's GET ops. */
enum {
	GET_MAP,
	GET_MEMBERS,
	GET_DRAIN,
	GET_LOAD,
	GET_MOVES,
	GET_REPL,
	GET_NB,
};

static const char *const get_names[GET_NB] = {
	[GET_MAP] = "map/current",
	[GET_MEMBERS] = "members/",
	[GET_DRAIN] = "drain/",
	[GET_LOAD] = "load/",
	[GET_MOVES] = "moves/",
	[GET_REPL] = "repl/",
};

/* A move key to delete: an invalid record, or a move given up. */
struct drop {
	uint64_t id; /* the shard of a move given up, else 0 */
	char key[PLACER_KEY_MAX];
	int64_t mod_rev;
	char why[2 * KM_CLUSTER_ID_MAX + KM_CLUSTER_ERR_MAX + 96];
};

/* The cluster as read at one revision. */
struct snap {
	int64_t rev;
	struct km_cmap *map; /* NULL: none (or refused) */
	int64_t map_rev;     /* map/current's mod revision, 0: absent */
	int map_refused;
	char map_why[KM_CLUSTER_ERR_MAX + 96];
	struct km_cluster_member *mem;
	uint32_t nb_mem;
	/* Members whose record says "serving": false (a node that starts: in the table, no
	 * move to it yet), by id and incarnation. */
	struct km_cluster_member *joining;
	uint32_t nb_joining;
	char (*drain)[KM_CLUSTER_ID_MAX + 1];
	uint32_t nb_drain;
	struct placer_rates rates;
	struct km_cluster_move_record *moves;
	uint32_t nb_moves;
	struct drop *bad; /* invalid move records */
	uint32_t nb_bad;
	struct km_cluster_repl **repl; /* the primaries' replication reports */
	int64_t *repl_rev;             /* their keys' mod revisions */
	uint32_t nb_repl;
	struct {
		char id[KM_CLUSTER_ID_MAX + 1];
		int64_t mod_rev;
	} * mkeys; /* every member record's key (valid record or not) */
	uint32_t nb_mkeys;
};

static void
snap_free(struct snap *s)
{
	km_cmap_free(s->map);
	free(s->mem);
	free(s->joining);
	free(s->drain);
	placer_rates_free(&s->rates);
	free(s->moves);
	free(s->bad);
	for (uint32_t i = 0; i < s->nb_repl; i++)
		free(s->repl[i]);
	free(s->repl);
	free(s->repl_rev);
	free(s->mkeys);
	memset(s, 0, sizeof(*s));
}

int
placer_key_relevant(const struct placer_ctx *c, const uint8_t *key, size_t klen)
{
	size_t plen = strlen(c->prefix), i;

	if (klen < plen || memcmp(key, c->prefix, plen) != 0)
		return 0;
	for (i = 0; i < GET_NB; i++) {
		size_t n = strlen(get_names[i]);

		/* map/current exactly; the others as prefixes */
		if (klen - plen >= n && memcmp(key + plen, get_names[i], n) == 0 &&
			(i != GET_MAP || klen - plen == n))
			return 1;
	}
	return 0;
}

/* 1 the first time a bad record of this mod revision is seen (it is logged once). */
static int
first_report(struct placer_ctx *c, int64_t mod_rev)
{
	uint32_t i;

	for (i = 0; i < PLACER_REPORTED_MAX; i++)
		if (c->reported[i] == mod_rev)
			return 0;
	c->reported[c->reported_next] = mod_rev;
	c->reported_next = (c->reported_next + 1) % PLACER_REPORTED_MAX;
	return 1;
}

/* The key's part after prefix + sub as a NUL-terminated string. @return 0 or -1 (too long,
 * empty). */
static int
key_tail(const struct placer_ctx *c, const struct km_etcd_kv *kv, const char *sub, char *out,
	size_t cap)
{
	size_t skip = strlen(c->prefix) + strlen(sub);

	if (kv->klen <= skip || kv->klen - skip >= cap)
		return -1;
	memcpy(out, kv->key + skip, kv->klen - skip);
	out[kv->klen - skip] = '\0';
	return 0;
}

static void key_of(const struct placer_ctx *c, char *buf, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
key_of(const struct placer_ctx *c, char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(buf, cap, "%s", c->prefix);

	va_start(ap, fmt);
	vsnprintf(buf + n, cap - (size_t)n, fmt, ap);
	va_end(ap);
}

/* The map at map/current. */
static void
read_map(struct placer_ctx *c, const struct km_etcd_kv *kv, struct snap *s)
{
	char err[KM_CLUSTER_ERR_MAX];
	int rc;

	s->map_rev = kv->mod_rev;
	rc = km_cmap_decode((const char *)kv->value, kv->vlen, &s->map, err, sizeof(err));
	if (rc == 0)
		rc = placer_map_accept(s->map, c->o, err, sizeof(err));
	if (rc != 0) {
		km_cmap_free(s->map);
		s->map = NULL;
		s->map_refused = 1;
		snprintf(s->map_why, sizeof(s->map_why), "%s",
			rc == -EPROTO ? "a version of the map this placer does not know" : err);
	}
}

static void
read_member(struct placer_ctx *c, const struct km_etcd_kv *kv, struct snap *s)
{
	char id[KM_CLUSTER_ID_MAX + 2], err[KM_CLUSTER_ERR_MAX];

	if (key_tail(c, kv, "members/", id, sizeof(id)) != 0 || !km_cluster_id_valid(id)) {
		snprintf(err, sizeof(err), "the key does not end in a node id");
		goto skipped;
	}
	memcpy(s->mkeys[s->nb_mkeys].id, id, sizeof(s->mkeys[0].id)); /* valid: NUL in it */
	s->mkeys[s->nb_mkeys++].mod_rev = kv->mod_rev;
	if (km_cluster_member_decode(
		    id, kv->value, kv->vlen, &s->mem[s->nb_mem], err, sizeof(err)) == 0) {
		json_t *o = json_loadb((const char *)kv->value, kv->vlen, 0, NULL);

		/* "serving" false: the node has not served yet (absent: an older node, that
		 * registers when it serves). */
		if (json_is_false(json_object_get(o, "serving")))
			s->joining[s->nb_joining++] = s->mem[s->nb_mem];
		json_decref(o);
		s->nb_mem++;
		return;
	}
skipped:
	if (first_report(c, kv->mod_rev))
		placer_log(PLACER_WARNING, "member record %.*s skipped: %s", (int)kv->klen,
			(const char *)kv->key, err);
}

static void
read_drain(struct placer_ctx *c, const struct km_etcd_kv *kv, struct snap *s)
{
	char id[KM_CLUSTER_ID_MAX + 2];

	if (key_tail(c, kv, "drain/", id, sizeof(id)) != 0 || !km_cluster_id_valid(id)) {
		if (first_report(c, kv->mod_rev))
			placer_log(PLACER_WARNING,
				"drain key %.*s ignored: not a node id after drain/", (int)kv->klen,
				(const char *)kv->key);
		return;
	}
	memcpy(s->drain[s->nb_drain++], id, sizeof(s->drain[0]));
}

static int
read_load(struct placer_ctx *c, const struct km_etcd_kv *kv, struct snap *s)
{
	char id[KM_CLUSTER_ID_MAX + 2], err[KM_CLUSTER_ERR_MAX];
	int rc;

	if (key_tail(c, kv, "load/", id, sizeof(id)) != 0 || !km_cluster_id_valid(id)) {
		snprintf(err, sizeof(err), "the key does not end in a node id");
		rc = -EINVAL;
	} else {
		rc = placer_load_decode(
			kv->value, kv->vlen, s->map, id, &s->rates, err, sizeof(err));
	}
	if (rc == -ENOMEM)
		return rc;
	if (rc < 0 && first_report(c, kv->mod_rev))
		placer_log(PLACER_WARNING, "load report %.*s ignored: %s", (int)kv->klen,
			(const char *)kv->key, err);
	return 0;
}

static void
read_repl(struct placer_ctx *c, const struct km_etcd_kv *kv, struct snap *s)
{
	char id[KM_CLUSTER_ID_MAX + 2], err[KM_CLUSTER_ERR_MAX];

	if (key_tail(c, kv, "repl/", id, sizeof(id)) != 0 || !km_cluster_id_valid(id))
		snprintf(err, sizeof(err), "the key does not end in a node id");
	else if (km_cluster_repl_decode(
			 id, kv->value, kv->vlen, &s->repl[s->nb_repl], err, sizeof(err)) == 0) {
		s->repl_rev[s->nb_repl++] = kv->mod_rev;
		return;
	}
	if (first_report(c, kv->mod_rev))
		placer_log(PLACER_WARNING, "replication report %.*s ignored: %s", (int)kv->klen,
			(const char *)kv->key, err);
}

static void
read_move(struct placer_ctx *c, const struct km_etcd_kv *kv, struct snap *s)
{
	char tail[32], err[KM_CLUSTER_ERR_MAX];
	struct km_cluster_move_record *mv = &s->moves[s->nb_moves];
	struct drop *d;
	uint64_t id;

	if (key_tail(c, kv, "moves/", tail, sizeof(tail)) != 0 ||
		km_util_parse_u64(tail, 1, UINT64_MAX, &id) != 0)
		snprintf(err, sizeof(err), "the key does not end in a shard id");
	else if (km_cluster_move_decode(id, kv->value, kv->vlen, mv, err, sizeof(err)) == 0) {
		mv->create_rev = kv->create_rev;
		mv->mod_rev = kv->mod_rev;
		s->nb_moves++;
		return;
	}
	/* Only the placer creates move keys: one it cannot read is deleted. */
	d = &s->bad[s->nb_bad++];
	snprintf(d->key, sizeof(d->key), "%.*s", (int)kv->klen, (const char *)kv->key);
	d->mod_rev = kv->mod_rev;
	snprintf(d->why, sizeof(d->why), "not a move record: %s", err);
}

/* Read the cluster at one revision (one transaction of GETs). */
static int
snap_read(struct placer_ctx *c, struct snap *s)
{
	char keys[GET_NB][PLACER_KEY_MAX];
	struct km_etcd_op ops[GET_NB];
	struct km_etcd_kvs *r = NULL;
	uint32_t n[GET_NB] = {0};
	size_t i;
	int rc;

	memset(s, 0, sizeof(*s));
	for (i = 0; i < GET_NB; i++) {
		key_of(c, keys[i], sizeof(keys[i]), "%s", get_names[i]);
		ops[i] = (struct km_etcd_op){.type = KM_ETCD_OP_GET,
			.key = keys[i],
			.klen = strlen(keys[i]),
			.flags = i == GET_MAP ? 0 : KM_ETCD_PREFIX};
	}
	rc = km_etcd_txn(c->e, NULL, 0, ops, GET_NB, NULL, 0, &s->rev, &r);
	if (rc < 0)
		return rc;
	for (i = 0; i < r->n; i++)
		if (r->kv[i].op < GET_NB)
			n[r->kv[i].op]++;
	s->mem = calloc(n[GET_MEMBERS] + 1, sizeof(*s->mem));
	s->joining = calloc(n[GET_MEMBERS] + 1, sizeof(*s->joining));
	s->drain = calloc(n[GET_DRAIN] + 1, sizeof(*s->drain));
	s->moves = calloc(n[GET_MOVES] + 1, sizeof(*s->moves));
	s->bad = calloc(n[GET_MOVES] + 1, sizeof(*s->bad));
	s->repl = calloc(n[GET_REPL] + 1, sizeof(*s->repl));
	s->repl_rev = calloc(n[GET_REPL] + 1, sizeof(*s->repl_rev));
	s->mkeys = calloc(n[GET_MEMBERS] + 1, sizeof(*s->mkeys));
	if (s->mem == NULL || s->joining == NULL || s->drain == NULL || s->moves == NULL ||
		s->bad == NULL || s->repl == NULL || s->repl_rev == NULL || s->mkeys == NULL) {
		km_etcd_kvs_free(r);
		return -ENOMEM;
	}
	/* The map first: load reports are filtered by it. */
	for (i = 0; i < r->n; i++)
		if (r->kv[i].op == GET_MAP)
			read_map(c, &r->kv[i], s);
	for (i = 0; i < r->n && rc >= 0; i++) {
		const struct km_etcd_kv *kv = &r->kv[i];

		switch (kv->op) {
		case GET_MEMBERS:
			read_member(c, kv, s);
			break;
		case GET_DRAIN:
			read_drain(c, kv, s);
			break;
		case GET_LOAD:
			rc = read_load(c, kv, s);
			break;
		case GET_MOVES:
			read_move(c, kv, s);
			break;
		case GET_REPL:
			read_repl(c, kv, s);
			break;
		default:
			break;
		}
	}
	km_etcd_kvs_free(r);
	if (rc < 0)
		return rc;
	s->nb_mem = placer_members_merge(s->mem, s->nb_mem, s->drain, s->nb_drain);
	return 0;
}

/* 0 while this placer's leader key exists with its creation revision, else -EPERM. */
static int
leader_check(struct placer_ctx *c)
{
	struct km_etcd_kvs *r;
	int rc, ok;

	if (c->lead == NULL)
		return 0;
	rc = km_etcd_get(c->e, c->lead->key, c->lead->klen, 0, &r);
	if (rc < 0)
		return rc;
	ok = rc == 1 && r->kv[0].create_rev == c->lead->rev;
	km_etcd_kvs_free(r);
	return ok ? 0 : -EPERM;
}

/*
 * A transaction guarded by leadership (cmp[0] is filled here) and the caller's compares
 * cmp[1..ncmp-1]. @return 1 done, 0 a compare failed while still leading (read again),
 * -EPERM no longer leading, or an etcd error.
 */
static int
guarded_txn(struct placer_ctx *c, struct km_etcd_cmp *cmp, size_t ncmp,
	const struct km_etcd_op *ops, size_t nops, int64_t *rev)
{
	int rc;

	cmp[0] = (struct km_etcd_cmp){.key = c->lead->key,
		.klen = c->lead->klen,
		.target = KM_ETCD_CREATE,
		.result = KM_ETCD_EQUAL,
		.num = c->lead->rev};
	rc = km_etcd_txn(c->e, cmp, ncmp, ops, nops, NULL, 0, rev, NULL);
	if (rc != 0)
		return rc;
	rc = leader_check(c);
	return rc < 0 ? rc : 0;
}

/*
 * A shard whose move was given up waits a little before it moves again: a copy that fails
 * at once is not retried in a tight loop.
 */
static void
cool_add(struct placer_ctx *c, uint64_t id)
{
	uint64_t ms = c->o->interval_ms * 2u < 2000u ? 2000u : c->o->interval_ms * 2u;

	if (c->nb_cool == PLACER_SEEN_MAX)
		return;
	c->cool[c->nb_cool++] =
		(struct placer_seen){.id = id, .at_ns = km_util_now_ns() + ms * 1000000u};
}

/* Forget the shards that may move again; append the others to flight. */
static uint32_t
cool_list(struct placer_ctx *c, uint64_t now, uint64_t *flight, uint32_t n)
{
	uint32_t i, kept = 0;

	for (i = 0; i < c->nb_cool; i++) {
		if (c->cool[i].at_ns <= now)
			continue;
		c->cool[kept++] = c->cool[i];
		flight[n++] = c->cool[i].id;
	}
	c->nb_cool = kept;
	return n;
}

/* Delete move keys (at most PLACER_MOVES_MAX), each if unchanged since read. */
static int
drop_moves(struct placer_ctx *c, const struct drop *d, uint32_t n)
{
	struct km_etcd_cmp cmp[PLACER_MOVES_MAX + 1] = {0};
	struct km_etcd_op ops[PLACER_MOVES_MAX] = {0};
	uint32_t i;
	int rc;

	if (n > PLACER_MOVES_MAX)
		n = PLACER_MOVES_MAX; /* the rest next round */
	if (c->o->dry_run) {
		for (i = 0; i < n; i++)
			printf("delete %s # %s\n", d[i].key, d[i].why);
		return 1;
	}
	for (i = 0; i < n; i++) {
		cmp[i + 1] = (struct km_etcd_cmp){.key = d[i].key,
			.klen = strlen(d[i].key),
			.target = KM_ETCD_MOD,
			.result = KM_ETCD_EQUAL,
			.num = d[i].mod_rev};
		ops[i] = (struct km_etcd_op){
			.type = KM_ETCD_OP_DELETE, .key = d[i].key, .klen = strlen(d[i].key)};
	}
	rc = guarded_txn(c, cmp, n + 1, ops, n, NULL);
	for (i = 0; rc == 1 && i < n; i++) {
		placer_log(PLACER_WARNING, "%s deleted: %s", d[i].key, d[i].why);
		if (d[i].id != 0)
			cool_add(c, d[i].id);
	}
	return rc;
}

/*
 * Publish m (from the map at map/current's mod revision map_rev, 0: none) with the extra
 * compares and ops (at most PLACER_MOVES_MAX each) in the same transaction.
 * @return 1 published (*rev: its revision), 0 read again, -EPERM, or an etcd error.
 */
static int
publish(struct placer_ctx *c, const struct km_cmap *m, const struct km_cmap *prev, int64_t map_rev,
	const struct km_etcd_cmp *xcmp, const struct km_etcd_op *xops, uint32_t nx, int64_t *rev)
{
	struct km_etcd_cmp cmp[PLACER_MOVES_MAX + 2];
	struct km_etcd_op ops[PLACER_MOVES_MAX + 3];
	char kcur[PLACER_KEY_MAX], kep[PLACER_KEY_MAX], kold[PLACER_KEY_MAX];
	char diff[256], *json = NULL;
	size_t len, nops = 0;
	uint32_t i;
	int rc;

	rc = km_cmap_encode(m, &json, &len);
	if (rc != 0)
		return rc;
	placer_map_diff(prev, m, diff, sizeof(diff));
	key_of(c, kcur, sizeof(kcur), "map/current");
	key_of(c, kep, sizeof(kep), "map/%u", m->epoch);
	if (c->o->dry_run) {
		printf("put %s %s # %s\n", kep, json, diff);
		free(json);
		if (rev != NULL)
			*rev = map_rev;
		return 1;
	}
	cmp[1] = (struct km_etcd_cmp){.key = kcur,
		.klen = strlen(kcur),
		.target = KM_ETCD_MOD,
		.result = KM_ETCD_EQUAL,
		.num = map_rev};
	ops[nops++] = (struct km_etcd_op){.type = KM_ETCD_OP_PUT,
		.key = kep,
		.klen = strlen(kep),
		.value = json,
		.vlen = len};
	ops[nops++] = (struct km_etcd_op){.type = KM_ETCD_OP_PUT,
		.key = kcur,
		.klen = strlen(kcur),
		.value = json,
		.vlen = len};
	if (m->epoch > PLACER_MAPS_KEPT) {
		/* the map that leaves the window of the last PLACER_MAPS_KEPT */
		key_of(c, kold, sizeof(kold), "map/%u", m->epoch - PLACER_MAPS_KEPT);
		ops[nops++] = (struct km_etcd_op){
			.type = KM_ETCD_OP_DELETE, .key = kold, .klen = strlen(kold)};
	}
	for (i = 0; i < nx; i++) {
		cmp[i + 2] = xcmp[i];
		if (xops != NULL) /* NULL: compares only */
			ops[nops++] = xops[i];
	}
	rc = guarded_txn(c, cmp, nx + 2, ops, nops, rev);
	free(json);
	if (rc == 1)
		placer_log(PLACER_NOTICE, "published map epoch %u (%u node%s, %u shards): %s",
			m->epoch, m->nb_nodes, m->nb_nodes == 1 ? "" : "s", m->nb_shards, diff);
	return rc;
}

/* Remember when each move in flight was first seen; forget the ones gone. */
static void
seen_update(struct placer_ctx *c, const struct snap *s, uint64_t now)
{
	struct placer_seen next[PLACER_SEEN_MAX];
	uint32_t i, k, n = 0;

	for (i = 0; i < s->nb_moves && n < PLACER_SEEN_MAX; i++) {
		next[n].id = s->moves[i].id;
		next[n].create_rev = s->moves[i].create_rev;
		next[n].at_ns = now;
		for (k = 0; k < c->nb_seen; k++)
			if (c->seen[k].id == next[n].id &&
				c->seen[k].create_rev == next[n].create_rev)
				next[n].at_ns = c->seen[k].at_ns;
		n++;
	}
	memcpy(c->seen, next, sizeof(next[0]) * n);
	c->nb_seen = n;
}

static uint64_t
seen_age_s(const struct placer_ctx *c, const struct km_cluster_move_record *mv, uint64_t now)
{
	uint32_t k;

	for (k = 0; k < c->nb_seen; k++)
		if (c->seen[k].id == mv->id && c->seen[k].create_rev == mv->create_rev)
			return (now - c->seen[k].at_ns) / 1000000000u;
	return 0;
}

/* Whether node id's live member serves (its record does not say "serving": false). */
static int
member_serving(const struct snap *s, const char *id)
{
	uint32_t i, k;

	for (i = 0; i < s->nb_mem; i++)
		if (strcmp(s->mem[i].id, id) == 0)
			for (k = 0; k < s->nb_joining; k++)
				if (strcmp(s->joining[k].id, id) == 0 &&
					s->joining[k].incarnation == s->mem[i].incarnation)
					return 0;
	return 1;
}

/* Leave out the cross-node moves to a node that does not serve yet (it would refuse the
 * stream): they are decided again once it serves. @return the moves left out. */
static uint32_t
plan_serving_only(const struct snap *s, struct placer_plan *p)
{
	uint32_t i, n = 0;

	for (i = 0; i < p->nb_start; i++)
		if (member_serving(s, p->base->nodes[p->start[i].to_node].id))
			p->start[n++] = p->start[i];
	i = p->nb_start - n;
	p->nb_start = n;
	return i;
}

static int
member_live(const struct snap *s, const char *id)
{
	uint32_t i;

	for (i = 0; i < s->nb_mem; i++)
		if (strcmp(s->mem[i].id, id) == 0)
			return 1;
	return 0;
}

/* The incarnation of live member id, 0: none. */
static uint64_t
member_inc(const struct snap *s, const char *id)
{
	uint32_t i;

	for (i = 0; i < s->nb_mem; i++)
		if (strcmp(s->mem[i].id, id) == 0)
			return s->mem[i].incarnation;
	return 0;
}

/*
 * Complete the ready moves: the map with each applied, one new epoch, the move keys
 * deleted, in one transaction. @return as publish().
 */
static int
complete_moves(struct placer_ctx *c, const struct snap *s,
	const struct km_cluster_move_record *const *mv, const struct km_cluster_move *cm,
	uint32_t n)
{
	struct km_etcd_cmp cmp[PLACER_MOVES_MAX] = {0};
	struct km_etcd_op ops[PLACER_MOVES_MAX] = {0};
	char keys[PLACER_MOVES_MAX][PLACER_KEY_MAX];
	struct km_cmap *next, *t;
	uint32_t i;
	int rc;

	if (n > PLACER_MOVES_MAX)
		n = PLACER_MOVES_MAX;
	next = km_cmap_dup(s->map);
	if (next == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		rc = km_cmap_move_apply(next, &cm[i], &t);
		if (rc != 0) {
			placer_log(PLACER_ERR,
				"shard %" PRIu64 ": the ready move does not apply: %s", cm[i].id,
				strerror(-rc));
			km_cmap_free(next);
			return rc;
		}
		km_cmap_free(next);
		next = t;
		key_of(c, keys[i], sizeof(keys[i]), "moves/%" PRIu64, mv[i]->id);
		cmp[i] = (struct km_etcd_cmp){.key = keys[i],
			.klen = strlen(keys[i]),
			.target = KM_ETCD_MOD,
			.result = KM_ETCD_EQUAL,
			.num = mv[i]->mod_rev};
		ops[i] = (struct km_etcd_op){
			.type = KM_ETCD_OP_DELETE, .key = keys[i], .klen = strlen(keys[i])};
	}
	next->epoch = s->map->epoch + 1; /* one epoch for them all */
	rc = publish(c, next, s->map, s->map_rev, cmp, ops, n, NULL);
	km_cmap_free(next);
	for (i = 0; rc == 1 && i < n; i++) {
		if (c->o->dry_run)
			printf("delete %s # ready: completed\n", keys[i]);
		else
			/* the line ends with the target: tools/bench/cluster counts by it */
			placer_log(PLACER_NOTICE, "shard %" PRIu64 " moved from node %s to node %s",
				mv[i]->id, mv[i]->from, mv[i]->to);
	}
	return rc;
}

static const char *
reason_name(uint8_t r)
{
	switch (r) {
	case KM_CLUSTER_DRAIN:
		return "drain";
	case KM_CLUSTER_SHARE:
		return "fair share";
	case KM_CLUSTER_LOAD:
		return "load";
	default:
		return "unknown";
	}
}

/* Put the move keys of the plan, against base published at map/current revision map_rev. */
static int
start_moves(struct placer_ctx *c, const struct placer_plan *p, int64_t map_rev)
{
	struct km_etcd_cmp cmp[PLACER_MOVES_MAX + 2];
	struct km_etcd_op ops[PLACER_MOVES_MAX];
	char keys[PLACER_MOVES_MAX][PLACER_KEY_MAX], *vals[PLACER_MOVES_MAX] = {NULL};
	char kcur[PLACER_KEY_MAX];
	uint32_t i, n = p->nb_start < PLACER_MOVES_MAX ? p->nb_start : PLACER_MOVES_MAX;
	int rc = 0;

	key_of(c, kcur, sizeof(kcur), "map/current");
	cmp[1] = (struct km_etcd_cmp){.key = kcur,
		.klen = strlen(kcur),
		.target = KM_ETCD_MOD,
		.result = KM_ETCD_EQUAL,
		.num = map_rev};
	for (i = 0; i < n; i++) {
		const struct km_cluster_move *cm = &p->start[i];
		struct km_cluster_move_record mv = {.id = cm->id,
			.epoch = p->base->epoch,
			.to_worker = cm->to_worker,
			.state = KM_CLUSTER_MOVE_COPY};

		snprintf(mv.from, sizeof(mv.from), "%s", p->base->nodes[cm->from_node].id);
		snprintf(mv.to, sizeof(mv.to), "%s", p->base->nodes[cm->to_node].id);
		rc = km_cluster_move_encode(&mv, &vals[i]);
		if (rc != 0)
			goto out;
		key_of(c, keys[i], sizeof(keys[i]), "moves/%" PRIu64, cm->id);
		cmp[i + 2] = (struct km_etcd_cmp){.key = keys[i],
			.klen = strlen(keys[i]),
			.target = KM_ETCD_CREATE,
			.result = KM_ETCD_EQUAL,
			.num = 0};
		ops[i] = (struct km_etcd_op){.type = KM_ETCD_OP_PUT,
			.key = keys[i],
			.klen = strlen(keys[i]),
			.value = vals[i],
			.vlen = strlen(vals[i])};
	}
	if (c->o->dry_run) {
		for (i = 0; i < n; i++)
			printf("put %s %s # %s\n", keys[i], vals[i],
				reason_name(p->start[i].reason));
		rc = 1;
		goto out;
	}
	rc = guarded_txn(c, cmp, n + 2, ops, n, NULL);
	for (i = 0; rc == 1 && i < n; i++) {
		const struct km_cluster_move *cm = &p->start[i];

		placer_log(PLACER_NOTICE,
			"move of shard %" PRIu64 " from node %s (worker %u) to node %s (worker %u) "
			"started (%s)",
			cm->id, p->base->nodes[cm->from_node].id, cm->from_worker,
			p->base->nodes[cm->to_node].id, cm->to_worker, reason_name(cm->reason));
	}
out:
	for (i = 0; i < n; i++)
		free(vals[i]);
	return rc;
}

/*
 * No map/current: the highest epoch among map/<epoch> (a new first map continues after
 * it), and the keys older than the window kept are deleted.
 */
static int
first_epoch(struct placer_ctx *c, uint32_t *out)
{
	struct km_etcd_kvs *r = NULL;
	struct drop *old = NULL;
	char pre[PLACER_KEY_MAX], tail[32];
	uint64_t max = 0, v;
	uint32_t nb_old = 0;
	size_t i;
	int rc;

	key_of(c, pre, sizeof(pre), "map/");
	rc = km_etcd_get(c->e, pre, strlen(pre), KM_ETCD_PREFIX, &r);
	if (rc < 0)
		return rc;
	for (i = 0; i < r->n; i++)
		if (key_tail(c, &r->kv[i], "map/", tail, sizeof(tail)) == 0 &&
			km_util_parse_u64(tail, 1, UINT32_MAX, &v) == 0 && v > max)
			max = v;
	if (max == UINT32_MAX) {
		km_etcd_kvs_free(r);
		placer_log(PLACER_ERR, "%smap/%" PRIu64 " exists: the epoch cannot grow", c->prefix,
			max);
		return -EOVERFLOW;
	}
	*out = (uint32_t)max + 1;
	if (max > 0)
		placer_log(PLACER_NOTICE,
			"no %smap/current: the first map continues after epoch %" PRIu64, c->prefix,
			max);
	old = calloc(r->n + 1, sizeof(*old));
	if (old == NULL) {
		km_etcd_kvs_free(r);
		return -ENOMEM;
	}
	for (i = 0; i < r->n; i++)
		if (key_tail(c, &r->kv[i], "map/", tail, sizeof(tail)) == 0 &&
			km_util_parse_u64(tail, 1, UINT32_MAX, &v) == 0 &&
			v + PLACER_MAPS_KEPT <= max + 1) {
			snprintf(old[nb_old].key, sizeof(old[0].key), "%.*s", (int)r->kv[i].klen,
				(const char *)r->kv[i].key);
			old[nb_old].mod_rev = r->kv[i].mod_rev;
			snprintf(old[nb_old].why, sizeof(old[0].why), "older than the last %u maps",
				PLACER_MAPS_KEPT);
			nb_old++;
		}
	km_etcd_kvs_free(r);
	for (i = 0, rc = 1; i < nb_old && rc == 1; i += PLACER_MOVES_MAX)
		rc = drop_moves(c, old + i,
			nb_old - (uint32_t)i < PLACER_MOVES_MAX ? nb_old - (uint32_t)i
								: PLACER_MOVES_MAX);
	free(old);
	return rc < 0 ? rc : 0;
}

/*
 * Decide on the snapshot and act on it. @return 1 (something was published: read again),
 * 0, -EPERM, or an etcd error.
 */
static int
decide(struct placer_ctx *c, const struct snap *s, const uint64_t *flight, uint32_t nb_flight)
{
	const struct km_cluster_params p = {
		.initial_shards = c->o->shards,
		.route_sep = c->o->route_sep,
		.route_depth = c->o->route_depth,
		.max_moves = c->o->max_moves,
		.balance_pct = c->o->balance_pct,
		.min_rate = c->o->min_rate,
	};
	struct km_cluster_decision d = {0};
	struct placer_plan plan = {0};
	char err[KM_CLUSTER_ERR_MAX] = "";
	uint32_t i, first = 0, active = 0;
	int64_t map_rev = s->map_rev;
	int rc;

	for (i = 0; i < s->nb_mem; i++)
		active += s->mem[i].state == KM_CMAP_ACTIVE;
	if (s->map == NULL && active == 0) {
		if (!c->waiting_logged)
			placer_log(
				PLACER_NOTICE, "no active member yet: the first map waits for one");
		c->waiting_logged = 1;
		return 0;
	}
	c->waiting_logged = 0;
	rc = km_cluster_decide(
		&p, s->map, s->mem, s->nb_mem, s->rates.r, s->rates.n, &d, err, sizeof(err));
	if (d.nb_skipped != 0 && strcmp(d.skipped, c->skipped) != 0)
		placer_log(PLACER_WARNING, "%u member(s) left out of the map: %s", d.nb_skipped,
			d.skipped);
	snprintf(c->skipped, sizeof(c->skipped), "%s", d.nb_skipped != 0 ? d.skipped : "");
	if (rc != 0) {
		placer_log(PLACER_ERR, "no decision: %s", err[0] != '\0' ? err : strerror(-rc));
		goto out;
	}
	if (s->map == NULL && d.map != NULL) {
		rc = first_epoch(c, &first);
		if (rc != 0)
			goto out;
	}
	rc = placer_plan(
		s->map, &d, flight, nb_flight, c->o->max_moves, first, &plan, err, sizeof(err));
	if (rc != 0) {
		placer_log(PLACER_ERR, "no plan: %s", err);
		goto out;
	}
	if (plan_serving_only(s, &plan) > 0)
		placer_log(PLACER_DEBUG, "moves to nodes that do not serve yet put off");
	if (plan.map != NULL) {
		rc = publish(c, plan.map, s->map, s->map_rev, NULL, NULL, 0, &map_rev);
		if (rc != 1)
			goto out;
		if (plan.nb_local > 0)
			placer_log(PLACER_INFO,
				"%u shard(s) handed over between workers of one node",
				plan.nb_local);
	}
	rc = plan.map != NULL;
	if (plan.nb_start > 0) {
		rc = start_moves(c, &plan, map_rev);
		if (rc == 0)
			rc = 1; /* something changed meanwhile: read again */
	}
out:
	placer_plan_free(&plan);
	km_cluster_decision_free(&d);
	return rc;
}

/*
 * The replica rules (km_cluster_replicas(): failover, the in-sync set, re-replication) on
 * the map read, before anything else is decided: a failover waits for nothing.
 * @return 1 (a map was published: read again), 0 (nothing to change), or -errno.
 */
static int
replicas(struct placer_ctx *c, const struct snap *s)
{
	struct km_cluster_repl_changes ch;
	struct km_cmap *next = NULL;
	unsigned int copies = c->o->replicas;
	uint32_t i;
	int rc;

	if (s->map == NULL)
		return 0;
	if (copies == 0) {
		copies = 1;
		for (i = 0; i < s->nb_mem; i++)
			if (s->mem[i].replicas > copies)
				copies = s->mem[i].replicas;
	}
	rc = km_cluster_replicas(s->map, s->mem, s->nb_mem,
		(const struct km_cluster_repl *const *)s->repl, s->nb_repl, copies, &next, &ch);
	if (rc <= 0) {
		if (rc < 0)
			placer_log(PLACER_ERR, "replicas: %s", strerror(-rc));
		return rc;
	}
	if (ch.failovers != 0)
		placer_log(PLACER_NOTICE, "%u shard(s) failed over to an in-sync replica (%s)",
			ch.failovers, ch.first);
	if (ch.in_sync + ch.out_of_sync + ch.added + ch.dropped != 0)
		placer_log(PLACER_INFO,
			"replicas: %u in sync, %u out of sync, %u added, %u dropped", ch.in_sync,
			ch.out_of_sync, ch.added, ch.dropped);
	/*
	 * Only while every report read is still as read: a primary whose stream stopped
	 * being caught up waits for that replica until its report says so, so an older
	 * report must not mark the replica in sync after that (docs/cluster.md 7). And only
	 * while the member record of every node of the map is as read: a node whose lease
	 * expired and that registered again since reads the map after its registration
	 * before it serves its replicated shards again, so a failover decided on its absence
	 * is either published before that read (it sees it) or not at all.
	 */
	{
		uint32_t n = s->nb_repl < PLACER_MOVES_MAX / 2 ? s->nb_repl : PLACER_MOVES_MAX / 2;
		uint32_t nn = s->map->nb_nodes, k;
		struct km_etcd_cmp *cmp = calloc(n + nn + 1, sizeof(*cmp));
		char(*keys)[PLACER_KEY_MAX] = calloc(n + nn + 1, sizeof(*keys));

		if (cmp == NULL || keys == NULL) {
			free(cmp);
			free(keys);
			km_cmap_free(next);
			return -ENOMEM;
		}
		for (i = 0; i < n; i++) {
			key_of(c, keys[i], sizeof(keys[i]), "repl/%s", s->repl[i]->node);
			cmp[i] = (struct km_etcd_cmp){.key = keys[i],
				.klen = strlen(keys[i]),
				.target = KM_ETCD_MOD,
				.result = KM_ETCD_EQUAL,
				.num = s->repl_rev[i]};
		}
		for (i = 0; i < nn; i++) {
			int64_t rev = 0;

			for (k = 0; k < s->nb_mkeys; k++)
				if (strcmp(s->mkeys[k].id, s->map->nodes[i].id) == 0)
					rev = s->mkeys[k].mod_rev;
			key_of(c, keys[n + i], sizeof(keys[0]), "members/%s", s->map->nodes[i].id);
			cmp[n + i] = (struct km_etcd_cmp){.key = keys[n + i],
				.klen = strlen(keys[n + i]),
				.target = KM_ETCD_MOD,
				.result = KM_ETCD_EQUAL,
				.num = rev};
		}
		rc = publish(c, next, s->map, s->map_rev, cmp, NULL, n + nn, NULL);
		free(cmp);
		free(keys);
	}
	km_cmap_free(next);
	return rc < 0 ? rc : 1;
}

/* One pass: read, settle the moves, decide. @return as decide(). */
static int
pass(struct placer_ctx *c)
{
	struct snap s;
	const struct km_cluster_move_record **ready = NULL;
	struct km_cluster_move *cm = NULL;
	uint64_t *flight = NULL, now = km_util_now_ns();
	struct drop *drops = NULL;
	uint32_t i, nb_ready = 0, nb_flight = 0, nb_drops = 0;
	int rc;

	rc = snap_read(c, &s);
	if (rc != 0)
		goto out;
	c->snap_rev = s.rev;
	if (s.map_refused) {
		/* Nothing is written until an operator fixes map/current: logged each interval. */
		if (now - c->refused_log_ns >= (uint64_t)c->o->interval_ms * 1000000u) {
			placer_log(PLACER_ERR,
				"%smap/current (revision %" PRId64 ") refused: %s; nothing is "
				"published until an operator fixes it",
				c->prefix, s.map_rev, s.map_why);
			c->refused_log_ns = now;
		}
		rc = 0;
		goto out;
	}
	c->refused_log_ns = 0;
	seen_update(c, &s, now);
	ready = calloc(s.nb_moves + 1, sizeof(*ready));
	cm = calloc(s.nb_moves + 1, sizeof(*cm));
	flight = calloc(s.nb_moves + PLACER_SEEN_MAX + 1, sizeof(*flight));
	drops = calloc(s.nb_moves + s.nb_bad + 1, sizeof(*drops));
	if (ready == NULL || cm == NULL || flight == NULL || drops == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	memcpy(drops, s.bad, s.nb_bad * sizeof(*drops));
	nb_drops = s.nb_bad;
	for (i = 0; i < s.nb_moves; i++) {
		const struct km_cluster_move_record *mv = &s.moves[i];
		struct drop *d = &drops[nb_drops];
		char why[KM_CLUSTER_ERR_MAX];

		switch (placer_move_judge(s.map, mv, member_live(&s, mv->from),
			member_inc(&s, mv->to), seen_age_s(c, mv, now), c->o->move_timeout_s,
			&cm[nb_ready], why, sizeof(why))) {
		case PLACER_KEEP:
			flight[nb_flight++] = mv->id;
			break;
		case PLACER_COMPLETE:
			ready[nb_ready++] = mv;
			break;
		case PLACER_DROP:
			d->id = mv->id;
			key_of(c, d->key, sizeof(d->key), "moves/%" PRIu64, mv->id);
			d->mod_rev = mv->mod_rev;
			snprintf(d->why, sizeof(d->why),
				"move of shard %" PRIu64 " from %s to %s given up: %s", mv->id,
				mv->from, mv->to, why);
			nb_drops++;
			break;
		}
	}
	if (nb_drops > 0) {
		rc = drop_moves(c, drops, nb_drops);
		if (rc < 0)
			goto out;
	}
	if (nb_ready > 0) {
		/* The map changes: decide on the next read. */
		rc = complete_moves(c, &s, ready, cm, nb_ready);
		if (rc < 0 || !c->o->dry_run) {
			rc = rc < 0 ? rc : 1;
			goto out;
		}
		for (i = 0; i < nb_ready; i++)
			flight[nb_flight++] = ready[i]->id; /* dry run: decide on the map as read */
	}
	rc = replicas(c, &s);
	if (rc != 0 && !c->o->dry_run)
		goto out;
	nb_flight = cool_list(c, now, flight, nb_flight);
	rc = decide(c, &s, flight, nb_flight);
out:
	free(ready);
	free(cm);
	free(flight);
	free(drops);
	snap_free(&s);
	return rc;
}

int
placer_round(struct placer_ctx *c)
{
	int rc = 1, n;

	/* A few passes: a completed move or a new table lets the next pass start moves. */
	for (n = 0; n < 4 && rc == 1; n++) {
		rc = pass(c);
		if (c->o->dry_run)
			break;
	}
	return rc < 0 ? rc : 0;
}
