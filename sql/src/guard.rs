//! Capture that clients cannot switch off.
//!
//! A table owner may disable or drop the triggers on their table, and a
//! superuser may drop anything; either would make the replicas silently
//! miss rows. Two event triggers refuse it for everyone but Ferry's own
//! role (the owner of the `ferry` schema), inside the changing
//! transaction, so the change never happens:
//! - `ferry_guard` (`ddl_command_end`): a capture trigger (one whose
//!   function lives in `ferry`) left disabled (`DISABLE TRIGGER`, `ENABLE
//!   REPLICA TRIGGER`) on a table the command touched, or renamed;
//! - `ferry_guard_drop` and `ferry_keep_drop` (`sql_drop`): a capture
//!   trigger dropped by itself (not with its table), or anything in the
//!   `ferry` or `ferry_guard` schemas, or the schemas.
//!
//! What they cannot see (a superuser dropping or disabling the event
//! triggers themselves) the batcher finds with [`INTACT`] and repairs.
//! They run after Ferry's own DDL log trigger (event triggers fire in name
//! order), so the capture they check is the one the command left.

/// The guard functions and event triggers. Part of the idempotent
/// install, after [`crate::ddl::INSTALL`]. The drop guard is installed
/// twice, in `ferry` and in a schema of its own, `ferry_guard`: a `DROP
/// SCHEMA … CASCADE` takes the event triggers whose functions it drops
/// with it, so each schema's guard refuses the other's drop.
pub fn install() -> String {
    format!(
        "{}{}{}{TRIGGERS}",
        guard_ddl(),
        drop_guard("ferry"),
        drop_guard("ferry_guard")
    )
}

/// Whether the session is Ferry's own (its role owns the `ferry` schema),
/// inline in each guard so that none depends on a function another schema
/// holds.
const IS_FERRY: &str = "EXISTS (SELECT FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner \
     WHERE n.nspname = 'ferry' AND r.rolname = session_user)";

/// The schema, and the guard of disabled or renamed capture triggers.
fn guard_ddl() -> String {
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS ferry_guard;
REVOKE ALL ON SCHEMA ferry_guard FROM PUBLIC;
DROP FUNCTION IF EXISTS ferry.is_ferry();
CREATE OR REPLACE FUNCTION ferry.guard_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    bad text;
BEGIN
    IF {IS_FERRY} THEN
        RETURN;
    END IF;
    -- Ferry's triggers are those whose function lives in its schema.
    SELECT string_agg(DISTINCT format('%I on %s', t.tgname, t.tgrelid::regclass), ', ') INTO bad
      FROM pg_event_trigger_ddl_commands() c
      JOIN pg_trigger t ON t.tgrelid = c.objid
     WHERE c.classid = 'pg_class'::regclass
       AND t.tgfoid IN (SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'ferry'::regnamespace)
       AND t.tgenabled NOT IN ('O', 'A');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ferry: capture triggers cannot be disabled (%)', bad
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Rows written while they were off would never reach the replicas.',
                  HINT = 'Disable your own triggers by name instead of ALL or USER.';
    END IF;
    SELECT string_agg(format('%I on %s', t.tgname, t.tgrelid::regclass), ', ') INTO bad
      FROM pg_event_trigger_ddl_commands() c
      JOIN pg_trigger t ON t.oid = c.objid
     WHERE c.classid = 'pg_trigger'::regclass
       AND t.tgname NOT LIKE 'ferry\_%'
       AND t.tgfoid IN (SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'ferry'::regnamespace);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ferry: capture triggers cannot be renamed (%)', bad
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Ferry finds its triggers by name.';
    END IF;
END
$f$;
"#
    )
}

/// The drop guard, in `schema`: refuses dropping a capture trigger by
/// itself, or anything of Ferry's (either schema), for everyone but Ferry.
fn drop_guard(schema: &str) -> String {
    format!(
        r#"
CREATE OR REPLACE FUNCTION {schema}.guard_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    bad text;
BEGIN
    IF {IS_FERRY} OR current_setting('ferry.in_ddl', true) = 'on' THEN
        RETURN;
    END IF;
    SELECT string_agg(d.object_type || ' ' || d.object_identity, ', ') INTO bad
      FROM pg_event_trigger_dropped_objects() d
     WHERE (d.object_type = 'trigger' AND d.original
            AND (d.object_identity LIKE 'ferry\_capture\_% on %' OR d.object_identity LIKE 'ferry\_member\_% on %'))
        OR (d.object_type = 'schema' AND d.object_identity IN ('ferry', 'ferry_guard'))
        OR (d.schema_name IN ('ferry', 'ferry_guard') AND d.original);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ferry: Ferry''s capture cannot be dropped (%)', bad
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Rows written without it would never reach the replicas.',
                  HINT = 'Drop the table itself, or remove it from replication.tables.';
    END IF;
END
$f$;
"#
    )
}

