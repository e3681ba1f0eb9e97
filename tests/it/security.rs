//! What an attacker's review found (issue 10), one test per finding, on both stores.

use std::time::Duration;

use crate::{
    both_stores,
    harness::{ALICE, Db, JANE, JOE, TestApp, outcomes},
};

const HELLO: &str = r#"
[groups]
admins = ["U03JOE"]

[permissions]
audit = ["admins"]

[jobs]
poll = "50ms"

[[runbooks]]
name = "hello"
usage = "hello"
run = { kind = "command", argv = ["sh", "-c", "echo hello"] }
"#;

both_stores!(
    a_replayed_command_is_refused_here_and_after_a_restart,
    a_replayed_click_is_refused_here_and_after_a_restart,
    refusals_are_on_the_trail_before_they_are_answered,
);

async fn a_replayed_command_is_refused_here_and_after_a_restart(db: Db) {
    let Some(app) = TestApp::on(db, "replay_command")
        .config(HELLO)
        .start()
        .await
    else {
        return;
    };
    let signed = app.slash("hello").by(ALICE).signed();
    let first = app.post_signed(&signed).await;
    assert_eq!(first.status, 200);
    assert!(!first.text().contains("already received"), "{}", first.body);
    for _ in 0..2 {
        let again = app.post_signed(&signed).await;
        assert_eq!(again.status, 200);
        assert!(
            again.text().contains("already received once")
                && again.text().contains("Nothing was run"),
            "{}",
            again.body
        );
        let rows = app.audit_for(&again.correlation_id).await;
        assert_eq!(outcomes(&rows), ["refused"]);
        assert!(
            rows[0]
                .entry
                .detail
                .as_deref()
                .unwrap()
                .starts_with("replay:"),
            "{rows:?}"
        );
    }
    // Inline answers too: a replayed `help` is refused like anything else.
    let help = app.slash("help").signed();
    assert!(app.post_signed(&help).await.text().contains("/ops"));
    assert!(
        app.post_signed(&help)
            .await
            .text()
            .contains("already received once")
    );

    // Across a restart (or on another replica: the claim is in the shared database).
    let kept = app.stop_keeping_db().await;
    let Some(app) = TestApp::on(db, "replay_command")
        .on_database(kept)
        .config(HELLO)
        .start()
        .await
    else {
        return;
    };
    let after = app.post_signed(&signed).await;
    assert!(
        after.text().contains("already received once"),
        "{}",
        after.body
    );
    // One job, however often the request came.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jobs = app.services.store.jobs(None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    app.stop().await;
}

async fn a_replayed_click_is_refused_here_and_after_a_restart(db: Db) {
    let Some(app) = TestApp::on(db, "replay_click").config(HELLO).start().await else {
        return;
    };
    let click = app.signed_click(JOE, "approval_approve", "1");
    assert_eq!(app.post_signed(&click).await.status, 200);
    let again = app.post_signed(&click).await;
    assert_eq!(again.status, 401);
    let kept = app.stop_keeping_db().await;
    let Some(app) = TestApp::on(db, "replay_click")
        .on_database(kept)
        .config(HELLO)
        .start()
        .await
    else {
        return;
    };
    assert_eq!(
        app.post_signed(&click).await.status,
        401,
        "refused after a restart too"
    );
    let refused: Vec<_> = app
        .services
        .store
        .recent_audit(50)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == "interaction")
        .collect();
    assert_eq!(refused.len(), 2, "each replay is audited: {refused:?}");
    assert!(refused.iter().all(|r| r.entry.actor == JOE));
    app.stop().await;
}

async fn refusals_are_on_the_trail_before_they_are_answered(db: Db) {
    let Some(app) = TestApp::on(db, "refusal_committed")
        .config(HELLO)
        .start()
        .await
    else {
        return;
    };
    // Read the store the moment the answer is in: no waiting for a later batch.
    let refused = app.slash("audit").by(ALICE).send().await;
    assert!(refused.text().contains("not allowed"), "{}", refused.body);
    let rows = app.audit_for(&refused.correlation_id).await;
    assert_eq!(outcomes(&rows), ["refused"]);

    let off_list = app
        .slash("hello")
        .response_url("https://evil.example/steal")
        .send()
        .await;
    assert!(
        off_list.text().contains("Nothing was run"),
        "{}",
        off_list.body
    );
    let rows = app.audit_for(&off_list.correlation_id).await;
    assert_eq!(outcomes(&rows), ["refused"]);

    let unknown = app.slash("helo").send().await;
    let rows = app.audit_for(&unknown.correlation_id).await;
    assert_eq!(outcomes(&rows), ["invalid"]);
    app.stop().await;
}

