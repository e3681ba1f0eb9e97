//! Socket Mode: with `SLACK_APP_TOKEN` set, Pantheon opens WebSockets to Slack and Slack sends
//! every slash command, interaction and event over them, so Pantheon needs no public URL for
//! Slack. No signature comes this way: trust is TLS and the app token.
//!
//! [`CONNECTIONS`] connections are kept, each by a loop of its own: `apps.connections.open`
//! (with the app token) gives a single-use `wss://` URL; the connection counts once Slack says
//! `hello`. Each envelope is handled by the same functions as the HTTP routes and acknowledged
//! with `{"envelope_id": …}` (a slash command's immediate answer goes in its `payload`). On a
//! `disconnect` frame the loop opens a new connection at once while the old one goes on reading
//! for [`DRAIN`], so a refresh loses nothing; a socket that closes or falls silent is replaced
//! with backoff and jitter. A delivery that comes again (Slack redelivers what it thinks was
//! not acknowledged, to any connection of any replica) is claimed on its own id in the store
//! and not run twice.

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt as _, StreamExt as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_tungstenite::tungstenite::{self, Message as Frame, protocol::WebSocketConfig};
use url::Url;

use super::request::Request;
use crate::{
    clients::Outbound, command::Registry, domain::audit::Transport, inbound::Inbound,
    services::Services,
};

/// Connections kept open at once (Slack allows an app ten).
pub const CONNECTIONS: usize = 2;
/// How long a new connection may take to say `hello`.
pub const HELLO_WAIT: Duration = Duration::from_secs(10);
/// How often we ping; a connection silent for [`SILENCE`] (no pong, ping or frame) is dead.
pub const PING_EVERY: Duration = Duration::from_secs(5);
pub const SILENCE: Duration = Duration::from_secs(20);
/// How long a connection Slack asked us to leave goes on reading, while its replacement opens.
pub const DRAIN: Duration = Duration::from_secs(10);
/// The largest frame we read: an interaction carries the whole message it came from.
pub const MAX_FRAME: usize = super::SLACK_INTERACTION_BODY_LIMIT;
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// When Slack refuses the token itself, retrying soon cannot help: at most this often.
const REFUSED_BACKOFF: Duration = Duration::from_secs(300);

/// Everything the connections need.
pub struct SocketMode {
    services: Arc<Services>,
    registry: Arc<Registry>,
    app_token: SecretString,
    open_url: Url,
    out: Outbound,
    status: Arc<Inbound>,
}

impl SocketMode {
    pub fn new(
        services: Arc<Services>,
        registry: Arc<Registry>,
        app_token: SecretString,
        api: &Url,
        out: Outbound,
        status: Arc<Inbound>,
    ) -> Result<Self, String> {
        let open_url = api
            .join("apps.connections.open")
            .map_err(|e| format!("SLACK_API_URL: {e}"))?;
        Ok(Self {
            services,
            registry,
            app_token,
            open_url,
            out,
            status,
        })
    }
}

/// Start the connections; they end when `stop` turns true.
pub fn spawn(
    socket: Arc<SocketMode>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CONNECTIONS)
        .map(|n| {
            let socket = socket.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                // Spread the first connections a little, as the later ones will be.
                tokio::time::sleep(Duration::from_millis(200) * n as u32).await;
                keep_connected(socket, n, stop).await;
            })
        })
        .collect()
}

/// Why `apps.connections.open` gave no URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Slack said `ok: false`: the token is wrong for this (`invalid_auth`,
    /// `not_allowed_token_type`, …).
    #[error(
        "Slack refused the app token: {0} (SLACK_APP_TOKEN must be an app-level token, xapp-…, with connections:write)"
    )]
    Refused(String),
    #[error("rate limited by Slack; retrying in {0:?}")]
    RateLimited(Duration),
    /// No answer, a 5xx, or an answer we cannot read.
    #[error("{0}")]
    Failed(String),
    /// The URL is not one we connect to.
    #[error("refused to connect to the URL Slack gave: {0}")]
    BadUrl(String),
}

