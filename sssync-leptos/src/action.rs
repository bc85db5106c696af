//! Events as Leptos server actions: what `#[sync_event]` expands to.
//!
//! An event type is its own server function (its fields are the form's fields), so Leptos's
//! `ServerAction`, `<ActionForm>`, `<MultiActionForm>` and `.dispatch(…)` work with it:
//!
//! - **in the browser** `run_on_client` does not post the form: it predicts the event and sends
//!   it over the tab's sync connection (exactly once, also after going offline or a reload), and
//!   answers when the server has settled it: `Ok(())` once applied, the server's rejection
//!   otherwise. The action's `pending()` and `value()` follow;
//! - **without JavaScript** the browser posts the form to the event's URL (`/api/{name}`); the
//!   server applies the event through the engine, at most once per rendered form (its
//!   [`FormKey`](crate::FormKey) field), and sends the browser back (to the page the form was
//!   on, or to the form's `sssync_next` field). A rejection rides the URL back (`__path`,
//!   `__err`: Leptos's own form-redirect errors), where the page's `ServerAction` for that
//!   event finds it as its value.

use crate::SyncError;
use sssync_core::Event;
use std::future::Future;

/// The name of the optional hidden field that says where the browser goes after a plain form
/// post that succeeded (a path on this site; default: back to the page the form was on).
pub const FORM_NEXT_FIELD: &str = "sssync_next";

/// The events the browser can send as actions: what `#[sync_event]` declares.
pub trait SyncAction:
    Event + leptos::server_fn::ServerFn<Output = (), Error = SyncError> + Clone + Send + Sync + 'static
{
}

impl<E> SyncAction for E where
    E: Event
        + leptos::server_fn::ServerFn<Output = (), Error = SyncError>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The client type of every event's server function.
pub type ActionClient = leptos::server_fn::client::browser::BrowserClient;

/// The server type of every event's server function.
#[cfg(feature = "ssr")]
pub type ActionServer = leptos::server_fn::axum::AxumServerFnBackend;
/// The server type of every event's server function.
#[cfg(not(feature = "ssr"))]
pub type ActionServer = leptos::server_fn::mock::BrowserMockServer;

/// The protocol of every event's server function: a form post answered with JSON.
pub type ActionProtocol =
    leptos::server_fn::Http<leptos::server_fn::codec::PostUrl, leptos::server_fn::codec::Json>;

/// The request an event's server function receives on the server.
pub type ActionRequest = <ActionServer as leptos::server_fn::server::Server<SyncError>>::Request;
/// The response an event's server function answers on the server.
pub type ActionResponse = <ActionServer as leptos::server_fn::server::Server<SyncError>>::Response;

/// An action's dispatch: in the browser, through the sync connection; on the server (an action
/// dispatched during a server render, or called as a function), through the engine.
pub fn run_on_client<E: Event>(event: E) -> impl Future<Output = Result<(), SyncError>> + Send {
    #[cfg(feature = "browser")]
    {
        send_wrapper::SendWrapper::new(dispatch(event))
    }
    #[cfg(all(feature = "ssr", not(feature = "browser")))]
    {
        run_body(event)
    }
    #[cfg(not(any(feature = "ssr", feature = "browser")))]
    {
        let _ = event;
        std::future::ready(Err(SyncError::Internal(
            "sssync-leptos needs the ssr, hydrate or csr feature".into(),
        )))
    }
}

/// The body of an event's server function called as a function on the server: applies it
/// through the engine, for the current request's identity.
pub fn run_body<E: Event>(event: E) -> impl Future<Output = Result<(), SyncError>> + Send {
    #[cfg(feature = "ssr")]
    {
        async move { crate::server::apply(&event).await }
    }
    #[cfg(not(feature = "ssr"))]
    {
        let _ = event;
        std::future::ready(Err(SyncError::Internal(
            "an event's server function runs on the server".into(),
        )))
    }
}

/// The longest form an event's server function reads, in bytes.
#[cfg(feature = "ssr")]
const MAX_FORM_BYTES: usize = 256 * 1024;

