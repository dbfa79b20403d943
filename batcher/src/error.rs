//! Errors of the replication path.

use ferry_wire::{ConnError, ServerError};
use thiserror::Error;

/// Why a replication step failed. Each names the node it concerns.
#[derive(Debug, Error)]
pub enum BatchError {
    #[error("node {node}: {}", pg_message(source))]
    Pg {
        node: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("node {node}: {source}")]
    Conn {
        node: String,
        #[source]
        source: ConnError,
    },
    #[error("node {node}: batch {batch} failed to apply: {error} (statement: {statement})")]
    Apply {
        node: String,
        batch: i64,
        error: Box<ServerError>,
        /// The statement of the batch that failed.
        statement: String,
    },
    #[error("replicated tables differ between nodes:\n  {}", .0.join("\n  "))]
    SchemaMismatch(Vec<String>),
    #[error("invalid table pattern {0:?}: use schema.table with * wildcards")]
    Pattern(String),
    #[error("the replicated tables changed on the master ({0}); re-checking every node")]
    SchemaChanged(String),
    #[error("node {node}: unexpected catalog contents: {detail}")]
    Catalog { node: String, detail: String },
    #[error("node {node} is not empty: it holds replicated tables ({tables}); add an empty node, or bring a former member back with `ferry resync`")]
    NotEmpty { node: String, tables: String },
    #[error("copying table definitions to node {node}: {detail}")]
    SchemaCopy { node: String, detail: String },
    #[error("node {node}: a batch's data could not be spilled to {dir} (set replication.spill_dir to a directory with room): {source}")]
    Spill {
        node: String,
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node}: apply timed out after {secs}s")]
    Timeout { node: String, secs: u64 },
    #[error("replica {node} stands at batch {batch}, before the master's outbox clean-up: changes it lacks are gone from the outbox (it was out of the configuration while they were cleaned up), so it cannot catch up by batches and gets none; `ferry resync {node}` copies the master's tables to it and takes it back")]
    BehindCleanup { node: String, batch: i64 },
    #[error("the master stopped keeping changes for replica {node} while it was away (what it kept for it passed a [retention] bound), so it cannot catch up by batches and gets none; `ferry resync {node}` copies the master's tables to it and takes it back")]
    Released { node: String },
}

/// A server error's SQLSTATE and message (tokio-postgres shows only "db
/// error" for those); other errors as they are.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

impl BatchError {
    /// Wraps a tokio-postgres error with the node's name.
    pub fn pg(node: &str) -> impl FnOnce(tokio_postgres::Error) -> Self + '_ {
        move |source| BatchError::Pg {
            node: node.to_string(),
            source,
        }
    }

    /// Wraps a raw connection error with the node's name.
    pub fn conn(node: &str) -> impl FnOnce(ConnError) -> Self + '_ {
        move |source| BatchError::Conn {
            node: node.to_string(),
            source,
        }
    }
}
