//! After a total outage: the nodes' recorded states decide who is master,
//! or Ferry waits and says why; an operator can force a master.

use ferry_testkit::node;
use ferry_testkit::Cluster;
use serde_json::Value;
use std::time::{Duration, Instant};

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);";

fn status(c: &Cluster) -> Value {
    c.status_doc()
}

/// The two-node sequences after a total outage: a (master) fails and b
/// takes over alone; then b fails too and Ferry stops. a restarted alone
/// cannot decide (it had a caught-up replica, which took over): writers get
/// 57P03 naming b. When b returns, b is master again and a stays fenced;
/// the same when both are back when Ferry starts. The servers' clocks are
/// skewed so that wall-clock order contradicts the real order: decisions
/// follow epochs and states only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_total_outage_the_recorded_states_decide() {
    // The clocks disagree by two days, against the truth: a (master at
    // epoch 1) runs a day ahead, b (master at epoch 2) a day behind, so
    // every record a wrote looks newer than b's.
    let mut c = outage_cluster(Some(("+1d", "-1d"))).await;
    // a alone.
    c.servers[0].start_skewed("+1d").unwrap();
    let skew: i64 = c
        .psql(0, "SELECT extract(epoch FROM now())::bigint")
        .trim()
        .parse()
        .unwrap();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (skew - real - 86_400).abs() < 600,
        "a's clock is a day ahead"
    );
    c.start_ferry();
    let doc = status(&c);
    assert!(
        doc["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("waiting for b")),
        "{doc}"
    );
    let err = tokio_postgres::connect(&c.proxy_url(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("no master: the session is refused");
    assert_eq!(err.code().map(|c| c.code()), Some("57P03"), "{err:?}");
    assert!(err.to_string().contains('b') || format!("{err:?}").contains("waiting for b"));
    // b returns: it was master last.
    c.servers[1].start_skewed("-1d").unwrap();
    let client = eventually_client(&c).await;
    client
        .execute("INSERT INTO items VALUES (3, 'b again')", &[])
        .await
        .unwrap();
    let doc = status(&c);
    assert_eq!(doc["master"], "b", "{doc}");
    assert_eq!(doc["epoch"], 2, "{doc}");
    assert_eq!(node(&doc, "a")["role"], "fenced", "{doc}");
    assert_eq!(c.psql(1, "SELECT count(*) FROM items").trim(), "3");
    // Both back when Ferry starts: the same.
    c.kill_ferry();
    c.start_ferry();
    let doc = status(&c);
    assert_eq!(doc["master"], "b", "{doc}");
    assert_eq!(node(&doc, "a")["role"], "fenced", "{doc}");
}

/// When the node that was master last is gone for good, an operator
/// forces another: it becomes master at a new epoch, recorded as forced
/// and shown as such; the others are fenced out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_force_a_master() {
    let mut c = outage_cluster(None).await;
    c.servers[0].start().unwrap();
    c.start_ferry();
    assert!(status(&c)["waiting"].is_string());
    let out = c.ferry_admin(&["force-master", "a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = eventually_client(&c).await;
    client
        .execute("INSERT INTO items VALUES (10, 'forced')", &[])
        .await
        .unwrap();
    let doc = status(&c);
    assert_eq!(doc["master"], "a", "{doc}");
    assert_eq!(doc["forced"], true, "{doc}");
    // One more than any epoch the nodes that answer have seen.
    assert_eq!(doc["epoch"], 2, "{doc}");
    assert_eq!(
        c.psql(
            0,
            "SELECT state || ' ' || epoch || ' ' || forced FROM ferry.node_state"
        )
        .trim(),
        "master 2 true"
    );
}

/// Two nodes: a master, b replica; a stops and b takes over (epoch 2) and
/// takes a write; then b stops and Ferry stops. Nothing runs.
/// Two nodes; a was master, then b took over alone (epoch 2); then both
/// servers and Ferry stopped. With `skew`, the servers run with their
/// clocks moved by those offsets (a, b) throughout.
async fn outage_cluster(skew: Option<(&str, &str)>) -> Cluster {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        ferry_testkit::Options {
            nodes: 2,
            schema: SCHEMA.into(),
            env: vec![("FERRY_PROXY_HOLD_TIMEOUT_MS".into(), "1500".into())],
            ..Default::default()
        },
    );
    if let Some((a, b)) = skew {
        for (server, offset) in c.servers.iter().zip([a, b]) {
            server.stop().unwrap();
            server.start_skewed(offset).unwrap();
        }
    }
    c.start_ferry();
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO items VALUES (1, 'a')", &[])
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.servers[0].stop().unwrap();
    let client = eventually_client(&c).await;
    client
        .execute("INSERT INTO items VALUES (2, 'b')", &[])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", c.ferry_log()));
    assert_eq!(status(&c)["master"], "b");
    c.kill_ferry();
    c.servers[1].stop().unwrap();
    c
}

/// A session through Ferry, retried while the proxy says there is no
/// master yet.
pub(crate) async fn eventually_client(c: &Cluster) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::connect(&c.proxy_url(), tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return client;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no session through Ferry: {e:?}\n{}", c.ferry_log()),
        }
    }
}
