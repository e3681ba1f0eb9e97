//! Socket Mode against a stand-in for Slack's socket: a WebSocket server on 127.0.0.1 that
//! says `hello`, sends envelopes and `disconnect` frames in the documented shapes, and records
//! the acks; `apps.connections.open` answers with its `ws://` URL.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

use crate::{
    both_stores,
    harness::{ALICE, CHANNEL, Clicked, Db, TestApp, fake_slack_api, slack_calls},
};

both_stores!(
    a_slash_command_over_the_socket_is_answered_as_over_http,
    a_redelivered_envelope_runs_once,
    two_replicas_run_a_redelivered_envelope_once,
    a_refresh_loses_no_envelope,
    both_connections_refreshed_at_once_lose_nothing,
    a_mention_over_the_socket_is_answered_in_its_thread,
    a_button_click_over_the_socket_is_answered_as_over_http,
    a_redelivered_click_is_refused_and_says_how_it_came,
    frames_that_are_not_envelopes_do_no_harm,
    a_socket_that_fails_is_replaced,
    a_silent_socket_is_replaced_and_metrics_say_so,
    a_refused_or_rate_limited_open_is_tried_again,
);

/// One connection the app opened to the stand-in.
pub(crate) struct Link {
    pub(crate) to_app: mpsc::UnboundedSender<Frame>,
    from_app: mpsc::UnboundedReceiver<Value>,
}

impl Link {
    pub(crate) async fn send(&self, frame: Value) {
        self.to_app
            .send(Frame::Text(frame.to_string().into()))
            .expect("link open");
    }

    /// The next ack (or other JSON frame) the app sent, within 5 s.
    pub(crate) async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(5), self.from_app.recv())
            .await
            .expect("the app answered within 5 s")
            .expect("link open")
    }
}

/// How the stand-in treats one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Says hello and carries frames both ways.
    Normal,
    /// Accepts the WebSocket and never says hello.
    NoHello,
    /// Says hello, then sends half a frame and closes the connection.
    CutMidFrame,
    /// Says hello, then nothing: no frame, no pong, the connection left open.
    SilentAfterHello,
}

/// The stand-in: every connection says hello and is handed to the test.
async fn fake_socket() -> (String, mpsc::UnboundedReceiver<Link>) {
    fake_socket_with(|_| Behaviour::Normal).await
}

/// The stand-in, treating the n-th connection (from 0) as `behaviour(n)` says; only normal
/// ones are handed to the test.
pub(crate) async fn fake_socket_with(
    behaviour: impl Fn(usize) -> Behaviour + Send + 'static,
) -> (String, mpsc::UnboundedReceiver<Link>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/link/?ticket=test", listener.local_addr().unwrap());
    let (links, accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            let links = links.clone();
            let behaviour = behaviour(n);
            n += 1;
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                if behaviour == Behaviour::NoHello {
                    // Hold the connection open, silent, until the app gives up on it.
                    while let Some(Ok(_)) = ws.next().await {}
                    return;
                }
                let hello = json!({"type": "hello", "num_connections": 1,
                    "debug_info": {"host": "applink-test", "build_number": 10, "approximate_connection_time": 18060},
                    "connection_info": {"app_id": "A111"}});
                if ws
                    .send(Frame::Text(hello.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                if behaviour == Behaviour::SilentAfterHello {
                    // Held, never read (so no pong goes back), until the app drops it.
                    let _held = ws;
                    std::future::pending::<()>().await;
                    return;
                }
                if behaviour == Behaviour::CutMidFrame {
                    use tokio::io::AsyncWriteExt as _;
                    // A text frame's header announcing 126+ bytes, then nothing.
                    let tcp = ws.get_mut();
                    let _ = tcp.write_all(&[0x81, 0x7e, 0x01]).await;
                    let _ = tcp.shutdown().await;
                    return;
                }
                let (to_app, mut outgoing) = mpsc::unbounded_channel::<Frame>();
                let (acks, from_app) = mpsc::unbounded_channel();
                let _ = links.send(Link { to_app, from_app });
                loop {
                    tokio::select! {
                        frame = outgoing.recv() => match frame {
                            Some(frame) => if ws.send(frame).await.is_err() { return },
                            None => return,
                        },
                        frame = ws.next() => match frame {
                            Some(Ok(Frame::Text(text))) => {
                                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                                    let _ = acks.send(v);
                                }
                            }
                            Some(Ok(Frame::Ping(p))) => { let _ = ws.send(Frame::Pong(p)).await; }
                            Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return,
                            Some(Ok(_)) => {}
                        },
                    }
                }
            });
        }
    });
    (url, accepted)
}

