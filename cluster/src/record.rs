//! Each node's own record of its state (see [`ferry_sql::cluster`]), read
//! and written before a transition takes effect.

use crate::Role;
use ferry_sql::cluster;
use thiserror::Error;
use tokio_postgres::Client;
use tracing::warn;

/// A node's recorded state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub node: String,
    pub epoch: i64,
    /// [`Role::Master`] or [`Role::Replica`].
    pub state: Role,
    pub state_priority: i32,
    pub master: String,
    /// Chosen by an operator (`ferry force-master`).
    pub forced: bool,
}

impl Recorded {
    /// `node` is a replica of `master` at `epoch`.
    pub fn replica(node: &str, epoch: i64, master: &str) -> Self {
        Self {
            node: node.to_string(),
            epoch,
            state: Role::Replica,
            state_priority: REPLICA_PRIORITY,
            master: master.to_string(),
            forced: false,
        }
    }

    /// `node` is master at `epoch`, with caught-up replicas or not.
    pub fn master(node: &str, epoch: i64, caught_up_replicas: bool) -> Self {
        Self {
            node: node.to_string(),
            epoch,
            state: Role::Master,
            state_priority: master_priority(caught_up_replicas),
            master: node.to_string(),
            forced: false,
        }
    }
}

/// The state-priority of a master: 1 without a caught-up replica, 2 with.
pub fn master_priority(caught_up_replicas: bool) -> i32 {
    if caught_up_replicas {
        2
    } else {
        1
    }
}

/// The state-priority of a replica.
pub const REPLICA_PRIORITY: i32 = 3;

/// Why a node's record could not be read.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    /// A state no version of Ferry writes.
    #[error("recorded state {0:?} is not a role")]
    UnknownState(String),
}

/// Reads a node's record (None before Ferry first wrote one).
pub async fn read(client: &Client) -> Result<Option<Recorded>, RecordError> {
    let Some(r) = client.query_opt(cluster::READ_STATE, &[]).await? else {
        return Ok(None);
    };
    let word: String = r.try_get(2)?;
    let state = Role::parse(&word).ok_or(RecordError::UnknownState(word))?;
    Ok(Some(Recorded {
        node: r.try_get(0)?,
        epoch: r.try_get(1)?,
        state,
        state_priority: r.try_get(3)?,
        master: r.try_get(4)?,
        forced: r.try_get(5)?,
    }))
}

/// What a node told of itself at a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// It did not answer.
    Unreachable,
    /// It answered, with no record (Ferry never ran on it).
    Fresh,
    Recorded(Recorded),
}

impl Seen {
    /// Reads a node's record through a connection that answers.
    pub async fn read_from(client: &Client) -> Seen {
        match read(client).await {
            Ok(Some(r)) => Seen::Recorded(r),
            Ok(None) => Seen::Fresh,
            // No `ferry` schema yet: Ferry never ran here.
            Err(RecordError::Database(e))
                if e.code().is_some_and(|c| {
                    *c == tokio_postgres::error::SqlState::UNDEFINED_TABLE
                        || *c == tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME
                }) =>
            {
                Seen::Fresh
            }
            // Any other failure tells nothing: a node whose record cannot
            // be read must not pass for one that has none.
            Err(e @ RecordError::UnknownState(_)) => {
                warn!(error = %e, "a node's record cannot be read; it counts as unreachable");
                Seen::Unreachable
            }
            Err(RecordError::Database(_)) => Seen::Unreachable,
        }
    }

    pub fn record(&self) -> Option<&Recorded> {
        match self {
            Seen::Recorded(r) => Some(r),
            _ => None,
        }
    }
}

/// Writes a node's record (never moving its epoch back).
pub async fn write(client: &Client, r: &Recorded) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            cluster::RECORD_STATE,
            &[
                &r.node,
                &r.epoch,
                &r.state.as_str(),
                &r.state_priority,
                &r.master,
                &r.forced,
            ],
        )
        .await?;
    Ok(())
}

/// Raises a node's fence to `epoch` — from then on it refuses batches of
/// an older epoch — then lets the batches of the older epoch already under
/// way there end by themselves (they were sent before the fence, most of
/// them to every replica: they are what keeps the replicas equal), and
/// ends those still running after [`FENCE_GRACE`] (one waiting on a lock
/// a query holds would hold the node's ledger, and the failover reads it
/// next).
pub async fn fence(client: &Client, node: &str, epoch: i64) -> Result<(), tokio_postgres::Error> {
    client.execute(cluster::FENCE, &[&epoch, &node]).await?;
    let deadline = tokio::time::Instant::now() + FENCE_GRACE;
    loop {
        let running: i64 = client
            .query_one(cluster::APPLIES_UNDER_WAY, &[])
            .await?
            .get(0);
        if running == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    client.query_one(cluster::END_OLD_APPLIES, &[]).await?;
    Ok(())
}

/// How long a fence lets the batches under way on a node end by
/// themselves.
pub const FENCE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
