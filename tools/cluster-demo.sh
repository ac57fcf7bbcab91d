#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# A keymap cluster on this machine, shown step by step: a local etcd, keymap-placer and
# keymapd nodes in network namespaces (tests/functional/cluster_env.sh: 198.51.100.0/24
# only, inside the namespaces); a client writing and reading across the nodes; a third
# node added (shards move to it); the first node drained and stopped (its shards move
# away); every key read back. Everything is removed at the end, also on failure or Ctrl-C.
#
# usage: tools/cluster-demo.sh [BUILD_DIR]     (as root; builds first when BUILD_DIR is
#                                               not given)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "cluster-demo: needs root (network namespaces, tap devices, DPDK)" >&2
	exit 1
fi
if [ $# -ge 1 ]; then
	bin=$1
else
	tools/install-deps.sh
	tools/build.sh
	bin=build
fi
tag=kd$$
# shellcheck source=../tests/functional/cluster_env.sh
. tests/functional/cluster_env.sh
trap cl_cleanup EXIT
trap 'exit 1' INT TERM

hosts=198.51.100.11,198.51.100.12,198.51.100.13
cli() {
	echo "\$ keymap-cli -h $hosts $*"
	timeout -k 2 20 ip netns exec "$cl_sw" "$bin/tools/keymap-cli" -h "$hosts" "$@"
}
nodes() { echo "   map epoch $(cl_map_py "m['epoch']"): shards per node $(cl_map_py per)"; }

cl_section "etcd, keymap-placer (8 shards) and two keymapd nodes"
cl_etcd_start
cl_placer_start 1 --shards 8
cl_node_start 1
cl_node_start 2
cl_wait_map 30 "sorted(per.values()) == [4, 4]" "the first map"
nodes

cl_section "a client writes and reads across the nodes"
cli map | sed -n '1,12p'
for i in $(seq 1 8); do
	ip netns exec "$cl_sw" "$bin/tools/keymap-cli" -h "$hosts" put "user$i/cart" "items=$i" >/dev/null
done
cli get user3/cart
cli get user7/cart

cl_section "a third node joins: about a third of the shards move to it"
cl_node_start 3
cl_wait_map 45 "len(per) == 3 and min(per.values()) >= 2" "n3 received shards"
nodes
grep -h "sent to node\|received from another node" "$cl_tmp"/n*.log | sed 's/^/   /'

cl_section "the first node is drained, then stopped"
cl_etcdctl put /keymap/demo/drain/n1 '{"at": 0}' >/dev/null
cl_wait_map 45 "per.get('n1', 0) == 0" "n1 drained"
nodes
cl_node_stop 1

cl_section "every key read back"
for i in $(seq 1 8); do
	v=$(ip netns exec "$cl_sw" "$bin/tools/keymap-cli" -h "$hosts" get "user$i/cart")
	[ "$v" = "items=$i" ] || cl_fail "user$i/cart: '$v'"
done
echo "   8 of 8 keys intact"
cl_section "done: cleaning up"
