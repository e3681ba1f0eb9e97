//! Deploy safety end to end, on SQLite and Postgres, through signed slash commands and clicks:
//! locks, freeze windows, break-glass overrides, deploy history and rollback.

use std::time::Duration;

use pantheon::domain::job::JobStatus;
use serde_json::Value;
use time::OffsetDateTime;

use crate::{
    both_stores,
    harness::{ALICE, CHANNEL, Db, JANE, JOE, TestApp, slack_calls},
    runbooks::{job_ended as ended, only_request_id, run_next_job, write_script},
};

/// In the override group only.
const ANN: &str = "U04ANN";

/// Says what it deploys; a version called `broken` fails.
const DEPLOY: &str = r#"echo "deploying $1 $2 to $3"; [ "$2" != broken ]"#;

fn config(script: &str, extra: &str) -> String {
    format!(
        r#"
[groups]
approvers = ["U02JANE", "U03JOE"]
admins    = ["U03JOE"]
sre       = ["U04ANN"]
deployers = ["*"]

[permissions]
deploy = ["deployers"]

[deploy]
override_group = "sre"

[jobs]
workers = 2
lease = "10s"
poll = "100ms"

[[runbooks]]
name     = "deploy"
usage    = "deploy {{app}} {{version}} to {{env}}"
params   = {{ app = "^[a-z0-9-]+$", version = "^[A-Za-z0-9._-]+$", env = "^(staging|production)$" }}
target   = "{{app}}/{{env}}"
run      = {{ kind = "command", argv = ["{script}", "{{app}}", "{{version}}", "{{env}}"], timeout = "10s" }}
approval = {{ group = "approvers", count = 1, expires = "1h", when = {{ env = "production" }} }}
deploy   = {{ app = "{{app}}", env = "{{env}}", version = "{{version}}" }}
{extra}
"#
    )
}

async fn start_app(
    db: Db,
    test: &str,
    extra: &str,
    stepped: bool,
) -> Option<(TestApp, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", DEPLOY);
    let mut app = TestApp::on(db, test)
        .config(&config(&script, extra))
        .with_slack_api();
    if stepped {
        app = app.stepped();
    }
    Some((app.start().await?, dir))
}

async fn start(db: Db, test: &str, extra: &str) -> Option<(TestApp, tempfile::TempDir)> {
    start_app(db, test, extra, false).await
}

/// Times in replies, made stable for snapshots.
fn stable(text: &str) -> String {
    let re = regex::Regex::new(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC").unwrap();
    re.replace_all(text, "[time]").into_owned()
}

async fn say(app: &TestApp, user: &str, text: &str) -> Value {
    let ack = app.slash(text).by(user).send().await;
    app.reply(&ack).await
}

async fn said(app: &TestApp, user: &str, text: &str) -> String {
    say(app, user, text).await["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn actions(app: &TestApp, action: &str) -> Vec<pantheon::domain::audit::AuditRecord> {
    app.services
        .store
        .recent_audit(500)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == action)
        .collect()
}

both_stores!(
    a_lock_refuses_runs_until_its_holder_or_an_admin_unlocks,
    environment_and_global_locks_cover_every_target_in_them,
    locking_what_no_runbook_runs_on_is_refused,
    two_people_locking_at_once_one_wins,
    a_lock_taken_after_approval_stops_the_job_when_it_starts,
    a_lock_that_expires_while_a_request_waits_does_not_stop_it,
    a_forced_run_over_a_lock_needs_one_more_approval_from_the_override_group,
    a_freeze_refuses_runs_with_its_name_and_end,
    a_job_approved_before_a_freeze_began_is_checked_again_when_it_starts,
    deploys_and_where_tell_what_is_where,
    rollback_asks_for_the_previous_good_version,
    a_rollback_with_nothing_to_go_back_to_is_refused,
    force_without_an_override_group_is_refused,
    an_override_does_not_cover_a_lock_taken_after_it_was_asked_for,
);

async fn an_override_does_not_cover_a_lock_taken_after_it_was_asked_for(db: Db) {
    let Some((app, _dir)) = start_app(db, "ds_force_later", "", true).await else {
        return;
    };
    say(&app, JOE, "lock api/production migrating").await;
    let asked = said(&app, ALICE, "deploy api 2.0 to production --force").await;
    assert!(asked.contains("overrides:"), "{asked}");
    // While it waits, an incident: everything is locked. The override was not for that.
    say(&app, JOE, "lock --global incident 7").await;
    assert_eq!(app.click(JANE, "approval_approve", "1").await.status, 200);
    assert_eq!(app.click(ANN, "approval_approve", "1").await.status, 200);
    let job_id = run_next_job(&app).await;
    let job = app.services.store.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.starts_with(
            "not started: `api/production (everything is locked)` is locked by U03JOE: incident 7"
        ),
        "{error}"
    );
    assert!(
        !error.contains("migrating"),
        "the lock it overrode does not stop it: {error}"
    );
    // Without the global lock, the same override runs.
    say(&app, JOE, "unlock --global").await;
    said(&app, ALICE, "deploy api 2.1 to production --force").await;
    app.click(JANE, "approval_approve", "2").await;
    app.click(ANN, "approval_approve", "2").await;
    let job_id = run_next_job(&app).await;
    let job = app.services.store.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    app.stop().await;
}

