# SPDX-License-Identifier: BSD-3-Clause
# shellcheck shell=bash
#
# What tools/bench/compare and tools/bench/overload share, sourced by both: a private
# network namespace, keymapd with one worker pinned to a CPU, keymap-bench on the other CPU
# over net_memif, and the clean-up of all of it (processes, namespace, /var/run/dpdk/<prefix>
# directories) on exit, also on failure.
#
# The caller sets before sourcing:
#   tool      its name, for messages ("compare")
#   tag       a short name for the namespace, socket and DPDK file prefixes ("cmp")
#   out       output directory (created, made absolute)
#   duration  seconds per keymap-bench run
#   keys      keys of the workload
#   huge      (optional) 1: EAL's memory on hugepages of the system's pool, huge_mb MB of
#             them free (checked first: otherwise a message and exit 1); otherwise 4 KiB
#             pages (--no-huge), which any machine has
# and gets: keymapd, bench, keymapctl (binaries), gen_cpu, srv_cpu, id, ns, sock, srv_pid,
# srv_prefix, and the functions below. Root only.

: "${tool:?}" "${tag:?}" "${out:?}" "${duration:?}" "${keys:?}"

keymapd=build/app/keymapd/keymapd
bench=build/app/keymap-bench/keymap-bench
keymapctl=build/tools/keymapctl
if [ ! -x "$keymapd" ] || [ ! -x "$bench" ] || [ ! -x "$keymapctl" ]; then
	tools/install-deps.sh
	tools/build.sh
fi

# CPUs: the server's worker on one, the generator (and keymapd's sleeping control lcore)
# on another.
ncpu=$(nproc)
gen_cpu=0
srv_cpu=$((ncpu > 1 ? 1 : 0))
[ "$ncpu" -gt 1 ] || echo "$tool: one CPU only: server and generator share it" >&2

# With huge=1: huge_mb MB of free hugepages, or a message (with the nr_hugepages that
# would give them) and exit 1 before anything is created.
if [ "${huge:-0}" = 1 ]; then
	read -r hp_total hp_free hp_kb < <(awk '/^HugePages_Total:/ {t = $2}
		/^HugePages_Free:/ {f = $2} /^Hugepagesize:/ {s = $2} END {print t + 0, f + 0, s + 0}' \
		/proc/meminfo)
	if [ "$hp_kb" -eq 0 ] || [ $((hp_free * hp_kb / 1024)) -lt "${huge_mb:?}" ]; then
		hp_want=$((hp_total + (huge_mb * 1024 / (hp_kb > 0 ? hp_kb : 2048)) - hp_free))
		echo "$tool: hugepages: $huge_mb MB free needed, $((hp_free * hp_kb / 1024)) MB" \
			"free (pages of $hp_kb kB: echo $hp_want > /proc/sys/vm/nr_hugepages)" >&2
		exit 1
	fi
fi

id=$$
ns=km$tag-$id
sock=/run/km$tag-$id.sock
mkdir -p "$out"
out=$(cd "$out" && pwd)
srv_pid=
srv_prefix=

# eal_mem MB: EAL's memory options for MB megabytes. With hugepages --in-memory: EAL
# takes them through memfd, without a hugetlbfs mount or files to remove.
eal_mem() {
	if [ "${huge:-0}" = 1 ]; then echo -m "$1" --in-memory; else echo --no-huge -m "$1"; fi
}

stop_server() {
	if [ -n "$srv_pid" ]; then
		kill -TERM "$srv_pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$srv_pid" 2>/dev/null || true
		wait "$srv_pid" 2>/dev/null || true
		srv_pid=
	fi
	# A memif server killed, not stopped, leaves its socket: the next server could not bind.
	rm -f "$sock"
	[ -z "$srv_prefix" ] || rm -rf "/var/run/dpdk/$srv_prefix"
	srv_prefix=
}
cleanup() {
	ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
	stop_server
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "/var/run/dpdk/km$tag-$id-"*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up

# start_keymapd NAME VDEV [keymapd options...]: keymapd in the namespace, worker on srv_cpu.
start_keymapd() {
	local name=$1 vdev=$2
	shift 2
	srv_prefix=km$tag-$id-$name
	# shellcheck disable=SC2046 # eal_mem's words are separate arguments
	ip netns exec "$ns" "$keymapd" -o control.stats_interval_s=1 -o workers.idle_sleep_us=0 \
		-o store.initial_keys=$((keys / 16 + 1024)) "$@" -- \
		$(eal_mem 1024) --no-pci --file-prefix "$srv_prefix" --vdev "$vdev" \
		--lcores "0@$gen_cpu,1@$srv_cpu" >"$out/keymapd-$name.log" 2>&1 &
	srv_pid=$!
	for _ in $(seq 200); do
		grep -q "keymap.main: ready" "$out/keymapd-$name.log" && return 0
		kill -0 "$srv_pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$out/keymapd-$name.log" >&2
	echo "$tool: keymapd ($name) did not start" >&2
	exit 1
}

# bench NAME [keymap-bench options...] [-- EAL args]: one run, bounded in time, its summary
# in NAME.txt and its figures in NAME.json, .cdf and .csv.
bench() {
	local name=$1
	shift
	echo "== $name" >&2
	ip netns exec "$ns" taskset -c "$gen_cpu" timeout -k 5 $((duration + 120)) "$bench" \
		--label "$name" -D "$duration" --json "$out/$name.json" --cdf "$out/$name.cdf" \
		--csv "$out/$name.csv" "$@" >"$out/$name.txt"
	cat "$out/$name.txt" >&2
}

memif_eal() {
	# shellcheck disable=SC2046 # eal_mem's words are separate arguments
	echo -- $(eal_mem 256) --no-pci --file-prefix "km$tag-$id-gen" \
		--vdev "net_memif0,role=client,socket=$sock" --lcores "0@$gen_cpu"
}

# Median busy cycles per request from keymapd's interval lines of the steady seconds
# (those with at least half the busiest second's requests); with -s, the medians of their
# parts instead: "rx / proc / tx" (the RX bursts', not in the busy cycles; the processing;
# the TX bursts').
cycles_of() {
	local split=0
	[ "$1" = -s ] && { split=1; shift; }
	python3 - "$1" "$split" <<'EOF'
import re, statistics, sys
rows = [(int(m.group(1)), [int(g) for g in m.groups()[1:] if g is not None]) for m in
        (re.search(r"interval .*: requests (\d+) .*cycles_per_req (\d+)"
                   r"(?: \(rx (\d+), proc (\d+), tx (\d+)\))?", l)
         for l in open(sys.argv[1])) if m]
top = max((r for r, _ in rows), default=0)
steady = [c for r, c in rows if top and r >= top / 2]
med = lambda i: int(statistics.median(c[i] for c in steady)) if steady else 0
if sys.argv[2] == "1":
    print(" / ".join(str(med(i)) for i in (1, 2, 3)) if steady and len(steady[0]) == 4 else "")
else:
    print(med(0))
EOF
}

# json FILE EXPR: a Python expression over the fields of a JSON file.
json() {
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))' "$@"
}
