//! The temporary-table paper's experiment: the same stream of row changes
//! shipped to remote servers by per-row statements (autocommit, one
//! transaction, pipelined), multi-row INSERT … ON CONFLICT, and Ferry's
//! batch path, over links with an injected round-trip latency.
//!
//! Writes one CSV line per cell and a markdown report (tables, crossovers,
//! targets); `benchmarks/paper` plots the CSV.

mod methods;
mod relay;

use clap::Parser;
use methods::{Method, Target};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    about = "Per-row statements versus Ferry's temporary-table batches, over injected latency"
)]
struct Args {
    /// Remote servers (host:port, user postgres, trust), one or more.
    #[arg(long = "server", required_unless_present = "from_csv")]
    servers: Vec<SocketAddr>,
    /// Measure nothing: write the report from an earlier run's CSV.
    #[arg(long)]
    from_csv: Option<std::path::PathBuf>,
    /// Database on every server.
    #[arg(long, default_value = "postgres")]
    db: String,
    /// Link round-trip latencies to inject, in ms.
    #[arg(long, value_delimiter = ',', default_value = "0,1,5,20")]
    latencies: Vec<u64>,
    /// Stream rows per transaction.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,5,10,20,50,100,1000,10000"
    )]
    rows: Vec<i64>,
    /// Numbers of related tables each stream row changes.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    tables: Vec<usize>,
    /// Numbers of servers to ship to (the first N of --server).
    #[arg(long = "targets", value_delimiter = ',', default_value = "1,2")]
    targets: Vec<usize>,
    /// Seconds each cell runs (at least one transaction).
    #[arg(long, default_value = "1.5")]
    seconds: f64,
    /// CSV output.
    #[arg(long, required_unless_present = "from_csv")]
    csv: Option<std::path::PathBuf>,
    /// Markdown report.
    #[arg(long)]
    report: std::path::PathBuf,
}

/// One measured cell.
struct Cell {
    targets: usize,
    tables: usize,
    latency: u64,
    rows: i64,
    method: Method,
    rows_per_s: f64,
    round_trips_per_txn: f64,
    bytes_per_row: f64,
    /// Sequential methods stop a transaction early when it would outlast
    /// the cell; the rows actually sent per transaction.
    sent_per_txn: i64,
    /// The measured round trip of a trivial statement over the link, ms.
    link_rtt: f64,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    if let Some(path) = &args.from_csv {
        let cells = read_csv(&std::fs::read_to_string(path)?)?;
        std::fs::write(&args.report, report(&cells))?;
        return Ok(());
    }
    let budget = Duration::from_secs_f64(args.seconds);
    let mut cells = Vec::new();
    let mut csv = String::from(
        "targets,tables,latency_ms,rows_per_txn,method,rows_per_s,round_trips_per_txn,bytes_per_row,rows_sent_per_txn,link_rtt_ms\n",
    );
    let mut next_row: i64 = 0;
    for &targets in &args.targets {
        let servers = &args.servers[..targets.min(args.servers.len())];
        for &tables in &args.tables {
            for &latency in &args.latencies {
                let mut links = Vec::new();
                for s in servers {
                    let (addr, stats) = relay::start(*s, Duration::from_millis(latency)).await?;
                    links.push((addr, stats));
                }
                let mut sessions = Vec::new();
                for (addr, _) in &links {
                    sessions.push(Target::open(*addr, &args.db, tables).await?);
                }
                let link_rtt = sessions[0].round_trip_ms().await?;
                for &rows in &args.rows {
                    for method in Method::ALL {
                        let cell =
                            measure(&mut sessions, &links, method, rows, budget, &mut next_row)
                                .await?;
                        let cell = Cell {
                            targets: servers.len(),
                            tables,
                            latency,
                            link_rtt,
                            ..cell
                        };
                        let _ = writeln!(
                            csv,
                            "{},{},{},{},{},{:.1},{:.2},{:.1},{},{:.3}",
                            cell.targets,
                            cell.tables,
                            cell.latency,
                            cell.rows,
                            cell.method.key(),
                            cell.rows_per_s,
                            cell.round_trips_per_txn,
                            cell.bytes_per_row,
                            cell.sent_per_txn,
                            cell.link_rtt
                        );
                        eprintln!(
                            "targets={} tables={} latency={}ms rows/txn={:>5} {:<28} {:>10.0} rows/s",
                            cell.targets,
                            cell.tables,
                            cell.latency,
                            cell.rows,
                            cell.method.key(),
                            cell.rows_per_s
                        );
                        cells.push(cell);
                    }
                }
            }
        }
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, csv)?;
    }
    std::fs::write(&args.report, report(&cells))?;
    Ok(())
}

