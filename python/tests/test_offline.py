# SPDX-License-Identifier: BSD-3-Clause
"""The keymap package without a server: its ctypes structs against km_client.h (field
names, order and C types read from the header; LP64 offsets), the errors of open (Resolve,
Unreachable), a lazy client's timeouts, sync and async, km_strerror's texts.

usage: KEYMAP_LIB=build/lib/libkeymap.so PYTHONPATH=python python3 test_offline.py
"""

import asyncio
import ctypes
import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import keymap  # noqa: E402

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib", "client",
                      "km_client.h")

# C type in km_client.h -> ctypes type of the binding.
C_TYPES = {
    "size_t": ctypes.c_size_t,
    "uint8_t": ctypes.c_uint8,
    "uint16_t": ctypes.c_uint16,
    "uint32_t": ctypes.c_uint32,
    "uint64_t": ctypes.c_uint64,
    "unsigned int": ctypes.c_uint,
    "int": ctypes.c_int,
    "const char *": ctypes.c_char_p,
    "const void *": ctypes.c_void_p,
    "void *": ctypes.c_void_p,
}


def header_struct(text, name):
    """[(ctype text, field name)] of struct NAME in the header."""
    m = re.search(r"struct %s \{(.*?)\};" % name, text, re.S)
    if m is None:
        raise AssertionError("struct %s not in km_client.h" % name)
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    out = []
    for decl in body.split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        f = re.match(r"(.*?)(\**)\s*(\w+)$", decl)
        ctype = f.group(1).strip() + (" " + f.group(2) if f.group(2) else "")
        out.append((ctype, f.group(3)))
    return out


