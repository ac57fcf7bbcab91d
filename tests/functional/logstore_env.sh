# SPDX-License-Identifier: BSD-3-Clause
#
# What the end-to-end tests of the log store share (sourced by persist.sh, durability.sh
# and frag.sh): a private network namespace, keymapd on net_tap in it with the log store,
# start / stop / kill -9, keymapctl --json checks, and a cleanup that removes the namespace,
# the processes, mounts and /var/run/dpdk/<prefix> even when the test fails.
# Set before sourcing: keymapd, keymapctl, tag (names the namespace, prefix and temporary
# directory); optional: pclient, cli (shortened in the log), extra_cleanup (a function).

id=$$
ns=$tag-$id
prefix=$tag-$id
tap=${tag}0
server=198.51.100.2
# On the local disk, not a tmpfs: fdatasync must mean something.
tmp=$(mktemp -d "/var/tmp/$tag.XXXXXX")
jdir=$tmp/json # keymapctl --json replies, NAME.json, for jx
mkdir "$jdir"
log=$tmp/keymapd.log # the running keymapd's; earlier runs are appended to keymapd-all.log
srv_pid=              # timeout(1) around keymapd
load_pid=
mounts=
checks=0
t_start=$SECONDS
# Main lcore (control) plus one worker.
if [ "$(nproc)" -gt 1 ]; then lcores="0@0,1@1"; else lcores="0@0,1@0"; fi
eal=(--no-huge -m 512 --no-pci --lcores "$lcores")

