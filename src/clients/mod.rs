//! Outbound HTTP: one client for every call we make, with timeouts, a redirect rule that never
//! leaves the host we were given, and retries with backoff on 5xx, 429 and transport failures.

pub mod github;
pub mod pagerduty;
pub mod vendor;
pub mod zendesk;

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};

/// The vendor APIs we call, each there only when its credentials are configured, and the
/// outbound client they share (for runbooks' webhooks too).
pub struct Vendors {
    pagerduty: Option<pagerduty::PagerDuty>,
    zendesk: Option<zendesk::Zendesk>,
    github: Option<github::GitHub>,
    outbound: Outbound,
}

impl Vendors {
    pub fn new(
        pagerduty: Option<pagerduty::PagerDuty>,
        zendesk: Option<zendesk::Zendesk>,
        github: Option<github::GitHub>,
        outbound: Outbound,
    ) -> Self {
        Self {
            pagerduty,
            zendesk,
            github,
            outbound,
        }
    }

    pub fn pagerduty(&self) -> Option<&pagerduty::PagerDuty> {
        self.pagerduty.as_ref()
    }

    pub fn zendesk(&self) -> Option<&zendesk::Zendesk> {
        self.zendesk.as_ref()
    }

    pub fn github(&self) -> Option<&github::GitHub> {
        self.github.as_ref()
    }

    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }
}

/// How hard to try before giving up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each one after.
    pub base_delay: Duration,
    /// The longest wait we accept, whether from our backoff or a server's `Retry-After`. A
    /// `Retry-After` beyond it ends the retries and is reported to the caller.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Quick retries for tests.
    pub fn fast() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(2),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay)
    }
}

/// A transport failure that outlasted the retries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TransportError {
    pub kind: TransportKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Timeout,
    Connect,
    Other,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Timeout => "timed out",
            TransportKind::Connect => "could not connect",
            TransportKind::Other => "request failed",
        })
    }
}

impl From<reqwest::Error> for TransportError {
    fn from(e: reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_connect() {
            TransportKind::Connect
        } else {
            TransportKind::Other
        };
        // reqwest's message names the URL. Only its host is kept: a path can be a credential
        // (a response URL, an incoming-webhook URL a runbook posts to), and a query too.
        let message = e
            .url()
            .and_then(|url| url.host_str())
            .unwrap_or_default()
            .to_owned();
        Self { kind, message }
    }
}

/// reqwest is built without a default TLS provider; use ring (sqlx uses it too). Call before
/// building any reqwest client. Installing twice is harmless.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The shared outbound client.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub client: reqwest::Client,
    pub retry: RetryPolicy,
}

impl Outbound {
    pub fn new(retry: RetryPolicy, timeout: Duration) -> Self {
        install_crypto();
        let client = reqwest::Client::builder()
            .user_agent(concat!("pantheon/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // Follow a few redirects, and only within the host we were sent to: an
                // allow-listed URL must not bounce us somewhere else.
                let same_host = attempt.previous().first().is_some_and(|first| {
                    first.scheme() == attempt.url().scheme()
                        && first.host_str() == attempt.url().host_str()
                        && first.port_or_known_default() == attempt.url().port_or_known_default()
                });
                if attempt.previous().len() > 3 || !same_host {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { client, retry }
    }

    /// Send the request `build` makes, again if it fails in a way worth retrying. Returns the
    /// last response whatever its status (callers map statuses to their own errors), or the
    /// transport error if no response ever came. For requests that are safe to repeat.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, TransportError> {
        self.send_with(build, true).await
    }

    /// For requests that create something (an incident, a deploy): retried only when the
    /// server cannot have acted on them (the connection was never made, or a 429), never after
    /// a timeout or a 5xx, which may hide a success.
    pub async fn send_once(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, TransportError> {
        self.send_with(build, false).await
    }

    async fn send_with(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        idempotent: bool,
    ) -> Result<Response, TransportError> {
        let mut attempt = 0;
        loop {
            let last = attempt + 1 >= self.retry.attempts;
            match build(&self.client).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let retryable = (idempotent && status.is_server_error())
                        || status == StatusCode::TOO_MANY_REQUESTS;
                    if !retryable || last {
                        return Ok(resp);
                    }
                    let wait = match retry_after(&resp) {
                        Some(wait) if wait > self.retry.max_delay => return Ok(resp),
                        Some(wait) => wait,
                        None => self.retry.backoff(attempt),
                    };
                    tracing::debug!(%status, attempt, wait_ms = wait.as_millis() as u64, "retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    let err = TransportError::from(e);
                    if last || (!idempotent && err.kind != TransportKind::Connect) {
                        return Err(err);
                    }
                    tracing::debug!(error = %err, attempt, "retrying");
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                }
            }
            attempt += 1;
        }
    }
}

/// `Retry-After` as seconds (the form Slack, GitHub, PagerDuty and Zendesk send).
pub fn retry_after(resp: &Response) -> Option<Duration> {
    let raw = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    raw.trim().parse::<u64>().ok().map(Duration::from_secs)
}
