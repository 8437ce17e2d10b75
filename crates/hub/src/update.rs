//! An update: what a publisher sent, the position the history store gave it, and its SSE bytes,
//! encoded once here and shared by every connection that receives it.

use bytes::Bytes;
use herald_sse::{EncodeError, Event};
use std::sync::atomic::{AtomicBool, Ordering};

/// An update as accepted from a publisher, before the history store has placed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewUpdate {
    /// Unique id; the hub makes `urn:uuid:...` when the publisher gives none.
    pub id: String,
    /// At least one topic; the first is the canonical one.
    pub topics: Vec<String>,
    /// The event's data, any text (several lines become several `data:` fields).
    pub data: String,
    /// Only subscribers authorized for one of the topics receive a private update.
    pub private: bool,
    /// The SSE `event:` type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// The SSE `retry:` value, in milliseconds.
    pub retry: Option<u64>,
    /// Kept as its topics' latest value for subscribers that ask for it (`retain=on`, a
    /// Herald extension; see `history::retained`). Left out of the stored JSON when false, so
    /// stores written before it read the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retain: bool,
}

impl NewUpdate {
    /// A public update with a fresh `urn:uuid:` id.
    pub fn new(topics: Vec<String>, data: impl Into<String>) -> Self {
        NewUpdate {
            id: new_id(),
            topics,
            data: data.into(),
            private: false,
            event_type: None,
            retry: None,
            retain: false,
        }
    }

    /// An update that stands in for a position whose real update is gone (lost, undecodable):
    /// no topic, so nobody receives it, yet it keeps positions dense and can be resumed from.
    pub fn placeholder(id: String) -> Self {
        NewUpdate {
            id,
            topics: Vec::new(),
            data: String::new(),
            private: true,
            event_type: None,
            retry: None,
            retain: false,
        }
    }

    /// The SSE event this update is sent as.
    pub fn event(&self) -> Event {
        Event {
            id: Some(self.id.clone()),
            event: self.event_type.clone(),
            data: self.data.clone(),
            retry: self.retry,
            comment: None,
        }
    }

    /// Checks that the update can be sent without changing the meaning of the stream.
    pub fn validate(&self) -> Result<(), EncodeError> {
        self.event().validate()
    }

    /// Encodes the update and fixes its position (given by the history store).
    pub fn into_update(self, position: u64) -> Result<Update, EncodeError> {
        let encoded = self.event().encode()?;
        Ok(Update {
            position,
            encoded,
            fields: self,
            superseded: AtomicBool::new(false),
        })
    }
}

/// For unit tests: the update at `position` on topic `t`, id `u{position}`, with `data_len`
/// bytes of data.
#[cfg(test)]
pub(crate) fn test_update(position: u64, data_len: usize) -> std::sync::Arc<Update> {
    let mut new = NewUpdate::new(vec!["t".into()], "x".repeat(data_len));
    new.id = format!("u{position}");
    std::sync::Arc::new(new.into_update(position).unwrap())
}

/// A fresh update id, in the form the reference hub uses.
pub fn new_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

/// An update the history store accepted: its position in the store's order and its SSE bytes.
#[derive(Debug)]
pub struct Update {
    /// Monotonic, gap-free within one store; never reused.
    pub position: u64,
    /// The `text/event-stream` bytes of this update, shared by every subscriber.
    pub encoded: Bytes,
    /// What the publisher sent (with the id the hub gave it, if it gave none).
    pub fields: NewUpdate,
    /// Set once a newer update of the same latest-value topic was dispatched (`--conflate`):
    /// a subscriber that has not yet taken this one skips it. A mark on the shared update
    /// makes that check one load per queued update, not a lookup per subscriber.
    superseded: AtomicBool,
}

impl Clone for Update {
    fn clone(&self) -> Self {
        Update {
            position: self.position,
            encoded: self.encoded.clone(),
            fields: self.fields.clone(),
            superseded: AtomicBool::new(self.is_superseded()),
        }
    }
}

/// The same update: the mark is what the hub learnt later, not part of it.
impl PartialEq for Update {
    fn eq(&self, other: &Self) -> bool {
        (self.position, &self.encoded, &self.fields)
            == (other.position, &other.encoded, &other.fields)
    }
}

impl Eq for Update {}

impl Update {
    /// Whether a newer update of the same latest-value topic was dispatched (see
    /// [`crate::conflate`]).
    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_superseded(&self) {
        self.superseded.store(true, Ordering::Relaxed);
    }

    /// The update's id (the SSE `id:`).
    pub fn id(&self) -> &str {
        &self.fields.id
    }

    /// Its topics.
    pub fn topics(&self) -> &[String] {
        &self.fields.topics
    }

    /// Whether only authorized subscribers receive it.
    pub fn private(&self) -> bool {
        self.fields.private
    }

    /// Its data.
    pub fn data(&self) -> &str {
        &self.fields.data
    }
}
