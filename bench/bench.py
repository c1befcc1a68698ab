#!/usr/bin/env python3
"""The benchmark suite (issue 8): workloads through the real host and components,
the raw limits of the same work without HTTP or wasm, invariants after every run,
and a report in bench/results/.

Run it with `./dev bench` (or `./dev bench --smoke` for the short correctness-only
version CI runs). Only the standard library is used; the load generator is wrk,
the raw limits are redis-benchmark and pgbench.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import itertools
import json
import os
import platform
import resource
import signal
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "bench-secret-0123456789"
PG_SERVER = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------- tokens

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(user, role=None):
    now = int(time.time())
    claims = {"sub": str(user), "iat": now, "exp": now + 4 * 3600}
    if role:
        claims["role"] = role
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def tokens_file(users, extra=None):
    """A file of tokens, one line per user; `extra(user)` appends a field."""
    handle = tempfile.NamedTemporaryFile("w", delete=False, suffix=".tokens")
    for user in users:
        suffix = f" {extra(user)}" if extra and extra(user) else ""
        handle.write(f"{token(user)}{suffix}\n")
    handle.close()
    return handle.name


# ----------------------------------------------------------------- stores

def psql(db, sql, server=PG_SERVER):
    return run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", f"{server}/{db}", "-c", sql]).strip()


def as_postgres_user(cmd):
    """Postgres' server tools and PgBouncer refuse to run as root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def give_to_postgres(path):
    if os.geteuid() == 0:
        run(["chown", "-R", "postgres:", path])


