//! `pager …` end to end: signed slash command in, a local server speaking PagerDuty's documented
//! shapes, the reply at the response URL and the audit trail.

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{body_json, header, method, path, query_param},
};

use crate::{
    both_stores,
    harness::{ALICE, Db, JANE, JOE, TestApp, outcomes},
};

const TOKEN: &str = "pd-test-token-1234567890";

const CONFIG: &str = r#"
[groups]
admins = ["U03JOE"]
approvers = ["U02JANE", "U03JOE"]

[pagerduty]
default_service = "PSVC001"
"#;

pub async fn start(db: Db, test: &str) -> Option<(TestApp, MockServer)> {
    let pd = MockServer::start().await;
    let app = TestApp::on(db, test)
        .config(CONFIG)
        .env("PAGERDUTY_API_TOKEN", TOKEN)
        .env("PAGERDUTY_API_URL", pd.uri())
        .start()
        .await?;
    Some((app, pd))
}

fn incident(id: &str, number: u64, status: &str, title: &str) -> Value {
    json!({
        "id": id, "type": "incident", "incident_number": number, "title": title,
        "summary": format!("[#{number}] {title}"), "status": status, "urgency": "high",
        "html_url": format!("https://acme.pagerduty.com/incidents/{id}"),
        "created_at": "2026-11-24T01:00:00Z",
        "service": {"id": "PSVC001", "type": "service_reference", "summary": "api"},
        "assignments": [{"at": "2026-11-24T01:00:00Z", "assignee": {"id": "PJANE", "type": "user_reference", "summary": "Jane Doe"}}]
    })
}

fn page(key: &str, items: Value, more: bool) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({key: items, "limit": 100, "offset": 0, "more": more, "total": null}))
}

/// Jane is known to PagerDuty by her email, and has told us it.
async fn jane_is_known(app: &TestApp, pd: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/users"))
        .and(query_param("query", "jane@acme.test"))
        .respond_with(page(
            "users",
            json!([
                {"id": "PJANE2", "name": "Jane Doe-Smith", "email": "jane.smith@acme.test"},
                {"id": "PJANE", "name": "Jane Doe", "email": "jane@acme.test"}
            ]),
            false,
        ))
        .mount(pd)
        .await;
    let ack = app
        .slash("pager me as <mailto:jane@acme.test|jane@acme.test>")
        .by(JANE)
        .send()
        .await;
    assert_eq!(ack.status, 200);
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows).last(), Some(&"succeeded"), "{rows:?}");
}

/// Every request PagerDuty got carried the documented headers.
async fn assert_pd_headers(pd: &MockServer) {
    for r in pd.received_requests().await.unwrap() {
        assert_eq!(
            r.headers["authorization"],
            format!("Token token={TOKEN}"),
            "{}",
            r.url
        );
        assert!(
            r.headers["accept"]
                .to_str()
                .unwrap()
                .starts_with("application/vnd.pagerduty+json;version=2")
        );
        assert_eq!(r.headers["content-type"], "application/json", "{}", r.url);
    }
}

fn requests_to<'a>(all: &'a [Request], m: &str, p: &str) -> Vec<&'a Request> {
    all.iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .collect()
}

both_stores!(
    incidents_are_listed_across_pages,
    ack_by_id_uses_the_remembered_email,
    ack_without_ids_acknowledges_mine,
    ack_all_is_for_admins_only,
    resolve_by_id,
    oncall_groups_by_policy,
    schedules_and_one_schedule,
    my_schedule_lists_my_shifts,
    taking_the_pager_creates_an_override,
    maintenance_on_named_services,
    services_are_listed,
    trigger_assigns_to_a_slack_user,
    unknown_identity_is_explained,
    a_pager_permission_does_not_open_ack_all,
    a_failed_trigger_is_not_sent_twice,
    identity_comes_from_slack_when_not_told,
    not_configured_is_explained,
    vendor_failures_become_clear_messages,
    rate_limits_are_honoured,
    an_empty_list_says_so,
    held_actions_wait_for_a_peer_and_run_as_the_requester,
    an_approval_holds_to_what_was_shown,
    a_held_trigger_sends_what_was_approved,
    an_approved_ack_with_nothing_left_sends_nothing,
);

async fn incidents_are_listed_across_pages(db: Db) {
    let Some((app, pd)) = start(db, "pd_incidents").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/incidents"))
        .and(query_param("offset", "0"))
        .respond_with(page(
            "incidents",
            json!([
                incident("PT1", 101, "triggered", "Database is *down*"),
                incident("PT2", 102, "acknowledged", "Queue <!channel> lag")
            ]),
            true,
        ))
        .mount(&pd)
        .await;
    Mock::given(method("GET"))
        .and(path("/incidents"))
        .and(query_param("offset", "2"))
        .respond_with(page(
            "incidents",
            json!([incident("PT3", 103, "triggered", "Disk full")]),
            false,
        ))
        .mount(&pd)
        .await;
    let ack = app.slash("pager incidents").send().await;
    assert_eq!(ack.status, 200);
    let reply = &app.reply(&ack).await;
    let text = reply["text"].as_str().unwrap();
    assert!(
        text.starts_with("3 open incidents (2 triggered, 1 acknowledged)"),
        "{text}"
    );
    assert!(
        text.contains("<https://acme.pagerduty.com/incidents/PT1|#101>"),
        "{text}"
    );
    assert!(text.contains("triggered · high urgency · api"), "{text}");
    assert!(text.contains("assigned to Jane Doe"), "{text}");
    // Markup from PagerDuty is shown, not obeyed.
    assert!(
        !text.contains("<!channel>") && text.contains("&lt;!channel&gt;"),
        "{text}"
    );
    assert!(!text.contains("*down*"), "{text}");
    assert_eq!(reply["response_type"], "ephemeral");
    assert_eq!(reply["blocks"][0]["type"], "header");

    let all = pd.received_requests().await.unwrap();
    let gets = requests_to(&all, "GET", "/incidents");
    assert_eq!(gets.len(), 2);
    let query: Vec<(String, String)> = gets[0]
        .url
        .query_pairs()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    assert!(
        query.contains(&("statuses[]".into(), "triggered".into())),
        "{query:?}"
    );
    assert!(
        query.contains(&("statuses[]".into(), "acknowledged".into())),
        "{query:?}"
    );
    assert!(query.contains(&("limit".into(), "100".into())), "{query:?}");
    assert_pd_headers(&pd).await;
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "succeeded"]);
    app.stop().await;
}

