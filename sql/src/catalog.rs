//! Catalog queries: which tables exist, their columns and replication key.

/// Ordinary and partitioned tables outside system schemas and `ferry`
/// (partitions are reached through their parent). Returns `(schema, name)`.
pub const LIST_TABLES: &str = "SELECT n.nspname::text, c.relname::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'ferry') \
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
     ORDER BY 1, 2";

/// A table's columns (in attribute order) and replication key, as JSON
/// (see [`crate::TableShape::from_json`]); computed by the node's
/// `ferry.table_shape`, the same function the DDL log records shapes with.
/// Parameter: the quoted qualified table name.
pub const SHAPE: &str = "SELECT ferry.table_shape(($1::text)::regclass)::text";

/// [`SHAPE`] for many tables in one statement. Parameter: the quoted
/// qualified names (`text[]`). One row per table, in that order: its
/// shape (NULL for a table gone meanwhile).
pub const SHAPES: &str = "SELECT ferry.table_shape(pg_catalog.to_regclass(u.t))::text \
     FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS u(t, i) ORDER BY u.i";

/// A role's rights that decide whether client sessions may run as it.
/// Parameter: the role's name. Returns `(rolsuper, rolcanlogin, rolbypassrls)`;
/// no row when the role does not exist on that server.
pub const ROLE: &str =
    "SELECT rolsuper, rolcanlogin, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = $1";

/// A role's stored secret, to check that a SCRAM verifier Ferry passes
/// logins through with is the node's own. Parameter: the role's name.
pub const ROLE_SECRET: &str =
    "SELECT coalesce(rolpassword, '') FROM pg_catalog.pg_authid WHERE rolname = $1";

/// How many sessions a server takes, and how many of them only
/// superusers may use. Returns `(max_connections, superuser_reserved_connections)`.
pub const CONNECTION_ROOM: &str = "SELECT current_setting('max_connections')::int, \
     current_setting('superuser_reserved_connections')::int";

/// `proxy.auth_lookup`: a role that is not in `[[users]]`, looked up on the
/// master. Parameter: the role's name. Returns `(its stored secret, whether
/// it is a superuser or bypasses row-level security, whether it may log
/// in)`; no row when there is no such role.
pub const LOOKUP_ROLE: &str = "SELECT coalesce(rolpassword, ''), rolsuper OR rolbypassrls, \
     rolcanlogin FROM pg_catalog.pg_authid WHERE rolname = $1";
