//! The master side of a batch: materialise the changes between two
//! snapshots into local temporary tables, netted per key, and COPY them out.

use crate::model::TableShape;
use crate::quote::list;

/// The per-session temporary batch table (created once; emptied by the
/// transaction that fills it). Used on the master and, with the same
/// shape, on every replica.
///
/// Not `ON COMMIT DELETE ROWS`: truncating at every commit costs about
/// 1.4 ms per table per transaction here (a batch of 20 rows applied in 2.5
/// ms instead of 1.1). Whoever fills the table empties it in the same
/// transaction with [`empty`], or with [`truncate_temp`] when [`Emptying`]
/// says so, so that deleted rows do not pile up.
pub fn create_temp(shape: &TableShape) -> String {
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS {} (_op \"char\" NOT NULL, {})",
        shape.table.batch_temp(),
        shape.column_defs()
    )
}

/// The cutting session's settings. Generic plans: planning the
/// materialise statements anew at every cut (a custom plan for each
/// previous-cut snapshot) cost more than running them — about 0.3 ms per
/// table per cut, most of a synchronous commit's cut. With sequential scans
/// off the generic plans read the outbox through its `_xid` index from the
/// previous cut's xmin, whatever its size, which is what a custom plan
/// chose for a small window. JIT off: the cost penalty of a sequential
/// scan that remains the only way (COPY and DELETE of a batch table) would
/// otherwise make every such statement JIT-compile, 15 ms each.
/// `ferry.in_ddl` keeps the session's own statements out of the
/// schema-change log.
pub const CUT_SESSION_SETUP: &str = "SET application_name = 'ferry batcher'; \
     SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; SET jit = off; \
     SET ferry.in_ddl = 'on';";

/// Empties a batch table at the end of the transaction that filled it
/// (a rolled-back transaction's rows go with it).
pub fn empty(shape: &TableShape) -> String {
    format!("DELETE FROM {}", shape.table.batch_temp())
}

/// Empties a batch table and gives back its space; costlier than
/// [`empty`] for a small batch, so run only when [`Emptying`] says so.
pub fn truncate_temp(shape: &TableShape) -> String {
    format!("TRUNCATE {}", shape.table.batch_temp())
}

/// How a session empties one batch table after each batch, rent or buy:
/// DELETE is cheap but leaves dead rows behind, which every later scan of
/// the table reads again (temporary tables are never vacuumed); TRUNCATE
/// costs about a millisecond whatever the size. DELETE until the dead rows
/// that the batches since the last TRUNCATE had to scan add up to
/// [`Emptying::DEAD_ROW_SCANS`], then TRUNCATE: a stream of single-row
/// batches truncates every ~128 batches, one of 1,000-row batches every 5.
/// (A fixed TRUNCATE every 256 batches let 1,000-row batches pile up
/// 256,000 dead rows and made their apply 3x slower.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Emptying {
    /// Dead rows in the table now.
    dead: u64,
    /// Dead rows scanned by the batches since the last TRUNCATE.
    scanned: u64,
}

impl Emptying {
    /// Dead-row scans that cost about what one TRUNCATE does (a scan of a
    /// dead row ~35 ns, a few scans per batch, a TRUNCATE ~1 ms).
    pub const DEAD_ROW_SCANS: u64 = 8_192;

    /// Records a batch that filled the table with `rows` rows; true when
    /// that batch should empty it with TRUNCATE rather than DELETE.
    pub fn truncate_after(&mut self, rows: u64) -> bool {
        self.scanned = self.scanned.saturating_add(self.dead);
        if self.scanned >= Self::DEAD_ROW_SCANS {
            *self = Self::default();
            true
        } else {
            self.dead = self.dead.saturating_add(rows);
            false
        }
    }

    /// Records that the table was truncated by other means.
    pub fn truncated(&mut self) {
        *self = Self::default();
    }
}

