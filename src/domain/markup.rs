//! Pantheon's message markup: the text of a message, its sections and its context lines.
//!
//! It is written only through the writers here ([`escape`], [`escape_inline`], [`link`],
//! [`mention`], [`code_block`]) and read back by [`parse`] into [`Piece`]s, which is what a
//! chat platform's edge renders from. The grammar is small:
//!
//! - text, with `&`, `<` and `>` written as `&amp;`, `&lt;` and `&gt;`;
//! - `*bold*`, `_italic_` and `~struck~` spans (a delimiter opens after a non-word character and
//!   closes before one, on the same line), `` `code` `` and ```` ```preformatted``` ````;
//! - `<url|label>` or `<url>` links and `<@id>` mentions of a person by the platform's user id.
//!
//! The grammar was chosen to be a subset of Slack's mrkdwn, so Slack's edge sends it as it is;
//! another platform renders the pieces in its own syntax, escaping [`Piece::Text`] for it. Text
//! from anyone else always goes through a writer, so it can style itself at most: it can never
//! become a link, a mention or a broadcast (`<!channel>`), on any platform.

use std::borrow::Cow;

/// Escape text we did not write so it reads literally: `&`, `<` and `>` are the markup's only
/// control characters for links and mentions (and Slack's `<!channel>` starts with `<` too).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Undo [`escape`].
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Escape text for inside our own `*bold*` or `` `code` `` spans as well: their delimiters
/// become look-alikes, so a title like "*urgent*" cannot end our span early and restyle the
/// rest of the message.
pub fn escape_inline(text: &str) -> String {
    escape(text)
        .replace('`', "\u{2018}")
        .replace('*', "\u{2217}")
}

/// Program output as a preformatted block: escaped like any text we did not write (so it
/// cannot mention anyone or plant a link), cut to `max` characters, and unable to close the
/// block.
pub fn code_block(output: &str, max: usize) -> String {
    format!(
        "```{}```",
        escape(&truncate(output, max)).replace("```", "'''")
    )
}

/// A link with an escaped label on one line. The URL is ours (built from a base URL and ids) or
/// vendor-given, and `|`, `<`, `>` or a line break would end it early, so those are
/// percent-encoded. Only an `http(s)` URL is linked: anything else (`@U1`, `!channel`) is not a
/// link, and the label is shown alone.
pub fn link(url: &str, label: &str) -> String {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return escape(label).replace(['\n', '\r'], " ");
    }
    let url = url
        .replace('|', "%7C")
        .replace('>', "%3E")
        .replace('<', "%3C")
        .replace('\n', "%0A")
        .replace('\r', "%0D");
    let label = escape(label)
        .replace('|', "\u{2223}")
        .replace(['\n', '\r'], " ");
    format!("<{url}|{label}>")
}

/// A mention of the person with the platform's user id `id`. An id that is not one (it has
/// characters no platform's ids have, as a console user's name may) is shown as text instead.
pub fn mention(id: &str) -> String {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        format!("<@{id}>")
    } else {
        escape(id)
    }
}

/// Cut `text` to at most `max` characters, marking the cut with an ellipsis.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bold,
    Italic,
    Struck,
}

impl Style {
    fn delimiter(self) -> u8 {
        match self {
            Style::Bold => b'*',
            Style::Italic => b'_',
            Style::Struck => b'~',
        }
    }
}

