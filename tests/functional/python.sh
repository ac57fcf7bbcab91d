#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# The Python binding (python/keymap) against keymapd: one worker on net_tap in a private
# network namespace, [store] value_max 64959; python/tests/test_live.py run there: sync
# round trips, batch, mget, values in fragments, 5000 concurrent asyncio GETs.
# Removes the namespace, the processes and /var/run/dpdk/<prefix> even when it fails;
# every command is bounded by a timeout.
#
# usage: python.sh KEYMAPD PYTHON_DIR LIBKEYMAP KEYMAPCTL [PYTHON]
#        (PYTHON: the interpreter, python3 by default; exit 77 = skipped: needs root, ip,
#        the interpreter)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
pydir=$2
libkeymap=$3
keymapctl=$4
python=${5:-python3}
here=$(cd "$(dirname "$0")" && pwd)
tag=kmpy
needs=$python
# shellcheck source=lib.sh
. "$here/lib.sh"

section "keymapd, one worker, value_max 64959"
start_keymapd 0-1 -o store.value_max=64959 -o metrics.port=0
ok "keymapd serves at $server"

section "python3 -m unittest test_live"
rc=0
cd "$pydir/.."
timeout --foreground -k 5 240 ip netns exec "$ns" env KEYMAP_LIB="$libkeymap" \
	KEYMAP_HOST="$server" PYTHONPATH="$pydir" PYTHONDONTWRITEBYTECODE=1 \
	"$python" -m unittest -v "$(basename "$pydir")/tests/test_live.py" || rc=$?
[ "$rc" -eq 0 ] || fail "test_live: exit $rc"
ok "test_live"
stop_server || fail "keymapd's exit status on SIGTERM: not 0"
echo "PASS: python ($checks checks)"
