#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# keymapctl against a running keymapd (two workers, four shards, net_tap in a private
# network namespace):
#   g. configuration errors at start-up (before anything runs): file, line, reason, exit 1;
#   a. status and stats, counters moving with client traffic;
#   b. runtime tunables, log level, the [security] allow-list (denied clients time out);
#   c. operator split / move / merge while reshard_client checks every reply against its
#      model: no error, no lost key, exactly one new epoch per command, exact counters;
#   d. every refusal: exit code, message on stderr, shard map and tunables unchanged;
#   e. the Prometheus endpoint, through keymapctl and prom_check.py;
#   f. the /keymap commands through DPDK's own dpdk-telemetry.py, when installed;
#   h. automatic splits of hot shards under load, merges of cold buddies down to the floor.
# Removes the namespace, the processes and /var/run/dpdk/<prefix> even when it fails;
# every command is bounded by a timeout.
#
# usage: control.sh KEYMAPD KEYMAPCTL RESHARD_CLIENT KEYMAP_CLI
#        (exit 77 = skipped: needs root and ip)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
rclient=$3
cli=$4
here=$(cd "$(dirname "$0")" && pwd)
tag=kmctl
# shellcheck source=lib.sh
. "$here/lib.sh"
metrics=127.0.0.1:9470
hang_pid=
# Main lcore (control) plus two workers; on one CPU they all share it.
if [ "$(nproc)" -gt 1 ]; then lcores="0@0,1@0,2@1"; else lcores="0@0,1@0,2@0"; fi
extra_cleanup() {
	[ -z "$hang_pid" ] || kill -KILL "$hang_pid" 2>/dev/null || true
}

# wait_stat COUNTER MIN: total.COUNTER of stats reaches MIN within 3 s (a worker counts a
# request after it replied).
wait_stat() {
	local v=
	for _ in $(seq 30); do
		cj stats stats
		v=$(jx "stats['total']['$1']")
		[ "$v" -ge "$2" ] && { checks=$((checks + 1)); return 0; }
		sleep 0.1
	done
	fail "stats total.$1 is $v, expected at least $2"
}

# state: epoch, shards and owners, and the tunables refusals try to change. From the
# tables (no JSON parsing: it runs twice per refusal).
state() {
	# The shard table only: the workers' live load follows it after a blank line.
	"${ctl[@]}" shards | awk 'NR > 3 && NF == 0 { exit } NR == 1 || NR > 3 { print $1, $2, $3, $4 }' ||
		fail "keymapctl shards failed"
	for k in workers.burst security.allow log.level net.udp_port shards.split_rate; do
		"${ctl[@]}" config "$k" || fail "keymapctl config $k failed"
	done
}

# refuse CODE PATTERN ARGS...: keymapctl ARGS fails as expected and changes nothing.
refuse() {
	local want=$1 pattern=$2 before after
	shift 2
	before=$(state)
	expect "$want" "$pattern" "${ctl[@]}" "$@"
	after=$(state)
	[ "$after" = "$before" ] || fail "keymapctl $* changed the state: $before -> $after"
}

# ---- g. Configuration errors: file:line, reason, exit 1. With --print-config, a file that
# loads by mistake prints and exits: EAL never runs here.
section "g. configuration errors at start-up"
printf '[shards]\ncount = 4\n; the same key again\ncount = 8\n' >"$tmp/dup.conf"
expect 1 "dup\.conf:4: \[shards\] count = '8': duplicate key \(first at line 2\)" \
	"$keymapd" -c "$tmp/dup.conf" --print-config
printf '[net]\nip = 198.51.100.2\n\n[shards]\nsplitrate = 5\n' >"$tmp/unknown.conf"
expect 1 "unknown\.conf:5: \[shards\] splitrate = '5': unknown key \(keys of \[shards\]" \
	"$keymapd" -c "$tmp/unknown.conf" --print-config
