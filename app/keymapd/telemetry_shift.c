/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Telemetry commands of the partition shifter (shift.h): /keymap/overrides lists the
 * routing overrides and the shifter's counters, /keymap/override_add,PART[,EXTRA] and
 * /keymap/override_remove,PART change them. Each runs on the control lcore (km_ctl_call).
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <rte_common.h>
#include <rte_telemetry.h>

#include <xxhash.h>

#include <km_util.h>

#include "control.h"
#include "datapath.h"
#include "shift.h"

#define SHIFT_TIMEOUT_MS 5000

struct shift_arg {
	const char *params;
	struct rte_tel_data *d;
};

static int
shift_error(struct rte_tel_data *d, const char *msg)
{
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "error", msg);
	return 0;
}

static const char *
state_name(uint8_t state)
{
	return state == KM_OVR_SETTLED     ? "settled"
	       : state == KM_OVR_MIGRATING ? "migrating"
					   : "reverting";
}

static int
ctl_overrides(void *arg)
{
	struct shift_arg *a = arg;
	struct rte_tel_data *d = a->d, *parts = rte_tel_data_alloc(),
			    *hashes = rte_tel_data_alloc(), *extra = rte_tel_data_alloc(),
			    *states = rte_tel_data_alloc(), *autos = rte_tel_data_alloc();
	const struct km_shardmap *m = km_map_current;
	uint64_t fallback = 0, moved = 0, restored = 0;
	char hex[24];
	uint32_t i;

	if (parts == NULL || hashes == NULL || extra == NULL || states == NULL || autos == NULL) {
		rte_tel_data_free(autos);
		rte_tel_data_free(parts);
		rte_tel_data_free(hashes);
		rte_tel_data_free(extra);
		rte_tel_data_free(states);
		return shift_error(d, "out of memory");
	}
	rte_tel_data_start_array(parts, RTE_TEL_STRING_VAL);
	rte_tel_data_start_array(hashes, RTE_TEL_STRING_VAL);
	rte_tel_data_start_array(extra, RTE_TEL_U64_VAL);
	rte_tel_data_start_array(states, RTE_TEL_STRING_VAL);
	rte_tel_data_start_array(autos, RTE_TEL_U64_VAL);
	for (i = 0; i < km_shardmap_nb_overrides(m); i++) {
		const struct km_override_info *o = km_shardmap_override_at(m, i);

		rte_tel_data_add_array_string(parts, o->name);
		snprintf(hex, sizeof(hex), "0x%016" PRIx64, o->hash);
		rte_tel_data_add_array_string(hashes, hex);
		rte_tel_data_add_array_u64(extra, o->extra);
		rte_tel_data_add_array_string(states, state_name(o->state));
		rte_tel_data_add_array_u64(autos, (uint64_t)km_shift_is_auto(o->hash));
	}
	/* Worker counters: plain words, possibly one update old. */
	for (i = 0; i < km_dp.nb_workers; i++) {
		const struct km_proc_counters *c = km_proc_counters(km_dp.workers[i].proc);

		fallback += c->shift_fallback_reads;
		moved += c->shift_moved_keys;
		restored += c->shift_move_restored;
	}
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "epoch", km_shardmap_epoch(m));
	rte_tel_data_add_dict_u64(d, "overrides", km_shardmap_nb_overrides(m));
	rte_tel_data_add_dict_u64(d, "fallback_reads", fallback);
	rte_tel_data_add_dict_u64(d, "moved_keys", moved);
	rte_tel_data_add_dict_u64(d, "moves_restored", restored);
	rte_tel_data_add_dict_container(d, "part", parts, 0);
	rte_tel_data_add_dict_container(d, "hash", hashes, 0);
	rte_tel_data_add_dict_container(d, "extra", extra, 0);
	rte_tel_data_add_dict_container(d, "state", states, 0);
	rte_tel_data_add_dict_container(d, "auto", autos, 0);
	rte_tel_data_add_dict_u64(d, "auto_enabled", km_ctl.conf.shift_auto);
	rte_tel_data_add_dict_u64(d, "auto_adds", km_ctl.cnt.shift_auto_adds);
	rte_tel_data_add_dict_u64(d, "auto_removes", km_ctl.cnt.shift_auto_removes);
	return 0;
}

