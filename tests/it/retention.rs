//! What the master keeps for a replica that stays away (issue 19): shown
//! per replica, and bounded by `[retention] max_bytes`.

use ferry_testkit::{eventually, Cluster, Options};
use std::time::Duration;

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);";

fn cluster(extra_config: &str) -> Cluster {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 3,
            schema: SCHEMA.into(),
            extra_config: extra_config.into(),
            ..Default::default()
        },
    );
    c.start_ferry();
    c
}

/// Writes rows `from..to`, each with a 100-byte value, one transaction.
async fn write(client: &tokio_postgres::Client, from: i32, to: i32) {
    client
        .execute(
            "INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series($1::int, $2::int - 1) g",
            &[&from, &to],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_master_keeps_for_an_absent_replica_is_shown_in_rows_and_bytes() {
    let c = cluster("");
    let client = c.proxy_client().await;
    write(&client, 0, 10).await;
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.servers[2].stop().unwrap();
    write(&client, 10, 210).await;
    client
        .batch_execute("UPDATE items SET v = repeat('y', 100) WHERE id >= 10")
        .await
        .unwrap();
    // Kept for c: 400 changes of more than 100 bytes each, to 200 keys;
    // for b, which has applied everything, nothing. No bound: nothing
    // projected.
    c.wait_status(Duration::from_secs(20), "c's kept changes counted", |doc| {
        let (nc, nb) = (ferry_testkit::node(doc, "c"), ferry_testkit::node(doc, "b"));
        nc["lag_rows"] == 400
            && nc["kept_bytes"].as_i64().unwrap_or(0) > 400 * 100
            && nc["kept_keys"] == 200
            && nc["released_in_seconds"].is_null()
            && nc["needs_resync"] == false
            && nb["kept_bytes"] == 0
    })
    .await;
    let (_, metrics) = c.admin_get("/metrics");
    let kept = metrics
        .lines()
        .find(|l| l.starts_with("ferry_replica_kept_bytes{replica=\"c\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let bytes: i64 = kept.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes > 200 * 100, "{kept}");
    c.servers[2].start().unwrap();
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
}

/// Past `max_bytes`, the master stops keeping changes for the absent
/// replica: it is marked `needs_resync` (status, metrics, log), the outbox
/// is cleaned up for the others, the replica is refused batches when it
/// returns, and `ferry resync` brings it back equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_away_past_max_bytes_is_released_and_comes_back_by_resync() {
    let c = cluster("[retention]\nmax_bytes = 20000\n");
    let client = c.proxy_client().await;
    write(&client, 0, 10).await;
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.servers[2].stop().unwrap();
    write(&client, 10, 510).await;
    c.wait_status(Duration::from_secs(20), "c released", |doc| {
        ferry_testkit::node(doc, "c")["needs_resync"] == true
    })
    .await;
    eventually(Duration::from_secs(10), "the release logged", || {
        let log = c.ferry_log();
        if log.contains("stopped keeping changes for replica c") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    let (_, metrics) = c.admin_get("/metrics");
    assert!(
        metrics.contains("ferry_replica_needs_resync{replica=\"c\"} 1"),
        "{metrics}"
    );
    // Nothing is kept for c any more: the outbox is cleaned up once b has
    // applied everything.
    c.wait_outbox_cleaned(Duration::from_secs(20)).await;
    // c comes back: refused, and told what to do.
    c.servers[2].start().unwrap();
    write(&client, 510, 511).await;
    c.wait_psql(
        1,
        "SELECT count(*) FROM items",
        "511",
        Duration::from_secs(10),
    )
    .await;
    eventually(Duration::from_secs(15), "c refused", || {
        let n = c.node_doc("c");
        let error = n["last_error"].as_str().unwrap_or_default();
        if n["reachable"] == false && n["needs_resync"] == true && error.contains("ferry resync c")
        {
            Ok(())
        } else {
            Err(n)
        }
    })
    .await;
    assert_eq!(c.psql(2, "SELECT count(*) FROM items").trim(), "10");
    let out = c.ferry_admin(&["resync", "c"]);
    assert!(out.status.success(), "{out:?}\n{}", c.ferry_log());
    write(&client, 511, 520).await;
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
    c.wait_status(Duration::from_secs(10), "c back", |doc| {
        let n = ferry_testkit::node(doc, "c");
        n["reachable"] == true && n["needs_resync"] == false
    })
    .await;
    let (ok, out) = c.verify(5);
    assert!(ok, "{out}");
}

/// `max_age_s` bounds by time: a replica away longer than that, with
/// changes kept for it, is released as past `max_bytes`; how long it has
/// been away is shown meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_away_past_max_age_is_released() {
    let c = cluster("[retention]\nmax_age_s = 8\n");
    let client = c.proxy_client().await;
    write(&client, 0, 10).await;
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.servers[2].stop().unwrap();
    write(&client, 10, 11).await;
    c.wait_status(Duration::from_secs(10), "c's time away shown", |doc| {
        let n = ferry_testkit::node(doc, "c");
        n["kept_age_seconds"].as_f64().is_some_and(|s| s > 0.0)
            && n["released_in_seconds"].as_f64().is_some_and(|s| s <= 8.0)
            && n["kept_keys"] == 1
            && n["needs_resync"] == false
    })
    .await;
    c.wait_status(Duration::from_secs(30), "c released", |doc| {
        ferry_testkit::node(doc, "c")["needs_resync"] == true
    })
    .await;
    assert!(c.ferry_log().contains("past [retention] max_age_s"));
    c.wait_outbox_cleaned(Duration::from_secs(20)).await;
}
