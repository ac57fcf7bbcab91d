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

/* Where the last km_mailbox_run() spent its time (all 0 when the command was not applied).
 * Control lcore: rw. */
struct km_mailbox_timing {
	uint64_t queued_us;    /* posted -> claimed by the worker (its scheduling, its iteration) */
	uint64_t run_us;       /* the worker applying it */
	uint64_t in_queued_us; /* MOVE: the old owner done -> the new owner took it */
	uint64_t in_run_us;    /* MOVE: the new owner's attach */
	uint64_t seen_us;      /* applied -> seen by the control lcore (its naps) */
};
extern struct km_mailbox_timing km_mailbox_last;

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

/* Start the live export x on worker w (km_proc_export_start), or end the one in progress
 * there (cancel). @return the worker's rc, -EBUSY (not queued), -ETIMEDOUT (not applied).
 * @note Context: control lcore. */
int km_mailbox_export_start(uint16_t w, struct km_proc_export *x);
int km_mailbox_export_cancel(uint16_t w);

/* Replication streams of shards on worker w (km_proc.h): start x on its shard, end it.
 * @return the worker's rc, -EBUSY, -ETIMEDOUT. @note Context: control lcore. */
int km_mailbox_repl_start(uint16_t w, struct km_proc_export *x);
int km_mailbox_repl_stop(uint16_t w, struct km_proc_export *x);
/* Block or unblock replica tag of shard id (km_proc_repl_block). */
int km_mailbox_repl_block(uint16_t w, uint64_t id, uint64_t tag, int blocked);

/*
 * Move shard id from worker `from` to worker `to` in one command (KM_WCMD_MOVE, datapath.h):
 * the old owner detaches it and queues its attach on the new owner itself, handing the
 * shard's requests to it meanwhile, so that none is answered BUSY; epoch is that of the map
 * that gives the shard to `to`, to be published once this returns 0.
 * @return 0 (the shard is `to`'s, with its at-most-once entries; *keys: its entries,
 *   *nb_dedup: at-most-once entries handed over);
 *   -EBADMSG (quarantined: not moved); or -errno: *store NULL, nothing changed (the shard
 *   is still `from`'s); *store set, detached and not attached anywhere: the caller's, with
 *   *dedup (to give back).
 * @note Context: control lcore.
 */
int km_mailbox_move(uint16_t from, uint16_t to, uint64_t id, uint32_t epoch,
	struct km_store **store, struct km_proc_dedup **dedup, uint64_t *keys, uint32_t *nb_dedup);

#endif /* KEYMAPD_MAILBOX_H */
