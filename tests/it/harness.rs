//! The test harness: a real Pantheon on a real database (a SQLite file or a fresh Postgres
//! database), served on 127.0.0.1, driven by signed HTTP requests, with wiremock servers
//! standing in for Slack's response URLs and the vendors' APIs.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use pantheon::{
    app::{App, Options},
    clients::RetryPolicy,
    command::Declaration,
    config::{FileConfig, Settings, Source},
    domain::audit::{AuditRecord, Outcome},
    services::Services,
    signature::{HmacKey, sign_slack},
};
use sqlx::Connection as _;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const ALICE: &str = "U01ALICE";
pub const JANE: &str = "U02JANE";
pub const JOE: &str = "U03JOE";
pub const CHANNEL: &str = "C0OPS";

/// An HTTP client for tests (installs the TLS provider reqwest needs first).
pub fn client() -> reqwest::Client {
    pantheon::clients::install_crypto();
    reqwest::Client::new()
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether the Postgres half may be skipped when Postgres is unreachable (never in CI).
fn skip_postgres() -> bool {
    std::env::var("PANTHEON_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

/// `../shared` beside the project, or None (a failure in CI, a plain skip note elsewhere).
pub fn shared_dir(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.is_dir() {
        return Some(dir);
    }
    if in_ci() {
        panic!("{test}: ../shared is missing, and CI=true requires it");
    }
    eprintln!("SKIPPED {test}: ../shared is missing (it holds the vendors' fixtures)");
    None
}

/// A database of its own for one test; dropped with the test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

impl TestDb {
    /// A fresh database, or None when Postgres is unreachable outside CI (said on stderr).
    /// In CI a missing Postgres fails the test.
    pub async fn new(kind: Db, test: &str) -> Option<Self> {
        match kind {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("pantheon.db").display());
                Some(Self {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                })
            }
            Db::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = match sqlx::PgConnection::connect(&admin).await {
                    Ok(c) => c,
                    Err(e) if in_ci() => {
                        panic!("{test}: Postgres at {admin} is required in CI: {e}")
                    }
                    // Skipping is a choice made on purpose, never a silent pass.
                    Err(e) if skip_postgres() => {
                        eprintln!(
                            "SKIPPED {test} on Postgres (PANTHEON_TEST_SKIP_POSTGRES=1): cannot connect to {admin} ({e})"
                        );
                        return None;
                    }
                    Err(e) => panic!(
                        "{test}: cannot connect to Postgres at {admin} ({e}). Start it, set TEST_DATABASE_URL, or set PANTHEON_TEST_SKIP_POSTGRES=1 to skip the Postgres half on purpose"
                    ),
                };
                let name = format!("pantheon_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let mut url = url::Url::parse(&admin).expect("admin url");
                url.set_path(&format!("/{name}"));
                Some(Self {
                    url: url.to_string(),
                    _dir: None,
                    postgres: Some((admin, name)),
                })
            }
        }
    }
}

impl TestDb {
    /// The same database without the duty to drop it, for a second app beside the first
    /// (which must outlive it).
    pub fn borrowed(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            _dir: None,
            postgres: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            // Drop runs outside any runtime we may block; use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&admin)
                        .await
                        .map_err(std::io::Error::other)?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await
                    .map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(())
                })
            })
            .join();
        }
    }
}