const SECRETS: &str = r#"
[groups]
approvers = ["U02JANE", "U03JOE"]
admins = ["U03JOE"]

[permissions]
secret = ["admins"]
approvals = ["admins"]

[jobs]
poll = "50ms"

[[runbooks]]
name = "secret"
usage = "secret"
run = { kind = "command", argv = ["sh", "-c", "echo the password is hunter42; exit 3"] }

[[runbooks]]
name = "hello"
usage = "hello"
run = { kind = "command", argv = ["sh", "-c", "echo hello"] }

[[runbooks]]
name = "deploy"
usage = "deploy {app} {version} to {env}"
params = { app = "^[a-z]+$", version = "^[0-9.]+$", env = "(?i)^(staging|production)$" }
run = { kind = "command", argv = ["sh", "-c", "echo deployed"] }
approval = { group = "approvers", when = { env = "production" } }
"#;

async fn ended(app: &TestApp, id: i64) -> pantheon::domain::job::Job {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(job) = app.services.store.job(id).await.unwrap()
            && job.status.is_final()
        {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} never ended");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every body Slack's Web API and the response URLs received so far, as text.
async fn everything_slack_saw(app: &TestApp) -> String {
    let mut all = String::new();
    for server in [app.slack_api.as_ref(), Some(&app.response_url_server)]
        .into_iter()
        .flatten()
    {
        for r in server.received_requests().await.unwrap_or_default() {
            all.push_str(&String::from_utf8_lossy(&r.body));
            all.push('\n');
        }
    }
    all
}

both_stores!(
    job_output_is_shown_only_to_those_who_may_run_its_runbook,
    the_approve_button_keeps_the_approvals_permission,
    when_catches_every_spelling_the_parameter_accepts,
);

async fn job_output_is_shown_only_to_those_who_may_run_its_runbook(db: Db) {
    let Some(app) = TestApp::on(db, "job_visibility")
        .config(SECRETS)
        .with_slack_api()
        .start()
        .await
    else {
        return;
    };
    let asked = app.slash("secret").by(JOE).send().await;
    assert_eq!(asked.status, 200);
    let job = ended(&app, 1).await;
    assert_eq!(job.runbook, "secret");
    app.slash("hello").by(ALICE).send().await;
    ended(&app, 2).await;

    // Alice may not run `secret`: no status, no log, no link.
    let ack = app.slash("job 1").by(ALICE).send().await;
    let reply = app.reply(&ack).await.to_string();
    assert!(
        reply.contains("a job of `secret`, which you may not run"),
        "{reply}"
    );
    assert!(
        !reply.contains("hunter42") && !reply.contains("/jobs/1"),
        "{reply}"
    );
    // `jobs` lists what she may see, and says that more exist.
    let ack = app.slash("jobs").by(ALICE).send().await;
    let list = app.reply(&ack).await.to_string();
    assert!(
        list.contains("hello #2") && !list.contains("secret #1"),
        "{list}"
    );
    assert!(
        list.contains("1 more of runbooks you may not run"),
        "{list}"
    );
    // The Log button answers her with a refusal, and Joe with a link of his own.
    let clicked = app.click(ALICE, "job_log", "1").await;
    let answer = app.click_reply(&clicked).await.to_string();
    assert!(
        answer.contains("may not run") && !answer.contains("/jobs/1"),
        "{answer}"
    );
    let clicked = app.click(JOE, "job_log", "1").await;
    let answer = app.click_reply(&clicked).await.to_string();
    assert!(answer.contains("/jobs/1?for=U03JOE"), "{answer}");

    // A link is bound to its user: one made out to Alice (as if leaked or forged) does not
    // open the page, Joe's does, and his view is audited.
    let now = time::OffsetDateTime::now_utc();
    let local = |link: String| {
        let url = url::Url::parse(&link).unwrap();
        app.url(&format!("{}?{}", url.path(), url.query().unwrap()))
    };
    let alice_link = local(app.services.links.job_url(1, ALICE, now));
    let page = app.client.get(&alice_link).send().await.unwrap();
    assert_eq!(page.status(), 403);
    assert!(!page.text().await.unwrap().contains("hunter42"));
    let joe_link = local(app.services.links.job_url(1, JOE, now));
    let page = app.client.get(&joe_link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("hunter42"));
    let views: Vec<_> = app
        .audit_for(&job.correlation_id)
        .await
        .into_iter()
        .filter(|r| r.entry.action == "job.page")
        .collect();
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0].entry.actor, JOE);
    let tampered = joe_link.replace("for=U03JOE", "for=U01ALICE");
    assert_eq!(
        app.client.get(&tampered).send().await.unwrap().status(),
        403
    );

    // In a thread everyone reads, even Joe gets the status only.
    assert_eq!(app.mention(JOE, "job 1").await, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !everything_slack_saw(&app)
        .await
        .contains("run `/ops job 1` yourself")
    {
        assert!(std::time::Instant::now() < deadline, "no thread answer");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Nothing posted in the channel (the job's thread, the mention's answer) carries the
    // output or a page link; only Joe's private answer above does.
    let mut channel_posts = String::new();
    for method in ["chat.postMessage", "chat.update", "chat.postEphemeral"] {
        for call in crate::harness::slack_calls(app.slack_api.as_ref().unwrap(), method).await {
            channel_posts.push_str(&call.to_string());
        }
    }
    assert!(
        channel_posts.contains("secret #1"),
        "the job was reported: {channel_posts}"
    );
    assert!(!channel_posts.contains("hunter42"), "{channel_posts}");
    assert!(!channel_posts.contains("/jobs/"), "{channel_posts}");
    app.stop().await;
}

async fn the_approve_button_keeps_the_approvals_permission(db: Db) {
    let Some(app) = TestApp::on(db, "button_permission")
        .config(SECRETS)
        .start()
        .await
    else {
        return;
    };
    let ack = app
        .slash("deploy api 6.6.6 to production")
        .by(ALICE)
        .send()
        .await;
    app.reply(&ack).await;
    let pending = app.services.store.pending_approvals().await.unwrap();
    assert_eq!(pending.len(), 1);
    let id = pending[0].id.to_string();
    // Jane approves requests, but `approvals` is for admins: the command and the button
    // refuse her alike.
    let ack = app.slash(&format!("approve {id}")).by(JANE).send().await;
    assert!(ack.text().contains("not allowed"), "{}", ack.body);
    let clicked = app.click(JANE, "approval_approve", &id).await;
    let answer = app.click_reply(&clicked).await.to_string();
    assert!(answer.contains("not allowed"), "{answer}");
    assert_eq!(
        app.services.store.pending_approvals().await.unwrap().len(),
        1
    );
    assert!(app.services.store.jobs(None, 10).await.unwrap().is_empty());
    let refused: Vec<_> = app
        .services
        .store
        .recent_audit(50)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == "approval.approve" && r.entry.actor == JANE)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].entry.outcome.as_str(), "refused");
    // Joe is an admin and an approver.
    let clicked = app.click(JOE, "approval_approve", &id).await;
    assert_eq!(clicked.status, 200);
    ended(&app, 1).await;
    app.stop().await;
}

