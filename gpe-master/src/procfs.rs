//! Resource use of a process, read from `/proc` (so idle workers are never stale).

/// RSS in bytes and CPU time (user + system) in seconds of `pid`.
pub(crate) fn sample(pid: u32) -> Option<(u64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state): utime is field 14, stime 15, rss 24.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()??
        .max(1) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()??
        .max(1) as u64;
    Some((rss_pages * page, (utime + stime) / ticks))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_our_own_process() {
        let (rss, cpu) = super::sample(std::process::id()).unwrap();
        assert!(rss > 0);
        assert!(cpu >= 0.0);
        assert!(super::sample(u32::MAX).is_none());
    }
}