/// The app on Socket Mode (and signed HTTP beside it), with a stand-in Web API that also
/// answers `apps.connections.open`.
async fn start(db: Db, test: &str) -> Option<(TestApp, MockServer, mpsc::UnboundedReceiver<Link>)> {
    let (url, links) = fake_socket().await;
    let api = fake_slack_api().await;
    open_answers(&api, &url).await;
    let app = started(db, test, &api).await?;
    Some((app, api, links))
}

/// `apps.connections.open` gives `url` to the app token.
async fn open_answers(api: &MockServer, url: &str) {
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/api/apps.connections.open"))
        .and(matchers::header(
            "authorization",
            "Bearer xapp-1-test-app-token",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true, "url": url})))
        .mount(api)
        .await;
}

/// Calls the app made to `apps.connections.open`.
async fn opens(api: &MockServer) -> usize {
    api.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/api/apps.connections.open")
        .count()
}

async fn started(db: Db, test: &str, api: &MockServer) -> Option<TestApp> {
    TestApp::on(db, test)
        .env("SLACK_APP_TOKEN", "xapp-1-test-app-token")
        .env("SLACK_BOT_TOKEN", "xoxb-socket-test-0000")
        .env("SLACK_API_URL", format!("{}/api", api.uri()))
        .start()
        .await
}

async fn link(links: &mut mpsc::UnboundedReceiver<Link>) -> Link {
    tokio::time::timeout(Duration::from_secs(10), links.recv())
        .await
        .expect("the app connected within 10 s")
        .expect("stand-in running")
}

fn slash_envelope(app: &TestApp, envelope_id: &str, trigger_id: &str, text: &str) -> Value {
    json!({
        "envelope_id": envelope_id,
        "type": "slash_commands",
        "accepts_response_payload": true,
        "payload": {
            "token": "verification-token", "team_id": "T1", "team_domain": "acme",
            "channel_id": CHANNEL, "channel_name": "ops", "user_id": ALICE, "user_name": "alice",
            "command": "/ops", "text": text, "api_app_id": "A111",
            "response_url": app.response_url(), "trigger_id": trigger_id,
        },
    })
}

/// The audit trail's last 500 rows, oldest first.
async fn trail(app: &TestApp) -> Vec<pantheon::domain::audit::AuditRecord> {
    let mut rows = app.services.store.recent_audit(500).await.unwrap();
    rows.reverse();
    rows
}

/// Rows of the audit trail whose command is `text`, oldest first.
async fn rows_for(app: &TestApp, text: &str) -> Vec<pantheon::domain::audit::AuditRecord> {
    trail(app)
        .await
        .into_iter()
        .filter(|r| r.entry.command.as_deref() == Some(text))
        .collect()
}

async fn a_slash_command_over_the_socket_is_answered_as_over_http(db: Db) {
    let Some((app, _api, mut links)) = start(db, "sm_slash").await else {
        return;
    };
    let mut link = link(&mut links).await;
    let over_http = app.slash("whoami").send().await;
    assert_eq!(over_http.status, 200);
    link.send(slash_envelope(&app, "env-1", "trig-1", "whoami"))
        .await;
    let ack = link.next().await;
    assert_eq!(ack["envelope_id"], "env-1");
    // The same answer as the HTTP route's body, in the ack's payload.
    assert_eq!(ack["payload"], over_http.json(), "{ack}");
    assert!(ack["payload"]["text"].as_str().unwrap().contains(ALICE));
    // The same audit row (one: answered at once), and the way in is said.
    let rows = rows_for(&app, "whoami").await;
    let outcomes: Vec<_> = rows.iter().map(|r| r.entry.outcome).collect();
    use pantheon::domain::audit::Outcome::*;
    assert_eq!(outcomes, [Succeeded, Succeeded], "{rows:?}");
    assert_eq!(rows[0].entry.detail, None);
    assert_eq!(rows[1].entry.detail.as_deref(), Some("over Socket Mode"));
    // A command that answers later goes through the response URL, as over HTTP.
    link.send(slash_envelope(&app, "env-2", "trig-2", "help pager"))
        .await;
    let ack = link.next().await;
    assert_eq!(ack["envelope_id"], "env-2");
    // /readyz says the socket is up.
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["socket_mode"], "connected", "{ready}");
    app.stop().await;
}

