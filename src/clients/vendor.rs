//! What every vendor client shares: typed errors worded for chat, status mapping, JSON decoding
//! and capped pagination.

use std::time::Duration;

use reqwest::{Response, StatusCode, header::HeaderMap};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::{TransportError, TransportKind};

/// Most items we fetch for one answer; past this the answer says the list was cut.
pub const MAX_ITEMS: usize = 500;

/// Most pages we follow for one answer, whatever their size: a server that keeps saying
/// "more" cannot keep us fetching.
pub const MAX_PAGES: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    NotConfigured { variables: &'static str },
    Unauthorized,
    Forbidden { message: String },
    NotFound { what: String },
    RateLimited { resets: Option<OffsetDateTime> },
    Rejected { status: u16, message: String },
    Server { status: u16 },
    Timeout,
    Unreachable,
    Malformed { detail: String },
}

/// A vendor call that did not work, worded for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorError {
    pub vendor: &'static str,
    pub kind: ErrorKind,
}

impl std::fmt::Display for VendorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.vendor;
        match &self.kind {
            ErrorKind::NotConfigured { variables } => {
                write!(f, "{v} is not configured: set {variables}")
            }
            ErrorKind::Unauthorized => write!(f, "{v} rejected the token (401)"),
            ErrorKind::Forbidden { message } if message.is_empty() => {
                write!(
                    f,
                    "{v} refused the request (403): the token lacks permission"
                )
            }
            ErrorKind::Forbidden { message } => {
                write!(f, "{v} refused the request (403): {message}")
            }
            ErrorKind::NotFound { what } => write!(f, "{v} has no {what} (404)"),
            ErrorKind::RateLimited { resets: Some(at) } => {
                let hm = time::macros::format_description!("[hour]:[minute]");
                write!(
                    f,
                    "{v} rate limit reached, resets at {} UTC",
                    at.format(&hm).unwrap_or_default()
                )
            }
            ErrorKind::RateLimited { resets: None } => {
                write!(f, "{v} rate limit reached; try again in a minute")
            }
            ErrorKind::Rejected { status, message } if message.is_empty() => {
                write!(f, "{v} rejected the request ({status})")
            }
            ErrorKind::Rejected { status, message } => {
                write!(f, "{v} rejected the request ({status}): {message}")
            }
            ErrorKind::Server { status } => write!(
                f,
                "{v} is having trouble (HTTP {status}); try again shortly"
            ),
            ErrorKind::Timeout => write!(f, "{v} did not answer in time"),
            ErrorKind::Unreachable => write!(f, "cannot reach {v}"),
            ErrorKind::Malformed { .. } => write!(f, "{v} sent an answer I could not read"),
        }
    }
}

impl std::error::Error for VendorError {}

impl VendorError {
    pub fn new(vendor: &'static str, kind: ErrorKind) -> Self {
        Self { vendor, kind }
    }

    pub fn not_configured(vendor: &'static str, variables: &'static str) -> Self {
        Self::new(vendor, ErrorKind::NotConfigured { variables })
    }

    pub fn transport(vendor: &'static str, e: TransportError) -> Self {
        let kind = match e.kind {
            TransportKind::Timeout => ErrorKind::Timeout,
            TransportKind::Connect | TransportKind::Other => ErrorKind::Unreachable,
        };
        Self::new(vendor, kind)
    }

    pub fn malformed(vendor: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            vendor,
            ErrorKind::Malformed {
                detail: detail.into(),
            },
        )
    }
}

/// How each vendor tells us why: where its error message is, and when a rate limit resets.
pub trait Dialect {
    const NAME: &'static str;
    /// The human-readable message in an error body, if any.
    fn error_message(body: &serde_json::Value) -> Option<String>;
    /// When a rate limit resets, from the headers.
    fn rate_limit_reset(headers: &HeaderMap, now: OffsetDateTime) -> Option<OffsetDateTime>;
    /// Whether a 403 is really a rate limit (GitHub's primary limit is a 403).
    fn forbidden_is_rate_limit(_headers: &HeaderMap) -> bool {
        false
    }
}