async fn force_without_an_override_group_is_refused(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", DEPLOY);
    let without = config(&script, "").replace("[deploy]\noverride_group = \"sre\"\n", "");
    assert!(!without.contains("override_group"));
    let Some(app) = TestApp::on(db, "ds_no_override")
        .config(&without)
        .with_slack_api()
        .start()
        .await
    else {
        return;
    };
    say(&app, JOE, "lock api/production").await;
    let plain = said(&app, ALICE, "deploy api 2.0 to production").await;
    assert!(
        stable(&plain).ends_with("since [time]. Nothing was requested."),
        "no hint at an override that is not set up: {plain}"
    );
    let forced = said(&app, ALICE, "deploy api 2.0 to production --force").await;
    assert!(
        forced.ends_with("Nothing was requested: no override is set up (`[deploy] override_group` names who may approve one)."),
        "{forced}"
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

async fn a_lock_refuses_runs_until_its_holder_or_an_admin_unlocks(db: Db) {
    let Some((app, _dir)) = start(db, "ds_lock", "").await else {
        return;
    };
    let locked = say(&app, ALICE, "lock api/production migrating the database").await;
    assert_eq!(
        locked["response_type"], "in_channel",
        "posted in the channel: {locked}"
    );
    insta::assert_snapshot!("lock_taken", stable(locked["text"].as_str().unwrap()));

    let refused = said(&app, JANE, "deploy api 2.0 to production").await;
    assert_eq!(
        stable(&refused),
        "`api/production` is locked by <@U01ALICE>: migrating the database, since [time]. Nothing was requested. To override it, ask again with `--force`: that needs one more approval, from `sre`."
    );
    assert!(
        app.services
            .store
            .pending_approvals()
            .await
            .unwrap()
            .is_empty()
    );
    // Other targets are not locked.
    let staging = said(&app, JANE, "deploy api 2.0 to staging").await;
    assert!(staging.contains("Queued deploy #1"), "{staging}");
    assert_eq!(ended(&app, 1).await.status, JobStatus::Succeeded);

    let list = said(&app, JANE, "locks").await;
    assert!(
        stable(&list)
            .contains("`api/production` by <@U01ALICE>: migrating the database · since [time]"),
        "{list}"
    );

    // Help is answered in the acknowledgement itself.
    let help = app.slash("help").by(JANE).send().await.text();
    assert!(
        help.contains("🔒 Locked now: `api/production` (<@U01ALICE>)"),
        "help's status line names the lock: {help}"
    );

    // Jane is neither the holder nor an admin.
    let not_hers = said(&app, JANE, "unlock api/production").await;
    assert_eq!(
        not_hers,
        "`api/production` is locked by <@U01ALICE>; only they, or whoever may break locks (`lock.break`; by default admins), can unlock it."
    );
    // Joe is an admin: he may break it, and the message says whose it was.
    let broken = say(&app, JOE, "unlock api/production").await;
    assert_eq!(broken["response_type"], "in_channel");
    assert_eq!(
        broken["text"],
        "🔓 <@U03JOE> unlocked `api/production` (it was held by <@U01ALICE>)."
    );
    assert_eq!(
        said(&app, JOE, "unlock api/production").await,
        "`api/production` is not locked."
    );
    // Its holder unlocks their own.
    say(&app, ALICE, "lock api/production").await;
    assert_eq!(
        said(&app, ALICE, "unlock api/production").await,
        "🔓 <@U01ALICE> unlocked `api/production`."
    );
    let ok = said(&app, JANE, "deploy api 2.0 to production").await;
    assert!(ok.contains("waiting for 1 approval"), "{ok}");

    // Every lock and unlock is on the audit trail, in the commit that made it.
    let taken = actions(&app, "lock.take").await;
    let released = actions(&app, "lock.release").await;
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert_eq!(released.len(), 2, "{released:?}");
    assert!(
        taken.iter().any(|r| r.entry.actor == ALICE
            && r.entry.detail.as_deref() == Some("locked api/production: migrating the database")),
        "{taken:?}"
    );
    assert!(
        released.iter().any(|r| r.entry.actor == JOE
            && r.entry
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with("unlocked api/production (held by U01ALICE"))),
        "{released:?}"
    );
    app.stop().await;
}

async fn environment_and_global_locks_cover_every_target_in_them(db: Db) {
    let Some((app, _dir)) = start(db, "ds_env_lock", "").await else {
        return;
    };
    let locked = said(&app, JOE, "lock production for 2h release week").await;
    assert!(
        stable(&locked).starts_with("🔒 <@U03JOE> locked `production`: release week until [time]."),
        "{locked}"
    );
    let refused = said(&app, ALICE, "deploy web 1.0 to production").await;
    assert!(
        stable(&refused).starts_with(
            "`web/production (production is locked)` is locked by <@U03JOE>: release week, since [time], until [time]."
        ),
        "{refused}"
    );
    assert!(
        said(&app, ALICE, "deploy web 1.0 to staging")
            .await
            .contains("Queued deploy #")
    );
    ended(&app, 1).await;

    let global = said(&app, JOE, "lock --global").await;
    assert!(
        global.starts_with("🔒 <@U03JOE> locked `everything`"),
        "{global}"
    );
    let refused = said(&app, ALICE, "deploy web 1.1 to staging").await;
    assert!(
        refused.starts_with("`web/staging (everything is locked)` is locked by <@U03JOE>"),
        "{refused}"
    );
    // `run` goes through the same checks.
    let run = said(&app, ALICE, "run deploy app=web version=1.1 env=staging").await;
    assert!(run.contains("everything is locked"), "{run}");
    assert_eq!(
        said(&app, JOE, "unlock --global").await,
        "🔓 <@U03JOE> unlocked `everything`."
    );
    assert!(
        said(&app, ALICE, "deploy web 1.1 to staging")
            .await
            .contains("Queued deploy #")
    );
    app.stop().await;
}

async fn locking_what_no_runbook_runs_on_is_refused(db: Db) {
    let Some((app, _dir)) = start(db, "ds_lock_unknown", "").await else {
        return;
    };
    for name in ["api/qa", "qa", "nothing-here", "api/production/extra"] {
        let refused = said(&app, ALICE, &format!("lock {name}")).await;
        assert!(
            refused.starts_with(&format!("No runbook runs on `{name}`")),
            "{name}: {refused}"
        );
    }
    let bad = said(&app, ALICE, "lock api/production for 45d").await;
    assert_eq!(
        bad,
        "A lock lasts between 1 second and 30 days (or, without `for`, until unlocked)."
    );
    // `for` that is not a duration starts the reason; a name is one lock whatever its case.
    let reason = said(&app, ALICE, "lock API/Production for the migration").await;
    assert!(
        reason.contains("locked `api/production`: for the migration."),
        "{reason}"
    );
    let again = said(&app, JANE, "lock api/production").await;
    assert!(
        again.starts_with("`api/production` is already locked by <@U01ALICE>: for the migration"),
        "{again}"
    );
    assert!(actions(&app, "lock.take").await.len() == 1);
    app.stop().await;
}

async fn two_people_locking_at_once_one_wins(db: Db) {
    let Some((app, _dir)) = start(db, "ds_lock_race", "").await else {
        return;
    };
    for round in 0..5 {
        let (a, b) = tokio::join!(
            say(&app, ALICE, "lock api/staging alice's"),
            say(&app, JANE, "lock api/staging jane's")
        );
        let texts = [a["text"].as_str().unwrap(), b["text"].as_str().unwrap()];
        let won: Vec<&&str> = texts.iter().filter(|t| t.starts_with("🔒")).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one lock: {texts:?}");
        let lost = texts.iter().find(|t| !t.starts_with("🔒")).unwrap();
        let holder = app
            .services
            .store
            .locks(OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert_eq!(holder.len(), 1);
        let holder = &holder[0];
        assert!(
            lost.starts_with(&format!(
                "`api/staging` is already locked by <@{}>",
                holder.holder
            )),
            "the loser is told who holds it: {lost}"
        );
        let unlock = said(&app, JOE, "unlock api/staging").await;
        assert!(unlock.starts_with("🔓"), "{unlock}");
    }
    assert_eq!(actions(&app, "lock.take").await.len(), 5);
    app.stop().await;
}

async fn a_lock_taken_after_approval_stops_the_job_when_it_starts(db: Db) {
    let Some((app, _dir)) = start_app(db, "ds_lock_start", "", true).await else {
        return;
    };
    let asked = said(&app, ALICE, "deploy api 2.0 to production").await;
    assert!(asked.contains("waiting for 1 approval"), "{asked}");
    let id = only_request_id(&app).await;
    assert_eq!(
        app.click(JANE, "approval_approve", &id.to_string())
            .await
            .status,
        200
    );
    // Approved and queued; then someone locks the target before a worker takes it.
    say(&app, JOE, "lock api/production incident 42").await;
    let job_id = run_next_job(&app).await;
    let job = app.services.store.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert!(
        job.error.as_deref().is_some_and(
            |e| e.starts_with("not started: `api/production` is locked by U03JOE: incident 42")
        ),
        "{job:?}"
    );
    assert_eq!(job.started_at, None, "it never ran");
    assert!(
        !app.job_log_lines(job_id)
            .await
            .iter()
            .any(|l| l.contains("deploying")),
        "the script did not run"
    );
    app.stop().await;
}

async fn a_lock_that_expires_while_a_request_waits_does_not_stop_it(db: Db) {
    let Some((app, _dir)) = start_app(db, "ds_lock_expiry", "", true).await else {
        return;
    };
    said(&app, ALICE, "deploy api 2.0 to production").await;
    let id = only_request_id(&app).await;
    let locked = said(&app, JOE, "lock api/production for 2s quick check").await;
    assert!(locked.starts_with("🔒"), "{locked}");
    // While it holds, a new request is refused.
    let refused = said(&app, ALICE, "deploy api 2.1 to production").await;
    assert!(
        refused.contains("is locked by <@U03JOE>: quick check"),
        "{refused}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        said(&app, JANE, "locks")
            .await
            .contains("Nothing is locked.")
    );
    assert_eq!(
        app.click(JANE, "approval_approve", &id.to_string())
            .await
            .status,
        200
    );
    let job_id = run_next_job(&app).await;
    let job = app.services.store.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    // Its row is gone for good once someone locks the name again.
    let again = said(&app, ALICE, "lock api/production").await;
    assert!(again.starts_with("🔒 <@U01ALICE> locked"), "{again}");
    app.stop().await;
}

async fn a_forced_run_over_a_lock_needs_one_more_approval_from_the_override_group(db: Db) {
    let Some((app, _dir)) = start(db, "ds_force", "").await else {
        return;
    };
    say(&app, JOE, "lock production migrating the database").await;
    let asked = said(&app, ALICE, "deploy api 2.0 to production --force").await;
    assert_eq!(
        stable(&asked),
        "Request #1 for deploy overrides: `api/production (production is locked)` is locked by U03JOE: migrating the database, since [time]. It is waiting for 1 approval from `approvers` and one from `sre` (break-glass)."
    );
    let posted = slack_calls(app.slack_api.as_ref().unwrap(), "chat.postMessage").await;
    let approval = posted
        .iter()
        .find(|m| m.to_string().contains("Approval needed"))
        .expect("an approval message");
    assert_eq!(approval["channel"], CHANNEL);
    let shown = approval.to_string();
    assert!(
        shown.contains("*Break-glass:* this run overrides a lock or freeze: `api/production (production is locked)`"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "Needs 1 approval from `approvers` and one from `sre` (break-glass) (0 so far)"
        ),
        "{shown}"
    );

    assert_eq!(app.click(JANE, "approval_approve", "1").await.status, 200);
    let counted = app
        .services
        .store
        .approval_request(1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counted.approvers(), ["U02JANE"]);
    // Joe is an approver but not of the override group: the last approval cannot be his.
    let joe = app.click(JOE, "approval_approve", "1").await;
    let reply = app.click_reply(&joe).await;
    assert_eq!(
        reply["text"],
        "Request #1 overrides a lock or freeze: its last approval must come from the `sre` group."
    );
    assert_eq!(app.click(ANN, "approval_approve", "1").await.status, 200);
    let approved = app
        .services
        .store
        .approval_request(1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(approved.status.as_str(), "approved");
    assert!(approved.votes.iter().any(|v| v.voter == ANN && v.overrider));
    let job = ended(&app, approved.job_id.unwrap()).await;
    assert_eq!(
        job.status,
        JobStatus::Succeeded,
        "the lock does not stop an override: {job:?}"
    );
    assert!(
        job.overrides
            .as_deref()
            .is_some_and(|o| o.contains("production is locked"))
    );

    // The audit rows say so plainly.
    let request_row = actions(&app, "approval.request").await;
    assert!(
        request_row[0].entry.detail.as_deref().is_some_and(|d| d
            .contains("needs 2 from approvers; expires")
            && d.contains(
                "; overrides: `api/production (production is locked)` is locked by U03JOE"
            )
            && d.contains("one of the approvals must come from sre")),
        "{request_row:?}"
    );
    let enqueue = actions(&app, "job.enqueue").await;
    assert!(
        enqueue[0]
            .entry
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("break-glass, overriding:")),
        "{enqueue:?}"
    );
    let refused = actions(&app, "approval.approve").await;
    assert!(
        refused.iter().any(|r| r.entry.actor == JOE
            && r.entry.detail.as_deref() == Some("refused: needs the override group")),
        "{refused:?}"
    );

    // The job page says it overrode the lock, and shows the lock still held.
    let link = app
        .services
        .links
        .job_url(job.id, ALICE, OffsetDateTime::now_utc());
    let url = url::Url::parse(&link).unwrap();
    let page = app
        .client
        .get(app.url(&format!("{}?{}", url.path(), url.query().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<th>break-glass</th><td><strong>overrode</strong>"),
        "{html}"
    );
    assert!(
        html.contains("<th>locked now</th><td>production by U03JOE: migrating the database"),
        "{html}"
    );
    assert!(html.contains("U04ANN (approve, override,"), "{html}");

    // A runbook run that needs no approval of its own needs the override group's, once.
    say(&app, JOE, "lock api/staging").await;
    let forced = said(&app, ALICE, "deploy api 2.0 to staging force=yes").await;
    assert!(
        forced.contains("waiting for 1 approval from `sre` (break-glass)."),
        "{forced}"
    );
    let jane = app.click(JANE, "approval_approve", "2").await;
    assert_eq!(
        app.click_reply(&jane).await["text"],
        "Only members of the `sre` group can decide request #2."
    );
    assert_eq!(app.click(ANN, "approval_approve", "2").await.status, 200);
    let second = app
        .services
        .store
        .approval_request(2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.status.as_str(), "approved");
    // --force on what is not locked changes nothing: it queues as usual.
    let plain = said(&app, ALICE, "deploy web 1.0 to staging --force").await;
    assert!(plain.contains("Queued deploy #"), "{plain}");
    app.stop().await;
}

/// A fixed freeze from an hour ago to `hours` from now (UTC), for production.
fn freeze_now(hours: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let now = OffsetDateTime::now_utc();
    format!(
        r#"
[[freezes]]
name = "incident-freeze"
from = "{}"
to   = "{}"
environments = ["production"]
"#,
        (now - time::Duration::hours(1)).format(&f).unwrap(),
        (now + time::Duration::hours(hours)).format(&f).unwrap()
    )
}

async fn a_freeze_refuses_runs_with_its_name_and_end(db: Db) {
    let Some((app, _dir)) = start(db, "ds_freeze", &freeze_now(3)).await else {
        return;
    };
    let refused = said(&app, ALICE, "deploy api 2.0 to production").await;
    let end = OffsetDateTime::now_utc() + time::Duration::hours(3);
    let f = time::macros::format_description!("[year]-[month]-[day]");
    assert!(
        refused.starts_with(&format!(
            "`api/production` is frozen: *incident-freeze* (production), until {} {}",
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
                [end.weekday().number_days_from_monday() as usize],
            end.format(&f).unwrap()
        )),
        "the window's name and its end, in its zone: {refused}"
    );
    assert!(
        refused.contains(" UTC. Nothing was requested. To override it, ask again with `--force`"),
        "{refused}"
    );
    assert!(
        said(&app, ALICE, "deploy api 2.0 to staging")
            .await
            .contains("Queued deploy #")
    );
    let forced = said(&app, ALICE, "deploy api 2.0 to production --force").await;
    assert!(
        forced.contains("overrides: `api/production` is frozen: *incident-freeze*"),
        "{forced}"
    );
    app.stop().await;
}

async fn a_job_approved_before_a_freeze_began_is_checked_again_when_it_starts(db: Db) {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let begins = OffsetDateTime::now_utc() + time::Duration::seconds(8);
    let extra = format!(
        r#"
[[freezes]]
name = "change-window"
from = "{}"
to   = "{}"
runbooks = ["deploy"]
environments = ["production"]
"#,
        begins.format(&f).unwrap(),
        (begins + time::Duration::hours(1)).format(&f).unwrap()
    );
    let Some((app, _dir)) = start_app(db, "ds_freeze_start", &extra, true).await else {
        return;
    };
    let asked = said(&app, ALICE, "deploy api 2.0 to production").await;
    assert!(
        asked.contains("waiting for 1 approval"),
        "asked before the freeze began (it begins 8 s after the test started): {asked}"
    );
    let id = only_request_id(&app).await;
    assert_eq!(
        app.click(JANE, "approval_approve", &id.to_string())
            .await
            .status,
        200
    );
    assert!(
        OffsetDateTime::now_utc() < begins,
        "approved before the freeze began"
    );
    let wait = begins - OffsetDateTime::now_utc() + time::Duration::milliseconds(500);
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    let job_id = run_next_job(&app).await;
    let job = app.services.store.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert!(
        job.error.as_deref().is_some_and(|e| e.starts_with(
            "not started: `api/production` is frozen: *change-window* (deploy · production), until"
        )),
        "{job:?}"
    );
    assert_eq!(job.started_at, None);
    app.stop().await;
}

async fn deploys_and_where_tell_what_is_where(db: Db) {
    let Some((app, _dir)) = start(db, "ds_history", "").await else {
        return;
    };
    assert_eq!(
        said(&app, ALICE, "deploys api").await,
        "No deploys of `api` yet."
    );
    assert_eq!(
        said(&app, ALICE, "where api").await,
        "`api` has no successful deploy yet."
    );
    said(&app, ALICE, "deploy api 1.0 to staging").await;
    ended(&app, 1).await;
    said(&app, ALICE, "deploy api 1.1 to staging").await;
    ended(&app, 2).await;
    said(&app, ALICE, "deploy api 1.0 to production").await;
    app.click(JANE, "approval_approve", "1").await;
    ended(&app, 3).await;
    said(&app, ALICE, "deploy web 9.9 to staging").await;
    ended(&app, 4).await;

    let history = say(&app, JOE, "deploys api").await;
    let text = stable(history["text"].as_str().unwrap());
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" → ")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("`1.0` → `production` · *succeeded*"),
        "{text}"
    );
    assert!(
        lines[0].contains("by <@U01ALICE> · approved by <@U02JANE>"),
        "{text}"
    );
    assert!(
        lines[1].contains("`1.1` → `staging` · *succeeded*"),
        "{text}"
    );
    assert!(!lines[1].contains("approved by"), "{text}");
    assert!(lines[2].contains("`1.0` → `staging`"), "{text}");
    assert!(
        !text.contains("9.9"),
        "another app's deploys are not listed: {text}"
    );
    // Private answers link each job to its page.
    assert!(text.contains("/jobs/3?"), "{text}");
    let only_staging = said(&app, JOE, "deploys api staging").await;
    assert!(!only_staging.contains("production"), "{only_staging}");

    let where_is = stable(&said(&app, JOE, "where api").await);
    assert!(
        where_is.contains("`production`: `1.0` · #3 by <@U01ALICE>"),
        "{where_is}"
    );
    assert!(
        where_is.contains("`staging`: `1.1` · #2 by <@U01ALICE>"),
        "{where_is}"
    );
    insta::assert_snapshot!("where_api", where_is);
    app.stop().await;
}

async fn rollback_asks_for_the_previous_good_version(db: Db) {
    let Some((app, _dir)) = start(db, "ds_rollback", "").await else {
        return;
    };
    for (n, v) in [(1, "1.0"), (2, "1.1")] {
        said(&app, ALICE, &format!("deploy api {v} to staging")).await;
        ended(&app, n).await;
    }
    // A failed deploy is not where we go back to, nor what is "current".
    said(&app, ALICE, "deploy api broken to staging").await;
    let broken = ended(&app, 3).await;
    assert_eq!(broken.status, JobStatus::Failed);

    let back = said(&app, JANE, "rollback api staging").await;
    assert!(
        back.starts_with(
            "↩️ Rollback of `api` on `staging`: `1.1` → `1.0` (the version #1 deployed)."
        ),
        "{back}"
    );
    assert!(back.contains("Queued deploy #4"), "{back}");
    let job = ended(&app, 4).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.params["version"], "1.0");
    assert_eq!(job.requested_by, JANE);
    assert!(
        said(&app, JANE, "where api")
            .await
            .contains("`staging`: `1.0` · #4")
    );

    // On production the same approval policy holds, and approvers are told what it goes back to.
    for v in ["2.0", "2.1"] {
        said(&app, ALICE, &format!("deploy api {v} to production")).await;
        let id = only_request_id(&app).await;
        app.click(JOE, "approval_approve", &id.to_string()).await;
        let job_id = app
            .services
            .store
            .approval_request(id)
            .await
            .unwrap()
            .unwrap()
            .job_id
            .unwrap();
        ended(&app, job_id).await;
    }
    let back = said(&app, ALICE, "rollback api production").await;
    assert!(
        back.starts_with("↩️ Rollback of `api` on `production`: `2.1` → `2.0`"),
        "{back}"
    );
    assert!(
        back.contains("is waiting for 1 approval from `approvers`"),
        "{back}"
    );
    let id = only_request_id(&app).await;
    let request = app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.params["version"], "2.0");
    assert!(
        request.plan_output.as_deref().is_some_and(
            |p| p.starts_with("Rollback of api on production: 2.1 → 2.0 (the version #")
        ),
        "{request:?}"
    );
    // And the same checks: a lock refuses a rollback like any run.
    say(&app, JOE, "lock api/staging").await;
    let refused = said(&app, ALICE, "rollback api staging").await;
    assert!(
        refused.contains("`api/staging` is locked by <@U03JOE>"),
        "{refused}"
    );
    app.stop().await;
}

