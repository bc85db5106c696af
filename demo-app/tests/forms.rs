//! The no-JavaScript path: every control is a plain form posting to a server function. A
//! resubmitted form (the browser's resend after a reload, a double click) must not apply twice.
#![cfg(feature = "ssr")]

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

mod common;

/// The demo's router on a fresh SQLite file, served on 127.0.0.1.
async fn serve() -> (std::net::SocketAddr, demo_app::db::Pool, std::path::PathBuf) {
    let url = common::sqlite_url();
    let dir = std::path::PathBuf::from(url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .to_owned();
    let (addr, pool) = common::serve_on(&url).await;
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
