//! The sssync demo: TodoMVC with many lists.
//!
//! | module | what |
//! |---|---|
//! | [`model`] | the shared types, the queries (`#[sync_query]`), the events (`#[sync_event]`, each also a server function) with their predictions, the rules |
//! | [`api`] | the pages' own reads: who is signed in, whom a list is shared with |
//! | [`app`] | the Leptos components: the HTML shell, the router, the list page |
//! | `auth` (server) | accounts: users, password hashes, sessions, sign-in forms, identity |
//! | `db` (server) | the pool (SQLite or PostgreSQL) and the migrations |
//! | `sync` (server) | the events' handlers (`#[sync_apply]`), the queries' SQL (`#[sync_sql]`), the sync server's start |
//! | `server` (server) | the axum server: configuration from the environment, routes |
//!
//! The server renders each list into the HTML (also for browsers without JavaScript); the browser
//! hydrates it and from then on the list is live (sssync): writes apply at once, reach the
//! server over the tab's WebSocket, and every other browser sees them.

// Leptos views are deeply nested types; the hydrate build needs more room than the default.
#![recursion_limit = "256"]

pub mod api;
pub mod app;
#[cfg(feature = "ssr")]
pub mod auth;
#[cfg(feature = "ssr")]
pub mod db;
pub mod model;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod sync;

/// The browser entry point: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
    // Progressive enhancement: until this class is set, the page shows the form controls that
    // work without JavaScript (see style/main.css); from now on the interactive ones.
    if let Some(root) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.document_element())
    {
        let _ = root.class_list().add_1("hydrated");
    }
}
