//! The server functions. Every write is one, reachable two ways:
//! - from the hydrated page, as a Leptos server action (the page stays, the list refetches);
//! - from a plain `<form method="post">` without JavaScript: the server applies it and answers
//!   `303 See Other` back to the page the form was on (see [`TodoError`] for how an error gets
//!   there: a one-shot cookie that the next render shows in the alert).

use crate::model::Todo;
use leptos::prelude::*;
use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// Every way a todo operation can fail; crosses the wire typed (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TodoError {
    /// The title is longer than [`crate::model::MAX_TITLE_CHARS`] characters.
    #[error(
        "A todo can have at most {max} characters; this one has {chars}.",
        max = crate::model::MAX_TITLE_CHARS
    )]
    TitleTooLong {
        /// The trimmed title's length in characters.
        chars: usize,
    },
    /// A list or todo id that is not 1 to 64 ASCII letters, digits, `-` or `_`.
    #[error("Invalid id {0:?}.")]
    BadId(String),
    /// The database failed; nothing was changed.
    #[error("The database failed: {0}")]
    Storage(String),
    /// The request itself failed (network, encoding, no such server function).
    #[error("The request failed: {0}")]
    Request(String),
}

impl FromServerFnError for TodoError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        TodoError::Request(value.to_string())
    }
}

#[cfg(feature = "ssr")]
impl From<sqlx::Error> for TodoError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        TodoError::Storage(e.to_string())
    }
}

#[cfg(feature = "ssr")]
fn check_id(id: &str) -> Result<(), TodoError> {
    if crate::model::valid_id(id) {
        Ok(())
    } else {
        Err(TodoError::BadId(id.chars().take(80).collect()))
    }
}

#[cfg(feature = "ssr")]
fn pool() -> Result<crate::db::Pool, TodoError> {
    use_context::<crate::db::Pool>()
        .ok_or_else(|| TodoError::Storage("no database in this request's context".into()))
}

/// The todos of list `list_id`, in their order (an unknown list is empty).
#[server(endpoint = "list_todos")]
pub async fn list_todos(list_id: String) -> Result<Vec<Todo>, TodoError> {
    check_id(&list_id)?;
    Ok(crate::db::list(&pool()?, &list_id).await?)
}

/// Adds a todo at the bottom of the list. The title is trimmed; an empty one adds nothing.
#[server(endpoint = "add_todo")]
pub async fn add_todo(list_id: String, title: String) -> Result<(), TodoError> {
    let result = async {
        check_id(&list_id)?;
        if let Some(title) = crate::model::clean_title(&title)? {
            crate::db::add(&pool()?, &list_id, &title).await?;
        }
        Ok(())
    }
    .await;
    form::finish(&result);
    result
}

/// Marks one todo completed or not.
#[server(endpoint = "toggle_todo")]
pub async fn toggle_todo(list_id: String, id: String, completed: bool) -> Result<(), TodoError> {
    let result = async {
        check_id(&list_id)?;
        check_id(&id)?;
        crate::db::set_completed(&pool()?, &list_id, &id, completed).await?;
        Ok(())
    }
    .await;
    form::finish(&result);
    result
}

/// Changes a todo's title (trimmed); an empty title deletes the todo.
#[server(endpoint = "edit_todo")]
pub async fn edit_todo(list_id: String, id: String, title: String) -> Result<(), TodoError> {
    let result = async {
        check_id(&list_id)?;
        check_id(&id)?;
        let pool = pool()?;
        match crate::model::clean_title(&title)? {
            Some(title) => crate::db::set_title(&pool, &list_id, &id, &title).await?,
            None => crate::db::delete(&pool, &list_id, &id).await?,
        }
        Ok(())
    }
    .await;
    form::finish(&result);
    result
}

/// Deletes one todo.
#[server(endpoint = "delete_todo")]
pub async fn delete_todo(list_id: String, id: String) -> Result<(), TodoError> {
    let result = async {
        check_id(&list_id)?;
        check_id(&id)?;
        crate::db::delete(&pool()?, &list_id, &id).await?;
        Ok(())
    }
    .await;
    form::finish(&result);
    result
}

/// Marks every todo of the list completed, or every one not completed.
#[server(endpoint = "toggle_all")]
pub async fn toggle_all(list_id: String, completed: bool) -> Result<(), TodoError> {
    let result = async {
        check_id(&list_id)?;
        crate::db::set_all_completed(&pool()?, &list_id, completed).await?;
        Ok(())
    }
    .await;
    form::finish(&result);
    result
}

/// Deletes the completed todos of the list.
#[server(endpoint = "clear_completed")]
pub async fn clear_completed(list_id: String) -> Result<(), TodoError> {
    let result = async {
        check_id(&list_id)?;
        crate::db::clear_completed(&pool()?, &list_id).await?;
        Ok(())
    }
    .await;
    form::finish(&result);
    result
}

/// The plain-form (no JavaScript) side of the server functions.
#[cfg(feature = "ssr")]
pub mod form {
    use super::TodoError;
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
    pub fn finish<T>(result: &Result<T, TodoError>) {
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
