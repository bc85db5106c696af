//! # sssync-leptos
//!
//! Leptos bindings for sssync. This crate will hold `use_sync_query`, the typed event actions,
//! the provider component that owns the tab's connection and stores, and the IndexedDB cache;
//! its features are the Leptos roles `ssr`, `hydrate` and `csr`.
//!
//! Today it re-exports the engine's core types; the bindings are tracked by the project's
//! "sssync-leptos" issue and described in `docs/` as they land.

pub use sssync_core::QueryKey;
