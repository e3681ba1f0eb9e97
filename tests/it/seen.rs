//! What people see, pinned as snapshots of the Slack messages Pantheon renders: an approval
//! message through each of its states, and one notification per event type we have words for.
//! A change to any of them shows up as a snapshot diff to review (`cargo insta review`).

use std::collections::BTreeMap;

use pantheon::{
    domain::{
        approval::{ApprovalRequest, Decision, RequestStatus, Vote},
        job::{Job, JobStatus},
    },
    notify::format::{self, Formatted},
    runbooks::jobs::report::approval_message,
    slack::blocks,
};
use serde_json::{Value, json};
use time::macros::datetime;

use crate::harness::shared_dir;

fn request(status: RequestStatus) -> ApprovalRequest {
    let created = datetime!(2026-11-24 14:05 UTC);
    ApprovalRequest {
        id: 7,
        runbook: "deploy".into(),
        params: BTreeMap::from([
            ("app".to_owned(), "api".to_owned()),
            ("env".to_owned(), "production".to_owned()),
            ("version".to_owned(), "1.4.2".to_owned()),
        ]),
        binding: "0".repeat(64),
        target: "api/production".into(),
        requester: "U01ALICE".into(),
        channel: "C0DEPLOY".into(),
        approver_group: "approvers".into(),
        required: 2,
        status,
        plan_output: Some("would restart 3 pods <!channel>".into()),
        message_ref: Some("1700000000.000001".into()),
        correlation_id: "c-7".into(),
        created_at: created,
        expires_at: created + time::Duration::hours(1),
        decided_at: None,
        decided_by: None,
        job_id: None,
        votes: Vec::new(),
        overrides: None,
        override_group: None,
    }
}

fn vote(voter: &str, decision: Decision) -> Vote {
    Vote {
        voter: voter.into(),
        decision,
        at: datetime!(2026-11-24 14:10 UTC),
        overrider: false,
        comment: None,
    }
}

fn job(status: JobStatus) -> Job {
    Job {
        id: 12,
        runbook: "deploy".into(),
        params: BTreeMap::new(),
        binding: String::new(),
        target: "api/production".into(),
        requested_by: "U01ALICE".into(),
        approval_id: Some(7),
        channel: "C0DEPLOY".into(),
        thread_ref: Some("1700000000.000001".into()),
        status,
        retry_safe: false,
        cancel_requested: false,
        attempts: 1,
        worker: None,
        lease_expires_at: None,
        correlation_id: "c-7".into(),
        created_at: datetime!(2026-11-24 14:11 UTC),
        started_at: Some(datetime!(2026-11-24 14:11 UTC)),
        finished_at: Some(datetime!(2026-11-24 14:12:03 UTC)),
        exit_code: Some(0),
        error: None,
        overrides: None,
    }
}

#[test]
fn an_approval_message_from_pending_to_succeeded() {
    let pending = request(RequestStatus::Pending);
    insta::assert_json_snapshot!(
        "approval_1_pending",
        blocks::reply(&approval_message(&pending, None))
    );

    let one_vote = ApprovalRequest {
        votes: vec![vote("U02JANE", Decision::Approve)],
        ..pending.clone()
    };
    insta::assert_json_snapshot!(
        "approval_2_one_of_two",
        blocks::reply(&approval_message(&one_vote, None))
    );

    let approved = ApprovalRequest {
        status: RequestStatus::Approved,
        votes: vec![
            vote("U02JANE", Decision::Approve),
            vote("U03JOE", Decision::Approve),
        ],
        decided_at: Some(datetime!(2026-11-24 14:11 UTC)),
        decided_by: Some("U03JOE".into()),
        job_id: Some(12),
        ..pending.clone()
    };
    insta::assert_json_snapshot!(
        "approval_3_approved_queued",
        blocks::reply(&approval_message(&approved, Some(&job(JobStatus::Queued))))
    );
    insta::assert_json_snapshot!(
        "approval_4_succeeded",
        blocks::reply(&approval_message(
            &approved,
            Some(&job(JobStatus::Succeeded))
        ))
    );
}

