#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Strict checker of a Prometheus text exposition page (format 0.0.4), stdlib only.

Reads the page from --url (HTTP GET; status 200 and a text/plain; version=0.0.4 content
type required), from a file, or from stdin ("-" or nothing), and checks:

  * every line is a sample, a "# HELP", a "# TYPE", another comment or empty; the page
    ends with a line feed; no carriage returns;
  * sample syntax: metric name, optional {label="value",...} with escaped values
    (\\\\, \\", \\n only), a float value (decimal, NaN, +Inf, -Inf), optional integer
    timestamp; no duplicate or reserved (__) label names;
  * every family has exactly one HELP and one TYPE, both before its first sample; a
    family's samples are contiguous; no series appears twice;
  * counters: sample names end in _total (family "x_total" with samples "x_total", or
    family "x" with samples "x_total"), values >= 0;
  * histograms: per label set, _bucket samples with strictly increasing le ending in
    +Inf and non-decreasing (cumulative) counts, a _count equal to the +Inf bucket, a
    _sum.

Options check values too: --require NAME (a family with at least one sample),
--min SELECTOR VALUE and --expect-positive SELECTOR, where SELECTOR is a sample name with
optional labels, name{a="b"}: the values of the samples of that name whose labels include
the given ones are summed (all series of the name when no labels are given).

Exit 0 when the page passes, 1 with the first violation ("line N: ...") otherwise.
--self-test runs the checker on embedded good and bad pages.
"""

import argparse
import math
import re
import sys
import urllib.error
import urllib.request

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|Inf)|NaN")
TIMESTAMP = re.compile(r"-?[0-9]+")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
BLANKS = " \t"


class Violation(Exception):
    def __init__(self, line, msg):
        super().__init__(f"line {line}: {msg}" if line else msg)
        self.line = line
        self.msg = msg


def parse_float(text, line, what):
    if FLOAT.fullmatch(text) is None:
        raise Violation(line, f"{what} {text!r} is not a float")
    return float(text)


def skip_blanks(s, i):
    while i < len(s) and s[i] in BLANKS:
        i += 1
    return i


def parse_labels(s, i, line):
    """s[i] is "{". Returns (labels dict, index after "}")."""
    labels = {}
    i += 1
    while True:
        i = skip_blanks(s, i)
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        m = LABEL_NAME.match(s, i)
        if m is None:
            raise Violation(line, f"bad label name at column {i + 1}")
        name = m.group(0)
        if name.startswith("__"):
            raise Violation(line, f"reserved label name {name!r}")
        if name in labels:
            raise Violation(line, f"duplicate label name {name!r}")
        i = skip_blanks(s, m.end())
        if i >= len(s) or s[i] != "=":
            raise Violation(line, f"expected '=' after label {name!r}")
        i = skip_blanks(s, i + 1)
        if i >= len(s) or s[i] != '"':
            raise Violation(line, f"label {name!r}: value not quoted")
        i += 1
        value = []
        while True:
            if i >= len(s):
                raise Violation(line, f"label {name!r}: unterminated value")
            c = s[i]
            if c == '"':
                i += 1
                break
            if c == "\\":
                e = s[i + 1 : i + 2]
                if e not in ("\\", '"', "n"):
                    raise Violation(line, f"label {name!r}: invalid escape \\{e}")
                value.append("\n" if e == "n" else e)
                i += 2
                continue
            value.append(c)
            i += 1
        labels[name] = "".join(value)
        i = skip_blanks(s, i)
        if i < len(s) and s[i] == ",":
            i += 1
        elif i < len(s) and s[i] == "}":
            return labels, i + 1
        else:
            raise Violation(line, f"expected ',' or '}}' after label {name!r}")


def parse_sample(s, line):
    """Returns (name, labels, value)."""
    m = METRIC_NAME.match(s)
    if m is None:
        raise Violation(line, "bad metric name")
    name = m.group(0)
    i = m.end()
    labels = {}
    j = skip_blanks(s, i)
    if j < len(s) and s[j] == "{":
        labels, i = parse_labels(s, j, line)
    if i >= len(s) or s[i] not in BLANKS:
        raise Violation(line, f"{name}: expected a blank before the value")
    fields = s[i:].split()
    if not fields or len(fields) > 2:
        raise Violation(line, f"{name}: expected a value and an optional timestamp")
    value = parse_float(fields[0], line, f"{name}: value")
    if len(fields) == 2 and TIMESTAMP.fullmatch(fields[1]) is None:
        raise Violation(line, f"{name}: timestamp {fields[1]!r} is not an integer")
    return name, labels, value


def parse_help_text(s, line):
    out = []
    i = 0
    while i < len(s):
        if s[i] == "\\":
            e = s[i + 1 : i + 2]
            if e not in ("\\", "n"):
                raise Violation(line, f"HELP: invalid escape \\{e}")
            out.append("\n" if e == "n" else "\\")
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


class Family:
    def __init__(self, name):
        self.name = name
        self.help = None
        self.type = None
        self.help_line = 0
        self.type_line = 0
        self.samples = []  # (line, sample name, labels, value)


class Page:
    """The parsed page: families in order of declaration, series seen."""

    def __init__(self):
        self.families = {}
        self.order = []
        self.samples = []  # (line, name, labels, value)


def family_of(families, name):
    """The declared family a sample name belongs to, or None."""
    if name in families:
        return families[name]
    for suffix, types in (
        ("_total", ("counter",)),
        ("_bucket", ("histogram",)),
        ("_sum", ("histogram", "summary")),
        ("_count", ("histogram", "summary")),
    ):
        if name.endswith(suffix):
            f = families.get(name[: -len(suffix)])
            if f is not None and f.type in types:
                return f
    return None


def check_family(f):
    if f.help is None:
        raise Violation(f.type_line, f"family {f.name}: no HELP")
    if f.type is None:
        raise Violation(f.help_line, f"family {f.name}: no TYPE")
    if f.type == "counter":
        for line, name, _, value in f.samples:
            if not name.endswith("_total"):
                raise Violation(line, f"counter {f.name}: sample {name} does not end in _total")
            if not value >= 0:
                raise Violation(line, f"counter {name}: value {value} is not >= 0")
    elif f.type == "histogram":
        check_histogram(f)


def check_histogram(f):
    groups = {}  # labels without le -> dict
    for line, name, labels, value in f.samples:
        suffix = name[len(f.name) :]
        if suffix not in ("_bucket", "_sum", "_count"):
            raise Violation(line, f"histogram {f.name}: unexpected sample {name}")
        rest = dict(labels)
        le = rest.pop("le", None)
        key = tuple(sorted(rest.items()))
        g = groups.setdefault(key, {"line": line, "buckets": [], "sum": None, "count": None})
        if suffix == "_bucket":
            if le is None:
                raise Violation(line, f"histogram {f.name}: bucket without le")
            edge = parse_float(le, line, f"histogram {f.name}: le")
            if math.isnan(edge):
                raise Violation(line, f"histogram {f.name}: le is NaN")
            if not value >= 0 or math.isinf(value):
                raise Violation(line, f"histogram {f.name}: bucket count {value} is not >= 0")
            if g["buckets"]:
                prev_line, prev_edge, prev_count = g["buckets"][-1]
                if not edge > prev_edge:
                    raise Violation(
                        line, f"histogram {f.name}: le {le} not above the previous bucket's"
                    )
                if value < prev_count:
                    raise Violation(
                        line,
                        f"histogram {f.name}: bucket le={le} count {value:g} below the "
                        f"previous bucket's {prev_count:g} (counts must be cumulative)",
                    )
            g["buckets"].append((line, edge, value))
        else:
            if le is not None:
                raise Violation(line, f"histogram {f.name}: {name} has an le label")
            g[suffix[1:]] = (line, value)
    for g in groups.values():
        if not g["buckets"]:
            raise Violation(g["line"], f"histogram {f.name}: no _bucket samples")
        last_line, last_edge, last_count = g["buckets"][-1]
        if last_edge != math.inf:
            raise Violation(last_line, f"histogram {f.name}: last bucket is not le=\"+Inf\"")
        if g["sum"] is None:
            raise Violation(g["line"], f"histogram {f.name}: no _sum")
        if g["count"] is None:
            raise Violation(g["line"], f"histogram {f.name}: no _count")
        count_line, count = g["count"]
        if count != last_count:
            raise Violation(
                count_line,
                f"histogram {f.name}: _count {count:g} differs from the +Inf bucket "
                f"{last_count:g}",
            )


def check_page(text):
    """Parse and check a page. Returns a Page; raises Violation."""
    page = Page()
    if text and not text.endswith("\n"):
        raise Violation(text.count("\n") + 1, "the last line does not end with a line feed")
    current = None  # family whose samples are being read
    finished = set()  # families whose samples are over
    series = {}
    for n, s in enumerate(text.split("\n")[:-1], 1):
        if "\r" in s:
            raise Violation(n, "carriage return")
        if s.strip(BLANKS) == "":
            continue
        if s.startswith("#"):
            tok = s[1:].lstrip(BLANKS)
            parts = re.split(r"[ \t]+", tok, maxsplit=2)
            if parts[0] not in ("HELP", "TYPE"):
                continue  # another comment
            kind = parts[0]
            if len(parts) < 2 or METRIC_NAME.fullmatch(parts[1]) is None:
                raise Violation(n, f"{kind}: missing or bad metric name")
            name = parts[1]
            f = page.families.get(name)
            if f is None:
                f = page.families[name] = Family(name)
                page.order.append(name)
            elif f.samples or name in finished:
                raise Violation(n, f"{kind} {name} after its samples")
            if current is not None and current is not f:
                check_family(current)
                finished.add(current.name)
                current = None
            if kind == "HELP":
                if f.help is not None:
                    raise Violation(n, f"second HELP for {name} (first at line {f.help_line})")
                f.help = parse_help_text(parts[2] if len(parts) > 2 else "", n)
                f.help_line = n
            else:
                if f.type is not None:
                    raise Violation(n, f"second TYPE for {name} (first at line {f.type_line})")
                t = parts[2].strip(BLANKS) if len(parts) > 2 else ""
                if t not in TYPES:
                    raise Violation(n, f"TYPE {name}: unknown type {t!r}")
                f.type = t
                f.type_line = n
            continue
        name, labels, value = parse_sample(s, n)
        f = family_of(page.families, name)
        if f is None:
            raise Violation(n, f"sample {name} has no HELP/TYPE before it")
        if f.name in finished:
            raise Violation(n, f"sample {name}: samples of family {f.name} are not contiguous")
        if f.help is None or f.type is None:
            raise Violation(n, f"sample {name}: family {f.name} needs HELP and TYPE before it")
        if current is not f:
            if current is not None:
                check_family(current)
                finished.add(current.name)
            current = f
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            raise Violation(n, f"duplicate series {fmt_series(name, labels)} (line {series[key]})")
        series[key] = n
        f.samples.append((n, name, labels, value))
        page.samples.append((n, name, labels, value))
    if current is not None:
        check_family(current)
    for name in page.order:
        check_family(page.families[name])
    return page


def fmt_series(name, labels):
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def parse_selector(sel):
    """NAME or NAME{a="b",...} -> (name, labels)."""
    m = METRIC_NAME.match(sel)
    if m is None:
        raise ValueError(f"bad selector {sel!r}")
    labels = {}
    i = m.end()
    if i < len(sel) and sel[i] == "{":
        try:
            labels, i = parse_labels(sel, i, 0)
        except Violation as e:
            raise ValueError(f"bad selector {sel!r}: {e.msg}") from None
    if i != len(sel):
        raise ValueError(f"bad selector {sel!r}")
    return m.group(0), labels


def select_sum(page, sel):
    name, want = parse_selector(sel)
    found = [
        v
        for _, n, labels, v in page.samples
        if n == name and all(labels.get(k) == x for k, x in want.items())
    ]
    if not found:
        raise Violation(0, f"no sample matches {sel}")
    return math.fsum(found)


def check_options(page, require=(), mins=(), positive=()):
    for name in require:
        f = page.families.get(name)
        if f is None:
            raise Violation(0, f"required family {name} is missing")
        if not f.samples:
            raise Violation(0, f"required family {name} has no samples")
    for sel, bound in mins:
        v = select_sum(page, sel)
        if not v >= bound:
            raise Violation(0, f"{sel} = {v:g}, expected at least {bound:g}")
    for sel in positive:
        v = select_sum(page, sel)
        if not v > 0:
            raise Violation(0, f"{sel} = {v:g}, expected a positive value")


def check(text, require=(), mins=(), positive=()):
    """Returns None if the page passes, else the Violation."""
    try:
        page = check_page(text)
        check_options(page, require, mins, positive)
    except Violation as e:
        return e
    return None


def fetch(url, timeout):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        if r.status != 200:
            raise Violation(0, f"{url}: HTTP status {r.status}")
        ctype = r.headers.get("Content-Type", "")
        params = [p.strip() for p in ctype.split(";")]
        if params[0] != "text/plain" or "version=0.0.4" not in params[1:]:
            raise Violation(0, f"{url}: content type {ctype!r}, not text/plain; version=0.0.4")
        return r.read().decode("utf-8")


# Self-test pages. GOOD pages must pass; each BAD page must fail with the given reason.
GOOD = [
    (
        "every construct",
        """# a comment line
# HELP k_rx_total packets received
# TYPE k_rx_total counter
k_rx_total{worker="0"} 10
k_rx_total{worker="1",} 0 1700000000000

# HELP k_req requests, family named without _total
# TYPE k_req counter
k_req_total 3
# TYPE k_temp gauge
# HELP k_temp odd values: back\\\\slash and new\\nline in help
k_temp{path="a\\"b\\\\c\\nd"} -1.5e-3
k_temp{path="nan"} NaN
k_temp{path="inf"} +Inf
k_temp{path="minf"} -Inf
k_temp { path = "spaced" } .5
# HELP k_lat_seconds latency
# TYPE k_lat_seconds histogram
k_lat_seconds_bucket{worker="0",le="5.12e-08"} 1
k_lat_seconds_bucket{worker="0",le="1.024e-07"} 1
k_lat_seconds_bucket{worker="0",le="+Inf"} 4
k_lat_seconds_sum{worker="0"} 2.5e-06
k_lat_seconds_count{worker="0"} 4
k_lat_seconds_bucket{worker="1",le="5.12e-08"} 0
k_lat_seconds_bucket{worker="1",le="+Inf"} 0
k_lat_seconds_sum{worker="1"} 0
k_lat_seconds_count{worker="1"} 0
# HELP k_empty declared, never sampled
# TYPE k_empty gauge
""",
    ),
    ("empty page", ""),
]

BAD = [
    ("no trailing newline", "# HELP a x\n# TYPE a gauge\na 1", 3, "does not end with a line feed"),
    ("carriage return", "# HELP a x\r\n# TYPE a gauge\na 1\n", 1, "carriage return"),
    ("sample without family", "a 1\n", 1, "no HELP/TYPE"),
    ("HELP only", "# HELP a x\na 1\n", 2, "needs HELP and TYPE"),
    ("TYPE only", "# TYPE a gauge\na 1\n", 2, "needs HELP and TYPE"),
    ("HELP without TYPE, no samples", "# HELP a x\n", 1, "no TYPE"),
    ("second HELP", "# HELP a x\n# HELP a y\n# TYPE a gauge\n", 2, "second HELP"),
    ("second TYPE", "# HELP a x\n# TYPE a gauge\n# TYPE a gauge\n", 3, "second TYPE"),
    ("unknown type", "# HELP a x\n# TYPE a meter\n", 2, "unknown type"),
    ("TYPE after samples", "# HELP a x\n# TYPE a gauge\na 1\n# TYPE a gauge\n", 4,
     "after its samples"),
    ("bad HELP escape", "# HELP a x\\ty\n# TYPE a gauge\n", 1, "invalid escape"),
    ("bad metric name", "# HELP a x\n# TYPE a gauge\n1a 1\n", 3, "bad metric name"),
    ("unquoted label value", "# HELP a x\n# TYPE a gauge\na{w=0} 1\n", 3, "not quoted"),
    ("bad label escape", '# HELP a x\n# TYPE a gauge\na{w="\\t"} 1\n', 3, "invalid escape"),
    ("unterminated label", '# HELP a x\n# TYPE a gauge\na{w="0} 1\n', 3, "unterminated"),
    ("duplicate label", '# HELP a x\n# TYPE a gauge\na{w="0",w="1"} 1\n', 3,
     "duplicate label name"),
    ("reserved label", '# HELP a x\n# TYPE a gauge\na{__name__="a"} 1\n', 3, "reserved"),
    ("bad value", "# HELP a x\n# TYPE a gauge\na 1,5\n", 3, "is not a float"),
    ("word value", "# HELP a x\n# TYPE a gauge\na infinity\n", 3, "is not a float"),
    ("no value", "# HELP a x\n# TYPE a gauge\na{w=\"0\"}\n", 3, "expected a blank"),
    ("bad timestamp", "# HELP a x\n# TYPE a gauge\na 1 1.5\n", 3, "not an integer"),
    ("extra field", "# HELP a x\n# TYPE a gauge\na 1 2 3\n", 3, "optional timestamp"),
    ("counter without _total", "# HELP c x\n# TYPE c counter\nc 1\n", 3,
     "does not end in _total"),
    ("negative counter", "# HELP c_total x\n# TYPE c_total counter\nc_total -1\n", 3,
     "is not >= 0"),
    ("duplicate series", '# HELP a x\n# TYPE a gauge\na{w="0"} 1\na{w="0"} 2\n', 4,
     "duplicate series"),
    ("not contiguous",
     "# HELP a x\n# TYPE a gauge\na 1\n# HELP b x\n# TYPE b gauge\nb 1\na{w=\"1\"} 2\n", 7,
     "not contiguous"),
    ("bucket without le",
     "# HELP h x\n# TYPE h histogram\nh_bucket 1\nh_sum 0\nh_count 1\n", 3,
     "bucket without le"),
    ("le not increasing",
     "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
     "h_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n", 4, "not above"),
    ("no +Inf bucket",
     "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n", 3,
     "not le=\"+Inf\""),
    ("counts not cumulative",
     "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
     "h_sum 0\nh_count 1\n", 4, "cumulative"),
    ("_count differs from +Inf",
     "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 3\n", 5,
     "differs from the +Inf bucket"),
    ("no _sum",
     "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n", 3, "no _sum"),
    ("no _count",
     "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\n", 3, "no _count"),
    ("bad le", "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"big\"} 2\n", 3, "le 'big'"),
    ("le on _sum",
     "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum{le=\"1\"} 1\n", 4,
     "has an le label"),
]

# Option checks on the first GOOD page: (require, mins, positive, expected reason or None).
OPTIONS = [
    (["k_rx_total", "k_lat_seconds"], [("k_rx_total", 10)], ['k_rx_total{worker="0"}'], None),
    ([], [("k_lat_seconds_count", 4)], ["k_req_total"], None),
    (["k_missing"], [], [], "required family k_missing is missing"),
    (["k_empty"], [], [], "k_empty has no samples"),
    ([], [("k_rx_total", 11)], [], "expected at least 11"),
    ([], [('k_rx_total{worker="1"}', 1)], [], "expected at least 1"),
    ([], [], ['k_rx_total{worker="1"}'], "expected a positive value"),
    ([], [], ['k_rx_total{worker="7"}'], "no sample matches"),
]


def self_test():
    failures = 0
    for name, text in GOOD:
        e = check(text)
        if e is not None:
            print(f"FAIL good page {name!r} rejected: {e}")
            failures += 1
    for name, text, line, reason in BAD:
        e = check(text)
        if e is None:
            print(f"FAIL bad page {name!r} accepted")
            failures += 1
        elif reason not in e.msg or e.line != line:
            print(f"FAIL bad page {name!r}: got {e}, expected line {line}: ...{reason}...")
            failures += 1
    for require, mins, positive, reason in OPTIONS:
        e = check(GOOD[0][1], require, mins, positive)
        if reason is None and e is not None:
            print(f"FAIL options {require} {mins} {positive}: {e}")
            failures += 1
        elif reason is not None and (e is None or reason not in e.msg):
            print(f"FAIL options {require} {mins} {positive}: got {e}, expected {reason}")
            failures += 1
    total = len(GOOD) + len(BAD) + len(OPTIONS)
    print(f"self-test: {total - failures}/{total} cases passed")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", nargs="?", default="-", help="page to check (default: stdin)")
    ap.add_argument("--url", help="fetch the page with HTTP GET instead")
    ap.add_argument("--timeout", type=float, default=5.0, help="HTTP timeout, seconds")
    ap.add_argument("--require", action="append", default=[], metavar="NAME",
                    help="family that must be present with samples (repeatable)")
    ap.add_argument("--min", action="append", nargs=2, default=[], metavar=("SELECTOR", "VALUE"),
                    help="the (summed) value of SELECTOR must be at least VALUE (repeatable)")
    ap.add_argument("--expect-positive", action="append", default=[], metavar="SELECTOR",
                    help="the (summed) value of SELECTOR must be above 0 (repeatable)")
    ap.add_argument("--self-test", action="store_true", help="check the checker")
    args = ap.parse_args()

    if args.self_test:
        return self_test()
    try:
        mins = [(sel, float(v)) for sel, v in args.min]
        for sel in [s for s, _ in mins] + args.expect_positive:
            parse_selector(sel)
    except ValueError as e:
        ap.error(str(e))
    try:
        if args.url:
            text = fetch(args.url, args.timeout)
        elif args.file == "-":
            text = sys.stdin.buffer.read().decode("utf-8")
        else:
            with open(args.file, "rb") as f:
                text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError, urllib.error.URLError) as e:
        print(f"cannot read the page: {e}")
        return 1
    except Violation as e:
        print(e)
        return 1
    e = check(text, args.require, mins, args.expect_positive)
    if e is not None:
        print(e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
