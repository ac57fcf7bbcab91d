/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Hot-key replication, the control side: which keys get read copies (see crew.h).
 *
 * Tracking is bounded: TRACK_MAX keys per interval, found through a hash index. A key
 * seen while the table is full is not tracked in that interval (counted); at the end of
 * each interval the keys that are neither replicated nor heading there are forgotten, so
 * a key that takes a large share of the samples finds a place within the first ones of
 * the next interval. O(1) per sample.
 */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>

#include <km_store.h>

#include "control.h"
#include "crew.h"
#include "keymapd.h"
#include "mailbox.h"
#include "shift.h"

#define TRACK_MAX   512  /* keys tracked per interval */
#define TRACK_INDEX 1024 /* hash index slots, power of 2, > TRACK_MAX */
#define COPIES_MAX  (KM_CREW_KEYS_MAX * 2)

struct track {
	uint64_t hash; /* km_key_hash of the key; 0: free */
	uint64_t shard_id;
	uint16_t owner;
	uint16_t key_len;
	uint32_t reads, writes; /* samples this interval */
	uint32_t hot, cool;     /* consecutive intervals over share_on / under share_off */
	uint8_t wanted;         /* a copy was asked of the owner */
	uint8_t seen;           /* found in the owner's table at the last check */
	uint8_t key[KM_KEY_MAX];
};

static struct {
	struct km_crew *tables; /* the workers' copy tables (lib/proc) */
	struct km_conf conf;    /* the [crew] section in force */
	struct track track[TRACK_MAX];
	uint32_t nb_track;
	int32_t index[TRACK_INDEX]; /* track slot + 1, 0: empty; linear probing */
	uint64_t owner_samples[KM_WORKERS_MAX];
	uint64_t interval_tsc;
	uint8_t tune_due[KM_WORKERS_MAX]; /* the worker's sampling or withdrawal not sent yet */
	uint8_t clear_due[KM_WORKERS_MAX];
	struct km_crew_stats st;
	struct km_crew_info copies[COPIES_MAX]; /* scratch of the interval's check */
} crew;

/* Between the thread that drains w_to_ctl and the control lcore. */
static pthread_mutex_t crew_lock = PTHREAD_MUTEX_INITIALIZER;

static uint32_t
index_home(uint64_t hash)
{
	return (uint32_t)(hash * 0x9e3779b97f4a7c15ULL >> 40) & (TRACK_INDEX - 1);
}

static struct track *
track_find(uint64_t hash, const uint8_t *key, uint16_t len)
{
	uint32_t i = index_home(hash);

	for (; crew.index[i] != 0; i = (i + 1) & (TRACK_INDEX - 1)) {
		struct track *t = &crew.track[crew.index[i] - 1];

		if (t->hash == hash && t->key_len == len && memcmp(t->key, key, len) == 0)
			return t;
	}
	return NULL;
}

static struct track *
track_add(uint64_t hash, const uint8_t *key, uint16_t len)
{
	uint32_t i = index_home(hash);
	struct track *t;

	if (crew.nb_track == TRACK_MAX)
		return NULL;
	while (crew.index[i] != 0)
		i = (i + 1) & (TRACK_INDEX - 1);
	t = &crew.track[crew.nb_track++];
	memset(t, 0, offsetof(struct track, key));
	t->hash = hash;
	t->key_len = len;
	memcpy(t->key, key, len);
	crew.index[i] = (int32_t)crew.nb_track;
	return t;
}

/* Keep only the tracks keep() wants, and rebuild the index. */
static void
track_compact(int (*keep)(const struct track *))
{
	uint32_t n = 0, i, j;

	for (i = 0; i < crew.nb_track; i++)
		if (keep(&crew.track[i])) {
			if (n != i)
				crew.track[n] = crew.track[i];
			n++;
		}
	crew.nb_track = n;
	memset(crew.index, 0, sizeof(crew.index));
	for (i = 0; i < n; i++) {
		for (j = index_home(crew.track[i].hash); crew.index[j] != 0;
			j = (j + 1) & (TRACK_INDEX - 1))
			;
		crew.index[j] = (int32_t)i + 1;
	}
}

static int
keep_none(const struct track *t)
{
	(void)t;
	return 0;
}

static int
keep_live(const struct track *t)
{
	return t->wanted || t->hot != 0;
}

