//! The chat's server, whole. `DATABASE_URL` (default `sqlite://sssync-chat.db`), and Leptos's
//! `LEPTOS_SITE_ADDR` and `LEPTOS_SITE_ROOT`, configure it.
use sssync_leptos::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://sssync-chat.db".into());
    let table = Table::new("messages", "id")?.partition("room")?; // what the query reads
    let sync = SyncServer::builder().schema(chat_app::SCHEMA).table(table).open(&url).await?;
    Ok(sync.serve(chat_app::App, chat_app::shell).await?)
}
