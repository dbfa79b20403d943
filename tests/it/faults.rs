//! Faults injected for real: kill -9 of Ferry while batches are applied,
//! a replica stopped and started again, a master restart.

use ferry_testkit::{eventually, Cluster, Options};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `events` has no key: applying a batch twice would duplicate its rows,
/// and skipping one would lose them, so its row count proves exactly-once.
const SCHEMA: &str = "CREATE TABLE events (n bigint NOT NULL, writer int NOT NULL);
                      CREATE TABLE counters (id int PRIMARY KEY, value bigint NOT NULL);
                      INSERT INTO counters SELECT g, 0 FROM generate_series(1, 10) g;";

fn cluster(nodes: usize) -> Cluster {
    Cluster::started(env!("CARGO_BIN_EXE_ferry"), nodes, SCHEMA)
}

/// Writes small transactions straight to the master (Ferry may be down;
/// capture does not depend on it) until stopped; returns rows written.
fn writer(url: String, id: i32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut n = 0i64;
        while !stop.load(Ordering::Relaxed) {
            c.batch_execute(&format!(
                "BEGIN; INSERT INTO events SELECT g, {id} FROM generate_series({}, {}) g; \
                 UPDATE counters SET value = value + 1 WHERE id = {}; COMMIT",
                n + 1,
                n + 10,
                id % 10 + 1
            ))
            .await
            .unwrap();
            n += 10;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_ferry_mid_apply_loses_no_batch_and_applies_none_twice() {
    let mut c = cluster(3);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|i| writer(c.node_url(0), i, stop.clone()))
        .collect();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.kill_ferry();
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.start_ferry();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(
        written > 100,
        "the load was too small to mean anything: {written}"
    );
    c.wait_equal(Duration::from_secs(20))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    for i in 1..3 {
        let r = c.node_client(i).await;
        let row = r
            .query_one(
                "SELECT count(*), count(DISTINCT (n, writer)) FROM events",
                &[],
            )
            .await
            .unwrap();
        let (all, distinct): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(all, written, "replica {i}: rows missing or applied twice");
        assert_eq!(distinct, written);
        let batch: i64 = r
            .query_one("SELECT batch_id FROM ferry.applied", &[])
            .await
            .unwrap()
            .get(0);
        assert!(batch > 0);
    }
    let (ok, table) = c.verify(5);
    assert!(ok, "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_catches_up_from_where_it_was() {
    let c = cluster(3);
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(c.proxy_url(), 1, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.servers[2].stop().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let doc: serde_json::Value = serde_json::from_str(&c.status_json().unwrap()).unwrap();
    let node_c = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "c")
        .unwrap()
        .clone();
    assert_eq!(node_c["reachable"], false, "{doc}");
    assert!(node_c["last_error"].is_string(), "{doc}");
    assert!(
        doc["outbox_backlog"].as_i64().unwrap() > 0,
        "the outbox keeps what c has not applied: {doc}"
    );
    // And says for whom, in /status, `ferry status` and the log.
    c.wait_status(Duration::from_secs(10), "outbox kept for c", |doc| {
        doc["outbox_kept_for"] == "c"
    })
    .await;
    let out = c.ferry_admin(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(kept for c)"), "{text}");
    assert!(
        c.ferry_log()
            .contains("the outbox keeps every change replica c has not applied"),
        "{}",
        c.ferry_log()
    );
    c.servers[2].start().unwrap();
    // Once caught up, c joins b: both stand at the same batch while writes
    // go on (one cut serves every replica again, not one cut per replica).
    let applied = |doc: &serde_json::Value, name: &str| {
        doc["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == name))
            .and_then(|n| n["applied_batch"].as_i64())
            .unwrap_or(-1)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut together = 0;
    while together < 5 {
        let doc: serde_json::Value =
            serde_json::from_str(&c.status_json().unwrap_or_default()).unwrap_or_default();
        let (b, cc) = (applied(&doc, "b"), applied(&doc, "c"));
        together = if b > 0 && b == cc { together + 1 } else { 0 };
        assert!(
            std::time::Instant::now() < deadline,
            "replicas did not join: b at {b}, c at {cc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!w.is_finished(), "the writer kept writing meanwhile");
    stop.store(true, Ordering::Relaxed);
    let written = w.await.unwrap();
    c.wait_equal(Duration::from_secs(20))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    let n: i64 = c
        .node_client(2)
        .await
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, written);
    c.wait_status(Duration::from_secs(10), "outbox released", |doc| {
        doc["outbox_kept_for"].is_null()
    })
    .await;
    assert!(c
        .ferry_log()
        .contains("the outbox is no longer kept for replica c"));
}

/// A replica whose position is older than the master's outbox clean-up
/// (it was out of the configuration while the rows it lacks were cleaned
/// up) is refused with an error that says what to do — never shipped
/// batches with holes — and the others go on; `ferry resync` brings it
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_outbox_clean_up_is_refused_then_resynced() {
    let c = cluster(3);
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO counters VALUES (100, 1)")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.servers[2].stop().unwrap();
    client
        .batch_execute("INSERT INTO counters VALUES (101, 1)")
        .await
        .unwrap();
    // As if c had been out of the configuration: the clean-up passed it.
    c.psql(
        0,
        "INSERT INTO ferry.cleaned (horizon) VALUES (pg_current_xact_id()) \
         ON CONFLICT (singleton) DO UPDATE SET horizon = EXCLUDED.horizon",
    );
    c.servers[2].start().unwrap();
    client
        .batch_execute("INSERT INTO counters VALUES (102, 1)")
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "c refused", || {
        let node_c = c.node_doc("c");
        let error = node_c["last_error"].as_str().unwrap_or_default();
        if node_c["reachable"] == false
            && error.contains("before the master's outbox clean-up")
            && error.contains("ferry resync c")
        {
            Ok(())
        } else {
            Err(node_c)
        }
    })
    .await;
    c.wait_psql(
        1,
        "SELECT count(*) FROM counters WHERE id >= 100",
        "3",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        c.psql(2, "SELECT count(*) FROM counters WHERE id >= 100")
            .trim(),
        "1",
        "c got no batch"
    );
    // `ferry resync c` copies the master's tables to it; it is shipped
    // batches again from the copy on, and holds everything.
    let out = c.ferry_admin(&["resync", "c"]);
    assert!(out.status.success(), "{out:?}\n{}", c.ferry_log());
    client
        .batch_execute("INSERT INTO counters VALUES (103, 1)")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(15)).await.unwrap();
    c.wait_status(Duration::from_secs(10), "c reachable", |doc| {
        doc["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == "c"))
            .is_some_and(|n| n["reachable"] == true && n["last_error"].is_null())
    })
    .await;
}

/// A master restarted within the failure window (here widened to 20
/// missed checks) stays master: no failover, replication resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_resumes_after_a_master_restart() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            schema: SCHEMA.into(),
            env: vec![("FERRY_HEALTH_FAILURES".into(), "20".into())],
            ..Default::default()
        },
    );
    c.start_ferry();
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO events VALUES (1, 0)")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.servers[0].stop().unwrap();
    c.servers[0].start().unwrap();
    // The old session died with the server; a new one works and replicates.
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO events VALUES (2, 0)")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(15))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
}

/// Stops (SIGSTOP) every process of one replica: the other replica keeps
/// receiving batches within seconds instead of waiting for the frozen one,
/// and once thawed the frozen one catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_does_not_hold_up_the_others() {
    let c = cluster(3);
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO events VALUES (0, 0)")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    let pid = c.servers[2].pid().expect("replica c runs").to_string();
    let freeze = |sig: &str| {
        // The postmaster's children first: running backends keep serving
        // when only the postmaster stops.
        let _ = std::process::Command::new("pkill")
            .args([&format!("-{sig}"), "-P", &pid])
            .status();
        c.servers[2].signal(sig).unwrap();
    };
    freeze("STOP");
    let mut worst = Duration::ZERO;
    for n in 1..=10i64 {
        client
            .batch_execute(&format!("INSERT INTO events VALUES ({n}, 0)"))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        while c
            .psql(1, &format!("SELECT count(*) FROM events WHERE n = {n}"))
            .trim()
            != "1"
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "row {n} did not reach b while c was frozen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worst = worst.max(started.elapsed());
    }
    assert!(
        worst < Duration::from_secs(5),
        "worst delay on b: {worst:?}"
    );
    freeze("CONT");
    c.wait_equal(Duration::from_secs(30))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
}

/// A replica that commits asynchronously (as these test servers do, and
/// as an operator may set replicas to) loses its last applied batches in a
/// kill -9. The master's clean-up keeps what it applied last until a later
/// pass (the position recorded one pass before the latest bounds it), so
/// the replica catches up by itself when it returns instead of being
/// refused as standing before the clean-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_loses_its_last_batches_in_a_crash_catches_up_by_itself() {
    let c = cluster(3);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|i| writer(c.node_url(0), i, stop.clone()))
        .collect();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        c.signal_server(1, "KILL");
        c.restart_server(1).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    c.wait_equal(Duration::from_secs(30))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.status_json().unwrap_or_default()));
    assert!(
        c.node_doc("b")["last_error"].is_null(),
        "{}",
        c.node_doc("b")
    );
}
