//! The baseline's server: Leptos's `LEPTOS_SITE_ADDR` and `LEPTOS_SITE_ROOT` configure it;
//! `TODOMVC_PLAIN_SEED=list:n` fills list `list` with `n` todos at start (the benchmark's page).
#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use axum::serve::{Listener, ListenerExt};
    use leptos_axum::LeptosRoutes;
    let options = leptos::prelude::get_configuration(None)?.leptos_options;
    if let Ok(seed) = std::env::var("TODOMVC_PLAIN_SEED")
        && let Some((list, n)) = seed.split_once(':')
    {
        todomvc_plain::store::seed(list, n.parse()?);
    }
    let routes = leptos_axum::generate_route_list(todomvc_plain::App);
    let app = axum::Router::new()
        .leptos_routes(&options, routes, {
            let options = options.clone();
            move || todomvc_plain::shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler(todomvc_plain::shell))
        .with_state(options.clone());
    // TCP_NODELAY, as the demo's server (sssync_core::server::listen).
    let listener = tokio::net::TcpListener::bind(options.site_addr)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    println!("plain Leptos TodoMVC: http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(not(feature = "ssr"))]
fn main() {}
