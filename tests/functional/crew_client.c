/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Hot-key replication checker (tests/functional/crew.sh, tools/bench/crew): one writer and
 * READERS readers, each on its own libkeymap handle and thread, for SECONDS.
 *
 * The writer PUTs the hot key with an increasing counter (the value is the counter in
 * decimal, padded to the value size) and, once a PUT is acknowledged, publishes its
 * counter. Every reader GETs the hot key with probability HOT_PCT percent, else one of
 * the other keys (preloaded, each with a known value). A hot read must return a counter
 * at least as large as the one published before the read was sent (no read after an
 * acknowledged write returns the older value) and at least as large as the reader's
 * previous hot read (reads never go back in time). Every reply is checked: anything but
 * OK with the expected value is an error.
 *
 * With --big N, the writer makes every Nth value larger than [crew] value_max (its copies
 * are withdrawn) and the next one small again.
 *
 * --hot KEY checks another hot key (tools/bench/crew: the one keymap-bench's workload
 * makes hot, written here once the bench's preload is over).
 *
 * usage: crew_client HOST SECONDS READERS HOT_PCT [--keys N] [--value N] [--big N]
 *        [--write-us US] [--hot KEY]
 * Prints one line of figures; exit 0 all checked, 1 a violation or an error, 2 usage.
 */

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <km_client.h>

#define READERS_MAX 16
#define BIG_LEN     600 /* over the test's [crew] value_max, under [store] value_max */

static const char *host;
static const char *hot_key = "crew/hot";
static double seconds;
static unsigned int hot_pct, nb_keys = 1000, value_len = 32, big_every, write_us = 1000;
static _Atomic uint64_t acked; /* the writer's last acknowledged counter */
static _Atomic int stop;

struct reader {
	pthread_t th;
	unsigned int id;
	uint64_t reads, hot_reads, errors, back_in_time, stale, max_seen;
	struct km_client_stats st;
};

static uint64_t writes, write_errors, big_writes;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
open_handle(struct km_client **c)
{
	struct km_client_opts o = {.host = host, .timeout_ms = 200, .retries = 5, .lazy = 1};

	return km_client_open(&o, c);
}

static size_t
other_value(unsigned int k, char *buf)
{
	return (size_t)snprintf(buf, 64, "value-%u", k);
}

static size_t
hot_value(uint64_t counter, char *buf, size_t len)
{
	int n = snprintf(buf, 32, "%020" PRIu64, counter);

	memset(buf + n, 'x', len - (size_t)n);
	return len;
}

static void *
writer_main(void *arg)
{
	struct km_client *c;
	char v[BIG_LEN];
	uint64_t counter = atomic_load(&acked);
	size_t len;

	(void)arg;
	if (open_handle(&c) != KM_OK) {
		write_errors++;
		return NULL;
	}
	while (!atomic_load(&stop)) {
		counter++;
		len = value_len;
		if (big_every != 0 && counter % big_every == 0) {
			len = BIG_LEN;
			big_writes++;
		}
		if (km_put(c, hot_key, strlen(hot_key), v, hot_value(counter, v, len), NULL) !=
			KM_OK) {
			write_errors++;
			break;
		}
		writes++;
		/* Acknowledged: any read sent from now on must see counter or later. */
		atomic_store(&acked, counter);
		usleep(write_us);
	}
	km_client_close(c);
	return NULL;
}

static void *
reader_main(void *arg)
{
	struct reader *r = arg;
	uint64_t rng = 0x9e3779b97f4a7c15ULL * (r->id + 1), floor, got, last = 0;
	char key[32], buf[2048], want[64];
	struct km_client *c;
	size_t len, wlen;
	unsigned int k;
	int rc;

	if (open_handle(&c) != KM_OK) {
		r->errors++;
		return NULL;
	}
	while (!atomic_load(&stop)) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		r->reads++;
		if (rng % 100 < hot_pct) {
			floor = atomic_load(&acked);
			rc = km_get(c, hot_key, strlen(hot_key), buf, sizeof(buf) - 1, &len, NULL);
			if (rc != KM_OK || len < 20) {
				fprintf(stderr, "reader %u: hot GET: %s (len %zu)\n", r->id,
					km_strerror(rc), rc == KM_OK ? len : 0);
				r->errors++;
				continue;
			}
			buf[20] = '\0';
			got = strtoull(buf, NULL, 10);
			r->hot_reads++;
			if (got < floor) {
				fprintf(stderr,
					"reader %u: read %" PRIu64 " after write %" PRIu64
					" was acknowledged\n",
					r->id, got, floor);
				r->stale++;
			}
			if (got < last) {
				fprintf(stderr, "reader %u: read %" PRIu64 " after %" PRIu64 "\n",
					r->id, got, last);
				r->back_in_time++;
			}
			if (got > last)
				last = got;
			continue;
		}
		k = (unsigned int)(rng >> 20) % nb_keys;
		snprintf(key, sizeof(key), "crew/k%u", k);
		rc = km_get(c, key, strlen(key), buf, sizeof(buf), &len, NULL);
		wlen = other_value(k, want);
		if (rc != KM_OK || len != wlen || memcmp(buf, want, wlen) != 0) {
			fprintf(stderr, "reader %u: GET %s: %s\n", r->id, key, km_strerror(rc));
			r->errors++;
		}
	}
	r->max_seen = last;
	km_client_get_stats(c, &r->st);
	km_client_close(c);
	return NULL;
}

