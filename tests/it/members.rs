//! Who may act: guests, deactivated accounts, people from another workspace (Slack Connect)
//! and people Slack does not know run nothing and vote on nothing, whatever groups list them;
//! every refusal is audited. Slack's `users.info` is asked once per person for a short time; a
//! vote is refused when Slack cannot answer, a command is not.

use std::time::Duration;

use serde_json::json;
use wiremock::{Mock, ResponseTemplate, matchers};

use crate::{
    both_stores,
    harness::{
        ALICE, DEACTIVATED_USER, Db, EXTERNAL_USER, GUEST_USER, JANE, TestApp, UNKNOWN_USER,
        outcomes,
    },
    runbooks::{config, only_request_id, write_script},
};

async fn start(db: Db, test: &str) -> Option<(TestApp, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", "echo deployed");
    let toml = config(&script, "").replace(
        "approvers = [\"U02JANE\", \"U03JOE\"]",
        &format!("approvers = [\"U02JANE\", \"U03JOE\", \"{GUEST_USER}\", \"{EXTERNAL_USER}\", \"{DEACTIVATED_USER}\", \"{UNKNOWN_USER}\", \"U0FLAKY\"]"),
    );
    let app = TestApp::on(db, test)
        .config(&toml)
        .with_slack_api()
        .start()
        .await?;
    Some((app, dir))
}

fn users_info_calls(requests: &[wiremock::Request], user: &str) -> usize {
    requests
        .iter()
        .filter(|r| {
            r.url.path() == "/api/users.info"
                && r.url.query_pairs().any(|(k, v)| k == "user" && v == user)
        })
        .count()
}

both_stores!(outsiders_run_no_command_and_each_refusal_is_audited);
both_stores!(an_answer_s_one_row_is_dated_when_it_arrived_and_says_how_long_it_took);

async fn outsiders_run_no_command_and_each_refusal_is_audited(db: Db) {
    let Some((app, _dir)) = start(db, "members_commands").await else {
        return;
    };
    for (user, said) in [
        (GUEST_USER, "a guest account"),
        (DEACTIVATED_USER, "a deactivated account"),
        (EXTERNAL_USER, "from another workspace"),
        (UNKNOWN_USER, "unknown to the chat platform"),
    ] {
        let ack = app.slash("deploy api v1 to staging").by(user).send().await;
        assert_eq!(ack.status, 200);
        assert_eq!(
            ack.text(),
            format!(
                "Only members of this workspace may do this here, and your account is {said}; nothing was done."
            ),
            "{user}"
        );
        let rows = app.audit_for(&ack.correlation_id).await;
        assert_eq!(outcomes(&rows), ["refused"], "{user}");
        assert!(
            rows[0]
                .entry
                .detail
                .as_deref()
                .unwrap_or_default()
                .contains(said)
        );
    }
    assert!(
        app.services
            .store
            .pending_approvals()
            .await
            .unwrap()
            .is_empty(),
        "nothing was asked for"
    );
    assert!(app.services.store.jobs(None, 10).await.unwrap().is_empty());
    // A member runs it, and is looked up once for two commands.
    for _ in 0..2 {
        let ack = app.slash("help").by(ALICE).send().await;
        assert!(
            ack.text().contains("help") || !ack.body.is_empty(),
            "{}",
            ack.body
        );
    }
    let ack = app.slash("deploy api v1 to staging").by(ALICE).send().await;
    assert!(!ack.text().contains("Only members"), "{}", ack.body);
    let requests = app
        .slack_api
        .as_ref()
        .unwrap()
        .received_requests()
        .await
        .unwrap();
    assert_eq!(
        users_info_calls(&requests, ALICE),
        1,
        "remembered for a while"
    );
    app.stop().await;
}

both_stores!(outsiders_listed_as_approvers_cannot_vote);

