//! Measures replication lag from outside Ferry: commits a numbered row on
//! the master every interval and polls a replica until it appears; the lag
//! of a row is the time from its commit returning to its first sighting.
//!
//! Usage: lagprobe MASTER_DSN REPLICA_DSN SECONDS [INTERVAL_MS]
//! The table `ferry_lag_probe (id bigint primary key, at timestamptz)` must
//! exist on both (and be replicated). Prints one line of percentiles in ms.

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
        eprintln!("usage: lagprobe MASTER_DSN REPLICA_DSN SECONDS [INTERVAL_MS]");
        std::process::exit(2);
    }
    let seconds: u64 = args[3].parse()?;
    let interval = Duration::from_millis(args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(50));
    let master = connect(&args[1]).await?;
    let replica = connect(&args[2]).await?;
    master.batch_execute("DELETE FROM ferry_lag_probe").await?;
    let insert = master
        .prepare("INSERT INTO ferry_lag_probe VALUES ($1, clock_timestamp())")
        .await?;
    let poll = replica
        .prepare("SELECT coalesce(max(id), 0) FROM ferry_lag_probe")
        .await?;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut committed: Vec<Instant> = Vec::new();
    let mut lags: Vec<f64> = Vec::new();
    let mut next_insert = Instant::now();
    let mut seen: i64 = 0;
    loop {
        let now = Instant::now();
        if now >= next_insert && now < end {
            let id = committed.len() as i64 + 1;
            master.execute(&insert, &[&id]).await?;
            committed.push(Instant::now());
            next_insert += interval;
        }
        let max: i64 = replica.query_one(&poll, &[]).await?.get(0);
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
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| lags[((lags.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "samples={} p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        lags.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lags[lags.len() - 1]
    );
    Ok(())
}
