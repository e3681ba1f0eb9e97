//! Modals, comments on votes, the home tab and shortcuts, end to end on both stores: signed
//! slash commands, clicks, `view_submission`s and events in; a stand-in for Slack's Web API
//! (`views.open`, `views.publish`, `views.update`, `users.info`, `chat.*`) out. Payloads are in
//! the shapes of Bolt for Python's fixtures and Slack's docs (tests/fixtures/slack).

use std::time::Duration;

use pantheon::domain::{audit::Outcome, form::Purpose};
use serde_json::{Value, json};

use crate::{
    both_stores,
    harness::{ALICE, CHANNEL, Db, JANE, JOE, TestApp, UNKNOWN_USER, outcomes, slack_calls},
    runbooks::{config, only_request_id, write_script},
};

async fn start(
    db: Db,
    test: &str,
    tweak: impl Fn(String) -> String,
) -> Option<(TestApp, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", "echo deploying $1 $2 to $3");
    let app = TestApp::on(db, test)
        .config(&tweak(config(&script, "")))
        .with_slack_api()
        .start()
        .await?;
    Some((app, dir))
}

fn api(app: &TestApp) -> &wiremock::MockServer {
    app.slack_api.as_ref().unwrap()
}

/// The views sent to `views.open` so far (waiting up to 10 s for at least `n`).
async fn opened(app: &TestApp, n: usize) -> Vec<Value> {
    wait_for_calls(app, "views.open", n).await
}

