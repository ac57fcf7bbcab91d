/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymapctl: the shard map (shards, paged) and the re-sharding commands (split, merge,
 * move, tier, compact). A re-sharding command sends one request and prints its reply on
 * one line (or as JSON): one shape, one helper (tel_showf).
 */

#include <stdio.h>
#include <string.h>

#include <km_util.h>

#include "keymapctl.h"

/* A map that changes under the pager this many times in a row is reported, not shown. */
#define SHARDS_ATTEMPTS 5

/* Shard ids are (1 << depth) | prefix: 0 is none. */
static int
parse_shard_id(const char *s, uint64_t *id)
{
	return km_util_parse_u64(s, 1, UINT64_MAX, id);
}

static unsigned int
shard_depth(uint64_t id)
{
	return 63u - (unsigned int)__builtin_clzll(id);
}

void
shard_prefix(uint64_t id, char *buf, size_t len)
{
	unsigned int depth = shard_depth(id);
	uint64_t prefix = id & ((UINT64_C(1) << depth) - 1);
	int digits = depth == 0 ? 1 : (int)(depth + 3) / 4;

	snprintf(buf, len, "0x%0*llx/%u", digits, (unsigned long long)prefix, depth);
}

/* Append the arrays of one shards page to those of the first. */
static void
shards_append(json_t *all, json_t *page)
{
	json_t *v, *dst;
	const char *key;

	json_object_foreach(page, key, v)
	{
		dst = json_object_get(all, key);
		if (json_is_array(v) && json_is_array(dst) && json_array_extend(dst, v) != 0)
			oom();
	}
}

int
shards_fetch(struct ctl *c, json_t **out)
{
	uint64_t first, next, nb, epoch, epoch0 = 0, n;
	json_t *root, *d, *all = NULL, *v;
	unsigned int attempt;
	const char *key;
	int rc;

	for (attempt = 0; attempt < SHARDS_ATTEMPTS; attempt++) {
		first = 0;
		for (;;) {
			rc = tel_queryf(
				c, &root, &d, "/keymap/shards,%llu", (unsigned long long)first);
			if (rc != 0) {
				json_decref(all);
				return rc;
			}
			n = json_array_size(json_object_get(d, "id"));
			if (jint(d, "epoch", &epoch) != 0 || jint(d, "nb_shards", &nb) != 0 ||
				jint(d, "next", &next) != 0 ||
				!json_is_array(json_object_get(d, "id")))
				goto bad;
			json_object_foreach(d, key, v)
			{
				if (json_is_array(v) && json_array_size(v) != n)
					goto bad;
			}
			if (first == 0) {
				all = json_deep_copy(d);
				if (all == NULL)
					oom();
				epoch0 = epoch;
			} else if (epoch != epoch0) {
				json_decref(root);
				json_decref(all);
				all = NULL;
				break; /* the map changed while paging: from the start */
			} else {
				shards_append(all, d);
			}
			json_decref(root);
			if (next >= nb) {
				json_object_set_new(all, "next", json_integer((json_int_t)next));
				*out = all;
				return 0;
			}
			if (next <= first) {
				errmsg("shards: page at %llu does not advance (next %llu)",
					(unsigned long long)first, (unsigned long long)next);
				json_decref(all);
				return EXIT_TRANSPORT;
			}
			first = next;
		}
	}
	errmsg("shards: the shard map changed %u times while it was read; try again",
		SHARDS_ATTEMPTS);
	return EXIT_TRANSPORT;
bad:
	errmsg("shards: reply to /keymap/shards,%llu lacks epoch, nb_shards, next or id, or "
	       "its arrays differ in length",
		(unsigned long long)first);
	json_decref(root);
	json_decref(all);
	return EXIT_TRANSPORT;
}

/*
 * Below the shards, one row per worker from /keymap/stats: requests/s (decayed), busy
 * share, shards owned, measured capacity; then the thresholds in force. Nothing when
 * keymapd does not report them (older versions).
 */
