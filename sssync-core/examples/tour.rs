//! The two-minute tour: a server and two native clients in one process, printing the messages
//! as they flow.
//!
//! ```sh
//! cargo run -p sssync-core --features server,sqlite,native-client --example tour
//! ```
//!
//! Alice and Bob watch the same list. Alice adds two todos (each shows in her view at once, a
//! prediction, before the server confirms it), Bob toggles one, Alice tries a title that is too
//! long (the server rejects it and it vanishes from her view). Every delta is printed as it
//! arrives.

use serde::{Deserialize, Serialize};
use sssync_core::client::Prediction;
use sssync_core::client::native::{NativeClient, Options};
use sssync_core::protocol::ServerMsg;
use sssync_core::server::{
    Conn, Dependency, Engine, EventCtx, EventError, QueryCtx, ServerEvent, ServerQuery,
    SqliteStore, Store, Table, router,
};
use sssync_core::{Event, Query, Rejection};
use std::sync::Arc;
use std::time::Duration;

type Db = sqlx::Sqlite;

/// A row: what the query returns, keyed by `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
struct Todo {
    id: String,
    title: String,
    completed: bool,
}

/// The query: the todos of one list, in the order they were added.
struct Todos;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ListId {
    list: String,
}

impl Query for Todos {
    const NAME: &'static str = "todos";
    type Args = ListId;
    type Row = Todo;
    fn row_key(row: &Todo) -> String {
        row.id.clone()
    }
}

impl ServerQuery<Db> for Todos {
    // Re-run only when rows of this list change.
    fn dependencies(args: &ListId) -> Vec<Dependency> {
        vec![Dependency::partition("todos", &args.list)]
    }

    async fn run(
        conn: &mut Conn<Db>,
        _: &QueryCtx,
        args: &ListId,
    ) -> Result<Vec<Todo>, sqlx::Error> {
        sqlx::query_as("SELECT id, title, completed FROM todos WHERE list = ? ORDER BY rowid")
            .bind(&args.list)
            .fetch_all(conn)
            .await
    }
}

/// An event: add a todo. The server applies it; the client predicts it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AddTodo {
    id: String,
    list: String,
    title: String,
}

impl Event for AddTodo {
    const NAME: &'static str = "add_todo";
    fn predict(&self, view: &mut Prediction<'_>) {
        let args = ListId {
            list: self.list.clone(),
        };
        view.update(Todos::request(args), |rows| {
            rows.push(Todo {
                id: self.id.clone(),
                title: self.title.clone(),
                completed: false,
            })
        });
    }
}

impl ServerEvent<Db> for AddTodo {
    async fn apply(&self, conn: &mut Conn<Db>, _: &EventCtx) -> Result<(), EventError> {
        if self.title.len() > 40 {
            return Err(Rejection::new("too_long", "titles have at most 40 characters").into());
        }
        sqlx::query("INSERT INTO todos (id, list, title, completed) VALUES (?, ?, ?, FALSE)")
            .bind(&self.id)
            .bind(&self.list)
            .bind(&self.title)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Another event: mark a todo done.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Complete {
    id: String,
    list: String,
}

impl Event for Complete {
    const NAME: &'static str = "complete";
}

impl ServerEvent<Db> for Complete {
    async fn apply(&self, conn: &mut Conn<Db>, _: &EventCtx) -> Result<(), EventError> {
        sqlx::query("UPDATE todos SET completed = TRUE WHERE id = ? AND list = ?")
            .bind(&self.id)
            .bind(&self.list)
            .execute(conn)
            .await?;
        Ok(())
    }
}

fn printer(who: &'static str) -> Options {
    Options {
        observer: Some(Arc::new(move |m: &ServerMsg| match m {
            ServerMsg::Delta(d) => println!(
                "  {who} <- delta {} -> {}: {} put(s) {:?}, {} delete(s)",
                d.from,
                d.to,
                d.puts.len(),
                d.puts.iter().map(|p| p.row.value.get()).collect::<Vec<_>>(),
                d.dels.len()
            ),
            ServerMsg::Snapshot(s) => {
                println!("  {who} <- snapshot at {}: {} rows", s.v, s.rows.len())
            }
            ServerMsg::Ack(a) => println!("  {who} <- ack of event {} (visible at {})", a.seq, a.v),
            ServerMsg::Reject(r) => println!("  {who} <- reject of event {}: {}", r.seq, r.error),
            _ => {}
        })),
        ..Options::default()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: a SQLite file, the app's table, the engine, its routes on a free port.
    let dir = std::env::temp_dir().join(format!("sssync-tour-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("tour.db").display())).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS todos (id TEXT PRIMARY KEY, list TEXT NOT NULL, \
         title TEXT NOT NULL, completed BOOLEAN NOT NULL)",
    )
    .execute(store.pool())
    .await?;
    let engine = Engine::builder(store)
        .table(Table::new("todos", "id")?.partition("list")?)
        .query::<Todos>()
        .event::<AddTodo>()
        .event::<Complete>()
        .start()
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/sssync/ws", listener.local_addr()?);
    tokio::spawn(axum::serve(listener, router(engine.clone())).into_future());
    println!("server on {url}");

    // Two clients on the same list.
    let list = ListId {
        list: "groceries".into(),
    };
    let alice = NativeClient::connect_with(&url, "alice", printer("alice"));
    let bob = NativeClient::connect_with(&url, "bob", printer("bob"));
    alice.subscribe::<Todos>(&list);
    bob.subscribe::<Todos>(&list);
    let wait = Duration::from_secs(10);
    bob.wait_for(wait, |s| s.rows::<Todos>(&list).is_some())
        .await?;

    println!("alice adds two todos");
    for (id, title) in [("1", "milk"), ("2", "bread")] {
        alice.send(AddTodo {
            id: id.into(),
            list: list.list.clone(),
            title: title.into(),
        });
        println!("  alice's view at once: {:?}", titles(&alice, &list));
    }
    bob.wait_for(wait, |s| {
        s.rows::<Todos>(&list).is_some_and(|r| r.len() == 2)
    })
    .await?;
    println!("  bob's view: {:?}", titles(&bob, &list));

    println!("bob completes the milk");
    bob.send(Complete {
        id: "1".into(),
        list: list.list.clone(),
    });
    alice
        .wait_for(wait, |s| {
            s.rows::<Todos>(&list).is_some_and(|r| r[0].completed)
        })
        .await?;

    println!("alice tries a title that is too long");
    alice.send(AddTodo {
        id: "3".into(),
        list: list.list.clone(),
        title: "a very long title that the server will certainly refuse".into(),
    });
    println!("  alice's view at once: {:?}", titles(&alice, &list));
    alice.wait_for(wait, |s| s.pending_count() == 0).await?;
    println!(
        "  alice's view after the rejection: {:?}",
        titles(&alice, &list)
    );

    engine.shutdown();
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn titles(c: &NativeClient, list: &ListId) -> Vec<String> {
    c.rows::<Todos>(list)
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}{}", t.title, if t.completed { " (done)" } else { "" }))
        .collect()
}
