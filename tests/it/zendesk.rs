//! `tickets …` and `ticket <id>` against a local server speaking Zendesk's documented shapes.

use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

use crate::{
    both_stores,
    harness::{Db, TestApp, outcomes},
};

const TOKEN: &str = "zd-test-token-abcdef123456";

async fn start(db: Db, test: &str) -> Option<(TestApp, MockServer)> {
    let zd = MockServer::start().await;
    let app = TestApp::on(db, test)
        .env("ZENDESK_API_URL", zd.uri())
        .env("ZENDESK_EMAIL", "bot@acme.test")
        .env("ZENDESK_API_TOKEN", TOKEN)
        .start()
        .await?;
    Some((app, zd))
}

fn ticket(id: u64, subject: &str, status: &str, assignee: Option<u64>) -> serde_json::Value {
    json!({
        "id": id, "url": format!("https://acme.zendesk.com/api/v2/tickets/{id}.json"), "result_type": "ticket",
        "subject": subject, "status": status, "priority": "high", "requester_id": 7, "assignee_id": assignee,
        "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-24T01:00:00Z"
    })
}

fn basic_auth() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("bot@acme.test/token:{TOKEN}"))
    )
}

both_stores!(
    open_tickets_follow_next_page,
    a_next_page_on_another_host_is_not_followed,
    pending_count,
    one_ticket_with_names,
    statuses_are_checked,
    zendesk_failures,
    zendesk_not_configured,
);

async fn open_tickets_follow_next_page(db: Db) {
    let Some((app, zd)) = start(db, "zd_open").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("query", "type:ticket status:open"))
        .and(query_param("include", "tickets(users)"))
        .and(header("authorization", basic_auth().as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 3, "facets": null, "previous_page": null,
            "next_page": format!("{}/api/v2/search.json?page=2&query=type%3Aticket+status%3Aopen", zd.uri()),
            "results": [ticket(11, "Printer <b>on fire</b>", "open", Some(8)), ticket(12, "VPN down", "open", None)],
            "users": [{"id": 7, "name": "Rita Requester"}, {"id": 8, "name": "Andy Agent"}]
        })))
        .mount(&zd)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 3, "next_page": null, "results": [ticket(13, "Refund", "open", Some(8))], "users": []
        })))
        .mount(&zd)
        .await;
    let ack = app.slash("tickets open").send().await;
    let text = app.reply_text(&ack).await;
    assert!(text.starts_with("3 open tickets"), "{text}");
    assert!(
        text.contains(&format!(
            "<{}/agent/tickets/11|#11> *Printer &lt;b&gt;on fire&lt;/b&gt;*",
            zd.uri()
        )),
        "{text}"
    );
    assert!(
        text.contains("from Rita Requester · assigned to Andy Agent"),
        "{text}"
    );
    assert!(
        text.contains("#12> *VPN down* · open · high priority"),
        "{text}"
    );
    assert!(text.contains("unassigned"), "{text}");
    assert!(text.contains("#13>"), "{text}");
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "succeeded"]);
    app.stop().await;
}

async fn a_next_page_on_another_host_is_not_followed(db: Db) {
    let Some((app, zd)) = start(db, "zd_next_host").await else {
        return;
    };
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 2, "next_page": format!("{}/api/v2/search.json?page=2", elsewhere.uri()),
            "results": [ticket(11, "One", "new", None)]
        })))
        .mount(&zd)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&elsewhere)
        .await;
    let ack = app.slash("tickets new").send().await;
    let text = app.reply_text(&ack).await;
    assert!(text.contains("#11>"), "{text}");
    assert!(text.contains("The list was cut"), "{text}");
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "credentials must not leave the Zendesk host"
    );
    app.stop().await;
}

async fn pending_count(db: Db) {
    let Some((app, zd)) = start(db, "zd_count").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/api/v2/search/count.json"))
        .and(query_param("query", "type:ticket status:pending"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"count": 6})))
        .mount(&zd)
        .await;
    let ack = app.slash("tickets pending count").send().await;
    assert_eq!(app.reply_text(&ack).await, "6 pending tickets.");
    app.stop().await;
}

async fn one_ticket_with_names(db: Db) {
    let Some((app, zd)) = start(db, "zd_ticket").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets/35436.json"))
        .and(query_param("include", "users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ticket": ticket(35436, "Help, my printer is on fire!", "open", Some(8)),
            "users": [{"id": 7, "name": "Rita Requester"}, {"id": 8, "name": "Andy Agent"}]
        })))
        .mount(&zd)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets/404.json"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": "RecordNotFound", "description": "Not found"})),
        )
        .mount(&zd)
        .await;
    let ack = app.slash("ticket 35436").send().await;
    let reply = app.reply(&ack).await;
    let text = reply["text"].as_str().unwrap();
    assert!(
        text.contains("#35436> *Help, my printer is on fire!* · open · high priority"),
        "{text}"
    );
    assert!(
        text.contains("from Rita Requester · assigned to Andy Agent"),
        "{text}"
    );
    assert_eq!(reply["blocks"][0]["type"], "section");
    let missing = app.slash("ticket 404").send().await;
    assert_eq!(
        app.reply_text(&missing).await,
        "Zendesk has no ticket #404 (404)"
    );
    app.stop().await;
}

async fn statuses_are_checked(db: Db) {
    let Some((app, zd)) = start(db, "zd_status").await else {
        return;
    };
    let ack = app.slash("tickets closed").send().await;
    assert!(
        ack.text()
            .contains("&lt;status&gt; must be one of new, open, pending, hold, unsolved"),
        "{}",
        ack.text()
    );
    let ack = app.slash("ticket abc").send().await;
    assert!(
        ack.text().contains("must be a whole number"),
        "{}",
        ack.text()
    );
    assert!(zd.received_requests().await.unwrap().is_empty());
    app.stop().await;
}

async fn zendesk_failures(db: Db) {
    let Some((app, zd)) = start(db, "zd_failures").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/api/v2/search/count.json"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": "Couldn't authenticate you"})),
        )
        .mount(&zd)
        .await;
    let ack = app.slash("tickets open count").send().await;
    assert_eq!(
        app.reply_text(&ack).await,
        "Zendesk rejected the token (401)"
    );
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "failed"]);
    zd.reset().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .mount(&zd)
        .await;
    let ack = app.slash("tickets hold").send().await;
    let text = app.reply_text(&ack).await;
    assert!(
        text.starts_with("Zendesk rate limit reached, resets at "),
        "{text}"
    );
    zd.reset().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/search.json"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"count": 0, "results": [], "next_page": null})),
        )
        .mount(&zd)
        .await;
    let ack = app.slash("tickets unsolved").send().await;
    assert_eq!(app.reply_text(&ack).await, "No unsolved tickets.");
    let sent = zd.received_requests().await.unwrap();
    let q: Vec<(String, String)> = sent[0]
        .url
        .query_pairs()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    assert!(
        q.contains(&("query".into(), "type:ticket status<solved".into())),
        "{q:?}"
    );
    app.stop().await;
}

async fn zendesk_not_configured(db: Db) {
    let Some(app) = TestApp::on(db, "zd_unconfigured").start().await else {
        return;
    };
    let ack = app.slash("ticket 1").send().await;
    assert_eq!(
        app.reply_text(&ack).await,
        "Zendesk is not configured: set ZENDESK_SUBDOMAIN (or ZENDESK_API_URL), ZENDESK_EMAIL and ZENDESK_API_TOKEN"
    );
    app.stop().await;
}
