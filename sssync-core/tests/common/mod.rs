//! The engine's tests: a small application (`app.rs`: lists of todos, a few typed tables)
//! on a real database (a SQLite file, or a PostgreSQL schema of its own), served on 127.0.0.1
//! by a real axum server. `on_both!` runs a test body against each database.
#![allow(dead_code)]

mod app;
pub use app::*;
pub use sssync_core::server::Outcome;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use sssync_core::protocol::ServerMsg;
use sssync_core::server::{
    Engine, EngineBuilder, PgStore, SqliteStore, Store, Table, WriteRetry, router,
};
use sssync_core::{Epoch, Limits};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

pub const WAIT: Duration = Duration::from_secs(10);

/// Runs a test body once on SQLite and once on PostgreSQL (`…::sqlite`, `…::postgres`), with
/// `$db` the test's database. Without a PostgreSQL server the second says so and passes, except
/// in CI (`CI` set), where it fails.
#[macro_export]
macro_rules! on_both {
    ($(#[$meta:meta])* async fn $name:ident($db:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let $db = TestDb::sqlite();
                $body
            }
            #[tokio::test]
            async fn postgres() {
                let Some($db) = TestDb::postgres().await else {
                    return;
                };
                $body
            }
        }
    };
}

/// Starts an engine on `$db` (the test schema created) with only what `$declare` declares on the
/// builder `$b`: what `start` returned, the engine dropped.
#[macro_export]
macro_rules! start_declared {
    ($db:expr, |$b:ident| $declare:expr) => {
        match $db.store_with_schema().await {
            TestStore::Sqlite(store) => {
                let $b = sssync_core::server::Engine::builder(store);
                $declare.start().await.map(drop)
            }
            TestStore::Postgres(store) => {
                let $b = sssync_core::server::Engine::builder(store);
                $declare.start().await.map(drop)
            }
        }
    };
}

/// A store on a test's database, its schema created (see `start_declared!`).
pub enum TestStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// The PostgreSQL the tests use (`SSSYNC_TEST_PG`, default the machine's own).
pub fn pg_url() -> String {
    std::env::var("SSSYNC_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A test's database: a SQLite file in a fresh folder, or a fresh schema of the test
/// PostgreSQL database. Removed when dropped.
pub enum TestDb {
    Sqlite(TempDir),
    Postgres { schema: String },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        TestDb::Sqlite(TempDir::create())
    }

    /// A fresh schema, or `None` when no PostgreSQL answers (a failure in CI).
    pub async fn postgres() -> Option<TestDb> {
        use sqlx::Connection;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::PgConnection::connect(&pg_url()),
        )
        .await;
        let mut conn = match conn {
            Ok(Ok(c)) => c,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 5 s".to_owned(),
                };
                if std::env::var_os("CI").is_some() {
                    panic!("PostgreSQL at {} is needed in CI: {why}", pg_url());
                }
                eprintln!("skipped: no PostgreSQL at {} ({why})", pg_url());
                return None;
            }
        };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        Some(TestDb::Postgres { schema })
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, TestDb::Sqlite(_))
    }

    /// A tag unique to this database (for names that must not meet another test's).
    pub fn tag(&self) -> String {
        match self {
            TestDb::Sqlite(d) => d.0.file_name().unwrap().to_string_lossy().into_owned(),
            TestDb::Postgres { schema } => schema.clone(),
        }
    }

    /// The SQLite file (SQLite only).
    pub fn file(&self) -> PathBuf {
        match self {
            TestDb::Sqlite(d) => d.db(),
            TestDb::Postgres { .. } => panic!("a SQLite test"),
        }
    }

    /// A store on this database with the tests' schema created.
    pub async fn store_with_schema(&self) -> TestStore {
        match self {
            TestDb::Sqlite(dir) => {
                let options =
                    SqliteStore::connect_options(&format!("sqlite://{}", dir.db().display()))
                        .unwrap();
                let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(2);
                let store = SqliteStore::from_pool(pool.connect_with(options).await.unwrap());
                sqlx::raw_sql(SQLITE_SCHEMA)
                    .execute(store.pool())
                    .await
                    .unwrap();
                TestStore::Sqlite(store)
            }
            TestDb::Postgres { schema } => {
                let store = PgStore::from_pool(pg_pool(schema, 2).await).await.unwrap();
                sqlx::raw_sql(POSTGRES_SCHEMA)
                    .execute(store.pool())
                    .await
                    .unwrap();
                TestStore::Postgres(store)
            }
        }
    }

    /// A pool of this database's own (for the tests' direct reads and writes: another writer,
    /// as far as the engine knows).
    pub async fn pool(&self) -> TestPool {
        match self {
            TestDb::Sqlite(d) => TestPool::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(
                        SqliteStore::connect_options(&format!("sqlite://{}", d.db().display()))
                            .unwrap(),
                    )
                    .await
                    .unwrap(),
            ),
            TestDb::Postgres { schema } => TestPool::Postgres(pg_pool(schema, 2).await),
        }
    }
}

