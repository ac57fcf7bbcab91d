#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# keymapctl against mock_telemetry.py (no DPDK, no root): every command, its table and
# --json output, and every exit status: 0 success, 1 bad usage (found without contacting
# the server) or transport error (no socket, nothing listening, timeout, bad JSON, closed
# connection), 2 refused by the server or unknown to it; shards paging, stats --watch,
# metrics over HTTP (ok, disabled, HTTP error); tier, compact, prefetch and the store and
# cache sections of stats against a mock of the log driver, and the 60 s default timeout
# of tier and compact. Bounded in time; stops the mocks and removes its files even when it
# fails.
#
# usage: keymapctl_mock.sh KEYMAPCTL [MOCK_TELEMETRY_PY]   (exit 77 = skipped: no python3)
set -euo pipefail

ctl=$1
mock=${2:-$(dirname "$0")/mock_telemetry.py}
if ! command -v python3 >/dev/null; then
	echo "SKIP: needs python3 for the mock telemetry server"
	exit 77
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "FAIL: $*"
	exit 1
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_mock SOCKET [OPTIONS]: start a mock and wait until its socket exists.
start_mock() {
	local sock=$1
	shift
	python3 "$mock" "$@" "$sock" 2>>"$tmp/mock.log" &
	pids+=($!)
	for _ in $(seq 100); do
		[ -S "$sock" ] && return 0
		sleep 0.05
	done
	cat "$tmp/mock.log"
	fail "mock $* $sock did not start"
}

# run ARGS...: keymapctl with a hard time limit; stdout in $tmp/out, stderr in $tmp/err,
# exit status in $rc.
run() {
	rc=0
	timeout -k 2 20 "$ctl" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
}

# expect CODE PATTERN ARGS...: exit status CODE and PATTERN (grep -E) in stdout + stderr.
expect() {
	local want=$1 pattern=$2
	shift 2
	run "$@"
	if [ "$rc" -ne "$want" ] || ! cat "$tmp/out" "$tmp/err" | grep -Eq -- "$pattern"; then
		cat "$tmp/out" "$tmp/err"
		fail "keymapctl $*: exit $rc (want $want), output should match '$pattern'"
	fi
}

# expect_json ARGS...: against the main mock, exit 0 and valid JSON on stdout.
expect_json() {
	expect 0 "" "${S[@]}" --json "$@"
	python3 -m json.tool "$tmp/out" >/dev/null || { cat "$tmp/out"; fail "keymapctl --json $*: not JSON"; }
}

# json_check EXPR: EXPR (Python, the JSON of $tmp/out as d) holds.
json_check() {
	python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert ('"$1"'), d' \
		"$tmp/out" || { cat "$tmp/out"; fail "JSON output: $1"; }
}

# run_bg NAME ARGS...: keymapctl in the background (its pid added to bg), stdout, stderr
# and exit status in $tmp/NAME.out, .err, .rc.
bg=()
run_bg() {
	local name=$1
	shift
	{
		local r=0
		timeout -k 2 70 "$ctl" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || r=$?
		echo "$r" >"$tmp/$name.rc"
	} &
	bg+=($!)
}

# check_bg NAME CODE PATTERN: what run_bg NAME left.
check_bg() {
	local name=$1 want=$2 pattern=$3
	if [ "$(cat "$tmp/$name.rc")" -ne "$want" ] ||
		! cat "$tmp/$name.out" "$tmp/$name.err" | grep -Eq -- "$pattern"; then
		cat "$tmp/$name.out" "$tmp/$name.err"
		fail "$name: exit $(cat "$tmp/$name.rc") (want $want), output should match '$pattern'"
	fi
}

port=$(free_port)
sock=$tmp/rt/dpdk/kmmock/dpdk_telemetry.v2
mkdir -p "$(dirname "$sock")"
start_mock "$sock" --metrics-port "$port" --page 5
S=(-s "$sock")

