//! SPEC "Operations", scheduled jobs over HTTP, end to end where no cron
//! trigger runs (the host, Spin 3.6.3, and real Spin 4.0.2 serving
//! `spin.akamai.toml`): the job routes called as Akamai Functions'
//! scheduler calls them — a plain `GET`, no header, the key in the query
//! string — answer only with the key, never log it, and end each run
//! within 25 s however large the backlog, the rest left to the next run.

use super::*;

/// The key the scheduler sends in these tests.
const JOBS_KEY: &str = "jobs-key-3f9c2a7d51e0-of-the-scheduler";
/// One character off, and a prefix: both refused.
const WRONG_KEYS: [&str; 2] = ["jobs-key-3f9c2a7d51e0-of-the-schedulex", "jobs-key-3f9c2a7d51e0"];
/// The most one run of a job may take (the platform stops a request at 30 s).
const JOB_LIMIT: Duration = Duration::from_secs(25);
/// Orders one recovery run takes up (`BATCH` in `order_flow::recovery`).
const RECOVERY_BATCH: i64 = 500;

/// `GET /api/v1/jobs/<job>` as a scheduler sends it: no header at all.
async fn job(app: &TestApp, job: &str, key: Option<&str>) -> Reply {
    let query = key.map_or_else(String::new, |key| format!("?key={key}"));
    named(
        app.request(
            Method::GET,
            &format!("/api/v1/jobs/{job}{query}"),
            None,
            &[],
            None,
        )
        .await
        .unwrap(),
    )
}

/// `count` orders left `PENDING` an hour ago by requests that died before
/// any step after the insert (nothing reserved, nothing debited): recovery
/// rolls each back.
async fn stale_orders(app: &TestApp, count: i64) {
    let pg = app.pg().await.unwrap();
    let product = new_product(app, 1_000, 10).await;
    pg.execute(
        "WITH o AS (
            INSERT INTO orders (user_id, idempotency_key, request_fingerprint, status, total_amount, created_at)
            SELECT g, 'died-' || g, 'died', 'PENDING', 1000, now() - interval '1 hour'
            FROM generate_series(1, $1::int8) g RETURNING id)
        INSERT INTO order_items (order_id, product_id, quantity, unit_price) SELECT id, $2, 1, 1000 FROM o",
        &[&count, &product],
    )
    .await
    .unwrap();
}

/// The recovery summary of a run that rolled back `rolled_back` orders and
/// found nothing in Redis to repair.
fn rolled_back(rolled_back: i64) -> Value {
    json!({
        "examined": rolled_back,
        "rolledForward": 0,
        "rolledBack": rolled_back,
        "skipped": 0,
        "repaired": {"couponUnitsReleased": 0, "couponHoldersRecounted": 0, "popularCountsCorrected": 0}
    })
}

/// The routes are off (`404`) until `jobs_key` is set; then a missing or
/// wrong key is `401`, the right one runs the batch and answers the admin
/// route's summary; recovery's lock is honoured (`409`); no method but `GET`;
/// neither the key nor a wrong one is in any log line.
pub(crate) async fn job_routes_answer_a_plain_get_with_the_key(runtime: Runtime) {
    let off = start(&runtime, 1, &[]).await;
    for name in ["recovery", "deliver"] {
        job(&off, name, Some(JOBS_KEY))
            .await
            .assert_problem(404, "NOT_FOUND");
        job(&off, name, None).await.assert_problem(404, "NOT_FOUND");
    }
    drop(off);

    let app = start(&runtime, 1, &[("SPIN_VARIABLE_JOBS_KEY", JOBS_KEY)]).await;
    stale_orders(&app, 3).await;
    for name in ["recovery", "deliver"] {
        job(&app, name, None).await.assert_problem(401, "UNAUTHORIZED");
        job(&app, name, Some(""))
            .await
            .assert_problem(401, "UNAUTHORIZED");
        for wrong in WRONG_KEYS {
            job(&app, name, Some(wrong))
                .await
                .assert_problem(401, "UNAUTHORIZED");
        }
        let posted = named(
            app.request(
                Method::POST,
                &format!("/api/v1/jobs/{name}?key={JOBS_KEY}"),
                None,
                &[],
                None,
            )
            .await
            .unwrap(),
        );
        posted.assert_problem(405, "METHOD_NOT_ALLOWED");
    }
    // Nothing ran for the refused calls: the three orders are still pending.
    let run = job(&app, "recovery", Some(JOBS_KEY)).await;
    assert_eq!(run.status, 200, "{}", run.text);
    assert_eq!(run.body, rolled_back(3));
    // The admin route answers the same shape.
    let admin_run = admin_post(&app, "/api/v1/admin/recovery/run", json!({})).await;
    assert_eq!(admin_run.body, rolled_back(0), "{}", admin_run.text);

    // Another runner holds the lock.
    let mut redis = app.redis().unwrap();
    let lock = app.redis_key("lock:order-recovery");
    let _: () = redis.set(&lock, "another-runner").unwrap();
    job(&app, "recovery", Some(JOBS_KEY))
        .await
        .assert_problem(409, "RECOVERY_IN_PROGRESS");
    let _: () = redis.del(&lock).unwrap();

    // Webhooks are off here: the delivery job sends nothing and says so.
    let delivered = job(&app, "deliver", Some(JOBS_KEY)).await;
    assert_eq!(delivered.status, 200, "{}", delivered.text);
    assert_eq!(
        delivered.body,
        json!({"attempted": 0, "delivered": 0, "failed": 0})
    );

    let logs = app.logs();
    assert!(
        logs.contains("/api/v1/jobs/recovery"),
        "the job runs are logged:\n{logs}"
    );
    for key in [JOBS_KEY].iter().chain(WRONG_KEYS.iter()) {
        assert!(!logs.contains(key), "a log holds the key {key:?}:\n{logs}");
    }
    check_invariants(&app).await;
}

