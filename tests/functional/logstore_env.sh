# SPDX-License-Identifier: BSD-3-Clause
#
# What the end-to-end tests of the log store share (sourced by persist.sh, durability.sh
# and frag.sh), on top of lib.sh (the namespace, cleanup, expect, keymapctl --json checks):
# keymapd on net_tap with the log store, start / stop / kill -9, mounts unmounted by the
# cleanup.
# Set before sourcing: keymapd, keymapctl, tag (names the namespace, prefix and temporary
# directory); optional: pclient, cli (shortened in the log), extra_cleanup (a function).

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
log=$tmp/keymapd.log # the running keymapd's; earlier runs are appended to keymapd-all.log
load_pid=
mounts=
# Main lcore (control) plus one worker.
if [ "$(nproc)" -gt 1 ]; then lcores="0@0,1@1"; else lcores="0@0,1@0"; fi
eal=(--no-huge -m 512 --no-pci --lcores "$lcores")

unmount_all() {
	local m

	for m in $mounts; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	mounts=
}
# Called by lib.sh's cleanup.
env_cleanup() {
	[ -z "$load_pid" ] || kill -KILL "$load_pid" 2>/dev/null || true
	unmount_all
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
	wait_ready
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

	re=".* keymap.main: store: $n keys from $n records in \([0-9.]*\) s ($n damaged records"
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

