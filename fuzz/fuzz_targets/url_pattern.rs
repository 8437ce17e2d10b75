//! Fuzzes Mercure 1.0 URL patterns (`match_urlpattern`, and URL-pattern topics in access
//! tokens): compiling one (WHATWG URL Pattern, the `urlpattern` crate on the linear-time
//! `regex` engine, relative to the hub's URL) and matching a topic against it, with the
//! selector target's time and memory bounds (`herald_fuzz::bounds`).
//!
//! Input: `pattern \0 topic` (without a `\0`, the topic is empty); both lossy UTF-8. Checks:
//! - nothing panics;
//! - compiling takes less than `HERALD_FUZZ_COMPILE_MS`, matching the topic (relative and
//!   resolved) less than `HERALD_FUZZ_MATCH_MS`, both together at most
//!   `HERALD_FUZZ_SELECTOR_MB` MiB at their peak;
//! - a pattern that compiles keeps its text, `*` is every topic, and compiling it again gives
//!   the same shared template (interned per pattern and hub URL);
//! - the length limit is the only reason a long pattern is refused, and every other refusal
//!   is a URL pattern error;
//! - a topic that is a path matches exactly when the same path on the hub's origin does (topics
//!   resolve against the hub's URL, as patterns do; a fuzzer-found `/\x` names a host).
#![no_main]

use herald_fuzz::bounds::{self, Counting, PEAK, cpu_time};
use herald_hub::topic::{MAX_SELECTOR_LEN, Selector, SelectorError};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ORIGIN: &str = "https://hub.example";

fn base() -> &'static url::Url {
    static BASE: OnceLock<url::Url> = OnceLock::new();
    BASE.get_or_init(|| url::Url::parse(&format!("{ORIGIN}/.well-known/mercure")).unwrap())
}

fuzz_target!(|input: &[u8]| {
    let (pattern, topic) = match input.iter().position(|&b| b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let pattern = String::from_utf8_lossy(pattern);
    let topic = String::from_utf8_lossy(topic);
    // A path-absolute topic, and the same on the hub's origin. The URL parser drops tabs and
    // newlines, and takes `\` for `/` in an http(s) URL: a topic that starts `//` or `/\`
    // once they are gone names a host, not a path.
    let cleaned: String = topic
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let resolved = (cleaned.starts_with('/')
        && !matches!(cleaned.as_bytes().get(1), Some(b'/' | b'\\')))
    .then(|| format!("{ORIGIN}{topic}"));

    let start_bytes = bounds::start_counting();
    let start = cpu_time();
    let parsed = Selector::url_pattern(&pattern, base());
    let compiled = cpu_time() - start;
    let start = cpu_time();
    let (matches_topic, matches_resolved) = match &parsed {
        Ok(s) => (s.matches(&topic), resolved.as_deref().map(|r| s.matches(r))),
        Err(_) => (false, None),
    };
    let matched = cpu_time() - start;
    let peak = PEAK.load(Relaxed).saturating_sub(start_bytes);

    let what = || {
        format!(
            "a {}-byte pattern and a {}-byte topic (compile {compiled:?}, match {matched:?}, \
             peak heap {} KiB)",
            pattern.len(),
            topic.len(),
            peak >> 10
        )
    };
    bounds::assert_within(compiled, matched, peak, what);

    match parsed {
        Ok(s) => {
            assert!(pattern.len() <= MAX_SELECTOR_LEN);
            assert_eq!(s.as_str(), pattern);
            match &s {
                Selector::Any => {
                    assert_eq!(pattern, "*");
                    assert!(matches_topic);
                }
                Selector::Template(t) => {
                    let again = Selector::url_pattern(&pattern, base()).expect("it compiled once");
                    let again = again.as_template().expect("a pattern");
                    assert!(std::sync::Arc::ptr_eq(t, again), "not interned");
                }
                Selector::Exact(_) => panic!("a URL pattern is never an exact selector"),
            }
            if let Some(matches_resolved) = matches_resolved {
                assert_eq!(
                    matches_topic, matches_resolved,
                    "{topic:?} and {ORIGIN}{topic} differ for {pattern:?}"
                );
            }
        }
        Err(SelectorError::TooLong { len }) => {
            assert_eq!(len, pattern.len());
            assert!(len > MAX_SELECTOR_LEN);
        }
        Err(err) => {
            assert!(pattern.len() <= MAX_SELECTOR_LEN);
            assert!(
                matches!(
                    err,
                    SelectorError::UrlPattern { .. } | SelectorError::OverBudget { .. }
                ),
                "{err}"
            );
            let _ = err.to_string();
        }
    }
});
