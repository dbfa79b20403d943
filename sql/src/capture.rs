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
//! The triggers fire for every path a row can change by (functions,
//! cascades, COPY, sessions that bypass the proxy), and not at all in apply
//! sessions, which run with `session_replication_role = replica`.

/// SQLSTATE for an UPDATE or DELETE refused on a table without a key.
pub const REFUSED: &str = "55000";

/// Installs (or refreshes) capture for one table. Parameter: the quoted
/// qualified table name. Returns the table's shape before the call (JSON
/// text, NULL if it was not captured yet).
pub const INSTALL_TABLE: &str = "SELECT ferry.capture_table(($1::text)::regclass)::text";

/// Makes a session's own schema changes invisible to the DDL event trigger
/// (Ferry's installs and reinstalls are not the application's DDL).
pub const QUIET: &str = "SET ferry.in_ddl = 'on'";

/// The functions behind capture; part of the idempotent install.
///
/// - `ferry.stem(schema, name)`: the stem of the names of a table's
///   objects, the same as [`crate::TableName::stem`] (FNV-1a of
///   `schema \0 name`).
/// - `ferry.replication_key(table)`: the primary key, else the narrowest
///   valid, plain, non-partial unique index whose columns are all NOT NULL;
///   NULL if none.
/// - `ferry.table_shape(table)`: name, columns and key as JSON, the form in
///   which the DDL log records a table before and after a change.
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
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
SELECT array_agg(a.attname::text ORDER BY k.ord)
  FROM pg_index i
 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = rel AND i.indisunique AND i.indisvalid AND i.indimmediate
   AND i.indpred IS NULL AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
 GROUP BY i.indexrelid, i.indisprimary
HAVING bool_and(a.attnotnull)
 ORDER BY i.indisprimary DESC, count(*), i.indexrelid
 LIMIT 1
$f$;
CREATE OR REPLACE FUNCTION ferry.table_shape(rel regclass) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
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
         'key', to_jsonb(ferry.replication_key(c.oid)))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = rel
$f$;
CREATE OR REPLACE FUNCTION ferry.capture_table(rel regclass) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    now_shape jsonb;
    sch text;
    nam text;
    stem text;
    outbox text;
    target text;
    display text;
    keyed boolean;
    locked boolean := false;
    fp text;
    pre jsonb;
    installed text;
    want text[];
    want_types text[];
    have text[];
    have_types text[];
    c record;
    when_changed text;
    fn text;
    nonempty boolean;
    quiet text := current_setting('ferry.in_ddl', true);
