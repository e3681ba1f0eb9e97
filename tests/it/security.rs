//! What an attacker's review found (issue 10), one test per finding, on both stores.

use std::time::Duration;

use crate::{
    both_stores,
    harness::{ALICE, Db, JOE, TestApp, outcomes},
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
        assert_eq!(outcomes(&rows), ["received", "refused"]);
        assert!(
            rows[1]
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
    assert_eq!(outcomes(&rows), ["received", "refused"]);

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
    assert_eq!(outcomes(&rows), ["received", "refused"]);

    let unknown = app.slash("helo").send().await;
    let rows = app.audit_for(&unknown.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "invalid"]);
    app.stop().await;
}
