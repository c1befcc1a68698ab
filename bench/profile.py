#!/usr/bin/env python3
"""Where real Spin 4.0.2 spends the time of one paid order.

    python3 bench/profile.py                  # 300 orders after 20 of warm-up
    python3 bench/profile.py --orders 100     # shorter

Runs `spin up` of spin.toml (the release components) on a fresh database and a
private Redis, with Spin's OpenTelemetry export pointed at a tiny OTLP/HTTP
receiver in this script, and sends `POST /api/v1/orders` (one line, a funded
user, an Idempotency-Key) one at a time. Each request carries a `traceparent`
of its own, so each trace is known to be one order's, and the client's wall
time is matched with it. Every trace is cut into parts:

- outside Spin's route span (client, loopback, HTTP parsing), Spin before the
  component (routing, the instance's factors prepared), the component
  *instantiation, until the guest's first host call* (Spin has no span of
  its own for instantiation);
- every host call the guest makes, by what it is: each Postgres statement
  named by the constant of the source that sends it (`order-flow::RESERVE`),
  each Redis command (Lua scripts named by their source constant, learned
  from one extra order watched with `MONITOR`), opens, variables;
- the guest's own time between host calls (JSON, JWT verification, the
  domain), labelled by the host call it ends at, and Spin's after the last.

By default the wasi:http calls are traced too (`wasmtime_wasi_http=trace`):
the guest's first one (reading the request's path) ends instantiation, and
the last ones show when the response went out. Then the same orders on a
Spin without tracing give the client's wall time untouched by it.

Writes bench/results/<date>-profile-paid-order.md and .json. Standard library
only (Spin exports OTLP as protobuf: `http/json` is refused by Spin 4.0.2, so
the few messages needed are decoded here). Needs the release components and
target/host-release/edge-host (for the migrations); it waits for them.
"""

import argparse
import datetime
import glob
import gzip
import hashlib
import http.server
import json
import os
import re
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench  # noqa: E402  (the suite's classes: App, SpinHost, Redis, seed_orders, token)

HOST = os.path.join(ROOT, "target/host-release/edge-host")
SPIN_DIR = os.path.join(ROOT, "target/spin")


