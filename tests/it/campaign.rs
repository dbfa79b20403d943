//! The fault campaign (Jepsen-style): a bank workload through Ferry in
//! sync mode under a seeded schedule of faults, checked against each
//! client's own record of its transfers. `tests/fault-campaign` runs it
//! long.

use ferry_testkit::{eventually, Cluster, Options};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a transfer ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// COMMIT answered: it must be in the cluster for good.
    Acked,
    /// It never committed (its COMMIT was not sent, or answered with an
    /// error that says so): it must not be in the cluster.
    Failed,
    /// The answer says the outcome is unknown (08007, 57P0x, a closed
    /// connection): either.
    Unknown,
}

const BANK: &str = "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
    INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 20) g;
    CREATE TABLE transfers (id bigint PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount int NOT NULL);";

/// What every client of the campaign recorded.
#[derive(Default)]
struct Ledger {
    outcomes: Vec<(i64, Outcome)>,
    /// Statements that got no answer within the hold timeout and a margin.
    unanswered: Vec<String>,
}

/// One client of the campaign: transfers until told to stop, reconnecting
/// whenever its session ends, recording each transfer's outcome.
fn bank_client(
    url: String,
    id: i64,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<std::sync::Mutex<Ledger>>,
) -> tokio::task::JoinHandle<()> {
    use ferry_testkit::workload::Rng;
    tokio::spawn(async move {
        let patience = Duration::from_secs(40);
        let mut rng = Rng::new(seed.wrapping_add(id as u64));
        let mut client: Option<tokio_postgres::Client> = None;
        let mut n = 0i64;
        let record = |uid: i64, o: Outcome| ledger.lock().unwrap().outcomes.push((uid, o));
        let silent = |what: String| ledger.lock().unwrap().unanswered.push(what);
        while !stop.load(Ordering::Relaxed) {
            let Some(c) = client.as_ref() else {
                match tokio::time::timeout(
                    patience,
                    tokio_postgres::connect(&url, tokio_postgres::NoTls),
                )
                .await
                {
                    Ok(Ok((c, conn))) => {
                        tokio::spawn(conn);
                        client = Some(c);
                    }
                    Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(_) => silent("connect".into()),
                }
                continue;
            };
            n += 1;
            let uid = id * 1_000_000 + n;
            let (a, b) = (1 + rng.below(20) as i64, 1 + rng.below(20) as i64);
            if a == b {
                continue;
            }
            let amount = 1 + rng.below(10) as i64;
            // Rows are locked in id order: no deadlocks between clients.
            let (first, second) = if a < b {
                ((a, -amount), (b, amount))
            } else {
                ((b, amount), (a, -amount))
            };
            let body = format!(
                "BEGIN; UPDATE accounts SET balance = balance + {} WHERE id = {}; \
                 UPDATE accounts SET balance = balance + {} WHERE id = {}; \
                 INSERT INTO transfers VALUES ({uid}, {a}, {b}, {amount})",
                first.1, first.0, second.1, second.0
            );
            match tokio::time::timeout(patience, c.batch_execute(&body)).await {
                Err(_) => {
                    silent(format!("transfer {uid}"));
                    record(uid, Outcome::Unknown);
                    client = None;
                    continue;
                }
                Ok(Err(_)) => {
                    // Its COMMIT was never sent.
                    record(uid, Outcome::Failed);
                    if c.is_closed() || c.batch_execute("ROLLBACK").await.is_err() {
                        client = None;
                    }
                    continue;
                }
                Ok(Ok(())) => {}
            }
            match tokio::time::timeout(patience, c.batch_execute("COMMIT")).await {
                Err(_) => {
                    silent(format!("COMMIT of {uid}"));
                    record(uid, Outcome::Unknown);
                    client = None;
                }
                Ok(Ok(())) => record(uid, Outcome::Acked),
                Ok(Err(e)) => {
                    let code = e.code().map(|c| c.code().to_string());
                    let outcome = match code.as_deref() {
                        // The transaction was lost before its COMMIT was sent.
                        Some("40001") => Outcome::Failed,
                        Some(c) if c.starts_with("23") || c == "40P01" => Outcome::Failed,
                        _ => Outcome::Unknown,
                    };
                    record(uid, outcome);
                    if c.is_closed() || c.batch_execute("ROLLBACK").await.is_err() {
                        client = None;
                    }
                }
            }
        }
    })
}

