//! One integration-test binary: the harness and one module per flow.

mod harness;

mod binary;
mod ops;
mod signing;
mod slash_commands;
mod store_suite;
