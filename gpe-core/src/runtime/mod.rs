//! The runtime behind `#[instrument_worker]`: job loops for the sync, threaded and async worker
//! kinds, with request metrics, panics caught per job, graceful/fast shutdown, max-requests and
//! the heartbeat of the gpe-master contract.
//!
//! The macro only chooses among [`run_blocking`], [`run_blocking_connections`], [`run_async`] and
//! [`run_async_connections`] and builds the [`Options`]; every behaviour lives here, where it is
//! tested like any other code.
//!
//! The connection kinds accept on every listener the worker inherits (TCP and Unix); the async
//! one hands the handler the stream type it takes ([`AsyncStream`]: [`AsyncConnection`] for
//! every listener, `tokio::net::TcpStream` or `tokio::net::UnixStream` for one family).
//!
//! The async kinds run the job source and the handlers as tokio tasks; the source future is
//! dropped only when the worker stops, so a source must make claiming a job cancel-safe only
//! with respect to shutdown.
//!
//! Metrics (labels `worker_id` plus the constant labels of the options):
//! `{prefix}worker_requests_total`, `{prefix}worker_request_duration_seconds`,
//! `{prefix}worker_failed_requests_total{error_type}` and
//! `{prefix}worker_error_handling_total{error_type}` (a failed job counts in both, as in the
//! Python exporter; a panic has `error_type="panic"`), and the worker resource families of
//! [`crate::worker::metrics`] under `{prefix}worker_` with the same constant labels
//! (`{prefix}worker_memory_bytes`, `..._cpu_percent`, `..._uptime_seconds`, `..._state`, sampled
//! every 5 s, and `{prefix}worker_restart_total{reason}`).
//!
//! A watchdog thread heartbeats and watches the signals every 50 ms, whatever the job loops are
//! doing: TERM (and max-requests) sets `state="stopping"` and counts `restart_total` with
//! `reason="term"` (`"max_requests"`), then the loops stop taking jobs and let the running ones
//! finish; QUIT/INT sets `state="quitting"`, counts `reason="quit"` and exits at once, even in
//! the middle of a job or while a source blocks. For the sync kind the heartbeat pauses while a
//! job runs longer than the master's `--timeout` (as gunicorn's sync worker: the master replaces a
//! stuck worker); the threaded and async kinds heartbeat regardless of their jobs. The ABRT the
//! master sends a timed-out worker sets `state="aborting"`, counts `reason="abort"` and exits 1
//! (gunicorn's `handle_abort`).
//!
//! A blocking `source` (sync and threaded kinds) is only asked to stop between jobs: on TERM the
//! worker exits once the source returns, so a source that waits for jobs should poll
//! [`is_stopping`] and return `None` once it is set; one that keeps blocking is killed by the
//! master after `--graceful-timeout`.

use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use accept::{accept, accept_loop};
use supervisor::Supervisor;

use crate::worker::Listener;

mod accept;
mod jobs;
mod outcome;
mod supervisor;

pub use accept::{AsyncConnection, AsyncStream, Connection};
pub use jobs::{JobLoop, JobRecorder};
pub use outcome::{IntoOutcome, JobFailure, Outcome};

/// Set by the watchdog of this process's worker once a stop was asked for.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether this worker process was asked to stop (TERM, QUIT/INT, max-requests, a changed
/// parent), as seen by the runtime's watchdog (within 50 ms). A `source` of the sync or threaded
/// kinds that blocks waiting for a job should check it while it waits and return `None` once it
/// is `true`: the loop only looks at the stop between jobs, so a source that keeps waiting holds
/// a TERM up until the master's `--graceful-timeout` kills the worker. Always `false` outside a
/// running `#[instrument_worker]` worker.
///
/// ```
/// use std::time::Duration;
///
/// /// Wait for a job in `queue`, or give up once the worker is stopping.
/// fn next_job(queue: &std::sync::Mutex<Vec<u32>>) -> Option<u32> {
///     loop {
///         if let Some(job) = queue.lock().unwrap().pop() {
///             return Some(job);
///         }
///         if gpe_core::runtime::is_stopping() {
///             return None;
///         }
///         std::thread::sleep(Duration::from_millis(10));
///     }
/// }
///
/// assert_eq!(next_job(&std::sync::Mutex::new(vec![7])), Some(7));
/// assert!(!gpe_core::runtime::is_stopping());
/// ```
pub fn is_stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// The worker kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// One job at a time on the main thread (gunicorn's `sync`).
    Sync,
    /// A pool of this many threads taking jobs concurrently (gunicorn's `gthread`).
    Threads(u32),
    /// A tokio runtime; the handler is an `async fn`.
    Async,
}

/// What the generated code passes to the runtime.
#[derive(Debug, Clone)]
pub struct Options {
    name: String,
    kind: Kind,
    prefix: String,
    const_labels: Vec<(String, String)>,
    buckets: Vec<f64>,
    error_label: Option<String>,
}

/// The Python exporter's request duration buckets.
pub const DEFAULT_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

