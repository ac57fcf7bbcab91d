/* SPDX-License-Identifier: BSD-3-Clause */
/* keymap-placer's command line. */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <km_util.h>

#include "placer.h"

static const char usage_text[] =
	"usage: keymap-placer --etcd ENDPOINTS --cluster NAME [options]\n"
	"The placement leader of a keymap cluster (docs/cluster.md): elected through etcd, it\n"
	"publishes the cluster map and moves shards between nodes. Run several: one leads.\n"
	"  --etcd ENDPOINTS     etcd endpoints, http://host:port[,...] (required)\n"
	"  --cluster NAME       cluster name: keys under /keymap/NAME/ (required)\n"
	"  --id ID              this placer's id (default: hostname-pid)\n"
	"  --shards N           shards of the first map, a power of two (default 16)\n"
	"  --route-sep C        routing separator (default /), checked on an existing map\n"
	"  --route-depth D      routing depth, 1..255 (default 1), checked on an existing map\n"
	"  --ttl S              lease time-to-live in seconds, 2..300 (default 6)\n"
	"  --max-moves N        moves per decision and in flight, 0..100 (default 4)\n"
	"  --balance-pct P      move shards for load above P %% of the mean worker load,\n"
	"                       101..1000 (default 0: off); rates from P/load/<node>\n"
	"  --min-rate R         no load balancing below this mean worker rate (default 0)\n"
	"  --interval-ms MS     decision period, 50..600000 (default 1000)\n"
	"  --move-timeout-s S   a move not ready in S seconds is given up (default 60)\n"
	"  --replicas N         copies of every shard, 1..3 (default: the largest [cluster]\n"
	"                       replicas of the live members)\n"
	"  --once               one decision as the leader, then exit\n"
	"  --dry-run            no election: print what the leader would write, write nothing\n"
	"  -v, --verbose        log INFO and DEBUG lines too\n"
	"  -h, --help           this text\n"
	"Exit status: 0 stopped by SIGTERM or SIGINT (or --once done), 1 etcd unreachable at\n"
	"start or --once not leading in time, 2 bad usage.\n";

void
placer_usage(FILE *f)
{
	fputs(usage_text, f);
}

/* Fill err with "OPT 'ARG': why" and return -EINVAL. */
static int
bad(char *err, size_t errlen, const char *opt, const char *arg, const char *why)
{
	snprintf(err, errlen, "%s '%.64s': %s", opt, arg, why);
	return -EINVAL;
}

/* A node id from s: the characters an id may not have become '-'. */
static void
id_from(char *id, size_t cap, const char *s)
{
	size_t i;

	for (i = 0; i + 1 < cap && s[i] != '\0'; i++) {
		char c = s[i];

		id[i] = c;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			    c == '.' || c == '_' || c == '-'))
			id[i] = '-';
	}
	id[i] = '\0';
}

static int
u32_opt(const char *opt, const char *arg, uint64_t min, uint64_t max, uint32_t *out, char *err,
	size_t errlen)
{
	char why[64];
	uint64_t v;

	if (km_util_parse_u64(arg, min, max, &v) != 0) {
		snprintf(why, sizeof(why), "not an integer in %llu..%llu", (unsigned long long)min,
			(unsigned long long)max);
		return bad(err, errlen, opt, arg, why);
	}
	*out = (uint32_t)v;
	return 0;
}

