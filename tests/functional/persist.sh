#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# The log store end to end: keymapd (one worker, four shards, net_tap in a private network
# namespace) with store.driver=log, checked with persist_client, keymap-cli and keymapctl:
#   a. a data directory keymapd cannot use (missing, a file, read-only, full): exit 1, why;
#   b. kill -9 during a sync PUT/DEL load, 20 times: after each restart every acknowledged
#      write is there (value and version), deleted keys stay deleted, the key count is exact;
#   c. damaged logs: a record with bad data is skipped (its key answers DAMAGED, not its
#      previous value), an incomplete tail is cut; the rest is served, new writes survive
#      restarts;
#   d. model-based random operations across a SIGTERM and a kill -9 restart;
#   e. the cold tier: shards to cold segments and back, writes and deletes on cold shards
#      across a crash, compaction of a hot and of a cold shard, prefetch;
#   f. durability none / async / sync: counters, clean restarts keep the data;
#   g. a full disk: the failed write is refused and rolled back, reads go on, writes work
#      again once there is room, a restart replays every acknowledged write.
# d runs last: the longest random part, a failure it finds leaves the others' results shown.
# Removes the namespace, the processes, mounts and /var/run/dpdk/<prefix> even when it
# fails; every command is bounded by a timeout.
#
# usage: persist.sh KEYMAPD KEYMAPCTL PERSIST_CLIENT KEYMAP_CLI
#        (exit 77 = skipped: needs root, ip and python3)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
pclient=$3
cli=$4
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null || ! command -v python3 >/dev/null; then
	echo "SKIP: needs root, iproute2 and python3 (network namespace, DPDK vdevs)"
	exit 77
fi

tag=kmps
# shellcheck source=logstore_env.sh
. "$(dirname "$0")/logstore_env.sh"
pc=(ip netns exec "$ns" "$pclient")
kcli=(ip netns exec "$ns" "$cli" -h "$server")
timeout 10 ip netns add "$ns"
"${in_ns[@]}" ip link set lo up

# ---- a. A data directory keymapd cannot use: refused before EAL starts (no namespace
# needed; the EAL arguments only matter if it wrongly went on).
section "a. unusable data directories"
kd_dirs() { # DIR COLD_DIR: the command line, as array kd
	kd=("$keymapd" -o store.driver=log -o "store.dir=$1" -o "store.cold_dir=$2"
		-o shards.count=4 -o metrics.port=0 -- "${eal[@]}" --file-prefix "$prefix-a"
		--vdev net_null0)
}
mkdir -p "$tmp/a/ok/cold" "$tmp/a/ro/cold"
kd_dirs "$tmp/a/nosuch" "$tmp/a/ok/cold"
expect 1 "dir $tmp/a/nosuch .*No such file or directory" "${kd[@]}"
kd_dirs "$tmp/a/ok" "$tmp/a/ok/nosuch"
expect 1 "cold_dir $tmp/a/ok/nosuch: No such file or directory" "${kd[@]}"
: >"$tmp/a/file"
kd_dirs "$tmp/a/file" "$tmp/a/ok/cold"
expect 1 "dir $tmp/a/file .*Not a directory" "${kd[@]}"
mount --bind "$tmp/a/ro" "$tmp/a/ro"
mounts="$tmp/a/ro $mounts"
mount -o remount,bind,ro "$tmp/a/ro"
kd_dirs "$tmp/a/ro" "$tmp/a/ro/cold"
expect 1 "dir $tmp/a/ro .*Read-only file system" "${kd[@]}"
kd_dirs "$tmp/a/ok" "$tmp/a/ro/cold"
expect 1 "cold_dir $tmp/a/ro/cold: Read-only file system" "${kd[@]}"
# Full: less than the 1 MiB keymapd needs to start.
mkdir -p "$tmp/a/full"
mount -t tmpfs -o size=512k kmps-full "$tmp/a/full"
mounts="$tmp/a/full $mounts"
mkdir -p "$tmp/a/full/cold"
kd_dirs "$tmp/a/full" "$tmp/a/full/cold"
expect 1 "dir $tmp/a/full .*No space left on device" "${kd[@]}"
unmount_all
[ -z "$(ls -A "$tmp/a/ok")" ] || [ "$(ls -A "$tmp/a/ok")" = cold ] ||
	fail "a refused start left files in $tmp/a/ok: $(ls -A "$tmp/a/ok")"