impl Options {
    /// Options for the worker type `name`.
    pub fn new(name: &str) -> Self {
        Options {
            name: name.to_owned(),
            kind: Kind::Sync,
            prefix: "gunicorn_".to_owned(),
            const_labels: Vec::new(),
            buckets: DEFAULT_BUCKETS.to_vec(),
            error_label: None,
        }
    }

    /// The worker kind.
    #[must_use]
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// The metric name prefix (default `gunicorn_`).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// A constant label on every metric.
    #[must_use]
    pub fn const_label(mut self, name: &str, value: &str) -> Self {
        self.const_labels.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Request duration buckets.
    #[must_use]
    pub fn buckets(mut self, buckets: Vec<f64>) -> Self {
        self.buckets = buckets;
        self
    }

    /// A fixed `error_type` label for failures (default: the error's type name).
    #[must_use]
    pub fn error_label(mut self, label: &str) -> Self {
        self.error_label = Some(label.to_owned());
        self
    }
}

/// Run a sync or threaded worker whose jobs come from `source` (`None`: no more jobs).
pub fn run_blocking<W, J, R>(
    worker: W,
    options: Options,
    source: impl Fn(&W) -> Option<J> + Send + Sync,
    handler: impl Fn(&W, J) -> R + Send + Sync,
) -> ExitCode
where
    W: Send + Sync,
    R: IntoOutcome,
{
    supervised(&options, |sup| {
        std::thread::scope(|scope| {
            for _ in 0..Supervisor::threads(&options) {
                scope.spawn(|| while sup.step(|| source(&worker), |job| handler(&worker, job)) {});
            }
        });
        Ok(())
    })
}

/// Run a sync or threaded worker that handles connections accepted on its listeners.
pub fn run_blocking_connections<W, R>(
    worker: W,
    options: Options,
    handler: impl Fn(&W, Connection) -> R + Send + Sync,
) -> ExitCode
where
    W: Send + Sync,
    R: IntoOutcome,
{
    supervised(&options, |sup| {
        let listeners = sup.listeners()?;
        for l in &listeners {
            let _ = l.set_nonblocking(true);
        }
        std::thread::scope(|scope| {
            for _ in 0..Supervisor::threads(&options) {
                scope.spawn(|| {
                    while !sup.should_stop() {
                        if let Some(conn) = accept(&listeners, Duration::from_millis(250)) {
                            sup.run_job(|| handler(&worker, conn));
                        }
                    }
                });
            }
        });
        Ok(())
    })
}

/// Start the supervisor of `options` (signals, watchdog, sampler), serve under it, then exit as
/// a worker does; a boot error (logged) exits with its code instead.
fn supervised(
    options: &Options,
    serve: impl FnOnce(&Arc<Supervisor>) -> Result<(), ExitCode>,
) -> ExitCode {
    let sup = match Supervisor::start(options) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match serve(&sup) {
        Ok(()) => sup.exit(),
        Err(code) => code,
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start the tokio runtime");
            ExitCode::from(3)
        })
}

/// Run an async worker whose jobs come from `source`; jobs run concurrently as tokio tasks.
pub fn run_async<W, J, R, SF, HF>(
    worker: W,
    options: Options,
    source: impl Fn(Arc<W>) -> SF,
    handler: impl Fn(Arc<W>, J) -> HF + Send + Sync + 'static,
) -> ExitCode
where
    W: Send + Sync + 'static,
    J: Send + 'static,
    SF: Future<Output = Option<J>>,
    HF: Future<Output = R> + Send + 'static,
    R: IntoOutcome + Send + 'static,
{
    supervised(&options, |sup| {
        let rt = tokio_runtime()?;
        let worker = Arc::new(worker);
        let handler = Arc::new(handler);
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            // The source future is only dropped when the worker stops, never to poll the stop flag.
            let mut next = Box::pin(source(Arc::clone(&worker)));
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    job = &mut next => {
                        let Some(job) = job else { break };
                        spawn_job(&mut tasks, sup, handler(Arc::clone(&worker), job));
                        while tasks.try_join_next().is_some() {}
                        if sup.should_stop() {
                            break;
                        }
                        next = Box::pin(source(Arc::clone(&worker)));
                    }
                    _ = tick.tick() => {
                        if sup.should_stop() {
                            break;
                        }
                    }
                }
            }
            while tasks.join_next().await.is_some() {}
        });
        Ok(())
    })
}

fn spawn_job<R: IntoOutcome + Send + 'static>(
    tasks: &mut tokio::task::JoinSet<()>,
    sup: &Arc<Supervisor>,
    fut: impl Future<Output = R> + Send + 'static,
) {
    let sup = Arc::clone(sup);
    tasks.spawn(async move {
        let started = sup.metrics.start();
        // A panicking job is caught by its task; count it as a failure of that job.
        let outcome = match tokio::spawn(fut).await {
            Ok(r) => r.into_outcome(),
            Err(e) if e.is_panic() => {
                tracing::error!("job panicked; the worker goes on");
                Err(JobFailure::PANIC)
            }
            Err(_) => Err(JobFailure::CANCELLED),
        };
        sup.metrics.record(started, outcome);
        sup.finished();
    });
}

