//! The starter's server. `DATABASE_URL` (default `sqlite://starter.db`, created if missing),
//! and Leptos's `LEPTOS_SITE_ADDR` and `LEPTOS_SITE_ROOT` (cargo-leptos sets them), configure it.
use sssync_leptos::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://starter.db".into());
    let sync = SyncServer::builder()
        .schema(sssync_starter::SCHEMA) // CREATE TABLE IF NOT EXISTS (or run your migrations)
        .table(Table::new("todos", "id")?) // the table the query reads: its changes are recorded
        .open(&url)
        .await?;
    Ok(sync
        .serve(sssync_starter::App, sssync_starter::shell)
        .await?)
}
