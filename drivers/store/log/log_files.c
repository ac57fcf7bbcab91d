/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The log driver's files: paths, the META record, staged files and their commit, and
 * the recovery of a data directory after a crash (which of overlapping files are current).
 */

#include "log_store.h"

/* A staged file's name is its store's own (its birth in it): two stores of one shard staged
 * at once (a replica's copy and a move's, a copy and the next) never share a file. */
void
log_path(const struct log_store *ls, char *buf, size_t n, int tmp)
{
	if (tmp)
		snprintf(buf, n, "%s/shard-%" PRIu64 ".log.%" PRIu64 ".tmp", ls->dir, ls->id,
			(uint64_t)ls->birth);
	else
		snprintf(buf, n, "%s/shard-%" PRIu64 ".log", ls->dir, ls->id);
}

void
log_seg_path(const struct log_store *ls, char *buf, size_t n, int tmp)
{
	if (tmp)
		snprintf(buf, n, "%s/shard-%" PRIu64 ".seg.%" PRIu64 ".tmp", ls->cold_dir, ls->id,
			(uint64_t)ls->birth);
	else
		snprintf(buf, n, "%s/shard-%" PRIu64 ".seg", ls->cold_dir, ls->id);
}

int
log_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

static size_t
meta_encode(uint8_t *buf, size_t cap, const struct meta *m)
{
	uint8_t v[META_LEN] = {0};
	struct km_rec r = {.type = KM_REC_META, .vlen = META_LEN, .val = v};

	km_le_put64(v, META_MAGIC);
	km_le_put64(v + 8, m->shard_id);
	km_le_put64(v + 16, m->birth);
	km_le_put64(v + 24, m->version_floor);
	v[32] = m->route_sep;
	v[33] = m->route_depth;
	v[34] = m->tier;
	return km_rec_encode(buf, cap, &r);
}

int
log_meta_decode(const struct km_rec *r, struct meta *m)
{
	if (r->type != KM_REC_META || r->vlen < META_LEN || km_le_get64(r->val) != META_MAGIC)
		return -EBADMSG;
	m->shard_id = km_le_get64(r->val + 8);
	m->birth = km_le_get64(r->val + 16);
	m->version_floor = km_le_get64(r->val + 24);
	m->route_sep = r->val[32];
	m->route_depth = r->val[33];
	m->tier = r->val[34];
	return 0;
}

/* Read the META record at the start of a log file. */
int
log_meta_read(int fd, struct meta *m)
{
	uint8_t buf[KM_REC_HDR_LEN + META_LEN + KM_REC_ALIGN];
	struct km_rec r;
	size_t size;
	ssize_t n = pread(fd, buf, sizeof(buf), 0);

	if (n < 0)
		return -errno;
	if (km_rec_decode(buf, (size_t)n, &r, &size) != KM_REC_OK)
		return -EBADMSG;
	return log_meta_decode(&r, m);
}

/* This store's META record, stating floor as its version floor. */
size_t
log_meta_encode(uint8_t *buf, size_t cap, const struct log_store *ls, uint64_t floor)
{
	struct meta m = {
		.shard_id = ls->id,
		.birth = ls->birth,
		.version_floor = floor,
		.route_sep = ls->route_sep,
		.route_depth = ls->route_depth,
		.tier = ls->tier,
	};

	return meta_encode(buf, cap, &m);
}

/*
 * Write the META record of a new log file (synchronously), reserving versions: the
 * caller makes it durable before the store issues any (at once, or at its commit).
 */
int
log_meta_write(struct log_store *ls)
{
	uint8_t buf[KM_REC_HDR_LEN + META_LEN + KM_REC_ALIGN];
	uint64_t floor = ls->version_last + VERSION_RESERVE;
	size_t n = log_meta_encode(buf, sizeof(buf), ls, floor);
	int rc = km_pwrite_all(ls->fd, buf, n, 0);

	if (rc < 0)
		return rc;
	ls->log_bytes = ls->durable_end = ls->open.base = n;
	ls->res_durable = ls->res_appended = floor;
	ls->res_off = 0;
	return 0;
}

/*
 * Reserve versions for an existing log that was just replayed: a META record at its end,
 * made durable before any version is issued (what it issued before a crash is at most the
 * floor found, which version_last is now).
 */
int
log_reserve_sync(struct log_store *ls)
{
	uint8_t buf[KM_REC_HDR_LEN + META_LEN + KM_REC_ALIGN];
	uint64_t floor = ls->version_last + VERSION_RESERVE;
	size_t n = log_meta_encode(buf, sizeof(buf), ls, floor);
	int rc = km_pwrite_all(ls->fd, buf, n, ls->log_bytes);

	if (rc == 0 && fdatasync(ls->fd) < 0)
		rc = -errno;
	if (rc < 0)
		return rc;
	ls->log_bytes += n;
	ls->durable_end = ls->synced_end = ls->open.base = ls->log_bytes;
	ls->res_durable = ls->res_appended = floor;
	ls->res_off = 0;
	return 0;
}