async fn ack_by_id_uses_the_remembered_email(db: Db) {
    let Some((app, pd)) = start(db, "pd_ack").await else {
        return;
    };
    jane_is_known(&app, &pd).await;
    Mock::given(method("PUT"))
        .and(path("/incidents"))
        .and(header("from", "jane@acme.test"))
        .and(body_json(json!({"incidents": [
            {"id": "PT1", "type": "incident_reference", "status": "acknowledged"},
            {"id": "PT2", "type": "incident_reference", "status": "acknowledged"}
        ]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"incidents": [incident("PT1", 101, "acknowledged", "db"), incident("PT2", 102, "acknowledged", "queue")]})))
        .expect(1)
        .mount(&pd)
        .await;
    let ack = app.slash("pager ack PT1 PT2").by(JANE).send().await;
    assert_eq!(
        ack.json(),
        json!({"response_type": "in_channel"}),
        "writes are echoed in the channel"
    );
    let rows = app.finished_audit(&ack.correlation_id).await;
    let reply = app.reply(&ack).await;
    assert_eq!(reply["response_type"], "in_channel", "{reply}");
    let text = reply["text"].as_str().unwrap();
    assert!(
        text.contains("<@U02JANE> acknowledged 2 incidents"),
        "{text}"
    );
    let steps: Vec<(String, &str, String)> = rows
        .iter()
        .map(|r| {
            (
                r.entry.action.clone(),
                r.entry.outcome.as_str(),
                r.entry.detail.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(steps[0].0, "command");
    assert!(
        steps.contains(&(
            "pagerduty.ack".into(),
            "started",
            "asked: ack PT1, PT2 (the given incidents) as jane@acme.test".into()
        )),
        "{steps:?}"
    );
    assert!(
        steps.contains(&(
            "pagerduty.ack".into(),
            "succeeded",
            "PagerDuty: 2 acknowledged: PT1, PT2".into()
        )),
        "{steps:?}"
    );
    assert_eq!(outcomes(&rows).last(), Some(&"succeeded"));
    // A malformed id is refused before anything is sent.
    let bad = app.slash("pager ack PT1;rm").by(JANE).send().await;
    let reply = app.reply(&bad).await;
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("is not a PagerDuty incident id"),
        "{reply}"
    );
    assert_pd_headers(&pd).await;
    app.stop().await;
}

async fn ack_without_ids_acknowledges_mine(db: Db) {
    let Some((app, pd)) = start(db, "pd_ack_mine").await else {
        return;
    };
    jane_is_known(&app, &pd).await;
    Mock::given(method("GET"))
        .and(path("/incidents"))
        .and(query_param("user_ids[]", "PJANE"))
        .and(query_param("statuses[]", "triggered"))
        .respond_with(page(
            "incidents",
            json!([incident("PT9", 109, "triggered", "mine")]),
            false,
        ))
        .mount(&pd)
        .await;
    Mock::given(method("PUT"))
        .and(path("/incidents"))
        .and(body_json(json!({"incidents": [{"id": "PT9", "type": "incident_reference", "status": "acknowledged"}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"incidents": [incident("PT9", 109, "acknowledged", "mine")]})))
        .expect(1)
        .mount(&pd)
        .await;
    let ack = app.slash("pager ack").by(JANE).send().await;
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows).last(), Some(&"succeeded"), "{rows:?}");
    assert!(
        rows.iter().any(|r| r.entry.detail.as_deref()
            == Some("asked: ack PT9 (your incidents) as jane@acme.test"))
    );
    app.stop().await;
}

async fn ack_all_is_for_admins_only(db: Db) {
    let Some((app, pd)) = start(db, "pd_ack_all").await else {
        return;
    };
    let refused = app.slash("pager ack!").by(JANE).send().await;
    assert_eq!(
        refused.text(),
        "You are not allowed to run `/ops pager ack!`: it needs the `admins` group."
    );
    // Joe (an admin) may; his identity comes from `pager me as`.
    Mock::given(method("GET"))
        .and(path("/users"))
        .respond_with(page(
            "users",
            json!([{"id": "PJOE", "name": "Joe", "email": "joe@acme.test"}]),
            false,
        ))
        .mount(&pd)
        .await;
    let told = app.slash("pager me as joe@acme.test").by(JOE).send().await;
    app.finished_audit(&told.correlation_id).await;
    Mock::given(method("GET"))
        .and(path("/incidents"))
        .respond_with(page(
            "incidents",
            json!([
                incident("PT1", 1, "triggered", "a"),
                incident("PT2", 2, "triggered", "b")
            ]),
            false,
        ))
        .mount(&pd)
        .await;
    Mock::given(method("PUT"))
        .and(path("/incidents"))
        .and(header("from", "joe@acme.test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"incidents": [incident("PT1", 1, "acknowledged", "a"), incident("PT2", 2, "acknowledged", "b")]})))
        .expect(1)
        .mount(&pd)
        .await;
    let ack = app.slash("pager ack!").by(JOE).send().await;
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert!(
        rows.iter().any(|r| r.entry.detail.as_deref()
            == Some("asked: ack PT1, PT2 (all incidents) as joe@acme.test")),
        "{rows:?}"
    );
    let all = pd.received_requests().await.unwrap();
    let listed = requests_to(&all, "GET", "/incidents");
    assert!(
        !listed[0].url.query().unwrap().contains("user_ids"),
        "ack! is not limited to the caller"
    );
    app.stop().await;
}

async fn resolve_by_id(db: Db) {
    let Some((app, pd)) = start(db, "pd_resolve").await else {
        return;
    };
    jane_is_known(&app, &pd).await;
    Mock::given(method("PUT"))
        .and(path("/incidents"))
        .and(body_json(json!({"incidents": [{"id": "PT1", "type": "incident_reference", "status": "resolved"}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"incidents": [incident("PT1", 101, "resolved", "db")]})))
        .expect(1)
        .mount(&pd)
        .await;
    let ack = app.slash("pager resolve PT1").by(JANE).send().await;
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows).last(), Some(&"succeeded"));
    let reply = app.reply(&ack).await;
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("resolved 1 incident"),
        "{reply}"
    );
    app.stop().await;
}

async fn oncall_groups_by_policy(db: Db) {
    let Some((app, pd)) = start(db, "pd_oncall").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/oncalls"))
        .and(query_param("earliest", "true"))
        .respond_with(page(
            "oncalls",
            json!([
                {"escalation_policy": {"id": "PEP1", "summary": "Ops"}, "escalation_level": 2, "user": {"id": "PB", "summary": "Bob"}, "schedule": {"id": "PS1", "summary": "Ops secondary"}, "start": "2026-11-24T00:00:00Z", "end": "2026-11-25T00:00:00Z"},
                {"escalation_policy": {"id": "PEP1", "summary": "Ops"}, "escalation_level": 1, "user": {"id": "PJANE", "summary": "Jane Doe"}, "schedule": {"id": "PS0", "summary": "Ops primary"}, "start": "2026-11-24T00:00:00Z", "end": "2026-11-24T18:00:00Z"},
                {"escalation_policy": {"id": "PEP2", "summary": "Billing"}, "escalation_level": 1, "user": {"id": "PC", "summary": "Carol"}, "schedule": null, "start": null, "end": null}
            ]),
            false,
        ))
        .mount(&pd)
        .await;
    let ack = app.slash("pager oncall").send().await;
    let reply = &app.reply(&ack).await;
    let text = reply["text"].as_str().unwrap();
    let billing = text.find("*Billing*").unwrap();
    let ops = text.find("*Ops*").unwrap();
    assert!(billing < ops, "policies in name order: {text}");
    assert!(
        text.contains("• level 1: Jane Doe until 2026-11-24 18:00 UTC via Ops primary"),
        "{text}"
    );
    assert!(
        text.find("level 1: Jane").unwrap() < text.find("level 2: Bob").unwrap(),
        "{text}"
    );
    assert!(text.contains("• level 1: Carol (always)"), "{text}");
    app.stop().await;
}

async fn schedules_and_one_schedule(db: Db) {
    let Some((app, pd)) = start(db, "pd_schedules").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/schedules"))
        .and(query_param("query", "ops"))
        .respond_with(page("schedules", json!([{"id": "PS0", "name": "Ops primary", "html_url": "https://acme.pagerduty.com/schedules/PS0", "time_zone": "UTC"}, {"id": "PS1", "name": "Ops secondary"}]), false))
        .mount(&pd)
        .await;
    Mock::given(method("GET"))
        .and(path("/schedules"))
        .and(query_param("query", "Ops primary"))
        .respond_with(page(
            "schedules",
            json!([{"id": "PS0", "name": "Ops primary"}]),
            false,
        ))
        .mount(&pd)
        .await;
    Mock::given(method("GET"))
        .and(path("/schedules/PS0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"schedule": {
            "id": "PS0", "name": "Ops primary", "time_zone": "UTC",
            "final_schedule": {"name": "Final Schedule", "rendered_schedule_entries": [
                {"start": "2026-11-24T00:00:00Z", "end": "2026-11-25T00:00:00Z", "user": {"id": "PJANE", "summary": "Jane Doe"}},
                {"start": "2026-11-25T00:00:00Z", "end": "2026-11-26T00:00:00Z", "user": {"id": "PB", "summary": "Bob"}}
            ]}
        }})))
        .mount(&pd)
        .await;
    let ack = app.slash("pager schedules ops").send().await;
    let text = app.reply_text(&ack).await;
    assert!(text.starts_with("2 schedules"), "{text}");
    assert!(
        text.contains("<https://acme.pagerduty.com/schedules/PS0|Ops primary> · `PS0` · UTC"),
        "{text}"
    );

    let ack = app
        .slash("pager schedule \"Ops primary\" days=7")
        .send()
        .await;
    let text = app.reply_text(&ack).await;
    assert!(text.starts_with("Ops primary: next 7 days"), "{text}");
    assert!(
        text.contains("• 2026-11-24 00:00 UTC → 2026-11-25 00:00 UTC: Jane Doe"),
        "{text}"
    );

    // The window asked for is now .. now + 7 days.
    let all = pd.received_requests().await.unwrap();
    let one = requests_to(&all, "GET", "/schedules/PS0");
    let q: std::collections::HashMap<String, String> = one[0]
        .url
        .query_pairs()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let since =
        time::OffsetDateTime::parse(&q["since"], &time::format_description::well_known::Rfc3339)
            .unwrap();
    let until =
        time::OffsetDateTime::parse(&q["until"], &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!((until - since).whole_days(), 7);

    // A usage error for a bad number of days.
    let bad = app.slash("pager schedule ops days=400").send().await;
    assert!(
        bad.text().contains("&lt;days&gt; must be between 1 and 90"),
        "{}",
        bad.text()
    );
    app.stop().await;
}

