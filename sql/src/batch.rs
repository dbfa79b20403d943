//! The master side of a batch: materialise the changes between two
//! snapshots into local temporary tables, netted per key, and COPY them out.

use crate::model::TableShape;
use crate::quote::list;

/// The per-session temporary batch table (created once; emptied by every
/// commit). Used on the master and, with the same shape, on every replica.
pub fn create_temp(shape: &TableShape) -> String {
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS {} (_op \"char\" NOT NULL, {}) ON COMMIT DELETE ROWS",
        shape.table.batch_temp(),
        shape.column_defs()
    )
}

/// Empties every batch table inside the cut's transaction, so that one cut
/// can materialise the windows of several groups of replicas in turn.
pub fn empty_all(shapes: &[TableShape]) -> String {
    let temps: Vec<String> = shapes.iter().map(|s| s.table.batch_temp()).collect();
    if temps.is_empty() {
        return "SELECT 1".into();
    }
    format!("TRUNCATE {}", temps.join(", "))
}

/// The condition selecting outbox rows of transactions visible in the
/// reading transaction's snapshot but not in `$1` (the previous cut). The
/// reading transaction's own snapshot is the new cut, so this selects
/// exactly the transactions that committed between the two: whole
/// transactions, whatever order they started or committed in.
const SINCE_CUT: &str = "_xid >= pg_snapshot_xmin(($1::text)::pg_snapshot) \
     AND NOT pg_visible_in_snapshot(_xid, ($1::text)::pg_snapshot)";

/// Fills the batch table from the outbox: for a keyed table, the last image
/// (or deletion) of each key in capture order; for a keyless one, every
/// inserted row. Parameter: previous cut.
///
/// If the table was truncated in the window, only its last TRUNCATE marker
/// and the changes after it count (the marker's key columns are NULL, so
/// it forms a group of its own; real keys are never NULL).
pub fn materialise(shape: &TableShape) -> String {
    let cols = list(shape.shipped_names(), "");
    let temp = shape.table.batch_temp();
    let outbox = shape.table.outbox();
    let since_truncate = format!(
        "_seq >= coalesce((SELECT max(_seq) FROM {outbox} WHERE {SINCE_CUT} AND _op = 'T'), 0)"
    );
    match &shape.key {
        Some(key) => {
            let key = list(key.iter().map(String::as_str), "");
            format!(
                "INSERT INTO {temp} (_op, {cols}) \
                 SELECT DISTINCT ON ({key}) _op, {cols} FROM {outbox} \
                 WHERE {SINCE_CUT} AND {since_truncate} ORDER BY {key}, _seq DESC"
            )
        }
        None => format!(
            "INSERT INTO {temp} (_op, {cols}) SELECT _op, {cols} FROM {outbox} \
             WHERE {SINCE_CUT} AND {since_truncate} ORDER BY _seq"
        ),
    }
}

/// Streams the batch table out in binary. The replica reads it with
/// [`crate::apply::copy_in`] into a table of the same shape.
pub fn copy_out(shape: &TableShape) -> String {
    format!(
        "COPY {} TO STDOUT (FORMAT binary)",
        shape.table.batch_temp()
    )
}

/// Removes outbox rows every replica has. Parameter: the horizon xid8 as
/// text (see [`crate::schema::CLEANUP_HORIZON`]).
pub fn cleanup(shape: &TableShape) -> String {
    format!(
        "DELETE FROM {} WHERE _xid < ($1::text)::xid8",
        shape.table.outbox()
    )
}

/// The outbox's row count (for status). No parameters.
pub fn backlog(shape: &TableShape) -> String {
    format!("SELECT count(*) FROM {}", shape.table.outbox())
}

/// Outbox rows not visible in a replica's position (its pending rows).
/// Parameter: the replica's snapshot.
pub fn pending(shape: &TableShape) -> String {
    format!(
        "SELECT count(*) FROM {} WHERE NOT pg_visible_in_snapshot(_xid, ($1::text)::pg_snapshot)",
        shape.table.outbox()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample;

    #[test]
    fn nets_per_key_in_capture_order() {
        let sql = materialise(&sample());
        assert!(sql.contains("DISTINCT ON (\"id\", \"order_id\")"));
        assert!(sql.contains("ORDER BY \"id\", \"order_id\", _seq DESC"));
        assert!(sql.contains("pg_visible_in_snapshot"));
    }

    #[test]
    fn keyless_tables_ship_every_row() {
        let mut s = sample();
        s.key = None;
        assert!(!materialise(&s).contains("DISTINCT"));
    }
}
