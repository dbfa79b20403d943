//! The randomised differential test: mixed DDL and DML through Ferry,
//! every node compared with the master afterwards. `tests/differential`
//! runs long series.

use ferry_testkit::Cluster;
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// The randomised differential test: a seeded stream of mixed DDL and DML
/// over every form in which a row can change (see
/// `ferry_testkit::workload`) runs through Ferry against three real
/// servers; afterwards every replica equals the master, table by table and
/// sequence by sequence, and no replica reports a failed batch. In CI a
/// few fixed seeds run; `FERRY_DIFF_SEED=<n>` replays one seed,
/// `FERRY_DIFF_SEEDS=<count>` and `FERRY_DIFF_FIRST=<n>` run more, and
/// `FERRY_DIFF_STATEMENTS` sets the units per seed (`tests/differential`
/// runs long series).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_ddl_and_dml_through_ferry_leave_every_replica_equal_to_the_master() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let units = env("FERRY_DIFF_STATEMENTS", 150);
    let seeds: Vec<u64> = match std::env::var("FERRY_DIFF_SEED") {
        Ok(s) => vec![s.parse().expect("FERRY_DIFF_SEED is a number")],
        Err(_) => {
            let first = env("FERRY_DIFF_FIRST", 1);
            (first..first + env("FERRY_DIFF_SEEDS", 2)).collect()
        }
    };
    for seed in seeds {
        differential_run(seed, units).await;
    }
}

async fn differential_run(seed: u64, units: u64) {
    use ferry_testkit::workload::{Generator, SCHEMA};
    use futures_util::SinkExt;
    let c = Cluster::started(bin(), 3, SCHEMA);
    let client = c.proxy_client().await;
    let mut g = Generator::new(seed);
    let mut history: Vec<String> = Vec::new();
    let (mut ok, mut failed) = (0u32, 0u32);
    for _ in 0..units {
        let unit = g.next_unit();
        for sql in &unit.statements {
            let answer = client.batch_execute(sql).await;
            history.push(format!(
                "{sql}{}",
                match &answer {
                    Ok(()) => String::new(),
                    Err(e) => format!("  -- {}", e.as_db_error().map_or("error", |d| d.message())),
                }
            ));
            if answer.is_ok() {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        if let Some(rows) = unit.copy {
            history.push(format!(
                "COPY kv (id, v, s) FROM STDIN -- {} rows",
                rows.lines().count()
            ));
            let copied = async {
                let sink = client.copy_in("COPY kv (id, v, s) FROM STDIN").await?;
                futures_util::pin_mut!(sink);
                sink.send(bytes::Bytes::from(rows)).await?;
                sink.finish().await
            }
            .await;
            if copied.is_ok() {
                ok += 1;
            } else {
                failed += 1;
            }
        }
    }
    let last: Vec<&String> = history.iter().rev().take(40).rev().collect();
    let replay = format!(
        "seed {seed}, {units} units ({ok} statements succeeded, {failed} failed); replay with \
         FERRY_DIFF_SEED={seed} FERRY_DIFF_STATEMENTS={units} cargo test -p ferry --test it differential::random_ddl; \
         the last statements:\n{}",
        last.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
    if let Err(d) = c.wait_equal(Duration::from_secs(60)).await {
        panic!("{d}\n{replay}\n{}", c.ferry_log());
    }
    let seq = "SELECT coalesce(string_agg(c.relname || '=' || coalesce(pg_sequence_last_value(c.oid)::text, '-'), \
               ',' ORDER BY c.relname), '') FROM pg_class c WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace";
    let master = c.psql(0, seq);
    for node in 1..3 {
        c.wait_psql(node, seq, master.trim(), Duration::from_secs(20))
            .await;
    }
    let doc = c.status_doc();
    for n in doc["nodes"].as_array().into_iter().flatten() {
        assert!(
            n["failed_batch"].is_null(),
            "{n}\n{replay}\n{}",
            c.ferry_log()
        );
    }
    assert!(ok > units as u32 / 2, "most statements ran: {replay}");
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for h in &history {
        if let Some((_, e)) = h.split_once("  -- ") {
            let kind: String = e.chars().take(48).collect();
            *errors.entry(kind).or_default() += 1;
        }
    }
    let mut common: Vec<(usize, String)> = errors.into_iter().map(|(k, n)| (n, k)).collect();
    common.sort_by(|a, b| b.cmp(a));
    eprintln!(
        "differential: seed {seed}: {units} units, {ok} statements succeeded, {failed} failed \
         (most often: {:?}); every replica equal",
        &common[..common.len().min(4)]
    );
}
