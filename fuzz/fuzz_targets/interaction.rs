//! An interaction: as a form (`payload=…`) and, when the bytes are JSON, as the payload itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pantheon::slack::request::Request;

fuzz_target!(|body: &[u8]| {
    let _ = Request::interaction_form(body);
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = Request::interaction(value);
    }
});