/// Ask Slack for a connection URL.
pub async fn open(socket: &SocketMode) -> Result<Url, OpenError> {
    let resp = socket
        .out
        .send(|c| {
            c.post(socket.open_url.clone())
                .bearer_auth(socket.app_token.expose_secret())
                .header("content-type", "application/x-www-form-urlencoded")
        })
        .await
        .map_err(|e| OpenError::Failed(format!("apps.connections.open: {e}")))?;
    let status = resp.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let wait = crate::clients::retry_after(&resp).unwrap_or(Duration::from_secs(30));
        return Err(OpenError::RateLimited(wait));
    }
    if !status.is_success() {
        return Err(OpenError::Failed(format!(
            "apps.connections.open answered {status}"
        )));
    }
    #[derive(Deserialize)]
    struct Answer {
        ok: bool,
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        error: Option<String>,
    }
    let answer: Answer = resp
        .json()
        .await
        .map_err(|e| OpenError::Failed(format!("apps.connections.open: {e}")))?;
    match (answer.ok, answer.url) {
        (true, Some(url)) => socket_url(&url),
        (true, None) => Err(OpenError::Failed(
            "apps.connections.open gave no url".into(),
        )),
        (false, _) => {
            let error = answer.error.unwrap_or_else(|| "no error given".into());
            if error == "ratelimited" {
                Err(OpenError::RateLimited(Duration::from_secs(30)))
            } else {
                Err(OpenError::Refused(error))
            }
        }
    }
}

/// The URL Slack gave, if it is one we connect to: `wss://`, or `ws://` to this machine (a test
/// server; nothing else is sent in the clear).
pub fn socket_url(raw: &str) -> Result<Url, OpenError> {
    let url = Url::parse(raw).map_err(|e| OpenError::BadUrl(e.to_string()))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "wss" => Ok(url),
        "ws" if loopback => Ok(url),
        other => Err(OpenError::BadUrl(format!(
            "a {other}:// URL to {}",
            url.host_str().unwrap_or("no host")
        ))),
    }
}

/// How one connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// Slack asked us to move (`disconnect`): the old connection drains, a new one opens now.
    Moved(String),
    /// It closed, failed or fell silent: why.
    Lost(String),
    /// We are shutting down.
    Stopped,
}

