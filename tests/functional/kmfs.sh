#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# kmfs, the fault-injection file layer, on a temporary backing directory:
#   a. a power cut keeps what was fsync'ed or fdatasync'ed and drops the rest: sizes back
#      to the synced size, overwrites undone, a new unsynced file empty, a truncation undone,
#      an unsynced file renamed over a synced one leaves an empty file; namespace operations
#      (mkdir, rename across directories, unlink, rmdir, readdir, statfs, directory fsync);
#   b. io_uring writes (one linked to an fdatasync) and reads, across a power cut;
#   c. the failing device: EIO then ENOSPC on write and fsync, reads go on, pending data kept
#      and synced once it works again; the counters on the stats command and at exit;
#   d. --write-bps: 256 KiB at 512 KiB/s take at least 0.4 s.
# Unmounts, stops kmfs and removes its files even when it fails; bounded in time.
#
# usage: kmfs.sh KMFS [KMFS_URING]   (exit 77 = skipped: kmfs not built, no /dev/fuse)
set -euo pipefail
shopt -s inherit_errexit

kmfs=${1:-}
uring=${2:-}
if [ -z "$kmfs" ] || [ ! -x "$kmfs" ] || [ ! -c /dev/fuse ] || ! command -v python3 >/dev/null ||
	! command -v fusermount3 >/dev/null; then
	echo "SKIP: needs kmfs (built with fuse3), /dev/fuse, fusermount3 and python3"
	exit 77
fi

tmp=$(mktemp -d /var/tmp/kmfs-test.XXXXXX)
back=$tmp/back
mnt=$tmp/mnt
ctl=$tmp/ctl
log=$tmp/kmfs.log
pid=
checks=0
mkdir "$back" "$mnt"

stop_kmfs() {
	if grep -q " $mnt fuse" /proc/mounts; then
		fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
	fi
	if [ -n "$pid" ]; then
		for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=
	fi
}
cleanup() {
	local rc=$?

	stop_kmfs
	if [ "$rc" -ne 0 ] && [ -f "$log" ]; then
		echo "--- kmfs log"
		cat "$log"
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

ok() {
	checks=$((checks + 1))
	echo "ok $checks - $*"
}

start_kmfs() {
	"$kmfs" --control "$ctl" "$@" "$back" "$mnt" >>"$log" 2>&1 &
	pid=$!
	for _ in $(seq 50); do
		grep -q " $mnt fuse" /proc/mounts && return 0
		kill -0 "$pid" 2>/dev/null || fail "kmfs exited at start"
		sleep 0.1
	done
	fail "kmfs did not mount $mnt in 5 s"
}

# A command to the layer; in force for every file operation made after it returns.
cmd() {
	timeout 5 bash -c 'echo "$1" >"$2"' _ "$1" "$ctl" || fail "control fifo: $1"
}

# Python CODE [ARGS]: the mount is sys.argv[1], ARGS follow; bounded like every command.
py() {
	timeout 20 python3 -c "import errno, os, sys, time; m = sys.argv[1]; $1" "$mnt" "${@:2}"
}

# The counter NAME of the last kmfs line starting with WHAT (stats or exit).
counter() {
	grep "^kmfs: $1:" "$log" | tail -1 | sed -n "s/.* $2 \([0-9]*\).*/\1/p"
}

start_kmfs

# a. Power cut.
py "
os.mkdir(m + '/d'); os.mkdir(m + '/e'); os.mkdir(m + '/gone')
fd = os.open(m + '/d/f', os.O_RDWR | os.O_CREAT, 0o644)
os.pwrite(fd, b'A' * 65536, 0); os.fsync(fd)
os.pwrite(fd, b'B' * 32768, 65536); os.pwrite(fd, b'C' * 100, 1000)
assert os.fstat(fd).st_size == 98304 and os.stat(m + '/d/f').st_size == 98304
assert os.pread(fd, 4, 1098) == b'CCAA' and os.pread(fd, 4, 65534) == b'AABB'
os.close(fd)
fd = os.open(m + '/d/g', os.O_RDWR | os.O_CREAT, 0o644)
os.pwrite(fd, b'G' * 8192, 0); os.fdatasync(fd); os.ftruncate(fd, 100)
os.pwrite(fd, b'H' * 10, 200)
assert os.pread(fd, 200, 0) == b'G' * 100 + b'\0' * 100, 'truncated bytes come back as zeros'
os.close(fd)
fd = os.open(m + '/d/new', os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, b'N' * 5000); os.close(fd)
fd = os.open(m + '/d/t', os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, b'T' * 100); os.fsync(fd); os.close(fd)
fd = os.open(m + '/d/t.tmp', os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, b'U' * 300); os.close(fd)
os.rename(m + '/d/t.tmp', m + '/d/t')
fd = os.open(m + '/d/x', os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, b'X'); os.close(fd)
os.rename(m + '/d/x', m + '/e/x'); os.unlink(m + '/e/x'); os.rmdir(m + '/gone')
assert sorted(os.listdir(m + '/d')) == ['f', 'g', 'new', 't'] and os.listdir(m + '/e') == []
assert os.statvfs(m).f_bsize > 0
fd = os.open(m + '/d', os.O_RDONLY | os.O_DIRECTORY); os.fsync(fd); os.close(fd)
"
[ "$(stat -c %s "$back/d/f")" = 65536 ] || fail "unsynced data reached the backing file"
ok "writes pending until fsync, reads see them, namespace operations"
cmd powercut
py "
d = open(m + '/d/f', 'rb').read()
assert d == b'A' * 65536, 'after the power cut: %d bytes, %r' % (len(d), set(d))
assert open(m + '/d/g', 'rb').read() == b'G' * 8192, 'the truncation is undone'
assert os.stat(m + '/d/new').st_size == 0 and open(m + '/d/new', 'rb').read() == b''
assert os.stat(m + '/d/t').st_size == 0, 'the unsynced file renamed over t'
assert sorted(os.listdir(m + '/d')) == ['f', 'g', 'new', 't']
"
ok "power cut: synced data kept, unsynced writes, truncation and new data dropped"

# The pending view against a model: random writes, truncations, syncs (some through a
# read-only descriptor: fsync makes the file durable, whichever descriptor) and power cuts.
py "
import random
rnd = random.Random(7)
path = m + '/d/model'
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644); ro = os.open(path, os.O_RDONLY)
durable, view = bytearray(), bytearray()
for i in range(1500):
    r = rnd.random()
    if r < 0.6:
        off, n = rnd.randrange(40000), rnd.randrange(1, 9000)
        data = bytes([rnd.randrange(1, 256)]) * n
        os.pwrite(fd, data, off)
        view[len(view):] = bytes(max(0, off + n - len(view)))
        view[off:off + n] = data
    elif r < 0.7:
        n = rnd.randrange(45000)
        os.ftruncate(fd, n)
        view = view[:n] + bytes(max(0, n - len(view)))
    elif r < 0.85:
        (os.fsync if rnd.random() < 0.5 else os.fdatasync)(rnd.choice((fd, ro)))
        durable = bytearray(view)
    elif r < 0.9:
        with open(sys.argv[2], 'w') as c:
            c.write('powercut\\n')
        view = bytearray(durable)
    if i % 25 == 0 or r >= 0.85:
        assert os.fstat(fd).st_size == len(view), (i, os.fstat(fd).st_size, len(view))
        assert os.pread(ro, len(view) + 10, 0) == view, i
        assert open(sys.argv[3], 'rb').read() == durable, i
