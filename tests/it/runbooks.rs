//! Runbooks, approvals and the job queue end to end, on SQLite and Postgres: signed slash
//! commands and button clicks in, a fake Slack Web API and real processes out.

use std::{collections::BTreeMap, path::Path, time::Duration};

use pantheon::domain::job::JobStatus;
use serde_json::Value;

use crate::{
    both_stores,
    harness::{ALICE, CHANNEL, Db, JANE, JOE, TestApp, slack_calls},
};

/// A deploy script that says what it does; `SLEEP` seconds of work when the env asks.
pub fn write_script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    path.display().to_string()
}

/// The runbooks config with a lease long enough that no heartbeat, however slow the machine,
/// loses it: only the tests about leases use a short one ([`config_with_lease`]).
pub fn config(script: &str, extra: &str) -> String {
    config_with_lease(script, extra, "10s")
}

pub fn config_with_lease(script: &str, extra: &str, lease: &str) -> String {
    format!(
        r#"
[groups]
approvers = ["U02JANE", "U03JOE"]
admins    = ["U03JOE"]
deployers = ["*"]

[permissions]
deploy = ["deployers"]

[jobs]
workers = 2
lease = "{lease}"
poll = "100ms"

[[runbooks]]
name     = "deploy"
description = "deploy an app"
usage    = "deploy {{app}} {{version}} to {{env}}"
params   = {{ app = "^[a-z0-9-]+$", version = "^[A-Za-z0-9._-]+$", env = "^(staging|production)$" }}
target   = "{{app}}/{{env}}"
run      = {{ kind = "command", argv = ["{script}", "{{app}}", "{{version}}", "{{env}}"], timeout = "10s" }}
approval = {{ group = "approvers", count = 1, expires = "1h", when = {{ env = "production" }} }}
{extra}
"#
    )
}

const DEPLOY: &str =
    r#"echo "deploying $1 $2 to $3 (job $PANTHEON_JOB_ID)"; echo "careful <now>" >&2"#;

async fn start(
    db: Db,
    test: &str,
    script_body: &str,
    extra: &str,
) -> Option<(TestApp, tempfile::TempDir)> {
    start_app(db, test, script_body, extra, false).await
}

/// [`start`] without background loops: the test runs the worker and the expirer itself, one
/// step at a time, and so never waits for them.
async fn start_stepped(
    db: Db,
    test: &str,
    script_body: &str,
    extra: &str,
) -> Option<(TestApp, tempfile::TempDir)> {
    start_app(db, test, script_body, extra, true).await
}

async fn start_app(
    db: Db,
    test: &str,
    script_body: &str,
    extra: &str,
    stepped: bool,
) -> Option<(TestApp, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", script_body);
    let mut app = TestApp::on(db, test)
        .config(&config(&script, extra))
        .with_slack_api();
    if stepped {
        app = app.stepped();
    }
    Some((app.start().await?, dir))
}

/// Run the next queued job to its end, as a worker would; its id.
pub async fn run_next_job(app: &TestApp) -> i64 {
    app.within(
        Duration::from_secs(15),
        pantheon::runbooks::jobs::run_next(&app.services.runbooks, "test-worker"),
    )
    .await
    .unwrap()
    .expect("a job was queued")
}

/// Wait (up to 15 s) until job `id` has ended; returns it.
pub async fn job_ended(app: &TestApp, id: i64) -> pantheon::domain::job::Job {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let job = app.services.store.job(id).await.unwrap();
        match job {
            Some(job) if job.status.is_final() => return job,
            Some(job) if std::time::Instant::now() > deadline => return job,
            None if std::time::Instant::now() > deadline => panic!("job {id} was never created"),
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

async fn wait_for_status(app: &TestApp, id: i64, status: JobStatus) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if app
            .services
            .store
            .job(id)
            .await
            .unwrap()
            .is_some_and(|j| j.status == status)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} never reached {status:?}");
}

