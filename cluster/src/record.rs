//! Each node's own record of its state (see [`ferry_sql::cluster`]), read
//! and written before a transition takes effect.

use ferry_sql::cluster;
use tokio_postgres::Client;

/// A node's recorded state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub node: String,
    pub epoch: i64,
    pub state: String,
    pub state_priority: i32,
    pub master: String,
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

/// Reads a node's record (None before Ferry first wrote one).
pub async fn read(client: &Client) -> Result<Option<Recorded>, tokio_postgres::Error> {
    Ok(client
        .query_opt(cluster::READ_STATE, &[])
        .await?
        .map(|r| Recorded {
            node: r.get(0),
            epoch: r.get(1),
            state: r.get(2),
            state_priority: r.get(3),
            master: r.get(4),
        }))
}

/// Writes a node's record (never moving its epoch back).
pub async fn write(client: &Client, r: &Recorded) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            cluster::RECORD_STATE,
            &[
                &r.node,
                &r.epoch,
                &r.state,
                &r.state_priority,
                &r.master,
                &false,
            ],
        )
        .await?;
    Ok(())
}

/// Raises a node's fence to `epoch`.
pub async fn fence(client: &Client, node: &str, epoch: i64) -> Result<(), tokio_postgres::Error> {
    client.execute(cluster::FENCE, &[&epoch, &node]).await?;
    Ok(())
}
