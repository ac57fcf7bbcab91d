#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# The status page of the metrics endpoint (two workers, net_tap in a private network
# namespace, a keymap-cli load):
#   a. GET / is one HTML document that refers to nothing but its own server (no external
#      asset) and says it needs JavaScript; GET /status.json parses, has every worker and
#      every shard (the shards tile the hash space), non-zero rates under the load; the
#      history gets a point every 5 s; POST, PUT, DELETE and PATCH are answered 405, other
#      paths 404;
#   b. headless Chromium (Debian's chromium) runs the page's script against keymapd: the
#      DOM it leaves has a row per worker, an element per shard in the strip and the
#      charts; a screenshot is a PNG (in $tmp, removed with it).
# Exit 77 (shown as SKIP) without chromium, once the checks of a. passed.
# Removes the namespace, the processes and /var/run/dpdk/<prefix> even when it fails;
# every command is bounded by a timeout.
#
# usage: status_page.sh KEYMAPD KEYMAPCTL KEYMAP_CLI   (exit 77 = skipped: needs root, ip,
#        python3, chromium)
set -euo pipefail
shopt -s inherit_errexit

keymapd=$1
keymapctl=$2
cli=$3
here=$(cd "$(dirname "$0")" && pwd)
tag=kmstat
needs=python3
# shellcheck source=lib.sh
. "$here/lib.sh"
port=9481
url=http://127.0.0.1:$port
# Two workers; the control lcore shares the first CPU.
if [ "$(nproc)" -gt 1 ]; then lcores="0@0,1@0,2@1"; else lcores="0@0,1@0,2@0"; fi

# http METHOD PATH OUT: the request inside the namespace; prints "STATUS CONTENT-TYPE",
# the body goes to OUT.
http() {
	"${in_ns[@]}" python3 - "$1" "$url$2" "$3" <<'EOF'
import sys, urllib.error, urllib.request
method, url, out = sys.argv[1:4]
req = urllib.request.Request(url, method=method)
try:
    r = urllib.request.urlopen(req, timeout=10)
except urllib.error.HTTPError as e:
    r = e
open(out, "wb").write(r.read())
print(r.status, r.headers.get("Content-Type", ""))
EOF
}

section "a. the page and /status.json over HTTP"
start_keymapd "$lcores" -o metrics.port=$port -o workers.idle_sleep_us=100
grep -q "2 workers" "$log" || fail "keymapd did not start two workers"
# A load for the rates until the end: bench-lite's GETs and PUTs over 2000 keys, runs of
# 30 s at most, 2 minutes in all.
for _ in 1 2 3 4; do
	timeout -k 2 40 ip netns exec "$ns" "$cli" -h "$server" bench-lite -n 3000000 -k 2000 \
		>"$tmp/bench.out" 2>&1 || true
done &
cl_pid=$!

got=$(http GET / "$tmp/page.html")
[[ $got == "200 text/html"* ]] || fail "GET /: $got (want 200 text/html)"
python3 - "$tmp/page.html" "$port" <<'EOF' || fail "GET /: not a self-contained page"
import re, sys
page = open(sys.argv[1], encoding="utf-8").read()
bad = []
# Every absolute URL (none is needed) must be this server's.
for m in re.finditer(r"(?i)\bhttps?://([^/\s'\"<>)]+)", page):
    if m.group(1) != "127.0.0.1:" + sys.argv[2]:
        bad.append("URL " + m.group(0))
# Whatever the page loads or links is its own server's (a path) or inline (data:).
for m in re.finditer(r"(?i)\b(?:src|href|action)\s*=\s*['\"]?([^'\" >]*)", page):
    if not m.group(1).startswith(("/", "#", "data:")) or m.group(1).startswith("//"):
        bad.append(m.group(0))
for pat in (r"(?i)@import", r"(?i)url\(", r"(?i)<form", r"(?i)<iframe"):
    if re.search(pat, page):
        bad.append(pat)
if "needs JavaScript" not in re.sub(r"\s+", " ", "".join(re.findall(r"(?s)<noscript>(.*?)</noscript>", page))):
    bad.append("no <noscript> saying it needs JavaScript")
if "fetch('/status.json'" not in page:
    bad.append("no fetch('/status.json')")
for b in bad:
    print("page:", b)
sys.exit(1 if bad else 0)
EOF
ok "GET /: text/html, inline CSS and script, no external reference, <noscript>"
got=$(http HEAD / "$tmp/head.out")
if [[ $got != "200 text/html"* ]] || [ -s "$tmp/head.out" ]; then fail "HEAD /: $got"; fi
ok "HEAD /: 200, no body"
# Read-only: every other method refused, before any body is read. One interpreter for
# them all (each start is slow on a loaded 2-CPU machine).
"${in_ns[@]}" python3 - "$url" <<'EOF' || fail "methods other than GET and HEAD, other paths"
import sys, urllib.error, urllib.request
bad = 0
for method, path, want in [(m, p, 405) for m in ("POST", "PUT", "DELETE", "PATCH")
                           for p in ("/", "/status.json")] + [("GET", "/status", 404)]:
    req = urllib.request.Request(sys.argv[1] + path, method=method,
                                 data=b"x" if method in ("POST", "PUT", "PATCH") else None)
    try:
        got = urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as e:
        got = e.code
    if got != want:
        print(f"{method} {path}: {got} (want {want})")
        bad = 1
# A page of another site resolved to this address (DNS rebinding) names itself in Host:
# refused for the browser's paths, not for /metrics (a scraper may use any name).
for path, host, want in [("/", "evil.example", 403), ("/status.json", "evil.example:80", 403),
                         ("/status.json", "localhost:8080", 200), ("/metrics", "kv1.example", 200)]:
    req = urllib.request.Request(sys.argv[1] + path, headers={"Host": host})
    try:
        got = urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as e:
        got = e.code
    if got != want:
        print(f"GET {path} Host {host}: {got} (want {want})")
        bad = 1