rm -rf "/var/run/dpdk/$prefix-a"

# ---- b. kill -9 during a sync load, 20 rounds. One ACKFILE for all rounds (a seed, so a
# key prefix, per round): every round checks the keys of all rounds before it too.
section "b. crash durability: kill -9 under a sync PUT/DEL load, 20 rounds"
D=$tmp/crash
mkdir -p "$D/cold"
ack=$tmp/ack
start_server "$D"
RANDOM=$id # the kill delays; the load of round N has seed N
echo "   kill delays seeded with $id"
for round in $(seq 20); do
	ms=$((RANDOM % 1201 + 300))
	delay=$((ms / 1000)).$(printf %03d $((ms % 1000)))
	timeout -k 2 60 "${pc[@]}" load -h "$server" -n 1000000 -t 30 -o "$ack" -s "$round" \
		>"$tmp/load.out" 2>&1 &
	load_pid=$!
	sleep "$delay"
	if ! kill -0 "$load_pid" 2>/dev/null; then
		rc=0
		wait "$load_pid" || rc=$?
		load_pid=
		cat "$tmp/load.out"
		fail "round $round: the load stopped by itself after less than $delay s (exit $rc)"
	fi
	kill9_server
	kill_load
	start_server "$D"
	read -r keys recs secs skipped torn <<<"$(store_line)"
	[ -n "${torn:-}" ] || fail "round $round: no store line in keymapd's log"
	[ "$skipped" -eq 0 ] || fail "round $round: $skipped damaged records after a kill -9"
	expect 0 "^verify: .* all found" "${pc[@]}" verify -h "$server" -i "$ack" -t 60
	v=$(grep '^verify:' "$tmp/out")
	read -r _ vkeys _ _ vacked _ _ _ _ vpresent _ <<<"$v"
	[ "$keys" -eq "$vpresent" ] ||
		fail "round $round: keymapd replayed $keys keys, the acknowledged state has $vpresent"
	# Every write left one record: the acknowledged ones and those in flight that happened.
	vapplied=$(echo "$v" | sed -n 's/.* \([0-9]*\) writes applied.*/\1/p')
	[ "$recs" -eq "$vapplied" ] ||
		fail "round $round: keymapd replayed $recs records, $vapplied writes were applied"
	echo "   round $round: load ${delay} s, $vacked acked writes so far, $vkeys keys" \
		"($vpresent present); replay: $keys keys from $recs records in $secs s," \
		"$torn torn bytes; verify: $(echo "$v" | grep -o '[0-9]* op(s) in flight.*')"
done
grep -q . "$ack" || fail "no write was acknowledged in 20 rounds"
[ "$vacked" -ge 200 ] || fail "only $vacked writes acknowledged in 20 rounds: the load barely ran"
ok "20 kill -9 rounds: $vacked acknowledged writes over $vkeys keys, all found after every restart"

# ---- c. Damaged logs: one record with bad data in the middle of one shard's log, an
# incomplete record at the end of another's.
section "c. damaged logs"
restart_clean "$D"
expect 0 "^verify: .* all found" "${pc[@]}" verify -h "$server" -i "$ack"
stop_server || fail "keymapd exit $? on SIGTERM"
# Parse the logs (km_record.h): pick, in the longest log, a PUT in the middle that is the
# last record of its key, and find what the key had before it; damage one byte of its
# value (the data CRC fails, the header is intact). Append the first 30 bytes of a record
# to another log: a header promising more than the file holds.
read -r shard_a key_a prev_a shard_b size_b <<<"$(python3 - "$D" <<'EOF'
import glob, os, re, struct, sys
d = sys.argv[1]
logs = {}
for p in glob.glob(d + "/shard-*.log"):
    sid = int(re.search(r"shard-(\d+)\.log$", p).group(1))
    b = open(p, "rb").read()
    recs, off = [], 0
    while off + 24 <= len(b):
        magic, typ, klen, vlen, ver = struct.unpack_from("<HBBIQ", b, off + 8)
        assert magic == 0x4B52, (p, off)
        size = (24 + klen + vlen + 7) & ~7
        recs.append((off, typ, klen, vlen, ver, b[off + 24:off + 24 + klen]))
        off += size
    assert off == len(b), (p, off, len(b))
    assert recs and recs[0][1] == 3, p
    logs[sid] = recs