async fn my_schedule_lists_my_shifts(db: Db) {
    let Some((app, pd)) = start(db, "pd_my_schedule").await else {
        return;
    };
    jane_is_known(&app, &pd).await;
    Mock::given(method("GET"))
        .and(path("/oncalls"))
        .and(query_param("user_ids[]", "PJANE"))
        .respond_with(page("oncalls", json!([
            {"escalation_policy": {"id": "PEP1", "summary": "Ops"}, "escalation_level": 1, "user": {"id": "PJANE", "summary": "Jane"}, "schedule": {"id": "PS0", "summary": "Ops primary"}, "start": "2026-11-30T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
        ]), false))
        .mount(&pd)
        .await;
    let ack = app.slash("pager my schedule 14").by(JANE).send().await;
    let text = app.reply_text(&ack).await;
    assert!(
        text.starts_with("Your on-call shifts, next 14 days"),
        "{text}"
    );
    assert!(
        text.contains("• 2026-11-30 00:00 UTC → 2026-12-01 00:00 UTC: Ops primary"),
        "{text}"
    );
    app.stop().await;
}

async fn taking_the_pager_creates_an_override(db: Db) {
    let Some((app, pd)) = start(db, "pd_override").await else {
        return;
    };
    jane_is_known(&app, &pd).await;
    Mock::given(method("GET"))
        .and(path("/schedules"))
        .respond_with(page(
            "schedules",
            json!([{"id": "PS0", "name": "Ops primary"}]),
            false,
        ))
        .mount(&pd)
        .await;
    Mock::given(method("POST"))
        .and(path("/schedules/PS0/overrides"))
        .respond_with(|req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            let o = &body["overrides"][0];
            ResponseTemplate::new(201).set_body_json(json!([{"status": 201, "override": {"id": "QOVR1", "start": o["start"], "end": o["end"], "user": o["user"]}}]))
        })
        .expect(1)
        .mount(&pd)
        .await;
    let ack = app.slash("pager me primary 90").by(JANE).send().await;
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows).last(), Some(&"succeeded"), "{rows:?}");
    let text = app.reply_text(&ack).await;
    assert!(
        text.starts_with("<@U02JANE> has the pager on *Ops primary* until"),
        "{text}"
    );
    let all = pd.received_requests().await.unwrap();
    let post = requests_to(&all, "POST", "/schedules/PS0/overrides")[0];
    let body: Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!(
        body["overrides"][0]["user"],
        json!({"id": "PJANE", "type": "user_reference"})
    );
    let start = time::OffsetDateTime::parse(
        body["overrides"][0]["start"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let end = time::OffsetDateTime::parse(
        body["overrides"][0]["end"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((end - start).whole_minutes(), 90);
    assert!(rows.iter().any(|r| r.entry.action == "pagerduty.override"
        && r.entry.detail.as_deref() == Some("PagerDuty: override QOVR1 created")));
    app.stop().await;
}

async fn maintenance_on_named_services(db: Db) {
    let Some((app, pd)) = start(db, "pd_maintenance").await else {
        return;
    };
    jane_is_known(&app, &pd).await;
    Mock::given(method("GET"))
        .and(path("/services"))
        .and(query_param("query", "api"))
        .respond_with(page(
            "services",
            json!([{"id": "PSVC001", "name": "api"}, {"id": "PSVC009", "name": "api-gateway"}]),
            false,
        ))
        .mount(&pd)
        .await;
    Mock::given(method("GET"))
        .and(path("/services"))
        .and(query_param("query", "worker"))
        .respond_with(page(
            "services",
            json!([{"id": "PSVC002", "name": "background worker"}]),
            false,
        ))
        .mount(&pd)
        .await;
    Mock::given(method("POST"))
        .and(path("/maintenance_windows"))
        .and(header("from", "jane@acme.test"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"maintenance_window": {"id": "PMW1", "type": "maintenance_window", "end_time": "2026-11-24T12:00:00Z", "html_url": "https://acme.pagerduty.com/maintenance_windows/PMW1"}})))
        .expect(1)
        .mount(&pd)
        .await;
    let ack = app
        .slash("pager maintenance 30 api worker")
        .by(JANE)
        .send()
        .await;
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows).last(), Some(&"succeeded"), "{rows:?}");
    let all = pd.received_requests().await.unwrap();
    let post = requests_to(&all, "POST", "/maintenance_windows")[0];
    let body: Value = serde_json::from_slice(&post.body).unwrap();
    let window = &body["maintenance_window"];
    assert_eq!(window["type"], "maintenance_window");
    assert_eq!(
        window["services"],
        json!([{"id": "PSVC001", "type": "service_reference"}, {"id": "PSVC002", "type": "service_reference"}])
    );
    let text = app.reply_text(&ack).await;
    assert!(
        text.starts_with(
            "<@U02JANE> put *api*, *background worker* in maintenance until 2026-11-24 12:00 UTC."
        ),
        "{text}"
    );

    // An unknown service stops it before anything is written.
    Mock::given(method("GET"))
        .and(path("/services"))
        .and(query_param("query", "nothing"))
        .respond_with(page("services", json!([]), false))
        .mount(&pd)
        .await;
    let ack = app
        .slash("pager maintenance 30 nothing")
        .by(JANE)
        .send()
        .await;
    let text = app.reply_text(&ack).await;
    assert_eq!(
        text,
        "No PagerDuty service matches `nothing`; nothing was changed."
    );
    app.stop().await;
}

