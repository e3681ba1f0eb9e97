//! Where log lines go: a buffer that one thread writes to stderr in batches.

use std::{
    io::Write as _,
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
/// [`LOG_BUFFER_BYTES`] are waiting, a line waits for room.
pub struct LogSink {
    state: Mutex<SinkState>,
    /// The writer is idle and there is something to write, or the sink is closing.
    wake: Condvar,
    /// The buffer has room again.
    room: Condvar,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Bytes that may wait before a line waits for room.
    limit: usize,
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

/// How long the writer lets lines gather after a write.
const LOG_LINGER: Duration = Duration::from_millis(5);

impl LogSink {
    /// A sink writing to stderr.
    pub fn start() -> Arc<Self> {
        Self::start_writing(std::io::stderr(), LOG_BUFFER_BYTES)
    }

    fn start_writing(mut out: impl std::io::Write + Send + 'static, limit: usize) -> Arc<Self> {
        let sink = Arc::new(Self {
            state: Mutex::new(SinkState::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
            writer: Mutex::new(None),
            limit,
        });
        let writer = sink.clone();
        match std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.write_until_closed(&mut out))
        {
            Ok(handle) => *lock(&sink.writer) = Some(handle),
            Err(_) => lock(&sink.state).finished = true,
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
            let _ = std::io::stderr().write_all(line);
            return;
        }
        state.buf.extend_from_slice(line);
        if state.idle {
            state.idle = false;
            self.wake.notify_one();
        }
    }

    fn write_until_closed(&self, out: &mut impl std::io::Write) {
        let mut spare = Vec::new();
        loop {
            let mut state = lock(&self.state);
            while state.buf.is_empty() && !state.closing {
                state.idle = true;
                state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.idle = false;
            if state.buf.is_empty() {
                // Closing, and everything is written.
                state.finished = true;
                drop(state);
                self.room.notify_all();
                return;
            }
            let closing = state.closing;
            std::mem::swap(&mut state.buf, &mut spare);
            drop(state);
            self.room.notify_all();
            let _ = out.write_all(&spare);
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

    /// Write what is waiting and stop the writer; later lines are written directly.
    pub fn close(&self) {
        lock(&self.state).closing = true;
        self.wake.notify_one();
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
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

    impl std::io::Write for Slow {
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

    #[test]
    fn every_line_is_written_once_in_order_in_few_writes_even_past_the_limit() {
        let out = Slow::default();
        // A limit of a few lines: producers must wait for room, and nothing is dropped.
        let sink = LogSink::start_writing(out.clone(), 256);
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
    }

    #[test]
    fn a_line_on_a_quiet_sink_is_written_at_once_and_after_close_directly() {
        let out = Slow::default();
        let sink = LogSink::start_writing(out.clone(), LOG_BUFFER_BYTES);
        sink.push(b"first\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.written.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&*out.written.lock().unwrap(), b"first\n");
        sink.close();
        assert!(lock(&sink.state).finished);
        // The writer is gone; a later line goes to stderr, not into a buffer nobody writes.
        sink.push(b"");
        assert!(lock(&sink.state).buf.is_empty());
    }
}
