/* SPDX-License-Identifier: BSD-3-Clause */
/* keymapctl hot: hot-key replication, the keys with read copies on every worker. */

#include <stdio.h>

#include "keymapctl.h"

static void
show_hot(const json_t *d, const char *arg)
{
	const json_t *keys = json_object_get(d, "key"), *owner = json_object_get(d, "owner"),
		     *version = json_object_get(d, "version"),
		     *bytes = json_object_get(d, "value_bytes");
	uint64_t enabled = 0;
	struct table t;
	size_t i;

	(void)arg;
	jint(d, "enabled", &enabled);
	printf("replication %s, %s keys with read copies, %s tracked\n", enabled ? "on" : "off",
		jfmt(json_object_get(d, "copies")), jfmt(json_object_get(d, "tracked")));
	printf("control     samples %s, untracked %s, adds %s, refused %s, removes %s, "
	       "lost %s\n",
		jfmt(json_object_get(d, "samples")), jfmt(json_object_get(d, "untracked")),
		jfmt(json_object_get(d, "adds")), jfmt(json_object_get(d, "refused")),
		jfmt(json_object_get(d, "removes")), jfmt(json_object_get(d, "lost")));
	if (!json_is_array(keys) || json_array_size(keys) == 0)
		return;
	printf("\n");
	table_init(&t, 4);
	table_right(&t, 1);
	table_right(&t, 2);
	table_right(&t, 3);
	table_add(&t, "key");
	table_add(&t, "owner");
	table_add(&t, "version");
	table_add(&t, "value bytes");
	for (i = 0; i < json_array_size(keys); i++) {
		table_add(&t, "%s", jfmt(json_array_get(keys, i)));
		table_add(&t, "%s", jfmt(json_array_get(owner, i)));
		table_add(&t, "%s", jfmt(json_array_get(version, i)));
		table_add(&t, "%s", jfmt(json_array_get(bytes, i)));
	}
	table_print(&t);
	table_free(&t);
}

int
cmd_hot(struct ctl *c, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return usage_error("hot takes no argument");
	return tel_showf(c, show_hot, NULL, "/keymap/hot");
}
