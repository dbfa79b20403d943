//! Measures replication lag from outside Ferry: commits a numbered row on
//! the master every interval and polls a replica until it appears; the lag
//! of a row is the time from its commit returning to its first sighting.
//!
//! Usage: lagprobe MASTER_DSN REPLICA_DSN SECONDS [INTERVAL_MS] [SERIES_CSV]
//! Runs may follow one another on the same table: ids continue above the
//! rows already there.
//! The table `ferry_lag_probe (id bigint primary key, at timestamptz)` must
//! exist on both (and be replicated). Prints one line of percentiles in ms;
//! with SERIES_CSV, also writes the percentiles of each second of the run
//! (by commit time) there, for a plot of lag over time.

use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

async fn connect(dsn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (c, conn) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: lagprobe MASTER_DSN REPLICA_DSN SECONDS [INTERVAL_MS] [SERIES_CSV]");
        std::process::exit(2);
    }
    let seconds: u64 = args[3].parse()?;
    let interval = Duration::from_millis(args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(50));
    let master = connect(&args[1]).await?;
    let replica = connect(&args[2]).await?;
    // Ids continue above what the table holds: rows of an earlier run may
    // still be on their way to the replica (a DELETE first would be too).
    let base: i64 = master
        .query_one("SELECT coalesce(max(id), 0) FROM ferry_lag_probe", &[])
        .await?
        .get(0);
    let insert = master
        .prepare("INSERT INTO ferry_lag_probe VALUES ($1, clock_timestamp())")
        .await?;
    let poll = replica
        .prepare("SELECT coalesce(max(id), 0) FROM ferry_lag_probe")
        .await?;
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut committed: Vec<Instant> = Vec::new();
    let mut lags: Vec<f64> = Vec::new();
    let mut next_insert = Instant::now();
    let mut seen: i64 = 0;
    loop {
        let now = Instant::now();
        if now >= next_insert && now < end {
            let id = base + committed.len() as i64 + 1;
            master.execute(&insert, &[&id]).await?;
            committed.push(Instant::now());
            next_insert += interval;
        }
        let max: i64 = replica.query_one(&poll, &[]).await?.get(0);
        let max = (max - base).clamp(0, committed.len() as i64);
        let now = Instant::now();
        while seen < max {
            lags.push(now.duration_since(committed[seen as usize]).as_secs_f64() * 1000.0);
            seen += 1;
        }
        if now >= end && seen as usize == committed.len() {
            break;
        }
        if now >= end + Duration::from_secs(30) {
            eprintln!(
                "lagprobe: {} rows never arrived",
                committed.len() - seen as usize
            );
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if lags.is_empty() {
        eprintln!("lagprobe: no samples (SECONDS must be at least 1)");
        std::process::exit(1);
    }
    if let Some(path) = args.get(5) {
        let mut csv = String::from("second,samples,p50_ms,p90_ms,p99_ms,max_ms\n");
        let mut second = 0;
        loop {
            let mut window: Vec<f64> = lags
                .iter()
                .zip(&committed)
                .filter(|(_, at)| at.duration_since(start).as_secs() == second)
                .map(|(lag, _)| *lag)
                .collect();
            if window.is_empty() {
                break;
            }
            window.sort_by(f64::total_cmp);
            let [p50, p90, p99, max] = percentiles(&window);
            csv.push_str(&format!(
                "{second},{},{p50:.1},{p90:.1},{p99:.1},{max:.1}\n",
                window.len()
            ));
            second += 1;
        }
        std::fs::write(path, csv)?;
    }
    lags.sort_by(f64::total_cmp);
    let [p50, p90, p99, max] = percentiles(&lags);
    println!(
        "samples={} p50_ms={p50:.1} p90_ms={p90:.1} p99_ms={p99:.1} max_ms={max:.1}",
        lags.len(),
    );
    Ok(())
}

/// p50, p90, p99 and the maximum of sorted, non-empty samples.
fn percentiles(sorted: &[f64]) -> [f64; 4] {
    let pct = |p: f64| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize];
    [pct(0.5), pct(0.9), pct(0.99), sorted[sorted.len() - 1]]
}
