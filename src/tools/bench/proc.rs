//! What this process (or a child) used, read from /proc: CPU time and peak resident memory.

/// Start counting the peak resident set size anew (Linux; elsewhere it counts from the start),
/// after giving back to the system what the allocator keeps of memory already freed (an
/// earlier job's in the same process, or the generator's), so that the peak is this job's.
pub fn reset_peak_rss() {
    // SAFETY: `mi_collect` takes no pointers; with mimalloc not the global allocator it
    // collects an unused heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
    let _ = std::fs::write("/proc/self/clear_refs", b"5");
}

/// CPU time this process has used (user and system, every thread), seconds, from /proc (0
/// where unavailable).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces): utime is the
    // 12th, stime the 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size of this process in MiB, from /proc (0 where unavailable).
pub fn peak_rss_mib() -> f64 {
    peak_rss_mib_of("self").unwrap_or(0.0)
}

/// Peak resident set size of process `pid` (`self`: this one) in MiB, from /proc, while it
/// runs (`None` once it has exited, or where /proc is unavailable).
pub fn peak_rss_mib_of(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}
