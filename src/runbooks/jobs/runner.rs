//! Runners: what a job does. `command` runs a program without a shell, `github_workflow`
//! dispatches a workflow, `http` posts JSON to a URL. Each writes its output to the job log line
//! by line and honours cancellation and its timeout.

use std::{collections::BTreeMap, path::PathBuf, process::Stdio, sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::sync::{Mutex, watch};

use crate::{
    clients::Vendors,
    domain::runbook::Run,
    domain::{
        job::{LogLine, Stream},
        runbook::render,
    },
    store::{Store, StoreError},
};

/// The soft open-files limit before `http::server::raise_open_files_limit` raised it (0: not
/// raised). Job programs get it back: some loop over every possible descriptor and would crawl
/// at the raised limit.
pub static ORIGINAL_OPEN_FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Succeeded,
    Failed {
        exit_code: Option<i32>,
        error: String,
    },
    TimedOut {
        after: Duration,
    },
    Cancelled,
}

/// Default time limit for commands and HTTP calls that do not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// After SIGTERM, how long a process group has before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Longest line kept in the log.
const MAX_LINE: usize = 4000;
/// Most output lines kept per run.
pub const MAX_LINES: usize = 50_000;

/// Collects output lines and writes them to the job log in batches.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<Mutex<SinkState>>,
}

struct SinkState {
    attempt: i32,
    seq: i32,
    /// Lines kept so far; past [`MAX_LINES`] the rest are counted, not stored.
    kept: usize,
    dropped: usize,
    pending: Vec<LogLine>,
    /// The last lines, for the chat report.
    tail: std::collections::VecDeque<String>,
}

impl LogSink {
    /// The log of attempt `attempt` of a job, its lines numbered from 1.
    pub fn new(attempt: i32) -> Self {
        Self {
            inner: Arc::new(Mutex::new(SinkState {
                attempt,
                seq: 0,
                kept: 0,
                dropped: 0,
                pending: Vec::new(),
                tail: std::collections::VecDeque::new(),
            })),
        }
    }

    pub async fn line(&self, stream: Stream, text: &str) {
        let text: String = crate::domain::redact::scrub(text.trim_end_matches(['\r', '\n']))
            .chars()
            .take(MAX_LINE + 20)
            .map(|c| if c == '\0' { '\u{fffd}' } else { c })
            .collect();
        let mut s = self.inner.lock().await;
        if stream != Stream::System && s.kept >= MAX_LINES {
            s.dropped += 1;
            if s.dropped == 1 {
                s.seq += 1;
                let (attempt, seq) = (s.attempt, s.seq);
                s.pending.push(LogLine {
                    attempt,
                    seq,
                    at: OffsetDateTime::now_utc(),
                    stream: Stream::System,
                    line: format!("more than {MAX_LINES} lines of output: the rest is not kept"),
                });
            }
            return;
        }
        if stream != Stream::System {
            s.kept += 1;
        }
        s.seq += 1;
        let (attempt, seq) = (s.attempt, s.seq);
        if stream != Stream::System {
            s.tail.push_back(text.clone());
            if s.tail.len() > 10 {
                s.tail.pop_front();
            }
        }
        s.pending.push(LogLine {
            attempt,
            seq,
            at: OffsetDateTime::now_utc(),
            stream,
            line: text,
        });
    }

    /// Write what has collected. Lines leave the queue once they are stored, or once the
    /// database has refused them (retrying would only refuse them again). A flush that cannot
    /// reach the database, or is cut short by the lease's deadline, leaves them for the next
    /// one; a line written twice is stored once.
    pub async fn flush(&self, store: &Store, job_id: i64) {
        let lines = self.inner.lock().await.pending.clone();
        let Some(last) = lines.last().map(|l| l.seq) else {
            return;
        };
        match store.append_job_logs(job_id, &lines).await {
            Ok(()) => {}
            Err(e @ StoreError::Rejected { .. }) => {
                tracing::error!(job_id, error = %e, lines = lines.len(), "job log lines refused by the database; dropped");
            }
            Err(e) => {
                tracing::warn!(job_id, error = %e, lines = lines.len(), "job log lines not stored yet; will retry");
                return;
            }
        }
        self.inner.lock().await.pending.retain(|l| l.seq > last);
    }

