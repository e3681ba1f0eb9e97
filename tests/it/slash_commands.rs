//! `POST /slack/commands` end to end: signatures, forms, dispatch, replies and the audit trail,
//! on SQLite and on Postgres.

use std::time::Duration;

use pantheon::{
    chat::Message,
    command::{self, CommandError, handler},
};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

use crate::{
    both_stores,
    harness::{ALICE, CHANNEL, Db, JANE, JOE, SECRET, TestApp, now, outcomes},
};

pub const CONFIG: &str = r#"
[groups]
approvers = ["U02JANE", "U03JOE"]
admins    = ["U03JOE"]
deployers = ["*"]

[permissions]
audit = ["admins"]

[limits]
# Far longer than any handler here takes (a panic included, on a busy machine): only the
# hanging-handler test, with its own short limit, may time out.
handler_timeout = "30s"
"#;

/// Commands only these tests have: one that answers in the background, one that panics, one
/// that outlives the handler timeout.
fn test_commands() -> Vec<command::Declaration> {
    vec![
        command::command(
            "echo <words...>",
            "say it back",
            handler(|ctx| async move { Ok(Message::text(ctx.args.words("words").join(" "))) }),
        ),
        command::command(
            "shout <words...>",
            "say it back to everyone",
            handler(|ctx| async move {
                Ok(Message::text(
                    ctx.args.words("words").join(" ").to_uppercase(),
                ))
            }),
        )
        .in_channel(),
        command::command(
            "boom",
            "a handler with a bug",
            handler(|_| async move {
                if true {
                    panic!("index out of bounds in a handler");
                }
                Ok(Message::text("unreachable"))
            }),
        ),
        command::command(
            "slow",
            "a handler that hangs",
            handler(|_| async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(Message::text("too late"))
            }),
        ),
        command::command(
            "oops",
            "a handler that fails on purpose",
            handler(|_| async move {
                Err(CommandError::User(
                    "PagerDuty rejected the token (401)".into(),
                ))
            }),
        ),
    ]
}

async fn app(db: Db, test: &str) -> Option<TestApp> {
    let mut builder = TestApp::on(db, test).config(CONFIG);
    for c in test_commands() {
        builder = builder.command(c);
    }
    builder.start().await
}

both_stores!(
    help_is_generated_and_answered_in_the_ack,
    empty_text_gets_help,
    a_reply_arrives_at_the_response_url,
    in_channel_commands_echo_and_answer_in_channel,
    unknown_commands_get_did_you_mean,
    a_nul_byte_in_the_text_loses_nothing,
    wrong_arguments_get_the_usage,
    refusals_are_answered_and_audited,
    a_response_url_off_the_allow_list_is_refused,
    a_panicking_handler_is_reported_and_the_server_lives_on,
    a_hanging_handler_times_out,
    a_user_facing_failure_is_audited_as_failed,
    the_response_url_is_retried_on_5xx,
    bad_signatures_are_refused,
    stale_and_future_timestamps_are_refused,
    bodies_over_the_limit_get_413,
    bodies_that_are_not_forms_get_400,
    ssl_check_is_answered,
    whoami_names_the_groups,
    audit_lists_recent_entries_for_admins,
    busy_when_too_many_commands_run,
    one_person_cannot_hold_every_slot_and_votes_are_never_busy,
);

async fn help_is_generated_and_answered_in_the_ack(db: Db) {
    let Some(app) = app(db, "help").await else {
        return;
    };
    let ack = app.slash("/ops help").by(ALICE).send().await;
    assert_eq!(ack.status, 200);
    let body = ack.json();
    assert_eq!(body["response_type"], "ephemeral");
    let text = ack.text();
    assert!(text.contains("/ops whoami"), "{text}");
    assert!(
        text.contains("/ops echo <words...>") || text.contains("/ops echo &lt;words...&gt;"),
        "{text}"
    );
    // Alice is no admin: `audit` is not offered to her.
    assert!(!text.contains("/ops audit"), "{text}");
    let blocks = body["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");

    // Joe is an admin and sees it.
    let joe = app.slash("help").by(JOE).send().await;
    assert!(joe.text().contains("/ops audit [n=20]"), "{}", joe.text());

    // Topic help.
    let topic = app.slash("help audit").by(JOE).send().await;
    assert!(topic.text().starts_with("Help: audit"), "{}", topic.text());
    assert!(!topic.text().contains("whoami"));

    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["succeeded"]);
    assert_eq!(rows[0].entry.actor, ALICE);
    assert_eq!(rows[0].entry.channel.as_deref(), Some(CHANNEL));
    assert_eq!(rows[0].entry.command.as_deref(), Some("help"));
    // The one row says how long the answer took to decide.
    assert!(
        rows[0].entry.duration_ms.is_some_and(|ms| ms >= 0),
        "{rows:?}"
    );
    if db == Db::Sqlite {
        insta::assert_json_snapshot!("help_for_an_admin", joe.json());
    }
    app.stop().await;
}

