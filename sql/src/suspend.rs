//! Suspensions: a replica held at a snapshot taken at a chosen instant,
//! recorded on the master so that a schedule and a suspended state survive
//! a restart of Ferry.

/// The record, one row per replica that is scheduled, suspending,
/// suspended or whose suspension failed. `grp` ties the replicas of one
/// request (a consistency group: cut at the same snapshot).
pub const INSTALL: &str = r#"
CREATE TABLE IF NOT EXISTS ferry.suspensions (
    node text PRIMARY KEY,
    grp bigint NOT NULL,
    at timestamptz NOT NULL,
    state text NOT NULL CHECK (state IN ('scheduled', 'suspending', 'suspended', 'failed')),
    batch_id bigint,
    error text,
    requested_at timestamptz NOT NULL DEFAULT now()
);
"#;

/// Every suspension. Returns `(node, grp, at as RFC 3339 text, seconds
/// from now until at, state, batch_id, error)`.
pub const LIST: &str = "SELECT node, grp, \
     to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     extract(epoch FROM at - clock_timestamp())::float8, state, batch_id, error \
     FROM ferry.suspensions ORDER BY node";

/// Reads a requested instant with PostgreSQL's own parser. Parameter: the
/// text. Returns `(RFC 3339 UTC text, seconds from now)`; fails with
/// SQLSTATE 22007/22008 when it is not a time.
pub const PARSE_TIME: &str =
    "SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     extract(epoch FROM t - clock_timestamp())::float8 FROM (SELECT $1::text::timestamptz AS t) s";

/// Schedules suspensions. Parameters: nodes (`text[]`), group id, instant
/// (RFC 3339 text).
pub const SCHEDULE: &str = "INSERT INTO ferry.suspensions (node, grp, at, state) \
     SELECT n, $2, $3::text::timestamptz, 'scheduled' FROM unnest($1::text[]) n";

/// Moves suspensions to a state. Parameters: nodes, state, batch id, error.
pub const SET_STATE: &str = "UPDATE ferry.suspensions SET state = $2, batch_id = $3, error = $4 \
     WHERE node = ANY($1::text[])";

/// Ends a suspension (resume, or cancel). Parameter: node.
pub const REMOVE: &str = "DELETE FROM ferry.suspensions WHERE node = $1";

/// Clears earlier (failed) suspensions of the nodes. Parameter: nodes.
pub const REMOVE_MANY: &str = "DELETE FROM ferry.suspensions WHERE node = ANY($1::text[])";
