//! Failover: a failed master is fenced and the replica with the most
//! applied batches takes over; new sessions wait for it instead of failing.

use crate::outage::eventually_client;
use ferry_testkit::node;
use ferry_testkit::Cluster;
use serde_json::Value;
use std::time::{Duration, Instant};

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);";

fn status(c: &Cluster) -> Value {
    c.status_doc()
}

/// kill -9 of the master: within seconds the open session's next write
/// commits on the replica that took over (it waited instead of failing),
/// and so does a new session's; the new
/// epoch is recorded on the nodes, the old master is shown fenced, and the
/// other replica follows the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_by_a_replica() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 3, SCHEMA);
    let client = c.proxy_client().await;
    for i in 1..=50 {
        client
            .execute("INSERT INTO items VALUES ($1, 'before')", &[&i])
            .await
            .unwrap();
    }
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    let killed = Instant::now();
    c.signal_server(0, "KILL");
    // The open session's next statement waits for the failover and runs
    // once on b ...
    client
        .execute("INSERT INTO items VALUES (1000, 'held')", &[])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", c.ferry_log()));
    let took = killed.elapsed();
    // ... and a new session writes there too.
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO items VALUES (51, 'after')", &[])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", c.ferry_log()));
    eprintln!("first write on the new master {took:?} after the kill");
    assert!(took < Duration::from_secs(10), "first write after {took:?}");
    let doc = status(&c);
    assert_eq!(doc["master"], "b", "{doc}");
    assert_eq!(doc["epoch"], 2, "{doc}");
    assert_eq!(node(&doc, "a")["role"], "fenced", "{doc}");
    assert_eq!(node(&doc, "c")["role"], "replica", "{doc}");
    assert!(doc["failover"]["last"]["detection_ms"].is_u64(), "{doc}");
    assert_eq!(
        c.psql(
            1,
            "SELECT state || ' ' || epoch || ' ' || master FROM ferry.node_state"
        )
        .trim(),
        "master 2 b"
    );
    assert_eq!(
        c.psql(
            2,
            "SELECT state || ' ' || epoch || ' ' || master FROM ferry.node_state"
        )
        .trim(),
        "replica 2 b"
    );
    // c follows b.
    for i in 52..=60 {
        client
            .execute("INSERT INTO items VALUES ($1, 'after')", &[&i])
            .await
            .unwrap();
    }
    c.wait_psql(
        2,
        "SELECT count(*) FROM items",
        "61",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        c.psql(2, "SELECT count(*) FROM items WHERE v = 'held'")
            .trim(),
        "1"
    );
    assert!(c.ferry_log().contains("failover complete"));
}

/// A batch of an older epoch is refused by a node fenced at a newer one,
/// whatever it carries (the old master's batcher can never apply again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_node_refuses_batches_of_an_older_epoch() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, SCHEMA);
    c.wait_psql(
        1,
        "SELECT epoch FROM ferry.node_state",
        "1",
        Duration::from_secs(10),
    )
    .await;
    c.psql(1, "UPDATE ferry.node_state SET epoch = 5");
    let out = c.servers[1].psql(
        "app",
        "BEGIN; SELECT ferry.begin_apply('a', (SELECT batch_id FROM ferry.applied), \
         (SELECT batch_id FROM ferry.applied) + 1, '1:1:', 4); ROLLBACK",
    );
    let err = out.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("fenced at epoch 5"), "{err}");
}

