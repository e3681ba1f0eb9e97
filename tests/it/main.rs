//! One integration-test binary: the harness and one module per flow.

mod harness;

mod binary;
mod contract;
mod crash;
mod deploy_safety;
mod edge;
mod escaping;
mod faults;
mod forms;
mod github;
mod layout;
mod mattermost;
mod members;
mod notifications;
mod ops;
mod pagerduty;
mod runbooks;
mod security;
mod seen;
mod signing;
mod slash_commands;
mod socket_mode;
mod store_suite;
mod zendesk;