# Usage: exit 1 with the usage line, without contacting a server (the socket does not
# exist: a connection attempt would say "not running").
none=$tmp/none.sock
for args in "" "bogus" "status extra" "stats --watch 0" "stats --watch=x" "stats --watch 2 3" \
	"stats --interval 0" "stats --interval x" "stats --interval" "stats worker" "stats worker x" \
	"stats --bogus" "top x" "top -n 0" "top --interval 0" "top -n" \
	"shards 1" "config nodot" "config a.b c" "set a.b" "set nodot 1" "set a.b 1 2" \
	"split" "split x" "split 0" "split 1 2" "merge" "merge -1" "move 5" "move 5 x" \
	"move x 1" "move 5 70000" "log-level a,b" "log-level a b" "raw" "raw nocmd" \
	"metrics --metrics-url nope" "metrics --metrics-url 127.0.0.1:0" "metrics extra" \
	"stats --json" "tier" "tier 16" "tier x cold" "tier 0 cold" "tier -1 cold" "tier 16 warm" \
	"tier 16 HOT" "tier cold 16" "tier 16 cold 1" "compact" "compact x" "compact 0" \
	"compact 16 17" "prefetch a b" "prefetch a,b" "prefetch ,"; do
	# shellcheck disable=SC2086 # word splitting of args is wanted
	expect 1 '^usage: keymapctl' -s "$none" $args
	if grep -q 'not running' "$tmp/err"; then fail "keymapctl $args contacted the server"; fi
done
expect 1 'exclude each other' -s "$none" -f keymap status
expect 1 "^keymapctl: tier: 'warm' is not a tier \\(hot or cold\\)$" -s "$none" tier 16 warm
expect 1 '^keymapctl: prefetch: a key with a comma cannot be sent \(telemetry parameters are comma-separated\)$' \
	-s "$none" prefetch user,42
key251=$(printf 'k%.0s' $(seq 251))
key250=${key251:1}
for args in "" "$key251"; do
	expect 1 "^keymapctl: prefetch: a key is 1 to 250 bytes, not ${#args}$" -s "$none" prefetch "$args"
	grep -q '^usage: keymapctl' "$tmp/err" || fail "prefetch of ${#args} bytes: no usage line"
done
expect 1 '^usage: keymapctl' -s "$none" -T 0 status
expect 1 '^usage: keymapctl' -s "$none" -T x status
expect 1 '^usage: keymapctl' -s "$none" --bogus status
expect 1 'metrics command only' -s "$none" --metrics-url "127.0.0.1:$port" status
expect 0 '^usage: keymapctl' --help
for cmd in 'tier ID hot\|cold' 'compact ID' 'prefetch \[KEY\]' \
	'split, merge, move, tier and compact'; do
	grep -Eq "$cmd" "$tmp/out" || fail "--help does not list '$cmd'"
done
expect 0 '^usage: keymapctl' help

# Transport errors: exit 1; keymapd not running: exit 3.
expect 3 "keymapd is not running \\(no socket at $none\\)" -s "$none" status
RUNTIME_DIRECTORY=$tmp/empty expect 3 "no socket at $tmp/empty/dpdk/keymap/dpdk_telemetry.v2" status
python3 -c "import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.bind(sys.argv[1])" "$tmp/stale.sock"
expect 3 'keymapd is not running \(nothing listens' -s "$tmp/stale.sock" status
expect 1 'bad JSON' "${S[@]}" raw /mock/garbage
expect 1 'closed the connection' "${S[@]}" raw /mock/close
start_mock "$tmp/slow.sock" --delay 3
t0=$(date +%s%N)
expect 1 'no reply from keymapd within 1 s' -s "$tmp/slow.sock" -T 1 status
[ $(($(date +%s%N) - t0)) -lt 2500000000 ] || fail "-T 1 took more than 2.5 s"
start_mock "$tmp/mute.sock" --hello-delay 3
expect 1 'no hello from keymapd within 0.5 s' -s "$tmp/mute.sock" -T 0.5 status

