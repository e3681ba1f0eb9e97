//! Where log lines go: a buffer that one thread writes to stderr in batches.

use std::{
    io::{ErrorKind, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use tracing_subscriber::fmt;

use super::LOG_BUFFER_BYTES;

/// Log lines on their way to stderr, written by one thread in batches.
///
/// A writer thread that is woken for every line and writes each with a system call of its own
/// costs two context switches and a write per line; on the acknowledgement path, at thousands
/// of lines a second on one core, that was a tenth of the CPU. Here a line is appended to a
/// buffer under a lock; the thread, woken only when it is idle, writes everything that has
/// gathered in one call and then waits [`LOG_LINGER`] for more, so a busy server makes a few
/// hundred writes a second and a quiet one writes each line at once. Nothing is dropped: when
/// [`LOG_BUFFER_BYTES`] are waiting, a line waits for room, so a stderr that nobody reads stops
/// whatever logs, as any lossless log does. Only a write that fails (not one interrupted, or
/// refused for now by a full non-blocking pipe) loses the line it failed in.
pub struct LogSink {
    state: Mutex<SinkState>,
    /// The writer is idle and there is something to write, or the sink is closing.
    wake: Condvar,
    /// The buffer has room again, or the writer has stopped.
    room: Condvar,
    /// Bytes that may wait before a line waits for room.
    limit: usize,
    /// Where a line goes once the writer has stopped (stderr).
    direct: Direct,
}

#[derive(Default)]
struct SinkState {
    buf: Vec<u8>,
    /// The writer waits on `wake` (it must be woken to see new lines).
    idle: bool,
    /// Shutdown: the writer writes what is waiting and stops.
    closing: bool,
    /// The writer has stopped (or never started): lines are written by whoever logs them.
    finished: bool,
}

/// Where a line goes once the sink's writer has stopped.
type Direct = Box<dyn Fn(&[u8]) + Send + Sync>;

/// How long the writer lets lines gather after a write.
const LOG_LINGER: Duration = Duration::from_millis(5);

/// How long [`LogSink::close`] waits for the writer to write what is waiting: a stderr that
/// takes nothing must not keep the process from exiting.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

impl LogSink {
    /// A sink writing to stderr.
    pub fn start() -> Arc<Self> {
        Self::start_writing(
            std::io::stderr(),
            LOG_BUFFER_BYTES,
            Box::new(|line| {
                let _ = std::io::stderr().write_all(line);
            }),
        )
    }

    fn start_writing(
        mut out: impl Write + Send + 'static,
        limit: usize,
        direct: Direct,
    ) -> Arc<Self> {
        let sink = Arc::new(Self {
            state: Mutex::new(SinkState::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
            limit,
            direct,
        });
        let writer = sink.clone();
        if std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.write_until_closed(&mut out))
            .is_err()
        {
            lock(&sink.state).finished = true;
        }
        sink
    }

    /// Take one formatted line (or several, whole).
    fn push(&self, line: &[u8]) {
        let mut state = lock(&self.state);
        while !state.finished && state.buf.len() >= self.limit {
            state = self.room.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.finished {
            // After shutdown: written here, after everything the writer wrote.
            drop(state);
            (self.direct)(line);
            return;
        }
        state.buf.extend_from_slice(line);
        if state.idle {
            state.idle = false;
            self.wake.notify_one();
        }
    }

    fn write_until_closed(&self, out: &mut impl Write) {
        // However the loop ends (a panic too), lines are then written directly, and nobody
        // waits for room that will never come.
        let _finished = Finished(self);
        let mut spare = Vec::new();
        let mut cut = false;
        loop {
            let mut state = lock(&self.state);
            while state.buf.is_empty() && !state.closing {
                state.idle = true;
                state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.idle = false;
            if state.buf.is_empty() {
                // Closing, and everything is written.
                return;
            }
            let closing = state.closing;
            std::mem::swap(&mut state.buf, &mut spare);
            drop(state);
            self.room.notify_all();
            write_lines(out, &spare, &mut cut);
            let _ = out.flush();
            // Memory a burst needed is given back once it has been written.
            if spare.capacity() > 256 * 1024 {
                spare = Vec::new();
            } else {
                spare.clear();
            }
            // Let lines gather, unless they are already piling up toward the limit.
            if !closing && lock(&self.state).buf.len() < self.limit / 2 {
                std::thread::sleep(LOG_LINGER);
            }
        }
    }

    /// Write what is waiting and stop the writer; later lines are written directly. Waits at
    /// most [`CLOSE_PATIENCE`] for the writer.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closing = true;
        self.wake.notify_one();
        let deadline = std::time::Instant::now() + CLOSE_PATIENCE;
        while !state.finished {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            state = match self.room.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// Marks the sink's writer stopped when dropped.
struct Finished<'a>(&'a LogSink);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).finished = true;
        self.0.room.notify_all();
    }
}

/// Write whole lines to `out`, through interrupted writes and a full non-blocking pipe. A write
/// that fails otherwise gives up the rest of the line it failed in, and goes on with the next:
/// one failure costs one line. A line cut short that way (`cut`) is ended with a newline before
/// anything else is written, so the next line does not run into it.
fn write_lines(out: &mut impl Write, mut bytes: &[u8], cut: &mut bool) {
    // Part of the line at `bytes[0]` is already written.
    let mut inside = false;
    while !bytes.is_empty() {
        let ending = *cut;
        let piece = if ending { &b"\n"[..] } else { bytes };
        match out.write(piece) {
            Ok(n) if n > 0 && ending => *cut = false,
            Ok(n) if n > 0 => {
                inside = bytes[n - 1] != b'\n';
                bytes = &bytes[n..];
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(_) | Err(_) => {
                *cut |= inside;
                inside = false;
                let end = bytes
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |i| i + 1);
                bytes = &bytes[end..];
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes the log lines still waiting when it is dropped (at exit).
pub struct LogGuard(pub Option<Arc<LogSink>>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(sink) = self.0.take() {
            sink.close();
        }
    }
}

/// The log subscriber's handle on the [`LogSink`].
#[derive(Clone)]
pub struct Sink(pub Arc<LogSink>);

impl<'a> fmt::MakeWriter<'a> for Sink {
    type Writer = SinkLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkLine(&self.0)
    }
}

/// One line for a [`LogSink`].
pub struct SinkLine<'a>(&'a LogSink);

impl std::io::Write for SinkLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that takes its time and counts its writes.
    #[derive(Clone, Default)]
    struct Slow {
        written: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_micros(200));
            self.written.lock().unwrap().extend_from_slice(buf);
            *self.writes.lock().unwrap() += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Where lines written directly (after the writer stopped) went.
    fn direct() -> (Arc<Mutex<Vec<u8>>>, Direct) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let to = lines.clone();
        (
            lines,
            Box::new(move |line| to.lock().unwrap().extend_from_slice(line)),
        )
    }

    #[test]
    fn every_line_is_written_once_in_order_in_few_writes_even_past_the_limit() {
        let out = Slow::default();
        // A limit of a few lines: producers must wait for room, and nothing is dropped.
        let (directly, to) = direct();
        let sink = LogSink::start_writing(out.clone(), 256, to);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        sink.push(format!("{t} {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sink.close();
        let text = String::from_utf8(out.written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8_000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..2_000).collect::<Vec<_>>(), "thread {t}'s lines");
        }
        let writes = *out.writes.lock().unwrap();
        assert!(writes < 8_000, "{writes} writes for 8,000 lines");
        assert!(directly.lock().unwrap().is_empty());
    }

    #[test]
    fn a_line_on_a_quiet_sink_is_written_at_once_and_after_close_directly() {
        let out = Slow::default();
        let (directly, to) = direct();
        let sink = LogSink::start_writing(out.clone(), LOG_BUFFER_BYTES, to);
        sink.push(b"first\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.written.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&*out.written.lock().unwrap(), b"first\n");
        sink.close();
        assert!(lock(&sink.state).finished);
        // The writer is gone: a later line is written at once, not left in a buffer nobody
        // writes.
        sink.push(b"later\n");
        assert!(lock(&sink.state).buf.is_empty());
        assert_eq!(&*directly.lock().unwrap(), b"later\n");
        assert_eq!(&*out.written.lock().unwrap(), b"first\n");
    }

    /// An output that takes at most `chunk` bytes a call and answers each call in turn from
    /// `script` (then accepts).
    struct Flaky {
        written: Vec<u8>,
        chunk: usize,
        script: std::collections::VecDeque<Option<ErrorKind>>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(Some(kind)) = self.script.pop_front() {
                return Err(kind.into());
            }
            let n = buf.len().min(self.chunk);
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn flaky(chunk: usize, script: &[Option<ErrorKind>]) -> Flaky {
        Flaky {
            written: Vec::new(),
            chunk,
            script: script.iter().copied().collect(),
        }
    }

    #[test]
    fn interrupted_and_would_block_writes_are_tried_again_and_short_writes_finished() {
        use ErrorKind::{Interrupted, WouldBlock};
        let mut out = flaky(
            3,
            &[
                Some(Interrupted),
                None,
                Some(WouldBlock),
                None,
                Some(Interrupted),
            ],
        );
        let mut cut = false;
        write_lines(&mut out, b"one line\nanother\n", &mut cut);
        assert_eq!(out.written, b"one line\nanother\n");
        assert!(!cut);
    }

    #[test]
    fn a_failed_write_costs_the_line_it_was_in_and_the_cut_line_is_ended() {
        use ErrorKind::Other;
        // Five bytes of "first line" go out, then a write fails: the rest of that line is given
        // up, it is ended, and the next lines are written whole.
        let mut out = flaky(5, &[None, Some(Other)]);
        let mut cut = false;
        write_lines(&mut out, b"first line\nsecond\nthird\n", &mut cut);
        assert_eq!(out.written, b"first\nsecond\nthird\n");
        assert!(!cut);

        // A failure at a line's start costs that line alone, and nothing needs ending.
        let mut out = flaky(100, &[Some(Other)]);
        write_lines(&mut out, b"lost\nkept\n", &mut cut);
        assert_eq!(out.written, b"kept\n");

        // An output that takes nothing at all: every line is given up, and the call returns.
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        write_lines(&mut Full, b"a\nb\n", &mut cut);
        assert!(!cut);
    }

    #[test]
    fn a_line_cut_at_the_end_of_one_batch_is_ended_before_the_next_batch() {
        let mut out = flaky(4, &[None, Some(ErrorKind::Other)]);
        let mut cut = false;
        write_lines(&mut out, b"truncated\n", &mut cut);
        assert_eq!(out.written, b"trun");
        assert!(cut, "the cut line is remembered");
        write_lines(&mut out, b"next\n", &mut cut);
        assert_eq!(out.written, b"trun\nnext\n");
        assert!(!cut);
    }

    #[test]
    fn close_gives_up_on_a_writer_that_never_returns() {
        /// A stderr nobody reads.
        struct Stuck(std::sync::mpsc::Receiver<()>);
        impl Write for Stuck {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.recv();
                Err(ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (release, stuck) = std::sync::mpsc::channel();
        let (directly, to) = direct();
        let sink = LogSink::start_writing(Stuck(stuck), LOG_BUFFER_BYTES, to);
        sink.push(b"never written\n");
        let started = std::time::Instant::now();
        sink.close();
        let waited = started.elapsed();
        assert!(waited >= CLOSE_PATIENCE, "returned after {waited:?}");
        assert!(!lock(&sink.state).finished);
        // Once the write returns, the writer stops and later lines go directly.
        drop(release);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !lock(&sink.state).finished {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never stopped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        sink.push(b"after\n");
        assert_eq!(&*directly.lock().unwrap(), b"after\n");
    }
}