printf '[shards]\ncount = 3\n' >"$tmp/pow2.conf"
expect 1 "pow2\.conf:2: .*not a power of two" "$keymapd" -c "$tmp/pow2.conf" --print-config
printf '[workers]\nburst = 100\n' >"$tmp/range.conf"
expect 1 "range\.conf:2: .*out of range 1\.\.64" "$keymapd" -c "$tmp/range.conf" --print-config
printf '[metrics]\nip = 127.0.0.300\n' >"$tmp/ip.conf"
expect 1 "ip\.conf:2: .*not an IPv4 address" "$keymapd" -c "$tmp/ip.conf" --print-config
printf '[nosuch]\nkey = 1\n' >"$tmp/section.conf"
expect 1 "section\.conf:1: \[nosuch\]: unknown section" "$keymapd" -c "$tmp/section.conf" \
	--print-config
printf '[shards]\ncount = 4\n[shards]\nhysteresis = 2\n' >"$tmp/dupsec.conf"
expect 1 "dupsec\.conf:3: \[shards\]: duplicate section \(first at line 1\)" \
	"$keymapd" -c "$tmp/dupsec.conf" --print-config
expect 1 "no-such\.conf: cannot open: No such file" "$keymapd" -c "$tmp/no-such.conf" \
	--print-config
