//! Reading a query: [`use_sync_query`] and the [`SyncQuery`] it returns, and [`Loaded`], the
//! rows that travel with the page for hydration.

use crate::client::SyncClient;
use crate::error::SyncError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use sssync_core::{Epoch, Forbidden, Query, QueryKey, Request, Row, Version};

/// A query's rows as the server rendered them: what travels in the hydration data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Loaded {
    /// The query's name (`q` in the hydration data: it travels with every page).
    #[serde(rename = "q")]
    pub query: String,
    /// Its canonical args (`a` in the hydration data).
    #[serde(rename = "a")]
    pub args: String,
    /// The database history the rows belong to.
    pub epoch: Epoch,
    /// Their version.
    pub version: Version,
    /// The rows, in order.
    pub rows: Vec<Row>,
}

impl Loaded {
    /// Whether these are the rows of `key`.
    pub fn is_for(&self, key: &QueryKey) -> bool {
        self.query == key.name() && self.args == key.args_json()
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
pub(super) const STALE_TICKS: usize = 1_000;

/// Awaiting a query waits until it has loaded and answers its rows, as
/// [`SyncQuery::rows`] does: the idiom of Leptos's `Suspend`, which registers the wait with the
/// `<Suspense>` or `<Transition>` around it (on the server, the page waits for the rows).
///
/// ```ignore
/// let todos = use_sync_query(move || todos(list_id.get()));
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
            return Some(Err(SyncError::Forbidden(Forbidden(why))));
        }
        let key = QueryKey::new(Q::NAME, &self.args.get_untracked()).ok();
        if let Some(key) = &key {
            self.client.track_rows(key);
        }
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
            return Some(Err(SyncError::Forbidden(Forbidden(why))));
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

pub(super) fn decode<Q: Query>(rows: &[Row]) -> Result<Vec<Q::Row>, SyncError> {
    rows.iter()
        .map(|r| r.decode::<Q::Row>())
        .collect::<Result<_, _>>()
        .map_err(|e| SyncError::Internal(format!("a row of {} does not decode: {e}", Q::NAME)))
}

/// Reads a query, `request` giving it with its args (reactive: `move || todos(list_id.get())`,
/// the function `#[sync_query] fn todos(…)` gives): rendered on the server, hydrated without a
/// second fetch, then kept live.
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
///     let notes = use_sync_query(move || notes(board.get()));
///     view! {
///         <Transition fallback=|| "Loading…">
///             // An error (the reader may not read it, the server failed) shows, not an empty list.
///             <ErrorBoundary fallback=|_| view! { <p role="alert">"Could not load the board."</p> }>
///                 <ul>{move || Suspend::new(async move { notes.await.map(|rows| rows.into_iter()
///                     .map(|n| view! { <li>{n.text}</li> }).collect_view()) })}</ul>
///             </ErrorBoundary>
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
///     use_sync_query(|| notes("b1"))
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
    request: impl Fn() -> Request<Q> + Send + Sync + 'static,
) -> SyncQuery<Q> {
    let client = crate::client::client();
    let args = Memo::new(move |_| request().into_args());
    #[cfg(feature = "ssr")]
    let server = use_context::<crate::server::SyncServer>();
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
