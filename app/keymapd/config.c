/* SPDX-License-Identifier: BSD-3-Clause */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cfgfile.h>

#include <km_allow.h>
#include <km_predict.h>
#include <km_proto.h>
#include <km_shardmap.h>
#include <km_util.h>

#include "config_priv.h"

static const struct conf_desc *
desc_find(const char *section, const char *key)
{
	size_t i;

	for (i = 0; i < km_conf_nb_descs; i++)
		if (strcmp(km_conf_descs[i].section, section) == 0 &&
			strcmp(km_conf_descs[i].key, key) == 0)
			return &km_conf_descs[i];
	return NULL;
}

static int
section_known(const char *section)
{
	size_t i;

	for (i = 0; i < km_conf_nb_descs; i++)
		if (strcmp(km_conf_descs[i].section, section) == 0)
			return 1;
	return 0;
}

/* "a, b, c": the sections (section NULL) or the keys of one section, for error messages. */
static void
names_list(const char *section, char *buf, size_t len)
{
	size_t i, n = 0;
	int w;

	buf[0] = '\0';
	for (i = 0; i < km_conf_nb_descs && n < len; i++) {
		const char *name;

		if (section == NULL) {
			if (i > 0 &&
				strcmp(km_conf_descs[i].section, km_conf_descs[i - 1].section) == 0)
				continue;
			name = km_conf_descs[i].section;
		} else {
			if (strcmp(km_conf_descs[i].section, section) != 0)
				continue;
			name = km_conf_descs[i].key;
		}
		w = snprintf(buf + n, len - n, "%s%s", n == 0 ? "" : ", ", name);
		if (w < 0)
			break;
		n += (size_t)w;
	}
}

static int
enum_has(const char *choices, const char *v)
{
	size_t n = strlen(v);
	const char *p = choices;

	while (*p != '\0') {
		const char *e = strchr(p, '|');
		size_t len = e == NULL ? strlen(p) : (size_t)(e - p);

		if (len == n && strncmp(p, v, n) == 0)
			return 1;
		if (e == NULL)
			break;
		p = e + 1;
	}
	return 0;
}

/*
 * Parse value v for d into c. One parser for every source (file, -o, keymapctl set).
 * @return 0, or -1 with the reason in why.
 */
static int
desc_apply(const struct conf_desc *d, struct km_conf *c, const char *v, char *why, size_t len)
{
	char *base = (char *)c + d->off;
	uint64_t u;
	struct km_allow allow;
	struct in_addr a;

	switch (d->type) {
	case T_U64:
		if ((d->flags & F_AUTO) != 0 && strcmp(v, "auto") == 0) {
			*(uint64_t *)base = KM_CONF_AUTO;
			return 0;
		}
		if (km_util_parse_u64(v, 0, UINT64_MAX, &u) < 0) {
			if ((d->flags & F_AUTO) != 0) {
				snprintf(why, len, "neither a non-negative integer nor auto");
				return -1;
			}
			snprintf(why, len, "not a non-negative integer");
			return -1;
		}
		if (u < d->min || u > d->max) {
			snprintf(why, len, "out of range %" PRIu64 "..%" PRIu64, d->min, d->max);
			return -1;
		}
		if ((d->flags & F_POW2) != 0 && (u & (u - 1)) != 0) {
			snprintf(why, len, "not a power of two");
			return -1;
		}
		*(uint64_t *)base = u;
		return 0;
	case T_ENUM:
		if (!enum_has(d->choices, v)) {
			snprintf(why, len, "not one of %s", d->choices);
			return -1;
		}
		break;
	case T_CIDRS:
		if (km_allow_parse(v, &allow, why, len) < 0)
			return -1;
		break;
	case T_MODELS: {
		uint32_t mask;

		if (km_predict_models_parse(v, &mask) < 0) {
			snprintf(why, len,
				"not a list of succ, coacc, entity, stride, template (or all, "
				"none)");
			return -1;
		}
		break;
	}
	case T_STR:
		break;
	case T_IPV4:
		if (inet_pton(AF_INET, v, &a) != 1) {
			snprintf(why, len, "not an IPv4 address");
			return -1;
		}
		*(uint32_t *)base = a.s_addr;
		return 0;
	case T_CHAR:
		if (strlen(v) != 1) {
			snprintf(why, len, "not a single character");
			return -1;
		}
		/* What the INI file could not give back: a blank or the comment character. */
		if (!isgraph((unsigned char)v[0]) || v[0] == ';') {
			snprintf(why, len, "not a visible character other than ';'");
			return -1;
		}
		*(uint64_t *)base = (uint8_t)v[0];
		return 0;
	}
	/* Text kept as given: T_STR, T_ENUM, T_CIDRS, T_MODELS. */
	if (strlen(v) >= d->size) {
		snprintf(why, len, "too long (at most %zu characters)", d->size - 1);
		return -1;
	}
	strcpy(base, v);
	return 0;
}