async fn a_redelivered_envelope_runs_once(db: Db) {
    let Some((app, _api, mut links)) = start(db, "sm_retry").await else {
        return;
    };
    let mut first = link(&mut links).await;
    let mut second = link(&mut links).await;
    first
        .send(slash_envelope(&app, "env-a", "trig-same", "whoami"))
        .await;
    let ack = first.next().await;
    assert!(ack["payload"]["text"].is_string(), "{ack}");
    // Slack thought it was not acknowledged and delivers it again, to the other connection.
    let mut again = slash_envelope(&app, "env-b", "trig-same", "whoami");
    again["retry_attempt"] = json!(1);
    again["retry_reason"] = json!("timeout");
    second.send(again).await;
    let ack = second.next().await;
    assert_eq!(
        ack,
        json!({"envelope_id": "env-b"}),
        "acknowledged, nothing more"
    );
    let rows = rows_for(&app, "whoami").await;
    let succeeded = rows
        .iter()
        .filter(|r| r.entry.outcome == pantheon::domain::audit::Outcome::Succeeded)
        .count();
    assert_eq!(succeeded, 1, "{rows:?}");
    app.stop().await;
}

async fn a_refresh_loses_no_envelope(db: Db) {
    let Some((app, _api, mut links)) = start(db, "sm_refresh").await else {
        return;
    };
    let mut old = link(&mut links).await;
    let _other = link(&mut links).await;
    old.send(json!({"type": "disconnect", "reason": "refresh_requested",
        "debug_info": {"host": "applink-test"}}))
        .await;
    // Slack may still send on the old connection until it closes it: answered.
    old.send(slash_envelope(&app, "env-late", "trig-late", "whoami"))
        .await;
    let ack = old.next().await;
    assert_eq!(ack["envelope_id"], "env-late");
    assert!(ack["payload"]["text"].is_string(), "{ack}");
    // And a new connection replaces it at once.
    let mut new = link(&mut links).await;
    new.send(slash_envelope(&app, "env-new", "trig-new", "whoami"))
        .await;
    let ack = new.next().await;
    assert_eq!(ack["envelope_id"], "env-new");
    app.stop().await;
}

