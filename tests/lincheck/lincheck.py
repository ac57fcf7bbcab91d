#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Linearizability checker for keymap histories (one register per key, with versions).

Input: JSON lines, one event each, in any order (sorted by "t"):
  {"t": ns, "proc": id, "type": "invoke"|"ok"|"fail"|"info",
   "op": "get"|"put"|"cas"|"del", "key": str,
   "value": str|null, "version": int|null, "expect": int|null}
- invoke: the request left; value is a put's or cas's value, expect a cas's (0: create only
  if absent) or a del's expected version (null: any).
- ok: the reply said it happened. get: value and version read (value null: not found);
  put/cas: the new version; del: its version or null.
- fail: the reply said it did not happen: a cas or del refused (version mismatch, or
  NOT_FOUND for a del), a get never fails.
- info: no definite reply (a timeout, ERROR): it may have taken effect, once, at any time
  after its invoke, or never. The process then issues nothing more.
A process has at most one operation outstanding.

Model per key: absent, or (value, version); every write takes a version above every
version the key ever had (the server's promise); a get reads the state; a cas(expect)
succeeds iff the version equals expect (0: iff absent); a del(expect) iff present (and the
version equals expect when given).

Algorithm: Wing & Gong's search with Lowe's memoization (the WGL algorithm of Knossos and
porcupine), per key. An indeterminate operation is linearized anywhere after its invoke or
never. A per-key budget of search steps bounds the time: beyond it the verdict is unknown.

Exit: 0 linearizable, 1 not (the key and the operations that could not be ordered are
printed), 2 bad input (with the line number), 3 unknown (budget exhausted).
--json prints the verdict as one JSON object.
"""

import argparse
import json
import sys

OPS = ("get", "put", "cas", "del")


class BadInput(Exception):
    pass


class Op:
    __slots__ = ("i", "proc", "op", "key", "value", "version", "expect", "t_call",
                 "t_ret", "status", "line", "value_read")

    def __init__(self, i, ev, line):
        self.i = i
        self.proc = ev["proc"]
        self.op = ev["op"]
        self.key = ev["key"]
        self.value = ev.get("value")
        self.expect = ev.get("expect")
        self.version = None
        self.t_call = ev["t"]
        self.t_ret = None
        self.status = None  # "ok", "fail", "info"
        self.line = line
        self.value_read = None

    def describe(self):
        d = {"proc": self.proc, "op": self.op, "key": self.key, "status": self.status,
             "invoke_t": self.t_call, "complete_t": self.t_ret}
        if self.op in ("put", "cas"):
            d["value"] = self.value
        if self.op in ("cas", "del"):
            d["expect"] = self.expect
        if self.status == "ok" and self.op == "get":
            d["read"] = [self.value_read, self.version]
        elif self.status == "ok":
            d["version"] = self.version
        return d


def parse(lines):
    """Events to operations. Raises BadInput."""
    events = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            ev = json.loads(line)
        except ValueError as e:
            raise BadInput("line %d: not JSON: %s" % (n, e))
        if not isinstance(ev, dict):
            raise BadInput("line %d: not an object" % n)
        for f in ("t", "proc", "type", "op", "key"):
            if f not in ev:
                raise BadInput("line %d: no %r" % (n, f))
        if ev["type"] not in ("invoke", "ok", "fail", "info"):
            raise BadInput("line %d: type %r" % (n, ev["type"]))
        if ev["op"] not in OPS:
            raise BadInput("line %d: op %r" % (n, ev["op"]))
        if not isinstance(ev["t"], int) or isinstance(ev["t"], bool):
            raise BadInput("line %d: t is not an integer" % n)
        if not isinstance(ev["key"], str):
            raise BadInput("line %d: key is not a string" % n)
        for f in ("version", "expect"):
            v = ev.get(f)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise BadInput("line %d: %s is not a non-negative integer" % (n, f))
        events.append((ev["t"], n, ev))
    events.sort(key=lambda e: (e[0], e[1]))
    ops, open_ops, gone = [], {}, set()
    for t, n, ev in events:
        p = ev["proc"]
        if ev["type"] == "invoke":
            if p in open_ops:
                raise BadInput("line %d: process %r invokes with an operation open" % (n, p))
            if p in gone:
                raise BadInput("line %d: process %r invokes after an indeterminate "
                               "operation" % (n, p))
            if ev["op"] in ("put", "cas") and not isinstance(ev.get("value"), str):
                raise BadInput("line %d: %s without a string value" % (n, ev["op"]))
            if ev["op"] == "cas" and ev.get("expect") is None:
                raise BadInput("line %d: cas without expect" % n)
            o = Op(len(ops), ev, n)
            ops.append(o)
            open_ops[p] = o
            continue
        o = open_ops.pop(p, None)
        if o is None:
            raise BadInput("line %d: process %r completes nothing" % (n, p))
        if o.op != ev["op"] or o.key != ev["key"]:
            raise BadInput("line %d: completion of another operation than line %d" %
                           (n, o.line))
        o.t_ret = t
        o.status = ev["type"]
        if o.status == "fail" and o.op in ("get", "put"):
            raise BadInput("line %d: a %s cannot fail definitely" % (n, o.op))
        if o.status == "ok":
            o.version = ev.get("version")
            if o.op == "get":
                o.value_read = ev.get("value")
                if (o.value_read is None) != (o.version is None):
                    raise BadInput("line %d: a get reads a value and its version, or "
                                   "neither" % n)
            elif o.op in ("put", "cas") and o.version is None:
                raise BadInput("line %d: a %s without its new version" % (n, o.op))
        if o.status == "info":
            gone.add(p)
    for o in open_ops.values():  # no completion: as if it timed out
        o.status = "info"
    return ops


# A state: (present, value, version, vmax); version None = written by an indeterminate
# operation (unknown, above vmax at the time); vmax = the highest version known.

def step(s, o):
    """The state after o, or None if o cannot happen in state s."""
    present, value, version, vmax = s
    st = o.status
    if o.op == "get":
        if st != "ok":
            return s  # an indeterminate read changes nothing
        if o.value_read is None:
            return s if not present else None
        if not present or value != o.value_read:
            return None
        if version is None:
            return (True, value, o.version, o.version) if o.version > vmax else None
        return s if version == o.version else None
    if o.op == "put":
        if st == "ok":
            return (True, o.value, o.version, o.version) if o.version > vmax else None
        return (True, o.value, None, vmax)
    if o.op == "cas":
        if o.expect == 0:
            cond = not present
        elif not present:
            cond = False
        elif version is None:
            cond = o.expect > vmax  # the unknown version may be this one
        else:
            cond = version == o.expect
        if st == "fail":
            if not cond:
                return s
            if version is None and present and o.expect != 0:
                return s  # the unknown version may be another one
            return None
        if not cond:
            return None
        if present and version is None and o.expect != 0:
            vmax = o.expect  # bound: it was that version
        if st == "ok":
            return (True, o.value, o.version, o.version) if o.version > vmax else None
        return (True, o.value, None, vmax)
    # del
    if o.expect is None:
        cond = present
    elif not present:
        cond = False
    elif version is None:
        cond = o.expect > vmax
    else:
        cond = version == o.expect
    if st == "fail":
        if not cond:
            return s
        if version is None and present and o.expect is not None:
            return s
        return None
    if not cond:
        return None
    if present and version is None and o.expect is not None:
        vmax = o.expect
    if st == "ok" and o.version is not None:
        if o.version <= vmax:
            return None
        vmax = o.version
    return (False, None, None, vmax)


class Node:
    __slots__ = ("op", "ret", "prev", "next", "match")

    def __init__(self, op, ret):
        self.op, self.ret = op, ret
        self.prev = self.next = self.match = None


def check_key(ops, budget):
    """WGL over one key's operations. @return (verdict, detail): verdict True, False or
    None (budget exhausted); detail on False: the longest linearization and the op whose
    completion could not be reached."""
    entries = []
    for o in ops:
        entries.append((o.t_call, 0, o))
        if o.status != "info":
            entries.append((o.t_ret, 1, o))
    # Calls before returns at equal times: concurrent, the permissive reading.
    entries.sort(key=lambda e: (e[0], e[1], e[2].i))
    head = Node(None, False)
    prev, calls = head, {}
    for _, kind, o in entries:
        n = Node(o, kind == 1)
        if kind == 0:
            calls[o.i] = n
        else:
            n.match = calls[o.i]
            calls[o.i].match = n
        prev.next, n.prev = n, prev
        prev = n
    returns = sum(1 for o in ops if o.status != "info")
    bit = {o.i: 1 << k for k, o in enumerate(ops)}

    def lift(n):
        n.prev.next = n.next
        if n.next:
            n.next.prev = n.prev
        m = n.match
        if m is not None:
            m.prev.next = m.next
            if m.next:
                m.next.prev = m.prev

    def unlift(n):
        m = n.match
        if m is not None:
            m.prev.next = m
            if m.next:
                m.next.prev = m
        n.prev.next = n
        if n.next:
            n.next.prev = n

    state = (False, None, None, 0)
    lin, cache, stack = 0, set(), []
    best, stuck = [], None
    entry = head.next
    steps = 0
    while True:
        if returns == 0:
            return True, None
        steps += 1
        if steps > budget:
            return None, None
        if entry is not None and not entry.ret:
            o = entry.op
            ns = step(state, o)
            if ns is not None and (lin | bit[o.i], ns) not in cache:
                cache.add((lin | bit[o.i], ns))
                stack.append((entry, state))
                state, lin = ns, lin | bit[o.i]
                if o.status != "info":
                    returns -= 1
                lift(entry)
                if len(stack) > len(best):
                    best = [e.op for e, _ in stack]
                entry = head.next
            else:
                entry = entry.next
            continue
        # A completion not yet linearized (or the end): back up.
        if entry is not None and (stuck is None or len(stack) >= len(best)):
            stuck = entry.op
        if not stack:
            return False, (best, stuck)
        entry, state = stack.pop()
        o = entry.op
        lin &= ~bit[o.i]
        if o.status != "info":
            returns += 1
        unlift(entry)
        entry = entry.next


def check(ops, budget=2000000):
    """@return (verdict, report) over every key: verdict 0, 1 or 3 (as the exit code)."""
    keys = {}
    for o in ops:
        keys.setdefault(o.key, []).append(o)
    unknown = []
    for k in sorted(keys):
        v, detail = check_key(keys[k], budget)
        if v is False:
            best, stuck = detail
            return 1, {"linearizable": False, "key": k,
                       "longest_linearization": [o.describe() for o in best],
                       "cannot_complete": stuck.describe() if stuck else None,
                       "operations_of_key": len(keys[k])}
        if v is None:
            unknown.append(k)
    if unknown:
        return 3, {"linearizable": None, "unknown_keys": unknown}
    return 0, {"linearizable": True, "keys": len(keys), "operations": len(ops)}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Check a keymap history for linearizability.")
    ap.add_argument("history", help="JSON lines file ('-': standard input)")
    ap.add_argument("--json", action="store_true", help="print the verdict as JSON")
    ap.add_argument("--budget", type=int, default=2000000,
                    help="search steps per key before the verdict is unknown")
    a = ap.parse_args(argv)
    try:
        f = sys.stdin if a.history == "-" else open(a.history, encoding="utf-8")
    except OSError as e:
        print("lincheck: %s" % e, file=sys.stderr)
        return 2
    try:
        with f:
            ops = parse(f)
    except BadInput as e:
        print("lincheck: %s: %s" % (a.history, e), file=sys.stderr)
        return 2
    code, rep = check(ops, a.budget)
    if a.json:
        print(json.dumps(rep))
    elif code == 0:
        print("linearizable: %d operations on %d keys" % (rep["operations"], rep["keys"]))
    elif code == 3:
        print("unknown: search budget exhausted on keys %s" % ", ".join(rep["unknown_keys"]))
    else:
        print("NOT linearizable: key %r (%d operations)" % (rep["key"],
                                                            rep["operations_of_key"]))
        print("longest linearization found:")
        for d in rep["longest_linearization"]:
            print("  " + json.dumps(d))
        if rep["cannot_complete"]:
            print("then no order lets this operation complete:")
            print("  " + json.dumps(rep["cannot_complete"]))
    return code


if __name__ == "__main__":
    sys.exit(main())
