//! Several server processes on one database (PostgreSQL, or one SQLite file): one is killed with
//! SIGKILL, its clients reconnect to another and resume with deltas the size of what they
//! missed. (The PostgreSQL one is skipped, saying so, without a PostgreSQL server; a failure in
//! CI.)

use sssync_core::client::native::{NativeClient, Options};
use sssync_fault::Server;
use sssync_fault::app::{self, Item, Items, ListArgs};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A fresh schema of the test PostgreSQL database, as a URL whose connections use it.
async fn pg_schema() -> Option<(String, String)> {
    use sqlx::Connection;
    let base = std::env::var("SSSYNC_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let conn =
        tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&base)).await;
    let mut conn = match conn {
        Ok(Ok(c)) => c,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL at {base} is needed in CI"
            );
            eprintln!("skipped: no PostgreSQL at {base}");
            return None;
        }
    };
    let schema = format!("inst_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some((
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    ))
}

fn list(l: &str) -> ListArgs {
    ListArgs {
        list_id: l.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_with_sigkill_hands_its_clients_to_another_that_resumes_them_with_deltas()
 {
    let Some((url, schema)) = pg_schema().await else {
        return;
    };
    hand_over(&url).await;
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_on_one_sqlite_file_share_it_and_hand_clients_over() {
    let dir = std::env::temp_dir().join(format!("sssync-instances-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    hand_over(dir.join("shared.db").to_str().unwrap()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two server processes on `url` (a `postgres://` URL or a SQLite file): a writer and a reader
/// on the first; it is killed with SIGKILL; both go to the second, the reader after missing
/// changes, and it resumes with a delta.
async fn hand_over(url: &str) {
    let exe = Path::new(env!("CARGO_BIN_EXE_sssync-fault"));
    let a = Server::start(exe, &url).await.unwrap();
    let b = Server::start(exe, &url).await.unwrap();
    let options = || Options {
        event_types: app::event_types(),
        max_backoff: Some(Duration::from_millis(200)),
        ..Options::default()
    };
    let writer = NativeClient::connect_with(a.ws_url(), "inst-writer", options());
    for i in 0..1000 {
        writer.send(app::AddItem {
            uid: format!("add-{i}"),
            id: format!("i{i:04}"),
            list_id: "big".into(),
            title: format!("an item with a title of a reasonable length, number {i}"),
        });
    }
    writer
        .wait_for(WAIT, |s| s.pending_count() == 0)
        .await
        .unwrap();
    let reader = NativeClient::connect_with(a.ws_url(), "inst-reader", options());
    reader.subscribe::<Items>(&list("big"));
    reader
        .wait_for(WAIT, |s| {
            s.rows::<Items>(&list("big"))
                .is_some_and(|r| r.len() == 1000)
        })
        .await
        .unwrap();
    let snapshot_bytes = reader.bytes_received();
    // Instance A dies; both clients go to B (any instance serves any client).
    a.kill().await;
    writer.set_url(b.ws_url());
    reader.set_url(b.ws_url());
    reader.wait_for(WAIT, |_| !reader.is_live()).await.unwrap();
    reader.set_online(false);
    let before = reader.bytes_received();
    // The reader misses 10 changes.
    for i in 0..5 {
        writer.send(app::DelItem {
            uid: format!("del-{i}"),
            id: format!("i{:04}", i * 7),
            list_id: "big".into(),
        });
        writer.send(app::AddItem {
            uid: format!("late-{i}"),
            id: format!("late{i}"),
            list_id: "big".into(),
            title: "added while the reader was away".into(),
        });
    }
    writer
        .wait_for(WAIT, |s| s.pending_count() == 0)
        .await
        .unwrap();
    reader.set_online(true);
    reader
        .wait_for(WAIT, |s| {
            s.rows::<Items>(&list("big")).is_some_and(|r: Vec<Item>| {
                r.len() == 1000
                    && r.iter().any(|i| i.id == "late4")
                    && !r.iter().any(|i| i.id == "i0000")
            })
        })
        .await
        .unwrap();
    let resume_bytes = reader.bytes_received() - before;
    println!(
        "snapshot {snapshot_bytes} bytes; resume after 10 missed changes {resume_bytes} bytes"
    );
    assert!(
        resume_bytes * 20 < snapshot_bytes,
        "the resume took {resume_bytes} bytes; the snapshot was {snapshot_bytes}"
    );
    b.kill().await;
    writer.set_online(false);
    reader.set_online(false);
}

async fn drop_schema(schema: &str) {
    use sqlx::Connection;
    let base = std::env::var("SSSYNC_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if let Ok(mut c) = sqlx::PgConnection::connect(&base).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&mut c)
        .await;
    }
}
