//! The starter app: a live todo list. One table, one query, one event, one page.

use leptos::prelude::*;
use sssync_leptos::prelude::*;

/// The app's table (the server creates it at start).
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS todos \
    (id TEXT PRIMARY KEY, title TEXT NOT NULL, at INTEGER NOT NULL)";

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Todo {
    pub id: String,
    pub title: String,
}

/// The query: every todo, oldest first. `todos()` names it.
#[sync_query(key = id, reads = [todos])]
pub async fn todos(conn: &mut Conn<Db>) -> Result<Vec<Todo>, sqlx::Error> {
    sqlx::query_as("SELECT id, title FROM todos ORDER BY at, id")
        .fetch_all(&mut *conn)
        .await
}

/// Why the server refuses a todo: a code and a message each (the browser gets it back typed,
/// `rejection.kind::<Refused>()`).
#[derive(Debug, PartialEq, Rejection)]
pub enum Refused {
    #[rejection(message = "Write something first.")]
    Empty,
}

/// The event: add a todo.
#[sync_event]
pub struct AddTodo {
    #[serde(default = "new_id")] // made by the browser; by the server for a plain form
    pub id: String,
    pub title: String,
}

#[sync_event]
impl AddTodo {
    /// In the browser, at once (rolled back if the server refuses).
    fn predict(&self, view: &mut Prediction<'_>) {
        let todo = Todo {
            id: self.id.clone(),
            title: self.title.trim().to_owned(),
        };
        view.insert(todos(), todo);
    }

    /// On the server, exactly once.
    async fn apply(&self, conn: &mut Conn<Db>, _: &EventCtx) -> Result<(), EventError> {
        let title = self.title.trim();
        if title.is_empty() {
            return Err(Refused::Empty.into());
        }
        sqlx::query(
            "INSERT INTO todos (id, title, at) VALUES ($1, $2, (SELECT COUNT(*) FROM todos))",
        )
        .bind(&self.id)
        .bind(title)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The app: the sync client for the page, then the list.
#[component]
pub fn App() -> impl IntoView {
    view! {
        <SyncProvider>
            <TodoList />
        </SyncProvider>
    }
}

/// The list, live, and a form that works with and without JavaScript.
#[component]
fn TodoList() -> impl IntoView {
    let todos = use_sync_query(todos);
    let add = use_sync_event::<AddTodo>();
    let status = use_sync_status();
    view! {
            <h1>"Todos"</h1>
            <SyncForm action=add clear=&["title"]>
                <input name="title" aria-label="New todo" placeholder="What needs to be done?" />
                <button type="submit">"Add"</button>
            </SyncForm>
            {move || status.last_rejection.get().map(|r| view! { <p role="alert">{r.message}</p> })}
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                <ErrorBoundary fallback=|_| view! { <p role="alert">"The list could not load."</p> }>
                    <ul aria-label="Todos">
                        {move || Suspend::new(async move {
                            todos.await.map(|rows| {
                                rows.into_iter().map(|t| view! { <li>{t.title}</li> }).collect_view()
                            })
                        })}
                    </ul>
                </ErrorBoundary>
            </Suspense>
    }
}

// The HTML document the server renders (`shell`) and the browser's entry point (`hydrate`).
sssync_leptos::entry_points!(App);
