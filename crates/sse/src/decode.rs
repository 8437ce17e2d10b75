//! Incremental decoding of a `text/event-stream`, per the WHATWG HTML standard's "event stream
//! interpretation" (§9.2.6): chunks of any size go in, dispatched events come out.
//!
//! Line ends may be CR, LF or CRLF, and a CRLF may be split between two chunks, so a CR at the
//! end of a chunk is remembered and a following LF skipped. Lines are only ever cut at CR or LF
//! bytes, which never occur inside a multi-byte UTF-8 sequence, so decoding each line on its own
//! (invalid bytes -> U+FFFD) gives the same text as decoding the whole stream at once.

use std::collections::VecDeque;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A dispatched event, as `EventSource` hands it to a page (`MessageEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// The event type: the last `event:` value of the block, or `message`.
    pub event_type: String,
    /// The data lines of the block joined with `\n`.
    pub data: String,
    /// The last event id of the stream when this event was dispatched (ids persist across events).
    pub last_event_id: String,
}

/// Bounds on what a stream can make the decoder buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line (in bytes, without its line end) the decoder accepts.
    pub max_line: usize,
    /// Largest data of one event (in bytes) the decoder accepts.
    pub max_event: usize,
}

impl Default for Limits {
    /// 8 MiB for both: far above any sane event, far below what would hurt a process.
    fn default() -> Self {
        Limits {
            max_line: 8 << 20,
            max_event: 8 << 20,
        }
    }
}

/// The stream broke a [`Limits`] bound. The decoder has dropped the offending line or event and
/// should not be fed this stream further (call [`Decoder::reset`] before reusing it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A line went past [`Limits`]' line length without ending.
    #[error("line longer than the limit of {limit} bytes")]
    LineTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// An event's data went past [`Limits`]' event size.
    #[error("event data larger than the limit of {limit} bytes")]
    EventTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// The lines of an event stream, split as the standard says: a leading byte order mark
/// dropped, lines ended by CR, LF or CRLF (a CRLF may be split between two chunks), each at
/// most a bounded length. [`Decoder`] reads its fields from them; a server reading an event
/// stream with other rules (Herald's streaming publish, which refuses what the standard
/// would repair) can use them too.
#[derive(Debug)]
pub struct Lines {
    max_line: usize,
    /// Bytes of the current line that arrived in earlier chunks.
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF starting the next chunk belongs to that line end.
    after_cr: bool,
    /// Until false, the stream start is still being checked for a byte order mark.
    at_start: bool,
}

impl Lines {
    /// A splitter refusing lines longer than `max_line` bytes (without their line end).
    pub fn new(max_line: usize) -> Self {
        Lines {
            max_line,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
        }
    }

    /// Starts a new stream: a partial line is dropped, the BOM check starts over.
    pub fn reset(&mut self) {
        self.line.clear();
        self.after_cr = false;
        self.at_start = true;
    }

    /// Whether part of a line is held, waiting for its end.
    pub fn in_line(&self) -> bool {
        !self.line.is_empty()
    }

    /// Splits a chunk of the stream, calling `on_line` with each complete line (without its
    /// end), in order; an incomplete line is kept for the next chunk. Stops at the first
    /// error, the line limit's or `on_line`'s.
    pub fn feed<E: From<DecodeError>>(
        &mut self,
        mut chunk: &[u8],
        mut on_line: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.at_start {
            // The BOM may itself be split across chunks: hold back a prefix of it.
            let held = self.line.len();
            let take = chunk.len().min(BOM.len() - held);
            self.line.extend_from_slice(&chunk[..take]);
            if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
                return Ok(());
            }
            self.at_start = false;
            if self.line == BOM {
                self.line.clear();
                chunk = &chunk[take..];
            } else {
                // Not a BOM: replay the held bytes as ordinary input.
                self.line.truncate(held);
                if held > 0 {
                    let head = std::mem::take(&mut self.line);
                    self.feed_lines(&head, &mut on_line)?;
                }
            }
        }
        self.feed_lines(chunk, &mut on_line)
    }

    fn feed_lines<E: From<DecodeError>>(
        &mut self,
        mut chunk: &[u8],
        on_line: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = memchr::memchr2(b'\r', b'\n', chunk) {
            if self.line.is_empty() {
                self.check_line(end)?;
                on_line(&chunk[..end])?;
            } else {
                self.check_line(self.line.len() + end)?;
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[..end]);
                let result = on_line(&line);
                line.clear();
                self.line = line; // keep the allocation for the next long line
                result?;
            }
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            chunk = &chunk[next..];
        }
        if !chunk.is_empty() {
            self.check_line(self.line.len() + chunk.len())?;
            self.line.extend_from_slice(chunk);
        }
        Ok(())
    }

    fn check_line(&mut self, len: usize) -> Result<(), DecodeError> {
        if len > self.max_line {
            self.line.clear();
            return Err(DecodeError::LineTooLong {
                limit: self.max_line,
            });
        }
        Ok(())
    }
}

/// Splits a field line into its name and value, as the standard says: the value after the
/// first `:`, one leading space dropped; a line without `:` is a name with an empty value.
/// `None` for a comment (a line starting with `:`).
pub fn field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    match memchr::memchr(b':', line) {
        Some(0) => None,
        Some(i) => {
            let value = &line[i + 1..];
            Some((&line[..i], value.strip_prefix(b" ").unwrap_or(value)))
        }
        None => Some((line, &b""[..])),
    }
}

/// Incremental event-stream parser. See the module documentation for the rules it follows.
#[derive(Debug)]
pub struct Decoder {
    lines: Lines,
    fields: Fields,
}

/// What the fields of the stream so far have set.
#[derive(Debug)]
struct Fields {
    limits: Limits,
    data: String,
    event_type: String,
    last_event_id: String,
    retry: Option<u64>,
    ready: VecDeque<MessageEvent>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        Decoder::with_limits(Limits::default())
    }

    /// A decoder with the given bounds.
    pub fn with_limits(limits: Limits) -> Self {
        Decoder {
            lines: Lines::new(limits.max_line),
            fields: Fields {
                limits,
                data: String::new(),
                event_type: String::new(),
                last_event_id: String::new(),
                retry: None,
                ready: VecDeque::new(),
            },
        }
    }

    /// Starts a new stream, as on reconnection: partial lines and events are dropped, the BOM
    /// check starts over. The last event id and the reconnection time are kept, as the
    /// `EventSource` keeps them across connections.
    pub fn reset(&mut self) {
        self.lines.reset();
        self.fields.data.clear();
        self.fields.event_type.clear();
        self.fields.ready.clear();
    }

    /// The stream ended: an event without its closing blank line is dropped, as the standard says.
    /// Dispatched events not yet taken stay available.
    pub fn finish(&mut self) {
        let ready = std::mem::take(&mut self.fields.ready);
        self.reset();
        self.fields.ready = ready;
    }

    /// The last event id seen so far (what a reconnecting client sends as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &str {
        &self.fields.last_event_id
    }

    /// Sets the last event id, e.g. from a client's configuration before the first connection.
    pub fn set_last_event_id(&mut self, id: impl Into<String>) {
        self.fields.last_event_id = id.into();
    }

    /// The reconnection time in milliseconds from the latest valid `retry:` field, if any.
    pub fn retry(&self) -> Option<u64> {
        self.fields.retry
    }

    /// Takes the next dispatched event.
    pub fn next_event(&mut self) -> Option<MessageEvent> {
        self.fields.ready.pop_front()
    }

    /// Parses a chunk of the stream. Complete events become available from
    /// [`Decoder::next_event`]; incomplete lines are kept for the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        let fields = &mut self.fields;
        self.lines.feed(chunk, |line| fields.process_line(line))
    }
}

impl Fields {
    fn process_line(&mut self, line: &[u8]) -> Result<(), DecodeError> {
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        let Some((field, value)) = field(line) else {
            return Ok(()); // comment
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.limits.max_event {
                    self.data.clear();
                    self.event_type.clear();
                    return Err(DecodeError::EventTooLarge {
                        limit: self.limits.max_event,
                    });
                }
                push_utf8_lossy(&mut self.data, value);
                self.data.push('\n');
            }
            b"event" => {
                self.event_type.clear();
                push_utf8_lossy(&mut self.event_type, value);
            }
            b"id" if !value.contains(&0) => {
                self.last_event_id.clear();
                push_utf8_lossy(&mut self.last_event_id, value);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Saturate: an absurdly large value still means "wait very long".
                let ms = value.iter().fold(0u64, |n, d| {
                    n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                self.retry = Some(ms);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) {
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        self.data.pop(); // the LF after the last data line
        let event_type = if self.event_type.is_empty() {
            String::from("message")
        } else {
            std::mem::take(&mut self.event_type)
        };
        self.ready.push_back(MessageEvent {
            event_type,
            data: std::mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
        });
    }
}

fn push_utf8_lossy(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_limit_is_enforced_across_chunks() {
        let mut d = Decoder::with_limits(Limits {
            max_line: 8,
            max_event: 100,
        });
        d.feed(b"data: ab").unwrap();
        assert_eq!(d.feed(b"c"), Err(DecodeError::LineTooLong { limit: 8 }));
        let mut d = Decoder::with_limits(Limits {
            max_line: 8,
            max_event: 100,
        });
        assert_eq!(
            d.feed(b"data: abc\n"),
            Err(DecodeError::LineTooLong { limit: 8 })
        );
    }

    #[test]
    fn event_limit_counts_all_data_lines() {
        let mut d = Decoder::with_limits(Limits {
            max_line: 100,
            max_event: 10,
        });
        d.feed(b"data: abcd\n").unwrap();
        assert_eq!(
            d.feed(b"data: efghij\n"),
            Err(DecodeError::EventTooLarge { limit: 10 })
        );
    }

    #[test]
    fn unbounded_garbage_without_newline_is_refused() {
        let mut d = Decoder::with_limits(Limits {
            max_line: 1024,
            max_event: 1024,
        });
        let chunk = [b'x'; 100];
        let err = (0..100).find_map(|_| d.feed(&chunk).err());
        assert_eq!(err, Some(DecodeError::LineTooLong { limit: 1024 }));
        assert!(d.lines.line.capacity() < 4096);
    }

    #[test]
    fn finish_drops_partial_event_keeps_dispatched() {
        let mut d = Decoder::new();
        d.feed(b"data: a\n\ndata: b\n").unwrap();
        d.finish();
        assert_eq!(d.next_event().unwrap().data, "a");
        assert_eq!(d.next_event(), None);
        d.feed(b"\n").unwrap();
        assert_eq!(d.next_event(), None, "partial event was dropped at EOF");
    }

    #[test]
    fn reset_keeps_last_event_id_and_retry() {
        let mut d = Decoder::new();
        d.feed(b"id: 3\nretry: 10\ndata: a\n\ndata: partial\n")
            .unwrap();
        d.reset();
        assert_eq!(d.last_event_id(), "3");
        assert_eq!(d.retry(), Some(10));
        d.feed(b"\xEF\xBB\xBFdata: b\n\n").unwrap();
        let ev = d.next_event().unwrap();
        assert_eq!((ev.data.as_str(), ev.last_event_id.as_str()), ("b", "3"));
    }

    #[test]
    fn retry_overflow_saturates() {
        let mut d = Decoder::new();
        d.feed(b"retry: 99999999999999999999999\n").unwrap();
        assert_eq!(d.retry(), Some(u64::MAX));
    }
}