/* The value of d in c as the INI file writes it. The only formatter of values. */
static void
desc_format(const struct conf_desc *d, const struct km_conf *c, char *buf, size_t len)
{
	const char *base = (const char *)c + d->off;
	char ip[INET_ADDRSTRLEN];

	switch (d->type) {
	case T_U64:
		if ((d->flags & F_AUTO) != 0 && *(const uint64_t *)base == KM_CONF_AUTO)
			snprintf(buf, len, "auto");
		else
			snprintf(buf, len, "%" PRIu64, *(const uint64_t *)base);
		return;
	case T_STR:
	case T_ENUM:
	case T_CIDRS:
	case T_MODELS:
		snprintf(buf, len, "%s", base);
		return;
	case T_IPV4:
		inet_ntop(AF_INET, base, ip, sizeof(ip));
		snprintf(buf, len, "%s", ip);
		return;
	case T_CHAR:
		snprintf(buf, len, "%c", (char)*(const uint64_t *)base);
		return;
	}
}

/* Two tunables that are valid alone but not together. */
struct conf_conflict {
	const struct conf_desc *a, *b;
	char why[256];
};

/*
 * Orders between tunables: lo must stay below hi (strictly, or not above it when !strict);
 * with zero_off, a 0 on either side (a disabled threshold) lifts the order; "auto" on
 * either side lifts it too (the derived values keep it: docs/operations.md 2.13). The message
 * names one side first: "[s] k = v <rel> [s] k = v (why)".
 */
static const struct conf_order {
	const char *lo_sec, *lo_key, *hi_sec, *hi_key;
	int strict, zero_off, hi_first;
	const char *rel;
	const char *why;
} conf_orders[] = {
	{"shards", "count", "shards", "max_count", 0, 0, 1, "is below",
		"automatic splits stop at max_count"},
	{"tier", "cold_rate", "tier", "warm_rate", 1, 1, 1, "is not above",
		"a promoted shard would be cold enough to demote again"},
	/* Hysteresis between the thresholds: a merged pair must not be hot enough to split. */
	{"shards", "merge_rate", "shards", "split_rate", 1, 1, 0, "is not below",
		"a merged pair would be hot enough to split again"},
	{"crew", "share_off", "crew", "share_on", 1, 0, 0, "is not below",
		"a replicated key would be withdrawn and replicated again"},
	{"shift", "share_off", "shift", "share_on", 1, 0, 0, "is not below",
		"an overridden part would be undone and overridden again"},
};