/// Events whose attempts so far all failed.
async fn events_never_delivered(app: &TestApp) -> (i64, i64) {
    let pg = app.pg().await.unwrap();
    let row = pg
        .query_one(
            "SELECT count(*) FILTER (WHERE attempts = 0), count(*) FILTER (WHERE status = 'PENDING') FROM order_events",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// One run of each job ends within 25 s however large the backlog; the
/// next run goes on where it stopped, and nothing is done twice: recovery
/// takes up 500 orders a run and gives the events it made their first
/// attempt right after its answer; delivery starts rounds for 12 s (here to
/// a receiver answering after 3 s), and every event is delivered once.
pub(crate) async fn a_backlog_larger_than_one_job_run_is_finished_by_the_next(runtime: Runtime) {
    let receiver = Receiver::start().unwrap();
    let hooks = receiver.env();
    let mut env: Vec<(&str, &str)> = hooks.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SPIN_VARIABLE_JOBS_KEY", JOBS_KEY));
    let app = start(&runtime, 1, &env).await;
    let backlog = RECOVERY_BATCH + 20;
    stale_orders(&app, backlog).await;
    // The receiver is down for now: every first attempt fails.
    receiver.control(json!({"status": 500})).await.unwrap();

    let first = job(&app, "recovery", Some(JOBS_KEY)).await;
    let answered = Instant::now();
    assert_eq!(first.body, rolled_back(RECOVERY_BATCH), "{}", first.text);
    // SPEC §9: the first attempt within 2 s of the run that made the event.
    receiver
        .wait_for(Duration::from_secs(2), |deliveries| !deliveries.is_empty())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no attempt within 2 s of the recovery job ({:?})",
                answered.elapsed()
            )
        });
    let second = job(&app, "recovery", Some(JOBS_KEY)).await;
    assert_eq!(
        second.body,
        rolled_back(backlog - RECOVERY_BATCH),
        "{}",
        second.text
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while events_never_delivered(&app).await != (0, backlog) {
        assert!(
            Instant::now() < deadline,
            "first attempts: {:?}",
            events_never_delivered(&app).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Up again, slowly; the retries are due 5 s after the failures.
    receiver
        .control(json!({"status": 204, "delay": 3}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let started = Instant::now();
    let slow = job(&app, "deliver", Some(JOBS_KEY)).await;
    let took = started.elapsed();
    assert_eq!(slow.status, 200, "{}", slow.text);
    assert!(took < JOB_LIMIT, "one delivery run took {took:?}");
    let attempted = slow.body["attempted"].as_i64().unwrap();
    assert!(attempted > 0 && attempted < backlog, "{}", slow.text);
    assert_eq!(slow.body["delivered"], attempted, "{}", slow.text);
    // More than one run's worth is left (the second recovery job's attempts
    // after its answer may have taken some too: leases keep them apart).
    assert!(events_never_delivered(&app).await.1 > 0);

    receiver.control(json!({"delay": 0})).await.unwrap();
    let rest = job(&app, "deliver", Some(JOBS_KEY)).await;
    assert_eq!(rest.body["failed"], 0, "{}", rest.text);
    assert_eq!(rest.body["attempted"], rest.body["delivered"], "{}", rest.text);
    // What is still pending is in flight from the recovery job's attempts
    // after its answer (leased, so not the delivery job's): it lands too.
    let deadline = Instant::now() + Duration::from_secs(15);
    while events_never_delivered(&app).await.1 > 0 {
        assert!(
            Instant::now() < deadline,
            "{} events never delivered",
            events_never_delivered(&app).await.1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered: Vec<_> = receiver
        .deliveries()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.answered == 204)
        .collect();
    let ids: std::collections::BTreeSet<_> = delivered.iter().map(|d| d.webhook_id.clone()).collect();
    assert_eq!(delivered.len() as i64, backlog, "each event delivered once");
    assert_eq!(ids.len() as i64, backlog);
    assert!(delivered
        .iter()
        .all(|d| d.verified && d.event_type() == "order.cancelled"));
    check_invariants(&app).await;
}
