//! A small application for the engine's tests: lists of todos, on a real SQLite file, served on
//! 127.0.0.1 by a real axum server.
#![allow(dead_code, missing_docs)]

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sssync_core::client::Prediction;
use sssync_core::protocol::ServerMsg;
use sssync_core::server::{
    BoxFuture, Conn, Dependency, Engine, EventCtx, EventError, QueryCtx, ServerEvent, ServerQuery,
    SqliteStore, Store, Table, WriteRetry, router,
};
use sssync_core::{Event, Limits, Query, Rejection};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

pub const WAIT: Duration = Duration::from_secs(10);

type Db = sqlx::Sqlite;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Todo {
    pub id: String,
    pub list_id: String,
    pub title: String,
    pub completed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListArgs {
    pub list_id: String,
}

pub fn list(id: &str) -> ListArgs {
    ListArgs {
        list_id: id.to_owned(),
    }
}

/// The todos of one list, oldest first.
pub struct Todos;

impl Query for Todos {
    const NAME: &'static str = "todos";
    type Args = ListArgs;
    type Row = Todo;
    fn row_key(row: &Todo) -> String {
        row.id.clone()
    }
}

impl ServerQuery<Db> for Todos {
    fn dependencies(args: &ListArgs) -> Vec<Dependency> {
        vec![Dependency::partition("todos", &args.list_id)]
    }

    fn run<'a>(
        conn: &'a mut Conn<Db>,
        _ctx: &'a QueryCtx,
        args: &'a ListArgs,
    ) -> BoxFuture<'a, Result<Vec<Todo>, sqlx::Error>> {
        Box::pin(async move {
            sqlx::query_as(
                "SELECT id, list_id, title, completed FROM todos WHERE list_id = ? ORDER BY position, id",
            )
            .bind(&args.list_id)
            .fetch_all(&mut *conn)
            .await
        })
    }
}

/// Like [`Todos`], but it fails while the list has a todo titled "boom".
pub struct Fragile;

impl Query for Fragile {
    const NAME: &'static str = "fragile";
    type Args = ListArgs;
    type Row = Todo;
    fn row_key(row: &Todo) -> String {
        row.id.clone()
    }
}

impl ServerQuery<Db> for Fragile {
    fn dependencies(args: &ListArgs) -> Vec<Dependency> {
        vec![Dependency::partition("todos", &args.list_id)]
    }

    fn run<'a>(
        conn: &'a mut Conn<Db>,
        ctx: &'a QueryCtx,
        args: &'a ListArgs,
    ) -> BoxFuture<'a, Result<Vec<Todo>, sqlx::Error>> {
        Box::pin(async move {
            let rows = Todos::run(conn, ctx, args).await?;
            if rows.iter().any(|t| t.title == "boom") {
                return Err(sqlx::Error::Protocol("the fragile query broke".into()));
            }
            Ok(rows)
        })
    }
}

/// Like [`Todos`], but each run takes 400 ms (to hold the writer inside a group's first read
/// or a fan-out).
pub struct Slow;

/// How many runs of [`Slow`] have started, per list.
pub static SLOW_RUNS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub fn slow_runs(list_id: &str) -> usize {
    SLOW_RUNS
        .lock()
        .unwrap()
        .iter()
        .filter(|l| *l == list_id)
        .count()
}

impl Query for Slow {
    const NAME: &'static str = "slow";
    type Args = ListArgs;
    type Row = Todo;
    fn row_key(row: &Todo) -> String {
        row.id.clone()
    }
}

impl ServerQuery<Db> for Slow {
    fn dependencies(args: &ListArgs) -> Vec<Dependency> {
        vec![Dependency::partition("todos", &args.list_id)]
    }

    fn run<'a>(
        conn: &'a mut Conn<Db>,
        ctx: &'a QueryCtx,
        args: &'a ListArgs,
    ) -> BoxFuture<'a, Result<Vec<Todo>, sqlx::Error>> {
        Box::pin(async move {
            SLOW_RUNS.lock().unwrap().push(args.list_id.clone());
            let rows = Todos::run(conn, ctx, args).await?;
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(rows)
        })
    }
}

