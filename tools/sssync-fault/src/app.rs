//! The application the scenarios run: named counters (an increment is not idempotent, so an
//! event applied twice shows), lists of items, and a log of every application (one row per
//! event applied, by the event's unique id). Some events cannot succeed: a poison one (its
//! handler reads a row that does not exist), an invalid one (refused by the application), and a
//! flaky one that fails transiently a few times before it applies.

use serde::{Deserialize, Serialize};
use sssync_core::client::{EventTypes, Prediction};
use sssync_core::server::{
    Conn, Dependency, EngineBuilder, EventCtx, EventError, Fetched, Order, QueryCtx, ServerEvent,
    ServerQuery, Shape, Store, Table,
};
use sssync_core::{Event, Query, Rejection};
use std::collections::HashMap;
use std::sync::Mutex;

/// The application's tables (SQLite and PostgreSQL alike). `applied.uid` is deliberately not
/// unique: an event applied twice must be visible, not refused by a constraint.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY NOT NULL, n BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY NOT NULL, list_id TEXT NOT NULL, title TEXT NOT NULL, pos BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_list ON items (list_id, pos, id);
CREATE TABLE IF NOT EXISTS applied (
    uid TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL, amount BIGINT NOT NULL
);
";

/// A named counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Counter {
    /// Its name (the key).
    pub name: String,
    /// Its value.
    pub n: i64,
}

/// Every counter, by name.
pub struct Counters;

impl Query for Counters {
    const NAME: &'static str = "counters";
    type Args = ();
    type Row = Counter;
    fn row_key(r: &Counter) -> String {
        r.name.clone()
    }
}

/// An item of a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Item {
    /// Its id (the key).
    pub id: String,
    /// Its list.
    pub list_id: String,
    /// Its title.
    pub title: String,
}

/// The args of [`Items`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListArgs {
    /// The list.
    pub list_id: String,
}

/// The items of one list, oldest first: a declarative query ([`ITEMS`]), maintained
/// incrementally.
pub struct Items;

impl Query for Items {
    const NAME: &'static str = "items";
    type Args = ListArgs;
    type Row = Item;
    fn row_key(r: &Item) -> String {
        r.id.clone()
    }
}

/// The shape of [`Items`]: the rows of `items` whose `list_id` is the arg, by `pos`.
pub const ITEMS: Shape = Shape {
    table: "items",
    key: "id",
    columns: &["id", "list_id", "title"],
    filter: &["list_id"],
    order: &[Order::Asc("pos")],
    limit: None,
};

/// The same rows as [`Items`], by a query of its own SQL: re-run and diffed on every change
/// (the benchmark compares the two).
pub struct ItemsRerun;

impl Query for ItemsRerun {
    const NAME: &'static str = "items_rerun";
    type Args = ListArgs;
    type Row = Item;
    fn row_key(r: &Item) -> String {
        r.id.clone()
    }
}

fn predict_increment(view: &mut Prediction<'_>, counter: &str, by: i64) {
    view.update(Counters::request(()), |rows| {
        match rows.iter_mut().find(|c| c.name == counter) {
            Some(c) => c.n += by,
            None => {
                rows.push(Counter {
                    name: counter.to_owned(),
                    n: by,
                });
                rows.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
    });
}

/// Adds `by` to a counter: not idempotent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incr {
    /// The event's unique id.
    pub uid: String,
    /// The counter.
    pub counter: String,
    /// How much.
    pub by: i64,
}

impl Event for Incr {
    const NAME: &'static str = "incr";
    fn predict(&self, view: &mut Prediction<'_>) {
        predict_increment(view, &self.counter, self.by);
    }
}

/// Adds an item at the end of a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddItem {
    /// The event's unique id.
    pub uid: String,
    /// The item's id.
    pub id: String,
    /// Its list.
    pub list_id: String,
    /// Its title.
    pub title: String,
}

impl Event for AddItem {
    const NAME: &'static str = "add_item";
    fn predict(&self, view: &mut Prediction<'_>) {
        let args = ListArgs {
            list_id: self.list_id.clone(),
        };
        let item = Item {
            id: self.id.clone(),
            list_id: self.list_id.clone(),
            title: self.title.clone(),
        };
        view.insert(Items::request(args), item);
    }
}