async fn empty_text_gets_help(db: Db) {
    let Some(app) = app(db, "empty").await else {
        return;
    };
    let ack = app.slash("").send().await;
    assert_eq!(ack.status, 200);
    assert!(
        ack.text().starts_with("Pantheon commands"),
        "{}",
        ack.text()
    );
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["succeeded"]);
    app.stop().await;
}

async fn a_reply_arrives_at_the_response_url(db: Db) {
    let Some(app) = app(db, "reply").await else {
        return;
    };
    let ack = app.slash("echo hello   world").send().await;
    assert_eq!(ack.status, 200);
    assert_eq!(
        ack.body, "",
        "an ephemeral background command acknowledges with an empty body"
    );
    let replies = app.replies(1).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["text"], "hello world");
    assert_eq!(replies[0]["response_type"], "ephemeral");
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "succeeded"]);
    assert!(rows[2].entry.duration_ms.is_some());
    assert_eq!(rows[2].entry.command.as_deref(), Some("echo hello   world"));
    app.stop().await;
}

async fn in_channel_commands_echo_and_answer_in_channel(db: Db) {
    let Some(app) = app(db, "in_channel").await else {
        return;
    };
    let ack = app.slash("shout deploy done").send().await;
    assert_eq!(
        ack.json(),
        serde_json::json!({"response_type": "in_channel"})
    );
    let replies = app.replies(1).await;
    assert_eq!(replies[0]["text"], "DEPLOY DONE");
    assert_eq!(replies[0]["response_type"], "in_channel");
    app.stop().await;
}

async fn unknown_commands_get_did_you_mean(db: Db) {
    let Some(app) = app(db, "unknown").await else {
        return;
    };
    let ack = app.slash("whomai").send().await;
    assert_eq!(ack.status, 200);
    assert_eq!(
        ack.text(),
        "I don't know `/ops whomai`. Did you mean `/ops whoami`? Type `/ops help` for the list of commands."
    );
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["invalid"]);
    assert!(
        rows[0]
            .entry
            .detail
            .as_deref()
            .unwrap()
            .starts_with("unknown command")
    );
    // Nothing went to the response URL.
    assert!(app.replies(0).await.is_empty());
    app.stop().await;
}

/// Postgres refuses NUL in text, so a `%00` in a command must not sink the audit batch it is
/// committed with (other people's rows included) or the reply.
async fn a_nul_byte_in_the_text_loses_nothing(db: Db) {
    let Some(app) = app(db, "nul").await else {
        return;
    };
    let unknown = app.slash("who\0mai").send().await;
    assert_eq!(unknown.status, 200);
    let echo = app.slash("echo a\0b").send().await;
    assert_eq!(echo.status, 200);
    let rows = app.finished_audit(&unknown.correlation_id).await;
    assert_eq!(outcomes(&rows), ["invalid"]);
    assert_eq!(rows[0].entry.command.as_deref(), Some("who\u{fffd}mai"));
    let rows = app.finished_audit(&echo.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "succeeded"]);
    let replies = app.replies(1).await;
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0]["text"].as_str().unwrap().contains("a\u{fffd}b"),
        "{replies:?}"
    );
    app.stop().await;
}

async fn wrong_arguments_get_the_usage(db: Db) {
    let Some(app) = app(db, "usage").await else {
        return;
    };
    let ack = app.slash("whoami please").send().await;
    assert_eq!(
        ack.text(),
        "`/ops whoami`: unexpected `please`.\nUsage: `/ops whoami`"
    );
    let missing = app.slash("echo").send().await;
    assert!(
        missing.text().contains("&lt;words&gt; is missing"),
        "{}",
        missing.text()
    );
    let rows = app.finished_audit(&missing.correlation_id).await;
    assert_eq!(outcomes(&rows), ["invalid"]);
    app.stop().await;
}

