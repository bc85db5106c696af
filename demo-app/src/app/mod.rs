//! The demo's components: the HTML shell, the routes and the TodoMVC list page.
//!
//! The list is a sync query (`use_sync_query(move || todos(…))`): rendered on the server,
//! hydrated without a second fetch, then live. Every write is an event's action
//! (`use_sync_event`) in a `<SyncForm>` (Leptos's `<ActionForm>` with the form's idempotency
//! key): without JavaScript the form posts to the event's server function; once
//! hydrated, its submit (or a checkbox's change) dispatches the event over the sync connection,
//! predicted at once. The controls that only a page without JavaScript needs (the toggles as
//! submit buttons, the edit link) are gone once the page is hydrated, so each control exists once.

use crate::model::Filter;
use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{SsrMode, path};
use sssync_leptos::SyncProvider;

mod account;
mod item;
mod list;
mod private;

use account::{AccountBar, AuthPage};
use list::ListPage;

/// The HTML document around the app (server only: the browser hydrates `<body>`).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                // No icon: without this line the browser asks for /favicon.ico (a 404 on every
                // load, in the console).
                <link rel="icon" href="data:," />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The app: `/` is the default list, `/lists/{id}` any list, each filter its own URL.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/app.css" />
        <Title text="sssync • TodoMVC" />
        // The tab's sync client (connection, stores) for everything below.
        <SyncProvider>
            <Router>
                <AccountBar />
                <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                    <Route
                        path=path!("/login")
                        view=|| view! { <AuthPage signup=false /> }
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=path!("/signup")
                        view=|| view! { <AuthPage signup=true /> }
                        ssr=SsrMode::Async
                    />
                    // Async: the whole page, data included, arrives as HTML (no JavaScript needed).
                    <Route
                        path=path!("/")
                        view=|| view! { <ListPage filter=Filter::All /> }
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=path!("/lists/:id")
                        view=|| view! { <ListPage filter=Filter::All /> }
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=path!("/lists/:id/active")
                        view=|| view! { <ListPage filter=Filter::Active /> }
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=path!("/lists/:id/completed")
                        view=|| view! { <ListPage filter=Filter::Completed /> }
                        ssr=SsrMode::Async
                    />
                </Routes>
            </Router>
        </SyncProvider>
    }
}

/// An error, for the user.
fn alert(message: String) -> impl IntoView {
    view! { <p class="alert" role="alert">{message}</p> }
}

/// What a reader who may not see a list is shown (the same as for a list that does not exist).
/// The server answers it with a 404, decided before the page renders
/// (`server::not_found_for_hidden_lists`).
fn not_found() -> impl IntoView {
    view! {
        <p class="alert not-found" role="alert">
            "This list does not exist, or you may not see it."
        </p>
    }
}

/// A list id as the footer shows it: its first 8 characters, after the private prefix (every
/// private list's id begins alike).
fn short(id: &str) -> String {
    let id = id.strip_prefix(crate::model::PRIVATE_PREFIX).unwrap_or(id);
    id.chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_short_list_id_is_its_own_part_not_the_private_prefix() {
        assert_eq!(super::short("private-8a937e6784560ab9"), "8a937e67");
        assert_eq!(super::short("default"), "default");
        assert_eq!(super::short("0b6e1c2a-5f7d"), "0b6e1c2a");
    }
}