/// Deletes an item (whether or not it is there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelItem {
    /// The event's unique id.
    pub uid: String,
    /// The item's id.
    pub id: String,
    /// Its list.
    pub list_id: String,
}

impl Event for DelItem {
    const NAME: &'static str = "del_item";
    fn predict(&self, view: &mut Prediction<'_>) {
        let args = ListArgs {
            list_id: self.list_id.clone(),
        };
        view.update(Items::request(args), |rows| {
            rows.retain(|r| r.id != self.id)
        });
    }
}

/// Cannot succeed: its handler reads a row that does not exist (`fetch_one`: RowNotFound).
/// The engine must reject it (`internal`), not retry it forever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poison {
    /// The event's unique id.
    pub uid: String,
}

impl Event for Poison {
    const NAME: &'static str = "poison";
}

/// Refused by the application (validation): rolled back on the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalid {
    /// The event's unique id.
    pub uid: String,
    /// A counter its prediction bumps (the rollback must remove it).
    pub counter: String,
}

impl Event for Invalid {
    const NAME: &'static str = "invalid";
    fn predict(&self, view: &mut Prediction<'_>) {
        predict_increment(view, &self.counter, 1000);
    }
}

/// Attempts of each [`Flaky`] event so far, in this server process.
static FLAKY: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

/// Fails transiently (an I/O error) its first `fails` attempts in a server process, then adds
/// `by` to a counter like [`Incr`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flaky {
    /// The event's unique id.
    pub uid: String,
    /// The counter.
    pub counter: String,
    /// How much.
    pub by: i64,
    /// Transient failures before it applies.
    pub fails: u32,
}

impl Event for Flaky {
    const NAME: &'static str = "flaky";
    fn predict(&self, view: &mut Prediction<'_>) {
        predict_increment(view, &self.counter, self.by);
    }
}

