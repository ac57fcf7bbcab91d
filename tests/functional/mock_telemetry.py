#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""
A stand-in for keymapd's control plane, for testing keymapctl without DPDK.

It serves DPDK telemetry v2 on an AF_UNIX SOCK_SEQPACKET socket: a hello on connect, then
one JSON reply {"/cmd": DATA} per "/cmd[,params]" message, with the /keymap/... commands
of docs/keymapctl.md answered from a small in-memory state (shard map, configuration,
counters that grow with time). Unknown commands get DATA null, refused ones
{"error": "..."}, as keymapd does. Optionally it serves a Prometheus page over HTTP.

With --store log it plays keymapd with the persistent log driver: shards are "hot" or
"cold" (tier, compact), /keymap/stats carries the "store" and "cache" sections. With the
default --store mem, tier and compact are refused as keymapd refuses them. prefetch is
queued (keymapd answers before the worker acts), a key "full..." finds no room.

Commands only the mock has, to reach keymapctl's error paths:
  /mock/garbage   reply with text that is not JSON
  /mock/close     close the connection without replying

usage: mock_telemetry.py [--workers N] [--shards N] [--page N] [--delay S]
                         [--hello-delay S] [--metrics-port P] [--http-status CODE]
                         [--store mem|log] SOCKET

