//! Audit rows: one per step, each naming who acted, on what, and how it ended. Text that came
//! from people or vendors is masked (credentials) and cleaned (NUL) as it goes in.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::redact::{scrub, without_nul};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A request arrived and was verified, and is to run. (A request answered at once has one
    /// row, its outcome, dated when it arrived.)
    Received,
    /// It could not be understood (unknown command, wrong arguments).
    Invalid,
    /// It was understood and not allowed (permissions, allow-list, busy).
    Refused,
    Started,
    Succeeded,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Received => "received",
            Outcome::Invalid => "invalid",
            Outcome::Refused => "refused",
            Outcome::Started => "started",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "received" => Outcome::Received,
            "invalid" => Outcome::Invalid,
            "refused" => Outcome::Refused,
            "started" => Outcome::Started,
            "succeeded" => Outcome::Succeeded,
            "failed" => Outcome::Failed,
            _ => return None,
        })
    }
}

/// One step, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub at: OffsetDateTime,
    pub correlation_id: String,
    /// Slack user id, or the system part that acted (`github`, `worker`).
    pub actor: String,
    pub channel: Option<String>,
    /// What kind of step: `command`, `reply`, `approval.vote`, `job`, `webhook`, ...
    pub action: String,
    /// The command text as typed, with anything that looks like a credential masked.
    pub command: Option<String>,
    pub outcome: Outcome,
    pub detail: Option<String>,
    pub duration_ms: Option<i64>,
}

impl AuditEntry {
    pub fn new(correlation_id: &str, actor: &str, action: &str, outcome: Outcome) -> Self {
        Self {
            at: OffsetDateTime::now_utc(),
            correlation_id: without_nul(correlation_id).into_owned(),
            actor: without_nul(actor).into_owned(),
            channel: None,
            action: without_nul(action).into_owned(),
            command: None,
            outcome,
            detail: None,
            duration_ms: None,
        }
    }

    pub fn channel(mut self, channel: &str) -> Self {
        self.channel = (!channel.is_empty()).then(|| without_nul(channel).into_owned());
        self
    }

    pub fn command(mut self, text: &str) -> Self {
        self.command = Some(scrub(&without_nul(text)).into_owned());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(scrub(&without_nul(&detail.into())).into_owned());
        self
    }

    pub fn duration(mut self, elapsed: Duration) -> Self {
        self.duration_ms = Some(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
        self
    }
}

/// A stored step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// How a request reached us. The audit trail says so where it is not the usual way (a signed
/// HTTP request, or the console).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An HTTP request, signed by the chat platform.
    Http,
    /// The chat platform's own socket, opened by us (Slack's Socket Mode).
    Socket,
    /// The local console.
    Console,
}

impl Transport {
    /// What an audit row adds about it, if anything.
    pub fn noted(self) -> Option<&'static str> {
        match self {
            Transport::Socket => Some("over Socket Mode"),
            Transport::Http | Transport::Console => None,
        }
    }

    /// `detail`, followed by [`Transport::noted`] in brackets where there is a note.
    pub fn noting(self, detail: String) -> String {
        match self.noted() {
            Some(note) => format!("{detail} ({note})"),
            None => detail,
        }
    }
}
