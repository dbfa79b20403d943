//! Failover: a failed master is fenced and the replica with the most
//! applied batches takes over; new sessions wait for it instead of failing.

use ferry_testkit::Cluster;
use serde_json::Value;
use std::time::{Duration, Instant};

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);";

fn status(c: &Cluster) -> Value {
    serde_json::from_str(&c.status_json().unwrap_or_default()).unwrap_or_default()
}

fn node<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == name))
        .unwrap_or(&Value::Null)
}

/// kill -9 of the master: within seconds a new session's write commits on
/// the replica that took over (it waited instead of failing); the new
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
    c.servers[0].signal("KILL").unwrap();
    // The open session ends (its master is gone) ...
    assert!(client
        .execute("INSERT INTO items VALUES (1000, 'lost')", &[])
        .await
        .is_err());
    // ... a new one waits for the failover and then writes on b.
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO items VALUES (51, 'after')", &[])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", c.ferry_log()));
    let took = killed.elapsed();
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
        "60",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        c.psql(2, "SELECT count(*) FROM items WHERE v = 'lost'")
            .trim(),
        "0"
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
    let stuck = c.proxy_client().await;
    stuck
        .batch_execute("BEGIN; INSERT INTO items VALUES (1, 'late')")
        .await
        .unwrap();
    let pid = c.servers[0].pid().expect("master runs").to_string();
    let freeze = |sig: &str| {
        let _ = std::process::Command::new("pkill")
            .args([&format!("-{sig}"), "-P", &pid])
            .status();
        c.servers[0].signal(sig).unwrap();
    };
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
