//! Capture, generated in the database: a typed outbox per table and
//! statement-level triggers with transition tables that copy every changed
//! row into it, inside the writing transaction.
//!
//! The generator is a PL/pgSQL function, `ferry.capture_table`, so that the
//! DDL event trigger (see [`crate::ddl`]) can run it inside the very
//! transaction that creates or alters a table: a table created and filled
//! in one transaction is captured from its first row, and an `ALTER TABLE
//! … ADD COLUMN` followed by an `UPDATE` of that column in the same
//! transaction captures the new column. The batcher runs the same function
//! at start for every replicated table.
//!
//! The outbox is positional: its data columns are named `a<attnum>` after
//! the table's columns (generated ones included, never shipped) in the same
//! order, and the triggers insert `n.*`. So the trigger functions never
//! depend on the columns; when the table gains, loses or retypes a column,
//! the outbox is reconciled by attribute number (a rename needs nothing).
//!
//! Every body that writes an outbox also makes sure its table is named in
//! `ferry.touched` for the transaction, so that the batcher's cut and
//! housekeeping visit the outboxes that hold something instead of all of
//! them (an idle tick costs the same with 4 tables or 2,000). A row there
//! costs a statement inside the writer's transaction (one per table cost
//! TPC-B through Ferry about 15 %, `benchmarks/TOUCHED.md`), so the first
//! table a transaction writes is named together with the tables its
//! session wrote lately (up to 16, kept in the session setting
//! `ferry.recent_tables`): a session that writes the same tables
//! transaction after transaction writes one row per transaction. Naming a
//! table that was not written costs the cut an empty read of its outbox;
//! a table not named would never ship, so one outside the list gets a row
//! of its own.
//!
//! The triggers fire for every path a row can change by (functions,
//! cascades, COPY, sessions that bypass the proxy), and not at all in apply
//! sessions, which run with `session_replication_role = replica`.

/// SQLSTATE for an UPDATE or DELETE refused on a table without a key.
pub const REFUSED: &str = "55000";

/// Installs (or refreshes) capture for one table. Parameter: the quoted
/// qualified table name. Returns the table's shape before the call (JSON
/// text, NULL if it was not captured yet).
pub const INSTALL_TABLE: &str = "SELECT ferry.capture_table(($1::text)::regclass)::text";

/// Of the given tables (quoted names, `text[]`), those whose capture is
/// not current (see `ferry.capture_current`), in order: what an install
/// passes to [`INSTALL_TABLE`], one table at a time.
pub const STALE: &str = "SELECT u.t FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS u(t, i) \
     WHERE NOT coalesce(ferry.capture_current(pg_catalog.to_regclass(u.t)), false) ORDER BY u.i";

/// Set before a session installs capture table by table: each install
/// waits at most this long for a table's writers (rather than queue behind
/// a long transaction and every writer after it). The event triggers do
/// not fire for the session's own DDL (they are enabled for the origin
/// role only): each would have returned at once for Ferry's own role
/// (the guard) or its marked session (the DDL log), after PostgreSQL had
/// collected the commands for it, a dozen statements per table.
///
/// Each table's install commits without waiting for its WAL to reach disk
/// (`synchronous_commit = off`): a few thousand tables would otherwise
/// cost a few thousand flushes, one after the other. Nothing relies on
/// an install before a later commit that does wait: WAL is flushed in
/// order, so the first application write acknowledged on a table (or
/// the flush at the end of the session, [`INSTALL_SESSION_END`]) makes its
/// capture durable with it; a crash before that loses the install, never
/// the capture of an acknowledged write, and the next start installs it
/// again.
pub const INSTALL_SESSION: &str =
    "SET lock_timeout = '10s'; SET session_replication_role = replica; \
     SET synchronous_commit = off";

/// Undoes [`INSTALL_SESSION`] and waits for every install's WAL to be on
/// disk (a transaction that writes, committed with the server's own
/// `synchronous_commit`, flushes all the WAL before it).
pub const INSTALL_SESSION_END: &str = "RESET lock_timeout; RESET session_replication_role; \
     RESET synchronous_commit; BEGIN; SELECT pg_catalog.pg_current_xact_id(); COMMIT";

/// Makes a session's own schema changes invisible to the DDL event trigger
/// (Ferry's installs and reinstalls are not the application's DDL).
pub const QUIET: &str = "SET ferry.in_ddl = 'on'";