/// Settings as a test wants them: our secret, loopback response URLs allowed.
pub fn test_settings(database_url: &str, env: &[(&str, String)]) -> Settings {
    let mut pairs: Vec<(String, String)> = vec![
        ("SLACK_SIGNING_SECRET".into(), SECRET.into()),
        ("DATABASE_URL".into(), database_url.into()),
        (
            "RESPONSE_URL_HOSTS".into(),
            "hooks.slack.com,127.0.0.1".into(),
        ),
    ];
    for (k, v) in env {
        pairs.retain(|(key, _)| key != k);
        pairs.push(((*k).to_owned(), v.clone()));
    }
    Settings::from_lookup(|name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("test settings")
}

pub struct TestAppBuilder {
    db: Db,
    test: String,
    config: String,
    env: Vec<(&'static str, String)>,
    commands: Vec<Declaration>,
    slack_api: bool,
    existing_db: Option<TestDb>,
    background: bool,
}

/// Users the fake Slack Web API knows as other than members of workspace T1.
pub const GUEST_USER: &str = "U0GUEST";
pub const DEACTIVATED_USER: &str = "U0GONE";
pub const EXTERNAL_USER: &str = "U0EXTERNAL";
pub const UNKNOWN_USER: &str = "U0NOBODY";

/// A stand-in for Slack's Web API: `auth.test` and `users.info` (see [`GUEST_USER`] and the
/// rest), `chat.postMessage` answers with a new `ts` each time and
/// remembers the message, `conversations.history` returns a channel's messages (newest first,
/// with their metadata), `chat.update` answers ok.
pub async fn fake_slack_api() -> MockServer {
    let server = MockServer::start().await;
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let history = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let posted = history.clone();
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/api/chat.postMessage"))
        .respond_with(move |req: &wiremock::Request| {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let ts = format!("1700000000.{n:06}");
            posted.lock().unwrap().push(serde_json::json!({
                "channel": body["channel"], "ts": ts, "text": body["text"], "metadata": body["metadata"]
            }));
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "ok": true, "channel": body["channel"], "ts": ts
            }))
        })
        .mount(&server)
        .await;
    Mock::given(matchers::method("GET"))
        .and(matchers::path("/api/conversations.history"))
        .respond_with(move |req: &wiremock::Request| {
            let channel = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "channel")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let messages: Vec<serde_json::Value> = history
                .lock()
                .unwrap()
                .iter()
                .rev()
                .filter(|m| m["channel"] == channel.as_str())
                .cloned()
                .collect();
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"ok": true, "messages": messages, "has_more": false}),
            )
        })
        .mount(&server)
        .await;
    // The workspace is T1; users.info knows everyone as a member of it, except a guest, a
    // deactivated account, someone from another workspace and someone unknown (see the ids).
    Mock::given(matchers::path("/api/auth.test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "ok": true, "url": "https://acme.slack.com/", "team": "Acme", "user": "pantheon",
            "team_id": "T1", "user_id": "U0BOT", "bot_id": "B0BOT"
        })))
        .mount(&server)
        .await;
    Mock::given(matchers::method("GET"))
        .and(matchers::path("/api/users.info"))
        .respond_with(|req: &wiremock::Request| {
            let user = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "user")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let answer = match user.as_str() {
                UNKNOWN_USER => serde_json::json!({"ok": false, "error": "user_not_found"}),
                _ => serde_json::json!({"ok": true, "user": {
                    "id": user,
                    "team_id": if user == EXTERNAL_USER { "T2OTHER" } else { "T1" },
                    "name": user.to_lowercase(),
                    "deleted": user == DEACTIVATED_USER,
                    "is_bot": false,
                    "is_restricted": user == GUEST_USER,
                    "is_ultra_restricted": false,
                    "profile": {"email": format!("{}@acme.test", user.to_lowercase())}
                }}),
            };
            ResponseTemplate::new(200).set_body_json(answer)
        })
        .mount(&server)
        .await;
    // Views: a trigger id `expired` is refused as Slack refuses one past its 3 s.
    for method in ["views.open", "views.update", "views.publish"] {
        Mock::given(matchers::method("POST"))
            .and(matchers::path(format!("/api/{method}")))
            .respond_with(|req: &wiremock::Request| {
                let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
                if body["trigger_id"] == "expired" {
                    return ResponseTemplate::new(200).set_body_json(
                        serde_json::json!({"ok": false, "error": "expired_trigger_id"}),
                    );
                }
                let mut view = body["view"].clone();
                view["id"] = serde_json::json!("V0TEST");
                view["team_id"] = serde_json::json!("T1");
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"ok": true, "view": view}))
            })
            .mount(&server)
            .await;
    }
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/api/chat.postEphemeral"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"ok": true, "message_ts": "1700000000.999999"})),
        )
        .mount(&server)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/api/chat.update"))
        .respond_with(|req: &wiremock::Request| {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"ok": true, "channel": body["channel"], "ts": body["ts"]}),
            )
        })
        .mount(&server)
        .await;
    server
}