async fn refusals_are_answered_and_audited(db: Db) {
    let Some(app) = app(db, "refusal").await else {
        return;
    };
    let ack = app.slash("audit 5").by(JANE).send().await;
    assert_eq!(ack.status, 200);
    assert_eq!(
        ack.text(),
        "You are not allowed to run `/ops audit`: it needs the `admins` group."
    );
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["refused"]);
    assert_eq!(rows[0].entry.actor, JANE);
    assert!(app.replies(0).await.is_empty());
    app.stop().await;
}

async fn a_response_url_off_the_allow_list_is_refused(db: Db) {
    let Some(app) = TestApp::on(db, "allow_list")
        .config(CONFIG)
        .env("RESPONSE_URL_HOSTS", "hooks.slack.com")
        .command(test_commands().remove(0))
        .start()
        .await
    else {
        return;
    };
    let ack = app.slash("echo leak this").send().await;
    assert_eq!(ack.status, 200);
    assert!(
        ack.text().contains("is not on the allow-list"),
        "{}",
        ack.text()
    );
    assert!(ack.text().contains("Nothing was run"), "{}", ack.text());
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["refused"]);
    assert!(
        rows[0]
            .entry
            .detail
            .as_deref()
            .unwrap()
            .contains("127.0.0.1")
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.replies(0).await.is_empty(),
        "nothing may be sent to a refused URL"
    );
    app.stop().await;
}

async fn a_panicking_handler_is_reported_and_the_server_lives_on(db: Db) {
    let Some(app) = app(db, "panic").await else {
        return;
    };
    let ack = app.slash("boom").send().await;
    assert_eq!(ack.status, 200);
    let replies = app.replies(1).await;
    let text = replies[0]["text"].as_str().unwrap();
    assert!(text.contains("`/ops boom` failed unexpectedly"), "{text}");
    assert!(text.contains(&ack.correlation_id), "{text}");
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "failed"]);
    assert!(
        rows[2]
            .entry
            .detail
            .as_deref()
            .unwrap()
            .contains("handler panicked")
    );
    // The server still answers.
    let after = app.slash("whoami").send().await;
    assert_eq!(after.status, 200);
    app.stop().await;
}

async fn a_hanging_handler_times_out(db: Db) {
    // `slow` sleeps 30 s, so this short limit always wins, however busy the machine is.
    let config = CONFIG.replace("handler_timeout = \"30s\"", "handler_timeout = \"500ms\"");
    let mut builder = TestApp::on(db, "timeout").config(&config);
    for c in test_commands() {
        builder = builder.command(c);
    }
    let Some(app) = builder.start().await else {
        return;
    };
    let ack = app.slash("slow").send().await;
    assert_eq!(ack.status, 200);
    let replies = app.replies(1).await;
    let text = replies[0]["text"].as_str().unwrap();
    assert!(text.contains("`/ops slow` timed out after 0.5 s"), "{text}");
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "failed"]);
    assert_eq!(
        rows[2].entry.detail.as_deref(),
        Some("timed out after 0.5s")
    );
    app.stop().await;
}

async fn a_user_facing_failure_is_audited_as_failed(db: Db) {
    let Some(app) = app(db, "user_failure").await else {
        return;
    };
    let ack = app.slash("oops").send().await;
    let replies = app.replies(1).await;
    assert_eq!(replies[0]["text"], "PagerDuty rejected the token (401)");
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "failed"]);
    app.stop().await;
}

async fn the_response_url_is_retried_on_5xx(db: Db) {
    let Some(app) = app(db, "retry").await else {
        return;
    };
    let flaky = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&flaky)
        .await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&flaky)
        .await;
    let ack = app
        .slash("echo eventually")
        .response_url(&format!("{}/hook", flaky.uri()))
        .send()
        .await;
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "succeeded"]);
    assert_eq!(rows[2].entry.detail, None, "delivered, so no delivery note");
    let received = flaky.received_requests().await.unwrap();
    assert_eq!(received.len(), 3, "two 503s, then delivered");
    app.stop().await;
}

/// Send `body` with the given headers and return the status.
async fn raw(app: &TestApp, body: &str, headers: &[(&str, String)]) -> u16 {
    app.post_slack("/slack/commands", body.to_owned(), headers)
        .await
        .status()
        .as_u16()
}

