//! Pure rules with no I/O: who may run what, runbook parameters, approvals, routing.

pub mod access;
pub mod policy;
pub mod runbook;
