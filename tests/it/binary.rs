//! The `pantheon` binary itself: serve on the SQLite default, structured logs without secrets,
//! and the other subcommands.

use std::{
    io::{Read as _, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use pantheon::signature::{HmacKey, sign_slack};

use crate::harness::{SECRET, now};

const BIN: &str = env!("CARGO_BIN_EXE_pantheon");

/// `pantheon` with an empty environment but for PATH and what the test gives.
pub(crate) fn pantheon(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Server {
    pub(crate) fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(dir, env, |_| {})
    }

    /// [`Server::start`], with a last say over the command (limits, say).
    pub(crate) fn start_with(
        dir: &Path,
        env: &[(&str, &str)],
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut env = env.to_vec();
        env.push(("LISTEN_ADDR", &addr));
        let mut cmd = pantheon(dir, &env);
        cmd.arg("serve")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        adjust(&mut cmd);
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "pantheon serve did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, addr }
    }

    /// Stop with SIGTERM (a graceful shutdown) and return everything it logged.
    pub(crate) fn stop(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut logs = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        (status, logs)
    }
}

pub(crate) fn signed_command(text: &str) -> (String, Vec<(&'static str, String)>) {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("command", "/ops")
        .append_pair("text", text)
        .append_pair("user_id", "U01ALICE")
        .append_pair("channel_id", "C1")
        .append_pair("team_id", "T1")
        .append_pair("response_url", "https://hooks.slack.com/commands/T1/1/x")
        .finish();
    let ts = now().to_string();
    let sig = sign_slack(&HmacKey::new(SECRET.as_bytes()), &ts, body.as_bytes());
    (
        body,
        vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("x-slack-request-timestamp", ts),
            ("x-slack-signature", sig),
        ],
    )
}

/// At `RUST_LOG=warn` (a usual production level) a request's warnings still carry its
/// correlation id: the request span is enabled at every level.
#[tokio::test]
async fn warnings_carry_the_correlation_id_at_warn_level() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            ("SLACK_SIGNING_SECRET", SECRET),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "warn"),
            // hooks.slack.com (the request's response_url) is then off the allow-list.
            ("RESPONSE_URL_HOSTS", "example.com"),
        ],
    );
    let client = crate::harness::client();
    let (body, headers) = signed_command("pager incidents");
    let mut req = client
        .post(format!("http://{}/slack/commands", server.addr))
        .body(body);
    for (k, v) in &headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let correlation_id = resp.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (_, logs) = server.stop();
    let refused: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "response_url refused")
        .collect();
    assert_eq!(refused.len(), 1, "{logs}");
    assert_eq!(refused[0]["level"], "WARN");
    assert_eq!(
        refused[0]["span"]["correlation_id"],
        correlation_id.as_str(),
        "{logs}"
    );
    assert!(
        !logs.contains("\"level\":\"INFO\""),
        "RUST_LOG=warn shows no info lines: {logs}"
    );
}

