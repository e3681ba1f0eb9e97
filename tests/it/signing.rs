//! Published signing vectors from ../shared/fixtures, and Slack's own SDK signing a request
//! that the server accepts.

use std::process::Command;

use pantheon::signature::{self, HmacKey};

use crate::{
    both_stores,
    harness::{Db, SECRET, TestApp, now, shared_dir},
    slash_commands::CONFIG,
};

fn fixture(test: &str, path: &str) -> Option<String> {
    let dir = shared_dir(test)?;
    Some(std::fs::read_to_string(dir.join("fixtures").join(path)).expect("fixture readable"))
}

#[test]
fn slack_published_vector_from_fixtures() {
    let Some(vector) = fixture("slack vector", "slack/signing-vector.json") else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&vector).unwrap();
    let v = &v["slack"];
    let body_file = v["body_file"].as_str().unwrap();
    let Some(body) = fixture("slack vector", body_file) else {
        return;
    };
    let secret = v["signing_secret"].as_str().unwrap();
    let ts = v["timestamp"].as_str().unwrap();
    let sig = v["expected_X-Slack-Signature"].as_str().unwrap();
    let key = HmacKey::new(secret.as_bytes());
    let now: i64 = ts.parse().unwrap();
    assert_eq!(
        signature::verify_slack(
            &key,
            Some(ts.as_bytes()),
            Some(sig.as_bytes()),
            body.as_bytes(),
            now
        ),
        Ok(())
    );
    assert_eq!(signature::sign_slack(&key, ts, body.as_bytes()), sig);
}

#[test]
fn pagerduty_vendor_sdk_vector_from_fixtures() {
    let Some(vector) = fixture("pagerduty vector", "pagerduty/signing-vector.json") else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&vector).unwrap();
    let Some(body) = fixture("pagerduty vector", v["body_file"].as_str().unwrap()) else {
        return;
    };
    let key = HmacKey::new(v["secret"].as_str().unwrap().as_bytes());
    let good = v["valid_X-PagerDuty-Signature"].as_str().unwrap();
    let bad = v["mismatch_X-PagerDuty-Signature"].as_str().unwrap();
    let verify = |header: &str| {
        signature::verify_pagerduty(
            std::slice::from_ref(&key),
            Some(header.as_bytes()),
            body.as_bytes(),
        )
    };
    assert_eq!(verify(good), Ok(()));
    assert_eq!(verify(bad), Err(signature::SignatureError::Mismatch));
    // During PagerDuty's rotation the header lists several; any match is enough.
    assert_eq!(verify(&format!("{bad},{good}")), Ok(()));
}

/// The Python interpreter with `slack_sdk`: $PANTHEON_TEST_PYTHON, the project's .tools venv,
/// or python3. None (after saying why) when it cannot import slack_sdk outside CI.
fn python_with(module: &str, test: &str) -> Option<String> {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.tools/venv/bin/python");
    let candidates = [
        std::env::var("PANTHEON_TEST_PYTHON").ok(),
        std::path::Path::new(venv).exists().then(|| venv.to_owned()),
        Some("python3".to_owned()),
    ];
    for python in candidates.into_iter().flatten() {
        let ok = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci {
        panic!("{test}: no Python with `{module}` (scripts/test installs it into .tools/venv)");
    }
    eprintln!("SKIPPED {test}: no Python with `{module}`; run scripts/test to install it");
    None
}

both_stores!(a_signature_from_slacks_own_sdk_is_accepted);

async fn a_signature_from_slacks_own_sdk_is_accepted(db: Db) {
    let Some(python) = python_with("slack_sdk", "slack_sdk signature") else {
        return;
    };
    let Some(app) = TestApp::on(db, "slack_sdk").config(CONFIG).start().await else {
        return;
    };
    let body = app.slash("whoami").body();
    let ts = now().to_string();
    let script = "import sys; from slack_sdk.signature import SignatureVerifier as V; \
                  v = V(sys.argv[1]); body = sys.stdin.read(); \
                  print(v.generate_signature(timestamp=sys.argv[2], body=body))";
    let output = {
        use std::io::Write as _;
        let mut child = Command::new(&python)
            .args(["-c", script, SECRET, &ts])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(output.status.success());
    let sdk_signature = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(sdk_signature.starts_with("v0="), "{sdk_signature}");
    // Ours and the SDK's agree byte for byte, and the server accepts the SDK's.
    assert_eq!(
        sdk_signature,
        signature::sign_slack(&HmacKey::new(SECRET.as_bytes()), &ts, body.as_bytes())
    );
    let resp = app
        .post_slack(
            "/slack/commands",
            body,
            &[
                ("content-type", "application/x-www-form-urlencoded".into()),
                ("x-slack-request-timestamp", ts),
                ("x-slack-signature", sdk_signature),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert!(
        json["text"]
            .as_str()
            .unwrap()
            .starts_with("You are <@U01ALICE>")
    );
    app.stop().await;
}
