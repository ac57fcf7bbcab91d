/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAP_BENCH_H
#define KEYMAP_BENCH_H

/*
 * keymap-bench: a load generator for keymapd, its echo mode and memcached.
 *
 * One generator thread (the EAL main lcore for ethdev transports; with --threads N, N
 * lcores, each with a queue pair of the port) runs the engine: it builds request datagrams
 * with the target codec (km_target.h), hands them to a transport (a DPDK port, or a
 * kernel UDP socket), matches replies to requests by id and records latencies in
 * histograms (km_hist.h). Closed loop keeps N requests in
 * flight; open loop sends on a fixed schedule and measures each latency from the time
 * the request was due, so a slow server cannot hide its queueing (no coordinated
 * omission). A separate driver runs keymap requests through libkeymap's batch API.
 */

#include <stdint.h>
#include <stdio.h>

#include <km_hist.h>
#include <km_proto.h>
#include <km_target.h>
#include <km_trace.h>
#include <km_workload.h>

#define BENCH_BURST 32
/** Most generator lcores (--threads), each with its queue pair and UDP source port. */
#define BENCH_GEN_MAX 16
/** Largest payload a transport carries (one Ethernet frame). */
#define BENCH_PAYLOAD_MAX 1472

enum bench_xport_kind {
	BENCH_X_ETH,       /* a DPDK port given by EAL arguments (memif, tap, a NIC) */
	BENCH_X_SOCKET,    /* kernel UDP socket, sendmmsg/recvmmsg */
	BENCH_X_LIBKEYMAP, /* libkeymap's batch API (keymap target only, closed loop) */
};

/** Servers -s may name (libkeymap: the seeds of a cluster). */
#define BENCH_SERVERS_MAX 16

struct bench_conf {
	enum km_tgt_kind target;
	enum bench_xport_kind xport;
	uint32_t server_ip; /* network order; the first -s */
	uint16_t server_port;
	/* Every server of -s (a list, or -s repeated), the first one included; only
	 * libkeymap takes more than one. Port 0: none given (server_port's default). */
	uint32_t servers_ip[BENCH_SERVERS_MAX];
	uint16_t servers_port[BENCH_SERVERS_MAX];
	uint32_t nb_servers; /* 0: -s not given */
	uint32_t src_ip;     /* ethdev: our address, network order */
	uint16_t src_port;   /* ethdev: our UDP port */
	uint16_t eth_port;   /* ethdev port id */
	uint32_t threads;    /* eth: generator lcores, one queue pair and source port each */
	/* workload */
	struct km_wl_conf wl;
	uint64_t hot_move_us; /* zipf, hotset: the hot keys move every this long (0: never) */
	uint32_t value_size;
	const char *trace_path;
	double trace_speed; /* 0: as fast as the window allows; else timestamps / speed */
	int preload;        /* PUT every key before measuring */
	/* load */
	uint32_t inflight;     /* closed loop: requests in flight */
	double rate;           /* open loop: requests/s (0: closed loop) */
	int drop_refused;      /* open loop: a request the transport refuses is dropped */
	int check;             /* every reply checked against its request (km_tgt_check) */
	double duration_s;     /* measuring phase bound */
	uint64_t max_requests; /* 0: unbounded (duration decides) */
	uint64_t timeout_us;
	double max_timeout_ratio; /* more timeouts than this share of requests: exit 2 */
	/* keymap: client key (--key ID:HEX), every request carries its MAC */
	const char *auth_key; /* as given, for libkeymap; NULL: none */
	int has_key;
	uint32_t key_id;
	uint8_t key[KM_MAC_KEY_LEN];
	/* output */
	int quiet;
	const char *json_path;
	const char *csv_path;
	const char *cdf_path;
	const char *label;
};

/* Results of a phase. Counters are counts of requests. */
struct bench_result {
	uint64_t sent;
	uint64_t replies;
	uint64_t gets, hits, misses;
	uint64_t puts, dels;
	uint64_t errors; /* replies with an error status */
	uint64_t busy;   /* of which BUSY (keymap target) */
	uint64_t timeouts;
	uint64_t stray;   /* datagrams that matched no request in flight */
	uint64_t bad;     /* --check: replies that are not their request's answer */
	uint64_t tx_full; /* sends the transport refused (retried later unless dropped) */
	uint64_t dropped; /* open loop, drop_refused: requests refused and not sent again */
	uint64_t late;    /* open loop: requests sent after their due time + 1 ms */
	uint64_t failed;  /* preload: keys not stored (timed out every try, or not sent) */
	uint64_t unsent;  /* open loop: requests due before the end that never went out */
	double elapsed_s;
	double cpu_share;   /* the engine thread's CPU time / wall time of the phase: below 1 when
			     * the machine's other work took its CPU (--threads: the mean) */
	struct km_hist lat; /* ns */
	/* open loop: from the send rather than the due time (the server's and the link's part,
	 * without the generator's own lag); closed loop: the same as lat */
	struct km_hist lat_sent;
};

