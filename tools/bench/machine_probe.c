/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymap-machine-probe: two properties of the machine that keymapd's figures depend on,
 * measured in TSC cycles as keymapd counts its own.
 *
 * c2c: the one-way latency of a cache line between two CPUs (half of a round trip of a
 * counter that one CPU writes and the other waits for and answers). A request and its
 * reply cross between the generator's CPU and the worker's over net_memif: each line of
 * them passes between these two CPUs.
 *
 * chase: the latency of a dependent load over a working set of a given size (a random
 * cyclic order of its cache lines, so no hardware prefetcher helps): from which size on
 * a store's records come from DRAM rather than from a cache.
 *
 * clock: a CPU's core clock against the TSC, from chains of dependent 64-bit
 * multiplications (three core cycles each on x86-64 cores since Nehalem and Zen; an
 * addition may take none, some cores doing it at rename): what one TSC cycle, keymapd's
 * unit, is worth in core cycles.
 *
 * Every wait is bounded: a round trip not completed within five seconds ends the probe
 * with an error.
 */

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <time.h>

#include <x86intrin.h>

#include <km_util.h>

#define SETS          5 /* c2c: sets of round trips, the median reported */
#define TRIPS_DEFAULT 100000
#define TRIPS_MAX     10000000
#define LOADS_DEFAULT 2000000
#define LOADS_MAX     1000000000
#define SIZES_MAX     16
#define SIZE_MIN      (64 * 1024)
#define SIZE_MAX_MB   1024
#define WAIT_S        5 /* longest wait for the other CPU */
#define LINE          64
#define CLOCK_SETS    1001  /* clock: sets of multiplications, the median reported */
#define CLOCK_MULS    13332 /* clock: dependent multiplications per set (~10 us at 4 GHz) */
#define MUL_CYCLES    3     /* latency of a 64-bit imul */

static const char sizes_default[] = "1M,4M,8M,16M,64M";

/* The line that travels, alone in its own line, and the answering thread's state. */
struct c2c {
	uint64_t seq __attribute__((aligned(LINE)));
	uint8_t pad[LINE - sizeof(uint64_t)];
	int failed __attribute__((aligned(LINE))); /* either side gave up: both stop */
	uint64_t trips;
	uint64_t wait_cycles;
};

static uint64_t tsc_hz;

static void
usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [-t what[,what...]] [-a CPU] [-b CPU] [-n trips] [-s sizes]\n"
		"          [-l loads] [-H] [-j]\n"
		"  -t what   c2c: a cache line's one-way latency between CPUs a and b;\n"
		"            chase: dependent-load latency by working-set size;\n"
		"            clock: the core clock of CPU a (and b, if another) against the TSC;\n"
		"            all: the three (default)\n"
		"  -a CPU    c2c, clock: the first CPU (default 0)\n"
		"  -b CPU    c2c, clock: the second CPU (default 1); c2c: not a\n"
		"  -n trips  c2c: round trips per set, %d sets, 1000..%d (default %d)\n"
		"  -s sizes  chase: distinct working sets, comma-separated, K/M/G suffixes, "
		"%dK..%dG,\n"
		"            at most %d (default %s)\n"
		"  -l loads  chase: loads timed per size, 1000..%d (default %d)\n"
		"  -H        chase: ask for transparent huge pages (fewer TLB misses)\n"
		"  -j        one JSON object on stdout instead of text\n",
		prog, SETS, TRIPS_MAX, TRIPS_DEFAULT, SIZE_MIN / 1024, SIZE_MAX_MB / 1024,
		SIZES_MAX, sizes_default, LOADS_MAX, LOADS_DEFAULT);
}

