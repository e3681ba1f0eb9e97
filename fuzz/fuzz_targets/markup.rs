//! Message markup: any text parses without panicking, with as many style ends as starts; text
//! we did not write, once escaped, never reads as a link, a mention or a broadcast.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pantheon::domain::markup::{Piece, code_block, escape, escape_inline, link, parse, plain};

fn links(markup: &str) -> usize {
    parse(markup)
        .iter()
        .filter(|p| matches!(p, Piece::Link { .. } | Piece::Mention(_) | Piece::Broadcast(_)))
        .count()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pieces = parse(text);
    let starts = pieces.iter().filter(|p| matches!(p, Piece::Start(_))).count();
    let ends = pieces.iter().filter(|p| matches!(p, Piece::End(_))).count();
    assert_eq!(starts, ends, "{text:?}");
    let _ = plain(text);
    assert_eq!(links(&escape(text)), 0, "{text:?}");
    assert_eq!(links(&escape_inline(text)), 0, "{text:?}");
    assert_eq!(links(&code_block(text, 4000)), 0, "{text:?}");
    assert_eq!(links(&link("https://x.test/", text)), 1, "{text:?}");
});
