//! The demo's own server functions: what the pages read besides sync queries (who is signed
//! in, whom a list is shared with). The writes are sync events (`model.rs`), each its own
//! server function.

use leptos::prelude::*;
pub use sssync_leptos::SyncError;

/// Who is signed in: the user's name, or `None`.
#[server(endpoint = "me")]
pub async fn current_user() -> Result<Option<String>, SyncError> {
    let sync = use_context::<sssync_leptos::server::SyncServer>()
        .ok_or_else(|| SyncError::Internal("no SyncServer in context".into()))?;
    let pool = use_context::<crate::db::Pool>()
        .ok_or_else(|| SyncError::Internal("no database in context".into()))?;
    let identity = sync.current_identity().await?;
    let Some(id) = identity.id() else {
        return Ok(None);
    };
    crate::auth::user_name(&pool, id)
        .await
        .map_err(|e| SyncError::Internal(e.to_string()))
}

/// Whom a private list is shared with, when the signed-in user owns it (`None` otherwise:
/// a public list, or someone else's).
#[server(endpoint = "sharing")]
pub async fn list_sharing(list_id: String) -> Result<Option<Vec<String>>, SyncError> {
    let sync = use_context::<sssync_leptos::server::SyncServer>()
        .ok_or_else(|| SyncError::Internal("no SyncServer in context".into()))?;
    let pool = use_context::<crate::db::Pool>()
        .ok_or_else(|| SyncError::Internal("no database in context".into()))?;
    let identity = sync.current_identity().await?;
    let Some(user) = identity.id() else {
        return Ok(None);
    };
    crate::auth::shared_with(&pool, &list_id, user)
        .await
        .map_err(|e| SyncError::Internal(e.to_string()))
}