    pub async fn tail(&self, n: usize) -> Vec<String> {
        let s = self.inner.lock().await;
        s.tail.iter().rev().take(n).rev().cloned().collect()
    }
}

/// Run `run` for a job with validated `params`.
pub async fn run(
    vendors: &Vendors,
    run: &Run,
    params: &BTreeMap<String, String>,
    extra_env: &[(&str, String)],
    log: &LogSink,
    cancel: watch::Receiver<Stop>,
) -> RunEnd {
    match run {
        Run::Command {
            argv,
            timeout,
            dir,
            env,
        } => {
            let argv: Vec<String> = argv.iter().map(|a| render(a, params)).collect();
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.clone(), render(v, params)))
                .chain(extra_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
                .collect();
            run_command(
                &argv,
                dir.as_deref(),
                &env,
                timeout.unwrap_or(DEFAULT_TIMEOUT),
                log,
                cancel,
            )
            .await
        }
        Run::GithubWorkflow {
            repo,
            workflow,
            git_ref,
            inputs,
        } => {
            let Some(gh) = vendors.github() else {
                return RunEnd::Failed {
                    exit_code: None,
                    error: "GitHub is not configured: set GITHUB_TOKEN".into(),
                };
            };
            let inputs: BTreeMap<String, String> = inputs
                .iter()
                .map(|(k, v)| (k.clone(), render(v, params)))
                .collect();
            let (repo, workflow, git_ref) = (
                render(repo, params),
                render(workflow, params),
                render(git_ref, params),
            );
            log.line(
                Stream::System,
                &format!("dispatching workflow {workflow} in {repo} on {git_ref}"),
            )
            .await;
            match gh
                .dispatch_workflow(&repo, &workflow, &git_ref, &inputs)
                .await
            {
                Ok(Some(url)) => {
                    log.line(Stream::System, &format!("workflow run: {url}"))
                        .await;
                    RunEnd::Succeeded
                }
                Ok(None) => {
                    log.line(Stream::System, "workflow dispatched").await;
                    RunEnd::Succeeded
                }
                Err(e) => RunEnd::Failed {
                    exit_code: None,
                    error: e.to_string(),
                },
            }
        }
        Run::Http { url, body, timeout } => {
            let body: BTreeMap<String, String> = body
                .iter()
                .map(|(k, v)| (k.clone(), render(v, params)))
                .collect();
            let limit = timeout.unwrap_or(DEFAULT_TIMEOUT);
            // Credentials may sit anywhere in the URL (user info, query, or the path itself, as
            // in an incoming-webhook URL): the log shows only scheme and host.
            let shown = shown_url(url);
            log.line(Stream::System, &format!("POST {shown}")).await;
            let call = vendors
                .outbound()
                .client
                .post(url)
                .timeout(limit)
                .json(&body)
                .send();
            let mut cancel = cancel;
            let resp = tokio::select! {
                r = call => r,
                _ = cancelled(&mut cancel) => return RunEnd::Cancelled,
            };
            match resp {
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    log.line(Stream::System, &format!("HTTP {status}")).await;
                    for line in text.lines().take(50) {
                        log.line(Stream::Stdout, line).await;
                    }
                    if status.is_success() {
                        RunEnd::Succeeded
                    } else {
                        RunEnd::Failed {
                            exit_code: None,
                            error: format!("the endpoint answered HTTP {}", status.as_u16()),
                        }
                    }
                }
                Err(e) if e.is_timeout() => RunEnd::TimedOut { after: limit },
                Err(e) => RunEnd::Failed {
                    exit_code: None,
                    error: format!(
                        "request failed: {}",
                        crate::clients::TransportError::from(e)
                    ),
                },
            }
        }
        // Run by the worker itself (it needs the job's requester); never reaches here.
        Run::HeldCommand => RunEnd::Failed {
            exit_code: None,
            error: "a held command is run by the job worker".into(),
        },
    }
}

/// A runbook URL as logs and messages show it: scheme and host, nothing else.
pub fn shown_url(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| format!("{}://{h}", u.scheme())))
        .unwrap_or_else(|| "(the configured URL)".to_owned())
}

