//! Suspending replicas at a future instant for a point-in-time copy, and
//! resuming them with only what changed.

use ferry_testkit::{eventually, Cluster, Options};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant `secs` from now on the master's clock: (RFC 3339, epoch).
fn instant_in(c: &Cluster, secs: f64) -> (String, f64) {
    let out = c.psql(
        0,
        &format!(
            "SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || ' ' || \
             extract(epoch FROM t) FROM (SELECT clock_timestamp() + interval '{secs} seconds' AS t) s"
        ),
    );
    let (text, epoch) = out.trim().split_once(' ').expect("instant");
    (text.to_string(), epoch.parse().expect("epoch"))
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `suspension` of a replica in /status (Null when none).
fn suspension(c: &Cluster, name: &str) -> Value {
    c.node_doc(name)["suspension"].clone()
}

/// Suspends a replica 1.5 s from now and waits until it is suspended.
fn suspend_soon(c: &Cluster, name: &str) {
    let (at, _) = instant_in(c, 1.5);
    let body = format!("{{\"at\": \"{at}\"}}");
    let answer = c.admin_call("POST", &format!("/replicas/{name}/suspend"), Some(&body));
    assert_eq!(answer.0, 200, "{}", answer.1);
    wait_state(c, name, "suspended", 15);
}

fn wait_state(c: &Cluster, name: &str, state: &str, secs: u64) -> Value {
    tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let s = suspension(c, name);
            if s["state"] == state {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} not {state} after {secs}s: {s}\n{}",
                c.ferry_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn error_code(answer: &(u16, String)) -> (u16, String) {
    let v: Value = serde_json::from_str(&answer.1).unwrap_or_default();
    (
        answer.0,
        v["error"].as_str().unwrap_or(&answer.1).to_string(),
    )
}

/// With no writes at all, a replica still becomes suspended at the
/// instant, consistent as of it; illegal requests are refused each with its
/// own error; while suspended it receives nothing, and the master counts
/// what it keeps for it; resume brings it level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_at_an_instant_and_resume_with_what_changed() {
    let mut c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        3,
        "CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL);
         INSERT INTO kv SELECT g, 0 FROM generate_series(1, 100) g;",
    );
    let (at, at_epoch) = instant_in(&c, 3.0);
    let body = format!("{{\"at\": \"{at}\"}}");
    let ok = c.admin_call("POST", "/replicas/b/suspend", Some(&body));
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert_eq!(suspension(&c, "b")["state"], "scheduled");
    // Refusals, each distinct.
    assert_eq!(
        error_code(&c.admin_call("POST", "/replicas/b/suspend", Some(&body))),
        (409, "already_suspended".into())
    );
    let (soon, _) = instant_in(&c, 0.2);
    assert_eq!(
        error_code(&c.admin_call(
            "POST",
            "/replicas/c/suspend",
            Some(&format!("{{\"at\": \"{soon}\"}}"))
        )),
        (422, "too_soon".into())
    );
    assert_eq!(
        error_code(&c.admin_call(
            "POST",
            "/replicas/c/suspend",
            Some("{\"at\": \"next tuesday\"}")
        )),
        (400, "invalid_time".into())
    );
    assert_eq!(
        error_code(&c.admin_call("POST", "/replicas/zz/suspend", Some(&body))),
        (404, "unknown_replica".into())
    );
    assert_eq!(
        error_code(&c.admin_call("POST", "/replicas/c/resume", None)),
        (409, "not_suspended".into())
    );
    let s = wait_state(&c, "b", "suspended", 15);
    assert_eq!(s["consistent_as_of"], at.as_str(), "{s}");
    assert!(now_epoch() >= at_epoch);
    assert_eq!(
        error_code(&c.admin_call("DELETE", "/replicas/b/suspend", None)),
        (409, "too_late".into())
    );
    // Changes after the instant reach c, not b; the master keeps them.
    let client = c.proxy_client().await;
    for _ in 0..10 {
        client
            .batch_execute("UPDATE kv SET v = v + 1 WHERE k <= 40")
            .await
            .unwrap();
    }
    c.wait_psql(2, "SELECT sum(v) FROM kv", "400", Duration::from_secs(10))
        .await;
    assert_eq!(c.psql(1, "SELECT sum(v) FROM kv").trim(), "0");
    let s = eventually(Duration::from_secs(15), "pending counted", || {
        let s = suspension(&c, "b");
        if s["pending_changes"] == 400 && s["pending_keys"] == 40 {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert_eq!(s["state"], "suspended");
    // A restart of Ferry and of the master loses nothing of it.
    c.kill_ferry();
    c.servers[0].stop().unwrap();
    c.servers[0].start().unwrap();
    c.start_ferry();
    eventually(
        Duration::from_secs(15),
        "still suspended after restarts",
        || {
            let s = suspension(&c, "b");
            if s["state"] == "suspended" && s["pending_changes"] == 400 {
                Ok(())
            } else {
                Err(s)
            }
        },
    )
    .await;
    assert_eq!(c.psql(1, "SELECT sum(v) FROM kv").trim(), "0");
    // Resume through the command line.
    let out = c.ferry_admin(&["resume", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A key that keeps changing during the resync ends up equal.
    let client = c.proxy_client().await;
    for i in 0..30 {
        client
            .execute("UPDATE kv SET v = $1 WHERE k = 1", &[&(1000 + i)])
            .await
            .unwrap();
    }
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
    assert_eq!(c.psql(1, "SELECT v FROM kv WHERE k = 1").trim(), "1029");
    eventually(Duration::from_secs(10), "back to normal shipping", || {
        let s = suspension(&c, "b");
        if s.is_null() {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
}

/// Under transfers between accounts (the total never changes) two
/// replicas suspended together hold exactly the transfers committed before
/// the instant — each acknowledged before it is there, none sent after it
/// is — the same ones on both, with the total intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_group_holds_exactly_the_commits_before_the_instant() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        3,
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 20) g;
         CREATE TABLE transfers (id bigint PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount int NOT NULL);",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for w in 0..3i64 {
        let url = c.proxy_url();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            // id -> (sent, acknowledged) in epoch seconds
            let mut record: HashMap<i64, (f64, f64)> = HashMap::new();
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = w * 1_000_000 + n;
                let (src, dst) = ((n * 7 + w) % 20 + 1, (n * 3 + w + 5) % 20 + 1);
                if src == dst {
                    continue;
                }
                let sent = now_epoch();
                let tx = client.transaction().await.expect("begin");
                tx.execute(
                    "UPDATE accounts SET balance = balance - 1 WHERE id = $1",
                    &[&(src as i32)],
                )
                .await
                .expect("debit");
                tx.execute(
                    "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
                    &[&(dst as i32)],
                )
                .await
                .expect("credit");
                tx.execute(
                    "INSERT INTO transfers VALUES ($1, $2, $3, 1)",
                    &[&id, &(src as i32), &(dst as i32)],
                )
                .await
                .expect("record");
                tx.commit().await.expect("commit");
                record.insert(id, (sent, now_epoch()));
            }
            record
        }));
    }
    let (at, at_epoch) = instant_in(&c, 2.5);
    let out = c.ferry_admin(&["suspend", "b", "c", "--at", &at]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sb = wait_state(&c, "b", "suspended", 20);
    let sc = wait_state(&c, "c", "suspended", 20);
    assert_eq!(sb["consistent_as_of"], sc["consistent_as_of"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut record = HashMap::new();
    for h in clients {
        record.extend(h.await.unwrap());
    }
    let after = record.values().filter(|(s, _)| *s > at_epoch).count();
    assert!(after > 0, "transfers continued after the instant");
    let on = |i: usize| -> Vec<i64> {
        c.psql(i, "SELECT id FROM transfers ORDER BY id")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let (b, cc) = (on(1), on(2));
    assert_eq!(b, cc, "one snapshot for the group");
    for (id, (sent, acked)) in &record {
        if *acked < at_epoch {
            assert!(
                b.binary_search(id).is_ok(),
                "transfer {id} acknowledged before the instant is missing"
            );
        }
        if *sent > at_epoch + 0.05 {
            assert!(
                b.binary_search(id).is_err(),
                "transfer {id} sent after the instant is there"
            );
        }
    }
    for i in 1..3 {
        assert_eq!(
            c.psql(i, "SELECT sum(balance) FROM accounts").trim(),
            "20000"
        );
    }
    // Per account, the balance equals 1000 plus what the held transfers moved.
    assert_eq!(
        c.psql(
            1,
            "SELECT count(*) FROM accounts a WHERE balance <> 1000 \
                   - (SELECT count(*) FROM transfers WHERE src = a.id) \
                   + (SELECT count(*) FROM transfers WHERE dst = a.id)"
        )
        .trim(),
        "0"
    );
    for name in ["b", "c"] {
        assert_eq!(
            c.admin_call("POST", &format!("/replicas/{name}/resume"), None)
                .0,
            200
        );
    }
    c.wait_equal(Duration::from_secs(30)).await.unwrap();
}

/// 100,000 updates to 1,000 keys while suspended: resume ships at most one
/// row image per key (counted in the metrics) and `ferry verify` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_ships_one_image_per_changed_key() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE kv (k int PRIMARY KEY, v bigint NOT NULL);
         INSERT INTO kv SELECT g, 0 FROM generate_series(1, 1000) g;",
    );
    suspend_soon(&c, "b");
    let client = c.proxy_client().await;
    for _ in 0..100 {
        client
            .batch_execute("UPDATE kv SET v = v + 1")
            .await
            .unwrap();
    }
    let shipped = |c: &Cluster| -> u64 {
        let (_, m) = c.admin_get("/metrics");
        m.lines()
            .find(|l| l.starts_with("ferry_rows_shipped_total{replica=\"b\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = shipped(&c);
    eventually(Duration::from_secs(15), "pending keys counted", || {
        let s = suspension(&c, "b");
        if s["pending_keys"] == 1000 {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    assert_eq!(c.admin_call("POST", "/replicas/b/resume", None).0, 200);
    c.wait_psql(
        1,
        "SELECT sum(v) FROM kv",
        "100000",
        Duration::from_secs(30),
    )
    .await;
    let images = shipped(&c) - before;
    assert!(
        images <= 1000,
        "resume shipped {images} row images for 1000 keys"
    );
    let (ok, table) = c.verify(20);
    assert!(ok, "{table}");
}

/// A suspended replica costs the master its changed keys, like one that
/// is away: 200,000 updates to 2,000 keys while it is suspended are netted
/// on the master to 2,000 changes, the replica stays as it was at its
/// instant (same consistency point, same rows), and a resume brings it
/// level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_kept_for_a_suspended_replica_is_compacted_to_its_keys() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 3,
            schema: "CREATE TABLE kv (k int PRIMARY KEY, v bigint NOT NULL);
                     INSERT INTO kv SELECT g, 0 FROM generate_series(1, 2000) g;"
                .into(),
            extra_config: "[retention]\ncompact_after = \"256kB\"\n".into(),
            ..Default::default()
        },
    );
    c.start_ferry();
    suspend_soon(&c, "c");
    let at = suspension(&c, "c")["consistent_as_of"].clone();
    let client = c.proxy_client().await;
    for _ in 0..100 {
        client
            .batch_execute("UPDATE kv SET v = v + 1")
            .await
            .unwrap();
    }
    c.wait_psql(
        1,
        "SELECT sum(v) FROM kv",
        "200000",
        Duration::from_secs(30),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "c's changes netted to its keys",
        || {
            let s = suspension(&c, "c");
            if s["pending_changes"] == 2000 && s["pending_keys"] == 2000 {
                Ok(())
            } else {
                Err(s)
            }
        },
    )
    .await;
    let s = suspension(&c, "c");
    assert_eq!(s["state"], "suspended", "{s}");
    assert_eq!(s["consistent_as_of"], at, "{s}");
    // Shown as for a replica away: the keys, and how old the changes kept
    // can be (since the instant).
    let n = c.node_doc("c");
    assert_eq!(n["kept_keys"], 2000, "{n}");
    assert!(
        n["kept_age_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{n}"
    );
    assert_eq!(c.metric("ferry_replica_kept_keys{replica=\"c\"}"), 2000.0);
    assert_eq!(c.psql(2, "SELECT sum(v) FROM kv").trim(), "0");
    c.wait_metric(
        "ferry_compacted_rows_total",
        198_000.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(c.admin_call("POST", "/replicas/c/resume", None).0, 200);
    c.wait_equal(Duration::from_secs(30)).await.unwrap();
    let (ok, table) = c.verify(20);
    assert!(ok, "{table}");
}

/// A scheduled suspension survives a restart of Ferry; a second one is
/// cancelled before its instant; the hook runs once the replica is
/// consistent, with its exit status and output in /status, and a resume
/// waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_survive_a_restart_cancel_works_and_the_hook_runs() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 3,
            schema: "CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL);".into(),
            env: vec![(
                "FERRY_SUSPEND_HOOK".into(),
                "sleep 1; echo \"copied $FERRY_NODE as of $FERRY_CONSISTENT_AS_OF\"".into(),
            )],
            ..Default::default()
        },
    );
    c.start_ferry();
    let (at, _) = instant_in(&c, 6.0);
    let body = format!("{{\"at\": \"{at}\"}}");
    assert_eq!(
        c.admin_call("POST", "/replicas/b/suspend", Some(&body)).0,
        200
    );
    let (later, _) = instant_in(&c, 60.0);
    assert_eq!(
        c.admin_call(
            "POST",
            "/replicas/c/suspend",
            Some(&format!("{{\"at\": \"{later}\"}}"))
        )
        .0,
        200
    );
    let out = c.ferry_admin(&["suspend", "c", "--cancel"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(suspension(&c, "c").is_null());
    c.kill_ferry();
    c.start_ferry();
    eventually(Duration::from_secs(10), "schedule reloaded", || {
        let s = suspension(&c, "b");
        if s["state"] == "scheduled" {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    let s = wait_state(&c, "b", "suspended", 20);
    assert_eq!(s["consistent_as_of"], at.as_str());
    // The hook ran with the node and the instant; its result is shown.
    let hook = eventually(Duration::from_secs(15), "hook finished", || {
        let h = suspension(&c, "b")["hook"].clone();
        if h["running"] == false && h["exit_code"].is_i64() {
            Ok(h)
        } else {
            Err(h)
        }
    })
    .await;
    assert_eq!(hook["exit_code"], 0, "{hook}");
    assert!(
        hook["output_tail"]
            .as_str()
            .is_some_and(|o| o.contains(&format!("copied b as of {at}"))),
        "{hook}"
    );
    assert_eq!(c.admin_call("POST", "/replicas/b/resume", None).0, 200);
    // A resume while the hook still runs waits for it.
    let (soon, _) = instant_in(&c, 1.5);
    assert_eq!(
        c.admin_call(
            "POST",
            "/replicas/c/suspend",
            Some(&format!("{{\"at\": \"{soon}\"}}"))
        )
        .0,
        200
    );
    wait_state(&c, "c", "suspended", 15);
    let started = std::time::Instant::now();
    let answer = c.admin_call("POST", "/replicas/c/resume", None);
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "resume answered before the hook finished"
    );
    assert!(c
        .ferry_log()
        .contains("resume waits for the suspend hook to finish"));
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
}

/// With reads on replicas, a suspended replica serves none: reads see the
/// master's current data, and go back to the replica once it resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_replica_serves_no_reads() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            schema:
                "CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL); INSERT INTO kv VALUES (1, 0);"
                    .into(),
            env: vec![("FERRY_PROXY_READS".into(), "replicas".into())],
            ..Default::default()
        },
    );
    c.start_ferry();
    suspend_soon(&c, "b");
    let writer = c.proxy_client().await;
    writer.execute("UPDATE kv SET v = 7", &[]).await.unwrap();
    // (Simple-protocol reads are the ones routed to replicas.)
    for _ in 0..5 {
        let reader = c.proxy_client().await;
        assert_eq!(
            read_v(&reader).await,
            "7",
            "a read saw the suspended replica"
        );
    }
    assert_eq!(c.admin_call("POST", "/replicas/b/resume", None).0, 200);
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
    let replica_reads = |c: &Cluster| -> u64 {
        let (_, m) = c.admin_get("/metrics");
        m.lines()
            .find(|l| l.starts_with("ferry_reads_replica_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // Once the catch-up batch is applied the replica serves reads again
    // (it is reported serving at the next tick after the resync).
    let before = replica_reads(&c);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while replica_reads(&c) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "reads never went back to the replica"
        );
        let reader = c.proxy_client().await;
        assert_eq!(read_v(&reader).await, "7");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read_v(client: &tokio_postgres::Client) -> String {
    client
        .simple_query("SELECT v FROM kv")
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}
