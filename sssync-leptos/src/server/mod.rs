//! The server side (feature `ssr`): the engine behind the components' queries and the
//! applications' server functions.

use crate::{Loaded, SyncError};

/// What server code that declares queries and events uses: `use sssync_leptos::server::prelude::*;`.
pub mod prelude {
    pub use crate::{Forbidden, Rejection};
    pub use sssync_core::server::{
        Access, AccessError, Conn, Dependency, EventCtx, EventError, Identity, QueryCtx,
    };
}
mod builder; // SyncBuilder: from tables, identify and a database to a SyncServer
mod kept; //    public pages kept and answered again while current

pub use builder::{DbPool, OpenError, SyncBuilder};
pub(crate) use kept::form_key_made;
pub use kept::{PAGE_HEADER, dont_keep};
use leptos::prelude::*;
use sssync_core::server::Parts;
use sssync_core::server::{
    BoxFuture, ChangeWatch, Engine, EngineError, IdentifyError, Identity, Outcome, QueryCtx, Store,
};
use sssync_core::{Event, QueryKey};
use std::sync::Arc;

/// What the components need from an engine, whatever its store.
trait DynEngine: Send + Sync + 'static {
    fn router(&self) -> axum::Router;
    fn identities_changed(&self);
    fn shutdown(&self);
    fn is_incremental(&self, name: &str) -> bool;
    fn watch_key(&self, watch: &ChangeWatch, key: &QueryKey) -> Result<(), EngineError>;
    fn identify<'a>(&'a self, parts: &'a Parts) -> BoxFuture<'a, Result<Identity, IdentifyError>>;
    fn identity_tag(&self, identity: &Identity) -> Option<String>;
    fn load<'a>(
        &'a self,
        key: &'a QueryKey,
        identity: Identity,
    ) -> BoxFuture<'a, Result<Loaded, SyncError>>;
    fn may_read<'a>(
        &'a self,
        key: &'a QueryKey,
        identity: Identity,
    ) -> BoxFuture<'a, Result<(), SyncError>>;
    fn apply<'a>(
        &'a self,
        identity: Identity,
        once: Option<&'a str>,
        name: &'a str,
        args: &'a str,
    ) -> BoxFuture<'a, Result<(), SyncError>>;
}

impl<S: Store> DynEngine for Engine<S> {
    fn router(&self) -> axum::Router {
        sssync_core::server::router(self.clone())
    }

    fn identities_changed(&self) {
        Engine::identities_changed(self)
    }

    fn shutdown(&self) {
        Engine::shutdown(self)
    }

    fn is_incremental(&self, name: &str) -> bool {
        Engine::is_incremental(self, name)
    }

    fn watch_key(&self, watch: &ChangeWatch, key: &QueryKey) -> Result<(), EngineError> {
        Engine::watch_key(self, watch, key)
    }

    fn identify<'a>(&'a self, parts: &'a Parts) -> BoxFuture<'a, Result<Identity, IdentifyError>> {
        Box::pin(Engine::identify(self, parts))
    }

    fn identity_tag(&self, identity: &Identity) -> Option<String> {
        Engine::identity_tag(self, identity)
    }

