//! Encoding events into `text/event-stream` bytes.
//!
//! The one property that matters here is that no input can end an event early or start a
//! forged one: a CR or LF inside `id` or `event` would let a publisher smuggle in fields (or a
//! whole event) that subscribers then trust, so such values are refused, not escaped. Data and
//! comments are free text: every line of them becomes its own field line, which is exactly how
//! the decoder joins them back.

use bytes::{BufMut, Bytes, BytesMut};

/// One event as a server sends it.
///
/// `data` is always written, even when empty, so every encoded event dispatches exactly one
/// `message` on the client (a block without a `data` line dispatches nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `id:` field; becomes the client's last event id. No CR, LF or NUL.
    pub id: Option<String>,
    /// The `event:` field (the event type); `None` means the default type, `message`. No CR or LF.
    pub event: Option<String>,
    /// The payload; may contain any line endings (`\n`, `\r\n`, `\r`), each starts a new `data:` line.
    pub data: String,
    /// The `retry:` field: the client's reconnection time in milliseconds.
    pub retry: Option<u64>,
    /// A comment written before the fields; clients ignore it. May span several lines.
    pub comment: Option<String>,
}

/// A value that cannot be written without changing the meaning of the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A CR or LF in the id would end the `id:` line and let the rest be read as new fields.
    #[error("event id must not contain a line break (CR or LF)")]
    IdContainsLineBreak,
    /// Clients ignore an id containing NUL, so it would silently not be the last event id.
    #[error("event id must not contain NUL")]
    IdContainsNul,
    /// A CR or LF in the event type would end the `event:` line early.
    #[error("event type must not contain a line break (CR or LF)")]
    EventTypeContainsLineBreak,
}

impl Event {
    /// An event of the default type carrying `data`.
    pub fn new(data: impl Into<String>) -> Self {
        Event {
            data: data.into(),
            ..Event::default()
        }
    }

    /// Sets the id (checked when encoding).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the event type (checked when encoding).
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(event.into());
        self
    }

    /// Sets the reconnection time, in milliseconds.
    pub fn retry(mut self, retry_ms: u64) -> Self {
        self.retry = Some(retry_ms);
        self
    }

    /// Sets a comment written before the fields.
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// Checks that every field can be written without changing the stream's meaning.
    pub fn validate(&self) -> Result<(), EncodeError> {
        if let Some(id) = &self.id {
            if has_line_break(id) {
                return Err(EncodeError::IdContainsLineBreak);
            }
            if id.as_bytes().contains(&0) {
                return Err(EncodeError::IdContainsNul);
            }
        }
        if let Some(event) = &self.event
            && has_line_break(event)
        {
            return Err(EncodeError::EventTypeContainsLineBreak);
        }
        Ok(())
    }

    /// The exact number of bytes [`Event::encode_into`] writes.
    pub fn encoded_len(&self) -> usize {
        let mut len = 1; // the blank line that dispatches
        if let Some(comment) = &self.comment {
            len += lines_len(comment, 1);
        }
        if let Some(event) = &self.event {
            len += "event: \n".len() + event.len();
        }
        if let Some(id) = &self.id {
            len += "id: \n".len() + id.len();
        }
        if let Some(retry) = self.retry {
            len += "retry: \n".len() + decimal_len(retry);
        }
        len + lines_len(&self.data, "data:".len())
    }

    /// Encodes the event into fresh bytes. Nothing is produced if a field is invalid.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut buf)?;
        Ok(buf.freeze())
    }

    /// Appends the encoded event to `buf`. Validates first, so on error `buf` is untouched.
    pub fn encode_into(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        self.validate()?;
        buf.reserve(self.encoded_len());
        if let Some(comment) = &self.comment {
            put_lines(buf, b":", comment);
        }
        if let Some(event) = &self.event {
            put_field(buf, b"event: ", event.as_bytes());
        }
        if let Some(id) = &self.id {
            put_field(buf, b"id: ", id.as_bytes());
        }
        if let Some(retry) = self.retry {
            let mut digits = [0u8; 20];
            put_field(buf, b"retry: ", format_decimal(retry, &mut digits));
        }
        put_lines(buf, b"data:", &self.data);
        buf.put_u8(b'\n');
        Ok(())
    }
}

/// Encodes a comment (one `:` line per line of `text`), as used for heartbeats and to flush
/// response headers. It dispatches nothing and may be written between any two events.
pub fn comment(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(lines_len(text, 1));
    put_lines(&mut buf, b":", text);
    buf.freeze()
}

