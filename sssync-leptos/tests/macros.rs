//! The declaration macros on a real engine, on SQLite and PostgreSQL: a query and events
//! declared once (`#[sync_query]`, `#[sync_event]`, `#[sync_apply]`, `#[sync_sql]`) register
//! themselves (`EngineBuilder::declared`), run with plain `async fn` handlers, refuse what
//! they should, and predict on the client.
#![cfg(feature = "ssr")]

use serde::{Deserialize, Serialize};
use sssync_core::client::ClientState;
use sssync_core::server::{
    AccessError, Conn, Engine, EngineError, EventCtx, EventError, Identity, Outcome, PgStore,
    QueryCtx, ServerQuery, SqliteStore, Store, Table, TableRead,
};
use sssync_core::{Event, Query, QueryKey};
use sssync_leptos::{sync_apply, sync_event, sync_query, sync_run, sync_sql};

/// A note on a board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Note {
    id: String,
    text: String,
}

#[sync_sql]
async fn may_read(conn: &mut Conn<Db>, board: &str, who: &Identity) -> Result<bool, sqlx::Error> {
    let locked: Option<(String,)> = sqlx::query_as("SELECT board FROM locked WHERE board = $1")
        .bind(board)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(locked.is_none() || who.id() == Some("admin"))
}

/// The notes of a board, in order.
#[sync_query(key = id, reads = [notes(board)], access_reads = [locked(board)], authorize = check_board, keyed_by = notes)]
pub async fn notes(conn: &mut Conn<Db>, board: String) -> Result<Vec<Note>, sqlx::Error> {
    sqlx::query_as("SELECT id, text FROM notes WHERE board = $1 ORDER BY id")
        .bind(&board)
        .fetch_all(&mut *conn)
        .await
}

#[sync_sql]
async fn check_board(
    conn: &mut Conn<Db>,
    ctx: &QueryCtx,
    args: &NotesArgs,
) -> Result<(), AccessError> {
    if may_read(conn, &args.board, &ctx.identity).await? {
        Ok(())
    } else {
        Err(sssync_core::Forbidden::new("locked").into())
    }
}

/// How many notes every board has: no args.
#[sync_query(key = board, reads = [notes])]
pub async fn boards(conn: &mut Conn<Db>, _ctx: &QueryCtx) -> Result<Vec<BoardCount>, sqlx::Error> {
    sqlx::query_as("SELECT board, COUNT(*) AS n FROM notes GROUP BY board ORDER BY board")
        .fetch_all(&mut *conn)
        .await
}

/// The notes of a board whose text starts with `prefix`, declared as a shared model declares
/// it (no body, no server names) and given its body and its check by a `#[sync_run]` below.
#[sync_query(key = id, reads = [notes(board)], access_reads = [locked(board)], authorize)]
pub fn starting(board: String, prefix: String) -> Vec<Note>;

#[sync_run]
impl Starting {
    async fn run(
        conn: &mut Conn<Db>,
        _ctx: &QueryCtx,
        args: &StartingArgs,
    ) -> Result<Vec<Note>, sqlx::Error> {
        sqlx::query_as("SELECT id, text FROM notes WHERE board = $1 AND text LIKE $2 ORDER BY id")
            .bind(&args.board)
            .bind(format!("{}%", args.prefix))
            .fetch_all(&mut *conn)
            .await
    }

    async fn authorize(
        conn: &mut Conn<Db>,
        ctx: &QueryCtx,
        args: &StartingArgs,
    ) -> Result<(), AccessError> {
        if may_read(conn, &args.board, &ctx.identity).await? {
            Ok(())
        } else {
            Err(AccessError::forbidden("locked"))
        }
    }
}

/// A row of [`Boards`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct BoardCount {
    board: String,
    n: i64,
}

/// The two last notes of a board, by id: a declarative query (no body; the engine writes its
/// SQL and maintains its result incrementally).
#[sync_query(key = id, from = notes, columns = [id, text], order_by = [desc(id)], limit = 2, reads = [notes(board)])]
pub fn latest(board: String) -> Vec<Note>;

/// A thing of some kind (a column named with a keyword).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Kind {
    id: String,
    r#type: String,
}

/// The things of one kind: a declarative query whose arg, column and name are keywords.
#[sync_query(key = id, from = kinds, columns = [id, r#type], order_by = [id])]
pub fn r#match(r#type: String) -> Vec<Kind>;

