//! Mattermost end to end, on SQLite and Postgres: its outgoing slash command and message
//! buttons in, a local stand-in for its REST API v4 out (in the shapes of Mattermost's API
//! reference: `POST /posts` answers 201 with the post, `PUT /posts/{id}/patch` 200, errors
//! are `AppError`s, a 429 is plain text with `X-RateLimit-Reset`), beside Slack in the same
//! app.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, ResponseTemplate, matchers};

use crate::{
    both_stores,
    harness::{ALICE, CHANNEL, Db, JANE, TestApp, outcomes},
    runbooks::{config, job_ended, run_next_job, write_script},
};

pub const MM_ALICE: &str = "a1icea1icea1icea1icea1icea";
pub const MM_JANE: &str = "janejanejanejanejanejaneja";
pub const MM_GUEST: &str = "guestguestguestguestguestg";
pub const MM_GONE: &str = "gonegonegonegonegonegonego";
pub const MM_REMOTE: &str = "remoteremoteremoteremotere";
pub const MM_NOBODY: &str = "nobodynobodynobodynobodyno";
pub const MM_CHANNEL: &str = "opsopsopsopsopsopsopsopsop";
const TOKEN: &str = "mm-command-token-new-0001";
const OLD_TOKEN: &str = "mm-command-token-old-0000";
const BOT_TOKEN: &str = "mm-bot-token-0000";
pub const ACTION_SECRET: &str = "0123456789abcdef0123456789abcdef-test";

/// A stand-in for a Mattermost server: REST API v4 (users, posts, patches, ephemeral posts,
/// a channel's posts) with the bot token, and the command hooks (`/hooks/commands/…`) that
/// response URLs point at.
pub async fn fake_mattermost() -> MockServer {
    let server = MockServer::start().await;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let posts = Arc::new(Mutex::new(Vec::<Value>::new()));
    let bearer = || matchers::header("authorization", format!("Bearer {BOT_TOKEN}").as_str());
    {
        let posts = posts.clone();
        Mock::given(matchers::method("POST"))
            .and(matchers::path("/api/v4/posts"))
            .and(bearer())
            .respond_with(move |req: &Request| {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let post = json!({
                    "id": format!("post{n:022}"),
                    "create_at": 1_700_000_000_000i64 + n as i64,
                    "update_at": 1_700_000_000_000i64 + n as i64,
                    "edit_at": 0, "delete_at": 0, "is_pinned": false,
                    "user_id": "botbotbotbotbotbotbotbotbo",
                    "channel_id": body["channel_id"],
                    "root_id": body["root_id"],
                    "original_id": "", "message": body["message"], "type": "",
                    "props": body["props"], "hashtags": "", "pending_post_id": "",
                });
                posts.lock().unwrap().push(post.clone());
                ResponseTemplate::new(201).set_body_json(post)
            })
            .mount(&server)
            .await;
    }
    Mock::given(matchers::method("PUT"))
        .and(matchers::path_regex(r"^/api/v4/posts/[a-z0-9]+/patch$"))
        .and(bearer())
        .respond_with(|req: &Request| {
            let id = req
                .url
                .path()
                .split('/')
                .nth(4)
                .unwrap_or_default()
                .to_owned();
            ResponseTemplate::new(200).set_body_json(json!({"id": id, "message": "patched"}))
        })
        .mount(&server)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/api/v4/posts/ephemeral"))
        .and(bearer())
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"id": "ephemeralephemeralephemera"})),
        )
        .mount(&server)
        .await;
    {
        let posts = posts.clone();
        Mock::given(matchers::method("GET"))
            .and(matchers::path_regex(r"^/api/v4/channels/[a-z0-9]+/posts$"))
            .and(bearer())
            .respond_with(move |req: &Request| {
                let channel = req.url.path().split('/').nth(4).unwrap_or_default();
                let mut order = Vec::new();
                let mut all = serde_json::Map::new();
                for p in posts
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|p| p["channel_id"] == channel)
                {
                    let id = p["id"].as_str().unwrap_or_default().to_owned();
                    order.push(json!(id));
                    all.insert(id, p.clone());
                }
                ResponseTemplate::new(200).set_body_json(json!({"order": order, "posts": all}))
            })
            .mount(&server)
            .await;
    }
    Mock::given(matchers::method("GET"))
        .and(matchers::path_regex(r"^/api/v4/users/[a-z0-9]+$"))
        .and(bearer())
        .respond_with(|req: &Request| {
            let id = req.url.path().rsplit('/').next().unwrap_or_default();
            let user = |name: &str, extra: Value| {
                let mut u = json!({
                    "id": id, "create_at": 1, "update_at": 1, "delete_at": 0,
                    "username": name, "auth_service": "", "email": format!("{name}@example.com"),
                    "nickname": "", "first_name": "", "last_name": "", "position": "",
                    "roles": "system_user", "locale": "en",
                });
                if let (Some(u), Some(extra)) = (u.as_object_mut(), extra.as_object()) {
                    u.extend(extra.clone());
                }
                ResponseTemplate::new(200).set_body_json(u)
            };
            match id {
                MM_ALICE => user("alice", json!({})),
                MM_JANE => user("jane", json!({})),
                MM_GUEST => user("gus", json!({"roles": "system_guest"})),
                MM_GONE => user("gone", json!({"delete_at": 1_700_000_000_000i64})),
                MM_REMOTE => user("remy", json!({"remote_id": "remoteclusterremoteclust00"})),
                _ => ResponseTemplate::new(404).set_body_json(json!({
                    "id": "app.user.missing_account.const",
                    "message": "We couldn't find the existing account to update.",
                    "detailed_error": "", "request_id": "xyz", "status_code": 404,
                })),
            }
        })
        .mount(&server)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path_regex(r"^/hooks/commands/[a-z0-9]+$"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    server
}

