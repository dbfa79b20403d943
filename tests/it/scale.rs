//! What Ferry costs follows what changed, not what exists: a database of
//! hundreds of tables replicates, a tick at which nothing can have changed
//! runs no cut, and what depends on ticks (sync commits, sequence
//! positions, suspensions at an instant) works all the same.

use ferry_testkit::{eventually, Cluster, Options};
use std::time::{Duration, Instant};

/// Cuts run so far (real cuts: an idle tick's probe is not one).
fn cuts(c: &Cluster) -> f64 {
    c.metric("ferry_cut_seconds_count")
}

fn idle_ticks(c: &Cluster) -> f64 {
    c.metric("ferry_idle_ticks_total")
}

/// Waits until a second passes with no cut at all, and says how many idle
/// ticks it counted meanwhile.
async fn quiet_second(c: &Cluster) -> f64 {
    let mut last = (cuts(c), idle_ticks(c));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = (cuts(c), idle_ticks(c));
        if now.0 == last.0 {
            return now.1 - last.1;
        }
        assert!(
            Instant::now() < deadline,
            "cuts never stopped with nothing written: {last:?} -> {now:?}\n{}",
            c.ferry_log()
        );
        last = now;
    }
}

/// 600 replicated tables (more than one statement could once read: a row
/// has at most 1,664 columns, and the cut read three per table): writes to
/// any of them reach the replica, and with nothing written no cut runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_tables_replicate_and_an_idle_tick_cuts_nothing() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "DO $$ BEGIN FOR i IN 1..600 LOOP
             EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i);
         END LOOP; END $$;",
    );
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO t1 VALUES (1, 'first'); INSERT INTO t600 VALUES (1, 'last')")
        .await
        .unwrap();
    c.wait_psql(
        1,
        "SELECT (SELECT v FROM t1) || (SELECT v FROM t600)",
        "firstlast",
        Duration::from_secs(60),
    )
    .await;
    let idle = quiet_second(&c).await;
    // The test cluster ticks every 20 ms: about 50 idle ticks a second.
    assert!(idle >= 10.0, "only {idle} idle ticks in a quiet second");
    // One transaction over many tables at once ships whole.
    client
        .batch_execute(
            "DO $$ BEGIN FOR i IN 2..599 LOOP
                 EXECUTE format('INSERT INTO t%s VALUES (7, %L)', i, 'many');
             END LOOP; END $$;",
        )
        .await
        .unwrap();
    c.wait_psql(
        1,
        "SELECT count(*) FROM t2 JOIN t599 USING (id)",
        "1",
        Duration::from_secs(60),
    )
    .await;
    let (ok, table) = c.verify(30);
    assert!(ok, "{table}");
}