/// Bodies sent to one Slack API method, in order.
pub async fn slack_calls(server: &MockServer, method: &str) -> Vec<serde_json::Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == format!("/api/{method}"))
        .map(|r| serde_json::from_slice(&r.body).unwrap_or_default())
        .collect()
}

impl TestAppBuilder {
    /// Run on a database another app used (see [`TestApp::stop_keeping_db`]).
    pub fn on_database(mut self, db: TestDb) -> Self {
        self.existing_db = Some(db);
        self
    }

    /// Give the app a bot token and a fake Slack Web API (`app.slack_api`).
    /// No background loops: the test runs workers, reaper, expirer and sender one step at a
    /// time (`pantheon::runbooks::jobs::run_next` and the like), so it never waits for a loop to notice.
    pub fn stepped(mut self) -> Self {
        self.background = false;
        self
    }

    pub fn with_slack_api(mut self) -> Self {
        self.slack_api = true;
        self
    }

    pub fn config(mut self, toml: &str) -> Self {
        self.config = toml.to_owned();
        self
    }

    pub fn env(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.env.push((key, value.into()));
        self
    }

    pub fn command(mut self, declaration: Declaration) -> Self {
        self.commands.push(declaration);
        self
    }

    /// Start the app, or None when its database is unavailable outside CI.
    pub async fn start(mut self) -> Option<TestApp> {
        let db = match self.existing_db.take() {
            Some(db) => db,
            None => TestDb::new(self.db, &self.test).await?,
        };
        let slack_api = if self.slack_api {
            let server = fake_slack_api().await;
            self.env
                .push(("SLACK_BOT_TOKEN", "xoxb-test-bot-token-0000".into()));
            self.env
                .push(("SLACK_API_URL", format!("{}/api", server.uri())));
            Some(server)
        } else {
            None
        };
        let source = Source {
            path: "pantheon.toml".into(),
            text: self.config.clone().into(),
        };
        let config = FileConfig::parse(&source).expect("test config parses");
        let settings = test_settings(&db.url, &self.env);
        let app = App::build(Options {
            background: self.background,
            config,
            source,
            settings,
            retry: RetryPolicy::fast(),
            migrate: true,
            commands: self.commands,
            // Long enough that a local stub on a busy machine answers in time; the tests of
            // timeouts make their stubs wait far longer than this.
            http_timeout: Duration::from_millis(1500),
        })
        .await
        .expect("app builds");
        let services = app.services.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            app.serve(listener, async {
                let _ = stopped.await;
            })
            .await
        });
        let slack = MockServer::start().await;
        Mock::given(matchers::method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
            .mount(&slack)
            .await;
        Some(TestApp {
            slack_api,
            base: format!("http://{addr}"),
            client: crate::harness::client(),
            services,
            response_url_server: slack,
            _db: db,
            stop: Some(stop),
            server: Some(server),
        })
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub services: Arc<Services>,
    /// Stands in for hooks.slack.com: every POST gets 200.
    pub response_url_server: MockServer,
    /// Stands in for slack.com/api when the app was built `with_slack_api`.
    pub slack_api: Option<MockServer>,
    /// Kept so the database lives as long as the app.
    pub _db: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Panics print one line, with no backtrace. The default hook captures and symbolises a
/// backtrace on the first panic when `RUST_BACKTRACE` is set, which on a busy machine can take
/// longer than a test's timeouts: a handler that panics on purpose must not race them.
pub fn cheap_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let thread = std::thread::current();
            eprintln!(
                "thread '{}' panicked at {}: {}",
                thread.name().unwrap_or("<unnamed>"),
                info.location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default(),
                info.payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            );
        }));
    });
}

impl TestApp {
    pub fn on(db: Db, test: &str) -> TestAppBuilder {
        cheap_panics();
        TestAppBuilder {
            db,
            test: test.to_owned(),
            config: String::new(),
            env: Vec::new(),
            commands: Vec::new(),
            slack_api: false,
            existing_db: None,
            background: true,
        }
    }

