//! The application of the engine's tests: lists of todos (and a few typed tables), its
//! handlers written once for both databases (`for_each_db!`).

use serde::{Deserialize, Serialize};
use sssync_core::client::Prediction;
use sssync_core::server::{
    Access, AccessError, Conn, Dependency, EventCtx, EventError, Fetched, Identity, Order,
    QueryCtx, ServerEvent, ServerQuery, Shape, TableRead,
};
use sssync_core::{Event, Query, Rejection};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

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

macro_rules! todo_query {
    ($name:ident, $wire:literal) => {
        pub struct $name;
        impl Query for $name {
            const NAME: &'static str = $wire;
            type Args = ListArgs;
            type Row = Todo;
            fn row_key(row: &Todo) -> String {
                row.id.clone()
            }
        }
    };
}

// The todos of one list, oldest first.
todo_query!(Todos, "todos");
// Queries whose declarations disagree with the tables: the engine refuses to start with one.
// Reads `todo(list_id)`, a misspelling of the declared `todos`.
todo_query!(MisspeltRead, "misspelt_read");
// Reads one partition of `owned`, which the test declares without a partition column.
todo_query!(PartitionOfWhole, "partition_of_whole");
// Checks access by reading `share`, a misspelling of the declared `shares`.
todo_query!(MisspeltAccessRead, "misspelt_access_read");
// Like `Todos`, but it fails while the list has a todo titled "boom" (or with a statement the
// database refuses, "bad sql").
todo_query!(Fragile, "fragile");
// Like `Todos`, but it panics while the list has a todo titled "panic".
todo_query!(Panicky, "panicky");
// Like `Todos`, but each run takes 400 ms (to hold the tailer inside a group's first read or
// a fan-out).
todo_query!(Slow, "slow");

// Declarative: the todos of a list by title (then id), maintained incrementally.
todo_query!(Shaped, "shaped");
// Declarative: the three todos of a list with the highest positions (a limited window).
todo_query!(Top3, "top3");
// Declarative, ordered by a column that may be NULL: re-run and diffed, not patched.
todo_query!(BySlug, "by_slug");

pub const SHAPED: Shape = Shape {
    table: "todos",
    key: "id",
    columns: &["id", "list_id", "title", "completed"],
    filter: &["list_id"],
    order: &[Order::Asc("title")],
    limit: None,
};

pub const TOP3: Shape = Shape {
    table: "todos",
    key: "id",
    columns: &[],
    filter: &["list_id"],
    order: &[Order::Desc("position")],
    limit: Some(3),
};

pub const BY_SLUG: Shape = Shape {
    table: "todos",
    key: "id",
    columns: &[],
    filter: &["list_id"],
    order: &[Order::Asc("slug")],
    limit: None,
};

/// How often each declarative query of each list was read in full, and incrementally, by
/// `"{query}:{list}"`.
pub static SHAPED_READS: Mutex<Option<HashMap<String, (u64, u64)>>> = Mutex::new(None);

/// (full reads, incremental reads) of `query` on `list_id` so far.
pub fn shaped_reads(query: &str, list_id: &str) -> (u64, u64) {
    SHAPED_READS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(&format!("{query}:{list_id}")).copied())
        .unwrap_or_default()
}

/// The lists whose [`Slow`] runs have started, one entry per run.
pub static SLOW_RUNS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn slow_runs(list_id: &str) -> usize {
    SLOW_RUNS
        .lock()
        .unwrap()
        .iter()
        .filter(|l| *l == list_id)
        .count()
}

