//! Keep credentials out of the audit trail, logs and chat.
//!
//! Two nets: every secret value we were configured with is registered at start and masked
//! wherever it appears, and text that has the shape of a well-known credential (Slack and
//! GitHub tokens, `Bearer ...`, `password=...`) is masked even if we never saw it before, since
//! people do paste tokens into chat.

use std::{
    borrow::Cow,
    sync::{LazyLock, RwLock},
};

use regex::Regex;

const MASK: &str = "[REDACTED]";

static SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"xox[abposre]-[A-Za-z0-9-]{6,}",
        r"|xapp-[A-Za-z0-9-]{6,}",
        r"|gh[pousr]_[A-Za-z0-9]{20,}",
        r"|github_pat_[A-Za-z0-9_]{20,}",
        r"|(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}",
        r"|(?i:token\s+token)=[A-Za-z0-9_+/=-]{8,}",
        r"|(?i:password|passwd|secret|api[_-]?key|token)\s*[=:]\s*[^\s&]{4,}",
    ))
    .unwrap_or_else(|e| unreachable!("the credential shapes compile: {e}"))
});

static KNOWN: LazyLock<RwLock<Vec<String>>> = LazyLock::new(|| RwLock::new(Vec::new()));

/// Remember secret values so they are masked wherever they show up. Short values are skipped:
/// masking every "ab" in the audit trail would hide more than it protects.
pub fn register_secrets<'a>(values: impl IntoIterator<Item = &'a str>) {
    let mut known = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    for v in values {
        if v.len() >= 8 && !known.iter().any(|k| k == v) {
            known.push(v.to_owned());
        }
    }
}

/// `text` with each NUL replaced by U+FFFD. Postgres stores no NUL in `text` or `jsonb`, so one
/// `%00` in a command would otherwise sink the whole audit batch it is committed with.
pub fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `text` with registered secrets masked (cheap: no expression is run), for every log line.
pub fn scrub_registered(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|p| p.into_inner());
    let mut out = Cow::Borrowed(text);
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// `value` with each NUL in its strings and keys replaced by U+FFFD, for JSON from outside that
/// is stored (Postgres `jsonb` refuses `\u0000`) or whose strings are.
pub fn json_without_nul(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{fffd}")),
        Value::Array(items) => Value::Array(items.into_iter().map(json_without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let k = if k.contains('\0') {
                        k.replace('\0', "\u{fffd}")
                    } else {
                        k
                    };
                    (k, json_without_nul(v))
                })
                .collect(),
        ),
        other => other,
    }
}

/// `text` with registered secrets and credential-shaped substrings masked.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    {
        let known = KNOWN.read().unwrap_or_else(|p| p.into_inner());
        for secret in known.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
    }
    if SHAPES.is_match(&out) {
        out = Cow::Owned(SHAPES.replace_all(&out, MASK).into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_shapes_are_masked() {
        for secret in [
            "xoxb-123456789-abcdefghij",
            "ghp_abcdefghijklmnopqrstuvwxyz0123",
            "github_pat_11ABCDEFG0123456789_abcdefghijkl",
            "Bearer abcdefgh12345678",
            "Token token=y_NbAkKc66ryYTWUXYEu",
            "password=hunter2hunter2",
        ] {
            let text = format!("deploy api {secret} now");
            let out = scrub(&text);
            assert!(!out.contains(secret), "{secret} survived: {out}");
            assert!(out.contains(MASK), "{out}");
            assert!(out.starts_with("deploy api "), "{out}");
        }
    }

    #[test]
    fn nul_leaves_json_strings_and_keys() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"a\u0000b": ["x\u0000", 1, {"c": "\u0000"}]}"#).unwrap();
        let clean = json_without_nul(v);
        assert!(!clean.to_string().contains("\\u0000"), "{clean}");
        assert_eq!(clean["a\u{fffd}b"][0], "x\u{fffd}");
        assert_eq!(clean["a\u{fffd}b"][2]["c"], "\u{fffd}");
    }

    #[test]
    fn registered_secrets_are_masked_and_plain_text_is_untouched() {
        register_secrets(["a-registered-signing-secret", "short"]);
        assert_eq!(scrub("x a-registered-signing-secret y"), "x [REDACTED] y");
        assert!(matches!(scrub("pager ack PT4KHLK short"), Cow::Borrowed(_)));
    }
}
