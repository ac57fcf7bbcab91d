/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The partition shifter in lib/proc (proc_shift.c): two processors (workers 0 and 1) in
 * one thread, their hand-off rings as FIFO queues that carry the mark and the move as
 * keymapd's worker.c does. A seeded sequential client runs GET, PUT, CAS and DEL over the
 * keys of a few entities while overrides are added, settled (when both workers are
 * clean) and removed, and the background passes run between the hops of each request:
 * every reply is checked against a reference map. Deterministic, bounded.
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

	if (!km_proc_shift_pending(e->proc[w], e->map))
		return;
	n = km_proc_shift_step(e->proc[w], e->map, mv, to, 8);
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

/* Send a request to worker `to` (as a client would: steered or not) and run everything,
 * background passes included, in a seeded order until its reply. */
static struct km_msg
call(struct env *e, unsigned int to, uint8_t op, const char *key, const char *val, uint64_t version,
	uint8_t *out)
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
	uint8_t buf[KM_DGRAM_MAX];
	size_t len = km_msg_build(buf, sizeof(buf), &h, key, val), olen = 0;
	struct km_msg m;
	unsigned int guard;

	assert_true(len > 0);
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

static void
test_shift_model(void **state)
{
	struct km_shardmap_params mp = {.nb_shards = 16,
		.nb_workers = 2,
		.udp_port_base = 7070,
		.route_sep = '/',
		.route_depth = 1};
	struct km_proc_params pp = {.value_max = 1000, .store_driver = "mem", .version_base = 1};
	struct env *e = calloc(1, sizeof(*e));
	uint8_t out[KM_DGRAM_MAX];
	struct km_shardmap *m;
	unsigned int op, i, w, n_ovr = 0;
	uint64_t fallback = 0, moved = 0;
	char key[16], part[8];

	(void)state;
	assert_non_null(e);
	e->seed = 0x5eed;
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
	for (w = 0; w < 2; w++) {
		while (e->n[w] != 0) {
			struct item *it = &e->q[w][e->head[w]];

			km_proc_shift_free(it->mv);
			e->head[w] = (e->head[w] + 1) % QMAX;
			e->n[w]--;
		}
		km_proc_destroy(e->proc[w]);
		free(e->q[w]);
	}
	km_shardmap_free(e->map);
	free(e);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shift_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