# The socket path from the file prefix ($RUNTIME_DIRECTORY as DPDK's EAL).
RUNTIME_DIRECTORY=$tmp/rt expect 0 'net_tap0' -f kmmock status

# Success, tables.
expect 0 '^udp ports +7070-7071$' "${S[@]}" status
grep -Eq '^metrics +http://127\.0\.0\.1:[0-9]+/metrics$' "$tmp/out" || fail "status: metrics line"
expect 0 '^counter +total +w0 +w1$' "${S[@]}" stats
grep -Eq '^rx_packets( +[0-9]+){3}$' "$tmp/out" || fail "stats: rx_packets row"
grep -q 'requests/s' "$tmp/out" || fail "stats: summary line"
grep -Eq '^to_cold +0 +- +-$' "$tmp/out" || fail "stats: control counters, total only"
# The mem driver: no store or cache section, the counter table is the last thing.
if grep -Eq '^(store|cache) ' "$tmp/out"; then fail "stats: store or cache section with mem"; fi
[ "$(grep -c '^$' "$tmp/out")" -eq 1 ] || fail "stats: more than summary and counters"
tail -n 1 "$tmp/out" | grep -Eq '^tier_failures( +[0-9-]+){3}$' || fail "stats: last line"

# Paging: 16 shards, 5 per page: 4 requests, every shard once, in order.
expect 0 '^epoch [0-9]+, 16 shards$' "${S[@]}" shards
[ "$(grep -Ec '^[0-9]+ +4 +0x[0-9a-f]/4 ' "$tmp/out")" -eq 16 ] || fail "shards: 16 rows"
grep -Eq '^31 +4 +0xf/4 +1 +1555 +149280 +875\.0 +mem +ok$' "$tmp/out" || fail "shards: row of 31"
expect_json shards
python3 - "$tmp/out" <<'EOF' || fail "shards --json: pages not merged"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["nb_shards"] == 16 and d["next"] == 16, d
assert d["id"] == list(range(16, 32)), d["id"]
assert all(len(d[k]) == 16 for k in ("depth", "owner", "keys", "bytes", "rate", "tier"))
EOF

# stats --watch 2: two blocks a second apart, rates in the second.
t0=$(date +%s%N)
expect 0 'w1/s' "${S[@]}" stats --watch 2
[ "$(grep -c '^counter' "$tmp/out")" -eq 2 ] || fail "stats --watch 2: two blocks"
grep -Eq '^rx_packets +[0-9]+ +- ' "$tmp/out" || fail "stats --watch: no rate in the first block"
grep -Eq '^rx_packets +[0-9]+ +[0-9]+\.[0-9] ' "$tmp/out" || fail "stats --watch: rates"
elapsed=$(($(date +%s%N) - t0))
if [ "$elapsed" -lt 900000000 ] || [ "$elapsed" -ge 5000000000 ]; then
	fail "stats --watch 2 took ${elapsed} ns"
fi

# Configuration.
expect 0 '^shards\.split_rate +50000 +yes$' "${S[@]}" config
grep -Eq '^net\.ip +198\.51\.100\.2 +no$' "$tmp/out" || fail "config: net.ip row"
expect 0 '^50000$' "${S[@]}" config shards.split_rate
[ "$(wc -l <"$tmp/out")" -eq 1 ] || fail "config KEY: one line"
expect 0 '^shards\.split_rate: 50000 -> 80000$' "${S[@]}" set shards.split_rate 80000
expect 0 '^shards\.split_rate: 80000 -> 90000$' "${S[@]}" set shards.split_rate=90000
expect 0 '^security\.allow: 0\.0\.0\.0/0 -> 10\.0\.0\.0/8,192\.168\.0\.0/16$' \
	"${S[@]}" set security.allow=10.0.0.0/8,192.168.0.0/16