/* "PART[,EXTRA]": the part in buf (cap bytes), extra 1 unless given. @return 0 or -1. */
static int
parse_part(const char *params, char *buf, size_t cap, uint64_t *extra)
{
	const char *comma = strchr(params, ',');
	size_t len = comma != NULL ? (size_t)(comma - params) : strlen(params);

	*extra = 1;
	if (len == 0 || len >= cap || len > KM_KEY_MAX)
		return -1;
	memcpy(buf, params, len);
	buf[len] = '\0';
	if (comma != NULL && km_util_parse_u64(comma + 1, 1, 8, extra) < 0)
		return -1;
	return 0;
}

static int
ctl_override_add(void *arg)
{
	struct shift_arg *a = arg;
	char part[KM_KEY_MAX + 1], err[300];
	uint64_t extra;

	if (parse_part(a->params, part, sizeof(part), &extra) < 0)
		return shift_error(a->d, "usage: /keymap/override_add,PART[,EXTRA (1..8)]");
	/* The operator's now, even when keymapd had added it already (-EEXIST). */
	km_shift_auto_forget(XXH3_64bits(part, strlen(part)), 0);
	if (km_shift_add(part, (uint8_t)extra, err, sizeof(err)) < 0)
		return shift_error(a->d, err);
	rte_tel_data_start_dict(a->d);
	rte_tel_data_add_dict_string(a->d, "override", "migrating");
	rte_tel_data_add_dict_u64(a->d, "epoch", km_shardmap_epoch(km_map_current));
	return 0;
}

static int
ctl_override_remove(void *arg)
{
	struct shift_arg *a = arg;
	char part[KM_KEY_MAX + 1], err[300];
	uint64_t extra;

	if (parse_part(a->params, part, sizeof(part), &extra) < 0 || strchr(a->params, ','))
		return shift_error(a->d, "usage: /keymap/override_remove,PART");
	if (km_shift_remove(part, err, sizeof(err)) < 0)
		return shift_error(a->d, err);
	km_shift_auto_forget(XXH3_64bits(part, strlen(part)), 1); /* the operator's now */
	rte_tel_data_start_dict(a->d);
	rte_tel_data_add_dict_string(a->d, "override", "reverting");
	rte_tel_data_add_dict_u64(a->d, "epoch", km_shardmap_epoch(km_map_current));
	return 0;
}

static int
shift_run(int (*fn)(void *), const char *params, struct rte_tel_data *d)
{
	struct shift_arg a = {.params = params == NULL ? "" : params, .d = d};
	char msg[128];
	int rc = km_ctl_call(fn, &a, SHIFT_TIMEOUT_MS);

	if (rc == 0)
		return 0;
	snprintf(msg, sizeof(msg), "cannot run the command: %s",
		rc == -ETIMEDOUT ? "the control lcore did not take it in time" : strerror(-rc));
	return shift_error(d, msg);
}

static int
tel_overrides(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	return shift_run(ctl_overrides, params, d);
}

static int
tel_override_add(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	return shift_run(ctl_override_add, params, d);
}

static int
tel_override_remove(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	return shift_run(ctl_override_remove, params, d);
}

int
km_telemetry_shift_register(void)
{
	int rc;

	rc = rte_telemetry_register_cmd("/keymap/overrides", tel_overrides,
		"Routing overrides of the partition shifter: part, hash, extra, state; counters.");
	if (rc == 0)
		rc = rte_telemetry_register_cmd("/keymap/override_add", tel_override_add,
			"Route a hot routing part by more components. Params: PART[,EXTRA]");
	if (rc == 0)
		rc = rte_telemetry_register_cmd("/keymap/override_remove", tel_override_remove,
			"Undo a routing override (its keys move back). Param: PART");
	return rc;
}
