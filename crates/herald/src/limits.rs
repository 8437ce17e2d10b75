//! The process's own resource limits, which `herald serve` and the benches both raise: every
//! subscriber (and every bench connection) is a socket, and the default soft limit on open
//! files (often 1024) would cap them far below what the machine can hold.

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_max;
            }
        }
        limit.rlim_cur
    }
}
