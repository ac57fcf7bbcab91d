/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * keymapctl: control-plane command line of keymapd (docs/keymapctl.md). This file: the
 * options, the command table and the helpers every command uses; keymapctl.h says where
 * the rest is.
 */

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <km_util.h>

#include "keymapctl.h"

#define TIMEOUT_DEFAULT_MS 5000
#define RESHARD_TIMEOUT_MS 60000 /* keymapd gives a split, merge, tier or compact as long */

static const char usage_text[] =
	"usage: keymapctl [-f FILE_PREFIX | -s SOCKET] [--json] [-T TIMEOUT_S] COMMAND [ARGS]\n"
	"\n"
	"commands:\n"
	"  status                     keymapd, its port and its shard map in short\n"
	"  stats [--watch [N]] [--interval S] [SECTION | worker N | NAME]...\n"
	"                             counters, then gauges, total and per worker, and the\n"
	"                             sections; --watch: a sample every second (--interval S)\n"
	"                             with the counters' rates, N times (default: until\n"
	"                             interrupted); SECTION: summary, counters, gauges, port,\n"
	"                             balance, store, cache, prefetch; worker N: that worker's\n"
	"                             column only; NAME: figures whose name matches (req_*)\n"
	"  top [--interval S] [-n N]  live view: throughput, latency, hit ratio, prefetch\n"
	"                             accuracy, each worker's load, the hottest shards (q quits)\n"
	"  shards                     every shard: depth, prefix, owner, keys, bytes, rate, tier\n"
	"  config [SECTION.KEY]       every tunable and whether it can change while running,\n"
	"                             or the value of one\n"
	"  set SECTION.KEY VALUE      change a tunable while running (or SECTION.KEY=VALUE)\n"
	"  reload                     read the configuration file again, as SIGHUP does\n"
	"  split ID                   split shard ID into 2*ID and 2*ID+1\n"
	"  merge ID                   merge shard ID and its buddy ID^1 into ID/2\n"
	"  move ID WORKER             give shard ID to worker WORKER\n"
	"  tier ID hot|cold           move shard ID to the cold tier (compressed segments) or\n"
	"                             back to the hot one (log store)\n"
	"  compact ID                 rewrite shard ID's log without its dead records (log store)\n"
	"  accept-loss ID             give up the data of quarantined shard ID (its files missing\n"
	"                             or damaged): new empty files, it serves again\n"
	"  prefetch [KEY]             predictive prefetch: state, accuracy, models, learned\n"
	"                             transitions; with KEY: read it into its worker's cache\n"
	"  hot                        hot-key replication: keys with read copies on every\n"
	"                             worker (owner, version, value bytes), counters\n"
	"  keys                       client keys: id, permission, key prefixes (no secrets)\n"
	"  key add [--id ID] ro|rw [PREFIX...]\n"
	"                             a new client key (read-only or read-write, limited to\n"
	"                             keys starting with a PREFIX if any): keymapd writes it to\n"
	"                             its keys file and prints ID:SECRET for the client, once\n"
	"  key remove ID              stop serving key ID and remove it from the keys file\n"
	"  key reload                 read the keys file again\n"
	"  log-level [LEVEL]          show or set the level of the keymap.* logs\n"
	"  metrics [--metrics-url HOST:PORT]\n"
	"                             print the Prometheus page (address from status)\n"
	"  overrides                  the partition shifter's routing overrides and counters\n"
	"  override add PART [EXTRA]  route hot routing part PART by EXTRA (default 1) more\n"
	"                             key components: its keys spread over workers\n"
	"  override remove PART       undo it (its keys move back)\n"
	"  raw /CMD[,PARAMS]          send any telemetry command, print the JSON it returns\n"
	"\n"
	"cluster commands (docs/cluster.md):\n"
	"  cluster                    this keymapd in its cluster: name, node, etcd, map epoch\n"
	"                             applied, counters (or that it runs as a single node)\n"
	"  nodes [--etcd ENDPOINTS --cluster NAME]\n"
	"                             the cluster as etcd has it: every node of the map\n"
	"                             (address, workers, incarnation, active or draining, live\n"
	"                             or down, shards, replicas, load), members joining, the\n"
	"                             placer leader, the map epoch, every shard's primary and\n"
	"                             replicas (in sync or not), moves in flight\n"
	"  cluster repl               this node's replication streams: to its replicas\n"
	"                             (state, in sync, writes numbered, acknowledged, lag)\n"
	"                             and the replicas it holds\n"
	"  cluster drain NODE [--etcd ENDPOINTS --cluster NAME]\n"
	"                             ask the placer to move NODE's shards away and remove it\n"
	"                             from the map (puts /keymap/NAME/drain/NODE); says\n"
	"                             what the placer will do\n"
	"  cluster undrain NODE [--etcd ENDPOINTS --cluster NAME]\n"
	"                             withdraw the drain (deletes that key)\n"
	"  etcd is the running keymapd's (from its /keymap/cluster: endpoints and prefix), or\n"
	"  the one given: --etcd http://HOST:PORT[,...] --cluster NAME (keys under\n"
	"  /keymap/NAME/, no keymapd needed). -T bounds each etcd request too.\n"
	"\n"
	"options (before the command):\n"
	"  -f, --file-prefix PREFIX   keymapd's EAL --file-prefix (default keymap); the socket\n"
	"                             is RUNTIME_DIR/dpdk/PREFIX/dpdk_telemetry.v2, RUNTIME_DIR\n"
	"                             being $RUNTIME_DIRECTORY if set, else /var/run for root,\n"
	"                             else $XDG_RUNTIME_DIR or /tmp (as DPDK's EAL)\n"
	"  -s, --socket PATH          telemetry socket path (instead of -f)\n"
	"      --json                 print keymapd's JSON data instead of a table\n"
	"  -T, --timeout SECONDS      to connect, and for each reply (default 5; 60 for\n"
	"                             split, merge, move, tier and compact)\n"
	"  -l, --list                 the file prefixes of the DPDK processes running here (one\n"
	"                             per line: what -f takes), and exit\n"
	"  -h, --help                 this text\n"
	"      --version              the version, and exit\n"
	"\n"
	"exit status: 0 success, 1 bad usage or transport error (etcd unreachable, timeout,\n"
	"             unreadable reply), 2 refused by keymapd or unknown to it (nodes, cluster\n"
	"             drain or undrain on a single node without --etcd; cluster drain where\n"
	"             etcd has no map and no member under the prefix), 3 keymapd not running\n"
	"             (no socket, or nothing listening on it; -l: no DPDK process)\n";

