/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPD_PREFETCH_H
#define KEYMAPD_PREFETCH_H

/*
 * Predictive prefetch, the control lcore's part (DESIGN §5). The workers run the
 * per-shard stream detectors and send notes (lib/proc km_proc.h): sampled accesses, what
 * became of each prefetch, stream keys owned by another worker. Here:
 *   sample  -> km_predict_observe() -> predictions routed to their owner ->
 *              km_pfsched_push(); a sampled miss counts for coverage;
 *   tick    -> km_pfsched_pop() -> KM_CMSG_PREFETCH to the owner (mark = source + 1);
 *   done    -> the worker started the read (ISSUED to the predictor), had nothing to do,
 *              or refused (its budget or pending watermark: demand first);
 *   outcome -> USED / UNUSED / LATE to the predictor (measured precision per source) and
 *              the scheduler (AIMD on threshold and budget); HARM to the ghost list.
 * Sampling adapts: a worker that drops notes (its ring or note buffer full) or is busy
 * more than half of its cycles makes the control lcore sample half as many clients; a
 * quiet second (no drops, under a quarter busy) brings it back towards [prefetch]
 * sampling.
 *
 * By default everything here runs on the control lcore. With [prefetch] lcore, the
 * predictor has an lcore of its own (km_pf_lcore_main): it takes the workers' w_to_ctl
 * rings and runs the ticks, while the control lcore still configures it and reads its
 * figures; one mutex keeps the two apart (uncontended but for an operator's command).
 */

#include <stdint.h>

#include <km_pfsched.h>
#include <km_predict.h>

#include "config.h"
#include "datapath.h"

/* Per model: predictions issued (reads started) and used (hit before eviction). */
struct km_pf_model_stats {
	uint64_t issued, used;
	double precision; /* measured now (decayed): the confidence its predictions get */
};

struct km_pf_stats {
	int active;                          /* enabled with a driver that keeps values on disk */
	uint32_t models;                     /* 1 << enum km_predict_model */
	uint32_t sampling;                   /* one client in N sampled now */
	uint64_t samples;                    /* notes received: sampled accesses */
	uint64_t outcomes;                   /* notes received: outcomes of prefetches */
	uint64_t forwarded;                  /* stream keys forwarded to their owner */
	uint64_t sent;                       /* prefetch commands sent to workers */
	uint64_t started;                    /* ... that started a read */
	uint64_t nothing;                    /* ... cached or being read already */
	uint64_t absent;                     /* ... of a key that does not exist */
	uint64_t refused;                    /* ... refused: budget, watermark, no room */
	uint64_t used, unused, late, harm;   /* the control lcore's prefetches */
	uint64_t sampling_up, sampling_down; /* adaptive sampling steps */
	double busy_share; /* the busiest worker's share of busy cycles, last 100 ms */
	struct km_pfsched_stats sched;
	struct km_predict_stats pred;
	struct km_pf_model_stats model[KM_PREDICT_NB_MODELS];
	/* Workers (all prefetches: stream detectors, control lcore, operator). */
	uint64_t w_issued, w_late, w_refused, w_harm, w_stream, w_stream_fwd, w_samples,
		w_notes_dropped, w_used, w_unused, w_disk_reads;
	double accuracy; /* w_used / (w_used + w_unused) */
	double coverage; /* w_used / (w_used + demand reads) */
};

/*
 * Create the predictor and the scheduler from c and tell the workers their part.
 * @return 0, -ENOMEM. @note Context: control lcore (or main lcore before the loop).
 */
int km_pf_init(const struct km_conf *c);

/* Free everything. @note Context: control lcore, once the workers have stopped. */
void km_pf_fini(void);

/*
 * Apply a changed [prefetch] section (keymapctl set): models, threshold, budget and
 * bytes/s rebuild what they parameterize; the workers get their new part.
 * @return 0, -ENOMEM. @note Context: control lcore.
 */
int km_pf_configure(const struct km_conf *c);

/* A message of a worker's w_to_ctl ring for prefetching (KM_WMSG_NOTE, or KM_WMSG_DONE of
 * a KM_CMSG_PREFETCH the predictor sent). @note Context: the thread that drains w_to_ctl
 * (control lcore, or the predictor's lcore). */
void km_pf_receive(const struct km_wmsg *m);

/*
 * Send what the scheduler lets through now; adapt the sampling.
 * @return whether prefetching is active (the loop then polls the workers' rings often).
 * @note Context: the thread that drains w_to_ctl.
 */
int km_pf_tick(void);

/* Figures now. @note Context: control lcore. */
void km_pf_stats(struct km_pf_stats *st);

/* The strongest learned transitions. @return the number written. @note Context: control
 * lcore. */
unsigned int km_pf_top(struct km_predict_transition *out, unsigned int max);

/*
 * The predictor's own lcore ([prefetch] lcore): drain the workers' w_to_ctl rings and
 * tick until keymapd stops; a QSBR reader of the shard map. arg is unused.
 * @note Context: the predictor's lcore (rte_eal_remote_launch), after km_ctl_init.
 */
int km_pf_lcore_main(void *arg);

#endif /* KEYMAPD_PREFETCH_H */
