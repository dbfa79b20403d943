//! The client's side of the pump: scans what the client sends and passes
//! each message on to the master, or a read's whole cycle to the replica.
//!
//! The messages that need a decision have a file each: [`query`] (a simple
//! Query), [`parse`] (a Parse that may start a read cycle of the unnamed
//! statement), [`bind`] (a Bind that runs a named read); everything else
//! goes on to the master ([`other`]). [`replica`] sends a read's cycle to
//! the replica connection, opening it first if needed. Before any of them,
//! [`refuse`] replaces a statement that would switch capture off.

mod bind;
mod other;
mod parse;
mod query;
mod refuse;
mod replica;

use super::end::{End, PumpError};
use super::reads::{named_read, ReadRouting, ReplicaLink};
use super::{Context, Link};
use crate::frontend::client_stream::ClientRead;
use crate::frontend::commit_tracker::client_wants;
use bytes::{Buf, Bytes, BytesMut};
use ferry_wire::stream::WriteHalf;
use ferry_wire::tag::frontend::{BIND, DESCRIBE, EXECUTE, PARSE, QUERY, TERMINATE};
use ferry_wire::{FrameScanner, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

/// The client's side of one session's pump.
pub(super) struct ClientSide<'a> {
    link: &'a Link<'a>,
    cx: &'a Context<'a>,
    scanner: FrameScanner,
    replica: ReplicaLink,
    /// Spreads sessions over the replicas that serve when the session
    /// first reads.
    seed: usize,
}

/// What becomes of a client message.
enum Decision<'a> {
    /// It goes to the master after what precedes it (already recorded).
    Master,
    /// It, with the rest of its cycle, goes to a replica.
    Replica(Routed<'a>),
    /// Its cycle is not all here yet: decide once more has arrived.
    Incomplete,
    /// The master parses the unnamed statement first (this Parse, whole,
    /// which the client sent to a replica before); then the message is
    /// looked at again.
    Reparse(Bytes),
}

/// A read cycle bound for a replica.
struct Routed<'a> {
    routing: &'a ReadRouting,
    /// The replica's slot.
    slot: usize,
    /// Bytes of the cycle, from the message on.
    len: usize,
    /// A named statement the cycle runs, with the Parse that made it: made
    /// on the replica connection first if that lacks it.
    named: Option<(String, Bytes)>,
}

/// Client messages the pump looks at whole.
fn wanted(tag: u8) -> bool {
    tag == TERMINATE || client_wants(tag) || matches!(tag, EXECUTE | DESCRIBE)
}

impl<'a> ClientSide<'a> {
    pub fn new(link: &'a Link<'a>, cx: &'a Context<'a>) -> Self {
        Self {
            link,
            cx,
            scanner: FrameScanner::default(),
            replica: ReplicaLink::default(),
            seed: cx.session_id.unsigned_abs() as usize,
        }
    }

    /// Passes client messages on until the client ends the session or a
    /// connection fails.
    pub async fn run(
        mut self,
        cr: &mut ClientRead<'_>,
        sw: &mut WriteHalf<'_>,
        cbuf: &mut BytesMut,
    ) -> Result<End, PumpError> {
        loop {
            // A switchover is under way: a statement that would start
            // outside a transaction waits for the new master.
            let gate = self.cx.gate;
            if gate.is_closed() && !cbuf.is_empty() && !self.link.route().session.busy() {
                debug!("holding a statement during a switchover");
                gate.until_open().await;
            }
            let (at, terminated) = self.scan(sw, cbuf).await?;
            self.flush(sw, cbuf, at).await?;
            if terminated {
                return Ok(End::Terminated);
            }
            cbuf.reserve(16 * 1024);
            if cr.read_buf(&mut *cbuf).await? == 0 {
                return Ok(End::ClientGone);
            }
        }
    }

    /// Decides the fate of every whole message in `cbuf`; returns how many
    /// bytes at its front go to the master, and whether the client sent
    /// Terminate.
    async fn scan(
        &mut self,
        sw: &mut WriteHalf<'_>,
        cbuf: &mut BytesMut,
    ) -> Result<(usize, bool), PumpError> {
        let mut at = 0;
        loop {
            let step = self
                .scanner
                .step(&cbuf[at..], self.cx.max_message, wanted)
                .map_err(PumpError::Protocol)?;
            let (tag, len) = match step {
                Step::Pass(n) => {
                    at += n;
                    continue;
                }
                Step::More => return Ok((at, false)),
                Step::Frame { tag, len } => (tag, len),
            };
            if tag == TERMINATE {
                return Ok((at + len, true));
            }
            let len = match tag {
                QUERY | PARSE => refuse::replace_forbidden(cbuf, at, tag, len),
                _ => len,
            };
            match self.decide(tag, &cbuf[at..], len) {
                Decision::Master => at += len,
                Decision::Incomplete => return Ok((at, false)),
                Decision::Reparse(parse) => {
                    self.link.route().unsent = at;
                    sw.write_all(&cbuf[..at]).await.map_err(PumpError::Server)?;
                    sw.write_all(&parse).await.map_err(PumpError::Server)?;
                    cbuf.advance(at);
                    self.link.route().unsent = 0;
                    at = 0;
                }
                Decision::Replica(routed) => {
                    at = self.send_to_replica(sw, cbuf, at, routed).await?
                }
            }
        }
    }

    /// One whole message (`len` bytes at the front of `buf`, which holds
    /// what the client sent after it too).
    fn decide(&mut self, tag: u8, buf: &[u8], len: usize) -> Decision<'a> {
        let routing = self.link.routing.is_some();
        match tag {
            QUERY => query::decide(self, &buf[5..len], len),
            PARSE if routing => parse::decide(self, buf, len),
            BIND if routing && named_read(&mut self.link.route(), &buf[5..len]) => {
                bind::decide(self, buf, len)
            }
            _ => other::decide(self, tag, &buf[5..len]),
        }
    }

    /// Sends the first `at` bytes of `cbuf` to the master. Until the write
    /// completes they count as unsent: should it fail, their answers are
    /// owed all the same.
    async fn flush(
        &self,
        sw: &mut WriteHalf<'_>,
        cbuf: &mut BytesMut,
        at: usize,
    ) -> Result<(), PumpError> {
        if at > 0 {
            self.link.route().unsent = at;
            sw.write_all(&cbuf[..at]).await.map_err(PumpError::Server)?;
            cbuf.advance(at);
            self.link.route().unsent = 0;
        }
        Ok(())
    }
}