async fn outsiders_listed_as_approvers_cannot_vote(db: Db) {
    let Some((app, _dir)) = start(db, "members_votes").await else {
        return;
    };
    let ack = app
        .slash("deploy api v2 to production")
        .by(ALICE)
        .send()
        .await;
    assert_eq!(ack.status, 200);
    let id = app
        .within(Duration::from_secs(10), async {
            loop {
                if let Ok(p) = app.services.store.pending_approvals().await
                    && !p.is_empty()
                {
                    return p[0].id;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    assert_eq!(id, only_request_id(&app).await);
    // Slack cannot say who U0FLAKY is just now.
    Mock::given(matchers::path("/api/users.info"))
        .and(matchers::query_param("user", "U0FLAKY"))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(1)
        .mount(app.slack_api.as_ref().unwrap())
        .await;
    for (user, said) in [
        (GUEST_USER, "your account is a guest account"),
        (EXTERNAL_USER, "your account is from another workspace"),
        (DEACTIVATED_USER, "your account is a deactivated account"),
        (UNKNOWN_USER, "your account is unknown to the chat platform"),
        ("U0FLAKY", "could not confirm your account just now"),
    ] {
        let clicked = app.click(user, "approval_approve", &id.to_string()).await;
        assert_eq!(clicked.status, 200);
        let reply = app.click_reply(&clicked).await;
        let text = reply["text"].as_str().unwrap_or_default();
        assert!(text.contains(said), "{user}: {text}");
        assert_eq!(reply["replace_original"], json!(false));
    }
    let request = app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        request.votes.is_empty(),
        "no vote counted: {:?}",
        request.votes
    );
    let refused: Vec<_> = app
        .services
        .store
        .audit_before(i64::MAX, 200)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.entry.action == "approval.approve"
                && r.entry.outcome == pantheon::domain::audit::Outcome::Refused
        })
        .collect();
    assert_eq!(refused.len(), 5, "{refused:?}");
    // A member of the workspace approves.
    let clicked = app.click(JANE, "approval_approve", &id.to_string()).await;
    assert_eq!(clicked.status, 200);
    let approved = app
        .within(Duration::from_secs(10), async {
            loop {
                let r = app
                    .services
                    .store
                    .approval_request(id)
                    .await
                    .unwrap()
                    .unwrap();
                if !r.votes.is_empty() {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    assert_eq!(approved.approvers(), [JANE]);
    app.stop().await;
}

async fn an_answer_s_one_row_is_dated_when_it_arrived_and_says_how_long_it_took(db: Db) {
    let Some((app, _dir)) = start(db, "members_slow").await else {
        return;
    };
    // Slack takes 400 ms to say that this guest is a guest.
    Mock::given(matchers::path("/api/users.info"))
        .and(matchers::query_param("user", "U0SLOWGUEST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "user": {
                    "id": "U0SLOWGUEST", "team_id": "T1", "name": "slowguest", "deleted": false,
                    "is_bot": false, "is_restricted": true, "is_ultra_restricted": false
                }}))
                .set_delay(Duration::from_millis(400)),
        )
        .with_priority(1)
        .mount(app.slack_api.as_ref().unwrap())
        .await;
    let sent = time::OffsetDateTime::now_utc();
    let ack = app
        .slash("deploy api v1 to staging")
        .by("U0SLOWGUEST")
        .send()
        .await;
    let answered = time::OffsetDateTime::now_utc();
    assert!(ack.text().contains("a guest account"), "{}", ack.text());
    // One row for the answer: dated before the lookup began, and saying it took the lookup's
    // time.
    let rows = app.audit_for(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["refused"]);
    let row = &rows[0].entry;
    assert!(
        row.at >= sent - Duration::from_millis(5)
            && row.at <= answered - Duration::from_millis(350),
        "sent {sent}, answered {answered}: {row:?}"
    );
    assert!(row.duration_ms.is_some_and(|ms| ms >= 390), "{row:?}");
    app.stop().await;
}