# Refused by the server: exit 2, its message on stderr.
expect 2 '^keymapctl: set: net\.ip cannot change while keymapd runs' "${S[@]}" set net.ip 192.0.2.1
expect 2 '^keymapctl: config: unknown tunable no\.such' "${S[@]}" config no.such
expect 2 '^keymapctl: split: no shard 999 in the map' "${S[@]}" split 999
expect 2 '^keymapctl: move: no worker 9' "${S[@]}" move 17 9
expect 2 '^keymapctl: log-level: unknown log level' "${S[@]}" log-level loud
expect 2 '^keymapctl: tier: \[store\] driver mem keeps no files: no tiers, nothing to compact$' \
	"${S[@]}" tier 16 cold
expect 2 '^keymapctl: compact: \[store\] driver mem keeps no files' "${S[@]}" compact 16
# Unknown to the server (null reply): exit 2.
expect 2 'keymapd does not know /keymap/nope' "${S[@]}" raw /keymap/nope

# Re-sharding, one line each.
expect 0 '^shard 16 split into 32 and 33 \(worker 0\): 1000 keys copied while serving in 12 ms, paused 150 us, epoch 2$' \
	"${S[@]}" split 16
expect 0 '^shards 32 and 33 merged into 16 \(worker 0\): 1000 keys copied while serving in 9 ms, paused 80 us, epoch 3$' \
	"${S[@]}" merge 33
expect 0 '^shard 17 moved from worker 1 to worker 0: 1037 keys, paused 200 us, epoch 4$' \
	"${S[@]}" move 17 0
expect 0 "^prefetch 'user:42': queued$" "${S[@]}" prefetch user:42
# Predictive prefetch's figures: the summary lines, the model table, the transitions in
# rank order.
expect 0 '^prefetch   off' "${S[@]}" prefetch
for line in '^result     accuracy 0.566, coverage 0.510$' \
	'^workers    issued 89017 used 50263 unused 38497 late 3 ' \
	'^control    samples 100000 sent 146018 started 88880 nothing 19714 absent 37424 ' \
	'^template +1 +40 +20 +0.500$' '^u#/profile +u#/cart +template +12294 +0.701$'; do
	grep -Eq -- "$line" "$tmp/out" || fail "keymapctl prefetch: no line '$line'"
done
[ "$(grep -En 'u#/profile|u745/cart' "$tmp/out" | cut -d: -f2 | tr -d ' ' | cut -c1-5)" = \
	"$(printf 'u#/pr\nu745/')" ] || fail "keymapctl prefetch: transitions not in rank order"
expect 1 '^usage: keymapctl' "${S[@]}" prefetch a b
expect 0 '^log level: info$' "${S[@]}" log-level
expect 0 '^log level: debug$' "${S[@]}" log-level debug
expect 0 '"/keymap/stats"' "${S[@]}" raw /help,/keymap/stats

# --json: valid JSON for every command.
expect_json status
expect_json stats
expect_json config
expect_json config shards.split_rate
expect_json set shards.hysteresis=4
expect_json split 18
expect_json merge 37
expect_json move 19 0
expect_json log-level
expect_json prefetch user:42
json_check 'd == {"prefetch": "queued"}'
expect_json prefetch
json_check 'd["top"]["1"]["to"] == "u#/cart" and d["per_model"]["template"]["used"] == 20'
expect_json raw /info
python3 -c 'import json, sys; assert json.load(open(sys.argv[1]))["max_output_len"] == 16384' \
	"$tmp/out" || fail "raw /info --json"

# Metrics: address from status, or given; disabled; HTTP error; nothing listening.
expect 0 '^keymap_requests_total\{worker="1"\} 2000000$' "${S[@]}" metrics
expect 0 '^keymap_shards 16$' "${S[@]}" metrics --metrics-url "127.0.0.1:$port"
expect 0 '^keymap_shards 16$' -s "$none" --metrics-url "127.0.0.1:$port" metrics
start_mock "$tmp/nometrics.sock"
expect 2 '^keymapctl: metrics endpoint disabled \(\[metrics\] port = 0\)$' \
	-s "$tmp/nometrics.sock" metrics