expect 1 "net\.udp_port=x.*not a non-negative integer" "$keymapd" -o net.udp_port=x --print-config
# The configuration served below; what --print-config prints loads back as itself.
cat >"$tmp/keymapd.conf" <<EOF
; control.sh: two workers, four shards, metrics inside the namespace
[net]
ip = $server
udp_port = 7070
[shards]
count = 4
; the operator alone re-shards: the counters and epochs below are exact
split_rate = 0
merge_rate = 0
balance_pct = 0
[metrics]
ip = ${metrics%:*}
port = ${metrics#*:}
[log]
level = info
EOF
expect 0 "^count = 4$" "$keymapd" -c "$tmp/keymapd.conf" --print-config
cp "$tmp/out" "$tmp/printed.conf"
expect 0 "" "$keymapd" -c "$tmp/printed.conf" --print-config
cmp -s "$tmp/out" "$tmp/printed.conf" || fail "--print-config output does not load back as itself"

section "starting keymapd"
start_keymapd "$lcores" -c "$tmp/keymapd.conf"
kcli=("${in_ns[@]}" "$cli" -h "$server")

section "a. status and stats"
expect 0 "^workers +2$" "${ctl[@]}" status
grep -Eq "^metrics +http://$metrics/metrics$" "$tmp/out" || fail "status: metrics address"
cj status status
check "status['epoch'] >= 1 and status['workers'] == 2 and status['shards'] == 4 and
	len(status['worker_lcores']) == 2 and status['metrics'] == '$metrics' and
	status['port']['ip'] == '$server' and status['port']['udp_base'] == 7070" "status"
epoch0=$(jx "status['epoch']")
cj stats0 stats
check "stats0['workers'] == 2 and 'w0' in stats0 and 'w1' in stats0 and
	{'req_put', 'req_get', 'requests', 'drop_denied', 'splits'} <= set(stats0['total'])" "stats"
read -r put0 get0 req0 <<<"$(jx "tuple(stats0['total'][k] for k in ('req_put', 'req_get',
	'requests'))")"
expect 0 "" "${kcli[@]}" put ctl:greeting hello
expect 0 "^hello$" "${kcli[@]}" get ctl:greeting
expect 3 "not found" "${kcli[@]}" get ctl:absent
wait_stat req_put $((put0 + 1))
wait_stat req_get $((get0 + 2))
wait_stat requests $((req0 + 3))
expect 0 "^req_put " "${ctl[@]}" stats
expect 0 "" "${ctl[@]}" stats --watch 2
[ "$(grep -c '^req_put ' "$tmp/out")" -eq 2 ] || fail "stats --watch 2: expected 2 samples"

section "b. runtime tunables and the allow-list"
expect 0 "^workers\.burst: 32 -> 16$" "${ctl[@]}" set workers.burst 16
expect 0 "^16$" "${ctl[@]}" config workers.burst
cj cfg config workers.burst
check "cfg['value'] == 16 and cfg['runtime'] == 1" "config workers.burst"
cj setr set shards.split_rate 0
check "setr == {'section': 'shards', 'key': 'split_rate', 'old': '0', 'value': '0'}" "set"
expect 0 "^control\.stats_interval_s: 0 -> 0$" "${ctl[@]}" set control.stats_interval_s=0
expect 0 "^log\.level: info -> debug$" "${ctl[@]}" set log.level debug
expect 0 "^debug$" "${ctl[@]}" config log.level
expect 0 "^log level: info$" "${ctl[@]}" log-level info
cj ll log-level
cj config config
check "ll['level'] == 'info' and config['shards']['count'] == 4 and
	config['workers']['burst'] == 16 and 'workers.burst' in config['runtime'] and
	'security.allow' in config['runtime'] and 'net.udp_port' not in config['runtime']" "config"
# The allow-list: a network that holds the client is served, another is dropped unanswered.
expect 0 "" "${ctl[@]}" set security.allow 198.51.100.0/24
expect 0 "^hello$" "${kcli[@]}" get ctl:greeting
cj stats stats
denied0=$(jx "stats['total']['drop_denied']")
expect 0 "^security\.allow: 198\.51\.100\.0/24 -> 10\.0\.0\.0/8$" \
	"${ctl[@]}" set security.allow 10.0.0.0/8
expect 2 "no server answered" "${kcli[@]}" -t 100 -r 1 get ctl:greeting
wait_stat drop_denied $((denied0 + 1))
expect 0 "" "${ctl[@]}" set security.allow 0.0.0.0/0
expect 0 "^hello$" "${kcli[@]}" get ctl:greeting

section "c. operator re-sharding under reshard_client"
nsplit=0
nmerge=0
nmove=0
epoch=$epoch0
# reshard EXPR CMD ARGS...: one operator command; its reply (r), status (st) and the shard
# list (sh) all show exactly one new epoch (two for a merge of buddies on two workers: one
# is moved to the other first), and EXPR holds over them.
reshard() {
	local want=$1 ok e1 keys pause steps=1
	shift
	[ "$1" != merge ] || steps=2
	expect 0 "" "${ctl[@]}" --json "$@"
	cp "$tmp/out" "$jdir/r.json"
	cj st status
	cj sh shards
	read -r ok e1 keys pause <<<"$(jx "($epoch < r['epoch'] <= $epoch + $steps and
		r['epoch'] == st['epoch'] == sh['epoch'] and ($want), r['epoch'], r['keys'],
		r['pause_us'])")"
	[ "$ok" = True ] || fail "$*: epoch $epoch -> $e1 (status, shards) or '$want' false:
reply $(cat "$jdir/r.json")
status epoch $(jx "st['epoch']"), shards $(jx "(sh['epoch'], sh['id'], sh['owner'])")"
	checks=$((checks + 1))
	[ "$e1" -eq $((epoch + 1)) ] || nmove=$((nmove + 1))
	epoch=$e1
	case $1 in
	split) nsplit=$((nsplit + 1)) ;;
	merge) nmerge=$((nmerge + 1)) ;;
	move) nmove=$((nmove + 1)) ;;
	esac
	echo "   $* -> epoch $e1, $keys keys, paused $pause us"
	[ -z "$cl_pid" ] || sleep 0.3 # the workload runs on each map for a while
}
# move_away ID: give shard ID to the worker that does not own it (sh is up to date).
move_away() {
	local w
	w=$(jx "own($1)")
	reshard "r['shard'] == $1 and r['from'] == $w and r['to'] == 1 - $w and own($1) == 1 - $w" \
		move "$1" $((1 - w))
}

