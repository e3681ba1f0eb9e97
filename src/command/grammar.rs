//! The chat grammar: words as Slack sends them, and usage patterns that bind them to typed
//! arguments.
//!
//! A usage pattern is the one declaration of a command's syntax:
//!
//! | pattern          | means                                                      |
//! |------------------|------------------------------------------------------------|
//! | `pager`          | the literal word                                           |
//! | `<id>`, `{app}`  | one required word                                          |
//! | `<message...>`   | the rest of the line, at least one word                    |
//! | `[id]`           | one optional word                                          |
//! | `[ids...]`       | the rest of the line, possibly nothing                     |
//! | `[days=30]`      | optional, `14` or `days=14`, default 30                    |
//! | `[with <re...>]` | optional; when the word `with` is there, the rest follows  |

use std::{borrow::Cow, collections::BTreeMap, sync::Arc};

use regex::Regex;

/// One word of what the user typed, with where it started in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word<'a> {
    pub text: Cow<'a, str>,
    pub start: usize,
}

/// Split chat text into words. Double quotes (Slack's curly ones too) group words; Slack's
/// `<...>` entities become their plain form (`<mailto:a@b.c|a@b.c>` → `a@b.c`, a link → its URL,
/// `<@U123|jane>` → `<@U123>`); `&amp;`, `&lt;`, `&gt;` are unescaped.
pub fn words(text: &str) -> Vec<Word<'_>> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_quote(c) {
            chars.next();
            let body_start = start + c.len_utf8();
            let mut end = text.len();
            for (i, c) in chars.by_ref() {
                if is_quote(c) {
                    end = i;
                    break;
                }
            }
            out.push(Word {
                text: unescape(&text[body_start..end]),
                start,
            });
            continue;
        }
        let mut end = text.len();
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() {
                end = i;
                break;
            }
            chars.next();
        }
        out.push(Word {
            text: entity(&text[start..end]),
            start,
        });
    }
    out
}

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '\u{201c}' | '\u{201d}')
}

fn entity(raw: &str) -> Cow<'_, str> {
    if let Some(inner) = raw.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        let (target, _label) = inner.split_once('|').unwrap_or((inner, ""));
        if let Some(addr) = target.strip_prefix("mailto:") {
            return Cow::Owned(addr.to_owned());
        }
        if target.starts_with('@') || target.starts_with('#') || target.starts_with('!') {
            return Cow::Owned(format!("<{target}>"));
        }
        return Cow::Owned(unescape(target).into_owned());
    }
    unescape(raw)
}

fn unescape(raw: &str) -> Cow<'_, str> {
    if raw.contains('&') {
        Cow::Owned(
            raw.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    } else {
        Cow::Borrowed(raw)
    }
}

/// What an argument must be.
#[derive(Debug, Clone)]
pub enum ArgType {
    Text,
    Int {
        min: i64,
        max: i64,
    },
    /// An email address (Slack sends `<mailto:...>`, unwrapped by [`words`]).
    Email,
    /// A regular expression typed in chat, compiled with a size limit.
    Regex,
    /// One of a fixed set of words (stored lower-case).
    Choice(&'static [&'static str]),
    /// A runbook parameter: the expression from config plus the rules all parameters share.
    Param(Arc<Regex>),
}

#[derive(Debug, Clone)]
pub struct ArgSpec {
    pub name: String,
    pub rest: bool,
    pub optional: bool,
    pub default: Option<String>,
    /// A literal word that introduces the argument (`[with <filter...>]`).
    pub flag: Option<String>,
    pub ty: ArgType,
}

#[derive(Debug, Clone)]
pub enum Part {
    Lit(String),
    Arg(ArgSpec),
}

/// A parsed usage pattern.
#[derive(Debug, Clone)]
pub struct Usage {
    pub parts: Vec<Part>,
}

/// A bound argument value.
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    Int(i64),
    Words(Vec<String>),
    Regex(Regex),
}

/// The arguments of one parsed command, by name.
#[derive(Debug, Clone, Default)]
pub struct Args(BTreeMap<String, Value>);