/// The functions behind capture; part of the idempotent install.
///
/// They are PL/pgSQL even where one query would do: a SQL function with a
/// `SET` clause is never inlined and plans its query again at every call
/// (which made `table_shape` most of what checking an empty table cost the
/// background check), while PL/pgSQL keeps its plans for the session.
///
/// - `ferry.stem(schema, name)`: the stem of the names of a table's
///   objects, the same as [`crate::TableName::stem`] (FNV-1a of
///   `schema \0 name`).
/// - `ferry.replication_key(table)`: the primary key, else the narrowest
///   valid, plain, non-partial unique index whose columns are all NOT NULL;
///   NULL if none.
/// - `ferry.table_shape(table)`: name, columns and key as JSON, the form in
///   which the DDL log records a table before and after a change.
/// - `ferry.touch_code(stem, xid)`: the PL/pgSQL statement every trigger
///   body that writes an outbox runs after it (`xid`: an expression for
///   the transaction id, the body's `x` where it has one): unless the
///   table is named for the transaction already (the tables named so far
///   are kept in the transaction-local setting `ferry.touched`, each with
///   the transaction id, so a session-level value cannot stand in for
///   them), it calls `ferry.touch(stem, xid)`, which names it in
///   `ferry.touched` (the transaction's first table with the session's
///   recent ones). The cut reads the outboxes of the tables named there,
///   so an outbox row must never be written without it. `ferry.touch(stem)`
///   remains for triggers generated before version 7.
/// - `ferry.capture_fingerprint(shape, mode, members)`: what the triggers
///   installed for a table depend on, recorded in `ferry.capture`; a
///   different one means they are regenerated.
/// - `ferry.capture_current(table)`: whether the table's capture is as
///   `capture_table` would leave it (its first look, without locks), so
///   that a start over 2,000 unchanged tables asks once for all of them
///   ([`STALE`]) instead of calling the generator 2,000 times.
/// - `ferry.capture_table(table)`: reconciles the outbox with the table and
///   (re)creates the trigger functions and triggers when the key changed;
///   records the shape in `ferry.capture`; returns the previous shape. It
///   takes the table's lock first, in the order writers take theirs (table,
///   then outbox), so installing under load cannot deadlock with them.
pub const FUNCTIONS: &str = r#"
CREATE TABLE IF NOT EXISTS ferry.capture (
    table_name text PRIMARY KEY,
    fingerprint text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE ferry.capture ADD COLUMN IF NOT EXISTS relid oid;
ALTER TABLE ferry.capture ADD COLUMN IF NOT EXISTS shape jsonb;
CREATE UNIQUE INDEX IF NOT EXISTS capture_relid ON ferry.capture (relid);
CREATE OR REPLACE FUNCTION ferry.stem(sch text, nam text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    b bytea := convert_to(sch, 'UTF8') || '\x00'::bytea || convert_to(nam, 'UTF8');
    h bigint := 2166136261;
BEGIN
    FOR i IN 0 .. length(b) - 1 LOOP
        h := ((h # get_byte(b, i)) * 16777619) & 4294967295;
    END LOOP;
    RETURN left(lower(regexp_replace(sch || '.' || nam, '[^A-Za-z0-9]', '_', 'g')), 30)
        || '_' || lpad(to_hex(h), 8, '0');
END
$f$;
CREATE OR REPLACE FUNCTION ferry.replication_key(rel regclass) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
RETURN (
SELECT array_agg(a.attname::text ORDER BY k.ord)
  FROM pg_index i
 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = rel AND i.indisunique AND i.indisvalid AND i.indimmediate
   AND i.indpred IS NULL AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
 GROUP BY i.indexrelid, i.indisprimary
HAVING bool_and(a.attnotnull)
 ORDER BY i.indisprimary DESC, count(*), i.indexrelid
 LIMIT 1);
END
$f$;
CREATE OR REPLACE FUNCTION ferry.table_shape(rel regclass) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
RETURN (
SELECT jsonb_build_object(
         'schema', n.nspname::text,
         'name', c.relname::text,
         'columns', COALESCE((
             SELECT jsonb_agg(jsonb_build_object(
                        'attnum', a.attnum,
                        'name', a.attname::text,
                        'type', format_type(a.atttypid, a.atttypmod),
                        'generated', a.attgenerated <> '',
                        'identity', a.attidentity <> '') ORDER BY a.attnum)
               FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'::jsonb),
         'key', to_jsonb(ferry.replication_key(c.oid)),
         'partitioned', c.relkind = 'p')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = rel);
END
$f$;
CREATE OR REPLACE FUNCTION ferry.capture_mode(rel regclass) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
RETURN (
SELECT CASE WHEN c.relkind = 'p' THEN 'partitioned'
            WHEN EXISTS (SELECT FROM pg_inherits i WHERE i.inhparent = c.oid OR i.inhrelid = c.oid)
            THEN 'inherit'
            ELSE 'plain' END
  FROM pg_class c WHERE c.oid = rel);
END
$f$;
CREATE OR REPLACE FUNCTION ferry.partition_members(rel regclass) RETURNS oid[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
RETURN (
SELECT COALESCE(array_agg(t.relid::oid ORDER BY t.relid::oid), '{}')
  FROM pg_partition_tree(rel) t JOIN pg_class c ON c.oid = t.relid
 WHERE t.relid <> rel AND c.relkind IN ('r', 'p'));
END
$f$;
CREATE OR REPLACE FUNCTION ferry.former_members(rel regclass) RETURNS oid[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
RETURN (
-- Through the triggers' dependency on the function (pg_trigger has no
-- index on tgfoid: a scan of it per table made installing n tables cost n²).
SELECT COALESCE(array_agg(DISTINCT t.tgrelid), '{}')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_depend d
    ON d.refclassid = 'pg_proc'::regclass AND d.classid = 'pg_trigger'::regclass
   AND d.refobjid = to_regprocedure(format('ferry.%I()', 'c_' || ferry.stem(n.nspname, c.relname) || '_mtrn'))
  JOIN pg_trigger t ON t.oid = d.objid AND t.tgname = 'ferry_member_trn'
 WHERE c.oid = rel AND t.tgrelid <> ALL (ferry.partition_members(rel)));
END
$f$;
CREATE OR REPLACE FUNCTION ferry.capture_scope(rels oid[]) RETURNS oid[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
RETURN (
WITH RECURSIVE own AS (
    SELECT CASE WHEN c.relispartition THEN pg_partition_root(c.oid)::oid ELSE c.oid END AS oid
      FROM unnest(rels) u(oid) JOIN pg_class c ON c.oid = u.oid
), kin(oid) AS (
    SELECT oid FROM own
    UNION
    SELECT CASE WHEN k.oid = i.inhparent THEN i.inhrelid ELSE i.inhparent END
      FROM kin k JOIN pg_inherits i ON k.oid IN (i.inhparent, i.inhrelid)
      JOIN pg_class c ON c.oid = i.inhrelid
     WHERE NOT c.relispartition
)
SELECT COALESCE(array_agg(DISTINCT oid), '{}') FROM kin);
END
$f$;
DROP FUNCTION IF EXISTS ferry.touch_code(text);
CREATE OR REPLACE FUNCTION ferry.touch_code(stem text, xid text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
RETURN (
SELECT format(
    'IF pg_catalog.strpos(COALESCE(pg_catalog.current_setting(''ferry.touched'', true), ''''), '
    'pg_catalog.concat('','', %2$s, ''/'', %1$L, '','')) OPERATOR(pg_catalog.=) 0 THEN '
    'PERFORM ferry.touch(%1$L, %2$s); END IF; ', stem, xid));
END
$f$;
-- Called by the capture triggers (as their owner, with their search_path)
-- once per transaction and table not named yet. No SET clause (it would
-- cost each call a search_path switch): every name, type and operator in
-- it is qualified, and only its owner may call it, so no caller's
-- search_path can substitute anything, even in its compiled form.
CREATE OR REPLACE FUNCTION ferry.touch(stem pg_catalog.text, x pg_catalog.xid8) RETURNS void
LANGUAGE plpgsql AS $f$
DECLARE
    -- ',<xid>/<stem>,...': the tables named for this transaction.
    mine pg_catalog.text := COALESCE(pg_catalog.current_setting('ferry.touched', true), '');
    -- 'a,b,c': the tables the session wrote lately (at most 16).
    recent pg_catalog.text := COALESCE(pg_catalog.current_setting('ferry.recent_tables', true), '');
    known pg_catalog.bool := pg_catalog.strpos(pg_catalog.concat(',', recent, ','),
        pg_catalog.concat(',', stem, ',')) OPERATOR(pg_catalog.>) 0;
    names pg_catalog.text := stem;
BEGIN
    IF pg_catalog.strpos(mine, pg_catalog.concat(',', x, '/')) OPERATOR(pg_catalog.=) 0
       AND recent OPERATOR(pg_catalog.<>) '' THEN
        -- The transaction's first table: named together with the tables
        -- the session wrote lately, which it most likely writes again
        -- (one row per transaction rather than one per table).
        names := CASE WHEN known THEN recent ELSE pg_catalog.concat(recent, ',', stem) END;
    END IF;
    INSERT INTO ferry.touched (_xid, stems) VALUES (x, pg_catalog.string_to_array(names, ','));
    PERFORM pg_catalog.set_config('ferry.touched', pg_catalog.concat(
        CASE WHEN mine OPERATOR(pg_catalog.=) '' THEN ',' ELSE mine END,
        x, '/', pg_catalog.replace(names, ',', pg_catalog.concat(',', x, '/')), ','), true);
    IF NOT known THEN
        PERFORM pg_catalog.set_config('ferry.recent_tables', pg_catalog.array_to_string(
            (pg_catalog.string_to_array(pg_catalog.concat_ws(',',
                CASE WHEN recent OPERATOR(pg_catalog.<>) '' THEN recent END, stem), ','))[
            GREATEST(1, pg_catalog.array_length(pg_catalog.string_to_array(recent, ','), 1)
                        OPERATOR(pg_catalog.-) 14):], ','), false);
    END IF;
END
$f$;
REVOKE ALL ON FUNCTION ferry.touch(pg_catalog.text, pg_catalog.xid8) FROM PUBLIC;
-- The end of a TRUNCATE, for every captured table (see `_trn`).
CREATE OR REPLACE FUNCTION ferry.capture_truncate_end() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    PERFORM pg_catalog.set_config('ferry.truncating', COALESCE(pg_catalog.array_to_string(pg_catalog.array_remove(
        pg_catalog.string_to_array(pg_catalog.current_setting('ferry.truncating', true), ','),
        TG_RELID::pg_catalog.text), ','), ''), true);
    RETURN NULL;
END
$f$;
REVOKE ALL ON FUNCTION ferry.capture_truncate_end() FROM PUBLIC;
-- What triggers generated before version 7 call, until their table's
-- capture is generated again (at the next start).
CREATE OR REPLACE FUNCTION ferry.touch(stem text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    PERFORM ferry.touch(stem, pg_current_xact_id());
END
$f$;
CREATE OR REPLACE FUNCTION ferry.capture_fingerprint(shape jsonb, mode text, members oid[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    -- The table's own triggers (row triggers name its columns), and its
    -- partitions': a new partition needs only its own. The version bumps
    -- when the generated triggers change, so that every table gets new ones.
    -- v8: the functions are no longer PUBLIC's to execute (see
    -- capture_table).
    RETURN md5(concat_ws('|', 'v8', format('%I.%I', shape->>'schema', shape->>'name'),
               jsonb_typeof(shape->'key') = 'array', shape->>'key', mode,
               CASE WHEN mode <> 'plain' THEN shape->>'columns' END))
           || '/' || md5(members::text);
END
$f$;
CREATE OR REPLACE FUNCTION ferry.capture_current(rel regclass) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    outbox regclass := (SELECT to_regclass(format('ferry.%I', 'o_' || ferry.stem(n.nspname, c.relname)))
                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE c.oid = rel);
    now_shape jsonb;
    mode text;
    members oid[];
    fp text;
BEGIN
    -- A table never captured (every table at a first install) costs
    -- this look only.
    IF outbox IS NULL THEN
        RETURN false;
    END IF;
    now_shape := ferry.table_shape(rel);
    mode := ferry.capture_mode(rel);
    members := CASE WHEN mode = 'partitioned' THEN ferry.partition_members(rel) ELSE '{}' END;
    -- The fingerprint and outbox check of capture_table's first look.
    fp := ferry.capture_fingerprint(now_shape, mode, members);
    RETURN EXISTS (SELECT FROM ferry.capture p
                    WHERE p.relid = rel AND p.fingerprint = fp AND p.shape = now_shape)
       AND (SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
              FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped)
           IS NOT DISTINCT FROM
           (SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
              FROM pg_attribute a WHERE a.attrelid = outbox AND a.attnum > 3 AND NOT a.attisdropped)
       AND (SELECT array_agg('a' || a.attnum ORDER BY a.attnum)
              FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped)
           IS NOT DISTINCT FROM
           (SELECT array_agg(a.attname::text ORDER BY a.attnum)
              FROM pg_attribute a WHERE a.attrelid = outbox AND a.attnum > 3 AND NOT a.attisdropped);
END
$f$;
CREATE OR REPLACE FUNCTION ferry.capture_table(rel regclass) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning AS $f$
DECLARE
    now_shape jsonb;
    sch text;
    nam text;
    stem text;
    outbox text;
    display text;
    mode text;
    members oid[];
    locked boolean := false;
    fp text;
    pre jsonb;
    installed text;
    want text[];
    want_types text[];
    have text[];
    have_types text[];
    c record;
    nonempty boolean;
    quiet text := current_setting('ferry.in_ddl', true);
BEGIN
    -- A partition's rows are captured by its partitioned root.
    IF (SELECT k.relispartition FROM pg_class k WHERE k.oid = rel) THEN
        PERFORM ferry.capture_table(pg_partition_root(rel));
        RETURN NULL;
    END IF;
    PERFORM set_config('ferry.in_ddl', 'on', true);
    -- Read the table and its capture; when they do not line up, lock the
    -- table against schema changes and read again: a change that committed
    -- between the reads would otherwise be undone here (the outbox or the
    -- recorded shape put back to what the table was before it).
    LOOP
        now_shape := ferry.table_shape(rel);
        sch := now_shape->>'schema';
        nam := now_shape->>'name';
        stem := ferry.stem(sch, nam);
        outbox := format('ferry.%I', 'o_' || stem);
        display := sch || '.' || nam;
        mode := ferry.capture_mode(rel);
        members := CASE WHEN mode = 'partitioned' THEN ferry.partition_members(rel) ELSE '{}' END;
        fp := ferry.capture_fingerprint(now_shape, mode, members);
        SELECT p.shape, p.fingerprint INTO pre, installed FROM ferry.capture p
         WHERE p.relid = rel OR p.table_name = display
         ORDER BY p.relid = rel DESC LIMIT 1;
        SELECT array_agg('a' || a.attnum ORDER BY a.attnum),
               array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
          INTO want, want_types
          FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped;
        SELECT array_agg(a.attname::text ORDER BY a.attnum),
               array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
          INTO have, have_types
          FROM pg_attribute a
         WHERE a.attrelid = to_regclass(outbox) AND a.attnum > 3 AND NOT a.attisdropped;
        -- Recording a new shape (a renamed column) waits for the lock too:
        -- read unlocked, the shape could predate a change whose own shape
        -- is already recorded, and would overwrite it.
        IF installed IS NOT DISTINCT FROM fp AND to_regclass(outbox) IS NOT NULL
           AND have IS NOT DISTINCT FROM want AND have_types IS NOT DISTINCT FROM want_types
           AND (locked OR pre IS NOT DISTINCT FROM now_shape) THEN
            IF pre IS DISTINCT FROM now_shape THEN
                UPDATE ferry.capture SET shape = now_shape, relid = rel, table_name = display
                 WHERE relid = rel OR table_name = display;
            END IF;
            PERFORM set_config('ferry.in_ddl', COALESCE(quiet, ''), true);
            RETURN pre;
        END IF;
        EXIT WHEN locked;
        EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', rel);
        locked := true;
    END LOOP;
    IF to_regclass(outbox) IS NOT NULL
       AND EXISTS (SELECT FROM unnest(have) h WHERE h !~ '^a[0-9]+$') THEN
        -- An outbox of the layout before positional capture.
        EXECUTE format('SELECT EXISTS (SELECT FROM %s)', outbox) INTO nonempty;
        IF nonempty THEN
            RAISE EXCEPTION 'ferry: the outbox of table % holds unshipped rows in an older layout', display
                USING ERRCODE = '55000', HINT = 'Run the previous Ferry version until every replica has them.';
        END IF;
        EXECUTE format('DROP TABLE %s', outbox);
    END IF;
    IF to_regclass(outbox) IS NULL THEN
        -- With every column at once (one statement, not one per column).
        EXECUTE format('CREATE TABLE %s (_seq bigint NOT NULL, _xid xid8 NOT NULL, _op "char" NOT NULL%s) '
            'WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0)',
            outbox,
            COALESCE((SELECT string_agg(format(', %I %s', w.name, w.type), '' ORDER BY w.i)
                        FROM unnest(want, want_types) WITH ORDINALITY w(name, type, i)), ''));
        -- No `_xid` index yet: the batcher builds it once the outbox keeps
        -- many rows for a replica that is away (see `outbox_index.rs`).
        have := want;
        have_types := want_types;
    END IF;
    -- Reconcile by attribute number: drop what the table lost, retype what
    -- it retyped, add what it gained (new attributes come last in both).
    FOR c IN SELECT h.name FROM unnest(have) h(name)
              WHERE h.name <> ALL (COALESCE(want, '{}')) LOOP
        EXECUTE format('ALTER TABLE %s DROP COLUMN %I', outbox, c.name);
    END LOOP;
    FOR c IN SELECT w.name, w.type, h.type AS old
               FROM unnest(want, want_types) w(name, type)
               JOIN unnest(have, have_types) h(name, type) USING (name)
              WHERE w.type <> h.type LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s', outbox, c.name, c.type);
        EXCEPTION WHEN OTHERS THEN
            -- Unshipped values that do not convert are lost, loudly.
            RAISE WARNING 'ferry: unshipped values of %.% could not be converted from % to %',
                display, c.name, c.old, c.type;
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s USING NULL', outbox, c.name, c.type);
        END;
    END LOOP;
    FOR c IN SELECT w.name, w.type FROM unnest(want, want_types) WITH ORDINALITY w(name, type, i)
              WHERE w.name <> ALL (COALESCE(have, '{}')) ORDER BY w.i LOOP
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s', outbox, c.name, c.type);
    END LOOP;
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO have
      FROM pg_attribute a
     WHERE a.attrelid = to_regclass(outbox) AND a.attnum > 3 AND NOT a.attisdropped;
    IF have IS DISTINCT FROM want THEN
        RAISE EXCEPTION 'ferry: the outbox of table % does not line up with the table (% vs %)',
            display, have, want USING ERRCODE = 'XX000';
    END IF;
    IF installed IS DISTINCT FROM fp THEN
        PERFORM ferry.capture_triggers(rel, mode, now_shape, members,
            split_part(installed, '/', 1) IS DISTINCT FROM split_part(fp, '/', 1));
        -- Fired as triggers only, where nobody's right to execute them is
        -- checked. Whoever may create a trigger must not attach one: fired
        -- from another table it would write this table's outbox with
        -- Ferry's rights, and the replicas would take rows the master
        -- never had. (CREATE OR REPLACE keeps a function's rights, so
        -- functions of earlier versions lose PUBLIC's here too.)
        FOR c IN SELECT p.oid::regprocedure AS f FROM pg_proc p
                  WHERE p.pronamespace = 'ferry'::regnamespace
                    AND p.proname = ANY (SELECT 'c_' || stem || '_' || op FROM unnest(ARRAY[
                        'trn', 'ins', 'upd', 'del', 'key', 'ref', 'rins', 'rupd', 'rdel', 'rref', 'mtrn']) op) LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', c.f);
        END LOOP;
        -- A partitioned table's row triggers are cloned onto each new
        -- partition by whoever creates or attaches it, which takes the
        -- right to execute their functions: the table's owner (who alone
        -- may add partitions) keeps it, for its own table's outbox only.
        IF mode = 'partitioned' THEN
            FOR c IN SELECT p.oid::regprocedure AS f, k.relowner::regrole AS owner
                       FROM pg_proc p, pg_class k
                      WHERE k.oid = rel AND p.pronamespace = 'ferry'::regnamespace
                        AND p.proname = ANY (SELECT 'c_' || stem || '_' || op
                                               FROM unnest(ARRAY['rins', 'rupd', 'rdel', 'ref']) op) LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', c.f, c.owner);
            END LOOP;
        END IF;
        -- Rows captured by triggers of a version that did not name their
        -- tables in ferry.touched (writers are locked out here) would
        -- never be cut: name them now.
        EXECUTE format('INSERT INTO ferry.touched (_xid, stems) SELECT DISTINCT o._xid, ARRAY[%1$L] FROM %2$s o '
                       'WHERE NOT EXISTS (SELECT FROM ferry.touched t WHERE t._xid = o._xid AND %1$L = ANY (t.stems))',
                       stem, outbox);
    END IF;
    DELETE FROM ferry.capture WHERE relid = rel OR table_name = display;
    INSERT INTO ferry.capture (table_name, fingerprint, relid, shape) VALUES (display, fp, rel, now_shape);
    PERFORM set_config('ferry.in_ddl', COALESCE(quiet, ''), true);
    RETURN pre;
END
$f$;
CREATE OR REPLACE FUNCTION ferry.capture_triggers(rel regclass, mode text, shape jsonb, members oid[], whole boolean)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning AS $f$
DECLARE
    sch text := shape->>'schema';
    nam text := shape->>'name';
    stem text := ferry.stem(sch, nam);
    outbox text := format('ferry.%I', 'o_' || stem);
    target text := format('%I.%I', sch, nam);
    display text := sch || '.' || nam;
    keyed boolean := jsonb_typeof(shape->'key') = 'array';
    -- One sequence value per statement (per row in row triggers): a
    -- statement never changes the same key twice, and statements of
    -- conflicting transactions are ordered by the row locks they wait
    -- for, so (key, _seq) orders every change. SECURITY DEFINER, so that
    -- any role that may write the table may capture into the outbox;
    -- every name the bodies resolve is schema-qualified, and their
    -- search_path is their own (see `definer`), so a caller's search_path
    -- cannot substitute a function, operator, type or table.
    -- The variables win over the table's columns of the same name (a
    -- column named s or x): columns are always qualified here.
    head text := E'#variable_conflict use_variable\nDECLARE s pg_catalog.int8 := pg_catalog.nextval(''ferry.capture_seq''::pg_catalog.regclass); '
                 'x pg_catalog.xid8 := pg_catalog.pg_current_xact_id(); captured pg_catalog.int8; BEGIN ';
    -- Names the table in ferry.touched, once per transaction.
    touch text := ferry.touch_code(stem, 'pg_catalog.pg_current_xact_id()');
    -- After a statement's INSERT into the outbox: names the table if the
    -- statement captured rows (a statement that changed none fires its
    -- statement triggers too); `x` holds the transaction id.
    touch_if_any text := 'GET DIAGNOSTICS captured = ROW_COUNT; IF captured > 0 THEN '
                         || ferry.touch_code(stem, 'x') || ' END IF; ';
    next_seq text := 'pg_catalog.nextval(''ferry.capture_seq''::pg_catalog.regclass), pg_catalog.pg_current_xact_id()';
    -- A deletion is recorded only for a key the table no longer holds at
    -- the end of the statement: a writable CTE that deletes a key and
    -- inserts it again fires its triggers in either order, and the insert
    -- is what stands.
    gone_old text;
    gone_row text;
    key_changed text;
    -- Column lists by name, in the root's attribute order, for partitions
    -- (whose own attribute numbers may differ).
    out_cols text;
    new_row text;
    out_key text;
    old_key text;
    only_kw text;
    fn text;
    m oid;
    t text;
    -- The bodies run with their owner's rights, so their search_path is
    -- fixed: an operator a caller's schema defined (an exact match for
    -- `=` or `>` earlier in the caller's path) must never run with those
    -- rights. After pg_catalog come the schemas of the key types' btree
    -- equality operators (a key of an extension's type compares with its
    -- own `=`; only a superuser creates an operator class). `%` doubled:
    -- it goes into a format string.
    definer text;
    -- Creates a trigger function: format(create_fn, name, body).
    create_fn text;
BEGIN
    SELECT pg_catalog.replace(concat_ws(', ', 'pg_catalog', string_agg(DISTINCT format('%I', n.nspname), ', '), 'pg_temp'), '%', '%%')
      INTO definer
      FROM jsonb_array_elements_text(CASE WHEN keyed THEN shape->'key' ELSE '[]'::jsonb END) k
      JOIN pg_attribute a ON a.attrelid = rel AND a.attname = k AND NOT a.attisdropped
      JOIN pg_type ty ON ty.oid = a.atttypid
      JOIN pg_opclass c ON c.opcmethod = (SELECT am.oid FROM pg_am am WHERE am.amname = 'btree')
                       AND c.opcdefault AND c.opcintype IN (ty.oid, ty.typbasetype)
      JOIN pg_amop o ON o.amopfamily = c.opcfamily AND o.amopstrategy = 3
                    AND o.amoplefttype = c.opcintype AND o.amoprighttype = c.opcintype
      JOIN pg_operator op ON op.oid = o.amopopr
      JOIN pg_namespace n ON n.oid = op.oprnamespace
     WHERE n.nspname <> 'pg_catalog';
    create_fn := 'CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
                 'SET search_path = ' || definer || ' AS %L';
    IF keyed THEN
        SELECT string_agg(format('t.%1$I = o.%1$I', k), ' AND ') INTO gone_old
          FROM jsonb_array_elements_text(shape->'key') k;
        SELECT string_agg(format('t.%1$I = OLD.%1$I', k), ' AND ') INTO gone_row
          FROM jsonb_array_elements_text(shape->'key') k;
        SELECT string_agg(format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', k), ' OR ') INTO key_changed
          FROM jsonb_array_elements_text(shape->'key') k;
    END IF;
    SELECT string_agg(format('%I', 'a' || (c->>'attnum')), ', ' ORDER BY (c->>'attnum')::int),
           string_agg(format('NEW.%I', c->>'name'), ', ' ORDER BY (c->>'attnum')::int)
      INTO out_cols, new_row
      FROM jsonb_array_elements(shape->'columns') c;
    SELECT string_agg(format('%I', 'a' || (c->>'attnum')), ', ' ORDER BY (c->>'attnum')::int),
           string_agg(format('OLD.%I', c->>'name'), ', ' ORDER BY (c->>'attnum')::int)
      INTO out_key, old_key
      FROM jsonb_array_elements(shape->'columns') c
     WHERE shape->'key' ? (c->>'name');
    IF NOT whole THEN
        PERFORM ferry.capture_members(rel, shape, members);
        RETURN;
    END IF;
    -- Triggers change kind (row, statement) with the mode: replacing one
    -- of another kind on a partitioned table leaves its partitions' clones
    -- behind, so they are dropped first.
    FOR t IN SELECT g.tgname FROM pg_trigger g
              WHERE g.tgrelid = rel
                AND g.tgname = ANY (ARRAY['ferry_capture_ins', 'ferry_capture_upd', 'ferry_capture_del',
                                          'ferry_capture_key', 'ferry_capture_trn', 'ferry_capture_trn_end',
                                          'ferry_capture_rins', 'ferry_capture_rupd', 'ferry_capture_rdel',
                                          'ferry_capture_rref']) LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t, target);
    END LOOP;
    -- TRUNCATE: a marker (the replica empties the table there). The table
    -- also notes that it is being truncated, so that its partitions' own
    -- TRUNCATE triggers, which fire in the same statement, add nothing.
    EXECUTE format(create_fn,
        format('ferry.%I', 'c_' || stem || '_trn'),
        format('BEGIN INSERT INTO %s (_seq, _xid, _op) VALUES (%s, ''T''); %s'
               'PERFORM pg_catalog.set_config(''ferry.truncating'', pg_catalog.concat_ws('','', '
               'NULLIF(pg_catalog.current_setting(''ferry.truncating'', true), ''''), '
               'TG_RELID::pg_catalog.text), true); RETURN NULL; END', outbox, next_seq, touch));
    EXECUTE format('CREATE TRIGGER ferry_capture_trn BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()',
        target, format('ferry.%I', 'c_' || stem || '_trn'));
    EXECUTE format('CREATE TRIGGER ferry_capture_trn_end AFTER TRUNCATE ON %s '
        'FOR EACH STATEMENT EXECUTE FUNCTION ferry.capture_truncate_end()', target);
    IF NOT keyed THEN
        -- Inserts replicate; updates and deletes are refused.
        fn := format('ferry.%I', 'c_' || stem || '_ref');
        EXECUTE format(create_fn, fn,
            format('BEGIN RAISE EXCEPTION USING ERRCODE = ''55000'', '
                   'MESSAGE = pg_catalog.format(''cannot %%s table %%s because it has no primary key or unique not-null key'', '
                   'pg_catalog.lower(TG_OP), %L), '
                   'HINT = ''Ferry replicates updates and deletes by key: add a primary key, or exclude the table from replication.tables.''; END',
                   '"' || display || '"'));
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %s FOR EACH %s EXECUTE FUNCTION %s()',
            CASE WHEN mode = 'plain' THEN 'ferry_capture_upd' ELSE 'ferry_capture_rref' END, target,
            CASE WHEN mode = 'plain' THEN 'STATEMENT' ELSE 'ROW' END, fn);
    END IF;
    IF mode = 'plain' THEN
        -- Statement triggers with transition tables: the cheap path.
        fn := format('ferry.%I', 'c_' || stem || '_ins');
        EXECUTE format(create_fn, fn,
            format('%s INSERT INTO %s SELECT s, x, ''U'', n.* FROM ferry_new n; %s RETURN NULL; END', head, outbox, touch_if_any));
        EXECUTE format('CREATE TRIGGER ferry_capture_ins AFTER INSERT ON %s '
            'REFERENCING NEW TABLE AS ferry_new FOR EACH STATEMENT EXECUTE FUNCTION %s()', target, fn);
        IF NOT keyed THEN
            RETURN;
        END IF;
        -- An UPDATE's new rows are captured as an INSERT's: one function
        -- for both (the one of versions before 7 goes).
        EXECUTE format('CREATE TRIGGER ferry_capture_upd AFTER UPDATE ON %s '
            'REFERENCING NEW TABLE AS ferry_new FOR EACH STATEMENT EXECUTE FUNCTION %s()', target, fn);
        EXECUTE format('DROP FUNCTION IF EXISTS %s()', format('ferry.%I', 'c_' || stem || '_upd'));
        fn := format('ferry.%I', 'c_' || stem || '_del');
        EXECUTE format(create_fn, fn,
            format('%s INSERT INTO %s SELECT s, x, ''D'', o.* FROM ferry_old o '
                   'WHERE NOT EXISTS (SELECT FROM ONLY %s t WHERE %s); %s RETURN NULL; END',
                   head, outbox, target, gone_old, touch_if_any));
        EXECUTE format('CREATE TRIGGER ferry_capture_del AFTER DELETE ON %s '
            'REFERENCING OLD TABLE AS ferry_old FOR EACH STATEMENT EXECUTE FUNCTION %s()', target, fn);
        -- An UPDATE that changes a key also deletes the old key. Only such
        -- rows fire this (the WHEN clause is evaluated in C), and row
        -- triggers fire before statement triggers, so the deletion takes
        -- the lower sequence number: keys that swap net correctly.
        fn := format('ferry.%I', 'c_' || stem || '_key');
        EXECUTE format(create_fn, fn,
            format('BEGIN IF NOT EXISTS (SELECT FROM ONLY %s t WHERE %s) THEN '
                   'INSERT INTO %s SELECT %s, ''D'', OLD.*; %s END IF; RETURN NULL; END',
                   target, gone_row, outbox, next_seq, touch));
        EXECUTE format('CREATE TRIGGER ferry_capture_key AFTER UPDATE ON %s '
            'FOR EACH ROW WHEN (%s) EXECUTE FUNCTION %s()', target, key_changed, fn);
        RETURN;
    END IF;
    -- Row triggers, for a table in an inheritance tree (its statement
    -- triggers would see its children's rows as its own; a row trigger
    -- fires on the table that holds the row) and for a partitioned table
    -- (PostgreSQL clones its row triggers onto every partition, now and
    -- later, so statements that name a partition are captured too; a row
    -- that moves to another partition fires the DELETE and INSERT row
    -- triggers, where no UPDATE trigger sees it, and a MERGE that moves
    -- rows leaves them out of every transition table). Columns are named,
    -- so a partition whose attribute numbers differ from the root's
    -- captures in the root's layout. Named apart from the statement
    -- triggers: a table attached as a partition keeps its own until this
    -- function runs after the ATTACH, and the clones must not collide.
    only_kw := CASE WHEN mode = 'inherit' THEN 'ONLY ' ELSE '' END;
    fn := format('ferry.%I', 'c_' || stem || '_rins');
    EXECUTE format(create_fn, fn,
        format('BEGIN INSERT INTO %s (_seq, _xid, _op, %s) VALUES (%s, ''U'', %s); %s RETURN NULL; END',
               outbox, out_cols, next_seq, new_row, touch));
    EXECUTE format('CREATE TRIGGER ferry_capture_rins AFTER INSERT ON %s FOR EACH ROW EXECUTE FUNCTION %s()', target, fn);
    IF NOT keyed THEN
        IF mode = 'partitioned' THEN
            PERFORM ferry.capture_members(rel, shape, members);
        END IF;
        RETURN;
    END IF;
    fn := format('ferry.%I', 'c_' || stem || '_rupd');
    EXECUTE format(create_fn, fn,
        format('BEGIN IF (%s) AND NOT EXISTS (SELECT FROM %s%s t WHERE %s) THEN '
               'INSERT INTO %s (_seq, _xid, _op, %s) VALUES (%s, ''D'', %s); END IF; '
               'INSERT INTO %s (_seq, _xid, _op, %s) VALUES (%s, ''U'', %s); %s RETURN NULL; END',
               key_changed, only_kw, target, gone_row, outbox, out_key, next_seq, old_key,
               outbox, out_cols, next_seq, new_row, touch));
    EXECUTE format('CREATE TRIGGER ferry_capture_rupd AFTER UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION %s()', target, fn);
    fn := format('ferry.%I', 'c_' || stem || '_rdel');
    EXECUTE format(create_fn, fn,
        format('BEGIN IF NOT EXISTS (SELECT FROM %s%s t WHERE %s) THEN '
               'INSERT INTO %s (_seq, _xid, _op, %s) VALUES (%s, ''D'', %s); %s END IF; RETURN NULL; END',
               only_kw, target, gone_row, outbox, out_key, next_seq, old_key, touch));
    EXECUTE format('CREATE TRIGGER ferry_capture_rdel AFTER DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s()', target, fn);
    IF mode <> 'partitioned' THEN
        RETURN;
    END IF;
    PERFORM ferry.capture_members(rel, shape, members);
END
$f$;
CREATE OR REPLACE FUNCTION ferry.capture_members(rel regclass, shape jsonb, members oid[])
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning AS $f$
DECLARE
    stem text := ferry.stem(shape->>'schema', shape->>'name');
    outbox text := format('ferry.%I', 'o_' || stem);
    display text := (shape->>'schema') || '.' || (shape->>'name');
    keyed boolean := jsonb_typeof(shape->'key') = 'array';
    next_seq text := 'pg_catalog.nextval(''ferry.capture_seq''::pg_catalog.regclass), pg_catalog.pg_current_xact_id()';
    touch text := ferry.touch_code(stem, 'pg_catalog.pg_current_xact_id()');
    out_cols text;
    old_cols text;
    trn_skip text;
    body text;
    m oid;
    t text;
BEGIN
    SELECT string_agg(format('%I', 'a' || (c->>'attnum')), ', ' ORDER BY (c->>'attnum')::int),
           string_agg(format('o.%I', c->>'name'), ', ' ORDER BY (c->>'attnum')::int)
      INTO out_cols, old_cols
      FROM jsonb_array_elements(shape->'columns') c;
    -- A TRUNCATE that names a partition fires that partition's statement
    -- triggers only (row triggers do not fire for it): the partition's
    -- rows are deleted on the replicas by key, unless a table above it is
    -- truncated by the same statement (which then marks itself, see
    -- `_trn`).
    FOREACH m IN ARRAY ferry.former_members(rel) LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS ferry_member_trn ON %s', m::regclass);
        EXECUTE format('DROP TRIGGER IF EXISTS ferry_member_trn_end ON %s', m::regclass);
    END LOOP;
    trn_skip := 'IF EXISTS (SELECT FROM pg_catalog.pg_partition_ancestors(TG_RELID) a '
                'WHERE a::pg_catalog.oid <> TG_RELID AND a::pg_catalog.oid::pg_catalog.text = ANY ('
                'pg_catalog.string_to_array(pg_catalog.current_setting(''ferry.truncating'', true), '',''))) THEN '
                'RETURN NULL; END IF; ';
    IF keyed THEN
        body := format('BEGIN %s EXECUTE pg_catalog.format(%L, TG_RELID::pg_catalog.regclass); %s'
                   'PERFORM pg_catalog.set_config(''ferry.truncating'', pg_catalog.concat_ws('','', '
                   'NULLIF(pg_catalog.current_setting(''ferry.truncating'', true), ''''), '
                   'TG_RELID::pg_catalog.text), true); RETURN NULL; END',
                   trn_skip,
                   format('INSERT INTO %s (_seq, _xid, _op, %s) SELECT %s, ''D'', %s FROM %%s o',
                          outbox, out_cols, next_seq, old_cols), touch);
    ELSE
        body := format('BEGIN %s RAISE EXCEPTION USING ERRCODE = ''55000'', MESSAGE = pg_catalog.format('
                   '''cannot truncate partition %%s of table %%s because the table has no primary key or unique not-null key'', '
                   'TG_RELID::pg_catalog.regclass, %L), '
                   'HINT = ''TRUNCATE the partitioned table, or add a primary key.''; END',
                   trn_skip, '"' || display || '"');
    END IF;
    EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
                   'SET search_path = pg_catalog, pg_temp AS %L',
                   format('ferry.%I', 'c_' || stem || '_mtrn'), body);
    FOREACH m IN ARRAY members LOOP
        -- What a table attached as a partition had as a table of its own
        -- (the root's clones are kept).
        FOR t IN SELECT g.tgname FROM pg_trigger g
                  WHERE g.tgrelid = m AND g.tgparentid = 0 AND g.tgname LIKE 'ferry\_capture\_%' LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', t, m::regclass);
        END LOOP;
        -- Created once per partition (the functions they call follow the
        -- root): adding a partition to a table with thousands costs one.
        IF NOT EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid = m AND g.tgname = 'ferry_member_trn') THEN
            EXECUTE format('CREATE TRIGGER ferry_member_trn BEFORE TRUNCATE ON %s '
                'FOR EACH STATEMENT EXECUTE FUNCTION %s()', m::regclass, format('ferry.%I', 'c_' || stem || '_mtrn'));
            EXECUTE format('CREATE TRIGGER ferry_member_trn_end AFTER TRUNCATE ON %s '
                'FOR EACH STATEMENT EXECUTE FUNCTION ferry.capture_truncate_end()', m::regclass);
        END IF;
    END LOOP;
END
$f$;
CREATE OR REPLACE FUNCTION ferry.reship(rel regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    shape jsonb := ferry.table_shape(rel);
    outbox text := format('ferry.%I', 'o_' || ferry.stem(shape->>'schema', shape->>'name'));
    x xid8 := pg_current_xact_id();
    cols text;
    vals text;
BEGIN
    SELECT string_agg(format('%I', 'a' || (c->>'attnum')), ', ' ORDER BY (c->>'attnum')::int),
           string_agg(format('t.%I', c->>'name'), ', ' ORDER BY (c->>'attnum')::int)
      INTO cols, vals
      FROM jsonb_array_elements(shape->'columns') c;
    -- A TRUNCATE marker, then every row: the replica empties the table
    -- and takes the master's rows, in the batch that carries the change.
    EXECUTE format('INSERT INTO %s (_seq, _xid, _op) VALUES ($1, $2, ''T'')', outbox)
        USING nextval('ferry.capture_seq'), x;
    EXECUTE format('INSERT INTO %s (_seq, _xid, _op, %s) SELECT $1, $2, ''U'', %s FROM %s%I.%I t',
                   outbox, cols, vals, CASE WHEN (shape->>'partitioned')::boolean THEN '' ELSE 'ONLY ' END,
                   shape->>'schema', shape->>'name')
        USING nextval('ferry.capture_seq'), x;
    INSERT INTO ferry.touched (_xid, stems) VALUES (x, ARRAY[ferry.stem(shape->>'schema', shape->>'name')]);
END
$f$;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_is_positional_and_names_are_quoted() {
        // Statement triggers copy whole rows; row triggers name columns.
        assert!(FUNCTIONS.contains("n.* FROM ferry_new n"));
        assert!(FUNCTIONS.contains("OLD.*"));
        assert!(FUNCTIONS.contains("format('NEW.%I', c->>'name')"));
        assert!(FUNCTIONS.contains("format('ferry.%I', 'o_' || stem)"));
        assert!(INSTALL_TABLE.contains("$1"));
    }

    #[test]
    fn a_deletion_is_captured_only_for_a_key_the_table_no_longer_holds() {
        assert!(FUNCTIONS.contains("WHERE NOT EXISTS (SELECT FROM ONLY %s t WHERE %s)"));
        assert!(FUNCTIONS.contains("SET client_min_messages = warning"));
    }
}