/// The frozen master (SIGSTOP): Ferry fails over; the client whose COMMIT
/// was stuck on the frozen master is told it failed (never "committed");
/// once the old master wakes (SIGCONT) and completes that commit, the write
/// is visible on no node of the cluster, and /status lists the old master
/// as fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_is_fenced_and_its_late_writes_go_nowhere() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 3, SCHEMA);
    // Both replicas stand at the same batch before the freeze: one still
    // behind the other at the failover is fenced out for a resync, which
    // is not what this test is about (a debug build, slower, froze the
    // master before the second replica had caught up now and then).
    c.wait_status(Duration::from_secs(15), "both replicas current", |doc| {
        let replicas: Vec<&Value> = doc["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["role"] == "replica")
            .collect();
        replicas.len() == 2
            && replicas.iter().all(|n| {
                n["reachable"] == true
                    && n["lag_batches"] == 0
                    && n["applied_batch"] == doc["last_batch"]
            })
    })
    .await;
    let stuck = c.proxy_client().await;
    stuck
        .batch_execute("BEGIN; INSERT INTO items VALUES (1, 'late')")
        .await
        .unwrap();
    let freeze = |sig: &str| c.signal_server(0, sig);
    freeze("STOP");
    let commit = tokio::spawn(async move { stuck.batch_execute("COMMIT").await });
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO items VALUES (2, 'after')", &[])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", c.ferry_log()));
    let told = tokio::time::timeout(Duration::from_secs(10), commit)
        .await
        .expect("the stuck COMMIT is answered")
        .unwrap();
    assert!(told.is_err(), "the client was told its COMMIT succeeded");
    freeze("CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.wait_psql(
        2,
        "SELECT count(*) FROM items WHERE id = 2",
        "1",
        Duration::from_secs(20),
    )
    .await;
    for i in 1..3 {
        assert_eq!(
            c.psql(i, "SELECT count(*) FROM items WHERE v = 'late'")
                .trim(),
            "0",
            "node {i}"
        );
    }
    let doc = status(&c);
    assert_eq!(node(&doc, "a")["role"], "fenced", "{doc}");
    assert_eq!(doc["master"], "b", "{doc}");
}

/// The master records its state-priority at every transition: 2 while a
/// replica holds everything, 1 while none does (both replicas down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_records_whether_a_replica_could_take_over() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 3, SCHEMA);
    let prio = "SELECT state || ' ' || state_priority FROM ferry.node_state";
    c.wait_psql(0, prio, "master 2", Duration::from_secs(10))
        .await;
    c.servers[1].stop().unwrap();
    c.servers[2].stop().unwrap();
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO items VALUES (1, 'alone')", &[])
        .await
        .unwrap();
    c.wait_psql(0, prio, "master 1", Duration::from_secs(15))
        .await;
    c.servers[1].start().unwrap();
    c.wait_psql(0, prio, "master 2", Duration::from_secs(20))
        .await;
    assert_eq!(
        c.psql(1, "SELECT v FROM items WHERE id = 1").trim(),
        "alone"
    );
}

