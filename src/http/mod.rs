//! The HTTP surface: one router, one module per surface.

pub mod ops;
pub mod pages;
pub mod server;
pub mod webhooks;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use http_body_util::BodyExt as _;

use crate::{services::Services, signature::HmacKey};

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub registry: Arc<crate::command::Registry>,
    pub slack_key: Arc<HmacKey>,
}

/// Whether the request says its body is a form (`application/x-www-form-urlencoded`).
pub fn is_form(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// A POST route whose body is read in full before `handler` runs: at most `limit` bytes, within
/// `body_timeout`.
pub fn post_within(
    handler: MethodRouter<AppState>,
    limit: usize,
    body_timeout: Duration,
) -> MethodRouter<AppState> {
    handler
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |request, next| {
            read_body(request, next, limit, body_timeout)
        }))
}

/// Every route: the chat platform's (`chat`, from its edge folder), the webhooks, the pages and
/// the operational endpoints.
pub fn router(state: AppState, chat: Router<AppState>) -> Router {
    let body_timeout = state.services.config.limits.body_timeout;
    let post_within = |handler, limit| post_within(handler, limit, body_timeout);
    Router::new()
        .merge(chat)
        .route(
            "/webhooks/github",
            post_within(
                post(webhooks::receive::<webhooks::GitHub>),
                webhooks::GITHUB_BODY_LIMIT,
            ),
        )
        .route(
            "/webhooks/pagerduty",
            post_within(
                post(webhooks::receive::<webhooks::PagerDuty>),
                webhooks::SMALL_WEBHOOK_LIMIT,
            ),
        )
        .route(
            "/webhooks/zendesk",
            post_within(
                post(webhooks::receive::<webhooks::Zendesk>),
                webhooks::SMALL_WEBHOOK_LIMIT,
            ),
        )
        .route("/jobs/{id}", get(pages::job_page))
        .route("/audit", get(pages::audit_page))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .merge(if state.services.settings.metrics_listen_addr.is_some() {
            // Served on its own address instead.
            Router::new()
        } else {
            Router::new().route("/metrics", get(ops::metrics))
        })
        .fallback(ops::not_found)
        .layer(middleware::from_fn(track))
        .with_state(state)
}

/// `/metrics` and `/healthz` alone, for `METRICS_LISTEN_ADDR`.
pub fn metrics_router(services: Arc<Services>, registry: Arc<crate::command::Registry>) -> Router {
    let state = AppState {
        services,
        registry,
        // Nothing signed is served here.
        slack_key: Arc::new(HmacKey::new(b"unused")),
    };
    Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .fallback(ops::not_found)
        .with_state(state)
}

/// Read the whole body before the handler sees the request: 413 at once when the announced
/// length is over `limit` (nothing is read), 413 when more than `limit` bytes arrive, 408 when
/// the body has not arrived within `timeout` of its headers. A client that announces a huge body
/// or trickles one cannot hold a connection and a task for longer than that.
async fn read_body(request: Request, next: Next, limit: usize, timeout: Duration) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let collected = tokio::time::timeout(timeout, collect_within_budget(body, limit)).await;
    let (bytes, held) = match collected {
        Ok(Ok(collected)) => collected,
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::GaveWay)) => {
            tracing::info!("request body given up: newer requests needed the room it held");
            let mut response = (
                StatusCode::REQUEST_TIMEOUT,
                "the request body came too slowly while others waited\n",
            )
                .into_response();
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
        Ok(Err(BodyError::OverBudget)) => {
            metrics::counter!("pantheon_body_budget_refusals_total").increment(1);
            tracing::warn!("request body refused: bodies in memory are at their budget");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "busy; try again\n",
            )
                .into_response();
        }
        Ok(Err(BodyError::Read(e))) => {
            tracing::info!(error = %e, "request body not read");
            return (
                StatusCode::BAD_REQUEST,
                "bad request: the body could not be read\n",
            )
                .into_response();
        }
        Err(_) => {
            metrics::counter!("pantheon_body_timeouts_total").increment(1);
            tracing::info!(
                timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                "request body not received in time"
            );
            let mut response = (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time\n",
            )
                .into_response();
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // The body's share of the budget is held until its request is done.
    drop(held);
    response
}