fn form_headers(ts: &str, sig: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/x-www-form-urlencoded".into()),
        ("x-slack-request-timestamp", ts.into()),
        ("x-slack-signature", sig.into()),
    ]
}

async fn bad_signatures_are_refused(db: Db) {
    let Some(app) = app(db, "bad_signature").await else {
        return;
    };
    let request = app.slash("whoami");
    let body = request.body();
    let ts = now().to_string();
    let key = pantheon::signature::HmacKey::new(SECRET.as_bytes());
    let good = pantheon::signature::sign_slack(&key, &ts, body.as_bytes());
    assert_eq!(raw(&app, &body, &form_headers(&ts, &good)).await, 200);

    let wrong_secret = pantheon::signature::sign_slack(
        &pantheon::signature::HmacKey::new(b"not the secret"),
        &ts,
        body.as_bytes(),
    );
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    for sig in [
        wrong_secret.as_str(),
        flipped.as_str(),
        "",
        "v0=",
        "v0=zz",
        "sha256=abc",
        &good[3..],
    ] {
        assert_eq!(
            raw(&app, &body, &form_headers(&ts, sig)).await,
            401,
            "{sig:?}"
        );
    }
    // A changed body with the original signature.
    let tampered = body.replace("whoami", "whoamj");
    assert_eq!(raw(&app, &tampered, &form_headers(&ts, &good)).await, 401);
    // Missing headers, each in turn, and a malformed timestamp.
    let ct = (
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    );
    assert_eq!(
        raw(
            &app,
            &body,
            &[ct.clone(), ("x-slack-signature", good.clone())]
        )
        .await,
        401
    );
    assert_eq!(
        raw(
            &app,
            &body,
            &[ct.clone(), ("x-slack-request-timestamp", ts.clone())]
        )
        .await,
        401
    );
    assert_eq!(raw(&app, &body, std::slice::from_ref(&ct)).await, 401);
    assert_eq!(
        raw(&app, &body, &form_headers("yesterday", &good)).await,
        401
    );
    // A refused request is not dispatched: nothing in the audit trail but the one good call's
    // row (committed before its acknowledgement).
    let audited = app.services.store.recent_audit(100).await.unwrap();
    let outcomes: Vec<_> = audited.iter().map(|r| r.entry.outcome.as_str()).collect();
    assert_eq!(outcomes, ["succeeded"], "{audited:?}");
    app.stop().await;
}

async fn stale_and_future_timestamps_are_refused(db: Db) {
    let Some(app) = app(db, "stale").await else {
        return;
    };
    assert_eq!(
        app.slash("whoami")
            .timestamp(now() - 301)
            .send()
            .await
            .status,
        401
    );
    assert_eq!(
        app.slash("whoami")
            .timestamp(now() + 301)
            .send()
            .await
            .status,
        401
    );
    assert_eq!(
        app.slash("whoami")
            .timestamp(now() - 600)
            .send()
            .await
            .status,
        401
    );
    assert_eq!(
        app.slash("whoami")
            .timestamp(now() - 250)
            .send()
            .await
            .status,
        200
    );
    assert_eq!(
        app.slash("whoami").signed_with("wrong").send().await.status,
        401
    );
    app.stop().await;
}

async fn bodies_over_the_limit_get_413(db: Db) {
    let Some(app) = app(db, "limit").await else {
        return;
    };
    let big = format!("text={}", "a".repeat(70 * 1024));
    let ts = now().to_string();
    let sig = pantheon::signature::sign_slack(
        &pantheon::signature::HmacKey::new(SECRET.as_bytes()),
        &ts,
        big.as_bytes(),
    );
    assert_eq!(raw(&app, &big, &form_headers(&ts, &sig)).await, 413);
    app.stop().await;
}

async fn bodies_that_are_not_forms_get_400(db: Db) {
    let Some(app) = app(db, "not_form").await else {
        return;
    };
    let key = pantheon::signature::HmacKey::new(SECRET.as_bytes());
    let ts = now().to_string();
    let json = r#"{"command":"/ops","text":"help"}"#;
    let sig = pantheon::signature::sign_slack(&key, &ts, json.as_bytes());
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("x-slack-request-timestamp", ts.clone()),
        ("x-slack-signature", sig.clone()),
    ];
    assert_eq!(raw(&app, json, &headers).await, 400);
    // Form-typed but not a slash command.
    assert_eq!(raw(&app, json, &form_headers(&ts, &sig)).await, 400);
    let binary = "\u{0}\u{1}garbage=%FF%FE";
    let sig = pantheon::signature::sign_slack(&key, &ts, binary.as_bytes());
    assert_eq!(raw(&app, binary, &form_headers(&ts, &sig)).await, 400);
    app.stop().await;
}