impl Args {
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.0.get(name)? {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.0.get(name)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn words(&self, name: &str) -> &[String] {
        match self.0.get(name) {
            Some(Value::Words(w)) => w,
            _ => &[],
        }
    }

    pub fn regex(&self, name: &str) -> Option<&Regex> {
        match self.0.get(name)? {
            Value::Regex(r) => Some(r),
            _ => None,
        }
    }

    /// All text arguments, for runbook parameters.
    pub fn texts(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter_map(|(k, v)| match v {
                Value::Text(s) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn insert(&mut self, name: &str, value: Value) {
        self.0.insert(name.to_owned(), value);
    }
}

/// Longest chat regular expression accepted, and its compiled size limit. The regex crate
/// matches in linear time, so a pattern cannot hang us; the limits bound memory.
pub const MAX_CHAT_REGEX_LEN: usize = 200;

pub fn compile_chat_regex(raw: &str) -> Result<Regex, String> {
    if raw.chars().count() > MAX_CHAT_REGEX_LEN {
        return Err(format!(
            "the pattern is longer than {MAX_CHAT_REGEX_LEN} characters"
        ));
    }
    regex::RegexBuilder::new(raw)
        .case_insensitive(true)
        .size_limit(256 * 1024)
        .dfa_size_limit(256 * 1024)
        .nest_limit(32)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "the pattern is too complex".to_owned(),
            other => format!(
                "`{raw}` is not a valid regular expression ({})",
                other
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("syntax error")
                    .trim()
            ),
        })
}

impl Usage {
    /// Parse a pattern; `types` gives argument types by name (default: text).
    pub fn parse(pattern: &str, types: &[(&str, ArgType)]) -> Result<Self, String> {
        let ty = |name: &str| {
            types
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(ArgType::Text, |(_, t)| t.clone())
        };
        let mut parts = Vec::new();
        let mut tokens = pattern.split_whitespace().peekable();
        while let Some(tok) = tokens.next() {
            if let Some(group) = tok.strip_prefix('[').filter(|_| !tok.ends_with(']')) {
                // `[with <filter...>]`: a flag word, then one argument, then `]`.
                let inner = tokens
                    .next()
                    .ok_or_else(|| format!("unclosed `[` in `{pattern}`"))?;
                let inner = inner.strip_suffix(']').ok_or_else(|| {
                    format!("`[{group} ...` must close after one argument in `{pattern}`")
                })?;
                let mut arg = parse_arg(inner, &ty)
                    .ok_or_else(|| format!("`{inner}` is not an argument in `{pattern}`"))?;
                arg.optional = true;
                arg.flag = Some(group.to_owned());
                parts.push(Part::Arg(arg));
            } else if let Some(arg) = parse_arg(tok, &ty) {
                parts.push(Part::Arg(arg));
            } else if tok.chars().any(|c| "<>[]{}".contains(c)) {
                return Err(format!("`{tok}` is malformed in `{pattern}`"));
            } else {
                parts.push(Part::Lit(tok.to_owned()));
            }
        }
        let rests = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, Part::Arg(a) if a.rest))
            .map(|(i, _)| i)
            .collect::<Vec<_>>();
        if rests.iter().any(|&i| i + 1 != parts.len()) {
            return Err(format!(
                "only the last argument may take the rest of the line in `{pattern}`"
            ));
        }
        if !matches!(parts.first(), Some(Part::Lit(_))) {
            return Err(format!("`{pattern}` must start with a word"));
        }
        Ok(Self { parts })
    }

    /// The leading literal words: the command's name.
    pub fn command_words(&self) -> Vec<&str> {
        self.parts
            .iter()
            .map_while(|p| match p {
                Part::Lit(w) => Some(w.as_str()),
                Part::Arg(_) => None,
            })
            .collect()
    }

