//! The sync client a page provides ([`SyncProvider`], [`provide_sync_client`]): on the server
//! the engine behind it, in the browser the tab's runtime.

use crate::error::Refused;
use leptos::prelude::*;
use sssync_core::Query;

/// The tab's sync client: signals for the UI, and (in the browser, once started) the runtime
/// that owns the connection. `Copy`; provided by [`provide_sync_client`].
#[derive(Clone, Copy)]
pub struct SyncClient {
    /// Grows whenever the client's views change.
    pub(crate) changed: RwSignal<u64>,
    /// One trigger per query key the tab's hooks read rows of: notified when that key's view
    /// changes (or, after anything but a delta or a snapshot, with every other), so that a
    /// delta makes only its key's hooks read their rows again.
    #[cfg_attr(not(feature = "browser"), allow(dead_code))] // the server renders once
    pub(crate) rows_of: StoredValue<crate::triggers::RowTriggers>,
    pub(crate) online: RwSignal<bool>,
    pub(crate) pending: RwSignal<usize>,
    pub(crate) rejection: RwSignal<Option<Refused>>,
    pub(crate) notice: RwSignal<Option<String>>,
    /// This tab sent an event since the page loaded.
    pub(crate) sent: RwSignal<bool>,
    /// The event types this tab uses (registered by `use_sync_event`), so that other tabs'
    /// pending events can be predicted here too.
    pub(crate) types: StoredValue<sssync_core::client::EventTypes>,
    #[cfg(feature = "browser")]
    pub(crate) runtime: StoredValue<Option<std::rc::Rc<crate::runtime::Runtime>>, LocalStorage>,
}

/// Creates the tab's sync client and provides it to the components below (call it once, in
/// the app's root component).
pub fn provide_sync_client() -> SyncClient {
    let client = SyncClient {
        changed: RwSignal::new(0),
        rows_of: StoredValue::new(Default::default()),
        online: RwSignal::new(false),
        pending: RwSignal::new(0),
        rejection: RwSignal::new(None),
        notice: RwSignal::new(None),
        sent: RwSignal::new(false),
        types: StoredValue::new(Default::default()),
        #[cfg(feature = "browser")]
        runtime: StoredValue::new_local(None),
    };
    provide_context(client);
    #[cfg(feature = "browser")]
    TAB_CLIENT.with(|c| c.set(Some(client)));
    client
}

/// Provides the tab's sync client to its children: the component form of
/// [`provide_sync_client`]. Wrap the app (its router) in it, once.
///
/// ```
/// use leptos::prelude::*;
/// use sssync_leptos::{SyncProvider, use_sync_status};
///
/// #[component]
/// fn Status() -> impl IntoView {
///     let status = use_sync_status();
///     view! { <p>{move || if status.online.get() { "live" } else { "offline" }}</p> }
/// }
///
/// let html = Owner::new().with(|| view! { <SyncProvider><Status /></SyncProvider> }.to_html());
/// // Rendered on the server, the page is not live yet.
/// assert!(html.contains("offline"), "{html}");
/// ```
#[component]
pub fn SyncProvider(
    /// The app.
    children: Children,
) -> impl IntoView {
    provide_sync_client();
    children()
}

pub(crate) fn client() -> SyncClient {
    use_context::<SyncClient>()
        .expect("wrap the app in <SyncProvider> (or call sssync_leptos::provide_sync_client() in its root component)")
}

impl SyncClient {
    /// The browser runtime, started on first use (never during a render on the server, nor
    /// during hydration: only effects, handlers and client-side fetches call this).
    #[cfg(feature = "browser")]
    pub(crate) fn runtime(&self) -> std::rc::Rc<crate::runtime::Runtime> {
        if let Some(rt) = self.runtime.get_value() {
            return rt;
        }
        let rt = crate::runtime::Runtime::start(
            crate::runtime::Signals {
                changed: self.changed,
                rows_of: self.rows_of,
                online: self.online,
                pending: self.pending,
                rejection: self.rejection,
                notice: self.notice,
            },
            self.types,
        );
        self.runtime.set_value(Some(rt.clone()));
        rt
    }

    /// Tracks the rows of `key` (see [`SyncClient::rows_of`]); on the server, the client's
    /// changes.
    pub(crate) fn track_rows(&self, key: &sssync_core::QueryKey) {
        #[cfg(feature = "browser")]
        {
            let trigger = self.rows_of.try_update_value(|t| {
                t.0.entry(key.clone())
                    .or_insert_with(ArcTrigger::new)
                    .clone()
            });
            match trigger {
                Some(trigger) => trigger.track(),
                None => self.changed.track(),
            }
        }
        #[cfg(not(feature = "browser"))]
        {
            let _ = key;
            self.changed.track();
        }
    }

    /// The current view of `key`, if the runtime holds it.
    pub(crate) fn view<Q: Query>(&self, args: &Q::Args) -> Option<Vec<Q::Row>> {
        #[cfg(feature = "browser")]
        {
            let rt = self.runtime.get_value()?;
            let st = rt.state.borrow();
            st.rows::<Q>(args)
        }
        #[cfg(not(feature = "browser"))]
        {
            let _ = args;
            None
        }
    }
}

#[cfg(feature = "browser")]
thread_local! {
    /// The tab's sync client (one per tab: the browser runs one thread), for actions
    /// dispatched outside any reactive owner.
    pub(crate) static TAB_CLIENT: std::cell::Cell<Option<SyncClient>> = const { std::cell::Cell::new(None) };
}
