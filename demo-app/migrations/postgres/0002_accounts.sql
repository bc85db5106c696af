-- Accounts, private lists and server-side sessions.
-- A user signs in by name and password (argon2id, as a PHC string).
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL
);
-- A list with a row here is private to its owner and the users it is shared with; a list
-- without one (any other list id) is public, as before.
CREATE TABLE IF NOT EXISTS lists (
    id    TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL REFERENCES users (id)
);
-- Who else may read and write a private list; id = list_id || ':' || user_id.
CREATE TABLE IF NOT EXISTS shares (
    id      TEXT PRIMARY KEY NOT NULL,
    list_id TEXT NOT NULL REFERENCES lists (id),
    user_id TEXT NOT NULL REFERENCES users (id)
);
CREATE INDEX IF NOT EXISTS shares_by_user ON shares (user_id);
CREATE INDEX IF NOT EXISTS shares_by_list ON shares (list_id);
-- tower-sessions records (JSON), expiry in Unix seconds.
CREATE TABLE IF NOT EXISTS sessions (
    id          TEXT PRIMARY KEY NOT NULL,
    data        TEXT NOT NULL,
    expiry_date BIGINT NOT NULL
);
-- Failed sign-ins per user name, to slow repeated failures down.
CREATE TABLE IF NOT EXISTS login_failures (
    name     TEXT PRIMARY KEY NOT NULL,
    failures BIGINT NOT NULL,
    last_at  BIGINT NOT NULL
);
