#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# The partition shifter against a running keymapd (two workers, four shards, mem store,
# net_tap in a private network namespace):
#   a. an override of one entity: its keys stay readable, steered and unsteered, while it
#      migrates and once keymapd settled it; undone, it reverts and goes;
#   b. overrides added, settled, removed and removed while migrating, under
#      reshard_client, which checks every reply against its reference model (composite
#      keys user<i>/cart move between workers): no error, no mismatch, no lost key;
#   c. every refusal: exit code and message, the overrides unchanged;
#   d. the automatic shifter: under a load of which most names one entity's keys
#      (keymap-bench replaying a trace), keymapd overrides the entity by itself, every key
#      still reads its value; once the load stops, the override is undone after
#      [shift] undo_s and the keys read their values again.
# Removes the namespace, the processes and /var/run/dpdk/<prefix> even when it fails;
# every command and wait is bounded.
#
# usage: shift.sh KEYMAPD KEYMAPCTL RESHARD_CLIENT KEYMAP_CLI KEYMAP_BENCH
#   (exit 77: needs root, ip)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
rclient=$3
cli=$4
bench=$5
tag=kmshift
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
# Main lcore, two workers and the predictor's lcore (3): the notes are then drained by
# an RCU reader other than the control lcore, which must never wait for it while the
# control lcore publishes a map (an automatic override) and waits for a grace period.
if [ "$(nproc)" -gt 1 ]; then lcores="0@0,1@0,2@1,3@1"; else lcores="0@0,1@0,2@0,3@0"; fi

# ovr EXPR: EXPR in Python over keymapctl --json overrides (as o) holds.
ovr() {
	"${ctl[@]}" --json overrides >"$tmp/o.json" || fail "keymapctl overrides failed"
	python3 -c 'import json, sys
o = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2], {"o": o}) else 1)' "$tmp/o.json" "$1"
}

# wait_ovr EXPR WHAT: EXPR holds within 20 s.
wait_ovr() {
	for _ in $(seq 200); do
		if ovr "$1"; then
			checks=$((checks + 1))
			return 0
		fi
		sleep 0.1
	done
	fail "$2: '$1' not true after 20 s: $(cat "$tmp/o.json")"
}

cat >"$tmp/keymapd.conf" <<EOF
; shift.sh: two workers, four shards, the mem store
[net]
ip = $server
udp_port = 7070
[shards]
count = 4
; the load of section d through net_tap is far below the derived threshold
balance_min_rate = 1000
[prefetch]
lcore = 3
[shift]
interval_ms = 200
undo_s = 2
[log]
level = info
EOF

section "starting keymapd"
start_keymapd "$lcores" -c "$tmp/keymapd.conf"
kcli=("${in_ns[@]}" "$cli" -h "$server")

section "a. one entity: migrating, settled, reverting, gone"
expect 0 "overrides 0" "${ctl[@]}" overrides
for i in $(seq 0 39); do
	"${kcli[@]}" put "hot/$i" "v$i" >/dev/null || fail "put hot/$i"
done
expect 0 "^override of hot: migrating \(map epoch [0-9]+\)$" "${ctl[@]}" override add hot
# Read every key right away (some still in the old place), steered and not.
for i in $(seq 0 39); do
	expect 0 "^v$i$" "${kcli[@]}" get "hot/$i"
	[ $((i % 4)) -ne 0 ] || expect 0 "^v$i$" "${kcli[@]}" --no-steer get "hot/$i"
done
expect 0 "" "${kcli[@]}" put hot/0 new0
expect 0 "" "${kcli[@]}" del hot/1
wait_ovr "o['part'] == ['hot'] and o['state'] == ['settled'] and o['moved_keys'] >= 1" \
	"override settled"
expect 0 "^hot +0x[0-9a-f]{16} +1 +settled +operator$" "${ctl[@]}" overrides
expect 0 "^new0$" "${kcli[@]}" get hot/0
expect 3 "not found" "${kcli[@]}" get hot/1
for i in $(seq 2 39); do
	expect 0 "^v$i$" "${kcli[@]}" get "hot/$i"
