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
/// A pin already in place (set at a failover for the failed master, or by
/// an earlier attempt) keeps its older snapshot: it holds back more.
pub const PIN: &str = "INSERT INTO ferry.replicas AS r (name, batch_id, snap, resyncing) \
     VALUES ($1, 0, pg_current_snapshot(), true) \
     ON CONFLICT (name) DO UPDATE SET \
     snap = CASE WHEN r.resyncing THEN r.snap ELSE EXCLUDED.snap END, \
     resyncing = true, released_at = NULL, updated_at = now()";

/// On the master: the snapshot a pin holds for the node (set when it was
/// failed over: changes after it are the master's own). Parameter: node.
/// Returns one text value, or no row.
pub const PINNED: &str = "SELECT snap::text FROM ferry.replicas WHERE name = $1 AND resyncing";

/// On the master, when a resync failed: releases the pin. Parameter: node.
pub const UNPIN: &str = "UPDATE ferry.replicas SET resyncing = false WHERE name = $1";

/// On the master: where the node's history left the cluster's — the
/// snapshot of the last batch the master applied from it while it was
/// master (none if the master never was its replica). Parameter: node.
/// Returns one text value, or no row.
pub const FORK_POINT: &str = "SELECT snap::text FROM ferry.applied WHERE origin = $1";

/// On the node, before its rows are replaced: the changes in one table's
/// outbox that never reached the cluster (not visible in the fork point's
/// snapshot; all of them without a fork point) are kept in
/// `ferry.quarantine`, with the row image under the table's column names
/// (`op`: `U` a row written as the image shows, `D` a row deleted, `T`
/// the table truncated).
/// Parameters: fork point (nullable text), the table's quoted name.
pub fn quarantine(shape: &TableShape) -> String {
    format!(
        "INSERT INTO ferry.quarantine (table_name, op, xid, seq, row_image) \
         SELECT $2, o._op::text, o._xid, o._seq, \
                (SELECT pg_catalog.jsonb_object_agg(a.attname, j.value) \
                   FROM pg_catalog.jsonb_each(pg_catalog.to_jsonb(o.*)) j \
                   JOIN pg_catalog.pg_attribute a \
                     ON a.attrelid = ($2::text)::pg_catalog.regclass AND j.key = 'a' || a.attnum) \
           FROM {} o \
          WHERE $1::text IS NULL \
             OR NOT pg_catalog.pg_visible_in_snapshot(o._xid, ($1::text)::pg_catalog.pg_snapshot) \
          ORDER BY o._seq",
        shape.table.outbox()
    )
}

/// On the node: its outboxes are emptied once their unshipped changes are
/// quarantined (as a replica it ships nothing; if it is promoted later,
/// nothing of its old history may ship).
pub fn empty_outboxes(shapes: &[TableShape]) -> String {
    let names: Vec<String> = shapes
        .iter()
        .map(|s| s.table.outbox())
        .chain(std::iter::once("ferry.touched".to_string()))
        .collect();
    format!("TRUNCATE {}", names.join(", "))
}

/// On a node whose definitions are replaced with the master's: its schemas
/// other than `public`, the system's and Ferry's, whose contents go.
/// Returns their names.
pub const USER_SCHEMAS: &str = "SELECT nspname::text FROM pg_catalog.pg_namespace \
     WHERE nspname NOT IN ('ferry', 'public', 'information_schema') \
       AND nspname NOT LIKE 'pg\\_%' ORDER BY 1";

/// Drops one of [`USER_SCHEMAS`] with everything in it.
pub fn drop_schema(name: &str) -> String {
    format!("DROP SCHEMA {} CASCADE", crate::quote::ident(name))
}

/// Empties `public` (dropped with everything in it and made again as
/// PostgreSQL 15 makes it: owned by the database owner, usable by all).
pub const RENEW_PUBLIC: &str = "DROP SCHEMA public CASCADE; CREATE SCHEMA public; \
     ALTER SCHEMA public OWNER TO pg_database_owner; GRANT USAGE ON SCHEMA public TO PUBLIC";

/// The highest quarantine row id on a node (0 for none). Returns one
/// bigint.
pub const LAST_QUARANTINED: &str = "SELECT coalesce(max(id), 0) FROM ferry.quarantine";

/// On the node: the keys of one table's quarantined changes since an id,
/// as a JSON array of objects under the key's column names. Parameters:
/// the table's quoted name, the id, the key's column names (`text[]`).
pub const QUARANTINED_KEYS: &str =
    "SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT k.key), '[]')::text \
     FROM (SELECT (SELECT pg_catalog.jsonb_object_agg(n, q.row_image -> n) \
                     FROM pg_catalog.unnest($3::text[]) n) AS key \
             FROM ferry.quarantine q WHERE q.table_name = $1 AND q.id > $2) k";

