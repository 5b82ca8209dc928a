//! A process's resource use and start time, read from `/proc/{pid}/stat`: the one `/proc` reader
//! of the workspace (the worker's own sampler, the master's per-worker sampling and the Redis
//! sync's pid-reuse check all read through it, so memory means the same thing everywhere).
//!
//! ```
//! let me = gpe_core::worker::procfs::stat(std::process::id()).expect("Linux /proc");
//! assert!(me.rss_bytes > 0);
//! assert!(me.cpu_seconds >= 0.0);
//! assert!(gpe_core::worker::procfs::stat(u32::MAX).is_none()); // no such process
//! ```

use std::sync::OnceLock;

/// What `/proc/{pid}/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ProcStat {
    /// User + system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes (field 24, in pages; the `VmRSS` of `/proc/{pid}/status`).
    pub rss_bytes: u64,
    /// When the process started, in clock ticks since boot (field 22): with the pid, it tells a
    /// process from a later one that reused its pid.
    pub start_ticks: u64,
}

/// The current figures of process `pid`; `None` when it does not exist (or `/proc` is not
/// mounted).
pub fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (ticks, page) = units();
    parse(&text, ticks, page)
}

/// Clock ticks per second and the page size, asked of the system once.
fn units() -> (f64, u64) {
    static UNITS: OnceLock<(f64, u64)> = OnceLock::new();
    *UNITS.get_or_init(|| {
        let conf = |v| nix::unistd::sysconf(v).ok().flatten().filter(|n| *n > 0);
        let ticks = conf(nix::unistd::SysconfVar::CLK_TCK).unwrap_or(100) as f64;
        let page = conf(nix::unistd::SysconfVar::PAGE_SIZE).unwrap_or(4096) as u64;
        (ticks, page)
    })
}

fn parse(stat: &str, ticks_per_second: f64, page_size: u64) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may contain spaces and parentheses:
    // the fields after it start after the last `)`, at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3);
    let utime: f64 = field(14)?.parse().ok()?;
    let stime: f64 = field(15)?.parse().ok()?;
    let start_ticks: u64 = field(22)?.parse().ok()?;
    let rss_pages: u64 = field(24)?.parse().ok()?;
    Some(ProcStat {
        cpu_seconds: (utime + stime) / ticks_per_second,
        rss_bytes: rss_pages * page_size,
        start_ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_after_a_name_with_spaces_and_parentheses() {
        let line =
            "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1000 123456 30 0";
        let s = parse(line, 100.0, 4096).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.start_ticks, 1000);
        assert_eq!(s.rss_bytes, 30 * 4096);
        assert_eq!(parse("42 (x) S 1 2", 100.0, 4096), None);
    }

    #[test]
    fn reads_this_process() {
        let me = stat(std::process::id()).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(stat(u32::MAX).is_none());
    }
}
