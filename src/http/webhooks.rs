//! `POST /webhooks/{github,pagerduty,zendesk}`: verify over the raw bytes, parse, store (a
//! redelivery is acknowledged and not posted again), route, queue. Every accepted delivery is
//! stored before we answer 2xx; if it cannot be stored the sender gets a 503 and retries.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::AppState;
use crate::{
    domain::outbox::Recorded,
    error::ApiError,
    notify::{self, format},
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

async fn finish(
    state: &AppState,
    source: &str,
    delivery_id: &str,
    body: &[u8],
    formatted: format::Formatted,
    payload: &Value,
) -> Response {
    match notify::accept(
        &state.services,
        source,
        delivery_id,
        body,
        formatted,
        payload,
    )
    .await
    {
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

/// The body as JSON, with NUL taken out of its strings (it is stored, and Postgres `jsonb`
/// cannot hold one: a signed delivery with `\u0000` in it would otherwise get a 503 forever).
fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map(crate::domain::redact::json_without_nul)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))
}

pub async fn github(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let secrets = &state.services.settings.github_webhook_secrets;
    if secrets.is_empty() {
        return not_configured("github", "GITHUB_WEBHOOK_SECRET");
    }
    if let Err(e) = signature::verify_github(
        &keys(secrets),
        header(&headers, "x-hub-signature-256"),
        &body,
    ) {
        return refuse("github", e);
    }
    let Some(event) = header_str(&headers, "x-github-event") else {
        return ApiError::BadRequest("missing X-GitHub-Event".into()).into_response();
    };
    if event == "ping" {
        return (StatusCode::OK, Json(json!({"status": "pong"}))).into_response();
    }
    let Some(delivery) = header_str(&headers, "x-github-delivery") else {
        return ApiError::BadRequest("missing X-GitHub-Delivery".into()).into_response();
    };
    // A hook may be set to send `application/x-www-form-urlencoded` with `payload=<json>`.
    let form = header_str(&headers, "content-type")
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let payload = if form {
        match form_urlencoded::parse(&body).find(|(k, _)| k == "payload") {
            Some((_, v)) => match parse_json(v.as_bytes()) {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            },
            None => return ApiError::BadRequest("no `payload` field".into()).into_response(),
        }
    } else {
        match parse_json(&body) {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        }
    };
    if !payload.is_object() {
        return ApiError::BadRequest("the payload is not a JSON object".into()).into_response();
    }
    let formatted = format::github(event, &payload);
    finish(&state, "github", delivery, &body, formatted, &payload).await
}

pub async fn pagerduty(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let secrets = &state.services.settings.pagerduty_webhook_secrets;
    if secrets.is_empty() {
        return not_configured("pagerduty", "PAGERDUTY_WEBHOOK_SECRET");
    }
    if let Err(e) = signature::verify_pagerduty(
        &keys(secrets),
        header(&headers, "x-pagerduty-signature"),
        &body,
    ) {
        return refuse("pagerduty", e);
    }
    let payload = match parse_json(&body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // The event id is inside the signed body; X-Webhook-Id is not signed.
    let Some(delivery) = payload["event"]["id"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| header_str(&headers, "x-webhook-id").map(str::to_owned))
    else {
        return ApiError::BadRequest("no X-Webhook-Id and no event.id".into()).into_response();
    };
    let formatted = format::pagerduty(&payload);
    finish(&state, "pagerduty", &delivery, &body, formatted, &payload).await
}

pub async fn zendesk(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let secrets = &state.services.settings.zendesk_webhook_secrets;
    if secrets.is_empty() {
        return not_configured("zendesk", "ZENDESK_WEBHOOK_SECRET");
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(e) = signature::verify_zendesk(
        &keys(secrets),
        header(&headers, "x-zendesk-webhook-signature-timestamp"),
        header(&headers, "x-zendesk-webhook-signature"),
        &body,
        now,
    ) {
        return refuse("zendesk", e);
    }
    let payload = match parse_json(&body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Some(delivery) = payload["id"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| header_str(&headers, "x-zendesk-webhook-invocation-id").map(str::to_owned))
    else {
        return ApiError::BadRequest("no event id".into()).into_response();
    };
    let zendesk = state.services.zendesk.clone();
    let formatted = format::zendesk(&payload, |id| {
        let id: u64 = id.parse().ok()?;
        zendesk.as_ref().map(|z| z.ticket_link(id))
    });
    finish(&state, "zendesk", &delivery, &body, formatted, &payload).await
}
