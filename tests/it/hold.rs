//! Hold, don't fail: when the master is lost, sessions move to the new
//! master. An idle session keeps its settings and prepared statements and
//! notices nothing; a transaction that was open ends with 40001; a
//! statement in flight ends with 08007; a session with temporary tables
//! ends with 08006.

use ferry_testkit::Cluster;
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

const SCHEMA: &str =
    "CREATE SCHEMA app; CREATE TABLE public.items (id int PRIMARY KEY, v text NOT NULL);";

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
         PREPARE count_items AS SELECT count(*) FROM items; \
         SELECT set_config('app.tenant', '42', false), set_config('app.scratch', 'x', true)",
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
    // Nor can one whose session setting came from a parameter (Ferry
    // does not know its value).
    let tenant = c.proxy_client().await;
    tenant
        .query("SELECT set_config('app.tenant', $1, false)", &[&"7"])
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();

    c.signal_server(0, "KILL");
    // A backend outlives its postmaster until its next wait notices the
    // death; a statement that reaches it before then may still run there
    // (Ferry rightly answers 08007 for it). Idle here means idle on a dead
    // master: give the backends that moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The idle session: its next statements run on b, with its settings
    // and prepared statements, and it never saw an error.
    idle.execute(&insert, &[&2i32, &"after"])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", c.ferry_log()));
    assert_eq!(one(&idle, "SHOW port").await, port_b);
    assert_eq!(one(&idle, "SHOW application_name").await, "mover");
    assert_eq!(one(&idle, "SHOW search_path").await, "app, public");
    assert_eq!(one(&idle, "SHOW app.tenant").await, "42");
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
    let err = tenant.batch_execute("SHOW app.tenant").await.unwrap_err();
    assert!(
        code(&err) == Some("08006") || err.is_closed(),
        "a session with a setting Ferry cannot replay ends: {err:?}"
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

/// A COMMIT sent to a master that freezes before answering, and is then
/// failed over, ends with 08007: its outcome is unknown (the old master
/// commits it when it wakes). `ferry resync` of the old master keeps that
/// late commit in its quarantine; the new master never has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_flight_on_a_frozen_master_ends_with_08007_and_a_late_commit_is_quarantined() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, SCHEMA);
    let client = c.proxy_client().await;
    client
        .batch_execute("BEGIN; INSERT INTO items VALUES (1, 'late')")
        .await
        .unwrap();
    c.signal_server(0, "STOP");
    let committing = tokio::spawn(async move { (client.batch_execute("COMMIT").await, client) });
    let (answer, client) = tokio::time::timeout(Duration::from_secs(30), committing)
        .await
        .expect("the COMMIT is answered after the failover")
        .unwrap();
    let err = answer.unwrap_err();
    assert_eq!(code(&err), Some("08007"), "{err:?}");
    let message = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("outcome is unknown") && message.contains("quarantine"),
        "{message}"
    );
    // The session goes on, idle, on the new master.
    client
        .batch_execute("INSERT INTO items VALUES (2, 'after')")
        .await
        .unwrap();
    c.signal_server(0, "CONT");
    // Whatever the old master did with the COMMIT, b does not have it.
    assert_eq!(
        c.psql(1, "SELECT string_agg(id::text, ',' ORDER BY id) FROM items")
            .trim(),
        "2"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let committed_late = c.psql(0, "SELECT count(*) FROM items WHERE id = 1").trim() == "1";
    let out = c.ferry_admin(&["resync", "a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = c.psql(
        0,
        "SELECT count(*) FROM ferry.quarantine WHERE row_image->>'id' = '1'",
    );
    assert_eq!(kept.trim(), if committed_late { "1" } else { "0" });
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
}

const BANK: &str = "CREATE TABLE acct (id int PRIMARY KEY, bal bigint NOT NULL);
    INSERT INTO acct SELECT g, 1000 FROM generate_series(1, 20) g;
    CREATE TABLE log (w int NOT NULL, n int NOT NULL, PRIMARY KEY (w, n));";

/// Writers that keep going until told to stop: transfers in explicit
/// transactions (several round trips) and autocommit inserts. Returns
/// each writer's acknowledged log entries and every error it saw.
fn writers(
    c: &Cluster,
    count: i32,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(i32, Vec<String>)>> {
    use std::sync::atomic::Ordering;
    (0..count)
        .map(|w| {
            let stop = stop.clone();
            let url = c.proxy_url();
            tokio::spawn(async move {
                let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut acked = 0;
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = acked + 1;
                    let (from, to) = ((n + w) % 20 + 1, (n * 7 + w) % 20 + 1);
                    // Rows are locked in id order: no deadlocks between
                    // writers.
                    let mut moves = [(from, -1i64), (to, 1i64)];
                    moves.sort();
                    let r = async {
                        let tx = client.transaction().await?;
                        for (id, delta) in moves {
                            tx.execute(
                                "UPDATE acct SET bal = bal + $2 WHERE id = $1",
                                &[&id, &delta],
                            )
                            .await?;
                        }
                        tx.commit().await?;
                        client
                            .execute("INSERT INTO log VALUES ($1, $2)", &[&w, &n])
                            .await
                    }
                    .await;
                    match r {
                        Ok(_) => acked = n,
                        Err(e) => {
                            errors.push(format!("{e:?}"));
                            break;
                        }
                    }
                }
                (acked, errors)
            })
        })
        .collect()
}

/// A planned switchover under write load: no statement fails, every
/// acknowledged write is on the new master and on both replicas (the old
/// master among them), and the books balance everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_under_load_fails_no_statement() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 3, BANK);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let running = writers(&c, 4, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, body) = c.admin_call("POST", "/switchover", Some(r#"{"to": "b"}"#));
    assert_eq!(code, 200, "{body}\n{}", c.ferry_log());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for r in running {
        let (n, errors) = r.await.unwrap();
        assert!(errors.is_empty(), "a statement failed: {errors:?}");
        assert!(n > 0);
        acked += n;
    }
    let doc = c.status_doc();
    assert_eq!(doc["master"], "b", "{doc}");
    assert_eq!(doc["epoch"], 2, "{doc}");
    assert_eq!(c.node_doc("a")["role"], "replica", "{doc}");
    assert_eq!(c.node_doc("c")["role"], "replica", "{doc}");
    assert!(doc["switchover"]["last"]["held_ms"].is_u64(), "{doc}");
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
    for i in 0..3 {
        assert_eq!(
            c.psql(i, "SELECT count(*) FROM log").trim(),
            acked.to_string()
        );
        assert_eq!(c.psql(i, "SELECT sum(bal) FROM acct").trim(), "20000");
    }
    let (ok, report) = c.verify(20);
    assert!(ok, "{report}");
    // The old master follows the new one.
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO log VALUES (99, 1)", &[])
        .await
        .unwrap();
    c.wait_psql(
        0,
        "SELECT count(*) FROM log WHERE w = 99",
        "1",
        Duration::from_secs(20),
    )
    .await;
}

