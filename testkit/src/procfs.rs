//! One reader of `/proc`: a process's CPU time (`utime + stime` of
//! `/proc/<pid>/stat`) and memory (`VmRSS`, `VmHWM` of `/proc/<pid>/status`),
//! and the machine's busy and stolen CPU time (`/proc/stat`).

use std::fs;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
pub const CLK_TCK: f64 = 100.0;

/// CPU seconds of `pid` (all threads) and its state letter.
pub fn cpu_seconds(pid: u32) -> Option<(f64, char)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime and stime are fields 14 and 15.
    let state = f.first()?.chars().next()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(((utime + stime) as f64 / CLK_TCK, state))
}

/// `(VmRSS, VmHWM)` of `pid` in MiB.
pub fn memory_mb(pid: u32) -> Option<(f64, f64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((kb("VmRSS:")? / 1024.0, kb("VmHWM:")? / 1024.0))
}

/// CPU seconds the whole machine spent busy (user, nice, system, irq,
/// softirq of the `cpu` line of `/proc/stat`) and stolen by the hypervisor
/// (steal).
pub fn machine_busy_seconds() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .unwrap_or_default();
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| f.get(i)).sum();
    let steal = f.get(7).copied().unwrap_or(0);
    (busy as f64 / CLK_TCK, steal as f64 / CLK_TCK)
}

/// CPU seconds of this process.
pub fn self_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).map_or(0.0, |(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_and_memory_are_readable() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        let (rss, hwm) = memory_mb(pid).unwrap();
        assert!(rss > 0.0 && hwm >= rss);
    }
}