done
# A split and a merge while the override is settled keep it: every key is still read
# where the override routes it.
"${ctl[@]}" --json shards >"$tmp/sh.json" || fail "keymapctl shards failed"
sid=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['id'][0])" "$tmp/sh.json")
expect 0 "^shard $sid split into" "${ctl[@]}" split "$sid"
expect 0 "^hot +0x[0-9a-f]{16} +1 +settled +operator$" "${ctl[@]}" overrides
for i in $(seq 2 39); do
	expect 0 "^v$i$" "${kcli[@]}" get "hot/$i"
done
expect 0 "merged into $sid " "${ctl[@]}" merge $((2 * sid))
expect 0 "^hot +0x[0-9a-f]{16} +1 +settled +operator$" "${ctl[@]}" overrides
expect 0 "^new0$" "${kcli[@]}" get hot/0
for i in $(seq 2 39); do
	expect 0 "^v$i$" "${kcli[@]}" get "hot/$i"
done
# The client steers by the override: the map it prints holds it.
expect 0 "" "${kcli[@]}" map
expect 0 "^override of hot: reverting" "${ctl[@]}" override remove hot
for i in $(seq 2 39 | shuf -n 10 --random-source=<(yes)); do
	expect 0 "^v$i$" "${kcli[@]}" get "hot/$i"
done
wait_ovr "o['overrides'] == 0" "override gone after reverting"
for i in $(seq 2 39); do
	expect 0 "^v$i$" "${kcli[@]}" get "hot/$i"
done
expect 0 "^new0$" "${kcli[@]}" get hot/0

section "b. overrides under reshard_client"
timeout -k 5 90 ip netns exec "$ns" "$rclient" -h "$server" -n 2000 -d 40 -s 7 --preload -v \
	--stop-file "$tmp/stop" >"$tmp/client.out" 2>&1 &
cl_pid=$!
for _ in $(seq 200); do
	grep -q "^t 1 s" "$tmp/client.out" && break
	kill -0 "$cl_pid" 2>/dev/null || { cat "$tmp/client.out"; fail "reshard_client exited early"; }
	sleep 0.1
done
grep -q "^t 1 s" "$tmp/client.out" || fail "reshard_client made no progress in 20 s"
# user<odd>/cart keys are the model's composite ones: 16 entities (the most a map holds).
parts=$(for i in $(seq 1 2 31); do echo "user$i"; done)
for round in 1 2; do
	for p in $parts; do expect 0 "migrating" "${ctl[@]}" override add "$p"; done
	wait_ovr "o['overrides'] == 16 and set(o['state']) == {'settled'}" "16 settled"
	for p in $parts; do expect 0 "reverting" "${ctl[@]}" override remove "$p"; done
	wait_ovr "o['overrides'] == 0" "16 gone"
	# Undone while migrating: it reverts from wherever its keys are.
	for p in $parts; do
		expect 0 "migrating" "${ctl[@]}" override add "$p"
		expect 0 "reverting" "${ctl[@]}" override remove "$p"
	done
	wait_ovr "o['overrides'] == 0" "undone while migrating"
	echo "   round $round done"
done
touch "$tmp/stop"
rc=0
wait "$cl_pid" || rc=$?
cl_pid=
grep -v '^t [0-9]* s ' "$tmp/client.out" || true
[ "$rc" -eq 0 ] || fail "reshard_client exit $rc"
summary=$(grep '^ops ' "$tmp/client.out") || fail "reshard_client printed no summary"
read -r _ cl_ops _ cl_err _ cl_mis _ cl_lost _ <<<"$summary"
[ "$cl_err" -eq 0 ] && [ "$cl_mis" -eq 0 ] && [ "$cl_lost" -eq 0 ] && [ "$cl_ops" -gt 1000 ] ||
	fail "reshard_client: $summary"
checks=$((checks + 1))
ovr "o['moved_keys'] >= 16" || fail "keys moved: $(cat "$tmp/o.json")"
checks=$((checks + 1))

