//! A consistent full copy of the replicated tables from the master to a
//! node fenced out of the cluster: every table is read in one REPEATABLE
//! READ transaction on the master, whose snapshot becomes the node's ledger
//! position, and written in one transaction on the node.

use crate::model::TableShape;
use crate::quote::list;

/// On the master, before the copy: holds outbox clean-up back for the node
/// from the current snapshot on (the copy's snapshot is later), so that
/// nothing committed after the copy is deleted before the node is back.
/// Parameter: node.
pub const PIN: &str = "INSERT INTO ferry.replicas (name, batch_id, snap, resyncing) \
     VALUES ($1, 0, pg_current_snapshot(), true) \
     ON CONFLICT (name) DO UPDATE SET snap = EXCLUDED.snap, resyncing = true, updated_at = now()";

/// On the master, when a resync failed: releases the pin. Parameter: node.
pub const UNPIN: &str = "UPDATE ferry.replicas SET resyncing = false WHERE name = $1";

/// On the master: the copy's transaction.
pub const BEGIN_MASTER: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ";

/// On the master, inside the copy's transaction: its snapshot and the last
/// batch id (the node's ledger starts there). Returns `(snapshot, id)`.
pub const POSITION: &str =
    "SELECT pg_current_snapshot()::text, (SELECT last_value FROM ferry.batch_ids)";

/// On the master: one table's shipped columns, in binary.
pub fn copy_out(shape: &TableShape) -> String {
    format!(
        "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)",
        list(shape.shipped_names(), ""),
        shape.table.quoted()
    )
}

/// On the node: empties every replicated table at once (foreign keys
/// between them allow it only together).
pub fn truncate_all(shapes: &[TableShape]) -> String {
    let names: Vec<String> = shapes.iter().map(|s| s.table.quoted()).collect();
    format!("TRUNCATE {}", names.join(", "))
}

/// On the node: one table's rows, in binary, into its shipped columns.
pub fn copy_in(shape: &TableShape) -> String {
    format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        shape.table.quoted(),
        list(shape.shipped_names(), "")
    )
}

/// On the node: its ledger now stands at the copy's position. Parameters:
/// origin, batch id, snapshot.
pub const SET_LEDGER: &str = "INSERT INTO ferry.applied (origin, batch_id, snap) \
     VALUES ($1, $2, ($3::text)::pg_snapshot) ON CONFLICT (singleton) DO UPDATE \
     SET origin = EXCLUDED.origin, batch_id = EXCLUDED.batch_id, snap = EXCLUDED.snap, applied_at = now()";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample;

    #[test]
    fn copies_the_shipped_columns_only() {
        let s = sample();
        assert_eq!(
            copy_out(&s),
            "COPY (SELECT \"id\", \"order_id\", \"qty\" FROM \"public\".\"Order Lines\") TO STDOUT (FORMAT binary)"
        );
        assert!(copy_in(&s).starts_with("COPY \"public\".\"Order Lines\" (\"id\""));
        assert_eq!(truncate_all(&[s]), "TRUNCATE \"public\".\"Order Lines\"");
    }
}
