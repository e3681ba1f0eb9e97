//! The listener: accepts connections and serves HTTP/1.1 on them within limits a client cannot
//! talk its way past.
//!
//! - A request's headers must arrive within `header_timeout` of the connection opening or of
//!   the previous response (hyper's header timer); a connection kept alive with no request for
//!   `idle_timeout` is closed.
//! - At most `max_connections` are open at once, sized below the open-files limit so that the
//!   database, job processes and outbound calls always have descriptors left. When the table is
//!   full, a new connection takes the place of the one that has waited longest without a
//!   request in progress (a stalled header or an idle keep-alive), so a flood of sockets that
//!   never send a request cannot lock out Slack, whose requests arrive whole at once. Only when
//!   every connection is mid-request does a new one wait.
//! - Accept errors (out of descriptors, aborted handshakes) are logged and survived.
//!
//! Bodies are bounded per route (length and time) by the router's `read_body` layer.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch, task::AbortHandle};
use tower::ServiceExt as _;

/// What the listener enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// After shutdown is asked for, how long open requests may take to finish.
    pub drain: Duration,
}

/// Descriptors kept free of client connections: database pools, job processes and their pipes,
/// outbound HTTP, log files.
pub fn reserved_descriptors(open_files: u64) -> u64 {
    (open_files / 8).max(256)
}

/// The most connections the cap allows when none is configured: each costs a task and buffers,
/// and Slack's traffic needs far fewer.
pub const AUTO_MAX_CONNECTIONS: usize = 4096;

/// The connection cap for an open-files limit: `configured` if it fits below the limit less the
/// reserve, else the most that does (at least 16); unconfigured, at most
/// [`AUTO_MAX_CONNECTIONS`].
pub fn connection_cap(configured: Option<usize>, open_files: u64) -> usize {
    let room = open_files
        .saturating_sub(reserved_descriptors(open_files))
        .max(16);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    configured.map_or(room.min(AUTO_MAX_CONNECTIONS), |c| c.min(room))
}

/// Raise the soft open-files limit to the hard one. Returns (soft, hard) as they are afterwards.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            crate::runbooks::jobs::runner::ORIGINAL_OPEN_FILES
                .store(limit.rlim_cur, Ordering::Relaxed);
            limit = raised;
        }
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// The soft open-files limit now.
pub fn open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// One open connection, as the table sees it.
struct Conn {
    /// Requests being handled on it now (the whole request is in), or whose response is being
    /// written. Such a connection is never evicted or swept.
    busy: AtomicU32,
    /// Requests whose body is still arriving. Not swept (the body timeout governs them) but
    /// evictable: a client trickling a body must not hold its place against Slack.
    reading: AtomicU32,
    /// Requests it has had.
    requests: AtomicU64,
    /// When it last opened, or finished a request (milliseconds since the table's epoch).
    last: AtomicU64,
}

struct Entry {
    conn: Arc<Conn>,
    abort: AbortHandle,
}

/// The open connections.
struct Table {
    epoch: Instant,
    open: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// Woken when a connection closes.
    closed: tokio::sync::Notify,
}

impl Table {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            closed: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close the connection that has waited longest without a request in progress. False if
    /// every connection is mid-request.
    fn evict_one(&self) -> bool {
        let mut open = self.lock();
        let oldest = open
            .iter()
            .filter(|(_, e)| e.conn.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, e)| e.conn.last.load(Ordering::Relaxed));
        let Some(id) = oldest.map(|(id, _)| *id) else {
            return false;
        };
        // Out of the table now, so the next check counts it gone; its socket closes when the
        // runtime drops the aborted task, a moment later.
        if let Some(entry) = open.remove(&id) {
            entry.abort.abort();
        }
        metrics::counter!("pantheon_connections_evicted_total").increment(1);
        true
    }

    /// Close connections that have had no request for too long: kept-alive ones after
    /// `idle`, and (behind hyper's own header timer) new ones after `header` and a second.
    fn sweep(&self, idle: Duration, header: Duration) {
        let now = self.now_ms();
        let idle = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let first =
            u64::try_from((header + Duration::from_secs(1)).as_millis()).unwrap_or(u64::MAX);
        self.lock().retain(|_, entry| {
            let c = &entry.conn;
            if c.busy.load(Ordering::Acquire) > 0 || c.reading.load(Ordering::Acquire) > 0 {
                return true;
            }
            let quiet = now.saturating_sub(c.last.load(Ordering::Relaxed));
            let limit = if c.requests.load(Ordering::Relaxed) == 0 {
                first
            } else {
                idle
            };
            if quiet > limit {
                entry.abort.abort();
                return false;
            }
            true
        });
    }
}

/// Removes its connection from the table when the connection's task ends, aborted or not.
struct Registered {
    table: Arc<Table>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
        self.table.closed.notify_waiters();
        metrics::gauge!("pantheon_connections_open").decrement(1.0);
    }
}

