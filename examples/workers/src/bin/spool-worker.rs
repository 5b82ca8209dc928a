//! A sync queue consumer with a blocking job source: jobs are files in a spool directory
//! (`QUEUE_DIR`), claimed by an atomic rename; `next_job` blocks (polling every 50 ms) until
//! there is one, or until the worker is stopping (`gpe_core::runtime::is_stopping`). The
//! runtime's watchdog heartbeats and acts on QUIT while it blocks.
//!
//! A job `NAME.job` is answered by `NAME.done` holding its content upper-cased; a job whose
//! content is `panic` panics (counted; the worker goes on); `sleep MS` sleeps that long first.
//!
//! Run with:
//! ```sh
//! cargo build -p gpe-master -p example-workers
//! mkdir -p /tmp/spool && echo hi > /tmp/spool/1.job
//! QUEUE_DIR=/tmp/spool target/debug/gpe-master --workers 3 target/debug/spool-worker
//! ```

use std::path::PathBuf;
use std::time::Duration;

use example_workers::init_logging;

struct Spool {
    dir: PathBuf,
}

#[gpe_core::instrument_worker(sync, source = next_job, handler = process)]
impl Spool {
    /// Claim the next job, blocking until there is one or the worker is stopping.
    fn next_job(&self) -> Option<PathBuf> {
        loop {
            if let Ok(entries) = std::fs::read_dir(&self.dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "job") {
                        let claimed =
                            path.with_extension(format!("claimed-{}", std::process::id()));
                        if std::fs::rename(&path, &claimed).is_ok() {
                            return Some(claimed);
                        }
                    }
                }
            }
            // Give up waiting once the worker is stopping (TERM, max-requests): the loop only
            // looks at the stop between jobs.
            if gpe_core::runtime::is_stopping() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn process(&self, claimed: PathBuf) -> std::io::Result<()> {
        let content = std::fs::read_to_string(&claimed)?;
        let content = content.trim();
        if content == "panic" {
            let _ = std::fs::remove_file(&claimed);
            panic!("job {} asked for a panic", claimed.display());
        }
        if let Some(ms) = content
            .strip_prefix("sleep ")
            .and_then(|ms| ms.parse().ok())
        {
            std::thread::sleep(Duration::from_millis(ms));
        }
        std::fs::write(claimed.with_extension("done"), content.to_uppercase())?;
        std::fs::remove_file(&claimed)
    }
}

fn main() -> std::process::ExitCode {
    init_logging();
    let Some(dir) = std::env::var_os("QUEUE_DIR") else {
        eprintln!("spool-worker: set QUEUE_DIR to the spool directory to consume");
        return std::process::ExitCode::from(3);
    };
    Spool { dir: dir.into() }.run()
}