/// What a batch table holds, by operation, as [`materialise`] reports it:
/// the replica runs only the apply statements that have work (see
/// [`crate::apply::Kind`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ops {
    /// Current row images (`_op = 'U'`).
    pub upserts: u64,
    /// Deleted keys (`_op = 'D'`).
    pub deletes: u64,
    /// TRUNCATE markers (`_op = 'T'`, at most one).
    pub truncates: u64,
}

impl Ops {
    /// Every row of the batch table.
    pub fn rows(&self) -> u64 {
        self.upserts + self.deletes + self.truncates
    }
}

/// A batch table for one step of a batch that carries schema changes,
/// dropped at the end of the transaction. `name` is Ferry's (`ferry_step_N`).
pub fn create_step_temp(shape: &TableShape, name: &str) -> String {
    format!(
        "CREATE TEMP TABLE {} (_op \"char\" NOT NULL, {}) ON COMMIT DROP",
        step_temp(name),
        shape.column_defs()
    )
}

/// The qualified name of a step's batch table.
pub fn step_temp(name: &str) -> String {
    format!("pg_temp.{}", crate::quote::ident(name))
}

/// Streams any batch table out in binary.
pub fn copy_out_of(temp: &str) -> String {
    format!("COPY {temp} TO STDOUT (FORMAT binary)")
}

