/* SPDX-License-Identifier: BSD-3-Clause */
/* keymapctl: tunables (config, set), the log level, and prefetch. */

#include <stdio.h>
#include <string.h>

#include <km_util.h> /* KM_KEY_MAX */

#include "keymapctl.h"

/* "section.key", both made of [A-Za-z0-9_] as telemetry names are. */
static int
valid_name(const char *s)
{
	const char *dot = strchr(s, '.');
	size_t n = strlen(s);

	return dot != NULL && dot != s && dot[1] != '\0' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.") == n &&
	       strchr(dot + 1, '.') == NULL;
}

static void
show_value(const json_t *d, const char *arg)
{
	(void)arg;
	printf("%s\n", jfmt(json_object_get(d, "value")));
}

/* Every tunable: key, value, whether it can change at runtime. */
static int
config_all(struct ctl *c)
{
	json_t *root, *d, *runtime, *sec, *v, *r;
	const char *skey, *key;
	struct table t;
	char name[160];
	int rc, yes;
	size_t i;

	rc = tel_query_json(c, "/keymap/config", &root, &d);
	if (rc != 0 || root == NULL)
		return rc;
	runtime = json_object_get(d, "runtime");
	table_init(&t, 3);
	table_add(&t, "key");
	table_add(&t, "value");
	table_add(&t, "runtime");
	json_object_foreach(d, skey, sec)
	{
		if (!json_is_object(sec))
			continue;
		json_object_foreach(sec, key, v)
		{
			snprintf(name, sizeof(name), "%s.%s", skey, key);
			yes = 0;
			json_array_foreach(runtime, i, r)
			{
				if (json_is_string(r) && strcmp(json_string_value(r), name) == 0)
					yes = 1;
			}
			table_add(&t, "%s", name);
			table_add(&t, "%s", jfmt(v));
			table_add(&t, "%s", yes ? "yes" : "no");
		}
	}
	table_print(&t);
	table_free(&t);
	json_decref(root);
	return 0;
}

int
cmd_config(struct ctl *c, int argc, char **argv)
{
	if (argc > 2)
		return usage_error("config takes at most one SECTION.KEY");
	if (argc == 1)
		return config_all(c);
	if (!valid_name(argv[1]))
		return usage_error("config: '%s' is not SECTION.KEY", argv[1]);
	return tel_showf(c, show_value, NULL, "/keymap/config,%s", argv[1]);
}

/* "section.key: old -> new"; arg is the name as given, for a reply without section/key. */
static void
show_set(const json_t *d, const char *arg)
{
	if (json_is_string(json_object_get(d, "section")) &&
		json_is_string(json_object_get(d, "key")))
		printf("%s.%s: %s -> %s\n", jfmt(json_object_get(d, "section")),
			jfmt(json_object_get(d, "key")), jfmt(json_object_get(d, "old")),
			jfmt(json_object_get(d, "value")));
	else
		printf("%s: %s -> %s\n", arg, jfmt(json_object_get(d, "old")),
			jfmt(json_object_get(d, "value")));
}

int
cmd_set(struct ctl *c, int argc, char **argv)
{
	const char *name, *value, *eq;
	char buf[TEL_REQ_MAX + 1];

	if (argc == 2 && (eq = strchr(argv[1], '=')) != NULL) {
		snprintf(buf, sizeof(buf), "%.*s", (int)(eq - argv[1]), argv[1]);
		name = buf;
		value = eq + 1;
	} else if (argc == 3) {
		name = argv[1];
		value = argv[2];
	} else {
		return usage_error("set takes SECTION.KEY VALUE or SECTION.KEY=VALUE");
	}
	if (!valid_name(name))
		return usage_error("set: '%s' is not SECTION.KEY", name);
	return tel_showf(c, show_set, name, "/keymap/set,%s=%s", name, value);
}

static void
show_reload(const json_t *d, const char *arg)
{
	const char *file = json_string_value(json_object_get(d, "file"));

	(void)arg;
	printf("reloaded %s: %s tunables changed, %s need a restart (keymapd's log names "
	       "them)\n",
		file != NULL && file[0] != '\0' ? file : "(no -c file: the defaults and -o)",
		jfmt(json_object_get(d, "changed")), jfmt(json_object_get(d, "restart")));
}

int
cmd_reload(struct ctl *c, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return usage_error("reload takes no argument");
	return tel_showf(c, show_reload, NULL, "/keymap/reload");
}

static void
show_level(const json_t *d, const char *arg)
{
	(void)arg;
	printf("log level: %s\n", jfmt(json_object_get(d, "level")));
}

