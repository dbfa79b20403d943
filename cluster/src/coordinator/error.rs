//! Why the coordinator did not do what it was asked (or could not fail
//! over yet): one type, each case naming its node.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoordinatorError {
    #[error("no node named {0:?}")]
    UnknownNode(String),
    #[error("no node named {0} is part of the cluster")]
    NotInCluster(String),
    #[error("a node named {0} is already configured")]
    Exists(String),
    #[error("node {0} does not answer")]
    NotAnswering(String),
    #[error("node {node} does not answer: {source}")]
    Unreachable {
        node: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("node {0} stopped answering")]
    StoppedAnswering(String),
    #[error("node {0} is not fenced out")]
    NotFenced(String),
    #[error("no master now: {0}")]
    NoMaster(String),
    #[error(
        "the cluster has a master ({0}) and decides by itself: force-master is only for a cluster \
         that waits for a node that is gone (`ferry switchover` moves the master)"
    )]
    CanDecide(String),
    #[error("node {0} is the master already")]
    AlreadyMaster(String),
    #[error("node {0} is not a replica of this cluster")]
    NotAReplica(String),
    #[error("node {0} is the master: switch over to another node first (`ferry switchover`)")]
    RemoveMaster(String),
    #[error("no replica is reachable to take over")]
    NoCandidate,
    #[error("could not record epoch {epoch} on {node}: {source}")]
    Fence {
        node: String,
        epoch: i64,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement on `node` failed.
    #[error("{source}")]
    Database {
        node: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl CoordinatorError {
    /// A function that wraps a database error of `node`.
    pub(super) fn db(node: &str) -> impl Fn(tokio_postgres::Error) -> Self + '_ {
        move |source| Self::Database {
            node: node.to_string(),
            source,
        }
    }
}
