//! The demo's query and events on the server: what runs in the sync engine. The statements and
//! handlers are written once and compiled for both databases (`for_each_db!`): the SQL suits
//! SQLite and PostgreSQL alike (`$1` placeholders, `FALSE`, `COALESCE`).

use crate::db::Pool;
use crate::model::{
    AddTodo, ClearCompleted, CreateList, DEFAULT_LIST, DeleteTodo, EditTodo, ListArgs, MyList,
    MyLists, ShareList, Todo, Todos, ToggleAll, ToggleTodo, UnshareList, check_id, clean_title,
};
use sssync_core::Rejection;
use sssync_core::server::{
    Access, AccessError, Conn, Dependency, Engine, EngineBuilder, EngineError, EventCtx,
    EventError, Identity, Parts, PgStore, QueryCtx, ServerEvent, ServerQuery, SqliteStore, Store,
    Table,
};

/// What a reader or writer of a private list it may not see is told (the same as for a list
/// that does not exist: nothing says it does).
const NO_SUCH_LIST: &str = "This list does not exist, or you may not see it.";

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

    /// Whether `identity` may read and write list `list_id`: its owner and the users it is
    /// shared with may; a list nobody owns is public.
    async fn may_access(
        conn: &mut Conn<Db>,
        list_id: &str,
        identity: &Identity,
    ) -> Result<bool, sqlx::Error> {
        let owner: Option<(String,)> = sqlx::query_as("SELECT owner FROM lists WHERE id = $1")
            .bind(list_id)
            .fetch_optional(&mut *conn)
            .await?;
        let Some((owner,)) = owner else {
            return Ok(true);
        };
        let Some(user) = identity.id() else {
            return Ok(false);
        };
        if owner == user {
            return Ok(true);
        }
        let shared: Option<(String,)> =
            sqlx::query_as("SELECT id FROM shares WHERE list_id = $1 AND user_id = $2")
                .bind(list_id)
                .bind(user)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(shared.is_some())
    }

    /// Refuses an event on a list its sender may not change (`forbidden`).
    async fn check_access(
        conn: &mut Conn<Db>,
        ctx: &EventCtx,
        list_id: &str,
    ) -> Result<(), EventError> {
        if may_access(conn, list_id, &ctx.identity).await? {
            Ok(())
        } else {
            Err(Rejection::forbidden(NO_SUCH_LIST).into())
        }
    }

    /// Refuses an event on a list the sender does not own.
    async fn check_owner(
        conn: &mut Conn<Db>,
        ctx: &EventCtx,
        list_id: &str,
    ) -> Result<String, EventError> {
        let owner: Option<(String,)> = sqlx::query_as("SELECT owner FROM lists WHERE id = $1")
            .bind(list_id)
            .fetch_optional(&mut *conn)
            .await?;
        match (owner, ctx.identity.id()) {
            (Some((owner,)), Some(user)) if owner == user => Ok(owner),
            _ => Err(Rejection::forbidden("Only the owner of a private list can share it.").into()),
        }
    }

    /// The id of the user named `name`.
    async fn user_named(conn: &mut Conn<Db>, name: &str) -> Result<String, EventError> {
        let id: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE name = $1")
            .bind(name.trim())
            .fetch_optional(&mut *conn)
            .await?;
        id.map(|(id,)| id).ok_or_else(|| {
            Rejection::new("unknown_user", "There is no user of that name.").into()
        })
    }

    impl ServerQuery<Db> for Todos {
        // Its rows are the table's, keyed by id, in an order each row carries (`position`): a
        // client that reconnects to any instance resumes from the durable log.
        const KEYED_BY: Option<&'static str> = Some("todos");
        // A private list is read by its owner and the users it is shared with only.
        const ACCESS: Access = Access::Checked;

        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }

        // Who may read it changes with the list's row and its shares: each commit to them
        // checks the live readers again.
        fn access_dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![
                Dependency::partition("lists", &args.list_id),
                Dependency::partition("shares", &args.list_id),
            ]
        }

        async fn authorize(
            conn: &mut Conn<Db>,
            ctx: &QueryCtx,
            args: &ListArgs,
        ) -> Result<(), AccessError> {
            if may_access(conn, &args.list_id, &ctx.identity).await? {
                Ok(())
            } else {
                Err(AccessError::forbidden(NO_SUCH_LIST))
            }
        }

        async fn run(
            conn: &mut Conn<Db>,
            _: &QueryCtx,
            args: &ListArgs,
        ) -> Result<Vec<Todo>, sqlx::Error> {
            if !crate::model::valid_id(&args.list_id) {
                return Ok(Vec::new()); // no such list can exist
            }
            list(conn, &args.list_id).await
        }
    }

    impl ServerEvent<Db> for AddTodo {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            check_id(&self.list_id)?;
            check_access(conn, ctx, &self.list_id).await?;
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
        }
    }

    impl ServerEvent<Db> for ToggleTodo {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            check_id(&self.list_id)?;
            check_access(conn, ctx, &self.list_id).await?;
            check_id(&self.id)?;
            sqlx::query("UPDATE todos SET completed = $1 WHERE list_id = $2 AND id = $3")
                .bind(self.completed)
                .bind(&self.list_id)
                .bind(&self.id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for EditTodo {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            check_id(&self.list_id)?;
            check_access(conn, ctx, &self.list_id).await?;
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
        }
    }

    impl ServerEvent<Db> for DeleteTodo {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            check_id(&self.list_id)?;
            check_access(conn, ctx, &self.list_id).await?;
            check_id(&self.id)?;
            exec(
                conn,
                "DELETE FROM todos WHERE list_id = $1 AND id = $2",
                &[&self.list_id, &self.id],
            )
            .await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for ToggleAll {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            check_id(&self.list_id)?;
            check_access(conn, ctx, &self.list_id).await?;
            sqlx::query("UPDATE todos SET completed = $1 WHERE list_id = $2")
                .bind(self.completed)
                .bind(&self.list_id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for ClearCompleted {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            check_id(&self.list_id)?;
            check_access(conn, ctx, &self.list_id).await?;
            exec(
                conn,
                "DELETE FROM todos WHERE list_id = $1 AND completed",
                &[&self.list_id],
            )
            .await?;
            Ok(())
        }
    }

    impl ServerQuery<Db> for MyLists {
        // Each reader has its own result.
        const ACCESS: Access = Access::PerIdentity;

        fn dependencies(_: &()) -> Vec<Dependency> {
            vec![Dependency::table("lists"), Dependency::table("shares")]
        }

        async fn run(
            conn: &mut Conn<Db>,
            ctx: &QueryCtx,
            _: &(),
        ) -> Result<Vec<MyList>, sqlx::Error> {
            let Some(user) = ctx.identity.id() else {
                return Ok(Vec::new());
            };
            let rows: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT l.id, u.name, l.owner FROM lists l JOIN users u ON u.id = l.owner \
                 WHERE l.owner = $1 \
                    OR l.id IN (SELECT list_id FROM shares WHERE user_id = $1) \
                 ORDER BY l.id",
            )
            .bind(user)
            .fetch_all(&mut *conn)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(id, owner, owner_id)| MyList {
                    id,
                    owner,
                    mine: owner_id == user,
                })
                .collect())
        }
    }

    impl ServerEvent<Db> for CreateList {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            check_id(&self.id)?;
            let Some(user) = ctx.identity.id() else {
                return Err(Rejection::forbidden("Sign in to make a private list.").into());
            };
            // A list in use stays public: nobody takes over someone else's list.
            let used: Option<(String,)> =
                sqlx::query_as("SELECT id FROM todos WHERE list_id = $1 LIMIT 1")
                    .bind(&self.id)
                    .fetch_optional(&mut *conn)
                    .await?;
            if used.is_some() || self.id == DEFAULT_LIST {
                return Err(Rejection::new("list_in_use", "That list is in use already.").into());
            }
            exec(conn, "INSERT INTO lists (id, owner) VALUES ($1, $2)", &[&self.id, user])
                .await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for ShareList {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            check_id(&self.list_id)?;
            let owner = check_owner(conn, ctx, &self.list_id).await?;
            let user = user_named(conn, &self.user_name).await?;
            if user == owner {
                return Err(Rejection::new("own_list", "This list is yours already.").into());
            }
            exec(
                conn,
                "INSERT INTO shares (id, list_id, user_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
                &[&format!("{}:{user}", self.list_id), &self.list_id, &user],
            )
            .await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for UnshareList {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            check_id(&self.list_id)?;
            check_owner(conn, ctx, &self.list_id).await?;
            let user = user_named(conn, &self.user_name).await?;
            exec(
                conn,
                "DELETE FROM shares WHERE id = $1",
                &[&format!("{}:{user}", self.list_id)],
            )
            .await?;
            Ok(())
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

    /// Who sent a request, as the demo's sessions say.
    pub async fn identify(&self, parts: &Parts) -> Identity {
        match self {
            DemoEngine::Sqlite(e) => e.identify(parts).await,
            DemoEngine::Postgres(e) => e.identify(parts).await,
        }
    }

    /// A session was signed in or out: every connection asks again who it is.
    pub fn identities_changed(&self) {
        match self {
            DemoEngine::Sqlite(e) => e.identities_changed(),
            DemoEngine::Postgres(e) => e.identities_changed(),
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

/// The demo's tables, queries and events, for either database, and who is asking (the
/// session's user).
fn declare<S: Store>(builder: EngineBuilder<S>, sessions: crate::auth::Sessions) -> EngineBuilder<S>
where
    Todos: ServerQuery<S::Db>,
    MyLists: ServerQuery<S::Db>,
    CreateList: ServerEvent<S::Db>,
    ShareList: ServerEvent<S::Db>,
    UnshareList: ServerEvent<S::Db>,
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
        .table(
            Table::new("lists", "id")
                .and_then(|t| t.partition("id"))
                .expect("plain identifiers"),
        )
        .table(
            Table::new("shares", "id")
                .and_then(|t| t.partition("list_id"))
                .expect("plain identifiers"),
        )
        .identify(move |parts| sessions.identify(parts))
        .query::<Todos>()
        .query::<MyLists>()
        .event::<CreateList>()
        .event::<ShareList>()
        .event::<UnshareList>()
        .event::<AddTodo>()
        .event::<ToggleTodo>()
        .event::<EditTodo>()
        .event::<DeleteTodo>()
        .event::<ToggleAll>()
        .event::<ClearCompleted>()
}

/// Starts the sync engine over the demo's database.
pub async fn engine(pool: Pool) -> Result<DemoEngine, EngineError> {
    let sessions = crate::auth::Sessions::new(pool.clone());
    Ok(match pool {
        Pool::Sqlite(p) => DemoEngine::Sqlite(
            declare(Engine::builder(SqliteStore::from_pool(p)), sessions)
                .start()
                .await?,
        ),
        Pool::Postgres(p) => DemoEngine::Postgres(
            declare(Engine::builder(PgStore::from_pool(p).await?), sessions)
                .start()
                .await?,
        ),
    })
}
