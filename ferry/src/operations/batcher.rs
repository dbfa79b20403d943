//! The operations the batcher carries out between two cuts: suspend (one
//! replica or a consistency group, at an instant), cancel a suspension,
//! resume, and repair the ranges the background check found different.

use super::refusal::{Refusal, RefusalKind};
use ferry_batcher::suspend::{Command, SuspendError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long the batcher may take to answer: it answers between two cuts,
/// and a resume may wait for a running suspend hook.
const ANSWER_WITHIN: Duration = Duration::from_secs(600);

/// Hands the batcher the command `request` makes (with its reply channel)
/// and waits for its answer, a `T`.
pub async fn ask<T>(
    commands: mpsc::Sender<Command>,
    request: impl FnOnce(oneshot::Sender<Result<T, SuspendError>>) -> Command,
) -> Result<T, Refusal> {
    let (reply, answer) = oneshot::channel();
    let command = request(reply);
    let unavailable = |why: &str| Refusal::new(RefusalKind::Unavailable, "master_unavailable", why);
    if commands.send(command).await.is_err() {
        return Err(unavailable("the batcher is not running"));
    }
    match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(Ok(body))) => Ok(body),
        Ok(Ok(Err(e))) => Err(Refusal::new(
            RefusalKind::of_http_status(e.http_status()),
            e.code(),
            e.to_string(),
        )),
        Ok(Err(_)) => Err(unavailable("the batcher restarted before answering; retry")),
        Err(_) => Err(unavailable("no answer from the batcher within 600 s")),
    }
}
