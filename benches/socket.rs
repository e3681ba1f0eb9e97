//! Socket Mode: envelopes per second and envelope → ack latency over one connection.
//!
//! `cargo bench --bench socket` (SQLite; also Postgres at TEST_DATABASE_URL, default
//! postgres://postgres@127.0.0.1:5432/postgres, when it answers). A stand-in for Slack's socket
//! on 127.0.0.1 sends `ENVELOPES` slash commands (`whoami`: parsed, authorized, audited with
//! its claim, answered in the ack) over the first connection the app opens, `WINDOW` at a time
//! unacknowledged, and times each from its send to its ack.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use support::fresh_postgres;
use tokio_tungstenite::tungstenite::Message as Frame;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

mod support;

const ENVELOPES: usize = 5000;
const WINDOW: usize = 32;

/// Envelopes per second, and each envelope's send → ack time in ms (sorted).
async fn run(database_url: &str) -> (f64, Vec<f64>) {
    // The stand-in's socket: hands the first connection to the bench, keeps the others idle.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_url = format!("ws://{}/link/?ticket=bench", listener.local_addr().unwrap());
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut first_tx = Some(first_tx);
        while let Ok((tcp, _)) = listener.accept().await {
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let hello = json!({"type": "hello", "num_connections": 1,
                "debug_info": {"host": "applink-bench", "build_number": 1, "approximate_connection_time": 18060},
                "connection_info": {"app_id": "A111"}});
            ws.send(Frame::Text(hello.to_string().into()))
                .await
                .unwrap();
            match first_tx.take() {
                Some(tx) => {
                    let _ = tx.send(ws);
                }
                None => {
                    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
                }
            }
        }
    });
    let api = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/api/apps.connections.open"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true, "url": ws_url})))
        .mount(&api)
        .await;
    let responses = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&responses)
        .await;
    let env = [
        ("SLACK_APP_TOKEN", "xapp-1-bench".to_owned()),
        ("SLACK_API_URL", format!("{}/api", api.uri())),
        ("DATABASE_URL", database_url.to_owned()),
        ("RESPONSE_URL_HOSTS", "127.0.0.1".to_owned()),
    ];
    support::serve("", &env).await;
    let ws = tokio::time::timeout(Duration::from_secs(10), first_rx)
        .await
        .expect("the app connected")
        .unwrap();
    let (mut sink, mut read) = ws.split();
    let response_url = format!("{}/commands/T1/1/bench", responses.uri());
    let envelope = |n: usize| {
        json!({
            "envelope_id": format!("env-{n}"), "type": "slash_commands", "accepts_response_payload": true,
            "payload": {"team_id": "T1", "channel_id": "C1", "user_id": "U01ALICE", "user_name": "alice",
                        "command": "/ops", "text": "whoami", "response_url": response_url,
                        "trigger_id": format!("bench-{n}")},
        })
        .to_string()
    };
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut samples = Vec::with_capacity(ENVELOPES);
    let mut next = 0;
    let began = Instant::now();
    while samples.len() < ENVELOPES {
        while next < ENVELOPES && sent_at.len() < WINDOW {
            sent_at.insert(format!("env-{next}"), Instant::now());
            sink.send(Frame::Text(envelope(next).into())).await.unwrap();
            next += 1;
        }
        match read.next().await {
            Some(Ok(Frame::Text(text))) => {
                let ack: Value = serde_json::from_str(&text).unwrap();
                assert!(ack["payload"]["text"].is_string(), "an answered ack: {ack}");
                let id = ack["envelope_id"].as_str().unwrap_or_default();
                if let Some(at) = sent_at.remove(id) {
                    samples.push(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Some(Ok(Frame::Ping(p))) => sink.send(Frame::Pong(p)).await.unwrap(),
            Some(Ok(_)) => {}
            other => panic!("the connection ended: {other:?}"),
        }
    }
    let per_second = ENVELOPES as f64 / began.elapsed().as_secs_f64();
    samples.sort_by(f64::total_cmp);
    (per_second, samples)
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
        let lite = format!("sqlite://{}", dir.path().join("socket.db").display());
        let mut stores = vec![("sqlite", lite)];
        if let Some(pg) = fresh_postgres("pantheon_bench_socket").await {
            stores.push(("postgres", pg));
        }
        println!("Socket Mode, one connection, {ENVELOPES} slash commands, {WINDOW} unacknowledged at a time:");
        for (name, url) in stores {
            let (per_second, s) = run(&url).await;
            println!(
                "  {name:<8} {per_second:>7.0} envelopes/s; envelope → ack p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                at(&s, 0.5),
                at(&s, 0.99),
                s[s.len() - 1]
            );
        }
    });
}