/// Wait until Slack got at least `n` calls of `method`.
async fn slack_wait(app: &TestApp, method: &str, n: usize) -> Vec<Value> {
    let server = app.slack_api.as_ref().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let calls = slack_calls(server, method).await;
        if calls.len() >= n || std::time::Instant::now() > deadline {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn text_of(v: &Value) -> String {
    v.to_string()
}

pub async fn only_request_id(app: &TestApp) -> i64 {
    let pending = app.services.store.pending_approvals().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    pending[0].id
}

both_stores!(a_job_whose_lease_ran_out_before_it_started_is_not_started_and_frees_its_target);

/// A worker whose claim and checks took its whole lease (a slow database) does not start the
/// job: it gives it back at once, reported "not started" rather than "interrupted", queued again
/// (nothing ran, so running it is safe whatever the runbook says), its target free for the next
/// claim. A worker that dies between claim and start is found by the reaper and reported the
/// same way.
async fn a_job_whose_lease_ran_out_before_it_started_is_not_started_and_frees_its_target(db: Db) {
    let Some((app, _dir)) = start_stepped(db, "rb_not_started", DEPLOY, "").await else {
        return;
    };
    let ack = app.slash("deploy api 1.2.3 to staging").send().await;
    assert!(app.reply_text(&ack).await.starts_with("Queued deploy #1"));
    let lease = Duration::from_secs(30);
    let now = time::OffsetDateTime::now_utc();
    let store = &app.services.store;
    let job = store
        .claim_job("slow-worker", now + time::Duration::seconds(30))
        .await
        .unwrap()
        .expect("the queued job");
    // Claimed a whole lease ago, as far as this worker's clock can tell.
    let claimed_at = tokio::time::Instant::now() - lease;
    app.within(
        Duration::from_secs(15),
        pantheon::runbooks::jobs::run_claimed(
            &app.services.runbooks,
            "slow-worker",
            job,
            claimed_at,
        ),
    )
    .await;
    let job = store.job(1).await.unwrap().unwrap();
    assert_eq!(
        job.status,
        JobStatus::Queued,
        "given back, not interrupted: {job:?}"
    );
    assert_eq!(job.started_at, None, "{job:?}");
    assert_eq!(job.worker, None, "{job:?}");
    let rows = app.audit_for(&job.correlation_id).await;
    assert!(
        rows.iter().any(|r| r.entry.action == "job"
            && r.entry
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with("not started"))),
        "{rows:?}"
    );
    assert!(
        !rows.iter().any(|r| r
            .entry
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("interrupted"))),
        "{rows:?}"
    );
    let posts = slack_calls(app.slack_api.as_ref().unwrap(), "chat.postMessage").await;
    assert!(
        posts
            .iter()
            .any(|p| text_of(p).contains("deploy #1 was not started")
                && text_of(p).contains("Nothing ran; it is queued again")),
        "{posts:?}"
    );
    // Its target is free at once: the next claim takes it (no reaper ran).
    let again = store
        .claim_job(
            "next-worker",
            time::OffsetDateTime::now_utc() + time::Duration::seconds(30),
        )
        .await
        .unwrap()
        .expect("claimable again at once");
    assert_eq!((again.id, again.attempts), (1, 2));
    // This worker dies before starting it: the reaper, later, says the same.
    let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    assert_eq!(
        pantheon::runbooks::jobs::reap_once(&app.services.runbooks, later).await,
        1
    );
    assert_eq!(
        store.job(1).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    let posts = slack_calls(app.slack_api.as_ref().unwrap(), "chat.postMessage").await;
    assert_eq!(
        posts
            .iter()
            .filter(|p| text_of(p).contains("deploy #1 was not started"))
            .count(),
        2,
        "{posts:?}"
    );
    // And a healthy worker runs it to its end.
    assert_eq!(run_next_job(&app).await, 1);
    let job = store.job(1).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert!(job.started_at.is_some());
    app.stop().await;
}

both_stores!(
    a_runbook_without_approval_runs_and_reports_in_its_thread,
    a_gated_deploy_waits_for_a_peer_and_then_runs,
    refused_clicks_are_explained_and_audited,
    a_deny_ends_the_request,
    two_approvals_need_two_people,
    expired_requests_cannot_be_approved,
    the_requester_can_withdraw,
    fifty_concurrent_clicks_make_one_job,
    injection_attempts_are_refused_before_storage,
    forged_and_replayed_clicks_are_refused,
    a_job_past_its_timeout_is_killed_and_reported,
    cancel_is_for_the_requester_or_admins,
    a_changed_binding_is_refused_at_start,
    run_reaches_every_runbook,
    job_pages_need_a_valid_signed_link,
    one_job_per_target_at_a_time,
    the_reaper_reports_a_job_whose_worker_vanished,
);

async fn a_runbook_without_approval_runs_and_reports_in_its_thread(db: Db) {
    let Some((app, _dir)) = start_stepped(db, "rb_staging", DEPLOY, "").await else {
        return;
    };
    let ack = app.slash("deploy api 1.2.3 to staging").send().await;
    assert_eq!(ack.status, 200);
    assert_eq!(ack.body, "", "runbooks answer in the background");
    let reply = app.reply_text(&ack).await;
    assert!(reply.starts_with("Queued deploy #1"), "{reply}");
    assert_eq!(run_next_job(&app).await, 1);
    let job = app.services.store.job(1).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(job.target, "api/staging");
    assert_eq!(job.exit_code, Some(0));
    let lines = app.job_log_lines(1).await;
    assert!(
        lines.contains(&"deploying api 1.2.3 to staging (job 1)".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&"careful <now>".to_owned()), "{lines:?}");

    // The queued message went to the channel; progress went into its thread.
    let posts = slack_wait(&app, "chat.postMessage", 3).await;
    assert_eq!(posts[0]["channel"], CHANNEL);
    assert_eq!(
        posts[0]["text"],
        "<@U01ALICE> asked for *deploy* on `api/staging` (app=api env=staging version=1.2.3)."
    );
    // …then the same message names the job and links its page.
    let updates = slack_wait(&app, "chat.update", 1).await;
    assert_eq!(updates[0]["ts"], "1700000000.000001");
    assert!(
        updates[0]["text"]
            .as_str()
            .unwrap()
            .contains("<@U01ALICE> queued *deploy* #1 on `api/staging`"),
        "{}",
        updates[0]
    );
    let thread = "1700000000.000001";
    assert!(
        posts[1..].iter().all(|p| p["thread_ts"] == thread),
        "{posts:?}"
    );
    assert!(
        posts.iter().any(|p| p["text"]
            .as_str()
            .unwrap()
            .starts_with("▶ deploy #1 started")),
        "{posts:?}"
    );
    let done = slack_wait(&app, "chat.postMessage", 3).await;
    assert!(
        done.iter().any(|p| p["text"]
            .as_str()
            .unwrap()
            .starts_with("✅ deploy #1 succeeded in")),
        "{done:?}"
    );

    let rows = app.audit_for(&job.correlation_id).await;
    let actions: Vec<(String, &str)> = rows
        .iter()
        .map(|r| (r.entry.action.clone(), r.entry.outcome.as_str()))
        .collect();
    for expected in [
        ("command", "received"),
        ("job.enqueue", "succeeded"),
        ("job", "started"),
        ("job", "succeeded"),
    ] {
        assert!(
            actions.contains(&(expected.0.to_owned(), expected.1)),
            "{actions:?}"
        );
    }
    app.stop().await;
}

async fn a_gated_deploy_waits_for_a_peer_and_then_runs(db: Db) {
    let Some((app, _dir)) = start(db, "rb_production", DEPLOY, "").await else {
        return;
    };
    let ack = app
        .slash("deploy api 2.0.0 to production")
        .by(ALICE)
        .send()
        .await;
    let reply = app.reply_text(&ack).await;
    assert_eq!(
        reply,
        "Request #1 for deploy is waiting for 1 approval from `approvers`."
    );
    assert!(
        app.services.store.jobs(None, 10).await.unwrap().is_empty(),
        "nothing runs before approval"
    );

    let posted = slack_wait(&app, "chat.postMessage", 1).await;
    let message = &posted[0];
    assert_eq!(message["channel"], CHANNEL);
    let blocks = message["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["text"]["text"], "Approval needed: deploy");
    assert!(
        text_of(&blocks[1]).contains("<@U01ALICE> asks to run *deploy* on `api/production`"),
        "{}",
        blocks[1]
    );
    assert!(
        text_of(&blocks[1]).contains("`version` = `2.0.0`"),
        "{}",
        blocks[1]
    );
    let actions = blocks
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("buttons");
    let ids: Vec<&str> = actions["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "approval_approve",
            "approval_deny",
            "approval_comment",
            "approval_withdraw"
        ]
    );
    assert!(
        text_of(message).contains("Needs 1 approval from `approvers` (0 so far)"),
        "{message}"
    );

    let click = app.click(JANE, "approval_approve", "1").await;
    assert_eq!(click.status, 200);
    let request = app
        .services
        .store
        .approval_request(1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.status.as_str(), "approved");
    let job_id = request.job_id.expect("a job");
    let job = job_ended(&app, job_id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(job.approval_id, Some(1));
    assert_eq!(
        job.thread_ref.as_deref(),
        Some("1700000000.000001"),
        "progress goes into the approval's thread"
    );

    // The message was replaced in place: approved, then running, then succeeded.
    let updates = slack_wait(&app, "chat.update", 3).await;
    assert!(updates.iter().all(|u| u["ts"] == "1700000000.000001"));
    let all: Vec<String> = updates.iter().map(text_of).collect();
    assert!(
        all.iter().any(|t| t.contains("Approved by <@U02JANE>")),
        "{all:?}"
    );
    let last = all.last().unwrap();
    assert!(
        last.contains("Succeeded: deploy") && last.contains("deploy #1 succeeded"),
        "{last}"
    );
    // No page link in the channel (it would open the page for anyone): a Log button instead.
    assert!(!last.contains("/jobs/1"), "{last}");
    assert!(last.contains("\"action_id\":\"job_log\""), "{last}");
    assert!(
        !last.contains("approval_approve"),
        "decided messages have no buttons: {last}"
    );

    // The request's own steps share its correlation id; the click has its own.
    let rows = app.audit_for(&request.correlation_id).await;
    let actions: Vec<String> = rows
        .iter()
        .map(|r| format!("{}:{}", r.entry.action, r.entry.outcome.as_str()))
        .collect();
    let click = app.services.store.recent_audit(100).await.unwrap();
    assert!(click.iter().any(|r| r.entry.action == "approval.approve"
        && r.entry.actor == JANE
        && r.entry.detail.as_deref() == Some("approved; job #1 queued")));
    for expected in [
        "approval.request:succeeded",
        "job.enqueue:succeeded",
        "job:started",
        "job:succeeded",
    ] {
        assert!(actions.contains(&expected.to_owned()), "{actions:?}");
    }
    app.stop().await;
}

async fn refused_clicks_are_explained_and_audited(db: Db) {
    let Some((app, _dir)) = start(db, "rb_refused", DEPLOY, "").await else {
        return;
    };
    app.slash("deploy api 2.0.0 to production")
        .by(ALICE)
        .send()
        .await;
    let _ = slack_wait(&app, "chat.postMessage", 1).await;
    let id = only_request_id(&app).await;
    let own = app.click(ALICE, "approval_approve", &id.to_string()).await;
    let reply = app.click_reply(&own).await;
    assert_eq!(
        reply["text"],
        "You cannot approve or deny your own request; ask a peer."
    );
    assert_eq!(reply["response_type"], "ephemeral");
    assert_eq!(reply["replace_original"], false);
    let outsider = app
        .click("U09BOB", "approval_approve", &id.to_string())
        .await;
    assert_eq!(
        app.click_reply(&outsider).await["text"],
        "Only members of the `approvers` group can decide request #1."
    );
    let unknown = app.click(JANE, "approval_approve", "999").await;
    assert_eq!(
        app.click_reply(&unknown).await["text"],
        "There is no approval request #999."
    );
    let garbage = app.click(JANE, "approval_approve", "not-a-number").await;
    assert_eq!(garbage.status, 200);
    // Approve, then a late click.
    app.click(JANE, "approval_approve", &id.to_string()).await;
    let late = app.click(JOE, "approval_approve", &id.to_string()).await;
    assert_eq!(
        app.click_reply(&late).await["text"],
        "Request #1 is already approved."
    );
    let jobs = app.services.store.jobs(None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let request = app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    let rows = app.audit_for(&request.correlation_id).await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.entry.action == "approval.approve")
            .count(),
        0,
        "clicks get their own correlation ids"
    );
    let all = app.services.store.recent_audit(200).await.unwrap();
    let refused: Vec<&str> = all
        .iter()
        .filter(|r| r.entry.action == "approval.approve" && r.entry.outcome.as_str() == "refused")
        .filter_map(|r| r.entry.detail.as_deref())
        .collect();
    for reason in [
        "refused: own request",
        "refused: not in group",
        "refused: unknown request",
        "refused: already decided",
    ] {
        assert!(refused.contains(&reason), "{refused:?}");
    }
    app.stop().await;
}

async fn a_deny_ends_the_request(db: Db) {
    let Some((app, _dir)) = start(db, "rb_deny", DEPLOY, "").await else {
        return;
    };
    app.slash("deploy api 2.0.0 to production")
        .by(ALICE)
        .send()
        .await;
    let _ = slack_wait(&app, "chat.postMessage", 1).await;
    let id = only_request_id(&app).await;
    app.click(JOE, "approval_deny", &id.to_string()).await;
    let request = app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.status.as_str(), "denied");
    assert_eq!(request.decided_by.as_deref(), Some(JOE));
    let updates = slack_wait(&app, "chat.update", 1).await;
    assert!(
        text_of(updates.last().unwrap()).contains("Denied by <@U03JOE>"),
        "{updates:?}"
    );
    let again = app.click(JANE, "approval_approve", &id.to_string()).await;
    assert_eq!(
        app.click_reply(&again).await["text"],
        "Request #1 is already denied."
    );
    assert!(app.services.store.jobs(None, 10).await.unwrap().is_empty());
    app.stop().await;
}

