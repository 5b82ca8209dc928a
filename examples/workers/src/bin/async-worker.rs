//! An async connection worker: many connections at a time per process on a tokio runtime,
//! served on every listener the master passes (TCP and Unix), speaking the line protocol of the
//! sync and threaded workers (`panic` panics, `fail` fails, anything else is answered upper-cased
//! with the pid).
//!
//! Run with:
//! ```sh
//! cargo build -p gpe-master -p example-workers
//! target/debug/gpe-master --workers 3 --bind 127.0.0.1:8000 --bind unix:/tmp/upper.sock target/debug/async-worker
//! echo hello | nc -q1 127.0.0.1 8000
//! echo hello | nc -q1 -U /tmp/upper.sock
//! ```

use example_workers::{init_logging, LineError};
use gpe_core::runtime::AsyncConnection;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

struct Upper;

#[gpe_core::instrument_worker(async)]
impl Upper {
    async fn handle(&self, conn: AsyncConnection) -> Result<(), LineError> {
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line).await.map_err(LineError::Io)?;
        match line.trim_end() {
            "panic" => panic!("the client asked for a panic"),
            "fail" => {
                let _ = reader.get_mut().write_all(b"ERR\n").await;
                Err(LineError::BadInput)
            }
            text => {
                let reply = format!("{} {}\n", text.to_uppercase(), std::process::id());
                reader
                    .get_mut()
                    .write_all(reply.as_bytes())
                    .await
                    .map_err(LineError::Io)
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    init_logging();
    Upper.run()
}
