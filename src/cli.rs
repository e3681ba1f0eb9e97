//! The command line: `serve | migrate | console | check-config | slack-manifest`.

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tokio::io::AsyncBufReadExt as _;

use crate::{
    app::{self, App, Options},
    chat::Message,
    clients::RetryPolicy,
    config::{self, FileConfig, Settings, Source},
    dispatch::{self, Ack, Invocation, ReplyTarget},
    store::Store,
};

#[derive(Debug, Parser)]
#[command(
    name = "pantheon",
    version,
    about = "ChatOps for Slack: commands, approvals, notifications, all audited"
)]
pub struct Cli {
    /// Configuration file (default: $PANTHEON_CONFIG, else ./pantheon.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Type commands as a chosen user and see the replies, without a chat platform.
    Console {
        /// The user id to act as (groups come from the configuration); default UCONSOLE, or a
        /// Mattermost-shaped id with --platform mattermost.
        #[arg(long = "as")]
        user: Option<String>,
        /// The channel id to act in (posts there go to that id's platform).
        #[arg(long)]
        channel: Option<String>,
        /// Whose ids and rendering to use: Slack's (replies as text) or Mattermost's (replies
        /// as the Markdown Mattermost would show).
        #[arg(long, value_enum, default_value_t = config::Platform::Slack)]
        platform: config::Platform,
    },
    /// Check the configuration file and the environment, and print a summary.
    CheckConfig,
    /// Print a Slack app manifest (YAML) for the service at --url.
    SlackManifest {
        /// Public base URL of this service, e.g. https://pantheon.example.com (not needed with
        /// --socket-mode)
        #[arg(long, required_unless_present = "socket_mode")]
        url: Option<url::Url>,
        /// For Socket Mode (SLACK_APP_TOKEN): `socket_mode_enabled: true`, and no request URLs
        /// (Slack sends everything over the socket Pantheon opens).
        #[arg(long)]
        socket_mode: bool,
        /// Also ask for channels:history and groups:history, so that after a crash a
        /// notification already posted is recognised and not posted again. Without them a
        /// crash mid-post can post one twice; with them a leaked bot token reads more.
        #[arg(long)]
        with_history: bool,
    },
}

/// The user and channel `console` acts as and in, when not given, for `platform`.
fn console_ids(platform: config::Platform) -> (&'static str, &'static str) {
    match platform {
        config::Platform::Slack => ("UCONSOLE", "CCONSOLE"),
        // 26 lower-case letters and digits, as Mattermost's ids are.
        config::Platform::Mattermost => {
            ("consoleuserxxxxxxxxxxxxxxx", "consolechannelxxxxxxxxxxxx")
        }
    }
}

/// A reply as `platform` would show it.
fn shown_on(platform: config::Platform, message: &Message) -> String {
    match platform {
        config::Platform::Slack => crate::chat::unescape(&message.text),
        config::Platform::Mattermost => {
            crate::mattermost::render::render(
                message,
                None,
                &crate::mattermost::render::Names::new(),
                time::OffsetDateTime::now_utc(),
            )
            .message
        }
    }
}

fn load(cli: &Cli) -> Result<(FileConfig, Source, Settings), String> {
    let path = config::config_path(cli.config.as_deref());
    let (file, source) = config::load_file(path.as_deref()).map_err(|e| e.to_string())?;
    let settings = Settings::from_env().map_err(|e| e.to_string())?;
    Ok((file, source, settings))
}

