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
        // Its trigger as a member is gone: a TRUNCATE of it is its own.
        "TRUNCATE events_2; INSERT INTO events_2 VALUES (5002, 2, 'after truncate')",
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
/// retype with a volatile USING, CREATE TABLE AS with random(), a
/// timestamp read in the client's time zone — leave the replicas with the
/// master's values.
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
        // Statements whose meaning depends on the client's settings: a
        // timestamp literal, a retype to timestamptz.
        "SET TimeZone = 'America/New_York'",
        "ALTER TABLE acct ADD COLUMN since timestamptz DEFAULT '2020-06-01 12:00'",
        "ALTER TABLE acct ADD COLUMN naive timestamp DEFAULT '2020-01-01 00:00'",
        "ALTER TABLE acct ALTER COLUMN naive TYPE timestamptz",
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

/// The background check: a replica changed behind Ferry's back (a row
/// updated, one deleted, one added past the master's last key) is found
/// within two passes while writes go on through Ferry; `/status`, `ferry
/// status`, `/metrics`, `/health` and the replica's own health say so and
/// what to run; `ferry repair` makes it equal again; the replica left
/// alone is never reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_check_finds_a_replica_changed_behind_ferrys_back_and_repair_mends_it() {
    let mut c = Cluster::new(
        bin(),
        ferry_testkit::Options {
            nodes: 3,
            schema: "CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric); \
                     CREATE TABLE notes (id int PRIMARY KEY, body text);"
                .into(),
            env: vec![
                ("FERRY_VERIFY_INTERVAL_S".into(), "2".into()),
                ("FERRY_VERIFY_CHUNK_ROWS".into(), "100".into()),
            ],
            ..Default::default()
        },
    );
    c.start_ferry();
    let client = c.proxy_client().await;
    run(
        &client,
        "INSERT INTO accounts SELECT g, 'o' || g, g * 10 FROM generate_series(1, 1000) g; \
         INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 50) g",
    )
    .await;
    assert_equal(&c).await;
    let writes = c.spawn_writes(
        "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
        1..400,
    );
    // Behind Ferry's back, on b only.
    c.psql(
        1,
        "UPDATE accounts SET owner = 'mallory' WHERE id = 500; DELETE FROM accounts WHERE id = 777; \
         INSERT INTO notes VALUES (51, 'extra')",
    );
    let found_at = std::time::Instant::now();
    c.wait_status(Duration::from_secs(8), "b reported divergent", |doc| {
        let b = doc["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == "b").cloned())
            .unwrap_or_default();
        // The updated row's range, the deleted row's, and the extra row's.
        b["divergent"].as_array().map_or(0, Vec::len) == 3
    })
    .await;
    assert!(found_at.elapsed() < Duration::from_secs(8));
    writes.await.unwrap();
    let doc = c.status_doc();
    assert_eq!(c.node_doc("c")["divergent"], serde_json::json!([]), "{doc}");
    let (code, body) = c.admin_get("/health");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("degraded") && body.contains("ferry repair b"),
        "{body}"
    );
    let (code, body) = c.admin_get("/nodes/b/health");
    assert_eq!(code, 503, "{body}");
    assert_eq!(c.admin_get("/nodes/c/health").0, 200);
    let (_, metrics) = c.admin_get("/metrics");
    assert!(
        metrics.contains("ferry_divergent_tables{replica=\"b\"} 2"),
        "{metrics}"
    );
    let out = c.ferry_admin(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("b: DIFFERS from the master in public.accounts"),
        "{text}"
    );
    assert!(c
        .ferry_log()
        .contains("run `ferry repair b public.accounts`"));
    // Repair: b holds the master's rows again, at the same point of the
    // stream, while the batches go on.
    let out = c.ferry_admin(&["repair", "b"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_equal(&c).await;
    assert_eq!(c.node_doc("b")["divergent"], serde_json::json!([]));
    assert_eq!(c.admin_get("/nodes/b/health").0, 200);
    // Nothing left to repair; an unknown table is refused.
    let out = c.ferry_admin(&["repair", "b"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing_to_repair"));
    let out = c.ferry_admin(&["repair", "b", "nosuch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_table"));
    // A whole table by name.
    c.psql(2, "UPDATE notes SET body = 'x' WHERE id = 3");
    let out = c.ferry_admin(&["repair", "c", "notes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_equal(&c).await;
    // Later passes find nothing new.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in ["b", "c"] {
        assert_eq!(c.node_doc(n)["divergent"], serde_json::json!([]), "{n}");
    }
    assert!(c.status_doc()["verify"]["passes"].as_u64().unwrap_or(0) >= 2);
}

/// `ferry verify` with a replica down: that replica is reported as not
/// compared (not as different), the others are compared, and the exit
/// status (2) tells "could not compare" from "differs" (1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_node_it_cannot_reach_instead_of_blaming_one() {
    let c = Cluster::started(bin(), 3, "CREATE TABLE t (id int PRIMARY KEY)");
    let client = c.proxy_client().await;
    run(&client, "INSERT INTO t SELECT generate_series(1, 10)").await;
    assert_equal(&c).await;
    c.signal_server(2, "KILL");
    let out = c.ferry(&["verify", "--config", &c.config_path.display().to_string()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("NOT COMPARED (unreachable"), "{text}");
    assert!(!text.contains("DIFFERS"), "{text}");
    assert!(text.contains("could not compare every node"), "{text}");
    c.psql(1, "DELETE FROM t WHERE id = 3");
    let out = c.ferry(&["verify", "--config", &c.config_path.display().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("DIFFERS"), "{text}");
}

/// A table whose columns are named like the capture triggers' own
/// variables (`s`, `x`) replicates: the triggers used to fail every write
/// to it with "column reference is ambiguous" (found by the differential
/// test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_named_like_the_capture_triggers_variables_replicate() {
    let c = Cluster::started(
        bin(),
        2,
        "CREATE TABLE odd (id int PRIMARY KEY, s text, x int)",
    );
    let client = c.proxy_client().await;
    run(
        &client,
        "INSERT INTO odd VALUES (1, 'a', 1), (2, 'b', 2); UPDATE odd SET s = 'c' WHERE id = 1; \
         DELETE FROM odd WHERE id = 2",
    )
    .await;
    assert_equal(&c).await;
}

/// `ferry verify` compares whole rows whatever the columns are called: a
/// table with a column named like the checksum's own row alias (`t`) used
/// to be compared on that column alone (a difference in any other column
/// went unseen), and one keyed by a column named like the chunk's alias
/// (`z`) could not be compared at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_sees_every_column_whatever_the_columns_are_called() {
    let c = Cluster::started(
        bin(),
        2,
        "CREATE TABLE odd_t (id int PRIMARY KEY, t int, v text);
         CREATE TABLE odd_z (z int PRIMARY KEY, v text);",
    );
    let client = c.proxy_client().await;
    run(
        &client,
        "INSERT INTO odd_t SELECT g, 1, 'same' FROM generate_series(1, 20) g;
         INSERT INTO odd_z SELECT g, 'same' FROM generate_series(1, 20) g;",
    )
    .await;
    assert_equal(&c).await;
    let (ok, out) = c.verify(5);
    assert!(ok, "{out}");
    c.psql(
        1,
        "SET session_replication_role = replica; \
         UPDATE odd_t SET v = 'changed behind Ferry' WHERE id = 7; \
         UPDATE odd_z SET v = 'changed behind Ferry' WHERE z = 7",
    );
    let out = c.ferry(&["verify", "--config", &c.config_path.display().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for table in ["odd_t", "odd_z"] {
        assert!(
            text.lines()
                .any(|l| l.contains(table) && l.contains("DIFFERS")),
            "{table} not found different:\n{text}"
        );
    }
}

/// `ferry resync` of an old master that missed schema changes while it
/// was away (a type, a column of that type, a new table, a dropped one):
/// its definitions are replaced with the master's, its own late commit is
/// kept in its quarantine, its rows are copied, and it rejoins equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_schema_changes_is_resynchronised_with_the_masters_definitions() {
    let mut c = Cluster::new(
        bin(),
        ferry_testkit::Options {
            nodes: 2,
            schema: "CREATE TABLE items (id int PRIMARY KEY, v text); CREATE TABLE old (id int PRIMARY KEY);"
                .into(),
            env: vec![("FERRY_HEALTH_FAILURES".into(), "3".into())],
            ..Default::default()
        },
    );
    // Commits survive the kill -9 below (the test servers commit
    // asynchronously otherwise, and a crash could then hand out a lost
    // transaction's id again).
    for i in 0..2 {
        c.psql(i, "ALTER SYSTEM SET synchronous_commit = on");
        c.psql(i, "SELECT pg_reload_conf()");
    }
    c.start_ferry();
    let client = c.proxy_client().await;
    run(
        &client,
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 20) g",
    )
    .await;
    assert_equal(&c).await;
    c.signal_server(0, "KILL");
    c.wait_status(Duration::from_secs(30), "b master", |doc| {
        doc["master"] == "b"
    })
    .await;
    let client = c.proxy_client().await;
    run(
        &client,
        "CREATE TYPE mood AS ENUM ('sad', 'ok'); ALTER TABLE items ADD COLUMN m mood DEFAULT 'ok'; \
         CREATE TABLE fresh (id int PRIMARY KEY, m mood); INSERT INTO fresh VALUES (1, 'sad'); \
         DROP TABLE old; UPDATE items SET v = 'new' WHERE id <= 5",
    )
    .await;
    c.restart_server(0).unwrap();
    // The old master's own late write, which never reached the cluster.
    c.psql(0, "INSERT INTO items VALUES (100, 'late')");
    let out = c.ferry_admin(&["resync", "a"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.ferry_log()
    );
    assert!(said.contains("definitions differed"), "{said}");
    assert_equal(&c).await;
    assert_eq!(
        c.psql(
            0,
            "SELECT count(*) FROM ferry.quarantine WHERE row_image->>'id' = '100'"
        )
        .trim(),
        "1"
    );
    c.wait_status(Duration::from_secs(20), "a a replica", |doc| {
        doc["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["name"] == "a" && n["role"] == "replica"))
    })
    .await;
    run(&client, "INSERT INTO fresh VALUES (2, 'ok')").await;
    assert_equal(&c).await;
}
