//! The no-JavaScript path: every control is a plain form posting to a server function. A
//! resubmitted form (the browser's resend after a reload, a double click) must not apply twice.
#![cfg(feature = "ssr")]

use leptos::prelude::LeptosOptions;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// The demo's router on a fresh SQLite file, served on 127.0.0.1.
async fn serve() -> (std::net::SocketAddr, demo_app::db::Pool, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "sssync-demo-forms-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let pool = demo_app::db::open(&format!("sqlite://{}", dir.join("demo.db").display()))
        .await
        .unwrap();
    let engine = demo_app::sync::engine(pool.clone()).await.unwrap();
    let options = LeptosOptions::builder().output_name("demo-app").build();
    let app = demo_app::server::router(options, engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, pool, dir)
}

/// A browser's plain form post: the status.
async fn post_form(addr: std::net::SocketAddr, path: &str, body: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\n\
         Referer: http://{addr}/lists/l1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf)[9..12].parse().unwrap()
}

async fn titles(pool: &demo_app::db::Pool) -> Vec<String> {
    let demo_app::db::Pool::Sqlite(pool) = pool else {
        panic!("the test runs on SQLite")
    };
    sqlx::query_scalar("SELECT title FROM todos WHERE list_id = 'l1' ORDER BY position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_resubmitted_plain_form_is_applied_once() {
    let (addr, pool, dir) = serve().await;
    // The same rendered form, posted twice with the same fields: one todo.
    let body = "list_id=l1&title=once&sssync_key=k42";
    for _ in 0..2 {
        assert_eq!(post_form(addr, "/api/add_todo", body).await, 303);
    }
    assert_eq!(titles(&pool).await, ["once"]);
    // The same form posted with other fields is another write.
    assert_eq!(
        post_form(
            addr,
            "/api/add_todo",
            "list_id=l1&title=twice&sssync_key=k42"
        )
        .await,
        303
    );
    assert_eq!(titles(&pool).await, ["once", "twice"]);
    // A form without a key (rendered by an older server) still works, every time.
    assert_eq!(
        post_form(addr, "/api/add_todo", "list_id=l1&title=keyless").await,
        303
    );
    assert_eq!(titles(&pool).await, ["once", "twice", "keyless"]);
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
