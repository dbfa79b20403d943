//! Real client programs through Ferry: pgbench TPC-B under load, psycopg 3
//! and JDBC. Each leaves the replicas equal to the master.

use ferry_testkit::{Cluster, Options, PASSWORD, USER};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ITEMS: &str =
    "CREATE TABLE items (id int PRIMARY KEY, name text, data bytea, price numeric(8,2));";

fn clients_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/clients"))
}

/// Debian's pgjdbc jar (libpostgresql-jdbc-java).
pub(crate) fn pgjdbc_jar() -> &'static str {
    [
        "/usr/share/java/postgresql.jar",
        "/usr/share/java/postgresql-jdbc4.jar",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("pgjdbc: apt-get install libpostgresql-jdbc-java")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_8_clients_for_30s_leaves_replicas_equal() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 3,
            ..Default::default()
        },
    );
    // pgbench -i writes the same deterministic rows on every node.
    for s in &c.servers {
        run(Command::new("pgbench").args([
            "-i",
            "-q",
            "-s",
            "2",
            "-h",
            &s.socket_dir(),
            "-p",
            &s.port.to_string(),
            "-U",
            USER,
            "app",
        ]));
    }
    c.start_ferry();
    let out = run(Command::new("pgbench").env("PGPASSWORD", PASSWORD).args([
        "-n",
        "-c",
        "8",
        "-j",
        "2",
        "-T",
        "30",
        "-h",
        "127.0.0.1",
        "-p",
        &c.proxy_port.to_string(),
        "-U",
        USER,
        "app",
    ]));
    let processed: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(processed > 1000, "{out}");
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    c.wait_equal(Duration::from_secs(30))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    let (ok, table) = c.verify(5);
    assert!(ok, "{table}");
    let history: i64 = c
        .node_client(2)
        .await
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(history as u64, processed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_and_jdbc_work_through_ferry() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            schema: ITEMS.into(),
            ..Default::default()
        },
    );
    c.start_ferry();
    let out = run(Command::new("python3")
        .arg(clients_dir().join("psycopg_check.py"))
        .env("DSN", c.proxy_url()));
    assert!(out.contains("count 38"), "{out}");
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.psql(0, "DELETE FROM items");
    let jar = pgjdbc_jar();
    let out = run(Command::new("java")
        .args(["-cp", jar])
        .arg(clients_dir().join("JdbcCheck.java"))
        .arg(format!("jdbc:postgresql://127.0.0.1:{}/app", c.proxy_port)));
    assert!(out.contains("count 21"), "{out}");
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
}
