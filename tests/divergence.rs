//! Every way a row of a replicated table can change reaches the replicas,
//! in order with the schema changes around it: rows that move between
//! partitions, statements that name a partition, partitions created,
//! attached and detached, inheritance trees, writable CTEs and MERGE,
//! schema changes whose values the replicas cannot compute themselves, and
//! restarted sequences. Each test compares every node directly at the end
//! (the harness's own digest, not Ferry's).

use ferry_testkit::Cluster;
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

async fn run(c: &tokio_postgres::Client, sql: &str) {
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {:?}", e.as_db_error()));
}

async fn assert_equal(c: &Cluster) {
    c.wait_equal(Duration::from_secs(30))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
}

/// No replica shows a failed batch or an error in `/status`.
fn assert_no_replica_errors(c: &Cluster) {
    let doc = c.status_doc();
    let nodes = doc["nodes"].as_array().into_iter().flatten();
    for n in nodes.filter(|n| n["role"] == "replica") {
        assert!(
            n["last_error"].is_null() && n["failed_batch"].is_null(),
            "{n}\n{}",
            c.ferry_log()
        );
    }
}

const EVENTS: &str = "CREATE TABLE events (id int, region int, note text, PRIMARY KEY (id, region)) \
         PARTITION BY LIST (region); \
     CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1); \
     CREATE TABLE events_2 PARTITION OF events FOR VALUES IN (2); \
     CREATE TABLE events_3 (note text, id int NOT NULL, region int NOT NULL, PRIMARY KEY (id, region));";

/// An UPDATE that changes the partition key moves rows to another
/// partition (PostgreSQL runs it as a DELETE and an INSERT and fires no
/// UPDATE row trigger for it); a MERGE can do the same; statements can
/// name a partition instead of the table; partitions come and go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_moved_between_partitions_or_written_through_a_partition_reach_the_replicas() {
    let c = Cluster::started(bin(), 3, EVENTS);
    let client = c.proxy_client().await;
    let steps = [
        "INSERT INTO events SELECT g, 1 + g % 2, 'n' || g FROM generate_series(1, 500) g",
        // 20 rows move from events_1 to events_2.
        "UPDATE events SET region = 2 WHERE region = 1 AND id <= 40",
        // Statements that name a partition.
        "INSERT INTO events_1 VALUES (1001, 1, 'direct')",
        "UPDATE events_2 SET note = 'direct' WHERE id <= 10",
        "DELETE FROM events_1 WHERE id BETWEEN 41 AND 60",
        // A MERGE that moves rows (PostgreSQL 15 leaves them out of the
        // transition tables when the MERGE has no INSERT action).
        "MERGE INTO events e USING generate_series(61, 80) s(id) ON e.id = s.id AND e.region = 1 \
         WHEN MATCHED THEN UPDATE SET region = 2",
        // A writable CTE that deletes rows and puts some back.
        "WITH d AS (DELETE FROM events WHERE id BETWEEN 81 AND 90 RETURNING *) \
         INSERT INTO events SELECT id, region, note || '+' FROM d LIMIT 5",
        // A partition truncated by name; then the table.
        "TRUNCATE events_1",
        "INSERT INTO events VALUES (1101, 1, 'after truncate')",
        // A partition created and used at once.
        "CREATE TABLE events_4 PARTITION OF events FOR VALUES IN (4); \
         INSERT INTO events VALUES (2001, 4, 'new partition')",
        // A table (its columns in another order) attached as a partition,
        // then written through the table and by its own name.
        "INSERT INTO events_3 VALUES ('standalone', 3000, 3)",
        "ALTER TABLE events ATTACH PARTITION events_3 FOR VALUES IN (3)",
        "INSERT INTO events VALUES (3001, 3, 'attached'); \
         UPDATE events_3 SET note = 'by name' WHERE id = 3001; \
         UPDATE events SET region = 3 WHERE id = 2001",
        // A partition detached is a table of its own.
        "ALTER TABLE events DETACH PARTITION events_2",
        "INSERT INTO events_2 VALUES (5001, 2, 'detached'); UPDATE events_2 SET note = 'own' WHERE id <= 20",
    ];
    for sql in steps {
        run(&client, sql).await;
    }
    assert_equal(&c).await;
    assert_no_replica_errors(&c);
    for node in 1..3 {
        assert_eq!(
            c.psql(node, "SELECT count(*) FROM events_2 WHERE region = 2")
                .trim(),
            c.psql(0, "SELECT count(*) FROM events_2 WHERE region = 2")
                .trim()
        );
        assert_eq!(
            c.psql(node, "SELECT note FROM events WHERE id = 2001")
                .trim(),
            "new partition"
        );
    }
    let (ok, out) = c.verify(10);
    assert!(ok, "{out}");
}

