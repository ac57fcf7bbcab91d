#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Losses keymapd must account for (one worker on net_tap in a private network namespace):
#   a. the port's counters in keymapctl stats (table and --json) and on the metrics page
#      follow the traffic sent;
#   b. a burst the worker cannot take in time (it sleeps 100 ms between polls, the tap
#      queue holds 64 frames) is dropped by the kernel: every datagram sent shows either
#      in the port's ipackets or in its kernel_drops;
#   c. the same worker taking a blast of PUTs and GETs from its queue in full bursts, with
#      [net] busy_watermark at 5 %: every request is answered, PUTs past the watermark
#      BUSY (busy_overload), GETs OK; with the watermark at 0, all OK.
# Removes the namespace, the processes and /var/run/dpdk/<prefix> even when it fails; every
# command is bounded by a timeout.
#
# usage: drops.sh KEYMAPD KEYMAPCTL DROPS_CLIENT  (exit 77 = skipped: needs root and ip)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
client=$3
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
	echo "SKIP: needs root and iproute2 (network namespace, DPDK vdevs)"
	exit 77
fi

id=$$
ns=kmdrop-$id
prefix=kmdrop-$id
tap=kmdrop0
server=198.51.100.2
metrics=127.0.0.1:9470
tmp=$(mktemp -d)
srv_pid=
checks=0
if [ "$(nproc)" -gt 1 ]; then lcores="0@0,1@1"; else lcores="0@0,1@0"; fi

cleanup() {
	ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
	if [ -n "$srv_pid" ]; then
		kill -KILL "$srv_pid" 2>/dev/null || true
		wait "$srv_pid" 2>/dev/null || true
	fi
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "/var/run/dpdk/$prefix" "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	{
		echo "FAIL: $*"
		if [ -f "$tmp/keymapd.log" ]; then
			echo "---- keymapd log (last 30 lines) ----"
			tail -30 "$tmp/keymapd.log"
		fi
	} >&2
	exit 1
}

ctl=(timeout -k 2 20 "$keymapctl" -f "$prefix")
in_ns=(timeout -k 2 30 ip netns exec "$ns")

# stats NAME: keymapctl stats --json, kept as $tmp/NAME.json.
stats() {
	"${ctl[@]}" --json stats >"$tmp/$1.json" || fail "keymapctl --json stats failed"
}

# jx EXPR: a Python expression over the kept stats (variables named after them).
jx() {
	python3 - "$tmp" "$1" <<'EOF'
import glob, json, os, sys
v = {os.path.basename(f)[:-5]: json.load(open(f)) for f in glob.glob(sys.argv[1] + "/*.json")}
r = eval("(" + sys.argv[2] + ")", v)
print(" ".join(map(str, r)) if isinstance(r, tuple) else r)
EOF
}

# check EXPR WHAT [SHOW]: EXPR holds over the kept stats and client replies; on failure
# the values of the expression SHOW are printed too.
check() {
	local r
	r=$(jx "$1" 2>&1) || true
	[ "$r" = True ] || fail "$2: '$1' is not true ($r)${3:+; $3: $(jx "$3" 2>&1)}"
	checks=$((checks + 1))
	echo "ok: $2"
}

# settle: wait until the port's ipackets stop moving (at most 3 s), then keep stats as NAME.
settle() {
	local a=-1 b
	for _ in $(seq 30); do
		stats "$1"
		b=$(jx "$1['port']['ipackets']")
		[ "$a" = "$b" ] && return 0
		a=$b
		sleep 0.1
	done
}

timeout 10 ip netns add "$ns"
"${in_ns[@]}" ip link set lo up
timeout -k 5 120 ip netns exec "$ns" "$keymapd" -o "net.ip=$server" \
	-o "metrics.ip=${metrics%:*}" -o "metrics.port=${metrics#*:}" -- --no-huge -m 512 \
	--no-pci --file-prefix "$prefix" --vdev "net_tap0,iface=$tap" --lcores "$lcores" \
	>"$tmp/keymapd.log" 2>&1 &
