#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Values larger than one datagram, through IPv4 fragments at MTU 1500 (one worker on
# net_tap in a private network namespace, the log store, [store] value_max 11000):
#   a. keymap-cli PUTs a 10 KB value (7 fragments, reassembled by keymapd) and GETs it
#      back (a reply keymapd sends as fragments): the bytes compare equal;
#   b. after a restart the GET reads the value from disk, finds it larger than the packet
#      buffer it came in, and is answered from a large buffer: the same bytes;
#   c. a PUT of 11,500 bytes, over value_max, is reassembled and answered TOO_LARGE;
#   d. a flood of 3000 first fragments of datagrams that never complete: every one counted
#      in frag_rx, then in frag_drops once the table is full or the entry timed out
#      (frag_timeout_ms 100), nothing reassembled; keymapd's RSS grows by less than 4 MiB;
#      it still answers, large values included; the counters are on the metrics page;
#   e. on net_af_xdp over a veth (no TX of mbuf chains) the 10 KB value round-trips: its
#      reply's fragments are made flat.
# Removes the namespace, the processes and /var/run/dpdk/<prefix> even when it fails; every
# command is bounded by a timeout.
#
# usage: frag.sh KEYMAPD KEYMAPCTL KEYMAP_CLI DROPS_CLIENT
#        (exit 77 = skipped: needs root and ip)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
cli=$3
client=$4
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
	echo "SKIP: needs root and iproute2 (network namespace, DPDK vdevs)"
	exit 77
fi
tag=kmfrag
# shellcheck source=logstore_env.sh
. "$(dirname "$0")/logstore_env.sh"

value_max=11000
rss_margin_kb=4096
metrics=127.0.0.1:9471
opts=(-o "store.value_max=$value_max" -o net.frag_max=64 -o net.frag_timeout_ms=100
	-o "metrics.ip=${metrics%:*}" -o "metrics.port=${metrics#*:}")
kcli=("${in_ns[@]}" "$cli" -h "$server")

# rss: keymapd's resident set in KiB (keymapd is the child of timeout(1)).
rss() {
	awk '/^VmRSS:/ { print $2 }' "/proc/$(pgrep -P "$srv_pid")/status"
}

# same A B WHAT: files A and B hold the same bytes.
same() {
	cmp -s "$1" "$2" || fail "$3: $(stat -c %s "$2") bytes differ from the $(stat -c %s "$1") sent"
	ok "$3"
}

timeout 10 ip netns add "$ns"
"${in_ns[@]}" ip link set lo up
mkdir -p "$tmp/data/cold"
head -c 10240 /dev/urandom >"$tmp/v10k"
head -c 11500 /dev/urandom >"$tmp/v11k"

section "a. a 10 KB value through fragments, both ways"
start_server "$tmp/data" "${opts[@]}"
"${in_ns[@]}" ip link set "$tap" txqueuelen 4096
cj s0 stats
expect 0 "^OK version" "${kcli[@]}" put frag/10k - <"$tmp/v10k"
"${kcli[@]}" get frag/10k >"$tmp/got" || fail "get frag/10k"
truncate -s -1 "$tmp/got" # keymap-cli prints a newline after the value
same "$tmp/v10k" "$tmp/got" "10240 bytes PUT and GET through keymap-cli at MTU 1500"
cj s1 stats
check "s1['total']['frag_reassembled'] - s0['total']['frag_reassembled'] == 1 and
	s1['total']['frag_rx'] - s0['total']['frag_rx'] == 7 and
	s1['total']['frag_tx'] - s0['total']['frag_tx'] == 7 and
	s1['total']['frag_drops'] == s1['total']['large_drops'] == 0" \
	"7 fragments in, reassembled once; 7 fragments out; nothing dropped"

section "b. after a restart: read from disk, answered from a large buffer"
restart_clean "$tmp/data" "${opts[@]}"
"${in_ns[@]}" ip link set "$tap" txqueuelen 4096
"${kcli[@]}" get frag/10k >"$tmp/got" || fail "get frag/10k after the restart"
truncate -s -1 "$tmp/got"
same "$tmp/v10k" "$tmp/got" "the 10240 bytes again, read from the log"
cj s2 stats
check "s2['total']['disk_reads'] == 1 and s2['total']['req_get'] == 1 and
	s2['total']['get_hit'] == 1 and s2['total']['frag_tx'] == 7" \
	"one disk read, one GET counted, 7 fragments out"

