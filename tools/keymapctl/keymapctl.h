/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef KEYMAPCTL_H
#define KEYMAPCTL_H

/*
 * keymapctl: control-plane command line of keymapd (docs/keymapctl.md).
 *
 * It speaks DPDK telemetry v2 on keymapd's socket, an AF_UNIX SOCK_SEQPACKET socket: the
 * server sends a hello JSON on connect, then answers each "/cmd[,params]" message with
 * one JSON message {"/cmd": DATA}. DATA is null for a command the server does not know,
 * and {"error": "..."} for one keymapd refused. The metrics command also speaks HTTP/1.0
 * to keymapd's Prometheus endpoint.
 *
 * Files by concern: main.c (options, command table), tel.c (telemetry socket client),
 * output.c (JSON values as text, aligned tables), stats.c (status, stats), shards.c (the
 * shard map and re-sharding commands), conf.c (tunables, log level, prefetch), metrics.c
 * (the Prometheus page over HTTP), keys.c (client keys), cluster.c (a cluster's nodes and
 * drain keys, read and written in etcd with lib/etcd). One thread; each command runs once
 * and exits.
 *
 * Exit status: 0 success; 1 bad usage or transport error (keymapd not running, etcd not
 * reachable, timeout, unreadable reply); 2 keymapd refused the command or does not know it
 * (also: a cluster command on a single node without --etcd, a drain in an empty cluster).
 */

#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>

#include <jansson.h>

#define EXIT_USAGE       1
#define EXIT_TRANSPORT   1
#define EXIT_REFUSED     2
#define EXIT_NOT_RUNNING 3 /* no keymapd (no socket, nothing listening on it) */

#define TEL_SOCKET_NAME    "dpdk_telemetry.v2"
#define TEL_DEFAULT_PREFIX "keymap"
/* The server reads a request into 1024 bytes, its terminating NUL included. */
#define TEL_REQ_MAX 1023

#define SUN_PATH_MAX sizeof(((struct sockaddr_un *)NULL)->sun_path)

/* The one invocation: filled by main, then used by the command (one thread). */
struct ctl {
	/* From the command line. */
	char path[SUN_PATH_MAX];
	int timeout_ms;
	int json;
	const char *metrics_url;
	const char *cmd;   /* keymapctl command, for messages */
	int quiet_unknown; /* a command keymapd does not know: no message (a fallback) */
	int last_unknown;  /* set when keymapd did not know a command */
	int quiet_refused; /* a refusal ({"error": ...}): no message (the caller retries) */
	/* The telemetry connection, opened by the first request (tel.c). */
	int fd;
	char *buf;      /* one reply, NUL-terminated */
	size_t buf_len; /* max_output_len + 1 */
};

/* main.c: messages, memory, time. */
void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A usage error: why, then the usage line. @return EXIT_USAGE */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Out of memory: say so and exit with EXIT_TRANSPORT. */
void oom(void) __attribute__((noreturn));
void *xrealloc(void *p, size_t len);
int64_t now_ms(void);
double timeout_s(const struct ctl *c);
/* Wait until fd is ready for events or the deadline passes.
 * @return 1 ready (or in error: the next call says which), 0 timed out, -1 errno. */
int wait_fd(int fd, short events, int64_t deadline);

/* output.c: JSON values as text, and aligned text tables. */
const char *jfmt(const json_t *v);
int jint(const json_t *obj, const char *key, uint64_t *out);
void print_json(const json_t *v);

/*
 * Aligned text tables: cells are added row by row, left to right; numeric columns are
 * right-aligned, their header included.
 */
struct table {
	unsigned int ncols;
	size_t ncells;
	size_t cap;
	char **cells;
	unsigned char *right; /* per column */
};

void table_init(struct table *t, unsigned int ncols);
void table_right(struct table *t, unsigned int col);
void table_add(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void table_print(const struct table *t);
void table_free(struct table *t);
void table_kv(struct table *t, const char *label, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void table_kv_flat(struct table *t, const char *label, const json_t *v);

/* tel.c: the telemetry socket client. */
int tel_socket_path(const char *prefix, char *out, size_t len);
/* The --file-prefix of every DPDK process whose telemetry socket accepts a connection here,
 * space-separated in out (those that fit). @return how many. */
int tel_prefixes(char *out, size_t len);
void tel_close(struct ctl *c);
int tel_query(struct ctl *c, const char *req, json_t **root, json_t **data);
int tel_queryf(struct ctl *c, json_t **root, json_t **data, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int tel_query_json(struct ctl *c, const char *req, json_t **root, json_t **data);
/*
 * The request fmt... and its DATA shown: as JSON with --json, else by show (a line of
 * text; arg is the caller's). @return as tel_query.
 */
int tel_showf(struct ctl *c, void (*show)(const json_t *d, const char *arg), const char *arg,
	const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The commands: (c, argc, argv) with argv[0] the command's name. Each checks its
 * arguments before it connects. @return the exit status. */
/* shards.c: "0x5/4": a shard's prefix in as many hex digits as its depth needs, then the
 * depth; every page of /keymap/shards (restarted when the map changes between two):
 * @return 0 with the pages merged into one DATA object in *out, or an exit code. */
void shard_prefix(uint64_t id, char *buf, size_t len);
int shards_fetch(struct ctl *c, json_t **out);

int cmd_status(struct ctl *c, int argc, char **argv);      /* stats.c */
int cmd_top(struct ctl *c, int argc, char **argv);         /* top.c */
int cmd_stats(struct ctl *c, int argc, char **argv);       /* stats.c */
int cmd_shards(struct ctl *c, int argc, char **argv);      /* shards.c */
int cmd_split(struct ctl *c, int argc, char **argv);       /* shards.c */
int cmd_merge(struct ctl *c, int argc, char **argv);       /* shards.c */
int cmd_move(struct ctl *c, int argc, char **argv);        /* shards.c */
int cmd_tier(struct ctl *c, int argc, char **argv);        /* shards.c */
int cmd_compact(struct ctl *c, int argc, char **argv);     /* shards.c */
int cmd_accept_loss(struct ctl *c, int argc, char **argv); /* shards.c */
int cmd_keys(struct ctl *c, int argc, char **argv);        /* keys.c */
int cmd_key(struct ctl *c, int argc, char **argv);         /* keys.c */
int cmd_config(struct ctl *c, int argc, char **argv);      /* conf.c */
int cmd_set(struct ctl *c, int argc, char **argv);         /* conf.c */
int cmd_reload(struct ctl *c, int argc, char **argv);      /* conf.c */
int cmd_log_level(struct ctl *c, int argc, char **argv);   /* conf.c */
int cmd_prefetch(struct ctl *c, int argc, char **argv);    /* conf.c */
int cmd_metrics(struct ctl *c, int argc, char **argv);     /* metrics.c */
int cmd_hot(struct ctl *c, int argc, char **argv);         /* crew.c */
int cmd_raw(struct ctl *c, int argc, char **argv);         /* tel.c */
int cmd_overrides(struct ctl *c, int argc, char **argv);   /* shift.c */
int cmd_override(struct ctl *c, int argc, char **argv);    /* shift.c */
int cmd_cluster(struct ctl *c, int argc, char **argv);     /* cluster.c */
int cmd_nodes(struct ctl *c, int argc, char **argv);       /* cluster.c */

#endif /* KEYMAPCTL_H */