#[tokio::test]
async fn serve_with_only_the_signing_secret_runs_on_sqlite_and_logs_json_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let bot_token = "xoxb-1111111111-2222222222-abcdefghijklmnop";
    let server = Server::start(
        dir.path(),
        &[
            ("SLACK_SIGNING_SECRET", SECRET),
            ("LOG_FORMAT", "json"),
            ("SLACK_BOT_TOKEN", bot_token),
        ],
    );
    let client = crate::harness::client();
    let base = format!("http://{}", server.addr);
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["database"],
        "sqlite"
    );

    // A command whose text carries a token someone pasted, and one with a bad signature.
    let pasted = "xoxp-9999999999-8888888888-pasted";
    let (body, headers) = signed_command(&format!("whoami {pasted}"));
    let mut req = client
        .post(format!("{base}/slack/commands"))
        .body(body.clone());
    for (k, v) in &headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let correlation_id = resp.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let bad = client
        .post(format!("{base}/slack/commands"))
        .body(body)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", now().to_string())
        .header("x-slack-signature", format!("v0={}", "0".repeat(64)));
    assert_eq!(bad.send().await.unwrap().status(), 401);

    let (status, logs) = server.stop();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status:?}\n{logs}"
    );
    assert!(
        dir.path().join("pantheon.db").exists(),
        "the SQLite default is a file in the working directory"
    );

    let mut request_lines = 0;
    let mut audit_lines = Vec::new();
    for line in logs.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["timestamp"].is_string(),
            "{line}"
        );
        if line.contains(&correlation_id) {
            request_lines += 1;
            // Its audit row (one: it was answered at once, as invalid) is a line of its own.
            if value["message"] == "audit" {
                audit_lines.push(value["outcome"].clone());
            }
            assert_eq!(
                value["span"]["correlation_id"],
                correlation_id.as_str(),
                "{line}"
            );
        }
        for secret in [SECRET, bot_token, pasted] {
            assert!(!line.contains(secret), "a secret reached the log: {line}");
        }
    }
    assert!(
        request_lines >= 1 && audit_lines == ["invalid"],
        "the request's audit line carries its correlation id:\n{logs}"
    );
    assert!(
        logs.contains("invalid signature") || logs.contains("bad signature"),
        "{logs}"
    );

    // The audit trail holds the command with the pasted token masked.
    let store = pantheon::store::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("pantheon.db").display()
    ))
    .await
    .unwrap();
    let rows = store.audit_for(&correlation_id).await.unwrap();
    assert!(!rows.is_empty());
    for row in &rows {
        let text = serde_json::to_string(&row.entry).unwrap();
        assert!(!text.contains(pasted), "{text}");
    }
    assert_eq!(rows[0].entry.command.as_deref(), Some("whoami [REDACTED]"));
    store.close().await;
}

/// A SIGTERM while `serve` is still starting (migrating, before the port is served) is a
/// graceful shutdown: exit status 0 and "shutting down" logged, not the signal's default action
/// (an abrupt exit with the last log lines unwritten).
#[test]
fn a_sigterm_during_startup_is_a_graceful_shutdown() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = pantheon(
        dir.path(),
        &[
            ("SLACK_SIGNING_SECRET", SECRET),
            ("LISTEN_ADDR", addr.as_str()),
            ("LOG_FORMAT", "json"),
        ],
    )
    .arg("serve")
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut logs = String::new();
    // The first line `serve` logs comes before the app is built and the database migrated.
    while !logs.contains("open-files limit") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{logs}");
        logs.push_str(&line);
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    stderr.read_to_string(&mut logs).unwrap();
    assert!(status.success(), "{status:?}\n{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
}

#[test]
fn serve_without_a_signing_secret_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = pantheon(dir.path(), &[]).arg("serve").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SLACK_SIGNING_SECRET is not set"),
        "{stderr}"
    );
}

#[test]
fn check_config_summarises_a_good_file_and_locates_errors_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pantheon.toml"),
        "[groups]\nadmins = [\"U03JOE\"]\n\n[permissions]\naudit = [\"admins\"]\n",
    )
    .unwrap();
    let out = pantheon(dir.path(), &[("SLACK_SIGNING_SECRET", SECRET)])
        .arg("check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("configuration: pantheon.toml: OK"),
        "{stdout}"
    );
    assert!(stdout.contains("groups: admins (1 member)"), "{stdout}");
    assert!(stdout.contains("SLACK_SIGNING_SECRET: set"), "{stdout}");
    assert!(!stdout.contains(SECRET), "{stdout}");

    std::fs::write(
        dir.path().join("bad.toml"),
        "[groups]\nadmins = [\"U03JOE\"]\n\n[permissions]\naudti = [\"admins\"]\n",
    )
    .unwrap();
    let out = pantheon(dir.path(), &[])
        .args(["--config", "bad.toml", "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:5:1: `permissions.audti`: no command family `audti`"),
        "{stderr}"
    );

    std::fs::write(
        dir.path().join("typo.toml"),
        "[slack]\ncommand = \"/ops\"\nchanel = \"x\"\n",
    )
    .unwrap();
    let out = pantheon(dir.path(), &[("PANTHEON_CONFIG", "typo.toml")])
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("typo.toml:3:1: `slack.chanel`: unknown field `chanel`"),
        "{stderr}"
    );
}

