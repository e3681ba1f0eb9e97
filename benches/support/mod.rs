//! What the benchmarks that start the whole app share (`mod support;` in each).

use std::sync::Arc;

use pantheon::{
    app::{App, Options},
    clients::RetryPolicy,
    config::{FileConfig, Settings, Source},
    services::Services,
};
use sqlx::Connection as _;

/// A new, empty Postgres database `name` at TEST_DATABASE_URL (default
/// postgres://postgres@127.0.0.1:5432/postgres), or None (said on stderr) when none answers.
pub async fn fresh_postgres(name: &str) -> Option<String> {
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipping Postgres: {e}");
            return None;
        }
    };
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .ok()?;
    let mut url = url::Url::parse(&admin).ok()?;
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

/// The app built from `config` (a pantheon.toml) and `env` (its environment), with its
/// background loops, served on 127.0.0.1 until the process ends: its services and base URL.
pub async fn serve(config: &str, env: &[(&str, String)]) -> (Arc<Services>, String) {
    let source = Source {
        path: "bench.toml".into(),
        text: config.to_owned().into(),
    };
    let config = FileConfig::parse(&source).unwrap();
    let settings =
        Settings::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
            .unwrap();
    let app = App::build(Options {
        background: true,
        config,
        source,
        settings,
        retry: RetryPolicy::default(),
        migrate: true,
        commands: Vec::new(),
        http_timeout: pantheon::app::DEFAULT_HTTP_TIMEOUT,
    })
    .await
    .unwrap();
    let services = app.services.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(app.serve(listener, std::future::pending()));
    pantheon::clients::install_crypto();
    (services, base)
}