/// The faults the campaign draws from.
const FAULTS: [&str; 6] = [
    "kill -9 the master",
    "freeze the master",
    "kill -9 a replica",
    "kill -9 Ferry",
    "switchover",
    "freeze both replicas, kill -9 the master",
];

/// The index of the node `/status` names master (None while there is none).
fn master_index(c: &Cluster) -> Option<usize> {
    let doc = c.status_doc();
    let name = doc["master"].as_str()?;
    if !doc["waiting"].is_null() {
        return None;
    }
    c.names.iter().position(|n| n == name)
}

/// Brings every node back: servers killed are started again, nodes fenced
/// out are resynchronised, until every node serves as master or replica.
async fn recover(c: &Cluster, killed: &mut Vec<usize>, schedule: &mut Vec<String>) {
    for i in killed.drain(..) {
        if let Err(e) = c.restart_server(i) {
            schedule.push(format!("  restart {}: {e}", c.names[i]));
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let doc = c.status_doc();
        let nodes: Vec<serde_json::Value> = doc["nodes"].as_array().cloned().unwrap_or_default();
        let healthy = nodes.len() == c.names.len()
            && doc["waiting"].is_null()
            && nodes.iter().all(|n| {
                (n["role"] == "master" || n["role"] == "replica") && n["reachable"] == true
            });
        if healthy {
            return;
        }
        // Fenced out by a failover, or refused as standing before the
        // clean-up: both come back with a resync.
        let needs = |n: &&serde_json::Value| {
            n["role"] == "fenced"
                || n["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("`ferry resync"))
        };
        for n in nodes.iter().filter(needs) {
            let name = n["name"].as_str().unwrap_or_default();
            let out = c.ferry_admin(&["resync", name]);
            schedule.push(format!(
                "  resync {name}: {}",
                if out.status.success() {
                    "ok"
                } else {
                    "not yet"
                }
            ));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster did not recover within 90 s: {doc}\n{}\n{}",
            schedule.join("\n"),
            c.ferry_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `/status` names another master than node `m`.
async fn wait_for_new_master(c: &Cluster, m: usize) {
    let old = c.names[m].clone();
    eventually(Duration::from_secs(30), "a new master", || {
        match c.status_doc()["master"].as_str() {
            Some(n) if n != old => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Injects one fault; records the servers it killed.
async fn inject(
    c: &mut Cluster,
    fault: &str,
    rng: &mut ferry_testkit::workload::Rng,
    killed: &mut Vec<usize>,
) {
    let Some(m) = master_index(c) else {
        return;
    };
    let replicas: Vec<usize> = (0..c.names.len()).filter(|&i| i != m).collect();
    match fault {
        "kill -9 the master" => {
            c.signal_server(m, "KILL");
            killed.push(m);
            wait_for_new_master(c, m).await;
        }
        "freeze the master" => {
            c.signal_server(m, "STOP");
            tokio::time::sleep(Duration::from_millis(500 + rng.below(3000))).await;
            c.signal_server(m, "CONT");
        }
        "kill -9 a replica" => {
            let r = *rng.pick(&replicas);
            c.signal_server(r, "KILL");
            killed.push(r);
            tokio::time::sleep(Duration::from_millis(500 + rng.below(1500))).await;
        }
        "kill -9 Ferry" => {
            c.kill_ferry();
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.start_ferry();
        }
        "switchover" => {
            let _ = c.ferry_admin(&["switchover"]);
        }
        _ => {
            for &r in &replicas {
                c.signal_server(r, "STOP");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.signal_server(m, "KILL");
            killed.push(m);
            for &r in &replicas {
                c.signal_server(r, "CONT");
            }
            wait_for_new_master(c, m).await;
        }
    }
}

/// The fault campaign (Jepsen-style): a bank through Ferry in sync mode —
/// clients moving money between accounts in explicit transactions, each
/// recording its own transfers as acknowledged, failed or unknown — while
/// a seeded schedule of faults hits the cluster (kill -9 and freezes of
/// the master, kill -9 of a replica and of Ferry, switchovers, the master
/// killed while both replicas are frozen), the cluster brought back after
/// each. Afterwards: every client was answered, no acknowledged transfer
/// is missing, none reported failed is present, the money adds up, every
/// account matches its transfers, and every node equals the master. CI
/// runs a few faults; `FERRY_FAULTS` and `FERRY_FAULT_SEED` run more (see
/// `tests/fault-campaign`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_under_random_faults_keeps_every_acknowledged_commit_and_answers_every_client() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (seed, faults) = (env("FERRY_FAULT_SEED", 15), env("FERRY_FAULTS", 4));
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 3,
            schema: BANK.into(),
            env: [
                ("FERRY_REPLICATION_MODE", "sync"),
                ("FERRY_REPLICATION_SYNC_REPLICAS", "1"),
                ("FERRY_PROXY_HOLD_TIMEOUT_MS", "15000"),
                ("FERRY_HEALTH_FAILURES", "3"),
                ("FERRY_REPLICATION_APPLY_TIMEOUT_MS", "5000"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        },
    );
    // The test servers commit asynchronously for speed; a kill -9 would then
    // lose a replica's last commits, which no replication survives.
    for i in 0..3 {
        c.psql(i, "ALTER SYSTEM SET synchronous_commit = on");
        c.psql(i, "SELECT pg_reload_conf()");
    }
    c.start_ferry();
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(std::sync::Mutex::new(Ledger::default()));
    let clients: Vec<_> = (1..=4)
        .map(|id| bank_client(c.proxy_url(), id, seed, stop.clone(), ledger.clone()))
        .collect();
    let mut rng = ferry_testkit::workload::Rng::new(seed);
    let mut schedule = vec![format!("seed {seed}, {faults} faults")];
    let started = std::time::Instant::now();
    let mut killed = Vec::new();
    for i in 0..faults {
        tokio::time::sleep(Duration::from_millis(1000 + rng.below(2000))).await;
        let fault = *rng.pick(&FAULTS);
        schedule.push(format!(
            "{:>6.1} s  fault {}: {fault} (master {})",
            started.elapsed().as_secs_f64(),
            i + 1,
            master_index(&c).map_or("-", |m| c.names[m].as_str())
        ));
        inject(&mut c, fault, &mut rng, &mut killed).await;
        recover(&c, &mut killed, &mut schedule).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }
    let schedule = schedule.join("\n");
    eprintln!("{schedule}");
    c.wait_equal(Duration::from_secs(60))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{schedule}\n{}", c.ferry_log()));
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let count = |o: Outcome| ledger.outcomes.iter().filter(|(_, x)| *x == o).count();
    let summary = format!(
        "{} transfers: {} acknowledged, {} failed, {} unknown; {} unanswered",
        ledger.outcomes.len(),
        count(Outcome::Acked),
        count(Outcome::Failed),
        count(Outcome::Unknown),
        ledger.unanswered.len()
    );
    eprintln!("{summary}");
    assert!(
        ledger.unanswered.is_empty(),
        "{summary}: {:?}\n{schedule}",
        ledger.unanswered
    );
    let master = c
        .node_client(master_index(&c).expect("a master at the end"))
        .await;
    let present: std::collections::HashSet<i64> = master
        .query("SELECT id FROM transfers", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (uid, outcome) in ledger.outcomes.iter() {
        match outcome {
            Outcome::Acked => assert!(
                present.contains(uid),
                "acknowledged transfer {uid} lost\n{summary}\n{schedule}"
            ),
            Outcome::Failed => assert!(
                !present.contains(uid),
                "transfer {uid} reported failed is present\n{summary}\n{schedule}"
            ),
            Outcome::Unknown => {}
        }
    }
    let total: i64 = master
        .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        total, 20_000,
        "the money does not add up\n{summary}\n{schedule}"
    );
    let off: i64 = master
        .query_one(
            "SELECT count(*) FROM accounts a WHERE a.balance <> 1000 \
             - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0) \
             + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        off, 0,
        "balances do not match the transfers\n{summary}\n{schedule}"
    );
    assert!(count(Outcome::Acked) > 0, "{summary}");
}
