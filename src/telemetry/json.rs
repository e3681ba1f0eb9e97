//! The JSON log line, written straight into the line being formatted.
//!
//! tracing-subscriber's JSON format keeps each span's fields as the text of a JSON object built
//! from a map of JSON values, and for every line parses that text back into values to write it
//! out again; on the acknowledgement path that was a twentieth of the CPU for one line. Here a
//! span's fields are written once, as JSON text, when the span is made, and copied into each
//! line of it as they are. The line has the same shape as before:
//!
//! `{"timestamp":"…Z","level":"WARN","message":"…",<fields>,"target":"…","span":{<fields>,"name":"…"}}`
//!
//! with the current span (the event's own parent, or the one it happened in) under `span`, and
//! strings escaped as JSON, including U+2028, U+2029 and U+0085, which some log viewers take
//! for line breaks.

use std::fmt::{self, Write as _};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span::Record,
};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer},
    registry::LookupSpan,
};

/// A span's fields, kept as the text of a JSON object (`{}` when it has none).
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut pairs = String::new();
        let mut visitor = Pairs::new(&mut pairs);
        fields.record(&mut visitor);
        visitor.result?;
        // Each pair starts with a comma.
        writer.write_char('{')?;
        writer.write_str(pairs.get(1..).unwrap_or_default())?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut more = String::new();
        let mut visitor = Pairs::new(&mut more);
        fields.record(&mut visitor);
        visitor.result?;
        if more.is_empty() {
            return Ok(());
        }
        let text = &mut current.fields;
        if text.len() > 2 && text.ends_with('}') {
            if let Some(merged) = replaced(text, &more) {
                *text = merged;
                return Ok(());
            }
            text.pop();
            text.push_str(&more);
        } else {
            text.clear();
            text.push('{');
            text.push_str(more.get(1..).unwrap_or_default());
        }
        text.push('}');
        Ok(())
    }
}

/// `fields` (a JSON object's text) with `more` (`,"name":value` pairs) in it, if any of those
/// names is already there: a field recorded again has its new value in place of the old one,
/// so no name appears twice in a line (log stores refuse such documents). None if every name
/// is new (the pairs are then simply appended). Rare: most spans record each field once.
fn replaced(fields: &str, more: &str) -> Option<String> {
    type Object = serde_json::Map<String, serde_json::Value>;
    let mut all: Object = serde_json::from_str(fields).ok()?;
    let new: Object = serde_json::from_str(&format!("{{{}}}", more.get(1..)?)).ok()?;
    if !new.keys().any(|k| all.contains_key(k)) {
        return None;
    }
    all.extend(new);
    serde_json::to_string(&all).ok()
}

/// The event line.
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let now = time::OffsetDateTime::now_utc();
        write!(
            writer,
            "{{\"timestamp\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\",\"level\":\"{}\"",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond(),
            meta.level().as_str(),
        )?;
        let mut visitor = Pairs::new(&mut writer);
        event.record(&mut visitor);
        visitor.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":")?;
            let extensions = span.extensions();
            match extensions.get::<FormattedFields<JsonFields>>() {
                Some(f) if f.fields.len() > 2 && f.fields.ends_with('}') => {
                    writer.write_str(&f.fields[..f.fields.len() - 1])?;
                    writer.write_char(',')?;
                }
                _ => writer.write_char('{')?,
            }
            writer.write_str("\"name\":")?;
            string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes each field it visits as `,"name":value`.
