//! What Mercure 1.0 URL patterns cost to compile and to match, for patterns written to be
//! slow (nested and alternated repetition, many named groups, many wildcards) against 4 KB
//! topics they do not match. Matching is the `regex` crate's, linear in the topic's length.
//!
//! `cargo run --release -p herald-hub --example url_pattern_cost`

use herald_hub::topic::Selector;
use std::time::Instant;

fn main() {
    let base = url::Url::parse("https://hub.example/.well-known/mercure").unwrap();
    let long_a = format!("https://example.com/{}", "a".repeat(4000));
    let segments = format!("https://example.com/{}", "x/".repeat(2000));
    let pairs = format!("https://example.com/{}", "ab".repeat(2000));
    for (pattern, topic) in [
        ("https://example.com/(a*)*b", &long_a),
        ("https://example.com/(a|aa)*(a|aa)*(a|aa)*b", &long_a),
        (
            "https://example.com/:a/:b/:c/:d/:e/:f/:g/:h/:i/:j/z",
            &segments,
        ),
        ("https://example.com/*a*b*a*b*a*b*c", &pairs),
        // Found by the url_pattern fuzz target: wildcards, each a regex group.
        (&*format!("https://example.com/{}", "*".repeat(90)), &pairs),
        (&*format!("/{}x", "*".repeat(90)), &long_a),
    ] {
        let started = Instant::now();
        let selector = Selector::url_pattern(pattern, &base).expect("a valid pattern");
        let compile = started.elapsed();
        let rounds = 1000;
        let started = Instant::now();
        let hits: usize = (0..rounds)
            .map(|_| usize::from(selector.matches(topic)))
            .sum();
        println!(
            "{pattern} against a {} B topic: compile {compile:?}, match {:?} ({hits} matches)",
            topic.len(),
            started.elapsed() / rounds
        );
    }
}
