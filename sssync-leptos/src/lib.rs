//! # sssync-leptos
//!
//! Leptos bindings for sssync: read named queries with [`use_sync_query`], write typed events
//! with [`use_sync_event`], show the connection with [`use_sync_status`].
//!
//! - **On the server** (`ssr`) a query runs in-process on the engine (no HTTP round trip) and
//!   its rows ride Leptos's own hydration channel (a `Resource`): the page is rendered with real
//!   data, for any visitor, with or without JavaScript.
//! - **In the browser** (`hydrate`) the hydration render uses exactly those rows (no request);
//!   afterwards, outside any render, the client opens one WebSocket per tab, seeds its cache with
//!   the server's rows and version, subscribes from that version, and applies deltas as they
//!   come. Events apply at once (the event's `predict`), are sent exactly once, and roll back
//!   when the server rejects them.
//!
//! Browser objects (the WebSocket, timers) are created only after hydration, in effects and
//! event handlers: never during the server render or the hydration render.
//!
//! | feature | role |
//! |---|---|
//! | `ssr` | server rendering (with `sssync-core/server`) |
//! | `hydrate` | the browser, after server rendering |
//! | `csr` | client-only apps |

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use sssync_core::{Epoch, Query, QueryKey, Row, Version};

pub use action::{FORM_NEXT_FIELD, SyncAction};
pub use sssync_core::client::Prediction;
pub use sssync_core::{Event, Query as SyncQueryDef, Rejection};
pub use sssync_macros::{sync_apply, sync_event, sync_query, sync_run, sync_sql};

/// In a server build an event declared with [`macro@sync_event`] but applied by no
/// [`macro@sync_apply`] handler is a compile error ("event `AddNote` has no server handler"),
/// not a runtime one.
#[cfg_attr(
    feature = "ssr",
    doc = r#"
```compile_fail,E0277
#[sssync_leptos::sync_event]
pub struct AddNote { pub board: String, pub text: String }
```
"#
)]
pub mod missing_handler {}

/// What the macros expand to (not an API).
#[doc(hidden)]
pub mod __private {
    pub use leptos::server_fn;
    pub use serde;
    pub use sssync_core as core;
    #[cfg(feature = "ssr")]
    pub use sssync_core::server::declared::{inventory, sqlx};

    /// Keeps its items in a server build (`ssr`), drops them otherwise.
    #[cfg(feature = "ssr")]
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __if_server {
        ($($item:item)*) => { $($item)* };
    }

    /// Keeps its items in a server build (`ssr`), drops them otherwise.
    #[cfg(not(feature = "ssr"))]
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __if_server {
        ($($item:item)*) => {};
    }
    pub use crate::__if_server;

    pub use crate::__server_action;
    pub use crate::action::{
        ActionClient, ActionProtocol, ActionRequest, ActionResponse, ActionServer, run_body,
        run_on_client, run_on_server,
    };
}

mod action;
pub mod meta;
#[cfg(feature = "browser")]
mod persist;
#[cfg(feature = "browser")]
mod runtime;
#[cfg(feature = "ssr")]
pub mod server;

/// A query's rows as the server rendered them: what travels in the hydration data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Loaded {
    /// The query's name.
    pub q: String,
    /// Its canonical args.
    pub a: String,
    /// The database history the rows belong to.
    pub epoch: Epoch,
    /// Their version.
    pub version: Version,
    /// The rows, in order.
    pub rows: Vec<Row>,
}

/// Why a query or an event failed; crosses the wire typed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The server refused the event.
    #[error("{0}")]
    Rejected(Rejection),
    /// No query or event of that name is registered, or its args do not fit.
    #[error("{0}")]
    BadRequest(String),
    /// The server failed; nothing was changed.
    #[error("the server failed: {0}")]
    Internal(String),
    /// The request did not get through (network, encoding).
    #[error("the request failed: {0}")]
    Request(String),
    /// This identity may not read the query (render a 404, or a sign-in prompt).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

impl Loaded {
    /// Whether these are the rows of `key`.
    pub fn is_for(&self, key: &QueryKey) -> bool {
        self.q == key.name() && self.a == key.args_json()
    }
}

impl leptos::server_fn::error::FromServerFnError for SyncError {
    type Encoder = leptos::server_fn::codec::JsonEncoding;

