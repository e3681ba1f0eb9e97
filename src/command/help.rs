//! `help`, generated from the registry and showing only what the caller may run.

use super::{CommandSpec, Registry};
use crate::chat::{self, Message};

/// Overall help (`topic` = None) or help for a family or command.
pub fn render(
    registry: &Registry,
    slash: &str,
    may_run: impl Fn(&CommandSpec) -> bool,
    topic: Option<&str>,
) -> Message {
    let runnable: Vec<&CommandSpec> = registry
        .specs()
        .iter()
        .filter(|s| !s.hidden && may_run(s))
        .collect();
    let topic = topic
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty());
    let selected: Vec<&CommandSpec> = match &topic {
        None => runnable.clone(),
        Some(t) => runnable
            .iter()
            .copied()
            .filter(|s| s.family == *t || s.name == *t || s.name.starts_with(&format!("{t} ")))
            .collect(),
    };
    let mut families: Vec<&str> = Vec::new();
    for s in &runnable {
        if !families.contains(&s.family.as_str()) {
            families.push(&s.family);
        }
    }
    if selected.is_empty() {
        let text = match &topic {
            Some(t) => format!(
                "There is no help topic `{}` among the commands you may run. Topics: {}.",
                chat::escape(t),
                topics_list(&families)
            ),
            None => {
                "There are no commands you may run. Ask an admin to add you to a group.".to_owned()
            }
        };
        return Message::text(text);
    }

    let title = match &topic {
        None => "Pantheon commands".to_owned(),
        Some(t) => format!("Help: {t}"),
    };
    let mut blocks = vec![chat::header(&title)];
    let mut fallback = vec![chat::escape(&title)];
    for family in &families {
        let lines: Vec<String> = selected
            .iter()
            .filter(|s| s.family == *family)
            .map(|s| line(slash, s))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let mut heading = vec![format!("*{family}*")];
        heading.extend(lines.iter().cloned());
        blocks.extend(chat::sections_of_lines(&heading));
        fallback.push(String::new());
        fallback.push(family.to_string());
        fallback.extend(lines.iter().map(|l| l.replace('`', "")));
    }
    let footer = match &topic {
        None => format!(
            "`{slash} help &lt;topic&gt;` for one topic: {}. Answers marked _(in channel)_ are posted for everyone.",
            topics_list(&families)
        ),
        Some(_) => format!("`{slash} help` lists every command you may run."),
    };
    blocks.push(chat::context(&footer));
    fallback.push(String::new());
    fallback.push(footer.replace('`', ""));
    Message::blocks(fallback.join("\n"), blocks)
}

fn line(slash: &str, spec: &CommandSpec) -> String {
    let channel = match spec.visibility {
        chat::Visibility::InChannel => " _(in channel)_",
        chat::Visibility::Ephemeral => "",
    };
    format!(
        "`{slash} {}` — {}{channel}",
        chat::escape(&spec.usage.display()),
        chat::escape(&spec.summary)
    )
}

fn topics_list(families: &[&str]) -> String {
    families
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