async fn wait_for_calls(app: &TestApp, method: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let calls = slack_calls(api(app), method).await;
        if calls.len() >= n || std::time::Instant::now() > deadline {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A payload from tests/fixtures/slack (Bolt for Python's test fixtures; see its README).
pub(crate) fn fixture(name: &str) -> Value {
    let text = match name {
        "view_submission" => include_str!("../fixtures/slack/view_submission.json"),
        "shortcut" => include_str!("../fixtures/slack/shortcut.json"),
        "message_action" => include_str!("../fixtures/slack/message_action.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).unwrap()
}

/// Bolt for Python's `view_submission`, by `user` of workspace T1, of a view with this
/// metadata and these input values (field name → value; a choice as a select).
pub(crate) fn submission(
    user: &str,
    callback_id: &str,
    metadata: &str,
    values: &[(&str, &str)],
) -> Value {
    let mut state = serde_json::Map::new();
    for (field, value) in values {
        let element = if ["env", "decision", "runbook"].contains(field) {
            json!({"type": "static_select", "selected_option": {"text": {"type": "plain_text", "text": value}, "value": value}})
        } else if *field == "channel" {
            json!({"type": "conversations_select", "selected_conversation": value})
        } else if *field == "who" {
            json!({"type": "users_select", "selected_user": value})
        } else {
            json!({"type": "plain_text_input", "value": value})
        };
        state.insert((*field).to_owned(), json!({ "value": element }));
    }
    let mut payload = fixture("view_submission");
    payload["team"] = json!({"id": "T1", "domain": "acme"});
    payload["user"] =
        json!({"id": user, "username": "someone", "name": "someone", "team_id": "T1"});
    // Each submission has a trigger id of its own, even of the same view.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    payload["trigger_id"] = json!(format!("111.222.submit{n}"));
    payload["view"]["private_metadata"] = json!(metadata);
    payload["view"]["callback_id"] = json!(callback_id);
    payload["view"]["state"] = json!({ "values": state });
    payload
}

/// A view as snapshotted: its sealed state (different each time) replaced.
fn shown(view: &Value) -> Value {
    let mut view = view.clone();
    if view.get("private_metadata").is_some_and(|m| m != "") {
        view["private_metadata"] = json!("[sealed]");
    }
    view
}

async fn wait_pending(app: &TestApp) -> i64 {
    app.within(Duration::from_secs(10), async {
        loop {
            if let Ok(p) = app.services.store.pending_approvals().await
                && !p.is_empty()
            {
                return p[0].id;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

both_stores!(a_runbook_asked_for_alone_opens_a_form_whose_submission_runs_like_the_command);

/// `/ops deploy` opens a modal (a select for `env`, text for the others with their rule as
/// hint); the submission asks for the same run the typed command would, audited the same way.
async fn a_runbook_asked_for_alone_opens_a_form_whose_submission_runs_like_the_command(db: Db) {
    let Some((app, _dir)) = start(db, "forms_runbook", |c| c).await else {
        return;
    };
    let ack = app.slash("deploy").send().await;
    assert_eq!(
        (ack.status, ack.body.as_str()),
        (200, ""),
        "no text: the form opens"
    );
    let calls = opened(&app, 1).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["trigger_id"], "1.2.3");
    let view = &calls[0]["view"];
    insta::assert_json_snapshot!("form_runbook_deploy", shown(view));
    let rows = app.audit_for(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["succeeded"]);
    assert_eq!(
        rows[0].entry.detail.as_deref(),
        Some("asked for the parameters of `deploy` in a form")
    );
    // `run deploy` with some given: the same form, those filled in.
    app.slash("run deploy app=web").send().await;
    let calls = opened(&app, 2).await;
    let app_field = &calls[1]["view"]["blocks"][1];
    assert_eq!(app_field["block_id"], "app");
    assert_eq!(app_field["element"]["initial_value"], "web");

    let metadata = view["private_metadata"].as_str().unwrap();
    let (status, body) = app
        .interact(&submission(
            ALICE,
            "pantheon_form",
            metadata,
            &[("app", "api"), ("version", "v1.2"), ("env", "production")],
        ))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (200, ""),
        "accepted: the form closes"
    );
    let id = wait_pending(&app).await;
    let request = app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.requester, ALICE);
    assert_eq!(request.channel, CHANNEL);
    assert_eq!(request.target, "api/production");
    assert_eq!(
        request
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
        ["app=api", "env=production", "version=v1.2"]
    );
    // The approval message is posted as for the typed command, and the run is audited as
    // `run deploy …` with the usual rows.
    let posts = wait_for_calls(&app, "chat.postMessage", 1).await;
    assert!(
        posts.iter().any(|p| p["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Approval needed: deploy")),
        "{posts:?}"
    );
    let trail = app
        .services
        .store
        .audit_before(i64::MAX, 100)
        .await
        .unwrap();
    let run: Vec<_> = trail
        .iter()
        .filter(|r| {
            r.entry.command.as_deref() == Some("run deploy app=api version=v1.2 env=production")
        })
        .collect();
    assert!(
        run.iter().any(|r| r.entry.outcome == Outcome::Received)
            && run.iter().any(|r| r.entry.action == "approval.request"),
        "{run:?}"
    );
    // The requester hears of it privately in the channel.
    let private = wait_for_calls(&app, "chat.postEphemeral", 1).await;
    assert_eq!(private[0]["user"], ALICE);
    assert_eq!(private[0]["channel"], CHANNEL);
    app.stop().await;
}

both_stores!(wrong_values_are_answered_beside_their_fields_and_nothing_runs);

async fn wrong_values_are_answered_beside_their_fields_and_nothing_runs(db: Db) {
    let Some((app, _dir)) = start(db, "forms_errors", |c| c).await else {
        return;
    };
    app.slash("deploy").send().await;
    let view = opened(&app, 1).await[0]["view"].clone();
    let metadata = view["private_metadata"].as_str().unwrap();
    let (status, body) = app
        .interact(&submission(
            ALICE,
            "pantheon_form",
            metadata,
            &[
                ("app", "API server"),
                ("env", "prod"),
                ("version", "1\u{202e}2"),
            ],
        ))
        .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response_action"], "errors");
    let errors = answer["errors"].as_object().unwrap();
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["app", "env", "version"]);
    assert!(
        errors["app"].as_str().unwrap().contains("must match"),
        "{answer}"
    );
    assert!(errors["env"].as_str().unwrap().contains("prod"), "{answer}");
    assert!(
        errors["version"].as_str().unwrap().contains("invisible"),
        "{answer}"
    );
    // A missing value is said so.
    let (_, body) = app
        .interact(&submission(
            ALICE,
            "pantheon_form",
            metadata,
            &[("app", "api")],
        ))
        .await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["errors"]["env"], "Fill this in.");
    assert_eq!(answer["errors"]["version"], "Fill this in.");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.services
            .store
            .pending_approvals()
            .await
            .unwrap()
            .is_empty()
    );
    let trail = app
        .services
        .store
        .audit_before(i64::MAX, 100)
        .await
        .unwrap();
    let invalid = trail
        .iter()
        .filter(|r| r.entry.outcome == Outcome::Invalid && r.entry.action == "command")
        .count();
    assert_eq!(invalid, 2, "{trail:?}");
    app.stop().await;
}

both_stores!(a_changed_foreign_or_stale_form_is_refused_and_audited);

/// What a form does is sealed: another request id, another user's form, an unknown
/// `callback_id`, a bad or stale signature: refused, nothing done.
async fn a_changed_foreign_or_stale_form_is_refused_and_audited(db: Db) {
    let Some((app, _dir)) = start(db, "forms_tampered", |c| c).await else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    let sealed = app.services.links.seal(
        &Purpose::Run {
            runbook: "deploy".into(),
            channel: Some(CHANNEL.into()),
        },
        ALICE,
        now,
    );
    let values = [("app", "api"), ("version", "v1"), ("env", "staging")];
    // Changed: the channel swapped inside the seal.
    let mut parts: Vec<String> = sealed.split('.').map(str::to_owned).collect();
    use base64::Engine as _;
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"do":"run","runbook":"deploy","channel":"C0OTHER"}"#);
    let changed = parts.join(".");
    for (user, callback, metadata, said) in [
        (ALICE, "pantheon_form", changed.as_str(), "was changed"),
        (JOE, "pantheon_form", sealed.as_str(), "was changed"),
        (
            ALICE,
            "someone_elses_form",
            sealed.as_str(),
            "is not one of ours",
        ),
        (ALICE, "pantheon_form", "", "was changed"),
    ] {
        let (status, body) = app
            .interact(&submission(user, callback, metadata, &values))
            .await;
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["response_action"], "update", "{answer}");
        let text = answer["view"]["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap();
        assert!(
            text.contains(said) && text.contains("Nothing was done"),
            "{text}"
        );
        assert!(
            answer["view"].get("submit").is_none(),
            "a notice has nothing to submit"
        );
        if callback == "someone_elses_form" {
            insta::assert_json_snapshot!("form_refused_notice", answer);
        }
    }
    let trail = app
        .services
        .store
        .audit_before(i64::MAX, 100)
        .await
        .unwrap();
    let refused = trail
        .iter()
        .filter(|r| r.entry.action == "form" && r.entry.outcome == Outcome::Refused)
        .count();
    assert_eq!(refused, 4);
    // Expired: sealed more than a day ago.
    let old = app.services.links.seal(
        &Purpose::Run {
            runbook: "deploy".into(),
            channel: Some(CHANNEL.into()),
        },
        ALICE,
        now - time::Duration::hours(25),
    );
    let (_, body) = app
        .interact(&submission(ALICE, "pantheon_form", &old, &values))
        .await;
    assert!(body.contains("more than a day ago"), "{body}");
    // Signed with the wrong secret, or too long ago: the request itself is refused.
    let payload = submission(ALICE, "pantheon_form", &sealed, &values);
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    for (secret, ts) in [
        ("not-the-secret", crate::harness::now()),
        (crate::harness::SECRET, crate::harness::now() - 600),
    ] {
        let sig = pantheon::signature::sign_slack(
            &pantheon::signature::HmacKey::new(secret.as_bytes()),
            &ts.to_string(),
            form.as_bytes(),
        );
        let resp = app
            .post_slack(
                "/slack/interactions",
                form.clone(),
                &[
                    ("content-type", "application/x-www-form-urlencoded".into()),
                    ("x-slack-request-timestamp", ts.to_string()),
                    ("x-slack-signature", sig),
                ],
            )
            .await;
        assert_eq!(resp.status().as_u16(), 401);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
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

both_stores!(values_for_a_runbook_the_user_may_not_run_are_refused);

async fn values_for_a_runbook_the_user_may_not_run_are_refused(db: Db) {
    let Some((app, _dir)) = start(db, "forms_not_allowed", |c| {
        c.replace("deployers = [\"*\"]", "deployers = [\"U01ALICE\"]")
    })
    .await
    else {
        return;
    };
    // JOE may not deploy: `/ops deploy` gets the refusal, no form.
    let ack = app.slash("deploy").by(JOE).send().await;
    assert!(ack.text().contains("not allowed"), "{}", ack.body);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(slack_calls(api(&app), "views.open").await.is_empty());
    // A form sealed for JOE (say, opened before the permission was taken away).
    let sealed = app.services.links.seal(
        &Purpose::Run {
            runbook: "deploy".into(),
            channel: Some(CHANNEL.into()),
        },
        JOE,
        time::OffsetDateTime::now_utc(),
    );
    let (_, body) = app
        .interact(&submission(
            JOE,
            "pantheon_form",
            &sealed,
            &[("app", "api"), ("version", "v1"), ("env", "staging")],
        ))
        .await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response_action"], "errors");
    assert!(
        answer["errors"]["app"]
            .as_str()
            .unwrap()
            .contains("You are not allowed to run `/ops deploy`"),
        "{answer}"
    );
    let trail = app
        .services
        .store
        .audit_before(i64::MAX, 100)
        .await
        .unwrap();
    // The submission is answered at once: one row, the refusal.
    let joe: Vec<_> = trail
        .iter()
        .filter(|r| {
            r.entry.actor == JOE
                && r.entry.command.as_deref() == Some("run deploy app=api version=v1 env=staging")
        })
        .collect();
    assert_eq!(joe.len(), 1, "{joe:?}");
    assert_eq!(joe[0].entry.outcome, Outcome::Refused);
    assert!(
        joe[0]
            .entry
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("not allowed"),
        "{joe:?}"
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

both_stores!(an_expired_trigger_falls_back_to_the_usage_line);

async fn an_expired_trigger_falls_back_to_the_usage_line(db: Db) {
    let Some((app, _dir)) = start(db, "forms_expired_trigger", |c| c).await else {
        return;
    };
    let ack = app.slash("deploy").trigger("expired").send().await;
    assert_eq!(ack.status, 200);
    assert_eq!(
        ack.text(),
        "Usage: `/ops deploy {app} {version} to {env}` (`app` must match `^[a-z0-9-]+$`; `version` must match `^[A-Za-z0-9._-]+$`; `env` is one of staging, production)."
    );
    // The row saying the form was not opened follows the acknowledgement.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = app.audit_for(&ack.correlation_id).await;
        if rows.len() >= 3 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(outcomes(&rows), ["succeeded", "failed"]);
    assert!(
        rows[1]
            .entry
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("expired_trigger_id"),
        "{rows:?}"
    );
    app.stop().await;
}

both_stores!(a_vote_with_a_comment_is_stored_and_shown_everywhere);

/// "With comment…" opens a small form; the comment goes with the vote into the store, the
/// updated message, its thread, the job page and the audit row. One over the limit is refused.
async fn a_vote_with_a_comment_is_stored_and_shown_everywhere(db: Db) {
    let Some((app, _dir)) = start(db, "forms_comment", |c| c).await else {
        return;
    };
    let ack = app.slash("deploy api v7 to production").send().await;
    assert_eq!(ack.status, 200);
    let id = wait_pending(&app).await;
    assert_eq!(id, only_request_id(&app).await);
    let clicked = app.click(JANE, "approval_comment", &id.to_string()).await;
    assert_eq!(clicked.status, 200);
    let calls = opened(&app, 1).await;
    let view = &calls[0]["view"];
    insta::assert_json_snapshot!("form_vote_comment", shown(view));
    let metadata = view["private_metadata"].as_str().unwrap();

    let long = "x".repeat(501);
    let (_, body) = app
        .interact(&submission(
            JANE,
            "pantheon_form",
            metadata,
            &[("decision", "approve"), ("comment", &long)],
        ))
        .await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["errors"]["comment"],
        "At most 500 characters, please (this is 501)."
    );
    assert!(
        app.services
            .store
            .approval_request(id)
            .await
            .unwrap()
            .unwrap()
            .votes
            .is_empty()
    );

    let said = "Checked the <migration> & the dashboards";
    let (status, body) = app
        .interact(&submission(
            JANE,
            "pantheon_form",
            metadata,
            &[("decision", "approve"), ("comment", said)],
        ))
        .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let request = app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.votes.len(), 1);
    assert_eq!(request.votes[0].comment.as_deref(), Some(said));
    assert_eq!(request.votes[0].voter, JANE);
    // The updated message and its thread say it, escaped.
    let escaped = "Checked the &lt;migration&gt; &amp; the dashboards";
    let updates = wait_for_calls(&app, "chat.update", 1).await;
    assert!(
        updates
            .iter()
            .any(|u| u["text"].as_str().unwrap_or_default().contains(escaped)),
        "{updates:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let posts = slack_calls(api(&app), "chat.postMessage").await;
        if posts.iter().any(|p| {
            p["thread_ts"].is_string()
                && p["text"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&format!("<@{JANE}> approved: {escaped}"))
        }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{posts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The audit row.
    let trail = app
        .services
        .store
        .audit_before(i64::MAX, 200)
        .await
        .unwrap();
    assert!(
        trail.iter().any(|r| r.entry.action == "approval.approve"
            && r.entry.outcome == Outcome::Succeeded
            && r.entry
                .detail
                .as_deref()
                .unwrap_or_default()
                .ends_with(&format!("; comment: {said}"))),
        "{trail:?}"
    );
    assert!(trail.iter().any(|r| {
        r.entry.action == "approval.approve"
            && r.entry.outcome == Outcome::Invalid
            && r.entry
                .detail
                .as_deref()
                .unwrap_or_default()
                .contains("500 characters")
    }));
    // The job page.
    let job_id = request.job_id.expect("approved and queued");
    let url = app
        .services
        .links
        .job_url(job_id, ALICE, time::OffsetDateTime::now_utc());
    let path = url::Url::parse(&url).unwrap();
    let page = app
        .client
        .get(app.url(&format!("{}?{}", path.path(), path.query().unwrap())))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Checked the &lt;migration&gt; &amp; the dashboards"),
        "{page}"
    );
    app.stop().await;
}

both_stores!(the_home_tab_shows_what_waits_for_you);

async fn the_home_tab_shows_what_waits_for_you(db: Db) {
    let Some((app, _dir)) = start(db, "forms_home", |c| c).await else {
        return;
    };
    app.slash("deploy api v7 to production").send().await;
    let id = wait_pending(&app).await;
    app.slash("lock api/staging migrating").by(JOE).send().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app
        .services
        .store
        .locks(time::OffsetDateTime::now_utc())
        .await
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = |user: &str| json!({"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": "home", "event_ts": "1515449522000016"});
    assert_eq!(app.event(event(JANE)).await, 200);
    let published = wait_for_calls(&app, "views.publish", 1).await;
    assert_eq!(published[0]["user_id"], JANE);
    let home = &published[0]["view"];
    assert_eq!(home["type"], "home");
    let text = home.to_string();
    assert!(
        text.contains(&format!(
            "#{id} <@{ALICE}> asks to run *deploy* on `api/production`"
        )),
        "{text}"
    );
    assert!(
        text.contains("approval_approve") && text.contains("approval_comment"),
        "{text}"
    );
    assert!(text.contains("🔒 `api/staging` by <@U03JOE>"), "{text}");
    let when = regex::Regex::new(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC").unwrap();
    let stable: Value = serde_json::from_str(&when.replace_all(&text, "[time]")).unwrap();
    insta::assert_json_snapshot!("home_tab_approver", stable);
    // The requester sees their job-less request nowhere to approve, and their own requests
    // are not offered to them.
    assert_eq!(app.event(event(ALICE)).await, 200);
    let published = wait_for_calls(&app, "views.publish", 2).await;
    let mine = published[1]["view"].to_string();
    assert!(mine.contains("Nothing is waiting for you."), "{mine}");
    // Someone Slack does not know is shown nothing, and the refusal is audited.
    assert_eq!(app.event(event(UNKNOWN_USER)).await, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let trail = app
            .services
            .store
            .audit_before(i64::MAX, 100)
            .await
            .unwrap();
        if trail.iter().any(|r| {
            r.entry.action == "home"
                && r.entry.actor == UNKNOWN_USER
                && r.entry.outcome == Outcome::Refused
        }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slack_calls(api(&app), "views.publish").await.len(), 2);
    app.stop().await;
}

both_stores!(shortcuts_open_their_forms);

/// "Run a runbook" (global) opens a choice of runbooks, then that runbook's form; "Page
/// on-call about this" (on a message) opens a form with the message and a link to it, or says
/// PagerDuty is not configured. Payloads in the shape of Bolt for Python's shortcut fixtures.
async fn shortcuts_open_their_forms(db: Db) {
    let Some((app, _dir)) = start(db, "forms_shortcuts", |c| c).await else {
        return;
    };
    let mut global = fixture("shortcut");
    global["team"] = json!({"id": "T1", "domain": "acme"});
    global["user"] = json!({"id": ALICE, "username": "alice", "team_id": "T1"});
    global["callback_id"] = json!("pantheon_run_runbook");
    global["trigger_id"] = json!("111.222.global");
    let (status, _) = app.interact(&global).await;
    assert_eq!(status, 200);
    let calls = opened(&app, 1).await;
    assert_eq!(calls[0]["trigger_id"], "111.222.global");
    insta::assert_json_snapshot!("form_pick_runbook", shown(&calls[0]["view"]));
    let metadata = calls[0]["view"]["private_metadata"].as_str().unwrap();
    let (_, body) = app
        .interact(&submission(
            ALICE,
            "pantheon_form",
            metadata,
            &[("runbook", "deploy"), ("channel", CHANNEL)],
        ))
        .await;
    let next: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(next["response_action"], "update");
    assert_eq!(next["view"]["title"]["text"], "Run deploy");
    let blocks: Vec<&str> = next["view"]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["block_id"].as_str())
        .collect();
    assert_eq!(
        blocks,
        ["app", "version", "env"],
        "the channel was chosen already"
    );

    let mut on_message = fixture("message_action");
    on_message["team"] = json!({"id": "T1", "domain": "acme"});
    on_message["user"] = json!({"id": ALICE, "name": "alice"});
    on_message["channel"] = json!({"id": CHANNEL, "name": "ops"});
    on_message["callback_id"] = json!("pantheon_page_oncall");
    on_message["message_ts"] = json!("1599630734.000400");
    on_message["message"]["text"] = json!("checkout is down <!channel>");
    on_message["message"]["ts"] = json!("1599630734.000400");
    on_message["response_url"] = json!(format!(
        "{}/actions/T1/9/abc",
        app.response_url_server.uri()
    ));
    let (status, _) = app.interact(&on_message).await;
    assert_eq!(status, 200);
    let calls = opened(&app, 2).await;
    let text = calls[1]["view"].to_string();
    assert!(text.contains("PagerDuty is not configured"), "{text}");
    app.stop().await;
}

both_stores!(the_message_shortcut_pages_through_pager_trigger);

async fn the_message_shortcut_pages_through_pager_trigger(db: Db) {
    let pd = wiremock::MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", "true");
    let Some(app) = TestApp::on(db, "forms_page")
        .config(&config(&script, ""))
        .with_slack_api()
        .env("PAGERDUTY_API_TOKEN", "pd-token-000000")
        .env("PAGERDUTY_API_URL", pd.uri())
        .start()
        .await
    else {
        return;
    };
    let mut on_message = fixture("message_action");
    on_message["team"] = json!({"id": "T1", "domain": "acme"});
    on_message["user"] = json!({"id": ALICE, "name": "alice"});
    on_message["channel"] = json!({"id": CHANNEL, "name": "ops"});
    on_message["callback_id"] = json!("pantheon_page_oncall");
    on_message["message_ts"] = json!("1599630734.000400");
    on_message["message"]["text"] = json!("checkout is down");
    on_message["message"]["ts"] = json!("1599630734.000400");
    on_message["response_url"] = json!(format!(
        "{}/actions/T1/9/abc",
        app.response_url_server.uri()
    ));
    app.interact(&on_message).await;
    let calls = opened(&app, 1).await;
    let view = &calls[0]["view"];
    insta::assert_json_snapshot!("form_page_oncall", shown(view));
    let message = view["blocks"][2]["element"]["initial_value"]
        .as_str()
        .unwrap();
    assert_eq!(
        message,
        "checkout is down https://acme.slack.com/archives/C0OPS/p1599630734000400"
    );
    let metadata = view["private_metadata"].as_str().unwrap();
    let (status, body) = app
        .interact(&submission(
            ALICE,
            "pantheon_form",
            metadata,
            &[("who", JOE), ("message", message)],
        ))
        .await;
    assert_eq!((status, body.as_str()), (200, ""));
    // Dispatched as `pager trigger`: audited as that command, by the person who submitted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let trail = app
            .services
            .store
            .audit_before(i64::MAX, 100)
            .await
            .unwrap();
        if trail.iter().any(|r| {
            r.entry.actor == ALICE
                && r.entry.outcome == Outcome::Received
                && r.entry.command.as_deref()
                    == Some(&format!("pager trigger <@{JOE}> {message}") as &str)
        }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{trail:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}
