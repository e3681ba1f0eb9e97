//! The forms Pantheon opens, described without any platform's widgets ([`Form`]): a runbook's
//! parameters when they were not typed, a choice of runbook, a comment on a vote, who to page
//! about a message, or a notice. What a submitted one does is in [`crate::forms`].

use time::OffsetDateTime;

use crate::{
    chat::{self, escape},
    command::grammar::words,
    domain::{
        approval::RequestStatus,
        form::{self, Field, FieldKind, Form, Purpose, Values},
        runbook::Runbook,
    },
    services::Services,
};

/// The runbook a command asks for without its parameters, and what was given: `deploy` (its
/// own words and nothing after them) or `run deploy [key=value …]` with some missing. None for
/// anything else, which goes the usual way.
pub fn runbook_asked<'a>(services: &'a Services, text: &str) -> Option<(&'a Runbook, Values)> {
    let words = words(text);
    let word = |i: usize| words.get(i).map(|w| &*w.text);
    let (runbook, rest) = match word(0)? {
        "run" => (services.runbooks.find(word(1)?)?, &words[2..]),
        name => {
            let runbook = services.runbooks.find(name)?;
            // Only the runbook's name: a partly typed usage gets its usual answer.
            let literal = runbook.definition().usage.split_whitespace().next()?;
            if words.len() != 1 || !literal.eq_ignore_ascii_case(name) {
                return None;
            }
            (runbook, &words[1..])
        }
    };
    if runbook.params().next().is_none() || is_held(runbook) {
        return None;
    }
    let mut given = Values::new();
    for w in rest {
        let (k, v) = w.text.split_once('=')?;
        runbook.param(k)?;
        given.insert(k.to_owned(), v.to_owned());
    }
    let complete = runbook.params().all(|(name, _)| given.contains_key(name));
    (!complete).then_some((runbook, given))
}

/// A held PagerDuty write: run by its own command, never from a form.
pub fn is_held(runbook: &Runbook) -> bool {
    crate::domain::runbook::held_action(runbook.name()).is_some()
}

/// A parameter's expression as written in the configuration (the compiled one is anchored).
fn written<'a>(runbook: &'a Runbook, name: &str) -> &'a str {
    runbook
        .definition()
        .params
        .get(name)
        .map_or("", String::as_str)
}

/// The parameters of `runbook` in the order its usage names them, then any others.
pub fn params_in_order(runbook: &Runbook) -> Vec<&str> {
    let usage = &runbook.definition().usage;
    let mut out: Vec<&str> = Vec::new();
    let mut rest = usage.as_str();
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        if let Some((name, _)) = runbook.params().find(|(n, _)| *n == &after[..close])
            && !out.contains(&name)
        {
            out.push(name);
        }
        rest = &after[close + 1..];
    }
    for (name, _) in runbook.params() {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The form for a run of `runbook` by `user`: a select for a parameter whose expression is a
/// plain alternation, a text box otherwise with the expression as its hint, `given` filled in;
/// and a channel to answer in when `channel` is None.
pub fn runbook_form(
    services: &Services,
    runbook: &Runbook,
    user: &str,
    channel: Option<&str>,
    given: &Values,
) -> Form {
    let mut fields: Vec<Field> = params_in_order(runbook)
        .into_iter()
        .filter_map(|name| {
            runbook.param(name)?;
            let pattern = written(runbook, name);
            let field = Field::text(name, name).initial(given.get(name).cloned());
            Some(match form::alternatives(pattern) {
                Some(choices) => field.kind(FieldKind::Choice(choices)),
                None => field
                    .kind(FieldKind::Text {
                        multiline: false,
                        max: crate::domain::runbook::MAX_PARAM_LEN,
                    })
                    .hint(format!("must match {pattern}")),
            })
        })
        .collect();
    if channel.is_none() {
        fields.push(
            Field::text("channel", "Ask for approval in")
                .kind(FieldKind::Channel)
                .hint("the approval message and the job's thread go here"),
        );
    }
    let definition = runbook.definition();
    let intro = format!(
        "*{}*{}\n`{} {}`",
        escape(runbook.name()),
        definition
            .description
            .as_deref()
            .map(|d| format!(": {}", escape(d)))
            .unwrap_or_default(),
        escape(&services.slash),
        escape(&definition.usage)
    );
    let purpose = Purpose::Run {
        runbook: runbook.name().to_owned(),
        channel: channel.map(str::to_owned),
    };
    Form {
        sealed: services
            .links
            .seal(&purpose, user, OffsetDateTime::now_utc()),
        title: form::clip(&format!("Run {}", runbook.name()), form::MAX_TITLE),
        submit: "Ask to run".to_owned(),
        intro: Some(intro),
        fields,
    }
}

/// A form that only says something (no fields, nothing to submit).
pub fn notice(title: &str, text: &str) -> Form {
    Form {
        sealed: String::new(),
        title: form::clip(title, form::MAX_TITLE),
        submit: String::new(),
        intro: Some(escape(text)),
        fields: Vec::new(),
    }
}

/// What a runbook asked for without its parameters is told when no form can be opened: its
/// usage line and each parameter's rule.
pub fn usage_line(services: &Services, runbook: &Runbook) -> String {
    let rules: Vec<String> = params_in_order(runbook)
        .into_iter()
        .filter_map(|name| {
            runbook.param(name)?;
            let pattern = written(runbook, name);
            Some(match form::alternatives(pattern) {
                Some(choices) => format!("`{name}` is one of {}", choices.join(", ")),
                None => format!("`{name}` must match `{}`", escape(pattern)),
            })
        })
        .collect();
    format!(
        "Usage: `{} {}` ({}).",
        escape(&services.slash),
        escape(&runbook.definition().usage),
        rules.join("; ")
    )
}

/// The runbooks `user` may run (held writes aside), by name.
fn runnable<'a>(services: &'a Services, user: &str) -> Vec<&'a Runbook> {
    // Submitted as `run <runbook> …`: nothing for someone who may not use `run`.
    if services
        .catalogue
        .access
        .check(user, None, "run", &[])
        .is_err()
    {
        return Vec::new();
    }
    services
        .catalogue
        .runbooks
        .iter()
        .filter(|r| !is_held(r))
        .filter(|r| {
            services
                .catalogue
                .access
                .check(user, None, r.name(), &[])
                .is_ok()
        })
        .collect()
}

