//! Schema changes travel in the batch stream, in order with the row
//! changes around them, however they were run; a change that cannot
//! replay stops only the replica it fails on.

use ferry_testkit::{eventually, Cluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A client writing rows into `items` as fast as it can until told to
/// stop; returns how many commits it saw acknowledged.
fn writer(url: String, stop: Arc<AtomicBool>, from: i32) -> tokio::task::JoinHandle<i32> {
    tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let mut id = from;
        while !stop.load(Ordering::Relaxed) {
            // The table's columns change under it: name the one that stays.
            c.execute("INSERT INTO items (id) VALUES ($1)", &[&id])
                .await
                .expect("insert during schema changes");
            c.execute("UPDATE items SET id = id WHERE id = $1", &[&(id - 1)])
                .await
                .expect("update during schema changes");
            id += 1;
        }
        id - from
    })
}

/// DDL sent through Ferry while another client writes: each change reaches
/// every replica between the same rows as on the master — a column added
/// with a default and filled in the same transaction, a table created and
/// filled in one transaction (with its sequence), a rename, a retype, an
/// index built CONCURRENTLY, a dropped column and a dropped table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_through_ferry_travel_in_order_with_the_rows() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        3,
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int);",
    );
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO items SELECT g, 'n' || g, g FROM generate_series(1, 100) g")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(c.proxy_url(), stop.clone(), 1000);
    let steps = [
        "BEGIN; INSERT INTO items (id) VALUES (-1); ALTER TABLE items ADD COLUMN price numeric DEFAULT 1.5; \
         INSERT INTO items (id, price) VALUES (-2, 7); COMMIT",
        "BEGIN; ALTER TABLE items ADD COLUMN flag boolean; UPDATE items SET flag = id % 2 = 0 WHERE id <= 100; COMMIT",
        "BEGIN; CREATE TABLE tags (id serial PRIMARY KEY, item int NOT NULL, label text); \
         INSERT INTO tags (item, label) SELECT g, 't' || g FROM generate_series(1, 20) g; COMMIT",
        "ALTER TABLE items RENAME COLUMN name TO title",
        "UPDATE items SET title = upper(title) WHERE id <= 10",
        "ALTER TABLE items ALTER COLUMN qty TYPE bigint",
        "UPDATE items SET qty = qty * 10000000000 WHERE id <= 3",
        "CREATE INDEX CONCURRENTLY items_title ON items (title)",
        "ALTER TABLE items DROP COLUMN flag",
        "CREATE TABLE scratch (id int PRIMARY KEY); INSERT INTO scratch VALUES (1); DROP TABLE scratch",
    ];
    for sql in steps {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {:?}", e.as_db_error()));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let written = load.await.unwrap();
    assert!(written > 20, "the writer kept writing ({written} commits)");
    c.wait_equal(Duration::from_secs(30))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    for node in 1..3 {
        let q = |sql: &str| c.psql(node, sql).trim().to_string();
        assert_eq!(
            q("SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod), ',' ORDER BY attnum) \
               FROM pg_attribute WHERE attrelid = 'items'::regclass AND attnum > 0 AND NOT attisdropped"),
            "id:integer,title:text,qty:bigint,price:numeric"
        );
        assert_eq!(
            q("SELECT title || '/' || qty || '/' || price FROM items WHERE id = 2"),
            "N2/20000000000/1.5"
        );
        // Rows written before the column came get its default there too.
        assert_eq!(
            q("SELECT string_agg(price::text, ',' ORDER BY id) FROM items WHERE id < 0"),
            "7,1.5"
        );
        assert_eq!(
            q("SELECT count(*) FROM pg_indexes WHERE indexname = 'items_title'"),
            "1"
        );
        assert_eq!(q("SELECT count(*) || '/' || max(label) FROM tags"), "20/t9");
        assert_eq!(q("SELECT to_regclass('scratch') IS NULL"), "t");
        // The new table's sequence travels too.
        assert_eq!(q("SELECT last_value FROM tags_id_seq"), "20");
    }
    // Replicas run every change; the master reports each one.
    let status = c.status_json().unwrap_or_default();
    assert!(status.contains("\"schema_changes\":[{"), "{status}");
    assert!(
        c.ferry_log()
            .contains("ships to the replicas in the batch stream"),
        "{}",
        c.ferry_log()
    );
}