int
cmd_log_level(struct ctl *c, int argc, char **argv)
{
	if (argc > 2)
		return usage_error("log-level takes at most one LEVEL");
	if (argc == 1)
		return tel_showf(c, show_level, NULL, "/keymap/log_level");
	if (argv[1][0] == '\0' ||
		strspn(argv[1], "abcdefghijklmnopqrstuvwxyz"
				"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != strlen(argv[1]))
		return usage_error("log-level: '%s' is not a level name", argv[1]);
	return tel_showf(c, show_level, NULL, "/keymap/log_level,%s", argv[1]);
}

static void
show_prefetch(const json_t *d, const char *arg)
{
	printf("prefetch '%s': %s\n", arg, jfmt(json_object_get(d, "prefetch")));
}

/* "name value" of members of a dict, on one line after label. */
static void
show_line(const char *label, const json_t *d, const char *const *names)
{
	printf("%-10s", label);
	for (; *names != NULL; names++)
		printf(" %s %s", *names, jfmt(json_object_get(d, *names)));
	printf("\n");
}

static const char *
rank_of(size_t i, char *buf, size_t cap)
{
	snprintf(buf, cap, "%zu", i);
	return buf;
}

/* Predictive prefetch: state, figures, models, strongest transitions. */
static void
show_prefetch_stats(const json_t *d, const char *arg)
{
	static const char *const workers[] = {"issued", "used", "unused", "late", "refused", "harm",
		"stream", "stream_forwarded", "notes_dropped", NULL};
	static const char *const control[] = {"samples", "sent", "started", "nothing", "absent",
		"refused", "used", "unused", "late", "harm", "forwarded", NULL};
	static const char *const sched[] = {"pushed", "below_threshold", "filtered", "stale",
		"dropped_watermark", "probes", "increases", "decreases", NULL};
	static const char *const pred[] = {"observed", "predicted", "suppressed", "untracked",
		"tracked_max", "mem_bytes", NULL};
	const json_t *models = json_object_get(d, "per_model"), *top = json_object_get(d, "top");
	const json_t *m, *e;
	const char *name;
	uint64_t active = 0;
	struct table t;
	char rank[24];
	size_t i;

	(void)arg;
	jint(d, "active", &active);
	printf("prefetch   %s, models %s, sampling 1/%s, threshold %s, budget %s\n",
		active ? "on" : "off (disabled, or a store with values in DRAM)",
		jfmt(json_object_get(d, "models")), jfmt(json_object_get(d, "sampling")),
		jfmt(json_object_get(d, "threshold")), jfmt(json_object_get(d, "budget")));
	printf("result     accuracy %s, coverage %s\n", jfmt(json_object_get(d, "accuracy")),
		jfmt(json_object_get(d, "coverage")));
	show_line("workers", json_object_get(d, "workers"), workers);
	show_line("control", json_object_get(d, "control"), control);
	show_line("scheduler", json_object_get(d, "scheduler"), sched);
	show_line("predictor", json_object_get(d, "predictor"), pred);
	if (json_is_object(models)) {
		printf("\n");
		table_init(&t, 5);
		table_add(&t, "model");
		table_add(&t, "on");
		table_add(&t, "issued");
		table_add(&t, "used");
		table_add(&t, "precision");
		json_object_foreach((json_t *)models, name, m)
		{
			table_add(&t, "%s", name);
			table_add(&t, "%s", jfmt(json_object_get(m, "on")));
			table_add(&t, "%s", jfmt(json_object_get(m, "issued")));
			table_add(&t, "%s", jfmt(json_object_get(m, "used")));
			table_add(&t, "%s", jfmt(json_object_get(m, "precision")));
		}
		table_print(&t);
		table_free(&t);
	}
	if (json_is_object(top) && json_object_size(top) > 0) {
		printf("\nstrongest learned transitions\n");
		table_init(&t, 5);
		table_add(&t, "from");
		table_add(&t, "to");
		table_add(&t, "model");
		table_add(&t, "count");
		table_add(&t, "share");
		/* Ranks "1".."N": in rank order. */
		for (i = 1; (e = json_object_get(top, rank_of(i, rank, sizeof(rank)))) != NULL;
			i++) {
			table_add(&t, "%s", jfmt(json_object_get(e, "from")));
			table_add(&t, "%s", jfmt(json_object_get(e, "to")));
			table_add(&t, "%s", jfmt(json_object_get(e, "model")));
			table_add(&t, "%s", jfmt(json_object_get(e, "count")));
			table_add(&t, "%s", jfmt(json_object_get(e, "share")));
		}
		table_print(&t);
		table_free(&t);
	}
}

int
cmd_prefetch(struct ctl *c, int argc, char **argv)
{
	size_t len;

	if (argc == 1)
		return tel_showf(c, show_prefetch_stats, NULL, "/keymap/prefetch");
	if (argc != 2)
		return usage_error("prefetch takes at most one KEY");
	len = strlen(argv[1]);
	if (len == 0 || len > KM_KEY_MAX)
		return usage_error("prefetch: a key is 1 to %d bytes, not %zu", KM_KEY_MAX, len);
	/* DPDK telemetry requests are "/cmd,params": a comma would read as a separator. */
	if (strchr(argv[1], ',') != NULL)
		return usage_error("prefetch: a key with a comma cannot be sent (telemetry "
				   "parameters are comma-separated)");
	return tel_showf(c, show_prefetch, argv[1], "/keymap/prefetch,%s", argv[1]);
}
