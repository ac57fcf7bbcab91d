#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# keymap-placer against a private etcd on loopback, with fake nodes: member records put
# with etcdctl under leases, moves made "ready" by hand.
#   a. the first map: every member, shards round-robin over the workers;
#   b. a member joins: a table map, then moves of about 1/n of the shards to it;
#   c. the moves made ready: the map with each applied, the move keys gone;
#   d. a member's lease revoked: the node marked down, nothing moved to it; back again;
#   e. a drain key: the node's shards move away, a failed move is given up, the node
#      leaves the table;
#   f. two placers: the leader killed (kill -9), the standby publishes within TTL + a few
#      seconds; every map/<epoch> kept decodes, epochs strictly increase;
#   g. a malformed map/current, then one with another routing rule: refused, logged each
#      interval, not overwritten;
#   h. SIGTERM: the leader resigns and exits 0; --once --dry-run writes nothing; --once
#      publishes.
# Bounded in time (about 30 s); etcd and the placers are stopped and the temporary
# directory removed, also on failure.
#
# usage: placer.sh KEYMAP_PLACER PLACER_CHECK   (exit 77 = skipped: no etcd or etcdctl)
set -euo pipefail
shopt -s inherit_errexit

placer=${1:?usage: placer.sh KEYMAP_PLACER PLACER_CHECK}
check=${2:?usage: placer.sh KEYMAP_PLACER PLACER_CHECK}
etcd=/usr/bin/etcd
etcdctl=$(command -v etcdctl || true)
if [ ! -x "$etcd" ] || [ -z "$etcdctl" ] || ! command -v ss >/dev/null; then
	echo "SKIP: needs $etcd, etcdctl (etcd-server, etcd-client) and ss (iproute2)"
	exit 77
fi

tmp=$(mktemp -d -p /var/tmp)
etcd_pid=
declare -A ppid=()
t0=$SECONDS

stop_pid() {
	local p=$1 sig=${2:-TERM}

	kill "-$sig" "$p" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}

cleanup() {
	local rc=$? i

	for i in "${!ppid[@]}"; do stop_pid "${ppid[$i]}"; done
	[ -z "$etcd_pid" ] || stop_pid "$etcd_pid"
	if [ "$rc" -ne 0 ]; then
		for i in "$tmp"/placer-*.log; do
			[ -f "$i" ] || continue
			echo "--- $(basename "$i") (last 30 lines)"
			tail -n 30 "$i"
		done
		[ ! -f "$tmp/etcd.log" ] || { echo "--- etcd log (last 10 lines)"; tail -n 10 "$tmp/etcd.log"; }
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "FAIL: $* (at $((SECONDS - t0)) s)" >&2
	exit 1
}
section() { echo "== $* (at $((SECONDS - t0)) s)"; }

