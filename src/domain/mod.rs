//! Pure rules with no I/O: who may run what, runbook parameters, approvals, routing.

pub mod access;
pub mod approval;
pub mod audit;
pub mod catalogue;
pub mod deploy;
pub mod duration;
pub mod form;
pub mod freeze;
pub mod held;
pub mod job;
pub mod markup;
pub mod message;
pub mod outbox;
pub mod policy;
pub mod redact;
pub mod routing;
pub mod runbook;
