//! Health, readiness and metrics.

use crate::{
    both_stores,
    harness::{Db, TestApp},
    slash_commands::CONFIG,
};

both_stores!(
    health_readiness_and_metrics,
    readiness_fails_when_the_database_is_gone,
    unknown_routes_are_404
);

async fn health_readiness_and_metrics(db: Db) {
    let Some(app) = TestApp::on(db, "ops").config(CONFIG).start().await else {
        return;
    };
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    let kind = match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
    };
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "database": kind})
    );

    app.slash("whoami").send().await;
    app.slash("no such thing").send().await;
    assert_eq!(
        app.slash("whoami").signed_with("bad").send().await.status,
        401
    );

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    for expected in [
        r#"pantheon_http_requests_total{route="/slack/commands",method="POST",status="200"}"#,
        r#"pantheon_http_requests_total{route="/slack/commands",method="POST",status="401"}"#,
        r#"pantheon_http_request_duration_seconds_bucket{route="/slack/commands",status="200",le="0.005"}"#,
        r#"pantheon_commands_total{command="whoami",outcome="succeeded"}"#,
        r#"pantheon_commands_total{command="unknown",outcome="invalid"}"#,
        r#"pantheon_signature_failures_total{source="slack",reason="mismatch"}"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    app.stop().await;
}

async fn readiness_fails_when_the_database_is_gone(db: Db) {
    let Some(app) = TestApp::on(db, "not_ready").config(CONFIG).start().await else {
        return;
    };
    app.services.store.close().await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    // And a command is refused rather than run unaudited, in the acknowledgement itself.
    let ack = app.slash("audit").by(crate::harness::JOE).send().await;
    assert_eq!(ack.status, 200);
    let text = ack.text();
    assert!(
        text.contains("cannot write its audit trail right now, so nothing was run"),
        "{text}"
    );
    assert!(
        app.replies(0).await.is_empty(),
        "nothing ran to reply later"
    );
}

async fn unknown_routes_are_404(db: Db) {
    let Some(app) = TestApp::on(db, "not_found").config(CONFIG).start().await else {
        return;
    };
    let resp = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = app
        .client
        .get(app.url("/slack/commands"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    app.stop().await;
}
