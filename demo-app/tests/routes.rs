//! Leptos suppresses resource loads process-wide while it builds a router's route list (it
//! renders the app once to find its routes); a page whose resources first poll in that window
//! never finishes (leptos#4773). The demo's router builds its route list once per process, so
//! a second router (another test's server, another app) never stalls a page being rendered.

mod common;

use leptos::prelude::LeptosOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_while_another_router_is_built_in_the_same_process() {
    let url = common::sqlite_url();
    let (addr, pool) = common::serve_on(&url).await;
    let sync = demo_app::sync::start(pool.clone()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let builder = {
        let stop = stop.clone();
        let runtime = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let _in_runtime = runtime.enter();
            let mut built = 0u32;
            while !stop.load(Ordering::Relaxed) && built < 100_000 {
                let options = LeptosOptions::builder().output_name("demo-app").build();
                drop(demo_app::server::router(
                    options,
                    pool.clone(),
                    sync.clone(),
                ));
                built += 1;
            }
        })
    };
    for i in 0..100 {
        // Each page within the request's wait (a stalled render never answers).
        let page = common::request(addr, "GET", &format!("/lists/r{i}"), None, None).await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("What needs to be done?"));
    }
    stop.store(true, Ordering::Relaxed);
    builder.join().unwrap();
}
