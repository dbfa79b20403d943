//! Reading table shapes from a node's catalog and comparing them across
//! nodes: a replica must hold the master's replicated tables, as they stand
//! after the schema changes that already reached it.

use crate::pattern::{selected, Pattern};
use crate::BatchError;
use ferry_sql::{catalog, sequences, TableName, TableShape};
use tokio_postgres::Client;

/// The replicated tables on a node, with their shapes, sorted by name.
pub async fn replicated_tables(
    client: &Client,
    node: &str,
    include: &[Pattern],
    exclude: &[Pattern],
) -> Result<Vec<TableShape>, BatchError> {
    let names = replicated_table_names(client, node, include, exclude).await?;
    let quoted: Vec<String> = names.iter().map(TableName::quoted).collect();
    // One statement for every table: a database of 2,000 tables is read
    // in one round trip.
    let rows = client
        .query(catalog::SHAPES, &[&quoted])
        .await
        .map_err(BatchError::pg(node))?;
    names
        .iter()
        .zip(rows)
        .map(|(t, row)| {
            let json: Option<String> = row.try_get(0).map_err(BatchError::pg(node))?;
            parse_shape(node, t, json)
        })
        .collect()
}

/// The names of the replicated tables on a node (no shapes: this works
/// on a node without the `ferry` schema).
pub async fn replicated_table_names(
    client: &Client,
    node: &str,
    include: &[Pattern],
    exclude: &[Pattern],
) -> Result<Vec<TableName>, BatchError> {
    let rows = client
        .query(catalog::LIST_TABLES, &[])
        .await
        .map_err(BatchError::pg(node))?;
    Ok(rows
        .iter()
        .map(|row| TableName::new(row.get::<_, String>(0), row.get::<_, String>(1)))
        .filter(|t| selected(t, include, exclude))
        .collect())
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

/// Per table of `shapes`, the indices in `sequences` of the sequences tied
/// to it (see [`ferry_sql::sequences::TIES`]).
pub async fn sequence_ties(
    client: &Client,
    node: &str,
    shapes: &[TableShape],
    sequences: &[String],
) -> Result<Vec<Vec<usize>>, BatchError> {
    let rows = client
        .query(sequences::TIES, &[])
        .await
        .map_err(BatchError::pg(node))?;
    let mut ties = vec![Vec::new(); shapes.len()];
    for row in rows {
        let sequence: String = row.try_get(0).map_err(BatchError::pg(node))?;
        let table = TableName::new(
            row.try_get::<_, String>(1).map_err(BatchError::pg(node))?,
            row.try_get::<_, String>(2).map_err(BatchError::pg(node))?,
        );
        let (Some(s), Some(t)) = (
            sequences.iter().position(|n| *n == sequence),
            shapes.iter().position(|x| x.table == table),
        ) else {
            continue;
        };
        ties[t].push(s);
    }
    Ok(ties)
}

/// One table's columns and replication key.
pub async fn shape(client: &Client, node: &str, t: &TableName) -> Result<TableShape, BatchError> {
    let json: Option<String> = client
        .query_one(catalog::SHAPE, &[&t.quoted()])
        .await
        .map_err(BatchError::pg(node))?
        .get(0);
    parse_shape(node, t, json)
}

/// A table's shape from its JSON (None: the table vanished while read).
fn parse_shape(node: &str, t: &TableName, json: Option<String>) -> Result<TableShape, BatchError> {
    let json = json.ok_or_else(|| BatchError::Catalog {
        node: node.to_string(),
        detail: format!("table {t} vanished while being read"),
    })?;
    TableShape::from_json(&json).map_err(|e| BatchError::Catalog {
        node: node.to_string(),
        detail: format!("shape of {t}: {e}"),
    })
}

/// Differences between the master's tables and a replica's, one line each,
/// with the table each concerns.
pub fn differences(
    master: &[TableShape],
    replica_name: &str,
    replica: &[TableShape],
) -> Vec<(TableName, String)> {
    let mut out = Vec::new();
    for m in master {
        match replica.iter().find(|r| r.table == m.table) {
            None => out.push((
                m.table.clone(),
                format!("{}: missing on {replica_name}", m.table),
            )),
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
                    out.push((
                        m.table.clone(),
                        format!(
                            "{}: columns differ on {replica_name}: master ({}) vs ({})",
                            m.table,
                            mc.join(", "),
                            rc.join(", ")
                        ),
                    ));
                }
                if m.key != r.key {
                    out.push((
                        m.table.clone(),
                        format!(
                            "{}: key differs on {replica_name}: master {:?} vs {:?}",
                            m.table, m.key, r.key
                        ),
                    ));
                }
            }
        }
    }
    out
}
