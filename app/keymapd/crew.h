/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_CREW_H
#define KEYMAPD_CREW_H

/*
 * Hot-key replication across workers, the control side (the data side: lib/proc,
 * km_proc.h "Hot-key replication"). The workers sample GET/PUT/CAS/DEL accesses
 * ([crew] sampling) into KM_PROC_NOTE_CREW notes, with each key's owner. Every [crew]
 * interval_ms the control lcore compares each tracked key's sampled reads with all the
 * samples of its owner: a read-mostly key over share_on percent for `hysteresis`
 * intervals gets read copies (KM_CMSG_CREW_ADD to its owner); one under share_off, or
 * written more than write_max percent, for as long, loses them (KM_CMSG_CREW_DEL).
 * What the owners actually hold is read back from the tables each interval, so a refused
 * or lost command, or a copy an owner withdrew by itself (a delete, a large write, a
 * re-sharding), is seen and acted upon again.
 *
 * Notes and completions arrive on the thread that drains w_to_ctl (the control lcore, or
 * the predictor's lcore); decisions run on the control lcore; one mutex keeps them apart.
 */

#include <stdint.h>

#include <km_proc.h>

#include "config.h"
#include "datapath.h"

/* What the control side counted (since start). */
struct km_crew_stats {
	int enabled;
	uint32_t copies;    /* read copies the workers hold now */
	uint32_t tracked;   /* keys tracked in the current interval */
	uint64_t samples;   /* sampled accesses received */
	uint64_t untracked; /* samples of keys not tracked (table full for the interval) */
	uint64_t adds;      /* copies asked of owners */
	uint64_t refused;   /* ... that an owner refused (not in DRAM, too large, full, moved) */
	uint64_t removes;   /* withdrawals asked (cooled, written too often, replication off) */
	uint64_t lost;      /* copies found gone without being asked (deleted, large write,
			     * re-sharding): replicated again if still hot */
};

/*
 * Create the copy tables for c's workers and give them to the processors; start sampling
 * if [crew] enable. @return 0 or -errno.
 * @note Context: main lcore, workers created, not launched.
 */
int km_crew_init(const struct km_conf *c);

/* Free the tables. @note Context: main lcore, once the workers have stopped. */
void km_crew_fini(void);

/*
 * Apply a changed [crew] section (keymapctl set): on/off (off: every copy withdrawn),
 * sampling, thresholds. @return 0. @note Context: control lcore.
 */
int km_crew_configure(const struct km_conf *c);

/*
 * A message of a worker's w_to_ctl: a KM_PROC_NOTE_CREW note or the completion of a
 * KM_CMSG_CREW_ADD. @return 1 taken, 0 not crew's.
 * @note Context: the thread that drains w_to_ctl.
 */
int km_crew_receive(const struct km_wmsg *m);

/* Decide when an interval ended; send what is due. @note Context: control lcore. */
void km_crew_tick(void);

/* Figures now. @note Context: control lcore. */
void km_crew_stats(struct km_crew_stats *st);

/*
 * The read copies held now, up to max. @return the number written.
 * @note Context: any thread (the tables are read as workers read them).
 */
uint32_t km_crew_copies(struct km_crew_info *out, uint32_t max);

/* Register /keymap/hot. @return 0 or -errno. @note Context: main lcore, at start. */
int km_telemetry_crew_register(void);

#endif /* KEYMAPD_CREW_H */
