#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""
A client of the keymap protocol written from docs/protocol.md for guard.sh: it sends one
request as told and prints the reply's size and fields, so that the test can check what a
source gets without a cookie, with one, with a MAC and without.

usage: guard_client.py SERVER PORT [options] OP [KEY [VALUE]]
  OP        ping, get, put, del, map, hello
  --cookie C       attach cookie C (decimal; "hello": fetch one first on the same socket)
  --key ID:HEX     attach the key id and the MAC (SipHash-2-4-128 through libsodium)
  --bad-mac        flip a bit of the MAC after computing it
  --other-port     fetch the cookie on one socket, send the request from another
  --value-size N   PUT value of N bytes of 'v'
  --sport N        send from UDP port N (default: any)
  --req-id N       the request id (default 0x1234)
Prints one JSON object: req_len, rep_len (0: no reply within 2 s), status (name), version,
val_len, and for hello: cookie, valid_ms, flags.
"""

import ctypes
import json
import socket
import struct
import sys

MAGIC, VERSION = 0x4B, 1
OPS = {"ping": 1, "get": 2, "put": 4, "del": 6, "map": 8, "hello": 9}
STATUS = ["OK", "NOT_FOUND", "MOVED", "BUSY", "TOO_LARGE", "BAD_REQUEST",
          "VERSION_MISMATCH", "DENIED", "ERROR", "DAMAGED", "FULL"]
HDR = struct.Struct("<BBBBHHIIQQII")  # the 40-byte header, little-endian
F_COOKIE, F_AUTH = 0x2, 0x4
sodium = ctypes.CDLL("libsodium.so.23")


def mac(key, data):
    out = ctypes.create_string_buffer(16)
    sodium.crypto_shorthash_siphashx24(out, data, ctypes.c_ulonglong(len(data)), key)
    return out.raw


def build(op, req_id, key=b"", val=b"", cookie=None, auth=None, bad_mac=False):
    flags = (F_COOKIE if cookie is not None else 0) | (F_AUTH if auth is not None else 0)
    b = HDR.pack(MAGIC, VERSION, op, 0, flags, len(key), len(val), 0, req_id, 0, 0, 0) + key + val
    if cookie is not None:
        b += struct.pack("<Q", cookie)
    if auth is not None:
        kid, secret = auth
        b += struct.pack("<I", kid)
        m = bytearray(mac(secret, b))
        if bad_mac:
            m[0] ^= 1
        b += bytes(m)
    return b


def exchange(s, req):
    s.send(req)
    s.settimeout(2.0)
    try:
        return s.recv(70000)
    except socket.timeout:
        return b""


def hello(s, auth):
    r = exchange(s, build(OPS["hello"], 7, val=bytes(16), auth=auth))
    h = HDR.unpack_from(r)
    if h[3] != 0 or len(r) != 56:
        sys.exit("hello: status %d, %d bytes" % (h[3], len(r)))
    return struct.unpack_from("<QII", r, 40)


def main():
    args = sys.argv[1:]
    server, port = args[0], int(args[1])
    args = args[2:]
    cookie = auth = None
    bad_mac = other = False
    vsize = None
    sport, req_id = 0, 0x1234
    while args and args[0].startswith("--"):
        o = args.pop(0)
        if o == "--cookie":
            cookie = args.pop(0)
        elif o == "--key":
            kid, hexs = args.pop(0).split(":")
            auth = (int(kid), bytes.fromhex(hexs))
        elif o == "--bad-mac":
            bad_mac = True
        elif o == "--other-port":
            other = True
        elif o == "--value-size":
            vsize = int(args.pop(0))
        elif o == "--sport":
            sport = int(args.pop(0))
        elif o == "--req-id":
            req_id = int(args.pop(0))
        else:
            sys.exit("unknown option " + o)
    op = args[0]
    key = args[1].encode() if len(args) > 1 else b""
    val = args[2].encode() if len(args) > 2 else b""
    if vsize is not None:
        val = b"v" * vsize
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", sport))
    s.connect((server, port))
    if cookie == "hello":
        cookie = hello(s, auth)[0]
        if other:
            s.close()
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((server, port))
    elif cookie is not None:
        cookie = int(cookie)
    if op == "hello":
        val = bytes(16)
    req = build(OPS[op], req_id, key, val, cookie, auth, bad_mac)
    rep = exchange(s, req)
    out = {"req_len": len(req), "rep_len": len(rep)}
    if len(rep) >= 40:
        h = HDR.unpack_from(rep)
        out.update(status=STATUS[h[3]] if h[3] < len(STATUS) else h[3], version=h[9],
                   val_len=h[6], op=h[2], req_id=h[8])
        if op == "hello" and h[3] == 0:
            out["cookie"], out["valid_ms"], out["flags"] = struct.unpack_from("<QII", rep, 40)
    print(json.dumps(out))


main()
