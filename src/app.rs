//! Build the application once, the same way for `serve`, `console` and the tests.

use std::{sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::{
    audit::AuditLog,
    clients::{Outbound, RetryPolicy, github::GitHub, pagerduty::PagerDuty, zendesk::Zendesk},
    command::{self, Registry},
    config::{ConfigError, FileConfig, Settings, Source},
    domain::catalogue::Catalogue,
    http::{self, AppState},
    mattermost::{self, api::MattermostApi, buttons::Buttons, port::MattermostChat},
    services::Services,
    signature::HmacKey,
    slack::{api::SlackApi, port::SlackChat, response_url::ResponseUrlPolicy},
    store::Store,
};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Registry(String),
}

/// What `build` needs. Tests fill it directly; the binary reads it from file and environment.
pub struct Options {
    pub config: FileConfig,
    pub source: Source,
    pub settings: Settings,
    pub retry: RetryPolicy,
    /// Run migrations before anything else (`serve` does; `console` does too).
    pub migrate: bool,
    /// Commands added to the built-in ones, for embedding Pantheon as a library.
    pub commands: Vec<command::Declaration>,
    /// Per-request timeout of outbound HTTP calls.
    pub http_timeout: Duration,
    /// Run the background loops (job workers, reaper, expirer, outbox sender, upkeep). Tests
    /// that drive them one step at a time (`runbooks::jobs::run_next`, `reap_once`,
    /// `expire_once`, `notify::sender::send_due`, `upkeep::run_once`) leave them off.
    pub background: bool,
}