/// On the master, in the copy's transaction: the keys of one table that
/// changed after a snapshot (from its outbox), as a JSON array of objects
/// under the key's column names. Parameter: the snapshot. `None` for a
/// table without a key.
pub fn changed_keys(shape: &TableShape) -> Option<String> {
    let key = shape.key.as_ref()?;
    let cols: Vec<String> = key
        .iter()
        .filter_map(|k| shape.columns.iter().find(|c| &c.name == k))
        .map(|c| {
            format!(
                "o.{} AS {}",
                TableShape::outbox_column(c),
                crate::quote::ident(&c.name)
            )
        })
        .collect();
    Some(format!(
        "SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT pg_catalog.to_jsonb(k.*)), '[]')::text \
         FROM (SELECT {} FROM {} o \
               WHERE o._op <> 'T' \
                 AND NOT pg_catalog.pg_visible_in_snapshot(o._xid, ($1::text)::pg_catalog.pg_snapshot)) k",
        cols.join(", "),
        shape.table.outbox()
    ))
}

/// The temporary table that holds the keys a keyed resync copies, on the
/// master and on the node (dropped at commit); then filled with
/// [`fill_keys`].
pub fn keys_table(shape: &TableShape, name: &str) -> Option<String> {
    let key = shape.key.as_ref()?;
    Some(format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
        crate::quote::ident(name),
        list(key.iter().map(String::as_str), ""),
        shape.table.quoted()
    ))
}

/// Fills [`keys_table`] from a JSON array of key objects. Parameter: the
/// JSON text.
pub fn fill_keys(shape: &TableShape, name: &str) -> Option<String> {
    let key = shape.key.as_ref()?;
    let cols = list(key.iter().map(String::as_str), "");
    Some(format!(
        "INSERT INTO {} ({cols}) SELECT {cols} FROM pg_catalog.jsonb_populate_recordset(NULL::{}, ($1::text)::jsonb)",
        crate::quote::ident(name),
        shape.table.quoted()
    ))
}

/// On the master: the current rows of the keys in [`keys_table`], in
/// binary.
pub fn copy_out_keys(shape: &TableShape, name: &str) -> Option<String> {
    let key = list(shape.key.as_ref()?.iter().map(String::as_str), "");
    Some(format!(
        "COPY (SELECT {} FROM {} WHERE ({key}) IN (SELECT {key} FROM pg_temp.{})) TO STDOUT (FORMAT binary)",
        list(shape.shipped_names(), ""),
        shape.own_rows(),
        crate::quote::ident(name)
    ))
}

/// On the node: removes the rows of the keys in [`keys_table`] (the
/// master's current rows for them are copied in next).
pub fn delete_keys(shape: &TableShape, name: &str) -> Option<String> {
    let key = list(shape.key.as_ref()?.iter().map(String::as_str), "");
    Some(format!(
        "DELETE FROM {} WHERE ({key}) IN (SELECT {key} FROM pg_temp.{})",
        shape.own_rows(),
        crate::quote::ident(name)
    ))
}

/// Rows a node holds in quarantine. Returns one bigint.
pub const QUARANTINED: &str = "SELECT count(*) FROM ferry.quarantine";

/// On the master: the copy's transaction.
pub const BEGIN_MASTER: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ";

/// On the master, inside the copy's transaction: its snapshot and the last
/// batch id (the node's ledger starts there). Returns `(snapshot, id)`.
/// The id is the last one handed out (0 before the first batch): the next
/// batch's id is above it, whether or not a batch was ever cut.
pub const POSITION: &str = "SELECT pg_current_snapshot()::text, \
     (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM ferry.batch_ids)";

/// On the master: one table's shipped columns, in binary.
pub fn copy_out(shape: &TableShape) -> String {
    format!(
        "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)",
        list(shape.shipped_names(), ""),
        shape.own_rows()
    )
}

/// On the node: empties every replicated table at once (foreign keys
/// between them allow it only together).
pub fn truncate_all(shapes: &[TableShape]) -> String {
    let names: Vec<String> = shapes.iter().map(TableShape::own_rows).collect();
    format!("TRUNCATE {}", names.join(", "))
}

/// On the node: every row of one table (inside the resync's transaction,
/// with triggers off: foreign keys to it are not checked).
pub fn delete_all(shape: &TableShape) -> String {
    format!("DELETE FROM {}", shape.own_rows())
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
            "COPY (SELECT \"id\", \"order_id\", \"qty\" FROM ONLY \"public\".\"Order Lines\") TO STDOUT (FORMAT binary)"
        );
        assert!(copy_in(&s).starts_with("COPY \"public\".\"Order Lines\" (\"id\""));
        assert_eq!(
            truncate_all(std::slice::from_ref(&s)),
            "TRUNCATE ONLY \"public\".\"Order Lines\""
        );
        let partitioned = TableShape {
            partitioned: true,
            ..s
        };
        assert_eq!(
            truncate_all(&[partitioned]),
            "TRUNCATE \"public\".\"Order Lines\""
        );
    }
}