async fn when_catches_every_spelling_the_parameter_accepts(db: Db) {
    let Some(app) = TestApp::on(db, "when_spelling")
        .config(SECRETS)
        .start()
        .await
    else {
        return;
    };
    for (n, env) in ["PRODUCTION", "Production", "production"]
        .iter()
        .enumerate()
    {
        let ack = app
            .slash(&format!("deploy api 6.6.{n} to {env}"))
            .by(ALICE)
            .send()
            .await;
        app.reply(&ack).await;
    }
    let ack = app
        .slash("deploy api 7.0.0 to STAGING")
        .by(ALICE)
        .send()
        .await;
    app.reply(&ack).await;
    let pending = app.services.store.pending_approvals().await.unwrap();
    assert_eq!(
        pending.len(),
        3,
        "every spelling of production waits: {pending:?}"
    );
    // Staging needs no approval and runs.
    let job = ended(&app, 1).await;
    assert_eq!(job.params["env"], "STAGING");
    assert_eq!(app.services.store.jobs(None, 10).await.unwrap().len(), 1);
    app.stop().await;
}

/// Finding 6: a password given as a query parameter of `DATABASE_URL` is masked in the
/// `pantheon listening` line, by `check-config` and by `migrate`; a URL that does not parse is
/// shown by its scheme only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_passwords_in_query_parameters_are_never_printed() {
    let Some(db) = crate::harness::TestDb::new(Db::Postgres, "db_password_query").await else {
        return;
    };
    const PASSWORD: &str = "query-password-1234";
    let url = format!(
        "{}?password={PASSWORD}&sslpassword=ssl-key-password-99",
        db.url
    );
    let dir = tempfile::tempdir().unwrap();
    let check = crate::binary::pantheon(dir.path(), &[("DATABASE_URL", url.as_str())])
        .arg("check-config")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{out}");
    assert!(out.contains("password=REDACTED"), "{out}");
    let migrate = crate::binary::pantheon(dir.path(), &[("DATABASE_URL", url.as_str())])
        .arg("migrate")
        .output()
        .unwrap();
    let out_migrate = String::from_utf8_lossy(&migrate.stdout).into_owned()
        + &String::from_utf8_lossy(&migrate.stderr);
    assert!(migrate.status.success(), "{out_migrate}");
    let server = crate::binary::Server::start(
        dir.path(),
        &[
            ("SLACK_SIGNING_SECRET", crate::harness::SECRET),
            ("DATABASE_URL", url.as_str()),
            ("LOG_FORMAT", "json"),
        ],
    );
    let (_, logs) = server.stop();
    assert!(logs.contains("pantheon listening"), "{logs}");
    for text in [&out, &out_migrate, &logs] {
        assert!(
            !text.contains(PASSWORD) && !text.contains("ssl-key-password-99"),
            "{text}"
        );
    }
    // Unparseable: the scheme only.
    let broken = "postgres://user:pa55word@[not-a-host/db?password=hunter22";
    let check = crate::binary::pantheon(dir.path(), &[("DATABASE_URL", broken)])
        .arg("check-config")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(
        out.contains("postgres://(a URL that does not parse"),
        "{out}"
    );
    assert!(
        !out.contains("pa55word") && !out.contains("hunter22"),
        "{out}"
    );
}

