/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * kmfs: a FUSE passthrough of a backing directory that behaves like a disk with a volatile
 * write cache, for crash and slow-disk tests of keymapd's store.
 *
 * Data written to a file stays in memory (pages of the file's pending view) until an fsync
 * or fdatasync of that file writes it to the backing file and syncs it; a truncation is
 * pending the same way. A power cut, asked through the control fifo, throws away every
 * pending view, so the files read back as the backing directory holds them: what was synced.
 * Namespace changes (create, unlink, rename, mkdir, rmdir) reach the backing directory at once.
 *
 * Concurrency: libfuse's worker threads and the control thread take the one lock for each
 * request; a paced write or fsync sleeps with the lock released. Every request first applies
 * the commands waiting in the control fifo, so a command whose write(2) has returned is in
 * force for every request made after it.
 */

#define FUSE_USE_VERSION 31

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define PG       4096u /* the pending view's page: a write reads the rest of it from disk */
#define NBUCKETS 256u

/* One page of a file's pending view: its content as reads must see it. */
struct kmfs_page {
	uint64_t no; /* offset / PG */
	unsigned char data[PG];
};

/*
 * A backing inode with open handles or pending data. Invariants: floor <= size; bytes of
 * the view at or past size are zero; backing bytes at or past floor read as zero (they were
 * truncated away in the view, the backing file still has them until the next sync).
 */
struct kmfs_file {
	struct kmfs_file *next; /* hash chain */
	dev_t dev;
	ino_t ino;
	int fd;             /* the backing file, read-write when it could be opened so */
	int wr;             /* fd is writable */
	unsigned int nopen; /* handles */
	int orphan;         /* unlinked: out of the table, freed at the last release */
	int dirty;          /* the view differs from the backing file */
	off_t size, floor;
	struct kmfs_page **pg; /* sorted by no */
	size_t npg, cap;
	uint64_t nwrites, nbytes; /* since the last sync: what a power cut drops */
};

struct kmfs_handle {
	struct kmfs_file *f;
	int flags;
};

static struct {
	pthread_mutex_t lock;
	int bfd;             /* the backing directory */
	uint64_t bps;        /* --write-bps, 0 = unlimited */
	uint64_t paid_ns;    /* CLOCK_MONOTONIC when every accepted write is paid */
	int fail;            /* 0, EIO or ENOSPC: the answer to writes and fsyncs */
	int ctl_fd, ctl_wfd; /* the fifo; our own writer keeps it from reporting EOF */
	char ctl_buf[256];   /* a command line read in part */
	size_t ctl_len;
	struct kmfs_file *tab[NBUCKETS];
	uint64_t writes, bytes, fsyncs, failed, cuts, dropped_writes, dropped_bytes;
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .bfd = -1, .ctl_fd = -1, .ctl_wfd = -1};

static const char *
rel(const char *path)
{
	return path[1] == '\0' ? "." : path + 1;
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
sleep_until(uint64_t t)
{
	struct timespec ts = {
		.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};

	while (t != 0 && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/*
 * The token bucket, without burst: a write of n bytes is paid n / bps after the previous
 * one; n = 0 gives the time every earlier write is paid (what an fsync waits for).
 * @return the time to sleep until, 0 for none. Call with the lock held.
 */
static uint64_t
pace(uint64_t n)
{
	uint64_t t = now_ns();

	if (g.bps == 0)
		return 0;
	if (g.paid_ns > t)
		t = g.paid_ns;
	g.paid_ns = t + n * 1000000000u / g.bps;
	return g.paid_ns;
}

static struct kmfs_file **
file_slot(dev_t dev, ino_t ino)
{
	struct kmfs_file **p = &g.tab[(ino ^ dev) % NBUCKETS];

	while (*p != NULL && ((*p)->ino != ino || (*p)->dev != dev))
		p = &(*p)->next;
	return p;
}

static void
file_drop_pages(struct kmfs_file *f, size_t from)
{
	for (size_t i = from; i < f->npg; i++)
		free(f->pg[i]);
	f->npg = from;
}

/* The file of a backing inode, made if new; takes fd over (kept or closed). */
static struct kmfs_file *
file_get(const struct stat *st, int fd, int wr)
{
	struct kmfs_file **p = file_slot(st->st_dev, st->st_ino), *f = *p;

	if (f != NULL) {
		if (!f->wr && wr) { /* a sync must be able to write */
			close(f->fd);
			f->fd = fd;
			f->wr = 1;
		} else {
			close(fd);
		}
		return f;
	}
	f = calloc(1, sizeof(*f));
	if (f == NULL) {
		close(fd);
		return NULL;
	}
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->fd = fd;
	f->wr = wr;
	f->size = f->floor = st->st_size;
	*p = f;
	return f;
}

/* Free a file nothing refers to any more: no handle and nothing pending. */
static void
file_put(struct kmfs_file *f)
{
	if (f->nopen > 0 || (f->dirty && !f->orphan))
		return;
	if (!f->orphan)
		*file_slot(f->dev, f->ino) = f->next;
	file_drop_pages(f, 0);
	free(f->pg);
	close(f->fd);
	free(f);
}

/*
 * The last name of an inode is gone: its pending data can never be read or synced by name,
 * and a new file may get its inode number, so it leaves the table.
 */
static void
file_forget(const struct stat *st)
{
	struct kmfs_file **p = file_slot(st->st_dev, st->st_ino), *f = *p;

	if (f == NULL)
		return;
	*p = f->next;
	f->orphan = 1;
	file_drop_pages(f, 0);
	file_put(f);
}

/* Backing bytes [off, off + n) as the view has them below floor, zeros past it. */
static int
backing_read(const struct kmfs_file *f, unsigned char *buf, off_t off, size_t n)
{
	size_t got = 0;

	while (off + (off_t)got < f->floor && got < n) {
		size_t want = n - got;
		ssize_t r;

		if ((off_t)want > f->floor - off - (off_t)got)
			want = (size_t)(f->floor - off - (off_t)got);
		r = pread(f->fd, buf + got, want, off + (off_t)got);
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	memset(buf + got, 0, n - got);
	return 0;
}

/* @return the index of page no, or where it would go (*found = 0). */
static size_t
page_find(const struct kmfs_file *f, uint64_t no, int *found)
{
	size_t lo = 0, hi = f->npg;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (f->pg[mid]->no < no)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < f->npg && f->pg[lo]->no == no;
	return lo;
}

/* A page of the view at index i, filled from the backing file. */
static int
page_add(struct kmfs_file *f, size_t i, uint64_t no)
{
	struct kmfs_page *p;
	int rc;

	if (f->npg == f->cap) {
		struct kmfs_page **pg = realloc(f->pg, (f->cap * 2 + 16) * sizeof(*pg));

		if (pg == NULL)
			return -ENOMEM;
		f->pg = pg;
		f->cap = f->cap * 2 + 16;
	}
	p = malloc(sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	rc = backing_read(f, p->data, (off_t)(no * PG), PG);
	if (rc < 0) {
		free(p);
		return rc;
	}
	p->no = no;
	memmove(f->pg + i + 1, f->pg + i, (f->npg - i) * sizeof(*f->pg));
	f->pg[i] = p;
	f->npg++;
	return 0;
}

static int
file_read(const struct kmfs_file *f, char *buf, size_t n, off_t off)
{
	int found, rc;

	if (off >= f->size)
		return 0;
	if ((off_t)n > f->size - off)
		n = (size_t)(f->size - off);
	rc = backing_read(f, (unsigned char *)buf, off, n);
	if (rc < 0)
		return rc;
	for (size_t i = page_find(f, (uint64_t)off / PG, &found); i < f->npg; i++) {
		off_t ps = (off_t)(f->pg[i]->no * PG), lo = ps > off ? ps : off;
		off_t hi = ps + PG < off + (off_t)n ? ps + PG : off + (off_t)n;

		if (lo >= hi)
			break;
		memcpy(buf + (lo - off), f->pg[i]->data + (lo - ps), (size_t)(hi - lo));
	}
	return (int)n;
}

static int
file_write(struct kmfs_file *f, const char *buf, size_t n, off_t off)
{
	for (size_t done = 0; done < n;) {
		uint64_t no = (uint64_t)(off + (off_t)done) / PG;
		size_t in = (size_t)(off + (off_t)done) % PG, len = n - done;
		int found, rc;
		size_t i = page_find(f, no, &found);

		if (!found && (rc = page_add(f, i, no)) < 0)
			return rc;
		if (len > PG - in)
			len = PG - in;
		memcpy(f->pg[i]->data + in, buf + done, len);
		done += len;
	}
	if (off + (off_t)n > f->size)
		f->size = off + (off_t)n;
	f->dirty = 1;
	f->nwrites++;
	f->nbytes += n;
	return (int)n;
}

static void
file_truncate(struct kmfs_file *f, off_t len)
{
	int found;

	if (len < f->size) {
		file_drop_pages(f, page_find(f, ((uint64_t)len + PG - 1) / PG, &found));
		if (len % PG != 0 && f->npg > 0 && f->pg[f->npg - 1]->no == (uint64_t)len / PG)
			memset(f->pg[f->npg - 1]->data + len % PG, 0, PG - len % PG);
		if (len < f->floor)
			f->floor = len;
	}
	f->size = len;
	f->dirty = 1;
}

/* Make the view durable: the backing file gets its length and pages, then an fsync. */
static int
file_sync(struct kmfs_file *f, int datasync)
{
	struct stat st;

	if (f->dirty) {
		if (fstat(f->fd, &st) < 0 ||
			(f->floor < st.st_size && ftruncate(f->fd, f->floor) < 0) ||
			(f->size != f->floor && ftruncate(f->fd, f->size) < 0))
			return -errno;
		for (size_t i = 0; i < f->npg; i++) {
			off_t ps = (off_t)(f->pg[i]->no * PG);
			size_t len = f->size - ps < (off_t)PG ? (size_t)(f->size - ps) : PG;

			if (pwrite(f->fd, f->pg[i]->data, len, ps) != (ssize_t)len)
				return errno != 0 ? -errno : -EIO;
		}
		file_drop_pages(f, 0);
		f->floor = f->size;
		f->dirty = 0;
		f->nwrites = f->nbytes = 0;
	}
	if ((datasync ? fdatasync(f->fd) : fsync(f->fd)) < 0)
		return -errno;
	return 0;
}

static void
print_stats(const char *why)
{
	fprintf(stderr,
		"kmfs: %s: writes %" PRIu64 " bytes %" PRIu64 " fsyncs %" PRIu64 " failed %" PRIu64
		" power_cuts %" PRIu64 " dropped_writes %" PRIu64 " dropped_bytes %" PRIu64 "\n",
		why, g.writes, g.bytes, g.fsyncs, g.failed, g.cuts, g.dropped_writes,
		g.dropped_bytes);
}

/* Every pending view is lost; the files are again what the backing directory holds. */
static void
drop_pending(void)
{
	for (size_t b = 0; b < NBUCKETS; b++) {
		for (struct kmfs_file *f = g.tab[b], *next; f != NULL; f = next) {
			struct stat st;

			next = f->next;
			g.dropped_writes += f->nwrites;
			g.dropped_bytes += f->nbytes;
			f->nwrites = f->nbytes = 0;
			file_drop_pages(f, 0);
			f->size = f->floor = fstat(f->fd, &st) == 0 ? st.st_size : 0;
			f->dirty = 0;
			file_put(f);
		}
	}
}

static void
ctl_command(char *line)
{
	size_t n = strlen(line);

	while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
		line[--n] = '\0';
	if (strcmp(line, "powercut") == 0) {
		drop_pending();
		g.cuts++;
	} else if (strcmp(line, "fail eio") == 0) {
		g.fail = EIO;
	} else if (strcmp(line, "fail enospc") == 0) {
		g.fail = ENOSPC;
	} else if (strcmp(line, "fail off") == 0) {
		g.fail = 0;
	} else if (strcmp(line, "stats") == 0) {
		print_stats("stats");
	} else if (line[0] != '\0') {
		fprintf(stderr, "kmfs: unknown command '%s'\n", line);
	}
}

/* Apply every complete command line waiting in the fifo. Call with the lock held. */
static void
ctl_drain(void)
{
	ssize_t r;

	if (g.ctl_fd < 0)
		return;
	while ((r = read(g.ctl_fd, g.ctl_buf + g.ctl_len, sizeof(g.ctl_buf) - 1 - g.ctl_len)) > 0) {
		char *line = g.ctl_buf, *nl;

		g.ctl_len += (size_t)r;
		g.ctl_buf[g.ctl_len] = '\0';
		while ((nl = strchr(line, '\n')) != NULL) {
			*nl = '\0';
			ctl_command(line);
			line = nl + 1;
		}
		g.ctl_len -= (size_t)(line - g.ctl_buf);
		memmove(g.ctl_buf, line, g.ctl_len);
		if (g.ctl_len == sizeof(g.ctl_buf) - 1)
			g.ctl_len = 0; /* a line too long for any command */
	}
}

/* Commands sent while no request comes are applied here. */
static void *
ctl_thread(void *arg)
{
	struct pollfd p = {.fd = g.ctl_fd, .events = POLLIN};

	(void)arg;
	for (;;) {
		if (poll(&p, 1, -1) < 0)
			continue;
		pthread_mutex_lock(&g.lock);
		ctl_drain();
		pthread_mutex_unlock(&g.lock);
	}
	return NULL;
}

static void
enter(void)
{
	pthread_mutex_lock(&g.lock);
	ctl_drain();
}

static void
leave(void)
{
	pthread_mutex_unlock(&g.lock);
}

/* Unlock and turn a libc return into FUSE's 0 / -errno. */
static int
leave_rc(int r)
{
	int rc = r < 0 ? -errno : 0;

	leave();
	return rc;
}

static struct kmfs_handle *
handle(const struct fuse_file_info *fi)
{
	return (struct kmfs_handle *)(uintptr_t)fi->fh;
}

static void *
kmfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->use_ino = 1;
	/* The kernel must ask for sizes and names each time: a power cut changes them. */
	cfg->entry_timeout = cfg->attr_timeout = cfg->negative_timeout = 0;
	/* No page cache: it would hold data a power cut dropped. */
	cfg->direct_io = 1;
	cfg->kernel_cache = cfg->auto_cache = 0;
	/* Unlink at once (no .fuse_hidden files in the server's directories). */
	cfg->hard_remove = 1;
	cfg->nullpath_ok = 1;
	return NULL;
}

static int
kmfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct kmfs_file *f;
	int rc;

	enter();
	if (path == NULL)
		rc = fstat(handle(fi)->f->fd, st);
	else
		rc = fstatat(g.bfd, rel(path), st, AT_SYMLINK_NOFOLLOW);
	rc = rc < 0 ? -errno : 0;
	if (rc == 0 && S_ISREG(st->st_mode) &&
		((f = *file_slot(st->st_dev, st->st_ino)) != NULL ||
			(path == NULL && (f = handle(fi)->f)))) {
		st->st_size = f->size;
		if (st->st_blocks < (f->size + 511) / 512)
			st->st_blocks = (f->size + 511) / 512;
	}
	leave();
	return rc;
}

static int
file_open(const char *path, int flags, mode_t mode, struct fuse_file_info *fi)
{
	/*
	 * The kernel checks the access mode; read-write lets any handle's fsync write. The
	 * backing file is read and written at any offset and length: no O_DIRECT.
	 */
	int bflags = (flags & ~(O_ACCMODE | O_TRUNC | O_APPEND | O_DIRECT)) | O_RDWR, wr = 1;
	struct kmfs_handle *h = malloc(sizeof(*h));
	struct stat st;
	int fd, rc = 0;

	if (h == NULL)
		return -ENOMEM;
	enter();
	fd = openat(g.bfd, rel(path), bflags, mode);
	if (fd < 0 && (errno == EACCES || errno == EROFS || errno == EISDIR)) {
		fd = openat(g.bfd, rel(path), (bflags & ~O_ACCMODE) | (flags & O_ACCMODE), mode);
		wr = (flags & O_ACCMODE) != O_RDONLY;
	}
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
	} else if ((h->f = file_get(&st, fd, wr)) == NULL) {
		rc = -ENOMEM;
	} else {
		h->f->nopen++;
		h->flags = flags;
		if (flags & O_TRUNC) /* pending like any truncation */
			file_truncate(h->f, 0);
		fi->fh = (uintptr_t)h;
		fi->direct_io = 1;
		fi->keep_cache = 0;
	}
	leave();
	if (rc < 0)
		free(h);
	return rc;
}

static int
kmfs_open(const char *path, struct fuse_file_info *fi)
{
	return file_open(path, fi->flags, 0, fi);
}

static int
kmfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return file_open(path, fi->flags | O_CREAT, mode, fi);
}

static int
kmfs_release(const char *path, struct fuse_file_info *fi)
{
	struct kmfs_handle *h = handle(fi);

	(void)path;
	enter();
	h->f->nopen--;
	file_put(h->f);
	leave();
	free(h);
	return 0;
}

static int
kmfs_read(const char *path, char *buf, size_t n, off_t off, struct fuse_file_info *fi)
{
	int rc;

	(void)path;
	enter();
	rc = file_read(handle(fi)->f, buf, n, off);
	leave();
	return rc;
}

static int
kmfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct kmfs_file *f = handle(fi)->f;
	uint64_t t;
	int rc;

	(void)path;
	enter();
	t = pace(0);
	leave();
	sleep_until(t);
	enter();
	rc = g.fail ? -g.fail : file_sync(f, datasync);
	if (rc < 0)
		g.failed++;
	else
		g.fsyncs++;
	leave();
	return rc;
}

static int
kmfs_write(const char *path, const char *buf, size_t n, off_t off, struct fuse_file_info *fi)
{
	struct kmfs_handle *h = handle(fi);
	uint64_t t = 0;
	int rc;

	(void)path;
	enter();
	if (h->flags & O_APPEND)
		off = h->f->size;
	rc = g.fail ? -g.fail : file_write(h->f, buf, n, off);
	if (rc < 0) {
		g.failed++;
	} else {
		g.writes++;
		g.bytes += n;
		t = pace(n);
	}
	leave();
	sleep_until(t);
	if (rc >= 0 && (h->flags & (O_SYNC | O_DSYNC))) {
		int s = kmfs_fsync(NULL, (h->flags & O_SYNC) != O_SYNC, fi);

		if (s < 0)
			rc = s;
	}
	return rc;
}

static int
kmfs_truncate(const char *path, off_t len, struct fuse_file_info *fi)
{
	struct kmfs_file *f = NULL;
	struct stat st;
	int fd, rc = 0;

	enter();
	if (fi != NULL) {
		f = handle(fi)->f;
	} else if ((fd = openat(g.bfd, rel(path), O_RDWR)) < 0 || fstat(fd, &st) < 0) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
	} else if ((f = file_get(&st, fd, 1)) == NULL) {
		rc = -ENOMEM;
	}
	if (f != NULL) {
		file_truncate(f, len);
		file_put(f);
	}
	leave();
	return rc;
}

