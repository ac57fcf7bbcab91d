/* SPDX-License-Identifier: BSD-3-Clause */
/* The partition shifter: the control lcore's part and the hand-off field (shift.h). */

#define KM_LOG_COMP KM_LOG_CONTROL /* keymapd.h */

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_mbuf_dyn.h>

#include <xxhash.h>

#include "cluster.h"
#include "control.h"
#include "datapath.h"
#include "keymapd.h"
#include "mailbox.h"
#include "shift.h"

int km_shift_dyn_off = -1;

/*
 * An override stays unsettled (writes pass through the old place's owner, which answers a
 * retried write from its at-most-once record) for at least [shift] settle_ms after the
 * last override change: longer than a client retries a request (libkeymap: 800 ms by
 * default), so that a write executed in the old place before the change is not executed
 * again in the new one when its retry comes.
 */

static uint64_t last_change_tsc; /* control lcore */

int
km_shift_init(void)
{
	static const struct rte_mbuf_dynfield desc = {
		.name = "keymap_shift_handoff",
		.size = sizeof(struct km_shift_dyn),
		.align = __alignof__(struct km_shift_dyn),
	};

	km_shift_dyn_off = rte_mbuf_dynfield_register(&desc);
	return km_shift_dyn_off < 0 ? -rte_errno : 0;
}

void
km_shift_drop(struct rte_mbuf **m, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		struct km_shift_dyn *d = km_shift_dyn(m[i]);

		if (d->mv != NULL)
			km_proc_shift_free(d->mv);
		d->mv = NULL;
	}
}

/* Whether the store driver keeps values on disk: its shards are not shifted. */
static int
driver_on_disk(void)
{
	const struct km_store_ops *drv = km_store_driver(km_ctl.conf.store_driver);

	return drv != NULL && drv->read_start != NULL;
}

/* Versions a store may issue between the floor and the publication: far more than it can. */
#define FLOOR_MARGIN (UINT64_C(1) << 20)

/*
 * Before a routing change: every store issues versions above every version any store
 * issued, so that a key deleted in its old place and created in its new one (or back)
 * never gets a version it had. @return 0 or -errno (a worker did not answer).
 */
static int
versions_floor(void)
{
	uint64_t v = 0;
	uint16_t w;
	int pass, rc;

	for (pass = 0; pass < 2; pass++) {
		for (w = 0; w < km_dp.nb_workers; w++) {
			struct km_wcmd *c = km_mailbox_cmd_new(KM_WCMD_FLOOR, 0);

			if (c == NULL)
				return -ENOMEM;
			c->floor = pass == 0 ? 0 : v;
			rc = km_mailbox_run(w, c);
			if (rc == 0 && c->keys > v)
				v = c->keys;
			km_mailbox_cmd_free(c, rc);
			if (rc < 0)
				return rc;
		}
		if (pass == 0)
			v += FLOOR_MARGIN;
	}
	return 0;
}

static int
shift_publish(
	int rc, struct km_shardmap *n, const char *what, const char *part, char *err, size_t errlen)
{
	static const struct {
		int rc;
		const char *why;
	} whys[] = {
		{-EINVAL, "not a routing part (too many components, empty, or extra too large)"},
		{-EEXIST, "already overridden"},
		{-ENOSPC, "the map holds the most overrides it can (16)"},
		{-ENOENT, "no override of that routing part"},
		{-EALREADY, "already being undone"},
		{-ENOMEM, "out of memory"},
	};
	const char *why = strerror(-rc);
	size_t i;

	if (rc == 0)
		rc = versions_floor();
	if (rc == 0) {
		km_control_publish_map(n);
		last_change_tsc = rte_get_timer_cycles();
		KM_LOG(INFO, "override %s: %s (map epoch %u)", what, part,
			km_shardmap_epoch(km_map_current));
		return 0;
	}
	km_shardmap_free(n); /* not published */
	for (i = 0; i < sizeof(whys) / sizeof(whys[0]); i++)
		if (whys[i].rc == rc)
			why = whys[i].why;
	snprintf(err, errlen, "override %s %s: %s", what, part, why);
	return rc;
}

int
km_shift_add(const char *part, uint8_t extra, char *err, size_t errlen)
{
	struct km_shardmap *n = NULL;
	int rc;

	if (km_cluster_on()) {
		snprintf(err, errlen,
			"override add %s: a cluster node routes by the placer's map, which has no "
			"overrides (docs/cluster.md)",
			part);
		return -ENOTSUP;
	}
	if (driver_on_disk()) {
		snprintf(err, errlen,
			"override add %s: the %s store keeps values on disk; only stores with "
			"values in DRAM (mem) are shifted",
			part, km_ctl.conf.store_driver);
		return -ENOTSUP;
	}
	if (km_ctl.reshard.active) {
		snprintf(err, errlen,
			"override add %s: a split or merge is copying a shard; try again when it "
			"is done",
			part);
		return -EBUSY;
	}
	rc = km_shardmap_override_add(
		km_map_current, (const uint8_t *)part, strlen(part), extra, &n);
	return shift_publish(rc, n, "add", part, err, errlen);
}

int
km_shift_remove(const char *part, char *err, size_t errlen)
{
	struct km_shardmap *n = NULL;
	int rc;

	if (km_ctl.reshard.active) {
		snprintf(err, errlen,
			"override remove %s: a split or merge is copying a shard; try again when "
			"it is done",
			part);
		return -EBUSY;
	}
	rc = km_shardmap_override_remove(km_map_current, XXH3_64bits(part, strlen(part)), &n);
	return shift_publish(rc, n, "remove", part, err, errlen);
}

void
km_shift_tick(void)
{
	struct km_shardmap *cur = km_map_current, *n = NULL, *next;
	uint32_t epoch = km_shardmap_epoch(cur), i;
	uint64_t hashes[KM_OVERRIDES_MAX];
	uint32_t nh = 0;

	for (i = 0; i < km_shardmap_nb_overrides(cur); i++)
		if (km_shardmap_override_at(cur, i)->state != KM_OVR_SETTLED)
			hashes[nh++] = km_shardmap_override_at(cur, i)->hash;
	if (nh == 0 || rte_get_timer_cycles() - last_change_tsc <
			       km_ctl.conf.shift_settle_ms * rte_get_timer_hz() / 1000)
		return;
	/* Every worker walked all its shards under this very map and found nothing left in
	 * an old place: the moves it made are in the rings ahead of anything it sends later. */
	for (i = 0; i < km_dp.nb_workers; i++)
		if (km_proc_shift_clean(km_dp.workers[i].proc) != epoch)
			return;
	for (i = 0; i < nh; i++) {
		if (km_shardmap_override_settle(n != NULL ? n : cur, hashes[i], &next) != 0) {
			km_shardmap_free(n);
			return; /* out of memory: next time */
		}
		km_shardmap_free(n);
		n = next;
	}
	km_control_publish_map(n);
	KM_LOG(INFO, "overrides settled: %u (map epoch %u)", nh, km_shardmap_epoch(n));
}