async fn services_are_listed(db: Db) {
    let Some((app, pd)) = start(db, "pd_services").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/services"))
        .respond_with(page("services", json!([{"id": "PSVC001", "name": "api", "status": "active", "html_url": "https://acme.pagerduty.com/service-directory/PSVC001"}]), false))
        .mount(&pd)
        .await;
    let ack = app.slash("pager services").send().await;
    let text = app.reply_text(&ack).await;
    assert!(
        text.contains(
            "<https://acme.pagerduty.com/service-directory/PSVC001|api> · active · `PSVC001`"
        ),
        "{text}"
    );
    app.stop().await;
}

async fn trigger_assigns_to_a_slack_user(db: Db) {
    let Some((app, pd)) = start(db, "pd_trigger").await else {
        return;
    };
    jane_is_known(&app, &pd).await;
    // Alice pages Jane by her Slack mention; Alice's own email is remembered too.
    Mock::given(method("GET"))
        .and(path("/users"))
        .and(query_param("query", "alice@acme.test"))
        .respond_with(page(
            "users",
            json!([{"id": "PALICE", "name": "Alice", "email": "alice@acme.test"}]),
            false,
        ))
        .mount(&pd)
        .await;
    let told = app
        .slash("pager me as alice@acme.test")
        .by(ALICE)
        .send()
        .await;
    app.finished_audit(&told.correlation_id).await;
    Mock::given(method("POST"))
        .and(path("/incidents"))
        .and(header("from", "alice@acme.test"))
        .and(body_json(json!({"incident": {
            "type": "incident", "title": "db is down again",
            "service": {"id": "PSVC001", "type": "service_reference"},
            "assignments": [{"assignee": {"id": "PJANE", "type": "user_reference"}}]
        }})))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"incident": incident("PT77", 177, "triggered", "db is down again")}),
        ))
        .expect(1)
        .mount(&pd)
        .await;
    let ack = app
        .slash("pager trigger <@U02JANE|jane> db is down again")
        .by(ALICE)
        .send()
        .await;
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows).last(), Some(&"succeeded"), "{rows:?}");
    let text = app.reply_text(&ack).await;
    assert!(
        text.starts_with(
            "<@U01ALICE> paged Jane Doe: <https://acme.pagerduty.com/incidents/PT77|#177>"
        ),
        "{text}"
    );
    app.stop().await;
}

