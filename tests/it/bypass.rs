//! Capture that clients cannot switch off: every way a client (or a
//! careless superuser) could keep rows from reaching the replicas is
//! refused, or found, shown and repaired; no row is lost silently.

use ferry_testkit::{eventually, Cluster, Options, DB, PASSWORD, USER};
use std::time::Duration;
use tokio_postgres::NoTls;

const T: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);";

fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_set_the_replication_role_by_any_route() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, T);
    let client = c.proxy_client().await;
    for sql in [
        "SET session_replication_role = replica",
        "SELECT set_config('session_replication_role', 'replica', false)",
        "SET ferry.in_ddl = on",
    ] {
        let e = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), Some("42501"), "{sql}: {e:?}");
    }
    // The extended protocol too: the refusal comes in the statement's place.
    let e = client
        .query(
            "SELECT set_config('session_replication_role', $1, false)",
            &[&"replica"],
        )
        .await
        .expect_err("set_config through a prepared statement");
    assert_eq!(sqlstate(&e), Some("42501"), "{e:?}");
    // The session goes on, capturing.
    client
        .batch_execute("INSERT INTO t VALUES (1, 'after the refusals')")
        .await
        .expect("the session still works");
    let url = format!(
        "postgresql://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}?options=-csession_replication_role%3Dreplica",
        c.proxy_port
    );
    let e = tokio_postgres::connect(&url, NoTls)
        .await
        .err()
        .expect("a startup option switching capture off was accepted");
    assert_eq!(sqlstate(&e), Some("42501"), "{e:?}");
    c.wait_psql(
        1,
        "SELECT v FROM t WHERE id = 1",
        "after the refusals",
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_owner_cannot_disable_or_drop_capture_nor_drop_ferrys_schema() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, T);
    let client = c.proxy_client().await;
    for sql in [
        "ALTER TABLE t DISABLE TRIGGER ALL",
        "ALTER TABLE t DISABLE TRIGGER USER",
        "ALTER TABLE t ENABLE REPLICA TRIGGER ferry_capture_trn",
        "DROP TRIGGER ferry_capture_trn ON t",
        "ALTER TRIGGER ferry_capture_trn ON t RENAME TO mine_now",
        "DROP SCHEMA ferry CASCADE",
    ] {
        let e = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), Some("42501"), "{sql}: {e:?}");
    }
    // The owner's own triggers are theirs to switch.
    client
        .batch_execute(
            "CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
             CREATE TRIGGER mine BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION noop();
             ALTER TABLE t DISABLE TRIGGER mine",
        )
        .await
        .expect("disabling one's own trigger by name");
    for i in 1..=20 {
        client
            .execute("INSERT INTO t VALUES ($1, 'x')", &[&i])
            .await
            .expect("insert");
    }
    c.wait_psql(1, "SELECT count(*) FROM t", "20", Duration::from_secs(20))
        .await;
    let (ok, out) = c.verify(5);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_switched_off_by_another_superuser_is_refused_or_found_shown_and_repaired() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            schema: T.into(),
            // Passes two seconds apart: /health shows the broken capture
            // for that long.
            env: vec![("FERRY_REPLICATION_HOUSEKEEPING_MS".into(), "2000".into())],
            ..Default::default()
        },
    );
    c.start_ferry();
    c.psql(0, "CREATE ROLE dba SUPERUSER LOGIN");
    let dba = |sql: &str| {
        c.servers[0]
            .psql_as("dba", DB, sql)
            .map_err(|e| e.to_string())
    };
    let refused = dba("DROP SCHEMA ferry CASCADE").expect_err("DROP SCHEMA ferry by a superuser");
    assert!(refused.contains("capture cannot be dropped"), "{refused}");
    let refused = dba("ALTER TABLE t DISABLE TRIGGER USER").expect_err("DISABLE TRIGGER");
    assert!(refused.contains("cannot be disabled"), "{refused}");
    // What the event triggers cannot see: a superuser switching them off
    // first.
    dba("ALTER EVENT TRIGGER ferry_guard DISABLE; ALTER TABLE t DISABLE TRIGGER USER")
        .expect("sabotage");
    eventually(Duration::from_secs(15), "/health 503", || {
        match c.admin_get("/health") {
            (503, body) if body.contains("capture on the master is not intact") => Ok(()),
            other => Err(other),
        }
    })
    .await;
    c.wait_status(Duration::from_secs(15), "capture repaired", |d| {
        d["capture"]["problems"]
            .as_array()
            .is_some_and(|p| p.is_empty())
            && d["capture"]["last_repair"]["problems"].is_array()
    })
    .await;
    assert_eq!(c.admin_get("/health").0, 200);
    assert_eq!(
        c.psql(
            0,
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass AND tgenabled = 'D'"
        )
        .trim(),
        "0"
    );
    assert!(c
        .ferry_log()
        .contains("capture on the master is not intact"));
    let status = String::from_utf8_lossy(&c.ferry_admin(&["status"]).stdout).into_owned();
    assert!(status.contains("capture repaired at"), "{status}");
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO t VALUES (7, 'captured again')")
        .await
        .expect("insert");
    c.wait_psql(
        1,
        "SELECT v FROM t WHERE id = 7",
        "captured again",
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_ids_continue_above_the_replicas_ledger_after_they_were_restarted() {
    let mut c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, T);
    let client = c.proxy_client().await;
    for i in 1..=5 {
        client
            .execute("INSERT INTO t VALUES ($1, 'before')", &[&i])
            .await
            .expect("insert");
    }
    c.wait_psql(1, "SELECT count(*) FROM t", "5", Duration::from_secs(20))
        .await;
    drop(client);
    c.kill_ferry();
    // A superuser restarts the master's batch ids (as a reinstalled
    // schema would); the replica's ledger holds higher ones.
    c.psql(0, "ALTER SEQUENCE ferry.batch_ids RESTART WITH 1");
    c.start_ferry();
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO t VALUES (6, 'after')")
        .await
        .expect("insert");
    c.wait_psql(
        1,
        "SELECT v FROM t WHERE id = 6",
        "after",
        Duration::from_secs(20),
    )
    .await;
}
