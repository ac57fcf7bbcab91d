#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Safe to expose (one worker on net_tap in a private network namespace):
#   a. address validation: a source without a cookie gets no reply larger than its request
#      (MAP, GET of a 1000-byte value: DENIED, byte ratio <= 1); HELLO is no larger than its
#      request; with the cookie of its address and port the full reply; a cookie of another
#      port or a made-up one is refused; counted in denied_cookie and req_hello; a request
#      id reused with another key is executed, not answered with the first one's outcome;
#   b. client keys with [security] auth = 1: no MAC or a wrong one gets DENIED (no data,
#      never larger than the request); a read-write key writes; a read-only key limited to
#      pub/ reads pub/ keys only and cannot write; keymapctl key add / remove / keys rotate
#      keys at run time (the keys file follows); counted in denied_auth and denied_perm.
# Removes the namespace, the processes and /var/run/dpdk/<prefix> even when it fails.
#
# usage: guard.sh KEYMAPD KEYMAPCTL GUARD_CLIENT  (exit 77 = skipped: needs root and ip)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
gclient=$3
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
	echo "SKIP: needs root and iproute2 (network namespace, DPDK vdevs)"
	exit 77
fi
python3 -c 'import ctypes; ctypes.CDLL("libsodium.so.23")' 2>/dev/null || {
	echo "SKIP: needs libsodium23"
	exit 77
}
tag=kmguard
# shellcheck source=tests/functional/logstore_env.sh
. "$(dirname "$0")/logstore_env.sh"

timeout 10 ip netns add "$ns"
"${in_ns[@]}" ip link set lo up
gc=("${in_ns[@]}" python3 "$gclient" "$server" 7070)

# rq NAME ARGS...: one request of guard_client.py; its JSON reply becomes NAME for jx.
rq() {
	local name=$1
	shift
	"${gc[@]}" "$@" >"$jdir/$name.json" || fail "guard_client $*"
}

section "a. address validation (HELLO cookies)"
# The log store, restarted after the PUT: the first GET waits for its disk read (the
# deferred reply is checked too).
mkdir -p "$tmp/data/cold"
start_server "$tmp/data" -o security.cookies=1 -o store.value_max=11000
rq put --value-size 1000 put g/big
rq puth --value-size 10000 put g/huge
check "put['status'] == puth['status'] == 'OK' and put['rep_len'] == puth['rep_len'] == 40" \
	"a PUT needs no cookie (40-byte reply), a 10 KB one in fragments neither"
restart_clean "$tmp/data" -o security.cookies=1 -o store.value_max=11000
rq map0 map
rq get0 get g/big
check "map0['status'] == get0['status'] == 'DENIED' and map0['version'] == get0['version'] == 1
	and map0['rep_len'] <= map0['req_len'] and get0['rep_len'] <= get0['req_len']" \
	"MAP and GET without a cookie: DENIED (cookie), reply no larger than the request"
rq hello hello
check "hello['status'] == 'OK' and hello['rep_len'] == hello['req_len'] == 56 and
	hello['flags'] & 1 and hello['valid_ms'] == 60000" "HELLO: 56 bytes each way, cookie for 60 s"
rq get1 --cookie hello get g/big
rq map1 --cookie hello map
check "get1['status'] == 'OK' and get1['val_len'] == 1000 and map1['status'] == 'OK' and
	map1['rep_len'] > map1['req_len']" "with the cookie of its address: the full replies"
rq get2 --cookie hello --other-port get g/big
rq get3 --cookie 12345 get g/big
check "get2['status'] == get3['status'] == 'DENIED' and get2['rep_len'] <= get2['req_len']" \
	"a cookie of another port, a made-up one: DENIED"
rq huge0 get g/huge
rq huge1 --cookie hello get g/huge
check "huge0['status'] == 'DENIED' and huge0['rep_len'] <= huge0['req_len'] and
	huge1['status'] == 'OK' and huge1['val_len'] == 10000" \
	"a GET of 10 KB (fragments, grown from disk): DENIED without a cookie, whole with one"
rq small get nokey
check "small['status'] == 'NOT_FOUND'" "a reply no larger than the request goes without a cookie"
echo "ratio: $(jx "max(r['rep_len'] / r['req_len'] for r in (map0, get0, get2, get3, huge0, hello))")" \
	"(worst reply/request bytes without a valid cookie)"
