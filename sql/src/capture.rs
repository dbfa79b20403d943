//! Generated capture: a typed outbox per table and statement-level triggers
//! with transition tables that copy every changed row into it, inside the
//! writing transaction.
//!
//! The triggers fire for every path a row can change by (functions,
//! cascades, COPY, sessions that bypass the proxy), and not at all in apply
//! sessions, which run with `session_replication_role = replica`.

use crate::model::TableShape;
use crate::quote::{ident, list};

/// SQLSTATE for an UPDATE or DELETE refused on a table without a key, and
/// for a TRUNCATE of a replicated table (not replicated yet).
pub const REFUSED: &str = "55000";

/// The statements that install (or refresh) capture for one table.
pub fn install(shape: &TableShape) -> String {
    let t = &shape.table;
    let outbox = t.outbox();
    let cols = list(shape.shipped_names(), "");
    let new_cols = list(shape.shipped_names(), "n.");
    let old_cols = list(shape.shipped_names(), "o.");
    let target = t.quoted();
    let display = t.to_string().replace('\'', "''").replace('%', "%%");
    let header = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp";
    let row = |op: char, alias: &str, src: &str, filter: &str| {
        format!(
            "INSERT INTO {outbox} (_seq, _xid, _op, {cols}) \
             SELECT nextval('ferry.capture_seq'), pg_current_xact_id(), '{op}', {alias} \
             FROM {src}{filter};"
        )
    };
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {outbox} (_seq bigint NOT NULL, _xid xid8 NOT NULL, _op \"char\" NOT NULL, {defs}) \
         WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0);\n",
        defs = shape.column_defs()
    );
    let trig = |name: &str, timing: &str, event: &str, referencing: &str, func: &str| {
        format!(
            "CREATE OR REPLACE TRIGGER {name} {timing} {event} ON {target} {referencing}\
             FOR EACH STATEMENT EXECUTE FUNCTION {func}();\n",
            name = ident(name)
        )
    };
    // Inserts replicate for every table.
    sql += &format!(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger {header} AS $ferry$ BEGIN {ins} RETURN NULL; END $ferry$;\n",
        f = t.capture_fn("ins"),
        ins = row('U', &new_cols, "ferry_new n", "")
    );
    sql += &trig(
        "ferry_capture_ins",
        "AFTER",
        "INSERT",
        "REFERENCING NEW TABLE AS ferry_new ",
        &t.capture_fn("ins"),
    );
    match &shape.key {
        Some(key) => {
            let same_key = key
                .iter()
                .map(|k| format!("n.{k} = o.{k}", k = ident(k)))
                .collect::<Vec<_>>()
                .join(" AND ");
            // An UPDATE that changes a key: transition tables cannot pair old
            // and new rows, so old keys that no longer exist are deletions.
            let gone = format!(" o WHERE NOT EXISTS (SELECT 1 FROM ferry_new n WHERE {same_key})");
            sql += &format!(
                "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger {header} AS $ferry$ BEGIN {del} {ins} RETURN NULL; END $ferry$;\n",
                f = t.capture_fn("upd"),
                del = row('D', &old_cols, "ferry_old", &gone),
                ins = row('U', &new_cols, "ferry_new n", "")
            );
            sql += &trig(
                "ferry_capture_upd",
                "AFTER",
                "UPDATE",
                "REFERENCING OLD TABLE AS ferry_old NEW TABLE AS ferry_new ",
                &t.capture_fn("upd"),
            );
            sql += &format!(
                "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger {header} AS $ferry$ BEGIN {del} RETURN NULL; END $ferry$;\n",
                f = t.capture_fn("del"),
                del = row('D', &old_cols, "ferry_old o", "")
            );
            sql += &trig(
                "ferry_capture_del",
                "AFTER",
                "DELETE",
                "REFERENCING OLD TABLE AS ferry_old ",
                &t.capture_fn("del"),
            );
        }
        None => {
            sql += &format!(
                "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $ferry$ BEGIN \
                 RAISE EXCEPTION 'cannot % table \"{display}\" because it has no primary key or unique not-null key', lower(TG_OP) \
                 USING ERRCODE = '{REFUSED}', HINT = 'Ferry replicates updates and deletes by key: add a primary key, or exclude the table from replication.tables.'; \
                 END $ferry$;\n",
                f = t.capture_fn("ref"),
            );
            sql += &trig(
                "ferry_capture_upd",
                "BEFORE",
                "UPDATE OR DELETE",
                "",
                &t.capture_fn("ref"),
            );
            sql += &format!("DROP TRIGGER IF EXISTS ferry_capture_del ON {target};\n");
        }
    }
    sql += &format!(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $ferry$ BEGIN \
         RAISE EXCEPTION 'cannot truncate table \"{display}\": TRUNCATE is not replicated yet' \
         USING ERRCODE = '{REFUSED}', HINT = 'Use DELETE, or exclude the table from replication.tables.'; \
         END $ferry$;\n",
        f = t.capture_fn("trn"),
    );
    sql += &trig(
        "ferry_capture_trn",
        "BEFORE",
        "TRUNCATE",
        "",
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
        assert!(sql.contains("n.\"id\" = o.\"id\" AND n.\"order_id\" = o.\"order_id\""));
        // generated column never captured
        assert!(!sql.contains("\"total\""));
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
