//! Generated capture: a typed outbox per table and statement-level triggers
//! with transition tables that copy every changed row into it, inside the
//! writing transaction.
//!
//! The triggers fire for every path a row can change by (functions,
//! cascades, COPY, sessions that bypass the proxy), and not at all in apply
//! sessions, which run with `session_replication_role = replica`.

use crate::model::TableShape;
use crate::quote::{ident, list};

/// SQLSTATE for an UPDATE or DELETE refused on a table without a key.
pub const REFUSED: &str = "55000";

/// A stable fingerprint of generated SQL (64-bit FNV-1a, hex), stored with
/// the installed capture so that an unchanged one is left alone.
pub fn fingerprint(sql: &str) -> String {
    let h = sql.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Takes the table's lock before anything else, in the order writers take
/// theirs (table, then outbox), so installing under load cannot deadlock
/// with them; gives up after `lock_timeout` rather than queue behind a long
/// transaction. Runs inside the install transaction.
pub fn lock_for_install(shape: &TableShape) -> String {
    format!(
        "SET LOCAL lock_timeout = '10s'; LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE;\n",
        shape.table.quoted()
    )
}

/// A trigger function that refuses the statement with SQLSTATE [`REFUSED`].
/// `raise` is the RAISE format string and its arguments, closed quote
/// included (`msg', args` or `msg'`), with `%` and quotes already escaped.
fn refusal(function: &str, q: &str, raise: &str, hint: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS {q} BEGIN \
         RAISE EXCEPTION '{raise} USING ERRCODE = '{REFUSED}', HINT = '{hint}'; END {q};\n"
    )
}

/// The dollar-quote tag for a table's function bodies: derived from the
/// table's and its columns' names, so no name that appears in a body can
/// contain it and end the quoting early.
fn dollar_tag(shape: &TableShape) -> String {
    let mut names = format!("{}\0{}", shape.table.schema, shape.table.name);
    for c in &shape.columns {
        names.push('\0');
        names.push_str(&c.name);
    }
    format!("$ferry_{}$", &fingerprint(&names)[..12])
}

