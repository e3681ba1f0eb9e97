//! Zendesk Support API: ticket search, counts and one ticket.
//!
//! Auth is HTTP Basic with `{email}/token` and the API token. Search pages are followed through
//! `next_page` only while it stays on the configured host.

use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

use super::{
    Outbound,
    vendor::{Dialect, Listing, MAX_ITEMS, MAX_PAGES, VendorError, checked, decode, same_origin},
};

pub const NAME: &str = "Zendesk";

struct Zd;

impl Dialect for Zd {
    const NAME: &'static str = NAME;

    fn error_message(body: &serde_json::Value) -> Option<String> {
        // `{"error": "invalid", "description": "..."}` or `{"error": {"title", "message"}}`.
        if let Some(d) = body.get("description").and_then(|d| d.as_str()) {
            return Some(d.to_owned());
        }
        match body.get("error")? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o
                .get("message")
                .or_else(|| o.get("title"))
                .and_then(|m| m.as_str())
                .map(str::to_owned),
            _ => None,
        }
    }

    fn rate_limit_reset(_headers: &HeaderMap, _now: OffsetDateTime) -> Option<OffsetDateTime> {
        None // Zendesk says Retry-After, which the shared code reads.
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Ticket {
    pub id: u64,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub requester_id: Option<u64>,
    #[serde(default)]
    pub assignee_id: Option<u64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct User {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
}

/// Tickets with the people they mention.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tickets {
    pub listing: Listing<Ticket>,
    pub users: Vec<User>,
    /// Zendesk's own count of matches (may exceed what we fetched).
    pub count: Option<u64>,
}

impl Tickets {
    pub fn user_name(&self, id: Option<u64>) -> Option<&str> {
        let id = id?;
        self.users
            .iter()
            .find(|u| u.id == id)
            .and_then(|u| u.name.as_deref())
    }
}

#[derive(Clone)]
pub struct Zendesk {
    out: Outbound,
    base: Url,
    email: String,
    token: SecretString,
}

impl std::fmt::Debug for Zendesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zendesk")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Zendesk {
    pub fn new(out: Outbound, base: Url, email: String, token: SecretString) -> Self {
        Self {
            out,
            base,
            email,
            token,
        }
    }

    /// The agent-interface link for a ticket.
    pub fn ticket_link(&self, id: u64) -> String {
        self.base
            .join(&format!("agent/tickets/{id}"))
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    async fn get(&self, url: Url, what: &str) -> Result<bytes::Bytes, VendorError> {
        let user = format!("{}/token", self.email);
        let resp = self
            .out
            .send(|c| {
                c.get(url.clone())
                    .basic_auth(&user, Some(self.token.expose_secret()))
                    .header("Accept", "application/json")
            })
            .await
            .map_err(|e| VendorError::transport(NAME, e))?;
        checked::<Zd>(resp, what).await.map(|(_, body)| body)
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.join(path).unwrap_or_else(|_| self.base.clone());
        url.query_pairs_mut().extend_pairs(query);
        url
    }

    /// Tickets matching a search query (e.g. `type:ticket status:open`), newest first.
    pub async fn search_tickets(&self, query: &str) -> Result<Tickets, VendorError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            results: Vec<serde_json::Value>,
            #[serde(default)]
            users: Vec<User>,
            #[serde(default)]
            next_page: Option<String>,
            #[serde(default)]
            count: Option<u64>,
        }
        let mut tickets = Tickets::default();
        let mut url = self.url(
            "api/v2/search.json",
            &[
                ("query", query),
                ("sort_by", "created_at"),
                ("sort_order", "desc"),
                ("per_page", "100"),
                ("include", "tickets(users)"),
            ],
        );
        for _ in 0..MAX_PAGES {
            let body = self.get(url.clone(), "search").await?;
            let page: Page = decode(NAME, &body)?;
            tickets.count = tickets.count.or(page.count);
            for result in page.results {
                if result
                    .get("result_type")
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| t != "ticket")
                {
                    continue;
                }
                let ticket: Ticket = serde_json::from_value(result)
                    .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
                tickets.listing.items.push(ticket);
            }
            tickets.users.extend(page.users);
            let next = page.next_page.and_then(|n| Url::parse(&n).ok());
            match next {
                Some(next)
                    if tickets.listing.items.len() < MAX_ITEMS
                        && same_origin(&self.base, &next) =>
                {
                    url = next
                }
                Some(next) => {
                    if !same_origin(&self.base, &next) {
                        tracing::warn!(
                            host = next.host_str().unwrap_or(""),
                            "ignoring a next_page on another host"
                        );
                    }
                    break;
                }
                None => return Ok(tickets),
            }
        }
        tickets.listing.truncated = true;
        Ok(tickets)
    }

    /// How many tickets match a search query.
    pub async fn count(&self, query: &str) -> Result<u64, VendorError> {
        let body = self
            .get(
                self.url("api/v2/search/count.json", &[("query", query)]),
                "search",
            )
            .await?;
        // `{"count": 6}`; tolerate `{"count": {"value": 6}}` as the tickets/count endpoint has.
        let value: serde_json::Value = decode(NAME, &body)?;
        let count = &value["count"];
        count
            .as_u64()
            .or_else(|| count["value"].as_u64())
            .ok_or_else(|| VendorError::malformed(NAME, "no count in the answer"))
    }

    /// One ticket with its requester and assignee.
    pub async fn ticket(&self, id: u64) -> Result<(Ticket, Vec<User>), VendorError> {
        #[derive(Deserialize)]
        struct One {
            ticket: Ticket,
            #[serde(default)]
            users: Vec<User>,
        }
        let url = self.url(
            &format!("api/v2/tickets/{id}.json"),
            &[("include", "users")],
        );
        let body = self.get(url, &format!("ticket #{id}")).await?;
        let one: One = decode(NAME, &body)?;
        Ok((one.ticket, one.users))
    }
}