srv_pid=$!
for _ in $(seq 300); do
	grep -q "keymap.main: ready" "$tmp/keymapd.log" && break
	kill -0 "$srv_pid" 2>/dev/null || fail "keymapd exited during start-up"
	sleep 0.1
done
grep -q "keymap.main: ready" "$tmp/keymapd.log" || fail "keymapd not ready after 30 s"
"${in_ns[@]}" ip addr add 198.51.100.1/24 dev "$tap"
"${in_ns[@]}" ip link set "$tap" up
run_client=("${in_ns[@]}" python3 "$client" "$server" 7070)

echo "== a. the port's counters follow the traffic"
"${run_client[@]}" ping 1 >"$tmp/warm.json" || fail "first PING"
settle s0
"${run_client[@]}" ping 500 >"$tmp/ping.json" || fail "PINGs"
settle s1
check "ping['replies'] == ping['sent'] == 500" "500 PINGs answered"
check "s1['port']['ipackets'] - s0['port']['ipackets'] >= 500 and
	s1['port']['opackets'] - s0['port']['opackets'] >= 500" "ipackets and opackets >= 500 more"
check "s1['port']['ipackets'] == s1['total']['rx_pkts'] and s1['port']['name'] == 'net_tap0' and
	{'imissed', 'ierrors', 'rx_nombuf', 'oerrors', 'kernel_drops', 'rxq_drops',
	'tx_drops'} <= set(s1['port']) and s1['port']['kernel_drops'] == 0" \
	"the worker took every frame the port received, nothing dropped"
"${ctl[@]}" stats >"$tmp/table" || fail "keymapctl stats"
grep -Eq "^ipackets +[0-9]+$" "$tmp/table" && grep -Eq "^kernel_drops +0$" "$tmp/table" ||
	fail "keymapctl stats: no port rows: $(cat "$tmp/table")"
"${in_ns[@]}" "$keymapctl" -f "$prefix" metrics >"$tmp/metrics" || fail "metrics page"
ip1=$(jx "s1['port']['ipackets']")
awk -v min="$ip1" '$1 == "keymap_port_ipackets_total{port=\"0\"}" && $2 >= min { ok = 1 }
	END { exit !ok }' "$tmp/metrics" || fail "metrics: keymap_port_ipackets_total < $ip1"
for m in imissed ierrors rx_nombuf oerrors kernel_drops; do
	grep -q "^# HELP keymap_port_${m}_total " "$tmp/metrics" &&
		grep -q "^# TYPE keymap_port_${m}_total counter$" "$tmp/metrics" &&
		grep -q "^keymap_port_${m}_total{port=\"0\"} 0$" "$tmp/metrics" ||
		fail "metrics: keymap_port_${m}_total"
done
grep -q '^keymap_rxq_drops_total{worker="0"} 0$' "$tmp/metrics" || fail "metrics: rxq_drops"
checks=$((checks + 3))
echo "ok: port rows in keymapctl stats and keymap_port_*_total{port=\"0\"} on the metrics page"

echo "== b. a burst the worker cannot take: counted in kernel_drops"
# The worker polls every 100 ms; the tap queue holds 64 frames: most of 3000 datagrams
# sent back to back find it full.
"${ctl[@]}" set workers.idle_spin 0 >/dev/null || fail "set idle_spin"
"${ctl[@]}" set workers.idle_sleep_us 100000 >/dev/null || fail "set idle_sleep_us"
"${in_ns[@]}" ip link set "$tap" txqueuelen 64
settle s2
"${run_client[@]}" junk 3000 >"$tmp/junk.json" || fail "junk"
sleep 0.5
settle s3
check "junk['sent'] == 3000 and s3['port']['kernel_drops'] - s2['port']['kernel_drops'] > 0" \
	"the kernel dropped frames and keymapd counts them"
