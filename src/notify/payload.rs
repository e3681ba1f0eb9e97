//! The webhook payloads we read, as types. A payload is read leniently, as the messages need:
//! a field that is missing, empty or of another type reads as absent (and the message is
//! plainer), never as an error, since the delivery is already verified and stored.
//!
//! Leaves are [`Text`] (a non-empty string), [`Number`] (a whole number, or digits in a
//! string), [`Id`] (either, as text) and [`Flag`] (only `true` is true); every object is wrapped
//! in [`L`] and every list is a [`List`], which read anything that is not an object (a list) as
//! their default.

use std::ops::Deref;

use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::Value;

/// A non-empty string, or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(Option<String>);

impl Text {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(match Value::deserialize(d)? {
            Value::String(s) if !s.is_empty() => Some(s),
            _ => None,
        }))
    }
}

/// A whole number, written as one or as digits in a string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Number(Option<i64>);

impl Number {
    pub fn get(self) -> Option<i64> {
        self.0
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Number(match Value::deserialize(d)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }))
    }
}

/// An id given as a non-empty string or as a whole number, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Id(Option<String>);

impl Id {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Id(match Value::deserialize(d)? {
            Value::String(s) if !s.is_empty() => Some(s),
            Value::Number(n) => n.as_i64().map(|n| n.to_string()),
            _ => None,
        }))
    }
}

/// `true` only when the payload says `true`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(bool);

impl Flag {
    pub fn get(self) -> bool {
        self.0
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Flag(matches!(Value::deserialize(d)?, Value::Bool(true))))
    }
}

/// An object read leniently: anything but an object (serde would fill a struct from a list, by
/// position) is `T::default()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct L<T>(T);

impl<T> Deref for L<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: DeserializeOwned + Default> Deserialize<'de> for L<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(L(if value.is_object() {
            T::deserialize(value).unwrap_or_default()
        } else {
            T::default()
        }))
    }
}

/// A list of objects read leniently: anything but a list is empty, and each item is an [`L`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct List<T>(Vec<L<T>>);

impl<T> Deref for List<T> {
    type Target = [L<T>];
    fn deref(&self) -> &[L<T>] {
        &self.0
    }
}

impl<'de, T: DeserializeOwned + Default> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(List(match Value::deserialize(d)? {
            Value::Array(items) => items
                .into_iter()
                .map(|item| L::deserialize(item).unwrap_or_default())
                .collect(),
            _ => Vec::new(),
        }))
    }
}

/// Read `T` from a whole payload, leniently.
pub fn read<T: DeserializeOwned + Default>(payload: &Value) -> T {
    T::deserialize(payload).unwrap_or_default()
}

/// Something with a name: `{"summary": …}`, `{"login": …}`, `{"name": …}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Named {
    pub id: Text,
    pub summary: Text,
    pub login: Text,
    pub name: Text,
    pub username: Text,
    pub html_url: Text,
}

// ---- GitHub ----