The socket appears (by rename) only once it listens, so waiting for the path to exist is
enough. SIGTERM or SIGINT removes it and stops the mock.
"""

import argparse
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time

MAX_OUTPUT_LEN = 16384
REQ_MAX = 1023  # DPDK reads requests into 1024 bytes, NUL included
LOG_LEVELS = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
KEY_MAX = 250
# Per-worker counters (in "total" and each "wI"), then the control lcore's (total only).
COUNTERS = ["rx_packets", "tx_packets", "requests", "gets", "puts", "dels", "misses",
            "busy", "bad_requests", "denied", "busy_pending", "busy_backlog", "disk_reads",
            "read_coalesced", "read_restarts", "prefetch_issued", "prefetch_coalesced",
            "write_deferred", "write_failed", "disk_replies"]
CTL_COUNTERS = ["splits", "merges", "moves", "to_cold", "to_hot", "compactions",
                "tier_failures"]


class Mock:
    """The daemon's state, shared by the client threads under one lock."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.epoch = 1
        self.level = "info"
        self.log = args.store == "log"
        self.tier0 = "hot" if self.log else "mem"  # tier of a new shard
        self.ctl = dict.fromkeys(CTL_COUNTERS, 0)
        # Initial map: `shards` shards at the depth that holds them, round-robin owners.
        depth = max(0, (args.shards - 1).bit_length())
        self.shards = {}
        for i in range(1 << depth):
            sid = (1 << depth) | i
            keys = 1000 + 37 * i
            self.shards[sid] = {"owner": i % args.workers, "keys": keys,
                                "bytes": keys * 96, "rate": 500 + 25 * i,
                                "tier": self.tier0}
        self.config = {
            "net": {"port": 0, "ip": "198.51.100.2", "udp_port": 7070, "rss": 1},
            "workers": {"mode": "serve", "burst": 32, "idle_sleep_us": 50},
            "shards": {"count": 16, "split_rate": 50000, "merge_rate": 5000,
                       "hysteresis": 3, "sample_ms": 1000, "max_count": 4096},
            "store": {"driver": args.store, "value_max": 1024, "durability": "sync"},
            "security": {"allow": "0.0.0.0/0"},
            "metrics": {"ip": "127.0.0.1", "port": args.metrics_port},
            "log": {"level": "info"},
        }
        self.runtime = ["workers.burst", "workers.idle_sleep_us", "shards.split_rate",
                        "shards.merge_rate", "shards.hysteresis", "shards.sample_ms",
                        "shards.max_count", "security.allow", "log.level"]
        self.help = {
            "/": "Returns list of available commands, Takes no parameters",
            "/info": "Returns DPDK Telemetry information. Takes no parameters",
            "/help": "Returns help text for a command. Parameters: string command",
            "/keymap/status": "keymapd, its port and shard map in short",
            "/keymap/stats": "counters, total and per worker",
            "/keymap/shards": "a page of the shard map. Parameters: first index",
            "/keymap/config": "tunables, or one. Parameters: [section.key]",
            "/keymap/set": "change a tunable. Parameters: section.key=value",
            "/keymap/split": "split a shard. Parameters: id",
            "/keymap/merge": "merge a shard with its buddy. Parameters: id",
            "/keymap/move": "move a shard. Parameters: id,worker",
            "/keymap/tier": "move a shard to the cold tier or back. Parameters: id,hot|cold",
            "/keymap/compact": "rewrite a shard's log without dead records. Parameters: id",
            "/keymap/prefetch": "read a key into its worker's cache. Parameters: key",
            "/keymap/log_level": "show or set the log level. Parameters: [level]",
            "/keymap/cluster": "this node in its cluster (cluster 0: a single node)",
        }

    # Commands: (params or None) -> DATA; "error" replies are ordinary DATA.

    def status(self, _):
        w = self.args.workers
        metrics = "127.0.0.1:%d" % self.args.metrics_port if self.args.metrics_port else ""
        return {"version": "0.2.0", "pid": os.getpid(),
                "uptime_s": int(time.monotonic() - self.start), "main_lcore": 0,
                "worker_lcores": list(range(1, w + 1)), "workers": w, "mode": "serve",
                "port": {"id": 0, "name": "net_tap0", "mac": "02:70:63:61:70:00",
                         "ip": "198.51.100.2", "udp_base": 7070, "link_up": 1,
                         "speed_mbps": 10000, "rss": 1},
                "epoch": self.epoch, "shards": len(self.shards), "metrics": metrics}

    def stats(self, _):
        # Counters grow with time, so successive samples give non-zero rates.
        t = time.monotonic() - self.start
        out = {"workers": self.args.workers, "uptime_s": int(t),
               "requests_per_s": 123456.7, "cycles_per_req": 412,
               "latency_window_s": 10, "latency_p50_ns": 2100, "latency_p99_ns": 8400,
               "latency_p999_ns": 17500}
        total = dict.fromkeys(COUNTERS, 0)
        for w in range(self.args.workers):
            per = {}
            for i, name in enumerate(COUNTERS):
                per[name] = 1000000 * (w + 1) // (i + 1) + int(t * 10000 / (i + 1))
                total[name] += per[name]
            out["w%d" % w] = per
        total.update(self.ctl)
        out["total"] = total
        if self.log:
            cold = [s for s in self.shards.values() if s["tier"] == "cold"]
            out["store"] = {"durability": self.config["store"]["durability"],
                            "cold_shards": len(cold), "index_bytes": 1048576,
                            "file_bytes": 73400320, "dead_bytes": 5242880,
                            "replayed": 16592, "skipped_crc": 1, "torn_bytes": 37,
                            "disk_reads": 100000 + int(t * 1000), "disk_read_errors": 0,
                            "write_batches": 5000 + int(t * 100),
                            "fsyncs": 5000 + int(t * 100), "write_errors": 0,
                            "writes_lost": 0}
            # A 90.0% hit ratio at any time.
            out["cache"] = {"hits": 900000 + int(t * 9000) * 9,
                            "misses": 100000 + int(t * 9000),
                            "inserts": 100000, "evictions": 2000, "invalidations": 300,
                            "prefetched_used": 40, "prefetched_evicted_unused": 2,
                            "entries": 98000, "bytes": 60000000,
                            "capacity": 67108864 * self.args.workers}
        return out

    def shards_page(self, params):
        try:
            first = int(params) if params else 0
        except ValueError:
            return {"error": "bad first index '%s'" % params}
        ids = sorted(self.shards)
        if first > len(ids):
            return {"error": "first index %d beyond the %d shards" % (first, len(ids))}
        page = ids[first:first + self.args.page]
        s = self.shards
        return {"epoch": self.epoch, "nb_shards": len(ids), "first": first,
                "next": first + len(page), "id": page,
                "depth": [i.bit_length() - 1 for i in page],
                "owner": [s[i]["owner"] for i in page],
                "keys": [s[i]["keys"] for i in page],
                "bytes": [s[i]["bytes"] for i in page],
                "rate": [s[i]["rate"] for i in page],
                "tier": [s[i]["tier"] for i in page],
                "state": ["ok" for i in page]}

    def find(self, name):
        if "." in name:
            sec, key = name.split(".", 1)
            if key in self.config.get(sec, {}):
                return sec, key
        return None, None

    def config_get(self, params):
        if not params:
            out = {sec: dict(v) for sec, v in self.config.items()}
            out["runtime"] = self.runtime
            return out
        sec, key = self.find(params)
        if sec is None:
            return {"error": "unknown tunable %s" % params}
        return {"section": sec, "key": key, "value": self.config[sec][key],
                "runtime": int(params in self.runtime),
                "help": "help text of %s" % params}

    def set(self, params):
        if not params or "=" not in params:
            return {"error": "expected section.key=value"}
        name, value = params.split("=", 1)
        sec, key = self.find(name)
        if sec is None:
            return {"error": "unknown tunable %s" % name}
        if name not in self.runtime:
            return {"error": "%s cannot change while keymapd runs (restart needed)" % name}
        old = self.config[sec][key]
        if isinstance(old, int):
            if not value.isdigit():
                return {"error": "%s: '%s' is not a number" % (name, value)}
            new = int(value)
        else:
            new = value
        self.config[sec][key] = new
        if name == "log.level":
            self.level = value
        return {"section": sec, "key": key, "old": str(old), "value": str(new)}

    def shard_arg(self, text):
        try:
            sid = int(text)
        except (TypeError, ValueError):
            return None, {"error": "bad shard id '%s'" % text}
        if sid not in self.shards:
            return None, {"error": "no shard %d in the map" % sid}
        return sid, None

    def split(self, params):
        sid, err = self.shard_arg(params)
        if err:
            return err
        if sid.bit_length() - 1 >= 32:
            return {"error": "shard %d is at the depth limit" % sid}
        s = self.shards.pop(sid)
        a, b = 2 * sid, 2 * sid + 1
        owners = [s["owner"], s["owner"]]  # both copies are made on the owner
        half = s["keys"] // 2
        for cid, owner, keys in ((a, owners[0], s["keys"] - half), (b, owners[1], half)):
            self.shards[cid] = {"owner": owner, "keys": keys, "bytes": keys * 96,
                                "rate": s["rate"] // 2, "tier": s["tier"]}
        self.epoch += 1
        return {"state": "done", "epoch": self.epoch, "shard": sid, "owner": s["owner"],
                "children": [a, b], "owners": owners, "keys": s["keys"], "pause_us": 150,
                "copy_ms": 12, "writes_repeated": 3}

    def merge(self, params):
        sid, err = self.shard_arg(params)
        if err:
            return err
        if sid == 1:
            return {"error": "shard 1 is the whole key space: no buddy"}
        buddy = sid ^ 1
        if buddy not in self.shards:
            return {"error": "buddy %d of shard %d is not in the map (split)" % (buddy, sid)}
        a, b = self.shards.pop(sid), self.shards.pop(buddy)
        parent = sid >> 1
        keys = a["keys"] + b["keys"]
        owner = (a if sid < buddy else b)["owner"]  # the lower buddy's owner keeps it
        self.shards[parent] = {"owner": owner, "keys": keys, "bytes": keys * 96,
                               "rate": a["rate"] + b["rate"], "tier": self.tier0}
        self.epoch += 1
        return {"state": "done", "epoch": self.epoch, "shard": parent,
                "merged": [2 * parent, 2 * parent + 1], "owner": owner, "keys": keys,
                "pause_us": 80, "copy_ms": 9, "writes_repeated": 0}

    def move(self, params):
        parts = (params or "").split(",")
        if len(parts) != 2:
            return {"error": "expected id,worker"}
        sid, err = self.shard_arg(parts[0])
        if err:
            return err
        if not parts[1].isdigit() or int(parts[1]) >= self.args.workers:
            return {"error": "no worker %s (%d workers)" % (parts[1], self.args.workers)}
        to = int(parts[1])
        s = self.shards[sid]
        if s["owner"] == to:
            return {"error": "shard %d is already on worker %d" % (sid, to)}
        old, s["owner"] = s["owner"], to
        self.epoch += 1
        return {"epoch": self.epoch, "shard": sid, "from": old, "to": to,
                "keys": s["keys"], "pause_us": 200}

    # tier, compact, prefetch: keymapd's messages (app/keymapd/telemetry.c, control.c).

    def retier(self, sid, tier):
        """Rewrite shard sid into tier ("hot", "cold", or None: compact it)."""
        if not self.log:
            return {"error": "[store] driver %s keeps no files: no tiers, nothing to "
                             "compact" % self.args.store}
        if sid not in self.shards:
            return {"error": "no shard %d in map epoch %d" % (sid, self.epoch)}
        s = self.shards[sid]
        if tier is not None and s["tier"] == tier:
            return {"error": "shard %d is already %s" % (sid, tier)}
        if tier is None:
            self.ctl["compactions"] += 1
        else:
            s["tier"] = tier
            self.ctl["to_cold" if tier == "cold" else "to_hot"] += 1
        return {"shard": sid, "done": tier or "compacted", "keys": s["keys"],
                "pause_us": 900 if tier is None else 2300}

    def tier(self, params):
        sid, _, tier = (params or "").partition(",")
        if not sid.isdigit() or tier not in ("hot", "cold"):
            return {"error": "usage: /keymap/tier,SHARD_ID,hot|cold"}
        return self.retier(int(sid), tier)

    def compact(self, params):
        if not params or not params.isdigit():
            return {"error": "usage: /keymap/compact,SHARD_ID"}
        return self.retier(int(params), None)

    def prefetch(self, params):
        key = (params or "").encode()
        if not key:
            return self.prefetch_stats()
        if len(key) > KEY_MAX:
            return {"error": "usage: /keymap/prefetch[,KEY (1..250 bytes)]"}
        if key.startswith(b"full"):
            return {"error": "prefetch: no room now, try again"}
        return {"prefetch": "queued"}

    def prefetch_stats(self):
        """keymapd's /keymap/prefetch without a key (docs/keymapctl.md)."""
        log = self.args.store == "log"
        models = ["succ", "coacc", "entity", "stride", "template"]
        return {
            "active": 1 if log else 0, "models": ",".join(models), "sampling": 2,
            "threshold": "0.140", "budget": 23, "accuracy": "0.566", "coverage": "0.510",
            "busy_share": "0.170",
            "workers": {"issued": 89017, "used": 50263, "unused": 38497, "late": 3,
                        "refused": 0, "harm": 4199, "stream": 159, "stream_forwarded": 0,
                        "samples": 100000, "notes_dropped": 0, "disk_reads": 120000},
            "control": {"samples": 100000, "outcomes": 90000, "forwarded": 0,
                        "sent": 146018, "started": 88880, "nothing": 19714,
                        "absent": 37424, "refused": 0, "used": 50259, "unused": 38369,
                        "late": 0, "harm": 4199, "sampling_up": 1, "sampling_down": 0},
            "scheduler": {"pushed": 247377, "below_threshold": 3421, "filtered": 97938,
                          "queue_full": 0, "stale": 0, "dropped_watermark": 0,
                          "issued": 146018, "probes": 54, "increases": 704,
                          "decreases": 138, "harm": 4199},
            "predictor": {"observed": 100000, "predicted": 247377, "suppressed": 96213,
                          "untracked": 0, "key_replaced": 0, "tracked_max": 146800,
                          "mem_bytes": 33553088},
            "per_model": {m: {"issued": 10 * i, "used": 5 * i, "precision": "0.500",
                              "on": 1} for i, m in enumerate(models)},
            "top": {"1": {"model": "template", "from": "u#/profile", "to": "u#/cart",
                          "count": 12294, "share": "0.701"},
                    "2": {"model": "succ", "from": "u745/cart", "to": "u745%22/x",
                          "count": 11, "share": "1.000"}},
        }

    def log_level(self, params):
        if params:
            if params not in LOG_LEVELS:
                return {"error": "unknown log level '%s' (%s)" % (params,
                                                                 ", ".join(LOG_LEVELS))}
            self.level = params
            self.config["log"]["level"] = params
        return {"level": self.level}

    def answer(self, cmd, params):
        """DATA for one request, None for an unknown command."""
        table = {
            "/": lambda p: sorted(self.help),
            "/info": lambda p: {"version": "DPDK 22.11.11 (mock)", "pid": os.getpid(),
                                "max_output_len": MAX_OUTPUT_LEN},
            "/help": lambda p: {p: self.help[p]} if p in self.help else None,
            "/keymap/status": self.status,
            "/keymap/stats": self.stats,
            "/keymap/shards": self.shards_page,
            "/keymap/config": self.config_get,
            "/keymap/set": self.set,
            "/keymap/split": self.split,
            "/keymap/merge": self.merge,
            "/keymap/move": self.move,
            "/keymap/tier": self.tier,
            "/keymap/compact": self.compact,
            "/keymap/prefetch": self.prefetch,
            "/keymap/log_level": self.log_level,
            # A single node: keymapd without a [cluster] section.
            "/keymap/cluster": lambda p: {"cluster": 0},
        }
        fn = table.get(cmd)
        if fn is None:
            return None
        with self.lock:
            return fn(params)


def serve_client(mock, conn):
    args = mock.args
    try:
        if args.hello_delay:
            time.sleep(args.hello_delay)
        conn.send(json.dumps({"version": "DPDK 22.11.11 (mock)", "pid": os.getpid(),
                              "max_output_len": MAX_OUTPUT_LEN}).encode())
        while True:
            msg = conn.recv(REQ_MAX + 1)
            if not msg:
                return
            # Like DPDK: a longer request is cut; "/cmd,params" splits at the first comma.
            text = msg[:REQ_MAX].decode(errors="replace")
            cmd, _, params = text.partition(",")
            if args.delay:
                time.sleep(args.delay)
            if cmd == "/mock/garbage":
                conn.send(b"this is not JSON {")
                continue
            if cmd == "/mock/close":
                return
            data = mock.answer(cmd, params or None)
            reply = json.dumps({cmd: data}, separators=(",", ":")).encode()
            if len(reply) > MAX_OUTPUT_LEN:
                print("mock: reply to %s is %d bytes, more than %d" %
                      (cmd, len(reply), MAX_OUTPUT_LEN), file=sys.stderr)
                reply = json.dumps({cmd: None}).encode()
            conn.send(reply)
    except OSError:
        pass  # the client went away (e.g. after its timeout)
    finally:
        conn.close()


class MetricsHandler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (name set by http.server)
        if self.path != "/metrics":
            self.send_error(404)
            return
        if self.status != 200:
            self.send_error(self.status)
            return
        body = ("# HELP keymap_requests_total Requests served.\n"
                "# TYPE keymap_requests_total counter\n"
                "keymap_requests_total{worker=\"0\"} 1000000\n"
                "keymap_requests_total{worker=\"1\"} 2000000\n"
                "# HELP keymap_shards Shards in the map.\n"
                "# TYPE keymap_shards gauge\n"
                "keymap_shards 16\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("socket", help="path of the telemetry socket to create")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shards", type=int, default=16, help="initial shards (power of two)")
    ap.add_argument("--page", type=int, default=8, help="shards per /keymap/shards page")
    ap.add_argument("--delay", type=float, default=0, help="seconds before each reply")
    ap.add_argument("--hello-delay", type=float, default=0,
                    help="seconds before the hello")
    ap.add_argument("--metrics-port", type=int, default=0,
                    help="serve /metrics on 127.0.0.1:PORT (0: metrics disabled)")
    ap.add_argument("--http-status", type=int, default=200,
                    help="status of the /metrics replies")
    ap.add_argument("--store", choices=("mem", "log"), default="mem",
                    help="store driver played: log adds tiers, compaction, store and "
                         "cache statistics")
    args = ap.parse_args()
    if args.workers < 1 or args.page < 1 or args.shards < 1:
        ap.error("--workers, --shards and --page must be >= 1")

    mock = Mock(args)
    if args.metrics_port:
        MetricsHandler.status = args.http_status
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", args.metrics_port),
                                                MetricsHandler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()

    # Listen on a temporary name, then rename: a client never sees a socket that refuses.
    tmp = "%s.%d.tmp" % (args.socket, os.getpid())
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(tmp)
    srv.listen(16)
    os.rename(tmp, args.socket)

    def stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve_client, args=(mock, conn), daemon=True).start()
    finally:
        srv.close()
        try:
            os.unlink(args.socket)
        except OSError:
            pass


if __name__ == "__main__":
    main()
