//! Fuzzes topic selectors: compiling one (exact, `*` or an RFC 6570 URI template compiled to a
//! regex) and matching a topic against it, with time and memory bounds.
//!
//! Input: `selector \0 topic` (without a `\0`, the topic is empty); both lossy UTF-8, as a
//! query string or a JWT claim could carry any text. Checks:
//! - nothing panics (built with `--debug-assertions`, the hub's `debug_assert!` that a
//!   template only fails on size, and overflow checks, are on);
//! - a selector that compiles keeps its text and matches it (a template matches its own text);
//! - the selector's length limit is the only reason a long selector is refused;
//! - compiling takes less than `HERALD_FUZZ_COMPILE_MS` milliseconds (default 1000), the two
//!   matches (topic, own text) less than `HERALD_FUZZ_MATCH_MS` (default 100: the hub matches
//!   every update against every subscriber's templates), and both together allocate at most
//!   `HERALD_FUZZ_SELECTOR_MB` MiB at their peak (default 64), counted by the allocator below,
//!   so a pathological template is a finding, not a slow run. Times are the thread's CPU time
//!   (not the wall clock, which a loaded machine stretches) in the instrumented build, several
//!   times slower than a release build.
//!   libFuzzer's `-rss_limit_mb` / `-malloc_limit_mb` bound the process too (fuzz/README.md).
#![no_main]

use herald_fuzz::bounds::{self, Counting, PEAK, cpu_time};
use herald_hub::topic::{MAX_SELECTOR_LEN, Selector, SelectorError};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::Ordering::Relaxed;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|input: &[u8]| {
    let (selector, topic) = match input.iter().position(|&b| b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let selector = String::from_utf8_lossy(selector);
    let topic = String::from_utf8_lossy(topic);

    let base = bounds::start_counting();
    let start = cpu_time();
    let parsed = Selector::parse(&selector);
    let compiled = cpu_time() - start;
    let start = cpu_time();
    let (matches_topic, matches_itself) = match &parsed {
        Ok(s) => (s.matches(&topic), s.matches(&selector)),
        Err(_) => (false, false),
    };
    let matched = cpu_time() - start;
    let peak = PEAK.load(Relaxed).saturating_sub(base);

    let what = || {
        format!(
            "a {}-byte selector and a {}-byte topic (compile {compiled:?}, match {matched:?}, \
             peak heap {} KiB)",
            selector.len(),
            topic.len(),
            peak >> 10
        )
    };
    bounds::assert_within(compiled, matched, peak, what);

    match parsed {
        Ok(s) => {
            assert!(selector.len() <= MAX_SELECTOR_LEN);
            assert_eq!(s.as_str(), selector);
            assert_eq!(s.to_string(), selector);
            assert!(matches_itself, "{selector:?} does not match its own text");
            if topic == selector {
                assert!(matches_topic);
            }
            match &s {
                Selector::Any => assert_eq!(selector, "*"),
                Selector::Exact(exact) => {
                    assert!(selector != "*");
                    // With a `{`, only a selector that is not a template at all is exact.
                    if selector.contains('{') {
                        assert!(
                            herald_hub::topic::Template::new(&selector)
                                .is_err_and(|e| e.is_syntax()),
                            "{selector:?} compiles as a template but was taken as exact"
                        );
                    }
                    assert_eq!(matches_topic, *exact == topic);
                }
                Selector::Template(t) => {
                    assert!(selector.contains('{'));
                    // Anchored at both ends: a template matches whole topics only. The selector
                    // has no NUL (the input is split at the first one) and no expression
                    // matches one, so a NUL before or after a matching topic must not match.
                    if t.is_match(&topic) {
                        assert!(
                            !t.is_match(&format!("{topic}\0")),
                            "not anchored at the end"
                        );
                        assert!(
                            !t.is_match(&format!("\0{topic}")),
                            "not anchored at the start"
                        );
                    }
                }
            }
        }
        Err(SelectorError::TooLong { len }) => {
            assert_eq!(len, selector.len());
            assert!(len > MAX_SELECTOR_LEN);
        }
        Err(err) => {
            assert!(selector.len() <= MAX_SELECTOR_LEN);
            assert!(selector.contains('{'), "{err}");
            assert!(
                !err.is_syntax(),
                "a syntax error is an exact selector, not an error: {err}"
            );
            // Every error message names the selector, so a client can find it.
            let _ = err.to_string();
        }
    }
});
