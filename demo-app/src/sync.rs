//! The demo's query and events on the server: what runs in the sync engine. The statements and
//! handlers are written once and compiled for both databases (`for_each_db!`): the SQL suits
//! SQLite and PostgreSQL alike (`$1` placeholders, `FALSE`, `COALESCE`).

use crate::db::Pool;
use crate::model::{
    AddTodo, ClearCompleted, DeleteTodo, EditTodo, ListArgs, Todo, Todos, ToggleAll, ToggleTodo,
    check_id, clean_title,
};
use sssync_core::server::{
    BoxFuture, Conn, Dependency, Engine, EngineBuilder, EngineError, EventCtx, EventError, PgStore,
    QueryCtx, ServerEvent, ServerQuery, SqliteStore, Store, Table,
};

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    title: String,
    completed: bool,
}

sssync_core::for_each_db! {
    /// The todos of a list, in order.
    async fn list(conn: &mut Conn<Db>, list_id: &str) -> Result<Vec<Todo>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, title, completed FROM todos WHERE list_id = $1 ORDER BY position, id",
        )
        .bind(list_id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Todo {
                id: r.id,
                title: r.title,
                completed: r.completed,
            })
            .collect())
    }

    /// Runs one statement with text arguments.
    async fn exec(conn: &mut Conn<Db>, sql: &'static str, args: &[&str]) -> Result<(), sqlx::Error> {
        let mut q = sqlx::query(sql);
        for a in args {
            q = q.bind(*a);
        }
        q.execute(&mut *conn).await?;
        Ok(())
    }

    impl ServerQuery<Db> for Todos {
        // Its rows are the table's, keyed by id, in an order each row carries (`position`): a
        // client that reconnects to any instance resumes from the durable log.
        const KEYED_BY: Option<&'static str> = Some("todos");

        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }

        fn run<'a>(
            conn: &'a mut Conn<Db>,
            _: &'a QueryCtx,
            args: &'a ListArgs,
        ) -> BoxFuture<'a, Result<Vec<Todo>, sqlx::Error>> {
            Box::pin(async move {
                if !crate::model::valid_id(&args.list_id) {
                    return Ok(Vec::new()); // no such list can exist
                }
                list(conn, &args.list_id).await
            })
        }
    }

    impl ServerEvent<Db> for AddTodo {
        fn apply<'a>(
            &'a self,
            conn: &'a mut Conn<Db>,
            _: &'a EventCtx,
        ) -> BoxFuture<'a, Result<(), EventError>> {
            Box::pin(async move {
                check_id(&self.list_id)?;
                check_id(&self.id)?;
                if let Some(title) = clean_title(&self.title)? {
                    // At the bottom of the list (an id already used is a constraint violation).
                    exec(
                        conn,
                        "INSERT INTO todos (id, list_id, title, completed, position) \
                         VALUES ($1, $2, $3, FALSE, \
                         COALESCE((SELECT MAX(position) FROM todos WHERE list_id = $2), 0) + 1)",
                        &[&self.id, &self.list_id, &title],
                    )
                    .await?;
                }
                Ok(())
            })
        }
    }

    impl ServerEvent<Db> for ToggleTodo {
        fn apply<'a>(
            &'a self,
            conn: &'a mut Conn<Db>,
            _: &'a EventCtx,
        ) -> BoxFuture<'a, Result<(), EventError>> {
            Box::pin(async move {
                check_id(&self.list_id)?;
                check_id(&self.id)?;
                sqlx::query("UPDATE todos SET completed = $1 WHERE list_id = $2 AND id = $3")
                    .bind(self.completed)
                    .bind(&self.list_id)
                    .bind(&self.id)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        }
    }

    impl ServerEvent<Db> for EditTodo {
        fn apply<'a>(
            &'a self,
            conn: &'a mut Conn<Db>,
            _: &'a EventCtx,
        ) -> BoxFuture<'a, Result<(), EventError>> {
            Box::pin(async move {
                check_id(&self.list_id)?;
                check_id(&self.id)?;
                match clean_title(&self.title)? {
                    Some(title) => {
                        exec(
                            conn,
                            "UPDATE todos SET title = $1 WHERE list_id = $2 AND id = $3",
                            &[&title, &self.list_id, &self.id],
                        )
                        .await?
                    }
                    None => {
                        exec(
                            conn,
                            "DELETE FROM todos WHERE list_id = $1 AND id = $2",
                            &[&self.list_id, &self.id],
                        )
                        .await?
                    }
                }
                Ok(())
            })
        }
    }

    impl ServerEvent<Db> for DeleteTodo {
        fn apply<'a>(
            &'a self,
            conn: &'a mut Conn<Db>,
            _: &'a EventCtx,
        ) -> BoxFuture<'a, Result<(), EventError>> {
            Box::pin(async move {
                check_id(&self.list_id)?;
                check_id(&self.id)?;
                exec(
                    conn,
                    "DELETE FROM todos WHERE list_id = $1 AND id = $2",
                    &[&self.list_id, &self.id],
                )
                .await?;
                Ok(())
            })
        }
    }

    impl ServerEvent<Db> for ToggleAll {
        fn apply<'a>(
            &'a self,
            conn: &'a mut Conn<Db>,
            _: &'a EventCtx,
        ) -> BoxFuture<'a, Result<(), EventError>> {
            Box::pin(async move {
                check_id(&self.list_id)?;
                sqlx::query("UPDATE todos SET completed = $1 WHERE list_id = $2")
                    .bind(self.completed)
                    .bind(&self.list_id)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        }
    }

    impl ServerEvent<Db> for ClearCompleted {
        fn apply<'a>(
            &'a self,
            conn: &'a mut Conn<Db>,
            _: &'a EventCtx,
        ) -> BoxFuture<'a, Result<(), EventError>> {
            Box::pin(async move {
                check_id(&self.list_id)?;
                exec(
                    conn,
                    "DELETE FROM todos WHERE list_id = $1 AND completed",
                    &[&self.list_id],
                )
                .await?;
                Ok(())
            })
        }
    }
}

