/* SPDX-License-Identifier: BSD-3-Clause */

/* Requests of a phase: synthetic (km_workload), a trace's records, or a preload list. */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

int
bench_source_init(struct bench_source *s, const struct bench_phase *ph, uint32_t retry_cap)
{
	memset(s, 0, sizeof(*s));
	s->ph = ph;
	s->stride = 1;
	if (ph->preload && ph->parts > 1) {
		s->cursor = ph->part;
		s->stride = ph->parts;
	}
	if (ph->preload)
		s->nb_source = ph->trace != NULL ? ph->trace->nb_keys : km_wl_nb_keys(ph->wl);
	else
		s->nb_source = ph->trace != NULL ? ph->trace->nb_recs : UINT64_MAX;
	if (ph->preload) {
		s->retry = calloc(retry_cap, sizeof(*s->retry));
		s->retry_tries = calloc(retry_cap, 1);
		if (s->retry == NULL || s->retry_tries == NULL) {
			bench_source_fini(s);
			return -ENOMEM;
		}
	}
	return 0;
}

void
bench_source_fini(struct bench_source *s)
{
	free(s->retry);
	free(s->retry_tries);
	s->retry = NULL;
	s->retry_tries = NULL;
}

int
bench_source_next(struct bench_source *s, uint64_t now, struct bench_req *p)
{
	const struct bench_phase *ph = s->ph;
	const struct bench_conf *c = ph->conf;
	struct km_wl_op op;

	if (ph->max_requests != 0 && s->issued >= ph->max_requests)
		return 1;
	p->session = 0;
	p->tries = 0;
	if (ph->preload) {
		if (s->nb_retry > 0) {
			s->nb_retry--;
			p->key = s->retry[s->nb_retry];
			p->tries = s->retry_tries[s->nb_retry];
		} else if (s->cursor < s->nb_source) {
			p->key = (uint32_t)s->cursor;
			s->cursor += s->stride;
		} else {
			return 1;
		}
		p->op = KM_WL_PUT;
		p->vlen = ph->trace != NULL ? ph->trace->keys[p->key].first_value_size
					    : c->value_size;
	} else if (ph->trace != NULL) {
		const struct km_trace_rec *r;

		if (s->cursor >= s->nb_source)
			return 1;
		r = &ph->trace->recs[s->cursor++];
		p->key = r->key_id;
		p->op = r->op;
		p->vlen = r->op == KM_WL_PUT ? r->value_size : 0;
		p->session = r->session;
		if (c->trace_speed > 0) {
			/* From the first record's time, saturated: timestamps may be huge. */
			double d = (double)(r->ts_us - ph->trace->recs[0].ts_us) * 1e3 /
				   c->trace_speed;

			p->due_ns = d >= 1.8e19 ? UINT64_MAX : s->t0 + (uint64_t)d;
		}
	} else {
		uint64_t t_us = now > s->t0 ? (now - s->t0) / 1000 : 0;

		km_wl_next(ph->wl, t_us, &op);
		p->key = (uint32_t)bench_hot_move(c, op.key, t_us);
		p->op = op.op;
		p->vlen = op.op == KM_WL_PUT ? c->value_size : 0;
		p->session = op.session;
	}
	s->issued++;
	return 0;
}

uint64_t
bench_source_left(const struct bench_source *s)
{
	return s->cursor < s->nb_source ? (s->nb_source - s->cursor + s->stride - 1) / s->stride
					: 0;
}

uint64_t
bench_hot_move(const struct bench_conf *c, uint64_t key, uint64_t t_us)
{
	const uint64_t n = c->wl.nb_keys;
	uint64_t m, stride;

	if (c->hot_move_us == 0 || n < 2)
		return key;
	m = t_us / c->hot_move_us;
	/* hotset: the next block of hot keys; zipf: a golden-ratio stride, so that the
	 * successive places of the head spread over the keys and do not come back soon. */
	stride = c->wl.dist == KM_WL_HOTSET ? (uint64_t)(c->wl.hot_fraction * (double)n)
					    : (uint64_t)((double)n * 0.6180339887498949);
	if (stride == 0)
		stride = 1;
	return (key + (m % n) * (stride % n)) % n;
}

size_t
bench_source_key(const struct bench_source *s, uint32_t key, char *buf)
{
	if (s->ph->trace != NULL) {
		const struct km_trace_key *k = &s->ph->trace->keys[key];

		memcpy(buf, k->key, k->len);
		return k->len;
	}
	return km_wl_key(s->ph->wl, key, buf);
}
