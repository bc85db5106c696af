//! The demo's accounts (server side): users with argon2id password hashes, server-side
//! sessions (tower-sessions, stored in the app's own database, cookie `HttpOnly`,
//! `SameSite=Lax`), the sign-up, sign-in and sign-out form posts, and how a request becomes an
//! sssync identity (the session's user id).
//!
//! The forms are plain `<form method="post">`s (see `app.rs`), the same with JavaScript and
//! without: each post answers `303 See Other`, to `/` on success, back to the form with an
//! error code otherwise.

use crate::db::Pool;
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use axum::Form;
use axum::Router;
use axum::response::Redirect;
use axum::routing::post;
use serde::Deserialize;
use sssync_core::server::{BoxFuture, Identity, Parts};
use sssync_leptos::server::SyncServer;
use std::time::Duration;
use tower_sessions::cookie::SameSite;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sssync_demo_session";
/// The session field that holds the signed-in user's id.
const USER_KEY: &str = "user";
/// How long a session lasts without being used.
const SESSION_DAYS: i64 = 7;
/// Failed sign-ins under one name before each further attempt is slowed down.
pub const FREE_FAILURES: i64 = 3;
/// The longest a sign-in attempt is held back.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// How long a failure counts.
const FAILURE_WINDOW_SECS: i64 = 15 * 60;
/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted (argon2 takes any, but a bound keeps the work bounded).
const MAX_PASSWORD_BYTES: usize = 256;

/// Runs `$body` with `$p` bound to the pool, whichever database it is on.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// The server-side sessions, in the demo's database (table `sessions`).
#[derive(Clone, Debug)]
pub struct Sessions {
    pool: Pool,
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Sessions {
    /// The sessions kept in `pool`'s database.
    pub fn new(pool: Pool) -> Sessions {
        Sessions { pool }
    }

    /// The layer that gives each request its [`Session`] (cookie [`SESSION_COOKIE`],
    /// `HttpOnly`, `SameSite=Lax`, ending after [`SESSION_DAYS`] days unused).
    pub fn layer(&self) -> SessionManagerLayer<Sessions> {
        SessionManagerLayer::new(self.clone())
            .with_name(SESSION_COOKIE)
            .with_http_only(true)
            .with_same_site(SameSite::Lax)
            .with_secure(false)
            .with_path("/")
            .with_expiry(Expiry::OnInactivity(time::Duration::days(SESSION_DAYS)))
    }

    /// Who sent a request: the user of the session its cookie names (read from the database
    /// each time, so a signed-out or expired session is anonymous at once), or anonymous; an
    /// error when the session cannot be read (a database that fails for a moment is not a
    /// sign-out: sssync keeps what it knew and asks again).
    pub fn identify(&self, parts: &Parts) -> BoxFuture<'static, Result<Identity, String>> {
        let id = session_id(parts);
        let this = self.clone();
        Box::pin(async move {
            let Some(id) = id else {
                return Ok(Identity::anonymous());
            };
            match this.load(&id).await {
                Ok(Some(record)) => Ok(record
                    .data
                    .get(USER_KEY)
                    .and_then(|v| v.as_str())
                    .map(Identity::user)
                    .unwrap_or_default()),
                Ok(None) => Ok(Identity::anonymous()),
                // A record that is not a session names nobody.
                Err(session_store::Error::Decode(e)) => {
                    tracing::warn!("a session that does not decode is nobody's: {e}");
                    Ok(Identity::anonymous())
                }
                Err(e) => Err(format!("cannot read a session: {e}")),
            }
        })
    }

    async fn insert(&self, record: &Record) -> session_store::Result<bool> {
        let (id, data, expiry) = encode(record)?;
        let sql = "INSERT INTO sessions (id, data, expiry_date) VALUES ($1, $2, $3) \
                   ON CONFLICT (id) DO NOTHING";
        let inserted = on_pool!(&self.pool, p => sqlx::query(sql)
            .bind(&id).bind(&data).bind(expiry)
            .execute(p).await.map(|r| r.rows_affected() == 1))
        .map_err(backend)?;
        Ok(inserted)
    }
}

