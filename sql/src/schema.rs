//! The `ferry` schema every node holds.
//!
//! Idempotent: `ferry init` and `ferry run` execute it on every node.

/// Creates the schema, sequences, ledger, replica positions and the apply
/// guard function.
///
/// - `ferry.capture_seq` orders captured rows for netting; it has no cache,
///   so two transactions that touch the same key (and so serialise on its
///   row lock) get increasing values.
/// - `ferry.applied` is the replica's ledger: one row, the last batch applied
///   and the master snapshot it reached. It is updated in the same
///   transaction as the batch, so a batch is applied exactly once.
/// - `ferry.replicas` is the master's record of each replica's position, for
///   outbox clean-up and status across restarts.
/// - `ferry.cleaned` is the master's outbox clean-up horizon: rows of
///   transactions below it may be gone, so a replica whose position is
///   older cannot catch up by batches.
/// - `ferry.touched` names, per transaction, the tables whose outboxes it
///   wrote (`stems`: usually one row per transaction, see
///   [`crate::capture`]; `stem`, one table per row, is what triggers before
///   capture fingerprint v5 wrote, read until they are regenerated),
///   so that a cut reads the outboxes of the tables that changed, not every
///   table's; it is cleaned up with the outboxes.
/// - `ferry.node_state` is the node's own record (never replicated) of its
///   role, its state-priority and the cluster epoch it last saw; the epoch
///   is its fence (see [`crate::cluster`]).
/// - `ferry.begin_apply` is the first statement of every apply transaction:
///   it refuses a batch of an older epoch than the node's (FR004), one that
///   was already applied (FR001) or that does not start where the ledger
///   stands (FR002), which aborts the whole batch.
/// - Capture ([`crate::capture`]) and the DDL log ([`crate::ddl`]) follow.
/// - `USAGE` on the schema for everyone: the DDL event trigger runs as
///   whoever changes the schema and calls into it (the tables stay private).
pub const INSTALL: &str = r#"
CREATE SCHEMA IF NOT EXISTS ferry;
CREATE SEQUENCE IF NOT EXISTS ferry.capture_seq AS bigint CACHE 1;
CREATE SEQUENCE IF NOT EXISTS ferry.batch_ids AS bigint CACHE 1;
CREATE TABLE IF NOT EXISTS ferry.applied (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    origin text NOT NULL,
    batch_id bigint NOT NULL,
    snap pg_snapshot NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ferry.replicas (
    name text PRIMARY KEY,
    batch_id bigint NOT NULL,
    snap pg_snapshot NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE ferry.replicas ADD COLUMN IF NOT EXISTS resyncing boolean NOT NULL DEFAULT false;
ALTER TABLE ferry.replicas ADD COLUMN IF NOT EXISTS settled pg_snapshot;
ALTER TABLE ferry.replicas ADD COLUMN IF NOT EXISTS candidate pg_snapshot;
ALTER TABLE ferry.replicas ADD COLUMN IF NOT EXISTS candidate_at timestamptz;
ALTER TABLE ferry.replicas ADD COLUMN IF NOT EXISTS released_at timestamptz;
CREATE TABLE IF NOT EXISTS ferry.cleaned (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    horizon xid8 NOT NULL,
    cleaned_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ferry.touched (
    _xid xid8 NOT NULL,
    stem text,
    stems text[]
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0);
-- Every writing transaction inserts here: the table is altered only when
-- it lacks what this version writes (an ALTER takes its strongest lock,
-- and would queue every writer behind a long transaction).
DO $u$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'ferry.touched'::regclass
                    AND attname = 'stems' AND NOT attisdropped) THEN
        ALTER TABLE ferry.touched ADD COLUMN stems text[];
    END IF;
    IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'ferry.touched'::regclass
                AND attname = 'stem' AND attnotnull) THEN
        ALTER TABLE ferry.touched ALTER COLUMN stem DROP NOT NULL;
    END IF;
END $u$;
CREATE INDEX IF NOT EXISTS touched_xid ON ferry.touched (_xid);
CREATE TABLE IF NOT EXISTS ferry.node_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    node text NOT NULL,
    epoch bigint NOT NULL,
    state text NOT NULL,
    state_priority int NOT NULL,
    master text NOT NULL,
    forced boolean NOT NULL DEFAULT false,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ferry.quarantine (
    id bigserial PRIMARY KEY,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    table_name text NOT NULL,
    op text NOT NULL,
    xid xid8 NOT NULL,
    seq bigint NOT NULL,
    row_image jsonb
);
DROP FUNCTION IF EXISTS ferry.begin_apply(text, bigint, bigint, text);
CREATE OR REPLACE FUNCTION ferry.begin_apply(p_origin text, p_from bigint, p_to bigint, p_snap text, p_epoch bigint)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    cur bigint;
    fence bigint;
BEGIN
    SELECT epoch INTO fence FROM ferry.node_state;
    IF fence > p_epoch THEN
        RAISE EXCEPTION 'ferry: batch % of epoch % refused: this node is fenced at epoch %', p_to, p_epoch, fence
            USING ERRCODE = 'FR004';
    END IF;
    SELECT batch_id INTO cur FROM ferry.applied FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ferry: this replica has no ledger; run ferry init' USING ERRCODE = 'FR003';
    END IF;
    IF cur >= p_to THEN
        RAISE EXCEPTION 'ferry: batch % already applied (ledger at %)', p_to, cur USING ERRCODE = 'FR001';
    END IF;
    IF cur <> p_from THEN
        RAISE EXCEPTION 'ferry: ledger at batch % but batch % starts at %', cur, p_to, p_from
            USING ERRCODE = 'FR002';
    END IF;
    UPDATE ferry.applied
       SET origin = p_origin, batch_id = p_to, snap = p_snap::pg_snapshot, applied_at = now();
END
$f$;
DROP FUNCTION IF EXISTS ferry.end_apply(bigint);
GRANT USAGE ON SCHEMA ferry TO PUBLIC;
"#;

/// The install version a node's `ferry` schema carries (its comment; empty
/// when there is none). Parameters: none.
pub const INSTALLED_VERSION: &str =
    "SELECT coalesce(pg_catalog.obj_description(pg_catalog.to_regnamespace('ferry'), 'pg_namespace'), '')";

/// The comment that marks the `ferry` schema as installed at `version`,
/// as [`INSTALLED_VERSION`] reads it back.
pub fn installed_marker(version: &str) -> String {
    format!("ferry {version}")
}

/// Marks the `ferry` schema as installed at `version`, the last statement
/// of an install.
pub fn mark_installed(version: &str) -> String {
    format!(
        "COMMENT ON SCHEMA ferry IS {}",
        crate::quote::literal(&installed_marker(version))
    )
}

/// SQLSTATE raised by `ferry.begin_apply` for a batch already applied.
pub const ALREADY_APPLIED: &str = "FR001";
/// SQLSTATE raised by `ferry.begin_apply` when the batch does not follow the ledger.
pub const LEDGER_MISMATCH: &str = "FR002";

/// The master's current snapshot, as text. Parameters: none.
pub const CURRENT_SNAPSHOT: &str = "SELECT pg_current_snapshot()::text";

/// Next batch id. Parameters: none.
pub const NEXT_BATCH_ID: &str = "SELECT nextval('ferry.batch_ids')";

/// A replica's ledger. Returns `(batch_id, snap)`.
pub const READ_LEDGER: &str = "SELECT batch_id, snap::text FROM ferry.applied";

/// Starts a replica's ledger at a master snapshot if it has none.
/// Parameters: origin, snapshot text.
pub const SEED_LEDGER: &str = "INSERT INTO ferry.applied (origin, batch_id, snap) \
     VALUES ($1, 0, ($2::text)::pg_snapshot) ON CONFLICT (singleton) DO NOTHING";

/// Records a replica's position on the master. Parameters: name, batch id,
/// snapshot. Only a position recorded at least [`SETTLE`] ago becomes the
/// replica's `settled` one, which alone bounds the clean-up: a replica
/// that commits asynchronously (`synchronous_commit = off`) loses its last
/// batches in a crash, and must still find them in the outbox when it
/// returns. (A `candidate` position waits out the delay; the settled one
/// lags the latest by one to two delays; a position that went back — the
/// replica came back from a crash without its last batches — replaces
/// both at once.)
pub const RECORD_POSITION: &str = "INSERT INTO ferry.replicas AS r \
     (name, batch_id, snap, candidate, candidate_at) \
     VALUES ($1, $2, ($3::text)::pg_snapshot, ($3::text)::pg_snapshot, now()) \
     ON CONFLICT (name) DO UPDATE SET batch_id = EXCLUDED.batch_id, snap = EXCLUDED.snap, \
     settled = CASE WHEN r.resyncing THEN NULL \
         WHEN pg_snapshot_xmin(EXCLUDED.snap) < pg_snapshot_xmin(coalesce(r.settled, EXCLUDED.snap)) \
         THEN EXCLUDED.snap \
         WHEN r.candidate_at <= now() - interval '3 seconds' THEN r.candidate ELSE r.settled END, \
     candidate = CASE WHEN r.resyncing OR r.candidate_at IS NULL \
         OR r.candidate_at <= now() - interval '3 seconds' \
         OR pg_snapshot_xmin(EXCLUDED.snap) < pg_snapshot_xmin(r.candidate) \
         THEN EXCLUDED.snap ELSE r.candidate END, \
     candidate_at = CASE WHEN r.resyncing OR r.candidate_at IS NULL \
         OR r.candidate_at <= now() - interval '3 seconds' \
         OR pg_snapshot_xmin(EXCLUDED.snap) < pg_snapshot_xmin(r.candidate) \
         THEN now() ELSE r.candidate_at END, \
     resyncing = false, updated_at = now()";

/// How long a replica's recorded position waits before it bounds the
/// clean-up (see [`RECORD_POSITION`]): longer than an asynchronous commit
/// takes to reach the disk (three `wal_writer_delay`s, 600 ms by default).
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// Forgets a node removed from the cluster: its position (or the resync
/// pin a failover left for it) no longer holds the outbox clean-up back.
/// Parameter: name.
pub const FORGET_REPLICA: &str = "DELETE FROM ferry.replicas WHERE name = $1";

/// Batch ids continue above a replica's ledger: a master whose `ferry`
/// schema was dropped and installed again would otherwise restart them at
/// 1, and the replicas would refuse every batch as already applied.
/// Parameter: the replica's last applied batch id.
/// (A sequence restarted and not used since hands out its `last_value`
/// next: it counts as one below.)
pub const BATCH_IDS_AT_LEAST: &str = "SELECT setval('ferry.batch_ids', $1::bigint) \
     FROM ferry.batch_ids \
     WHERE CASE WHEN is_called THEN last_value ELSE last_value - 1 END < $1::bigint";

/// The batch id the master handed out last (0 when none was: a fresh
/// sequence reads `last_value` 1 before its first `nextval`, which made
/// every replica of a cluster that had cut nothing yet one batch behind in
/// `/status`). No parameters.
pub const LAST_BATCH_ID: &str =
    "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END \
     FROM ferry.batch_ids";

/// Replicas the master holds a position for that are not among the named
/// nodes (the configuration's): a node added at run time and not written
/// into the configuration, or one that left it (not one being copied by a
/// resync or an addition, which is not taken in yet). Parameters: node names.
/// Returns name and when its position was last recorded (text).
pub const UNCONFIGURED_REPLICAS: &str = "SELECT name, updated_at::text FROM ferry.replicas \
     WHERE NOT (name = ANY($1::text[])) AND NOT resyncing ORDER BY name";

/// Records the horizon below which the outbox is about to be cleaned up
/// (never lowered; unchanged, the row is not rewritten). Parameter: the
/// horizon xid8 as text.
pub const RECORD_CLEANED: &str = "INSERT INTO ferry.cleaned (horizon) VALUES (($1::text)::xid8) \
     ON CONFLICT (singleton) DO UPDATE SET horizon = EXCLUDED.horizon, cleaned_at = now() \
     WHERE ferry.cleaned.horizon < EXCLUDED.horizon";

/// Whether a replica at a master snapshot may lack changes the outbox no
/// longer holds: its snapshot's xmin is below the clean-up horizon.
/// Parameter: the snapshot as text. Returns one boolean.
pub const BEHIND_CLEANUP: &str = "SELECT EXISTS (SELECT FROM ferry.cleaned \
     WHERE horizon > pg_snapshot_xmin(($1::text)::pg_snapshot))";

/// The nodes outside the batcher's replicas whose resync pin holds the
/// outbox clean-up back (a failed master fenced out, a node being
/// resynchronised or added), the one that holds it furthest first, with
/// their pinned snapshot as text. Parameters: the replicas' names.
pub const PINNED_FOR_RESYNC: &str = "SELECT name, snap::text FROM ferry.replicas \
     WHERE resyncing AND NOT (name = ANY($1::text[])) \
     ORDER BY pg_snapshot_xmin(snap)";

/// The oldest settled replica position's xmin (the position recorded one
/// clean-up pass before the latest, see [`RECORD_POSITION`]): every outbox
/// row with an xid below it has reached every replica for good. Returns
/// one nullable text value. Parameters: names of the batcher's replicas.
/// Nodes being resynchronised (`resyncing`) hold the horizon back too, from
/// before their copy. Null unless every named replica has a settled
/// position.
/// A replica the master stopped keeping changes for (`released_at`, see
/// [`RELEASE_REPLICA`]) holds nothing back; with every replica released,
/// everything committed so far goes.
pub const CLEANUP_HORIZON: &str = "SELECT CASE WHEN count(*) FILTER (WHERE name = ANY($1::text[]) \
         AND (settled IS NOT NULL OR resyncing OR released_at IS NOT NULL)) \
     = cardinality($1::text[]) \
     THEN coalesce(min(pg_snapshot_xmin(CASE WHEN resyncing THEN snap ELSE settled END)) \
         FILTER (WHERE resyncing OR released_at IS NULL), \
         pg_snapshot_xmin(pg_current_snapshot()))::text END \
     FROM ferry.replicas WHERE name = ANY($1::text[]) OR resyncing";

/// The master stops keeping changes for an absent replica (what it kept
/// passed `[retention] max_bytes`): the clean-up no longer waits for it,
/// and it is refused batches until `ferry resync` (which clears the mark,
/// see [`crate::resync::PIN`]). Parameter: name. Returns whether it was
/// marked now.
pub const RELEASE_REPLICA: &str = "UPDATE ferry.replicas SET released_at = now() \
     WHERE name = $1 AND released_at IS NULL AND NOT resyncing";

/// The position the master recorded for a replica, and how many seconds
/// ago (recorded every housekeeping pass while it is connected: for one
/// that went away, every change kept for it is younger). Parameter:
/// name. Returns a text snapshot and a `float8`, or no row.
pub const RECORDED_POSITION: &str = "SELECT snap::text, \
     extract(epoch FROM now() - updated_at)::float8 FROM ferry.replicas WHERE name = $1";

/// The replicas the master no longer keeps changes for. Returns names.
pub const RELEASED_REPLICAS: &str =
    "SELECT name FROM ferry.replicas WHERE released_at IS NOT NULL AND NOT resyncing";

/// Replica apply session settings, run once per session.
///
/// The apply statements are prepared once per session and read only the
/// batch tables, whose size changes from batch to batch; without hash and
/// merge joins their cached plans stay key lookups into the real table,
/// whatever size the batch had when they were planned. JIT off: a large
/// batch's estimated cost would make its apply statements JIT-compile,
/// which costs more than these simple statements ever gain from it.
pub const APPLY_SESSION_SETUP: &str =
    "SET session_replication_role = replica; SET application_name = 'ferry apply'; \
     SET enable_hashjoin = off; SET enable_mergejoin = off; SET jit = off";

/// Starts and ends a batch's transaction (prepared in the apply session).
pub const APPLY_BEGIN: &str = "BEGIN";
pub const APPLY_COMMIT: &str = "COMMIT";

/// The ledger guard every apply transaction starts with. Parameters:
/// origin node, from batch id, batch id, snapshot, epoch (all text).
pub const BEGIN_APPLY: &str =
    "SELECT ferry.begin_apply($1, $2::bigint, $3::bigint, $4, $5::bigint)";

/// SQLSTATE raised by `ferry.begin_apply` for a batch of an older epoch.
pub const FENCED: &str = "FR004";
