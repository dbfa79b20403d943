//! Hold, don't fail: when the master is lost, sessions move to the new
//! master. An idle session keeps its settings and prepared statements and
//! notices nothing; a transaction that was open ends with 40001; a
//! statement in flight ends with 08007; a session with temporary tables
//! ends with 08006.

use ferry_testkit::Cluster;
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

const SCHEMA: &str = "CREATE SCHEMA app; CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);";

/// The first column of the first row of a simple query.
async fn one(client: &Client, sql: &str) -> String {
    for m in client.simple_query(sql).await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            return r.get(0).unwrap_or_default().to_string();
        }
    }
    panic!("no row from {sql}");
}

fn code(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_move_to_the_new_master_when_the_master_is_killed() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, SCHEMA);
    let port_b = c.psql(1, "SHOW port").trim().to_string();

    // An idle session with settings and prepared statements.
    let idle = c.proxy_client().await;
    idle.batch_execute(
        "SET application_name = 'mover'; SET search_path = app, public; \
         PREPARE count_items AS SELECT count(*) FROM items",
    )
    .await
    .unwrap();
    let insert = idle
        .prepare("INSERT INTO items VALUES ($1, $2)")
        .await
        .unwrap();
    idle.execute(&insert, &[&1i32, &"before"]).await.unwrap();
    // Transactions open when the master dies: one goes on with a statement,
    // one commits.
    let open = c.proxy_client().await;
    open.batch_execute("BEGIN; INSERT INTO items VALUES (900, 'lost')")
        .await
        .unwrap();
    let committing = c.proxy_client().await;
    committing
        .batch_execute("BEGIN; INSERT INTO items VALUES (901, 'lost')")
        .await
        .unwrap();
    // A session with a temporary table cannot move.
    let temp = c.proxy_client().await;
    temp.batch_execute("CREATE TEMP TABLE scratch (a int)")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();

    c.signal_server(0, "KILL");

    // The idle session: its next statements run on b, with its settings
    // and prepared statements, and it never saw an error.
    idle.execute(&insert, &[&2i32, &"after"])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", c.ferry_log()));
    assert_eq!(one(&idle, "SHOW port").await, port_b);
    assert_eq!(one(&idle, "SHOW application_name").await, "mover");
    assert_eq!(one(&idle, "SHOW search_path").await, "app, public");
    assert_eq!(one(&idle, "SELECT count(*) FROM items").await, "2");
    assert_eq!(one(&idle, "EXECUTE count_items").await, "2");

    // The open transaction is gone: 40001, retryable; after ROLLBACK the
    // session goes on.
    let err = open
        .batch_execute("INSERT INTO items VALUES (902, 'lost')")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("40001"), "{err:?}");
    let err = open.batch_execute("SELECT 1").await.unwrap_err();
    assert!(
        matches!(code(&err), Some("40001" | "25P02")),
        "still in the failed transaction: {err:?}"
    );
    open.batch_execute("ROLLBACK").await.unwrap();
    open.batch_execute("INSERT INTO items VALUES (903, 'retried')")
        .await
        .unwrap();
    // COMMIT of a lost transaction fails with 40001 (not a silent ROLLBACK).
    let err = committing.batch_execute("COMMIT").await.unwrap_err();
    assert_eq!(code(&err), Some("40001"), "{err:?}");
    committing
        .batch_execute("INSERT INTO items VALUES (904, 'retried')")
        .await
        .unwrap();
    // The temporary table existed only on a.
    let err = temp
        .batch_execute("SELECT * FROM scratch")
        .await
        .unwrap_err();
    assert!(
        code(&err) == Some("08006") || err.is_closed(),
        "a session with a temporary table ends: {err:?}"
    );

    assert_eq!(
        c.psql(1, "SELECT string_agg(id::text, ',' ORDER BY id) FROM items")
            .trim(),
        "1,2,903,904"
    );
    let log = c.ferry_log();
    assert!(log.contains("session moved"), "{log}");
}

/// A statement that was running when the master froze cannot be known to
/// have committed or not: 08007. The session goes on on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_in_flight_on_a_frozen_master_ends_with_08007() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, SCHEMA);
    let port_b = c.psql(1, "SHOW port").trim().to_string();
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO items VALUES (1, 'before')")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    let running = tokio::spawn(async move {
        let r = client
            .batch_execute("SELECT pg_sleep(1); INSERT INTO items VALUES (2, 'unknown')")
            .await;
        (client, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.signal_server(0, "STOP");
    let (client, r) = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the statement is answered after the failover")
        .unwrap();
    c.signal_server(0, "CONT");
    let err = r.unwrap_err();
    assert_eq!(code(&err), Some("08007"), "{err:?}");
    assert_eq!(one(&client, "SHOW port").await, port_b);
    client
        .batch_execute("INSERT INTO items VALUES (3, 'after')")
        .await
        .unwrap();
    // The frozen master's late work is not registered on b.
    assert_eq!(
        c.psql(1, "SELECT string_agg(id::text, ',' ORDER BY id) FROM items")
            .trim(),
        "1,3"
    );
}
