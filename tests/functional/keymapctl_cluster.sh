#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# keymapctl's cluster commands against a private etcd and a cluster-mode keymapd, both in a
# private network namespace (etcd on its loopback):
#   a. etcd unreachable: nodes and cluster drain exit 1 with a message naming the endpoint;
#   b. a cluster written by hand with etcdctl (a map of three nodes, member records under
#      a lease, a drain key, load reports, a move in flight, a placer leader held by
#      etcdctl elect), then keymapd joining it as node n1;
#   c. keymapctl cluster (table and --json) against that keymapd;
#   d. keymapctl nodes, with etcd found through keymapd and with --etcd --cluster: table
#      and --json (live and down nodes, draining, joining, shards, load, leader, epoch);
#   e. cluster drain and undrain: the key written and deleted, what the placer will do,
#      asked twice, a bad node id, an empty cluster;
#   f. a map/current that does not decode: shown as such by nodes, exit 0.
# Removes the namespace, etcd, keymapd, its data and /var/run/dpdk/<prefix> even when it
# fails; every command is bounded by a timeout.
#
# usage: keymapctl_cluster.sh KEYMAPD KEYMAPCTL
#        (exit 77 = skipped: needs root, ip, etcd, etcdctl and python3)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
here=$(cd "$(dirname "$0")" && pwd)
tag=kmcctl
needs="etcd etcdctl python3"
# shellcheck source=lib.sh
. "$here/lib.sh"
[ -x /usr/bin/etcd ] || { echo "SKIP: needs /usr/bin/etcd (etcd-server)"; exit 77; }
export ETCDCTL_API=3

ep=http://127.0.0.1:2379
closed=http://127.0.0.1:2381
E=(timeout -k 2 10 ip netns exec "$ns" etcdctl --endpoints "$ep")
# keymapctl inside the namespace, where etcd is.
nctl=(timeout -k 2 20 ip netns exec "$ns" "$keymapctl" -f "$prefix")
A=(--etcd "$ep" --cluster t)

section "etcd in the namespace"
timeout 10 ip netns add "$ns"
"${in_ns[@]}" ip link set lo up
timeout -k 5 200 ip netns exec "$ns" /usr/bin/etcd --name default --data-dir "$tmp/etcd" \
	--listen-client-urls "$ep" --advertise-client-urls "$ep" \
	--listen-peer-urls http://127.0.0.1:2380 \
	--initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster default=http://127.0.0.1:2380 >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
for i in $(seq 150); do
	"${E[@]}" --command-timeout=1s endpoint health >/dev/null 2>&1 && break
	[ "$i" -lt 150 ] || { tail -20 "$tmp/etcd.log"; fail "etcd did not answer in 15 s"; }
	sleep 0.1
done

section "a. etcd unreachable"
expect 1 "^keymapctl: nodes: etcd $closed: connection refused$" \
	"${in_ns[@]}" "$keymapctl" nodes --etcd "$closed" --cluster t
expect 1 "^keymapctl: cluster: etcd $closed: connection refused$" \
	"${in_ns[@]}" "$keymapctl" cluster drain n1 --etcd "$closed" --cluster t
expect 1 "not a node id" "${in_ns[@]}" "$keymapctl" cluster drain 'n 1' "${A[@]}"
expect 2 "nothing under /keymap/t/ at $ep \\(no map, no member\\): is the cluster name right\\?" \
	"${in_ns[@]}" "$keymapctl" cluster drain n1 "${A[@]}"
"${E[@]}" get /keymap/t/drain/n1 | grep -q . && fail "a drain in an empty cluster wrote its key"
ok "nothing written by a refused drain"

section "b. a cluster written by hand, keymapd joins as n1"
# Shard 4 on n1 (keymapd, one worker), 5 and 6 on n2 (two workers, draining), 7 on n3
# (no member: down).
"${E[@]}" put /keymap/t/map/current '{"version":1,"epoch":3,"route_sep":"/","route_depth":1,"nodes":[{"id":"n1","ip":"198.51.100.2","port":7070,"workers":1,"incarnation":1,"state":"active"},{"id":"n2","ip":"198.51.100.3","port":7070,"workers":2,"incarnation":2,"state":"draining"},{"id":"n3","ip":"198.51.100.4","port":7070,"workers":1,"incarnation":1,"state":"active","down":true}],"shards":[[4,0,0],[5,1,0],[6,1,1],[7,2,0]]}' >/dev/null
lease=$("${E[@]}" lease grant 300 | awk '{print $2}')
[ -n "$lease" ] || fail "no lease granted"
"${E[@]}" put --lease="$lease" /keymap/t/members/n2 '{"id":"n2","ip":"198.51.100.3","port":7070,"workers":2,"incarnation":3,"state":"draining"}' >/dev/null
"${E[@]}" put --lease="$lease" /keymap/t/members/n4 '{"id":"n4","ip":"198.51.100.5","port":7070,"workers":1,"incarnation":1,"state":"active"}' >/dev/null
"${E[@]}" put /keymap/t/drain/n2 '{"at": 1764880000}' >/dev/null
"${E[@]}" put /keymap/t/load/n2 '{"epoch":3,"rates":[[5,10.5],[6,2.0]]}' >/dev/null
"${E[@]}" put /keymap/t/moves/6 '{"id":6,"epoch":3,"from":"n2","to":"n4","to_worker":0,"state":"copy"}' >/dev/null
# The placer's election, held until the namespace's processes are killed.
timeout -k 2 200 ip netns exec "$ns" etcdctl --endpoints "$ep" elect /keymap/t/election \
	'{"id":"p1","pid":4242,"host":"h1"}' >"$tmp/elect.log" 2>&1 &