static void
print_workers(struct ctl *c)
{
	json_t *root, *d, *w, *bal;
	struct table t;
	uint64_t nw = 0, i;
	char name[24];

	if (tel_query(c, "/keymap/stats", &root, &d) != 0)
		return;
	if (jint(d, "workers_listed", &nw) != 0 || nw == 0 ||
		json_object_get(json_object_get(d, "w0"), "req_per_s") == NULL) {
		json_decref(root);
		return;
	}
	table_init(&t, 5);
	for (i = 0; i < 5; i++) {
		if (i > 0)
			table_right(&t, (unsigned int)i);
	}
	table_add(&t, "worker");
	table_add(&t, "req/s");
	table_add(&t, "busy");
	table_add(&t, "shards");
	table_add(&t, "capacity");
	for (i = 0; i < nw; i++) {
		snprintf(name, sizeof(name), "w%llu", (unsigned long long)i);
		w = json_object_get(d, name);
		table_add(&t, "%llu", (unsigned long long)i);
		table_add(&t, "%s", jfmt(json_object_get(w, "req_per_s")));
		table_add(&t, "%s%%", jfmt(json_object_get(w, "busy_pct")));
		table_add(&t, "%s", jfmt(json_object_get(w, "owned_shards")));
		table_add(&t, "%s", jfmt(json_object_get(w, "capacity")));
	}
	putchar('\n');
	table_print(&t);
	table_free(&t);
	bal = json_object_get(d, "balance");
	if (json_is_object(bal))
		printf("\nmost loaded worker at %s%% of the mean; in force (0: off): split above "
		       "%s req/s, "
		       "merge below %s req/s, balance above a mean of %s req/s\n",
			jfmt(json_object_get(bal, "imbalance_pct")),
			jfmt(json_object_get(bal, "split_rate")),
			jfmt(json_object_get(bal, "merge_rate")),
			jfmt(json_object_get(bal, "min_rate")));
	json_decref(root);
}

int
cmd_shards(struct ctl *c, int argc, char **argv)
{
	static const char *const cols[] = {
		"id", "depth", "prefix", "owner", "keys", "bytes", "rate", "tier", "state"};
	json_t *all, *ids, *rate;
	char prefix[40];
	struct table t;
	uint64_t id;
	size_t i;
	int rc;

	(void)argv;
	if (argc != 1)
		return usage_error("shards takes no argument");
	rc = shards_fetch(c, &all);
	if (rc != 0)
		return rc;
	if (c->json) {
		print_json(all);
		json_decref(all);
		return 0;
	}
	ids = json_object_get(all, "id");
	printf("epoch %s, %s shards\n\n", jfmt(json_object_get(all, "epoch")),
		jfmt(json_object_get(all, "nb_shards")));
	table_init(&t, 9);
	for (i = 0; i < 9; i++) {
		if (i != 2 && i < 7)
			table_right(&t, (unsigned int)i);
		table_add(&t, "%s", cols[i]);
	}
	for (i = 0; i < json_array_size(ids); i++) {
		const json_t *idv = json_array_get(ids, i);

		table_add(&t, "%s", jfmt(idv));
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "depth"), i)));
		if (json_is_integer(idv) && json_integer_value(idv) > 0) {
			id = (uint64_t)json_integer_value(idv);
			shard_prefix(id, prefix, sizeof(prefix));
			table_add(&t, "%s", prefix);
		} else {
			table_add(&t, "-");
		}
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "owner"), i)));
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "keys"), i)));
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "bytes"), i)));
		rate = json_array_get(json_object_get(all, "rate"), i);
		if (json_is_number(rate))
			table_add(&t, "%.1f", json_number_value(rate));
		else
			table_add(&t, "%s", jfmt(rate));
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "tier"), i)));
		table_add(&t, "%s", jfmt(json_array_get(json_object_get(all, "state"), i)));
	}
	table_print(&t);
	table_free(&t);
	json_decref(all);
	print_workers(c);
	return 0;
}

/* A split or merge still copying when the command's wait ran out: it goes on. */
static int
show_copying(const json_t *d, const char *what)
{
	const char *state = json_string_value(json_object_get(d, "state"));

	if (state == NULL || strcmp(state, "copying") != 0)
		return 0;
	printf("%s of shard %s still copying on worker %s (%s of %s entries): it goes on; "
	       "keymapctl shards shows the result\n",
		what, jfmt(json_object_get(d, "shard")), jfmt(json_object_get(d, "owner")),
		jfmt(json_object_get(d, "copied")), jfmt(json_object_get(d, "source_keys")));
	return 1;
}

static void
show_split(const json_t *d, const char *arg)
{
	const json_t *ch = json_object_get(d, "children");

	(void)arg;
	if (show_copying(d, "split"))
		return;
	printf("shard %s split into %s and %s (worker %s): %s keys copied while serving in "
	       "%s ms, paused %s us, epoch %s\n",
		jfmt(json_object_get(d, "shard")), jfmt(json_array_get(ch, 0)),
		jfmt(json_array_get(ch, 1)), jfmt(json_object_get(d, "owner")),
		jfmt(json_object_get(d, "keys")), jfmt(json_object_get(d, "copy_ms")),
		jfmt(json_object_get(d, "pause_us")), jfmt(json_object_get(d, "epoch")));
}

