//! A threaded worker: four connections at a time per process, like gunicorn's `gthread`.
//!
//! Run with:
//! ```sh
//! cargo build -p gpe-master -p example-workers
//! target/debug/gpe-master --workers 3 --bind 127.0.0.1:8000 target/debug/threaded-worker
//! echo hello | nc -q1 127.0.0.1 8000
//! ```

use example_workers::{answer_line, init_logging, LineError};
use gpe_core::runtime::Connection;

struct Upper;

#[gpe_core::instrument_worker(threads = 4, labels(service = "upper"))]
impl Upper {
    fn handle(&self, conn: Connection) -> Result<(), LineError> {
        answer_line(conn)
    }
}

fn main() -> std::process::ExitCode {
    init_logging();
    Upper.run()
}