section "c. over value_max: TOO_LARGE, reassembled first"
expect 2 "too large" "${kcli[@]}" put frag/11k - <"$tmp/v11k"
cj s3 stats
check "s3['total']['too_large'] - s2['total']['too_large'] == 1 and
	s3['total']['frag_reassembled'] - s2['total']['frag_reassembled'] >= 1" \
	"an 11,500-byte value answered TOO_LARGE (counted), not dropped"

section "d. a flood of fragments that never complete"
rss0=$(rss)
cj s4 stats
"${in_ns[@]}" python3 "$client" "$server" 7070 frag 3000 >"$jdir/flood.json" ||
	fail "fragment flood"
sleep 0.5 # past frag_timeout_ms: every entry expired
cj s5 stats
rss1=$(rss)
check "flood['sent'] == 3000 and s5['port']['kernel_drops'] == s4['port']['kernel_drops'] and
	s5['port']['rx_nombuf'] == s4['port']['rx_nombuf'] and
	s5['port']['imissed'] == s4['port']['imissed'] and
	s5['total']['frag_rx'] - s4['total']['frag_rx'] == 3000 and
	s5['total']['frag_drops'] - s4['total']['frag_drops'] == 3000 and
	s5['total']['frag_reassembled'] == s4['total']['frag_reassembled']" \
	"3000 first fragments received, all 3000 dropped (table full or timed out), none reassembled"
[ $((rss1 - rss0)) -lt "$rss_margin_kb" ] ||
	fail "RSS grew from $rss0 KiB to $rss1 KiB (margin $rss_margin_kb KiB)"
ok "RSS $rss0 KiB before the flood, $rss1 KiB after (margin $rss_margin_kb KiB)"
expect 0 "^PONG" "${kcli[@]}" ping
expect 0 "^OK version" "${kcli[@]}" put frag/again - <"$tmp/v10k"
"${kcli[@]}" get frag/again >"$tmp/got" || fail "get frag/again"
truncate -s -1 "$tmp/got"
same "$tmp/v10k" "$tmp/got" "a 10 KB value PUT and GET after the flood"
"${in_ns[@]}" "$keymapctl" -f "$prefix" metrics >"$tmp/metrics" || fail "metrics page"
for m in frag_rx frag_reassembled frag_drops frag_tx large_drops; do
	grep -q "^# TYPE keymap_${m}_total counter$" "$tmp/metrics" &&
		grep -Eq "^keymap_${m}_total\{worker=\"0\"\} [0-9]+$" "$tmp/metrics" ||
		fail "metrics: keymap_${m}_total"
done
ok "keymap_frag_*_total and keymap_large_drops_total on the metrics page"

stop_server || fail "keymapd exit status $? on SIGTERM"
grep -Eq " keymap.main: frag_drops +[0-9]+" "$log" || fail "exit print: no frag_drops row"

section "e. a port that cannot send mbuf chains (net_af_xdp on a veth): fragments made flat"
for _ in $(seq 50); do "${in_ns[@]}" ip link show "$tap" >/dev/null 2>&1 || break; sleep 0.1; done
"${in_ns[@]}" ip link add kmfragv0 type veth peer name kmfragv1
"${in_ns[@]}" ip link set kmfragv0 up
"${in_ns[@]}" ip addr add 198.51.100.1/24 dev kmfragv1
"${in_ns[@]}" ip link set kmfragv1 up
: >"$log"
timeout -k 5 60 ip netns exec "$ns" "$keymapd" -o "store.value_max=$value_max" \
	-o metrics.port=0 -- "${eal[@]}" --file-prefix "$prefix" \
	--vdev net_af_xdp0,iface=kmfragv0 >"$log" 2>&1 &
srv_pid=$!
for _ in $(seq 300); do
	grep -q "keymap.main: ready" "$log" && break
	kill -0 "$srv_pid" 2>/dev/null || { srv_pid=; fail "keymapd on net_af_xdp exited"; }
	sleep 0.1
done
grep -q "keymap.main: ready" "$log" || fail "keymapd on net_af_xdp not ready after 30 s"
expect 0 "^OK version" "${kcli[@]}" put frag/xdp - <"$tmp/v10k"
"${kcli[@]}" get frag/xdp >"$tmp/got" || fail "get frag/xdp over net_af_xdp"
truncate -s -1 "$tmp/got"
same "$tmp/v10k" "$tmp/got" "a 10 KB value PUT and GET over net_af_xdp"
cj x1 stats
check "x1['total']['frag_tx'] >= 7 and x1['total']['large_drops'] == 0" \
	"its reply sent as flat fragments"
stop_server || fail "keymapd exit status $? on SIGTERM"
echo "PASS: $((checks + 1)) checks in $((SECONDS - t_start)) s"
