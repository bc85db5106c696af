//! What the demo's HTTP tests share: a fresh database (a SQLite file, a PostgreSQL schema) and
//! the demo's router served on it.
#![allow(dead_code)]

use leptos::prelude::LeptosOptions;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a request may take.
const WAIT: Duration = Duration::from_secs(20);

/// A fresh SQLite file.
pub fn sqlite_url() -> String {
    let dir = std::env::temp_dir().join(format!(
        "sssync-demo-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("demo.db").display())
}

/// A fresh schema of the test PostgreSQL (`SSSYNC_TEST_PG`), or `None` when it does not
/// answer (a failure in CI).
pub async fn postgres_url() -> Option<(String, String)> {
    use sqlx::Connection;
    let base = std::env::var("SSSYNC_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let conn =
        tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&base)).await;
    let Ok(Ok(mut conn)) = conn else {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL at {base} is needed in CI"
        );
        eprintln!("skipped: no PostgreSQL at {base}");
        return None;
    };
    let schema = format!("demo_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some((
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    ))
}

/// The demo's router on the database at `url`, served on 127.0.0.1.
pub async fn serve_on(url: &str) -> (std::net::SocketAddr, demo_app::db::Pool) {
    let pool = demo_app::db::open(url).await.unwrap();
    let engine = demo_app::sync::start(pool.clone()).await.unwrap();
    let options = LeptosOptions::builder().output_name("demo-app").build();
    let app = demo_app::server::router(options, pool.clone(), engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, pool)
}

pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// What PostgreSQL's sessions are doing (for a request that hangs: who waits on what).
async fn postgres_sessions() -> String {
    use sqlx::Connection;
    let url = std::env::var("SSSYNC_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let conn = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url));
    let Ok(Ok(mut conn)) = conn.await else {
        return "(PostgreSQL does not answer)".into();
    };
    type Session = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Session> = sqlx::query_as(
        "SELECT state, wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    format!("{rows:?}")
}

/// One request as a browser sends it (a form post when `body` is given), with `cookie`.
pub async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&str>,
) -> Response {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let cookie = cookie.map_or_else(String::new, |c| format!("Cookie: {c}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\n{cookie}\
         Referer: http://{addr}/\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    if tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .map(Result::unwrap)
        .is_err()
    {
        panic!(
            "{method} {path}: no answer within {WAIT:?}; PostgreSQL's sessions then: {}",
            postgres_sessions().await
        );
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Response {
        status: head[9..12].parse().unwrap(),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}
