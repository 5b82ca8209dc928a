//! The sync: local `.db` files to absolute values in Redis, on a timer, on demand and at exit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deadpool_redis::redis;
use tokio::sync::mpsc;

use super::keys::{self, Keys, ProcessId};
use super::outage::Outage;
use super::pool::{Conn, Pool};
use super::{lua, RedisConfig, RedisError};
use crate::collect::Liveness;
use crate::store::dbfile::{self, FileName, Kind, Owner};

/// Whose files a [`RedisSync`] reads.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SyncSource {
    /// Every process's files in a directory (run by the master for its whole host). Processes
    /// that `liveness` says are dead, or whose files disappeared, are flushed one last time and
    /// then folded into the archive.
    Dir {
        /// The store directory.
        dir: PathBuf,
        /// Who is alive (the master's [`LivePids`](crate::LivePids), or a pid check).
        liveness: Liveness,
    },
    /// Only one process's files (a standalone process syncing itself).
    Process {
        /// The store directory.
        dir: PathBuf,
        /// The process.
        pid: u32,
    },
}

impl SyncSource {
    /// Every process's files in `dir`, with `liveness` telling the living from the dead.
    ///
    /// ```
    /// let src = gpe_core::redis::SyncSource::dir("/tmp/metrics", gpe_core::Liveness::PidCheck);
    /// assert!(matches!(src, gpe_core::redis::SyncSource::Dir { .. }));
    /// ```
    pub fn dir(dir: impl Into<PathBuf>, liveness: Liveness) -> Self {
        SyncSource::Dir {
            dir: dir.into(),
            liveness,
        }
    }

    /// Only this process's files in `dir`.
    ///
    /// ```
    /// let src = gpe_core::redis::SyncSource::this_process("/tmp/metrics");
    /// assert!(matches!(src, gpe_core::redis::SyncSource::Process { .. }));
    /// ```
    pub fn this_process(dir: impl Into<PathBuf>) -> Self {
        SyncSource::Process {
            dir: dir.into(),
            pid: std::process::id(),
        }
    }