int
log_open_staged(struct log_store *ls)
{
	char path[PATH_MAX];
	struct km_seg_meta sm;
	int rc;

	ls->birth = log_birth_take();
	ls->staged = 1;
	log_path(ls, path, sizeof(path), 1);
	unlink(path); /* a leftover of a crash or an aborted stage */
	ls->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (ls->fd < 0)
		return -errno;
	rc = log_meta_write(ls);
	if (rc < 0)
		return rc;
	if (ls->tier == KM_TIER_COLD) {
		sm = (struct km_seg_meta){
			.shard_id = ls->id,
			.birth = ls->birth,
			.version_floor = ls->version_last,
			.route_sep = ls->route_sep,
			.route_depth = ls->route_depth,
		};
		log_seg_path(ls, path, sizeof(path), 1);
		unlink(path);
		rc = km_seg_writer_open(path, &sm, SEG_BLOCK, &ls->segw);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int
log_sync(struct km_store *s)
{
	struct log_store *ls = ls_of(s);
	int rc;

	if (ls->io != NULL)
		return -EINVAL;
	rc = log_write_out_unbound(ls);
	if (rc == 0 && fdatasync(ls->fd) < 0)
		rc = -errno;
	if (rc == 0)
		ls->synced_end = ls->durable_end;
	return rc;
}

/*
 * Everything that can fail comes before the first rename: once a new file has its name,
 * the commit has happened (a restart would take the new files), so it must not be
 * reported as failed and the old store must not serve again.
 */
int
log_commit(struct km_store *s)
{
	struct log_store *ls = ls_of(s);
	char tmp[PATH_MAX], path[PATH_MAX], stmp[PATH_MAX], spath[PATH_MAX];
	struct km_seg_writer *w;
	struct km_seg *seg = NULL;
	int rc;

	if (!ls->staged)
		return -EINVAL;
	rc = log_write_out_unbound(ls);
	if (rc == 0 && fdatasync(ls->fd) < 0)
		rc = -errno;
	if (rc < 0)
		return rc;
	ls->synced_end = ls->durable_end;
	log_seg_path(ls, stmp, sizeof(stmp), 1);
	log_seg_path(ls, spath, sizeof(spath), 0);
	if (ls->segw != NULL) {
		w = ls->segw;
		ls->segw = NULL;
		rc = km_seg_writer_finish(w);
		if (rc == 0)
			rc = km_seg_open(stmp, &seg); /* its descriptor outlives the rename */
		if (rc < 0) {
			unlink(stmp);
			return rc;
		}
		if (rename(stmp, spath) < 0) {
			rc = -errno;
			km_seg_close(seg);
			unlink(stmp);
			return rc;
		}
	}
	log_path(ls, tmp, sizeof(tmp), 1);
	log_path(ls, path, sizeof(path), 0);
	if (rename(tmp, path) < 0) {
		rc = -errno;
		if (seg != NULL) {
			/* Not committed: the segment must not outrank the shard's log. */
			if (rename(spath, stmp) == 0)
				unlink(stmp);
			km_seg_close(seg);
		}
		return rc;
	}
	ls->staged = 0;
	if (seg != NULL)
		ls->seg = seg;
	/* The new names are in place; an error making them durable is reported, the commit
	 * stands (a crash before the directory reaches the disk finds the old files). */
	if (log_fsync_dir(ls->dir) < 0 || (seg != NULL && log_fsync_dir(ls->cold_dir) < 0))
		ls->st.write_errors++;
	if (ls->tier == KM_TIER_HOT && unlink(spath) == 0 && log_fsync_dir(ls->cold_dir) < 0)
		ls->st.write_errors++; /* promoted: the segment is superseded */
	return 0;
}

void
log_unlink(struct km_store *s)
{
	struct log_store *ls = ls_of(s);
	char path[PATH_MAX];

	if (!ls->staged && !ls->quarantined) {
		log_path(ls, path, sizeof(path), 0);
		unlink(path);
		log_seg_path(ls, path, sizeof(path), 0);
		unlink(path);
		log_fsync_dir(ls->dir);
		log_fsync_dir(ls->cold_dir);
		/* Nothing is left to write to. */
		ls->open.len = 0;
	}
	log_destroy(s);
}

struct found {
	uint64_t id;
	uint64_t birth;
	int keep;
};

static int
shard_file_id(const char *name, const char *suffix, uint64_t *id)
{
	const char *digits = name + 6;
	size_t n;
	uint64_t v;

	if (strncmp(name, "shard-", 6) != 0)
		return 0;
	n = strspn(digits, "0123456789");
	if (n == 0 || strcmp(digits + n, suffix) != 0 ||
		km_util_parse_u64n(digits, n, 1, (UINT64_C(1) << (DEPTH_MAX + 1)) - 1, &v) != 0)
		return 0;
	*id = v;
	return 1;
}

static unsigned int
id_depth(uint64_t id)
{
	return 63 - (unsigned int)__builtin_clzll(id);
}

/* Whether a (shallower or equal) contains b. */
static int
id_contains(uint64_t a, uint64_t b)
{
	unsigned int da = id_depth(a), db = id_depth(b);

	return db >= da && (b >> (db - da)) == a;
}

static int
found_add(struct found **f, size_t *n, size_t *cap, uint64_t id, uint64_t birth)
{
	size_t i;

	for (i = 0; i < *n; i++)
		if ((*f)[i].id == id) {
			if (birth > (*f)[i].birth)
				(*f)[i].birth = birth;
			return 0;
		}
	if (*n == *cap) {
		struct found *t = realloc(*f, (*cap = *cap ? *cap * 2 : 64) * sizeof(**f));

		if (t == NULL)
			return -ENOMEM;
		*f = t;
	}
	(*f)[(*n)++] = (struct found){.id = id, .birth = birth};
	return 0;
}

static int
cmp_birth_desc(const void *a, const void *b)
{
	const struct found *x = a, *y = b;

	return x->birth < y->birth ? 1 : x->birth > y->birth ? -1 : 0;
}

static int
scan_dir(const struct km_store_params *p, const char *dir, const char *suffix, struct found **f,
	size_t *n, size_t *cap)
{
	char path[PATH_MAX];
	struct dirent *de;
	struct meta m;
	uint64_t id;
	DIR *d = opendir(dir);
	int rc = 0, fd;

	if (d == NULL)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);

		if (l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0 &&
			strncmp(de->d_name, "shard-", 6) == 0) {
			/* A staged file never committed. */
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
			continue;
		}
		if (!shard_file_id(de->d_name, suffix, &id))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (strcmp(suffix, ".log") == 0) {
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				rc = -errno;
				break;
			}
			if (log_meta_read(fd, &m) < 0)
				m = (struct meta){.shard_id = id,
					.route_sep = p->route_sep,
					.route_depth = p->route_depth};
			close(fd);
		} else {
			struct km_seg *seg;

			if (km_seg_open(path, &seg) < 0)
				continue; /* reported when the shard opens it */
			m.shard_id = km_seg_meta(seg)->shard_id;
			m.birth = km_seg_meta(seg)->birth;
			m.route_sep = km_seg_meta(seg)->route_sep;
			m.route_depth = km_seg_meta(seg)->route_depth;
			km_seg_close(seg);
		}
		if (m.route_sep != p->route_sep || m.route_depth != p->route_depth) {
			rc = -EPROTO;
			break;
		}
		log_birth_seen(m.birth);
		rc = found_add(f, n, cap, id, m.birth);
		if (rc < 0)
			break;
	}
	closedir(d);
	return rc;
}

