//! Content comparison: `ferry verify` (whole tables, once) and the
//! background check, which compares one chunk of a table at a time at the
//! very point of the batch stream where master and replica hold the same
//! rows — pt-table-checksum's idea carried over to batches:
//!
//! 1. The cut of a batch reads, in its own transaction (its snapshot *is*
//!    the batch's end), the next chunk of a table on the master: the first
//!    rows after a key, in key order, with their count and the sum of
//!    64-bit slices of each row's md5 ([`CHUNK_ON_MASTER`]).
//! 2. The batch carries the chunk's bounds and the master's figures; the
//!    replica computes its own over the same key range inside the batch's
//!    transaction, after the batch's rows (so it stands exactly where the
//!    master stood), and records both in its `ferry.checks`
//!    ([`CHECK_ON_REPLICA`]).
//! 3. The batcher reads them back ([`TAKE_CHECKS`]) and reports a range
//!    whose figures differ.
//!
//! Row text is made under fixed settings (UTC, ISO dates, shortest exact
//! floats, hex bytea): the same rows give the same text on every node,
//! whatever the sessions' settings.

use crate::model::TableShape;

/// Row count and an order-independent checksum (sum of 64-bit slices of each
/// row's md5, the row text made under fixed settings) of one whole table.
/// Parameter: the table's quoted name. Returns `(bigint, text)`.
pub const CHECKSUM: &str =
    "SELECT rows, sum::text FROM ferry.chunk_sum(($1::text)::regclass, NULL, NULL, NULL)";

