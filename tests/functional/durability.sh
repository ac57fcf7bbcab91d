#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# The log store's promises under crashes, slow and failing disks: keymapd (one worker,
# four shards, net_tap in a private network namespace) on the log store in a kmfs mount (a
# FUSE layer that keeps every write not yet fdatasync'ed in memory and drops it at a power
# cut), checked with durability_client:
#   a. async on a slow disk (--write-bps): kill -9 and a power cut at a random moment
#      under a write load; after the restart no acknowledged write is lost that was
#      acknowledged more than the bound before the crash, no version is issued twice (CAS
#      with a lost version fails, a new write gets a higher one); the worst is reported;
#   b. sync: kill -9 and a power cut together: nothing acknowledged is lost;
#   c. async on a full disk (a small tmpfs): the writes that do not fit are answered
#      ERROR, every acknowledged write is there while keymapd runs and after a restart;
#   d. a failing disk (kmfs fail eio) under async: the writes get errors, those
#      acknowledged before are counted lost (writes_lost), writes succeed once it recovers;
#   f. sync while the shards are split and merged over and over (copied by their owner
#      while serving, then swapped in): kill -9 and a power cut, nothing acknowledged lost;
#   e. damaged shards: a shard file deleted (the manifest tells), another replaced by a
#      directory: both quarantined (named in the log, DAMAGED to their keys, shown in
#      keymapctl shards and stats), the others serve; accept-loss gives them empty files.
# ROUNDS (environment, default 3) sets the kill rounds of a and b (tools/bench/durability
# runs 30). Everything is bounded in time and cleaned up even when it fails.
#
# usage: durability.sh KEYMAPD KEYMAPCTL DURABILITY_CLIENT KMFS
#        (exit 77 = skipped: needs root, ip, python3, /dev/fuse and kmfs)
set -euo pipefail
shopt -s inherit_errexit

keymapd=${1:-}
keymapctl=${2:-}
dclient=${3:-}
kmfs=${4:-}
rounds=${ROUNDS:-3}
bound_ms=${BOUND_MS:-100} # sync_interval_ms (10) plus two group writes of the slow disk, with margin
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null || ! command -v python3 >/dev/null ||
	[ -z "$kmfs" ] || [ ! -e /dev/fuse ]; then
	echo "SKIP: needs root, iproute2, python3, /dev/fuse and kmfs"
	exit 77
fi

tag=kmdu
kmfs_pid=
during_pid=
extra_cleanup() {
	local m

	[ -z "$during_pid" ] || kill "$during_pid" 2>/dev/null || true
	for m in $mounts; do
		fusermount3 -u "$m" 2>/dev/null || true
	done
	[ -z "$kmfs_pid" ] || kill -KILL "$kmfs_pid" 2>/dev/null || true
}
# shellcheck source=logstore_env.sh
. "$(dirname "$0")/logstore_env.sh"
dc=(ip netns exec "$ns" "$dclient")

