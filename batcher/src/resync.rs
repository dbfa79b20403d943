//! Resynchronising a node from the master with a consistent full copy (see
//! [`ferry_sql::resync`]): for a node fenced out by a failover (it missed
//! batches, or it is an old master) before it serves as a replica again.
//! The node's rows in the replicated tables are replaced; the changes it
//! committed that never reached the cluster (after the fork: an old
//! master's unshipped or late commits) are first moved from its outboxes
//! to `ferry.quarantine` on the node, where they are kept.

use crate::catalog::{differences, replicated_tables};
use crate::install::connect;
use crate::pattern::Pattern;
use crate::BatchError;
use bytes::Bytes;
use ferry_sql::{resync, verify, TableShape};
use ferry_wire::Target;
use futures_util::{SinkExt, TryStreamExt};
use std::collections::BTreeSet;
use std::pin::pin;
use tokio_postgres::Client;
use tracing::{info, warn};

/// What a resync copied.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Copied {
    pub tables: usize,
    pub rows: u64,
    /// The ledger position the node starts from.
    pub batch: i64,
    /// Changes of the node's own moved to its `ferry.quarantine`.
    pub quarantined: u64,
    /// Only the keys that differ were copied (an old master), not whole
    /// tables.
    pub keyed: bool,
    /// The node's definitions differed from the master's (it missed
    /// schema changes) and were replaced with them.
    pub definitions_replaced: bool,
}

/// How far a copy has come: tables done of total, rows so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub tables_done: usize,
    pub tables: usize,
    pub rows: u64,
}

