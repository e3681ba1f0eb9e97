//! The job queue under load, and approval-to-start latency.
//!
//! `cargo bench --bench queue` (needs Postgres at TEST_DATABASE_URL, default
//! postgres://postgres@127.0.0.1:5432/postgres; also runs SQLite for comparison):
//! 1. claims per second: N queued jobs, 4 workers claiming and finishing them as fast as the
//!    store allows (no process is started, so this is the queue's own cost);
//! 2. click to start: a signed Approve click on the real server until the worker has claimed the
//!    job (its `started_at`), 100 times.

use std::{collections::BTreeMap, time::Instant};

use pantheon::{
    domain::job::{JobStatus, NewJob},
    signature::{HmacKey, sign_slack},
    store::Store,
};
use support::fresh_postgres;
use time::OffsetDateTime;

mod support;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const JOBS: usize = 4000;
const WORKERS: usize = 4;

async fn claims_per_second(url: &str) -> f64 {
    let store = Store::connect(url).await.unwrap();
    store.migrate().await.unwrap();
    let now = OffsetDateTime::now_utc();
    for i in 0..JOBS {
        let job = NewJob {
            runbook: "noop".into(),
            params: BTreeMap::new(),
            binding: "b".into(),
            target: format!("t{}", i % 64),
            requested_by: "U1".into(),
            approval_id: None,
            channel: "C1".into(),
            thread_ref: None,
            retry_safe: false,
            correlation_id: format!("c{i}"),
            created_at: now,
            overrides: None,
        };
        store.enqueue_job(&job, |_| Vec::new()).await.unwrap();
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("bench/{w}");
            let mut done = 0usize;
            let mut idle = 0;
            while idle < 20 {
                let now = OffsetDateTime::now_utc();
                match store
                    .claim_job(&worker, now + time::Duration::seconds(30))
                    .await
                    .unwrap()
                {
                    Some(job) => {
                        idle = 0;
                        assert!(store.start_job(job.id, &worker, now).await.unwrap());
                        assert!(
                            store
                                .finish_job(
                                    job.id,
                                    &worker,
                                    JobStatus::Succeeded,
                                    Some(0),
                                    None,
                                    now,
                                    Vec::new()
                                )
                                .await
                                .unwrap()
                        );
                        done += 1;
                    }
                    None => {
                        idle += 1;
                        tokio::task::yield_now().await;
                    }
                }
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(total, JOBS, "every job claimed exactly once");
    store.close().await;
    total as f64 / secs
}

async fn click_to_start(url: &str) -> Vec<f64> {
    let config_text = r#"
[groups]
approvers = ["U02JANE"]

[jobs]
workers = 4
poll = "1s"

[[runbooks]]
name = "noop"
usage = "noop {n}"
params = { n = "^[0-9]+$" }
target = "noop-{n}"
run = { kind = "command", argv = ["true"] }
approval = { group = "approvers" }
"#;
    let env = [
        ("SLACK_SIGNING_SECRET", SECRET.to_owned()),
        ("DATABASE_URL", url.to_owned()),
        ("RESPONSE_URL_HOSTS", "127.0.0.1".to_owned()),
    ];
    let (services, base) = support::serve(config_text, &env).await;
    let client = reqwest::Client::new();
    let key = HmacKey::new(SECRET.as_bytes());
    let mut samples = Vec::new();
    for n in 0..100 {
        let who = pantheon::runbooks::Requester {
            user: "U01ALICE",
            channel: "C1",
            correlation_id: "bench",
            command: "noop",
        };
        let runbook = services.runbooks.find("noop").unwrap();
        let params = BTreeMap::from([("n".to_owned(), n.to_string())]);
        services
            .runbooks
            .request(&who, runbook, params)
            .await
            .unwrap();
        let id = services.store.pending_approvals().await.unwrap()[0].id;
        let payload = serde_json::json!({"type": "block_actions", "user": {"id": "U02JANE"}, "channel": {"id": "C1"},
            "actions": [{"action_id": "approval_approve", "value": id.to_string()}]});
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let ts = OffsetDateTime::now_utc().unix_timestamp().to_string();
        let sig = sign_slack(&key, &ts, body.as_bytes());
        let clicked = OffsetDateTime::now_utc();
        let resp = client
            .post(format!("{base}/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let job_id = loop {
            if let Some(j) = services
                .store
                .approval_request(id)
                .await
                .unwrap()
                .and_then(|r| r.job_id)
            {
                break j;
            }
        };
        let started_at = loop {
            if let Some(s) = services
                .store
                .job(job_id)
                .await
                .unwrap()
                .and_then(|j| j.started_at)
            {
                break s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        };
        samples.push((started_at - clicked).as_seconds_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    samples
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let lite = format!("sqlite://{}", dir.path().join("queue.db").display());
        println!("claims per second, {WORKERS} workers, {JOBS} jobs:");
        println!("  sqlite:   {:.0}", claims_per_second(&lite).await);
        if let Some(pg) = fresh_postgres("pantheon_bench_queue").await {
            println!("  postgres: {:.0}", claims_per_second(&pg).await);
        }
        let at = |s: &[f64], q: f64| s[((s.len() - 1) as f64 * q) as usize];
        if let Some(pg) = fresh_postgres("pantheon_bench_click").await {
            let s = click_to_start(&pg).await;
            println!("approval click to job start (postgres, {} clicks): median {:.1} ms, p90 {:.1} ms, max {:.1} ms", s.len(), at(&s, 0.5), at(&s, 0.9), s[s.len() - 1]);
        }
        let lite2 = format!("sqlite://{}", dir.path().join("click.db").display());
        let s = click_to_start(&lite2).await;
        println!("approval click to job start (sqlite, {} clicks): median {:.1} ms, p90 {:.1} ms, max {:.1} ms", s.len(), at(&s, 0.5), at(&s, 0.9), s[s.len() - 1]);
    });
}
