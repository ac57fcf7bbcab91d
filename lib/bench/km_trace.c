/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Replay-CSV traces: the line parser and the file loader (format in docs/trace-format.md).
 *
 * The loader reads the file line by line, so memory holds only the records and the
 * distinct keys, never the file. Keys are interned through an open-addressing table over
 * XXH3 whose slots hold key ids, not pointers: the key arena may move while it grows, and
 * the public key pointers are set once, after the last line.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Inline XXH3: lib/bench does not link libxxhash and only the interning table hashes. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <km_util.h>

#include "km_trace.h"
#include "km_workload.h"

#define KEY_LEN_MAX   250
#define HEADER_PREFIX "timestamp_us"
#define FIELDS_MAX    5
/* Longest field text quoted in an error message; longer ones end in "...". */
#define SHOW_MAX   32
#define SHOW_BUF   (SHOW_MAX * 4 + 4)
#define REASON_MAX 256

#define SLOT_EMPTY UINT32_MAX
#define TABLE_MIN  1024 /* slots, a power of two */
#define ARENA_MIN  65536
#define RECS_MIN   4096

static void __attribute__((format(printf, 3, 4)))
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/*
 * Render a field for an error message: bytes outside printable ASCII as \xNN, so a stray
 * '\r' or a binary file gives a readable message, and at most SHOW_MAX bytes of it.
 */
static const char *
show(const char *s, size_t len, char *buf)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, n = len > SHOW_MAX ? SHOW_MAX : len, o = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f) {
			buf[o++] = (char)c;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 0xf];
		}
	}
	if (n < len) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

static int
num_err(int rc, const char *name, const char *s, size_t len, uint64_t max, char *err, size_t errlen)
{
	char buf[SHOW_BUF];

	if (rc == -EINVAL)
		set_err(err, errlen, "%s '%s' is not a decimal number", name, show(s, len, buf));
	else
		set_err(err, errlen, "%s %s exceeds %" PRIu64, name, show(s, len, buf), max);
	return -EINVAL;
}

int
km_trace_parse_line(const char *line, size_t len, uint32_t value_max, struct km_trace_line *out,
	char *err, size_t errlen)
{
	const char *f[FIELDS_MAX];
	size_t fl[FIELDS_MAX];
	char buf[SHOW_BUF];
	unsigned int nb = 0;
	const char *p, *end;
	uint64_t v;
	size_t i;
	int rc;

	if ((line == NULL && len != 0) || out == NULL) {
		set_err(err, errlen, "invalid argument");
		return -EINVAL;
	}
	if (len == 0 || line[0] == '#')
		return 0;

	/* Split on commas; the key may hold none, so the split is unambiguous. */
	p = line;
	end = line + len;
	for (;;) {
		const char *c = memchr(p, ',', (size_t)(end - p));
		const char *fe = c != NULL ? c : end;

		if (nb < FIELDS_MAX) {
			f[nb] = p;
			fl[nb] = (size_t)(fe - p);
		}
		nb++;
		if (c == NULL)
			break;
		p = c + 1;
	}
	if (nb != 4 && nb != 5) {
		set_err(err, errlen, "expected 4 or 5 comma-separated fields, found %u", nb);
		return -EINVAL;
	}

	rc = km_util_parse_u64n(f[0], fl[0], 0, UINT64_MAX, &out->ts_us);
	if (rc < 0)
		return num_err(rc, "timestamp_us", f[0], fl[0], UINT64_MAX, err, errlen);

	if (fl[1] == 3 && memcmp(f[1], "GET", 3) == 0) {
		out->op = KM_WL_GET;
	} else if (fl[1] == 3 && memcmp(f[1], "PUT", 3) == 0) {
		out->op = KM_WL_PUT;
	} else if (fl[1] == 3 && memcmp(f[1], "DEL", 3) == 0) {
		out->op = KM_WL_DEL;
	} else {
		set_err(err, errlen, "op '%s' is not GET, PUT or DEL", show(f[1], fl[1], buf));
		return -EINVAL;
	}

	if (fl[2] == 0) {
		set_err(err, errlen, "key is empty");
		return -EINVAL;
	}
	if (fl[2] > KEY_LEN_MAX) {
		set_err(err, errlen, "key is %zu bytes, longer than %d", fl[2], KEY_LEN_MAX);
		return -EINVAL;
	}
	for (i = 0; i < fl[2]; i++) {
		unsigned char c = (unsigned char)f[2][i];

		if (c < 0x20 || c == 0x7f) {
			set_err(err, errlen, "key has control character 0x%02x at offset %zu", c,
				i);
			return -EINVAL;
		}
	}
	out->key = f[2];
	out->klen = fl[2];

	rc = km_util_parse_u64n(f[3], fl[3], 0, value_max, &v);
	if (rc < 0)
		return num_err(rc, "value_size", f[3], fl[3], value_max, err, errlen);
	out->value_size = (uint32_t)v;

	out->session = 0;
	if (nb == 5) {
		rc = km_util_parse_u64n(f[4], fl[4], 0, UINT32_MAX, &v);
		if (rc < 0)
			return num_err(rc, "session", f[4], fl[4], UINT32_MAX, err, errlen);
		out->session = (uint32_t)v;
	}
	return 1;
}