static int
preload(void)
{
	struct km_client *c;
	char key[32], v[64];
	unsigned int k;
	int rc;

	rc = open_handle(&c);
	if (rc != KM_OK) {
		fprintf(stderr, "crew_client: open: %s\n", km_strerror(rc));
		return -1;
	}
	for (k = 0; k < nb_keys && rc == KM_OK; k++) {
		snprintf(key, sizeof(key), "crew/k%u", k);
		rc = km_put(c, key, strlen(key), v, other_value(k, v), NULL);
	}
	if (rc == KM_OK)
		rc = km_put(c, hot_key, strlen(hot_key), v, hot_value(0, v, value_len), NULL);
	km_client_close(c);
	if (rc != KM_OK)
		fprintf(stderr, "crew_client: preload: %s\n", km_strerror(rc));
	return rc == KM_OK ? 0 : -1;
}

int
main(int argc, char **argv)
{
	struct reader rd[READERS_MAX];
	uint64_t reads = 0, hot = 0, errors = 0, back = 0, stale = 0, spread = 0;
	unsigned int nb_readers, i;
	pthread_t wt;
	double t0;

	if (argc < 5) {
		fprintf(stderr, "usage: crew_client HOST SECONDS READERS HOT_PCT [--keys N] "
				"[--value N] [--big N] [--write-us US] [--hot KEY]\n");
		return 2;
	}
	host = argv[1];
	seconds = atof(argv[2]);
	nb_readers = (unsigned int)atoi(argv[3]);
	hot_pct = (unsigned int)atoi(argv[4]);
	for (i = 5; i + 1 < (unsigned int)argc; i += 2) {
		unsigned int v = (unsigned int)atoi(argv[i + 1]);

		if (strcmp(argv[i], "--hot") == 0)
			hot_key = argv[i + 1];
		else if (strcmp(argv[i], "--keys") == 0)
			nb_keys = v;
		else if (strcmp(argv[i], "--value") == 0)
			value_len = v;
		else if (strcmp(argv[i], "--big") == 0)
			big_every = v;
		else if (strcmp(argv[i], "--write-us") == 0)
			write_us = v;
		else
			i = (unsigned int)argc;
	}
	if (i != (unsigned int)argc || seconds <= 0 || seconds > 600 || nb_readers == 0 ||
		nb_readers > READERS_MAX || hot_pct > 100 || nb_keys == 0 || value_len < 20 ||
		strlen(hot_key) == 0 || value_len > 1024) {
		fprintf(stderr, "crew_client: bad arguments\n");
		return 2;
	}
	if (preload() < 0)
		return 1;
	memset(rd, 0, sizeof(rd));
	for (i = 0; i < nb_readers; i++) {
		rd[i].id = i;
		pthread_create(&rd[i].th, NULL, reader_main, &rd[i]);
	}
	pthread_create(&wt, NULL, writer_main, NULL);
	t0 = now_s();
	while (now_s() - t0 < seconds)
		usleep(10000);
	atomic_store(&stop, 1);
	pthread_join(wt, NULL);
	for (i = 0; i < nb_readers; i++) {
		pthread_join(rd[i].th, NULL);
		reads += rd[i].reads;
		hot += rd[i].hot_reads;
		errors += rd[i].errors;
		back += rd[i].back_in_time;
		stale += rd[i].stale;
		spread += rd[i].st.crew_spread;
	}
	printf("reads %" PRIu64 " hot_reads %" PRIu64 " writes %" PRIu64 " big_writes %" PRIu64
	       " spread %" PRIu64 " errors %" PRIu64 " write_errors %" PRIu64
	       " back_in_time %" PRIu64 " stale %" PRIu64 "\n",
		reads, hot, writes, big_writes, spread, errors, write_errors, back, stale);
	return errors == 0 && write_errors == 0 && back == 0 && stale == 0 && writes > 0 && hot > 0
		       ? 0
		       : 1;
}