a = max(logs, key=lambda s: len(logs[s]))
recs = logs[a]
last = {}
for i, r in enumerate(recs[1:], 1):
    last[r[5]] = i
cands = [i for i, r in enumerate(recs) if r[1] == 1 and r[3] >= 8 and last[r[5]] == i]
# Prefer keys that were written before (so the key falls back to an earlier value).
def prev(i):
    key = recs[i][5]
    for j in range(i - 1, 0, -1):
        if recs[j][5] == key:
            return recs[j][4] if recs[j][1] == 1 else 0
    return 0
with_prev = [i for i in cands if prev(i)]
pool = with_prev or cands
i = pool[len(pool) // 2]
off, typ, klen, vlen, ver, key = recs[i]
with open(d + "/shard-%d.log" % a, "r+b") as f:
    pos = off + 24 + klen + vlen // 2
    f.seek(pos)
    c = f.read(1)
    f.seek(pos)
    f.write(bytes([c[0] ^ 0x01]))
b = min((s for s in logs if s != a and len(logs[s]) > 1), key=lambda s: len(logs[s]))
p = d + "/shard-%d.log" % b
size = os.path.getsize(p)
first = logs[b][1][0]
with open(p, "r+b") as f:
    f.seek(first)
    piece = f.read(30)
    f.seek(0, 2)
    f.write(piece)
print(a, key.decode(), prev(i), b, size)
EOF
)" || fail "could not damage the logs"
[ -n "${size_b:-}" ] || fail "could not damage the logs"
prev_txt=$prev_a
[ "$prev_a" -ne 0 ] || prev_txt=none
echo "   shard $shard_a: flipped a byte in the last record of $key_a (previous version" \
	"$prev_txt); shard $shard_b: 30 bytes of a record appended ($size_b bytes before)"
start_server "$D"
read -r keys recs secs skipped torn <<<"$(store_line)"
[ "$skipped" -eq 1 ] && [ "$torn" -eq 30 ] ||
	fail "start-up after the damage: $skipped damaged records skipped, $torn torn bytes (want 1, 30)"
# shard_warning ID SKIPPED TORN: keymapd's start-up warning for shard ID says so.
shard_warning() {
	local re=" keymap.main: shard $1: $2 damaged record\(s\) skipped \(CRC\), $3 byte\(s\)"

	grep -Eq "$re of an incomplete tail dropped; [0-9]+ keys served$" "$log"
}
shard_warning "$shard_a" 1 0 || fail "no warning for shard $shard_a's damaged record"
shard_warning "$shard_b" 0 30 || fail "no warning for shard $shard_b's torn tail"
ok "start-up reports 1 damaged record (shard $shard_a) and 30 torn bytes (shard $shard_b)"
# Cut back, then a META record of 72 bytes reserving the versions of this run.
[ "$(stat -c %s "$D/shard-$shard_b.log")" -eq $((size_b + 72)) ] ||
	fail "shard-$shard_b.log is $(stat -c %s "$D/shard-$shard_b.log") bytes, not cut back to $size_b (+ 72)"
ok "the incomplete tail was cut: shard-$shard_b.log back to $size_b bytes"
expect 0 "^verify: .* all found" "${pc[@]}" verify -h "$server" -i "$ack" -x "$key_a"
# Not its version $prev_txt: an older value must not pass for the current one.
grep -q "^verify: exempt $key_a is damaged$" "$tmp/out" ||
	fail "$key_a should answer DAMAGED: $(grep exempt "$tmp/out")"
