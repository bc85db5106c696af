//! The declarations checked against each other and against the database when the engine starts
//! ([`EngineBuilder::start`](super::EngineBuilder::start)): a query that reads a table the engine
//! does not log, or reads by partition a table logged without one, would start and then never
//! update; a table declared with a column the database lacks would fail at the first write.
//! Each refuses to start instead, naming the query, the table and the fix.

use super::Table;
use super::declared::DeclarationError;
use super::schema::{Registry, TableRead};
use super::store::{Store, StoreError};

/// Every query's `reads` and `access_reads` against the declared `tables`.
pub(crate) fn reads<Db: sqlx::Database>(
    registry: &Registry<Db>,
    tables: &[Table],
) -> Result<(), DeclarationError> {
    // In name order, so that the first mistake reported is the same at every start.
    let mut queries: Vec<_> = registry.queries.iter().collect();
    queries.sort_by_key(|(name, _)| **name);
    for (name, entry) in queries {
        let all = entry.reads.iter().map(|r| (r, false));
        for (read, access) in all.chain(entry.access_reads.iter().map(|r| (r, true))) {
            check_read(name, read, access, tables)?;
        }
    }
    Ok(())
}

fn check_read(
    query: &'static str,
    read: &TableRead,
    access: bool,
    tables: &[Table],
) -> Result<(), DeclarationError> {
    let list = if access { "access_reads" } else { "reads" };
    let Some(table) = tables.iter().find(|t| t.name() == read.table) else {
        return Err(DeclarationError::UndeclaredTable {
            query,
            list,
            table: read.table,
            did_you_mean: closest(read.table, tables.iter().map(Table::name)),
        });
    };
    if read.by_partition && table.partition_column().is_none() {
        return Err(DeclarationError::NoPartition {
            query,
            list,
            table: read.table,
        });
    }
    Ok(())
}

/// The declared name nearest `name` (a misspelling: at most a third of it differs), if any.
fn closest<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Option<String> {
    names
        .map(|n| (edit_distance(name, n), n))
        .filter(|(d, _)| *d * 3 <= name.chars().count().max(3))
        .min()
        .map(|(_, n)| n.to_owned())
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// `table`'s key and partition columns against what the database declares.
pub(crate) async fn columns<S: Store>(
    store: &S,
    table: &Table,
) -> Result<Result<(), DeclarationError>, StoreError> {
    let key = std::iter::once(("key", table.key_column()));
    for (role, column) in key.chain(table.partition_column().map(|c| ("partition", c))) {
        if store.column_info(table.name(), column).await?.is_none() {
            return Ok(Err(DeclarationError::NoSuchColumn {
                table: table.name().to_owned(),
                role,
                column: column.to_owned(),
            }));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_table_is_matched_to_the_declared_name_nearest_it() {
        let names = ["messages", "rooms", "todos"];
        assert_eq!(
            closest("mesages", names.into_iter()),
            Some("messages".into())
        );
        assert_eq!(closest("todo", names.into_iter()), Some("todos".into()));
        assert_eq!(closest("accounts", names.into_iter()), None);
    }
}
