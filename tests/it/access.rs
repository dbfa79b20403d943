//! Who may change what the cluster does: the admin endpoint's token, its
//! refusal to listen beyond loopback without one, and force-master kept
//! for clusters that cannot decide by themselves.

use ferry_testkit::{Cluster, Options};
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "t0ken-for-tests";

fn with_token() -> Options {
    Options {
        nodes: 3,
        schema: "CREATE TABLE t (id int PRIMARY KEY);".into(),
        env: vec![("FERRY_ADMIN_TOKEN".into(), TOKEN.into())],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_without_the_token_get_401_and_change_nothing() {
    let mut c = Cluster::new(env!("CARGO_BIN_EXE_ferry"), with_token());
    c.start_ferry();
    c.wait_replicas_serving(2).await;
    for (path, body) in [
        ("/switchover", Some(r#"{"to": "b"}"#)),
        ("/nodes/c/remove", None),
        ("/force-master", Some(r#"{"node": "b"}"#)),
    ] {
        for token in [None, Some("wrong")] {
            let (code, text) = c.admin_call_as(token, "POST", path, body);
            assert_eq!(code, 401, "{path} with {token:?}: {text}");
        }
    }
    let doc = c.status_doc();
    assert_eq!(doc["master"], "a", "{doc}");
    assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(3), "{doc}");
    assert!(c.ferry_log().contains("admin request refused"));
    // A command without the token is refused too, and says why.
    let admin = format!("http://127.0.0.1:{}", c.admin_port);
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["switchover", "--to", "b", "--admin", &admin])
        .env_remove("FERRY_ADMIN_TOKEN")
        .output()
        .expect("ferry switchover");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With it, the same command works.
    let out = c.ferry_admin(&["switchover", "--to", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_status(Duration::from_secs(20), "b is master", |d| {
        d["master"] == "b"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_text_in_status_is_shown_only_with_the_token() {
    let mut c = Cluster::new(env!("CARGO_BIN_EXE_ferry"), with_token());
    c.start_ferry();
    let client = c.proxy_client().await;
    client
        .batch_execute("CREATE TABLE secret_plans (id int PRIMARY KEY)")
        .await
        .expect("DDL");
    c.wait_status(Duration::from_secs(20), "the change is listed", |d| {
        d["schema_changes"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    })
    .await;
    let (code, open) = c.admin_get("/status");
    assert_eq!(code, 200);
    assert!(!open.contains("secret_plans (id"), "{open}");
    assert!(open.contains("redacted"), "{open}");
    let (_, full) = c.admin_call_as(Some(TOKEN), "GET", "/status", None);
    assert!(
        full.contains("CREATE TABLE secret_plans (id int PRIMARY KEY)"),
        "{full}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_endpoint_beyond_loopback_without_a_token_does_not_start() {
    let c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 1,
            env: vec![("FERRY_ADMIN_LISTEN".into(), "0.0.0.0:0".into())],
            ..Default::default()
        },
    );
    let out = c.ferry(&["run", "--config", &c.config_path.display().to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.listen") && err.contains("token"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_master_is_refused_while_the_cluster_has_a_master() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE t (id int PRIMARY KEY);",
    );
    let (code, body) = c.admin_call("POST", "/force-master", Some(r#"{"node": "b"}"#));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("decides by itself"), "{body}");
    let doc = c.status_doc();
    assert_eq!(doc["master"], "a", "{doc}");
    assert_eq!(ferry_testkit::node(&doc, "b")["role"], "replica", "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_serves_https_with_the_proxys_certificate() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            ..with_token()
        },
    );
    let certs = ferry::certs::make(c.path(), &["localhost", "127.0.0.1"]).expect("certificates");
    for (k, v) in [
        ("FERRY_PROXY_TLS_CERT", certs.cert.display().to_string()),
        ("FERRY_PROXY_TLS_KEY", certs.key.display().to_string()),
        ("FERRY_ADMIN_TLS", "true".to_string()),
        ("FERRY_TLS_CA", certs.ca.display().to_string()),
    ] {
        c.set_ferry_env(k, &v);
    }
    c.start_ferry();
    // The commands speak HTTPS, checking the certificate ...
    c.wait_replicas_serving(1).await;
    let doc = c.status_doc();
    assert_eq!(doc["master"], "a", "{doc}");
    let out = c.ferry_admin(&["switchover", "--to", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and plain HTTP gets no HTTP answer (the connection ends in a
    // failed handshake; whether the request is written first is a race).
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.admin_port)).expect("connect");
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}