/// A statement on an inheritance parent changes its children's rows too:
/// they reach the replicas in the children, not in the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_an_inheritance_parent_reach_the_childrens_rows() {
    let c = Cluster::started(
        bin(),
        3,
        "CREATE TABLE vehicles (id int PRIMARY KEY, name text); \
         CREATE TABLE cars (doors int) INHERITS (vehicles); ALTER TABLE cars ADD PRIMARY KEY (id);",
    );
    let client = c.proxy_client().await;
    for sql in [
        "INSERT INTO vehicles VALUES (1, 'bike'), (2, 'boat'); \
         INSERT INTO cars VALUES (1, 'mini', 3), (3, 'van', 5)",
        "UPDATE vehicles SET name = upper(name)",
        "DELETE FROM vehicles WHERE id = 3",
        "UPDATE vehicles SET id = 10 WHERE id = 2",
        "ALTER TABLE vehicles ADD COLUMN wheels int DEFAULT 2",
        "INSERT INTO cars (id, name, doors, wheels) VALUES (4, 'truck', 2, 6)",
        "CREATE TABLE boats () INHERITS (vehicles); ALTER TABLE boats ADD PRIMARY KEY (id); \
         INSERT INTO boats VALUES (20, 'yacht', 0)",
        "UPDATE vehicles SET name = name || '!' WHERE id IN (1, 4, 20)",
        "TRUNCATE ONLY vehicles",
    ] {
        run(&client, sql).await;
    }
    assert_equal(&c).await;
    assert_no_replica_errors(&c);
    for node in 1..3 {
        assert_eq!(
            c.psql(
                node,
                "SELECT string_agg(id || ':' || name, ',' ORDER BY id) FROM cars"
            )
            .trim(),
            "1:MINI!,4:truck!"
        );
        assert_eq!(
            c.psql(node, "SELECT count(*) FROM ONLY vehicles").trim(),
            "0"
        );
    }
}

/// A schema change that the following rows need, with no gap between
/// them: in one batch window (Ferry stopped meanwhile), and through Ferry.
/// The replica applies each change before the rows committed after it,
/// whether or not it names a replicated table; a value added to an enum is
/// committed on the replica before the rows that use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_apply_before_the_rows_that_need_them_whatever_the_gap() {
    let mut c = Cluster::started(
        bin(),
        3,
        "CREATE TYPE mood AS ENUM ('sad'); CREATE TABLE notes (id int PRIMARY KEY, m mood); \
         CREATE TABLE log (id int PRIMARY KEY, at int) PARTITION BY RANGE (id); \
         CREATE TABLE log_0 PARTITION OF log FOR VALUES FROM (0) TO (100);",
    );
    // One window: Ferry cuts nothing while it is stopped.
    c.signal_ferry("STOP");
    let master = c.node_client(0).await;
    for sql in [
        "ALTER TYPE mood ADD VALUE 'happy'",
        "INSERT INTO notes VALUES (1, 'happy')",
        "CREATE TABLE log_1 PARTITION OF log FOR VALUES FROM (100) TO (200)",
        "INSERT INTO log VALUES (150, 1)",
    ] {
        run(&master, sql).await;
    }
    c.signal_ferry("CONT");
    // And through Ferry, back to back.
    let client = c.proxy_client().await;
    for sql in [
        "ALTER TYPE mood ADD VALUE 'calm'",
        "INSERT INTO notes VALUES (2, 'calm')",
        "CREATE TABLE log_2 PARTITION OF log FOR VALUES FROM (200) TO (300)",
        "INSERT INTO log VALUES (250, 2)",
    ] {
        run(&client, sql).await;
    }
    assert_equal(&c).await;
    assert_no_replica_errors(&c);
    let doc = c.status_doc();
    let listed = doc["schema_changes"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|s| s["tag"] == "ALTER TYPE").count());
    assert_eq!(listed, 2, "each ALTER TYPE listed once: {doc}");
    c.kill_ferry();
}

/// Schema changes whose values each node would compute for itself — a
/// column added with a volatile or a clock default, a serial column, a
/// retype with a volatile USING, CREATE TABLE AS with random() — leave the
/// replicas with the master's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_with_values_of_their_own_leave_the_masters_values_on_the_replicas() {
    let c = Cluster::started(
        bin(),
        3,
        "CREATE TABLE acct (id int PRIMARY KEY, v text); \
         CREATE TABLE plain (id int)",
    );
    let client = c.proxy_client().await;
    for sql in [
        "INSERT INTO acct SELECT g, 'v' || g FROM generate_series(1, 200) g; \
         INSERT INTO plain SELECT g FROM generate_series(1, 20) g",
        "ALTER TABLE acct ADD COLUMN created timestamptz DEFAULT clock_timestamp()",
        "ALTER TABLE acct ADD COLUMN token uuid DEFAULT gen_random_uuid()",
        "ALTER TABLE acct ADD COLUMN n serial",
        "SELECT pg_sleep(0.05); ALTER TABLE acct ADD COLUMN seen timestamptz DEFAULT now()",
        "ALTER TABLE acct ALTER COLUMN v TYPE text USING v || '/' || random()::text",
        "ALTER TABLE plain ADD COLUMN r float8 DEFAULT random()",
        "CREATE TABLE picks AS SELECT g AS id, random() AS r FROM generate_series(1, 50) g",
    ] {
        run(&client, sql).await;
    }
    assert_equal(&c).await;
    assert_no_replica_errors(&c);
}