int
cmd_split(struct ctl *c, int argc, char **argv)
{
	uint64_t id;

	if (argc != 2 || parse_shard_id(argv[1], &id) != 0)
		return usage_error("split takes one shard id (an integer >= 1)");
	return tel_showf(c, show_split, NULL, "/keymap/split,%llu", (unsigned long long)id);
}

static void
show_merge(const json_t *d, const char *arg)
{
	const json_t *m = json_object_get(d, "merged");

	(void)arg;
	if (show_copying(d, "merge"))
		return;
	printf("shards %s and %s merged into %s (worker %s): %s keys copied while serving in "
	       "%s ms, paused %s us, epoch %s\n",
		jfmt(json_array_get(m, 0)), jfmt(json_array_get(m, 1)),
		jfmt(json_object_get(d, "shard")), jfmt(json_object_get(d, "owner")),
		jfmt(json_object_get(d, "keys")), jfmt(json_object_get(d, "copy_ms")),
		jfmt(json_object_get(d, "pause_us")), jfmt(json_object_get(d, "epoch")));
}

int
cmd_merge(struct ctl *c, int argc, char **argv)
{
	uint64_t id;

	if (argc != 2 || parse_shard_id(argv[1], &id) != 0)
		return usage_error("merge takes one shard id (an integer >= 1)");
	return tel_showf(c, show_merge, NULL, "/keymap/merge,%llu", (unsigned long long)id);
}

static void
show_move(const json_t *d, const char *arg)
{
	(void)arg;
	printf("shard %s moved from worker %s to worker %s: %s keys, paused %s us, "
	       "epoch %s\n",
		jfmt(json_object_get(d, "shard")), jfmt(json_object_get(d, "from")),
		jfmt(json_object_get(d, "to")), jfmt(json_object_get(d, "keys")),
		jfmt(json_object_get(d, "pause_us")), jfmt(json_object_get(d, "epoch")));
}

int
cmd_move(struct ctl *c, int argc, char **argv)
{
	uint64_t id, worker;

	if (argc != 3 || parse_shard_id(argv[1], &id) != 0 ||
		km_util_parse_u64(argv[2], 0, UINT16_MAX, &worker) != 0)
		return usage_error("move takes a shard id (an integer >= 1) and a worker number");
	return tel_showf(c, show_move, NULL, "/keymap/move,%llu,%llu", (unsigned long long)id,
		(unsigned long long)worker);
}

/* The reply to a tier change or a compaction {shard, done, keys, pause_us}: done is the
 * tier the shard is now in, or "compacted". */
static void
show_retier(const json_t *d, const char *arg)
{
	const json_t *done = json_object_get(d, "done");

	(void)arg;
	if (json_is_string(done) && (strcmp(json_string_value(done), "hot") == 0 ||
					    strcmp(json_string_value(done), "cold") == 0))
		printf("shard %s moved to the %s tier: %s keys, paused %s us\n",
			jfmt(json_object_get(d, "shard")), jfmt(done),
			jfmt(json_object_get(d, "keys")), jfmt(json_object_get(d, "pause_us")));
	else
		printf("shard %s %s: %s keys, paused %s us\n", jfmt(json_object_get(d, "shard")),
			jfmt(done), jfmt(json_object_get(d, "keys")),
			jfmt(json_object_get(d, "pause_us")));
}

int
cmd_tier(struct ctl *c, int argc, char **argv)
{
	uint64_t id;

	if (argc != 3 || parse_shard_id(argv[1], &id) != 0)
		return usage_error("tier takes a shard id (an integer >= 1) and hot or cold");
	if (strcmp(argv[2], "hot") != 0 && strcmp(argv[2], "cold") != 0)
		return usage_error("tier: '%s' is not a tier (hot or cold)", argv[2]);
	return tel_showf(
		c, show_retier, NULL, "/keymap/tier,%llu,%s", (unsigned long long)id, argv[2]);
}

int
cmd_compact(struct ctl *c, int argc, char **argv)
{
	uint64_t id;

	if (argc != 2 || parse_shard_id(argv[1], &id) != 0)
		return usage_error("compact takes one shard id (an integer >= 1)");
	return tel_showf(c, show_retier, NULL, "/keymap/compact,%llu", (unsigned long long)id);
}

int
cmd_accept_loss(struct ctl *c, int argc, char **argv)
{
	uint64_t id;

	if (argc != 2 || parse_shard_id(argv[1], &id) != 0)
		return usage_error("accept-loss takes one shard id (an integer >= 1)");
	return tel_showf(c, show_retier, NULL, "/keymap/accept_loss,%llu", (unsigned long long)id);
}
