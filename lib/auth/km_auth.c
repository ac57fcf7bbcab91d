/* SPDX-License-Identifier: BSD-3-Clause */
/* Client keys: the keys file, the published table, key rotation (see km_auth.h). */

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include <km_util.h>

#include "km_auth.h"

static void
key_clear(struct km_auth_key *k)
{
	unsigned int i;

	for (i = 0; i < k->nb_prefix; i++)
		free(k->prefix[i]);
	k->nb_prefix = 0;
	sodium_memzero(k->secret, sizeof(k->secret));
}

int
km_auth_parse_line(const char *line, struct km_auth_key *k, char *err, size_t errlen)
{
	char buf[4096], *save = NULL, *tok, *p;
	struct km_auth_key nk = {0};
	uint64_t id;

	if (strlen(line) >= sizeof(buf)) {
		snprintf(err, errlen, "line too long");
		return -EINVAL;
	}
	strcpy(buf, line);
	/* A comment starts with a '#' at the start of a word: a '#' inside a prefix is part
	 * of it. */
	for (p = buf; *p != '\0'; p++)
		if (*p == '#' && (p == buf || strchr(" \t", p[-1]) != NULL)) {
			*p = '\0';
			break;
		}
	tok = strtok_r(buf, " \t\r\n", &save);
	if (tok == NULL)
		return 1;
	if (km_util_parse_u64(tok, 1, UINT32_MAX, &id) < 0) {
		snprintf(err, errlen, "'%s': key id not in 1..%u", tok, UINT32_MAX);
		return -EINVAL;
	}
	nk.id = (uint32_t)id;
	tok = strtok_r(NULL, " \t\r\n", &save);
	if (tok == NULL || km_secret_parse(tok, nk.secret) != 0) {
		snprintf(err, errlen, "key %u: the secret must be %d hex digits", nk.id,
			2 * KM_MAC_KEY_LEN);
		return -EINVAL;
	}
	tok = strtok_r(NULL, " \t\r\n", &save);
	if (tok == NULL || (strcmp(tok, "ro") != 0 && strcmp(tok, "rw") != 0)) {
		snprintf(err, errlen, "key %u: permission '%s' is not ro or rw", nk.id,
			tok == NULL ? "" : tok);
		return -EINVAL;
	}
	nk.write = strcmp(tok, "rw") == 0;
	while ((tok = strtok_r(NULL, " \t\r\n", &save)) != NULL) {
		size_t len = strlen(tok);

		if (nk.nb_prefix == KM_AUTH_PREFIX_MAX) {
			snprintf(err, errlen, "key %u: more than %d prefixes", nk.id,
				KM_AUTH_PREFIX_MAX);
			key_clear(&nk);
			return -EINVAL;
		}
		if (len > KM_KEY_MAX) {
			snprintf(err, errlen, "key %u: prefix longer than %d bytes", nk.id,
				KM_KEY_MAX);
			key_clear(&nk);
			return -EINVAL;
		}
		nk.prefix[nk.nb_prefix] = strdup(tok);
		if (nk.prefix[nk.nb_prefix] == NULL) {
			snprintf(err, errlen, "out of memory");
			key_clear(&nk);
			return -ENOMEM;
		}
		nk.prefix_len[nk.nb_prefix++] = (uint16_t)len;
	}
	*k = nk;
	return 0;
}