/* TSC ticks per second, against CLOCK_MONOTONIC over 100 ms. */
static uint64_t
measure_tsc_hz(void)
{
	struct timespec a, b, d = {.tv_sec = 0, .tv_nsec = 100000000};
	uint64_t t0, t1;
	double ns;

	clock_gettime(CLOCK_MONOTONIC, &a);
	t0 = __rdtsc();
	nanosleep(&d, NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	t1 = __rdtsc();
	ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
	return (uint64_t)((double)(t1 - t0) * 1e9 / ns);
}

static int
pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* Spin until the line holds want; 0, or -1 when the other side gave up or WAIT_S passed
 * without it. The clock is first read after 1024 polls, then every 1024: an answer in
 * time costs no clock read. */
static int
wait_seq(struct c2c *c, uint64_t want)
{
	uint64_t deadline = 0, now;
	unsigned int n = 0;

	while (__atomic_load_n(&c->seq, __ATOMIC_ACQUIRE) != want) {
		if (++n % 1024 != 0)
			continue;
		if (__atomic_load_n(&c->failed, __ATOMIC_RELAXED))
			return -1;
		now = __rdtsc();
		if (deadline == 0)
			deadline = now + c->wait_cycles;
		else if (now > deadline)
			return -1;
	}
	return 0;
}

/* The second CPU (the thread is created on it): answers each odd value with the next
 * even one. */
static void *
answer(void *arg)
{
	struct c2c *c = arg;
	uint64_t i;

	for (i = 0; i < (uint64_t)SETS * c->trips; i++) {
		if (wait_seq(c, 2 * i + 1) != 0) {
			__atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
			break;
		}
		__atomic_store_n(&c->seq, 2 * i + 2, __ATOMIC_RELEASE);
	}
	return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* One-way cycles per transfer of each set into oneway[SETS], sorted. */
static int
probe_c2c(int cpu_a, int cpu_b, uint64_t trips, double oneway[SETS])
{
	static struct c2c c;
	struct timespec ts;
	pthread_attr_t attr;
	cpu_set_t set;
	pthread_t th;
	uint64_t i = 0, t0;
	unsigned int k;
	int rc;

	c.seq = 0;
	c.failed = 0;
	c.trips = trips;
	c.wait_cycles = WAIT_S * tsc_hz;
	rc = pin(cpu_a);
	if (rc != 0) {
		fprintf(stderr, "CPU %d: %s (not a CPU this process may run on)\n", cpu_a,
			strerror(rc));
		return -1;
	}
	CPU_ZERO(&set);
	CPU_SET(cpu_b, &set);
	rc = pthread_attr_init(&attr);
	if (rc == 0)
		rc = pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
	if (rc == 0)
		rc = pthread_create(&th, &attr, answer, &c);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		fprintf(stderr, "CPU %d: %s (not a CPU this process may run on)\n", cpu_b,
			strerror(rc));
		return -1;
	}
	for (k = 0; k < SETS && rc == 0; k++) {
		t0 = __rdtsc();
		for (uint64_t t = 0; t < trips && rc == 0; t++, i++) {
			__atomic_store_n(&c.seq, 2 * i + 1, __ATOMIC_RELEASE);
			rc = wait_seq(&c, 2 * i + 2);
		}
		oneway[k] = (double)(__rdtsc() - t0) / (double)trips / 2;
	}
	/* The answering thread has returned after its last answer or, on a failure, stops at
	 * its next check of failed, within 1024 polls. Unless CPU b does not run it: the join
	 * waits one second at most, then the process's exit ends the thread. */
	if (rc != 0)
		__atomic_store_n(&c.failed, 1, __ATOMIC_RELAXED);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += 1;
	pthread_clockjoin_np(th, NULL, CLOCK_MONOTONIC, &ts);
	if (rc != 0) {
		fprintf(stderr,
			"a round trip between CPU %d and CPU %d took over %d s (a CPU busy, or "
			"not running the probe?)\n",
			cpu_a, cpu_b, WAIT_S);
		return -1;
	}
	qsort(oneway, SETS, sizeof(oneway[0]), cmp_double);
	return 0;
}

/* The core clock of cpu in Hz while it runs this thread: the median of CLOCK_SETS sets of
 * CLOCK_MULS dependent multiplications, each set short enough to fall mostly between two
 * interruptions (a set that does not is an outlier the median ignores). The factor is
 * an operand the compiler does not see as 1. */
static int
probe_clock(int cpu, double *hz)
{
	static double ratio[CLOCK_SETS];
	volatile uint64_t one = 1;
	uint64_t x = 3, f = one, t0;
	unsigned int k, n;
	int rc;

	rc = pin(cpu);
	if (rc != 0) {
		fprintf(stderr, "CPU %d: %s (not a CPU this process may run on)\n", cpu,
			strerror(rc));
		return -1;
	}
	for (k = 0; k < CLOCK_SETS; k++) {
		t0 = __rdtsc();
		for (n = 0; n < CLOCK_MULS / 4; n++)
			__asm__ volatile("imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0"
					 : "+r"(x)
					 : "r"(f));
		ratio[k] = (double)CLOCK_MULS * MUL_CYCLES / (double)(__rdtsc() - t0);
	}
	qsort(ratio, CLOCK_SETS, sizeof(ratio[0]), cmp_double);
	*hz = ratio[CLOCK_SETS / 2] * (double)tsc_hz;
	return 0;
}

/* Bytes of memory this process may use: the machine's, or less under the limit of a
 * container's own cgroup (v2, at /sys/fs/cgroup; a limit of a parent group is not seen). */
static uint64_t
mem_limit(void)
{
	struct sysinfo si;
	uint64_t limit = UINT64_MAX, cg;
	char buf[32];
	FILE *f;

	if (sysinfo(&si) == 0)
		limit = (uint64_t)si.totalram * si.mem_unit;
	f = fopen("/sys/fs/cgroup/memory.max", "r");
	if (f != NULL) {
		if (fgets(buf, sizeof(buf), f) != NULL) {
			buf[strcspn(buf, "\n")] = '\0';
			if (km_util_parse_u64(buf, 1, UINT64_MAX, &cg) == 0 && cg < limit)
				limit = cg; /* "max": no limit */
		}
		fclose(f);
	}
	return limit;
}

/* Cycles per dependent load over size bytes, loads timed after one warm-up pass. */
static int
probe_chase(uint64_t size, uint64_t loads, int huge, double *cycles)
{
	uint64_t n = size / LINE, i, j, t0, *perm;
	uint8_t *mem;
	void *volatile *p;
	uint64_t rng = 0x9e3779b97f4a7c15ULL;

	/* Not to be the one the OOM killer ends: the lines and their order within half of
	 * the memory this process may use (mem_limit()). */
	if (size + n * sizeof(*perm) > mem_limit() / 2) {
		fprintf(stderr,
			"chase: %llu MiB and their order: more than half of the memory this "
			"process may use\n",
			(unsigned long long)(size >> 20));
		return -1;
	}
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "chase: %llu bytes: %s\n", (unsigned long long)size,
			strerror(errno));
		return -1;
	}
	if (huge)
		madvise(mem, size, MADV_HUGEPAGE);
	perm = malloc(n * sizeof(*perm));
	if (perm == NULL) {
		munmap(mem, size);
		fprintf(stderr, "chase: cannot allocate the order of %llu lines\n",
			(unsigned long long)n);
		return -1;
	}
	/* A random order of the lines (Fisher-Yates); each line points to the next in that
	 * order and the last to the first: one cycle through every line. */
	for (i = 0; i < n; i++)
		perm[i] = i;
	for (i = n - 1; i > 0; i--) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		j = rng % (i + 1);
		t0 = perm[i];
		perm[i] = perm[j];
		perm[j] = t0;
	}
	for (i = 0; i < n; i++)
		*(void **)(mem + perm[i] * LINE) = mem + perm[(i + 1) % n] * LINE;
	free(perm);
	p = (void *volatile *)mem;
	for (i = 0; i < n; i++)
		p = (void *volatile *)*p;
	t0 = __rdtsc();
	for (i = 0; i < loads; i++)
		p = (void *volatile *)*p;
	*cycles = (double)(__rdtsc() - t0) / (double)loads;
	munmap(mem, size);
	return 0;
}