/// A change made on the master behind Ferry's back (psql straight to the
/// server) travels the same way. One made inside a DO block cannot be told
/// apart from the code around it: it is reported loudly, not replayed, and
/// replicas that now differ pause with the failing statement until the
/// operator makes the change there; then they catch up by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_behind_ferrys_back_travel_and_unreplayable_ones_are_reported() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE items (id int PRIMARY KEY, name text);",
    );
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO items VALUES (1, 'one')")
        .await
        .unwrap();
    c.psql(0, "ALTER TABLE items ADD COLUMN note text DEFAULT 'n'");
    client
        .batch_execute("INSERT INTO items VALUES (2, 'two', 'x')")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        c.psql(1, "SELECT string_agg(note, ',' ORDER BY id) FROM items")
            .trim(),
        "n,x"
    );

    c.psql(
        0,
        "DO $$ BEGIN EXECUTE 'ALTER TABLE items ADD COLUMN extra int'; END $$",
    );
    client
        .batch_execute("INSERT INTO items VALUES (3, 'three', 'y', 33)")
        .await
        .unwrap();
    let status = eventually(
        Duration::from_secs(20),
        "unreplayable change reported",
        || {
            let s = c.status_json().unwrap_or_default();
            // The replica pauses: on the first batch that needs the column,
            // or (when none came with the change) on reconnecting, with the
            // difference.
            let paused =
                s.contains("\"failed_statement\":\"INSERT") || s.contains("columns differ on b");
            if s.contains("not replayed") && paused {
                Ok(s)
            } else {
                Err(s)
            }
        },
    )
    .await;
    assert!(status.contains("extra"), "{status}");
    assert!(c
        .ferry_log()
        .contains("schema change not replayed on the replicas"));
    c.psql(1, "ALTER TABLE items ADD COLUMN extra int");
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        c.psql(1, "SELECT extra FROM items WHERE id = 3").trim(),
        "33"
    );
}

/// A schema change that conflicts with what one replica holds stops
/// shipping to that replica only, with the batch and the statement in
/// /status; the other replica applies it and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_schema_change_pauses_only_that_replica() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        3,
        "CREATE TABLE items (id int PRIMARY KEY, name text);",
    );
    // Replica b already holds a different `extra` table.
    c.psql(1, "CREATE TABLE extra (id int PRIMARY KEY)");
    let client = c.proxy_client().await;
    client
        .batch_execute(
            "CREATE TABLE extra (id int PRIMARY KEY, label text NOT NULL); \
             INSERT INTO extra VALUES (1, 'a'); INSERT INTO items VALUES (1, 'one')",
        )
        .await
        .unwrap();
    c.wait_psql(
        2,
        "SELECT to_regclass('extra') IS NOT NULL",
        "t",
        Duration::from_secs(20),
    )
    .await;
    c.wait_psql(
        2,
        "SELECT count(*) FROM extra WHERE label = 'a'",
        "1",
        Duration::from_secs(20),
    )
    .await;
    let b = eventually(Duration::from_secs(20), "b paused", || {
        let b = c.node_doc("b");
        if b["failed_batch"].is_i64() {
            Ok(b)
        } else {
            Err(b)
        }
    })
    .await;
    assert!(
        b["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("label")),
        "{b}"
    );
    client
        .batch_execute("INSERT INTO items VALUES (2, 'two')")
        .await
        .unwrap();
    c.wait_psql(
        2,
        "SELECT count(*) FROM items",
        "2",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(c.psql(1, "SELECT count(*) FROM items").trim(), "0");
}

/// A replica that is down while the schema changes catches up through them
/// when it returns: it connects with its own (old) tables, the catch-up
/// batch brings rows and changes in order, and it then follows the new
/// shapes. A change made on a replica by hand while Ferry runs is not
/// undone, and the batch that carries the same change skips it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_was_down_catches_up_through_schema_changes() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        3,
        "CREATE TABLE items (id int PRIMARY KEY, name text);",
    );
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO items VALUES (1, 'one')")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.servers[2].stop().unwrap();
    // Replica b already got this change by hand.
    c.psql(1, "CREATE INDEX items_name ON items (name)");
    client
        .batch_execute(
            "INSERT INTO items VALUES (2, 'two'); \
             ALTER TABLE items ADD COLUMN qty int NOT NULL DEFAULT 0; \
             INSERT INTO items VALUES (3, 'three', 3); \
             CREATE INDEX items_name ON items (name); \
             CREATE TABLE notes (id int PRIMARY KEY, item int REFERENCES items, body text); \
             INSERT INTO notes VALUES (1, 3, 'n')",
        )
        .await
        .unwrap();
    c.wait_psql(
        1,
        "SELECT count(*) FROM notes",
        "1",
        Duration::from_secs(20),
    )
    .await;
    client
        .batch_execute("UPDATE items SET qty = qty + 1")
        .await
        .unwrap();
    c.servers[2].start().unwrap();
    c.wait_equal(Duration::from_secs(30))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    assert_eq!(
        c.psql(
            2,
            "SELECT string_agg(id || ':' || qty, ',' ORDER BY id) FROM items"
        )
        .trim(),
        "1:1,2:1,3:4"
    );
    // And it keeps following.
    client
        .batch_execute("INSERT INTO notes VALUES (2, 1, 'later')")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
}