/* @return 1 if path is the last name of a regular file (st filled): removing it frees it. */
static int
last_name(const char *path, struct stat *st)
{
	return fstatat(g.bfd, rel(path), st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st->st_mode) &&
	       st->st_nlink == 1;
}

static int
kmfs_unlink(const char *path)
{
	struct stat st;
	int last, rc;

	enter();
	last = last_name(path, &st);
	rc = unlinkat(g.bfd, rel(path), 0) < 0 ? -errno : 0;
	if (rc == 0 && last)
		file_forget(&st);
	leave();
	return rc;
}

static int
kmfs_rename(const char *from, const char *to, unsigned int flags)
{
	struct stat st, src;
	int last, rc;

	enter();
	last = !(flags & RENAME_EXCHANGE) && last_name(to, &st) &&
	       fstatat(g.bfd, rel(from), &src, AT_SYMLINK_NOFOLLOW) == 0 && src.st_ino != st.st_ino;
	rc = renameat2(g.bfd, rel(from), g.bfd, rel(to), flags) < 0 ? -errno : 0;
	if (rc == 0 && last)
		file_forget(&st);
	leave();
	return rc;
}

static int
kmfs_mkdir(const char *path, mode_t mode)
{
	enter();
	return leave_rc(mkdirat(g.bfd, rel(path), mode));
}