#[test]
fn check_config_describes_deploy_safety_and_locates_overlapping_freezes() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"[groups]
sre = ["U04ANN"]

[deploy]
override_group = "sre"

[[runbooks]]
name   = "deploy"
usage  = "deploy {app} {version} to {env}"
params = { app = "^[a-z]+$", version = "^[0-9.]+$", env = "^(staging|production)$" }
target = "{app}/{env}"
run    = { kind = "command", argv = ["./deploy.sh", "{app}", "{version}", "{env}"] }
deploy = { app = "{app}", env = "{env}", version = "{version}" }

[[freezes]]
name = "weekend"
weekly = { from = "Fri 16:00", to = "Mon 08:00" }
time_zone = "Europe/Berlin"
environments = ["production"]
"#;
    std::fs::write(dir.path().join("pantheon.toml"), good).unwrap();
    let out = pantheon(dir.path(), &[("SLACK_SIGNING_SECRET", SECRET)])
        .arg("check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "deploy safety: deploys deploy; freezes weekend (Europe/Berlin); break-glass approved by `sre`"
        ),
        "{stdout}"
    );

    let overlapping = format!(
        "{good}\n[[freezes]]\nname = \"holidays\"\nfrom = \"2026-12-24 00:00\"\nto = \"2027-01-02 00:00\"\n"
    );
    std::fs::write(dir.path().join("overlap.toml"), &overlapping).unwrap();
    let out = pantheon(dir.path(), &[])
        .args(["--config", "overlap.toml", "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = overlapping
        .lines()
        .position(|l| l == "name = \"holidays\"")
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "overlap.toml:{line}:8: `freezes[1].name`: freeze `holidays` overlaps freeze `weekend` (freezes[0]) for the same runs, e.g. at"
        )),
        "{stderr}"
    );
}

/// The README's deploy safety example is a configuration `check-config` accepts.
#[test]
fn the_readme_deploy_safety_example_checks() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Deploy safety").expect("the section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pantheon.toml"),
        format!("[groups]\napprovers = [\"U02JANE\"]\nsre = [\"U04ANN\"]\n\n{block}"),
    )
    .unwrap();
    let out = pantheon(dir.path(), &[("SLACK_SIGNING_SECRET", SECRET)])
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("freezes weekend (Europe/Berlin), year-end (UTC)")
    );
}

#[test]
fn slack_manifest_comes_from_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let out = pantheon(dir.path(), &[])
        .args(["slack-manifest", "--url", "https://pantheon.example.com"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("    - command: \"/ops\"\n"), "{yaml}");
    assert!(
        yaml.contains("      url: \"https://pantheon.example.com/slack/commands\"\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("    request_url: \"https://pantheon.example.com/slack/interactions\"\n"),
        "{yaml}"
    );
    assert!(yaml.contains("      - commands  #"), "{yaml}");
    assert!(yaml.contains("      - chat:write  #"), "{yaml}");
    insta::assert_snapshot!("slack_manifest", yaml);
}

#[test]
fn a_socket_mode_manifest_has_no_request_urls() {
    let dir = tempfile::tempdir().unwrap();
    let out = pantheon(dir.path(), &[])
        .args(["slack-manifest", "--socket-mode"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("  socket_mode_enabled: true\n"), "{yaml}");
    assert!(!yaml.contains("url:"), "no request URL: {yaml}");
    // The same command, events and interactivity, delivered over the socket.
    assert!(yaml.contains("    - command: \"/ops\"\n"), "{yaml}");
    assert!(
        yaml.contains("    bot_events:\n      - app_home_opened\n      - app_mention\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("  interactivity:\n    is_enabled: true\n"),
        "{yaml}"
    );
    // The home tab and both shortcuts, as over HTTP.
    assert!(yaml.contains("    home_tab_enabled: true\n"), "{yaml}");
    assert!(
        yaml.contains("      callback_id: \"pantheon_run_runbook\"\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("      type: message\n      callback_id: \"pantheon_page_oncall\"\n"),
        "{yaml}"
    );
    // Without --socket-mode a URL is needed.
    let out = pantheon(dir.path(), &[])
        .arg("slack-manifest")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--url"),
        "{out:?}"
    );
}

#[test]
fn migrate_applies_and_lists_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let out = pantheon(dir.path(), &[("DATABASE_URL", "sqlite://ops.db")])
        .arg("migrate")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1  audit log"), "{stdout}");
    assert!(stdout.contains("sqlite database is up to date"), "{stdout}");
    assert!(dir.path().join("ops.db").exists());
}

