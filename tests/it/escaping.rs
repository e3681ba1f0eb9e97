//! Outside text never reaches Slack as markup (issue 10, finding 8). Every command and event type
//! that echoes text is fed `<!channel>`, `<!here>`, `<@U…>` and `<http://x|y>` (in what people
//! type and in what vendors and webhooks send), and nothing Slack receives, fallback `text` and
//! blocks alike, may carry one of them raw.

use std::time::{Duration, Instant};

use base64::Engine as _;
use pantheon::signature::HmacKey;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::{
    both_stores,
    harness::{ALICE, Db, JOE, TestApp, slack_calls},
};

/// Every markup form an attacker would try.
const MARKUP: [&str; 4] = ["<!channel>", "<!here>", "<@U0EVIL>", "<http://x|y>"];
const HOSTILE: &str = "<!channel> <!here> <@U0EVIL> <http://x|y>";
const GH_SECRET: &str = "gh-escaping-secret-1";
const PD_SECRET: &str = "pd-escaping-secret-1";
const ZD_SECRET: &str = "zd-escaping-secret-1";

const CONFIG: &str = r#"
[groups]
admins = ["U03JOE"]

[jobs]
poll = "50ms"

[notifications]
coalesce_window = "1s"

[[runbooks]]
name = "deploy"
usage = "deploy {app} {version} to {env}"
params = { app = "^[a-z]+$", version = "^[0-9.]+$", env = "^(staging|production)$" }
run = { kind = "command", argv = ["sh", "-c", "echo '<!channel> <@U0EVIL> from the job'"] }

[[routes]]
source = "github"
channel = "C0DEV"

[[routes]]
source = "pagerduty"
channel = "C0INC"

[[routes]]
source = "zendesk"
channel = "C0SUP"
"#;

/// Vendor stubs whose every text field is hostile.
async fn hostile_vendors() -> (MockServer, MockServer, MockServer) {
    let (pd, gh, zd) = (
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
    );
    let incident = json!({
        "id": "PINC001", "type": "incident", "incident_number": 7, "title": HOSTILE,
        "summary": HOSTILE, "status": "triggered", "urgency": "high",
        "html_url": "https://acme.pagerduty.com/incidents/PINC001",
        "created_at": "2026-11-24T01:00:00Z",
        "service": {"id": "PSVC001", "type": "service_reference", "summary": HOSTILE},
        "assignments": [{"at": "2026-11-24T01:00:00Z", "assignee": {"id": "PJANE", "type": "user_reference", "summary": HOSTILE}}]
    });
    let list = |key: &str, items: Value| {
        ResponseTemplate::new(200).set_body_json(
            json!({key: items, "limit": 100, "offset": 0, "more": false, "total": null}),
        )
    };
    for (p, key, item) in [
        ("/incidents", "incidents", incident.clone()),
        (
            "/services",
            "services",
            json!({"id": "PSVC001", "name": HOSTILE, "summary": HOSTILE, "status": "active", "html_url": "https://acme.pagerduty.com/services/PSVC001"}),
        ),
        (
            "/schedules",
            "schedules",
            json!({"id": "PSCH001", "name": HOSTILE, "summary": HOSTILE, "time_zone": "UTC", "html_url": "https://acme.pagerduty.com/schedules/PSCH001"}),
        ),
        (
            "/oncalls",
            "oncalls",
            json!({"escalation_level": 1, "user": {"id": "PJANE", "summary": HOSTILE, "type": "user_reference"}, "schedule": {"id": "PSCH001", "summary": HOSTILE, "type": "schedule_reference"}, "escalation_policy": {"id": "PEP1", "summary": HOSTILE, "type": "escalation_policy_reference"}, "start": null, "end": null}),
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(list(key, json!([item])))
            .mount(&pd)
            .await;
    }
    let pull = json!({
        "number": 1, "title": HOSTILE, "state": "open", "draft": false,
        "html_url": "https://github.com/acme/api/pull/1",
        "user": {"login": HOSTILE}, "created_at": "2026-11-20T10:00:00Z",
        "head": {"ref": HOSTILE}, "base": {"ref": "main"}
    });
    Mock::given(method("GET"))
        .and(path("/repos/acme/api/pulls"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([pull])))
        .mount(&gh)
        .await;
    Mock::given(method("GET"))
        .and(path("/search/issues"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total_count": 1, "incomplete_results": false,
            "items": [{"number": 1, "title": HOSTILE, "html_url": "https://github.com/acme/api/pull/1",
                       "repository_url": "https://api.github.com/repos/acme/api",
                       "user": {"login": HOSTILE}, "created_at": "2026-11-20T10:00:00Z",
                       "pull_request": {"url": "x"}}]
        })))
        .mount(&gh)
        .await;
    let ticket = json!({
        "id": 1, "url": "https://acme.zendesk.com/api/v2/tickets/1.json", "result_type": "ticket",
        "subject": HOSTILE, "description": HOSTILE, "status": "open", "priority": "high",
        "requester_id": 5, "assignee_id": 5, "created_at": "2026-11-20T10:00:00Z",
        "updated_at": "2026-11-20T10:00:00Z"
    });
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 1, "next_page": null, "results": [ticket.clone()],
            "users": [{"id": 5, "name": HOSTILE}]
        })))
        .mount(&zd)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets/1.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ticket": ticket, "users": [{"id": 5, "name": HOSTILE}]
        })))
        .mount(&zd)
        .await;
    (pd, gh, zd)
}

