//! Kept public pages, through the app's real router (Leptos's server render, the events' server
//! functions, the engine on a SQLite file): a kept page is answered again while current, never
//! stale after a write's acknowledgement, never answered to a signed-in visitor, and never
//! shares a form's idempotency key between visitors.
#![cfg(feature = "ssr")]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::hooks::use_params_map;
use leptos_router::{SsrMode, path};
use sssync_leptos::prelude::*;
use sssync_leptos::server::PAGE_HEADER;
use tower::ServiceExt;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct Note {
    pub id: String,
    pub text: String,
}

/// The notes of a board.
#[sync_query(key = id, reads = [notes(board)])]
pub async fn notes(conn: &mut Conn<Db>, board: String) -> Result<Vec<Note>, sqlx::Error> {
    sqlx::query_as("SELECT id, text FROM notes WHERE board = $1 ORDER BY at, id")
        .bind(board)
        .fetch_all(&mut *conn)
        .await
}

/// Adds a note.
#[sync_event]
pub struct AddNote {
    #[serde(default = "new_id")]
    pub id: String,
    pub board: String,
    pub text: String,
}

#[sync_event]
impl AddNote {
    async fn apply(&self, conn: &mut Conn<Db>, _: &EventCtx) -> Result<(), EventError> {
        sqlx::query(
            "INSERT INTO notes (id, board, text, at) \
             VALUES ($1, $2, $3, (SELECT COUNT(*) FROM notes))",
        )
        .bind(&self.id)
        .bind(&self.board)
        .bind(&self.text)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

#[component]
fn App() -> impl IntoView {
    view! {
        <SyncProvider>
            <Router>
                <Routes fallback=|| "Not found.">
                    <Route path=path!("/boards/:board") view=BoardPage ssr=SsrMode::Async />
                </Routes>
            </Router>
        </SyncProvider>
    }
}

#[component]
fn BoardPage() -> impl IntoView {
    let params = use_params_map();
    let board = move || params.read().get("board").unwrap_or_default();
    let notes = use_sync_query(move || notes(board()));
    let add = use_sync_event::<AddNote>();
    view! {
        <ul>
            <Suspense>
                {move || Suspend::new(async move {
                    notes.await.map(|rows| {
                        rows.into_iter().map(|n| view! { <li class="note">{n.text}</li> }).collect_view()
                    })
                })}
            </Suspense>
        </ul>
        <SyncForm action=add>
            <input type="hidden" name="board" value=board() />
            <input name="text" />
        </SyncForm>
    }
}

sssync_leptos::entry_points!(App);

/// Who sent a request: the user its `x-user` header names, else anonymous.
struct FromHeader(Identity);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for FromHeader {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok());
        Ok(FromHeader(
            user.map_or_else(Identity::anonymous, Identity::user),
        ))
    }
}

impl sssync_core::server::Identified for FromHeader {
    fn into_identity(self) -> Result<Identity, sssync_core::server::IdentifyError> {
        Ok(self.0)
    }
}