async fn two_approvals_need_two_people(db: Db) {
    let extra = r#"
[[runbooks]]
name = "failover"
usage = "failover {db}"
params = { db = "^[a-z]+$" }
run = { kind = "command", argv = ["true"] }
approval = { group = "approvers", count = 2, expires = "1h" }
"#;
    let Some((app, _dir)) = start(db, "rb_two", DEPLOY, extra).await else {
        return;
    };
    app.slash("failover main").by(ALICE).send().await;
    let _ = slack_wait(&app, "chat.postMessage", 1).await;
    let id = only_request_id(&app).await;
    let first = app.click(JANE, "approval_approve", &id.to_string()).await;
    let _ = first;
    let request = app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.status.as_str(), "pending");
    assert_eq!(request.approvers(), [JANE]);
    let twice = app.click(JANE, "approval_approve", &id.to_string()).await;
    assert_eq!(
        app.click_reply(&twice).await["text"],
        "You have already voted on request #1."
    );
    app.click(JOE, "approval_approve", &id.to_string()).await;
    let request = app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.status.as_str(), "approved");
    let job = job_ended(&app, request.job_id.unwrap()).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    let updates = slack_wait(&app, "chat.update", 2).await;
    assert!(
        updates
            .iter()
            .any(|u| text_of(u).contains("Approved by <@U02JANE> and <@U03JOE>")),
        "{updates:?}"
    );
    app.stop().await;
}

