#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# A keymap cluster on one machine (cluster_env.sh: a switch namespace with etcd, the
# placers and the clients; one namespace per keymapd node):
#   a. etcd, two keymap-placers, two nodes: the first map spreads 8 shards over both;
#   b. a checked random workload (reshard_client, every reply against its model) while a
#      third node joins: the placer moves about a third of the shards to it, across nodes;
#      SCANs of entities on every node through the seeds;
#   c. the same while the first node is drained, then it stops; every move was copied live
#      (the shard served during its copy);
#   d. the leading placer killed (kill -9): the standby takes over and adds the first node
#      back; every map kept in etcd decodes, epochs strictly increase; a watch on the maps
#      during the failover shows each map/<E> written once and map/current rising;
#   e. under the workload, etcd stopped for longer than the nodes' lease (ttl_s 3) and the
#      nodes cut off from it until their leases expired: they serve their last map
#      meanwhile, and each registers again (serving) after.
# Each workload's history is checked for linearizability (tests/lincheck).
# Bounded in time; everything is removed afterwards, also on failure.
#
# usage: cluster.sh BUILD_DIR RESHARD_CLIENT   (exit 77 = skipped: no etcd, not root)
set -euo pipefail
shopt -s inherit_errexit

bin=${1:?usage: cluster.sh BUILD_DIR RESHARD_CLIENT}
rclient=${2:?usage: cluster.sh BUILD_DIR RESHARD_CLIENT}
tag=kc$$ # unique: two runs at once do not meet
# shellcheck source=cluster_env.sh
. "$(dirname "$0")/cluster_env.sh"
trap cl_cleanup EXIT
trap 'exit 1' INT TERM

hosts=198.51.100.11,198.51.100.12,198.51.100.13
rc_pid=

"$bin/app/placer/keymap-placer" --version | grep -Eq '^keymap-placer [0-9]+\.[0-9]+\.[0-9]+$' || {
	echo "FAIL: keymap-placer --version"
	exit 1
}

# load SEED SECONDS: the checked workload in the background (rc_pid), 2,000 keys.
load() {
	timeout -k 5 $(($2 + 60)) ip netns exec "$cl_sw" "$rclient" -h "$hosts" -n 2000 \
		-s "$1" -d "$2" --preload --history "$cl_tmp/history$1.jsonl" >"$cl_tmp/load$1.out" 2>&1 &
	rc_pid=$!
}

# load_ok SEED: the workload ended without an error, a mismatch or a lost key, and its
# history is linearizable (tests/lincheck).
load_ok() {
	local rc=0

	wait "$rc_pid" || rc=$?
	rc_pid=
	grep '^ops ' "$cl_tmp/load$1.out" || true
	[ "$rc" -eq 0 ] || { tail -20 "$cl_tmp/load$1.out"; cl_fail "workload $1: exit $rc"; }
	timeout 120 python3 "$(dirname "$0")/../lincheck/lincheck.py" "$cl_tmp/history$1.jsonl" ||
		cl_fail "workload $1: its history is not linearizable"
	echo "ok: workload $1: no error, mismatch or lost key"
}


cl_section "a. etcd, two placers, two nodes"
cl_etcd_start
cl_placer_start 1 --shards 8 --max-moves 2
cl_placer_start 2 --shards 8 --max-moves 2
cl_node_start 1
cl_node_start 2
cl_wait_map 30 "sorted(per.values()) == [4, 4]" "the first map: 8 shards over n1 and n2"
echo "ok: first map, epoch $(cl_map_py "m['epoch']"), shards per node $(cl_map_py per)"

cl_section "b. a third node joins under a checked workload"
load 1 25
sleep 3
cl_node_start 3
cl_wait_map 45 "len(per) == 3 and min(per.values()) >= 2 and sum(per.values()) == 8" \
	"n3 received its share"
echo "ok: shards per node $(cl_map_py per)"
# keymapctl: this node in its cluster, and the cluster as etcd has it.
timeout 20 ip netns exec "${tag}n1" "$bin/tools/keymapctl" -f "${tag}n1" cluster |
	grep -q "^node  *n1$" || cl_fail "keymapctl cluster does not show node n1"
timeout 20 ip netns exec "${tag}n1" "$bin/tools/keymapctl" -f "${tag}n1" --json nodes |
	python3 -c '
import json, sys
n = json.load(sys.stdin)["nodes"]
assert sorted(x["id"] for x in n) == ["n1", "n2", "n3"], n
assert all(x["live"] and x["state"] == "active" for x in n), n
assert sum(x["shards"] for x in n) == 8, n' || cl_fail "keymapctl nodes"
echo "ok: keymapctl cluster and nodes"
# SCAN through the cluster: entities on every node, each scanned from the seeds.
cli=(timeout -k 2 20 ip netns exec "$cl_sw" "$bin/tools/keymap-cli" -h "$hosts")
for e in 0 1 2 3 4 5 6 7; do
	for i in 1 2 3; do
		"${cli[@]}" put "cs$e/k$i" "v$e.$i" >/dev/null || cl_fail "put cs$e/k$i"
	done
	got=$("${cli[@]}" scan "cs$e/" | sort | tr '\t\n' '= ') || cl_fail "scan cs$e/"
	[ "$got" = "cs$e/k1=v$e.1 cs$e/k2=v$e.2 cs$e/k3=v$e.3 " ] || cl_fail "scan cs$e/: $got"
done
echo "ok: SCAN of 8 entities through the cluster's nodes"
load_ok 1

