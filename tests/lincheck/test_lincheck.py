#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Self-tests of lincheck.py: hand-made histories, a differential test against a brute
force checker on small random histories, and a larger history against a time bound."""

import itertools
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lincheck  # noqa: E402

FAILS = []


def hist(*evs):
    """Events as tuples (t, proc, type, op, key, value, version, expect)."""
    out = []
    for t, p, ty, op, k, val, ver, exp in evs:
        out.append(json.dumps({"t": t, "proc": p, "type": ty, "op": op, "key": k,
                               "value": val, "version": ver, "expect": exp}))
    return out


def verdict(lines, budget=2000000):
    return lincheck.check(lincheck.parse(lines), budget)[0]


def expect(name, lines, want):
    got = verdict(lines)
    if got != want:
        FAILS.append("%s: verdict %d, want %d" % (name, got, want))


def inv(t, p, op, val=None, exp=None, k="a"):
    return (t, p, "invoke", op, k, val, None, exp)


def ok(t, p, op, val=None, ver=None, k="a"):
    return (t, p, "ok", op, k, val, ver, None)


def fail(t, p, op, k="a"):
    return (t, p, "fail", op, k, None, None, None)


def info(t, p, op, k="a"):
    return (t, p, "info", op, k, None, None, None)


def hand_cases():
    # A write then a read of it.
    expect("write-read", hist(inv(1, 1, "put", "x"), ok(2, 1, "put", ver=5),
                              inv(3, 2, "get"), ok(4, 2, "get", "x", 5)), 0)
    # A stale read after an acknowledged write.
    expect("stale read", hist(inv(1, 1, "put", "x"), ok(2, 1, "put", ver=5),
                              inv(3, 1, "put", "y"), ok(4, 1, "put", ver=6),
                              inv(5, 2, "get"), ok(6, 2, "get", "x", 5)), 1)
    # A lost acknowledged write: not found after it.
    expect("lost write", hist(inv(1, 1, "put", "x"), ok(2, 1, "put", ver=5),
                              inv(3, 2, "get"), ok(4, 2, "get", None, None)), 1)
    # A value never written.
    expect("phantom", hist(inv(1, 2, "get"), ok(2, 2, "get", "z", 9)), 1)
    # Concurrent writes: a read may see either, with the order its versions give.
    expect("concurrent writes", hist(inv(1, 1, "put", "x"), inv(1, 2, "put", "y"),
                                     ok(3, 1, "put", ver=7), ok(3, 2, "put", ver=8),
                                     inv(4, 3, "get"), ok(5, 3, "get", "y", 8)), 0)
    expect("concurrent writes, versions against the read",
           hist(inv(1, 1, "put", "x"), inv(1, 2, "put", "y"), ok(3, 1, "put", ver=8),
                ok(3, 2, "put", ver=7), inv(4, 3, "get"), ok(5, 3, "get", "y", 7)), 1)
    # Versions going backwards.
    expect("version backwards", hist(inv(1, 1, "put", "x"), ok(2, 1, "put", ver=5),
                                     inv(3, 1, "put", "y"), ok(4, 1, "put", ver=4)), 1)
    # CAS: success on the right version, refusal on a wrong one, success on a wrong one.
    base = [inv(1, 1, "put", "x"), ok(2, 1, "put", ver=5)]
    expect("cas right", hist(*base, inv(3, 1, "cas", "y", 5), ok(4, 1, "cas", ver=6),
                             inv(5, 2, "get"), ok(6, 2, "get", "y", 6)), 0)
    expect("cas wrong refused", hist(*base, inv(3, 1, "cas", "y", 4), fail(4, 1, "cas")), 0)
    expect("cas wrong succeeded", hist(*base, inv(3, 1, "cas", "y", 4),
                                       ok(4, 1, "cas", ver=6)), 1)
    expect("cas right refused", hist(*base, inv(3, 1, "cas", "y", 5), fail(4, 1, "cas")), 1)
    expect("cas create on absent", hist(inv(1, 1, "cas", "x", 0), ok(2, 1, "cas", ver=3)), 0)
    expect("cas create on present", hist(*base, inv(3, 1, "cas", "y", 0),
                                         ok(4, 1, "cas", ver=6)), 1)
    # Deletions.
    expect("del then not found", hist(*base, inv(3, 1, "del"), ok(4, 1, "del", ver=6),
                                      inv(5, 2, "get"), ok(6, 2, "get", None, None)), 0)
    expect("del absent refused", hist(inv(1, 1, "del"), fail(2, 1, "del")), 0)
    expect("del present refused", hist(*base, inv(3, 1, "del"), fail(4, 1, "del")), 1)
    expect("read after del", hist(*base, inv(3, 1, "del"), ok(4, 1, "del", ver=6),
                                  inv(5, 2, "get"), ok(6, 2, "get", "x", 5)), 1)
    # Indeterminate writes: seen later, or never.
    expect("info write seen", hist(inv(1, 1, "put", "x"), info(2, 1, "put"),
                                   inv(5, 2, "get"), ok(6, 2, "get", "x", 11)), 0)
    expect("info write never", hist(inv(1, 1, "put", "x"), info(2, 1, "put"),
                                    inv(5, 2, "get"), ok(6, 2, "get", None, None)), 0)
    expect("info write seen, then unseen",
           hist(inv(1, 1, "put", "x"), info(2, 1, "put"), inv(5, 2, "get"),
                ok(6, 2, "get", "x", 11), inv(7, 2, "get"), ok(8, 2, "get", None, None)), 1)
    expect("info write late", hist(inv(1, 1, "put", "x"), info(2, 1, "put"),
                                   inv(3, 2, "get"), ok(4, 2, "get", None, None),
                                   inv(5, 2, "get"), ok(6, 2, "get", "x", 11)), 0)
    expect("info write with a version below", hist(*base, inv(3, 1, "put", "y"),
                                                   info(4, 1, "put"), inv(5, 2, "get"),
                                                   ok(6, 2, "get", "y", 4)), 1)
    expect("cas on an info write's version",
           hist(inv(1, 1, "put", "x"), info(2, 1, "put"), inv(3, 2, "cas", "y", 11),
                ok(4, 2, "cas", ver=12), inv(5, 2, "get"), ok(6, 2, "get", "y", 12)), 0)
    # Keys are independent.
    expect("two keys", hist(inv(1, 1, "put", "x", k="a"), ok(2, 1, "put", ver=5, k="a"),
                            inv(3, 2, "get", k="b"), ok(4, 2, "get", None, None, k="b")), 0)


def bad_inputs():
    cases = [
        (["{"], "not JSON"),
        ([json.dumps({"t": 1, "proc": 1, "type": "invoke", "op": "get"})], "no 'key'"),
        ([json.dumps({"t": 1, "proc": 1, "type": "ok", "op": "get", "key": "a"})],
         "completes nothing"),
        (hist(inv(1, 1, "get"), inv(2, 1, "get")), "operation open"),
        (hist(inv(1, 1, "put", "x"), info(2, 1, "put"), inv(3, 1, "get")),
         "after an indeterminate"),
        (hist(inv(1, 1, "cas", "x")), "cas without expect"),
        (hist(inv(1, 1, "put", "x"), ok(2, 1, "put")), "without its new version"),
        (hist(inv(1, 1, "get"), fail(2, 1, "get")), "cannot fail"),
    ]
    for lines, msg in cases:
        try:
            lincheck.parse(lines)
            FAILS.append("bad input accepted: %s" % msg)
        except lincheck.BadInput as e:
            if msg not in str(e):
                FAILS.append("bad input %r: message %r" % (msg, str(e)))
    # The command line: exit codes.
    import io
    import contextlib
    path = "/tmp/lincheck-selftest-%d.jsonl" % os.getpid()
    for lines, code in ((hist(inv(1, 1, "put", "x"), ok(2, 1, "put", ver=5)), 0),
                        (hist(inv(1, 2, "get"), ok(2, 2, "get", "z", 9)), 1), (["{"], 2)):
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            got = lincheck.main([path, "--json"])
        if got != code:
            FAILS.append("exit %d, want %d" % (got, code))
    os.unlink(path)


# ---- brute force ---------------------------------------------------------------------

def brute(ops):
    """Linearizable? Every subset of the indeterminate ops, every order that respects
    real time."""
    det = [o for o in ops if o.status != "info"]
    ind = [o for o in ops if o.status == "info"]
    for r in range(len(ind) + 1):
        for chosen in itertools.combinations(ind, r):
            sel = det + list(chosen)
            for perm in itertools.permutations(sel):
                pos = {o.i: k for k, o in enumerate(perm)}
                if any(a.status != "info" and a.t_ret < b.t_call and pos[a.i] > pos[b.i]
                       for a in sel for b in sel):
                    continue
                s = (False, None, None, 0)
                for o in perm:
                    s = lincheck.step(s, o)
                    if s is None:
                        break
                if s is not None:
                    return True
    return False


def random_history(rng, n_ops, procs, corrupt=True):
    """A history of a real register with concurrent clients, sometimes corrupted."""
    t = 0
    events, pending = [], []
    reg = {"present": False, "value": None, "version": 0, "vmax": 0}
    free = list(range(procs))
    next_proc = procs
    k = 0
    while k < n_ops or pending:
        t += 1
        if pending and (k >= n_ops or rng.random() < 0.5):
            p, op, val, exp = pending.pop(rng.randrange(len(pending)))
            # Takes effect now (or, for an indeterminate one, maybe not).
            vers = reg["vmax"] + rng.randint(1, 3)
            out = None
            happens = rng.random() < 0.8
            if op == "get":
                out = ("ok", reg["value"] if reg["present"] else None,
                       reg["version"] if reg["present"] else None)
            elif op == "put":
                if happens:
                    reg.update(present=True, value=val, version=vers, vmax=vers)
                out = ("ok", None, vers)
            elif op == "cas":
                cond = (not reg["present"]) if exp == 0 else (reg["present"] and
                                                             reg["version"] == exp)
                if cond and happens:
                    reg.update(present=True, value=val, version=vers, vmax=vers)
                out = ("ok", None, vers) if cond else ("fail", None, None)
            else:
                cond = reg["present"]
                if cond and happens:
                    reg.update(present=False, value=None, version=0, vmax=vers)
                out = ("ok", None, vers) if cond else ("fail", None, None)
            ty, v, ver = out
            if not happens and op != "get" and ty == "ok":
                ty = "info"
            if corrupt and rng.random() < 0.05:  # corruption
                if op == "get" and ver is not None:
                    ver += rng.choice((-1, 1))
                elif ty == "fail":
                    ty = "ok"
                    ver = vers + 5
            t += 1
            events.append((t, p, ty, op, "a", v, ver, None))
            if ty == "info":
                free.append(next_proc)
                next_proc += 1
            else:
                free.append(p)
            continue
        if k < n_ops and free:
            p = free.pop(rng.randrange(len(free)))
            op = rng.choice(OPS_R)
            val = "v%d" % k if op in ("put", "cas") else None
            exp = None
            if op == "cas":
                exp = rng.choice((0, reg["version"], reg["version"] + 1))
            events.append((t, p, "invoke", op, "a", val, None, exp))
            pending.append((p, op, val, exp))
            k += 1
    return hist(*events)


OPS_R = ("get", "put", "cas", "del", "get")


def differential():
    rng = random.Random(20261204)
    seen = {0: 0, 1: 0}
    for _ in range(400):
        lines = random_history(rng, rng.randint(2, 6), rng.randint(1, 3))
        ops = lincheck.parse(lines)
        want = brute(ops)
        got = lincheck.check(ops)[0]
        seen[got] = seen.get(got, 0) + 1
        if (got == 0) != want:
            FAILS.append("differential: checker %d, brute force %s:\n  %s" %
                         (got, want, "\n  ".join(lines)))
            return
    if seen[0] < 50 or seen[1] < 20:
        FAILS.append("differential: too few of a kind (%r)" % seen)
    print("differential: 400 random histories agree with brute force (%d linearizable, "
          "%d not)" % (seen[0], seen[1]))


def performance():
    rng = random.Random(7)
    lines = []
    for key in range(10):
        h = random_history(rng, 2000, 8, corrupt=False)
        for line in h:
            ev = json.loads(line)
            ev["key"] = "k%d" % key
            ev["t"] += key * 10 ** 9
            ev["proc"] = "%d-%d" % (key, ev["proc"]) if isinstance(ev["proc"], int) else 0
            lines.append(json.dumps(ev))
    t0 = time.monotonic()
    code, _ = lincheck.check(lincheck.parse(lines))
    dt = time.monotonic() - t0
    print("performance: %d events (10 keys x 2,000 operations, 8 clients) checked in %.2f s "
          "(verdict %d)" % (len(lines), dt, code))
    if code != 0:
        FAILS.append("performance: verdict %d on a history of a real register" % code)


def main():
    hand_cases()
    bad_inputs()
    differential()
    performance()
    for f in FAILS:
        print("FAIL: " + f)
    print("%s: %d failures" % ("PASS" if not FAILS else "FAIL", len(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
