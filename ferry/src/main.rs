//! The `ferry` command line.

mod commands;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Ferry keeps several independent PostgreSQL servers identical: point
/// applications at it instead of the database.
#[derive(Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy, the batcher and the admin endpoint.
    Run {
        #[arg(long, short, env = "FERRY_CONFIG")]
        config: PathBuf,
    },
    /// Install the ferry schema and capture on every node (idempotent).
    Init {
        #[arg(long, short, env = "FERRY_CONFIG")]
        config: PathBuf,
    },
    /// Show the cluster at a glance, from a running Ferry's admin endpoint.
    Status {
        /// Admin endpoint base URL.
        #[arg(long, default_value = "http://127.0.0.1:9930", env = "FERRY_ADMIN")]
        admin: String,
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Suspend replicas at a future instant for a point-in-time copy
    /// (several named: one consistency group, cut at the same snapshot), or
    /// cancel a scheduled suspension.
    Suspend {
        /// Replica names.
        #[arg(required = true)]
        nodes: Vec<String>,
        /// The instant, RFC 3339 (e.g. 2026-11-22T21:00:00Z); at least
        /// suspend.min_lead_ms ahead.
        #[arg(long, required_unless_present = "cancel")]
        at: Option<String>,
        /// Cancel the scheduled suspension instead (before its instant).
        #[arg(long, conflicts_with = "at")]
        cancel: bool,
        #[arg(long, default_value = "http://127.0.0.1:9930", env = "FERRY_ADMIN")]
        admin: String,
    },
    /// Resume suspended replicas: they receive what changed meanwhile,
    /// netted per key, then ship normally.
    Resume {
        #[arg(required = true)]
        nodes: Vec<String>,
        #[arg(long, default_value = "http://127.0.0.1:9930", env = "FERRY_ADMIN")]
        admin: String,
    },
    /// Make a node master when the cluster cannot decide by itself (after
    /// a total outage the node that was master last is missing). Possible
    /// data loss: recorded and shown as forced.
    ForceMaster {
        node: String,
        #[arg(long, default_value = "http://127.0.0.1:9930", env = "FERRY_ADMIN")]
        admin: String,
    },
    /// Add a new, empty PostgreSQL server to the running cluster: it gets
    /// the replicated tables' definitions and a consistent copy of their
    /// rows from the master (with a progress bar), then catches up and
    /// serves as a replica. Add its [[nodes]] entry to the configuration
    /// too (printed at the end).
    AddNode {
        name: String,
        #[arg(long)]
        dsn: String,
        #[arg(long, default_value_t = 100)]
        priority: i32,
        #[arg(long, default_value = "http://127.0.0.1:9930", env = "FERRY_ADMIN")]
        admin: String,
    },
    /// Planned switchover: hold new statements, let transactions under way
    /// finish, ship the last batches, make NODE (or the best replica)
    /// master and the old master its replica, then run the held
    /// statements there. Nothing fails; if a step cannot complete, nothing
    /// changes.
    Switchover {
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value = "http://127.0.0.1:9930", env = "FERRY_ADMIN")]
        admin: String,
    },
    /// Copy the master's replicated tables to a node fenced out of the
    /// cluster (an old master, a replica that missed a failover) and take it
    /// back as a replica. Its own rows in those tables are replaced.
    Resync {
        node: String,
        #[arg(long, default_value = "http://127.0.0.1:9930", env = "FERRY_ADMIN")]
        admin: String,
    },
    /// Take a node other than the master out of the cluster for good (a
    /// failed master that will not come back, a retired replica): it gets no
    /// more batches, and the master stops keeping the outbox for it. Remove
    /// its [[nodes]] entry from the configuration file too.
    RemoveNode {
        node: String,
        #[arg(long, default_value = "http://127.0.0.1:9930", env = "FERRY_ADMIN")]
        admin: String,
    },
    /// Rewrite on a replica, with the master's rows at one snapshot, the
    /// key ranges the background check found different there (in TABLE
    /// only, or all of TABLE when none were found); shipping goes on.
    Repair {
        node: String,
        /// A replicated table (`schema.name`, or `name` in public).
        table: Option<String>,
        #[arg(long, default_value = "http://127.0.0.1:9930", env = "FERRY_ADMIN")]
        admin: String,
    },
    /// Compare every replicated table on every replica with the master.
    Verify {
        #[arg(long, short, env = "FERRY_CONFIG")]
        config: PathBuf,
        /// Keep comparing for up to this many seconds until all are equal
        /// (replicas follow the master asynchronously).
        #[arg(long, default_value_t = 0)]
        retry_for: u64,
    },
    /// Create a local three-node cluster, run Ferry in front of it with a
    /// sample workload, and keep it running until Ctrl-C.
    Demo {
        /// Data directory for the three servers and the configuration.
        #[arg(long, default_value = ".ferry-demo")]
        dir: PathBuf,
        /// First of three consecutive ports for the servers.
        #[arg(long, default_value_t = 5433)]
        base_port: u16,
        /// Proxy address.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
        /// Admin endpoint address.
        #[arg(long, default_value = "127.0.0.1:9930")]
        admin: String,
        /// Stop after the sample workload instead of waiting for Ctrl-C.
        #[arg(long)]
        no_wait: bool,
    },
}

