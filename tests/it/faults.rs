//! Fault injection against the real `pantheon serve` binary: its database stopped under load
//! (a Postgres cluster of the test's own), the Slack Web API down for a minute, a SIGKILL in the
//! middle of a burst of webhooks, and a SQLite file system that fills up.
//!
//! Each test has a hard deadline, prints its figures on one line starting with `FAULTS`
//! (visible with `--no-capture`, and in nextest's output of a failing test), and keeps its temp
//! dir (with the server's JSON logs, `serve-*.log`) when it fails.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use pantheon::signature::{HmacKey, sign_slack};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

use crate::harness::{SECRET, fake_slack_api, now, slack_calls};

const BIN: &str = env!("CARGO_BIN_EXE_pantheon");
const GH_SECRET: &str = "gh-fault-secret-4242";
const BOT_TOKEN: &str = "xoxb-fault-test-0000";

// ---------------------------------------------------------------------------------------------
// Shared pieces: a scratch dir, the server process, signed requests.

/// A temp dir kept (and named on stderr) when the test fails, so its logs can be read.
struct Scratch {
    dir: Option<tempfile::TempDir>,
    test: &'static str,
}

impl Scratch {
    fn new(test: &'static str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pantheon-{test}-"))
            .tempdir()
            .expect("temp dir");
        Self {
            dir: Some(dir),
            test,
        }
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("scratch dir").path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let path = dir.keep();
            eprintln!(
                "{}: kept {} (server logs: serve-*.log)",
                self.test,
                path.display()
            );
        }
    }
}