# kmfs_mount DIR [OPTIONS...]: DIR/data through kmfs (backing DIR/backing), commands on
# DIR/ctl; sets kmfs_pid.
kmfs_mount() {
	local d=$1
	shift
	mkdir -p "$d/backing/cold" "$d/data"
	"$kmfs" --control "$d/ctl" "$@" "$d/backing" "$d/data" 2>"$d/kmfs.log" &
	kmfs_pid=$!
	mounts="$d/data $mounts"
	for _ in $(seq 100); do
		mountpoint -q "$d/data" && [ -p "$d/ctl" ] && return 0
		sleep 0.05
	done
	fail "kmfs did not mount $d/data"
}
kmfs_cmd() { # DIR COMMAND
	echo "$2" | timeout 5 tee "$1/ctl" >/dev/null || fail "kmfs: '$2' not taken"
}
kmfs_umount() { # DIR
	stop_server || true
	fusermount3 -u "$1/data" || umount -l "$1/data"
	wait "$kmfs_pid" 2>/dev/null || true
	kmfs_pid=
	mounts=${mounts//"$1/data "/}
}

# write_load ACKFILE SECONDS [ARGS...]: the write load in the background (load_pid).
write_load() {
	local ack=$1 secs=$2
	shift 2
	timeout -k 2 $((secs + 30)) "${dc[@]}" write -h "$server" -k 2000 -n 100000000 \
		-t "$secs" -o "$ack" "$@" >"$tmp/load.out" 2>&1 &
	load_pid=$!
}

# reshard_loop: split and merge the shards over and over (keymapctl; a command that fails,
# e.g. on a shard a crash left split, is skipped) until keymapd is gone.
reshard_loop() {
	local s
	for _ in $(seq 200); do
		for s in 4 5 6 7; do
			"${ctl[@]}" -T 5 split "$s" >/dev/null 2>&1 || true
			"${ctl[@]}" -T 5 merge $((2 * s)) >/dev/null 2>&1 || true
		done
		kill -0 "$srv_pid" 2>/dev/null || return 0
	done
}

# crash_rounds DIR ACK DURABILITY BOUND_MS [DURING]: ROUNDS times a load (and the function
# DURING in the background), then at a random moment kill -9 and a power cut, a restart
# and the verification (durability_client -b).
worst_all=0
crash_rounds() {
	local d=$1 ack=$2 dur=$3 bound=$4 during=${5:-} round ms kill_ns v worst

	for round in $(seq "$rounds"); do
		start_server "$d/data" -o "store.durability=$dur" -o store.sync_interval_ms=10
		write_load "$ack" 20
		if [ -n "$during" ]; then
			"$during" &
			during_pid=$!
		fi
		ms=$((RANDOM % 1001 + 500))
		sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
		kill -0 "$load_pid" 2>/dev/null || { cat "$tmp/load.out"; fail "the load stopped"; }
		kill_ns=$(date +%s%N)
		kill9_server
		kmfs_cmd "$d" powercut
		kill_load
		if [ -n "$during_pid" ]; then
			kill "$during_pid" 2>/dev/null || true
			wait "$during_pid" 2>/dev/null || true
			during_pid=
			during_done=$((during_done + $(grep -Ec "split shard|merged shards" "$log")))
		fi
		start_server "$d/data" -o "store.durability=$dur"
		expect 0 "^verify: " "${dc[@]}" verify -h "$server" -i "$ack" -K "$kill_ns" \
			-b "$bound"
		v=$(grep '^verify:' "$tmp/out")
		worst=$(echo "$v" | sed -n 's/.*(the oldest \([0-9.]*\) ms.*/\1/p')
		worst_all=$(python3 -c "print(max($worst_all, $worst))")
		echo "   round $round ($dur, crash after $ms ms): $v"
		stop_server || fail "keymapd exit $? on SIGTERM"
	done
}

timeout 10 ip netns add "$ns"
"${in_ns[@]}" ip link set lo up
RANDOM=$id
echo "   kill delays seeded with $id"

# ---- a. async on a slow disk.
section "a. async, disk at ${WRITE_BPS:-262144} B/s: kill -9 and a power cut, $rounds rounds (bound $bound_ms ms)"
A=$tmp/a
kmfs_mount "$A" --write-bps "${WRITE_BPS:-262144}"
crash_rounds "$A" "$tmp/ack.a" async "$bound_ms"
worst_async=$worst_all
ok "async: nothing lost that was acknowledged more than $bound_ms ms before a crash" \
	"(worst $worst_async ms), no version issued twice"
kmfs_umount "$A"

# ---- b. sync: nothing lost.
section "b. sync: kill -9 and a power cut, $rounds rounds"
worst_all=0
B=$tmp/b
kmfs_mount "$B"
crash_rounds "$B" "$tmp/ack.b" sync 0
ok "sync: no acknowledged write lost across $rounds power cuts"
kmfs_umount "$B"

# ---- f. sync while shards are split and merged: nothing lost.
section "f. sync: kill -9 and a power cut while shards are split and merged, $rounds rounds"
worst_all=0
F=$tmp/f
kmfs_mount "$F"
during_done=0
crash_rounds "$F" "$tmp/ack.f" sync 0 reshard_loop
[ "$during_done" -gt 0 ] || fail "no split or merge completed before the crashes"
ok "sync, $during_done splits and merges done, more under way at each crash: no" \
	"acknowledged write lost across $rounds power cuts"
kmfs_umount "$F"

# ---- c. async on a full disk.
section "c. async on a full disk"
C=$tmp/c
mkdir -p "$C"
mount -t tmpfs -o size=3m kmdu "$C"
mounts="$C $mounts"
mkdir -p "$C/cold"
start_server "$C" -o store.durability=async
timeout -k 2 60 "${dc[@]}" write -h "$server" -k 1000000 -n 60000 -t 30 -o "$tmp/ack.c" \
	>"$tmp/load.out" 2>&1 || fail "the load failed: $(cat "$tmp/load.out")"
cat "$tmp/load.out"
grep -Eq "^write: [0-9]+ acknowledged, [1-9][0-9]* refused" "$tmp/load.out" ||
	fail "a full disk refused no write"
expect 0 "^verify: .* 0 lost" "${dc[@]}" verify -h "$server" -i "$tmp/ack.c" -K 0 -b 0
grep '^verify:' "$tmp/out"
fresh_stats
check "st['store']['writes_lost'] == 0 and st['store']['write_errors'] == 0" \
	"nothing acknowledged lost, no group failed (the space was allocated first)"
stop_server || fail "keymapd exit $? on SIGTERM"
mount -o remount,size=16m "$C"
start_server "$C" -o store.durability=async
expect 0 "^verify: .* 0 lost" "${dc[@]}" verify -h "$server" -i "$tmp/ack.c" -K 0 -b 0
ok "full disk (async): every acknowledged write replayed after a restart"
stop_server || fail "keymapd exit $? on SIGTERM"
umount "$C"
mounts=${mounts//"$C "/}

# ---- d. a failing disk.
section "d. async on a failing disk (EIO)"
D=$tmp/d
kmfs_mount "$D"
start_server "$D/data" -o store.durability=async
expect 0 "^write: [1-9][0-9]* acknowledged, 0 refused" "${dc[@]}" write -h "$server" -k 100 \
	-n 2000 -o "$tmp/ack.d"
kmfs_cmd "$D" "fail eio"
timeout -k 2 60 "${dc[@]}" write -h "$server" -k 100 -n 3000 -t 20 -o "$tmp/ack.d2" \
	>"$tmp/load.out" 2>&1 || true
cat "$tmp/load.out"
grep -Eq "^write: [0-9]+ acknowledged, [1-9][0-9]* refused" "$tmp/load.out" ||
	fail "a failing disk refused no write"
fresh_stats
check "st['store']['write_errors'] > 0" "the failed groups are counted"
echo "   writes_lost $(jx "st['store']['writes_lost']"), write_errors $(jx "st['store']['write_errors']")"
kmfs_cmd "$D" "fail off"
# What was acknowledged while the disk failed is there, but for the writes the failed
# groups held, which writes_lost counts exactly (after the first failure nothing is
# acknowledged before it is durable).
expect 0 "^verify: " "${dc[@]}" verify -h "$server" -i "$tmp/ack.d2" -K 0
dlost=$(sed -n 's/^verify: .* acknowledged, \([0-9]*\) lost.*/\1/p' "$tmp/out")
# An acknowledgement the client never received (its attempts timed out on a loaded
# machine) is in writes_lost but not in what the client saw lost: writes_lost is between
# the two.
unans=$(sed -n 's/^write: [0-9]* acknowledged, \([0-9]*\) refused or unanswered.*/\1/p' \
	"$tmp/load.out")
wl=$(jx "st['store']['writes_lost']")
[ "$dlost" -le "$wl" ] && [ "$wl" -le $((dlost + unans)) ] ||
	fail "failing disk: $dlost acknowledged writes lost, writes_lost says $wl ($unans unanswered)"
ok "failing disk: the $dlost acknowledged writes lost are exactly those counted in writes_lost"
expect 0 "^write: [1-9][0-9]* acknowledged, 0 refused" "${dc[@]}" write -h "$server" -k 100 \
	-n 2000 -o "$tmp/ack.d3"
expect 0 "^verify: .* 0 lost" "${dc[@]}" verify -h "$server" -i "$tmp/ack.d3" -K 0 -b 0
ok "failing disk: errors while it fails, acknowledged writes durable once it recovers"
kmfs_umount "$D"

# ---- e. Damaged shards.
section "e. damaged shards: quarantined, the others serve"
E=$tmp/e
mkdir -p "$E/cold"
start_server "$E"
expect 0 "^put: ok 400 not_found 0 damaged 0 other 0$" "${dc[@]}" put -h "$server" -k 400
cj sh shards
read -r qa ka qb kb <<<"$(jx "tuple(x for i, k in [(i, k) for i, k in zip(sh['id'], sh['keys']) if k > 0][:2] for x in (i, k))")"
[ -n "${kb:-}" ] || fail "two shards with keys expected"
good=$((400 - ka - kb))
stop_server || fail "keymapd exit $? on SIGTERM"
rm "$E/shard-$qa.log"
rm "$E/shard-$qb.log"
mkdir "$E/shard-$qb.log"
start_server "$E"
grep -q "shard $qa: its files are missing from $E" "$log" || fail "no error for shard $qa's missing file"
grep -q "shard $qb: $E/shard-$qb.log .*: Is a directory: quarantined" "$log" ||
	fail "no error naming shard $qb's file"
ok "start-up: shard $qa (file deleted) and shard $qb (a directory) quarantined, named"
expect 0 "^status: ok $good not_found 0 damaged $((ka + kb)) other 0$" "${dc[@]}" status \
	-h "$server" -k 400
expect 0 "^put: ok $good not_found 0 damaged $((ka + kb)) other 0$" "${dc[@]}" put \
	-h "$server" -k 400
fresh_stats
check "st['store']['quarantined'] == 2 and
	sorted(i for i, s in zip(sh['id'], sh['state']) if s == 'quarantined') == sorted([$qa, $qb])" \
	"stats and shards show the two quarantined shards"
expect 2 "shard $qa is quarantined" "${ctl[@]}" split "$qa"
restart_clean "$E"
grep -q "shard $qa: its files are missing" "$log" || fail "the restart forgot shard $qa"
expect 0 "^status: ok $good not_found 0 damaged $((ka + kb)) other 0$" "${dc[@]}" status \
	-h "$server" -k 400
ok "across a restart: still quarantined (the manifest lists shard $qa)"
expect 0 "shard $qa emptied" "${ctl[@]}" accept-loss "$qa"
expect 2 "Is a directory" "${ctl[@]}" accept-loss "$qb"
rmdir "$E/shard-$qb.log"
expect 0 "shard $qb emptied" "${ctl[@]}" accept-loss "$qb"
expect 2 "is not quarantined" "${ctl[@]}" accept-loss "$qb"
expect 0 "^status: ok $good not_found $((ka + kb)) damaged 0 other 0$" "${dc[@]}" status \
	-h "$server" -k 400
restart_clean "$E"
! grep -q "quarantined" "$log" || fail "quarantined again after accept-loss: $(grep quarantined "$log")"
expect 0 "^put: ok 400 not_found 0 damaged 0 other 0$" "${dc[@]}" put -h "$server" -k 400
ok "accept-loss: empty files, the shards serve again, across a restart"
stop_server || fail "keymapd exit $? on SIGTERM"

echo "summary: $checks checks; async at ${WRITE_BPS:-262144} B/s: the oldest lost write was acknowledged $worst_async ms before a crash ($rounds rounds)"
echo "PASS ($((SECONDS - t_start)) s)"