/// An event's server function on the server: see the module's docs.
#[cfg(feature = "ssr")]
pub async fn run_on_server<E>(req: ActionRequest) -> ActionResponse
where
    E: Event
        + leptos::server_fn::ServerFn<
            Output = (),
            Error = SyncError,
            InputStreamError = SyncError,
            OutputStreamError = SyncError,
            Server = ActionServer,
            Client = ActionClient,
            Protocol = ActionProtocol,
        >,
{
    use axum::body::Body;
    use axum::http::header;
    use leptos::server_fn::Protocol;
    use leptos::server_fn::error::{FromServerFnError, ServerFnUrlError};
    use leptos::server_fn::response::Res;

    let (parts, body) = req.into_parts();
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    // Posted by a browser's own form (no JavaScript): answer with a redirect.
    let from_form = header(header::ACCEPT).is_some_and(|v| v.contains("text/html"));
    let back = back_path(
        header(header::REFERER).as_deref(),
        header(header::HOST).as_deref(),
    );
    let answer = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Err(_) => Err(SyncError::BadRequest(format!(
            "the form could not be read (cut off, or larger than {MAX_FORM_BYTES} bytes)"
        ))),
        Ok(bytes) => {
            let form = Posted::parse(&bytes);
            let next = form.next.clone();
            let req = axum::http::Request::from_parts(parts, Body::from(bytes));
            let run = move |event: E| {
                let (key, fields) = (form.key.clone(), form.fields.clone());
                async move { crate::server::apply_form(key.as_deref(), &fields, &event).await }
            };
            <ActionProtocol as Protocol<E, (), ActionClient, ActionServer, SyncError>>::run_server(
                req, run,
            )
            .await
            .map(|res| (res, next))
        }
    };
    let (mut res, outcome) = match answer {
        Ok((res, next)) => (res, Ok(next)),
        Err(e) => {
            let mut res = ActionResponse::error_response(E::PATH, e.ser());
            res.content_type(
                <<SyncError as FromServerFnError>::Encoder as leptos::server_fn::ContentType>::CONTENT_TYPE,
            );
            (res, Err(e))
        }
    };
    if from_form {
        let back = without_form_error(&back);
        let location = match outcome {
            // Leptos's form-redirect errors: the page's action for this event finds them. (The
            // URL is made on a stand-in origin; only its path and query are sent.)
            Err(e) => ServerFnUrlError::new(E::PATH, e)
                .to_url(&format!("http://sssync.invalid{back}"))
                .map(|u| match u.query() {
                    Some(q) => format!("{}?{q}", u.path()),
                    None => u.path().to_owned(),
                })
                .unwrap_or(back),
            Ok(Some(next)) => next,
            Ok(None) => back,
        };
        res.redirect(&location);
    }
    res
}

/// An event's server function off the server (never called: the browser posts to the server).
#[cfg(not(feature = "ssr"))]
pub fn run_on_server<E>(req: ActionRequest) -> impl Future<Output = ActionResponse> + Send {
    let _ = req;
    async { panic!("an event's server function runs on the server") }
}

/// What a plain form posted besides the event's fields.
#[cfg(feature = "ssr")]
#[derive(Debug, PartialEq)]
struct Posted {
    /// Its [`FormKey`](crate::FormKey), if any.
    key: Option<String>,
    /// Where to go after a success: a path on this site.
    next: Option<String>,
    /// The other fields, as posted (what makes a resubmission the same write).
    fields: String,
}

#[cfg(feature = "ssr")]
impl Posted {
    fn parse(body: &[u8]) -> Posted {
        let mut key = None;
        let mut next = None;
        let mut fields = Vec::new();
        for pair in body.split(|b| *b == b'&') {
            let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
            let value = || {
                let raw = &pair[(name.len() + 1).min(pair.len())..];
                percent_decode(raw)
            };
            if name == crate::FORM_KEY_FIELD.as_bytes() {
                key = Some(value()).filter(|k| !k.is_empty());
            } else if name == FORM_NEXT_FIELD.as_bytes() {
                next = Some(value()).filter(|p| same_site_path(p));
            } else {
                fields.push(String::from_utf8_lossy(pair).into_owned());
            }
        }
        Posted {
            key,
            next,
            fields: fields.join("&"),
        }
    }
}

/// Whether `p` is a path on this site: it starts with one `/`, and has no backslash, space or
/// control character (which browsers drop or turn into `/`, so that `/\t/host` would be
/// `//host`, another site).
#[cfg(feature = "ssr")]
fn same_site_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\')
}

