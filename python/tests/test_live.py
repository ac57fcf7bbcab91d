# SPDX-License-Identifier: BSD-3-Clause
"""The keymap package against a running keymapd at $KEYMAP_HOST (port $KEYMAP_PORT, 7070 by
default), with [store] value_max 64959: sync PUT / GET / CAS / DEL / MGET / batch round
trips, str and bytes keys, large values, 5000 concurrent asyncio GETs. Run by
tests/functional/python.sh; exits 77 (skipped) when not root (the server runs in a network
namespace only root makes).
"""

import asyncio
import os
import sys
import unittest
import uuid

if os.geteuid() != 0:
    print("SKIP: needs root (keymapd in a network namespace)")
    sys.exit(77)

import keymap  # noqa: E402

HOST = os.environ.get("KEYMAP_HOST", "198.51.100.2")
PORT = int(os.environ.get("KEYMAP_PORT", "7070"))
OPTS = dict(port=PORT, timeout_ms=300, retries=5)


def fresh(name):
    """A key no other test wrote."""
    return "py/%s/%s" % (name, uuid.uuid4().hex[:12])


class Sync(unittest.TestCase):
    def setUp(self):
        self.c = keymap.Client(HOST, **OPTS)

    def tearDown(self):
        self.c.close()

    def test_handle(self):
        self.c.ping()
        self.assertGreater(self.c.epoch, 0)
        self.assertGreaterEqual(self.c.nb_workers, 1)
        self.assertGreater(self.c.stats()["requests"], 0)

    def test_put_get_cas_delete(self):
        k = fresh("pgcd")
        with self.assertRaises(keymap.NotFound) as cm:
            self.c.get(k)
        self.assertEqual(cm.exception.code, keymap.Err.NOT_FOUND)
        self.assertEqual(str(cm.exception), "get: not found")
        v1 = self.c.put(k, "one")
        self.assertGreater(v1, 0)
        self.assertEqual(self.c.get(k), (b"one", v1))
        v2 = self.c.put(k, b"two")
        self.assertGreater(v2, v1)
        self.assertEqual(self.c.get(k), (b"two", v2))
        # CAS on the current version moves it; on an old one raises with the current.
        v3 = self.c.cas(k, "three", v2)
        self.assertGreater(v3, v2)
        with self.assertRaises(keymap.VersionMismatch) as cm:
            self.c.cas(k, "four", v2)
        self.assertEqual(cm.exception.current_version, v3)
        self.assertEqual(self.c.get(k), (b"three", v3))
        # CAS 0: create only if absent.
        with self.assertRaises(keymap.VersionMismatch):
            self.c.cas(k, "x", 0)
        k2 = fresh("cas0")
        v = self.c.cas(k2, "new", 0)
        self.assertEqual(self.c.get(k2), (b"new", v))
        # Conditional and unconditional DEL.
        with self.assertRaises(keymap.VersionMismatch):
            self.c.delete(k, v2)
        self.c.delete(k, v3)
        with self.assertRaises(keymap.NotFound):
            self.c.get(k)
        self.c.delete(k2)
        with self.assertRaises(keymap.NotFound):
            self.c.get(k2)
        with self.assertRaises(keymap.NotFound):
            self.c.delete(k2)

    def test_str_and_bytes_keys(self):
        ks = fresh("str") + "/\u00e9t\u00e9"
        v = self.c.put(ks, "caf\u00e9")
        self.assertEqual(self.c.get(ks.encode("utf-8")), ("caf\u00e9".encode("utf-8"), v))
        kb = fresh("bytes").encode() + b"/\x00\xff\x01"
        v = self.c.put(kb, b"\x00\x01\xfe\xff")
        self.assertEqual(self.c.get(kb), (b"\x00\x01\xfe\xff", v))
        self.assertEqual(self.c.get(bytearray(kb))[0], b"\x00\x01\xfe\xff")

    def test_large_values(self):
        # 11,000 bytes: a PUT in 8 fragments, the most keymapd reassembles at MTU 1500
        # (docs/protocol.md, section 1); mget, batch and the async GET read it through
        # their 1 KB buffers, grown.
        k = fresh("11k")
        val = os.urandom(11000)
        v = self.c.put(k, val)
        self.assertEqual(self.c.get(k), (val, v))
        self.assertEqual(self.c.mget([k, k + "/absent"]), [(val, v), (None, 0)])
        r = self.c.batch([("get", k)])[0]
        self.assertTrue(r.ok, r.err)
        self.assertEqual((r.value, r.version), (val, v))

        async def aget():
            async with keymap.AsyncClient(HOST, **OPTS) as a:
                return await a.aget(k)

        self.assertEqual(asyncio.run(aget()), (val, v))
        # 60 KB: within KM_CLIENT_VALUE_MAX, so the binding sends it (45 fragments); keymapd
        # drops a request of more than 8 fragments unanswered: the PUT times out and the
        # key keeps its value. One byte over VALUE_MAX is refused before sending.
        big = os.urandom(60 * 1024)
        with keymap.Client(HOST, port=PORT, timeout_ms=100, retries=1) as c:
            with self.assertRaises(keymap.Timeout):
                c.put(k, big)
        self.assertEqual(self.c.get(k), (val, v))
        with self.assertRaises(keymap.TooLarge):
            self.c.put(k, b"x" * (keymap.VALUE_MAX + 1))

    def test_mget(self):
        base = fresh("mget")
        keys = ["%s/%d" % (base, i) for i in range(50)]
        vers = {}
        for i, k in enumerate(keys):
            if i % 5 != 0:
                vers[k] = self.c.put(k, "v%d" % i)
        got = self.c.mget(keys + [base + "/absent"])
        self.assertEqual(len(got), 51)
        for i, k in enumerate(keys):
            if i % 5 == 0:
                self.assertIsNone(got[i][0], k)
            else:
                self.assertEqual(got[i], (("v%d" % i).encode(), vers[k]))
        self.assertIsNone(got[50][0])
        self.assertEqual(self.c.mget([]), [])

    def test_scan(self):
        base = fresh("scan")
        vers = {}
        for i in range(120):
            k = "%s/%d" % (base, i)
            vers[k.encode()] = self.c.put(k, "s%d" % i)
        got = list(self.c.scan(base + "/"))
        self.assertEqual(sorted(k for k, _, _ in got), sorted(vers))
        for k, v, ver in got:
            self.assertEqual((v, ver), (b"s" + k.rsplit(b"/", 1)[1], vers[k]))
        keys = list(self.c.scan(base + "/1", keys_only=True, page=3))
        self.assertEqual(sorted(k for k, _, _ in keys),
                         sorted(k for k in vers if k.startswith((base + "/1").encode())))
        self.assertTrue(all(v is None for _, v, _ in keys))
        self.assertEqual(list(self.c.scan(base + "/absent/")), [])
        with self.assertRaises(keymap.InvalidArgument):
            list(self.c.scan("py"))  # no separator: keys of every shard begin with it

    def test_batch(self):
        base = fresh("batch")
        puts = self.c.batch([("put", "%s/%d" % (base, i), "b%d" % i) for i in range(200)])
        self.assertTrue(all(r.ok and r.version > 0 for r in puts))
        gets = self.c.batch([keymap.BatchOp(keymap.Op.GET, "%s/%d" % (base, i))
                             for i in range(200)] + [("get", base + "/absent")])
        for i, r in enumerate(gets[:200]):
            self.assertTrue(r.ok, r.err)
            self.assertEqual(r.value, ("b%d" % i).encode())
            self.assertEqual(r.version, puts[i].version)
        self.assertEqual(gets[200].err, keymap.Err.NOT_FOUND)
        self.assertIsInstance(gets[200].error, keymap.NotFound)
        k0 = "%s/0" % base
        mixed = self.c.batch([
            ("cas", k0, "c0", puts[0].version),   # moves the version
            ("cas", "%s/1" % base, "c1", 1),       # a wrong version: per-op error
            ("del", "%s/2" % base),
            ("del", "%s/3" % base, puts[3].version + 1000),
            ("ping",),
        ])
        self.assertTrue(mixed[0].ok)
        self.assertGreater(mixed[0].version, puts[0].version)
        self.assertEqual(mixed[1].err, keymap.Err.VERSION_MISMATCH)
        # An Err, as docs/client.md's example uses it (r.err.name).
        self.assertIsInstance(mixed[1].err, keymap.Err)
        self.assertEqual(mixed[1].err.name, "VERSION_MISMATCH")
        self.assertEqual(mixed[1].version, puts[1].version)
        self.assertTrue(mixed[2].ok)
        self.assertEqual(mixed[3].err, keymap.Err.VERSION_MISMATCH)
        self.assertTrue(mixed[4].ok)
        self.assertEqual(self.c.get(k0), (b"c0", mixed[0].version))
        with self.assertRaises(keymap.NotFound):
            self.c.get("%s/2" % base)
        self.assertEqual(self.c.get("%s/3" % base)[0], b"b3")