sys.exit(bad)
EOF
ok "POST, PUT, DELETE, PATCH on / and /status.json: 405; GET /status: 404; a foreign Host: 403"

# js EXPR: EXPR over the last /status.json (d) holds; prints what it is otherwise.
js() {
	python3 - "$tmp/status.json" "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
r = eval("(" + sys.argv[2] + ")", {"d": d})
if r is not True:
    print("is", repr(r))
    sys.exit(1)
EOF
}
status() {
	local got
	got=$(http GET /status.json "$tmp/status.json")
	[[ $got == "200 application/json"* ]] || fail "GET /status.json: $got"
}
# The rates are those of the load samples: wait for them (and a point of the history).
for _ in $(seq 40); do
	status
	js "d['requests_per_s'] > 0 and len(d['history']) >= 1 and
		sum(s['rate'] for s in d['shards']) > 0" >/dev/null && break
	sleep 0.5
done
js "d['requests_per_s'] > 0" || fail "requests_per_s stays 0 under load"
js "len(d['history']) >= 1" || fail "no point in the history after 20 s"
ok "/status.json: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(
	"%.0f requests/s, %d shards, %d points" % (d["requests_per_s"], len(d["shards"]),
	len(d["history"])))' "$tmp/status.json")"
js "d['version'] != '' and d['uptime_s'] > 0 and d['store'] == 'mem' and d['cache'] is False" ||
	fail "/status.json: version, uptime, store"
js "[w['id'] for w in d['workers']] == [0, 1] and
	all(set(w) >= {'req_per_s', 'busy_pct', 'owned_shards', 'capacity'} for w in d['workers'])
	and sum(w['req_per_s'] for w in d['workers']) > 0" || fail "/status.json: workers"
js "d['shards_total'] == len(d['shards']) == 16 and d['shards_cut'] is False and
	sum(2.0 ** -s['depth'] for s in d['shards']) == 1.0 and
	all(s['id'] == (1 << s['depth']) | s['prefix'] and s['owner'] in (0, 1) and
		set(s) >= {'keys', 'rate'} for s in d['shards']) and
	sum(s['keys'] for s in d['shards']) > 0 and sum(s['rate'] for s in d['shards']) > 0" ||
	fail "/status.json: shards"
js "d['latency_p50_ns'] > 0 and d['latency_p99_ns'] >= d['latency_p50_ns']" ||
	fail "/status.json: latency quantiles"
# A point: time, requests/s, no hit ratio (the mem store has no cache), a busy share per
# worker.
js "all(set(p) == {'time', 'requests_per_s', 'hit_ratio', 'prefetch_accuracy', 'busy_pct'}
	and p['hit_ratio'] is None and len(p['busy_pct']) == 2 for p in d['history']) and
	d['history_period_s'] == 5 and d['history_points_max'] == 120 and
	d['history'][-1]['requests_per_s'] > 0" || fail "/status.json: history"
ok "/status.json: version, uptime, workers, shards tiling the hash space, latency, history"

section "b. the page in headless Chromium"
if ! command -v chromium >/dev/null; then
	echo "SKIP: needs chromium (Debian's package, tools/install-deps.sh) to run the page;"
	echo "      the HTTP checks passed ($checks checks)"
	exit 77
fi
# Root needs --no-sandbox; a profile of its own in $tmp.
chrome=(timeout -k 5 90 ip netns exec "$ns" chromium --headless=new --no-sandbox --disable-gpu
	--no-first-run --user-data-dir="$tmp/chromium" --virtual-time-budget=5000)
"${chrome[@]}" --dump-dom "$url/" >"$tmp/dom.html" 2>"$tmp/chromium.err" ||
	{ tail -20 "$tmp/chromium.err"; fail "chromium --dump-dom"; }
python3 - "$tmp/dom.html" <<'EOF' || fail "the rendered page"
import re, sys
# What the script made, without the script's own text.
dom = re.sub(r"(?s)<script>.*?</script>", "", open(sys.argv[1], encoding="utf-8").read())
bad = []
rows = re.findall(r"<tr class=\"worker\" id=\"worker-(\d+)\"", dom)
if rows != ["0", "1"]:
    bad.append("worker rows %s, want 0 and 1" % rows)
shards = len(re.findall(r"<div class=\"shard\"", dom))
if shards != 16:
    bad.append("%d shards in the strip, want 16" % shards)
if len(re.findall(r"<svg", dom)) != 4:
    bad.append("%d charts, want 4" % len(re.findall(r"<svg", dom)))
if "keymapd " not in dom or "requests/s" not in dom:
    bad.append("no title line")
if not re.search(r"<div id=\"err\"></div>", dom):
    bad.append("the script could not fetch /status.json")
for b in bad:
    print("dom:", b)
sys.exit(1 if bad else 0)
EOF
ok "the rendered DOM: a row per worker, 16 shards in the strip, 4 charts"
"${chrome[@]}" --screenshot="$tmp/status.png" --window-size=1280,900 "$url/" \
	>/dev/null 2>"$tmp/chromium.err" || { tail -20 "$tmp/chromium.err"; fail "chromium --screenshot"; }
[ "$(head -c 8 "$tmp/status.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
	fail "the screenshot is not a PNG"
ok "a screenshot: PNG, $(stat -c %s "$tmp/status.png") bytes"
kill -KILL "$cl_pid" 2>/dev/null || true
wait "$cl_pid" 2>/dev/null || true
cl_pid=
stop_server || fail "keymapd's exit status on SIGTERM: not 0"
echo "PASS: status-page ($checks checks)"
