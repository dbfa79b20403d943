//! Limits that keep Ferry and the cluster serving under a flood of
//! clients: `proxy.max_client_conn` answered by Ferry with 53300, room
//! left on the servers for Ferry's own sessions and a DBA, failed logins
//! logged and counted.

use ferry_testkit::{Cluster, Options, DB, USER};
use std::time::Duration;
use tokio_postgres::NoTls;

const T: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_logins_with_room_for_two_hundred_get_53300_from_ferry_and_replication_goes_on()
{
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            schema: T.into(),
            env: vec![
                ("FERRY_PROXY_MAX_CLIENT_CONN".into(), "200".into()),
                // The test's 200 clients compute SCRAM proofs in a debug
                // build on two cores: md5 keeps logins quick enough that
                // none runs into the startup timeout.
                ("FERRY_PROXY_AUTH".into(), "md5".into()),
            ],
            ..Default::default()
        },
    );
    // Room on each server for 200 client sessions, Ferry's own and a DBA.
    for i in 0..2 {
        c.psql(i, "ALTER SYSTEM SET max_connections = 300");
        c.servers[i].stop().expect("stop");
        c.servers[i].start().expect("start");
    }
    c.start_ferry();
    let url = c.proxy_url();
    let attempts: Vec<_> = (0..1000)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { tokio_postgres::connect(&url, NoTls).await })
        })
        .collect();
    let (mut held, mut full, mut other) = (Vec::new(), 0, Vec::new());
    for a in attempts {
        match a.await.expect("task") {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                held.push(client);
            }
            Err(e)
                if e.code().map(|c| c.code()) == Some("53300")
                    && e.as_db_error()
                        .is_some_and(|d| d.message().contains("max_client_conn")) =>
            {
                full += 1
            }
            Err(e) => other.push(format!("{e:?}")),
        }
    }
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((held.len(), full), (200, 800));
    // A DBA still logs in directly, and the batcher still replicates.
    let dba = c.node_client(0).await;
    dba.query_one("SELECT 1", &[]).await.expect("a DBA's login");
    held[0]
        .batch_execute("INSERT INTO t VALUES (1, 'while full')")
        .await
        .expect("write while full");
    c.wait_psql(
        1,
        "SELECT v FROM t WHERE id = 1",
        "while full",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(c.admin_get("/health").0, 200);
    let (_, metrics) = c.admin_get("/metrics");
    assert!(
        metrics.contains("ferry_client_connections_refused_full_total 800"),
        "{metrics}"
    );
    // A place frees when a session ends.
    drop(held.pop());
    let again = async {
        for _ in 0..100 {
            if let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await {
                tokio::spawn(conn);
                return Some(client);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    };
    assert!(again.await.is_some(), "no place after a session ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_logged_with_the_client_address_and_counted() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 1, T);
    for user in [USER, "nobody"] {
        let url = format!("postgresql://{user}:wrong@127.0.0.1:{}/{DB}", c.proxy_port);
        let e = tokio_postgres::connect(&url, NoTls)
            .await
            .err()
            .expect("a wrong password");
        assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{e:?}");
    }
    let (_, metrics) = c.admin_get("/metrics");
    assert!(
        metrics.contains("ferry_client_auth_failures_total 2"),
        "{metrics}"
    );
    let log = c.ferry_log();
    let line = log
        .lines()
        .find(|l| l.contains("client authentication failed") && l.contains("nobody"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("127.0.0.1:"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_limit_larger_than_a_nodes_room_is_logged_at_start() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            schema: T.into(),
            // The test servers take 200 sessions.
            env: vec![("FERRY_PROXY_MAX_CLIENT_CONN".into(), "500".into())],
            ..Default::default()
        },
    );
    c.start_ferry();
    let log = c.ferry_log();
    let warned = log
        .lines()
        .filter(|l| l.contains("larger than this node's room for client sessions"))
        .count();
    assert_eq!(warned, 2, "{log}");
}
