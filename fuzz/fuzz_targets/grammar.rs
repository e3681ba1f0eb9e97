//! The command grammar: any text against every built-in command.
#![no_main]
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pantheon::{
    command::Registry,
    config::{FileConfig, Source},
};

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    pantheon::app::build_registry(&FileConfig::default(), &Source::default())
        .unwrap_or_else(|e| panic!("the built-in registry builds: {e}"))
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = REGISTRY.parse(text, |_| true);
    let _ = REGISTRY.parse(text, |spec| !spec.name.starts_with("pager"));
});