/// After a failover the old master comes back fenced; `ferry resync` keeps
/// its late commits in quarantine, copies only the keys that differ (and
/// a table that differs beyond them whole) at one snapshot while writes go
/// on, and it serves as a replica again: every node ends up identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_old_master_is_resynchronised_and_rejoins() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        3,
        &format!(
            "{SCHEMA} CREATE TABLE extra (id int PRIMARY KEY); \
             INSERT INTO extra SELECT generate_series(1, 100);"
        ),
    );
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO items SELECT g, 'before' FROM generate_series(1, 500) g")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    // The test servers run without fsync: make a's commits survive the kill.
    c.psql(0, "CHECKPOINT");
    c.signal_server(0, "KILL");
    let client = eventually_client(&c).await;
    client
        .execute("INSERT INTO items VALUES (501, 'after')", &[])
        .await
        .unwrap();
    c.servers[0].start().unwrap();
    assert_eq!(node(&status(&c), "a")["role"], "fenced");
    // The new master's outbox is kept for a's resync, and /status says so.
    c.wait_status(Duration::from_secs(10), "outbox kept for a", |doc| {
        doc["outbox_kept_for"] == "a"
    })
    .await;
    // Late commits on the old master (a client that still wrote there
    // directly): they never reach the cluster, and the resync keeps them.
    // (Rows of its own: its last commits before the kill may be lost with
    // the test servers' settings.)
    c.psql(
        0,
        "INSERT INTO items VALUES (7777, 'late'), (7778, 'late'); \
         UPDATE items SET v = 'later' WHERE id = 7777; DELETE FROM items WHERE id = 7778",
    );
    // A row a lost without a trace (as a crash without fsync loses
    // commits): the keyed resync finds the difference and copies that table
    // whole.
    c.psql(
        0,
        "SET session_replication_role = replica; DELETE FROM extra WHERE id = 3",
    );
    // Writes go on during the resync.
    let writer = c.spawn_writes("INSERT INTO items VALUES ($1, 'during')", 1000..1300);
    let out = c.ferry_admin(&["resync", "a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Only the keys that differ travel: those the master changed since the
    // failover (fewer than the 500 rows a had before it) and a's own.
    let said = String::from_utf8_lossy(&out.stdout);
    let copied: u64 = said
        .split_once("replica again (")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(said.contains("keys that differed"), "{said}");
    assert!(copied < 500, "{said}");
    assert!(said.contains("4 changes"), "{said}");
    writer.await.unwrap();
    c.wait_equal(Duration::from_secs(30))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    assert_eq!(c.psql(0, "SELECT count(*) FROM items").trim(), "801");
    assert_eq!(
        c.psql(
            0,
            "SELECT string_agg(op || ' ' || (row_image->>'id') || ' ' || coalesce(row_image->>'v', '-'), ', ' ORDER BY seq) \
             FROM ferry.quarantine WHERE table_name = '\"public\".\"items\"'"
        )
        .trim(),
        "U 7777 late, U 7778 late, U 7777 later, D 7778 late"
    );
    let doc = status(&c);
    assert_eq!(node(&doc, "a")["role"], "replica", "{doc}");
    assert_eq!(node(&doc, "a")["quarantined"], 4, "{doc}");
    c.wait_status(Duration::from_secs(10), "outbox released", |doc| {
        doc["outbox_kept_for"].is_null()
    })
    .await;
    assert_eq!(
        c.psql(
            0,
            "SELECT state || ' ' || epoch || ' ' || master FROM ferry.node_state"
        )
        .trim(),
        "replica 2 b"
    );
}

/// `ferry add-node`: a new, empty server gets the replicated tables'
/// definitions (indexes, constraints, sequences) and a consistent copy
/// while writes go on, joins as a replica and follows the master; it can
/// then take over. A node that is not empty, or a name in use, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_empty_node_joins_as_a_replica_while_writes_go_on() {
    const DEFS: &str = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL CHECK (v <> ''));
        CREATE INDEX items_v ON items (v);
        CREATE TABLE notes (id bigserial PRIMARY KEY, item int REFERENCES items (id), body text);
        CREATE SEQUENCE tickets;";
    let mut c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, DEFS);
    let client = c.proxy_client().await;
    client
        .batch_execute(
            "INSERT INTO items SELECT g, 'before' FROM generate_series(1, 3000) g;
             INSERT INTO notes (item, body) SELECT g, 'n' FROM generate_series(1, 100) g;
             SELECT nextval('tickets') FROM generate_series(1, 7);",
        )
        .await
        .unwrap();
    let dsn = c.add_spare_server("c", "");
    let writer = c.spawn_writes("INSERT INTO items VALUES ($1, 'during')", 5000..5300);
    let out = c.ferry_admin(&["add-node", "c", "--dsn", &dsn, "--priority", "3"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.ferry_log()
    );
    assert!(said.contains("replica at epoch 1"), "{said}");
    assert!(said.contains("[[nodes]]\nname = \"c\""), "{said}");
    writer.await.unwrap();
    c.wait_equal(Duration::from_secs(30))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    assert_eq!(c.psql(2, "SELECT count(*) FROM items").trim(), "3300");
    // Definitions came along: the index, the check, the foreign key, the
    // sequences (moved forward by the stream).
    assert_eq!(
        c.psql(
            2,
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'items'"
        )
        .trim(),
        "2"
    );
    assert!(c.servers[2]
        .psql("app", "INSERT INTO items VALUES (-1, '')")
        .is_err());
    assert_eq!(
        c.psql(2, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'")
            .trim(),
        "1"
    );
    c.wait_psql(
        2,
        "SELECT last_value FROM tickets",
        "7",
        Duration::from_secs(20),
    )
    .await;
    let doc = status(&c);
    assert_eq!(node(&doc, "c")["role"], "replica", "{doc}");
    assert_eq!(doc["adding"]["phase"], "replica", "{doc}");
    assert_eq!(
        c.psql(2, "SELECT state || ' ' || master FROM ferry.node_state")
            .trim(),
        "replica a"
    );
    // Refusals: the name is taken; a node that holds the tables is not new.
    let (code, _) = c.admin_call(
        "POST",
        "/nodes",
        Some(&format!(r#"{{"name": "c", "dsn": "{dsn}"}}"#)),
    );
    assert_eq!(code, 409);
    let full = c.add_spare_server("d", DEFS);
    let (code, body) = c.admin_call(
        "POST",
        "/nodes",
        Some(&format!(r#"{{"name": "d", "dsn": "{full}"}}"#)),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("not empty"), "{body}");
    // The new node can take over.
    c.servers.truncate(3);
    c.names.truncate(3);
    let (code, body) = c.admin_call("POST", "/switchover", Some(r#"{"to": "c"}"#));
    assert_eq!(code, 200, "{body}");
    client
        .execute("INSERT INTO items VALUES (9999, 'on c')", &[])
        .await
        .unwrap();
    assert_eq!(
        c.psql(2, "SELECT v FROM items WHERE id = 9999").trim(),
        "on c"
    );
}

/// A failed master that will not come back is removed: the new master's
/// outbox is kept for its resync until then (it would grow for ever); after
/// `ferry remove-node` the node is out of `/status`, the master no longer
/// records it and cleans its outbox up, and the other replica goes on. The
/// master itself and unknown nodes cannot be removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_master_that_will_not_return_is_removed() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 3, SCHEMA);
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO items SELECT g, 'before' FROM generate_series(1, 100) g")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.signal_server(0, "KILL");
    let client = eventually_client(&c).await;
    client
        .execute("INSERT INTO items VALUES (101, 'after')", &[])
        .await
        .unwrap();
    c.wait_status(Duration::from_secs(10), "outbox kept for a", |doc| {
        doc["outbox_kept_for"] == "a"
    })
    .await;
    let out = c.ferry_admin(&["remove-node", "b"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node b is the master"),
        "{out:?}"
    );
    let out = c.ferry_admin(&["remove-node", "zz"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no node named zz"),
        "{out:?}"
    );
    let out = c.ferry_admin(&["remove-node", "a"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}\n{}", c.ferry_log());
    assert!(stdout.contains("a: removed from the cluster"), "{stdout}");
    assert!(stdout.contains("[[nodes]] entry named \"a\""), "{stdout}");
    c.wait_status(Duration::from_secs(10), "a gone, outbox released", |doc| {
        node(doc, "a").is_null() && doc["outbox_kept_for"].is_null()
    })
    .await;
    let doc = status(&c);
    assert_eq!(doc["master"], "b", "{doc}");
    assert_eq!(
        c.psql(1, "SELECT count(*) FROM ferry.replicas WHERE name = 'a'")
            .trim(),
        "0"
    );
    // Writes go on and reach c, and the outbox no longer keeps them.
    client
        .batch_execute("INSERT INTO items SELECT g, 'later' FROM generate_series(102, 200) g")
        .await
        .unwrap();
    c.wait_psql(
        2,
        "SELECT count(*) FROM items",
        "200",
        Duration::from_secs(20),
    )
    .await;
    c.wait_outbox_cleaned(Duration::from_secs(20)).await;
    assert!(c.ferry_log().contains("node removed from the cluster"));
}
