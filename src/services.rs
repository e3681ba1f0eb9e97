//! What requests, handlers, jobs and the background loops share: the store, the audit trail,
//! the compiled catalogue, the chat port and the vendor clients. Built once by [`crate::app`];
//! shared behind an `Arc`. It holds no handler, so everything below the command registry may
//! take it without depending on what sits above.

use std::sync::Arc;

use crate::{
    audit::AuditLog,
    chat::ChatPort,
    clients::{Outbound, github::GitHub, pagerduty::PagerDuty, zendesk::Zendesk},
    config::{FileConfig, LimitsSection, Settings},
    domain::{access::CommandRules, catalogue::Catalogue},
    store::Store,
};

/// Everything a request or a handler may use. Built once; shared behind an `Arc`.
pub struct Services {
    pub config: FileConfig,
    pub settings: Settings,
    pub store: Store,
    pub audit: AuditLog,
    /// The configuration compiled: runbooks, routes, who may do what.
    pub catalogue: Catalogue,
    /// Who may run each command, for checks made outside a request (a job, a page).
    pub commands: CommandRules,
    pub outbound: Outbound,
    /// The chat platform: posts, updates, replies, user lookups.
    pub chat: Arc<dyn ChatPort>,
    pub pagerduty: Option<PagerDuty>,
    pub zendesk: Option<Zendesk>,
    pub github: Option<GitHub>,
    pub links: crate::links::Links,
    /// Woken when a job is queued, so idle workers claim it at once.
    pub job_queued: tokio::sync::Notify,
    /// The chat platform as the outbox sender uses it: no retries of its own, since the sender
    /// paces and retries per channel.
    pub notices: Arc<dyn ChatPort>,
    /// Woken when messages are queued.
    pub outbox_ready: tokio::sync::Notify,
    /// Stores webhook deliveries with group commit.
    pub deliveries: crate::deliveries::DeliveryWriter,
    /// The background loops, and which of them died.
    pub background: Arc<crate::background::Background>,
    /// One approval-message refresh at a time per request.
    pub approval_locks:
        std::sync::Mutex<std::collections::HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// The slash command we answer, e.g. `/ops`.
    pub slash: String,
    /// Background commands in flight, in all and per person; past these the acknowledgement
    /// says "busy".
    pub in_flight: Arc<crate::inflight::InFlight>,
}

impl Services {
    pub fn limits(&self) -> &LimitsSection {
        &self.config.limits
    }
}
