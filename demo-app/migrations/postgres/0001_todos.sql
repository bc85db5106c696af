-- The demo's todos. A list is just a list_id: a list never seen before is empty.
-- `position` orders a list's todos (new todos go to the bottom).
CREATE TABLE IF NOT EXISTS todos (
    id        TEXT    PRIMARY KEY,
    list_id   TEXT    NOT NULL,
    title     TEXT    NOT NULL,
    completed BOOLEAN NOT NULL DEFAULT FALSE,
    position  BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS todos_by_list ON todos (list_id, position);
