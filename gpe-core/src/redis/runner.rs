//! A thread with a current-thread tokio runtime that runs Redis work for synchronous callers
//! (a `prometheus::core::Collector` is called synchronously, possibly from inside another
//! runtime, where `block_on` would panic).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;

use super::RedisError;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug)]
pub(crate) struct Runner {
    tx: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runner {
    pub(crate) fn spawn(name: &str) -> Result<Self, RedisError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|_| RedisError::Thread("cannot build a tokio runtime"))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job);
                    }
                });
            })
            .map_err(|_| RedisError::Thread("cannot spawn a thread"))?;
        Ok(Runner {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Run `fut` on the runner's thread and wait for its output, at most `timeout`.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>> + Send + 'static,
        timeout: Duration,
    ) -> Result<T, RedisError> {
        let (reply, wait) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::pin(async move {
            let out = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(RedisError::Timeout(timeout)),
            };
            let _ = reply.send(out);
        });
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or(RedisError::Thread("the Redis runner thread has stopped"))?;
        wait.recv_timeout(timeout + Duration::from_secs(1))
            .map_err(|_| RedisError::Timeout(timeout))?
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