/// Run a program with arguments (no shell), capturing stdout and stderr line by line.
pub async fn run_command(
    argv: &[String],
    dir: Option<&std::path::Path>,
    env: &[(String, String)],
    timeout: Duration,
    log: &LogSink,
    mut cancel: watch::Receiver<Stop>,
) -> RunEnd {
    let Some(program) = argv.first() else {
        return RunEnd::Failed {
            exit_code: None,
            error: "no program to run".into(),
        };
    };
    // A relative program path is relative to the runbook's directory.
    let program: PathBuf = match dir {
        Some(d) if program.contains('/') && !program.starts_with('/') => d.join(program),
        _ => PathBuf::from(program),
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("LANG", "C.UTF-8")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        // Its own process group, so cancelling or timing out stops everything it started.
        .process_group(0);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl, getrlimit and setrlimit are async-signal-safe. This sets the child's
    // parent-death signal, so the program dies with its worker instead of running on
    // unsupervised, and gives it back the open-files limit the server started with.
    unsafe {
        let original = ORIGINAL_OPEN_FILES.load(std::sync::atomic::Ordering::Relaxed);
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The soft open-files limit as it was before the server raised it.
            if original > 0 {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                    limit.rlim_cur = original.min(limit.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
            }
            Ok(())
        });
    }
    let mut child = match spawn_when_possible(&mut cmd, &program, timeout, log, &mut cancel).await {
        Ok(child) => child,
        Err(end) => return end,
    };
    let pid = child.id();
    // If this future is dropped (the command's handler timed out, the process is stopping),
    // take the whole process group down, not just its leader.
    let mut group = GroupGuard(pid.and_then(|p| i32::try_from(p).ok()));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out = tokio::spawn(pump(stdout, Stream::Stdout, log.clone()));
    let err = tokio::spawn(pump(stderr, Stream::Stderr, log.clone()));

    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(s) if s.success() => RunEnd::Succeeded,
            Ok(s) => RunEnd::Failed {
                exit_code: s.code(),
                error: match s.code() {
                    Some(code) => format!("exited with status {code}"),
                    None => "killed by a signal".to_owned(),
                },
            },
            Err(e) => RunEnd::Failed { exit_code: None, error: format!("waiting for it failed: {e}") },
        },
        () = tokio::time::sleep(timeout) => {
            stop_group(pid, &mut child, KILL_GRACE, &mut cancel).await;
            RunEnd::TimedOut { after: timeout }
        }
        grace = cancelled(&mut cancel) => {
            stop_group(pid, &mut child, grace, &mut cancel).await;
            RunEnd::Cancelled
        }
    };
    group.disarm();
    // Output still in the pipes belongs to this run.
    let _ = tokio::time::timeout(Duration::from_secs(2), out).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), err).await;
    end
}

/// Start `cmd`. A start that fails for lack of resources (no file descriptors for the pipes, no
/// process slots, no memory) is not the job's fault and often passes: it is tried again with
/// backoff, each try in the job's log, for up to [`SPAWN_PATIENCE`] (or the job's timeout, if
/// shorter). Anything else fails the job at once.
async fn spawn_when_possible(
    cmd: &mut tokio::process::Command,
    program: &std::path::Path,
    timeout: Duration,
    log: &LogSink,
    cancel: &mut watch::Receiver<Stop>,
) -> Result<tokio::process::Child, RunEnd> {
    let give_up = tokio::time::Instant::now() + SPAWN_PATIENCE.min(timeout);
    let mut wait = Duration::from_millis(250);
    loop {
        let e = match cmd.spawn() {
            Ok(child) => return Ok(child),
            Err(e) => e,
        };
        let error = format!("cannot start {}: {e}", program.display());
        if !is_resource_error(&e) || tokio::time::Instant::now() + wait > give_up {
            if is_resource_error(&e) {
                tracing::error!(%error, "giving up starting the job's program");
            }
            return Err(RunEnd::Failed {
                exit_code: None,
                error,
            });
        }
        tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "cannot start the job's program for lack of resources; trying again");
        metrics::counter!("pantheon_job_spawn_retries_total").increment(1);
        log.line(
            Stream::System,
            &format!(
                "{error}; trying again in {}",
                humantime::format_duration(wait)
            ),
        )
        .await;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = cancelled(cancel) => return Err(RunEnd::Cancelled),
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// How long a job may wait for resources to start its program.
const SPAWN_PATIENCE: Duration = Duration::from_secs(120);

/// Errors of a start that mean "out of something for now".
fn is_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM)
    )
}

