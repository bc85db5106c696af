//! The server-render-to-hydration round trip, natively: a component's `use_sync_query` runs the
//! query in-process on a real engine (SQLite file); its rows and version travel in Leptos's
//! serialized hydration data; a client seeded with them subscribes from that version (so the
//! browser neither fetches again nor receives the rows twice).
#![cfg(feature = "ssr")]

use futures_util::StreamExt;
use hydration_context::SharedContext;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use sssync_core::client::ClientState;
use sssync_core::protocol::ClientMsg;
use sssync_core::server::{
    Conn, Dependency, Engine, EventCtx, EventError, Outcome, QueryCtx, ServerEvent, ServerQuery,
    SqliteStore, Store, Table,
};
use sssync_core::{Event, Query, QueryKey};
use sssync_leptos::server::SyncServer;
use sssync_leptos::{Loaded, provide_sync_client, use_sync_query};
use std::sync::Arc;

type Db = sqlx::Sqlite;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
struct Note {
    id: String,
    text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Board {
    board: String,
}

struct Notes;

impl Query for Notes {
    const NAME: &'static str = "notes";
    type Args = Board;
    type Row = Note;
    fn row_key(n: &Note) -> String {
        n.id.clone()
    }
}

impl ServerQuery<Db> for Notes {
    fn dependencies(a: &Board) -> Vec<Dependency> {
        vec![Dependency::partition("notes", &a.board)]
    }
    async fn run(conn: &mut Conn<Db>, _: &QueryCtx, a: &Board) -> Result<Vec<Note>, sqlx::Error> {
        sqlx::query_as("SELECT id, text FROM notes WHERE board = ? ORDER BY rowid")
            .bind(&a.board)
            .fetch_all(conn)
            .await
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AddNote {
    id: String,
    board: String,
    text: String,
}

impl Event for AddNote {
    const NAME: &'static str = "add_note";
}

impl ServerEvent<Db> for AddNote {
    async fn apply(&self, conn: &mut Conn<Db>, _: &EventCtx) -> Result<(), EventError> {
        sqlx::query("INSERT INTO notes (id, board, text) VALUES (?, ?, ?)")
            .bind(&self.id)
            .bind(&self.board)
            .bind(&self.text)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// An engine serving `Notes` and `AddNote` over a fresh SQLite file in a folder named
/// `name`; the folder, for removal.
async fn notes_engine(name: &str) -> (Engine<SqliteStore>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("t.db").display()))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE notes (id TEXT PRIMARY KEY, board TEXT NOT NULL, text TEXT NOT NULL)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let engine = Engine::builder(store)
        .table(
            Table::new("notes", "id")
                .unwrap()
                .partition("board")
                .unwrap(),
        )
        .query::<Notes>()
        .event::<AddNote>()
        .start()
        .await
        .unwrap();
    (engine, dir)
}

#[tokio::test]
async fn the_server_rendered_snapshot_rides_the_hydration_data_and_seeds_the_client() {
    let _ = any_spawner::Executor::init_tokio();
    let (engine, dir) = notes_engine("sssync-leptos-ssr").await;
    for (id, text) in [("n1", "rendered on the server"), ("n2", "and hydrated")] {
        let args = serde_json::json!({"id": id, "board": "b", "text": text}).to_string();
        let r = engine.apply("add_note", &args).await.unwrap();
        assert!(matches!(r, Outcome::Applied { .. }), "{r:?}");
    }

    // Server render: the component's query runs in-process.
    let shared = Arc::new(hydration_context::SsrSharedContext::new());
    let owner = Owner::new_root(Some(shared.clone()));
    let query = owner.with(|| {
        provide_context(SyncServer::new(engine.clone()));
        provide_sync_client();
        use_sync_query(|| Notes::request(Board { board: "b".into() }))
    });
    // What Leptos sends the browser for hydration.
    let data: String = shared
        .pending_data()
        .expect("hydration data")
        .collect::<Vec<String>>()
        .await
        .concat();
    assert!(data.contains("rendered on the server"), "{data}");
    assert!(
        data.contains(&engine.epoch().0),
        "the epoch rides along: {data}"
    );

    // The rows the server rendered.
    let rows = owner.with(|| query.rows()).expect("resolved").unwrap();
    assert_eq!(
        rows.iter().map(|n| n.text.as_str()).collect::<Vec<_>>(),
        ["rendered on the server", "and hydrated"]
    );

    // The browser's side: seeded with the same snapshot, its subscription resumes from that
    // version (no refetch: the server answers with what changed since, here nothing).
    let key = QueryKey::new("notes", &Board { board: "b".into() }).unwrap();
    let loaded: Loaded = sssync_leptos::server::SyncServer::new(engine.clone())
        .load(&key)
        .await
        .unwrap();
    let mut client = ClientState::new("hydrated-tab");
    assert!(client.seed(
        key.clone(),
        &loaded.epoch,
        loaded.version,
        loaded.rows.clone()
    ));
    let ClientMsg::Sub(sub) = client.subscribe(key.clone()) else {
        panic!("a sub")
    };
    assert_eq!(sub.v, Some(loaded.version));
    assert_eq!(
        client.rows::<Notes>(&Board { board: "b".into() }).unwrap(),
        rows
    );
    engine.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn while_the_args_change_the_old_keys_rows_are_never_handed_out_for_the_new_key() {
    let _ = any_spawner::Executor::init_tokio();
    let (engine, dir) = notes_engine("sssync-leptos-keys").await;
    for (id, board) in [("a1", "a"), ("b1", "b")] {
        let args = serde_json::json!({"id": id, "board": board, "text": id}).to_string();
        let r = engine.apply("add_note", &args).await.unwrap();
        assert!(matches!(r, Outcome::Applied { .. }), "{r:?}");
    }
    let owner = Owner::new_root(None);
    let board = owner.with(|| RwSignal::new("a".to_owned()));
    let query = owner.with(|| {
        provide_context(SyncServer::new(engine.clone()));
        provide_sync_client();
        use_sync_query(move || Notes::request(Board { board: board.get() }))
    });
    let texts = |query: &sssync_leptos::SyncQuery<Notes>| {
        owner
            .with(|| query.rows())
            .map(|r| r.unwrap().into_iter().map(|n| n.text).collect::<Vec<_>>())
    };
    let until = |want: Vec<String>| async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if texts(&query).as_ref() == Some(&want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rows never became {want:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    until(vec!["a1".to_owned()]).await;
    // The args change: until board b's rows are loaded, nothing (board a's rows would be
    // another list's rows under this list's forms).
    owner.with(|| board.set("b".to_owned()));
    assert_eq!(texts(&query), None);
    assert_eq!(owner.with(|| query.loaded()), None);
    until(vec!["b1".to_owned()]).await;
    // Awaited (as in a `Suspend`): the current key's rows.
    let rows = owner.with(|| query).await.unwrap();
    assert_eq!(
        rows.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["b1"]
    );
    owner.with(|| board.set("a".to_owned()));
    let rows = owner.with(|| query).await.unwrap();
    assert_eq!(
        rows.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["a1"]
    );
    engine.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

/// Who sent a request, as an app's own axum extractor says: here the `x-user` header.
struct FromHeader(sssync_core::server::Identity);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for FromHeader {
    type Rejection = &'static str;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        use sssync_core::server::Identity;
        match parts.headers.get("x-user").map(|v| v.to_str()) {
            None => Ok(FromHeader(Identity::anonymous())),
            Some(Ok(name)) => Ok(FromHeader(Identity::user(name))),
            Some(Err(_)) => Err("x-user is not text"),
        }
    }
}

impl sssync_core::server::Identified for FromHeader {
    fn into_identity(
        self,
    ) -> Result<sssync_core::server::Identity, sssync_core::server::IdentifyError> {
        Ok(self.0)
    }
}

#[tokio::test]
async fn an_apps_own_axum_extractor_says_who_sent_each_request() {
    use sssync_core::server::Identity;
    let dir = std::env::temp_dir().join(format!("sssync-identify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join("t.db"));
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let sync = SyncServer::builder()
        .identify_with::<FromHeader>()
        .open(&url)
        .await
        .unwrap();
    let parts = |user: Option<&[u8]>| {
        let mut request = axum::http::Request::builder();
        if let Some(user) = user {
            request = request.header("x-user", axum::http::HeaderValue::from_bytes(user).unwrap());
        }
        request.body(()).unwrap().into_parts().0
    };
    let ada = sync.identify(Some(&parts(Some(b"ada")))).await.unwrap();
    assert_eq!(ada, Identity::user("ada"));
    let nobody = sync.identify(Some(&parts(None))).await.unwrap();
    assert_eq!(nobody, Identity::anonymous());
    // The extractor refused the request: the app could not tell who sent it.
    assert!(sync.identify(Some(&parts(Some(b"\xff")))).await.is_err());
    sync.shutdown();
}