/// The cells of a CSV this program wrote.
fn read_csv(text: &str) -> Result<Vec<Cell>, Error> {
    let mut cells = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || format!("line {}: {line:?}", i + 1);
        if f.len() != 10 {
            return Err(bad().into());
        }
        let method = Method::ALL
            .into_iter()
            .find(|m| m.key() == f[4])
            .ok_or_else(bad)?;
        cells.push(Cell {
            targets: f[0].parse()?,
            tables: f[1].parse()?,
            latency: f[2].parse()?,
            rows: f[3].parse()?,
            method,
            rows_per_s: f[5].parse()?,
            round_trips_per_txn: f[6].parse()?,
            bytes_per_row: f[7].parse()?,
            sent_per_txn: f[8].parse()?,
            link_rtt: f[9].parse()?,
        });
    }
    Ok(cells)
}

/// Runs one cell on every target at once: transactions of `rows` stream
/// rows until the budget is spent.
async fn measure(
    sessions: &mut [Target],
    links: &[(SocketAddr, std::sync::Arc<relay::Stats>)],
    method: Method,
    rows: i64,
    budget: Duration,
    next_row: &mut i64,
) -> Result<Cell, Error> {
    // One warm-up transaction (plans, caches), not counted.
    let warm = Instant::now() + budget;
    ship_all(sessions, method, *next_row, rows.min(100), warm).await?;
    *next_row += rows.min(100);
    let before: Vec<(u64, u64)> = links.iter().map(|(_, s)| s.snapshot()).collect();
    let start = Instant::now();
    let deadline = start + budget;
    let mut sent = 0i64;
    let mut txns = 0i64;
    loop {
        let done = ship_all(sessions, method, *next_row, rows, deadline).await?;
        *next_row += done;
        sent += done;
        txns += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (mut bytes, mut trips) = (0u64, 0u64);
    for ((_, s), (b0, r0)) in links.iter().zip(before) {
        let (b1, r1) = s.snapshot();
        bytes += b1 - b0;
        trips += r1 - r0;
    }
    let n = links.len().max(1) as f64;
    Ok(Cell {
        targets: 0,
        tables: 0,
        latency: 0,
        rows,
        method,
        rows_per_s: sent as f64 / elapsed,
        round_trips_per_txn: trips as f64 / n / txns as f64,
        bytes_per_row: bytes as f64 / n / sent.max(1) as f64,
        sent_per_txn: sent / txns.max(1),
        link_rtt: 0.0,
    })
}

/// Ships the same rows to every target concurrently; the rows every one
/// of them shipped.
async fn ship_all(
    sessions: &mut [Target],
    method: Method,
    first: i64,
    rows: i64,
    deadline: Instant,
) -> Result<i64, Error> {
    let done = futures_util::future::try_join_all(
        sessions
            .iter_mut()
            .map(|t| t.ship(method, first, rows, deadline)),
    )
    .await?;
    Ok(done.into_iter().min().unwrap_or(0))
}

/// The best per-row method's rate (pipelined or multi-row) and the
/// batch path's, per cell group.
fn report(cells: &[Cell]) -> String {
    let mut out = String::from("Rows per second of the change stream (each stream row changes every related table), by method:\n\n");
    for m in Method::ALL {
        let _ = writeln!(out, "- `{}`: {}", m.key(), m.name());
    }
    out.push('\n');
    let mut groups: BTreeMap<(usize, usize, u64), Vec<&Cell>> = BTreeMap::new();
    for c in cells {
        groups
            .entry((c.targets, c.tables, c.latency))
            .or_default()
            .push(c);
    }
    let rate = |g: &[&Cell], rows: i64, m: Method| {
        g.iter()
            .find(|c| c.rows == rows && c.method == m)
            .map_or(0.0, |c| c.rows_per_s)
    };
    let _ = writeln!(out, "| servers | tables | RTT (ms) | rows/txn | {} | batch vs best per-row | round trips/txn (batch) | bytes/row (batch) |",
        Method::ALL.iter().map(|m| m.key()).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|{}---:|---:|---:|",
        "---:|".repeat(Method::ALL.len())
    );
    let mut crossovers = Vec::new();
    let mut targets = Vec::new();
    for ((servers, tables, latency), g) in &groups {
        let mut sizes: Vec<i64> = g.iter().map(|c| c.rows).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut crossover: Option<i64> = None;
        let (mut from20, mut from1000, mut vs_auto) = (f64::INFINITY, f64::INFINITY, None);
        for &n in &sizes {
            let best = rate(g, n, Method::Pipelined).max(rate(g, n, Method::MultiRow));
            let b = rate(g, n, Method::Batch);
            let batch_cell = g.iter().find(|c| c.rows == n && c.method == Method::Batch);
            let rates: Vec<String> = Method::ALL
                .iter()
                .map(|&m| {
                    let c = g.iter().find(|c| c.rows == n && c.method == m);
                    match c {
                        Some(c) if c.sent_per_txn < n => format!("{:.0}*", c.rows_per_s),
                        Some(c) => format!("{:.0}", c.rows_per_s),
                        None => "-".into(),
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "| {servers} | {tables} | {latency} | {n} | {} | {:.2}× | {:.1} | {:.0} |",
                rates.join(" | "),
                b / best.max(f64::MIN_POSITIVE),
                batch_cell.map_or(0.0, |c| c.round_trips_per_txn),
                batch_cell.map_or(0.0, |c| c.bytes_per_row)
            );
            if b >= best {
                crossover.get_or_insert(n);
            } else {
                crossover = None;
            }
            let ratio = b / best.max(f64::MIN_POSITIVE);
            if n >= 20 {
                from20 = from20.min(ratio);
            }
            if n >= 1000 {
                from1000 = from1000.min(ratio);
            }
            if n == 1000 && *latency == 5 {
                vs_auto = Some(b / rate(g, n, Method::Autocommit).max(f64::MIN_POSITIVE));
            }
        }
        let measured = g.first().map_or(0.0, |c| c.link_rtt);
        crossovers.push(format!(
            "| {servers} | {tables} | {latency} | {measured:.2} | {} |",
            crossover.map_or("never".into(), |n| n.to_string())
        ));
        targets.push(((*servers, *tables, *latency), from20, from1000, vs_auto));
    }
    out.push_str("\n`*`: a sequential per-row method that would outlast the cell ran fewer rows per transaction (its rate is per-row bound either way).\n\n");
    out.push_str("Crossover — the fewest rows per transaction from which Ferry's batch path is at least as fast as the best per-row method (pipelined statements or multi-row INSERT) at every larger size measured (the paper: 20); with the round trip of a `SELECT 1` measured over the link:\n\n| servers | tables | RTT (ms) | measured RTT (ms) | crossover (rows/txn) |\n|---:|---:|---:|---:|---:|\n");
    for c in crossovers {
        out.push_str(&c);
        out.push('\n');
    }
    let judge = |r: f64, want: f64| {
        if !r.is_finite() {
            "-".to_string()
        } else if r >= want {
            format!("{r:.2}× met")
        } else {
            format!("{r:.2}× NOT met")
        }
    };
    out.push_str("\nTargets (the issue's): from 20 rows per transaction up, the batch path at least as fast as the \
best per-row method (the lowest ratio over those sizes); from 1,000 rows, at least 3× faster; at 1,000 rows over \
5 ms, at least 100× per-row autocommit.\n\n| servers | tables | RTT (ms) | ≥ 1× from 20 rows | ≥ 3× from 1,000 rows | ≥ 100× autocommit (5 ms, 1,000 rows) |\n|---:|---:|---:|---|---|---|\n");
    let mut met = 0;
    let mut total = 0;
    for ((servers, tables, latency), from20, from1000, vs_auto) in &targets {
        for (r, want) in [(*from20, 1.0), (*from1000, 3.0)]
            .into_iter()
            .chain(vs_auto.map(|r| (r, 100.0)))
        {
            if r.is_finite() {
                total += 1;
                met += usize::from(r >= want);
            }
        }
        let _ = writeln!(
            out,
            "| {servers} | {tables} | {latency} | {} | {} | {} |",
            judge(*from20, 1.0),
            judge(*from1000, 3.0),
            vs_auto.map_or("-".into(), |r| judge(r, 100.0))
        );
    }
    let _ = writeln!(out, "\n{met} of {total} targets met.");
    out
}
