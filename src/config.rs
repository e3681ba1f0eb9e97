//! Configuration: `pantheon.toml` for what the team decides (groups, permissions, runbooks,
//! routes) and the environment for secrets and addresses. Both are read once, at start, into
//! typed values; nothing on a request path reads either again.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use toml::Spanned;
use url::Url;

use crate::domain::{
    access::Access,
    approval::ApprovalPolicy,
    catalogue::Catalogue,
    deploy::DeployFields,
    freeze::{self, Freeze, Span as FreezeSpan},
    policy::PAGERDUTY_WRITE_ACTIONS,
    routing::Route,
    runbook::{Definition, Run, Runbook, placeholders},
};

/// A configuration problem, located in the file when it comes from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub location: Option<Location>,
    pub key: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{}:{}:{}: ", loc.path.display(), loc.line, loc.column)?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn env(var: &str, message: impl Into<String>) -> Self {
        Self {
            location: None,
            key: Some(var.to_owned()),
            message: message.into(),
        }
    }
}

/// The text of the configuration file, kept so that later checks (the command registry's, for
/// one) can point at a line.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub path: PathBuf,
    pub text: Arc<str>,
}

impl Source {
    /// An error at a byte span of the file, naming `key`.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_col(&self.text, span.start);
        ConfigError {
            location: Some(Location {
                path: self.path.clone(),
                line,
                column,
            }),
            key: Some(key.into()),
            message: message.into(),
        }
    }

    fn error_unlocated(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            location: Some(Location {
                path: self.path.clone(),
                line: 1,
                column: 1,
            }),
            key: Some(key.into()),
            message: message.into(),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// The dotted key at `offset`: the nearest table header above it plus the key on its line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(table_name);
    if line.starts_with('[') {
        return Some(table_name(line));
    }
    let key = line.split('=').next()?.trim();
    if key.is_empty() || key.starts_with('#') {
        return header;
    }
    Some(match header {
        Some(h) => format!("{h}.{key}"),
        None => key.to_owned(),
    })
}

/// `[[runbooks]]   # comment` -> `runbooks`.
fn table_name(header: &str) -> String {
    let header = header.split('#').next().unwrap_or(header);
    header
        .trim()
        .trim_matches(|c| c == '[' || c == ']')
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The file.

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub slack: SlackSection,
    /// Mattermost, beside Slack or instead of it.
    #[serde(default)]
    pub mattermost: MattermostSection,
    /// Group name -> user ids (Slack's, Mattermost's, or both); `"*"` means everyone.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<Spanned<String>>>,
    /// Command family (or `family.action`) -> groups allowed. A family not listed is open to
    /// everyone unless the command declares a stricter default (`audit`: admins).
    #[serde(default)]
    pub permissions: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default)]
    pub runbooks: Vec<RunbookConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub github: GithubSection,
    #[serde(default)]
    pub pagerduty: PagerDutySection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub jobs: JobsSection,
    #[serde(default)]
    pub notifications: NotificationsSection,
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub deploy: DeploySection,
    /// Freeze windows: when runs of some runbooks, environments or targets are refused.
    #[serde(default)]
    pub freezes: Vec<FreezeConfig>,
}

/// Deploy safety settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySection {
    /// The group one of whose members must approve a run that overrides a lock or a freeze
    /// (`--force`). Without it, locks and freezes cannot be overridden.
    #[serde(default)]
    pub override_group: Option<Spanned<String>>,
}

/// A freeze window as written: `from`/`to` dates, or a `weekly` span.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    pub name: Spanned<String>,
    /// `2026-12-20 00:00`, in `time_zone`.
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    #[serde(default)]
    pub to: Option<Spanned<String>>,
    /// `{ from = "Fri 16:00", to = "Mon 08:00" }`, every week, in `time_zone`.
    #[serde(default)]
    pub weekly: Option<Spanned<WeeklyConfig>>,
    #[serde(default = "default_time_zone")]
    pub time_zone: Spanned<String>,
    /// What it covers; nothing listed: every runbook.
    #[serde(default)]
    pub runbooks: Vec<Spanned<String>>,
    #[serde(default)]
    pub environments: Vec<Spanned<String>>,
    #[serde(default)]
    pub targets: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklyConfig {
    pub from: String,
    pub to: String,
}

fn default_time_zone() -> Spanned<String> {
    Spanned::new(0..0, "UTC".to_owned())
}

impl FreezeConfig {
    /// The window compiled, or what is wrong with it: (span, field, message).
    fn compile(&self) -> Result<Freeze, (std::ops::Range<usize>, &'static str, String)> {
        let zone = freeze::zone(self.time_zone.get_ref())
            .map_err(|e| (self.time_zone.span(), "time_zone", e))?;
        let span = match (&self.from, &self.to, &self.weekly) {
            (Some(from), Some(to), None) => {
                let start = freeze::parse_moment(from.get_ref(), &zone)
                    .map_err(|e| (from.span(), "from", e))?;
                let end =
                    freeze::parse_moment(to.get_ref(), &zone).map_err(|e| (to.span(), "to", e))?;
                if end <= start {
                    return Err((to.span(), "to", "must be after `from`".to_owned()));
                }
                FreezeSpan::Fixed {
                    from: start,
                    to: end,
                }
            }
            (None, None, Some(weekly)) => {
                let w = weekly.get_ref();
                let from =
                    freeze::parse_weekly(&w.from).map_err(|e| (weekly.span(), "weekly.from", e))?;
                let to =
                    freeze::parse_weekly(&w.to).map_err(|e| (weekly.span(), "weekly.to", e))?;
                if from == to {
                    return Err((
                        weekly.span(),
                        "weekly.to",
                        "must differ from `from` (a window of no time, or of every moment)"
                            .to_owned(),
                    ));
                }
                FreezeSpan::Weekly { from, to }
            }
            _ => {
                return Err((
                    self.name.span(),
                    "from",
                    "give either `from` and `to` (dates) or `weekly = { from = \"Fri 16:00\", to = \"Mon 08:00\" }`".to_owned(),
                ));
            }
        };
        Ok(Freeze {
            name: self.name.get_ref().clone(),
            span,
            zone,
            zone_name: self.time_zone.get_ref().clone(),
            scope: freeze::Scope {
                runbooks: self.runbooks.iter().map(|r| r.get_ref().clone()).collect(),
                environments: self
                    .environments
                    .iter()
                    .map(|e| e.get_ref().clone())
                    .collect(),
                targets: self.targets.iter().map(|t| t.get_ref().clone()).collect(),
            },
        })
    }
}

/// How long stored rows are kept before upkeep deletes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Payloads of webhook deliveries, and the notifications made from them once settled. The
    /// delivery's identity (source, id, body hash) is kept, so a redelivery stays a duplicate.
    #[serde(default = "default_keep_deliveries")]
    pub webhook_deliveries: Keep,
    /// Output of jobs that ended this long ago (the jobs themselves are kept).
    #[serde(default = "default_keep_job_logs")]
    pub job_logs: Keep,
    /// The audit trail: kept for ever unless a duration is given.
    #[serde(default)]
    pub audit_log: Keep,
}

impl Default for RetentionSection {
    fn default() -> Self {
        Self {
            webhook_deliveries: default_keep_deliveries(),
            job_logs: default_keep_job_logs(),
            audit_log: Keep::Forever,
        }
    }
}

fn default_keep_deliveries() -> Keep {
    Keep::For(Duration::from_secs(30 * 24 * 3600))
}

fn default_keep_job_logs() -> Keep {
    Keep::For(Duration::from_secs(90 * 24 * 3600))
}

