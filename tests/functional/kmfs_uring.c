/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * io_uring through kmfs, as the log store does it: a write linked to an fdatasync, and reads.
 *
 * usage: kmfs_uring write FILE OFFSET LEN BYTE [sync]   LEN bytes of BYTE at OFFSET
 *        kmfs_uring read FILE OFFSET LEN BYTE           LEN bytes read back, all BYTE
 * Exit 0 when every completion says what it should, 1 otherwise (with why).
 */

#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Submit, wait for n completions. @return the first's result, *res2 the second's; -1 if none. */
static int
run(struct io_uring *r, unsigned int n, int *res2)
{
	struct io_uring_cqe *cqe;
	int res[2] = {0, 0};

	io_uring_submit(r);
	for (unsigned int i = 0; i < n; i++) {
		if (io_uring_wait_cqe(r, &cqe) < 0)
			return -1;
		res[cqe->user_data] = cqe->res;
		io_uring_cqe_seen(r, cqe);
	}
	*res2 = res[1];
	return res[0];
}

int
main(int argc, char **argv)
{
	int wr, fd, res, res2 = 0, sync;
	struct io_uring r;
	struct io_uring_sqe *sqe;
	long long off;
	size_t len;
	char *buf, *want;

	if (argc < 6 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "read") != 0)) {
		fprintf(stderr, "usage: %s write|read FILE OFFSET LEN BYTE [sync]\n", argv[0]);
		return 2;
	}
	wr = argv[1][0] == 'w';
	sync = wr && argc > 6 && strcmp(argv[6], "sync") == 0;
	off = atoll(argv[3]);
	len = (size_t)atoll(argv[4]);
	buf = malloc(len);
	want = malloc(len);
	fd = open(argv[2], wr ? O_RDWR | O_CREAT : O_RDONLY, 0644);
	if (buf == NULL || want == NULL || fd < 0 || io_uring_queue_init(4, &r, 0) < 0) {
		perror(argv[2]);
		return 1;
	}
	memset(want, argv[5][0], len);
	sqe = io_uring_get_sqe(&r);
	if (wr)
		io_uring_prep_write(sqe, fd, want, (unsigned int)len, (__u64)off);
	else
		io_uring_prep_read(sqe, fd, buf, (unsigned int)len, (__u64)off);
	sqe->user_data = 0;
	if (sync) {
		/* Linked, as the log store submits a group: the sync starts after the write. */
		sqe->flags |= IOSQE_IO_LINK;
		sqe = io_uring_get_sqe(&r);
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		sqe->user_data = 1;
	}
	res = run(&r, sync ? 2 : 1, &res2);
	if (res != (int)len || res2 < 0) {
		fprintf(stderr, "kmfs_uring: %s %s: result %d, sync %d (want %zu)\n", argv[1],
			argv[2], res, res2, len);
		return 1;
	}
	if (!wr && memcmp(buf, want, len) != 0) {
		fprintf(stderr, "kmfs_uring: read %s: not all '%c'\n", argv[2], argv[5][0]);
		return 1;
	}
	io_uring_queue_exit(&r);
	close(fd);
	return 0;
}