static int
kmfs_rmdir(const char *path)
{
	enter();
	return leave_rc(unlinkat(g.bfd, rel(path), AT_REMOVEDIR));
}

static int
kmfs_statfs(const char *path, struct statvfs *sv)
{
	(void)path;
	return fstatvfs(g.bfd, sv) < 0 ? -errno : 0;
}

static int
kmfs_opendir(const char *path, struct fuse_file_info *fi)
{
	int fd, rc = 0;
	DIR *d = NULL;

	enter();
	fd = openat(g.bfd, rel(path), O_RDONLY | O_DIRECTORY);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
	}
	leave();
	fi->fh = (uintptr_t)d;
	return rc;
}

static int
kmfs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
	struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	DIR *d = (DIR *)(uintptr_t)fi->fh;
	struct dirent *e;

	(void)path, (void)off, (void)flags;
	/* Offsets of 0 to fill(): libfuse takes the whole listing in this one call. */
	enter();
	rewinddir(d);
	while ((e = readdir(d)) != NULL) {
		struct stat st = {.st_ino = e->d_ino, .st_mode = (mode_t)DTTOIF(e->d_type)};

		if (fill(buf, e->d_name, &st, 0, 0))
			break;
	}
	leave();
	return 0;
}

static int
kmfs_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	closedir((DIR *)(uintptr_t)fi->fh);
	return 0;
}

