//! Compaction of what an outbox keeps for replicas that stay away: the
//! changes of each key are netted, in place, to the last one.
//!
//! Why it is safe for every replica and every cut, whenever it runs: it
//! deletes a row only when a later row of the same key is visible to the
//! deleting statement. Two transactions that write one key serialise on
//! its row lock, so the later row's transaction commits after the earlier
//! one's and its `_seq` is higher ([`crate::schema`]): any replica position
//! that lacks the earlier row lacks the later one too, and any cut whose
//! snapshot comes after the deletion sees the later row. A window of
//! changes therefore nets, per key, to the same image with or without the
//! deleted rows — which is what a cut ships ([`crate::batch::materialise`]).
//! The one place where the order of changes matters beyond the last image
//! is a schema change: a batch replays the changes before it, the change,
//! then those after it (a constraint added in between must hold for the
//! rows before it). Rows are netted only within the stretch between two
//! logged schema changes (`ferry.ddl_log.seq`), never across one.
//! TRUNCATE markers (NULL keys) net among themselves to the last one.
//! Keyless tables ship every row and are never compacted.

use crate::TableShape;

/// Deletes, from a keyed table's outbox, every change superseded by a
/// later change of the same key between the same schema changes, among
/// the rows visible in `$1` (a snapshot as text: the oldest position of
/// the replicas that are present, so that rows still on their way to them
/// are left to the cut). None for a keyless table. The DELETE's count is
/// the rows removed.
pub fn superseded(shape: &TableShape) -> Option<String> {
    let key = shape.outbox_key()?;
    let outbox = shape.table.outbox();
    Some(format!(
        "WITH ddl AS (\
             SELECT pg_catalog.array_agg(d.seq ORDER BY d.seq) AS at FROM ferry.ddl_log d \
             WHERE d.seq > (SELECT pg_catalog.min(_seq) FROM {outbox})\
         ), superseded AS (\
             SELECT w.ctid AS gone FROM (\
                 SELECT ctid, pg_catalog.row_number() OVER (\
                     PARTITION BY pg_catalog.width_bucket(_seq, \
                         COALESCE((SELECT at FROM ddl), '{{}}'::bigint[])), {key} \
                     ORDER BY _seq DESC) AS newer \
                 FROM {outbox} \
                 WHERE pg_catalog.pg_visible_in_snapshot(_xid, ($1::text)::pg_catalog.pg_snapshot)\
             ) w WHERE w.newer > 1\
         ) \
         DELETE FROM {outbox} o USING superseded s WHERE o.ctid OPERATOR(pg_catalog.=) s.gone"
    ))
}

/// The master's current snapshot, as text: the bound of a compaction when
/// no replica is present (every change committed may be netted).
pub const SNAPSHOT_NOW: &str = "SELECT pg_catalog.pg_current_snapshot()::text";

/// The compaction session's settings: it never waits long behind a schema
/// change's lock (which would queue the application's writes behind it);
/// a table it cannot lock is compacted at a later pass.
pub const SESSION: &str = "SET lock_timeout = '1s'";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample;

    #[test]
    fn nets_per_key_between_schema_changes_keeping_the_last() {
        let sql = superseded(&sample()).unwrap();
        assert!(
            sql.contains("PARTITION BY pg_catalog.width_bucket(_seq"),
            "{sql}"
        );
        assert!(sql.contains("\"a1\", \"a2\" ORDER BY _seq DESC"), "{sql}");
        assert!(sql.contains("w.newer > 1"), "{sql}");
        assert!(sql.contains("FROM ferry.ddl_log d"), "{sql}");
        assert!(sql.contains("$1::text"), "{sql}");
    }

    #[test]
    fn keyless_tables_are_never_compacted() {
        let mut shape = sample();
        shape.key = None;
        assert_eq!(superseded(&shape), None);
    }
}
