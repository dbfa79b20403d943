//! Installing the `ferry` schema and capture on the nodes. Idempotent.

use crate::catalog::{differences, replicated_tables};
use crate::pattern::Pattern;
use crate::BatchError;
use ferry_sql::{capture, schema, TableShape};
use tokio_postgres::Client;
use tracing::info;

/// Installs schema and capture on the master; returns its replicated tables.
pub async fn install_master(
    node: &str,
    client: &Client,
    include: &[Pattern],
    exclude: &[Pattern],
) -> Result<Vec<TableShape>, BatchError> {
    let shapes = replicated_tables(client, node, include, exclude).await?;
    install_on(node, client, &shapes).await?;
    info!(
        node,
        tables = shapes.len(),
        "schema and capture installed on the master"
    );
    Ok(shapes)
}

async fn install_on(node: &str, client: &Client, shapes: &[TableShape]) -> Result<(), BatchError> {
    client
        .batch_execute(schema::INSTALL)
        .await
        .map_err(BatchError::pg(node))?;
    for s in shapes {
        let sql = capture::install(s);
        let fingerprint = capture::fingerprint(&sql);
        let name = s.table.to_string();
        let installed: Option<String> = client
            .query_opt(schema::READ_CAPTURE, &[&name])
            .await
            .map_err(BatchError::pg(node))?
            .map(|r| r.get(0));
        if installed.as_deref() == Some(fingerprint.as_str()) {
            continue;
        }
        let result = async {
            client
                .batch_execute(&format!("BEGIN; {}{sql}", capture::lock_for_install(s)))
                .await?;
            client
                .execute(schema::RECORD_CAPTURE, &[&name, &fingerprint])
                .await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        if let Err(e) = result {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(BatchError::pg(node)(e));
        }
        info!(node, table = %name, "capture installed");
    }
    Ok(())
}

/// Checks that a replica holds the master's replicated tables, installs
/// schema and capture there (so it can serve as master later), starts its
/// ledger at the master's current snapshot if it has none, and records its
/// position on the master. Returns that position.
pub async fn prepare_replica(
    master: (&str, &Client),
    shapes: &[TableShape],
    replica: (&str, &Client),
    include: &[Pattern],
    exclude: &[Pattern],
) -> Result<(i64, String), BatchError> {
    let (name, client) = replica;
    let theirs = replicated_tables(client, name, include, exclude).await?;
    let diffs = differences(shapes, name, &theirs);
    if !diffs.is_empty() {
        return Err(BatchError::SchemaMismatch(diffs));
    }
    install_on(name, client, shapes).await?;
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
        .execute(schema::RECORD_POSITION, &[&name, &position.0, &position.1])
        .await
        .map_err(BatchError::pg(master.0))?;
    if seeded > 0 {
        info!(node = name, snapshot = %snap, "replica ledger started at the master's snapshot");
    }
    Ok(position)
}

/// Connects a control session with tokio-postgres (no TLS yet).
pub async fn connect(
    node: &str,
    target: &ferry_wire::Target,
    app: &str,
) -> Result<Client, BatchError> {
    let (client, conn) = target
        .pg_config(app)
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(BatchError::pg(node))?;
    let node = node.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(node, error = %e, "control connection ended");
        }
    });
    Ok(client)
}
