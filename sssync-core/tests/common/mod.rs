//! A small application for the engine's tests: lists of todos, on a real SQLite file, served on
//! 127.0.0.1 by a real axum server.
#![allow(dead_code, missing_docs)]

use serde::{Deserialize, Serialize};
use sssync_core::client::Prediction;
use sssync_core::server::{
    BoxFuture, Conn, Dependency, Engine, EventCtx, EventError, QueryCtx, ServerEvent, ServerQuery,
    SqliteStore, Store, Table, router,
};
use sssync_core::{Event, Query, Rejection};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;

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
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS applied (client_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL);
";

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
        let store = SqliteStore::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::raw_sql(SCHEMA).execute(store.pool()).await.unwrap();
        let engine = Engine::builder(store)
            .table(
                Table::new("todos", "id")
                    .unwrap()
                    .partition("list_id")
                    .unwrap(),
            )
            .query::<Todos>()
            .query::<Fragile>()
            .event::<AddTodo>()
            .event::<ToggleTodo>()
            .event::<DeleteTodo>()
            .start()
            .await
            .unwrap();
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
