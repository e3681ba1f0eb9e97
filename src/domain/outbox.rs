//! The outbox and webhook deliveries as the store keeps them: messages queued for a channel,
//! and verified deliveries with the messages they route to and their audit rows.

use serde_json::Value;
use time::OffsetDateTime;

use super::{audit::AuditEntry, message::Block};

/// A message to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutbox {
    pub channel: String,
    pub text: String,
    pub blocks: Vec<Block>,
    pub coalesce_key: Option<String>,
    pub coalesce_label: Option<String>,
    pub next_attempt_at: OffsetDateTime,
    /// Higher goes first: incidents (`notify::INCIDENT_PRIORITY`) before everything else.
    pub priority: i16,
}

/// A queued message, claimed for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub channel: String,
    pub text: String,
    pub blocks: Vec<Block>,
    pub coalesce_key: Option<String>,
    pub coalesce_label: Option<String>,
    pub attempts: i32,
    pub created_at: OffsetDateTime,
    pub priority: i16,
    /// A sender began posting it and never said how that went (it died): it may be in the
    /// channel already.
    pub maybe_posted: bool,
    /// The outbox id of the message it was being posted as, when `maybe_posted`.
    pub posting_as: Option<i64>,
}

/// A verified delivery to store, with the messages it routes to and its audit rows.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub source: String,
    pub delivery_id: String,
    /// SHA-256 of the signed body (hex): a second delivery of the same bytes is a duplicate.
    pub body_sha256: Option<String>,
    pub event: String,
    pub payload: Value,
    pub now: OffsetDateTime,
    pub messages: Vec<NewOutbox>,
    pub audit: Vec<AuditEntry>,
}

/// What storing a delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New {
        id: i64,
    },
    /// Seen before (a redelivery or a retry): acknowledged, nothing posted again.
    Duplicate,
}

/// Outbox counts by status, for tests and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: i64,
    pub sent: i64,
    pub merged: i64,
    pub failed: i64,
}