    fn dir_path(&self) -> &Path {
        match self {
            SyncSource::Dir { dir, .. } | SyncSource::Process { dir, .. } => dir,
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// Processes whose values (or heartbeat) were written.
    pub processes: usize,
    /// Values written (only changed values are sent).
    pub values: usize,
    /// Dead processes folded into the archive.
    pub folded: usize,
    /// Stale processes (of any host) folded by this sync's sweep.
    pub swept: usize,
    /// Redis commands sent: script calls (a write, a fold) and sweeps; 0 for an idle host.
    pub commands: usize,
}

type Values = BTreeMap<Kind, HashMap<String, (f64, f64)>>;

#[derive(Debug)]
struct Proc {
    id: ProcessId,
    /// Values last read from the files.
    desired: Values,
    /// Values Redis acknowledged (as read from the files; Redis holds `sent - base`).
    sent: Values,
    /// What a stale fold already moved to the archive: subtracted from additive kinds.
    base: Values,
    dead: bool,
    /// When Redis last acknowledged a write of this process (its heartbeat).
    beat_at: Option<Instant>,
}

/// Reads `.db` files and writes their values to Redis.
///
/// Build it with [`RedisSync::new`], then [`spawn`](RedisSync::spawn) it on its own thread: the
/// returned [`SyncHandle`] lets a synchronous program (the master) flush on demand and stop it.
/// No method ever fails because Redis is down: Redis is a best-effort copy of the files.
pub struct RedisSync {
    config: RedisConfig,
    source: SyncSource,
    keys: Keys,
    pool: Pool,
    conn: Option<Conn>,
    procs: HashMap<u32, Proc>,
    /// Folded pids whose files are still there (until compaction removes them): never re-sent.
    done: HashMap<u32, u64>,
    outage: Outage,
    next_sweep: Instant,
}

impl std::fmt::Debug for RedisSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSync")
            .field("config", &self.config)
            .field("source", &self.source)
            .field("processes", &self.procs.len())
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisSync {
    /// A sync of `source` to the Redis of `config`. Does not connect: a Redis that is down is
    /// only noticed (and logged, once) by the first sync.
    ///
    /// # Errors
    /// [`RedisError::Pool`] or [`RedisError::PoolConfig`] when the connection pool cannot be built.
    pub fn new(config: RedisConfig, source: SyncSource) -> Result<Self, RedisError> {
        let pool = config.pool()?;
        let min_backoff = config.interval.min(Duration::from_secs(1));
        Ok(RedisSync {
            keys: Keys::new(&config.prefix),
            outage: Outage::new("sync", min_backoff, config.max_backoff),
            pool,
            conn: None,
            source,
            procs: HashMap::new(),
            done: HashMap::new(),
            next_sweep: Instant::now(),
            config,
        })
    }

    /// Run the sync on its own thread (with a current-thread tokio runtime): every interval,
    /// on [`SyncHandle::flush_now`], and a final time on [`SyncHandle::shutdown`].
    ///
    /// # Errors
    /// [`RedisError::Thread`] when the thread or its runtime cannot be started.
    pub fn spawn(self) -> Result<SyncHandle, RedisError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|_| RedisError::Thread("cannot build a tokio runtime"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let wait = self.config.connect_timeout + self.config.response_timeout * 3;
        let thread = std::thread::Builder::new()
            .name("gpe-redis-sync".to_owned())
            .spawn(move || rt.block_on(self.run(rx)))
            .map_err(|_| RedisError::Thread("cannot spawn the sync thread"))?;
        Ok(SyncHandle {
            tx: Some(tx),
            thread: Some(thread),
            wait,
        })
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::debug!(server = %self.config.server(), prefix = %self.config.prefix, host = %self.config.host_id, "Redis sync started");
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = self.cycle(false).await;
                }
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Flush(reply)) => {
                        let _ = reply.send(self.cycle(false).await);
                    }
                    Some(Cmd::Shutdown(reply)) => {
                        let _ = reply.send(self.cycle(true).await);
                        break;
                    }
                    None => {
                        let _ = self.cycle(true).await;
                        break;
                    }
                }
            }
        }
    }

    /// Read the files, then (unless waiting out a backoff) write to Redis.
    async fn cycle(&mut self, last: bool) -> Result<FlushReport, RedisError> {
        self.read_files();
        if last {
            if let SyncSource::Process { pid, .. } = self.source {
                // A standalone process stopping: fold it, so its counters live on in the archive.
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.dead = true;
                }
            }
        }
        if !last && !self.outage.may_try() {
            return Err(RedisError::Backoff);
        }
        let budget = self.config.connect_timeout + self.config.response_timeout * 2;
        let started = Instant::now();
        let result = match tokio::time::timeout(budget, self.write()).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout(budget)),
        };
        let health = crate::health::get().redis();
        match &result {
            Ok(report) => health.synced(started.elapsed(), report.commands),
            Err(e) => health.failed(failure_kind(e)),
        }
        match &result {
            Ok(_) => {
                if self.outage.succeeded(&self.config.server()) {
                    // Redis may have restarted empty: send everything again (absolute values).
                    for p in self.procs.values_mut() {
                        p.sent.clear();
                    }
                    return self.write_with_timeout(budget).await;
                }
            }
            Err(e) => self.outage.failed(&self.config.server(), e),
        }
        result
    }

    async fn write_with_timeout(&mut self, budget: Duration) -> Result<FlushReport, RedisError> {
        match tokio::time::timeout(budget, self.write()).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout(budget)),
        }
    }

    /// The files of every process in the directory, by pid (`None`, logged, when it cannot be
    /// listed).
    fn list_files(&self) -> Option<HashMap<u32, Vec<(PathBuf, Kind)>>> {
        let dir = self.source.dir_path();
        let listing = match std::fs::read_dir(dir) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list the metrics directory; nothing to sync");
                return None;
            }
        };
        let mut files: HashMap<u32, Vec<(PathBuf, Kind)>> = HashMap::new();
        for entry in listing.flatten() {
            let path = entry.path();
            let Some(FileName {
                kind,
                owner: Owner::Pid(pid),
            }) = FileName::parse(&path)
            else {
                continue; // archives and foreign files: never synced as a process
            };
            if !keys::synced(kind) {
                continue; // exemplars stay on their host
            }
            if let SyncSource::Process { pid: own, .. } = self.source {
                if pid != own {
                    continue;
                }
            }
            files.entry(pid).or_default().push((path, kind));
        }
        Some(files)
    }

    /// Update every process's desired values from the files.
    fn read_files(&mut self) {
        let Some(first) = self.list_files() else {
            return;
        };
        // A process found dead is folded once its values are sent, and never read again: its
        // files must all be in the listing its values are read from. A listing taken before the
        // liveness check can miss a file the process created after it and before it exited, so
        // the dead are found first and the directory is listed again after that (unless every
        // dead one was folded already: their files wait for compaction and are not read). A
        // process that first appears in the second listing counts as live this time (it is
        // folded next time).
        let dead_before: HashSet<u32> = match &self.source {
            SyncSource::Dir { liveness, .. } => first
                .keys()
                .copied()
                .filter(|&pid| !liveness.is_live(pid))
                .collect(),
            SyncSource::Process { .. } => HashSet::new(),
        };
        let files = if dead_before.iter().all(|pid| self.done.contains_key(pid)) {
            first
        } else {
            match self.list_files() {
                Some(f) => f,
                None => return,
            }
        };
        self.done.retain(|pid, _| files.contains_key(pid));
        // Processes whose files are gone are dead (their last values were read before).
        for (pid, p) in &mut self.procs {
            if !files.contains_key(pid) {
                p.dead = true;
            }
        }
        let mut buf = Vec::new();
        for (pid, paths) in files {
            let live = !dead_before.contains(&pid);
            let start = if live { start_time(pid) } else { None };
            if let Some(&folded_start) = self.done.get(&pid) {
                // Already folded: only a new process that reuses the pid counts again.
                if !(live && start.is_some_and(|s| s != folded_start)) {
                    continue;
                }
                self.done.remove(&pid);
            }
            if let (Some(p), Some(s)) = (self.procs.get_mut(&pid), start) {
                if p.id.start() != s && !p.dead {
                    tracing::debug!(pid, "pid reused by a new process; folding the old one");
                    p.dead = true;
                    // The old process keeps its last values; the new one gets its own entry
                    // once the old one is folded.
                    continue;
                }
            }
            let host = &self.config.host_id;
            let proc = self.procs.entry(pid).or_insert_with(|| Proc {
                id: ProcessId::new(host, pid, start.unwrap_or(0)),
                desired: Values::new(),
                sent: Values::new(),
                base: Values::new(),
                dead: false,
                beat_at: None,
            });
            if proc.dead && live {
                continue; // an old process of a reused pid waiting to be folded
            }
            for (path, kind) in paths {
                match dbfile::read_used(&path, &mut buf) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot read metrics file; keeping its last values");
                        continue;
                    }
                }
                match dbfile::parse(&buf) {
                    Ok(entries) => {
                        let map = proc.desired.entry(kind).or_default();
                        for e in entries {
                            match map.get_mut(e.key) {
                                Some(v) => *v = (e.value, e.timestamp),
                                None => {
                                    map.insert(e.key.to_owned(), (e.value, e.timestamp));
                                }
                            }
                        }
                    }
                    Err(why) => {
                        tracing::warn!(file = %path.display(), %why, "skipping corrupt metrics file; keeping its last values");
                    }
                }
            }
            if !live {
                proc.dead = true;
            }
        }
    }

    /// One write script for every process, then folds of the dead, then (when due) a sweep.
    async fn write(&mut self) -> Result<FlushReport, RedisError> {
        // One connection kept across intervals (no recycle PING per sync); a new one after an
        // error.
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.pool.get().await?,
        };
        let r = self.write_with(&mut conn).await;
        if r.is_ok() {
            self.conn = Some(conn);
        } else {
            conn.discard();
        }
        r
    }

    async fn write_with(&mut self, conn: &mut Conn) -> Result<FlushReport, RedisError> {
        let mut report = FlushReport::default();
        for attempt in 0..2 {
            let mut inv = lua::write().prepare_invoke();
            inv.key(self.keys.heartbeat())
                .key(self.keys.folded())
                .arg(self.keys.prefix());
            let mut pending: Vec<u32> = Vec::new();
            let mut values = 0;
            // An unchanged process is written only to keep its heartbeat well inside the live
            // window (so `live*` gauges stay), not every interval: no Redis command for an idle
            // process most of the time.
            let beat_every = self.config.live_window / 3;
            let now = Instant::now();
            for (&pid, p) in &self.procs {
                let changes = changes(p);
                let beat_due = p
                    .beat_at
                    .is_none_or(|at| now.duration_since(at) >= beat_every);
                if changes.is_empty() && (p.dead || !beat_due) {
                    continue; // nothing new: only waiting to be folded, or heartbeat still fresh
                }
                pending.push(pid);
                inv.arg(p.id.to_string())
                    .arg(if p.sent.is_empty() { "0" } else { "1" })
                    .arg(changes.len());
                values += changes.len();
                for (field, v) in changes {
                    inv.arg(field).arg(v);
                }
            }
            if pending.is_empty() {
                break;
            }
            report.commands += 1;
            let out: Vec<String> = inv.invoke_async(&mut **conn).await?;
            let mut statuses: HashMap<String, String> = HashMap::new();
            for pair in out.chunks(2) {
                if let [m, s] = pair {
                    statuses.insert(m.clone(), s.clone());
                }
            }
            report.processes = pending.len();
            report.values += values;
            let mut again = false;
            for pid in pending {
                let Some(p) = self.procs.get_mut(&pid) else {
                    continue;
                };
                match statuses.get(&p.id.to_string()).map(String::as_str) {
                    Some("folded") => {
                        tracing::warn!(process = %p.id, "this process was folded as stale by another sync or exporter (heartbeat older than the TTL); re-registering it with only what it gained since");
                        p.id = p.id.next_epoch();
                        p.base = std::mem::take(&mut p.sent);
                        again = true;
                    }
                    Some("missing") => {
                        tracing::info!(process = %p.id, "Redis lost this process's values (restarted empty?); sending them all again");
                        p.sent.clear();
                        again = true;
                    }
                    _ => {
                        p.sent = p.desired.clone();
                        p.beat_at = Some(now);
                    }
                }
            }
            if !again || attempt == 1 {
                break;
            }
        }
        // Fold the dead whose last values Redis has.
        let dead: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.dead && changes(p).is_empty())
            .map(|(&pid, _)| pid)
            .collect();
        for pid in dead {
            let Some(p) = self.procs.get(&pid) else {
                continue;
            };
            report.commands += 1;
            let _: i64 = lua::fold()
                .key(self.keys.heartbeat())
                .arg(self.keys.prefix())
                .arg(p.id.to_string())
                .invoke_async(&mut **conn)
                .await?;
            tracing::debug!(process = %p.id, "folded a dead process into the Redis archive");
            let start = p.id.start();
            self.procs.remove(&pid);
            self.done.insert(pid, start);
            report.folded += 1;
        }
        if let Some(ttl) = self.config.ttl {
            if Instant::now() >= self.next_sweep {
                self.next_sweep = Instant::now()
                    + (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
                report.commands += 1;
                report.swept = sweep(conn, &self.keys, ttl).await?.len();
            }
        }
        Ok(report)
    }
}