async fn ssl_check_is_answered(db: Db) {
    let Some(app) = app(db, "ssl_check").await else {
        return;
    };
    let body = "token=random&ssl_check=1";
    let ts = now().to_string();
    let sig = pantheon::signature::sign_slack(
        &pantheon::signature::HmacKey::new(SECRET.as_bytes()),
        &ts,
        body.as_bytes(),
    );
    let resp = app
        .post_slack("/slack/commands", body, &form_headers(&ts, &sig))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "");
    app.stop().await;
}

async fn whoami_names_the_groups(db: Db) {
    let Some(app) = app(db, "whoami").await else {
        return;
    };
    let ack = app.slash("whoami").by(JOE).send().await;
    assert_eq!(
        ack.text(),
        "You are <@U03JOE> (`U03JOE`). Groups: `admins`, `approvers`, `deployers`."
    );
    app.stop().await;
}

async fn audit_lists_recent_entries_for_admins(db: Db) {
    // A second admin, to show that a link is bound to the admin it was issued to.
    let config = CONFIG.replace(
        r#"admins    = ["U03JOE"]"#,
        r#"admins    = ["U03JOE", "U04ANN"]"#,
    );
    let mut builder = TestApp::on(db, "audit").config(&config);
    for c in test_commands() {
        builder = builder.command(c);
    }
    let Some(app) = builder.start().await else {
        return;
    };
    let odd = app.slash("nosuch <b>x</b>").by(ALICE).send().await;
    app.finished_audit(&odd.correlation_id).await;
    let whoami = app.slash("whoami").by(ALICE).send().await;
    app.finished_audit(&whoami.correlation_id).await;
    let ack = app.slash("audit 3").by(JOE).send().await;
    assert_eq!(ack.status, 200);
    let replies = app.replies(1).await;
    let text = replies[0]["text"].as_str().unwrap();
    assert!(text.starts_with("Last 3 audit entries"), "{text}");
    assert!(
        text.contains("<@U01ALICE> command `whoami`: *succeeded*"),
        "{text}"
    );
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "succeeded"]);

    // The reply links to the audit page, signed for the admin who asked.
    let link = text
        .split(['<', '|'])
        .find(|part| part.contains("/audit?"))
        .unwrap_or_else(|| panic!("an audit page link in: {text}"));
    let link = url::Url::parse(link).unwrap();
    let local = app.url(&format!("{}?{}", link.path(), link.query().unwrap()));
    let page = app.client.get(&local).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>Audit trail</title>"), "{html}");
    assert!(html.contains("Link for U03JOE"), "{html}");
    assert!(html.contains(&whoami.correlation_id), "{html}");
    assert!(html.contains("<code>audit 3</code>"), "{html}");
    assert!(
        html.contains("nosuch &lt;b&gt;x&lt;/b&gt;"),
        "user text is escaped: {html}"
    );
    assert!(!html.contains("<b>x</b>"));

    // One request's steps, through the link the page gives for it.
    let href = html
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|h| h.contains(&whoami.correlation_id))
        .unwrap_or_else(|| panic!("a link to the whoami request in: {html}"))
        .replace("&amp;", "&");
    let one = url::Url::parse(&local).unwrap().join(&href).unwrap();
    let html = app
        .client
        .get(one)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("oldest first"), "{html}");
    assert!(html.contains("<code>whoami</code>"), "{html}");
    assert!(
        !html.contains("<code>audit 3</code>"),
        "only that request: {html}"
    );

    // Viewing is audited, attributed to the admin the link was issued to.
    let mut viewed = Vec::new();
    for _ in 0..100 {
        viewed = app
            .services
            .store
            .recent_audit(20)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.action == "audit.page")
            .collect();
        if viewed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(viewed.len(), 2, "{viewed:?}");
    assert!(viewed.iter().all(|r| r.entry.actor == JOE));

    // The link is bound to its user; a valid link for someone who may not run `audit` is
    // refused; so are no link and an expired one.
    let forged = local.replace("for=U03JOE", "for=U04ANN");
    assert_ne!(forged, local);
    assert_eq!(app.client.get(&forged).send().await.unwrap().status(), 403);
    let sig_at = local.find("sig=").unwrap() + 4;
    let mut tampered = local.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        app.client.get(&tampered).send().await.unwrap().status(),
        403
    );
    let too_long = format!("{local}&correlation_id={}", "x".repeat(65));
    assert_eq!(
        app.client.get(&too_long).send().await.unwrap().status(),
        400
    );
    let now = time::OffsetDateTime::now_utc();
    let alice = url::Url::parse(&app.services.links.audit_url(ALICE, now)).unwrap();
    let alice = app.url(&format!("/audit?{}", alice.query().unwrap()));
    assert_eq!(app.client.get(&alice).send().await.unwrap().status(), 403);
    assert_eq!(
        app.client
            .get(app.url("/audit"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let old = url::Url::parse(
        &app.services
            .links
            .audit_url(JOE, now - time::Duration::hours(2)),
    )
    .unwrap();
    let old = app.url(&format!("/audit?{}", old.query().unwrap()));
    assert_eq!(app.client.get(&old).send().await.unwrap().status(), 403);
    app.stop().await;
}

async fn busy_when_too_many_commands_run(db: Db) {
    let config = format!("{CONFIG}max_in_flight = 1\n");
    // `hold` runs until the test lets it go: the permit is taken for exactly as long as the
    // test needs, whatever the machine's speed.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let mut builder = TestApp::on(db, "busy")
        .config(&config)
        .command(command::command(
            "hold",
            "a handler that runs until the test lets it go",
            handler(move |_| {
                let held = held.clone();
                async move {
                    let _ = held.acquire().await;
                    Ok(Message::text("let go"))
                }
            }),
        ));
    for c in test_commands() {
        builder = builder.command(c);
    }
    let Some(app) = builder.start().await else {
        return;
    };
    let first = app.slash("hold").send().await;
    assert_eq!(first.status, 200);
    let second = app.slash("echo hi").by(JANE).send().await;
    assert!(
        second.text().starts_with("Pantheon is busy"),
        "{}",
        second.text()
    );
    let rows = app.finished_audit(&second.correlation_id).await;
    assert_eq!(outcomes(&rows), ["refused"]);
    // Once the held one has ended, there is room again.
    gate.add_permits(1);
    assert_eq!(app.reply_text(&first).await, "let go");
    let rows = app.finished_audit(&first.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "succeeded"]);
    let mut third = app.slash("echo hi").send().await;
    for _ in 0..50 {
        if third.body.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        third = app.slash("echo hi").send().await;
    }
    assert_eq!(
        third.body, "",
        "accepted again after the held command ended"
    );
    app.stop().await;
}

async fn one_person_cannot_hold_every_slot_and_votes_are_never_busy(db: Db) {
    let config = format!("{CONFIG}max_in_flight = 3\nmax_in_flight_per_user = 2\n");
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let Some(app) = TestApp::on(db, "fair_share")
        .config(&config)
        .command(command::command(
            "hold",
            "a handler that runs until the test lets it go",
            handler(move |_| {
                let held = held.clone();
                async move {
                    let _ = held.acquire().await;
                    Ok(Message::text("let go"))
                }
            }),
        ))
        .start()
        .await
    else {
        return;
    };
    for _ in 0..2 {
        assert_eq!(app.slash("hold").by(ALICE).send().await.body, "");
    }
    let third = app.slash("hold").by(ALICE).send().await;
    assert!(
        third
            .text()
            .starts_with("You already have 2 commands running"),
        "{}",
        third.body
    );
    let rows = app.audit_for(&third.correlation_id).await;
    assert_eq!(outcomes(&rows), ["refused"]);
    // Jane still gets in; then every slot is taken.
    assert_eq!(app.slash("hold").by(JANE).send().await.body, "");
    let busy = app.slash("hold").by(JOE).send().await;
    assert!(busy.text().starts_with("Pantheon is busy"), "{}", busy.body);
    // Votes and cancels take no slot: they are answered, not refused as busy.
    for text in ["approve 1", "deny 1", "withdraw 1", "cancel 1"] {
        let ack = app.slash(text).by(JOE).send().await;
        assert!(!ack.text().contains("busy"), "{text}: {}", ack.body);
        let reply = app.reply_text(&ack).await;
        assert!(
            reply.contains("#1") && !reply.contains("busy"),
            "{text}: {reply}"
        );
    }
    gate.add_permits(10);
    app.stop().await;
}
