#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Cross-node moves of persistent shards (store.driver=log, sync durability), on the
# cluster of cluster_env.sh:
#   a. one node holds 4 shards; 200 keys written through keymap-cli;
#   b. a second node joins: shards move to it, copied live, while keymap-cli writes more;
#      every key reads back with its last value;
#   c. both nodes killed (kill -9) and started again on their data directories: every key
#      reads back, the moved shards' from the files the target wrote when it received them;
#   d. the second node drained: its shards move back to the first node, which held older
#      files of some of them, each live copy failing on purpose (KM_FAULT_LIVE_COPY) and
#      sent whole instead; every key reads back (the received copies, not the old files).
# Bounded in time; everything is removed afterwards, also on failure.
#
# usage: cluster_log.sh BUILD_DIR   (exit 77 = skipped: no etcd, not root)
set -euo pipefail
shopt -s inherit_errexit

bin=${1:?usage: cluster_log.sh BUILD_DIR}
tag=kl$$
# shellcheck source=cluster_env.sh
. "$(dirname "$0")/cluster_env.sh"
trap cl_cleanup EXIT
trap 'exit 1' INT TERM

hosts=198.51.100.11,198.51.100.12
cli() { timeout 20 ip netns exec "$cl_sw" "$bin/tools/keymap-cli" -h "$hosts" -t 300 -r 8 "$@"; }

# node N: a log-store node on its own data directory.
node() {
	mkdir -p "$cl_tmp/d$1/cold"
	cl_node_start "$1" -o store.driver=log -o "store.dir=$cl_tmp/d$1" \
		-o "store.cold_dir=$cl_tmp/d$1/cold" -o store.durability=sync
}

# put FROM TO ROUND: keys k<FROM>..k<TO-1> get the value v<i>-<ROUND>.
put() {
	local i

	for i in $(seq "$1" $(($2 - 1))); do
		cli put "k$i" "v$i-$3" >/dev/null || cl_fail "put k$i (round $3)"
	done
}

# check N ROUND_OF_EVEN ROUND_OF_ODD: every key k0..k<N-1> reads its value back.
check() {
	local i want got bad=0

	for i in $(seq 0 $(($1 - 1))); do
		want="v$i-$([ $((i % 2)) -eq 0 ] && echo "$2" || echo "$3")"
		got=$(cli get "k$i" 2>/dev/null) || got="(error $?)"
		if [ "$got" != "$want" ]; then
			echo "k$i: '$got', not '$want'"
			bad=$((bad + 1))
			[ "$bad" -lt 10 ] || break
		fi
	done
	[ "$bad" -eq 0 ] || cl_fail "$bad keys read back wrong ($4)"
	echo "ok: $1 keys read back ($4)"
}

cl_section "a. one log-store node, 200 keys"
cl_etcd_start
cl_placer_start 1 --shards 4 --max-moves 2
node 1
cl_wait_map 30 "per.get('n1', 0) == 4" "the first map: 4 shards on n1"
put 0 200 1
check 200 1 1 "one node"

cl_section "b. a second node joins while the odd keys are written again"
node 2
{ for i in $(seq 1 2 199); do cli put "k$i" "v$i-2" >/dev/null || exit 1; done; } &
writer=$!
cl_wait_map 45 "per.get('n2', 0) == 2 and per.get('n1', 0) == 2" "n2 received 2 shards"
wait "$writer" || cl_fail "the writes during the moves failed"
echo "ok: shards per node $(cl_map_py per)"
grep -h "dropped here after" "$cl_tmp/n1.log" || cl_fail "no move out of n1"
check 200 1 2 "after the moves"

cl_section "c. both nodes killed and started again on their files"
cl_node_kill 1
cl_node_kill 2
node 1
# n2's live copies fail after their first chunk (fault injection): section d's moves
# from it then go whole, over a new connection.
export KM_FAULT_LIVE_COPY=fail
node 2
unset KM_FAULT_LIVE_COPY
cl_wait_map 45 "per.get('n2', 0) == 2 and per.get('n1', 0) == 2" "the map after the restarts"
check 200 1 2 "after kill -9 of both nodes"

cl_section "d. the second node drained: its shards back to the first"
put 0 200 3
cl_etcdctl put /keymap/demo/drain/n2 '{"at": 0}' >/dev/null
cl_wait_map 45 "per.get('n2', 0) == 0 and per.get('n1', 0) == 4" "n2 drained"
grep -q "sending it whole" "$cl_tmp/n2.log" || cl_fail "n2's live copies did not fail over"
grep -h "dropped here after" "$cl_tmp/n2.log" | grep -q "(whole copy)" ||
	cl_fail "no whole copy after a failed live one"
echo "ok: n2's failed live copies were sent whole"
check 200 3 3 "after the shards came back to n1"
cl_node_kill 1
node 1
cl_wait_map 30 "per.get('n1', 0) == 4" "n1 alone after its restart"
check 200 3 3 "after n1 restarted on the files it received"
echo "PASS"
