//! The connection as the UI shows it: [`use_sync_status`] and [`use_hydrated`].

use leptos::prelude::*;
use sssync_core::Rejection;

/// The connection state for a status indicator.
#[derive(Clone, Copy)]
pub struct SyncStatus {
    /// Connected and welcomed by the server.
    pub online: Signal<bool>,
    /// Events not yet confirmed by the server.
    pub pending: Signal<usize>,
    /// The last event the server refused, and why.
    pub last_rejection: Signal<Option<Rejection>>,
    /// A sentence for the user about a fault the tab is handling: the server cannot save for
    /// now (writes are kept and sent again), or its data changed history (a restored backup:
    /// the tab reloaded its data and sent its unsaved writes again).
    pub notice: Signal<Option<String>>,
}

/// Whether the page is hydrated: `false` during the server render and the hydration render,
/// `true` from then on (in the browser only). Render the controls only a page without
/// JavaScript needs (a submit button standing in for a checkbox) while it is `false`, so that
/// each control exists once on a hydrated page.
///
/// ```
/// use leptos::prelude::*;
/// use sssync_leptos::use_hydrated;
///
/// #[component]
/// fn Toggle(done: bool) -> impl IntoView {
///     let js = use_hydrated();
///     view! {
///         <input type="checkbox" class="js-only" prop:checked=done />
///         <Show when=move || !js.get()>
///             <button type="submit" role="checkbox" aria-checked=done.to_string()></button>
///         </Show>
///     }
/// }
///
/// // The server renders the stand-in, for a page without JavaScript.
/// let html = Owner::new().with(|| view! { <Toggle done=true /> }.to_html());
/// assert!(html.contains(r#"role="checkbox""#), "{html}");
/// ```
pub fn use_hydrated() -> ReadSignal<bool> {
    let (hydrated, set) = signal(false);
    Effect::new(move |_| set.set(true));
    hydrated
}

/// The connection's status: online, pending writes, the last rejection.
///
/// The last rejection is also that of a plain form (no JavaScript) the server refused: its
/// redirect carries the error back (Leptos's form-redirect errors), while the page's URL has
/// it (a client-side navigation drops it) and until this tab sends another event.
///
/// ```
/// use leptos::prelude::*;
/// let owner = Owner::new();
/// owner.with(|| {
///     sssync_leptos::provide_sync_client();
///     let status = sssync_leptos::use_sync_status();
///     // On the server and before the tab connects: offline, nothing pending.
///     assert!(!status.online.get_untracked());
///     assert_eq!(status.pending.get_untracked(), 0);
///     assert_eq!(status.last_rejection.get_untracked(), None);
/// });
/// ```
pub fn use_sync_status() -> SyncStatus {
    let c = crate::client::client();
    let from_form = crate::form::form_rejection();
    SyncStatus {
        online: c.online.into(),
        pending: c.pending.into(),
        last_rejection: Signal::derive(move || match c.rejection.read().as_ref() {
            Some(r) => Some(r.why.clone()),
            None if !c.sent.get() => from_form.get(),
            None => None,
        }),
        notice: c.notice.into(),
    }
}
