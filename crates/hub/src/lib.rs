//! The Herald hub as a library: a Mercure-compatible Server-Sent Events hub.
//!
//! Not built yet: the hub arrives with the single-node hub issue. This crate exists now so the
//! workspace has its final shape; see ARCHITECTURE.md for the modules it will hold.