/// What the worker tells a running job: keep going, or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Run,
    /// Someone asked to cancel it: a process gets the usual grace to exit after SIGTERM.
    Cancel,
    /// The lease is about to run out and the job may soon be handed to another worker: a process
    /// gets at most this long after SIGTERM before it is killed.
    Now(Duration),
}

/// Resolves when a stop is signalled (never, if the sender is gone without one), with how long
/// a process may take to exit after SIGTERM.
pub(super) async fn cancelled(rx: &mut watch::Receiver<Stop>) -> Duration {
    match rx.wait_for(|s| *s != Stop::Run).await.map(|s| *s) {
        Ok(Stop::Now(grace)) => grace.min(KILL_GRACE),
        Ok(_) => KILL_GRACE,
        Err(_) => std::future::pending().await,
    }
}

/// Copy a pipe into the log, one line at a time (bytes that are not UTF-8 are replaced). A
/// line longer than [`MAX_LINE`] is cut, and the rest of it skipped, so a program that never
/// prints a newline cannot grow our memory.
async fn pump<R: tokio::io::AsyncRead + Unpin>(reader: Option<R>, stream: Stream, log: LogSink) {
    use tokio::io::AsyncReadExt as _;
    let Some(mut reader) = reader else { return };
    let mut line: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut skipping = false;
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &chunk[..n] {
            if b == b'\n' {
                if !skipping {
                    log.line(stream, &String::from_utf8_lossy(&line)).await;
                }
                line.clear();
                skipping = false;
            } else if skipping {
                // The rest of a line already cut.
            } else if line.len() < MAX_LINE {
                line.push(b);
            } else {
                line.extend_from_slice(" [line cut]".as_bytes());
                log.line(stream, &String::from_utf8_lossy(&line)).await;
                line.clear();
                skipping = true;
            }
        }
    }
    if !line.is_empty() {
        log.line(stream, &String::from_utf8_lossy(&line)).await;
    }
}

/// Kills a process group when dropped while armed.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: a signal to the process group we created for this run.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
    }
}

