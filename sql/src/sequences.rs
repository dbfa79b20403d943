//! Sequence positions travel with the batches.
//!
//! Rows carry the values a sequence handed out, but not the sequence
//! itself: a replica promoted later would hand the same values out again.
//! So every batch also carries the master's current position of every
//! replicated sequence, read after the cut's snapshot (sequences are not
//! transactional, so the position read is at least every value used by the
//! transactions in the batch), and the replica sets its sequences to them:
//! forward as values are used, back to the start when the master's was
//! restarted (`TRUNCATE ... RESTART IDENTITY`, `ALTER SEQUENCE ...
//! RESTART`), so that a replica promoted later hands out what the master
//! would have.

/// Sequences outside the system schemas, as `(regclass text, schema, name)`;
/// the batcher keeps those its table patterns match (serial and identity
/// sequences live in their table's schema).
pub const LIST: &str = "SELECT c.oid::regclass::text, n.nspname::text, c.relname::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'S' \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'ferry') \
       AND n.nspname NOT LIKE 'pg\\_temp%' \
     ORDER BY 1";

/// Which table each sequence is tied to, as `(sequence regclass text,
/// table schema, table name)`: the sequence is owned by one of the table's
/// columns (serial, identity) or named in one of its column defaults (a
/// partition's ties are its root's). A cut reads the positions of the
/// sequences tied to the tables it found written (see the batcher's
/// `cutter::positions`).
pub const TIES: &str = "SELECT DISTINCT s.oid::regclass::text, n.nspname::text, r.relname::text \
     FROM pg_catalog.pg_depend d \
     JOIN pg_catalog.pg_class s ON s.relkind = 'S' AND ( \
          (d.classid = 'pg_catalog.pg_attrdef'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass \
           AND d.refobjid = s.oid) \
       OR (d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = s.oid \
           AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i'))) \
     LEFT JOIN pg_catalog.pg_attrdef ad ON d.classid = 'pg_catalog.pg_attrdef'::regclass AND ad.oid = d.objid \
     JOIN pg_catalog.pg_class t ON t.oid = CASE WHEN d.classid = 'pg_catalog.pg_attrdef'::regclass \
          THEN ad.adrelid ELSE d.refobjid END \
     JOIN pg_catalog.pg_class r ON r.oid = coalesce(pg_catalog.pg_partition_root(t.oid), t.oid) \
     JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace \
     WHERE t.relkind IN ('r', 'p')";

/// Current positions, in the order given; NULL for a sequence never used
/// (or dropped since). `param`: the parameter holding regclass texts as
/// `text[]` (the cut reads them in its first statement, see
/// [`crate::batch::materialise_all`]).
pub fn read(param: &str) -> String {
    format!(
        "SELECT pg_catalog.pg_sequence_last_value(pg_catalog.to_regclass(u.s)) \
         FROM unnest({param}::text[]) WITH ORDINALITY AS u(s, i) ORDER BY u.i"
    )
}

/// On a replica: sets each named sequence to the master's position
/// (NULL: not used since its start, so its start value comes next),
/// leaving one that is already there alone; a sequence the replica lacks
/// is skipped. Parameters: regclass texts and positions, as `text[]` and
/// `bigint[]` (text format, see [`positions_literal`]).
pub const ADVANCE: &str = "SELECT count(CASE WHEN u.pos IS NULL \
         THEN pg_catalog.setval(r.c, s.seqstart, false) ELSE pg_catalog.setval(r.c, u.pos, true) END) \
     FROM unnest($1::text[], $2::bigint[]) AS u(name, pos) \
     CROSS JOIN LATERAL (SELECT pg_catalog.to_regclass(u.name) AS c) r \
     JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.c \
     WHERE u.pos IS DISTINCT FROM pg_catalog.pg_sequence_last_value(r.c)";

/// A text-format `bigint[]` of sequence positions, NULL for none.
pub fn positions_literal(positions: &[Option<i64>]) -> String {
    let items: Vec<String> = positions
        .iter()
        .map(|p| p.map_or_else(|| "NULL".to_string(), |v| v.to_string()))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// A PostgreSQL array literal of the given elements, each double-quoted
/// with `"` and `\` escaped, for a text-format array parameter.
pub fn array_literal<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for ch in item.as_ref().chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_every_element() {
        assert_eq!(array_literal::<&str>(&[]), "{}");
        assert_eq!(
            array_literal(&["public.s", "\"Odd\"\"Name\".\"x,y\"", "a\\b"]),
            r#"{"public.s","\"Odd\"\"Name\".\"x,y\"","a\\b"}"#
        );
        assert_eq!(array_literal(&["1", "-5"]), r#"{"1","-5"}"#);
        assert_eq!(positions_literal(&[Some(1), None, Some(-5)]), "{1,NULL,-5}");
    }
}