    /// A signed `block_actions` click by `user` on button `action_id` with `value`.
    pub async fn click(&self, user: &str, action_id: &str, value: &str) -> Clicked {
        let signed = self.signed_click(user, action_id, value);
        let acked = self.post_signed(&signed).await;
        Clicked {
            status: acked.status,
            response_path: acked.response_path,
        }
    }

    /// The ephemeral answer (or message replacement) posted for a click.
    pub async fn click_reply(&self, clicked: &Clicked) -> serde_json::Value {
        let acked = Acked {
            status: clicked.status,
            body: String::new(),
            correlation_id: String::new(),
            response_path: clicked.response_path.clone(),
        };
        self.reply(&acked).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The response URL tests pass by default: a path of its own on the local receiver, so
    /// each command's reply can be told apart.
    pub fn response_url(&self) -> String {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}/commands/T1/{n}/abc", self.response_url_server.uri())
    }

    /// The reply posted to this command's response URL (waiting up to 10 s; Null if none).
    pub async fn reply(&self, acked: &Acked) -> serde_json::Value {
        self.replies_to(acked, 1)
            .await
            .pop()
            .unwrap_or(serde_json::Value::Null)
    }

    /// The first `n` replies posted to this command's response URL, in order.
    pub async fn replies_to(&self, acked: &Acked, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let received: Vec<serde_json::Value> = self
                .response_url_server
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .filter(|r| r.url.path() == acked.response_path)
                .map(|r| serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
                .collect();
            if received.len() >= n || Instant::now() > deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The text of this command's reply.
    pub async fn reply_text(&self, acked: &Acked) -> String {
        self.reply(acked).await["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A signed slash command: `app.slash("/ops help").by(ALICE).send()`.
    pub fn slash(&self, text: &str) -> SlashRequest<'_> {
        let text = text.strip_prefix("/ops").map_or(text, str::trim_start);
        SlashRequest {
            app: self,
            text: text.to_owned(),
            user: ALICE.to_owned(),
            channel: CHANNEL.to_owned(),
            response_url: self.response_url(),
            timestamp: None,
            secret: SECRET.to_owned(),
            trigger: "1.2.3".to_owned(),
        }
    }

    /// POST a body signed (or not) as the caller chooses.
    pub async fn post_slack(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, String)],
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().await.expect("request sent")
    }

    /// The text of every stored line of a job's log, in order.
    pub async fn job_log_lines(&self, job_id: i64) -> Vec<String> {
        self.services
            .store
            .job_logs(job_id, None)
            .await
            .expect("job log readable")
            .into_iter()
            .map(|l| l.line)
            .collect()
    }

    pub async fn audit_for(&self, correlation_id: &str) -> Vec<AuditRecord> {
        self.services
            .store
            .audit_for(correlation_id)
            .await
            .expect("audit readable")
    }

    /// Wait (up to 10 s) until the request's audit trail ends with a final outcome.
    pub async fn finished_audit(&self, correlation_id: &str) -> Vec<AuditRecord> {
        self.audit_until(correlation_id, |rows| {
            rows.iter().any(|r| {
                matches!(
                    r.entry.outcome,
                    Outcome::Succeeded | Outcome::Failed | Outcome::Refused | Outcome::Invalid
                )
            })
        })
        .await
    }

    /// The request's audit trail once `done` says it is complete (or as it is after 10 s):
    /// rows written after an answer that did not wait for them land a moment later.
    pub async fn audit_until(
        &self,
        correlation_id: &str,
        done: impl Fn(&[AuditRecord]) -> bool,
    ) -> Vec<AuditRecord> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = self.audit_for(correlation_id).await;
            if done(&rows) || Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Bodies POSTed to the response URL receiver so far, waiting (up to 10 s) for `n`.
    pub async fn replies(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let received = self
                .response_url_server
                .received_requests()
                .await
                .unwrap_or_default();
            if received.len() >= n || Instant::now() > deadline {
                return received
                    .iter()
                    .map(|r| serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop the app but keep its database for another.
    pub async fn stop_keeping_db(self) -> TestDb {
        self.assert_background_alive();
        let TestApp {
            services,
            stop,
            server,
            _db,
            ..
        } = self;
        drop(services);
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(server) = server {
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
        _db
    }

    /// `future`, which must finish within `limit` with every background loop still alive.
    pub async fn within<T>(
        &self,
        limit: Duration,
        future: impl std::future::Future<Output = T>,
    ) -> T {
        let out = tokio::time::timeout(limit, future).await;
        self.assert_background_alive();
        out.unwrap_or_else(|_| panic!("not done within {limit:?}"))
    }

    /// Fails the test if a background loop ended before it was stopped (a panic in a worker,
    /// the sender or the reaper would otherwise only show as a later timeout).
    pub fn assert_background_alive(&self) {
        let died = self.services.background.died();
        assert!(died.is_empty(), "background tasks died: {died:?}");
    }

    pub async fn stop(self) {
        self.assert_background_alive();
        let TestApp {
            services,
            stop,
            server,
            _db,
            ..
        } = self;
        // The audit writer stops once every handle is gone, ours included.
        drop(services);
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(server) = server {
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
        drop(_db);
    }
}

pub fn outcomes(rows: &[AuditRecord]) -> Vec<&'static str> {
    rows.iter().map(|r| r.entry.outcome.as_str()).collect()
}

pub struct SlashRequest<'a> {
    app: &'a TestApp,
    text: String,
    user: String,
    channel: String,
    response_url: String,
    timestamp: Option<i64>,
    secret: String,
    trigger: String,
}

/// A click's HTTP status and the response URL it carried.
pub struct Clicked {
    pub status: u16,
    pub response_path: String,
}

/// What came back: status, body, and the correlation id to look the request up by.
pub struct Acked {
    pub status: u16,
    pub body: String,
    pub correlation_id: String,
    /// The path of the response URL this command was sent with.
    pub response_path: String,
}

impl Acked {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The acknowledgement's text (empty if none).
    pub fn text(&self) -> String {
        self.json()["text"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl SlashRequest<'_> {
    pub fn by(mut self, user: &str) -> Self {
        self.user = user.to_owned();
        self
    }

    pub fn response_url(mut self, url: &str) -> Self {
        self.response_url = url.to_owned();
        self
    }

    pub fn timestamp(mut self, ts: i64) -> Self {
        self.timestamp = Some(ts);
        self
    }

    /// The `trigger_id` Slack gives the command (`expired` makes the fake `views.open` refuse).
    pub fn trigger(mut self, trigger: &str) -> Self {
        self.trigger = trigger.to_owned();
        self
    }

    pub fn signed_with(mut self, secret: &str) -> Self {
        self.secret = secret.to_owned();
        self
    }

    pub fn body(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("token", "deprecated")
            .append_pair("team_id", "T1")
            .append_pair("team_domain", "acme")
            .append_pair("channel_id", &self.channel)
            .append_pair("channel_name", "ops")
            .append_pair("user_id", &self.user)
            .append_pair("user_name", "someone")
            .append_pair("command", "/ops")
            .append_pair("text", &self.text)
            .append_pair("response_url", &self.response_url)
            .append_pair("trigger_id", &self.trigger)
            .append_pair("api_app_id", "A1")
            .finish()
    }

    /// The signed request as it would be posted: body and headers. Posting it twice is what a
    /// replay looks like.
    pub fn signed(&self) -> SignedRequest {
        let body = self.body();
        let ts = self.timestamp.unwrap_or_else(now).to_string();
        let sig = sign_slack(&HmacKey::new(self.secret.as_bytes()), &ts, body.as_bytes());
        SignedRequest {
            path: "/slack/commands",
            body,
            headers: vec![
                ("content-type", "application/x-www-form-urlencoded".into()),
                ("x-slack-request-timestamp", ts),
                ("x-slack-signature", sig),
            ],
            response_path: url::Url::parse(&self.response_url)
                .map(|u| u.path().to_owned())
                .unwrap_or_default(),
        }
    }

    pub async fn send(self) -> Acked {
        let signed = self.signed();
        self.app.post_signed(&signed).await
    }
}

/// A signed Slack request, ready to post (as often as a test likes).
#[derive(Clone)]
pub struct SignedRequest {
    pub path: &'static str,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
    /// The path of the response URL in the body.
    pub response_path: String,
}

impl TestApp {
    /// Post a signed request as it is.
    pub async fn post_signed(&self, signed: &SignedRequest) -> Acked {
        let resp = self
            .post_slack(signed.path, signed.body.clone(), &signed.headers)
            .await;
        let status = resp.status().as_u16();
        let correlation_id = resp
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.text().await.unwrap_or_default();
        Acked {
            status,
            body,
            correlation_id,
            response_path: signed.response_path.clone(),
        }
    }

    /// A signed `@pantheon <text>` mention by `user` in the test channel (each with an event id
    /// of its own); returns the HTTP status. The answer is posted in the thread (`slack_api`).
    pub async fn mention(&self, user: &str, text: &str) -> u16 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = serde_json::json!({
            "type": "event_callback", "team_id": "T1", "event_id": format!("EvTest{n}"),
            "event": {"type": "app_mention", "user": user, "text": format!("<@U0BOT> {text}"),
                      "channel": CHANNEL, "ts": format!("1700000100.{n:06}")}
        })
        .to_string();
        let ts = now().to_string();
        let sig = sign_slack(&HmacKey::new(SECRET.as_bytes()), &ts, body.as_bytes());
        self.post_slack(
            "/slack/events",
            body,
            &[
                ("content-type", "application/json".into()),
                ("x-slack-request-timestamp", ts),
                ("x-slack-signature", sig),
            ],
        )
        .await
        .status()
        .as_u16()
    }

    /// Any interaction payload, signed as Slack signs `/slack/interactions` posts, and posted;
    /// the HTTP status and body.
    pub async fn interact(&self, payload: &serde_json::Value) -> (u16, String) {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let ts = now().to_string();
        let sig = sign_slack(&HmacKey::new(SECRET.as_bytes()), &ts, body.as_bytes());
        let resp = self
            .post_slack(
                "/slack/interactions",
                body,
                &[
                    ("content-type", "application/x-www-form-urlencoded".into()),
                    ("x-slack-request-timestamp", ts),
                    ("x-slack-signature", sig),
                ],
            )
            .await;
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// A signed Events API delivery of `event` (each with an event id of its own); the status.
    pub async fn event(&self, event: serde_json::Value) -> u16 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = serde_json::json!({
            "type": "event_callback", "team_id": "T1", "api_app_id": "A1",
            "event_id": format!("EvHome{n}"), "event_time": now(), "event": event
        })
        .to_string();
        let ts = now().to_string();
        let sig = sign_slack(&HmacKey::new(SECRET.as_bytes()), &ts, body.as_bytes());
        self.post_slack(
            "/slack/events",
            body,
            &[
                ("content-type", "application/json".into()),
                ("x-slack-request-timestamp", ts),
                ("x-slack-signature", sig),
            ],
        )
        .await
        .status()
        .as_u16()
    }

    /// A signed `block_actions` click, ready to post.
    pub fn signed_click(&self, user: &str, action_id: &str, value: &str) -> SignedRequest {
        let response_url = self.response_url();
        let payload = serde_json::json!({
            "type": "block_actions",
            "user": {"id": user, "username": "someone", "team_id": "T1"},
            "team": {"id": "T1"},
            "api_app_id": "A1",
            "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": CHANNEL, "is_ephemeral": false},
            "channel": {"id": CHANNEL, "name": "ops"},
            "trigger_id": "1.2.3",
            "response_url": response_url,
            "actions": [{"type": "button", "action_id": action_id, "block_id": "approval", "value": value, "action_ts": "1700000001.000000"}]
        });
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let ts = now().to_string();
        let sig = sign_slack(&HmacKey::new(SECRET.as_bytes()), &ts, body.as_bytes());
        SignedRequest {
            path: "/slack/interactions",
            body,
            headers: vec![
                ("content-type", "application/x-www-form-urlencoded".into()),
                ("x-slack-request-timestamp", ts),
                ("x-slack-signature", sig),
            ],
            response_path: url::Url::parse(&response_url)
                .map(|u| u.path().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// Run a test body on SQLite and on Postgres: `both_stores!(name)` makes `name::sqlite` and
/// `name::postgres` from `async fn name(db: Db)`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::harness::Db::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::harness::Db::Postgres).await;
                }
            }
        )*
    };
}
