/* SPDX-License-Identifier: BSD-3-Clause */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "km_testenv.h"

#define START_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS  10000
#define MAX_ENVS         4

static struct km_testenv *envs[MAX_ENVS];

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
sleep_ms(unsigned int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* Run a command (argv form, no shell), quietly; returns its exit status. */
static int
run(const char *const *argv)
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -1;
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		if (devnull >= 0) {
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *
km_testenv_unavailable(void)
{
	static const char *const probe[] = {"ip", "-V", NULL};

	if (geteuid() != 0)
		return "functional tests need root (network namespaces, tap)";
	if (run(probe) != 0)
		return "functional tests need ip(8) from iproute2";
	return NULL;
}

static void
cleanup_all(void)
{
	int i;

	for (i = 0; i < MAX_ENVS; i++)
		if (envs[i] != NULL)
			km_testenv_stop(envs[i]);
}

static void
on_fatal(int sig)
{
	cleanup_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void
track(struct km_testenv *e, int on)
{
	static int hooked;
	int i;

	if (!hooked) {
		atexit(cleanup_all);
		signal(SIGINT, on_fatal);
		signal(SIGTERM, on_fatal);
		signal(SIGABRT, on_fatal);
		signal(SIGSEGV, on_fatal);
		hooked = 1;
	}
	for (i = 0; i < MAX_ENVS; i++) {
		if (on && envs[i] == NULL) {
			envs[i] = e;
			return;
		}
		if (!on && envs[i] == e) {
			envs[i] = NULL;
			return;
		}
	}
}

static int
log_contains(const struct km_testenv *e, const char *needle)
{
	char line[512];
	int found = 0;
	FILE *f = fopen(e->log, "r");

	if (f == NULL)
		return 0;
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

void
km_testenv_dump_log(const struct km_testenv *e)
{
	char line[512];
	FILE *f = fopen(e->log, "r");

	if (f == NULL)
		return;
	fprintf(stderr, "---- keymapd log (%s) ----\n", e->log);
	while (fgets(line, sizeof(line), f) != NULL)
		fputs(line, stderr);
	fprintf(stderr, "---- end of log ----\n");
	fclose(f);
}

/* Child: enter the namespace, send output to the log, become keymapd. */
static void
exec_keymapd(const struct km_testenv *e, const char *keymapd, const char *lcores,
	const char *const *extra)
{
	char nspath[96], prefix_opt[64], *argv[64];
	int fd, n = 0, i;

	snprintf(nspath, sizeof(nspath), "/var/run/netns/%s", e->ns);
	fd = open(nspath, O_RDONLY);
	if (fd < 0 || setns(fd, CLONE_NEWNET) != 0)
		_exit(126);
	fd = open(e->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		_exit(126);
	dup2(fd, 1);
	dup2(fd, 2);
	snprintf(prefix_opt, sizeof(prefix_opt), "--file-prefix=%s", e->prefix);
	argv[n++] = (char *)keymapd;
	argv[n++] = (char *)"-o";
	argv[n++] = (char *)"net.ip=" KM_TEST_SERVER_IP;
	for (i = 0; extra != NULL && extra[i] != NULL && n < 48; i++)
		argv[n++] = (char *)extra[i];
	argv[n++] = (char *)"--";
	argv[n++] = (char *)"--no-huge";
	argv[n++] = (char *)"-m";
	argv[n++] = (char *)"512";
	argv[n++] = (char *)"--no-pci";
	argv[n++] = prefix_opt;
	argv[n++] = (char *)"--vdev=net_tap0,iface=" KM_TEST_TAP;
	argv[n++] = (char *)lcores;
	argv[n] = NULL;
	execv(keymapd, argv);
	_exit(127);
}

int
km_testenv_start(
	struct km_testenv *e, const char *keymapd, const char *lcores, const char *const *extra)
{
	const char *add[] = {"ip", "netns", "add", e->ns, NULL};
	const char *lo[] = {"ip", "netns", "exec", e->ns, "ip", "link", "set", "lo", "up", NULL};
	const char *addr[] = {"ip", "netns", "exec", e->ns, "ip", "addr", "add",
		KM_TEST_CLIENT_IP "/24", "dev", KM_TEST_TAP, NULL};
	const char *up[] = {
		"ip", "netns", "exec", e->ns, "ip", "link", "set", KM_TEST_TAP, "up", NULL};
	char nspath[96];
	uint64_t deadline;
	int fd, st;

	memset(e, 0, sizeof(*e));
	e->host_nsfd = -1;
	snprintf(e->ns, sizeof(e->ns), "kmft%d_%u", (int)getpid(),
		(unsigned int)(now_ms() % 100000));
	snprintf(e->prefix, sizeof(e->prefix), "%s", e->ns);
	snprintf(e->log, sizeof(e->log), "/tmp/%s.log", e->ns);
	if (run(add) != 0) {
		fprintf(stderr, "testenv: cannot create namespace %s\n", e->ns);
		return -1;
	}
	e->active = 1;
	track(e, 1);
	run(lo);
	e->pid = fork();
	if (e->pid < 0)
		goto fail;
	if (e->pid == 0)
		exec_keymapd(e, keymapd, lcores, extra);

	deadline = now_ms() + START_TIMEOUT_MS;
	while (!log_contains(e, "keymap.main: ready")) {
		if (waitpid(e->pid, &st, WNOHANG) == e->pid) {
			fprintf(stderr, "testenv: keymapd exited during start-up (status %d)\n",
				st);
			e->pid = 0;
			goto fail;
		}
		if (now_ms() > deadline) {
			fprintf(stderr, "testenv: keymapd not ready after %d ms\n",
				START_TIMEOUT_MS);
			goto fail;
		}
		sleep_ms(50);
	}
	if (run(addr) != 0 || run(up) != 0) {
		fprintf(stderr, "testenv: cannot configure %s in %s\n", KM_TEST_TAP, e->ns);
		goto fail;
	}
	e->host_nsfd = open("/proc/self/ns/net", O_RDONLY);
	snprintf(nspath, sizeof(nspath), "/var/run/netns/%s", e->ns);
	fd = open(nspath, O_RDONLY);
	if (e->host_nsfd < 0 || fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
		fprintf(stderr, "testenv: cannot enter %s: %s\n", e->ns, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto fail;
	}
	close(fd);
	return 0;
fail:
	km_testenv_dump_log(e);
	km_testenv_stop(e);
	return -1;
}

int
km_testenv_stop(struct km_testenv *e)
{
	const char *del[] = {"ip", "netns", "del", e->ns, NULL};
	char rundir[96];
	const char *rm[] = {"rm", "-rf", rundir, NULL};
	uint64_t deadline;
	int st = 0, ret = -1;

	if (!e->active)
		return -1;
	if (e->pid > 0) {
		kill(e->pid, SIGTERM);
		deadline = now_ms() + STOP_TIMEOUT_MS;
		for (;;) {
			pid_t r = waitpid(e->pid, &st, WNOHANG);

			if (r == e->pid) {
				ret = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
				break;
			}
			if (r < 0 || now_ms() > deadline) {
				kill(e->pid, SIGKILL);
				waitpid(e->pid, &st, 0);
				break;
			}
			sleep_ms(20);
		}
		e->pid = 0;
	}
	if (e->host_nsfd >= 0) {
		setns(e->host_nsfd, CLONE_NEWNET);
		close(e->host_nsfd);
		e->host_nsfd = -1;
	}
	run(del);
	snprintf(rundir, sizeof(rundir), "/var/run/dpdk/%s", e->prefix);
	run(rm);
	e->active = 0;
	track(e, 0);
	return ret;
}

static long long
counter_col(const struct km_testenv *e, const char *name, int col)
{
	char line[1024], *tok, *save, *row;
	long long v = -1;
	FILE *f = fopen(e->log, "r");
	int i;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		/* Log lines: "TIME LEVEL keymap.main: name total w0 ...". */
		row = strstr(line, " keymap.main: ");
		row = row != NULL ? row + strlen(" keymap.main: ") : line;
		tok = strtok_r(row, " \t\n", &save);
		if (tok == NULL || strcmp(tok, name) != 0)
			continue;
		for (i = 0; i <= col && (tok = strtok_r(NULL, " \t\n", &save)) != NULL; i++)
			if (i == col)
				v = strtoll(tok, NULL, 10);
	}
	fclose(f);
	return v;
}

long long
km_testenv_counter(const struct km_testenv *e, const char *name)
{
	return counter_col(e, name, 0);
}

long long
km_testenv_counter_worker(const struct km_testenv *e, const char *name, unsigned int w)
{
	return counter_col(e, name, (int)w + 1);
}
