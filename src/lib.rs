//! Pantheon: ChatOps for Slack. Signed slash commands in, answers out, every step audited.

pub mod app;
pub mod audit;
pub mod background;
pub mod chat;
pub mod cli;
pub mod clients;
pub mod command;
pub mod config;
pub mod deliveries;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod http;
pub mod inbound;
pub mod inflight;
pub mod links;
pub mod notify;
pub mod pager;
pub mod runbooks;
pub mod services;
pub mod signature;
pub mod slack;
pub mod store;
pub mod telemetry;
pub mod upkeep;