/// A vote with a comment: the comment is shown under the status, escaped.
#[test]
fn an_approval_message_with_a_comment() {
    let mut commented = vote("U02JANE", Decision::Approve);
    commented.comment = Some("Checked the <migration> & *the* dashboards".into());
    let approved = ApprovalRequest {
        status: RequestStatus::Approved,
        votes: vec![commented],
        decided_at: Some(datetime!(2026-11-24 14:11 UTC)),
        decided_by: Some("U02JANE".into()),
        job_id: Some(12),
        ..request(RequestStatus::Pending)
    };
    insta::assert_json_snapshot!(
        "approval_with_comment",
        blocks::reply(&approval_message(&approved, Some(&job(JobStatus::Queued))))
    );
}

/// Break-glass: a run over a lock says so, and what its extra approval must be.
#[test]
fn an_approval_message_that_overrides_a_lock() {
    let pending = ApprovalRequest {
        overrides: Some(
            "`api/production` is locked by U03JOE: migrating the database, since 2026-11-24 13:50 UTC"
                .into(),
        ),
        override_group: Some("sre".into()),
        ..request(RequestStatus::Pending)
    };
    insta::assert_json_snapshot!(
        "approval_override_pending",
        blocks::reply(&approval_message(&pending, None))
    );
    let mut by_sre = vote("U04ANN", Decision::Approve);
    by_sre.overrider = true;
    let approved = ApprovalRequest {
        status: RequestStatus::Approved,
        votes: vec![vote("U02JANE", Decision::Approve), by_sre],
        decided_at: Some(datetime!(2026-11-24 14:11 UTC)),
        decided_by: Some("U04ANN".into()),
        job_id: Some(12),
        ..pending
    };
    insta::assert_json_snapshot!(
        "approval_override_approved",
        blocks::reply(&approval_message(&approved, Some(&job(JobStatus::Queued))))
    );
}

#[test]
fn an_approval_message_that_ends_without_a_run() {
    let pending = request(RequestStatus::Pending);
    let denied = ApprovalRequest {
        status: RequestStatus::Denied,
        votes: vec![vote("U03JOE", Decision::Deny)],
        decided_by: Some("U03JOE".into()),
        ..pending.clone()
    };
    insta::assert_json_snapshot!(
        "approval_denied",
        blocks::reply(&approval_message(&denied, None))
    );
    let expired = ApprovalRequest {
        status: RequestStatus::Expired,
        ..pending.clone()
    };
    insta::assert_json_snapshot!(
        "approval_expired",
        blocks::reply(&approval_message(&expired, None))
    );
    let withdrawn = ApprovalRequest {
        status: RequestStatus::Withdrawn,
        ..pending
    };
    insta::assert_json_snapshot!(
        "approval_withdrawn",
        blocks::reply(&approval_message(&withdrawn, None))
    );
}

/// A notification as posted: its fallback text and its blocks.
fn posted(f: &Formatted) -> Value {
    json!({"text": f.text, "blocks": blocks::blocks(&f.blocks)})
}

fn repo() -> Value {
    json!({"full_name": "acme/api", "html_url": "https://github.com/acme/api"})
}

fn sender() -> Value {
    json!({"login": "jane"})
}

