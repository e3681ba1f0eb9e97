//! Contract tests: every PagerDuty and GitHub call the commands make, sent to Stoplight Prism
//! serving the vendors' official OpenAPI documents (../shared/openapi), which validates each
//! request against the spec. A recording proxy between Pantheon and Prism keeps every call and
//! Prism's verdict.
//!
//! Prism comes from tests/tools (`npm ci`, which scripts/test runs). These tests run in CI;
//! elsewhere they are skipped only when ../shared/openapi is absent.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::HeaderMap, response::Response};

use crate::harness::{Db, JOE, TestApp, outcomes, shared_dir};

/// Prism serving one spec, killed on drop.
struct Prism {
    child: Child,
    url: String,
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prism(spec: PathBuf) -> Prism {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/node_modules/.bin/prism");
    assert!(
        bin.exists(),
        "Prism is not installed: run `npm ci` in tests/tools (scripts/test does it)"
    );
    let mut child = Command::new(bin)
        .args(["mock", "-h", "127.0.0.1", "-p", "0"])
        .arg(spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("prism starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Read Prism's log until it says where it listens; keep draining it afterwards.
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && let Some(at) = line.find("Prism is listening on ") {
                let url = line[at + "Prism is listening on ".len()..]
                    .trim()
                    .to_owned();
                let _ = tx.send(url);
                sent = true;
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(90))
        .expect("prism listening within 90 s");
    Prism { child, url }
}

#[derive(Debug, Clone)]
struct Call {
    method: String,
    target: String,
    status: u16,
    violations: String,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    calls: Arc<Mutex<Vec<Call>>>,
}

async fn forward(
    State(proxy): State<Proxy>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut req = proxy
        .client
        .request(method.clone(), format!("{}{target}", proxy.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            req = req.header(name, value);
        }
    }
    let resp = req.send().await.expect("prism answers");
    let status = resp.status();
    let violations = resp
        .headers()
        .get("sl-violations")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let out_headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    proxy.calls.lock().unwrap().push(Call {
        method: method.to_string(),
        target,
        status: status.as_u16(),
        violations: if status.is_success() {
            violations
        } else {
            String::from_utf8_lossy(&bytes).into_owned() + &violations
        },
    });
    let mut builder = Response::builder().status(status.as_u16());
    for (name, value) in &out_headers {
        if name != "content-length" && name != "transfer-encoding" {
            builder = builder.header(name, value);
        }
    }
    builder.body(axum::body::Body::from(bytes)).unwrap()
}

async fn start_proxy(upstream: &str) -> (String, Arc<Mutex<Vec<Call>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let proxy = Proxy {
        upstream: upstream.trim_end_matches('/').to_owned(),
        client: crate::harness::client(),
        calls: calls.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), calls)
}

/// A call passes when Prism accepted it: a 2xx and no request violation.
fn accepted(call: &Call) -> bool {
    (200..300).contains(&call.status) && !call.violations.contains("\"request\"")
}

fn report(calls: &[Call]) -> String {
    calls
        .iter()
        .map(|c| {
            format!(
                "{} {} {} -> {} {}",
                if accepted(c) { "ok " } else { "BAD" },
                c.method,
                c.target,
                c.status,
                c.violations
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Run `commands` (as Joe, an admin) and require each to succeed, with every vendor call
/// accepted. Returns the calls made.
async fn run_all(app: &TestApp, calls: &Arc<Mutex<Vec<Call>>>, commands: &[&str]) -> Vec<Call> {
    for text in commands {
        let before = calls.lock().unwrap().len();
        let ack = app.slash(text).by(JOE).send().await;
        assert_eq!(ack.status, 200, "{text}: {}", ack.body);
        let rows = app.finished_audit(&ack.correlation_id).await;
        let reply = app.reply_text(&ack).await;
        let made: Vec<Call> = calls.lock().unwrap()[before..].to_vec();
        assert!(
            !made.is_empty(),
            "`{text}` made no vendor call; reply: {reply}"
        );
        assert!(
            made.iter().all(accepted),
            "`{text}`: a call was rejected by the spec validator:\n{}",
            report(&made)
        );
        assert_eq!(
            outcomes(&rows).last(),
            Some(&"succeeded"),
            "`{text}` failed: {reply}\n{}",
            report(&made)
        );
    }
    calls.lock().unwrap().clone()
}

const PD_CONFIG: &str = r#"
[groups]
admins = ["U03JOE"]

[pagerduty]
default_service = "PIJ90N7"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pagerduty_call_passes_the_spec_validator() {
    let Some(shared) = shared_dir("PagerDuty contract") else {
        return;
    };
    let prism = start_prism(shared.join("openapi/pagerduty-rest-openapiv3.json"));
    let (proxy, calls) = start_proxy(&prism.url).await;
    let app = TestApp::on(Db::Sqlite, "pd_contract")
        .config(PD_CONFIG)
        .env("PAGERDUTY_API_TOKEN", "contract-test-token")
        .env("PAGERDUTY_API_URL", proxy)
        .start()
        .await
        .expect("sqlite app");
    // The spec's example user is the one every `/users` query returns.
    let me = "125.greenholt.earline@graham.name";
    let all = run_all(
        &app,
        &calls,
        &[
            &format!("pager me as {me}"),
            "pager incidents",
            "pager ack PT4KHLK",
            "pager ack",
            "pager ack!",
            "pager resolve PT4KHLK",
            "pager resolve",
            "pager resolve!",
            "pager oncall",
            "pager schedules",
            "pager schedules engineering",
            "pager schedule PI7DH85 days=7",
            "pager schedule \"Daily Engineering Rotation\"",
            "pager my schedule 14",
            "pager me \"Daily Engineering Rotation\" 30",
            "pager maintenance 45 PIJ90N7",
            "pager services",
            "pager services mail",
            &format!("pager trigger {me} the database is on fire"),
        ],
    )
    .await;
    let distinct: std::collections::BTreeSet<String> = all
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.method,
                c.target.split('?').next().unwrap_or_default()
            )
        })
        .collect();
    eprintln!(
        "PagerDuty contract: {} calls, {} distinct operations, all accepted:\n{}",
        all.len(),
        distinct.len(),
        distinct.iter().cloned().collect::<Vec<_>>().join("\n")
    );
    for op in [
        "GET /users",
        "GET /incidents",
        "PUT /incidents",
        "POST /incidents",
        "GET /oncalls",
        "GET /schedules",
        "GET /schedules/PI7DH85",
        "POST /schedules/PI7DH85/overrides",
        "GET /services",
        "POST /maintenance_windows",
    ] {
        assert!(
            distinct.contains(op),
            "{op} was not exercised: {distinct:?}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_github_call_passes_the_spec_validator() {
    let Some(shared) = shared_dir("GitHub contract") else {
        return;
    };
    let prism = start_prism(shared.join("openapi/github-api.github.com.json"));
    let (proxy, calls) = start_proxy(&prism.url).await;
    let app = TestApp::on(Db::Sqlite, "gh_contract")
        .config("[github]\ndefault_owner = \"octocat\"\ndefault_org = \"octo-org\"\n")
        .env("GITHUB_TOKEN", "ghp_contracttesttoken000000000000000")
        .env("GITHUB_API_URL", proxy)
        .start()
        .await
        .expect("sqlite app");
    let all = run_all(
        &app,
        &calls,
        &[
            "pulls octocat/Hello-World",
            "pulls Hello-World with amazing",
            "org-pulls",
            "org-pulls github",
        ],
    )
    .await;
    let distinct: std::collections::BTreeSet<String> = all
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.method,
                c.target.split('?').next().unwrap_or_default()
            )
        })
        .collect();
    eprintln!(
        "GitHub contract: {} calls, all accepted:\n{}",
        all.len(),
        report(&all)
    );
    assert!(distinct.contains("GET /repos/octocat/Hello-World/pulls"));
    assert!(distinct.contains("GET /search/issues"));
    app.stop().await;
}

/// A deploy recorded on GitHub (`deploy = { …, github = … }`): the deployment and its statuses,
/// made by the job, pass the spec validator too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_deployments_pass_the_spec_validator() {
    let Some(shared) = shared_dir("GitHub deployments contract") else {
        return;
    };
    let prism = start_prism(shared.join("openapi/github-api.github.com.json"));
    let (proxy, calls) = start_proxy(&prism.url).await;
    let dir = tempfile::tempdir().unwrap();
    let script = crate::runbooks::write_script(dir.path(), "deploy.sh", "echo deploying $1");
    let config = format!(
        r#"
[jobs]
poll = "100ms"

[[runbooks]]
name   = "deploy"
usage  = "deploy {{app}} {{version}} to {{env}}"
params = {{ app = "^[a-z]+$", version = "^[0-9.]+$", env = "^(staging|production)$" }}
target = "{{app}}/{{env}}"
run    = {{ kind = "command", argv = ["{script}", "{{app}}"] }}
deploy = {{ app = "{{app}}", env = "{{env}}", version = "{{version}}", github = "octocat/Hello-World" }}
"#
    );
    let app = TestApp::on(Db::Sqlite, "gh_deploy_contract")
        .config(&config)
        .env("GITHUB_TOKEN", "ghp_contracttesttoken000000000000000")
        .env("GITHUB_API_URL", proxy)
        .start()
        .await
        .expect("sqlite app");
    let ack = app
        .slash("deploy hello 1.0 to staging")
        .by(JOE)
        .send()
        .await;
    assert_eq!(ack.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let job = loop {
        let job = app.services.store.job(1).await.unwrap();
        match job {
            Some(j) if j.status.is_final() => break j,
            _ if std::time::Instant::now() > deadline => panic!("the job did not end: {job:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(job.status.as_str(), "succeeded", "{job:?}");
    // The final status is set after the job's end is recorded: wait for its call.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while calls.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = calls.lock().unwrap().clone();
    eprintln!("GitHub deployments contract:\n{}", report(&all));
    assert_eq!(all.len(), 3, "{}", report(&all));
    assert!(all.iter().all(accepted), "{}", report(&all));
    assert_eq!(all[0].method, "POST");
    assert_eq!(all[0].target, "/repos/octocat/Hello-World/deployments");
    assert!(
        all[1]
            .target
            .starts_with("/repos/octocat/Hello-World/deployments/")
            && all[1].target.ends_with("/statuses"),
        "{}",
        report(&all)
    );
    app.stop().await;
}
