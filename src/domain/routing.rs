//! Which channels an inbound event goes to: the `[[routes]]` rules, with no I/O.
//!
//! A rule matches on the source, the event type (`push`, `pull_request.opened`; `pull_request`
//! or `pull_request.*` for every action; no `events` for every known type) and optional
//! fields (`repository`, `branch`, `service`, `urgency`, `priority`, `group`, each a glob with
//! `*`). An event type we do not know is posted only by a rule that names it.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One `[[routes]]` rule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub source: String,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default, rename = "match")]
    pub matches: BTreeMap<String, String>,
    pub channel: String,
}

/// The facts of an event that rules can match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub source: String,
    /// `push`, `pull_request.opened`, `incident.triggered`, `ticket.created`, …
    pub kind: String,
    /// Whether we know this event type (and have a message for it).
    pub known: bool,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub service: Option<String>,
    pub urgency: Option<String>,
    pub priority: Option<String>,
    pub group: Option<String>,
}

impl Facts {
    fn field(&self, name: &str) -> Option<&str> {
        match name {
            "repository" => self.repository.as_deref(),
            "branch" => self.branch.as_deref(),
            "service" => self.service.as_deref(),
            "urgency" => self.urgency.as_deref(),
            "priority" => self.priority.as_deref(),
            "group" => self.group.as_deref(),
            _ => None,
        }
    }
}

/// The fields a `match` table may name.
pub const MATCH_FIELDS: &[&str] = &[
    "repository",
    "branch",
    "service",
    "urgency",
    "priority",
    "group",
];

/// `*` matches any run of characters; everything else literally, case-insensitively.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matcher with backtracking to the last star.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn event_matches(pattern: &str, facts: &Facts) -> bool {
    let kind = facts.kind.as_str();
    if pattern == "*" {
        return facts.known;
    }
    if pattern.contains('*') {
        // `release.*`: every action of that event (but not a bare `*`, handled above).
        return glob(pattern, kind);
    }
    pattern.eq_ignore_ascii_case(kind)
        || kind
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Whether one rule takes this event.
pub fn matches(route: &Route, facts: &Facts) -> bool {
    if !route.source.eq_ignore_ascii_case(&facts.source) {
        return false;
    }
    let events_ok = if route.events.is_empty() {
        facts.known
    } else {
        route.events.iter().any(|e| event_matches(e, facts))
    };
    events_ok
        && route
            .matches
            .iter()
            .all(|(field, pattern)| facts.field(field).is_some_and(|value| glob(pattern, value)))
}