both_stores!(a_secret_in_an_http_runbook_url_stays_out_of_logs_and_chat);

/// Finding 7: an incoming-webhook style URL (`/services/T000/B000/<token>`) in an `http`
/// runbook is never logged, stored as the job's error, or posted.
async fn a_secret_in_an_http_runbook_url_stays_out_of_logs_and_chat(db: Db) {
    const TOKEN: &str = "XyZsecretWebhookToken0042";
    let hook = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&hook)
        .await;
    let config = format!(
        r#"
[jobs]
poll = "50ms"

[[runbooks]]
name = "notify"
usage = "notify"
run = {{ kind = "http", url = "{}/services/T000/B000/{TOKEN}" }}

[[runbooks]]
name = "broken"
usage = "broken"
run = {{ kind = "http", url = "http://127.0.0.1:9/services/T000/B000/{TOKEN}", timeout = "2s" }}
"#,
        hook.uri()
    );
    let Some(app) = TestApp::on(db, "http_url_secret")
        .config(&config)
        .with_slack_api()
        .start()
        .await
    else {
        return;
    };
    app.slash("notify").send().await;
    assert_eq!(ended(&app, 1).await.status.as_str(), "succeeded");
    app.slash("broken").send().await;
    let broken = ended(&app, 2).await;
    assert_eq!(broken.status.as_str(), "failed");
    let mut seen = format!("{broken:?}");
    for id in [1, 2] {
        for line in app.job_log_lines(id).await {
            seen.push_str(&line);
            seen.push('\n');
        }
    }
    for row in app.services.store.recent_audit(100).await.unwrap() {
        seen.push_str(&format!("{:?}\n", row.entry));
    }
    // Let the thread reports go out, then look at everything Slack got too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    seen.push_str(&everything_slack_saw(&app).await);
    assert!(seen.contains("POST http://127.0.0.1"), "{seen}");
    assert!(!seen.contains(TOKEN), "{seen}");
    assert!(!seen.contains("/services/T000"), "{seen}");
    app.stop().await;
}