/// `"forever"`, or a duration such as `"30d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    #[default]
    Forever,
    For(Duration),
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        if raw.trim().eq_ignore_ascii_case("forever") {
            return Ok(Keep::Forever);
        }
        humantime::parse_duration(&raw).map(Keep::For).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{raw}` is neither \"forever\" nor a duration ({e}); write e.g. \"30d\""
            ))
        })
    }
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keep::Forever => f.write_str("forever"),
            Keep::For(d) if d.as_secs() % 86_400 == 0 && d.subsec_nanos() == 0 => {
                write!(f, "{}d", d.as_secs() / 86_400)
            }
            Keep::For(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsSection {
    /// How long bursty events (pushes) wait so that a burst to one channel becomes one message.
    /// `0s` posts each at once.
    #[serde(default = "default_coalesce_window", with = "crate::domain::duration")]
    pub coalesce_window: Duration,
    /// Attempts before a message is given up on (5xx and network failures, with backoff).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    /// When this many notifications wait for one channel, they go as one summary message
    /// (Slack takes about one message a second per channel). Incidents are never summarised.
    /// `0` never summarises.
    #[serde(default = "default_summarize_after")]
    pub summarize_after: usize,
}

impl Default for NotificationsSection {
    fn default() -> Self {
        Self {
            coalesce_window: default_coalesce_window(),
            max_attempts: default_max_attempts(),
            summarize_after: default_summarize_after(),
        }
    }
}

fn default_coalesce_window() -> Duration {
    Duration::from_secs(2)
}

fn default_max_attempts() -> i32 {
    12
}

fn default_summarize_after() -> usize {
    20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// Worker tasks in this process.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How long a claimed job stays ours without a heartbeat; a worker renews it every third.
    #[serde(default = "default_lease", with = "crate::domain::duration")]
    pub lease: Duration,
    /// How often idle workers look for work queued by other processes.
    #[serde(default = "default_poll", with = "crate::domain::duration")]
    pub poll: Duration,
    /// How long links to job pages stay valid.
    #[serde(default = "default_link_ttl", with = "crate::domain::duration")]
    pub link_ttl: Duration,
}

impl Default for JobsSection {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            lease: default_lease(),
            poll: default_poll(),
            link_ttl: default_link_ttl(),
        }
    }
}

fn default_workers() -> usize {
    4
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}

fn default_poll() -> Duration {
    Duration::from_secs(1)
}

fn default_link_ttl() -> Duration {
    // A link opens the page for whoever holds it, so it is short-lived (it is the job's log).
    Duration::from_secs(24 * 3600)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSection {
    /// The slash command this app answers, with its slash.
    #[serde(default = "default_command")]
    pub command: Spanned<String>,
    /// The app's display name, used in the generated Slack manifest.
    #[serde(default = "default_app_name")]
    pub app_name: String,
}

impl Default for SlackSection {
    fn default() -> Self {
        Self {
            command: default_command(),
            app_name: default_app_name(),
        }
    }
}

fn default_command() -> Spanned<String> {
    Spanned::new(0..0, "/ops".to_owned())
}

fn default_app_name() -> String {
    "Pantheon".to_owned()
}

/// Mattermost: where its server is, and what its slash command is called.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MattermostSection {
    /// The server's base URL, e.g. `https://chat.example.com`: its REST API (`/api/v4`) for
    /// posts and lookups, and the only origin whose `response_url`s we answer.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The slash command's trigger, with its slash (default: the same as `slack.command`).
    #[serde(default)]
    pub command: Option<Spanned<String>>,
    /// How long a message button stays usable; a click on an older one is refused.
    #[serde(default = "default_button_ttl", with = "crate::domain::duration")]
    pub button_ttl: Duration,
}

impl Default for MattermostSection {
    fn default() -> Self {
        Self {
            url: None,
            command: None,
            button_ttl: default_button_ttl(),
        }
    }
}

fn default_button_ttl() -> Duration {
    // Approval requests expire sooner on their own; a job's "Log" button lives this long.
    Duration::from_secs(7 * 24 * 3600)
}

impl MattermostSection {
    /// The server's base URL, parsed (validated when the file is read).
    pub fn base_url(&self) -> Option<Url> {
        self.url
            .as_ref()
            .and_then(|u| parse_base_url(u.get_ref()).ok())
    }
}

/// The chat platforms: where a route sends, and whom `console` plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    #[default]
    Slack,
    Mattermost,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Slack => "slack",
            Platform::Mattermost => "mattermost",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GithubSection {
    /// Owner used when `pulls <repo>` names no owner.
    pub default_owner: Option<String>,
    /// Organisation used when `org-pulls` names none.
    pub default_org: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PagerDutySection {
    /// Service `pager trigger` opens incidents on (a PagerDuty service id).
    #[serde(default)]
    pub default_service: Option<String>,
    /// Write actions that need a peer's approval (`ack`, `resolve`, `override`, `maintenance`,
    /// `trigger`). Empty by default. Such a command opens an approval request, and runs as the
    /// person who asked once approved.
    #[serde(default)]
    pub approval_required: Vec<Spanned<String>>,
    /// Who approves those actions; default: one member of `approvers`, within an hour.
    #[serde(default)]
    pub approval: Option<Spanned<ApprovalPolicy>>,
}

impl PagerDutySection {
    /// The approval policy for held PagerDuty actions.
    pub fn approval_policy(&self) -> ApprovalPolicy {
        self.approval
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// How long a command's handler may run before the user is told it timed out.
    #[serde(default = "default_handler_timeout", with = "crate::domain::duration")]
    pub handler_timeout: Duration,
    /// Commands running in the background at once; past this the acknowledgement says "busy".
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Of those, how many one person may run at once (votes and cancels are not counted).
    #[serde(default = "default_max_in_flight_per_user")]
    pub max_in_flight_per_user: usize,
    /// How long a client has to send a request's headers, from the connection opening or the
    /// previous response.
    #[serde(default = "default_header_timeout", with = "crate::domain::duration")]
    pub header_timeout: Duration,
    /// How long a client has to send a whole request body, once its headers are in.
    #[serde(default = "default_body_timeout", with = "crate::domain::duration")]
    pub body_timeout: Duration,
    /// How long a connection kept alive after a response may wait for its next request. At
    /// most `header_timeout`, whose timer also runs while a connection waits. Read it with
    /// [`LimitsSection::idle_timeout`].
    #[serde(
        default,
        rename = "idle_timeout",
        with = "crate::domain::duration::option"
    )]
    pub idle_timeout_setting: Option<Duration>,
    /// Client connections open at once. Unset: the open-files limit less a reserve for the
    /// database, job processes and outbound calls; a larger value is lowered to that at start.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            handler_timeout: default_handler_timeout(),
            max_in_flight: default_max_in_flight(),
            max_in_flight_per_user: default_max_in_flight_per_user(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout_setting: None,
            max_connections: None,
        }
    }
}

impl LimitsSection {
    /// The keep-alive idle timeout: as configured, else 5 s (or `header_timeout`, if shorter).
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout_setting
            .unwrap_or_else(|| default_idle_timeout().min(self.header_timeout))
    }
}

fn default_max_in_flight_per_user() -> usize {
    16
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_handler_timeout() -> Duration {
    Duration::from_secs(25)
}

fn default_max_in_flight() -> usize {
    512
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookConfig {
    pub name: Spanned<String>,
    /// Chat syntax: literal words and `{param}` placeholders.
    pub usage: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Parameter name -> regular expression the whole value must match.
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<String>>,
    /// One running job per rendered target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    pub run: Spanned<Run>,
    /// A dry run whose output is shown in the approval message.
    #[serde(default)]
    pub plan: Option<Spanned<Run>>,
    #[serde(default)]
    pub approval: Option<Spanned<ApprovalPolicy>>,
    /// Whether a job interrupted by a dead worker may be run again automatically.
    #[serde(default)]
    pub retry_safe: bool,
    /// Which parameters say what a run deploys where: `{ app = "{app}", env = "{env}",
    /// version = "{version}" }`. A runbook with it is a deploy (`deploys`, `where`, `rollback`).
    #[serde(default)]
    pub deploy: Option<Spanned<DeployFields>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub source: Spanned<String>,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default, rename = "match")]
    pub matches: BTreeMap<String, String>,
    pub channel: Spanned<String>,
    /// Which chat platform `channel` is on.
    #[serde(default)]
    pub platform: Platform,
}

