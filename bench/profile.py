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
  *instantiation and guest start until its first host call* (Spin has no span
  of its own for instantiation: see the calibration below);
- every host call the guest makes, by what it is: each Postgres statement
  named by the constant of the source that sends it (`order-flow::RESERVE`),
  each Redis command (Lua scripts named by their source constant, learned
  from one extra order watched with `MONITOR`), opens, variables;
- the guest's own time between host calls (JSON, JWT verification, the
  domain), labelled by the host call it ends at, and from the last host call
  to the response.

Calibration: the no-op component (bench/noop.toml, no host calls) in a second
`spin up`, whose whole component span is instantiation plus a trivial guest.

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
import http.client
import http.server
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench  # noqa: E402  (the suite's classes: App, SpinHost, Redis, seed_orders, token)

WASM = os.path.join(ROOT, "target/wasm32-wasip2/release")
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
        if number in (1,):
            return value.decode("utf-8", "replace")
        if number == 2:
            return bool(value)
        if number == 3:
            return value - (1 << 64) if value >= 1 << 63 else value
        if number == 4:
            import struct
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