/// A row of a table partitioned by a typed column (a UUID, a bool, an integer, bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Tagged {
    pub id: String,
    pub note: String,
}

/// Which typed partition a [`ByOwner`] / [`ByFlag`] / [`ByGroup`] / [`ByBytes`] query reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerArgs {
    pub owner: uuid::Uuid,
}

macro_rules! typed_query {
    ($name:ident, $wire:literal, $args:ty, $table:literal, $col:literal, |$a:ident| $value:expr) => {
        pub struct $name;
        impl Query for $name {
            const NAME: &'static str = $wire;
            type Args = $args;
            type Row = Tagged;
            fn row_key(row: &Tagged) -> String {
                row.id.clone()
            }
        }
        impl ServerQuery<Db> for $name {
            fn dependencies($a: &$args) -> Vec<Dependency> {
                vec![Dependency::partition($table, $value)]
            }
            fn run<'a>(
                conn: &'a mut Conn<Db>,
                _ctx: &'a QueryCtx,
                $a: &'a $args,
            ) -> BoxFuture<'a, Result<Vec<Tagged>, sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query_as(concat!(
                        "SELECT id, note FROM ",
                        $table,
                        " WHERE ",
                        $col,
                        " = ? ORDER BY id"
                    ))
                    .bind($value)
                    .fetch_all(&mut *conn)
                    .await
                })
            }
        }
    };
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagArgs {
    pub done: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupArgs {
    pub group: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BytesArgs {
    pub bytes: Vec<u8>,
}

typed_query!(ByOwner, "by_owner", OwnerArgs, "owned", "owner", |a| a
    .owner);
typed_query!(ByFlag, "by_flag", FlagArgs, "flagged", "done", |a| a.done);
typed_query!(ByGroup, "by_group", GroupArgs, "grouped", "grp", |a| a
    .group);
typed_query!(ByBytes, "by_bytes", BytesArgs, "blobbed", "tag", |a| a
    .bytes
    .clone());

/// Inserts a row into one of the typed tables: `table` is `owned`, `flagged`, `grouped` or
/// `blobbed`, and the partition value is given in the field of its type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutTagged {
    pub table: String,
    pub id: String,
    pub note: String,
    #[serde(default)]
    pub owner: Option<uuid::Uuid>,
    #[serde(default)]
    pub done: Option<bool>,
    #[serde(default)]
    pub group: Option<i64>,
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
}

impl Event for PutTagged {
    const NAME: &'static str = "put_tagged";
}

impl ServerEvent<Db> for PutTagged {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Db>,
        _ctx: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            let q = match self.table.as_str() {
                "owned" => {
                    sqlx::query("INSERT OR REPLACE INTO owned (id, note, owner) VALUES (?, ?, ?)")
                        .bind(&self.id)
                        .bind(&self.note)
                        .bind(self.owner)
                }
                "flagged" => {
                    sqlx::query("INSERT OR REPLACE INTO flagged (id, note, done) VALUES (?, ?, ?)")
                        .bind(&self.id)
                        .bind(&self.note)
                        .bind(self.done)
                }
                "grouped" => {
                    sqlx::query("INSERT OR REPLACE INTO grouped (id, note, grp) VALUES (?, ?, ?)")
                        .bind(&self.id)
                        .bind(&self.note)
                        .bind(self.group)
                }
                _ => sqlx::query("INSERT OR REPLACE INTO blobbed (id, note, tag) VALUES (?, ?, ?)")
                    .bind(&self.id)
                    .bind(&self.note)
                    .bind(self.bytes.clone()),
            };
            q.execute(&mut *conn).await?;
            Ok(())
        })
    }
}

/// Writes a todo with `INSERT OR REPLACE`: it may move the row to another list, or (through the
/// unique `slug`) replace another todo, of any list, with the same slug.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceTodo {
    pub id: String,
    pub list_id: String,
    pub title: String,
    pub slug: String,
}

impl Event for ReplaceTodo {
    const NAME: &'static str = "replace_todo";
}