# Free TCP ports in 20000-29999, starting from one derived from our pid.
ports=()
p=$((20000 + ($$ * 13) % 10000))
for _ in $(seq 200); do
	if [ -z "$(ss -Htan "( sport = :$p )")" ]; then
		ports+=("$p")
		[ ${#ports[@]} -eq 2 ] && break
	fi
	p=$((20000 + (p - 20000 + 1) % 10000))
done
[ ${#ports[@]} -eq 2 ] || fail "no free ports found"
ep=http://127.0.0.1:${ports[0]}
peer=http://127.0.0.1:${ports[1]}
P=/keymap/t/

"$etcd" --name default --data-dir "$tmp/data" \
	--listen-client-urls "$ep" --advertise-client-urls "$ep" \
	--listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
	--initial-cluster "default=$peer" --initial-cluster-token "keymap-placer-$$" \
	>"$tmp/etcd.log" 2>&1 &
etcd_pid=$!

ectl() { ETCDCTL_API=3 timeout 10 "$etcdctl" --endpoints="$ep" --command-timeout=3s "$@"; }

for i in $(seq 150); do
	ectl endpoint health >/dev/null 2>&1 && break
	kill -0 "$etcd_pid" 2>/dev/null || fail "etcd exited"
	[ "$i" -lt 150 ] || fail "etcd did not answer in 15 s"
	sleep 0.1
done

# placer_start NAME [options]: a placer with a short TTL and interval, logging to a file.
placer_start() {
	local name=$1

	shift
	"$placer" --etcd "$ep" --cluster t --id "$name" --ttl 2 --interval-ms 300 \
		--shards 8 --max-moves 4 --move-timeout-s 30 "$@" >>"$tmp/placer-$name.log" 2>&1 &
	ppid[$name]=$!
}

declare -A lease=()
# member ID IP WORKERS INCARNATION: a fake node's record under a lease of its own.
member() {
	lease[$1]=$(ectl lease grant 60 | awk '{print $2}')
	[ -n "${lease[$1]}" ] || fail "no lease for member $1"
	ectl put --lease="${lease[$1]}" "${P}members/$1" \
		"{\"id\":\"$1\",\"ip\":\"$2\",\"mac\":\"02:00:00:00:00:01\",\"port\":7070,\"workers\":$3,\"incarnation\":$4,\"side_port\":7069,\"state\":\"active\",\"replicas\":${copies:-1}}" \
		>/dev/null
}

# map_now: the current map in lines (placer_check), or nothing.
map_now() {
	ectl get "${P}map/current" --print-value-only >"$tmp/cur.json"
	[ -s "$tmp/cur.json" ] || return 0
	"$check" "$tmp/cur.json"
}
epoch_now() { map_now | awk '$1 == "epoch" {print $2}'; }
# shards_of NODE: its shards in the current map ("" when not in the table).
shards_of() { map_now | awk -v n="$1" '$1 == "node" && $2 == n {print $5}'; }
node_line() { map_now | awk -v n="$1" '$1 == "node" && $2 == n'; }
moves() { ectl get --prefix "${P}moves/" --print-value-only | grep . || true; }
nb_moves() { moves | grep -c . || true; }

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds, every 0.2 s.
wait_for() {
	local s=$1 what=$2 i

	shift 2
	for i in $(seq $((s * 5))); do
		"$@" && return 0
		sleep 0.2
	done
	fail "$what: not within $s s"
}

# ready_all: every move in state copy set to ready, as the source node would, with the
# incarnation of the target's member record (the run that stored the copy).
ready_all() {
	local k v to inc

	for k in $(ectl get --prefix "${P}moves/" --keys-only | grep .); do
		v=$(ectl get "$k" --print-value-only)
		case $v in
		*'"state":"copy"'*)
			to=$(sed 's/.*"to":"\([^"]*\)".*/\1/' <<<"$v")
			inc=$(ectl get "${P}members/$to" --print-value-only |
				sed -n 's/.*"incarnation":\([0-9]*\).*/\1/p')
			v=${v/\"state\":\"copy\"/\"state\":\"ready\"}
			ectl put "$k" "${v%\}},\"to_incarnation\":${inc:-1}}" >/dev/null
			;;
		esac
	done
}

# settle SECONDS: make moves ready until none is left.
settle() {
	local i

	for i in $(seq $(($1 * 5))); do
		[ "$(nb_moves)" -eq 0 ] && sleep 0.7 && [ "$(nb_moves)" -eq 0 ] && return 0
		ready_all
		sleep 0.2
	done
	fail "moves still in flight after $1 s: $(moves)"
}

section "a. the first map"
member n1 127.0.1.1 2 1
member n2 127.0.1.2 2 1
placer_start pa
has_epoch() { [ -n "$(epoch_now)" ]; }
wait_for 10 "the first map" has_epoch
map_now >"$tmp/m1"
cat "$tmp/m1"
[ "$(grep -c '^node' "$tmp/m1")" -eq 2 ] || fail "first map: not 2 nodes"
# Round-robin over workers taken in rounds: n1 w0, n2 w0, n1 w1, n2 w1, ...
expect=$(for i in 0 1 2 3 4 5 6 7; do
	n=$((i % 2 + 1)); w=$(((i / 2) % 2)); echo "shard $((8 + i)) n$n $w"
done)
[ "$(grep '^shard' "$tmp/m1")" = "$expect" ] || fail "first map: shards not round-robin"
[ "$(awk '$1 == "epoch" {print $2}' "$tmp/m1")" -eq 1 ] || fail "first map: epoch not 1"
echo "ok: first map, epoch 1, 8 shards round-robin over n1 and n2"

section "b. a member joins"
member n3 127.0.1.3 2 1
in_table() { [ -n "$(node_line "$1")" ]; }
wait_for 10 "n3 in the table" in_table n3
[ "$(shards_of n3)" -eq 0 ] || fail "n3 received shards without a copy"
has_moves() { [ "$(nb_moves)" -ge "$1" ]; }
wait_for 10 "moves to n3" has_moves 2
sleep 1
moves | tee "$tmp/moves"
n=$(grep -c . "$tmp/moves")
# 8 shards over 3 nodes of 2 workers: n3's share is 8/3, it receives 2 or 3.
[ "$n" -ge 2 ] && [ "$n" -le 3 ] || fail "$n moves for a join of the third node"
grep -vq '"to":"n3"' "$tmp/moves" && fail "a move not to n3"
grep -vq '"state":"copy"' "$tmp/moves" && fail "a move not in state copy"
grep -vq "\"epoch\":$(epoch_now)," "$tmp/moves" && fail "a move not of the current epoch"
echo "ok: n3 joined the table (epoch $(epoch_now)), $n moves to it"

section "c. the moves made ready"
e0=$(epoch_now)
ready_all
no_moves() { [ "$(nb_moves)" -eq 0 ]; }
wait_for 10 "the ready moves completed" no_moves
[ "$(shards_of n3)" -eq "$n" ] || fail "n3 has $(shards_of n3) shards, $n moved"
[ "$(epoch_now)" -gt "$e0" ] || fail "no new epoch for the moves"
grep -q "moved from node" "$tmp/placer-pa.log" || fail "no log line for a completed move"
echo "ok: epoch $(epoch_now): n3 has its $n shards, no move left"
settle 10

section "d. a member's lease revoked"
before=$(shards_of n2)
ectl lease revoke "${lease[n2]}" >/dev/null
is_down() { node_line "$1" | grep -q ' down '; }
wait_for 10 "n2 marked down" is_down n2
sleep 1.5
moves | grep -q '"to":"n2"' && fail "a move to a down node"
[ "$(shards_of n2)" -eq "$before" ] || fail "a down node's shards changed"
settle 10
[ "$(shards_of n2)" -eq "$before" ] || fail "a down node's shards changed"
echo "ok: n2 down, its $before shards wait for it, nothing moved to it"
member n2 127.0.1.2 2 2
is_up() { node_line "$1" | grep -q ' up '; }
wait_for 10 "n2 back" is_up n2
settle 10
echo "ok: n2 back (incarnation 2): $(map_now | grep '^node' | tr '\n' ' ')"

section "e. a drain key"
ectl put "${P}drain/n1" '{"at": 0}' >/dev/null
draining() { node_line n1 | grep -q ' draining '; }
wait_for 10 "n1 draining" draining
wait_for 10 "moves away from n1" has_moves 1
moves | grep -vq '"from":"n1"' && fail "a move not from the draining node"
# The first move fails at the source: given up (and started again later).
k=$(ectl get --prefix "${P}moves/" --keys-only | grep . | head -n 1)
v=$(ectl get "$k" --print-value-only)
ectl put "$k" "${v/\"state\":\"copy\"/\"state\":\"failed\",\"reason\":\"test: target unreachable\"}" >/dev/null
wait_for 5 "the failed move given up" grep -q "given up: the copy failed: test: target unreachable" "$tmp/placer-pa.log"
# A ready move stored by another run of the target than the live one: given up, not
# completed (the live run may not have the copy).
wait_for 15 "a move away from n1 again" has_moves 1
k=$(ectl get --prefix "${P}moves/" --keys-only | grep . | head -n 1)
v=$(ectl get "$k" --print-value-only)
v=${v/\"state\":\"copy\"/\"state\":\"ready\"}
ectl put "$k" "${v%\}},\"to_incarnation\":99}" >/dev/null
wait_for 5 "the move of a restarted target given up" \
	grep -q "given up: node n[0-9]* restarted since it stored the copy (run 99, now" "$tmp/placer-pa.log"
# The given-up move starts again after a pause: keep making moves ready until n1 is gone.
left() { ready_all; [ -z "$(node_line n1)" ]; }
wait_for 15 "n1 out of the table" left
settle 10
echo "ok: n1 drained and removed: $(map_now | grep '^node' | tr '\n' ' ')"

section "f. two placers, the leader killed"
placer_start pb
sleep 1
grep -q "pb leads" "$tmp/placer-pb.log" && fail "the standby leads while the leader lives"
# The standby writes nothing: the election is all it has under P/.
e0=$(epoch_now)
kill -KILL "${ppid[pa]}"
wait "${ppid[pa]}" 2>/dev/null || true
unset "ppid[pa]"
t_kill=$SECONDS
member n4 127.0.1.4 1 1
has_n4() { in_table n4; }
wait_for 8 "the standby publishing n4 (TTL 2 s + 6 s)" has_n4
echo "ok: pb published epoch $(epoch_now) with n4, $((SECONDS - t_kill)) s after the leader died"
grep -q "pb leads" "$tmp/placer-pb.log" || fail "pb does not say it leads"
settle 10
# Every map kept decodes, and the epochs are 1..E without a gap.
last=0
for e in $(ectl get --prefix "${P}map/" --keys-only | grep . | sed "s|^${P}map/||" | grep -v current | sort -n); do
	ectl get "${P}map/$e" --print-value-only >"$tmp/m.json"
	got=$("$check" "$tmp/m.json" | awk '$1 == "epoch" {print $2}') || fail "map/$e does not decode"
	[ "$got" -eq "$e" ] || fail "map/$e holds epoch $got"
	[ "$e" -eq $((last + 1)) ] || fail "epochs not consecutive: $last then $e"
	last=$e
done
[ "$last" -eq "$(epoch_now)" ] || fail "map/current is not the last map/<epoch>"
[ "$last" -gt "$e0" ] || fail "no epoch after the failover"
echo "ok: map/1..map/$last decode, strictly increasing, map/current = map/$last"

section "g. a malformed map/current"
good=$(ectl get "${P}map/current" --print-value-only)
ectl put "${P}map/current" '{"version":1,"epoch":' >/dev/null
member n5 127.0.1.5 1 1
refusals() { grep -c "map/current (revision [0-9]*) refused" "$tmp/placer-pb.log" || true; }
twice() { [ "$(refusals)" -ge 2 ]; }
wait_for 5 "the bad map refused and logged each interval" twice
[ "$(ectl get "${P}map/current" --print-value-only)" = '{"version":1,"epoch":' ] ||
	fail "the malformed map was overwritten"
grep "refused" "$tmp/placer-pb.log" | tail -n 1
# A valid map with another routing rule is refused too.
ectl put "${P}map/current" "${good/\"route_depth\":1/\"route_depth\":2}" >/dev/null
foreign() { grep -q "refused: its routing rule is separator '/' depth 2" "$tmp/placer-pb.log"; }
wait_for 5 "the foreign map refused" foreign
in_table n5 && fail "the foreign map was overwritten"
# Fixed by the operator: the last good map back; the placer goes on from there.
ectl put "${P}map/current" "$good" >/dev/null
wait_for 5 "n5 published once the map is fixed" in_table n5
echo "ok: malformed and foreign maps refused until fixed, then epoch $(epoch_now)"
settle 10

section "h. SIGTERM, --once --dry-run, --once"
kill -TERM "${ppid[pb]}"
rc=0
for _ in $(seq 50); do kill -0 "${ppid[pb]}" 2>/dev/null || break; sleep 0.1; done
wait "${ppid[pb]}" || rc=$?
unset "ppid[pb]"
[ "$rc" -eq 0 ] || fail "SIGTERM: exit $rc"
grep -q "pb resigned" "$tmp/placer-pb.log" || fail "no resignation logged"
[ -z "$(ectl get --prefix "${P}election" --keys-only | grep .)" ] || fail "an election key left"
member n6 127.0.1.6 1 1
rev() { ectl get / --prefix --limit 1 -w json | sed 's/.*"revision":\([0-9]*\).*/\1/'; }
r0=$(rev)
e0=$(epoch_now)
"$placer" --etcd "$ep" --cluster t --shards 8 --once --dry-run >"$tmp/dry.out" 2>>"$tmp/placer-dry.log"
cat "$tmp/dry.out"
grep -q "^put ${P}map/$((e0 + 1)) .*\"id\":\"n6\"" "$tmp/dry.out" || fail "the dry run shows no map with n6"
[ "$(rev)" -eq "$r0" ] || fail "the dry run wrote to etcd"
"$placer" --etcd "$ep" --cluster t --id once --ttl 2 --shards 8 --once 2>>"$tmp/placer-once.log" ||
	fail "--once: exit $?"
in_table n6 || fail "--once did not publish n6"
[ -z "$(ectl get --prefix "${P}election" --keys-only | grep .)" ] || fail "--once left its election key"
echo "ok: exit 0 on SIGTERM (resigned), a dry run writes nothing, --once publishes epoch $(epoch_now)"

section "i. replicas: placed, in sync on the primary's word, failover"
# Another cluster (r): members that ask for 2 copies.
P=/keymap/r/
copies=2
"$placer" --etcd "$ep" --cluster r --id pr --ttl 2 --interval-ms 300 --shards 4 --max-moves 0 \
	>>"$tmp/placer-pr.log" 2>&1 &
ppid[pr]=$!
member n1 127.0.2.1 1 1
member n2 127.0.2.2 1 1
# Every shard with one replica on the other node, not in sync yet.
replicated() {
	[ "$(map_now | awk '$1 == "shard" && NF == 5 && $5 ~ /:0$/' | wc -l)" -eq 4 ] &&
		[ "$(map_now | awk '$1 == "shard" && $3 == substr($5, 1, 2)' | wc -l)" -eq 0 ]
}
wait_for 15 "every shard with a replica on the other node" replicated
map_now | grep '^shard'
# n1 says its streams caught up: its shards' replicas are in sync.
n1_shards=$(map_now | awk '$1 == "shard" && $3 == "n1" {print $2}')
rep=$(for s in $n1_shards; do printf '[%s,"n2",1,"caught_up"],' "$s"; done)
ectl put --lease="${lease[n1]}" "${P}repl/n1" \
	"{\"node\":\"n1\",\"incarnation\":1,\"epoch\":1,\"shards\":[${rep%,}]}" >/dev/null
n1_in_sync() {
	[ "$(map_now | awk '$1 == "shard" && $3 == "n1" && $5 ~ /:1$/' | wc -l)" -eq \
		"$(echo "$n1_shards" | wc -w)" ]
}
wait_for 15 "n1's replicas in sync" n1_in_sync
# A stale report (another incarnation of n1) changes nothing; n2's shards stay out of sync.
[ "$(map_now | awk '$1 == "shard" && $3 == "n2" && $5 ~ /:1$/' | wc -l)" -eq 0 ] ||
	fail "n2's replicas in sync without a report"
# n1's lease revoked: its shards fail over to n2 at once (one round).
e1=$(epoch_now)
ectl lease revoke "${lease[n1]}" >/dev/null
failed_over() { [ -z "$(map_now | awk '$1 == "shard" && $3 == "n1"')" ]; }
wait_for 10 "n1's shards failed over to n2" failed_over
map_now | grep '^shard'
grep -q "failed over to an in-sync replica" "$tmp/placer-pr.log" || fail "no failover logged"
echo "ok: replicas placed, in sync on the primary's report, failover from epoch $e1 to $(epoch_now)"
echo "placer: all steps passed in $((SECONDS - t0)) s"