/// Map a response to its body, or to a [`VendorError`]. `what` names the thing a 404 is about.
pub async fn checked<D: Dialect>(
    resp: Response,
    what: &str,
) -> Result<(HeaderMap, bytes::Bytes), VendorError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .map_err(|e| VendorError::transport(D::NAME, TransportError::from(e)))?;
    if status.is_success() {
        return Ok((headers, body));
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| D::error_message(&v))
        .map(|m| {
            // A vendor's words in our error text: masked, and short (200 characters at most).
            let m = crate::domain::redact::scrub(m.trim());
            match m.char_indices().nth(199) {
                Some((cut, _)) => format!("{}…", &m[..cut]),
                None => m.into_owned(),
            }
        })
        .unwrap_or_default();
    let now = OffsetDateTime::now_utc();
    let kind = match status {
        StatusCode::UNAUTHORIZED => ErrorKind::Unauthorized,
        StatusCode::FORBIDDEN if D::forbidden_is_rate_limit(&headers) => ErrorKind::RateLimited {
            resets: D::rate_limit_reset(&headers, now),
        },
        StatusCode::FORBIDDEN => ErrorKind::Forbidden { message },
        StatusCode::NOT_FOUND => ErrorKind::NotFound {
            what: what.to_owned(),
        },
        StatusCode::TOO_MANY_REQUESTS => ErrorKind::RateLimited {
            resets: D::rate_limit_reset(&headers, now).or_else(|| {
                retry_after(&headers)
                    .and_then(|d| now.checked_add(time::Duration::try_from(d).ok()?))
            }),
        },
        s if s.is_server_error() => ErrorKind::Server { status: s.as_u16() },
        s => ErrorKind::Rejected {
            status: s.as_u16(),
            message,
        },
    };
    Err(VendorError::new(D::NAME, kind))
}

/// Decode a successful body.
pub fn decode<T: DeserializeOwned>(vendor: &'static str, body: &[u8]) -> Result<T, VendorError> {
    serde_json::from_slice(body).map_err(|e| {
        tracing::warn!(vendor, error = %e, "unreadable vendor response");
        VendorError::malformed(vendor, e.to_string())
    })
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A list fetched across pages, possibly cut at [`MAX_ITEMS`] or a page cap.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// More existed than we fetched.
    pub truncated: bool,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            truncated: false,
        }
    }
}

/// Whether `next` (a pagination URL a vendor gave us) stays on the vendor's host, so a
/// response can never send our credentials elsewhere.
pub fn same_origin(base: &url::Url, next: &url::Url) -> bool {
    base.scheme() == next.scheme()
        && base.host_str() == next.host_str()
        && base.port_or_known_default() == next.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_well_and_carry_the_status() {
        let e = |kind| VendorError::new("PagerDuty", kind).to_string();
        assert_eq!(
            e(ErrorKind::Unauthorized),
            "PagerDuty rejected the token (401)"
        );
        assert_eq!(
            e(ErrorKind::NotConfigured {
                variables: "PAGERDUTY_API_TOKEN"
            }),
            "PagerDuty is not configured: set PAGERDUTY_API_TOKEN"
        );
        let at = time::macros::datetime!(2026-11-24 14:05:30 UTC);
        assert_eq!(
            e(ErrorKind::RateLimited { resets: Some(at) }),
            "PagerDuty rate limit reached, resets at 14:05 UTC"
        );
        assert_eq!(
            e(ErrorKind::Server { status: 503 }),
            "PagerDuty is having trouble (HTTP 503); try again shortly"
        );
        assert_eq!(
            e(ErrorKind::NotFound {
                what: "incident PX1".into()
            }),
            "PagerDuty has no incident PX1 (404)"
        );
    }

    #[test]
    fn pagination_links_must_stay_on_the_vendor_host() {
        let base = url::Url::parse("https://acme.zendesk.com/").unwrap();
        let ok = url::Url::parse("https://acme.zendesk.com/api/v2/search.json?page=2").unwrap();
        let evil = url::Url::parse("https://evil.example/api/v2/search.json?page=2").unwrap();
        let downgraded = url::Url::parse("http://acme.zendesk.com/api/v2/search.json").unwrap();
        assert!(same_origin(&base, &ok));
        assert!(!same_origin(&base, &evil));
        assert!(!same_origin(&base, &downgraded));
    }
}