/* One second of the run, for the progress line and the CSV. */
struct bench_tick {
	double t_s;
	uint64_t replies, timeouts;
	uint64_t p50_ns, p99_ns;
};

/* Transport: buffers for payloads to send, and received payloads. */
struct bench_xport {
	/* Up to n buffers of cap bytes for payloads to send. @return how many. */
	unsigned int (*tx_prepare)(
		struct bench_xport *x, unsigned int n, uint8_t **bufs, size_t *cap);
	/* Send the first n prepared buffers with these payload lengths; the other prepared
	 * buffers are released. @return how many went out (the rest are released too). */
	unsigned int (*tx_send)(struct bench_xport *x, unsigned int n, const uint16_t *lens);
	/* Up to n received payloads, valid until the next rx call. @return how many. */
	unsigned int (*rx)(
		struct bench_xport *x, unsigned int n, const uint8_t **bufs, uint16_t *lens);
	void (*close)(struct bench_xport *x);
};

/* Time: TSC on x86, calibrated once against CLOCK_MONOTONIC. */
void bench_clock_init(void);
uint64_t bench_now_ns(void);

/* Transports. @return NULL with a message in err. */
struct bench_xport *bench_xport_socket(const struct bench_conf *c, char *err, size_t errlen);
/* nb queue pairs of the port in xs[0..nb-1] (queue q sends from UDP port src_port + q; its
 * replies come to it whichever queue receives them); each is closed on its own, the port
 * with the last. @return 0, or -1 with a message in err. */
int bench_xport_eth(const struct bench_conf *c, unsigned int nb, struct bench_xport **xs, char *err,
	size_t errlen);

/*
 * keymap over the eth and socket transports: what requests carry (hello.c). A server may
 * require a cookie, bound to the one source address and port a transport sends from, on
 * requests whose reply is larger (GET): a HELLO at start fetches it, then the engine
 * renews it at half its lifetime, or at once when a reply says it was refused. The
 * cookie and the key id are pre-encoded in the seal; with a key, a MAC per request.
 */
struct bench_auth {
	const struct bench_conf *c; /* the key */
	struct km_tgt_seal seal;    /* every request's trailers */
	struct km_tgt_seal hseal;   /* HELLO's: the MAC only */
	uint64_t timeout_ns;        /* of a HELLO */
	uint64_t renew_ns;          /* a HELLO is due from then (0: none) */
	uint64_t hello_id;          /* of the HELLO in flight (0: none) */
	uint64_t hello_ns;          /* when the last one was sent */
	uint64_t next_id;
	uint64_t hellos; /* sent */
};

/*
 * HELLO once before the run (a bounded wait): take the cookie if the server requires
 * one. A server without HELLO is fine without a key; no answer at all is left to the run
 * to report.
 * @return 0, or -1 with a message in err (the server refused the key, or requires one).
 */
int bench_hello_start(struct bench_xport *x, const struct bench_conf *c, struct bench_auth *a,
	char *err, size_t errlen);
/* In the run: send a HELLO when one is due, again when it was lost. */
void bench_hello_tick(struct bench_xport *x, struct bench_auth *a, uint64_t now);
/* A datagram no request claims: @return 1 when it was the HELLO's reply (taken). */
int bench_hello_reply(struct bench_auth *a, const uint8_t *buf, size_t len);
/* A reply said DENIED for want of a cookie: renew it. */
void bench_hello_refused(struct bench_auth *a, uint64_t now);

struct bench_agg;

/* Everything the engine and the libkeymap driver need for one phase. */
struct bench_phase {
	const char *name; /* "preload", "run", "replay" */
	const struct bench_conf *conf;
	struct bench_auth *auth; /* keymap over eth/socket: trailers, HELLO; else NULL */
	/* the request source: exactly one of wl (synthetic), trace (replay) or
	 * preload_keys (PUT keys 0..n-1 of wl, or every key of trace) */
	struct km_wl *wl;
	const struct km_trace *trace;
	int preload;
	double rate;       /* 0: closed loop */
	double duration_s; /* bound of the phase */
	uint64_t max_requests;
	int progress;             /* print a line every second */
	struct bench_tick *ticks; /* one per second, may be NULL */
	size_t nb_ticks, cap_ticks;
	/* preload by several engines: this one PUTs keys part, part + parts, ... (parts 0 or
	 * 1: every key) */
	uint32_t part, parts;
	/* several engines: their seconds are merged there (NULL: one engine) */
	struct bench_agg *agg;
};