/// The `kind` label of `gpe_redis_sync_failures_total` for `e`.
fn failure_kind(e: &RedisError) -> &'static str {
    match e {
        RedisError::Timeout(_) => "timeout",
        RedisError::Connection(_) | RedisError::Pool(_) => "connection",
        RedisError::Unavailable(e) if e.is_io_error() || e.is_connection_refusal() => "connection",
        RedisError::Unavailable(_) => "script",
        _ => "other",
    }
}

/// Fold processes of any host whose heartbeat is older than `ttl`, if no one else is sweeping.
pub(crate) async fn sweep(
    conn: &mut Conn,
    keys: &Keys,
    ttl: Duration,
) -> Result<Vec<String>, RedisError> {
    let lock_ms = u64::try_from((ttl / 4).as_millis())
        .unwrap_or(u64::MAX)
        .max(1000);
    let token = format!("{}:{}", std::process::id(), now_nanos());
    let got: Option<String> = redis::cmd("SET")
        .arg(keys.sweep_lock())
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(lock_ms)
        .query_async(&mut **conn)
        .await?;
    if got.is_none() {
        return Ok(Vec::new());
    }
    let swept: Vec<String> = lua::sweep()
        .key(keys.heartbeat())
        .key(keys.folded())
        .arg(keys.prefix())
        .arg(ttl.as_secs_f64())
        .arg(100)
        .invoke_async(&mut **conn)
        .await?;
    for m in &swept {
        tracing::info!(process = %m, "folded a process whose heartbeat is older than the TTL");
    }
    Ok(swept)
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The values to send, as `(field, value)` pairs of the process hash (`{kind}\t{series key}`):
/// changed since the last acknowledged write, minus the stale-fold base.
fn changes(p: &Proc) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (kind, map) in &p.desired {
        let sent = p.sent.get(kind);
        let base = p.base.get(kind);
        let mut name = None;
        for (k, &(v, ts)) in map {
            let same = sent.and_then(|s| s.get(k)).is_some_and(|&(sv, sts)| {
                sv.to_bits() == v.to_bits() && sts.to_bits() == ts.to_bits()
            });
            if same {
                continue;
            }
            let b = if keys::additive(*kind) {
                base.and_then(|b| b.get(k)).map_or(0.0, |x| x.0)
            } else {
                0.0
            };
            let name: &String = name.get_or_insert_with(|| kind.prefix());
            out.push((
                keys::field(name, k),
                keys::fmt_value(*kind, keys::minus(*kind, v, b), ts),
            ));
        }
    }
    out
}