#[test]
fn console_runs_commands_as_the_chosen_user() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pantheon.toml"),
        "[groups]\nadmins = [\"U03JOE\"]\n",
    )
    .unwrap();
    let mut child = pantheon(dir.path(), &[])
        .args(["console", "--as", "U03JOE"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "/ops whoami").unwrap();
        writeln!(stdin, "whomai").unwrap();
        writeln!(stdin, "audit 2").unwrap();
        writeln!(stdin, "/other thing").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        stdout.contains("You are <@U03JOE> (`U03JOE`). Groups: `admins`."),
        "{stdout}"
    );
    assert!(stdout.contains("Did you mean `/ops whoami`?"), "{stdout}");
    assert!(stdout.contains("Last 2 audit entries"), "{stdout}");
    assert!(stdout.contains("This Pantheon answers `/ops`."), "{stdout}");
    assert!(lines.len() >= 4);
    // The console used the same store: the file is there with the audit trail in it.
    assert!(dir.path().join("pantheon.db").exists());
}

/// `serve` with only an app token: Socket Mode on, Slack's HTTP routes off, the rest served.
/// Slack refusing the token is said plainly in the log, and the token appears nowhere.
#[tokio::test]
async fn socket_mode_refusals_are_logged_plainly_without_the_token() {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers};
    const TOKEN: &str = "xapp-1-A111-1234567890-secretsecretsecret";
    let api = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/api/apps.connections.open"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"ok": false, "error": "invalid_auth"})),
        )
        .mount(&api)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let api_url = format!("{}/api", api.uri());
    let env = [
        ("SLACK_APP_TOKEN", TOKEN),
        ("SLACK_API_URL", api_url.as_str()),
        ("LOG_FORMAT", "json"),
    ];
    let check = pantheon(dir.path(), &env)
        .arg("check-config")
        .output()
        .unwrap();
    let checked = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{checked}");
    assert!(
        checked.contains(
            "Slack transport: Socket Mode (SLACK_APP_TOKEN); Slack's HTTP routes are off"
        ),
        "{checked}"
    );
    let server = Server::start(dir.path(), &env);
    let client = crate::harness::client();
    let health = client
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let slack = client
        .post(format!("http://{}/slack/commands", server.addr))
        .body("command=%2Fops&text=whoami")
        .send()
        .await
        .unwrap();
    assert_eq!(slack.status(), 404, "nothing could verify it");
    let ready = client
        .get(format!("http://{}/readyz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    // Both connections have asked by now.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.received_requests().await.unwrap_or_default().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "apps.connections.open was not called"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, logs) = server.stop();
    assert!(status.success(), "{logs}");
    let refused: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "Socket Mode cannot connect")
        .collect();
    assert!(!refused.is_empty(), "{logs}");
    assert_eq!(refused[0]["level"], "ERROR");
    let said = refused[0]["error"].as_str().unwrap_or_default();
    assert!(
        said.contains("Slack refused the app token: invalid_auth") && said.contains("xapp-"),
        "{said}"
    );
    assert!(!logs.contains("secretsecretsecret"), "{logs}");
    assert!(!checked.contains("secretsecretsecret"), "{checked}");
}