async fn expired_requests_cannot_be_approved(db: Db) {
    let extra = r#"
[[runbooks]]
name = "rotate"
usage = "rotate {key}"
params = { key = "^[a-z]+$" }
run = { kind = "command", argv = ["true"] }
approval = { group = "approvers", expires = "1h" }
"#;
    let Some((app, _dir)) = start_stepped(db, "rb_expire", DEPLOY, extra).await else {
        return;
    };
    app.slash("rotate tls").by(ALICE).send().await;
    let _ = slack_wait(&app, "chat.postMessage", 1).await;
    let id = only_request_id(&app).await;
    // Posting the approval message and storing its reference are two steps: wait for both,
    // so the expirer below has a message to update.
    let store = &app.services.store;
    app.within(Duration::from_secs(10), async {
        while store
            .approval_request(id)
            .await
            .unwrap()
            .and_then(|r| r.message_ref)
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Not yet due: the expirer leaves it.
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(
        pantheon::runbooks::jobs::expire_once(&app.services.runbooks, now).await,
        0
    );
    // Past its hour, the expirer closes it and updates its message.
    let later = now + time::Duration::hours(2);
    assert_eq!(
        pantheon::runbooks::jobs::expire_once(&app.services.runbooks, later).await,
        1
    );
    let updates = slack_calls(app.slack_api.as_ref().unwrap(), "chat.update").await;
    assert!(
        updates
            .iter()
            .any(|u| text_of(u).contains("Expired: rotate")),
        "{updates:?}"
    );
    let late = app.click(JANE, "approval_approve", &id.to_string()).await;
    assert_eq!(
        app.click_reply(&late).await["text"],
        "Request #1 is already expired."
    );
    assert!(app.services.store.jobs(None, 10).await.unwrap().is_empty());
    app.stop().await;
}

async fn the_requester_can_withdraw(db: Db) {
    let Some((app, _dir)) = start(db, "rb_withdraw", DEPLOY, "").await else {
        return;
    };
    app.slash("deploy api 2.0.0 to production")
        .by(ALICE)
        .send()
        .await;
    let _ = slack_wait(&app, "chat.postMessage", 1).await;
    let id = only_request_id(&app).await;
    let not_mine = app.click(JANE, "approval_withdraw", &id.to_string()).await;
    assert_eq!(
        app.click_reply(&not_mine).await["text"],
        "Only the requester can withdraw request #1."
    );
    let ack = app.slash(&format!("withdraw {id}")).by(ALICE).send().await;
    assert_eq!(app.reply_text(&ack).await, "Request #1 is withdrawn.");
    let request = app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.status.as_str(), "withdrawn");
    app.stop().await;
}

async fn fifty_concurrent_clicks_make_one_job(db: Db) {
    let Some((app, _dir)) = start(db, "rb_fifty", DEPLOY, "").await else {
        return;
    };
    // Everyone below is an approver, so every click is qualified.
    app.slash("deploy api 2.0.0 to production")
        .by(ALICE)
        .send()
        .await;
    let _ = slack_wait(&app, "chat.postMessage", 1).await;
    let id = only_request_id(&app).await;
    let app = std::sync::Arc::new(app);
    let mut clicks = Vec::new();
    for i in 0..50 {
        let app = app.clone();
        // Jane and Joe are the approvers; half the clicks are each of them, racing.
        let who = if i % 2 == 0 { JANE } else { JOE };
        clicks.push(tokio::spawn(async move {
            app.click(who, "approval_approve", &id.to_string())
                .await
                .status
        }));
    }
    for c in clicks {
        assert_eq!(c.await.unwrap(), 200);
    }
    let jobs = app.services.store.jobs(None, 100).await.unwrap();
    assert_eq!(jobs.len(), 1, "exactly one job: {jobs:?}");
    let request = app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.status.as_str(), "approved");
    assert_eq!(
        request.votes.len(),
        1,
        "one vote decided it: {:?}",
        request.votes
    );
    let all = app.services.store.recent_audit(500).await.unwrap();
    let clicks: Vec<_> = all
        .iter()
        .filter(|r| r.entry.action == "approval.approve")
        .collect();
    assert_eq!(clicks.len(), 50, "every click is audited");
    assert_eq!(
        clicks
            .iter()
            .filter(|r| r.entry.outcome.as_str() == "succeeded")
            .count(),
        1
    );
    let app = std::sync::Arc::try_unwrap(app)
        .ok()
        .expect("no other owners");
    app.stop().await;
}