/// The start time of `pid` in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    crate::worker::procfs::stat(pid).map(|s| s.start_ticks)
}

#[derive(Debug)]
enum Cmd {
    Flush(std::sync::mpsc::SyncSender<Result<FlushReport, RedisError>>),
    Shutdown(std::sync::mpsc::SyncSender<Result<FlushReport, RedisError>>),
}

/// A running [`RedisSync`]. Dropping it stops the sync after a final flush, like
/// [`SyncHandle::shutdown`].
#[derive(Debug)]
pub struct SyncHandle {
    tx: Option<mpsc::UnboundedSender<Cmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
    wait: Duration,
}

impl SyncHandle {
    /// Read every file now and write to Redis, waiting for the result (at most the connect
    /// timeout plus three response timeouts). The master calls this after reaping a worker and
    /// before compaction removes its files, so the worker's last values reach Redis.
    ///
    /// The files are read even when Redis is down, so the values are kept and sent on recovery.
    ///
    /// # Errors
    /// [`RedisError::Unavailable`], [`RedisError::Connection`], [`RedisError::Timeout`] or
    /// [`RedisError::Backoff`] when Redis is down (or in a backoff) and
    /// [`RedisError::Thread`] when the sync thread has stopped.
    pub fn flush_now(&self) -> Result<FlushReport, RedisError> {
        self.request(Cmd::Flush)
    }

    fn request(
        &self,
        make: impl FnOnce(std::sync::mpsc::SyncSender<Result<FlushReport, RedisError>>) -> Cmd,
    ) -> Result<FlushReport, RedisError> {
        let (reply, wait) = std::sync::mpsc::sync_channel(1);
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(make(reply)).ok())
            .ok_or(RedisError::Thread("the sync thread has stopped"))?;
        wait.recv_timeout(self.wait * 2)
            .map_err(|_| RedisError::Thread("the sync thread did not answer in time"))?
    }

    /// Stop the sync after a final flush (attempted even during an outage) and wait for it.
    ///
    /// # Errors
    /// As [`SyncHandle::flush_now`], for the final flush.
    pub fn shutdown(mut self) -> Result<FlushReport, RedisError> {
        let r = self.request(Cmd::Shutdown);
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        r
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            drop(tx); // the thread does a final flush when the channel closes
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time() {
        let s = start_time(std::process::id()).unwrap();
        assert!(s > 0);
        assert_eq!(start_time(u32::MAX), None);
    }
}