ok "every other key intact; $key_a: $(grep exempt "$tmp/out" | cut -d' ' -f4-)"
vpresent=$(sed -n 's/^verify: .* all found: \([0-9]*\) present.*/\1/p' "$tmp/out")
[ "$keys" -eq "$vpresent" ] || fail "keymapd replayed $keys keys, $vpresent expected"
fresh_stats
check "st['store']['skipped_crc'] == 1 and st['store']['torn_bytes'] == 30 and
	st['store']['damaged_keys'] == 1 and st['total']['store_keys'] == $vpresent" \
	"stats: store.skipped_crc 1, torn_bytes 30, damaged_keys 1, $vpresent keys"
# Writes after the repair, and two more restarts.
expect 0 "^load: .*stopped: op limit" "${pc[@]}" load -h "$server" -n 500 -t 60 -o "$ack" -s 21
restart_clean "$D"
expect 0 "^verify: .* all found" "${pc[@]}" verify -h "$server" -i "$ack" -x "$key_a"
restart_kill9 "$D"
read -r keys recs secs skipped torn <<<"$(store_line)"
[ "$skipped" -eq 1 ] && [ "$torn" -eq 0 ] ||
	fail "second start-up: $skipped damaged records, $torn torn bytes (want 1 and 0)"
expect 0 "^verify: .* all found" "${pc[@]}" verify -h "$server" -i "$ack" -x "$key_a"
stop_server || fail "keymapd exit $? on SIGTERM"

# ---- e. The cold tier.
section "e. cold tier, compaction, prefetch"
E=$tmp/cold
mkdir -p "$E/cold"
start_server "$E"
n=2000
expect 0 "^fill: 2000 of 2000 keys written" "${pc[@]}" fill -h "$server" -n $n -p c -v 100
cj sh shards
ids=$(jx "' '.join(map(str, sh['id']))")
for s in $ids; do
	expect 0 '"done": "cold"' "${ctl[@]}" --json raw "/keymap/tier,$s,cold"
done
fresh_stats
check "sh['tier'] == ['cold'] * 4 and sum(sh['keys']) == $n and
	st['store']['cold_shards'] == 4 and st['total']['to_cold'] == 4" "every shard cold"
for s in $ids; do
	[ -s "$E/cold/shard-$s.seg" ] || fail "no segment $E/cold/shard-$s.seg"
	sz=$(stat -c %s "$E/shard-$s.log")
	[ "$sz" -le 256 ] || fail "shard-$s.log still $sz bytes after going cold"
done
ok "segments in $E/cold, logs down to $(stat -c %s "$E/shard-${ids%% *}.log") bytes"
disk0=$(jx "st['store']['disk_reads']")
expect 0 "^check: 2000 of 2000 keys read back intact" "${pc[@]}" check -h "$server" -n $n \
	-p c -v 100
fresh_stats
check "st['store']['disk_reads'] > $disk0 and st['store']['disk_read_errors'] == 0" \
	"values read from the segments"
# Writes into cold shards (they go to the logs), a crash, then the cache is cold.
expect 0 "^fill: 100 of 100 keys written" "${pc[@]}" fill -h "$server" -n 100 -p c -v 100 -g 1
expect 0 "^drop: 50 of 50 keys deleted" "${pc[@]}" drop -h "$server" -f 100 -n 50 -p c
restart_kill9 "$E"
read -r keys _ <<<"$(store_line)"
[ "$keys" -eq 1950 ] || fail "restart with cold shards: $keys keys, expected 1950"
# Prefetch into the empty cache, then read it.
expect 0 '"prefetch": "queued"' "${ctl[@]}" --json raw "/keymap/prefetch,c500"
sleep 0.2 # the read it started completes (a GET meanwhile would join that read)
used=0
for _ in $(seq 20); do
	"${kcli[@]}" get c500 >"$tmp/c500" || fail "keymap-cli get c500 failed"
	cj st stats
	used=$(jx "st['cache']['prefetched_used']")
	[ "$used" -ge 1 ] && break
	sleep 0.1
