/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The partition shifter in lib/proc (proc_shift.c): two processors (workers 0 and 1) in
 * one thread, their hand-off rings as FIFO queues that carry the mark and the move as
 * keymapd's worker.c does. A seeded sequential client runs GET, PUT, CAS and DEL over the
 * keys of a few entities while overrides are added, settled (when both workers are
 * clean) and removed, and the background passes run between the hops of each request:
 * every reply is checked against a reference map. Then the background pass over shards of
 * 20000 entries: bounded steps, every key moved, clean only when nothing is left, and a
 * store replaced under the pass's cursor. Deterministic, bounded.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <km_proc.h>

#define NKEYS 48 /* e<0..3>/k<0..11> */
#define QMAX  4096
#define SRC   0xc6336401abcdULL

static uint64_t
rng(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* One hand-off in flight: a datagram (or none: a move alone), its mark, its move. */
struct item {
	uint8_t buf[KM_DGRAM_MAX];
	size_t len;
	uint8_t mark;
	struct km_shift_move *mv;
	int client; /* the client's request (its reply ends the op) */
};

struct env {
	struct km_shardmap *map;
	struct km_proc *proc[2];
	struct item *q[2]; /* FIFO per worker */
	unsigned int head[2], n[2];
	uint64_t seed;
	/* the reference */
	int present[NKEYS];
	uint64_t version[NKEYS];
	char value[NKEYS][16];
	uint64_t req_id;
};

static void
publish(struct env *e, struct km_shardmap *m)
{
	km_shardmap_free(e->map);
	e->map = m;
}

static void
push(struct env *e, unsigned int w, const uint8_t *buf, size_t len, uint8_t mark,
	struct km_shift_move *mv, int client)
{
	struct item *it;

	assert_true(e->n[w] < QMAX);
	it = &e->q[w][(e->head[w] + e->n[w]++) % QMAX];
	if (len != 0)
		memcpy(it->buf, buf, len);
	it->len = len;
	it->mark = mark;
	it->mv = mv;
	it->client = client;
}

/* A background step of worker w: its moves go to the owners' queues. */
static void
step(struct env *e, unsigned int w)
{
	struct km_shift_move *mv[8];
	uint16_t to[8];
	unsigned int k, n;
	uint64_t before;

	if (!km_proc_shift_pending(e->proc[w], e->map))
		return;
	before = km_proc_counters(e->proc[w])->shift_walk_entries;
	n = km_proc_shift_step(e->proc[w], e->map, mv, to, 8);
	/* Every step is a bounded slice (the stores here never hold a cluster that long). */
	assert_true(
		km_proc_counters(e->proc[w])->shift_walk_entries - before <= KM_PROC_SHIFT_BUDGET);
	for (k = 0; k < n; k++)
		push(e, to[k], NULL, 0, KM_HAND_MOVE, mv[k], 0);
}

/*
 * Take one item of worker w's queue and run it. @return 1 and the reply in out (*olen)
 * when it was the client's request and it was answered, else 0.
 */
static int
pump(struct env *e, unsigned int w, uint8_t *out, size_t *olen)
{
	struct item it = e->q[w][e->head[w]];
	struct km_proc_req r;

	e->head[w] = (e->head[w] + 1) % QMAX;
	e->n[w]--;
	if (it.mark == KM_HAND_MOVE) {
		uint16_t owner;
		int rc = km_proc_shift_apply(e->proc[w], e->map, it.mv, &owner);

		if (rc == 1)
			push(e, owner, NULL, 0, KM_HAND_MOVE, it.mv, 0);
		assert_true(rc == 0 || rc == 1);
		return 0;
	}
	r = (struct km_proc_req){.buf = it.buf,
		.len = it.len,
		.cap = sizeof(it.buf),
		.src = SRC,
		.port_worker = (int16_t)w,
		.handed = it.mark,
		.move = it.mv};
	km_proc_rx(e->proc[w], e->map, &r);
	if (r.verdict == KM_PROC_HANDOFF) {
		push(e, r.owner, it.buf, it.len, r.hand_mark ? r.hand_mark : KM_HAND_PLAIN, r.move,
			it.client);
		return 0;
	}
	assert_int_equal(r.verdict, KM_PROC_REPLY);
	assert_true(it.client);
	memcpy(out, it.buf, r.reply_len);
	*olen = r.reply_len;
	return 1;
}

/* Send datagram buf to worker `to` (as a client would: steered or not) and run
 * everything, background passes included, in a seeded order until its reply. */
static struct km_msg
send_raw(struct env *e, unsigned int to, const uint8_t *buf, size_t len, uint8_t *out)
{
	struct km_msg m;
	unsigned int guard;
	size_t olen = 0;

	push(e, to, buf, len, 0, NULL, 1);
	for (guard = 0; guard < 100000; guard++) {
		unsigned int w = (unsigned int)(rng(&e->seed) & 1);

		if (rng(&e->seed) % 3 == 0)
			step(e, w);
		if (e->n[w] == 0)
			w ^= 1;
		if (e->n[w] != 0 && pump(e, w, out, &olen)) {
			assert_int_equal(km_reply_parse(out, olen, &m), 0);
			return m;
		}
	}
	fail_msg("no reply");
	return m;
}

/* Build a request (a new req_id) and send it as send_raw() does; the datagram in buf
 * (*len) when buf is given, for a retry. */
static struct km_msg
call_keep(struct env *e, unsigned int to, uint8_t op, const char *key, const char *val,
	uint64_t version, uint8_t *out, uint8_t *buf, size_t *len)
{
	struct km_hdr h = {
		.magic = KM_PROTO_MAGIC,
		.proto_ver = KM_PROTO_VERSION,
		.op = op,
		.key_len = (uint16_t)strlen(key),
		.val_len = val == NULL ? 0 : (uint32_t)strlen(val),
		.req_id = ++e->req_id,
		.version = version,
		.epoch = km_shardmap_epoch(e->map),
	};
	uint8_t own[KM_DGRAM_MAX];
	size_t n;

	if (buf == NULL)
		buf = own;
	n = km_msg_build(buf, KM_DGRAM_MAX, &h, key, val);
	assert_true(n > 0);
	if (len != NULL)
		*len = n;
	return send_raw(e, to, buf, n, out);
}

static struct km_msg
call(struct env *e, unsigned int to, uint8_t op, const char *key, const char *val, uint64_t version,
	uint8_t *out)
{
	return call_keep(e, to, op, key, val, version, out, NULL, NULL);
}

static void
key_name(unsigned int i, char *k, size_t cap)
{
	snprintf(k, cap, "e%u/k%u", i / 12, i % 12);
}

/* Run background passes (and the moves they send) until both workers are clean. */
static void
drain_clean(struct env *e)
{
	uint8_t out[KM_DGRAM_MAX];
	size_t olen;
	unsigned int guard, w;

	for (guard = 0; guard < 100000; guard++) {
		for (w = 0; w < 2; w++) {
			step(e, w);
			while (e->n[w] != 0)
				assert_false(pump(e, w, out, &olen));
		}
		if (km_proc_shift_clean(e->proc[0]) == km_shardmap_epoch(e->map) &&
			km_proc_shift_clean(e->proc[1]) == km_shardmap_epoch(e->map))
			return;
	}
	fail_msg("never clean");
}

/* nb_shards shards on two workers, every shard added to its owner, the queues empty. */
static struct env *
env_new(uint32_t nb_shards, uint64_t seed)
{
	struct km_shardmap_params mp = {.nb_shards = nb_shards,
		.nb_workers = 2,
		.udp_port_base = 7070,
		.route_sep = '/',
		.route_depth = 1};
	struct km_proc_params pp = {.value_max = 1000, .store_driver = "mem", .version_base = 1};
	struct env *e = calloc(1, sizeof(*e));
	unsigned int i, w;

	assert_non_null(e);
	e->seed = seed;
	assert_int_equal(km_shardmap_create(&mp, &e->map), 0);
	for (w = 0; w < 2; w++) {
		pp.worker = (uint16_t)w;
		assert_int_equal(km_proc_create(&pp, &e->proc[w]), 0);
		e->q[w] = calloc(QMAX, sizeof(struct item));
		assert_non_null(e->q[w]);
	}
	for (i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		const struct km_shard *s = km_shardmap_shard_at(e->map, i);

		assert_int_equal(km_proc_shard_add(e->proc[km_shard_owner(s)], km_shard_id(s)), 0);
	}
	return e;
}

static void
env_free(struct env *e)
{
	unsigned int w;

	for (w = 0; w < 2; w++) {
		while (e->n[w] != 0) {
			km_proc_shift_free(e->q[w][e->head[w]].mv);
			e->head[w] = (e->head[w] + 1) % QMAX;
			e->n[w]--;
		}
		km_proc_destroy(e->proc[w]);
		free(e->q[w]);
	}
	km_shardmap_free(e->map);
	free(e);
}

static void
test_shift_model(void **state)
{
	struct env *e = env_new(16, 0x5eed);
	uint8_t out[KM_DGRAM_MAX];
	struct km_shardmap *m;
	unsigned int op, i, w, n_ovr = 0;
	uint64_t fallback = 0, moved = 0;
	char key[16], part[8];

	(void)state;
	for (op = 0; op < 6000; op++) {
		uint64_t r = rng(&e->seed);
		unsigned int k = (unsigned int)(r % NKEYS), to;
		struct km_shardmap_route rt;
		struct km_msg rep;
		char val[16];

		/* Every 150 ops an override changes: add (e0..e3), settle when clean, remove. */
		if (op % 150 == 149) {
			snprintf(part, sizeof(part), "e%u", (op / 150) % 4);
			m = NULL;
			if (km_shardmap_override_add(e->map, (const uint8_t *)part, 2, 1, &m) == 0)
				n_ovr++;
			/* Already overridden: undo one that is not being undone. */
			for (i = 0; m == NULL && i < km_shardmap_nb_overrides(e->map); i++)
				if (km_shardmap_override_at(e->map, i)->state != KM_OVR_REVERTING)
					assert_int_equal(
						km_shardmap_override_remove(e->map,
							km_shardmap_override_at(e->map, i)->hash,
							&m),
						0);
			if (m != NULL) {
				/* As keymapd does before a routing change: versions above all. */
				uint64_t v = km_proc_version_last(e->proc[0]);

				if (km_proc_version_last(e->proc[1]) > v)
					v = km_proc_version_last(e->proc[1]);
				km_proc_version_floor(e->proc[0], v + 1);
				km_proc_version_floor(e->proc[1], v + 1);
			}
			if (m != NULL)
				publish(e, m);
		}
		if (op % 150 == 75 && km_shardmap_nb_overrides(e->map) != 0 && (r >> 40) % 2 == 0) {
			/* settle what can be: both workers clean under this map */
			drain_clean(e);
			while (km_shardmap_nb_overrides(e->map) != 0) {
				const struct km_override_info *o = NULL;

				for (i = 0; i < km_shardmap_nb_overrides(e->map); i++)
					if (km_shardmap_override_at(e->map, i)->state !=
						KM_OVR_SETTLED)
						o = km_shardmap_override_at(e->map, i);
				if (o == NULL)
					break;
				assert_int_equal(
					km_shardmap_override_settle(e->map, o->hash, &m), 0);
				publish(e, m);
			}
		}
		key_name(k, key, sizeof(key));
		/* A steered client most of the time, an unsteered one (worker 0) otherwise. */
		assert_int_equal(
			km_shardmap_route(e->map, (const uint8_t *)key, strlen(key), &rt), 0);
		to = (r >> 8) % 4 == 0 ? 0 : rt.owner;
		switch ((r >> 16) % 4) {
		case 0:
		case 1:
			rep = call(e, to, KM_OP_GET, key, NULL, 0, out);
			if (e->present[k]) {
				assert_int_equal(rep.hdr.status, KM_ST_OK);
				assert_int_equal(rep.hdr.version, e->version[k]);
				assert_int_equal(rep.hdr.val_len, strlen(e->value[k]));
				assert_memory_equal(rep.val, e->value[k], rep.hdr.val_len);
			} else {
				assert_int_equal(rep.hdr.status, KM_ST_NOT_FOUND);
			}
			break;
		case 2:
			snprintf(val, sizeof(val), "v%u", op);
			rep = call(e, to, KM_OP_PUT, key, val, 0, out);
			assert_int_equal(rep.hdr.status, KM_ST_OK);
			/* A moved entry keeps its version and its new store issues versions above
			 * it; a key deleted in its old place and created in its new one too. */
			assert_true(rep.hdr.version > e->version[k]);
			e->present[k] = 1;
			e->version[k] = rep.hdr.version;
			memcpy(e->value[k], val, sizeof(val));
			break;
		default:
			if ((r >> 24) % 2 == 0) {
				rep = call(e, to, KM_OP_DEL, key, NULL, 0, out);
				assert_int_equal(
					rep.hdr.status, e->present[k] ? KM_ST_OK : KM_ST_NOT_FOUND);
				e->present[k] = 0;
			} else {
				snprintf(val, sizeof(val), "c%u", op);
				rep = call(e, to, KM_OP_CAS, key, val,
					e->present[k] ? e->version[k] : 0, out);
				assert_int_equal(rep.hdr.status, KM_ST_OK);
				assert_true(rep.hdr.version > e->version[k]);
				e->present[k] = 1;
				e->version[k] = rep.hdr.version;
				memcpy(e->value[k], val, sizeof(val));
			}
			break;
		}
	}
	for (w = 0; w < 2; w++) {
		fallback += km_proc_counters(e->proc[w])->shift_fallback_reads;
		moved += km_proc_counters(e->proc[w])->shift_moved_keys;
	}
	/* The mechanisms under test really ran. */
	assert_true(n_ovr >= 10);
	assert_true(fallback > 0);
	assert_true(moved > 50);
	print_message("overrides %u, fallback reads %llu, keys moved %llu\n", n_ovr,
		(unsigned long long)fallback, (unsigned long long)moved);
	env_free(e);
}

/* ---- the background pass over large shards ---- */

#define BIG_ENTRIES 20000 /* entries of the shard holding e0 */
#define E0_KEYS     4000  /* e0/k<i>, the part an override spreads */

/* Two shards, two workers, every shard added to its owner; *old: the shard holding e0. */
static struct env *
big_env(const struct km_shard **old)
{
	struct env *e = env_new(2, 0xb16);
	struct km_shardmap_route rt;

	assert_int_equal(km_shardmap_route(e->map, (const uint8_t *)"e0/k0", 5, &rt), 0);
	*old = rt.shard;
	return e;
}

/* The store of the shard key routes to under the current map. */
static struct km_store *
store_of(struct env *e, const char *key, uint64_t *id)
{
	struct km_shardmap_route rt;

	assert_int_equal(km_shardmap_route(e->map, (const uint8_t *)key, strlen(key), &rt), 0);
	*id = km_shard_id(rt.shard);
	return km_proc_shard_store(e->proc[km_shard_owner(rt.shard)], *id);
}

static void
put_direct(struct km_store *s, const char *key, const char *val, uint64_t *version)
{
	struct km_key k = {.data = (const uint8_t *)key, .len = (uint16_t)strlen(key)};
	uint64_t v;

	k.hash = km_key_hash(k.data, k.len);
	assert_int_equal(km_store_put(s, &k, val, (uint32_t)strlen(val), KM_VERSION_ANY, 0, &v), 0);
	if (version != NULL)
		*version = v;
}

/* Add an override of e0 (extra 1) and publish it, versions raised first as keymapd does. */
static void
override_e0(struct env *e)
{
	struct km_shardmap *m = NULL;
	uint64_t v = km_proc_version_last(e->proc[0]);

	assert_int_equal(km_shardmap_override_add(e->map, (const uint8_t *)"e0", 2, 1, &m), 0);
	if (km_proc_version_last(e->proc[1]) > v)
		v = km_proc_version_last(e->proc[1]);
	km_proc_version_floor(e->proc[0], v + 1);
	km_proc_version_floor(e->proc[1], v + 1);
	publish(e, m);
}

struct stale_ctx {
	const struct km_shardmap *map;
	uint64_t id;
	uint64_t n;
};

static int
stale_one(void *arg, const struct km_key *k, const struct km_value_ref *v)
{
	struct stale_ctx *c = arg;
	struct km_shardmap_route rt;

	(void)v;
	assert_int_equal(km_shardmap_route(c->map, k->data, k->len, &rt), 0);
	c->n += rt.fallback != NULL && km_shard_id(rt.shard) != c->id;
	return 0;
}

/* Entries of worker w's stores that are not in the shard their key routes to. */
static uint64_t
stale_entries(struct env *e, unsigned int w)
{
	struct stale_ctx c = {.map = e->map};
	unsigned int i;

	for (i = 0; i < km_shardmap_nb_shards(e->map); i++) {
		const struct km_shard *s = km_shardmap_shard_at(e->map, i);
		struct km_store *st;

		if (km_shard_owner(s) != w)
			continue;
		c.id = km_shard_id(s);
		st = km_proc_shard_store(e->proc[w], c.id);
		assert_non_null(st);
		assert_int_equal(km_store_walk(st, stale_one, &c), 0);
	}
	return c.n;
}

static uint64_t
cnt_sum(struct env *e, size_t off)
{
	return *(const uint64_t *)((const uint8_t *)km_proc_counters(e->proc[0]) + off) +
	       *(const uint64_t *)((const uint8_t *)km_proc_counters(e->proc[1]) + off);
}

/*
 * One round of the pass on both workers, moves delivered. When a worker publishes clean
 * for the first time, none of its stores may hold an entry left to move: checked there,
 * and its steps so far recorded in steps_at_clean[w].
 */
static void
pass_round(struct env *e, uint64_t *steps_at_clean)
{
	uint8_t out[KM_DGRAM_MAX];
	size_t olen;
	unsigned int w;

	for (w = 0; w < 2; w++) {
		step(e, w);
		while (e->n[w] != 0 || e->n[w ^ 1] != 0) {
			if (e->n[w] != 0)
				assert_false(pump(e, w, out, &olen));
			if (e->n[w ^ 1] != 0)
				assert_false(pump(e, w ^ 1, out, &olen));
		}
	}
	for (w = 0; w < 2; w++) {
		if (steps_at_clean[w] != 0 ||
			km_proc_shift_clean(e->proc[w]) != km_shardmap_epoch(e->map))
			continue;
		assert_int_equal(stale_entries(e, w), 0);
		steps_at_clean[w] = km_proc_counters(e->proc[w])->shift_walk_steps + 1;
	}
}

/*
 * A shard of 20000 entries, 4000 of them of the part e0, overridden: the pass walks it a
 * bounded slice per step (step() checks every one) while clients read e0 keys and write
 * and delete others; every e0 key ends up in the shard it routes to, with its value and
 * version; a worker is clean only after two whole passes (the first moves, the second
 * finds nothing), and with nothing left to move at that moment.
 */
static void
test_shift_pass_bounded(void **state)
{
	const struct km_shard *old;
	struct env *e = big_env(&old);
	uint64_t *ver = calloc(E0_KEYS, sizeof(*ver)), steps_at_clean[2] = {0, 0};
	uint64_t id, expect = 0, slots, moved0, guard;
	struct km_store *big = km_proc_shard_store(e->proc[km_shard_owner(old)], km_shard_id(old));
	unsigned int i, xs = 0, xdel = 0, wo = km_shard_owner(old);
	uint8_t out[KM_DGRAM_MAX];
	struct km_store_stats st;
	char key[32], val[16];

	(void)state;
	assert_non_null(ver);
	for (i = 0; i < E0_KEYS; i++) {
		snprintf(key, sizeof(key), "e0/k%u", i);
		snprintf(val, sizeof(val), "v%u", i);
		put_direct(big, key, val, &ver[i]);
	}
	do {
		snprintf(key, sizeof(key), "x%u/y", xs++);
		put_direct(store_of(e, key, &id), key, "x", NULL);
		km_store_stats(big, &st);
	} while (st.keys < BIG_ENTRIES);
	slots = st.index_bytes / sizeof(uint64_t);
	moved0 = cnt_sum(e, offsetof(struct km_proc_counters, shift_moved_keys));

	override_e0(e);
	for (i = 0; i < E0_KEYS; i++) {
		snprintf(key, sizeof(key), "e0/k%u", i);
		expect += store_of(e, key, &id) != big;
	}
	assert_true(expect > E0_KEYS / 4);
	for (guard = 0; steps_at_clean[0] == 0 || steps_at_clean[1] == 0; guard++) {
		struct km_shardmap_route rt;
		struct km_msg rep;

		assert_true(guard < 20000);
		pass_round(e, steps_at_clean);
		/* Clients meanwhile: a GET of an e0 key (new place or fallback), a new key and a
		 * deleted one elsewhere (entries of the walked store move and are added). */
		i = (unsigned int)(rng(&e->seed) % E0_KEYS);
		snprintf(key, sizeof(key), "e0/k%u", i);
		snprintf(val, sizeof(val), "v%u", i);
		assert_int_equal(
			km_shardmap_route(e->map, (const uint8_t *)key, strlen(key), &rt), 0);
		rep = call(e, rt.owner, KM_OP_GET, key, NULL, 0, out);
		assert_int_equal(rep.hdr.status, KM_ST_OK);
		assert_int_equal(rep.hdr.version, ver[i]);
		assert_memory_equal(rep.val, val, strlen(val));
		snprintf(key, sizeof(key), "x%u/y", xs++);
		assert_int_equal(
			km_shardmap_route(e->map, (const uint8_t *)key, strlen(key), &rt), 0);
		rep = call(e, rt.owner, KM_OP_PUT, key, "x", 0, out);
		assert_int_equal(rep.hdr.status, KM_ST_OK);
		snprintf(key, sizeof(key), "x%u/y", xdel++);
		assert_int_equal(
			km_shardmap_route(e->map, (const uint8_t *)key, strlen(key), &rt), 0);
		rep = call(e, rt.owner, KM_OP_DEL, key, NULL, 0, out);
		assert_int_equal(rep.hdr.status, KM_ST_OK);
	}
	/* Each e0 key exactly once, where it routes, as it was. */
	assert_int_equal(
		cnt_sum(e, offsetof(struct km_proc_counters, shift_moved_keys)) - moved0, expect);
	for (i = 0; i < E0_KEYS; i++) {
		struct km_key k = {.data = (const uint8_t *)key};
		struct km_value_ref v;

		k.len = (uint16_t)snprintf(key, sizeof(key), "e0/k%u", i);
		k.hash = km_key_hash(k.data, k.len);
		snprintf(val, sizeof(val), "v%u", i);
		assert_int_equal(km_store_get(store_of(e, key, &id), &k, &v), 0);
		assert_int_equal(v.version, ver[i]);
		assert_memory_equal(v.data, val, v.len);
	}
	assert_int_equal(stale_entries(e, 0) + stale_entries(e, 1), 0);
	/* Not one step per shard: the big one took about slots / budget steps per pass, and
	 * its owner two passes before it was clean. */
	assert_true(steps_at_clean[wo] >= 2 * slots / KM_PROC_SHIFT_BUDGET);
	print_message("big shard: %llu slots, %llu moved, %llu steps before clean\n",
		(unsigned long long)slots, (unsigned long long)expect,
		(unsigned long long)steps_at_clean[wo]);
	free(ver);
	env_free(e);
}

/*
 * The big shard's store replaced (detached, another attached under the same id, with a
 * table of the same size) while the pass is in the middle of its walk: the walk starts
 * over in the new store, from its beginning. Every stale entry of the new store lies in
 * the first slots of its table, before where the old walk stood: a position carried over
 * to it would find nothing there and declare the worker clean.
 */
static void
test_shift_store_swapped(void **state)
{
	const struct km_shard *old;
	struct env *e = big_env(&old);
	unsigned int wo = km_shard_owner(old), i, n;
	uint64_t sid = km_shard_id(old), id, expect = 0, moved0, steps0, guard, slots;
	uint64_t steps_at_clean[2] = {0, 0};
	struct km_store *big = km_proc_shard_store(e->proc[wo], sid), *s;
	struct km_store_stats st = {0};
	char key[32];

	(void)state;
	/* Nothing of e0 in it, and nothing in the other shard (a step for it): the pass
	 * under way finds nothing to move. */
	for (i = 0; st.keys < BIG_ENTRIES; i++) {
		snprintf(key, sizeof(key), "x%u/y", i);
		if (store_of(e, key, &id) == big)
			put_direct(big, key, "x", NULL);
		km_store_stats(big, &st);
	}
	slots = st.index_bytes / sizeof(uint64_t);
	override_e0(e);
	/* Its owner's other shards take one step each at most: at least 3 for the big one,
	 * which is then past its first KM_PROC_SHIFT_BUDGET slots. */
	steps0 = km_proc_counters(e->proc[wo])->shift_walk_steps;
	n = 3 + km_proc_nb_shards(e->proc[wo]) - 1;
	for (i = 0; i < n; i++)
		step(e, wo);
	assert_int_equal(km_proc_counters(e->proc[wo])->shift_walk_steps - steps0, n);
	assert_int_not_equal(km_proc_shift_clean(e->proc[wo]), km_shardmap_epoch(e->map));

	{
		struct km_store_params sp = {.name = "swapped",
			.shard_id = sid,
			.value_max = 1000,
			.initial_keys = (uint32_t)(slots - slots / 8),
			.version_base = km_proc_version_last(e->proc[wo]),
			.socket_id = -1};

		s = km_proc_shard_detach(e->proc[wo], sid, NULL);
		assert_ptr_equal(s, big);
		km_store_destroy(s);
		assert_int_equal(km_store_create("mem", &sp, &s), 0);
		assert_int_equal(km_proc_shard_attach(e->proc[wo], sid, s), 0);
	}
	/* e0 keys whose home slot is among the first budget / 2 of the table, and that
	 * route to the other shard now. */
	for (i = 0; i < 1000000 && expect < 40; i++) {
		struct km_key k = {.data = (const uint8_t *)key};

		k.len = (uint16_t)snprintf(key, sizeof(key), "e0/k%u", i);
		k.hash = km_key_hash(k.data, k.len);
		if ((k.hash & (slots - 1)) >= KM_PROC_SHIFT_BUDGET / 2 ||
			store_of(e, key, &id) == s)
			continue;
		put_direct(s, key, "e", NULL);
		expect++;
	}
	assert_int_equal(expect, 40);
	km_store_stats(s, &st);
	assert_int_equal(st.index_bytes / sizeof(uint64_t), slots);
	moved0 = cnt_sum(e, offsetof(struct km_proc_counters, shift_moved_keys));
	for (guard = 0; steps_at_clean[0] == 0 || steps_at_clean[1] == 0; guard++) {
		assert_true(guard < 10000);
		pass_round(e, steps_at_clean);
	}
	assert_int_equal(
		cnt_sum(e, offsetof(struct km_proc_counters, shift_moved_keys)) - moved0, expect);
	assert_int_equal(stale_entries(e, 0) + stale_entries(e, 1), 0);
	env_free(e);
}

/* A key of e0 whose place moves to the other worker under an override of e0. */
static void
moving_key(struct env *e, unsigned int w_old, unsigned int from, char *key, size_t cap)
{
	struct km_shardmap *m = NULL;
	struct km_shardmap_route rt;
	unsigned int i;

	assert_int_equal(km_shardmap_override_add(e->map, (const uint8_t *)"e0", 2, 1, &m), 0);
	for (i = from; i < from + 1000; i++) {
		snprintf(key, cap, "e0/k%u", i);
		assert_int_equal(km_shardmap_route(m, (const uint8_t *)key, strlen(key), &rt), 0);
		if (km_shard_owner(rt.shard) != w_old)
			break;
	}
	assert_true(i < from + 1000);
	km_shardmap_free(m);
}

/* Writes executed before an override changed their key's place, retried unchanged after
 * it (to the same worker, or steered to the new owner): answered from the record of their
 * first execution at the old place's owner, never executed again. */
static void
test_shift_retry_old(void **state)
{
	const struct km_shard *old;
	struct env *e = big_env(&old);
	uint8_t out[KM_DGRAM_MAX], cas[KM_DGRAM_MAX], del[KM_DGRAM_MAX];
	unsigned int w_old = km_shard_owner(old), to;
	size_t cas_len, del_len;
	struct km_msg rep, first;
	char k1[16], k2[16];

	(void)state;
	/* The other shard on the other worker, so that e0's keys spread over both. */
	for (to = 0; to < km_shardmap_nb_shards(e->map); to++) {
		const struct km_shard *sh = km_shardmap_shard_at(e->map, to);
		uint64_t id = km_shard_id(sh);
		struct km_shardmap *m = NULL;
		struct km_store *st;

		if (sh == old || km_shard_owner(sh) != w_old)
			continue;
		st = km_proc_shard_detach(e->proc[w_old], id, NULL);
		assert_non_null(st);
		assert_int_equal(km_proc_shard_attach(e->proc[1 - w_old], id, st), 0);
		assert_int_equal(km_shardmap_move(e->map, id, (uint16_t)(1 - w_old), &m), 0);
		publish(e, m);
		break;
	}
	moving_key(e, w_old, 0, k1, sizeof(k1));
	moving_key(e, w_old, (unsigned int)atoi(k1 + 4) + 1, k2, sizeof(k2));
	first = call_keep(e, w_old, KM_OP_CAS, k1, "a", 0, out, cas, &cas_len);
	assert_int_equal(first.hdr.status, KM_ST_OK);
	assert_int_equal(call(e, w_old, KM_OP_PUT, k2, "b", 0, out).hdr.status, KM_ST_OK);
	rep = call_keep(e, w_old, KM_OP_DEL, k2, NULL, 0, out, del, &del_len);
	assert_int_equal(rep.hdr.status, KM_ST_OK);
	override_e0(e);
	for (to = 0; to < 2; to++) {
		rep = send_raw(e, to == 0 ? w_old : 1 - w_old, cas, cas_len, out);
		assert_int_equal(rep.hdr.status, KM_ST_OK); /* not VERSION_MISMATCH */
		assert_int_equal(rep.hdr.version, first.hdr.version);
		rep = send_raw(e, to == 0 ? w_old : 1 - w_old, del, del_len, out);
		assert_int_equal(rep.hdr.status, KM_ST_OK); /* not NOT_FOUND */
	}
	assert_true(km_proc_counters(e->proc[w_old])->shift_retry_old >= 4);
	/* Nothing was executed twice: the values are the first writes'. */
	rep = call(e, 1 - w_old, KM_OP_GET, k1, NULL, 0, out);
	assert_int_equal(rep.hdr.status, KM_ST_OK);
	assert_int_equal(rep.hdr.version, first.hdr.version);
	assert_int_equal(
		call(e, 1 - w_old, KM_OP_GET, k2, NULL, 0, out).hdr.status, KM_ST_NOT_FOUND);
	env_free(e);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shift_model),
		cmocka_unit_test(test_shift_pass_bounded),
		cmocka_unit_test(test_shift_store_swapped),
		cmocka_unit_test(test_shift_retry_old),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