BEGIN
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
        target := format('%I.%I', sch, nam);
        display := sch || '.' || nam;
        keyed := jsonb_typeof(now_shape->'key') = 'array';
        fp := md5(concat_ws('|', 'v2', target, keyed, now_shape->>'key'));
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
        EXECUTE format('CREATE TABLE %s (_seq bigint NOT NULL, _xid xid8 NOT NULL, _op "char" NOT NULL) '
            'WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0)',
            outbox);
        -- The cut reads only rows at or above the previous cut's xmin:
        -- with this index that is a range scan however large a backlog a
        -- down replica leaves behind.
        EXECUTE format('CREATE INDEX %I ON %s (_xid)', 'o_' || stem || '_xid', outbox);
        have := NULL;
        have_types := NULL;
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
        -- One sequence value per statement: a statement never changes the
        -- same key twice, and statements of conflicting transactions are
        -- ordered by the row locks they wait for, so (key, _seq) orders
        -- every change. SECURITY DEFINER, so that any role that may write
        -- the table may capture into the outbox; every name the bodies
        -- resolve is schema-qualified, so a caller's search_path cannot
        -- substitute a function, type or table.
        FOR c IN SELECT * FROM (VALUES ('ins', 'U', 'ferry_new'), ('upd', 'U', 'ferry_new'),
                                       ('del', 'D', 'ferry_old')) v(op, code, src) LOOP
            EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS %L',
                format('ferry.%I', 'c_' || stem || '_' || c.op),
                format('DECLARE s pg_catalog.int8 := pg_catalog.nextval(''ferry.capture_seq''::pg_catalog.regclass); '
                       'x pg_catalog.xid8 := pg_catalog.pg_current_xact_id(); '
                       'BEGIN INSERT INTO %s SELECT s, x, %L, n.* FROM %I n; RETURN NULL; END',
                       outbox, c.code, c.src));
        END LOOP;
        fn := format('ferry.%I', 'c_' || stem || '_trn');
        EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS %L', fn,
            format('BEGIN INSERT INTO %s (_seq, _xid, _op) VALUES (pg_catalog.nextval(''ferry.capture_seq''::pg_catalog.regclass), '
                   'pg_catalog.pg_current_xact_id(), ''T''); RETURN NULL; END', outbox));
        EXECUTE format('CREATE OR REPLACE TRIGGER ferry_capture_ins AFTER INSERT ON %s '
            'REFERENCING NEW TABLE AS ferry_new FOR EACH STATEMENT EXECUTE FUNCTION %s()',
            target, format('ferry.%I', 'c_' || stem || '_ins'));
        IF keyed THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER ferry_capture_upd AFTER UPDATE ON %s '
                'REFERENCING NEW TABLE AS ferry_new FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                target, format('ferry.%I', 'c_' || stem || '_upd'));
            EXECUTE format('CREATE OR REPLACE TRIGGER ferry_capture_del AFTER DELETE ON %s '
                'REFERENCING OLD TABLE AS ferry_old FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                target, format('ferry.%I', 'c_' || stem || '_del'));
            -- An UPDATE that changes a key also deletes the old key. Only
            -- such rows fire this (the WHEN clause is evaluated in C), and
            -- row triggers fire before statement triggers, so the deletion
            -- takes the lower sequence number: keys that swap net correctly.
            SELECT string_agg(format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', k), ' OR ')
              INTO when_changed FROM jsonb_array_elements_text(now_shape->'key') k;
            fn := format('ferry.%I', 'c_' || stem || '_key');
            EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS %L', fn,
                format('BEGIN INSERT INTO %s SELECT pg_catalog.nextval(''ferry.capture_seq''::pg_catalog.regclass), '
                       'pg_catalog.pg_current_xact_id(), ''D'', OLD.*; RETURN NULL; END', outbox));
            EXECUTE format('CREATE OR REPLACE TRIGGER ferry_capture_key AFTER UPDATE ON %s '
                'FOR EACH ROW WHEN (%s) EXECUTE FUNCTION %s()', target, when_changed, fn);
        ELSE
            fn := format('ferry.%I', 'c_' || stem || '_ref');
            EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS %L', fn,
                format('BEGIN RAISE EXCEPTION USING ERRCODE = ''55000'', '
                       'MESSAGE = pg_catalog.format(''cannot %%s table %%s because it has no primary key or unique not-null key'', '
                       'pg_catalog.lower(TG_OP), %L), '
                       'HINT = ''Ferry replicates updates and deletes by key: add a primary key, or exclude the table from replication.tables.''; END',
                       '"' || display || '"'));
            EXECUTE format('CREATE OR REPLACE TRIGGER ferry_capture_upd BEFORE UPDATE OR DELETE ON %s '
                'FOR EACH STATEMENT EXECUTE FUNCTION %s()', target, fn);
            EXECUTE format('DROP TRIGGER IF EXISTS ferry_capture_del ON %s', target);
            EXECUTE format('DROP TRIGGER IF EXISTS ferry_capture_key ON %s', target);
        END IF;
        EXECUTE format('CREATE OR REPLACE TRIGGER ferry_capture_trn BEFORE TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION %s()', target, format('ferry.%I', 'c_' || stem || '_trn'));
    END IF;
    DELETE FROM ferry.capture WHERE relid = rel OR table_name = display;
    INSERT INTO ferry.capture (table_name, fingerprint, relid, shape) VALUES (display, fp, rel, now_shape);
    PERFORM set_config('ferry.in_ddl', COALESCE(quiet, ''), true);
    RETURN pre;
END
$f$;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_is_positional_and_names_are_quoted() {
        assert!(FUNCTIONS.contains("n.* FROM %I n"));
        assert!(FUNCTIONS.contains("OLD.*"));
        assert!(FUNCTIONS.contains("format('ferry.%I', 'o_' || stem)"));
        assert!(INSTALL_TABLE.contains("$1"));
    }
}
