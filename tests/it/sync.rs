//! Synchronous commit (`mode = "sync"`): an acknowledged commit is on the
//! sync replicas even when the master dies right after; reads, failed
//! statements and rollbacks never wait; with `sync_fallback = "async"`
//! commits go on without the replicas, and say so.

use ferry_testkit::{eventually, Cluster, Options};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SCHEMA: &str = "CREATE TABLE acked (id bigint PRIMARY KEY, writer int NOT NULL);
                      CREATE TABLE side (id int PRIMARY KEY, v int NOT NULL);
                      INSERT INTO side VALUES (1, 0);";

fn sync_cluster(nodes: usize, extra_env: &[(&str, &str)]) -> Cluster {
    let mut env = vec![
        ("FERRY_REPLICATION_MODE".to_string(), "sync".to_string()),
        ("FERRY_REPLICATION_SYNC_REPLICAS".into(), "1".into()),
    ];
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes,
            schema: SCHEMA.into(),
            env,
            ..Default::default()
        },
    );
    c.start_ferry();
    c
}

/// Ids present on replica `i`, read from the server directly.
async fn ids_on(c: &Cluster, i: usize) -> HashSet<i64> {
    let client = c.node_client(i).await;
    client
        .query("SELECT id FROM acked", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_kill_9_of_the_master() {
    let c = sync_cluster(2, &[]);
    let client = c.proxy_client().await;
    let insert = client
        .prepare("INSERT INTO acked VALUES ($1, 0)")
        .await
        .unwrap();
    let mut acked = Vec::new();
    for id in 1..=1000i64 {
        client.execute(&insert, &[&id]).await.unwrap();
        acked.push(id);
    }
    // The instant the last acknowledgement arrives, the master dies.
    c.servers[0].signal("KILL").unwrap();
    let on_replica = ids_on(&c, 1).await;
    let missing: Vec<_> = acked.iter().filter(|id| !on_replica.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged commits missing on the sync replica, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acknowledged_commits_survive_kill_9_of_the_master() {
    let c = sync_cluster(3, &[]);
    let mut tasks = Vec::new();
    for writer in 0..4i32 {
        let client = c.proxy_client().await;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..250i64 {
                let id = writer as i64 * 1_000_000 + n;
                // Alternate autocommit (simple and extended protocol) and
                // explicit transactions that also touch a second table.
                match n % 3 {
                    0 => client
                        .execute("INSERT INTO acked VALUES ($1, $2)", &[&id, &writer])
                        .await
                        .map(|_| ()),
                    1 => {
                        client
                            .batch_execute(&format!("INSERT INTO acked VALUES ({id}, {writer})"))
                            .await
                    }
                    _ => {
                        client
                            .batch_execute(&format!(
                                "BEGIN; INSERT INTO acked VALUES ({id}, {writer}); \
                             UPDATE side SET v = v + 1 WHERE id = 1; COMMIT"
                            ))
                            .await
                    }
                }
                .unwrap();
                acked.push(id);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    c.servers[0].signal("KILL").unwrap();
    // k = 1: every acknowledged row is on at least one replica.
    let b = ids_on(&c, 1).await;
    let cc = ids_on(&c, 2).await;
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !b.contains(id) && !cc.contains(id))
        .collect();
    assert_eq!(acked.len(), 1000);
    assert!(
        missing.is_empty(),
        "{} acknowledged commits on no replica, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_replica_writes_wait_and_nothing_else_does() {
    let c = sync_cluster(2, &[]);
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO acked VALUES (1, 0)", &[])
        .await
        .unwrap();
    c.servers[1].stop().unwrap();
    let quick = Duration::from_secs(2);
    fn within<T>(what: &str) -> impl FnOnce(Result<T, tokio::time::error::Elapsed>) -> T + '_ {
        move |r| r.unwrap_or_else(|_| panic!("{what} waited for the missing replica"))
    }
    // Reads, failed statements and rolled-back transactions do not wait.
    let n: i64 = within("a read")(
        tokio::time::timeout(quick, client.query_one("SELECT count(*) FROM acked", &[])).await,
    )
    .unwrap()
    .get(0);
    assert_eq!(n, 1);
    let dup = within("a failed insert")(
        tokio::time::timeout(
            quick,
            client.execute("INSERT INTO acked VALUES (1, 0)", &[]),
        )
        .await,
    );
    assert_eq!(
        dup.unwrap_err().code().map(|c| c.code()),
        Some("23505"),
        "the master's error reaches the client unchanged"
    );
    within("a rollback")(
        tokio::time::timeout(
            quick,
            client.batch_execute("BEGIN; INSERT INTO acked VALUES (2, 0); ROLLBACK"),
        )
        .await,
    )
    .unwrap();
    within("a read-only transaction")(
        tokio::time::timeout(quick, client.batch_execute("BEGIN; SELECT 1; COMMIT")).await,
    )
    .unwrap();
    // A write commits on the master but is not acknowledged...
    let writer = c.proxy_client().await;
    let started = Instant::now();
    let pending = tokio::spawn(async move {
        writer
            .execute("INSERT INTO acked VALUES (3, 0)", &[])
            .await
            .map(|_| started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !pending.is_finished(),
        "a commit was acknowledged without its replica"
    );
    let on_master = c.psql(0, "SELECT count(*) FROM acked WHERE id = 3");
    assert_eq!(
        on_master.trim(),
        "1",
        "the commit itself happened on the master"
    );
    let status = c.status_json().unwrap_or_default();
    assert!(status.contains("\"waiting_commits\":1"), "{status}");
    // ...until the replica is back and has it.
    c.servers[1].start().unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("the commit was acknowledged once the replica returned")
        .unwrap()
        .unwrap();
    assert!(waited >= Duration::from_millis(1500));
    assert_eq!(
        c.psql(1, "SELECT count(*) FROM acked WHERE id = 3").trim(),
        "1"
    );
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_fallback_continues_without_the_replica_and_says_so() {
    let c = sync_cluster(
        2,
        &[
            ("FERRY_REPLICATION_SYNC_FALLBACK", "async"),
            ("FERRY_REPLICATION_SYNC_TIMEOUT_MS", "300"),
        ],
    );
    let client = c.proxy_client().await;
    c.servers[1].stop().unwrap();
    let started = Instant::now();
    client
        .execute("INSERT INTO acked VALUES (10, 0)", &[])
        .await
        .unwrap();
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(300),
        "the first commit waits the timeout: {first:?}"
    );
    // Degraded: the following commits do not wait at all.
    let started = Instant::now();
    for id in 11..20i64 {
        client
            .execute("INSERT INTO acked VALUES ($1, 0)", &[&id])
            .await
            .unwrap();
    }
    assert!(started.elapsed() < Duration::from_millis(1500));
    let status = c.status_json().unwrap_or_default();
    assert!(status.contains("\"degraded\":true"), "{status}");
    let (_, metrics) = c.admin_get("/metrics");
    assert!(metrics.contains("ferry_sync_degraded 1"), "{metrics}");
    assert!(c.ferry_log().contains("sync replication degraded"));
    // The replica returns: back to synchronous.
    c.servers[1].start().unwrap();
    eventually(Duration::from_secs(20), "sync mode back", || {
        let s = c.status_json().unwrap_or_default();
        if s.contains("\"degraded\":false") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    assert!(c.ferry_log().contains("sync replication restored"));
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
}

/// In sync mode a schema change is acknowledged once a replica has it:
/// right after `ALTER TABLE` returns, the sync replica has the new column,
/// and a row written with it right after is there when its commit returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_is_acknowledged_once_a_replica_has_it() {
    let c = sync_cluster(2, &[]);
    let client = c.proxy_client().await;
    let replica = c.node_client(1).await;
    for i in 0..5 {
        client
            .batch_execute(&format!("ALTER TABLE side ADD COLUMN c{i} int DEFAULT {i}"))
            .await
            .unwrap();
        let cols: i64 = replica
            .query_one(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'side' AND column_name = $1",
                &[&format!("c{i}")],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(cols, 1, "column c{i} on the replica when ALTER returned");
        client
            .execute(&format!("UPDATE side SET c{i} = 10 + {i}"), &[])
            .await
            .unwrap();
        let v: Option<i32> = replica
            .query_one(&format!("SELECT c{i} FROM side WHERE id = 1"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            v,
            Some(10 + i),
            "c{i} updated on the replica when UPDATE returned"
        );
    }
}

/// Commits held for the sync replicas when the master dies (the replicas
/// frozen for half a second around the kill) are answered, each within the
/// hold timeout: with SQLSTATE 08007 (the outcome on the old master is
/// unknown, and the new master does not have it), or as committed when
/// the new master does have it. No client is left waiting, and every
/// commit acknowledged is on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_held_for_the_replicas_are_answered_when_the_master_dies() {
    let c = sync_cluster(
        3,
        &[
            ("FERRY_PROXY_HOLD_TIMEOUT_MS", "10000"),
            ("FERRY_HEALTH_FAILURES", "3"),
        ],
    );
    let mut clients = Vec::new();
    for id in 0..6i64 {
        let client = c.proxy_client().await;
        client
            .batch_execute(&format!(
                "BEGIN; INSERT INTO acked VALUES ({}, 1)",
                1000 + id
            ))
            .await
            .unwrap();
        clients.push((1000 + id, client));
    }
    c.signal_server(1, "STOP");
    c.signal_server(2, "STOP");
    let commits: Vec<_> = clients
        .into_iter()
        .map(|(id, client)| {
            tokio::spawn(async move {
                let started = Instant::now();
                let answer =
                    tokio::time::timeout(Duration::from_secs(40), client.batch_execute("COMMIT"))
                        .await;
                (
                    id,
                    answer.map(|r| r.map_err(|e| e.code().cloned())),
                    started.elapsed(),
                )
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.signal_server(0, "KILL");
    c.signal_server(1, "CONT");
    c.signal_server(2, "CONT");
    let mut acked = Vec::new();
    let mut unknown = 0;
    for t in commits {
        let (id, answer, took) = t.await.unwrap();
        match answer {
            Err(_) => panic!(
                "the COMMIT of {id} got no answer in 40 s\n{}",
                c.ferry_log()
            ),
            Ok(Ok(())) => acked.push(id),
            Ok(Err(code)) => {
                assert_eq!(
                    code,
                    Some(tokio_postgres::error::SqlState::TRANSACTION_RESOLUTION_UNKNOWN),
                    "{id}"
                );
                unknown += 1;
            }
        }
        assert!(
            took < Duration::from_secs(25),
            "{id} answered after {took:?}"
        );
    }
    // Some commits were in a batch that reached the frozen replicas' sockets
    // before the master died (they apply it when they wake): those are
    // acknowledged; the others are not on the new master.
    assert_eq!(unknown + acked.len(), 6);
    // Whatever was acknowledged is on the new master.
    eventually(Duration::from_secs(20), "a new master", || {
        let doc = c.status_doc();
        let m = doc["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["role"] == "master").cloned());
        match m {
            Some(m) if m["name"] != "a" => Ok(()),
            _ => Err(doc),
        }
    })
    .await;
    let client = c.proxy_client().await;
    for id in acked {
        let n: i64 = client
            .query_one("SELECT count(*) FROM acked WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "acknowledged commit {id} is missing");
    }
}

/// The same, with the replicas' apply blocked by a lock (a long query on
/// the replicas, say) instead of frozen: the new master does not have the
/// held commits, so each ends with 08007 — and when the lock goes, the old
/// master's batch that waited for it is refused there (the node was fenced
/// meanwhile) instead of bringing those commits back behind the clients'
/// backs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_held_when_the_master_dies_stay_unknown_to_the_new_master() {
    let c = sync_cluster(
        3,
        &[
            ("FERRY_PROXY_HOLD_TIMEOUT_MS", "10000"),
            ("FERRY_HEALTH_FAILURES", "3"),
        ],
    );
    let mut clients = Vec::new();
    for id in 0..4i64 {
        let client = c.proxy_client().await;
        client
            .batch_execute(&format!(
                "BEGIN; INSERT INTO acked VALUES ({}, 2)",
                2000 + id
            ))
            .await
            .unwrap();
        clients.push((2000 + id, client));
    }
    let mut locks = Vec::new();
    for i in 1..3 {
        let l = c.node_client(i).await;
        l.batch_execute("BEGIN; LOCK TABLE acked IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        locks.push(l);
    }
    let commits: Vec<_> = clients
        .into_iter()
        .map(|(id, client)| {
            tokio::spawn(async move {
                let answer =
                    tokio::time::timeout(Duration::from_secs(40), client.batch_execute("COMMIT"))
                        .await;
                (id, answer.map(|r| r.map_err(|e| e.code().cloned())))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.signal_server(0, "KILL");
    for t in commits {
        let (id, answer) = t.await.unwrap();
        assert_eq!(
            answer.ok(),
            Some(Err(Some(
                tokio_postgres::error::SqlState::TRANSACTION_RESOLUTION_UNKNOWN
            ))),
            "the COMMIT of {id}\n{}",
            c.ferry_log()
        );
    }
    for l in &locks {
        l.batch_execute("COMMIT").await.unwrap();
    }
    // The nodes left agree, without the commits nobody was told of.
    eventually(Duration::from_secs(20), "b and c equal", || {
        let q = "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM acked";
        let (b, cc) = (c.psql(1, q), c.psql(2, q));
        if b == cc {
            Ok(b)
        } else {
            Err((b, cc))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 1..3 {
        assert_eq!(
            c.psql(i, "SELECT count(*) FROM acked WHERE id >= 2000")
                .trim(),
            "0",
            "node {i}\n{}",
            c.ferry_log()
        );
    }
}