int
placer_opts_parse(int argc, char **argv, struct placer_opts *o, char *err, size_t errlen)
{
	enum {
		O_ETCD = 256,
		O_CLUSTER,
		O_ID,
		O_SHARDS,
		O_SEP,
		O_DEPTH,
		O_TTL,
		O_MAX_MOVES,
		O_BALANCE,
		O_MIN_RATE,
		O_INTERVAL,
		O_MOVE_TIMEOUT,
		O_REPLICAS,
		O_ONCE,
		O_DRY_RUN,
	};
	static const struct option lo[] = {
		{"etcd", required_argument, NULL, O_ETCD},
		{"cluster", required_argument, NULL, O_CLUSTER},
		{"id", required_argument, NULL, O_ID},
		{"shards", required_argument, NULL, O_SHARDS},
		{"route-sep", required_argument, NULL, O_SEP},
		{"route-depth", required_argument, NULL, O_DEPTH},
		{"ttl", required_argument, NULL, O_TTL},
		{"max-moves", required_argument, NULL, O_MAX_MOVES},
		{"balance-pct", required_argument, NULL, O_BALANCE},
		{"min-rate", required_argument, NULL, O_MIN_RATE},
		{"interval-ms", required_argument, NULL, O_INTERVAL},
		{"move-timeout-s", required_argument, NULL, O_MOVE_TIMEOUT},
		{"replicas", required_argument, NULL, O_REPLICAS},
		{"once", no_argument, NULL, O_ONCE},
		{"dry-run", no_argument, NULL, O_DRY_RUN},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct km_etcd_endpoints ep;
	char host[64] = "", buf[96], why[KM_ETCD_ENDPOINT_LEN + 64];
	int c, rc = 0, has_etcd = 0, has_cluster = 0;
	uint32_t v = 0;

	*o = (struct placer_opts){.shards = 16,
		.route_sep = '/',
		.route_depth = 1,
		.ttl_s = 6,
		.max_moves = 4,
		.interval_ms = 1000,
		.move_timeout_s = 60};
	if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
		snprintf(host, sizeof(host), "placer");
	snprintf(buf, sizeof(buf), "%.40s-%ld", host, (long)getpid());
	id_from(o->id, sizeof(o->id), buf);
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	optind = 1;
	opterr = 0;
	while (rc == 0 && (c = getopt_long(argc, argv, ":vh", lo, NULL)) != -1) {
		switch (c) {
		case O_ETCD:
			if (km_etcd_endpoints_parse(optarg, &ep, why, sizeof(why)) != 0)
				rc = bad(err, errlen, "--etcd", optarg, why);
			else if (strlen(optarg) >= sizeof(o->etcd))
				rc = bad(err, errlen, "--etcd", optarg, "too long");
			else
				snprintf(o->etcd, sizeof(o->etcd), "%s", optarg);
			has_etcd = rc == 0;
			break;
		case O_CLUSTER:
		case O_ID:
			if (!km_cluster_id_valid(optarg)) {
				rc = bad(err, errlen, c == O_ID ? "--id" : "--cluster", optarg,
					"not 1..63 characters of A-Z a-z 0-9 . _ -");
				break;
			}
			if (c == O_ID) {
				snprintf(o->id, sizeof(o->id), "%s", optarg);
			} else {
				snprintf(o->cluster, sizeof(o->cluster), "%s", optarg);
				has_cluster = 1;
			}
			break;
		case O_SHARDS:
			rc = u32_opt("--shards", optarg, 1, KM_CLUSTER_SHARDS_MAX, &v, err, errlen);
			if (rc == 0 && (v & (v - 1)) != 0)
				rc = bad(err, errlen, "--shards", optarg,
					"not a power of two in 1..65536");
			o->shards = v;
			break;
		case O_SEP:
			if (strlen(optarg) != 1 || optarg[0] < 0x21 || optarg[0] > 0x7e)
				rc = bad(err, errlen, "--route-sep", optarg,
					"not one printable ASCII character");
			else
				o->route_sep = (uint8_t)optarg[0];
			break;
		case O_DEPTH:
			rc = u32_opt("--route-depth", optarg, 1, 255, &v, err, errlen);
			o->route_depth = (uint8_t)v;
			break;
		case O_TTL:
			rc = u32_opt("--ttl", optarg, 2, 300, &o->ttl_s, err, errlen);
			break;
		case O_MAX_MOVES:
			rc = u32_opt("--max-moves", optarg, 0, PLACER_MOVES_MAX, &o->max_moves, err,
				errlen);
			break;
		case O_BALANCE:
			rc = u32_opt(
				"--balance-pct", optarg, 0, 1000, &o->balance_pct, err, errlen);
			if (rc == 0 && o->balance_pct != 0 && o->balance_pct <= 100)
				rc = bad(err, errlen, "--balance-pct", optarg,
					"not 0 (off) or an integer in 101..1000");
			break;
		case O_MIN_RATE:
			if (km_util_parse_double(optarg, 0, 1e12, &o->min_rate) != 0)
				rc = bad(err, errlen, "--min-rate", optarg,
					"not a number in 0..1e12 (requests/s)");
			break;
		case O_INTERVAL:
			rc = u32_opt(
				"--interval-ms", optarg, 50, 600000, &o->interval_ms, err, errlen);
			break;
		case O_MOVE_TIMEOUT:
			rc = u32_opt("--move-timeout-s", optarg, 1, 86400, &o->move_timeout_s, err,
				errlen);
			break;
		case O_REPLICAS:
			rc = u32_opt("--replicas", optarg, 1, 3, &o->replicas, err, errlen);
			break;
		case O_ONCE:
			o->once = 1;
			break;
		case O_DRY_RUN:
			o->dry_run = 1;
			break;
		case 'v':
			o->verbose = 1;
			break;
		case 'h':
			return 1;
		case ':':
			snprintf(err, errlen, "%s: needs an argument", argv[optind - 1]);
			rc = -EINVAL;
			break;
		default:
			if (optopt != 0)
				snprintf(err, errlen, "-%c: unknown option", optopt);
			else
				snprintf(err, errlen, "%s: unknown option", argv[optind - 1]);
			rc = -EINVAL;
			break;
		}
	}
	if (rc != 0)
		return rc;
	if (optind < argc)
		return bad(err, errlen, "argument", argv[optind], "unexpected (options only)");
	if (!has_etcd) {
		snprintf(err, errlen, "--etcd: required (http://host:port[,...])");
		return -EINVAL;
	}
	if (!has_cluster) {
		snprintf(err, errlen, "--cluster: required (the cluster's name)");
		return -EINVAL;
	}
	return 0;
}
