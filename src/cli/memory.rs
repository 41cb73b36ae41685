//! The process's resident memory (Linux `/proc/self/status`), for the load logs, and handing
//! freed memory back to the system.

/// Peak resident memory so far (`VmHWM`), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    status_mb("VmHWM:")
}

/// Resident memory now (`VmRSS`), in MB.
pub fn rss_mb() -> Option<f64> {
    status_mb("VmRSS:")
}

fn status_mb(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e6)
}

/// Returns the heap's free pages to the system (glibc `malloc_trim`), once a large amount was
/// freed for good: `main` tells glibc to keep freed memory otherwise.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only releases free heap pages; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