async fn injection_attempts_are_refused_before_storage(db: Db) {
    let Some((app, _dir)) = start(db, "rb_injection", DEPLOY, "").await else {
        return;
    };
    for attempt in [
        "deploy api \"1.2; rm -rf /\" to staging",
        "deploy api $(reboot) to staging",
        "deploy api `id` to staging",
        "deploy api --force to staging",
        "deploy api \"1.2\nrm -rf /\" to staging",
        "deploy ../etc 1.2 to staging",
        "deploy api 1.2 to prod|uction",
        "run deploy app=api version=--upload-pack=evil env=staging",
        "run deploy app=api version=1.2 env=staging extra=1",
    ] {
        let ack = app.slash(attempt).send().await;
        let answer = if ack.body.is_empty() {
            app.reply_text(&ack).await
        } else {
            ack.text()
        };
        assert!(
            answer.contains("is not a valid")
                || answer.contains("may not start with")
                || answer.contains("control character")
                || answer.contains("is not a parameter")
                || answer.contains("is missing")
                || answer.contains("expected `to`")
                || answer.contains("unexpected"),
            "{attempt:?} → {answer}"
        );
    }
    // A parameter left out (with a bot token): a form to fill in, nothing run.
    let ack = app.slash("run deploy app=api env=staging").send().await;
    assert_eq!((ack.status, ack.body.as_str()), (200, ""));
    let opened = slack_calls(app.slack_api.as_ref().unwrap(), "views.open").await;
    assert_eq!(opened.len(), 1);
    assert_eq!(
        opened[0]["view"]["blocks"][1]["element"]["initial_value"],
        "api"
    );
    assert!(
        app.services.store.jobs(None, 100).await.unwrap().is_empty(),
        "nothing was stored"
    );
    assert!(
        app.services
            .store
            .pending_approvals()
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}

async fn forged_and_replayed_clicks_are_refused(db: Db) {
    let Some((app, _dir)) = start(db, "rb_forged", DEPLOY, "").await else {
        return;
    };
    app.slash("deploy api 2.0.0 to production")
        .by(ALICE)
        .send()
        .await;
    let _ = slack_wait(&app, "chat.postMessage", 1).await;
    let payload = serde_json::json!({"type": "block_actions", "user": {"id": JANE}, "actions": [{"action_id": "approval_approve", "value": "1"}], "response_url": app.response_url()});
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let post = |ts: String, sig: String| {
        let body = body.clone();
        let app = &app;
        async move {
            app.post_slack(
                "/slack/interactions",
                body,
                &[
                    ("content-type", "application/x-www-form-urlencoded".into()),
                    ("x-slack-request-timestamp", ts),
                    ("x-slack-signature", sig),
                ],
            )
            .await
            .status()
            .as_u16()
        }
    };
    let now = crate::harness::now();
    let forged = pantheon::signature::sign_slack(
        &pantheon::signature::HmacKey::new(b"guessed"),
        &now.to_string(),
        body.as_bytes(),
    );
    assert_eq!(post(now.to_string(), forged).await, 401);
    let old = (now - 600).to_string();
    let stale = pantheon::signature::sign_slack(
        &pantheon::signature::HmacKey::new(crate::harness::SECRET.as_bytes()),
        &old,
        body.as_bytes(),
    );
    assert_eq!(post(old, stale).await, 401);
    let good = pantheon::signature::sign_slack(
        &pantheon::signature::HmacKey::new(crate::harness::SECRET.as_bytes()),
        &now.to_string(),
        body.as_bytes(),
    );
    assert_eq!(post(now.to_string(), good.clone()).await, 200);
    assert_eq!(
        post(now.to_string(), good.clone()).await,
        401,
        "the same signed click twice is a replay"
    );
    let shouting = format!("v0={}", good[3..].to_ascii_uppercase());
    assert_eq!(
        post(now.to_string(), shouting).await,
        401,
        "hex case does not make a new click"
    );
    // Not a payload at all.
    let junk = "payload=%7Bnot-json";
    let sig = pantheon::signature::sign_slack(
        &pantheon::signature::HmacKey::new(crate::harness::SECRET.as_bytes()),
        &now.to_string(),
        junk.as_bytes(),
    );
    let status = app
        .post_slack(
            "/slack/interactions",
            junk,
            &[
                ("content-type", "application/x-www-form-urlencoded".into()),
                ("x-slack-request-timestamp", now.to_string()),
                ("x-slack-signature", sig),
            ],
        )
        .await
        .status();
    assert_eq!(status, 400);
    let request = app
        .services
        .store
        .approval_request(1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.votes.len(), 1, "only the genuine click counted");
    app.stop().await;
}

async fn a_job_past_its_timeout_is_killed_and_reported(db: Db) {
    let extra = r#"
[[runbooks]]
name = "slow"
usage = "slow"
run = { kind = "command", argv = ["sh", "-c", "echo working; sleep 30"], timeout = "1s" }
"#;
    let Some((app, _dir)) = start(db, "rb_timeout", DEPLOY, extra).await else {
        return;
    };
    app.slash("slow").send().await;
    let _ = slack_wait(&app, "chat.postMessage", 1).await;
    let started = std::time::Instant::now();
    let job = job_ended(&app, 1).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(
        job.error.as_deref(),
        Some("timed out after 1s and was stopped")
    );
    let posts = slack_wait(&app, "chat.postMessage", 3).await;
    let last = posts
        .iter()
        .map(|p| p["text"].as_str().unwrap_or_default().to_owned())
        .find(|t| t.starts_with("⏱"))
        .unwrap_or_default();
    assert!(
        last.starts_with("⏱ slow #1 timed out after 1s and was stopped."),
        "{posts:?}"
    );
    // The thread is the channel's: the output stays on the job page, behind the Log button.
    assert!(
        !last.contains("working"),
        "no output in the channel: {last}"
    );
    let ack = app.slash("job 1").send().await;
    assert!(
        app.reply_text(&ack).await.contains("working"),
        "the requester sees the output privately"
    );
    app.stop().await;
}

async fn cancel_is_for_the_requester_or_admins(db: Db) {
    let extra = r#"
[[runbooks]]
name = "long"
usage = "long {n}"
params = { n = "^[0-9]+$" }
run = { kind = "command", argv = ["sleep", "{n}"] }
"#;
    let Some((app, _dir)) = start(db, "rb_cancel", DEPLOY, extra).await else {
        return;
    };
    app.slash("long 30").by(ALICE).send().await;
    wait_for_status(&app, 1, JobStatus::Running).await;
    let other = app.slash("cancel 1").by(JANE).send().await;
    assert_eq!(
        app.reply_text(&other).await,
        "Only <@U01ALICE> (who asked for it) or an admin can cancel job #1."
    );
    let mine = app.slash("cancel 1").by(ALICE).send().await;
    assert!(
        app.reply_text(&mine)
            .await
            .contains("asked long #1 to stop")
    );
    let job = job_ended(&app, 1).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    let again = app.slash("cancel 1").by(ALICE).send().await;
    assert_eq!(
        app.reply_text(&again).await,
        "Job #1 has already ended (cancelled)."
    );
    let none = app.slash("cancel 99").by(ALICE).send().await;
    assert_eq!(app.reply_text(&none).await, "There is no job #99.");
    // A queued one (behind a running job on the same target) is cancelled outright by an admin.
    app.slash("long 30").by(ALICE).send().await;
    wait_for_status(&app, 2, JobStatus::Running).await;
    let queued = app.slash("long 31").by(ALICE).send().await;
    let _ = app.reply_text(&queued).await;
    assert_eq!(
        app.services
            .store
            .job(3)
            .await
            .unwrap()
            .expect("queued")
            .status,
        JobStatus::Queued
    );
    let ack = app.slash("cancel 3").by(JOE).send().await;
    let reply = app.reply_text(&ack).await;
    assert!(
        reply.contains("cancelled long #3 before it started")
            || reply.contains("asked long #3 to stop"),
        "{reply}"
    );
    let ack = app.slash("cancel 2").by(JOE).send().await;
    let _ = app.reply_text(&ack).await;
    assert_eq!(job_ended(&app, 2).await.status, JobStatus::Cancelled);
    assert_eq!(job_ended(&app, 3).await.status, JobStatus::Cancelled);
    app.stop().await;
}

async fn a_changed_binding_is_refused_at_start(db: Db) {
    let Some((app, _dir)) = start(db, "rb_binding", DEPLOY, "").await else {
        return;
    };
    // A job whose binding does not match the runbook as configured now (as if the runbook had
    // changed after it was approved).
    let params = std::collections::BTreeMap::from([
        ("app".to_owned(), "api".to_owned()),
        ("version".to_owned(), "1.0".to_owned()),
        ("env".to_owned(), "staging".to_owned()),
    ]);
    let job = pantheon::domain::job::NewJob {
        runbook: "deploy".into(),
        params,
        binding: "0".repeat(64),
        target: "api/staging".into(),
        requested_by: ALICE.into(),
        approval_id: None,
        channel: CHANNEL.into(),
        thread_ref: None,
        retry_safe: false,
        correlation_id: "binding-test".into(),
        created_at: time::OffsetDateTime::now_utc(),
        overrides: None,
    };
    let id = app
        .services
        .store
        .enqueue_job(&job, |_| Vec::new())
        .await
        .unwrap();
    app.services.runbooks.queued();
    let ended = job_ended(&app, id).await;
    assert_eq!(ended.status, JobStatus::Failed);
    assert!(
        ended
            .error
            .as_deref()
            .unwrap()
            .contains("changed since this was requested and approved"),
        "{ended:?}"
    );
    assert!(
        app.job_log_lines(id)
            .await
            .iter()
            .all(|l| !l.starts_with("deploying")),
        "the script never ran"
    );
    app.stop().await;
}

async fn run_reaches_every_runbook(db: Db) {
    let Some((app, _dir)) = start(db, "rb_run", DEPLOY, "").await else {
        return;
    };
    let ack = app
        .slash("run deploy app=web version=9 env=staging")
        .send()
        .await;
    assert!(app.reply_text(&ack).await.starts_with("Queued deploy #1"));
    assert_eq!(job_ended(&app, 1).await.status, JobStatus::Succeeded);
    let ack = app.slash("run nothing a=b").send().await;
    assert_eq!(
        app.reply_text(&ack).await,
        "There is no runbook `nothing`. Runbooks: deploy."
    );
    let ack = app.slash("jobs").send().await;
    let text = app.reply_text(&ack).await;
    assert!(
        text.contains("deploy #1> *succeeded* · on `web/staging` · by <@U01ALICE>"),
        "{text}"
    );
    let ack = app.slash("job 1").send().await;
    let text = app.reply_text(&ack).await;
    assert!(
        text.contains("deploying web 9 to staging (job 1)"),
        "{text}"
    );
    app.stop().await;
}

async fn job_pages_need_a_valid_signed_link(db: Db) {
    let Some((app, _dir)) = start(db, "rb_page", DEPLOY, "").await else {
        return;
    };
    app.slash("deploy api 1.0 to staging").send().await;
    job_ended(&app, 1).await;
    let link =
        app.services
            .links
            .job_url(1, crate::harness::ALICE, time::OffsetDateTime::now_utc());
    let url = url::Url::parse(&link).unwrap();
    let local = app.url(&format!("{}?{}", url.path(), url.query().unwrap()));
    let page = app.client.get(&local).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>deploy #1</title>"), "{html}");
    assert!(html.contains("deploying api 1.0 to staging (job 1)"));
    assert!(
        html.contains("careful &lt;now&gt;"),
        "output is escaped: {html}"
    );
    assert!(!html.contains("careful <now>"));
    let tampered = local.replace("/jobs/1?", "/jobs/2?");
    assert_eq!(
        app.client.get(&tampered).send().await.unwrap().status(),
        403
    );
    let flipped = if local.ends_with('0') { '1' } else { '0' };
    let bad_sig = format!("{}{flipped}", &local[..local.len() - 1]);
    assert_eq!(app.client.get(&bad_sig).send().await.unwrap().status(), 403);
    assert_eq!(
        app.client
            .get(app.url("/jobs/1"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    app.stop().await;
}

/// One round of the reaper, driven by the test: a job claimed by a worker whose lease ran out
/// (the worker died) is marked interrupted, audited, and its thread told; one still leased is
/// left alone.
async fn the_reaper_reports_a_job_whose_worker_vanished(db: Db) {
    let Some((app, _dir)) = start_stepped(db, "rb_reap_once", DEPLOY, "").await else {
        return;
    };
    let ack = app.slash("deploy api 1.2.3 to staging").send().await;
    assert!(app.reply_text(&ack).await.starts_with("Queued deploy #1"));
    let now = time::OffsetDateTime::now_utc();
    let lease_end = now + time::Duration::seconds(10);
    let claimed = app
        .services
        .store
        .claim_job("vanished-worker", lease_end)
        .await
        .unwrap()
        .expect("the queued job");
    assert_eq!(claimed.id, 1);
    assert!(
        app.services
            .store
            .start_job(1, "vanished-worker", now)
            .await
            .unwrap(),
        "it started the job before it vanished"
    );
    // Within its lease (and the half-lease grace after it), nothing is reaped.
    assert_eq!(
        pantheon::runbooks::jobs::reap_once(&app.services.runbooks, now).await,
        0
    );
    // Long after, its worker is taken for dead.
    let later = lease_end + time::Duration::minutes(10);
    assert_eq!(
        pantheon::runbooks::jobs::reap_once(&app.services.runbooks, later).await,
        1
    );
    let job = app.services.store.job(1).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Interrupted, "{job:?}");
    let rows = app.audit_for(&job.correlation_id).await;
    assert!(
        rows.iter().any(|r| r.entry.action == "job"
            && r.entry.outcome.as_str() == "failed"
            && r.entry
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with("interrupted"))),
        "{rows:?}"
    );
    let posts = slack_calls(app.slack_api.as_ref().unwrap(), "chat.postMessage").await;
    assert!(
        posts
            .iter()
            .any(|p| text_of(p).contains("deploy #1 was interrupted")),
        "{posts:?}"
    );
    assert_eq!(
        pantheon::runbooks::jobs::reap_once(&app.services.runbooks, later).await,
        0,
        "once"
    );
    app.stop().await;
}

async fn one_job_per_target_at_a_time(db: Db) {
    let Some((app, dir)) = start(db, "rb_target", "sleep 1; echo done", "").await else {
        return;
    };
    let _ = dir;
    app.slash("deploy api 1 to staging").send().await;
    app.slash("deploy api 2 to staging").send().await;
    app.slash("deploy web 1 to staging").send().await;
    for id in 1..=3 {
        assert_eq!(job_ended(&app, id).await.status, JobStatus::Succeeded);
    }
    let jobs = app.services.store.jobs(None, 10).await.unwrap();
    let find = |app_name: &str, version: &str| {
        jobs.iter()
            .find(|j| j.params["app"] == app_name && j.params["version"] == version)
            .cloned()
            .unwrap()
    };
    let (a1, a2, web) = (find("api", "1"), find("api", "2"), find("web", "1"));
    // api/staging ran one after the other; web/staging alongside.
    let (first, second) = if a1.started_at < a2.started_at {
        (&a1, &a2)
    } else {
        (&a2, &a1)
    };
    assert!(
        second.started_at.unwrap() >= first.finished_at.unwrap(),
        "two jobs of one target overlapped: {first:?} {second:?}"
    );
    assert!(
        web.started_at.unwrap() < second.started_at.unwrap(),
        "another target was held up: {web:?}"
    );
    app.stop().await;
}

both_stores!(workflow_and_http_runners);

async fn workflow_and_http_runners(db: Db) {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers};
    let gh = MockServer::start().await;
    let jenkins = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path(
            "/repos/acme/api/actions/workflows/deploy.yml/dispatches",
        ))
        .and(matchers::header(
            "authorization",
            "Bearer ghp_runnertest0000000000000000000000",
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&gh)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/job/deploy/buildWithParameters"))
        .respond_with(ResponseTemplate::new(201).set_body_string("queued build 17\nsee console"))
        .expect(1)
        .mount(&jenkins)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/job/broken/build"))
        .respond_with(ResponseTemplate::new(500).set_body_string("stack trace here"))
        .mount(&jenkins)
        .await;
    let extra = format!(
        r#"
[[runbooks]]
name = "ship"
usage = "ship {{version}}"
params = {{ version = "^[0-9.]+$" }}
run = {{ kind = "github_workflow", repo = "acme/api", workflow = "deploy.yml", ref = "main", inputs = {{ version = "{{version}}" }} }}

[[runbooks]]
name = "build"
usage = "build {{branch}}"
params = {{ branch = "^[a-z0-9-]+$" }}
run = {{ kind = "http", url = "{j}/job/deploy/buildWithParameters", body = {{ BRANCH = "{{branch}}" }}, timeout = "5s" }}

[[runbooks]]
name = "broken"
usage = "broken"
run = {{ kind = "http", url = "{j}/job/broken/build" }}
"#,
        j = jenkins.uri()
    );
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", DEPLOY);
    let Some(app) = TestApp::on(db, "rb_runners")
        .config(&config(&script, &extra))
        .env("GITHUB_TOKEN", "ghp_runnertest0000000000000000000000")
        .env("GITHUB_API_URL", gh.uri())
        .start()
        .await
    else {
        return;
    };
    let ack = app.slash("ship 1.4.0").send().await;
    // No bot token here: the queued message comes back through the response URL, in channel.
    let reply = app.reply(&ack).await;
    assert_eq!(reply["response_type"], "in_channel");
    assert!(
        reply["text"].as_str().unwrap().contains("queued *ship* #1"),
        "{reply}"
    );
    assert_eq!(job_ended(&app, 1).await.status, JobStatus::Succeeded);
    let sent = gh.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["ref"], "main");
    assert_eq!(body["inputs"], serde_json::json!({"version": "1.4.0"}));

    app.slash("build feature-x").send().await;
    assert_eq!(job_ended(&app, 2).await.status, JobStatus::Succeeded);
    let sent = jenkins.received_requests().await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&sent[0].body).unwrap(),
        serde_json::json!({"BRANCH": "feature-x"})
    );
    let logs = app.job_log_lines(2).await;
    assert!(logs.contains(&"queued build 17".to_owned()), "{logs:?}");

    app.slash("broken").send().await;
    let broken = job_ended(&app, 3).await;
    assert_eq!(broken.status, JobStatus::Failed);
    assert_eq!(
        broken.error.as_deref(),
        Some("the endpoint answered HTTP 500")
    );
    app.stop().await;
}