impl ServerEvent<Db> for ReplaceTodo {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Db>,
        ctx: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT OR REPLACE INTO todos (id, list_id, title, completed, position, slug) \
                 VALUES (?1, ?2, ?3, 0, 1000, ?4)",
            )
            .bind(&self.id)
            .bind(&self.list_id)
            .bind(&self.title)
            .bind(&self.slug)
            .execute(&mut *conn)
            .await?;
            log(conn, ctx, Self::NAME).await?;
            Ok(())
        })
    }
}

/// An event whose handler fails in a way no resend can cure: it reads a row that does not
/// exist with `fetch_one` (sqlx `RowNotFound`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poison {
    pub id: String,
}

impl Event for Poison {
    const NAME: &'static str = "poison";
}

impl ServerEvent<Db> for Poison {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Db>,
        _ctx: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            let title: String = sqlx::query_scalar("SELECT title FROM todos WHERE id = ?")
                .bind(&self.id)
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query("UPDATE todos SET title = ? WHERE id = ?")
                .bind(format!("{title}!"))
                .bind(&self.id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }
}

/// How many more times [`Flaky`] fails (transiently: an I/O error) before it applies.
pub static FLAKY_FAILURES: AtomicU32 = AtomicU32::new(0);

/// An event whose handler fails transiently while [`FLAKY_FAILURES`] is above zero, then adds
/// a todo like [`AddTodo`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flaky {
    pub id: String,
    pub list_id: String,
    pub title: String,
}

impl Event for Flaky {
    const NAME: &'static str = "flaky";
}

impl ServerEvent<Db> for Flaky {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Db>,
        ctx: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            if FLAKY_FAILURES
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(sqlx::Error::Io(std::io::Error::other("a passing fault")).into());
            }
            AddTodo {
                id: self.id.clone(),
                list_id: self.list_id.clone(),
                title: self.title.clone(),
            }
            .apply(conn, ctx)
            .await
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddTodo {
    pub id: String,
    pub list_id: String,
    pub title: String,
}

impl Event for AddTodo {
    const NAME: &'static str = "add_todo";
    fn predict(&self, view: &mut Prediction<'_>) {
        view.update::<Todos>(&list(&self.list_id), |rows| {
            rows.push(Todo {
                id: self.id.clone(),
                list_id: self.list_id.clone(),
                title: self.title.clone(),
                completed: false,
            })
        });
    }
}