done
[ "$used" -ge 1 ] || fail "GET after /keymap/prefetch: cache.prefetched_used is $used"
ok "prefetch of c500 used by the GET that followed (prefetched_used $used)"
check "st['total']['prefetches'] == 1 and st['total']['prefetch_started'] == 1 and
	st['total']['cmd_drops'] == 0" "the worker's completion of the prefetch counted"
# Predictive prefetch is on with the log store, and says what it did.
expect 0 '^prefetch   on, models succ,coacc,entity,stride,template' "${ctl[@]}" prefetch
expect 0 '"active": 1' "${ctl[@]}" --json prefetch
cj pf prefetch
check "pf['workers']['issued'] >= 1 and 'template' in pf['per_model'] and
	st['prefetch']['active'] == 1" "prefetch figures in keymapctl prefetch and stats"
expect 0 "^check: 100 of 100 keys read back intact" "${pc[@]}" check -h "$server" -n 100 \
	-p c -v 100 -g 1
expect 0 "^check: 50 of 50 keys absent" "${pc[@]}" check -h "$server" -f 100 -n 50 -p c -a
expect 0 "^check: 1850 of 1850 keys read back intact" "${pc[@]}" check -h "$server" \
	-f 150 -n 1850 -p c -v 100
fresh_stats
check "sh['tier'] == ['cold'] * 4 and sum(sh['keys']) == 1950" "still cold after kill -9"
# Back to hot.
hot=${ids%% *}
expect 0 '"done": "hot"' "${ctl[@]}" --json raw "/keymap/tier,$hot,hot"
[ ! -e "$E/cold/shard-$hot.seg" ] || fail "shard $hot is hot again but its segment is still there"
expect 2 "already hot" "${ctl[@]}" raw "/keymap/tier,$hot,hot"
fresh_stats
check "sh['tier'][sh['id'].index($hot)] == 'hot' and st['store']['cold_shards'] == 3" \
	"shard $hot hot, its segment removed"
expect 0 "^check: 1850 of 1850 keys read back intact" "${pc[@]}" check -h "$server" \
	-f 150 -n 1850 -p c -v 100
expect 0 "^check: 100 of 100 keys read back intact" "${pc[@]}" check -h "$server" -n 100 \
	-p c -v 100 -g 1
# Compaction: every key rewritten three times, then compact the hot shard and a cold one.
for g in 2 3 4; do
	expect 0 "^fill: 2000 of 2000 keys written" "${pc[@]}" fill -h "$server" -n $n -p c \
		-v 100 -g $g
done
# Keys written last and then deleted: their versions are the highest of their shards, and
# compaction drops their tombstones. Written again after a restart they must still get
# higher versions (no ABA for CAS: protocol.md, "Versions").
declare -A zver
for i in $(seq 0 31); do
	out=$("${kcli[@]}" put "z$i" "before") || fail "keymap-cli put z$i failed"
	[[ $out =~ ^OK\ version\ ([0-9]+)$ ]] || fail "keymap-cli put z$i printed '$out'"
	zver[$i]=${BASH_REMATCH[1]}
done
for i in $(seq 0 31); do
	"${kcli[@]}" del "z$i" >/dev/null || fail "keymap-cli del z$i failed"
done
cold1=$(echo "$ids" | cut -d' ' -f2)
fresh_stats
hot_before=$(stat -c %s "$E/shard-$hot.log")
cold_before=$(stat -c %s "$E/shard-$cold1.log")
read -r fb0 db0 <<<"$(jx "st['store']['file_bytes'], st['store']['dead_bytes']")"
expect 0 '"done": "compacted"' "${ctl[@]}" --json raw "/keymap/compact,$hot"
expect 0 '"done": "compacted"' "${ctl[@]}" --json raw "/keymap/compact,$cold1"
hot_after=$(stat -c %s "$E/shard-$hot.log")
cold_after=$(stat -c %s "$E/shard-$cold1.log")
fresh_stats
read -r fb1 db1 <<<"$(jx "st['store']['file_bytes'], st['store']['dead_bytes']")"
[ "$hot_after" -lt $((hot_before / 2)) ] ||
	fail "compact $hot: shard-$hot.log $hot_before -> $hot_after bytes, expected under half"