/* Constraints between tunables. @return 0, or -1 with x filled. */
static int
conf_check(const struct km_conf *c, struct conf_conflict *x)
{
	const struct conf_desc *lo, *hi, *first, *second;
	uint64_t l, h;
	size_t i;

	for (i = 0; i < sizeof(conf_orders) / sizeof(conf_orders[0]); i++) {
		const struct conf_order *o = &conf_orders[i];

		lo = desc_find(o->lo_sec, o->lo_key);
		hi = desc_find(o->hi_sec, o->hi_key);
		l = *(const uint64_t *)((const char *)c + lo->off);
		h = *(const uint64_t *)((const char *)c + hi->off);
		if ((o->zero_off && (l == 0 || h == 0)) || l == KM_CONF_AUTO || h == KM_CONF_AUTO ||
			(o->strict ? l < h : l <= h))
			continue;
		first = o->hi_first ? hi : lo;
		second = o->hi_first ? lo : hi;
		x->a = lo;
		x->b = hi;
		snprintf(x->why, sizeof(x->why),
			"[%s] %s = %" PRIu64 " %s [%s] %s = %" PRIu64 " (%s)", first->section,
			first->key, o->hi_first ? h : l, o->rel, second->section, second->key,
			o->hi_first ? l : h, o->why);
		return -1;
	}
	/* A ratio to the mean of at most 100 % holds always: every sample would move. */
	if (c->balance_pct != 0 && c->balance_pct <= 100) {
		x->a = x->b = desc_find("shards", "balance_pct");
		snprintf(x->why, sizeof(x->why),
			"[shards] balance_pct = %" PRIu64
			" is not above 100 (the busiest worker always carries at least the mean; 0 "
			"turns placement off)",
			c->balance_pct);
		return -1;
	}
	return 0;
}

uint8_t
km_durability_of(const char *name)
{
	return strcmp(name, "none") == 0 ? 0 : strcmp(name, "async") == 0 ? 1 : 2;
}

void
km_conf_defaults(struct km_conf *c)
{
	char why[128];
	size_t i;

	memset(c, 0, sizeof(*c));
	for (i = 0; i < km_conf_nb_descs; i++)
		desc_apply(&km_conf_descs[i], c, km_conf_descs[i].def, why, sizeof(why));
}

/*
 * Line numbers. rte_cfgfile does not keep them, so the file is read again line by line,
 * the way rte_cfgfile reads it: a ';' not preceded by '\' starts a comment, blanks around
 * names and values are stripped, a line of more than LINE_MAX_CHARS characters is refused.
 * rte_cfgfile silently skips a line that is neither "[section]" nor "key = value" and
 * truncates long names and values: here those are syntax errors.
 */
#define LINE_MAX_CHARS (CFG_NAME_LEN + CFG_VALUE_LEN + 2)

enum line_kind {
	LINE_BLANK,   /* empty or comment only */
	LINE_SECTION, /* name: the section */
	LINE_ENTRY,   /* name = value */
	LINE_BAD,     /* why says what is wrong */
};

