//! Shared pieces of the worker examples: the line protocol and logging set-up.
//!
//! The sync and threaded workers speak a one-line protocol: the client sends a line, the worker
//! answers it upper-cased. `panic` makes the handler panic (counted as a failure, the worker goes
//! on), `fail` makes it return an error (counted with `error_type="LineError"`, the error's type name),
//! and `sleep MS` answers `STARTED` at once, then, `MS` milliseconds later, `SLEEP MS <pid>` (a
//! long job, for the shutdown tests).

use std::io::{BufRead, BufReader, Write};

use gpe_core::runtime::Connection;

/// The error a handler returns for the line `fail`.
#[derive(Debug)]
pub enum LineError {
    /// The client asked for a failure.
    BadInput,
    /// The connection failed.
    Io(std::io::Error),
}

/// Answer one line on `conn`.
///
/// # Errors
/// [`LineError::BadInput`] for the line `fail`, [`LineError::Io`] when the connection fails.
///
/// # Panics
/// On the line `panic`, on purpose.
pub fn answer_line(conn: Connection) -> Result<(), LineError> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(LineError::Io)?;
    match line.trim_end() {
        "panic" => panic!("the client asked for a panic"),
        "fail" => {
            let _ = reader.get_mut().write_all(b"ERR\n");
            Err(LineError::BadInput)
        }
        text if text.starts_with("sleep ") => {
            let ms: u64 = text["sleep ".len()..]
                .parse()
                .map_err(|_| LineError::BadInput)?;
            let conn = reader.get_mut();
            conn.write_all(b"STARTED\n").map_err(LineError::Io)?;
            conn.flush().map_err(LineError::Io)?;
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let reply = format!("SLEEP {ms} {}\n", std::process::id());
            conn.write_all(reply.as_bytes()).map_err(LineError::Io)
        }
        text => {
            let reply = format!("{} {}\n", text.to_uppercase(), std::process::id());
            reader
                .get_mut()
                .write_all(reply.as_bytes())
                .map_err(LineError::Io)
        }
    }
}

/// Log to stderr at `RUST_LOG` (default `info`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}
