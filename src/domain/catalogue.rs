//! The configuration, compiled: runbooks with their expressions compiled once, routes, who may
//! do what, and which PagerDuty writes wait for approval. Built once at start (by `config`);
//! everything past the edge reads this, never the file's shape.

use super::{
    access::Access,
    freeze::Freeze,
    policy::Gate,
    routing::{self, Facts, Route},
    runbook::Runbook,
};

#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// Configured runbooks, each a chat command.
    pub runbooks: Vec<Runbook>,
    /// Runbooks made from `[pagerduty] approval_required`: each holds one kind of PagerDuty
    /// write for approval. Not chat commands and not reachable with `run`.
    pub held: Vec<Runbook>,
    pub routes: Vec<Route>,
    pub access: Access,
    /// PagerDuty write actions that need a peer's approval.
    pub approval_required: Vec<String>,
    /// Freeze windows, compiled.
    pub freezes: Vec<Freeze>,
    /// Who may approve a run that overrides a lock or freeze (`[deploy] override_group`).
    pub override_group: Option<String>,
}

impl Catalogue {
    /// A configured runbook by name.
    pub fn runbook(&self, name: &str) -> Option<&Runbook> {
        self.runbooks.iter().find(|r| r.name() == name)
    }

    /// A runbook by name, including those that hold PagerDuty writes for approval: what a job
    /// or an approval request may name.
    pub fn any_runbook(&self, name: &str) -> Option<&Runbook> {
        self.runbook(name)
            .or_else(|| self.held.iter().find(|r| r.name() == name))
    }

    /// PagerDuty write actions (`ack`, `resolve`, `override`, `maintenance`, `trigger`) listed in
    /// `[pagerduty] approval_required` need approval; none do by default. Such a command opens
    /// an approval request for the runbook `pagerduty.<action>` ([`Runbook::held`]).
    pub fn pagerduty_gate(&self, action: &str) -> Gate {
        if self.approval_required.iter().any(|a| a == action) {
            Gate::NeedsApproval
        } else {
            Gate::Direct
        }
    }

    /// Whether `name` can be locked: a target or an environment some runbook's runs can have.
    pub fn lockable(&self, name: &str) -> bool {
        self.runbooks
            .iter()
            .any(|r| r.may_target(name) || r.may_be_in(name))
    }

    /// The configured runbooks that are deploys.
    pub fn deploys(&self) -> impl Iterator<Item = &Runbook> {
        self.runbooks
            .iter()
            .filter(|r| r.definition().deploy.is_some())
    }

    /// The channels an event goes to, each once, in rule order.
    pub fn channels(&self, facts: &Facts) -> Vec<String> {
        routing::channels(&self.routes, facts)
    }
}
