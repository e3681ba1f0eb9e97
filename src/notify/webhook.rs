//! A verified webhook, parsed once: which source sent it, its delivery id (what a redelivery
//! is recognised by), and the event as a type ([`super::payload`]). The HTTP edge verifies the signature first; these parsers
//! see only a body that passed, and the headers as a lookup.

use serde_json::Value;

use super::{
    format::{self, Formatted},
    payload::{GitHubEvent, PagerDutyEvent, ZendeskEvent, read},
};

/// One webhook delivery, by source.
#[derive(Debug, Clone, PartialEq)]
pub enum Webhook {
    GitHub {
        /// The event (`X-GitHub-Event`, e.g. `pull_request`), read from the payload.
        event: Box<GitHubEvent>,
        /// `X-GitHub-Delivery`.
        delivery: String,
        /// The payload as received, for the store.
        payload: Value,
    },
    PagerDuty {
        event: Box<PagerDutyEvent>,
        /// The event's id, inside the signed body (`X-Webhook-Id` is not signed, and only a
        /// fallback).
        delivery: String,
        payload: Value,
    },
    Zendesk {
        event: Box<ZendeskEvent>,
        delivery: String,
        payload: Value,
    },
}

/// The body as JSON, with NUL taken out of its strings (it is stored, and Postgres `jsonb`
/// cannot hold one: a signed delivery with `\u0000` in it would otherwise get a 503 forever).
fn json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body)
        .map(crate::domain::redact::json_without_nul)
        .map_err(|e| format!("the body is not JSON: {e}"))
}

impl Webhook {
    /// A GitHub delivery, or `None` for GitHub checking that the hook works (a `ping`: answered,
    /// not stored). A hook may be set to send a form (`payload=<json>`) instead of JSON.
    pub fn github<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
    ) -> Result<Option<Self>, String> {
        let event = header("x-github-event").ok_or("missing X-GitHub-Event")?;
        if event == "ping" {
            return Ok(None);
        }
        let delivery = header("x-github-delivery").ok_or("missing X-GitHub-Delivery")?;
        let form = header("content-type")
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        let payload = if form {
            match form_urlencoded::parse(body).find(|(k, _)| k == "payload") {
                Some((_, v)) => json(v.as_bytes())?,
                None => return Err("no `payload` field".into()),
            }
        } else {
            json(body)?
        };
        if !payload.is_object() {
            return Err("the payload is not a JSON object".into());
        }
        Ok(Some(Webhook::GitHub {
            event: Box::new(GitHubEvent::read(event, &payload)),
            delivery: delivery.to_owned(),
            payload,
        }))
    }

    pub fn pagerduty<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
    ) -> Result<Option<Self>, String> {
        let payload = json(body)?;
        let delivery = payload["event"]["id"]
            .as_str()
            .or_else(|| header("x-webhook-id"))
            .ok_or("no X-Webhook-Id and no event.id")?
            .to_owned();
        Ok(Some(Webhook::PagerDuty {
            event: Box::new(read(&payload)),
            delivery,
            payload,
        }))
    }

    pub fn zendesk<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
    ) -> Result<Option<Self>, String> {
        let payload = json(body)?;
        let delivery = payload["id"]
            .as_str()
            .or_else(|| header("x-zendesk-webhook-invocation-id"))
            .ok_or("no event id")?
            .to_owned();
        Ok(Some(Webhook::Zendesk {
            event: Box::new(read(&payload)),
            delivery,
            payload,
        }))
    }

    /// `github`, `pagerduty` or `zendesk`.
    pub fn source(&self) -> &'static str {
        match self {
            Webhook::GitHub { .. } => "github",
            Webhook::PagerDuty { .. } => "pagerduty",
            Webhook::Zendesk { .. } => "zendesk",
        }
    }

    /// The delivery id, what a redelivery is recognised by.
    pub fn delivery_id(&self) -> &str {
        match self {
            Webhook::GitHub { delivery, .. }
            | Webhook::PagerDuty { delivery, .. }
            | Webhook::Zendesk { delivery, .. } => delivery,
        }
    }

    /// The payload, as stored.
    pub fn payload(&self) -> &Value {
        match self {
            Webhook::GitHub { payload, .. }
            | Webhook::PagerDuty { payload, .. }
            | Webhook::Zendesk { payload, .. } => payload,
        }
    }

    /// The chat message for it. `ticket_link` builds a Zendesk ticket's agent link when Zendesk
    /// is configured.
    pub fn format(&self, ticket_link: impl Fn(&str) -> Option<String>) -> Formatted {
        match self {
            Webhook::GitHub { event, .. } => format::github_event(event),
            Webhook::PagerDuty { event, .. } => format::pagerduty_event(event),
            Webhook::Zendesk { event, .. } => format::zendesk_event(event, ticket_link),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn each_source_names_its_delivery() {
        let gh = Webhook::github(
            headers(&[("x-github-event", "push"), ("x-github-delivery", "d1")]),
            br#"{"ref":"refs/heads/main"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(gh.source(), "github");
        assert_eq!(gh.delivery_id(), "d1");
        let form = Webhook::github(
            headers(&[
                ("x-github-event", "push"),
                ("x-github-delivery", "d2"),
                ("content-type", "application/x-www-form-urlencoded"),
            ]),
            b"payload=%7B%22a%22%3A1%7D",
        )
        .unwrap()
        .unwrap();
        assert_eq!(form.payload()["a"], 1);
        assert_eq!(
            Webhook::github(headers(&[("x-github-event", "ping")]), b""),
            Ok(None)
        );
        // The signed id wins over the unsigned header.
        let pd = Webhook::pagerduty(
            headers(&[("x-webhook-id", "unsigned")]),
            br#"{"event":{"id":"signed"}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((pd.source(), pd.delivery_id()), ("pagerduty", "signed"));
        let zd = Webhook::zendesk(
            headers(&[("x-zendesk-webhook-invocation-id", "inv1")]),
            br#"{"type":"zen:event-type:ticket.created"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((zd.source(), zd.delivery_id()), ("zendesk", "inv1"));
    }

    #[test]
    fn what_is_missing_is_said() {
        let none = headers(&[]);
        assert_eq!(
            Webhook::github(&none, b"{}"),
            Err("missing X-GitHub-Event".into())
        );
        assert_eq!(
            Webhook::github(headers(&[("x-github-event", "push")]), b"{}"),
            Err("missing X-GitHub-Delivery".into())
        );
        let gh = headers(&[("x-github-event", "push"), ("x-github-delivery", "d")]);
        assert_eq!(
            Webhook::github(&gh, b"[1]"),
            Err("the payload is not a JSON object".into())
        );
        assert!(Webhook::pagerduty(&none, b"not json").is_err());
        assert_eq!(
            Webhook::pagerduty(&none, b"{}"),
            Err("no X-Webhook-Id and no event.id".into())
        );
        assert_eq!(Webhook::zendesk(&none, b"{}"), Err("no event id".into()));
    }
}