/// TRUNCATE ... RESTART IDENTITY restarts the replicas' sequences too (a
/// replica promoted later hands out what the master would have).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sequence_restarts_on_the_replicas() {
    let c = Cluster::started(
        bin(),
        2,
        "CREATE TABLE tickets (id serial PRIMARY KEY, v text)",
    );
    let client = c.proxy_client().await;
    run(
        &client,
        "INSERT INTO tickets (v) SELECT 't' FROM generate_series(1, 10)",
    )
    .await;
    let state = "SELECT last_value || '/' || is_called FROM tickets_id_seq";
    c.wait_psql(1, state, "10/true", Duration::from_secs(10))
        .await;
    run(&client, "TRUNCATE tickets RESTART IDENTITY").await;
    c.wait_psql(1, state, "1/false", Duration::from_secs(10))
        .await;
    run(
        &client,
        "INSERT INTO tickets (v) SELECT 'u' FROM generate_series(1, 3)",
    )
    .await;
    c.wait_psql(1, state, "3/true", Duration::from_secs(10))
        .await;
    assert_equal(&c).await;
}

/// Creating a table Ferry captures says nothing to the client about
/// Ferry's own triggers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_table_shows_the_client_no_notices_of_ferrys() {
    let c = Cluster::started(bin(), 2, "");
    let out = std::process::Command::new("psql")
        .arg(c.proxy_url())
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "CREATE TABLE nokey (a int)",
            "-c",
            "CREATE TABLE keyed (id int PRIMARY KEY)",
            "-c",
            "ALTER TABLE keyed ADD COLUMN b int",
            "-c",
            "INSERT INTO nokey VALUES (1)",
        ])
        .output()
        .expect("psql");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("NOTICE"), "{stderr}");
    assert_equal(&c).await;
}

/// `ferry add-node` right after start, before the master has cut its
/// first batch, of a schema whose tables need types, an enum, a domain, a
/// function in a default and a check, and partitions: the new node gets
/// all of it, and every row written afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_before_the_first_batch_gets_the_whole_schema_and_every_later_row() {
    const DEFS: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok'); \
        CREATE DOMAIN positive AS int CHECK (VALUE > 0); \
        CREATE TYPE pair AS (a int, b text); \
        CREATE FUNCTION fresh_code() RETURNS text LANGUAGE sql AS $$ SELECT 'c-' || 1 $$; \
        CREATE TABLE people (id int PRIMARY KEY, m mood NOT NULL, n positive, p pair, \
                             code text DEFAULT fresh_code() CHECK (code LIKE 'c-%')); \
        CREATE TABLE events (id int, region int, PRIMARY KEY (id, region)) PARTITION BY LIST (region); \
        CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1); \
        CREATE TABLE events_2 PARTITION OF events FOR VALUES IN (2);";
    let mut c = Cluster::started(bin(), 2, DEFS);
    let dsn = c.add_spare_server("c", "");
    let out = c.ferry_admin(&["add-node", "c", "--dsn", &dsn, "--priority", "3"]);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.ferry_log()
    );
    let client = c.proxy_client().await;
    run(
        &client,
        "INSERT INTO people (id, m, n, p) VALUES (1, 'ok', 5, ROW(1, 'x')); \
         INSERT INTO events SELECT g, 1 + g % 2 FROM generate_series(1, 100) g",
    )
    .await;
    run(&client, "UPDATE events SET region = 2 WHERE id <= 10").await;
    assert_equal(&c).await;
    assert_no_replica_errors(&c);
    assert_eq!(c.psql(2, "SELECT count(*) FROM events_2").trim(), "55");
    assert_eq!(c.psql(2, "SELECT code FROM people").trim(), "c-1");
    let (ok, out) = c.verify(10);
    assert!(ok, "{out}");
}

/// The copy a new node starts from records a batch position below every
/// batch id the master will hand out, also before its first batch (the
/// first batch once took the copy's own id and was refused as applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_before_the_first_batch_receives_the_first_batch() {
    let mut c = Cluster::started(bin(), 2, "CREATE TABLE t (id int PRIMARY KEY)");
    let dsn = c.add_spare_server("c", "");
    let out = c.ferry_admin(&["add-node", "c", "--dsn", &dsn, "--priority", "3"]);
    assert!(out.status.success(), "{}", c.ferry_log());
    let client = c.proxy_client().await;
    run(&client, "INSERT INTO t SELECT generate_series(1, 10)").await;
    assert_equal(&c).await;
    assert_no_replica_errors(&c);
}
