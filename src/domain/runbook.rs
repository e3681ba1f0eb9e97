//! Runbook parameters and templates: pure rules, no I/O.
//!
//! A runbook's `usage` (`deploy {app} {version} to {env}`) names typed parameters; each value
//! must match its `params` regular expression in full and must also pass rules that hold for
//! every runbook, whatever its expressions allow: no control characters, no leading `-` (so a
//! value can never become an option of the program it is passed to), bounded length. Values are
//! substituted into argv elements and never reach a shell.

use std::collections::BTreeMap;

use regex::Regex;

use crate::config::{RunConfig, RunbookConfig};

static INVISIBLE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
    Regex::new(r"[\p{Cf}\p{Zl}\p{Zp}\p{Co}]")
        .unwrap_or_else(|e| unreachable!("the class compiles: {e}"))
});

/// Longest parameter value accepted.
pub const MAX_PARAM_LEN: usize = 256;

/// Compile a parameter expression so that it must match the whole value, with a size limit so a
/// configuration cannot build an enormous automaton.
pub fn compile_param_regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| format!("not a valid regular expression: {e}"))
}

/// Compile a `when` value of an approval policy: an expression the whole parameter value must
/// match, ignoring case. A parameter's own expression may accept other spellings of a value
/// (`(?i)`, or `[Pp]roduction`), so an exact comparison would let `PRODUCTION` past a policy
/// written for `production`; matching the way parameters match, with case folded, does not.
pub fn compile_when(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .case_insensitive(true)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| format!("not a valid regular expression: {e}"))
}

/// For a `when` value that is a plain word (no expression syntax): whether the parameter's
/// expression accepts it in some casing. If not, the policy could never apply: a typo.
pub fn when_can_apply(when: &str, param: &Regex) -> bool {
    if regex::escape(when) != when {
        return true;
    }
    [when.to_owned(), when.to_lowercase(), when.to_uppercase()]
        .iter()
        .any(|v| param.is_match(v))
}