timeout -k 5 60 ip netns exec "$ns" "$rclient" -h "$server" -n 2000 -d 25 -s 42 --preload -v \
	--stop-file "$tmp/stop" >"$tmp/client.out" 2>&1 &
cl_pid=$!
for _ in $(seq 200); do
	grep -q "^t 1 s" "$tmp/client.out" && break
	kill -0 "$cl_pid" 2>/dev/null || { cat "$tmp/client.out"; fail "reshard_client exited early"; }
	sleep 0.1
done
grep -q "^t 1 s" "$tmp/client.out" || fail "reshard_client made no progress in 20 s"

reshard "r['shard'] == 5 and r['children'] == [10, 11] and len(r['owners']) == 2 and
	{10, 11} <= set(sh['id']) and 5 not in sh['id']" split 5
move_away 10
reshard "r['shard'] == 5 and sorted(r['merged']) == [10, 11] and 5 in sh['id'] and
	not {10, 11} & set(sh['id'])" merge 10
reshard "r['children'] == [8, 9] and {8, 9} <= set(sh['id']) and 4 not in sh['id']" split 4
move_away 6
for round in 1 2 3; do
	reshard "r['children'] == [14, 15] and 7 not in sh['id']" split 7
	move_away 15
	reshard "r['shard'] == 7 and sorted(r['merged']) == [14, 15] and 7 in sh['id']" merge 15
done
check "sorted(sh['id']) == [5, 6, 7, 8, 9] and sh['nb_shards'] == 5" "shards after round $round"

# Give the client a moment to follow the last map (its per-second line has its epoch). It
# refreshes its map only on a MOVED: when its older map still sends every key to the worker
# that owns it now, it stays an epoch or two behind, which is not a fault.
for _ in $(seq 50); do
	grep -q "^t [0-9]* s .* epoch $epoch\$" "$tmp/client.out" && break
	sleep 0.1
done
touch "$tmp/stop"
rc=0
wait "$cl_pid" || rc=$?
cl_pid=
grep -v '^t [0-9]* s ' "$tmp/client.out" || true
[ "$rc" -eq 0 ] || fail "reshard_client exit $rc"
summary=$(grep '^ops ' "$tmp/client.out") || fail "reshard_client printed no summary"
read -r _ cl_ops _ cl_err _ cl_mis _ cl_lost _ cl_refresh _ cl_e0 _ cl_e1 <<<"$summary"
[ "$cl_err" -eq 0 ] && [ "$cl_mis" -eq 0 ] && [ "$cl_lost" -eq 0 ] && [ "$cl_ops" -gt 2000 ] ||
	fail "reshard_client: $summary"
[ "$cl_e0" -eq "$epoch0" ] && [ "$cl_e1" -gt "$epoch0" ] && [ "$cl_e1" -le "$epoch" ] ||
	fail "reshard_client saw epochs $cl_e0..$cl_e1, the map went $epoch0..$epoch"
[ "$cl_refresh" -gt 0 ] || fail "reshard_client never refreshed its map: $summary"
epoch_c=$epoch
present=$(sed -n 's/.* keys_present \([0-9]*\) .*/\1/p' "$tmp/client.out")
checks=$((checks + 1))