async fn pg_pool(schema: &str, size: u32) -> sqlx::PgPool {
    let search_path = format!("SET search_path TO {schema}");
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .after_connect(move |conn, _| {
            let sql = search_path.clone();
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                Ok(())
            })
        })
        // Named after the schema, so that the drop can end what is left of them.
        .connect_with(
            pg_url()
                .parse::<sqlx::postgres::PgConnectOptions>()
                .unwrap()
                .application_name(schema),
        )
        .await
        .unwrap()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { schema } = self {
            let schema = schema.clone();
            // Best effort, on a thread of its own (a drop cannot await).
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&pg_url()).await {
                        // The test's runtime waits for this thread, so its engine's
                        // connections cannot end a transaction they hold (a tailer's round
                        // cut off at the test's end): they are ended here, or the DROP would
                        // wait for their locks forever.
                        let _ = sqlx::query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE application_name = $1 AND pid <> pg_backend_pid()",
                        )
                        .bind(&schema)
                        .execute(&mut c)
                        .await;
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {schema} CASCADE"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A pool of the test's own on its database.
pub enum TestPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            TestPool::Sqlite($p) => $body,
            TestPool::Postgres($p) => $body,
        }
    };
}

impl TestPool {
    /// Runs one statement (a write made outside the engine).
    pub async fn execute(&self, sql: &'static str, args: &[&str]) {
        on_pool!(self, |p| {
            let mut q = sqlx::query(sql);
            for a in args {
                q = q.bind(*a);
            }
            q.execute(p).await.unwrap();
        })
    }

    /// Runs several statements (one transaction when they say `BEGIN` … `COMMIT`).
    pub async fn script(&self, sql: &'static str) {
        on_pool!(self, |p| {
            sqlx::raw_sql(sql).execute(p).await.unwrap();
        })
    }

    /// One number a statement answers.
    pub async fn scalar(&self, sql: &'static str, args: &[&str]) -> i64 {
        on_pool!(self, |p| {
            let mut q = sqlx::query_scalar(sql);
            for a in args {
                q = q.bind(*a);
            }
            q.fetch_one(p).await.unwrap()
        })
    }

    /// Writes todos of `list_id` outside the engine: (id, title, position), not completed.
    pub async fn insert_todos(&self, list_id: &str, todos: &[(&str, &str, &str)]) {
        for (id, title, position) in todos {
            self.execute(
                "INSERT INTO todos (id, list_id, title, completed, position) \
                 VALUES ($1, $2, $3, FALSE, CAST($4 AS BIGINT))",
                &[id, list_id, title, position],
            )
            .await;
        }
    }

