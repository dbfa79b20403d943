//! Reading table shapes from a node's catalog and comparing them across
//! nodes: until DDL replication exists, every node must already hold the
//! same replicated tables.

use crate::pattern::{selected, Pattern};
use crate::BatchError;
use ferry_sql::{catalog, sequences, Column, TableName, TableShape};
use tokio_postgres::Client;

/// The replicated tables on a node, with their shapes, sorted by name.
pub async fn replicated_tables(
    client: &Client,
    node: &str,
    include: &[Pattern],
    exclude: &[Pattern],
) -> Result<Vec<TableShape>, BatchError> {
    let rows = client
        .query(catalog::LIST_TABLES, &[])
        .await
        .map_err(BatchError::pg(node))?;
    let mut shapes = Vec::new();
    for row in rows {
        let t = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        if selected(&t, include, exclude) {
            shapes.push(shape(client, node, &t).await?);
        }
    }
    Ok(shapes)
}

/// The replicated sequences on a node (matched by the same patterns as
/// tables), as regclass texts.
pub async fn replicated_sequences(
    client: &Client,
    node: &str,
    include: &[Pattern],
    exclude: &[Pattern],
) -> Result<Vec<String>, BatchError> {
    let rows = client
        .query(sequences::LIST, &[])
        .await
        .map_err(BatchError::pg(node))?;
    Ok(rows
        .iter()
        .filter(|row| {
            let t = TableName::new(row.get::<_, String>(1), row.get::<_, String>(2));
            selected(&t, include, exclude)
        })
        .map(|row| row.get::<_, String>(0))
        .collect())
}

/// One table's columns and replication key.
pub async fn shape(client: &Client, node: &str, t: &TableName) -> Result<TableShape, BatchError> {
    let q = t.quoted();
    let columns = client
        .query(catalog::COLUMNS, &[&q])
        .await
        .map_err(BatchError::pg(node))?
        .into_iter()
        .map(|r| Column {
            name: r.get(0),
            type_sql: r.get(1),
            generated: r.get(2),
            identity: r.get(3),
        })
        .collect();
    let key = client
        .query_opt(catalog::KEY, &[&q])
        .await
        .map_err(BatchError::pg(node))?
        .map(|r| r.get::<_, Vec<String>>(0));
    Ok(TableShape {
        table: t.clone(),
        columns,
        key,
    })
}

/// Differences between the master's tables and a replica's, one line each.
pub fn differences(
    master: &[TableShape],
    replica_name: &str,
    replica: &[TableShape],
) -> Vec<String> {
    let mut out = Vec::new();
    for m in master {
        match replica.iter().find(|r| r.table == m.table) {
            None => out.push(format!("{}: missing on {replica_name}", m.table)),
            Some(r) => {
                let cols = |s: &TableShape| {
                    s.columns
                        .iter()
                        .map(|c| {
                            format!(
                                "{} {}{}",
                                c.name,
                                c.type_sql,
                                if c.generated { " generated" } else { "" }
                            )
                        })
                        .collect::<Vec<_>>()
                };
                let (mc, rc) = (cols(m), cols(r));
                if mc != rc {
                    out.push(format!(
                        "{}: columns differ on {replica_name}: master ({}) vs ({})",
                        m.table,
                        mc.join(", "),
                        rc.join(", ")
                    ));
                }
                if m.key != r.key {
                    out.push(format!(
                        "{}: key differs on {replica_name}: master {:?} vs {:?}",
                        m.table, m.key, r.key
                    ));
                }
            }
        }
    }
    out
}