/// The statements that install (or refresh) capture for one table.
pub fn install(shape: &TableShape) -> String {
    let t = &shape.table;
    let outbox = t.outbox();
    let cols = list(shape.shipped_names(), "");
    let new_cols = list(shape.shipped_names(), "n.");
    let old_cols = list(shape.shipped_names(), "OLD.");
    let target = t.quoted();
    let display = t.to_string().replace('\'', "''").replace('%', "%%");
    // SECURITY DEFINER so that any role that may write a table may capture
    // into Ferry's outbox without being granted access to it. No per-call
    // `SET search_path` (it costs a GUC save/restore and two search-path
    // cache invalidations per statement): instead every name the body
    // resolves is schema-qualified, so a caller's search_path cannot
    // substitute a function, type or table.
    let header = "LANGUAGE plpgsql SECURITY DEFINER";
    let q = dollar_tag(shape);
    // One sequence value per statement: a statement never changes the same
    // key twice, and statements of conflicting transactions are ordered by
    // the row locks they wait for, so (key, _seq) orders every change.
    let statement_fn = |name: &str, op: char, src: &str| {
        format!(
            "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger {header} AS {q} \
             DECLARE s pg_catalog.int8 := pg_catalog.nextval('ferry.capture_seq'::pg_catalog.regclass); \
             x pg_catalog.xid8 := pg_catalog.pg_current_xact_id(); \
             BEGIN INSERT INTO {outbox} (_seq, _xid, _op, {cols}) SELECT s, x, '{op}', {new_cols} FROM {src} n; \
             RETURN NULL; END {q};\n",
            f = t.capture_fn(name),
        )
    };
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {outbox} (_seq bigint NOT NULL, _xid xid8 NOT NULL, _op \"char\" NOT NULL, {defs}) \
         WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0);\n",
        defs = shape.column_defs()
    );
    // A table that gained columns since its outbox was created (capture is
    // reinstalled when the table's shape changes): the outbox gains them
    // too, before the new capture functions write them.
    let add: Vec<String> = shape
        .shipped()
        .map(|c| format!("ADD COLUMN IF NOT EXISTS {} {}", ident(&c.name), c.type_sql))
        .collect();
    if !add.is_empty() {
        sql += &format!("ALTER TABLE {outbox} {};\n", add.join(", "));
    }
    // The cut reads only rows at or above the previous cut's xmin: with
    // this index that is a range scan however large a backlog a down
    // replica leaves behind. It costs about 2.5 us per captured statement
    // (benchmarks/capture-cost).
    sql += &format!(
        "CREATE INDEX IF NOT EXISTS {} ON {outbox} (_xid);\n",
        ident(&format!("o_{}_xid", t.stem()))
    );
    let trig = |name: &str, timing: &str, event: &str, tail: &str, func: &str| {
        format!(
            "CREATE OR REPLACE TRIGGER {name} {timing} {event} ON {target} {tail} EXECUTE FUNCTION {func}();\n",
            name = ident(name)
        )
    };
    let stmt = "FOR EACH STATEMENT";
    // Inserts replicate for every table.
    sql += &statement_fn("ins", 'U', "ferry_new");
    sql += &trig(
        "ferry_capture_ins",
        "AFTER",
        "INSERT",
        &format!("REFERENCING NEW TABLE AS ferry_new {stmt}"),
        &t.capture_fn("ins"),
    );
    match &shape.key {
        Some(key) => {
            sql += &statement_fn("upd", 'U', "ferry_new");
            sql += &trig(
                "ferry_capture_upd",
                "AFTER",
                "UPDATE",
                &format!("REFERENCING NEW TABLE AS ferry_new {stmt}"),
                &t.capture_fn("upd"),
            );
            sql += &statement_fn("del", 'D', "ferry_old");
            sql += &trig(
                "ferry_capture_del",
                "AFTER",
                "DELETE",
                &format!("REFERENCING OLD TABLE AS ferry_old {stmt}"),
                &t.capture_fn("del"),
            );
            // An UPDATE that changes a key also deletes the old key. Only
            // such rows fire this (the WHEN clause is evaluated in C), and
            // row triggers fire before statement triggers, so the deletion
            // takes the lower sequence number: keys that swap net correctly.
            let changed = key
                .iter()
                .map(|k| format!("OLD.{k} IS DISTINCT FROM NEW.{k}", k = ident(k)))
                .collect::<Vec<_>>()
                .join(" OR ");
            sql += &format!(
                "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger {header} AS {q} \
                 BEGIN INSERT INTO {outbox} (_seq, _xid, _op, {cols}) \
                 VALUES (pg_catalog.nextval('ferry.capture_seq'::pg_catalog.regclass), pg_catalog.pg_current_xact_id(), 'D', {old_cols}); \
                 RETURN NULL; END {q};\n",
                f = t.capture_fn("key"),
            );
            sql += &trig(
                "ferry_capture_key",
                "AFTER",
                "UPDATE",
                &format!("FOR EACH ROW WHEN ({changed})"),
                &t.capture_fn("key"),
            );
        }
        None => {
            sql += &refusal(
                &t.capture_fn("ref"),
                &q,
                &format!("cannot % table \"{display}\" because it has no primary key or unique not-null key', lower(TG_OP)"),
                "Ferry replicates updates and deletes by key: add a primary key, or exclude the table from replication.tables.",
            );
            sql += &trig(
                "ferry_capture_upd",
                "BEFORE",
                "UPDATE OR DELETE",
                stmt,
                &t.capture_fn("ref"),
            );
            sql += &format!("DROP TRIGGER IF EXISTS ferry_capture_del ON {target};\n");
            sql += &format!("DROP TRIGGER IF EXISTS ferry_capture_key ON {target};\n");
        }
    }
    // TRUNCATE: a marker row (operation 'T', no data) taken after the
    // statement holds its ACCESS EXCLUSIVE lock, so every change made to the
    // table before it has a lower sequence value and every one after it a
    // higher one; the batch keeps only the latter and tells the replica to
    // empty the table first.
    sql += &format!(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger {header} AS {q} \
         BEGIN INSERT INTO {outbox} (_seq, _xid, _op) \
         VALUES (pg_catalog.nextval('ferry.capture_seq'::pg_catalog.regclass), pg_catalog.pg_current_xact_id(), 'T'); \
         RETURN NULL; END {q};\n",
        f = t.capture_fn("trn"),
    );
    sql += &trig(
        "ferry_capture_trn",
        "BEFORE",
        "TRUNCATE",
        stmt,
        &t.capture_fn("trn"),
    );
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample;

    #[test]
    fn keyed_table_captures_all_three_operations() {
        let sql = install(&sample());
        assert!(sql.contains("AFTER INSERT ON \"public\".\"Order Lines\" REFERENCING NEW TABLE"));
        assert!(sql.contains("AFTER UPDATE"));
        assert!(sql.contains("AFTER DELETE"));
        assert!(sql.contains("WHEN (OLD.\"id\" IS DISTINCT FROM NEW.\"id\" OR OLD.\"order_id\" IS DISTINCT FROM NEW.\"order_id\")"));
        // generated column never captured
        assert!(!sql.contains("\"total\""));
    }

    #[test]
    fn dollar_quoting_survives_names_that_contain_it() {
        let mut s = sample();
        s.table.name = "odd$ferry$name".into();
        let sql = install(&s);
        let tag = dollar_tag(&s);
        assert_ne!(tag, "$ferry$");
        assert!(!s.table.name.contains(&tag));
        assert_eq!(sql.matches(&tag).count() % 2, 0);
    }

    #[test]
    fn keyless_table_refuses_update_and_delete() {
        let mut s = sample();
        s.key = None;
        let sql = install(&s);
        assert!(sql.contains("BEFORE UPDATE OR DELETE"));
        assert!(sql.contains("ERRCODE = '55000'"));
        assert!(!sql.contains("AFTER DELETE"));
    }
}
