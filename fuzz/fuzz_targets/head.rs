//! Fuzzes the direct path's request-head parser (`crates/hub/src/stream.rs`, through the hub's
//! `fuzzing` feature) with untrusted bytes: it must never panic, and must decide the same way
//! however the head arrives in pieces (the accept loop parses again after every read, so each
//! prefix of the input is parsed too). A head it would stream as a subscription must be one
//! that hyper's own rules accept (HTTP/1.1 with one Host or HTTP/1.0 with at most one, no
//! body), so that both paths refuse the same requests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let whole = herald_hub::fuzzing::head(input);
    // What the accept loop sees: every prefix, until one is complete.
    let mut first_complete = None;
    for end in (1..=input.len()).step_by(7) {
        if let Some(decision) = herald_hub::fuzzing::head(&input[..end]) {
            first_complete = Some((end, decision));
            break;
        }
    }
    if let Some((end, decision)) = first_complete
        && end == input.len()
    {
        assert_eq!(Some(decision), whole);
    }
    if whole == Some(true) {
        let text = String::from_utf8_lossy(input).to_ascii_lowercase();
        // Empty lines before the request line are skipped (RFC 9112 section 2.2, as httparse
        // does); the head ends at the next empty line (LF as well as CRLF).
        let head = text
            .split("\n")
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .skip_while(|line| line.is_empty())
            .take_while(|line| !line.is_empty())
            .collect::<Vec<_>>();
        let count = |name: &str| head.iter().skip(1).filter(|l| l.starts_with(name)).count();
        let http_1_1 = head[0].ends_with(" http/1.1");
        assert!(http_1_1 || head[0].ends_with(" http/1.0"), "{:?}", head[0]);
        if http_1_1 {
            assert_eq!(
                count("host:"),
                1,
                "a streamed HTTP/1.1 subscription has exactly one Host header"
            );
        } else {
            assert!(count("host:") <= 1, "a streamed subscription has one Host at most");
        }
        assert_eq!(count("transfer-encoding:"), 0);
        assert!(count("content-length:") <= 1);
    }
});
