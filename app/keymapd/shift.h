/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_SHIFT_H
#define KEYMAPD_SHIFT_H

/*
 * The partition shifter in keymapd (DESIGN §3, docs/architecture.md): routing overrides
 * for hot entities, added and removed by keymapd itself (shift_auto.c) or by the operator
 * (keymapctl override), settled by the control lcore once every worker's background pass
 * found nothing left to move.
 *
 * Hand-offs between workers carry a mark and, for a moved entry, the move (lib/proc
 * km_proc.h, KM_HAND_*) in an mbuf dynamic field: written by the sending worker before
 * the enqueue, read by the receiving worker after the dequeue (the ring orders them).
 */

#include <stddef.h>
#include <stdint.h>

#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>

#include <km_proc.h>

#include "config.h"

/* What a hand-off carries besides its datagram; rx_tsc also in a request whose reply
 * waits (disk, group write, replication) or is built again from a large buffer. */
struct km_shift_dyn {
	uint8_t mark;             /* KM_HAND_* (a hand-off always sets it) */
	struct km_shift_move *mv; /* a moved entry, or NULL */
	uint64_t rx_tsc;          /* TSC of the RX burst that brought the request: latency */
};

/* Offset of the dynamic field (km_shift_init()); read-only afterwards. */
extern int km_shift_dyn_off;

static inline struct km_shift_dyn *
km_shift_dyn(struct rte_mbuf *m)
{
	return RTE_MBUF_DYNFIELD(m, km_shift_dyn_off, struct km_shift_dyn *);
}

/*
 * Register the mbuf dynamic field. @return 0 or -errno.
 * @note Context: main lcore, before the workers start.
 */
int km_shift_init(void);

/*
 * Free the moves riding in mbufs about to be freed unprocessed (keymapd stopping).
 * @note Context: main lcore, once the workers have stopped.
 */
void km_shift_drop(struct rte_mbuf **m, unsigned int n);

/*
 * Settle the overrides whose keys have all moved: when every worker found the current
 * map clean, MIGRATING ones become SETTLED and REVERTING ones are removed (one new map).
 * @note Context: control lcore, once per loop iteration.
 */
void km_shift_tick(void);

/*
 * Operator changes (keymapctl override): add an override of routing part `part` (extra
 * more components), or undo it (it reverts, then goes). The new map is published at once.
 * @return 0, or -errno with a message in err: -EINVAL not a routing part, -EEXIST,
 *   -ENOSPC, -ENOENT, -EALREADY, -ENOTSUP (a store driver that keeps values on disk).
 * @note Context: control lcore.
 */
int km_shift_add(const char *part, uint8_t extra, char *err, size_t errlen);
int km_shift_remove(const char *part, char *err, size_t errlen);

/*
 * The automatic shifter (shift_auto.c): hot routing parts found from the sampled accesses
 * get an override, undone when they cool ([shift], docs/operations.md 2.14).
 * km_shift_auto_init: control lcore init, before the workers run. km_shift_note: one
 * sampled access (a KM_PROC_NOTE_CREW note), from the thread draining the workers' notes.
 * km_shift_auto_tick: control lcore, once per loop iteration (decides every
 * [shift] interval_ms). km_shift_auto_sampling: whether the workers must sample accesses
 * (for hot keys or hot parts). km_shift_is_auto: whether the override of the part whose
 * hash is given was added automatically (control lcore).
 */
void km_shift_auto_init(const struct km_conf *c);
void km_shift_note(const struct km_proc_note *n);
void km_shift_auto_tick(void);
int km_shift_auto_sampling(const struct km_conf *c);
int km_shift_is_auto(uint64_t hash);
/* The operator added (removed = 0) or removed the override of the part whose hash is
 * given: whatever the automatic shifter thought of it, it is the operator's now; a part
 * the operator undid is not overridden automatically for 10 minutes. Control lcore. */
void km_shift_auto_forget(uint64_t hash, int removed);

/* Register /keymap/overrides, /keymap/override_add, /keymap/override_remove
 * (telemetry_shift.c). @return 0 or -errno. @note Context: main lcore. */
int km_telemetry_shift_register(void);

#endif /* KEYMAPD_SHIFT_H */
