//! The database file under the scenario: backups restored into it, its epoch, a connection to
//! check it.

use sqlx::{Connection, Executor};
use std::path::Path;
use std::time::Duration;

/// Restores the copy `backup` into the running database `db`: every table of the copy replaces
/// the database's, in one transaction, while its server runs (the same epoch, an older version:
/// the engine must find the database went back in history). Answers the database's version
/// before and after.
pub(super) async fn restore_into(db: &Path, backup: &Path) -> Result<(i64, i64), String> {
    let mut conn = connect_db(db).await?;
    let result = async {
        sqlx::query("ATTACH DATABASE ? AS copy")
            .bind(backup.display().to_string())
            .execute(&mut conn)
            .await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM copy.sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await?;
        conn.execute("BEGIN IMMEDIATE").await?;
        let from: i64 = sqlx::query_scalar("SELECT version FROM main.sssync_meta WHERE id = 1")
            .fetch_one(&mut conn)
            .await?;
        for t in &tables {
            let t = t.replace('"', "\"\"");
            conn.execute(sqlx::AssertSqlSafe(format!(
                "DELETE FROM main.\"{t}\"; INSERT INTO main.\"{t}\" SELECT * FROM copy.\"{t}\";"
            )))
            .await?;
        }
        // What the triggers logged of the copy itself is no change of the restored history.
        conn.execute("DELETE FROM main.sssync_changes WHERE version IS NULL")
            .await?;
        let to: i64 = sqlx::query_scalar("SELECT version FROM main.sssync_meta WHERE id = 1")
            .fetch_one(&mut conn)
            .await?;
        conn.execute("COMMIT").await?;
        Ok::<(i64, i64), sqlx::Error>((from, to))
    }
    .await;
    if result.is_err() {
        let _ = conn.execute("ROLLBACK").await;
    }
    let _ = conn.execute("DETACH DATABASE copy").await;
    let _ = conn.close().await;
    result.map_err(|e| e.to_string())
}

/// The database's epoch now.
pub(super) async fn db_epoch(db: &Path) -> Result<String, String> {
    let mut conn = connect_db(db).await?;
    let epoch = sqlx::query_scalar("SELECT epoch FROM sssync_meta WHERE id = 1")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string());
    let _ = conn.close().await;
    epoch
}

pub(super) async fn connect_db(db: &Path) -> Result<sqlx::SqliteConnection, String> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(5));
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| e.to_string())
}