/* Names reach the backing directory at once: syncing it makes them durable there too. */
static int
kmfs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path, (void)datasync;
	return fsync(dirfd((DIR *)(uintptr_t)fi->fh)) < 0 ? -errno : 0;
}

static const struct fuse_operations kmfs_ops = {
	.init = kmfs_init,
	.getattr = kmfs_getattr,
	.open = kmfs_open,
	.create = kmfs_create,
	.release = kmfs_release,
	.read = kmfs_read,
	.write = kmfs_write,
	.fsync = kmfs_fsync,
	.truncate = kmfs_truncate,
	.unlink = kmfs_unlink,
	.rename = kmfs_rename,
	.mkdir = kmfs_mkdir,
	.rmdir = kmfs_rmdir,
	.statfs = kmfs_statfs,
	.opendir = kmfs_opendir,
	.readdir = kmfs_readdir,
	.releasedir = kmfs_releasedir,
	.fsyncdir = kmfs_fsyncdir,
};

static struct kmfs_opts {
	const char *backing, *control;
	unsigned long bps;
	int help;
} opt;

static const struct fuse_opt kmfs_opts[] = {
	{"--write-bps=%lu", offsetof(struct kmfs_opts, bps), 0},
	{"--write-bps %lu", offsetof(struct kmfs_opts, bps), 0},
	{"--control=%s", offsetof(struct kmfs_opts, control), 0},
	{"--control %s", offsetof(struct kmfs_opts, control), 0},
	{"-h", offsetof(struct kmfs_opts, help), 1},
	{"--help", offsetof(struct kmfs_opts, help), 1},
	FUSE_OPT_END,
};