    /// A declarative query's rows, read in full.
    pub async fn read_shape(&self, shape: &sssync_core::server::Shape, list_id: &str) -> Vec<Todo> {
        let sql = shape.select_sql();
        on_pool!(self, |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(list_id)
                .fetch_all(p)
                .await
                .unwrap()
        })
    }

    /// The todos of a list.
    pub async fn todos(&self, list_id: &str) -> Vec<Todo> {
        on_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, list_id, title, completed FROM todos WHERE list_id = $1 ORDER BY position, id"
        )
        .bind(list_id)
        .fetch_all(p)
        .await
        .unwrap()
        })
    }

    /// (client, seq, times) for events applied more than once.
    pub async fn applied_twice(&self) -> Vec<(String, i64, i64)> {
        on_pool!(self, |p| {
            sqlx::query_as(
            "SELECT client_id, seq, COUNT(*) FROM applied GROUP BY client_id, seq HAVING COUNT(*) > 1"
        )
        .fetch_all(p)
        .await
        .unwrap()
        })
    }

    /// (client, seq, times) for events of clients whose ids start with `prefix` applied more
    /// than once (a range of the index: the cost of those clients, not of the table).
    pub async fn applied_twice_of(&self, prefix: &str) -> Vec<(String, i64, i64)> {
        // Above every id that starts with `prefix`, in code point order (SQLite's `BINARY`, and
        // the test databases' `C` collation on PostgreSQL).
        let end = format!("{prefix}\u{10FFFF}");
        on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT client_id, seq, COUNT(*) FROM applied \
                 WHERE client_id >= $1 AND client_id < $2 \
                 GROUP BY client_id, seq HAVING COUNT(*) > 1",
            )
            .bind(prefix)
            .bind(&end)
            .fetch_all(p)
            .await
            .unwrap()
        })
    }

    pub async fn applied_count(&self) -> i64 {
        on_pool!(self, |p| sqlx::query_scalar("SELECT COUNT(*) FROM applied")
            .fetch_one(p)
            .await
            .unwrap())
    }

    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await)
    }
}

/// How a test server differs from the default one.
#[derive(Clone, Default)]
pub struct Config {
    pub limits: Option<Limits>,
    pub write_retry: Option<WriteRetry>,
    /// SQLite's busy timeout (default 10 s).
    pub busy_timeout: Option<Duration>,
    /// SQLite: when set, every connection of the pool limits the database to this many pages
    /// (0: no limit) each time it is taken: a real `SQLITE_FULL` on demand.
    pub max_pages: Option<Arc<AtomicU32>>,
    pub group_ttl: Option<Duration>,
    /// Change-log versions kept.
    pub log_retention: Option<u64>,
    /// How often connections ask again who they are.
    pub reidentify_every: Option<Duration>,
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
    use std::sync::atomic::AtomicU64;
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

/// Every connection of `pool` that can be had (on PostgreSQL, the doorbell's listener keeps one
/// for good): taken until none comes within a second.
async fn every_connection<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Vec<sqlx::pool::PoolConnection<DB>> {
    let mut held = Vec::new();
    while held.len() < pool.options().get_max_connections() as usize {
        match tokio::time::timeout(Duration::from_secs(1), pool.acquire()).await {
            Ok(Ok(c)) => held.push(c),
            _ => break,
        }
    }
    assert!(!held.is_empty(), "no connection of the pool could be had");
    held
}

/// The engine of a test server, on either database.
#[derive(Clone)]
pub enum TestEngine {
    Sqlite(Engine<SqliteStore>),
    Postgres(Engine<PgStore>),
}

macro_rules! on_engine {
    ($engine:expr, |$e:ident| $body:expr) => {
        match $engine {
            TestEngine::Sqlite($e) => $body,
            TestEngine::Postgres($e) => $body,
        }
    };
}

impl TestEngine {
    pub fn epoch(&self) -> Epoch {
        on_engine!(self, |e| e.epoch())
    }

    pub fn counts(&self) -> sssync_core::server::Counts {
        on_engine!(self, |e| e.counts())
    }