/// A row of a table partitioned by a typed column (a UUID, a bool, an integer, bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Tagged {
    pub id: String,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerArgs {
    pub owner: uuid::Uuid,
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

macro_rules! tagged_query {
    ($name:ident, $wire:literal, $args:ty) => {
        pub struct $name;
        impl Query for $name {
            const NAME: &'static str = $wire;
            type Args = $args;
            type Row = Tagged;
            fn row_key(row: &Tagged) -> String {
                row.id.clone()
            }
        }
    };
}

tagged_query!(ByOwner, "by_owner", OwnerArgs);
tagged_query!(ByFlag, "by_flag", FlagArgs);
tagged_query!(ByGroup, "by_group", GroupArgs);
tagged_query!(ByBytes, "by_bytes", BytesArgs);

/// Inserts (or replaces) a row of one of the typed tables: `table` is `owned`, `flagged`,
/// `grouped` or `blobbed`, and the partition value is given in the field of its type.
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

/// Writes a todo with SQLite's `INSERT OR REPLACE`: it may move the row to another list, or
/// (through the unique `slug`) replace another todo, of any list, with the same slug. (An
/// upsert on the id in PostgreSQL, which has no REPLACE.)
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

/// An event whose handler fails in a way no resend can cure: it reads a row that does not
/// exist with `fetch_one` (sqlx `RowNotFound`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poison {
    pub id: String,
}

impl Event for Poison {
    const NAME: &'static str = "poison";
}

/// An event whose handler panics (a bug in the application).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Panic {
    pub id: String,
}

impl Event for Panic {
    const NAME: &'static str = "panic";
}

/// Pools of the tests' own on their SQLite files, for [`Misbehaving`] events by id (tests run
/// at once: each its own id).
pub static OTHER_POOL: Mutex<Vec<(String, sqlx::SqlitePool)>> = Mutex::new(Vec::new());

/// [`Misbehaving`] events with id `id` write through a pool of their own on `file` (with a
/// 10 ms busy timeout: while the engine holds the write lock, a real `SQLITE_BUSY`).
pub async fn misbehave_on(id: &str, file: &std::path::Path) {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sssync_core::server::SqliteStore::connect_options(&format!(
                "sqlite://{}",
                file.display()
            ))
            .unwrap()
            .busy_timeout(std::time::Duration::from_millis(10)),
        )
        .await
        .unwrap();
    OTHER_POOL.lock().unwrap().push((id.to_owned(), pool));
}

/// [`Misbehaving`] events with id `id` behave again.
pub fn behave(id: &str) {
    OTHER_POOL.lock().unwrap().retain(|(i, _)| i != id);
}

/// An event whose handler is at fault: it writes through another connection than the one the
/// engine gives it (on SQLite, a real `SQLITE_BUSY`: the engine holds the write lock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Misbehaving {
    pub id: String,
}

impl Event for Misbehaving {
    const NAME: &'static str = "misbehaving";
}

/// How many more times the [`Flaky`] event with an id fails (transiently) before it applies.
pub static FLAKY: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

pub fn set_flaky(id: &str, failures: u32) {
    FLAKY
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(id.to_owned(), failures);
}

/// An event whose handler fails transiently (an I/O error) as many times as [`set_flaky`]
/// said for its id, then adds a todo like [`AddTodo`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flaky {
    pub id: String,
    pub list_id: String,
    pub title: String,
}

impl Event for Flaky {
    const NAME: &'static str = "flaky";
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
        view.update(Todos::request(list(&self.list_id)), |rows| {
            rows.push(Todo {
                id: self.id.clone(),
                list_id: self.list_id.clone(),
                title: self.title.clone(),
                completed: false,
            })
        });
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
        view.update(Todos::request(list(&self.list_id)), |rows| {
            for r in rows.iter_mut().filter(|r| r.id == self.id) {
                r.completed = self.completed;
            }
        });
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
        view.update(Todos::request(list(&self.list_id)), |rows| {
            rows.retain(|r| r.id != self.id)
        });
    }
}

// Lists that may have an owner (none: public, anyone with the id) and users they are shared
// with; signed-in users are whoever a session token says (`x-session` header).

/// Session token → user name: who a request with header `x-session: {token}` is.
pub static SESSIONS: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

/// A new session of `user`: its token.
pub fn sign_in(user: &str) -> String {
    let token = format!("tok-{user}-{}", uuid::Uuid::new_v4().simple());
    SESSIONS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(token.clone(), user.to_owned());
    token
}

/// Ends a session.
pub fn sign_out(token: &str) {
    if let Some(m) = SESSIONS.lock().unwrap().as_mut() {
        m.remove(token);
    }
}

