//! A closed-loop load generator for the acknowledgement path that signs every request afresh.
//!
//! The shared benchmark (`../shared/bench/run.sh`) replays one signed request, which Pantheon now
//! refuses as a replay after the first time. This sends the same slash-command body, except for
//! a `trigger_id` that counts up, signed anew each time, over `--connections` keep-alive
//! HTTP/1.1 connections for `--seconds`, and prints one JSON line: requests per second (200s),
//! latency percentiles and errors. It runs on one thread (pin it with `taskset`).
//!
//! With `--rate N` the loop is open instead: requests are offered at N a second, spread over
//! the connections in turn (request k on connection k mod c, due k/N seconds after the start),
//! as `scripts/load-rate` offers the replayed one with oha. A request sent late because its
//! connection was still waiting for an earlier answer is timed from when it was due, so a
//! stall of the server is not hidden (coordinated omission); one sent late only because this
//! process's timer woke late is timed from when it was sent.
//!
//! `cargo run --release --example ackload -- --url http://127.0.0.1:3010/slack/commands \
//!     --connections 256 --seconds 10 [--rate 10000]`

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pantheon::signature::{HmacKey, sign_slack};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

struct Args {
    host: String,
    path: String,
    connections: usize,
    seconds: u64,
    /// Requests offered a second (open loop); None: each connection sends as soon as it may.
    rate: Option<u64>,
    secret: String,
}

fn args() -> Result<Args, String> {
    let mut url = None;
    let mut connections = 32;
    let mut seconds = 10;
    let mut rate = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = Some(value()?),
            "--connections" | "-c" => {
                connections = value()?.parse().map_err(|e| format!("{e}"))?;
            }
            "--seconds" | "-d" => seconds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--rate" | "-q" => {
                let r: u64 = value()?.parse().map_err(|e| format!("{e}"))?;
                if r == 0 {
                    return Err("--rate must be above 0".into());
                }
                rate = Some(r);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok(Args {
        host: host.to_owned(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        connections,
        seconds,
        rate,
        secret: std::env::var("SLACK_SIGNING_SECRET").unwrap_or_else(|_| SECRET.to_owned()),
    })
}

/// One request, signed now, unique by its counter.
fn request(args: &Args, key: &HmacKey, n: u64) -> Vec<u8> {
    let body = format!(
        "token=x&team_id=T1&team_domain=acme&channel_id=C1&channel_name=ops\
         &user_id=U1&user_name=alice&command=%2Fops&text=pager+incidents\
         &response_url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&trigger_id={n}.2.3&api_app_id=A1"
    );
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        .to_string();
    let sig = sign_slack(key, &ts, body.as_bytes());
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {sig}\r\nContent-Length: {}\r\n\r\n{body}",
        args.path,
        args.host,
        body.len()
    )
    .into_bytes()
}

/// Read one response; its status, and whether the connection may carry another request.
async fn response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let keep = !head.contains("connection: close");
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + length);
            return Ok((status, keep));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    /// Requests tried: sent, or lost to a failed connect.
    sent: u64,
    latencies_us: Vec<u32>,
}

/// When connection `index` sends its next request in the open loop, from `start`.
struct Schedule {
    start: Instant,
    index: u64,
    sent: u64,
}

impl Schedule {
    /// When its next request is due: request `index + sent * connections` of the run.
    fn next_due(&mut self, args: &Args, rate: u64) -> Instant {
        let k = self.index + self.sent * args.connections as u64;
        self.sent += 1;
        self.start + Duration::from_nanos(k.saturating_mul(1_000_000_000) / rate)
    }
}

async fn connection(
    args: Arc<Args>,
    key: Arc<HmacKey>,
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    mut schedule: Schedule,
) -> Tally {
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(8192);
    while !stop.load(Ordering::Relaxed) {
        // In the open loop: wait until the next request is due. If it is already past due,
        // this connection was busy with the one before, and the wait counts against the server.
        let due = match args.rate {
            Some(rate) => {
                let due = schedule.next_due(&args, rate);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    None
                } else {
                    Some(due)
                }
            }
            None => None,
        };
        tally.sent += 1;
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(&args.host).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    buf.clear();
                    stream.insert(s)
                }
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let req = request(&args, &key, n);
        let started = due.unwrap_or_else(Instant::now);
        let answered = async {
            s.write_all(&req).await?;
            response(s, &mut buf).await
        };
        match tokio::time::timeout(Duration::from_secs(3), answered).await {
            Ok(Ok((status, keep))) => {
                if status == 200 {
                    tally.ok += 1;
                    tally
                        .latencies_us
                        .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                } else {
                    tally.errors += 1;
                }
                if !keep {
                    stream = None;
                }
            }
            // Slack's 3-second rule: a slower answer is an error, as in the shared benchmark.
            _ => {
                tally.errors += 1;
                stream = None;
            }
        }
    }
    tally
}

fn main() -> Result<(), String> {
    let args = Arc::new(args()?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let key = Arc::new(HmacKey::new(args.secret.as_bytes()));
    let counter = Arc::new(AtomicU64::new(
        // Unique across runs against the same database too.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or_default(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let tallies = rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..args.connections)
            .map(|index| {
                tokio::spawn(connection(
                    args.clone(),
                    key.clone(),
                    counter.clone(),
                    stop.clone(),
                    Schedule {
                        start,
                        index: index as u64,
                        sent: 0,
                    },
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(tally) = t.await {
                out.push(tally);
            }
        }
        out
    });
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    // For `not_sent` in the open loop: requests that fell due during the run but were never
    // sent, because their connection still waited for earlier answers when it ended.
    let sent: u64 = tallies.iter().map(|t| t.sent).sum();
    let mut all: Vec<u32> = tallies.into_iter().flat_map(|t| t.latencies_us).collect();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        f64::from(all[i]) / 1000.0
    };
    let offered = args
        .rate
        .map_or_else(|| "null".to_owned(), |r| r.to_string());
    let not_sent = args
        .rate
        .map_or(0, |r| (r * args.seconds).saturating_sub(sent));
    println!(
        "{{\"connections\": {}, \"seconds\": {}, \"offered_per_s\": {offered}, \"ok\": {ok}, \"errors\": {errors}, \"not_sent\": {not_sent}, \"rps\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"p999_ms\": {:.3}}}",
        args.connections,
        args.seconds,
        ok as f64 / args.seconds as f64,
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
    Ok(())
}
