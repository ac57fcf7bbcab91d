/* SPDX-License-Identifier: BSD-3-Clause */

/*
 * /keymap/hot: hot-key replication (crew.h) for keymapctl hot and dpdk-telemetry.py. The
 * figures are taken on the control lcore (km_ctl_call); the copies are read from the
 * workers' tables as workers read them. Keys are percent-encoded where they are not
 * printable ASCII (and for '%', '"' and '\'), so that any key survives the JSON reply.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_telemetry.h>

#include "control.h"
#include "crew.h"

#define TEL_TIMEOUT_MS 2000
#define HOT_SHOWN      64 /* copies listed (the 16 KB reply bounds it) */

struct hot_arg {
	struct rte_tel_data *d;
	struct km_crew_stats st;
	struct km_crew_info *ci;
	uint32_t n;
};

static int
hot_take(void *arg)
{
	struct hot_arg *a = arg;

	km_crew_stats(&a->st);
	a->n = km_crew_copies(a->ci, HOT_SHOWN);
	return 0;
}

static int
tel_hot(const char *cmd, const char *params, struct rte_tel_data *d)
{
	struct hot_arg a = {.d = d};
	struct rte_tel_data *keys = rte_tel_data_alloc(), *owner = rte_tel_data_alloc(),
			    *version = rte_tel_data_alloc(), *bytes = rte_tel_data_alloc();
	char text[3 * KM_KEY_MAX + 1];
	uint32_t i;
	int rc = -ENOMEM;

	(void)cmd;
	(void)params;
	a.ci = calloc(HOT_SHOWN, sizeof(*a.ci));
	if (a.ci != NULL && keys != NULL && owner != NULL && version != NULL && bytes != NULL)
		rc = km_ctl_call(hot_take, &a, TEL_TIMEOUT_MS);
	if (rc < 0) {
		rte_tel_data_free(keys);
		rte_tel_data_free(owner);
		rte_tel_data_free(version);
		rte_tel_data_free(bytes);
		free(a.ci);
		rte_tel_data_start_dict(d);
		rte_tel_data_add_dict_string(d, "error",
			rc == -ETIMEDOUT ? "the control lcore did not take the command in time"
					 : strerror(-rc));
		return 0;
	}
	rte_tel_data_start_array(keys, RTE_TEL_STRING_VAL);
	rte_tel_data_start_array(owner, RTE_TEL_U64_VAL);
	rte_tel_data_start_array(version, RTE_TEL_U64_VAL);
	rte_tel_data_start_array(bytes, RTE_TEL_U64_VAL);
	for (i = 0; i < a.n; i++) {
		km_tel_key_text(a.ci[i].key, a.ci[i].key_len, text, sizeof(text));
		rte_tel_data_add_array_string(keys, text);
		rte_tel_data_add_array_u64(owner, a.ci[i].owner);
		rte_tel_data_add_array_u64(version, a.ci[i].version);
		rte_tel_data_add_array_u64(bytes, a.ci[i].val_len);
	}
	free(a.ci);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "enabled", (uint64_t)a.st.enabled);
	rte_tel_data_add_dict_u64(d, "copies", a.st.copies);
	rte_tel_data_add_dict_u64(d, "tracked", a.st.tracked);
	rte_tel_data_add_dict_u64(d, "samples", a.st.samples);
	rte_tel_data_add_dict_u64(d, "untracked", a.st.untracked);
	rte_tel_data_add_dict_u64(d, "adds", a.st.adds);
	rte_tel_data_add_dict_u64(d, "refused", a.st.refused);
	rte_tel_data_add_dict_u64(d, "removes", a.st.removes);
	rte_tel_data_add_dict_u64(d, "lost", a.st.lost);
	rte_tel_data_add_dict_container(d, "key", keys, 0);
	rte_tel_data_add_dict_container(d, "owner", owner, 0);
	rte_tel_data_add_dict_container(d, "version", version, 0);
	rte_tel_data_add_dict_container(d, "value_bytes", bytes, 0);
	return 0;
}

int
km_telemetry_crew_register(void)
{
	return rte_telemetry_register_cmd("/keymap/hot", tel_hot,
		"Hot-key replication: keys with read copies (owner, version, value bytes) and "
		"the control lcore's counters.");
}