/// Request bodies held in memory at once, across all requests (KiB). When a new body needs room
/// and there is none, the body that began arriving longest ago gives way (its request gets 408),
/// so clients trickling large bodies cannot keep Slack's small ones out; only if no other body
/// holds any room is the new one refused (503).
const BODY_BUDGET_KIB: usize = 64 * 1024;

static BODY_BUDGET: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET_KIB)));

/// Bodies being received, oldest first, with the room each holds and a way to make it give way.
static READERS: std::sync::LazyLock<Readers> = std::sync::LazyLock::new(Readers::default);

#[derive(Default)]
struct Readers {
    next: std::sync::atomic::AtomicU64,
    active: std::sync::Mutex<std::collections::BTreeMap<u64, Reader>>,
}

struct Reader {
    kib: usize,
    give_way: Arc<tokio::sync::Notify>,
}

impl Readers {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Reader>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask the oldest body other than `me` that holds room to give way. False if none does.
    fn evict_oldest_except(&self, me: u64) -> bool {
        let mut active = self.lock();
        let Some(id) = active
            .iter()
            .find(|(id, r)| **id != me && r.kib > 0)
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(reader) = active.remove(&id) {
            reader.give_way.notify_one();
        }
        true
    }
}

/// Takes a body off [`READERS`] when its reading ends, however it ends.
struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        READERS.lock().remove(&self.0);
    }
}

enum BodyError {
    TooLarge,
    OverBudget,
    GaveWay,
    Read(axum::Error),
}

/// The whole body, at most `limit` bytes, with the share of the budget it holds.
async fn collect_within_budget(
    mut body: Body,
    limit: usize,
) -> Result<(bytes::Bytes, Option<tokio::sync::OwnedSemaphorePermit>), BodyError> {
    use std::sync::atomic::Ordering;
    let me = READERS.next.fetch_add(1, Ordering::Relaxed);
    let give_way = Arc::new(tokio::sync::Notify::new());
    READERS.lock().insert(
        me,
        Reader {
            kib: 0,
            give_way: give_way.clone(),
        },
    );
    let _registered = Registered(me);
    let mut buf = bytes::BytesMut::new();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = give_way.notified() => return Err(BodyError::GaveWay),
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        let kib_now = (buf.len() + data.len()).div_ceil(1024);
        let kib_held = held.as_ref().map_or(0, |p| p.num_permits());
        if kib_now > kib_held {
            let more = u32::try_from(kib_now - kib_held).map_err(|_| BodyError::TooLarge)?;
            let mut tries = 0;
            let permit = loop {
                match BODY_BUDGET.clone().try_acquire_many_owned(more) {
                    Ok(permit) => break permit,
                    Err(_) if tries < 32 && READERS.evict_oldest_except(me) => {
                        metrics::counter!("pantheon_body_evictions_total").increment(1);
                        tries += 1;
                        // Let the body that gives way drop its share.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(_) => return Err(BodyError::OverBudget),
                }
            };
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            if let Some(reader) = READERS.lock().get_mut(&me) {
                reader.kib = kib_now;
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), held))
}

fn too_large() -> Response {
    let mut response = (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    // The body was not read: the connection cannot carry another request.
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// Count and time every request by route, method and status.
async fn track(request: Request, next: Next) -> Response {
    // Both are cheap to clone (a shared string, and for the standard methods a tag).
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let start = Instant::now();
    let response = next.run(request).await;
    crate::telemetry::record_http(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        method.as_str(),
        response.status().as_u16(),
        start.elapsed(),
    );
    response
}
