//! The `_xid` index of an outbox, built when the outbox grows rather than
//! when capture is installed.
//!
//! A cut reads an outbox from the previous cut's xmin on; that is a range
//! scan through the index however much the outbox keeps for a replica
//! that is away, and a scan of the whole outbox without it. An outbox the
//! batcher cleans up at every housekeeping pass holds little more than
//! the latest changes, which a scan reads as fast; so an outbox is
//! created without the index (one relation fewer per table when capture
//! is installed on thousands of tables at once) and the batcher builds it,
//! concurrently, the first time the outbox keeps many rows for a replica
//! that is away (see `ferry_batcher::outbox_index`).

use crate::quote::ident;
use crate::TableName;

/// The name of a table's outbox index, unqualified (it lives in `ferry`).
pub fn name(table: &TableName) -> String {
    format!("o_{}_xid", table.stem())
}

/// Whether the index exists and is valid. Parameter: its name, schema-
/// qualified and quoted (text). No row: it does not exist.
pub const STATE: &str = "SELECT i.indisvalid FROM pg_catalog.pg_index i \
     WHERE i.indexrelid = pg_catalog.to_regclass($1::pg_catalog.text)";

/// `ferry."o_<stem>_xid"`, for [`STATE`] and the statements below.
pub fn qualified(table: &TableName) -> String {
    format!("ferry.{}", ident(&name(table)))
}

/// Drops what a build that did not finish left behind (an invalid index:
/// writers keep it up to date, the planner never reads it), without
/// blocking writers.
pub fn drop_invalid(table: &TableName) -> String {
    format!("DROP INDEX CONCURRENTLY IF EXISTS {}", qualified(table))
}

/// Builds the index without blocking the writers of the table (whose
/// capture triggers insert into the outbox meanwhile).
pub fn create(table: &TableName) -> String {
    format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} (_xid)",
        ident(&name(table)),
        table.outbox()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_named_after_the_tables_stem_and_quoted() {
        let t = TableName::new("Odd \"schema\"", "t");
        let sql = create(&t);
        assert!(sql.starts_with("CREATE INDEX CONCURRENTLY IF NOT EXISTS \"o_odd__schema__t_"));
        assert!(sql.contains(&t.outbox()));
        assert_eq!(qualified(&t), format!("ferry.\"{}\"", name(&t)));
    }
}
