//! `ferry verify`: every replicated table on every replica against the
//! master, by row count and an order-independent content checksum.

use anyhow::Context;
use ferry::app::{decide, patterns};
use ferry::config::Config;
use ferry_batcher::catalog::replicated_tables;
use ferry_batcher::install::connect;
use ferry_sql::verify;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// One table on one node.
struct Row {
    table: String,
    node: String,
    result: Result<(i64, String), String>,
}

async fn checksum(c: &tokio_postgres::Client, sql: &str) -> Result<(i64, String), String> {
    c.query_one(sql, &[])
        .await
        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
        .map_err(|e| e.to_string())
}

/// Compares all nodes once; returns the rows and whether all are equal.
async fn compare(cfg: &Config) -> anyhow::Result<(Vec<Row>, bool)> {
    let topo = decide(cfg).await?;
    if let Some(why) = &topo.waiting {
        anyhow::bail!("no master to compare with: {why}");
    }
    let (include, exclude) = patterns(cfg)?;
    let m = &topo.master;
    let master = connect(&m.name, &m.target, "ferry verify").await?;
    let shapes = replicated_tables(&master, &m.name, &include, &exclude).await?;
    let mut clients = Vec::new();
    for r in &topo.replicas {
        clients.push((
            r.name.clone(),
            connect(&r.name, &r.target, "ferry verify")
                .await
                .map_err(|e| e.to_string()),
        ));
    }
    let mut rows = Vec::new();
    let mut equal = true;
    for s in &shapes {
        let sql = verify::checksum(s);
        let reference = checksum(&master, &sql).await;
        for (name, client) in &clients {
            let result = match client {
                Ok(c) => checksum(c, &sql).await,
                Err(e) => Err(e.clone()),
            };
            equal &= matches!((&reference, &result), (Ok(a), Ok(b)) if a == b);
            rows.push(Row {
                table: s.table.to_string(),
                node: name.clone(),
                result,
            });
        }
        rows.push(Row {
            table: s.table.to_string(),
            node: m.name.clone(),
            result: reference,
        });
    }
    Ok((rows, equal))
}

pub async fn run(config: &Path, retry_for: u64) -> anyhow::Result<ExitCode> {
    let cfg =
        Config::load(config).with_context(|| format!("configuration {}", config.display()))?;
    check(&cfg, retry_for).await
}

/// Compares, retrying for up to `retry_for` seconds, and prints the table.
pub async fn check(cfg: &Config, retry_for: u64) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + Duration::from_secs(retry_for);
    let (rows, equal) = loop {
        let (rows, equal) = compare(cfg).await?;
        if equal || Instant::now() >= deadline {
            break (rows, equal);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let master = decide(cfg).await?.master.name;
    println!(
        "{:<40} {:<12} {:>10} {:>24}  result",
        "table", "node", "rows", "checksum"
    );
    let mut by_table: std::collections::BTreeMap<&str, Vec<&Row>> = Default::default();
    for r in &rows {
        by_table.entry(&r.table).or_default().push(r);
    }
    for (table, group) in by_table {
        let reference = group.iter().find(|r| r.node == master).map(|r| &r.result);
        let mut sorted = group.clone();
        sorted.sort_by_key(|r| (r.node != master, r.node.clone()));
        for r in sorted {
            let verdict = if r.node == master {
                "master".to_string()
            } else {
                match (&r.result, reference) {
                    (Ok(a), Some(Ok(b))) if a == b => "ok".into(),
                    (Ok(_), _) => "DIFFERS".into(),
                    (Err(e), _) => format!("ERROR {e}"),
                }
            };
            let (n, sum) = match &r.result {
                Ok((n, s)) => (n.to_string(), s.clone()),
                Err(_) => ("-".into(), "-".into()),
            };
            println!("{table:<40} {:<12} {n:>10} {sum:>24}  {verdict}", r.node);
        }
    }
    if equal {
        println!("all replicas equal the master");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("replicas differ from the master");
        Ok(ExitCode::from(1))
    }
}
