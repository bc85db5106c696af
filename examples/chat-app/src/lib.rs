//! A chat room, the second sssync app: messages live in every browser, predicted, sent without
//! JavaScript too; the page streams in order (`SsrMode::InOrder`), its messages in the HTML.
#![allow(missing_docs)] // a short example

use leptos::prelude::*;
use leptos_router::{SsrMode, components::*, path};
use serde::{Deserialize, Serialize};
use sssync_leptos::prelude::*;

/// The app's table.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, \
    room TEXT NOT NULL, author TEXT NOT NULL, text TEXT NOT NULL, at BIGINT NOT NULL)";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Message {
    pub id: String,
    pub author: String,
    pub text: String,
}

/// The messages of a room, oldest first.
#[sync_query(key = id, reads = [messages(room)])]
pub async fn messages(conn: &mut Conn<Db>, room: String) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as("SELECT id, author, text FROM messages WHERE room = $1 ORDER BY at, id")
        .bind(room)
        .fetch_all(&mut *conn)
        .await
}

/// Says something in a room.
#[sync_event]
pub struct Say {
    #[serde(default = "sssync_leptos::new_id")]
    pub id: String,
    pub room: String,
    pub author: String,
    pub text: String,
}

#[sync_event] // predicted in the browser; applied on the server (compiled there only)
impl Say {
    fn predict(&self, view: &mut Prediction<'_>) {
        let (author, text) = (self.author.trim().to_owned(), self.text.trim().to_owned());
        let message = Message { id: self.id.clone(), author, text };
        view.insert(messages(&self.room), message);
    }

    async fn apply(&self, conn: &mut Conn<Db>, _ctx: &EventCtx) -> Result<(), EventError> {
        let (author, text) = (self.author.trim(), self.text.trim());
        if author.is_empty() || text.is_empty() || text.chars().count() > 500 {
            let why = "Give a name and 1 to 500 characters.";
            return Err(Rejection::new("bad_message", why).into());
        }
        let sql = "INSERT INTO messages (id, room, author, text, at) \
                   VALUES ($1, $2, $3, $4, COALESCE((SELECT MAX(at) FROM messages), 0) + 1)";
        let insert = sqlx::query(sql).bind(&self.id).bind(&self.room).bind(author).bind(text);
        insert.execute(&mut *conn).await?;
        Ok(())
    }
}

/// The HTML document (the browser hydrates `<body>`).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let head = view! { <meta charset="utf-8" /><HydrationScripts options /> };
    view! { <!DOCTYPE html><html lang="en"><head>{head}</head><body><App /></body></html> }
}

#[component]
pub fn App() -> impl IntoView {
    view! {
        <SyncProvider>
            <Router>
                <Routes fallback=|| "Not found.">
                    <Route path=path!("/") view=|| view! { <Room room="lobby" /> } ssr=SsrMode::InOrder />
                    // The same room, streamed out of order, or partly blocked: tested with JavaScript.
                    <Route path=path!("/streamed") view=|| view! { <Room room="lobby" /> } ssr=SsrMode::OutOfOrder />
                    <Route path=path!("/blocked") view=|| view! { <Room room="lobby" /> } ssr=SsrMode::PartiallyBlocked />
                </Routes>
            </Router>
        </SyncProvider>
    }
}

/// A room: its messages, live, and a form to say something.
#[component]
fn Room(room: &'static str) -> impl IntoView {
    let messages = use_sync_query(move || messages(room));
    let say = use_sync_event::<Say>();
    let status = use_sync_status();
    let text = NodeRef::<leptos::html::Input>::new(); // emptied once its message is sent
    Effect::new(move |_| {
        say.input().with(Option::is_some).then(|| text.get_untracked().map(|i| i.set_value("")))
    });
    view! {
        <h1>{format!("#{room}")}</h1>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            <ul aria-label="Messages">
                {move || messages.rows().and_then(Result::ok).map(|rows| rows.into_iter()
                    .map(|m| view! { <li><b>{m.author}</b>": "{m.text}</li> }).collect_view())}
            </ul>
        </Suspense>
        {move || status.last_rejection.get().map(|r| view! { <p role="alert">{r.message}</p> })}
        <SyncForm action=say> // idempotent without JavaScript too (its form key)
            <input type="hidden" name="room" value=room />
            <input name="author" aria-label="Name" placeholder="Name" required />
            <input name="text" aria-label="Message" autocomplete="off" node_ref=text />
            <button type="submit">"Send"</button>
        </SyncForm>
    }
}

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