# Every datagram shows on one side; the kernel may add a few frames of its own (ARP, IPv6
# neighbour discovery: the worker drops those as not IPv4 or answers them).
check "3000 <= (s3['port']['ipackets'] - s2['port']['ipackets']) +
	(s3['port']['kernel_drops'] - s2['port']['kernel_drops']) <= 3010 and
	0 <= (s3['port']['ipackets'] - s2['port']['ipackets']) -
	(s3['total']['drop_proto'] - s2['total']['drop_proto']) <= 10" \
	"sent = ipackets + kernel_drops; what the port received, the worker dropped as not requests" \
	"(s3['port']['ipackets'] - s2['port']['ipackets'], s3['port']['kernel_drops'] -
	s2['port']['kernel_drops'], s3['total']['drop_proto'] - s2['total']['drop_proto'])"
echo "   3000 sent: $(jx "(s3['port']['ipackets'] - s2['port']['ipackets'],
	s3['port']['kernel_drops'] - s2['port']['kernel_drops'])" | sed 's/ / received, /') dropped by the kernel"

echo "== c. over the backlog watermark: writes answered BUSY, GETs served"
# Room for every datagram of a blast in the tap queue: the worker takes them in full
# bursts of 32 after its sleep, and 5 % of 1024 descriptors (51 packets) is two of them.
"${in_ns[@]}" ip link set "$tap" txqueuelen 4096
"${ctl[@]}" set net.busy_watermark 0 >/dev/null || fail "set busy_watermark 0"
settle s4
"${run_client[@]}" blast 800 >"$tmp/calm.json" || fail "blast"
settle s5
check "calm['replies'] == calm['sent'] == 800 and calm['put'] == {'OK': 400} and
	calm['get'] == {'OK': 400} and s5['total']['busy_overload'] == s4['total']['busy_overload']" \
	"watermark 0: 800 requests sent back to back, all answered OK" "calm"
"${ctl[@]}" set net.busy_watermark 5 >/dev/null || fail "set busy_watermark 5"
# A blast the worker happened to wake in the middle of may not fill two bursts: try again.
for try in 1 2 3; do
	settle s6
	"${run_client[@]}" blast 800 >"$tmp/busy.json" || fail "blast"
	settle s7
	[ "$(jx "busy['put'].get('BUSY', 0) > 0")" = True ] && break
	echo "   try $try: no BUSY reply, again"
done
check "busy['replies'] == busy['sent'] == 800 and busy['put'].get('BUSY', 0) > 0 and
	busy['get'] == {'OK': 400} and busy['put'].get('BUSY', 0) + busy['put'].get('OK', 0) == 400 and
	s7['total']['busy_overload'] - s6['total']['busy_overload'] == busy['put']['BUSY'] and
	s7['total']['req_put'] - s6['total']['req_put'] == 401" \
	"watermark 5 %: every request answered, some PUTs BUSY (busy_overload), every GET OK" \
	"busy, s7['total']['busy_overload'] - s6['total']['busy_overload']"
echo "   800 sent: $(jx "busy['put']['BUSY']") PUTs answered BUSY, $(jx "busy['put'].get('OK', 0)") PUTs and 400 GETs served"
"${in_ns[@]}" ip link set "$tap" txqueuelen 1000

echo "== d. sources no reply may go to: dropped, counted"
settle s8
"${run_client[@]}" spoof 5 >"$tmp/spoof.json" || fail "spoof"
settle s9
check "spoof['sent'] == 5 * spoof['sources'] == 35 and
	s9['total']['drop_src'] - s8['total']['drop_src'] == 35 and
	s9['total']['tx_pkts'] - s8['total']['tx_pkts'] == 1" \
	"35 PINGs from 7 bad sources (loopback, multicast, broadcast, reserved, 0/8, own, port 0): all in drop_src, none answered" \
	"spoof, s9['total']['drop_src'] - s8['total']['drop_src'], s9['port']['opackets'] - s8['port']['opackets']"

kill -TERM "$srv_pid"
for _ in $(seq 100); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
wait "$srv_pid" || fail "keymapd exited with status $?"
srv_pid=
grep -Eq " keymap.main: kernel_drops +[1-9][0-9]*$" "$tmp/keymapd.log" || fail "exit print: no kernel_drops row"
echo "PASS: $((checks + 1)) checks"