fn has_line_break(s: &str) -> bool {
    memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_some()
}

fn put_field(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    buf.put_slice(value);
    buf.put_u8(b'\n');
}

/// Writes `prefix` + one line of `text` per line, splitting at `\r\n`, `\r` and `\n`.
/// A space separates prefix and a non-empty line, because the decoder strips exactly one
/// leading space: a line that itself starts with a space keeps it.
fn put_lines(buf: &mut BytesMut, prefix: &[u8], text: &str) {
    for line in Lines::new(text.as_bytes()) {
        buf.put_slice(prefix);
        if !line.is_empty() {
            buf.put_u8(b' ');
            buf.put_slice(line);
        }
        buf.put_u8(b'\n');
    }
}

fn lines_len(text: &str, prefix_len: usize) -> usize {
    Lines::new(text.as_bytes())
        .map(|line| prefix_len + usize::from(!line.is_empty()) + line.len() + 1)
        .sum()
}

/// The lines of a text split at `\r\n`, `\r` or `\n`; an empty text is one empty line.
struct Lines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a [u8]) -> Self {
        Lines { rest: Some(text) }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match memchr::memchr2(b'\r', b'\n', rest) {
            None => {
                self.rest = None;
                Some(rest)
            }
            Some(i) => {
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                self.rest = Some(&rest[i + skip..]);
                Some(&rest[..i])
            }
        }
    }
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

fn format_decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(event: &Event) -> String {
        let bytes = event.encode().unwrap();
        assert_eq!(bytes.len(), event.encoded_len());
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn simple_event() {
        assert_eq!(text(&Event::new("hello")), "data: hello\n\n");
    }

    #[test]
    fn all_fields_in_order() {
        let ev = Event::new("x")
            .id("7")
            .event("add")
            .retry(1500)
            .comment("hi");
        assert_eq!(
            text(&ev),
            ": hi\nevent: add\nid: 7\nretry: 1500\ndata: x\n\n"
        );
    }

    #[test]
    fn data_is_split_at_every_kind_of_line_break() {
        let ev = Event::new("a\nb\r\nc\rd");
        assert_eq!(text(&ev), "data: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn empty_and_trailing_lines_are_kept() {
        assert_eq!(text(&Event::new("")), "data:\n\n");
        assert_eq!(text(&Event::new("a\n")), "data: a\ndata:\n\n");
        assert_eq!(text(&Event::new("\n\n")), "data:\ndata:\ndata:\n\n");
    }

    #[test]
    fn leading_space_of_a_line_survives() {
        assert_eq!(text(&Event::new(" x")), "data:  x\n\n");
    }

    #[test]
    fn a_blank_line_in_data_cannot_end_the_event() {
        // Without splitting, "\n\nid: forged" would dispatch early and set a forged id.
        let ev = Event::new("a\n\nid: forged\ndata: evil");
        assert_eq!(
            text(&ev),
            "data: a\ndata:\ndata: id: forged\ndata: data: evil\n\n"
        );
    }

    #[test]
    fn line_breaks_in_id_and_type_are_refused() {
        let mut buf = BytesMut::from(&b"keep"[..]);
        for (ev, err) in [
            (Event::new("x").id("1\n"), EncodeError::IdContainsLineBreak),
            (Event::new("x").id("1\r2"), EncodeError::IdContainsLineBreak),
            (Event::new("x").id("1\u{0}2"), EncodeError::IdContainsNul),
            (
                Event::new("x").event("a\nb"),
                EncodeError::EventTypeContainsLineBreak,
            ),
            (
                Event::new("x").event("a\r"),
                EncodeError::EventTypeContainsLineBreak,
            ),
        ] {
            assert_eq!(ev.encode_into(&mut buf), Err(err.clone()));
            assert_eq!(ev.encode(), Err(err));
        }
        assert_eq!(&buf[..], b"keep", "nothing written on error");
    }

    #[test]
    fn multi_line_comment() {
        assert_eq!(&comment("a\nb")[..], b": a\n: b\n");
        assert_eq!(&comment("")[..], b":\n");
    }

    #[test]
    fn retry_digits() {
        for n in [0, 9, 10, 99, 100, 12345, u64::MAX] {
            let ev = Event::new("").retry(n);
            assert_eq!(text(&ev), format!("retry: {n}\ndata:\n\n"));
        }
    }
}