/// With idle ticks skipped (no cut while nothing changes): a sync commit
/// is on a replica when it returns, a sequence moved by a bare nextval()
/// reaches the replicas, and a replica suspended at an instant with
/// nothing written is suspended there and resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_commits_sequences_and_suspensions_work_with_idle_ticks_skipped() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 3,
            schema: "CREATE TABLE acked (id int PRIMARY KEY);
                     CREATE SEQUENCE tickets;"
                .into(),
            env: vec![
                ("FERRY_REPLICATION_MODE".into(), "sync".into()),
                ("FERRY_REPLICATION_SYNC_REPLICAS".into(), "1".into()),
            ],
            ..Default::default()
        },
    );
    c.start_ferry();
    c.wait_replicas_serving(2).await;
    let client = c.proxy_client().await;
    assert!(quiet_second(&c).await >= 10.0);
    // A sync commit after idle ticks: on a replica when it returns.
    let started = Instant::now();
    client
        .batch_execute("INSERT INTO acked VALUES (1)")
        .await
        .unwrap();
    let took = started.elapsed();
    let on_b = c.psql(1, "SELECT count(*) FROM acked").trim().to_string();
    let on_c = c.psql(2, "SELECT count(*) FROM acked").trim().to_string();
    assert!(
        on_b == "1" || on_c == "1",
        "acknowledged commit on neither replica"
    );
    assert!(took < Duration::from_secs(2), "sync commit took {took:?}");
    // A bare nextval() writes no row; its position travels all the same.
    quiet_second(&c).await;
    for _ in 0..5 {
        client
            .batch_execute("SELECT nextval('tickets')")
            .await
            .unwrap();
    }
    for i in [1, 2] {
        c.wait_psql(
            i,
            "SELECT last_value FROM tickets",
            "5",
            Duration::from_secs(10),
        )
        .await;
    }
    // A suspension at an instant at which nothing is written.
    quiet_second(&c).await;
    let at = c.psql(
        0,
        "SELECT to_char((clock_timestamp() + interval '1.5 seconds') AT TIME ZONE 'UTC', \
         'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    let body = format!("{{\"at\": \"{}\"}}", at.trim());
    let answer = c.admin_call("POST", "/replicas/c/suspend", Some(&body));
    assert_eq!(answer.0, 200, "{}", answer.1);
    eventually(Duration::from_secs(15), "c suspended", || {
        let s = c.node_doc("c")["suspension"].clone();
        if s["state"] == "suspended" {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    client
        .batch_execute("INSERT INTO acked VALUES (2)")
        .await
        .unwrap();
    c.wait_psql(
        1,
        "SELECT count(*) FROM acked",
        "2",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(c.psql(2, "SELECT count(*) FROM acked").trim(), "1");
    assert_eq!(c.admin_call("POST", "/replicas/c/resume", None).0, 200);
    c.wait_psql(
        2,
        "SELECT count(*) FROM acked",
        "2",
        Duration::from_secs(15),
    )
    .await;
}

/// Rows captured by a version of Ferry whose triggers did not name their
/// tables in `ferry.touched` (the cut reads only the tables named there)
/// still ship once the new version has reinstalled capture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_captured_before_an_upgrade_still_ship() {
    let mut c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE kept (id int PRIMARY KEY, v text);",
    );
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO kept VALUES (1, 'before')")
        .await
        .unwrap();
    c.wait_psql(1, "SELECT count(*) FROM kept", "1", Duration::from_secs(10))
        .await;
    c.kill_ferry();
    // Written while Ferry is down, then made to look as the older
    // version left it: no ferry.touched rows, triggers of another version.
    c.psql(
        0,
        "SET ROLE app; INSERT INTO kept SELECT g, 'while down' FROM generate_series(2, 50) g",
    );
    c.psql(
        0,
        "DELETE FROM ferry.touched; UPDATE ferry.capture SET fingerprint = 'an older version'",
    );
    c.start_ferry();
    c.wait_psql(
        1,
        "SELECT count(*) FROM kept",
        "50",
        Duration::from_secs(20),
    )
    .await;
}

/// Cuts that run without a probe (the background check's, every tick here)
/// expect the tables the previous cut found written; a table written for
/// the first time since is found in the window all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_written_for_the_first_time_during_forced_cuts_ship() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            schema: "DO $$ BEGIN FOR i IN 1..30 LOOP
                         EXECUTE format('CREATE TABLE f%s (id int PRIMARY KEY, v int)', i);
                     END LOOP; END $$;"
                .into(),
            extra_config: "[verify]\ninterval_s = 1\nchunk_rows = 10\n".into(),
            ..Default::default()
        },
    );
    c.start_ferry();
    let client = c.proxy_client().await;
    for round in 0..3 {
        for i in (1..=30).rev() {
            client
                .execute(
                    &format!("INSERT INTO f{i} VALUES ($1, $2)"),
                    &[&(round * 100 + i), &i],
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
    }
    c.wait_equal(Duration::from_secs(30))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    let (ok, table) = c.verify(20);
    assert!(ok, "{table}");
}

/// A transaction larger than what Ferry holds of a batch in memory (16 MB)
/// ships through a spill file; with Ferry killed by -9 while the replica
/// applies it, the replica holds none of it or all of it, and after the
/// restart exactly all of it (a table without a key would hold its rows
/// twice if the batch applied twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_memory_applies_exactly_once_across_kill_9() {
    let mut c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE bulk (n int NOT NULL, pad text NOT NULL);",
    );
    c.wait_replicas_serving(1).await;
    c.kill_ferry();
    c.psql(
        0,
        "SET ROLE app; INSERT INTO bulk SELECT g, repeat('x', 100) FROM generate_series(1, 300000) g",
    );
    c.start_ferry();
    // The big batch is cut (its spill counted) before it ships, so once
    // the counter has moved, an active apply session is applying it (an
    // apply session is also busy making the new table's batch tables
    // ready before any batch: that must not count).
    eventually(
        Duration::from_secs(60),
        "the replica applying the spilled batch",
        || {
            let spilled = c.metric("ferry_spilled_bytes_total");
            if spilled <= 16.0 * 1024.0 * 1024.0 {
                return Err(format!("{spilled} bytes spilled so far"));
            }
            let busy = c.psql(
                1,
                "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'ferry apply' AND state = 'active'",
            );
            if busy.trim() == "1" {
                Ok(())
            } else {
                Err(format!(
                    "{spilled} bytes spilled, apply sessions active: {busy}"
                ))
            }
        },
    )
    .await;
    c.kill_ferry();
    // The apply session went with Ferry: its transaction rolled back, or
    // had committed whole.
    let on_replica = eventually(Duration::from_secs(10), "apply session gone", || {
        let left = c.psql(
            1,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ferry apply'",
        );
        if left.trim() == "0" {
            Ok(c.psql(1, "SELECT count(*) FROM bulk").trim().to_string())
        } else {
            Err(left)
        }
    })
    .await;
    assert!(
        on_replica == "0" || on_replica == "300000",
        "the replica shows part of a transaction: {on_replica} rows"
    );
    eprintln!("the replica held {on_replica} rows of the batch when Ferry was killed");
    c.start_ferry();
    c.wait_psql(
        1,
        "SELECT count(*), count(DISTINCT n) FROM bulk",
        "300000|300000",
        Duration::from_secs(90),
    )
    .await;
    let (ok, table) = c.verify(30);
    assert!(ok, "{table}");
}

