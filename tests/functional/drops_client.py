#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""
A raw UDP client of the keymap protocol (docs/protocol.md) for drops.sh and frag.sh: it
sends exactly what it is told, as fast as it can, and counts what comes back by op and
status, so that the test can compare keymapd's counters with what was sent.

usage: drops_client.py SERVER PORT MODE N
  ping   N PINGs, one at a time (each waits up to 1 s for its reply)
  junk   N datagrams that are not requests (keymapd drops them, counted in drop_proto),
         back to back; nothing comes back
  blast  a HELLO, one PUT of the key drops/k (answered), then N requests back to back,
         PUTs and GETs (with the cookie) of that key in turn, then the replies until none
         came for 2 s
  spoof  N PINGs from each source no reply may go to (loopback, multicast, broadcast,
         reserved, this network, the server itself, and a real address with UDP port 0;
         0.0.0.0 cannot be sent: the kernel fills in its own), sent through a raw socket
         (IP_HDRINCL), after one real PING; nothing else may come back
  frag   N first fragments of UDP datagrams that never complete (a PUT header and 1000
         bytes of a 10,000-byte value each, more-fragments set, distinct IPv4 ids),
         through a raw socket after one real PING; nothing comes back

Prints one JSON object: sent, replies, and per op the count of each status name.
Every wait is bounded: the whole run ends within N seconds plus a few.
"""

import json
import socket
import struct
import sys
import time

MAGIC, VERSION = 0x4B, 1
OPS = {1: "ping", 2: "get", 4: "put"}
STATUS = ["OK", "NOT_FOUND", "MOVED", "BUSY", "TOO_LARGE", "BAD_REQUEST",
          "VERSION_MISMATCH", "DENIED", "ERROR"]
HDR = struct.Struct("<BBBBHHIIQQII")  # the 40-byte header, little-endian
KEY = b"drops/k"


def request(op, req_id, key=b"", val=b"", cookie=None):
    """A request; with a cookie (from HELLO) its trailer and flag (docs/protocol.md 2.2)."""
    flags = 0x2 if cookie is not None else 0
    b = HDR.pack(MAGIC, VERSION, op, 0, flags, len(key), len(val), 0, req_id, 0, 0, 0) + key + val
    return b + struct.pack("<Q", cookie) if cookie is not None else b


def hello(s):
    """The cookie of this socket's address (HELLO: 16 bytes of padding each way)."""
    s.send(request(9, 0x4845, val=bytes(16)))
    s.settimeout(2.0)
    r = s.recv(2048)
    if len(r) != 56 or r[3] != 0:
        sys.exit("HELLO: no cookie")
    return struct.unpack_from("<Q", r, 40)[0]


def main():
    server, port, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Room for every reply of a blast (SO_RCVBUFFORCE: root may exceed rmem_max).
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)
    s.connect((server, port))
    out = {"sent": 0, "replies": 0}

    def take(timeout):
        s.settimeout(timeout)
        try:
            b = s.recv(2048)
        except socket.timeout:
            return False
        if len(b) < HDR.size:
            return True
        h = HDR.unpack_from(b)
        name = OPS.get(h[2], str(h[2]))
        st = STATUS[h[3]] if h[3] < len(STATUS) else str(h[3])
        out.setdefault(name, {})
        out[name][st] = out[name].get(st, 0) + 1
        out["replies"] += 1
        return True

    if mode == "ping":
        for i in range(n):
            s.send(request(1, i + 1))
            out["sent"] += 1
            take(1.0)
    elif mode == "junk":
        for i in range(n):
            s.send(b"not a keymap request %08d" % i)
            out["sent"] += 1
    elif mode == "blast":
        # The GETs' replies are larger than their requests: they carry the cookie.
        cookie = hello(s)
        s.send(request(4, 1, KEY, b"v" * 32))
        if not take(2.0):
            sys.exit("blast: the first PUT got no reply")
        out = {"sent": 0, "replies": 0}
        reqs = [request(4, i + 2, KEY, b"v" * 32) if i % 2 == 0 else
                request(2, i + 2, KEY, cookie=cookie) for i in range(n)]
        for r in reqs:
            s.send(r)
            out["sent"] += 1
        end = time.monotonic() + n / 100 + 5
        while out["replies"] < out["sent"] and time.monotonic() < end and take(2.0):
            pass
    elif mode == "spoof":
        s.send(request(1, 999))  # a real PING first: ARP resolved, a source address known
        take(2.0)
        out = {"sent": 0, "replies": 0}
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        bad = [("127.0.0.1", 40000), ("224.0.0.1", 40000), ("255.255.255.255", 40000),
               ("240.0.0.1", 40000), ("0.1.2.3", 40000),
               (server, 40000), (s.getsockname()[0], 0)]
        out["sources"] = len(bad)
        for src, sport in bad:
            for i in range(n):
                body = request(1, 1000 + i)
                udp = struct.pack("!HHHH", sport, port, 8 + len(body), 0) + body
                ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                                 socket.inet_aton(src), socket.inet_aton(server))
                raw.sendto(ip + udp, (server, 0))
                out["sent"] += 1
        # The socket bound to the real address with port 0 cannot receive; any reply to
        # the others would not come here either: keymapd's counters are the check.
        time.sleep(0.5)
    elif mode == "frag":
        s.send(request(1, 999))
        take(2.0)
        out = {"sent": 0, "replies": 0}
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        src, sport = s.getsockname()
        body = request(4, 5000, b"frag/flood", b"f" * 10000)
        udp = struct.pack("!HHHH", sport, port, 8 + len(body), 0) + body
        first = udp[:1008]  # a multiple of 8 bytes: the data of a first fragment
        for i in range(n):
            # More fragments (0x2000), offset 0; ids from 1 (0 would be filled in).
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(first), 1 + i % 65535,
                             0x2000, 64, 17, 0, socket.inet_aton(src),
                             socket.inet_aton(server))
            raw.sendto(ip + first, (server, 0))
            out["sent"] += 1
        time.sleep(0.2)
    else:
        sys.exit("unknown mode " + mode)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
