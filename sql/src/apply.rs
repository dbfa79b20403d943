//! The replica side of a batch: COPY into the session's temporary table and
//! apply it to the real table in-server, inside the batch transaction.

use crate::model::TableShape;
use crate::quote::{ident, list};

/// Receives a binary batch table produced by [`crate::batch::copy_out`].
pub fn copy_in(shape: &TableShape) -> String {
    format!(
        "COPY {} FROM STDIN (FORMAT binary)",
        shape.table.batch_temp()
    )
}

/// Deletes the keys the batch deletes (keyed tables only; a keyless table
/// only ever receives inserts). Keys are netted on the master, so each key
/// appears at most once and the order of delete and upsert is free. Runs
/// with `session_replication_role = replica`: capture triggers, user
/// triggers and foreign-key actions do not fire again.
pub fn delete(shape: &TableShape) -> Option<String> {
    let key = shape.key.as_ref()?;
    let on = key
        .iter()
        .map(|k| format!("t.{k} = b.{k}", k = ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    Some(format!(
        "DELETE FROM {t} AS t USING {temp} AS b WHERE b._op = 'D' AND {on}",
        t = shape.table.quoted(),
        temp = shape.table.batch_temp()
    ))
}

/// Inserts the batch's current row images, updating rows whose key exists.
pub fn upsert(shape: &TableShape) -> String {
    let t = shape.table.quoted();
    let temp = shape.table.batch_temp();
    let names = shape.shipped_names();
    let cols = list(names.iter().copied(), "");
    let overriding = if shape.has_identity() {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    match &shape.key {
        Some(key) => {
            let non_key: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !key.iter().any(|k| k == n))
                .collect();
            let conflict = if non_key.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!(
                    "DO UPDATE SET {}",
                    non_key
                        .iter()
                        .map(|c| format!("{c} = EXCLUDED.{c}", c = ident(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            format!(
                "INSERT INTO {t} AS t ({cols}){overriding} SELECT {cols} FROM {temp} WHERE _op = 'U' \
                 ON CONFLICT ({keys}) {conflict}",
                keys = list(key.iter().map(String::as_str), "")
            )
        }
        None => format!(
            "INSERT INTO {t} ({cols}){overriding} SELECT {cols} FROM {temp} WHERE _op = 'U'"
        ),
    }
}

/// Empties the table when the batch carries a TRUNCATE marker for it (the
/// batch then holds only changes made after the TRUNCATE). A DELETE rather
/// than TRUNCATE: it runs inside the batch transaction with foreign-key
/// triggers off (replica role), whatever other tables the master truncated
/// with it.
pub fn truncate(shape: &TableShape) -> String {
    format!(
        "DELETE FROM {} WHERE EXISTS (SELECT FROM {} WHERE _op = 'T')",
        shape.table.quoted(),
        shape.table.batch_temp()
    )
}

/// The apply statements of a table, in order.
pub fn apply(shape: &TableShape) -> Vec<String> {
    [truncate(shape)]
        .into_iter()
        .chain(delete(shape))
        .chain([upsert(shape)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample;

    #[test]
    fn upsert_by_key_with_identity_override() {
        let sql = apply(&sample()).join("; ");
        assert!(sql.contains("OVERRIDING SYSTEM VALUE"));
        assert!(sql.contains(
            "ON CONFLICT (\"id\", \"order_id\") DO UPDATE SET \"qty\" = EXCLUDED.\"qty\""
        ));
        assert!(sql.contains("t.\"id\" = b.\"id\" AND t.\"order_id\" = b.\"order_id\""));
        assert!(!sql.contains("total"));
    }

    #[test]
    fn all_key_table_does_nothing_on_conflict() {
        let mut s = sample();
        s.columns.truncate(2);
        assert!(upsert(&s).contains("DO NOTHING"));
    }
}