rq id1 --sport 40001 --req-id 77 put g/r1 one
rq id2 --sport 40001 --req-id 77 put g/r2 two
rq id3 --sport 40001 --req-id 77 put g/r2 two
rq id4 --cookie hello get g/r2
check "id1['status'] == id2['status'] == 'OK' and id2['version'] != id1['version'] and
	id3['version'] == id2['version'] and id4['val_len'] == 3" \
	"a request id reused for another key is executed; its retry is answered from the table"
cj st stats
check "st['total']['denied_cookie'] == 5 and st['total']['req_hello'] >= 3 and
	st['total']['disk_reads'] >= 1" \
	"denied_cookie and req_hello counted"

section "b. client keys"
stop_server || fail "keymapd exit status $? on SIGTERM"
printf '%s\n' "# test keys" "1 000102030405060708090a0b0c0d0e0f rw" \
	"2 f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff ro pub/" >"$tmp/keys"
chmod 600 "$tmp/keys"
start_server "$tmp/data" -o store.driver=mem -o security.cookies=1 -o security.auth=1 \
	-o "security.keys_file=$tmp/keys"
k1=1:000102030405060708090a0b0c0d0e0f
k2=2:f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff
rq n1 put pub/a hello
rq n2 --key "$k1" --bad-mac put pub/a hello
rq n3 --key 9:000102030405060708090a0b0c0d0e0f put pub/a hello
check "n1['status'] == n2['status'] == n3['status'] == 'DENIED' and
	n1['version'] == n2['version'] == n3['version'] == 2 and n1['rep_len'] <= n1['req_len']" \
	"no MAC, a wrong MAC, an unknown key id: DENIED (auth)"
rq w1 --key "$k1" put pub/a hello
rq w2 --key "$k1" put priv/b secret
rq r1 --key "$k2" --cookie hello get pub/a
rq r2 --key "$k2" --cookie hello get priv/b
rq r3 --key "$k2" put pub/a overwrite
check "w1['status'] == w2['status'] == 'OK' and r1['status'] == 'OK' and r1['val_len'] == 5" \
	"the rw key writes; the ro key reads its prefix"
check "r2['status'] == r3['status'] == 'DENIED' and r2['version'] == r3['version'] == 3" \
	"the ro key outside its prefix, or writing: DENIED (permission)"
"${ctl[@]}" key add ro pub/ >"$tmp/added" || fail "keymapctl key add"
k3=$(tail -1 "$tmp/added")
[[ $k3 =~ ^3:[0-9a-f]{32}$ ]] || fail "keymapctl key add printed '$(cat "$tmp/added")'"
grep -q "^3 ${k3#3:} ro pub/$" "$tmp/keys" || fail "key 3 not in the keys file: $(cat "$tmp/keys")"
ok "keymapctl key add: key 3 made, written to the keys file"
rq r4 --key "$k3" --cookie hello get pub/a
expect 0 "ro +pub/" "${ctl[@]}" keys
"${ctl[@]}" key remove 2 >/dev/null || fail "keymapctl key remove 2"
rq r5 --key "$k2" get pub/a
check "r4['status'] == 'OK' and r5['status'] == 'DENIED' and r5['version'] == 2" \
	"the new key serves at once; the removed one is refused"
! grep -q "^2 " "$tmp/keys" || fail "key 2 still in the keys file"
expect 2 "no such key id" "${ctl[@]}" key remove 2
expect 1 "usage" "${ctl[@]}" key add rx
expect 1 "starts with '#'" "${ctl[@]}" key add ro "#priv/"
expect 1 "blank" "${ctl[@]}" key add ro "a b"
"${ctl[@]}" set security.auth 0 >/dev/null || fail "keymapctl set security.auth 0"
rq n4 put pub/c x
check "n4['status'] == 'OK'" "security.auth=0 at run time: a request without a MAC is served"
"${ctl[@]}" set security.auth 1 >/dev/null || fail "keymapctl set security.auth 1"
rq n5 put pub/c x
rq n6 --key "$k3" --cookie hello get pub/c
check "n5['status'] == 'DENIED' and n6['status'] == 'OK'" \
	"security.auth=1 again: without a MAC DENIED, key 3 served"
cj st2 stats
check "st2['total']['denied_auth'] == 5 and st2['total']['denied_perm'] == 2" \
	"denied_auth and denied_perm counted"
stop_server || fail "keymapd exit status $? on SIGTERM"
echo "PASS: $checks checks in $((SECONDS - t_start)) s"