/* "64K", "8M", "1G": bytes, a multiple of 64 KiB within the bounds; 0 or -1. */
static int
parse_size(const char *s, uint64_t *bytes)
{
	char num[32];
	size_t len = strlen(s);
	uint64_t v, unit;

	if (len < 2 || len >= sizeof(num))
		return -1;
	switch (s[len - 1]) {
	case 'K':
	case 'k':
		unit = UINT64_C(1) << 10;
		break;
	case 'M':
	case 'm':
		unit = UINT64_C(1) << 20;
		break;
	case 'G':
	case 'g':
		unit = UINT64_C(1) << 30;
		break;
	default:
		return -1;
	}
	memcpy(num, s, len - 1);
	num[len - 1] = '\0';
	if (km_util_parse_u64(num, 1, (uint64_t)SIZE_MAX_MB << 20, &v) != 0 ||
		v > ((uint64_t)SIZE_MAX_MB << 20) / unit)
		return -1;
	v *= unit;
	if (v < SIZE_MIN || v % SIZE_MIN != 0)
		return -1;
	*bytes = v;
	return 0;
}

static int
parse_sizes(const char *arg, uint64_t sizes[SIZES_MAX], unsigned int *nb)
{
	char buf[256], *tok, *rest = buf;

	if (strlen(arg) >= sizeof(buf))
		return -1;
	strcpy(buf, arg);
	*nb = 0;
	while ((tok = strsep(&rest, ",")) != NULL) {
		if (*nb == SIZES_MAX || parse_size(tok, &sizes[*nb]) != 0)
			return -1;
		for (unsigned int k = 0; k < *nb; k++)
			if (sizes[k] == sizes[*nb])
				return -1; /* one figure per size */
		(*nb)++;
	}
	return 0;
}

