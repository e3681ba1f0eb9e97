//! A slash command's form body: parsed or refused with a reason, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pantheon::slack::request::Request;

fuzz_target!(|body: &[u8]| {
    if let Ok(Request::Command(c)) = Request::command_form(body) {
        // What the parser promises: a command always names who sent it.
        assert!(!c.user_id.is_empty());
    }
});