/// Outbound calls give up after this long (each attempt).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A built application: its services and the tasks it runs.
pub struct App {
    pub services: Arc<Services>,
    /// Every command with its handler: what requests are dispatched to.
    pub registry: Arc<Registry>,
    /// Mattermost's routes, when its command tokens are set.
    mattermost: Option<Arc<mattermost::Edge>>,
    audit_task: tokio::task::JoinHandle<()>,
    delivery_task: tokio::task::JoinHandle<()>,
    stop_jobs: tokio::sync::watch::Sender<bool>,
    job_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    pub async fn build(options: Options) -> Result<Self, BuildError> {
        let Options {
            config,
            source,
            settings,
            retry,
            migrate,
            commands,
            http_timeout,
            background,
        } = options;
        register_secrets(&settings);
        register_runbook_urls(&config);
        crate::telemetry::spawn_metrics_upkeep();

        let catalogue = config.catalogue().map_err(BuildError::Registry)?;
        let registry = build_registry_with(&config, &catalogue, &source, commands)?;

        let store = Store::connect(&settings.database_url).await?;
        if migrate {
            store.migrate().await?;
        }
        let (audit, audit_task) = AuditLog::spawn(store.clone());
        let (deliveries, delivery_task) = crate::deliveries::DeliveryWriter::spawn(store.clone());
        let outbound = Outbound::new(retry, http_timeout);
        let slack = SlackApi::new(
            outbound.clone(),
            settings.slack_api_url.clone(),
            settings.slack_bot_token.clone(),
        );
        let pagerduty = settings
            .pagerduty_api_token
            .clone()
            .map(|t| PagerDuty::new(outbound.clone(), settings.pagerduty_api_url.clone(), t));
        let zendesk = match (
            &settings.zendesk_api_url,
            &settings.zendesk_email,
            &settings.zendesk_api_token,
        ) {
            (Some(url), Some(email), Some(token)) => Some(Zendesk::new(
                outbound.clone(),
                url.clone(),
                email.clone(),
                token.clone(),
            )),
            _ => None,
        };
        let github = settings
            .github_token
            .clone()
            .map(|t| GitHub::new(outbound.clone(), settings.github_api_url.clone(), t));
        let slack_outbox = SlackApi::new(
            Outbound::new(
                RetryPolicy {
                    attempts: 1,
                    ..retry
                },
                http_timeout,
            ),
            settings.slack_api_url.clone(),
            settings.slack_bot_token.clone(),
        );
        let response_urls = ResponseUrlPolicy::new(settings.response_url_hosts.clone());
        let catalogue = Arc::new(catalogue);
        // Mattermost beside Slack (or instead of it), when any of it is configured.
        let mm_server = config.mattermost.base_url();
        let mm_wanted = mm_server.is_some()
            || !settings.mattermost_command_tokens.is_empty()
            || settings.mattermost_bot_token.is_some();
        let buttons = mattermost::action_secret(&settings)
            .map_err(|e| ConfigError::env("PANTHEON_MATTERMOST_ACTION_SECRET", e))?
            .map(|secret| {
                Arc::new(Buttons::new(
                    secret,
                    &settings.public_url,
                    config.mattermost.button_ttl,
                ))
            });
        let mm_port = |out: &Outbound| {
            Arc::new(MattermostChat::new(
                MattermostApi::new(
                    out.clone(),
                    mm_server.as_ref(),
                    settings.mattermost_bot_token.clone(),
                ),
                mm_server.clone(),
                buttons.clone(),
                outbound.clone(),
            ))
        };
        let outbox_outbound = Outbound::new(
            RetryPolicy {
                attempts: 1,
                ..retry
            },
            http_timeout,
        );
        let (mm_chat, mm_outbox) = if mm_wanted {
            (Some(mm_port(&outbound)), Some(mm_port(&outbox_outbound)))
        } else {
            (None, None)
        };
        let ports = |slack: Arc<dyn crate::chat::ChatPort>, mm: Option<Arc<MattermostChat>>| {
            let mm = mm.map(|m| m as Arc<dyn crate::chat::ChatPort>);
            Arc::new(crate::chat::Chats::new(slack, mm))
        };
        // The key is there whenever the tokens are (`action_secret` refused it otherwise).
        let edge = match (mm_chat.clone(), buttons.clone()) {
            (Some(chat), Some(buttons)) if !settings.mattermost_command_tokens.is_empty() => {
                Some(Arc::new(mattermost::Edge {
                    tokens: settings.mattermost_command_tokens.clone(),
                    chat,
                    buttons,
                    slash: config
                        .mattermost
                        .command
                        .as_ref()
                        .unwrap_or(&config.slack.command)
                        .get_ref()
                        .clone(),
                }))
            }
            _ => None,
        };
        let notifications = crate::notify::Notifications::new(
            store.clone(),
            deliveries,
            catalogue.clone(),
            zendesk.clone(),
            ports(
                Arc::new(SlackChat::new(
                    slack_outbox,
                    response_urls.clone(),
                    outbound.clone(),
                )),
                mm_outbox,
            ),
            config.notifications.clone(),
        );
        let chat: Arc<dyn crate::chat::ChatPort> = ports(
            Arc::new(SlackChat::new(slack, response_urls, outbound.clone())),
            mm_chat,
        );
        let vendors = Arc::new(crate::clients::Vendors::new(
            pagerduty, zendesk, github, outbound,
        ));
        let loops = Arc::<crate::background::Background>::default();
        let slash = config.slack.command.get_ref().clone();
        let commands = registry.rules();
        let runbooks = crate::runbooks::Runbooks::new(crate::runbooks::Parts {
            store: store.clone(),
            audit: audit.clone(),
            catalogue: catalogue.clone(),
            commands: commands.clone(),
            chat: chat.clone(),
            vendors: vendors.clone(),
            background: loops.clone(),
            jobs: config.jobs.clone(),
            slash: slash.clone(),
            handler_timeout: config.limits.handler_timeout,
        });
        let services = Services {
            background: loops,
            notifications: Arc::new(notifications),
            links: crate::links::Links::new(&settings, config.jobs.link_ttl),
            runbooks: Arc::new(runbooks),
            inbound: Arc::new(crate::inbound::Inbound::new(
                settings.slack_app_token.is_some(),
            )),
            chat,
            slash,
            in_flight: crate::inflight::InFlight::new(
                config.limits.max_in_flight,
                config.limits.max_in_flight_per_user,
            ),
            vendors,
            config,
            settings,
            store,
            audit,
            catalogue,
            commands,
        };
        let services = Arc::new(services);
        let (stop_jobs, stop) = tokio::sync::watch::channel(false);
        let mut job_tasks = Vec::new();
        if background {
            let spawn = &services.background;
            job_tasks = crate::runbooks::jobs::spawn(services.runbooks.clone(), stop.clone());
            job_tasks.push(spawn.spawn(
                "outbox sender",
                crate::notify::sender::run(services.notifications.clone(), stop.clone()),
            ));
            job_tasks.push(spawn.spawn("upkeep", crate::upkeep::run(services.clone(), stop)));
        }
        Ok(Self {
            services,
            registry: Arc::new(registry),
            mattermost: edge,
            audit_task,
            delivery_task,
            stop_jobs,
            job_tasks,
        })
    }

