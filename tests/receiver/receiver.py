"""A webhook receiver for the test suite, as a shop would run one.

Every delivery is verified with the Standard Webhooks reference library
(PyPI `standardwebhooks`): an implementation of the signature independent of
the app's own, so a passing test proves the signature interoperable, not only
self-consistent.

    receiver.py PORT SECRET

- `POST /hook`: a delivery. Verified and recorded; answered with the status
  and after the delay the controls say (defaults: 204 at once).
- `POST /control`: `{"status": 500}`, `{"delay": 12}`, `{"failOrders": [7]}`
  (events of those orders get 500, the others the usual answer), or any mix.
- `GET /deliveries`: every delivery so far, oldest first: `webhookId`,
  `timestamp`, `verified` (and `error` when not), `answered`, `startedAt`,
  `endedAt` (Unix seconds, float), `body` (as received) and `payload` (parsed).
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()
CONTROLS = {"status": 204, "delay": 0.0, "failOrders": []}
DELIVERIES = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def do_GET(self):
        if self.path != "/deliveries":
            return self.reply(404)
        with LOCK:
            body = json.dumps(DELIVERIES).encode()
        self.reply(200, body)

    def do_POST(self):
        body = self.read_body()
        if self.path == "/control":
            with LOCK:
                CONTROLS.update(json.loads(body))
            return self.reply(204)
        if self.path != "/hook":
            return self.reply(404)
        started = time.time()
        record = {
            "webhookId": self.headers.get("webhook-id"),
            "timestamp": self.headers.get("webhook-timestamp"),
            "startedAt": started,
            "body": body.decode("utf-8", "replace"),
        }
        try:
            record["payload"] = Webhook(SECRET).verify(body, dict(self.headers.items()))
            record["verified"] = True
        except (WebhookVerificationError, ValueError) as error:
            record["verified"] = False
            record["error"] = str(error)
            record["payload"] = None
        with LOCK:
            controls = dict(CONTROLS)
        order_id = ((record["payload"] or {}).get("data") or {}).get("orderId")
        status = 500 if order_id in controls["failOrders"] else controls["status"]
        time.sleep(controls["delay"])
        record["answered"] = status
        record["endedAt"] = time.time()
        with LOCK:
            DELIVERIES.append(record)
        try:
            self.reply(status)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender gave up waiting (its timeout): recorded all the same


if __name__ == "__main__":
    PORT, SECRET = int(sys.argv[1]), sys.argv[2]
    # A listen backlog for bursts of deliveries (the default 5 drops SYNs, and
    # a connection the app gave up on would still be read, seconds later).
    ThreadingHTTPServer.request_queue_size = 512
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    print(f"Serving http://127.0.0.1:{PORT}", flush=True)
    server.serve_forever()
