//! The master's answers: passed on as they come, except
//! - a FATAL error that means the server is lost to the session (a crash,
//!   a shutdown, a failover): the session moves instead of ending;
//! - the first error of a transaction lost with its old master, which
//!   becomes 40001 ([`super::super::lost`]);
//! - the ParseComplete of a parse Ferry made for the client
//!   ([`super::super::route::Route::unnamed_on_replica`]), which is dropped;
//! - in sync mode, the ReadyForQuery after a commit that may have written,
//!   held until the sync replicas have applied it.

use super::super::end::PumpError;
use super::super::lost;
use super::super::route::Dest;
use super::{ServerSide, Turn};
use crate::frontend::client_stream::ClientWrite;
use crate::frontend::commit_tracker::server_wants;
use bytes::{Buf, BytesMut};
use ferry_cluster::SyncPoint;
use ferry_wire::error_response::{error_field, field, is_fatal};
use ferry_wire::tag::backend::{ERROR_RESPONSE, PARSE_COMPLETE, READY_FOR_QUERY};
use ferry_wire::{Step, TransactionStatus};
use tokio::io::AsyncWriteExt;

/// Largest server message the pump accepts (PostgreSQL's own limit for a
/// field is 1 GB; a DataRow may carry several).
pub(super) const SERVER_MAX_MESSAGE: usize = i32::MAX as usize;

/// What becomes of a server message the pump looked at.
enum Noted {
    /// The client gets this instead.
    Replace(BytesMut),
    /// It goes on: held first if it answers a commit that waits for the
    /// sync replicas; then, if `next_replica`, the replica's answer is due.
    Pass { hold: bool, next_replica: bool },
}

impl ServerSide<'_> {
    /// Forwards the master's answers in the buffer.
    pub(super) async fn master_turn(
        &mut self,
        cw: &mut ClientWrite<'_>,
    ) -> Result<Turn, PumpError> {
        let mut at = 0;
        let mut turn = Turn::More;
        loop {
            let step = self
                .mscan
                .step(&self.mbuf[at..], SERVER_MAX_MESSAGE, |t| {
                    server_wants(t) || t == PARSE_COMPLETE
                })
                .map_err(PumpError::invalid_data)?;
            let (tag, len) = match step {
                Step::Pass(n) => {
                    at += n;
                    continue;
                }
                Step::More => break,
                Step::Frame { tag, len } => (tag, len),
            };
            if tag == PARSE_COMPLETE {
                if self.swallow_parse_complete() {
                    cw.write_all(&self.mbuf[..at]).await?;
                    self.mbuf.advance(at + len);
                    at = 0;
                } else {
                    at += len;
                }
                continue;
            }
            let body = &self.mbuf[at + 5..at + len];
            if tag == ERROR_RESPONSE && is_fatal(body) && server_lost(body, self.replaced) {
                cw.write_all(&self.mbuf[..at]).await?;
                self.mbuf.advance(at);
                return Ok(Turn::Gone);
            }
            match self.note(tag, body) {
                Noted::Replace(answer) => {
                    cw.write_all(&self.mbuf[..at]).await?;
                    cw.write_all(&answer).await?;
                    self.mbuf.advance(at + len);
                    at = 0;
                }
                Noted::Pass { hold, next_replica } => {
                    match self.link.sync.filter(|_| hold) {
                        Some(sync) => {
                            cw.write_all(&self.mbuf[..at]).await?;
                            self.mbuf.advance(at);
                            at = 0;
                            self.hold_commit(cw, sync, len).await?;
                        }
                        None => at += len,
                    }
                    if next_replica {
                        turn = Turn::Replica;
                        break;
                    }
                }
            }
        }
        if at > 0 {
            cw.write_all(&self.mbuf[..at]).await?;
            self.mbuf.advance(at);
        }
        Ok(turn)
    }

    /// Whether a ParseComplete is the answer to a parse the client did not
    /// ask for.
    fn swallow_parse_complete(&self) -> bool {
        let mut r = self.link.route();
        let owed = r.swallow_parse_complete == Some(0);
        if owed {
            r.swallow_parse_complete = None;
        }
        owed
    }

    /// Records a server message in the session's route.
    fn note(&self, tag: u8, body: &[u8]) -> Noted {
        let mut r = self.link.route();
        if let Some(answer) = lost::answer(tag, body, &r) {
            return Noted::Replace(answer);
        }
        r.session.server_message(tag, body);
        r.settle();
        let status = (tag == READY_FOR_QUERY).then(|| TransactionStatus::of_ready_for_query(body));
        if status == Some(TransactionStatus::Idle) {
            r.lost_transaction = false;
        }
        let commit = self.link.follow && r.tracker.server_message(tag, body);
        if let Some(status) = status {
            r.swallow_parse_complete = match r.swallow_parse_complete {
                Some(n) if n > 0 => Some(n - 1),
                _ => None,
            };
            r.status = status;
            if r.queue.front() == Some(&Dest::Master) {
                r.queue.pop_front();
            }
            if let (true, Some(routing)) = (commit, self.link.routing) {
                r.need = routing.ticks.commit_tick();
            }
        }
        let next = matches!(r.queue.front(), Some(Dest::Replica { .. }));
        Noted::Pass {
            hold: commit && self.link.sync.is_some(),
            next_replica: status.is_some() && next,
        }
    }

    /// Sync mode: the ReadyForQuery after a commit that may have written
    /// (`len` bytes at the front of the buffer) reaches the client once the
    /// sync replicas have applied the commit.
    async fn hold_commit(
        &mut self,
        cw: &mut ClientWrite<'_>,
        sync: &SyncPoint,
        len: usize,
    ) -> Result<(), PumpError> {
        let need = sync.commit_tick();
        self.link.route().held_commit = Some(need);
        sync.wait_for(need).await;
        // The ReadyForQuery goes out at once: until it has, a move answers
        // it instead.
        cw.write_all(&self.mbuf[..len]).await?;
        self.mbuf.advance(len);
        self.link.route().held_commit = None;
        Ok(())
    }
}