[ "$cold_after" -le 256 ] ||
	fail "compact $cold1 (cold): its log $cold_before -> $cold_after bytes, not folded" \
		"into the segment"
[ "$fb1" -lt "$fb0" ] && [ "$db1" -lt "$db0" ] ||
	fail "compaction: file_bytes $fb0 -> $fb1, dead_bytes $db0 -> $db1 (both should shrink)"
check "sh['tier'][sh['id'].index($hot)] == 'hot' and
	sh['tier'][sh['id'].index($cold1)] == 'cold' and st['total']['compactions'] == 2" \
	"compaction keeps the tiers"
ok "compaction: shard-$hot.log $hot_before -> $hot_after bytes, shard-$cold1.log" \
	"$cold_before -> $cold_after; store file_bytes $fb0 -> $fb1, dead_bytes $db0 -> $db1"
expect 0 "^check: 2000 of 2000 keys read back intact" "${pc[@]}" check -h "$server" -n $n \
	-p c -v 100 -g 4
restart_kill9 "$E"
expect 0 "^check: 2000 of 2000 keys read back intact" "${pc[@]}" check -h "$server" -n $n \
	-p c -v 100 -g 4
expect 3 "not found" "${kcli[@]}" get z0
for i in $(seq 0 31); do
	out=$("${kcli[@]}" put "z$i" "after") || fail "keymap-cli put z$i failed"
	[[ $out =~ ^OK\ version\ ([0-9]+)$ ]] || fail "keymap-cli put z$i printed '$out'"
	[ "${BASH_REMATCH[1]}" -gt "${zver[$i]}" ] ||
		fail "z$i: version ${zver[$i]}, deleted, compacted, restarted, written again:" \
			"version ${BASH_REMATCH[1]} (must be higher)"
done
ok "32 keys deleted before compaction and a kill -9 come back at higher versions"
fresh_stats
check "sum(sh['keys']) == $n + 32 and st['store']['cold_shards'] == 3" \
	"after compaction and kill -9"
stop_server || fail "keymapd exit $? on SIGTERM"

# ---- f. Durability modes. none and async may lose what was not synced at a crash: only
# a clean restart is checked there.
section "f. durability modes"
for mode in none async sync; do
	F=$tmp/dur-$mode
	mkdir -p "$F/cold"
	start_server "$F" -o "store.durability=$mode"
	for i in 1 2 3; do
		expect 0 "^OK version" "${kcli[@]}" put "dur:$i" "$mode-value-$i"
	done
	expect 0 "" "${kcli[@]}" del dur:3
	expect 0 "^$mode-value-1$" "${kcli[@]}" get dur:1
	sleep 0.1 # async: a sync interval (10 ms) passed
	fresh_stats
	case $mode in
	none) want="st['total']['write_deferred'] == 0 and st['store']['fsyncs'] == 0" ;;
	async) want="st['total']['write_deferred'] == 0 and st['store']['fsyncs'] > 0" ;;
	sync) want="st['total']['write_deferred'] >= 4 and st['store']['fsyncs'] > 0" ;;
	esac
	check "st['store']['durability'] == '$mode' and st['store']['write_batches'] > 0 and
		$want" "$mode: $(jx "'write_deferred %d, write_batches %d, fsyncs %d' % (
		st['total']['write_deferred'], st['store']['write_batches'], st['store']['fsyncs'])")"
	restart_clean "$F" -o "store.durability=$mode"
	grep -q "torn tail bytes dropped), $mode durability" "$log" ||
		fail "$mode: keymapd does not log $mode durability"
	expect 0 "^$mode-value-1$" "${kcli[@]}" get dur:1
	expect 0 "^$mode-value-2$" "${kcli[@]}" get dur:2
	expect 3 "not found" "${kcli[@]}" get dur:3
	stop_server || fail "keymapd exit $? on SIGTERM"