static void
remove_shard_files(const struct km_store_params *p, uint64_t id)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/shard-%" PRIu64 ".log", p->dir, id);
	unlink(path);
	snprintf(path, sizeof(path), "%s/shard-%" PRIu64 ".seg", p->cold_dir, id);
	unlink(path);
}

/* A directory keymapd can create files in and has room in (permission bits do not stop
 * root; a read-only or full file system does: PROBE_BYTES must fit). */
static int
probe_dir(const char *dir)
{
	static const uint8_t zero[4096];
	char path[PATH_MAX];
	struct stat sb;
	int fd, rc = 0;

	if (stat(dir, &sb) < 0)
		return -errno;
	if (!S_ISDIR(sb.st_mode))
		return -ENOTDIR;
	snprintf(path, sizeof(path), "%s/.keymapd-probe", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (fallocate(fd, 0, 0, PROBE_BYTES) < 0) {
		rc = -errno;
		/* A file system that cannot preallocate: a page written and synced. */
		if (rc == -EOPNOTSUPP || rc == -ENOSYS)
			rc = km_pwrite_all(fd, zero, sizeof(zero), 0);
		if (rc == 0 && fdatasync(fd) < 0)
			rc = -errno;
	}
	close(fd);
	unlink(path);
	return rc;
}

int
log_recover(const struct km_store_params *p, uint64_t *ids, uint32_t max)
{
	struct found *f = NULL;
	size_t n = 0, cap = 0, i, j;
	unsigned __int128 covered, size;
	int rc, out = 0, removed = 0;

	if (p->dir == NULL || p->cold_dir == NULL)
		return -EINVAL;
	rc = probe_dir(p->dir);
	if (rc == 0)
		rc = probe_dir(p->cold_dir);
	if (rc < 0)
		return rc;
	rc = scan_dir(p, p->dir, ".log", &f, &n, &cap);
	if (rc == 0)
		rc = scan_dir(p, p->cold_dir, ".seg", &f, &n, &cap);
	if (rc < 0) {
		free(f);
		return rc;
	}
	/* Newest first: a file is current unless newer current files cover its range (it was
	 * split or merged away). Newer files covering only part of an older one are a copy
	 * that never completed (the others of the set were never committed): they go. */
	qsort(f, n, sizeof(*f), cmp_birth_desc);
	for (i = 0; i < n; i++) {
		int ancestor = 0;

		f[i].keep = 1;
		covered = 0;
		size = (unsigned __int128)1 << (64 - id_depth(f[i].id));
		for (j = 0; j < i; j++) {
			if (!f[j].keep)
				continue;
			if (id_contains(f[j].id, f[i].id))
				ancestor = 1;
			else if (id_contains(f[i].id, f[j].id))
				covered += (unsigned __int128)1 << (64 - id_depth(f[j].id));
		}
		if (ancestor || (covered != 0 && covered >= size)) {
			f[i].keep = 0;
		} else if (covered != 0) {
			for (j = 0; j < i; j++)
				if (f[j].keep && id_contains(f[i].id, f[j].id))
					f[j].keep = 0;
		}
	}
	for (i = 0; i < n; i++) {
		if (!f[i].keep) {
			remove_shard_files(p, f[i].id);
			removed = 1;
			continue;
		}
		if ((uint32_t)out < max)
			ids[out] = f[i].id;
		out++;
	}
	if (removed) {
		log_fsync_dir(p->dir);
		log_fsync_dir(p->cold_dir);
	}
	free(f);
	return out;
}

/* ---- The manifest: which shards the data directory holds. ---- */

#define MANIFEST_HEAD "keymap-manifest 1\n"

static void
manifest_path(const char *dir, char *buf, size_t n, int tmp)
{
	snprintf(buf, n, "%s/MANIFEST%s", dir, tmp ? ".tmp" : "");
}

int
log_manifest(const struct km_store_params *p, const uint64_t *ids, uint32_t n)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	FILE *f;
	uint32_t i;
	int rc = 0;

	if (p->dir == NULL)
		return -EINVAL;
	manifest_path(p->dir, tmp, sizeof(tmp), 1);
	manifest_path(p->dir, path, sizeof(path), 0);
	f = fopen(tmp, "we");
	if (f == NULL)
		return -errno;
	fputs(MANIFEST_HEAD, f);
	for (i = 0; i < n; i++)
		fprintf(f, "%" PRIu64 "\n", ids[i]);
	if (fflush(f) != 0 || fdatasync(fileno(f)) < 0)
		rc = -errno;
	if (fclose(f) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc == 0)
		rc = log_fsync_dir(p->dir);
	if (rc < 0)
		unlink(tmp);
	return rc;
}