port2=$(free_port)
start_mock "$tmp/http503.sock" --metrics-port "$port2" --http-status 503
expect 2 'HTTP/1\.[01] 503' -s "$tmp/http503.sock" metrics
expect 1 'cannot connect to 127\.0\.0\.1:1: Connection refused' "${S[@]}" metrics --metrics-url 127.0.0.1:1

# The log driver: tiers, compaction, prefetch, the store and cache sections of stats.
start_mock "$tmp/log.sock" --store log
L=(-s "$tmp/log.sock")
expect 0 '^shard 17 moved to the cold tier: 1037 keys, paused 2300 us$' "${L[@]}" tier 17 cold
[ "$(wc -l <"$tmp/out")" -eq 1 ] || fail "tier: one line"
expect 2 '^keymapctl: tier: shard 17 is already cold$' "${L[@]}" tier 17 cold
[ ! -s "$tmp/out" ] || fail "tier refused: something on stdout"
expect 0 '^17 +4 +0x1/4 +1 +1037 +99552 +525\.0 +cold +ok$' "${L[@]}" shards
grep -Eq '^16 +4 +0x0/4 .* hot +ok$' "$tmp/out" || fail "shards: tier of 16"
expect 0 '^cold_shards +1$' "${L[@]}" stats
grep -Eq '^to_cold +1 +- +-$' "$tmp/out" || fail "stats: to_cold after a tier change"
expect 0 '^shard 17 moved to the hot tier: 1037 keys, paused 2300 us$' "${L[@]}" tier 17 hot
expect 2 '^keymapctl: tier: no shard 999 in map epoch 1$' "${L[@]}" tier 999 hot
expect 0 '^shard 16 compacted: 1000 keys, paused 900 us$' "${L[@]}" compact 16
expect 2 '^keymapctl: compact: no shard 999 in map epoch 1$' "${L[@]}" compact 999
expect 0 "^prefetch 'user:42': queued$" "${L[@]}" prefetch user:42
expect 0 "^prefetch 'a b': queued$" "${L[@]}" prefetch 'a b'
expect 0 "^prefetch '$key250': queued$" "${L[@]}" prefetch "$key250"
expect 2 '^keymapctl: prefetch: no room now, try again$' "${L[@]}" prefetch full:1
[ ! -s "$tmp/out" ] || fail "prefetch refused: something on stdout"
expect 0 '' "${L[@]}" --json tier 18 cold
json_check 'd == {"shard": 18, "done": "cold", "keys": 1074, "pause_us": 2300}'
expect 0 '' "${L[@]}" --json compact 18
json_check 'd == {"shard": 18, "done": "compacted", "keys": 1074, "pause_us": 900}'
expect 0 '' "${L[@]}" --json prefetch user:43
json_check 'd == {"prefetch": "queued"}'
expect 2 '^keymapctl: tier: shard 18 is already cold$' "${L[@]}" --json tier 18 cold
[ ! -s "$tmp/out" ] || fail "--json tier refused: something on stdout"

# Stats with the store and cache sections, after the counters, in keymapd's order.
expect 0 '^store +value$' "${L[@]}" stats
grep -Eq '^durability +sync$' "$tmp/out" || fail "stats: store durability"
grep -Eq '^cold_shards +1$' "$tmp/out" || fail "stats: cold_shards"
grep -Eq '^writes_lost +0$' "$tmp/out" || fail "stats: writes_lost"
grep -Eq '^cache +value$' "$tmp/out" || fail "stats: cache section"
grep -A1 -E '^misses +[0-9]+$' "$tmp/out" | grep -Eq '^hit_ratio +90\.0%$' ||
	fail "stats: hit ratio after the misses"