// The handlers, written once for both databases.
sssync_core::for_each_db! {
    impl ServerQuery<Db> for Counters {
        fn dependencies(_: &()) -> Vec<Dependency> {
            vec![Dependency::table("counters")]
        }
        async fn run(
            conn: &mut Conn<Db>,
            _: &QueryCtx,
            _: &(),
        ) -> Result<Vec<Counter>, sqlx::Error> {
            sqlx::query_as("SELECT name, n FROM counters ORDER BY name").fetch_all(&mut *conn).await
        }
    }

    impl ServerQuery<Db> for Items {
        // Its rows are the table's, keyed by id, in an order each row carries (`pos`).
        const KEYED_BY: Option<&'static str> = Some("items");
        const SHAPE: Option<Shape> = Some(ITEMS);

        fn dependencies(a: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("items", &a.list_id)]
        }
        async fn run(
            conn: &mut Conn<Db>,
            _: &QueryCtx,
            a: &ListArgs,
        ) -> Result<Vec<Item>, sqlx::Error> {
            static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let sql = SQL.get_or_init(|| ITEMS.select_sql());
            let rows = <Self as ServerQuery<Db>>::fetch(conn, sql, a, None).await?;
            Ok(rows.into_iter().map(|f| f.row).collect())
        }
        async fn fetch(
            conn: &mut Conn<Db>,
            sql: &str,
            a: &ListArgs,
            keys: Option<&str>,
        ) -> Result<Vec<Fetched<Item>>, sqlx::Error> {
            use sqlx::Row as _;
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).bind(a.list_id.clone());
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
    }

    impl ServerQuery<Db> for ItemsRerun {
        const KEYED_BY: Option<&'static str> = Some("items");

        fn dependencies(a: &ListArgs) -> Vec<Dependency> {
            vec![Dependency::partition("items", &a.list_id)]
        }
        async fn run(
            conn: &mut Conn<Db>,
            _: &QueryCtx,
            a: &ListArgs,
        ) -> Result<Vec<Item>, sqlx::Error> {
            sqlx::query_as(
                    "SELECT id, list_id, title FROM items WHERE list_id = $1 ORDER BY pos, id",
                )
                .bind(&a.list_id)
                .fetch_all(&mut *conn)
                .await
        }
    }

    async fn log(
        conn: &mut Conn<Db>,
        uid: &str,
        kind: &str,
        target: &str,
        amount: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO applied (uid, kind, target, amount) VALUES ($1, $2, $3, $4)")
            .bind(uid)
            .bind(kind)
            .bind(target)
            .bind(amount)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn increment(conn: &mut Conn<Db>, counter: &str, by: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO counters (name, n) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET n = counters.n + $2",
        )
        .bind(counter)
        .bind(by)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    impl ServerEvent<Db> for Incr {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            _: &EventCtx,
        ) -> Result<(), EventError> {
            increment(conn, &self.counter, self.by).await?;
            log(conn, &self.uid, "incr", &self.counter, self.by).await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for AddItem {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            _: &EventCtx,
        ) -> Result<(), EventError> {
            sqlx::query(
                "INSERT INTO items (id, list_id, title, pos) VALUES ($1, $2, $3, \
                 COALESCE((SELECT MAX(pos) FROM items WHERE list_id = $2), 0) + 1)",
            )
            .bind(&self.id)
            .bind(&self.list_id)
            .bind(&self.title)
            .execute(&mut *conn)
            .await?;
            log(conn, &self.uid, "add_item", &self.id, 1).await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for DelItem {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            _: &EventCtx,
        ) -> Result<(), EventError> {
            sqlx::query("DELETE FROM items WHERE id = $1 AND list_id = $2")
                .bind(&self.id)
                .bind(&self.list_id)
                .execute(&mut *conn)
                .await?;
            log(conn, &self.uid, "del_item", &self.id, 1).await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for Poison {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            _: &EventCtx,
        ) -> Result<(), EventError> {
            let n: i64 = sqlx::query_scalar("SELECT n FROM counters WHERE name = $1")
                .bind(format!("no such counter {}", self.uid))
                .fetch_one(&mut *conn)
                .await?;
            log(conn, &self.uid, "poison", "", n).await?;
            Ok(())
        }
    }

    impl ServerEvent<Db> for Invalid {
        async fn apply(
            &self,
            _: &mut Conn<Db>,
            _: &EventCtx,
        ) -> Result<(), EventError> { Err(Rejection::new("invalid", "this event is never valid").into())
        }
    }

    impl ServerEvent<Db> for Flaky {
        async fn apply(
            &self,
            conn: &mut Conn<Db>,
            _: &EventCtx,
        ) -> Result<(), EventError> {
            let failing = {
                let mut seen = FLAKY.lock().unwrap_or_else(|e| e.into_inner());
                let n = seen
                    .get_or_insert_with(HashMap::new)
                    .entry(self.uid.clone())
                    .or_insert(0);
                *n += 1;
                *n <= self.fails
            };
            if failing {
                return Err(sqlx::Error::Io(std::io::Error::other("a passing fault")).into());
            }
            increment(conn, &self.counter, self.by).await?;
            log(conn, &self.uid, "flaky", &self.counter, self.by).await?;
            Ok(())
        }
    }

}

/// The application's tables, queries and events on an engine builder.
pub fn declare<S: Store>(builder: EngineBuilder<S>) -> EngineBuilder<S>
where
    Counters: ServerQuery<S::Db>,
    Items: ServerQuery<S::Db>,
    ItemsRerun: ServerQuery<S::Db>,
    Incr: ServerEvent<S::Db>,
    AddItem: ServerEvent<S::Db>,
    DelItem: ServerEvent<S::Db>,
    Poison: ServerEvent<S::Db>,
    Invalid: ServerEvent<S::Db>,
    Flaky: ServerEvent<S::Db>,
{
    builder
        .table(Table::new("counters", "name").expect("identifier"))
        .table(
            Table::new("items", "id")
                .and_then(|t| t.partition("list_id"))
                .expect("identifiers"),
        )
        .query::<Counters>()
        .query::<Items>()
        .query::<ItemsRerun>()
        .event::<Incr>()
        .event::<AddItem>()
        .event::<DelItem>()
        .event::<Poison>()
        .event::<Invalid>()
        .event::<Flaky>()
}

/// The event types, for clients (to predict restored events).
pub fn event_types() -> EventTypes {
    EventTypes::new()
        .with::<Incr>()
        .with::<AddItem>()
        .with::<DelItem>()
        .with::<Poison>()
        .with::<Invalid>()
        .with::<Flaky>()
}