/// Whether a FATAL error from the master means the server is lost to the
/// session rather than the session ended on purpose: a crash of another
/// backend (57P02), a server not accepting sessions (57P03), the death of
/// the postmaster, or a termination after Ferry replaced that master (all
/// 57P01). Any other FATAL — an operator's `pg_terminate_backend` or a
/// shutdown of a master still in place ("administrator command"), a
/// timeout — reaches the client and ends the session.
fn server_lost(body: &[u8], replaced: &(dyn Fn() -> bool + Sync)) -> bool {
    match error_field(body, field::CODE) {
        Some("57P02" | "57P03") => true,
        Some("57P01") => {
            let by_operator = error_field(body, field::MESSAGE)
                .is_some_and(|m| m.contains("administrator command"));
            !by_operator || replaced()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_wire::backend;

    #[test]
    fn a_lost_server_is_told_from_a_session_ended_on_purpose() {
        let fatal = |code: &str, message: &str| {
            let mut out = BytesMut::new();
            backend::error_response(&mut out, "FATAL", code, message);
            out
        };
        let kept = || false;
        let replaced = || true;
        let crash = fatal(
            "57P02",
            "terminating connection because of crash of another server process",
        );
        let postmaster = fatal(
            "57P01",
            "terminating connection due to unexpected postmaster exit",
        );
        let operator = fatal(
            "57P01",
            "terminating connection due to administrator command",
        );
        let timeout = fatal(
            "25P03",
            "terminating connection due to idle-in-transaction timeout",
        );
        assert!(server_lost(&crash[5..], &kept));
        assert!(server_lost(&postmaster[5..], &kept));
        assert!(!server_lost(&operator[5..], &kept));
        assert!(server_lost(&operator[5..], &replaced));
        assert!(!server_lost(&timeout[5..], &replaced));
    }
}