/* The first name is the backing directory (ours), the second the mountpoint (libfuse's). */
static int
opt_proc(void *data, const char *arg, int key, struct fuse_args *args)
{
	(void)data, (void)args;
	if (key != FUSE_OPT_KEY_NONOPT || opt.backing != NULL)
		return 1;
	opt.backing = strdup(arg);
	return 0;
}

int
main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	pthread_t tid;
	struct stat st;
	int rc, made_fifo = 0;

	if (fuse_opt_parse(&args, &opt, kmfs_opts, opt_proc) < 0)
		return 2;
	if (opt.help || opt.backing == NULL) {
		fprintf(opt.help ? stdout : stderr,
			"usage: %s [--write-bps N] [--control FIFO] [fuse options] BACKING_DIR "
			"MOUNTPOINT\n"
			"  FIFO commands, one a line: powercut, fail eio, fail enospc, fail off, "
			"stats\n",
			argv[0]);
		return opt.help ? 0 : 2;
	}
	g.bps = opt.bps;
	g.bfd = open(opt.backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (g.bfd < 0) {
		fprintf(stderr, "kmfs: %s: %s\n", opt.backing, strerror(errno));
		return 1;
	}
	if (opt.control != NULL) {
		if (mkfifo(opt.control, 0600) == 0)
			made_fifo = 1;
		else if (errno != EEXIST)
			fprintf(stderr, "kmfs: %s: %s\n", opt.control, strerror(errno));
		g.ctl_fd = open(opt.control, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		g.ctl_wfd = open(opt.control, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		if (g.ctl_fd < 0 || g.ctl_wfd < 0 || fstat(g.ctl_fd, &st) < 0 ||
			!S_ISFIFO(st.st_mode)) {
			fprintf(stderr, "kmfs: %s: %s\n", opt.control,
				g.ctl_fd < 0 || g.ctl_wfd < 0 ? strerror(errno) : "not a fifo");
			return 1;
		}
		if (pthread_create(&tid, NULL, ctl_thread, NULL) != 0)
			return 1;
		pthread_detach(tid);
	}
	/* Foreground, so a test holds the process; the name tells the mount apart. */
	if (fuse_opt_add_arg(&args, "-f") < 0 ||
		fuse_opt_add_arg(&args, "-ofsname=kmfs,max_idle_threads=10") < 0)
		return 1;
	rc = fuse_main(args.argc, args.argv, &kmfs_ops, NULL);
	/* What was never synced is lost when the layer stops, as at a power cut: counted so. */
	pthread_mutex_lock(&g.lock);
	drop_pending();
	print_stats("exit");
	pthread_mutex_unlock(&g.lock);
	if (made_fifo)
		unlink(opt.control);
	fuse_opt_free_args(&args);
	return rc;
}