/// One piece of parsed markup. Text is decoded (no entities left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(Cow<'a, str>),
    Start(Style),
    End(Style),
    Code(Cow<'a, str>),
    Preformatted(Cow<'a, str>),
    Link {
        url: &'a str,
        label: Cow<'a, str>,
    },
    Mention(&'a str),
    /// `<!…>`: a broadcast such as `<!channel>`. Pantheon never writes one; it is read so that a
    /// renderer can refuse it.
    Broadcast(&'a str),
}

/// Read markup into pieces, in order. Never fails: what is not markup is text.
pub fn parse(markup: &str) -> Vec<Piece<'_>> {
    let closers = Closers::of(markup.as_bytes());
    let mut out = Vec::new();
    parse_range(markup, 0, markup.len(), &closers, &mut out);
    out
}

/// The person `markup` mentions when it is one mention and nothing else (a command argument
/// naming someone), as the id [`mention`] was given.
pub fn only_mention(markup: &str) -> Option<&str> {
    match parse(markup.trim()).as_slice() {
        [Piece::Mention(id)] if !id.is_empty() => Some(id),
        _ => None,
    }
}

/// The same text without markup: links as "label (url)", mentions as `@id`.
pub fn plain(markup: &str) -> String {
    let mut out = String::with_capacity(markup.len());
    for piece in parse(markup) {
        match piece {
            Piece::Text(t) | Piece::Code(t) | Piece::Preformatted(t) => out.push_str(&t),
            Piece::Start(_) | Piece::End(_) => {}
            Piece::Link { url, label } if label == url => out.push_str(url),
            Piece::Link { url, label } => {
                out.push_str(&label);
                out.push_str(" (");
                out.push_str(url);
                out.push(')');
            }
            Piece::Mention(id) | Piece::Broadcast(id) => {
                out.push('@');
                out.push_str(id);
            }
        }
    }
    out
}

/// Where each style's delimiter may close a span, in order, so that finding an opener's closer
/// is a binary search rather than a scan (markup of one long line stays linear-ish).
struct Closers {
    by_style: [Vec<usize>; 3],
    newlines: Vec<usize>,
}

impl Closers {
    fn of(bytes: &[u8]) -> Self {
        let mut by_style: [Vec<usize>; 3] = Default::default();
        let mut newlines = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            let slot = match b {
                b'\n' => {
                    newlines.push(i);
                    continue;
                }
                b'*' => 0,
                b'_' => 1,
                b'~' => 2,
                _ => continue,
            };
            let before = i.checked_sub(1).map(|p| bytes[p]);
            let after = bytes.get(i + 1).copied();
            if before.is_some_and(|b| !b.is_ascii_whitespace()) && !after.is_some_and(is_word) {
                by_style[slot].push(i);
            }
        }
        Self { by_style, newlines }
    }

    /// The first closer of `style` in `(from, to)`, before the end of the line.
    fn after(&self, style: Style, from: usize, to: usize) -> Option<usize> {
        let list = &self.by_style[style as usize];
        let close = *list.get(list.partition_point(|&i| i <= from))?;
        let newline = self.newlines.partition_point(|&i| i < from);
        let line_end = self.newlines.get(newline).map_or(to, |&n| n.min(to));
        (close < line_end).then_some(close)
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

fn decode(text: &str) -> Cow<'_, str> {
    if text.contains('&') {
        Cow::Owned(unescape(text))
    } else {
        Cow::Borrowed(text)
    }
}

fn parse_range<'a>(
    src: &'a str,
    start: usize,
    end: usize,
    closers: &Closers,
    out: &mut Vec<Piece<'a>>,
) {
    let bytes = src.as_bytes();
    let mut text_from = start;
    let mut i = start;
    // Where a `<` found no `>` on its line: the others before there find none either, so a line
    // of thousands of them is read once, not once each. (A backtick looks only as far as the
    // next backtick or line break, so it needs no such mark.)
    let mut no_angle_before = start;
    let flush = |out: &mut Vec<Piece<'a>>, from: usize, to: usize| {
        if from < to {
            out.push(Piece::Text(decode(&src[from..to])));
        }
    };
    while i < end {
        let rest = &src[i..end];
        let (piece, len): (Option<Piece<'a>>, usize) = match bytes[i] {
            b'`' if rest.starts_with("```") => match fence_end(&rest[3..]) {
                Some(n) => (
                    Some(Piece::Preformatted(decode(&src[i + 3..i + 3 + n]))),
                    n + 6,
                ),
                None => (None, 0),
            },
            b'`' => match rest[1..].find(['`', '\n']) {
                Some(n) if n > 0 && rest.as_bytes()[1 + n] == b'`' => {
                    (Some(Piece::Code(decode(&src[i + 1..i + 1 + n]))), n + 2)
                }
                _ => (None, 0),
            },
            b'<' if i >= no_angle_before => match rest[1..].find(['>', '\n']) {
                Some(n) if rest.as_bytes()[1 + n] == b'>' => {
                    let inner = &src[i + 1..i + 1 + n];
                    (Some(angle(inner)), n + 2)
                }
                Some(n) => {
                    no_angle_before = i + 1 + n;
                    (None, 0)
                }
                None => {
                    no_angle_before = end;
                    (None, 0)
                }
            },
            b @ (b'*' | b'_' | b'~') => {
                let style = match b {
                    b'*' => Style::Bold,
                    b'_' => Style::Italic,
                    _ => Style::Struck,
                };
                let opens = i.checked_sub(1).is_none_or(|p| !is_word(bytes[p]))
                    && bytes.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace());
                match opens.then(|| closers.after(style, i + 1, end)).flatten() {
                    Some(close) if close > i + 1 => {
                        flush(out, text_from, i);
                        out.push(Piece::Start(style));
                        parse_range(src, i + 1, close, closers, out);
                        out.push(Piece::End(style));
                        debug_assert_eq!(bytes[close], style.delimiter());
                        i = close + 1;
                        text_from = i;
                        continue;
                    }
                    _ => (None, 0),
                }
            }
            _ => (None, 0),
        };
        match piece {
            Some(piece) => {
                flush(out, text_from, i);
                out.push(piece);
                i += len;
                text_from = i;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    flush(out, text_from, end);
}

/// Where a preformatted block's closing fence starts: the first three backticks not followed by
/// a fourth, so that a block may begin or end with a backtick of its own.
fn fence_end(rest: &str) -> Option<usize> {
    let bytes = rest.as_bytes();
    let mut from = 0;
    while let Some(n) = rest[from..].find("```") {
        let at = from + n;
        if bytes.get(at + 3) != Some(&b'`') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// What is between `<` and `>`: a mention, a broadcast or a link.
fn angle(inner: &str) -> Piece<'_> {
    if let Some(id) = inner.strip_prefix('@') {
        return Piece::Mention(id.split('|').next().unwrap_or(id));
    }
    if let Some(what) = inner.strip_prefix('!') {
        return Piece::Broadcast(what.split('|').next().unwrap_or(what));
    }
    match inner.split_once('|') {
        Some((url, label)) => Piece::Link {
            url,
            label: decode(label),
        },
        None => Piece::Link {
            url: inner,
            label: Cow::Borrowed(inner),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(t: &str) -> Piece<'_> {
        Piece::Text(Cow::Borrowed(t))
    }

    #[test]
    fn what_the_writers_write_reads_back() {
        let markup = format!(
            "{} asks to run *{}* on `{}`: {}\n{}",
            mention("U1"),
            escape_inline("deploy"),
            escape_inline("api/prod"),
            link("https://x.test/j/1", "job #1"),
            code_block("a < b", 100)
        );
        assert_eq!(
            parse(&markup),
            vec![
                Piece::Mention("U1"),
                text(" asks to run "),
                Piece::Start(Style::Bold),
                text("deploy"),
                Piece::End(Style::Bold),
                text(" on "),
                Piece::Code("api/prod".into()),
                text(": "),
                Piece::Link {
                    url: "https://x.test/j/1",
                    label: "job #1".into()
                },
                text("\n"),
                Piece::Preformatted("a < b".into()),
            ]
        );
        assert_eq!(
            plain(&markup),
            "@U1 asks to run deploy on api/prod: job #1 (https://x.test/j/1)\na < b"
        );
    }

    #[test]
    fn delimiters_inside_words_and_unclosed_ones_are_text() {
        assert_eq!(
            plain("snake_case_name and 2*3*4"),
            "snake_case_name and 2*3*4"
        );
        assert_eq!(parse("a *b"), vec![text("a *b")]);
        assert_eq!(parse("* not a list"), vec![text("* not a list")]);
        assert_eq!(parse("<no end"), vec![text("<no end")]);
        assert_eq!(parse("*two\nlines*"), vec![text("*two\nlines*")]);
        assert_eq!(
            parse("_(in channel)_"),
            vec![
                Piece::Start(Style::Italic),
                text("(in channel)"),
                Piece::End(Style::Italic)
            ]
        );
    }

    #[test]
    fn a_long_line_of_unclosed_brackets_parses_quickly() {
        let line = format!("`{}\n<https://x.test/|x>", "<a ".repeat(80_000));
        let pieces = parse(&line);
        assert_eq!(pieces.len(), 2, "the text, then the link on the next line");
    }

    #[test]
    fn only_web_addresses_are_linked() {
        assert_eq!(link("@U1", "x"), "x");
        assert_eq!(link("!channel", "<b>"), "&lt;b&gt;");
        assert!(links_or_mentions(&link("!channel", "x")).is_empty());
        assert_eq!(link("http://x.test/", "x"), "<http://x.test/|x>");
    }

    #[test]
    fn mentions_of_odd_ids_are_text() {
        assert_eq!(mention("U03JOE"), "<@U03JOE>");
        assert_eq!(mention("jane> <!channel"), "jane&gt; &lt;!channel");
        assert_eq!(parse(&mention("")), vec![]);
    }

    #[test]
    fn one_long_line_of_openers_parses_quickly() {
        // Every `*` opens; none closes on its line. A scan per opener would be quadratic.
        let line = format!("{}\n*x*", "a *b ".repeat(40_000));
        let pieces = parse(&line);
        assert_eq!(pieces.len(), 4);
    }

    fn links_or_mentions(markup: &str) -> Vec<Piece<'_>> {
        parse(markup)
            .into_iter()
            .filter(|p| {
                matches!(
                    p,
                    Piece::Link { .. } | Piece::Mention(_) | Piece::Broadcast(_)
                )
            })
            .collect()
    }

    proptest! {
        // Text from anyone else, escaped, is never a link, a mention or a broadcast, and
        // never contains Slack's `<!`.
        #[test]
        fn escaped_text_cannot_link_mention_or_broadcast(t in any::<String>()) {
            let e = escape(&t);
            prop_assert!(!e.contains("<!") && !e.contains('<') && !e.contains('>'));
            prop_assert!(links_or_mentions(&e).is_empty());
            prop_assert_eq!(unescape(&e), t.clone());
            let inline = escape_inline(&t);
            prop_assert!(links_or_mentions(&inline).is_empty());
            prop_assert!(links_or_mentions(&code_block(&t, 10_000)).is_empty());
        }

        // A label or a title inside our spans cannot end them early or add a link: the span
        // holds it, whole.
        #[test]
        fn escaped_text_stays_inside_our_spans(t in "[^\n]{1,40}") {
            let inline = escape_inline(&t);
            let code = format!("`{inline}`");
            prop_assert_eq!(parse(&code), vec![Piece::Code(unescape(&inline).into())]);

            let block = code_block(&t, 100);
            prop_assert_eq!(parse(&block).len(), 1);
        }

        // A label, whatever it holds (line breaks too), stays one link.
        #[test]
        fn a_link_is_one_link_whatever_its_label(t in any::<String>()) {
            let label = link("https://x.test/a", &t);
            let pieces = parse(&label);
            prop_assert_eq!(pieces.len(), 1);
            let is_link = matches!(&pieces[0], Piece::Link { url: "https://x.test/a", .. });
            prop_assert!(is_link);
        }

        // Any input parses, with as many style ends as starts.
        #[test]
        fn anything_parses(t in "[a-z *_~`<>|@!&;\n]{0,60}") {
            let pieces = parse(&t);
            let starts = pieces.iter().filter(|p| matches!(p, Piece::Start(_))).count();
            let ends = pieces.iter().filter(|p| matches!(p, Piece::End(_))).count();
            prop_assert_eq!(starts, ends);
        }
    }

    #[test]
    fn one_mention_alone_names_a_person() {
        assert_eq!(only_mention(&mention("U01ALICE")), Some("U01ALICE"));
        assert_eq!(only_mention(" <@U01ALICE|alice> "), Some("U01ALICE"));
        assert_eq!(only_mention("<@U01ALICE> and more"), None);
        assert_eq!(only_mention("<@U1><@U2>"), None);
        assert_eq!(only_mention("<!channel>"), None);
        assert_eq!(only_mention("<@>"), None);
        assert_eq!(only_mention("alice@example.com"), None);
        assert_eq!(only_mention("alice"), None);
    }
}