def log(message):
    print(f"profile: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- OTLP protobuf
#
# opentelemetry/proto/collector/trace/v1 ExportTraceServiceRequest, the fields read:
#   ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
#   ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
#   ScopeSpans    { InstrumentationScope scope = 1; repeated Span spans = 2; }
#   Span { bytes trace_id = 1; bytes span_id = 2; bytes parent_span_id = 4; string name = 5;
#          fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
#          repeated KeyValue attributes = 9; Status status = 15; }
#   KeyValue { string key = 1; AnyValue value = 2; }
#   AnyValue { string string_value = 1; bool bool_value = 2; int64 int_value = 3;
#              double double_value = 4; bytes bytes_value = 7; (arrays, lists: kept raw) }

def pb_fields(data):
    """(field number, wire type, value) of a protobuf message: ints for
    varints and fixed, bytes for length-delimited."""
    i, n = 0, len(data)
    while i < n:
        key, i = pb_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = pb_varint(data, i)
        elif wire == 1:
            value, i = int.from_bytes(data[i:i + 8], "little"), i + 8
        elif wire == 2:
            length, i = pb_varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 5:
            value, i = int.from_bytes(data[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} not supported")
        yield number, wire, value


def pb_varint(data, i):
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def any_value(data):
    for number, wire, value in pb_fields(data):
        if number == 1:
            return value.decode("utf-8", "replace")
        if number == 2:
            return bool(value)
        if number == 3:
            return value - (1 << 64) if value >= 1 << 63 else value
        if number == 4:
            return struct.unpack("<d", value.to_bytes(8, "little"))[0]
        if number == 7:
            return value.hex()
        return repr(value)
    return None


def decode_span(data):
    span = {"attributes": {}, "parent": ""}
    for number, _, value in pb_fields(data):
        if number == 1:
            span["trace"] = value.hex()
        elif number == 2:
            span["id"] = value.hex()
        elif number == 4:
            span["parent"] = value.hex()
        elif number == 5:
            span["name"] = value.decode("utf-8", "replace")
        elif number == 7:
            span["start"] = value
        elif number == 8:
            span["end"] = value
        elif number == 9:
            key, val = None, None
            for n, _, v in pb_fields(value):
                if n == 1:
                    key = v.decode("utf-8", "replace")
                elif n == 2:
                    val = any_value(v)
            span["attributes"][key] = val
        elif number == 15:
            for n, _, v in pb_fields(value):
                if n == 2:
                    span["status_message"] = v.decode("utf-8", "replace")
                elif n == 3:
                    span["status_code"] = v
    return span


def decode_export(data):
    spans = []
    for number, _, resource_spans in pb_fields(data):
        if number != 1:
            continue
        for n, _, scope_spans in pb_fields(resource_spans):
            if n != 2:
                continue
            for m, _, span in pb_fields(scope_spans):
                if m == 2:
                    spans.append(decode_span(span))
    return spans


class Collector:
    """An OTLP/HTTP receiver on loopback: keeps every span by trace id."""

    def __init__(self):
        self.lock = threading.Lock()
        self.traces = {}
        self.spans = 0
        self.posts = 0
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding", "") == "gzip":
                    body = gzip.decompress(body)
                if self.path.endswith("/v1/traces"):
                    collector.add(decode_export(body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, spans):
        with self.lock:
            self.posts += 1
            self.spans += len(spans)
            for span in spans:
                self.traces.setdefault(span["trace"], []).append(span)

    def trace(self, trace_id):
        with self.lock:
            return list(self.traces.get(trace_id, []))

    def endpoint(self):
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def otel_env(collector, level):
    """What makes Spin 4.0.2 export its traces (only traces) to `collector`
    soon and without dropping any: the batch processor's defaults (5 s, a
    queue of 2,048 spans) would drop spans of a few hundred orders."""
    return {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint(),
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BSP_MAX_QUEUE_SIZE": "200000",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2048",
        "OTEL_SERVICE_NAME": "profile",
        "SPIN_OTEL_TRACING_LEVEL": level,
        # The guests' log lines would become span events: work Spin does not
        # do when no one exports traces.
        "SPIN_DISABLE_LOG_TO_TRACING": "1",
    }


# ----------------------------------------------------------------- naming host calls

def squash(text):
    """Text without whitespace (and a Rust string's line continuations), for
    comparing what a span carries with what the source writes."""
    return re.sub(r"\s+", "", text.replace("\\\n", "").replace('\\"', '"'))


def source_names():
    """What the sources send, by name: squashed SQL -> `crate::CONST` (each
    `Query` in the always-a-row shape `edge::pg::Query::sql` sends, via
    bench.source_constant) and the SHA-1 of each Lua script -> its name."""
    sql, lua = {}, {}
    for path in sorted(glob.glob(os.path.join(ROOT, "crates/*/src/**/*.rs"), recursive=True)
                       + glob.glob(os.path.join(ROOT, "components/*/src/**/*.rs"), recursive=True)):
        rel = os.path.relpath(path, ROOT)
        parts = rel.split(os.sep)
        stem = os.path.splitext(parts[-1])[0]
        owner = parts[1] if stem in ("lib", "main") else f"{parts[1]}::{stem}"
        text = open(path).read()
        for name in re.findall(r"const (\w+): Query\b", text):
            try:
                sql.setdefault(squash(bench.source_constant(rel, name)), f"{owner}::{name}")
            except (AttributeError, TypeError):
                pass  # not in a shape source_constant reads
        for name, hashes, body in re.findall(r'const (\w+): &str = r(#*)"(.*?)"\2;', text, re.S):
            if "redis.call" in body:
                lua[hashlib.sha1(body.encode()).hexdigest()] = f"{owner}::{name}"
            elif re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", body, re.I):
                sql.setdefault(squash(body), f"{owner}::{name}")
        for name, body in re.findall(r'const (\w+): &str =\s*"((?:[^"\\]|\\.)*)";', text, re.S):
            if re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", body, re.I):
                sql.setdefault(squash(body), f"{owner}::{name}")
    return sql, lua


class Namer:
    """A label for each host call span of a trace."""

    def __init__(self):
        self.sql, self.lua = source_names()
        self.redis_sequence = []   # [(command, label)] of one watched order, in order
        self.inside_scripts = {}   # label -> the commands the script ran
        self.unnamed_sql = {}

    def sql_label(self, statement):
        name = self.sql.get(squash(statement))
        if name:
            return name
        short = " ".join(statement.split())[:60]
        self.unnamed_sql.setdefault(short, statement)
        return f"SQL `{short}…`"

    def label(self, span, redis_index):
        """(category, label) of a span the guest's host call made."""
        name, attributes = span["name"], span["attributes"]
        system = attributes.get("db.system")
        if name == "spin_outbound_pg.open":
            return "postgres", "Postgres open (pool checkout + recycle)"
        if name == "spin_outbound_redis.open_connection":
            return "redis", "Redis open (a new connection)"
        if system == "postgresql":
            return "postgres", self.sql_label(attributes.get("statement") or name)
        if system == "redis":
            command = attributes.get("command") or name
            if redis_index < len(self.redis_sequence) and self.redis_sequence[redis_index][0] == command.upper():
                return "redis", self.redis_sequence[redis_index][1]
            return "redis", f"{command} #{redis_index + 1}"
        if name == "spin_variables.get":
            return "variables", f"variable {attributes.get('key')}"
        if name == "wit-bindgen import":
            return "wasi", f"wasi {attributes.get('module')}.{attributes.get('function')}"
        return "other", name

    def learn_redis(self, monitor_lines):
        """The commands one order sent, from `MONITOR` lines, each named
        (Lua scripts by their source constant)."""
        sequence, on_connect, inside = [], [], {}
        for line in monitor_lines:
            match = re.match(r"^[\d.]+ \[\d+ ([^\]]+)\] (.*)$", line)
            if not match:
                continue
            args = [a.encode().decode("unicode_escape") for a in re.findall(r'"((?:[^"\\]|\\.)*)"', match.group(2))]
            command = args[0].upper()
            if match.group(1) == "lua":  # run by the script before it
                if sequence:
                    inside.setdefault(sequence[-1][1], []).append(command)
                continue
            if command in ("CLIENT", "HELLO", "SELECT", "AUTH", "PING", "MONITOR"):
                on_connect.append(" ".join(args[:3]))
                continue
            if command == "EVALSHA":
                label = f"EVALSHA {self.lua.get(args[1], args[1][:12])}"
            elif command == "EVAL":
                label = f"EVAL {self.lua.get(hashlib.sha1(args[1].encode()).hexdigest(), '(a script)')}"
            else:
                label = command + (f" ({len(args) - 1} keys)" if command == "MGET" else "")
            sequence.append((command, label))
        return sequence, on_connect, inside


# ----------------------------------------------------------------- the run

def wait_for_build(manifest, host):
    """The release components spin.toml names and the host binary (the
    migrations) are built by someone else: wait for them (60 s polls, 40 min)."""
    sources = [os.path.join(ROOT, s) for s in re.findall(r'^source = "(target/[^"]+\.wasm)"', open(manifest).read(), re.M)]
    deadline = time.time() + 40 * 60
    while True:
        missing = [p for p in sources + [host] if not os.path.exists(p)]
        if not missing:
            return
        if time.time() > deadline:
            raise SystemExit(f"profile: still missing after 40 minutes: {missing}")
        log(f"waiting for {', '.join(os.path.relpath(p, ROOT) for p in missing)} (someone else builds them)")
        time.sleep(60)


def spin_env(app, redis, extra):
    """The environment bench.App gives its Spin instances, with `extra`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    database_id = app.sql("SELECT database_id FROM app_identity")
    return dict(base, SPIN_VARIABLE_PG_URL=app.url, SPIN_VARIABLE_PG_HOST=app.url.split("@")[1].split("/")[0],
                SPIN_VARIABLE_REDIS_URL=redis.url(), SPIN_VARIABLE_REDIS_HOST=f"127.0.0.1:{redis.port}",
                SPIN_VARIABLE_JWT_SECRET=bench.SECRET, SPIN_VARIABLE_DATABASE_ID=database_id, **extra)


def start_spin(spin, env):
    for attempt in range(3):
        try:
            return bench.SpinHost(spin, os.path.join(ROOT, "spin.toml"), env)
        except RuntimeError as error:
            log(f"spin up failed to start ({error}), attempt {attempt + 1}/3")
            time.sleep(2)
    raise SystemExit("profile: spin up did not start")


class Client:
    """One keep-alive HTTP/1.1 connection to Spin (TCP_NODELAY, as HTTP
    clients set it); orders one at a time, each request in one write (as wrk
    sends them), the answer read as it is framed."""

    def __init__(self, url, users, products):
        self.host, port = url.split("//")[1].split(":")
        self.sock = socket.create_connection((self.host, int(port)), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.users, self.products = users, products
        self.sent = 0
        self.keys = f"profile-{secrets.token_hex(6)}"
        self.last_headers = {}

    def order(self, trace_id=None):
        """Place one paid order; (status, wall µs, client span id, body)."""
        i = self.sent
        self.sent += 1
        user = 1 + i % self.users
        body = json.dumps({"items": [{"productId": 1 + i % self.products, "quantity": 1}]}).encode()
        headers = {"host": self.host, "authorization": f"Bearer {bench.token(user)}",
                   "content-type": "application/json", "idempotency-key": f"{self.keys}-{i}",
                   "content-length": str(len(body))}
        parent = secrets.token_hex(8)
        if trace_id:
            headers["traceparent"] = f"00-{trace_id}-{parent}-01"
        head = ("POST /api/v1/orders HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                + "\r\n").encode()
        start = time.perf_counter_ns()
        self.sock.sendall(head + body)
        status, self.last_headers, data = self.response()
        wall = (time.perf_counter_ns() - start) / 1000
        return status, wall, parent, data

    def response(self):
        lines = self.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            return status, headers, self.exactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() != "chunked":
            raise RuntimeError(f"unframed response: {headers}")
        data = b""
        while True:
            size = int(self.until(b"\r\n").split(b";")[0], 16)
            data += self.exactly(size + 2)[:size]  # no trailers here
            if size == 0:
                return status, headers, data

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Spin closed the connection")
        self.buffer += chunk

    def until(self, marker):
        while marker not in self.buffer:
            self.fill()
        end = self.buffer.index(marker) + len(marker)
        out, self.buffer = self.buffer[:end], self.buffer[end:]
        return out

    def exactly(self, n):
        while len(self.buffer) < n:
            self.fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def close(self):
        self.sock.close()


def send_orders(client, count, traced, what):
    """`count` orders; [(trace id or None, client span id, wall µs)]. Any
    answer but 201 stops the run: the profile is of paid orders."""
    sent = []
    for n in range(count):
        trace_id = secrets.token_hex(16) if traced else None
        status, wall, parent, data = client.order(trace_id)
        if status != 201:
            raise SystemExit(f"profile: {what} order {n + 1} answered {status}: {data[:300]!r}")
        sent.append((trace_id, parent, wall))
    return sent


def wait_for_traces(collector, sent, seconds=30):
    """Until every order's trace has its route span and no span has come in
    for a second (Spin exports in batches)."""
    deadline = time.time() + seconds
    last, quiet_since = -1, time.time()
    while time.time() < deadline:
        with collector.lock:
            spans = collector.spans
            complete = all(any(s["parent"] == parent for s in collector.traces.get(trace_id, []))
                           for trace_id, parent, _ in sent)
        if spans != last:
            last, quiet_since = spans, time.time()
        elif complete and time.time() - quiet_since > 1.0:
            return True
        time.sleep(0.2)
    return False


def watch_one_order(client, redis, collector, namer):
    """One more order with Redis' MONITOR on, to learn which command (which
    Lua script) each Redis span of an order is. Retried if a cron component's
    commands got in the way (the sequence must match the order's spans)."""
    for _ in range(3):
        monitor = subprocess.Popen(["redis-cli", "-p", str(redis.port), "MONITOR"], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        assert monitor.stdout.readline().strip() == "OK"
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(monitor.stdout), daemon=True)
        reader.start()
        trace_id = secrets.token_hex(16)
        status, _, parent, _ = client.order(trace_id)
        time.sleep(0.3)
        monitor.terminate()
        monitor.wait()
        reader.join(2)
        sequence, on_connect, inside = namer.learn_redis(lines)
        wait_for_traces(collector, [(trace_id, parent, 0)], seconds=10)
        commands = [(s["attributes"].get("command") or s["name"]).upper()
                    for s in sorted(collector.trace(trace_id), key=lambda s: s["start"])
                    if s["attributes"].get("db.system") == "redis" and "open_connection" not in s["name"]]
        if status == 201 and commands == [c for c, _ in sequence]:
            namer.redis_sequence = sequence
            return {"commands": [label for _, label in sequence], "on_connect": on_connect,
                    "inside_scripts": inside, "monitor_lines": len(lines)}
        log(f"MONITOR saw {[c for c, _ in sequence]}, the trace {commands}: again")
    return {"commands": [], "on_connect": [], "inside_scripts": {}, "unmatched": True}


def redis_counters(redis):
    """Redis' own counters: connections accepted, commands run (scripts' own
    commands included), and errors by kind (a client library's handshake
    commands an older Redis refuses show up there, not in MONITOR)."""
    counters = {}
    for section in ("stats", "errorstats"):
        for line in redis.cli("INFO", section).splitlines():
            key, _, value = line.partition(":")
            if key in ("total_connections_received", "total_commands_processed"):
                counters[key] = int(value)
            elif key.startswith("errorstat_"):
                counters[key] = int(value.split("=")[1])
    return counters


# ----------------------------------------------------------------- one trace into parts

OUTSIDE = "outside Spin's route span (client, loopback, HTTP parsing)"
BEFORE = "Spin before the component (routing, instance prepared)"
INSTANTIATE = "component instantiation (to the guest's first host call)"
AFTER = "Spin after the guest's last host call, until the route span ends"


def analyse(spans, parent, wall, namer):
    """One order's parts: [(category, label, start µs from the route span's
    start, µs)], covering the route span exactly, plus the client's outside."""
    root = next((s for s in spans if s["parent"] == parent), None)
    if root is None:
        return None
    run = next((s for s in spans if s["parent"] == root["id"] and s["name"].startswith("execute_wasm")), None)
    if run is None:
        return None
    calls = sorted((s for s in spans if s["parent"] == run["id"]), key=lambda s: s["start"])
    us = lambda ns: ns / 1000
    t0 = root["start"]
    parts = [("outside", OUTSIDE, -1.0, wall - us(root["end"] - root["start"])),
             ("spin", BEFORE, 0.0, us(run["start"] - t0))]
    seen, redis_index = {}, 0
    cursor = run["start"]
    after_response = []
    for i, call in enumerate(calls):
        category, label = namer.label(call, redis_index)
        if call["attributes"].get("db.system") == "redis" and call["name"] != "spin_outbound_redis.open_connection":
            redis_index += 1
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} ({seen[label]})"
        if call["start"] >= root["end"]:
            after_response.append((category, f"after the response: {label}", us(call["start"] - t0),
                                   us(call["end"] - call["start"])))
            continue
        gap = us(max(0, call["start"] - cursor))
        if i == 0:
            parts.append(("instantiate", INSTANTIATE, us(run["start"] - t0), gap))
        else:
            parts.append(("guest", f"guest, then {label}", us(cursor - t0), gap))
        start = max(call["start"], cursor)
        end = min(max(call["end"], start), root["end"])
        parts.append((category, label, us(start - t0), us(end - start)))
        cursor = end
    parts.append(("spin", AFTER, us(cursor - t0), us(root["end"] - cursor)))
    return {"wall": wall, "route": us(root["end"] - t0), "parts": parts + after_response,
            "status": root["attributes"].get("http.response.status_code"), "spans": len(spans)}


# ----------------------------------------------------------------- statistics and report

def percentile(values, q):
    ordered = sorted(values)
    return ordered[max(0, -(-int(q * 100) * len(ordered) // 100) - 1)] if ordered else 0.0


def stats(values, orders):
    """Median and p90 over the orders that had the part, and the mean over
    all orders (a part an order lacked counts 0 there), so means add up."""
    return {"median": statistics.median(values) if values else 0.0, "p90": percentile(values, 0.9),
            "mean": sum(values) / orders if orders else 0.0, "orders": len(values)}


CATEGORIES = [
    ("outside", "outside Spin (client, loopback, HTTP parsing)"),
    ("spin", "Spin itself (routing, instance prepared, response out)"),
    ("instantiate", "component instantiation"),
    ("postgres", "Postgres (every host call)"),
    ("redis", "Redis (every host call)"),
    ("variables", "Spin variables (every get)"),
    ("wasi", "wasi:http calls (request head/body, response)"),
    ("other", "other host calls"),
    ("guest", "guest between host calls (JSON, JWT, domain)"),
]


def summarise(orders):
    """Per part and per category, over the analysed orders."""
    n = len(orders)
    by_label, starts, positions, category_of = {}, {}, {}, {}
    by_category = {c: [] for c, _ in CATEGORIES}
    calls_per_order = {c: [] for c, _ in CATEGORIES}
    for order in orders:
        totals, ncalls = {c: 0.0 for c, _ in CATEGORIES}, {c: 0 for c, _ in CATEGORIES}
        for position, (category, label, start, us) in enumerate(order["parts"]):
            by_label.setdefault(label, []).append(us)
            starts.setdefault(label, []).append(start)
            positions.setdefault(label, []).append(position)
            category_of[label] = category
            if label.startswith("after the response"):
                continue
            totals[category] = totals.get(category, 0.0) + us
            if category not in ("guest", "outside", "spin", "instantiate"):
                ncalls[category] += 1
        for c in totals:
            by_category[c].append(totals[c])
            calls_per_order[c].append(ncalls[c])
    # A base label (without its occurrence number) groups repeated calls.
    base = lambda label: re.sub(r" \(\d+\)$", "", label)
    grouped = {}
    for order in orders:
        sums = {}
        for category, label, _, us in order["parts"]:
            if category in ("postgres", "redis", "variables", "wasi", "other", "guest"):
                sums.setdefault((category, base(label)), []).append(us)
        for key, values in sums.items():
            grouped.setdefault(key, {"per_order": [], "calls": []})
            grouped[key]["per_order"].append(sum(values))
            grouped[key]["calls"].append(len(values))
    return {
        "orders": n,
        "wall": stats([o["wall"] for o in orders], n),
        "route": stats([o["route"] for o in orders], n),
        "categories": {c: dict(stats(by_category[c], n), calls_per_order=statistics.median(calls_per_order[c]) if n else 0)
                       for c, _ in CATEGORIES},
        "grouped": {f"{c} | {label}": dict(stats(v["per_order"], n), calls_per_order=statistics.median(v["calls"]),
                                            category=c, label=label)
                    for (c, label), v in grouped.items()},
        "timeline": sorted(({"label": label, "category": category_of[label],
                             "start_median": statistics.median(starts[label]), **stats(values, n)}
                            for label, values in by_label.items()),
                           key=lambda row: (row["label"].startswith("after the response"),
                                            statistics.median(positions[row["label"]]), row["start_median"])),
    }


def fmt(value):
    return f"{value:,.0f}"


def report(results):
    s = results["summary"]
    route_mean = s["route"]["mean"] or 1
    share = lambda mean: f"{100 * mean / route_mean:.1f} %"
    f = results["facts"]
    lines = [
        f"# Where Spin spends one paid order ({f['date']})",
        "",
        f"- `{results['command']}`",
        f"- {f['spin']}; machine: {f['cpu']}, {f['cores']} cores, load average {f['load_before']} before the run "
        f"(other work shares the cores); {f['postgres']}; {f['redis']}",
        f"- {s['orders']} orders analysed ({results['settings']['orders']} sent one at a time after "
        f"{results['settings']['warmup']} of warm-up, {results['incomplete']} traces incomplete), each `POST /api/v1/orders` "
        f"of one line (1 unit of one of {results['settings']['products']} products) by one of "
        f"{results['settings']['users']} funded users with its own Idempotency-Key, all answered `201`; "
        f"{results['rate']:.0f} orders/s sequentially",
        f"- Spin's OpenTelemetry traces (`SPIN_OTEL_TRACING_LEVEL={results['settings']['trace_level']}`), "
        f"{results['spans_per_order']:.0f} spans per order, received by an OTLP/HTTP receiver in the script; "
        "µs; median and p90 over the orders; mean's share of Spin's route span (means add up, medians do not)",
        "",
        "## Summary",
        "",
        "| part | calls per order | median µs | p90 µs | mean µs | share of route span |",
        "|---|---|---|---|---|---|",
        f"| **client wall time** (request sent → body read) | | **{fmt(s['wall']['median'])}** | {fmt(s['wall']['p90'])} "
        f"| {fmt(s['wall']['mean'])} | |",
        f"| **Spin's route span** (`POST /api/v1/orders/...`) | | **{fmt(s['route']['median'])}** | {fmt(s['route']['p90'])} "
        f"| {fmt(s['route']['mean'])} | 100 % |",
    ]
    for category, title in CATEGORIES:
        c = s["categories"][category]
        if not c["orders"] or (category == "other" and not c["mean"]):
            continue
        calls = f"{c['calls_per_order']:g}" if category not in ("outside", "spin", "instantiate", "guest") else ""
        outside = category == "outside"
        lines.append(f"| **{title}** | {calls} | {fmt(c['median'])} | {fmt(c['p90'])} | {fmt(c['mean'])} | "
                     f"{'(not in it)' if outside else share(c['mean'])} |")
        if category in ("spin", "instantiate", "outside"):
            for row in s["timeline"]:
                if row["category"] == category and not row["label"].startswith("after the response"):
                    if category != "spin":
                        continue
                    lines.append(f"| &nbsp;&nbsp;{row['label']} | | {fmt(row['median'])} | {fmt(row['p90'])} | "
                                 f"{fmt(row['mean'])} | {share(row['mean'])} |")
            continue
        rows = sorted((g for g in s["grouped"].values() if g["category"] == category), key=lambda g: -g["mean"])
        if category == "guest":
            rows = rows[:8]
        if category == "wasi":
            rows = []
        for g in rows:
            calls = f"{g['calls_per_order']:g}" if category != "guest" else ""
            label = g["label"].replace("guest, then ", "before ") if category == "guest" else g["label"]
            lines.append(f"| &nbsp;&nbsp;{label} | {calls} | {fmt(g['median'])} | {fmt(g['p90'])} | "
                         f"{fmt(g['mean'])} | {share(g['mean'])} |")
    lines += ["", "Rows under a category: each Postgres statement named by the source constant that sends it, each "
              "Redis command (Lua scripts by name, learned from one order watched with `MONITOR`); guest rows are the "
              "guest's time before the named host call (the biggest eight; all of them in the timeline below).", ""]
    u = results.get("untraced")
    if u:
        lines += ["## Without tracing", "",
                  f"The same orders on a second `spin up` with no OpenTelemetry ({u['orders']} after "
                  f"{u['warmup']} of warm-up): client wall time median {fmt(u['wall']['median'])} µs, p90 "
                  f"{fmt(u['wall']['p90'])} µs (traced: {fmt(s['wall']['median'])} / {fmt(s['wall']['p90'])}). "
                  "The difference is what tracing costs (spans built on every host call, exported by a batch "
                  f"exporter on the same two cores), spread over the parts above. Untraced too, {u['stalled']} of "
                  f"{u['orders']} orders took over 30 ms more than the median: the stall of \"Bodies finished after "
                  "Spin's route span\".", ""]
    w = results["watched"]
    lines += ["## Per order, on Spin", "",
              f"- Postgres: {s['categories']['postgres']['calls_per_order']:g} host calls "
              f"({results['counts']['pg_open']:g} open, {results['counts']['pg_statements']:g} statements); "
              "each statement is sent as text (`query_raw` of a string in tokio-postgres: an unnamed statement "
              "prepared, then bound and run, two round trips, planned every time) and every open checks a "
              "pooled connection out with deadpool's `RecyclingMethod::Clean` (one more round trip of "
              "`CLOSE ALL; … DISCARD …` before the first statement)",
              f"- Redis: {results['counts']['redis_open']:g} connection(s) opened (Spin opens a new TCP connection on "
              f"every `open`), {results['counts']['redis_commands']:g} commands: "
              + (", ".join(f"{c}" + (f" (runs {' '.join(w['inside_scripts'][c])})" if w["inside_scripts"].get(c) else "")
                           for c in w["commands"]) or "unknown")
              + (f"; on connecting, the client also sent {', '.join(sorted(set(w['on_connect'])))}" if w["on_connect"] else ""),
              "- Redis as the server counted it, per order over the profiled run (the cron components' few "
              "commands included): " + ", ".join(f"{k.replace('errorstat_', 'errors ')} {v:.2f}"
                                               for k, v in results["redis_server_per_order"].items())
              + ("; the errors are redis-rs's `CLIENT SETINFO LIB-NAME` and `LIB-VER`, pipelined on every new "
                 "connection (Redis before 7.2 refuses both; MONITOR shows no refused command)"
                 if results["redis_server_per_order"].get("errorstat_ERR", 0) >= 1.5 else ""),
              f"- Spin variables: {results['counts']['variables']:g} gets ({', '.join(results['counts']['variable_keys'])})",
              ""]
    late = results.get("late_body")
    if late:
        h = late["response_headers"]
        framing = (f"`transfer-encoding: {h['transfer-encoding']}`" if "transfer-encoding" in h
                   else f"`content-length: {h['content-length']}`" if "content-length" in h else "no framing header")
        lines += ["## Bodies finished after Spin's route span", "",
                  f"In {late['orders']} of {late['of']} orders the guest's `outgoing-body.finish` came after Spin had "
                  f"already handed the response head to hyper (the route span had ended). Outside Spin those "
                  f"orders took median {fmt(late['outside_late']['median'])} µs (p90 "
                  f"{fmt(late['outside_late']['p90'])}), the others {fmt(late['outside_on_time']['median'])} µs "
                  f"(p90 {fmt(late['outside_on_time']['p90'])}); client wall time median "
                  f"{fmt(late['wall_late']['median'])} vs {fmt(late['wall_on_time']['median'])} µs. "
                  f"The answer is framed with {framing}.", "",
                  "Spin 4.0.2 sets no `TCP_NODELAY` on the connections it accepts (trigger-http has no "
                  "`set_nodelay`): when hyper has written the head (or the head and the data) before the guest "
                  "finished its body, the rest (the data, or chunked encoding's last chunk: the guest sends no "
                  "`content-length`) waits under Nagle's algorithm for the client's ACK, which a client delaying "
                  "ACKs sends only after 40 ms (Linux's least delayed-ACK time); the stalls' size fits that. A body "
                  "written and finished before the response is set would likely leave nothing to wait for (hyper "
                  "would write it with the head); a `content-length` alone would spare the last chunk, not a body "
                  "written after the head went out.", ""]
    lines += ["## Timeline of one order", "",
              "Every part in the order it happens (start: median µs after the route span began).", "",
              "| start µs | part | median µs | p90 µs | mean µs | orders with it |", "|---|---|---|---|---|---|"]
    for row in s["timeline"]:
        start = "" if row["label"] == OUTSIDE else fmt(row["start_median"])
        lines.append(f"| {start} | {row['label']} | {fmt(row['median'])} | {fmt(row['p90'])} | {fmt(row['mean'])} | "
                     f"{row['orders']} |")
    lines += ["", "## Span names Spin 4.0.2 exports", ""]
    lines += [f"- `{name}` {note}" for name, note in results["span_names"]]
    lines += ["", "## Limits", ""] + [f"- {x}" for x in results["limits"]]
    return "\n".join(lines) + "\n"


LIMITS = [
    "Spin has no span for instantiation: it is the time from `execute_wasm_component` starting to the guest's "
    "first host call, so it also holds the guest's own start (the `wasi:http` export's entry, spin-sdk's executor) "
    "up to that call; with the default trace level that first call is `incoming-request.path-with-query`, "
    "the first thing the guest asks.",
    "Host call spans are measured inside Spin (the tracing layer's own work is in them); the time between them "
    "is the guest's, plus the wasm↔host transitions and Spin's span bookkeeping. Exporting spans costs CPU on "
    "the same two cores (see \"Without tracing\").",
    "Each order's spans are one trace (its own `traceparent`); orders are sequential, so no two overlap. The "
    "cron components (recovery every minute, webhooks every 5 s) keep running in the same Spin and may "
    "share the cores with an order now and then (their traces are not counted).",
    "Numbers are this machine's, with whatever else runs on it (the load average is in the header).",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--untraced", type=int, default=100,
                        help="orders on a Spin without tracing, for its overhead (0: skip)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--products", type=int, default=100)
    parser.add_argument("--host", default=HOST, help="the edge-host binary that applies the migrations")
    parser.add_argument("--trace-level", default="info,wasmtime_wasi_http=trace",
                        help="SPIN_OTEL_TRACING_LEVEL: `info` is Spin's default spans; the wasi:http calls "
                             "(trace) mark where instantiation ends and the response starts")
    args = parser.parse_args()
    manifest = os.path.join(ROOT, "spin.toml")
    wait_for_build(manifest, args.host)
    spin = bench.spin_install()
    if not spin:
        spin = {"bin": os.path.join(SPIN_DIR, "bin/spin"), "data": os.path.join(SPIN_DIR, "data")}
        if not os.path.exists(spin["bin"]):
            raise SystemExit("profile: no Spin: run ../shared/spin/install target/spin")
    facts = bench.facts(args.host)
    facts["spin"] = bench.run([spin["bin"], "--version"]).strip()
    facts["load_before"] = " ".join(open("/proc/loadavg").read().split()[:3])
    namer = Namer()
    collector = Collector()
    redis = bench.Redis()
    app, spins, clients = None, [], []
    try:
        app = bench.App(args.host, redis, 0, "profile", pool=64)
        bench.seed_orders(app, products=args.products, users=args.users, coupons=0, stock=1_000_000)
        log(f"spin up with traces to {collector.endpoint()} ({args.trace_level})")
        spins.append(start_spin(spin, spin_env(app, redis, otel_env(collector, args.trace_level))))
        client = Client(spins[-1].url, args.users, args.products)
        clients.append(client)
        send_orders(client, args.warmup, True, "warm-up")
        log(f"{args.orders} orders, one at a time")
        counters_before = redis_counters(redis)
        started = time.time()
        sent = send_orders(client, args.orders, True, "profiled")
        rate = args.orders / (time.time() - started)
        counters_after = redis_counters(redis)
        redis_per_order = {k: (counters_after.get(k, 0) - counters_before.get(k, 0)) / args.orders
                           for k in sorted(set(counters_before) | set(counters_after))}
        complete = wait_for_traces(collector, sent)
        if not complete:
            log("some traces were still incomplete after 30 s: those orders are left out")
        log("one more order, watched with MONITOR, to name the Redis commands")
        watched = watch_one_order(client, redis, collector, namer)
        spins.pop().stop()
        untraced = None
        if args.untraced:
            log(f"{args.untraced} orders on a Spin without tracing")
            spins.append(start_spin(spin, spin_env(app, redis, {})))
            plain = Client(spins[-1].url, args.users, args.products)
            plain.sent = client.sent  # the next products and users
            clients.append(plain)
            send_orders(plain, args.warmup, False, "warm-up (untraced)")
            walls = [wall for _, _, wall in send_orders(plain, args.untraced, False, "untraced")]
            slow = statistics.median(walls) + 30_000
            untraced = {"orders": len(walls), "warmup": args.warmup, "wall": stats(walls, len(walls)),
                        "stalled": sum(w > slow for w in walls)}
            spins.pop().stop()
    finally:
        for c in clients:
            c.close()
        for s in spins:
            s.stop()
        if app:
            app.close()
        redis.stop()
        collector.stop()

    orders, incomplete, span_names = [], 0, {}
    for trace_id, parent, wall in sent:
        spans = collector.trace(trace_id)
        for span in spans:
            key = span["name"] if span["attributes"].get("db.system") != "postgresql" or span["name"].startswith("spin_") \
                else "<the SQL statement>"
            if span["name"].startswith("execute_wasm_component"):
                key = "execute_wasm_component <component>"
            elif span["parent"] == parent:
                key = "<METHOD> <route>"
            span_names.setdefault(key, sorted(k for k in span["attributes"] if not k.startswith(("code.", "thread.")) and k not in ("busy_ns", "idle_ns")))
        order = analyse(spans, parent, wall, namer)
        if order is None:
            incomplete += 1
            continue
        orders.append(order)
    if not orders:
        raise SystemExit("profile: no complete trace came in")
    summary = summarise(orders)
    # The guest finishing its body after Spin handed the head to hyper (seen
    # only with the wasi:http calls traced): what it costs the client.
    outside = lambda o: next(us for c, _, _, us in o["parts"] if c == "outside")
    finished_late = lambda o: any(label.startswith("after the response") and "outgoing-body.finish" in label
                                  for _, label, _, _ in o["parts"])
    traced_wasi = any(c == "wasi" for o in orders for c, _, _, _ in o["parts"])
    late = [o for o in orders if finished_late(o)]
    on_time = [o for o in orders if not finished_late(o)]
    late_body = {"orders": len(late), "of": len(orders),
                 "outside_late": stats([outside(o) for o in late], len(late)),
                 "outside_on_time": stats([outside(o) for o in on_time], len(on_time)),
                 "wall_late": stats([o["wall"] for o in late], len(late)),
                 "wall_on_time": stats([o["wall"] for o in on_time], len(on_time)),
                 "response_headers": {k: v for k, v in client.last_headers.items()
                                      if k in ("content-length", "transfer-encoding", "connection")}} if traced_wasi else None
    grouped = summary["grouped"].values()
    count = lambda pred: statistics.median([sum(1 for c, label, _, _ in o["parts"] if pred(c, label)) for o in orders])
    counts = {
        "pg_open": count(lambda c, l: l.startswith("Postgres open")),
        "pg_statements": count(lambda c, l: c == "postgres" and not l.startswith("Postgres open")),
        "redis_open": count(lambda c, l: l.startswith("Redis open")),
        "redis_commands": count(lambda c, l: c == "redis" and not l.startswith("Redis open")),
        "variables": count(lambda c, l: c == "variables"),
        "variable_keys": [g["label"].split(" ", 1)[1] for g in grouped if g["category"] == "variables"],
    }
    notes = {
        "<METHOD> <route>": "— Spin's route span (trigger-http), parent: the request's `traceparent`",
        "execute_wasm_component <component>": "— `spin_trigger_http.execute_wasm`: instantiation and the guest's run, "
                                              "until the response head",
        "spin_variables.get": "— one per variable the guest reads (attribute `key`)",
        "spin_outbound_pg.open": "— `Connection::open` (pool checkout)",
        "<the SQL statement>": "— `spin_outbound_pg.query`/`execute`: the span is named by the statement's text "
                               "(attribute `statement`)",
        "spin_outbound_redis.open_connection": "— `Connection::open` (a new connection)",
        "wit-bindgen import": "— (trace level) each wasi call, attributes `module`, `function`",
    }
    span_list = [(name, notes.get(name, "— " + ("Redis command (`spin_outbound_redis.execute`), named by the command"
                                                 if "command" in attrs else "")) + f" (attributes: {', '.join(attrs) or '–'})")
                 for name, attrs in sorted(span_names.items())]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    results = {
        "command": " ".join(["python3 bench/profile.py", *sys.argv[1:]]),
        "facts": facts, "settings": vars(args), "rate": rate, "incomplete": incomplete,
        "traces_complete_on_time": complete, "spans_per_order": statistics.mean(o["spans"] for o in orders),
        "watched": watched, "counts": counts, "late_body": late_body, "redis_server_per_order": redis_per_order, "untraced": untraced, "span_names": span_list,
        "unnamed_sql": namer.unnamed_sql, "summary": summary, "limits": LIMITS,
    }
    directory = os.path.join(ROOT, "bench/results")
    os.makedirs(directory, exist_ok=True)
    name = f"{stamp}-profile-paid-order"
    with open(os.path.join(directory, f"{name}.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    text = report(results)
    with open(os.path.join(directory, f"{name}.md"), "w") as handle:
        handle.write(text)
    print(text)
    log(f"written to bench/results/{name}.md and .json")


if __name__ == "__main__":
    main()
