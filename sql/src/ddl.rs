//! Schema changes: logged on the master by event triggers inside the
//! changing transaction, and shipped in the batch stream as ordered
//! barriers between row changes.
//!
//! Every DDL command (however it was run: through Ferry or not) fires
//! `ferry.on_ddl` at its end, in its transaction, which
//! - runs [`crate::capture`]'s generator for every replicated table the
//!   command created or altered, so capture follows the change at once;
//! - appends one row to `ferry.ddl_log` with a value of
//!   `ferry.capture_seq` taken after the command (so, for every table it
//!   locked, after every change made before it and before every change made
//!   after it), the transaction id, the client's statement text and
//!   `search_path`, and each touched table's shape before and after.
//!
//! The cut finds the log rows of the transactions it ships, splits the
//! changes of the touched tables at them, and the replica replays each
//! command's statement between the rows it separates. The triggers do not
//! fire in apply sessions (`session_replication_role = replica`), nor for
//! Ferry's own installs (`ferry.in_ddl`).

/// The log, the replication patterns the triggers consult, and the
/// triggers. Part of the idempotent install, after [`crate::capture::FUNCTIONS`].
pub const INSTALL: &str = r#"
CREATE TABLE IF NOT EXISTS ferry.ddl_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    tag text NOT NULL,
    object text NOT NULL,
    query text
);
ALTER TABLE ferry.ddl_log ADD COLUMN IF NOT EXISTS seq bigint;
ALTER TABLE ferry.ddl_log ADD COLUMN IF NOT EXISTS xid xid8;
ALTER TABLE ferry.ddl_log ADD COLUMN IF NOT EXISTS search_path text;
ALTER TABLE ferry.ddl_log ADD COLUMN IF NOT EXISTS replicate boolean NOT NULL DEFAULT false;
ALTER TABLE ferry.ddl_log ADD COLUMN IF NOT EXISTS tables jsonb NOT NULL DEFAULT '[]';
ALTER TABLE ferry.ddl_log ADD COLUMN IF NOT EXISTS settings jsonb NOT NULL DEFAULT '{}';
CREATE INDEX IF NOT EXISTS ddl_log_xid ON ferry.ddl_log (xid);
CREATE TABLE IF NOT EXISTS ferry.settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    include_schema text[] NOT NULL,
    include_table text[] NOT NULL,
    exclude_schema text[] NOT NULL,
    exclude_table text[] NOT NULL
);
CREATE OR REPLACE FUNCTION ferry.replicated(sch text, nam text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
RETURN (
SELECT COALESCE((
    SELECT EXISTS (SELECT FROM unnest(s.include_schema, s.include_table) p(ps, pt)
                    WHERE sch LIKE p.ps AND nam LIKE p.pt)
       AND NOT EXISTS (SELECT FROM unnest(s.exclude_schema, s.exclude_table) p(ps, pt)
                        WHERE sch LIKE p.ps AND nam LIKE p.pt)
      FROM ferry.settings s), false));
END
$f$;
CREATE OR REPLACE FUNCTION ferry.record_drop() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    found jsonb;
BEGIN
    IF current_setting('ferry.in_ddl', true) = 'on' THEN
        RETURN;
    END IF;
    SELECT jsonb_agg(jsonb_build_object('relid', d.objid, 'type', d.object_type,
                                        'schema', d.schema_name, 'name', d.object_name))
      INTO found
      FROM pg_event_trigger_dropped_objects() d
     WHERE d.object_type IN ('table', 'sequence', 'index', 'view', 'materialized view', 'foreign table')
       AND NOT d.is_temporary AND d.schema_name IS DISTINCT FROM 'ferry';
    PERFORM set_config('ferry.dropped',
        (COALESCE(NULLIF(current_setting('ferry.dropped', true), '')::jsonb, '[]') || COALESCE(found, '[]'))::text,
        true);
    IF EXISTS (SELECT FROM pg_event_trigger_dropped_objects() d WHERE d.is_temporary) THEN
        PERFORM set_config('ferry.dropped_temp', 'on', true);
    END IF;
END
$f$;
DROP FUNCTION IF EXISTS ferry.record_ddl(text, text, text);
CREATE OR REPLACE FUNCTION ferry.record_ddl(tag text, path text, query text, role text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    r record;
    rel oid;
    rels oid[] := '{}';
    objects text[] := '{}';
    tables jsonb := '[]';
    other boolean := false;
    skipped boolean := false;
    replicate boolean := false;
    pre jsonb;
    formers oid[];
    a record;
    -- Tables whose rows the replicas cannot compute themselves: they
    -- receive the master's, after the change.
    reship oid[] := '{}';
    dropped jsonb := COALESCE(NULLIF(current_setting('ferry.dropped', true), '')::jsonb, '[]');
BEGIN
    IF current_setting('ferry.in_ddl', true) = 'on' THEN
        RETURN;
    END IF;
    skipped := current_setting('ferry.dropped_temp', true) = 'on';
    -- Tables rewritten with a volatile default, or retyped with a USING
    -- expression (which may be volatile): each node would compute its own
    -- values (see `ferry.on_rewrite`).
    SELECT COALESCE(array_agg(DISTINCT CASE WHEN c.relispartition THEN pg_partition_root(c.oid)::oid ELSE c.oid END), '{}')
      INTO reship
      FROM unnest(string_to_array(NULLIF(current_setting('ferry.rewritten', true), ''), ',')) e
      JOIN pg_class c ON c.oid = split_part(e, ':', 1)::oid
     WHERE (split_part(e, ':', 2)::int & 2) <> 0
        OR ((split_part(e, ':', 2)::int & 4) <> 0 AND query ~* '\mUSING\M');
    PERFORM set_config('ferry.rewritten', '', true);
    PERFORM set_config('ferry.dropped', '', true);
    PERFORM set_config('ferry.dropped_temp', '', true);
    PERFORM set_config('ferry.in_ddl', 'on', true);
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        IF r.in_extension OR r.schema_name = 'ferry' OR r.schema_name LIKE 'pg\_temp%' THEN
            skipped := true;
            CONTINUE;
        END IF;
        objects := objects || (r.object_type || ' ' || r.object_identity);
        rel := CASE r.classid
            WHEN 'pg_class'::regclass THEN
                COALESCE((SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = r.objid), r.objid)
            WHEN 'pg_constraint'::regclass THEN
                (SELECT NULLIF(k.conrelid, 0) FROM pg_constraint k WHERE k.oid = r.objid)
            WHEN 'pg_trigger'::regclass THEN
                (SELECT t.tgrelid FROM pg_trigger t WHERE t.oid = r.objid)
            WHEN 'pg_rewrite'::regclass THEN
                (SELECT w.ev_class FROM pg_rewrite w WHERE w.oid = r.objid)
            WHEN 'pg_policy'::regclass THEN
                (SELECT p.polrelid FROM pg_policy p WHERE p.oid = r.objid)
            WHEN 'pg_attrdef'::regclass THEN
                (SELECT d.adrelid FROM pg_attrdef d WHERE d.oid = r.objid)
            ELSE NULL END;
        IF rel IS NULL THEN
            other := true;
        ELSIF rel <> ALL (rels) THEN
            rels := rels || rel;
        END IF;
    END LOOP;
    FOR r IN SELECT n.nspname::text AS sch, c.relname::text AS nam
               FROM unnest(rels) u(oid) JOIN pg_class c ON c.oid = u.oid
               JOIN pg_namespace n ON n.oid = c.relnamespace LOOP
        CONTINUE WHEN r.sch LIKE 'pg\_temp%' OR NOT ferry.replicated(r.sch, r.nam);
        replicate := true;
    END LOOP;
    -- Capture follows every table the command may have changed the
    -- capture of: a partition's root (a partition created, attached or
    -- detached), and the whole inheritance tree of a table in one (a
    -- column added to a parent is added to its children).
    FOR r IN SELECT c.oid, c.relkind, n.nspname::text AS sch, c.relname::text AS nam
               FROM unnest(ferry.capture_scope(rels)) u(oid) JOIN pg_class c ON c.oid = u.oid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition LOOP
        CONTINUE WHEN r.sch LIKE 'pg\_temp%' OR NOT ferry.replicated(r.sch, r.nam);
        replicate := true;
        formers := '{}';
        IF r.relkind = 'p' THEN
            formers := ferry.former_members(r.oid);
            -- A table attached as a partition stops being a table of its
            -- own: what it captured before ships before the ATTACH.
            FOR a IN DELETE FROM ferry.capture p WHERE p.relid = ANY (ferry.partition_members(r.oid))
                     RETURNING p.shape LOOP
                tables := tables || jsonb_build_array(jsonb_build_object('pre', a.shape, 'post', NULL));
            END LOOP;
        END IF;
        pre := ferry.capture_table(r.oid);
        tables := tables || jsonb_build_array(jsonb_build_object('pre', pre, 'post', ferry.table_shape(r.oid)));
        -- A column added with a default that is not a constant (now(),
        -- current_user): each node stores the value it computes when it
        -- runs the change. A table made by CREATE TABLE AS holds what its
        -- query gave on the master.
        IF tag IN ('CREATE TABLE AS', 'SELECT INTO')
           OR EXISTS (SELECT FROM pg_attrdef d
                       WHERE d.adrelid = r.oid AND NOT ferry.deterministic(d.adbin::text)
                         AND d.adnum NOT IN (SELECT (c->>'attnum')::int2 FROM jsonb_array_elements(pre->'columns') c)
                         AND pre IS NOT NULL) THEN
            reship := reship || r.oid;
        END IF;
        -- A detached partition becomes a table of its own.
        FOR a IN SELECT c.oid FROM unnest(formers) f(oid) JOIN pg_class c ON c.oid = f.oid
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE NOT c.relispartition AND ferry.replicated(n.nspname, c.relname) LOOP
            pre := ferry.capture_table(a.oid);
            tables := tables || jsonb_build_array(jsonb_build_object('pre', pre, 'post', ferry.table_shape(a.oid)));
        END LOOP;
    END LOOP;
    FOR r IN SELECT d FROM jsonb_array_elements(dropped) d LOOP
        objects := objects || ('drop ' || (r.d->>'type') || ' ' || (r.d->>'schema') || '.' || (r.d->>'name'));
        CONTINUE WHEN NOT ferry.replicated(r.d->>'schema', r.d->>'name');
        replicate := true;
        IF r.d->>'type' = 'table' THEN
            DELETE FROM ferry.capture WHERE relid = (r.d->>'relid')::oid RETURNING shape INTO pre;
            IF pre IS NOT NULL THEN
                tables := tables || jsonb_build_array(jsonb_build_object('pre', pre, 'post', NULL));
            END IF;
        END IF;
    END LOOP;
    -- Commands on objects that are not relations (functions, types,
    -- schemas, …) and commands that changed nothing (IF [NOT] EXISTS)
    -- replicate too.
    IF other OR (cardinality(rels) = 0 AND jsonb_array_length(dropped) = 0 AND NOT skipped) THEN
        replicate := true;
    END IF;
    -- Temporary objects (and Ferry's own) are nobody's business.
    IF skipped AND NOT replicate AND cardinality(objects) = 0 THEN
        PERFORM set_config('ferry.in_ddl', '', true);
        RETURN;
    END IF;
    -- The client's settings that change what a statement means (a
    -- timestamp literal, a retype to timestamptz): the replica replays it
    -- under them.
    INSERT INTO ferry.ddl_log (tag, object, query, seq, xid, search_path, replicate, tables, settings)
    VALUES (tag, array_to_string(objects, ', '), query,
            nextval('ferry.capture_seq'), pg_current_xact_id(), path, replicate, tables,
            jsonb_build_object('TimeZone', current_setting('TimeZone'),
                               'DateStyle', current_setting('DateStyle'),
                               'IntervalStyle', current_setting('IntervalStyle'),
                               'role', role));
    -- After the log row, so that the replicas replay the change first.
    FOR a IN SELECT DISTINCT p.relid FROM ferry.capture p WHERE p.relid = ANY (reship) LOOP
        PERFORM ferry.reship(a.relid);
    END LOOP;
    PERFORM set_config('ferry.in_ddl', '', true);
END
$f$;
CREATE OR REPLACE FUNCTION ferry.deterministic(expr text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
RETURN (
SELECT expr NOT LIKE '%SQLVALUEFUNCTION%' AND expr NOT LIKE '%NEXTVALUEEXPR%'
   AND NOT EXISTS (SELECT FROM regexp_matches(expr, ':(?:funcid|opfuncid) ([0-9]+)', 'g') m
                     JOIN pg_proc p ON p.oid = m[1]::oid
                    WHERE p.provolatile <> 'i'));
END
$f$;
CREATE OR REPLACE FUNCTION ferry.on_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    IF current_setting('ferry.in_ddl', true) = 'on' THEN
        RETURN;
    END IF;
    PERFORM set_config('ferry.rewritten',
        concat_ws(',', NULLIF(current_setting('ferry.rewritten', true), ''),
                  pg_event_trigger_table_rewrite_oid()::text || ':' || pg_event_trigger_table_rewrite_reason()::text),
        true);
END
$f$;
CREATE OR REPLACE FUNCTION ferry.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $f$
BEGIN
    -- Not SECURITY DEFINER, so that the client's search_path and role
    -- are the ones recorded.
    PERFORM ferry.record_ddl(TG_TAG, pg_catalog.current_setting('search_path'),
                             pg_catalog.current_query(), current_user::text);
END
$f$;
CREATE OR REPLACE FUNCTION ferry.on_drop() RETURNS event_trigger LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM ferry.record_drop();
END
$f$;
DROP FUNCTION IF EXISTS ferry.replay(text, text);
CREATE OR REPLACE FUNCTION ferry.replay(stmt text, path text, settings jsonb) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    old jsonb := pg_catalog.jsonb_build_object('search_path', pg_catalog.current_setting('search_path'));
    s record;
    -- The role that made the change on the master: the replica's objects
    -- belong to the same role as the master's.
    maker text := settings->>'role';
BEGIN
    FOR s IN SELECT * FROM pg_catalog.jsonb_each_text(COALESCE(settings, '{}') - 'role') LOOP
        old := old || pg_catalog.jsonb_build_object(s.key, pg_catalog.current_setting(s.key));
        PERFORM pg_catalog.set_config(s.key, s.value, true);
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', path, true);
    IF maker IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = maker) THEN
        RAISE WARNING 'ferry: role "%" does not exist on this replica; the schema change runs as "%": %',
            maker, current_user, stmt;
        maker := NULL;
    END IF;
    BEGIN
        BEGIN
            IF maker IS NOT NULL THEN
                PERFORM pg_catalog.set_config('role', maker, true);
            END IF;
            EXECUTE stmt;
            PERFORM pg_catalog.set_config('role', 'none', true);
        EXCEPTION WHEN insufficient_privilege THEN
            -- The replica's object belongs to another role than the
            -- master's (made before Ferry followed roles, or by hand):
            -- Ferry's role makes the change rather than stop the replica.
            RAISE WARNING 'ferry: role "%" may not make this schema change on this replica (%); it runs as "%": %',
                maker, SQLERRM, current_user, stmt;
            EXECUTE stmt;
        END;
    EXCEPTION WHEN duplicate_column OR duplicate_table OR duplicate_object OR duplicate_schema
              OR duplicate_function OR undefined_column OR undefined_table OR undefined_object THEN
        RAISE WARNING 'ferry: schema change skipped on this replica (%): %', SQLERRM, stmt;
    END;
    FOR s IN SELECT * FROM pg_catalog.jsonb_each_text(old) LOOP
        PERFORM pg_catalog.set_config(s.key, s.value, true);
    END LOOP;
END
$f$;
DROP EVENT TRIGGER IF EXISTS ferry_ddl;
DROP EVENT TRIGGER IF EXISTS ferry_ddl_drop;
DROP EVENT TRIGGER IF EXISTS ferry_rewrite;
DROP FUNCTION IF EXISTS ferry.log_ddl();
DROP FUNCTION IF EXISTS ferry.log_drop();
CREATE EVENT TRIGGER ferry_ddl ON ddl_command_end EXECUTE FUNCTION ferry.on_ddl();
CREATE EVENT TRIGGER ferry_ddl_drop ON sql_drop EXECUTE FUNCTION ferry.on_drop();
CREATE EVENT TRIGGER ferry_rewrite ON table_rewrite EXECUTE FUNCTION ferry.on_rewrite();
"#;

/// Stores the replication patterns for the event triggers, as LIKE
/// patterns. Parameters: include schemas, include tables, exclude schemas,
/// exclude tables (`text[]` each, in pairs).
pub const SET_PATTERNS: &str = "INSERT INTO ferry.settings \
     (include_schema, include_table, exclude_schema, exclude_table) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (singleton) DO UPDATE SET include_schema = EXCLUDED.include_schema, \
     include_table = EXCLUDED.include_table, exclude_schema = EXCLUDED.exclude_schema, \
     exclude_table = EXCLUDED.exclude_table";

/// Schema changes logged after a given id, for reporting. Parameter: id.
/// Returns `(id, at as text, tag, object, query, replicate)`.
pub const READ_LOG: &str = "SELECT id, at::text, tag, object, coalesce(query, ''), replicate \
     FROM ferry.ddl_log WHERE id > $1 ORDER BY id";

/// The newest logged schema change's id (0 if none).
pub const LAST: &str = "SELECT coalesce(max(id), 0) FROM ferry.ddl_log";

/// The schema changes of the transactions that committed between the
/// previous cut (`$1`) and the reading transaction's snapshot, in capture
/// order. Returns `(seq, xid text, tag, query, search_path, replicate,
/// tables json text, at text, object, settings json text)`.
pub const IN_WINDOW: &str = "SELECT seq, xid::text, tag, coalesce(query, ''), \
     coalesce(search_path, ''), replicate, tables::text, at::text, object, settings::text FROM ferry.ddl_log \
     WHERE xid >= pg_snapshot_xmin(($1::text)::pg_snapshot) \
       AND NOT pg_visible_in_snapshot(xid, ($1::text)::pg_snapshot) ORDER BY seq";

/// Whether any schema change waits in the window [`IN_WINDOW`] reads (an
/// expression; the cut asks it with its materialisation and reads the
/// changes only when there are some).
pub const WINDOW_HAS_CHANGES: &str = "EXISTS (SELECT 1 FROM ferry.ddl_log \
     WHERE xid >= pg_snapshot_xmin(($1::text)::pg_snapshot) \
       AND NOT pg_visible_in_snapshot(xid, ($1::text)::pg_snapshot))";

/// The tables whose schema changes wait in the window after a replica's
/// position (the replica's copies may differ from the master's until they
/// ship), as `(schema, name)`, before or after each change. Parameter: the
/// replica's snapshot.
pub const PENDING: &str = "SELECT DISTINCT s->>'schema', s->>'name' FROM ferry.ddl_log l \
     CROSS JOIN LATERAL jsonb_array_elements(l.tables) t \
     CROSS JOIN LATERAL (VALUES (t->'pre'), (t->'post')) v(s) \
     WHERE l.replicate AND jsonb_typeof(v.s) = 'object' \
       AND l.xid >= pg_snapshot_xmin(($1::text)::pg_snapshot) \
       AND NOT pg_visible_in_snapshot(l.xid, ($1::text)::pg_snapshot)";

/// On a replica: replays a schema change's statement under the client's
/// `search_path`, inside the batch transaction. A change the replica
/// already has (an object that exists, or is gone, already — made there by
/// hand) is skipped with a warning; the shapes are compared again when the
/// batch has applied, so a real difference still pauses the replica.
/// Parameters: statement, search_path, the client's settings (JSON:
/// TimeZone, DateStyle, IntervalStyle).
pub const REPLAY: &str = "SELECT ferry.replay($1, $2, ($3::text)::jsonb)";

/// A `replication.tables` glob (`*` = any run) as a LIKE pattern.
pub fn like_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_like_patterns() {
        assert_eq!(like_pattern("public"), "public");
        assert_eq!(like_pattern("t_*"), "t\\_%");
        assert_eq!(like_pattern("50%"), "50\\%");
    }
}