    /// Keeps the kind of a server function's own failure: the request did not get through,
    /// it did not fit the function, or the server failed.
    fn from_server_fn_error(value: leptos::server_fn::error::ServerFnErrorErr) -> Self {
        use leptos::server_fn::error::ServerFnErrorErr as E;
        match value {
            E::Request(m) | E::Response(m) => SyncError::Request(m),
            E::Args(m)
            | E::MissingArg(m)
            | E::Deserialization(m)
            | E::Serialization(m)
            | E::UnsupportedRequestMethod(m)
            | E::Registration(m) => SyncError::BadRequest(m),
            E::ServerError(m) | E::MiddlewareError(m) => SyncError::Internal(m),
        }
    }
}

/// The tab's sync client: signals for the UI, and (in the browser, once started) the runtime
/// that owns the connection. `Copy`; provided by [`provide_sync_client`].
#[derive(Clone, Copy)]
pub struct SyncClient {
    /// Grows whenever the client's views change.
    changed: RwSignal<u64>,
    online: RwSignal<bool>,
    pending: RwSignal<usize>,
    rejection: RwSignal<Option<Refused>>,
    notice: RwSignal<Option<String>>,
    /// This tab sent an event since the page loaded.
    sent: RwSignal<bool>,
    /// The event types this tab uses (registered by `use_sync_event`), so that other tabs'
    /// pending events can be predicted here too.
    types: StoredValue<sssync_core::client::EventTypes>,
    #[cfg(feature = "browser")]
    runtime: StoredValue<Option<std::rc::Rc<runtime::Runtime>>, LocalStorage>,
}

/// The last event the server (or the client, for args over the limit) refused.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(not(feature = "browser"), allow(dead_code))] // made by the browser runtime only
pub(crate) struct Refused {
    /// The event's name.
    pub(crate) event: String,
    /// Why.
    pub(crate) why: Rejection,
}

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