both_stores!(
    two_processes_never_run_a_job_twice,
    a_plan_is_shown_in_the_approval_message
);

/// Two apps (as two replicas would: separate pools and workers, one database) with four
/// workers each: every job runs exactly once.
async fn two_processes_never_run_a_job_twice(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("runs");
    let script = write_script(
        dir.path(),
        "count.sh",
        &format!("echo \"$PANTHEON_JOB_ID\" >> {}", counter.display()),
    );
    let config = format!(
        r#"
[jobs]
workers = 4
lease = "5s"
poll = "50ms"

[[runbooks]]
name = "tick"
usage = "tick {{n}}"
params = {{ n = "^[0-9]+$" }}
target = "t{{n}}"
run = {{ kind = "command", argv = ["{script}"] }}
"#
    );
    let Some(first) = TestApp::on(db, "rb_two_processes")
        .config(&config)
        .start()
        .await
    else {
        return;
    };
    let second = TestApp::on(db, "rb_two_processes")
        .on_database(first._db.borrowed())
        .config(&config)
        .start()
        .await
        .unwrap();
    let total = 60;
    for n in 0..total {
        // Queue through both processes' stores directly, as fast as possible.
        let app = if n % 2 == 0 { &first } else { &second };
        let who = pantheon::runbooks::Requester {
            user: ALICE,
            channel: CHANNEL,
            correlation_id: "two",
            command: "tick",
        };
        let runbook = app.services.runbooks.find("tick").unwrap();
        let p = BTreeMap::from([("n".to_owned(), n.to_string())]);
        app.services
            .runbooks
            .request(&who, runbook, p)
            .await
            .unwrap();
    }
    for id in 1..=total {
        let job = job_ended(&first, id).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        assert_eq!(job.attempts, 1, "{job:?}");
    }
    let runs = std::fs::read_to_string(&counter).unwrap();
    let mut ids: Vec<i64> = runs.lines().map(|l| l.parse().unwrap()).collect();
    ids.sort();
    assert_eq!(
        ids,
        (1..=total).collect::<Vec<_>>(),
        "each job ran exactly once"
    );
    let workers: std::collections::BTreeSet<String> = first
        .services
        .store
        .jobs(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|j| j.worker)
        .collect();
    assert!(workers.len() > 1, "several workers took part: {workers:?}");
    second.stop().await;
    first.stop().await;
}