# Deleted keys keep their versions through a split and a merge: a key written last in its
# shard (nothing else writes now), deleted, then written again once its shard was split
# (merged) gets a higher version than it ever had (protocol.md, "Versions": no ABA). The
# store of a new shard must start above the old one's last version, not above the
# versions it was loaded with.
kput() { # KEY VALUE: the new version
	local out
	out=$("${kcli[@]}" put "$1" "$2") || fail "keymap-cli put $1 failed"
	[[ $out =~ ^OK\ version\ ([0-9]+)$ ]] || fail "keymap-cli put $1 printed '$out'"
	echo "${BASH_REMATCH[1]}"
}
# keymap-cli --session: a number 0..2^32-1, else a usage error; with one, requests work.
expect 1 "--session 'x': expected a number 0\.\.4294967295" "${kcli[@]}" --session x ping
expect 1 "--session '4294967296'" "${kcli[@]}" --session 4294967296 ping
expect 0 "" "${kcli[@]}" --session 4294967295 put ctl:sess one
expect 0 "^one$" "${kcli[@]}" --session 7 get ctl:sess
expect 0 "" "${kcli[@]}" --session 7 del ctl:sess
# keymap-cli hello and --key: the server answers HELLO; a malformed key is a usage error; a
# key the server does not know is refused (exit 2).
expect 0 "^valid_ms [0-9]+$" "${kcli[@]}" hello
expect 1 "--key: expected ID:HEX" "${kcli[@]}" --key 7:xyz ping
expect 1 "KEYMAP_KEY: expected ID:HEX" env KEYMAP_KEY=7 "${kcli[@]}" ping
expect 2 "authentication failed" "${kcli[@]}" --key 7:000102030405060708090a0b0c0d0e0f \
	put ctl:key v
v1=$(kput ctl:aba one)
expect 0 "" "${kcli[@]}" del ctl:aba
for s in 5 6 7 8 9; do
	reshard "r['children'] == [2 * $s, 2 * $s + 1]" split "$s"
done
v2=$(kput ctl:aba two)
[ "$v2" -gt "$v1" ] ||
	fail "ctl:aba written at version $v1, deleted, written again after a split: version $v2"
expect 0 "" "${kcli[@]}" del ctl:aba
for s in 10 12 14 16 18; do
	reshard "r['shard'] == $s // 2 and sorted(r['merged']) == [$s, $s + 1]" merge "$s"
done
v3=$(kput ctl:aba three)
[ "$v3" -gt "$v2" ] ||
	fail "ctl:aba written at version $v2, deleted, written again after a merge: version $v3"
checks=$((checks + 2))
echo "   ctl:aba versions $v1, deleted, $v2 after splits, deleted, $v3 after merges"
expect 0 "^hello$" "${kcli[@]}" get ctl:greeting
cj sh shards # a fresh sample of every shard, also behind stats' store_keys
cj stats stats
# No automatic re-sharding (split_rate and merge_rate are 0): the counters are exact. The
# shards hold the client's keys, ctl:greeting and ctl:aba, each once.
check "stats['total']['splits'] == $nsplit and stats['total']['merges'] == $nmerge and
	stats['total']['moves'] == $nmove and stats['total']['keys_handed_over'] > 0 and
	stats['total']['reshard_failures'] == 0 and stats['total']['epoch'] == $epoch and
	stats['total']['shards'] == 5 and sorted(sh['id']) == [5, 6, 7, 8, 9]" "control counters"
check "sum(sh['keys']) == $present + 2 == stats['total']['store_keys']" \
	"keys stored after re-sharding (the client's $present, ctl:greeting and ctl:aba)"

section "d. refusals"
# --version, before anything else: the project's version (DPDK's for keymapd), exit 0.
expect 0 '^keymapd [0-9]+\.[0-9]+\.[0-9]+ \(DPDK [0-9.]+\)$' "$keymapd" --version
expect 0 '^keymapctl [0-9]+\.[0-9]+\.[0-9]+$' "$keymapctl" --version
expect 0 '^keymapctl [0-9]+\.[0-9]+\.[0-9]+$' "$keymapctl" -f nosuchprefix --version status
expect 0 '^keymap-cli [0-9]+\.[0-9]+\.[0-9]+$' "$cli" --version
# A second keymapd on the running one's file prefix: refused before EAL, with the pid.
expect 1 "keymap.main: another DPDK process \(pid [0-9]+\) runs with --file-prefix $prefix: stop it" \
	"$keymapd" -- --no-huge -m 256 --no-pci --file-prefix "$prefix" --vdev net_null0 -l 0-1
