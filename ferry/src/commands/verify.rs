//! `ferry verify`: every replicated table on every replica against the
//! master, by row count and an order-independent content checksum.

use anyhow::Context;
use ferry::app::{decide, patterns, records};
use ferry::config::Config;
use ferry_batcher::catalog::replicated_tables;
use ferry_batcher::install::connect;
use ferry_cluster::Node;
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

async fn checksum(c: &tokio_postgres::Client, table: &str) -> Result<(i64, String), String> {
    c.query_one(verify::CHECKSUM, &[&table])
        .await
        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
        .map_err(|e| e.to_string())
}

/// Compares all nodes once; returns the rows and whether all are equal.
async fn compare(cfg: &Config) -> anyhow::Result<(Vec<Row>, bool)> {
    let (m, others) = nodes_to_compare(cfg).await?;
    let (include, exclude) = patterns(cfg)?;
    let m = &m;
    let master = connect(&m.name, &m.target, "ferry verify")
        .await
        .with_context(|| {
            format!(
                "the master {} is not reachable: nothing to compare with",
                m.name
            )
        })?;
    let shapes = replicated_tables(&master, &m.name, &include, &exclude).await?;
    let mut clients = Vec::new();
    for r in &others {
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
        let table = s.table.quoted();
        let reference = checksum(&master, &table).await;
        for (name, client) in &clients {
            let result = match client {
                Ok(c) => checksum(c, &table).await,
                Err(e) => Err(format!("unreachable: {e}")),
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

/// The master to compare with, and the nodes to compare: the running
/// topology's replicas and the nodes that did not answer; when no
/// topology can be decided (a node is missing after an outage), the node
/// the records name master and every other node.
async fn nodes_to_compare(cfg: &Config) -> anyhow::Result<(Node, Vec<Node>)> {
    let topo = decide(cfg).await?;
    if topo.waiting.is_none() {
        let unreachable = topo
            .fenced
            .iter()
            .filter(|(_, why)| why == ferry_cluster::coordinator::NOT_AT_START)
            .map(|(n, _)| n.clone());
        let others = topo.replicas.iter().cloned().chain(unreachable).collect();
        return Ok((topo.master, others));
    }
    let (nodes, seen) = records(cfg).await?;
    let why = topo.waiting.unwrap_or_default();
    let name = ferry_cluster::coordinator::named_master(&seen)
        .with_context(|| format!("no master to compare with: {why}"))?;
    let master = nodes
        .iter()
        .find(|n| n.name == name)
        .cloned()
        .with_context(|| format!("no master to compare with: {why}"))?;
    let others = nodes.into_iter().filter(|n| n.name != name).collect();
    Ok((master, others))
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
    let master = nodes_to_compare(cfg).await?.0.name;
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
                // A replica is blamed only against a master figure.
                match (&r.result, reference) {
                    (Ok(a), Some(Ok(b))) if a == b => "ok".into(),
                    (Ok(_), Some(Ok(_))) => "DIFFERS".into(),
                    (Ok(_), _) => "not compared: the master's figure is missing".into(),
                    (Err(e), _) => format!("NOT COMPARED ({e})"),
                }
            };
            let (n, sum) = match &r.result {
                Ok((n, s)) => (n.to_string(), s.clone()),
                Err(_) => ("-".into(), "-".into()),
            };
            println!("{table:<40} {:<12} {n:>10} {sum:>24}  {verdict}", r.node);
        }
    }
    let differs = rows.iter().any(|r| {
        r.node != master
            && matches!((&r.result, rows.iter().find(|m| m.node == master && m.table == r.table).map(|m| &m.result)),
                (Ok(a), Some(Ok(b))) if a != b)
    });
    let unreachable: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.result.is_err())
        .map(|r| r.node.as_str())
        .collect();
    if equal {
        println!("all replicas equal the master");
        Ok(ExitCode::SUCCESS)
    } else if differs {
        println!("replicas differ from the master");
        Ok(ExitCode::from(1))
    } else {
        println!(
            "could not compare every node (no difference found among those compared): {}",
            unreachable.into_iter().collect::<Vec<_>>().join(", ")
        );
        Ok(ExitCode::from(2))
    }
}