    /// The router, for serving or for driving in tests. Needs a chat platform: the Slack
    /// signing secret, Slack's app token (Socket Mode), or Mattermost's command token.
    /// With Socket Mode on and no signing secret, Slack's HTTP routes are left out (nothing
    /// could verify them); the rest (webhooks, pages, health) is served as always.
    pub fn router(&self) -> Result<axum::Router, ConfigError> {
        let settings = &self.services.settings;
        let body_timeout = self.services.config.limits.body_timeout;
        let (key, mut chat) = match (&settings.slack_signing_secret, &settings.slack_app_token) {
            (Some(secret), _) => (
                HmacKey::new(secret.expose_secret().as_bytes()),
                crate::slack::routes(body_timeout),
            ),
            // No Slack route is mounted to use it: a key nobody knows.
            (None, Some(_)) => (
                HmacKey::new(uuid::Uuid::new_v4().as_bytes()),
                axum::Router::new(),
            ),
            (None, None) if self.mattermost.is_some() => (
                HmacKey::new(uuid::Uuid::new_v4().as_bytes()),
                axum::Router::new(),
            ),
            (None, None) => {
                return Err(ConfigError::env(
                    "SLACK_SIGNING_SECRET",
                    "is not set; find it under Basic Information → App Credentials in your Slack app (or set SLACK_APP_TOKEN for Socket Mode, or MATTERMOST_COMMAND_TOKEN for Mattermost)",
                ));
            }
        };
        if let Some(edge) = &self.mattermost {
            chat = chat.merge(mattermost::routes(edge.clone(), body_timeout));
        }
        let state = AppState {
            services: self.services.clone(),
            registry: self.registry.clone(),
            slack_key: Arc::new(key),
        };
        Ok(http::router(state, chat))
    }

    /// Start Socket Mode's connections when `SLACK_APP_TOKEN` is set; they end when `stop`
    /// turns true.
    fn start_socket_mode(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
        let Some(token) = self.services.settings.slack_app_token.clone() else {
            return Ok(Vec::new());
        };
        let socket = crate::slack::socket::SocketMode::new(
            self.services.clone(),
            self.registry.clone(),
            token,
            &self.services.settings.slack_api_url,
            Outbound::new(RetryPolicy::default(), DEFAULT_HTTP_TIMEOUT),
            self.services.inbound.clone(),
        )?;
        tracing::info!("Socket Mode on: Slack's requests come over a WebSocket we open");
        Ok(crate::slack::socket::spawn(Arc::new(socket), stop))
    }