/// The statements of a client's query string that fire DDL event triggers
/// (so one per `ferry.ddl_log` row the string produced), in order, ready to
/// replay inside a batch transaction: `CONCURRENTLY` is removed (it cannot
/// run in a transaction block; a replica builds the index while the batch
/// holds its lock). `None` when the text cannot be tokenised.
pub fn replay_statements(query: &str) -> Option<Vec<String>> {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, query)
        .tokenize_with_location()
        .ok()?;
    let offsets = Offsets::new(query);
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut flush = |words: &mut Vec<String>, text: &mut String| {
        if fires_event_trigger(words) {
            out.push(text.trim().to_string());
        }
        words.clear();
        text.clear();
    };
    for t in &tokens {
        let (Some(start), Some(end)) = (offsets.at(t.span.start), offsets.at(t.span.end)) else {
            return None;
        };
        match &t.token {
            Token::SemiColon => flush(&mut words, &mut text),
            // Comments and blanks before a statement are not part of it.
            Token::Whitespace(_) if text.is_empty() => {}
            Token::Word(w) if w.quote_style.is_none() => {
                let upper = w.value.to_ascii_uppercase();
                let strip = upper == "CONCURRENTLY";
                words.push(upper);
                if !strip {
                    text.push_str(query.get(start..end)?);
                }
            }
            _ => text.push_str(query.get(start..end)?),
        }
    }
    flush(&mut words, &mut text);
    Some(out)
}

