//! The local host behaves like Spin: routing, `spin-*` headers, variables,
//! outbound rules, Postgres and Redis semantics, the cron trigger — checked
//! through the real probe components against real Postgres and Redis, and
//! every check run twice: on our host and on real Spin 4.0.2 (skipped with a
//! line where no Spin is at hand). A check that only our host passes is a
//! defect of the host.

use edge_tests::private::PrivateRedis;
use edge_tests::spin::{SpinInstall, SpinVersion};
use edge_tests::{send, workspace_dir, Host, RedisSlot, TestDb};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Where a check runs.
#[derive(Clone)]
enum On {
    Host,
    Spin(SpinInstall),
}

/// Each check as a module with two tests, `on_host` and `on_spin`.
macro_rules! conformance {
    ($(async fn $name:ident($on:ident: On) $body:block)*) => {$(
        mod $name {
            use super::*;

            async fn check($on: On) $body

            #[tokio::test(flavor = "multi_thread")]
            async fn on_host() {
                check(On::Host).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn on_spin() {
                if let Some(spin) = SpinInstall::get(SpinVersion::V4_0_2) {
                    check(On::Spin(spin)).await
                }
            }
        }
    )*};
}

fn probe_manifest() -> PathBuf {
    workspace_dir().join("tests/manifests/probe.toml")
}

struct Probe {
    host: Host,
    client: reqwest::Client,
    redis: RedisSlot,
    _db: TestDb,
}

impl Probe {
    async fn start(on: &On, extra: &[(&str, &str)]) -> Probe {
        let db = TestDb::create().await.unwrap();
        let redis = RedisSlot::claim().unwrap();
        let mut env = vec![
            ("SPIN_VARIABLE_PG_URL".to_owned(), db.url.clone()),
            ("SPIN_VARIABLE_REDIS_URL".to_owned(), redis.url.clone()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let host = match on {
            On::Host => Host::start(&probe_manifest(), &env).unwrap(),
            On::Spin(spin) => Host::start_spin(spin, &probe_manifest(), &env, None).unwrap(),
        };
        Probe {
            host,
            client: reqwest::Client::new(),
            redis,
            _db: db,
        }
    }

    async fn get(&self, path: &str) -> edge_tests::Reply {
        self.get_with(path, &[]).await
    }

    async fn get_owned(&self, path: String) -> edge_tests::Reply {
        self.get(&path).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> edge_tests::Reply {
        let url = format!("{}{path}", self.host.base_url);
        send(&self.client, reqwest::Method::GET, &url, None, headers, None)
            .await
            .unwrap()
    }
}

fn headers_of(reply: &Value) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for pair in reply["headers"].as_array().unwrap() {
        map.entry(pair[0].as_str().unwrap().to_owned())
            .or_default()
            .push(pair[1].as_str().unwrap().to_owned());
    }
    map
}

fn one<'a>(headers: &'a HashMap<String, Vec<String>>, name: &str) -> &'a str {
    let values = headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"));
    assert_eq!(values.len(), 1, "{name}: {values:?}");
    &values[0]
}

conformance! {
async fn routing_follows_spin_precedence_and_sets_spin_headers(on: On) {
    let probe = Probe::start(&on, &[]).await;
    let addr = probe.host.base_url.trim_start_matches("http://").to_owned();

    // Wildcard route: the longest prefix wins over `/...`.
    let reply = probe.get("/echo/42/x?q=1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["component"], "probe");
    assert_eq!(reply.body["path"], "/echo/42/x", "the guest sees the full path");
    assert_eq!(reply.body["uri"], format!("http://{addr}/echo/42/x?q=1"));
    let headers = headers_of(&reply.body);
    assert_eq!(
        one(&headers, "spin-full-url"),
        format!("http://{addr}/echo/42/x?q=1")
    );
    assert_eq!(one(&headers, "spin-path-info"), "/42/x");
    assert_eq!(one(&headers, "spin-matched-route"), "/echo/...");
    assert_eq!(one(&headers, "spin-raw-component-route"), "/echo/...");
    assert_eq!(one(&headers, "spin-component-route"), "/echo");
    assert_eq!(one(&headers, "spin-base-path"), "/");
    assert!(one(&headers, "spin-client-addr").starts_with("127.0.0.1:"));

    // An exact route beats the wildcard that also matches it, with or without a trailing slash.
    for path in ["/echo/exact", "/echo/exact/"] {
        let reply = probe.get(path).await;
        assert_eq!(reply.body["component"], "probe-b", "{path}");
        let headers = headers_of(&reply.body);
        assert_eq!(one(&headers, "spin-path-info"), "");
        assert_eq!(one(&headers, "spin-component-route"), "/echo/exact");
    }

    // The wildcard route matches its own prefix; path-info keeps the raw slashes.
    assert_eq!(
        one(&headers_of(&probe.get("/echo").await.body), "spin-path-info"),
        ""
    );
    assert_eq!(
        one(&headers_of(&probe.get("/echo/").await.body), "spin-path-info"),
        "/"
    );

    // `:param` segments rank between exact and wildcard and become spin-path-match-*.
    let reply = probe.get("/users/7/orders").await;
    assert_eq!(reply.body["component"], "probe-b");
    let headers = headers_of(&reply.body);
    assert_eq!(one(&headers, "spin-path-match-user-id"), "7");
    assert_eq!(one(&headers, "spin-path-info"), "/orders");
    assert_eq!(one(&headers, "spin-matched-route"), "/users/:user_id/...");

    // Everything else falls to `/...`; duplicates keep the last declaration.
    assert_eq!(probe.get("/anything/else").await.body["component"], "probe");
    assert_eq!(probe.get("/dup").await.body["component"], "probe-b");

    // Spin's reserved paths.
    let health = probe.get("/.well-known/spin/health").await;
    assert_eq!((health.status, health.text.as_str()), (200, "OK"));
    assert_eq!(probe.get("/.well-known/spin/nope").await.status, 404);

    // A header value that is not UTF-8 never reaches a component: a bare 500.
    let latin1 = probe
        .client
        .get(format!("{}/echo/42", probe.host.base_url))
        .header("x-name", reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(latin1.status(), 500);
    assert!(latin1.headers().get("request-id").is_none());
}

async fn variables_resolve_from_environment_over_defaults_and_are_per_component(on: On) {
    let probe = Probe::start(&on, &[]).await;
    assert_eq!(
        probe.get("/var/greeting").await.body["ok"],
        "hello, world",
        "manifest default"
    );
    let undefined = probe.get("/var/pg_host").await;
    assert_eq!(
        undefined.body["error"],
        r#"Error::Undefined("no variable for \"probe\".\"pg_host\"")"#
    );
    let invalid = probe.get("/var/Bad").await;
    assert!(
        invalid.body["error"]
            .as_str()
            .unwrap()
            .starts_with("Error::InvalidName("),
        "{}",
        invalid.text
    );

    let overridden = Probe::start(&on, &[("SPIN_VARIABLE_GREETING", "annyeong")]).await;
    assert_eq!(
        overridden.get("/var/greeting").await.body["ok"],
        "annyeong, world"
    );
}

async fn a_required_variable_without_value_stops_start_up(on: On) {
    let manifest = probe_manifest().to_string_lossy().into_owned();
    let mut command = match &on {
        On::Host => {
            let mut command = Command::new(edge_tests::host_binary());
            command.args(["-f", &manifest, "up", "--listen", "127.0.0.1:0"]);
            command
        }
        On::Spin(spin) => {
            let mut command = Command::new(&spin.bin);
            command
                .args(["up", "-f", &manifest, "--listen", "127.0.0.1:0"])
                .env("SPIN_DATA_DIR", &spin.data_dir);
            command
        }
    };
    let output = command
        .env("SPIN_VARIABLE_PG_URL", "postgres://x@127.0.0.1/x")
        .env_remove("SPIN_VARIABLE_REDIS_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#"no provider resolved required variable(s): [Key("redis_url")]"#),
        "{stderr}"
    );
}

async fn outbound_hosts_not_allowed_fail_like_spin(on: On) {
    let probe = Probe::start(&on, &[]).await;
    assert_eq!(
        probe.get("/pg/denied").await.body["error"],
        r#"Some(Error::ConnectionFailed("address postgres://127.0.0.2:5432 is not permitted"))"#
    );
    assert_eq!(
        probe.get("/redis/denied").await.body["error"],
        "Some(Error::InvalidAddress)"
    );
    assert!(probe
        .host
        .logs()
        .contains("Outbound network destination not allowed"));
}

async fn outbound_http_to_a_host_not_allowed_is_denied(on: On) {
    let probe = Probe::start(&on, &[]).await;
    let body = probe.get("/http/out").await.body;
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("HttpRequestDenied"), "{body}");
}

async fn outbound_http_is_sent_and_fails_as_on_spin(on: On) {
    // A receiver that answers 204 and keeps what it was sent, one that
    // accepts and never answers, and a port nobody listens on.
    let answering = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (answering_at, silent_at) = (answering.local_addr().unwrap(), silent.local_addr().unwrap());
    let received = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = answering.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("{\"probe\": true}") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buffer[..read]);
        }
        stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
        String::from_utf8_lossy(&seen).to_ascii_lowercase()
    });
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            let (stream, _) = silent.accept().await.unwrap();
            open.push(stream);
        }
    });
    let probe = Probe::start(&on, &[]).await;
    let post = |at: std::net::SocketAddr| probe.get_owned(format!("/http/post?url=http://{at}/hook"));
    let (answered, timed_out, refused) = tokio::join!(post(answering_at), post(silent_at), post(nobody));
    assert_eq!(answered.body["status"], 204, "{}", answered.text);
    let head = received.await.unwrap();
    for line in [
        format!("host: {answering_at}"),
        "content-type: application/json".into(),
        "webhook-id: probe-event".into(),
    ] {
        assert!(head.contains(&line), "no {line:?} in {head}");
    }
    assert!(head.starts_with("post /hook http/1.1\r\n"), "{head}");
    assert_eq!(refused.body["error"], "ConnectionRefused", "{}", refused.text);
    assert_eq!(timed_out.body["error"], "ConnectionReadTimeout", "{}", timed_out.text);
    let waited = timed_out.body["ms"].as_u64().unwrap();
    assert!((9_500..15_000).contains(&waited), "gave up after {waited} ms");
}