/// Where some markup arrived raw, as (what, where), for every body Slack received.
async fn raw_markup(app: &TestApp, acks: &[(String, String)]) -> Vec<(String, String)> {
    let mut bodies: Vec<(String, String)> = acks.to_vec();
    for r in app
        .response_url_server
        .received_requests()
        .await
        .unwrap_or_default()
    {
        bodies.push((
            "response_url".into(),
            String::from_utf8_lossy(&r.body).into_owned(),
        ));
    }
    let slack = app.slack_api.as_ref().unwrap();
    for m in ["chat.postMessage", "chat.update", "chat.postEphemeral"] {
        for call in slack_calls(slack, m).await {
            bodies.push((m.to_owned(), call.to_string()));
        }
    }
    let mut found = Vec::new();
    for (origin, body) in bodies {
        for markup in MARKUP {
            if body.contains(markup) {
                found.push((markup.to_owned(), format!("{origin}: {body}")));
            }
        }
    }
    found
}

fn signed_github(event: &str, id: &str, body: &str) -> Vec<(&'static str, String)> {
    let sig = HmacKey::new(GH_SECRET.as_bytes()).sign_hex(&[body.as_bytes()]);
    vec![
        ("content-type", "application/json".into()),
        ("x-github-event", event.to_owned()),
        ("x-github-delivery", id.to_owned()),
        ("x-hub-signature-256", format!("sha256={sig}")),
    ]
}

both_stores!(no_outside_text_reaches_slack_as_markup);

