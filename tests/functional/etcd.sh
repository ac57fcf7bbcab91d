#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# lib/etcd against a private etcd on loopback: starts etcd on free ports with a temporary
# data directory, waits until it answers, runs the cmocka binary test_etcd_live with the
# endpoint (and a port where nothing listens) in its environment, then stops etcd and
# removes its directory, also when the test fails. Bounded in time.
#
# usage: etcd.sh TEST_ETCD_LIVE   (exit 77 = skipped: no etcd or etcdctl)
set -euo pipefail
shopt -s inherit_errexit

test_bin=${1:?usage: etcd.sh TEST_ETCD_LIVE}
etcd=/usr/bin/etcd
etcdctl=$(command -v etcdctl || true)
if [ ! -x "$etcd" ] || [ -z "$etcdctl" ] || ! command -v ss >/dev/null; then
	echo "SKIP: needs $etcd, etcdctl (etcd-server, etcd-client) and ss (iproute2)"
	exit 77
fi

tmp=$(mktemp -d -p /var/tmp)
pid=

cleanup() {
	local rc=$?

	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	if [ "$rc" -ne 0 ] && [ -f "$tmp/etcd.log" ]; then
		echo "--- etcd log (last 40 lines)"
		tail -n 40 "$tmp/etcd.log"
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT

# Free TCP ports in 20000-29999, starting from one derived from our pid.
ports=()
p=$((20000 + ($$ * 7) % 10000))
for _ in $(seq 200); do
	if [ -z "$(ss -Htan "( sport = :$p )")" ]; then
		ports+=("$p")
		[ ${#ports[@]} -eq 3 ] && break
	fi
	p=$((20000 + (p - 20000 + 1) % 10000))
done
if [ ${#ports[@]} -ne 3 ]; then
	echo "FAIL: no free ports found" >&2
	exit 1
fi
client=http://127.0.0.1:${ports[0]}
peer=http://127.0.0.1:${ports[1]}
closed=http://127.0.0.1:${ports[2]}

"$etcd" --name default --data-dir "$tmp/data" \
	--listen-client-urls "$client" --advertise-client-urls "$client" \
	--listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
	--initial-cluster "default=$peer" --initial-cluster-token "keymap-test-$$" \
	>"$tmp/etcd.log" 2>&1 &
pid=$!

# Up to 15 s for it to elect itself and answer.
for i in $(seq 150); do
	if ETCDCTL_API=3 "$etcdctl" --endpoints="$client" --command-timeout=1s \
		endpoint health >/dev/null 2>&1; then
		break
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "FAIL: etcd exited" >&2
		exit 1
	fi
	if [ "$i" -eq 150 ]; then
		echo "FAIL: etcd did not answer in 15 s" >&2
		exit 1
	fi
	sleep 0.1
done
echo "etcd $($etcd --version | head -n 1 | sed 's/.*: //') at $client"

KM_ETCD_ENDPOINT=$client KM_ETCD_CLOSED=$closed timeout 90 "$test_bin"
