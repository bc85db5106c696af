//! Every event is also a server function, for plain `<form method="post">`s without
//! JavaScript: the server applies the event through the sync engine (so every connected browser
//! sees it) and answers `303 See Other` back to the page the form was on; an error rides a
//! one-shot cookie to the next render's alert. With JavaScript the same forms' submits are
//! handled in the browser instead, as sync events (see `app.rs`).

#[cfg(feature = "ssr")]
use crate::model::{
    AddTodo, ClearCompleted, CreateList, DeleteTodo, EditTodo, ShareList, ToggleAll, ToggleTodo,
    UnshareList,
};
use leptos::prelude::*;
pub use sssync_leptos::SyncError;

/// Applies one event from a plain form post (once per form key: a resubmitted form is not
/// applied again), then sends the browser back.
#[cfg(feature = "ssr")]
async fn apply<E: sssync_leptos::Event>(
    event: E,
    fields: impl serde::Serialize,
    sssync_key: Option<String>,
) -> Result<(), SyncError> {
    let result = sssync_leptos::server::apply_form(sssync_key.as_deref(), &fields, &event).await;
    form::finish(&result);
    result
}

/// Adds a todo (form: `list_id`, `title`).
#[server(endpoint = "add_todo")]
pub async fn add_todo_form(
    list_id: String,
    title: String,
    sssync_key: Option<String>,
) -> Result<(), SyncError> {
    let fields = (list_id.clone(), title.clone());
    apply(
        AddTodo {
            id: sssync_leptos::new_id(),
            list_id,
            title,
        },
        fields,
        sssync_key,
    )
    .await
}

/// Marks one todo completed or not (form: `list_id`, `id`, `completed`).
#[server(endpoint = "toggle_todo")]
pub async fn toggle_todo_form(
    list_id: String,
    id: String,
    completed: bool,
    sssync_key: Option<String>,
) -> Result<(), SyncError> {
    let event = ToggleTodo {
        list_id,
        id,
        completed,
    };
    apply(event.clone(), event, sssync_key).await
}

/// Changes a todo's title; empty deletes it (form: `list_id`, `id`, `title`).
#[server(endpoint = "edit_todo")]
pub async fn edit_todo_form(
    list_id: String,
    id: String,
    title: String,
    sssync_key: Option<String>,
) -> Result<(), SyncError> {
    let event = EditTodo { list_id, id, title };
    apply(event.clone(), event, sssync_key).await
}

/// Deletes one todo (form: `list_id`, `id`).
#[server(endpoint = "delete_todo")]
pub async fn delete_todo_form(
    list_id: String,
    id: String,
    sssync_key: Option<String>,
) -> Result<(), SyncError> {
    let event = DeleteTodo { list_id, id };
    apply(event.clone(), event, sssync_key).await
}

/// Marks every todo of the list completed or not (form: `list_id`, `completed`).
#[server(endpoint = "toggle_all")]
pub async fn toggle_all_form(
    list_id: String,
    completed: bool,
    sssync_key: Option<String>,
) -> Result<(), SyncError> {
    let event = ToggleAll { list_id, completed };
    apply(event.clone(), event, sssync_key).await
}

/// Deletes the completed todos (form: `list_id`).
#[server(endpoint = "clear_completed")]
pub async fn clear_completed_form(
    list_id: String,
    sssync_key: Option<String>,
) -> Result<(), SyncError> {
    let event = ClearCompleted { list_id };
    apply(event.clone(), event, sssync_key).await
}

/// Makes a private list owned by the signed-in user and opens it (form: nothing).
#[server(endpoint = "create_list")]
pub async fn create_list_form(sssync_key: Option<String>) -> Result<(), SyncError> {
    // The form's key names the list: a resubmitted form opens the list it made.
    let id = sssync_key
        .clone()
        .filter(|k| crate::model::valid_id(k))
        .unwrap_or_else(sssync_leptos::new_id);
    let result = apply(CreateList { id: id.clone() }, (), sssync_key).await;
    if result.is_ok() {
        leptos_axum::redirect(&format!("/lists/{id}"));
    }
    result
}

/// Shares a private list with a user, by name (form: `list_id`, `user_name`).
#[server(endpoint = "share_list")]
pub async fn share_list_form(
    list_id: String,
    user_name: String,
    sssync_key: Option<String>,
) -> Result<(), SyncError> {
    let event = ShareList { list_id, user_name };
    apply(event.clone(), event, sssync_key).await
}