async fn unknown_identity_is_explained(db: Db) {
    let Some((app, pd)) = start(db, "pd_who").await else {
        return;
    };
    let ack = app.slash("pager ack PT1").by(ALICE).send().await;
    let text = app.reply_text(&ack).await;
    assert_eq!(
        text,
        "I don't know who you are in PagerDuty. Tell me once with `/ops pager me as you@example.com`."
    );
    assert!(requests_to(&pd.received_requests().await.unwrap(), "PUT", "/incidents").is_empty());
    app.stop().await;
}

async fn identity_comes_from_slack_when_not_told(db: Db) {
    let pd = MockServer::start().await;
    let slack = MockServer::start().await;
    let Some(app) = TestApp::on(db, "pd_slack_identity")
        .config(CONFIG)
        .env("PAGERDUTY_API_TOKEN", TOKEN)
        .env("PAGERDUTY_API_URL", pd.uri())
        .env("SLACK_BOT_TOKEN", "xoxb-test-token-123456")
        .env("SLACK_API_URL", format!("{}/api", slack.uri()))
        .start()
        .await
    else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/api/users.info"))
        .and(query_param("user", ALICE))
        .and(header("authorization", "Bearer xoxb-test-token-123456"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"ok": true, "user": {"id": ALICE, "profile": {"email": "alice@acme.test"}}}),
        ))
        .expect(1)
        .mount(&slack)
        .await;
    Mock::given(method("GET"))
        .and(path("/users"))
        .respond_with(page(
            "users",
            json!([{"id": "PALICE", "name": "Alice", "email": "alice@acme.test"}]),
            false,
        ))
        .mount(&pd)
        .await;
    Mock::given(method("GET"))
        .and(path("/incidents"))
        .and(query_param("user_ids[]", "PALICE"))
        .respond_with(page("incidents", json!([]), false))
        .mount(&pd)
        .await;
    let ack = app.slash("pager ack").by(ALICE).send().await;
    let text = app.reply_text(&ack).await;
    assert_eq!(
        text,
        "No triggered incidents assigned to you to acknowledge."
    );
    // Remembered for next time: Slack is asked once (`expect(1)` above).
    let again = app.slash("pager ack").by(ALICE).send().await;
    assert_eq!(app.reply_text(&again).await, text);
    app.stop().await;
}