/// Creates the tab's sync client and provides it to the components below (call it once, in
/// the app's root component).
pub fn provide_sync_client() -> SyncClient {
    let client = SyncClient {
        changed: RwSignal::new(0),
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

fn client() -> SyncClient {
    use_context::<SyncClient>()
        .expect("wrap the app in <SyncProvider> (or call sssync_leptos::provide_sync_client() in its root component)")
}

impl SyncClient {
    /// The browser runtime, started on first use (never during a render on the server, nor
    /// during hydration: only effects, handlers and client-side fetches call this).
    #[cfg(feature = "browser")]
    fn runtime(&self) -> std::rc::Rc<runtime::Runtime> {
        if let Some(rt) = self.runtime.get_value() {
            return rt;
        }
        let rt = runtime::Runtime::start(
            runtime::Signals {
                changed: self.changed,
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

    /// The current view of `key`, if the runtime holds it.
    fn view<Q: Query>(&self, args: &Q::Args) -> Option<Vec<Q::Row>> {
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

/// Where a query stands (see [`SyncQuery::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryStatus {
    /// No rows yet.
    Loading,
    /// Rows shown, following the server's changes.
    Live,
    /// Rows shown (server-rendered or cached), not connected: changes arrive on reconnect.
    Offline,
    /// The query failed.
    Error(SyncError),
}

/// A live query: its rows (server-rendered, then synced) and status.
pub struct SyncQuery<Q: Query> {
    args: Memo<Q::Args>,
    resource: Resource<Result<Loaded, SyncError>>,
    client: SyncClient,
    /// Why the server refused this key to this identity since it loaded (access withdrawn).
    forbidden: Memo<Option<String>>,
    /// The key whose rows the tab's runtime holds from this query's own load (server-rendered
    /// or fetched): until then the rows shown are the load's, so that a part of the page
    /// hydrated late (streamed out of order) renders exactly what the server rendered.
    live: RwSignal<Option<QueryKey>>,
}

impl<Q: Query> Clone for SyncQuery<Q> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Q: Query> Copy for SyncQuery<Q> {}

/// How many executor ticks an awaited query waits for its resource to start loading new args.
const STALE_TICKS: usize = 1_000;

/// Awaiting a query waits until it has loaded and answers its rows, as
/// [`SyncQuery::rows`] does: the idiom of Leptos's `Suspend`, which registers the wait with the
/// `<Suspense>` or `<Transition>` around it (on the server, the page waits for the rows).
///
/// ```ignore
/// let todos = use_sync_query::<Todos>(move || ListArgs { list_id: list_id.get() });
/// view! {
///     <Suspense fallback=|| "Loading…">
///         {move || Suspend::new(async move {
///             todos.await.map(|rows| rows.len().to_string())
///         })}
///     </Suspense>
/// }
/// ```
impl<Q: Query> std::future::IntoFuture for SyncQuery<Q> {
    type Output = Result<Vec<Q::Row>, SyncError>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            // Right after the args changed, the resource may not have begun loading the new
            // key: give it ticks (bounded) until what it holds is the current key's.
            let mut loaded = self.resource.await;
            for _ in 0..STALE_TICKS {
                let current = QueryKey::new(Q::NAME, &self.args.get_untracked())
                    .map_err(|e| SyncError::BadRequest(e.to_string()))?;
                if loaded.as_ref().map_or(true, |l| l.is_for(&current)) {
                    break;
                }
                leptos::task::tick().await;
                loaded = self.resource.await;
            }
            // The live view (predictions, deltas) when there is one; else what loaded.
            match self.rows() {
                Some(rows) => rows,
                None => loaded.and_then(|l| decode::<Q>(&l.rows)),
            }
        })
    }
}

impl<Q: Query> SyncQuery<Q> {
    /// The rows the UI shows: the server's rows, with pending events' predictions applied, or
    /// the error. `None` while loading (read it inside `Suspense`/`Transition`).
    ///
    /// Only rows of the current args: while the args change (a `<Transition>` to another key),
    /// it is `None` until the new key's rows are there, never the old key's rows.
    pub fn rows(&self) -> Option<Result<Vec<Q::Row>, SyncError>> {
        let loaded = self.current()?;
        if let Some(why) = self.forbidden.get() {
            return Some(Err(SyncError::Forbidden(why)));
        }
        self.client.changed.track();
        let key = QueryKey::new(Q::NAME, &self.args.get_untracked()).ok();
        if key.is_some()
            && self.live.read().as_ref() == key.as_ref()
            && let Some(rows) = self.client.view::<Q>(&self.args.get_untracked())
        {
            return Some(Ok(rows));
        }
        Some(loaded.and_then(|l| decode::<Q>(&l.rows)))
    }

    /// The resource's value, unless it holds the rows of other args than the current ones (it
    /// keeps its old value while it loads the new).
    fn current(&self) -> Option<Result<Loaded, SyncError>> {
        let loaded = self.resource.get()?;
        if let Ok(l) = &loaded {
            let key = QueryKey::new(Q::NAME, &self.args.get()).ok()?;
            if !l.is_for(&key) {
                return None;
            }
        }
        Some(loaded)
    }

    /// Whether the query has loaded (`Some(Ok)`), failed (`Some(Err)`), or is loading (`None`).
    /// Unlike [`SyncQuery::rows`] it does not change when rows change: build the list's
    /// structure from this (inside `Suspense`/`Transition`) and read the rows inside it, so a
    /// delta updates the rows without rebuilding what holds them (an edit box, say).
    /// It turns to `Err(SyncError::Forbidden)` when the server withdraws this identity's
    /// access while the query is live (its rows are gone then).
    pub fn loaded(&self) -> Option<Result<(), SyncError>> {
        let loaded = self.current()?;
        if let Some(why) = self.forbidden.get() {
            return Some(Err(SyncError::Forbidden(why)));
        }
        Some(loaded.map(|_| ()))
    }

    /// Whether the rows shown are the server's (no event waiting for the server, of this tab
    /// or another tab shown here, predicts into this query; while one does, the rows include
    /// its prediction). Per query: a pending write to another list leaves this one confirmed.
    /// Always true on the server. Reactive.
    pub fn is_confirmed(&self) -> bool {
        // Rows changing, or this tab's pending count (an ack that leaves the rows as shown).
        self.client.changed.track();
        self.client.pending.track();
        #[cfg(feature = "browser")]
        {
            let Some(rt) = self.client.runtime.get_value() else {
                return true;
            };
            let Ok(key) = QueryKey::new(Q::NAME, &self.args.get()) else {
                return true;
            };
            rt.state.borrow().is_confirmed(&key)
        }
        #[cfg(not(feature = "browser"))]
        {
            true
        }
    }

    /// Where the query stands: loading, live (following the server), offline (showing what
    /// the tab has), or failed. Reactive.
    pub fn status(&self) -> QueryStatus {
        match self.resource.get() {
            None => QueryStatus::Loading,
            Some(Err(e)) => QueryStatus::Error(e),
            Some(Ok(_)) => {
                if let Some(why) = self.query_error() {
                    return QueryStatus::Error(SyncError::Internal(why));
                }
                if self.client.online.get() {
                    QueryStatus::Live
                } else {
                    QueryStatus::Offline
                }
            }
        }
    }

    /// Why the server could not serve this query lately (its rows stay shown; the tab
    /// subscribes again with backoff and this clears once it works). Reactive.
    fn query_error(&self) -> Option<String> {
        self.client.changed.track();
        #[cfg(feature = "browser")]
        {
            let rt = self.client.runtime.get_value()?;
            let key = QueryKey::new(Q::NAME, &self.args.get_untracked()).ok()?;
            rt.query_error(&key)
        }
        #[cfg(not(feature = "browser"))]
        {
            None
        }
    }
}

fn decode<Q: Query>(rows: &[Row]) -> Result<Vec<Q::Row>, SyncError> {
    rows.iter()
        .map(|r| r.decode::<Q::Row>())
        .collect::<Result<_, _>>()
        .map_err(|e| SyncError::Internal(format!("a row of {} does not decode: {e}", Q::NAME)))
}

/// Reads query `Q` with reactive `args`: rendered on the server, hydrated without a second
/// fetch, then kept live.
///
/// ```
/// use leptos::prelude::*;
/// use serde::{Deserialize, Serialize};
/// use sssync_leptos::{sync_query, use_sync_query};
/// # #[cfg(feature = "ssr")] use sssync_leptos::server::prelude::*;
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// # #[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
/// pub struct Note { pub id: String, pub text: String }
///
/// #[sync_query(key = id, reads = [notes(board)])]
/// pub async fn notes(conn: &mut Conn<Db>, board: String) -> Result<Vec<Note>, sqlx::Error> {
///     sqlx::query_as("SELECT id, text FROM notes WHERE board = $1")
///         .bind(board)
///         .fetch_all(&mut *conn)
///         .await
/// }
///
/// #[component]
/// fn Board(board: Signal<String>) -> impl IntoView {
///     let notes = use_sync_query::<Notes>(move || NotesArgs { board: board.get() });
///     view! {
///         <Transition fallback=|| "Loading…">
///             <ul>{move || notes.rows().and_then(Result::ok).map(|rows| rows.into_iter()
///                 .map(|n| view! { <li>{n.text}</li> }).collect_view())}</ul>
///         </Transition>
///     }
/// }
///
/// // On the server, the query runs in-process on the engine (here over a SQLite file):
/// # #[cfg(feature = "ssr")]
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let _ = any_spawner::Executor::init_tokio();
/// # let path = std::env::temp_dir().join(format!("sssync-doc-query-{}.db", std::process::id()));
/// # let _ = std::fs::remove_file(&path);
/// let sync = sssync_leptos::server::SyncServer::builder()
///     .schema("CREATE TABLE notes (id TEXT PRIMARY KEY, board TEXT NOT NULL, text TEXT NOT NULL)")
///     .table(sssync_core::server::Table::new("notes", "id")?.partition("board")?)
///     .open(&format!("sqlite://{}", path.display()))
///     .await?;
/// sync.pool().unwrap().execute_script("INSERT INTO notes VALUES ('n1', 'b1', 'hello')").await?;
/// let owner = Owner::new();
/// let notes = owner.with(|| {
///     provide_context(sync.clone()); // what `SyncServer::context` does for each request
///     sssync_leptos::provide_sync_client();
///     use_sync_query::<Notes>(|| NotesArgs { board: "b1".into() })
/// });
/// // Awaitable, as inside `Suspend::new(async move { notes.await })`.
/// let rows = notes.await?;
/// assert_eq!(rows, [Note { id: "n1".into(), text: "hello".into() }]);
/// # sync.shutdown();
/// # let _ = std::fs::remove_file(&path);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
/// (Rendered end to end in `tests/ssr.rs` and, in the browser, by the end-to-end tests.)
pub fn use_sync_query<Q: Query>(
    args: impl Fn() -> Q::Args + Send + Sync + 'static,
) -> SyncQuery<Q> {
    let client = client();
    let args = Memo::new(move |_| args());
    #[cfg(feature = "ssr")]
    let server = use_context::<server::SyncServer>();
    // Who asks: the request's parts, which the app's `identify` reads.
    #[cfg(feature = "ssr")]
    let parts = use_context::<sssync_core::server::Parts>();
    let resource = Resource::new(
        move || args.get(),
        move |a: Q::Args| {
            #[cfg(feature = "ssr")]
            let (server, parts) = (server.clone(), parts.clone());
            let load = async move {
                let key =
                    QueryKey::new(Q::NAME, &a).map_err(|e| SyncError::BadRequest(e.to_string()))?;
                #[cfg(feature = "ssr")]
                {
                    let server = server.ok_or_else(|| {
                        SyncError::Internal(
                            "no SyncServer in context: provide it in the routes' context".into(),
                        )
                    })?;
                    server.load_for(&key, parts.as_ref()).await
                }
                #[cfg(all(feature = "browser", not(feature = "ssr")))]
                {
                    client.runtime().load(key).await
                }
                #[cfg(not(any(feature = "ssr", feature = "browser")))]
                {
                    let _ = (key, client);
                    Err::<Loaded, _>(SyncError::Internal(
                        "sssync-leptos needs the ssr, hydrate or csr feature".into(),
                    ))
                }
            };
            // In the browser the load touches the (single-threaded) runtime.
            #[cfg(feature = "browser")]
            let load = send_wrapper::SendWrapper::new(load);
            load
        },
    );
    // After hydration (effects never run on the server): seed the cache with the server's rows
    // and version, and subscribe from there.
    let live = RwSignal::new(None::<QueryKey>);
    #[cfg(feature = "browser")]
    {
        let held = StoredValue::new_local(None::<QueryKey>);
        Effect::new(move |_| {
            let Ok(key) = QueryKey::new(Q::NAME, &args.get()) else {
                return;
            };
            // A resource keeps its old value while it reloads: only rows of this key count.
            let loaded = resource
                .get()
                .and_then(Result::ok)
                .filter(|l| l.is_for(&key));
            let rt = client.runtime();
            let old = held.get_value();
            let has_rows = loaded.is_some();
            if old.as_ref() == Some(&key) {
                if let Some(l) = loaded {
                    rt.seed(key.clone(), l);
                    if live.get_untracked().as_ref() != Some(&key) {
                        live.set(Some(key));
                    }
                }
                return;
            }
            rt.hold(key.clone(), loaded);
            if has_rows {
                live.set(Some(key.clone()));
            }
            if let Some(old) = old {
                rt.release(&old);
            }
            held.set_value(Some(key));
        });
        on_cleanup(move || {
            if let (Some(key), Some(rt)) = (held.get_value(), client.runtime.get_value()) {
                rt.release(&key);
            }
        });
    }
    let forbidden = Memo::new(move |_| {
        #[cfg(feature = "browser")]
        {
            client.changed.track();
            let rt = client.runtime.get_value()?;
            let key = QueryKey::new(Q::NAME, &args.get()).ok()?;
            rt.forbidden(&key)
        }
        #[cfg(not(feature = "browser"))]
        {
            None
        }
    });
    SyncQuery {
        args,
        resource,
        client,
        forbidden,
        live,
    }
}

/// A typed event sender (see [`use_sync_event`]). `Copy`.
pub struct SyncEvent<E> {
    client: SyncClient,
    _event: std::marker::PhantomData<fn(E)>,
}

impl<E> Clone for SyncEvent<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for SyncEvent<E> {}

impl<E: Event> SyncEvent<E> {
    /// Applies the event's prediction at once and sends it (exactly once, also after the
    /// connection comes back). Does nothing on the server.
    pub fn send(&self, event: E) {
        #[cfg(feature = "browser")]
        {
            self.client.rejection.set(None);
            self.client.sent.set(true);
            // A refusal by the client shows as the last rejection.
            let _ = self.client.runtime().send(event);
        }
        #[cfg(not(feature = "browser"))]
        {
            let _ = (event, self.client);
        }
    }

    /// How many events of this type this tab has sent that the server has not confirmed yet
    /// (their predictions show meanwhile). Reactive; 0 on the server.
    pub fn pending(&self) -> usize {
        self.client.pending.track();
        #[cfg(feature = "browser")]
        {
            self.client
                .runtime
                .get_value()
                .map_or(0, |rt| rt.state.borrow().pending_count_of(E::NAME))
        }
        #[cfg(not(feature = "browser"))]
        {
            0
        }
    }

    /// Why the server refused the last event of this type, if the last refusal in this tab
    /// was one (cleared by the next send of any event). Its prediction is gone by then.
    /// Reactive.
    pub fn last_rejection(&self) -> Option<Rejection> {
        self.client
            .rejection
            .read()
            .as_ref()
            .filter(|r| r.event == E::NAME)
            .map(|r| r.why.clone())
    }
}

/// The sender of event type `E`, for events declared by hand (an `impl Event`) rather than
/// with [`macro@sync_event`] (whose events are server actions: see [`use_sync_event`]).
///
/// ```
/// use leptos::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct Ping { note: String }
///
/// impl sssync_leptos::Event for Ping {
///     const NAME: &'static str = "ping";
/// }
///
/// Owner::new().with(|| {
///     sssync_leptos::provide_sync_client();
///     let ping = sssync_leptos::use_sync_sender::<Ping>();
///     // Nothing sent yet: none of this type pending, none refused.
///     assert_eq!(ping.pending(), 0);
///     assert_eq!(ping.last_rejection(), None);
/// });
/// ```
pub fn use_sync_sender<E: Event>() -> SyncEvent<E> {
    let client = client();
    client.types.update_value(|t| t.add::<E>());
    SyncEvent {
        client,
        _event: std::marker::PhantomData,
    }
}

/// The action of event `E` (declared with [`macro@sync_event`]): a Leptos `ServerAction`, so
/// it works with `<ActionForm>` (and, with `ServerMultiAction::<E>::new()`,
/// `<MultiActionForm>`) and `.dispatch(…)`.
///
/// In the browser a dispatch predicts the event at once and sends it over the tab's sync
/// connection (exactly once, also across going offline and reloads); the action is pending
/// until the server has settled it, and its value is then `Ok(())`, or
/// `Err(SyncError::Rejected(…))` with the prediction rolled back. Without JavaScript the form
/// posts to the event's server function, and a rejection comes back as the action's value after
/// the redirect.
///
/// ```
/// use leptos::prelude::*;
/// use sssync_leptos::{FormKey, sync_apply, sync_event, use_sync_event};
/// # #[cfg(feature = "ssr")] use sssync_leptos::server::prelude::*;
///
/// #[sync_event]
/// pub struct AddNote {
///     #[serde(default = "sssync_leptos::new_id")]
///     pub id: String,
///     pub board: String,
///     pub text: String,
/// }
///
/// #[sync_apply]
/// impl AddNote {
///     async fn apply(&self, conn: &mut Conn<Db>, _: &EventCtx) -> Result<(), EventError> {
///         sqlx::query("INSERT INTO notes (id, board, text) VALUES ($1, $2, $3)")
///             .bind(&self.id).bind(&self.board).bind(&self.text)
///             .execute(&mut *conn).await?;
///         Ok(())
///     }
/// }
///
/// #[component]
/// fn NewNote(board: String) -> impl IntoView {
///     let add = use_sync_event::<AddNote>();
///     view! {
///         <ActionForm action=add>
///             <input type="hidden" name="board" value=board />
///             <input name="text" aria-label="Note" />
///             <FormKey />
///         </ActionForm>
///         <p>{move || add.pending().get().then_some("Saving…")}</p>
///     }
/// }
///
/// // Rendered on the server, the form posts to the event's own server function (what a
/// // browser without JavaScript sends), with a key that makes the post idempotent.
/// # #[cfg(feature = "ssr")] {
/// let html = Owner::new().with(|| {
///     sssync_leptos::provide_sync_client();
///     view! { <NewNote board="b1".to_owned() /> }.to_html()
/// });
/// assert!(html.contains(r#"action="/api/add_note""#), "{html}");
/// assert!(html.contains(r#"name="sssync_key""#), "{html}");
/// # }
/// ```
pub fn use_sync_event<E: SyncAction>() -> ServerAction<E> {
    let client = client();
    client.types.update_value(|t| t.add::<E>());
    ServerAction::new()
}

/// Sends `event` through the tab's sync client and answers once the server settled it (what an
/// event's action does in the browser).
#[cfg(feature = "browser")]
pub(crate) fn dispatch<E: Event>(
    event: E,
) -> impl std::future::Future<Output = Result<(), SyncError>> {
    let client = TAB_CLIENT.with(std::cell::Cell::get);
    let answer = match client {
        None => Err(SyncError::Internal(
            "no sync client in this tab: wrap the app in <SyncProvider>".into(),
        )),
        Some(client) => {
            let _ = client.types.try_update_value(|t| t.add::<E>());
            client.rejection.set(None);
            client.sent.set(true);
            Ok(client.runtime().send_awaiting(event))
        }
    };
    async move {
        match answer {
            Err(e) => Err(e),
            Ok(rx) => rx.await.unwrap_or_else(|_| {
                Err(SyncError::Internal("the tab's sync client stopped".into()))
            }),
        }
    }
}

#[cfg(feature = "browser")]
thread_local! {
    /// The tab's sync client (one per tab: the browser runs one thread), for actions
    /// dispatched outside any reactive owner.
    static TAB_CLIENT: std::cell::Cell<Option<SyncClient>> = const { std::cell::Cell::new(None) };
}

/// A new random id (128 bits, hex) for rows a client creates (their keys must be known
/// before the server confirms them).
pub fn new_id() -> String {
    #[cfg(feature = "browser")]
    {
        runtime::random_id()
    }
    #[cfg(not(feature = "browser"))]
    {
        use std::hash::{BuildHasher, Hasher};
        // The server side: the std hasher's random keys, plus time and a counter.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut out = String::with_capacity(32);
        for _ in 0..2 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out
    }
}

/// The name of the hidden field [`FormKey`] renders.
pub const FORM_KEY_FIELD: &str = "sssync_key";

/// A hidden `<input name="sssync_key">` for a plain form whose server function applies an event
/// with [`server::apply_form`]: its value, made when the server renders the form, makes the post
/// idempotent (a resubmission of the same form is not applied again). Rendered empty in the
/// browser (there the form's submit goes through the sync connection), and left as the server
/// rendered it by hydration.
#[component]
pub fn FormKey() -> impl IntoView {
    #[cfg(feature = "ssr")]
    let key = new_id();
    #[cfg(not(feature = "ssr"))]
    let key = String::new();
    view! { <input type="hidden" name=FORM_KEY_FIELD value=key/> }
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
    let c = client();
    let from_form = form_rejection();
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

/// The rejection a plain form's redirect brought back, if it was an event's: the `__err` of
/// Leptos's form-redirect errors in the page's URL. Read from the URL itself, the same way on
/// the server (the request's) and in the browser, so that every component, inside `<Routes>`
/// or not, hydrates with what the server rendered. In the browser it follows the router's URL:
/// a client-side navigation away from the redirect's page drops it (Leptos's own
/// `ServerActionError` context stays as the first page provided it).
fn form_rejection() -> Signal<Option<Rejection>> {
    use leptos_router::location::Url;
    fn in_url(url: &Url) -> Option<Rejection> {
        use leptos::server_fn::error::ServerFnUrlError;
        let params = url.search_params();
        params.get_str("__path")?;
        match ServerFnUrlError::<SyncError>::decode_err(params.get_str("__err")?) {
            SyncError::Rejected(r) => Some(r),
            _ => None,
        }
    }
    #[cfg(feature = "browser")]
    {
        use leptos_router::location::{BrowserUrl, LocationProvider};
        if let Some(url) = use_context::<BrowserUrl>() {
            let url = url.as_url().clone();
            return Signal::derive(move || url.with(in_url));
        }
        // No router: the page's URL changes only with a page load.
        Signal::stored(BrowserUrl::current().ok().as_ref().and_then(in_url))
    }
    #[cfg(not(feature = "browser"))]
    {
        let url = use_context::<leptos_router::location::RequestUrl>().and_then(|u| u.parse().ok());
        Signal::stored(url.as_ref().and_then(in_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};

    #[test]
    fn errors_keep_their_kinds_across_the_wire() {
        let rejected = SyncError::Rejected(Rejection::new("title_too_long", "Too long."));
        let forbidden = SyncError::Forbidden("no such list".into());
        for e in [rejected, forbidden, SyncError::Internal("disk".into())] {
            assert_eq!(SyncError::de(e.ser()), e);
        }
        let bad = SyncError::from_server_fn_error(ServerFnErrorErr::Args("no list_id".into()));
        assert_eq!(bad, SyncError::BadRequest("no list_id".into()));
        let lost = SyncError::from_server_fn_error(ServerFnErrorErr::Request("offline".into()));
        assert_eq!(lost, SyncError::Request("offline".into()));
        let failed = SyncError::from_server_fn_error(ServerFnErrorErr::ServerError("x".into()));
        assert_eq!(failed, SyncError::Internal("x".into()));
    }
}
