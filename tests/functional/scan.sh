#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# SCAN end to end (one worker, net_tap in a private network namespace):
#   a. mem store: scan_client's checks (every stable key exactly once, with its value and
#      version, under a writer's puts, deletes and creations; pages of 1, 7, 33 and as
#      many as fit; keys only; a longer prefix; a value over a datagram through GET; the
#      refusals) while keymapctl splits and merges shards under the scans;
#   b. keymap-cli scan: its lines, --keys-only, --limit, -v, a prefix without its
#      separator (exit 1 and why), SCAN's counters in keymapctl stats;
#   c. log store: scan_client's checks again, every key read from the log.
# Removes the namespace, the processes and /var/run/dpdk/<prefix> even when it fails;
# every command is bounded by a timeout.
#
# usage: scan.sh KEYMAPD KEYMAPCTL KEYMAP_CLI SCAN_CLIENT   (exit 77 = skipped: needs root,
#        ip)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
cli=$3
sclient=$4
here=$(cd "$(dirname "$0")" && pwd)
tag=kmscan
needs=python3
# shellcheck source=lib.sh
. "$here/lib.sh"
conf=$tmp/keymapd.conf
kcli=(timeout -k 2 20 ip netns exec "$ns" "$cli" -h "$server")
big=3000

section "a. mem store: scans under concurrent writes, splits and merges"
cat >"$conf" <<EOF
[workers]
idle_sleep_us = 1000
[store]
value_max = 4000
[shards]
; only the test's splits and merges: keymapd's own would merge cold buddies away under it
split_rate = 0
merge_rate = 0
EOF
start_keymapd 0-1 -c "$conf"
timeout -k 5 200 ip netns exec "$ns" "$sclient" "$server" 15 "$big" >"$tmp/client.out" 2>&1 &
cl_pid=$!
for _ in $(seq 300); do
	grep -q "^scan: loaded" "$tmp/client.out" && break
	kill -0 "$cl_pid" 2>/dev/null || break
	sleep 0.1
done
# Splits and merges of every first-level shard while the scans run.
cj sh shards
ids=$(jx "' '.join(str(i) for i in sh['id'])")
n=0
for id in $ids; do
	kill -0 "$cl_pid" 2>/dev/null || break
	expect 0 "" "${ctl[@]}" split "$id"
	expect 0 "" "${ctl[@]}" merge $((2 * id))
	n=$((n + 2))
	sleep 0.5
done
rc=0
wait "$cl_pid" || rc=$?
cl_pid=
cat "$tmp/client.out"
[ "$rc" -eq 0 ] || fail "scan_client failed ($rc)"
grep -q "^scan: .* every stable key exactly once" "$tmp/client.out" || fail "no verdict"
ok "scan_client under writes with $n splits and merges"

section "b. keymap-cli scan"
for i in 1 2 3 4 5; do expect 0 "^OK" "${kcli[@]}" put "cli/k$i" "v$i"; done
expect 0 "" "${kcli[@]}" scan cli/
[ "$(sort "$tmp/out" | tr '\t\n' ' ;')" = "cli/k1 v1;cli/k2 v2;cli/k3 v3;cli/k4 v4;cli/k5 v5;" ] ||
	fail "scan cli/: $(cat "$tmp/out")"
ok "scan cli/: the five keys, tab, value"
expect 0 "" "${kcli[@]}" scan --keys-only --page 1 cli/
[ "$(sort "$tmp/out" | tr '\n' ' ')" = "cli/k1 cli/k2 cli/k3 cli/k4 cli/k5 " ] ||
	fail "scan --keys-only: $(cat "$tmp/out")"
ok "scan --keys-only --page 1"
expect 0 "" "${kcli[@]}" scan cli/ --limit 2
[ "$(wc -l <"$tmp/out")" -eq 2 ] || fail "scan --limit 2: $(cat "$tmp/out")"
ok "scan --limit 2: two lines"
expect 0 "	version [0-9]+$" "${kcli[@]}" -v scan cli/k3
expect 1 "cli does not end the routing part of its keys" "${kcli[@]}" scan cli
expect 1 "--limit: not a number" "${kcli[@]}" scan cli/ --limit x
expect 1 "usage" "${kcli[@]}" scan
expect 0 "^OK" "${kcli[@]}" put -x/k1 v1
expect 0 "^-x/k1	v1$" "${kcli[@]}" scan -- -x/
expect 0 "" "${kcli[@]}" scan nothing/here/
[ ! -s "$tmp/out" ] || fail "scan nothing/here/: $(cat "$tmp/out")"
ok "scan of a prefix with no key: nothing, exit 0"
cj st stats
check "st['total']['req_scan'] > 0 and st['total']['scan_entries'] >= 5" "SCAN's counters"
stop_server

section "c. log store: scans under concurrent writes"
mkdir -p "$tmp/data/cold"
cat >"$conf" <<EOF
[workers]
idle_sleep_us = 1000
[store]
driver = log
dir = $tmp/data
cold_dir = $tmp/data/cold
value_max = 4000
EOF
start_keymapd 0-1 -c "$conf"
timeout -k 5 200 ip netns exec "$ns" "$sclient" "$server" 5 "$big" >"$tmp/client.out" 2>&1 ||
	{ cat "$tmp/client.out"; fail "scan_client failed against the log store"; }
cat "$tmp/client.out"
ok "scan_client against the log store"
cj st stats
check "st['total']['req_scan'] > 0" "SCAN's counters (log store)"
stop_server
echo "PASS: $checks checks in $((SECONDS - t_start)) s"