/// Whether a statement (its unquoted words, upper-cased, in order) is one
/// PostgreSQL fires DDL event triggers for: commands on objects inside a
/// database, not on databases, roles, tablespaces or event triggers.
fn fires_event_trigger(words: &[String]) -> bool {
    let global = [
        "DATABASE",
        "ROLE",
        "USER",
        "GROUP",
        "TABLESPACE",
        "EVENT",
        "SYSTEM",
    ];
    let Some(first) = words.first() else {
        return false;
    };
    let object = words
        .iter()
        .skip(1)
        .find(|w| !matches!(w.as_str(), "OR" | "REPLACE" | "UNIQUE" | "GLOBAL" | "LOCAL"));
    match first.as_str() {
        "CREATE" if object.is_some_and(|o| o == "TEMP" || o == "TEMPORARY") => false,
        "CREATE" | "ALTER" | "DROP" => !object.is_some_and(|o| global.contains(&o.as_str())),
        "GRANT" | "REVOKE" => words.iter().any(|w| w == "ON"),
        "COMMENT" | "SECURITY" | "IMPORT" | "REFRESH" => true,
        _ => false,
    }
}

/// Byte offsets of the tokenizer's (line, column) locations, both counted
/// from 1, columns in characters.
struct Offsets {
    lines: Vec<Vec<usize>>,
    len: usize,
}