/// Marks a connection busy while a request is handled and its response written.
struct Busy(Arc<Conn>, Arc<Table>);

impl Busy {
    fn enter(conn: &Arc<Conn>, table: &Arc<Table>) -> Self {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Self(conn.clone(), table.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last.store(self.1.now_ms(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks a connection as receiving a request body.
struct Reading(Arc<Conn>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.reading.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where one request stands: receiving its body, or in (busy).
struct Phase {
    conn: Arc<Conn>,
    table: Arc<Table>,
    state: Mutex<PhaseState>,
}

enum PhaseState {
    Reading(#[allow(dead_code)] Reading),
    Busy(#[allow(dead_code)] Busy),
    Done,
}

impl Phase {
    fn start(conn: &Arc<Conn>, table: &Arc<Table>, has_body: bool) -> Arc<Self> {
        conn.requests.fetch_add(1, Ordering::Relaxed);
        // A request beginning is activity: a kept-alive connection that just started one does
        // not rank as the longest quiet (a client trickling one body keeps its old start).
        conn.last.store(table.now_ms(), Ordering::Relaxed);
        let state = if has_body {
            conn.reading.fetch_add(1, Ordering::AcqRel);
            PhaseState::Reading(Reading(conn.clone()))
        } else {
            PhaseState::Busy(Busy::enter(conn, table))
        };
        Arc::new(Self {
            conn: conn.clone(),
            table: table.clone(),
            state: Mutex::new(state),
        })
    }

    /// The whole request is in (or the response has begun): busy until the response is written.
    fn busy(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, PhaseState::Reading(_)) {
            *state = PhaseState::Busy(Busy::enter(&self.conn, &self.table));
        }
    }

    fn done(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = PhaseState::Done;
    }
}

/// A body that tells its request's [`Phase`] when it has ended: a request body when all of it has
/// arrived (the request is then busy), a response body when hyper has taken all of it or let go of
/// it (then done). hyper lets go of a one-frame body once it is buffered, before the bytes reach
/// the socket; all our responses are one frame, so the last bytes of a response to a slow reader
/// are not covered.
struct Watched<B> {
    inner: B,
    phase: Arc<Phase>,
    at_end: fn(&Phase),
    on_drop: Option<fn(&Phase)>,
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            (self.at_end)(&self.phase);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        if let Some(on_drop) = self.on_drop {
            on_drop(&self.phase);
        }
    }
}

/// Logs accept errors at most once a second, with how many were not logged.
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn report(&mut self, e: &std::io::Error) {
        metrics::counter!("pantheon_accept_errors_total").increment(1);
        let due = self
            .last_logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            tracing::error!(error = %e, suppressed = self.unlogged, "accepting a connection failed; still listening");
            self.last_logged = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }
}

/// Errors that mean "out of something for now": wait a little before accepting again.
fn is_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Serve `router` on `listener` until `shutdown` resolves; then stop accepting, let open
/// requests finish (up to `limits.drain`) and close every connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let table = Arc::new(Table::new());
    let (closing_tx, closing) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        // Bounds a request's head too: Slack's are a few hundred bytes.
        .max_buf_size(64 * 1024);
    let http = Arc::new(http);

    let sweeper = {
        let table = table.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                table.sweep(limits.idle_timeout, limits.header_timeout);
            }
        })
    };

    let mut errors = AcceptErrors {
        last_logged: None,
        unlogged: 0,
    };
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                errors.report(&e);
                if is_resource_error(&e) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        if !make_room(&table, limits.max_connections).await {
            // Every connection is busy with a request and none ended within a second.
            metrics::counter!("pantheon_connections_refused_total").increment(1);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        spawn_connection(&table, &http, &router, &closing, stream);
    }
    drop(listener);

    // Drain: finish open requests, close idle connections, then whatever is left.
    let _ = closing_tx.send(true);
    let deadline = tokio::time::Instant::now() + limits.drain;
    while table.len() > 0 {
        let closed = table.closed.notified();
        if table.len() == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, closed).await.is_err() {
            tracing::warn!(
                connections = table.len(),
                "closing connections still open at shutdown"
            );
            for entry in table.lock().values() {
                entry.abort.abort();
            }
            break;
        }
    }
    sweeper.abort();
    Ok(())
}

/// Make room for one more connection: at the cap, close the longest-quiet one, or wait up to a
/// second for a connection to end. False if there is still no room.
async fn make_room(table: &Table, max: usize) -> bool {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        if table.len() < max {
            return true;
        }
        if table.evict_one() {
            // Let the runtime drop the evicted task (and close its socket) before the new one.
            tokio::task::yield_now().await;
            continue;
        }
        let closed = table.closed.notified();
        if tokio::time::timeout_at(give_up, closed).await.is_err()
            && table.len() >= max
            && !table.evict_one()
        {
            return false;
        }
    }
}

