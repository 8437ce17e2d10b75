#![deny(missing_docs, unreachable_pub, missing_debug_implementations)]
#![forbid(unsafe_code)]
//! History backends shared by several hub nodes, so that they behave as one hub: a publish on
//! any node reaches subscribers on every node, and any node resumes any client from its
//! `Last-Event-ID`. The engine underneath is an existing distributed system (Redis Streams,
//! NATS JetStream); each backend implements the hub's [`History`](herald_hub::history::History)
//! trait, so the hub itself does not know it runs in a cluster.

mod nats;
mod redis;
mod retained;
mod tail;

use herald_hub::update::{NewUpdate, Update};
use std::sync::Arc;

/// The update stored at `position` as JSON. An entry that cannot be read (written by another
/// version or program) becomes a placeholder that matches no subscriber, so that positions stay
/// dense: skipping it would look like a gap, and every subscriber resuming across it would be
/// closed again and again.
pub(crate) fn decode(position: u64, json: &[u8]) -> Arc<Update> {
    let update = serde_json::from_slice::<NewUpdate>(json)
        .map_err(|e| e.to_string())
        .and_then(|u| u.into_update(position).map_err(|e| e.to_string()));
    match update {
        Ok(update) => Arc::new(update),
        Err(err) => {
            tracing::error!(position, %err, "an undecodable history entry is skipped");
            let placeholder = NewUpdate::placeholder(format!("herald:undecodable:{position}"));
            Arc::new(
                placeholder
                    .into_update(position)
                    .expect("a plain placeholder encodes"),
            )
        }
    }
}

pub use crate::nats::NatsHistory;
pub use crate::redis::RedisHistory;

/// Locks a mutex, also after a panic elsewhere poisoned it: what the backends guard stays
/// consistent between statements, so serving on beats stopping.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