/* Loader state beyond the trace itself; freed when the load ends either way. */
struct loader {
	struct km_trace *t;
	size_t recs_cap;
	size_t keys_cap;
	size_t *koff;    /* key id -> offset of its bytes in the arena */
	uint64_t *slots; /* (hash >> 32) << 32 | key id; SLOT_EMPTY in the low half: free */
	size_t mask;     /* slots - 1 */
};

static inline uint64_t
key_hash(const char *key, size_t len)
{
	return XXH3_64bits(key, len);
}

static inline uint64_t
slot_make(uint64_t h, uint32_t id)
{
	return (h & 0xffffffff00000000ULL) | id;
}

static inline uint32_t
slot_id(uint64_t s)
{
	return (uint32_t)s;
}

static int
table_grow(struct loader *ld)
{
	size_t n = (ld->mask + 1) * 2, i;
	uint64_t *s = malloc(n * sizeof(*s));

	if (s == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		s[i] = SLOT_EMPTY;
	/* Rehash from the arena rather than store every full hash: growth is rare. */
	for (i = 0; i < ld->t->nb_keys; i++) {
		const struct km_trace_key *k = &ld->t->keys[i];
		uint64_t h = key_hash(ld->t->arena + ld->koff[i], k->len);
		size_t j = (size_t)h & (n - 1);

		while (slot_id(s[j]) != SLOT_EMPTY)
			j = (j + 1) & (n - 1);
		s[j] = slot_make(h, (uint32_t)i);
	}
	free(ld->slots);
	ld->slots = s;
	ld->mask = n - 1;
	return 0;
}

/* Double an array (or allocate min elements); cap changes only on success. */
static void *
grow(void *p, size_t *cap, size_t elt, size_t min)
{
	size_t n = *cap == 0 ? min : *cap * 2;

	if (n > SIZE_MAX / elt)
		return NULL;
	p = realloc(p, n * elt);
	if (p != NULL)
		*cap = n;
	return p;
}

/* @return the key's id, or -ENOMEM, or -E2BIG when ids would run out. */
static int64_t
intern(struct loader *ld, const char *key, size_t len, uint32_t value_size)
{
	struct km_trace *t = ld->t;
	uint64_t h = key_hash(key, len);
	size_t j = (size_t)h & ld->mask;
	struct km_trace_key *k;
	uint32_t id;

	for (;;) {
		uint64_t s = ld->slots[j];

		id = slot_id(s);
		if (id == SLOT_EMPTY)
			break;
		if ((s >> 32) == (h >> 32) && t->keys[id].len == len &&
			memcmp(t->arena + ld->koff[id], key, len) == 0)
			return id;
		j = (j + 1) & ld->mask;
	}

	/* SLOT_EMPTY is no id, and the LRU simulator needs one more index for its list. */
	if (t->nb_keys >= UINT32_MAX - 1)
		return -E2BIG;
	if (t->nb_keys == ld->keys_cap) {
		size_t cap = ld->keys_cap;
		void *p = grow(ld->koff, &cap, sizeof(*ld->koff), RECS_MIN);

		if (p == NULL)
			return -ENOMEM;
		ld->koff = p;
		p = grow(t->keys, &ld->keys_cap, sizeof(*t->keys), RECS_MIN);
		if (p == NULL)
			return -ENOMEM;
		t->keys = p;
	}
	while (t->arena_cap - t->arena_len < len) {
		void *p = grow(t->arena, &t->arena_cap, 1, ARENA_MIN);

		if (p == NULL)
			return -ENOMEM;
		t->arena = p;
	}

	id = (uint32_t)t->nb_keys;
	memcpy(t->arena + t->arena_len, key, len);
	ld->koff[id] = t->arena_len;
	t->arena_len += len;
	k = &t->keys[id];
	k->key = NULL; /* set once the arena stops moving */
	k->len = (uint16_t)len;
	k->first_value_size = value_size;
	t->nb_keys++;
	ld->slots[j] = slot_make(h, id);
	/* Load factor at most 1/2 keeps linear probing short. */
	if (t->nb_keys * 2 > ld->mask + 1 && table_grow(ld) < 0)
		return -ENOMEM;
	return id;
}

static int
add_rec(struct loader *ld, const struct km_trace_line *l, uint32_t key_id)
{
	struct km_trace *t = ld->t;
	struct km_trace_rec *r;

	if (t->nb_recs == ld->recs_cap) {
		void *p = grow(t->recs, &ld->recs_cap, sizeof(*t->recs), RECS_MIN);

		if (p == NULL)
			return -ENOMEM;
		t->recs = p;
	}
	r = &t->recs[t->nb_recs++];
	r->ts_us = l->ts_us;
	r->key_id = key_id;
	r->value_size = l->value_size;
	r->session = l->session;
	r->op = l->op;
	return 0;
}

/* Give back the growth slack and point the keys into the arena, now that it is final. */
static void
finish(struct loader *ld)
{
	struct km_trace *t = ld->t;
	void *p;
	size_t i;

	if (t->nb_recs > 0 && t->nb_recs < ld->recs_cap) {
		p = realloc(t->recs, t->nb_recs * sizeof(*t->recs));
		if (p != NULL)
			t->recs = p;
	}
	if (t->nb_keys > 0 && t->nb_keys < ld->keys_cap) {
		p = realloc(t->keys, t->nb_keys * sizeof(*t->keys));
		if (p != NULL)
			t->keys = p;
	}
	if (t->arena_len > 0 && t->arena_len < t->arena_cap) {
		p = realloc(t->arena, t->arena_len);
		if (p != NULL) {
			t->arena = p;
			t->arena_cap = t->arena_len;
		}
	}
	for (i = 0; i < t->nb_keys; i++)
		t->keys[i].key = t->arena + ld->koff[i];
}

int
km_trace_load(const char *path, uint32_t value_max, struct km_trace **out, char *err, size_t errlen)
{
	struct loader ld = {0};
	struct km_trace_line l;
	char reason[REASON_MAX];
	uint64_t prev_ts = 0;
	size_t lineno = 0, cap = 0, i;
	char *line = NULL;
	ssize_t n;
	FILE *f;
	int rc = 0;

	if (path == NULL || out == NULL) {
		set_err(err, errlen, "invalid argument");
		return -EINVAL;
	}
	f = fopen(path, "r");
	if (f == NULL) {
		rc = -errno;
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	ld.t = calloc(1, sizeof(*ld.t));
	ld.slots = malloc(TABLE_MIN * sizeof(*ld.slots));
	if (ld.t == NULL || ld.slots == NULL) {
		rc = -ENOMEM;
		goto nomem;
	}
	for (i = 0; i < TABLE_MIN; i++)
		ld.slots[i] = SLOT_EMPTY;
	ld.mask = TABLE_MIN - 1;

	for (;;) {
		size_t len;
		int64_t id;

		/* getline() reports a failed allocation through errno only, not ferror(). */
		errno = 0;
		n = getline(&line, &cap, f);
		if (n < 0)
			break;
		len = (size_t)n;
		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			len--;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (len >= sizeof(HEADER_PREFIX) - 1 &&
			memcmp(line, HEADER_PREFIX, sizeof(HEADER_PREFIX) - 1) == 0) {
			if (lineno == 1)
				continue;
			snprintf(reason, sizeof(reason), "header line is only allowed as line 1");
			rc = -EINVAL;
			goto bad;
		}
		rc = km_trace_parse_line(line, len, value_max, &l, reason, sizeof(reason));
		if (rc == 0)
			continue;
		if (rc < 0)
			goto bad;
		if (ld.t->nb_recs > 0 && l.ts_us < prev_ts) {
			snprintf(reason, sizeof(reason),
				"timestamp_us %" PRIu64
				" is less than the previous record's %" PRIu64,
				l.ts_us, prev_ts);
			rc = -EINVAL;
			goto bad;
		}
		prev_ts = l.ts_us;
		id = intern(&ld, l.key, l.klen, l.value_size);
		if (id == -E2BIG) {
			snprintf(reason, sizeof(reason), "more than %" PRIu32 " distinct keys",
				UINT32_MAX - 1);
			rc = -EINVAL;
			goto bad;
		}
		if (id < 0 || add_rec(&ld, &l, (uint32_t)id) < 0) {
			rc = -ENOMEM;
			goto nomem;
		}
	}
	if (errno == ENOMEM) {
		rc = -ENOMEM;
		goto nomem;
	}
	if (ferror(f)) {
		rc = errno != 0 ? -errno : -EIO;
		set_err(err, errlen, "%s: %s", path, strerror(-rc));
		goto fail;
	}
	finish(&ld);
	*out = ld.t;
	ld.t = NULL;
	rc = 0;
	goto out;

bad:
	set_err(err, errlen, "%s:%zu: %s", path, lineno, reason);
	goto fail;
nomem:
	set_err(err, errlen, "%s: out of memory", path);
fail:
	km_trace_free(ld.t);
out:
	free(line);
	free(ld.slots);
	free(ld.koff);
	fclose(f);
	return rc;
}

void
km_trace_free(struct km_trace *t)
{
	if (t == NULL)
		return;
	free(t->recs);
	free(t->keys);
	free(t->arena);
	free(t);
}