    pub fn literal_count(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| matches!(p, Part::Lit(_)))
            .count()
    }

    /// The pattern as shown to people: `deploy <app> <version> to <env>`.
    pub fn display(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Lit(w) => w.clone(),
                Part::Arg(a) => {
                    let dots = if a.rest { "..." } else { "" };
                    let inner = match &a.default {
                        Some(d) => format!("{}={d}", a.name),
                        None => format!("{}{dots}", a.name),
                    };
                    match (&a.flag, a.optional, &a.default) {
                        (Some(flag), _, _) => format!("[{flag} <{}{dots}>]", a.name),
                        (None, true, _) => format!("[{inner}]"),
                        (None, false, _) => format!("<{inner}>"),
                    }
                }
            })
            .collect();
        parts.join(" ")
    }

    /// Bind `input` to this pattern.
    pub fn bind(&self, text: &str, input: &[Word<'_>]) -> Result<Args, Mismatch> {
        let mut args = Args::default();
        let mut pos = 0;
        let mut literals = 0;
        for part in &self.parts {
            match part {
                Part::Lit(w) => {
                    match input.get(pos) {
                        Some(word) if word.text.eq_ignore_ascii_case(w) => {}
                        // After arguments, a wrong word is a usage problem of this command.
                        got if pos > literals => {
                            return Err(Mismatch::Arg {
                                matched: literals,
                                problem: match got {
                                    Some(word) => {
                                        format!("expected `{w}` where you wrote `{}`", word.text)
                                    }
                                    None => format!(
                                        "expected `{w}` after <{}>",
                                        last_arg_name(&self.parts, w)
                                    ),
                                },
                            });
                        }
                        _ => return Err(Mismatch::Literal { matched: literals }),
                    }
                    pos += 1;
                    literals += 1;
                }
                Part::Arg(arg) => {
                    let fail = |problem: String| Mismatch::Arg {
                        matched: literals,
                        problem,
                    };
                    if let Some(flag) = &arg.flag {
                        match input.get(pos) {
                            Some(word) if word.text.eq_ignore_ascii_case(flag) => pos += 1,
                            _ => continue,
                        }
                        if pos >= input.len() {
                            return Err(fail(format!("`{flag}` needs a <{}> after it", arg.name)));
                        }
                    }
                    if pos >= input.len() {
                        if arg.optional {
                            if let Some(default) = &arg.default {
                                let value = typed(arg, default).map_err(fail)?;
                                args.insert(&arg.name, value);
                            } else if arg.rest {
                                args.insert(&arg.name, Value::Words(Vec::new()));
                            }
                            continue;
                        }
                        return Err(fail(format!("<{}> is missing", arg.name)));
                    }
                    if arg.rest {
                        let rest = &input[pos..];
                        let value = match &arg.ty {
                            ArgType::Text => Value::Words(
                                rest.iter().map(|w| w.text.clone().into_owned()).collect(),
                            ),
                            _ => {
                                let raw = if rest.len() == 1 {
                                    rest[0].text.clone()
                                } else {
                                    unescape(text[rest[0].start..].trim())
                                };
                                typed(arg, &raw).map_err(fail)?
                            }
                        };
                        args.insert(&arg.name, value);
                        pos = input.len();
                    } else {
                        let raw = &input[pos].text;
                        let raw = match (&arg.default, raw.split_once('=')) {
                            (Some(_), Some((key, value)))
                                if key.eq_ignore_ascii_case(&arg.name) =>
                            {
                                value
                            }
                            _ => raw,
                        };
                        let value = typed(arg, raw).map_err(fail)?;
                        args.insert(&arg.name, value);
                        pos += 1;
                    }
                }
            }
        }
        if pos < input.len() {
            return Err(Mismatch::Arg {
                matched: literals,
                problem: format!("unexpected `{}`", input[pos].text),
            });
        }
        Ok(args)
    }
}

/// Why input did not bind to a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// One of the leading command words differed after `matched` of them.
    Literal { matched: usize },
    /// All literals so far matched; an argument was missing, extra or of the wrong type.
    Arg { matched: usize, problem: String },
}

/// The name of the argument just before the literal `word`, for error messages.
fn last_arg_name<'a>(parts: &'a [Part], word: &str) -> &'a str {
    let at = parts
        .iter()
        .position(|p| matches!(p, Part::Lit(w) if w == word))
        .unwrap_or(parts.len());
    parts[..at]
        .iter()
        .rev()
        .find_map(|p| match p {
            Part::Arg(a) => Some(a.name.as_str()),
            Part::Lit(_) => None,
        })
        .unwrap_or("arguments")
}