async fn not_configured_is_explained(db: Db) {
    let Some(app) = TestApp::on(db, "pd_unconfigured")
        .config(CONFIG)
        .start()
        .await
    else {
        return;
    };
    let ack = app.slash("pager incidents").send().await;
    let text = app.reply_text(&ack).await;
    assert_eq!(text, "PagerDuty is not configured: set PAGERDUTY_API_TOKEN");
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "failed"]);
    assert_eq!(
        rows[2].entry.detail.as_deref(),
        Some("PagerDuty is not configured: set PAGERDUTY_API_TOKEN")
    );
    app.stop().await;
}

/// Mount `response` for GET /services, run `pager services`, return the reply and audit detail.
async fn services_answer(
    app: &TestApp,
    pd: &MockServer,
    response: ResponseTemplate,
) -> (String, String) {
    pd.reset().await;
    Mock::given(method("GET"))
        .and(path("/services"))
        .respond_with(response)
        .mount(pd)
        .await;
    let ack = app.slash("pager services").send().await;
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(
        outcomes(&rows),
        ["received", "started", "failed"],
        "{rows:?}"
    );
    let text = app.reply_text(&ack).await;
    (text, rows[2].entry.detail.clone().unwrap_or_default())
}

async fn vendor_failures_become_clear_messages(db: Db) {
    let Some((app, pd)) = start(db, "pd_failures").await else {
        return;
    };
    let error = |status: u16, message: &str| {
        ResponseTemplate::new(status)
            .set_body_json(json!({"error": {"message": message, "code": 2001, "errors": []}}))
    };
    let (text, detail) = services_answer(&app, &pd, error(401, "Unauthorized")).await;
    assert_eq!(text, "PagerDuty rejected the token (401)");
    assert_eq!(detail, text);
    let (text, _) = services_answer(&app, &pd, error(403, "Access Denied")).await;
    assert_eq!(text, "PagerDuty refused the request (403): Access Denied");
    let (text, _) = services_answer(&app, &pd, error(404, "Not Found")).await;
    assert_eq!(text, "PagerDuty has no services (404)");
    let (text, _) = services_answer(&app, &pd, error(400, "Invalid Input Provided")).await;
    assert_eq!(
        text,
        "PagerDuty rejected the request (400): Invalid Input Provided"
    );
    let (text, _) = services_answer(&app, &pd, ResponseTemplate::new(500)).await;
    assert_eq!(
        text,
        "PagerDuty is having trouble (HTTP 500); try again shortly"
    );
    assert_eq!(
        pd.received_requests().await.unwrap().len(),
        4,
        "a 500 is retried (4 attempts)"
    );
    let (text, _) = services_answer(
        &app,
        &pd,
        ResponseTemplate::new(200).set_body_string("{not json"),
    )
    .await;
    assert_eq!(text, "PagerDuty sent an answer I could not read");
    let (text, _) = services_answer(
        &app,
        &pd,
        ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(10)),
    )
    .await;
    assert_eq!(text, "PagerDuty did not answer in time");
    // No token in any reply or audit row.
    for reply in app.replies(7).await {
        assert!(!reply.to_string().contains(TOKEN));
    }
    for row in app.services.store.recent_audit(100).await.unwrap() {
        assert!(!serde_json::to_string(&row.entry).unwrap().contains(TOKEN));
    }
    app.stop().await;
}

async fn rate_limits_are_honoured(db: Db) {
    let Some((app, pd)) = start(db, "pd_rate_limit").await else {
        return;
    };
    // A short Retry-After is waited out, then the call succeeds.
    Mock::given(method("GET"))
        .and(path("/services"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&pd)
        .await;
    Mock::given(method("GET"))
        .and(path("/services"))
        .respond_with(page(
            "services",
            json!([{"id": "PSVC001", "name": "api"}]),
            false,
        ))
        .mount(&pd)
        .await;
    let started = std::time::Instant::now();
    let ack = app.slash("pager services").send().await;
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows).last(), Some(&"succeeded"));
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After was honoured"
    );
    // A long one is reported with when it resets.
    let (text, _) = services_answer(
        &app,
        &pd,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "600")
            .insert_header("ratelimit-reset", "600"),
    )
    .await;
    assert!(
        text.starts_with("PagerDuty rate limit reached, resets at "),
        "{text}"
    );
    assert!(text.ends_with(" UTC"), "{text}");
    app.stop().await;
}

async fn an_empty_list_says_so(db: Db) {
    let Some((app, pd)) = start(db, "pd_empty").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/incidents"))
        .respond_with(page("incidents", json!([]), false))
        .mount(&pd)
        .await;
    let ack = app.slash("pager incidents").send().await;
    assert_eq!(
        app.reply_text(&ack).await,
        "No triggered or acknowledged incidents."
    );
    app.stop().await;
}

async fn a_pager_permission_does_not_open_ack_all(db: Db) {
    let pd = MockServer::start().await;
    let config = "[groups]\noncall = [\"U02JANE\"]\nadmins = [\"U03JOE\"]\n\n[permissions]\npager = [\"oncall\"]\n";
    let Some(app) = TestApp::on(db, "pd_perm")
        .config(config)
        .env("PAGERDUTY_API_TOKEN", TOKEN)
        .env("PAGERDUTY_API_URL", pd.uri())
        .start()
        .await
    else {
        return;
    };
    let ack = app.slash("pager ack!").by(JANE).send().await;
    assert_eq!(
        ack.text(),
        "You are not allowed to run `/ops pager ack!`: it needs the `admins` group."
    );
    let alice = app.slash("pager incidents").by(ALICE).send().await;
    assert_eq!(
        alice.text(),
        "You are not allowed to run `/ops pager incidents`: it needs the `oncall` group."
    );
    app.stop().await;
}