elect_pid=$!
for i in $(seq 50); do
	"${E[@]}" get --prefix /keymap/t/election --keys-only | grep -q . && break
	[ "$i" -lt 50 ] || fail "etcdctl elect did not take the election in 5 s"
	sleep 0.1
done
start_keymapd 0-1 -o cluster.name=t -o cluster.node=n1 -o cluster.etcd="$ep" \
	-o cluster.load_interval_ms=300 -o store.driver=mem -o metrics.port=0
"${E[@]}" get /keymap/t/members/n1 | grep -q '"incarnation":1' || fail "no member record of n1"
ok "keymapd n1 serves map epoch 3"

section "c. keymapctl cluster"
expect 0 "^cluster +t$" "${ctl[@]}" cluster
for re in "^node +n1$" "^etcd +$ep \\(reachable\\)$" "^prefix +/keymap/t/$" "^incarnation +1$" \
	"^map epoch +3$" "^shards here +1$" "^maps +1 applied, 0 refused$" "^last error +none$"; do
	grep -Eq -- "$re" "$tmp/out" || { cat "$tmp/out"; fail "cluster: no line '$re'"; }
done
ok "cluster: node, etcd, prefix, incarnation, epoch, shards, maps"
cj cl cluster
check 'cl["cluster"] == 1 and cl["name"] == "t" and cl["node"] == "n1" and cl["etcd"] == "'"$ep"'" and cl["epoch"] == 3 and cl["incarnation"] == 1' \
	"cluster --json"

section "d. keymapctl nodes"
# n1's first load report (every 300 ms).
for i in $(seq 50); do
	"${E[@]}" get /keymap/t/load/n1 | grep -q rates && break
	[ "$i" -lt 50 ] || fail "no load report of n1 in 5 s"
	sleep 0.1
done
# etcd from keymapd's /keymap/cluster.
expect 0 "^cluster +t \\(etcd $ep, keys under /keymap/t/\\)$" "${nctl[@]}" nodes
cp "$tmp/out" "$tmp/nodes.txt"
for re in "^map +epoch 3, 3 nodes, 4 shards$" "^placer leader +p1 \\(pid 4242 on h1\\)$" \
	"^node +address +workers +incarnation +state +live +shards +replicas +load$" \
	"^n1 +198\\.51\\.100\\.2:7070 +1 +1 +active +live +1 +0 \\(0 in sync\\) +[0-9]+\\.[0-9]$" \
	"^n2 +198\\.51\\.100\\.3:7070 +2 +2 \\(member 3\\) +draining +live +2 +0 \\(0 in sync\\) +12\\.5$" \
	"^n3 +198\\.51\\.100\\.4:7070 +1 +1 +active +down +1 +0 \\(0 in sync\\) +-$" \
	"^n4 +198\\.51\\.100\\.5:7070 +1 +1 +joining +live +0 +- +-$" \
	"^  shard 6  n2 -> n4 \\(worker 0\\)  copy$"; do
	grep -Eq -- "$re" "$tmp/nodes.txt" || { cat "$tmp/nodes.txt"; fail "nodes: no line '$re'"; }
done
ok "nodes: map, leader, four nodes (live, down, draining, joining), move in flight"
expect 0 "" "${nctl[@]}" nodes "${A[@]}"
cmp -s "$tmp/out" "$tmp/nodes.txt" || { diff "$tmp/nodes.txt" "$tmp/out" || true; fail "nodes --etcd differs"; }
ok "nodes --etcd --cluster: the same table"
"${nctl[@]}" --json nodes "${A[@]}" >"$jdir/nd.json" || fail "nodes --json failed"
check 'nd["cluster"] == "t" and nd["epoch"] == 3 and nd["shards"] == 4 and nd["leader"]["id"] == "p1"' \
	"nodes --json: cluster, epoch, leader"
check '[(n["id"], n["state"], n["live"], n["shards"], n["in_map"]) for n in nd["nodes"]] == [("n1", "active", True, 1, True), ("n2", "draining", True, 2, True), ("n3", "active", False, 1, True), ("n4", "joining", True, 0, False)]' \
	"nodes --json: states, liveness, shards"
