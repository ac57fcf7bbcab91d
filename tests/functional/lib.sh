# SPDX-License-Identifier: BSD-3-Clause
#
# What the functional tests that run keymapd in a private network namespace share
# (sourced): the names of the namespace, DPDK file prefix and temporary directory; stopping
# keymapd; a cleanup that removes the namespace, the processes and /var/run/dpdk/<prefix>
# even when the test fails; fail, section, ok, expect; keymapctl --json checks (cj, jx,
# check).
# Set before sourcing: keymapd, keymapctl, tag (names the namespace, prefix and temporary
# directory). Optional: needs (commands besides ip, e.g. "python3"); env_cleanup (a
# function of an environment file sourcing this one) and extra_cleanup (the test's),
# called by the cleanup after the processes are gone; pclient, cli (shortened in the log).
# Set by it: id, ns, prefix, tap, server, tmp, jdir, log, srv_pid (timeout(1) around
# keymapd), cl_pid (a client, killed by the cleanup), checks, t_start, ctl, in_ns.

if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
	echo "SKIP: needs root and iproute2 (network namespace, DPDK vdevs)"
	exit 77
fi
for _c in ${needs:-}; do
	command -v "$_c" >/dev/null || { echo "SKIP: needs $_c"; exit 77; }
done

id=$$
ns=$tag-$id
prefix=$tag-$id
tap=${tag}0
server=198.51.100.2
tmp= # created once the cleanup is in place (below)
srv_pid=
cl_pid=
checks=0
t_start=$SECONDS

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

cleanup() {
	# Fast parts first: the runner may SIGKILL us shortly after its SIGTERM.
	ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
	[ -z "$cl_pid" ] || kill -KILL "$cl_pid" 2>/dev/null || true
	stop_server || true
	ip netns del "$ns" 2>/dev/null || true
	! declare -F extra_cleanup >/dev/null || extra_cleanup
	! declare -F env_cleanup >/dev/null || env_cleanup
	rm -rf "/var/run/dpdk/$prefix" "/var/run/dpdk/$prefix-a" ${tmp:+"$tmp"}
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# On the local disk, not a tmpfs: fdatasync must mean something.
tmp=$(mktemp -d -p /var/tmp)
jdir=$tmp/json # keymapctl --json replies, NAME.json, for jx
mkdir "$jdir"
log=$tmp/keymapd.log

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

# short CMD...: CMD without the timeout, namespace and directory noise, for the log.
short() {
	local s="$*"

	s=${s//"$tmp"/'$tmp'}
	s=${s//"timeout -k 2 20 "/}
	s=${s//"ip netns exec $ns "/}
	[ -z "${pclient:-}" ] || s=${s//"$pclient"/persist_client}
	[ -z "${cli:-}" ] || s=${s//"$cli"/keymap-cli}
	s=${s//"$keymapctl"/keymapctl}
	s=${s//"$keymapd"/keymapd}
	echo "${s:0:200}"
}

# expect CODE PATTERN CMD...: exit code CODE; PATTERN (grep -E, may be empty) in stdout
# when CODE is 0, in stderr otherwise (refusals are explained on stderr).
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

# Commands as arrays, not functions, so that timeout(1) can run them.
ctl=(timeout -k 2 20 "$keymapctl" -f "$prefix")
in_ns=(timeout -k 2 20 ip netns exec "$ns")

# cj NAME ARGS...: keymapctl --json ARGS succeeds; its JSON becomes NAME for jx.
cj() {
	local name=$1
	shift
	"${ctl[@]}" --json "$@" >"$jdir/$name.json" || fail "keymapctl --json $* failed"
}

# jx EXPR: EXPR in Python over every JSON reply kept by cj (variables named after them;
# own(ID) is the owner of shard ID in sh). A tuple prints space-separated. One interpreter
# for many checks: each start costs 0.1 s or more on a loaded 2-CPU machine.
jx() {
	python3 - "$jdir" "$1" <<'EOF'
import glob, json, os, sys
v = {os.path.basename(f)[:-5]: json.load(open(f)) for f in glob.glob(sys.argv[1] + "/*.json")}
v["own"] = lambda s: v["sh"]["owner"][v["sh"]["id"].index(s)]
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

# start_keymapd LCORES ARG...: keymapd ARG... in the namespace (created if need be) on
# net_tap $tap, 512 MB without hugepages, lcores LCORES; waits until it serves (30 s at
# most) and gives the tap 198.51.100.1/24. Sets srv_pid; keymapd's output goes to $log.
start_keymapd() {
	local lcores=$1
	shift
	if ! ip netns list | grep -qw "$ns"; then
		timeout 10 ip netns add "$ns"
		"${in_ns[@]}" ip link set lo up
	fi
	rm -rf "/var/run/dpdk/$prefix"
	# A restart: the previous keymapd's tap goes with it.
	for _ in $(seq 50); do
		ip netns exec "$ns" ip link show "$tap" >/dev/null 2>&1 || break
		sleep 0.1
	done
	: >"$log"
	timeout -k 5 300 ip netns exec "$ns" "$keymapd" "$@" -- --no-huge -m 512 --no-pci \
		--file-prefix "$prefix" --vdev "net_tap0,iface=$tap" --lcores "$lcores" \
		>"$log" 2>&1 &
	srv_pid=$!
	wait_ready
}

# wait_ready: keymapd ($srv_pid, output in $log) serves within 30 s; the tap gets
# 198.51.100.1/24.
wait_ready() {
	for _ in $(seq 300); do
		grep -q "keymap.main: ready" "$log" && break
		kill -0 "$srv_pid" 2>/dev/null || { srv_pid=; fail "keymapd exited during start-up"; }
		sleep 0.1
	done
	grep -q "keymap.main: ready" "$log" || fail "keymapd not ready after 30 s"
	"${in_ns[@]}" ip addr add 198.51.100.1/24 dev "$tap"
	"${in_ns[@]}" ip link set "$tap" up
}