/// The app on a fresh SQLite file, pages kept.
async fn app(name: &str) -> (SyncServer, axum::Router) {
    let dir = std::env::temp_dir().join(format!("sssync-kept-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sync = SyncServer::builder()
        .schema(
            "CREATE TABLE notes (id TEXT PRIMARY KEY, board TEXT NOT NULL, text TEXT NOT NULL, \
             at INTEGER NOT NULL)",
        )
        .table(
            Table::new("notes", "id")
                .unwrap()
                .partition("board")
                .unwrap(),
        )
        .identify_with::<FromHeader>()
        .keep_public_pages(1 << 20)
        .open(&format!("sqlite://{}", dir.join("t.db").display()))
        .await
        .unwrap();
    let options = LeptosOptions::builder()
        .output_name("kept")
        .site_root(dir.display().to_string())
        .build();
    let router = sync.app_router(options, App, shell);
    (sync, router)
}

/// A page's status, how it was answered (`kept`, `rendered`, or none), and its body.
async fn get(
    router: &axum::Router,
    path: &str,
    user: Option<&str>,
) -> (StatusCode, String, String) {
    let mut request = Request::get(path).header(header::ACCEPT, "text/html");
    if let Some(user) = user {
        request = request.header("x-user", user);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let how = response
        .headers()
        .get(PAGE_HEADER)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, how, String::from_utf8(body.to_vec()).unwrap())
}

fn notes_in(page: &str) -> Vec<&str> {
    page.split("<li class=\"note\">")
        .skip(1)
        .map(|s| s.split('<').next().unwrap())
        .collect()
}

fn form_key(page: &str) -> &str {
    let at = page.find("name=\"sssync_key\" value=\"").unwrap() + 25;
    &page[at..at + page[at..].find('"').unwrap()]
}

/// Posts the page's form as a browser without JavaScript does.
async fn post_form(router: &axum::Router, key: &str, text: &str) {
    let body = format!("board=a&text={text}&sssync_key={key}");
    let response = router
        .clone()
        .oneshot(
            Request::post("/api/add_note")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::ACCEPT, "text/html")
                .header(header::REFERER, "http://t/boards/a")
                .header(header::HOST, "t")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(
        response.status().is_redirection(),
        "the form post answered {}",
        response.status()
    );
}

#[tokio::test]
async fn a_kept_page_is_answered_again_until_a_write_changes_what_it_read() {
    let (sync, router) = app("stale").await;
    let (status, how, page) = get(&router, "/boards/a", None).await;
    assert_eq!((status, how.as_str()), (StatusCode::OK, "rendered"));
    assert!(notes_in(&page).is_empty());
    let (_, how, _) = get(&router, "/boards/a", None).await;
    assert_eq!(how, "kept");

    // A write to another board leaves it kept; a write to this one, once acknowledged, shows.
    sync.apply(&AddNote {
        id: "n0".into(),
        board: "b".into(),
        text: "elsewhere".into(),
    })
    .await
    .unwrap();
    assert_eq!(get(&router, "/boards/a", None).await.1, "kept");
    sync.apply(&AddNote {
        id: "n1".into(),
        board: "a".into(),
        text: "milk".into(),
    })
    .await
    .unwrap();
    let (_, how, page) = get(&router, "/boards/a", None).await;
    assert_eq!(
        how, "rendered",
        "a page whose rows changed is rendered again"
    );
    assert_eq!(notes_in(&page), ["milk"]);
    let (_, how, page) = get(&router, "/boards/a", None).await;
    assert_eq!((how.as_str(), notes_in(&page)), ("kept", vec!["milk"]));
    sync.shutdown();
}

#[tokio::test]
async fn a_kept_page_is_never_answered_to_someone_signed_in() {
    let (sync, router) = app("identity").await;
    get(&router, "/boards/a", None).await;
    assert_eq!(get(&router, "/boards/a", None).await.1, "kept");
    let (status, how, _) = get(&router, "/boards/a", Some("ada")).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(
        how, "kept",
        "ada's request was answered from an anonymous visitor's page"
    );
    // Nor is ada's own page kept for others.
    let (_, how, _) = get(&router, "/boards/b", Some("ada")).await;
    assert_ne!(how, "kept");
    assert_ne!(get(&router, "/boards/b", Some("ada")).await.1, "kept");
    assert_eq!(get(&router, "/boards/b", None).await.1, "rendered");
    sync.shutdown();
}

#[tokio::test]
async fn two_visitors_of_one_kept_page_each_get_their_plain_form_post() {
    let (sync, router) = app("forms").await;
    get(&router, "/boards/a", None).await;
    let (_, how, first) = get(&router, "/boards/a", None).await;
    let (_, how2, second) = get(&router, "/boards/a", None).await;
    assert_eq!((how.as_str(), how2.as_str()), ("kept", "kept"));
    assert_ne!(
        form_key(&first),
        form_key(&second),
        "two visitors got one form key"
    );
    // Both post the same todo, each from their copy: both are applied; a resubmission is not.
    post_form(&router, form_key(&first), "milk").await;
    post_form(&router, form_key(&second), "milk").await;
    post_form(&router, form_key(&second), "milk").await;
    let (_, _, page) = get(&router, "/boards/a", None).await;
    assert_eq!(notes_in(&page), ["milk", "milk"]);
    sync.shutdown();
}
