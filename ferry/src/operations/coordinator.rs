//! The round trip to the coordinator that every operation changing roles
//! makes: send it a [`Control`], wait (bounded) for its answer.

use super::refusal::Refusal;
use ferry_cluster::coordinator::{Control, Reply};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long the coordinator may take to answer: it acts between two health
/// checks, and a promotion writes to every reachable node.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Asks the coordinator to do what `request` says; returns the epoch of
/// the arrangement it made, or a refusal with code `refused` carrying its
/// reason.
pub async fn ask(
    control: &mpsc::Sender<Control>,
    refused: &str,
    request: impl FnOnce(Reply) -> Control,
) -> Result<i64, Refusal> {
    let (reply, answer) = oneshot::channel();
    if control.send(request(reply)).await.is_err() {
        return Err(Refusal::unavailable("the coordinator is not running"));
    }
    match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(Ok(epoch))) => Ok(epoch),
        Ok(Ok(Err(why))) => Err(Refusal::conflict(refused, why.to_string())),
        Ok(Err(_)) | Err(_) => Err(Refusal::unavailable("no answer from the coordinator")),
    }
}