/// Why a note is refused: the application's own kinds, derived.
#[derive(Debug, PartialEq, sssync_leptos::Rejection)]
pub enum NoteRefused {
    /// No text.
    #[rejection(message = "A note has a text.")]
    Empty,
    /// Too long.
    #[rejection(message = "A note has at most {max} characters.")]
    TooLong {
        /// The most.
        max: usize,
    },
}

/// Adds a note.
#[sync_event]
pub struct AddNote {
    /// The board.
    pub board: String,
    /// The note's id.
    pub id: String,
    /// Its text.
    pub text: String,
}

// One block: the optimistic effect and the server handler (compiled for the server only).
#[sync_event]
impl AddNote {
    fn predict(&self, view: &mut sssync_core::client::Prediction<'_>) {
        view.update(notes(&self.board), |rows| {
            rows.push(Note {
                id: self.id.clone(),
                text: self.text.clone(),
            })
        });
    }

    async fn apply(&self, conn: &mut Conn<Db>, _ctx: &EventCtx) -> Result<(), EventError> {
        if self.text.is_empty() {
            return Err(NoteRefused::Empty.into());
        }
        if self.text.len() > 20 {
            return Err(NoteRefused::TooLong { max: 20 }.into());
        }
        if self.text == "graffiti" {
            return Err(sssync_core::Forbidden::new("not on this board").into());
        }
        sqlx::query("INSERT INTO notes (id, board, text) VALUES ($1, $2, $3)")
            .bind(&self.id)
            .bind(&self.board)
            .bind(&self.text)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Locks a board (only `admin` reads it then).
#[sync_event(name = "lock_board")]
pub struct Lock {
    /// The board.
    pub board: String,
}

// No prediction, and the handler apart (as a server module would hold it).
#[sync_apply]
impl Lock {
    async fn apply(&self, conn: &mut Conn<Db>, _ctx: &EventCtx) -> Result<(), EventError> {
        sqlx::query("INSERT INTO locked (board) VALUES ($1)")
            .bind(&self.board)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

const SCHEMA: &str = "CREATE TABLE notes (id TEXT PRIMARY KEY NOT NULL, board TEXT NOT NULL, text TEXT NOT NULL); \
                      CREATE TABLE locked (board TEXT PRIMARY KEY); \
                      CREATE TABLE kinds (id TEXT PRIMARY KEY NOT NULL, \"type\" TEXT NOT NULL); \
                      INSERT INTO kinds (id, \"type\") VALUES ('k1', 'a'), ('k2', 'b'), ('k3', 'a')";

fn tables() -> [Table; 3] {
    [
        Table::new("notes", "id")
            .unwrap()
            .partition("board")
            .unwrap(),
        Table::new("locked", "board")
            .unwrap()
            .partition("board")
            .unwrap(),
        Table::new("kinds", "id")
            .unwrap()
            .partition("type")
            .unwrap(),
    ]
}

/// A snapshot's rows, decoded.
fn decoded<T: serde::de::DeserializeOwned>(rows: sssync_core::Rows) -> Vec<T> {
    rows.into_rows()
        .iter()
        .map(|r| r.decode().unwrap())
        .collect()
}

async fn check<S: Store>(store: S)
where
    S::Db: sssync_core::server::declared::DeclaredDb,
{
    let [a, b, c] = tables();
    let engine = Engine::builder(store)
        .table(a)
        .table(b)
        .table(c)
        .declared()
        .start()
        .await
        .unwrap();

    let add = |id: &str, text: &str| {
        serde_json::to_string(&AddNote {
            board: "b".into(),
            id: id.into(),
            text: text.into(),
        })
        .unwrap()
    };
    assert!(matches!(
        engine.apply("add_note", &add("1", "milk")).await.unwrap(),
        Outcome::Applied { .. }
    ));
    // Refusals as the application's own kinds: a code and a message each, typed again on the
    // other side; one `Forbidden` for an identity refused.
    let refused = |outcome| match outcome {
        Outcome::Rejected { rejection, .. } => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    };
    let empty = refused(engine.apply("add_note", &add("2", "")).await.unwrap());
    assert_eq!(
        (empty.code.as_str(), empty.message.as_str()),
        ("empty", "A note has a text.")
    );
    assert_eq!(empty.kind(), Some(NoteRefused::Empty));
    let long = refused(
        engine
            .apply("add_note", &add("2", &"x".repeat(21)))
            .await
            .unwrap(),
    );
    assert_eq!(long.code, "too_long");
    assert_eq!(long.message, "A note has at most 20 characters.");
    let graffiti = refused(
        engine
            .apply("add_note", &add("2", "graffiti"))
            .await
            .unwrap(),
    );
    assert!(graffiti.is_forbidden());
    assert_eq!(
        graffiti.kind(),
        Some(sssync_core::Forbidden::new("not on this board"))
    );
    assert_eq!(graffiti.kind::<NoteRefused>(), None);
    let anyone = QueryCtx::default();
    let (_, _, rows) = engine
        .snapshot_json("notes", r#"{"board":"b"}"#, &anyone)
        .await
        .unwrap();
    let notes: Vec<Note> = decoded(rows);
    assert_eq!(
        notes,
        vec![Note {
            id: "1".into(),
            text: "milk".into()
        }]
    );
    let (_, _, rows) = engine
        .snapshot_json("boards", "null", &anyone)
        .await
        .unwrap();
    let counts: Vec<BoardCount> = decoded(rows);
    assert_eq!(
        counts,
        vec![BoardCount {
            board: "b".into(),
            n: 1
        }]
    );

    // A query whose body is a `#[sync_run]`: the engine runs it.
    let starting = r#"{"board":"b","prefix":"mi"}"#;
    let (_, _, rows) = engine
        .snapshot_json("starting", starting, &anyone)
        .await
        .unwrap();
    let notes: Vec<Note> = decoded(rows);
    assert_eq!(
        notes,
        vec![Note {
            id: "1".into(),
            text: "milk".into()
        }]
    );

    // Keywords as names (`r#type`, `fn r#match`): the wire and the SQL have them as written,
    // without `r#`.
    assert_eq!(Match::NAME, "match");
    let (_, _, rows) = engine
        .snapshot_json("match", r#"{"type":"a"}"#, &anyone)
        .await
        .unwrap();
    let kinds: Vec<Kind> = decoded(rows);
    assert_eq!(
        kinds.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["k1", "k3"]
    );
    assert!(kinds.iter().all(|k| k.r#type == "a"));

    // The declarative query: read in full, then patched with each change while a client
    // follows it.
    assert!(engine.is_incremental("latest"));
    assert!(!engine.is_incremental("notes"));
    let listener = sssync_core::server::listen("127.0.0.1:0").await.unwrap();
    let ws = format!("ws://{}/sssync/ws", listener.local_addr().unwrap());
    let app = sssync_core::server::router(engine.clone());
    let serve = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = sssync_core::client::native::NativeClient::connect(ws, "latest-reader");
    let args = LatestArgs { board: "b".into() };
    client.subscribe::<Latest>(&args);
    for (id, text) in [("2", "eggs"), ("3", "bread"), ("0", "old")] {
        let r = engine.apply("add_note", &add(id, text)).await.unwrap();
        assert!(r.is_applied(), "{r:?}");
    }
    let want = vec![
        Note {
            id: "3".into(),
            text: "bread".into(),
        },
        Note {
            id: "2".into(),
            text: "eggs".into(),
        },
    ];
    client
        .wait_for(std::time::Duration::from_secs(10), |s| {
            s.rows::<Latest>(&args) == Some(want.clone())
        })
        .await
        .unwrap();
    serve.abort();

    // The query's authorize, through a helper written once for both databases.
    let r = engine
        .apply("lock_board", r#"{"board":"b"}"#)
        .await
        .unwrap();
    assert!(r.is_applied(), "{r:?}");
    assert!(matches!(
        engine
            .snapshot_json("notes", r#"{"board":"b"}"#, &anyone)
            .await,
        Err(EngineError::Forbidden(_))
    ));
    // The `#[sync_run]`'s authorize refuses as the helper does.
    assert!(matches!(
        engine.snapshot_json("starting", starting, &anyone).await,
        Err(EngineError::Forbidden(_))
    ));
    let admin = QueryCtx {
        identity: Identity::user("admin"),
    };
    assert!(
        engine
            .snapshot_json("notes", r#"{"board":"b"}"#, &admin)
            .await
            .is_ok()
    );
    assert!(
        engine
            .snapshot_json("starting", starting, &admin)
            .await
            .is_ok()
    );
    engine.shutdown();
}

/// A fresh SQLite file (`name` tells the tests' files apart) with the schema.
async fn sqlite_store(name: &str) -> SqliteStore {
    let dir = std::env::temp_dir().join(format!("sssync-macros-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join("t.db"));
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("t.db").display()))
        .await
        .unwrap();
    sqlx::raw_sql(SCHEMA).execute(store.pool()).await.unwrap();
    store
}

#[tokio::test]
async fn what_a_declared_query_reads_is_checked_against_the_declared_tables_at_start() {
    use sssync_core::server::Sqlite;
    use sssync_core::server::declared::DeclarationError;
    // The macro writes each query's reads as data, whatever the args...
    assert_eq!(
        <Notes as ServerQuery<Sqlite>>::READS,
        &[TableRead::partition("notes")]
    );
    assert_eq!(
        <Notes as ServerQuery<Sqlite>>::ACCESS_READS,
        &[TableRead::partition("locked")]
    );
    assert_eq!(
        <Boards as ServerQuery<Sqlite>>::READS,
        &[TableRead::table("notes")]
    );
    assert_eq!(
        <Latest as ServerQuery<Sqlite>>::READS,
        &[TableRead::partition("notes")]
    );
    // ...so an engine that does not declare one of those tables refuses to start, naming it.
    let store = sqlite_store("reads").await;
    let [notes, _locked, kinds] = tables();
    let err = match Engine::builder(store)
        .table(notes)
        .table(kinds)
        .declared()
        .start()
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("started without the table `locked` that two queries read"),
    };
    assert!(
        matches!(
            err,
            EngineError::Declaration(DeclarationError::UndeclaredTable {
                list: "access_reads",
                table: "locked",
                ..
            })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn declared_queries_and_events_register_run_and_refuse_on_sqlite() {
    let store = sqlite_store("declared").await;
    check(store).await;
}

#[tokio::test]
async fn declared_queries_and_events_register_run_and_refuse_on_postgres() {
    let base = std::env::var("SSSYNC_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let admin = sqlx::PgPool::connect(&base).await;
    let Ok(admin) = admin else {
        // CI always has one (scripts/test.sh checks); a laptop may not.
        eprintln!("no PostgreSQL at {base}: skipped");
        return;
    };
    let schema = format!("macros_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    let store = PgStore::open(&url).await.unwrap();
    sqlx::raw_sql(SCHEMA).execute(store.pool()).await.unwrap();
    check(store).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

#[test]
fn a_declarative_query_is_its_shape() {
    use sssync_core::server::{Order, ServerQuery, Shape, Sqlite};
    assert_eq!(
        <Latest as ServerQuery<Sqlite>>::SHAPE,
        Some(Shape {
            table: "notes",
            key: "id",
            columns: &["id", "text"],
            filter: &["board"],
            order: &[Order::Desc("id")],
            limit: Some(2),
        })
    );
    // A limited window is not its table's rows: no resume from the log.
    assert_eq!(<Latest as ServerQuery<Sqlite>>::KEYED_BY, None);
    assert_eq!(
        <Latest as ServerQuery<Sqlite>>::SHAPE.unwrap().select_sql(),
        "SELECT t.\"id\", t.\"text\" FROM \"notes\" AS t WHERE t.\"board\" = $1 ORDER BY t.\"id\" DESC LIMIT 2"
    );
}

#[test]
fn names_and_keys_come_from_the_declarations() {
    assert_eq!(Notes::NAME, "notes");
    assert_eq!(Boards::NAME, "boards");
    assert_eq!(AddNote::NAME, "add_note");
    assert_eq!(Lock::NAME, "lock_board");
    assert_eq!(
        Notes::row_key(&Note {
            id: "x".into(),
            text: String::new()
        }),
        "x"
    );
    assert_eq!(
        QueryKey::new(Notes::NAME, &NotesArgs { board: "b".into() })
            .unwrap()
            .args_json(),
        r#"{"board":"b"}"#
    );
    // The prediction is the event's own method.
    let mut state = ClientState::new("c1");
    let key = QueryKey::new(Notes::NAME, &NotesArgs { board: "b".into() }).unwrap();
    state.seed(
        key,
        &sssync_core::Epoch("e".into()),
        sssync_core::Version(1),
        Vec::new(),
    );
    state
        .push(AddNote {
            board: "b".into(),
            id: "n1".into(),
            text: "hi".into(),
        })
        .unwrap();
    assert_eq!(
        state.rows::<Notes>(&NotesArgs { board: "b".into() }),
        Some(vec![Note {
            id: "n1".into(),
            text: "hi".into()
        }])
    );
}