fn parse_arg(tok: &str, ty: &dyn Fn(&str) -> ArgType) -> Option<ArgSpec> {
    let (inner, optional) = if let Some(i) = tok.strip_prefix('<').and_then(|t| t.strip_suffix('>'))
    {
        (i, false)
    } else if let Some(i) = tok.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        (i, false)
    } else if let Some(i) = tok.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        (i, true)
    } else {
        return None;
    };
    let (inner, rest) = match inner.strip_suffix("...") {
        Some(i) => (i, true),
        None => (inner, false),
    };
    let (name, default) = match inner.split_once('=') {
        Some((n, d)) => (n, Some(d.to_owned())),
        None => (inner, None),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return None;
    }
    Some(ArgSpec {
        name: name.to_owned(),
        rest,
        optional,
        default,
        flag: None,
        ty: ty(name),
    })
}

fn typed(arg: &ArgSpec, raw: &str) -> Result<Value, String> {
    match &arg.ty {
        ArgType::Text => Ok(Value::Text(raw.to_owned())),
        ArgType::Int { min, max } => {
            let n: i64 = raw
                .parse()
                .map_err(|_| format!("<{}> must be a whole number, not `{raw}`", arg.name))?;
            if n < *min || n > *max {
                return Err(format!("<{}> must be between {min} and {max}", arg.name));
            }
            Ok(Value::Int(n))
        }
        ArgType::Email => {
            let ok = raw.len() <= 254
                && raw
                    .split_once('@')
                    .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
                && !raw.chars().any(|c| c.is_whitespace() || c.is_control());
            if ok {
                Ok(Value::Text(raw.to_owned()))
            } else {
                Err(format!("`{raw}` is not an email address"))
            }
        }
        ArgType::Regex => compile_chat_regex(raw).map(Value::Regex),
        ArgType::Choice(choices) => {
            let lower = raw.to_lowercase();
            if choices.contains(&lower.as_str()) {
                Ok(Value::Text(lower))
            } else {
                Err(format!(
                    "<{}> must be one of {}",
                    arg.name,
                    choices.join(", ")
                ))
            }
        }
        ArgType::Param(re) => crate::domain::runbook::validate_value(&arg.name, raw, re)
            .map(|()| Value::Text(raw.to_owned()))
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(input: &str) -> Vec<String> {
        words(input)
            .into_iter()
            .map(|w| w.text.into_owned())
            .collect()
    }

    #[test]
    fn words_follow_slack_conventions() {
        assert_eq!(texts("  pager   ack  P1 "), ["pager", "ack", "P1"]);
        assert_eq!(
            texts("pager me as <mailto:jane@acme.test|jane@acme.test>"),
            ["pager", "me", "as", "jane@acme.test"]
        );
        assert_eq!(
            texts("trigger <@U123|jane> db down"),
            ["trigger", "<@U123>", "db", "down"]
        );
        assert_eq!(
            texts("say \u{201c}hello world\u{201d} x"),
            ["say", "hello world", "x"]
        );
        assert_eq!(
            texts("say \"unterminated words"),
            ["say", "unterminated words"]
        );
        assert_eq!(
            texts("a&lt;b &amp; <https://x.test|x>"),
            ["a<b", "&", "https://x.test"]
        );
        assert!(texts("").is_empty());
    }

    fn bind(pattern: &str, types: &[(&str, ArgType)], input: &str) -> Result<Args, Mismatch> {
        Usage::parse(pattern, types)
            .unwrap()
            .bind(input, &words(input))
    }

    #[test]
    fn arguments_bind_by_kind() {
        let int = ArgType::Int { min: 1, max: 90 };
        let args = bind(
            "pager schedule <name> [days=30]",
            &[("days", int.clone())],
            "pager schedule ops",
        )
        .unwrap();
        assert_eq!(args.text("name"), Some("ops"));
        assert_eq!(args.int("days"), Some(30));
        let args = bind(
            "pager schedule <name> [days=30]",
            &[("days", int.clone())],
            "pager schedule ops days=7",
        )
        .unwrap();
        assert_eq!(args.int("days"), Some(7));
        let args = bind(
            "pager schedule <name> [days=30]",
            &[("days", int.clone())],
            "PAGER Schedule ops 14",
        )
        .unwrap();
        assert_eq!(args.int("days"), Some(14));
        let err = bind(
            "pager schedule <name> [days=30]",
            &[("days", int)],
            "pager schedule ops 900",
        )
        .unwrap_err();
        assert!(
            matches!(err, Mismatch::Arg { matched: 2, ref problem } if problem.contains("between 1 and 90")),
            "{err:?}"
        );

        let args = bind("pager ack [ids...]", &[], "pager ack P1 P2").unwrap();
        assert_eq!(args.words("ids"), ["P1", "P2"]);
        let args = bind("pager ack [ids...]", &[], "pager ack").unwrap();
        assert!(args.words("ids").is_empty());

        let args = bind(
            "pager trigger <user> <message...>",
            &[],
            "pager trigger jane db  is down",
        )
        .unwrap();
        assert_eq!(args.text("user"), Some("jane"));
        assert_eq!(args.words("message"), ["db", "is", "down"]);
    }

    #[test]
    fn flagged_optional_regex_keeps_the_raw_text() {
        let pattern = "pulls <repo> [with <filter...>]";
        let types = [("filter", ArgType::Regex)];
        let args = bind(pattern, &types, "pulls acme/api with ^fix:  (a|b)").unwrap();
        assert_eq!(args.regex("filter").unwrap().as_str(), "^fix:  (a|b)");
        let args = bind(pattern, &types, "pulls acme/api").unwrap();
        assert!(args.regex("filter").is_none());
        let err = bind(pattern, &types, "pulls acme/api with (").unwrap_err();
        assert!(
            matches!(err, Mismatch::Arg { ref problem, .. } if problem.contains("not a valid regular expression")),
            "{err:?}"
        );
        let err = bind(pattern, &types, "pulls acme/api with").unwrap_err();
        assert!(matches!(err, Mismatch::Arg { .. }));
    }

    #[test]
    fn chat_regexes_are_bounded() {
        assert!(compile_chat_regex(&"a".repeat(MAX_CHAT_REGEX_LEN + 1)).is_err());
        assert!(compile_chat_regex("(a{1000}){1000}").is_err());
        assert!(compile_chat_regex("^feat").unwrap().is_match("FEAT: x"));
    }

    #[test]
    fn literals_after_arguments_and_runbook_params() {
        let env =
            Arc::new(crate::domain::runbook::compile_param_regex("staging|production").unwrap());
        let app = Arc::new(crate::domain::runbook::compile_param_regex("[a-z0-9-]+").unwrap());
        let types = [
            ("env", ArgType::Param(env)),
            ("app", ArgType::Param(app.clone())),
            ("version", ArgType::Param(app)),
        ];
        let pattern = "deploy {app} {version} to {env}";
        let args = bind(pattern, &types, "deploy api 1-2 to production").unwrap();
        assert_eq!(args.texts()["env"], "production");
        assert!(matches!(
            bind(pattern, &types, "deploy api 1-2 into production").unwrap_err(),
            Mismatch::Arg { matched: 1, ref problem } if problem == "expected `to` where you wrote `into`"
        ));
        assert!(matches!(
            bind(pattern, &types, "deploy api 1-2").unwrap_err(),
            Mismatch::Arg { ref problem, .. } if problem == "expected `to` after <version>"
        ));
        assert!(matches!(
            bind(pattern, &types, "depoly api").unwrap_err(),
            Mismatch::Literal { matched: 0 }
        ));
        assert!(matches!(
            bind(pattern, &types, "deploy api --force to production").unwrap_err(),
            Mismatch::Arg { .. }
        ));
        assert!(matches!(
            bind(pattern, &types, "deploy api 1-2 to production now").unwrap_err(),
            Mismatch::Arg { ref problem, .. } if problem == "unexpected `now`"
        ));
    }

    #[test]
    fn usage_display_round_trips_the_declaration() {
        for (pattern, shown) in [
            ("pager ack [ids...]", "pager ack [ids...]"),
            (
                "pager schedule <name> [days=30]",
                "pager schedule <name> [days=30]",
            ),
            (
                "pulls <repo> [with <filter...>]",
                "pulls <repo> [with <filter...>]",
            ),
            ("deploy {app} to {env}", "deploy <app> to <env>"),
        ] {
            assert_eq!(Usage::parse(pattern, &[]).unwrap().display(), shown);
        }
        assert!(Usage::parse("<x> first", &[]).is_err());
        assert!(Usage::parse("a <rest...> b", &[]).is_err());
        assert!(Usage::parse("a <bad", &[]).is_err());
    }
}
