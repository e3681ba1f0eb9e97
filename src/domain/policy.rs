//! Which actions need a peer's approval before they run (see [`super::catalogue::Catalogue::pagerduty_gate`]).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Direct,
    NeedsApproval,
}

/// PagerDuty actions that change something, and so may be held for approval.
pub const PAGERDUTY_WRITE_ACTIONS: &[&str] =
    &["ack", "resolve", "override", "maintenance", "trigger"];
