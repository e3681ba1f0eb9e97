//! Forms as Slack modals and the home tab as a Slack view: [`Form`] rendered as a `modal`
//! view (each field an `input` block whose `block_id` is the field's name), a submission's
//! `view.state.values` read back into field name → value, and per-field errors answered as
//! `response_action: errors`.

use serde_json::{Value, json};

use crate::{
    chat::Block,
    domain::form::{self, Field, FieldErrors, FieldKind, Form, Values},
};

/// The `callback_id` of every modal we open; what it does is in its sealed `private_metadata`.
pub const CALLBACK_ID: &str = "pantheon_form";

/// Every input's `action_id` (its block's id is the field's name).
const VALUE: &str = "value";

fn plain(text: &str, max: usize) -> Value {
    json!({"type": "plain_text", "text": form::clip(text, max), "emoji": true})
}

/// A modal view of `form`.
pub fn modal(form: &Form) -> Value {
    let mut blocks: Vec<Value> = Vec::new();
    if let Some(intro) = &form.intro {
        blocks.push(super::blocks::block(&crate::chat::section(intro)));
    }
    blocks.extend(form.fields.iter().map(input));
    let mut view = json!({
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": form.sealed,
        "title": plain(&form.title, form::MAX_TITLE),
        "close": plain(if form.fields.is_empty() { "Close" } else { "Cancel" }, form::MAX_TITLE),
        "blocks": blocks,
    });
    // A form with fields has a submit button; a notice has none.
    if !form.fields.is_empty() {
        view["submit"] = plain(&form.submit, form::MAX_TITLE);
    }
    view
}

fn input(field: &Field) -> Value {
    let element = match &field.kind {
        FieldKind::Text { multiline, max } => {
            let mut e = json!({
                "type": "plain_text_input", "action_id": VALUE,
                "multiline": multiline, "max_length": max,
            });
            if let Some(v) = &field.initial {
                e["initial_value"] = json!(form::clip(v, *max));
            }
            e
        }
        FieldKind::Choice(choices) => {
            let option = |c: &String| json!({"text": plain(c, 75), "value": c});
            let mut e = json!({
                "type": "static_select", "action_id": VALUE,
                "options": choices.iter().take(form::MAX_OPTIONS).map(option).collect::<Vec<_>>(),
            });
            if let Some(v) = field.initial.as_ref().filter(|v| choices.contains(v)) {
                e["initial_option"] = option(v);
            }
            e
        }
        FieldKind::Channel => {
            let mut e = json!({
                "type": "conversations_select", "action_id": VALUE,
                "default_to_current_conversation": true,
                "filter": {"include": ["public", "private"], "exclude_bot_users": true},
            });
            if let Some(v) = &field.initial {
                e["initial_conversation"] = json!(v);
            }
            e
        }
        FieldKind::Person => {
            let mut e = json!({"type": "users_select", "action_id": VALUE});
            if let Some(v) = &field.initial {
                e["initial_user"] = json!(v);
            }
            e
        }
    };
    let mut out = json!({
        "type": "input",
        "block_id": field.name,
        "label": plain(&field.label, 2000),
        "optional": field.optional,
        "element": element,
    });
    if let Some(hint) = &field.hint {
        out["hint"] = plain(hint, 2000);
    }
    out
}

/// The values of a submitted modal (`view.state.values`): field name → value, for every
/// field with one (an empty text or an unset select is left out).
pub fn values(state: &Value) -> Values {
    let mut out = Values::new();
    let Some(blocks) = state.get("values").and_then(Value::as_object) else {
        return out;
    };
    for (block_id, actions) in blocks {
        let Some(action) = actions.get(VALUE) else {
            continue;
        };
        let value = action["value"]
            .as_str()
            .or_else(|| action["selected_option"]["value"].as_str())
            .or_else(|| action["selected_conversation"].as_str())
            .or_else(|| action["selected_user"].as_str())
            .or_else(|| action["selected_channel"].as_str());
        if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
            out.insert(block_id.clone(), v.to_owned());
        }
    }
    out
}

/// The answer to a submission with errors: each beside its field. Slack shows them as plain
/// text, so what our markup escaped reads as typed.
pub fn errors(errors: &FieldErrors) -> Value {
    let errors: serde_json::Map<String, Value> = errors
        .iter()
        .map(|(field, text)| {
            (
                field.clone(),
                json!(form::clip(&crate::chat::unescape(text), 2000)),
            )
        })
        .collect();
    json!({"response_action": "errors", "errors": errors})
}

/// The answer to a submission that leads to another form: it takes the modal's place.
pub fn update(form: &Form) -> Value {
    json!({"response_action": "update", "view": modal(form)})
}

/// A home tab of `blocks`.
pub fn home(blocks: &[Block]) -> Value {
    json!({"type": "home", "blocks": super::blocks::blocks(blocks)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_reads_back_as_values() {
        // Bolt for Python's view_submission fixture, and a select from its Socket Mode one.
        let submitted: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/slack/view_submission.json"
        ))
        .unwrap();
        assert!(
            values(&submitted["view"]["state"]).is_empty(),
            "its input's action_id is not ours"
        );
        let state = json!({"values": {
            "app": {"value": {"type": "plain_text_input", "value": " api "}},
            "env": {"value": {"type": "static_select", "selected_option": {"text": {"type": "plain_text", "text": "production"}, "value": "production"}}},
            "channel": {"value": {"type": "conversations_select", "selected_conversation": "C1"}},
            "who": {"value": {"type": "users_select", "selected_user": "U9"}},
            "empty": {"value": {"type": "plain_text_input", "value": null}},
            "other": {"theirs": {"type": "plain_text_input", "value": "x"}}
        }});
        assert_eq!(
            values(&state).into_iter().collect::<Vec<_>>(),
            [
                ("app".to_owned(), "api".to_owned()),
                ("channel".to_owned(), "C1".to_owned()),
                ("env".to_owned(), "production".to_owned()),
                ("who".to_owned(), "U9".to_owned()),
            ]
        );
    }

    #[test]
    fn errors_are_answered_beside_their_fields() {
        let mut e = FieldErrors::new();
        e.insert("version".into(), "`1 &amp; 2` is not valid".into());
        assert_eq!(
            errors(&e),
            json!({"response_action": "errors", "errors": {"version": "`1 & 2` is not valid"}})
        );
    }
}