/// Every placeholder in usage, target and runner templates must be a declared parameter, and
/// every usage placeholder needs an expression. Errors are (span, field, message).
fn check_templates(
    runbook: &RunbookConfig,
) -> Result<(), (std::ops::Range<usize>, &'static str, String)> {
    let usage = runbook.usage.get_ref();
    let usage_params = placeholders(usage).map_err(|e| (runbook.usage.span(), "usage", e))?;
    let words: Vec<&str> = usage.split_whitespace().collect();
    if words.first().is_none_or(|w| w.starts_with('{')) {
        return Err((
            runbook.usage.span(),
            "usage",
            "usage must start with a literal word, like \"deploy {app} ...\"".to_owned(),
        ));
    }
    for word in &words {
        if word.contains('{') && !(word.starts_with('{') && word.ends_with('}')) {
            return Err((
                runbook.usage.span(),
                "usage",
                format!("`{word}`: a placeholder must be a whole word"),
            ));
        }
    }
    for name in &usage_params {
        if !runbook.params.contains_key(*name) {
            return Err((
                runbook.usage.span(),
                "usage",
                format!("`{{{name}}}` has no expression in `params`"),
            ));
        }
    }
    let known = |name: &str| runbook.params.contains_key(name);
    let check = |template: &str| -> Result<(), String> {
        for name in placeholders(template)? {
            if !known(name) {
                return Err(format!("`{{{name}}}` is not one of this runbook's params"));
            }
        }
        Ok(())
    };
    if let Some(target) = &runbook.target {
        check(target.get_ref()).map_err(|e| (target.span(), "target", e))?;
    }
    if runbook.params.contains_key("force") {
        return Err((
            runbook.usage.span(),
            "params.force",
            "`force` is Pantheon's own word (`--force` or `force=yes` overrides a lock or freeze); call the parameter something else".to_owned(),
        ));
    }
    if let Some(deploy) = &runbook.deploy {
        let d = deploy.get_ref();
        for (field, template) in [
            ("deploy.app", &d.app),
            ("deploy.env", &d.env),
            ("deploy.version", &d.version),
        ] {
            if placeholders(template)
                .map_err(|e| (deploy.span(), field, e))?
                .is_empty()
                && field == "deploy.version"
            {
                return Err((
                    deploy.span(),
                    field,
                    format!("`{template}` names no parameter; write e.g. \"{{version}}\""),
                ));
            }
            check(template).map_err(|e| (deploy.span(), field, e))?;
        }
        if let Some(repo) = &d.github {
            check(repo).map_err(|e| (deploy.span(), "deploy.github", e))?;
            let shape = repo.split('/').collect::<Vec<_>>();
            if shape.len() != 2 || shape.iter().any(|p| p.is_empty()) {
                return Err((
                    deploy.span(),
                    "deploy.github",
                    format!("`{repo}` is not a repository like \"acme/{{app}}\""),
                ));
            }
        }
    }
    let runners =
        std::iter::once(("run", &runbook.run)).chain(runbook.plan.iter().map(|p| ("plan", p)));
    for (field, runner) in runners {
        let templates: Vec<&str> = match runner.get_ref() {
            Run::Command { argv, env, .. } => {
                if argv.is_empty() {
                    return Err((runner.span(), field, "argv must name a program".to_owned()));
                }
                if argv[0].contains('{') {
                    return Err((
                        runner.span(),
                        field,
                        "the program (argv[0]) cannot come from a parameter".to_owned(),
                    ));
                }
                argv.iter()
                    .chain(env.values())
                    .map(String::as_str)
                    .collect()
            }
            Run::GithubWorkflow {
                repo,
                workflow,
                git_ref,
                inputs,
            } => [repo.as_str(), workflow.as_str(), git_ref.as_str()]
                .into_iter()
                .chain(inputs.values().map(String::as_str))
                .collect(),
            Run::Http { url, body, .. } => {
                if url.contains('{') {
                    return Err((
                        runner.span(),
                        field,
                        "the URL cannot contain parameters; send them in `body`".to_owned(),
                    ));
                }
                body.values().map(String::as_str).collect()
            }
            Run::HeldCommand => Vec::new(),
        };
        for t in templates {
            check(t).map_err(|e| (runner.span(), field, e))?;
        }
    }
    Ok(())
}

pub const SOURCES: &[&str] = &["github", "pagerduty", "zendesk"];

impl RunbookConfig {
    /// The definition, without the file positions.
    pub fn definition(&self) -> Definition {
        Definition {
            name: self.name.get_ref().clone(),
            usage: self.usage.get_ref().clone(),
            description: self.description.clone(),
            params: self
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect(),
            target: self.target.as_ref().map(|t| t.get_ref().clone()),
            run: self.run.get_ref().clone(),
            plan: self.plan.as_ref().map(|p| p.get_ref().clone()),
            approval: self.approval.as_ref().map(|a| a.get_ref().clone()),
            retry_safe: self.retry_safe,
            deploy: self.deploy.as_ref().map(|d| d.get_ref().clone()),
        }
    }
}

