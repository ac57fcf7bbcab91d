/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KM_TESTENV_H
#define KM_TESTENV_H

/*
 * Functional test environment: a private network namespace with keymapd running in it
 * on net_tap (--no-huge --no-pci, unique --file-prefix), the kernel side of the tap
 * addressed 198.51.100.1/24, keymapd at 198.51.100.2. The calling thread moves into the
 * namespace so that its sockets reach keymapd. Everything is removed by
 * km_testenv_stop(), also from an atexit/signal handler when a test dies.
 */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KM_TEST_SERVER_IP "198.51.100.2"
#define KM_TEST_CLIENT_IP "198.51.100.1"
#define KM_TEST_TAP       "kmtap0"
#define KM_TEST_PORT      7070

struct km_testenv {
	char ns[32];
	char prefix[32];
	char log[128];
	pid_t pid;
	int host_nsfd; /* the namespace we came from */
	int active;
};

/* Exit code that makes meson report SKIP. */
#define KM_TEST_SKIP 77

/* Returns a reason when functional tests cannot run here (not root, no ip(8)), or NULL. */
const char *km_testenv_unavailable(void);

/*
 * Start keymapd (path) with the given EAL lcore option (e.g. "-l 0-1" or
 * "--lcores=0@0,1@0,2@1") and extra keymapd options (NULL-terminated, may be NULL).
 * Waits (bounded) until it is ready and the tap is configured, then enters the namespace.
 * @return 0 or -1 with the reason and log printed to stderr.
 */
int km_testenv_start(
	struct km_testenv *e, const char *keymapd, const char *lcores, const char *const *extra);

/*
 * Stop keymapd (SIGTERM, then SIGKILL after a bound), return to the original namespace,
 * delete the namespace and the DPDK runtime directory. Idempotent.
 * @return keymapd's exit status (0 = clean shutdown), or -1 if it had to be killed.
 */
int km_testenv_stop(struct km_testenv *e);

/* Value of a counter's total in keymapd's final stats (after stop); -1 if absent. */
long long km_testenv_counter(const struct km_testenv *e, const char *name);

/* Value of a counter for worker w (multi-worker runs); -1 if absent. */
long long km_testenv_counter_worker(const struct km_testenv *e, const char *name, unsigned int w);

/* Print keymapd's log to stderr (on failures). */
void km_testenv_dump_log(const struct km_testenv *e);

#endif /* KM_TESTENV_H */
