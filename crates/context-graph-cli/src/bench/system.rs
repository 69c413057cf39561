//! What the operating system says about the benchmark process.

/// Peak resident set size of this process (`VmHWM` in /proc/self/status), in bytes; `None`
/// where /proc is unavailable (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Start a new peak: the kernel resets `VmHWM` to the current RSS when "5" is written to
/// /proc/self/clear_refs (Linux). Returns whether it did.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(super::peak_rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