class PrivatePostgres:
    """A throw-away cluster with a given max_connections (the scale-out runs)."""

    def __init__(self, max_connections):
        self.dir = tempfile.mkdtemp(prefix="bench-pg-")
        give_to_postgres(self.dir)
        bin_dir = sorted(f"/usr/lib/postgresql/{v}/bin" for v in os.listdir("/usr/lib/postgresql"))[-1]
        self.pg_ctl = os.path.join(bin_dir, "pg_ctl")
        run(as_postgres_user([os.path.join(bin_dir, "initdb"), "-D", self.dir, "-U", "postgres", "--auth=trust"]))
        self.port = free_port()
        run(as_postgres_user([self.pg_ctl, "-D", self.dir, "-l", os.path.join(self.dir, "server.log"), "-w", "-o",
                              f"-c listen_addresses=127.0.0.1 -p {self.port} -k /tmp "
                              f"-c max_connections={max_connections}", "start"]))
        self.server = f"postgres://postgres@127.0.0.1:{self.port}"

    def stop(self):
        subprocess.run(as_postgres_user([self.pg_ctl, "-D", self.dir, "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        subprocess.run(["rm", "-rf", self.dir])


# The role the app logs in as (see App).
APP_ROLE = "bench_app"
PGBOUNCER = os.path.join(ROOT, "../shared/pgbouncer/pgbouncer")
# Server connections PgBouncer keeps to the database in the scale-out runs.
POOLER_POOL = 40


class PgBouncer:
    """PgBouncer in transaction mode (prepared statements tracked) before `postgres`."""

    def __init__(self, postgres, pool_size):
        self.dir = tempfile.mkdtemp(prefix="bench-pgbouncer-")
        self.port = free_port()
        with open(os.path.join(self.dir, "pgbouncer.ini"), "w") as handle:
            handle.write(f"[databases]\n* = host=127.0.0.1 port={postgres.port}\n\n[pgbouncer]\n"
                         f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
                         f"auth_type = trust\nauth_file = {self.dir}/users.txt\npool_mode = transaction\n"
                         f"max_prepared_statements = 200\ndefault_pool_size = {pool_size}\n"
                         f"max_db_connections = {pool_size}\nmax_client_conn = 5000\n"
                         f"logfile = {self.dir}/pgbouncer.log\n")
        with open(os.path.join(self.dir, "users.txt"), "w") as handle:
            handle.write(f'"postgres" ""\n"{APP_ROLE}" ""\n')
        give_to_postgres(self.dir)
        cmd = [PGBOUNCER, *(["-u", "postgres"] if os.geteuid() == 0 else []), os.path.join(self.dir, "pgbouncer.ini")]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("pgbouncer did not start")

    def url(self, db):
        return f"postgres://{APP_ROLE}@127.0.0.1:{self.port}/{db}?sslmode=disable"

    def stop(self):
        self.process.kill()
        self.process.wait()
        subprocess.run(["rm", "-rf", self.dir])


def spin_install():
    """Real Spin 4.0.2 from ../shared/spin, unpacked under target/ (None if absent)."""
    install = os.path.join(ROOT, "../shared/spin/install")
    if not os.path.exists(install):
        return None
    dest = os.path.join(ROOT, "target/spin")
    run([install, dest])
    return {"bin": os.path.join(dest, "bin/spin"), "data": os.path.join(dest, "data")}


class Redis:
    """A private redis-server for the benchmark."""

    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def cli(self, *args):
        result = subprocess.run(["redis-cli", "-p", str(self.port), *args], text=True, capture_output=True)
        return result.stdout.strip()

    def stop(self):
        self.process.kill()
        self.process.wait()


class Receiver:
    """The benchmarks' webhook receiver (tests/src/bin/bench-receiver.rs):
    answers every POST 204 at once and counts them."""

    SECRET = "whsec_" + base64.b64encode(b"bench-webhook-signing-key-32byte").decode()

    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen([os.path.join(ROOT, "target/debug/bench-receiver"), str(self.port)],
                                        stdout=subprocess.PIPE, text=True)
        if not self.process.stdout.readline().startswith("Serving "):
            raise RuntimeError("bench-receiver did not start")

    def env(self):
        origin = f"http://127.0.0.1:{self.port}"
        return {"SPIN_VARIABLE_WEBHOOK_URL": f"{origin}/hook", "SPIN_VARIABLE_WEBHOOK_ORIGIN": origin,
                "SPIN_VARIABLE_WEBHOOK_SECRET": self.SECRET}

    def stop(self):
        self.process.terminate()
        self.process.wait()


class App:
    """A fresh database and N host instances of spin.toml on it (and, for the
    scale-out runs, real Spin instances too, and a pooler between them and it)."""

    def __init__(self, host_binary, redis, instances, tag, server=PG_SERVER, pooler=None, spin=None,
                 spin_instances=0, pool=None, webhooks=None):
        self.server = server
        self.db = f"bench_{tag}_{os.getpid()}_{int(time.time() * 1000)}"
        # The app logs in as a role of its own, not a superuser (as in production),
        # so Postgres' reserved connections stay free for the driver's checks even
        # when the app has taken every other one.
        psql("postgres", f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') "
                         f"THEN CREATE ROLE {APP_ROLE} LOGIN; END IF; END $$", server)
        psql("postgres", f"CREATE DATABASE {self.db} OWNER {APP_ROLE}", server)
        app_server = server.replace("postgres@", f"{APP_ROLE}@", 1)
        self.url = f"{app_server}/{self.db}?sslmode=disable"  # Spin would refuse the self-signed certificate
        run([host_binary, "-f", os.path.join(ROOT, "spin.toml"), "migrate", "--database-url", self.url])
        redis.cli("FLUSHALL")
        self.redis = redis
        database_id = psql(self.db, "SELECT database_id FROM app_identity", server)
        pool = pool or max(8, 40 // instances)
        app_url = pooler.url(self.db) if pooler else self.url
        env = dict(os.environ, SPIN_VARIABLE_PG_URL=app_url, SPIN_VARIABLE_PG_HOST=app_url.split("@")[1].split("/")[0],
                   SPIN_VARIABLE_REDIS_URL=redis.url(), SPIN_VARIABLE_REDIS_HOST=f"127.0.0.1:{redis.port}",
                   SPIN_VARIABLE_JWT_SECRET=SECRET, SPIN_VARIABLE_DATABASE_ID=database_id, EDGE_HOST_LOG="error")
        if webhooks:
            env.update(webhooks.env())
        self.hosts = [Host(host_binary, os.path.join(ROOT, "spin.toml"), env, ["--no-cron", f"--pg-pool-size={pool}"])
                      for _ in range(instances)]
        self.hosts += [SpinHost(spin, os.path.join(ROOT, "spin.toml"), env) for _ in range(spin_instances)]

    def sql(self, statement):
        return psql(self.db, statement, self.server)

    def drain(self, max_seconds=30):
        """Wait until no statement of the app runs: wrk gives up on the requests
        still in flight when it stops, but the instances finish them, and
        killing an instance in the middle of one is a fault test, not a benchmark."""
        deadline = time.time() + max_seconds
        quiet_since = None
        while time.time() < deadline:
            busy = int(psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            f"'{self.db}' AND state <> 'idle' AND pid <> pg_backend_pid()", self.server))
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.time()
            elif time.time() - quiet_since > 1:
                return
            time.sleep(0.1)
        log(f"instances still busy after {max_seconds} s; stopping them anyway")

    def stop_instances(self):
        for host in self.hosts:
            host.stop()
        self.hosts = []

    def check_invariants(self, checker):
        result = subprocess.run([checker, self.url, self.redis.url()], text=True, capture_output=True)
        return result.returncode == 0, result.stdout.strip().splitlines()[:5]

    def close(self):
        self.stop_instances()
        run(["psql", "-X", "-q", f"{self.server}/postgres", "-c", f"DROP DATABASE {self.db} WITH (FORCE)"])


class Host:
    def __init__(self, binary, manifest, env, args):
        self.process = subprocess.Popen([binary, "-f", manifest, "up", "--listen", "127.0.0.1:0", *args],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("Serving "):
            raise RuntimeError(f"host did not start: {line}")
        self.url = line.split()[1]

    def stop(self):
        self.process.terminate()
        self.process.wait()


class SpinHost:
    """A real `spin up` of the manifest (its own process group: Spin runs each
    trigger as a child process)."""

    def __init__(self, spin, manifest, env):
        port = free_port()
        self.logs = tempfile.mkdtemp(prefix="bench-spin-logs-")
        self.process = subprocess.Popen(
            [spin["bin"], "up", "-f", manifest, "--listen", f"127.0.0.1:{port}", "--log-dir", self.logs],
            env=dict(env, SPIN_DATA_DIR=spin["data"]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True)
        for line in self.process.stdout:
            if line.startswith("Serving "):
                self.url = line.split()[1]
                break
        else:
            raise RuntimeError("spin up did not start")
        # Keep reading what it prints, so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()

    def stop(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        subprocess.run(["rm", "-rf", self.logs])


# ----------------------------------------------------------------- measuring

# Processes whose CPU a run accounts for, by the name the kernel gives them.
CPU_ACCOUNTS = {"postgres": "postgres", "spin": "runtime", "edge-host": "runtime",
                "redis-server": "redis", "bench-receiver": "receiver"}


def cpu_seconds():
    """CPU seconds (user + system) used so far by every process of CPU_ACCOUNTS,
    summed by account. The deltas of a run say where its CPU went."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        account = CPU_ACCOUNTS.get(name)
        if account:
            totals[account] = totals.get(account, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def wrk(urls, script, args_for, connections, threads=2, max_seconds=120):
    """Run one wrk per instance at once (connections split evenly), each with
    `args_for(i)` (its own users, so instances never act as one user), and
    merge the results, with the CPU each kind of process spent per answered
    request (`cpu_ms_per_request`: Postgres, the runtime, Redis, wrk, the
    webhook receiver)."""
    cpu_before = cpu_seconds()
    # wrk is this driver's child: its CPU is counted once it has been waited for.
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    per_instance = max(1, connections // len(urls))
    processes = []
    for i, url in enumerate(urls):
        markers = tempfile.mkdtemp(prefix="wrk-markers-")
        cmd = ["wrk", f"-t{threads}", f"-c{max(per_instance, threads)}", f"-d{max_seconds}s", "--latency",
               "-s", os.path.join("bench/lua", script), url, "--", *[str(a) for a in args_for(i)]]
        env = dict(os.environ, BENCH_MARKERS=markers)
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append((process, markers))
    # Every thread drops a marker when its quota is answered; then wrk is told to report.
    deadline = time.time() + max_seconds
    pending = list(processes)
    while pending and time.time() < deadline:
        for process, markers in list(pending):
            if len(os.listdir(markers)) >= threads or process.poll() is not None:
                process.send_signal(signal.SIGINT)
                pending.remove((process, markers))
        time.sleep(0.05)
    results = []
    for process, _ in processes:
        out, err = process.communicate()
        match = re.search(r"BENCH_JSON (\{.*\})", out)
        if not match:
            raise RuntimeError(f"wrk failed: {out}\n{err}")
        results.append(json.loads(match.group(1)))
    statuses = {}
    for result in results:
        for status, n in result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    duration = max(r["duration_us"] for r in results) / 1e6
    answered = sum(statuses.values())
    cpu_after = cpu_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_after["wrk"] = (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    cpu_before["wrk"] = 0.0
    cpu = {account: round(1000 * (cpu_after.get(account, 0.0) - cpu_before.get(account, 0.0)) / answered, 3)
           for account in sorted(set(CPU_ACCOUNTS.values()) | {"wrk"})} if answered else {}
    return {
        "cpu_ms_per_request": cpu,
        "requests": answered,
        "rps": answered / duration if duration else 0.0,
        "p50_ms": max(r["p50_us"] for r in results) / 1000,
        "p99_ms": max(r["p99_us"] for r in results) / 1000,
        "errors": sum(r["errors"] for r in results),
        "statuses": statuses,
    }


def spread(values):
    values = sorted(values)
    return {"min": values[0], "median": statistics.median(values), "max": values[-1]}


# ----------------------------------------------------------------- raw limits

def source_constant(path, name):
    """A Lua or SQL constant exactly as the components send it: a `&str`
    as written, an `edge::pg::Query` in the always-a-row shape `Query::sql`
    gives it (keep the two in step)."""
    text = open(os.path.join(ROOT, path)).read()
    plain = re.search(rf'const {name}: &str = r?"(.*?)";', text, re.S)
    if plain:
        return plain.group(1)
    no_flush = r"(\s*\.committed_without_flush\(\))?"
    with_items = re.search(rf'const {name}: Query = Query::with\(\s*"(.*?)",\s*"(.*?)",?\s*\){no_flush};', text, re.S)
    if with_items:
        ctes, rows, skip_flush = with_items.groups()
    else:
        plain_query = re.search(rf'const {name}: Query =\s*Query::new\(\s*"(.*?)",?\s*\){no_flush};', text, re.S)
        ctes, (rows, skip_flush) = "", plain_query.groups()
    separator = "," if ctes.strip() else ""
    setting, join = ((" edge_no_flush AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)),",
                      " CROSS JOIN edge_no_flush") if skip_flush else ("", ""))
    return (f"WITH {ctes}{separator}{setting} edge_result AS MATERIALIZED ({rows}) "
            f"SELECT edge_page.* FROM (VALUES (1)) AS edge_always(one){join} "
            "LEFT JOIN (SELECT row_number() OVER () AS edge_row, edge_result.* FROM edge_result) "
            "AS edge_page ON true ORDER BY edge_page.edge_row")


def raw_evalsha(redis, connections, requests):
    """redis-benchmark running the coupon DECIDE script via EVALSHA."""
    script = source_constant("crates/coupon-allocation/src/lib.rs", "DECIDE")
    sha = redis.cli("SCRIPT", "LOAD", script)
    redis.cli("SET", "coupon:{raw}:remaining", "1000000000")
    redis.cli("SET", "coupon:{raw}:window", "0 99999999999999")
    out = run(["redis-benchmark", "-p", str(redis.port), "-c", str(connections), "-n", str(requests), "-r", "100000000",
               "-q", "EVALSHA", sha, "5", "coupon:{raw}:remaining", "coupon:{raw}:issued", "coupon:{raw}:window",
               "coupon:{raw}:late", "coupon:{raw}:decided", "__rand_int__"])
    return float(re.search(r"([\d.]+) requests per second", out).group(1))


def raw_order_chain(db, connections, seconds):
    """pgbench running the order flow's own statements (create, reserve,
    debit with its ledger row, confirm) for one-line orders."""
    flow = "crates/order-flow/src/lib.rs"
    prices = source_constant(flow, "PRICES")
    create = source_constant(flow, "CREATE")
    reserve = source_constant(flow, "RESERVE")
    debit = source_constant(flow, "DEBIT")
    confirm = source_constant(flow, "CONFIRM")

    def bind(sql, values):
        for i in sorted(values, reverse=True):
            sql = sql.replace(f"${i}", values[i])
        return " ".join(sql.split()) + ";"

    script = "\n".join([
        r"\set user random(1, 1000)",
        r"\set product random(1, 100)",
        r"\set key random(1, 1000000000)",
        bind(prices, {1: "ARRAY[:product]::int8[]", 2: ":user", 3: "'pgbench-' || :client_id || '-' || :key"}),
        bind(create, {1: ":user", 2: "'pgbench-' || :client_id || '-' || :key", 3: "'f'", 4: "'PENDING'",
                      5: "NULL", 6: "1000", 7: "NULL", 8: "NULL", 9: "NULL", 10: "ARRAY[:product]",
                      11: "ARRAY[1]", 12: "ARRAY[1000]", 13: "'pgbench'"}).rstrip(";") + r" \gset",
        bind(reserve, {1: ":id", 2: ":product", 3: "1"}),
        bind(debit, {1: ":id", 2: ":user", 3: "1000"}),
        bind(confirm, {1: ":id", 2: "NULL", 3: "30"}),  # webhooks off: the event unleased
    ])
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script + "\n")
    # Prepared, as the host sends them (each pooled connection caches its statements).
    out = run(["pgbench", "-n", "-M", "prepared", "-c", str(connections), "-j", "2", "-T", str(seconds), "-f", handle.name,
               f"{PG_SERVER}/{db}"])
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


# ----------------------------------------------------------------- workloads

def fund(app, first_user, users):
    """Wallets of 10,000,000 KRW for users first_user.., each with its CHARGE."""
    app.sql(f"WITH w AS (INSERT INTO wallets (user_id, balance) SELECT g, 10000000 "
            f"FROM generate_series({first_user}, {first_user + users - 1}) g "
            f"RETURNING user_id, balance) INSERT INTO wallet_ledger (user_id, kind, amount, balance_after, charge_key) "
            f"SELECT user_id, 'CHARGE', balance, balance, 'seed' FROM w")


def seed_orders(app, products, users, coupons, stock):
    app.sql(f"INSERT INTO products (name, price, stock, initial_stock) "
            f"SELECT 'product ' || g, 1000, {stock}, {stock} FROM generate_series(1, {products}) g")
    fund(app, 1, users)
    if coupons:
        app.sql("INSERT INTO coupons (name, discount_type, discount_value, total_quantity, issued_count, "
                "issue_starts_at, issue_ends_at, expires_at) VALUES ('bench', 'FIXED', 500, "
                f"{coupons}, {coupons}, now() - interval '1 day', now() + interval '1 day', now() + interval '2 days')")
        app.sql(f"INSERT INTO user_coupons (coupon_id, user_id) SELECT 1, g FROM generate_series(1, {coupons}) g")
    return {int(line.split("|")[0]): int(line.split("|")[1])
            for line in app.sql("SELECT user_id, id FROM user_coupons").splitlines() if line}


def create_coupon(app, quantity):
    """A FIXED coupon of `quantity` units, issuable now, made through the API; its id."""
    body = json.dumps({"name": "storm", "discountType": "FIXED", "discountValue": 1000, "totalQuantity": quantity,
                       "issueStartsAt": "2020-01-01T00:00:00Z", "issueEndsAt": "2099-01-01T00:00:00Z",
                       "expiresAt": "2099-06-01T00:00:00Z"})
    created = run(["curl", "-sf", "-X", "POST", f"{app.hosts[0].url}/api/v1/admin/coupons",
                   "-H", f"authorization: Bearer {token(1, 'admin')}", "-H", "content-type: application/json",
                   "-d", body])
    return json.loads(created)["id"]


def warm_up(app, scale):
    """A drop hits a shop that is already running: before a storm, every
    instance serves `warm_up_requests` orders (of WARM_UP_PRODUCTS products of
    their own) and as many coupon issues, at the storm's concurrency, so the
    order and coupon components' Postgres pools are open and their sessions
    have run their statements. From a cold start (`--cold`) a storm also pays
    for opening those sessions (a backend forked, its catalog caches filled,
    its first plans made, per connection), and the sold-out storm pays it all
    at once: its first orders open the whole pool together."""
    count = scale["warm_up_requests"]
    app.sql(f"INSERT INTO products (id, name, price, stock, initial_stock) OVERRIDING SYSTEM VALUE "
            f"SELECT g, 'warm-up ' || g, 1000, 1000000, 1000000 "
            f"FROM generate_series({WARM_UP_FIRST_PRODUCT}, {WARM_UP_FIRST_PRODUCT + WARM_UP_PRODUCTS - 1}) g")
    fund(app, WARM_UP_FIRST_USER, count)
    coupon = create_coupon(app, count)
    n = len(app.hosts)
    tokens = [tokens_file(range(WARM_UP_FIRST_USER + i, WARM_UP_FIRST_USER + count, n)) for i in range(n)]
    urls = [h.url for h in app.hosts]
    per_thread = max(1, count // (2 * n))
    for script, args in (("order.lua", [WARM_UP_PRODUCTS, WARM_UP_FIRST_PRODUCT]), ("coupon.lua", [coupon])):
        served = wrk(urls, script, lambda i: [tokens[i], per_thread, *args], connections=scale["connections"])
        # wrk may send a few requests past its quota: a user's second issue is a 409.
        if not set(served["statuses"]) <= {"201", "409"} or served["errors"]:
            raise RuntimeError(f"the warm-up's {script} failed: {served['statuses']}, {served['errors']} errors")
    app.drain()


def workload_coupon(app, scale, quantity, connections=None):
    coupon = create_coupon(app, quantity)
    total = scale["coupon_requests"]
    n = len(app.hosts)
    tokens = [tokens_file(range(1000 + i, 1000 + total, n)) for i in range(n)]
    result = wrk([h.url for h in app.hosts], "coupon.lua", lambda i: [tokens[i], total // (2 * n), coupon],
                 connections=connections or scale["connections"])
    issued = int(app.sql(f"SELECT count(*) FROM user_coupons WHERE coupon_id = {coupon}"))
    result["check"] = {"issued": issued, "expected_issued": min(quantity, result["requests"])}
    result["ok_extra"] = quantity > total or issued == quantity
    return result


def workload_orders(app, scale, products, connections=None, hot=False):
    coupons = seed_orders(app, products=products, users=1000, coupons=200, stock=1_000_000)
    n = len(app.hosts)
    tokens = [tokens_file(range(1 + i, 1001, n), extra=lambda u: coupons.get(u, "")) for i in range(n)]
    total = scale["order_requests"]
    return wrk([h.url for h in app.hosts], "order.lua", lambda i: [tokens[i], total // (2 * n), 1 if hot else products],
               connections=connections or scale["connections"])


def workload_orders_with_webhooks(app, scale, products):
    """The order storm with webhooks on: every paid order's event is sent
    right after its answer. Afterwards, how long until every event is
    DELIVERED (the goal: within 10 s of the storm's end)."""
    result = workload_orders(app, scale, products)
    ended = time.time()
    undelivered = None
    while time.time() - ended < 30:
        undelivered = int(app.sql("SELECT count(*) FROM order_events WHERE status <> 'DELIVERED'"))
        if undelivered == 0:
            break
        time.sleep(0.2)
    events = int(app.sql("SELECT count(*) FROM order_events"))
    if undelivered:
        result["undelivered_sample"] = app.sql(
            "SELECT status, attempts, last_error, last_response_status, lease_until > now() AS leased "
            "FROM order_events WHERE status <> 'DELIVERED' LIMIT 5")
    result["delivered_within_s"] = round(time.time() - ended, 1) if undelivered == 0 else None
    result["check"] = {"events": events, "undelivered_after_30s": undelivered,
                       "delivered_within_s": result["delivered_within_s"],
                       "undelivered_sample": result.get("undelivered_sample")}
    result["ok_extra"] = undelivered == 0 and result["delivered_within_s"] <= 10
    return result


def workload_sold_out(app, scale, restock=False, units=None, orders=None):
    """A limited drop (SPEC §4, the sold-out gate): `orders` (by default
    `order_requests`) orders of one unit of one product that has `units`
    (by default SOLD_OUT_UNITS); the first ones are sold, the rest refused
    `409 OUT_OF_STOCK`, after the gate closes from Redis with no order
    written. With `restock`, an admin puts RESTOCK_UNITS back every
    RESTOCK_EVERY_S while the storm runs: each batch must be sold again
    (demand exceeds supply throughout)."""
    units = SOLD_OUT_UNITS if units is None else units
    seed_orders(app, products=1, users=1000, coupons=0, stock=units)
    n = len(app.hosts)
    tokens = [tokens_file(range(1 + i, 1001, n)) for i in range(n)]
    total = scale["order_requests"] if orders is None else orders
    storming = threading.Event()
    restocks = []

    def restocker():
        admin = token(1, "admin")
        while not storming.wait(RESTOCK_EVERY_S):
            key = f"bench-restock-{len(restocks)}"
            try:
                http(app.hosts[len(restocks) % n].url, "POST", "/api/v1/admin/products/1/restock", admin,
                     {"quantity": RESTOCK_UNITS}, key=key)
                restocks.append("201")
            except RuntimeError as error:
                restocks.append(str(error))

    thread = threading.Thread(target=restocker, daemon=True) if restock else None
    if thread:
        thread.start()
    try:
        result = wrk([h.url for h in app.hosts], "order.lua", lambda i: [tokens[i], total // (2 * n), 1],
                     connections=scale["connections"])
    finally:
        storming.set()
        if thread:
            thread.join()
    # Let the last restock's units be bought by no one: the storm is over.
    restocked = int(app.sql("SELECT coalesce(sum(quantity), 0) FROM product_restocks"))
    sold = int(app.sql("SELECT coalesce(sum(quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id "
                       "WHERE o.status = 'PAID' AND i.product_id = 1"))
    written = int(app.sql(f"SELECT count(*) FROM orders WHERE user_id < {WARM_UP_FIRST_USER}"))
    stock = int(app.sql("SELECT stock FROM products WHERE id = 1"))
    result["check"] = {"units": units, "restocked": restocked,
                       "restock_failures": [s for s in restocks if s != "201"],
                       "sold": sold, "orders_written": written, "stock_left": stock}
    # Nothing oversold, nothing left unsold that a buyer asked for before the
    # storm ended (a restock landing in the storm's last instant may stay).
    left_allowed = RESTOCK_UNITS if restock else 0
    result["ok_extra"] = (sold + stock == units + restocked and stock <= left_allowed
                          and all(s == "201" for s in restocks))
    return result


def seed_paid_orders(app, orders):
    """`orders` PAID orders, one per user (order id = user id), of 4 units of
    product 1 + id % 100 at 1,000 KRW, with their payments, wallets, stock
    and order.paid events as the app would have left them (the invariants hold)."""
    app.sql("INSERT INTO products (name, price, stock, initial_stock) "
            "SELECT 'product ' || g, 1000, 1000000, 1000000 FROM generate_series(1, 100) g")
    app.sql(f"WITH o AS (INSERT INTO orders (user_id, idempotency_key, request_fingerprint, status, total_amount, "
            f"balance_deducted, paid_at) SELECT g, 'seed', 'seed', 'PAID', 4000, true, now() "
            f"FROM generate_series(1, {orders}) g RETURNING id) "
            f"INSERT INTO order_items (order_id, product_id, quantity, unit_price) SELECT id, 1 + id % 100, 4, 1000 FROM o")
    # Each paid order's order.paid, as its CONFIRM would have written it (invariant 6).
    app.sql("INSERT INTO order_events (order_id, type, data) SELECT id, 'order.paid', "
            "jsonb_build_object('orderId', id, 'userId', user_id, 'status', 'PAID', 'totalAmount', total_amount) "
            "FROM orders ORDER BY id")
    app.sql("UPDATE products p SET stock = p.stock - s.units FROM (SELECT product_id, sum(quantity) AS units "
            "FROM order_items GROUP BY product_id) s WHERE p.id = s.product_id")
    app.sql(f"INSERT INTO wallets (user_id, balance) SELECT g, 100000 FROM generate_series(1, {orders}) g")
    app.sql(f"INSERT INTO wallet_ledger (user_id, kind, amount, balance_after, charge_key) "
            f"SELECT g, 'CHARGE', 104000, 104000, 'seed' FROM generate_series(1, {orders}) g")
    app.sql(f"INSERT INTO wallet_ledger (user_id, kind, amount, balance_after, order_id) "
            f"SELECT g, 'PAYMENT', -4000, 100000, g FROM generate_series(1, {orders}) g")


def workload_refunds(app, scale):
    total = scale["refund_requests"]
    orders = total // 2
    seed_paid_orders(app, orders)
    admin = tempfile.NamedTemporaryFile("w", delete=False, suffix=".tokens")
    admin.write(token(1, "admin") + "\n")
    admin.close()
    n = len(app.hosts)
    result = wrk([h.url for h in app.hosts], "refund.lua", lambda i: [admin.name, total // (2 * n), orders, i],
                 connections=scale["connections"])
    refunds = int(app.sql("SELECT count(*) FROM refunds"))
    units = int(app.sql("SELECT coalesce(sum(refunded_quantity), 0) FROM order_items"))
    answered = result["statuses"].get("201", 0)
    result["check"] = {"refunds": refunds, "refunded_units": units, "answered_201": answered}
    # One unit per refund, and every 201 is a refund (wrk may stop before the
    # last answers arrive, so there can be more refunds than 201s seen).
    result["ok_extra"] = units == refunds and answered <= refunds
    return result


def workload_charges(app, scale):
    n = len(app.hosts)
    tokens = [tokens_file(range(1 + i, 1001, n)) for i in range(n)]
    total = scale["charge_requests"]
    return wrk([h.url for h in app.hosts], "charge.lua", lambda i: [tokens[i], total // (2 * n)],
               connections=scale["connections"])


def workload_reads(app, scale):
    seed_orders(app, products=100, users=10, coupons=0, stock=1000)
    tokens = tokens_file(range(1, 11))
    total = scale["read_requests"]
    n = len(app.hosts)
    return wrk([h.url for h in app.hosts], "reads.lua", lambda i: [tokens, total // (2 * n), 100],
               connections=scale["connections"])


def scale_out(args, scale, redis, checker, runs, failures):
    """Issue 15: four processes — two hosts and two real Spin 4.0.2, each with
    Spin's pools of up to 64 Postgres connections per component — on one
    Postgres with max_connections = 100, directly and through PgBouncer."""
    if not os.path.exists(PGBOUNCER):
        return {"skipped": f"no {os.path.relpath(PGBOUNCER, ROOT)} here"}
    spin = spin_install()
    section = {"spin_instances": 2 if spin else 0, "host_instances": 2 if spin else 4, "max_connections": 100,
               "pool": POOLER_POOL, "connections": scale["scale_out_connections"], "workloads": {}}
    workloads = {
        "order storm (100 products)": lambda app: workload_orders(app, scale, 100, scale["scale_out_connections"]),
        "coupon storm (1,000 coupons)": lambda app: workload_coupon(app, scale, 1000 if not args.smoke else 50,
                                                                    scale["scale_out_connections"]),
    }
    if spin:
        log("scale-out: connections per request on real Spin")
        section["per_request"] = connections_per_request(args, redis, spin)
    postgres = PrivatePostgres(100)
    try:
        for name, workload in workloads.items():
            for via in ("direct", "pgbouncer"):
                samples = []
                for i in range(runs):
                    log(f"scale-out: {name}, {via}, run {i + 1}/{runs}")
                    bouncer = PgBouncer(postgres, POOLER_POOL) if via == "pgbouncer" else None
                    app = App(args.host, redis, section["host_instances"], "s", server=postgres.server,
                              pooler=bouncer, spin=spin, spin_instances=section["spin_instances"], pool=64)
                    try:
                        sample = workload(app)
                        sample["server_connections"] = int(psql(
                            "postgres", "SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'",
                            postgres.server))
                        app.drain()
                        app.stop_instances()  # the checker needs a connection too
                        ok, detail = app.check_invariants(checker)
                        sample["invariants"] = "hold" if ok else detail
                        if not ok:
                            failures.append(f"scale-out {name} ({via}): invariants broken: {detail}")
                        sample.pop("ok_extra", None)
                        refused = sum(n for status, n in sample["statuses"].items() if status.startswith("5"))
                        sample["failed"] = refused + sample["errors"]
                        if via == "pgbouncer" and sample["failed"]:
                            failures.append(f"scale-out {name} through PgBouncer: {sample['failed']} requests failed")
                        samples.append(sample)
                    finally:
                        app.close()
                        if bouncer:
                            bouncer.stop()
                section["workloads"][f"{name} | {via}"] = {
                    "samples": samples, "rps": spread([s["rps"] for s in samples]),
                    "p99_ms": spread([s["p99_ms"] for s in samples]),
                    "failed": spread([s["failed"] for s in samples]),
                    "server_connections": spread([s["server_connections"] for s in samples]),
                }
    finally:
        postgres.stop()
    return section


def connections_per_request(args, redis, spin):
    """For the sizing table: one real Spin 4.0.2 process, requests one at a
    time, Redis connections opened per request (Spin opens a new one on every
    `open`) and the Postgres connections the process keeps afterwards."""
    app = App(args.host, redis, 0, "c", spin=spin, spin_instances=1, pool=64)
    try:
        seed_orders(app, products=10, users=100, coupons=0, stock=1000)
        base = app.hosts[0].url
        admin = token(1, "admin")
        coupon = json.loads(http(base, "POST", "/api/v1/admin/coupons", admin, {
            "name": "sizing", "discountType": "FIXED", "discountValue": 100, "totalQuantity": 1000,
            "issueStartsAt": "2020-01-01T00:00:00Z", "issueEndsAt": "2099-01-01T00:00:00Z",
            "expiresAt": "2099-06-01T00:00:00Z"}))["id"]
        cases = {
            "product detail (GET /products/{id})": lambda u: ("GET", "/api/v1/products/1", None),
            "popular products (GET /products/popular)": lambda u: ("GET", "/api/v1/products/popular", None),
            # users past the seeded 100, whose wallets are not at the balance limit
            "charge (POST /wallet/charges)": lambda u: ("POST", "/api/v1/wallet/charges", {"amount": 1000}, 100 + u),
            "coupon issue (POST /coupons/{id}/issue)": lambda u: ("POST", f"/api/v1/coupons/{coupon}/issue", None),
            "order (POST /orders)": lambda u: ("POST", "/api/v1/orders",
                                               {"items": [{"productId": 1 + u % 10, "quantity": 1}]}),
        }
        per_request = {}
        requests = 20
        for number, (name, case) in enumerate(cases.items()):
            before = redis_connections_received(redis)
            for user in range(1, requests + 1):
                method, path, body, *as_user = case(user)
                http(base, method, path, token(as_user[0] if as_user else user), body, key=f"sizing-{number}-{user}")
            # less the one redis-cli made to ask
            per_request[name] = (redis_connections_received(redis) - before - 1) / requests
        held = int(app.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{app.db}'")) - 1
        return {"redis_per_request": per_request, "postgres_held_after": held, "requests": requests}
    finally:
        app.close()


def redis_connections_received(redis):
    stats = redis.cli("INFO", "stats")
    return int(re.search(r"total_connections_received:(\d+)", stats).group(1))


def http(base, method, path, bearer, body=None, key=None):
    headers = {"authorization": f"Bearer {bearer}"}
    if body is not None:
        headers["content-type"] = "application/json"
    if key and method == "POST":
        headers["idempotency-key"] = key
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{method} {path}: {error.code} {error.read().decode()}") from None


def measure_noop(host_binary, spin, runtime, concurrency, seconds, runs):
    """The no-op component alone: what a runtime costs per request."""
    manifest = os.path.join(ROOT, "bench/noop.toml")
    env = dict(os.environ, EDGE_HOST_LOG="error")
    server = Host(host_binary, manifest, env, []) if runtime == "host" else SpinHost(spin, manifest, env)
    try:
        tokens = tokens_file([1])
        samples = []
        for _ in range(runs):
            threads = min(2, concurrency)
            out = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s",
                                  "bench/lua/noop.lua", server.url, "--", tokens, "100000000"],
                                 cwd=ROOT, text=True, capture_output=True).stdout
            samples.append(json.loads(re.search(r"BENCH_JSON (\{.*\})", out).group(1)))
        return {"p50_us": spread([n["p50_us"] for n in samples]),
                "rps": spread([n["requests"] / (n["duration_us"] / 1e6) for n in samples])}
    finally:
        server.stop()


# ----------------------------------------------------------------- report

def facts(host_binary):
    def version(cmd):
        try:  # wrk prints its version with a non-zero exit: read it either way
            result = subprocess.run(cmd, text=True, capture_output=True)
            return (result.stdout or result.stderr).splitlines()[0].strip()
        except (OSError, IndexError):
            return "not found"
    lock = open(os.path.join(ROOT, "Cargo.lock")).read()
    wasmtime = re.search(r'name = "wasmtime"\nversion = "([^"]+)"', lock).group(1)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    memory = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    with open(os.path.join(ROOT, "spin.toml"), "rb") as manifest:
        components = tomllib.load(manifest)["component"]
    sizes = {name: os.path.getsize(os.path.join(ROOT, component["source"]))
             for name, component in components.items()}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(), "rustc": version(["rustc", "--version"]), "wasmtime": wasmtime,
        "postgres": version(["psql", "--version"]), "redis": version(["redis-server", "--version"]),
        "wrk": version(["wrk", "--version"]), "host_binary": os.path.relpath(host_binary, ROOT),
        "wasm_bytes": sizes,
    }


def selected(args, name):
    """Whether `--only` asks for the workload or part `name`: it names part
    of it, or one of its '|'-separated alternatives does."""
    return not args.only or any(part in name for part in args.only.split("|"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one run, correctness only (CI)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--host", default=os.path.join(ROOT, "target/host-release/edge-host"))
    parser.add_argument("--only", help="run only the workloads whose name contains this, or one of "
                                       "several separated by '|' (no raw limits; a report of its own)")
    parser.add_argument("--runtime", choices=["host", "spin"], help="run the workloads on this runtime only")
    parser.add_argument("--instances", type=int, choices=[1, 2], help="run the workloads on this many instances only")
    parser.add_argument("--cold", action="store_true",
                        help="start the storms compared for the sold-out gate on cold instances (no warm-up)")
    args = parser.parse_args()
    checker = os.path.join(ROOT, "target/debug/check-invariants")
    runs = 1 if args.smoke else args.runs
    scale = {"connections": 8, "coupon_requests": 400, "order_requests": 200, "charge_requests": 200,
             "refund_requests": 200,
             "read_requests": 300, "raw_requests": 2000, "raw_seconds": 2, "noop_seconds": 2, "scale_out_connections": 32,
             "warm_up_requests": 16} if args.smoke else \
            {"connections": 64, "coupon_requests": 20000, "order_requests": 5000, "charge_requests": 5000,
             "refund_requests": 5000,
             "read_requests": 20000, "raw_requests": 20000, "raw_seconds": 10, "noop_seconds": 5,
             "scale_out_connections": 256, "warm_up_requests": 640}
    redis = Redis()
    results = {"facts": facts(args.host), "smoke": args.smoke, "runs": runs, "scale": scale, "raw": {}, "workloads": {},
               "warmed": [] if args.cold else list(WARMED)}
    failures = []
    try:
        log("raw limits")
        raw_redis, raw_pg = [], []
        for _ in range(0 if args.only else runs):
            raw_redis.append(raw_evalsha(redis, scale["connections"], scale["raw_requests"]))
            app = App(args.host, redis, 1, "raw")
            seed_orders(app, products=100, users=1000, coupons=0, stock=100_000_000)
            for host in app.hosts:
                host.stop()
            app.hosts = []
            raw_pg.append(raw_order_chain(app.db, min(scale["connections"], 32), scale["raw_seconds"]))
            ok, detail = app.check_invariants(checker)
            if not ok:
                failures.append(f"raw pgbench broke invariants: {detail}")
            app.close()
        if not args.only:
            results["raw"] = {"evalsha_rps": spread(raw_redis), "order_chain_tps": spread(raw_pg)}

        workloads = {
            "coupon storm (1,000 coupons)": lambda app: workload_coupon(app, scale, 1000 if not args.smoke else 50),
            "coupon storm (unlimited)": lambda app: workload_coupon(app, scale, 1_000_000_000),
            "order storm (100 products)": lambda app: workload_orders(app, scale, 100),
            WEBHOOKS_ON: lambda app: workload_orders_with_webhooks(app, scale, 100),
            "hot product": lambda app: workload_orders(app, scale, 1, hot=True),
            SOLD_OUT: lambda app: workload_sold_out(app, scale),
            SOLD_OUT_RESTOCK: lambda app: workload_sold_out(app, scale, restock=True),
            "refund storm": lambda app: workload_refunds(app, scale),
            "charges": lambda app: workload_charges(app, scale),
            "reads": lambda app: workload_reads(app, scale),
        }
        if not args.smoke:
            # The same workload as SOLD_OUT with other numbers: the smoke run's
            # SOLD_OUT covers their code, CI's time is kept for the rest.
            workloads.update({
                SOLD_OUT_NOTHING_LEFT: lambda app: workload_sold_out(app, scale, units=0),
                SOLD_OUT_COUPON_SIZE: lambda app: workload_sold_out(app, scale, orders=scale["coupon_requests"]),
            })
        spin = spin_install()
        # Each workload on our host and, when ../shared/spin is here, on real Spin.
        runtimes = [r for r in (["host", "spin"] if spin else ["host"]) if args.runtime in (None, r)]
        if not spin:
            results["spin_missing"] = "no ../shared/spin here: the Spin column is empty"
        # Per runtime and instance count, each run goes through every selected
        # workload back to back, so workloads compared in one report (the
        # sold-out storm and the coupon storm) see the machine in the same state:
        # a shared machine's speed drifts over minutes.
        chosen = [(name, workload) for name, workload in workloads.items() if selected(args, name)]
        for instances, runtime in itertools.product((1, 2), runtimes):
            if args.instances not in (None, instances):
                continue
            samples_of = {name: [] for name, _ in chosen}
            for i in range(runs):
                for name, workload in chosen:
                    samples = samples_of[name]
                    log(f"{name}, {instances} {runtime} instance(s), run {i + 1}/{runs}")
                    receiver = Receiver() if name == WEBHOOKS_ON else None
                    private = None
                    if runtime == "host":
                        app = App(args.host, redis, instances, "w", webhooks=receiver)
                    else:
                        # Spin keeps up to 64 Postgres connections per component per process:
                        # two processes' pools outgrow the shared server's 100 (README,
                        # "Deploying at scale"), so Spin gets a server of its own, sized for them.
                        private = PrivatePostgres(SPIN_MAX_CONNECTIONS)
                        app = App(args.host, redis, 0, "w", server=private.server, spin=spin,
                                  spin_instances=instances, pool=64, webhooks=receiver)
                    try:
                        if name in WARMED and not args.cold:
                            warm_up(app, scale)
                        sample = workload(app)
                        app.drain()
                        ok, detail = app.check_invariants(checker)
                        sample["invariants"] = "hold" if ok else detail
                        where = f"{name} ({instances} {runtime})"
                        if not ok:
                            failures.append(f"{where}: invariants broken: {detail}")
                        if sample.pop("ok_extra", True) is False:
                            failures.append(f"{where}: {sample['check']}")
                        if sample["statuses"].get("500"):
                            failures.append(f"{where}: {sample['statuses']['500']} answers were 500")
                        samples.append(sample)
                    finally:
                        app.close()
                        if receiver:
                            receiver.stop()
                        if private:
                            private.stop()
            for name, samples in samples_of.items():
                results["workloads"][f"{name} | {instances} | {runtime}"] = {
                    "instances": instances, "runtime": runtime, "samples": samples,
                    "rps": spread([s["rps"] for s in samples]),
                    "p50_ms": spread([s["p50_ms"] for s in samples]),
                    "p99_ms": spread([s["p99_ms"] for s in samples]),
                }

        if selected(args, "no-op component"):
            log("no-op component")
            results["noop"] = {runtime: {concurrency: measure_noop(args.host, spin, runtime, concurrency,
                                                                 scale["noop_seconds"], runs)
                                         for concurrency in (1, scale["connections"])}
                               for runtime in runtimes}

        if selected(args, "scale-out"):
            results["scale_out"] = scale_out(args, scale, redis, checker, runs, failures)
        if args.only:
            results["failures"] = failures
            suffix = "-only-" + re.sub(r"[^a-z0-9]+", "-", args.only.lower()).strip("-") + ("-cold" if args.cold else "")
            write_report(results, suffix=suffix)
            for key, w in results["workloads"].items():
                log(f"{key}: CPU ms per request {w['samples'][-1].get('cpu_ms_per_request')}")
                log(f"{key}: {w['rps']['median']:.0f} req/s, p50 {w['p50_ms']['median']:.1f} ms, "
                    f"p99 {w['p99_ms']['median']:.1f} ms, {w['samples'][-1]['statuses']}")
            for runtime, by_concurrency in results.get("noop", {}).items():
                for concurrency, n in by_concurrency.items():
                    log(f"no-op on {runtime}, c={concurrency}: {n['rps']['median']:.0f} req/s, "
                        f"p50 {n['p50_us']['median']} µs")
            for key, w in results.get("scale_out", {}).get("workloads", {}).items():
                log(f"scale-out {key}: {w['rps']['median']:.0f} req/s, p99 {w['p99_ms']['median']:.1f} ms, "
                    f"{w['failed']['median']:.0f} failed, {w['server_connections']['median']:.0f} server connections, "
                    f"{w['samples'][-1]['statuses']}")
            if failures:
                for failure in failures:
                    log(f"FAILED: {failure}")
                sys.exit(1)
            return
    finally:
        redis.stop()

    results["failures"] = failures
    write_report(results)
    if failures:
        for failure in failures:
            log(f"FAILED: {failure}")
        sys.exit(1)
    log("all workloads kept every invariant")


# max_connections of the Postgres each Spin workload runs on (default
# settings otherwise, like the shared server the host runs on).
SPIN_MAX_CONNECTIONS = 400

# The sold-out storm (issue 30): one product of SOLD_OUT_UNITS, `order_requests`
# buyers; and the same with RESTOCK_UNITS put back every RESTOCK_EVERY_S.
SOLD_OUT = "sold-out storm (one product, 100 units)"
SOLD_OUT_RESTOCK = "sold-out storm, restocked during it"
# Two shapes beside the issue's, to tell the gate's cost from the sale's: no
# unit at all (every order refused, the gate's own rate), and as many orders
# as the coupon storm (the 100 sales spread over as many requests as its
# 1,000 issues are).
SOLD_OUT_NOTHING_LEFT = "sold-out storm, nothing left (refusals only)"
SOLD_OUT_COUPON_SIZE = "sold-out storm, as many orders as the coupon storm"
SOLD_OUT_SHAPES = (SOLD_OUT, SOLD_OUT_RESTOCK, SOLD_OUT_NOTHING_LEFT, SOLD_OUT_COUPON_SIZE)
SOLD_OUT_UNITS = 100
RESTOCK_UNITS = 10
RESTOCK_EVERY_S = 0.5
# What the sold-out storm's rate is compared with: a coupon drop of the same shape.
COUPON_STORM = "coupon storm (1,000 coupons)"
# The storms that start on warmed instances unless --cold (see warm_up): the
# drops compared with each other. The warm-up's products, users and orders
# are its own (ids no workload uses; the checks leave them out).
WARMED = (COUPON_STORM, *SOLD_OUT_SHAPES)
WARM_UP_FIRST_PRODUCT = 1_000_000
WARM_UP_PRODUCTS = 100
WARM_UP_FIRST_USER = 5_000_001

# The order storm again, its events delivered to a local receiver.
WEBHOOKS_ON = "order storm (100 products), webhooks on"


def ratio(value, limit):
    return f"{100 * value / limit:.0f} %" if limit else "n/a"


def write_report(results, suffix=""):
    directory = os.path.join(ROOT, "bench/results")
    os.makedirs(directory, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    report = (f"{stamp}-smoke" if results["smoke"] else stamp) + suffix
    with open(os.path.join(directory, f"{report}.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    f = results["facts"]
    raw = results["raw"]
    lines = [
        f"# Benchmark {f['date']}{' (smoke)' if results['smoke'] else ''}",
        "",
        f"- machine: {f['cpu']}, {f['cores']} cores, {f['memory_gib']} GiB, Linux {f['kernel']}",
        f"- {f['rustc']}; wasmtime {f['wasmtime']}; {f['postgres']}; {f['redis']}; {f['wrk']}",
        f"- host: `{f['host_binary']}`; load generator and servers share the machine's cores",
        f"- each figure is min / median / max over {results['runs']} run(s); scale: {results['scale']}",
        "- warmed before each run (each instance first served `warm_up_requests` orders of products of their own "
        "and as many coupon issues, at the run's concurrency): "
        + (", ".join(results["warmed"]) if results.get("warmed") else "none (`--cold`)"),
    ]
    if raw:
        lines += [
            "",
            "## Raw limits (no HTTP, no wasm)",
            "",
            f"- coupon `DECIDE` via `EVALSHA` (redis-benchmark, c={results['scale']['connections']}): "
            f"{raw['evalsha_rps']['min']:.0f} / {raw['evalsha_rps']['median']:.0f} / {raw['evalsha_rps']['max']:.0f} req/s",
            f"- order statement chain (pgbench, same SQL, prepared as the host sends it): "
            f"{raw['order_chain_tps']['min']:.0f} / {raw['order_chain_tps']['median']:.0f} / "
            f"{raw['order_chain_tps']['max']:.0f} orders/s",
        ]
    fmt = lambda v, d=0: f"{v['min']:.{d}f} / {v['median']:.{d}f} / {v['max']:.{d}f}"
    if results["workloads"]:
        lines += [
            "",
            "## Workloads: our host and real Spin 4.0.2",
            "",
            "Same components, stores and load, one runtime after the other (Spin on a Postgres of its own "
            f"with max_connections = {SPIN_MAX_CONNECTIONS}: two processes' pools outgrow the shared server's 100). "
            + results.get("spin_missing", "Spin / host is the ratio of the medians."),
            "",
            "| workload | instances | host req/s | host p99 ms | Spin req/s | Spin p99 ms | Spin / host "
            "| host's share of raw limit | statuses (last host run) | invariants |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    rows = {}
    for key, w in results["workloads"].items():
        name = key.split(" | ")[0]
        rows.setdefault((name, w["instances"]), {})[w["runtime"]] = w
    for (name, instances), by_runtime in rows.items():
        host, spin = by_runtime.get("host"), by_runtime.get("spin")
        limit = 0 if not raw else raw["evalsha_rps"]["median"] if name.startswith("coupon") else \
            raw["order_chain_tps"]["median"] if name in ("order storm (100 products)", "hot product") else 0
        held = all(s["invariants"] == "hold" for w in by_runtime.values() for s in w["samples"])
        cell = lambda w, key, d=0: fmt(w[key], d) if w else "–"
        share = ratio(host["rps"]["median"], limit) if host else "–"
        versus = f"{spin['rps']['median'] / host['rps']['median']:.2f}" if host and spin else "–"
        statuses = (host or spin)["samples"][-1]["statuses"]
        lines.append(f"| {name} | {instances} | {cell(host, 'rps')} | {cell(host, 'p99_ms', 1)} | {cell(spin, 'rps')} | "
                     f"{cell(spin, 'p99_ms', 1)} | {versus} | {share} | {statuses} | {'hold' if held else 'BROKEN'} |")
    webhook_rows = []
    for (name, instances), by_runtime in rows.items():
        if name != WEBHOOKS_ON:
            continue
        for runtime, on in by_runtime.items():
            off = rows.get(("order storm (100 products)", instances), {}).get(runtime)
            if not off:
                continue
            within = [s.get("delivered_within_s") for s in on["samples"]]
            cpu = lambda w: statistics.median(sum(s.get("cpu_ms_per_request", {}).values()) for s in w["samples"])
            webhook_rows.append(f"| {runtime} | {instances} | {off['rps']['median']:.0f} | {on['rps']['median']:.0f} | "
                                f"{ratio(on['rps']['median'], off['rps']['median'])} | {cpu(off):.2f} | {cpu(on):.2f} | "
                                f"{ratio(cpu(off), cpu(on))} | {within} |")
    if webhook_rows:
        lines += ["", "## Webhooks on and off (the order storm)", "",
                  "Each paid order's `order.paid` is sent to a local receiver answering `204` right after the "
                  "order's answer (goal: at least 90 % of the orders/s with webhooks off, and every event "
                  "`DELIVERED` within 10 s of the storm's end).", "",
                  "CPU is what every process of the run spent (Postgres, the runtime, Redis, wrk, the receiver) "
                  "per answered request; its off / on ratio is what the throughput ratio tends to on a "
                  "CPU-bound machine, without the run-to-run noise.", "",
                  "| runtime | instances | off orders/s | on orders/s | on / off | CPU ms off | CPU ms on "
                  "| CPU off / on | all delivered after (s, per run) |",
                  "|---|---|---|---|---|---|---|---|---|"] + webhook_rows
    gate_rows = []
    for (name, instances), by_runtime in rows.items():
        if name not in SOLD_OUT_SHAPES:
            continue
        for runtime, storm in by_runtime.items():
            coupon = rows.get((COUPON_STORM, instances), {}).get(runtime)
            checks = [s["check"] for s in storm["samples"]]
            gate_rows.append(
                f"| {name} | {runtime} | {instances} | {storm['rps']['median']:.0f} | "
                f"{coupon['rps']['median']:.0f} | {ratio(storm['rps']['median'], coupon['rps']['median'])} | "
                if coupon else f"| {name} | {runtime} | {instances} | {storm['rps']['median']:.0f} | – | – | ")
            gate_rows[-1] += (f"{[c['sold'] for c in checks]} | {[c['restocked'] for c in checks]} | "
                              f"{[c['orders_written'] for c in checks]} |")
    if gate_rows:
        lines += ["", "## The sold-out gate beside the coupon storm", "",
                  f"{results['scale']['order_requests']} orders of one unit for one product of {SOLD_OUT_UNITS} "
                  f"units (with restocks: {RESTOCK_UNITS} units put back every {RESTOCK_EVERY_S} s during the "
                  "storm; nothing left: 0 units; as many orders as the coupon storm: "
                  f"{results['scale']['coupon_requests']}), beside the coupon storm of the same run (goal: the "
                  "sold-out storm at least 80 % of the coupon storm's rate on each runtime). Orders written: every "
                  "row in `orders` (the sold ones, and those a reserve refused when the last units went between a "
                  "price read and the reserve).", "",
                  "| workload | runtime | instances | req/s | coupon storm req/s | share | units sold (per run) "
                  "| restocked | orders written |",
                  "|---|---|---|---|---|---|---|---|---|"] + gate_rows
    section = results.get("scale_out")
    if section and "skipped" in section:
        lines += ["", "## Scale-out through a pooler", "", f"- skipped: {section['skipped']}"]
    elif section:
        lines += ["", f"## Scale-out: four processes, one Postgres with max_connections = {section['max_connections']}", "",
                  f"{section['host_instances']} host and {section['spin_instances']} real Spin 4.0.2 processes, each with "
                  f"Spin's pools of up to 64 connections per component, c={section['connections']} in all; "
                  f"directly, then through PgBouncer 1.25 (transaction mode, `max_prepared_statements`, "
                  f"pool {section['pool']}).", "",
                  "| workload | Postgres reached | req/s | p99 ms | failed requests | server connections after | invariants |",
                  "|---|---|---|---|---|---|---|"]
        for key, w in section["workloads"].items():
            name, via = key.split(" | ")
            held = all(s["invariants"] == "hold" for s in w["samples"])
            lines.append(f"| {name} | {via} | {fmt(w['rps'])} | {fmt(w['p99_ms'], 1)} | {fmt(w['failed'])} | "
                         f"{fmt(w['server_connections'])} | {'hold' if held else 'BROKEN'} |")
        if "per_request" in section:
            c = section["per_request"]
            lines += ["", f"Connections per request on one real Spin 4.0.2 process ({c['requests']} requests each, "
                      "one at a time): Redis connections opened per request (Spin opens a new one on every `open`); "
                      f"afterwards the process still held {c['postgres_held_after']} Postgres connections.", "",
                      "| request | Redis connections per request |", "|---|---|"]
            lines += [f"| {name} | {n:.1f} |" for name, n in c["redis_per_request"].items()]
    if "noop" in results:
        lines += ["", "## Runtime overhead (the no-op component, wrk on loopback)", "",
                  "| runtime | concurrency | req/s | p50 µs (wrk and loopback included) |", "|---|---|---|---|"]
        for runtime, by_concurrency in results["noop"].items():
            for concurrency, n in by_concurrency.items():
                lines.append(f"| {runtime} | {concurrency} | {fmt(n['rps'])} | {fmt(n['p50_us'])} |")
        goal = results["noop"].get("host", {}).get(results["scale"]["connections"])
        coupon = results["workloads"].get("coupon storm (1,000 coupons) | 1 | host")
        if goal and coupon:
            lines += ["", f"Coupon storm on one host instance: {100 * coupon['rps']['median'] / goal['rps']['median']:.0f} % "
                          f"of the host's no-op throughput at the same concurrency ({results['scale']['connections']})."]
    lines += ["", "## Component sizes (release .wasm)", ""]
    lines += [f"- {name}: {size / 1024:.0f} KiB" for name, size in f["wasm_bytes"].items()]
    if results["failures"]:
        lines += ["", "## FAILURES", ""] + [f"- {x}" for x in results["failures"]]
    with open(os.path.join(directory, f"{report}.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    log(f"report written to bench/results/{report}.md")


if __name__ == "__main__":
    main()