# @return keymapd's exit status (timeout(1) passes SIGTERM on and returns it).
stop_server() {
	local rc=0

	if [ -n "$srv_pid" ]; then
		kill -TERM "$srv_pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$srv_pid" 2>/dev/null || true
		wait "$srv_pid" 2>/dev/null || rc=$?
		srv_pid=
	fi
	return "$rc"
}
unmount_all() {
	local m

	for m in $mounts; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	mounts=
}
cleanup() {
	# Fast parts first: the runner may SIGKILL us shortly after its SIGTERM.
	ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
	[ -z "$load_pid" ] || kill -KILL "$load_pid" 2>/dev/null || true
	stop_server || true
	ip netns del "$ns" 2>/dev/null || true
	! declare -F extra_cleanup >/dev/null || extra_cleanup
	unmount_all
	rm -rf "/var/run/dpdk/$prefix" "/var/run/dpdk/$prefix-a" "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# On stderr, so that it shows when it fires inside $(...) too.
fail() {
	{
		echo "FAIL: $*"
		if [ -f "$log" ]; then
			echo "---- keymapd log (last 30 lines) ----"
			tail -30 "$log"
		fi
	} >&2
	exit 1
}

section() {
	echo "== $* (at $((SECONDS - t_start)) s)"
}

ok() {
	checks=$((checks + 1))
	echo "ok: $*"
}

# expect CODE PATTERN CMD...: exit code CODE; PATTERN (grep -E, may be empty) in stdout
# when CODE is 0, in stderr otherwise.
expect() {
	local want=$1 pattern=$2 rc=0 where
	shift 2
	# --foreground: stay in our process group, so a SIGTERM from the test runner reaches
	# the command and the cleanup trap runs at once.
	timeout --foreground -k 5 60 "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
	where=$tmp/out
	[ "$want" -eq 0 ] || where=$tmp/err
	if [ "$rc" -ne "$want" ] || { [ -n "$pattern" ] && ! grep -Eq -- "$pattern" "$where"; }; then
		echo "---- stdout ----"
		tail -40 "$tmp/out"
		echo "---- stderr ----"
		tail -40 "$tmp/err"
		fail "'$*': exit $rc (want $want), $(basename "$where") should match '$pattern'"
	fi
	checks=$((checks + 1))
	echo "ok: exit $rc${pattern:+, '$pattern'}: $(short "$@")"
}

# short CMD...: CMD without the timeout, namespace and directory noise, for the log.
short() {
	local s="$*"

	s=${s//"$tmp"/'$tmp'}
	s=${s//"timeout -k 2 20 "/}
	s=${s//"ip netns exec $ns "/}
	s=${s//"${pclient:-}"/persist_client}
	s=${s//"$keymapctl"/keymapctl}
	s=${s//"${cli:-}"/keymap-cli}
	s=${s//"$keymapd"/keymapd}
	echo "${s:0:200}"
}

# Commands as arrays, not functions, so that timeout(1) can run them.
ctl=(timeout -k 2 20 "$keymapctl" -f "$prefix")
in_ns=(timeout -k 2 20 ip netns exec "$ns")

# cj NAME ARGS...: keymapctl --json ARGS succeeds; its JSON becomes NAME for jx.
cj() {
	local name=$1
	shift
	"${ctl[@]}" --json "$@" >"$jdir/$name.json" || fail "keymapctl --json $* failed"
}

# jx EXPR: EXPR in Python over every JSON reply kept by cj (variables named after them).
# A tuple prints space-separated.
jx() {
	python3 - "$jdir" "$1" <<'EOF'
import glob, json, os, sys
v = {os.path.basename(f)[:-5]: json.load(open(f)) for f in glob.glob(sys.argv[1] + "/*.json")}
r = eval("(" + sys.argv[2] + ")", v)
print(" ".join(map(str, r)) if isinstance(r, tuple) else r)
EOF
}

# check EXPR WHAT: EXPR (over the cj replies) holds.
check() {
	local r
	r=$(jx "$1" 2>&1) || true
	[ "$r" = True ] || fail "$2: '$1' is not true ($r)"
	ok "$2"
}

# fresh_stats: shards (which samples every store: the store figures of stats are as of the
# last sample) then stats, as sh and st.
fresh_stats() {
	cj sh shards
	cj st stats
}

# start_server DIR [-o K=V ...]: keymapd on the log store in DIR (cold tier in DIR/cold),
# sync durability unless the options say otherwise; waits until it serves.
start_server() {
	local dir=$1
	shift
	[ -z "$srv_pid" ] || fail "start_server: keymapd already running"
	rm -rf "/var/run/dpdk/$prefix"
	# The previous keymapd's tap goes with its last file descriptor.
	for _ in $(seq 50); do
		"${in_ns[@]}" ip link show "$tap" >/dev/null 2>&1 || break
		sleep 0.1
	done
	[ -f "$log" ] && cat "$log" >>"$tmp/keymapd-all.log"
	: >"$log"
	timeout -k 5 300 ip netns exec "$ns" "$keymapd" -o store.driver=log \
		-o "store.dir=$dir" -o "store.cold_dir=$dir/cold" -o store.durability=sync \
		-o shards.count=4 -o metrics.port=0 "$@" -- "${eal[@]}" \
		--file-prefix "$prefix" --vdev "net_tap0,iface=$tap" >"$log" 2>&1 &
	srv_pid=$!
	for _ in $(seq 300); do
		grep -q "keymapd: ready" "$log" && break
		kill -0 "$srv_pid" 2>/dev/null || { srv_pid=; fail "keymapd exited during start-up"; }
		sleep 0.1
	done
	grep -q "keymapd: ready" "$log" || fail "keymapd not ready after 30 s"
	"${in_ns[@]}" ip addr add 198.51.100.1/24 dev "$tap"
	"${in_ns[@]}" ip link set "$tap" up
}

# kill9_server: SIGKILL keymapd itself (the child of timeout(1)), no chance to flush.
kill9_server() {
	local kp rc=0

	if ! kp=$(pgrep -P "$srv_pid"); then
		wait "$srv_pid" || rc=$?
		srv_pid=
		fail "keymapd is not running any more (it exited with status $rc)"
	fi
	kill -KILL "$kp"
	wait "$srv_pid" 2>/dev/null || true
	srv_pid=
}

restart_clean() {
	local rc=0

	stop_server || rc=$?
	[ "$rc" -eq 0 ] || fail "keymapd exit $rc on SIGTERM"
	start_server "$@"
}

restart_kill9() {
	kill9_server
	start_server "$@"
}

# store_line: the replay figures keymapd logged at start: "KEYS RECORDS SECONDS SKIPPED TORN".
store_line() {
	local n='\([0-9]*\)' re

	re="^keymapd: store: $n keys from $n records in \([0-9.]*\) s ($n damaged records"
	re+=" skipped, $n torn tail bytes dropped), .* durability\$"
	sed -n "s/$re/\1 \2 \3 \4 \5/p" "$log" | tail -1
}

# kill_load: SIGKILL the load client (the child of timeout(1)) and reap it.
kill_load() {
	local kp

	if [ -n "$load_pid" ]; then
		kp=$(pgrep -P "$load_pid") && { kill -KILL "$kp" 2>/dev/null || true; }
		kill -KILL "$load_pid" 2>/dev/null || true
		wait "$load_pid" 2>/dev/null || true
		load_pid=
	fi
}