    fn load<'a>(
        &'a self,
        key: &'a QueryKey,
        identity: Identity,
    ) -> BoxFuture<'a, Result<Loaded, SyncError>> {
        Box::pin(async move {
            let ctx = QueryCtx { identity };
            let (_, version, rows) = self
                .snapshot_json(key.name(), key.args_json(), &ctx)
                .await
                .map_err(engine_error)?;
            Ok(Loaded {
                query: key.name().to_owned(),
                args: key.args_json().to_owned(),
                epoch: self.epoch().clone(),
                version,
                rows: rows.into_rows(),
            })
        })
    }

    fn may_read<'a>(
        &'a self,
        key: &'a QueryKey,
        identity: Identity,
    ) -> BoxFuture<'a, Result<(), SyncError>> {
        Box::pin(async move {
            Engine::may_read(self, key.name(), key.args_json(), &identity)
                .await
                .map_err(engine_error)
        })
    }

    fn apply<'a>(
        &'a self,
        identity: Identity,
        once: Option<&'a str>,
        name: &'a str,
        args: &'a str,
    ) -> BoxFuture<'a, Result<(), SyncError>> {
        Box::pin(async move {
            let apply = Engine::apply(self, name, args).by(&identity);
            let apply = match once {
                Some(key) => apply.once(key),
                None => apply,
            };
            match apply.await.map_err(engine_error)? {
                Outcome::Applied { .. } | Outcome::AlreadyApplied { .. } => Ok(()),
                Outcome::Rejected { rejection, .. } => Err(SyncError::Rejected(rejection)),
                Outcome::RetryLater { message, .. } => Err(SyncError::Internal(message)),
                Outcome::OutOfOrder { expected } => Err(SyncError::Internal(format!(
                    "out of order: seq {expected} expected"
                ))),
            }
        })
    }
}

fn engine_error(e: EngineError) -> SyncError {
    match e {
        EngineError::Forbidden(m) => SyncError::Forbidden(sssync_core::Forbidden(m)),
        EngineError::UnknownQuery(_) | EngineError::BadArgs(_) => {
            SyncError::BadRequest(e.to_string())
        }
        other => SyncError::Internal(other.to_string()),
    }
}

/// The engine, as the components and server functions of one app see it. Provide it in the
/// routes' context (`leptos_routes_with_context`, with [`SyncServer::context`]), next to the
/// engine's own routes ([`SyncServer::router`]). Made by [`SyncServer::builder`], or from an
/// engine built by hand with [`SyncServer::new`].
#[derive(Clone)]
pub struct SyncServer {
    /// The engine, whatever its database.
    engine: Arc<dyn DynEngine>,
    /// The pool it was opened over (`None`: built from an engine).
    pool: Option<DbPool>,
    /// Public pages kept ([`SyncBuilder::keep_public_pages`]).
    kept: Option<kept::KeptPages>,
}

impl SyncServer {
    /// Wraps an engine.
    pub fn new<S: Store>(engine: Engine<S>) -> SyncServer {
        SyncServer {
            engine: Arc::new(engine),
            pool: None,
            kept: None,
        }
    }

    /// Starts declaring the app's sync server: its tables, how a request's identity is known;
    /// every query and event declared with the macros is registered by itself.
    pub fn builder() -> SyncBuilder {
        SyncBuilder::default()
    }

    /// The engine's routes (`/sssync/…`: the WebSocket, server-sent events, event posts, the
    /// snapshot GET), to merge into the app's router.
    pub fn router(&self) -> axum::Router {
        self.engine.router()
    }