/// The `{name}` placeholders of a template, in order.
pub fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{template}`"))?;
        let name = &after[..close];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "`{{{name}}}` is not a parameter name in `{template}`"
            ));
        }
        names.push(name);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched `}}` in `{template}`"));
    }
    Ok(names)
}

/// Substitute `{name}` placeholders with validated values.
pub fn render(template: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match values.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every placeholder in usage, target and runner templates must be a declared parameter, and
/// every usage placeholder needs an expression. Errors are (span, field, message).
pub fn check_templates(
    runbook: &RunbookConfig,
) -> Result<(), (std::ops::Range<usize>, &'static str, String)> {
    let usage = runbook.usage.get_ref();
    let usage_params = placeholders(usage).map_err(|e| (runbook.usage.span(), "usage", e))?;
    let words: Vec<&str> = usage.split_whitespace().collect();
    if words.first().is_none_or(|w| w.starts_with('{')) {
        return Err((
            runbook.usage.span(),
            "usage",
            "usage must start with a literal word, like \"deploy {app} ...\"".to_owned(),
        ));
    }
    for word in &words {
        if word.contains('{') && !(word.starts_with('{') && word.ends_with('}')) {
            return Err((
                runbook.usage.span(),
                "usage",
                format!("`{word}`: a placeholder must be a whole word"),
            ));
        }
    }
    for name in &usage_params {
        if !runbook.params.contains_key(*name) {
            return Err((
                runbook.usage.span(),
                "usage",
                format!("`{{{name}}}` has no expression in `params`"),
            ));
        }
    }
    let known = |name: &str| runbook.params.contains_key(name);
    let check = |template: &str| -> Result<(), String> {
        for name in placeholders(template)? {
            if !known(name) {
                return Err(format!("`{{{name}}}` is not one of this runbook's params"));
            }
        }
        Ok(())
    };
    if let Some(target) = &runbook.target {
        check(target.get_ref()).map_err(|e| (target.span(), "target", e))?;
    }
    let runners =
        std::iter::once(("run", &runbook.run)).chain(runbook.plan.iter().map(|p| ("plan", p)));
    for (field, runner) in runners {
        let templates: Vec<&str> = match runner.get_ref() {
            RunConfig::Command { argv, env, .. } => {
                if argv.is_empty() {
                    return Err((runner.span(), field, "argv must name a program".to_owned()));
                }
                if argv[0].contains('{') {
                    return Err((
                        runner.span(),
                        field,
                        "the program (argv[0]) cannot come from a parameter".to_owned(),
                    ));
                }
                argv.iter()
                    .chain(env.values())
                    .map(String::as_str)
                    .collect()
            }
            RunConfig::GithubWorkflow {
                repo,
                workflow,
                git_ref,
                inputs,
            } => [repo.as_str(), workflow.as_str(), git_ref.as_str()]
                .into_iter()
                .chain(inputs.values().map(String::as_str))
                .collect(),
            RunConfig::Http { url, body, .. } => {
                if url.contains('{') {
                    return Err((
                        runner.span(),
                        field,
                        "the URL cannot contain parameters; send them in `body`".to_owned(),
                    ));
                }
                body.values().map(String::as_str).collect()
            }
            RunConfig::HeldCommand => Vec::new(),
        };
        for t in templates {
            check(t).map_err(|e| (runner.span(), field, e))?;
        }
    }
    Ok(())
}

/// Why a parameter value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("`{name}` is missing")]
    Missing { name: String },
    #[error("`{name}` is not a parameter of this runbook")]
    Unknown { name: String },
    #[error("`{name}` may not start with `-`")]
    LeadingDash { name: String },
    #[error("`{name}` contains a control character")]
    ControlCharacter { name: String },
    #[error(
        "`{name}` contains an invisible formatting character (such as a right-to-left override or a zero-width space)"
    )]
    FormatCharacter { name: String },
    #[error("`{name}` is longer than {MAX_PARAM_LEN} characters")]
    TooLong { name: String },
    #[error("`{value}` is not a valid `{name}` (must match `{pattern}`)")]
    NoMatch {
        name: String,
        value: String,
        pattern: String,
    },
}

/// Check one value against the rules every runbook shares and then its own expression.
pub fn validate_value(name: &str, value: &str, pattern: &Regex) -> Result<(), ParamError> {
    if value.is_empty() {
        return Err(ParamError::Missing { name: name.into() });
    }
    if value.chars().count() > MAX_PARAM_LEN {
        return Err(ParamError::TooLong { name: name.into() });
    }
    if value.chars().any(char::is_control) {
        return Err(ParamError::ControlCharacter { name: name.into() });
    }
    // Characters that change how text reads without being seen (U+202E turns `1.0-fdp` into
    // what looks like `1.0-pdf`; U+200B splits a word invisibly), line and paragraph
    // separators, and private-use characters: no parameter needs them, and an approver must see
    // exactly what will run.
    if INVISIBLE.is_match(value) {
        return Err(ParamError::FormatCharacter { name: name.into() });
    }
    if value.starts_with('-') {
        return Err(ParamError::LeadingDash { name: name.into() });
    }
    if !pattern.is_match(value) {
        let shown = pattern.as_str();
        let shown = shown
            .strip_prefix("^(?:")
            .and_then(|s| s.strip_suffix(")$"))
            .unwrap_or(shown);
        return Err(ParamError::NoMatch {
            name: name.into(),
            value: value.chars().take(64).collect(),
            pattern: shown.into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_in_order() {
        assert_eq!(
            placeholders("deploy {app} {version} to {env}").unwrap(),
            vec!["app", "version", "env"]
        );
        assert!(placeholders("deploy {app").is_err());
        assert!(placeholders("deploy app}").is_err());
        assert!(placeholders("deploy {a b}").is_err());
    }

    #[test]
    fn render_substitutes_known_names_only() {
        let values = BTreeMap::from([("app".to_owned(), "api".to_owned())]);
        assert_eq!(render("{app}/{env}", &values), "api/{env}");
        assert_eq!(render("plain", &values), "plain");
    }

    #[test]
    fn shell_injection_attempts_are_refused_even_by_a_lax_expression() {
        let lax = compile_param_regex(".*").unwrap();
        let version = compile_param_regex("[A-Za-z0-9._-]+").unwrap();
        assert!(matches!(
            validate_value("v", "--flag", &version),
            Err(ParamError::LeadingDash { .. })
        ));
        assert!(matches!(
            validate_value("v", "1.2\nrm -rf /", &lax),
            Err(ParamError::ControlCharacter { .. })
        ));
        for attack in ["; rm -rf /", "$(reboot)", "`id`", "a|b", "1.2 && x"] {
            assert!(
                matches!(
                    validate_value("v", attack, &version),
                    Err(ParamError::NoMatch { .. })
                ),
                "{attack}"
            );
        }
        assert_eq!(validate_value("v", "1.2.3", &version), Ok(()));
        for sneaky in [
            "1.0\u{202e}fdp",
            "api\u{200b}",
            "a\u{2028}b",
            "\u{feff}prod",
            "x\u{e000}",
        ] {
            assert!(
                matches!(
                    validate_value("v", sneaky, &lax),
                    Err(ParamError::FormatCharacter { .. })
                ),
                "{sneaky:?}"
            );
        }
        assert_eq!(validate_value("v", "café-münchen", &lax), Ok(()));
    }

    #[test]
    fn when_matches_every_spelling_the_parameter_accepts() {
        let lax_env = compile_param_regex("(?i)staging|production").unwrap();
        let when = compile_when("production").unwrap();
        for spelling in ["production", "PRODUCTION", "Production", "pRoDuCtIoN"] {
            assert_eq!(validate_value("env", spelling, &lax_env), Ok(()));
            assert!(when.is_match(spelling), "{spelling} must need approval");
        }
        assert!(!when.is_match("staging"));
        assert!(!when.is_match("production-eu"), "matched in full");
        // An expression reaches several values.
        let prod = compile_when("prod|production").unwrap();
        assert!(prod.is_match("PROD") && prod.is_match("production") && !prod.is_match("dev"));
        // A plain word the parameter can never take is a typo.
        let env = compile_param_regex("staging|production").unwrap();
        assert!(when_can_apply("production", &env));
        assert!(when_can_apply("PRODUCTION", &env));
        assert!(!when_can_apply("prodution", &env));
        assert!(when_can_apply("prod.*", &env), "expressions are not judged");
    }

    #[test]
    fn expressions_must_match_the_whole_value() {
        let env = compile_param_regex("staging|production").unwrap();
        assert_eq!(validate_value("env", "production", &env), Ok(()));
        assert!(validate_value("env", "production2", &env).is_err());
        assert!(validate_value("env", "xstaging", &env).is_err());
    }
}