/* One request taken from a phase's source. */
struct bench_req {
	uint64_t due_ns; /* open loop: when it is due; closed loop: set when chosen */
	uint32_t key;    /* key index (workload) or key id (trace) */
	uint32_t session;
	uint32_t vlen; /* PUT: value bytes */
	uint8_t op;    /* enum km_wl_opcode */
	uint8_t tries; /* preload: earlier attempts of this key */
};

/* Where a phase's requests come from: the workload, the trace or the preload list. */
struct bench_source {
	const struct bench_phase *ph;
	uint64_t t0;        /* run start (ns): trace due times are relative to it */
	uint64_t cursor;    /* next key (preload) or record (trace) */
	uint64_t stride;    /* preload: from one key to this engine's next */
	uint64_t nb_source; /* keys or records; UINT64_MAX for a synthetic workload */
	uint64_t issued;    /* requests taken */
	uint32_t *retry;    /* preload: keys whose request timed out, to send again */
	uint8_t *retry_tries;
	uint32_t nb_retry;
};

/* @return 0 or -ENOMEM. retry_cap: most keys waiting for a retry at once (preload). */
int bench_source_init(struct bench_source *s, const struct bench_phase *ph, uint32_t retry_cap);
void bench_source_fini(struct bench_source *s);
/* The next request (now: time in ns, for the hot set's move). @return 0, 1 exhausted. */
int bench_source_next(struct bench_source *s, uint64_t now, struct bench_req *p);
/* Key number `key` of the workload t_us into the run with --hot-move-at: every
 * hot_move_us the numbering rotates (hotset: by the hot range's size, the next block of
 * keys becomes hot; zipf: by a golden-ratio share of the keys), so the hot keys move.
 * @return the key number to ask for. @note Context: any thread. */
uint64_t bench_hot_move(const struct bench_conf *c, uint64_t key, uint64_t t_us);
/* Bytes of key number `key` into buf (KM_KEY_MAX bytes). @return its length. */
size_t bench_source_key(const struct bench_source *s, uint32_t key, char *buf);
/* Preload: keys of this engine not taken yet. */
uint64_t bench_source_left(const struct bench_source *s);

/* Run a phase over a transport. @return 0, or -ENOMEM. */
int bench_engine_run(struct bench_xport *x, struct bench_phase *ph, struct bench_result *r);

/* What one generator lcore of --threads works with. */
struct bench_gen {
	struct bench_xport *x;   /* its queue pair */
	struct bench_auth *auth; /* its source port's cookie (keymap), or NULL */
	struct km_wl *wl;        /* its own workload generator (its own seed), or NULL */
};

/*
 * Run a phase on n engines, engine i on gens[i] and the i-th EAL lcore (0: the calling
 * main lcore): each takes 1/n of the window, of the rate, of -n and of the preload's keys; their
 * seconds and results are merged into ph's ticks and r. n == 1 is bench_engine_run().
 * @return 0, or -ENOMEM.
 */
int bench_gens_run(const struct bench_gen *gens, unsigned int n, struct bench_phase *ph,
	struct bench_result *r);
/* bench_hello_start() for every engine's source port, each on its lcore, all queues
 * polled meanwhile (a reply may arrive on another queue). @return 0, or -1 with a
 * message in err. */
int bench_gens_hello(const struct bench_gen *gens, unsigned int n, const struct bench_conf *c,
	char *err, size_t errlen);

/* Run a phase through libkeymap (closed loop, window = conf->inflight). */
int bench_libkeymap_run(struct bench_phase *ph, struct bench_result *r, char *err, size_t errlen);

/* Set by SIGINT/SIGTERM: phases end early and the summary is still printed. */
extern volatile int bench_stop;

/* What the current second of a phase collected. */
struct bench_second {
	struct km_hist lat;
	uint64_t replies, timeouts;
	size_t idx; /* seconds of the engine closed before this one */
};

/* Close the second ending t_s into the run: progress line, ph->ticks (or, with several
 * engines, into ph->agg), then reset s for the next. */
void bench_second_close(struct bench_phase *ph, struct bench_second *s, double t_s);
/* A second of the phase is over: progress line and ph->ticks. */
void bench_second_emit(struct bench_phase *ph, const struct bench_second *s, double t_s);
/* Several engines (gen.c): merge an engine's second into the phase's. */
void bench_agg_close(struct bench_agg *a, const struct bench_second *s, double t_s);
/* Engine `engine` stopped after closing `seconds` seconds. */
void bench_agg_leave(struct bench_agg *a, unsigned int engine, size_t seconds);

/* Progress line to stderr. */
void bench_print_tick(const char *phase, const struct bench_tick *t, double interval_s);

#endif /* KEYMAP_BENCH_H */
