/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_IO_H
#define KM_IO_H

/**
 * @file
 * A thread's asynchronous disk I/O: one io_uring, polled by its owner (a worker polls it
 * in its loop; nothing ever waits in the kernel for a completion except km_io_wait()).
 *
 * Every submission carries a struct km_io_op; its done() is called from km_io_poll() with
 * the CQE's result (bytes, 0, or -errno). Linked submissions (a write then an fdatasync)
 * complete one by one, each with its own op (they may share one).
 *
 * Concurrency: single thread, the owner.
 */

#include <stdint.h>

#include <liburing.h>

struct km_io_op {
	void (*done)(struct km_io_op *op, int res);
};

struct km_io;

/**
 * @param entries submission queue size (rounded up to a power of two). @return 0, -errno.
 * @note Context: any thread; the ring then belongs to one owner thread.
 */
int km_io_create(unsigned int entries, struct km_io **out);

/**
 * Waits for everything in flight (their done() run), then frees. NULL is allowed.
 * @note Context: the owner thread.
 */
void km_io_destroy(struct km_io *io);

/**
 * A submission queue entry for op, or NULL when nothing more may be put in flight (the
 * completion queue must never overflow): the caller retries after a poll, or refuses.
 * @note Context: the owner thread.
 */
struct io_uring_sqe *km_io_sqe(struct km_io *io, struct km_io_op *op);

/**
 * Whether n more entries can be taken now with km_io_sqe() without it submitting
 * anything in between (prepared entries are submitted here first if the queue is short).
 * @note Context: the owner thread.
 */
int km_io_room(struct km_io *io, unsigned int n);

/** Hand the prepared entries to the kernel. @return 0 or -errno.
 * @note Context: the owner thread. */
int km_io_submit(struct km_io *io);

/** Reap up to max completions, calling their done(). @return completions reaped.
 * @note Context: the owner thread. */
unsigned int km_io_poll(struct km_io *io, unsigned int max);

/** Block until at least one completion is reaped (a drain). @return reaped, or -errno.
 * @note Context: the owner thread. */
int km_io_wait(struct km_io *io);

/** Operations submitted (or prepared) and not completed yet.
 * @note Context: the owner thread. */
unsigned int km_io_inflight(const struct km_io *io);

#endif /* KM_IO_H */
