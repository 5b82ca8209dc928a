//! An async queue consumer: jobs are files in a spool directory (`QUEUE_DIR`), claimed by an
//! atomic rename so that each is processed by exactly one of the workers.
//!
//! A job `NAME.job` is answered by `NAME.done` holding its content upper-cased; a job whose
//! content is `panic` panics (counted as a failure; the worker goes on); `sleep MS` takes that long.
//!
//! Run with:
//! ```sh
//! cargo build -p gpe-master -p example-workers
//! mkdir -p /tmp/spool && echo hi > /tmp/spool/1.job
//! QUEUE_DIR=/tmp/spool target/debug/gpe-master --workers 3 target/debug/queue-worker
//! ```

use std::path::PathBuf;
use std::time::Duration;

use example_workers::init_logging;

struct Spool {
    dir: PathBuf,
}

#[gpe_core::instrument_worker(async, source = next_job, handler = process, labels(queue = "spool"))]
impl Spool {
    /// Claim the next job, polling the spool every 50 ms until there is one.
    async fn next_job(&self) -> Option<PathBuf> {
        loop {
            if let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await {
                while let Ok(Some(entry)) = entries.next_entry().await {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "job") {
                        let claimed =
                            path.with_extension(format!("claimed-{}", std::process::id()));
                        if tokio::fs::rename(&path, &claimed).await.is_ok() {
                            return Some(claimed);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn process(&self, claimed: PathBuf) -> std::io::Result<()> {
        let content = tokio::fs::read_to_string(&claimed).await?;
        if let Some(ms) = content
            .trim()
            .strip_prefix("sleep ")
            .and_then(|ms| ms.parse().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if content.trim() == "panic" {
            let _ = tokio::fs::remove_file(&claimed).await;
            panic!("job {} asked for a panic", claimed.display());
        }
        tokio::fs::write(claimed.with_extension("done"), content.to_uppercase()).await?;
        tokio::fs::remove_file(&claimed).await
    }
}

fn main() -> std::process::ExitCode {
    init_logging();
    let Some(dir) = std::env::var_os("QUEUE_DIR") else {
        eprintln!("queue-worker: set QUEUE_DIR to the spool directory to consume");
        return std::process::ExitCode::from(3);
    };
    Spool { dir: dir.into() }.run()
}
