//! Gives freed heap memory back to the system, periodically.
//!
//! The hub's transient memory is bounded (bytes owed to subscribers by `--max-owed-bytes`, the
//! store's caches by `--store-memory`), but glibc's allocator keeps what was freed for reuse
//! instead of returning it. Measured in the one-hour soak (docs/benchmarks.md): when 500 slow
//! readers resumed from disk at once, RSS went from 93 to 176 MB and stayed there after they
//! had been served and closed; one `malloc_trim(0)` brought it to 133 MB, the rest being the
//! store's caches, now full (within `--store-memory`). So `herald serve` trims every
//! [`PERIOD`]: a walk over the allocator's free lists, well under a millisecond when little
//! is free, and otherwise paid only after a burst. Other allocators (musl) have no
//! `malloc_trim`; there this does nothing.

use std::time::Duration;

/// How often freed memory is given back.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Starts a thread that trims the heap every [`PERIOD`], for the life of the process.
pub fn start() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("herald-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(PERIOD);
                    let started = std::time::Instant::now();
                    // SAFETY: malloc_trim only walks and releases the allocator's free memory.
                    let released = unsafe { libc::malloc_trim(0) };
                    tracing::trace!(released, took = ?started.elapsed(), "malloc_trim");
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "cannot start the memory trimming thread");
        }
    }
}