    /// `routes` with public pages kept, when the builder said so
    /// ([`SyncBuilder::keep_public_pages`]); `routes` as they are otherwise. For an app that
    /// builds its router itself: wrap the Leptos routes (not the engine's [`SyncServer::router`]).
    pub fn with_kept_pages<S: Clone + Send + Sync + 'static>(
        &self,
        routes: axum::Router<S>,
    ) -> axum::Router<S> {
        match &self.kept {
            Some(kept) => routes.layer(axum::middleware::from_fn_with_state(
                (self.clone(), kept.clone()),
                kept::layer,
            )),
            None => routes,
        }
    }

    /// What `leptos_routes_with_context` provides to every render and server function: this
    /// server.
    pub fn context(&self) -> impl Fn() + Clone + Send + Sync + 'static {
        let sync = self.clone();
        move || provide_context(sync.clone())
    }

    /// The whole router of a Leptos app on this server: its pages (server-rendered, with this
    /// server in their context), its server functions (the events' among them), the static
    /// files of the site root, and the engine's routes. Merge more routes into it, or build
    /// one by hand from [`SyncServer::context`] and [`SyncServer::router`].
    pub fn app_router<A, AV, SV>(
        &self,
        options: leptos::config::LeptosOptions,
        app: A,
        shell: fn(leptos::config::LeptosOptions) -> SV,
    ) -> axum::Router
    where
        A: Fn() -> AV + Clone + Send + Sync + 'static,
        AV: IntoView + 'static,
        SV: IntoView + 'static,
    {
        use leptos_axum::LeptosRoutes;
        let routes = route_list(app);
        let page = {
            let options = options.clone();
            move || shell(options.clone())
        };
        let pages = axum::Router::new()
            .leptos_routes_with_context(&options, routes, self.context(), page)
            .fallback(leptos_axum::file_and_error_handler(shell))
            .with_state(options);
        self.with_kept_pages(pages).merge(self.router())
    }

    /// Serves the app until the process stops: Leptos's options from the environment
    /// (`LEPTOS_SITE_ADDR`, `LEPTOS_SITE_ROOT`, as cargo-leptos sets them; `get_configuration`),
    /// [`SyncServer::app_router`], on [`listen`](sssync_core::server::listen) (no Nagle delays).
    /// It prints the address it listens on.
    pub async fn serve<A, AV, SV>(
        &self,
        app: A,
        shell: fn(leptos::config::LeptosOptions) -> SV,
    ) -> std::io::Result<()>
    where
        A: Fn() -> AV + Clone + Send + Sync + 'static,
        AV: IntoView + 'static,
        SV: IntoView + 'static,
    {
        let options = leptos::config::get_configuration(None)
            .map_err(std::io::Error::other)?
            .leptos_options;
        let listener = sssync_core::server::listen(options.site_addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, self.app_router(options, app, shell)).await
    }

    /// The database pool, when the builder opened it.
    pub fn pool(&self) -> Option<&DbPool> {
        self.pool.as_ref()
    }

    /// Sessions were signed in or out: every live connection asks again who it is (see
    /// `Engine::identities_changed`).
    pub fn identities_changed(&self) {
        self.engine.identities_changed()
    }

    /// Whether the declarative query `name` is maintained incrementally (see
    /// `Engine::is_incremental`).
    pub fn is_incremental(&self, name: &str) -> bool {
        self.engine.is_incremental(name)
    }

    /// Closes every sync connection and stops the engine (before a graceful shutdown).
    pub fn shutdown(&self) {
        self.engine.shutdown()
    }

    /// Who sent the request with these parts, as the engine's `identify` says (anonymous
    /// without a request); [`SyncError::Internal`] when the application could not tell (its
    /// session store failed: nothing is read or written as anyone meanwhile).
    pub async fn identify(&self, parts: Option<&Parts>) -> Result<Identity, SyncError> {
        match parts {
            Some(p) => self
                .engine
                .identify(p)
                .await
                .map_err(|e| SyncError::Internal(e.to_string())),
            None => Ok(Identity::anonymous()),
        }
    }

    /// Who sent the current request (the Leptos request context's parts).
    pub async fn current_identity(&self) -> Result<Identity, SyncError> {
        let parts = use_context::<Parts>();
        self.identify(parts.as_ref()).await
    }

    /// The opaque tag of `identity` its browser's client sees in its welcome.
    pub fn identity_tag(&self, identity: &Identity) -> Option<String> {
        self.engine.identity_tag(identity)
    }

    /// The rows of `key` at one version for an anonymous reader (in-process: no HTTP).
    pub async fn load(&self, key: &QueryKey) -> Result<Loaded, SyncError> {
        self.engine.load(key, Identity::anonymous()).await
    }

    /// The rows of `key` at one version, as the sender of the request with these parts may
    /// read them ([`SyncError::Forbidden`] when it may not).
    pub async fn load_for(
        &self,
        key: &QueryKey,
        parts: Option<&Parts>,
    ) -> Result<Loaded, SyncError> {
        let identity = self.identify(parts).await?;
        // A render the kept-page layer follows: the watch learns what it reads, before it reads.
        let render = kept::Render::of(parts);
        if let Some(render) = &render {
            render.reader(&identity);
            if self.engine.watch_key(render.watch(), key).is_err() {
                render.spoil();
            }
        }
        let loaded = self.engine.load(key, identity).await;
        if let (Some(render), Err(_)) = (&render, &loaded) {
            render.spoil();
        }
        loaded
    }

    /// Whether the sender of the request with these parts may read `request` (`todos(list_id)`)
    /// ([`SyncError::Forbidden`] when it may not), without running it: for a layer that answers
    /// a page with 404 before it renders (no header is written during a render).
    pub async fn may_read<Q: sssync_core::Query>(
        &self,
        request: sssync_core::Request<Q>,
        parts: Option<&Parts>,
    ) -> Result<(), SyncError> {
        let key = request
            .key()
            .map_err(|e| SyncError::BadRequest(e.to_string()))?;
        let identity = self.identify(parts).await?;
        self.engine.may_read(&key, identity).await
    }

    /// Applies an event from the server on behalf of the current request's identity (a plain
    /// form post without a form key; a job outside any request: anonymous).
    pub async fn apply<E: Event>(&self, event: &E) -> Result<(), SyncError> {
        let args =
            serde_json::to_string(event).map_err(|e| SyncError::BadRequest(e.to_string()))?;
        let identity = self.current_identity().await?;
        self.engine.apply(identity, None, E::NAME, &args).await
    }

    /// Applies an event at most once per `idempotency_key` (a second call with the same key is
    /// acknowledged and not applied again).
    pub async fn apply_once<E: Event>(
        &self,
        idempotency_key: &str,
        event: &E,
    ) -> Result<(), SyncError> {
        let args =
            serde_json::to_string(event).map_err(|e| SyncError::BadRequest(e.to_string()))?;
        let identity = self.current_identity().await?;
        self.engine
            .apply(identity, Some(idempotency_key), E::NAME, &args)
            .await
    }
}

