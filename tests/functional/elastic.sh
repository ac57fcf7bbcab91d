#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Elasticity, short: tools/bench/elastic with keymapd's defaults (adaptive: nothing set but
# its address) for 14 s, 20,000 keys, the hot keys moving every 5 s; placement acts above
# 103 % of the mean (instead of 110 %) so that a short run moves shards whatever the
# machine's noise. Asserts correctness
# only, never timing: every GET a hit, no error or timeout, the checker's replies all as
# its model says, automatic moves happened, within [shards] balance_moves per second, and
# no shard changed owner more than twice per move of the hot keys (no oscillation). The
# script removes its namespace, processes and /var/run/dpdk/<prefix> itself.
#
# usage: elastic.sh SOURCE_ROOT BUILD_ROOT   (exit 77 = skipped: needs root and ip)
set -euo pipefail

src=$1
build=$2
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
	echo "SKIP: needs root and iproute2 (network namespace, DPDK vdevs)"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rc=0
timeout -k 10 240 "$src/tools/bench/elastic" -b "$build" -d 14 -m 5 -k 20000 -c 16 \
	-x shards.balance_pct=103 -o "$tmp" || rc=$?
if [ "$rc" -ne 0 ]; then
	for f in elastic.md bench.txt checker.txt; do
		[ -f "$tmp/$f" ] && { echo "---- $f ----"; cat "$tmp/$f"; }
	done
	[ -f "$tmp/keymapd.log" ] && { echo "---- keymapd.log (last 30 lines) ----"; tail -30 "$tmp/keymapd.log"; }
	echo "FAIL: tools/bench/elastic exit $rc"
	exit 1
fi
python3 - "$tmp/elastic.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["misses"] == 0 and s["errors"] == 0 and s["timeouts"] == 0, s
assert s["checker_exit"] == 0, s
assert 0 < s["auto_moves"] <= s["moves_bound"], s
assert s["shard_owner_changes_max"] <= s["shard_owner_changes_bound"], s
print(f"ok: {s['gets']} GETs all hits, {s['auto_moves']} automatic moves (bound "
      f"{s['moves_bound']:.0f}), a shard changed owner at most {s['shard_owner_changes_max']} "
      f"times; median max/mean {s['median_max_over_mean']:.3f} (not judged)")
PY
echo PASS
