#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# keymap-machine-probe, short: the chase (two sizes, few loads), the core clock and, where
# this process may run on two CPUs, the cache-line latency between them, as text and as
# JSON, every figure positive; every bad input refused with a message and exit 1. Judges
# no timing.
#
# usage: machine_probe.sh KEYMAP_MACHINE_PROBE
set -euo pipefail

probe=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
	echo "FAIL: $*"
	exit 1
}

# expect CODE PATTERN args...: exit code CODE and PATTERN in what it printed.
expect() {
	local want=$1 pattern=$2 rc=0
	shift 2
	timeout -k 5 30 "$probe" "$@" >"$tmp/out" 2>&1 || rc=$?
	[ "$rc" = "$want" ] || fail "$* exited $rc, not $want: $(head -3 "$tmp/out")"
	grep -q -- "$pattern" "$tmp/out" || fail "$*: no '$pattern' in: $(head -3 "$tmp/out")"
}

command -v python3 >/dev/null || fail "python3 needed (JSON checks, the CPUs this process may use)"

expect 0 "chase    64K: .* TSC cycles per dependent load" -t chase -s 64K,2M -l 20000
expect 0 "chase     2M: " -t chase -s 64K,2M -l 20000 -H
expect 0 '"chase": {"loads": 20000' -t chase -s 64K,2M -l 20000 -j
python3 - "$tmp/out" <<'PY' || fail "chase JSON: $(cat "$tmp/out")"
import json, sys
d = json.load(open(sys.argv[1]))
c = d["chase"]["cycles_per_load"]
assert d["tsc_hz"] > 0 and list(c) == ["64K", "2M"] and all(v > 0 for v in c.values()), d
assert "c2c" not in d and "clock" not in d, d
PY
# The CPUs this process may run on (a container's may not start at 0).
read -r c1 c2 < <(python3 -c '
import os
print(*sorted(os.sched_getaffinity(0))[:2])')
# The core clock of one CPU (a = b), as JSON.
expect 0 '"clock": {"cpus": \[' -t clock -a "$c1" -b "$c1" -j
python3 - "$tmp/out" "$c1" <<'PY' || fail "clock JSON: $(cat "$tmp/out")"
import json, sys
d = json.load(open(sys.argv[1]))["clock"]
assert d["cpus"] == [int(sys.argv[2])] and len(d["ghz"]) == 1 and 0.1 < d["ghz"][0] < 10, d
PY

if [ -n "${c2:-}" ]; then
	expect 0 "c2c: a cache line from CPU $c1 to CPU $c2: .* TSC cycles one way" -t c2c \
		-a "$c1" -b "$c2" -n 2000
	expect 0 "\"c2c\": {\"cpus\": \[$c2, $c1\]" -t c2c -a "$c2" -b "$c1" -n 2000 -j
	python3 - "$tmp/out" <<'PY' || fail "c2c JSON: $(cat "$tmp/out")"
import json, sys
c = json.load(open(sys.argv[1]))["c2c"]
assert c["trips"] == 2000 and 0 < c["min"] <= c["oneway_cycles"] <= c["max"], c
PY
	expect 0 "clock: CPU $c2 .* GHz while running" -t clock -a "$c1" -b "$c2"
	grep -q "clock: CPU $c1 .* GHz while running" "$tmp/out" || fail "no clock of CPU $c1"
	# What tools/bench/compare reads: c2c and both clocks, b's last.
	expect 0 '"clock": {"cpus": ' -t c2c,clock -a "$c1" -b "$c2" -n 2000 -j
	python3 - "$tmp/out" "$c1" "$c2" <<'PY' || fail "c2c,clock JSON: $(cat "$tmp/out")"
import json, sys
d = json.load(open(sys.argv[1]))
k = d["clock"]
assert d["c2c"]["cpus"] == k["cpus"] == [int(sys.argv[2]), int(sys.argv[3])], d
assert len(k["ghz"]) == 2 and all(0.1 < g < 10 for g in k["ghz"]) and "chase" not in d, d
PY
else
	echo "machine-probe: one CPU available: c2c not measured, only its refusals"
fi

# Bad input: a message and exit 1.
expect 1 "two different CPUs" -a "$c1" -b "$c1"
expect 1 "CPU 1023: .*not a CPU this process may run on" -t c2c -a "$c1" -b 1023
expect 1 "CPU 1023: .*not a CPU this process may run on" -t c2c -a 1023 -b "$c1"
expect 1 "CPU 1023: .*not a CPU this process may run on" -t clock -a "$c1" -b 1023
for bad in "-t foo" "-t clock,foo" "-t clock," "-t ''" "-n 5" "-n 1x" "-s 10K" "-s 1M,,2M" "-s 1M," \
	"-s 2G" "-s 1T" "-s ''" "-s 1M,1024K" "-l 10" "-a -1" "extra"; do
	eval "expect 1 usage: $bad"
done
echo "machine-probe: ok"