static int
send_key(uint16_t w, uint16_t type, const uint8_t *key, uint16_t len)
{
	struct km_cmsg m = {.type = type, .key_len = len};

	if (len != 0)
		memcpy(m.u.key, key, len);
	return km_mailbox_send(w, &m);
}

/* Sampling and withdrawals the workers still have to be told (their ring was full). */
static void
tune_workers(void)
{
	struct km_cmsg m = {.type = KM_CMSG_CREW_TUNE};
	uint16_t w;

	m.seq = km_shift_auto_sampling(&crew.conf) ? (uint32_t)crew.conf.crew_sampling : 0;
	for (w = 0; w < km_dp.nb_workers; w++) {
		if (crew.clear_due[w] && send_key(w, KM_CMSG_CREW_DEL, NULL, 0) == 0)
			crew.clear_due[w] = 0;
		if (crew.tune_due[w] && km_mailbox_send(w, &m) == 0)
			crew.tune_due[w] = 0;
	}
}

int
km_crew_init(const struct km_conf *c)
{
	struct km_crew_params cp = {
		.nb_workers = km_dp.nb_workers,
		.keys_max = (uint32_t)c->crew_keys,
		.value_max = (uint32_t)c->crew_value_max,
	};
	uint16_t w;
	int rc;

	rc = km_crew_create(&cp, &crew.tables);
	if (rc < 0)
		return rc;
	for (w = 0; w < km_dp.nb_workers; w++) {
		rc = km_proc_set_crew(km_dp.workers[w].proc, crew.tables);
		if (rc < 0)
			return rc;
		/* Before the workers run: set directly. */
		km_proc_crew_sampling(km_dp.workers[w].proc,
			km_shift_auto_sampling(c) ? (uint32_t)c->crew_sampling : 0);
	}
	crew.conf = *c;
	crew.st.enabled = (int)c->crew_enable;
	crew.interval_tsc = rte_get_timer_cycles();
	return 0;
}

void
km_crew_fini(void)
{
	uint16_t w;

	for (w = 0; km_dp.workers != NULL && w < km_dp.nb_workers; w++)
		if (km_dp.workers[w].proc != NULL)
			km_proc_set_crew(km_dp.workers[w].proc, NULL);
	km_crew_destroy(crew.tables);
	crew.tables = NULL;
}

int
km_crew_configure(const struct km_conf *c)
{
	uint16_t w;

	pthread_mutex_lock(&crew_lock);
	if (km_shift_auto_sampling(c) != km_shift_auto_sampling(&crew.conf) ||
		c->crew_sampling != crew.conf.crew_sampling)
		for (w = 0; w < km_dp.nb_workers; w++)
			crew.tune_due[w] = 1;
	if (!c->crew_enable && crew.conf.crew_enable) {
		/* Off: every copy goes, and nothing is tracked. */
		for (w = 0; w < km_dp.nb_workers; w++)
			crew.clear_due[w] = 1;
		track_compact(keep_none);
		memset(crew.owner_samples, 0, sizeof(crew.owner_samples));
	}
	crew.conf = *c;
	crew.st.enabled = (int)c->crew_enable;
	tune_workers();
	pthread_mutex_unlock(&crew_lock);
	return 0;
}

static void
on_note(uint16_t worker, const struct km_proc_note *n)
{
	struct track *t;
	uint64_t h;

	(void)worker;
	if (!crew.conf.crew_enable || n->key_len == 0 || n->key_len > KM_KEY_MAX ||
		n->owner >= km_dp.nb_workers)
		return;
	crew.st.samples++;
	crew.owner_samples[n->owner]++;
	h = km_key_hash(n->key, n->key_len);
	t = track_find(h, n->key, n->key_len);
	if (t == NULL)
		t = track_add(h, n->key, n->key_len);
	if (t == NULL) {
		crew.st.untracked++;
		return;
	}
	/* The last owner seen: a re-sharding may have moved the key. */
	t->owner = n->owner;
	t->shard_id = n->shard_id;
	if (n->op == KM_OP_GET)
		t->reads++;
	else
		t->writes++;
}

int
km_crew_receive(const struct km_wmsg *m)
{

	if (m->type == KM_WMSG_NOTE && m->u.note.type == KM_PROC_NOTE_CREW) {
		km_shift_note(&m->u.note); /* hot routing parts, for the shifter */
		pthread_mutex_lock(&crew_lock);
		on_note(m->worker, &m->u.note);
		pthread_mutex_unlock(&crew_lock);
		return 1;
	}
	if (m->type != KM_WMSG_DONE || m->u.done.cmd != KM_CMSG_CREW_ADD)
		return 0;
	if (m->u.done.rc < 0) {
		pthread_mutex_lock(&crew_lock);
		/* Which key: the tables tell at the next check (it is not there). */
		crew.st.refused++;
		pthread_mutex_unlock(&crew_lock);
	}
	return 1;
}