/// Applies `event` through the [`SyncServer`] in context: the body of an event's server
/// function, so that a plain `<form>` works without JavaScript.
pub async fn apply<E: Event>(event: &E) -> Result<(), SyncError> {
    sync_server()?.apply(event).await
}

/// Like [`apply`], at most once per submission of a rendered form: `form_key` is the value of
/// the form's [`FormKey`](crate::FormKey) field (none or empty: like [`apply`]), `fields` the
/// other fields as posted. A resubmission of the same form with the same fields (the browser's
/// resend, a double click) is acknowledged without being applied again; the same form posted
/// with other fields (from a page the back button brought back, say) is another write.
pub async fn apply_form<E: Event>(
    form_key: Option<&str>,
    fields: &impl serde::Serialize,
    event: &E,
) -> Result<(), SyncError> {
    match form_key.filter(|k| !k.is_empty()) {
        Some(k) => {
            let fields =
                serde_json::to_string(fields).map_err(|e| SyncError::BadRequest(e.to_string()))?;
            let key = format!("form\u{0}{k}\u{0}{}\u{0}{fields}", E::NAME);
            sync_server()?.apply_once(&key, event).await
        }
        None => apply(event).await,
    }
}

fn sync_server() -> Result<SyncServer, SyncError> {
    use_context::<SyncServer>()
        .ok_or_else(|| SyncError::Internal("no SyncServer in this request's context".into()))
}

/// The route list of `app` (what `leptos_axum::generate_route_list` makes), built once per
/// process and app type: Leptos suppresses every resource load, process-wide, while it builds
/// one (it renders the app once), so a page rendering meanwhile would never finish
/// (leptos#4773). A second router of the same app (another server in the same process, a test)
/// reuses the first one's list. [`SyncServer::app_router`] uses it; an app that builds its own
/// router should too.
pub fn route_list<A, AV>(app: A) -> Vec<leptos_axum::AxumRouteListing>
where
    A: Fn() -> AV + Clone + Send + Sync + 'static,
    AV: IntoView + 'static,
{
    use std::any::TypeId;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static LISTS: OnceLock<Mutex<HashMap<TypeId, Vec<leptos_axum::AxumRouteListing>>>> =
        OnceLock::new();
    let mut lists = LISTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    lists
        .entry(TypeId::of::<A>())
        .or_insert_with(|| leptos_axum::generate_route_list(app))
        .clone()
}