async fn a_mention_over_the_socket_is_answered_in_its_thread(db: Db) {
    let Some((app, api, mut links)) = start(db, "sm_mention").await else {
        return;
    };
    let mut link = link(&mut links).await;
    let event = |envelope_id: &str, attempt: u64| {
        json!({
            "envelope_id": envelope_id, "type": "events_api", "accepts_response_payload": false,
            "retry_attempt": attempt, "retry_reason": if attempt == 0 { "" } else { "timeout" },
            "payload": {
                "token": "verification-token", "team_id": "T1", "api_app_id": "A111",
                "event": {"type": "app_mention", "text": "<@U0PANTHEON> whoami", "user": ALICE,
                          "ts": "1610241741.000200", "channel": CHANNEL, "event_ts": "1610241741.000200"},
                "type": "event_callback", "event_id": "Ev-socket-1", "event_time": 1610241741,
            },
        })
    };
    link.send(event("env-m1", 0)).await;
    assert_eq!(link.next().await, json!({"envelope_id": "env-m1"}));
    link.send(event("env-m2", 1)).await;
    assert_eq!(link.next().await, json!({"envelope_id": "env-m2"}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while slack_calls(&api, "chat.postMessage").await.is_empty() {
        assert!(Instant::now() < deadline, "the mention was not answered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Time for a second answer, were the redelivery run again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts = slack_calls(&api, "chat.postMessage").await;
    assert_eq!(posts.len(), 1, "answered once: {posts:?}");
    assert_eq!(posts[0]["thread_ts"], "1610241741.000200");
    assert!(
        posts[0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains(ALICE)
    );
    app.stop().await;
}

async fn frames_that_are_not_envelopes_do_no_harm(db: Db) {
    let Some((app, _api, mut links)) = start(db, "sm_bad_frames").await else {
        return;
    };
    let mut link = link(&mut links).await;
    // Not JSON, and JSON without an envelope id: nothing to acknowledge.
    link.to_app.send(Frame::Text("{not json".into())).unwrap();
    link.send(json!({"type": "slash_commands", "payload": {}}))
        .await;
    // An unknown type, a payload that is not a slash command, one that is not an interaction,
    // no payload at all: acknowledged (a redelivery would be no better), nothing run.
    link.send(json!({"envelope_id": "e-unknown", "type": "carrier_pigeon", "payload": {}}))
        .await;
    link.send(json!({"envelope_id": "e-notcmd", "type": "slash_commands",
        "accepts_response_payload": true, "payload": {"text": "whoami"}}))
        .await;
    link.send(json!({"envelope_id": "e-notclick", "type": "interactive", "payload": [1, 2]}))
        .await;
    link.send(json!({"envelope_id": "e-nopayload", "type": "events_api"}))
        .await;
    let mut acked = Vec::new();
    for _ in 0..4 {
        let ack = link.next().await;
        assert_eq!(
            ack.as_object().map(|o| o.len()),
            Some(1),
            "no payload: {ack}"
        );
        acked.push(ack["envelope_id"].as_str().unwrap().to_owned());
    }
    acked.sort();
    assert_eq!(
        acked,
        ["e-nopayload", "e-notclick", "e-notcmd", "e-unknown"]
    );
    // The connection still works, and nothing else was run.
    link.send(slash_envelope(&app, "e-good", "t-good", "whoami"))
        .await;
    let ack = link.next().await;
    assert_eq!(ack["envelope_id"], "e-good");
    assert!(ack["payload"]["text"].is_string(), "{ack}");
    assert_eq!(rows_for(&app, "whoami").await.len(), 1);
    app.assert_background_alive();
    app.stop().await;
}

async fn a_socket_that_fails_is_replaced(db: Db) {
    // The first two connections (one per slot) go wrong: one is cut off in the middle of a
    // frame, one never says hello. Both slots connect again.
    let (url, mut links) = fake_socket_with(|n| match n {
        0 => Behaviour::CutMidFrame,
        1 => Behaviour::NoHello,
        _ => Behaviour::Normal,
    })
    .await;
    let api = fake_slack_api().await;
    open_answers(&api, &url).await;
    let Some(app) = started(db, "sm_replaced", &api).await else {
        return;
    };
    let wait = Duration::from_secs(20);
    let mut first = tokio::time::timeout(wait, links.recv())
        .await
        .expect("a slot connected again")
        .unwrap();
    let mut second = tokio::time::timeout(wait, links.recv())
        .await
        .expect("the other slot connected again")
        .unwrap();
    assert!(opens(&api).await >= 4, "each slot asked for a new URL");
    for (n, link) in [&mut first, &mut second].into_iter().enumerate() {
        let id = format!("e-after-{n}");
        link.send(slash_envelope(&app, &id, &format!("t-after-{n}"), "whoami"))
            .await;
        assert_eq!(link.next().await["envelope_id"], id.as_str());
    }
    app.assert_background_alive();
    app.stop().await;
}

async fn a_refused_or_rate_limited_open_is_tried_again(db: Db) {
    let (url, mut links) = fake_socket().await;
    let api = fake_slack_api().await;
    // First a bot token's refusal and a wrong token's, then a rate limit, then the URL.
    for answer in [
        ResponseTemplate::new(200)
            .set_body_json(json!({"ok": false, "error": "not_allowed_token_type"})),
        ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": "invalid_auth"})),
        ResponseTemplate::new(429).insert_header("retry-after", "1"),
    ] {
        Mock::given(matchers::method("POST"))
            .and(matchers::path("/api/apps.connections.open"))
            .respond_with(answer)
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&api)
            .await;
    }
    open_answers(&api, &url).await;
    let Some(app) = started(db, "sm_refused", &api).await else {
        return;
    };
    // Not ready while no connection is up.
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    if app.services.inbound.live() == 0 {
        assert_eq!(ready.status(), 503);
        let body: Value = ready.json().await.unwrap();
        assert_eq!(body["socket_mode"], "disconnected", "{body}");
    }
    let mut link = tokio::time::timeout(Duration::from_secs(30), links.recv())
        .await
        .expect("connected after the refusals")
        .unwrap();
    link.send(slash_envelope(&app, "e-ok", "t-ok", "whoami"))
        .await;
    assert_eq!(link.next().await["envelope_id"], "e-ok");
    assert!(opens(&api).await >= 4);
    app.assert_background_alive();
    app.stop().await;
}

async fn a_button_click_over_the_socket_is_answered_as_over_http(db: Db) {
    let Some((app, _api, mut links)) = start(db, "sm_click").await else {
        return;
    };
    let mut link = link(&mut links).await;
    // An Approve click on a request that does not exist: claimed, decided, audited, answered
    // through the click's response URL.
    let over_http = app.click(ALICE, "approval_approve", "99").await;
    assert_eq!(over_http.status, 200);
    let http_reply = app.click_reply(&over_http).await;
    let response_url = app.response_url();
    let response_path = url::Url::parse(&response_url).unwrap().path().to_owned();
    link.send(click_envelope("env-click", "socket-click-1", &response_url))
        .await;
    assert_eq!(link.next().await, json!({"envelope_id": "env-click"}));
    let socket_reply = app
        .click_reply(&Clicked {
            status: 200,
            response_path,
        })
        .await;
    assert!(http_reply["text"].is_string(), "{http_reply}");
    assert_eq!(socket_reply, http_reply);
    // The same audit row for both clicks, the socket's saying how it came.
    let votes: Vec<_> = trail(&app)
        .await
        .into_iter()
        .filter(|r| r.entry.action == "approval.approve")
        .map(|r| (r.entry.outcome, r.entry.detail, r.entry.command))
        .collect();
    assert_eq!(votes.len(), 2, "{votes:?}");
    let (http, socket) = (&votes[0], &votes[1]);
    assert_eq!((http.0, &http.2), (socket.0, &socket.2));
    let http_detail = http.1.clone().unwrap_or_default();
    assert!(!http_detail.is_empty(), "{votes:?}");
    assert_eq!(
        socket.1.as_deref(),
        Some(format!("{http_detail} (over Socket Mode)").as_str())
    );
    app.stop().await;
}

/// An envelope carrying Alice's Approve click on approval request 99.
fn click_envelope(envelope_id: &str, trigger_id: &str, response_url: &str) -> Value {
    json!({
        "envelope_id": envelope_id, "type": "interactive", "accepts_response_payload": false,
        "payload": {
            "type": "block_actions",
            "user": {"id": ALICE, "username": "alice", "team_id": "T1"},
            "team": {"id": "T1"}, "api_app_id": "A111",
            "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": CHANNEL, "is_ephemeral": false},
            "channel": {"id": CHANNEL, "name": "ops"},
            "trigger_id": trigger_id,
            "response_url": response_url,
            "actions": [{"type": "button", "action_id": "approval_approve", "block_id": "approval",
                         "value": "99", "action_ts": "1700000001.000000"}],
        },
    })
}

async fn a_redelivered_click_is_refused_and_says_how_it_came(db: Db) {
    let Some((app, _api, mut links)) = start(db, "sm_click_again").await else {
        return;
    };
    let mut first = link(&mut links).await;
    let mut second = link(&mut links).await;
    let response_url = app.response_url();
    first
        .send(click_envelope(
            "env-c1",
            "socket-click-again",
            &response_url,
        ))
        .await;
    assert_eq!(first.next().await, json!({"envelope_id": "env-c1"}));
    // Slack delivers it again, to the other connection: acknowledged, not acted on.
    let mut again = click_envelope("env-c2", "socket-click-again", &response_url);
    again["retry_attempt"] = json!(1);
    again["retry_reason"] = json!("timeout");
    second.send(again).await;
    assert_eq!(second.next().await, json!({"envelope_id": "env-c2"}));
    let rows: Vec<_> = trail(&app)
        .await
        .into_iter()
        .filter(|r| r.entry.actor == ALICE)
        .map(|r| (r.entry.action, r.entry.outcome, r.entry.detail))
        .collect();
    let decided = rows
        .iter()
        .filter(|(action, ..)| action == "approval.approve")
        .count();
    assert_eq!(decided, 1, "the click was decided once: {rows:?}");
    let replay = pantheon::dispatch::replay_detail(pantheon::domain::audit::Transport::Socket);
    let refused: Vec<_> = rows
        .iter()
        .filter(|(action, ..)| action == "interaction")
        .collect();
    assert_eq!(
        refused,
        [&(
            "interaction".to_owned(),
            pantheon::domain::audit::Outcome::Refused,
            Some(replay)
        )],
        "the redelivery is one refused row, saying it came over Socket Mode: {rows:?}"
    );
    app.stop().await;
}

async fn two_replicas_run_a_redelivered_envelope_once(db: Db) {
    // Two processes on one database, each with its own sockets (as two replicas of one app
    // are: Slack sends each envelope to one connection of the app, whichever replica holds it).
    let (url_a, mut links_a) = fake_socket().await;
    let api_a = fake_slack_api().await;
    open_answers(&api_a, &url_a).await;
    let Some(first) = started(db, "sm_replicas", &api_a).await else {
        return;
    };
    let (url_b, mut links_b) = fake_socket().await;
    let api_b = fake_slack_api().await;
    open_answers(&api_b, &url_b).await;
    let second = TestApp::on(db, "sm_replicas")
        .on_database(first._db.borrowed())
        .env("SLACK_APP_TOKEN", "xapp-1-test-app-token")
        .env("SLACK_BOT_TOKEN", "xoxb-socket-test-0000")
        .env("SLACK_API_URL", format!("{}/api", api_b.uri()))
        .start()
        .await
        .expect("the second replica starts");
    let mut on_first = link(&mut links_a).await;
    let mut on_second = link(&mut links_b).await;
    for round in 0..5 {
        let trigger = format!("trig-replicas-{round}");
        // The first delivery, and Slack's redelivery to the other replica, at once.
        let mut again = slash_envelope(&second, &format!("b-{round}"), &trigger, "whoami");
        again["retry_attempt"] = json!(1);
        on_first
            .send(slash_envelope(
                &first,
                &format!("a-{round}"),
                &trigger,
                "whoami",
            ))
            .await;
        on_second.send(again).await;
        let (a, b) = (on_first.next().await, on_second.next().await);
        let answered = [&a, &b]
            .iter()
            .filter(|ack| ack.get("payload").is_some())
            .count();
        assert_eq!(answered, 1, "exactly one delivery ran: {a} {b}");
    }
    let rows = rows_for(&first, "whoami").await;
    let succeeded = rows
        .iter()
        .filter(|r| r.entry.outcome == pantheon::domain::audit::Outcome::Succeeded)
        .count();
    assert_eq!(succeeded, 5);
    // Each redelivery is one row, its refusal, saying how it came.
    let replay = format!("{} (over Socket Mode)", pantheon::dispatch::REPLAY_DETAIL);
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r.entry.outcome == pantheon::domain::audit::Outcome::Refused)
        .collect();
    assert_eq!(refused.len(), 5, "{rows:?}");
    assert!(
        refused
            .iter()
            .all(|r| r.entry.detail.as_deref() == Some(replay.as_str())),
        "{refused:?}"
    );
    assert_eq!(rows.len(), 10, "one row per delivery: {rows:?}");
    second.stop().await;
    first.stop().await;
}

async fn a_silent_socket_is_replaced_and_metrics_say_so(db: Db) {
    // The first connection says hello and then falls silent (no pong to our pings).
    let (url, mut links) = fake_socket_with(|n| {
        if n == 0 {
            Behaviour::SilentAfterHello
        } else {
            Behaviour::Normal
        }
    })
    .await;
    let api = fake_slack_api().await;
    open_answers(&api, &url).await;
    let Some(app) = started(db, "sm_silent", &api).await else {
        return;
    };
    let mut other = link(&mut links).await;
    other
        .send(slash_envelope(&app, "e-m", "t-m", "whoami"))
        .await;
    assert_eq!(other.next().await["envelope_id"], "e-m");
    // Nothing heard for 20 s: the silent one is given up and its slot connects again.
    let mut replaced = tokio::time::timeout(Duration::from_secs(40), links.recv())
        .await
        .expect("the silent connection was replaced")
        .unwrap();
    replaced
        .send(slash_envelope(&app, "e-r", "t-r", "whoami"))
        .await;
    assert_eq!(replaced.next().await["envelope_id"], "e-r");
    assert!(opens(&api).await >= 3);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "pantheon_socket_envelopes_total{type=\"slash_commands\"}",
        "pantheon_socket_ack_seconds",
        "pantheon_socket_reconnects_total{reason=\"lost\"}",
        "pantheon_socket_connections",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
    app.assert_background_alive();
    app.stop().await;
}

async fn both_connections_refreshed_at_once_lose_nothing(db: Db) {
    let Some((app, _api, mut links)) = start(db, "sm_refresh_both").await else {
        return;
    };
    let mut a = link(&mut links).await;
    let mut b = link(&mut links).await;
    let refresh = json!({"type": "disconnect", "reason": "refresh_requested",
        "debug_info": {"host": "applink-test"}});
    a.send(refresh.clone()).await;
    b.send(refresh).await;
    // Both old connections still answer what Slack sends them before it closes them.
    for (name, link) in [("a", &mut a), ("b", &mut b)] {
        let id = format!("late-{name}");
        link.send(slash_envelope(&app, &id, &format!("t-{id}"), "whoami"))
            .await;
        let ack = link.next().await;
        assert_eq!(ack["envelope_id"], id.as_str());
        assert!(ack["payload"]["text"].is_string(), "{ack}");
    }
    // And both are replaced.
    let mut c = link(&mut links).await;
    let mut d = link(&mut links).await;
    for (name, link) in [("c", &mut c), ("d", &mut d)] {
        let id = format!("new-{name}");
        link.send(slash_envelope(&app, &id, &format!("t-{id}"), "whoami"))
            .await;
        assert_eq!(link.next().await["envelope_id"], id.as_str());
    }
    assert_eq!(
        rows_for(&app, "whoami").await.len(),
        4,
        "four commands, each run once (one row each)"
    );
    app.stop().await;
}

both_stores!(a_form_over_the_socket_is_answered_in_its_ack);

/// `/ops deploy` over the socket opens the form; a submission's errors come back in the ack's
/// payload, and a valid one asks for the run.
async fn a_form_over_the_socket_is_answered_in_its_ack(db: Db) {
    let (url, mut links) = fake_socket().await;
    let api = fake_slack_api().await;
    open_answers(&api, &url).await;
    let dir = tempfile::tempdir().unwrap();
    let script = crate::runbooks::write_script(dir.path(), "deploy.sh", "true");
    let Some(app) = TestApp::on(db, "sm_form")
        .config(&crate::runbooks::config(&script, ""))
        .env("SLACK_APP_TOKEN", "xapp-1-test-app-token")
        .env("SLACK_BOT_TOKEN", "xoxb-socket-test-0000")
        .env("SLACK_API_URL", format!("{}/api", api.uri()))
        .start()
        .await
    else {
        return;
    };
    let mut link = link(&mut links).await;
    link.send(slash_envelope(&app, "env-form", "trig-form", "deploy"))
        .await;
    let ack = link.next().await;
    assert_eq!(
        ack,
        json!({"envelope_id": "env-form"}),
        "the form opened; nothing to say"
    );
    let opened = slack_calls(&api, "views.open").await;
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["trigger_id"], "trig-form");
    let metadata = opened[0]["view"]["private_metadata"].as_str().unwrap();
    let envelope = |id: &str, values: &[(&str, &str)]| {
        json!({
            "envelope_id": id, "type": "interactive", "accepts_response_payload": true,
            "payload": crate::forms::submission(ALICE, "pantheon_form", metadata, values),
        })
    };
    link.send(envelope(
        "env-bad",
        &[("app", "api"), ("version", "v 1"), ("env", "staging")],
    ))
    .await;
    let ack = link.next().await;
    assert_eq!(ack["envelope_id"], "env-bad");
    assert_eq!(ack["payload"]["response_action"], "errors", "{ack}");
    assert!(ack["payload"]["errors"]["version"].is_string(), "{ack}");
    link.send(envelope(
        "env-good",
        &[("app", "api"), ("version", "v1"), ("env", "production")],
    ))
    .await;
    let ack = link.next().await;
    assert_eq!(ack, json!({"envelope_id": "env-good"}));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app
        .services
        .store
        .pending_approvals()
        .await
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "no request was made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}
