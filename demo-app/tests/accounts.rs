//! The demo's accounts and private lists over real HTTP (the no-JavaScript path, which the
//! browser tests in `end2end/` also take with JavaScript): sessions in cookies, a private list
//! that nobody else can read or write on any path, sharing, sign-out.
#![cfg(feature = "ssr")]

use std::time::Instant;

mod common;
use common::{postgres_url, request, serve_on, sqlite_url};

/// The demo's router on a fresh SQLite file, served on 127.0.0.1.
async fn serve() -> (std::net::SocketAddr, demo_app::db::Pool) {
    serve_on(&sqlite_url()).await
}

/// Signs `name` up and answers the session cookie (`name=value`).
async fn sign_up(addr: std::net::SocketAddr, name: &str) -> String {
    let r = request(
        addr,
        "POST",
        "/auth/signup",
        None,
        Some(&format!("name={name}&password=correct-horse")),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.head);
    assert_eq!(r.header("location"), Some("/"));
    let cookie = r.header("set-cookie").expect("a session cookie").to_owned();
    cookie.split(';').next().unwrap().to_owned()
}

async fn todo_titles(pool: &demo_app::db::Pool, list: &str) -> Vec<String> {
    let sql = "SELECT title FROM todos WHERE list_id = $1 ORDER BY position";
    match pool {
        demo_app::db::Pool::Sqlite(p) => sqlx::query_scalar(sql).bind(list).fetch_all(p).await,
        demo_app::db::Pool::Postgres(p) => sqlx::query_scalar(sql).bind(list).fetch_all(p).await,
    }
    .unwrap()
}