def silent_port():
    """A UDP socket that never answers, and its port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


class Layout(unittest.TestCase):
    STRUCTS = [
        ("km_client_opts", keymap.KmClientOpts),
        ("km_batch_op", keymap.KmBatchOp),
        ("km_mget_item", keymap.KmMgetItem),
        ("km_scan_item", keymap.KmScanItem),
        ("km_client_stats", keymap.KmClientStats),
    ]
    # x86-64 / aarch64 (LP64): sizeof and offsetof as a C compiler lays them out.
    LP64 = {
        "km_client_opts": (56, {"size": 0, "host": 8, "port": 16, "timeout_ms": 20,
                                "retries": 24, "session": 28, "no_steer": 32, "window": 36,
                                "auth_key": 40, "lazy": 48, "reserved": 52}),
        "km_batch_op": (96, {"op": 0, "key": 8, "klen": 16, "val": 24, "vlen": 32,
                             "version": 40, "buf": 48, "cap": 56, "session": 64, "err": 68,
                             "len": 72, "out_version": 80, "latency_ns": 88}),
        "km_mget_item": (56, {"key": 0, "klen": 8, "buf": 16, "cap": 24, "len": 32,
                              "version": 40, "err": 48}),
        "km_scan_item": (40, {"key": 0, "klen": 8, "val": 16, "vlen": 24, "version": 32}),
        "km_client_stats": (80, {}),
    }

    @unittest.skipUnless(os.path.exists(HEADER), "km_client.h not beside the package")
    def test_fields_as_in_the_header(self):
        with open(HEADER) as f:
            text = f.read()
        for cname, st in self.STRUCTS:
            with self.subTest(struct=cname):
                want = header_struct(text, cname)
                got = [(n, t) for n, t in st._fields_]
                self.assertEqual([n for _, n in want], [n for n, _ in got])
                for (ctype, name), (_, t) in zip(want, got):
                    self.assertIn(ctype, C_TYPES, "%s.%s: type %s" % (cname, name, ctype))
                    self.assertIs(C_TYPES[ctype], t, "%s.%s" % (cname, name))

    @unittest.skipUnless(ctypes.sizeof(ctypes.c_void_p) == 8 and ctypes.sizeof(ctypes.c_long) == 8,
                         "not LP64")
    def test_lp64_offsets(self):
        for cname, st in self.STRUCTS:
            size, offs = self.LP64[cname]
            with self.subTest(struct=cname):
                self.assertEqual(ctypes.sizeof(st), size)
                for name, off in offs.items():
                    self.assertEqual(getattr(st, name).offset, off, name)

    @unittest.skipUnless(os.path.exists(HEADER), "km_client.h not beside the package")
    def test_constants_as_in_the_header(self):
        with open(HEADER) as f:
            text = f.read()
        errs = dict((n, int(v)) for n, v in re.findall(r"KM_(OK|ERR_\w+) = (-?\d+)", text))
        self.assertEqual(errs, {("OK" if e.name == "OK" else "ERR_" + e.name): int(e)
                                for e in keymap.Err})
        ops = dict((n, int(v)) for n, v in re.findall(r"KM_BATCH_(\w+) = (\d+)", text))
        self.assertEqual(ops, {o.name: int(o) for o in keymap.Op})
        for name, value in (("KEY_MAX", keymap.KEY_MAX), ("VALUE_MAX", keymap.VALUE_MAX),
                            ("AUTH_LEN", keymap.AUTH_LEN)):
            m = re.search(r"#define KM_CLIENT_%s\s+(\d+)" % name, text)
            self.assertEqual(int(m.group(1)), value, name)


class Errors(unittest.TestCase):
    def test_strerror(self):
        self.assertEqual(keymap.strerror(keymap.Err.NOT_FOUND), "not found")
        self.assertEqual(keymap.strerror(-1000), "unknown error")
        e = keymap.error(keymap.Err.VERSION_MISMATCH, "cas")
        self.assertIsInstance(e, keymap.VersionMismatch)
        self.assertIsInstance(e, keymap.KeymapError)
        self.assertEqual(e.code, keymap.Err.VERSION_MISMATCH)
        self.assertEqual(e.message, "version mismatch")
        self.assertEqual(str(e), "cas: version mismatch")
        for code in keymap.Err:
            if code != keymap.Err.OK:
                e = keymap.error(code)
                self.assertEqual(e.code, code)
                self.assertEqual(str(e), keymap.strerror(code))
                self.assertNotEqual(str(e), "unknown error", code)
                self.assertIsNot(type(e), keymap.KeymapError, code)
        e = keymap.error(-1000)
        self.assertIs(type(e), keymap.KeymapError)
        self.assertEqual(e.code, -1000)

    def test_resolve(self):
        with self.assertRaises(keymap.Resolve) as cm:
            keymap.Client("nosuch.invalid", timeout_ms=30, retries=1)
        self.assertEqual(cm.exception.code, keymap.Err.RESOLVE)
        self.assertIn(keymap.strerror(keymap.Err.RESOLVE), str(cm.exception))

    def test_unreachable(self):
        # A port nobody listens on (taken and given back), and one whose socket never
        # answers.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(keymap.Unreachable) as cm:
            keymap.Client("127.0.0.1", port=port, timeout_ms=30, retries=0)
        self.assertEqual(cm.exception.code, keymap.Err.UNREACHABLE)
        self.assertIn("no server answered", str(cm.exception))
        s, port = silent_port()
        with s:
            t0 = time.monotonic()
            with self.assertRaises(keymap.Unreachable):
                keymap.Client("127.0.0.1", port=port, timeout_ms=30, retries=1)
            self.assertLess(time.monotonic() - t0, 5)

    def test_bad_arguments(self):
        with self.assertRaises(keymap.InvalidArgument):
            keymap.Client("127.0.0.1", auth_key="nonsense", lazy=True)
        with keymap.Client("127.0.0.1", timeout_ms=30, lazy=True) as c:
            with self.assertRaises(TypeError):
                c.get(42)
            # Integers out of their C type's range: refused, never wrapped around.
            for call in (lambda: c.cas("k", "v", -1), lambda: c.cas("k", "v", 1 << 64),
                         lambda: c.delete("k", -2), lambda: c.ping(-1),
                         lambda: c.batch([("cas", "k", "v", -1)]),
                         lambda: list(c.scan("a/", page=-1))):
                with self.assertRaises(ValueError):
                    call()
            with self.assertRaises(TypeError):
                c.cas("k", "v", 1.5)
            with self.assertRaises(TypeError):
                c.delete("k", True)
        for kw in ({"port": 70000}, {"port": -1}, {"timeout_ms": -5}, {"retries": 1 << 32},
                   {"session": -1}, {"window": -1}):
            with self.assertRaises(ValueError, msg=str(kw)):
                keymap.Client("127.0.0.1", lazy=True, **kw)


class Lazy(unittest.TestCase):
    def setUp(self):
        self.sock, self.port = silent_port()
        self.c = keymap.Client("127.0.0.1", port=self.port, timeout_ms=30, retries=1,
                               lazy=True)

    def tearDown(self):
        self.c.close()
        self.sock.close()

    def test_unsteered(self):
        self.assertEqual(self.c.epoch, 0)
        self.assertEqual(self.c.nb_workers, 1)
        st = self.c.stats()
        self.assertEqual(set(st), {n for n, _ in keymap.KmClientStats._fields_})

    def test_sync_timeouts(self):
        for call in (lambda: self.c.get("k"), lambda: self.c.get(b"\x00k"),
                     lambda: self.c.put("k", "v"), lambda: self.c.cas("k", b"v", 0),
                     lambda: self.c.delete("k"), lambda: self.c.ping(),
                     lambda: self.c.mget(["a", b"b"])):
            with self.assertRaises(keymap.Timeout) as cm:
                call()
            self.assertEqual(cm.exception.code, keymap.Err.TIMEOUT)
            self.assertIn("timed out", str(cm.exception))
        self.assertGreater(self.c.stats()["timeouts"], 0)

    def test_batch_per_op_errors(self):
        res = self.c.batch([("get", "a"), ("put", "b", "v"), keymap.BatchOp("cas", "c", "w", 7),
                            ("del", b"d", 3), ("ping",)])
        self.assertEqual([r.op for r in res], [keymap.Op.GET, keymap.Op.PUT, keymap.Op.CAS,
                                               keymap.Op.DEL, keymap.Op.PING])
        self.assertEqual([r.key for r in res], [b"a", b"b", b"c", b"d", b""])
        for r in res:
            self.assertEqual(r.err, keymap.Err.TIMEOUT)
            self.assertFalse(r.ok)
            self.assertIsInstance(r.error, keymap.Timeout)
            self.assertIsNone(r.value)
        self.assertEqual(self.c.batch([]), [])

    def test_too_large(self):
        with self.assertRaises(keymap.TooLarge):
            self.c.put("k", b"x" * (keymap.VALUE_MAX + 1))
        with self.assertRaises(keymap.TooLarge):
            self.c.get("k" * (keymap.KEY_MAX + 1))

    def test_closed(self):
        self.c.close()
        self.c.close()
        self.assertTrue(self.c.closed)
        with self.assertRaises(ValueError):
            self.c.get("k")


class Async(unittest.TestCase):
    def setUp(self):
        self.sock, self.port = silent_port()

    def tearDown(self):
        self.sock.close()

    def test_futures_time_out(self):
        async def run():
            async with keymap.AsyncClient("127.0.0.1", port=self.port, timeout_ms=30,
                                          retries=1, lazy=True, window=16) as c:
                t0 = time.monotonic()
                calls = [c.aget("k%d" % i) for i in range(100)]
                calls += [c.aput(b"p", b"v"), c.acas("c", "v", 1), c.adelete("d")]
                res = await asyncio.gather(*calls, return_exceptions=True)
                dt = time.monotonic() - t0
                self.assertEqual(c.pending, 0)
                return res, dt

        res, dt = asyncio.run(run())
        self.assertEqual(len(res), 103)
        for r in res:
            self.assertIsInstance(r, keymap.Timeout)
            self.assertEqual(r.code, keymap.Err.TIMEOUT)
        # 7 waves of 16 ops, 2 attempts of 30 ms each: well under 5 s.
        self.assertLess(dt, 5)

    def test_close_cancels(self):
        async def run():
            c = keymap.AsyncClient("127.0.0.1", port=self.port, timeout_ms=1000, retries=3,
                                   lazy=True)
            futs = [c.submit(("get", "k%d" % i)) for i in range(10)]
            await asyncio.sleep(0.05)
            self.assertEqual(c.pending, 10)
            c.close()
            self.assertTrue(all(f.cancelled() for f in futs))
            with self.assertRaises(asyncio.CancelledError):
                await futs[0]

        asyncio.run(run())

    def test_connect_and_aio(self):
        async def run():
            c = await keymap.AsyncClient.connect("127.0.0.1", port=self.port, timeout_ms=30,
                                                 retries=1, lazy=True)
            with c:
                with self.assertRaises(keymap.Timeout):
                    await c.aping()
            s = keymap.Client("127.0.0.1", port=self.port, timeout_ms=30, retries=1, lazy=True)
            a = s.aio()
            self.assertTrue(s.closed)
            # An AsyncClient is not adopted again (its pending ops hold its buffers).
            with self.assertRaises(ValueError):
                a.aio()
            with a:
                with self.assertRaises(keymap.Timeout):
                    await a.aget("k")
                # A sync call on the handle works once nothing is pending.
                with self.assertRaises(keymap.Timeout):
                    a.get("k")

        asyncio.run(run())

    def test_two_loops_in_turn(self):
        c = keymap.AsyncClient("127.0.0.1", port=self.port, timeout_ms=20, retries=0,
                               lazy=True)
        with c:
            for _ in range(2):
                with self.assertRaises(keymap.Timeout):
                    asyncio.run(c.aget("k"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
