//! The process's resident memory, for benchmarks that report it.

/// Resident set size of this process in bytes (Linux `/proc/self/status` `VmRSS`), if known.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Whether this process may use transparent huge pages (Linux `/proc/self/status`
/// `THP_enabled`, which `prctl(PR_SET_THP_DISABLE)` clears), if the kernel says.
pub fn transparent_huge_pages() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
    match line.split_whitespace().nth(1)? {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// CPU time this process has used (user + system), from `/proc/self/stat`.
pub fn cpu_time() -> Option<std::time::Duration> {
    cpu_time_from("/proc/self/stat")
}

/// CPU time another process (a server a benchmark started) has used, from
/// `/proc/<pid>/stat`.
pub fn process_cpu_time(pid: u32) -> Option<std::time::Duration> {
    cpu_time_from(&format!("/proc/{pid}/stat"))
}

fn cpu_time_from(path: &str) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some(std::time::Duration::from_millis(
        (utime + stime) * 1000 / ticks,
    ))
}
