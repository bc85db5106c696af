//! Kept pages: the server render of a public page, kept and answered again at static-file
//! speed while everything it read is unchanged, and rendered again the moment it is not.
//!
//! A page is kept when an anonymous visitor `GET`s it and its render succeeds (200, HTML, no
//! cookie set, every query it read loaded): its body, keyed by its URL, with a [`ChangeWatch`]
//! told the dependencies of every query the render read *before* reading it. The engine turns
//! the watch when it fans out a commit touching one of them, before that commit's writes are
//! acknowledged: a `GET` after a write's acknowledgement renders again and shows it. Only
//! anonymous visitors' pages are kept or answered (a signed-in visitor's page may hold what only
//! they see: their private lists, their name), so nothing crosses identities. The idempotency
//! key of every form on the page (`<FormKey/>`, `<SyncForm>`) is made again for each answer, so
//! two visitors of one kept page who each post its form without JavaScript both get their
//! write. The app opts in (`SyncBuilder::keep_public_pages`), saying that its pages are made of
//! their URL and sync queries alone (a render that reads anything else calls [`dont_keep`]).

use super::SyncServer;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use sssync_core::server::{ChangeWatch, Parts};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The header that says how a page was answered: `kept` (from a kept render) or `rendered`.
pub const PAGE_HEADER: &str = "x-sssync-page";

/// The largest page kept; a larger one is answered, not kept.
const MAX_PAGE_BYTES: usize = 4 << 20;