/// Copies every replicated table from the master to the node at one
/// snapshot and sets the node's ledger to it. The node must hold the same
/// tables (compared first). Outbox clean-up on the master is held back for
/// the node from before the copy until it is a replica again.
pub async fn copy_all(
    (master_name, master): (&str, &Target),
    (node_name, node): (&str, &Target),
    include: &[Pattern],
    exclude: &[Pattern],
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Copied, BatchError> {
    let m = connect(master_name, master, "ferry resync").await?;
    let n = connect(node_name, node, "ferry resync").await?;
    // Set when the node was failed over from this master's history: the
    // master kept its own changes since then.
    let pinned: Option<String> = m
        .query_opt(resync::PINNED, &[&node_name])
        .await
        .map_err(BatchError::pg(master_name))?
        .map(|r| r.get(0));
    m.execute(resync::PIN, &[&node_name])
        .await
        .map_err(BatchError::pg(master_name))?;
    let result = copy(
        (&m, master),
        master_name,
        &n,
        node_name,
        (include, exclude),
        pinned,
        progress,
    )
    .await;
    if result.is_err() {
        let _ = m.batch_execute("ROLLBACK").await;
        let _ = m.execute(resync::UNPIN, &[&node_name]).await;
    }
    result
}

async fn copy(
    (m, master): (&Client, &Target),
    master_name: &str,
    n: &Client,
    node_name: &str,
    (include, exclude): (&[Pattern], &[Pattern]),
    pinned: Option<String>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Copied, BatchError> {
    let shapes = replicated_tables(m, master_name, include, exclude).await?;
    let theirs = replicated_tables(n, node_name, include, exclude).await?;
    let diffs: Vec<String> = differences(&shapes, node_name, &theirs)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    let fork: Option<String> = m
        .query_opt(resync::FORK_POINT, &[&node_name])
        .await
        .map_err(BatchError::pg(master_name))?
        .map(|r| r.get(0));
    // A node that missed schema changes gets the master's definitions
    // first (its own changes kept in its quarantine), then every table
    // whole.
    let rebuilt = if diffs.is_empty() {
        None
    } else {
        warn!(node = node_name, differences = %diffs.join("; "),
            "the node's definitions differ from the master's: they are replaced with the master's");
        Some(rebuild_definitions(master, (n, node_name), &theirs, fork.as_deref()).await?)
    };
    m.batch_execute(resync::BEGIN_MASTER)
        .await
        .map_err(BatchError::pg(master_name))?;
    let row = m
        .query_one(resync::POSITION, &[])
        .await
        .map_err(BatchError::pg(master_name))?;
    let (snap, batch): (String, i64) = (row.get(0), row.get(1));
    let empty = if shapes.is_empty() {
        "SELECT 1".to_string()
    } else {
        resync::truncate_all(&shapes)
    };
    n.batch_execute("BEGIN; SET LOCAL session_replication_role = replica")
        .await
        .map_err(BatchError::pg(node_name))?;
    let before: i64 = n
        .query_one(resync::LAST_QUARANTINED, &[])
        .await
        .map_err(BatchError::pg(node_name))?
        .get(0);
    let mut quarantined = rebuilt.unwrap_or(0);
    if rebuilt.is_none() {
        for s in &shapes {
            quarantined += n
                .execute(&resync::quarantine(s), &[&fork, &s.table.quoted()])
                .await
                .map_err(BatchError::pg(node_name))?;
        }
        if !shapes.is_empty() {
            n.batch_execute(&resync::empty_outboxes(&shapes))
                .await
                .map_err(BatchError::pg(node_name))?;
        }
    }
    // An old master whose fork point and failover pin this master holds
    // differs from it only in the keys its quarantined changes and the
    // master's own changes since the failover touched: those are copied.
    // Anything else (a replica that missed batches, a table without a key)
    // gets the whole tables.
    let since = pinned
        .filter(|_| rebuilt.is_none() && fork.is_some() && shapes.iter().all(|s| s.key.is_some()));
    if since.is_none() {
        n.batch_execute(&empty)
            .await
            .map_err(BatchError::pg(node_name))?;
    }
    let mut rows = 0u64;
    progress(Progress {
        tables_done: 0,
        tables: shapes.len(),
        rows,
    });
    let mut whole_again = 0usize;
    for (done, s) in shapes.iter().enumerate() {
        let ends = (m, master_name, n, node_name);
        match &since {
            None => rows += stream(ends, &resync::copy_out(s), s).await?,
            Some(p) => {
                let (copied, whole) = copy_keyed(ends, s, (p.as_str(), before), done).await?;
                rows += copied;
                whole_again += usize::from(whole);
            }
        }
        progress(Progress {
            tables_done: done + 1,
            tables: shapes.len(),
            rows,
        });
    }
    n.execute(resync::SET_LEDGER, &[&master_name, &batch, &snap])
        .await
        .map_err(BatchError::pg(node_name))?;
    n.batch_execute("COMMIT")
        .await
        .map_err(BatchError::pg(node_name))?;
    let _ = m.batch_execute("COMMIT").await;
    info!(
        node = node_name,
        master = master_name,
        tables = shapes.len(),
        rows,
        batch,
        quarantined,
        keyed = since.is_some(),
        whole_again,
        "node resynchronised from the master"
    );
    if quarantined > 0 {
        warn!(
            node = node_name,
            quarantined,
            "changes the node committed that never reached the cluster are kept in its ferry.quarantine"
        );
    }
    Ok(Copied {
        tables: shapes.len(),
        rows,
        batch,
        quarantined,
        keyed: since.is_some(),
        definitions_replaced: rebuilt.is_some(),
    })
}

/// One table of an old master, keyed: the rows of the keys that differ
/// (its quarantined changes and the master's own since the failover,
/// `pinned` and `before`) are copied; then the table as the node has it is
/// checked against the master's, and copied whole if it still differs.
/// Returns the rows copied and whether the whole table was copied again.
async fn copy_keyed(
    ends: (&Client, &str, &Client, &str),
    s: &TableShape,
    (pinned, before): (&str, i64),
    done: usize,
) -> Result<(u64, bool), BatchError> {
    let (m, master_name, n, node_name) = ends;
    let mut rows = 0;
    let temp = format!("ferry_resync_keys_{done}");
    if let Some(keys) = keys_to_copy(m, master_name, n, node_name, s, pinned, before).await? {
        for (c, name) in [(m, master_name), (n, node_name)] {
            let (create, fill) = (
                resync::keys_table(s, &temp).unwrap_or_default(),
                resync::fill_keys(s, &temp).unwrap_or_default(),
            );
            c.batch_execute(&create)
                .await
                .map_err(BatchError::pg(name))?;
            c.execute(&fill, &[&keys])
                .await
                .map_err(BatchError::pg(name))?;
        }
        n.execute(&resync::delete_keys(s, &temp).unwrap_or_default(), &[])
            .await
            .map_err(BatchError::pg(node_name))?;
        let out = resync::copy_out_keys(s, &temp).unwrap_or_default();
        rows += stream(ends, &out, s).await?;
    }
    // The keyed copy trusts the node to hold everything up to the fork; a
    // server that lost acknowledged commits in its crash (fsync off) does
    // not. Checked: the table as the node has it now against the master at
    // the copy's snapshot; a difference gets the whole table.
    let name = s.table.quoted();
    let theirs = n
        .query_one(verify::CHECKSUM, &[&name])
        .await
        .map_err(BatchError::pg(node_name))?;
    let ours = m
        .query_one(verify::CHECKSUM, &[&name])
        .await
        .map_err(BatchError::pg(master_name))?;
    let same = theirs.get::<_, i64>(0) == ours.get::<_, i64>(0)
        && theirs.get::<_, String>(1) == ours.get::<_, String>(1);
    if same {
        return Ok((rows, false));
    }
    warn!(node = node_name, table = %s.table,
        "table differs beyond the changed keys (commits lost in a crash?): copying it whole");
    n.batch_execute(&resync::delete_all(s))
        .await
        .map_err(BatchError::pg(node_name))?;
    rows += stream(ends, &resync::copy_out(s), s).await?;
    Ok((rows, true))
}

/// Replaces a node's definitions with the master's: its own unshipped
/// changes (in its own tables' layout) go to its quarantine, then every
/// schema of its but Ferry's is emptied and the master's schema is made
/// there (as for a new node, see [`crate::add_node`]); event triggers do
/// not fire (replica role). Returns the changes quarantined.
async fn rebuild_definitions(
    master: &Target,
    (n, node_name): (&Client, &str),
    theirs: &[TableShape],
    fork: Option<&str>,
) -> Result<u64, BatchError> {
    let err = || BatchError::pg(node_name);
    n.batch_execute("BEGIN; SET LOCAL session_replication_role = replica")
        .await
        .map_err(err())?;
    let mut quarantined = 0u64;
    for s in theirs {
        quarantined += n
            .execute(&resync::quarantine(s), &[&fork, &s.table.quoted()])
            .await
            .map_err(err())?;
    }
    if !theirs.is_empty() {
        n.batch_execute(&resync::empty_outboxes(theirs))
            .await
            .map_err(err())?;
    }
    n.batch_execute("COMMIT").await.map_err(err())?;
    let script = crate::add_node::dump_definitions(master, node_name).await?;
    let schemas: Vec<String> = n
        .query(resync::USER_SCHEMAS, &[])
        .await
        .map_err(err())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut rebuild = String::from("BEGIN; SET LOCAL session_replication_role = replica;\n");
    for s in &schemas {
        rebuild += &resync::drop_schema(s);
        rebuild += ";\n";
    }
    rebuild += resync::RENEW_PUBLIC;
    rebuild += ";\n";
    rebuild += &script;
    rebuild += "\nCOMMIT;";
    if let Err(e) = n.batch_execute(&rebuild).await {
        let _ = n.batch_execute("ROLLBACK").await;
        return Err(BatchError::SchemaCopy {
            node: node_name.to_string(),
            detail: e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string()),
        });
    }
    info!(
        node = node_name,
        quarantined, "the node's definitions were replaced with the master's"
    );
    Ok(quarantined)
}

/// Copies what `copy_out` selects on the master into the table on the
/// node, in binary; returns the rows.
async fn stream(
    (m, master_name, n, node_name): (&Client, &str, &Client, &str),
    copy_out: &str,
    shape: &TableShape,
) -> Result<u64, BatchError> {
    let out = m
        .copy_out(copy_out)
        .await
        .map_err(BatchError::pg(master_name))?;
    let sink = n
        .copy_in::<_, Bytes>(&resync::copy_in(shape))
        .await
        .map_err(BatchError::pg(node_name))?;
    let mut sink = pin!(sink);
    let mut out = pin!(out);
    while let Some(chunk) = out.try_next().await.map_err(BatchError::pg(master_name))? {
        sink.send(chunk).await.map_err(BatchError::pg(node_name))?;
    }
    sink.finish().await.map_err(BatchError::pg(node_name))
}

/// The keys of one table a keyed resync copies, as a JSON array: those of
/// the node's changes just quarantined (ids above `before`) and those the
/// master changed after `since`. None when there are none.
async fn keys_to_copy(
    m: &Client,
    master_name: &str,
    n: &Client,
    node_name: &str,
    shape: &TableShape,
    since: &str,
    before: i64,
) -> Result<Option<String>, BatchError> {
    let (Some(key), Some(changed)) = (&shape.key, resync::changed_keys(shape)) else {
        return Ok(None);
    };
    let theirs: String = n
        .query_one(
            resync::QUARANTINED_KEYS,
            &[&shape.table.quoted(), &before, key],
        )
        .await
        .map_err(BatchError::pg(node_name))?
        .get(0);
    let ours: String = m
        .query_one(&changed, &[&since])
        .await
        .map_err(BatchError::pg(master_name))?
        .get(0);
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for text in [theirs, ours] {
        let parsed: Vec<serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| BatchError::Catalog {
                node: node_name.to_string(),
                detail: format!("keys of {}: {e}", shape.table),
            })?;
        keys.extend(parsed.iter().map(serde_json::Value::to_string));
    }
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "[{}]",
        keys.into_iter().collect::<Vec<_>>().join(",")
    )))
}
