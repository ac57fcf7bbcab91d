/* SPDX-License-Identifier: BSD-3-Clause */
/* keymapctl: JSON values as text, and aligned text tables. */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keymapctl.h"

/*
 * JSON value as text, in one of a few rotating static buffers (several may appear in one
 * printf): "-" when absent or null, integers in full, reals with one decimal (rates),
 * arrays as comma-separated items, objects as compact JSON.
 */
const char *
jfmt(const json_t *v)
{
	static char bufs[8][1024];
	static unsigned int next;
	char *b = bufs[next++ % 8];
	size_t i, n;
	char *s;

	if (v == NULL || json_is_null(v))
		return "-";
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(b, sizeof(bufs[0]), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	} else if (json_is_real(v)) {
		snprintf(b, sizeof(bufs[0]), "%.1f", json_real_value(v));
	} else if (json_is_boolean(v)) {
		snprintf(b, sizeof(bufs[0]), "%s", json_is_true(v) ? "yes" : "no");
	} else if (json_is_array(v)) {
		b[0] = '\0';
		for (i = 0, n = 0; i < json_array_size(v) && n < sizeof(bufs[0]); i++) {
			const json_t *e = json_array_get(v, i);
			const char *t = json_is_string(e) ? json_string_value(e) : NULL;
			char num[32];

			if (t == NULL && json_is_integer(e)) {
				snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
					json_integer_value(e));
				t = num;
			}
			n += snprintf(b + n, sizeof(bufs[0]) - n, "%s%s", i ? "," : "",
				t != NULL ? t : "?");
		}
	} else {
		s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		snprintf(b, sizeof(bufs[0]), "%s", s != NULL ? s : "?");
		free(s);
	}
	return b;
}

/* Non-negative integer member. @return 0, or -1 when absent or of another type. */
int
jint(const json_t *obj, const char *key, uint64_t *out)
{
	const json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

void
print_json(const json_t *v)
{
	if (json_dumpf(v, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY) != 0)
		oom();
	putchar('\n');
}

void
table_init(struct table *t, unsigned int ncols)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
	t->right = calloc(ncols, 1);
	if (t->right == NULL)
		oom();
}

void
table_right(struct table *t, unsigned int col)
{
	t->right[col] = 1;
}

/* vasprintf or exit. */
static char *
xvasprintf(const char *fmt, va_list ap)
{
	char *s;

	if (vasprintf(&s, fmt, ap) < 0)
		oom();
	return s;
}

static void
table_push(struct table *t, char *s)
{
	if (t->ncells == t->cap) {
		t->cap = t->cap != 0 ? 2 * t->cap : 64;
		t->cells = xrealloc(t->cells, t->cap * sizeof(*t->cells));
	}
	t->cells[t->ncells++] = s;
}

void
table_add(struct table *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	table_push(t, xvasprintf(fmt, ap));
	va_end(ap);
}

void
table_print(const struct table *t)
{
	size_t *width = calloc(t->ncols, sizeof(*width));
	size_t i, len;
	unsigned int col;

	if (width == NULL)
		oom();
	for (i = 0; i < t->ncells; i++) {
		len = strlen(t->cells[i]);
		if (len > width[i % t->ncols])
			width[i % t->ncols] = len;
	}
	for (i = 0; i < t->ncells; i++) {
		col = i % t->ncols;
		if (col != 0)
			fputs("  ", stdout);
		if (t->right[col])
			printf("%*s", (int)width[col], t->cells[i]);
		else if (col + 1 < t->ncols)
			printf("%-*s", (int)width[col], t->cells[i]);
		else
			fputs(t->cells[i], stdout); /* no trailing blanks */
		if (col + 1 == t->ncols || i + 1 == t->ncells)
			putchar('\n');
	}
	free(width);
}

void
table_free(struct table *t)
{
	size_t i;

	for (i = 0; i < t->ncells; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->right);
}

/* A "label  value" row. */
void
table_kv(struct table *t, const char *label, const char *fmt, ...)
{
	va_list ap;

	table_add(t, "%s", label);
	va_start(ap, fmt);
	table_push(t, xvasprintf(fmt, ap));
	va_end(ap);
}

/* "label  value" rows for v, objects flattened into "label.member". */
void
table_kv_flat(struct table *t, const char *label, const json_t *v)
{
	const char *key;
	json_t *m;
	char *name;

	if (!json_is_object(v)) {
		table_kv(t, label, "%s", jfmt(v));
		return;
	}
	json_object_foreach((json_t *)v, key, m)
	{
		if (asprintf(&name, "%s.%s", label, key) < 0)
			oom();
		table_kv_flat(t, name, m);
		free(name);
	}
}