/// Session tokens whose reads fail (the session store fails for a moment), with the number of
/// reads that failed so far.
pub static UNREADABLE: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

/// Whether the session of `token` can be read (the store fails for it while not).
pub fn session_readable(token: &str, readable: bool) {
    let mut u = UNREADABLE.lock().unwrap();
    u.retain(|(t, _)| t != token);
    if !readable {
        u.push((token.to_owned(), 0));
    }
}

/// How many reads of `token`'s session failed since it became unreadable.
pub fn failed_reads(token: &str) -> u32 {
    UNREADABLE
        .lock()
        .unwrap()
        .iter()
        .find(|(t, _)| t == token)
        .map_or(0, |(_, n)| *n)
}

/// The identity of a request: the user of its `x-session` token, else anonymous; an error
/// while the token's session cannot be read.
pub fn identify(parts: &sssync_core::server::Parts) -> Result<Identity, String> {
    let token = parts.headers.get("x-session").and_then(|v| v.to_str().ok());
    if let Some(t) = token
        && let Some((_, n)) = UNREADABLE.lock().unwrap().iter_mut().find(|(u, _)| u == t)
    {
        *n += 1;
        return Err("the session store does not answer".into());
    }
    let user = token.and_then(|t| {
        SESSIONS
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|m| m.get(t).cloned())
    });
    Ok(Identity(user))
}

// The todos of a list, read only by those who may (its owner, the users it is shared with;
// anyone when it has no owner).
todo_query!(ListTodos, "list_todos");

/// The lists the reader owns (a result per identity).
pub struct MyLists;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ListRow {
    pub id: String,
    pub owner: Option<String>,
}

impl Query for MyLists {
    const NAME: &'static str = "my_lists";
    type Args = ();
    type Row = ListRow;
    fn row_key(row: &ListRow) -> String {
        row.id.clone()
    }
}

/// A list owned by whoever sends it (refused to anonymous senders).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateList {
    pub id: String,
}

impl Event for CreateList {
    const NAME: &'static str = "create_list";
    fn predict(&self, _: &mut Prediction<'_>) {}
}

/// Shares (or, with `on: false`, unshares) a list with a user; only its owner may.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub list_id: String,
    pub user: String,
    pub on: bool,
}

impl Event for Share {
    const NAME: &'static str = "share";
    fn predict(&self, _: &mut Prediction<'_>) {}
}

/// A todo in a list, by someone who may write it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddListTodo {
    pub id: String,
    pub list_id: String,
    pub title: String,
}

impl Event for AddListTodo {
    const NAME: &'static str = "add_list_todo";
    fn predict(&self, view: &mut Prediction<'_>) {
        view.update(ListTodos::request(list(&self.list_id)), |rows| {
            rows.push(Todo {
                id: self.id.clone(),
                list_id: self.list_id.clone(),
                title: self.title.clone(),
                completed: false,
            })
        });
    }
}

