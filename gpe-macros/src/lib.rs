//! Procedural macros for gpe.
//!
//! [`macro@instrument_worker`] wires a custom worker type into gpe-core's multiprocess metrics and
//! the gpe-master worker contract. Use it through `gpe_core::instrument_worker`; the generated
//! code only calls `::gpe_core::__private`, so no logic lives in the macro.
#![forbid(unsafe_code)]

use proc_macro::TokenStream;

mod worker;

/// Turn a type into a gpe worker: generates `fn run(self) -> std::process::ExitCode`.
///
/// On an `impl` block, the handler method (default `handle`) is checked here; on a struct, the
/// handler is found by the compiler in any `impl` of the type.
///
/// Arguments (all optional, comma separated):
/// - the kind: `sync` (default: one job at a time), `threads = N` (a pool of N threads, like
///   gunicorn's gthread), or `async` (tokio; the handler is an `async fn`);
/// - `handler = method`: the method called for each job (default `handle`);
/// - `source = method`: where jobs come from (`fn(&self) -> Option<Job>`, `async` for the async
///   kind; `None` means no more jobs). Default: connections accepted on the listeners inherited
///   from gpe-master (or bound from `GPE_BIND` / `127.0.0.1:8000` standalone): the handler takes
///   a `gpe_core::runtime::Connection` (sync, threads), or for `async` a
///   `gpe_core::runtime::AsyncConnection` (every listener), a `tokio::net::TcpStream` (TCP
///   listeners only) or a `tokio::net::UnixStream` (Unix listeners only);
/// - `prefix = "..."`: metric name prefix (default `"gunicorn_"`);
/// - `labels(key = "value", ...)`: constant labels on every metric;
/// - `buckets = [0.01, 0.1, ...]`: request duration buckets;
/// - `error_label = "..."`: the `error_type` label of failures (default: the error's type name).
///
/// The handler takes `&self` and one job and returns `()` (every job succeeds) or
/// `Result<T, E>` with `E: Debug` (an `Err` is a failed job); a panic is caught and counted as a
/// failure with `error_type="panic"`. Misuse is a compile error at the offending argument, method
/// or return type.
///
/// ```no_run
/// use std::io::{BufRead, BufReader, Write};
///
/// struct Upper;
///
/// #[gpe_core::instrument_worker(threads = 4)]
/// impl Upper {
///     fn handle(&self, conn: gpe_core::runtime::Connection) -> std::io::Result<()> {
///         // Read a line, write it back upper-cased.
///         let mut reader = BufReader::new(conn);
///         let mut line = String::new();
///         reader.read_line(&mut line)?;
///         reader.get_mut().write_all(line.to_uppercase().as_bytes())
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     Upper.run()
/// }
/// ```
///
/// A queue consumer on tokio, with its own job source and metric options:
///
/// ```no_run
/// struct Queue;
///
/// #[derive(Debug)]
/// struct Rejected;
///
/// #[gpe_core::instrument_worker(async, source = next_job, handler = process, prefix = "queue_", labels(queue = "mail"))]
/// impl Queue {
///     async fn next_job(&self) -> Option<String> {
///         None // no more jobs: the worker exits
///     }
///
///     async fn process(&self, job: String) -> Result<(), Rejected> {
///         if job.is_empty() { Err(Rejected) } else { Ok(()) }
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     Queue.run()
/// }
/// ```
#[proc_macro_attribute]
pub fn instrument_worker(attr: TokenStream, item: TokenStream) -> TokenStream {
    worker::expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// A proc-macro crate may export only its macros, so this struct is not `pub` (rustdoc collects
// the doctests of private items too).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
struct ReadmeDoctests;
