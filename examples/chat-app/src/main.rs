//! The chat's server, whole. `DATABASE_URL` (default `sqlite://sssync-chat.db`), and Leptos's
//! `LEPTOS_SITE_ADDR` and `LEPTOS_SITE_ROOT`, configure it.
#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use sssync_leptos::prelude::*;
    let options = leptos::prelude::get_configuration(None)?.leptos_options;
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://sssync-chat.db".into());
    let sync = SyncServer::builder()
        .schema(chat_app::SCHEMA)
        .table(Table::new("messages", "id")?.partition("room")?)
        .open(&url)
        .await?;
    let listener = listen(options.site_addr).await?; // TCP_NODELAY
    println!("sssync chat: http://{}", listener.local_addr()?);
    axum::serve(listener, sync.app_router(options, chat_app::App, chat_app::shell)).await?;
    Ok(())
}

#[cfg(not(feature = "ssr"))]
fn main() {}