pub const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lists (id TEXT PRIMARY KEY NOT NULL, owner TEXT);
CREATE TABLE IF NOT EXISTS shares (id TEXT PRIMARY KEY NOT NULL, list_id TEXT NOT NULL, user_name TEXT NOT NULL);
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
-- (The explorer's soak runs 100,000 sequences on one database: what it reads is indexed.)
CREATE INDEX IF NOT EXISTS lists_by_owner ON lists (owner);
CREATE INDEX IF NOT EXISTS shares_by_list ON shares (list_id, user_name);
CREATE INDEX IF NOT EXISTS todos_by_list ON todos (list_id, position);
CREATE INDEX IF NOT EXISTS applied_by_client ON applied (client_id, seq);
";

pub const POSTGRES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lists (id TEXT PRIMARY KEY, owner TEXT);
CREATE TABLE IF NOT EXISTS shares (id TEXT PRIMARY KEY, list_id TEXT NOT NULL, user_name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS todos (
    id TEXT PRIMARY KEY,
    list_id TEXT NOT NULL,
    title TEXT NOT NULL,
    completed BOOLEAN NOT NULL DEFAULT FALSE,
    position BIGINT NOT NULL,
    slug TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS applied (client_id TEXT NOT NULL, seq BIGINT NOT NULL, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owned (id TEXT PRIMARY KEY, note TEXT NOT NULL, owner UUID);
CREATE TABLE IF NOT EXISTS flagged (id TEXT PRIMARY KEY, note TEXT NOT NULL, done BOOLEAN);
CREATE TABLE IF NOT EXISTS grouped (id TEXT PRIMARY KEY, note TEXT NOT NULL, grp BIGINT);
CREATE TABLE IF NOT EXISTS blobbed (id TEXT PRIMARY KEY, note TEXT NOT NULL, tag BYTEA);
CREATE INDEX IF NOT EXISTS lists_by_owner ON lists (owner);
CREATE INDEX IF NOT EXISTS shares_by_list ON shares (list_id, user_name);
CREATE INDEX IF NOT EXISTS todos_by_list ON todos (list_id, position);
CREATE INDEX IF NOT EXISTS applied_by_client ON applied (client_id, seq);
";

// The handlers, written once, compiled for SQLite and for PostgreSQL.
sssync_core::for_each_db! {
    /// Every applied event leaves a line here: the tests count applications.
    async fn log(conn: &mut Conn<Db>, ctx: &EventCtx, name: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO applied (client_id, seq, name) VALUES ($1, $2, $3)")
            .bind(&ctx.client_id)
            .bind(ctx.seq as i64)
            .bind(name)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn todos(conn: &mut Conn<Db>, list_id: &str) -> Result<Vec<Todo>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, list_id, title, completed FROM todos WHERE list_id = $1 \
             ORDER BY position, id",
        )
        .bind(list_id)
        .fetch_all(&mut *conn)
        .await
    }

    /// The declarative queries' reads: the filter (a list), then the keys when incremental.
    async fn fetch_todos(
        conn: &mut Conn<Db>,
        query: &str,
        sql: &str,
        list_id: &str,
        keys: Option<&str>,
    ) -> Result<Vec<Fetched<Todo>>, sqlx::Error> {
        use sqlx::Row as _;
        {
            let mut counts = SHAPED_READS.lock().unwrap();
            let c = counts
                .get_or_insert_with(HashMap::new)
                .entry(format!("{query}:{list_id}"))
                .or_default();
            match keys {
                Some(_) => c.1 += 1,
                None => c.0 += 1,
            }
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).bind(list_id.to_owned());
        if let Some(k) = keys {
            q = q.bind(k.to_owned());
        }
        let rows = q.fetch_all(&mut *conn).await?;
        rows.iter()
            .map(|r| {
                Ok(Fetched {
                    row: sqlx::FromRow::from_row(r)?,
                    key: keys.map(|_| r.try_get("__sssync_key")).transpose()?,
                    prev: if keys.is_some() { r.try_get("__sssync_prev")? } else { None },
                })
            })
            .collect()
    }

    impl ServerQuery<Db> for Shaped {
        const KEYED_BY: Option<&'static str> = Some("todos");
        const SHAPE: Option<Shape> = Some(SHAPED);

        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }

        async fn run(conn: &mut Conn<Db>, _: &QueryCtx, args: &ListArgs) -> Result<Vec<Todo>, sqlx::Error> {
            let sql = SHAPED.select_sql();
            Ok(fetch_todos(conn, Self::NAME, &sql, &args.list_id, None).await?.into_iter().map(|f| f.row).collect())
        }

        async fn fetch(
            conn: &mut Conn<Db>,
            sql: &str,
            args: &ListArgs,
            keys: Option<&str>,
        ) -> Result<Vec<Fetched<Todo>>, sqlx::Error> {
            fetch_todos(conn, Self::NAME, sql, &args.list_id, keys).await
        }
    }

    impl ServerQuery<Db> for BySlug {
        const SHAPE: Option<Shape> = Some(BY_SLUG);

        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }

        async fn run(conn: &mut Conn<Db>, _: &QueryCtx, args: &ListArgs) -> Result<Vec<Todo>, sqlx::Error> {
            let sql = BY_SLUG.select_sql();
            Ok(fetch_todos(conn, Self::NAME, &sql, &args.list_id, None).await?.into_iter().map(|f| f.row).collect())
        }

        async fn fetch(
            conn: &mut Conn<Db>,
            sql: &str,
            args: &ListArgs,
            keys: Option<&str>,
        ) -> Result<Vec<Fetched<Todo>>, sqlx::Error> {
            fetch_todos(conn, Self::NAME, sql, &args.list_id, keys).await
        }
    }

    impl ServerQuery<Db> for Top3 {
        const SHAPE: Option<Shape> = Some(TOP3);

        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }

        async fn run(conn: &mut Conn<Db>, _: &QueryCtx, args: &ListArgs) -> Result<Vec<Todo>, sqlx::Error> {
            let sql = TOP3.select_sql();
            Ok(fetch_todos(conn, Self::NAME, &sql, &args.list_id, None).await?.into_iter().map(|f| f.row).collect())
        }

        async fn fetch(
            conn: &mut Conn<Db>,
            sql: &str,
            args: &ListArgs,
            keys: Option<&str>,
        ) -> Result<Vec<Fetched<Todo>>, sqlx::Error> {
            fetch_todos(conn, Self::NAME, sql, &args.list_id, keys).await
        }
    }

    impl ServerQuery<Db> for Todos {
        const KEYED_BY: Option<&'static str> = Some("todos");
        // Checked at start: a declared table, with a partition column.
        const READS: &'static [TableRead] = &[TableRead::partition("todos")];

        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }

        async fn run(
            conn: &mut Conn<Db>,
            _ctx: &QueryCtx,
            args: &ListArgs,
        ) -> Result<Vec<Todo>, sqlx::Error> {
            todos(conn, &args.list_id).await
        }
    }

    /// Whether `who` may read and write list `list_id`.
    async fn may_access(
        conn: &mut Conn<Db>,
        list_id: &str,
        who: &Identity,
    ) -> Result<bool, sqlx::Error> {
        let owner: Option<Option<String>> =
            sqlx::query_scalar("SELECT owner FROM lists WHERE id = $1")
                .bind(list_id)
                .fetch_optional(&mut *conn)
                .await?;
        let Some(Some(owner)) = owner else {
            return Ok(true); // no such list, or nobody's: public
        };
        let Some(user) = who.id() else {
            return Ok(false);
        };
        if owner == user {
            return Ok(true);
        }
        let shared: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM shares WHERE list_id = $1 AND user_name = $2")
                .bind(list_id)
                .bind(user)
                .fetch_one(&mut *conn)
                .await?;
        Ok(shared > 0)
    }

    impl ServerQuery<Db> for ListTodos {
        const KEYED_BY: Option<&'static str> = Some("todos");
        const ACCESS: Access = Access::Checked;

        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }

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
                Err(AccessError::forbidden("no such list"))
            }
        }

        async fn run(
            conn: &mut Conn<Db>,
            _ctx: &QueryCtx,
            args: &ListArgs,
        ) -> Result<Vec<Todo>, sqlx::Error> {
            todos(conn, &args.list_id).await
        }
    }

    impl ServerQuery<Db> for MyLists {
        const ACCESS: Access = Access::PerIdentity;

        fn dependencies(_: &()) -> Vec<Dependency> {
            vec![Dependency::table("lists")]
        }

        async fn run(
            conn: &mut Conn<Db>,
            ctx: &QueryCtx,
            _: &(),
        ) -> Result<Vec<ListRow>, sqlx::Error> {
            let Some(user) = ctx.identity.id() else {
                return Ok(Vec::new());
            };
            sqlx::query_as("SELECT id, owner FROM lists WHERE owner = $1 ORDER BY id")
                .bind(user)
                .fetch_all(&mut *conn)
                .await
        }
    }

    impl ServerEvent<Db> for CreateList {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            let Some(user) = ctx.identity.id() else {
                return Err(Rejection::forbidden("sign in to own a list").into());
            };
            sqlx::query("INSERT INTO lists (id, owner) VALUES ($1, $2)")
                .bind(&self.id)
                .bind(user)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for Share {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            let owner: Option<Option<String>> =
                sqlx::query_scalar("SELECT owner FROM lists WHERE id = $1")
                    .bind(&self.list_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            if owner.flatten().as_deref() != ctx.identity.id() || ctx.identity.is_anonymous() {
                return Err(Rejection::forbidden("only its owner shares a list").into());
            }
            let id = format!("{}:{}", self.list_id, self.user);
            if self.on {
                sqlx::query(
                    "INSERT INTO shares (id, list_id, user_name) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&id)
                .bind(&self.list_id)
                .bind(&self.user)
                .execute(&mut *conn)
                .await?;
            } else {
                sqlx::query("DELETE FROM shares WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }
    }

    impl ServerEvent<Db> for AddListTodo {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            if !may_access(conn, &self.list_id, &ctx.identity).await? {
                return Err(Rejection::forbidden("no such list").into());
            }
            sqlx::query(
                "INSERT INTO todos (id, list_id, title, completed, position) \
                 VALUES ($1, $2, $3, FALSE, \
                 COALESCE((SELECT MAX(position) FROM todos WHERE list_id = $2), 0) + 1)",
            )
            .bind(&self.id)
            .bind(&self.list_id)
            .bind(&self.title)
            .execute(&mut *conn)
            .await?;
            log(conn, ctx, Self::NAME).await?;
            Ok(())
        }
    }

    impl ServerQuery<Db> for Fragile {
        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }

        async fn run(
            conn: &mut Conn<Db>,
            _ctx: &QueryCtx,
            args: &ListArgs,
        ) -> Result<Vec<Todo>, sqlx::Error> {
            let rows = todos(conn, &args.list_id).await?;
            if rows.iter().any(|t| t.title == "bad sql") {
                // A statement the database refuses (PostgreSQL then refuses every later
                // statement of the transaction).
                sqlx::query("SELECT x FROM no_such_table")
                    .execute(&mut *conn)
                    .await?;
            }
            if rows.iter().any(|t| t.title == "boom") {
                return Err(sqlx::Error::Protocol("the fragile query broke".into()));
            }
            Ok(rows)
        }
    }

    impl ServerQuery<Db> for Panicky {
        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }

        async fn run(
            conn: &mut Conn<Db>,
            _ctx: &QueryCtx,
            args: &ListArgs,
        ) -> Result<Vec<Todo>, sqlx::Error> {
            let rows = todos(conn, &args.list_id).await?;
            assert!(rows.iter().all(|t| t.title != "panic"), "the panicky query panics");
            Ok(rows)
        }
    }

    impl ServerEvent<Db> for Misbehaving {
        async fn apply(
            &self,
            _conn: &mut Conn<Db>,
            _ctx: &EventCtx,
        ) -> Result<(), EventError> {
            let other = OTHER_POOL
                .lock()
                .unwrap()
                .iter()
                .find(|(id, _)| *id == self.id)
                .map(|(_, p)| p.clone());
            if let Some(pool) = other {
                sqlx::query("INSERT INTO applied (client_id, seq, name) VALUES ($1, 0, 'x')")
                    .bind(&self.id)
                    .execute(&pool)
                    .await?;
            }
            Ok(())
        }
    }

    impl ServerEvent<Db> for Panic {
        async fn apply(
            &self,
            _conn: &mut Conn<Db>,
            _ctx: &EventCtx,
        ) -> Result<(), EventError> { panic!("the panic event's handler panics ({})", self.id)
        }
    }

    impl ServerQuery<Db> for Slow {
        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }

        async fn run(
            conn: &mut Conn<Db>,
            _ctx: &QueryCtx,
            args: &ListArgs,
        ) -> Result<Vec<Todo>, sqlx::Error> {
            SLOW_RUNS.lock().unwrap().push(args.list_id.clone());
            let rows = todos(conn, &args.list_id).await?;
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(rows)
        }
    }

    async fn tagged<T>(
        conn: &mut Conn<Db>,
        sql: &'static str,
        value: T,
    ) -> Result<Vec<Tagged>, sqlx::Error>
    where
        T: for<'q> sqlx::Encode<'q, Db> + sqlx::Type<Db> + Send,
    {
        sqlx::query_as(sql).bind(value).fetch_all(&mut *conn).await
    }

    impl ServerQuery<Db> for ByOwner {
        fn dependencies(a: &OwnerArgs) -> Vec<Dependency> {
            vec![Dependency::partition("owned", a.owner)]
        }
        async fn run(
            conn: &mut Conn<Db>,
            _: &QueryCtx,
            a: &OwnerArgs,
        ) -> Result<Vec<Tagged>, sqlx::Error> {
            tagged(conn, "SELECT id, note FROM owned WHERE owner = $1 ORDER BY id", a.owner).await
        }
    }

    impl ServerQuery<Db> for ByFlag {
        fn dependencies(a: &FlagArgs) -> Vec<Dependency> {
            vec![Dependency::partition("flagged", a.done)]
        }
        async fn run(
            conn: &mut Conn<Db>,
            _: &QueryCtx,
            a: &FlagArgs,
        ) -> Result<Vec<Tagged>, sqlx::Error> {
            tagged(conn, "SELECT id, note FROM flagged WHERE done = $1 ORDER BY id", a.done).await
        }
    }

    impl ServerQuery<Db> for ByGroup {
        fn dependencies(a: &GroupArgs) -> Vec<Dependency> {
            vec![Dependency::partition("grouped", a.group)]
        }
        async fn run(
            conn: &mut Conn<Db>,
            _: &QueryCtx,
            a: &GroupArgs,
        ) -> Result<Vec<Tagged>, sqlx::Error> {
            tagged(conn, "SELECT id, note FROM grouped WHERE grp = $1 ORDER BY id", a.group).await
        }
    }

    impl ServerQuery<Db> for ByBytes {
        fn dependencies(a: &BytesArgs) -> Vec<Dependency> {
            vec![Dependency::partition("blobbed", a.bytes.clone())]
        }
        async fn run(
            conn: &mut Conn<Db>,
            _: &QueryCtx,
            a: &BytesArgs,
        ) -> Result<Vec<Tagged>, sqlx::Error> {
            tagged(
                conn,
                "SELECT id, note FROM blobbed WHERE tag = $1 ORDER BY id",
                a.bytes.clone(),
            ).await
        }
    }

    impl ServerEvent<Db> for PutTagged {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            _ctx: &EventCtx,
        ) -> Result<(), EventError> {
            let q = match self.table.as_str() {
                "owned" => sqlx::query(
                    "INSERT INTO owned (id, note, owner) VALUES ($1, $2, $3) ON CONFLICT (id) \
                     DO UPDATE SET note = excluded.note, owner = excluded.owner",
                )
                .bind(&self.id)
                .bind(&self.note)
                .bind(self.owner),
                "flagged" => sqlx::query(
                    "INSERT INTO flagged (id, note, done) VALUES ($1, $2, $3) ON CONFLICT (id) \
                     DO UPDATE SET note = excluded.note, done = excluded.done",
                )
                .bind(&self.id)
                .bind(&self.note)
                .bind(self.done),
                "grouped" => sqlx::query(
                    "INSERT INTO grouped (id, note, grp) VALUES ($1, $2, $3) ON CONFLICT (id) \
                     DO UPDATE SET note = excluded.note, grp = excluded.grp",
                )
                .bind(&self.id)
                .bind(&self.note)
                .bind(self.group),
                _ => sqlx::query(
                    "INSERT INTO blobbed (id, note, tag) VALUES ($1, $2, $3) ON CONFLICT (id) \
                     DO UPDATE SET note = excluded.note, tag = excluded.tag",
                )
                .bind(&self.id)
                .bind(&self.note)
                .bind(self.bytes.clone()),
            };
            q.execute(&mut *conn).await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for ReplaceTodo {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            let sql = if <Db as sqlx::Database>::NAME == "SQLite" {
                "INSERT OR REPLACE INTO todos (id, list_id, title, completed, position, slug) \
                 VALUES ($1, $2, $3, FALSE, 1000, $4)"
            } else {
                "INSERT INTO todos (id, list_id, title, completed, position, slug) \
                 VALUES ($1, $2, $3, FALSE, 1000, $4) ON CONFLICT (id) DO UPDATE SET \
                 list_id = excluded.list_id, title = excluded.title, slug = excluded.slug"
            };
            sqlx::query(sql)
                .bind(&self.id)
                .bind(&self.list_id)
                .bind(&self.title)
                .bind(&self.slug)
                .execute(&mut *conn)
                .await?;
            log(conn, ctx, Self::NAME).await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for Poison {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            _ctx: &EventCtx,
        ) -> Result<(), EventError> {
            let title: String = sqlx::query_scalar("SELECT title FROM todos WHERE id = $1")
                .bind(&self.id)
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query("UPDATE todos SET title = $1 WHERE id = $2")
                .bind(format!("{title}!"))
                .bind(&self.id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for Flaky {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            let failing = {
                let mut f = FLAKY.lock().unwrap();
                match f.get_or_insert_with(HashMap::new).get_mut(&self.id) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        true
                    }
                    _ => false,
                }
            };
            if failing {
                return Err(sqlx::Error::Io(std::io::Error::other("a passing fault")).into());
            }
            let add = AddTodo {
                id: self.id.clone(),
                list_id: self.list_id.clone(),
                title: self.title.clone(),
            };
            // Both databases' impls exist: name this one.
            <AddTodo as ServerEvent<Db>>::apply(&add, conn, ctx).await
        }
    }

    impl ServerEvent<Db> for AddTodo {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            if self.title.chars().count() > 200 {
                return Err(Rejection::new(
                    "title_too_long",
                    "a title has at most 200 characters",
                )
                .into());
            }
            sqlx::query(
                "INSERT INTO todos (id, list_id, title, completed, position) \
                 VALUES ($1, $2, $3, FALSE, \
                 COALESCE((SELECT MAX(position) FROM todos WHERE list_id = $2), 0) + 1)",
            )
            .bind(&self.id)
            .bind(&self.list_id)
            .bind(&self.title)
            .execute(&mut *conn)
            .await?;
            log(conn, ctx, Self::NAME).await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for ToggleTodo {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            sqlx::query("UPDATE todos SET completed = $1 WHERE id = $2 AND list_id = $3")
                .bind(self.completed)
                .bind(&self.id)
                .bind(&self.list_id)
                .execute(&mut *conn)
                .await?;
            log(conn, ctx, Self::NAME).await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for DeleteTodo {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            ctx: &EventCtx,
        ) -> Result<(), EventError> {
            sqlx::query("DELETE FROM todos WHERE id = $1 AND list_id = $2")
                .bind(&self.id)
                .bind(&self.list_id)
                .execute(&mut *conn)
                .await?;
            log(conn, ctx, Self::NAME).await?;
            Ok(())
        }
    }

    impl ServerQuery<Db> for MisspeltRead {
        const READS: &'static [TableRead] = &[TableRead::partition("todo")];
        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todo", &args.list_id)]
        }
        async fn run(_: &mut Conn<Db>, _: &QueryCtx, _: &ListArgs) -> Result<Vec<Todo>, sqlx::Error> {
            Ok(Vec::new())
        }
    }

    impl ServerQuery<Db> for PartitionOfWhole {
        const READS: &'static [TableRead] = &[TableRead::partition("owned")];
        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("owned", &args.list_id)]
        }
        async fn run(_: &mut Conn<Db>, _: &QueryCtx, _: &ListArgs) -> Result<Vec<Todo>, sqlx::Error> {
            Ok(Vec::new())
        }
    }

    impl ServerQuery<Db> for MisspeltAccessRead {
        const ACCESS: Access = Access::Checked;
        const READS: &'static [TableRead] = &[TableRead::partition("todos")];
        const ACCESS_READS: &'static [TableRead] = &[TableRead::partition("share")];
        fn dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("todos", &args.list_id)]
        }
        fn access_dependencies(args: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("share", &args.list_id)]
        }
        async fn run(_: &mut Conn<Db>, _: &QueryCtx, _: &ListArgs) -> Result<Vec<Todo>, sqlx::Error> {
            Ok(Vec::new())
        }
    }
}