# Bad usage, found by keymapctl before it connects: exit 1.
refuse 1 "unknown command 'bogus'" bogus
refuse 1 "no command"
refuse 1 "unknown option '--bogus'" --bogus status
refuse 1 "-T takes seconds" -T 0 status
refuse 1 "status takes no argument" status extra
refuse 1 "split takes one shard id" split
refuse 1 "split takes one shard id" split 5 6
refuse 1 "split takes one shard id" split abc
refuse 1 "split takes one shard id" split 0
refuse 1 "merge takes one shard id" merge
refuse 1 "merge takes one shard id" merge 5x
refuse 1 "move takes a shard id" move 5
refuse 1 "move takes a shard id" move 5 x
refuse 1 "move takes a shard id" move 5 1 2
refuse 1 "set takes SECTION.KEY VALUE" set workers.burst
refuse 1 "'burst' is not SECTION.KEY" set burst 16
refuse 1 "config takes at most one" config workers.burst log.level
refuse 1 "raw takes one telemetry request" raw keymap/status
refuse 1 "stats: unknown option '--bogus'" stats --bogus
# The depth limit: split the lowest shard down to depth 24, where one more split is
# refused, then merge it back up.
id=8
while [ "$id" -lt $((1 << 24)) ]; do
	"${ctl[@]}" split "$id" >/dev/null || fail "split $id (down to the depth limit)"
	id=$((id * 2))
	nsplit=$((nsplit + 1))
done
refuse 2 "split: shard $id is at the depth limit \(24\)" split "$id"
while [ "$id" -gt 8 ]; do
	"${ctl[@]}" merge "$id" >/dev/null || fail "merge $id (back from the depth limit)"
	id=$((id / 2))
	nmerge=$((nmerge + 1))
done
cj sh shards
check "sorted(sh['id']) == [5, 6, 7, 8, 9] and sh['epoch'] == $epoch + 42" \
	"21 splits down to depth 24 and 21 merges back"
epoch=$((epoch + 42))
echo "   split 8 down to depth 24 and merged back: epoch $epoch"
# Refused by keymapd: exit 2 and its reason.
owner5=$(jx "own(5)")
refuse 2 "split: no shard 99 in map epoch $epoch" split 99
refuse 2 "merge: no shard 4 in map epoch $epoch" merge 4
refuse 2 "merge: shard 5 and 4 are not buddies: 4 is split further" merge 5
refuse 2 "move: no worker 7 \(workers are 0\.\.1\)" move 5 7
refuse 2 "move: shard 5 is already on worker $owner5" move 5 "$owner5"
refuse 2 "move: no shard 99 in map" move 99 0
refuse 2 "set: unknown tunable 'no\.such'" set no.such 1
refuse 2 "set: .*out of range 1\.\.64" set workers.burst 1000
refuse 2 "set: .*not a non-negative integer" set workers.burst abc
refuse 2 "set: net\.udp_port cannot change while keymapd runs.*restart" set net.udp_port 7080
refuse 2 "set: shards\.count cannot change while keymapd runs" set shards.count 8
refuse 2 "set: .*'300\.0\.0\.0': not an IPv4 address" set security.allow 300.0.0.0/8
refuse 2 "set: .*not one of" set log.level loud
refuse 2 "log-level: .*not one of" log-level loud
refuse 2 "config: unknown tunable 'no\.such'" config no.such
refuse 2 "raw: keymapd does not know /keymap/nonexistent" raw /keymap/nonexistent
# Transport errors: exit 1 and why; keymapd not running: exit 3.
expect 3 "keymapd is not running \(no socket at /var/run/dpdk/nosuch-$id/" \
	"$keymapctl" -f "nosuch-$id" status