fn main() -> ExitCode {
    if let Err(e) = init_logging() {
        eprintln!("ferry: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    // `run` sizes its runtime from the configuration, so load that first.
    let run_config = match &cli.command {
        Command::Run { config } => match ferry::config::Config::load(config) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("ferry: configuration {}: {e}", config.display());
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let workers = run_config
        .as_ref()
        .map(|c| c.proxy.worker_threads())
        .unwrap_or_else(|| ferry::config::ProxyConfig::default().worker_threads());
    // One worker: a current-thread runtime, without the work-stealing
    // scheduler's synchronisation on every wake-up.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferry: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { .. } => match run_config {
                Some(cfg) => commands::run::run(cfg).await,
                None => Ok(ExitCode::FAILURE),
            },
            Command::Init { config } => commands::init::run(&config).await,
            Command::Status { admin, json } => commands::status::run(&admin, json).await,
            Command::Suspend {
                nodes,
                at,
                cancel,
                admin,
            } => commands::suspend::run(&admin, &nodes, at.as_deref(), cancel).await,
            Command::Resume { nodes, admin } => commands::resume::run(&admin, &nodes).await,
            Command::ForceMaster { node, admin } => {
                commands::force_master::run(&admin, &node).await
            }
            Command::Resync { node, admin } => commands::resync::run(&admin, &node).await,
            Command::RemoveNode { node, admin } => commands::remove_node::run(&admin, &node).await,
            Command::Repair { node, table, admin } => {
                commands::repair::run(&admin, &node, table.as_deref()).await
            }
            Command::AddNode {
                name,
                dsn,
                priority,
                admin,
            } => commands::add_node::run(&admin, &name, &dsn, priority).await,
            Command::Switchover { to, admin } => {
                commands::switchover::run(&admin, to.as_deref()).await
            }
            Command::Verify { config, retry_for } => {
                commands::verify::run(&config, retry_for).await
            }
            Command::Demo {
                dir,
                base_port,
                listen,
                admin,
                no_wait,
            } => commands::demo::run(&dir, base_port, &listen, &admin, no_wait).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to standard error: as text, coloured only when that is a terminal
/// (and `NO_COLOR` is unset), or as one JSON object per line with
/// `FERRY_LOG_FORMAT=json` for log shippers. `FERRY_LOG` filters (default
/// `info`).
fn init_logging() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("FERRY_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().with_current_span(true).init(),
        Ok("text") | Err(std::env::VarError::NotPresent) => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
        Ok(other) => anyhow::bail!("FERRY_LOG_FORMAT={other:?}: use text or json"),
        Err(e) => anyhow::bail!("FERRY_LOG_FORMAT: {e}"),
    }
    Ok(())
}