" "$ctl" "$back/d/model"
ok "1500 random writes, truncations, syncs and power cuts match the model"

# b. io_uring, as the log store reads and writes.
if [ -n "$uring" ] && [ -x "$uring" ]; then
	timeout 20 "$uring" write "$mnt/d/u" 0 8192 x sync
	timeout 20 "$uring" write "$mnt/d/u" 8192 4096 y
	timeout 20 "$uring" read "$mnt/d/u" 8192 4096 y
	[ "$(stat -c %s "$mnt/d/u")" = 12288 ] || fail "io_uring: size before the cut"
	cmd powercut
	timeout 20 "$uring" read "$mnt/d/u" 0 8192 x
	[ "$(stat -c %s "$mnt/d/u")" = 8192 ] || fail "io_uring: unsynced write survived the cut"
	ok "io_uring write + linked fdatasync, reads, power cut"
fi

# c. The failing device.
py "
fd = os.open(m + '/d/p', os.O_RDWR | os.O_CREAT, 0o644); os.write(fd, b'P' * 1000); os.close(fd)
"
for mode in eio enospc; do
	cmd "fail $mode"
	py "
want = errno.$(echo "$mode" | tr a-z A-Z)
fd = os.open(m + '/d/f', os.O_RDWR)
for op in (lambda: os.pwrite(fd, b'Z', 0), lambda: os.fsync(fd), lambda: os.fdatasync(fd)):
    try:
        op()
        raise SystemExit('no error in failing mode')
    except OSError as e:
        assert e.errno == want, e
assert os.pread(fd, 10, 0) == b'A' * 10, 'reads go on'
os.close(fd)
"
done
cmd "fail off"
py "
fd = os.open(m + '/d/p', os.O_RDWR); os.pwrite(fd, b'Q', 1000); os.fsync(fd); os.close(fd)
"
[ "$(cat "$back/d/p")" = "$(printf 'P%.0s' $(seq 1000))Q" ] ||
	fail "data written before the failure was not kept and synced after it"
ok "failing device: EIO and ENOSPC on write and fsync, reads work, recovery keeps pending data"

cmd stats
for _ in $(seq 50); do grep -q "^kmfs: stats:" "$log" && break; sleep 0.1; done
[ "$(counter stats power_cuts)" -ge 1 ] && [ "$(counter stats dropped_writes)" -ge 6 ] &&
	[ "$(counter stats failed)" = 6 ] || fail "stats: $(grep 'stats:' "$log")"
stop_kmfs
grep -q "^kmfs: exit:" "$log" || fail "no counters at exit"
ok "counters on the stats command and at exit"

# d. A slow device: 256 KiB through 512 KiB/s, then an fsync that waits for all of it.
start_kmfs --write-bps 524288
secs=$(py "
t = time.monotonic()
fd = os.open(m + '/slow', os.O_WRONLY | os.O_CREAT, 0o644)
for i in range(4):
    os.write(fd, b'S' * 65536)
os.fsync(fd); os.close(fd)
print('%.3f' % (time.monotonic() - t))
")
python3 -c "import sys; t = float(sys.argv[1]); sys.exit(not (0.4 <= t < 5))" "$secs" ||
	fail "256 KiB at 512 KiB/s took $secs s"
[ "$(stat -c %s "$back/slow")" = 262144 ] || fail "slow write: size"
ok "--write-bps 524288: 256 KiB written and synced in $secs s"
stop_kmfs

echo "$checks passed, 0 failed"
