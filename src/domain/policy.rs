//! Which actions need a peer's approval before they run.

use crate::config::FileConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Direct,
    NeedsApproval,
}

/// PagerDuty write actions (`ack`, `resolve`, `override`, `maintenance`, `trigger`) listed in
/// `[pagerduty] approval_required` need approval; none do by default. Such a command opens an
/// approval request for the runbook `pagerduty.<action>` (see `runbooks::held_runbooks`).
pub fn pagerduty_gate(config: &FileConfig, action: &str) -> Gate {
    if config
        .pagerduty
        .approval_required
        .iter()
        .any(|a| a.get_ref() == action)
    {
        Gate::NeedsApproval
    } else {
        Gate::Direct
    }
}