grep -Eq '^capacity +134217728$' "$tmp/out" || fail "stats: cache capacity"
grep -Eq '^compactions +2 +- +-$' "$tmp/out" || fail "stats: compactions counter"
[ "$(grep -c '^$' "$tmp/out")" -eq 3 ] || fail "stats: summary, counters, store, cache"
awk '/^counter /{c=NR} /^store /{s=NR} /^cache /{k=NR} END{exit !(c < s && s < k)}' \
	"$tmp/out" || fail "stats: sections out of order"
expect 0 '' "${L[@]}" --json stats
json_check 'd["store"]["durability"] == "sync" and d["cache"]["capacity"] == 134217728 and
	d["total"]["to_cold"] == 2 and "w0" in d'
expect 0 '^cache +value +value/s$' "${L[@]}" stats --watch 2
[ "$(grep -c '^store ' "$tmp/out")" -eq 2 ] || fail "stats --watch 2: two store sections"
grep -Eq '^disk_reads +[0-9]+ +[0-9]+\.[0-9]$' "$tmp/out" || fail "stats --watch: store rates"
grep -Eq '^hit_ratio +90\.0% +-$' "$tmp/out" || fail "stats --watch: hit ratio row"

# Cluster commands on a single node: cluster says so; nodes and drain need --etcd (exit
# 2); bad arguments are usage errors (exit 1) found before contacting anything; etcd that
# does not answer is a transport error (exit 1) that names the endpoint.
expect 0 '^single node: keymapd runs without a \[cluster\] section$' "${S[@]}" cluster
expect_json cluster
json_check 'd == {"cluster": 0}'
expect 2 'keymapd \(.*\) runs as a single node, not in a cluster: give --etcd ENDPOINTS --cluster NAME' \
	"${S[@]}" nodes
expect 2 'runs as a single node' "${S[@]}" cluster drain n1
for args in "cluster drain" "cluster drain a/b" "cluster drain n1 n2" "cluster bogus" \
	"cluster --etcd http://127.0.0.1:1 --cluster t" "nodes --etcd http://127.0.0.1:1" \
	"nodes --cluster t" "nodes --etcd 127.0.0.1:1 --cluster t" \
	"nodes --etcd http://127.0.0.1:1 --cluster a/b" "nodes extra" "nodes --bogus" \
	"nodes --etcd"; do
	# shellcheck disable=SC2086 # split on purpose
	expect 1 '^usage: keymapctl' -s "$none" $args
done
closed=$(free_port)
expect 1 "^keymapctl: nodes: etcd http://127.0.0.1:$closed: connection refused\$" \
	nodes --etcd "http://127.0.0.1:$closed" --cluster t
expect 1 "^keymapctl: cluster: etcd http://127.0.0.1:$closed: connection refused\$" \
	cluster drain n1 --etcd="http://127.0.0.1:$closed" --cluster=t
[ ! -s "$tmp/out" ] || fail "cluster drain with etcd unreachable printed on stdout"
expect 0 'cluster drain NODE' --help

# Timeouts: tier and compact wait 60 s by default (the mock answers after 5.5 s), -T
# still bounds them, prefetch keeps the 5 s default.
start_mock "$tmp/slowlog.sock" --store log --delay 5.5
t0=$(date +%s%N)
run_bg tier -s "$tmp/slowlog.sock" tier 20 cold
run_bg compact -s "$tmp/slowlog.sock" compact 20
run_bg tier_t1 -s "$tmp/slowlog.sock" -T 1 tier 21 cold
run_bg prefetch -s "$tmp/slowlog.sock" prefetch user:42
wait "${bg[@]}"
check_bg tier 0 '^shard 20 moved to the cold tier: 1148 keys, paused 2300 us$'
check_bg compact 0 '^shard 20 compacted: 1148 keys, paused 900 us$'
check_bg tier_t1 1 'no reply from keymapd within 1 s'
check_bg prefetch 1 'no reply from keymapd within 5 s'
[ $(($(date +%s%N) - t0)) -lt 9000000000 ] || fail "slow tier, compact, prefetch took over 9 s"

echo "PASS: keymapctl against the mock telemetry server"