    /// Serve on `listener` until `shutdown` resolves, then let background commands finish (for
    /// up to the handler timeout) and flush the audit trail.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self
            .router()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let limits = &self.services.config.limits;
        use crate::http::server::ServerLimits;
        let server_limits = ServerLimits {
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout(),
            max_connections: crate::http::server::connection_cap(
                limits.max_connections,
                crate::http::server::open_files_limit(),
            ),
            drain: limits.body_timeout + Duration::from_secs(5),
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // `/metrics` on an address of its own, when asked for (an internal port for Prometheus).
        let metrics = match self.services.settings.metrics_listen_addr {
            Some(addr) => {
                let metrics_listener = TcpListener::bind(addr).await?;
                tracing::info!(%addr, "metrics listening");
                let router =
                    crate::http::metrics_router(self.services.clone(), self.registry.clone());
                let limits = ServerLimits {
                    max_connections: 64,
                    ..server_limits
                };
                Some(tokio::spawn(crate::http::server::serve(
                    metrics_listener,
                    router,
                    limits,
                    stopped(stop_rx.clone()),
                )))
            }
            None => None,
        };
        let sockets = self
            .start_socket_mode(stop_rx.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        crate::http::server::serve(listener, router, server_limits, stopped(stop_rx)).await?;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        for socket in sockets {
            if tokio::time::timeout(Duration::from_secs(5), socket)
                .await
                .is_err()
            {
                tracing::warn!("a Socket Mode connection did not close in time");
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// Stop the job workers and the outbox sender, wait for background commands (all within
    /// one grace period: the handler timeout plus 5 s), then let the delivery and audit writers
    /// commit what they hold before the pool closes. A job still running after the grace period
    /// is left to its lease: another replica reports it.
    pub async fn shutdown(self) {
        self.services.background.stopping();
        let _ = self.stop_jobs.send(true);
        let grace = self.services.config.limits.handler_timeout + Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + grace;
        for task in self.job_tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!("a job was still running at shutdown; its lease will expire");
            }
        }
        let services = self.services;
        let all = u32::try_from(services.in_flight.total()).unwrap_or(u32::MAX);
        if tokio::time::timeout_at(deadline, services.in_flight.global.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("shutting down with commands still running");
        }
        let store = services.store.clone();
        drop(services);
        // The writers end once every handle is gone (a detached task may still hold one); give
        // them a moment to commit, then close.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.delivery_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.audit_task).await;
        store.close().await;
    }
}

/// Every command: the built-ins now, vendor commands and runbooks as they are added. The
/// configuration's `[permissions]` keys are checked against it here.
pub fn build_registry(config: &FileConfig, source: &Source) -> Result<Registry, BuildError> {
    let catalogue = config.catalogue().map_err(BuildError::Registry)?;
    build_registry_with(config, &catalogue, source, Vec::new())
}

fn build_registry_with(
    config: &FileConfig,
    catalogue: &Catalogue,
    source: &Source,
    extra: Vec<command::Declaration>,
) -> Result<Registry, BuildError> {
    let mut declarations = command::builtin::declarations();
    declarations.extend(command::pagerduty::declarations());
    declarations.extend(command::zendesk::declarations());
    declarations.extend(command::github::declarations());
    declarations.extend(command::runbook::declarations(catalogue).map_err(BuildError::Registry)?);
    declarations.extend(command::deploy::declarations());
    declarations.extend(extra);
    let registry = Registry::build(declarations).map_err(BuildError::Registry)?;
    let known = registry.permission_keys();
    for key in config.permissions.keys() {
        if !known.contains(&key.get_ref().as_str()) {
            return Err(source
                .error_at(
                    key.span(),
                    format!("permissions.{}", key.get_ref()),
                    format!(
                        "no command family `{}`; families: {}",
                        key.get_ref(),
                        known.join(", ")
                    ),
                )
                .into());
        }
    }
    Ok(registry)
}

fn register_secrets(settings: &Settings) {
    let singles = [
        &settings.slack_signing_secret,
        &settings.slack_bot_token,
        &settings.slack_app_token,
        &settings.mattermost_bot_token,
        &settings.mattermost_action_secret,
        &settings.github_token,
        &settings.pagerduty_api_token,
        &settings.zendesk_api_token,
        &settings.link_secret,
        &settings.metrics_token,
    ];
    let lists = [
        &settings.mattermost_command_tokens,
        &settings.github_webhook_secrets,
        &settings.pagerduty_webhook_secrets,
        &settings.zendesk_webhook_secrets,
    ];
    let db_secrets = crate::store::url_secrets(&settings.database_url);
    crate::domain::redact::register_secrets(db_secrets.iter().map(String::as_str));
    crate::domain::redact::register_secrets(
        singles
            .into_iter()
            .flatten()
            .chain(lists.into_iter().flatten())
            .map(|s| s.expose_secret()),
    );
}

/// An `http` runbook's URL can be a credential in itself (an incoming-webhook URL): mask its
/// path and query wherever job output or audit text would repeat them.
fn register_runbook_urls(config: &FileConfig) {
    let urls = config
        .runbooks
        .iter()
        .flat_map(|r| std::iter::once(&r.run).chain(r.plan.as_ref()))
        .filter_map(|run| match run.get_ref() {
            crate::domain::runbook::Run::Http { url, .. } => url::Url::parse(url).ok(),
            _ => None,
        });
    let mut secrets = Vec::new();
    for url in urls {
        let path = url.path().trim_matches('/');
        if !path.is_empty() {
            secrets.push(path.to_owned());
        }
        if let Some(q) = url.query() {
            secrets.push(q.to_owned());
        }
    }
    crate::domain::redact::register_secrets(secrets.iter().map(String::as_str));
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT); the handlers are in place once this returns.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // Registered now, not when the future is first polled: a SIGTERM that arrives between
    // binding the port and serving is then a graceful shutdown, not the default action (an
    // abrupt exit with the last log lines unwritten).
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (term, int) = handlers;
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}
