//! PagerDuty REST API v2: the calls the `pager` commands make.
//!
//! Every request carries `Authorization: Token token=…`, the versioned `Accept` (with
//! `application/json` as well, which the published spec's mocks need) and
//! `Content-Type: application/json`, GETs included, as the spec requires; writes that act as a
//! person carry `From: <their email>`.

use reqwest::{Method, RequestBuilder, header::HeaderMap};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use url::Url;

use super::{
    Outbound,
    vendor::{self, Dialect, Listing, MAX_ITEMS, MAX_PAGES, VendorError, checked, decode},
};

pub const NAME: &str = "PagerDuty";
const PAGE: usize = 100;

struct Pd;

impl Dialect for Pd {
    const NAME: &'static str = NAME;

    fn error_message(body: &serde_json::Value) -> Option<String> {
        let error = body.get("error")?;
        let message = error.get("message")?.as_str()?.to_owned();
        let details: Vec<&str> = error
            .get("errors")
            .and_then(|e| e.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        Some(if details.is_empty() {
            message
        } else {
            format!("{message}: {}", details.join("; "))
        })
    }

    fn rate_limit_reset(headers: &HeaderMap, now: OffsetDateTime) -> Option<OffsetDateTime> {
        // `ratelimit-reset` is seconds until the window resets.
        let secs: i64 = headers
            .get("ratelimit-reset")?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        now.checked_add(time::Duration::seconds(secs))
    }
}

/// A reference to another object, as PagerDuty embeds them.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Reference {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
}

