//! Catalog queries: which tables exist, their columns and replication key.

/// Ordinary and partitioned tables outside system schemas and `ferry`
/// (partitions are reached through their parent). Returns `(schema, name)`.
pub const LIST_TABLES: &str = "SELECT n.nspname::text, c.relname::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'ferry') \
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
     ORDER BY 1, 2";

/// Columns in attribute order. Parameter: the quoted qualified table name.
/// Returns `(name, type, generated, identity)`.
pub const COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
            a.attgenerated <> '', a.attidentity <> '' \
     FROM pg_attribute a \
     WHERE a.attrelid = ($1::text)::regclass AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum";

/// The replication key: the primary key, else the narrowest valid, plain,
/// non-partial unique index whose columns are all NOT NULL.
/// Parameter: the quoted qualified table name. Returns one `text[]` row or none.
pub const KEY: &str = "SELECT array_agg(a.attname::text ORDER BY k.ord) \
     FROM pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     WHERE i.indrelid = ($1::text)::regclass AND i.indisunique AND i.indisvalid AND i.indimmediate \
       AND i.indpred IS NULL AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts \
     GROUP BY i.indexrelid, i.indisprimary \
     HAVING bool_and(a.attnotnull) \
     ORDER BY i.indisprimary DESC, count(*), i.indexrelid \
     LIMIT 1";