pub fn run(cli: Cli) -> ExitCode {
    let (file, source, settings) = match load(&cli) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {}", crate::domain::redact::scrub(&e));
            return ExitCode::from(2);
        }
    };
    // Before anything can print an error that quotes the database URL.
    let secrets = crate::store::url_secrets(&settings.database_url);
    crate::domain::redact::register_secrets(secrets.iter().map(String::as_str));
    let quiet = matches!(
        cli.command,
        Command::Console { .. } | Command::CheckConfig | Command::SlackManifest { .. }
    );
    if quiet && std::env::var_os("RUST_LOG").is_none() {
        // Interactive commands keep stderr for problems only.
        // SAFETY: single-threaded here; nothing else reads the environment yet.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    let log_guard = crate::telemetry::init_logs(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(file, source, settings).await,
            Command::Migrate => migrate(&settings).await,
            Command::Console {
                user,
                channel,
                platform,
            } => {
                let (default_user, default_channel) = console_ids(platform);
                let user = user.unwrap_or_else(|| default_user.to_owned());
                let channel = channel.unwrap_or_else(|| default_channel.to_owned());
                console(file, source, settings, user, channel, platform).await
            }
            Command::CheckConfig => check_config(&file, &source, &settings),
            Command::SlackManifest {
                url,
                socket_mode,
                with_history,
            } => {
                let registry = app::build_registry(&file, &source).map_err(|e| e.to_string())?;
                let reached = match (socket_mode, url) {
                    (true, _) => crate::slack::manifest::Reached::Socket,
                    (false, Some(url)) => crate::slack::manifest::Reached::At(url),
                    (false, None) => return Err("--url is needed without --socket-mode".into()),
                };
                print!(
                    "{}",
                    crate::slack::manifest::render(
                        &file.slack.app_name,
                        file.slack.command.get_ref(),
                        &registry,
                        &reached,
                        with_history
                    )
                );
                Ok(())
            }
        }
    });
    // The log lines still waiting are written before the error that ends the run.
    drop(runtime);
    drop(log_guard);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::domain::redact::scrub(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

async fn serve(file: FileConfig, source: Source, settings: Settings) -> Result<(), String> {
    if settings.slack_signing_secret.is_none() && settings.slack_app_token.is_none() {
        return Err("SLACK_SIGNING_SECRET is not set; find it under Basic Information → App Credentials in your Slack app (or set SLACK_APP_TOKEN for Socket Mode)".into());
    }
    // First: from here on a SIGTERM is a graceful shutdown, even one that comes while the
    // database is migrated or before the port is served (it is acted on once serving begins).
    let shutdown = app::shutdown_signal();
    let addr = settings.listen_addr;
    let database = settings.database_url.clone();
    // Before anything opens descriptors: every connection, pipe and database file needs one.
    match crate::http::server::raise_open_files_limit() {
        Ok((soft, hard)) => tracing::info!(
            open_files = soft,
            hard_limit = hard,
            max_connections =
                crate::http::server::connection_cap(file.limits.max_connections, soft),
            "open-files limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
    if let Some(asked) = file.limits.max_connections {
        let soft = crate::http::server::open_files_limit();
        let cap = crate::http::server::connection_cap(Some(asked), soft);
        if cap < asked {
            tracing::warn!(
                asked,
                max_connections = cap,
                open_files = soft,
                "limits.max_connections lowered to fit below the open-files limit"
            );
        }
    }
    let app = App::build(Options {
        background: true,
        config: file,
        source,
        settings,
        retry: RetryPolicy::default(),
        migrate: true,
        commands: Vec::new(),
        http_timeout: app::DEFAULT_HTTP_TIMEOUT,
    })
    .await
    .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, database = %redact_url(&database), "pantheon listening");
    app.serve(listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// A database URL without its password, for logs.
fn redact_url(url: &str) -> String {
    crate::store::without_password(url)
}

async fn migrate(settings: &Settings) -> Result<(), String> {
    let store = Store::connect(&settings.database_url)
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    for (version, description) in store.known_migrations() {
        println!("{version:>4}  {description}");
    }
    println!(
        "{} database is up to date ({})",
        store.kind(),
        redact_url(&settings.database_url)
    );
    store.close().await;
    Ok(())
}

fn check_config(file: &FileConfig, source: &Source, settings: &Settings) -> Result<(), String> {
    let registry = app::build_registry(file, source).map_err(|e| e.to_string())?;
    let path = if source.path.as_os_str().is_empty() {
        "(no file: defaults)".to_owned()
    } else {
        source.path.display().to_string()
    };
    println!("configuration: {path}: OK");
    println!("slash command: {}", file.slack.command.get_ref());
    println!(
        "commands: {} in {} families ({})",
        registry.specs().len(),
        registry.families().len(),
        registry.families().join(", ")
    );
    println!(
        "groups: {}",
        if file.groups.is_empty() {
            "none".to_owned()
        } else {
            file.groups
                .iter()
                .map(|(g, m)| {
                    format!(
                        "{g} ({} member{})",
                        m.len(),
                        if m.len() == 1 { "" } else { "s" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "permissions: {}",
        if file.permissions.is_empty() {
            "none (everyone may run every command except admin ones)".to_owned()
        } else {
            file.permissions
                .iter()
                .map(|(k, g)| {
                    format!(
                        "{} → {}",
                        k.get_ref(),
                        g.iter()
                            .map(|g| g.get_ref().as_str())
                            .collect::<Vec<_>>()
                            .join("/")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "runbooks: {}",
        if file.runbooks.is_empty() {
            "none".to_owned()
        } else {
            file.runbooks
                .iter()
                .map(|r| r.name.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!("routes: {}", file.routes.len());
    let deploys: Vec<&str> = file
        .runbooks
        .iter()
        .filter(|r| r.deploy.is_some())
        .map(|r| r.name.get_ref().as_str())
        .collect();
    println!(
        "deploy safety: deploys {}; freezes {}; break-glass {}",
        if deploys.is_empty() {
            "none declared".to_owned()
        } else {
            deploys.join(", ")
        },
        if file.freezes.is_empty() {
            "none".to_owned()
        } else {
            file.freezes
                .iter()
                .map(|f| format!("{} ({})", f.name.get_ref(), f.time_zone.get_ref()))
                .collect::<Vec<_>>()
                .join(", ")
        },
        match &file.deploy.override_group {
            Some(g) => format!("approved by `{}`", g.get_ref()),
            None => "off (no [deploy] override_group)".to_owned(),
        }
    );
    println!("database: {}", redact_url(&settings.database_url));
    println!(
        "listen: {} (public URL {})",
        settings.listen_addr, settings.public_url
    );
    println!(
        "response_url hosts: {}",
        settings.response_url_hosts.join(", ")
    );
    let limits = &file.limits;
    let open_files = crate::http::server::open_files_limit();
    println!(
        "limits: headers within {}, bodies within {}, idle keep-alive {}, connections {} (open-files limit {open_files}), commands in flight {}, handler timeout {}",
        humantime::format_duration(limits.header_timeout),
        humantime::format_duration(limits.body_timeout),
        humantime::format_duration(limits.idle_timeout()),
        match limits.max_connections {
            Some(n) => format!(
                "{}",
                crate::http::server::connection_cap(Some(n), open_files)
            ),
            None => format!(
                "{} (auto)",
                crate::http::server::connection_cap(None, open_files)
            ),
        },
        limits.max_in_flight,
        humantime::format_duration(limits.handler_timeout),
    );
    println!(
        "per person: {} commands in flight (votes and cancels not counted)",
        limits.max_in_flight_per_user
    );
    let retention = &file.retention;
    println!(
        "retention: webhook deliveries {}, job logs {}, audit trail {}",
        retention.webhook_deliveries, retention.job_logs, retention.audit_log
    );
    println!(
        "/metrics: {}{}",
        match settings.metrics_listen_addr {
            Some(addr) => format!("on {addr} only"),
            None => "on the main listener".to_owned(),
        },
        if settings.metrics_token.is_some() {
            ", bearer token required"
        } else {
            ", open (set METRICS_TOKEN or METRICS_LISTEN_ADDR to restrict it)"
        }
    );
    let set = |present: bool| if present { "set" } else { "not set" };
    println!(
        "SLACK_SIGNING_SECRET: {}",
        set(settings.slack_signing_secret.is_some())
    );
    println!(
        "SLACK_BOT_TOKEN: {}",
        set(settings.slack_bot_token.is_some())
    );
    println!(
        "SLACK_APP_TOKEN: {}",
        set(settings.slack_app_token.is_some())
    );
    println!(
        "Slack transport: {}",
        match (
            settings.slack_app_token.is_some(),
            settings.slack_signing_secret.is_some()
        ) {
            (true, true) => "Socket Mode (SLACK_APP_TOKEN), and signed HTTP beside it",
            (true, false) => "Socket Mode (SLACK_APP_TOKEN); Slack's HTTP routes are off",
            (false, _) => "signed HTTP requests to /slack/* (set SLACK_APP_TOKEN for Socket Mode)",
        }
    );
    println!(
        "Mattermost: {}; MATTERMOST_COMMAND_TOKEN: {} token(s); MATTERMOST_BOT_TOKEN: {}; PANTHEON_MATTERMOST_ACTION_SECRET: {}",
        match file.mattermost.url.as_ref() {
            Some(url) => format!("server {}", url.get_ref()),
            None => "no server ([mattermost] url)".to_owned(),
        },
        settings.mattermost_command_tokens.len(),
        set(settings.mattermost_bot_token.is_some()),
        set(settings.mattermost_action_secret.is_some()),
    );
    crate::mattermost::action_secret(settings)
        .map_err(|e| format!("PANTHEON_MATTERMOST_ACTION_SECRET {e}"))?;
    if settings.mattermost_bot_token.is_some() && file.mattermost.url.is_none() {
        return Err("MATTERMOST_BOT_TOKEN is set but [mattermost] url is not: Pantheon needs the server's address to post".to_owned());
    }
    let mm_routes = file
        .routes
        .iter()
        .filter(|r| r.platform == config::Platform::Mattermost)
        .count();
    if mm_routes > 0 && settings.mattermost_bot_token.is_none() {
        println!(
            "warning: {mm_routes} route(s) send to Mattermost, but MATTERMOST_BOT_TOKEN is not set: those notifications cannot be posted"
        );
    }
    println!(
        "GITHUB_TOKEN: {}; webhook secrets: {}",
        set(settings.github_token.is_some()),
        settings.github_webhook_secrets.len()
    );
    println!(
        "PAGERDUTY_API_TOKEN: {}; webhook secrets: {}",
        set(settings.pagerduty_api_token.is_some()),
        settings.pagerduty_webhook_secrets.len()
    );
    println!(
        "ZENDESK: {}; webhook secrets: {}",
        set(settings.zendesk_api_url.is_some() && settings.zendesk_api_token.is_some()),
        settings.zendesk_webhook_secrets.len()
    );
    Ok(())
}

async fn console(
    file: FileConfig,
    source: Source,
    settings: Settings,
    user: String,
    channel: String,
    platform: config::Platform,
) -> Result<(), String> {
    let app = App::build(Options {
        background: true,
        config: file,
        source,
        settings,
        retry: RetryPolicy::default(),
        migrate: true,
        commands: Vec::new(),
        http_timeout: app::DEFAULT_HTTP_TIMEOUT,
    })
    .await
    .map_err(|e| e.to_string())?;
    let services = app.services.clone();
    let registry = app.registry.clone();
    let slash = services.slash.clone();
    let wait = services.limits().handler_timeout + std::time::Duration::from_secs(5);
    println!(
        "Pantheon console ({}), as {user} in {channel}. Type `{slash} help` (the `{slash}` is optional); Ctrl-D to quit.",
        platform.as_str()
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        print!("{slash}> ");
        let _ = std::io::stdout().flush();
        let Ok(Some(line)) = lines.next_line().await else {
            break;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if matches!(line, "exit" | "quit") {
            break;
        }
        let text = match line.strip_prefix(slash.as_str()) {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => rest.trim().to_owned(),
            _ if line.starts_with('/') => {
                println!("This Pantheon answers `{slash}`.");
                continue;
            }
            _ => line.to_owned(),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
        let invocation = Invocation {
            correlation_id: dispatch::new_correlation_id(),
            user_id: user.clone(),
            user_name: user.clone(),
            channel_id: channel.clone(),
            team_id: "TCONSOLE".into(),
            slash: slash.clone(),
            text,
            reply: ReplyTarget::Console(tx),
            replay_key: None,
            transport: crate::dispatch::Transport::Console,
            trigger: None,
        };
        match dispatch::dispatch(&services, &registry, invocation).await {
            Ack::Message(message)
            | Ack::Form {
                fallback: message, ..
            } => {
                println!("{}", shown_on(platform, &message))
            }
            Ack::Replay => println!("{}", shown_on(platform, &dispatch::replay_message())),
            Ack::Empty | Ack::Echo => match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(message)) => println!("{}", shown_on(platform, &message)),
                Ok(None) | Err(_) => println!("(no reply)"),
            },
        }
    }
    drop(services);
    app.shutdown().await;
    Ok(())
}
