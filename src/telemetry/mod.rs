//! Logs and metrics. Logs are JSON lines by default (pretty on a terminal or with
//! `LOG_FORMAT=pretty`), each carrying the fields of the spans it happened in, so every line
//! about a request has its correlation id. Metrics are Prometheus text from `/metrics`.

mod json;
mod sink;

use std::{io::IsTerminal, sync::OnceLock, time::Duration};

pub use sink::LogGuard;
use sink::{LogSink, Sink};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Bytes of log lines that may wait for the log writer thread (a second of lines at full load
/// fits in this); past it, logging waits (below).
pub const LOG_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Install the global log subscriber. Call once, from `main`, and keep the guard until exit:
/// lines are written by a background thread (so a request never waits on stderr), and the
/// guard writes what is left when it is dropped.
pub fn init_logs(format: Option<LogFormat>) -> LogGuard {
    let sink = LogSink::start();
    let guard = LogGuard(Some(sink.clone()));
    let writer = Sink(sink);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,reqwest=warn"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let registry = tracing_subscriber::registry().with(filter);
    let writer = SafeLines {
        inner: writer,
        json: format == LogFormat::Json,
    };
    match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .fmt_fields(json::JsonFields)
                    .event_format(json::JsonLines)
                    .with_writer(writer),
            )
            .init(),
        LogFormat::Pretty => registry.with(fmt::layer().with_writer(writer)).init(),
    }
    // A panic anywhere is logged as one structured line rather than free text on stderr.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %crate::domain::redact::scrub(&payload), %location, "panic");
    }));
    guard
}

/// The last net under every log line, whoever wrote it (our code, sqlx, hyper): registered
/// secrets are masked, and the characters some log viewers treat as line breaks (U+2028,
/// U+2029, U+0085) are escaped, so outside text can neither leak a secret nor forge a line.
#[derive(Clone)]
struct SafeLines<W> {
    inner: W,
    json: bool,
}

impl<'a, W: fmt::MakeWriter<'a>> fmt::MakeWriter<'a> for SafeLines<W> {
    type Writer = SafeLine<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        SafeLine {
            inner: self.inner.make_writer(),
            json: self.json,
        }
    }
}

struct SafeLine<W> {
    inner: W,
    json: bool,
}

impl<W: std::io::Write> std::io::Write for SafeLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over each line whole.
        match std::str::from_utf8(buf) {
            Ok(text) => {
                let safe = safe_line(text, self.json);
                self.inner.write_all(safe.as_bytes())?;
            }
            Err(_) => self.inner.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One formatted log line, made safe (see [`SafeLines`]).
pub fn safe_line(text: &str, json: bool) -> std::borrow::Cow<'_, str> {
    let mut out = crate::domain::redact::scrub_registered(text);
    if out.contains(['\u{2028}', '\u{2029}', '\u{85}']) {
        let escaped = out
            .chars()
            .fold(String::with_capacity(out.len() + 12), |mut acc, c| {
                match (c, json) {
                    ('\u{2028}', true) => acc.push_str("\\u2028"),
                    ('\u{2029}', true) => acc.push_str("\\u2029"),
                    ('\u{85}', true) => acc.push_str("\\u0085"),
                    ('\u{2028}', false) => acc.push_str("\\u{2028}"),
                    ('\u{2029}', false) => acc.push_str("\\u{2029}"),
                    ('\u{85}', false) => acc.push_str("\\u{85}"),
                    (c, _) => acc.push(c),
                }
                acc
            });
        out = std::borrow::Cow::Owned(escaped);
    }
    out
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide metrics recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("duration_seconds".to_owned()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ],
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Only one global recorder can exist; if someone else installed one first, /metrics
        // would render nothing, so say so.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        handle
    })
}

/// Histogram samples wait in lock-free buckets until someone folds them into the totals. A
/// scrape of `/metrics` does that, but a server nobody scrapes would keep every sample in memory
/// forever, so fold them in every few seconds. Runs until the runtime stops.
pub fn spawn_metrics_upkeep() {
    let handle = metrics_handle();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
}

/// Metric handles made once per set of label values. Making one from its name and labels
/// allocates every label and looks the set up in the recorder's registry; the HTTP pair alone
/// was five allocations and two lookups a request.
struct Handles<H> {
    /// By the hash of the label values: each set made, with its values.
    made: std::sync::Mutex<std::collections::HashMap<u64, Vec<Made<H>>>>,
}

type Made<H> = (Vec<String>, H);

