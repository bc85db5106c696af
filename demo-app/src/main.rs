//! The demo server binary (feature `ssr`). See `demo_app::server::run` for its configuration.

#[tokio::main]
async fn main() {
    if let Err(e) = demo_app::server::run().await {
        eprintln!("sssync demo: {e}");
        std::process::exit(1);
    }
}
