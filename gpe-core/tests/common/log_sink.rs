//! Log capture: a `tracing` subscriber writing plain text into a shared buffer. A file of its own,
//! included by path (`#[path = "..."] mod log_sink;`), by `multiprocess.rs` and by `redis_support`
//! (which gpe-master's tests include too).
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A plain-text (no ANSI colours) fmt subscriber of events up to `level`, and the buffer it
/// writes them into.
pub fn capture(
    level: tracing::Level,
) -> (
    Arc<Mutex<Vec<u8>>>,
    impl tracing::Subscriber + Send + Sync + 'static,
) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || LogWriter(sink.clone()))
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    (buf, subscriber)
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