check 'nd["nodes"][1]["load"] == 12.5 and nd["nodes"][1]["drain_at"] == 1764880000 and nd["nodes"][1]["member_incarnation"] == 3 and isinstance(nd["nodes"][0]["load"], float) and nd["nodes"][2]["load"] is None' \
	"nodes --json: load, drain time, member incarnation"
check 'nd["moves"][0]["shard"] == 6 and nd["moves"][0]["to"] == "n4" and nd["drained_elsewhere"] == []' \
	"nodes --json: moves"

section "e. cluster drain, undrain"
expect 0 "^n1: drain asked \\(/keymap/t/drain/n1, at [0-9T:-]+Z\\)$" "${nctl[@]}" cluster drain n1
grep -q "^the placer moves the 1 shard of n1, a few at a time, each to the least loaded of n4 (joining), then removes n1 from the map$" \
	"$tmp/out" || { cat "$tmp/out"; fail "drain n1: what the placer does"; }
"${E[@]}" get --print-value-only /keymap/t/drain/n1 | grep -Eq '^\{"at": [0-9]+\}$' ||
	fail "drain n1: no key"
ok "drain n1: key written, n4 the only target (n2 draining, n3 down)"
expect 0 "^n1: already draining \\(/keymap/t/drain/n1, asked at " "${nctl[@]}" cluster drain n1
expect 0 "^n1 +198\\.51\\.100\\.2:7070 .* active, drain asked +live " "${nctl[@]}" nodes
expect 0 "^n3 is down: its 1 shard waits for it" "${nctl[@]}" cluster drain n3 "${A[@]}"
expect 0 "^n4 is a member outside the map: the placer does not add it while it is drained$" \
	"${nctl[@]}" cluster drain n4 "${A[@]}"
expect 0 "^n9 is neither in the map nor a member" "${nctl[@]}" cluster drain n9 "${A[@]}"
expect 0 "^no other node is active and live: the 1 shard of n1 stays until one is$" \
	"${nctl[@]}" cluster drain n1
"${nctl[@]}" --json nodes "${A[@]}" >"$jdir/nd2.json" || fail "nodes --json failed"
check 'nd2["drained_elsewhere"] == ["n9"] and all("drain_at" in n for n in nd2["nodes"])' \
	"nodes --json: every node drained, n9 outside"
expect 0 "^n2: drain withdrawn \\(/keymap/t/drain/n2 deleted\\)$" "${nctl[@]}" cluster undrain n2
grep -q "^the placer marks n2 active at its next decision; it receives its fair share of shards again$" \
	"$tmp/out" || { cat "$tmp/out"; fail "undrain n2: what the placer does"; }
expect 0 "^n2: was not draining \\(no /keymap/t/drain/n2\\): nothing changes$" \
	"${nctl[@]}" cluster undrain n2
"${nctl[@]}" --json cluster drain n1 >"$jdir/dr.json" || fail "--json cluster drain failed"
check 'dr["node"] == "n1" and dr["draining"] and not dr["changed"] and dr["key"] == "/keymap/t/drain/n1" and "n2" in dr["placer"]' \
	"cluster drain --json: already draining, n2 now a target"
for n in n1 n3 n4 n9; do
	expect 0 "^$n: drain withdrawn" "${nctl[@]}" cluster undrain "$n" "${A[@]}"
done
[ -z "$("${E[@]}" get --prefix /keymap/t/drain/ --keys-only)" ] || fail "drain keys left"
ok "every drain key removed"

section "f. a map/current that does not decode"
"${E[@]}" put /keymap/t/map/current '{"version":1,"epoch":4,"nodes":[' >/dev/null
expect 0 "^map +MALFORMED: map/current \\(revision [0-9]+\\) does not decode: invalid JSON" \
	"${nctl[@]}" nodes "${A[@]}"
grep -Eq "^n1 +198\\.51\\.100\\.2:7070 +1 +1 +active +live +- " "$tmp/out" ||
	{ cat "$tmp/out"; fail "malformed map: members still listed"; }
"${nctl[@]}" --json nodes "${A[@]}" >"$jdir/bad.json" || fail "nodes --json failed"
check 'bad["epoch"] is None and bad["map_error"].startswith("invalid JSON") and [n["id"] for n in bad["nodes"]] == ["n1", "n2", "n4"]' \
	"nodes --json: map_error, members listed"
expect 0 "does not decode .*: the placer does nothing until it is fixed or deleted" \
	"${nctl[@]}" cluster drain n2 "${A[@]}"
expect 0 "^map epoch +3$" "${ctl[@]}" cluster
ok "keymapd keeps map epoch 3"

stop_server || fail "keymapd exited with an error"
kill -TERM "$elect_pid" "$etcd_pid" 2>/dev/null || true
wait "$elect_pid" "$etcd_pid" 2>/dev/null || true
echo "PASS: $checks checks in $((SECONDS - t_start)) s"