/// `back` without an earlier form's error (Leptos's `__path` and `__err`), and without an empty
/// query left behind.
#[cfg(feature = "ssr")]
fn without_form_error(back: &str) -> String {
    let (path, query) = back.split_once('?').unwrap_or((back, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("__path=") && !kv.starts_with("__err="))
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// The path and query of `referer` when it is a page of this site (`host`), else `/`: the
/// way back never leads to another site.
#[cfg(feature = "ssr")]
fn back_path(referer: Option<&str>, host: Option<&str>) -> String {
    let (Some(referer), Some(host)) = (referer, host) else {
        return "/".to_owned();
    };
    let Some(rest) = referer.split_once("://").map(|(_, rest)| rest) else {
        return "/".to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !authority.eq_ignore_ascii_case(host) {
        return "/".to_owned();
    }
    let path = if path.is_empty() { "/" } else { path };
    let path = path.split('#').next().unwrap_or("/");
    if same_site_path(path) {
        path.to_owned()
    } else {
        "/".to_owned()
    }
}

#[cfg(feature = "ssr")]
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'+' {
            out.push(b' ');
        } else if b == b'%'
            && let Some(h) = raw
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(h);
            i += 3;
            continue;
        } else {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The Leptos server function of an event (what `#[sync_event]` expands to).
#[macro_export]
#[doc(hidden)]
macro_rules! __server_action {
    ($event:ty, $path:expr) => {
        impl $crate::__private::server_fn::ServerFn for $event {
            const PATH: &'static str = $path;
            type Client = $crate::__private::ActionClient;
            type Server = $crate::__private::ActionServer;
            type Protocol = $crate::__private::ActionProtocol;
            type Output = ();
            type Error = $crate::SyncError;
            type InputStreamError = $crate::SyncError;
            type OutputStreamError = $crate::SyncError;

            fn run_body(
                self,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<(), $crate::SyncError>>
            + ::core::marker::Send {
                $crate::__private::run_body(self)
            }

            fn run_on_server(
                req: $crate::__private::ActionRequest,
            ) -> impl ::core::future::Future<Output = $crate::__private::ActionResponse>
            + ::core::marker::Send {
                $crate::__private::run_on_server::<Self>(req)
            }

            fn run_on_client(
                self,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<(), $crate::SyncError>>
            + ::core::marker::Send {
                $crate::__private::run_on_client(self)
            }
        }

        $crate::__private::__if_server! {
            $crate::__private::server_fn::inventory::submit! {
                $crate::__private::server_fn::ServerFnTraitObj::new::<$event>(|req| {
                    ::std::boxed::Box::pin(
                        <$event as $crate::__private::server_fn::ServerFn>::run_on_server(req),
                    )
                })
            }
        }
    };
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;

    #[test]
    fn the_way_back_after_a_plain_form_stays_on_this_site() {
        let host = Some("127.0.0.1:3000");
        let back = |r: &str| back_path(Some(r), host);
        assert_eq!(back("http://127.0.0.1:3000/lists/a?x=1"), "/lists/a?x=1");
        assert_eq!(back("http://127.0.0.1:3000"), "/");
        assert_eq!(back("https://evil.example/lists/a"), "/");
        assert_eq!(back("http://127.0.0.1:3000//evil.example/x"), "/");
        assert_eq!(back_path(None, host), "/");
        assert_eq!(back_path(Some("/lists/a"), host), "/");
        assert_eq!(without_form_error("/?__path=%2Fapi%2Fx&__err=abc"), "/");
        assert_eq!(without_form_error("/l?edit=1&__err=abc"), "/l?edit=1");
    }

    #[test]
    fn a_posted_form_splits_into_its_key_its_next_page_and_the_events_fields() {
        let p =
            Posted::parse(b"list_id=a&title=milk+%26+eggs&sssync_key=k1&sssync_next=%2Flists%2Fa");
        assert_eq!(p.key.as_deref(), Some("k1"));
        assert_eq!(p.next.as_deref(), Some("/lists/a"));
        assert_eq!(p.fields, "list_id=a&title=milk+%26+eggs");
        // Another site is never a next page.
        let p = Posted::parse(b"sssync_next=%2F%2Fevil.example%2Fx&sssync_key=");
        assert_eq!(p.next, None);
        assert_eq!(p.key, None);
        // Nor a path a browser would read as one (a tab or a backslash after the slash).
        assert_eq!(
            Posted::parse(b"sssync_next=%2F%09%2Fevil.example").next,
            None
        );
        assert_eq!(Posted::parse(b"sssync_next=%2F%5Cevil.example").next, None);
        assert_eq!(percent_decode(b"a%2"), "a%2");
        assert_eq!(percent_decode(b"%e2%9c%93"), "✓");
    }
}

/// Sends `event` through the tab's sync client and answers once the server settled it (what an
/// event's action does in the browser).
#[cfg(feature = "browser")]
pub(crate) fn dispatch<E: Event>(
    event: E,
) -> impl std::future::Future<Output = Result<(), SyncError>> {
    use leptos::prelude::*;
    let client = crate::client::TAB_CLIENT.with(std::cell::Cell::get);
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
