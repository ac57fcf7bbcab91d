#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Predictive prefetch end to end: keymapd (one worker, net_tap in a private network
# namespace, the log store with a cache of a few percent of the data), prefetch off then
# on, on the same data:
#   a. a sequential reader (persist_client check, one key at a time): every value checked
#      against the one written; the workers' stream detectors must raise the cache hit
#      ratio (keymapd's own counters) by at least 0.2;
#   b. users walking page chains in sessions (keymap-bench --gen-trace sessions, replayed
#      through libkeymap with their session ids), the predictor on an lcore of its own
#      ([prefetch] lcore): the control side's predictions must raise the hit ratio by at
#      least 0.2; keymapctl prefetch shows the learned template chain, and the metrics
#      page with the prefetch families is valid Prometheus text.
# KM_PREFETCH_TEST_OFF=1 runs the "on" halves with prefetch off: the test must then fail.
# Removes the namespace, the processes and /var/run/dpdk/<prefix> even when it fails;
# every command is bounded by a timeout.
#
# usage: prefetch.sh KEYMAPD KEYMAPCTL PERSIST_CLIENT KEYMAP_BENCH PROM_CHECK
#        (exit 77 = skipped: needs root, ip and python3)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
pclient=$3
bench=$4
promcheck=$5
tag=kmpf
needs=python3
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
on=1
[ "${KM_PREFETCH_TEST_OFF:-0}" = 1 ] && on=0
# Main lcore (control) plus one worker; part b adds the predictor's lcore.
if [ "$(nproc)" -gt 1 ]; then cpu1=1; else cpu1=0; fi

in_ns=(timeout -k 2 60 ip netns exec "$ns")

# start_server LCORES ARGS...: keymapd on the data in $tmp/data, ready.
start_server() {
	local lcores=$1
	shift
	start_keymapd "$lcores" -o store.driver=log -o "store.dir=$tmp/data" \
		-o "store.cold_dir=$tmp/data/cold" -o store.durability=none -o shards.count=4 \
		-o metrics.port=9470 "$@"
}

# hit_ratio: the value cache's hits / (hits + misses) since keymapd started.
hit_ratio() {
	"${ctl[@]}" --json stats >"$tmp/stats.json" || fail "keymapctl stats failed"
	python3 -c 'import json, sys
c = json.load(open(sys.argv[1]))["cache"]
print("%.4f" % (c["hits"] / max(1, c["hits"] + c["misses"])))' "$tmp/stats.json"
}

# at_least A B MARGIN: A >= B + MARGIN.
at_least() {
	python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) + float(sys.argv[3]) else 1)' "$@"
}

mkdir -p "$tmp/data/cold"
lc1="0@0,1@$cpu1"

echo "== a. a sequential reader, the workers' stream detectors (at $((SECONDS - t_start)) s)"
# 4000 keys of ~120 bytes charged each: the 24 KiB cache holds about 5 % of them.
start_server "$lc1" -o cache.bytes=24576
"${in_ns[@]}" "$pclient" fill -h "$server" -n 4000 -p pf/ -v 48 -t 60 >/dev/null ||
	fail "fill failed"
stop_server
start_server "$lc1" -o cache.bytes=24576 -o prefetch.enable=0
"${in_ns[@]}" "$pclient" check -h "$server" -n 4000 -p pf/ -v 48 -w 1 -t 60 ||
	fail "check with prefetch off"
off=$(hit_ratio)
stop_server
start_server "$lc1" -o cache.bytes=24576 -o prefetch.enable=$on
"${in_ns[@]}" "$pclient" check -h "$server" -n 4000 -p pf/ -v 48 -w 1 -t 60 ||
	fail "check with prefetch on: a value read differs from the one written"
pon=$(hit_ratio)
"${ctl[@]}" --json prefetch >"$tmp/pf.json" || fail "keymapctl prefetch failed"
stop_server
echo "sequential: hit ratio off $off, on $pon"
at_least "$pon" "$off" 0.2 || fail "sequential reader: hit ratio on $pon is not off $off + 0.2"
ok "sequential reader: every value intact, hit ratio $off -> $pon"