    /// The database version every live query of this instance reflects.
    pub fn current_version(&self) -> sssync_core::Version {
        on_engine!(self, |e| e.current_version())
    }

    pub fn is_incremental(&self, name: &str) -> bool {
        on_engine!(self, |e| e.is_incremental(name))
    }

    pub fn shutdown(&self) {
        on_engine!(self, |e| e.shutdown())
    }

    /// Applies event `name` from in-process code, anonymously, as a write of its own.
    pub async fn apply(&self, name: &str, args: &str) -> Outcome {
        on_engine!(self, |e| e.apply(name, args).await.unwrap())
    }

    pub fn identities_changed(&self) {
        on_engine!(self, |e| e.identities_changed())
    }

    /// Like [`Self::apply`], on behalf of `user`.
    pub async fn apply_by(&self, user: &str, name: &str, args: &str) -> Outcome {
        let who = sssync_core::server::Identity::user(user);
        on_engine!(self, |e| e.apply(name, args).by(&who).await.unwrap())
    }

    /// Like [`Self::apply`], as seq `seq` of client `client` (by `user`, or anonymously).
    pub async fn apply_from(
        &self,
        user: Option<&str>,
        client: &str,
        seq: u64,
        name: &str,
        args: &str,
    ) -> Result<Outcome, sssync_core::server::EngineError> {
        let who = user.map_or_else(
            sssync_core::server::Identity::anonymous,
            sssync_core::server::Identity::user,
        );
        on_engine!(self, |e| e
            .apply(name, args)
            .by(&who)
            .from_client(client, seq)
            .await)
    }

    /// Like [`Self::apply`], at most once per `key`.
    pub async fn apply_once(&self, key: &str, name: &str, args: &str) -> Outcome {
        on_engine!(self, |e| e.apply(name, args).once(key).await.unwrap())
    }

    /// Takes every connection of the engine's pool until the guard drops: the engine cannot
    /// read or write the database meanwhile (as when it loses its connection to it).
    pub async fn hold_pool(&self) -> Box<dyn std::any::Any + Send> {
        on_engine!(self, |e| {
            Box::new(every_connection(e.store().pool()).await)
        })
    }

    /// Hands every connection of the engine's pool back inside a transaction (on PostgreSQL a
    /// failed one), as an application that shares the pool and leaks a transaction would: the
    /// next `BEGIN` on each of them fails.
    pub async fn spoil_pool(&self) {
        on_engine!(self, |e| {
            let mut held = every_connection(e.store().pool()).await;
            for c in &mut held {
                sqlx::raw_sql("BEGIN").execute(&mut **c).await.unwrap();
                // PostgreSQL: the transaction fails (SQLite answers NULL).
                let _ = sqlx::raw_sql("SELECT 1/0").execute(&mut **c).await;
            }
        })
    }

    /// The SQLite engine's own pool (SQLite only).
    pub fn sqlite_pool(&self) -> &sqlx::SqlitePool {
        match self {
            TestEngine::Sqlite(e) => e.store().pool(),
            TestEngine::Postgres(_) => panic!("a SQLite test"),
        }
    }