/// Run an async worker that handles the connections accepted on its listeners: every TCP and
/// Unix listener for a handler taking [`AsyncConnection`], the TCP ones for
/// [`tokio::net::TcpStream`], the Unix ones for [`tokio::net::UnixStream`] (a listener of the
/// other family is skipped with a warning; none left is a boot error, exit code 3).
pub fn run_async_connections<W, C, R, HF>(
    worker: W,
    options: Options,
    handler: impl Fn(Arc<W>, C) -> HF + Send + Sync + 'static,
) -> ExitCode
where
    W: Send + Sync + 'static,
    C: AsyncStream,
    HF: Future<Output = R> + Send + 'static,
    R: IntoOutcome + Send + 'static,
{
    supervised(&options, |sup| {
        let rt = tokio_runtime()?;
        let listeners = sup.listeners()?;
        let served: Vec<Listener> = listeners
            .into_iter()
            .filter(|l| {
                let ok = match l {
                    Listener::Tcp(_) => C::TCP,
                    Listener::Unix(_) => C::UNIX,
                };
                if !ok {
                    tracing::warn!(
                        handler_takes = std::any::type_name::<C>(),
                        "skipping a listener of the other socket family: take \
                         gpe_core::runtime::AsyncConnection to serve TCP and Unix listeners"
                    );
                }
                ok
            })
            .collect();
        if served.is_empty() {
            tracing::error!(
                handler_takes = std::any::type_name::<C>(),
                "no listener this handler can serve"
            );
            return Err(ExitCode::from(3));
        }
        let worker = Arc::new(worker);
        rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<C>(64);
            let mut accepting = tokio::task::JoinSet::new();
            for l in served {
                accepting.spawn(accept_loop(l, tx.clone()));
            }
            drop(tx);
            let mut tasks = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while !sup.should_stop() {
                tokio::select! {
                    conn = rx.recv() => match conn {
                        Some(conn) => spawn_job(&mut tasks, sup, handler(Arc::clone(&worker), conn)),
                        None => break,
                    },
                    _ = tick.tick() => {}
                }
                while tasks.try_join_next().is_some() {}
            }
            // Stop accepting (the listeners close), then serve what was already accepted.
            accepting.shutdown().await;
            while let Ok(conn) = rx.try_recv() {
                spawn_job(&mut tasks, sup, handler(Arc::clone(&worker), conn));
            }
            while tasks.join_next().await.is_some() {}
        });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// The worker resource families honour the prefix and constant labels, and a loop ended by
    /// max-requests counts `restart_total{reason="max_requests"}` and sets `state="stopping"`.
    #[test]
    fn job_loop_records_worker_families_with_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let options = Options::new("T")
            .kind(Kind::Threads(2))
            .prefix("app_")
            .const_label("svc", "a");
        let jobs = JobLoop::new(&options, &store, "4", 3).unwrap();
        jobs.sup.stops.worker().sample();
        let text = || {
            crate::expose::encode_text(
                &crate::collect::MultiProcessCollector::new(dir.path()).gather(),
            )
            .unwrap()
        };
        let pid = std::process::id();
        let t = text();
        assert!(
            t.contains(&format!(
                "app_worker_state{{pid=\"{pid}\",state=\"running\",svc=\"a\",worker_id=\"4\"}} 1"
            )),
            "{t}"
        );
        assert!(t.contains(&format!(
            "app_worker_memory_bytes{{pid=\"{pid}\",svc=\"a\",worker_id=\"4\"}}"
        )));
        assert!(!t.contains("restart_total"), "{t}");
        let mut n = 0;
        while jobs.step(|| Some(1u8), |_| ()) {
            n += 1;
        }
        assert_eq!(n, 3);
        let t = text();
        assert!(
            t.contains(
                r#"app_worker_restart_total{reason="max_requests",svc="a",worker_id="4"} 1"#
            ),
            "{t}"
        );
        assert!(t.contains(&format!(
            "app_worker_state{{pid=\"{pid}\",state=\"stopping\",svc=\"a\",worker_id=\"4\"}} 1"
        )));
        assert!(
            t.contains(r#"app_worker_requests_total{svc="a",worker_id="4"} 3"#),
            "{t}"
        );
        // The loop stays stopped, and the exit is counted once.
        assert!(!jobs.step(|| Some(1u8), |_| ()));
        assert!(text().contains(
            r#"app_worker_restart_total{reason="max_requests",svc="a",worker_id="4"} 1"#
        ));
    }

    #[test]
    fn error_type_names_are_short() {
        assert_eq!(outcome::short_type_name("std::io::error::Error"), "Error");
        assert_eq!(
            outcome::short_type_name("my::Wrapper<other::Thing>"),
            "Wrapper"
        );
        assert_eq!(outcome::short_type_name("Plain"), "Plain");
        let r: Result<(), std::num::ParseIntError> = "x".parse::<i32>().map(|_| ());
        assert_eq!(r.into_outcome(), Err(JobFailure::new("ParseIntError")));
        assert_eq!(().into_outcome(), Ok(()));
    }
}