impl<H: Clone> Handles<H> {
    fn new() -> Self {
        Self {
            made: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn get(&self, labels: &[&str], make: impl FnOnce() -> H) -> H {
        use std::hash::{Hash as _, Hasher as _};
        // Handles made before the recorder was installed would count nothing, for good.
        metrics_handle();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        labels.hash(&mut hasher);
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let same = made.entry(hasher.finish()).or_default();
        if let Some((_, handle)) = same
            .iter()
            .find(|(known, _)| known.iter().map(String::as_str).eq(labels.iter().copied()))
        {
            return handle.clone();
        }
        let handle = make();
        same.push((
            labels.iter().map(|l| (*l).to_owned()).collect(),
            handle.clone(),
        ));
        handle
    }
}

/// The method as a metric label: the standard ones by name, any other as `other`, so a client
/// inventing methods cannot grow the metrics without bound.
fn method_label(method: &str) -> &str {
    match method {
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" | "CONNECT" | "TRACE" => {
            method
        }
        _ => "other",
    }
}

pub fn record_http(route: &str, method: &str, status: u16, elapsed: Duration) {
    static HTTP: std::sync::LazyLock<Handles<(metrics::Counter, metrics::Histogram)>> =
        std::sync::LazyLock::new(Handles::new);
    let method = method_label(method);
    let mut digits = [0u8; 5];
    let status = {
        use std::io::Write as _;
        let mut cursor = std::io::Cursor::new(&mut digits[..]);
        let _ = write!(cursor, "{status}");
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        std::str::from_utf8(&digits[..len]).unwrap_or("0")
    };
    let (requests, duration) = HTTP.get(&[route, method, status], || {
        (
            metrics::counter!(
                "pantheon_http_requests_total",
                "route" => route.to_owned(),
                "method" => method.to_owned(),
                "status" => status.to_owned()
            ),
            metrics::histogram!(
                "pantheon_http_request_duration_seconds",
                "route" => route.to_owned(),
                "status" => status.to_owned()
            ),
        )
    });
    requests.increment(1);
    duration.record(elapsed.as_secs_f64());
}

pub fn record_command(command: &str, outcome: &str) {
    static COMMANDS: std::sync::LazyLock<Handles<metrics::Counter>> =
        std::sync::LazyLock::new(Handles::new);
    COMMANDS
        .get(&[command, outcome], || {
            metrics::counter!(
                "pantheon_commands_total",
                "command" => command.to_owned(),
                "outcome" => outcome.to_owned()
            )
        })
        .increment(1);
}

pub fn record_signature_failure(source: &'static str, reason: &'static str) {
    metrics::counter!(
        "pantheon_signature_failures_total",
        "source" => source,
        "reason" => reason
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_lines_cannot_be_split_or_leak_a_registered_secret() {
        crate::domain::redact::register_secrets(["a-registered-db-password"]);
        let line = "{\"message\":\"x\u{2028}{\\\"forged\\\":1}\u{85}y\",\"value\":\"a-registered-db-password\"}\n";
        let safe = super::safe_line(line, true);
        assert!(!safe.contains(['\u{2028}', '\u{85}']), "{safe}");
        assert!(
            safe.contains("x\\u2028{") && safe.contains("\\u0085y"),
            "{safe}"
        );
        assert!(!safe.contains("a-registered-db-password"), "{safe}");
        let parsed: serde_json::Value = serde_json::from_str(safe.trim_end()).unwrap();
        assert!(
            parsed["message"].as_str().unwrap().contains('\u{2028}'),
            "the same text, escaped"
        );
        assert_eq!(super::safe_line("a\u{2029}b\n", false), "a\\u{2029}b\n");
    }

    #[test]
    fn http_metrics_count_on_handles_made_once_and_bound_invented_methods() {
        let route = "/a-route-for-this-test";
        for _ in 0..3 {
            super::record_http(route, "POST", 200, std::time::Duration::from_millis(1));
        }
        super::record_http(route, "POST", 401, std::time::Duration::from_millis(1));
        for invented in ["FOO1", "FOO2"] {
            super::record_http(route, invented, 200, std::time::Duration::from_millis(1));
        }
        super::record_command("a-command-for-this-test", "refused");
        super::record_command("a-command-for-this-test", "refused");
        let text = super::metrics_handle().render();
        for line in [
            format!(
                "pantheon_http_requests_total{{route=\"{route}\",method=\"POST\",status=\"200\"}} 3"
            ),
            format!(
                "pantheon_http_requests_total{{route=\"{route}\",method=\"POST\",status=\"401\"}} 1"
            ),
            format!(
                "pantheon_http_requests_total{{route=\"{route}\",method=\"other\",status=\"200\"}} 2"
            ),
            format!(
                "pantheon_http_request_duration_seconds_count{{route=\"{route}\",status=\"200\"}} 5"
            ),
            "pantheon_commands_total{command=\"a-command-for-this-test\",outcome=\"refused\"} 2"
                .to_owned(),
        ] {
            assert!(text.contains(&line), "{line} in:\n{text}");
        }
        assert!(!text.contains("FOO"), "{text}");
    }
}
