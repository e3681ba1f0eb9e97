//! An Events API body, when it is JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pantheon::slack::request::Request;

fuzz_target!(|body: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = Request::event(value);
    }
});