    async fn close(&self) {
        on_engine!(self, |e| e.store().pool().close().await)
    }
}

fn declare<S: Store>(builder: EngineBuilder<S>, config: &Config) -> EngineBuilder<S>
where
    Todos: sssync_core::server::ServerQuery<S::Db>,
    Shaped: sssync_core::server::ServerQuery<S::Db>,
    Top3: sssync_core::server::ServerQuery<S::Db>,
    BySlug: sssync_core::server::ServerQuery<S::Db>,
    Fragile: sssync_core::server::ServerQuery<S::Db>,
    Slow: sssync_core::server::ServerQuery<S::Db>,
    Panicky: sssync_core::server::ServerQuery<S::Db>,
    Panic: sssync_core::server::ServerEvent<S::Db>,
    Misbehaving: sssync_core::server::ServerEvent<S::Db>,
    ByOwner: sssync_core::server::ServerQuery<S::Db>,
    ByFlag: sssync_core::server::ServerQuery<S::Db>,
    ByGroup: sssync_core::server::ServerQuery<S::Db>,
    ByBytes: sssync_core::server::ServerQuery<S::Db>,
    AddTodo: sssync_core::server::ServerEvent<S::Db>,
    ToggleTodo: sssync_core::server::ServerEvent<S::Db>,
    DeleteTodo: sssync_core::server::ServerEvent<S::Db>,
    ReplaceTodo: sssync_core::server::ServerEvent<S::Db>,
    PutTagged: sssync_core::server::ServerEvent<S::Db>,
    Poison: sssync_core::server::ServerEvent<S::Db>,
    Flaky: sssync_core::server::ServerEvent<S::Db>,
    ListTodos: sssync_core::server::ServerQuery<S::Db>,
    MyLists: sssync_core::server::ServerQuery<S::Db>,
    CreateList: sssync_core::server::ServerEvent<S::Db>,
    Share: sssync_core::server::ServerEvent<S::Db>,
    AddListTodo: sssync_core::server::ServerEvent<S::Db>,
{
    let table = |name: &str, part: &str| Table::new(name, "id").unwrap().partition(part).unwrap();
    let mut b = builder
        .table(table("todos", "list_id"))
        .table(table("owned", "owner"))
        .table(table("flagged", "done"))
        .table(table("grouped", "grp"))
        .table(table("blobbed", "tag"))
        .table(table("lists", "id"))
        .table(table("shares", "list_id"))
        .query::<ListTodos>()
        .query::<MyLists>()
        .event::<CreateList>()
        .event::<Share>()
        .event::<AddListTodo>()
        .identify(|parts| {
            let who = identify(parts);
            Box::pin(async move { who })
        })
        .query::<Todos>()
        .query::<Shaped>()
        .query::<Top3>()
        .query::<BySlug>()
        .query::<Fragile>()
        .query::<Slow>()
        .query::<Panicky>()
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
        .event::<Flaky>()
        .event::<Panic>()
        .event::<Misbehaving>();
    if let Some(l) = config.limits.clone() {
        b = b.limits(l);
    }
    if let Some(r) = config.write_retry {
        b = b.write_retry(r);
    }
    if let Some(t) = config.group_ttl {
        b = b.group_ttl(t);
    }
    if let Some(k) = config.log_retention {
        b = b.log_retention(k);
    }
    if let Some(every) = config.reidentify_every {
        b = b.reidentify_every(every);
    }
    b
}

/// A running server: the engine and its HTTP server on 127.0.0.1.
pub struct Server {
    pub engine: TestEngine,
    pub addr: SocketAddr,
    /// A pool of the test's own on the database (reads, and writes made outside the engine).
    pub db: TestPool,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts an engine on `db` and serves it on `port` (0: any free port).
    pub async fn start(db: &TestDb, port: u16) -> Server {
        Server::start_with(db, port, Config::default()).await
    }

