use std::process::ExitCode;

use clap::Parser;

// glibc's allocator spent about a sixth of the acknowledgement path's CPU (perf, wrk at 256
// connections); mimalloc is made for many small, short-lived allocations across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's own option setter (in the mimalloc library the crate above links; its enum
// `mi_option_e` in v3's mimalloc.h).
unsafe extern "C" {
    fn mi_option_set(option: i32, value: std::ffi::c_long);
}

/// `mi_option_arena_eager_commit` (mimalloc v3): 2 by default, which on Linux commits each
/// arena up front; that alone was 18 MiB of the idle server's 38 MiB resident. Memory is
/// committed as it is used instead. (`MIMALLOC_ARENA_EAGER_COMMIT` in the environment still
/// overrides it for an experiment.)
const MI_OPTION_ARENA_EAGER_COMMIT: i32 = 4;

/// Set before the first allocation: the first arena is reserved (and, by default, committed)
/// then, which is before `main`. So this runs as an ELF constructor, and reads the environment
/// with `getenv`, which allocates nothing.
extern "C" fn before_the_first_allocation() {
    // SAFETY: `getenv` with a NUL-terminated name only reads the environment; nothing else
    // runs yet.
    let overridden = unsafe { !libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() };
    if !overridden {
        // SAFETY: sets a plain integer option of the allocator; no memory is touched.
        unsafe { mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    }
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static SET_ALLOCATOR_OPTIONS: extern "C" fn() = before_the_first_allocation;

fn main() -> ExitCode {
    pantheon::cli::run(pantheon::cli::Cli::parse())
}
