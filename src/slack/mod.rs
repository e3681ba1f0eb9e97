//! Everything Slack: the three HTTP handlers (slash commands, interactions, events), request
//! verification, replies through `response_url`, the Web API client and the app manifest.
//! Past this folder the code speaks of commands, replies and notices, not of Slack.

pub mod api;
pub mod blocks;
pub mod commands;
pub mod events;
pub mod interactions;
pub mod manifest;
pub mod port;
pub mod response_url;