class Async(unittest.TestCase):
    N = 5000

    def test_concurrent_gets(self):
        base = fresh("async")
        keys = ["%s/%d" % (base, i) for i in range(self.N)]
        want = {}
        with keymap.Client(HOST, **OPTS) as c:
            for i in range(0, self.N, 500):
                res = c.batch([("put", k, "value-%d" % (j * 31))
                               for j, k in enumerate(keys[i:i + 500], i)])
                for j, r in enumerate(res, i):
                    self.assertTrue(r.ok, r.err)
                    want[keys[j]] = (("value-%d" % (j * 31)).encode(), r.version)

        async def run():
            async with keymap.AsyncClient(HOST, **OPTS) as a:
                got = await asyncio.gather(*(a.aget(k) for k in keys))
                self.assertEqual(a.pending, 0)
                # Writes and a miss through the same loop.
                k = base + "/w"
                v1 = await a.aput(k, "a")
                v2 = await a.acas(k, b"b", v1)
                self.assertGreater(v2, v1)
                with self.assertRaises(keymap.VersionMismatch) as cm:
                    await a.acas(k, "c", v1)
                self.assertEqual(cm.exception.current_version, v2)
                self.assertEqual(await a.aget(k), (b"b", v2))
                await a.adelete(k, v2)
                with self.assertRaises(keymap.NotFound):
                    await a.aget(k)
                return got

        got = asyncio.run(run())
        self.assertEqual(len(got), self.N)
        bad = [k for k, g in zip(keys, got) if g != want[k]]
        self.assertEqual(bad, [], "%d of %d GETs wrong" % (len(bad), self.N))


if __name__ == "__main__":
    unittest.main(verbosity=2)
