/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_MAILBOX_H
#define KEYMAPD_MAILBOX_H

/*
 * The control lcore's mailboxes, shared by the control plane's files (mailbox.c,
 * reshard.c, sample.c, control.c):
 *   - the request ring of km_ctl_call() (control.h): other threads (telemetry, metrics)
 *     post a function, the control lcore runs it (km_mailbox_serve);
 *   - each worker's ctl_to_w and w_to_ctl rings (datapath.h): by-value commands
 *     (km_mailbox_send), the attach/detach/info handshake (km_mailbox_post/wait), and what
 *     the workers send back (km_mailbox_drain).
 */

#include <stdint.h>

#include "datapath.h"

#define KM_WCMD_TIMEOUT_MS 2000 /* a worker applies commands every loop iteration */

/*
 * Create the request ring and every worker's ctl_to_w and w_to_ctl (after the workers are
 * set up, before they are launched). @return 0 or -errno.
 * @note Context: main lcore, before any other thread may call km_ctl_call.
 */
int km_mailbox_init(void);

/*
 * Refuse what is still queued, then free the worker rings and the handshakes abandoned in
 * them. @note Context: control lcore, once the workers have stopped.
 */
void km_mailbox_fini(void);

/* Sleep up to us microseconds, or until km_ctl_wake() or a request.
 * @note Context: control lcore. */
void km_mailbox_sleep(unsigned int us);

/* Run (refuse != 0: refuse with -ESHUTDOWN) every queued km_ctl_call request.
 * @note Context: control lcore. */
void km_mailbox_serve(int refuse);

/* Take every message of the workers' w_to_ctl rings: count it, give prefetching its own
 * (prefetch.h). @return the messages for prefetching. @note Context: control lcore. */
unsigned int km_mailbox_drain(void);

/*
 * Queue a by-value command on worker w's ctl_to_w; a full ring drops it (cmd_drops).
 * @return 0 or -EAGAIN. @note Context: control lcore (the only producer).
 */
int km_mailbox_send(uint16_t w, const struct km_cmsg *m);

/* A handshake command, zeroed but for op and shard_id; NULL when out of memory.
 * @note Context: control lcore. */
struct km_wcmd *km_mailbox_cmd_new(enum km_wcmd_op op, uint64_t shard_id);

/* Queue c (KM_CMSG_SYNC) on worker w's ctl_to_w. @return 0 or -EBUSY (ring full: c stays
 * the caller's). @note Context: control lcore. */
int km_mailbox_post(uint16_t w, struct km_wcmd *c);

/*
 * Wait until the worker applied c (acquire: its outputs are then visible).
 * @return c->rc, or -ETIMEDOUT: the worker did not claim c within KM_WCMD_TIMEOUT_MS (or
 *   keymapd is stopping) and never will: c is abandoned, the worker frees it.
 * @note Context: control lcore.
 */
int km_mailbox_wait(struct km_wcmd *c);

/* km_mailbox_post + km_mailbox_wait. @return c->rc, -EBUSY (not queued), -ETIMEDOUT.
 * @note Context: control lcore. */
int km_mailbox_run(uint16_t w, struct km_wcmd *c);

/* Free c after km_mailbox_wait returned rc (an abandoned one is the worker's).
 * @note Context: control lcore. */
void km_mailbox_cmd_free(struct km_wcmd *c, int rc);

/* Take shard id from worker w. @return 0, *store and *dedup (its at-most-once entries,
 * possibly NULL; both the control lcore's), or -errno.
 * @note Context: control lcore. */
int km_mailbox_detach(
	uint16_t w, uint64_t id, struct km_store **store, struct km_proc_dedup **dedup);

/* Give store to worker w as shard id, with the at-most-once entries *dedup (NULL: none;
 * same: they were taken with this store, see km_proc_dedup_give). On success *dedup is
 * set to NULL (the worker's); on error both stay the caller's.
 * @return 0 or -errno. @note Context: control lcore. */
int km_mailbox_attach(
	uint16_t w, uint64_t id, struct km_store *store, struct km_proc_dedup **dedup, int same);

#endif /* KEYMAPD_MAILBOX_H */