/// The channels for an event, each once, in rule order.
pub fn channels(routes: &[Route], facts: &Facts) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for route in routes.iter().filter(|r| matches(r, facts)) {
        let channel = &route.channel;
        if !out.contains(channel) {
            out.push(channel.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(toml: &str) -> Vec<Route> {
        #[derive(Deserialize)]
        struct File {
            routes: Vec<Route>,
        }
        toml::from_str::<File>(toml).unwrap().routes
    }

    fn github(kind: &str, repo: &str, branch: Option<&str>) -> Facts {
        Facts {
            source: "github".into(),
            kind: kind.into(),
            known: true,
            repository: Some(repo.into()),
            branch: branch.map(str::to_owned),
            ..Facts::default()
        }
    }

    #[test]
    fn globs() {
        assert!(glob("acme/*", "acme/api"));
        assert!(glob("*", "anything"));
        assert!(glob("release-*-final", "release-1.2-final"));
        assert!(!glob("acme/*", "other/api"));
        assert!(glob("ACME/api", "acme/API"));
        assert!(!glob("acme", "acme/api"));
    }

    #[test]
    fn the_design_example_routes() {
        let r = routes(
            r#"
[[routes]]
source  = "github"
events  = ["pull_request.opened", "push", "release.*"]
match   = { repository = "acme/*" }
channel = "C0DEV"

[[routes]]
source  = "github"
events  = ["push"]
match   = { repository = "acme/api", branch = "main" }
channel = "C0DEPLOY"

[[routes]]
source  = "pagerduty"
match   = { urgency = "high" }
channel = "C0PAGE"
"#,
        );
        assert_eq!(
            channels(&r, &github("push", "acme/api", Some("main"))),
            ["C0DEV", "C0DEPLOY"]
        );
        assert_eq!(
            channels(&r, &github("push", "acme/web", Some("main"))),
            ["C0DEV"]
        );
        assert_eq!(
            channels(&r, &github("pull_request.opened", "acme/api", None)),
            ["C0DEV"]
        );
        assert!(channels(&r, &github("pull_request.closed", "acme/api", None)).is_empty());
        assert_eq!(
            channels(&r, &github("release.published", "acme/api", None)),
            ["C0DEV"]
        );
        assert!(channels(&r, &github("push", "other/api", Some("main"))).is_empty());
        let page = Facts {
            source: "pagerduty".into(),
            kind: "incident.triggered".into(),
            known: true,
            urgency: Some("high".into()),
            ..Facts::default()
        };
        assert_eq!(channels(&r, &page), ["C0PAGE"]);
        let low = Facts {
            urgency: Some("low".into()),
            ..page
        };
        assert!(channels(&r, &low).is_empty());
    }

    #[test]
    fn bare_names_cover_actions_and_unknown_types_need_naming() {
        let r = routes(
            r#"
[[routes]]
source = "github"
events = ["pull_request"]
channel = "C1"

[[routes]]
source = "github"
channel = "C2"

[[routes]]
source = "github"
events = ["discussion.*"]
channel = "C3"
"#,
        );
        assert_eq!(
            channels(&r, &github("pull_request.opened", "a/b", None)),
            ["C1", "C2"]
        );
        let unknown = Facts {
            known: false,
            ..github("discussion.created", "a/b", None)
        };
        assert_eq!(
            channels(&r, &unknown),
            ["C3"],
            "only the rule that names it"
        );
        let other_unknown = Facts {
            known: false,
            ..github("sponsorship.created", "a/b", None)
        };
        assert!(channels(&r, &other_unknown).is_empty());
    }

    #[test]
    fn a_missing_field_does_not_match() {
        let r = routes(
            "[[routes]]\nsource = \"github\"\nmatch = { branch = \"main\" }\nchannel = \"C1\"\n",
        );
        assert!(channels(&r, &github("issues.opened", "a/b", None)).is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// The same glob as a regular expression: `*` is `.*`, the rest literal, whole text,
        /// case folded.
        fn reference(pattern: &str, text: &str) -> bool {
            let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
            regex::RegexBuilder::new(&format!("^{}$", parts.join(".*")))
                .case_insensitive(true)
                .build()
                .is_ok_and(|re| re.is_match(text))
        }

        fn facts() -> impl Strategy<Value = Facts> {
            (
                prop_oneof![Just("github"), Just("pagerduty"), Just("GitHub")],
                prop_oneof![
                    Just("push"),
                    Just("pull_request.opened"),
                    Just("release.published"),
                    Just("mystery")
                ],
                any::<bool>(),
                proptest::option::of("[a-c/]{0,6}"),
                proptest::option::of("[a-c*]{0,4}"),
            )
                .prop_map(|(source, kind, known, repository, branch)| Facts {
                    source: source.into(),
                    kind: kind.into(),
                    known,
                    repository,
                    branch,
                    ..Facts::default()
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn glob_agrees_with_its_regular_expression(pattern in "[aB*.]{0,8}", text in "[abAB.]{0,10}") {
                prop_assert_eq!(glob(&pattern, &text), reference(&pattern, &text));
            }

            // A condition more never lets more events through; a rule with no events and no
            // conditions takes exactly the known events of its source.
            #[test]
            fn conditions_only_narrow_a_rule(
                f in facts(),
                events in proptest::collection::vec(prop_oneof![Just("push"), Just("pull_request"), Just("release.*"), Just("*"), Just("mystery")], 0..3),
                field in prop_oneof![Just("repository"), Just("branch"), Just("service")],
                pattern in "[a-c*/]{0,4}",
            ) {
                let bare = Route { source: "github".into(), events: Vec::new(), matches: BTreeMap::new(), channel: "#c".into() };
                prop_assert_eq!(matches(&bare, &f), f.source.eq_ignore_ascii_case("github") && f.known);
                let wide = Route { events: events.iter().map(|e| (*e).to_owned()).collect(), ..bare };
                let mut narrow = wide.clone();
                narrow.matches.insert(field.to_owned(), pattern);
                if matches(&narrow, &f) {
                    prop_assert!(matches(&wide, &f));
                }
                // An unknown event type goes only where a rule names it: the type itself, its
                // event (`pull_request` for `pull_request.opened`), or that event's `.*`.
                if !f.known && matches(&wide, &f) {
                    let named = events.iter().any(|e| {
                        let e = e.trim_end_matches(".*");
                        *e != *"*" && (f.kind == e || f.kind.starts_with(&format!("{e}.")))
                    });
                    prop_assert!(named, "{:?} took unknown {}", events, f.kind);
                }
            }
        }
    }
}