/// How many pages are kept at most (with [`SyncBuilder::keep_public_pages`]'s byte budget).
///
/// [`SyncBuilder::keep_public_pages`]: super::SyncBuilder::keep_public_pages
const MAX_PAGES: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One render the kept-page layer follows (in the request's extensions, so that the queries
/// and forms it renders can report to it).
#[derive(Clone)]
pub(crate) struct Render(Arc<RenderState>);

struct RenderState {
    watch: ChangeWatch,
    form_keys: Mutex<HashSet<String>>,
    spoiled: AtomicBool,
    /// An anonymous reader loaded a query in it (so the layer need not ask who it is again).
    anonymous: AtomicBool,
}

impl Render {
    fn new() -> Render {
        Render(Arc::new(RenderState {
            watch: ChangeWatch::default(),
            form_keys: Mutex::new(HashSet::new()),
            spoiled: AtomicBool::new(false),
            anonymous: AtomicBool::new(false),
        }))
    }

    /// The render of the request with these parts, when the layer follows it.
    pub(crate) fn of(parts: Option<&Parts>) -> Option<Render> {
        parts?.extensions.get::<Render>().cloned()
    }

    /// The render of the current request (the Leptos context's parts, read in place: a form
    /// key is made for every form of a page).
    fn current() -> Option<Render> {
        leptos::prelude::with_context::<Parts, _>(|parts| Render::of(Some(parts))).flatten()
    }

    /// The watch that the queries it reads must be added to, before they are read.
    pub(crate) fn watch(&self) -> &ChangeWatch {
        &self.0.watch
    }

    /// The render must not be kept (a query failed, the app said so).
    pub(crate) fn spoil(&self) {
        self.0.spoiled.store(true, Ordering::Release);
    }

    /// Who read a query in it: a page someone signed in reads is theirs, never kept.
    pub(crate) fn reader(&self, identity: &sssync_core::server::Identity) {
        if identity.is_anonymous() {
            self.0.anonymous.store(true, Ordering::Release);
        } else {
            self.spoil();
        }
    }

    /// A form key it rendered (made again for every answer of a kept page).
    pub(crate) fn form_key(&self, key: &str) {
        lock(&self.0.form_keys).insert(key.to_owned());
    }

    fn keepable(&self) -> bool {
        !self.0.spoiled.load(Ordering::Acquire) && self.0.watch.is_current()
    }
}

/// The current render is not to be kept: it read something besides its URL and sync queries
/// (the time, a server function's data that no sync query carries). Call it in the component
/// that reads it, on the server; it does nothing elsewhere.
pub fn dont_keep() {
    if let Some(render) = Render::current() {
        render.spoil();
    }
}

/// A form key made in the current render (see [`Render::form_key`]).
pub(crate) fn form_key_made(key: &str) {
    if let Some(render) = Render::current() {
        render.form_key(key);
    }
}

/// The kept pages of one server, by URL, within a byte budget (the least recently answered go
/// first).
#[derive(Clone)]
pub(crate) struct KeptPages {
    store: Arc<Mutex<Store>>,
    max_bytes: usize,
}

#[derive(Default)]
struct Store {
    pages: HashMap<String, Page>,
    bytes: usize,
    clock: u64,
}

struct Page {
    /// The body, cut at each form key (made again for each answer between the pieces).
    pieces: Vec<Bytes>,
    content_type: Option<HeaderValue>,
    watch: ChangeWatch,
    bytes: usize,
    used: u64,
}

impl KeptPages {
    pub(crate) fn new(max_bytes: usize) -> KeptPages {
        KeptPages {
            store: Arc::default(),
            max_bytes,
        }
    }

    /// Whether a page is kept at `url` (current or not).
    fn holds(&self, url: &str) -> bool {
        lock(&self.store).pages.contains_key(url)
    }

    /// The kept page at `url`, if it is still current.
    fn answer(&self, url: &str) -> Option<Response> {
        let (pieces, content_type) = {
            let mut store = lock(&self.store);
            let page = store.pages.get(url)?;
            if !page.watch.is_current() {
                let gone = store.pages.remove(url).map_or(0, |p| p.bytes);
                store.bytes -= gone;
                return None;
            }
            store.clock += 1;
            let clock = store.clock;
            let page = store.pages.get_mut(url)?;
            page.used = clock;
            (page.pieces.clone(), page.content_type.clone())
        };
        let mut chunks = Vec::with_capacity(pieces.len() * 2);
        let mut length = 0;
        for (i, piece) in pieces.into_iter().enumerate() {
            if i > 0 {
                let key = Bytes::from(crate::event::new_id());
                length += key.len();
                chunks.push(key);
            }
            length += piece.len();
            chunks.push(piece);
        }
        let body = Body::from_stream(futures_util::stream::iter(
            chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
        ));
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, ct);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(PAGE_HEADER, HeaderValue::from_static("kept"));
        Some(response)
    }

    /// Keeps a whole render's body, if nothing spoiled it meanwhile.
    fn keep(&self, url: String, body: Vec<u8>, render: &Render, content_type: Option<HeaderValue>) {
        if !render.keepable() || body.len() > MAX_PAGE_BYTES {
            return;
        }
        let keys = std::mem::take(&mut *lock(&render.0.form_keys));
        let body = Bytes::from(body);
        let pieces = cut_at_keys(&body, &keys);
        let bytes = body.len() + url.len();
        let mut store = lock(&self.store);
        store.clock += 1;
        let page = Page {
            pieces,
            content_type,
            watch: render.watch().clone(),
            bytes,
            used: store.clock,
        };
        if let Some(old) = store.pages.insert(url, page) {
            store.bytes -= old.bytes;
        }
        store.bytes += bytes;
        // Over budget: the stale first, then the least recently answered.
        while store.bytes > self.max_bytes || store.pages.len() > MAX_PAGES {
            let victim = store
                .pages
                .iter()
                .min_by_key(|(_, p)| (p.watch.is_current(), p.used))
                .map(|(url, _)| url.clone());
            let Some(victim) = victim else { break };
            let gone = store.pages.remove(&victim).map_or(0, |p| p.bytes);
            store.bytes -= gone;
        }
    }

    /// How many pages are kept, and their bytes.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let store = lock(&self.store);
        (store.pages.len(), store.bytes)
    }
}