/// A switchover that cannot drain (a transaction stays open) is cancelled
/// as a whole: nothing changes, the transaction goes on and commits, and
/// the statements held meanwhile run on the old master. Requests that
/// cannot be carried out are refused with distinct errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_that_cannot_drain_changes_nothing() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        ferry_testkit::Options {
            nodes: 2,
            schema: BANK.into(),
            env: vec![("FERRY_SWITCHOVER_DRAIN_TIMEOUT_MS".into(), "700".into())],
            ..Default::default()
        },
    );
    c.start_ferry();
    c.wait_replicas_serving(1).await;
    let port_a = c.psql(0, "SHOW port").trim().to_string();
    assert_eq!(
        c.admin_call("POST", "/switchover", Some(r#"{"to": "a"}"#))
            .0,
        409
    );
    assert_eq!(
        c.admin_call("POST", "/switchover", Some(r#"{"to": "zz"}"#))
            .0,
        404
    );
    let open = c.proxy_client().await;
    open.batch_execute("BEGIN; UPDATE acct SET bal = bal - 5 WHERE id = 1")
        .await
        .unwrap();
    let other = c.proxy_client().await;
    let switch = tokio::task::spawn_blocking({
        let admin = c.ferry_admin(&["switchover", "--to", "b"]);
        move || admin
    });
    let out = switch.await.unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("cancelled"), "{said}");
    // Nothing changed: the transaction commits on a, others write there.
    open.batch_execute("UPDATE acct SET bal = bal + 5 WHERE id = 2; COMMIT")
        .await
        .unwrap();
    assert_eq!(one(&other, "SHOW port").await, port_a);
    other
        .batch_execute("INSERT INTO log VALUES (1, 1)")
        .await
        .unwrap();
    let doc = c.status_doc();
    assert_eq!(doc["master"], "a", "{doc}");
    assert_eq!(doc["switchover"]["holding"], false, "{doc}");
    // Without the open transaction it goes through.
    let (code, body) = c.admin_call("POST", "/switchover", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        one(&other, "SHOW port").await,
        c.psql(1, "SHOW port").trim()
    );
    assert_eq!(
        one(&open, "SELECT bal FROM acct WHERE id = 2").await,
        "1005"
    );
}

/// A stop (SIGTERM) ends Ferry as a PostgreSQL server's shutdown would:
/// new sessions are refused at once; a transaction under way may still
/// commit; a new statement of an idle session waits; once
/// `shutdown_timeout_ms` has passed (a transaction never ending holds it
/// no longer), every session ends with 57P01. The batcher stops once, no
/// session is moved, and the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_transactions_finish_then_ends_every_session_with_57p01() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        ferry_testkit::Options {
            nodes: 2,
            schema: SCHEMA.into(),
            env: vec![("FERRY_PROXY_SHUTDOWN_TIMEOUT_MS".into(), "3000".into())],
            ..Default::default()
        },
    );
    c.start_ferry();
    let idle = c.proxy_client().await;
    let busy = c.proxy_client().await;
    busy.batch_execute("BEGIN; INSERT INTO items VALUES (1, 'under way')")
        .await
        .unwrap();
    let stuck = c.proxy_client().await;
    stuck
        .batch_execute("BEGIN; INSERT INTO items VALUES (2, 'never committed')")
        .await
        .unwrap();
    let stopped_at = std::time::Instant::now();
    c.signal_ferry("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio_postgres::connect(&c.proxy_url(), tokio_postgres::NoTls)
            .await
            .is_err(),
        "a new session after the stop"
    );
    busy.batch_execute("COMMIT").await.unwrap();
    let held = idle.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(code(&held), Some("57P01"), "{held:?}");
    let waited = stopped_at.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(8),
        "sessions ended after {waited:?}"
    );
    assert!(stuck.batch_execute("SELECT 1").await.is_err());
    let exited = c.wait_ferry_exit(Duration::from_secs(10));
    let log = c.ferry_log();
    assert_eq!(exited, Some(true), "{log}");
    assert_eq!(log.matches("batcher restarting").count(), 0, "{log}");
    assert_eq!(log.matches("moving the session").count(), 0, "{log}");
    assert_eq!(
        c.psql(0, "SELECT string_agg(v, ',') FROM items").trim(),
        "under way"
    );
}