/// SIGTERM the process group, then SIGKILL it if it is still there after `grace`.
///
/// A stop already under way (a timeout or a cancel, with the usual grace) is cut short when a
/// more urgent one comes in meanwhile: the lease lost, with less time left than the grace.
async fn stop_group(
    pid: Option<u32>,
    child: &mut tokio::process::Child,
    grace: Duration,
    stop: &mut watch::Receiver<Stop>,
) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        let _ = child.kill().await;
        return;
    };
    // SAFETY: signals to the process group we created for this child.
    unsafe { libc::killpg(pid, libc::SIGTERM) };
    let mut deadline = tokio::time::Instant::now() + grace;
    let mut listening = true;
    let exited = loop {
        tokio::select! {
            _ = child.wait() => break true,
            () = tokio::time::sleep_until(deadline) => break false,
            changed = stop.changed(), if listening => match changed {
                Ok(()) => {
                    if let Stop::Now(left) = *stop.borrow_and_update() {
                        deadline = deadline.min(tokio::time::Instant::now() + left);
                    }
                }
                Err(_) => listening = false,
            },
        }
    };
    // SAFETY: as above. Once the leader is gone, this makes sure nothing it started lingers.
    unsafe { libc::killpg(pid, libc::SIGKILL) };
    if !exited {
        let _ = child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> watch::Receiver<Stop> {
        let (tx, rx) = watch::channel(Stop::Run);
        std::mem::forget(tx);
        rx
    }

    #[tokio::test]
    async fn output_is_captured_line_by_line_and_exit_codes_reported() {
        let log = LogSink::new(1);
        let argv: Vec<String> = ["sh", "-c", "echo one; echo two >&2; echo three; exit 3"]
            .map(String::from)
            .to_vec();
        let end = run_command(&argv, None, &[], Duration::from_secs(10), &log, never()).await;
        assert_eq!(
            end,
            RunEnd::Failed {
                exit_code: Some(3),
                error: "exited with status 3".into()
            }
        );
        let tail = log.tail(10).await;
        assert_eq!(tail.len(), 3);
        assert!(tail.contains(&"one".to_owned()) && tail.contains(&"two".to_owned()));
    }

    #[tokio::test]
    async fn arguments_are_not_interpreted_by_a_shell() {
        let log = LogSink::new(1);
        let argv: Vec<String> = ["echo", "; rm -rf / $(id) `id`"].map(String::from).to_vec();
        let end = run_command(&argv, None, &[], Duration::from_secs(10), &log, never()).await;
        assert_eq!(end, RunEnd::Succeeded);
        assert_eq!(log.tail(1).await, ["; rm -rf / $(id) `id`"]);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let log = LogSink::new(1);
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let script = format!("(sleep 3; touch {}) & sleep 30", marker.display());
        let argv: Vec<String> = vec!["sh".into(), "-c".into(), script];
        let started = std::time::Instant::now();
        let end = run_command(&argv, None, &[], Duration::from_millis(300), &log, never()).await;
        assert_eq!(
            end,
            RunEnd::TimedOut {
                after: Duration::from_millis(300)
            }
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!marker.exists(), "a grandchild outlived the timeout");
    }

    /// A running process that ignores SIGTERM (the trap is set once it printed `ready`), with
    /// the sender that stops it.
    async fn ignoring_sigterm(
        timeout: Duration,
    ) -> (watch::Sender<Stop>, tokio::task::JoinHandle<RunEnd>) {
        let log = LogSink::new(1);
        let (tx, rx) = watch::channel(Stop::Run);
        let argv: Vec<String> = ["sh", "-c", "trap '' TERM; echo ready; sleep 30"]
            .map(String::from)
            .to_vec();
        let run_log = log.clone();
        let run =
            tokio::spawn(async move { run_command(&argv, None, &[], timeout, &run_log, rx).await });
        while !log.tail(1).await.iter().any(|l| l == "ready") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (tx, run)
    }

    #[tokio::test]
    async fn a_stop_for_a_lost_lease_does_not_wait_out_a_process_that_ignores_sigterm() {
        let (tx, run) = ignoring_sigterm(Duration::from_secs(60)).await;
        let stopped = std::time::Instant::now();
        tx.send(Stop::Now(Duration::from_millis(100))).unwrap();
        assert_eq!(run.await.unwrap(), RunEnd::Cancelled);
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "killed after {:?}, not after the usual 5 s grace",
            stopped.elapsed()
        );
    }

    /// A process that ignores SIGTERM, being stopped with the usual grace (a cancel or its
    /// timeout), then the lease lost meanwhile: the stop is shortened to what the lease leaves.
    async fn stop_under_way_then_lease_lost(timeout: Duration, first: Option<Stop>) -> RunEnd {
        let (tx, run) = ignoring_sigterm(timeout).await;
        let stopping = std::time::Instant::now();
        if let Some(stop) = first {
            tx.send(stop).unwrap();
        }
        // Well into the 5 s grace of the stop under way.
        tokio::time::sleep(timeout.min(Duration::from_secs(1)) + Duration::from_millis(500)).await;
        assert!(
            !run.is_finished(),
            "the process ignores SIGTERM: still in its grace"
        );
        tx.send(Stop::Now(Duration::ZERO)).unwrap();
        let end = run.await.unwrap();
        assert!(
            stopping.elapsed() < Duration::from_secs(4),
            "stopped after {:?}, not after the 5 s grace of the stop under way",
            stopping.elapsed()
        );
        end
    }

    #[tokio::test]
    async fn a_cancel_under_way_is_cut_short_when_the_lease_is_lost() {
        let end = stop_under_way_then_lease_lost(Duration::from_secs(60), Some(Stop::Cancel)).await;
        assert_eq!(end, RunEnd::Cancelled);
    }

    #[tokio::test]
    async fn a_timeout_under_way_is_cut_short_when_the_lease_is_lost() {
        let timeout = Duration::from_millis(300);
        let end = stop_under_way_then_lease_lost(timeout, None).await;
        assert_eq!(end, RunEnd::TimedOut { after: timeout });
    }

    #[tokio::test]
    async fn a_nul_in_output_is_replaced_so_the_line_can_be_stored() {
        let log = LogSink::new(1);
        log.line(Stream::Stdout, "a\0b").await;
        assert_eq!(log.tail(1).await, ["a\u{fffd}b"]);
        assert_eq!(log.inner.lock().await.pending[0].line, "a\u{fffd}b");
    }

    #[tokio::test]
    async fn cancellation_stops_it() {
        let log = LogSink::new(1);
        let (tx, rx) = watch::channel(Stop::Run);
        let argv: Vec<String> = ["sleep", "30"].map(String::from).to_vec();
        let run = tokio::spawn(async move {
            run_command(&argv, None, &[], Duration::from_secs(60), &log, rx).await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(Stop::Cancel).unwrap();
        assert_eq!(run.await.unwrap(), RunEnd::Cancelled);
    }

    #[tokio::test]
    async fn an_endless_line_is_cut_not_hoarded() {
        let log = LogSink::new(1);
        let argv: Vec<String> = [
            "sh",
            "-c",
            "head -c 100000 /dev/zero | tr '\\0' x; echo; echo after",
        ]
        .map(String::from)
        .to_vec();
        let end = run_command(&argv, None, &[], Duration::from_secs(10), &log, never()).await;
        assert_eq!(end, RunEnd::Succeeded);
        let tail = log.tail(5).await;
        assert_eq!(
            tail.len(),
            2,
            "{:?}",
            tail.iter().map(String::len).collect::<Vec<_>>()
        );
        assert!(
            tail[0].ends_with("[line cut]"),
            "{}",
            &tail[0][tail[0].len() - 20..]
        );
        assert!(tail[0].len() <= MAX_LINE + 20);
        assert_eq!(tail[1], "after");
    }

    /// Runs [`out_of_descriptors_child`] in a process of its own: it uses up this process's
    /// file descriptors, which no other test may share.
    #[test]
    fn a_start_that_runs_out_of_descriptors_is_tried_again_not_failed() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "runbooks::jobs::runner::tests::out_of_descriptors_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PANTHEON_OUT_OF_DESCRIPTORS_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("CHILD DONE"),
            "the child test ran: {stdout}\n{stderr}"
        );
    }

    #[test]
    #[ignore = "run by a_start_that_runs_out_of_descriptors_is_tried_again_not_failed"]
    fn out_of_descriptors_child() {
        if std::env::var_os("PANTHEON_OUT_OF_DESCRIPTORS_CHILD").is_none() {
            return;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let argv: Vec<String> = ["echo", "started at last"].map(String::from).to_vec();
            // One start first, so that everything a start sets up once (tokio's child
            // reaper) exists before the descriptors run out.
            let warm = LogSink::new(1);
            assert_eq!(
                run_command(&argv, None, &[], Duration::from_secs(5), &warm, never()).await,
                RunEnd::Succeeded
            );
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            // SAFETY: setrlimit with a valid struct; this process is the test's alone.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
            let mut hogs = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                hogs.push(f);
            }
            let log = LogSink::new(1);
            let run_log = log.clone();
            let run = tokio::spawn(async move {
                run_command(&argv, None, &[], Duration::from_secs(60), &run_log, never()).await
            });
            // Wait until it has failed to start at least once, then free the descriptors.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let pending = log.inner.lock().await.pending.clone();
                if pending.iter().any(|l| l.line.contains("trying again")) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "never retried: {pending:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(hogs);
            assert_eq!(run.await.unwrap(), RunEnd::Succeeded);
            let lines: Vec<String> = log
                .inner
                .lock()
                .await
                .pending
                .iter()
                .map(|l| l.line.clone())
                .collect();
            assert!(
                lines[0].contains("Too many open files") && lines[0].contains("trying again in"),
                "{lines:?}"
            );
            assert_eq!(lines.last().map(String::as_str), Some("started at last"));
        });
        println!("CHILD DONE");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_failure() {
        let log = LogSink::new(1);
        let argv = vec!["/nonexistent/deploy.sh".to_owned()];
        match run_command(&argv, None, &[], Duration::from_secs(5), &log, never()).await {
            RunEnd::Failed { error, .. } => assert!(
                error.starts_with("cannot start /nonexistent/deploy.sh"),
                "{error}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