done

# ---- g. A full disk: a 2 MiB tmpfs.
section "g. disk full"
G=$tmp/full
mkdir -p "$G"
mount -t tmpfs -o size=2m kmpersist "$G"
mounts="$G $mounts"
mkdir "$G/cold"
start_server "$G"
expect 0 "^fill: stopped at g[0-9]+: (server error|server busy), .*acked [0-9]+$" \
	"${pc[@]}" fill -h "$server" -n 5000 -p g -v 1000 -k -t 60
cat "$tmp/out"
acked=$(sed -n 's/.* acked \([0-9]*\)$/\1/p' "$tmp/out")
[ "$acked" -ge 1000 ] || fail "the disk was full after $acked values of 1000 bytes in 2 MiB"
expect 0 "^check: $acked of $acked keys read back intact" "${pc[@]}" check -h "$server" \
	-n "$acked" -p g -v 1000
expect 0 "^check: 1 of 1 keys absent" "${pc[@]}" check -h "$server" -f "$acked" -n 1 -p g -a
fresh_stats
read -r werr wfail <<<"$(jx "st['store']['write_errors'], st['total']['write_failed']")"
check "st['store']['write_errors'] >= 1 and st['total']['write_failed'] >= 1 and
	st['total']['store_keys'] == $acked" \
	"store.write_errors $werr, total.write_failed $wfail, the refused write rolled back"
mount -o remount,size=8m "$G"
expect 0 "^fill: 200 of 200 keys written" "${pc[@]}" fill -h "$server" -n 200 -p h -v 1000
expect 0 "^check: $acked of $acked keys read back intact" "${pc[@]}" check -h "$server" \
	-n "$acked" -p g -v 1000
restart_kill9 "$G"
read -r keys recs _ skipped torn <<<"$(store_line)"
[ "$keys" -eq $((acked + 200)) ] ||
	fail "after the full disk: $keys keys replayed, $((acked + 200)) acknowledged"
expect 0 "^check: $acked of $acked keys read back intact" "${pc[@]}" check -h "$server" \
	-n "$acked" -p g -v 1000
expect 0 "^check: 200 of 200 keys read back intact" "${pc[@]}" check -h "$server" -n 200 \
	-p h -v 1000
expect 0 "^check: 1 of 1 keys absent" "${pc[@]}" check -h "$server" -f "$acked" -n 1 -p g -a
ok "full disk: $acked acknowledged before the refusal, all replayed ($recs records," \
	"$skipped damaged, $torn torn bytes)"
stop_server || fail "keymapd exit $? on SIGTERM"
unmount_all

# ---- d. Model-based: every reply checked, the model carried across restarts.
section "d. model-based operations across restarts"
M=$tmp/model
mkdir -p "$M/cold"
start_server "$M"
expect 0 "^model: .* 0 mismatches" "${pc[@]}" model -h "$server" -s "$tmp/model.state" \
	-n 8000 -t 60 -seed 1
grep '^model:' "$tmp/out"
restart_clean "$M"
expect 0 "^model: .*state loaded, 0 mismatches" "${pc[@]}" model -h "$server" \
	-s "$tmp/model.state" -n 8000 -t 60 -seed 2
grep '^model:' "$tmp/out"
restart_kill9 "$M"
expect 0 "^model: .*state loaded, 0 mismatches" "${pc[@]}" model -h "$server" \
	-s "$tmp/model.state" -n 8000 -t 60 -seed 3
grep '^model:' "$tmp/out"
restart_kill9 "$M"
expect 0 "^model: .*state loaded, 0 mismatches" "${pc[@]}" model -h "$server" \
	-s "$tmp/model.state" -n 200 -t 60 -seed 4
stop_server || fail "keymapd exit $? on SIGTERM"

echo "summary: $checks checks; $vacked writes acknowledged across 20 kill -9 rounds"
echo "PASS ($((SECONDS - t_start)) s)"