#[tokio::test]
async fn a_signed_in_user_has_an_http_only_lax_session_and_sees_their_name() {
    let (addr, _pool) = serve().await;
    let r = request(
        addr,
        "POST",
        "/auth/signup",
        None,
        Some("name=alice&password=correct-horse"),
    )
    .await;
    let set_cookie = r.header("set-cookie").expect("a session cookie");
    assert!(
        set_cookie.starts_with("sssync_demo_session="),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap();
    let page = request(addr, "GET", "/", Some(cookie), None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(r#"data-testid="user-name">alice<"#),
        "{}",
        page.body
    );
    // The same name again is taken.
    let again = request(
        addr,
        "POST",
        "/auth/signup",
        None,
        Some("name=alice&password=another-one"),
    )
    .await;
    assert_eq!(again.header("location"), Some("/signup?error=taken"));
    // Signing in works with the password, under a new session.
    let r = request(
        addr,
        "POST",
        "/auth/login",
        None,
        Some("name=alice&password=correct-horse"),
    )
    .await;
    assert_eq!(r.header("location"), Some("/"));
    assert!(r.header("set-cookie").is_some());
    // After signing out, the old cookie is nobody's.
    let out = request(addr, "POST", "/auth/logout", Some(cookie), Some("")).await;
    assert_eq!(out.status, 303);
    let page = request(addr, "GET", "/", Some(cookie), None).await;
    assert!(!page.body.contains("data-testid=\"user-name\""));
    assert!(page.body.contains("Sign in"));
}

#[tokio::test]
async fn bad_credentials_get_an_alert_and_repeated_failures_are_slowed_down() {
    let (addr, _pool) = serve().await;
    sign_up(addr, "carol").await;
    for _ in 0..demo_app::auth::FREE_FAILURES {
        let r = request(
            addr,
            "POST",
            "/auth/login",
            None,
            Some("name=carol&password=wrong-password"),
        )
        .await;
        assert_eq!(r.header("location"), Some("/login?error=credentials"));
        assert!(r.header("set-cookie").is_none(), "no session for a failure");
    }
    let page = request(addr, "GET", "/login?error=credentials", None, None).await;
    assert!(
        page.body
            .contains(r#"<p role="alert" class="alert">Wrong user name or password.</p>"#),
        "{}",
        page.body
    );
    // The next attempt waits at least the first delay, even with the right password.
    let started = Instant::now();
    let r = request(
        addr,
        "POST",
        "/auth/login",
        None,
        Some("name=carol&password=correct-horse"),
    )
    .await;
    assert!(started.elapsed() >= demo_app::auth::failure_delay(demo_app::auth::FREE_FAILURES));
    assert_eq!(r.header("location"), Some("/"));
    // An unknown name is told the same as a wrong password.
    let r = request(
        addr,
        "POST",
        "/auth/login",
        None,
        Some("name=nobody&password=correct-horse"),
    )
    .await;
    assert_eq!(r.header("location"), Some("/login?error=credentials"));
}

#[tokio::test]
async fn a_private_list_is_read_and_written_by_its_owner_and_those_it_is_shared_with_only() {
    private_lists(&sqlite_url()).await;
}

#[tokio::test]
async fn a_private_list_is_read_and_written_by_its_owner_and_those_it_is_shared_with_only_on_postgres()
 {
    if let Some((url, schema)) = postgres_url().await {
        private_lists(&url).await;
        let base = url.split('?').next().unwrap().to_owned();
        let pool = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await
            .unwrap();
    }
}

async fn private_lists(url: &str) {
    let (addr, pool) = serve_on(url).await;
    let alice = sign_up(addr, "alice").await;
    let bob = sign_up(addr, "bob").await;
    // Alice makes a private list (the form's key names it) and adds a todo.
    let r = request(
        addr,
        "POST",
        "/api/create_list",
        Some(&alice),
        Some("id=private-p1&sssync_next=%2Flists%2Fprivate-p1&sssync_key=k1"),
    )
    .await;
    assert_eq!(
        r.header("location"),
        Some("/lists/private-p1"),
        "{}",
        r.head
    );
    let r = request(
        addr,
        "POST",
        "/api/add_todo",
        Some(&alice),
        Some("list_id=private-p1&title=secret-plan&sssync_key=a1"),
    )
    .await;
    // A plain form's post goes back (302, Leptos's form redirect).
    assert_eq!(r.status, 302);
    assert_eq!(todo_titles(&pool, "private-p1").await, ["secret-plan"]);
    let page = request(addr, "GET", "/lists/private-p1", Some(&alice), None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("secret-plan"));
    assert!(page.body.contains("Share with"));

    // Bob and an anonymous visitor: 404, and nothing of its todos in the page.
    for cookie in [Some(bob.as_str()), None] {
        let page = request(addr, "GET", "/lists/private-p1", cookie, None).await;
        assert_eq!(page.status, 404, "{:?}", cookie);
        assert!(!page.body.contains("secret-plan"), "{}", page.body);
        assert!(!page.body.contains("Share with"));
        let snapshot = request(
            addr,
            "GET",
            "/sssync/snapshot/todos?a=%7B%22list_id%22%3A%22private-p1%22%7D",
            cookie,
            None,
        )
        .await;
        assert_eq!(snapshot.status, 403, "{}", snapshot.body);
        assert!(!snapshot.body.contains("secret-plan"));
    }
    // Bob's writes by plain form are refused, and change nothing.
    let r = request(
        addr,
        "POST",
        "/api/add_todo",
        Some(&bob),
        Some("list_id=private-p1&title=intruder&sssync_key=b1"),
    )
    .await;
    assert_eq!(r.status, 302);
    let r = request(
        addr,
        "POST",
        "/api/clear_completed",
        Some(&bob),
        Some("list_id=private-p1&sssync_key=b2"),
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(todo_titles(&pool, "private-p1").await, ["secret-plan"]);
    // Nor can Bob share it with himself.
    request(
        addr,
        "POST",
        "/api/share_list",
        Some(&bob),
        Some("list_id=private-p1&user_name=bob&sssync_key=b3"),
    )
    .await;
    assert_eq!(
        request(addr, "GET", "/lists/private-p1", Some(&bob), None)
            .await
            .status,
        404
    );

    // Shared with Bob: he reads and writes it.
    request(
        addr,
        "POST",
        "/api/share_list",
        Some(&alice),
        Some("list_id=private-p1&user_name=bob&sssync_key=a2"),
    )
    .await;
    let page = request(addr, "GET", "/lists/private-p1", Some(&bob), None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("secret-plan"));
    assert!(!page.body.contains("Share with"), "only the owner shares");
    request(
        addr,
        "POST",
        "/api/add_todo",
        Some(&bob),
        Some("list_id=private-p1&title=bobs-idea&sssync_key=b4"),
    )
    .await;
    assert_eq!(
        todo_titles(&pool, "private-p1").await,
        ["secret-plan", "bobs-idea"]
    );

    // Unshared: 404 again.
    request(
        addr,
        "POST",
        "/api/unshare_list",
        Some(&alice),
        Some("list_id=private-p1&user_name=bob&sssync_key=a3"),
    )
    .await;
    let page = request(addr, "GET", "/lists/private-p1", Some(&bob), None).await;
    assert_eq!(page.status, 404);
    assert!(!page.body.contains("secret-plan"));

    // A public list stays public, signed in or not; nobody takes it over.
    request(
        addr,
        "POST",
        "/api/add_todo",
        None,
        Some("list_id=open&title=hello&sssync_key=c1"),
    )
    .await;
    let r = request(
        addr,
        "POST",
        "/api/create_list",
        Some(&bob),
        Some("id=open&sssync_next=%2Flists%2Fopen&sssync_key=k2"),
    )
    .await;
    assert_ne!(r.header("location"), Some("/lists/open"));
    let page = request(addr, "GET", "/lists/open", None, None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("hello"));

    // Nor an empty one that others have open: only a new list (an id of its own kind) becomes
    // private.
    let r = request(
        addr,
        "POST",
        "/api/create_list",
        Some(&bob),
        Some("id=empty&sssync_next=%2Flists%2Fempty&sssync_key=k3"),
    )
    .await;
    assert_ne!(r.header("location"), Some("/lists/empty"), "{}", r.head);
    let page = request(addr, "GET", "/lists/empty", None, None).await;
    assert_eq!(page.status, 200);
    // And a private list's id names no public list before it is made.
    let page = request(addr, "GET", "/lists/private-unmade", None, None).await;
    assert_eq!(page.status, 404);
}

async fn run_sql(pool: &demo_app::db::Pool, sql: &'static str) {
    match pool {
        demo_app::db::Pool::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        demo_app::db::Pool::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
    }
    .unwrap();
}

/// While the session store fails, a signed-in reader is not taken for anonymous: the snapshot
/// GET answers 503 (not the 403 of a reader who may not), the page is no 404; once it answers
/// again, all is as before.
async fn a_failing_session_store(url: &str) {
    let (addr, pool) = serve_on(url).await;
    let alice = sign_up(addr, "alice").await;
    let r = request(
        addr,
        "POST",
        "/api/create_list",
        Some(&alice),
        Some("id=private-f1&sssync_next=%2Flists%2Fprivate-f1&sssync_key=k1"),
    )
    .await;
    assert_eq!(
        r.header("location"),
        Some("/lists/private-f1"),
        "{}",
        r.head
    );
    let snapshot = "/sssync/snapshot/todos?a=%7B%22list_id%22%3A%22private-f1%22%7D";
    assert_eq!(
        request(addr, "GET", snapshot, Some(&alice), None)
            .await
            .status,
        200
    );

    run_sql(&pool, "ALTER TABLE sessions RENAME TO sessions_away").await;
    let r = request(addr, "GET", snapshot, Some(&alice), None).await;
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(r.header("retry-after").is_some(), "{}", r.head);
    let page = request(addr, "GET", "/lists/private-f1", Some(&alice), None).await;
    assert_ne!(
        page.status, 404,
        "a failed session read is no 'no such list'"
    );
    run_sql(&pool, "ALTER TABLE sessions_away RENAME TO sessions").await;

    assert_eq!(
        request(addr, "GET", snapshot, Some(&alice), None)
            .await
            .status,
        200
    );
    let page = request(addr, "GET", "/lists/private-f1", Some(&alice), None).await;
    assert_eq!(page.status, 200);
}

#[tokio::test]
async fn a_session_store_that_fails_for_a_moment_signs_nobody_out() {
    a_failing_session_store(&sqlite_url()).await;
}

#[tokio::test]
async fn a_session_store_that_fails_for_a_moment_signs_nobody_out_on_postgres() {
    if let Some((url, schema)) = postgres_url().await {
        a_failing_session_store(&url).await;
        let base = url.split('?').next().unwrap().to_owned();
        let pool = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await
            .unwrap();
    }
}
