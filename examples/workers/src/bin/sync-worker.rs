//! A sync worker: one connection at a time, like gunicorn's `sync` worker class.
//!
//! Run with:
//! ```sh
//! cargo build -p gpe-master -p example-workers
//! target/debug/gpe-master --workers 3 --bind 127.0.0.1:8000 target/debug/sync-worker
//! echo hello | nc -q1 127.0.0.1 8000        # HELLO <pid>
//! curl -s 127.0.0.1:9091/metrics | grep gunicorn_worker_requests_total
//! ```

use example_workers::{answer_line, init_logging, LineError};
use gpe_core::runtime::Connection;

struct Upper;

#[gpe_core::instrument_worker(sync)]
impl Upper {
    fn handle(&self, conn: Connection) -> Result<(), LineError> {
        answer_line(conn)
    }
}

fn main() -> std::process::ExitCode {
    init_logging();
    Upper.run()
}
