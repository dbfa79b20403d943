//! The replica's answer to a read routed there. A replica that fails
//! during the read gives the client an error for it (08006: retry it) and
//! the session goes on with the master.

use super::super::end::PumpError;
use super::master::SERVER_MAX_MESSAGE;
use super::ServerSide;
use crate::frontend::client_stream::ClientWrite;
use crate::frontend::read_balance::Lease;
use bytes::{Buf, BytesMut};
use ferry_wire::backend;
use ferry_wire::error_response::is_fatal;
use ferry_wire::stream::OwnedReadHalf;
use ferry_wire::tag::backend::{CLOSE_COMPLETE, ERROR_RESPONSE, PARSE_COMPLETE, READY_FOR_QUERY};
use ferry_wire::{FrameScanner, Step, TransactionStatus};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

impl ServerSide<'_> {
    /// Forwards the answer owed by the replica, less `skip` answers to
    /// what Ferry sent before the client's cycle.
    pub(super) async fn replica_turn(
        &mut self,
        cw: &mut ClientWrite<'_>,
        skip: usize,
    ) -> Result<(), PumpError> {
        // A connection handed over replaces the one held: the client side
        // opens one only when it has none, or when the session moved to
        // another replica (with nothing owed by the old one: reads are
        // routed only when idle).
        let fresh = self
            .link
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((r, b)) = fresh {
            self.replica = Some((r, b, FrameScanner::backend()));
        }
        let Some((rr, rbuf, rscan)) = self.replica.as_mut() else {
            return Err(PumpError::Io(io::Error::other(
                "read routed to a replica without a connection",
            )));
        };
        let relayed = relay(rr, rbuf, rscan, cw, skip).await;
        if let Err(e) = &relayed {
            // The read did not complete on the replica: the client gets an
            // error for it (and may retry), the session goes on with the
            // master.
            let slot = self.link.route().slot.as_ref().map(Lease::slot);
            let name = self
                .link
                .routing
                .zip(slot)
                .and_then(|(routing, i)| routing.replica(i))
                .map_or_else(|| "?".to_string(), |r| r.0);
            warn!(node = %name, error = %e, "replica failed during a read; the session continues on the master");
            cw.write_all(&failed_read(&name, e)).await?;
            self.replica = None;
        }
        let mut r = self.link.route();
        r.queue.pop_front();
        r.session.replica_answered();
        r.settle();
        if relayed.is_err() {
            r.replica_broken = true;
        }
        Ok(())
    }
}

/// The answer to a read whose replica failed.
fn failed_read(name: &str, e: &io::Error) -> BytesMut {
    let mut out = BytesMut::new();
    backend::error_response(
        &mut out,
        "ERROR",
        "08006",
        &format!(
            "the replica {name} serving this read failed ({e}); \
             the statement did not complete, retry it"
        ),
    );
    backend::ready_for_query(&mut out, TransactionStatus::Idle);
    out
}

/// Forwards one answer (up to and including its ReadyForQuery) from the
/// replica, less its first `skip` CloseComplete and ParseComplete messages
/// (answers to what Ferry sent before the client's cycle; an error ends
/// them: the server skips the rest up to the Sync). Fails, without
/// forwarding it, on a FATAL or PANIC error (the replica is shutting down
/// or crashed) and on a broken connection.
async fn relay(
    rr: &mut OwnedReadHalf,
    rbuf: &mut BytesMut,
    rscan: &mut FrameScanner,
    cw: &mut ClientWrite<'_>,
    mut skip: usize,
) -> Result<(), io::Error> {
    loop {
        let mut at = 0;
        let mut done = false;
        loop {
            let step = rscan
                .step(&rbuf[at..], SERVER_MAX_MESSAGE, |t| {
                    matches!(t, READY_FOR_QUERY | ERROR_RESPONSE)
                        || (skip > 0 && matches!(t, PARSE_COMPLETE | CLOSE_COMPLETE))
                })
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            match step {
                Step::Pass(n) => at += n,
                Step::Frame {
                    tag: ERROR_RESPONSE,
                    len,
                } => {
                    if is_fatal(&rbuf[at + 5..at + len]) {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the replica ended the connection",
                        ));
                    }
                    skip = 0;
                    at += len;
                }
                Step::Frame {
                    tag: PARSE_COMPLETE | CLOSE_COMPLETE,
                    len,
                } => {
                    cw.write_all(&rbuf[..at]).await?;
                    rbuf.advance(at + len);
                    at = 0;
                    skip = skip.saturating_sub(1);
                }
                Step::Frame { len, .. } => {
                    at += len;
                    done = true;
                    break;
                }
                Step::More => break,
            }
        }
        if at > 0 {
            cw.write_all(&rbuf[..at]).await?;
            rbuf.advance(at);
        }
        if done {
            return Ok(());
        }
        rbuf.reserve(16 * 1024);
        if rr.read_buf(rbuf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the replica closed the connection",
            ));
        }
    }
}