async fn a_plan_is_shown_in_the_approval_message(db: Db) {
    let extra = r#"
[[runbooks]]
name = "scale"
usage = "scale {svc} {n}"
params = { svc = "^[a-z]+$", n = "^[0-9]+$" }
plan = { kind = "command", argv = ["sh", "-c", "echo \"would scale $0 to $1 replicas\"; echo '<!channel> ``` <https://evil.example|ok>'", "{svc}", "{n}"] }
run = { kind = "command", argv = ["true"] }
approval = { group = "approvers" }

[[runbooks]]
name = "risky"
usage = "risky"
plan = { kind = "command", argv = ["sh", "-c", "echo 'plan: 3 changes'; echo 'error: drift' >&2; exit 2"] }
run = { kind = "command", argv = ["true"] }
approval = { group = "approvers" }
"#;
    let Some((app, _dir)) = start(db, "rb_plan", DEPLOY, extra).await else {
        return;
    };
    app.slash("scale web 5").by(ALICE).send().await;
    let posted = slack_wait(&app, "chat.postMessage", 1).await;
    let text = text_of(&posted[0]);
    assert!(
        text.contains("*Plan*") && text.contains("would scale web to 5 replicas"),
        "{text}"
    );
    // The plan's output cannot mention the channel, close the code block or plant a link.
    assert!(
        text.contains("&lt;!channel&gt; ''' &lt;https://evil.example|ok&gt;"),
        "{text}"
    );
    assert!(!text.contains("<!channel>"), "{text}");
    let request = app
        .services
        .store
        .pending_approvals()
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        request.plan_output.as_deref(),
        Some("would scale web to 5 replicas\n<!channel> ``` <https://evil.example|ok>")
    );
    // A failing plan requests nothing and says why.
    let ack = app.slash("risky").by(ALICE).send().await;
    let reply = app.reply_text(&ack).await;
    assert!(
        reply.starts_with("The plan step did not succeed"),
        "{reply}"
    );
    assert!(reply.contains("error: drift"), "{reply}");
    assert_eq!(
        app.services.store.pending_approvals().await.unwrap().len(),
        1
    );
    app.stop().await;
}

