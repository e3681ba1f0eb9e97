//! `POST /webhooks/{github,pagerduty,zendesk}`: verify over the raw bytes (the [`Verified`]
//! extractor), parse into a [`Webhook`], store (a redelivery is acknowledged and not posted
//! again), route, queue. Every accepted delivery is stored before we answer 2xx; if it cannot
//! be stored the sender gets a 503 and retries.

use std::time::Duration;

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::AppState;
use crate::{
    config::Settings,
    domain::outbox::Recorded,
    error::ApiError,
    notify::webhook::Webhook,
    signature::{self, HmacKey, SignatureError},
};

/// GitHub sends up to 25 MB; we take 5 MiB (pushes and pull requests are far smaller).
pub const GITHUB_BODY_LIMIT: usize = 5 * 1024 * 1024;
/// PagerDuty guarantees 55 KB and sends at most 256 KB; Zendesk bodies are small too.
pub const SMALL_WEBHOOK_LIMIT: usize = 1024 * 1024;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get(name).map(HeaderValue::as_bytes)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn keys(secrets: &[secrecy::SecretString]) -> Vec<HmacKey> {
    use secrecy::ExposeSecret as _;
    secrets
        .iter()
        .map(|s| HmacKey::new(s.expose_secret().as_bytes()))
        .collect()
}

fn refuse(source: &'static str, e: SignatureError) -> Response {
    crate::telemetry::record_signature_failure(
        source,
        match e {
            SignatureError::MissingSignature | SignatureError::MissingTimestamp => "missing",
            SignatureError::MalformedSignature | SignatureError::MalformedTimestamp => "malformed",
            SignatureError::StaleTimestamp => "stale",
            SignatureError::Mismatch => "mismatch",
        },
    );
    ApiError::Unauthorized(e).into_response()
}

fn not_configured(source: &'static str, variable: &str) -> Response {
    tracing::warn!(
        source,
        variable,
        "webhook refused: no secret configured to verify it"
    );
    crate::telemetry::record_signature_failure(source, "not_configured");
    (StatusCode::UNAUTHORIZED, "invalid signature\n").into_response()
}

/// A webhook source: where its secrets are, how its signature is checked, how its body reads.
pub trait Source {
    const NAME: &'static str;
    /// The variable that holds its secret(s).
    const SECRET: &'static str;
    /// How long storing a delivery may take before it is answered 503 (the sender retries, or
    /// is told in time that it failed): some margin under the time the sender waits.
    const PATIENCE: Duration;
    fn secrets(settings: &Settings) -> &[secrecy::SecretString];
    fn verify(keys: &[HmacKey], headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError>;
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Option<Webhook>, String>;
}

pub struct GitHub;
pub struct PagerDuty;
pub struct Zendesk;

impl Source for GitHub {
    const NAME: &'static str = "github";
    const SECRET: &'static str = "GITHUB_WEBHOOK_SECRET";
    /// GitHub waits 10 s, and does not redeliver on its own: a late 2xx beats a quick 503.
    const PATIENCE: Duration = Duration::from_secs(8);
    fn secrets(settings: &Settings) -> &[secrecy::SecretString] {
        &settings.github_webhook_secrets
    }
    fn verify(keys: &[HmacKey], headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        signature::verify_github(keys, header(headers, "x-hub-signature-256"), body)
    }
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Option<Webhook>, String> {
        Webhook::github(|name| header_str(headers, name), body)
    }
}

impl Source for PagerDuty {
    const NAME: &'static str = "pagerduty";
    const SECRET: &'static str = "PAGERDUTY_WEBHOOK_SECRET";
    /// PagerDuty waits 5 s and retries for up to 48 hours.
    const PATIENCE: Duration = Duration::from_secs(4);
    fn secrets(settings: &Settings) -> &[secrecy::SecretString] {
        &settings.pagerduty_webhook_secrets
    }
    fn verify(keys: &[HmacKey], headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        signature::verify_pagerduty(keys, header(headers, "x-pagerduty-signature"), body)
    }
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Option<Webhook>, String> {
        Webhook::pagerduty(|name| header_str(headers, name), body)
    }
}

impl Source for Zendesk {
    const NAME: &'static str = "zendesk";
    const SECRET: &'static str = "ZENDESK_WEBHOOK_SECRET";
    /// Zendesk waits 10 s.
    const PATIENCE: Duration = Duration::from_secs(8);
    fn secrets(settings: &Settings) -> &[secrecy::SecretString] {
        &settings.zendesk_webhook_secrets
    }
    fn verify(keys: &[HmacKey], headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        signature::verify_zendesk(
            keys,
            header(headers, "x-zendesk-webhook-signature-timestamp"),
            header(headers, "x-zendesk-webhook-signature"),
            body,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
    }
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Option<Webhook>, String> {
        Webhook::zendesk(|name| header_str(headers, name), body)
    }
}

/// A delivery from `S` whose signature has been checked over the raw bytes, parsed; `None`
/// for a ping. A handler never holds an unverified body.
pub struct Verified<S> {
    pub webhook: Option<Webhook>,
    pub body: Bytes,
    source: std::marker::PhantomData<S>,
}

impl<S: Source> FromRequest<AppState> for Verified<S> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let secrets = S::secrets(&state.services.settings);
        if secrets.is_empty() {
            return Err(not_configured(S::NAME, S::SECRET));
        }
        S::verify(&keys(secrets), &headers, &body).map_err(|e| refuse(S::NAME, e))?;
        let webhook =
            S::parse(&headers, &body).map_err(|why| ApiError::BadRequest(why).into_response())?;
        Ok(Self {
            webhook,
            body,
            source: std::marker::PhantomData,
        })
    }
}

/// `POST /webhooks/{source}`: store the delivery (a redelivery is acknowledged and not posted
/// again), route it and queue its messages; a ping is answered.
pub async fn receive<S: Source>(State(state): State<AppState>, verified: Verified<S>) -> Response {
    let Some(webhook) = verified.webhook else {
        return (StatusCode::OK, Json(json!({"status": "pong"}))).into_response();
    };
    let accepted = state
        .services
        .notifications
        .accept(&webhook, &verified.body);
    // Past its patience the sender is answered 503 in time. The delivery may still be stored
    // (and posted) a moment later: a retry of it is then a duplicate, answered 200, not posted
    // twice; GitHub, which does not retry, loses nothing.
    let accepted = match tokio::time::timeout(S::PATIENCE, accepted).await {
        Ok(accepted) => accepted.map_err(|e| e.to_string()),
        Err(_) => Err(format!("not stored within {} s", S::PATIENCE.as_secs())),
    };
    match accepted {
        Ok((Recorded::New { .. }, messages)) => (
            StatusCode::ACCEPTED,
            Json(json!({"status": "accepted", "messages": messages})),
        )
            .into_response(),
        Ok((Recorded::Duplicate, _)) => {
            (StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response()
        }
        Err(e) => ApiError::Unavailable(format!("delivery not stored: {e}")).into_response(),
    }
}