echo "== b. sessions walking page chains, the predictor on its own lcore (at $((SECONDS - t_start)) s)"
rm -rf "$tmp/data"
mkdir -p "$tmp/data/cold"
timeout 60 "$bench" --gen-trace sessions -k 12000 -n 30000 --out "$tmp/sessions.csv" \
	>/dev/null || fail "keymap-bench --gen-trace sessions"
# replay [extra]: the trace through libkeymap, one request at a time, session ids on.
replay() {
	"${in_ns[@]}" "$bench" -x libkeymap -s "$server" --trace "$tmp/sessions.csv" -c 1 -q \
		-D 60 "$@" >"$tmp/bench.out" 2>&1 || { cat "$tmp/bench.out"; fail "replay failed"; }
}
start_server "$lc1"
replay # preloads every key, then replays
stop_server
# ~140 bytes charged per entry, 11 k keys: 40 KiB is about 2.5 %.
start_server "$lc1" -o cache.bytes=40960 -o prefetch.enable=0
replay --no-preload
off=$(hit_ratio)
stop_server
lc2="0@0,1@$cpu1,2@$cpu1"
start_server "$lc2" -o cache.bytes=40960 -o prefetch.enable=$on -o prefetch.lcore=2
grep -q "1 workers" "$log" || fail "with [prefetch] lcore = 2 of 3 lcores keymapd should run 1 worker"
replay --no-preload
pon=$(hit_ratio)
"${ctl[@]}" prefetch >"$tmp/pf.txt" || fail "keymapctl prefetch failed"
# The metrics endpoint listens on 127.0.0.1 inside the namespace.
"${in_ns[@]}" "$keymapctl" -f "$prefix" metrics >"$tmp/metrics.txt" ||
	fail "keymapctl metrics failed"
# Runtime tunables: set, shown, refused with a reason.
"${ctl[@]}" set prefetch.threshold 40 >/dev/null || fail "set prefetch.threshold 40"
[ "$("${ctl[@]}" config prefetch.threshold)" = 40 ] || fail "prefetch.threshold not 40 after set"
if "${ctl[@]}" set prefetch.models bogus >"$tmp/out" 2>&1; then fail "set prefetch.models bogus accepted"; fi
grep -q "not a list of succ" "$tmp/out" || { cat "$tmp/out"; fail "set prefetch.models bogus: no reason"; }
if "${ctl[@]}" set prefetch.memory 1048576 >"$tmp/out" 2>&1; then fail "set prefetch.memory accepted"; fi
grep -q "cannot change while keymapd runs" "$tmp/out" || { cat "$tmp/out"; fail "set prefetch.memory: no reason"; }
"${ctl[@]}" set prefetch.enable 0 >/dev/null || fail "set prefetch.enable 0"
"${ctl[@]}" prefetch | grep -q '^prefetch   off' || fail "keymapctl prefetch not off after prefetch.enable=0"
stop_server
echo "sessions: hit ratio off $off, on $pon"
at_least "$pon" "$off" 0.2 || fail "sessions: hit ratio on $pon is not off $off + 0.2"
grep -Eq '^u#/[a-z]+ +u#/[a-z]+ +template ' "$tmp/pf.txt" ||
	{ cat "$tmp/pf.txt"; fail "keymapctl prefetch shows no learned template transition"; }
grep -q '^keymap_prefetch_model_precision{model="template"}' "$tmp/metrics.txt" ||
	fail "no keymap_prefetch_model_precision series in the metrics"
python3 "$promcheck" <"$tmp/metrics.txt" || fail "the metrics page is not valid Prometheus text"
ok "sessions: hit ratio $off -> $pon, template chain learned, metrics valid"
echo "prefetch: all checks passed in $((SECONDS - t_start)) s"
