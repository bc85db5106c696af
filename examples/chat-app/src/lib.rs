//! A chat room, the second sssync app: messages live in every browser, predicted, sent without
//! JavaScript too; the page streams in order (`SsrMode::InOrder`), its messages in the HTML.

use leptos::prelude::*;
use leptos_router::{SsrMode, components::*, path};
use sssync_leptos::prelude::*;

pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, \
    room TEXT NOT NULL, author TEXT NOT NULL, text TEXT NOT NULL, at BIGINT NOT NULL)";

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Message {
    pub id: String,
    pub author: String,
    pub text: String,
}

/// The messages of a room, oldest first.
#[sync_query(key = id, reads = [messages(room)])]
pub async fn messages(conn: &mut Conn<Db>, room: String) -> Result<Vec<Message>, sqlx::Error> {
    let sql = "SELECT id, author, text FROM messages WHERE room = $1 ORDER BY at, id";
    sqlx::query_as(sql).bind(room).fetch_all(&mut *conn).await
}

/// Why the server refuses a message (`rejection.kind::<Refused>()` in the browser).
#[derive(Debug, PartialEq, Rejection)]
pub enum Refused {
    #[rejection(message = "Give a name and 1 to 500 characters.")]
    BadMessage,
}

/// Says something in a room.
#[sync_event]
pub struct Say {
    #[serde(default = "new_id")]
    pub id: String,
    pub room: String,
    pub author: String,
    pub text: String,
}

#[sync_event] // predicted in the browser; applied on the server (compiled there only)
impl Say {
    fn predict(&self, view: &mut Prediction<'_>) {
        let (author, text) = (self.author.trim().to_owned(), self.text.trim().to_owned());
        view.insert(messages(&self.room), Message { id: self.id.clone(), author, text });
    }

    async fn apply(&self, conn: &mut Conn<Db>, _ctx: &EventCtx) -> Result<(), EventError> {
        let (author, text) = (self.author.trim(), self.text.trim());
        if author.is_empty() || text.is_empty() || text.chars().count() > 500 {
            return Err(Refused::BadMessage.into());
        }
        let sql = "INSERT INTO messages (id, room, author, text, at) \
                   VALUES ($1, $2, $3, $4, COALESCE((SELECT MAX(at) FROM messages), 0) + 1)";
        let insert = sqlx::query(sql).bind(&self.id).bind(&self.room).bind(author).bind(text);
        insert.execute(&mut *conn).await?;
        Ok(())
    }
}

sssync_leptos::entry_points!(App); // `shell`, the server's HTML document; `hydrate`

#[component]
pub fn App() -> impl IntoView {
    let lobby = || view! { <Room room="lobby" /> };
    view! {
        <SyncProvider><Router><Routes fallback=|| "Not found.">
            <Route path=path!("/") view=lobby ssr=SsrMode::InOrder />
            // The same room, streamed out of order, or partly blocked: tested with JavaScript.
            <Route path=path!("/streamed") view=lobby ssr=SsrMode::OutOfOrder />
            <Route path=path!("/blocked") view=lobby ssr=SsrMode::PartiallyBlocked />
        </Routes></Router></SyncProvider>
    }
}

/// A room: its messages, live, and a form to say something.
#[component]
fn Room(room: &'static str) -> impl IntoView {
    let (messages, say, status) =
        (use_sync_query(move || messages(room)), use_sync_event::<Say>(), use_sync_status());
    let item = |m: Message| view! { <li><b>{m.author}</b>": "{m.text}</li> };
    let list = move || {
        Suspend::new(async move { messages.await.map(|r| r.into_iter().map(item).collect_view()) })
    };
    view! {
        <h1>{format!("#{room}")}</h1>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            <ErrorBoundary fallback=|_| view! { <p role="alert">"The room could not load."</p> }>
                <ul aria-label="Messages">{list}</ul>
            </ErrorBoundary>
        </Suspense>
        {move || status.last_rejection.get().map(|r| view! { <p role="alert">{r.message}</p> })}
        <SyncForm action=say clear=&["text"]> // idempotent without JavaScript too (its form key)
            <input type="hidden" name="room" value=room />
            <input name="author" aria-label="Name" placeholder="Name" required />
            <input name="text" aria-label="Message" autocomplete="off" />
            <button type="submit">"Send"</button>
        </SyncForm>
    }
}