/// `body` cut around each occurrence of a form field's value that is one of `keys` (the
/// pieces between them; one more piece than keys found).
fn cut_at_keys(body: &Bytes, keys: &HashSet<String>) -> Vec<Bytes> {
    let marker = format!("name=\"{}\" value=\"", crate::FORM_KEY_FIELD);
    let marker = marker.as_bytes();
    let mut pieces = Vec::new();
    let (mut from, mut at) = (0, 0);
    while let Some(found) = find(&body[at..], marker) {
        let start = at + found + marker.len();
        let Some(len) = body[start..].iter().position(|b| *b == b'"') else {
            break;
        };
        let value = std::str::from_utf8(&body[start..start + len]).unwrap_or_default();
        if keys.contains(value) {
            pieces.push(body.slice(from..start));
            from = start + len;
        }
        at = start + len;
    }
    pieces.push(body.slice(from..));
    pieces
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The layer's handler: answers an anonymous `GET` from a current kept page, or renders it and
/// keeps the render as its body streams out.
pub(crate) async fn layer(
    State((sync, kept)): State<(SyncServer, KeptPages)>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let url = parts.uri.to_string();
    // `Cache-Control: no-cache` (a forced reload, a client that measures the render): rendered
    // again, and not kept.
    let fresh = parts
        .headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-cache"));
    if !fresh && kept.holds(&url) {
        // Only an anonymous visitor's page is the same for everyone.
        match sync.identify(Some(&parts)).await {
            Ok(identity) if identity.is_anonymous() => {
                if let Some(response) = kept.answer(&url) {
                    return response;
                }
            }
            _ => return next.run(Request::from_parts(parts, body)).await,
        }
    }
    let render = Render::new();
    let asker = parts.clone();
    parts.extensions.insert(render.clone());
    let mut response = next.run(Request::from_parts(parts, body)).await;
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if fresh
        || response.status() != StatusCode::OK
        || !html
        || response.headers().contains_key(header::SET_COOKIE)
    {
        return response;
    }
    response
        .headers_mut()
        .insert(PAGE_HEADER, HeaderValue::from_static("rendered"));
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let (head, body) = response.into_parts();
    // The body streams out as it renders; a copy is kept once it ended whole.
    let copy: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(Some(Vec::new())));
    let seen = copy.clone();
    let chunks = body.into_data_stream().map(move |chunk| {
        let mut copy = lock(&seen);
        match (&chunk, copy.as_mut()) {
            (Ok(bytes), Some(c)) if c.len() + bytes.len() <= MAX_PAGE_BYTES => {
                c.extend_from_slice(bytes)
            }
            _ => *copy = None,
        }
        chunk
    });
    let end = futures_util::stream::once(async move {
        let body = lock(&copy).take()?;
        let anonymous = render.0.anonymous.load(Ordering::Acquire)
            || matches!(sync.identify(Some(&asker)).await, Ok(i) if i.is_anonymous());
        if anonymous {
            kept.keep(url, body, &render, content_type);
        }
        None
    })
    .filter_map(|none: Option<Result<Bytes, axum::Error>>| async move { none });
    Response::from_parts(head, Body::from_stream(chunks.chain(end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_body_is_cut_around_its_form_keys_only() {
        let body = Bytes::from_static(
            b"<form><input type=\"hidden\" name=\"sssync_key\" value=\"k1\"/></form>\
              <input name=\"sssync_key\" value=\"other\"/>\
              <form><input type=\"hidden\" name=\"sssync_key\" value=\"k2\"/></form>",
        );
        let keys: HashSet<String> = ["k1".to_owned(), "k2".to_owned()].into();
        let pieces = cut_at_keys(&body, &keys);
        assert_eq!(pieces.len(), 3);
        let joined: Vec<u8> = pieces.join(&b"NEW"[..]);
        assert_eq!(
            std::str::from_utf8(&joined).unwrap(),
            "<form><input type=\"hidden\" name=\"sssync_key\" value=\"NEW\"/></form>\
             <input name=\"sssync_key\" value=\"other\"/>\
             <form><input type=\"hidden\" name=\"sssync_key\" value=\"NEW\"/></form>"
        );
        assert_eq!(cut_at_keys(&Bytes::from_static(b"no form"), &keys).len(), 1);
    }

    #[test]
    fn kept_pages_stay_within_their_budget_stale_ones_first() {
        let kept = KeptPages::new(3_000);
        let render = |changed: bool| {
            let r = Render::new();
            if changed {
                r.watch().set_changed();
            }
            r
        };
        kept.keep("/a".into(), vec![b'a'; 1_000], &render(false), None);
        kept.keep("/b".into(), vec![b'b'; 1_000], &render(false), None);
        assert_eq!(kept.size().0, 2);
        // A render whose data changed while it rendered is not kept.
        kept.keep("/stale".into(), vec![b's'; 10], &render(true), None);
        assert_eq!(kept.size().0, 2);
        assert!(kept.answer("/a").is_some()); // /a answered last: /b goes first
        kept.keep("/c".into(), vec![b'c'; 1_000], &render(false), None);
        let (pages, bytes) = kept.size();
        assert!(pages == 2 && bytes <= 3_000, "{pages} pages, {bytes} bytes");
        assert!(kept.answer("/b").is_none());
        assert!(kept.answer("/a").is_some() && kept.answer("/c").is_some());
    }
}
