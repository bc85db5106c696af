//! What the demo's HTTP tests share: a fresh database (a SQLite file, a PostgreSQL schema) and
//! the demo's router served on it.
#![allow(dead_code)]

use leptos::prelude::LeptosOptions;
use std::time::Duration;

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
    let engine = demo_app::sync::engine(pool.clone()).await.unwrap();
    let options = LeptosOptions::builder().output_name("demo-app").build();
    let app = demo_app::server::router(options, pool.clone(), engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, pool)
}
