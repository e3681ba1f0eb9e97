//! Runbook parameters and templates: pure rules, no I/O.
//!
//! A runbook's `usage` (`deploy {app} {version} to {env}`) names typed parameters; each value
//! must match its `params` regular expression in full and must also pass rules that hold for
//! every runbook, whatever its expressions allow: no control characters, no leading `-` (so a
//! value can never become an option of the program it is passed to), bounded length. Values are
//! substituted into argv elements and never reach a shell.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::approval::ApprovalPolicy;

static INVISIBLE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
    Regex::new(r"[\p{Cf}\p{Zl}\p{Zp}\p{Co}]")
        .unwrap_or_else(|e| unreachable!("the class compiles: {e}"))
});

/// Longest parameter value accepted.
pub const MAX_PARAM_LEN: usize = 256;

/// The longest held PagerDuty write (its JSON), which names every incident it acts on.
pub const MAX_HELD_WRITE_LEN: usize = 32 * 1024;

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

/// How a runbook runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Run {
    Command {
        argv: Vec<String>,
        #[serde(default, with = "crate::domain::duration::option")]
        timeout: Option<Duration>,
        #[serde(default)]
        dir: Option<PathBuf>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    GithubWorkflow {
        repo: String,
        workflow: String,
        #[serde(rename = "ref")]
        git_ref: String,
        #[serde(default)]
        inputs: BTreeMap<String, String>,
    },
    Http {
        url: String,
        #[serde(default)]
        body: BTreeMap<String, String>,
        #[serde(default, with = "crate::domain::duration::option")]
        timeout: Option<Duration>,
    },
    /// Never read from pantheon.toml: a chat command held for approval (`[pagerduty]
    /// approval_required`), run as the person who asked once it is approved. The command as
    /// typed is the job's `command` parameter.
    #[serde(skip_deserializing)]
    HeldCommand,
}

/// A runbook as configured: the definition an approval is bound to (see
/// [`super::approval::binding`]). Its JSON form is canonical (maps in key order), and must stay
/// as it is: a pending approval is bound to a hash of it.
#[derive(Debug, Clone, Serialize)]
pub struct Definition {
    pub name: String,
    /// Chat syntax: literal words and `{param}` placeholders.
    pub usage: String,
    pub description: Option<String>,
    /// Parameter name -> regular expression the whole value must match.
    pub params: BTreeMap<String, String>,
    /// One running job per rendered target.
    pub target: Option<String>,
    pub run: Run,
    /// A dry run whose output is shown in the approval message.
    pub plan: Option<Run>,
    pub approval: Option<ApprovalPolicy>,
    /// Whether a job interrupted by a dead worker may be run again automatically.
    pub retry_safe: bool,
    /// Which parameters say what this run deploys where. Left out of the JSON when absent, so
    /// the binding of a runbook without it is what it was before deploys were declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<super::deploy::DeployFields>,
}

/// A `when` entry of an approval policy, compiled once. `None` when the expression does not
/// compile (check-config refuses those): it counts as a match, since when in doubt we ask.
#[derive(Debug, Clone)]
struct When {
    param: String,
    written: String,
    expression: Option<Regex>,
}

/// A runbook ready to use: its definition, with every expression compiled once.
#[derive(Debug, Clone)]
pub struct Runbook {
    definition: Definition,
    params: BTreeMap<String, Arc<Regex>>,
    when: Vec<When>,
    /// The longest value a parameter may have: [`MAX_PARAM_LEN`], but more for the held write
    /// of [`Runbook::held`], which lists every incident it acts on.
    max_len: usize,
}