/// One connection slot: open, connect, read until it ends, and again.
async fn keep_connected(socket: Arc<SocketMode>, slot: usize, mut stop: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    while !*stop.borrow() {
        let wait = match open(&socket).await {
            Ok(url) => {
                let began = Instant::now();
                let ended = connect_and_read(&socket, slot, url, &mut stop).await;
                let reason = match &ended {
                    Ended::Moved(reason) => reason.clone(),
                    Ended::Lost(_) => "lost".to_owned(),
                    Ended::Stopped => return,
                };
                metrics::counter!("pantheon_socket_reconnects_total", "reason" => reason)
                    .increment(1);
                match ended {
                    Ended::Moved(reason) => {
                        tracing::info!(slot, %reason, "Slack asked to reconnect; opening a new connection");
                        failures = 0;
                        continue;
                    }
                    Ended::Lost(why) => {
                        // A connection that lived a while was not a failure to connect.
                        if began.elapsed() > Duration::from_secs(30) {
                            failures = 0;
                        }
                        failures += 1;
                        let wait = backoff(failures);
                        tracing::warn!(slot, reason = %why, retry_in_ms = wait.as_millis() as u64, "Socket Mode connection lost");
                        wait
                    }
                    Ended::Stopped => return,
                }
            }
            Err(OpenError::RateLimited(wait)) => {
                tracing::warn!(
                    slot,
                    retry_in_s = wait.as_secs(),
                    "apps.connections.open rate limited"
                );
                wait
            }
            Err(e @ OpenError::Refused(_)) => {
                failures += 1;
                let wait = REFUSED_BACKOFF.min(backoff(failures) * 8);
                tracing::error!(slot, error = %e, retry_in_s = wait.as_secs(), "Socket Mode cannot connect");
                wait
            }
            Err(e) => {
                failures += 1;
                let wait = backoff(failures);
                tracing::warn!(slot, error = %e, retry_in_ms = wait.as_millis() as u64, "Socket Mode cannot connect");
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Exponential backoff from [`BACKOFF_FIRST`] to [`BACKOFF_CAP`], each wait between half and
/// all of its step (full jitter would allow a wait of zero, a reconnect storm).
fn backoff(failures: u32) -> Duration {
    let step = BACKOFF_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(BACKOFF_CAP);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    step / 2 + step / 2 * jitter / 1000
}

/// A connection's outgoing frames: acks and pongs, written by one task.
type Outgoing = mpsc::Sender<Frame>;

async fn connect_and_read(
    socket: &Arc<SocketMode>,
    slot: usize,
    url: Url,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let host = url.host_str().unwrap_or_default().to_owned();
    let connecting =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false);
    let stream = match tokio::time::timeout(HELLO_WAIT, connecting).await {
        Ok(Ok((stream, _))) => stream,
        Ok(Err(e)) => return Ended::Lost(format!("cannot connect to {host}: {e}")),
        Err(_) => return Ended::Lost(format!("no connection to {host} within {HELLO_WAIT:?}")),
    };
    let (mut sink, mut read) = stream.split();
    let (tx, mut rx) = mpsc::channel::<Frame>(1024);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let closing = matches!(frame, Frame::Close(_));
            if let Err(e) = sink.send(frame).await {
                tracing::debug!(error = %e, "Socket Mode write failed");
                break;
            }
            if closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    // Nothing counts until Slack says hello.
    let hello = tokio::time::timeout(HELLO_WAIT, async {
        loop {
            match read.next().await {
                Some(Ok(Frame::Text(text))) => match serde_json::from_str::<Incoming>(&text) {
                    Ok(frame) if frame.kind.as_deref() == Some("hello") => return Ok(()),
                    Ok(frame) if frame.kind.as_deref() == Some("disconnect") => {
                        return Err(format!(
                            "disconnect before hello: {}",
                            frame.reason.unwrap_or_default()
                        ));
                    }
                    _ => tracing::warn!("Socket Mode frame before hello ignored"),
                },
                Some(Ok(Frame::Ping(p))) => {
                    let _ = tx.send(Frame::Pong(p)).await;
                }
                Some(Ok(Frame::Close(_))) | None => return Err("closed before hello".into()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("failed before hello: {e}")),
            }
        }
    })
    .await;
    match hello {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Ended::Lost(why),
        Err(_) => return Ended::Lost(format!("no hello within {HELLO_WAIT:?}")),
    }
    let live = socket.status.connected();
    tracing::info!(slot, %host, "Socket Mode connected");
    let mut conn = Conn {
        read,
        tx,
        heard: Instant::now(),
    };
    let ended = conn.pump(socket, Some(stop), None).await;
    drop(live);
    match &ended {
        Ended::Moved(_) => {
            // Go on reading what Slack still sends here, while the slot opens a new one (and
            // no longer than a shutdown: the connection holds the services).
            let socket = socket.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let _ = conn
                    .pump(&socket, Some(&mut stop), Some(Instant::now() + DRAIN))
                    .await;
                let _ = conn.tx.send(Frame::Close(None)).await;
                drop(conn);
                let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
            });
        }
        Ended::Lost(_) | Ended::Stopped => {
            let _ = conn.tx.send(Frame::Close(None)).await;
            drop(conn);
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
    }
    ended
}

/// One frame from Slack, as far as we read it.
#[derive(Debug, Deserialize)]
struct Incoming {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    envelope_id: Option<String>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    accepts_response_payload: bool,
    #[serde(default)]
    retry_attempt: Option<u64>,
    #[serde(default)]
    retry_reason: Option<String>,
    /// Of a `disconnect`.
    #[serde(default)]
    reason: Option<String>,
}

struct Conn<S> {
    read: S,
    tx: Outgoing,
    heard: Instant,
}

impl<S> Conn<S>
where
    S: futures_util::Stream<Item = Result<Frame, tungstenite::Error>> + Unpin,
{
    /// Read frames until the connection ends, Slack asks us to move, `stop` turns true, or
    /// `until` passes (when draining).
    async fn pump(
        &mut self,
        socket: &Arc<SocketMode>,
        mut stop: Option<&mut watch::Receiver<bool>>,
        until: Option<Instant>,
    ) -> Ended {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let deadline = until.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        loop {
            let stopped = async {
                match stop.as_deref_mut() {
                    Some(stop) => {
                        let _ = stop.wait_for(|s| *s).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                frame = self.read.next() => {
                    self.heard = Instant::now();
                    match frame {
                        Some(Ok(Frame::Text(text))) => {
                            if let Some(reason) = on_text(socket, &self.tx, &text)
                                && until.is_none()
                            {
                                return Ended::Moved(reason);
                            }
                        }
                        Some(Ok(Frame::Ping(p))) => {
                            let _ = self.tx.send(Frame::Pong(p)).await;
                        }
                        Some(Ok(Frame::Close(_))) | None => return Ended::Lost("closed by Slack".into()),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ended::Lost(format!("read failed: {e}")),
                    }
                }
                _ = ping.tick() => {
                    if self.heard.elapsed() > SILENCE {
                        return Ended::Lost(format!("nothing heard for {SILENCE:?}"));
                    }
                    let _ = self.tx.send(Frame::Ping(Vec::new().into())).await;
                }
                () = tokio::time::sleep_until(deadline) => return Ended::Lost("drained".into()),
                () = stopped => return Ended::Stopped,
            }
        }
    }
}

/// A text frame: an envelope is handled in a task of its own (acknowledged when handled); a
/// `disconnect` gives its reason back.
fn on_text(socket: &Arc<SocketMode>, tx: &Outgoing, text: &str) -> Option<String> {
    let frame: Incoming = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(e) => {
            tracing::warn!(error = %e, "Socket Mode frame is not JSON; ignored");
            return None;
        }
    };
    match frame.kind.as_deref() {
        Some("hello") => return None,
        Some("disconnect") => return Some(frame.reason.unwrap_or_else(|| "unknown".into())),
        _ => {}
    }
    let Some(envelope_id) = frame.envelope_id.clone() else {
        tracing::warn!(kind = ?frame.kind, "Socket Mode frame without envelope_id; ignored");
        return None;
    };
    let socket = socket.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let received = Instant::now();
        let kind = frame.kind.clone().unwrap_or_default();
        let label = match kind.as_str() {
            "slash_commands" | "interactive" | "events_api" => kind.clone(),
            _ => "other".to_owned(),
        };
        metrics::counter!("pantheon_socket_envelopes_total", "type" => label).increment(1);
        if let Some(attempt) = frame.retry_attempt.filter(|a| *a > 0) {
            tracing::info!(%envelope_id, attempt, reason = frame.retry_reason.as_deref().unwrap_or(""), "Slack delivered an envelope again");
        }
        let Some(payload) = handle(&socket, &kind, frame).await else {
            // Not stored, so not acknowledged: Slack delivers it again.
            return;
        };
        let ack = ack_frame(&envelope_id, payload.as_deref());
        if tx.send(Frame::Text(ack.into())).await.is_err() {
            tracing::warn!(%envelope_id, "connection gone before the ack; Slack will deliver again and it will not run twice");
        }
        metrics::histogram!("pantheon_socket_ack_seconds").record(received.elapsed().as_secs_f64());
    });
    None
}

/// `{"envelope_id": …}`, with the answer as its `payload` when there is one.
pub fn ack_frame(envelope_id: &str, payload: Option<&[u8]>) -> String {
    let id = serde_json::Value::String(envelope_id.to_owned()).to_string();
    match payload.and_then(|p| std::str::from_utf8(p).ok()) {
        Some(payload) => format!(r#"{{"envelope_id":{id},"payload":{payload}}}"#),
        None => format!(r#"{{"envelope_id":{id}}}"#),
    }
}

/// Handle one envelope as the HTTP routes would. Some(answer) to acknowledge it with (the
/// answer's JSON, if any); None to leave it unacknowledged (it was not stored).
async fn handle(socket: &SocketMode, kind: &str, frame: Incoming) -> Option<Option<Vec<u8>>> {
    let envelope_id = frame.envelope_id.unwrap_or_default();
    let accepts_payload = frame.accepts_response_payload;
    let Some(payload) = frame.payload else {
        tracing::warn!(%envelope_id, kind, "Socket Mode envelope without payload; acknowledged");
        return Some(None);
    };
    let key = |id: Option<&str>| {
        crate::store::socket_claim_key(id.filter(|id| !id.is_empty()).unwrap_or(&envelope_id))
    };
    match kind {
        "slash_commands" => match Request::command_payload(&payload) {
            Ok(Request::Command(cmd)) => {
                let key = key(Some(&cmd.trigger_id));
                let (_, body) = super::commands::acknowledge(
                    &socket.services,
                    &socket.registry,
                    cmd,
                    key,
                    Transport::Socket,
                )
                .await;
                // Slack says whether an answer may ride on the ack; without that it would be
                // dropped, so it is logged instead.
                if body.is_some() && !accepts_payload {
                    tracing::warn!(%envelope_id, "Slack takes no answer in this ack; the immediate answer is dropped");
                }
                Some(body.filter(|_| accepts_payload))
            }
            Ok(_) => Some(None),
            Err(why) => {
                tracing::warn!(%envelope_id, reason = %why, "Socket Mode slash command not readable; acknowledged");
                Some(None)
            }
        },
        "interactive" => match Request::interaction(payload) {
            Ok(request) => {
                let key = match &request {
                    Request::Clicks(clicks) => key(clicks.trigger_id.as_deref()),
                    Request::Submission(s) => {
                        key(Some(s.trigger_id.as_str()).filter(|t| !t.is_empty()))
                    }
                    Request::Shortcut(s) => {
                        key(Some(s.trigger_id.as_str()).filter(|t| !t.is_empty()))
                    }
                    _ => key(None),
                };
                match super::interactions::handle(
                    &socket.services,
                    &socket.registry,
                    request,
                    key,
                    Transport::Socket,
                )
                .await
                {
                    super::interactions::Handled::Done | super::interactions::Handled::Replay => {
                        Some(None)
                    }
                    super::interactions::Handled::Answer(body) => {
                        Some(serde_json::to_vec(&body).ok())
                    }
                    super::interactions::Handled::NotStored(why) => {
                        tracing::error!(%envelope_id, reason = %why, "Socket Mode interaction not stored; not acknowledged");
                        None
                    }
                }
            }
            Err(why) => {
                tracing::warn!(%envelope_id, reason = %why, "Socket Mode interaction not readable; acknowledged");
                Some(None)
            }
        },
        "events_api" => {
            use super::events::Handled;
            match super::events::handle(
                &socket.services,
                &socket.registry,
                payload,
                Transport::Socket,
            )
            .await
            {
                Handled::Done | Handled::Challenge(_) => Some(None),
                Handled::Malformed(why) => {
                    tracing::warn!(%envelope_id, reason = %why, "Socket Mode event not readable; acknowledged");
                    Some(None)
                }
                Handled::NotStored(why) => {
                    tracing::error!(%envelope_id, reason = %why, "Socket Mode event not stored; not acknowledged");
                    None
                }
            }
        }
        other => {
            tracing::info!(%envelope_id, kind = other, "Socket Mode envelope of a type we do not handle; acknowledged");
            Some(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls_or_this_machine() {
        assert!(socket_url("wss://wss-primary.slack.com/link/?ticket=1&app_id=A1").is_ok());
        assert!(socket_url("ws://127.0.0.1:4000/link").is_ok());
        assert!(socket_url("ws://[::1]:4000/link").is_ok());
        assert!(socket_url("ws://localhost:4000/link").is_ok());
        assert!(matches!(
            socket_url("ws://wss-primary.slack.com/link"),
            Err(OpenError::BadUrl(_))
        ));
        assert!(matches!(
            socket_url("https://slack.com/"),
            Err(OpenError::BadUrl(_))
        ));
        assert!(matches!(socket_url("not a url"), Err(OpenError::BadUrl(_))));
    }

    #[test]
    fn an_ack_carries_the_answer_as_its_payload() {
        assert_eq!(ack_frame("e-1", None), r#"{"envelope_id":"e-1"}"#);
        let ack = ack_frame("e\"2", Some(br#"{"text":"hi"}"#));
        let parsed: serde_json::Value = serde_json::from_str(&ack).unwrap();
        assert_eq!(parsed["envelope_id"], "e\"2");
        assert_eq!(parsed["payload"]["text"], "hi");
    }

    #[test]
    fn backoff_grows_to_its_cap_and_never_waits_nothing() {
        for failures in 1..20 {
            let wait = backoff(failures);
            assert!(wait >= BACKOFF_FIRST / 2, "{failures}: {wait:?}");
            assert!(wait <= BACKOFF_CAP, "{failures}: {wait:?}");
        }
        assert!(backoff(12) >= BACKOFF_CAP / 2);
    }
}