impl Reference {
    pub fn name(&self) -> &str {
        self.summary.as_deref().unwrap_or(&self.id)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Incident {
    pub id: String,
    #[serde(default)]
    pub incident_number: Option<u64>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub urgency: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub service: Option<Reference>,
    #[serde(default)]
    pub assignments: Vec<Assignment>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Assignment {
    pub assignee: Reference,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Oncall {
    #[serde(default)]
    pub escalation_policy: Option<Reference>,
    #[serde(default)]
    pub escalation_level: Option<u32>,
    #[serde(default)]
    pub schedule: Option<Reference>,
    #[serde(default)]
    pub user: Option<Reference>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Schedule {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub final_schedule: Option<SubSchedule>,
}

impl Schedule {
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.summary.as_deref())
            .unwrap_or(&self.id)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SubSchedule {
    #[serde(default)]
    pub rendered_schedule_entries: Vec<ScheduleEntry>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ScheduleEntry {
    #[serde(default)]
    pub user: Option<Reference>,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Service {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
}

impl Service {
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.summary.as_deref())
            .unwrap_or(&self.id)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MaintenanceWindow {
    pub id: String,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end_time: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Override {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}

#[derive(Deserialize)]
struct OverrideResult {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    errors: Vec<String>,
    #[serde(rename = "override")]
    created: Override,
}

/// One page of a classic offset-paginated list: the collection under its key, and `more`.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    more: Option<bool>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone)]
pub struct PagerDuty {
    out: Outbound,
    base: Url,
    token: SecretString,
}

impl std::fmt::Debug for PagerDuty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDuty")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl PagerDuty {
    pub fn new(out: Outbound, base: Url, token: SecretString) -> Self {
        Self { out, base, token }
    }

    fn request(&self, client: &reqwest::Client, method: Method, path: &str) -> RequestBuilder {
        let url = self.base.join(path).unwrap_or_else(|_| self.base.clone());
        client
            .request(method, url)
            .header(
                "Authorization",
                format!("Token token={}", self.token.expose_secret()),
            )
            .header(
                "Accept",
                "application/vnd.pagerduty+json;version=2, application/json",
            )
            .header("Content-Type", "application/json")
    }

    /// A call safe to repeat, retried on 429 and 5xx.
    async fn send(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<bytes::Bytes, VendorError> {
        self.call(what, build, true).await
    }

    /// A call that creates something: not repeated after a timeout or a 5xx.
    async fn create(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<bytes::Bytes, VendorError> {
        self.call(what, build, false).await
    }

    async fn call(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        idempotent: bool,
    ) -> Result<bytes::Bytes, VendorError> {
        let sent = if idempotent {
            self.out.send(build).await
        } else {
            self.out.send_once(build).await
        };
        let resp = sent.map_err(|e| VendorError::transport(NAME, e))?;
        checked::<Pd>(resp, what).await.map(|(_, body)| body)
    }

    /// Fetch every page of `path` (up to [`MAX_ITEMS`]), items under `key`.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        query: &[(&str, String)],
    ) -> Result<Listing<T>, VendorError> {
        let mut listing = Listing::default();
        let mut offset = 0usize;
        for _ in 0..MAX_PAGES {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("limit", PAGE.to_string()));
            q.push(("offset", offset.to_string()));
            let body = self
                .send(key, |c| self.request(c, Method::GET, path).query(&q))
                .await?;
            let page: Page = decode(NAME, &body)?;
            let items =
                page.rest.get(key).cloned().ok_or_else(|| {
                    VendorError::malformed(NAME, format!("no `{key}` in the answer"))
                })?;
            let items: Vec<T> = serde_json::from_value(items)
                .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
            let got = items.len();
            listing.items.extend(items);
            offset += got;
            let more = page.more.unwrap_or(false) && got > 0;
            if !more {
                return Ok(listing);
            }
            if listing.items.len() >= MAX_ITEMS {
                break;
            }
        }
        listing.truncated = true;
        Ok(listing)
    }

    /// Incidents with the given statuses, optionally only those assigned to `user_ids`.
    pub async fn incidents(
        &self,
        statuses: &[&str],
        user_ids: &[&str],
    ) -> Result<Listing<Incident>, VendorError> {
        let mut query: Vec<(&str, String)> = statuses
            .iter()
            .map(|s| ("statuses[]", (*s).to_owned()))
            .collect();
        query.extend(user_ids.iter().map(|u| ("user_ids[]", (*u).to_owned())));
        query.push(("sort_by", "created_at:desc".to_owned()));
        self.list("incidents", "incidents", &query).await
    }

    /// Set the status of several incidents at once, as the person with email `from`.
    pub async fn update_incidents(
        &self,
        from: &str,
        ids: &[String],
        status: &str,
    ) -> Result<Vec<Incident>, VendorError> {
        let mut updated = Vec::new();
        // PagerDuty takes at most 250 per call.
        for chunk in ids.chunks(250) {
            let body = json!({
                "incidents": chunk.iter().map(|id| json!({"id": id, "type": "incident_reference", "status": status})).collect::<Vec<_>>()
            });
            let answer = self
                .send("incidents", |c| {
                    self.request(c, Method::PUT, "incidents")
                        .header("From", from)
                        .json(&body)
                })
                .await?;
            #[derive(Deserialize)]
            struct Updated {
                incidents: Vec<Incident>,
            }
            updated.extend(decode::<Updated>(NAME, &answer)?.incidents);
        }
        Ok(updated)
    }

    /// Create an incident on `service_id` assigned to `assignee_id`.
    pub async fn create_incident(
        &self,
        from: &str,
        service_id: &str,
        title: &str,
        assignee_id: &str,
    ) -> Result<Incident, VendorError> {
        let body = json!({"incident": {
            "type": "incident",
            "title": title,
            "service": {"id": service_id, "type": "service_reference"},
            "assignments": [{"assignee": {"id": assignee_id, "type": "user_reference"}}],
        }});
        let answer = self
            .create("service", |c| {
                self.request(c, Method::POST, "incidents")
                    .header("From", from)
                    .json(&body)
            })
            .await?;
        #[derive(Deserialize)]
        struct Created {
            incident: Incident,
        }
        Ok(decode::<Created>(NAME, &answer)?.incident)
    }

    /// Who is on call. `earliest` keeps one entry per policy, level and user.
    pub async fn oncalls(
        &self,
        user_ids: &[&str],
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
        earliest: bool,
    ) -> Result<Listing<Oncall>, VendorError> {
        let mut query: Vec<(&str, String)> = user_ids
            .iter()
            .map(|u| ("user_ids[]", (*u).to_owned()))
            .collect();
        if let Some(s) = since {
            query.push(("since", rfc3339(s)));
        }
        if let Some(u) = until {
            query.push(("until", rfc3339(u)));
        }
        if earliest {
            query.push(("earliest", "true".into()));
        }
        self.list("oncalls", "oncalls", &query).await
    }

    pub async fn schedules(&self, search: Option<&str>) -> Result<Listing<Schedule>, VendorError> {
        let query: Vec<(&str, String)> = search
            .map(|q| vec![("query", q.to_owned())])
            .unwrap_or_default();
        self.list("schedules", "schedules", &query).await
    }

    /// One schedule with its final (rendered) entries between `since` and `until`.
    pub async fn schedule(
        &self,
        id: &str,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Schedule, VendorError> {
        let path = format!("schedules/{}", path_segment(id));
        let query = [("since", rfc3339(since)), ("until", rfc3339(until))];
        let body = self
            .send(&format!("schedule {id}"), |c| {
                self.request(c, Method::GET, &path).query(&query)
            })
            .await?;
        #[derive(Deserialize)]
        struct One {
            schedule: Schedule,
        }
        Ok(decode::<One>(NAME, &body)?.schedule)
    }

    /// Put `user_id` on call on schedule `schedule_id` from `start` to `end`.
    pub async fn create_override(
        &self,
        schedule_id: &str,
        user_id: &str,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> Result<Override, VendorError> {
        let path = format!("schedules/{}/overrides", path_segment(schedule_id));
        let body = json!({"overrides": [{
            "start": rfc3339(start),
            "end": rfc3339(end),
            "user": {"id": user_id, "type": "user_reference"},
        }]});
        let answer = self
            .create(&format!("schedule {schedule_id}"), |c| {
                self.request(c, Method::POST, &path).json(&body)
            })
            .await?;
        // A 201 can still carry per-override failures.
        let results: Vec<OverrideResult> = decode(NAME, &answer)?;
        let first = results
            .into_iter()
            .next()
            .ok_or_else(|| VendorError::malformed(NAME, "no override in the answer"))?;
        match first.status {
            Some(status) if status >= 400 => Err(VendorError::new(
                NAME,
                vendor::ErrorKind::Rejected {
                    status,
                    message: first.errors.join("; "),
                },
            )),
            _ => Ok(first.created),
        }
    }

    pub async fn users(&self, search: &str) -> Result<Listing<User>, VendorError> {
        self.list("users", "users", &[("query", search.to_owned())])
            .await
    }

    /// The user with exactly this email (PagerDuty's query is a substring match).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, VendorError> {
        let users = self.users(email).await?;
        Ok(users.items.into_iter().find(|u| {
            u.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        }))
    }

    pub async fn services(&self, search: Option<&str>) -> Result<Listing<Service>, VendorError> {
        let query: Vec<(&str, String)> = search
            .map(|q| vec![("query", q.to_owned())])
            .unwrap_or_default();
        self.list("services", "services", &query).await
    }

    pub async fn create_maintenance_window(
        &self,
        from: &str,
        service_ids: &[String],
        start: OffsetDateTime,
        end: OffsetDateTime,
        description: &str,
    ) -> Result<MaintenanceWindow, VendorError> {
        let body = json!({"maintenance_window": {
            "type": "maintenance_window",
            "start_time": rfc3339(start),
            "end_time": rfc3339(end),
            "description": description,
            "services": service_ids.iter().map(|id| json!({"id": id, "type": "service_reference"})).collect::<Vec<_>>(),
        }});
        let answer = self
            .create("service", |c| {
                self.request(c, Method::POST, "maintenance_windows")
                    .header("From", from)
                    .json(&body)
            })
            .await?;
        #[derive(Deserialize)]
        struct Created {
            maintenance_window: MaintenanceWindow,
        }
        Ok(decode::<Created>(NAME, &answer)?.maintenance_window)
    }
}

/// An id from chat as one path segment (ids are alphanumeric; anything else is encoded).
fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}