/// A column retyped in a transaction that stays open while the batcher
/// cuts: the cut's snapshot predates the retype, which rewrites the outbox
/// (capture follows the new type), and PostgreSQL shows a rewritten table
/// empty to older snapshots. The cut locks the outboxes before taking its
/// snapshot, and skips its tick while the retype holds one — the rows
/// committed just before the retype reach every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_committed_just_before_a_rewriting_retype_are_not_lost() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE items (id int PRIMARY KEY, qty int);",
    );
    let client = c.proxy_client().await;
    let ddl = c.proxy_client().await;
    for round in 0..3 {
        let base = round * 1000;
        // The rows commit; the retype starts before the next tick (20 ms)
        // and holds its locks across several.
        client
            .execute(
                "INSERT INTO items SELECT g, g FROM generate_series($1::int + 1, $1::int + 50) g",
                &[&base],
            )
            .await
            .unwrap();
        let to = if round % 2 == 0 { "bigint" } else { "int" };
        ddl.batch_execute(&format!(
            "BEGIN; ALTER TABLE items ALTER COLUMN qty TYPE {to}; SELECT pg_sleep(0.3); COMMIT"
        ))
        .await
        .unwrap();
    }
    c.wait_equal(Duration::from_secs(20))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    assert_eq!(c.psql(1, "SELECT count(*) FROM items").trim(), "150");
}

/// A schema change is a normal event: Ferry's log says so as information,
/// not as a failed batcher session. A log written to a file carries no
/// colour codes, and `FERRY_LOG_FORMAT=json` writes one JSON object per
/// line (an unknown format is refused before anything starts).
///
/// (The batcher logs a change once the batch that carries it is applied,
/// just after the replica shows it: the log is read until it has the line.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_is_logged_as_information_in_plain_or_json_lines() {
    const CHANGED: &str = "replicated tables changed; batcher re-reads them";
    let mut c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE t (id int PRIMARY KEY);",
    );
    change_after_a_row(
        &c,
        "INSERT INTO t VALUES (0)",
        "ALTER TABLE t ADD COLUMN v text; INSERT INTO t VALUES (1, 'x')",
    )
    .await;
    // The batcher logs the change once the batch that carries it is
    // applied, just after the replica shows it.
    let log = logged(&c, CHANGED).await;
    assert!(!log.contains("batcher session failed"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    assert!(
        c.status_doc()["nodes"][0]["last_error"].is_null(),
        "{}",
        c.status_doc()
    );

    c.kill_ferry();
    c.set_ferry_env("FERRY_LOG_FORMAT", "json");
    c.start_ferry();
    change_after_a_row(
        &c,
        "INSERT INTO t VALUES (10, 'z')",
        "ALTER TABLE t ADD COLUMN w int; INSERT INTO t VALUES (2, 'y', 2)",
    )
    .await;
    let log = logged(&c, CHANGED).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"] == CHANGED),
        "{log}"
    );

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["status", "--admin", "http://127.0.0.1:9"])
        .env("FERRY_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("FERRY_LOG_FORMAT=\"yaml\": use text or json"),
        "{err}"
    );
}

/// Ferry's log once it holds `line`.
async fn logged(c: &Cluster, line: &str) -> String {
    eventually(Duration::from_secs(10), "the line logged", || {
        let log = c.ferry_log();
        if log.contains(line) {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await
}

/// Ships a first row (`row`), so that the batcher has read the tables and
/// the schema change in `change` is one it notices rather than one it
/// starts with; then the change; both through Ferry, each waited for on
/// every node.
async fn change_after_a_row(c: &Cluster, row: &str, change: &str) {
    for sql in [row, change] {
        c.proxy_client().await.batch_execute(sql).await.unwrap();
        c.wait_equal(Duration::from_secs(30)).await.unwrap();
    }
}
