//! The shared WHATWG parsing vectors (`tests/data/sse-parse.json`, a copy of
//! `shared/conformance/sse-parse.json`), each fed whole, one byte at a time, and split in two at
//! every position; byte cases with `split_at` also at exactly those positions.

use herald_sse::{Decoder, MessageEvent};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
    byte_cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    input: Option<String>,
    input_hex: Option<String>,
    #[serde(default)]
    split_at: Vec<usize>,
    events: Vec<Expected>,
    retry: Option<u64>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Expected {
    #[serde(rename = "type")]
    event_type: String,
    data: String,
    last_event_id: String,
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        match (&self.input, &self.input_hex) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(hex)) => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex input"))
                .collect(),
            _ => panic!("case {:?} needs exactly one of input, input_hex", self.name),
        }
    }
}

fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sse-parse.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read vectors"))
        .expect("parse vectors")
}

fn decode(chunks: &[&[u8]]) -> (Vec<Expected>, Option<u64>) {
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk).expect("within limits");
        while let Some(MessageEvent {
            event_type,
            data,
            last_event_id,
        }) = decoder.next_event()
        {
            events.push(Expected {
                event_type,
                data,
                last_event_id,
            });
        }
    }
    decoder.finish();
    assert!(
        decoder.next_event().is_none(),
        "finish dispatches nothing new"
    );
    (events, decoder.retry())
}

fn check(case: &Case, how: &str, chunks: &[&[u8]]) {
    let (events, retry) = decode(chunks);
    assert_eq!(events, case.events, "case {:?} fed {how}", case.name);
    assert_eq!(retry, case.retry, "retry of case {:?} fed {how}", case.name);
}

fn check_all_chunkings(case: &Case) {
    let input = case.bytes();
    check(case, "whole", &[&input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    check(case, "byte by byte", &bytes);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        check(case, &format!("split at {at}"), &[a, b]);
    }
    if !case.split_at.is_empty() {
        let mut chunks = Vec::new();
        let mut start = 0;
        for &at in &case.split_at {
            chunks.push(&input[start..at]);
            start = at;
        }
        chunks.push(&input[start..]);
        check(case, &format!("split at {:?}", case.split_at), &chunks);
    }
}

#[test]
fn text_cases_in_every_chunking() {
    let vectors = vectors();
    assert!(vectors.cases.len() >= 30, "the vector file was read whole");
    for case in &vectors.cases {
        check_all_chunkings(case);
    }
}

#[test]
fn byte_cases_in_every_chunking() {
    let vectors = vectors();
    assert!(!vectors.byte_cases.is_empty());
    for case in &vectors.byte_cases {
        check_all_chunkings(case);
    }
}

#[test]
fn the_copy_matches_the_shared_file_when_present() {
    // In the project's own checkout `../shared` sits beside the repository; a user's clone has
    // no such folder, and then there is nothing to compare.
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/sse-parse.json"
    );
    let copy = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sse-parse.json");
    if let Ok(shared) = std::fs::read(shared) {
        assert!(
            shared == std::fs::read(copy).unwrap(),
            "crates/sse/tests/data/sse-parse.json is stale: copy shared/conformance/sse-parse.json over it"
        );
    }
}