impl Runbook {
    /// Compile the definition's expressions. Errors name the parameter.
    pub fn compile(definition: Definition) -> Result<Self, String> {
        let params = definition
            .params
            .iter()
            .map(|(name, pattern)| {
                compile_param_regex(pattern)
                    .map(|re| (name.clone(), Arc::new(re)))
                    .map_err(|e| format!("params.{name}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let when = definition
            .approval
            .iter()
            .flat_map(|a| &a.when)
            .map(|(param, written)| When {
                param: param.clone(),
                written: written.to_lowercase(),
                expression: compile_when(written).ok(),
            })
            .collect();
        Ok(Self {
            definition,
            params,
            when,
            max_len: MAX_PARAM_LEN,
        })
    }

    /// The runbook that holds PagerDuty `action` for approval (`[pagerduty] approval_required`).
    /// Its parameters: `command`, the command as typed (what people read), and `write`, the
    /// [`HeldWrite`](super::held::HeldWrite) it asked for, in its canonical form; once approved,
    /// a job does that write as the person who asked.
    pub fn held(action: &str, policy: ApprovalPolicy) -> Result<Self, String> {
        let mut runbook = Self::compile(Definition {
            name: held_name(action),
            usage: format!("pager {action}"),
            description: Some(format!("PagerDuty `{action}`, held for approval")),
            params: BTreeMap::from([
                ("command".to_owned(), ".+".to_owned()),
                ("write".to_owned(), r"\{.+\}".to_owned()),
            ]),
            target: None,
            run: Run::HeldCommand,
            plan: None,
            approval: Some(policy),
            retry_safe: false,
            deploy: None,
        })?;
        runbook.max_len = MAX_HELD_WRITE_LEN;
        Ok(runbook)
    }

    /// Check one value of parameter `name`: the rules every runbook shares, then its expression.
    pub fn validate(&self, name: &str, value: &str) -> Result<(), ParamError> {
        let pattern = self
            .params
            .get(name)
            .ok_or_else(|| ParamError::Unknown { name: name.into() })?;
        validate_within(name, value, pattern, self.max_len)
    }

    pub fn definition(&self) -> &Definition {
        &self.definition
    }

    pub fn name(&self) -> &str {
        &self.definition.name
    }

    /// The compiled expression of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&Arc<Regex>> {
        self.params.get(name)
    }

    /// Every parameter with its compiled expression, in name order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &Arc<Regex>)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether this run needs approval: the runbook has a policy, and every `when` parameter
    /// either is the value written there (ignoring case) or matches it as an expression (in full,
    /// ignoring case; see [`compile_when`]). Both, so a value written before `when` took
    /// expressions (`a+b`) still catches itself.
    pub fn needs_approval(&self, params: &BTreeMap<String, String>) -> bool {
        self.definition.approval.is_some()
            && self.when.iter().all(|w| {
                params.get(&w.param).is_some_and(|value| {
                    value.to_lowercase() == w.written
                        || w.expression.as_ref().is_none_or(|re| re.is_match(value))
                })
            })
    }

    /// The target a run with these parameters holds: the rendered `target`, or the name.
    pub fn target(&self, params: &BTreeMap<String, String>) -> String {
        match &self.definition.target {
            Some(t) => render(t, params),
            None => self.definition.name.clone(),
        }
    }

    /// What a run with these parameters deploys where, if this runbook is a deploy.
    pub fn deployed(&self, params: &BTreeMap<String, String>) -> Option<super::deploy::Deployed> {
        self.definition.deploy.as_ref().map(|d| d.of(params))
    }

    /// Whether some valid parameters give this runbook the target `name`.
    pub fn may_target(&self, name: &str) -> bool {
        match &self.definition.target {
            Some(t) => self.may_render(t, name),
            None => self.definition.name == name,
        }
    }

    /// Whether some valid parameters put a run of this runbook in environment `name`.
    pub fn may_be_in(&self, name: &str) -> bool {
        self.definition
            .deploy
            .as_ref()
            .is_some_and(|d| self.may_render(&d.env, name))
    }

    /// Whether `template`, with each placeholder a value its parameter accepts, can read `value`.
    fn may_render(&self, template: &str, value: &str) -> bool {
        let Ok(names) = placeholders(template) else {
            return false;
        };
        // The template as literal pieces between placeholders: `{app}/{env}` is "", "/", "".
        let mut literals = Vec::with_capacity(names.len() + 1);
        let mut rest = template;
        for name in &names {
            let open = rest.find(&format!("{{{name}}}")).unwrap_or(0);
            literals.push(&rest[..open]);
            rest = &rest[open + name.len() + 2..];
        }
        literals.push(rest);
        self.fits(&names, &literals, value)
    }

    fn fits(&self, names: &[&str], literals: &[&str], value: &str) -> bool {
        let Some(value) = value.strip_prefix(literals[0]) else {
            return false;
        };
        let Some((name, names)) = names.split_first() else {
            return value.is_empty();
        };
        (1..=value.len().min(self.max_len * 4))
            .filter(|&end| value.is_char_boundary(end))
            .any(|end| {
                self.validate(name, &value[..end]).is_ok()
                    && self.fits(names, &literals[1..], &value[end..])
            })
    }
}

/// Names of the runbooks that hold PagerDuty writes start so. Configured runbook names cannot
/// contain a dot, so these never clash with them.
const HELD_PREFIX: &str = "pagerduty.";

/// The name of the runbook that holds PagerDuty `action` for approval.
pub fn held_name(action: &str) -> String {
    format!("{HELD_PREFIX}{action}")
}

/// The PagerDuty action `name` holds, if it is one of the runbooks [`Runbook::held`] makes.
pub fn held_action(name: &str) -> Option<&str> {
    name.strip_prefix(HELD_PREFIX)
        .filter(|action| super::policy::PAGERDUTY_WRITE_ACTIONS.contains(action))
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
    #[error("`{name}` is longer than {max} characters")]
    TooLong { name: String, max: usize },
    #[error("`{value}` is not a valid `{name}` (must match `{pattern}`)")]
    NoMatch {
        name: String,
        value: String,
        pattern: String,
    },
}

/// Check one value against the rules every runbook shares and then its own expression.
pub fn validate_value(name: &str, value: &str, pattern: &Regex) -> Result<(), ParamError> {
    validate_within(name, value, pattern, MAX_PARAM_LEN)
}

fn validate_within(name: &str, value: &str, pattern: &Regex, max: usize) -> Result<(), ParamError> {
    if value.is_empty() {
        return Err(ParamError::Missing { name: name.into() });
    }
    if value.chars().count() > max {
        return Err(ParamError::TooLong {
            name: name.into(),
            max,
        });
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

    fn runbook(when: &str, param: &str) -> Runbook {
        Runbook::compile(Definition {
            name: "r".into(),
            usage: "r {v}".into(),
            description: None,
            params: BTreeMap::from([("v".to_owned(), param.to_owned())]),
            target: None,
            run: Run::Command {
                argv: vec!["true".into()],
                timeout: None,
                dir: None,
                env: BTreeMap::new(),
            },
            plan: None,
            approval: Some(ApprovalPolicy {
                when: BTreeMap::from([("v".to_owned(), when.to_owned())]),
                ..ApprovalPolicy::default()
            }),
            retry_safe: false,
            deploy: None,
        })
        .unwrap()
    }

    fn needs(r: &Runbook, v: &str) -> bool {
        r.needs_approval(&BTreeMap::from([("v".to_owned(), v.to_owned())]))
    }

    #[test]
    fn when_catches_its_own_literal_and_what_its_expression_matches() {
        // Written before `when` took expressions: still caught literally.
        let plus = runbook("a+b", "^[a-z+]+$");
        assert!(needs(&plus, "a+b"));
        assert!(needs(&plus, "aab"), "and as the expression it now also is");
        let prod = runbook("production", "(?i)^(staging|production)$");
        assert!(needs(&prod, "PRODUCTION") && needs(&prod, "Production"));
        assert!(!needs(&prod, "staging"));
    }

    #[test]
    fn a_policy_without_when_always_applies_and_no_policy_never() {
        let always = Runbook::compile(Definition {
            approval: Some(ApprovalPolicy::default()),
            ..runbook("x", "[a-z]+").definition().clone()
        })
        .unwrap();
        assert!(needs(&always, "anything"));
        let never = Runbook::compile(Definition {
            approval: None,
            ..always.definition().clone()
        })
        .unwrap();
        assert!(!needs(&never, "x"));
    }

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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            // Whatever the expression allows, an accepted value is non-empty, within the length
            // limit, free of control, invisible and direction characters, does not start with a
            // dash, and matches the expression in full.
            #[test]
            fn an_accepted_value_keeps_every_shared_rule(
                pattern in prop_oneof![Just(".*"), Just("[a-z0-9.-]+"), Just("staging|production"), Just("(?s).*"), Just("v[0-9]+")],
                value in prop_oneof![
                    any::<String>(),
                    "[a-z0-9.-]{0,12}",
                    "-?(staging|production)x?",
                    "v[0-9]{1,3}[\\n\u{202e}\u{200b}]?",
                    ".{250,260}",
                ],
            ) {
                let re = compile_param_regex(pattern).unwrap();
                if validate_value("p", &value, &re).is_ok() {
                    prop_assert!(!value.is_empty());
                    prop_assert!(value.chars().count() <= MAX_PARAM_LEN);
                    prop_assert!(!value.chars().any(char::is_control));
                    prop_assert!(!INVISIBLE.is_match(&value));
                    prop_assert!(!value.starts_with('-'));
                    let whole = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
                    prop_assert!(whole.is_match(&value));
                }
            }
        }
    }
}