/// `future` within `limit`, or a failure (never a hang).
async fn within<T>(test: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(v) => v,
        Err(_) => panic!("{test}: not done within its hard deadline of {limit:?}"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The last `n` lines of a file (for failure messages).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Log lines (JSON, one a line) whose text contains `needle`.
fn log_lines_with(path: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Requirements checked together, so that a failing run names every one it broke.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    /// No background loop died and nothing panicked in the server whose log this is.
    fn log_clean(&mut self, log: &Path) {
        for needle in ["a background task ended before it was stopped", "panicked"] {
            let found = log_lines_with(log, needle);
            self.check(found.is_empty(), || {
                format!("{}: {needle}:\n{}", log.display(), found.join("\n"))
            });
        }
    }

    fn assert_all(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} requirement(s) not met:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

/// A `pantheon serve` child process, killed (SIGKILL) when dropped if still running.
struct Serve {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Serve {
    /// Start the binary in `dir` (its `pantheon.toml` there), logging JSON to `dir/<name>.log`;
    /// returns once it accepts connections.
    async fn start(dir: &Path, name: &str, env: &[(&str, String)]) -> Serve {
        Self::start_with(dir, name, env, |_| {}).await
    }

    async fn start_with(
        dir: &Path,
        name: &str,
        env: &[(&str, String)],
        tweak: impl FnOnce(&mut std::process::Command),
    ) -> Serve {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = std::process::Command::new(BIN);
        cmd.current_dir(dir)
            .env_clear()
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("LOG_FORMAT", "json").env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("LISTEN_ADDR", &addr);
        tweak(&mut cmd);
        let child = cmd.spawn().expect("pantheon serve starts");
        let mut serve = Serve { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(&serve.addr).await.is_err() {
            if let Some(status) = serve.exited() {
                panic!(
                    "{name} exited ({status}) before listening:\n{}",
                    tail(&serve.log, 30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen within 60 s:\n{}",
                tail(&serve.log, 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        serve
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn kill9(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// SIGTERM, and up to 30 s to exit (then SIGKILL).
    async fn terminate(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.exited().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill9();
    }

    /// Poll `/readyz` until it answers 200 (or fail after `limit`).
    async fn wait_ready(&mut self, client: &reqwest::Client, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status().as_u16() == 200
            {
                return started.elapsed();
            }
            if let Some(status) = self.exited() {
                panic!("the server exited ({status}):\n{}", tail(&self.log, 30));
            }
            assert!(
                started.elapsed() < limit,
                "/readyz not 200 within {limit:?}:\n{}",
                tail(&self.log, 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn http_client() -> reqwest::Client {
    pantheon::clients::install_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// What came back for one slash command.
#[derive(Debug, Clone)]
struct CmdResult {
    /// When it was sent and answered, since the test's start.
    sent: Duration,
    done: Duration,
    /// The HTTP status, or why there was none.
    status: Result<u16, String>,
    correlation_id: String,
    body: String,
}

impl CmdResult {
    fn acked(&self) -> bool {
        self.status == Ok(200)
    }

    /// Acknowledged with a "try again"-type refusal (nothing was run).
    fn try_again(&self) -> bool {
        self.acked() && self.body.to_lowercase().contains("try again")
    }

    fn latency(&self) -> Duration {
        self.done.saturating_sub(self.sent)
    }
}

/// A signed `/ops <text>` as Slack sends it; `unique` makes its body (so its signature) its own.
async fn slash(
    client: &reqwest::Client,
    base: &str,
    t0: Instant,
    text: &str,
    unique: &str,
) -> CmdResult {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", "deprecated")
        .append_pair("team_id", "T1")
        .append_pair("team_domain", "acme")
        .append_pair("channel_id", "C0OPS")
        .append_pair("channel_name", "ops")
        .append_pair("user_id", "U01ALICE")
        .append_pair("user_name", "alice")
        .append_pair("command", "/ops")
        .append_pair("text", text)
        .append_pair("response_url", "http://127.0.0.1:9/hook")
        .append_pair("trigger_id", &format!("fault.{unique}"))
        .append_pair("api_app_id", "A1")
        .finish();
    let ts = now().to_string();
    let sig = sign_slack(&HmacKey::new(SECRET.as_bytes()), &ts, body.as_bytes());
    let sent = t0.elapsed();
    let resp = client
        .post(format!("{base}/slack/commands"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body)
        .send()
        .await;
    let (status, correlation_id, body) = match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            let id = r
                .headers()
                .get("x-correlation-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            match r.text().await {
                Ok(body) => (Ok(status), id, body),
                Err(e) => (Err(format!("body: {e}")), id, String::new()),
            }
        }
        Err(e) => (Err(e.to_string()), String::new(), String::new()),
    };
    CmdResult {
        sent,
        done: t0.elapsed(),
        status,
        correlation_id,
        body,
    }
}

/// What came back for one webhook delivery.
#[derive(Debug, Clone)]
struct HookResult {
    delivery: String,
    sent: Duration,
    done: Duration,
    status: Result<u16, String>,
}

impl HookResult {
    fn ok(&self) -> bool {
        matches!(self.status, Ok(s) if (200..300).contains(&s))
    }
}

/// A GitHub `pull_request.opened` in `repo` whose title is `title`.
fn pr_opened(number: u64, repo: &str, title: &str) -> String {
    json!({
        "action": "opened", "number": number,
        "repository": {"full_name": repo, "html_url": format!("https://github.com/{repo}")},
        "sender": {"login": "ann"},
        "pull_request": {"number": number, "title": title,
                         "html_url": format!("https://github.com/{repo}/pull/{number}"),
                         "head": {"ref": "feature"}, "base": {"ref": "main"}, "merged": false}
    })
    .to_string()
}

/// A signed GitHub delivery.
async fn github(
    client: &reqwest::Client,
    base: &str,
    t0: Instant,
    delivery: &str,
    body: String,
) -> HookResult {
    let sig = format!(
        "sha256={}",
        HmacKey::new(GH_SECRET.as_bytes()).sign_hex(&[body.as_bytes()])
    );
    let sent = t0.elapsed();
    let resp = client
        .post(format!("{base}/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await;
    let status = match resp {
        Ok(r) => {
            let s = r.status().as_u16();
            // Read the body so the answer is whole (a cut connection shows here).
            r.bytes().await.map(|_| s).map_err(|e| format!("body: {e}"))
        }
        Err(e) => Err(e.to_string()),
    };
    HookResult {
        delivery: delivery.to_owned(),
        sent,
        done: t0.elapsed(),
        status,
    }
}

/// Count of results per status (`err` for no answer).
fn by_status<'a>(statuses: impl Iterator<Item = &'a Result<u16, String>>) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for s in statuses {
        let key = match s {
            Ok(code) => code.to_string(),
            Err(_) => "err".to_owned(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The audit outcomes of each correlation id (command rows only).
type AuditMap = HashMap<String, Vec<String>>;

/// Its outcome is on the trail, and a command that ran has the row of its arrival too (one
/// answered in its acknowledgement has one row, which says both).
fn fully_audited(audit: &AuditMap, correlation_id: &str) -> bool {
    audit.get(correlation_id).is_some_and(|outcomes| {
        let has = |o: &str| outcomes.iter().any(|x| x == o);
        let ended = ["succeeded", "failed", "refused", "invalid"]
            .into_iter()
            .any(has);
        ended && (!has("started") || has("received"))
    })
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

async fn sqlite_pool(path: &Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&sqlite_url(path))
        .await
        .expect("the test's own connection to the SQLite file")
}

async fn sqlite_audit(pool: &sqlx::SqlitePool) -> AuditMap {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT correlation_id, outcome FROM audit_log WHERE action = 'command'")
            .fetch_all(pool)
            .await
            .expect("audit_log readable");
    let mut map = AuditMap::new();
    for (id, outcome) in rows {
        map.entry(id).or_default().push(outcome);
    }
    map
}

async fn sqlite_deliveries(pool: &sqlx::SqlitePool) -> HashSet<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT delivery_id FROM webhook_deliveries WHERE source = 'github'",
    )
    .fetch_all(pool)
    .await
    .expect("webhook_deliveries readable")
    .into_iter()
    .collect()
}

/// Outbox rows by status.
async fn sqlite_outbox(pool: &sqlx::SqlitePool) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>("SELECT status, COUNT(*) FROM outbox GROUP BY status")
        .fetch_all(pool)
        .await
        .expect("outbox readable")
        .into_iter()
        .collect()
}

fn routes_toml(channels: &[(&str, &str)], extra: &str) -> String {
    let mut toml = format!("[notifications]\ncoalesce_window = \"0s\"\n{extra}\n");
    for (repo, channel) in channels {
        toml.push_str(&format!(
            "\n[[routes]]\nsource = \"github\"\nevents = [\"pull_request.opened\"]\nmatch = {{ repository = \"{repo}\" }}\nchannel = \"{channel}\"\n"
        ));
    }
    toml
}

fn base_env(database_url: &str, slack: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("SLACK_SIGNING_SECRET", SECRET.to_owned()),
        ("DATABASE_URL", database_url.to_owned()),
        ("SLACK_BOT_TOKEN", BOT_TOKEN.to_owned()),
        ("SLACK_API_URL", format!("{}/api", slack.uri())),
        ("GITHUB_WEBHOOK_SECRET", GH_SECRET.to_owned()),
        ("RESPONSE_URL_HOSTS", "127.0.0.1".to_owned()),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. Postgres stopped for 10 s under load.

/// A Postgres cluster of the test's own, in a temp dir, on a free port; stopped when dropped.
struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    port: u16,
    /// The `postgres` OS user's uid and gid, when we are root (Postgres refuses to run as root).
    run_as: Option<(u32, u32)>,
    up: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with an `initdb`.
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: getpwnam returns a pointer into static storage, read at once.
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null, just returned.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

impl PgCluster {
    /// `initdb` in `dir/pg` (chowning `dir` to `postgres` when we are root).
    async fn init(dir: &Path) -> Result<Self, String> {
        let bin = postgres_bin().ok_or("no /usr/lib/postgresql/*/bin/initdb")?;
        // SAFETY: no arguments, no side effects.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = if root {
            let ids = postgres_user().ok_or("running as root and there is no `postgres` user")?;
            std::os::unix::fs::chown(dir, Some(ids.0), Some(ids.1))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
            Some(ids)
        } else {
            None
        };
        let sock = dir.join("sock");
        std::fs::create_dir(&sock).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&sock, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let cluster = Self {
            data: dir.join("pg"),
            log: dir.join("postgres.log"),
            sock,
            bin,
            port: free_port(),
            run_as,
            up: false,
        };
        let data = cluster.data.display().to_string();
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-N",
                    "-E",
                    "UTF8",
                ],
            )
            .await?;
        Ok(cluster)
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bin.join(program));
        cmd.current_dir(self.data.parent().expect("parent"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid).env("HOME", "/tmp");
        }
        cmd
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .await
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {args:?}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.sock.display()
        )
    }

    async fn start(&mut self) {
        let (data, log, options) = (
            self.data.display().to_string(),
            self.log.display().to_string(),
            self.options(),
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("postgres did not start: {e}\n{}", tail(&self.log, 20)));
        self.up = true;
    }

    async fn stop(&mut self) {
        let data = self.data.display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "60", "stop"],
        )
        .await
        .unwrap_or_else(|e| panic!("postgres did not stop: {e}"));
        self.up = false;
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Also when a start was cut short by the deadline (the postmaster may be up).
        if !self.up && !self.data.join("postmaster.pid").exists() {
            return;
        }
        use std::os::unix::process::CommandExt as _;
        let mut cmd = std::process::Command::new(self.bin.join("pg_ctl"));
        cmd.args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
    }
}

/// Whether the Postgres test may skip for want of Postgres binaries (only on purpose).
fn may_skip_postgres() -> bool {
    std::env::var("PANTHEON_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1")
        && !std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_ten_seconds_under_load() {
    let scratch = Scratch::new("faults_pg_outage");
    within(
        "postgres_stopped_for_ten_seconds_under_load",
        Duration::from_secs(150),
        postgres_outage(scratch.path()),
    )
    .await;
}

/// Start `request(n)` every `every` (n = 1, 2, …, each in a task of its own, so a slow answer
/// delays no other) until `t0 + until`; the answers, in the order sent.
fn paced<T, F, Fut>(
    every: Duration,
    t0: Instant,
    until: Duration,
    request: F,
) -> tokio::task::JoinHandle<Vec<T>>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = Vec::new();
        let mut n = 0u64;
        while t0.elapsed() < until {
            tick.tick().await;
            n += 1;
            sent.push(tokio::spawn(request(n)));
        }
        let mut answers = Vec::new();
        for task in sent {
            answers.push(task.await.expect("a paced request"));
        }
        answers
    })
}

#[derive(Debug, Clone, Copy)]
struct Readyz {
    sent: Duration,
    done: Duration,
    status: Option<u16>,
}

async fn postgres_outage(dir: &Path) {
    const LOAD: Duration = Duration::from_secs(25);
    const DOWN_AT: Duration = Duration::from_secs(5);
    const DOWN_FOR: Duration = Duration::from_secs(10);

    let mut pg = match PgCluster::init(dir).await {
        Ok(pg) => pg,
        Err(e) if may_skip_postgres() => {
            eprintln!("SKIPPED faults::postgres_stopped_for_ten_seconds_under_load: {e}");
            return;
        }
        Err(e) => panic!("cannot set up a Postgres cluster of the test's own: {e}"),
    };
    pg.start().await;
    let slack = fake_slack_api().await;
    std::fs::write(
        dir.join("pantheon.toml"),
        routes_toml(&[("acme/api", "C0DEV")], ""),
    )
    .unwrap();
    let client = http_client();
    let mut serve = Serve::start(dir, "serve-1", &base_env(&pg.url(), &slack)).await;
    serve.wait_ready(&client, Duration::from_secs(30)).await;
    let pid = serve.pid();
    let base = serve.url("");

    let t0 = Instant::now();
    // Slash commands, 20 a second.
    let commands = {
        let (client, base) = (client.clone(), base.clone());
        paced(Duration::from_millis(50), t0, LOAD, move |n| {
            let (client, base) = (client.clone(), base.clone());
            async move { slash(&client, &base, t0, "whoami", &format!("load-{n}")).await }
        })
    };
    // GitHub webhooks, 10 a second, each delivery new.
    let hooks = {
        let (client, base) = (client.clone(), base.clone());
        paced(Duration::from_millis(100), t0, LOAD, move |n| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let body = pr_opened(n, "acme/api", &format!("load-{n:04}"));
                github(&client, &base, t0, &format!("pg-load-{n}"), body).await
            }
        })
    };
    // /readyz, four times a second (each probe on its own, so a slow one delays no other).
    let ready = {
        let (client, base) = (client.clone(), base.clone());
        paced(Duration::from_millis(250), t0, LOAD, move |_| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let sent = t0.elapsed();
                let status = client
                    .get(format!("{base}/readyz"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16());
                Readyz {
                    sent,
                    done: t0.elapsed(),
                    status,
                }
            }
        })
    };

    // The fault: Postgres stopped at +5 s, for 10 s. (These sleeps are the schedule of the
    // fault, not waits for a condition.)
    tokio::time::sleep(DOWN_AT.saturating_sub(t0.elapsed())).await;
    let stop_begin = t0.elapsed();
    pg.stop().await;
    let stop_done = t0.elapsed();
    tokio::time::sleep(DOWN_FOR).await;
    let start_begin = t0.elapsed();
    pg.start().await;
    let start_done = t0.elapsed();

    let commands = commands.await.expect("command load");
    let hooks = hooks.await.expect("webhook load");
    let ready = ready.await.expect("readyz poller");
    serve.wait_ready(&client, Duration::from_secs(30)).await;

    // After the outage, on the same process: new commands and webhooks go through.
    let mut after_cmds = Vec::new();
    let mut after_hooks = Vec::new();
    for n in 0..10u64 {
        after_cmds.push(slash(&client, &base, t0, "whoami", &format!("after-{n}")).await);
        let body = pr_opened(10_000 + n, "acme/api", &format!("after-{n:04}"));
        after_hooks.push(github(&client, &base, t0, &format!("pg-after-{n}"), body).await);
    }
    let alive = serve.exited().is_none() && serve.pid() == pid;

    // What the database holds.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url())
        .await
        .expect("the test's own connection to Postgres");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT correlation_id, outcome FROM audit_log WHERE action = 'command'")
            .fetch_all(&pool)
            .await
            .expect("audit_log readable");
    let mut audit = AuditMap::new();
    for (id, outcome) in rows {
        audit.entry(id).or_default().push(outcome);
    }
    let stored: HashSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT delivery_id FROM webhook_deliveries WHERE source = 'github'",
    )
    .fetch_all(&pool)
    .await
    .expect("webhook_deliveries readable")
    .into_iter()
    .collect();
    pool.close().await;

    // Figures.
    let acked: Vec<&CmdResult> = commands.iter().filter(|c| c.acked()).collect();
    let try_again = acked.iter().filter(|c| c.try_again()).count();
    let audited = acked
        .iter()
        .filter(|c| fully_audited(&audit, &c.correlation_id))
        .count();
    let lost_cmds: Vec<&&CmdResult> = acked
        .iter()
        .filter(|c| !c.try_again() && !fully_audited(&audit, &c.correlation_id))
        .collect();
    let slow = commands
        .iter()
        .filter(|c| c.latency() > Duration::from_secs(3))
        .count();
    let max_ack = commands
        .iter()
        .map(CmdResult::latency)
        .max()
        .unwrap_or_default();
    let hook_2xx: Vec<&HookResult> = hooks.iter().filter(|h| h.ok()).collect();
    let count = |code: u16| hooks.iter().filter(|h| h.status == Ok(code)).count();
    let hook_errors: Vec<&HookResult> = hooks.iter().filter(|h| h.status.is_err()).collect();
    let hooks_stored = hooks
        .iter()
        .filter(|h| stored.contains(&h.delivery))
        .count();
    let lost_hooks: Vec<&&HookResult> = hook_2xx
        .iter()
        .filter(|h| !stored.contains(&h.delivery))
        .collect();
    let max_hook = hooks
        .iter()
        .map(|h| h.done.saturating_sub(h.sent))
        .max()
        .unwrap_or_default();
    let hooks_slow = hooks
        .iter()
        .filter(|h| h.done.saturating_sub(h.sent) > Duration::from_secs(10))
        .count();
    let during: Vec<&Readyz> = ready
        .iter()
        .filter(|r| r.sent >= stop_done && r.done <= start_begin)
        .collect();
    let during_503 = during.iter().filter(|r| r.status == Some(503)).count();
    let ready_again = ready
        .iter()
        .find(|r| r.sent >= start_done && r.status == Some(200))
        .map_or(Duration::MAX, |r| r.done.saturating_sub(start_done));
    let before_200 = ready
        .iter()
        .filter(|r| r.done <= stop_begin)
        .all(|r| r.status == Some(200));
    let after_ok_cmds = after_cmds
        .iter()
        .filter(|c| c.acked() && !c.try_again() && fully_audited(&audit, &c.correlation_id))
        .count();
    let after_ok_hooks = after_hooks
        .iter()
        .filter(|h| h.status == Ok(202) && stored.contains(&h.delivery))
        .count();
    println!(
        "FAULTS postgres_outage: postgres down {:.1}s..{:.1}s; commands sent={} acked={} try_again={} audited={} lost={} statuses={} max_ack={}ms acks_over_3s={}; webhooks sent={} 2xx={} 503={} 500={} errors={} stored={} lost={} statuses={} max_latency={}ms over_10s={}; readyz during outage {}/{} were 503, 200 again {:.1}s after restart; after the outage on the same process (pid {pid}, alive={alive}): commands ok {}/10, webhooks ok {}/10",
        stop_begin.as_secs_f64(),
        start_done.as_secs_f64(),
        commands.len(),
        acked.len(),
        try_again,
        audited,
        lost_cmds.len(),
        by_status(commands.iter().map(|c| &c.status)),
        max_ack.as_millis(),
        slow,
        hooks.len(),
        hook_2xx.len(),
        count(503),
        count(500),
        hook_errors.len(),
        hooks_stored,
        lost_hooks.len(),
        by_status(hooks.iter().map(|h| &h.status)),
        max_hook.as_millis(),
        hooks_slow,
        during_503,
        during.len(),
        ready_again.as_secs_f64(),
        after_ok_cmds,
        after_ok_hooks,
    );

    let mut checks = Checks::default();
    checks.check(alive, || {
        format!("the server exited:\n{}", tail(&serve.log, 40))
    });
    checks.log_clean(&serve.log);
    // /readyz follows the database.
    checks.check(before_200, || {
        format!("/readyz was not 200 before the outage: {ready:?}")
    });
    checks.check(during.len() >= 5, || {
        format!("too few /readyz answers during the outage to judge: {during:?}")
    });
    checks.check(during_503 == during.len(), || {
        format!("/readyz during the outage was not always 503: {during:?}")
    });
    checks.check(ready_again < Duration::from_secs(10), || {
        format!("/readyz not 200 within 10 s of Postgres's return: {ready:?}")
    });
    // Webhooks: never a 500; 503 while the database is away (the sender retries); every 2xx
    // stored.
    let odd: Vec<&HookResult> = hooks
        .iter()
        .filter(|h| !matches!(h.status, Ok(200 | 202 | 503)))
        .collect();
    checks.check(odd.is_empty(), || {
        format!(
            "webhook answers other than 200/202/503 (500s: {}): {odd:?}",
            count(500)
        )
    });
    // GitHub counts a delivery not answered within 10 s as failed (../shared/protocols.md):
    // during the outage the answer is a prompt 503, not a 202 after the sender gave up.
    checks.check(hooks_slow == 0, || {
        let late: Vec<_> = hooks
            .iter()
            .filter(|h| h.done.saturating_sub(h.sent) > Duration::from_secs(10))
            .map(|h| (h.sent, h.done.saturating_sub(h.sent), h.status.clone()))
            .take(8)
            .collect();
        format!(
            "{hooks_slow} webhooks answered after GitHub's 10 s deadline (max {max_hook:?}; the first, as sent at, took, answer): {late:?}"
        )
    });
    checks.check(count(503) > 0, || {
        "no webhook was answered 503 during the outage".to_owned()
    });
    checks.check(lost_hooks.is_empty(), || {
        format!("webhooks acknowledged 2xx but not stored: {lost_hooks:?}")
    });
    // Commands: answered 200 within Slack's deadline; each either said "try again" or is
    // fully audited.
    let not_acked: Vec<&CmdResult> = commands.iter().filter(|c| !c.acked()).collect();
    checks.check(not_acked.is_empty(), || {
        format!("commands not acknowledged with 200: {not_acked:?}")
    });
    // Slack shows `operation_timeout` to whoever typed a command not acknowledged within
    // 3000 ms (../shared/protocols.md), whatever the answer says when it comes.
    checks.check(slow == 0, || {
        let late: Vec<_> = commands
            .iter()
            .filter(|c| c.latency() > Duration::from_secs(3))
            .map(|c| (c.sent, c.latency(), c.try_again()))
            .take(8)
            .collect();
        format!(
            "{slow} commands acknowledged after Slack's 3 s deadline (max {max_ack:?}; the first, as sent at, took, said try again): {late:?}"
        )
    });
    checks.check(try_again > 0, || {
        "no command was answered \"try again\" during the outage".to_owned()
    });
    checks.check(lost_cmds.is_empty(), || {
        format!("commands acknowledged as run but not audited: {lost_cmds:?}")
    });
    // No restart needed.
    checks.check(after_ok_cmds == 10, || {
        format!(
            "commands after the outage: {after_cmds:?}\n{}",
            tail(&serve.log, 20)
        )
    });
    checks.check(after_ok_hooks == 10, || {
        format!(
            "webhooks after the outage: {after_hooks:?}\n{}",
            tail(&serve.log, 20)
        )
    });
    checks.assert_all("postgres_stopped_for_ten_seconds_under_load");
    serve.terminate().await;
    pg.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. The Slack Web API down for 60 s, then back.

/// A stand-in for Slack's Web API that the test can take down (503 to everything) and bring
/// back. While up it behaves like `harness::fake_slack_api` (history with metadata included).
struct FlakySlack {
    server: MockServer,
    down: Arc<AtomicBool>,
    /// Messages taken, in the order they arrived.
    posts: Arc<Mutex<Vec<Value>>>,
    /// Calls answered 503.
    refused: Arc<AtomicUsize>,
}

async fn flaky_slack() -> FlakySlack {
    let server = MockServer::start().await;
    let down = Arc::new(AtomicBool::new(false));
    let posts = Arc::new(Mutex::new(Vec::<Value>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = Arc::new(AtomicUsize::new(1));
    {
        let (down, posts, refused) = (down.clone(), posts.clone(), refused.clone());
        Mock::given(matchers::method("POST"))
            .and(matchers::path("/api/chat.postMessage"))
            .respond_with(move |req: &wiremock::Request| {
                if down.load(Ordering::SeqCst) {
                    refused.fetch_add(1, Ordering::SeqCst);
                    return ResponseTemplate::new(503).set_body_string("upstream unavailable");
                }
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let ts = format!("1700000000.{n:06}");
                posts.lock().unwrap().push(json!({
                    "channel": body["channel"], "ts": ts, "text": body["text"],
                    "metadata": body["metadata"]
                }));
                ResponseTemplate::new(200)
                    .set_body_json(json!({"ok": true, "channel": body["channel"], "ts": ts}))
            })
            .mount(&server)
            .await;
    }
    {
        let (down, posts, refused) = (down.clone(), posts.clone(), refused.clone());
        Mock::given(matchers::method("GET"))
            .and(matchers::path("/api/conversations.history"))
            .respond_with(move |req: &wiremock::Request| {
                if down.load(Ordering::SeqCst) {
                    refused.fetch_add(1, Ordering::SeqCst);
                    return ResponseTemplate::new(503).set_body_string("upstream unavailable");
                }
                let channel = req
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "channel")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let messages: Vec<Value> = posts
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .filter(|m| m["channel"] == channel.as_str())
                    .cloned()
                    .collect();
                ResponseTemplate::new(200)
                    .set_body_json(json!({"ok": true, "messages": messages, "has_more": false}))
            })
            .mount(&server)
            .await;
    }
    Mock::given(matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .with_priority(10)
        .mount(&server)
        .await;
    FlakySlack {
        server,
        down,
        posts,
        refused,
    }
}

/// Per channel, how many notifications were posted after one received later than them.
fn out_of_order(sequence: &[usize]) -> usize {
    let mut highest = None;
    let mut late = 0;
    for &n in sequence {
        match highest {
            Some(h) if n < h => late += 1,
            _ => highest = Some(n),
        }
    }
    late
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_down_for_a_minute_then_back() {
    let scratch = Scratch::new("faults_slack_outage");
    within(
        "slack_down_for_a_minute_then_back",
        Duration::from_secs(200),
        slack_outage(scratch.path()),
    )
    .await;
}

async fn slack_outage(dir: &Path) {
    const OUTAGE: Duration = Duration::from_secs(60);
    const PER_CHANNEL: usize = 5;
    let channels = [
        ("acme/alpha", "C0ALPHA"),
        ("acme/beta", "C0BETA"),
        ("acme/gamma", "C0GAMMA"),
    ];
    let slack = flaky_slack().await;
    slack.down.store(true, Ordering::SeqCst);
    std::fs::write(
        dir.join("pantheon.toml"),
        // The defaults otherwise: 12 attempts with backoff outlast a minute; five waiting per
        // channel are fewer than `summarize_after`.
        routes_toml(&channels, ""),
    )
    .unwrap();
    let db = dir.join("pantheon.db");
    let client = http_client();
    let mut serve = Serve::start(dir, "serve-1", &base_env(&sqlite_url(&db), &slack.server)).await;
    serve.wait_ready(&client, Duration::from_secs(30)).await;
    let base = serve.url("");

    // Slack goes down now; notifications arrive, interleaved across the channels, one at a
    // time so the order of receipt is known: token `ord-<channel>-<k>` is the k-th for it.
    let t0 = Instant::now();
    let mut results = Vec::new();
    let mut expected: HashMap<&str, Vec<String>> = HashMap::new();
    let mut n = 0;
    for k in 0..PER_CHANNEL {
        for (c, (repo, channel)) in channels.iter().enumerate() {
            n += 1;
            let token = format!("ord-{c}-{k}");
            let body = pr_opened(n, repo, &token);
            results.push(github(&client, &base, t0, &format!("slack-out-{n}"), body).await);
            expected.entry(channel).or_default().push(token);
        }
    }
    let queued = results.iter().filter(|r| r.status == Ok(202)).count();
    assert_eq!(
        queued,
        channels.len() * PER_CHANNEL,
        "every webhook is accepted while Slack is down: {results:?}"
    );
    // The outage lasts a minute from the first notification (the schedule of the fault).
    tokio::time::sleep(OUTAGE.saturating_sub(t0.elapsed())).await;
    let refused_while_down = slack.refused.load(Ordering::SeqCst);
    let posted_while_down = slack.posts.lock().unwrap().len();
    slack.down.store(false, Ordering::SeqCst);
    let back = Instant::now();

    // Wait for the outbox to settle: nothing pending.
    let pool = sqlite_pool(&db).await;
    let deadline = back + Duration::from_secs(120);
    let outbox = loop {
        let outbox = sqlite_outbox(&pool).await;
        if outbox.get("pending").copied().unwrap_or(0) == 0 {
            break outbox;
        }
        if let Some(status) = serve.exited() {
            panic!("the server exited ({status}):\n{}", tail(&serve.log, 30));
        }
        if Instant::now() > deadline {
            break outbox;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained = back.elapsed();
    pool.close().await;

    // What Slack received, per channel, in order.
    let posts = slack.posts.lock().unwrap().clone();
    let mut times: HashMap<String, usize> = HashMap::new();
    let mut sequences: HashMap<String, Vec<usize>> = HashMap::new();
    for post in &posts {
        let text = post["text"].as_str().unwrap_or_default();
        let channel = post["channel"].as_str().unwrap_or_default();
        for (ch, tokens) in &expected {
            for (k, token) in tokens.iter().enumerate() {
                if text.contains(token.as_str()) {
                    *times.entry(token.clone()).or_default() += 1;
                    if channel == *ch {
                        sequences.entry(channel.to_owned()).or_default().push(k);
                    }
                }
            }
        }
    }
    let all: Vec<&String> = expected.values().flatten().collect();
    let posted = all
        .iter()
        .filter(|t| times.contains_key(t.as_str()))
        .count();
    let twice = times.values().filter(|&&n| n > 1).count();
    let lost: Vec<&&String> = all
        .iter()
        .filter(|t| !times.contains_key(t.as_str()))
        .collect();
    let mut wrong_channel = 0;
    for post in &posts {
        let text = post["text"].as_str().unwrap_or_default();
        let channel = post["channel"].as_str().unwrap_or_default();
        for (ch, tokens) in &expected {
            if channel != *ch && tokens.iter().any(|t| text.contains(t.as_str())) {
                wrong_channel += 1;
            }
        }
    }
    let disorder: usize = sequences.values().map(|s| out_of_order(s)).sum();
    let orders: Vec<String> = channels
        .iter()
        .map(|(_, ch)| format!("{ch}={:?}", sequences.get(*ch).cloned().unwrap_or_default()))
        .collect();
    println!(
        "FAULTS slack_outage: slack down {}s; queued={queued} posted={posted} posted_twice={twice} out_of_order={disorder} lost={} wrong_channel={wrong_channel}; calls refused while down={refused_while_down}, posts taken while down={posted_while_down}; drained {:.1}s after Slack came back (test at {:.1}s); outbox={outbox:?}; order posted per channel (receipt index): {}",
        OUTAGE.as_secs(),
        lost.len(),
        drained.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        orders.join(" "),
    );

    let mut checks = Checks::default();
    checks.check(serve.exited().is_none(), || {
        format!("the server exited:\n{}", tail(&serve.log, 30))
    });
    checks.log_clean(&serve.log);
    checks.check(refused_while_down > 0 && posted_while_down == 0, || {
        format!(
            "the sender did not try during the outage, or something got through: refused {refused_while_down}, taken {posted_while_down}"
        )
    });
    checks.check(outbox.get("pending").copied().unwrap_or(0) == 0, || {
        format!(
            "the outbox did not drain within 120 s of Slack's return: {outbox:?}\n{}",
            tail(&serve.log, 20)
        )
    });
    checks.check(lost.is_empty(), || {
        format!("never posted: {lost:?}; outbox {outbox:?}")
    });
    checks.check(twice == 0, || format!("posted more than once: {times:?}"));
    checks.check(wrong_channel == 0, || {
        format!("posted to the wrong channel: {posts:?}")
    });
    checks.check(disorder == 0, || {
        format!("out of order per channel: {}", orders.join(" "))
    });
    checks.check(
        outbox.get("sent").copied().unwrap_or(0) == i64::try_from(all.len()).unwrap(),
        || format!("outbox rows not all sent: {outbox:?}"),
    );
    checks.assert_all("slack_down_for_a_minute_then_back");
    serve.terminate().await;
}

// ---------------------------------------------------------------------------------------------
// 3. SIGKILL during a burst of 500 signed webhooks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_of_webhooks() {
    let scratch = Scratch::new("faults_sigkill_burst");
    within(
        "sigkill_during_a_burst_of_webhooks",
        Duration::from_secs(180),
        sigkill_burst(scratch.path()),
    )
    .await;
}

async fn sigkill_burst(dir: &Path) {
    const TOTAL: usize = 500;
    const KILL_AFTER: usize = 200;
    const CHANNELS: usize = 50;
    const CONCURRENCY: usize = 64;
    // Fifty channels, so that the drain (one message a second per channel) takes seconds.
    let repos: Vec<(String, String)> = (0..CHANNELS)
        .map(|c| (format!("acme/r{c:02}"), format!("C0R{c:02}")))
        .collect();
    let pairs: Vec<(&str, &str)> = repos
        .iter()
        .map(|(r, c)| (r.as_str(), c.as_str()))
        .collect();
    std::fs::write(
        dir.join("pantheon.toml"),
        routes_toml(&pairs, "summarize_after = 0"),
    )
    .unwrap();
    let slack = fake_slack_api().await;
    let db = dir.join("pantheon.db");
    let env = base_env(&sqlite_url(&db), &slack);
    let client = http_client();
    let mut first = Serve::start(dir, "serve-1", &env).await;
    first.wait_ready(&client, Duration::from_secs(30)).await;
    let base = first.url("");
    let pid = first.pid();

    let t0 = Instant::now();
    let answered = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::new();
    for i in 0..TOTAL {
        let (client, base, answered, gate) =
            (client.clone(), base.clone(), answered.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await.expect("gate");
            let repo = format!("acme/r{:02}", i % CHANNELS);
            let body = pr_opened(i as u64 + 1, &repo, &format!("burst-{i:03}-end"));
            let r = github(&client, &base, t0, &format!("burst-{i}"), body).await;
            if r.status.is_ok() {
                answered.fetch_add(1, Ordering::SeqCst);
            }
            r
        }));
    }
    // SIGKILL once 200 answers are in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "only {} answers within 60 s:\n{}",
            answered.load(Ordering::SeqCst),
            tail(&first.log, 20)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed_at = answered.load(Ordering::SeqCst);
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("webhook task"));
    }
    first.kill9();
    let killed_log = first.log.clone();
    drop(first);
    let posted_before_restart = slack_calls(&slack, "chat.postMessage").await.len();

    // Restart on the same database and let the outbox drain.
    let mut second = Serve::start(dir, "serve-2", &env).await;
    second.wait_ready(&client, Duration::from_secs(30)).await;
    let ok: Vec<&HookResult> = results.iter().filter(|r| r.ok()).collect();
    let token = |delivery: &str| {
        let i: usize = delivery.trim_start_matches("burst-").parse().unwrap();
        format!("burst-{i:03}-end")
    };
    let pool = sqlite_pool(&db).await;
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(90);
    let (posts, outbox) = loop {
        let outbox = sqlite_outbox(&pool).await;
        let posts = slack_calls(&slack, "chat.postMessage").await;
        if outbox.get("pending").copied().unwrap_or(0) == 0 || Instant::now() > deadline {
            break (posts, outbox);
        }
        if let Some(status) = second.exited() {
            panic!(
                "the restarted server exited ({status}):\n{}",
                tail(&second.log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained = restarted.elapsed();
    let stored = sqlite_deliveries(&pool).await;
    pool.close().await;

    let mut times: HashMap<String, usize> = HashMap::new();
    for post in &posts {
        let text = post["text"].as_str().unwrap_or_default();
        for i in 0..TOTAL {
            let t = format!("burst-{i:03}-end");
            if text.contains(&t) {
                *times.entry(t).or_default() += 1;
            }
        }
    }
    let unposted: Vec<&str> = ok
        .iter()
        .filter(|r| !times.contains_key(&token(&r.delivery)))
        .map(|r| r.delivery.as_str())
        .collect();
    let unstored: Vec<&str> = ok
        .iter()
        .filter(|r| !stored.contains(&r.delivery))
        .map(|r| r.delivery.as_str())
        .collect();
    let twice = times.values().filter(|&&n| n > 1).count();
    let errors = results.iter().filter(|r| r.status.is_err()).count();
    let posted_failed = results
        .iter()
        .filter(|r| !r.ok() && times.contains_key(&token(&r.delivery)))
        .count();
    let stored_failed = results
        .iter()
        .filter(|r| !r.ok() && stored.contains(&r.delivery))
        .count();
    println!(
        "FAULTS sigkill_burst: sent={TOTAL} killed after {killed_at} answers; 2xx={} errors={errors} statuses={}; stored={} (of them without a 2xx: {stored_failed}); 2xx not stored={} 2xx not posted={}; posted={} posted_twice={twice} (posts before restart {posted_before_restart}, after {}), posted without a 2xx={posted_failed}; drained {:.1}s after restart; outbox={outbox:?}",
        ok.len(),
        by_status(results.iter().map(|r| &r.status)),
        stored.len(),
        unstored.len(),
        unposted.len(),
        times.len(),
        posts.len().saturating_sub(posted_before_restart),
        drained.as_secs_f64(),
    );
    let mut checks = Checks::default();
    checks.log_clean(&killed_log);
    checks.log_clean(&second.log);
    checks.check(ok.len() >= KILL_AFTER - CONCURRENCY, || {
        format!("too few answers before the kill: {}", ok.len())
    });
    checks.check(errors > 0, || {
        "the kill cut no request short (it came too late to test anything)".to_owned()
    });
    checks.check(unstored.is_empty(), || {
        format!("acknowledged 2xx but not stored: {unstored:?}")
    });
    checks.check(outbox.get("pending").copied().unwrap_or(0) == 0, || {
        format!("the outbox did not drain within 90 s of the restart: {outbox:?}")
    });
    checks.check(unposted.is_empty(), || {
        format!("acknowledged 2xx but never posted: {unposted:?}; outbox {outbox:?}")
    });
    checks.assert_all("sigkill_during_a_burst_of_webhooks");
    second.terminate().await;
}

// ---------------------------------------------------------------------------------------------
// 4. The SQLite file system fills up.

/// A tmpfs mounted by the test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Self {
                dir: dir.to_owned(),
            })
        } else {
            Err(format!(
                "mount -t tmpfs: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = std::process::Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !umount(false) {
            umount(true);
        }
    }
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid C string and a zeroed struct for statvfs to fill.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return u64::MAX;
        }
        st.f_bavail * st.f_frsize
    }
}

/// Write `path` until the file system says it is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).expect("filler");
    let mut written = 0u64;
    for chunk in [1 << 20, 1 << 12, 1] {
        let buf = vec![0xa5u8; chunk];
        loop {
            match file.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = file.sync_all();
    written
}

/// How the disk is made full: a filler on a tmpfs of our own, or (where mounting is not
/// allowed) a file-size limit on the server process (prlimit RLIMIT_FSIZE), the nearest thing
/// to a full disk for a process that already holds its files open; a read-only file would not
/// stop writes through descriptors opened before.
enum Full {
    Tmpfs { filler: PathBuf },
    FileSizeLimit { pid: i32 },
}

fn set_fsize_limit(pid: i32, limit: libc::rlim_t) {
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit for our own child.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full() {
    let scratch = Scratch::new("faults_disk_full");
    within(
        "sqlite_disk_full",
        Duration::from_secs(120),
        disk_full(scratch.path()),
    )
    .await;
}

async fn disk_full(dir: &Path) {
    const WHILE_FULL: usize = 20;
    const AFTER: usize = 10;
    let disk = dir.join("disk");
    let forced_fallback = std::env::var("PANTHEON_FAULTS_NO_TMPFS").is_ok_and(|v| v == "1");
    let mounted = if forced_fallback {
        Err("PANTHEON_FAULTS_NO_TMPFS=1".to_owned())
    } else {
        Tmpfs::mount(&disk, "8m")
    };
    let (tmpfs, how) = match mounted {
        Ok(t) => (
            Some(t),
            "tmpfs of 8 MiB, filled with a filler file".to_owned(),
        ),
        Err(e) => {
            std::fs::create_dir_all(&disk).unwrap();
            eprintln!(
                "faults::sqlite_disk_full: cannot mount a tmpfs ({e}); falling back to a file-size limit (RLIMIT_FSIZE) on the server process"
            );
            (
                None,
                format!("FALLBACK (no tmpfs: {e}): RLIMIT_FSIZE on the server"),
            )
        }
    };
    std::fs::write(
        dir.join("pantheon.toml"),
        routes_toml(&[("acme/api", "C0DEV")], ""),
    )
    .unwrap();
    let db = disk.join("pantheon.db");
    let slack = fake_slack_api().await;
    let client = http_client();
    let mut serve = Serve::start_with(dir, "serve-1", &base_env(&sqlite_url(&db), &slack), |cmd| {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: only async-signal-safe calls between fork and exec. A write past the
        // file-size limit then fails with EFBIG instead of killing the process.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    })
    .await;
    serve.wait_ready(&client, Duration::from_secs(30)).await;
    let base = serve.url("");
    let t0 = Instant::now();
    let pool = sqlite_pool(&db).await;

    // Before: commands are audited.
    let mut before = Vec::new();
    for n in 0..3 {
        before.push(slash(&client, &base, t0, "whoami", &format!("before-{n}")).await);
    }
    let audit = sqlite_audit(&pool).await;
    assert!(
        before
            .iter()
            .all(|c| c.acked() && fully_audited(&audit, &c.correlation_id)),
        "before the disk filled: {before:?}"
    );

    // Fill the disk.
    let full = match &tmpfs {
        Some(_) => {
            let filler = disk.join("filler");
            fill(&filler);
            Full::Tmpfs { filler }
        }
        None => {
            let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let mut wal = db.clone().into_os_string();
            wal.push("-wal");
            // The limit is the present size of the largest file: the WAL cannot grow.
            let limit = size(db.clone()).max(size(wal.into()));
            set_fsize_limit(serve.pid(), limit);
            Full::FileSizeLimit { pid: serve.pid() }
        }
    };
    let free_when_full = free_bytes(&disk);
    let mut during = Vec::new();
    let mut hooks_during = Vec::new();
    for n in 0..WHILE_FULL {
        during.push(slash(&client, &base, t0, "whoami", &format!("full-{n}")).await);
        if n % 4 == 0 {
            let body = pr_opened(n as u64 + 1, "acme/api", &format!("full-{n:03}"));
            hooks_during.push(github(&client, &base, t0, &format!("full-{n}"), body).await);
        }
    }
    let alive_when_full = serve.exited().is_none();

    // Space returns.
    match &full {
        Full::Tmpfs { filler } => std::fs::remove_file(filler).expect("remove the filler"),
        Full::FileSizeLimit { pid } => set_fsize_limit(*pid, libc::RLIM_INFINITY),
    }
    // Give it a fair chance to notice: commands until one is audited (or 15 s), then ten more
    // that must all be.
    let freed = Instant::now();
    let mut probes = Vec::new();
    let mut ready_after = Vec::new();
    loop {
        let n = probes.len();
        let c = slash(&client, &base, t0, "whoami", &format!("probe-{n}")).await;
        ready_after.push(
            client
                .get(serve.url("/readyz"))
                .send()
                .await
                .map_or(0, |r| r.status().as_u16()),
        );
        let ok = c.acked()
            && !c.try_again()
            && fully_audited(&sqlite_audit(&pool).await, &c.correlation_id);
        probes.push(c);
        if ok || freed.elapsed() > Duration::from_secs(15) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let recovered_after = freed.elapsed();
    let mut after = Vec::new();
    let mut hooks_after = Vec::new();
    for n in 0..AFTER {
        after.push(slash(&client, &base, t0, "whoami", &format!("after-{n}")).await);
        if n % 4 == 0 {
            let body = pr_opened(100 + n as u64, "acme/api", &format!("after-{n:03}"));
            hooks_after.push(github(&client, &base, t0, &format!("after-{n}"), body).await);
        }
    }
    let audit = sqlite_audit(&pool).await;
    let stored = sqlite_deliveries(&pool).await;
    pool.close().await;

    let refused = during.iter().filter(|c| c.try_again()).count();
    let audited_during = during
        .iter()
        .filter(|c| fully_audited(&audit, &c.correlation_id))
        .count();
    let lost_during: Vec<&CmdResult> = during
        .iter()
        .filter(|c| c.acked() && !c.try_again() && !fully_audited(&audit, &c.correlation_id))
        .collect();
    let audited_after = after
        .iter()
        .filter(|c| c.acked() && !c.try_again() && fully_audited(&audit, &c.correlation_id))
        .count();
    let refusal_text = during
        .iter()
        .find(|c| c.try_again())
        .map(|c| {
            serde_json::from_str::<Value>(&c.body).unwrap_or_default()["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default();
    let first_audited = probes
        .iter()
        .position(|c| c.acked() && !c.try_again() && fully_audited(&audit, &c.correlation_id));
    let hooks_after_ok = hooks_after
        .iter()
        .filter(|h| h.status == Ok(202) && stored.contains(&h.delivery))
        .count();
    println!(
        "FAULTS disk_full ({how}): free bytes when full={free_when_full}; commands while full sent={} refused={refused} audited={audited_during} lost={} statuses={}; webhooks while full {}; after space returned (no restart): first audited command = probe {} of {} ({:.1}s, refused meanwhile {}, /readyz {}), then commands sent={} audited={audited_after} refused={} statuses={}, webhooks ok {hooks_after_ok}/{} statuses={}; alive={alive_when_full}; refusal text: {refusal_text:?}",
        during.len(),
        lost_during.len(),
        by_status(during.iter().map(|c| &c.status)),
        by_status(hooks_during.iter().map(|h| &h.status)),
        first_audited.map_or("none".to_owned(), |i| (i + 1).to_string()),
        probes.len(),
        recovered_after.as_secs_f64(),
        probes.iter().filter(|c| c.try_again()).count(),
        by_status(
            ready_after
                .iter()
                .map(|s| Ok(*s))
                .collect::<Vec<_>>()
                .iter()
        ),
        after.len(),
        after.iter().filter(|c| c.try_again()).count(),
        by_status(after.iter().map(|c| &c.status)),
        hooks_after.len(),
        by_status(hooks_after.iter().map(|h| &h.status)),
    );

    let mut checks = Checks::default();
    checks.check(alive_when_full && serve.exited().is_none(), || {
        format!("the server died:\n{}", tail(&serve.log, 40))
    });
    checks.log_clean(&serve.log);
    let not_acked: Vec<&CmdResult> = during.iter().filter(|c| !c.acked()).collect();
    checks.check(not_acked.is_empty(), || {
        format!("commands while the disk was full not answered 200 (Slack shows nothing else): {not_acked:?}")
    });
    checks.check(refused > 0, || {
        format!(
            "no command was refused while the disk was full (the fault did not bite): {during:?}"
        )
    });
    checks.check(lost_during.is_empty(), || {
        format!("answered as run while the disk was full, but not audited: {lost_during:?}")
    });
    let odd: Vec<&HookResult> = hooks_during
        .iter()
        .filter(|h| !matches!(h.status, Ok(202 | 503)) || (h.ok() && !stored.contains(&h.delivery)))
        .collect();
    checks.check(odd.is_empty(), || {
        format!("webhooks while the disk was full: neither 503 nor stored with a 202: {odd:?}")
    });
    checks.check(first_audited.is_some(), || {
        format!(
            "no command was audited within 15 s of space returning ({} tries)",
            probes.len()
        )
    });
    let refused_after: Vec<(&str, String)> = after
        .iter()
        .filter(|c| !(c.acked() && !c.try_again() && fully_audited(&audit, &c.correlation_id)))
        .map(|c| (c.correlation_id.as_str(), c.body.clone()))
        .collect();
    checks.check(audited_after == AFTER, || {
        format!(
            "after space returned, {} of the next {AFTER} commands were not audited (the first three: {:?})\nthe server's last log lines:\n{}",
            refused_after.len(),
            &refused_after[..refused_after.len().min(3)],
            tail(&serve.log, 6)
        )
    });
    checks.check(hooks_after_ok == hooks_after.len(), || {
        format!("webhooks after space returned: {hooks_after:?}")
    });
    checks.assert_all("sqlite_disk_full");
    serve.terminate().await;
}