impl Offsets {
    fn new(text: &str) -> Self {
        let mut lines = vec![Vec::new()];
        for (i, c) in text.char_indices() {
            if let Some(line) = lines.last_mut() {
                line.push(i);
            }
            if c == '\n' {
                lines.push(Vec::new());
            }
        }
        Self {
            lines,
            len: text.len(),
        }
    }

    fn at(&self, loc: sqlparser::tokenizer::Location) -> Option<usize> {
        let line = self
            .lines
            .get(usize::try_from(loc.line).ok()?.checked_sub(1)?)?;
        let col = usize::try_from(loc.column).ok()?.checked_sub(1)?;
        Some(match line.get(col) {
            Some(&at) => at,
            // Just past the last character of the line (or the text).
            None if col == line.len() => self
                .lines
                .get(usize::try_from(loc.line).ok()?)
                .and_then(|next| next.first().copied())
                .unwrap_or(self.len),
            None => return None,
        })
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;

    #[test]
    fn keeps_the_ddl_of_a_mixed_string_in_order() {
        let q = "INSERT INTO t VALUES (1); ALTER TABLE t ADD COLUMN c text DEFAULT 'a;b';\n\
                 UPDATE t SET c = $$x;y$$; -- done; really\n CREATE INDEX CONCURRENTLY i ON t (c)";
        assert_eq!(
            replay_statements(q).unwrap(),
            vec![
                "ALTER TABLE t ADD COLUMN c text DEFAULT 'a;b'",
                "CREATE INDEX  i ON t (c)"
            ]
        );
    }

    #[test]
    fn global_objects_and_plain_statements_are_not_ddl() {
        let q = "CREATE ROLE r; GRANT r TO app; GRANT SELECT ON t TO app; SELECT 1; \
                 CREATE TEMP TABLE x (a int); DROP DATABASE d; CREATE OR REPLACE FUNCTION f() \
                 RETURNS int LANGUAGE sql AS $f$ SELECT 1; $f$";
        let got = replay_statements(q).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with("GRANT SELECT"));
        assert!(got[1].ends_with("$f$ SELECT 1; $f$"));
    }

    #[test]
    fn multibyte_text_and_unterminated_input() {
        let q = "COMMENT ON TABLE t IS 'é;ü'; ALTER TABLE \"tä\" RENAME TO u";
        assert_eq!(
            replay_statements(q).unwrap(),
            vec![
                "COMMENT ON TABLE t IS 'é;ü'",
                "ALTER TABLE \"tä\" RENAME TO u"
            ]
        );
        assert!(replay_statements("ALTER TABLE t ADD c text DEFAULT 'open").is_none());
    }
}