/* "c2c", "chase", "clock", "all" or a comma-separated list of them; 0 or -1. */
static int
parse_what(const char *arg, int *c2c, int *chase, int *clock)
{
	char buf[64], *tok, *rest = buf;

	if (strlen(arg) >= sizeof(buf))
		return -1;
	strcpy(buf, arg);
	*c2c = *chase = *clock = 0;
	while ((tok = strsep(&rest, ",")) != NULL) {
		if (strcmp(tok, "all") == 0)
			*c2c = *chase = *clock = 1;
		else if (strcmp(tok, "c2c") == 0)
			*c2c = 1;
		else if (strcmp(tok, "chase") == 0)
			*chase = 1;
		else if (strcmp(tok, "clock") == 0)
			*clock = 1;
		else
			return -1;
	}
	return 0;
}

static void
size_name(uint64_t v, char *buf, size_t len)
{
	if (v % (UINT64_C(1) << 30) == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(v >> 30));
	else if (v % (UINT64_C(1) << 20) == 0)
		snprintf(buf, len, "%lluM", (unsigned long long)(v >> 20));
	else
		snprintf(buf, len, "%lluK", (unsigned long long)(v >> 10));
}

int
main(int argc, char **argv)
{
	uint64_t trips = TRIPS_DEFAULT, loads = LOADS_DEFAULT, a = 0, b = 1;
	uint64_t sizes[SIZES_MAX];
	double oneway[SETS], chase[SIZES_MAX], hz[2];
	unsigned int nb_sizes = 0, nb_clocks, i;
	cpu_set_t allowed;
	int opt, rc, json = 0, huge = 0, do_c2c = 1, do_chase = 1, do_clock = 1;
	char name[24];

	rc = parse_sizes(sizes_default, sizes, &nb_sizes);
	while (rc == 0 && (opt = getopt(argc, argv, "t:a:b:n:s:l:Hjh")) != -1) {
		switch (opt) {
		case 't':
			rc = parse_what(optarg, &do_c2c, &do_chase, &do_clock);
			break;
		case 'a':
			rc = km_util_parse_u64(optarg, 0, CPU_SETSIZE - 1, &a);
			break;
		case 'b':
			rc = km_util_parse_u64(optarg, 0, CPU_SETSIZE - 1, &b);
			break;
		case 'n':
			rc = km_util_parse_u64(optarg, 1000, TRIPS_MAX, &trips);
			break;
		case 's':
			rc = parse_sizes(optarg, sizes, &nb_sizes);
			break;
		case 'l':
			rc = km_util_parse_u64(optarg, 1000, LOADS_MAX, &loads);
			break;
		case 'H':
			huge = 1;
			break;
		case 'j':
			json = 1;
			break;
		default:
			rc = -1;
			break;
		}
	}
	if (rc != 0 || optind != argc) {
		usage(argv[0]);
		return 1;
	}
	if (do_c2c && a == b) {
		fprintf(stderr, "c2c needs two different CPUs (-a %llu -b %llu)\n",
			(unsigned long long)a, (unsigned long long)b);
		return 1;
	}
	nb_clocks = a == b ? 1 : 2;
	if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
		fprintf(stderr, "sched_getaffinity: %s\n", strerror(errno));
		return 1;
	}
	tsc_hz = measure_tsc_hz();
	if (do_c2c && probe_c2c((int)a, (int)b, trips, oneway) != 0)
		return 1;
	for (i = 0; do_clock && i < nb_clocks; i++)
		if (probe_clock((int)(i == 0 ? a : b), &hz[i]) != 0)
			return 1;
	/* The chase where the scheduler puts it, as when it runs alone. */
	sched_setaffinity(0, sizeof(allowed), &allowed);
	for (i = 0; do_chase && i < nb_sizes; i++)
		if (probe_chase(sizes[i], loads, huge, &chase[i]) != 0)
			return 1;

	if (json) {
		printf("{\"tsc_hz\": %llu", (unsigned long long)tsc_hz);
		if (do_c2c)
			printf(", \"c2c\": {\"cpus\": [%llu, %llu], \"trips\": %llu, "
			       "\"oneway_cycles\": %.1f, \"min\": %.1f, \"max\": %.1f}",
				(unsigned long long)a, (unsigned long long)b,
				(unsigned long long)trips, oneway[SETS / 2], oneway[0],
				oneway[SETS - 1]);
		if (do_clock) {
			printf(", \"clock\": {\"cpus\": [%llu", (unsigned long long)a);
			if (nb_clocks == 2)
				printf(", %llu", (unsigned long long)b);
			printf("], \"ghz\": [%.3f", hz[0] / 1e9);
			if (nb_clocks == 2)
				printf(", %.3f", hz[1] / 1e9);
			printf("]}");
		}
		if (do_chase) {
			printf(", \"chase\": {\"loads\": %llu, \"huge\": %s, \"cycles_per_load\": "
			       "{",
				(unsigned long long)loads, huge ? "true" : "false");
			for (i = 0; i < nb_sizes; i++) {
				size_name(sizes[i], name, sizeof(name));
				printf("%s\"%s\": %.1f", i ? ", " : "", name, chase[i]);
			}
			printf("}}");
		}
		printf("}\n");
		return 0;
	}
	printf("TSC: %.3f GHz\n", (double)tsc_hz / 1e9);
	if (do_c2c)
		printf("c2c: a cache line from CPU %llu to CPU %llu: %.0f TSC cycles one way "
		       "(%.0f ns; median of %d sets of %llu round trips, %.0f..%.0f)\n",
			(unsigned long long)a, (unsigned long long)b, oneway[SETS / 2],
			oneway[SETS / 2] * 1e9 / (double)tsc_hz, SETS, (unsigned long long)trips,
			oneway[0], oneway[SETS - 1]);
	for (i = 0; do_clock && i < nb_clocks; i++)
		printf("clock: CPU %llu %.2f GHz while running (median of %d sets of %d dependent "
		       "multiplications): a TSC cycle is %.2f of its cycles\n",
			(unsigned long long)(i == 0 ? a : b), hz[i] / 1e9, CLOCK_SETS, CLOCK_MULS,
			hz[i] / (double)tsc_hz);
	for (i = 0; do_chase && i < nb_sizes; i++) {
		size_name(sizes[i], name, sizeof(name));
		printf("chase %6s: %6.1f TSC cycles per dependent load (%.1f ns)%s\n", name,
			chase[i], chase[i] * 1e9 / (double)tsc_hz,
			huge ? ", huge pages asked" : "");
	}
	return 0;
}