static void
verrmsg(const char *fmt, va_list ap)
{
	fputs("keymapctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void
errmsg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verrmsg(fmt, ap);
	va_end(ap);
}

int
usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verrmsg(fmt, ap);
	va_end(ap);
	/* The first line of the usage text, and where the rest is. */
	fprintf(stderr, "%.*s(keymapctl --help lists the commands and options)\n",
		(int)(strchr(usage_text, '\n') - usage_text + 1), usage_text);
	return EXIT_USAGE;
}

void
oom(void)
{
	errmsg("out of memory");
	exit(EXIT_TRANSPORT);
}

void *
xrealloc(void *p, size_t len)
{
	p = realloc(p, len);
	if (p == NULL)
		oom();
	return p;
}

int64_t
now_ms(void)
{
	return (int64_t)(km_util_now_ns() / 1000000);
}

double
timeout_s(const struct ctl *c)
{
	return c->timeout_ms / 1000.0;
}

int
wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	int64_t left;
	int rc;

	for (;;) {
		left = deadline - now_ms();
		if (left < 0)
			left = 0;
		rc = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (rc > 0)
			return 1;
		if (rc == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

static const struct command {
	const char *name;
	int (*fn)(struct ctl *c, int argc, char **argv);
	int long_running; /* copies a shard before keymapd answers: RESHARD_TIMEOUT_MS */
	int any_text;     /* its arguments may be any text, "--json" included */
} commands[] = {
	{"status", cmd_status, 0, 0},
	{"stats", cmd_stats, 0, 0},
	{"top", cmd_top, 0, 0},
	{"shards", cmd_shards, 0, 0},
	{"config", cmd_config, 0, 0},
	{"set", cmd_set, 0, 1},
	{"reload", cmd_reload, 0, 0},
	{"split", cmd_split, 1, 0},
	{"merge", cmd_merge, 1, 0},
	{"move", cmd_move, 1, 0},
	{"tier", cmd_tier, 1, 0},
	{"compact", cmd_compact, 1, 0},
	{"accept-loss", cmd_accept_loss, 1, 0},
	{"prefetch", cmd_prefetch, 0, 0},
	{"hot", cmd_hot, 0, 0},
	{"keys", cmd_keys, 0, 0},
	{"key", cmd_key, 0, 1},
	{"log-level", cmd_log_level, 0, 0},
	{"metrics", cmd_metrics, 0, 0},
	{"overrides", cmd_overrides, 0, 0},
	{"override", cmd_override, 0, 1},
	{"raw", cmd_raw, 0, 1},
	{"cluster", cmd_cluster, 0, 0},
	{"nodes", cmd_nodes, 0, 0},
};

/* The options before the command. */
struct opts {
	const char *prefix;      /* -f */
	const char *socket_path; /* -s */
	int timeout_set;         /* -T given */
};

/* Parse the options into c and o. @return -1 to go on, else the exit status. */
static int
parse_options(int argc, char **argv, struct ctl *c, struct opts *o)
{
	static const struct option longopts[] = {
		{"file-prefix", required_argument, NULL, 'f'},
		{"socket", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"timeout", required_argument, NULL, 'T'},
		{"metrics-url", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{"list", no_argument, NULL, 'l'},
		{NULL, 0, NULL, 0},
	};
	char seen[4096];
	double secs;
	int opt;

	opterr = 0;
	/* '+': options end at the command, whose own arguments may start with '-'. */
	while ((opt = getopt_long(argc, argv, "+:f:s:T:hl", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			o->prefix = optarg;
			break;
		case 's':
			o->socket_path = optarg;
			break;
		case 'j':
			c->json = 1;
			break;
		case 'T':
			if (km_util_parse_double(optarg, 0, 86400, &secs) != 0 || !(secs > 0))
				return usage_error(
					"-T takes seconds, more than 0 and at most 86400");
			c->timeout_ms = secs * 1000 < 1 ? 1 : (int)(secs * 1000 + 0.5);
			o->timeout_set = 1;
			break;
		case 'm':
			c->metrics_url = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 'l':
			/* The prefixes keymapctl -f can reach, one per line. */
			if (tel_prefixes(seen, sizeof(seen)) == 0) {
				errmsg("no DPDK process with a telemetry socket here");
				return EXIT_NOT_RUNNING;
			}
			for (char *p = strtok(seen, " "); p != NULL; p = strtok(NULL, " "))
				puts(p);
			return 0;
		case ':':
			return usage_error("option '%s' needs an argument", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	return -1;
}

/* The command named argv[first], its arguments checked against the options.
 * @return -1 with *cmd set to go on, else the exit status. */
static int
find_command(int argc, char **argv, int first, const struct command **cmd)
{
	size_t i;
	int j;

	if (first == argc)
		return usage_error("no command");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[first], commands[i].name) == 0)
			break;
	if (i == sizeof(commands) / sizeof(commands[0])) {
		if (strcmp(argv[first], "help") == 0) {
			fputs(usage_text, stdout);
			return 0;
		}
		return usage_error("unknown command '%s'", argv[first]);
	}
	/* A common slip; set and raw may take any text as their value. */
	if (!commands[i].any_text)
		for (j = first + 1; j < argc; j++)
			if (strcmp(argv[j], "--json") == 0)
				return usage_error(
					"--json goes before the command: keymapctl --json %s",
					commands[i].name);
	*cmd = &commands[i];
	return -1;
}

/* c->path from -s or -f. @return -1 to go on, else the exit status. */
static int
socket_path(struct ctl *c, const struct opts *o)
{
	const char *prefix = o->prefix;

	if (o->socket_path != NULL) {
		if (o->socket_path[0] == '\0' || strlen(o->socket_path) >= sizeof(c->path))
			return usage_error(
				"socket path empty or longer than %zu bytes", sizeof(c->path) - 1);
		strcpy(c->path, o->socket_path);
		return -1;
	}
	if (prefix == NULL)
		prefix = TEL_DEFAULT_PREFIX;
	if (prefix[0] == '\0' || strchr(prefix, '/') != NULL)
		return usage_error("bad file prefix '%s'", prefix);
	if (tel_socket_path(prefix, c->path, sizeof(c->path)) != 0)
		return usage_error("socket path for prefix '%s' longer than %zu bytes", prefix,
			sizeof(c->path) - 1);
	return -1;
}

int
main(int argc, char **argv)
{
	struct ctl c = {.timeout_ms = TIMEOUT_DEFAULT_MS, .fd = -1};
	const struct command *cmd = NULL;
	struct opts o = {0};
	int rc;
	if (km_version_opt(argc, argv, "keymapctl", NULL))
		return 0;

	rc = parse_options(argc, argv, &c, &o);
	if (rc >= 0)
		return rc;
	rc = find_command(argc, argv, optind, &cmd);
	if (rc >= 0)
		return rc;
	if (o.prefix != NULL && o.socket_path != NULL)
		return usage_error("-f and -s exclude each other");
	if (c.metrics_url != NULL && cmd->fn != cmd_metrics)
		return usage_error("--metrics-url applies to the metrics command only");
	rc = socket_path(&c, &o);
	if (rc >= 0)
		return rc;

	c.cmd = cmd->name;
	/* A split, merge, move, tier change or compaction copies the shard's entries before
	 * keymapd answers (keymapd allows it 60 s): wait as long unless told otherwise, or a
	 * slow copy would look like a failure that still happens later. */
	if (!o.timeout_set && cmd->long_running)
		c.timeout_ms = RESHARD_TIMEOUT_MS;
	rc = cmd->fn(&c, argc - optind, argv + optind);
	tel_close(&c);
	free(c.buf);
	if (fflush(stdout) != 0 && rc == 0) {
		errmsg("stdout: %s", strerror(errno));
		rc = EXIT_TRANSPORT;
	}
	return rc;
}
