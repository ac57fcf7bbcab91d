/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymapctl: the partition shifter (overrides, override add, override remove). An
 * override routes one hot routing part (an entity such as user42) by more key
 * components, so that its keys spread over shards and workers; keymapd moves its keys in
 * the background and settles the override by itself (docs/operations.md).
 */

#include <stdio.h>
#include <string.h>

#include <km_util.h>

#include "keymapctl.h"

static void
show_overrides(const json_t *d, const char *arg)
{
	const json_t *part = json_object_get(d, "part"), *hash = json_object_get(d, "hash"),
		     *extra = json_object_get(d, "extra"), *state = json_object_get(d, "state"),
		     *by = json_object_get(d, "auto");
	struct table t;
	size_t i;

	(void)arg;
	printf("map epoch %s, overrides %s; fallback reads %s, keys moved %s, moves put back "
	       "%s\n",
		jfmt(json_object_get(d, "epoch")), jfmt(json_object_get(d, "overrides")),
		jfmt(json_object_get(d, "fallback_reads")), jfmt(json_object_get(d, "moved_keys")),
		jfmt(json_object_get(d, "moves_restored")));
	printf("automatic: %s; overridden %s, undone %s\n",
		json_integer_value(json_object_get(d, "auto_enabled")) ? "on" : "off",
		jfmt(json_object_get(d, "auto_adds")), jfmt(json_object_get(d, "auto_removes")));
	if (json_array_size(part) == 0)
		return;
	table_init(&t, 5);
	table_right(&t, 2);
	table_add(&t, "part");
	table_add(&t, "hash");
	table_add(&t, "extra");
	table_add(&t, "state");
	table_add(&t, "by");
	for (i = 0; i < json_array_size(part); i++) {
		const char *p = jfmt(json_array_get(part, i));

		table_add(&t, "%s", p[0] != '\0' ? p : "(long)");
		table_add(&t, "%s", jfmt(json_array_get(hash, i)));
		table_add(&t, "%s", jfmt(json_array_get(extra, i)));
		table_add(&t, "%s", jfmt(json_array_get(state, i)));
		table_add(&t, "%s",
			json_integer_value(json_array_get(by, i)) ? "keymapd" : "operator");
	}
	table_print(&t);
	table_free(&t);
}

static void
show_changed(const json_t *d, const char *arg)
{
	printf("override of %s: %s (map epoch %s)\n", arg, jfmt(json_object_get(d, "override")),
		jfmt(json_object_get(d, "epoch")));
}

int
cmd_overrides(struct ctl *c, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return usage_error("overrides takes no argument");
	return tel_showf(c, show_overrides, NULL, "/keymap/overrides");
}

/* A routing part on the telemetry line: no comma (the parameter separator), 1..250 bytes. */
static int
part_ok(const char *p)
{
	size_t len = strlen(p);

	return len >= 1 && len <= 250 && strchr(p, ',') == NULL;
}

/* override add PART [EXTRA] | override remove PART */
int
cmd_override(struct ctl *c, int argc, char **argv)
{
	uint64_t extra = 1;

	if (argc >= 3 && strcmp(argv[1], "add") == 0) {
		if (argc > 4 || !part_ok(argv[2]))
			return usage_error("override add takes a routing part (1..250 bytes, no "
					   "comma) and an optional EXTRA");
		if (argc == 4 && km_util_parse_u64(argv[3], 1, 8, &extra) < 0)
			return usage_error("override add: EXTRA '%s' is not 1..8", argv[3]);
		return tel_showf(c, show_changed, argv[2], "/keymap/override_add,%s,%llu", argv[2],
			(unsigned long long)extra);
	}
	if (argc == 3 && strcmp(argv[1], "remove") == 0) {
		if (!part_ok(argv[2]))
			return usage_error("override remove takes a routing part (1..250 bytes, "
					   "no comma)");
		return tel_showf(c, show_changed, argv[2], "/keymap/override_remove,%s", argv[2]);
	}
	return usage_error("usage: override add PART [EXTRA] | override remove PART");
}