static int
cmp_id(const void *a, const void *b)
{
	const struct km_auth_key *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

void
km_auth_free(struct km_auth *a)
{
	uint32_t i;

	if (a == NULL)
		return;
	for (i = 0; i < a->nb; i++)
		key_clear(&a->keys[i]);
	free(a->keys);
	free(a);
}

/* Sort t's keys; refuse a duplicate id. */
static int
table_finish(struct km_auth *t, uint32_t *dup)
{
	uint32_t i;

	qsort(t->keys, t->nb, sizeof(t->keys[0]), cmp_id);
	for (i = 1; i < t->nb; i++)
		if (t->keys[i].id == t->keys[i - 1].id) {
			*dup = t->keys[i].id;
			return -EINVAL;
		}
	return 0;
}

int
km_auth_load(const char *path, struct km_auth **out, char *err, size_t errlen)
{
	struct km_auth *t;
	char line[4096];
	unsigned int lineno = 0;
	struct stat st;
	uint32_t dup;
	FILE *f;
	int rc = 0;

	f = fopen(path, "re");
	if (f == NULL) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0) {
		snprintf(err, errlen, "%s: readable by group or others (mode %04o): chmod 600 it",
			path, (unsigned int)(st.st_mode & 07777));
		fclose(f);
		return -EPERM;
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL || (t->keys = calloc(KM_AUTH_KEYS_MAX, sizeof(t->keys[0]))) == NULL) {
		free(t);
		fclose(f);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char why[256];
		struct km_auth_key k;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			snprintf(err, errlen, "%s:%u: line too long", path, lineno);
			rc = -EINVAL;
			break;
		}
		rc = km_auth_parse_line(line, &k, why, sizeof(why));
		if (rc == 1) {
			rc = 0;
			continue;
		}
		if (rc < 0) {
			snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
			break;
		}
		if (t->nb == KM_AUTH_KEYS_MAX) {
			key_clear(&k);
			snprintf(err, errlen, "%s:%u: more than %d keys", path, lineno,
				KM_AUTH_KEYS_MAX);
			rc = -EINVAL;
			break;
		}
		t->keys[t->nb++] = k;
	}
	if (rc == 0 && ferror(f)) {
		rc = -EIO;
		snprintf(err, errlen, "%s: read error", path);
	}
	fclose(f);
	sodium_memzero(line, sizeof(line));
	if (rc == 0 && table_finish(t, &dup) < 0) {
		snprintf(err, errlen, "%s: key id %u appears twice", path, dup);
		rc = -EINVAL;
	}
	if (rc < 0) {
		km_auth_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

/* A deep copy of k into d. */
static int
key_copy(struct km_auth_key *d, const struct km_auth_key *k)
{
	unsigned int i;

	*d = *k;
	d->nb_prefix = 0;
	for (i = 0; i < k->nb_prefix; i++) {
		d->prefix[i] = strdup(k->prefix[i]);
		if (d->prefix[i] == NULL) {
			key_clear(d);
			return -ENOMEM;
		}
		d->nb_prefix++;
	}
	return 0;
}

int
km_auth_with(const struct km_auth *a, const struct km_auth_key *k, uint32_t remove_id,
	struct km_auth **out)
{
	struct km_auth *t;
	uint32_t i, dup, nb = a != NULL ? a->nb : 0;

	if (k != NULL && km_auth_find(a, k->id) != NULL)
		return -EEXIST;
	if (k == NULL && remove_id != 0 && km_auth_find(a, remove_id) == NULL)
		return -ENOENT;
	if (k != NULL && nb == KM_AUTH_KEYS_MAX)
		return -ENOSPC;
	t = calloc(1, sizeof(*t));
	if (t == NULL || (t->keys = calloc(nb + 1, sizeof(t->keys[0]))) == NULL) {
		free(t);
		return -ENOMEM;
	}
	t->required = a != NULL ? a->required : 0;
	for (i = 0; i < nb; i++) {
		if (k == NULL && a->keys[i].id == remove_id)
			continue;
		if (key_copy(&t->keys[t->nb], &a->keys[i]) < 0)
			goto nomem;
		t->nb++;
	}
	if (k != NULL) {
		if (key_copy(&t->keys[t->nb], k) < 0)
			goto nomem;
		t->nb++;
	}
	(void)table_finish(t, &dup); /* ids checked above */
	*out = t;
	return 0;
nomem:
	km_auth_free(t);
	return -ENOMEM;
}

int
km_auth_format(const struct km_auth_key *k, char *buf, size_t len)
{
	size_t off;
	unsigned int i;
	int n;

	n = snprintf(buf, len, "%u ", k->id);
	off = n < 0 ? 0 : (size_t)n;
	for (i = 0; i < KM_MAC_KEY_LEN; i++) {
		n = snprintf(buf + (off < len ? off : len), off < len ? len - off : 0, "%02x",
			k->secret[i]);
		off += n < 0 ? 0 : (size_t)n;
	}
	n = snprintf(buf + (off < len ? off : len), off < len ? len - off : 0, " %s",
		k->write ? "rw" : "ro");
	off += n < 0 ? 0 : (size_t)n;
	for (i = 0; i < k->nb_prefix; i++) {
		n = snprintf(buf + (off < len ? off : len), off < len ? len - off : 0, " %s",
			k->prefix[i]);
		off += n < 0 ? 0 : (size_t)n;
	}
	return (int)off;
}

int
km_auth_save(const struct km_auth *a, const char *path, char *err, size_t errlen)
{
	char tmp[4096], dir[4096], line[4400];
	uint32_t i;
	int fd, dfd, rc = 0;
	FILE *f;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	/* A new file of our own: never a stale one (its mode) nor a symbolic link. */
	if (unlink(tmp) < 0 && errno != ENOENT) {
		rc = -errno;
		snprintf(err, errlen, "cannot remove %s: %s", tmp, strerror(errno));
		return rc;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		return rc;
	}
	f = fdopen(fd, "w");
	if (f == NULL) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return rc;
	}
	fprintf(f, "# keymap client keys: ID SECRET ro|rw [PREFIX ...] (written by keymapd)\n");
	for (i = 0; a != NULL && i < a->nb; i++) {
		km_auth_format(&a->keys[i], line, sizeof(line));
		fprintf(f, "%s\n", line);
	}
	sodium_memzero(line, sizeof(line));
	if (fflush(f) != 0 || fsync(fd) != 0)
		rc = -errno;
	if (fclose(f) != 0 && rc == 0)
		rc = -errno;
	if (rc < 0) {
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(-rc));
		unlink(tmp);
		return rc;
	}
	if (rename(tmp, path) != 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
		unlink(tmp);
		return rc;
	}
	/* Renamed: the file holds the keys. The directory's fsync makes the name durable;
	 * its failure is told (1), not a failure of the write. */
	snprintf(dir, sizeof(dir), "%s", path);
	dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) != 0) {
		snprintf(err, errlen, "%s written, but its directory not synced: %s", path,
			strerror(errno));
		rc = 1;
	}
	if (dfd >= 0)
		close(dfd);
	return rc;
}

const struct km_auth_key *
km_auth_find(const struct km_auth *a, uint32_t id)
{
	uint32_t lo = 0, hi;

	if (a == NULL)
		return NULL;
	hi = a->nb;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (a->keys[mid].id == id)
			return &a->keys[mid];
		if (a->keys[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}
