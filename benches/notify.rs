//! From a signed GitHub webhook received to `chat.postMessage` sent, unthrottled (every event
//! to its own channel, so Slack's one-message-per-second-per-channel pace does not apply).
//! `cargo bench --bench notify`; SQLite, and Postgres at TEST_DATABASE_URL when reachable.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use pantheon::{
    app::{App, Options},
    clients::RetryPolicy,
    config::{FileConfig, Settings, Source},
    signature::HmacKey,
};
use sqlx::Connection as _;
use tokio::sync::mpsc;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers};

const N: usize = 200;
const SECRET: &str = "bench-webhook-secret";

struct Recorder(mpsc::UnboundedSender<(String, Instant)>);

impl Respond for Recorder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let at = Instant::now();
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let _ = self
            .0
            .send((body["channel"].as_str().unwrap_or_default().to_owned(), at));
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"ok": true, "channel": body["channel"], "ts": "1.1"}))
    }
}

async fn measure(database_url: &str) -> Vec<f64> {
    let slack = MockServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    Mock::given(matchers::path("/api/chat.postMessage"))
        .respond_with(Recorder(tx))
        .mount(&slack)
        .await;
    let mut config = String::from("[notifications]\ncoalesce_window = \"0s\"\n");
    for i in 0..N {
        config.push_str(&format!("[[routes]]\nsource = \"github\"\nmatch = {{ repository = \"acme/r{i}\" }}\nchannel = \"C{i}\"\n"));
    }
    let source = Source {
        path: "bench.toml".into(),
        text: config.into(),
    };
    let file = FileConfig::parse(&source).unwrap();
    let env = [
        ("SLACK_SIGNING_SECRET", "unused-signing-secret".to_owned()),
        ("DATABASE_URL", database_url.to_owned()),
        ("GITHUB_WEBHOOK_SECRET", SECRET.to_owned()),
        ("SLACK_BOT_TOKEN", "xoxb-bench".to_owned()),
        ("SLACK_API_URL", format!("{}/api", slack.uri())),
    ];
    let settings =
        Settings::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
            .unwrap();
    let app = App::build(Options {
        background: true,
        config: file,
        source,
        settings,
        retry: RetryPolicy::default(),
        migrate: true,
        commands: Vec::new(),
        http_timeout: pantheon::app::DEFAULT_HTTP_TIMEOUT,
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(app.serve(listener, std::future::pending()));
    pantheon::clients::install_crypto();
    let client = reqwest::Client::new();
    let key = HmacKey::new(SECRET.as_bytes());
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let mut samples = Vec::new();
    for i in 0..N {
        let body = serde_json::json!({
            "action": "opened", "repository": {"full_name": format!("acme/r{i}")}, "sender": {"login": "ann"},
            "pull_request": {"number": i, "title": "bench", "html_url": "https://github.com/x", "head": {"ref": "a"}, "base": {"ref": "main"}}
        })
        .to_string();
        let sig = format!("sha256={}", key.sign_hex(&[body.as_bytes()]));
        let start = Instant::now();
        sent.lock().unwrap().push(start);
        let resp = client
            .post(format!("{base}/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "pull_request")
            .header(
                "x-github-delivery",
                format!("bench-{i}-{}", uuid::Uuid::new_v4()),
            )
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let (channel, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(channel, format!("C{i}"));
        samples.push((at - start).as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    samples
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let at = |s: &[f64], q: f64| s[((s.len() - 1) as f64 * q) as usize];
        let dir = tempfile::tempdir().unwrap();
        let lite = format!("sqlite://{}", dir.path().join("notify.db").display());
        let s = measure(&lite).await;
        println!("webhook received → chat.postMessage (sqlite, {} events): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", s.len(), at(&s, 0.5), at(&s, 0.99), s[s.len() - 1]);
        let admin = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
            let _ = sqlx::query("DROP DATABASE IF EXISTS pantheon_bench_notify WITH (FORCE)").execute(&mut conn).await;
            sqlx::query("CREATE DATABASE pantheon_bench_notify").execute(&mut conn).await.unwrap();
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path("/pantheon_bench_notify");
            let s = measure(url.as_str()).await;
            println!("webhook received → chat.postMessage (postgres, {} events): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", s.len(), at(&s, 0.5), at(&s, 0.99), s[s.len() - 1]);
        }
    });
}