/// Empties the given batch tables inside the cut's transaction, so that
/// one cut can materialise the windows of several groups of replicas in
/// turn.
pub fn empty_all(shapes: &[&TableShape]) -> String {
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
/// inserted row. Parameter: previous cut. The INSERT alone, returning the
/// `_op` of each row it wrote; [`materialise_all`] runs every table's in
/// one statement.
///
/// If the table was truncated in the window, only its last TRUNCATE marker
/// and the changes after it count (the marker's key columns are NULL, so
/// it forms a group of its own; real keys are never NULL).
pub fn materialise(shape: &TableShape) -> String {
    let temp = shape.table.batch_temp();
    let cols = list(shape.shipped_names(), "");
    let from = shape.outbox_shipped();
    let outbox = shape.table.outbox();
    let since_truncate = format!(
        "_seq >= coalesce((SELECT max(_seq) FROM {outbox} WHERE {SINCE_CUT} AND _op = 'T'), 0)"
    );
    let insert = match shape.outbox_key() {
        Some(key) => format!(
            "INSERT INTO {temp} (_op, {cols}) \
             SELECT DISTINCT ON ({key}) _op, {from} FROM {outbox} \
             WHERE {SINCE_CUT} AND {since_truncate} ORDER BY {key}, _seq DESC"
        ),
        None => format!(
            "INSERT INTO {temp} (_op, {cols}) SELECT _op, {from} FROM {outbox} \
             WHERE {SINCE_CUT} AND {since_truncate} ORDER BY _seq"
        ),
    };
    format!("{insert} RETURNING _op")
}

/// The tables written in the window (`$1`: the previous cut), as the
/// stems `ferry.touched` names them (`text[]`): an expression.
fn touched_in_window() -> String {
    named_in_touched(SINCE_CUT)
}

/// The stems `ferry.touched` names in its rows that match `filter`, as an
/// array expression (a row names several in `stems`; one written by an
/// older capture, one in `stem`).
fn named_in_touched(filter: &str) -> String {
    format!(
        "ARRAY(SELECT DISTINCT named.stem FROM ferry.touched t, \
         pg_catalog.unnest(COALESCE(t.stems, ARRAY[t.stem])) AS named(stem) WHERE {filter})"
    )
}

/// Whether a cut could find anything, asked at a tick outside any
/// transaction (so an idle tick costs one small statement, whatever the
/// number of tables, and no cut): the tables written since the previous
/// cut (`$1`), whether schema changes wait in that window, and the
/// replicated sequences' positions (`$2`, `text[]`; an empty array reads
/// none). One row: `text[]` of stems, boolean, `bigint[]`.
pub fn probe() -> String {
    format!(
        "SELECT {}, {}, ARRAY({})",
        touched_in_window(),
        crate::ddl::WINDOW_HAS_CHANGES,
        crate::sequences::read("$2")
    )
}

/// Reads sequence positions (`$1`: regclass texts, `text[]`), in that
/// order, as one `bigint[]`.
pub fn read_sequences() -> String {
    format!("SELECT ARRAY({})", crate::sequences::read("$1"))
}

/// The first statement of a cut after its outbox locks, and so the one
/// whose snapshot *is* the cut: fills the batch tables of `shapes` — the
/// tables the cut expects to have been written — ([`materialise`]) and
/// reads what the cut needs besides, in one statement (a statement each
/// cost more in executor start-up and protocol than the work itself; a
/// synchronous commit waits for the cut).
///
/// Parameters: the previous cut (`$1`), the replicated sequences as
/// `text[]` (`$2`). Returns one row: the cut's snapshot as text; the
/// tables written in the window (`text[]` of stems: any not in `shapes`
/// are filled by [`materialise_more`]); whether schema changes wait in the
/// window (boolean; [`crate::ddl::IN_WINDOW`] reads them); each sequence's
/// last value (`bigint[]`, NULL for one never used or gone), read after
/// the snapshot was taken: at least every value the batch's transactions
/// used; then the counts (`bigint[]`, see [`counts_at`]). An array, not
/// columns: a row has at most 1,664 columns, and a window may hold more
/// than 554 tables.
pub fn materialise_set(shapes: &[&TableShape]) -> String {
    format!(
        "{}SELECT pg_current_snapshot()::text, {}, {}, ARRAY({}), {}",
        with_materialised(shapes),
        touched_in_window(),
        crate::ddl::WINDOW_HAS_CHANGES,
        crate::sequences::read("$2"),
        counts(shapes.len())
    )
}

/// The column of [`materialise_set`]'s row that holds the counts.
pub const COUNTS_COLUMN: usize = 4;

/// Where the `i`-th table's three counts (images, deletions, TRUNCATE
/// markers written, see [`Ops`]) start in a materialising statement's
/// counts array (0-based).
pub const fn counts_at(i: usize) -> usize {
    3 * i
}

/// Fills, later in a cut's transaction, the batch tables of tables written
/// in the window that [`materialise_set`] did not fill, after [`lock`] took
/// their outboxes (after the snapshot, unlike the others). Parameter: the
/// previous cut (`$1`). Returns one row: whether each outbox is still the
/// one the snapshot sees (false when a schema change rewrote one between
/// the snapshot and the lock: the cut must not conclude anything from
/// it), then the counts array, as [`materialise_set`] gives it.
pub fn materialise_more(shapes: &[&TableShape]) -> String {
    let outboxes: Vec<String> = shapes
        .iter()
        .map(|s| crate::quote::literal(&s.table.outbox()))
        .collect();
    format!(
        "{}SELECT (SELECT coalesce(bool_and(c.relfilenode = pg_catalog.pg_relation_filenode(c.oid)), false) \
         FROM pg_catalog.pg_class c WHERE c.oid = ANY (ARRAY[{}]::pg_catalog.regclass[])), {}",
        with_materialised(shapes),
        outboxes.join(", "),
        counts(shapes.len())
    )
}

/// The column of [`materialise_more`]'s row that holds the counts.
pub const MORE_COUNTS_COLUMN: usize = 1;

/// `WITH m0 AS (…), …` filling each table's batch table (empty for none).
fn with_materialised(shapes: &[&TableShape]) -> String {
    let ctes: Vec<String> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| format!("m{i} AS ({})", materialise(s)))
        .collect();
    if ctes.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", ctes.join(", "))
    }
}

/// `ARRAY[<images>, <deletions>, <truncates>, …]` over the materialised
/// tables, as `bigint[]`.
fn counts(tables: usize) -> String {
    let items: Vec<String> = (0..tables)
        .map(|i| {
            format!(
                "(SELECT count(*) FILTER (WHERE _op = 'U') FROM m{i}), \
                 (SELECT count(*) FILTER (WHERE _op = 'D') FROM m{i}), \
                 (SELECT count(*) FILTER (WHERE _op = 'T') FROM m{i})"
            )
        })
        .collect();
    format!("ARRAY[{}]::bigint[]", items.join(", "))
}

