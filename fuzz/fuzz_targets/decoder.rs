//! Fuzzes the SSE decoder with untrusted bytes, differentially: the first byte picks chunk
//! sizes, and decoding in chunks must give exactly what decoding the whole input gives. Small
//! limits make the bound checks reachable; they must error, never panic or over-buffer.
#![no_main]

use herald_sse::{Decoder, Limits, MessageEvent};
use libfuzzer_sys::fuzz_target;

fn decode<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<MessageEvent>, Option<u64>, bool) {
    let mut decoder = Decoder::with_limits(Limits {
        max_line: 256,
        max_event: 512,
    });
    let mut events = Vec::new();
    for chunk in chunks {
        if decoder.feed(chunk).is_err() {
            return (events, decoder.retry(), true);
        }
        while let Some(event) = decoder.next_event() {
            assert!(event.data.len() <= 512 * 3);
            events.push(event);
        }
    }
    decoder.finish();
    assert!(decoder.next_event().is_none());
    (events, decoder.retry(), false)
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(seed % 17) + 1;
    let whole = decode(std::iter::once(data));
    let chunked = decode(data.chunks(chunk));
    // A limit error can be detected at a different point depending on chunking, so only
    // error-free runs must agree exactly.
    if !whole.2 && !chunked.2 {
        assert_eq!(whole, chunked);
    }
});