async fn no_outside_text_reaches_slack_as_markup(db: Db) {
    let (pd, gh, zd) = hostile_vendors().await;
    let Some(app) = TestApp::on(db, "escaping")
        .config(CONFIG)
        .with_slack_api()
        .env("PAGERDUTY_API_TOKEN", "pd-escaping-token-000")
        .env("PAGERDUTY_API_URL", pd.uri())
        .env("GITHUB_TOKEN", "ghp_escapingtoken0123456789abcdef")
        .env("GITHUB_API_URL", gh.uri())
        .env("ZENDESK_API_URL", zd.uri())
        .env("ZENDESK_EMAIL", "bot@acme.test")
        .env("ZENDESK_API_TOKEN", "zd-escaping-token-000")
        .env("GITHUB_WEBHOOK_SECRET", GH_SECRET)
        .env("PAGERDUTY_WEBHOOK_SECRET", PD_SECRET)
        .env("ZENDESK_WEBHOOK_SECRET", ZD_SECRET)
        .start()
        .await
    else {
        return;
    };

    // What people type.
    let typed = [
        HOSTILE.to_owned(),
        format!("pager {HOSTILE}"),
        format!("help {HOSTILE}"),
        format!("job {HOSTILE}"),
        format!("run {HOSTILE}"),
        format!("run deploy {HOSTILE}"),
        format!("run deploy app={HOSTILE}"),
        "deploy <!channel> 1 to staging".to_owned(),
        "deploy api <!here> to staging".to_owned(),
        "deploy api 1 to <http://x|y>".to_owned(),
        "deploy api 1.0 to staging".to_owned(),
        "pulls acme/api with .|<!channel>".to_owned(),
        "pulls acme/api with <@U0EVIL>|.".to_owned(),
        format!("pulls {HOSTILE}"),
        "org-pulls acme".to_owned(),
        "pager incidents".to_owned(),
        "pager services".to_owned(),
        format!("pager schedules {HOSTILE}"),
        "pager oncall".to_owned(),
        format!("pager me as {HOSTILE}"),
        format!("pager ack {HOSTILE}"),
        "tickets open".to_owned(),
        "ticket 1".to_owned(),
        format!("tickets {HOSTILE}"),
        format!("whoami {HOSTILE}"),
        format!("audit {HOSTILE}"),
        format!("cancel {HOSTILE}"),
        format!("approve {HOSTILE}"),
    ];
    let mut acks = Vec::new();
    let mut pending = Vec::new();
    for text in &typed {
        for user in [ALICE, JOE] {
            let ack = app.slash(text).by(user).send().await;
            acks.push((format!("ack of {text:?}"), ack.body.clone()));
            pending.push(ack);
        }
    }
    // Wait for each background answer (or 10 s), so nothing arrives after we look. The
    // commands that show vendor text or echo what was typed must show it, escaped: otherwise
    // this test would pass by showing nothing.
    let mut answers = Vec::new();
    for ack in &pending {
        let answer = if ack.body.is_empty() || ack.body.contains("in_channel") {
            app.reply(ack).await.to_string()
        } else {
            ack.body.clone()
        };
        answers.push(answer);
    }
    for (i, text) in typed.iter().enumerate() {
        let echoes = [
            "pulls acme/api with .|<!channel>",
            "org-pulls acme",
            "pager incidents",
            "pager services",
            "pager oncall",
            "tickets open",
            "ticket 1",
        ]
        .contains(&text.as_str())
            || text.starts_with("run ")
            || text == HOSTILE;
        if echoes {
            let answer = &answers[i * 2];
            assert!(
                MARKUP
                    .iter()
                    .any(|m| answer.contains(&m.replace('<', "&lt;").replace('>', "&gt;"))),
                "{text:?} showed no escaped outside text: {answer}"
            );
        }
    }
    assert_eq!(app.mention(ALICE, HOSTILE).await, 200);
    assert_eq!(app.mention(ALICE, &format!("job {HOSTILE}")).await, 200);

    // What webhooks send: three pushes to a branch named like markup (coalesced into one
    // message), and every GitHub event type we have a message for.
    let app_ref = &app;
    let github = |event: &'static str, id: String, body: String| async move {
        let headers = signed_github(event, &id, &body);
        let resp = app_ref.post_slack("/webhooks/github", body, &headers).await;
        assert!(resp.status().is_success(), "{event}: {}", resp.status());
    };
    let repo = json!({"full_name": "acme/api", "html_url": "https://github.com/acme/api"});
    for n in 0..3 {
        let push = json!({
            "ref": "refs/heads/<!channel>", "compare": "https://github.com/acme/api/compare/a...b",
            "repository": repo, "sender": {"login": HOSTILE},
            "commits": [{"id": format!("{n:040x}"), "message": HOSTILE, "author": {"name": HOSTILE}, "url": "https://github.com/acme/api/commit/x"}]
        });
        github("push", format!("push-{n}"), push.to_string()).await;
    }
    let everything = json!({
        "action": HOSTILE, "repository": repo, "sender": {"login": HOSTILE},
        "pull_request": {"number": 1, "title": HOSTILE, "html_url": "https://github.com/acme/api/pull/1",
                         "head": {"ref": HOSTILE}, "base": {"ref": HOSTILE}, "merged": false},
        "review": {"state": HOSTILE, "body": HOSTILE, "user": {"login": HOSTILE}, "html_url": "https://github.com/acme/api/pull/1#r"},
        "issue": {"number": 2, "title": HOSTILE, "html_url": "https://github.com/acme/api/issues/2"},
        "comment": {"body": HOSTILE, "html_url": "https://github.com/acme/api/issues/2#c"},
        "release": {"tag_name": HOSTILE, "name": HOSTILE, "html_url": "https://github.com/acme/api/releases/1"},
        "deployment": {"environment": HOSTILE, "ref": HOSTILE, "creator": {"login": HOSTILE}},
        "deployment_status": {"state": HOSTILE, "environment": HOSTILE, "log_url": "https://ci.example/log"},
        "workflow_run": {"name": HOSTILE, "head_branch": HOSTILE, "conclusion": HOSTILE, "html_url": "https://github.com/acme/api/actions/runs/1"},
        "check_suite": {"head_branch": HOSTILE, "conclusion": HOSTILE, "app": {"name": HOSTILE}}
    });
    for event in [
        "pull_request",
        "pull_request_review",
        "issues",
        "issue_comment",
        "release",
        "deployment",
        "deployment_status",
        "workflow_run",
        "check_suite",
        "gollum",
    ] {
        github(event, format!("ev-{event}"), everything.to_string()).await;
    }
    // PagerDuty and Zendesk.
    let pd_event = json!({"event": {"id": "EVPD1", "event_type": "incident.triggered", "occurred_at": "2026-11-24T01:00:00Z",
        "data": {"id": "PINC001", "type": "incident", "number": 7, "title": HOSTILE, "urgency": HOSTILE,
                 "html_url": "https://acme.pagerduty.com/incidents/PINC001",
                 "priority": {"summary": HOSTILE},
                 "service": {"summary": HOSTILE, "html_url": "https://acme.pagerduty.com/services/PSVC001"},
                 "assignees": [{"summary": HOSTILE}]}}})
    .to_string();
    let pd_sig = format!(
        "v1={}",
        HmacKey::new(PD_SECRET.as_bytes()).sign_hex(&[pd_event.as_bytes()])
    );
    let resp = app
        .post_slack(
            "/webhooks/pagerduty",
            pd_event,
            &[
                ("content-type", "application/json".into()),
                ("x-webhook-id", "pd-1".into()),
                ("x-pagerduty-signature", pd_sig),
            ],
        )
        .await;
    assert!(resp.status().is_success());
    let ts = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for (n, kind) in [
        "zen:event-type:ticket.created",
        "zen:event-type:ticket.status_changed",
    ]
    .iter()
    .enumerate()
    {
        let zd_event = json!({"id": format!("zd-{n}"), "type": kind, "time": ts, "subject": format!("zen:ticket:{n}"),
            "detail": {"id": n.to_string(), "subject": HOSTILE, "status": HOSTILE, "priority": HOSTILE, "requester_id": "5", "description": HOSTILE},
            "event": {"current": HOSTILE, "previous": HOSTILE}})
        .to_string();
        let tag = hex::decode(
            HmacKey::new(ZD_SECRET.as_bytes()).sign_hex(&[ts.as_bytes(), zd_event.as_bytes()]),
        )
        .unwrap();
        let resp = app
            .post_slack(
                "/webhooks/zendesk",
                zd_event,
                &[
                    ("content-type", "application/json".into()),
                    ("x-zendesk-webhook-signature-timestamp", ts.clone()),
                    (
                        "x-zendesk-webhook-signature",
                        base64::engine::general_purpose::STANDARD.encode(tag),
                    ),
                ],
            )
            .await;
        assert!(resp.status().is_success(), "{}", resp.status());
    }

    // Everything queued goes out (the pushes after their coalescing window), one message per
    // channel per second.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = app.services.store.outbox_counts().await.unwrap();
        if counts.pending == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let posts = slack_calls(app.slack_api.as_ref().unwrap(), "chat.postMessage").await;
    assert!(
        posts.iter().any(|p| p["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3 pushes")),
        "the pushes were coalesced: {posts:?}"
    );
    for channel in ["C0DEV", "C0INC", "C0SUP"] {
        assert!(
            posts
                .iter()
                .any(|p| p["channel"] == channel && p.to_string().contains("&lt;!channel&gt;")),
            "{channel} got the events, escaped: {posts:?}"
        );
    }
    let found = raw_markup(&app, &acks).await;
    assert!(
        found.is_empty(),
        "{} raw markup:\n{}",
        found.len(),
        found
            .iter()
            .map(|(m, w)| format!("{m} in {}", &w[..w.len().min(400)]))
            .collect::<Vec<_>>()
            .join("\n")
    );
    app.stop().await;
}