/// The sync engine of the demo, on the database its pool is on.
#[derive(Clone)]
pub enum DemoEngine {
    /// On SQLite.
    Sqlite(Engine<SqliteStore>),
    /// On PostgreSQL.
    Postgres(Engine<PgStore>),
}

impl DemoEngine {
    /// The engine's routes (`/sssync/…`).
    pub fn router(&self) -> axum::Router {
        match self {
            DemoEngine::Sqlite(e) => sssync_core::server::router(e.clone()),
            DemoEngine::Postgres(e) => sssync_core::server::router(e.clone()),
        }
    }

    /// The engine, as the components and server functions see it.
    pub fn sync_server(&self) -> sssync_leptos::server::SyncServer {
        match self {
            DemoEngine::Sqlite(e) => sssync_leptos::server::SyncServer::new(e.clone()),
            DemoEngine::Postgres(e) => sssync_leptos::server::SyncServer::new(e.clone()),
        }
    }

    /// Closes every sync connection and stops the engine.
    pub fn shutdown(&self) {
        match self {
            DemoEngine::Sqlite(e) => e.shutdown(),
            DemoEngine::Postgres(e) => e.shutdown(),
        }
    }
}

/// The demo's table, query and events, for either database.
fn declare<S: Store>(builder: EngineBuilder<S>) -> EngineBuilder<S>
where
    Todos: ServerQuery<S::Db>,
    AddTodo: ServerEvent<S::Db>,
    ToggleTodo: ServerEvent<S::Db>,
    EditTodo: ServerEvent<S::Db>,
    DeleteTodo: ServerEvent<S::Db>,
    ToggleAll: ServerEvent<S::Db>,
    ClearCompleted: ServerEvent<S::Db>,
{
    builder
        .table(
            Table::new("todos", "id")
                .and_then(|t| t.partition("list_id"))
                .expect("plain identifiers"),
        )
        .query::<Todos>()
        .event::<AddTodo>()
        .event::<ToggleTodo>()
        .event::<EditTodo>()
        .event::<DeleteTodo>()
        .event::<ToggleAll>()
        .event::<ClearCompleted>()
}

/// Starts the sync engine over the demo's database.
pub async fn engine(pool: Pool) -> Result<DemoEngine, EngineError> {
    Ok(match pool {
        Pool::Sqlite(p) => DemoEngine::Sqlite(
            declare(Engine::builder(SqliteStore::from_pool(p)))
                .start()
                .await?,
        ),
        Pool::Postgres(p) => DemoEngine::Postgres(
            declare(Engine::builder(PgStore::from_pool(p).await?))
                .start()
                .await?,
        ),
    })
}
