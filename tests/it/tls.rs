//! TLS on both sides: clients reach Ferry over TLS (psql with
//! `verify-full`, psycopg, JDBC), a plaintext client is refused when TLS is
//! required, and Ferry reaches nodes whose DSN says `sslmode=require` over
//! TLS, for every kind of session.

use ferry::certs::{make, CertFiles};
use ferry_testkit::{Cluster, Options, DB, PASSWORD, USER};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ITEMS: &str =
    "CREATE TABLE items (id int PRIMARY KEY, name text, data bytea, price numeric(8,2));";

/// A cluster whose proxy port takes TLS as `mode` says, with certificates
/// made for it.
fn cluster(mode: &str, nodes: usize) -> (Cluster, CertFiles) {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes,
            schema: ITEMS.into(),
            ..Default::default()
        },
    );
    let certs = make(c.path(), &["localhost", "127.0.0.1"]).expect("certificates");
    for (k, v) in [
        ("FERRY_PROXY_TLS", mode.to_string()),
        ("FERRY_PROXY_TLS_CERT", certs.cert.display().to_string()),
        ("FERRY_PROXY_TLS_KEY", certs.key.display().to_string()),
    ] {
        c.set_ferry_env(k, &v);
    }
    (c, certs)
}

fn psql(conninfo: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-q", "-At", "-d", conninfo, "-c", sql])
        .output()
        .expect("psql")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verifies_ferrys_certificate_and_a_plaintext_client_is_refused_when_tls_is_required() {
    let (mut c, certs) = cluster("require", 2);
    c.start_ferry();
    let base = format!(
        "host=127.0.0.1 port={} dbname={DB} user={USER} password={PASSWORD}",
        c.proxy_port
    );
    let out = psql(
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            certs.ca.display()
        ),
        "INSERT INTO items VALUES (1, 'over tls') RETURNING name",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls");
    let out = psql(
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            certs.ca.display()
        ),
        "\\conninfo",
    );
    assert!(text(&out).contains("SSL connection"), "{}", text(&out));
    // A name the certificate does not carry fails verify-full.
    let wrong = format!(
        "host=127.0.0.2 port={} dbname={DB} user={USER} password={PASSWORD} sslmode=verify-full sslrootcert={}",
        c.proxy_port,
        certs.ca.display()
    );
    assert!(!psql(&wrong, "SELECT 1").status.success());
    let out = psql(&format!("{base} sslmode=disable"), "SELECT 1");
    assert!(!out.status.success());
    assert!(text(&out).contains("accepts only TLS"), "{}", text(&out));
    c.wait_psql(
        1,
        "SELECT name FROM items",
        "over tls",
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_jdbc_work_over_tls() {
    let (mut c, certs) = cluster("allow", 2);
    c.start_ferry();
    let clients = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/clients"));
    let ca = certs.ca.display().to_string();
    let out = Command::new("python3")
        .arg(clients.join("psycopg_check.py"))
        .env(
            "DSN",
            format!("{}?sslmode=verify-full&sslrootcert={ca}", c.proxy_url()),
        )
        .output()
        .expect("python3");
    assert!(
        out.status.success() && text(&out).contains("count 38"),
        "{}",
        text(&out)
    );
    c.psql(0, "DELETE FROM items");
    c.wait_psql(
        1,
        "SELECT count(*) FROM items",
        "0",
        Duration::from_secs(20),
    )
    .await;
    let jar = crate::clients::pgjdbc_jar();
    let out = Command::new("java")
        .args(["-cp", jar])
        .arg(clients.join("JdbcCheck.java"))
        .arg(format!(
            "jdbc:postgresql://127.0.0.1:{}/app?sslmode=verify-full&sslrootcert={ca}",
            c.proxy_port
        ))
        .output()
        .expect("java");
    assert!(
        out.status.success() && text(&out).contains("count 21"),
        "{}",
        text(&out)
    );
    c.wait_equal(Duration::from_secs(20))
        .await
        .unwrap_or_else(|d| panic!("{d}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_dsn_requires_tls_are_reached_over_tls_by_every_session() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            schema: ITEMS.into(),
            ..Default::default()
        },
    );
    let certs = make(c.path(), &["localhost", "127.0.0.1"]).expect("certificates");
    for i in 0..2 {
        c.servers[i]
            .enable_ssl(&certs.cert, &certs.key)
            .expect("ssl on");
        let name = c.names[i].to_uppercase();
        let dsn = format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            c.node_url(i),
            certs.ca.display()
        );
        c.set_ferry_env(&format!("FERRY_NODE_{name}_DSN"), &dsn);
    }
    c.start_ferry();
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO items VALUES (1, 'to a TLS node')")
        .await
        .expect("insert");
    c.wait_psql(
        1,
        "SELECT name FROM items",
        "to a TLS node",
        Duration::from_secs(20),
    )
    .await;
    // Every session Ferry holds on each node (client, control, cut, apply)
    // is encrypted; psql's own (over the Unix socket) is left out.
    let plain = "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() \
                 AND NOT s.ssl";
    let encrypted = "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                     WHERE a.backend_type = 'client backend' AND s.ssl";
    for i in 0..2 {
        assert_eq!(c.psql(i, plain).trim(), "0", "node {i}");
        let n: i32 = c.psql(i, encrypted).trim().parse().expect("count");
        assert!(n >= 2, "node {i}: {n} encrypted sessions");
    }
    assert_eq!(
        c.psql(0, "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'app' AND s.ssl")
            .trim(),
        "1",
        "the client session's server session"
    );
}
