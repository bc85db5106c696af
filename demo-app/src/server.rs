//! The demo's HTTP server: configuration from the environment, the routes, graceful shutdown.

use crate::app::{App, shell};
use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use leptos::prelude::*;
use leptos_axum::LeptosRoutes;

/// Where the database is when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://sssync-demo.db";

/// Builds the demo's router: the pages (server-rendered), the server functions, `/new` (a fresh
/// list), the account forms' posts (`/auth/…`), the sync engine's routes (`/sssync/…`), the
/// static files of the site root; sessions on all of them.
pub fn router(
    options: LeptosOptions,
    pool: crate::db::Pool,
    sync: sssync_leptos::server::SyncServer,
) -> Router {
    // Built once per process (leptos#4773: see `route_list`).
    let routes = sssync_leptos::server::route_list(App);
    let sessions = crate::auth::Sessions::new(pool.clone());
    let context = {
        let (pool, sync) = (pool.clone(), sync.context());
        move || {
            sync();
            provide_context(pool.clone());
        }
    };
    let pages = Router::new()
        .route(
            "/new",
            get(|| async { Redirect::to(&format!("/lists/{}", uuid::Uuid::new_v4())) }),
        )
        .leptos_routes_with_context(&options, routes, context, {
            let options = options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler(shell))
        .with_state(options);
    // An anonymous visitor's pages are kept while their lists are unchanged (inside the check
    // below: a hidden list's 404 is decided first).
    sync.with_kept_pages(pages)
        .layer(axum::middleware::from_fn_with_state(
            sync.clone(),
            not_found_for_hidden_lists,
        ))
        .merge(crate::auth::router(pool, sync.clone()))
        .merge(sync.router())
        // Every path knows its session (the sync routes read it through the engine's identify).
        .layer(sessions.layer())
}

/// A private list's pages are a 404 for anyone who may not read it (its page then says only
/// that the list does not exist). Decided before the page renders, so that no header is
/// written during a render (whatever the route's `SsrMode`, streamed or not).
async fn not_found_for_hidden_lists(
    axum::extract::State(sync): axum::extract::State<sssync_leptos::server::SyncServer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let list = req
        .uri()
        .path()
        .strip_prefix("/lists/")
        .and_then(|rest| rest.split('/').next())
        .filter(|id| crate::model::valid_id(id))
        .map(str::to_owned);
    let (parts, body) = req.into_parts();
    let hidden = match list {
        Some(list_id) => {
            let may = sync
                .may_read(crate::model::todos(list_id), Some(&parts))
                .await;
            matches!(may, Err(sssync_leptos::SyncError::Forbidden(_)))
        }
        None => false,
    };
    let mut res = next
        .run(axum::extract::Request::from_parts(parts, body))
        .await;
    if hidden {
        *res.status_mut() = axum::http::StatusCode::NOT_FOUND;
    }
    res
}

/// Runs the server until Ctrl-C or SIGTERM. Configuration:
/// - `DATABASE_URL` (default [`DEFAULT_DATABASE_URL`]): a SQLite URL, or a `postgres://` URL
///   (any number of instances may share one PostgreSQL database);
/// - `LEPTOS_SITE_ADDR` (default `127.0.0.1:3000`), `LEPTOS_SITE_ROOT` (the built site), and the
///   other `LEPTOS_*` variables of Leptos's configuration.
pub async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let options = get_configuration(None)?.leptos_options;
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let pool = crate::db::open(&url).await?;
    let sync = crate::sync::start(pool.clone()).await?;
    let listener = sssync_leptos::prelude::listen(options.site_addr).await?;
    let addr = listener.local_addr()?;
    let shown = redact(&url);
    tracing::info!(database = %shown, "sssync demo listening on http://{addr}");
    println!("sssync demo: http://{addr}  (database {shown})");
    axum::serve(listener, router(options, pool.clone(), sync.clone()))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Close the sync connections so that the graceful shutdown can finish.
            sync.shutdown();
        })
        .await?;
    pool.close().await;
    Ok(())
}

/// A database URL as it may be printed: without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            match user.split_once(':') {
                Some((name, _)) => format!("{}{name}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_printed_database_url_has_no_password() {
        assert_eq!(
            super::redact("postgres://app:s3cret@db.internal:5432/todos"),
            "postgres://app:***@db.internal:5432/todos"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(
            super::redact("postgres://app@127.0.0.1/test"),
            "postgres://app@127.0.0.1/test"
        );
    }
}
