//! A worker process killed with SIGKILL in the middle of a job: after a restart the job is
//! reported as interrupted in its thread, not lost and not silently run again; a runbook marked
//! safe to retry is re-queued and finishes.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use pantheon::{
    domain::job::JobStatus,
    signature::{HmacKey, sign_slack},
    store::Store,
};

use crate::{
    both_stores,
    harness::{Db, SECRET, TestDb, fake_slack_api, now, slack_calls},
    runbooks::write_script,
};

const BIN: &str = env!("CARGO_BIN_EXE_pantheon");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(dir: &std::path::Path, env: &[(&str, String)]) -> (Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("LISTEN_ADDR", &addr);
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "pantheon serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

async fn slash(addr: &str, text: &str) -> u16 {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("command", "/ops")
        .append_pair("text", text)
        .append_pair("user_id", "U01ALICE")
        .append_pair("channel_id", "C0OPS")
        .append_pair("response_url", "http://127.0.0.1:9/hook")
        .finish();
    let ts = now().to_string();
    let sig = sign_slack(&HmacKey::new(SECRET.as_bytes()), &ts, body.as_bytes());
    crate::harness::client()
        .post(format!("http://{addr}/slack/commands"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wait_job(
    store: &Store,
    id: i64,
    want: impl Fn(JobStatus) -> bool,
    within: Duration,
) -> pantheon::domain::job::Job {
    let deadline = Instant::now() + within;
    loop {
        if let Some(job) = store.job(id).await.unwrap()
            && (want(job.status) || Instant::now() > deadline)
        {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_stores!(a_killed_worker_leaves_an_interrupted_job);

async fn a_killed_worker_leaves_an_interrupted_job(db: Db) {
    let Some(test_db) = TestDb::new(db, "sigkill").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran-once");
    let retryable = write_script(
        dir.path(),
        "idempotent.sh",
        &format!(
            "if [ -f {m} ]; then echo 'second run: done'; exit 0; fi; touch {m}; echo 'first run'; sleep 30",
            m = marker.display()
        ),
    );
    std::fs::write(
        dir.path().join("pantheon.toml"),
        format!(
            r#"
[jobs]
workers = 2
lease = "2s"
poll = "100ms"

[[runbooks]]
name = "migrate"
usage = "migrate"
run = {{ kind = "command", argv = ["sh", "-c", "echo migrating; sleep 30"] }}

[[runbooks]]
name = "sync"
usage = "sync"
retry_safe = true
run = {{ kind = "command", argv = ["{retryable}"] }}
"#
        ),
    )
    .unwrap();
    let slack = fake_slack_api().await;
    let env = vec![
        ("SLACK_SIGNING_SECRET", SECRET.to_owned()),
        ("DATABASE_URL", test_db.url.clone()),
        ("SLACK_BOT_TOKEN", "xoxb-crash-test-000000".to_owned()),
        ("SLACK_API_URL", format!("{}/api", slack.uri())),
        ("RESPONSE_URL_HOSTS", "127.0.0.1".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
    ];
    let (mut first, addr) = serve(dir.path(), &env);
    assert_eq!(slash(&addr, "migrate").await, 200);
    assert_eq!(slash(&addr, "sync").await, 200);
    let store = Store::connect(&test_db.url).await.unwrap();
    // The two commands run side by side; learn which job is which.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (migrate_id, sync_id) = loop {
        let jobs = store.jobs(None, 10).await.unwrap();
        let id = |name: &str| jobs.iter().find(|j| j.runbook == name).map(|j| j.id);
        if let (Some(m), Some(s)) = (id("migrate"), id("sync")) {
            break (m, s);
        }
        assert!(Instant::now() < deadline, "the jobs were never queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for id in [migrate_id, sync_id] {
        let job = wait_job(
            &store,
            id,
            |s| s == JobStatus::Running,
            Duration::from_secs(15),
        )
        .await;
        assert_eq!(job.status, JobStatus::Running);
    }
    // Some output reached the log before the crash.
    tokio::time::sleep(Duration::from_millis(600)).await;

    first.kill().unwrap(); // SIGKILL: no shutdown, no last words
    first.wait().unwrap();
    let crashed_at = time::OffsetDateTime::now_utc();

    let (mut second, _addr) = serve(dir.path(), &env);
    let migrate = wait_job(
        &store,
        migrate_id,
        |s| s.is_final(),
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(migrate.status, JobStatus::Interrupted, "{migrate:?}");
    assert_eq!(migrate.attempts, 1);
    assert!(
        migrate
            .error
            .as_deref()
            .unwrap()
            .contains("worker stopped before it finished")
    );
    assert!(migrate.finished_at.unwrap() >= crashed_at);
    let logs = store.job_logs(migrate_id, None).await.unwrap();
    assert!(
        logs.iter().any(|l| l.line == "migrating"),
        "the log up to the crash is kept: {logs:?}"
    );

    // The retry-safe one ran again and finished.
    let sync = wait_job(&store, sync_id, |s| s.is_final(), Duration::from_secs(15)).await;
    assert_eq!(sync.status, JobStatus::Succeeded, "{sync:?}");
    assert_eq!(sync.attempts, 2);
    let sync_logs = store.job_logs(sync_id, None).await.unwrap();
    assert!(
        sync_logs.iter().any(|l| l.line == "second run: done"),
        "{sync_logs:?}"
    );

    // Reported in the threads.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (interrupted, requeued) = loop {
        let posts = slack_calls(&slack, "chat.postMessage").await;
        let texts: Vec<String> = posts
            .iter()
            .map(|p| p["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        let interrupted = posts
            .iter()
            .find(|p| {
                p["text"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(&format!("⚠ migrate #{migrate_id} was interrupted"))
            })
            .cloned();
        let requeued = texts.iter().any(|t| {
            t.starts_with(&format!(
                "⚠ sync #{sync_id} lost its worker and was re-queued"
            ))
        });
        if (interrupted.is_some() && requeued) || Instant::now() > deadline {
            break (interrupted, requeued);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let interrupted = interrupted.expect("an interruption report in the thread");
    assert_eq!(
        interrupted["thread_ts"],
        migrate.thread_ref.clone().unwrap().as_str()
    );
    assert!(
        interrupted["text"]
            .as_str()
            .unwrap()
            .contains("It was *not* run again")
    );
    assert!(requeued);

    // And it stays interrupted: not run again behind our backs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = store.job(migrate_id).await.unwrap().unwrap();
    assert_eq!((later.status, later.attempts), (JobStatus::Interrupted, 1));
    let audit = store.audit_for(&migrate.correlation_id).await.unwrap();
    assert!(
        audit.iter().any(|r| r.entry.action == "job"
            && r.entry.outcome.as_str() == "failed"
            && r.entry
                .detail
                .as_deref()
                .unwrap_or_default()
                .starts_with("interrupted")),
        "{audit:?}"
    );

    // SAFETY: signal our own child.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    second.wait().unwrap();
    store.close().await;
}
