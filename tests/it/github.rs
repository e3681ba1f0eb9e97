//! `pulls …` and `org-pulls …` against a local server speaking GitHub's documented shapes.

use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

use crate::{
    both_stores,
    harness::{Db, TestApp, outcomes},
};

const TOKEN: &str = "ghp_testtoken0123456789abcdefghij";

async fn start(db: Db, test: &str, config: &str) -> Option<(TestApp, MockServer)> {
    let gh = MockServer::start().await;
    let app = TestApp::on(db, test)
        .config(config)
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", gh.uri())
        .start()
        .await?;
    Some((app, gh))
}

fn pull(number: u64, title: &str, login: &str, draft: bool) -> serde_json::Value {
    json!({
        "number": number, "title": title, "state": "open", "draft": draft,
        "html_url": format!("https://github.com/acme/api/pull/{number}"),
        "user": {"login": login}, "created_at": "2026-11-20T10:00:00Z",
        "head": {"ref": "feature"}, "base": {"ref": "main"}
    })
}

both_stores!(
    pulls_follow_links_and_filter,
    default_owner_and_bad_names,
    org_pulls_search,
    github_failures,
    github_not_configured
);

async fn pulls_follow_links_and_filter(db: Db) {
    let Some((app, gh)) = start(db, "gh_pulls", "").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/repos/acme/api/pulls"))
        .and(query_param("state", "open"))
        .and(query_param("page", "1"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("x-github-api-version", "2022-11-28"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("link", format!("<{}/repositories/1/pulls?state=open&page=2>; rel=\"next\", <{}/repositories/1/pulls?page=2>; rel=\"last\"", gh.uri(), gh.uri()).as_str())
                .set_body_json(json!([pull(1, "feat: login page", "ann", false), pull(2, "fix: crash on *start*", "bob", true)])),
        )
        .mount(&gh)
        .await;
    Mock::given(method("GET"))
        .and(path("/repositories/1/pulls"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([pull(
            3,
            "FEAT: search",
            "cat",
            false
        )])))
        .mount(&gh)
        .await;
    let ack = app.slash("pulls acme/api").send().await;
    let text = app.reply_text(&ack).await;
    assert!(
        text.starts_with("3 open pull requests in acme/api"),
        "{text}"
    );
    assert!(
        text.contains("<https://github.com/acme/api/pull/1|#1> *feat: login page* · by ann · "),
        "{text}"
    );
    assert!(text.contains("· draft"), "{text}");
    assert!(!text.contains("*start*"), "{text}");

    let ack = app.slash("pulls acme/api with ^feat").send().await;
    let text = app.reply_text(&ack).await;
    assert!(
        text.starts_with("2 open pull requests in acme/api matching /^feat/"),
        "{text}"
    );
    assert!(
        text.contains("#1>") && text.contains("#3>") && !text.contains("#2>"),
        "{text}"
    );

    let ack = app
        .slash("pulls acme/api with nothing-like-this")
        .send()
        .await;
    assert_eq!(
        app.reply_text(&ack).await,
        "No open pull requests in acme/api match `nothing-like-this`."
    );

    // A pattern that does not compile is a usage error, answered at once.
    let bad = app.slash("pulls acme/api with (unclosed").send().await;
    assert!(
        bad.text().contains("is not a valid regular expression"),
        "{}",
        bad.text()
    );
    let huge = app
        .slash(&format!("pulls acme/api with {}", "(a{100}){100}"))
        .send()
        .await;
    assert!(
        huge.text().contains("too complex") || huge.text().contains("not a valid"),
        "{}",
        huge.text()
    );
    app.stop().await;
}

async fn default_owner_and_bad_names(db: Db) {
    let Some((app, gh)) = start(db, "gh_owner", "[github]\ndefault_owner = \"acme\"\n").await
    else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/repos/acme/web/pulls"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&gh)
        .await;
    let ack = app.slash("pulls web").send().await;
    assert_eq!(
        app.reply_text(&ack).await,
        "No open pull requests in acme/web."
    );
    let ack = app.slash("pulls ../../etc").send().await;
    assert_eq!(
        app.reply_text(&ack).await,
        "`../../etc` is not a GitHub repository name."
    );
    app.stop().await;
}

async fn org_pulls_search(db: Db) {
    let Some((app, gh)) = start(db, "gh_org", "[github]\ndefault_org = \"acme\"\n").await else {
        return;
    };
    let mut item = pull(7, "chore: bump deps", "dependabot[bot]", false);
    item["repository_url"] = json!("https://api.github.com/repos/acme/infra");
    item["pull_request"] = json!({"url": "x", "html_url": "https://github.com/acme/infra/pull/7"});
    Mock::given(method("GET"))
        .and(path("/search/issues"))
        .and(query_param("q", "org:acme is:pr is:open"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"total_count": 1, "incomplete_results": false, "items": [item]}),
            ),
        )
        .mount(&gh)
        .await;
    let ack = app.slash("org-pulls").send().await;
    let text = app.reply_text(&ack).await;
    assert!(text.starts_with("1 open pull request in acme"), "{text}");
    assert!(
        text.contains("|acme/infra#7> *chore: bump deps* · by dependabot[bot]"),
        "{text}"
    );
    app.stop().await;
}

async fn github_failures(db: Db) {
    let Some((app, gh)) = start(db, "gh_failures", "").await else {
        return;
    };
    Mock::given(method("GET"))
        .and(path("/repos/acme/gone/pulls"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
        .mount(&gh)
        .await;
    let reset = time::OffsetDateTime::now_utc() + time::Duration::minutes(20);
    Mock::given(method("GET"))
        .and(path("/repos/acme/limited/pulls"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header(
                    "x-ratelimit-reset",
                    reset.unix_timestamp().to_string().as_str(),
                )
                .set_body_json(json!({"message": "API rate limit exceeded"})),
        )
        .mount(&gh)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/acme/private/pulls"))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"message": "Resource not accessible by integration"})),
        )
        .mount(&gh)
        .await;
    let ack = app.slash("pulls acme/gone").send().await;
    assert_eq!(
        app.reply_text(&ack).await,
        "GitHub has no repository acme/gone (404)"
    );
    let rows = app.finished_audit(&ack.correlation_id).await;
    assert_eq!(outcomes(&rows), ["received", "started", "failed"]);
    let ack = app.slash("pulls acme/limited").send().await;
    let hm = time::macros::format_description!("[hour]:[minute]");
    assert_eq!(
        app.reply_text(&ack).await,
        format!(
            "GitHub rate limit reached, resets at {} UTC",
            reset.format(&hm).unwrap()
        )
    );
    let ack = app.slash("pulls acme/private").send().await;
    assert_eq!(
        app.reply_text(&ack).await,
        "GitHub refused the request (403): Resource not accessible by integration"
    );
    app.stop().await;
}

async fn github_not_configured(db: Db) {
    let Some(app) = TestApp::on(db, "gh_unconfigured").start().await else {
        return;
    };
    let ack = app.slash("org-pulls acme").send().await;
    assert_eq!(
        app.reply_text(&ack).await,
        "GitHub is not configured: set GITHUB_TOKEN"
    );
    app.stop().await;
}