cl_section "c. the first node drained under the workload, then stopped"
load 2 20
sleep 2
cl_etcdctl put /keymap/demo/drain/n1 '{"at": 0}' >/dev/null
cl_wait_map 45 "per.get('n1', 0) == 0 and sum(per.values()) == 8" "n1 drained"
echo "ok: shards per node $(cl_map_py per)"
load_ok 2
# The moves of b and c copied live: a shard answered BUSY only for the switch.
grep -ho "dropped here after [0-9]* ms ([a-z]* copy), [0-9]* ms of them unavailable" \
	"$cl_tmp"/n*.log || true
[ "$(cat "$cl_tmp"/n*.log | grep -c "(live copy)")" -ge 3 ] ||
	cl_fail "fewer than 3 moves copied live"
! grep -h -B3 "sending it whole" "$cl_tmp"/n*.log || cl_fail "a move fell back to a whole copy"
echo "ok: the moves copied live"
cl_node_stop 1

cl_section "d. the leading placer killed: the standby takes over"
lead=$(cl_leader)
[ -n "$lead" ] || cl_fail "no placer leads"
echo "leader: $lead"
# Every write under map/ during the failover (bounded: killed below, 90 s at most).
timeout -k 2 90 ip netns exec "$cl_sw" etcdctl --endpoints "$cl_etcd_ep" watch --prefix \
	/keymap/demo/map/ -w json >"$cl_tmp/mapwatch.json" 2>"$cl_tmp/mapwatch.err" &
watch_pid=$!
sleep 0.5
cl_placer_kill "${lead#placer}"
cl_etcdctl del /keymap/demo/drain/n1 >/dev/null
cl_node_start 1
cl_wait_map 45 "per.get('n1', 0) >= 2" "the standby gave n1 shards again"
[ "$(cl_leader)" != "$lead" ] || cl_fail "$lead still leads"
echo "ok: $(cl_leader) leads, shards per node $(cl_map_py per)"
sleep 1
kill "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true
# No conflicting map: each map/<E> put once (version 1) and never again, map/current put
# only with the bytes of the map/<E> of its revision, its epochs strictly rising.
python3 - "$cl_tmp/mapwatch.json" <<'PY' || cl_fail "maps written during the failover"
import base64, json, sys
put, cur = {}, []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    for ev in json.loads(line).get("Events") or []:
        if ev.get("type") == 1:
            continue  # a map out of the window of the last 100
        kv = ev["kv"]
        key = base64.b64decode(kv["key"]).decode()
        val = base64.b64decode(kv.get("value", ""))
        rev = int(kv["mod_revision"])
        if key.endswith("/current"):
            cur.append((rev, json.loads(val)["epoch"], val))
            continue
        assert key not in put, "%s written twice" % key
        assert int(kv.get("version", 0)) == 1 and int(kv["create_revision"]) == rev, \
            "%s overwritten: %s" % (key, kv)
        put[key] = (rev, val)
assert cur, "no map published during the failover"
epochs = [e for _, e, _ in cur]
assert epochs == sorted(set(epochs)), "map/current epochs %s" % epochs
for rev, e, val in cur:
    k = [key for key in put if key.endswith("/map/%d" % e)]
    assert k and put[k[0]] == (rev, val), "map/current of epoch %d is not map/%d" % (e, e)
print("ok: %d maps published during the failover (epochs %s), each once" %
      (len(cur), ",".join(map(str, epochs))))
PY
# Every map kept decodes; epochs strictly increase, one map per epoch.
cl_etcdctl get --prefix /keymap/demo/map/ -w json | python3 -c '
import base64, json, sys
kvs = json.load(sys.stdin)["kvs"]
epochs = []
for kv in kvs:
    key = base64.b64decode(kv["key"]).decode()
    m = json.loads(base64.b64decode(kv["value"]))
    if key.endswith("/current"):
        continue
    assert key.endswith("/%d" % m["epoch"]), key
    epochs.append(m["epoch"])
epochs.sort()
assert epochs == list(range(epochs[0], epochs[0] + len(epochs))), epochs
print("ok: %d maps kept, epochs %d..%d, no two alike" % (len(epochs), epochs[0], epochs[-1]))'

cl_section "e. etcd stopped, the nodes cut off from it for longer than their lease"
# etcd stopped for longer than the TTL (ttl_s 3) and the nodes' links to it down until
# their leases expired (a restarted etcd gives every lease its TTL again): the nodes serve
# their last map meanwhile, then register again.
load 3 25
sleep 3
for n in 1 2 3; do cl_node_cut "$n" down; done
cl_etcd_stop
sleep 5
cl_etcd_start
sleep 6
for n in 1 2 3; do cl_node_cut "$n" up; done
for n in 1 2 3; do
	ok=
	for _ in $(seq 100); do
		rec=$(cl_etcdctl get "/keymap/demo/members/n$n" --print-value-only 2>/dev/null) || true
		if [ -n "$rec" ] && python3 -c '
import json, sys
r = json.loads(sys.argv[1])
assert r["id"] == sys.argv[2] and r.get("serving") is True' "$rec" "n$n" 2>/dev/null; then
			ok=1
			break
		fi
		sleep 0.2
	done
	[ -n "$ok" ] || cl_fail "node n$n did not register again after etcd came back: '$rec'"
done
for n in 1 2 3; do
	grep -q "membership lease expired" "$cl_tmp/n$n.log" ||
		cl_fail "the lease of node n$n did not expire: the test did not test it"
done
echo "ok: every node registered again (serving) after its lease expired"
load_ok 3
for n in 1 2 3; do
	kill -0 "${cl_node_pid[$n]}" || cl_fail "node n$n exited"
done
echo "ok: the nodes served through the etcd outage"
echo "PASS"