/// Every applied event leaves a line here: the tests count applications.
async fn log(conn: &mut Conn<Db>, ctx: &EventCtx, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO applied (client_id, seq, name) VALUES (?, ?, ?)")
        .bind(&ctx.client_id)
        .bind(ctx.seq as i64)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl ServerEvent<Db> for AddTodo {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Db>,
        ctx: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            if self.title.chars().count() > 200 {
                return Err(
                    Rejection::new("title_too_long", "a title has at most 200 characters").into(),
                );
            }
            sqlx::query(
                "INSERT INTO todos (id, list_id, title, completed, position) VALUES (?1, ?2, ?3, 0, \
                 COALESCE((SELECT MAX(position) FROM todos WHERE list_id = ?2), 0) + 1)",
            )
            .bind(&self.id)
            .bind(&self.list_id)
            .bind(&self.title)
            .execute(&mut *conn)
            .await?;
            log(conn, ctx, Self::NAME).await?;
            Ok(())
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToggleTodo {
    pub id: String,
    pub list_id: String,
    pub completed: bool,
}

impl Event for ToggleTodo {
    const NAME: &'static str = "toggle_todo";
    fn predict(&self, view: &mut Prediction<'_>) {
        view.update::<Todos>(&list(&self.list_id), |rows| {
            for r in rows.iter_mut().filter(|r| r.id == self.id) {
                r.completed = self.completed;
            }
        });
    }
}

impl ServerEvent<Db> for ToggleTodo {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Db>,
        ctx: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            sqlx::query("UPDATE todos SET completed = ? WHERE id = ? AND list_id = ?")
                .bind(self.completed)
                .bind(&self.id)
                .bind(&self.list_id)
                .execute(&mut *conn)
                .await?;
            log(conn, ctx, Self::NAME).await?;
            Ok(())
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTodo {
    pub id: String,
    pub list_id: String,
}

impl Event for DeleteTodo {
    const NAME: &'static str = "delete_todo";
    fn predict(&self, view: &mut Prediction<'_>) {
        view.update::<Todos>(&list(&self.list_id), |rows| {
            rows.retain(|r| r.id != self.id)
        });
    }
}

impl ServerEvent<Db> for DeleteTodo {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Db>,
        ctx: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM todos WHERE id = ? AND list_id = ?")
                .bind(&self.id)
                .bind(&self.list_id)
                .execute(&mut *conn)
                .await?;
            log(conn, ctx, Self::NAME).await?;
            Ok(())
        })
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS todos (
    id TEXT PRIMARY KEY NOT NULL,
    list_id TEXT NOT NULL,
    title TEXT NOT NULL,
    completed BOOLEAN NOT NULL DEFAULT FALSE,
    position INTEGER NOT NULL,
    slug TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS todos_slug ON todos (slug);
CREATE TABLE IF NOT EXISTS applied (client_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owned (id TEXT PRIMARY KEY NOT NULL, note TEXT NOT NULL, owner BLOB);
CREATE TABLE IF NOT EXISTS flagged (id TEXT PRIMARY KEY NOT NULL, note TEXT NOT NULL, done BOOLEAN);
CREATE TABLE IF NOT EXISTS grouped (id TEXT PRIMARY KEY NOT NULL, note TEXT NOT NULL, grp INTEGER);
CREATE TABLE IF NOT EXISTS blobbed (id TEXT PRIMARY KEY NOT NULL, note TEXT NOT NULL, tag BLOB);
";

/// How a test server differs from the default one.
#[derive(Clone, Default)]
pub struct Config {
    pub limits: Option<Limits>,
    pub write_retry: Option<WriteRetry>,
    /// SQLite's busy timeout (default 10 s).
    pub busy_timeout: Option<Duration>,
    /// When set, every connection of the pool limits the database to this many pages (0: no
    /// limit) each time it is taken: a real `SQLITE_FULL` on demand.
    pub max_pages: Option<Arc<AtomicU32>>,
    pub group_ttl: Option<Duration>,
}

/// A fresh temporary folder for a test's database, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn create() -> TempDir {
        let p = std::env::temp_dir().join(format!("sssync-test-{}", uuid_like()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("test.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{t:x}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running server: the engine and its HTTP server on 127.0.0.1.
pub struct Server {
    pub engine: Engine<SqliteStore>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts an engine on the SQLite file `db` and serves it on `port` (0: any free port).
    pub async fn start(db: &Path, port: u16) -> Server {
        Server::start_with(db, port, Config::default()).await
    }

    /// Like [`Server::start`], configured.
    pub async fn start_with(db: &Path, port: u16, config: Config) -> Server {
        let mut options =
            SqliteStore::connect_options(&format!("sqlite://{}", db.display())).unwrap();
        if let Some(t) = config.busy_timeout {
            options = options.busy_timeout(t);
        }
        let mut pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(8);
        if let Some(pages) = config.max_pages.clone() {
            pool = pool.before_acquire(move |conn, _| {
                let pages = pages.clone();
                Box::pin(async move {
                    let n = match pages.load(Ordering::SeqCst) {
                        0 => 1_073_741_823,
                        n => n,
                    };
                    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {n}")))
                        .execute(&mut *conn)
                        .await?;
                    Ok(true)
                })
            });
        }
        let store = SqliteStore::from_pool(pool.connect_with(options).await.unwrap());
        sqlx::raw_sql(SCHEMA).execute(store.pool()).await.unwrap();
        let table =
            |name: &str, part: &str| Table::new(name, "id").unwrap().partition(part).unwrap();
        let mut builder = Engine::builder(store)
            .table(table("todos", "list_id"))
            .table(table("owned", "owner"))
            .table(table("flagged", "done"))
            .table(table("grouped", "grp"))
            .table(table("blobbed", "tag"))
            .query::<Todos>()
            .query::<Fragile>()
            .query::<Slow>()
            .query::<ByOwner>()
            .query::<ByFlag>()
            .query::<ByGroup>()
            .query::<ByBytes>()
            .event::<AddTodo>()
            .event::<ToggleTodo>()
            .event::<DeleteTodo>()
            .event::<ReplaceTodo>()
            .event::<PutTagged>()
            .event::<Poison>()
            .event::<Flaky>();
        if let Some(l) = config.limits {
            builder = builder.limits(l);
        }
        if let Some(r) = config.write_retry {
            builder = builder.write_retry(r);
        }
        if let Some(t) = config.group_ttl {
            builder = builder.group_ttl(t);
        }
        let engine = builder.start().await.unwrap();
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(engine.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { engine, addr, task }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/sssync/ws", self.addr)
    }

    /// Stops the engine (closing every connection) and the HTTP server.
    pub async fn stop(self) {
        self.engine.shutdown();
        self.task.abort();
        let _ = self.task.await;
        // Like a process that exits: every handle on the file is closed.
        self.engine.store().pool().close().await;
    }

    /// The todos of a list, read directly from the database.
    pub async fn todos(&self, list_id: &str) -> Vec<Todo> {
        sqlx::query_as(
            "SELECT id, list_id, title, completed FROM todos WHERE list_id = ? ORDER BY position, id",
        )
        .bind(list_id)
        .fetch_all(self.engine.store().pool())
        .await
        .unwrap()
    }

    /// How many times each (client, seq) was applied, for those applied more than once.
    pub async fn applied_twice(&self) -> Vec<(String, i64, i64)> {
        sqlx::query_as(
            "SELECT client_id, seq, COUNT(*) FROM applied GROUP BY client_id, seq HAVING COUNT(*) > 1",
        )
        .fetch_all(self.engine.store().pool())
        .await
        .unwrap()
    }

    pub async fn applied_count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM applied")
            .fetch_one(self.engine.store().pool())
            .await
            .unwrap()
    }
}

/// A raw protocol connection: JSON text in, parsed server messages out.
pub struct Raw {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Raw {
    pub async fn connect(
        server: &Server,
        client_id: &str,
    ) -> (Raw, sssync_core::protocol::Welcome) {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .unwrap();
        let mut raw = Raw { ws };
        raw.send(json!({"t": "hello", "protocol": 1, "client_id": client_id}))
            .await;
        match raw.recv().await {
            ServerMsg::Welcome(w) => (raw, w),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Connects and says `hello` (any JSON: an epoch, `acked`, `version`…); the first answer.
    pub async fn hello(server: &Server, hello: serde_json::Value) -> (Raw, ServerMsg) {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .unwrap();
        let mut raw = Raw { ws };
        raw.send(hello).await;
        let first = raw.recv().await;
        (raw, first)
    }

    pub async fn send(&mut self, v: serde_json::Value) {
        self.send_text(v.to_string()).await;
    }

    /// Whether the server has closed the connection (within the wait).
    pub async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn recv(&mut self) -> ServerMsg {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message within the wait")
                .expect("the connection is open")
                .unwrap();
            if let Message::Text(t) = frame {
                return ServerMsg::parse(&t).unwrap();
            }
        }
    }

    /// The next message that is not a delta or snapshot.
    pub async fn recv_reply(&mut self) -> ServerMsg {
        loop {
            match self.recv().await {
                ServerMsg::Delta(_) | ServerMsg::Snapshot(_) => {}
                m => return m,
            }
        }
    }

    pub async fn event(&mut self, seq: u64, name: &str, args: serde_json::Value) -> ServerMsg {
        self.send(json!({"t": "event", "seq": seq, "name": name, "args": args}))
            .await;
        self.recv_reply().await
    }
}

pub fn add(list: &str, id: &str, title: &str) -> serde_json::Value {
    json!({"id": id, "list_id": list, "title": title})
}

pub fn titles(rows: &[Todo]) -> Vec<&str> {
    rows.iter().map(|t| t.title.as_str()).collect()
}

/// Waits (polling, at most [`WAIT`]) until `f` holds.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A minimal HTTP/1.1 GET: status, raw headers, body.
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    if_none_match: Option<&str>,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra = if_none_match
        .map(|e| format!("If-None-Match: {e}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}
