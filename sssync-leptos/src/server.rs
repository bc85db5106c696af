//! The server side (feature `ssr`): the engine behind the components' queries and the
//! applications' server functions.

use crate::{Loaded, SyncError};
use leptos::prelude::*;
use sssync_core::protocol::ServerMsg;
use sssync_core::server::Parts;
use sssync_core::server::{BoxFuture, Engine, EngineError, Identity, QueryCtx, Store};
use sssync_core::{Event, QueryKey};
use std::sync::Arc;

/// What the components need from an engine, whatever its store.
trait Source: Send + Sync + 'static {
    fn identify<'a>(&'a self, parts: &'a Parts) -> BoxFuture<'a, Identity>;
    fn who(&self, identity: &Identity) -> Option<String>;
    fn load<'a>(
        &'a self,
        key: &'a QueryKey,
        identity: Identity,
    ) -> BoxFuture<'a, Result<Loaded, SyncError>>;
    fn apply<'a>(
        &'a self,
        identity: Identity,
        once: Option<&'a str>,
        name: &'a str,
        args: &'a str,
    ) -> BoxFuture<'a, Result<(), SyncError>>;
}

impl<S: Store> Source for Engine<S> {
    fn identify<'a>(&'a self, parts: &'a Parts) -> BoxFuture<'a, Identity> {
        Box::pin(Engine::identify(self, parts))
    }

    fn who(&self, identity: &Identity) -> Option<String> {
        Engine::who(self, identity)
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
                q: key.name().to_owned(),
                a: key.args_json().to_owned(),
                epoch: self.epoch().clone(),
                version,
                rows: rows.into_rows(),
            })
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
            let answer = match once {
                Some(key) => self.apply_once_as(&identity, key, name, args).await,
                None => self.apply_server_event_as(&identity, name, args).await,
            };
            match answer.map_err(engine_error)? {
                ServerMsg::Ack(_) => Ok(()),
                ServerMsg::Reject(r) => Err(SyncError::Rejected(r.error)),
                ServerMsg::Retry(r) => Err(SyncError::Internal(r.message)),
                other => Err(SyncError::Internal(format!("unexpected answer {other:?}"))),
            }
        })
    }
}

fn engine_error(e: EngineError) -> SyncError {
    match e {
        EngineError::Forbidden(m) => SyncError::Forbidden(m),
        EngineError::UnknownQuery(_) | EngineError::BadArgs(_) => {
            SyncError::BadRequest(e.to_string())
        }
        other => SyncError::Internal(other.to_string()),
    }
}

/// The engine, as the components and server functions of one app see it. Provide it in the
/// routes' context (`leptos_routes_with_context`), next to the engine's own router.
#[derive(Clone)]
pub struct SyncServer(Arc<dyn Source>);

impl SyncServer {
    /// Wraps an engine.
    pub fn new<S: Store>(engine: Engine<S>) -> SyncServer {
        SyncServer(Arc::new(engine))
    }

    /// Who sent the request with these parts, as the engine's `identify` says (anonymous
    /// without a request).
    pub async fn identify(&self, parts: Option<&Parts>) -> Identity {
        match parts {
            Some(p) => self.0.identify(p).await,
            None => Identity::anonymous(),
        }
    }

    /// Who sent the current request (the Leptos request context's parts).
    pub async fn current_identity(&self) -> Identity {
        let parts = use_context::<Parts>();
        self.identify(parts.as_ref()).await
    }

    /// The opaque tag of `identity` its browser's client sees in its welcome.
    pub fn who(&self, identity: &Identity) -> Option<String> {
        self.0.who(identity)
    }

    /// The rows of `key` at one version for an anonymous reader (in-process: no HTTP).
    pub async fn load(&self, key: &QueryKey) -> Result<Loaded, SyncError> {
        self.0.load(key, Identity::anonymous()).await
    }

    /// The rows of `key` at one version, as the sender of the request with these parts may
    /// read them ([`SyncError::Forbidden`] when it may not).
    pub async fn load_for(
        &self,
        key: &QueryKey,
        parts: Option<&Parts>,
    ) -> Result<Loaded, SyncError> {
        let identity = self.identify(parts).await;
        self.0.load(key, identity).await
    }

    /// Applies an event from the server on behalf of the current request's identity (a plain
    /// form post without a form key; a job outside any request: anonymous).
    pub async fn apply<E: Event>(&self, event: &E) -> Result<(), SyncError> {
        let args =
            serde_json::to_string(event).map_err(|e| SyncError::BadRequest(e.to_string()))?;
        let identity = self.current_identity().await;
        self.0.apply(identity, None, E::NAME, &args).await
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
        let identity = self.current_identity().await;
        self.0
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
