/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymapctl: client keys (keys, key add, key remove, key reload). keymapd draws a new key's
 * secret, writes its keys file, then serves with it; the secret is printed once, here.
 */

#include <stdio.h>
#include <string.h>

#include <km_util.h>

#include "keymapctl.h"

static void
show_keys(const json_t *d, const char *arg)
{
	const json_t *ids = json_object_get(d, "id"), *perm = json_object_get(d, "perm"),
		     *pfx = json_object_get(d, "prefixes");
	struct table t;
	size_t i;

	(void)arg;
	printf("auth %s, cookies %s, keys file %s\n",
		strcmp(jfmt(json_object_get(d, "auth")), "1") == 0 ? "required" : "optional",
		strcmp(jfmt(json_object_get(d, "cookies")), "1") == 0 ? "on" : "off",
		json_string_length(json_object_get(d, "keys_file")) != 0
			? jfmt(json_object_get(d, "keys_file"))
			: "(none)");
	if (json_array_size(ids) == 0) {
		printf("no client keys\n");
		return;
	}
	table_init(&t, 3);
	table_right(&t, 0);
	table_add(&t, "id");
	table_add(&t, "perm");
	table_add(&t, "prefixes");
	for (i = 0; i < json_array_size(ids); i++) {
		const char *p = jfmt(json_array_get(pfx, i));

		table_add(&t, "%s", jfmt(json_array_get(ids, i)));
		table_add(&t, "%s", jfmt(json_array_get(perm, i)));
		table_add(&t, "%s", p[0] != '\0' ? p : "(every key)");
	}
	table_print(&t);
	table_free(&t);
}

static void
show_added(const json_t *d, const char *arg)
{
	(void)arg;
	printf("key %s (%s) added; give the client this key (shown only now):\n%s\n",
		jfmt(json_object_get(d, "id")), jfmt(json_object_get(d, "perm")),
		jfmt(json_object_get(d, "key")));
}

static void
show_removed(const json_t *d, const char *arg)
{
	(void)arg;
	printf("key %s removed: its requests are no longer served\n",
		jfmt(json_object_get(d, "removed")));
}

static void
show_reloaded(const json_t *d, const char *arg)
{
	(void)arg;
	printf("keys file read again: %s keys\n", jfmt(json_object_get(d, "keys")));
}

int
cmd_keys(struct ctl *c, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return usage_error("keys takes no argument");
	return tel_showf(c, show_keys, NULL, "/keymap/keys");
}

/* key add [--id ID] ro|rw [PREFIX...] | key remove ID | key reload */
int
cmd_key(struct ctl *c, int argc, char **argv)
{
	char req[1100];
	uint64_t id = 0;
	size_t off;
	int i = 2;

	if (argc >= 2 && strcmp(argv[1], "add") == 0) {
		if (argc >= 4 && strcmp(argv[2], "--id") == 0) {
			if (km_util_parse_u64(argv[3], 1, UINT32_MAX, &id) < 0)
				return usage_error("key add --id: '%s' is not a key id "
						   "(1..4294967295)",
					argv[3]);
			i = 4;
		}
		if (i >= argc || (strcmp(argv[i], "ro") != 0 && strcmp(argv[i], "rw") != 0))
			return usage_error("key add [--id ID] ro|rw [PREFIX...]");
		off = (size_t)snprintf(
			req, sizeof(req), "/keymap/key_add,%llu", (unsigned long long)id);
		for (; i < argc; i++) {
			if (argv[i][0] == '\0' || argv[i][0] == '#' ||
				strpbrk(argv[i], ", \t\n") != NULL)
				return usage_error("key add: prefix '%s' is empty, starts with '#' "
						   "or holds a comma or a blank",
					argv[i]);
			off += (size_t)snprintf(req + off,
				off < sizeof(req) ? sizeof(req) - off : 0, ",%s", argv[i]);
			if (off >= sizeof(req))
				return usage_error("key add: too many or too long prefixes");
		}
		return tel_showf(c, show_added, NULL, "%s", req);
	}
	if (argc == 3 && strcmp(argv[1], "remove") == 0) {
		if (km_util_parse_u64(argv[2], 1, UINT32_MAX, &id) < 0)
			return usage_error(
				"key remove: '%s' is not a key id (1..4294967295)", argv[2]);
		return tel_showf(
			c, show_removed, NULL, "/keymap/key_remove,%llu", (unsigned long long)id);
	}
	if (argc == 2 && strcmp(argv[1], "reload") == 0)
		return tel_showf(c, show_reloaded, NULL, "/keymap/keys_reload");
	return usage_error("key add [--id ID] ro|rw [PREFIX...] | key remove ID | key reload");
}