/// A session record as its row stores it: id, JSON, expiry in Unix seconds.
fn encode(record: &Record) -> session_store::Result<(String, String, i64)> {
    let data =
        serde_json::to_string(record).map_err(|e| session_store::Error::Encode(e.to_string()))?;
    Ok((
        record.id.to_string(),
        data,
        record.expiry_date.unix_timestamp(),
    ))
}

/// The session id a request's cookie names, if any.
fn session_id(parts: &Parts) -> Option<Id> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // Expired sessions go as new ones come.
        let now = now_secs();
        on_pool!(&self.pool, p => sqlx::query("DELETE FROM sessions WHERE expiry_date < $1")
            .bind(now).execute(p).await.map(|_| ()))
        .map_err(backend)?;
        // A new id until it is unused (a collision of 128 random bits is not expected).
        for _ in 0..8 {
            if self.insert(record).await? {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(backend("no unused session id"))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let (id, data, expiry) = encode(record)?;
        let sql = "INSERT INTO sessions (id, data, expiry_date) VALUES ($1, $2, $3) \
                   ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                   expiry_date = excluded.expiry_date";
        on_pool!(&self.pool, p => sqlx::query(sql)
            .bind(&id).bind(&data).bind(expiry)
            .execute(p).await.map(|_| ()))
        .map_err(backend)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let sql = "SELECT data FROM sessions WHERE id = $1 AND expiry_date > $2";
        let id = id.to_string();
        let now = now_secs();
        let data: Option<(String,)> = on_pool!(&self.pool, p => sqlx::query_as(sql)
            .bind(&id).bind(now)
            .fetch_optional(p).await)
        .map_err(backend)?;
        data.map(|(d,)| {
            serde_json::from_str(&d).map_err(|e| session_store::Error::Decode(e.to_string()))
        })
        .transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let id = id.to_string();
        on_pool!(&self.pool, p => sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(&id).execute(p).await.map(|_| ()))
        .map_err(backend)
    }
}

/// What the sign-up and sign-in forms post.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    /// The user name.
    pub name: String,
    /// The password, as typed.
    pub password: String,
}

/// Why a sign-up or sign-in failed: the code in the redirect's `?error=` and its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Wrong user name or password (which one is not said).
    Credentials,
    /// The user name is taken.
    Taken,
    /// The user name is not 1 to 32 of letters, digits, `-`, `_`, `.`.
    BadName,
    /// The password is too short or too long.
    BadPassword,
    /// The server failed.
    Internal,
}

impl AuthError {
    /// The code in the URL.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Credentials => "credentials",
            AuthError::Taken => "taken",
            AuthError::BadName => "name",
            AuthError::BadPassword => "password",
            AuthError::Internal => "internal",
        }
    }
}

/// Whether `name` is a user name the demo accepts.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// How long to hold back a sign-in attempt after `failures` recent failures under its name:
/// nothing for the first [`FREE_FAILURES`], then 250 ms doubling, at most [`MAX_DELAY`].
pub fn failure_delay(failures: i64) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES).min(16) as u32;
    Duration::from_millis(250)
        .saturating_mul(1 << doublings)
        .min(MAX_DELAY)
}

/// The account routes: `POST /auth/signup`, `/auth/login`, `/auth/logout`. They need
/// [`Sessions::layer`] around them.
pub fn router(pool: Pool, engine: SyncServer) -> Router {
    let accounts = Accounts { pool, engine };
    let (a, b, c) = (accounts.clone(), accounts.clone(), accounts);
    Router::new()
        .route(
            "/auth/signup",
            post(
                move |session: Session, Form(c): Form<Credentials>| async move {
                    a.sign_up(session, c).await
                },
            ),
        )
        .route(
            "/auth/login",
            post(
                move |session: Session, Form(c): Form<Credentials>| async move {
                    b.sign_in(session, c).await
                },
            ),
        )
        .route(
            "/auth/logout",
            post(move |session: Session| async move { c.sign_out(session).await }),
        )
}

