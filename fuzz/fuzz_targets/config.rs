//! The configuration file: parsed, validated and compiled, or refused with an error that names
//! a place in the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pantheon::config::{FileConfig, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source {
        path: "pantheon.toml".into(),
        text: text.into(),
    };
    if let Ok(config) = FileConfig::parse(&source) {
        let _ = config.catalogue();
    }
});