/// What every GitHub event carries, and the part that depends on the event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GitHubEvent {
    /// `X-GitHub-Event`.
    pub event: String,
    pub common: GitHubCommon,
    pub body: GitHubBody,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GitHubCommon {
    pub action: Text,
    pub repository: L<Repository>,
    pub sender: L<Named>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Repository {
    pub full_name: Text,
    pub html_url: Text,
}

/// The event-specific part, by `X-GitHub-Event`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum GitHubBody {
    Push(Push),
    PullRequest(PullRequestEvent),
    PullRequestReview(ReviewEvent),
    Issues(IssueEvent),
    IssueComment(IssueEvent),
    Release(ReleaseEvent),
    Deployment(DeploymentEvent),
    DeploymentStatus(DeploymentEvent),
    WorkflowRun(WorkflowRunEvent),
    CheckSuite(CheckSuiteEvent),
    /// An event we have no message for.
    #[default]
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Push {
    #[serde(rename = "ref")]
    pub git_ref: Text,
    pub compare: Text,
    pub deleted: Flag,
    pub forced: Flag,
    pub commits: List<Commit>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Commit {
    pub id: Text,
    pub message: Text,
    pub url: Text,
    pub author: L<Named>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PullRequestEvent {
    pub number: Number,
    pub pull_request: L<PullRequest>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PullRequest {
    pub number: Number,
    pub title: Text,
    pub merged: Flag,
    pub html_url: Text,
    pub head: L<Branch>,
    pub base: L<Branch>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Branch {
    #[serde(rename = "ref")]
    pub git_ref: Text,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ReviewEvent {
    pub pull_request: L<PullRequest>,
    pub review: L<Review>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Review {
    pub state: Text,
    pub user: L<Named>,
    pub html_url: Text,
    pub body: Text,
}

/// `issues` and `issue_comment` (which adds the comment).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct IssueEvent {
    pub issue: L<Issue>,
    pub comment: L<Comment>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Issue {
    pub number: Number,
    pub title: Text,
    pub html_url: Text,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Comment {
    pub html_url: Text,
    pub body: Text,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ReleaseEvent {
    pub release: L<Release>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Release {
    pub tag_name: Text,
    pub name: Text,
    pub html_url: Text,
}

/// `deployment` and `deployment_status` (which adds the status).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DeploymentEvent {
    pub deployment: L<Deployment>,
    pub deployment_status: L<DeploymentStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Deployment {
    pub environment: Text,
    #[serde(rename = "ref")]
    pub git_ref: Text,
    pub creator: L<Named>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DeploymentStatus {
    pub state: Text,
    pub environment: Text,
    pub log_url: Text,
    pub target_url: Text,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct WorkflowRunEvent {
    pub workflow_run: L<Run>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CheckSuiteEvent {
    pub check_suite: L<Run>,
}

/// A workflow run or a check suite.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Run {
    pub name: Text,
    pub head_branch: Text,
    pub conclusion: Text,
    pub status: Text,
    pub html_url: Text,
    pub app: L<Named>,
}

impl GitHubEvent {
    pub fn read(event: &str, payload: &Value) -> Self {
        let body = match event {
            "push" => GitHubBody::Push(read(payload)),
            "pull_request" => GitHubBody::PullRequest(read(payload)),
            "pull_request_review" => GitHubBody::PullRequestReview(read(payload)),
            "issues" => GitHubBody::Issues(read(payload)),
            "issue_comment" => GitHubBody::IssueComment(read(payload)),
            "release" => GitHubBody::Release(read(payload)),
            "deployment" => GitHubBody::Deployment(read(payload)),
            "deployment_status" => GitHubBody::DeploymentStatus(read(payload)),
            "workflow_run" => GitHubBody::WorkflowRun(read(payload)),
            "check_suite" => GitHubBody::CheckSuite(read(payload)),
            _ => GitHubBody::Other,
        };
        GitHubEvent {
            event: event.to_owned(),
            common: read(payload),
            body,
        }
    }
}

// ---- PagerDuty (webhooks v3) ----

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PagerDutyEvent {
    pub event: L<PagerDutyBody>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PagerDutyBody {
    pub id: Text,
    pub event_type: Text,
    pub agent: L<Named>,
    pub data: L<PagerDutyData>,
}

/// An event's `data`: the incident itself for most events; notes and responders carry it as
/// `incident` beside their own fields.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PagerDutyData {
    pub incident: L<Option<IncidentFields>>,
    #[serde(flatten)]
    pub own: IncidentFields,
    pub urgency: Text,
    pub priority: L<Named>,
    pub assignees: List<Named>,
    /// A note's text.
    pub content: Text,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct IncidentFields {
    pub title: Text,
    pub summary: Text,
    pub number: Number,
    pub html_url: Text,
    pub service: L<Named>,
}

impl PagerDutyData {
    /// The incident the event is about.
    pub fn incident(&self) -> &IncidentFields {
        self.incident.as_ref().unwrap_or(&self.own)
    }
}

// ---- Zendesk ----

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ZendeskEvent {
    #[serde(rename = "type")]
    pub kind: Text,
    pub detail: L<Ticket>,
    pub event: L<Change>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Ticket {
    pub id: Id,
    pub subject: Text,
    pub status: Text,
    pub priority: Text,
    pub group_id: Id,
    pub via: L<Via>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Via {
    pub channel: Text,
}

/// What changed (`ticket.status_changed`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Change {
    pub previous: Text,
    pub current: Text,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_does_not_read_is_absent_not_an_error() {
        let p = json!({
            "ref": 7, "forced": "yes", "deleted": true,
            "commits": "many",
            "repository": ["not", "an", "object"],
            "sender": {"login": ""}
        });
        let e = GitHubEvent::read("push", &p);
        let GitHubBody::Push(push) = &e.body else {
            panic!("a push")
        };
        assert_eq!(push.git_ref.get(), None);
        assert!(!push.forced.get());
        assert!(push.deleted.get());
        assert!(push.commits.is_empty());
        assert_eq!(e.common.repository.full_name.get(), None);
        assert_eq!(e.common.sender.login.get(), None);
        let pr = GitHubEvent::read("pull_request", &json!({"pull_request": {"number": "12"}}));
        let GitHubBody::PullRequest(pr) = pr.body else {
            panic!("a pull request")
        };
        assert_eq!(pr.pull_request.number.get(), Some(12));
        // A list where an object belongs is not read by position.
        let listed = GitHubEvent::read("push", &json!({"repository": ["acme/api", "x", "y"]}));
        assert_eq!(listed.common.repository.full_name.get(), None);
        // A commit that is not an object still counts, as an empty one.
        let odd = GitHubEvent::read("push", &json!({"commits": ["abc", {"id": "0123456789"}]}));
        let GitHubBody::Push(push) = odd.body else {
            panic!("a push")
        };
        assert_eq!(push.commits.len(), 2);
        assert_eq!(push.commits[1].id.get(), Some("0123456789"));
        assert_eq!(
            GitHubEvent::read("discussion", &json!({})).body,
            GitHubBody::Other
        );
    }

    #[test]
    fn a_pagerduty_note_points_at_its_incident() {
        let note: PagerDutyEvent = read(&json!({"event": {"event_type": "incident.annotated",
            "data": {"content": "looking", "incident": {"title": "db down", "number": 5}}}}));
        assert_eq!(note.event.data.incident().title.get(), Some("db down"));
        assert_eq!(note.event.data.content.get(), Some("looking"));
        let own: PagerDutyEvent =
            read(&json!({"event": {"data": {"title": "api slow", "number": 6}}}));
        assert_eq!(own.event.data.incident().number.get(), Some(6));
        let zd: ZendeskEvent = read(&json!({"detail": {"id": 35436, "group_id": "g1"}}));
        assert_eq!(
            (zd.detail.id.get(), zd.detail.group_id.get()),
            (Some("35436"), Some("g1"))
        );
    }
}
