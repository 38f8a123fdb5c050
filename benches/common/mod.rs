//! What the benchmarks that drive `callflow serve` share.

/// The server's CPU ticks (utime + stime) and RSS in KB, from /proc.
pub fn proc_stats(pid: u32) -> (u64, u64) {
    let (user, system, rss) = proc_times(pid);
    (user + system, rss)
}

/// A process's user and system CPU ticks apart, and its RSS in KB: what
/// our own code costs shows in user time, which the kernel's share of a
/// packet (most of it, and noisy on a shared machine) does not blur.
#[allow(dead_code)] // not every benchmark splits them
pub fn proc_times(pid: u32) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let user = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let system = f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (user, system, rss)
}