/// What the stand-in received on `method` `path` (a regex), bodies as JSON, in order.
pub async fn calls(server: &MockServer, method: &str, path: &str) -> Vec<(String, Value)> {
    let re = regex::Regex::new(path).unwrap();
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.method.as_str() == method && re.is_match(r.url.path()))
        .map(|r| {
            (
                r.url.path().to_owned(),
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Wait (up to 10 s) until the stand-in has `n` calls on `method` `path`.
pub async fn wait_calls(
    server: &MockServer,
    method: &str,
    path: &str,
    n: usize,
) -> Vec<(String, Value)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = calls(server, method, path).await;
        if got.len() >= n || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The runbooks config with Mattermost's server at `url` and Mattermost people beside Slack's
/// among the approvers.
pub fn mm_config(script: &str, url: &str, extra: &str) -> String {
    let approvers = format!(
        "approvers = [\"U02JANE\", \"U03JOE\", \"{MM_JANE}\", \"{MM_GUEST}\", \"{MM_GONE}\", \"{MM_REMOTE}\", \"{MM_NOBODY}\"]"
    );
    format!(
        "{}\n[mattermost]\nurl = \"{url}\"\ncommand = \"/ops\"\n",
        config(script, extra).replace("approvers = [\"U02JANE\", \"U03JOE\"]", &approvers)
    )
}

pub struct Mm {
    pub app: TestApp,
    pub server: MockServer,
    _dir: tempfile::TempDir,
}

pub async fn start(db: Db, test: &str, extra: &str) -> Option<Mm> {
    let server = fake_mattermost().await;
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", "echo deployed $1 $2 to $3");
    let app = TestApp::on(db, test)
        .config(&mm_config(&script, &server.uri(), extra))
        .with_slack_api()
        .stepped()
        .env("MATTERMOST_COMMAND_TOKEN", format!("{TOKEN},{OLD_TOKEN}"))
        .env("MATTERMOST_BOT_TOKEN", BOT_TOKEN)
        .env("PANTHEON_MATTERMOST_ACTION_SECRET", ACTION_SECRET)
        .start()
        .await?;
    Some(Mm {
        app,
        server,
        _dir: dir,
    })
}

/// What a command got back: its status, its JSON (Null when empty) and its correlation id.
pub struct Answered {
    pub status: u16,
    pub json: Value,
    pub correlation_id: String,
}

impl Answered {
    pub fn text(&self) -> String {
        self.json["text"].as_str().unwrap_or_default().to_owned()
    }
}

static TRIGGERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub fn trigger() -> String {
    let n = TRIGGERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("dHJpZ2dlcjp7bn06{n:08}")
}

impl Mm {
    /// Mattermost's outgoing slash command, as its server sends it.
    pub async fn command_with(&self, fields: &[(&str, &str)]) -> Answered {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let resp = self
            .app
            .client
            .post(self.app.url("/mattermost/commands"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let correlation_id = resp
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp.text().await.unwrap();
        Answered {
            status,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            correlation_id,
        }
    }

    pub async fn command(&self, user: &str, text: &str) -> Answered {
        self.command_as(user, text, TOKEN, &trigger()).await
    }

    pub async fn command_as(&self, user: &str, text: &str, token: &str, trigger: &str) -> Answered {
        let hook = format!(
            "{}/hooks/commands/hookhookhookhookhookhookho",
            self.server.uri()
        );
        let name = match user {
            MM_ALICE => "alice",
            MM_JANE => "jane",
            _ => "someone",
        };
        self.command_with(&[
            ("channel_id", MM_CHANNEL),
            ("channel_name", "ops"),
            ("command", "/ops"),
            ("response_url", &hook),
            ("team_domain", "acme"),
            ("team_id", "teamteamteamteamteamteamte"),
            ("text", text),
            ("token", token),
            ("trigger_id", trigger),
            ("user_id", user),
            ("user_name", name),
        ])
        .await
    }

    /// A click on a button, as Mattermost's server posts it to the button's URL.
    pub async fn click(
        &self,
        user: &str,
        post: &str,
        context: &Value,
        trigger: &str,
    ) -> (u16, Value) {
        let name = match user {
            MM_ALICE => "alice",
            MM_JANE => "jane",
            _ => "someone",
        };
        let body = json!({
            "user_id": user, "user_name": name,
            "channel_id": MM_CHANNEL, "channel_name": "ops",
            "team_id": "teamteamteamteamteamteamte", "team_domain": "acme",
            "post_id": post, "trigger_id": trigger, "type": "button", "data_source": "",
            "context": context,
        });
        let resp = self
            .app
            .client
            .post(self.app.url("/mattermost/actions"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Every post the bot made.
    pub async fn posts(&self) -> Vec<Value> {
        calls(&self.server, "POST", "^/api/v4/posts$")
            .await
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }
}

/// The buttons of a post (or an answer's attachments): (name, context).
pub fn buttons(props_or_answer: &Value) -> Vec<(String, Value)> {
    props_or_answer["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default().to_owned(),
                a["integration"]["context"].clone(),
            )
        })
        .collect()
}

fn button(props: &Value, name: &str) -> Value {
    buttons(props)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} button in {props}"))
        .1
}

/// The latest edit of `post` whose message says `what` (waiting up to 10 s).
async fn patch_saying(mm: &Mm, post: &str, what: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let patches = calls(&mm.server, "PUT", "/patch$").await;
        assert!(patches.iter().all(|(p, _)| p.contains(post)), "{patches:?}");
        if let Some((_, found)) = patches
            .iter()
            .rev()
            .find(|(_, b)| b["message"].as_str().unwrap_or_default().contains(what))
        {
            return found.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the post was never edited to say {what:?}: {patches:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

both_stores!(
    commands_need_a_current_token_and_run_once,
    a_runbook_approved_on_mattermost_keeps_every_rule,
    changed_expired_and_replayed_buttons_are_refused,
    outsiders_and_a_failing_api_lose_nothing,
    nobody_s_text_becomes_markdown,
    the_same_approval_on_slack_and_on_mattermost_writes_the_same_audit_rows,
    a_notification_routed_to_mattermost_is_posted_there,
);

async fn commands_need_a_current_token_and_run_once(db: Db) {
    let Some(mm) = start(db, "mm_tokens", "").await else {
        return;
    };
    let before = mm
        .app
        .services
        .store
        .recent_audit(1000)
        .await
        .unwrap()
        .len();
    for token in ["", "wrong-token", "mm-command-token-new-000"] {
        let a = mm.command_as(MM_ALICE, "help", token, &trigger()).await;
        assert_eq!(a.status, 401, "token {token:?}");
    }
    // Without the field at all.
    let a = mm
        .command_with(&[
            ("user_id", MM_ALICE),
            ("channel_id", MM_CHANNEL),
            ("text", "help"),
        ])
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(
        mm.app
            .services
            .store
            .recent_audit(1000)
            .await
            .unwrap()
            .len(),
        before,
        "nothing unauthenticated reaches the trail"
    );

    // The new token and the one being rotated out both work.
    for token in [TOKEN, OLD_TOKEN] {
        let a = mm.command_as(MM_ALICE, "help", token, &trigger()).await;
        assert_eq!(a.status, 200, "{}", a.json);
        assert_eq!(a.json["response_type"], "ephemeral");
        assert_eq!(a.json["skip_slack_parsing"], true);
        assert!(a.text().contains("deploy"), "{}", a.text());
        let rows = mm.app.audit_for(&a.correlation_id).await;
        assert_eq!(outcomes(&rows), ["succeeded"]);
        assert_eq!(rows[0].entry.actor, MM_ALICE);
        assert_eq!(rows[0].entry.channel.as_deref(), Some(MM_CHANNEL));
    }

    // The same delivery twice (its trigger_id) runs once.
    let once = trigger();
    let first = mm
        .command_as(MM_ALICE, "deploy api 1.0 to staging", TOKEN, &once)
        .await;
    assert_eq!(first.status, 200);
    let again = mm
        .command_as(MM_ALICE, "deploy api 1.0 to staging", TOKEN, &once)
        .await;
    assert_eq!(again.status, 200);
    assert!(
        again.text().contains("already received"),
        "{}",
        again.text()
    );
    let rows = mm.app.audit_for(&again.correlation_id).await;
    assert_eq!(outcomes(&rows), ["refused"]);
    assert_eq!(
        rows[0].entry.detail.as_deref(),
        Some(pantheon::dispatch::REPLAY_DETAIL)
    );
    let jobs = mm
        .app
        .within(Duration::from_secs(10), async {
            loop {
                let jobs = mm.app.services.store.jobs(None, 10).await.unwrap();
                if !jobs.is_empty() {
                    // Past the point where a second one would have been queued too.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return mm.app.services.store.jobs(None, 10).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
    assert_eq!(jobs.len(), 1, "queued once");

    // Not a Mattermost user id, or not a form.
    let a = mm.command_as("U01ALICE", "help", TOKEN, &trigger()).await;
    assert_eq!(a.status, 400);
    let resp = mm
        .app
        .client
        .post(mm.app.url("/mattermost/commands"))
        .header("content-type", "application/json")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    mm.app.stop().await;
}

/// The production deploy asked for on Mattermost: the approval post with its buttons, and the
/// click that decides it.
async fn ask_for_production(mm: &Mm) -> (i64, String, Value) {
    let a = mm.command(MM_ALICE, "deploy api 2.0.0 to production").await;
    assert_eq!(a.status, 200, "{}", a.json);
    let posts = wait_calls(&mm.server, "POST", "^/api/v4/posts$", 1).await;
    let post = posts.last().expect("the approval was posted").1.clone();
    assert_eq!(post["channel_id"], MM_CHANNEL);
    let id = mm
        .app
        .services
        .store
        .pending_approvals()
        .await
        .unwrap()
        .first()
        .expect("a pending request")
        .id;
    let request = mm
        .app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    let post_id = request.message_ref.clone().expect("its post is remembered");
    (id, post_id, post)
}

async fn a_runbook_approved_on_mattermost_keeps_every_rule(db: Db) {
    let Some(mm) = start(db, "mm_approval", "").await else {
        return;
    };
    let (id, post_id, post) = ask_for_production(&mm).await;
    let message = post["message"].as_str().unwrap();
    assert!(
        message.starts_with("#### Approval needed: deploy"),
        "{message}"
    );
    assert!(
        message.contains("@alice asks to run **deploy** on `api/production`"),
        "{message}"
    );
    let names: Vec<String> = buttons(&post["props"])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        ["Approve", "Deny", "Withdraw"],
        "no comment form on Mattermost"
    );
    let action = &post["props"]["attachments"][0]["actions"][0];
    assert_eq!(action["id"], "pantheon1");
    assert!(
        action["integration"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/mattermost/actions")
    );
    let approve = button(&post["props"], "Approve");

    // The requester cannot approve their own request; a guest listed as an approver cannot
    // either; nor can someone outside the group.
    let (status, own) = mm.click(MM_ALICE, &post_id, &approve, &trigger()).await;
    assert_eq!(status, 200);
    assert!(
        own["ephemeral_text"].as_str().unwrap().contains("your own"),
        "{own}"
    );
    let (_, guest) = mm.click(MM_GUEST, &post_id, &approve, &trigger()).await;
    assert!(
        guest["ephemeral_text"]
            .as_str()
            .unwrap()
            .contains("a guest account"),
        "{guest}"
    );
    let (_, remote) = mm.click(MM_REMOTE, &post_id, &approve, &trigger()).await;
    assert!(
        remote["ephemeral_text"]
            .as_str()
            .unwrap()
            .contains("from another workspace"),
        "{remote}"
    );
    let request = mm
        .app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.status.as_str(), "pending");

    // A peer from the group approves: the post is edited to say so, its vote buttons gone.
    let (status, approved) = mm.click(MM_JANE, &post_id, &approve, &trigger()).await;
    assert_eq!(status, 200);
    assert_eq!(
        approved,
        json!({}),
        "the post we made is edited through the API"
    );
    let edited = patch_saying(&mm, &post_id, "Approved by @jane").await;
    let left: Vec<String> = buttons(&edited["props"])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(left, ["Log"], "no more votes: {edited}");
    let request = mm
        .app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.status.as_str(), "approved");

    // The job runs and reports in the approval post's thread, and the post is edited.
    let job_id = run_next_job(&mm.app).await;
    let job = job_ended(&mm.app, job_id).await;
    assert_eq!(job.status.as_str(), "succeeded", "{job:?}");
    assert_eq!(job.thread_ref.as_deref(), Some(post_id.as_str()));
    let thread = mm
        .posts()
        .await
        .into_iter()
        .filter(|p| p["root_id"] == post_id.as_str())
        .count();
    assert!(thread >= 1, "progress in the thread");
    let last = patch_saying(&mm, &post_id, "Succeeded: deploy").await;
    // Emails (for PagerDuty) come from each person's own platform, through the one port.
    assert_eq!(
        mm.app
            .services
            .chat
            .user_email(MM_JANE)
            .await
            .unwrap()
            .as_deref(),
        Some("jane@example.com")
    );
    assert_eq!(
        mm.app.services.chat.user_email(MM_NOBODY).await.unwrap(),
        None
    );
    // The job's Log button answers the clicker alone with a link to the page.
    let log = button(&last["props"], "Log");
    let (_, answer) = mm.click(MM_JANE, &post_id, &log, &trigger()).await;
    assert!(
        answer["ephemeral_text"]
            .as_str()
            .unwrap()
            .contains("/jobs/"),
        "{answer}"
    );
    mm.app.stop().await;
}

async fn changed_expired_and_replayed_buttons_are_refused(db: Db) {
    let Some(mm) = start(db, "mm_contexts", "").await else {
        return;
    };
    let (id, post_id, post) = ask_for_production(&mm).await;
    let approve = button(&post["props"], "Approve");
    let sealed = approve["pantheon"].as_str().unwrap().to_owned();
    let before = mm
        .app
        .services
        .store
        .recent_audit(1000)
        .await
        .unwrap()
        .len();

    // Changed: another request under the same signature; a later expiry; no seal at all.
    let (exp, rest) = sealed.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    use base64::Engine as _;
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        r#"{{"do":"vote","request":{},"decision":"approve"}}"#,
        id + 1
    ));
    let later = exp.parse::<i64>().unwrap() + 86_400;
    let body = rest.split_once('.').unwrap().0;
    for forged in [
        json!({"pantheon": format!("{exp}.{other}.{sig}")}),
        json!({"pantheon": format!("{later}.{body}.{sig}")}),
        json!({"action": "approve", "request": id}),
        json!({}),
    ] {
        let (status, _) = mm.click(MM_JANE, &post_id, &forged, &trigger()).await;
        assert_eq!(status, 401, "{forged}");
    }
    assert_eq!(
        mm.app
            .services
            .store
            .recent_audit(1000)
            .await
            .unwrap()
            .len(),
        before,
        "a forged click writes nothing"
    );

    // Expired: sealed with our key, but past its time.
    let buttons = pantheon::mattermost::buttons::Buttons::new(
        ACTION_SECRET.as_bytes(),
        &mm.app.services.settings.public_url,
        Duration::from_secs(60),
    );
    let old = buttons.seal(
        &pantheon::chat::Action::Vote {
            request: id,
            decision: pantheon::domain::approval::Decision::Approve,
        },
        time::OffsetDateTime::now_utc() - time::Duration::hours(1),
    );
    let (status, expired) = mm
        .click(MM_JANE, &post_id, &json!({"pantheon": old}), &trigger())
        .await;
    assert_eq!(status, 200);
    assert!(
        expired["ephemeral_text"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{expired}"
    );
    let audit = mm.app.services.store.recent_audit(1000).await.unwrap();
    assert!(audit.iter().any(|r| r.entry.actor == MM_JANE
        && r.entry.outcome.as_str() == "refused"
        && r.entry.detail.as_deref() == Some("refused: the button has expired")));
    let request = mm
        .app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.status.as_str(), "pending");

    // Replayed: the same click (its trigger_id) twice is acted on once.
    let once = trigger();
    let (status, _) = mm.click(MM_JANE, &post_id, &approve, &once).await;
    assert_eq!(status, 200);
    let (status, _) = mm.click(MM_JANE, &post_id, &approve, &once).await;
    assert_eq!(status, 401);
    let audit = mm.app.services.store.recent_audit(1000).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.entry.action == "approval.approve" && r.entry.actor == MM_JANE)
            .count(),
        1
    );
    assert!(audit.iter().any(|r| r.entry.action == "interaction"
        && r.entry.detail.as_deref() == Some(pantheon::dispatch::REPLAY_DETAIL)));
    mm.app.stop().await;
}

async fn outsiders_and_a_failing_api_lose_nothing(db: Db) {
    let Some(mm) = start(db, "mm_outsiders", "").await else {
        return;
    };
    for (user, said) in [
        (MM_NOBODY, "unknown to the chat platform"),
        (MM_GONE, "a deactivated account"),
        (MM_GUEST, "a guest account"),
    ] {
        let a = mm.command(user, "deploy api 1.0 to staging").await;
        assert_eq!(a.status, 200);
        assert!(a.text().contains(said), "{user}: {}", a.text());
        let rows = mm.app.audit_for(&a.correlation_id).await;
        assert_eq!(outcomes(&rows), ["refused"], "{user}");
    }
    assert!(
        mm.app
            .services
            .store
            .jobs(None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Mattermost's API failing: the approval cannot be posted, so it comes back in the answer
    // (nothing is lost); a vote is refused when the voter cannot be looked up.
    let (id, post_id, post) = ask_for_production(&mm).await;
    let approve = button(&post["props"], "Approve");
    for (status, body) in [
        (
            401,
            json!({"id": "api.context.session_expired.app_error", "message": "Invalid or expired session, please login again.", "status_code": 401}),
        ),
        (
            403,
            json!({"id": "api.context.permissions.app_error", "message": "You do not have the appropriate permissions.", "status_code": 403}),
        ),
        (429, Value::Null),
        (
            500,
            json!({"id": "", "message": "Internal Server Error", "status_code": 500}),
        ),
    ] {
        mm.server.reset().await;
        let failing = match body {
            Value::Null => ResponseTemplate::new(429)
                .insert_header("X-RateLimit-Reset", "1")
                .set_body_string("limit exceeded"),
            body => ResponseTemplate::new(status).set_body_json(body),
        };
        Mock::given(matchers::path_regex("^/api/v4/.*"))
            .respond_with(failing)
            .mount(&mm.server)
            .await;
        Mock::given(matchers::path_regex("^/hooks/commands/"))
            .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
            .mount(&mm.server)
            .await;
        let a = mm.command(MM_ALICE, "deploy web 3.0 to production").await;
        assert_eq!(a.status, 200, "{status}");
        let said = a.text();
        let in_ack = a.json["response_type"] == "in_channel"
            && said.contains("Approval needed: deploy")
            && !buttons(&a.json).is_empty();
        let later = if in_ack {
            true
        } else {
            // Or through the response URL, once the post failed.
            let hooks = wait_calls(&mm.server, "POST", "^/hooks/commands/", 1).await;
            hooks.iter().any(|(_, b)| {
                b["text"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Approval needed: deploy")
                    && !buttons(b).is_empty()
            })
        };
        assert!(
            later,
            "{status}: the approval with its buttons reached the channel: {}",
            a.json
        );
        // A vote by someone not yet remembered cannot be checked: refused, nothing decided.
        let user = format!("fresh{status}fresh{status}fresh{status}fr")[..26].to_owned();
        let (code, answer) = mm.click(&user, &post_id, &approve, &trigger()).await;
        assert_eq!(code, 200);
        assert!(
            answer["ephemeral_text"]
                .as_str()
                .unwrap()
                .contains("could not confirm your account"),
            "{status}: {answer}"
        );
    }
    let request = mm
        .app
        .services
        .store
        .approval_request(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.status.as_str(), "pending");
    mm.app.stop().await;
}

async fn nobody_s_text_becomes_markdown(db: Db) {
    let Some(mm) = start(db, "mm_markdown", "").await else {
        return;
    };
    let hostile = "@channel [click me](https://evil.example) <!here> **loud** @all";
    // Quoted back in a code span (which Mattermost never scans for mentions), and as text.
    for text in [
        hostile.to_owned(),
        format!("deploy {hostile} 1.0 to staging"),
    ] {
        let a = mm.command(MM_ALICE, &text).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json["skip_slack_parsing"], true);
        let answer = a.text();
        assert!(!answer.is_empty());
        // Outside code spans nothing can mention, broadcast or link.
        let outside: String = answer
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect();
        for bad in ["@channel", "@all", "@here", "[click me](", "<!here>"] {
            assert!(!outside.contains(bad), "{bad} in {answer}");
        }
        // What the user typed is still readable.
        let read = answer.replace(['\u{200B}', '\\'], "");
        assert!(read.contains("@channel"), "{read}");
    }
    // Inside a code span the text cannot close it early.
    let a = mm.command(MM_ALICE, "x` @channel `y").await;
    let answer = a.text();
    assert!(!answer.contains("` @channel `"), "{answer}");
    mm.app.stop().await;
}

/// An audit row with the platform's ids and correlation ids taken out.
fn neutral(row: &pantheon::domain::audit::AuditRecord, ids: &[(&str, &str)]) -> String {
    let s = format!(
        "{} {} {} {}",
        row.entry.action,
        row.entry.outcome.as_str(),
        row.entry.command.as_deref().unwrap_or_default(),
        row.entry.detail.as_deref().unwrap_or_default()
    );
    // The two requests were made moments apart: their expiries may fall in different minutes.
    let expiry = regex::Regex::new(r"expires \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC").unwrap();
    let mut s = expiry.replace_all(&s, "expires T").into_owned();
    for (id, role) in ids {
        s = s.replace(id, role);
        s = s.replace(&format!("<@{role}>"), role);
    }
    format!(
        "{} by {}",
        s,
        ids.iter()
            .find(|(id, _)| *id == row.entry.actor)
            .map_or(row.entry.actor.as_str(), |(_, r)| r)
    )
}

async fn the_same_approval_on_slack_and_on_mattermost_writes_the_same_audit_rows(db: Db) {
    let Some(mm) = start(db, "mm_same_rows", "").await else {
        return;
    };
    let app = &mm.app;
    // On Slack.
    let ack = app
        .slash("deploy api 2.0.0 to production")
        .by(ALICE)
        .send()
        .await;
    assert_eq!(ack.status, 200);
    let slack_id = app
        .within(Duration::from_secs(10), async {
            loop {
                if let Some(r) = app
                    .services
                    .store
                    .pending_approvals()
                    .await
                    .unwrap()
                    .first()
                {
                    return r.id;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
    let click = app
        .click(JANE, "approval_approve", &slack_id.to_string())
        .await;
    assert_eq!(click.status, 200);
    let slack_job = run_next_job(app).await;
    job_ended(app, slack_job).await;
    // On Mattermost.
    let (mm_id, post_id, post) = ask_for_production(&mm).await;
    let (status, _) = mm
        .click(
            MM_JANE,
            &post_id,
            &button(&post["props"], "Approve"),
            &trigger(),
        )
        .await;
    assert_eq!(status, 200);
    let mm_job = run_next_job(app).await;
    job_ended(app, mm_job).await;

    let rows_of = async |request_id: i64, ids: &[(&str, &str)]| {
        let request = app
            .services
            .store
            .approval_request(request_id)
            .await
            .unwrap()
            .unwrap();
        let mut rows: Vec<String> = app
            .audit_for(&request.correlation_id)
            .await
            .iter()
            .map(|r| neutral(r, ids))
            .collect();
        let votes: Vec<String> = app
            .services
            .store
            .recent_audit(1000)
            .await
            .unwrap()
            .iter()
            .rev()
            .filter(|r| {
                r.entry.action.starts_with("approval.") && r.entry.action != "approval.request"
            })
            .filter(|r| ids.iter().any(|(id, _)| *id == r.entry.actor))
            .map(|r| neutral(r, ids))
            .collect();
        rows.extend(votes);
        rows.iter()
            .map(|r| r.replace(&format!("#{request_id}"), "#N"))
            .collect::<Vec<_>>()
    };
    let slack = rows_of(
        slack_id,
        &[
            (ALICE, "requester"),
            (JANE, "approver"),
            (CHANNEL, "channel"),
        ],
    )
    .await;
    let mm_rows = rows_of(
        mm_id,
        &[
            (MM_ALICE, "requester"),
            (MM_JANE, "approver"),
            (MM_CHANNEL, "channel"),
        ],
    )
    .await;
    let normalise = |rows: Vec<String>| -> Vec<String> {
        rows.into_iter()
            .map(|r| {
                r.replace(&format!("job #{slack_job}"), "job #J")
                    .replace(&format!("job #{mm_job}"), "job #J")
            })
            .collect()
    };
    assert!(slack.len() >= 5, "{slack:#?}");
    assert_eq!(normalise(slack), normalise(mm_rows));
    mm.app.stop().await;
}

async fn a_notification_routed_to_mattermost_is_posted_there(db: Db) {
    let routes = format!(
        r#"
[notifications]
coalesce_window = "0s"

[[routes]]
source  = "github"
events  = ["pull_request.opened"]
channel = "{MM_CHANNEL}"
platform = "mattermost"

[[routes]]
source  = "github"
events  = ["pull_request.opened"]
channel = "C0DEV"
"#
    );
    let server = fake_mattermost().await;
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", "true");
    let Some(app) = TestApp::on(db, "mm_notify")
        .config(&mm_config(&script, &server.uri(), &routes))
        .with_slack_api()
        .stepped()
        .env("MATTERMOST_BOT_TOKEN", BOT_TOKEN)
        .env("GITHUB_WEBHOOK_SECRET", "gh-secret-for-mm")
        .start()
        .await
    else {
        return;
    };
    let body = json!({
        "action": "opened", "number": 7,
        "repository": {"full_name": "acme/api", "html_url": "https://github.com/acme/api"},
        "sender": {"login": "ann"},
        "pull_request": {"number": 7, "title": "@channel look [here](https://evil.example)", "html_url": "https://github.com/acme/api/pull/7",
                         "head": {"ref": "feature"}, "base": {"ref": "main"}, "merged": false}
    })
    .to_string();
    let resp =
        crate::notifications::github(&app, "pull_request", "mm-1", &body, "gh-secret-for-mm").await;
    assert_eq!(resp.status(), 202);
    let mut pace = pantheon::notify::sender::Pace::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while calls(&server, "POST", "^/api/v4/posts$").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing posted to Mattermost"
        );
        pantheon::notify::sender::send_due(&app.services.notifications, &mut pace)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posted = calls(&server, "POST", "^/api/v4/posts$").await;
    assert_eq!(posted.len(), 1);
    let post = &posted[0].1;
    assert_eq!(post["channel_id"], MM_CHANNEL);
    let message = post["message"].as_str().unwrap();
    assert!(message.contains("acme/api"), "{message}");
    assert!(
        !message.contains("@channel") && !message.contains("[here]("),
        "{message}"
    );
    assert!(post["props"]["pantheon_post"].is_string(), "{post}");
    // The Slack route got its own copy, on Slack.
    let slack = app.slack_api.as_ref().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while crate::harness::slack_calls(slack, "chat.postMessage")
        .await
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing posted to Slack"
        );
        pantheon::notify::sender::send_due(&app.services.notifications, &mut pace)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slack_posts = crate::harness::slack_calls(slack, "chat.postMessage").await;
    assert_eq!(slack_posts[0]["channel"], "C0DEV");
    app.stop().await;
}

both_stores!(mattermost_alone_needs_no_slack);

/// Mattermost without Slack, and without a bot token: no Slack secret at all, Mattermost's
/// routes served (Slack's not); the approval comes back in the command's answer, and the click
/// on it answers with the message as it now stands.
async fn mattermost_alone_needs_no_slack(db: Db) {
    let server = fake_mattermost().await;
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "deploy.sh", "true");
    let Some(app) = TestApp::on(db, "mm_alone")
        .config(&mm_config(&script, &server.uri(), ""))
        .stepped()
        .env("SLACK_SIGNING_SECRET", "")
        .env("MATTERMOST_COMMAND_TOKEN", TOKEN)
        .env("PANTHEON_MATTERMOST_ACTION_SECRET", ACTION_SECRET)
        .start()
        .await
    else {
        return;
    };
    assert!(app.services.settings.slack_signing_secret.is_none());
    let mm = Mm {
        app,
        server,
        _dir: dir,
    };
    let a = mm.command(MM_ALICE, "whoami").await;
    assert_eq!(a.status, 200);
    assert!(a.text().contains("@alice"), "{}", a.text());
    let slack = mm
        .app
        .client
        .post(mm.app.url("/slack/commands"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(slack.status(), 404);

    let a = mm.command(MM_ALICE, "deploy api 2.0.0 to production").await;
    let held = if a.json["response_type"] == "in_channel" {
        a.json.clone()
    } else {
        wait_calls(&mm.server, "POST", "^/hooks/commands/", 1)
            .await
            .last()
            .expect("the approval through the response URL")
            .1
            .clone()
    };
    assert!(
        held["text"]
            .as_str()
            .unwrap()
            .contains("Approval needed: deploy"),
        "{held}"
    );
    assert!(mm.posts().await.is_empty(), "no bot token, no posts");
    let (status, answer) = mm
        .click(
            MM_JANE,
            "heldheldheldheldheldheldhe",
            &button(&held, "Approve"),
            &trigger(),
        )
        .await;
    assert_eq!(status, 200);
    let shown = answer["update"]["message"].as_str().unwrap();
    assert!(shown.contains("Approved by @jane"), "{answer}");
    assert!(
        mm.app
            .services
            .store
            .pending_approvals()
            .await
            .unwrap()
            .is_empty(),
        "decided"
    );
    mm.app.stop().await;
}