#[derive(Clone)]
struct Accounts {
    pool: Pool,
    engine: SyncServer,
}

/// A password hash made with argon2id's default parameters (a random salt).
async fn hash(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(|_| AuthError::Internal)?
    .map_err(|_| AuthError::Internal)
}

/// Whether `password` matches `hash` (a PHC string); a hash that does not parse matches nothing.
async fn verify(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// What an unknown user name is checked against, so that it costs the same time as a known one.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"not anybody's password")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

fn back(page: &str, e: AuthError) -> Redirect {
    Redirect::to(&format!("{page}?error={}", e.code()))
}

impl Accounts {
    async fn sign_up(&self, session: Session, c: Credentials) -> Redirect {
        match self.try_sign_up(&session, c).await {
            Ok(()) => Redirect::to("/"),
            Err(e) => back("/signup", e),
        }
    }

    async fn try_sign_up(&self, session: &Session, c: Credentials) -> Result<(), AuthError> {
        let name = c.name.trim().to_owned();
        if !valid_name(&name) {
            return Err(AuthError::BadName);
        }
        if c.password.chars().count() < MIN_PASSWORD_CHARS || c.password.len() > MAX_PASSWORD_BYTES
        {
            return Err(AuthError::BadPassword);
        }
        let hash = hash(c.password).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let sql = "INSERT INTO users (id, name, password_hash) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO NOTHING";
        let inserted = on_pool!(&self.pool, p => sqlx::query(sql)
            .bind(&id).bind(&name).bind(&hash)
            .execute(p).await.map(|r| r.rows_affected() == 1))
        .map_err(|e| {
            tracing::error!("cannot add a user: {e}");
            AuthError::Internal
        })?;
        if !inserted {
            return Err(AuthError::Taken);
        }
        self.start(session, &id).await
    }

    async fn sign_in(&self, session: Session, c: Credentials) -> Redirect {
        match self.try_sign_in(&session, c).await {
            Ok(()) => Redirect::to("/"),
            Err(e) => back("/login", e),
        }
    }

    async fn try_sign_in(&self, session: &Session, c: Credentials) -> Result<(), AuthError> {
        let name = c.name.trim().to_owned();
        if c.password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::Credentials);
        }
        // Repeated failures under this name wait longer and longer.
        let failures = self.failures(&name).await?;
        tokio::time::sleep(failure_delay(failures)).await;
        let user: Option<(String, String)> = on_pool!(&self.pool, p =>
            sqlx::query_as("SELECT id, password_hash FROM users WHERE name = $1")
                .bind(&name).fetch_optional(p).await)
        .map_err(|e| {
            tracing::error!("cannot read a user: {e}");
            AuthError::Internal
        })?;
        let (id, hash) = match user {
            Some(u) => (Some(u.0), u.1),
            None => (None, decoy_hash().to_owned()),
        };
        let matches = verify(c.password, hash).await;
        match id {
            Some(id) if matches => {
                self.clear_failures(&name).await?;
                self.start(session, &id).await
            }
            _ => {
                self.fail(&name).await?;
                Err(AuthError::Credentials)
            }
        }
    }

    async fn sign_out(&self, session: Session) -> Redirect {
        if let Err(e) = session.delete().await {
            tracing::error!("cannot end a session: {e}");
        }
        // Open connections of that session ask again who they are: anonymous now.
        self.engine.identities_changed();
        Redirect::to("/")
    }

    /// Signs `session` in as user `id`, under a new session id (no fixation).
    async fn start(&self, session: &Session, id: &str) -> Result<(), AuthError> {
        session.cycle_id().await.map_err(|_| AuthError::Internal)?;
        session
            .insert(USER_KEY, id)
            .await
            .map_err(|_| AuthError::Internal)?;
        session.save().await.map_err(|_| AuthError::Internal)?;
        // The browser's other connections (its other tabs) are now this user's.
        self.engine.identities_changed();
        Ok(())
    }

    async fn failures(&self, name: &str) -> Result<i64, AuthError> {
        let since = now_secs() - FAILURE_WINDOW_SECS;
        let n: Option<(i64,)> = on_pool!(&self.pool, p => sqlx::query_as(
                "SELECT failures FROM login_failures WHERE name = $1 AND last_at > $2")
            .bind(name).bind(since).fetch_optional(p).await)
        .map_err(|_| AuthError::Internal)?;
        Ok(n.map_or(0, |(n,)| n))
    }

    async fn fail(&self, name: &str) -> Result<(), AuthError> {
        let now = now_secs();
        let since = now - FAILURE_WINDOW_SECS;
        // Old failures are forgotten (the table stays bounded by the names tried lately).
        on_pool!(&self.pool, p => sqlx::query("DELETE FROM login_failures WHERE last_at <= $1")
            .bind(since).execute(p).await.map(|_| ()))
        .map_err(|_| AuthError::Internal)?;
        let sql = "INSERT INTO login_failures (name, failures, last_at) VALUES ($1, 1, $2) \
                   ON CONFLICT (name) DO UPDATE SET failures = login_failures.failures + 1, \
                   last_at = excluded.last_at";
        on_pool!(&self.pool, p => sqlx::query(sql)
            .bind(name).bind(now).execute(p).await.map(|_| ()))
        .map_err(|_| AuthError::Internal)
    }

    async fn clear_failures(&self, name: &str) -> Result<(), AuthError> {
        on_pool!(&self.pool, p => sqlx::query("DELETE FROM login_failures WHERE name = $1")
            .bind(name).execute(p).await.map(|_| ()))
        .map_err(|_| AuthError::Internal)
    }
}