async fn a_rollback_with_nothing_to_go_back_to_is_refused(db: Db) {
    let Some((app, _dir)) = start(db, "ds_rollback_none", "").await else {
        return;
    };
    assert_eq!(
        said(&app, ALICE, "rollback api staging").await,
        "`api` has no successful deploy on `staging`, so there is nothing to roll back to."
    );
    said(&app, ALICE, "deploy api 1.0 to staging").await;
    ended(&app, 1).await;
    // The same version again is not an earlier one.
    said(&app, ALICE, "deploy api 1.0 to staging").await;
    ended(&app, 2).await;
    assert_eq!(
        said(&app, ALICE, "rollback api staging").await,
        "There is no successful deploy of `api` on `staging` before the current `1.0` (#2): nothing to roll back to."
    );
    assert!(
        app.services.store.jobs(None, 10).await.unwrap().len() == 2,
        "nothing queued"
    );
    app.stop().await;
}

both_stores!(a_deploy_is_recorded_on_github_with_its_statuses);

async fn a_deploy_is_recorded_on_github_with_its_statuses(db: Db) {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers};
    let gh = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/repos/acme/api/deployments"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 77})))
        .mount(&gh)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/repos/acme/api/deployments/77/statuses"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 1})))
        .mount(&gh)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/repos/acme/web/deployments"))
        .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
        .mount(&gh)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", DEPLOY);
    let toml = config(&script, "").replace(
        r#"version = "{version}" }"#,
        r#"version = "{version}", github = "acme/{app}" }"#,
    );
    assert!(toml.contains("github = \"acme/{app}\""));
    let Some(app) = TestApp::on(db, "ds_github_deployments")
        .config(&toml)
        .with_slack_api()
        .env("GITHUB_TOKEN", "ghp_deploytest00000000000000000000000")
        .env("GITHUB_API_URL", gh.uri())
        .start()
        .await
    else {
        return;
    };
    said(&app, ALICE, "deploy api 1.0 to staging").await;
    let job = ended(&app, 1).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    let calls = gh.received_requests().await.unwrap();
    let bodies: Vec<(String, Value)> = calls
        .iter()
        .map(|r| {
            (
                r.url.path().to_owned(),
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(bodies[0].0, "/repos/acme/api/deployments");
    assert_eq!(
        bodies[0].1,
        serde_json::json!({
            "ref": "1.0", "environment": "staging", "description": "deploy #1 by U01ALICE",
            "auto_merge": false, "required_contexts": []
        })
    );
    assert!(
        calls[0].headers["authorization"]
            .to_str()
            .unwrap()
            .ends_with("ghp_deploytest00000000000000000000000")
    );
    assert_eq!(bodies[1].0, "/repos/acme/api/deployments/77/statuses");
    assert_eq!(bodies[1].1["state"], "in_progress");
    assert_eq!(bodies[2].1["state"], "success");
    assert_eq!(bodies[2].1["environment"], "staging");
    // The worker writes a status's audit row once GitHub has answered, so the last one may
    // land just after the stub saw its request.
    let github = |r: &&pantheon::domain::audit::AuditRecord| r.entry.action.starts_with("github.");
    let rows = app
        .audit_until(&job.correlation_id, |rows| {
            rows.iter().filter(github).count() >= 3
        })
        .await;
    let steps: Vec<String> = rows
        .iter()
        .filter(github)
        .map(|r| {
            format!(
                "{}:{}",
                r.entry.action,
                r.entry.detail.as_deref().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "github.deployment:deployment 77 of acme/api: 1.0 to staging",
            "github.deployment_status:deployment 77 of acme/api: in_progress",
            "github.deployment_status:deployment 77 of acme/api: success",
        ]
    );
    assert!(
        app.job_log_lines(1)
            .await
            .iter()
            .any(|l| l.contains("recorded on GitHub as deployment 77 of acme/api"))
    );

    // GitHub failing does not fail the deploy: it is noted, audited as failed, and no status
    // is sent for a deployment that does not exist.
    said(&app, ALICE, "deploy web 2.0 to staging").await;
    let job = ended(&app, 2).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert!(
        app.job_log_lines(2)
            .await
            .iter()
            .any(|l| l.contains("not recorded on GitHub: acme/web:")),
        "{:?}",
        app.job_log_lines(2).await
    );
    let rows = app.audit_for(&job.correlation_id).await;
    assert!(
        rows.iter()
            .any(|r| r.entry.action == "github.deployment" && r.entry.outcome.as_str() == "failed")
    );
    assert_eq!(gh.received_requests().await.unwrap().len(), 4);
    app.stop().await;
}