section "c. refusals"
expect 2 "not a routing part" "${ctl[@]}" override add a/b
expect 2 "no override of that routing part" "${ctl[@]}" override remove nosuch
expect 1 "EXTRA '9' is not 1\.\.8" "${ctl[@]}" override add x 9
expect 1 "no comma" "${ctl[@]}" override add a,b
expect 1 "usage: override add" "${ctl[@]}" override
for i in $(seq 0 15); do expect 0 "migrating" "${ctl[@]}" override add "full$i"; done
expect 2 "the most overrides it can \(16\)" "${ctl[@]}" override add full16
expect 2 "already overridden" "${ctl[@]}" override add full3
wait_ovr "o['overrides'] == 16 and set(o['state']) == {'settled'}" "16 settled again"
for i in $(seq 0 15); do expect 0 "reverting" "${ctl[@]}" override remove "full$i"; done
wait_ovr "o['overrides'] == 0" "all gone"
expect 2 "no override of that routing part" "${ctl[@]}" override remove full0
grep -q "override add: hot" "$log" || fail "keymapd did not log the override"

section "d. the automatic shifter: found, settled, undone once cool"
for i in $(seq 0 19); do
	"${kcli[@]}" put "auto/$i" "a$i" >/dev/null || fail "put auto/$i"
done
# 70 % of the requests name auto/0..199 (one entity, its keys spread), the rest 5000
# entities of one key each (an override of those would move nothing apart).
python3 - "$tmp/trace.csv" <<'PY'
import random, sys
r = random.Random(5)
with open(sys.argv[1], "w") as f:
    f.write("timestamp_us,op,key,value_size\n")
    for _ in range(300000):
        if r.random() < 0.7:
            f.write("0,GET,auto/%d,16\n" % r.randrange(200))
        else:
            f.write("0,GET,e%d/x,16\n" % r.randrange(5000))
PY
timeout -k 5 120 ip netns exec "$ns" "$bench" -x libkeymap -s "$server:7070" \
	--trace "$tmp/trace.csv" --no-preload -c 32 --max-timeouts 0.01 >"$tmp/bench.out" 2>&1 &
cl_pid=$!
found=0
for _ in $(seq 600); do
	if ovr "o['part'] == ['auto'] and o['auto'] == [1]"; then
		found=1
		break
	fi
	kill -0 "$cl_pid" 2>/dev/null || break
	sleep 0.1
done
[ "$found" = 1 ] || fail "keymapd did not override the hot entity: $(cat "$tmp/o.json")
$(tail -5 "$tmp/bench.out")"
checks=$((checks + 1))
expect 0 "^auto +0x[0-9a-f]{16} +1 +(migrating|settled) +keymapd$" "${ctl[@]}" overrides
expect 0 "^automatic: on; overridden [1-9]" "${ctl[@]}" overrides
for i in $(seq 0 19); do expect 0 "^a$i$" "${kcli[@]}" get "auto/$i"; done
rc=0
wait "$cl_pid" || rc=$?
cl_pid=
[ "$rc" -eq 0 ] || { cat "$tmp/bench.out"; fail "keymap-bench exit $rc"; }
# No load: after undo_s (2 s) the override reverts, its keys move back, then it goes.
wait_ovr "o['overrides'] == 0 and o['auto_removes'] >= 1" "automatic override undone"
for i in $(seq 0 19); do expect 0 "^a$i$" "${kcli[@]}" get "auto/$i"; done
grep -q "routing part auto is hot" "$log" || fail "keymapd did not log the override"
grep -q "routing part auto cooled" "$log" || fail "keymapd did not log the undo"
# Off: nothing is overridden automatically (the operator's still can be).
expect 0 "^shift\.auto: 1 -> 0$" "${ctl[@]}" set shift.auto 0
expect 0 "automatic: off" "${ctl[@]}" overrides

echo "PASS: $checks checks in $((SECONDS - t_start)) s"