/// The background check's functions and each node's record of its checks.
/// Part of the idempotent install.
///
/// - `ferry.chunk_sum(table, after, through, limit)`: count, checksum and
///   last key (JSON) of the table's rows with `after < key <= through`
///   (either bound may be NULL), the first `limit` of them in key order
///   when `limit` is not NULL; the whole table when it has no key.
/// - `ferry.check_chunk(batch, table, after, through, rows, sum)`: on a
///   replica, records its figures for a range beside the master's.
pub const INSTALL: &str = r#"
CREATE TABLE IF NOT EXISTS ferry.checks (
    batch_id bigint NOT NULL,
    table_name text NOT NULL,
    after jsonb,
    through jsonb,
    master_rows bigint NOT NULL,
    master_sum numeric NOT NULL,
    rows bigint NOT NULL,
    sum numeric NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION ferry.chunk_sum(rel regclass, after jsonb, through jsonb, lim bigint,
    OUT rows bigint, OUT sum numeric, OUT last jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres' SET extra_float_digits = 1 SET bytea_output = 'hex' AS $f$
DECLARE
    shape jsonb := ferry.table_shape(rel);
    keys text;
    tkeys text;
    desc_keys text;
    own text;
    bound text := '';
    hash text := '(''x'' || substr(md5((t.*)::text), 1, 16))::bit(64)::bigint';
BEGIN
    SELECT string_agg(format('%I', k), ', '), string_agg(format('t.%I', k), ', '),
           string_agg(format('%I DESC', k), ', ')
      INTO keys, tkeys, desc_keys
      FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(shape->'key') = 'array'
                                          THEN shape->'key' ELSE '[]' END) k;
    own := CASE WHEN (shape->>'partitioned')::boolean THEN '' ELSE 'ONLY ' END
           || format('%I.%I', shape->>'schema', shape->>'name');
    IF keys IS NULL THEN
        EXECUTE format('SELECT count(*), coalesce(sum(%s::numeric), 0) FROM %s AS t', hash, own)
           INTO rows, sum;
        RETURN;
    END IF;
    IF after IS NOT NULL THEN
        bound := format(' AND (%s) > (SELECT %s FROM jsonb_populate_record(NULL::%s, $1))', tkeys, keys, rel);
    END IF;
    IF through IS NOT NULL THEN
        bound := bound || format(' AND (%s) <= (SELECT %s FROM jsonb_populate_record(NULL::%s, $2))', tkeys, keys, rel);
    END IF;
    EXECUTE format('WITH c AS (SELECT %s AS ferry_h, %s FROM %s AS t WHERE true%s%s) '
                   'SELECT count(*), coalesce(sum(ferry_h::numeric), 0), '
                   '(SELECT to_jsonb(z.*) FROM (SELECT %s FROM c ORDER BY %s LIMIT 1) z) FROM c',
                   hash, tkeys, own, bound,
                   CASE WHEN lim IS NULL THEN '' ELSE format(' ORDER BY %s LIMIT %s', tkeys, lim) END,
                   keys, desc_keys)
       INTO rows, sum, last USING after, through;
END
$f$;
CREATE OR REPLACE FUNCTION ferry.try_share_lock(rel regclass) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    EXECUTE format('LOCK TABLE %s IN ACCESS SHARE MODE NOWAIT', rel);
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END
$f$;
CREATE OR REPLACE FUNCTION ferry.chunk_on_master(rel regclass, after jsonb, lim bigint,
    OUT rows bigint, OUT sum numeric, OUT last jsonb)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    -- A cut holds its outboxes; a schema change holding the table waits
    -- for one of them: reading the table now would deadlock with it.
    IF ferry.try_share_lock(rel) THEN
        SELECT c.rows, c.sum, c.last INTO rows, sum, last FROM ferry.chunk_sum(rel, after, NULL, lim) c;
    END IF;
END
$f$;
CREATE OR REPLACE FUNCTION ferry.check_chunk(batch bigint, rel text, after jsonb, through jsonb,
    master_rows bigint, master_sum numeric) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    got record;
BEGIN
    SELECT * INTO got FROM ferry.chunk_sum(rel::regclass, after, through, NULL);
    INSERT INTO ferry.checks (batch_id, table_name, after, through, master_rows, master_sum, rows, sum)
    VALUES (batch, rel, after, through, master_rows, master_sum, got.rows, got.sum);
END
$f$;
"#;

/// On the master, in a cut's transaction: the next chunk of a table.
/// Parameters: the table's quoted name, the key it starts after (JSON
/// text, NULL for the table's start), the most rows. Returns `(rows
/// bigint, sum text, last key as JSON text)`, all NULL when a schema
/// change holds the table (the cut must not wait for it: the change waits
/// for the cut's outbox locks).
pub const CHUNK_ON_MASTER: &str = "SELECT rows, sum::text, last::text \
     FROM ferry.chunk_on_master(($1::text)::regclass, ($2::text)::jsonb, $3::bigint)";

/// On the master, in a cut's transaction, before reading a table's rows
/// for a repair: whether it can be read without waiting (see
/// [`CHUNK_ON_MASTER`]). Parameter: the table's quoted name.
pub const TRY_SHARE_LOCK: &str = "SELECT ferry.try_share_lock(($1::text)::regclass)";

/// On a replica, in a batch's transaction after its rows: records its
/// figures for a chunk beside the master's. Parameters (text): batch id,
/// the table's quoted name, after, through (JSON, NULL for none), the
/// master's rows and sum.
pub const CHECK_ON_REPLICA: &str = "SELECT ferry.check_chunk($1::bigint, $2, ($3::text)::jsonb, \
     ($4::text)::jsonb, $5::bigint, $6::numeric)";

/// On the master: about how many rows each table holds (planner
/// statistics, partitions included), to pack small tables into one chunk
/// and pace a pass. Parameter: the tables' quoted names (`text[]`).
/// Returns one `bigint[]`, in that order.
pub const ESTIMATE_ROWS: &str = "SELECT coalesce(array_agg(e.rows ORDER BY u.i), '{}') \
     FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i) \
     CROSS JOIN LATERAL (SELECT coalesce(sum(greatest(c.reltuples, \
         pg_catalog.pg_stat_get_live_tuples(c.oid), 0)), 0)::bigint AS rows \
       FROM pg_catalog.pg_partition_tree((u.t)::regclass) p \
       JOIN pg_catalog.pg_class c ON c.oid = p.relid) e";

/// On a replica, once its batch committed: the checks it recorded, taken.
/// Returns `(batch id, table, after, through, master rows, master sum,
/// rows, sum)`, texts but the counts.
pub const TAKE_CHECKS: &str = "DELETE FROM ferry.checks RETURNING batch_id::text, table_name, \
     coalesce(after::text, ''), coalesce(through::text, ''), master_rows::text, master_sum::text, \
     rows::text, sum::text";

/// The rows of a table in a key range: `after < key <= through`, either
/// bound NULL for none (`$1`, `$2`: keys as JSON text); every row of a
/// table without a key.
fn in_range(shape: &TableShape) -> String {
    let Some(key) = &shape.key else {
        return "true".into();
    };
    let keys = crate::quote::list(key.iter().map(String::as_str), "");
    let tkeys = crate::quote::list(key.iter().map(String::as_str), "t.");
    let bound = |p: &str| {
        format!(
            "(SELECT {keys} FROM pg_catalog.jsonb_populate_record(NULL::{}, ({p}::text)::jsonb))",
            shape.table.quoted()
        )
    };
    format!(
        "($1::text IS NULL OR ({tkeys}) > {}) AND ($2::text IS NULL OR ({tkeys}) <= {})",
        bound("$1"),
        bound("$2")
    )
}

/// On the master, in a cut's transaction: the master's rows of a key range
/// that `ferry repair` rewrites on a replica, into a batch table (`_op`
/// 'U'). Parameters: after, through (JSON text or NULL).
pub fn repair_rows(shape: &TableShape, temp: &str) -> String {
    let cols = crate::quote::list(shape.shipped_names(), "");
    let from = crate::quote::list(shape.shipped_names(), "t.");
    format!(
        "INSERT INTO {temp} (_op, {cols}) SELECT 'U', {from} FROM {} AS t WHERE {}",
        shape.own_rows(),
        in_range(shape)
    )
}

/// On a replica, in a batch's transaction: removes its rows of a key range
/// before the master's are inserted. Parameters: after, through (JSON text
/// or NULL).
pub fn repair_delete(shape: &TableShape) -> String {
    format!(
        "DELETE FROM {} AS t WHERE {}",
        shape.own_rows(),
        in_range(shape)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_parameters_and_names_are_quoted() {
        assert!(CHUNK_ON_MASTER.contains("$1") && CHUNK_ON_MASTER.contains("$3"));
        assert!(CHECK_ON_REPLICA.contains("$6"));
        assert!(INSTALL.contains("jsonb_populate_record(NULL::%s, $1)"));
        assert!(INSTALL.contains("format('%I', k)"));
        assert!(INSTALL.contains("SET TimeZone = 'UTC'"));
    }

    #[test]
    fn a_repair_names_its_range_by_parameters() {
        let s = crate::model::sample();
        let del = repair_delete(&s);
        assert!(del.starts_with(
            "DELETE FROM ONLY \"public\".\"Order Lines\" AS t WHERE ($1::text IS NULL"
        ));
        assert!(del.contains("(t.\"id\", t.\"order_id\") <= (SELECT \"id\", \"order_id\" FROM pg_catalog.jsonb_populate_record(NULL::\"public\".\"Order Lines\", ($2::text)::jsonb))"));
        let rows = repair_rows(&s, "pg_temp.r");
        assert!(rows.starts_with(
            "INSERT INTO pg_temp.r (_op, \"id\", \"order_id\", \"qty\") SELECT 'U', t.\"id\""
        ));
        let keyless = TableShape { key: None, ..s };
        assert!(repair_delete(&keyless).ends_with("WHERE true"));
    }
}
