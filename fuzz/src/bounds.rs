//! Time and memory bounds of the selector targets: an allocator that counts live bytes and
//! their peak (a target installs it as its `#[global_allocator]`), the thread's CPU time, and
//! the limits from the environment (`HERALD_FUZZ_COMPILE_MS`, `HERALD_FUZZ_MATCH_MS`,
//! `HERALD_FUZZ_SELECTOR_MB`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// The system allocator, counting live bytes and their peak.
pub struct Counting;

pub static LIVE: AtomicUsize = AtomicUsize::new(0);
pub static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            if new_size >= layout.size() {
                let live =
                    LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
                PEAK.fetch_max(live, Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        q
    }
}

/// CPU time of this thread: unlike the wall clock, it does not count the time other processes
/// of a loaded machine take, so the bounds hold on a busy CI machine too.
pub fn cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The bounds: compile time, match time (both matches together), peak heap bytes.
pub struct Limits {
    pub compile: Duration,
    pub matching: Duration,
    pub bytes: usize,
}

pub fn limits() -> &'static Limits {
    static LIMITS: OnceLock<Limits> = OnceLock::new();
    LIMITS.get_or_init(|| {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        Limits {
            compile: Duration::from_millis(var("HERALD_FUZZ_COMPILE_MS", 1000)),
            matching: Duration::from_millis(var("HERALD_FUZZ_MATCH_MS", 100)),
            bytes: usize::try_from(var("HERALD_FUZZ_SELECTOR_MB", 64)).unwrap() << 20,
        }
    })
}

/// Starts counting a peak from now; returns the live bytes to subtract from [`PEAK`].
pub fn start_counting() -> usize {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    base
}

/// Asserts the bounds on one compile and its matches: `what` describes the input for the
/// message (it is only called when a bound is broken).
pub fn assert_within(
    compiled: Duration,
    matched: Duration,
    peak: usize,
    what: impl Fn() -> String,
) {
    let limits = limits();
    assert!(
        compiled < limits.compile,
        "compiling is too slow: {}",
        what()
    );
    assert!(
        matched < limits.matching,
        "matching is too slow: {}",
        what()
    );
    assert!(
        peak <= limits.bytes,
        "compiling and matching use too much memory: {}",
        what()
    );
}