expect 3 "keymapd is not running" "$keymapctl" -s "$tmp/no.sock" status
# -l lists the prefixes it can reach; a wrong -f names them.
expect 0 "^$prefix\$" "$keymapctl" -l
expect 3 "DPDK processes here run with --file-prefix .*$prefix" "$keymapctl" -f "nosuch-$id" status
# A socket that takes connections but never says hello: -T bounds the wait.
timeout 60 python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sys.argv[1])
s.listen(4)
time.sleep(60)' "$tmp/hang.sock" &
hang_pid=$!
for _ in $(seq 50); do [ -S "$tmp/hang.sock" ] && break; sleep 0.1; done
t0=$SECONDS
expect 1 "no hello from keymapd within 1 s" "$keymapctl" -s "$tmp/hang.sock" -T 1 status
[ $((SECONDS - t0)) -le 4 ] || fail "keymapctl -T 1 took $((SECONDS - t0)) s"
kill "$hang_pid" 2>/dev/null || true
wait "$hang_pid" 2>/dev/null || true
hang_pid=
cj stats stats
check "stats['total']['reshard_failures'] == 0 and stats['total']['epoch'] == $epoch" \
	"refusals are not failures and change no epoch"
# The counter names docs/keymapctl.md shows in its stats examples' counter tables are
# keymapd's.
doc_names=$(python3 - "$here/../../docs/keymapctl.md" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
sec = s[s.index("### stats ["):]
sec = sec[:sec.index("\n### ")]
names = set()
for block in re.findall(r"```\n\$ keymapctl stats.*?```", sec, re.S):
    table = False  # the counter table: from its "counter" header to a blank line
    for line in block.splitlines():
        if line.startswith("counter "):
            table = True
        elif not line.strip():
            table = False
        elif table and re.match(r"^[a-z_0-9]+\s+\d", line):
            names.add(line.split()[0])
print(" ".join(sorted(names)))
PY
)
[ -n "$doc_names" ] || fail "no counter names found in docs/keymapctl.md"
check "all(n in stats['total'] for n in '$doc_names'.split())" \
	"docs/keymapctl.md's counter names ($doc_names) are keymapd's"

section "e. metrics"
# keymapctl reads the endpoint's address from status; it is inside the namespace.
expect 0 '^keymap_rx_pkts_total\{worker="0"\} [0-9]+$' \
	"${in_ns[@]}" "$keymapctl" -f "$prefix" metrics
expect 0 '^keymap_build_info\{version="[0-9]+\.[0-9]+\.[0-9]+",dpdk="DPDK [0-9.]+"\} 1$' \
	"${in_ns[@]}" "$keymapctl" -f "$prefix" metrics
expect 1 "metrics: cannot connect to 127\.0\.0\.1:1" \
	"${in_ns[@]}" "$keymapctl" -f "$prefix" metrics --metrics-url 127.0.0.1:1
expect 1 "metrics takes only --metrics-url" "${ctl[@]}" metrics extra
if [ -f "$here/prom_check.py" ]; then
	expect 0 "" "${in_ns[@]}" python3 "$here/prom_check.py" --url "http://$metrics/metrics" \
		--require keymap_rx_pkts_total --require keymap_req_put_total --require keymap_build_info \
		--require keymap_request_duration_seconds --require keymap_shard_keys \
		--min keymap_rx_pkts_total "$cl_ops" --min keymap_req_put_total 2000 \
		--min keymap_control_splits_total "$nsplit" \
		--min keymap_control_merges_total "$nmerge" \
		--min keymap_control_moves_total "$nmove" --min keymap_map_epoch "$epoch" \
		--min keymap_workers 2 --min keymap_store_keys $((present + 2))
else
	echo "note: prom_check.py not found next to control.sh, the page format is not checked"
fi

section "f. dpdk-telemetry.py"
if command -v dpdk-telemetry.py >/dev/null; then
	expect 0 "\"/keymap/status\": \{.*\"epoch\": $epoch," \
		dpdk-telemetry.py -f "$prefix" <<<"/keymap/status"
	expect 0 '"/keymap/split"' dpdk-telemetry.py -f "$prefix" <<<"/"
	for c in status stats shards config set split merge move log_level; do
		grep -q "\"/keymap/$c\"" "$tmp/out" || fail "dpdk-telemetry.py: /keymap/$c not listed"
	done
	expect 0 "Give a shard to another worker" dpdk-telemetry.py -f "$prefix" \
		<<<"/help,/keymap/move"