/// Locks outboxes for a cut's reads, without waiting (see [`begin_cut`]).
pub fn lock(shapes: &[&TableShape]) -> String {
    let outboxes: Vec<String> = shapes.iter().map(|s| s.table.outbox()).collect();
    format!(
        "LOCK TABLE {} IN ACCESS SHARE MODE NOWAIT",
        outboxes.join(", ")
    )
}

/// Whether an outbox is the one the reading transaction's snapshot sees
/// (no schema change rewrote it since); no row when it did not exist then
/// or does not now. Parameter: the outbox's qualified name.
pub const OUTBOX_AS_SEEN: &str = "SELECT c.relfilenode = pg_catalog.pg_relation_filenode(c.oid) \
     FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)";

/// The tables `ferry.touched` names (their outboxes may hold rows), with
/// the snapshot they were read in: the batcher's start. One row:
/// snapshot text, `text[]` of stems.
pub fn touched() -> String {
    format!(
        "SELECT pg_current_snapshot()::text, {}",
        named_in_touched("true")
    )
}

/// The tables written since a snapshot (`$1`), with the snapshot they
/// were read in (the next call's `$1`): how the housekeeping learns which
/// outboxes hold rows when no cut runs (every replica away or suspended).
/// One row: snapshot text, `text[]` of stems.
pub fn touched_since() -> String {
    format!(
        "SELECT pg_current_snapshot()::text, {}",
        touched_in_window()
    )
}

/// Forgets the tables written by transactions below the clean-up horizon
/// (their outbox rows went with [`cleanup`]). Parameter: the horizon.
pub const CLEANUP_TOUCHED: &str = "DELETE FROM ferry.touched WHERE _xid < ($1::text)::xid8";

/// Empties, in one statement, the batch tables `temps` names (by index
/// into `shapes`) and takes the batch id: the end of a cut before its
/// COMMIT (after the tables' COPY OUT, which goes out first). Returns the
/// id. No parameters.
pub fn finish_cut(shapes: &[TableShape], temps: &[usize]) -> String {
    let deletes: Vec<String> = temps
        .iter()
        .filter_map(|&i| shapes.get(i))
        .enumerate()
        .map(|(k, s)| format!("d{k} AS (DELETE FROM {})", s.table.batch_temp()))
        .collect();
    if deletes.is_empty() {
        return crate::schema::NEXT_BATCH_ID.to_string();
    }
    format!(
        "WITH {} {}",
        deletes.join(", "),
        crate::schema::NEXT_BATCH_ID
    )
}

