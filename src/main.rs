use std::process::ExitCode;

use clap::Parser;

// glibc's allocator spent about a sixth of the acknowledgement path's CPU (perf, wrk at 256
// connections); mimalloc is made for many small, short-lived allocations across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pantheon::cli::run(pantheon::cli::Cli::parse())
}
