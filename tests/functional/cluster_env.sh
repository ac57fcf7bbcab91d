# SPDX-License-Identifier: BSD-3-Clause
#
# A keymap cluster on one machine (sourced by tests/functional/cluster.sh and
# tools/cluster-demo.sh): a "switch" network namespace with a Linux bridge (198.51.100.1)
# where etcd, keymap-placer and the clients run; one namespace per keymapd node, its
# net_tap device moved onto the bridge (DPDK answers 198.51.100.1N) and a veth pair for the
# node's side channel (kernel address 198.51.100.10N). Only 198.51.100.0/24, only inside
# these namespaces. Everything is removed by cl_cleanup, also when the caller fails.
#
# Set before sourcing: bin (the build directory), tag (names namespaces, DPDK prefixes and
# the temporary directory; at most 9 characters, unique per run). Provides: cl_tmp, cl_etcd_ep, cl_fail, cl_section,
# cl_etcd_start/stop, cl_node_start/stop/kill N, cl_placer_start/kill N ARGS,
# cl_etcdctl ARGS, cl_map (the current map's JSON), cl_map_py EXPR, cl_cleanup.

if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
	echo "SKIP: needs root and iproute2 (network namespaces, DPDK vdevs)"
	exit 77
fi
if [ ! -x /usr/bin/etcd ] || ! command -v etcdctl >/dev/null || ! command -v python3 >/dev/null; then
	echo "SKIP: needs etcd and etcdctl (etcd-server, etcd-client) and python3"
	exit 77
fi

cl_sw=${tag}s
cl_tmp=
cl_etcd_ep=http://198.51.100.1:2379
declare -A cl_node_pid=()
declare -A cl_placer_pid=()
cl_etcd_pid=
cl_t0=$SECONDS
export ETCDCTL_API=3

cl_in_sw() { ip netns exec "$cl_sw" "$@"; }

cl_etcdctl() { timeout -k 2 10 ip netns exec "$cl_sw" etcdctl --endpoints "$cl_etcd_ep" "$@"; }

