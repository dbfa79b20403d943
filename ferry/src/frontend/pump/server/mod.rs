//! The server's side of the pump: forwards answers to the client in the
//! order the client asked for them — the master's ([`master`]), or, for a
//! read routed there, the replica's ([`replica`]).

mod master;
mod replica;

use super::end::{End, PumpError};
use super::route::Dest;
use super::Link;
use crate::frontend::client_stream::ClientWrite;
use bytes::BytesMut;
use ferry_wire::stream::{OwnedReadHalf, ReadHalf};
use ferry_wire::FrameScanner;
use tokio::io::AsyncReadExt;

/// The server's side of one session's pump.
pub(super) struct ServerSide<'a> {
    link: &'a Link<'a>,
    /// Whether the master this session runs on has been replaced.
    replaced: &'a (dyn Fn() -> bool + Sync),
    /// What the master sent and the client has not been given yet.
    mbuf: BytesMut,
    mscan: FrameScanner,
    /// The session's read connection to its replica, once it has one.
    replica: Option<(OwnedReadHalf, BytesMut, FrameScanner)>,
}

/// What a pass over the master's answers found.
enum Turn {
    /// Everything here went out: read more.
    More,
    /// The next answer owed is the replica's.
    Replica,
    /// The server is going away under the session.
    Gone,
}

impl<'a> ServerSide<'a> {
    /// `pending`: what the master sent before the pump started.
    pub fn new(
        link: &'a Link<'a>,
        pending: BytesMut,
        replaced: &'a (dyn Fn() -> bool + Sync),
    ) -> Self {
        let mut mbuf = pending;
        mbuf.reserve(64 * 1024);
        Self {
            link,
            replaced,
            mbuf,
            mscan: FrameScanner::backend(),
            replica: None,
        }
    }

    /// Forwards answers until a connection ends or fails.
    pub async fn run(
        mut self,
        sr: &mut ReadHalf<'_>,
        cw: &mut ClientWrite<'_>,
    ) -> Result<End, PumpError> {
        loop {
            let front = self.link.route().queue.front().copied();
            if let Some(Dest::Replica { skip }) = front {
                self.replica_turn(cw, skip).await?;
                continue;
            }
            // The master's turn (or nothing is owed: notifications).
            match self.master_turn(cw).await? {
                Turn::Gone => return Ok(End::ServerGone),
                Turn::Replica => continue,
                Turn::More => {}
            }
            self.mbuf.reserve(16 * 1024);
            let idle = self.link.route().queue.is_empty();
            let n = if idle {
                tokio::select! {
                    n = sr.read_buf(&mut self.mbuf) => n.map_err(PumpError::Server)?,
                    _ = self.link.queued.notified() => continue,
                }
            } else {
                sr.read_buf(&mut self.mbuf)
                    .await
                    .map_err(PumpError::Server)?
            };
            if n == 0 {
                return Ok(End::ServerGone);
            }
        }
    }
}