/// What goes wrong on Socket Mode is said plainly in the log of `serve`, and nothing panics: a
/// connection cut mid-frame, one that never says hello, and frames that are not envelopes.
#[tokio::test]
async fn socket_mode_bad_input_is_logged_plainly() {
    use crate::socket_mode::{Behaviour, fake_socket_with};
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers};
    let (url, mut links) = fake_socket_with(|n| match n {
        0 => Behaviour::CutMidFrame,
        1 => Behaviour::NoHello,
        _ => Behaviour::Normal,
    })
    .await;
    let api = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/api/apps.connections.open"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true, "url": url})),
        )
        .mount(&api)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let api_url = format!("{}/api", api.uri());
    let server = Server::start(
        dir.path(),
        &[
            ("SLACK_APP_TOKEN", "xapp-1-log-test"),
            ("SLACK_API_URL", api_url.as_str()),
            ("LOG_FORMAT", "json"),
        ],
    );
    let mut link = tokio::time::timeout(Duration::from_secs(30), links.recv())
        .await
        .expect("connected in the end")
        .unwrap();
    link.to_app
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "{not json".into(),
        ))
        .unwrap();
    link.send(serde_json::json!({"type": "slash_commands", "payload": {}}))
        .await;
    for (id, kind, payload) in [
        ("e-1", "carrier_pigeon", serde_json::json!({})),
        (
            "e-2",
            "slash_commands",
            serde_json::json!({"text": "whoami"}),
        ),
        ("e-3", "interactive", serde_json::json!([1, 2])),
    ] {
        link.send(serde_json::json!({"envelope_id": id, "type": kind, "payload": payload}))
            .await;
        assert_eq!(link.next().await["envelope_id"], id);
    }
    let (status, logs) = server.stop();
    assert!(status.success(), "{logs}");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let said = |message: &str| lines.iter().filter(|l| l["message"] == message).count();
    for message in [
        "Socket Mode frame is not JSON; ignored",
        "Socket Mode frame without envelope_id; ignored",
        "Socket Mode envelope of a type we do not handle; acknowledged",
        "Socket Mode slash command not readable; acknowledged",
        "Socket Mode interaction not readable; acknowledged",
    ] {
        assert_eq!(said(message), 1, "{message}: {logs}");
    }
    let lost: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "Socket Mode connection lost")
        .filter_map(|l| l["reason"].as_str())
        .collect();
    // The cut one: tungstenite reports the half frame as an error, or the stream as ended.
    assert!(
        lost.iter()
            .any(|r| r.starts_with("read failed") || *r == "closed by Slack"),
        "{lost:?}"
    );
    assert!(
        lost.iter().any(|r| r.starts_with("no hello within")),
        "{lost:?}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn console_plays_mattermost_and_check_config_knows_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pantheon.toml"),
        "[groups]\nadmins = [\"consoleuserxxxxxxxxxxxxxxx\"]\n\n[mattermost]\nurl = \"https://chat.example.com\"\n",
    )
    .unwrap();
    let mut child = pantheon(dir.path(), &[])
        .args(["console", "--platform", "mattermost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "whoami").unwrap();
        writeln!(stdin, "@channel").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Pantheon console (mattermost), as consoleuserxxxxxxxxxxxxxxx"),
        "{stdout}"
    );
    // Mattermost Markdown: the id in a code span, groups in code spans, no Slack `<@…>`.
    assert!(
        stdout.contains("`consoleuserxxxxxxxxxxxxxxx`") && stdout.contains("`admins`"),
        "{stdout}"
    );
    assert!(!stdout.contains("<@"), "{stdout}");

    let token = "mm-command-token-for-check";
    let out = pantheon(
        dir.path(),
        &[
            ("MATTERMOST_COMMAND_TOKEN", token),
            (
                "PANTHEON_MATTERMOST_ACTION_SECRET",
                "0123456789abcdef0123456789abcdef",
            ),
        ],
    )
    .arg("check-config")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Mattermost: server https://chat.example.com; MATTERMOST_COMMAND_TOKEN: 1 token(s); MATTERMOST_BOT_TOKEN: not set; PANTHEON_MATTERMOST_ACTION_SECRET: set"),
        "{stdout}"
    );
    assert!(!stdout.contains(token), "{stdout}");
    // A command token without the key for buttons is a mistake, said plainly.
    let out = pantheon(dir.path(), &[("MATTERMOST_COMMAND_TOKEN", token)])
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PANTHEON_MATTERMOST_ACTION_SECRET is not"),
        "{stderr}"
    );
}
