//! Installing the `ferry` schema and capture on the nodes. Idempotent.

use crate::catalog::{differences, replicated_tables};
use crate::pattern::Pattern;
use crate::BatchError;
use ferry_sql::{capture, ddl, schema, TableName, TableShape};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use tracing::info;

/// Installs schema and capture on the master; returns its replicated tables.
pub async fn install_master(
    node: &str,
    client: &Client,
    include: &[Pattern],
    exclude: &[Pattern],
) -> Result<Vec<TableShape>, BatchError> {
    let shapes = install_node(node, client, include, exclude).await?;
    info!(
        node,
        tables = shapes.len(),
        "schema and capture installed on the master"
    );
    Ok(shapes)
}

/// Installs schema and capture on any node, for its own replicated tables
/// (a replica's are checked against the master's later, by
/// [`prepare_replica`]); returns them. `ferry init` runs it on every node
/// at once: a fresh install costs each server a few milliseconds per
/// table.
pub async fn install_node(
    node: &str,
    client: &Client,
    include: &[Pattern],
    exclude: &[Pattern],
) -> Result<Vec<TableShape>, BatchError> {
    install_schema(node, client, include, exclude).await?;
    let shapes = replicated_tables(client, node, include, exclude).await?;
    install_capture(node, client, &shapes).await?;
    Ok(shapes)
}

/// The `ferry` schema, capture functions, DDL log and triggers, and the
/// replication patterns the triggers consult. The session is marked so
/// that its own DDL is not logged as the application's.
async fn install_schema(
    node: &str,
    client: &Client,
    include: &[Pattern],
    exclude: &[Pattern],
) -> Result<(), BatchError> {
    let err = BatchError::pg(node);
    let script = format!(
        "{}{}{}{}{}{}",
        schema::INSTALL,
        capture::FUNCTIONS,
        ddl::INSTALL,
        ferry_sql::guard::install(),
        ferry_sql::suspend::INSTALL,
        ferry_sql::verify::INSTALL
    );
    // The script takes exclusive locks on Ferry's tables (its ALTER TABLE
    // … IF NOT EXISTS and event triggers), which an application's
    // schema change needs too: run it only when this build's differs from
    // the one installed, so a batcher restarting after each schema change
    // does not deadlock with the next one.
    let version = {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&script, &mut h);
        format!("{:016x}", std::hash::Hasher::finish(&h))
    };
    let installed: String = client
        .query_one(schema::INSTALLED_VERSION, &[])
        .await
        .map_err(BatchError::pg(node))?
        .get(0);
    let sql = if installed == schema::installed_marker(&version) {
        capture::QUIET.to_string()
    } else {
        format!(
            "{}; {script}; {}",
            capture::QUIET,
            schema::mark_installed(&version)
        )
    };
    client.batch_execute(&sql).await.map_err(err)?;
    let split =
        |ps: &[Pattern]| -> (Vec<String>, Vec<String>) { ps.iter().map(Pattern::like).unzip() };
    let (is, it) = split(include);
    let (es, et) = split(exclude);
    client
        .execute(ddl::SET_PATTERNS, &[&is, &it, &es, &et])
        .await
        .map_err(BatchError::pg(node))?;
    Ok(())
}

/// Installs or refreshes capture for each table whose capture is not
/// current (asked for all of them in one statement, without locks); the
/// generator waits at most `lock_timeout` for a table's writers rather
/// than queue behind a long transaction. Each table in a transaction of its
/// own; the calls are pipelined, [`INSTALLS_IN_FLIGHT`] at a time, so that
/// 2,000 tables cost the server's work, not 2,000 round trips; progress is
/// logged every few seconds.
async fn install_capture(
    node: &str,
    client: &Client,
    shapes: &[TableShape],
) -> Result<(), BatchError> {
    let err = BatchError::pg(node);
    client
        .batch_execute(capture::INSTALL_SESSION)
        .await
        .map_err(BatchError::pg(node))?;
    let installed = async {
        // One look at every table first: a restart over unchanged tables
        // calls the generator for none of them.
        let quoted: Vec<String> = shapes.iter().map(|s| s.table.quoted()).collect();
        let stale: Vec<String> = client
            .query(capture::STALE, &[&quoted])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let statement = client.prepare(capture::INSTALL_TABLE).await?;
        let mut names = stale.iter().cloned();
        let mut calls = FuturesOrdered::new();
        let mut progress = Progress::new(node, stale.len());
        loop {
            while calls.len() < INSTALLS_IN_FLIGHT {
                let Some(name) = names.next() else { break };
                calls.push_back(install_one(client, &statement, name));
            }
            let Some(done) = calls.next().await else {
                break;
            };
            done?;
            progress.step();
        }
        progress.finish();
        Ok(())
    }
    .await;
    let reset = client.batch_execute(capture::INSTALL_SESSION_END).await;
    installed.map_err(BatchError::pg(node))?;
    reset.map_err(err)
}

/// One table's capture install (a named future type keeps the pipelined
/// calls `Send` inside spawned tasks).
fn install_one<'a>(
    client: &'a Client,
    statement: &'a tokio_postgres::Statement,
    name: String,
) -> Pin<Box<dyn Future<Output = Result<tokio_postgres::Row, tokio_postgres::Error>> + Send + 'a>> {
    Box::pin(async move { client.query_one(statement, &[&name]).await })
}

