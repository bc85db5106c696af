//! The no-JavaScript path: every control is a plain form posting to a server function. A
//! resubmitted form (the browser's resend after a reload, a double click) must not apply twice.
#![cfg(feature = "ssr")]

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
    common::request(addr, "POST", path, None, Some(body))
        .await
        .status
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
        assert_eq!(post_form(addr, "/api/add_todo", body).await, 302);
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
        302
    );
    assert_eq!(titles(&pool).await, ["once", "twice"]);
    // A form without a key (rendered by an older server) still works, every time.
    assert_eq!(
        post_form(addr, "/api/add_todo", "list_id=l1&title=keyless").await,
        302
    );
    assert_eq!(titles(&pool).await, ["once", "twice", "keyless"]);
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_plain_form_the_server_rejects_goes_back_and_the_page_says_why() {
    let (addr, pool, dir) = serve().await;
    let long = "x".repeat(201);
    let r = common::request(
        addr,
        "POST",
        "/api/add_todo",
        None,
        Some(&format!("list_id=l1&title={long}&sssync_key=k1")),
    )
    .await;
    assert_eq!(r.status, 302, "{}", r.head);
    // Leptos's own form-redirect error: back to the page, the error in the URL.
    let location = r.header("location").unwrap_or_default().to_owned();
    assert!(location.contains("__path=%2Fapi%2Fadd_todo"), "{location}");
    assert!(location.contains("__err="), "{location}");
    assert!(titles(&pool).await.is_empty());
    // Only a path: the way back never leaves the site.
    assert!(location.starts_with("/?"), "{location}");
    let page = common::request(addr, "GET", &location, None, None).await;
    assert_eq!(page.status, 200);
    let alert = page
        .body
        .split(r#"role="alert""#)
        .nth(1)
        .unwrap_or_else(|| panic!("no alert in {}", page.body));
    assert!(
        alert.contains("A todo can have at most 200 characters"),
        "{alert}"
    );
    // The next form that works drops the error from the way back.
    let r = post_form(addr, "/api/add_todo", "list_id=l1&title=fine&sssync_key=k2").await;
    assert_eq!(r, 302);
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