/* Compare what was asked with what the owners hold. */
static void
check_copies(void)
{
	uint32_t n = km_crew_list(crew.tables, crew.copies, COPIES_MAX), i;
	struct track *t;

	for (i = 0; i < crew.nb_track; i++)
		crew.track[i].seen = 0;
	for (i = 0; i < n; i++) {
		const struct km_crew_info *ci = &crew.copies[i];

		t = track_find(km_key_hash(ci->key, ci->key_len), ci->key, ci->key_len);
		if (t != NULL && t->wanted && t->owner == ci->owner) {
			t->seen = 1;
			continue;
		}
		/* Held but not wanted (a withdrawal lost, an owner that changed): withdraw. */
		if (send_key(ci->owner, KM_CMSG_CREW_DEL, ci->key, ci->key_len) == 0)
			crew.st.removes++;
	}
	crew.st.copies = n;
}

static void
decide(void)
{
	const struct km_conf *c = &crew.conf;
	uint32_t per_owner[KM_WORKERS_MAX] = {0}, i;

	check_copies();
	for (i = 0; i < crew.nb_track; i++)
		if (crew.track[i].wanted)
			per_owner[crew.track[i].owner]++;
	for (i = 0; i < crew.nb_track; i++) {
		struct track *t = &crew.track[i];
		uint64_t total = crew.owner_samples[t->owner], acc = (uint64_t)t->reads + t->writes;
		int write_heavy = (uint64_t)t->writes * 100 > c->crew_write_max * acc;

		if (t->wanted && !t->seen) {
			/* Refused, lost, or withdrawn by its owner: start again. */
			crew.st.lost++;
			t->wanted = 0;
			t->hot = 0;
			per_owner[t->owner]--;
		}
		if (total == 0)
			continue; /* the owner was idle: nothing to judge */
		if (!t->wanted) {
			if ((uint64_t)t->reads * 100 >= c->crew_share_on * total &&
				t->reads >= c->crew_min_samples && !write_heavy)
				t->hot++;
			else
				t->hot = 0;
			if (t->hot >= c->crew_hysteresis && per_owner[t->owner] < c->crew_keys &&
				send_key(t->owner, KM_CMSG_CREW_ADD, t->key, t->key_len) == 0) {
				t->wanted = 1;
				t->seen = 1;
				t->cool = 0;
				per_owner[t->owner]++;
				crew.st.adds++;
			}
			continue;
		}
		if (acc * 100 < c->crew_share_off * total || write_heavy)
			t->cool++;
		else
			t->cool = 0;
		if (t->cool >= c->crew_hysteresis &&
			send_key(t->owner, KM_CMSG_CREW_DEL, t->key, t->key_len) == 0) {
			t->wanted = 0;
			t->hot = 0;
			per_owner[t->owner]--;
			crew.st.removes++;
		}
	}
	/* A new interval: counts restart; keys going nowhere make room. */
	for (i = 0; i < crew.nb_track; i++)
		crew.track[i].reads = crew.track[i].writes = 0;
	memset(crew.owner_samples, 0, sizeof(crew.owner_samples));
	track_compact(keep_live);
}

void
km_crew_tick(void)
{
	uint64_t now = rte_get_timer_cycles();

	pthread_mutex_lock(&crew_lock);
	tune_workers();
	if (crew.conf.crew_enable &&
		now - crew.interval_tsc >= crew.conf.crew_interval_ms * rte_get_timer_hz() / 1000) {
		crew.interval_tsc = now;
		decide();
	}
	crew.st.tracked = crew.nb_track;
	pthread_mutex_unlock(&crew_lock);
}

void
km_crew_stats(struct km_crew_stats *st)
{
	pthread_mutex_lock(&crew_lock);
	*st = crew.st;
	if (crew.tables != NULL)
		st->copies = km_crew_list(crew.tables, crew.copies, COPIES_MAX);
	pthread_mutex_unlock(&crew_lock);
}

uint32_t
km_crew_copies(struct km_crew_info *out, uint32_t max)
{
	return crew.tables == NULL ? 0 : km_crew_list(crew.tables, out, max);
}