fn spawn_connection(
    table: &Arc<Table>,
    http: &Arc<hyper::server::conn::http1::Builder>,
    router: &Router,
    closing: &watch::Receiver<bool>,
    stream: tokio::net::TcpStream,
) {
    let id = table.next_id.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(Conn {
        busy: AtomicU32::new(0),
        reading: AtomicU32::new(0),
        requests: AtomicU64::new(0),
        last: AtomicU64::new(table.now_ms()),
    });
    let registered = Registered {
        table: table.clone(),
        id,
    };
    let service = {
        let conn = conn.clone();
        let table = table.clone();
        let router = router.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let has_body = !http_body::Body::is_end_stream(request.body());
            let phase = Phase::start(&conn, &table, has_body);
            let body_phase = phase.clone();
            let call = router.clone().oneshot(request.map(move |inner| {
                Body::new(Watched {
                    inner,
                    phase: body_phase,
                    at_end: Phase::busy,
                    on_drop: None,
                })
            }));
            async move {
                let response = call.await.map_err(|never: Infallible| match never {})?;
                // The handler is done; the connection stays busy while the answer is written.
                phase.busy();
                Ok::<_, Infallible>(response.map(|inner| {
                    Body::new(Watched {
                        inner,
                        phase,
                        at_end: Phase::done,
                        on_drop: Some(Phase::done),
                    })
                }))
            }
        })
    };
    let http = http.clone();
    let mut closing = closing.clone();
    // Register before the task can run, so a task that ends at once is removed after it is added.
    let mut open = table.lock();
    let task = tokio::spawn(async move {
        let _registered = registered;
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => log_connection_end(result),
            () = async { drop(closing.wait_for(|c| *c).await); } => {
                connection.as_mut().graceful_shutdown();
                log_connection_end(connection.await);
            }
        }
    });
    open.insert(
        id,
        Entry {
            conn,
            abort: task.abort_handle(),
        },
    );
    metrics::gauge!("pantheon_connections_open").increment(1.0);
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        if e.is_timeout() {
            metrics::counter!("pantheon_connections_timed_out_total").increment(1);
            tracing::debug!(error = %e, "connection closed: no request in time");
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_everything_else() {
        assert_eq!(reserved_descriptors(1024), 256);
        assert_eq!(connection_cap(None, 1024), 768);
        assert_eq!(connection_cap(Some(100), 1024), 100);
        assert_eq!(
            connection_cap(Some(5000), 1024),
            768,
            "clamped below the limit"
        );
        assert_eq!(connection_cap(None, 1_048_576), AUTO_MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(20_000), 1_048_576), 20_000);
        assert_eq!(connection_cap(None, 64), 16, "never below 16");
    }

    #[test]
    fn eviction_picks_the_longest_quiet_connection_that_is_not_busy() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let table = Table::new();
            let mut tasks = Vec::new();
            for (id, (busy, last)) in [(0u32, 50u64), (1, 10), (0, 20), (0, 30)]
                .into_iter()
                .enumerate()
            {
                let task = tokio::spawn(std::future::pending::<()>());
                table.lock().insert(
                    id as u64,
                    Entry {
                        conn: Arc::new(Conn {
                            busy: AtomicU32::new(busy),
                            reading: AtomicU32::new(0),
                            requests: AtomicU64::new(1),
                            last: AtomicU64::new(last),
                        }),
                        abort: task.abort_handle(),
                    },
                );
                tasks.push(task);
            }
            assert!(table.evict_one());
            tokio::task::yield_now().await;
            let ended: Vec<bool> = tasks.iter().map(|t| t.is_finished()).collect();
            // Connection 1 is quieter for longer but busy; connection 2 goes.
            assert_eq!(ended, [false, false, true, false]);
        });
    }

    #[test]
    fn a_connection_receiving_a_body_is_evictable_but_not_swept() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let table = Table::new();
            let task = tokio::spawn(std::future::pending::<()>());
            table.lock().insert(
                0,
                Entry {
                    conn: Arc::new(Conn {
                        busy: AtomicU32::new(0),
                        reading: AtomicU32::new(1),
                        requests: AtomicU64::new(1),
                        last: AtomicU64::new(0),
                    }),
                    abort: task.abort_handle(),
                },
            );
            // Quiet far past the idle timeout, but its body is still arriving: the body timeout
            // governs it, not the sweep.
            tokio::time::sleep(Duration::from_millis(20)).await;
            table.sweep(Duration::from_millis(1), Duration::from_millis(1));
            assert_eq!(table.len(), 1);
            // It does give way to a new connection, though.
            assert!(table.evict_one());
            tokio::task::yield_now().await;
            assert!(task.is_finished());
        });
    }
}