/// The name of user `id`, if it exists.
pub async fn user_name(pool: &Pool, id: &str) -> Result<Option<String>, sqlx::Error> {
    let name: Option<(String,)> = on_pool!(pool, p =>
        sqlx::query_as("SELECT name FROM users WHERE id = $1")
            .bind(id).fetch_optional(p).await)?;
    Ok(name.map(|(n,)| n))
}

/// Whom list `list_id` is shared with (user names, in order), when `owner` owns it.
pub async fn shared_with(
    pool: &Pool,
    list_id: &str,
    owner: &str,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    let owned: Option<(String,)> = on_pool!(pool, p =>
        sqlx::query_as("SELECT id FROM lists WHERE id = $1 AND owner = $2")
            .bind(list_id).bind(owner).fetch_optional(p).await)?;
    if owned.is_none() {
        return Ok(None);
    }
    let names: Vec<(String,)> = on_pool!(pool, p => sqlx::query_as(
            "SELECT u.name FROM shares s JOIN users u ON u.id = s.user_id \
             WHERE s.list_id = $1 ORDER BY u.name")
        .bind(list_id).fetch_all(p).await)?;
    Ok(Some(names.into_iter().map(|(n,)| n).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_wait_longer_and_longer_up_to_a_bound() {
        assert_eq!(failure_delay(0), Duration::ZERO);
        assert_eq!(failure_delay(FREE_FAILURES - 1), Duration::ZERO);
        assert_eq!(failure_delay(FREE_FAILURES), Duration::from_millis(250));
        assert_eq!(failure_delay(FREE_FAILURES + 1), Duration::from_millis(500));
        assert_eq!(failure_delay(FREE_FAILURES + 100), MAX_DELAY);
    }

    #[test]
    fn user_names_are_short_words() {
        assert!(valid_name("alice"));
        assert!(valid_name("bob.smith_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(33)));
        assert!(!valid_name("<script>"));
    }
}