else
	echo "note: dpdk-telemetry.py not installed (package dpdk-dev): part f skipped"
fi

section "h. automatic re-sharding"
# Hot shards split by themselves, cold buddies merge back (never below [shards] count = 4),
# keys intact. Thresholds low enough for reshard_client's load; samples every 200 ms.
cj sh shards
shards_before=$(jx "sh['nb_shards']")
cj stats stats
splits_before=$(jx "stats['total']['auto_splits']")
for kv in shards.sample_ms=200 shards.hysteresis=2 shards.max_count=8 shards.split_rate=20; do
	expect 0 "" "${ctl[@]}" set "$kv"
done
timeout -k 5 40 ip netns exec "$ns" "$rclient" -h "$server" -n 2000 -d 15 -s 7 \
	--preload --stop-file "$tmp/stop2" >"$tmp/client2.out" 2>&1 &
cl_pid=$!
auto=0
for _ in $(seq 100); do
	cj stats stats
	auto=$(jx "stats['total']['auto_splits'] - $splits_before")
	[ "$auto" -ge 2 ] && break
	sleep 0.1
done
[ "$auto" -ge 2 ] || fail "no automatic split within 10 s under load (auto_splits +$auto)"
touch "$tmp/stop2"
rc=0
wait "$cl_pid" || rc=$?
cl_pid=
[ "$rc" -eq 0 ] || { cat "$tmp/client2.out"; fail "reshard_client exit $rc during automatic splits"; }
grep '^ops ' "$tmp/client2.out"
cj sh shards
check "$shards_before < sh['nb_shards'] <= 8" "shard count after automatic splits"
present2=$(sed -n 's/.* keys_present \([0-9]*\) .*/\1/p' "$tmp/client2.out")
echo "   $auto automatic splits: $(jx "sh['nb_shards']") shards"
# Idle now: every buddy pair is cold. Merges stop at the initial count.
expect 0 "" "${ctl[@]}" set shards.split_rate 0
expect 0 "" "${ctl[@]}" set shards.merge_rate 1000
n=0
for _ in $(seq 150); do
	cj sh shards
	n=$(jx "sh['nb_shards']")
	[ "$n" -eq 4 ] && break
	sleep 0.1
done
[ "$n" -eq 4 ] || fail "cold buddies did not merge back to [shards] count = 4 ($n shards)"
sleep 1 # and no merge below the floor
cj sh shards
cj stats stats
check "sh['nb_shards'] == 4 and stats['total']['auto_merges'] > 0 and
	stats['total']['reshard_failures'] == 0" "automatic merges stop at the floor"
echo "   merged back to 4 shards by $(jx "stats['total']['auto_merges']") automatic merges"
# The second client rewrote the same key names (--preload) and checked every reply; the
# store holds its keys, ctl:greeting and ctl:aba.
check "sum(sh['keys']) == $present2 + 2" "keys kept through automatic re-sharding"
expect 0 "^hello$" "${kcli[@]}" get ctl:greeting
expect 0 "" "${ctl[@]}" set shards.merge_rate 0
epoch=$(jx "sh['epoch']")

section "shutdown"
rc=0
stop_server || rc=$?
[ "$rc" -eq 0 ] || fail "keymapd exit $rc on SIGTERM"
grep -q "keymap.main: stopping" "$log" || fail "keymapd did not log its shutdown"

echo "summary: $checks checks; epoch $epoch0 -> $epoch_c under reshard_client, $epoch at the" \
	"end (every command exactly one); $nsplit splits, $nmerge merges, $nmove moves"
echo "summary: reshard_client $summary"
echo "PASS ($((SECONDS - t_start)) s)"
