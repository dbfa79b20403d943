//! Health checks: one control connection per node, a `SELECT 1` every
//! interval, bounded by the interval itself. A node is failed after
//! `failures` consecutive misses; a server that accepts connections but
//! never answers (frozen) misses like one that is down. A master that is
//! merely busy is not failed: its slow checks keep their connection, and
//! any batch the batcher cuts there after the misses began counts as an
//! answer.

use crate::Node;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// How often and how patiently nodes are checked.
#[derive(Clone, Copy, Debug)]
pub struct HealthConfig {
    pub interval: Duration,
    /// Consecutive misses after which a node is failed.
    pub failures: u32,
}

/// One node's health as `/status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeHealth {
    pub up: bool,
    /// Consecutive missed checks.
    pub misses: u32,
    pub last_error: Option<String>,
}

/// A node under watch, with its control connection.
pub struct Probe {
    pub node: Node,
    client: Option<Client>,
    pub misses: u32,
    /// When the current run of misses began.
    pub first_miss: Option<Instant>,
    pub last_error: Option<String>,
    /// Whether the node answered at least once since Ferry started.
    pub seen_up: bool,
}

impl Probe {
    pub fn new(node: Node) -> Self {
        Self {
            node,
            client: None,
            misses: 0,
            first_miss: None,
            last_error: None,
            seen_up: false,
        }
    }

    /// One check, within `timeout`; true when the node answered.
    pub async fn check(&mut self, timeout: Duration) -> bool {
        let result = tokio::time::timeout(timeout, async {
            if self.client.is_none() {
                let client = self.node.target.connect_control("ferry health").await?;
                // Ferry's own DDL is not the application's.
                client.batch_execute(ferry_sql::capture::QUIET).await?;
                self.client = Some(client);
            }
            match &self.client {
                Some(c) => c.simple_query("SELECT 1").await.map(|_| ()),
                None => Ok(()),
            }
        })
        .await;
        let timed_out = result.is_err();
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
        };
        match error {
            None => {
                self.seen_up = true;
                self.misses = 0;
                self.first_miss = None;
                self.last_error = None;
                true
            }
            Some(e) => {
                // A broken connection is reopened next time; one that is
                // only slow is kept: its late answer is queued before the
                // next check's, so a busy server is not taken for a dead
                // one (reconnecting would only be slower).
                if !timed_out || self.client.as_ref().is_none_or(Client::is_closed) {
                    self.client = None;
                }
                self.misses += 1;
                self.first_miss.get_or_insert_with(Instant::now);
                self.last_error = Some(e);
                false
            }
        }
    }

    /// The node answered something else since its misses began (the
    /// batcher cut a batch there): it is alive, however slow the checks.
    pub fn answered_elsewhere(&mut self, at: Instant) {
        if self.first_miss.is_some_and(|first| at > first) {
            self.misses = 0;
            self.first_miss = None;
            self.last_error = None;
        }
    }

    /// The node's control connection, while it answers.
    pub fn client(&self) -> Option<&Client> {
        if self.misses == 0 {
            self.client.as_ref()
        } else {
            None
        }
    }

    pub fn health(&self) -> NodeHealth {
        NodeHealth {
            up: self.misses == 0 && self.client.is_some(),
            misses: self.misses,
            last_error: self.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_wire::Target;

    #[test]
    fn an_answer_elsewhere_after_the_misses_began_clears_them() {
        let mut p = Probe::new(Node {
            name: "a".into(),
            target: Target::from_dsn("postgresql://u@h/db").unwrap_or_else(|_| unreachable!()),
            priority: 1,
        });
        let before = Instant::now();
        p.misses = 2;
        p.first_miss = Some(Instant::now());
        p.answered_elsewhere(before);
        assert_eq!(
            p.misses, 2,
            "an answer from before the misses proves nothing"
        );
        p.answered_elsewhere(Instant::now());
        assert_eq!((p.misses, p.first_miss), (0, None));
    }
}