    /// Like [`Server::start`], configured.
    pub async fn start_with(db: &TestDb, port: u16, config: Config) -> Server {
        let engine = match db {
            TestDb::Sqlite(dir) => {
                let mut options =
                    SqliteStore::connect_options(&format!("sqlite://{}", dir.db().display()))
                        .unwrap();
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
                            sqlx::query(sqlx::AssertSqlSafe(format!(
                                "PRAGMA max_page_count = {n}"
                            )))
                            .execute(&mut *conn)
                            .await?;
                            Ok(true)
                        })
                    });
                }
                let store = SqliteStore::from_pool(pool.connect_with(options).await.unwrap());
                sqlx::raw_sql(SQLITE_SCHEMA)
                    .execute(store.pool())
                    .await
                    .unwrap();
                TestEngine::Sqlite(
                    declare(Engine::builder(store), &config)
                        .start()
                        .await
                        .unwrap(),
                )
            }
            TestDb::Postgres { schema } => {
                let store = PgStore::from_pool(pg_pool(schema, 8).await).await.unwrap();
                sqlx::raw_sql(POSTGRES_SCHEMA)
                    .execute(store.pool())
                    .await
                    .unwrap();
                TestEngine::Postgres(
                    declare(Engine::builder(store), &config)
                        .start()
                        .await
                        .unwrap(),
                )
            }
        };
        // As an application serves it (TCP_NODELAY: small frames are not held back).
        let listener = sssync_core::server::listen(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = on_engine!(&engine, |e| router(e.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            engine,
            addr,
            db: db.pool().await,
            task,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/sssync/ws", self.addr)
    }

    /// Stops the engine (closing every connection) and the HTTP server, and closes every
    /// handle on the database, like a process that exits.
    pub async fn stop(self) {
        self.engine.shutdown();
        self.task.abort();
        let _ = self.task.await;
        self.engine.close().await;
        self.db.close().await;
    }

    /// The todos of a list, read directly from the database.
    pub async fn todos(&self, list_id: &str) -> Vec<Todo> {
        self.db.todos(list_id).await
    }

    /// How many times each (client, seq) was applied, for those applied more than once.
    pub async fn applied_twice(&self) -> Vec<(String, i64, i64)> {
        self.db.applied_twice().await
    }

    /// `applied_twice`, for the clients whose ids start with `prefix`.
    pub async fn applied_twice_of(&self, prefix: &str) -> Vec<(String, i64, i64)> {
        self.db.applied_twice_of(prefix).await
    }

    pub async fn applied_count(&self) -> i64 {
        self.db.applied_count().await
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

    /// Connects with these upgrade headers (an `x-session`) and says `hello` as `client_id`;
    /// the first answer.
    pub async fn hello_with(
        server: &Server,
        headers: &[(&str, &str)],
        client_id: &str,
    ) -> (Raw, ServerMsg) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = server.ws_url().into_client_request().unwrap();
        for (k, v) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut raw = Raw { ws };
        raw.send(json!({"t": "hello", "protocol": 1, "client_id": client_id}))
            .await;
        let first = raw.recv().await;
        (raw, first)
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
    let headers: Vec<(&str, &str)> = if_none_match
        .map(|e| vec![("If-None-Match", e)])
        .unwrap_or_default();
    http(addr, "GET", path, &headers, "").await
}

/// A minimal HTTP/1.1 request: status, raw headers, body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    if !body.is_empty() {
        extra.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n{body}"
        )
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

/// A streaming HTTP/1.0 GET (no chunking: the body runs until close): the SSE `data:` lines.
pub struct SseStream {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl SseStream {
    pub async fn open(addr: std::net::SocketAddr, path_and_query: &str) -> SseStream {
        SseStream::open_with(addr, path_and_query, &[]).await
    }

    /// Opens the stream with these request headers.
    pub async fn open_with(
        addr: std::net::SocketAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> SseStream {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        s.write_all(
            format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n{extra}\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut reader = tokio::io::BufReader::new(s);
        let mut status = String::new();
        use tokio::io::AsyncBufReadExt;
        reader.read_line(&mut status).await.unwrap();
        assert!(status.contains(" 200 "), "{status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
        }
        SseStream { reader }
    }

    pub async fn next(&mut self) -> ServerMsg {
        use tokio::io::AsyncBufReadExt;
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
                .await
                .expect("an event within the wait")
                .unwrap();
            assert!(n > 0, "the stream ended");
            if let Some(data) = line.strip_prefix("data: ") {
                return ServerMsg::parse(data.trim_end()).unwrap();
            }
        }
    }
}

pub async fn http_post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = http(addr, "POST", path, &[], body).await;
    (status, body)
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