/// A session that writes the same tables transaction after transaction
/// names them in one `ferry.touched` row per transaction (the first table
/// it writes is named with the session's recent ones), a table outside
/// those gets a row of its own, and everything ships, tables named but not
/// written included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_names_the_tables_it_writes_once_per_transaction() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE a (id int PRIMARY KEY, v int);
         CREATE TABLE b (id int PRIMARY KEY, v int);
         CREATE TABLE c (id int PRIMARY KEY, v int);
         CREATE TABLE d (id int PRIMARY KEY, v int);
         CREATE TABLE e (id int PRIMARY KEY, v int);",
    );
    // Straight to the master as the application's role, to read what its
    // transaction wrote into ferry.touched before it commits.
    let direct = c.node_client(0).await;
    let named = |writes: &'static str| {
        let direct = &direct;
        async move {
            direct
                .batch_execute(&format!("BEGIN; SET LOCAL ROLE app; {writes}; RESET ROLE"))
                .await
                .unwrap();
            let rows: i64 = direct
                .query_one(
                    "SELECT count(*) FROM ferry.touched WHERE _xid = pg_current_xact_id()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            direct.batch_execute("COMMIT").await.unwrap();
            rows
        }
    };
    let all = "INSERT INTO a VALUES (1, 0); INSERT INTO b VALUES (1, 0); \
               INSERT INTO c VALUES (1, 0); INSERT INTO d VALUES (1, 0)";
    assert_eq!(named(all).await, 4, "a new session names each table");
    for _ in 0..5 {
        let again = "UPDATE a SET v = v + 1; UPDATE b SET v = v + 1; \
                     UPDATE c SET v = v + 1; UPDATE d SET v = v + 1";
        assert_eq!(named(again).await, 1, "the same tables again: one row");
    }
    assert_eq!(
        named("UPDATE d SET v = v + 1; INSERT INTO e VALUES (1, 0)").await,
        2,
        "a table outside the session's recent ones gets its own row"
    );
    assert_eq!(named("UPDATE e SET v = 7").await, 1);
    c.wait_psql(
        1,
        "SELECT string_agg(v::text, ',' ORDER BY t) FROM (SELECT 'a' t, v FROM a UNION ALL \
         SELECT 'b', v FROM b UNION ALL SELECT 'c', v FROM c UNION ALL SELECT 'd', v FROM d \
         UNION ALL SELECT 'e', v FROM e) x",
        "5,5,5,6,7",
        Duration::from_secs(20),
    )
    .await;
    let (ok, table) = c.verify(20);
    assert!(ok, "{table}");
}
