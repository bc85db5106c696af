//! The demo's storage: an embedded SQLite file (WAL), migrations applied at start.

use crate::model::Todo;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

/// The connection pool every request shares.
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
    /// SQLite refused to open or migrate the file.
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
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
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
pub async fn list(pool: &Pool, list_id: &str) -> Result<Vec<Todo>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, title, completed FROM todos WHERE list_id = ? ORDER BY position, id",
    )
    .bind(list_id)
    .fetch_all(pool)
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

/// Adds a todo at the bottom of a list; returns its id.
pub async fn add(pool: &Pool, list_id: &str, title: &str) -> Result<String, sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO todos (id, list_id, title, completed, position) \
         VALUES (?1, ?2, ?3, FALSE, \
                 COALESCE((SELECT MAX(position) FROM todos WHERE list_id = ?2), 0) + 1)",
    )
    .bind(&id)
    .bind(list_id)
    .bind(title)
    .execute(pool)
    .await?;
    Ok(id)
}

/// Marks a todo completed or not.
pub async fn set_completed(
    pool: &Pool,
    list_id: &str,
    id: &str,
    completed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE todos SET completed = ? WHERE list_id = ? AND id = ?")
        .bind(completed)
        .bind(list_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Changes a todo's title.
pub async fn set_title(
    pool: &Pool,
    list_id: &str,
    id: &str,
    title: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE todos SET title = ? WHERE list_id = ? AND id = ?")
        .bind(title)
        .bind(list_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes a todo.
pub async fn delete(pool: &Pool, list_id: &str, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM todos WHERE list_id = ? AND id = ?")
        .bind(list_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks every todo of a list completed, or every one not completed.
pub async fn set_all_completed(
    pool: &Pool,
    list_id: &str,
    completed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE todos SET completed = ? WHERE list_id = ?")
        .bind(completed)
        .bind(list_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes the completed todos of a list.
pub async fn clear_completed(pool: &Pool, list_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM todos WHERE list_id = ? AND completed")
        .bind(list_id)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_db() -> (Pool, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("sssync-demo-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("t.db").display());
        (open(&url).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn todos_keep_their_order_and_lists_are_separate() {
        let (pool, dir) = temp_db().await;
        let a = add(&pool, "a", "first").await.unwrap();
        add(&pool, "b", "elsewhere").await.unwrap();
        let c = add(&pool, "a", "second").await.unwrap();
        set_completed(&pool, "a", &a, true).await.unwrap();
        set_title(&pool, "a", &c, "second, edited").await.unwrap();
        let todos = list(&pool, "a").await.unwrap();
        let titles: Vec<_> = todos
            .iter()
            .map(|t| (t.title.as_str(), t.completed))
            .collect();
        assert_eq!(titles, [("first", true), ("second, edited", false)]);
        assert!(list(&pool, "never-seen").await.unwrap().is_empty());

        clear_completed(&pool, "a").await.unwrap();
        assert_eq!(list(&pool, "a").await.unwrap().len(), 1);
        set_all_completed(&pool, "a", true).await.unwrap();
        assert!(list(&pool, "a").await.unwrap().iter().all(|t| t.completed));
        delete(&pool, "a", &c).await.unwrap();
        assert!(list(&pool, "a").await.unwrap().is_empty());
        assert_eq!(
            list(&pool, "b").await.unwrap().len(),
            1,
            "other lists untouched"
        );
        pool.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_postgres_url_is_refused_with_a_clear_error() {
        let err = open("postgres://127.0.0.1/test").await.unwrap_err();
        assert!(matches!(err, OpenError::Unsupported(_)), "{err}");
    }
}
