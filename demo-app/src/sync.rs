//! The demo's query and events on the server: what runs in the sync engine.

use crate::db;
use crate::model::{
    AddTodo, ClearCompleted, DeleteTodo, EditTodo, ListArgs, Todo, Todos, ToggleAll, ToggleTodo,
    check_id, clean_title,
};
use sqlx::Sqlite;
use sssync_core::server::{
    BoxFuture, Conn, Dependency, Engine, EngineError, EventCtx, EventError, QueryCtx, ServerEvent,
    ServerQuery, SqliteStore, Table,
};

impl ServerQuery<Sqlite> for Todos {
    fn dependencies(args: &ListArgs) -> Vec<Dependency> {
        vec![Dependency::partition("todos", &args.list_id)]
    }

    fn run<'a>(
        conn: &'a mut Conn<Sqlite>,
        _: &'a QueryCtx,
        args: &'a ListArgs,
    ) -> BoxFuture<'a, Result<Vec<Todo>, sqlx::Error>> {
        Box::pin(async move {
            if !crate::model::valid_id(&args.list_id) {
                return Ok(Vec::new()); // no such list can exist
            }
            db::list(conn, &args.list_id).await
        })
    }
}

impl ServerEvent<Sqlite> for AddTodo {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Sqlite>,
        _: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            check_id(&self.list_id)?;
            check_id(&self.id)?;
            if let Some(title) = clean_title(&self.title)? {
                db::add(conn, &self.id, &self.list_id, &title).await?;
            }
            Ok(())
        })
    }
}

impl ServerEvent<Sqlite> for ToggleTodo {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Sqlite>,
        _: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            check_id(&self.list_id)?;
            check_id(&self.id)?;
            db::set_completed(conn, &self.list_id, &self.id, self.completed).await?;
            Ok(())
        })
    }
}

impl ServerEvent<Sqlite> for EditTodo {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Sqlite>,
        _: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            check_id(&self.list_id)?;
            check_id(&self.id)?;
            match clean_title(&self.title)? {
                Some(title) => db::set_title(conn, &self.list_id, &self.id, &title).await?,
                None => db::delete(conn, &self.list_id, &self.id).await?,
            }
            Ok(())
        })
    }
}

impl ServerEvent<Sqlite> for DeleteTodo {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Sqlite>,
        _: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            check_id(&self.list_id)?;
            check_id(&self.id)?;
            db::delete(conn, &self.list_id, &self.id).await?;
            Ok(())
        })
    }
}

impl ServerEvent<Sqlite> for ToggleAll {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Sqlite>,
        _: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            check_id(&self.list_id)?;
            db::set_all_completed(conn, &self.list_id, self.completed).await?;
            Ok(())
        })
    }
}

impl ServerEvent<Sqlite> for ClearCompleted {
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Sqlite>,
        _: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            check_id(&self.list_id)?;
            db::clear_completed(conn, &self.list_id).await?;
            Ok(())
        })
    }
}

/// Starts the sync engine over the demo's database.
pub async fn engine(pool: db::Pool) -> Result<Engine<SqliteStore>, EngineError> {
    Engine::builder(SqliteStore::from_pool(pool))
        .table(
            Table::new("todos", "id")
                .and_then(|t| t.partition("list_id"))
                .expect("plain identifiers"),
        )
        .query::<Todos>()
        .event::<AddTodo>()
        .event::<ToggleTodo>()
        .event::<EditTodo>()
        .event::<DeleteTodo>()
        .event::<ToggleAll>()
        .event::<ClearCompleted>()
        .start()
        .await
}
