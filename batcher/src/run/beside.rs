//! A task the loop runs beside itself (a compaction pass, a count, an index
//! build), on a connection of its own: the loop starts it at one
//! housekeeping pass and collects it at a later one. Dropping it (a
//! batcher session that ends, or a count no longer wanted) aborts it, and
//! the server rolls its statement back.

use std::future::Future;
use tokio::task::{JoinError, JoinHandle};

pub(super) struct Beside<T>(JoinHandle<T>);

impl<T: Send + 'static> Beside<T> {
    pub fn spawn(task: impl Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }

    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Its outcome (at once when [`Self::is_finished`]).
    pub async fn finish(mut self) -> Result<T, JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for Beside<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
