/* SPDX-License-Identifier: BSD-3-Clause */

#include <errno.h>
#include <stdlib.h>

#include "km_io.h"

struct km_io {
	struct io_uring ring;
	unsigned int inflight; /* prepared or submitted, not reaped */
	unsigned int limit;    /* completion queue entries */
};

int
km_io_create(unsigned int entries, struct km_io **out)
{
	struct km_io *io = calloc(1, sizeof(*io));
	int rc;

	if (io == NULL)
		return -ENOMEM;
	rc = io_uring_queue_init(entries, &io->ring, 0);
	if (rc < 0) {
		free(io);
		return rc;
	}
	io->limit = io->ring.cq.ring_entries;
	*out = io;
	return 0;
}

void
km_io_destroy(struct km_io *io)
{
	if (io == NULL)
		return;
	km_io_submit(io);
	while (io->inflight != 0 && km_io_wait(io) >= 0)
		;
	io_uring_queue_exit(&io->ring);
	free(io);
}

struct io_uring_sqe *
km_io_sqe(struct km_io *io, struct km_io_op *op)
{
	struct io_uring_sqe *sqe;

	if (io->inflight >= io->limit)
		return NULL;
	sqe = io_uring_get_sqe(&io->ring);
	if (sqe == NULL) {
		/* The submission queue is full of prepared entries: hand them over. */
		if (io_uring_submit(&io->ring) < 0)
			return NULL;
		sqe = io_uring_get_sqe(&io->ring);
		if (sqe == NULL)
			return NULL;
	}
	io_uring_sqe_set_data(sqe, op);
	io->inflight++;
	return sqe;
}

int
km_io_room(struct km_io *io, unsigned int n)
{
	if (io->inflight + n > io->limit)
		return 0;
	if (io_uring_sq_space_left(&io->ring) < n && io_uring_submit(&io->ring) < 0)
		return 0;
	return io_uring_sq_space_left(&io->ring) >= n;
}

int
km_io_submit(struct km_io *io)
{
	int rc = io_uring_submit(&io->ring);

	return rc < 0 ? rc : 0;
}

static unsigned int
reap(struct km_io *io, unsigned int max)
{
	struct io_uring_cqe *cqe;
	struct km_io_op *op;
	unsigned int n = 0;
	int res;

	while (n < max && io_uring_peek_cqe(&io->ring, &cqe) == 0) {
		op = io_uring_cqe_get_data(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&io->ring, cqe);
		io->inflight--;
		n++;
		if (op != NULL)
			op->done(op, res);
	}
	return n;
}

unsigned int
km_io_poll(struct km_io *io, unsigned int max)
{
	if (io->inflight == 0)
		return 0;
	return reap(io, max);
}

int
km_io_wait(struct km_io *io)
{
	struct io_uring_cqe *cqe;
	int rc;

	if (io->inflight == 0)
		return 0;
	rc = io_uring_submit_and_wait(&io->ring, 1);
	if (rc < 0 && rc != -EINTR)
		return rc;
	rc = io_uring_peek_cqe(&io->ring, &cqe);
	if (rc < 0)
		return rc == -EAGAIN ? 0 : rc;
	return (int)reap(io, io->limit);
}

unsigned int
km_io_inflight(const struct km_io *io)
{
	return io->inflight;
}
