//! What requests, handlers, jobs and the background loops share: the store, the audit trail,
//! the compiled catalogue, the chat port and the vendor clients. Built once by [`crate::app`];
//! shared behind an `Arc`. It holds no handler, so everything below the command registry may
//! take it without depending on what sits above.

use std::sync::Arc;

use crate::{
    audit::AuditLog,
    chat::ChatPort,
    clients::Vendors,
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
    pub catalogue: Arc<Catalogue>,
    /// Who may run each command, for checks made outside a request (a job, a page).
    pub commands: CommandRules,
    /// The vendor APIs that are configured, and the outbound client.
    pub vendors: Arc<Vendors>,
    /// The chat platform: posts, updates, replies, user lookups.
    pub chat: Arc<dyn ChatPort>,
    pub links: crate::links::Links,
    /// Deliveries, the outbox and its sender's side.
    pub notifications: Arc<crate::notify::Notifications>,
    /// Requests, approvals and the jobs that run them.
    pub runbooks: Arc<crate::runbooks::Runbooks>,
    /// The background loops, and which of them died.
    pub background: Arc<crate::background::Background>,
    /// The slash command we answer, e.g. `/ops`.
    pub slash: String,
    /// Ways in besides the listener (Slack's Socket Mode): wanted, and how many are up.
    pub inbound: Arc<crate::inbound::Inbound>,
    /// Background commands in flight, in all and per person; past these the acknowledgement
    /// says "busy".
    pub in_flight: Arc<crate::inflight::InFlight>,
}

impl Services {
    pub fn limits(&self) -> &LimitsSection {
        &self.config.limits
    }
}
