//! Counting what the master keeps for each replica and each node pinned
//! for a resync (rows, bytes, distinct keys) beside the loop, on a
//! connection of its own: with a large backlog a count scans every change
//! kept, and the loop must go on cutting batches for the replicas that are
//! present meanwhile. A count started at one housekeeping pass is taken up
//! at the first pass after it finished; its figures stand until the next.

use super::beside::Beside;
use crate::housekeeping::{self as outbox, Kept};
use crate::BatchError;
use ferry_sql::TableShape;
use ferry_wire::Target;
use tokio_postgres::Client;
use tracing::warn;

/// One replica or pinned node to count for: its position's snapshot, and
/// whether its distinct keys are wanted (away, suspended or pinned).
pub(super) struct Ask {
    pub name: String,
    pub snap: String,
    pub keys: bool,
}

/// What a count found for one of its asks.
#[derive(Clone, Debug)]
pub(super) struct Figure {
    pub name: String,
    pub kept: Kept,
    pub keys: Option<i64>,
}

type Outcome = (Option<Client>, Result<Vec<Figure>, BatchError>);

/// The counts of a batcher session: the one running, and the connection
/// they reuse between them.
#[derive(Default)]
pub(super) struct Tally {
    running: Option<Beside<Outcome>>,
    client: Option<Client>,
}

impl Tally {
    /// The figures of a count that finished since the previous pass (None
    /// while one runs, or when it failed: logged, counted again).
    pub async fn take(&mut self, node: &str) -> Option<Vec<Figure>> {
        let task = self.running.take_if(|t| t.is_finished())?;
        match task.finish().await {
            Ok((client, Ok(figures))) => {
                self.client = client;
                Some(figures)
            }
            Ok((_, Err(e))) => {
                warn!(node, error = %e, "counting what the master keeps for the replicas failed; counting again");
                None
            }
            Err(e) => {
                warn!(node, error = %e, "the count of what the master keeps for the replicas failed");
                None
            }
        }
    }

    /// Drops a count under way: its figures would be older than what is
    /// known now (nothing kept at all).
    pub fn cancel(&mut self) {
        // Dropped: aborted.
        self.running = None;
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts counting `asks` over the outboxes of `shapes` (those that may
    /// hold rows), unless a count runs.
    pub fn start(&mut self, node: &str, target: &Target, shapes: Vec<TableShape>, asks: Vec<Ask>) {
        if self.running.is_some() {
            return;
        }
        let (node, target, client) = (node.to_string(), target.clone(), self.client.take());
        self.running = Some(Beside::spawn(async move {
            let client = match client {
                Some(c) if !c.is_closed() => c,
                _ => match crate::install::connect(&node, &target, "ferry count").await {
                    Ok(c) => c,
                    Err(e) => return (None, Err(e)),
                },
            };
            let shapes: Vec<&TableShape> = shapes.iter().collect();
            let figures = count(&node, &client, &shapes, &asks).await;
            (Some(client), figures)
        }));
    }
}

async fn count(
    node: &str,
    client: &Client,
    shapes: &[&TableShape],
    asks: &[Ask],
) -> Result<Vec<Figure>, BatchError> {
    let mut figures = Vec::with_capacity(asks.len());
    for ask in asks {
        let kept = outbox::pending(node, client, shapes, &ask.snap).await?;
        let keys = if ask.keys {
            Some(outbox::pending_keys(node, client, shapes, &ask.snap).await?)
        } else {
            None
        };
        figures.push(Figure {
            name: ask.name.clone(),
            kept,
            keys,
        });
    }
    Ok(figures)
}