/* Append to out the parts of id no file of ids covers. */
static void
missing_parts(uint64_t id, const uint64_t *ids, int n, uint64_t *out, uint32_t max, int *nout)
{
	int i, inside = 0;

	for (i = 0; i < n; i++) {
		if (id_contains(ids[i], id))
			return; /* all of it */
		inside |= id_contains(id, ids[i]);
	}
	if (!inside || id_depth(id) >= DEPTH_MAX) {
		if ((uint32_t)*nout < max)
			out[*nout] = id;
		(*nout)++;
		return;
	}
	missing_parts(id * 2, ids, n, out, max, nout);
	missing_parts(id * 2 + 1, ids, n, out, max, nout);
}

int
log_missing(
	const struct km_store_params *p, const uint64_t *ids, int n, uint64_t *out, uint32_t max)
{
	char path[PATH_MAX], line[64];
	uint64_t id;
	int nout = 0;
	size_t len;
	FILE *f;

	manifest_path(p->dir, path, sizeof(path), 0);
	f = fopen(path, "re");
	if (f == NULL)
		return errno == ENOENT ? 0 : -errno;
	if (fgets(line, sizeof(line), f) == NULL || strcmp(line, MANIFEST_HEAD) != 0) {
		fclose(f);
		return -EBADMSG;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		len = strlen(line);
		if (len < 2 || line[len - 1] != '\n' ||
			km_util_parse_u64n(
				line, len - 1, 1, (UINT64_C(1) << (DEPTH_MAX + 1)) - 1, &id) != 0) {
			fclose(f);
			return -EBADMSG;
		}
		missing_parts(id, ids, n, out, max, &nout);
	}
	fclose(f);
	return nout;
}