/// Stops sharing a private list with a user (form: `list_id`, `user_name`).
#[server(endpoint = "unshare_list")]
pub async fn unshare_list_form(
    list_id: String,
    user_name: String,
    sssync_key: Option<String>,
) -> Result<(), SyncError> {
    let event = UnshareList { list_id, user_name };
    apply(event.clone(), event, sssync_key).await
}

/// Who is signed in: the user's name, or `None`.
#[server(endpoint = "me")]
pub async fn current_user() -> Result<Option<String>, SyncError> {
    let sync = use_context::<sssync_leptos::server::SyncServer>()
        .ok_or_else(|| SyncError::Internal("no SyncServer in context".into()))?;
    let pool = use_context::<crate::db::Pool>()
        .ok_or_else(|| SyncError::Internal("no database in context".into()))?;
    let identity = sync.current_identity().await;
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
    let identity = sync.current_identity().await;
    let Some(user) = identity.id() else {
        return Ok(None);
    };
    crate::auth::shared_with(&pool, &list_id, user)
        .await
        .map_err(|e| SyncError::Internal(e.to_string()))
}

/// The plain-form (no JavaScript) side of the server functions.
#[cfg(feature = "ssr")]
pub mod form {
    use super::SyncError;
    use axum::http::{HeaderValue, StatusCode, header, request::Parts};
    use leptos::prelude::*;
    use leptos_axum::ResponseOptions;

    /// The cookie that carries an error message from a form post to the next render.
    pub const FLASH_COOKIE: &str = "sssync_demo_flash";

    /// Whether this request is a plain form post from a browser (not a server-action call, which
    /// asks for JSON).
    fn is_form_post(parts: &Parts) -> bool {
        parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
    }

    /// After a plain form post: send the browser back (303) to the page the form was on, minus the
    /// one-shot `edit` parameter; on error, with the message in [`FLASH_COOKIE`].
    pub fn finish<T>(result: &Result<T, SyncError>) {
        let (Some(parts), Some(res)) = (use_context::<Parts>(), use_context::<ResponseOptions>())
        else {
            return;
        };
        if !is_form_post(&parts) {
            return;
        }
        let back = parts
            .headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .map(back_location)
            .unwrap_or_else(|| "/".to_owned());
        if let Ok(location) = HeaderValue::from_str(&back) {
            res.set_status(StatusCode::SEE_OTHER);
            res.insert_header(header::LOCATION, location);
        }
        if let Err(e) = result {
            let cookie = format!(
                "{FLASH_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=60",
                percent_encode(&e.to_string())
            );
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                res.append_header(header::SET_COOKIE, cookie);
            }
        }
    }

    /// During a page render: the error message a form post left, if any, and clear it so that it
    /// shows once.
    pub fn take_flash() -> Option<String> {
        let parts = use_context::<Parts>()?;
        let value = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| kv.trim().strip_prefix(FLASH_COOKIE)?.strip_prefix('='))?
            .to_owned();
        if let Some(res) = use_context::<ResponseOptions>() {
            res.append_header(
                header::SET_COOKIE,
                HeaderValue::from_static("sssync_demo_flash=; Path=/; Max-Age=0"),
            );
        }
        let message = percent_decode(&value);
        (!message.is_empty()).then_some(message)
    }

    /// The path and query of a Referer URL, without the `edit` parameter. Only the path is kept,
    /// so the redirect never leaves this site.
    pub fn back_location(referer: &str) -> String {
        let after_scheme = referer.split_once("://").map_or(referer, |(_, rest)| rest);
        let path_and_query = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        // "//host/x" would be another site: keep one leading slash.
        let path = format!("/{}", path.trim_start_matches('/'));
        let query: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("edit="))
            .collect();
        if query.is_empty() {
            path
        } else {
            format!("{path}?{}", query.join("&"))
        }
    }

    fn percent_encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && let Some(b) = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn back_location_keeps_the_path_and_drops_edit() {
            assert_eq!(
                back_location("http://127.0.0.1:3000/lists/a/active?edit=x1"),
                "/lists/a/active"
            );
            assert_eq!(
                back_location("http://h/lists/a?x=1&edit=2&y=3"),
                "/lists/a?x=1&y=3"
            );
            assert_eq!(back_location("http://h"), "/");
            assert_eq!(
                back_location("https://evil.example//other.site/x"),
                "/other.site/x"
            );
        }

        #[test]
        fn flash_messages_survive_the_cookie() {
            let m = "A todo can have at most 200 characters; this one has 201. ✓";
            assert_eq!(percent_decode(&percent_encode(m)), m);
        }
    }
}