struct Pairs<'a, W: fmt::Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<'a, W: fmt::Write> Pairs<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Self {
            out,
            result: Ok(()),
        }
    }

    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.out.write_char(',')?;
            string(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for Pairs<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field, |out| string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.pair(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.pair(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value}")?;
            out.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pair(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.pair(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.pair(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        self.pair(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }
}

/// `text` as a JSON string.
fn string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(text)?;
    out.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut clean = 0;
        for (i, c) in text.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                '\u{85}' => "\\u0085",
                c if c < ' ' => "",
                _ => continue,
            };
            self.0.write_str(&text[clean..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", u32::from(c))?;
            } else {
                self.0.write_str(escape)?;
            }
            clean = i + c.len_utf8();
        }
        self.0.write_str(&text[clean..])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{fmt::MakeWriter, prelude::*};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// What `log` wrote, as text.
    fn raw(log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields)
                .event_format(JsonLines)
                .with_writer(captured.clone()),
        );
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    fn lines(log: impl FnOnce()) -> Vec<serde_json::Value> {
        let text = raw(log);
        assert!(text.ends_with('\n'), "{text}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn a_line_carries_its_fields_and_its_span_as_json() {
        let odd = "quote \" backslash \\ newline \n tab \t bell \u{7} sep \u{2028}\u{2029}\u{85} é";
        let got = lines(|| {
            let span = tracing::error_span!("command", correlation_id = "c1", user = %odd);
            let _in = span.enter();
            tracing::warn!(
                count = 3u64,
                delta = -2i64,
                ratio = 0.5,
                nan = f64::NAN,
                ok = true,
                debug = ?Some("x"),
                text = odd,
                "refused {}",
                "now"
            );
        });
        assert_eq!(got.len(), 1);
        let line = &got[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "refused now");
        assert_eq!(line["count"], 3);
        assert_eq!(line["delta"], -2);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["nan"], serde_json::Value::Null);
        assert_eq!(line["ok"], true);
        assert_eq!(line["debug"], "Some(\"x\")");
        assert_eq!(line["text"], odd, "every character comes back as it was");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["span"]["name"], "command");
        assert_eq!(line["span"]["correlation_id"], "c1");
        assert_eq!(line["span"]["user"], odd);
        let stamp = line["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .is_ok()
                && stamp.ends_with('Z')
                && stamp.len() == "2026-12-07T17:17:26.856346Z".len(),
            "{stamp}"
        );
    }

    #[test]
    fn the_raw_line_holds_no_character_a_viewer_would_break_on() {
        let text = raw(|| {
            tracing::info!(x = "a\u{2028}b\u{85}c\nd", "m\u{2029}");
        });
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(
            !text.contains(['\u{2028}', '\u{2029}', '\u{85}']),
            "{text:?}"
        );
    }

    #[test]
    fn without_a_span_there_is_no_span_key_and_nested_spans_show_the_innermost() {
        let got = lines(|| {
            tracing::info!("outside");
            let outer = tracing::info_span!("outer", a = 1);
            let _o = outer.enter();
            let inner = tracing::info_span!("inner");
            let _i = inner.enter();
            tracing::info!("inside");
            let fields = tracing::info_span!("later", b = tracing::field::Empty, c = 2);
            fields.record("b", "filled");
            tracing::info!(parent: &fields, "explicit parent");
        });
        assert_eq!(got.len(), 3);
        assert!(got[0].get("span").is_none(), "{}", got[0]);
        assert_eq!(got[1]["span"], serde_json::json!({"name": "inner"}));
        assert_eq!(
            got[2]["span"],
            serde_json::json!({"name": "later", "c": 2, "b": "filled"})
        );
    }

    #[test]
    fn a_span_field_recorded_again_has_its_last_value_under_one_name() {
        let text = raw(|| {
            let span = tracing::info_span!(
                "job",
                state = "queued",
                id = 7,
                note = tracing::field::Empty
            );
            span.record("state", "running");
            span.record("note", "first");
            span.record("state", "done");
            tracing::info!(parent: &span, "finished");
        });
        // serde_json would keep the last of two equal names: count them in the text itself.
        assert_eq!(text.matches("\"state\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"note\"").count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(
            line["span"],
            serde_json::json!({"name": "job", "state": "done", "id": 7, "note": "first"})
        );
    }
}
