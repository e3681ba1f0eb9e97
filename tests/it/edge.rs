//! The HTTP edge under abuse: stalled headers, trickled and oversized bodies, idle keep-alive
//! connections, and more sockets than the process has file descriptors for.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{
    both_stores,
    harness::{Db, TestApp},
};

const LIMITS: &str = r#"
[limits]
header_timeout = "2s"
idle_timeout = "500ms"
body_timeout = "1s"
max_connections = 64
"#;

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// A connection that has sent `head` (and nothing else yet).
async fn sent(addr: &str, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// Read until the server closes the connection (or `within` passes): what it sent, and how
/// long after the call the connection closed.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(started.elapsed()),
                );
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

/// Read one response head (up to the blank line), with the time it took.
async fn response_head(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// How many of `streams` the server has closed.
async fn closed_by_server(streams: &mut [TcpStream]) -> usize {
    let mut closed = 0;
    for s in streams {
        let mut byte = [0u8; 1];
        if matches!(
            tokio::time::timeout(Duration::from_millis(1), s.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed += 1;
        }
    }
    closed
}

both_stores!(the_edge_holds_its_limits);

async fn the_edge_holds_its_limits(db: Db) {
    let Some(app) = TestApp::on(db, "edge_limits").config(LIMITS).start().await else {
        return;
    };
    let addr = addr(&app);

    // An announced body over the limit is refused before any of it is read.
    for (path, length) in [
        ("/slack/commands", 26_214_400u64),
        ("/webhooks/github", 5 * 1024 * 1024 + 1),
    ] {
        let mut big = sent(
            &addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n"
            ),
        )
        .await;
        let (head, took) = response_head(&mut big, Duration::from_secs(5)).await;
        assert!(head.starts_with("HTTP/1.1 413"), "{path}: {head:?}");
        assert!(
            took < Duration::from_millis(100),
            "{path}: 413 after {took:?}"
        );
    }

    // These wait on the server's clocks, so they run side by side.
    let stalled_head = async {
        let mut stalled = sent(&addr, "POST /slack/commands HTTP/1.1\r\nHost: x\r\n").await;
        until_closed(&mut stalled, Duration::from_secs(6)).await
    };
    let trickled_body = async {
        let mut slow = sent(
            &addr,
            "POST /slack/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntext=hello",
        )
        .await;
        response_head(&mut slow, Duration::from_secs(6)).await
    };
    let idle_keep_alive = async {
        let mut idle = sent(&addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, _) = response_head(&mut idle, Duration::from_secs(5)).await;
        let (_, closed) = until_closed(&mut idle, Duration::from_secs(6)).await;
        (head, closed)
    };
    let ((_, stalled_closed), (slow_head, slow_took), (idle_head, idle_closed)) =
        tokio::join!(stalled_head, trickled_body, idle_keep_alive);

    let stalled_closed = stalled_closed.expect("a stalled request is closed");
    assert!(
        stalled_closed >= Duration::from_millis(1900)
            && stalled_closed < Duration::from_secs(2) + Duration::from_secs(1),
        "closed {stalled_closed:?} after its partial head; the header timeout is 2 s"
    );
    assert!(slow_head.starts_with("HTTP/1.1 408"), "{slow_head:?}");
    assert!(
        slow_took >= Duration::from_millis(900) && slow_took < Duration::from_secs(2),
        "a trickled body got 408 after {slow_took:?}; the body timeout is 1 s"
    );
    assert!(idle_head.starts_with("HTTP/1.1 200"), "{idle_head:?}");
    let idle_closed = idle_closed.expect("an idle keep-alive connection is closed");
    assert!(
        idle_closed >= Duration::from_millis(400) && idle_closed < Duration::from_millis(1500),
        "closed {idle_closed:?} after its response; the idle timeout is 500 ms"
    );

    // Far more stalled connections than the cap (64): the newest get in, a signed command is
    // answered at once, and the ones that waited longest were closed to make room.
    let mut stalled = Vec::new();
    for _ in 0..200 {
        stalled.push(sent(&addr, "POST /slack/commands HTTP/1.1\r\nHost: x\r\n").await);
    }
    let started = Instant::now();
    let ack = app.slash("whoami").send().await;
    assert_eq!(ack.status, 200);
    assert!(ack.text().contains("U01ALICE"), "{}", ack.text());
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered {:?} after 200 stalled connections",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed = closed_by_server(&mut stalled).await;
    assert!(
        // 200 stalled and the client's one connection, 64 at most open.
        closed >= 200 + 1 - 64,
        "only {closed} of 200 stalled connections were closed to stay within 64"
    );
    drop(stalled);

    // The same with bodies that trickle in: a connection still receiving its body holds no
    // place against a whole request.
    let mut trickling = Vec::new();
    for _ in 0..200 {
        trickling.push(
            sent(
                &addr,
                "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n{\"a\":",
            )
            .await,
        );
    }
    let started = Instant::now();
    let ack = app.slash("whoami").send().await;
    assert_eq!(ack.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered {:?} after 200 trickling bodies",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed = closed_by_server(&mut trickling).await;
    assert!(
        closed >= 200 - 64,
        "only {closed} trickling bodies were closed"
    );
    app.stop().await;
}

/// Finding 1 of the attacker's review, as it was tried: the release binary under
/// `ulimit -n 1024`, 2,000 connections that send half a request and wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_stalled_connections_do_not_take_the_service_down() {
    use std::os::unix::process::CommandExt as _;

    // This process needs 2,000 descriptors of its own for the attack.
    let (soft, _) = pantheon::http::server::raise_open_files_limit().unwrap();
    assert!(
        soft >= 2_300,
        "this test needs an open-files hard limit of at least 2300, not {soft}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pantheon.toml"),
        r#"
[limits]
header_timeout = "3s"

[jobs]
poll = "100ms"

[[runbooks]]
name = "hello"
usage = "hello"
run = { kind = "command", argv = ["sh", "-c", "echo hello from the job"] }
"#,
    )
    .unwrap();
    let server = crate::binary::Server::start_with(
        dir.path(),
        &[
            ("SLACK_SIGNING_SECRET", crate::harness::SECRET),
            ("LOG_FORMAT", "json"),
            ("PANTHEON_CONFIG", "pantheon.toml"),
        ],
        |cmd| {
            // SAFETY: setrlimit is async-signal-safe; it only lowers the child's own limit.
            unsafe {
                cmd.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: 1024,
                        rlim_max: 1024,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    let addr = server.addr.clone();

    let mut attack = Vec::new();
    let mut opened = 0;
    for _ in 0..20 {
        let batch: Vec<_> = (0..100)
            .map(|_| {
                let addr = addr.clone();
                tokio::spawn(async move {
                    let connect =
                        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr))
                            .await;
                    let mut stream = connect.ok()?.ok()?;
                    stream
                        .write_all(b"POST /slack/commands HTTP/1.1\r\nHost: x\r\n")
                        .await
                        .ok()?;
                    Some(stream)
                })
            })
            .collect();
        for task in batch {
            if let Some(stream) = task.await.unwrap() {
                opened += 1;
                attack.push(stream);
            }
        }
    }
    assert_eq!(
        opened, 2000,
        "every attacking connection got through the accept queue"
    );

    let client = crate::harness::client();
    let signed = |text: &str| {
        let (body, headers) = crate::binary::signed_command(text);
        let mut req = client
            .post(format!("http://{addr}/slack/commands"))
            .timeout(Duration::from_secs(5))
            .body(body);
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        req
    };
    let started = Instant::now();
    let ack = signed("whoami")
        .send()
        .await
        .expect("a signed command is answered");
    assert_eq!(ack.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "acknowledged after {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));

    // A job queued now starts: the connections did not take the descriptors it needs.
    let queued = signed("hello").send().await.unwrap();
    assert_eq!(queued.status(), 200);

    // A stalled request is closed within the header timeout plus a second.
    let mut late = sent(&addr, "POST /slack/commands HTTP/1.1\r\nHost: x\r\n").await;
    let (_, closed) = until_closed(&mut late, Duration::from_secs(8)).await;
    let closed = closed.expect("the stalled request was closed");
    assert!(
        closed < Duration::from_secs(4),
        "closed {closed:?} after its partial head; the header timeout is 3 s"
    );

    // An announced oversize body gets 413 at once.
    let mut big = sent(
        &addr,
        "POST /slack/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 26214400\r\n\r\n",
    )
    .await;
    let (head, took) = response_head(&mut big, Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head:?}");
    assert!(took < Duration::from_millis(100), "413 after {took:?}");

    let store = pantheon::store::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("pantheon.db").display()
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let job = loop {
        let job = store.jobs(None, 1).await.unwrap().pop();
        if let Some(job) = &job
            && job.status.is_final()
        {
            break job.clone();
        }
        assert!(Instant::now() < deadline, "the job never ended: {job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let logs = store.job_logs(job.id, None).await.unwrap();
    assert_eq!(job.status.as_str(), "succeeded", "{job:?} {logs:?}");
    assert!(
        logs.iter().any(|l| l.line == "hello from the job"),
        "{logs:?}"
    );
    store.close().await;
    drop(attack);

    let (_, logs) = server.stop();
    let limit_line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "open-files limit")
        .unwrap_or_else(|| panic!("the open-files limit is logged: {logs}"));
    assert_eq!(limit_line["open_files"], 1024, "{limit_line}");
    assert_eq!(limit_line["max_connections"], 768, "{limit_line}");
    assert!(!logs.contains("Too many open files"), "{logs}");
}

/// Bodies in memory share a budget (64 MiB); unsigned bodies that stop one byte short of done
/// must not hold it against Slack's requests: the body that began longest ago gives way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_never_finish_cannot_starve_slack_of_memory() {
    let Some(app) = TestApp::on(Db::Sqlite, "edge_budget").start().await else {
        return;
    };
    let addr = addr(&app);
    let size = 5 * 1024 * 1024;
    let chunk = vec![b' '; 64 * 1024];
    let mut hogs = Vec::new();
    // 14 × 5 MiB is more than the budget.
    for _ in 0..14 {
        let mut s = sent(
            &addr,
            &format!("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"),
        )
        .await;
        let mut left = size - 1;
        while left > 0 {
            let n = left.min(chunk.len());
            if s.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            left -= n;
        }
        hogs.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let ack = app.slash("whoami").send().await;
    assert_eq!(ack.status, 200, "{}", ack.body);
    assert!(ack.text().contains("U01ALICE"), "{}", ack.body);
    assert!(started.elapsed() < Duration::from_secs(1));
    // The hogs that gave way were told so.
    let mut gave_way = 0;
    for s in &mut hogs {
        let (head, _) = response_head(s, Duration::from_millis(50)).await;
        if head.starts_with("HTTP/1.1 408") {
            gave_way += 1;
        }
    }
    assert!(gave_way >= 1, "at least one unfinished body gave way");
    drop(hogs);
    app.stop().await;
}
