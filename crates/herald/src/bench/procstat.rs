//! What the bench reads about processes: the server's CPU time and memory from `/proc` (by PID,
//! so any server can be measured, nginx as well as herald), the bench's own CPU time, and its
//! file-descriptor limit.

use anyhow::Context;

/// CPU time used so far by the calling thread, in nanoseconds (user + system). The kernel's
/// `CLOCK_THREAD_CPUTIME_ID` is exact; `/proc/thread-self/schedstat` only moves on ticks.
pub fn thread_cpu_ns() -> anyhow::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    anyhow::ensure!(rc == 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// CPU time used so far by this whole process (all threads, user + system), in microseconds.
pub fn own_cpu_us() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// A reading of one or more server processes, summed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// utime + stime, in microseconds (the kernel counts in clock ticks, usually 10 ms).
    pub cpu_us: f64,
    /// Resident set size, bytes.
    pub rss: u64,
    /// Proportional set size, bytes (shared pages divided among their users).
    pub pss: u64,
}

/// Reads CPU time and memory of every PID and sums them.
pub fn sample(pids: &[u32]) -> anyhow::Result<Sample> {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = Sample::default();
    for &pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| {
            format!("reading /proc/{pid}/stat (is --server-pid {pid} running?)")
        })?;
        // The command name (field 2) may hold spaces; the fields after its ')' are plain.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("unexpected /proc/PID/stat format")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After ')': field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
        let ticks: f64 = fields
            .get(11..13)
            .context("short /proc/PID/stat")?
            .iter()
            .map(|f| f.parse::<f64>().unwrap_or(0.0))
            .sum();
        total.cpu_us += ticks / ticks_per_s * 1e6;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        total.rss += kib_field(&status, "VmRSS:") * 1024;
        // smaps_rollup exists since Linux 4.14; without it PSS is reported as 0.
        if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            total.pss += kib_field(&rollup, "Pss:") * 1024;
        }
    }
    Ok(total)
}

/// Busy and total jiffies of all CPUs, from /proc/stat.
pub fn machine_times() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    // idle and iowait are not busy.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The value of a `Name:   123 kB` line.
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let pid = std::process::id();
        let before = sample(&[pid]).unwrap();
        // Burn some CPU and memory so both readings must move.
        let mut v = vec![0u8; 32 << 20];
        for (i, b) in v.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x
                .wrapping_mul(31)
                .wrapping_add(i ^ (v[(i % 1000) as usize] as u64));
        }
        std::hint::black_box(x);
        let after = sample(&[pid]).unwrap();
        assert!(
            after.rss >= before.rss + (30 << 20),
            "{before:?} -> {after:?}"
        );
        assert!(after.pss > 0);
        assert!(after.cpu_us > before.cpu_us, "{before:?} -> {after:?}");
        drop(v);
    }

    #[test]
    fn missing_pid_is_an_error() {
        let err = sample(&[u32::MAX - 1]).unwrap_err();
        assert!(format!("{err:#}").contains("--server-pid"), "{err:#}");
    }
}
