//! Property: any valid [`Event`] encodes into bytes that decode back to the same event, however
//! the bytes are chunked, and an invalid one is refused instead of being written.

use herald_sse::{Decoder, EncodeError, Event};
use proptest::prelude::*;

/// Text with the characters that matter to the format over-represented.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => any::<char>(),
            2 => prop::sample::select(vec!['\n', '\r', ':', ' ', '\0', '\u{FEFF}', 'a']),
        ],
        0..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn event() -> impl Strategy<Value = Event> {
    (
        prop::option::of(text()),
        prop::option::of(text()),
        text(),
        prop::option::of(any::<u64>()),
        prop::option::of(text()),
    )
        .prop_map(|(id, event, data, retry, comment)| Event {
            id,
            event,
            data,
            retry,
            comment,
        })
}

fn normalize_line_ends(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity(events in prop::collection::vec(event(), 1..5), split in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        let mut last_id = String::new();
        let mut last_retry = None;
        for ev in &events {
            match ev.encode() {
                Ok(b) => {
                    bytes.extend_from_slice(&b);
                    if let Some(id) = &ev.id {
                        last_id = id.clone();
                    }
                    last_retry = ev.retry.or(last_retry);
                    let ty = ev.event.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "message".into());
                    expected.push((ty, normalize_line_ends(&ev.data), last_id.clone()));
                }
                Err(err) => {
                    let bad_id = ev.id.as_deref().is_some_and(|id| id.contains(['\r', '\n', '\0']));
                    let bad_type = ev.event.as_deref().is_some_and(|t| t.contains(['\r', '\n']));
                    prop_assert!(bad_id || bad_type, "refused a valid event: {err}");
                    if bad_id {
                        prop_assert!(matches!(err, EncodeError::IdContainsLineBreak | EncodeError::IdContainsNul));
                    }
                }
            }
        }
        let at = split.index(bytes.len() + 1);
        let mut decoder = Decoder::new();
        decoder.feed(&bytes[..at]).unwrap();
        decoder.feed(&bytes[at..]).unwrap();
        let mut got = Vec::new();
        while let Some(m) = decoder.next_event() {
            got.push((m.event_type, m.data, m.last_event_id));
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(decoder.retry(), last_retry);
    }

    #[test]
    fn decoder_never_panics_and_respects_limits(input in prop::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
        let mut decoder = Decoder::with_limits(herald_sse::Limits { max_line: 64, max_event: 128 });
        let cut = cut.min(input.len());
        for chunk in [&input[..cut], &input[cut..]] {
            if decoder.feed(chunk).is_err() {
                decoder.reset();
            }
            while let Some(m) = decoder.next_event() {
                prop_assert!(m.data.len() <= 128 * 3); // U+FFFD may triple invalid bytes
            }
        }
    }
}