/// Capture installs a session keeps in flight at once.
const INSTALLS_IN_FLIGHT: usize = 32;

/// Logs how far a long install has come, every [`Progress::EVERY`].
struct Progress<'a> {
    node: &'a str,
    total: usize,
    done: usize,
    started: Instant,
    reported: Instant,
}

impl<'a> Progress<'a> {
    const EVERY: Duration = Duration::from_secs(3);

    fn new(node: &'a str, total: usize) -> Self {
        let now = Instant::now();
        Self {
            node,
            total,
            done: 0,
            started: now,
            reported: now,
        }
    }

    fn step(&mut self) {
        self.done += 1;
        if self.reported.elapsed() >= Self::EVERY {
            self.reported = Instant::now();
            info!(
                node = self.node,
                done = self.done,
                tables = self.total,
                "installing capture: {} of {} tables",
                self.done,
                self.total
            );
        }
    }

    /// Says how long it took, when it took long enough to be reported.
    fn finish(&self) {
        let took = self.started.elapsed();
        if took >= Self::EVERY {
            info!(
                node = self.node,
                tables = self.total,
                seconds = took.as_secs_f64(),
                "capture installed on {} tables",
                self.total
            );
        }
    }
}

/// Checks that a replica holds the master's replicated tables, installs
/// schema and capture there (so it can serve as master later), starts its
/// ledger at the master's current snapshot if it has none, and records its
/// position on the master. Returns that position and the shapes its apply
/// session works with: the master's, or — when schema changes are on their
/// way to it in the stream — its own until they arrive.
pub async fn prepare_replica(
    master: (&str, &Client),
    shapes: &[TableShape],
    replica: (&str, &Client),
    include: &[Pattern],
    exclude: &[Pattern],
) -> Result<((i64, String), Vec<TableShape>), BatchError> {
    let (name, client) = replica;
    install_schema(name, client, include, exclude).await?;
    let theirs = replicated_tables(client, name, include, exclude).await?;
    let diffs = differences(shapes, name, &theirs);
    let session_shapes = if diffs.is_empty() {
        shapes.to_vec()
    } else {
        let ledger = client
            .query_opt(schema::READ_LEDGER, &[])
            .await
            .map_err(BatchError::pg(name))?;
        // Differences in tables with schema changes on their way to the
        // replica are expected; any other is not.
        let pending: Vec<TableName> = match ledger {
            Some(row) => {
                let snap: String = row.get(1);
                master
                    .1
                    .query(ddl::PENDING, &[&snap])
                    .await
                    .map_err(BatchError::pg(master.0))?
                    .iter()
                    .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
                    .collect()
            }
            None => Vec::new(),
        };
        let unexplained: Vec<String> = diffs
            .iter()
            .filter(|(t, _)| !pending.contains(t))
            .map(|(_, d)| d.clone())
            .collect();
        if !unexplained.is_empty() {
            return Err(BatchError::SchemaMismatch(unexplained));
        }
        info!(node = name, "replica's tables differ from the master's until the schema changes on their way to it apply");
        theirs.clone()
    };
    install_capture(name, client, &theirs).await?;
    // Capture is live on the master: everything committed after this
    // snapshot is in the outbox.
    let snap: String = master
        .1
        .query_one(schema::CURRENT_SNAPSHOT, &[])
        .await
        .map_err(BatchError::pg(master.0))?
        .get(0);
    let seeded = client
        .execute(schema::SEED_LEDGER, &[&master.0, &snap])
        .await
        .map_err(BatchError::pg(name))?;
    let row = client
        .query_one(schema::READ_LEDGER, &[])
        .await
        .map_err(BatchError::pg(name))?;
    let position: (i64, String) = (row.get(0), row.get(1));
    master
        .1
        .query(schema::BATCH_IDS_AT_LEAST, &[&position.0])
        .await
        .map_err(BatchError::pg(master.0))?;
    let behind: bool = master
        .1
        .query_one(schema::BEHIND_CLEANUP, &[&position.1])
        .await
        .map_err(BatchError::pg(master.0))?
        .get(0);
    if behind {
        return Err(BatchError::BehindCleanup {
            node: name.to_string(),
            batch: position.0,
        });
    }
    let released = master
        .1
        .query(schema::RELEASED_REPLICAS, &[])
        .await
        .map_err(BatchError::pg(master.0))?
        .iter()
        .filter_map(|r| r.try_get::<_, String>(0).ok())
        .any(|n| n == name);
    if released {
        return Err(BatchError::Released {
            node: name.to_string(),
        });
    }
    master
        .1
        .execute(schema::RECORD_POSITION, &[&name, &position.0, &position.1])
        .await
        .map_err(BatchError::pg(master.0))?;
    if seeded > 0 {
        info!(node = name, snapshot = %snap, "replica ledger started at the master's snapshot");
    }
    Ok((position, session_shapes))
}

/// Connects a control session with tokio-postgres (no TLS yet).
pub async fn connect(
    node: &str,
    target: &ferry_wire::Target,
    app: &str,
) -> Result<Client, BatchError> {
    target
        .connect_control(app)
        .await
        .map_err(BatchError::pg(node))
}