/// An app whose `slowpoke` runbook runs `sh -c body`, requested and already running as job 1.
async fn running_slowpoke(
    db: Db,
    name: &str,
    dir: &Path,
    body: &str,
    lease: &str,
) -> Option<TestApp> {
    let extra = format!(
        r#"
[[runbooks]]
name = "slowpoke"
usage = "slowpoke"
run = {{ kind = "command", argv = ["sh", "-c", {body:?}] }}
"#
    );
    let script = write_script(dir, "deploy.sh", DEPLOY);
    let app = TestApp::on(db, name)
        .config(&config_with_lease(&script, &extra, lease))
        .start()
        .await?;
    app.slash("slowpoke").send().await;
    wait_for_status(&app, 1, JobStatus::Running).await;
    Some(app)
}

both_stores!(a_worker_that_loses_its_lease_stops_its_job);

/// If a job's lease is taken from it (here: reaped while the worker still runs it), the worker
/// stops the job at its next heartbeat and records nothing over the reaper's verdict.
async fn a_worker_that_loses_its_lease_stops_its_job(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let marker = dir.path().join("still-running");
    // Long enough that only the worker's stop can end it before the test's deadline.
    let body = format!(
        "echo $$ > {}; sleep 20; touch {}",
        pid_file.display(),
        marker.display()
    );
    let Some(app) = running_slowpoke(db, "rb_lease_loss", dir.path(), &body, "1s").await else {
        return;
    };
    let pid = wait_for_pid(&pid_file).await;
    // Reap it now, as another replica would after a long stall.
    let now = time::OffsetDateTime::now_utc();
    let reaped = app
        .services
        .store
        .reap_expired_leases(now, now + time::Duration::hours(1), |j| {
            pantheon::domain::audit::AuditEntry::new(
                &j.correlation_id,
                "test",
                "job",
                pantheon::domain::audit::Outcome::Failed,
            )
        })
        .await
        .unwrap();
    assert_eq!(reaped.len(), 1);
    // The worker finds its lease gone at its next heartbeat (a third of a lease) and stops it.
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while proc_dir.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !proc_dir.exists(),
        "the worker stopped the job when it found its lease gone"
    );
    assert!(!marker.exists(), "stopped, not left to finish");
    let job = app.services.store.job(1).await.unwrap().unwrap();
    assert_eq!(
        job.status,
        JobStatus::Interrupted,
        "the reaper's verdict stands: {job:?}"
    );
    app.stop().await;
}

/// The pid a slowpoke job's script wrote to `file`.
async fn wait_for_pid(file: &Path) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both_stores!(a_worker_that_cannot_renew_its_lease_stops_its_job_in_time);

/// Fencing when the database stops answering: with the jobs table locked, a heartbeat neither
/// succeeds nor fails (Postgres waits on the lock; SQLite waits out its 10 s busy timeout). The
/// worker must still stop the job, one that ignores SIGTERM too, before a reaper may hand it to
/// another worker.
async fn a_worker_that_cannot_renew_its_lease_stops_its_job_in_time(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let marker = dir.path().join("finished");
    let body = format!(
        "trap '' TERM; echo $$ > {}; sleep 20; touch {}",
        pid_file.display(),
        marker.display()
    );
    // A lease of 3 s leaves the worker a second of slack on a busy machine (see below).
    let lease = Duration::from_secs(3);
    let Some(app) = running_slowpoke(db, "rb_lease_hang", dir.path(), &body, "3s").await else {
        return;
    };
    let pid = wait_for_pid(&pid_file).await;

    // Every write to the jobs table now waits, so the lease cannot be renewed.
    enum Held {
        Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
        Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    }
    let held = match &app.services.store {
        pantheon::store::Store::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .unwrap();
            Held::Postgres(tx)
        }
        pantheon::store::Store::Sqlite(pools) => {
            let pool = &pools.reads;
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut *conn)
                .await
                .unwrap();
            Held::Sqlite(conn)
        }
    };
    let locked_at = std::time::Instant::now();
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    while proc_dir.exists() && locked_at.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = !proc_dir.exists();
    // Let the database answer again before asserting, so the app can stop cleanly either way.
    match held {
        Held::Postgres(tx) => tx.rollback().await.unwrap(),
        Held::Sqlite(mut conn) => {
            sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
        }
    }
    let after = locked_at.elapsed();
    assert!(
        stopped,
        "the job's process still ran {after:?} after its heartbeats stopped getting through"
    );
    // The last renewal was at most a third of a lease before the lock. A reaper may act half a
    // lease after the lease ends, so the job must be gone within one and a half leases of the
    // lock even though it ignores SIGTERM. The worker aims for seven sixths (stop while a sixth
    // is left, then a third of a lease after SIGTERM), which leaves a third of a lease to spare.
    assert!(
        after < lease * 3 / 2,
        "the job was stopped only {after:?} after the lock"
    );
    // The reaper then finds the lease run out and says what happened; the job never finished.
    wait_for_status(&app, 1, JobStatus::Interrupted).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!marker.exists(), "the job was stopped, not left to finish");
    app.stop().await;
}