async fn a_failed_trigger_is_not_sent_twice(db: Db) {
    let Some((app, pd)) = start(db, "pd_no_retry").await else {
        return;
    };
    jane_is_known(&app, &pd).await;
    Mock::given(method("POST"))
        .and(path("/incidents"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&pd)
        .await;
    let ack = app
        .slash("pager trigger jane@acme.test db down")
        .by(JANE)
        .send()
        .await;
    assert_eq!(
        app.reply_text(&ack).await,
        "PagerDuty is having trouble (HTTP 500); try again shortly"
    );
    // A 500 may hide a created incident: asking again is the person's call, not ours.
    let posts = requests_to(&pd.received_requests().await.unwrap(), "POST", "/incidents").len();
    assert_eq!(posts, 1);
    app.stop().await;
}

/// An app whose PagerDuty `action` is held for approval, with a fast job queue.
async fn start_held(db: Db, test: &str, action: &str) -> Option<(TestApp, MockServer)> {
    let config =
        format!("{CONFIG}approval_required = [\"{action}\"]\n\n[jobs]\npoll = \"100ms\"\n");
    let pd = MockServer::start().await;
    let app = TestApp::on(db, test)
        .config(&config)
        .env("PAGERDUTY_API_TOKEN", TOKEN)
        .env("PAGERDUTY_API_URL", pd.uri())
        .start()
        .await?;
    Some((app, pd))
}

/// Job 1, once it has ended (up to 15 s).
async fn first_job_ended(app: &TestApp) -> pantheon::domain::job::Job {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let job = app.services.store.job(1).await.unwrap();
        match job {
            Some(job) if job.status.is_final() => return job,
            _ if std::time::Instant::now() > deadline => panic!("job 1 did not end: {job:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
        }
    }
}

/// `[pagerduty] approval_required`: the command opens an approval request instead of calling
/// PagerDuty; once a peer approves, a job makes the call as the person who asked.
async fn held_actions_wait_for_a_peer_and_run_as_the_requester(db: Db) {
    let Some((app, pd)) = start_held(db, "pd_held", "resolve").await else {
        return;
    };
    jane_is_known(&app, &pd).await;
    Mock::given(method("PUT"))
        .and(path("/incidents"))
        .and(header("from", "jane@acme.test"))
        .and(body_json(json!({"incidents": [{"id": "PT1", "type": "incident_reference", "status": "resolved"}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"incidents": [incident("PT1", 101, "resolved", "db")]})))
        .expect(1)
        .mount(&pd)
        .await;

    let ack = app.slash("pager resolve PT1").by(JANE).send().await;
    assert_eq!(ack.status, 200);
    let rows = app.finished_audit(&ack.correlation_id).await;
    let steps: Vec<String> = rows
        .iter()
        .map(|r| format!("{}:{}", r.entry.action, r.entry.outcome.as_str()))
        .collect();
    assert!(
        steps.contains(&"approval.request:succeeded".to_owned()),
        "{steps:?}"
    );
    assert!(
        !steps.iter().any(|s| s.starts_with("pagerduty.resolve")),
        "nothing sent yet: {steps:?}"
    );
    let reply = app.reply(&ack).await;
    let text = reply["text"].as_str().unwrap();
    assert!(
        text.contains("Approval needed: pagerduty.resolve"),
        "{text}"
    );
    assert!(
        text.contains("Would resolve PT1 (the given incidents) as jane@acme.test"),
        "approvers see what it would do: {text}"
    );
    let all = pd.received_requests().await.unwrap();
    assert!(requests_to(&all, "PUT", "/incidents").is_empty());

    let request = app
        .services
        .store
        .approval_request(1)
        .await
        .unwrap()
        .expect("an approval request");
    assert_eq!(request.runbook, "pagerduty.resolve");
    assert_eq!(request.requester, JANE);
    assert_eq!(request.params["command"], "pager resolve PT1");

    // Jane cannot approve her own request; Joe, an approver, can.
    let own = app.click(JANE, "approval_approve", "1").await;
    assert_eq!(
        app.click_reply(&own).await["text"],
        "You cannot approve or deny your own request; ask a peer."
    );
    assert_eq!(app.click(JOE, "approval_approve", "1").await.status, 200);

    let job = first_job_ended(&app).await;
    assert_eq!(job.status.as_str(), "succeeded", "{job:?}");
    assert_eq!(job.requested_by, JANE);
    let log = app.job_log_lines(1).await;
    assert!(
        log.iter().any(|l| l.contains("resolved 1 incident")),
        "PagerDuty's answer is in the job log: {log:?}"
    );
    assert_pd_headers(&pd).await;

    // The PagerDuty steps are audited under the request's correlation id, as Jane.
    let rows = app.audit_for(&ack.correlation_id).await;
    let resolved: Vec<&str> = rows
        .iter()
        .filter(|r| r.entry.action == "pagerduty.resolve")
        .map(|r| {
            assert_eq!(r.entry.actor, JANE);
            r.entry.outcome.as_str()
        })
        .collect();
    assert_eq!(resolved, ["started", "succeeded"], "{rows:?}");
    app.stop().await;
}

/// Jane's own incidents as PagerDuty lists them now.
fn mine(items: Value) -> Mock {
    Mock::given(method("GET"))
        .and(path("/incidents"))
        .and(query_param("user_ids[]", "PJANE"))
        .respond_with(page("incidents", items, false))
}

/// Jane asks for `pager ack` (her incidents) where it is held: PT9 is hers when she asks, and
/// the approvers are shown that.
async fn jane_asks_to_ack_hers(app: &TestApp, pd: &MockServer) {
    jane_is_known(app, pd).await;
    mine(json!([incident("PT9", 109, "triggered", "mine")]))
        .up_to_n_times(1)
        .mount(pd)
        .await;
    let ack = app.slash("pager ack").by(JANE).send().await;
    let text = app.reply(&ack).await["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("Would ack PT9 (your incidents) as jane@acme.test"),
        "{text}"
    );
}

/// `pager ack` (my incidents), held for approval: if by the time it is approved the set of
/// incidents has changed, the job does nothing and says why.
async fn an_approval_holds_to_what_was_shown(db: Db) {
    let Some((app, pd)) = start_held(db, "pd_held_changed", "ack").await else {
        return;
    };
    // One incident when Jane asks; a second one has arrived by the time Joe approves.
    jane_asks_to_ack_hers(&app, &pd).await;
    mine(json!([
        incident("PT9", 109, "triggered", "mine"),
        incident("PT10", 110, "triggered", "new")
    ]))
    .mount(&pd)
    .await;
    Mock::given(method("PUT"))
        .and(path("/incidents"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&pd)
        .await;
    assert_eq!(app.click(JOE, "approval_approve", "1").await.status, 200);

    let job = first_job_ended(&app).await;
    assert_eq!(job.status.as_str(), "failed", "{job:?}");
    let error = job.error.unwrap_or_default();
    assert!(
        error.contains("changed since it was approved") && error.contains("PT9, PT10"),
        "{error}"
    );
    app.stop().await;
}

/// A held `pager trigger`: the request holds the write as it will be sent (service, title,
/// assignee, as whom), and the approved job sends exactly that once.
async fn a_held_trigger_sends_what_was_approved(db: Db) {
    let Some((app, pd)) = start_held(db, "pd_held_trigger", "trigger").await else {
        return;
    };
    jane_is_known(&app, &pd).await;
    Mock::given(method("POST"))
        .and(path("/incidents"))
        .and(header("from", "jane@acme.test"))
        .and(body_json(json!({"incident": {
            "type": "incident", "title": "disk full",
            "service": {"id": "PSVC001", "type": "service_reference"},
            "assignments": [{"assignee": {"id": "PJANE", "type": "user_reference"}}]
        }})))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(
                json!({"incident": incident("PT78", 178, "triggered", "disk full")}),
            ),
        )
        .expect(1)
        .mount(&pd)
        .await;
    let ack = app
        .slash("pager trigger jane@acme.test disk full")
        .by(JANE)
        .send()
        .await;
    let text = app.reply(&ack).await["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains(
            "Would trigger \"disk full\" for Jane Doe on service PSVC001 as jane@acme.test"
        ),
        "{text}"
    );
    let request = app
        .services
        .store
        .approval_request(1)
        .await
        .unwrap()
        .expect("an approval request");
    let write: Value = serde_json::from_str(&request.params["write"]).unwrap();
    assert_eq!(
        write,
        json!({"write": "trigger", "service_id": "PSVC001", "title": "disk full",
               "assignee_id": "PJANE", "assignee_name": "Jane Doe", "from": "jane@acme.test"})
    );
    let all = pd.received_requests().await.unwrap();
    assert!(requests_to(&all, "POST", "/incidents").is_empty());

    assert_eq!(app.click(JOE, "approval_approve", "1").await.status, 200);
    let job = first_job_ended(&app).await;
    assert_eq!(job.status.as_str(), "succeeded", "{job:?}");
    let log = app.job_log_lines(1).await;
    assert!(log.iter().any(|l| l.contains("paged Jane Doe")), "{log:?}");
    let rows = app.audit_for(&ack.correlation_id).await;
    let triggered: Vec<&str> = rows
        .iter()
        .filter(|r| r.entry.action == "pagerduty.trigger")
        .map(|r| r.entry.outcome.as_str())
        .collect();
    assert_eq!(triggered, ["started", "succeeded"], "{rows:?}");
    app.stop().await;
}

/// `pager ack` (my incidents), held: if they were all acknowledged by the time a peer
/// approves, the job sends nothing and says there is nothing left, as the command would.
async fn an_approved_ack_with_nothing_left_sends_nothing(db: Db) {
    let Some((app, pd)) = start_held(db, "pd_held_nothing", "ack").await else {
        return;
    };
    jane_asks_to_ack_hers(&app, &pd).await;
    mine(json!([])).mount(&pd).await;
    Mock::given(method("PUT"))
        .and(path("/incidents"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&pd)
        .await;
    assert_eq!(app.click(JOE, "approval_approve", "1").await.status, 200);

    let job = first_job_ended(&app).await;
    assert_eq!(job.status.as_str(), "succeeded", "{job:?}");
    let log = app.job_log_lines(1).await;
    assert!(
        log.iter()
            .any(|l| l.contains("No triggered incidents assigned to you to acknowledge.")),
        "{log:?}"
    );
    app.stop().await;
}