both_stores!(
    invisible_formatting_characters_are_refused_as_parameters,
    a_nul_in_a_webhook_or_a_click_loses_nothing,
    old_rows_go_as_retention_says,
    metrics_can_need_a_token_or_an_address_of_their_own,
);

async fn invisible_formatting_characters_are_refused_as_parameters(db: Db) {
    let Some(app) = TestApp::on(db, "format_chars")
        .config(SECRETS)
        .start()
        .await
    else {
        return;
    };
    for text in [
        "deploy api 1.0\u{202e}1 to staging",
        "deploy ap\u{200b}i 1.0 to staging",
        "run deploy app=api version=1.0 env=staging\u{feff}",
    ] {
        let ack = app.slash(text).by(ALICE).send().await;
        let answer = if ack.body.is_empty() {
            app.reply_text(&ack).await
        } else {
            ack.text()
        };
        assert!(
            answer.contains("invisible formatting character")
                || answer.contains("control character"),
            "{text:?}: {answer}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(app.services.store.jobs(None, 10).await.unwrap().is_empty());
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

async fn a_nul_in_a_webhook_or_a_click_loses_nothing(db: Db) {
    const GH: &str = "gh-nul-secret-0001";
    let Some(app) = TestApp::on(db, "nul_inputs")
        .config(SECRETS)
        .env("GITHUB_WEBHOOK_SECRET", GH)
        .start()
        .await
    else {
        return;
    };
    let body = r#"{"ref": "refs/heads/main", "repository": {"full_name": "acme/api"}, "sender": {"login": "a\u0000b"}, "commits": [{"id": "1", "message": "fix\u0000"}], "x\u0000y": 1}"#;
    let sig = pantheon::signature::HmacKey::new(GH.as_bytes()).sign_hex(&[body.as_bytes()]);
    let resp = app
        .post_slack(
            "/webhooks/github",
            body,
            &[
                ("content-type", "application/json".into()),
                ("x-github-event", "push".into()),
                ("x-github-delivery", "nul-1".into()),
                ("x-hub-signature-256", format!("sha256={sig}")),
            ],
        )
        .await;
    assert_eq!(resp.status(), 202, "stored, not refused by the database");
    let rows = app.services.store.audit_for("nul-1").await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    // A click whose user id and action value carry a NUL.
    let click = app.signed_click("U0\u{0}EVIL", "approval_approve", "1\u{0}");
    assert_eq!(app.post_signed(&click).await.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let votes: Vec<_> = app
            .services
            .store
            .recent_audit(20)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.action == "approval.approve")
            .collect();
        if let Some(v) = votes.first() {
            assert_eq!(v.entry.actor, "U0\u{fffd}EVIL");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the vote was audited");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    app.stop().await;
}

async fn old_rows_go_as_retention_says(db: Db) {
    const GH: &str = "gh-retention-secret-01";
    let config = format!(
        "{SECRETS}\n[[routes]]\nsource = \"github\"\nchannel = \"C0DEV\"\n\n[retention]\naudit_log = \"400d\"\n"
    );
    let Some(app) = TestApp::on(db, "retention")
        .config(&config)
        .with_slack_api()
        .env("GITHUB_WEBHOOK_SECRET", GH)
        .start()
        .await
    else {
        return;
    };
    let push = |id: &'static str| {
        let body = r#"{"ref": "refs/heads/main", "repository": {"full_name": "acme/api"}, "sender": {"login": "ann"}, "commits": []}"#;
        let sig = pantheon::signature::HmacKey::new(GH.as_bytes()).sign_hex(&[body.as_bytes()]);
        let app = &app;
        async move {
            app.post_slack(
                "/webhooks/github",
                body,
                &[
                    ("content-type", "application/json".into()),
                    ("x-github-event", "push".into()),
                    ("x-github-delivery", id.into()),
                    ("x-hub-signature-256", format!("sha256={sig}")),
                ],
            )
            .await
            .status()
        }
    };
    assert_eq!(push("old-1").await, 202);
    app.slash("hello").by(ALICE).send().await;
    let job = ended(&app, 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.services.store.outbox_counts().await.unwrap().sent < 1 {
        assert!(std::time::Instant::now() < deadline, "the push was posted");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let audit_before = app.services.store.recent_audit(1000).await.unwrap().len();
    let now = time::OffsetDateTime::now_utc();
    // A month on: payloads and sent messages go, job output stays (90 days), the audit stays.
    pantheon::upkeep::run_once(&app.services, now + time::Duration::days(31)).await;
    assert_eq!(app.services.store.outbox_counts().await.unwrap().sent, 0);
    let payloads = stored_payloads(&app).await;
    assert_eq!(payloads, ["{}"], "the payload is gone, the delivery kept");
    // GitHub signs no timestamp: an old delivery replayed must stay a duplicate.
    assert_eq!(
        push("old-1").await,
        200,
        "a redelivery however old is a duplicate"
    );
    assert!(!app.job_log_lines(job.id).await.is_empty());
    assert_eq!(
        app.services.store.recent_audit(1000).await.unwrap().len(),
        audit_before
    );
    // A quarter on: job output goes, the job stays.
    pantheon::upkeep::run_once(&app.services, now + time::Duration::days(91)).await;
    assert!(app.job_log_lines(job.id).await.is_empty());
    assert!(app.services.store.job(job.id).await.unwrap().is_some());
    // Past the configured 400 days, the audit trail too.
    pantheon::upkeep::run_once(&app.services, now + time::Duration::days(401)).await;
    assert!(
        app.services
            .store
            .recent_audit(10)
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}

/// The payloads of every stored webhook delivery, as text.
async fn stored_payloads(app: &TestApp) -> Vec<String> {
    match &app.services.store {
        pantheon::store::Store::Postgres(pool) => {
            sqlx::query_scalar::<_, String>("SELECT payload::text FROM webhook_deliveries")
                .fetch_all(pool)
                .await
                .unwrap()
        }
        pantheon::store::Store::Sqlite(pools) => {
            let pool = &pools.reads;
            sqlx::query_scalar::<_, String>("SELECT payload FROM webhook_deliveries")
                .fetch_all(pool)
                .await
                .unwrap()
        }
    }
}

async fn metrics_can_need_a_token_or_an_address_of_their_own(db: Db) {
    let Some(app) = TestApp::on(db, "metrics_token")
        .env("METRICS_TOKEN", "metrics-bearer-token-123")
        .start()
        .await
    else {
        return;
    };
    let open = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(open.status(), 401);
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("metrics-bearer-token-12")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("metrics-bearer-token-123")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("pantheon_"));
    app.stop().await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(app) = TestApp::on(db, "metrics_addr")
        .env("METRICS_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .start()
        .await
    else {
        return;
    };
    let main = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status(), 404, "not on the public listener");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let internal = loop {
        match app
            .client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            Ok(r) => break r,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("the metrics listener never answered: {e}"),
        }
    };
    assert_eq!(internal.status(), 200);
    app.stop().await;
}

/// Finding 12: a line or paragraph separator in what someone types cannot split a log line (some
/// log viewers break lines there), and every line stays one JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_separator_in_a_command_does_not_split_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::binary::Server::start(
        dir.path(),
        &[
            ("SLACK_SIGNING_SECRET", crate::harness::SECRET),
            ("LOG_FORMAT", "json"),
        ],
    );
    let (body, headers) = crate::binary::signed_command(
        "whoami \u{2028}{\"level\":\"ERROR\",\"message\":\"forged\"}\u{85}\u{2029}",
    );
    let client = crate::harness::client();
    let mut req = client
        .post(format!("http://{}/slack/commands", server.addr))
        .body(body);
    for (k, v) in &headers {
        req = req.header(*k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    let (_, logs) = server.stop();
    assert!(
        !logs.contains(['\u{2028}', '\u{2029}', '\u{85}']),
        "a raw separator reached the log"
    );
    assert!(logs.contains("\\u2028"), "escaped instead: {logs}");
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not one JSON object: {line}"
        );
    }
}
