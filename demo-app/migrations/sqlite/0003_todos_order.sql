-- A list's todos in their order, the key last: the index the incremental read of `todos`
-- seeks in (the row before a changed todo), so a change costs the same in a list of any length.
CREATE INDEX IF NOT EXISTS todos_in_order ON todos (list_id, position, id);
DROP INDEX IF EXISTS todos_by_list;
