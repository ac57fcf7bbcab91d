#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# keymapd's lifecycle as an operator and systemd see it (one worker, net_tap in a private
# network namespace, a configuration file):
#   a. readiness: READY=1 and STATUS= on a NOTIFY_SOCKET (a socket of this test, as
#      systemd's with Type=notify), keymapd run with only the capabilities
#      config/keymapd.service leaves it (setpriv) and no new privileges; the EAL arguments
#      in effect shown by keymapctl config; the unit's exposure (systemd-analyze);
#      libkeymap's async calls through epoll, 10,000 requests submitted at once;
#   b. SIGHUP: a changed runtime tunable applied, a changed start-up one logged as needing
#      a restart (kept), [log] file taken, keymapd still serving its keys; RELOADING=1 then
#      READY=1; a rotated log file reopened by the next SIGHUP;
#   c. keymapctl reload: a file with an error changes nothing (exit 2, file:line);
#   d. the latency histogram's fixed bounds (seconds), the windowed quantiles of stats;
#      stats' counters and gauges, its filters, top;
#   e. every log line has its timestamp, level and log type; SIGTERM: STOPPING=1, exit 0,
#      the counters in the log;
#   f. [net] veth: net_af_packet on a veth pair keymapd creates (and removes), net_tap of
#      the same name when the pair cannot be created.
# Removes the namespace, the processes and /var/run/dpdk/<prefix> even when it fails;
# every command is bounded by a timeout.
#
# usage: lifecycle.sh KEYMAPD KEYMAPCTL KEYMAP_CLI ASYNC_CLIENT   (exit 77 = skipped: needs
#        root, ip)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
cli=$3
aclient=$4
here=$(cd "$(dirname "$0")" && pwd)
tag=kmlife
needs=python3
# shellcheck source=lib.sh
. "$here/lib.sh"
nl_pid=
extra_cleanup() {
	[ -z "$nl_pid" ] || kill -KILL "$nl_pid" 2>/dev/null || true
}
conf=$tmp/keymapd.conf
klog=$tmp/kd.log
notes=$tmp/notify.txt
kcli=(timeout -k 2 20 ip netns exec "$ns" "$cli" -h "$server")

# The NOTIFY_SOCKET end: every datagram, one line per assignment, until STOPPING=1 or
# 120 s.
python3 - "$tmp/notify.sock" "$notes" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(1)
end = time.monotonic() + 120
with open(sys.argv[2], "w", buffering=1) as f:
    while time.monotonic() < end:
        try:
            m = s.recv(4096).decode()
        except socket.timeout:
            continue
        for a in m.split("\n"):
            f.write(a + "\n")
        if "STOPPING=1" in m:
            break
EOF
nl_pid=$!
for _ in $(seq 50); do [ -S "$tmp/notify.sock" ] && break; sleep 0.1; done
[ -S "$tmp/notify.sock" ] || fail "the notification socket did not appear"

# kpid: keymapd's own pid (srv_pid is timeout(1)'s, which would signal it twice).
kpid() { pgrep -P "$srv_pid" | head -1; }
# count FILE PATTERN: lines of FILE matching PATTERN (0 when none or no file).
count() { grep -c -- "$2" "$1" 2>/dev/null || true; }
# wait_count FILE PATTERN N WHAT: FILE has N lines matching PATTERN within 10 s.
wait_count() {
	for _ in $(seq 100); do
		[ "$(count "$1" "$2")" -ge "$3" ] && return 0
		sleep 0.1
	done
	fail "$4: '$2' $3 times in $(basename "$1") (has $(count "$1" "$2"))"
}