/// One segment of a table's changes in a batch that carries schema
/// changes: those with `$2 < _seq < $3` (parameters: previous cut, bounds)
/// into a step table, in the shape the table had then. Columns the outbox
/// no longer has (`present` lists those it has) come out NULL, and every
/// column is cast to the type it had, since the outbox follows retypes.
pub fn materialise_step(shape: &TableShape, temp: &str, present: &[String]) -> String {
    let cols = list(shape.shipped_names(), "");
    let from = shape
        .shipped()
        .map(|c| {
            let name = format!("a{}", c.attnum);
            if present.contains(&name) {
                format!("{}::{}", crate::quote::ident(&name), c.type_sql)
            } else {
                format!("NULL::{}", c.type_sql)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let outbox = shape.table.outbox();
    let segment = "_seq > $2::bigint AND _seq < $3::bigint";
    let since_truncate = format!(
        "_seq >= coalesce((SELECT max(_seq) FROM {outbox} WHERE {SINCE_CUT} AND {segment} AND _op = 'T'), 0)"
    );
    let key = shape.key.as_ref().map(|key| {
        key.iter()
            .filter_map(|k| shape.columns.iter().find(|c| &c.name == k))
            .map(|c| format!("a{}", c.attnum))
            .filter(|n| present.contains(n))
            .map(|n| crate::quote::ident(&n))
            .collect::<Vec<_>>()
            .join(", ")
    });
    match key.filter(|k| !k.is_empty()) {
        Some(key) => format!(
            "INSERT INTO {temp} (_op, {cols}) \
             SELECT DISTINCT ON ({key}) _op, {from} FROM {outbox} \
             WHERE {SINCE_CUT} AND {segment} AND {since_truncate} ORDER BY {key}, _seq DESC"
        ),
        None => format!(
            "INSERT INTO {temp} (_op, {cols}) SELECT _op, {from} FROM {outbox} \
             WHERE {SINCE_CUT} AND {segment} AND {since_truncate} ORDER BY _seq"
        ),
    }
}

/// Opens a cut's transaction and locks the outboxes it expects to read,
/// first in it: `LOCK TABLE` takes no snapshot, so the snapshot that
/// follows sees every schema change that rewrote an outbox (capture
/// following a column's new type) before it, and none can rewrite one
/// until the cut ends. A rewrite is not MVCC-safe: an older snapshot would
/// find the rewritten outbox empty. (An outbox the cut finds written but
/// did not expect is locked after the snapshot, and checked, see
/// [`materialise_more`].) `NOWAIT`: a schema change holding an outbox
/// makes the cut fail with `55P03` at once (it tries again at the next
/// tick) rather than queue behind it or deadlock with it.
///
/// Sent with the cut's BEGIN as one simple query (one message, one
/// answer; neither takes a snapshot).
pub fn begin_cut(shapes: &[&TableShape]) -> String {
    let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ";
    if shapes.is_empty() {
        return begin.to_string();
    }
    format!("{begin}; {}", lock(shapes))
}

/// The data columns an outbox has now (`a<attnum>` names). Parameter: the
/// outbox's qualified name.
pub const OUTBOX_COLUMNS: &str = "SELECT coalesce(array_agg(attname::text ORDER BY attnum), '{}') \
     FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 3 AND NOT attisdropped";

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

/// Outbox rows not visible in a replica's position (its pending rows),
/// and the bytes they take. Parameter: the replica's snapshot. One row:
/// two `bigint`s.
pub fn pending(shape: &TableShape) -> String {
    format!(
        "SELECT count(*), coalesce(sum(pg_column_size(o.*)), 0)::bigint FROM {} o \
         WHERE NOT pg_visible_in_snapshot(o._xid, ($1::text)::pg_snapshot)",
        shape.table.outbox()
    )
}

/// Distinct keys among a replica's pending outbox rows (what a resume
/// ships at most, per table). Parameter: the replica's snapshot. For a
/// keyless table, its pending rows.
pub fn pending_keys(shape: &TableShape) -> String {
    let outbox = shape.table.outbox();
    let pending = "NOT pg_visible_in_snapshot(_xid, ($1::text)::pg_snapshot)";
    match shape.outbox_key() {
        Some(key) => format!(
            "SELECT count(*) FROM (SELECT DISTINCT {key} FROM {outbox} WHERE {pending} AND _op <> 'T') k"
        ),
        None => format!("SELECT count(*) FROM {outbox} WHERE {pending}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample;

    #[test]
    fn nets_per_key_in_capture_order() {
        let sql = materialise(&sample());
        assert!(sql.contains("DISTINCT ON (\"a1\", \"a2\")"));
        assert!(sql.contains("ORDER BY \"a1\", \"a2\", _seq DESC"));
        assert!(sql.contains("(_op, \"id\", \"order_id\", \"qty\") SELECT"));
        assert!(sql.contains("pg_visible_in_snapshot"));
    }

    #[test]
    fn one_statement_takes_the_whole_cut() {
        let mut other = sample();
        other.key = None;
        let (a, b) = (sample(), other);
        let sql = materialise_set(&[&a, &b]);
        assert!(sql.starts_with("WITH m0 AS (INSERT INTO"));
        assert!(sql.contains("m1 AS (INSERT INTO"));
        assert_eq!(sql.matches("RETURNING _op").count(), 2);
        assert_eq!(sql.matches("count(*) FILTER").count(), 6);
        assert!(sql.contains(
            "SELECT pg_current_snapshot()::text, ARRAY(SELECT DISTINCT named.stem FROM ferry.touched t"
        ));
        assert!(sql.contains("EXISTS (SELECT 1 FROM ferry.ddl_log"));
        assert!(sql.ends_with("(SELECT count(*) FILTER (WHERE _op = 'T') FROM m1)]::bigint[]"));
        assert_eq!(counts_at(1), 3);
        // No tables expected: the snapshot, what was written, the flag
        // and the sequences alone.
        let bare = materialise_set(&[]);
        assert!(bare
            .starts_with("SELECT pg_current_snapshot()::text, ARRAY(SELECT DISTINCT named.stem"));
        assert!(bare.ends_with("ORDER BY u.i), ARRAY[]::bigint[]"));
        // An idle tick asks the same, without a snapshot of its own to keep.
        assert!(
            probe().starts_with("SELECT ARRAY(SELECT DISTINCT named.stem FROM ferry.touched t, ")
        );
    }

    #[test]
    fn tables_found_written_later_are_locked_and_checked_for_a_rewrite() {
        let a = sample();
        let sql = materialise_more(&[&a]);
        assert!(sql.starts_with("WITH m0 AS (INSERT INTO"));
        assert!(sql.contains("c.relfilenode = pg_catalog.pg_relation_filenode(c.oid)"));
        assert!(sql.contains("ARRAY['ferry.\"o_"));
        assert!(lock(&[&a]).ends_with("IN ACCESS SHARE MODE NOWAIT"));
    }

    #[test]
    fn a_cut_ends_by_emptying_the_tables_it_filled_and_taking_the_id() {
        let shapes = [sample(), sample()];
        let sql = finish_cut(&shapes, &[1]);
        let refs: Vec<&TableShape> = shapes.iter().collect();
        assert!(sql.starts_with("WITH d0 AS (DELETE FROM pg_temp."));
        assert!(sql.ends_with("SELECT nextval('ferry.batch_ids')"));
        assert_eq!(finish_cut(&shapes, &[]), crate::schema::NEXT_BATCH_ID);
        assert_eq!(finish_cut(&shapes, &[0, 1]).matches("DELETE").count(), 2);
        assert!(begin_cut(&refs).contains("; LOCK TABLE ferry."));
        assert!(!begin_cut(&[]).contains("LOCK"));
    }

    #[test]
    fn steps_read_a_segment_in_the_shape_of_its_time() {
        let present = vec!["a1".to_string(), "a2".to_string()];
        let sql = materialise_step(&sample(), "pg_temp.s", &present);
        assert!(sql.contains("\"a1\"::bigint, \"a2\"::integer, NULL::numeric(10,2)"));
        assert!(sql.contains("_seq > $2::bigint AND _seq < $3::bigint"));
        assert!(sql.contains("DISTINCT ON (\"a1\", \"a2\")"));
    }

    #[test]
    fn keyless_tables_ship_every_row() {
        let mut s = sample();
        s.key = None;
        assert!(!materialise(&s).contains("DISTINCT"));
    }

    /// Batches until the first TRUNCATE, for a stream of equal batches.
    fn period(rows: u64) -> u64 {
        let mut e = Emptying::default();
        (1..=100_000).find(|_| e.truncate_after(rows)).unwrap_or(0)
    }

    #[test]
    fn big_batches_truncate_often_small_ones_rarely() {
        assert_eq!(period(1_000), 5);
        assert!((100..200).contains(&period(1)), "{}", period(1));
        assert!((30..60).contains(&period(10)), "{}", period(10));
        assert_eq!(period(100_000), 2);
        // After a TRUNCATE the count starts again.
        let mut e = Emptying::default();
        let first: Vec<bool> = (0..10).map(|_| e.truncate_after(1_000)).collect();
        assert_eq!(first.iter().filter(|&&t| t).count(), 2);
    }

    #[test]
    fn an_empty_batch_table_never_needs_a_truncate() {
        let mut e = Emptying::default();
        assert!((0..10_000).all(|_| !e.truncate_after(0)));
    }
}