cl_cleanup() {
	local i p

	for p in "${cl_placer_pid[@]}" "${cl_node_pid[@]}" $cl_etcd_pid; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for _ in $(seq 30); do
		p=
		for i in "${cl_placer_pid[@]}" "${cl_node_pid[@]}" $cl_etcd_pid; do
			kill -0 "$i" 2>/dev/null && p=1
		done
		[ -z "$p" ] && break
		sleep 0.1
	done
	for p in "${cl_placer_pid[@]}" "${cl_node_pid[@]}" $cl_etcd_pid; do
		kill -KILL "$p" 2>/dev/null || true
	done
	# Whatever still runs in the namespaces (a process started through a subshell).
	for i in $(seq 1 9) s; do
		[ "$i" = s ] && p=$cl_sw || p=${tag}n$i
		ip netns pids "$p" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
	done
	for i in $(seq 1 9); do
		ip netns del "${tag}n$i" 2>/dev/null || true
		rm -rf "/var/run/dpdk/${tag}n$i"
	done
	ip netns del "$cl_sw" 2>/dev/null || true
	# CL_LOGS=DIR keeps the logs of etcd, the placers and the nodes there.
	[ -z "${CL_LOGS:-}" ] || [ -z "$cl_tmp" ] || cp "$cl_tmp"/*.log "$CL_LOGS"/ 2>/dev/null || true
	[ -z "$cl_tmp" ] || rm -rf "$cl_tmp"
}

cl_fail() {
	local i

	{
		echo "FAIL: $*"
		for i in "$cl_tmp"/n*.log; do
			[ -f "$i" ] || continue
			echo "---- node $(basename "$i" .log) (last 15 lines) ----"
			tail -15 "$i"
		done
		for i in "${!cl_placer_pid[@]}"; do
			echo "---- placer $i (last 15 lines) ----"
			tail -15 "$cl_tmp/placer$i.log" 2>/dev/null
		done
	} >&2
	exit 1
}

cl_section() { echo "== $* (at $((SECONDS - cl_t0)) s)"; }

# The switch namespace, its bridge and etcd.
cl_etcd_start() {
	if [ -z "$cl_tmp" ]; then
		cl_tmp=$(mktemp -d -p /var/tmp)
		ip netns add "$cl_sw"
		cl_in_sw ip link set lo up
		cl_in_sw ip link add br0 type bridge
		# A MAC of its own: a bridge that takes its ports' lowest changes it when a
		# node's tap goes, and the nodes' ARP entries for 198.51.100.1 go stale.
		cl_in_sw ip link set br0 address 02:00:00:00:00:01
		cl_in_sw ip addr add 198.51.100.1/24 dev br0
		cl_in_sw ip link set br0 up
	fi
	ip netns exec "$cl_sw" etcd --name kmc --data-dir "$cl_tmp/etcd" \
		--listen-client-urls "$cl_etcd_ep" --advertise-client-urls "$cl_etcd_ep" \
		--listen-peer-urls http://127.0.0.1:2380 \
		--initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster kmc=http://127.0.0.1:2380 >>"$cl_tmp/etcd.log" 2>&1 &
	cl_etcd_pid=$!
	for _ in $(seq 100); do
		cl_etcdctl endpoint health >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	cl_fail "etcd did not start"
}

cl_etcd_stop() {
	kill -TERM "$cl_etcd_pid" 2>/dev/null || true
	wait "$cl_etcd_pid" 2>/dev/null || true
	cl_etcd_pid=
}

# cl_node_start N [keymapd -o options...]: node nN, 1 worker, mem store and one copy of
# every shard (no replica) unless given.
cl_node_start() {
	local n=$1 ns=${tag}n$1 t=${tag}t$1
	shift
	if ! ip netns list | grep -qw "$ns"; then
		ip netns add "$ns"
		ip netns exec "$ns" ip link set lo up
		ip link add "${tag}v$n" type veth peer name "${tag}w$n"
		ip link set "${tag}v$n" netns "$ns"
		ip link set "${tag}w$n" netns "$cl_sw"
		cl_in_sw ip link set "${tag}w$n" master br0 up
		ip netns exec "$ns" ip addr add "198.51.100.10$n/24" dev "${tag}v$n"
		ip netns exec "$ns" ip link set "${tag}v$n" up
	fi
	rm -rf "/var/run/dpdk/$ns"
	echo "---- start" >>"$cl_tmp/n$n.log"
	ip netns exec "$ns" "$bin/app/keymapd/keymapd" -o "net.ip=198.51.100.1$n" \
		-o cluster.name=demo -o "cluster.node=n$n" -o "cluster.etcd=$cl_etcd_ep" \
		-o "cluster.side_addr=198.51.100.10$n" -o cluster.ttl_s=3 \
		-o cluster.load_interval_ms=1000 -o cluster.replicas=1 -o store.driver=mem \
		-o workers.idle_sleep_us=1000 -o metrics.port=0 "$@" -- \
		--no-huge -m 256 --no-pci --file-prefix "$ns" \
		--vdev "net_tap0,iface=$t,mac=02:00:00:00:00:1$n" -l 0-1 >>"$cl_tmp/n$n.log" 2>&1 &
	cl_node_pid[$n]=$!
	for _ in $(seq 600); do
		sed -n '/^---- start$/h;//!H;${x;p}' "$cl_tmp/n$n.log" | grep -q "keymap.main: ready" && break
		kill -0 "${cl_node_pid[$n]}" 2>/dev/null || cl_fail "node n$n exited during start-up"
		sleep 0.1
	done
	sed -n '/^---- start$/h;//!H;${x;p}' "$cl_tmp/n$n.log" | grep -q "keymap.main: ready" ||
		cl_fail "node n$n not ready after 60 s"
	# Its tap onto the bridge, with a kernel-side MAC of its own.
	ip netns exec "$ns" ip link set "$t" netns "$cl_sw"
	cl_in_sw ip link set "$t" address "02:00:00:00:01:1$n"
	cl_in_sw ip link set "$t" master br0 up
}

# cl_node_cut N up|down: node nN's kernel link (etcd, side channel) up or down; its data
# path (the tap) still reaches the clients.
cl_node_cut() { cl_in_sw ip link set "${tag}w$1" "$2"; }

cl_node_stop() {
	local p=${cl_node_pid[$1]:-}

	[ -n "$p" ] || return 0
	kill -TERM "$p" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	unset "cl_node_pid[$1]"
}

cl_node_kill() {
	local p=${cl_node_pid[$1]:-}

	[ -n "$p" ] || return 0
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	unset "cl_node_pid[$1]"
}

# cl_placer_start N [keymap-placer options...]
cl_placer_start() {
	local n=$1
	shift
	ip netns exec "$cl_sw" "$bin/app/placer/keymap-placer" --etcd "$cl_etcd_ep" --cluster demo \
		--id "placer$n" --ttl 3 --interval-ms 500 "$@" >>"$cl_tmp/placer$n.log" 2>&1 &
	cl_placer_pid[$n]=$!
}

cl_placer_kill() {
	local p=${cl_placer_pid[$1]:-}

	[ -n "$p" ] || return 0
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	unset "cl_placer_pid[$1]"
}

# The current map, JSON ("" when none).
cl_map() { cl_etcdctl get /keymap/demo/map/current --print-value-only 2>/dev/null; }

# cl_map_py EXPR: EXPR in Python over the current map m (a dict; shards per node: per).
cl_map_py() {
	cl_map | python3 -c '
import json, sys
t = sys.stdin.read().strip()
m = json.loads(t) if t else {"epoch": 0, "nodes": [], "shards": []}
per = {n["id"]: 0 for n in m["nodes"]}
for s in m["shards"]:
    per[m["nodes"][s[1]]["id"]] += 1
print(eval(sys.argv[1]))' "$1"
}

# cl_wait_map SECONDS EXPR WHAT: until EXPR (cl_map_py) is True, or fail.
cl_wait_map() {
	local i
	for i in $(seq $(($1 * 5))); do
		[ "$(cl_map_py "$2" 2>/dev/null)" = True ] && return 0
		sleep 0.2
	done
	cl_fail "$3: not within $1 s (map: $(cl_map | head -c 600))"
}

# The leading placer's id (lowest creation revision under the election prefix), "" when none.
cl_leader() {
	cl_etcdctl get --prefix /keymap/demo/election -w json | python3 -c '
import base64, json, sys
kvs = json.load(sys.stdin).get("kvs", [])
kvs.sort(key=lambda k: int(k["create_revision"]))
print(json.loads(base64.b64decode(kvs[0]["value"]))["id"] if kvs else "")'
}
