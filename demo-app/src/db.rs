//! The demo's storage: an embedded SQLite file (WAL, durable commits), migrations applied at
//! start, and the todo statements the sync handlers run inside the engine's transaction.

use crate::model::Todo;
use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePoolOptions;

/// The connection pool (shared with the sync engine).
pub type Pool = sqlx::SqlitePool;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is not one the demo can use yet.
    #[error(
        "unsupported database URL {0:?}: the demo runs on SQLite, e.g. sqlite://sssync-demo.db"
    )]
    Unsupported(String),
    /// SQLite refused to open the file.
    #[error("cannot open the database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens (creating if missing) the SQLite database at `url` and applies the migrations.
pub async fn open(url: &str) -> Result<Pool, OpenError> {
    if !url.starts_with("sqlite:") {
        return Err(OpenError::Unsupported(url.to_owned()));
    }
    // WAL, durable commits (an acknowledged write must survive a crash), a busy timeout,
    // recursive triggers (the change log sees the rows an INSERT OR REPLACE deletes).
    let options = sssync_core::server::SqliteStore::connect_options(url)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    title: String,
    completed: bool,
}

/// The todos of a list, in order.
pub async fn list(conn: &mut SqliteConnection, list_id: &str) -> Result<Vec<Todo>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, title, completed FROM todos WHERE list_id = ? ORDER BY position, id",
    )
    .bind(list_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Todo {
            id: r.id,
            title: r.title,
            completed: r.completed,
        })
        .collect())
}

/// Adds a todo at the bottom of a list (an id already used is a constraint violation).
pub async fn add(
    conn: &mut SqliteConnection,
    id: &str,
    list_id: &str,
    title: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO todos (id, list_id, title, completed, position) \
         VALUES (?1, ?2, ?3, FALSE, \
                 COALESCE((SELECT MAX(position) FROM todos WHERE list_id = ?2), 0) + 1)",
    )
    .bind(id)
    .bind(list_id)
    .bind(title)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a todo completed or not.
pub async fn set_completed(
    conn: &mut SqliteConnection,
    list_id: &str,
    id: &str,
    completed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE todos SET completed = ? WHERE list_id = ? AND id = ?")
        .bind(completed)
        .bind(list_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Changes a todo's title.
pub async fn set_title(
    conn: &mut SqliteConnection,
    list_id: &str,
    id: &str,
    title: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE todos SET title = ? WHERE list_id = ? AND id = ?")
        .bind(title)
        .bind(list_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes a todo.
pub async fn delete(
    conn: &mut SqliteConnection,
    list_id: &str,
    id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM todos WHERE list_id = ? AND id = ?")
        .bind(list_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks every todo of a list completed, or every one not completed.
pub async fn set_all_completed(
    conn: &mut SqliteConnection,
    list_id: &str,
    completed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE todos SET completed = ? WHERE list_id = ?")
        .bind(completed)
        .bind(list_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the completed todos of a list.
pub async fn clear_completed(
    conn: &mut SqliteConnection,
    list_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM todos WHERE list_id = ? AND completed")
        .bind(list_id)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn todos_keep_their_order_and_lists_are_separate() {
        let dir = std::env::temp_dir().join(format!("sssync-demo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let pool = open(&url).await.unwrap();
        let mut c = pool.acquire().await.unwrap();
        add(&mut c, "1", "a", "first").await.unwrap();
        add(&mut c, "2", "b", "elsewhere").await.unwrap();
        add(&mut c, "3", "a", "second").await.unwrap();
        set_completed(&mut c, "a", "1", true).await.unwrap();
        set_title(&mut c, "a", "3", "second, edited").await.unwrap();
        let todos = list(&mut c, "a").await.unwrap();
        let titles: Vec<_> = todos
            .iter()
            .map(|t| (t.title.as_str(), t.completed))
            .collect();
        assert_eq!(titles, [("first", true), ("second, edited", false)]);
        assert!(list(&mut c, "never-seen").await.unwrap().is_empty());
        assert!(
            add(&mut c, "1", "a", "same id").await.is_err(),
            "ids are unique"
        );

        clear_completed(&mut c, "a").await.unwrap();
        assert_eq!(list(&mut c, "a").await.unwrap().len(), 1);
        set_all_completed(&mut c, "a", true).await.unwrap();
        assert!(list(&mut c, "a").await.unwrap().iter().all(|t| t.completed));
        delete(&mut c, "a", "3").await.unwrap();
        assert!(list(&mut c, "a").await.unwrap().is_empty());
        assert_eq!(
            list(&mut c, "b").await.unwrap().len(),
            1,
            "other lists untouched"
        );
        drop(c);
        pool.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_postgres_url_is_refused_with_a_clear_error() {
        let err = open("postgres://127.0.0.1/test").await.unwrap_err();
        assert!(matches!(err, OpenError::Unsupported(_)), "{err}");
    }
}
