//! The replica side of a batch: COPY into the session's temporary table and
//! apply it to the real table in-server, inside the batch transaction.

use crate::batch::Ops;
use crate::model::TableShape;
use crate::quote::{ident, list};

/// Receives a binary batch table produced by [`crate::batch::copy_out`].
pub fn copy_in(shape: &TableShape) -> String {
    copy_into(&shape.table.batch_temp())
}

/// Receives a binary batch table into the named temporary table.
pub fn copy_into(temp: &str) -> String {
    format!("COPY {temp} FROM STDIN (FORMAT binary)")
}

/// Deletes the keys the batch deletes (keyed tables only; a keyless table
/// only ever receives inserts). Keys are netted on the master, so each key
/// appears at most once and the order of delete and upsert is free. Runs
/// with `session_replication_role = replica`: capture triggers, user
/// triggers and foreign-key actions do not fire again.
pub fn delete(shape: &TableShape, temp: &str) -> Option<String> {
    let key = shape.key.as_ref()?;
    let on = key
        .iter()
        .map(|k| format!("t.{k} = b.{k}", k = ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    Some(format!(
        "DELETE FROM {t} AS t USING {temp} AS b WHERE b._op = 'D' AND {on}",
        t = shape.own_rows(),
    ))
}

/// Inserts the batch's current row images, updating rows whose key exists.
pub fn upsert(shape: &TableShape, temp: &str) -> String {
    let t = shape.table.quoted();
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
pub fn truncate(shape: &TableShape, temp: &str) -> String {
    format!(
        "DELETE FROM {} WHERE EXISTS (SELECT FROM {temp} WHERE _op = 'T')",
        shape.own_rows(),
    )
}

/// What an apply statement does; a batch table without rows of its kind
/// skips it (the statement would scan the table and find nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Truncate,
    Delete,
    Upsert,
}

impl Kind {
    /// Whether a batch table holding `ops` gives this statement work.
    pub fn has_work(self, ops: &Ops) -> bool {
        match self {
            Kind::Truncate => ops.truncates > 0,
            Kind::Delete => ops.deletes > 0,
            Kind::Upsert => ops.upserts > 0,
        }
    }
}

/// The apply statements of a table, in order, from its session batch table.
pub fn apply(shape: &TableShape) -> Vec<(Kind, String)> {
    apply_from(shape, &shape.table.batch_temp())
}

/// The apply statements of a table, in order, from the named batch table.
pub fn apply_from(shape: &TableShape, temp: &str) -> Vec<(Kind, String)> {
    [(Kind::Truncate, truncate(shape, temp))]
        .into_iter()
        .chain(delete(shape, temp).map(|sql| (Kind::Delete, sql)))
        .chain([(Kind::Upsert, upsert(shape, temp))])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample;

    #[test]
    fn upsert_by_key_with_identity_override() {
        let sql = apply(&sample())
            .into_iter()
            .map(|(_, sql)| sql)
            .collect::<Vec<_>>()
            .join("; ");
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
        assert!(upsert(&s, "pg_temp.b").contains("DO NOTHING"));
    }

    #[test]
    fn a_batch_of_images_runs_only_the_upsert() {
        let ops = Ops {
            upserts: 3,
            ..Ops::default()
        };
        let kinds: Vec<Kind> = apply(&sample())
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.has_work(&ops))
            .collect();
        assert_eq!(kinds, [Kind::Upsert]);
        let marker = Ops {
            truncates: 1,
            deletes: 2,
            ..Ops::default()
        };
        assert!(Kind::Truncate.has_work(&marker) && Kind::Delete.has_work(&marker));
        assert!(!Kind::Upsert.has_work(&marker));
    }
}
