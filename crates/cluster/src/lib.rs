//! History backends shared by several hub nodes, so that they behave as one hub: a publish on
//! any node reaches subscribers on every node, and any node resumes any client from its
//! `Last-Event-ID`. The engine underneath is an existing distributed system (Redis Streams,
//! NATS JetStream); each backend implements the hub's [`History`](herald_hub::history::History)
//! trait, so the hub itself does not know it runs in a cluster.

pub mod nats;
pub mod redis;

pub use crate::nats::{NatsHistory, NatsOptions};
pub use crate::redis::{RedisHistory, RedisOptions};
