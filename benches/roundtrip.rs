//! Command round trip through local stubs: a signed `/ops pager incidents` sent to the real
//! server (SQLite store), PagerDuty answered by a local wiremock stub, and the time until the
//! reply reaches the local response URL. `cargo bench --bench roundtrip`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use pantheon::{
    app::{App, Options},
    clients::RetryPolicy,
    config::{FileConfig, Settings, Source},
    signature::{HmacKey, sign_slack},
};
use tokio::sync::Notify;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// Signals each reply's arrival.
struct Arrived(Arc<Notify>);

impl Respond for Arrived {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.notify_one();
        ResponseTemplate::new(200)
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let arrived = Arc::new(Notify::new());
    let (base, client, hooks) = rt.block_on(async {
        let pd = MockServer::start().await;
        let incidents: Vec<serde_json::Value> = (0..20)
            .map(|i| serde_json::json!({"id": format!("PT{i}"), "incident_number": i, "title": "disk full", "status": "triggered", "urgency": "high", "html_url": "https://acme.pagerduty.com/incidents/x", "created_at": "2026-11-24T01:00:00Z", "service": {"id": "S", "summary": "api"}, "assignments": []}))
            .collect();
        Mock::given(matchers::path("/incidents"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"incidents": incidents, "more": false})))
            .mount(&pd)
            .await;
        let hooks = MockServer::start().await;
        Mock::given(matchers::method("POST")).respond_with(Arrived(arrived.clone())).mount(&hooks).await;
        let pd_url = pd.uri();
        let db = format!("sqlite://{}", dir.path().join("bench.db").display());
        let env = [
            ("SLACK_SIGNING_SECRET", SECRET.to_owned()),
            ("DATABASE_URL", db),
            ("RESPONSE_URL_HOSTS", "127.0.0.1".to_owned()),
            ("PAGERDUTY_API_TOKEN", "bench-token".to_owned()),
            ("PAGERDUTY_API_URL", pd_url),
        ];
        let settings = Settings::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
        let app = App::build(Options {
            background: true,
            config: FileConfig::default(),
            source: Source::default(),
            settings,
            retry: RetryPolicy::default(),
            migrate: true,
            commands: Vec::new(),
            http_timeout: pantheon::app::DEFAULT_HTTP_TIMEOUT,
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(app.serve(listener, std::future::pending()));
        // Keep the stubs alive for the whole run.
        std::mem::forget(pd);
        pantheon::clients::install_crypto();
        (format!("http://{addr}"), reqwest::Client::new(), hooks)
    });
    let response_url = format!("{}/commands/T1/1/x", hooks.uri());
    let samples = Arc::new(Mutex::new(Vec::new()));
    let key = HmacKey::new(SECRET.as_bytes());

    c.bench_function("pager_incidents_round_trip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let body = form_urlencoded::Serializer::new(String::new())
                        .append_pair("command", "/ops")
                        .append_pair("text", "pager incidents")
                        .append_pair("user_id", "U1")
                        .append_pair("channel_id", "C1")
                        .append_pair("response_url", &response_url)
                        .finish();
                    let ts = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
                    let sig = sign_slack(&key, &ts, body.as_bytes());
                    let wait = arrived.notified();
                    tokio::pin!(wait);
                    wait.as_mut().enable();
                    let start = Instant::now();
                    let resp = client
                        .post(format!("{base}/slack/commands"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("x-slack-request-timestamp", ts)
                        .header("x-slack-signature", sig)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    wait.await;
                    let took = start.elapsed();
                    samples.lock().unwrap().push(took);
                    total += took;
                }
                total
            })
        })
    });

    let mut all = samples.lock().unwrap().clone();
    all.sort();
    if !all.is_empty() {
        let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
        println!(
            "round trip over {} commands: median {:?}, p90 {:?}, p99 {:?}",
            all.len(),
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