static char *
strip(char *s)
{
	size_t n;

	while (isspace((unsigned char)*s))
		s++;
	n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* Classify one line (modified in place); name and value point into it. */
static enum line_kind
line_parse(char *s, char **name, char **value, const char **why)
{
	char *p, *eq;

	if (strlen(s) > LINE_MAX_CHARS) {
		*why = "line too long for rte_cfgfile (at most 322 characters)";
		return LINE_BAD;
	}
	p = strchr(s, ';');
	if (p != NULL && (p == s || p[-1] != '\\'))
		*p = '\0';
	s = strip(s);
	if (*s == '\0')
		return LINE_BLANK;
	if (*s == '[') {
		p = strchr(s, ']');
		if (p == NULL) {
			*why = "no closing ']'";
			return LINE_BAD;
		}
		if (p[1] != '\0') {
			*why = "text after ']'";
			return LINE_BAD;
		}
		*p = '\0';
		*name = strip(s + 1);
		if (**name == '\0') {
			*why = "empty section name";
			return LINE_BAD;
		}
		if (strlen(*name) >= CFG_NAME_LEN) {
			*why = "section name too long";
			return LINE_BAD;
		}
		return LINE_SECTION;
	}
	eq = strchr(s, '=');
	if (eq == NULL) {
		*why = "neither [section] nor key = value";
		return LINE_BAD;
	}
	*eq = '\0';
	*name = strip(s);
	*value = strip(eq + 1);
	if (**name == '\0') {
		*why = "no key before '='";
		return LINE_BAD;
	}
	if (strlen(*name) >= CFG_NAME_LEN) {
		*why = "key too long";
		return LINE_BAD;
	}
	if (strlen(*value) >= CFG_VALUE_LEN) {
		*why = "value too long (at most 255 characters)";
		return LINE_BAD;
	}
	return LINE_ENTRY;
}

/* What scan_file() looks for. */
struct scan_query {
	const char *section;         /* NULL: the first malformed line */
	int sec_nth;                 /* the sec_nth (from 0) header [section] */
	const char *key;             /* NULL: the header itself; else key within that section */
	int key_nth;                 /* the key_nth (from 0) occurrence of key there */
	char why[CFG_NAME_LEN + 96]; /* malformed line: what is wrong */
};

/* @return the number of the line q asks for, 0 if there is none, -1 if f cannot be read. */
static int
scan_file(FILE *f, struct scan_query *q)
{
	char *line = NULL, *name = NULL, *value = NULL;
	char cur[CFG_NAME_LEN] = "";
	int lineno = 0, sec_seen = 0, key_seen = 0, in = 0, found = 0;
	size_t cap = 0;
	const char *why = NULL;

	errno = 0;
	while (!found && getline(&line, &cap, f) >= 0) {
		enum line_kind k;

		lineno++;
		line[strcspn(line, "\n")] = '\0';
		k = line_parse(line, &name, &value, &why);
		if (q->section == NULL) {
			if (k == LINE_ENTRY && cur[0] == '\0') {
				why = "key = value before any [section]";
				k = LINE_BAD;
			}
			if (k == LINE_BAD) {
				if (cur[0] != '\0')
					snprintf(q->why, sizeof(q->why), "in [%s]: %s", cur, why);
				else
					snprintf(q->why, sizeof(q->why), "%s", why);
				found = lineno;
			} else if (k == LINE_SECTION) {
				snprintf(cur, sizeof(cur), "%s", name);
			}
			continue;
		}
		if (k == LINE_SECTION) {
			in = strcmp(name, q->section) == 0 && sec_seen++ == q->sec_nth;
			if (in && q->key == NULL)
				found = lineno;
		} else if (k == LINE_ENTRY && in && strcmp(name, q->key) == 0 &&
			   key_seen++ == q->key_nth) {
			found = lineno;
		}
	}
	if (!found && ferror(f))
		found = -errno;
	free(line);
	if (found < 0)
		errno = -found;
	return found < 0 ? -1 : found;
}

/* Line of a header or key in path, 0 when it cannot be told. */
static int
line_of(const char *path, const char *section, int sec_nth, const char *key, int key_nth)
{
	struct scan_query q = {
		.section = section, .sec_nth = sec_nth, .key = key, .key_nth = key_nth};
	FILE *f = fopen(path, "r");
	int line;

	if (f == NULL)
		return 0;
	line = scan_file(f, &q);
	fclose(f);
	return line > 0 ? line : 0;
}

/* "path:LINE" or, line unknown, "path". */
static const char *
at(char *buf, size_t len, const char *path, int line)
{
	if (line > 0)
		snprintf(buf, len, "%s:%d", path, line);
	else
		snprintf(buf, len, "%s", path);
	return buf;
}

/* Before rte_cfgfile: the file can be read and every line is well formed. */
static int
conf_precheck(const char *path, char *err, size_t errlen)
{
	struct scan_query q = {.section = NULL};
	FILE *f = fopen(path, "r");
	int line;

	if (f == NULL) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	line = scan_file(f, &q);
	if (line < 0)
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
	else if (line > 0)
		snprintf(err, errlen, "%s:%d: syntax error: %s", path, line, q.why);
	fclose(f);
	return line == 0 ? 0 : -1;
}

/* Check every section and key rte_cfgfile read and apply them to c. */
static int
conf_apply_file(
	struct rte_cfgfile *cfg, struct km_conf *c, const char *path, char *err, size_t errlen)
{
	char **secs = NULL, why[CFG_VALUE_LEN + 64], names[256], where[PATH_MAX + 16];
	struct rte_cfgfile_entry *ents = NULL;
	int nsec, i, j, k, n, nth, rc = -1;

	nsec = rte_cfgfile_num_sections(cfg, NULL, 0);
	secs = calloc(nsec > 0 ? nsec : 1, sizeof(*secs));
	if (secs == NULL)
		goto oom;
	for (i = 0; i < nsec; i++) {
		secs[i] = malloc(CFG_NAME_LEN);
		if (secs[i] == NULL)
			goto oom;
	}
	rte_cfgfile_sections(cfg, secs, nsec);
	for (i = 0; i < nsec; i++) {
		if (!section_known(secs[i])) {
			names_list(NULL, names, sizeof(names));
			snprintf(err, errlen, "%s: [%s]: unknown section (sections: %s)",
				at(where, sizeof(where), path, line_of(path, secs[i], 0, NULL, 0)),
				secs[i], names);
			goto out;
		}
		/* rte_cfgfile keeps a repeated section as a second one: refuse it. */
		for (j = 0, nth = 0; j < i; j++)
			nth += strcmp(secs[i], secs[j]) == 0;
		if (nth > 0) {
			snprintf(err, errlen, "%s: [%s]: duplicate section (first at line %d)",
				at(where, sizeof(where), path,
					line_of(path, secs[i], nth, NULL, 0)),
				secs[i], line_of(path, secs[i], 0, NULL, 0));
			goto out;
		}
		n = rte_cfgfile_section_num_entries_by_index(cfg, secs[i], i);
		free(ents);
		ents = calloc(n > 0 ? n : 1, sizeof(*ents));
		if (ents == NULL)
			goto oom;
		n = rte_cfgfile_section_entries_by_index(cfg, i, secs[i], ents, n);
		for (j = 0; j < n; j++) {
			const struct conf_desc *d = desc_find(secs[i], ents[j].name);

			/* rte_cfgfile keeps both of two equal keys (lookups see the first). */
			for (k = 0, nth = 0; k < j; k++)
				nth += strcmp(ents[k].name, ents[j].name) == 0;
			if (d == NULL) {
				names_list(secs[i], names, sizeof(names));
				snprintf(why, sizeof(why), "unknown key (keys of [%s]: %s)",
					secs[i], names);
			} else if (nth > 0) {
				snprintf(why, sizeof(why), "duplicate key (first at line %d)",
					line_of(path, secs[i], 0, ents[j].name, 0));
			} else if (desc_apply(d, c, ents[j].value, why, sizeof(why)) == 0) {
				continue;
			}
			snprintf(err, errlen, "%s: [%s] %s = '%s': %s",
				at(where, sizeof(where), path,
					line_of(path, secs[i], 0, ents[j].name, nth)),
				secs[i], ents[j].name, ents[j].value, why);
			goto out;
		}
	}
	rc = 0;
	goto out;
oom:
	snprintf(err, errlen, "%s: out of memory", path);
out:
	free(ents);
	if (secs != NULL)
		for (i = 0; i < nsec; i++)
			free(secs[i]);
	free(secs);
	return rc;
}

int
km_conf_load(struct km_conf *c, const char *path, char *err, size_t errlen)
{
	struct conf_conflict x;
	struct rte_cfgfile *cfg;
	struct km_conf tmp = *c;
	char where[PATH_MAX + 16];
	int rc, la, lb;

	if (conf_precheck(path, err, errlen) < 0)
		return -1;
	/* Empty values reach desc_apply like any other: the same answer as from -o. */
	cfg = rte_cfgfile_load(path, CFG_FLAG_EMPTY_VALUES);
	if (cfg == NULL) {
		snprintf(err, errlen, "%s: rte_cfgfile cannot load it", path);
		return -1;
	}
	rc = conf_apply_file(cfg, &tmp, path, err, errlen);
	rte_cfgfile_close(cfg);
	if (rc < 0)
		return -1;
	if (conf_check(&tmp, &x) < 0) {
		/* Point at the later of the two keys the file sets. */
		la = line_of(path, x.a->section, 0, x.a->key, 0);
		lb = line_of(path, x.b->section, 0, x.b->key, 0);
		snprintf(err, errlen, "%s: %s", at(where, sizeof(where), path, la > lb ? la : lb),
			x.why);
		return -1;
	}
	*c = tmp;
	return 0;
}

int
km_conf_set(struct km_conf *c, const char *assignment, char *err, size_t errlen)
{
	char section[CFG_NAME_LEN], key[CFG_NAME_LEN], why[CFG_VALUE_LEN + 64];
	const char *dot = strchr(assignment, '.'), *eq = strchr(assignment, '=');
	const struct conf_desc *d;
	struct conf_conflict x;
	struct km_conf tmp = *c;

	if (dot == NULL || eq == NULL || dot > eq ||
		(size_t)(dot - assignment) >= sizeof(section) ||
		(size_t)(eq - dot - 1) >= sizeof(key)) {
		snprintf(err, errlen, "'%s': expected section.key=value", assignment);
		return -1;
	}
	memcpy(section, assignment, (size_t)(dot - assignment));
	section[dot - assignment] = '\0';
	memcpy(key, dot + 1, (size_t)(eq - dot - 1));
	key[eq - dot - 1] = '\0';
	d = desc_find(section, key);
	if (d == NULL) {
		snprintf(err, errlen, "'%s': unknown key [%s] %s", assignment, section, key);
		return -1;
	}
	if (desc_apply(d, &tmp, eq + 1, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "'%s': [%s] %s = '%s': %s", assignment, section, key, eq + 1,
			why);
		return -1;
	}
	if (conf_check(&tmp, &x) < 0) {
		snprintf(err, errlen, "'%s': %s", assignment, x.why);
		return -1;
	}
	*c = tmp;
	return 0;
}

int
km_conf_take_runtime(struct km_conf *c, const struct km_conf *from, char *err, size_t errlen)
{
	struct km_conf tmp = *c;
	struct conf_conflict x;
	size_t i;

	for (i = 0; i < km_conf_nb_descs; i++) {
		const struct conf_desc *d = &km_conf_descs[i];

		if (d->flags & F_RUNTIME)
			memcpy((char *)&tmp + d->off, (const char *)from + d->off, d->size);
	}
	if (conf_check(&tmp, &x) < 0) {
		snprintf(err, errlen, "%s", x.why);
		return -1;
	}
	*c = tmp;
	return 0;
}

void
km_conf_print(const struct km_conf *c, FILE *f)
{
	char buf[KM_CONF_STR_MAX];
	const char *sec = "";
	size_t i;

	for (i = 0; i < km_conf_nb_descs; i++) {
		const struct conf_desc *d = &km_conf_descs[i];

		if (strcmp(sec, d->section) != 0) {
			fprintf(f, "%s[%s]\n", i == 0 ? "" : "\n", d->section);
			sec = d->section;
		}
		desc_format(d, c, buf, sizeof(buf));
		fprintf(f, "; %s\n%s = %s\n", d->help, d->key, buf);
	}
}

size_t
km_conf_nb_items(void)
{
	return km_conf_nb_descs;
}

void
km_conf_item(size_t i, struct km_conf_item *out)
{
	const struct conf_desc *d = &km_conf_descs[i];

	out->section = d->section;
	out->key = d->key;
	out->help = d->help;
	out->is_number = d->type == T_U64;
	out->runtime = (d->flags & F_RUNTIME) != 0;
	out->can_auto = (d->flags & F_AUTO) != 0;
}

void
km_conf_value(const struct km_conf *c, size_t i, uint64_t *num, char *buf, size_t len)
{
	const struct conf_desc *d = &km_conf_descs[i];

	if (num != NULL)
		*num = d->type == T_U64 ? *(const uint64_t *)((const char *)c + d->off) : 0;
	desc_format(d, c, buf, len);
}

int
km_conf_find(const char *name)
{
	const char *dot = strchr(name, '.');
	size_t i, n;

	if (dot == NULL)
		return -1;
	n = (size_t)(dot - name);
	for (i = 0; i < km_conf_nb_descs; i++)
		if (strlen(km_conf_descs[i].section) == n &&
			strncmp(km_conf_descs[i].section, name, n) == 0 &&
			strcmp(km_conf_descs[i].key, dot + 1) == 0)
			return (int)i;
	return -1;
}
