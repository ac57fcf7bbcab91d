#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# README command 1: install dependencies, build, start keymapd on its embedded default
# configuration (net_tap, no hugepages, one worker) inside a private network namespace,
# and show a client round trip with keymap-cli. Everything is removed at the end.
#   --keep   leave keymapd running (stop it later with: tools/run-demo.sh --stop)
set -euo pipefail
cd "$(dirname "$0")/.."

ns=keymap-demo
prefix=keymap          # the embedded default's --file-prefix
server=198.51.100.2    # the embedded default's [net] ip
client=198.51.100.1
log=/tmp/keymap-demo.log
pidfile=/tmp/keymap-demo.pid

stop() {
	if [ -f "$pidfile" ]; then
		kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
		rm -f "$pidfile"
	fi
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "/var/run/dpdk/$prefix"
}

if [ "${1:-}" = "--stop" ]; then
	stop
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "run-demo: needs root (network namespace, veth pair or tap device, DPDK)" >&2
	exit 1
fi

tools/install-deps.sh
tools/build.sh

stop
[ "${1:-}" = "--keep" ] || trap stop EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
# No arguments: the embedded default configuration (see: keymapd --print-config).
ip netns exec "$ns" build/app/keymapd/keymapd >"$log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 300); do
	grep -q "keymap.main: ready" "$log" && break
	kill -0 "$(cat "$pidfile")" 2>/dev/null || { cat "$log"; echo "run-demo: keymapd exited" >&2; exit 1; }
	sleep 0.1
done
grep -q "keymap.main: ready" "$log" || { cat "$log"; echo "run-demo: keymapd not ready" >&2; exit 1; }
grep "keymap.main: ready" "$log"
# km0: the kernel's end of the veth pair keymapd created (net_af_packet on km0p), or, where
# the pair could not be made, its tap of that name ([net] veth; keymapd's log says which).
ip netns exec "$ns" ip addr add "$client/24" dev km0
ip netns exec "$ns" ip link set km0 up

cli() {
	echo "\$ keymap-cli -h $server $*"
	ip netns exec "$ns" build/tools/keymap-cli -h "$server" "$@"
}
# The first datagrams may race the link coming up: ping until answered (bounded).
for _ in $(seq 20); do
	ip netns exec "$ns" build/tools/keymap-cli -h "$server" -t 250 ping >/dev/null 2>&1 && break
done
cli ping
out=$(cli put user42/cart '{"items": 3}')
echo "$out"
cli get user42/cart
# CAS against the version the PUT returned ("OK version N").
cli cas user42/cart "${out##* }" '{"items": 4}'
# keymap-cli exits 3 when a key is absent: show it rather than stop the demo.
cli mget user42/cart user42/none || echo "(exit status $?: one key is absent)"
# Every key of entity user42, a page (one datagram) at a time.
cli put user42/name Ada
cli scan user42/
cli map
cli bench-lite -n 20000
# The control plane: keymapd's telemetry socket (file prefix "keymap" by default).
ctl() {
	echo "\$ keymapctl $*"
	build/tools/keymapctl "$@"
}
ctl status
ctl shards
ctl split 16
ctl stats
cli get user42/cart
if [ "${1:-}" = "--keep" ]; then
	echo "keymapd keeps running in namespace $ns (log $log); stop: tools/run-demo.sh --stop"
	trap - EXIT
else
	kill -TERM "$(cat "$pidfile")"
	for _ in $(seq 100); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
	echo "--- keymapd counters at shutdown ---"
	sed -n '/ keymap.main: counter /,$p' "$log" | sed 's/^.* keymap.main: //'
fi