async fn a_guest_runs_to_its_end_when_its_client_goes_away(on: On) {
    use tokio::io::AsyncWriteExt;
    let probe = Probe::start(&on, &[]).await;
    let address = probe.host.base_url.trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    client
        .write_all(format!("GET /pg/finish HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(client);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let db = edge_tests::connect(&probe._db.url).await.unwrap();
    let finished: i64 = db
        .query_one("SELECT count(*) FROM probe_finished", &[])
        .await
        .map(|row| row.get(0))
        .unwrap_or(0);
    assert_eq!(finished, 1, "the guest stopped when its client went away");
}

async fn postgres_values_round_trip_with_spin_conversions(on: On) {
    let probe = Probe::start(&on, &[]).await;
    let reply = probe.get("/pg/roundtrip").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = &reply.body;
    assert_eq!(body["inserted"], 1);
    let columns: Vec<String> = body["result"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}:{}", c[0].as_str().unwrap(), c[1].as_str().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            "i2:Int16",
            "i4:Int32",
            "i8:Int64",
            "t:Str",
            "b:Boolean",
            "ts:Datetime",
            "u:Uuid",
            "n:Decimal",
            "j:Jsonb",
            "v:Str"
        ]
        .map(|c| c.replace(':', ":DbDataType::"))
    );
    let values: Vec<&str> = body["result"]["rows"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(values[0], "DbValue::Int16(-7)");
    assert_eq!(values[1], "DbValue::Int32(2000000000)");
    assert_eq!(values[2], "DbValue::Int64(9007199254740993)");
    assert_eq!(values[3], r#"DbValue::Str("héllo")"#);
    assert_eq!(values[4], "DbValue::Boolean(true)");
    assert_eq!(
        values[5],
        "DbValue::Datetime((2026, 11, 28, 7, 42, 14, 123456000))"
    );
    assert_eq!(
        values[6],
        r#"DbValue::Uuid("8f14e45f-ceea-467f-a8f2-4f6c3f1b2a10")"#
    );
    assert_eq!(
        values[7], r#"DbValue::Decimal("1234.50")"#,
        "numeric keeps its scale"
    );
    let jsonb = &values[8];
    assert!(jsonb.starts_with("DbValue::Jsonb("), "{jsonb}");
    assert_eq!(values[9], r#"DbValue::Str("short")"#);
    let nulls = body["result"]["rows"][1].as_array().unwrap();
    assert!(nulls.iter().all(|v| v == "DbValue::DbNull"), "{nulls:?}");
    assert!(
        body["int64_into_int4"].as_str().unwrap().contains("WrongType"),
        "no parameter coercion: {}",
        body["int64_into_int4"]
    );
}

async fn timestamptz_cannot_be_read_as_on_spin_but_utc_timestamps_can(on: On) {
    let probe = Probe::start(&on, &[]).await;
    let body = probe.get("/pg/timestamptz").await.body;
    let raw = body["raw"].as_str().unwrap();
    assert!(
        raw.contains("QueryFailed(QueryError::Text(") && raw.contains("timestamptz"),
        "{raw}"
    );
    assert_eq!(
        body["utc"]["rows"][0][0],
        "DbValue::Datetime((2026, 11, 27, 22, 42, 14, 0))"
    );
}

async fn postgres_errors_carry_what_spin_gives(on: On) {
    // What a failed statement tells a guest: an `execute` carries the
    // SQLSTATE; a `query` that fails while it runs carries only text (Spin
    // reads rows as a stream and reports a failure there as words), so the
    // app can never branch on a code there; a `query` refused while binding
    // its parameters carries the code again.
    let probe = Probe::start(&on, &[]).await;
    let body = probe.get("/pg/unique").await.body;
    let execute = &body["execute"];
    assert_eq!(execute["kind"], "db-error", "{body}");
    assert_eq!(execute["code"], "23505", "{body}");
    assert_eq!(execute["severity"], "ERROR");
    let extras = execute["extras"].as_array().unwrap();
    assert!(
        extras
            .iter()
            .any(|e| e[0] == "constraint" && e[1] == "probe_unique_pkey"),
        "{extras:?}"
    );
    let query = &body["query"];
    assert_eq!(query["kind"], "text", "{body}");
    let text = query["text"].as_str().unwrap();
    assert!(
        text.starts_with("Error::QueryFailed(QueryError::DbError(DbError {")
            && text.contains(r#"code: "23505""#),
        "{text}"
    );
    let bind = &body["bind"];
    assert_eq!(bind["kind"], "db-error", "{body}");
    assert_eq!(bind["code"], "22021", "{body}");
}

async fn a_new_redis_connection_carries_no_earlier_session(on: On) {
    // A private server: the probe moves to database 15 on purpose.
    let redis = PrivateRedis::start().unwrap();
    let probe = Probe::start(&on, &[("SPIN_VARIABLE_REDIS_URL", &redis.url())]).await;
    let body = probe.get("/redis/session").await.body;
    assert_eq!(body["selected"], r#"Ok([RedisResult::Status("OK")])"#, "{body}");
    assert_eq!(body["planted"], "Ok(())", "{body}");
    assert_eq!(body["began"], r#"Ok([RedisResult::Status("OK")])"#, "{body}");
    // Not `QUEUED` (a transaction left open) and not database 15's key.
    assert_eq!(body["set"], r#"Ok([RedisResult::Status("OK")])"#, "{body}");
    assert_eq!(body["get_planted"], "Ok(None)", "{body}");
}

async fn redis_answers_again_once_it_is_back(on: On) {
    let mut redis = PrivateRedis::start().unwrap();
    let probe = Probe::start(&on, &[("SPIN_VARIABLE_REDIS_URL", &redis.url())]).await;
    for _ in 0..3 {
        assert_eq!(probe.get("/redis/ops").await.body["set"], "Ok(())");
    }
    redis.crash();
    let down = probe.get("/redis/ops").await;
    assert_eq!(down.status, 500, "a probe that cannot open Redis panics: {:?}", down.body);
    redis.resume().unwrap();
    // The connections dropped before the restart are never handed out again.
    for _ in 0..3 {
        assert_eq!(probe.get("/redis/ops").await.body["set"], "Ok(())");
    }
}

async fn redis_operations_match_spin(on: On) {
    let probe = Probe::start(&on, &[]).await;
    let body = probe.get("/redis/ops").await.body;
    let expect = [
        ("set", "Ok(())"),
        ("get", "Ok(Some([118, 49]))"),
        ("get_missing", "Ok(None)"),
        ("incr", "Ok(1)"),
        ("incr_again", "Ok(2)"),
        ("sadd", "Ok(2)"),
        ("smembers", r#"Ok(["a", "b"])"#),
        ("srem", "Ok(1)"),
        ("del", "Ok(2)"),
        (
            "eval",
            r#"Ok([RedisResult::Int64(42), RedisResult::Binary([120]), RedisResult::Int64(1), RedisResult::Int64(2)])"#,
        ),
        ("status", r#"Ok([RedisResult::Status("OK")])"#),
    ];
    for (op, expected) in expect {
        assert_eq!(body[op], expected, "{op}: {body}");
    }
    assert!(
        body["incr_wrong_type"]
            .as_str()
            .unwrap()
            .starts_with("Err(Error::Other("),
        "{body}"
    );
    assert!(
        body["server_error"]
            .as_str()
            .unwrap()
            .starts_with("Err(Error::Other("),
        "{body}"
    );
}

async fn cron_trigger_fires_the_component_on_schedule(on: On) {
    let probe = Probe::start(&on, &[]).await;
    let mut redis = redis::Client::open(probe.redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let fired: i64 = redis::cmd("GET")
        .arg("cron-probe:fired")
        .query(&mut redis)
        .unwrap();
    assert!(fired >= 2, "fired {fired} times in 3.5 s on a 1 s schedule");
    let timestamp: u64 = redis::cmd("GET")
        .arg("cron-probe:timestamp")
        .query(&mut redis)
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(timestamp) <= 5,
        "metadata.timestamp is Unix seconds: {timestamp} vs {now}"
    );
}

async fn sigterm_shuts_down_gracefully(on: On) {
    let mut probe = Probe::start(&on, &[]).await;
    assert_eq!(probe.get("/echo/x").await.status, 200);
    let status = probe.host.terminate().unwrap();
    assert!(status.success(), "{status:?}: {}", probe.host.logs());
}

async fn a_query_without_rows_never_answers_on_spin_4_and_fails_fast_here(on: On) {
    let probe = Probe::start(&on, &[]).await;
    let url = format!("{}/pg/empty", probe.host.base_url);
    let answer = tokio::time::timeout(Duration::from_secs(5), probe.client.get(&url).send()).await;
    match on {
        On::Host => {
            let body: Value = answer.expect("the host answers at once").unwrap().json().await.unwrap();
            let error = body["error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with("Error::QueryFailed(QueryError::Text(") && error.contains("spinframework/spin#3671"),
                "{body}"
            );
            assert!(probe.host.logs().contains("spin#3671"), "logged loudly: {}", probe.host.logs());
        }
        // Pinned, so that the host's refusal stays justified: the day this
        // fails, the Spin in use has the fix (spinframework/spin#3673).
        On::Spin(_) => assert!(
            answer.is_err(),
            "Spin 4.0.2 answered a query without rows: {answer:?}"
        ),
    }
}

async fn postgres_tls_is_negotiated_as_spin_does(on: On) {
    let probe = Probe::start(&on, &[]).await;
    let open = |url: String| {
        let probe = &probe;
        async move {
            let reply = probe.get_with("/pg/open", &[("x-pg-url", &url)]).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply.body
        }
    };
    // The shared server has `ssl = on` with a self-signed certificate (the
    // Debian default): every mode but `disable` tries TLS and fails to verify it.
    let shared = format!("{}/postgres", edge_tests::pg_server_url());
    for mode in ["", "?sslmode=prefer", "?sslmode=require"] {
        let body = open(format!("{shared}{mode}")).await;
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("Error::ConnectionFailed(") && error.contains("certificate verify failed"),
            "{mode:?}: {body}"
        );
    }
    assert_eq!(open(format!("{shared}?sslmode=disable")).await, serde_json::json!({ "ok": true }));

    // A server without TLS: the default connects in clear, `require` refuses it.
    let server = edge_tests::private::PrivatePostgres::start().unwrap();
    let clear = format!("{}/postgres", server.server_url());
    assert_eq!(open(clear.clone()).await, serde_json::json!({ "ok": true }));
    assert_eq!(open(format!("{clear}?sslmode=disable")).await, serde_json::json!({ "ok": true }));
    let body = open(format!("{clear}?sslmode=require")).await;
    assert!(
        body["error"].as_str().unwrap_or_default().starts_with("Error::ConnectionFailed("),
        "{body}"
    );
}
}

/// A difference from Spin in cost only (docs/host-vs-spin.md): a dropped
/// connection is handed to the next `open` instead of a new TCP connection
/// each time (Spin connects on every `open`), so a run of requests needs only
/// as many connections as run at once.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_reuses_dropped_redis_connections() {
    let redis = PrivateRedis::start().unwrap();
    let probe = Probe::start(&On::Host, &[("SPIN_VARIABLE_REDIS_URL", &redis.url())]).await;
    let received = || {
        let mut control = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let info: String = redis::cmd("INFO").arg("stats").query(&mut control).unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let before = received();
    for _ in 0..20 {
        assert_eq!(probe.get("/redis/ops").await.body["set"], "Ok(())");
    }
    // One connection for the probe's requests, one for each count here.
    assert_eq!(received() - before, 2);
}