const TRIGGERS: &str = r#"
DROP EVENT TRIGGER IF EXISTS ferry_guard;
DROP EVENT TRIGGER IF EXISTS ferry_guard_drop;
DROP EVENT TRIGGER IF EXISTS ferry_keep_drop;
CREATE EVENT TRIGGER ferry_guard ON ddl_command_end EXECUTE FUNCTION ferry.guard_ddl();
CREATE EVENT TRIGGER ferry_guard_drop ON sql_drop EXECUTE FUNCTION ferry_guard.guard_drop();
CREATE EVENT TRIGGER ferry_keep_drop ON sql_drop EXECUTE FUNCTION ferry.guard_drop();
"#;

/// What is not intact in the master's capture, one row per problem:
/// `(kind, object)`, kind one of `event trigger missing`, `event trigger
/// disabled`, `trigger disabled`, `triggers missing`. Ferry's event
/// triggers are checked whole; the captured tables' triggers a slice at a
/// time — up to `$2` tables after the table oid `$1` (0: from the first),
/// see [`INTACT_SLICE_END`] — so that a check costs the same with 4
/// tables or 2,000 (a sweep over 2,000 takes a few passes).
pub const INTACT: &str = r#"
WITH slice AS (
    SELECT c.relid FROM ferry.capture c
     WHERE c.relid IS NOT NULL AND c.relid > ($1::bigint)::oid
     ORDER BY c.relid LIMIT $2::bigint
)
SELECT 'event trigger missing', w.name
  FROM unnest(ARRAY['ferry_ddl', 'ferry_ddl_drop', 'ferry_rewrite', 'ferry_guard', 'ferry_guard_drop',
                     'ferry_keep_drop']) w(name)
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger e WHERE e.evtname = w.name)
UNION ALL
SELECT 'event trigger disabled', e.evtname::text
  FROM pg_catalog.pg_event_trigger e
 WHERE e.evtname LIKE 'ferry\_%' AND e.evtenabled NOT IN ('O', 'A')
UNION ALL
SELECT 'trigger disabled', format('%I on %s', t.tgname, t.tgrelid::regclass)
  FROM slice c JOIN pg_catalog.pg_trigger t ON t.tgrelid = c.relid
 WHERE (t.tgname LIKE 'ferry\_capture\_%' OR t.tgname LIKE 'ferry\_member\_%')
   AND t.tgenabled NOT IN ('O', 'A')
UNION ALL
SELECT 'triggers missing', c.relid::regclass::text
  FROM slice c
 WHERE EXISTS (SELECT FROM pg_catalog.pg_class k WHERE k.oid = c.relid)
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                    WHERE t.tgrelid = c.relid AND t.tgname LIKE 'ferry\_capture\_%')
"#;

/// Where the slice [`INTACT`] checked (same parameters) ends: the last
/// table oid in it, as a bigint; NULL when it held none (the next check
/// starts from the first table again).
pub const INTACT_SLICE_END: &str = "SELECT max(relid::bigint) FROM (SELECT c.relid FROM ferry.capture c \
     WHERE c.relid IS NOT NULL AND c.relid > ($1::bigint)::oid ORDER BY c.relid LIMIT $2::bigint) s";

/// Tables a capture check looks at per pass (see [`INTACT`]).
pub const INTACT_SLICE: i64 = 250;

/// Repairs what [`INTACT`] found that can be repaired in place: disabled
/// capture triggers and Ferry's event triggers enabled again, a table
/// whose triggers are missing captured anew. Returns how many things it
/// repaired. No parameters.
pub const REPAIR: &str = r#"
DO $ferry$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT t.tgname, t.tgrelid FROM ferry.capture c JOIN pg_catalog.pg_trigger t ON t.tgrelid = c.relid
              WHERE (t.tgname LIKE 'ferry\_capture\_%' OR t.tgname LIKE 'ferry\_member\_%')
                AND t.tgenabled NOT IN ('O', 'A') LOOP
        EXECUTE format('ALTER TABLE %s ENABLE TRIGGER %I', r.tgrelid::regclass, r.tgname);
    END LOOP;
    FOR r IN SELECT e.evtname FROM pg_catalog.pg_event_trigger e
              WHERE e.evtname LIKE 'ferry\_%' AND e.evtenabled NOT IN ('O', 'A') LOOP
        EXECUTE format('ALTER EVENT TRIGGER %I ENABLE', r.evtname);
    END LOOP;
    FOR r IN SELECT c.relid FROM ferry.capture c
              WHERE c.relid IS NOT NULL
                AND EXISTS (SELECT FROM pg_catalog.pg_class k WHERE k.oid = c.relid)
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                                 WHERE t.tgrelid = c.relid AND t.tgname LIKE 'ferry\_capture\_%') LOOP
        UPDATE ferry.capture SET fingerprint = 'repair' WHERE relid = r.relid;
        PERFORM ferry.capture_table(r.relid::regclass);
    END LOOP;
END
$ferry$
"#;

/// The server's clock, as text, for the record of a repair. No parameters.
pub const NOW: &str = "SELECT now()::text";