section "a. readiness, the unit's capabilities, the EAL arguments in effect"
unit=$here/../../config/keymapd.service
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit")
[ -n "$caps" ] || fail "no CapabilityBoundingSet= in $unit"
if command -v setpriv >/dev/null; then
	set -- $caps
	bset=-all
	for c; do bset+=",+$(echo "${c#CAP_}" | tr 'A-Z' 'a-z')"; done
	printf '#!/bin/sh\nexec setpriv --no-new-privs --bounding-set=%s --inh-caps=-all %s "$@"\n' \
		"$bset" "$keymapd" >"$tmp/keymapd-caps"
	chmod +x "$tmp/keymapd-caps"
	keymapd=$tmp/keymapd-caps
	echo "keymapd runs with the unit's capabilities: $caps"
fi
if command -v systemd-analyze >/dev/null; then
	systemd-analyze security --offline=yes "$unit" >"$tmp/security" 2>&1 || true
	exposure=$(sed -n 's/.*Overall exposure level for keymapd.service: \([0-9.]*\) .*/\1/p' \
		"$tmp/security")
	[ -n "$exposure" ] && awk "BEGIN{exit !($exposure <= 4.0)}" ||
		{ tail -3 "$tmp/security"; fail "the unit's exposure level: ${exposure:-?} (want <= 4.0)"; }
	ok "systemd-analyze security: exposure $exposure"
fi
cat >"$conf" <<EOF
[workers]
idle_sleep_us = 1000
[metrics]
port = 9479
EOF
NOTIFY_SOCKET=$tmp/notify.sock start_keymapd 0-1 -c "$conf"
wait_count "$notes" "^READY=1$" 1 "readiness"
grep -q "^STATUS=serving $server udp 7070-7070, 1 workers$" "$notes" ||
	fail "no STATUS line: $(cat "$notes")"
ok "READY=1 and STATUS= sent once serving"
expect 0 "^--no-huge -m 512 --no-pci --file-prefix $prefix --vdev net_tap0,iface=$tap --lcores 0-1$" \
	"${ctl[@]}" config eal.args
expect 0 "^OK" "${kcli[@]}" put life/k1 v1
# libkeymap's async calls through epoll: 10,000 PUTs then GETs submitted at once.
expect 0 "^async: puts 10000 gets 10000 ok 20000 " timeout -k 2 90 ip netns exec "$ns" \
	"$aclient" "$server" 10000
cat "$tmp/out"

section "b. SIGHUP: a runtime tunable applied, a start-up one kept, the log file taken"
cat >"$conf" <<EOF
[workers]
idle_sleep_us = 2000
[shards]
count = 32
[metrics]
port = 9479
[log]
file = $klog
EOF
kill -HUP "$(kpid)"
wait_count "$klog" "reloaded $conf: 2 tunables changed, 1 need a restart" 1 "the reload"
expect 0 "^2000$" "${ctl[@]}" config workers.idle_sleep_us
expect 0 "^16$" "${ctl[@]}" config shards.count
grep -q "warning keymap.control: reload: shards.count = 32 needs a restart: 16 stays" "$klog" ||
	fail "no warning for shards.count"
grep -q "notice keymap.control: reload: workers.idle_sleep_us = 2000 (was 1000)" "$klog" ||
	fail "no line for workers.idle_sleep_us"
expect 0 "^v1$" "${kcli[@]}" get life/k1
wait_count "$notes" "^RELOADING=1$" 1 "RELOADING=1"
wait_count "$notes" "^READY=1$" 2 "READY=1 after the reload"
ok "reloaded: served throughout, RELOADING=1 then READY=1"
# logrotate's way: move the file, then SIGHUP.
mv "$klog" "$klog.1"
kill -HUP "$(kpid)"
wait_count "$klog" "reloaded $conf: 0 tunables changed, 1 need a restart" 1 "the second reload"
[ "$(count "$klog.1" "reloaded ")" -eq 1 ] || fail "the moved file got lines after the reopen"
ok "the rotated log file reopened, the moved one left alone"

section "c. keymapctl reload: a bad file changes nothing"
cp "$conf" "$tmp/good.conf"
printf '[workers]\nidle_sleep_us = 3000\nburst = 999\n' >"$conf"
expect 2 "$conf:3: \[workers\] burst = '999': out of range 1\.\.64: the running configuration is kept" \
	"${ctl[@]}" reload
expect 0 "^2000$" "${ctl[@]}" config workers.idle_sleep_us
# A log file that cannot be opened: the reload stops there, nothing changed, the old file
# still written.
sed "s|^file = .*|file = $tmp/nodir/kd.log|; s|^idle_sleep_us = .*|idle_sleep_us = 3000|" \
	"$tmp/good.conf" >"$conf"
expect 2 "\[log\] file $tmp/nodir/kd.log: No such file or directory: nothing changed" \
	"${ctl[@]}" reload
expect 0 "^$klog$" "${ctl[@]}" config log.file
expect 0 "^2000$" "${ctl[@]}" config workers.idle_sleep_us
cp "$tmp/good.conf" "$conf"
expect 0 "^reloaded $conf: 0 tunables changed, 1 need a restart" "${ctl[@]}" reload
expect 0 "^v1$" "${kcli[@]}" get life/k1

section "d. latency: bounds in seconds, quantiles of the last seconds"
for i in $(seq 20); do "${kcli[@]}" get life/k1 >/dev/null; done
"${in_ns[@]}" "$keymapctl" -f "$prefix" metrics >"$tmp/metrics" || fail "keymapctl metrics"
les=$(sed -n 's/^keymap_request_duration_seconds_bucket{worker="0",le="\([^"]*\)"}.*/\1/p' \
	"$tmp/metrics" | tr '\n' ' ')
want="2.5e-07 5e-07 1e-06 2e-06 5e-06 1e-05 2e-05 5e-05 0.0001 0.0002 0.0005 0.001 0.002 0.005 "
want+="0.01 0.02 0.05 0.1 0.2 0.5 1 2 5 10 +Inf "
[ "$les" = "$want" ] || fail "histogram bounds: '$les' (want '$want')"
count=$(sed -n 's/^keymap_request_duration_seconds_count{worker="0"} //p' "$tmp/metrics")
[ "${count:-0}" -ge 20 ] || fail "histogram count ${count:-none}: want the 20 GETs at least"
ok "the latency histogram has the documented bounds, $count requests"
# From outside keymapd's namespace its endpoint (127.0.0.1 there) cannot be reached: the
# same page through telemetry.
expect 0 '^keymap_request_duration_seconds_count\{worker="0"\} [0-9]+$' "${ctl[@]}" metrics
python3 "$here/prom_check.py" "$tmp/out" || fail "the page through telemetry is not valid"
cj st stats
check "0 < st['latency_window_s'] <= 11 and 0 < st['latency_p50_ns'] <= st['latency_p99_ns'] <= st['latency_p999_ns']" \
	"stats: quantiles of the last seconds"
# stats: counters and gauges apart, filters; top.
expect 0 "^gauge +total$" "${ctl[@]}" stats gauges
! grep -q "^counter " "$tmp/out" || fail "stats gauges: a counter table"
grep -Eq "^busy_pct +[0-9]+$" "$tmp/out" || fail "stats gauges: no busy_pct row"
expect 0 "^req_get +[0-9]+$" "${ctl[@]}" stats worker 0 'req_[gc]*'
[ "$(grep -cvE '^req_[gc]|^counter +w0$' "$tmp/out")" -eq 0 ] ||
	fail "stats worker 0 'req_[gc]*': other rows: $(cat "$tmp/out")"
expect 2 "no worker 3 \(keymapd lists 1\)" "${ctl[@]}" stats worker 3
expect 2 "nothing matches" "${ctl[@]}" stats 'nosuch*'
expect 0 '"req_get": [0-9]+' "${ctl[@]}" --json stats counters req_get
expect 0 "requests/s" "${ctl[@]}" top -n 2 --interval 0.2
[ "$(grep -cE '^worker +requests/s +busy +shards' "$tmp/out")" -eq 2 ] ||
	fail "top -n 2: two frames: $(cat "$tmp/out")"
grep -q "^(the 10 hottest of 16 shards)$" "$tmp/out" || fail "top: the hottest shards"
ok "stats filters and top"
# The quantiles are those of the last 10 s: none after 11 s without requests.
sleep 11
cj st2 stats
check "st2['latency_window_s'] >= 10 and st2['latency_p50_ns'] == 0" \
	"stats: no request in the last 10 s, no quantile"

section "e. log lines, SIGTERM"
stop_server || fail "keymapd's exit status on SIGTERM: not 0"
wait_count "$notes" "^STOPPING=1$" 1 "STOPPING=1"
grep -q "notice keymap.main: get_hit " "$klog" || fail "no counters in the log at exit"
re='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z '
re+='(emerg|alert|crit|err|warning|notice|info|debug) [a-z0-9_.]+: '
for f in "$log" "$klog.1" "$klog"; do
	bad=$(grep -cvE "$re" "$f" || true)
	[ "$bad" -eq 0 ] || { grep -vE "$re" "$f" | head -5; fail "$bad lines of $(basename "$f") without timestamp, level and type"; }
done
grep -q " info lib.eal: EAL: " "$log" || fail "EAL's lines are not in keymapd's log stream"
ok "every line of the three logs: timestamp, level, log type"

section "f. [net] veth: af_packet on a pair keymapd creates, net_tap when it cannot"
# start_veth: keymapd with net_af_packet on kl0p ([net] veth = kl0), ready, kl0 addressed.
start_veth() {
	: >"$log"
	timeout -k 5 60 ip netns exec "$ns" "$keymapd" -o net.veth=kl0 -o metrics.port=0 -- \
		--no-huge -m 512 --no-pci --file-prefix "$prefix" \
		--vdev net_af_packet0,iface=kl0p,blocksz=4096,framesz=2048,framecnt=512 \
		--lcores 0-1 >"$log" 2>&1 &
	srv_pid=$!
	tap=kl0 wait_ready
}
start_veth
"${in_ns[@]}" ip -br link >"$tmp/links"
grep -q "^kl0@kl0p " "$tmp/links" && grep -q "^kl0p@kl0 " "$tmp/links" ||
	fail "no veth pair kl0 / kl0p: $(cat "$tmp/links")"
expect 0 "net_af_packet0,iface=kl0p" "${ctl[@]}" config eal.args
expect 0 "^OK" "${kcli[@]}" put life/v1 x1
expect 0 "^x1$" "${kcli[@]}" get life/v1
stop_server || fail "keymapd's exit status on SIGTERM: not 0"
! "${in_ns[@]}" ip link show kl0 >/dev/null 2>&1 || fail "the pair keymapd created outlived it"
ok "af_packet on the veth pair keymapd created (and removed at exit)"
# The pair cannot be created (kl0p is taken by another pair): net_tap kl0 instead.
"${in_ns[@]}" ip link add kl0p type veth peer name kl9
start_veth
grep -q "warning keymap.main: \[net\] veth kl0: cannot create the pair (File exists): net_tap kl0" \
	"$log" || fail "no warning for the fallback"
expect 0 "net_tap0,iface=kl0 " "${ctl[@]}" config eal.args
expect 0 "^OK" "${kcli[@]}" put life/v2 x2
expect 0 "^x2$" "${kcli[@]}" get life/v2
stop_server || fail "keymapd's exit status on SIGTERM: not 0"
"${in_ns[@]}" ip link del kl0p 2>/dev/null || true
ok "net_tap when the pair cannot be created"
echo "PASS: lifecycle ($checks checks)"