/// "Run a runbook": a select of the runbooks `user` may run and a channel; None when there is
/// none they may run.
pub fn pick_runbook_form(services: &Services, user: &str) -> Option<Form> {
    let names: Vec<String> = runnable(services, user)
        .iter()
        .map(|r| r.name().to_owned())
        .take(form::MAX_OPTIONS)
        .collect();
    if names.is_empty() {
        return None;
    }
    Some(Form {
        sealed: services
            .links
            .seal(&Purpose::PickRunbook, user, OffsetDateTime::now_utc()),
        title: "Run a runbook".to_owned(),
        submit: "Next".to_owned(),
        intro: None,
        fields: vec![
            Field::text("runbook", "Runbook").kind(FieldKind::Choice(names)),
            Field::text("channel", "Ask for approval in")
                .kind(FieldKind::Channel)
                .hint("the approval message and the job's thread go here"),
        ],
    })
}

/// "With comment…" on approval request `request`: approve or deny, and why.
pub async fn comment_form(
    services: &Services,
    user: &str,
    request: i64,
    channel: &str,
) -> Result<Form, String> {
    let found = services
        .store
        .approval_request(request)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "approval request not read");
            "The request could not be read just now; try again shortly.".to_owned()
        })?
        .ok_or_else(|| format!("There is no approval request #{request}."))?;
    if found.status != RequestStatus::Pending {
        return Err(format!(
            "Request #{request} is {} already; there is nothing to vote on.",
            found.status.as_str()
        ));
    }
    let purpose = Purpose::Comment {
        request,
        channel: channel.to_owned(),
    };
    Ok(Form {
        sealed: services
            .links
            .seal(&purpose, user, OffsetDateTime::now_utc()),
        title: form::clip(&format!("Request #{request}"), form::MAX_TITLE),
        submit: "Vote".to_owned(),
        intro: Some(format!(
            "{} asks to run *{}* on `{}`.",
            chat::mention(&found.requester),
            escape(&found.runbook),
            escape(&found.target)
        )),
        fields: vec![
            Field::text("decision", "Your vote")
                .kind(FieldKind::Choice(vec!["approve".into(), "deny".into()]))
                .initial(Some("approve".into())),
            Field::text("comment", "Comment")
                .kind(FieldKind::Text {
                    multiline: true,
                    max: form::MAX_COMMENT,
                })
                .hint("shown with your vote in the message, its thread, the job page and the audit trail"),
        ],
    })
}

/// "Page on-call about this": who to page, and a message prefilled with the one it is about
/// and a link to it.
pub fn page_form(services: &Services, user: &str, channel: &str, text: &str, link: &str) -> Form {
    let quoted = form::clip(text.trim(), 300);
    let message = if link.is_empty() {
        quoted
    } else {
        format!("{quoted} {link}")
    };
    Form {
        sealed: services.links.seal(
            &Purpose::Page {
                channel: channel.to_owned(),
            },
            user,
            OffsetDateTime::now_utc(),
        ),
        title: "Page on-call".to_owned(),
        submit: "Page".to_owned(),
        intro: Some("Opens a PagerDuty incident assigned to the person you choose, as `pager trigger` does.".to_owned()),
        fields: vec![
            Field::text("who", "Who to page").kind(FieldKind::Person),
            Field::text("message", "Message")
                .kind(FieldKind::Text {
                    multiline: true,
                    max: 1000,
                })
                .initial(Some(message)),
        ],
    }
}
