#!/usr/bin/env python3
"""Contract testing with Schemathesis (issue 9): the served OpenAPI document
against the real app, by a client nobody here wrote.

`./dev contract` runs a short pass (CI); `./dev contract --long` a long one.
Starts the app on a fresh database and a private Redis, seeds a product, a
coupon and a funded wallet so the generated requests reach real code paths,
and runs Schemathesis with user and admin tokens (the admin token is a user
too: its own wallet, coupons and orders).

Schemathesis warns that `POST /api/v1/admin/coupons` "mostly rejected
generated data": the document says all it can (FIXED or RATE, percent 1-100,
not-blank name), but issueStartsAt < issueEndsAt <= expiresAt cannot be said
in JSON Schema, so most random date-times are a correct 400. The long run
says the same of `POST /api/v1/orders`: random lines often name one product
twice (one line per product is the rule; JSON Schema cannot say "unique by
productId"), and reused Idempotency-Keys with another body are a correct 422.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "contract-secret-0123456789"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
SCHEMATHESIS = os.path.join(ROOT, "target/contract-venv/bin/schemathesis")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(user, role=None):
    now = int(time.time())
    claims = {"sub": str(user), "iat": now, "exp": now + 3600, **({"role": role} if role else {})}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(db, sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"{PG_SERVER}/{db}", "-c", sql], check=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--long", action="store_true", help="many more examples (minutes)")
    args = parser.parse_args()

    db = f"contract_{os.getpid()}"
    psql("postgres", f"CREATE DATABASE {db}")
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    host = None
    try:
        binary = os.path.join(ROOT, "target/debug/edge-host")
        manifest = os.path.join(ROOT, "spin.toml")
        # The shared server's certificate is self-signed: in clear, as the components connect.
        url = f"{PG_SERVER}/{db}?sslmode=disable"
        subprocess.run([binary, "-f", manifest, "migrate", "--database-url", url], check=True,
                       stderr=subprocess.DEVNULL)
        psql(db, "INSERT INTO products (name, price, stock, initial_stock) VALUES ('Mug', 18000, 100, 100);"
                 "INSERT INTO wallets (user_id, balance) VALUES (1, 5000000);"
                 "INSERT INTO wallet_ledger (user_id, kind, amount, balance_after, charge_key)"
                 " VALUES (1, 'CHARGE', 5000000, 5000000, 'seed');"
                 "INSERT INTO coupons (name, discount_type, discount_value, total_quantity, issue_starts_at,"
                 " issue_ends_at, expires_at) VALUES ('c', 'FIXED', 1000, 1000, now() - interval '1 day',"
                 " now() + interval '1 day', now() + interval '2 days');")
        database_id = subprocess.run([binary, "-f", manifest, "database-id", "--database-url", url], check=True,
                                     capture_output=True, text=True).stdout.strip()
        env = dict(os.environ, SPIN_VARIABLE_PG_URL=url, SPIN_VARIABLE_DATABASE_ID=database_id,
                   SPIN_VARIABLE_REDIS_URL=f"redis://127.0.0.1:{redis_port}",
                   SPIN_VARIABLE_REDIS_HOST=f"127.0.0.1:{redis_port}", SPIN_VARIABLE_JWT_SECRET=SECRET,
                   EDGE_HOST_LOG="error")
        host = subprocess.Popen([binary, "-f", manifest, "up", "--listen", "127.0.0.1:0", "--no-cron"], env=env,
                                stdout=subprocess.PIPE, text=True)
        base = host.stdout.readline().split()[1]
        examples = "400" if args.long else "25"
        command = [
            SCHEMATHESIS, "run", f"{base}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {token(1, 'admin')}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                        "response_headers_conformance,response_schema_conformance",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", examples,
            "--workers", "1",
            "--suppress-health-check", "all",
            "--generation-deterministic" if not args.long else "--generation-maximize=response_time",
        ]
        print("contract:", " ".join(command[:3]), "...", file=sys.stderr)
        hooks = dict(os.environ, SCHEMATHESIS_HOOKS="hooks",
                     PYTHONPATH=os.path.join(ROOT, "tests/contract"))
        result = subprocess.run(command, cwd=ROOT, env=hooks)
        return result.returncode
    finally:
        if host:
            host.terminate()
            host.wait()
        redis.kill()
        psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