/// One payload per GitHub event type with a message of its own, with the fields our messages
/// read (GitHub sends many more).
fn github_examples() -> Vec<(&'static str, Value)> {
    let pr = json!({"number": 42, "title": "Add *retries* <!here>", "html_url": "https://github.com/acme/api/pull/42",
                    "user": {"login": "jane"}, "head": {"ref": "retries"}, "base": {"ref": "main"}, "merged": false});
    vec![
        (
            "push",
            json!({"ref": "refs/heads/main", "repository": repo(), "sender": sender(),
            "compare": "https://github.com/acme/api/compare/a...b", "pusher": {"name": "jane"},
            "commits": [{"id": "0123456789abcdef", "message": "Fix the `retry` loop\n\nlong text", "url": "https://github.com/acme/api/commit/0123456",
                         "author": {"name": "Jane", "username": "jane"}}]}),
        ),
        (
            "pull_request",
            json!({"action": "opened", "number": 42, "pull_request": pr, "repository": repo(), "sender": sender()}),
        ),
        (
            "pull_request_review",
            json!({"action": "submitted", "pull_request": pr, "repository": repo(), "sender": {"login": "joe"},
            "review": {"state": "approved", "html_url": "https://github.com/acme/api/pull/42#review-1", "user": {"login": "joe"}, "body": "LGTM"}}),
        ),
        (
            "issues",
            json!({"action": "opened", "issue": {"number": 9, "title": "Crash on start", "html_url": "https://github.com/acme/api/issues/9",
            "user": {"login": "joe"}}, "repository": repo(), "sender": {"login": "joe"}}),
        ),
        (
            "issue_comment",
            json!({"action": "created", "issue": {"number": 9, "title": "Crash on start", "html_url": "https://github.com/acme/api/issues/9"},
            "comment": {"body": "Seen it too", "html_url": "https://github.com/acme/api/issues/9#issuecomment-1", "user": {"login": "jane"}},
            "repository": repo(), "sender": sender()}),
        ),
        (
            "release",
            json!({"action": "published", "release": {"tag_name": "v1.4.2", "name": "1.4.2", "html_url": "https://github.com/acme/api/releases/tag/v1.4.2",
            "author": {"login": "jane"}}, "repository": repo(), "sender": sender()}),
        ),
        (
            "deployment",
            json!({"action": "created", "deployment": {"id": 5, "ref": "main", "environment": "production", "creator": {"login": "jane"}},
            "repository": repo(), "sender": sender()}),
        ),
        (
            "deployment_status",
            json!({"action": "created", "deployment_status": {"state": "success", "environment": "production",
            "target_url": "https://ci.example/5"}, "deployment": {"id": 5, "ref": "main", "environment": "production"},
            "repository": repo(), "sender": sender()}),
        ),
        (
            "workflow_run",
            json!({"action": "completed", "workflow_run": {"name": "CI", "conclusion": "failure", "head_branch": "main",
            "html_url": "https://github.com/acme/api/actions/runs/1", "run_number": 77, "actor": {"login": "jane"}},
            "repository": repo(), "sender": sender()}),
        ),
        (
            "check_suite",
            json!({"action": "completed", "check_suite": {"conclusion": "success", "head_branch": "main", "head_sha": "0123456789abcdef",
            "app": {"name": "CI"}}, "repository": repo(), "sender": sender()}),
        ),
    ]
}

#[test]
fn one_notification_per_github_event_type() {
    for (event, payload) in github_examples() {
        let f = format::github(event, &payload);
        assert!(f.facts.known, "{event}");
        insta::assert_json_snapshot!(format!("github_{event}"), posted(&f));
    }
}

#[test]
fn one_notification_per_pagerduty_and_zendesk_event_type() {
    let Some(shared) = shared_dir("notification snapshots") else {
        return;
    };
    let derived = shared.join("fixtures/pagerduty/derived");
    let mut names: Vec<String> = std::fs::read_dir(&derived)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        let payload: Value =
            serde_json::from_str(&std::fs::read_to_string(derived.join(&name)).unwrap()).unwrap();
        let kind = name.trim_start_matches("v3.").trim_end_matches(".json");
        let f = format::pagerduty(&payload);
        insta::assert_json_snapshot!(format!("pagerduty_{kind}"), posted(&f));
    }
    let ticket: Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("fixtures/zendesk/event.ticket.created.json"))
            .unwrap(),
    )
    .unwrap();
    let f = format::zendesk(&ticket, |id| {
        Some(format!("https://acme.zendesk.com/agent/tickets/{id}"))
    });
    assert!(f.facts.known);
    insta::assert_json_snapshot!("zendesk_ticket.created", posted(&f));
}