impl FileConfig {
    /// The configuration compiled for use: every expression compiled once. A file that
    /// [`FileConfig::parse`] accepted always compiles; the error is for one built by hand.
    pub fn catalogue(&self) -> Result<Catalogue, String> {
        let runbooks = self
            .runbooks
            .iter()
            .map(|r| {
                Runbook::compile(r.definition())
                    .map_err(|e| format!("runbook `{}`: {e}", r.name.get_ref()))
            })
            .collect::<Result<_, _>>()?;
        let policy = self.pagerduty.approval_policy();
        let approval_required: Vec<String> = self
            .pagerduty
            .approval_required
            .iter()
            .map(|a| a.get_ref().clone())
            .collect();
        let held = approval_required
            .iter()
            .map(|action| Runbook::held(action, policy.clone()))
            .collect::<Result<_, _>>()?;
        let routes = self
            .routes
            .iter()
            .map(|r| Route {
                source: r.source.get_ref().clone(),
                events: r.events.clone(),
                matches: r.matches.clone(),
                channel: r.channel.get_ref().clone(),
            })
            .collect();
        let plain = |v: &[Spanned<String>]| v.iter().map(|m| m.get_ref().clone()).collect();
        let access = Access::new(
            self.groups
                .iter()
                .map(|(k, v)| (k.clone(), plain(v)))
                .collect(),
            self.permissions
                .iter()
                .map(|(k, v)| (k.get_ref().clone(), plain(v)))
                .collect(),
        );
        let freezes = self
            .freezes
            .iter()
            .map(|f| {
                f.compile()
                    .map_err(|(_, field, e)| format!("freeze `{}`: {field}: {e}", f.name.get_ref()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Catalogue {
            runbooks,
            held,
            routes,
            access,
            approval_required,
            freezes,
            override_group: self
                .deploy
                .override_group
                .as_ref()
                .map(|g| g.get_ref().clone()),
        })
    }

    /// Parse and check a configuration file's text. Errors name the file, line and key.
    pub fn parse(source: &Source) -> Result<Self, ConfigError> {
        let config: FileConfig = toml::from_str(&source.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, column) = line_col(&source.text, span.start);
            ConfigError {
                location: Some(Location {
                    path: source.path.clone(),
                    line,
                    column,
                }),
                key: key_at(&source.text, span.start),
                message: e.message().trim().to_owned(),
            }
        })?;
        config.validate(source)?;
        Ok(config)
    }

    fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        let command = &self.slack.command;
        if !is_slash_command(command.get_ref()) {
            return Err(source.error_at(
                command.span(),
                "slack.command",
                format!(
                    "`{}` is not a slash command; write e.g. \"/ops\"",
                    command.get_ref()
                ),
            ));
        }
        for (group, members) in &self.groups {
            if !is_name(group) {
                return Err(source.error_unlocated(
                    format!("groups.{group}"),
                    "group names are letters, digits, `-` and `_`",
                ));
            }
            for member in members {
                let m = member.get_ref();
                if m != "*" && !is_slack_user_id(m) && !is_mattermost_id(m) {
                    return Err(source.error_at(
                        member.span(),
                        format!("groups.{group}"),
                        format!("`{m}` is not a Slack user id (like \"U024BE7LH\"), a Mattermost user id (26 lower-case letters and digits) or \"*\""),
                    ));
                }
            }
        }
        for (family, groups) in &self.permissions {
            for group in groups {
                self.check_group(source, group, &format!("permissions.{}", family.get_ref()))?;
            }
        }
        let mut names = BTreeSet::new();
        for (i, runbook) in self.runbooks.iter().enumerate() {
            let key = format!("runbooks[{i}]");
            if !names.insert(runbook.name.get_ref().as_str()) {
                return Err(source.error_at(
                    runbook.name.span(),
                    format!("{key}.name"),
                    format!("runbook `{}` is defined twice", runbook.name.get_ref()),
                ));
            }
            if !is_name(runbook.name.get_ref()) {
                return Err(source.error_at(
                    runbook.name.span(),
                    format!("{key}.name"),
                    "runbook names are letters, digits, `-` and `_`",
                ));
            }
            for (param, pattern) in &runbook.params {
                if let Err(e) = crate::domain::runbook::compile_param_regex(pattern.get_ref()) {
                    return Err(source.error_at(
                        pattern.span(),
                        format!("{key}.params.{param}"),
                        e,
                    ));
                }
            }
            if let Some(approval) = &runbook.approval {
                let a = approval.get_ref();
                if !self.groups.contains_key(&a.group) {
                    return Err(source.error_at(
                        approval.span(),
                        format!("{key}.approval.group"),
                        format!("unknown group `{}`{}", a.group, self.known_groups()),
                    ));
                }
                if a.count == 0 {
                    return Err(source.error_at(
                        approval.span(),
                        format!("{key}.approval.count"),
                        "count must be at least 1",
                    ));
                }
                for (param, value) in &a.when {
                    let Some(pattern) = runbook.params.get(param) else {
                        return Err(source.error_at(
                            approval.span(),
                            format!("{key}.approval.when.{param}"),
                            format!("`{param}` is not one of this runbook's params"),
                        ));
                    };
                    let when_key = format!("{key}.approval.when.{param}");
                    crate::domain::runbook::compile_when(value)
                        .map_err(|e| source.error_at(approval.span(), when_key.clone(), e))?;
                    let accepts = crate::domain::runbook::compile_param_regex(pattern.get_ref())
                        .is_ok_and(|re| crate::domain::runbook::when_can_apply(value, &re));
                    if !accepts {
                        return Err(source.error_at(
                            approval.span(),
                            when_key,
                            format!(
                                "`{param}` can never be `{value}` (it must match `{}`), so this approval would never be asked for",
                                pattern.get_ref()
                            ),
                        ));
                    }
                }
            }
            check_templates(runbook).map_err(|(span, field, msg)| {
                source.error_at(span, format!("{key}.{field}"), msg)
            })?;
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !SOURCES.contains(&route.source.get_ref().as_str()) {
                return Err(source.error_at(
                    route.source.span(),
                    format!("routes[{i}].source"),
                    format!(
                        "unknown source `{}`; expected one of {}",
                        route.source.get_ref(),
                        SOURCES.join(", ")
                    ),
                ));
            }
            for field in route.matches.keys() {
                if !crate::domain::routing::MATCH_FIELDS.contains(&field.as_str()) {
                    return Err(source.error_at(
                        route.source.span(),
                        format!("routes[{i}].match.{field}"),
                        format!(
                            "unknown match field `{field}`; expected one of {}",
                            crate::domain::routing::MATCH_FIELDS.join(", ")
                        ),
                    ));
                }
            }
            let channel = route.channel.get_ref().trim();
            let wrong = match route.platform {
                _ if channel.is_empty() => true,
                // Slack channels have been named by tests and old configs in other ways; only
                // a Mattermost id would be sent to the wrong platform.
                Platform::Slack => is_mattermost_id(channel),
                Platform::Mattermost => !is_mattermost_id(channel),
            };
            if wrong {
                return Err(source.error_at(
                    route.channel.span(),
                    format!("routes[{i}].channel"),
                    match route.platform {
                        Platform::Slack => "channel must be a Slack channel id like \"C0DEV\" (for a Mattermost channel, add platform = \"mattermost\")",
                        Platform::Mattermost => "channel must be a Mattermost channel id: 26 lower-case letters and digits (the channel's \"View Info\" shows it)",
                    },
                ));
            }
        }
        if let Some(url) = &self.mattermost.url
            && let Err(e) = parse_base_url(url.get_ref())
        {
            return Err(source.error_at(url.span(), "mattermost.url", e));
        }
        if let Some(command) = &self.mattermost.command
            && !is_slash_command(command.get_ref())
        {
            return Err(source.error_at(
                command.span(),
                "mattermost.command",
                format!(
                    "`{}` is not a slash command; write e.g. \"/ops\"",
                    command.get_ref()
                ),
            ));
        }
        for action in &self.pagerduty.approval_required {
            if !PAGERDUTY_WRITE_ACTIONS.contains(&action.get_ref().as_str()) {
                return Err(source.error_at(
                    action.span(),
                    "pagerduty.approval_required",
                    format!(
                        "unknown action `{}`; expected one of {}",
                        action.get_ref(),
                        PAGERDUTY_WRITE_ACTIONS.join(", ")
                    ),
                ));
            }
        }
        if !self.pagerduty.approval_required.is_empty() || self.pagerduty.approval.is_some() {
            let policy = self.pagerduty.approval_policy();
            let span = self
                .pagerduty
                .approval
                .as_ref()
                .map(Spanned::span)
                .or_else(|| self.pagerduty.approval_required.first().map(Spanned::span))
                .unwrap_or_default();
            if !self.groups.contains_key(&policy.group) {
                return Err(source.error_at(
                    span,
                    "pagerduty.approval.group",
                    format!(
                        "unknown group `{}`{} (pagerduty.approval_required needs approvers: define the group or set pagerduty.approval)",
                        policy.group,
                        self.known_groups()
                    ),
                ));
            }
            if policy.count == 0 {
                return Err(source.error_at(
                    span,
                    "pagerduty.approval.count",
                    "count must be at least 1",
                ));
            }
            if !policy.when.is_empty() {
                return Err(source.error_at(
                    span,
                    "pagerduty.approval.when",
                    "`when` is for runbook parameters; PagerDuty actions listed in approval_required always need approval",
                ));
            }
        }
        if self.limits.max_in_flight == 0 {
            return Err(source.error_unlocated("limits.max_in_flight", "must be at least 1"));
        }
        if self.limits.max_in_flight_per_user == 0 {
            return Err(
                source.error_unlocated("limits.max_in_flight_per_user", "must be at least 1")
            );
        }
        if self.limits.max_connections.is_some_and(|c| c < 16) {
            return Err(source.error_unlocated("limits.max_connections", "must be at least 16"));
        }
        if self.limits.idle_timeout() > self.limits.header_timeout {
            return Err(source.error_unlocated(
                "limits.idle_timeout",
                "must not be longer than limits.header_timeout (a connection waiting for its next request is also waiting for that request's headers)",
            ));
        }
        let within = |key: &str, d: Duration, min: Duration, max: Duration| {
            if d < min || d > max {
                Err(source.error_unlocated(
                    key,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let secs = Duration::from_secs;
        within(
            "limits.handler_timeout",
            self.limits.handler_timeout,
            Duration::from_millis(100),
            secs(3600),
        )?;
        within(
            "limits.header_timeout",
            self.limits.header_timeout,
            Duration::from_millis(100),
            secs(300),
        )?;
        within(
            "limits.body_timeout",
            self.limits.body_timeout,
            Duration::from_millis(100),
            secs(600),
        )?;
        within(
            "limits.idle_timeout",
            self.limits.idle_timeout(),
            Duration::from_millis(100),
            secs(300),
        )?;
        within("jobs.lease", self.jobs.lease, secs(1), secs(3600))?;
        within(
            "jobs.poll",
            self.jobs.poll,
            Duration::from_millis(10),
            secs(60),
        )?;
        within(
            "jobs.link_ttl",
            self.jobs.link_ttl,
            secs(60),
            secs(365 * 24 * 3600),
        )?;
        within(
            "notifications.coalesce_window",
            self.notifications.coalesce_window,
            Duration::ZERO,
            secs(60),
        )?;
        for (key, keep) in [
            (
                "retention.webhook_deliveries",
                self.retention.webhook_deliveries,
            ),
            ("retention.job_logs", self.retention.job_logs),
            ("retention.audit_log", self.retention.audit_log),
        ] {
            if let Keep::For(d) = keep {
                within(key, d, secs(3600), secs(100 * 365 * 24 * 3600))?;
            }
        }
        if self.jobs.workers > 64 {
            return Err(source.error_unlocated("jobs.workers", "at most 64 workers per process"));
        }
        if !(1..=50).contains(&self.notifications.max_attempts) {
            return Err(
                source.error_unlocated("notifications.max_attempts", "must be between 1 and 50")
            );
        }
        for (i, runbook) in self.runbooks.iter().enumerate() {
            if let Some(approval) = &runbook.approval {
                let expires = approval.get_ref().expires;
                if expires < secs(1) || expires > secs(30 * 24 * 3600) {
                    return Err(source.error_at(
                        approval.span(),
                        format!("runbooks[{i}].approval.expires"),
                        "must be between 1s and 30 days",
                    ));
                }
            }
        }
        self.validate_deploy_safety(source)
    }

    fn validate_deploy_safety(&self, source: &Source) -> Result<(), ConfigError> {
        if let Some(group) = &self.deploy.override_group {
            self.check_group(source, group, "deploy.override_group")?;
        }
        let mut compiled: Vec<(usize, Freeze)> = Vec::new();
        let now = time::OffsetDateTime::now_utc();
        for (i, f) in self.freezes.iter().enumerate() {
            let key = format!("freezes[{i}]");
            if !is_name(f.name.get_ref()) {
                return Err(source.error_at(
                    f.name.span(),
                    format!("{key}.name"),
                    "freeze names are letters, digits, `-` and `_`",
                ));
            }
            if let Some((_, earlier)) = compiled.iter().find(|(_, c)| c.name == *f.name.get_ref()) {
                return Err(source.error_at(
                    f.name.span(),
                    format!("{key}.name"),
                    format!("freeze `{}` is defined twice", earlier.name),
                ));
            }
            for r in &f.runbooks {
                if !self
                    .runbooks
                    .iter()
                    .any(|rb| rb.name.get_ref() == r.get_ref())
                {
                    return Err(source.error_at(
                        r.span(),
                        format!("{key}.runbooks"),
                        format!("there is no runbook `{}`", r.get_ref()),
                    ));
                }
            }
            // A name no runbook can have is a typo: the window would never hold.
            let compiled_runbooks: Vec<Runbook> = self
                .runbooks
                .iter()
                .filter_map(|r| Runbook::compile(r.definition()).ok())
                .collect();
            for env in &f.environments {
                let lower = env.get_ref().to_lowercase();
                if !compiled_runbooks
                    .iter()
                    .any(|r| r.may_be_in(env.get_ref()) || r.may_be_in(&lower))
                {
                    return Err(source.error_at(
                        env.span(),
                        format!("{key}.environments"),
                        format!(
                            "no runbook deploys to `{}` (an environment comes from a runbook's `deploy = {{ env = … }}`)",
                            env.get_ref()
                        ),
                    ));
                }
            }
            for target in &f.targets {
                let lower = target.get_ref().to_lowercase();
                if !compiled_runbooks
                    .iter()
                    .any(|r| r.may_target(target.get_ref()) || r.may_target(&lower))
                {
                    return Err(source.error_at(
                        target.span(),
                        format!("{key}.targets"),
                        format!("no runbook runs on `{}`", target.get_ref()),
                    ));
                }
            }
            let freeze = f.compile().map_err(|(span, field, message)| {
                source.error_at(span, format!("{key}.{field}"), message)
            })?;
            // Two windows that could hold at once for the same runs would leave "which one,
            // until when" to chance: refused, naming the moment they share.
            let horizon = now + time::Duration::days(366);
            if let Some((j, other, at)) = compiled.iter().find_map(|(j, other)| {
                freeze
                    .overlap(other, now - time::Duration::days(1), horizon)
                    .map(|at| (j, other, at))
            }) {
                return Err(source.error_at(
                    f.name.span(),
                    format!("{key}.name"),
                    format!(
                        "freeze `{}` overlaps freeze `{}` (freezes[{j}]) for the same runs, e.g. at {}; merge them or narrow their runbooks, environments or targets",
                        freeze.name,
                        other.name,
                        freeze.local(at)
                    ),
                ));
            }
            compiled.push((i, freeze));
        }
        Ok(())
    }

    fn check_group(
        &self,
        source: &Source,
        group: &Spanned<String>,
        key: &str,
    ) -> Result<(), ConfigError> {
        if self.groups.contains_key(group.get_ref()) {
            Ok(())
        } else {
            Err(source.error_at(
                group.span(),
                key,
                format!("unknown group `{}`{}", group.get_ref(), self.known_groups()),
            ))
        }
    }

    fn known_groups(&self) -> String {
        if self.groups.is_empty() {
            "; no [groups] are defined".to_owned()
        } else {
            let names: Vec<&str> = self.groups.keys().map(String::as_str).collect();
            format!("; defined groups: {}", names.join(", "))
        }
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_slash_command(s: &str) -> bool {
    s.len() > 1
        && s.starts_with('/')
        && s[1..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Mattermost ids (users, channels, posts, teams): 26 characters of lower-case letters and
/// digits (its `NewId`, base32 of 16 random bytes).
pub fn is_mattermost_id(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Slack user ids: `U…` or `W…` (Enterprise Grid), upper-case letters and digits.
pub fn is_slack_user_id(s: &str) -> bool {
    s.len() >= 3
        && s.len() <= 32
        && (s.starts_with('U') || s.starts_with('W'))
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// The environment.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Secrets and addresses from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub listen_addr: SocketAddr,
    pub public_url: Url,
    pub response_url_hosts: Vec<String>,
    pub log_format: Option<LogFormat>,
    pub slack_signing_secret: Option<SecretString>,
    pub slack_bot_token: Option<SecretString>,
    /// An app-level token (`xapp-…`, scope `connections:write`): Slack's requests come over
    /// Socket Mode, a WebSocket we open, instead of (or beside) signed HTTP.
    pub slack_app_token: Option<SecretString>,
    pub slack_api_url: Url,
    /// Mattermost's slash-command tokens (comma-separated, so a new one can be added before
    /// the old one is removed): a command carrying none of them is refused.
    pub mattermost_command_tokens: Vec<SecretString>,
    /// A Mattermost bot account's access token: posts, edits, ephemeral posts, user lookups.
    pub mattermost_bot_token: Option<SecretString>,
    /// Our own key for the context of Mattermost message buttons (Mattermost signs nothing it
    /// sends to an integration, so the context of each button carries our signature).
    pub mattermost_action_secret: Option<SecretString>,
    pub github_token: Option<SecretString>,
    pub github_webhook_secrets: Vec<SecretString>,
    pub github_api_url: Url,
    pub pagerduty_api_token: Option<SecretString>,
    pub pagerduty_webhook_secrets: Vec<SecretString>,
    pub pagerduty_api_url: Url,
    pub zendesk_api_url: Option<Url>,
    pub zendesk_email: Option<String>,
    pub zendesk_api_token: Option<SecretString>,
    pub zendesk_webhook_secrets: Vec<SecretString>,
    /// Key for the signed links to job pages; derived from the Slack signing secret if unset.
    pub link_secret: Option<SecretString>,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>`.
    pub metrics_token: Option<SecretString>,
    /// When set, `/metrics` is served on this address only (not on `LISTEN_ADDR`).
    pub metrics_listen_addr: Option<SocketAddr>,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://pantheon.db";
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:3000";

impl Settings {
    /// Read settings through `var`, which is `std::env::var` in the binary and a map in tests.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let secret = |name: &str| get(name).map(SecretString::from);
        let secrets = |name: &str| -> Vec<SecretString> {
            get(name)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| SecretString::from(s.to_owned()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let url = |name: &str, default: &str| -> Result<Url, ConfigError> {
            let raw = get(name).unwrap_or_else(|| default.to_owned());
            parse_base_url(&raw).map_err(|m| ConfigError::env(name, m))
        };
        let listen = get("LISTEN_ADDR").unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned());
        let listen_addr = listen.parse().map_err(|_| {
            ConfigError::env(
                "LISTEN_ADDR",
                format!("`{listen}` is not an address like 127.0.0.1:3000"),
            )
        })?;
        let public_default = format!("http://{listen}");
        let log_format = match get("LOG_FORMAT").as_deref() {
            None => None,
            Some("json") => Some(LogFormat::Json),
            Some("pretty") => Some(LogFormat::Pretty),
            Some(other) => {
                return Err(ConfigError::env(
                    "LOG_FORMAT",
                    format!("`{other}` is neither `json` nor `pretty`"),
                ));
            }
        };
        let response_url_hosts = get("RESPONSE_URL_HOSTS")
            .map(|v| {
                v.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_else(|| vec!["hooks.slack.com".to_owned()]);
        let zendesk_api_url = match (get("ZENDESK_API_URL"), get("ZENDESK_SUBDOMAIN")) {
            (Some(raw), _) => {
                Some(parse_base_url(&raw).map_err(|m| ConfigError::env("ZENDESK_API_URL", m))?)
            }
            (None, Some(sub)) => {
                if !sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(ConfigError::env(
                        "ZENDESK_SUBDOMAIN",
                        "a subdomain is letters, digits and `-`",
                    ));
                }
                Some(
                    parse_base_url(&format!("https://{sub}.zendesk.com"))
                        .map_err(|m| ConfigError::env("ZENDESK_SUBDOMAIN", m))?,
                )
            }
            (None, None) => None,
        };
        Ok(Self {
            database_url: get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            listen_addr,
            public_url: url("PUBLIC_URL", &public_default)?,
            response_url_hosts,
            log_format,
            slack_signing_secret: secret("SLACK_SIGNING_SECRET"),
            slack_bot_token: secret("SLACK_BOT_TOKEN"),
            slack_app_token: secret("SLACK_APP_TOKEN"),
            slack_api_url: url("SLACK_API_URL", "https://slack.com/api")?,
            mattermost_command_tokens: secrets("MATTERMOST_COMMAND_TOKEN"),
            mattermost_bot_token: secret("MATTERMOST_BOT_TOKEN"),
            mattermost_action_secret: secret("PANTHEON_MATTERMOST_ACTION_SECRET"),
            github_token: secret("GITHUB_TOKEN"),
            github_webhook_secrets: secrets("GITHUB_WEBHOOK_SECRET"),
            github_api_url: url("GITHUB_API_URL", "https://api.github.com")?,
            pagerduty_api_token: secret("PAGERDUTY_API_TOKEN"),
            pagerduty_webhook_secrets: secrets("PAGERDUTY_WEBHOOK_SECRET"),
            pagerduty_api_url: url("PAGERDUTY_API_URL", "https://api.pagerduty.com")?,
            zendesk_api_url,
            zendesk_email: get("ZENDESK_EMAIL"),
            zendesk_api_token: secret("ZENDESK_API_TOKEN"),
            zendesk_webhook_secrets: secrets("ZENDESK_WEBHOOK_SECRET"),
            link_secret: secret("PANTHEON_LINK_SECRET"),
            metrics_token: secret("METRICS_TOKEN"),
            metrics_listen_addr: match get("METRICS_LISTEN_ADDR") {
                None => None,
                Some(raw) => Some(raw.parse().map_err(|_| {
                    ConfigError::env(
                        "METRICS_LISTEN_ADDR",
                        format!("`{raw}` is not an address like 127.0.0.1:9090"),
                    )
                })?),
            },
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Settings for tests and the console: defaults everywhere, nothing configured.
    pub fn defaults() -> Self {
        match Self::from_lookup(|_| None) {
            Ok(s) => s,
            Err(e) => unreachable!("the defaults are valid: {e}"),
        }
    }
}

/// A base URL with a trailing slash, so `join("incidents")` appends instead of replacing.
fn parse_base_url(raw: &str) -> Result<Url, String> {
    let mut url = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{raw}` must be an http or https URL"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Where the configuration file is, if there is one: `--config`, then `PANTHEON_CONFIG`, then
/// `./pantheon.toml` when it exists. No file means the defaults (everyone may run everything but
/// admin commands, no runbooks, no routes).
pub fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("PANTHEON_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from("pantheon.toml");
    local.exists().then_some(local)
}

/// Read and check the file at `path` (or the defaults when there is none).
pub fn load_file(path: Option<&Path>) -> Result<(FileConfig, Source), ConfigError> {
    let Some(path) = path else {
        return Ok((FileConfig::default(), Source::default()));
    };
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        location: None,
        key: None,
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    let source = Source {
        path: path.to_owned(),
        text: text.into(),
    };
    let config = FileConfig::parse(&source)?;
    Ok((config, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(&Source {
            path: "pantheon.toml".into(),
            text: text.into(),
        })
    }

    const DESIGN_EXAMPLE: &str = r#"
[slack]
command = "/ops"                      # the slash command this app answers

[groups]                              # Slack user ids; "*" means everyone
approvers = ["U02JANE", "U03JOE"]
admins    = ["U03JOE"]
deployers = ["*"]

[permissions]                         # command family -> groups allowed (default: everyone)
deploy = ["deployers"]
audit  = ["admins"]

[[runbooks]]                          # operations people run from chat
name     = "deploy"
usage    = "deploy {app} {version} to {env}"          # chat syntax, parsed by the registry
params   = { app = "^[a-z0-9-]+$", version = "^[A-Za-z0-9._-]+$", env = "^(staging|production)$" }
target   = "{app}/{env}"                                # one running job per target
run      = { kind = "command", argv = ["./deploy.sh", "{app}", "{version}", "{env}"], timeout = "30m" }
approval = { group = "approvers", count = 1, expires = "1h", when = { env = "production" } }

[[routes]]                            # inbound webhook events -> channels
source  = "github"                    # github | pagerduty | zendesk
events  = ["pull_request.opened", "push", "release.*"]
match   = { repository = "acme/*" }
channel = "C0DEV"
"#;

    #[test]
    fn the_design_example_parses() {
        let config = parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(config.slack.command.get_ref(), "/ops");
        assert_eq!(config.groups["approvers"].len(), 2);
        assert_eq!(config.runbooks.len(), 1);
        assert_eq!(config.routes[0].channel.get_ref(), "C0DEV");
        let approval = config.runbooks[0].approval.as_ref().unwrap().get_ref();
        assert_eq!(approval.expires, Duration::from_secs(3600));
        match config.runbooks[0].run.get_ref() {
            Run::Command { timeout, .. } => {
                assert_eq!(*timeout, Some(Duration::from_secs(1800)))
            }
            other => panic!("unexpected run {other:?}"),
        }
    }

    #[test]
    fn an_unknown_key_names_the_key_and_line() {
        let err = parse("[slack]\ncommand = \"/ops\"\ncomand = \"/x\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("pantheon.toml:3:1: `slack.comand`: "),
            "{text}"
        );
        assert!(text.contains("unknown field `comand`"), "{text}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_line() {
        let err = parse("[groups]\nadmins = \"U03JOE\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("pantheon.toml:2:"), "{text}");
        assert!(text.contains("`groups.admins`"), "{text}");
    }

    #[test]
    fn an_unknown_group_in_permissions_is_located() {
        let err = parse("[groups]\nadmins = [\"U03JOE\"]\n\n[permissions]\naudit = [\"admin\"]\n")
            .unwrap_err();
        assert_eq!(err.location.as_ref().unwrap().line, 5);
        assert_eq!(err.key.as_deref(), Some("permissions.audit"));
        assert!(err.message.contains("unknown group `admin`"), "{err}");
        assert!(err.message.contains("defined groups: admins"), "{err}");
    }

    #[test]
    fn held_pagerduty_actions_need_a_known_approver_group() {
        let err = parse(
            "[groups]\nadmins = [\"U03JOE\"]\n\n[pagerduty]\napproval_required = [\"resolve\"]\n",
        )
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("pagerduty.approval.group"));
        assert_eq!(err.location.as_ref().unwrap().line, 5);
        assert!(err.message.contains("unknown group `approvers`"), "{err}");
        let ok = parse(
            "[groups]\nadmins = [\"U03JOE\"]\n\n[pagerduty]\napproval_required = [\"resolve\"]\napproval = { group = \"admins\", count = 1, expires = \"30m\" }\n",
        )
        .unwrap();
        let policy = ok.pagerduty.approval_policy();
        assert_eq!(policy.group, "admins");
        assert_eq!(policy.expires, Duration::from_secs(1800));
        let err = parse(
            "[groups]\nadmins = [\"U03JOE\"]\n\n[pagerduty]\napproval_required = [\"resolve\"]\napproval = { group = \"admins\", count = 0 }\n",
        )
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("pagerduty.approval.count"));
        let err = parse(
            "[groups]\nadmins = [\"U03JOE\"]\n\n[pagerduty]\napproval = { group = \"admins\", when = { env = \"production\" } }\n",
        )
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("pagerduty.approval.when"));
        assert_eq!(err.location.as_ref().unwrap().line, 5);
    }

    #[test]
    fn a_bad_member_is_located() {
        let err = parse("[groups]\nadmins = [\"U03JOE\", \"jane\"]\n").unwrap_err();
        assert_eq!(err.location.as_ref().unwrap().line, 2);
        assert!(
            err.message.contains("`jane` is not a Slack user id"),
            "{err}"
        );
    }

    #[test]
    fn groups_list_mattermost_people_beside_slack_ones_and_routes_name_their_platform() {
        let config = parse(
            "[groups]\nops = [\"U03JOE\", \"janejanejanejanejanejaneja\"]\n\n[mattermost]\nurl = \"https://chat.example.com\"\n\n[[routes]]\nsource = \"github\"\nchannel = \"opsopsopsopsopsopsopsopsop\"\nplatform = \"mattermost\"\n\n[[routes]]\nsource = \"github\"\nchannel = \"C0DEV\"\n",
        )
        .unwrap();
        assert_eq!(config.groups["ops"].len(), 2);
        assert_eq!(config.routes[0].platform, Platform::Mattermost);
        assert_eq!(config.routes[1].platform, Platform::Slack);
        assert_eq!(
            config.mattermost.base_url().unwrap().as_str(),
            "https://chat.example.com/"
        );
        assert_eq!(
            config.mattermost.button_ttl,
            Duration::from_secs(7 * 24 * 3600)
        );
        // A Mattermost id under Slack, a Slack id under Mattermost, an unknown platform.
        for (route, key) in [
            (
                "channel = \"opsopsopsopsopsopsopsopsop\"\n",
                "routes[0].channel",
            ),
            (
                "channel = \"C0DEV\"\nplatform = \"mattermost\"\n",
                "routes[0].channel",
            ),
        ] {
            let err = parse(&format!("[[routes]]\nsource = \"github\"\n{route}")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
        }
        assert!(
            parse("[[routes]]\nsource = \"github\"\nchannel = \"C0DEV\"\nplatform = \"irc\"\n")
                .is_err()
        );
        let err = parse("[mattermost]\nurl = \"ftp://chat\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("mattermost.url"));
        let err = parse("[mattermost]\ncommand = \"ops\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("mattermost.command"));
        // Not a Mattermost id: 25 characters, or upper case.
        assert!(!is_mattermost_id("janejanejanejanejanejanej"));
        assert!(!is_mattermost_id("JANEJANEJANEJANEJANEJANEJA"));
    }

    /// The 1-based line of `needle` in `text`.
    fn line_of(text: &str, needle: &str) -> usize {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("`{needle}` is not in the text"))
    }

    const DEPLOY_SAFETY: &str = r#"
[deploy]
override_group = "admins"

[[freezes]]
name = "weekend"
weekly = { from = "Fri 16:00", to = "Mon 08:00" }
time_zone = "Europe/Berlin"
environments = ["production"]

[[freezes]]
name = "staging-nights"
weekly = { from = "Mon 22:00", to = "Tue 06:00" }
environments = ["staging"]
"#;

    /// The design example with its runbook declared a deploy, and [`DEPLOY_SAFETY`].
    fn with_safety() -> String {
        format!("{DESIGN_EXAMPLE}{DEPLOY_SAFETY}").replace(
            "approval = { group",
            "deploy   = { app = \"{app}\", env = \"{env}\", version = \"{version}\" }\napproval = { group",
        )
    }

    #[test]
    fn deploy_safety_settings_parse_and_compile() {
        let text = with_safety();
        let config = parse(&text).unwrap();
        let catalogue = config.catalogue().unwrap();
        assert_eq!(catalogue.freezes.len(), 2);
        assert_eq!(catalogue.override_group.as_deref(), Some("admins"));
        assert!(catalogue.lockable("api/production"));
        assert!(catalogue.lockable("production"));
        assert!(!catalogue.lockable("api/qa"));
        assert!(!catalogue.lockable("qa"));
        assert_eq!(catalogue.deploys().count(), 1);
    }

    #[test]
    fn bad_freeze_windows_are_located() {
        let cases: &[(&str, &str, &str, &str)] = &[
            // (replace, with, the error says, on the line holding)
            (
                "\"Fri 16:00\"",
                "\"Fry 16:00\"",
                "`Fry` is not a weekday",
                "weekly = { from = \"Fry",
            ),
            (
                "\"Mon 08:00\"",
                "\"Mon 8am\"",
                "is not a time like",
                "weekly = { from = \"Fri",
            ),
            (
                "Europe/Berlin",
                "Europe/Atlantis",
                "not a known time zone",
                "time_zone = \"Europe/Atlantis",
            ),
            (
                "\"Mon 22:00\"",
                "\"Tue 06:00\"",
                "must differ from `from`",
                "weekly = { from = \"Tue 06:00",
            ),
            (
                "weekly = { from = \"Mon 22:00\", to = \"Tue 06:00\" }\nenvironments = [\"staging\"]",
                "weekly = { from = \"Sun 22:00\", to = \"Tue 06:00\" }\nenvironments = [\"production\"]",
                "freeze `staging-nights` overlaps freeze `weekend`",
                "name = \"staging-nights\"",
            ),
            (
                "weekly = { from = \"Mon 22:00\", to = \"Tue 06:00\" }",
                "from = \"2026-12-24 00:00\"\nto = \"2026-12-23 00:00\"",
                "must be after `from`",
                "to = \"2026-12-23",
            ),
            (
                "weekly = { from = \"Mon 22:00\", to = \"Tue 06:00\" }",
                "from = \"2026-12-24 00:00\"",
                "give either `from` and `to`",
                "name = \"staging-nights\"",
            ),
            (
                "weekly = { from = \"Mon 22:00\", to = \"Tue 06:00\" }",
                "from = \"24.12.2026 00:00\"\nto = \"2026-12-26 00:00\"",
                "is not a date",
                "from = \"24.12",
            ),
            (
                "environments = [\"staging\"]",
                "runbooks = [\"nope\"]",
                "there is no runbook `nope`",
                "runbooks = [\"nope\"]",
            ),
            (
                "override_group = \"admins\"",
                "override_group = \"sre\"",
                "unknown group `sre`",
                "override_group = \"sre\"",
            ),
            (
                "environments = [\"staging\"]",
                "environments = [\"stagign\"]",
                "no runbook deploys to `stagign`",
                "environments = [\"stagign\"]",
            ),
            (
                "environments = [\"staging\"]",
                "targets = [\"api/qa\"]",
                "no runbook runs on `api/qa`",
                "targets = [\"api/qa\"]",
            ),
        ];
        for (from, to, says, at) in cases {
            let text = with_safety().replacen(from, to, 1);
            let err = parse(&text).unwrap_err();
            assert!(err.message.contains(says), "{to}: {err}");
            let location = err.location.as_ref().expect("located");
            assert_eq!(location.path, std::path::PathBuf::from("pantheon.toml"));
            assert_eq!(location.line, line_of(&text, at), "{to}: {err}");
        }
    }

    #[test]
    fn a_fixed_freeze_inside_a_weekly_one_for_the_same_runs_overlaps() {
        // 2026-12-26 is a Saturday: inside the weekend window.
        let text = format!(
            "{}\n[[freezes]]\nname = \"boxing-day\"\nfrom = \"2026-12-26 00:00\"\nto = \"2026-12-27 00:00\"\n",
            with_safety()
        );
        let err = parse(&text).unwrap_err();
        assert!(
            err.message
                .contains("freeze `boxing-day` overlaps freeze `weekend`"),
            "{err}"
        );
        assert_eq!(
            err.location.unwrap().line,
            line_of(&text, "name = \"boxing-day\"")
        );
        // Narrowed to staging, it meets the staging nights only on Mondays: not on this Saturday.
        let narrowed = text.replace(
            "to = \"2026-12-27 00:00\"\n",
            "to = \"2026-12-27 00:00\"\nenvironments = [\"staging\"]\n",
        );
        parse(&narrowed).unwrap();
    }

    #[test]
    fn a_parameter_called_force_and_a_deploy_without_a_version_are_refused() {
        let force = DESIGN_EXAMPLE.replace(
            "version = \"^[A-Za-z0-9._-]+$\"",
            "force = \"^x$\", version = \"^[A-Za-z0-9._-]+$\"",
        );
        let err = parse(&force).unwrap_err();
        assert!(
            err.message.contains("`force` is Pantheon's own word"),
            "{err}"
        );
        let no_version = DESIGN_EXAMPLE.replace(
            "approval = { group",
            "deploy   = { app = \"{app}\", env = \"{env}\", version = \"latest\" }\napproval = { group",
        );
        let err = parse(&no_version).unwrap_err();
        assert_eq!(
            err.key.as_deref(),
            Some("runbooks[0].deploy.version"),
            "{err}"
        );
        assert_eq!(
            err.location.unwrap().line,
            line_of(&no_version, "deploy   = {")
        );
    }

    #[test]
    fn a_bad_duration_and_a_bad_regex_are_located() {
        let bad_duration = DESIGN_EXAMPLE.replace("\"30m\"", "\"thirty minutes\"");
        let err = parse(&bad_duration).unwrap_err();
        assert!(err.message.contains("is not a duration"), "{err}");
        assert_eq!(err.location.as_ref().unwrap().line, 19, "{err}");
        assert_eq!(err.key.as_deref(), Some("runbooks.run"), "{err}");

        let bad_regex = DESIGN_EXAMPLE.replace("^[a-z0-9-]+$", "^[a-z");
        let err = parse(&bad_regex).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("runbooks[0].params.app"), "{err}");
        assert_eq!(err.location.as_ref().unwrap().line, 17, "{err}");
    }

    #[test]
    fn a_when_value_the_parameter_can_never_take_is_refused() {
        let typo = DESIGN_EXAMPLE.replace(
            "when = { env = \"production\" }",
            "when = { env = \"prodution\" }",
        );
        let err = parse(&typo).unwrap_err();
        assert_eq!(
            err.key.as_deref(),
            Some("runbooks[0].approval.when.env"),
            "{err}"
        );
        assert!(err.message.contains("can never be `prodution`"), "{err}");
        let bad = DESIGN_EXAMPLE.replace(
            "when = { env = \"production\" }",
            "when = { env = \"prod(\" }",
        );
        assert!(
            parse(&bad)
                .unwrap_err()
                .message
                .contains("not a valid regular expression")
        );
        let upper = DESIGN_EXAMPLE.replace(
            "when = { env = \"production\" }",
            "when = { env = \"PRODUCTION\" }",
        );
        assert!(parse(&upper).is_ok(), "case is folded");
    }

    #[test]
    fn connection_limits_have_defaults_and_are_checked() {
        let limits = parse("").unwrap().limits;
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.body_timeout, Duration::from_secs(30));
        assert_eq!(limits.idle_timeout(), Duration::from_secs(5));
        assert_eq!(limits.max_connections, None);
        // Unset, the idle timeout follows a shorter header timeout.
        let short = parse("[limits]\nheader_timeout = \"3s\"\n").unwrap().limits;
        assert_eq!(short.idle_timeout(), Duration::from_secs(3));
        let err = parse("[limits]\nheader_timeout = \"3s\"\nidle_timeout = \"4s\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("limits.idle_timeout"));
        let err = parse("[limits]\nmax_connections = 3\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("limits.max_connections"));
        let err = parse("[limits]\nbody_timeout = \"0s\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("limits.body_timeout"));
    }

    #[test]
    fn a_bad_slash_command_is_refused() {
        let err = parse("[slack]\ncommand = \"ops\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("slack.command"));
        assert_eq!(err.location.as_ref().unwrap().line, 2);
    }

    #[test]
    fn settings_have_the_documented_defaults() {
        let s = Settings::defaults();
        assert_eq!(s.database_url, "sqlite://pantheon.db");
        assert_eq!(s.listen_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(s.response_url_hosts, vec!["hooks.slack.com"]);
        assert_eq!(s.slack_api_url.as_str(), "https://slack.com/api/");
        assert_eq!(s.github_api_url.as_str(), "https://api.github.com/");
        assert_eq!(s.pagerduty_api_url.as_str(), "https://api.pagerduty.com/");
        assert!(s.slack_signing_secret.is_none());
    }

    #[test]
    fn settings_read_lists_and_refuse_bad_values() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let s = Settings::from_lookup(env(&[
            ("PAGERDUTY_WEBHOOK_SECRET", "old, new"),
            ("RESPONSE_URL_HOSTS", "hooks.slack.com, 127.0.0.1"),
            ("ZENDESK_SUBDOMAIN", "acme"),
        ]))
        .unwrap();
        assert_eq!(s.pagerduty_webhook_secrets.len(), 2);
        assert_eq!(s.response_url_hosts, vec!["hooks.slack.com", "127.0.0.1"]);
        assert_eq!(
            s.zendesk_api_url.unwrap().as_str(),
            "https://acme.zendesk.com/"
        );
        let err = Settings::from_lookup(env(&[("LISTEN_ADDR", "nowhere")])).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("LISTEN_ADDR"));
        let err = Settings::from_lookup(env(&[("GITHUB_API_URL", "ftp://x")])).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("GITHUB_API_URL"));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = Settings::from_lookup(|name| {
            (name == "SLACK_SIGNING_SECRET").then(|| "super-secret-value".to_owned())
        })
        .unwrap();
        assert!(!format!("{s:?}").contains("super-secret-value"));
    }
}

#[cfg(test)]
mod binding_is_stable {
    /// An approval is bound to a hash of its runbook's definition. These values were computed
    /// before the definition moved out of the file's shape: a pending approval survives the
    /// upgrade only while they hold.
    #[test]
    fn approvals_stay_bound_to_the_same_definitions() {
        let c = super::FileConfig::parse(&super::Source {
            path: "t".into(),
            text: r#"
[groups]
approvers = ["U024BE7LH", "U024BE7LJ"]
[[runbooks]]
name = "deploy"
usage = "deploy {app} to {env}"
description = "Deploy"
params = { app = "[a-z]+", env = "staging|production" }
target = "{app}/{env}"
run = { kind = "command", argv = ["/bin/echo", "{app}"], timeout = "30s", env = { X = "{env}" } }
plan = { kind = "http", url = "https://example.com/hook", body = { a = "{app}" }, timeout = "5s" }
approval = { group = "approvers", count = 2, expires = "30m", when = { env = "production" } }
retry_safe = true
[[runbooks]]
name = "wf"
usage = "wf {ref}"
params = { ref = "[a-z]+" }
run = { kind = "github_workflow", repo = "o/r", workflow = "w.yml", ref = "{ref}", inputs = { x = "{ref}" } }
[pagerduty]
approval_required = ["ack"]
"#.into(),
        }).unwrap();
        let p = std::collections::BTreeMap::from([
            ("app".to_owned(), "api".to_owned()),
            ("env".to_owned(), "production".to_owned()),
        ]);
        let catalogue = c.catalogue().unwrap();
        let bound = |r: &crate::domain::runbook::Runbook, p| {
            crate::domain::approval::binding(r.definition(), p)
        };
        assert_eq!(
            bound(&catalogue.runbooks[0], &p),
            "63c0d23390fa48a1c2f7d1c2741571fab4cbc51f57963961072b403f4a2dcffa"
        );
        let p = std::collections::BTreeMap::from([("ref".to_owned(), "main".to_owned())]);
        assert_eq!(
            bound(&catalogue.runbooks[1], &p),
            "9ed03af4ed4d3d3e1dcad2806a5ce6511de3834b44129988c153f580d1be1e4a"
        );
        // Held PagerDuty writes are bound to the write itself since the typed held write
        // replaced the digest of a sentence (`check`): requests made before that are refused
        // when approved ("changed since this was requested"), never run.
        let p = std::collections::BTreeMap::from([
            ("command".to_owned(), "pager ack! 1".to_owned()),
            ("write".to_owned(), r#"{"write":"update","to":"acknowledged","ids":["PT1"],"scope":"all","from":"jane@acme.test","user_id":"PJANE"}"#.to_owned()),
        ]);
        assert_eq!(
            bound(&catalogue.held[0], &p),
            "047e5e3ca9641882276fe714098bc7bf803f31ac680ac327bba7688d77e07c64"
        );
    }
}
